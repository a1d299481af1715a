"""subnet.env truncated (a crash mid-write on a filesystem without atomic rename, a full
disk) or garbled (bit rot, an editor), in the thousands.

- The strict reader (the CNI plugin's) gives a valid SubnetEnv or a SubnetEnvError that
  names the file and the variable; never anything else.
- The lenient reader flanneld uses at start (`read_previous_subnet`: "prefer the subnet
  of the last run") never raises, and a truncated file never makes it prefer a subnet
  the file did not hold: what it returns is the original subnet or one that cannot fit
  the network config (wrong length), which acquire ignores.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from ipaddress import IPv4Network, IPv6Network
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core.subnetenv import (
    SubnetEnv,
    SubnetEnvError,
    parse_subnet_env,
    read_previous_subnets,
    read_subnet_env,
    render_subnet_env,
)

EXAMPLES = int(os.environ.get("PYFLANNEL_FUZZ_EXAMPLES", "1000"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
KEYS = ("FLANNEL_NETWORK", "FLANNEL_SUBNET", "FLANNEL_MTU", "FLANNEL_IPMASQ",
        "FLANNEL_IPV6_NETWORK", "FLANNEL_IPV6_SUBNET")


@st.composite
def envs(draw: st.DrawFn) -> SubnetEnv:
    plen = draw(st.integers(8, 24))
    network = IPv4Network((draw(st.integers(0, 2**32 - 1)), plen), strict=False)
    slen = draw(st.integers(plen + 2, 30))
    index = draw(st.integers(1, (1 << (slen - plen)) - 1))
    subnet = IPv4Network((int(network.network_address) + (index << (32 - slen)), slen))
    v6 = (IPv6Network("fd00:10:5::/48"), IPv6Network(f"fd00:10:5:{index % 65536:x}::/64")) \
        if draw(st.booleans()) else (None, None)
    return SubnetEnv.for_lease(network, subnet, draw(st.integers(68, 65535)), draw(st.booleans()),
                               *v6)


def strict(text: str) -> SubnetEnv | None:
    try:
        return parse_subnet_env(text)
    except SubnetEnvError as exc:
        msg = str(exc)
        assert msg.startswith("subnet.env") and len(msg) < 400, msg
        return None


@pytest.fixture(scope="module")
def scratch(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Thousands of small writes: in memory when /dev/shm is there."""
    shm = Path("/dev/shm")
    if shm.is_dir() and os.access(shm, os.W_OK):
        d = Path(tempfile.mkdtemp(prefix="pfl-fuzz-", dir=shm))
        yield d
        shutil.rmtree(d, ignore_errors=True)
    else:
        yield tmp_path_factory.mktemp("subnet-env")


@settings(FUZZ, max_examples=max(50, EXAMPLES // 10))  # x every byte of the file
@given(env=envs(), newline=st.sampled_from(["\n", "\r\n"]))
def test_truncated_at_every_byte(scratch: Path, env: SubnetEnv, newline: str) -> None:
    text = render_subnet_env(env).replace("\n", newline)
    path = scratch / "truncated.env"
    start = text.index("FLANNEL_SUBNET=")
    end = text.index(newline, start) + len(newline)
    for cut in range(len(text)):
        part = text[:cut]
        got = strict(part)
        if got is not None:  # only a cut after a whole file's worth of lines can parse
            assert got.network == env.network and got.subnet.network == env.subnet.network
        if start <= cut <= end:  # cuts through FLANNEL_SUBNET: what flanneld would prefer
            path.write_text(part)
            previous, _ = read_previous_subnets(path)
            if previous is not None and previous.prefixlen == env.subnet.network.prefixlen:
                assert previous == env.subnet.network, (part, previous)
    assert strict(text) == env


edits = st.lists(st.tuples(st.integers(0, 400), st.sampled_from(["flip", "drop", "insert"]),
                           st.binary(min_size=1, max_size=4)), min_size=1, max_size=6)


@settings(FUZZ, max_examples=EXAMPLES)
@given(env=envs(), changes=edits, head=st.sampled_from([b"", b"\xef\xbb\xbf", b"# x\n"]))
def test_garbled_files(scratch: Path, env: SubnetEnv, changes: list[tuple[int, str, bytes]],
                       head: bytes) -> None:
    data = bytearray(head + render_subnet_env(env).encode())
    for pos, how, junk in changes:
        pos %= len(data) + 1
        if how == "flip" and pos < len(data):
            data[pos] ^= junk[0] or 1
        elif how == "drop":
            del data[pos:pos + len(junk)]
        else:
            data[pos:pos] = junk
    path = scratch / "garbled.env"
    path.write_bytes(bytes(data))
    try:
        got = read_subnet_env(path)
    except SubnetEnvError as exc:
        assert str(path) in str(exc) and len(str(exc)) < 500, exc
    else:  # at least one complete family (a garbled IPv4 pair may leave an IPv6-only file)
        if got.ipv4_subnet is not None:
            assert got.subnet.network.subnet_of(got.network)
        else:
            assert got.ipv6_subnet is not None and got.ipv6_network is not None
            assert got.ipv6_subnet.network.subnet_of(got.ipv6_network)
        assert 68 <= got.mtu <= 65535
    v4, v6 = read_previous_subnets(path)  # never raises
    assert v4 is None or isinstance(v4, IPv4Network)
    assert v6 is None or isinstance(v6, IPv6Network)


def test_missing_and_unreadable_files_are_named(tmp_path: Path) -> None:
    for path in (tmp_path / "none.env", tmp_path):
        try:
            read_subnet_env(path)
        except SubnetEnvError as exc:
            assert str(path) in str(exc)
        else:
            raise AssertionError(f"{path} parsed")
        assert read_previous_subnets(path) == (None, None)
