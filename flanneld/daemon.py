"""The flanneld daemon: lease, backend and rules wired together as one reconciler.

Start-up (better than flannel, which writes subnet.env before any peer is
programmed): network config from etcd -> external interface -> backend ->
lease -> the watch's first snapshot -> a full reconcile of every peer ->
nftables rules -> subnet.env -> CNI server -> ready.

After that one loop serves everything: each lease event triggers an incremental
reconcile (bursts coalesce into one run), every --resync-interval a full one
(the backend dumps the kernel and repairs drift), and a failed run is retried
in full. Backend calls are synchronous netlink, run on one worker thread so
they are serialised and never block the event loop.

Stopping (SIGTERM/SIGINT) leaves the data plane, subnet.env and the etcd lease
in place, so a restart is hitless.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from ipaddress import IPv4Network
from typing import Any, TypeVar

from flanneld import __version__, iface, masq
from flanneld.events import LeaseEvent, apply_event
from flanneld.health import HealthServer, Readiness
from flanneld.kwatch import KernelWatch
from flanneld.lease import Lease
from flanneld.metrics import Metrics
from flanneld.options import Options

log = logging.getLogger("flanneld")
T = TypeVar("T")

RETRY_FIRST, RETRY_CAP = 1.0, 10.0  # start-up retries (config, lease): flannel waits 1 s
FORCE_FULL_EVERY = 30  # resync ticks: a full dump at least this often, changes or not


class FatalError(RuntimeError):
    """Start-up cannot go on (no usable interface, backend failure); exit 1."""


class Daemon:
    def __init__(self, opts: Options) -> None:
        self.opts = opts
        self.manager: Any = None
        self.backend: Any = None
        self.config: Any = None
        self.own: Lease | None = None
        self.peers: dict[IPv4Network, Lease] = {}
        self.metrics = Metrics(status=self._status, has_lease=self._has_lease)
        self.readiness = Readiness(compute=self._readiness_reason)
        self.metrics.ready.set_function(lambda: 0.0 if self.readiness.reason else 1.0)
        self._netlink = ThreadPoolExecutor(1, thread_name_prefix="netlink")
        self._wake = asyncio.Event()
        self._synced = asyncio.Event()  # the watch delivered its first snapshot
        self._pending: list[float] = []  # receive times of events not yet in the kernel
        self._full_needed = True
        self._own_changed = False
        self._reconcile_error: str | None = None
        self._phase: str | None = "starting"  # start-up step while not yet ready
        self._rules: masq.RuleParams | None = None
        self._health: HealthServer | None = None
        self._cni: Any = None
        self._tasks: list[asyncio.Task[Any]] = []
        self._kwatch = KernelWatch()

    # -- helpers ------------------------------------------------------------------------

    def _status(self) -> Any:
        return getattr(self.manager, "status", None)

    def _has_lease(self) -> bool:
        return getattr(self.manager, "lease", None) is not None

    async def _in_netlink(self, fn: Callable[..., T], *args: Any, **kw: Any) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._netlink, partial(fn, *args, **kw))

    def _not_ready(self, phase: str) -> None:
        self._phase = phase
        self._update_readiness()

    async def _retry(self, what: str, op: Callable[[], Any],
                     reason: Callable[[Exception], str]) -> Any:
        """Run `op` until it succeeds, showing why not in /readyz (flannel retries too)."""
        delay = RETRY_FIRST
        while True:
            try:
                return await op()
            except (asyncio.CancelledError, FatalError):
                raise
            except Exception as exc:
                why = reason(exc)
                self._not_ready(why)
                log.warning("%s: %s (retrying in %.0fs)", what, why, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, RETRY_CAP)

    # -- start-up -----------------------------------------------------------------------

    async def start(self) -> None:
        o = self.opts
        if o.healthz_port:
            self._health = HealthServer(o.healthz_ip, o.healthz_port, self.readiness,
                                        self.metrics.render).start()
            log.info("serving /healthz, /readyz, /metrics on %s:%d", o.healthz_ip,
                     self._health.port)
        o.state_dir.mkdir(parents=True, exist_ok=True)
        self.manager = _make_manager(o)
        self._not_ready(f"waiting for the network config at {o.etcd_prefix}/config")
        self.config = await self._retry("network config", self.manager.get_network_config,
                                        self._config_reason)
        cfg = self.config
        log.info("network %s, subnets /%d, backend %s", cfg.network, cfg.subnet_len,
                 cfg.backend_type)

        self._not_ready("choosing the external interface")
        try:
            choice = await self._in_netlink(
                iface.discover, iface=o.iface, iface_regex=o.iface_regex,
                can_reach=o.iface_can_reach, public_ip=o.public_ip)
        except iface.IfaceError as exc:
            raise FatalError(str(exc)) from None
        log.info("using interface %s (index %d, %s, mtu %d), public IP %s, chosen by %s",
                 choice.name, choice.index, choice.address, choice.mtu, choice.public_ip,
                 choice.how)

        self._not_ready(f"setting up the {cfg.backend_type} backend")
        from backends import create_backend
        from backends.base import ExternalInterface

        ext = ExternalInterface(choice.name, choice.index, choice.address, choice.mtu,
                                choice.public_ip)
        try:
            self.backend = await self._in_netlink(create_backend, cfg, ext, o.state_dir)
            attrs = await self._in_netlink(self.backend.lease_attrs)
        except Exception as exc:
            raise FatalError(f"{cfg.backend_type} backend on {choice.name}: {exc}") from exc
        self.metrics.info.labels(version=__version__, backend=cfg.backend_type).set(1)

        from flanneld.subnetenv import read_previous_subnet

        previous = read_previous_subnet(o.subnet_file)
        self._not_ready("acquiring a subnet lease")
        self.own = await self._retry(
            "lease", lambda: self.manager.acquire(attrs, previous), self._lease_reason)
        assert self.own is not None
        log.info("leased %s (previous %s)", self.own.subnet, previous or "none")
        self.metrics.lease_changes.inc()
        self._spawn(self._hold(attrs), "hold")

        self._not_ready("waiting for the lease list from etcd")
        self._spawn(self._watch(), "watch")
        await self._synced.wait()
        self._not_ready(f"programming {len(self.peers)} peers")
        self._kwatch.start(asyncio.get_running_loop())
        # Our own writes are no drift: without this every lease event made the next
        # resync tick dump the kernel, and events arriving meanwhile waited for it.
        self._kwatch.ignore_own(getattr(self.backend, "netlink_portid", 0),
                                lambda: getattr(self.backend, "dev_index", 0))
        if hasattr(self.backend, "on_fdb_write"):
            self.backend.on_fdb_write = self._kwatch.expect_fdb
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
        log.info("ready: %s programmed, %d peers", self.own.subnet, len(self.peers))

    def _config_reason(self, exc: Exception) -> str:
        from flanneld.config import ConfigError

        if isinstance(exc, ConfigError):
            return f"bad network config: {exc}"
        return _etcd_reason(exc)

    def _lease_reason(self, exc: Exception) -> str:
        return _etcd_reason(exc) if _is_connection_error(exc) else str(exc)

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
        delay = RETRY_FIRST
        while True:  # hold() runs forever; if it fails, our lease would silently expire
            try:
                await self.manager.hold(attrs, self._on_lease_change)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("keeping our lease failed; restarting in %.0fs", delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, RETRY_CAP)

    async def _on_lease_change(self, lease: Lease | None) -> None:
        if lease is None:
            self._update_readiness()
            return
        old, self.own = self.own, lease
        self.metrics.lease_changes.inc()
        if old is None or old.subnet != lease.subnet:
            log.warning("our subnet changed: %s -> %s", old and old.subnet, lease.subnet)
            self._own_changed = True
            self.peers.pop(lease.subnet, None)
        else:
            log.info("lease %s re-acquired", lease.subnet)
        self._full_needed = True
        self._wake.set()

    def _own_subnet(self) -> IPv4Network | None:
        return self.own.subnet if self.own is not None else None

    async def _watch(self) -> None:
        delay = RETRY_FIRST
        while True:
            try:
                async for event in self.manager.watch(self._own_subnet):
                    self._on_event(event)
                    delay = RETRY_FIRST
                log.warning("lease watch ended; restarting it")
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("lease watch failed: %s (restarting in %.0fs)", exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, RETRY_CAP)

    def _on_event(self, event: LeaseEvent) -> None:
        self.metrics.lease_events.labels(kind=event.kind).inc()
        own = self._own_subnet()
        if event.kind != "snapshot" and event.lease is not None and event.lease.subnet == own:
            return  # our own key: the hold task deals with it
        log.debug("lease event: %s", event)
        apply_event(self.peers, event)
        if own is not None:
            self.peers.pop(own, None)
        self.metrics.peers_known.set(len(self.peers))
        if event.kind == "snapshot":
            self._full_needed = True
            self._synced.set()
        self._pending.append(time.perf_counter())
        self._wake.set()

    # -- the reconcile loop -------------------------------------------------------------

    async def _loop(self) -> None:
        """Events -> incremental runs; every resync tick -> a full run if the kernel
        announced changes (or one is overdue); failures -> a full run soon."""
        loop = asyncio.get_running_loop()
        interval = self.opts.resync_interval
        next_tick = loop.time() + interval
        last_full = loop.time()
        while True:
            timeout = next_tick - loop.time()
            if timeout > 0:
                try:
                    await asyncio.wait_for(self._wake.wait(), timeout)
                except TimeoutError:
                    pass
            self._wake.clear()
            await asyncio.sleep(0)  # let the watch hand over events already received
            now = loop.time()
            tick = now >= next_tick
            if tick:
                next_tick = now + interval
            overdue = tick and now - last_full >= FORCE_FULL_EVERY * interval
            # take() clears the flag before the dump: later changes mark it again.
            changed = self._kwatch.routing.take() if tick or self._full_needed else False
            full = self._full_needed or overdue or changed
            ok = True
            if full or self._pending:
                ok = await self._reconcile(full=full)
                if full:
                    last_full = now
            elif tick:
                self.metrics.resyncs_skipped.inc()
            if tick and (self._kwatch.nftables.take() or overdue):
                await self._ensure_rules()
            elif self._rules is not None and self._rules != self._wanted_rules():
                await self._ensure_rules()  # our subnet changed
            if self._own_changed and ok:
                self._own_changed = False
                self._write_subnet_env()
            if not ok:  # retry soon, in full
                next_tick = min(next_tick, loop.time() + min(RETRY_FIRST, interval))
            self._update_readiness()

    async def _reconcile(self, *, full: bool) -> bool:
        own = self.own
        assert own is not None and self.backend is not None
        covered, self._pending = self._pending, []
        peers = list(self.peers.values())
        mode = "full" if full else "incremental"
        self._full_needed = False
        t0 = time.perf_counter()
        try:
            result = await self._in_netlink(self.backend.reconcile, own, peers, full=full)
        except Exception as exc:
            log.exception("%s reconcile failed", mode)
            return self._reconcile_failed(f"reconcile failed: {exc}", covered)
        done = time.perf_counter()
        m = self.metrics
        m.reconcile_runs.labels(mode=mode).inc()
        m.reconcile_duration.labels(mode=mode).observe(done - t0)
        for kind, n in result.repaired.items():
            m.repairs.labels(kind=kind).inc(n)
        m.peers_programmed.set(result.programmed_peers)
        m.peers_unreachable.set(len(result.unreachable))
        m.peers_skipped.set(len(result.skipped))
        if result.repaired:
            log.warning("repaired drift: %s", result.summary())
        elif result.changed:
            log.info("%s reconcile: %s", mode, result.summary())
        else:
            log.debug("%s reconcile: %s", mode, result.summary())
        if result.errors:
            for err in result.errors:
                log.warning("reconcile: %s", err)
            return self._reconcile_failed(
                f"reconcile had {len(result.errors)} errors: {result.errors[0]}", covered)
        for t in covered:
            m.event_to_kernel.observe(done - t)
        m.last_reconcile.set(time.time())
        self._reconcile_error = None
        return True

    def _reconcile_failed(self, reason: str, covered: list[float]) -> bool:
        self.metrics.reconcile_errors.inc()
        self._reconcile_error = reason
        self._pending = covered + self._pending  # their delay runs until a run succeeds
        self._full_needed = True
        self._update_readiness()
        return False

    def _wanted_rules(self) -> masq.RuleParams:
        assert self.own is not None and self.config is not None
        return masq.RuleParams(
            network=self.config.network, subnet=self.own.subnet,
            masquerade=self.opts.ip_masq, forward=self.opts.iptables_forward_rules,
            fully_random=not self.opts.ip_masq_fully_random_disable)

    async def _ensure_rules(self, *, initial: bool = False) -> None:
        want = self._wanted_rules()
        changed_params = want != self._rules
        try:
            wrote = await asyncio.to_thread(masq.ensure, want)
        except masq.NftError as exc:
            log.error("nftables: %s", exc)
            self.metrics.reconcile_errors.inc()
            return
        self._rules = want
        if wrote and not initial and not changed_params:
            log.warning("nftables table ip %s was missing or altered: re-applied", masq.TABLE)
            self.metrics.repairs.labels(kind="nft").inc()

    def _write_subnet_env(self) -> None:
        from flanneld.subnetenv import SubnetEnv, write_subnet_env

        assert self.own is not None
        env = SubnetEnv.for_lease(self.config.network, self.own.subnet, self.backend.mtu,
                                  self.opts.ip_masq)
        write_subnet_env(self.opts.subnet_file, env)
        log.info("wrote %s (FLANNEL_SUBNET=%s, FLANNEL_MTU=%d)", self.opts.subnet_file,
                 env.subnet, env.mtu)

    def _readiness_reason(self) -> str | None:
        """Why we are not ready, or None; evaluated at every /readyz (any thread)."""
        status = self._status()
        if self._phase is not None:  # starting: the step, or what holds it up
            # Any etcd error (unreachable, refused credentials, out of subnets) says more
            # than the step it holds up; the manager clears it once the step succeeds.
            err = getattr(status, "last_error", None)
            return f"{self._phase}: {err}" if err else str(self._phase)
        return _manager_problem(status) or self._reconcile_error

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
        if self.manager is not None:
            steps.append(("subnet manager", lambda: asyncio.wait_for(self.manager.close(), 5)))
        if self.backend is not None:
            steps.append(("backend", lambda: self._in_netlink(self.backend.close)))
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


def _make_manager(o: Options) -> Any:
    from flanneld.subnet_manager import EtcdSubnetManager

    def s(p: Any) -> str | None:
        return str(p) if p is not None else None

    return EtcdSubnetManager(
        list(o.etcd_endpoints), o.etcd_prefix, ttl=o.subnet_lease_ttl,
        username=o.etcd_username, password=o.etcd_password, cafile=s(o.etcd_cafile),
        certfile=s(o.etcd_certfile), keyfile=s(o.etcd_keyfile),
        renew_interval=renew_interval(o.subnet_lease_ttl, o.subnet_lease_renew_margin))


def _is_connection_error(exc: BaseException) -> bool:
    try:
        from flanneld.etcd import EtcdUnavailable, is_connection_error
    except ImportError:
        return isinstance(exc, ConnectionError)
    return isinstance(exc, EtcdUnavailable) or is_connection_error(exc)


def _etcd_reason(exc: Exception) -> str:
    if _is_connection_error(exc):
        return f"etcd unreachable: {exc or type(exc).__name__}"
    return f"{type(exc).__name__}: {exc}"


def _manager_problem(status: Any) -> str | None:
    """Why the subnet manager's state makes us not ready, or None when it is fine."""
    if status is None:
        return None
    state = getattr(status, "state", "held")
    if state == "held":
        return None
    err = getattr(status, "last_error", None)
    state = str(state).replace("-", " ")  # "etcd-unreachable" -> "etcd unreachable"
    return f"{state}: {err}" if err else state
