"""Measuring a lab under faults: a continuous pod ping, flanneld's endpoints, kernel peer state.

Everything here observes; nothing injects faults (that is `netns_lab.chaos`).
The ping is the real `ping -i 0.01` inside a pod (`ping -6` to the pod's IPv6
address with family=6); its summary line gives the packets sent and received.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import signal
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass
from ipaddress import IPv4Address, IPv4Network, IPv6Network, ip_network
from pathlib import Path
from typing import Any

from netns_lab import observe
from netns_lab.lab import Lab, LabError, Pod
from netns_lab.netns import in_netns, wait_for

from core.lease import (
    Lease,
    LeaseAttrs,
    encode_attrs,
    subnet_key,
    subnets_prefix,
    vxlan_backend_data,
)

# 100 packets/s. iputils 20221126 sends `-i 0.01` only every ~16 ms (60/s); 0.0099 gives
# about 105/s.
PING_INTERVAL = 0.0099
# Echo requests still unanswered when the ping is stopped are in flight, not lost, as long
# as they are the last few (an interrupted ping exits without waiting for their replies).
IN_FLIGHT_MAX = 3

_SUMMARY = re.compile(r"(\d+) packets transmitted, (\d+) received")
# `from 10.5.1.2: icmp_seq=` or `from fc00:5:0:1::2: icmp_seq=`
_REPLY = re.compile(r"^\[(\d+\.\d+)\] \d+ bytes from \S+: icmp_seq=(\d+)")


# -- the continuous ping --------------------------------------------------------------------


@dataclass
class PingStats:
    src: str
    dst: str
    sent: int
    received: int
    lost: int
    in_flight: int  # the last requests, unanswered only because the ping was stopped
    duration_s: float
    longest_gap_s: float  # the longest silence between two replies

    @property
    def pps(self) -> float:
        return self.sent / self.duration_s if self.duration_s > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "pps": round(self.pps, 1)}


def parse_ping(output: str, src: str = "", dst: str = "") -> PingStats:
    """Figures from `ping -n -D` output: the summary line, plus reply timestamps and seqs."""
    m = _SUMMARY.search(output)
    if not m:
        raise ValueError(f"no ping summary in output ending {output[-300:]!r}")
    sent, received = int(m.group(1)), int(m.group(2))
    stamps: list[float] = []
    seqs: set[int] = set()
    for line in output.splitlines():
        r = _REPLY.match(line)
        if r:
            stamps.append(float(r.group(1)))
            seqs.add(int(r.group(2)))
    tail = sent - max(seqs) if seqs else sent
    in_flight = tail if 0 < tail <= IN_FLIGHT_MAX and sent - received >= tail else 0
    gaps = [b - a for a, b in itertools.pairwise(stamps)]
    duration = stamps[-1] - stamps[0] if len(stamps) > 1 else 0.0
    return PingStats(src, dst, sent, received, sent - received - in_flight, in_flight,
                     round(duration, 3), round(max(gaps, default=0.0), 3))


def pod_by_label(lab: Lab, label: str, family: int | None = None) -> Pod:
    """A pod by `host/pod` that has an address (of IP version `family`, if given)."""
    host, _, name = label.partition("/")
    pod = lab.pods.get(host, {}).get(name)
    if pod is None or not (pod.address(family) if family else pod.addresses):
        what = f"an IPv{family} address" if family else "an address"
        raise LabError(f"no pod {label!r} with {what} in lab {lab.name!r}")
    return pod


class Pinger:
    """`ping -i 0.01` from one pod to another (over IPv6 with family=6), until `stop()`."""

    def __init__(self, lab: Lab, src: str, dst: str, interval: float = PING_INTERVAL,
                 family: int = 4) -> None:
        self.lab, self.src, self.dst, self.family = lab, src, dst, family
        s, d = pod_by_label(lab, src, family), pod_by_label(lab, dst, family)
        self.name = f"ping-{s.host}{s.name}-{d.host}{d.name}" + ("-6" if family == 6 else "")
        self.log = lab.state_dir / f"{self.name}.log"
        self.log.unlink(missing_ok=True)
        argv = ["ping", f"-{family}", "-n", "-D", "-i", str(interval), d.address(family)]
        # Tracked by pidfile, so `netns-lab down` stops it if we die first.
        self.proc = lab.sandbox.spawn(self.name, argv, netns=lab.plan.pod_ns(s.host, s.name),
                                      log=self.log)
        wait_for(lambda: "icmp_seq=" in self.output(), 10, what=f"{src} -> {dst} to answer")

    def output(self) -> str:
        try:
            return self.log.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def stop(self) -> PingStats:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGINT)  # `ip netns exec` exec'd ping: same pid
        try:
            self.proc.wait(timeout=10)
        except Exception:
            self.proc.kill()
            self.proc.wait()
        self.lab.sandbox.pidfile(self.name).unlink(missing_ok=True)
        return parse_ping(self.output(), self.src, self.dst)


def ping_figures(stats: list[PingStats]) -> dict[str, Any]:
    """The figures of one or more pingers, summed; each one's own under `pings`."""
    return {"packets_sent": sum(s.sent for s in stats),
            "packets_lost": sum(s.lost for s in stats),
            "longest_gap_s": max((s.longest_gap_s for s in stats), default=0.0),
            "pings": [s.to_dict() for s in stats]}


# -- flanneld's endpoints ---------------------------------------------------------------------


def http_get(lab: Lab, host: str, path: str) -> tuple[int, str]:
    """(status, body) of flanneld's health server inside a host; (0, why) if it is down."""
    def get() -> tuple[int, str]:
        url = f"http://127.0.0.1:{observe.HEALTHZ_PORT}{path}"
        try:
            with urllib.request.urlopen(url, timeout=3) as resp:
                return int(resp.status), resp.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()
        except OSError as exc:
            return 0, str(exc)
    return in_netns(lab.ns(host), get)


def readyz(lab: Lab, host: str) -> tuple[int, str]:
    return http_get(lab, host, "/readyz")


def metric(lab: Lab, host: str, name: str, labels: str = "") -> float:
    """One sample of flanneld's /metrics (0 if absent); `labels` like 'kind="route"'."""
    code, text = http_get(lab, host, "/metrics")
    if code != 200:
        raise RuntimeError(f"/metrics on {host}: {code} {text[:100]}")
    want = f"{name}{{{labels}}}" if labels else name
    for line in text.splitlines():
        if line.startswith(want + " "):
            return float(line.split()[-1])
    return 0.0


def all_ready(lab: Lab, hosts: list[str] | None = None) -> bool:
    return all(readyz(lab, h)[0] == 200 for h in hosts or lab.topology.host_names)


def log_of(lab: Lab, host: str) -> str:
    try:
        return (lab.state_dir / f"flanneld-{host}.log").read_text(errors="replace")
    except FileNotFoundError:
        return ""


# -- leases and kernel peer state -------------------------------------------------------------


def leases_by_host(lab: Lab) -> dict[str, Lease]:
    leases = observe.read_leases(lab)
    out = {}
    for h in lab.topology.host_names:
        own = observe.host_lease(lab, h, leases)
        if own is not None:
            out[h] = own
    return out


def peer_states(lab: Lab, host: str, leases: list[Lease]) -> dict[str, str]:
    """For each lease not our own: how `host`'s kernel reaches it (observe.peer_state),
    keyed by its IPv4 subnet; and by its IPv6 subnet in a network that runs IPv6."""
    v6 = lab.topology.enable_ipv6
    view = observe.host_view(lab, host)
    out = observe.peers_of(lab, host, leases, view) if lab.topology.enable_ipv4 else {}
    return {**out, **(observe.peers6_of(lab, host, leases, view) if v6 else {})}


def programmed_everywhere(lab: Lab, leases: list[Lease], hosts: list[str] | None = None) -> bool:
    hosts = hosts or lab.topology.host_names
    states = observe.parallel(lambda h: peer_states(lab, h, leases), hosts)
    return all(s in observe.OK_PEER for st in states for s in st.values())


def kernel_peer_set(lab: Lab, host: str) -> set[str]:
    """The pod-network subnets `host`'s kernel routes to, other than its own."""
    view = observe.kernel_view(lab.ns(host))
    own = observe.read_subnet_env(lab.host_dir(host) / "subnet.env").get("FLANNEL_SUBNET", "")
    own_net = str(IPv4Network(own, strict=False)) if own else ""
    return set(observe.pod_routes(view, lab.topology.pod_network, own_net))  # IPv4 only


def peer_entries(lab: Lab, host: str) -> dict[str, Any]:
    """The kernel entries flanneld owns on `host` (routes into the pod network, the vxlan
    devices' neighbours and FDB entries, the devices themselves; IPv6 ones too in a
    network that runs IPv6), to compare before and after."""
    t = lab.topology
    view = observe.kernel_view(lab.ns(host), t.enable_ipv6)
    routes = sorted(json.dumps(r, sort_keys=True)
                    for rs, net in ((view.routes, t.pod_network), (view.routes6, t.pod_network6))
                    for r in rs if _in(r.get("dst"), net))
    devs = {lk["ifname"]: (lk["ifindex"], lk.get("address"), lk.get("mtu"))
            for lk in view.vxlan_links()}
    neighs = sorted(f"{n.get('dst')} {n.get('lladdr')} {n.get('dev')}"
                    for n in (*view.neighs, *view.neighs6) if n.get("dev") in devs)
    fdb = sorted(f"{f.get('mac')} {f.get('dst')} {f.get('ifname', f.get('dev'))}"
                 for f in view.fdb if f.get("ifname", f.get("dev")) in devs and f.get("dst"))
    return {"routes": routes, "neighs": neighs, "fdb": fdb, "devices": devs}


def _in(dst: Any, net: IPv4Network | IPv6Network | None) -> bool:
    try:
        return net is not None and observe.within(ip_network(str(dst)), net)
    except ValueError:
        return False


def entries_changed(before: dict[str, Any], after: dict[str, Any]) -> int:
    """How many owned kernel entries differ (added, removed or altered) between two looks."""
    n = 0
    for kind in ("routes", "neighs", "fdb"):
        n += len(set(before[kind]) ^ set(after[kind]))
    n += sum(1 for k in set(before["devices"]) | set(after["devices"])
             if before["devices"].get(k) != after["devices"].get(k))
    return n


def free_subnet(lab: Lab, taken: list[Lease]) -> IPv4Network:
    """A subnet of the network's default length that no lease holds, from the top down."""
    net = lab.topology.pod_network
    if net is None:
        raise LabError("probe leases are IPv4: this network is IPv6-only")
    used = {ls.ipv4_subnet for ls in taken if ls.ipv4_subnet is not None}
    for candidate in reversed(list(net.subnets(new_prefix=24))[1:-1]):
        if not any(candidate.overlaps(u) for u in used):
            return candidate
    raise LabError(f"no free /24 left in {net}")


@dataclass
class ProbeLease:
    """A reservation for a node that does not exist: a lease every host must program."""

    lab: Lab
    subnet: IPv4Network
    public_ip: IPv4Address
    mac: str

    @property
    def key(self) -> str:
        return f"{subnets_prefix(self.lab.topology.etcd_prefix)}/{subnet_key(self.subnet)}"

    def lease(self) -> Lease:
        vni = int((self.lab.topology.network.get("Backend") or {}).get("VNI", 1))
        return Lease(self.subnet, LeaseAttrs(self.public_ip, "vxlan",
                                             vxlan_backend_data(vni, self.mac)))

    def put(self) -> None:
        observe.etcdctl(self.lab, "put", self.key, encode_attrs(self.lease().attrs).decode())

    def delete(self) -> None:
        observe.etcdctl(self.lab, "del", self.key)

    def programmed(self, hosts: list[str] | None = None) -> bool:
        return programmed_everywhere(self.lab, [self.lease()], hosts)

    def gone(self, hosts: list[str] | None = None) -> bool:
        return all(s == "missing" for h in hosts or self.lab.topology.host_names
                   for s in peer_states(self.lab, h, [self.lease()]).values())


def probe_lease(lab: Lab, n: int = 1) -> ProbeLease:
    """A probe peer: a free subnet, an unused address of the first segment, a local MAC."""
    seg = lab.topology.segments[0].subnet
    if seg is None:
        raise LabError("probe leases are IPv4: this lab's underlay is IPv6-only")
    return ProbeLease(lab, free_subnet(lab, observe.read_leases(lab)),
                      seg.broadcast_address - 1 - n, f"0e:5c:00:00:00:{n:02x}")


def watch_roundtrip(lab: Lab, hosts: list[str] | None = None, n: int = 1,
                    timeout: float = 30) -> float:
    """Put a probe lease, wait until every host programmed it, delete it, wait until every
    host removed it: proof that each flanneld's watch is live. Seconds until programmed."""
    probe = probe_lease(lab, n)
    t0 = time.monotonic()
    probe.put()
    try:
        wait_for(lambda: probe.programmed(hosts), timeout, interval=0.1,
                 what=f"every host to program the probe lease {probe.subnet}")
        took = time.monotonic() - t0
    finally:
        probe.delete()
    wait_for(lambda: probe.gone(hosts), timeout, interval=0.1,
             what=f"every host to remove the probe lease {probe.subnet}")
    return took


class Clock:
    """Seconds since named moments."""

    def __init__(self) -> None:
        self.marks: dict[str, float] = {"start": time.monotonic()}

    def mark(self, name: str) -> None:
        self.marks[name] = time.monotonic()

    def since(self, name: str) -> float:
        return round(time.monotonic() - self.marks[name], 3)


def write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(tmp, path)
