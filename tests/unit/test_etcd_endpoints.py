"""`--etcd-endpoints` to gRPC targets: IPv6 literals keep their brackets (issue 12)."""

from __future__ import annotations

import pytest

from flanneld.etcd import Endpoint, EndpointError, EtcdClient, channel_target, parse_endpoints


@pytest.mark.parametrize(("spec", "want"), [
    ("http://[fd72::10]:2379", ("http", "fd72::10", 2379, "[fd72::10]:2379")),
    ("https://[FD72::10]:4001", ("https", "fd72::10", 4001, "[fd72::10]:4001")),
    ("http://[fd72::10]", ("http", "fd72::10", 2379, "[fd72::10]:2379")),
    ("[::1]:2379", ("http", "::1", 2379, "[::1]:2379")),
    ("https://[2001:db8::1]:2379/", ("https", "2001:db8::1", 2379, "[2001:db8::1]:2379")),
    ("http://10.0.0.1:2379", ("http", "10.0.0.1", 2379, "10.0.0.1:2379")),
    ("etcd.example:2379", ("http", "etcd.example", 2379, "etcd.example:2379")),
])
def test_ipv6_literals_keep_their_brackets(spec: str, want: tuple[str, str, int, str]) -> None:
    (ep,) = parse_endpoints(spec)
    assert (ep.scheme, ep.host, ep.port, ep.target) == want
    assert channel_target(ep.grpc_host, ep.port) == ep.target  # what aetcd's channel gets
    assert str(ep) == f"{ep.scheme}://{ep.target}"


def test_the_client_hands_aetcd_a_bracketed_host() -> None:
    client = EtcdClient("http://[fd72::10]:2379,https://[fd72::11]:2380",
                        cafile=None)
    inner, _ = client._current()
    assert (inner._host, inner._port) == ("[fd72::10]", 2379)
    # aetcd builds f"{host}:{port}": a bare fd72::10 gave fd72::10:2379 (port 443 to gRPC)
    assert f"{inner._host}:{inner._port}" == "[fd72::10]:2379"
    assert channel_target("[fd72::11]", 2380) == channel_target("fd72::11", 2380) == \
        "[fd72::11]:2380"


@pytest.mark.parametrize(("spec", "words"), [
    ("http://fd72::10:2379", "needs brackets"),
    ("fd72::10", "needs brackets"),
    ("http://[fd72::10]:x", "etcd endpoint"),
    ("http://[fd72::zz]:2379", "etcd endpoint"),
])
def test_bad_ipv6_endpoints_say_why(spec: str, words: str) -> None:
    with pytest.raises(EndpointError, match=words):
        parse_endpoints(spec)


def test_endpoint_dataclass_target() -> None:
    assert Endpoint("https", "fd00::1", 2379).target == "[fd00::1]:2379"
    assert Endpoint("http", "127.0.0.1", 2379).grpc_host == "127.0.0.1"
