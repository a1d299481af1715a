"""Dual-stack WireGuard labs end to end through `netns-lab`.

Mode separate (examples/wireguard-dual-stack.yaml, flannel's default): every host has
flannel-wg for IPv4 on 51820 and flannel-wg-v6 for IPv6 on 51821, each its own
wireguard-go, one key pair for both; the leases publish that key and the port each
device listens on; status shows every peer programmed in both families and both
devices on every host; the full ping matrix in both families; a DF ping at the device
MTU (1500 - 80) in both families; the underlay capture during pod pings in both
families shows only UDP to 51820 (over IPv4) and 51821 (over IPv6), never a pod address.

Mode auto on ULA addresses (a topology written here): flannel's `selectMode` picks
IPv4 endpoints (the peer's IPv4 is RFC 1918, both IPv6 addresses are ULA), so there is
one flannel-wg on 51820 whose peers carry both families' subnets as allowed IPs, and
pod pings of both families cross it inside IPv4 datagrams.

First contact: two nodes that program each other at the same instant used to both
start a handshake, cross, and wait WireGuard's REKEY_TIMEOUT (5 s) before any pod
packet got through (about 1 fresh lab in 10). Only the end with the smaller public key
primes now (backends/wireguard.py), so the ping matrices below take netns-lab's
default 2 x 2 s a pair, right after `up`.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from ipaddress import ip_address, ip_network
from pathlib import Path
from typing import Any

import pytest
import yaml
from labrun import LabRun, lab_up
from netns_lab import observe, probes, wgview
from netns_lab.lab import Lab

from core.lease import Lease

pytestmark = [pytest.mark.e2e, pytest.mark.netns, pytest.mark.xdist_group("lab-wgds")]
WG_MTU = 1500 - 80
FLANNELCTL = str(Path(sys.executable).with_name("flannelctl"))
PORTS = {"flannel-wg": 51820, "flannel-wg-v6": 51821}
FAMILY = {"flannel-wg": 4, "flannel-wg-v6": 6}
ATTEMPTS: tuple[str, ...] = ()  # netns-lab ping's default: 2 x 2 s a pair
AUTO_TOPOLOGY = {
    "description": "dual stack, wireguard Mode auto on ULA addresses, one pod per host",
    "network": {"Network": "10.247.0.0/16", "EnableIPv6": True,
                "IPv6Network": "fc00:247::/48",
                "Backend": {"Type": "wireguard", "Mode": "auto"}},
    "segments": {"lan": {"subnet": "192.168.47.0/24", "subnet6": "fd10:47::/64"}},
    "etcd": {"members": 1},
    "hosts": 2,
    "defaults": {"pods": 1},
}


@pytest.fixture(scope="module")
def lab() -> Iterator[LabRun]:
    with lab_up("wireguard-dual-stack", tag="wgds") as run:
        yield run


def leases(the_lab: Lab) -> dict[str, Lease]:
    """Each host's lease, by host name."""
    live = observe.read_leases(the_lab)
    out = {}
    for h in the_lab.topology.host_names:
        lease = observe.host_lease(the_lab, h, live)
        assert lease is not None, f"{h} holds no lease"
        out[h] = lease
    return out


def wg_dump(run: LabRun, host: str) -> tuple[dict[str, list[str]], dict[str, list[list[str]]]]:
    """`wg show all dump` inside `host`: its interfaces, and each one's peer rows."""
    out = run.cli("exec", host, "--", "wg", "show", "all", "dump").stdout
    ifaces: dict[str, list[str]] = {}
    peers: dict[str, list[list[str]]] = {}
    for row in (line.split("\t") for line in out.splitlines() if line):
        if len(row) == 5:  # ifname, private key, public key, listen port, fwmark
            ifaces[row[0]] = row
        else:  # ifname, public key, psk, endpoint, allowed IPs, handshake, rx, tx, keepalive
            peers.setdefault(row[0], []).append(row)
    return ifaces, peers


def link(the_lab: Lab, host: str, dev: str) -> dict[str, Any]:
    out = subprocess.run(["ip", "-j", "-d", "-n", the_lab.ns(host), "addr", "show", "dev", dev],
                         capture_output=True, text=True, check=True, timeout=10).stdout
    return dict(json.loads(out)[0])


def routes(the_lab: Lab, host: str, family: int) -> list[dict[str, Any]]:
    out = subprocess.run(["ip", "-j", f"-{family}", "-n", the_lab.ns(host), "route", "show"],
                         capture_output=True, text=True, check=True, timeout=10).stdout
    return list(json.loads(out))


def pod_addresses(the_lab: Lab) -> dict[str, str]:
    out = {}
    for h, ps in the_lab.pods.items():
        for p, pod in ps.items():
            out[f"{h}/{p}"] = pod.ip
            out[f"{h}/{p} v6"] = pod.ip6
    return out


# --- Mode separate ------------------------------------------------------------------------


def test_both_devices_on_every_host(lab: LabRun) -> None:
    the_lab = lab.lab()
    by_host = leases(the_lab)
    for h, own in by_host.items():
        ifaces, peers = wg_dump(lab, h)
        assert set(ifaces) == set(PORTS), ifaces
        assert {d: int(r[3]) for d, r in ifaces.items()} == PORTS
        # one key file, one key pair: both devices, and both halves of the lease
        assert ifaces["flannel-wg"][2] == ifaces["flannel-wg-v6"][2]
        assert own.attrs.backend_data == {"PublicKey": ifaces["flannel-wg"][2], "Port": 51820}
        assert own.attrs.backend_v6_data == {"PublicKey": ifaces["flannel-wg"][2],
                                             "Port": 51821}
        others = [ls for o, ls in by_host.items() if o != h]
        for dev, fam in FAMILY.items():
            want = {(ls.attrs.backend_data["PublicKey"],
                     f"{ls.attrs.public_ip}:51820" if fam == 4
                     else f"[{ls.attrs.public_ipv6}]:51821",
                     str(ls.ipv4_subnet if fam == 4 else ls.ipv6_subnet)) for ls in others}
            assert {(r[1], r[3], r[4]) for r in peers[dev]} == want, (h, dev, peers[dev])
            info = link(the_lab, h, dev)
            assert info["mtu"] == WG_MTU and "UP" in info["flags"], info
            subnet = own.ipv4_subnet if fam == 4 else own.ipv6_subnet
            assert subnet is not None
            assert [(a["local"], a["prefixlen"]) for a in info["addr_info"]
                    if a["family"] == ("inet" if fam == 4 else "inet6")
                    and a.get("scope") == "global"] == [
                        (subnet.network_address.compressed, subnet.max_prefixlen)]
            network = the_lab.topology.pod_network if fam == 4 else the_lab.topology.pod_network6
            assert any(r["dst"] == str(network) and r.get("dev") == dev
                       for r in routes(the_lab, h, fam)), (h, dev)
        # the UAPI sockets through the host's mount namespace agree with `wg show`
        summary = wgview.device_summary(wgview.read_devices(the_lab, h))
        assert {d: (s["listen_port"], s["public_key"], s["peers"]) for d, s in summary.items()} \
            == {d: (PORTS[d], ifaces[d][2], 2) for d in PORTS}


def test_status_every_peer_in_both_families(lab: LabRun) -> None:
    status = lab.status()
    assert status["backend"] == "wireguard" and status["families"] == [4, 6]
    for h in status["hosts"]:
        assert h["flanneld"] == "ready" and h["backend"] == "wireguard", h
        assert len(h["peers"]) == 2 and set(h["peers"].values()) == {"wg"}, h
        assert len(h["peers6"]) == 2 and set(h["peers6"].values()) == {"wg"}, h
        assert {d: s["listen_port"] for d, s in h["wg_devices"].items()} == PORTS, h
        assert all(ip_network(a).version == FAMILY[d]
                   for d, s in h["wg_devices"].items() for a in s["allowed_ips"]), h
    text = lab.cli("status").stdout
    assert text.count("2/2 (wg)") == 6, text  # PEERS and PEERS6 of each of 3 hosts
    assert ("wireguard: flannel-wg (port 51820, 2 peers), flannel-wg-v6 (port 51821, "
            "2 peers) on every host") in text, text


def test_full_ping_matrix_in_both_families(lab: LabRun) -> None:
    results = lab.ping(*ATTEMPTS)
    n = len(lab.lab().all_pods())
    assert len(results) == 2 * n * (n - 1)
    assert {r["family"] for r in results} == {4, 6}
    assert [r for r in results if not r["ok"]] == []


@pytest.mark.parametrize("family", [4, 6])
def test_full_size_ping_with_df_in_each_family(lab: LabRun, family: int) -> None:
    result = probes.df_ping(lab.lab(), "h1/p1", "h3/p2", family=family)
    assert result.mtu == WG_MTU and result.size == probes.full_size(WG_MTU, family)
    assert result.ok, result.output


def test_capture_shows_only_udp_to_51820_and_51821(lab: LabRun) -> None:
    the_lab = lab.lab()
    addrs = pod_addresses(the_lab)

    def pings() -> None:
        lab.pod_exec("h1/p1", "ping", "-4", "-c", "4", "-i", "0.2", addrs["h2/p1"])
        lab.pod_exec("h1/p1", "ping", "-6", "-c", "4", "-i", "0.2", addrs["h3/p1 v6"])

    seen = lab.capture("h1", pings, count=12)
    assert len(seen) >= 12, seen
    assert {d["encap"] for d in seen} == {"wireguard"}, seen
    # each family's outer datagrams carry its own device's port, both ways
    assert {(d["outer_family"], d["sport"], d["port"]) for d in seen} == {
        ("ipv4", 51820, 51820), ("ipv6", 51821, 51821)}, seen
    assert any(d["wg_type"] == "data" and not d["keepalive"] for d in seen), seen
    underlay = {ip_address(a).compressed for h in the_lab.topology.host_names
                for a in the_lab.plan.addresses_of(h)}
    assert {ip_address(d["outer_src"]).compressed for d in seen} | \
        {ip_address(d["outer_dst"]).compressed for d in seen} <= underlay
    text = json.dumps(seen)
    assert not [a for a in addrs.values() if f'"{a}"' in text], text  # no pod address


def test_flannelctl_status_in_a_host_shows_both_devices_peers(lab: LabRun) -> None:
    lab.ping(*ATTEMPTS)  # traffic to every peer on both devices: a handshake each
    the_lab = lab.lab()
    proc = subprocess.run([*the_lab.sandbox.enter(the_lab.ns("h1")), FLANNELCTL, "status",
                           "--json"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    s = json.loads(proc.stdout)
    assert [(d["name"], d["listen_port"]) for d in s["wireguard"]["devices"]] == [
        ("flannel-wg", 51820), ("flannel-wg-v6", 51821)]
    assert len(s["peers"]) == 2
    for p in s["peers"]:
        assert (p["state"], p["state6"]) == ("programmed", "programmed"), p
        assert sorted(v["endpoint"] for v in p["wg"]) == sorted(
            [f"{p['public_ip']}:51820", f"[{p['public_ipv6']}]:51821"]), p


# --- Mode auto on ULA addresses -------------------------------------------------------------


def test_auto_mode_on_ula_one_device_carries_both_families(tmp_path: Path) -> None:
    topo = tmp_path / "wireguard-auto-ula.yaml"
    topo.write_text(yaml.safe_dump(AUTO_TOPOLOGY))
    with lab_up(str(topo), tag="wgau") as run:
        the_lab = run.lab()
        by_host = leases(the_lab)
        for h, own in by_host.items():
            ifaces, peers = wg_dump(run, h)
            assert set(ifaces) == {"flannel-wg"} and int(ifaces["flannel-wg"][3]) == 51820
            # BackendV6Data names the port the one device listens on (flannel: ListenPortV6)
            assert own.attrs.backend_v6_data == {"PublicKey": ifaces["flannel-wg"][2],
                                                 "Port": 51820}
            [other] = [ls for o, ls in by_host.items() if o != h]
            [row] = peers["flannel-wg"]
            assert row[1] == other.attrs.backend_data["PublicKey"]
            assert row[3] == f"{other.attrs.public_ip}:51820"  # IPv4: RFC 1918 + ULA
            assert set(row[4].split(",")) == {str(other.ipv4_subnet), str(other.ipv6_subnet)}
            info = link(the_lab, h, "flannel-wg")
            assert info["mtu"] == WG_MTU
            for fam, network in ((4, the_lab.topology.pod_network),
                                 (6, the_lab.topology.pod_network6)):
                assert any(r["dst"] == str(network) and r.get("dev") == "flannel-wg"
                           for r in routes(the_lab, h, fam)), (h, fam)
        status = run.status()
        for row_ in status["hosts"]:
            assert set(row_["peers"].values()) == set(row_["peers6"].values()) == {"wg"}, row_
            assert list(row_["wg_devices"]) == ["flannel-wg"], row_

        results = run.ping(*ATTEMPTS)
        assert len(results) == 4 and {r["family"] for r in results} == {4, 6}
        assert [r for r in results if not r["ok"]] == []
        # the IPv6 pod ping crosses inside IPv4 datagrams to 51820
        dst6 = pod_addresses(the_lab)["h2/p1 v6"]
        seen = run.capture("h1", lambda: run.pod_exec("h1/p1", "ping", "-6", "-c", "4", "-i",
                                                      "0.2", dst6), count=6)
        assert len(seen) >= 6, seen
        assert {(d["encap"], d["outer_family"], d["port"]) for d in seen} == {
            ("wireguard", "ipv4", 51820)}, seen
