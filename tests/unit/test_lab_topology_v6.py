"""IPv6 in lab topologies: subnet6 and ip6, IPv6-only underlays, the world, and the plan
(addresses, routes, etcd endpoints) of both families (pure, no root)."""

from __future__ import annotations

from ipaddress import IPv6Address, IPv6Network
from typing import Any

import pytest
import yaml
from netns_lab import topology as topo
from netns_lab.build import flanneld_iface
from netns_lab.lab import Lab
from netns_lab.plan import capacity, make_plan
from netns_lab.topology import TopologyError, parse

DS_NET = {"Network": "10.30.0.0/16", "EnableIPv6": True, "IPv6Network": "fc00:30::/48",
          "Backend": {"Type": "vxlan"}}
V6_NET = {"EnableIPv4": False, "EnableIPv6": True, "IPv6Network": "fc00:33::/48",
          "Backend": {"Type": "vxlan"}}
ROUTED6: dict[str, Any] = {
    "network": DS_NET,
    "segments": {"east": {"subnet": "192.168.41.0/24", "subnet6": "fd10:41::/64"},
                 "west": {"subnet": "192.168.42.0/24", "subnet6": "fd10:42::/64"}},
    "routers": {"r1": {"segments": ["east", "west"]}},
    "etcd": {"segment": "east"},
    "world": "west",
    "hosts": {"e1": {"segment": "east"}, "w1": {"segment": "west", "ip6": "fd10:42::99"}},
}


def problems(data: Any) -> list[str]:
    with pytest.raises(TopologyError) as err:
        parse(data)
    return err.value.problems


def one_problem(data: Any, *needles: str) -> str:
    found = problems(data)
    assert len(found) == 1, found
    for needle in needles:
        assert needle in found[0], found[0]
    return found[0]


def plan_problem(data: Any, *needles: str) -> str:
    with pytest.raises(TopologyError) as err:
        make_plan(parse(data), "lab")
    assert len(err.value.problems) == 1, err.value.problems
    for needle in needles:
        assert needle in err.value.problems[0], err.value.problems[0]
    return err.value.problems[0]


# --- parsing -------------------------------------------------------------------


def test_v6_examples_exist_and_say_what_they_run() -> None:
    assert {"dualstack", "hostgw-v6", "vxlan-routed-v6", "ipv6-only"} <= set(topo.example_names())
    ds = topo.load("dualstack")
    assert ds.families == (4, 6) and ds.underlay_versions == (4, 6) and ds.world is not None
    assert topo.load("hostgw-v6").backend_type == "host-gw"
    routed = topo.load("vxlan-routed-v6")
    assert len(routed.segments) == 2 and routed.routers and routed.underlay_versions == (4, 6)
    only = topo.load("ipv6-only")
    assert only.families == (6,) and only.underlay_versions == (6,)
    assert only.pod_network is None and only.pod_network6 == IPv6Network("fc00:33::/48")


def test_dual_stack_segment_and_pinned_ip6_round_trip() -> None:
    t = parse(ROUTED6)
    assert t.segment("east").subnet6 == IPv6Network("fd10:41::/64")
    assert t.host("w1").ip6 == IPv6Address("fd10:42::99")
    assert t.world is not None and t.world.segment == "west"
    assert parse(yaml.safe_load(yaml.safe_dump(t.to_dict(), sort_keys=False))) == t


def test_ipv6_only_segment_has_no_ipv4_and_round_trips() -> None:
    t = parse({"network": V6_NET, "segments": {"lan": {"subnet6": "fd10:33::/64"}}, "hosts": 2})
    assert t.segments[0].subnet is None and t.underlay_versions == (6,)
    d = t.to_dict()
    assert d["segments"]["lan"] == {"subnet6": "fd10:33::/64", "mtu": 1500}
    assert parse(d) == t


def test_default_segment_follows_the_network_families() -> None:
    ds = parse({"network": DS_NET, "hosts": 1}).segments[0]
    assert (str(ds.subnet), str(ds.subnet6)) == ("192.168.100.0/24", "fd10:100::/64")
    only = parse({"network": V6_NET, "hosts": 1}).segments[0]
    assert (only.subnet, str(only.subnet6)) == (None, "fd10:100::/64")
    assert parse({"hosts": 1}).segments[0].subnet6 is None


def test_world_forms() -> None:
    assert parse({"hosts": 1}).world is None
    assert parse({"hosts": 1, "world": False}).world is None
    w = parse({"hosts": 1, "world": True}).world
    assert w is not None and (w.name, w.segment) == ("world", "lan")
    w = parse({"hosts": 1, "world": {"ip": "192.168.100.200"}}).world
    assert w is not None and str(w.ip) == "192.168.100.200"
    one_problem({"hosts": 1, "world": "nowhere"}, "world.segment", "'nowhere'")
    one_problem({"hosts": 1, "world": 3}, "world", "true, a segment name")
    one_problem({"hosts": 1, "world": {"segmnt": "lan"}}, "world.segmnt", "did you mean")
    one_problem({"hosts": {"world": {}}, "world": True}, "world", "name already used")


# --- validation ------------------------------------------------------------------


def test_network_families_are_checked() -> None:
    one_problem({"hosts": 1, "network": {**DS_NET, "IPv6Network": "fc00::1::/48"}},
                "network.IPv6Network", "not an IPv6 CIDR")
    one_problem({"hosts": 1, "network": {"Network": "10.1.0.0/16", "EnableIPv6": True,
                                         "Backend": {"Type": "vxlan"}}},
                "network.IPv6Network", "None", "fc00:10::/48")
    one_problem({"hosts": 1, "network": {"Network": "10.1.0.0/16", "IPv6Network": "fc00::/48",
                                         "Backend": {"Type": "vxlan"}}},
                "network.IPv6Network", "EnableIPv6 is not true")
    one_problem({"hosts": 1, "network": {**DS_NET, "EnableIPv6": "yes"}},
                "network.EnableIPv6", "true or false")
    found = problems({"hosts": 1, "network": {**V6_NET, "EnableIPv6": False}})
    assert any("network.EnableIPv4" in p and "both false" in p for p in found), found
    msg = one_problem({"hosts": 1, "network": {"EnableIPv6": True, "IPv6Network": "fc00::/48",
                                               "Backend": {"Type": "vxlan"}}},
                      "network.Network", "EnableIPv4: false")
    assert "IPv6-only" in msg


def test_bad_subnet6_values() -> None:
    def seg(value: str) -> dict[str, Any]:
        return {"network": DS_NET, "hosts": 1,
                "segments": {"lan": {"subnet": "192.168.1.0/24", "subnet6": value}}}
    one_problem(seg("fd10:1::7/64"), "segments.lan.subnet6", "host bits",
                "did you mean fd10:1::/64")
    one_problem(seg("fd10:1::/124"), "segments.lan.subnet6", "too small", "/120")
    one_problem(seg("fe80::/64"), "segments.lan.subnet6", "global", "fd10:1::/64")
    one_problem(seg("nope"), "segments.lan.subnet6", "not an IPv6 network")


def test_the_overlay_needs_its_families_on_the_underlay() -> None:
    one_problem({"network": DS_NET, "hosts": 1, "segments": {"lan": {"subnet": "192.168.1.0/24"}}},
                "segments.lan.subnet6", "missing", "EnableIPv6", "fd10:1::/64")
    msg = one_problem({"hosts": 1, "segments": {"lan": {"subnet6": "fd10:1::/64"}}},
                      "segments.lan.subnet", "missing", "EnableIPv4: false")
    assert "192.168.100.0/24" in msg


def test_every_segment_has_the_same_families() -> None:
    one_problem({"network": V6_NET, "hosts": {"a": {"segment": "x"}},
                 "segments": {"x": {"subnet": "192.168.1.0/24", "subnet6": "fd10:1::/64"},
                              "y": {"subnet6": "fd10:2::/64"}},
                 "routers": {"r": ["x", "y"]}},
                "segments.y.subnet", "segment x has one", "same address families")


def test_v6_overlaps_are_refused() -> None:
    one_problem({"network": DS_NET, "hosts": 1,
                 "segments": {"lan": {"subnet": "192.168.1.0/24", "subnet6": "fc00:30:0:1::/64"}}},
                "segments.lan.subnet6", "overlaps the pod network fc00:30::/48")
    found = problems({**ROUTED6, "segments": {
        "east": {"subnet": "192.168.41.0/24", "subnet6": "fd10:41::/48"},
        "west": {"subnet": "192.168.42.0/24", "subnet6": "fd10:41::/64"}}})
    assert any("segments.west.subnet6" in p and "overlaps segment east" in p for p in found)


def test_pinned_addresses_of_the_wrong_family_are_named() -> None:
    one_problem({"hosts": {"a": {"ip": "fd10::5"}}}, "hosts.a.ip", "ip6:")
    one_problem({"network": DS_NET, "hosts": {"a": {"ip6": "10.0.0.5"}}}, "hosts.a.ip6", "ip:")
    one_problem({"hosts": {"a": {"ip6": "nope"}}}, "hosts.a.ip6", "not an IPv6 address")
    one_problem({"hosts": 1, "defaults": {"ip6": "fd10::5"}}, "defaults.ip6", "unknown key")


# --- planning ---------------------------------------------------------------------


def test_v6_addresses_read_like_the_v4_ones() -> None:
    plan = make_plan(topo.load("dualstack"), "lab")
    assert [(str(plan.ip_of(h)), str(plan.ip6_of(h))) for h in ("h1", "h2", "h3")] == [
        ("192.168.30.10", "fd10:30::10"), ("192.168.30.11", "fd10:30::11"),
        ("192.168.30.12", "fd10:30::12")]
    assert (str(plan.ip6_of("etcd")), str(plan.ip6_of("world"))) == ("fd10:30::1", "fd10:30::2")
    assert plan.links_of("h1")[0].cidrs == ["192.168.30.10/24", "fd10:30::10/64"]
    assert plan.etcd_endpoints == ["http://192.168.30.1:2379"]  # IPv4 while the underlay has it
    assert plan.infra_namespaces() == ["lan", "etcd", "world", "h1", "h2", "h3"]
    assert plan.to_dict()["links"][0]["address6"] == "fd10:30::1/64"


def test_ipv6_only_plan_etcd_over_v6_and_iface_by_address() -> None:
    t = topo.load("ipv6-only")
    plan = make_plan(t, "lab")
    assert plan.etcd_endpoints == ["http://[fd10:33::1]:2379"]
    assert str(plan.addr_of("h1")) == "fd10:33::10" and plan.links_of("h1")[0].ip is None
    assert plan.links_of("h1")[0].cidr == "fd10:33::10/64"
    with pytest.raises(ValueError, match="IPv6-only"):
        plan.ip_of("h1")
    assert "address" not in plan.to_dict()["links"][0]
    assert flanneld_iface(Lab.new("lab", t), "h2") == "fd10:33::11"
    assert flanneld_iface(Lab.new("lab", topo.load("dualstack")), "h2") == "eth0"
    assert Lab.new("lab", t).etcd_members()[0].client_url == "http://[fd10:33::1]:2379"


def test_routes_in_both_families_via_the_router() -> None:
    plan = make_plan(parse(ROUTED6), "lab")
    legs = {lk.segment: lk for lk in plan.links_of("r1")}
    assert (str(legs["east"].ip6), str(legs["west"].ip6)) == ("fd10:41::1", "fd10:42::1")
    assert [(str(r.dst), str(r.via)) for r in plan.routes["e1"]] == [
        ("192.168.42.0/24", "192.168.41.1"), ("fd10:42::/64", "fd10:41::1")]
    assert [(str(r.dst), str(r.via)) for r in plan.routes["world"]] == [
        ("192.168.41.0/24", "192.168.42.1"), ("fd10:41::/64", "fd10:42::1")]
    assert str(plan.ip6_of("w1")) == "fd10:42::99"  # pinned
    assert str(plan.ip6_of("world")) == "fd10:42::2"


def test_multi_hop_v6_routes_take_the_next_router() -> None:
    data = {"network": V6_NET, "hosts": {"a": {"segment": "s1"}, "c": {"segment": "s3"}},
            "segments": {f"s{i}": {"subnet6": f"fd10:{i}::/64"} for i in (1, 2, 3)},
            "routers": {"r1": ["s1", "s2"], "r2": ["s2", "s3"]}}
    plan = make_plan(parse(data), "lab")
    r1_s1 = next(lk.ip6 for lk in plan.links_of("r1") if lk.segment == "s1")
    assert {str(r.dst): r.via for r in plan.routes["a"]} == {"fd10:2::/64": r1_s1,
                                                             "fd10:3::/64": r1_s1}


def test_pinned_ip6_clash_outside_and_without_subnet6() -> None:
    base: dict[str, Any] = {"network": DS_NET,
                            "segments": {"lan": {"subnet": "192.168.1.0/24",
                                                 "subnet6": "fd10:1::/64"}}}
    plan_problem({**base, "hosts": {"a": {"ip6": "fd10:1::10"}, "b": {"ip6": "fd10:1::10"}}},
                 "hosts.b.ip6", "already used by a")
    plan_problem({**base, "hosts": {"a": {"ip6": "fd10:9::1"}}}, "hosts.a.ip6",
                 "not a usable address", "fd10:1::/64")
    plan_problem({**base, "hosts": {"a": {"ip6": "fd10:1::"}}}, "hosts.a.ip6", "not a usable")
    plan_problem({"hosts": {"a": {"ip6": "fd10:1::5"}}}, "hosts.a.ip6", "has no subnet6")
    plan = make_plan(parse({**base, "hosts": {"a": {"ip6": "fd10:1::10"}, "b": None}}), "lab")
    assert str(plan.ip6_of("b")) == "fd10:1::11"


def test_small_v6_segment_capacity() -> None:
    assert capacity(IPv6Network("fd10::/120")) == 99  # ::1 .. ::99 (::100 is past ::ff)
    assert capacity(IPv6Network("fd10::/64")) == 9999
    hosts = {f"h{i}": None for i in range(1, 65)}
    data = {"network": V6_NET, "hosts": hosts, "segments": {"lan": {"subnet6": "fd10::/120"}}}
    plan = make_plan(parse(data), "lab")
    assert str(plan.ip6_of("h64")) == "fd10::73"
    assert len({lk.ip6 for lk in plan.links}) == len(plan.links)
