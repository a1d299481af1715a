"""bench/etcd_load.py's pure parts (no root): reading etcd's /metrics, and flannel's
arithmetic as the reference notes give it."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
import etcd_load

KV, LEASE = 'grpc_service="etcdserverpb.KV"', 'grpc_service="etcdserverpb.Lease"'
WATCH, HEALTH = 'grpc_service="etcdserverpb.Watch"', 'grpc_service="grpc.health.v1.Health"'
METRICS = f"""\
# HELP etcd_debugging_mvcc_watcher_total Total number of watchers.
# TYPE etcd_debugging_mvcc_watcher_total gauge
etcd_debugging_mvcc_watcher_total 12
etcd_debugging_mvcc_watch_stream_total 11
grpc_server_msg_received_total{{grpc_method="Range",{KV},grpc_type="unary"}} 30
grpc_server_msg_received_total{{grpc_method="LeaseKeepAlive",{LEASE},grpc_type="bidi_stream"}} 4
grpc_server_msg_received_total{{grpc_method="Watch",{WATCH},grpc_type="bidi_stream"}} 13
grpc_server_msg_received_total{{grpc_method="Watch",{HEALTH},grpc_type="server_stream"}} 99
grpc_server_started_total{{grpc_method="Watch",{WATCH},grpc_type="bidi_stream"}} 12
grpc_server_started_total{{grpc_method="Range",{KV},grpc_type="unary"}} 30
process_resident_memory_bytes 6.7e+07
"""


def test_requests_by_method_reads_etcds_counters_only() -> None:
    m = etcd_load.parse_metrics(METRICS)
    got = etcd_load.requests_by_method(m)
    # the health service's Watch is not etcd's; streams come from started_total
    assert got == {"Range": 30, "LeaseKeepAlive": 4, "Watch": 13, "Watch streams": 12}
    assert etcd_load.gauges(m) == {"watchers": 12, "watch_streams": 11}
    assert m["process_resident_memory_bytes"][""] == 6.7e7


def test_delta_is_per_method() -> None:
    assert etcd_load.delta({"Range": 10, "Txn": 3}, {"Range": 4}) == {"Range": 6, "Txn": 3}


def test_flannel_arithmetic_matches_the_notes() -> None:
    # §9.1: a full restart of 5000 nodes is about 3·N² = 75 M TimeToLive; 1000: about 3 M
    for n, about in ((5000, 75e6), (1000, 3e6)):
        restart = etcd_load.flannel_arithmetic(n, 0)["restart"]["LeaseTimeToLive_max"]
        assert 0.99 * about < restart < 1.01 * about, (n, restart)
    f = etcd_load.flannel_arithmetic(10, 20)
    assert f["churn"]["LeaseTimeToLive"] == 200  # one per PUT event per watching node
    assert (f["start"]["LeaseTimeToLive_min"], f["start"]["LeaseTimeToLive_max"]) == (100, 190)
    per = etcd_load.flannel_per_node(10, 20)
    assert per["start"]["LeaseTimeToLive"] == "10..19" and per["start"]["Watch"] == "2"
    assert per["churn_per_event"]["LeaseTimeToLive"] == "1"
