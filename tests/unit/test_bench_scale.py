"""bench/scale.py's inputs and summary (pure, no root): the leases its writer puts in etcd
are valid, distinct peers at every size (the daemon programs all of them), the driver's
event subnets collide with none, and the summary copes with any set of sizes."""

from __future__ import annotations

import asyncio
import sys
import types
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path
from typing import Any

from core.lease import check_peer_lease, check_vxlan_attrs, decode_lease

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
import scale


def written(n: int) -> list[tuple[bytes, bytes]]:
    """Run the writer's script against a stand-in aetcd; the puts it makes."""
    puts: list[tuple[bytes, bytes]] = []

    class Client:
        transactions = types.SimpleNamespace(put=lambda k, v: (k, v))

        def __init__(self, host: str, port: int) -> None:
            pass

        async def __aenter__(self) -> Client:
            return self

        async def __aexit__(self, *exc: object) -> None:
            pass

        async def put(self, key: bytes, value: bytes) -> None:
            puts.append((key, value))

        async def transaction(self, compare: list[Any], success: list[Any],
                              failure: list[Any]) -> None:
            assert compare == [] and failure == [] and len(success) <= 100
            puts.extend(success)

    fake = types.ModuleType("aetcd")
    fake.Client = Client  # type: ignore[attr-defined]
    saved, argv = sys.modules.get("aetcd"), sys.argv
    sys.modules["aetcd"], sys.argv = fake, ["-c", "10.0.0.1", "/p", str(n)]
    try:
        exec(compile(scale.WRITER, "writer", "exec"), {"__name__": "__main__",
                                                       "asyncio": asyncio})
    finally:
        sys.argv = argv
        if saved is not None:
            sys.modules["aetcd"] = saved
    return puts


def test_the_writers_leases_are_distinct_valid_peers_at_the_largest_size() -> None:
    n = max(scale.SIZES)
    puts = written(n)
    assert puts[0][0] == b"/p/config"
    network = IPv4Network(scale.NETWORK)
    leases = [decode_lease(k.decode(), v) for k, v in puts[1:]]
    assert len(leases) == n
    for lease in leases:
        check_peer_lease(lease, network, own_public_ips=[IPv4Address("10.200.40.1")])
    assert len({le.subnet for le in leases}) == n
    assert len({check_vxlan_attrs(le.attrs)[1] for le in leases}) == n
    # the driver's events (bench/daemon_latency.py) use 10.250.x.0/24: inside, and free
    events = {IPv4Network(f"10.250.{i}.0/24") for i in range(250)}
    assert all(e.subnet_of(network) for e in events)
    assert not events & {le.subnet for le in leases}


def figures(n: int, factor: float) -> dict[str, Any]:
    def st(v: float) -> dict[str, float]:
        return {"n": 10, "p50": v * factor, "p99": 2 * v * factor, "max": 3 * v * factor}
    return {
        "initial_programming_ms": {"ours": 10.0 * n, "ip_bridge_batch": 12.0 * n, "ratio": 0.83},
        "event_ms": {"total": st(0.2), "inside_netlink": st(0.1), "outside_netlink": st(0.06),
                     "kernel_floor": st(0.08)},
        "removal_ms": st(0.1),
        "full_resync_ms": {"ours": st(n / 100), "iproute2_show": st(n / 90), "ratio": 0.9},
        "daemon": {"ready_s": 1.0, "ready_reference_s": {"total": 0.8}, "rss_mb": 52 + n / 500,
                   "rss_per_peer_kb": 2.0, "rss_slope_kb_per_peer": 2.1,
                   "event_ms": {"flanneld": st(5), "etcd_watch": st(3)},
                   "own_event_to_kernel_ms": {"p50_bucket": 1.0, "p99_bucket": 2.0}}}


def test_the_summary_compares_5000_with_1000_and_copes_with_other_sizes() -> None:
    r = {"sizes": [1000, 5000], "by_size": {"1000": figures(1000, 1.0),
                                            "5000": figures(5000, 1.2)},
         "flanneld_0_peers": {"rss_mb": 52.0, "ready_s": 0.4}, "seconds": 1.0,
         "machine": {"loadavg": [1.0], "cpus": 2}, "loadavg_after": [1.0]}
    ratios = scale.ratios(r)
    assert ratios["sizes"] == "5000 / 1000"
    assert ratios["backend CPU outside netlink"] == {"p50": 1.2, "p99": 1.2}
    r["ratios"] = ratios
    scale.report(r)
    only = {"sizes": [2000], "by_size": {"2000": figures(2000, 1.0)}}
    assert scale.ratios(only)["sizes"] == "2000 / 2000"
