"""A lab's etcd security settings: `etcd: {tls: true, auth: true}`, and the certificates."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from netns_lab.plan import make_plan
from netns_lab.tls import make_pki, passwords
from netns_lab.topology import TopologyError, load, parse


def test_tls_and_auth_parse_plan_https_and_round_trip() -> None:
    t = parse({"hosts": 2, "etcd": {"members": 3, "tls": True, "auth": True}})
    assert (t.etcd_tls, t.etcd_auth) == (True, True)
    assert all(e.startswith("https://") for e in make_plan(t, "x").etcd_endpoints)
    again = parse(t.to_dict())
    assert (again.etcd_tls, again.etcd_auth) == (True, True)
    plain = parse({"hosts": 2})
    assert "tls" not in plain.to_dict()["etcd"]
    assert make_plan(plain, "x").etcd_endpoints[0].startswith("http://")
    assert load("etcd-tls").etcd_tls


def test_tls_must_be_a_boolean() -> None:
    with pytest.raises(TopologyError, match=r"etcd\.tls: 'yes': use true or false"):
        parse({"hosts": 1, "etcd": {"tls": "yes"}})


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs openssl")
def test_pki_chain_verifies_and_keys_are_private(tmp_path: Path) -> None:
    pki = make_pki(tmp_path / "pki", ["192.168.100.1", "192.168.100.2"])
    for name in ("server", "flanneld", "root"):
        proc = subprocess.run(["openssl", "verify", "-CAfile", str(pki.ca), str(pki.cert(name))],
                              capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr
        assert pki.key(name).stat().st_mode & 0o777 == 0o600
    text = subprocess.run(["openssl", "x509", "-noout", "-text", "-in", str(pki.cert("server"))],
                          capture_output=True, text=True).stdout
    assert "IP Address:192.168.100.1" in text and "IP Address:127.0.0.1" in text
    assert sorted(p.name for p in pki.dir.iterdir() if p.suffix not in (".pem", ".key")) == []
    other = make_pki(tmp_path / "other", ["192.168.100.1"], ca_name="other")
    foreign = subprocess.run(["openssl", "verify", "-CAfile", str(pki.ca),
                              str(other.cert("server"))], capture_output=True, text=True)
    assert foreign.returncode != 0


def test_passwords_are_made_once_and_private(tmp_path: Path) -> None:
    first = passwords(tmp_path)
    assert set(first) == {"root", "flanneld"} and first == passwords(tmp_path)
    assert (tmp_path / "passwords.json").stat().st_mode & 0o777 == 0o600
    assert all(":" not in pw and len(pw) >= 16 for pw in first.values())
