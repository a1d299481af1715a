"""A flannel WireGuard node beside two of ours, in the wireguard lab (examples/wireguard.yaml).

h1 and h2 run our flanneld. h3's flanneld is stopped, its wireguard-go killed and its key
file removed, and h3 is rebuilt by hand exactly as flannel builds a WireGuard node
(reference flannel-v6-wireguard-scale.md §4), inside its own network and mount
namespaces: the key file /run/flannel/wgkey (base64, no newline, 0400), the device
flannel-wg (wireguard-go here: this kernel has no WireGuard; started detached, its
output to a file), `wg set` with that key and listen-port 51820, MTU ext - 80, the
subnet's network address as a /32, up, `ip route replace <Network> dev flannel-wg scope
link`, one peer per lease as flannel's handleSubnetEvents sets it (endpoint
PublicIP:Port, allowed IPs the subnet), and its lease written as flannel writes it (Go's
field order, compact JSON, a TTL lease) over h3's subnet, so the lab's pods on h3 are
the flannel node's pods.

Each case is the flannel node coming back with a fresh key (/run is a tmpfs: a reboot
makes a new key file), its BackendData as current flannel writes it ("Port":51820), as
flannel before v0.26.6 wrote it (no Port: a reader falls back to its own ListenPort),
and naming another port (51821, which h3 then listens on). Our nodes must swap the old
peer for the new one exactly (`wg show flannel-wg dump` on h1 and h2), and pods must
ping both ways, our nodes' pods first (so they, not the flannel node, make the
handshake: to the endpoint they took from the lease).
"""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from ipaddress import IPv4Network

import pytest
from labrun import LabRun, lab_up
from netns_lab import observe, ping, wgview
from netns_lab.lab import Lab
from netns_lab.measure import leases_by_host
from netns_lab.netns import pid_alive, wait_for

from core.lease import subnet_key, subnets_prefix

pytestmark = [pytest.mark.e2e, pytest.mark.netns, pytest.mark.xdist_group("interop-wg")]

DEV = "flannel-wg"
WG_MTU = 1500 - 80  # flannel: ext MTU - 80
SUBNET_TTL = 24 * 3600  # flannel's subnetTTL
THEM, OURS = "h3", ("h1", "h2")


def wg_keypair() -> tuple[str, str]:
    """(private, public), base64, from wireguard-tools: not from our own key code."""
    priv = subprocess.run(["wg", "genkey"], capture_output=True, text=True,
                          check=True).stdout.strip()
    pub = subprocess.run(["wg", "pubkey"], input=priv, capture_output=True, text=True,
                         check=True).stdout.strip()
    return priv, pub


def on_host(lab: Lab, host: str, script: str) -> str:
    """A shell script on a lab host, in its network and mount namespaces."""
    proc = subprocess.run([*lab.enter(host), "sh", "-ec", script], capture_output=True,
                          text=True, timeout=30)
    if proc.returncode != 0:
        raise AssertionError(f"on {host}: {script}\nexited {proc.returncode}: {proc.stderr}")
    return proc.stdout


def wireguard_go_pids(lab: Lab, host: str) -> list[int]:
    return wgview.wireguard_go_pids(lab.ns(host), DEV)


def answers(lab: Lab) -> bool:
    """h3's flannel-wg exists and its wireguard-go answers on its UAPI socket."""
    proc = subprocess.run([*lab.enter(THEM), "wg", "show", DEV, "listen-port"],
                          capture_output=True, timeout=10)
    return proc.returncode == 0


def dump(run: LabRun, host: str) -> list[list[str]]:
    """`wg show flannel-wg dump` on a host: the interface line, then one line per peer."""
    out = run.cli("exec", host, "--", "wg", "show", DEV, "dump").stdout
    return [line.split("\t") for line in out.splitlines()]


def flannel_lease_value(public_ip: str, public_key: str, port: int | None) -> str:
    """What flannel's json.Marshal(LeaseAttrs) writes: Go's field order, no spaces; older
    flannel's wireguardLeaseAttrs has no Port."""
    data: dict[str, object] = {"PublicKey": public_key}
    if port is not None:
        data["Port"] = port
    return json.dumps({"PublicIP": public_ip, "PublicIPv6": None, "BackendType": "wireguard",
                       "BackendData": data}, separators=(",", ":"))


@dataclass
class FlannelNode:
    run: LabRun
    lab: Lab
    subnet: IPv4Network
    public_ip: str
    public_key: str = ""

    @property
    def key(self) -> str:
        return f"{subnets_prefix(self.lab.topology.etcd_prefix)}/{subnet_key(self.subnet)}"

    def rekey(self, listen_port: int, lease_port: int | None) -> str:
        """A fresh key file (flannel: created, chmod 0400, then written; no newline) set on
        the device with the listen port; the lease rewritten. The old public key."""
        priv, pub = wg_keypair()
        on_host(self.lab, THEM,
                f"rm -f /run/flannel/wgkey\n"
                f"(umask 077; : > /run/flannel/wgkey)\nchmod 0400 /run/flannel/wgkey\n"
                f"printf %s '{priv}' > /run/flannel/wgkey\n"
                f"wg set {DEV} private-key /run/flannel/wgkey listen-port {listen_port}")
        old, self.public_key = self.public_key, pub
        self.put_lease(lease_port)
        return old

    def put_lease(self, port: int | None) -> None:
        grant = observe.etcdctl(self.lab, "lease", "grant", str(SUBNET_TTL))
        lease_id = grant.split()[1]  # "lease 694d... granted with TTL(86400s)"
        observe.etcdctl(self.lab, "put", "--lease", lease_id, self.key,
                        flannel_lease_value(self.public_ip, self.public_key, port))


def build_flannel_node(run: LabRun) -> FlannelNode:
    lab = run.lab()
    own = leases_by_host(lab)
    node = FlannelNode(run, lab, own[THEM].subnet, str(lab.plan.addr_of(THEM)))
    run.cli("flanneld", "kill", THEM)  # SIGTERM: our flanneld leaves its device running
    for pid in wireguard_go_pids(lab, THEM):  # the lab's, started by that flanneld
        os.kill(pid, signal.SIGTERM)  # it removes its tun and its socket
    wait_for(lambda: not wireguard_go_pids(lab, THEM) and not answers(lab), 10,
             what="h3's wireguard-go to exit")
    lab.sandbox.spawn(f"flannel-wg-go-{THEM}", ["wireguard-go", "-f", DEV], netns=lab.ns(THEM),
                      log=lab.state_dir / f"flannel-wg-go-{THEM}.log")  # setsid, output to a file
    wait_for(lambda: answers(lab), 10, what="the flannel node's wireguard-go to answer")
    # flannel's order: the link (MTU ext - 80), key and port, the lease (RegisterNetwork),
    # then address, up and the Network route, then the peers (handleSubnetEvents)
    on_host(lab, THEM, f"ip link set {DEV} mtu {WG_MTU}")
    node.rekey(51820, 51820)
    on_host(lab, THEM,
            f"ip addr add {node.subnet.network_address}/32 dev {DEV}\n"
            f"ip link set {DEV} up\n"
            f"ip route replace {lab.topology.network['Network']} dev {DEV} scope link")
    for h in OURS:  # one peer per wireguard lease
        ls = own[h]
        data = ls.attrs.backend_data or {}
        on_host(lab, THEM, f"wg set {DEV} peer {data['PublicKey']} endpoint "
                           f"{ls.attrs.public_ip}:{data.get('Port') or 51820} "
                           f"allowed-ips {ls.subnet}")
    return node


@pytest.fixture(scope="module")
def node() -> Iterator[FlannelNode]:
    with lab_up("wireguard", tag="iwg") as run:
        yield build_flannel_node(run)


def test_our_leases_read_as_flannels(node: FlannelNode) -> None:
    prefix = subnets_prefix(node.lab.topology.etcd_prefix)
    for h in OURS:
        lease = leases_by_host(node.lab)[h]
        raw = observe.etcdctl(node.lab, "get", f"{prefix}/{subnet_key(lease.subnet)}",
                              "--print-value-only").strip()
        doc = json.loads(raw)
        assert raw == json.dumps(doc, separators=(",", ":")), raw  # compact, as Go's
        assert list(doc) == ["PublicIP", "PublicIPv6", "BackendType", "BackendData"], raw
        assert list(doc["BackendData"]) == ["PublicKey", "Port"], raw  # wireguardLeaseAttrs
        assert doc["PublicIPv6"] is None and doc["BackendType"] == "wireguard"
        assert doc["PublicIP"] == str(node.lab.plan.addr_of(h))
        assert doc["BackendData"]["Port"] == 51820
        assert len(base64.b64decode(doc["BackendData"]["PublicKey"], validate=True)) == 32
        assert dump(node.run, h)[0][1] == doc["BackendData"]["PublicKey"]  # the device's
        ttl = observe.etcdctl(node.lab, "lease", "timetolive", f"{lease.lease_id:x}")
        assert "remaining(" in ttl and "remaining(-1" not in ttl, ttl  # a TTL lease


def wait_peer_swapped(node: FlannelNode, old: str, endpoint: str) -> None:
    want = [node.public_key, "(none)", endpoint, str(node.subnet)]

    def ours_swapped() -> bool:
        for h in OURS:
            peers = {p[0]: p for p in dump(node.run, h)[1:]}
            if old in peers or node.public_key not in peers:
                return False
        return True
    try:
        wait_for(ours_swapped, 20, what="h1 and h2 to hold the flannel node's new key, "
                                        "not its old one")
    except TimeoutError as exc:
        raise AssertionError(f"{exc}\n" + "\n".join(
            f"{h}: {dump(node.run, h)}" for h in OURS)) from None
    for h in OURS:
        [iface, *peers] = dump(node.run, h)
        assert iface[2] == "51820" and iface[3] == "off", iface  # listen port, no fwmark
        mine = [p for p in peers if p[0] == node.public_key]
        assert len(mine) == 1 and mine[0][:4] == want and mine[0][7] == "off", (h, peers)
        # no other peer claims the flannel node's subnet; one peer per other lease
        assert [p[3] for p in peers if str(node.subnet) in p[3].split(",")] == [str(node.subnet)]
        assert len(peers) == 2, peers


def pods_ping_both_ways(node: FlannelNode) -> None:
    lab = node.lab
    theirs = [p for p in lab.all_pods() if p.host == THEM]
    ours = [p for p in lab.all_pods() if p.host in OURS]
    for srcs, what in ((ours, "our pods -> the flannel node's"), (theirs, "and back")):
        results = ping.ping_all(lab, timeout=1.0, attempts=5, sources=srcs, families=[4])
        crossing = [r for r in results if (r.src.split("/")[0] == THEM) !=
                    (r.dst.split("/")[0] == THEM)]
        assert crossing and all(r.ok for r in crossing), (what, [r for r in crossing
                                                                 if not r.ok])


CASES = [(51820, 51820), (None, 51820), (51821, 51821)]  # (lease Port, h3's listen port)


@pytest.mark.parametrize(("lease_port", "listen_port"), CASES,
                         ids=["Port-51820", "no-Port", "Port-51821"])
def test_a_fresh_flannel_node_key_is_peered_exactly_and_pods_ping(
        node: FlannelNode, lease_port: int | None, listen_port: int) -> None:
    old = node.rekey(listen_port, lease_port)
    # without Port, our nodes fall back to their own ListenPort, as flannel does
    wait_peer_swapped(node, old, f"{node.public_ip}:{lease_port or 51820}")
    pods_ping_both_ways(node)
    for h in OURS:
        [peer] = [p for p in dump(node.run, h)[1:] if p[0] == node.public_key]
        assert int(peer[4]) > 0 and int(peer[5]) > 0 and int(peer[6]) > 0, peer  # handshook
    assert observe.flanneld_ready(node.lab.ns("h1")) and observe.flanneld_ready(
        node.lab.ns("h2"))


def test_the_flannel_node_is_ours_alone(node: FlannelNode) -> None:
    """h3 runs only what this test started: no flanneld, one wireguard-go (tracked)."""
    lab = node.lab
    assert lab.sandbox.pid("flanneld-h3") is None
    tracked = lab.sandbox.pid(f"flannel-wg-go-{THEM}")
    assert tracked is not None and pid_alive(tracked)
    assert wireguard_go_pids(lab, THEM) == [tracked]
