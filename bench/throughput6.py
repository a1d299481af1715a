#!/usr/bin/env python3
"""Pod-to-pod TCP throughput over IPv6 (iperf3) through dual-stack pyflannel, against the same
path built by hand.

Contenders, interleaved run by run (iperf3 -t S, R runs each, median), all dual stack,
iperf3 between the two pods' IPv6 addresses:

- lab6-vxlan / lab6-hostgw: two hosts of a `netns-lab` lab with EnableIPv6 (real
  flanneld, real CNI plugin giving each pod an IPv4 and an IPv6 address, flannel.1 and
  flannel-v6.1 or host-gw routes of both families, flanneld's ip and ip6 masquerade
  tables), one pod per host;
- hand6-vxlan / hand6-hostgw: the same kernel state typed with iproute2: segment bridge,
  host veths with IPv4 and IPv6, flannel.1 and flannel-v6.1 (local = the host's IPv6,
  dstport 8472, nolearning, MTU ext-50 and ext-70) with the peer's neighbour, FDB entry
  and onlink route in each family, or for host-gw `<v6 subnet> via <peer IPv6> dev eth0`;
  cni0 with both gateways, pod veths at FLANNEL_MTU (the smaller device MTU), and
  the nftables tables flanneld installs for both families (rendered by flanneld.masq);
- veth6: two namespaces joined by one veth pair, over IPv6 (the ceiling of this machine).

Goal: lab6 / hand6 >= 0.97. Saved as throughput_ipv6.json.
Run as root: .venv/bin/python bench/throughput6.py [--seconds 3 --runs 9]
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from ipaddress import IPv4Network, IPv6Network
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "netns-lab"))
sys.path.insert(0, str(ROOT / "bench"))

from benchlib import is_root, machine  # noqa: E402
from netns_lab.netns import Sandbox, ip, run, wait_for  # noqa: E402
from throughput import LAB, measure, parse_args, report  # noqa: E402

from flanneld.masq import RuleParams, render_transaction  # noqa: E402

NAME = "throughput_ipv6"
NET4, NET6 = IPv4Network("10.97.0.0/16"), IPv6Network("fc00:97::/48")
# host -> (underlay IPv4, underlay IPv6, pod /24 prefix, pod /64 prefix)
HOSTS = {"a": ("192.168.78.10", "fd78::10", "10.97.1", "fc00:97:0:1"),
         "b": ("192.168.78.11", "fd78::11", "10.97.2", "fc00:97:0:2")}
BACKENDS = {"vxlan": {"Type": "vxlan"}, "hostgw": {"Type": "host-gw"}}


def topology(kind: str) -> str:
    """A two-host dual-stack lab of `kind` (vxlan or hostgw), one pod per host, --ip-masq
    as the v4 benchmark's labs run."""
    return json.dumps({  # JSON is YAML
        "description": f"throughput over IPv6, dual-stack {kind}, 2 hosts, 1 pod each",
        "network": {"Network": "10.96.0.0/16", "EnableIPv6": True,
                    "IPv6Network": "fc00:96::/48", "Backend": BACKENDS[kind]},
        "segments": {"lan": {"subnet": "192.168.79.0/24", "subnet6": "fd79::/64"}},
        "etcd": {"members": 1}, "hosts": 2, "defaults": {"pods": 1}})


def lab_up6(name: str, kind: str, tmp: Path) -> tuple[str, str, str]:
    """(server pod ns, client pod ns, server pod IPv6) of a dual-stack lab."""
    path = tmp / f"{kind}.yaml"
    path.write_text(topology(kind) + "\n")
    subprocess.run([*LAB, "--name", name, "up", "--replace", str(path)], check=True,
                   capture_output=True, timeout=300)
    data = json.loads(Path(f"/tmp/pyflannel/pfl-{name}/lab.json").read_text())
    server = data["pods"].get("h2", {}).get("p1", {})
    if not server.get("ip6"):
        raise RuntimeError(f"lab {name}: pod h2/p1 has no IPv6 address in lab.json; this "
                           "netns-lab cannot bring up dual-stack labs (EnableIPv6, subnet6)")
    return f"pfl-{name}-h2-p1", f"pfl-{name}-h1-p1", str(server["ip6"]).split("/")[0]


def build_hand6(box: Sandbox, kind: str) -> tuple[str, str, str]:
    """Two dual-stack hosts and pods wired by hand; (server pod ns, client pod ns, its IPv6)."""
    seg = box.add_netns(f"{kind}6-seg", forwarding=False)
    ip("link", "add", "br0", "type", "bridge", netns=seg)
    ip("link", "set", "br0", "up", netns=seg)
    vx = kind == "vxlan"
    mtu = 1430 if vx else 1500  # FLANNEL_MTU: the smaller of ext-50 and ext-70
    pods = {}
    for h, (addr, addr6, sub, sub6) in HOSTS.items():
        ns = box.add_netns(f"{kind}6-{h}")
        run(["ip", "netns", "exec", ns, "sysctl", "-qw", "net.ipv6.conf.all.forwarding=1"])
        box.veth(ns, "eth0", seg, f"to-{h}")
        ip("link", "set", f"to-{h}", "master", "br0", "up", netns=seg)
        ip("addr", "add", f"{addr}/24", "dev", "eth0", netns=ns)
        ip("addr", "add", f"{addr6}/64", "dev", "eth0", "nodad", netns=ns)
        if vx:
            for dev, local, dmtu, own in (("flannel.1", addr, 1450, f"{sub}.0/32"),
                                          ("flannel-v6.1", addr6, 1430, f"{sub6}::/128")):
                ip("link", "add", dev, "type", "vxlan", "id", "1", "local", local, "dev", "eth0",
                   "nolearning", "dstport", "8472", netns=ns)
                ip("link", "set", dev, "mtu", str(dmtu), "up", netns=ns)
                ip("addr", "add", own, "dev", dev, *(["nodad"] if ":" in own else []), netns=ns)
        ip("link", "add", "cni0", "type", "bridge", netns=ns)
        ip("addr", "add", f"{sub}.1/24", "dev", "cni0", netns=ns)
        ip("addr", "add", f"{sub6}::1/64", "dev", "cni0", "nodad", netns=ns)
        ip("link", "set", "cni0", "mtu", str(mtu), "up", netns=ns)
        pod = box.add_netns(f"{kind}6-{h}-pod", forwarding=False)
        ip("link", "add", f"veth{h}", "mtu", str(mtu), "type", "veth", "peer", "name", "eth0",
           "mtu", str(mtu), "netns", pod, netns=ns)
        ip("link", "set", f"veth{h}", "master", "cni0", "up", netns=ns)
        ip("addr", "add", f"{sub}.2/24", "dev", "eth0", netns=pod)
        ip("addr", "add", f"{sub6}::2/64", "dev", "eth0", "nodad", netns=pod)
        ip("link", "set", "eth0", "up", netns=pod)
        ip("route", "add", "default", "via", f"{sub}.1", netns=pod)
        ip("-6", "route", "add", "default", "via", f"{sub6}::1", netns=pod)
        pods[h] = (pod, f"{sub6}::2")
        # flannel's --ip-masq tables of both families, as flanneld installs them in the lab
        rules = render_transaction(RuleParams(
            NET4, IPv4Network(f"{sub}.0/24"), masquerade=True, ipv6_network=NET6,
            ipv6_subnet=IPv6Network(f"{sub6}::/64")), (4, 6))
        run(["ip", "netns", "exec", ns, "nft", "-f", "-"], input=rules)
    for h in HOSTS:
        other = "b" if h == "a" else "a"
        oaddr, oaddr6, osub, osub6 = HOSTS[other]
        ns = box.ns(f"{kind}6-{h}")
        if not vx:
            ip("route", "add", f"{osub}.0/24", "via", oaddr, "dev", "eth0", netns=ns)
            ip("-6", "route", "add", f"{osub6}::/64", "via", oaddr6, "dev", "eth0", netns=ns)
            continue
        for dev, gw, net, dst in (("flannel.1", f"{osub}.0", f"{osub}.0/24", oaddr),
                                  ("flannel-v6.1", f"{osub6}::", f"{osub6}::/64", oaddr6)):
            link = ip("-j", "link", "show", dev, netns=box.ns(f"{kind}6-{other}"))
            omac = json.loads(link)[0]["address"]
            ip("neigh", "replace", gw, "lladdr", omac, "dev", dev, "nud", "permanent", netns=ns)
            run(["bridge", "-n", ns, "fdb", "append", omac, "dev", dev, "dst", dst, "self",
                 "permanent"])
            ip("route", "add", net, "via", gw, "dev", dev, "onlink", netns=ns)
    return pods["b"][0], pods["a"][0], pods["b"][1]


def build_veth6(box: Sandbox) -> tuple[str, str, str]:
    a, b = box.add_netns("veth6-a", forwarding=False), box.add_netns("veth6-b", forwarding=False)
    box.veth(a, "eth0", b, "eth0")
    ip("addr", "add", "fd98::1/64", "dev", "eth0", "nodad", netns=a)
    ip("addr", "add", "fd98::2/64", "dev", "eth0", "nodad", netns=b)
    return b, a, "fd98::2"


def reachable(client: str, server_ip: str) -> None:
    """The path carries IPv6 before it is measured (neighbour discovery, DAD of link-locals)."""
    wait_for(lambda: run(["ip", "netns", "exec", client, "ping", "-6", "-c1", "-W1", "-n",
                          server_ip], check=False).returncode == 0, 20,
             what=f"{client} to reach {server_ip} over IPv6")


def main() -> int:
    args = parse_args(__doc__)
    if not is_root():
        return 1
    before = machine()
    box = Sandbox.scratch()
    tmp = Path(tempfile.mkdtemp(prefix="pyflannel-tp6-"))
    labs = {"vxlan": f"pflb6{os.getpid() % 10000}v", "hostgw": f"pflb6{os.getpid() % 10000}h"}
    try:
        paths = {"veth6": build_veth6(box), "hand6-vxlan": build_hand6(box, "vxlan"),
                 "lab6-vxlan": lab_up6(labs["vxlan"], "vxlan", tmp),
                 "hand6-hostgw": build_hand6(box, "hostgw"),
                 "lab6-hostgw": lab_up6(labs["hostgw"], "hostgw", tmp)}  # pairs back to back
        for _server, client, server_ip in paths.values():
            reachable(client, server_ip)
        samples = measure(box, paths, args.runs, args.seconds)
    finally:
        for lab in labs.values():
            subprocess.run([*LAB, "--name", lab, "down"], capture_output=True, timeout=120)
        box.cleanup()
        shutil.rmtree(tmp, ignore_errors=True)
    report(NAME, "pod-to-pod TCP over IPv6", samples, args, before, "6")
    return 0


if __name__ == "__main__":
    sys.exit(main())
