"""etcd over IPv6: a real etcd listening on [::1] only, reached through an IPv6-literal
endpoint (`http://[::1]:port`, and https with a certificate for IP ::1), a lease acquired
and the watch running over it. Before the fix the brackets were lost on the way to gRPC
(the target became `ipv6:[::1:port]:443`) and nothing ever connected."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
from collections.abc import Iterator
from ipaddress import IPv4Address
from pathlib import Path

import pytest
from etcd_helpers import put_config
from netns_lab.etcd import EtcdMember, free_port
from netns_lab.netns import Sandbox

from core.lease import LeaseAttrs, vxlan_backend_data
from flanneld.events import LeaseEvent
from flanneld.subnet_manager import EtcdSubnetManager

pytestmark = pytest.mark.etcd

DUAL = '{"EnableIPv6":true,"Network":"10.5.0.0/16","IPv6Network":"fd00:10:5::/48"}'


@pytest.fixture
def members(sandbox: Sandbox) -> Iterator[list[EtcdMember]]:
    if not Path("/proc/net/if_inet6").exists() or "00000000000000000000000000000001" not in \
            Path("/proc/net/if_inet6").read_text():
        pytest.skip("no ::1 on lo here")
    started: list[EtcdMember] = []
    yield started
    for m in started:
        m.stop()
        shutil.rmtree(m.data_dir, ignore_errors=True)


def openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True, timeout=30)


def make_pki6(d: Path) -> None:
    """A throwaway CA and a server certificate for IP ::1 (EC keys: fast)."""
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    openssl("req", "-x509", *ec, "-keyout", str(d / "ca.key"), "-out", str(d / "ca.pem"),
            "-days", "1", "-subj", "/CN=pyflannel-test-ca6")
    (d / "server.ext").write_text("subjectAltName=IP:::1\nextendedKeyUsage=serverAuth\n")
    openssl("req", *ec, "-keyout", str(d / "server.key"), "-out", str(d / "server.csr"),
            "-subj", "/CN=server6")
    openssl("x509", "-req", "-in", str(d / "server.csr"), "-CA", str(d / "ca.pem"),
            "-CAkey", str(d / "ca.key"), "-CAcreateserial", "-days", "1",
            "-out", str(d / "server.pem"), "-extfile", str(d / "server.ext"))


def acquire_and_watch(url: str, prefix: str, cafile: str | None = None
                      ) -> tuple[str, list[LeaseEvent]]:
    mine = LeaseAttrs(IPv4Address("192.168.0.7"), "vxlan",
                      vxlan_backend_data(1, "0e:00:00:00:00:07"))

    async def main() -> tuple[str, list[LeaseEvent]]:
        m = EtcdSubnetManager([url], prefix, ttl=60, cafile=cafile)
        try:
            lease = await asyncio.wait_for(m.acquire(mine), 20)
            events: list[LeaseEvent] = []
            watch = m.watch(lambda: lease.ipv4_subnet)
            events.append(await asyncio.wait_for(watch.__anext__(), 20))
            await watch.aclose()
            return lease.key, events
        finally:
            await m.close()
    return asyncio.run(main())


def test_ipv6_literal_endpoint_reaches_etcd(sandbox: Sandbox, etcd_prefix: str,
                                            members: list[EtcdMember]) -> None:
    member = EtcdMember(sandbox, f"six{free_port('::1') % 100000}", host="::1")
    members.append(member)
    member.start()
    assert member.client_url.startswith("http://[::1]:")
    put_config(member, etcd_prefix, DUAL)
    key, events = acquire_and_watch(member.client_url, etcd_prefix)
    assert "&fd00:10:5:" in key
    assert events[0].kind == "snapshot" and events[0].snapshot == ()
    assert member.etcdctl("get", "--prefix", f"{etcd_prefix}/subnets/", "--keys-only").strip() \
        == f"{etcd_prefix}/subnets/{key}"


def test_ipv6_literal_endpoint_with_tls(sandbox: Sandbox, etcd_prefix: str, tmp_path: Path,
                                        members: list[EtcdMember]) -> None:
    if shutil.which("openssl") is None:
        pytest.skip("openssl not installed")
    make_pki6(tmp_path)
    member = EtcdMember(sandbox, f"six{free_port('::1') % 100000}", host="::1", extra_args=(
        f"--cert-file={tmp_path / 'server.pem'}", f"--key-file={tmp_path / 'server.key'}"))
    members.append(member)
    member.start()
    assert member.client_url.startswith("https://[::1]:")
    member.etcdctl("--cacert", str(tmp_path / "ca.pem"), "put", f"{etcd_prefix}/config", DUAL)
    key, events = acquire_and_watch(member.client_url, etcd_prefix,
                                    cafile=str(tmp_path / "ca.pem"))
    assert "&fd00:10:5:" in key and events[0].kind == "snapshot"
