"""Lab topology parsing, validation and address planning (pure, no root)."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Network
from typing import Any

import pytest
import yaml
from netns_lab import topology as topo
from netns_lab.plan import lab_prefix, make_plan
from netns_lab.topology import TopologyError, parse

ROUTED: dict[str, Any] = {
    "network": {"Network": "10.20.0.0/16", "Backend": {"Type": "vxlan"}},
    "segments": {"east": {"subnet": "192.168.21.0/24"}, "west": {"subnet": "192.168.22.0/24"}},
    "routers": {"r1": {"segments": ["east", "west"]}},
    "etcd": {"segment": "east"},
    "hosts": {"e1": {"segment": "east"}, "w1": {"segment": "west", "pods": ["web", "db"]}},
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


# --- parsing -----------------------------------------------------------------


def test_default_example_is_three_vxlan_hosts_with_two_pods() -> None:
    t = topo.load(None)
    assert t.host_names == ["h1", "h2", "h3"]
    assert t.backend_type == "vxlan"
    assert all(h.pods == ("p1", "p2") for h in t.hosts)
    assert [m.name for m in t.etcd] == ["etcd"]


@pytest.mark.parametrize("name", topo.example_names())
def test_every_example_parses_and_plans(name: str) -> None:
    t = topo.load(name)
    plan = make_plan(t, "lab")
    assert plan.etcd_endpoints
    assert len({lk.address for lk in plan.links}) == len(plan.links)
    assert parse(yaml.safe_load(yaml.safe_dump(t.to_dict(), sort_keys=False))) == t


def test_required_examples_exist() -> None:
    names = set(topo.example_names())
    assert {"default", "hostgw-l2", "vxlan-routed", "directrouting", "etcd3",
            "ten-hosts"} <= names
    assert len(topo.load("ten-hosts").hosts) == 10
    assert len(topo.load("etcd3").etcd) == 3


def test_minimal_document_gets_defaults() -> None:
    t = parse({"hosts": 2})
    assert t.host_names == ["h1", "h2"]
    assert [s.name for s in t.segments] == ["lan"]
    assert t.hosts[0].segment == "lan"
    assert t.network == topo.DEFAULT_NETWORK
    assert t.etcd_prefix == "/coreos.com/network"


def test_defaults_apply_and_hosts_override() -> None:
    t = parse({"hosts": {"a": None, "b": {"pods": 0, "flanneld_args": "--log-level debug"}},
               "defaults": {"pods": 3, "flanneld_args": ["--resync-interval=5"]}})
    assert t.host("a").pods == ("p1", "p2", "p3")
    assert t.host("a").flanneld_args == ("--resync-interval=5",)
    assert t.host("b").pods == ()
    assert t.host("b").flanneld_args == ("--log-level", "debug")


def test_network_keys_are_case_insensitive_like_flannel() -> None:
    t = parse({"hosts": 1, "network": {"network": "10.9.0.0/16", "backend": {"type": "host-gw"}}})
    assert t.backend_type == "host-gw"
    assert t.pod_network == IPv4Network("10.9.0.0/16")


def test_etcd_members_forms() -> None:
    assert [m.name for m in parse({"hosts": 1, "etcd": {"members": 3}}).etcd] == [
        "etcd1", "etcd2", "etcd3"]
    t = parse({**ROUTED, "etcd": {"members": {"a": {"segment": "west"}, "b": None,
                                              "c": {"ip": "192.168.21.50"}}}})
    assert [(m.name, m.segment) for m in t.etcd] == [("a", "west"), ("b", "east"),
                                                     ("c", "east")]


def test_round_trip_through_to_dict() -> None:
    t = parse(ROUTED)
    again = parse(yaml.safe_load(yaml.safe_dump(t.to_dict())))
    assert again == t


# --- validation: each error names field, value and remedy -------------------


def test_unknown_key_suggests_the_close_one() -> None:
    one_problem({"hosts": 1, "segmnets": {}}, "segmnets", "did you mean 'segments'")


def test_unknown_segment_reference() -> None:
    one_problem({**ROUTED, "hosts": {"x": {"segment": "north"}}},
                "hosts.x.segment", "'north'", "east, west")


def test_segment_required_when_several() -> None:
    one_problem({**ROUTED, "hosts": {"x": {}}}, "hosts.x.segment", "missing")


def test_bad_names() -> None:
    one_problem({"hosts": {"Node-1": {}}}, "hosts.Node-1", "lowercase")
    one_problem({"hosts": {"a": {"pods": ["ok", "bad-pod"]}}}, "hosts.a.pods[1]")


def test_duplicate_names_across_kinds() -> None:
    one_problem({**ROUTED, "hosts": {"r1": {"segment": "east"}}}, "host r1", "router")


def test_bad_network() -> None:
    one_problem({"hosts": 1, "network": {"Network": "10.0.0.300/8",
                                         "Backend": {"Type": "vxlan"}}},
                "network.Network", "10.0.0.300/8")
    one_problem({"hosts": 1, "network": {"Network": "10.1.0.0/16"}},
                "network.Backend", "udp")


def test_underlay_overlapping_pod_network() -> None:
    one_problem({"hosts": 1, "segments": {"lan": {"subnet": "10.244.5.0/24"}}},
                "segments.lan.subnet", "overlaps the pod network")


def test_overlapping_segments() -> None:
    found = problems({"hosts": {"x": {"segment": "a"}},
                      "segments": {"a": {"subnet": "192.168.0.0/16"},
                                               "b": {"subnet": "192.168.3.0/24"}},
                      "routers": {"r": ["a", "b"]}})
    assert any("segments.b.subnet" in p and "overlaps segment a" in p for p in found)


def test_segment_subnet_with_host_bits() -> None:
    one_problem({"hosts": 1, "segments": {"lan": {"subnet": "192.168.1.7/24"}}},
                "segments.lan.subnet", "host bits", "did you mean 192.168.1.0/24")


def test_unreachable_segment_needs_a_router() -> None:
    data = {**ROUTED, "routers": {}}
    one_problem(data, "segments.west", "add a router")


def test_router_with_one_leg() -> None:
    one_problem({**ROUTED, "routers": {"r1": {"segments": ["east"]}}},
                "routers.r1.segments", "at least two")


def test_hostgw_across_routers_is_refused_with_a_remedy() -> None:
    data = {**ROUTED, "network": {"Network": "10.20.0.0/16", "Backend": {"Type": "host-gw"}}}
    one_problem(data, "network.Backend.Type", "one L2 segment", "vxlan")


def test_vxlan_directrouting_across_routers_is_fine() -> None:
    parse({**ROUTED, "network": {"Network": "10.20.0.0/16",
                                 "Backend": {"Type": "vxlan", "DirectRouting": True}}})


def test_managed_flanneld_flags_are_refused() -> None:
    one_problem({"hosts": {"a": {"flanneld_args": ["--iface=eth1"]}}},
                "hosts.a.flanneld_args", "--iface", "set by the lab")


def test_ip_masq_is_on_by_default_and_has_its_own_key() -> None:
    t = parse({"hosts": {"a": None, "b": {"ip_masq": False}}})
    assert t.host("a").ip_masq and not t.host("b").ip_masq
    assert not parse({"hosts": 1, "defaults": {"ip_masq": False}}).hosts[0].ip_masq
    one_problem({"hosts": {"a": {"flanneld_args": ["--ip-masq=false"]}}},
                "hosts.a.flanneld_args", "ip_masq: false")
    one_problem({"hosts": {"a": {"ip_masq": "yes"}}}, "hosts.a.ip_masq", "true or false")


def test_even_etcd_cluster_refused() -> None:
    one_problem({"hosts": 1, "etcd": {"members": 2}}, "etcd.members", "odd")


def test_all_problems_reported_at_once() -> None:
    found = problems({"hosts": {"a": {"pods": -1, "segment": "x"}}, "etcd_prefix": "nope"})
    assert len(found) == 3, found


def test_top_level_must_be_mapping() -> None:
    one_problem(["hosts"], "top level")


def test_load_unknown_name_lists_examples(tmp_path: Any) -> None:
    with pytest.raises(TopologyError, match="default"):
        topo.load("no-such-example")
    bad = tmp_path / "bad.yaml"
    bad.write_text("hosts: [\n")
    with pytest.raises(TopologyError, match="not valid YAML"):
        topo.load(bad)


def test_lab_name_validation() -> None:
    assert lab_prefix("lab2") == "pfl-lab2"
    for bad in ("", "Lab", "lab-2", "2lab", "a" * 21, "../x"):
        with pytest.raises(ValueError, match="lab name"):
            lab_prefix(bad)


# --- address planning -------------------------------------------------------


def test_single_segment_addresses() -> None:
    plan = make_plan(topo.load("default"), "demo")
    assert plan.prefix == "pfl-demo"
    assert plan.ns("h1") == "pfl-demo-h1"
    assert plan.pod_ns("h2", "p1") == "pfl-demo-h2-p1"
    assert plan.container_id("h2", "p1") == "demo-h2-p1"
    assert plan.ip_of("etcd") == IPv4Address("192.168.100.1")
    assert [str(plan.ip_of(h)) for h in ("h1", "h2", "h3")] == [
        "192.168.100.10", "192.168.100.11", "192.168.100.12"]
    assert plan.etcd_endpoints == ["http://192.168.100.1:2379"]
    assert all(not r for r in plan.routes.values())
    link = plan.links_of("h1")[0]
    assert (link.ifname, link.port, link.cidr) == ("eth0", "to-h1", "192.168.100.10/24")


def test_routed_plan_routers_first_and_routes_via_router() -> None:
    plan = make_plan(parse(ROUTED), "lab")
    legs = {lk.segment: lk for lk in plan.links_of("r1")}
    assert (legs["east"].ifname, str(legs["east"].ip)) == ("eth0", "192.168.21.1")
    assert (legs["west"].ifname, str(legs["west"].ip)) == ("eth1", "192.168.22.1")
    assert str(plan.ip_of("etcd")) == "192.168.21.2"
    assert [(str(r.dst), str(r.via)) for r in plan.routes["w1"]] == [
        ("192.168.21.0/24", "192.168.22.1")]
    assert plan.routes["r1"] == ()


def test_multi_hop_routes_take_the_next_router() -> None:
    plan = make_plan(topo.load("ten-hosts"), "lab")
    r2_core = next(lk.ip for lk in plan.links_of("r2") if lk.segment == "core")
    r1_north = next(lk.ip for lk in plan.links_of("r1") if lk.segment == "north")
    assert {str(r.dst): r.via for r in plan.routes["r1"]} == {"192.168.53.0/24": r2_core}
    assert {str(r.dst): r.via for r in plan.routes["n1"]} == {
        "192.168.52.0/24": r1_north, "192.168.53.0/24": r1_north}


def test_pinned_addresses_are_kept_and_skipped() -> None:
    t = parse({"hosts": {"a": {"ip": "192.168.100.10"}, "b": None}})
    plan = make_plan(t, "lab")
    assert str(plan.ip_of("a")) == "192.168.100.10"
    assert str(plan.ip_of("b")) == "192.168.100.11"


def test_pinned_address_clash_and_out_of_subnet() -> None:
    t = parse({"hosts": {"a": {"ip": "192.168.100.10"}, "b": {"ip": "192.168.100.10"}}})
    with pytest.raises(TopologyError, match=r"hosts\.b\.ip: 192\.168\.100\.10 is already used"):
        make_plan(t, "lab")
    t = parse({"hosts": {"a": {"ip": "10.1.1.1"}}})
    with pytest.raises(TopologyError, match="not a usable address"):
        make_plan(t, "lab")


def test_small_subnet_packs_hosts_and_too_small_fails() -> None:
    t = parse({"hosts": 3, "segments": {"lan": {"subnet": "192.168.7.0/29"}}})
    plan = make_plan(t, "lab")
    assert [str(plan.ip_of(h)) for h in ("h1", "h2", "h3")] == [
        "192.168.7.2", "192.168.7.3", "192.168.7.4"]
    t = parse({"hosts": 6, "segments": {"lan": {"subnet": "192.168.7.0/29"}}})
    with pytest.raises(TopologyError, match="use a larger subnet"):
        make_plan(t, "lab")


def test_plan_is_deterministic_and_serialisable() -> None:
    a = make_plan(topo.load("vxlan-routed"), "x").to_dict()
    b = make_plan(topo.load("vxlan-routed"), "x").to_dict()
    assert a == b
    assert a["routes"]["w1"] == [{"dst": "192.168.21.0/24", "via": "192.168.22.1"}]
