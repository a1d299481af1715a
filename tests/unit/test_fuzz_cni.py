"""The CNI plugin's inputs, fuzzed in the thousands (the pure layers; the whole plugin runs
fuzzed in a namespace in tests/e2e/test_security_cni.py):

- `parse_request`: every variable missing, empty, oversized or malformed, every config
  field missing or of the wrong type: a Request, or a CniError with a well-known code
  (never 999, which means a bug), rendered as one JSON error;
- the exec'd front's config scanner (`socket_path`, no JSON parser on the fast path)
  finds the same socket as the plugin's own reading of the config, and never raises;
- the flannel delegate derivation: a delegate config or a clear CniError.

Every error quotes oversized input clipped (`cni.protocol.shown`).
"""

from __future__ import annotations

import json
import os
from ipaddress import IPv4Interface, IPv4Network
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cni.delegate import derive_delegate, load_conf, socket_path_for
from cni.front import parse_conf, socket_path, top_level_strings
from cni.protocol import INTERNAL, CniError, error_bytes, parse_request
from core.subnetenv import SubnetEnv

EXAMPLES = int(os.environ.get("PYFLANNEL_FUZZ_EXAMPLES", "1000"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
KNOWN_CODES = {1, 2, 3, 4, 5, 6, 7, 8, 11, 50, 51}

BIG = ["x" * 300, "a" * 5000, "/" * 5000]
env_values = st.one_of(
    st.sampled_from(["", " ", "ADD", "DEL", "CHECK", "VERSION", "STATUS", "GC", "add", "c1",
                     "eth0", "eth0eth0eth0eth0", "é", "a/b", "..", ".", "a:b", "eth 0",
                     "/run/netns/x", "/proc/self/ns/net", "../../etc/passwd", "K8S_POD_NAME=x",
                     "IP=10.5.52.9;MAC=0e:00:00:00:00:01", "a=b=c", ";;", "IgnoreUnknown=1",
                     *BIG]),
    st.text(max_size=20))
ENV_KEYS = ("CNI_COMMAND", "CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME", "CNI_ARGS", "CNI_PATH")
json_values = st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70),
                        st.floats(allow_nan=False, allow_infinity=False),
                        st.sampled_from(["", "0.3.1", "1.0.0", "1.1.0", "9.9.9", "cbr0", "x y",
                                         "bridge", "host-local", *BIG]),
                        st.lists(st.integers(), max_size=2), st.dictionaries(
                            st.sampled_from(["type", "name", "ipam", "x"]), st.integers(),
                            max_size=2))
CONF_KEYS = ("cniVersion", "name", "type", "subnetFile", "dataDir", "cniSocket", "delegate",
             "ipam", "runtimeConfig", "prevResult", "args")
GOOD_CONF = {"cniVersion": "1.0.0", "name": "cbr0", "type": "flannel",
             "subnetFile": "/nonexistent/subnet.env", "dataDir": "/nonexistent/flannel",
             "delegate": {"hairpinMode": True, "isDefaultGateway": True}}
GOOD_ENV = {"CNI_COMMAND": "ADD", "CNI_CONTAINERID": "c1", "CNI_NETNS": "/run/netns/x",
            "CNI_IFNAME": "eth0", "CNI_PATH": "/opt/cni/bin"}


def assert_bounded(exc: CniError) -> None:
    # BIG values are 5000 characters: an error quotes them clipped, never whole (it is
    # logged by the runtime and by flanneld's CNI server for every retry)
    assert len(exc.msg) + len(exc.details) < 600, exc.msg[:200]


@st.composite
def requests(draw: st.DrawFn) -> tuple[dict[str, str], bytes]:
    env = dict(GOOD_ENV)
    for key in draw(st.sets(st.sampled_from(ENV_KEYS))):
        if draw(st.booleans()):
            env.pop(key, None)
        else:
            env[key] = draw(env_values)
    conf: Any = dict(GOOD_CONF)
    for key in draw(st.sets(st.sampled_from(CONF_KEYS))):
        if draw(st.booleans()):
            conf.pop(key, None)
        else:
            conf[key] = draw(json_values)
    kind = draw(st.integers(0, 9))
    if kind == 0:
        return env, draw(st.binary(max_size=64))
    if kind == 1:
        return env, json.dumps(draw(json_values)).encode()
    return env, json.dumps(conf).encode()


@settings(FUZZ, max_examples=EXAMPLES)
@given(requests())
def test_requests_parse_or_fail_with_a_well_known_code(req: tuple[dict[str, str], bytes]
                                                       ) -> None:
    env, stdin = req
    try:
        parsed = parse_request(env, stdin)
    except CniError as exc:
        assert exc.code in KNOWN_CODES and exc.code != INTERNAL, (exc.code, exc.msg)
        assert_bounded(exc)
        body = json.loads(error_bytes(exc, "1.0.0"))
        assert body["code"] == exc.code and body["msg"]
        return
    assert parsed.command == env["CNI_COMMAND"]
    if parsed.command in ("ADD", "DEL", "CHECK"):
        assert 0 < len(parsed.ifname.encode()) <= 15 and "/" not in parsed.ifname
        assert parsed.container_id and parsed.container_id[0].isalnum()


# -- the front's config scanner --------------------------------------------------------------

path_values = st.one_of(st.sampled_from(["/run/flannel/subnet.env", "subnet.env", "/x", "/", "",
                                         "a/b/c", "/run/flannel/", "é/ü", 'a"b', "a\\b", "\u2028"]),
                        st.text(max_size=15), st.integers(), st.none(), st.lists(st.text()))
# Values that trip a hand-written scanner: the key names as values, braces and quotes
# inside strings, the keys nested one level down, escapes.
noise = st.sampled_from([None, 1, -0.5, True, "x", "", [], {}, "cniSocket", "subnetFile",
                         '{"cniSocket":"/evil"}', "}{", "]", '\\"', "\\", '"', "\u2028",
                         ["cniSocket", "/evil"], {"cniSocket": "/evil"},
                         {"subnetFile": "/evil/subnet.env"}, [{"cniSocket": "/evil"}],
                         {"a": {"cniSocket": "/evil"}}, {"cniSocket": {"x": "/evil"}}])
@st.composite
def confs(draw: st.DrawFn) -> dict[str, Any]:
    conf: dict[str, Any] = draw(st.dictionaries(
        st.one_of(st.sampled_from(["name", "type", "delegate", "x", "cni", '"', "{", "\\"]),
                  st.text(max_size=6)), noise, max_size=4))
    for key in ("cniSocket", "subnetFile"):
        if draw(st.booleans()):
            conf[key] = draw(path_values)
    if draw(st.booleans()):  # the same names nested: must not count
        conf["delegate"] = {"cniSocket": "/nested.sock", "subnetFile": "/nested/subnet.env"}
    return conf


@FUZZ
@given(confs(), st.booleans(), st.sampled_from(["", " ", "\n", "\t"]))
def test_front_finds_the_socket_the_plugin_would(conf: dict[str, Any], ascii_only: bool,
                                                 pad: str) -> None:
    if not isinstance(conf.get("subnetFile", ""), str):
        return  # the plugin refuses the config (INVALID_CONFIG) whichever socket is asked
    # whitespace between tokens only: a replace() over the text would also pad values
    text = json.dumps(conf, ensure_ascii=ascii_only,
                      separators=("," + pad, pad + ":" + pad) if pad else None)
    stdin = text.encode()
    assert socket_path(stdin) == socket_path_for(conf), text
    assert parse_conf(stdin) == json.loads(stdin)


@FUZZ
@given(st.binary(max_size=120))
def test_front_scanner_never_raises_on_garbage(data: bytes) -> None:
    found = top_level_strings(data, (b"cniSocket", b"subnetFile"))
    assert found is None or isinstance(found, dict)
    assert isinstance(socket_path(data), str)
    assert isinstance(parse_conf(data), dict)


# Regression (fixed in cni/front.py): the front matched key names as raw bytes, so a key
# written with a JSON escape (valid JSON, the same key to every parser) was missed, and the
# front asked another flanneld's socket (or the default one) than the config names.
def test_front_reads_escaped_key_names() -> None:
    stdin = b'{"name":"cbr0","cni\\u0053ocket":"/run/other/cni.sock"}'
    assert socket_path(stdin) == socket_path_for(json.loads(stdin)) == "/run/other/cni.sock"


# -- the delegate derivation ------------------------------------------------------------------

ENV = SubnetEnv(IPv4Network("10.5.0.0/16"), IPv4Interface("10.5.52.1/24"), 1450, True)


@settings(FUZZ, max_examples=max(50, EXAMPLES // 2))
@given(st.dictionaries(st.sampled_from(CONF_KEYS), json_values, max_size=6),
       st.dictionaries(st.sampled_from(["type", "name", "ipam", "mtu", "ipMasq", "bridge",
                                        "isGateway", "hairpinMode", "cniVersion"]),
                       json_values, max_size=4))
def test_delegate_derivation_is_a_config_or_a_clear_error(conf: dict[str, Any],
                                                          delegate: dict[str, Any]) -> None:
    conf = {**GOOD_CONF, **conf}
    if delegate:
        conf["delegate"] = delegate
    try:
        d = derive_delegate(load_conf(conf), ENV)
    except CniError as exc:
        assert exc.code in KNOWN_CODES and exc.msg
        assert_bounded(exc)
        return
    assert d["name"] == conf["name"] and isinstance(d["type"], str)
    assert d["ipam"]["ranges"] and json.loads(json.dumps(d)) == d
