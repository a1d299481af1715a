"""The plugin: ADD, DEL, CHECK, VERSION, STATUS, GC. One implementation, two ways in.

`handle(env, stdin, ctx) -> (exit code, stdout, stderr)` is called by flanneld's
CNI server (warm: netlink sockets, nft context, bridge cache, deferred veth
deletion) and by the fallback (`python -m cni.plugin`, exec'd by the front when
flanneld is down: a fresh Context, everything synchronous). Results are
identical either way.

`type: bridge` delegates (flannel's default) are served in-process with
host-local semantics; other delegate types are exec'd from CNI_PATH exactly
as flannel does.

The warm Context and the steps the commands share live in `cni.context`;
CHECK and STATUS in `cni.verify`, GC in `cni.gc`, loaded only when asked for.
"""

from __future__ import annotations

import errno
import ipaddress
import os
import sys
from collections.abc import Callable

from cni import ipam, link, masq, state
from cni.context import Context, bridge_setup, store_for, subnet_env_for, undo
from cni.delegate import (
    BridgeConf,
    FlannelConf,
    derive_delegate,
    load_conf,
    requested_ips,
    requested_mac,
    scratch_bytes,
)
from cni.protocol import (
    ABOUT,
    INTERNAL,
    INVALID_CONFIG,
    CniError,
    Request,
    Result,
    clipped,
    dumps,
    error_bytes,
    parse_request,
    version_bytes,
)
from netlink import messages as m

TYPE_CHECKING = False  # typing costs ~2 ms to import: annotations only
if TYPE_CHECKING:
    from typing import Any


def handle(env: dict[str, str], stdin: bytes, ctx: Context | None = None
           ) -> tuple[int, bytes, bytes]:
    """Run one CNI invocation. Never raises."""
    ctx = ctx or Context()
    ctx.env, ctx.stdin = env, stdin
    if not env.get("CNI_COMMAND"):
        return 0, b"", ABOUT.encode()
    version: str | None = None
    try:
        req = parse_request(env, stdin)
        version = req.version
        if req.command == "VERSION":
            return 0, version_bytes(req.version), b""
        out = _COMMANDS[req.command](req, ctx)
        return 0, out, b""
    except CniError as exc:
        return 1, error_bytes(exc, version or _raw_version(stdin)), b""
    except Exception as exc:  # a bug or an unexpected kernel answer: still one JSON error
        err = CniError(INTERNAL, f"internal error: {exc}", type(exc).__name__)
        import traceback
        return 1, error_bytes(err, version), traceback.format_exc().encode()


def _raw_version(stdin: bytes) -> str | None:
    try:
        v = __import__("json").loads(stdin).get("cniVersion")
        return v if isinstance(v, str) else None
    except Exception:
        return None


# ADD ---------------------------------------------------------------------------

_Setup = tuple[BridgeConf, dict[str, object], list[ipam.RangeSet]]


def _prepare(req: Request, ctx: Context) -> tuple[FlannelConf, dict[str, Any], _Setup | None]:
    """Config -> delegate -> bridge settings, memoised per (stdin, subnet.env) in a server."""
    fc = load_conf(req.conf)
    senv = subnet_env_for(ctx, fc)
    key = (ctx.stdin, senv)
    hit = ctx.memo.get(key)
    if hit is None:
        d = derive_delegate(fc, senv)
        setup = bridge_setup(d) if d["type"] == "bridge" else None
        if len(ctx.memo) >= 64:
            ctx.memo.clear()
        hit = ctx.memo[key] = (d, setup)
    return fc, hit[0], hit[1]


def cmd_add(req: Request, ctx: Context) -> bytes:
    fc, d, setup = _prepare(req, ctx)
    if setup is None:
        from cni.execdelegate import delegate_add
        return delegate_add(req, fc, d)
    bc, ipam_conf, sets = setup
    requested = requested_ips(req.args, d)
    pod_mac = requested_mac(req.args, d) or link.random_mac()
    netns_fd = link.open_netns(req.netns)
    try:
        return _add_bridge(req, ctx, fc, d, bc, ipam_conf, sets, requested, pod_mac, netns_fd)
    finally:
        os.close(netns_fd)


def _add_bridge(req: Request, ctx: Context, fc: FlannelConf, d: dict[str, Any], bc: BridgeConf,
                ipam_conf: dict[str, Any], sets: list[ipam.RangeSet],
                requested: list[ipam.IPAddress], pod_mac: str, netns_fd: int) -> bytes:
    store = store_for(ipam_conf, fc.name)
    rec = state.Record(network=fc.name, container_id=req.container_id, ifname=req.ifname,
                       netns=req.netns, ipam_dir=store.dir, host_veth=link.random_veth_name(),
                       bridge=bc.bridge)
    if bc.ip_masq:
        rec.chain = masq.chain_name(fc.name, req.container_id, req.ifname)
    with store.locked():
        chosen = ipam.choose(store, sets, requested)
        rec.ips = [c.cidr for c in chosen]
        rec.subnets = [str(c.range.subnet) for c in chosen]
        if not state.create_record(fc.data_dir, rec):  # O_EXCL: the duplicate check
            raise CniError(INTERNAL, f"{req.container_id}/{req.ifname} is already attached to "
                           f"{fc.name}, duplicate allocation is not allowed",
                           "DEL the attachment before adding it again")
        try:
            ipam.commit(store, chosen, req.container_id, req.ifname)
        except BaseException:
            state.drop_record(fc.data_dir, fc.name, req.container_id, req.ifname)
            raise
    try:
        result = _wire(req, ctx, fc, d, bc, chosen, rec, pod_mac, netns_fd)
        if rec.chain:
            masq.setup(rec.chain, fc.name, req.container_id, list(zip(rec.addresses(),
                                                                      rec.subnets, strict=True)))
        scratch = scratch_bytes(d)
        ctx.later(lambda _nl: state.save_scratch(fc.data_dir, req.container_id, scratch))
    except BaseException as exc:
        try:
            undo(rec, ctx, fc.data_dir)
        except CniError as cleanup:
            print(f"ADD rollback: {cleanup.msg}: {cleanup.details}", file=sys.stderr)
        if isinstance(exc, masq.NftError):
            raise CniError(INTERNAL, f"ipMasq rules: {exc}") from None
        raise
    return dumps(result.render(req.version))


def _wire(req: Request, ctx: Context, fc: FlannelConf, d: dict[str, Any], bc: BridgeConf,
          chosen: list[ipam.Choice], rec: state.Record, pod_mac: str, netns_fd: int) -> Result:
    addrs = [link.PodAddr(ipaddress.ip_interface(c.cidr), c.range.gateway) for c in chosen]
    gateways = [link.PodAddr(ipaddress.ip_interface(f"{a.gateway}/{a.address.network.prefixlen}"),
                             None) for a in addrs if a.gateway is not None] if bc.is_gateway else []
    result_routes = [dict(r) for r in d["ipam"].get("routes") or []]
    if bc.is_default_gateway:
        for a in addrs:
            default = "0.0.0.0/0" if a.address.version == 4 else "::/0"
            if a.gateway is not None and not any(r.get("dst") == default for r in result_routes):
                result_routes.append({"dst": default, "gw": str(a.gateway)})
    try:
        routes = [link.PodRoute(ipaddress.ip_network(r["dst"]),
                                ipaddress.ip_address(r["gw"]) if r.get("gw") else None)
                  for r in result_routes]
    except (KeyError, ValueError) as exc:
        raise CniError(INVALID_CONFIG,
                       f"ipam.routes: bad route ({clipped(str(exc), 120)})") from None
    host = ctx.host()
    br = link.ensure_bridge(host, bc, gateways, ctx.bridges)
    if bc.is_gateway:
        link.enable_forwarding({a.address.version for a in addrs})
    host_mac, pod_index, br = _create_pair(req, ctx, fc, bc, br, gateways, rec, netns_fd,
                                           pod_mac)
    link.configure_pod(netns_fd, req.ifname, pod_index, addrs, routes)
    link.wait_port_up(host, rec.host_veth)
    mtu = bc.mtu or None
    return Result(
        interfaces=[{"name": br.name, "mac": br.mac},
                    {"name": rec.host_veth, "mac": host_mac, "mtu": mtu},
                    {"name": req.ifname, "mac": pod_mac, "mtu": mtu, "sandbox": req.netns}],
        ips=[{"interface": 2, "address": c.cidr,
              "gateway": str(c.range.gateway) if c.range.gateway else None} for c in chosen],
        routes=result_routes, dns=bc.dns)


def _create_pair(req: Request, ctx: Context, fc: FlannelConf, bc: BridgeConf, br: m.LinkRow,
                 gateways: list[link.PodAddr], rec: state.Record, netns_fd: int, pod_mac: str
                 ) -> tuple[str, int, m.LinkRow]:
    """The veth pair: (host MAC, pod ifindex, the bridge it hangs off)."""
    mtu, hairpin = bc.mtu, bc.hairpin
    host = ctx.host()
    for attempt in range(10):
        try:
            return (*link.create_veth(host, br, rec.host_veth, req.ifname, netns_fd, mtu,
                                      pod_mac, hairpin), br)
        except m.NetlinkError as exc:
            if exc.errno in (errno.EINVAL, errno.ENODEV, errno.EOPNOTSUPP) and attempt == 0 \
                    and br.name in ctx.bridges.entries:
                ctx.bridges.forget(br.name)  # a cached bridge index gone stale: look again
                br = link.ensure_bridge(host, bc, gateways, ctx.bridges)
                continue
            if exc.errno != errno.EEXIST:
                raise CniError(INTERNAL, f"failed to create veth pair: {exc.strerror}") from None
        if link.pod_exists(netns_fd, req.ifname):
            if attempt == 0 and ctx.flush is not None:
                ctx.flush()  # a DEL of this pod's previous interface may still be in flight
                continue
            raise CniError(INTERNAL, f"container veth name provided ({req.ifname}) already "
                           "exists", f"{req.netns} already has an interface {req.ifname}")
        rec.host_veth = link.random_veth_name()  # our random host name clashed: pick another
        state.rewrite_record(fc.data_dir, rec)
    raise CniError(INTERNAL, "failed to find a free host veth name after 10 attempts")


# DEL ---------------------------------------------------------------------------

def cmd_del(req: Request, ctx: Context) -> bytes:
    fc = load_conf(req.conf)
    rec = state.load_record(fc.data_dir, fc.name, req.container_id, req.ifname)
    if rec is not None:
        undo(rec, ctx, fc.data_dir)
        # Queued behind the ADD's own write of it, so the two cannot cross.
        ctx.later(lambda _nl: state.drop_scratch(fc.data_dir, req.container_id))
        return b""
    scratch = state.load_scratch(fc.data_dir, req.container_id)
    if scratch is not None:  # attached by flannel itself (a node moved over): its delegate DEL
        from cni.execdelegate import delegate_del
        delegate_del(req, fc, scratch)
        state.drop_scratch(fc.data_dir, req.container_id)
        return b""
    # Nothing of ours (a repeated DEL, a DEL after a failed ADD): host-local's own DEL,
    # in case an address is still held under this attachment's name.
    store = store_for(fc.ipam or {}, fc.name)
    if os.path.isdir(store.dir):
        with store.locked():
            store.release_all(req.container_id, req.ifname)
    return b""


# CHECK, STATUS and GC (cni/verify.py, cni/gc.py: loaded only when asked for) -------

def cmd_check(req: Request, ctx: Context) -> bytes:
    from cni.verify import check
    check(req, ctx)
    return b""


def cmd_status(req: Request, ctx: Context) -> bytes:
    from cni.verify import status
    status(req, ctx)
    return b""


def cmd_gc(req: Request, ctx: Context) -> bytes:
    from cni.gc import collect
    if ctx.flush is not None:
        ctx.flush()  # queued scratch writes and deletions land before we look
    collect(req, ctx, load_conf(req.conf))
    return b""


_COMMANDS: dict[str, Callable[[Request, Context], bytes]] = {
    "ADD": cmd_add, "DEL": cmd_del, "CHECK": cmd_check, "STATUS": cmd_status, "GC": cmd_gc}


def main() -> int:
    """Fallback entry: the front execs this with stdin handed over (flanneld is down)."""
    stdin = sys.stdin.buffer.read()
    code, out, err = handle(dict(os.environ), stdin)
    if err:
        sys.stderr.buffer.write(err)
        sys.stderr.flush()
    sys.stdout.buffer.write(out)
    sys.stdout.flush()
    return code


if __name__ == "__main__":
    sys.exit(main())
