"""The lab's kube-apiserver: objects, validation, admission and the API calls.

- `kinds.py`: the kind registry (group, versions, scope, names, validator, columns, immutable fields).
- `store.py`: the objects, their resourceVersions and change notification (etcd's role).
- `api.py`: `ApiServer`: apply, create, get, patch, delete, scale... without sockets.
- `errors.py`: `ApiError` and `Invalid`, the API's refusals.
- `defaulting.py`: ClusterIP allocation, each kind's defaults, immutable fields.
- `containers.py`: where `exec` runs and where a container's log is (ApiServer's mix-in).
- `validation/`: manifest parsing and the built-in kinds' checks, with kubectl's error wording.
- `names.py`: Kubernetes' name syntax (DNS labels, subdomains, label keys and values).
- `gojson.py`: JSON as Go's encoding/json writes it (last-applied annotations, jsonpath output).
- `tables.py`: each kind's `get` columns and cells (meta.k8s.io Table), named by the registry.
- `selectors.py`: label and field selectors.
- `admission.py`: mutating webhooks (in-process handlers) on Pod CREATE.
- `tokens.py`: ServiceAccount tokens: issue and review (TokenReview).
- `dispatch.py`: the API calls (`op`s) labd answers, mapped onto the above.
- `endpoint.py`: the Unix socket that carries them (lab/client speaks to it).
"""
