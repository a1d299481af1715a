"""/readyz follows the control plane: no config, etcd lost and back, no free subnet;
and start-up failures exit 1 with a clear message."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from e2e_cluster import Cluster, Host, Underlay, http_get, metric, readyz, tail
from netns_lab.netns import wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.netns, pytest.mark.slow,
              pytest.mark.xdist_group("flanneld-readiness")]

# Room for exactly one subnet, so a second node finds the network full.
CONFIG = {"Network": "10.7.0.0/16", "SubnetMin": "10.7.1.0", "SubnetMax": "10.7.1.0",
          "Backend": {"Type": "host-gw"}}


@pytest.fixture(scope="module")
def rd(underlay: Underlay) -> Iterator[Cluster]:
    c = Cluster(underlay, "rd", CONFIG)
    try:
        c.add_etcd("etcd", 240)
        yield c
    finally:
        c.teardown()


def wait_readyz(c: Cluster, h: Host, code: int, needle: str, timeout: float = 20) -> str:
    def check() -> str | None:
        got, body = readyz(h)
        return body if got == code and needle in body else None
    try:
        return wait_for(check, timeout, what=f"/readyz {code} with {needle!r}")
    except TimeoutError as exc:
        raise AssertionError(f"{exc}; last: {readyz(h)}\n{tail(h.log)}") from None


def test_readyz_follows_config_and_etcd(rd: Cluster) -> None:
    h1 = rd.add_host("h1")
    rd.start(h1)
    body = wait_readyz(rd, h1, 503, "waiting for the network config")
    assert f"{rd.prefix}/config" in body
    assert http_get(h1, "/healthz") == (200, "flanneld is running\n")
    rd.put_config()
    rd.wait_ready(h1)
    # ready means pods can be served: the CNI socket is there before /readyz says 200
    assert (h1.dir / "cni.sock").is_socket()
    assert readyz(h1) == (200, "flanneld is ready\n")
    assert metric(h1, "flanneld_lease_expiry_timestamp_seconds") > 0

    rd.etcd.stop()
    try:
        wait_readyz(rd, h1, 503, "etcd unreachable")
        assert metric(h1, "flanneld_ready") == 0
    finally:
        rd.etcd.start()
    rd.wait_ready(h1)
    assert metric(h1, "flanneld_etcd_watch_restarts_total") >= 1


def test_readyz_says_out_of_subnets(rd: Cluster) -> None:
    rd.put_config()
    # A reservation (no etcd lease) on the only subnet, whoever else holds it or not.
    key = f"{rd.prefix}/subnets/10.7.1.0-24"
    if not rd.etcd.etcdctl("get", key).strip():
        rd.etcd.etcdctl("put", key, '{"PublicIP":"192.168.100.199","PublicIPv6":null,'
                        '"BackendType":"host-gw"}')
    h2 = rd.add_host("h2")
    rd.start(h2)
    try:
        body = wait_readyz(rd, h2, 503, "out of subnets")
        assert "10.7.0.0/16" in body
        text = http_get(h2, "/metrics")[1]
        assert "flanneld_lease_expiry_timestamp_seconds" not in text  # no lease, no expiry
        assert not h2.subnet_file.exists()  # nothing for the CNI plugin until we have one
    finally:
        assert rd.stop(h2) == 0


def test_no_usable_interface_exits_1(rd: Cluster) -> None:
    rd.put_config()  # the interface is chosen once the config is read
    h3 = rd.add_host("h3")
    rd.start(h3, "--iface", "nosuch0")
    assert h3.proc is not None
    code = h3.proc.wait(timeout=30)
    log = h3.log.read_text()
    assert code == 1, log
    assert "--iface nosuch0: no such interface" in log
