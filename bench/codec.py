#!/usr/bin/env python3
"""Encoding the hot path's netlink requests: our codec against pyroute2's message classes.

The vxlan backend's full programming of N peers is 3N requests: a permanent
neighbour, an FDB entry and an onlink route per peer. Both contenders encode the
same 3N requests, whole netlink messages with header, ready for the socket:

- ours: netlink.messages (neigh_body, fdb_body, route_body + nlmsg);
- reference: pyroute2's ndmsg / rtmsg, fields and attributes set, encode().

The two encodings are byte-identical, and the benchmark checks that before it
reports (tests/unit/test_codec_oracle.py holds the codec against pyroute2's parser
over generated entries). No root, no kernel:
this is the cost that the codec decision in docs/architecture.md rests on.

Run: .venv/bin/python bench/codec.py [--peers N] [--rounds R]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from benchlib import machine, save  # noqa: E402

from netlink import messages as m  # noqa: E402

DEV, EXT = 7, 2
Peer = tuple[str, str, str, str]  # vtep IP (subnet .0), MAC, public IP, subnet network


def peers(n: int) -> list[Peer]:
    return [(f"10.{(i >> 8) + 1}.{i & 255}.0", f"02:00:00:{(i >> 16) & 255:02x}:"
             f"{(i >> 8) & 255:02x}:{i & 255:02x}", f"192.168.{(i >> 8) & 255}.{i & 255}",
             f"10.{(i >> 8) + 1}.{i & 255}.0") for i in range(n)]


FLAGS = m.NLM_F_REQUEST | m.NLM_F_ACK | m.NLM_F_CREATE | m.NLM_F_REPLACE


def ours(ps: list[Peer]) -> list[bytes]:
    out = []
    seq = 0
    for vtep, mac, public, subnet in ps:
        out.append(m.nlmsg(m.RTM_NEWNEIGH, FLAGS, seq := seq + 1, m.neigh_body(DEV, vtep, mac)))
        out.append(m.nlmsg(m.RTM_NEWNEIGH, FLAGS, seq := seq + 1, m.fdb_body(DEV, mac, public)))
        out.append(m.nlmsg(m.RTM_NEWROUTE, FLAGS, seq := seq + 1,
                           m.route_body(subnet, 24, vtep, DEV, onlink=True)))
    return out


def pyroute2_messages(ps: list[Peer]) -> list[bytes]:
    from pyroute2.netlink.rtnl.ndmsg import ndmsg
    from pyroute2.netlink.rtnl.rtmsg import rtmsg

    def done(msg: Any, kind: int, seq: int) -> bytes:
        msg["header"]["type"], msg["header"]["flags"] = kind, FLAGS
        msg["header"]["sequence_number"] = seq
        msg.encode()
        return bytes(msg.data[:msg["header"]["length"]])

    out = []
    seq = 0
    for vtep, mac, public, subnet in ps:
        nd = ndmsg()
        nd["family"], nd["ifindex"], nd["state"], nd["ndm_type"] = m.AF_INET, DEV, \
            m.NUD_PERMANENT, m.RTN_UNICAST
        nd["attrs"] = [("NDA_DST", vtep), ("NDA_LLADDR", mac)]
        out.append(done(nd, m.RTM_NEWNEIGH, seq := seq + 1))
        fdb = ndmsg()
        fdb["family"], fdb["ifindex"], fdb["state"], fdb["flags"] = m.AF_BRIDGE, DEV, \
            m.NUD_PERMANENT, m.NTF_SELF
        fdb["attrs"] = [("NDA_DST", public), ("NDA_LLADDR", mac)]
        out.append(done(fdb, m.RTM_NEWNEIGH, seq := seq + 1))
        rt = rtmsg()
        rt["family"], rt["dst_len"], rt["table"], rt["proto"] = m.AF_INET, 24, \
            m.RT_TABLE_MAIN, m.RTPROT_BOOT
        rt["scope"], rt["type"], rt["flags"] = m.RT_SCOPE_UNIVERSE, m.RTN_UNICAST, \
            m.RTNH_F_ONLINK
        rt["attrs"] = [("RTA_DST", subnet), ("RTA_GATEWAY", vtep), ("RTA_OIF", DEV)]
        out.append(done(rt, m.RTM_NEWROUTE, seq := seq + 1))
    return out


def timed(fn: Callable[[list[Peer]], list[bytes]], ps: list[Peer], rounds: int
          ) -> tuple[list[float], list[bytes]]:
    times, msgs = [], []
    for _ in range(rounds):
        t0 = time.perf_counter()
        msgs = fn(ps)
        times.append((time.perf_counter() - t0) * 1000)
    return times, msgs


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--peers", type=int, default=1000, help="peers (3 messages each)")
    ap.add_argument("--rounds", type=int, default=7)
    args = ap.parse_args(argv)
    ps = peers(args.peers)
    ours(ps[:10]), pyroute2_messages(ps[:10])  # warm imports and caches
    ours_ms, ours_msgs = timed(ours, ps, args.rounds)
    ref_ms, ref_msgs = timed(pyroute2_messages, ps, args.rounds)
    n = len(ours_msgs)
    if n != len(ref_msgs) or n != 3 * args.peers:
        raise SystemExit(f"message counts differ: ours {n}, pyroute2 {len(ref_msgs)}")
    differ = sum(a != b for a, b in zip(ours_msgs, ref_msgs, strict=True))
    if differ:
        raise SystemExit(f"{differ} of {n} messages differ from pyroute2's encoding")
    ours_med, ref_med = statistics.median(ours_ms), statistics.median(ref_ms)
    result = {
        "machine": machine(), "peers": args.peers, "messages": n, "rounds": args.rounds,
        "ours_ms": {"median": round(ours_med, 2), "all": [round(t, 2) for t in ours_ms]},
        "pyroute2_ms": {"median": round(ref_med, 2), "all": [round(t, 2) for t in ref_ms]},
        "us_per_message": {"ours": round(ours_med * 1000 / n, 3),
                           "pyroute2": round(ref_med * 1000 / n, 2)},
        "bytes": sum(map(len, ours_msgs)), "byte_identical": True,
        "ratio_pyroute2_vs_ours": round(ref_med / ours_med, 1),
    }
    save("codec", result)
    print(f"encode {n} messages ({args.peers} peers: neighbour + FDB + route), median of "
          f"{args.rounds}:")
    print(f"  ours      {ours_med:8.2f} ms  {result['us_per_message']['ours']:7.3f} us/msg")
    print(f"  pyroute2  {ref_med:8.2f} ms  {result['us_per_message']['pyroute2']:7.2f} us/msg")
    print(f"  ratio pyroute2 / ours: {result['ratio_pyroute2_vs_ours']}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
