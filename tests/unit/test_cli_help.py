"""`lab --help` and `lab istioctl --help` list exactly the verbs the parser has, each with a
one-line description."""

import argparse
import re

from lab.cli import build_parser, verbs
from lab.client.paths import kubeconfig_path, lab_dir


def subparsers(parser: argparse.ArgumentParser) -> argparse._SubParsersAction:
    return next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))


def real_verbs(parser: argparse.ArgumentParser) -> dict[str, set[str]]:
    """{verb: its names} from the parser's choices (a verb is registered before its aliases)."""
    by_parser: dict[int, list[str]] = {}
    for name, sub in subparsers(parser).choices.items():
        by_parser.setdefault(id(sub), []).append(name)
    return {names[0]: set(names) for names in by_parser.values()}


def listed(help_text: str) -> dict[str, str]:
    """{verb: description} from the verb list of a help text (`    verb (alias)   description`)."""
    out, last = {}, None
    for line in help_text.splitlines():
        m = re.match(r"^    (\S+)(?: \(([^)]*)\))?(?:\s{2,}(\S.*))?$", line)
        if m:
            last = m.group(1)
            out[last] = m.group(3) or ""
        elif last and re.match(r"^\s{8,}\S", line) and not out[last]:
            out[last] = line.strip()
    return out


def check(parser: argparse.ArgumentParser) -> None:
    shown = listed(parser.format_help())
    real = real_verbs(parser)
    assert set(shown) == set(real)
    for verb, text in shown.items():
        assert text and "\n" not in text, verb
    assert set(verbs(parser)) == set(real)


def test_lab_help_lists_every_verb():
    parser = build_parser()
    check(parser)
    names = set(real_verbs(parser))
    assert {"up", "down", "apply", "get", "exec", "logs", "istioctl", "capture", "graph", "events"} <= names


def test_istioctl_help_lists_its_verbs():
    istioctl = subparsers(build_parser()).choices["istioctl"]
    check(istioctl)
    assert set(real_verbs(istioctl)) == {"install", "ztunnel-config", "proxy-config", "proxy-status", "waypoint", "x"}
    assert "ztunnel-config (zc)" in istioctl.format_help() and "proxy-config (pc)" in istioctl.format_help()
    waypoint = subparsers(istioctl).choices["waypoint"]
    check(waypoint)
    assert set(real_verbs(waypoint)) == {"list", "status", "generate", "apply", "delete"}
    assert "TRAFFIC TYPE" in subparsers(waypoint).choices["list"].format_help()


def test_the_new_verbs_parse():
    p = build_parser()
    a = p.parse_args(["istioctl", "x", "describe", "pod", "httpbin", "-n", "ambient-apps"])
    assert (a.istio_verb, a.x_verb, a.describe_kind, a.pod, a.namespace) == (
        "x",
        "describe",
        "pod",
        "httpbin",
        "ambient-apps",
    )
    a = p.parse_args(["istioctl", "pc", "all", "waypoint-1", "-o", "json"])
    assert (a.istio_verb, a.view, a.pod, a.output) == ("pc", "all", "waypoint-1", "json")
    a = p.parse_args(["istioctl", "waypoint", "apply", "--enroll-namespace", "--overwrite", "-w", "--for", "all"])
    assert (a.name, a.traffic_type, a.enroll_namespace, a.overwrite, a.wait) == ("waypoint", "all", True, True, True)
    a = p.parse_args(["istioctl", "waypoint", "delete", "a", "b"])
    assert a.names == ["a", "b"] and not a.all


def test_lab_kubectl_passes_its_arguments_on_verbatim(monkeypatch):
    from lab.cli import kube

    assert "kubectl" in real_verbs(build_parser())
    argv = ["--lab", "k1", "kubectl", "exec", "-it", "pod", "-n", "ns", "--", "sh", "-c", "exit 3"]
    assert kube.split_argv(argv) == (["--lab", "k1", "kubectl"], argv[3:])
    assert kube.split_argv(["--lab=k1", "kubectl", "--", "x"]) == (["--lab=k1", "kubectl"], ["--", "x"])
    assert kube.split_argv(["kubectl"]) == (["kubectl"], [])
    # another verb that has `kubectl` or `--` in its arguments is argparse's
    assert kube.split_argv(["exec", "kubectl", "--", "sh"]) is None
    assert kube.split_argv(["-h", "kubectl"]) is None
    monkeypatch.setenv("LAB_KUBECTL", "/opt/kubectl.1.30")
    cmd, env = kube.command("k1", ["get", "pods", "-A"], {"HOME": "/root"})
    assert cmd == ["/opt/kubectl.1.30", "--cache-dir", kube.cache_dir("k1"), "get", "pods", "-A"]
    assert env == {"HOME": "/root", "KUBECONFIG": kubeconfig_path("k1")}
    assert kube.cache_dir("k1").startswith(lab_dir("k1") + "/")
