"""CNI protocol: env/stdin validation, error codes, result shapes per version (pure)."""

from __future__ import annotations

import json

import pytest

from cni import protocol as p
from cni.front import decode_response, encode_request, socket_path
from flanneld.cni_server import encode_response

ENV = {"CNI_COMMAND": "ADD", "CNI_CONTAINERID": "c1", "CNI_NETNS": "/run/netns/x",
       "CNI_IFNAME": "eth0", "CNI_PATH": "/usr/lib/cni"}
CONF = {"cniVersion": "1.0.0", "name": "cbr0", "type": "flannel"}


def parse(env: dict[str, str] | None = None, conf: object = CONF, **over: str) -> p.Request:
    merged = dict(ENV if env is None else env, **over)
    return p.parse_request(merged, json.dumps(conf).encode())


def code_of(fn: object, *args: object, **kw: object) -> p.CniError:
    with pytest.raises(p.CniError) as info:
        fn(*args, **kw)  # type: ignore[operator]
    return info.value


def test_valid_add() -> None:
    req = parse(CNI_ARGS="IgnoreUnknown=1;K8S_POD_NAME=x;IP=10.5.52.9")
    assert (req.command, req.version, req.container_id, req.ifname) == ("ADD", "1.0.0", "c1",
                                                                         "eth0")
    assert req.args["IP"] == "10.5.52.9"


@pytest.mark.parametrize("missing", ["CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME"])
def test_missing_env_is_code_4_and_named(missing: str) -> None:
    env = {k: v for k, v in ENV.items() if k != missing}
    err = code_of(parse, env)
    assert err.code == p.INVALID_ENV and missing in err.msg


def test_del_does_not_need_netns() -> None:
    env = {k: v for k, v in ENV.items() if k != "CNI_NETNS"}
    assert parse(env, CNI_COMMAND="DEL").netns == ""


@pytest.mark.parametrize(("var", "value"), [("CNI_CONTAINERID", "-bad"),
                                            ("CNI_CONTAINERID", "a b"),
                                            ("CNI_IFNAME", "x" * 16), ("CNI_IFNAME", "a/b"),
                                            ("CNI_IFNAME", ".."), ("CNI_IFNAME", "e th0"),
                                            ("CNI_ARGS", "novalue"), ("CNI_ARGS", "A=b=c")])
def test_bad_env_values_are_code_4(var: str, value: str) -> None:
    err = code_of(parse, None, **{var: value})
    assert err.code == p.INVALID_ENV
    assert var in err.msg or "CNI_ARGS" in err.msg or var.split("_")[1].lower() in err.msg.lower()


def test_unknown_command() -> None:
    err = code_of(parse, None, CNI_COMMAND="FOO")
    assert err.code == p.INVALID_ENV and "FOO" in err.msg


@pytest.mark.parametrize(("conf", "code"), [
    (b"{not json", p.DECODE_FAILURE), (b"[1]", p.DECODE_FAILURE),
    (json.dumps({"name": "n"}).encode(), p.INCOMPATIBLE_VERSION),
    (json.dumps({"cniVersion": "9.9.9", "name": "n"}).encode(), p.INCOMPATIBLE_VERSION),
    (json.dumps({"cniVersion": "1.0.0"}).encode(), p.INVALID_CONFIG),
    (json.dumps({"cniVersion": "1.0.0", "name": "bad name"}).encode(), p.INVALID_CONFIG)])
def test_bad_stdin(conf: bytes, code: int) -> None:
    assert code_of(p.parse_request, ENV, conf).code == code


@pytest.mark.parametrize(("command", "version"), [("CHECK", "0.3.1"), ("STATUS", "1.0.0"),
                                                  ("GC", "0.4.0")])
def test_command_too_new_for_version(command: str, version: str) -> None:
    err = code_of(parse, None, dict(CONF, cniVersion=version), CNI_COMMAND=command)
    assert err.code == p.INCOMPATIBLE_VERSION and command in err.msg


def test_status_and_gc_need_no_container() -> None:
    env = {"CNI_COMMAND": "STATUS"}
    assert parse(env, dict(CONF, cniVersion="1.1.0")).command == "STATUS"


@pytest.mark.parametrize(("stdin", "version"), [(b"", "1.1.0"), (b'{"cniVersion":"0.4.0"}',
                                                                  "0.4.0"),
                                                (b"garbage", "1.1.0"),
                                                (b'{"cniVersion":"0.2.0"}', "1.1.0")])
def test_version_ignores_everything_else(stdin: bytes, version: str) -> None:
    req = p.parse_request({"CNI_COMMAND": "VERSION", "CNI_NETNS": "dummy"}, stdin)
    body = json.loads(p.version_bytes(req.version))
    assert body == {"cniVersion": version, "supportedVersions": list(p.SUPPORTED_VERSIONS)}


RESULT = p.Result(
    interfaces=[{"name": "cni0", "mac": "aa:bb:cc:dd:ee:01"},
                {"name": "veth1", "mac": "aa:bb:cc:dd:ee:02", "mtu": 1450},
                {"name": "eth0", "mac": "aa:bb:cc:dd:ee:03", "mtu": 1450, "sandbox": "/x"}],
    ips=[{"interface": 2, "address": "10.5.52.2/24", "gateway": "10.5.52.1"},
         {"interface": 2, "address": "fd00::2/64", "gateway": "fd00::1"}],
    routes=[{"dst": "10.5.0.0/16"}, {"dst": "0.0.0.0/0", "gw": "10.5.52.1"}])


@pytest.mark.parametrize("version", p.SUPPORTED_VERSIONS)
def test_result_shape_per_version(version: str) -> None:
    out = json.loads(json.dumps(RESULT.render(version)))
    assert out["cniVersion"] == version
    assert "ips" in out and "ip" not in out
    old = p.version_tuple(version) < (1, 0)
    assert [ip.get("version") for ip in out["ips"]] == (["4", "6"] if old else [None, None])
    assert ("mtu" in out["interfaces"][2]) == (version == "1.1.0")
    assert out["interfaces"][2]["sandbox"] == "/x" and "sandbox" not in out["interfaces"][1]
    assert out["dns"] == {}
    assert list(out) == ["cniVersion", "interfaces", "ips", "routes", "dns"]


def test_error_object() -> None:
    err = p.CniError(7, "missing network name", "set name")
    assert json.loads(p.error_bytes(err, "0.3.1")) == {
        "cniVersion": "0.3.1", "code": 7, "msg": "missing network name", "details": "set name"}


# the front's wire format and socket choice (stdlib-only module) -----------------

@pytest.mark.parametrize(("conf", "path"), [
    (b'{"cniVersion":"1.0.0"}', "/run/flannel/cni.sock"),
    (b'{"subnetFile":"/tmp/x/subnet.env"}', "/tmp/x/cni.sock"),
    (b'{"subnetFile":"/tmp/x/subnet.env","cniSocket":"/s/c.sock"}', "/s/c.sock"),
    (b' {"delegate":{"subnetFile":"/nested/s.env"}}', "/run/flannel/cni.sock"),
    (b'{"subnetFile":', "/run/flannel/cni.sock"),
    (b'{"name":"subnetFile","x":"a\\"{{","subnetFile":"/q.env"}', "/cni.sock"),
    (b'{"subnetFile":"/a/\\u0041.env"}', "/a/cni.sock"),
    (b'{"subnetFile":"rel.env"}', "./cni.sock")])
def test_front_socket_path(conf: bytes, path: str) -> None:
    assert socket_path(conf) == path


def test_front_wire_roundtrip() -> None:
    env = {b"CNI_COMMAND": b"ADD", b"HOME": b"/root", b"PYFLANNEL_X": b"x"}
    req = encode_request(env, b"{}")
    assert b"HOME" not in req and b"PYFLANNEL" not in req and b"CNI_COMMAND=ADD" in req
    assert decode_response(encode_response(3, b"out", b"err")) == (3, b"out", b"err")
    assert decode_response(b"R") is None
    with pytest.raises(ValueError):
        decode_response(encode_response(0, b"out", b"")[:-2])


def test_identifier_lengths_are_bounded() -> None:
    assert parse(CNI_CONTAINERID="c" * p.MAX_CONTAINER_ID).container_id
    assert code_of(parse, None, CNI_CONTAINERID="c" * (p.MAX_CONTAINER_ID + 1)).code == 4
    err = code_of(parse, None, dict(CONF, name="n" * (p.MAX_NAME + 1)))
    assert err.code == 7 and "at most 128" in err.msg
