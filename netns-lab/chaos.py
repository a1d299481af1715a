"""Failure injection, only ever inside the lab's own namespaces.

- flanneld: kill (any signal), start, restart one host's daemon;
- etcd: stop and start a member (a 3-member cluster keeps its quorum with one down);
- link: pull or plug a cable, i.e. set the segment-side port of a veth down or up;
- partition: drop everything between two hosts (or a host and an etcd member) with
  nftables bridge rules inside the segment namespaces, healed the same way.

The partition ruleset is derived from the lab's list of partitions each time
and replaced atomically (reconcile, don't replay).
"""

from __future__ import annotations

import signal

from netns_lab import build
from netns_lab.etcd import EtcdMember
from netns_lab.lab import Lab, LabError
from netns_lab.netns import ip, run
from netns_lab.plan import Link, Plan

NFT_TABLE = "pfl_partition"


# -- flanneld ---------------------------------------------------------------------


def _host(lab: Lab, host: str) -> str:
    if host not in lab.topology.host_names:
        raise LabError(f"no host {host!r} in lab {lab.name!r} (hosts: "
                       f"{', '.join(lab.topology.host_names)})")
    return host


def flanneld_kill(lab: Lab, host: str, sig: int = signal.SIGTERM) -> bool:
    """Signal a host's flanneld and wait for it to exit; False if it was not running."""
    name = build.flanneld_proc(_host(lab, host))
    if lab.sandbox.pid(name) is None:
        return False
    lab.sandbox.kill(name, sig)
    return True


def flanneld_start(lab: Lab, host: str, wait: bool = True) -> bool:
    """Start a host's flanneld unless it runs; wait for /readyz. False if it was running."""
    if lab.sandbox.pid(build.flanneld_proc(_host(lab, host))) is not None:
        return False
    build.start_flanneld(lab, host)
    if wait:
        build.wait_flanneld(lab, host)
    return True


def flanneld_restart(lab: Lab, host: str, sig: int = signal.SIGTERM) -> None:
    flanneld_kill(lab, host, sig)
    flanneld_start(lab, host)


# -- etcd ----------------------------------------------------------------------------


def etcd_member(lab: Lab, name: str) -> EtcdMember:
    for m in lab.etcd_members():
        if m.name == name:
            return m
    raise LabError(f"no etcd member {name!r} in lab {lab.name!r} (members: "
                   f"{', '.join(m.name for m in lab.topology.etcd)})")


def etcd_stop(lab: Lab, name: str, sig: int = signal.SIGTERM) -> bool:
    member = etcd_member(lab, name)
    if lab.sandbox.pid(f"etcd-{name}") is None:
        return False
    member.stop(sig)
    return True


def etcd_start(lab: Lab, name: str) -> bool:
    member = etcd_member(lab, name)
    if lab.sandbox.pid(f"etcd-{name}") is not None:
        return False
    # With a quorum lost a member may only be healthy once the others are back.
    wait = sum(lab.sandbox.pid(f"etcd-{m.name}") is not None for m in lab.topology.etcd) + 1 > \
        len(lab.topology.etcd) // 2
    member.start(wait=wait)
    if member.proc is not None:
        build.favour_etcd(member.proc.pid)
    return True


# -- links ---------------------------------------------------------------------------


def find_link(plan: Plan, owner: str, segment: str | None = None) -> Link:
    links = plan.links_of(owner)
    if not links:
        raise LabError(f"{owner!r} has no underlay link (links belong to hosts, etcd "
                       "members and routers)")
    if segment is not None:
        links = [lk for lk in links if lk.segment == segment]
        if not links:
            raise LabError(f"{owner!r} has no leg on segment {segment!r} (its segments: "
                           f"{', '.join(lk.segment for lk in plan.links_of(owner))})")
    if len(links) > 1:
        raise LabError(f"{owner!r} has legs on {', '.join(lk.segment for lk in links)}: "
                       "say which segment")
    return links[0]


def set_link(lab: Lab, owner: str, up: bool, segment: str | None = None) -> Link:
    """Pull (or plug back) the cable: the port on the segment's bridge goes down (up)."""
    link = find_link(lab.plan, owner, segment)
    ip("link", "set", link.port, "up" if up else "down", netns=lab.ns(link.segment))
    return link


# -- partitions ------------------------------------------------------------------------


def partition_rules(plan: Plan, partitions: list[tuple[str, str]]) -> dict[str, list[str]]:
    """nft rules (bridge family, forward hook) per segment that cut each pair apart.

    On a shared segment frames between the two ports are dropped whatever they
    carry; across routers, packets from one to the other's underlay addresses (IPv4 and
    IPv6).
    """
    rules: dict[str, list[str]] = {s.name: [] for s in plan.topology.segments}
    for a, b in partitions:
        la, lb = find_link(plan, a), find_link(plan, b)
        tag = f'comment "partition {a} {b}"'
        if la.segment == lb.segment:
            for x, y in ((la, lb), (lb, la)):
                rules[la.segment].append(f'iifname "{x.port}" oifname "{y.port}" drop {tag}')
        else:
            for x, y in ((la, lb), (lb, la)):
                if y.ip is not None:
                    rules[x.segment].append(f'iifname "{x.port}" ip daddr {y.ip} drop {tag}')
                if y.ip6 is not None:
                    rules[x.segment].append(f'iifname "{x.port}" ip6 daddr {y.ip6} drop {tag}')
    return rules


def nft_script(rules: list[str]) -> str:
    """Replace our table in one transaction (add-then-delete makes delete never fail)."""
    script = [f"table bridge {NFT_TABLE}", f"delete table bridge {NFT_TABLE}"]
    if rules:
        script += [f"table bridge {NFT_TABLE} {{", "  chain forward {",
                   "    type filter hook forward priority 0; policy accept;",
                   *(f"    {r}" for r in rules), "  }", "}"]
    return "\n".join(script) + "\n"


def apply_partitions(lab: Lab) -> None:
    for seg, rules in partition_rules(lab.plan, lab.partitions).items():
        run(["ip", "netns", "exec", lab.ns(seg), "nft", "-f", "-"], input=nft_script(rules))


def partition(lab: Lab, a: str, b: str) -> None:
    if a == b:
        raise LabError("partition needs two different hosts")
    for r in lab.topology.routers:
        if r.name in (a, b):
            raise LabError(f"{r.name} is a router: to cut a router off use `link down "
                           f"{r.name} SEGMENT`")
    find_link(lab.plan, a)
    find_link(lab.plan, b)
    pair = (a, b) if a < b else (b, a)
    if pair not in lab.partitions:
        lab.partitions.append(pair)
    apply_partitions(lab)


def heal(lab: Lab, a: str | None = None, b: str | None = None) -> int:
    """Remove one partition (or all of them); how many were removed."""
    before = len(lab.partitions)
    if a is None or b is None:
        lab.partitions.clear()
    else:
        pair = (a, b) if a < b else (b, a)
        lab.partitions = [p for p in lab.partitions if p != pair]
    apply_partitions(lab)
    return before - len(lab.partitions)
