"""`get` tables to the character: every kind's columns and cells, -o wide and -A, as kubectl
prints them (the cells come from lab/apiserver/tables.py, the layout from lab/cli/printers)."""

import pytest

from lab.cli.printers import no_resources, table
from tests.unit.printer_samples import DEPLOYMENT, HTTPBIN_SERVICE, NOW, ago, out, pod_with, running_pod, service

# --- pods ---------------------------------------------------------------------------------------


def status_column(pod) -> list[str]:
    """The READY, STATUS and RESTARTS cells of a one-pod table."""
    return table("Pod", [pod], now=NOW).splitlines()[1].split()[1:4]


def test_pod_table():
    pods = [
        running_pod("httpbin-ambient-5d7b9c8f4-abcde", restarts=2, last_finished=ago(seconds=5)),
        running_pod("sleep-ambient-7f9c-xyz12", created=ago(days=3, hours=4)),
    ]
    assert table("Pod", pods, now=NOW) == out(
        "NAME                              READY   STATUS    RESTARTS     AGE",
        "httpbin-ambient-5d7b9c8f4-abcde   1/1     Running   2 (5s ago)   5m",
        "sleep-ambient-7f9c-xyz12          1/1     Running   0            3d4h",
    )


def test_pod_table_wide_and_all_namespaces():
    pods = [
        running_pod("httpbin-legacy-1", namespace="legacy-apps"),
        running_pod("pending", namespace="default", node="", ip=""),
    ]
    pods[1]["status"] = {"phase": "Pending"}
    pods[1]["spec"]["nodeName"] = ""
    assert table("Pod", pods, wide=True, all_namespaces=True, now=NOW) == out(
        "NAMESPACE     NAME               READY   STATUS    RESTARTS   AGE   IP           NODE     "
        "NOMINATED NODE   READINESS GATES",
        "legacy-apps   httpbin-legacy-1   1/1     Running   0          5m    10.244.1.5   worker   "
        "<none>           <none>",
        "default       pending            0/1     Pending   0          5m    <none>       <none>   "
        "<none>           <none>",
    )


def test_pod_status_shows_the_waiting_reason_of_the_first_container():
    pod = pod_with(
        [
            {
                "name": "app",
                "ready": False,
                "restartCount": 5,
                "state": {"waiting": {"reason": "CrashLoopBackOff"}},
                "lastState": {"terminated": {"exitCode": 1, "finishedAt": ago(minutes=1)}},
            },
            {"name": "istio-proxy", "ready": True, "restartCount": 0, "state": {"running": {}}},
        ]
    )
    assert status_column(pod) == ["1/2", "CrashLoopBackOff", "5"]
    assert table("Pod", [pod], now=NOW).splitlines()[1].endswith("5 (60s ago)   60m")


@pytest.mark.parametrize(
    "terminated, expected",
    [
        ({"exitCode": 0, "reason": "Completed"}, "Completed"),
        ({"exitCode": 137, "reason": "OOMKilled"}, "OOMKilled"),
        ({"exitCode": 2}, "ExitCode:2"),
        ({"exitCode": 0, "signal": 9}, "Signal:9"),
    ],
)
def test_pod_status_shows_the_terminated_reason(terminated, expected):
    pod = pod_with(
        [{"name": "c", "ready": False, "restartCount": 0, "state": {"terminated": terminated}}], phase="Succeeded"
    )
    assert status_column(pod) == ["0/1", expected, "0"]


def test_pod_status_prefers_status_reason_and_terminating():
    evicted = pod_with([], phase="Failed", containers=["c"], status={"reason": "Evicted"})
    assert status_column(evicted) == ["0/1", "Evicted", "0"]
    deleting = running_pod("x")
    deleting["metadata"]["deletionTimestamp"] = ago(seconds=1)
    assert status_column(deleting) == ["1/1", "Terminating", "0"]


def test_a_completed_sidecar_with_a_running_container_shows_running_or_not_ready():
    statuses = [
        {"name": "app", "ready": True, "state": {"running": {}}},
        {"name": "job", "ready": False, "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}},
    ]
    pod = pod_with(statuses)
    assert status_column(pod) == ["1/2", "NotReady", "0"]
    pod["status"]["conditions"] = [{"type": "Ready", "status": "True"}]
    assert status_column(pod) == ["1/2", "Running", "0"]


def initializing(state: dict, restarts: int = 0) -> dict:
    """A Pending pod whose init container istio-init is in STATE."""
    return pod_with(
        [],
        phase="Pending",
        containers=["app"],
        spec={"initContainers": [{"name": "istio-init", "image": "busybox"}]},
        status={"initContainerStatuses": [{"name": "istio-init", "restartCount": restarts, "state": state}]},
    )


def test_init_containers():
    assert status_column(initializing({"waiting": {"reason": "PodInitializing"}})) == ["0/1", "Init:0/1", "0"]
    failed = initializing({"terminated": {"exitCode": 1, "reason": "Error"}}, restarts=3)
    assert status_column(failed) == ["0/1", "Init:Error", "3"]
    assert status_column(initializing({"waiting": {"reason": "CrashLoopBackOff"}}))[1] == "Init:CrashLoopBackOff"


def test_a_started_native_sidecar_counts_as_a_container():
    pod = pod_with(
        [{"name": "app", "ready": True, "state": {"running": {}}}],
        spec={"initContainers": [{"name": "istio-proxy", "image": "x", "restartPolicy": "Always"}]},
        status={
            "initContainerStatuses": [
                {"name": "istio-proxy", "started": True, "ready": True, "restartCount": 1, "state": {"running": {}}}
            ]
        },
    )
    assert status_column(pod) == ["2/2", "Running", "1"]


# --- workloads ----------------------------------------------------------------------------------


WAYPOINT = {
    "apiVersion": "apps/v1",
    "kind": "Deployment",
    "metadata": {"name": "httpbin-ambient-waypoint", "namespace": "ambient-apps", "creationTimestamp": ago(minutes=1)},
    "spec": {
        "replicas": 2,
        "selector": {"matchLabels": {"gateway.networking.k8s.io/gateway-name": "httpbin-ambient-waypoint"}},
        "template": {"spec": {"containers": [{"name": "istio-proxy", "image": "ambient-lab/waypoint"}]}},
    },
    "status": {"readyReplicas": 1, "updatedReplicas": 2, "availableReplicas": 1},
}


def test_deployment_table_as_in_the_article():
    sleep = {**DEPLOYMENT, "metadata": {**DEPLOYMENT["metadata"], "name": "sleep-ambient"}}
    assert table("Deployment", [DEPLOYMENT, WAYPOINT, sleep], now=NOW) == out(
        "NAME                       READY   UP-TO-DATE   AVAILABLE   AGE",
        "httpbin-ambient            1/1     1            1           5m",
        "httpbin-ambient-waypoint   1/2     2            1           60s",
        "sleep-ambient              1/1     1            1           5m",
    )


def test_deployment_table_wide():
    assert table("Deployment", [DEPLOYMENT, WAYPOINT], wide=True, now=NOW) == out(
        "NAME                       READY   UP-TO-DATE   AVAILABLE   AGE   CONTAINERS    IMAGES"
        "                           SELECTOR",
        "httpbin-ambient            1/1     1            1           5m    httpbin       "
        "docker.io/kennethreitz/httpbin   app=httpbin-ambient,version=v1",
        "httpbin-ambient-waypoint   1/2     2            1           60s   istio-proxy   "
        "ambient-lab/waypoint             gateway.networking.k8s.io/gateway-name=httpbin-ambient"
        "-waypoint",
    )


def test_deployment_without_replicas_or_status_defaults_to_one_desired():
    bare = {"metadata": {"name": "d", "creationTimestamp": ago(seconds=3)}, "spec": {}}
    assert table("Deployment", [bare], now=NOW) == out(
        "NAME   READY   UP-TO-DATE   AVAILABLE   AGE", "d      0/1     0            0           3s"
    )


def test_replicaset_table():
    rs = {
        "metadata": {"name": "httpbin-ambient-5d7b9c8f4", "creationTimestamp": ago(minutes=5)},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": "x"}},
            "template": {"spec": {"containers": [{"name": "a", "image": "busybox"}, {"name": "b", "image": "alpine"}]}},
        },
        "status": {"replicas": 2, "readyReplicas": 1},
    }
    assert table("ReplicaSet", [rs], now=NOW) == out(
        "NAME                        DESIRED   CURRENT   READY   AGE",
        "httpbin-ambient-5d7b9c8f4   2         2         1       5m",
    )
    assert table("ReplicaSet", [rs], wide=True, now=NOW) == out(
        "NAME                        DESIRED   CURRENT   READY   AGE   CONTAINERS   IMAGES           SELECTOR",
        "httpbin-ambient-5d7b9c8f4   2         2         1       5m    a,b          busybox,alpine   app=x",
    )


def test_daemonset_table():
    ztunnel = {
        "metadata": {"name": "ztunnel", "namespace": "istio-system", "creationTimestamp": ago(hours=2)},
        "spec": {
            "selector": {"matchLabels": {"app": "ztunnel"}},
            "template": {
                "spec": {
                    "nodeSelector": {"kubernetes.io/os": "linux"},
                    "containers": [{"name": "istio-proxy", "image": "ambient-lab/ztunnel"}],
                }
            },
        },
        "status": {
            "desiredNumberScheduled": 2,
            "currentNumberScheduled": 2,
            "numberReady": 2,
            "updatedNumberScheduled": 2,
            "numberAvailable": 2,
        },
    }
    cni = {
        "metadata": {"name": "istio-cni-node", "namespace": "istio-system", "creationTimestamp": ago(hours=2)},
        "status": {"desiredNumberScheduled": 2, "currentNumberScheduled": 1},
    }
    assert table("DaemonSet", [ztunnel, cni], all_namespaces=True, now=NOW) == out(
        "NAMESPACE      NAME             DESIRED   CURRENT   READY   UP-TO-DATE   AVAILABLE   "
        "NODE SELECTOR            AGE",
        "istio-system   ztunnel          2         2         2       2            2           "
        "kubernetes.io/os=linux   120m",
        "istio-system   istio-cni-node   2         1         0       0            0           "
        "<none>                   120m",
    )


# --- services, endpoints ------------------------------------------------------------------------


def test_service_table_of_every_type():
    services = [
        HTTPBIN_SERVICE,
        service(
            "db",
            {"clusterIP": "None", "ports": [{"port": 5432}, {"port": 53, "protocol": "UDP"}]},
            created=ago(days=30),
        ),
        service(
            "web",
            {"type": "NodePort", "clusterIP": "10.96.3.4", "ports": [{"port": 80, "nodePort": 30080}]},
            created=ago(days=761),
        ),
        service(
            "lb", {"type": "LoadBalancer", "clusterIP": "10.96.3.5", "ports": [{"port": 443}]}, created=ago(seconds=2)
        ),
        service("ext", {"type": "ExternalName", "externalName": "example.com"}, created=ago(minutes=3)),
        service(
            "pub",
            {"clusterIP": "10.96.3.6", "externalIPs": ["192.0.2.1", "192.0.2.2"], "ports": [{"port": 80}]},
            created=ago(minutes=3),
        ),
    ]
    assert table("Service", services, all_namespaces=True, now=NOW) == out(
        "NAMESPACE      NAME              TYPE           CLUSTER-IP   EXTERNAL-IP           PORT(S)           AGE",
        "ambient-apps   httpbin-ambient   ClusterIP      10.96.0.20   <none>                8000/TCP          27h",
        "default        db                ClusterIP      None         <none>                5432/TCP,53/UDP   30d",
        "default        web               NodePort       10.96.3.4    <none>                80:30080/TCP      2y31d",
        "default        lb                LoadBalancer   10.96.3.5    <pending>             443/TCP           2s",
        "default        ext               ExternalName   <none>       example.com           <none>            3m",
        "default        pub               ClusterIP      10.96.3.6    192.0.2.1,192.0.2.2   80/TCP            3m",
    )


def test_service_table_wide_adds_the_selector():
    assert table("Service", [HTTPBIN_SERVICE], wide=True, now=NOW) == out(
        "NAME              TYPE        CLUSTER-IP   EXTERNAL-IP   PORT(S)    AGE   SELECTOR",
        "httpbin-ambient   ClusterIP   10.96.0.20   <none>        8000/TCP   27h   app=httpbin-ambient",
    )


def test_endpoints_table_shows_three_ready_addresses_then_a_count():
    endpoints = [
        {
            "metadata": {"name": "httpbin", "creationTimestamp": ago(hours=1)},
            "subsets": [
                {
                    "addresses": [{"ip": "10.244.0.5"}, {"ip": "10.244.1.6"}],
                    "notReadyAddresses": [{"ip": "10.244.1.9"}],
                    "ports": [{"name": "http", "port": 80}, {"name": "metrics", "port": 9090}],
                }
            ],
        },
        {"metadata": {"name": "empty", "creationTimestamp": ago(hours=1)}},
        {
            "metadata": {"name": "headless", "creationTimestamp": ago(hours=1)},
            "subsets": [{"addresses": [{"ip": "10.244.0.7"}]}],
        },
        {
            "metadata": {"name": "v6", "creationTimestamp": ago(hours=1)},
            "subsets": [{"addresses": [{"ip": "fd00::5"}], "ports": [{"port": 80}]}],
        },
    ]
    assert table("Endpoints", endpoints, now=NOW) == out(
        "NAME       ENDPOINTS                                                 AGE",
        "httpbin    10.244.0.5:80,10.244.1.6:80,10.244.0.5:9090 + 1 more...   60m",
        "empty      <none>                                                    60m",
        "headless   10.244.0.7                                                60m",
        "v6         [fd00::5]:80                                              60m",
    )


# --- cluster objects ----------------------------------------------------------------------------


def test_namespace_table_has_no_namespace_column_even_for_all_namespaces():
    namespaces = [
        {"metadata": {"name": "ambient-apps", "creationTimestamp": ago(hours=1)}, "status": {"phase": "Active"}},
        {"metadata": {"name": "default", "creationTimestamp": ago(days=10)}},
        {"metadata": {"name": "old", "creationTimestamp": ago(days=10)}, "status": {"phase": "Terminating"}},
    ]
    assert table("Namespace", namespaces, all_namespaces=True, now=NOW) == out(
        "NAME           STATUS        AGE",
        "ambient-apps   Active        60m",
        "default        Active        10d",
        "old            Terminating   10d",
    )


def test_serviceaccount_table():
    accounts = [
        {"metadata": {"name": "default", "namespace": "default", "creationTimestamp": ago(hours=1)}},
        {
            "metadata": {"name": "sleep-ambient", "namespace": "ambient-apps", "creationTimestamp": ago(seconds=30)},
            "secrets": [{"name": "token"}],
        },
    ]
    assert table("ServiceAccount", accounts, all_namespaces=True, now=NOW) == out(
        "NAMESPACE      NAME            SECRETS   AGE",
        "default        default         0         60m",
        "ambient-apps   sleep-ambient   1         30s",
    )


NODES = [
    {
        "metadata": {
            "name": "control-plane",
            "creationTimestamp": ago(hours=3),
            "labels": {"node-role.kubernetes.io/control-plane": ""},
        },
        "status": {
            "conditions": [{"type": "Ready", "status": "True"}],
            "addresses": [
                {"type": "InternalIP", "address": "172.18.0.10"},
                {"type": "Hostname", "address": "control-plane"},
            ],
            "nodeInfo": {
                "kubeletVersion": "v1.29.0-lab",
                "osImage": "ambient-lab",
                "kernelVersion": "6.18.0",
                "containerRuntimeVersion": "lab://0.1",
            },
        },
    },
    {
        "metadata": {"name": "worker", "creationTimestamp": ago(hours=3), "labels": {"kubernetes.io/role": "worker"}},
        "spec": {"unschedulable": True},
        "status": {"conditions": [{"type": "Ready", "status": "False"}], "nodeInfo": {"kubeletVersion": "v1.29.0-lab"}},
    },
    {"metadata": {"name": "new", "creationTimestamp": ago(seconds=1)}},
]


def test_node_table():
    assert table("Node", NODES, all_namespaces=True, now=NOW) == out(
        "NAME            STATUS                        ROLES           AGE   VERSION",
        "control-plane   Ready                         control-plane   3h    v1.29.0-lab",
        "worker          NotReady,SchedulingDisabled   worker          3h    v1.29.0-lab",
        "new             Unknown                       <none>          1s    ",
    )


def test_node_table_wide():
    assert table("Node", NODES[:1], wide=True, now=NOW) == out(
        "NAME            STATUS   ROLES           AGE   VERSION       INTERNAL-IP   EXTERNAL-IP"
        "   OS-IMAGE      KERNEL-VERSION   CONTAINER-RUNTIME",
        "control-plane   Ready    control-plane   3h    v1.29.0-lab   172.18.0.10   <none>     "
        "   ambient-lab   6.18.0           lab://0.1",
    )


EVENTS = [
    {
        "metadata": {"name": "sleep.17c", "namespace": "ambient-apps"},
        "type": "Normal",
        "reason": "Scheduled",
        "message": "Successfully assigned ambient-apps/sleep to worker",
        "involvedObject": {"kind": "Pod", "name": "sleep"},
        "source": {"component": "default-scheduler"},
        "firstTimestamp": ago(minutes=2),
        "lastTimestamp": ago(minutes=2),
        "count": 1,
    },
    {
        "metadata": {"name": "sleep.17d", "namespace": "ambient-apps"},
        "type": "Warning",
        "reason": "BackOff",
        "message": "Back-off restarting failed container\nsecond line",
        "involvedObject": {"kind": "Pod", "name": "sleep", "fieldPath": "spec.containers{sleep}"},
        "source": {"component": "kubelet", "host": "worker"},
        "firstTimestamp": ago(minutes=10),
        "lastTimestamp": ago(seconds=30),
        "count": 4,
    },
]


def test_event_table_cuts_messages_at_the_first_line_break():
    assert table("Event", EVENTS, now=NOW) == out(
        "LAST SEEN   TYPE      REASON      OBJECT      MESSAGE",
        "2m          Normal    Scheduled   pod/sleep   Successfully assigned ambient-apps/sleep to worker",
        "30s         Warning   BackOff     pod/sleep   Back-off restarting failed container...",
    )


def test_event_table_wide():
    assert table("Event", EVENTS, wide=True, now=NOW) == out(
        "LAST SEEN   TYPE      REASON      OBJECT      SUBOBJECT                SOURCE            "
        "  MESSAGE                                              FIRST SEEN   COUNT   NAME",
        "2m          Normal    Scheduled   pod/sleep                            default-scheduler "
        "  Successfully assigned ambient-apps/sleep to worker   2m           1       sleep.17c",
        "30s         Warning   BackOff     pod/sleep   spec.containers{sleep}   kubelet, worker   "
        "  Back-off restarting failed container...              10m          4       sleep.17d",
    )


def test_event_from_the_events_api_with_a_series():
    event = {
        "metadata": {"name": "e"},
        "type": "Normal",
        "reason": "Pulled",
        "regarding": {"kind": "Pod", "name": "p"},
        "note": "pulled",
        "eventTime": ago(minutes=6),
        "series": {"count": 3, "lastObservedTime": ago(seconds=9)},
    }
    assert table("Event", [event], now=NOW) == out(
        "LAST SEEN   TYPE     REASON   OBJECT   MESSAGE", "9s          Normal   Pulled   pod/p    pulled"
    )


# --- mesh and other kinds -----------------------------------------------------------------------


def mesh(kind, name, spec, status=None, seconds=60):
    obj = {
        "kind": kind,
        "metadata": {"name": name, "namespace": "ambient-apps", "creationTimestamp": ago(seconds=seconds)},
        "spec": spec,
    }
    if status:
        obj["status"] = status
    return obj


def test_authorization_policy_table_shows_the_action_and_nothing_when_unset():
    policies = [
        mesh("AuthorizationPolicy", "require-sleep-identity", {"action": "ALLOW"}),
        mesh("AuthorizationPolicy", "allow-nothing", {}),
    ]
    assert table("AuthorizationPolicy", policies, now=NOW) == out(
        "NAME                     ACTION   AGE",
        "require-sleep-identity   ALLOW    60s",
        "allow-nothing                     60s",
    )


def test_peer_and_request_authentication_tables():
    peer = mesh("PeerAuthentication", "default", {"mtls": {"mode": "STRICT"}})
    assert table("PeerAuthentication", [peer], now=NOW) == out("NAME      MODE     AGE", "default   STRICT   60s")
    jwt = mesh("RequestAuthentication", "require-jwt-for-billing", {"jwtRules": []})
    assert table("RequestAuthentication", [jwt], all_namespaces=True, now=NOW) == out(
        "NAMESPACE      NAME                      AGE", "ambient-apps   require-jwt-for-billing   60s"
    )


def test_gateway_table():
    gateways = [
        mesh(
            "Gateway",
            "httpbin-ambient-waypoint",
            {"gatewayClassName": "istio"},
            {
                "addresses": [{"type": "IPAddress", "value": "10.96.0.30"}],
                "conditions": [{"type": "Accepted", "status": "True"}, {"type": "Programmed", "status": "True"}],
            },
        ),
        mesh("Gateway", "new", {"gatewayClassName": "istio-waypoint"}, seconds=1),
    ]
    assert table("Gateway", gateways, now=NOW) == out(
        "NAME                       CLASS            ADDRESS      PROGRAMMED   AGE",
        "httpbin-ambient-waypoint   istio            10.96.0.30   True         60s",
        "new                        istio-waypoint                             1s",
    )


def test_crd_columns_print_lists_as_json():
    route = mesh("HTTPRoute", "r", {"hostnames": ["a.example.com", "b.example.com"]})
    assert table("HTTPRoute", [route], now=NOW) == out(
        "NAME   HOSTNAMES                           AGE", 'r      ["a.example.com","b.example.com"]   60s'
    )
    vs = mesh("VirtualService", "reviews", {"hosts": ["reviews"]})
    assert table("VirtualService", [vs], now=NOW) == out(
        "NAME      GATEWAYS   HOSTS         AGE", 'reviews              ["reviews"]   60s'
    )


def test_configmap_and_unknown_kinds():
    config = {
        "metadata": {"name": "istio", "creationTimestamp": ago(hours=1)},
        "data": {"mesh": "x", "meshNetworks": "y"},
    }
    assert table("ConfigMap", [config], now=NOW) == out("NAME    DATA   AGE", "istio   2      60m")
    widget = {"metadata": {"name": "w", "namespace": "n", "creationTimestamp": ago(hours=1)}}
    assert table("Widget", [widget], all_namespaces=True, now=NOW) == out(
        "NAMESPACE   NAME   AGE", "n           w      60m"
    )


def test_kind_is_case_insensitive():
    assert table("pod", [running_pod("a")], now=NOW) == table("Pod", [running_pod("a")], now=NOW)


def test_no_resources():
    assert table("Pod", [], now=NOW) == ""
    assert no_resources("ambient-apps") == "No resources found in ambient-apps namespace."
    assert no_resources(None) == "No resources found"
