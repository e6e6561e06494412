"""The cgroup join script as the kubelet runs it (/bin/sh): it writes its pid into each cgroup,
then execs the container's command; an unwritable cgroup is exit 126."""

import subprocess

from lab.runtime import cgroups


def test_join_script_writes_its_pid_then_execs(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    r = subprocess.run(
        ["/bin/sh", "-c", cgroups.JOIN_SCRIPT, "cgroup-join", str(a), str(b), "--", "/bin/sh", "-c", "echo $$"],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0
    assert a.read_text().strip() == b.read_text().strip() == r.stdout.strip()
    r = subprocess.run(
        ["/bin/sh", "-c", cgroups.JOIN_SCRIPT, "cgroup-join", str(tmp_path / "no" / "x"), "--", "true"],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 126
