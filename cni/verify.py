"""CHECK and STATUS: is an attachment what its prevResult says; can we serve an ADD."""

from __future__ import annotations

import ipaddress
import os

from cni import ipam, link, masq, state
from cni.context import Context, bridge_setup, store_for, subnet_env_for
from cni.delegate import derive_delegate, load_conf
from cni.protocol import INTERNAL, INVALID_CONFIG, NOT_AVAILABLE, CniError, Request


def check(req: Request, ctx: Context) -> None:
    """Our links, the pod's addresses and routes, the reservation and the nft chain."""
    fc = load_conf(req.conf)
    prev = req.conf.get("prevResult")
    if not isinstance(prev, dict):
        raise CniError(INVALID_CONFIG, "Required prevResult missing",
                       "CHECK needs the cached ADD result in 'prevResult'")
    d = derive_delegate(fc, subnet_env_for(ctx, fc))
    if d["type"] != "bridge":
        from cni.execdelegate import delegate_check
        delegate_check(req, fc, d, prev)
        return
    rec = state.load_record(fc.data_dir, fc.name, req.container_id, req.ifname)
    if rec is None:
        raise CniError(INTERNAL, f"no attachment of {req.container_id}/{req.ifname} to {fc.name}",
                       f"no record in {fc.data_dir}")
    store = ipam.Store(os.path.dirname(rec.ipam_dir), os.path.basename(rec.ipam_dir))
    for ip in rec.addresses():
        if store.owner(ip) not in ((req.container_id, req.ifname), (req.container_id, "")):
            raise CniError(INTERNAL, f"host-local: Failed to find address added by container "
                           f"{req.container_id}", f"{ip} is not reserved in {rec.ipam_dir}")
    netns_fd = link.open_netns(req.netns)
    try:
        link.check(ctx.host(), netns_fd, rec.bridge, rec.host_veth, req.ifname, prev)
    finally:
        os.close(netns_fd)
    if rec.chain and not masq.chains_present(rec.chain, rec.addresses()):
        raise CniError(INTERNAL, f"ipMasq chain {rec.chain} is missing from table "
                       f"{masq.TABLE}", f"addresses {', '.join(rec.addresses())}")


def status(req: Request, ctx: Context) -> None:
    """Code 50 without a valid subnet.env, or while a range set has no free address."""
    fc = load_conf(req.conf)
    d = derive_delegate(fc, subnet_env_for(ctx, fc, NOT_AVAILABLE))
    if d["type"] != "bridge":
        return
    _bc, ipam_conf, sets = bridge_setup(d)
    store = store_for(ipam_conf, fc.name)
    taken = store.reserved()
    for rset in sets:
        used = sum(1 for n in taken if _in_set(n, rset))
        if used >= ipam.capacity(rset):
            raise CniError(NOT_AVAILABLE, "IP pool exhausted: no addresses available in range "
                           f"set {','.join(str(r) for r in rset)}",
                           f"{used} reservations in {store.dir}")


def _in_set(name: str, rset: ipam.RangeSet) -> bool:
    try:
        ip = ipaddress.ip_address(name)
    except ValueError:
        return False
    return any(ip in r and ip != r.gateway for r in rset)
