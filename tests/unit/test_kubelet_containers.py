"""The kubelet's pure helpers: who a container runs as (runAsUser/runAsGroup), the command lines
of containers, hooks and `lab exec`, lifecycle hooks, and who may read the pod's token."""

from __future__ import annotations

import pytest

from lab.runtime.podspec import RunAs, exec_argv, has_non_root, lifecycle_command, run_as, user_argv

APP = {"name": "app", "image": "ambient-lab/echo"}


def c(**security) -> dict:
    return dict(APP, securityContext=security) if security else dict(APP)


def spec(*containers, init=(), **pod_security) -> dict:
    out = {"containers": list(containers) or [dict(APP)]}
    if init:
        out["initContainers"] = list(init)
    if pod_security:
        out["securityContext"] = pod_security
    return out


def test_unset_is_root_as_is():
    assert run_as(spec(), APP) is None
    assert user_argv(None, ["id", "-u"]) == ["id", "-u"]
    assert exec_argv("ns1", None, ["id"]) == ["ip", "netns", "exec", "ns1", "id"]


def test_container_overrides_pod_and_group_defaults_to_zero():
    assert run_as(spec(), c(runAsUser=1337, runAsGroup=1337)) == RunAs(1337, 1337)
    assert run_as(spec(runAsUser=1000, runAsGroup=2000), APP) == RunAs(1000, 2000)
    assert run_as(spec(runAsUser=1000, runAsGroup=2000), c(runAsUser=1337)) == RunAs(1337, 2000)
    assert run_as(spec(), c(runAsUser=1337)) == RunAs(1337, 0)
    assert run_as(spec(runAsUser=1000), c(runAsUser=0)) == RunAs(0, 0)  # explicit root wins


def test_supplemental_groups_and_fs_group():
    assert run_as(spec(supplementalGroups=[5, 4], fsGroup=7), c(runAsUser=1337)) == RunAs(1337, 0, (4, 5, 7))


def test_run_as_non_root_and_bad_ids_are_refused():
    with pytest.raises(ValueError, match="runAsNonRoot and image will run as root"):
        run_as(spec(runAsNonRoot=True), APP)
    assert run_as(spec(runAsNonRoot=True), c(runAsUser=1337)) == RunAs(1337, 0)
    for bad in (-1, "1337", True, 1.5):
        with pytest.raises(ValueError, match="runAsUser"):
            run_as(spec(), c(runAsUser=bad))


def test_the_uid_switch_comes_after_the_netns_switch():
    who = RunAs(1337, 1337)
    assert exec_argv("al-x-pod-a_b", who, ["sh", "-c", "id -u"]) == [
        "ip",
        "netns",
        "exec",
        "al-x-pod-a_b",
        "setpriv",
        "--reuid=1337",
        "--regid=1337",
        "--clear-groups",
        "--",
        "sh",
        "-c",
        "id -u",
    ]
    # `lab exec`'s prefix: the user's command goes after "--".
    assert exec_argv("n", who)[-1] == "--"
    assert user_argv(RunAs(0, 0, (10, 20)), ["x"])[:4] == ["setpriv", "--reuid=0", "--regid=0", "--groups=10,20"]


def test_lifecycle_commands():
    hooked = dict(
        APP,
        lifecycle={
            "postStart": {"exec": {"command": ["pilot-agent", "wait"]}},
            "preStop": {"exec": {"command": ["sleep", 1]}},
        },
    )
    assert lifecycle_command(hooked, "postStart") == ["pilot-agent", "wait"]
    assert lifecycle_command(hooked, "preStop") == ["sleep", "1"]
    assert lifecycle_command(APP, "postStart") is None
    assert lifecycle_command(dict(APP, lifecycle={"postStart": {"httpGet": {"port": 80}}}), "postStart") is None


def test_token_file_is_shared_only_through_the_pods_own_group():
    assert not has_non_root(spec())
    assert has_non_root(spec(dict(APP), c(runAsUser=1337, runAsGroup=1337)))
    assert has_non_root(spec(init=[c(runAsUser=5)]))
    # A non-root container gets the pod's own group (the token's group); root needs none.
    assert run_as(spec(), c(runAsUser=1337, runAsGroup=1337), pod_gid=3000001).groups == (3000001,)
    assert run_as(spec(), dict(APP), pod_gid=3000001) is None
