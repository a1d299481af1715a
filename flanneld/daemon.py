"""The flanneld daemon: lease, backend and rules wired together as one reconciler.

Start-up (better than flannel, which writes subnet.env before any peer is
programmed): network config from etcd -> external interface -> backend ->
lease -> the watch's first snapshot -> a full reconcile of every peer ->
nftables rules -> subnet.env -> CNI server -> ready.

After that one loop (flanneld.reconciler) serves everything: each lease event
triggers an incremental reconcile, every --resync-interval a full one, and a
failed run is retried in full. Why we are not ready is worded by
flanneld.readiness.

Stopping (SIGTERM/SIGINT) leaves the data plane, subnet.env and the etcd lease
in place, so a restart is hitless.
"""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
import logging
import time
from collections.abc import Callable
from typing import Any

from core.lease import Lease, LeaseAttrs, PeerKey, is_peer
from flanneld import __version__, iface
from flanneld.backoff import Backoff
from flanneld.events import LeaseEvent, apply_event, note_change
from flanneld.health import HealthServer, Readiness
from flanneld.loop_plan import RETRY_FIRST
from flanneld.manager import SubnetManager
from flanneld.metrics import Metrics
from flanneld.options import Options
from flanneld.readiness import config_reason, lease_reason, not_ready_reason
from flanneld.reconciler import Reconciler

log = logging.getLogger("flanneld")

RETRY_CAP = 10.0  # start-up retries (config, lease) back off from RETRY_FIRST (flannel: 1 s)


class FatalError(RuntimeError):
    """Start-up cannot go on (no usable interface, backend failure); exit 1."""


class Daemon(Reconciler):
    """Start-up, our lease, the lease watch, readiness and stop, around the reconcile loop."""

    def __init__(self, opts: Options) -> None:
        self.manager: SubnetManager | None = None
        super().__init__(opts, Metrics(status=self._status, has_lease=self._has_lease))
        self.readiness = Readiness(compute=self._readiness_reason, detail=self._backend_detail)
        self.metrics.ready.set_function(lambda: 0.0 if self.readiness.reason else 1.0)
        self._synced = asyncio.Event()  # the watch delivered its first snapshot
        self._phase: str | None = "starting"  # start-up step while not yet ready
        self._health: HealthServer | None = None
        self._cni: Any = None
        self._tasks: list[asyncio.Task[Any]] = []

    # -- helpers ------------------------------------------------------------------------

    def _status(self) -> Any:
        return self.manager.status if self.manager is not None else None

    def _has_lease(self) -> bool:
        return self.manager is not None and self.manager.lease is not None

    def _backoff(self) -> Backoff:
        return Backoff(RETRY_FIRST, RETRY_CAP)

    def _not_ready(self, phase: str) -> None:
        self._phase = phase
        self._update_readiness()

    async def _retry(self, what: str, op: Callable[[], Any],
                     reason: Callable[[Exception], str]) -> Any:
        """Run `op` until it succeeds, showing why not in /readyz (flannel retries too)."""
        backoff = self._backoff()
        while True:
            try:
                return await op()
            except (asyncio.CancelledError, FatalError):
                raise
            except Exception as exc:
                why = reason(exc)
                self._not_ready(why)
                delay = backoff.next()
                log.warning("%s: %s (retrying in %.0fs)", what, why, delay)
                await asyncio.sleep(delay)

    # -- start-up -----------------------------------------------------------------------

    async def start(self) -> None:
        o = self.opts
        if o.healthz_port:
            self._health = HealthServer(o.healthz_ip, o.healthz_port, self.readiness,
                                        self.metrics.render).start()
            log.info("serving /healthz, /readyz, /metrics on %s:%d", o.healthz_ip,
                     self._health.port)
        o.state_dir.mkdir(parents=True, exist_ok=True)
        self.manager = manager = _make_manager(o)
        self._not_ready(f"waiting for the network config at {o.etcd_prefix}/config")
        self.config = await self._retry("network config", manager.get_network_config,
                                        config_reason)
        cfg = self.config
        log.info("network %s, subnets /%d%s, backend %s", cfg.ipv4_network or "(IPv6-only)",
                 cfg.subnet_len, f", IPv6 {cfg.ipv6_network} /{cfg.ipv6_subnet_len}"
                 if cfg.enable_ipv6 else "", cfg.backend_type)

        self._not_ready("choosing the external interface")
        try:
            choice = await self._in_netlink(
                iface.discover, iface=o.iface, iface_regex=o.iface_regex,
                can_reach=o.iface_can_reach, public_ip=o.public_ip, public_ipv6=o.public_ipv6,
                ipv4=cfg.enable_ipv4, ipv6=cfg.enable_ipv6)
        except iface.IfaceError as exc:
            raise FatalError(str(exc)) from None
        log.info("using interface %s (index %d, %s, mtu %d), public IP %s%s, chosen by %s",
                 choice.name, choice.index, choice.address, choice.mtu, choice.public_ip,
                 f", public IPv6 {choice.public_ipv6}" if choice.public_ipv6 else "",
                 choice.how)

        self._not_ready(f"setting up the {cfg.backend_type} backend")
        from backends import create_backend
        from backends.base import ExternalInterface

        ext = ExternalInterface(choice.name, choice.index, choice.address, choice.mtu,
                                choice.public_ip, choice.public_ipv6)
        try:
            self.backend = backend = await self._in_netlink(
                create_backend, cfg, ext, o.state_dir, wireguard_userspace=o.wireguard_userspace)
            attrs = await self._in_netlink(backend.lease_attrs)
        except Exception as exc:
            raise FatalError(f"{cfg.backend_type} backend on {choice.name}: {exc}") from exc
        self.metrics.info.labels(version=__version__, backend=cfg.backend_type).set(1)

        from core.subnetenv import read_previous_subnets

        previous, previous6 = read_previous_subnets(o.subnet_file)
        self._not_ready("acquiring a subnet lease")
        self.own = await self._retry(
            "lease", lambda: manager.acquire(attrs, previous, previous_ipv6=previous6),
            lease_reason)
        assert self.own is not None
        log.info("leased %s (previous %s)", self.own.key,
                 " and ".join(str(p) for p in (previous, previous6) if p) or "none")
        self.metrics.lease_changes.inc()
        self._spawn(self._hold(attrs), "hold")

        self._not_ready("waiting for the lease list from etcd")
        self._spawn(self._watch(), "watch")
        await self._synced.wait()
        self._not_ready(f"programming {len(self.peers)} peers")
        self._kwatch.start(asyncio.get_running_loop(), ipv6=cfg.enable_ipv6)
        # Our own writes are no drift: without this every lease event made the next
        # resync tick dump the kernel, and events arriving meanwhile waited for it.
        self._kwatch.ignore_own(backend.netlink_portid, lambda: backend.dev_index)
        backend.on_fdb_write = self._kwatch.expect_fdb
        # A live peer held our VtepMAC and the backend changed ours: publish it (thread-safe).
        loop = asyncio.get_running_loop()
        backend.on_lease_attrs = lambda new: loop.call_soon_threadsafe(self._republish, attrs, new)
        self._kwatch.routing.take()
        self._kwatch.nftables.take()
        while not await self._reconcile(full=True):
            await asyncio.sleep(RETRY_FIRST)
        await self._ensure_rules(initial=True)
        self._write_subnet_env()
        # Ready means pods can be served: the CNI socket exists before /readyz says 200.
        self._spawn(self._loop(), "reconcile")  # events keep flowing meanwhile
        self._not_ready("starting the CNI server")
        await self._start_cni()
        self._phase = None
        self._update_readiness()
        log.info("ready: %s programmed, %d peers", self.own.key, len(self.peers))

    async def _start_cni(self) -> None:
        if self.opts.cni_socket is None:
            return
        try:
            from flanneld.cni_server import CniServer
        except ImportError as exc:
            log.debug("CNI server not available (%s); skipping", exc)
            return
        self._cni = CniServer(self.opts.cni_socket)
        # Its start loads the plugin's modules: off the event loop, which is serving events.
        started = await asyncio.to_thread(self._cni.start)
        if inspect.isawaitable(started):
            await started
        log.info("CNI server listening on %s", self.opts.cni_socket)

    def _spawn(self, coro: Any, name: str) -> None:
        task = asyncio.create_task(coro, name=name)
        task.add_done_callback(self._task_done)
        self._tasks.append(task)

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        if not task.cancelled() and task.exception() is not None:
            log.error("task %s died: %r", task.get_name(), task.exception(),
                      exc_info=task.exception())

    # -- lease and watch ----------------------------------------------------------------

    async def _hold(self, attrs: Any) -> None:
        assert self.manager is not None
        backoff = self._backoff()
        while True:  # hold() runs forever; if it fails, our lease would silently expire
            try:
                await self.manager.hold(attrs, self._on_lease_change)
            except asyncio.CancelledError:
                raise
            except Exception:
                delay = backoff.next()
                log.exception("keeping our lease failed; restarting in %.0fs", delay)
                await asyncio.sleep(delay)

    def _republish(self, attrs: LeaseAttrs, new: LeaseAttrs) -> None:
        self.metrics.vtep_mac_conflicts.inc()  # the one reason a backend changes its data
        assert self.manager is not None
        self.manager.republish(dataclasses.replace(attrs, backend_data=new.backend_data,
                                                   backend_v6_data=new.backend_v6_data))

    async def _on_lease_change(self, lease: Lease | None) -> None:
        if lease is None:
            self._update_readiness()
            return
        old, self.own = self.own, lease
        self.metrics.lease_changes.inc()
        if old is None or old.key != lease.key:
            log.warning("our subnet changed: %s -> %s", old and old.key, lease.key)
            self._own_changed = True
            self._drop_own()
        else:
            log.info("lease %s re-acquired", lease.key)
        self._full_needed = True
        self._wake.set()

    def _own_subnet(self) -> PeerKey | None:
        return self.own.peer_key if self.own is not None else None

    def _drop_own(self) -> None:
        """Our new subnet may still be in the peer map as someone's old lease."""
        own = self._own_subnet()
        for subnet in [s for s in self.peers if not is_peer(s, own)]:
            del self.peers[subnet]

    async def _watch(self) -> None:
        assert self.manager is not None
        backoff = self._backoff()
        while True:
            try:
                async for event in self.manager.watch(self._own_subnet):
                    self._on_event(event)
                    backoff.reset()
                log.warning("lease watch ended; restarting it")
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                delay = backoff.next()
                log.warning("lease watch failed: %s (restarting in %.0fs)", exc, delay)
                await asyncio.sleep(delay)

    def _on_event(self, event: LeaseEvent) -> None:
        """The watch never hands us our own lease (flanneld.events.PeerView)."""
        self.metrics.lease_events.labels(kind=event.kind).inc()
        log.debug("lease event: %s", event)
        note_change(self._changes, self.peers, event)
        apply_event(self.peers, event)
        self.metrics.peers_known.set(len(self.peers))
        if event.kind == "snapshot":
            self._changes.clear()  # the full run it asks for hands the backend every peer
            self._full_needed = True
            self._synced.set()
        self._pending.append(time.perf_counter())
        self._wake.set()

    def _readiness_reason(self) -> str | None:
        """Why we are not ready, or None; evaluated at every /readyz (any thread)."""
        return not_ready_reason(self._phase, self._status(), self._reconcile_error)

    def _backend_detail(self) -> str | None:
        """How the backend runs, where that is a choice (wireguard: kernel or wireguard-go)."""
        backend = getattr(self, "backend", None)
        mode = getattr(backend, "mode", None)
        return f"{backend.backend_type}: {mode}" if backend is not None and mode else None

    def _update_readiness(self) -> None:
        """Evaluate readiness now, so transitions are logged and the gauge follows."""
        _ = self.readiness.reason

    # -- shutdown -----------------------------------------------------------------------

    async def stop(self) -> None:
        """Stop everything we run; leave the data plane, subnet.env and the lease alone.

        Each step is independent: one failing must not keep the others from running."""
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        loop = asyncio.get_running_loop()
        steps: list[tuple[str, Callable[[], Any]]] = [
            ("kernel watch", lambda: self._kwatch.stop(loop))]
        if self._cni is not None:
            steps.append(("CNI server", self._cni.stop))
        if self._health is not None:
            steps.append(("health server", self._health.stop))
        if (manager := self.manager) is not None:
            steps.append(("subnet manager", lambda: asyncio.wait_for(manager.close(), 5)))
        if (backend := self.backend) is not None:
            steps.append(("backend", lambda: self._in_netlink(backend.close)))
        for what, step in steps:
            try:
                done = step()
                if inspect.isawaitable(done):
                    await done
            except Exception as exc:
                log.warning("stopping the %s: %r", what, exc)
        self._netlink.shutdown(wait=False)


def renew_interval(ttl: int, margin_minutes: int) -> float:
    """Keepalive period: TTL/3 (at most 5 min), and never closer than the margin to expiry."""
    default = min(max(ttl / 3, 0.2), 300.0)
    room = ttl - margin_minutes * 60
    return min(default, room) if room > 0 else default


def _make_manager(o: Options) -> SubnetManager:
    from flanneld.subnet_manager import EtcdSubnetManager

    def s(p: Any) -> str | None:
        return str(p) if p is not None else None

    return EtcdSubnetManager(
        list(o.etcd_endpoints), o.etcd_prefix, ttl=o.subnet_lease_ttl,
        username=o.etcd_username, password=o.etcd_password, cafile=s(o.etcd_cafile),
        certfile=s(o.etcd_certfile), keyfile=s(o.etcd_keyfile),
        renew_interval=renew_interval(o.subnet_lease_ttl, o.subnet_lease_renew_margin))
