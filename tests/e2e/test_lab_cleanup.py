"""`netns-lab down` cleans up after anything, and only its own lab; bad input is refused."""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path

import pytest
from labrun import LabRun, cli_argv
from netns_lab.build import leftovers
from netns_lab.lab import Lab
from netns_lab.netns import (
    Sandbox,
    list_netns,
    owned_lab_name,
    pid_alive,
    sweep_stale_test_sandboxes,
    wait_for,
)
from netns_lab.plan import lab_prefix

pytestmark = [pytest.mark.e2e, pytest.mark.netns]


def test_down_after_up_was_killed() -> None:
    run = LabRun("")
    try:
        up = subprocess.Popen([*cli_argv(), "--name", run.name, "up", "default"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        state = Lab.state_dir_of(run.name)
        # Kill it once flanneld is being started: namespaces, etcd and daemons exist.
        wait_for(lambda: len(list(state.glob("flanneld-*.pid"))) >= 3 or up.poll() is not None,
                 60, what="up to start flanneld")
        up.send_signal(signal.SIGKILL)
        up.wait()
        pids = run.tracked_pids()
        assert pids and any(pid_alive(p) for p in pids)
        proc = run.cli("down")
        assert "removed" in proc.stdout
        assert {k: v for k, v in leftovers(run.name).items() if v} == {}
        assert [p for p in pids if pid_alive(p)] == []
    finally:
        run.close()


def test_down_touches_only_its_own_lab() -> None:
    a = owned_lab_name("dn")
    b = a + "b"  # a name that starts with the other: its namespaces must survive
    box_a, box_b = Sandbox(lab_prefix(a)), Sandbox(lab_prefix(b))
    try:
        box_a.add_netns("h1")
        box_b.add_netns("h1")
        (box_a.state_dir / "lab.json").write_text("{}")
        proc = subprocess.run([*cli_argv(), "--name", a, "down"], capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr
        assert box_a.ns("h1") not in list_netns()
        assert not box_a.state_dir.exists()
        assert box_b.ns("h1") in list_netns()
        assert box_b.state_dir.exists()
    finally:
        box_a.cleanup()
        box_b.cleanup()


def test_sweep_removes_labs_of_dead_test_runs() -> None:
    dead = subprocess.Popen(["true"])
    dead.wait()
    prefix = f"pfl-t{dead.pid}xsw"
    box = Sandbox(prefix)
    try:
        box.add_netns("h1")
        assert prefix in sweep_stale_test_sandboxes()
        assert box.ns("h1") not in list_netns()
        assert not box.state_dir.exists()
    finally:
        box.cleanup()


def test_bad_topology_is_reported_with_fields_and_nothing_is_built(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("hosts:\n  h1: {segment: nowhere}\nnetwork: {Network: 10.1.0.0/16}\n")
    name = owned_lab_name("bad")
    proc = subprocess.run([*cli_argv(), "--name", name, "up", str(bad)],
                          capture_output=True, text=True)
    assert proc.returncode == 2
    assert "hosts.h1.segment: 'nowhere' is not a segment" in proc.stderr
    assert "network.Backend: missing" in proc.stderr
    assert not [n for n in list_netns() if n.startswith(lab_prefix(name) + "-")]
    assert not Lab.state_dir_of(name).exists()


def test_bad_lab_name_and_missing_lab() -> None:
    proc = subprocess.run([*cli_argv(), "--name", "Bad-Name", "status"],
                          capture_output=True, text=True)
    assert proc.returncode == 2 and "lowercase letters and digits" in proc.stderr
    name = owned_lab_name("none")
    proc = subprocess.run([*cli_argv(), "--name", name, "status"], capture_output=True, text=True)
    assert proc.returncode == 2 and "is not up" in proc.stderr
    assert f"netns-lab up --name {name}" in proc.stderr
