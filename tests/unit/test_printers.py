"""kubectl-shaped output: ages, tables per kind, -o yaml/json/name and describe, to the character."""
import json
from datetime import datetime, timedelta, timezone

import pytest
import yaml

from lab.cli import printers
from lab.cli.printers import age, describe, human_duration, names, no_resources, table

NOW = datetime(2024, 5, 1, 12, 0, 0, tzinfo=timezone.utc)


def ago(**delta) -> str:
    return (NOW - timedelta(**delta)).strftime("%Y-%m-%dT%H:%M:%SZ")


def out(*lines: str) -> str:
    """Expected output; lines are explicit so trailing spaces stay visible."""
    return "".join(line + "\n" for line in lines)


# --- age ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("seconds, expected", [
    (0, "0s"), (45, "45s"), (119, "119s"), (120, "2m"), (125, "2m5s"), (300, "5m"),
    (599, "9m59s"), (600, "10m"), (179 * 60 + 59, "179m"), (3 * 3600, "3h"),
    (3 * 3600 + 10 * 60, "3h10m"), (8 * 3600 - 1, "7h59m"), (8 * 3600, "8h"),
    (47 * 3600, "47h"), (48 * 3600, "2d"), (3 * 86400 + 4 * 3600, "3d4h"),
    (7 * 86400 + 23 * 3600, "7d23h"), (8 * 86400, "8d"), (400 * 86400, "400d"),
    (729 * 86400, "729d"), (730 * 86400, "2y"), (800 * 86400, "2y70d"),
    (8 * 365 * 86400, "8y"), (-1.5, "0s"), (-2, "<invalid>"),
])
def test_human_duration_is_kubectls(seconds, expected):
    assert human_duration(seconds) == expected


def test_age_from_timestamps():
    assert age(ago(seconds=45), NOW) == "45s"
    assert age(ago(minutes=2, seconds=5), NOW) == "2m5s"
    assert age(ago(days=400), NOW) == "400d"
    assert age("2024-05-01T11:59:59.900000Z", NOW) == "0s"
    assert age("2024-05-01T13:59:00+02:00", NOW) == "60s"
    assert age(None, NOW) == "<unknown>"
    assert age("", NOW) == "<unknown>"


def test_a_naive_now_is_taken_as_utc():
    assert age(ago(minutes=5), NOW.replace(tzinfo=None)) == "5m"


# --- pods ---------------------------------------------------------------------------------------

def running_pod(name, namespace="ambient-apps", created=None, restarts=0, last_finished=None,
                node="worker", ip="10.244.1.5"):
    status = {"name": "main", "ready": True, "restartCount": restarts,
              "state": {"running": {"startedAt": ago(minutes=4)}}}
    if last_finished:
        status["lastState"] = {"terminated": {"exitCode": 1, "reason": "Error",
                                              "finishedAt": last_finished}}
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": namespace,
                         "creationTimestamp": created or ago(minutes=5)},
            "spec": {"nodeName": node, "containers": [{"name": "main", "image": "busybox"}]},
            "status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}],
                       "containerStatuses": [status]}}


def pod_with(statuses, phase="Running", containers=None, **extra):
    names_ = containers or [s["name"] for s in statuses]
    pod = {"metadata": {"name": "p", "namespace": "default", "creationTimestamp": ago(hours=1)},
           "spec": {"containers": [{"name": n, "image": "busybox"} for n in names_]},
           "status": {"phase": phase, "containerStatuses": statuses}}
    for key, value in extra.items():
        pod[key].update(value)
    return pod


def status_column(pod) -> list[str]:
    """The READY, STATUS and RESTARTS cells of a one-pod table."""
    return table("Pod", [pod], now=NOW).splitlines()[1].split()[1:4]


def test_pod_table():
    pods = [running_pod("httpbin-ambient-5d7b9c8f4-abcde", restarts=2,
                        last_finished=ago(seconds=5)),
            running_pod("sleep-ambient-7f9c-xyz12", created=ago(days=3, hours=4))]
    assert table("Pod", pods, now=NOW) == out(
        "NAME                              READY   STATUS    RESTARTS     AGE",
        "httpbin-ambient-5d7b9c8f4-abcde   1/1     Running   2 (5s ago)   5m",
        "sleep-ambient-7f9c-xyz12          1/1     Running   0            3d4h",
    )


def test_pod_table_wide_and_all_namespaces():
    pods = [running_pod("httpbin-legacy-1", namespace="legacy-apps"),
            running_pod("pending", namespace="default", node="", ip="")]
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
    pod = pod_with([
        {"name": "app", "ready": False, "restartCount": 5,
         "state": {"waiting": {"reason": "CrashLoopBackOff"}},
         "lastState": {"terminated": {"exitCode": 1, "finishedAt": ago(minutes=1)}}},
        {"name": "istio-proxy", "ready": True, "restartCount": 0, "state": {"running": {}}},
    ])
    assert status_column(pod) == ["1/2", "CrashLoopBackOff", "5"]
    assert table("Pod", [pod], now=NOW).splitlines()[1].endswith("5 (60s ago)   60m")


@pytest.mark.parametrize("terminated, expected", [
    ({"exitCode": 0, "reason": "Completed"}, "Completed"),
    ({"exitCode": 137, "reason": "OOMKilled"}, "OOMKilled"),
    ({"exitCode": 2}, "ExitCode:2"),
    ({"exitCode": 0, "signal": 9}, "Signal:9"),
])
def test_pod_status_shows_the_terminated_reason(terminated, expected):
    pod = pod_with([{"name": "c", "ready": False, "restartCount": 0,
                     "state": {"terminated": terminated}}], phase="Succeeded")
    assert status_column(pod) == ["0/1", expected, "0"]


def test_pod_status_prefers_status_reason_and_terminating():
    evicted = pod_with([], phase="Failed", containers=["c"], status={"reason": "Evicted"})
    assert status_column(evicted) == ["0/1", "Evicted", "0"]
    deleting = running_pod("x")
    deleting["metadata"]["deletionTimestamp"] = ago(seconds=1)
    assert status_column(deleting) == ["1/1", "Terminating", "0"]


def test_a_completed_sidecar_with_a_running_container_shows_running_or_not_ready():
    statuses = [{"name": "app", "ready": True, "state": {"running": {}}},
                {"name": "job", "ready": False, "state": {"terminated": {"exitCode": 0,
                                                                          "reason": "Completed"}}}]
    pod = pod_with(statuses)
    assert status_column(pod) == ["1/2", "NotReady", "0"]
    pod["status"]["conditions"] = [{"type": "Ready", "status": "True"}]
    assert status_column(pod) == ["1/2", "Running", "0"]


def test_init_containers():
    init = {"initContainers": [{"name": "istio-init", "image": "busybox"}]}
    waiting = pod_with([], phase="Pending", containers=["app"], spec=init, status={
        "initContainerStatuses": [{"name": "istio-init", "state": {"waiting": {
            "reason": "PodInitializing"}}}]})
    assert status_column(waiting) == ["0/1", "Init:0/1", "0"]
    failed = pod_with([], phase="Pending", containers=["app"], spec=init, status={
        "initContainerStatuses": [{"name": "istio-init", "restartCount": 3, "state": {
            "terminated": {"exitCode": 1, "reason": "Error"}}}]})
    assert status_column(failed) == ["0/1", "Init:Error", "3"]
    crashing = pod_with([], phase="Pending", containers=["app"], spec=init, status={
        "initContainerStatuses": [{"name": "istio-init", "state": {"waiting": {
            "reason": "CrashLoopBackOff"}}}]})
    assert status_column(crashing)[1] == "Init:CrashLoopBackOff"


def test_a_started_native_sidecar_counts_as_a_container():
    pod = pod_with([{"name": "app", "ready": True, "state": {"running": {}}}], spec={
        "initContainers": [{"name": "istio-proxy", "image": "x", "restartPolicy": "Always"}]},
        status={"initContainerStatuses": [{"name": "istio-proxy", "started": True, "ready": True,
                                           "restartCount": 1, "state": {"running": {}}}]})
    assert status_column(pod) == ["2/2", "Running", "1"]


# --- workloads ----------------------------------------------------------------------------------

DEPLOYMENT = {
    "apiVersion": "apps/v1", "kind": "Deployment",
    "metadata": {"name": "httpbin-ambient", "namespace": "ambient-apps",
                 "creationTimestamp": ago(minutes=5), "labels": {"app": "httpbin-ambient"}},
    "spec": {"replicas": 1,
             "selector": {"matchLabels": {"app": "httpbin-ambient", "version": "v1"}},
             "template": {"metadata": {"labels": {"app": "httpbin-ambient", "version": "v1"}},
                          "spec": {"serviceAccountName": "httpbin-ambient",
                                   "containers": [{"image": "docker.io/kennethreitz/httpbin",
                                                   "name": "httpbin",
                                                   "ports": [{"containerPort": 80}]}]}}},
    "status": {"replicas": 1, "updatedReplicas": 1, "readyReplicas": 1, "availableReplicas": 1,
               "conditions": [{"type": "Available", "status": "True",
                               "reason": "MinimumReplicasAvailable"},
                              {"type": "Progressing", "status": "True",
                               "reason": "NewReplicaSetAvailable"}]},
}
WAYPOINT = {
    "apiVersion": "apps/v1", "kind": "Deployment",
    "metadata": {"name": "httpbin-ambient-waypoint", "namespace": "ambient-apps",
                 "creationTimestamp": ago(minutes=1)},
    "spec": {"replicas": 2,
             "selector": {"matchLabels": {
                 "gateway.networking.k8s.io/gateway-name": "httpbin-ambient-waypoint"}},
             "template": {"spec": {"containers": [{"name": "istio-proxy",
                                                   "image": "ambient-lab/waypoint"}]}}},
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
        "NAME   READY   UP-TO-DATE   AVAILABLE   AGE",
        "d      0/1     0            0           3s",
    )


def test_replicaset_table():
    rs = {"metadata": {"name": "httpbin-ambient-5d7b9c8f4", "creationTimestamp": ago(minutes=5)},
          "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "x"}},
                   "template": {"spec": {"containers": [{"name": "a", "image": "busybox"},
                                                        {"name": "b", "image": "alpine"}]}}},
          "status": {"replicas": 2, "readyReplicas": 1}}
    assert table("ReplicaSet", [rs], now=NOW) == out(
        "NAME                        DESIRED   CURRENT   READY   AGE",
        "httpbin-ambient-5d7b9c8f4   2         2         1       5m",
    )
    assert table("ReplicaSet", [rs], wide=True, now=NOW) == out(
        "NAME                        DESIRED   CURRENT   READY   AGE   CONTAINERS   IMAGES"
        "           SELECTOR",
        "httpbin-ambient-5d7b9c8f4   2         2         1       5m    a,b          "
        "busybox,alpine   app=x",
    )


def test_daemonset_table():
    ztunnel = {"metadata": {"name": "ztunnel", "namespace": "istio-system",
                            "creationTimestamp": ago(hours=2)},
               "spec": {"selector": {"matchLabels": {"app": "ztunnel"}},
                        "template": {"spec": {"nodeSelector": {"kubernetes.io/os": "linux"},
                                              "containers": [{"name": "istio-proxy",
                                                              "image": "ambient-lab/ztunnel"}]}}},
               "status": {"desiredNumberScheduled": 2, "currentNumberScheduled": 2,
                          "numberReady": 2, "updatedNumberScheduled": 2, "numberAvailable": 2}}
    cni = {"metadata": {"name": "istio-cni-node", "namespace": "istio-system",
                        "creationTimestamp": ago(hours=2)},
           "status": {"desiredNumberScheduled": 2, "currentNumberScheduled": 1}}
    assert table("DaemonSet", [ztunnel, cni], all_namespaces=True, now=NOW) == out(
        "NAMESPACE      NAME             DESIRED   CURRENT   READY   UP-TO-DATE   AVAILABLE   "
        "NODE SELECTOR            AGE",
        "istio-system   ztunnel          2         2         2       2            2           "
        "kubernetes.io/os=linux   120m",
        "istio-system   istio-cni-node   2         1         0       0            0           "
        "<none>                   120m",
    )


# --- services, endpoints ------------------------------------------------------------------------

def service(name, spec, namespace="default", created=None):
    return {"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": name, "namespace": namespace,
                         "creationTimestamp": created or ago(hours=27)},
            "spec": spec}


HTTPBIN_SERVICE = service("httpbin-ambient", {
    "type": "ClusterIP", "clusterIP": "10.96.0.20", "clusterIPs": ["10.96.0.20"],
    "ports": [{"name": "http", "port": 8000, "targetPort": 80, "protocol": "TCP"}],
    "selector": {"app": "httpbin-ambient"}, "sessionAffinity": "None"}, "ambient-apps")


def test_service_table_of_every_type():
    services = [
        HTTPBIN_SERVICE,
        service("db", {"clusterIP": "None", "ports": [{"port": 5432},
                                                      {"port": 53, "protocol": "UDP"}]},
                created=ago(days=30)),
        service("web", {"type": "NodePort", "clusterIP": "10.96.3.4",
                        "ports": [{"port": 80, "nodePort": 30080}]}, created=ago(days=761)),
        service("lb", {"type": "LoadBalancer", "clusterIP": "10.96.3.5", "ports": [{"port": 443}]},
                created=ago(seconds=2)),
        service("ext", {"type": "ExternalName", "externalName": "example.com"},
                created=ago(minutes=3)),
        service("pub", {"clusterIP": "10.96.3.6", "externalIPs": ["192.0.2.1", "192.0.2.2"],
                        "ports": [{"port": 80}]}, created=ago(minutes=3)),
    ]
    assert table("Service", services, all_namespaces=True, now=NOW) == out(
        "NAMESPACE      NAME              TYPE           CLUSTER-IP   EXTERNAL-IP           "
        "PORT(S)           AGE",
        "ambient-apps   httpbin-ambient   ClusterIP      10.96.0.20   <none>                "
        "8000/TCP          27h",
        "default        db                ClusterIP      None         <none>                "
        "5432/TCP,53/UDP   30d",
        "default        web               NodePort       10.96.3.4    <none>                "
        "80:30080/TCP      2y31d",
        "default        lb                LoadBalancer   10.96.3.5    <pending>             "
        "443/TCP           2s",
        "default        ext               ExternalName   <none>       example.com           "
        "<none>            3m",
        "default        pub               ClusterIP      10.96.3.6    192.0.2.1,192.0.2.2   "
        "80/TCP            3m",
    )


def test_service_table_wide_adds_the_selector():
    assert table("Service", [HTTPBIN_SERVICE], wide=True, now=NOW) == out(
        "NAME              TYPE        CLUSTER-IP   EXTERNAL-IP   PORT(S)    AGE   SELECTOR",
        "httpbin-ambient   ClusterIP   10.96.0.20   <none>        8000/TCP   27h   "
        "app=httpbin-ambient",
    )


def test_endpoints_table_shows_three_ready_addresses_then_a_count():
    endpoints = [
        {"metadata": {"name": "httpbin", "creationTimestamp": ago(hours=1)},
         "subsets": [{"addresses": [{"ip": "10.244.0.5"}, {"ip": "10.244.1.6"}],
                      "notReadyAddresses": [{"ip": "10.244.1.9"}],
                      "ports": [{"name": "http", "port": 80}, {"name": "metrics", "port": 9090}]}]},
        {"metadata": {"name": "empty", "creationTimestamp": ago(hours=1)}},
        {"metadata": {"name": "headless", "creationTimestamp": ago(hours=1)},
         "subsets": [{"addresses": [{"ip": "10.244.0.7"}]}]},
        {"metadata": {"name": "v6", "creationTimestamp": ago(hours=1)},
         "subsets": [{"addresses": [{"ip": "fd00::5"}], "ports": [{"port": 80}]}]},
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
        {"metadata": {"name": "ambient-apps", "creationTimestamp": ago(hours=1)},
         "status": {"phase": "Active"}},
        {"metadata": {"name": "default", "creationTimestamp": ago(days=10)}},
        {"metadata": {"name": "old", "creationTimestamp": ago(days=10)},
         "status": {"phase": "Terminating"}},
    ]
    assert table("Namespace", namespaces, all_namespaces=True, now=NOW) == out(
        "NAME           STATUS        AGE",
        "ambient-apps   Active        60m",
        "default        Active        10d",
        "old            Terminating   10d",
    )


def test_serviceaccount_table():
    accounts = [{"metadata": {"name": "default", "namespace": "default",
                              "creationTimestamp": ago(hours=1)}},
                {"metadata": {"name": "sleep-ambient", "namespace": "ambient-apps",
                              "creationTimestamp": ago(seconds=30)},
                 "secrets": [{"name": "token"}]}]
    assert table("ServiceAccount", accounts, all_namespaces=True, now=NOW) == out(
        "NAMESPACE      NAME            SECRETS   AGE",
        "default        default         0         60m",
        "ambient-apps   sleep-ambient   1         30s",
    )


NODES = [
    {"metadata": {"name": "control-plane", "creationTimestamp": ago(hours=3),
                  "labels": {"node-role.kubernetes.io/control-plane": ""}},
     "status": {"conditions": [{"type": "Ready", "status": "True"}],
                "addresses": [{"type": "InternalIP", "address": "172.18.0.10"},
                              {"type": "Hostname", "address": "control-plane"}],
                "nodeInfo": {"kubeletVersion": "v1.29.0-lab", "osImage": "ambient-lab",
                             "kernelVersion": "6.18.0", "containerRuntimeVersion": "lab://0.1"}}},
    {"metadata": {"name": "worker", "creationTimestamp": ago(hours=3),
                  "labels": {"kubernetes.io/role": "worker"}},
     "spec": {"unschedulable": True},
     "status": {"conditions": [{"type": "Ready", "status": "False"}],
                "nodeInfo": {"kubeletVersion": "v1.29.0-lab"}}},
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
    {"metadata": {"name": "sleep.17c", "namespace": "ambient-apps"}, "type": "Normal",
     "reason": "Scheduled", "message": "Successfully assigned ambient-apps/sleep to worker",
     "involvedObject": {"kind": "Pod", "name": "sleep"},
     "source": {"component": "default-scheduler"},
     "firstTimestamp": ago(minutes=2), "lastTimestamp": ago(minutes=2), "count": 1},
    {"metadata": {"name": "sleep.17d", "namespace": "ambient-apps"}, "type": "Warning",
     "reason": "BackOff", "message": "Back-off restarting failed container\nsecond line",
     "involvedObject": {"kind": "Pod", "name": "sleep", "fieldPath": "spec.containers{sleep}"},
     "source": {"component": "kubelet", "host": "worker"},
     "firstTimestamp": ago(minutes=10), "lastTimestamp": ago(seconds=30), "count": 4},
]


def test_event_table_cuts_messages_at_the_first_line_break():
    assert table("Event", EVENTS, now=NOW) == out(
        "LAST SEEN   TYPE      REASON      OBJECT      MESSAGE",
        "2m          Normal    Scheduled   pod/sleep   Successfully assigned ambient-apps/sleep "
        "to worker",
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
    event = {"metadata": {"name": "e"}, "type": "Normal", "reason": "Pulled",
             "regarding": {"kind": "Pod", "name": "p"}, "note": "pulled",
             "eventTime": ago(minutes=6), "series": {"count": 3, "lastObservedTime": ago(
                 seconds=9)}}
    assert table("Event", [event], now=NOW) == out(
        "LAST SEEN   TYPE     REASON   OBJECT   MESSAGE",
        "9s          Normal   Pulled   pod/p    pulled",
    )


# --- mesh and other kinds -----------------------------------------------------------------------

def mesh(kind, name, spec, status=None, seconds=60):
    obj = {"kind": kind, "metadata": {"name": name, "namespace": "ambient-apps",
                                      "creationTimestamp": ago(seconds=seconds)}, "spec": spec}
    if status:
        obj["status"] = status
    return obj


def test_authorization_policy_table_shows_the_action_and_nothing_when_unset():
    policies = [mesh("AuthorizationPolicy", "require-sleep-identity", {"action": "ALLOW"}),
                mesh("AuthorizationPolicy", "allow-nothing", {})]
    assert table("AuthorizationPolicy", policies, now=NOW) == out(
        "NAME                     ACTION   AGE",
        "require-sleep-identity   ALLOW    60s",
        "allow-nothing                     60s",
    )


def test_peer_and_request_authentication_tables():
    peer = mesh("PeerAuthentication", "default", {"mtls": {"mode": "STRICT"}})
    assert table("PeerAuthentication", [peer], now=NOW) == out(
        "NAME      MODE     AGE",
        "default   STRICT   60s",
    )
    jwt = mesh("RequestAuthentication", "require-jwt-for-billing", {"jwtRules": []})
    assert table("RequestAuthentication", [jwt], all_namespaces=True, now=NOW) == out(
        "NAMESPACE      NAME                      AGE",
        "ambient-apps   require-jwt-for-billing   60s",
    )


def test_gateway_table():
    gateways = [
        mesh("Gateway", "httpbin-ambient-waypoint", {"gatewayClassName": "istio"},
             {"addresses": [{"type": "IPAddress", "value": "10.96.0.30"}],
              "conditions": [{"type": "Accepted", "status": "True"},
                             {"type": "Programmed", "status": "True"}]}),
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
        "NAME   HOSTNAMES                           AGE",
        'r      ["a.example.com","b.example.com"]   60s',
    )
    vs = mesh("VirtualService", "reviews", {"hosts": ["reviews"]})
    assert table("VirtualService", [vs], now=NOW) == out(
        "NAME      GATEWAYS   HOSTS         AGE",
        'reviews              ["reviews"]   60s',
    )


def test_configmap_and_unknown_kinds():
    config = {"metadata": {"name": "istio", "creationTimestamp": ago(hours=1)},
              "data": {"mesh": "x", "meshNetworks": "y"}}
    assert table("ConfigMap", [config], now=NOW) == out(
        "NAME    DATA   AGE",
        "istio   2      60m",
    )
    widget = {"metadata": {"name": "w", "namespace": "n", "creationTimestamp": ago(hours=1)}}
    assert table("Widget", [widget], all_namespaces=True, now=NOW) == out(
        "NAMESPACE   NAME   AGE",
        "n           w      60m",
    )


def test_kind_is_case_insensitive():
    assert table("pod", [running_pod("a")], now=NOW) == table("Pod", [running_pod("a")], now=NOW)


def test_no_resources():
    assert table("Pod", [], now=NOW) == ""
    assert no_resources("ambient-apps") == "No resources found in ambient-apps namespace."
    assert no_resources(None) == "No resources found"


# --- -o yaml, -o json, -o name ------------------------------------------------------------------

POLICY = {
    "apiVersion": "security.istio.io/v1beta1", "kind": "AuthorizationPolicy",
    "metadata": {"name": "require-sleep-identity", "namespace": "ambient-apps"},
    "spec": {"selector": {"matchLabels": {"app": "httpbin-ambient"}}, "action": "ALLOW",
             "rules": [{"from": [{"source": {
                 "principals": ["cluster.local/ns/ambient-apps/sa/sleep-ambient"]}}]}]},
}


def test_to_yaml_is_block_style_in_insertion_order():
    assert printers.to_yaml(POLICY) == out(
        "apiVersion: security.istio.io/v1beta1",
        "kind: AuthorizationPolicy",
        "metadata:",
        "  name: require-sleep-identity",
        "  namespace: ambient-apps",
        "spec:",
        "  selector:",
        "    matchLabels:",
        "      app: httpbin-ambient",
        "  action: ALLOW",
        "  rules:",
        "  - from:",
        "    - source:",
        "        principals:",
        "        - cluster.local/ns/ambient-apps/sa/sleep-ambient",
    )


def test_to_yaml_scalars_round_trip():
    data = {"script": "echo hi\necho there\n", "port": "8080", "empty": {}, "none": [],
            "long": "x" * 300, "flag": True, "n": 3}
    text = printers.to_yaml(data)
    assert "script: |\n  echo hi\n  echo there\n" in text
    assert "port: '8080'\n" in text
    assert "empty: {}\nnone: []\n" in text
    assert f"long: {'x' * 300}\n" in text
    assert yaml.safe_load(text) == data


def test_to_json_is_indented_by_four():
    assert printers.to_json({"a": {"b": [1, "caf\u00e9"]}}) == out(
        "{",
        '    "a": {',
        '        "b": [',
        "            1,",
        '            "caf\u00e9"',
        "        ]",
        "    }",
        "}",
    )
    assert json.loads(printers.to_json(POLICY)) == POLICY


def test_names_use_kubectls_resource_prefixes():
    objects = [
        {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "sleep"}},
        {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "httpbin"}},
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "httpbin"}},
        POLICY,
        {"apiVersion": "gateway.networking.k8s.io/v1beta1", "kind": "Gateway",
         "metadata": {"name": "waypoint"}},
        {"metadata": {"name": "no-type-meta"}},
    ]
    assert names("Deployment", objects) == out(
        "pod/sleep",
        "deployment.apps/httpbin",
        "service/httpbin",
        "authorizationpolicy.security.istio.io/require-sleep-identity",
        "gateway.gateway.networking.k8s.io/waypoint",
        "deployment.apps/no-type-meta",
    )
    assert names("Pod", []) == ""


# --- describe -----------------------------------------------------------------------------------

def described_pod():
    pod = running_pod("httpbin-ambient-5d7b9c8f4-abcde", restarts=2,
                      last_finished="2024-05-01T11:59:55Z")
    pod["metadata"].update({
        "labels": {"app": "httpbin-ambient", "version": "v1", "pod-template-hash": "5d7b9c8f4"},
        "annotations": {"lab.ambient/netns": "al-lab-pod-ambient-apps-httpbin"},
        "ownerReferences": [{"kind": "ReplicaSet", "name": "httpbin-ambient-5d7b9c8f4",
                             "controller": True}]})
    pod["spec"].update({"serviceAccountName": "httpbin-ambient", "containers": [{
        "name": "main", "image": "docker.io/kennethreitz/httpbin",
        "ports": [{"containerPort": 80}],
        "command": ["gunicorn"], "args": ["-b", "0.0.0.0:80"],
        "env": [{"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                {"name": "MODE", "value": "ambient"}]}]})
    pod["status"].update({
        "hostIP": "172.18.0.11", "startTime": "2024-05-01T11:55:01Z",
        "conditions": [{"type": "PodScheduled", "status": "True"},
                       {"type": "Initialized", "status": "True"},
                       {"type": "ContainersReady", "status": "True"},
                       {"type": "Ready", "status": "True"}]})
    status = pod["status"]["containerStatuses"][0]
    status["state"]["running"]["startedAt"] = "2024-05-01T11:58:00Z"
    status["lastState"]["terminated"].update({"startedAt": "2024-05-01T11:57:00Z"})
    return pod


POD_EVENTS = [
    {"type": "Warning", "reason": "BackOff", "message": "Back-off restarting failed container",
     "source": {"component": "kubelet"}, "firstTimestamp": "2024-05-01T11:56:00Z",
     "lastTimestamp": "2024-05-01T11:59:00Z", "count": 3},
    {"type": "Normal", "reason": "Scheduled",
     "message": "Successfully assigned ambient-apps/httpbin to worker",
     "source": {"component": "default-scheduler"}, "firstTimestamp": "2024-05-01T11:55:00Z",
     "lastTimestamp": "2024-05-01T11:55:00Z", "count": 1},
]


def test_describe_pod():
    assert describe("Pod", described_pod(), POD_EVENTS, NOW) == out(
        "Name:             httpbin-ambient-5d7b9c8f4-abcde",
        "Namespace:        ambient-apps",
        "Service Account:  httpbin-ambient",
        "Node:             worker/172.18.0.11",
        "Start Time:       Wed, 01 May 2024 11:55:01 +0000",
        "Labels:           app=httpbin-ambient",
        "                  pod-template-hash=5d7b9c8f4",
        "                  version=v1",
        "Annotations:      lab.ambient/netns: al-lab-pod-ambient-apps-httpbin",
        "Status:           Running",
        "IP:               10.244.1.5",
        "IPs:",
        "  IP:           10.244.1.5",
        "Controlled By:  ReplicaSet/httpbin-ambient-5d7b9c8f4",
        "Containers:",
        "  main:",
        "    Container ID:  ",             # `Command:` ends this alignment block
        "    Image:         docker.io/kennethreitz/httpbin",
        "    Image ID:      ",
        "    Port:          80/TCP",
        "    Host Port:     0/TCP",
        "    Command:",
        "      gunicorn",
        "    Args:",
        "      -b",
        "      0.0.0.0:80",
        "    State:          Running",
        "      Started:      Wed, 01 May 2024 11:58:00 +0000",
        "    Last State:     Terminated",
        "      Reason:       Error",
        "      Exit Code:    1",
        "      Started:      Wed, 01 May 2024 11:57:00 +0000",
        "      Finished:     Wed, 01 May 2024 11:59:55 +0000",
        "    Ready:          True",
        "    Restart Count:  2",
        "    Environment:",
        "      POD_NAME:  httpbin-ambient-5d7b9c8f4-abcde (v1:metadata.name)",
        "      MODE:      ambient",
        "    Mounts:      <none>",
        "Conditions:",
        "  Type              Status",
        "  PodScheduled      True ",
        "  Initialized       True ",
        "  ContainersReady   True ",
        "  Ready             True ",
        "Volumes:            <none>",
        "QoS Class:          BestEffort",
        "Node-Selectors:     <none>",
        "Tolerations:        <none>",
        "Events:",
        "  Type     Reason     Age               From               Message",
        "  ----     ------     ----              ----               -------",
        "  Normal   Scheduled  5m                default-scheduler  Successfully assigned "
        "ambient-apps/httpbin to worker",
        "  Warning  BackOff    60s (x3 over 4m)  kubelet            Back-off restarting failed "
        "container",
    )


def test_describe_pending_pod_without_events():
    pod = {"metadata": {"name": "p", "namespace": "default"},
           "spec": {"containers": [{"name": "c", "image": "busybox",
                                    "resources": {"limits": {"cpu": "1", "memory": "1Gi"}}}],
                    "nodeSelector": {"disk": "ssd"},
                    "tolerations": [{"key": "node.kubernetes.io/not-ready", "operator": "Exists",
                                     "effect": "NoExecute", "tolerationSeconds": 300},
                                    {"operator": "Exists"}]},
           "status": {"phase": "Pending", "containerStatuses": [
               {"name": "c", "ready": False, "restartCount": 0,
                "state": {"waiting": {"reason": "ContainerCreating"}}}]}}
    assert describe("Pod", pod, [], NOW) == out(
        "Name:         p",
        "Namespace:    default",
        "Node:         <none>",
        "Labels:       <none>",
        "Annotations:  <none>",
        "Status:       Pending",
        "IP:           ",
        "IPs:          <none>",
        "Containers:",
        "  c:",
        "    Container ID:   ",
        "    Image:          busybox",
        "    Image ID:       ",
        "    Port:           <none>",
        "    Host Port:      <none>",
        "    State:          Waiting",
        "      Reason:       ContainerCreating",
        "    Ready:          False",
        "    Restart Count:  0",
        "    Environment:    <none>",
        "    Mounts:         <none>",
        "Volumes:            <none>",
        "QoS Class:          Guaranteed",
        "Node-Selectors:     disk=ssd",
        "Tolerations:        node.kubernetes.io/not-ready:NoExecute op=Exists for 300s",
        "                    op=Exists",
        "Events:             <none>",
    )


def test_describe_deployment():
    assert describe("Deployment", DEPLOYMENT, [], NOW) == out(
        "Name:                   httpbin-ambient",
        "Namespace:              ambient-apps",
        "CreationTimestamp:      Wed, 01 May 2024 11:55:00 +0000",
        "Labels:                 app=httpbin-ambient",
        "Annotations:            <none>",
        "Selector:               app=httpbin-ambient,version=v1",
        "Replicas:               1 desired | 1 updated | 1 total | 1 available | 0 unavailable",
        "StrategyType:           RollingUpdate",
        "MinReadySeconds:        0",
        "RollingUpdateStrategy:  25% max unavailable, 25% max surge",
        "Pod Template:",
        "  Labels:           app=httpbin-ambient",
        "                    version=v1",
        "  Service Account:  httpbin-ambient",
        "  Containers:",
        "   httpbin:",
        "    Image:         docker.io/kennethreitz/httpbin",
        "    Port:          80/TCP",
        "    Host Port:     0/TCP",
        "    Environment:   <none>",
        "    Mounts:        <none>",
        "  Volumes:         <none>",
        "  Node-Selectors:  <none>",
        "  Tolerations:     <none>",
        "Conditions:",
        "  Type          Status  Reason",
        "  ----          ------  ------",
        "  Available     True    MinimumReplicasAvailable",
        "  Progressing   True    NewReplicaSetAvailable",
        "Events:         <none>",
    )


def test_describe_service_with_its_endpoints():
    labelled = {**HTTPBIN_SERVICE, "metadata": {
        **HTTPBIN_SERVICE["metadata"],
        "labels": {"app": "httpbin-ambient", "service": "httpbin-ambient"}}}
    endpoints = {"subsets": [{"addresses": [{"ip": "10.244.1.5"}],
                              "ports": [{"name": "http", "port": 80}]}]}
    assert describe("Service", labelled, [], NOW, endpoints=endpoints) == out(
        "Name:              httpbin-ambient",
        "Namespace:         ambient-apps",
        "Labels:            app=httpbin-ambient",
        "                   service=httpbin-ambient",
        "Annotations:       <none>",
        "Selector:          app=httpbin-ambient",
        "Type:              ClusterIP",
        "IP Families:       <none>",
        "IP:                10.96.0.20",
        "IPs:               10.96.0.20",
        "Port:              http  8000/TCP",
        "TargetPort:        80/TCP",
        "Endpoints:         10.244.1.5:80",
        "Session Affinity:  None",
        "Events:            <none>",
    )


def test_describe_headless_service_without_endpoints():
    headless = service("db", {"clusterIP": "None", "ports": [{"port": 5432},
                                                              {"name": "dns", "port": 53,
                                                               "protocol": "UDP"}]})
    assert describe("Service", headless, None, NOW) == out(
        "Name:              db",
        "Namespace:         default",
        "Labels:            <none>",
        "Annotations:       <none>",
        "Selector:          <none>",
        "Type:              ClusterIP",
        "IP Families:       <none>",
        "IP:                None",
        "Port:              <unset>  5432/TCP",
        "TargetPort:        5432/TCP",
        "Endpoints:         <none>",
        "Port:              dns  53/UDP",
        "TargetPort:        53/UDP",
        "Endpoints:         <none>",
        "Session Affinity:  None",
        "Events:            <none>",
    )


def test_describe_namespace():
    namespace = {"metadata": {"name": "ambient-apps", "labels": {
        "istio.io/dataplane-mode": "ambient", "kubernetes.io/metadata.name": "ambient-apps"}},
        "status": {"phase": "Active"}}
    assert describe("Namespace", namespace, [], NOW) == out(
        "Name:         ambient-apps",
        "Labels:       istio.io/dataplane-mode=ambient",
        "              kubernetes.io/metadata.name=ambient-apps",
        "Annotations:  <none>",
        "Status:       Active",
        "",
        "No resource quota.",
        "",
        "No LimitRange resource.",
    )


def test_describe_other_kinds_shows_metadata_then_yaml_sections():
    policy = {**POLICY, "metadata": {
        **POLICY["metadata"], "creationTimestamp": "2024-05-01T11:59:00Z",
        "annotations": {"note": "line one\nline two",
                        "kubectl.kubernetes.io/last-applied-configuration": "{}"}},
        "status": {"validationMessages": []}}
    events = [{"type": "Normal", "reason": "Accepted", "message": "enforced by ztunnel",
               "reportingController": "istiod", "eventTime": "2024-05-01T11:59:01Z"}]
    assert describe("AuthorizationPolicy", policy, events, NOW) == out(
        "Name:         require-sleep-identity",
        "Namespace:    ambient-apps",
        "Labels:       <none>",
        "Annotations:  note:",
        "  line one",
        "  line two",
        "API Version:        security.istio.io/v1beta1",
        "Kind:               AuthorizationPolicy",
        "CreationTimestamp:  Wed, 01 May 2024 11:59:00 +0000",
        "Spec:",
        "  selector:",
        "    matchLabels:",
        "      app: httpbin-ambient",
        "  action: ALLOW",
        "  rules:",
        "  - from:",
        "    - source:",
        "        principals:",
        "        - cluster.local/ns/ambient-apps/sa/sleep-ambient",
        "Status:",
        "  validationMessages: []",
        "Events:",
        "  Type    Reason    Age   From    Message",
        "  ----    ------    ----  ----    -------",
        "  Normal  Accepted  59s   istiod  enforced by ztunnel",
    )
