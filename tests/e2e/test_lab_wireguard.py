"""The wireguard lab end to end through `netns-lab` (examples/wireguard.yaml): three hosts,
each with wireguard-go's flannel-wg in its own mount namespace.

Every host programs every peer (status PEERS "2/2 (wg)", read from each host's UAPI
socket), the full ping matrix, a full-size DF ping (pod MTU = 1500 - 80), the
underlay capture during pod pings shows only UDP to 51820 (WireGuard data messages)
and never a pod address, and flannelctl status/doctor, run inside a lab host as an
operator would, show every peer with a handshake and transfer counters.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from labrun import LabRun, lab_up
from netns_lab import probes

pytestmark = [pytest.mark.e2e, pytest.mark.netns, pytest.mark.xdist_group("lab-wg")]
FLANNELCTL = str(Path(sys.executable).with_name("flannelctl"))
WG_MTU = 1500 - 80


@pytest.fixture(scope="module")
def lab() -> Iterator[LabRun]:
    with lab_up("wireguard", tag="wg") as run:
        yield run


def ctl(run: LabRun, host: str, *args: str) -> subprocess.CompletedProcess[str]:
    """flannelctl inside the host (its network and mount namespaces): no flags, no env."""
    lab = run.lab()
    return subprocess.run([*lab.sandbox.enter(lab.ns(host)), FLANNELCTL, *args],
                          capture_output=True, text=True, timeout=60)


def pods(run: LabRun) -> dict[str, str]:
    return {f"{h}/{p}": pod.ip for h, ps in run.lab().pods.items() for p, pod in ps.items()}


def test_every_host_programs_every_peer(lab: LabRun) -> None:
    status = lab.status()
    assert status["backend"] == "wireguard"
    for h in status["hosts"]:
        assert h["flanneld"] == "ready" and h["backend"] == "wireguard", h
        assert set(h["peers"].values()) == {"wg"} and len(h["peers"]) == 2, h
    text = lab.cli("status").stdout
    assert text.count("2/2 (wg)") == 3, text


def test_full_ping_matrix(lab: LabRun) -> None:
    results = lab.ping()
    n = len(pods(lab))
    assert len(results) == n * (n - 1)
    assert [r for r in results if not r["ok"]] == []


def test_full_size_ping_with_df_crosses_hosts(lab: LabRun) -> None:
    result = probes.df_ping(lab.lab(), "h1/p1", "h3/p1", family=4)
    assert result.mtu == WG_MTU and result.size == WG_MTU - 28
    assert result.ok, result.output


def test_capture_shows_ciphertext_only(lab: LabRun) -> None:
    the_lab = lab.lab()
    addrs = pods(lab)
    seen = lab.capture("h1", lambda: lab.pod_exec("h1/p1", "ping", "-c", "5", "-i", "0.2",
                                                  addrs["h2/p1"]), count=8)
    assert len(seen) >= 8, seen
    assert {d["encap"] for d in seen} == {"wireguard"}, seen
    assert {51820} == {d["port"] for d in seen} | {d["sport"] for d in seen}
    assert any(d["wg_type"] == "data" and not d["keepalive"] for d in seen), seen
    underlay = {str(a) for h in the_lab.topology.host_names for a in the_lab.plan.addresses_of(h)}
    assert {d["outer_src"] for d in seen} | {d["outer_dst"] for d in seen} <= underlay
    text = json.dumps(seen)
    assert not [a for a in addrs.values() if f'"{a}"' in text], text  # no pod address


def test_flannelctl_status_shows_peers_with_handshakes(lab: LabRun) -> None:
    lab.ping()  # traffic to every peer: each has handshaken within the last 180 s
    proc = ctl(lab, "h1", "status", "--json")
    assert proc.returncode == 0, proc.stderr
    s = json.loads(proc.stdout)
    assert s["backend"] == "wireguard" and s["subnet_env"]["mtu"] == WG_MTU
    wg = s["wireguard"]
    assert wg["key_mode"] == "0400" and wg["public_key"]
    [dev] = wg["devices"]
    assert (dev["name"], dev["kind"], dev["up"], dev["mtu"], dev["listen_port"]) == (
        "flannel-wg", "userspace", True, WG_MTU, 51820)
    assert len(s["peers"]) == 2 and {p["state"] for p in s["peers"]} == {"programmed"}
    for p in s["peers"]:
        [v] = p["wg"]
        assert v["state"] == "programmed" and v["endpoint"] == f"{p['public_ip']}:51820"
        assert v["handshake_age"] is not None and v["handshake_age"] < 180
        assert v["rx_bytes"] > 0 and v["tx_bytes"] > 0
    text = ctl(lab, "h1", "status").stdout
    assert "flannel-wg (userspace, port 51820)" in text and "2 peers: 2 programmed" in text
    assert "HANDSHAKE" in text and " ago " in text


def test_flannelctl_doctor_passes_the_wireguard_checks(lab: LabRun) -> None:
    proc = ctl(lab, "h2", "doctor", "--json")
    checks: dict[str, Any] = {c["check"]: c for c in json.loads(proc.stdout)["checks"]}
    for name in ("wg-key", "wg-device", "peers", "skipped", "strays", "mtu"):
        assert checks[name]["status"] == "OK", checks[name]
    assert "2 peers programmed" in checks["peers"]["detail"]
    assert checks["wg-handshake"]["status"] in ("OK", "WARN"), checks["wg-handshake"]
    assert proc.returncode == 0, proc.stdout
