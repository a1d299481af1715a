"""What the plugin's commands share: the warm Context and the steps ADD, CHECK and GC reuse.

ADD and DEL live in `cni.plugin`, CHECK and STATUS in `cni.verify`, GC in
`cni.gc`; all three build on this module and none imports another, so the
commands that are rarely asked for stay out of the ADD path's imports.
"""

from __future__ import annotations

import os
from collections.abc import Callable

from cni import ipam, link, masq, state
from cni.delegate import BridgeConf, FlannelConf, bridge_conf
from cni.protocol import (
    INTERNAL,
    INVALID_CONFIG,
    TRY_AGAIN_LATER,
    UNSUPPORTED_FIELD,
    CniError,
    shown,
)
from netlink.rtnl import RtNetlink

TYPE_CHECKING = False  # typing costs ~2 ms to import: annotations only
if TYPE_CHECKING:
    from typing import Any

    from core.subnetenv import SubnetEnv


class Context:
    """Warm state for a series of requests from one thread (the fallback makes one per exec)."""

    def __init__(self, defer: Callable[[link.Deferred], None] | None = None,
                 flush: Callable[[], None] | None = None,
                 bridges: link.BridgeCache | None = None) -> None:
        self.defer = defer            # queue work for the server's background thread (FIFO)
        self.flush = flush            # wait until everything queued is done
        self.bridges = bridges or link.BridgeCache()
        self._host: RtNetlink | None = None
        self._subnet: dict[str, tuple[tuple[int, int, int], SubnetEnv]] = {}
        self.memo: dict[tuple[bytes, SubnetEnv], tuple[dict[str, Any], Any]] = {}
        self.pending: list[link.Deferred] = []
        self.env: dict[str, str] = {}
        self.stdin = b""

    def host(self) -> RtNetlink:
        if self._host is None:
            self._host = RtNetlink()
        return self._host

    def close(self) -> None:
        if self._host is not None:
            self._host.close()
            self._host = None

    def subnet_env(self, path: str) -> SubnetEnv:
        """Read subnet.env, cached while the file is unchanged (inode, size, mtime)."""
        from core.subnetenv import read_subnet_env  # not needed by DEL: import late
        try:
            st = os.stat(path)
        except OSError:
            return read_subnet_env(path)  # raises with flannel's wording
        key = (st.st_ino, st.st_size, st.st_mtime_ns)
        cached = self._subnet.get(path)
        if cached is not None and cached[0] == key:
            return cached[1]
        env = read_subnet_env(path)
        self._subnet[path] = (key, env)
        return env

    def later(self, work: link.Deferred) -> None:
        """Work off the reply's critical path: done now in-process; in a server, held
        until the reply is out (`release`), then queued in order for a background thread."""
        if self.defer is None:
            work(self.host())
        else:
            self.pending.append(work)

    def release(self) -> None:
        """The reply went out: hand this request's deferred work to the background."""
        work, self.pending = self.pending, []
        if self.defer is not None:
            for w in work:
                self.defer(w)


def subnet_env_for(ctx: Context, fc: FlannelConf, code: int = TRY_AGAIN_LATER) -> SubnetEnv:
    from core.subnetenv import SubnetEnvError
    try:
        return ctx.subnet_env(fc.subnet_file)
    except SubnetEnvError as exc:
        raise CniError(code, f"loadFlannelSubnetEnv failed: {exc}",
                       "flanneld writes it once it holds a subnet lease") from None


def bridge_setup(d: dict[str, Any]) -> tuple[BridgeConf, dict[str, Any], list[ipam.RangeSet]]:
    bc = bridge_conf(d)
    ipam_conf = d["ipam"]
    if ipam_conf.get("type") != "host-local":
        raise CniError(UNSUPPORTED_FIELD, f"ipam type {shown(ipam_conf.get('type'))} is not "
                       "supported with the bridge delegate",
                       "use host-local (the default) or leave 'ipam.type' unset")
    rc = d.get("runtimeConfig") or {}
    sets = ipam.parse_range_sets(ipam_conf, rc.get("ipRanges"))
    return bc, ipam_conf, sets


def store_for(ipam_conf: dict[str, Any], network: str) -> ipam.Store:
    data_dir = ipam_conf.get("dataDir") or ipam.DEFAULT_DATA_DIR
    if not isinstance(data_dir, str):
        raise CniError(INVALID_CONFIG, f"'ipam.dataDir' must be a string, got {shown(data_dir)}")
    return ipam.Store(data_dir, network)


def undo(rec: state.Record, ctx: Context, data_dir: str) -> None:
    """Remove everything a record names; the record goes last, once all steps succeeded."""
    errors = []
    if rec.host_veth:
        try:
            link.remove_host_veth(ctx.host(), rec.host_veth,
                                  ctx.later if ctx.defer is not None else None)
        except (OSError, CniError) as exc:
            errors.append(f"veth {rec.host_veth}: {exc}")
    if rec.chain:
        try:
            masq.teardown(rec.chain, rec.addresses())
        except (OSError, masq.NftError) as exc:
            errors.append(f"nft chain {rec.chain}: {exc}")
    store = ipam.Store(os.path.dirname(rec.ipam_dir), os.path.basename(rec.ipam_dir))
    try:
        with store.locked():
            for ip in rec.addresses():
                store.release(ip, rec.container_id, rec.ifname)
    except OSError as exc:
        errors.append(f"reservations in {rec.ipam_dir}: {exc}")
    if errors:
        raise CniError(INTERNAL, f"cleanup of {rec.container_id}/{rec.ifname} incomplete",
                       "; ".join(errors))
    state.drop_record(data_dir, rec.network, rec.container_id, rec.ifname)
