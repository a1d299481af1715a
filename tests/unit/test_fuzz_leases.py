"""Lease keys and values written by other nodes, fuzzed in the thousands, through the path
flanneld takes: the watch's PeerView with the manager's validator, then the backends'
pure desired state (vxlan and host-gw).

Garbage, a subnet outside the network, one overlapping our own, a PublicIP that is ours,
loopback, multicast, broadcast or IPv6 where IPv4 is due, a VtepMAC that is not unicast,
a wrong VNI or type: such a lease is never programmed, and no other peer's entries
change. Each example is tried as a new key and over each existing peer's key.
"""

from __future__ import annotations

import json
import os
from ipaddress import IPv4Address, IPv4Network, ip_address
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from backends.desired import Desired, MainRoute, PeerContext, desired_state
from core.lease import (
    Lease,
    LeaseAttrs,
    LeaseError,
    check_peer_lease,
    encode_attrs,
    subnet_key,
    vxlan_backend_data,
)
from flanneld.events import PeerView

EXAMPLES = int(os.environ.get("PYFLANNEL_FUZZ_EXAMPLES", "1000"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))

PREFIX = "/coreos.com/network/subnets"
NET = IPv4Network("10.5.0.0/16")
OWN = IPv4Network("10.5.52.0/24")
OWN_IP = IPv4Address("192.168.1.52")
OWN_LEASE = Lease(OWN, LeaseAttrs(OWN_IP, "vxlan", vxlan_backend_data(1, "0e:00:00:00:00:34")))
PEERS = [Lease(IPv4Network(f"10.5.{n}.0/24"), LeaseAttrs(
    IPv4Address(f"192.168.1.{n}"), "vxlan", vxlan_backend_data(1, f"0e:00:00:00:00:{n:02x}")))
    for n in (1, 2, 3, 7, 200)]
HOSTGW_PEERS = [Lease(p.subnet, LeaseAttrs(p.attrs.public_ip, "host-gw")) for p in PEERS]
ONLINK = (MainRoute(int(IPv4Address("192.168.1.0")), 24, 2, False),)
CTX = PeerContext(network=NET, own_key=OWN_LEASE.key, own_public_ip=str(OWN_IP), ext_index=2,
                  ext_name="eth0", main_routes=ONLINK, vni=1, dev_index=5)


def validator(lease: Lease, own: IPv4Network | None) -> None:
    """What EtcdSubnetManager._check_peer does."""
    check_peer_lease(lease, NET, own_subnet=own, own_public_ips=[OWN_IP])


subnets = st.one_of(
    st.sampled_from(["10.5.9.0/24", "10.5.255.0/24", "10.5.0.0/24",  # free, inside: valid
                     "10.5.52.0/24", "10.5.52.0/25", "10.5.52.128/25", "10.5.52.64/26",
                     "10.5.52.0/23", "10.5.48.0/20", "10.5.0.0/16", "10.5.0.0/17",  # ours
                     "10.6.1.0/24", "10.4.255.0/24", "0.0.0.0/0", "192.168.1.0/24",
                     "127.0.0.0/8", "224.0.0.0/24", "10.0.0.0/8"]),  # outside
    st.builds(lambda a, p: str(IPv4Network((a, p), strict=False)), st.integers(0, 2**32 - 1),
              st.integers(0, 32)))
keys = st.one_of(
    subnets.map(lambda s: subnet_key(IPv4Network(s))),
    subnets.map(lambda s: subnet_key(IPv4Network(s)) + "&fd00:10:5:9::-64"),
    st.sampled_from(["10.5.9.0-024", "10.5.9.1-24", "10.5.9.0-33", "10.5.9.0", "x", "",
                     "10.5.9.0-24&zz-64", "10.5.9.0-24/extra", "../10.5.9.0-24", "10.5.9.0-24\n",
                     "\uff11\uff10.5.9.0-24", "10.5.9.0-24&FD00::-64", "10.5.9.0-24&fd00::-129"]),
    st.text(max_size=30), st.just("10.5.9.0-24" + "9" * 5000))
public_ips = st.one_of(
    st.sampled_from(["192.168.1.9", "10.0.0.1", "192.168.1.52", "127.0.0.1", "127.1.2.3",
                     "224.0.0.1", "239.255.255.255", "255.255.255.255", "0.0.0.0", "fd00::1",
                     "::1", "::ffff:192.168.1.9", "192.168.1.9 ", "192.168.1.09", "", "x"]),
    st.builds(lambda a: str(IPv4Address(a)), st.integers(0, 2**32 - 1)),
    st.sampled_from([None, 3232235785, True, ["192.168.1.9"], {"ip": "192.168.1.9"},
                     "1" * 5000]))
macs = st.one_of(
    st.sampled_from(["0e:5c:00:00:00:09", "0E:5C:00:00:00:09", "01:00:5e:00:00:01",
                     "ff:ff:ff:ff:ff:ff", "00:00:00:00:00:00", "33:33:00:00:00:01",
                     "0e:5c:00:00:00", "0e:5c:00:00:00:09:00", "0e-5c-00-00-00-09",
                     "0e:5c:00:00:00:0g", "", "../../etc/passwd"]),
    st.builds(lambda b: ":".join(f"{x:02x}" for x in b), st.binary(min_size=6, max_size=6)),
    st.sampled_from([None, 1, ["0e:5c:00:00:00:09"], "0e:" * 2000]))
vnis = st.one_of(st.sampled_from([1, 1, 42, 0, -1, 2**24, 2**64, "1", None, True, 1.0]))
types = st.sampled_from(["vxlan", "vxlan", "host-gw", "", "udp", "VXLAN", None, 1])


@st.composite
def values(draw: Any) -> bytes:
    if draw(st.integers(0, 9)) == 0:  # plain garbage
        return draw(st.one_of(st.binary(max_size=40), st.sampled_from(
            [b"{", b"null", b"[]", b'"x"', b"{}", b'{"PublicIP":"192.168.1.9"}' * 2])))
    doc: dict[str, Any] = {"PublicIP": draw(public_ips), "BackendType": draw(types)}
    data = {"VNI": draw(vnis), "VtepMAC": draw(macs)}
    doc["BackendData"] = draw(st.sampled_from([data, data, data, None, "x", [data]]))
    if draw(st.booleans()):
        doc["PublicIPv6"] = draw(st.sampled_from([None, "fd00::9", "::1", "ff02::1", "x", 5]))
    if draw(st.booleans()):  # Go matches keys case-insensitively
        doc = {k.lower() if draw(st.booleans()) else k: v for k, v in doc.items()}
    return json.dumps(doc).encode()


def listing(extra: dict[str, bytes]) -> list[tuple[str, bytes, int, int]]:
    kvs = {f"{PREFIX}/{p.key}": encode_attrs(p.attrs) for p in PEERS}
    kvs.update(extra)
    return [(k, v, 0, 1) for k, v in sorted(kvs.items())]


def desired(peers: list[Lease], backend: str, previous: Desired | None = None) -> Desired:
    if backend == "host-gw":
        peers = [Lease(p.subnet, LeaseAttrs(p.attrs.public_ip, "host-gw")) if p in PEERS else p
                 for p in peers]
    return desired_state(OWN_LEASE, peers, CTX, backend, previous)


BASELINE = {b: desired(PEERS, b) for b in ("vxlan", "host-gw")}


def accepted(view: PeerView, key: str, value: bytes,
             overwritten: set[IPv4Network]) -> Lease | None:
    """The lease, if the watch would hand it to the backend; checks nothing else moved.
    The view is put back as it was afterwards."""
    events = view.put(key, value, 0, 2, OWN)
    added = [e.lease for e in events if e.kind != "removed" and e.lease is not None]
    lease = added[0] if added else None
    assert len(added) <= 1 and all(e.kind == "removed" and e.lease is not None
                                   and e.lease.subnet in overwritten
                                   for e in events if e.lease is not lease)
    others = {s: le for s, le in view.view.items()
              if s not in overwritten and (lease is None or s != lease.subnet)}
    assert others == {p.subnet: p for p in PEERS if p.subnet not in overwritten}
    original = {f"{PREFIX}/{p.key}": p for p in PEERS}.get(key)
    if original is None:
        view.delete(key, OWN)
    else:
        view.put(key, encode_attrs(original.attrs), 0, 3, OWN)
    return lease


def short_warning(msg: str) -> None:
    # keys and values of 5000 characters are quoted clipped, never whole
    assert len(msg) < 600, msg[:200]


def check_safe(d: Desired) -> None:
    """Nothing programmed points into our own subnet, at us, or at a non-unicast address."""
    for cidr, specs in d.tables.routes.items():
        assert not IPv4Network(cidr).overlaps(OWN), cidr
        for spec in specs:
            assert spec.gateway != str(OWN_IP)
    for mac, dsts in d.tables.fdb.items():
        assert not int(mac[:2], 16) & 1 and mac != "00:00:00:00:00:00", mac
        for dst in dsts:
            ip = ip_address(dst)
            assert ip.version == 4 and not (ip.is_loopback or ip.is_multicast or
                                            ip.is_unspecified) and ip != OWN_IP, dst


@settings(FUZZ, max_examples=max(50, EXAMPLES // 2))  # x6 targets x2 backends each
@given(keys, values())
def test_a_bad_lease_is_never_programmed_and_touches_no_other_peer(key: str, value: bytes
                                                                    ) -> None:
    full_key = f"{PREFIX}/{key}"
    view = PeerView(PREFIX, validator, short_warning)
    view.reset(listing({}), OWN)
    for target in [full_key] + [f"{PREFIX}/{p.key}" for p in PEERS]:  # new key, then overwrite
        overwritten = {p.subnet for p in PEERS if f"{PREFIX}/{p.key}" == target}
        lease = accepted(view, target, value, overwritten)
        if lease is not None:
            try:
                validator(lease, OWN)
            except LeaseError as exc:  # the watch let a lease through its own validator
                raise AssertionError(f"accepted {target}: {exc}") from None
        peers = [p for p in PEERS if p.subnet not in overwritten]
        for backend in ("vxlan", "host-gw"):
            # The live peers are programmed already: a newcomer never displaces them.
            d = desired(peers + ([lease] if lease else []), backend, BASELINE[backend])
            check_safe(d)
            for p in peers:  # every other peer exactly as before
                assert d.peers.get(p.key) == BASELINE[backend].peers.get(p.key), (target, p.key)
            if lease is not None and lease.key in d.peers:
                assert lease.attrs.backend_type == backend


@settings(FUZZ, max_examples=max(50, EXAMPLES // 2))
@given(st.lists(st.tuples(keys, values()), min_size=1, max_size=6))
def test_a_listing_full_of_poison_keeps_every_good_peer(bad: list[tuple[str, bytes]]) -> None:
    """A re-list (reconnect, compaction) full of bad keys: the good peers all survive."""
    extra = {f"{PREFIX}/{k}": v for k, v in bad if f"{PREFIX}/{k}" not in
             {f"{PREFIX}/{p.key}" for p in PEERS}}
    view = PeerView(PREFIX, validator, lambda msg: None)
    [snapshot] = view.reset(listing(extra), OWN)
    got = {le.subnet: le for le in snapshot.snapshot}
    for p in PEERS:
        assert got.get(p.subnet) == p
    for lease in got.values():
        validator(lease, OWN)
        assert not lease.subnet.overlaps(OWN)


def test_a_good_lease_goes_through_the_same_path() -> None:
    """The property above is not vacuous: a sound newcomer is accepted and programmed."""
    view = PeerView(PREFIX, validator, lambda msg: None)
    view.reset(listing({}), OWN)
    value = encode_attrs(LeaseAttrs(IPv4Address("192.168.1.9"), "vxlan",
                                    vxlan_backend_data(1, "0e:5c:00:00:00:09")))
    lease = accepted(view, f"{PREFIX}/10.5.9.0-24", value, set())
    assert lease is not None
    d = desired([*PEERS, lease], "vxlan")
    assert lease.key in d.peers and len(d.peers) == len(PEERS) + 1
    assert view.view == {p.subnet: p for p in PEERS}  # put back as it was


# -- regressions: a lease that passes every check must not displace a live peer --------------
# combine() used to settle clashes by key order, so a newcomer whose key sorted first took the
# neighbour/FDB entry and cut the live peer off. Programmed peers (the previous desired state)
# now win every clash.

def test_a_lease_sharing_a_peers_network_address_does_not_displace_it() -> None:
    # 10.5.2.0/23 is inside the Network and does not overlap ours: the validator lets it
    # through (it does not know SubnetLen), and "10.5.2.0-23" sorts before "10.5.2.0-24".
    rogue = Lease(IPv4Network("10.5.2.0/23"), LeaseAttrs(
        IPv4Address("192.168.1.99"), "vxlan", vxlan_backend_data(1, "0e:00:00:00:00:99")))
    validator(rogue, OWN)
    d = desired([*PEERS, rogue], "vxlan", BASELINE["vxlan"])
    victim = PEERS[1]
    assert d.peers.get(victim.key) == BASELINE["vxlan"].peers[victim.key], d.skipped


def test_a_lease_copying_a_peers_vtep_mac_does_not_displace_it() -> None:
    victim = PEERS[2]  # 10.5.3.0/24; "10.5.10.0-24" sorts before "10.5.3.0-24"
    rogue = Lease(IPv4Network("10.5.10.0/24"), LeaseAttrs(
        IPv4Address("192.168.1.99"), "vxlan", vxlan_backend_data(1, str(victim.attrs.vtep_mac))))
    validator(rogue, OWN)
    d = desired([*PEERS, rogue], "vxlan", BASELINE["vxlan"])
    assert d.peers.get(victim.key) == BASELINE["vxlan"].peers[victim.key], d.skipped
    assert rogue.key in d.skipped and rogue.key not in d.peers
