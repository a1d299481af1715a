"""flanneld's Prometheus metrics, on a registry of our own (docs/metrics.md lists them).

Counters the daemon drives are plain prometheus-client metrics. Figures the
subnet manager keeps (watch restarts, rejected leases, lease expiry, ...) are
read from its `status` at scrape time by a collector, so there is one source
of truth and nothing to copy.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector

from backends.base import KINDS

NS = "flanneld"
# Event-to-kernel delay: fine-grained in ms, as one netlink round is ~0.3 ms.
DELAY_BUCKETS = (0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.0125, 0.015, 0.0175,
                 0.02, 0.025, 0.03, 0.05, 0.075, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0)
RECONCILE_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
                     2.5, 5.0, 10.0)


class _StatusCollector(Collector):
    """Exports the subnet manager's status object, read when scraped."""

    def __init__(self, status: Callable[[], Any],
                 has_lease: Callable[[], bool] | None = None) -> None:
        self._status = status
        self._has_lease = has_lease or (lambda: True)

    def collect(self) -> Iterator[Metric]:
        st = self._status()
        if st is None:
            return
        for name, attr, doc in (
                ("etcd_watch_restarts", "watch_restarts", "Times the etcd lease watch restarted"),
                ("leases_rejected", "rejected_leases", "Leases in etcd skipped as malformed"),
                ("lease_keepalive_failures", "keepalive_failures",
                 "Failed keepalives of our etcd lease")):
            value = getattr(st, attr, None)
            if value is not None:
                c = CounterMetricFamily(f"{NS}_{name}", doc)
                c.add_metric([], float(value))
                yield c
        in_use = getattr(st, "subnets_in_use", None)
        if in_use is not None:
            yield GaugeMetricFamily(f"{NS}_subnets_in_use", "Subnets leased in the network",
                                    value=float(in_use))
        expiry = getattr(st, "lease_expiry", None)
        if self._has_lease():
            # A reservation never expires: +Inf. Absent while we hold no lease.
            value = math.inf if expiry is None else float(expiry)
            yield GaugeMetricFamily(f"{NS}_lease_expiry_timestamp_seconds",
                                    "When our subnet lease expires (unix time; +Inf for a "
                                    "reservation)", value=value)


class Metrics:
    """Every metric flanneld exports, on `self.registry`."""

    def __init__(self, status: Callable[[], Any] | None = None,
                 has_lease: Callable[[], bool] | None = None) -> None:
        disable_created_metrics()  # `_created` series only double the scrape size
        r = self.registry = CollectorRegistry(auto_describe=True)
        self.peers_known = Gauge(f"{NS}_peers_known", "Peer leases known from etcd",
                                 registry=r)
        self.peers_programmed = Gauge(f"{NS}_peers_programmed",
                                      "Peers whose kernel state is programmed", registry=r)
        self.peers_unreachable = Gauge(f"{NS}_peers_unreachable",
                                       "Peers not on-link for host-gw (skipped)", registry=r)
        self.peers_skipped = Gauge(f"{NS}_peers_skipped",
                                   "Peer leases the backend could not program", registry=r)
        self.reconcile_runs = Counter(f"{NS}_reconcile_runs", "Reconcile runs",
                                      ["mode"], registry=r)
        self.reconcile_errors = Counter(f"{NS}_reconcile_errors",
                                        "Reconcile runs that failed or had errors", registry=r)
        self.reconcile_duration = Histogram(f"{NS}_reconcile_duration_seconds",
                                            "Time spent in one reconcile run", ["mode"],
                                            buckets=RECONCILE_BUCKETS, registry=r)
        self.resyncs_skipped = Counter(f"{NS}_resyncs_unchanged",
                                       "Resync ticks without a dump: the kernel announced no "
                                       "change since the last one", registry=r)
        self.repairs = Counter(f"{NS}_repairs", "Kernel entries found missing or wrong and "
                               "repaired", ["kind"], registry=r)
        self.event_to_kernel = Histogram(f"{NS}_event_to_kernel_seconds",
                                         "Delay from receiving a lease event to the kernel "
                                         "being programmed", buckets=DELAY_BUCKETS, registry=r)
        self.lease_events = Counter(f"{NS}_lease_events", "Lease events received from etcd",
                                    ["kind"], registry=r)
        self.lease_changes = Counter(f"{NS}_lease_acquisitions",
                                     "Times our own lease was acquired or replaced", registry=r)
        self.vtep_mac_conflicts = Counter(
            f"{NS}_vtep_mac_conflicts", "Times a live peer lease held our VtepMAC and we "
            "changed ours (a node cloned with its state directory?)", registry=r)
        self.ready = Gauge(f"{NS}_ready", "1 when /readyz answers 200", registry=r)
        self.last_reconcile = Gauge(f"{NS}_last_successful_reconcile_timestamp_seconds",
                                    "Unix time of the last successful reconcile", registry=r)
        self.info = Gauge(f"{NS}_build_info", "Version and backend of this daemon",
                          ["version", "backend"], registry=r)
        ProcessCollector(registry=r)
        if status is not None:
            r.register(_StatusCollector(status, has_lease))
        for kind in (*KINDS, "nft"):  # both families' entries, and the nftables tables
            self.repairs.labels(kind=kind)  # export zeros, so rates work from the start
        for mode in ("full", "incremental"):
            self.reconcile_runs.labels(mode=mode)

    def render(self) -> bytes:
        return generate_latest(self.registry)
