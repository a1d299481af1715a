"""subnet.env: flannel's exact format (compat §2.3, vector C), atomic writes, strict parse."""

import os
import stat
import subprocess
import sys
from ipaddress import IPv4Interface, IPv4Network, IPv6Interface, IPv6Network
from pathlib import Path

import pytest

from core.subnetenv import (
    SubnetEnv,
    SubnetEnvError,
    parse_subnet_env,
    read_previous_subnet,
    read_previous_subnets,
    read_subnet_env,
    render_subnet_env,
    write_subnet_env,
)

VECTOR_C = ("FLANNEL_NETWORK=10.5.0.0/16\nFLANNEL_SUBNET=10.5.52.1/24\n"
            "FLANNEL_MTU=1450\nFLANNEL_IPMASQ=false\n")
ENV = SubnetEnv(IPv4Network("10.5.0.0/16"), IPv4Interface("10.5.52.1/24"), 1450, False)
DUAL = SubnetEnv.for_lease(IPv4Network("10.5.0.0/16"), IPv4Network("10.5.52.0/24"), 1450,
                           True, IPv6Network("fd00:10:5::/48"), IPv6Network("fd00:10:5:52::/64"))


def test_render_vector_c() -> None:
    assert render_subnet_env(ENV) == VECTOR_C
    assert SubnetEnv.for_lease(IPv4Network("10.5.0.0/16"), IPv4Network("10.5.52.0/24"),
                               1450, False) == ENV


def test_render_dual_stack_order() -> None:
    assert render_subnet_env(DUAL).splitlines() == [
        "FLANNEL_NETWORK=10.5.0.0/16", "FLANNEL_SUBNET=10.5.52.1/24",
        "FLANNEL_IPV6_NETWORK=fd00:10:5::/48", "FLANNEL_IPV6_SUBNET=fd00:10:5:52::1/64",
        "FLANNEL_MTU=1450", "FLANNEL_IPMASQ=true"]


def test_round_trip() -> None:
    assert parse_subnet_env(VECTOR_C) == ENV
    assert parse_subnet_env(render_subnet_env(DUAL)) == DUAL
    assert DUAL.ipv6_subnet == IPv6Interface("fd00:10:5:52::1/64")


V6ONLY = SubnetEnv.for_lease(None, None, 1430, True, IPv6Network("fd00:10:5::/48"),
                             IPv6Network("fd00:10:5:52::/64"))


def test_ipv6_only_writes_only_the_ipv6_lines_and_reads_back() -> None:
    text = render_subnet_env(V6ONLY)
    assert text.splitlines() == [
        "FLANNEL_IPV6_NETWORK=fd00:10:5::/48", "FLANNEL_IPV6_SUBNET=fd00:10:5:52::1/64",
        "FLANNEL_MTU=1430", "FLANNEL_IPMASQ=true"]
    env = parse_subnet_env(text)
    assert env == V6ONLY and env.ipv4_network is None and env.ipv4_subnet is None
    with pytest.raises(SubnetEnvError, match="IPv6-only"):
        _ = env.subnet
    with pytest.raises(SubnetEnvError, match="IPv6-only"):
        _ = env.network


def test_only_enabled_families_are_written() -> None:
    # a family needs both its network and its subnet; v6 given without a network is not written
    env = SubnetEnv.for_lease(IPv4Network("10.5.0.0/16"), IPv4Network("10.5.52.0/24"), 1450,
                              False, None, IPv6Network("fd00:10:5:52::/64"))
    assert render_subnet_env(env) == VECTOR_C
    with pytest.raises(SubnetEnvError):
        SubnetEnv.for_lease(None, None, 1450, False)


def test_previous_subnets_of_an_ipv6_only_file(tmp_path: Path) -> None:
    path = tmp_path / "subnet.env"
    write_subnet_env(path, V6ONLY)
    assert read_previous_subnets(path) == (None, IPv6Network("fd00:10:5:52::/64"))


def test_tolerant_form() -> None:
    text = ("# written by flanneld\r\n  FLANNEL_NETWORK=10.5.0.0/16  \r\n\r\n"
            'export FLANNEL_SUBNET="10.5.52.1/24"\r\nFLANNEL_MTU=1450 # vxlan\r\n'
            "FLANNEL_IPMASQ=False\r\nOTHER_TOOL=whatever\r\n")
    assert parse_subnet_env(text) == ENV


@pytest.mark.parametrize("text,words", [
    ("FLANNEL_SUBNET=10.5.52.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=false\n",
     ["FLANNEL_NETWORK", "missing"]),
    ("FLANNEL_MTU=1450\nFLANNEL_IPMASQ=false\n", ["FLANNEL_NETWORK", "missing"]),
    ("FLANNEL_IPV6_NETWORK=fd00::/48\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=false\n",
     ["FLANNEL_IPV6_SUBNET", "together"]),
    ("FLANNEL_IPV6_NETWORK=fd00::/48\nFLANNEL_IPV6_SUBNET=fd01::1/64\nFLANNEL_MTU=1450\n"
     "FLANNEL_IPMASQ=false\n", ["FLANNEL_IPV6_SUBNET", "not inside"]),
    ("FLANNEL_NETWORK=10.5.0.0/16\nFLANNEL_IPV6_NETWORK=fd00::/48\n"
     "FLANNEL_IPV6_SUBNET=fd00::1/64\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=false\n",
     ["FLANNEL_SUBNET", "missing"]),
    (VECTOR_C.replace("1450", "big"), ["FLANNEL_MTU", "'big'"]),
    (VECTOR_C.replace("1450", "10"), ["FLANNEL_MTU", "68"]),
    (VECTOR_C.replace("=false", "=nope"), ["FLANNEL_IPMASQ", "'nope'"]),
    (VECTOR_C.replace("10.5.52.1/24", "10.6.52.1/24"), ["FLANNEL_SUBNET", "not inside"]),
    (VECTOR_C.replace("10.5.52.1/24", "10.5.52.1"), ["FLANNEL_SUBNET", "prefix length"]),
    (VECTOR_C.replace("10.5.0.0/16", "10.5.0.1/16"), ["FLANNEL_NETWORK", "not valid"]),
    (VECTOR_C + "FLANNEL_MTU=1400\n", ["FLANNEL_MTU", "twice"]),
    (VECTOR_C + "garbage line\n", ["line 5", "KEY=value"]),
    (VECTOR_C + "FLANNEL_IPV6_NETWORK=fd00::/48\n", ["FLANNEL_IPV6_SUBNET", "together"]),
])
def test_errors_name_the_variable(text: str, words: list[str]) -> None:
    with pytest.raises(SubnetEnvError) as info:
        parse_subnet_env(text)
    for word in words:
        assert word in str(info.value)


def test_write_is_atomic_0644_and_makes_dir_0755(tmp_path: Path) -> None:
    target = tmp_path / "run" / "flannel" / "subnet.env"
    old = os.umask(0o077)
    try:
        write_subnet_env(target, ENV)
        write_subnet_env(target, DUAL)  # replaces in place
    finally:
        os.umask(old)
    assert target.read_text() == render_subnet_env(DUAL)
    assert stat.S_IMODE(target.stat().st_mode) == 0o644
    assert stat.S_IMODE(target.parent.stat().st_mode) == 0o755
    assert [p.name for p in target.parent.iterdir()] == ["subnet.env"]  # no temp left over
    assert read_subnet_env(target) == DUAL


def test_read_errors_name_the_path(tmp_path: Path) -> None:
    with pytest.raises(SubnetEnvError, match="does not exist"):
        read_subnet_env(tmp_path / "nope.env")
    bad = tmp_path / "bad.env"
    bad.write_text("FLANNEL_MTU=1\n")
    with pytest.raises(SubnetEnvError, match=str(bad)):
        read_subnet_env(bad)


def test_read_previous_subnet(tmp_path: Path) -> None:
    path = tmp_path / "subnet.env"
    assert read_previous_subnet(path) is None
    write_subnet_env(path, DUAL)
    assert read_previous_subnets(path) == (IPv4Network("10.5.52.0/24"),
                                           IPv6Network("fd00:10:5:52::/64"))
    path.write_text("FLANNEL_SUBNET=10.5.9.1/24\nFLANNEL_MTU=junk\n")  # damaged, subnet usable
    assert read_previous_subnet(path) == IPv4Network("10.5.9.0/24")
    path.write_text("FLANNEL_SUBNET=nonsense\n")
    assert read_previous_subnet(path) is None


def test_module_imports_only_stdlib() -> None:
    code = ("import sys; import core.subnetenv; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] not in "
            "sys.stdlib_module_names and not m.startswith(('_', '__'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert eval(out) == ["core", "core.subnetenv"]
