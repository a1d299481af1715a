"""/healthz, /readyz and /metrics on loopback, and the metric names docs/metrics.md lists."""

from __future__ import annotations

import math
import re
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest

from flanneld.health import HealthServer, Readiness
from flanneld.metrics import Metrics

DOCS = Path(__file__).resolve().parents[2] / "docs" / "metrics.md"
STATUS = SimpleNamespace(watch_restarts=2, rejected_leases=1, keepalive_failures=0,
                         subnets_in_use=3, lease_expiry=1_900_000_000.0)


def _get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


@pytest.fixture
def served() -> Iterator[tuple[HealthServer, Readiness, Metrics]]:
    metrics = Metrics(lambda: STATUS)
    readiness = Readiness(on_change=lambda ok: metrics.ready.set(1 if ok else 0))
    server = HealthServer("127.0.0.1", 0, readiness, metrics.render).start()
    try:
        yield server, readiness, metrics
    finally:
        server.stop()


def test_endpoints_and_readiness_transitions(
        served: tuple[HealthServer, Readiness, Metrics]) -> None:
    server, readiness, _metrics = served
    assert _get(server.port, "/healthz") == (200, "flanneld is running\n")
    assert _get(server.port, "/readyz") == (503, "flanneld is not ready: starting\n")
    readiness.set_ready()
    assert _get(server.port, "/readyz") == (200, "flanneld is ready\n")
    readiness.set_not_ready("out of subnets in 10.5.0.0/16: 255 in use")
    code, body = _get(server.port, "/readyz")
    assert code == 503 and "out of subnets in 10.5.0.0/16: 255 in use" in body
    assert _get(server.port, "/nope")[0] == 404
    assert "flanneld_ready 0.0" in _get(server.port, "/metrics")[1]


def test_readyz_carries_the_backend_detail() -> None:
    mode = ["flannel-wg: userspace (wireguard-go pid 42)"]
    readiness = Readiness(detail=lambda: f"wireguard: {mode[0]}")
    server = HealthServer("127.0.0.1", 0, readiness, lambda: b"").start()
    try:
        assert _get(server.port, "/readyz") == (
            503, "flanneld is not ready: starting\nwireguard: " + mode[0] + "\n")
        readiness.set_ready()
        mode[0] = "flannel-wg: kernel"  # read at every request, never cached
        assert _get(server.port, "/readyz") == (200, "flanneld is ready\nwireguard: "
                                                "flannel-wg: kernel\n")
    finally:
        server.stop()


def _names(exposition: str) -> set[str]:
    return {m.group(1) for m in re.finditer(r"^# TYPE (\S+) ", exposition, re.M)}


def test_metric_names_exist_and_are_documented(
        served: tuple[HealthServer, Readiness, Metrics]) -> None:
    server, _readiness, metrics = served
    metrics.event_to_kernel.observe(0.0012)
    code, text = _get(server.port, "/metrics")
    assert code == 200
    names = _names(text)
    for want in ("flanneld_peers_known", "flanneld_peers_programmed",
                 "flanneld_peers_unreachable", "flanneld_reconcile_runs_total",
                 "flanneld_reconcile_errors_total", "flanneld_reconcile_duration_seconds",
                 "flanneld_repairs_total", "flanneld_lease_expiry_timestamp_seconds",
                 "flanneld_etcd_watch_restarts_total", "flanneld_event_to_kernel_seconds",
                 "flanneld_leases_rejected_total", "process_resident_memory_bytes"):
        assert want in names, want
    assert "flanneld_etcd_watch_restarts_total 2.0" in text
    assert "flanneld_lease_expiry_timestamp_seconds 1.9e+09" in text
    assert 'flanneld_event_to_kernel_seconds_bucket{le="0.002"} 1.0' in text
    assert 'flanneld_repairs_total{kind="fdb"} 0.0' in text
    assert 'flanneld_repairs_total{kind="route6"} 0.0' in text  # IPv6 from the start too
    documented = DOCS.read_text()
    for name in names - {n for n in names if n.startswith(("process_", "python_"))}:
        assert f"`{name}" in documented, f"{name} is missing from docs/metrics.md"


def test_reservation_exports_infinite_expiry() -> None:
    status = SimpleNamespace(lease_expiry=None)
    text = Metrics(lambda: status).render().decode()
    value = re.search(r"^flanneld_lease_expiry_timestamp_seconds (\S+)$", text, re.M)
    assert value is not None and math.isinf(float(value.group(1)))


def test_computed_readiness_is_fresh_and_reports_transitions() -> None:
    why: list[str | None] = ["etcd unreachable: connection refused"]
    seen: list[bool] = []
    readiness = Readiness(compute=lambda: why[0], on_change=seen.append)
    assert readiness.reason == "etcd unreachable: connection refused"
    why[0] = None
    assert readiness.ready and seen == [True]
    why[0] = "reconcile failed: EPERM"
    assert readiness.reason == "reconcile failed: EPERM" and seen == [True, False]
