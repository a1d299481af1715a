"""The WireGuard benchmarks' inputs (pure, no root): the hand-written UAPI set, the wg(8)
file and our backend's desired peers are the same work; the throughput lab parses; runs
alternate the side that goes first."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import yaml
from netns_lab.topology import parse

from backends.wg_desired import desired_peers, device_specs
from backends.wg_uapi import parse_get

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
import throughput_wg
import wireguard_programming as wgp

N = 40


def _leases() -> tuple[list[wgp.Lease], wgp.Lease]:
    keys = wgp.new_public_keys(N + 1)
    return [wgp.lease(i, keys[i]) for i in range(N)], wgp.lease(-1, keys[N])


def test_synthetic_leases_are_distinct_and_all_usable_by_the_backend() -> None:
    peers, own = _leases()
    assert len({p.subnet for p in peers} | {own.subnet}) == N + 1
    assert len({p.attrs.public_ip for p in peers} | {own.attrs.public_ip}) == N + 1
    assert all(p.subnet.subnet_of(wgp.CONFIG.network) for p in peers)
    wg = wgp.CONFIG.backend
    assert isinstance(wg, wgp.WireguardConfig)
    spec = device_specs(wg, True, False, 1500)[0]
    assert spec.name == wgp.DEV and spec.mtu == 1420
    want = desired_peers(own, [own, *peers], wg, spec, wgp.key_of(own))
    assert not want.skipped and len(want.peers) == N


def test_hand_set_wg_conf_and_our_desired_peers_hold_the_same_peers() -> None:
    peers, own = _leases()
    wg = wgp.CONFIG.backend
    assert isinstance(wg, wgp.WireguardConfig)
    spec = device_specs(wg, True, False, 1500)[0]
    ours = {(p.public_key, p.endpoint, p.allowed_ips) for p in
            desired_peers(own, [own, *peers], wg, spec, wgp.key_of(own)).peers.values()}
    assert ours == wgp.expected(peers)
    # the UAPI text, read as a device would report it
    text = wgp.hand_set(peers)
    assert text.startswith("set=1\n") and text.endswith("\n\n")
    assert wgp.on_device(parse_get(text.rstrip("\n") + "\nerrno=0\n\n")) == ours
    # the wg(8) file: one [Peer] per lease with the same three fields
    sections = wgp.wg_conf(bytes(range(32)), peers).split("[Peer]\n")[1:]
    assert len(sections) == N
    got = set()
    for sec in sections:
        kv = dict(line.split(" = ", 1) for line in sec.splitlines() if line)
        got.add((kv["PublicKey"], kv["Endpoint"], (kv["AllowedIPs"],)))
    assert got == ours
    assert wgp.hand_remove(wgp.key_of(peers[0])).endswith("\nremove=true\n\n")
    argv = wgp.wg_set_argv(peers[0])
    assert argv[:5] == ["wg", "set", wgp.DEV, "peer", wgp.key_of(peers[0])]


def test_split_accounts_for_every_millisecond() -> None:
    out = wgp.split({"a": 0.004, "b": 0.002}, 0.010, 2)
    assert out == {"a": 2.0, "b": 1.0, "rest (the backend's own code)": 2.0, "total": 5.0}
    # time on the backend's timer threads is listed, outside the caller's total
    out = wgp.split({"a": 0.004, f"a [{wgp.TIMERS}]": 0.006}, 0.010, 2)
    assert out["total"] == 5.0 and out["rest (the backend's own code)"] == 3.0
    assert out[f"a [{wgp.TIMERS}]"] == 3.0


def test_throughput_lab_is_a_two_host_wireguard_topology() -> None:
    doc = yaml.safe_load(throughput_wg.topology())
    topo = parse(doc)
    assert len(topo.hosts) == 2
    assert json.loads(throughput_wg.topology())["network"]["Backend"] == {"Type": "wireguard"}
    assert throughput_wg.MTU == 1500 - 80


def test_rounds_alternate_which_side_of_a_pair_goes_first() -> None:
    paths = list(throughput_wg.PATHS)
    assert throughput_wg.round_order(paths, 0) == ["veth", "hand-wg", "lab-wg"]
    assert throughput_wg.round_order(paths, 1) == ["veth", "lab-wg", "hand-wg"]
    assert throughput_wg.round_order(paths, 2) == paths
    assert throughput_wg.round_order(["a", "b"], 1) == ["a", "b"]  # no pairs: unchanged
