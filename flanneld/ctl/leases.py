"""List the cluster's subnet leases, and reserve or release subnets (keys without a TTL).

  flannelctl leases                                   # every lease: expiry or "reservation"
  flannelctl leases --json                            # both families: subnet, ipv6_subnet, ...
  flannelctl leases reserve 10.5.77.0/24 --public-ip 192.168.64.3
  flannelctl leases release 10.5.77.0/24              # delete the reservation
  flannelctl leases release 10.5.77.0/24 --ttl 86400  # or turn it into an ordinary lease

The listing shows both families: the IPv4 subnet and PublicIP, and, when the
network enables IPv6 or any lease has an IPv6 part, the IPv6 subnet,
PublicIPv6 and the VtepMAC of BackendV6Data. An IPv6-only lease (key
`&<v6 net>-<len>`, PublicIP 0.0.0.0) shows `-` for its IPv4 columns. reserve
and release name a lease by its IPv4 subnet and find its key with or without an
IPv6 part (`10.5.77.0-24` or `10.5.77.0-24&<v6>-<len>`); a new reservation of a
free subnet has an IPv4 key only.

A reservation is flannel's (Documentation/reservations.md): the lease key with
no etcd lease attached, so it never expires; the node whose PublicIP it names
uses it (pyflannel keeps it a reservation; flannel's etcd v3 code turns it into
a 24 h lease, flannel#1329). On etcd v3, done atomically:

- reserve, free subnet: create the key without a lease, only if no key of that
  IPv4 subnet exists (one transaction);
- reserve, leased by the node with that PublicIP: rewrite the same value without
  the lease, only if the key is unchanged (compare mod_revision), so the node
  keeps its subnet; flanneld there sees its key rewritten, logs it and adopts
  the reservation at once;
- reserve, leased by another node: refused unless --force;
- release (default): delete the reservation if unchanged; a running node
  holding it re-creates its key with an ordinary TTL lease at once, an absent
  node's subnet becomes free. --ttl attaches a fresh etcd lease instead: the
  key then expires after TTL seconds unless its node renews it (flanneld adopts
  it); an ordinary lease is refused unless --force.
"""

from __future__ import annotations

import argparse
from ipaddress import IPv4Address, IPv4Network
from typing import Any

from core.lease import (
    LeaseAttrs,
    LeaseError,
    decode_attrs,
    encode_attrs,
    join_key,
    subnet_key,
    vxlan_backend_data,
)
from flanneld.ctl import _common as c


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", metavar="ACTION")
    c.add_options(parser, c.ETCD_FLAGS)
    reserve = sub.add_parser("reserve", help="reserve SUBNET for the node with --public-ip")
    reserve.add_argument("subnet", type=IPv4Network, metavar="SUBNET", help="e.g. 10.5.77.0/24")
    reserve.add_argument("--public-ip", type=IPv4Address, required=True,
                         help="the node that gets it (its flanneld PublicIP)")
    reserve.add_argument("--backend-type", choices=("vxlan", "host-gw"),
                         help="also write BackendType (default: keep the node's, or none)")
    reserve.add_argument("--vtep-mac", help="vxlan: the node's VtepMAC (with --backend-type vxlan)")
    reserve.add_argument("--vni", type=int, default=1, help="vxlan: VNI for --vtep-mac (1)")
    reserve.add_argument("--force", action="store_true",
                         help="take the subnet even from another node's live lease")
    c.add_options(reserve, c.ETCD_FLAGS, json_flag=False, nested=True)
    release = sub.add_parser("release", help="delete a reservation (or give it a TTL)")
    release.add_argument("subnet", type=IPv4Network, metavar="SUBNET")
    release.add_argument("--ttl", type=int, help="attach an etcd lease of TTL seconds instead "
                         "of deleting the key")
    for p in (reserve, release):
        p.add_argument("--json", action="store_true", default=argparse.SUPPRESS)
    release.add_argument("--force", action="store_true",
                         help="also release an ordinary (TTL) lease")
    c.add_options(release, c.ETCD_FLAGS, json_flag=False, nested=True)


class Refused(Exception):
    """The change would clobber something; the message says what and how to force it."""


def wanted_attrs(args: argparse.Namespace, current: LeaseAttrs | None) -> LeaseAttrs:
    """The reservation's value: the node's current one if it is the same node, else minimal."""
    if current is not None and current.public_ip == args.public_ip and not args.backend_type:
        return current
    if args.backend_type == "vxlan" and args.vtep_mac:
        return LeaseAttrs(args.public_ip, "vxlan", vxlan_backend_data(args.vni, args.vtep_mac))
    if args.vtep_mac:
        raise Refused("--vtep-mac needs --backend-type vxlan")
    return LeaseAttrs(args.public_ip, args.backend_type or "")


def plan_reserve(args: argparse.Namespace, existing: dict[str, Any] | None) -> tuple[str, bytes]:
    """(what to do, value) for a reserve; pure. `existing`: the key's row as read, or None.

    What: "create", "convert" (rewrite without a lease), "update" (a reservation with
    new attributes), "noop".
    """
    if existing is None:
        return "create", encode_attrs(wanted_attrs(args, None))
    try:
        current: LeaseAttrs | None = decode_attrs(existing["value"])
    except LeaseError:
        current = None
    same_node = current is not None and current.public_ip == args.public_ip
    if not same_node and not args.force:
        who = f"PublicIP {current.public_ip}" if current else "an unreadable value"
        kind = "a reservation" if existing["lease"] == 0 else "a live lease"
        raise Refused(f"{args.subnet} is held by {who} ({kind}); refusing to take it for "
                      f"{args.public_ip} (use --force, after stopping that node)")
    value = encode_attrs(wanted_attrs(args, current if same_node else None))
    if existing["lease"] == 0:
        return ("noop" if value == existing["value"] else "update"), value
    return "convert", value


def pick_key(names: list[str], subnet: IPv4Network) -> str | None:
    """Among the key names under `<prefix>/subnets/<a.b.c.d>-<len>`, the one lease key of
    `subnet`: IPv4-only or dual-stack (`...&<v6>-<len>`); pure. Two of them: Refused."""
    v4 = subnet_key(subnet)
    found = sorted(n for n in names if n == v4 or n.startswith(v4 + "&"))
    if len(found) > 1:
        raise Refused(f"{subnet} has {len(found)} lease keys ({', '.join(found)}); delete "
                      "the stale one with etcdctl first")
    return found[0] if found else None


async def _find(client: Any, prefix: str, subnet: IPv4Network) -> tuple[str, Any]:
    """The full key of `subnet`'s lease (IPv4-only if none exists yet) and its KeyValue."""
    v4 = subnet_key(subnet)
    rows = {kv.key.decode("utf-8", "replace").rsplit("/", 1)[-1]: kv
            for kv in await client.list_prefix(f"{prefix}/{v4}")}
    name = pick_key(list(rows), subnet)
    return f"{prefix}/{name or v4}", rows.get(name) if name else None


async def _reserve(o: Any, args: argparse.Namespace) -> str:
    client = c.etcd_client(o)
    try:
        prefix = join_key(o.etcd_prefix, "subnets")
        key, kv = await _find(client, prefix, args.subnet)
        existing = None if kv is None else {"value": bytes(kv.value), "lease": int(kv.lease),
                                            "mod": int(kv.mod_revision)}
        action, value = plan_reserve(args, existing)
        if action == "noop":
            return f"{key} is already reserved for {args.public_ip}"
        if action == "create":
            done = await client.create(key, value, 0, unless_prefix=f"{prefix}/"
                                       f"{subnet_key(args.subnet)}")
        else:
            assert existing is not None
            done = await client.put_if_unchanged(key, value, 0, existing["mod"])
        if done is None:
            raise Refused(f"{key} changed while we were writing it; run the command again")
        verb = {"create": "reserved", "convert": "converted the live lease into a reservation",
                "update": "updated the reservation"}[action]
        return f"{key}: {verb} for {args.public_ip} (no TTL)"
    finally:
        await client.close()


async def _release(o: Any, args: argparse.Namespace) -> str:
    client = c.etcd_client(o)
    try:
        key, kv = await _find(client, join_key(o.etcd_prefix, "subnets"), args.subnet)
        if kv is None:
            raise Refused(f"{key} does not exist: nothing to release")
        if int(kv.lease) != 0 and not args.force:
            raise Refused(f"{key} is an ordinary lease (etcd lease {int(kv.lease):x}), not a "
                          "reservation; use --force to release it anyway")
        if args.ttl is None:
            if not await client.delete_if_unchanged(key, int(kv.mod_revision)):
                raise Refused(f"{key} changed while we were deleting it; run the command again")
            return f"{key}: released (deleted)"
        lease_id, granted = await client.grant(args.ttl)
        if await client.put_if_unchanged(key, bytes(kv.value), lease_id,
                                         int(kv.mod_revision)) is None:
            await client.revoke(lease_id)
            raise Refused(f"{key} changed while we were writing it; run the command again")
        return f"{key}: released into an ordinary lease (etcd lease {lease_id:x}, TTL {granted} s)"
    finally:
        await client.close()


def shows_v6(cluster: c.Cluster) -> bool:
    """IPv6 columns: the config enables IPv6, or some lease has an IPv6 part anyway."""
    if cluster.config is not None and cluster.config.enable_ipv6:
        return True
    return any(r.lease is not None and (r.lease.ipv6_subnet is not None
                                        or r.lease.attrs.public_ipv6 is not None)
               for r in cluster.leases)


def lease_cells(row: c.LeaseRow, v6: bool) -> list[str]:
    """One row of the listing; pure. An IPv6-only lease has `-` for its IPv4 columns."""
    lease = row.lease
    if lease is None:  # an undecodable key or value: the key as it is, and why
        return [row.key, *(["-"] * (6 if v6 else 3)), c.human_ttl(row), row.problem]
    attrs = lease.attrs
    v4 = lease.ipv4_subnet
    cells = [str(v4) if v4 else "-"]
    if v6:
        cells.append(str(lease.ipv6_subnet) if lease.ipv6_subnet else "-")
    cells.append(str(attrs.public_ip) if v4 or not attrs.public_ip.is_unspecified else "-")
    if v6:
        cells.append(str(attrs.public_ipv6) if attrs.public_ipv6 else "-")
    cells += [attrs.backend_type or "-", attrs.vtep_mac or "-"]
    if v6:
        cells.append(c.vtep_mac_v6(attrs) or "-")
    return [*cells, c.human_ttl(row), row.problem]


def render(cluster: c.Cluster) -> str:
    if cluster.error:
        return f"etcd unreachable: {cluster.error}"
    v6 = shows_v6(cluster)
    config = cluster.config
    if config is None:
        net = cluster.config_error
    else:
        parts = [f"network {config.ipv4_network}" if config.ipv4_network else "IPv6-only"]
        if config.enable_ipv6:
            parts.append(f"IPv6 network {config.ipv6_network}")
        net = ", ".join(parts)
    reserved = sum(r.reservation for r in cluster.leases)
    only6 = sum(1 for r in cluster.leases if r.lease is not None and r.lease.ipv4_subnet is None)
    counts = f"{reserved} reservations" + (f", {only6} IPv6-only" if only6 else "")
    headers = ["SUBNET", *(["IPv6 SUBNET"] if v6 else []), "PUBLIC IP",
               *(["PUBLIC IPv6"] if v6 else []), "BACKEND", "VTEP MAC",
               *(["VTEP MAC (v6)"] if v6 else []), "EXPIRES", "PROBLEM"]
    return "\n".join([
        f"{cluster.prefix}: {net}; {len(cluster.leases)} leases ({counts})", "",
        c.table(headers, [lease_cells(r, v6) for r in cluster.leases])])


def run(args: argparse.Namespace) -> int:
    o = c.options(args)
    try:
        if args.action == "reserve":
            print(c.run_async(lambda: _reserve(o, args)))
            return 0
        if args.action == "release":
            print(c.run_async(lambda: _release(o, args)))
            return 0
    except Refused as exc:
        print(f"flannelctl leases: {exc}")
        return 1
    cluster = c.run_async(lambda: c.read_cluster(o))
    if getattr(args, "json", False):
        c.emit_json({"prefix": cluster.prefix, "error": cluster.error or None,
                     "leases": [{**r.as_dict(), "expires": c.human_ttl(r)}
                                for r in cluster.leases]})
    else:
        print(render(cluster))
    return 1 if cluster.error else 0
