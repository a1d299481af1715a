"""Chaos on a wireguard lab (3 hosts, one pod each, --resync-interval 1), under `ping -i 0.01`
(100/s) between pods on different hosts.

- kill -9 of one host's flanneld: 0 lost; the restart adopts wireguard-go (its pid
  unchanged), keeps the key (/run/flannel/wgkey byte for byte, the lease's PublicKey),
  the subnet and every peer as it was, and repairs nothing;
- the only etcd member stopped for 8 s: 0 lost, no peer changed on any host, every node
  keeps its subnet, and the watches resume (a probe lease is peered, then removed);
- a peer removed by hand (`wg set flannel-wg peer K remove`): back within one resync,
  counted as flanneld_repairs_total{kind="wgpeer"};
- wireguard-go killed by hand: the device made again within one resync (a new
  wireguard-go, the same key and port, MTU, address, route and peers), counted as a
  device repair; pings recover.

The lab's existing scenarios (`netns-lab scenario`) build vxlan labs of their own and
probe the watch with vxlan leases, so the faults are driven here through the lab API.
"""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import pytest
import yaml
from labrun import lab_up
from netns_lab import chaos, observe, wgview
from netns_lab.lab import Lab
from netns_lab.measure import Clock, Pinger, PingStats, leases_by_host, metric
from netns_lab.netns import pid_alive, wait_for

from core.lease import subnets_prefix

pytestmark = [pytest.mark.e2e, pytest.mark.netns, pytest.mark.xdist_group("chaos-wg")]

DEV = "flannel-wg"
WG_MTU = 1500 - 80
RESYNC_S = 1
# One resync interval, plus a full reconcile's own time on a loaded 2-core box.
ONE_RESYNC = RESYNC_S + 1.5
OUTAGE_S = 8.0
ALL3 = (("h1/p1", "h2/p1"), ("h2/p1", "h3/p1"), ("h3/p1", "h1/p1"))
TOPOLOGY = {
    "description": "3 hosts, wireguard, resync 1 s, one pod each",
    "network": {"Network": "10.244.0.0/16", "Backend": {"Type": "wireguard"}},
    "segments": {"lan": {"subnet": "192.168.100.0/24"}},
    "etcd": {"members": 1},
    "hosts": 3,
    "defaults": {"pods": 1, "flanneld_args": ["--resync-interval", str(RESYNC_S)]},
}

Peers = dict[str, tuple[str, str, str]]  # public key -> (endpoint, allowed IPs, keepalive)


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    topo = tmp_path_factory.mktemp("wg") / "wireguard-chaos.yaml"
    topo.write_text(yaml.safe_dump(TOPOLOGY))
    with lab_up(str(topo), tag="cwg") as run:
        yield run.lab()


@pytest.fixture
def healthy(lab: Lab) -> Lab:
    """Each test starts from a whole lab (every peer programmed, every pinged pair's
    tunnel carrying pods' packets), and leaves one. The tunnel is checked apart: right
    after `up`, a pair whose first handshakes crossed (both ends primed each other at
    once) carries nothing until WireGuard retries, REKEY_TIMEOUT (5 s) later; those are
    not the faults measured here."""
    converged(lab)
    clock = Clock()
    wait_for(lambda: all(ping_ok(lab, s, d) for s, d in ALL3), 15, interval=0.1,
             what="every pinged pod pair to answer")
    if clock.since("start") > 1:
        print(f"the tunnels carried pods' packets only after {clock.since('start'):.1f}s")
    return lab


# -- looking ---------------------------------------------------------------------------------


def dump(lab: Lab, host: str) -> tuple[list[str], Peers]:
    """`wg show flannel-wg dump` on a host: its interface line, its peers."""
    proc = subprocess.run([*lab.enter(host), "wg", "show", DEV, "dump"], capture_output=True,
                          text=True, timeout=10)
    if proc.returncode != 0:
        raise RuntimeError(f"wg show on {host}: {proc.stderr.strip()}")
    iface, *rows = [line.split("\t") for line in proc.stdout.splitlines()]
    return iface, {r[0]: (r[2], r[3], r[7]) for r in rows}


def peers(lab: Lab, host: str) -> Peers:
    return dump(lab, host)[1]


def wireguard_go(lab: Lab, host: str) -> int:
    """The pid of the wireguard-go serving flannel-wg on `host` (0 if none)."""
    return next(iter(wgview.wireguard_go_pids(lab.ns(host), DEV)), 0)


def converged(lab: Lab, timeout: float = 20) -> None:
    wait_for(lambda: observe.converged(lab), timeout, interval=0.1,
             what="every host to hold every other host's lease as a WireGuard peer")


def repairs(lab: Lab, host: str, kind: str) -> float:
    return metric(lab, host, "flanneld_repairs_total", f'kind="{kind}"')


def ping_ok(lab: Lab, src: str, dst: str) -> bool:
    pod = next(p for p in lab.all_pods() if f"{p.host}/{p.name}" == dst)
    proc = subprocess.run([*lab.enter(src), "ping", "-c1", "-W1", "-n", pod.ip],
                          capture_output=True, timeout=10)
    return proc.returncode == 0


def stop_all(pingers: list[Pinger]) -> list[PingStats]:
    stats = [p.stop() for p in pingers]
    for s in stats:
        print(f"ping {s.src} -> {s.dst}: {s.sent} sent, {s.lost} lost, longest gap "
              f"{s.longest_gap_s:.2f}s, {s.pps:.0f}/s")
    return stats


class Pinging:
    """Pod pings at 100/s for the `with` block; `stats` once it is over."""

    def __init__(self, lab: Lab, *pairs: tuple[str, str]) -> None:
        self.lab, self.pairs = lab, pairs
        self.stats: list[PingStats] = []

    def __enter__(self) -> Pinging:
        self.pingers = [Pinger(self.lab, s, d) for s, d in self.pairs]
        return self

    def __exit__(self, *exc: object) -> None:
        self.stats = stop_all(self.pingers)

    @property
    def lost(self) -> int:
        return sum(s.lost for s in self.stats)

    @property
    def sent(self) -> int:
        return sum(s.sent for s in self.stats)


# -- the faults ------------------------------------------------------------------------------


def test_kill9_of_flanneld_loses_nothing_and_adopts_wireguard_go(healthy: Lab) -> None:
    lab, victim = healthy, "h2"
    keyfile = lab.node_path(victim, "/run/flannel/wgkey")
    key_before, stat_before = keyfile.read_bytes(), keyfile.stat()
    lease_before = leases_by_host(lab)[victim]
    pid_before, peers_before = wireguard_go(lab, victim), peers(lab, victim)
    iface_before = dump(lab, victim)[0][:3]
    assert pid_before and len(peers_before) == 2
    log = lab.state_dir / f"flanneld-{victim}.log"
    log_at = log.stat().st_size
    with Pinging(lab, *ALL3) as p:
        clock = Clock()
        assert chaos.flanneld_kill(lab, victim, signal.SIGKILL)
        assert pid_alive(pid_before), "wireguard-go died with flanneld"
        assert chaos.flanneld_start(lab, victim)  # waits for /readyz
        restart_s = clock.since("start")
        converged(lab)
    print(f"kill -9 + restart of {victim}'s flanneld: ready again in {restart_s:.2f}s")
    assert p.sent > 0 and p.lost == 0, p.stats
    lease_after = leases_by_host(lab)[victim]
    assert lease_after.subnet == lease_before.subnet
    assert lease_after.attrs.backend_data == lease_before.attrs.backend_data  # PublicKey, Port
    assert keyfile.read_bytes() == key_before
    assert (keyfile.stat().st_ino, keyfile.stat().st_mtime_ns) == (stat_before.st_ino,
                                                                   stat_before.st_mtime_ns)
    assert wireguard_go(lab, victim) == pid_before, "wireguard-go was re-made, not adopted"
    assert dump(lab, victim)[0][:3] == iface_before  # private key, public key, port
    assert peers(lab, victim) == peers_before
    assert "adopted flannel-wg" in log.read_text(errors="replace")[log_at:]
    for kind in ("wgpeer", "device", "mtu", "address", "route"):
        assert repairs(lab, victim, kind) == 0, kind  # adopted as it was: nothing to fix


def probe_peer(lab: Lab) -> tuple[str, str, str]:
    """A wireguard lease for a node that does not exist: (etcd key, public key, subnet)."""
    priv = subprocess.run(["wg", "genkey"], capture_output=True, text=True,
                          check=True).stdout.strip()
    pub = subprocess.run(["wg", "pubkey"], input=priv, capture_output=True, text=True,
                         check=True).stdout.strip()
    subnet = "10.244.250.0/24"
    assert all(str(ls.subnet) != subnet for ls in observe.read_leases(lab))
    key = f"{subnets_prefix(lab.topology.etcd_prefix)}/10.244.250.0-24"
    value = ('{"PublicIP":"192.168.100.250","PublicIPv6":null,"BackendType":"wireguard",'
             f'"BackendData":{{"PublicKey":"{pub}","Port":51820}}}}')
    observe.etcdctl(lab, "put", key, value)
    return key, pub, subnet


def test_etcd_outage_loses_nothing_and_changes_no_peer(healthy: Lab) -> None:
    lab = healthy
    hosts = lab.topology.host_names
    before = {h: peers(lab, h) for h in hosts}
    subnets = {h: ls.subnet for h, ls in leases_by_host(lab).items()}
    changed: set[str] = set()
    with Pinging(lab, *ALL3) as p:
        assert chaos.etcd_stop(lab, "etcd")
        clock = Clock()
        while clock.since("start") < OUTAGE_S:  # the fault lasts this long: look meanwhile
            for h in hosts:
                now = peers(lab, h)
                changed |= {f"{h}:{k[:8]}" for k in set(now) | set(before[h])
                            if now.get(k) != before[h].get(k)}
            time.sleep(0.25)
        outage_s = clock.since("start")
        assert chaos.etcd_start(lab, "etcd")
        clock.mark("back")
        wait_for(lambda: all(observe.flanneld_ready(lab.ns(h)) for h in hosts), 30,
                 what="every flanneld ready once etcd is back")
        ready_s = clock.since("back")
    print(f"etcd stopped {outage_s:.1f}s; every flanneld ready {ready_s:.2f}s after it came "
          "back")
    assert p.sent > 0 and p.lost == 0, p.stats
    assert not changed, f"peers changed during the outage: {sorted(changed)}"
    assert {h: peers(lab, h) for h in hosts} == before
    assert {h: ls.subnet for h, ls in leases_by_host(lab).items()} == subnets
    # the watches resumed: a new lease reaches every host, and its removal too
    key, pub, subnet = probe_peer(lab)
    try:
        wait_for(lambda: all(peers(lab, h).get(pub, ("", ""))[:2] == ("192.168.100.250:51820",
                                                                     subnet) for h in hosts),
                 15, what="every host to peer the probe lease put after the outage")
    finally:
        observe.etcdctl(lab, "del", key)
    wait_for(lambda: all(pub not in peers(lab, h) for h in hosts), 15,
             what="every host to drop the probe lease's peer")


def test_a_peer_removed_by_hand_is_restored_within_one_resync(healthy: Lab) -> None:
    lab, host = healthy, "h1"
    h2 = leases_by_host(lab)["h2"]
    key = str((h2.attrs.backend_data or {})["PublicKey"])
    want = peers(lab, host)[key]
    assert want[:2] == (f"{h2.attrs.public_ip}:51820", str(h2.subnet))
    before = repairs(lab, host, "wgpeer")
    with Pinging(lab, ("h1/p1", "h2/p1")) as p:
        subprocess.run([*lab.enter(host), "wg", "set", DEV, "peer", key, "remove"], check=True,
                       timeout=10)
        clock = Clock()  # (the repair count below proves it was gone)
        wait_for(lambda: peers(lab, host).get(key) == want, 10, interval=0.02,
                 what="h1 to put h2's peer back")
        restored_s = clock.since("start")
        wait_for(lambda: repairs(lab, host, "wgpeer") > before, 5,
                 what='the repair counted in flanneld_repairs_total{kind="wgpeer"}')
        wait_for(lambda: ping_ok(lab, "h1/p1", "h2/p1"), 10, what="h1/p1 -> h2/p1 again")
    print(f"peer removed by hand: restored in {restored_s:.2f}s (resync {RESYNC_S}s); ping "
          f"lost {p.lost} of {p.sent}, longest gap {p.stats[0].longest_gap_s:.2f}s")
    assert restored_s <= ONE_RESYNC, f"restored after {restored_s:.2f}s"
    assert repairs(lab, host, "wgpeer") - before >= 1
    now = peers(lab, host)
    assert now[key] == want and len(now) == 2, now
    converged(lab)


def device_whole(lab: Lab, host: str, peers_before: Peers, iface_before: list[str],
                 old_pid: int) -> bool:
    pid = wireguard_go(lab, host)
    if not pid or pid == old_pid:
        return False
    try:
        iface, now = dump(lab, host)
    except RuntimeError:
        return False
    link = observe.kernel_view(lab.ns(host)).links
    dev = next((lk for lk in link if lk.get("ifname") == DEV), {})
    return (iface[:3] == iface_before and now == peers_before and dev.get("mtu") == WG_MTU
            and "UP" in dev.get("flags", []))


def test_wireguard_go_killed_by_hand_is_made_again_within_one_resync(healthy: Lab) -> None:
    lab, host = healthy, "h1"
    old_pid = wireguard_go(lab, host)
    iface_before, peers_before = dump(lab, host)
    own = leases_by_host(lab)[host]
    before = {k: repairs(lab, host, k) for k in ("device", "wgpeer")}
    with Pinging(lab, ("h1/p1", "h2/p1"), ("h3/p1", "h1/p1")) as p:
        subprocess.run([*lab.enter(host), "kill", "-KILL", str(old_pid)], check=True, timeout=10)
        clock = Clock()
        wait_for(lambda: not pid_alive(old_pid), 5, what="wireguard-go to die")
        wait_for(lambda: device_whole(lab, host, peers_before, iface_before[:3], old_pid), 15,
                 interval=0.02, what="h1's flannel-wg made again, with its key, port and peers")
        remade_s = clock.since("start")
        wait_for(lambda: ping_ok(lab, "h1/p1", "h2/p1") and ping_ok(lab, "h3/p1", "h1/p1"), 15,
                 what="pings through the new device")
        pings_s = clock.since("start")
        wait_for(lambda: repairs(lab, host, "device") > before["device"], 5,
                 what='the device repair counted in flanneld_repairs_total{kind="device"}')
    print(f"wireguard-go killed: device made again in {remade_s:.2f}s, pings back in "
          f"{pings_s:.2f}s; lost {p.lost} of {p.sent}, longest gap "
          f"{max(s.longest_gap_s for s in p.stats):.2f}s")
    assert remade_s <= ONE_RESYNC, f"made again after {remade_s:.2f}s"
    view = observe.kernel_view(lab.ns(host))
    addrs = subprocess.run(["ip", "-n", lab.ns(host), "-4", "-o", "addr", "show", "dev", DEV],
                           capture_output=True, text=True, check=True).stdout
    assert f"{own.subnet.network_address}/32" in addrs
    assert any(r.get("dst") == "10.244.0.0/16" and r.get("dev") == DEV
               and r.get("scope") == "link" for r in view.routes), view.routes
    got: dict[str, Any] = {k: repairs(lab, host, k) - v for k, v in before.items()}
    assert got["device"] >= 1 and got["wgpeer"] >= 2, got  # both peers put back, as repairs
    converged(lab)
