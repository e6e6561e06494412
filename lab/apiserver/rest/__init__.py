"""The Kubernetes REST surface of labd (HTTPS, what kubectl and the Python clients speak).

The core (docs/kube-api.md):
- `service.py`: one lab's endpoint as labd starts it: PKI, a free port, the kubeconfig, the server.
- `certs.py`: the lab's CA, serving and client certificates; the kubeconfig's text.
- `server.py`: HTTPS + HTTP/1.1 (h11) on trio: keep-alive, chunked streams, the WebSocket hand-over.
- `messages.py`: Request, Response, Streaming, Upgrade: what the transport and the handlers pass.
- `app.py`: authentication (client certificate, system:masters), then the route to a handler.
- `routes.py`: the URL space parsed (`/apis/<g>/<v>/namespaces/<ns>/<resource>/<name>/<sub>`).
- `discovery.py`: `/api`, `/apis`, APIResourceLists, aggregated discovery v2/v2beta1.
- `openapi.py`: the minimal OpenAPI v3 client-side `kubectl apply` needs.
- `negotiate.py`: Accept (Table, PartialObjectMetadata, aggregated discovery) and Content-Type.
- `target.py`: a resolved resource request and what handlers share (Context, warning headers).
- `reads.py`: GET, LIST (selectors, limit/continue, Tables), WATCH plumbing, `pods/log`.
- `writes.py`: POST, PUT, PATCH, DELETE (propagation), `/status`, `/scale`, dryRun.
- `bodies.py`: body decoding (JSON, YAML, protobuf) and fieldValidation (unknown fields).
- `status.py`: errors as `Status` objects with Kubernetes' reasons and codes.

Streams and engines the core calls:
- `watch.py`: WATCH and WatchList streams over the store's history.
- `exec.py`: WebSocket exec (`v5.channel.k8s.io`/`v4`) running a command in a container.
- `logs.py`: `pods/P/log` (tailLines, follow, previous, timestamps).
- `fieldselector.py`: field selectors (WATCH and LIST).
- `protobuf.py`: decodes `application/vnd.kubernetes.protobuf` bodies (kubectl >= 1.32 `create`) to dicts.
- `wschannel.py`: the exec/attach WebSocket channel protocol (v5/v4), sans-IO on wsproto.
- `patch.py`: PATCH bodies: JSON merge patch, JSON patch, the dispatcher by content type (415 for the rest).
- `strategic.py`: strategic merge patch for the built-in kinds, with Kubernetes' merge keys as data.
- `ssa.py`: server-side apply and `managedFields` (field ownership, conflicts, `record_update`).
- `ssa_schema.py`: server-side apply's per-kind list types and the field-set, compare and merge walks.
"""
