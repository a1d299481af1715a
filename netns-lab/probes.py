"""One-shot probes between pods, hosts and the world, through the real data path.

- `df_ping`: the largest ping a pod's MTU allows, with Don't Fragment (`ping -M do`),
  from one pod to another: it crosses only if every hop of the overlay carries a
  full-size pod packet (for IPv6: payload = MTU - 40 IPv6 - 8 ICMPv6 = MTU - 48).
- `world_sees`: the source address the lab's `world` namespace sees on a UDP
  datagram a pod sends it, i.e. what flanneld's masquerade made of the pod address.
"""

from __future__ import annotations

import json
import re
import socket
from dataclasses import dataclass
from ipaddress import ip_address

from netns_lab.lab import Lab, LabError
from netns_lab.measure import pod_by_label
from netns_lab.netns import run, socket_in_netns
from netns_lab.plan import POD_IFACE

# IP header + ICMP echo header: what `ping -s` does not count
ECHO_OVERHEAD = {4: 20 + 8, 6: 40 + 8}
_SUMMARY = re.compile(r"(\d+) packets transmitted, (\d+) received")


@dataclass(frozen=True)
class DfPing:
    src: str
    dst: str
    family: int
    mtu: int  # the source pod's interface MTU
    size: int  # the ICMP payload sent: mtu - ECHO_OVERHEAD
    sent: int
    received: int
    output: str

    @property
    def ok(self) -> bool:
        return self.sent > 0 and self.received == self.sent


def full_size(mtu: int, family: int) -> int:
    """The ping payload (`ping -s`) that makes a packet of exactly `mtu` bytes."""
    return mtu - ECHO_OVERHEAD[family]


def pod_mtu(lab: Lab, label: str) -> int:
    pod = pod_by_label(lab, label)
    out = run(["ip", "-j", "-n", lab.plan.pod_ns(pod.host, pod.name), "link", "show",
               POD_IFACE]).stdout
    return int(json.loads(out)[0]["mtu"])


def df_ping(lab: Lab, src: str, dst: str, family: int = 6, count: int = 3) -> DfPing:
    """`count` full-size echo requests with DF from pod `src` to pod `dst` (`host/pod`)."""
    s, d = pod_by_label(lab, src, family), pod_by_label(lab, dst, family)
    mtu = pod_mtu(lab, src)
    size = full_size(mtu, family)
    proc = run(["ip", "netns", "exec", lab.plan.pod_ns(s.host, s.name), "ping", f"-{family}",
                "-n", "-M", "do", "-s", str(size), "-c", str(count), "-i", "0.2", "-W", "2",
                d.address(family)], check=False, timeout=10 + 3 * count)
    m = _SUMMARY.search(proc.stdout)
    sent, received = (int(m.group(1)), int(m.group(2))) if m else (0, 0)
    return DfPing(src, dst, family, mtu, size, sent, received,
                  (proc.stdout + proc.stderr).strip())


def world_sees(lab: Lab, src: str, family: int, timeout: float = 5.0) -> str:
    """The source address of a UDP datagram from pod `src` as the world receives it."""
    world = lab.topology.world
    if world is None:
        raise LabError(f"lab {lab.name!r} has no world namespace: add `world: true` to its "
                       "topology")
    target = next((a for a in lab.plan.addresses_of(world.name) if a.version == family), None)
    if target is None:
        raise LabError(f"the world has no IPv{family} address (its segment has no "
                       f"{'subnet' if family == 4 else 'subnet6'})")
    pod = pod_by_label(lab, src, family)
    af = socket.AF_INET6 if family == 6 else socket.AF_INET
    token = f"netns-lab {src}".encode()
    with socket_in_netns(lab.ns(world.name), af, socket.SOCK_DGRAM) as rx, \
            socket_in_netns(lab.plan.pod_ns(pod.host, pod.name), af, socket.SOCK_DGRAM) as tx:
        rx.bind((str(target), 0))
        rx.settimeout(timeout / 5)
        port = rx.getsockname()[1]
        for _ in range(5):  # the first may wait on neighbour discovery: send again
            tx.sendto(token, (str(target), port))
            try:
                while True:
                    data, addr = rx.recvfrom(256)
                    if data == token:
                        return ip_address(addr[0]).compressed
            except TimeoutError:
                continue
    raise TimeoutError(f"the world ({target}) got nothing from {src} in {timeout:g}s")
