"""The VtepMAC's rules without root: the file bound to a node, and who yields a clash."""

from __future__ import annotations

import random
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network

import pytest

from backends.vtep_mac import (
    fresh_mac,
    holders,
    must_yield,
    node_identity,
    read_mac_file,
    render_mac_file,
)
from core.lease import Lease, LeaseAttrs, vxlan_backend_data

MAC = "0e:11:22:33:44:55"
ME = node_identity("abc123\n", "192.168.64.2", "h1")


def lease(n: int, mac: str = MAC, rev: int = 0, vni: int = 1, kind: str = "vxlan") -> Lease:
    return Lease(IPv4Network(f"10.5.{n}.0/24"),
                 LeaseAttrs(IPv4Address(f"192.168.64.{n}"), kind,
                            vxlan_backend_data(vni, mac) if kind == "vxlan" else None),
                 mod_revision=rev)


# --- the file ---------------------------------------------------------------------------


def test_identity_names_machine_address_and_host() -> None:
    assert ME == "machine-id=abc123 public-ip=192.168.64.2 hostname=h1"
    assert node_identity(None, "192.168.64.2", "") == (
        "machine-id=- public-ip=192.168.64.2 hostname=-")
    # Lab hosts share a machine-id and a hostname; the address tells them apart.
    assert node_identity("abc123", "192.168.64.3", "h1") != ME


def test_bound_file_round_trips() -> None:
    text = render_mac_file(MAC, ME)
    assert text == f"{MAC}\nnode {ME}\n"
    f = read_mac_file(text, ME)
    assert (f.mac, f.status) == (MAC, "bound")


def test_a_copy_from_another_node_is_not_reused() -> None:
    other = node_identity("abc123", "192.168.64.3", "h3")
    f = read_mac_file(render_mac_file(MAC, other), ME)
    assert (f.mac, f.status, f.detail) == (None, "foreign", other)


@pytest.mark.parametrize("text", [MAC, MAC + "\n", "  0E:11:22:33:44:55  \n\n"])
def test_the_old_one_line_format_is_adopted(text: str) -> None:
    f = read_mac_file(text, ME)
    assert (f.mac, f.status) == (MAC, "legacy")


@pytest.mark.parametrize("text", ["", "nonsense\n", "01:00:5e:00:00:01\n",
                                  f"{MAC}\nsomething else\n", f"{MAC}\nnode {ME}\nmore\n"])
def test_garbage_is_ignored(text: str) -> None:
    f = read_mac_file(text, ME)
    assert (f.mac, f.status) == (None, "invalid") and f.detail


# --- a peer holds our MAC --------------------------------------------------------------------


def test_holders_are_other_vxlan_nodes_with_our_mac_and_vni() -> None:
    own = lease(2)
    peers = [own, lease(3), lease(4, mac="0e:00:00:00:00:04"), lease(5, vni=2),
             lease(6, kind="host-gw"), lease(7, mac=MAC.upper())]
    stale_of_ours = Lease(IPv4Network("10.5.9.0/24"), own.attrs)  # same PublicIP
    got = holders(MAC, 1, own.key, own.attrs.public_ip, [*peers, stale_of_ours])
    assert [p.key for p in got] == ["10.5.3.0-24", "10.5.7.0-24"]


def test_the_newer_lease_yields() -> None:
    me_ip = IPv4Address("192.168.64.2")
    older, newer = lease(3, rev=10), lease(4, rev=30)
    assert must_yield(20, me_ip, [older, newer]) == older
    assert must_yield(5, me_ip, [older, newer]) is None  # we are the oldest: we keep it


def test_without_revisions_the_higher_public_ip_yields() -> None:
    assert must_yield(0, IPv4Address("192.168.64.5"), [lease(3), lease(9)]) == lease(3)
    assert must_yield(0, IPv4Address("192.168.64.2"), [lease(3), lease(9)]) is None
    # Equal revisions cannot tell either.
    assert must_yield(7, IPv4Address("192.168.64.5"), [lease(3, rev=7)]) == lease(3, rev=7)


@pytest.mark.parametrize("seed", range(20))
def test_exactly_one_holder_keeps_the_mac(seed: int) -> None:
    """Every node judges the same leases; all but one yield, whatever the order."""
    rng = random.Random(seed)
    k = rng.randrange(2, 7)
    revs = [r if rng.random() < 0.7 else 0 for r in rng.sample(range(1, 100), k)]
    nodes = [lease(n, rev=r) for n, r in zip(range(2, 2 + k), revs, strict=True)]
    keepers = []
    for me in nodes:
        others = [p for p in nodes if p is not me]
        clash = holders(MAC, 1, me.key, me.attrs.public_ip, others)
        if must_yield(me.mod_revision, me.attrs.public_ip, clash) is None:
            keepers.append(me.key)
    assert len(keepers) <= 1, keepers  # of any two holders, one yields to the other
    if all(revs) or not any(revs):
        assert len(keepers) == 1, keepers  # a total order: the oldest keeps it


def test_fresh_mac_avoids_macs_in_use() -> None:
    assert fresh_mac(MAC, ["0e:00:00:00:00:01"]) == MAC
    assert fresh_mac(MAC, [MAC.upper()]) is None


def test_the_ipv6_vtep_mac_clashes_by_its_own_fields() -> None:
    def dual(n: int, mac6: str, rev: int = 0, v4: bool = True) -> Lease:
        attrs = LeaseAttrs(IPv4Address(f"192.168.64.{n}" if v4 else "0.0.0.0"), "vxlan",
                           vxlan_backend_data(1, f"0e:00:00:00:04:{n:02x}") if v4 else None,
                           public_ipv6=IPv6Address(f"fd72::{n}"),
                           backend_v6_data=vxlan_backend_data(1, mac6))
        return Lease(IPv4Network(f"10.5.{n}.0/24") if v4 else None, attrs,
                     ipv6_subnet=IPv6Network(f"fc00:5:0:{n}::/64"), mod_revision=rev)
    own = dual(2, MAC, rev=20, v4=False)
    peers = [own, dual(3, MAC, rev=10, v4=False), dual(4, "0e:00:00:00:00:04"), dual(5, MAC),
             lease(6)]  # lease 6 has our MAC as its IPv4 VtepMAC: another device, no clash
    got = holders(MAC, 1, own.key, IPv6Address("fd72::2"), peers, v6=True)
    assert [p.attrs.public_ipv6 for p in got] == [IPv6Address("fd72::3"), IPv6Address("fd72::5")]
    assert must_yield(20, IPv6Address("fd72::2"), got, v6=True) == got[0]  # rev 10 is older
    assert must_yield(5, IPv6Address("fd72::2"), got, v6=True) is None
