"""`describe` to the character: pods, deployments, services, namespaces and other kinds, with
their events, as kubectl's describe prints them."""

from lab.cli.printers import describe
from tests.conftest import NOT_READY_TOLERATION
from tests.unit.printer_samples import (
    DEPLOYMENT,
    HTTPBIN_SERVICE,
    NOW,
    POLICY,
    POLICY_SPEC_LINES,
    out,
    running_pod,
    service,
)


def described_pod():
    pod = running_pod("httpbin-ambient-5d7b9c8f4-abcde", restarts=2, last_finished="2024-05-01T11:59:55Z")
    pod["metadata"].update(
        {
            "labels": {"app": "httpbin-ambient", "version": "v1", "pod-template-hash": "5d7b9c8f4"},
            "annotations": {"lab.ambient/netns": "al-lab-pod-ambient-apps-httpbin"},
            "ownerReferences": [{"kind": "ReplicaSet", "name": "httpbin-ambient-5d7b9c8f4", "controller": True}],
        }
    )
    pod["spec"].update(
        {
            "serviceAccountName": "httpbin-ambient",
            "containers": [
                {
                    "name": "main",
                    "image": "docker.io/kennethreitz/httpbin",
                    "ports": [{"containerPort": 80}],
                    "command": ["gunicorn"],
                    "args": ["-b", "0.0.0.0:80"],
                    "env": [
                        {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                        {"name": "MODE", "value": "ambient"},
                    ],
                }
            ],
        }
    )
    pod["status"].update(
        {
            "hostIP": "172.18.0.11",
            "startTime": "2024-05-01T11:55:01Z",
            "conditions": [
                {"type": "PodScheduled", "status": "True"},
                {"type": "Initialized", "status": "True"},
                {"type": "ContainersReady", "status": "True"},
                {"type": "Ready", "status": "True"},
            ],
        }
    )
    status = pod["status"]["containerStatuses"][0]
    status["state"]["running"]["startedAt"] = "2024-05-01T11:58:00Z"
    status["lastState"]["terminated"].update({"startedAt": "2024-05-01T11:57:00Z"})
    return pod


POD_EVENTS = [
    {
        "type": "Warning",
        "reason": "BackOff",
        "message": "Back-off restarting failed container",
        "source": {"component": "kubelet"},
        "firstTimestamp": "2024-05-01T11:56:00Z",
        "lastTimestamp": "2024-05-01T11:59:00Z",
        "count": 3,
    },
    {
        "type": "Normal",
        "reason": "Scheduled",
        "message": "Successfully assigned ambient-apps/httpbin to worker",
        "source": {"component": "default-scheduler"},
        "firstTimestamp": "2024-05-01T11:55:00Z",
        "lastTimestamp": "2024-05-01T11:55:00Z",
        "count": 1,
    },
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
        "    Container ID:  ",  # `Command:` ends this alignment block
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
        "  Warning  BackOff    60s (x3 over 4m)  kubelet            Back-off restarting failed container",
    )


def test_describe_pending_pod_without_events():
    pod = {
        "metadata": {"name": "p", "namespace": "default"},
        "spec": {
            "containers": [{"name": "c", "image": "busybox", "resources": {"limits": {"cpu": "1", "memory": "1Gi"}}}],
            "nodeSelector": {"disk": "ssd"},
            "tolerations": [NOT_READY_TOLERATION, {"operator": "Exists"}],
        },
        "status": {
            "phase": "Pending",
            "containerStatuses": [
                {"name": "c", "ready": False, "restartCount": 0, "state": {"waiting": {"reason": "ContainerCreating"}}}
            ],
        },
    }
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
    labelled = {
        **HTTPBIN_SERVICE,
        "metadata": {**HTTPBIN_SERVICE["metadata"], "labels": {"app": "httpbin-ambient", "service": "httpbin-ambient"}},
    }
    endpoints = {"subsets": [{"addresses": [{"ip": "10.244.1.5"}], "ports": [{"name": "http", "port": 80}]}]}
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
    headless = service(
        "db", {"clusterIP": "None", "ports": [{"port": 5432}, {"name": "dns", "port": 53, "protocol": "UDP"}]}
    )
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
    labels = {"istio.io/dataplane-mode": "ambient", "kubernetes.io/metadata.name": "ambient-apps"}
    namespace = {"metadata": {"name": "ambient-apps", "labels": labels}, "status": {"phase": "Active"}}
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
    policy = {
        **POLICY,
        "metadata": {
            **POLICY["metadata"],
            "creationTimestamp": "2024-05-01T11:59:00Z",
            "annotations": {"note": "line one\nline two", "kubectl.kubernetes.io/last-applied-configuration": "{}"},
        },
        "status": {"validationMessages": []},
    }
    events = [
        {
            "type": "Normal",
            "reason": "Accepted",
            "message": "enforced by ztunnel",
            "reportingController": "istiod",
            "eventTime": "2024-05-01T11:59:01Z",
        }
    ]
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
        *POLICY_SPEC_LINES,
        "Status:",
        "  validationMessages: []",
        "Events:",
        "  Type    Reason    Age   From    Message",
        "  ----    ------    ----  ----    -------",
        "  Normal  Accepted  59s   istiod  enforced by ztunnel",
    )
