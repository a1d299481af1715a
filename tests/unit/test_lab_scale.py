"""The lab at scale, pure parts: no host cap, segment sizing, the kernel sizing arithmetic
and its restore rules across labs, the ping sample covering every host, and what a quiet
`up` says when it fails."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pytest
from netns_lab import kernel, reach
from netns_lab.commands import up as up_cmd
from netns_lab.lab import Lab
from netns_lab.plan import make_plan
from netns_lab.topology import TopologyError, parse

T1, T2, T3 = (f"net.ipv4.neigh.default.gc_thresh{i}" for i in (1, 2, 3))
DEFAULTS = {T1: 128, T2: 512, T3: 1024}


def problems(data: Any) -> list[str]:
    with pytest.raises(TopologyError) as err:
        parse(data)
    return err.value.problems


# -- topology: no fixed cap, segments sized or refused -----------------------------------------


def test_250_hosts_fit_the_default_segment() -> None:
    t = parse({"hosts": 250, "etcd": {"members": 3}})
    assert str(t.segments[0].subnet) == "192.168.100.0/24"
    plan = make_plan(t, "big")
    assert len({plan.ip_of(h) for h in t.host_names}) == 250


def test_the_default_segment_grows_with_the_hosts() -> None:
    assert str(parse({"hosts": 300, "network": {"Network": "10.0.0.0/12", "Backend": {
        "Type": "vxlan"}}}).segments[0].subnet) == "192.168.100.0/23"
    t = parse({"hosts": 700, "network": {"Network": "10.0.0.0/12", "Backend": {
        "Type": "vxlan"}}})
    assert str(t.segments[0].subnet) == "192.168.100.0/22"
    assert str(make_plan(t, "big").ip_of("h700")).startswith("192.168.10")


def test_beyond_a_22_the_default_segment_is_refused_with_a_remedy() -> None:
    found = problems({"hosts": 1100, "network": {"Network": "10.0.0.0/8", "Backend": {
        "Type": "vxlan"}}})
    assert found == ["hosts: 1101 addresses are needed on the default segment lan, more than "
                     "192.168.100.0/22 holds (1022); declare segments: a larger subnet (e.g. "
                     "lan: {subnet: 10.100.0.0/16}) or several segments joined by routers"]


def test_a_declared_segment_too_small_is_refused_naming_a_fix() -> None:
    t = parse({"hosts": 300, "segments": {"lan": {"subnet": "192.168.0.0/24"}},
               "network": {"Network": "10.0.0.0/12", "Backend": {"Type": "vxlan"}}})
    with pytest.raises(TopologyError, match=r"301 are needed; use a larger subnet \(a /23 "
                                            r"holds 510\), or spread the hosts"):
        make_plan(t, "lab")


def test_more_hosts_than_pod_subnets_is_refused() -> None:
    found = problems({"hosts": 300})
    assert found == ["network.Network: 10.244.0.0/16 holds 255 subnet(s) (SubnetLen, "
                     "SubnetMin, SubnetMax) but there are 300 hosts; use a larger network, "
                     "e.g. Network: 10.0.0.0/12 or SubnetLen: 26"]


# -- kernel sizing: the arithmetic -------------------------------------------------------------


def test_entries_count_each_segment_and_the_pods() -> None:
    t = parse({"hosts": 250, "defaults": {"pods": 1}})
    # 251 members on lan (250 hosts + etcd): 251 * 250; each pod 2 (gateway, cni0)
    assert kernel.entries_needed(t) == {4: 251 * 250 + 2 * 250}
    routed = parse({"segments": {"a": {}, "b": {}}, "routers": {"r1": {"segments": ["a", "b"]}},
                    "hosts": {**{f"a{i}": {"segment": "a", "pods": 0} for i in range(10)},
                              **{f"b{i}": {"segment": "b", "pods": 0} for i in range(10)}}})
    # a: 10 hosts + r1 + etcd = 12; b: 10 hosts + r1 = 11
    assert kernel.entries_needed(routed) == {4: 12 * 11 + 11 * 10}


def test_entries_per_family_on_a_dual_stack_lab() -> None:
    t = parse({"hosts": 3, "network": {"Network": "10.1.0.0/16", "EnableIPv6": True,
                                       "IPv6Network": "fc00:1::/48", "Backend": {
                                           "Type": "vxlan"}}})
    # IPv6: every neighbour's global and link-local address, and the pods' link-locals
    assert kernel.entries_needed(t) == {4: 4 * 3 + 2 * 6, 6: 2 * 4 * 3 + 4 * 6}


def test_thresholds_follow_flannels_advice() -> None:
    needs = {n.key: n.value for n in kernel.wanted({4: 63_250})}
    assert needs == {T1: 65536, T2: 131072, T3: 262144}
    assert all("~63,250 entries" in n.why for n in kernel.wanted({4: 63_250}))


def test_a_small_lab_changes_nothing_and_holds_nothing() -> None:
    reg, changes, unmet = kernel.plan(kernel.empty_registry(), "/s/a", {}, {4: 24},
                                      DEFAULTS)
    assert changes == [] and unmet == []
    assert reg == kernel.empty_registry()


def test_a_big_lab_raises_and_records_the_originals() -> None:
    reg, changes, _ = kernel.plan(kernel.empty_registry(), "/s/a", {"name": "a"},
                                  {4: 63_250}, DEFAULTS)
    assert [(c.key, c.old, c.new) for c in changes] == [
        (T1, 128, 65536), (T2, 512, 131072), (T3, 1024, 262144)]
    assert reg["keys"][T3] == {"original": 1024, "set": 262144, "holders": ["/s/a"]}
    assert reg["labs"]["/s/a"]["entries"] == {"4": 63250}


def test_the_error_without_kernel_sizing_names_sysctl_and_value(tmp_path: Path,
                                                                monkeypatch: Any) -> None:
    values = dict(DEFAULTS)
    monkeypatch.setattr(kernel, "read_sysctl", lambda k: values[k])
    monkeypatch.setattr(kernel, "write_sysctl", lambda k, v: values.__setitem__(k, v))
    with pytest.raises(kernel.KernelSizingError) as err:
        kernel.acquire("/s/a", {}, {4: 4160}, change=False, registry=tmp_path / "k.json")
    text = str(err.value)
    assert "too low for this lab; IPv4 neighbour (ARP) table, shared by every namespace: " \
           "~4,160 entries:\n" in text
    assert f"  - {T1} is 128; this lab needs >= 8192\n" in text
    assert f"  - {T3} is 1024; this lab needs >= 32768" in text
    assert f"sysctl -w {T1}=8192 {T2}=16384 {T3}=32768" in text
    assert values == DEFAULTS  # nothing written
    assert not (tmp_path / "k.json").exists()


# -- kernel sizing: several labs, crashes, other people ----------------------------------------


class Box:
    """The sysctls and the registry file, faked, with acquire/release as `up`/`down` do."""

    def __init__(self, tmp: Path, monkeypatch: Any) -> None:
        self.values = dict(DEFAULTS)
        self.registry = tmp / "kernel.json"
        self.netns: list[str] = []
        monkeypatch.setattr(kernel, "read_sysctl", lambda k: self.values[k])
        monkeypatch.setattr(kernel, "write_sysctl", lambda k, v: self.values.__setitem__(k, v))
        self.drained: list[tuple[int, int]] = []
        monkeypatch.setattr(kernel, "wait_drained",
                            lambda v, limit: self.drained.append((v, limit)) or True)
        self.tmp = tmp

    def up(self, name: str, entries: int) -> list[kernel.Change]:
        state = self.tmp / f"pfl-{name}"
        state.mkdir(exist_ok=True)
        meta = {"name": name, "prefix": f"pfl-{name}", "state_dir": str(state)}
        return kernel.acquire(str(state), meta, {4: entries}, change=True,
                              netns=lambda: self.netns, registry=self.registry)[0]

    def down(self, name: str) -> list[kernel.Restore]:
        state = self.tmp / f"pfl-{name}"
        if state.exists():
            state.rmdir()
        return kernel.release(str(state), netns=lambda: self.netns, registry=self.registry)


def test_down_restores_the_originals(tmp_path: Path, monkeypatch: Any) -> None:
    box = Box(tmp_path, monkeypatch)
    box.up("a", 63_250)
    assert box.values[T3] == 262144
    restores = box.down("a")
    assert [(r.key, r.value, r.written) for r in restores] == [
        (T1, 128, True), (T2, 512, True), (T3, 1024, True)]
    assert box.values == DEFAULTS and not box.registry.exists()
    assert box.drained == [(4, 512)]  # waited for the table to drain below half of 1024


def test_restored_only_when_the_last_holder_goes(tmp_path: Path, monkeypatch: Any) -> None:
    box = Box(tmp_path, monkeypatch)
    box.up("a", 4_000)  # raises to 4096 / 8192 / 16384
    box.up("b", 2_000)  # needs more than the defaults, sized for both: relies on the raise
    assert box.values[T3] == 32768  # 6,000 entries together
    assert box.down("a") == []  # b still holds them
    assert box.values[T3] == 32768
    box.down("b")
    assert box.values == DEFAULTS


def test_a_later_bigger_lab_raises_further_and_the_first_original_comes_back(
        tmp_path: Path, monkeypatch: Any) -> None:
    box = Box(tmp_path, monkeypatch)
    box.up("a", 4_000)
    changes = box.up("b", 63_250)
    assert {c.key: c.old for c in changes}[T3] == 16384  # from a's value ...
    assert kernel.holders(box.registry)["keys"][T3]["original"] == 1024  # ... the original kept
    box.down("b")
    box.down("a")
    assert box.values == DEFAULTS


def test_a_value_someone_raised_since_is_never_lowered(tmp_path: Path,
                                                       monkeypatch: Any) -> None:
    box = Box(tmp_path, monkeypatch)
    box.up("a", 63_250)
    box.values[T3] = 1_000_000  # an operator, meanwhile
    restores = {r.key: r for r in box.down("a")}
    assert box.values[T3] == 1_000_000 and not restores[T3].written
    assert "changed since the lab set 262144" in restores[T3].note
    assert box.values[T1] == 128 and box.values[T2] == 512  # the others do go back
    assert not box.registry.exists()


def test_a_lower_value_set_meanwhile_is_left_too(tmp_path: Path, monkeypatch: Any) -> None:
    box = Box(tmp_path, monkeypatch)
    box.up("a", 63_250)
    box.values[T3] = 4096
    box.down("a")
    assert box.values[T3] == 4096


def test_a_value_already_high_enough_is_not_touched_nor_restored(
        tmp_path: Path, monkeypatch: Any) -> None:
    box = Box(tmp_path, monkeypatch)
    box.values.update({T1: 100_000, T2: 200_000, T3: 400_000})  # an operator's
    assert box.up("a", 63_250) == []
    assert box.down("a") == []
    assert box.values[T3] == 400_000


def test_down_of_a_lab_left_behind_restores_from_the_registry(tmp_path: Path,
                                                              monkeypatch: Any) -> None:
    box = Box(tmp_path, monkeypatch)
    box.up("a", 63_250)  # ... and `up` crashed: only the registry knows
    assert box.down("a")[-1].written
    assert box.values == DEFAULTS


def test_a_holder_gone_without_down_is_released_by_the_next_lab(tmp_path: Path,
                                                                monkeypatch: Any) -> None:
    box = Box(tmp_path, monkeypatch)
    box.up("a", 63_250)
    (tmp_path / "pfl-a").rmdir()  # its state removed by hand, no namespace left
    box.up("b", 24)  # a small lab: needs nothing, and finds a gone
    assert box.values == DEFAULTS and not box.registry.exists()


def test_a_holder_with_namespaces_left_is_not_released(tmp_path: Path,
                                                       monkeypatch: Any) -> None:
    box = Box(tmp_path, monkeypatch)
    box.up("a", 63_250)
    (tmp_path / "pfl-a").rmdir()
    box.netns = ["pfl-a-h1"]  # its namespaces still there: its entries may still be
    box.up("b", 24)
    assert box.values[T3] == 262144


# -- the ping sample ---------------------------------------------------------------------------


@pytest.mark.parametrize("n", [2, 3, 4, 7, 64, 250])
def test_the_sample_has_every_host_as_source_and_destination(n: int) -> None:
    pods = {f"h{i}": ["p1", "p2"] for i in range(1, n + 1)}
    pairs = reach.sample_pairs(pods)
    assert reach.covers(pairs, list(pods)) == (set(), set())
    assert all(s.split("/")[0] != d.split("/")[0] for s, d in pairs)
    rounds = len(reach.offsets(n))
    assert len(pairs) == rounds * n and rounds == min(2, n - 1)
    for r in range(rounds):  # each round a permutation: every host once each way
        part = pairs[r * n:(r + 1) * n]
        assert sorted(s.split("/")[0] for s, _ in part) == sorted(pods)
        assert sorted(d.split("/")[0] for _, d in part) == sorted(pods)
    assert {s.split("/")[1] for s, _ in pairs} == ({"p1", "p2"} if n > 2 else {"p1"})


def test_the_sample_skips_hosts_without_pods_and_pairs_one_hosts_pods() -> None:
    pairs = reach.sample_pairs({"h1": ["p1"], "h2": [], "h3": ["p1"]})
    assert reach.covers(pairs, ["h1", "h3"]) == (set(), set())
    assert reach.sample_pairs({"h1": ["a", "b"]}) == [("h1/a", "h1/b"), ("h1/b", "h1/a")]
    assert reach.sample_pairs({"h1": ["a"]}) == []


# -- a quiet up that fails says why --------------------------------------------------------------


def test_a_quiet_up_prints_why_it_failed(capsys: Any) -> None:
    lab = Lab.new("q", parse({"hosts": 2}))
    up_cmd.report_failure(TimeoutError("timed out waiting for flanneld on h2"), lab, False,
                          [kernel.Restore(T3, 1024, "262144 -> 1024 (restored)", True)],
                          io.StringIO(), quiet=True)
    err = capsys.readouterr().err
    assert "netns-lab: up failed: timed out waiting for flanneld on h2" in err
    assert "removed what was built" in err
    assert f"{T3}: 262144 -> 1024 (restored)" in err


def test_up_q_failure_goes_to_stderr_through_run(monkeypatch: Any, tmp_path: Path,
                                                 capsys: Any) -> None:
    from netns_lab import build, netns
    monkeypatch.setattr(netns, "STATE_ROOT", tmp_path)

    def failing_up(lab: Lab, progress: Any, kernel_sizing: bool = True) -> None:
        raise RuntimeError("etcd did not start")
    monkeypatch.setattr(build, "up", failing_up)
    monkeypatch.setattr(build, "down", lambda name: (0, 0, []))
    monkeypatch.setattr(build, "leftovers", lambda name: {"namespaces": []})
    parser = __import__("netns_lab.cli", fromlist=["build_parser"]).build_parser()
    args = parser.parse_args(["--name", "qq", "up", "-q"])
    assert up_cmd.run(args) == 1
    out = capsys.readouterr()
    assert out.out == ""
    assert "netns-lab: up failed: etcd did not start" in out.err


@pytest.mark.parametrize(("n", "k"), [(3, 2), (65, 64), (250, 64)])
def test_status_probes_every_peer_or_64_each_way(n: int, k: int) -> None:
    hosts = [f"h{i}" for i in range(1, n + 1)]
    targets = reach.probe_targets(hosts)
    assert all(len(t) == k and h not in t and len(set(t)) == k for h, t in targets.items())
    pinged_by = {h: sum(h in t for t in targets.values()) for h in hosts}
    assert set(pinged_by.values()) == {k}
    assert len(reach.probe_targets(hosts, None)["h1"]) == n - 1
