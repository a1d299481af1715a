"""The reconcile loop: our lease and the peers' leases -> kernel, nftables rules, subnet.env.

Each lease event triggers an incremental reconcile (bursts coalesce into one run),
every --resync-interval a full one when the kernel announced changes (the backend
dumps the kernel and repairs drift) or one is overdue, and a failed run is retried
in full. Backend calls are synchronous netlink, run on one worker thread so they
are serialised and never block the event loop.

flanneld.daemon.Daemon builds on this class: it fills `config`, `backend`, `own`
and `peers`, and wakes the loop on lease events.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any, TypeVar

from backends.base import Backend, IncrementalBackend
from core.config import NetworkConfig
from core.lease import Lease, PeerKey
from flanneld import masq, memtrim
from flanneld.kwatch import KernelWatch
from flanneld.loop_plan import Wake, looks_at_kernel, next_tick, plan
from flanneld.metrics import Metrics
from flanneld.neightables import NeighTableWatch
from flanneld.options import Options

log = logging.getLogger("flanneld")
T = TypeVar("T")



class Reconciler:
    """The reconcile loop and the state it keeps; flanneld.daemon.Daemon subclasses it."""

    def __init__(self, opts: Options, metrics: Metrics) -> None:
        self.opts = opts
        self.metrics = metrics
        self.backend: Backend | None = None
        self.config: NetworkConfig | None = None
        self.own: Lease | None = None
        self.peers: dict[PeerKey, Lease] = {}
        # What changed among the peers since the backend's last run (lease key -> lease,
        # None: gone; flanneld.events.note_change): an incremental run hands over only this.
        self._changes: dict[str, Lease | None] = {}
        self._netlink = ThreadPoolExecutor(1, thread_name_prefix="netlink")
        self._wake = asyncio.Event()
        self._pending: list[float] = []  # receive times of events not yet in the kernel
        self._full_needed = True
        self._own_changed = False
        self._reconcile_error: str | None = None
        self._rules: masq.RuleParams | None = None
        self._kwatch = KernelWatch()
        self._neigh: NeighTableWatch | None = None

    async def _in_netlink(self, fn: Callable[..., T], *args: Any, **kw: Any) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._netlink, partial(fn, *args, **kw))

    def _update_readiness(self) -> None:
        """Hook: a run's outcome may have changed readiness (the daemon re-evaluates it)."""

    def _drift_unannounced(self) -> bool:
        return self.backend is not None and self.backend.drift_unannounced

    # -- the reconcile loop -------------------------------------------------------------

    async def _loop(self) -> None:
        """Wake on events or at the resync tick, and do what loop_plan.plan decides."""
        loop = asyncio.get_running_loop()
        interval = self.opts.resync_interval
        tick_at = loop.time() + interval
        last_full = loop.time()
        while True:
            timeout = tick_at - loop.time()
            if timeout > 0:
                try:
                    await asyncio.wait_for(self._wake.wait(), timeout)
                except TimeoutError:
                    pass
            self._wake.clear()
            await asyncio.sleep(0)  # let the watch hand over events already received
            now = loop.time()
            tick = now >= tick_at
            if tick:
                tick_at = now + interval
            kw = self._kwatch
            step = plan(Wake(
                tick=tick, since_full=now - last_full, interval=interval,
                full_needed=self._full_needed, pending=bool(self._pending),
                kernel_changed=(kw.routing.take() if looks_at_kernel(tick, self._full_needed)
                                else False) or (tick and self._drift_unannounced()),
                nft_changed=kw.nftables.take() if tick else False,
                rules_stale=self._rules is not None and self._rules != self._wanted_rules()))
            ok = True
            if step.run in ("full", "incremental"):
                ok = await self._reconcile(full=step.run == "full")
                if step.run == "full":
                    last_full = now
            elif step.run == "skip":
                self.metrics.resyncs_skipped.inc()
            if step.rules:
                await self._ensure_rules()
            if self._own_changed and ok:
                self._own_changed = False
                self._write_subnet_env()
            tick_at = next_tick(tick_at, loop.time(), interval, ok)
            self._update_readiness()

    async def _reconcile(self, *, full: bool) -> bool:
        own = self.own
        assert own is not None and self.backend is not None
        covered, self._pending = self._pending, []
        changes, self._changes = self._changes, {}
        mode = "full" if full else "incremental"
        self._full_needed = False
        t0 = time.perf_counter()
        try:
            if not full and isinstance(self.backend, IncrementalBackend):
                # O(changes): no list of every peer (the backend keeps the set it was given).
                result = await self._in_netlink(self.backend.reconcile_changes, own, changes)
            else:  # a failed run is followed by a full one, so `changes` may be dropped
                peers = list(self.peers.values())
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
        if full and self.config is not None:
            if self._neigh is None:
                self._neigh = NeighTableWatch(self.config.enable_ipv4, self.config.enable_ipv6)
            await self._in_netlink(self._neigh.check, result.programmed_peers)
        if full:
            await self._in_netlink(memtrim.release, len(self.peers))
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
        cfg, own = self.config, self.own
        v4 = cfg.enable_ipv4 and own.ipv4_subnet is not None
        v6 = cfg.enable_ipv6 and own.ipv6_subnet is not None
        return masq.RuleParams(
            network=cfg.ipv4_network if v4 else None, subnet=own.ipv4_subnet if v4 else None,
            ipv6_network=cfg.ipv6_network if v6 else None,
            ipv6_subnet=own.ipv6_subnet if v6 else None,
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
            log.warning("nftables %s was missing or altered: re-applied",
                        " and ".join(f"table {t}" for t in wrote))
            self.metrics.repairs.labels(kind="nft").inc()

    def _write_subnet_env(self) -> None:
        from core.subnetenv import SubnetEnv, write_subnet_env

        assert self.own is not None and self.config is not None and self.backend is not None
        cfg, own = self.config, self.own
        env = SubnetEnv.for_lease(cfg.ipv4_network, own.ipv4_subnet, self.backend.mtu,
                                  self.opts.ip_masq, cfg.ipv6_network if cfg.enable_ipv6
                                  else None, own.ipv6_subnet)
        write_subnet_env(self.opts.subnet_file, env)
        log.info("wrote %s (FLANNEL_SUBNET=%s, FLANNEL_IPV6_SUBNET=%s, FLANNEL_MTU=%d)",
                 self.opts.subnet_file, env.ipv4_subnet, env.ipv6_subnet, env.mtu)
