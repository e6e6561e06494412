"""The names the lab shares with the processes it runs: one spelling each, read by both sides.

The lab writes these annotations and labels on its objects, sets these variables in every
container and leaves these files in a pod's directory; the mesh (which may import only `lab.client`),
the lab's own apps and its CLI read them. Spelled in one place, writer and reader cannot drift
apart. Istio's own names are in mesh/contract.py.
"""

from __future__ import annotations

# ---- annotations and labels (`lab.ambient/*`) ------------------------------------------------------

#: Pod annotation: the pod's network namespace. The kubelet writes it once the sandbox exists;
#: `lab exec`, istio-cni and `lab istioctl` enter the pod by it.
NETNS_ANNOTATION = "lab.ambient/netns"
#: MutatingWebhookConfiguration annotation: the `<module>:<function>` labd calls in process for
#: every Pod CREATE the webhook selects (Kubernetes would call a URL).
HANDLER_ANNOTATION = "lab.ambient/handler"
#: Sidecar injector webhook annotation: the proxyv2 tag new sidecars get (`lab istioctl install`).
PROXY_TAG_ANNOTATION = "lab.ambient/proxy-tag"
#: Sidecar injector webhook annotation: "true" makes holdApplicationUntilProxyStarts the default.
HOLD_APPLICATION_ANNOTATION = "lab.ambient/hold-application-until-proxy-starts"
#: Node label: the node's index in the topology; the scheduler spreads pods in this order.
NODE_INDEX_LABEL = "lab.ambient/index"
#: Endpoints label: "false" marks Endpoints made by hand; the endpoints controller never deletes them.
MANAGED_LABEL = "lab.ambient/managed"

# ---- the environment of every container (set by the kubelet) ---------------------------------------

#: The lab the `lab` CLI talks to (also the user's own choice in a shell).
ENV_LAB = "AMBIENT_LAB"
ENV_LAB_NAME = "LAB_NAME"
#: The lab API's Unix socket (lab.client.AsyncLabClient).
ENV_API_SOCKET = "LAB_API_SOCKET"
ENV_POD_NAME = "LAB_POD_NAME"
ENV_POD_NAMESPACE = "LAB_POD_NAMESPACE"
ENV_POD_UID = "LAB_POD_UID"
ENV_POD_IP = "LAB_POD_IP"
ENV_NODE_NAME = "LAB_NODE_NAME"
ENV_SERVICE_ACCOUNT = "LAB_SERVICE_ACCOUNT"
#: The path of the pod's projected ServiceAccount token (TOKEN_FILE in the pod's directory).
ENV_SA_TOKEN_FILE = "LAB_SA_TOKEN_FILE"

# ---- files and ids ----------------------------------------------------------------------------------

#: The projected ServiceAccount token (audience istio-ca) in the pod's directory
#: (lab.client.paths.pod_dir), as Kubernetes projects it under /var/run/secrets/tokens.
TOKEN_FILE = "serviceaccount-token"
#: A node's CNI plugins are the sockets with this suffix in lab.client.paths.cni_plugin_dir.
CNI_PLUGIN_SUFFIX = ".sock"
#: Each pod gets a group of its own above this gid (its token's group): far above any uid or gid a
#: pod spec is likely to name, so no container shares it by accident.
POD_GID_BASE = 3_000_000
