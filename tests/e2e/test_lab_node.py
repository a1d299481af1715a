"""A lab node is a node: on a host of the default lab, `flannelctl status` and `doctor` need no
flags and no environment (`netns-lab exec h1 -- flannelctl status`), and every host has its
own /run/flannel, /var/lib/cni, /etc/cni/net.d (its own mount namespace)."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from ipaddress import ip_network
from pathlib import Path
from typing import Any

import pytest
from labrun import LabRun, cli_argv, lab_up
from netns_lab import observe

from core.lease import Lease

pytestmark = [pytest.mark.e2e, pytest.mark.netns, pytest.mark.xdist_group("lab-node")]
VENV_BIN = str(Path(sys.executable).parent)


@pytest.fixture(scope="module")
def lab() -> Iterator[LabRun]:
    with lab_up("default", "node") as run:
        yield run


def on_node(run: LabRun, host: str, *cmd: str, check: bool = True
            ) -> subprocess.CompletedProcess[str]:
    """`netns-lab exec HOST -- CMD` with an empty environment: all CMD gets is what exec gives."""
    proc = subprocess.run([*cli_argv(), "--name", run.name, "exec", host, "--", *cmd], env={},
                          capture_output=True, text=True, timeout=60)
    if check and proc.returncode != 0:
        raise AssertionError(f"exec {host} -- {' '.join(cmd)} exited {proc.returncode}\n"
                             f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}")
    return proc


def lease_of(run: LabRun, host: str) -> Lease:
    lab = run.lab()
    lease = observe.own_lease(observe.read_leases(lab), lab.plan.ip_of(host))
    assert lease is not None, f"{host} holds no lease"
    return lease


def test_status_needs_no_flags_and_shows_the_real_lease(lab: LabRun) -> None:
    lease = lease_of(lab, "h1")
    s: dict[str, Any] = json.loads(on_node(lab, "h1", "flannelctl", "status", "--json").stdout)
    assert s["subnet"] == str(lease.subnet)
    assert s["lease"] is not None and s["lease"]["public_ip"] == str(lease.attrs.public_ip)
    assert s["public_ip"] == str(lab.lab().plan.ip_of("h1"))
    assert s["ready"] is True
    assert len(s["peers"]) == 2 and {p["state"] for p in s["peers"]} == {"programmed"}
    text = on_node(lab, "h1", "flannelctl", "status").stdout
    assert str(lease.subnet) in text and "UNREACHABLE" not in text
    assert "2 peers: 2 programmed" in text


def test_doctor_needs_no_flags(lab: LabRun) -> None:
    key = str(lease_of(lab, "h1").subnet).replace("/", "-")
    proc = on_node(lab, "h1", "flannelctl", "doctor", "--json", check=False)
    checks = {c["check"]: c for c in json.loads(proc.stdout)["checks"]}
    assert proc.returncode == 0, checks
    failed = {k: c for k, c in checks.items() if c["status"] == "FAIL"}
    assert not failed
    for name in ("etcd", "lease", "flanneld", "peers", "ipam"):  # each found by itself
        assert checks[name]["status"] == "OK", checks[name]
    assert key in json.dumps(checks["lease"])
    assert on_node(lab, "h1", "flannelctl", "doctor").returncode == 0


def test_every_host_has_its_own_run_flannel(lab: LabRun) -> None:
    the = lab.lab()
    seen = {h: on_node(lab, h, "cat", "/run/flannel/subnet.env").stdout for h in ("h1", "h2")}
    assert seen["h1"] != seen["h2"]
    for h, text in seen.items():
        env = dict(line.split("=", 1) for line in text.splitlines() if "=" in line)
        assert ip_network(env["FLANNEL_SUBNET"], strict=False) == lease_of(lab, h).subnet
        # the same file, seen from outside in the host's directory
        assert (the.host_dir(h) / "subnet.env").read_text() == text
        assert the.node_path(h, "/run/flannel/subnet.env") == the.host_dir(h) / "subnet.env"
    conf = on_node(lab, "h1", "ls", "/etc/cni/net.d", "/var/lib/cni/networks").stdout.split()
    assert "10-flannel.conflist" in conf and "cbr0" in conf


def test_exec_puts_pyflannel_on_path_and_shows_the_hosts_sysfs(lab: LabRun) -> None:
    out = on_node(lab, "h1", "sh", "-c", 'echo "$PATH"; for t in flannelctl flanneld netns-lab; '
                  'do command -v "$t"; done; ls /sys/class/net').stdout.split()
    assert out[0].split(":")[0] == VENV_BIN
    assert out[1:4] == [f"{VENV_BIN}/{t}" for t in ("flannelctl", "flanneld", "netns-lab")]
    assert {"eth0", "flannel.1", "cni0"} <= set(out[4:])
