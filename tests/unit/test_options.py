"""flanneld options: flags, env, YAML, precedence, errors, and the docs staying current."""

from __future__ import annotations

import os
import subprocess
import sys
from ipaddress import IPv4Address, IPv6Address
from pathlib import Path

import pytest

from flanneld import __version__
from flanneld.options import (
    FLAGS,
    OptionsError,
    config_path,
    format_help,
    load_options,
    parse_options,
    render_markdown,
)

DOCS = Path(__file__).resolve().parents[2] / "docs" / "flanneld.md"


def test_defaults_match_flannel_and_ours() -> None:
    o = parse_options([])
    assert o.etcd_endpoints == ("http://127.0.0.1:4001", "http://127.0.0.1:2379")
    assert o.etcd_prefix == "/coreos.com/network"
    assert o.subnet_file == Path("/run/flannel/subnet.env")
    assert o.subnet_lease_renew_margin == 60
    assert o.ip_masq is False and o.iptables_forward_rules is True
    assert o.healthz_ip == "127.0.0.1" and o.healthz_port == 0
    assert o.state_dir == Path("/var/lib/pyflannel")
    assert o.subnet_lease_ttl == 86400 and o.resync_interval == 10.0
    assert o.cni_socket == Path("/run/flannel/cni.sock")
    assert o.iface == () and o.public_ip is None and o.warnings == ()


def test_go_flag_spellings() -> None:
    o = parse_options(["-iface", "eth0", "--iface=10.0.0.1", "-ip-masq", "--healthz-port",
                       "8081", "--public-ip=192.168.64.3", "--etcd-endpoints=http://a:2379"])
    assert o.iface == ("eth0", "10.0.0.1")
    assert o.ip_masq is True and o.healthz_port == 8081
    assert o.public_ip == IPv4Address("192.168.64.3")
    assert o.etcd_endpoints == ("http://a:2379",)
    assert parse_options(["--ip-masq=false"]).ip_masq is False
    assert parse_options(["--iptables-forward-rules=0"]).iptables_forward_rules is False


def test_cni_socket_follows_subnet_file_and_empty_disables() -> None:
    o = parse_options(["--subnet-file", "/run/h1/subnet.env"])
    assert o.cni_socket == Path("/run/h1/cni.sock")
    assert parse_options(["--cni-socket="]).cni_socket is None
    assert parse_options(["--cni-socket", "/x.sock"]).cni_socket == Path("/x.sock")


def test_env_sets_flags_and_cli_wins() -> None:
    env = {"FLANNELD_ETCD_PREFIX": "/env/net", "FLANNELD_IP_MASQ": "true",
           "FLANNELD_IFACE": "eth1,eth2", "FLANNELD_HEALTHZ_PORT": "9000",
           "FLANNELD_SUBNET_LEASE_TTL": ""}  # empty: ignored, as flannel does
    o = parse_options(["--etcd-prefix=/cli/net"], env)
    assert o.etcd_prefix == "/cli/net"
    assert o.ip_masq is True and o.iface == ("eth1", "eth2") and o.healthz_port == 9000
    assert o.subnet_lease_ttl == 86400
    # A repeated CLI flag replaces the env list rather than adding to it.
    assert parse_options(["--iface", "eth9"], env).iface == ("eth9",)


def test_yaml_keys_and_precedence() -> None:
    text = """
etcd_endpoints: [http://10.0.0.1:2379, http://10.0.0.2:2379]
etcd-prefix: /yaml/net
iface: [eth0, 192.168.1.5]
ip-masq: true
subnet_lease_ttl: 30
resync-interval: 0.5
healthz-port: 8081
public-ip:
"""
    o = parse_options([], {"FLANNELD_HEALTHZ_PORT": "9000"}, text)
    assert o.etcd_endpoints == ("http://10.0.0.1:2379", "http://10.0.0.2:2379")
    assert o.etcd_prefix == "/yaml/net" and o.iface == ("eth0", "192.168.1.5")
    assert o.ip_masq is True and o.subnet_lease_ttl == 30 and o.resync_interval == 0.5
    assert o.healthz_port == 9000  # env beats YAML
    assert o.public_ip is None  # an empty key keeps the default
    assert parse_options(["--healthz-port=1"], {"FLANNELD_HEALTHZ_PORT": "9000"},
                         text).healthz_port == 1  # CLI beats env
    assert parse_options([], {}, "cni-socket: ''").cni_socket is None
    assert parse_options([], {}, "").etcd_prefix == "/coreos.com/network"


@pytest.mark.parametrize(("argv", "env", "text", "needles"), [
    (["--healthz-port", "http"], {}, None, ["--healthz-port", "'http'", "0..65535"]),
    (["--subnet-lease-renew-margin=1440"], {}, None,
     ["--subnet-lease-renew-margin", "1440", "1..1439"]),
    (["--subnet-lease-renew-margin=0"], {}, None, ["1..1439"]),
    (["--subnet-lease-ttl=2"], {}, None, ["--subnet-lease-ttl", "'2'", "5.."]),
    (["--resync-interval=soon"], {}, None, ["--resync-interval", "'soon'", "seconds"]),
    (["--public-ip=10.0.0.300"], {}, None, ["--public-ip", "10.0.0.300", "IPv4 address"]),
    (["--iface=fd00::1/64"], {}, None, ["--iface", "IP address"]),
    (["--iface=has/slash"], {}, None, ["--iface", "interface name"]),
    (["--iface-regex=(eth"], {}, None, ["--iface-regex", "(eth", "regular expression"]),
    (["--etcd-endpoints=unix:///x.sock"], {}, None, ["--etcd-endpoints", "not a URL"]),
    (["--etcd-endpoints=http://h:99999"], {}, None, ["--etcd-endpoints", "bad port"]),
    (["--etcd-prefix=coreos"], {}, None, ["--etcd-prefix", "absolute"]),
    (["--log-level=loud"], {}, None, ["--log-level", "'loud'", "debug"]),
    (["--ip-masq=yes"], {}, None, ["--ip-masq", "'yes'", "true or false"]),
    (["--etcd-certfile=/c.pem"], {}, None, ["--etcd-certfile", "together"]),
    (["--kube-subnet-mgr"], {}, None, ["--kube-subnet-mgr", "not supported: use etcd"]),
    ([], {"FLANNELD_KUBE_SUBNET_MGR": "true"}, None, ["FLANNELD_KUBE_SUBNET_MGR", "use etcd"]),
    (["--ifac=eth0"], {}, None, ["unknown flag", "--ifac", "--iface"]),
    (["eth0"], {}, None, ["unexpected argument", "'eth0'"]),
    (["--iface"], {}, None, ["--iface needs a value"]),
    ([], {"FLANNELD_HEALTHZ_PORT": "-1"}, None, ["FLANNELD_HEALTHZ_PORT", "'-1'", "0..65535"]),
    ([], {}, "healthz-port: big", ["config file", "healthz-port", "'big'", "0..65535"]),
    ([], {}, "ifaces: [eth0]", ["config file", "unknown flag", "ifaces"]),
    ([], {}, "- just a list", ["config file", "mapping"]),
    ([], {}, "a: [unclosed", ["config file", "YAML"]),
    ([], {}, "config: other.yaml", ["config file", "cannot be set"]),
    ([], {}, "public-ip: [1.2.3.4, 1.2.3.5]", ["public-ip", "one value"]),
])
def test_errors_name_flag_value_and_rule(argv: list[str], env: dict[str, str],
                                         text: str | None, needles: list[str]) -> None:
    with pytest.raises(OptionsError) as exc:
        parse_options(argv, env, text)
    for needle in needles:
        assert needle in str(exc.value)


def test_ignored_flags_warn_and_unsupported_false_is_fine() -> None:
    o = parse_options(["--iptables-resync", "5", "-v=2", "--ip-blackhole-route",
                       "--kube-subnet-mgr=false", "--public-ipv6=fd00::1"])
    assert len(o.warnings) == 3 and o.public_ipv6 == IPv6Address("fd00::1")
    assert any("--iptables-resync" in w and "ignored" in w for w in o.warnings)
    assert any("--v" in w and "--log-level" in w for w in o.warnings)


def test_help_and_version_are_reported_not_acted_on() -> None:
    assert parse_options(["-h"]).help and parse_options(["--help"]).help
    assert parse_options(["--version"]).version


def test_config_file_path_and_loading(tmp_path: Path) -> None:
    cfg = tmp_path / "flanneld.yaml"
    cfg.write_text("etcd-prefix: /from/file\nip_masq: true\n")
    assert config_path(["--config", str(cfg)], {}) == cfg
    assert config_path([], {"FLANNELD_CONFIG": str(cfg)}) == cfg
    o = load_options(["--config", str(cfg)], {})
    assert o.etcd_prefix == "/from/file" and o.ip_masq and o.config == cfg
    with pytest.raises(OptionsError, match=r"--config.*cannot read"):
        load_options(["--config", str(tmp_path / "missing.yaml")], {})


def test_every_implemented_flag_is_in_help() -> None:
    text = format_help()
    for f in FLAGS:
        if f.origin in ("flannel", "pyflannel"):
            assert f"--{f.name}" in text


def test_docs_hold_the_current_flag_table() -> None:
    """docs/flanneld.md must contain render_markdown() verbatim: regenerate it if this fails
    (python -c 'from pathlib import Path; from flanneld.options import update_docs;
    update_docs(Path("docs/flanneld.md"))')."""
    assert render_markdown() in DOCS.read_text()


def _flanneld(*args: str) -> subprocess.CompletedProcess[str]:
    exe = Path(sys.executable).with_name("flanneld")
    return subprocess.run([str(exe), *args], capture_output=True, text=True, timeout=30,
                          env={"PATH": os.environ.get("PATH", "")})


def test_cli_help_version_and_errors() -> None:
    done = _flanneld("--help")
    assert done.returncode == 0 and "--subnet-lease-ttl" in done.stdout
    done = _flanneld("--version")
    assert done.returncode == 0 and done.stdout.strip() == __version__
    done = _flanneld("--kube-subnet-mgr")
    assert done.returncode == 2 and "not supported: use etcd" in done.stderr
    done = _flanneld("--healthz-port", "http")
    assert done.returncode == 2 and "--healthz-port" in done.stderr and "0..65535" in done.stderr


def test_public_ipv6_and_ipv6_iface() -> None:
    o = parse_options(["--iface=FD72::3", "--iface", "eth0"],
                      {"FLANNELD_PUBLIC_IPV6": "fd72:0:0::9"})
    assert o.public_ipv6 == IPv6Address("fd72::9") and o.iface == ("fd72::3", "eth0")
    assert not o.warnings
    with pytest.raises(OptionsError, match="IPv6 address"):
        parse_options(["--public-ipv6=10.0.0.1"])
