"""flanneld's runtime file (flanneld.json) and how flannelctl resolves its settings from it."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import stat
from pathlib import Path

import pytest

from flanneld import runtime_file as rf
from flanneld.ctl import _common as c

INFO = rf.RuntimeInfo(pid=4242, flanneld_version="0.1.0", started_at="2026-01-01T00:00:00Z",
                      etcd_endpoints=("https://10.0.0.10:2379", "https://[fd72::10]:2379"),
                      etcd_prefix="/coreos.com/network", subnet_file="/x/run/subnet.env",
                      state_dir="/x/lib", healthz_ip="127.0.0.1", healthz_port=8471,
                      etcd_cafile="/etc/pki/ca.pem", cni_socket="", iface=("eth0",),
                      public_ip="192.168.64.3", backend="vxlan")


def test_render_parse_round_trip() -> None:
    text = rf.render(INFO)
    assert json.loads(text)["version"] == rf.SCHEMA_VERSION
    assert rf.parse(text) == INFO


def test_unknown_keys_are_ignored() -> None:
    doc = json.loads(rf.render(INFO)) | {"added_later": 1}
    assert rf.parse(json.dumps(doc)) == INFO


@pytest.mark.parametrize("change, words", [
    ({"version": 2}, "schema version 2"),
    ({"pid": "12"}, "pid='12': must be a int"),
    ({"pid": 0}, "must be positive"),
    ({"etcd_endpoints": []}, "'etcd_endpoints' is empty"),
    ({"healthz_port": 70000}, "healthz_port=70000"),
    ({"etcd_cafile": 3}, "etcd_cafile=3"),
])
def test_bad_fields_are_named(change: dict[str, object], words: str) -> None:
    doc = json.loads(rf.render(INFO)) | change
    with pytest.raises(rf.RuntimeFileError, match="src:") as err:
        rf.parse(json.dumps(doc), "src")
    assert words in str(err.value)


def test_missing_required_and_not_json() -> None:
    doc = json.loads(rf.render(INFO))
    del doc["etcd_prefix"]
    with pytest.raises(rf.RuntimeFileError, match="'etcd_prefix' is missing"):
        rf.parse(json.dumps(doc))
    with pytest.raises(rf.RuntimeFileError, match="not valid JSON"):
        rf.parse("{")
    with pytest.raises(rf.RuntimeFileError, match="JSON object"):
        rf.parse("[]")


def test_write_is_root_only_and_remove_only_our_own(tmp_path: Path) -> None:
    path = rf.path_for(tmp_path / "run" / "subnet.env")
    assert path == tmp_path / "run" / "flanneld.json"
    rf.write(path, INFO)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert rf.read(path) == INFO
    assert [p.name for p in path.parent.iterdir()] == ["flanneld.json"]  # no temp file left
    assert rf.remove(path, pid=INFO.pid + 1) is False and path.exists()
    assert rf.remove(path, pid=INFO.pid) is True and not path.exists()


def test_pid_alive() -> None:
    assert rf.pid_alive(os.getpid(), Path("/nonexistent-proc")) is True
    assert rf.pid_alive(os.getpid()) is False  # alive, but pytest is not a flanneld


def _args(**flags: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    c.add_options(parser)
    return parser.parse_args([f"--{k.replace('_', '-')}={v}" for k, v in flags.items()])


def _node(tmp_path: Path, **change: object) -> Path:
    subnet_file = tmp_path / "subnet.env"
    info = dataclasses.replace(INFO, subnet_file=str(subnet_file), **change)  # type: ignore[arg-type]
    rf.write(rf.path_for(subnet_file), info)
    return subnet_file


def test_flannelctl_takes_settings_from_the_runtime_file(tmp_path: Path) -> None:
    subnet_file = _node(tmp_path)
    o = c.options(_args(subnet_file=str(subnet_file)), env={})
    assert o.etcd_endpoints == INFO.etcd_endpoints
    assert str(o.etcd_cafile) == INFO.etcd_cafile
    assert (o.healthz_ip, o.healthz_port) == ("127.0.0.1", 8471)
    assert str(o.state_dir) == "/x/lib"


def test_flag_and_env_beat_the_runtime_file(tmp_path: Path) -> None:
    subnet_file = _node(tmp_path)
    env = {"FLANNELD_SUBNET_FILE": str(subnet_file), "FLANNELD_HEALTHZ_PORT": "9999"}
    o = c.options(_args(etcd_endpoints="http://127.0.0.1:1"), env=env)
    assert o.etcd_endpoints == ("http://127.0.0.1:1",)  # flag
    assert o.healthz_port == 9999  # env
    assert o.etcd_prefix == INFO.etcd_prefix  # file


def test_a_config_yaml_switches_the_runtime_file_off(tmp_path: Path) -> None:
    subnet_file = _node(tmp_path)
    yaml = tmp_path / "flanneld.yaml"
    yaml.write_text("etcd-prefix: /other\n")
    o = c.options(_args(subnet_file=str(subnet_file), config=str(yaml)), env={})
    assert o.etcd_prefix == "/other"
    assert o.etcd_endpoints != INFO.etcd_endpoints


def test_a_broken_runtime_file_is_named_and_skipped(tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "flanneld.json").write_text('{"version": 9}')
    o = c.options(_args(subnet_file=str(tmp_path / "subnet.env")), env={})
    assert o.etcd_endpoints != INFO.etcd_endpoints
    err = capsys.readouterr().err
    assert "flanneld.json" in err and "schema version 9" in err
