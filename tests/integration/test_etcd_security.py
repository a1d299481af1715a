"""TLS (with client certificates) and username/password against real etcd members."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from etcd_helpers import NETWORK, attrs, until
from netns_lab.etcd import EtcdMember
from netns_lab.netns import Sandbox

from flanneld.etcd import EndpointError, EtcdClient, EtcdUnavailable, parse_endpoints
from flanneld.subnet_manager import EtcdSubnetManager

pytestmark = pytest.mark.etcd


def openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True, timeout=30)


def make_pki(d: Path) -> None:
    """A throwaway CA, a server cert for 127.0.0.1 and a client cert (EC keys: fast)."""
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    openssl("req", "-x509", *ec, "-keyout", str(d / "ca.key"), "-out", str(d / "ca.pem"),
            "-days", "1", "-subj", "/CN=pyflannel-test-ca")
    for name, ext in (("server", "subjectAltName=IP:127.0.0.1\n"
                                "extendedKeyUsage=serverAuth,clientAuth"),
                      ("client", "extendedKeyUsage=clientAuth")):
        (d / f"{name}.ext").write_text(ext + "\n")
        openssl("req", *ec, "-keyout", str(d / f"{name}.key"), "-out", str(d / f"{name}.csr"),
                "-subj", f"/CN={name}")
        openssl("x509", "-req", "-in", str(d / f"{name}.csr"), "-CA", str(d / "ca.pem"),
                "-CAkey", str(d / "ca.key"), "-CAcreateserial", "-days", "1",
                "-out", str(d / f"{name}.pem"), "-extfile", str(d / f"{name}.ext"))


@pytest.fixture
def member_factory(sandbox: Sandbox, request: pytest.FixtureRequest
                   ) -> Iterator[list[EtcdMember]]:
    members: list[EtcdMember] = []
    yield members
    for m in members:
        m.stop()
        shutil.rmtree(m.data_dir, ignore_errors=True)


def test_tls_with_client_certificates(sandbox: Sandbox, tmp_path: Path,
                                      member_factory: list[EtcdMember]) -> None:
    if shutil.which("openssl") is None:
        pytest.skip("openssl not installed")
    make_pki(tmp_path)
    member = EtcdMember(sandbox, f"tls{id(tmp_path) % 100000}", extra_args=(
        f"--cert-file={tmp_path / 'server.pem'}", f"--key-file={tmp_path / 'server.key'}",
        "--client-cert-auth", f"--trusted-ca-file={tmp_path / 'ca.pem'}"))
    member_factory.append(member)
    member.start()
    assert member.client_url.startswith("https://")
    tls = {"cafile": str(tmp_path / "ca.pem"), "certfile": str(tmp_path / "client.pem"),
           "keyfile": str(tmp_path / "client.key")}

    async def main() -> None:
        m = EtcdSubnetManager([member.client_url], "/tls/network", ttl=60,
                              cafile=tls["cafile"], certfile=tls["certfile"],
                              keyfile=tls["keyfile"])
        try:
            async def put_config() -> bool:
                try:  # the port opens a moment before etcd serves TLS
                    await m.etcd.call(lambda c: c.put(b"/tls/network/config", NETWORK.encode()))
                except EtcdUnavailable:
                    return False
                return True
            await until(put_config, 10, "etcd to serve TLS")
            lease = await asyncio.wait_for(m.acquire(attrs(1)), 10)
            assert lease.lease_id != 0
        finally:
            await m.close()
        # without a client certificate the server refuses us: no endpoint answers
        anon = EtcdClient([member.client_url], cafile=tls["cafile"], timeout=2)
        with pytest.raises(Exception, match=r"no etcd endpoint answered|certificate|handshake"):
            await asyncio.wait_for(anon.call(lambda c: c.get(b"/tls/network/config")), 10)
        await anon.close()
    asyncio.run(main())


def test_username_password_and_token_expiry(sandbox: Sandbox,
                                            member_factory: list[EtcdMember]) -> None:
    member = EtcdMember(sandbox, f"auth{id(member_factory) % 100000}",
                        extra_args=("--auth-token", "simple", "--auth-token-ttl", "1"))
    member_factory.append(member)
    member.start()
    member.etcdctl("user", "add", "root:s3cret")
    member.etcdctl("auth", "enable")
    member.etcdctl("--user", "root:s3cret", "put", "/auth/network/config", NETWORK)

    async def main() -> None:
        m = EtcdSubnetManager([member.client_url], "/auth/network", ttl=60,
                              username="root", password="s3cret")
        try:
            first = await asyncio.wait_for(m.acquire(attrs(1)), 10)

            async def token_renewed() -> bool:  # the 1 s token expires while we idle
                await m.etcd.call(lambda c: c.get(b"/auth/network/config"))
                return m.etcd.reauthentications >= 1
            await until(token_renewed, 10, "an expired token to be renewed",
                        interval=1.5)  # idle longer than the TTL: use renews the token
            again = await asyncio.wait_for(m.acquire(attrs(1)), 10)
            assert again.subnet == first.subnet
        finally:
            await m.close()
    asyncio.run(main())


def test_endpoint_parsing_and_flag_errors() -> None:
    eps = parse_endpoints("http://10.0.0.1:2379, https://[fd00::1]:4001,10.0.0.2")
    assert [str(e) for e in eps] == ["http://10.0.0.1:2379", "https://[fd00::1]:4001",
                                     "http://10.0.0.2:2379"]
    for bad, words in (("ftp://x:1", "scheme"), ("", "no etcd endpoint"),
                       ("http://h:99999", "99999"), ("http://h:1/path", "URL like")):
        with pytest.raises(EndpointError, match=words):
            parse_endpoints(bad)
    with pytest.raises(EndpointError, match="together"):
        EtcdClient("http://127.0.0.1:1", certfile="/x")
    with pytest.raises(EndpointError, match="--etcd-cafile /nonexistent"):
        EtcdClient("https://127.0.0.1:1", cafile="/nonexistent")
    with pytest.raises(EndpointError, match="username"):
        EtcdClient("http://127.0.0.1:1", username="root")
