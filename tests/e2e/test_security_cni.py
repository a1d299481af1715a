"""The whole CNI plugin under hostile invocations: thousands in-process through
`cni.plugin.handle` (what both flanneld's server and the fallback run), a handful through
the installed executable. Every field of stdin and the environment missing, of the wrong
type or oversized, bad netns paths, interface names too long, subnet.env damaged.

Each runs in a namespace of our own (a request that got through would wire it, never the
host's), with every default path of the plugin redirected into a temporary directory.
Goal: no crash (no exception reaching the plugin's catch-all), one JSON error object,
and nothing changed: no interface, no address reserved, no record left.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from netns_lab.netns import Sandbox, in_netns, run

from cni import delegate, ipam, masq, plugin
from flanneld.ctl.install_cni import install

pytestmark = [pytest.mark.netns]

EXAMPLES = int(os.environ.get("PYFLANNEL_FUZZ_EXAMPLES", "2000"))
ENV_TEXT = ("FLANNEL_NETWORK=10.5.0.0/16\nFLANNEL_SUBNET=10.5.52.1/24\nFLANNEL_MTU=1450\n"
            "FLANNEL_IPMASQ=false\n")


@dataclass
class Scene:
    ns: str
    root: Path

    def links(self) -> list[str]:
        out = run(["ip", "-n", self.ns, "-o", "link", "show"]).stdout
        return sorted(line.split(":")[1].strip() for line in out.splitlines())

    def leftovers(self) -> list[str]:
        """Reservations and attachment records left in the plugin's data directories."""
        return sorted(str(p.relative_to(self.root)) for d in ("ipam", "flannel")
                      for p in (self.root / d).rglob("*") if p.is_file()
                      and not p.name.startswith(("last_reserved_ip", "lock")))


@pytest.fixture
def scene(sandbox: Sandbox, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
          ) -> Iterator[Scene]:
    ns = sandbox.add_netns(f"cf{os.getpid() % 10000}", forwarding=False)
    for d in ("ipam", "flannel", "files"):
        (tmp_path / d).mkdir()
    (tmp_path / "subnet.env").write_text(ENV_TEXT)
    (tmp_path / "truncated.env").write_text(ENV_TEXT[:40])
    (tmp_path / "garbled.env").write_bytes(ENV_TEXT.encode().replace(b"24", b"\xff4"))
    (tmp_path / "files" / "regular").write_text("not a namespace\n")
    # a request with a field missing falls back to these: never the host's real paths
    monkeypatch.setattr(delegate, "DEFAULT_SUBNET_FILE", str(tmp_path / "missing.env"))
    monkeypatch.setattr(delegate, "DEFAULT_DATA_DIR", str(tmp_path / "flannel"))
    monkeypatch.setattr(ipam, "DEFAULT_DATA_DIR", str(tmp_path / "ipam"))
    monkeypatch.setattr(masq, "_nft", None)  # its netlink socket opens in our namespace
    try:
        yield Scene(ns, tmp_path)
    finally:
        run(["ip", "netns", "del", ns], check=False)


def netns_paths(root: Path) -> list[str]:
    """Bad CNI_NETNS values. Never /proc/<pid>/ or /proc/self/: from a thread switched into
    our namespace those name *another* namespace (the host's), which would be valid."""
    return ["", "/nonexistent/netns", "relative/netns", str(root / "files"),
            str(root / "files" / "regular"), "/dev/null", "/proc/thread-self/ns/net",
            "/run/netns/",
            "/run/netns/pfl-no-such-namespace", str(root / "files" / ".." / "files"),
            "x" * 5000, "/" + "a/" * 300]


@st.composite
def invocations(draw: st.DrawFn, root: Path) -> tuple[dict[str, str], bytes]:
    text = st.one_of(st.sampled_from(["", "x" * 5000, "eth0", "eth0eth0eth0eth0", "a/b", "..",
                                      "a:b", "é" * 8, "$(touch /tmp/pfl-canary)", ";", "c1",
                                      "IP=10.5.52.9", "IP=10.5.99.9", "MAC=zz", "a=b=c"]),
                     st.text(max_size=12))
    # identifiers longer than a file name: test_long_identifiers_are_a_clear_error
    ident = text.filter(lambda v: len(v.encode()) < 200)
    env = {"CNI_COMMAND": draw(st.sampled_from(["ADD", "ADD", "DEL", "CHECK", "STATUS", "GC",
                                                "VERSION", "", "add", "x"])),
           "CNI_CONTAINERID": draw(st.one_of(st.just("c1"), ident)),
           "CNI_NETNS": draw(st.sampled_from(netns_paths(root))),
           "CNI_IFNAME": draw(st.one_of(st.just("eth0"), text)),
           "CNI_PATH": draw(st.sampled_from([str(root / "files"), "", "/nonexistent"])),
           "CNI_ARGS": draw(st.one_of(st.just(""), text))}
    env = {k: v for k, v in env.items() if v or draw(st.booleans())}
    fields: dict[str, st.SearchStrategy[Any]] = {
        "cniVersion": st.sampled_from(["1.1.0", "1.0.0", "0.4.0", "0.3.1", "0.2.0", "", 1]),
        "name": st.sampled_from(["cbr0", "", "a b", "c" * 100, 7, None]),
        "type": st.sampled_from(["flannel", 1]),
        "subnetFile": st.sampled_from([str(root / n) for n in ("subnet.env", "truncated.env",
                                                               "garbled.env", "files", "none")]
                                      + [1, "", None]),
        "dataDir": st.sampled_from([str(root / "flannel"), "", 5, [str(root)]]),
        "cniSocket": st.sampled_from([str(root / "no.sock"), 3]),
        "ipam": st.sampled_from([{"dataDir": str(root / "ipam")}, {"type": "dhcp"}, "x",
                                 {"dataDir": 5}, {"ranges": "x"}, {"routes": [{"dst": "x"}]}]),
        "delegate": st.sampled_from([{"hairpinMode": True, "isDefaultGateway": True}, "x", [],
                                     {"type": 5}, {"name": "y"}, {"mtu": "big"}, {"mtu": -1},
                                     {"bridge": "x" * 40}, {"type": "nosuchplugin"}]),
        "runtimeConfig": st.sampled_from([{}, "x", {"ips": ["x"]}, {"mac": "zz"},
                                          {"ipRanges": "x"}]),
        "prevResult": st.sampled_from([{}, "x", {"ips": 5}, {"interfaces": [5]}]),
        "cni.dev/valid-attachments": st.sampled_from([[], "x", [{"containerID": 5}]]),
    }
    conf: dict[str, Any] = {"cniVersion": "1.0.0", "name": "cbr0", "type": "flannel",
                            "subnetFile": str(root / "subnet.env"),
                            "dataDir": str(root / "flannel"), "cniSocket": str(root / "no.sock"),
                            "ipam": {"dataDir": str(root / "ipam")}}
    for key in draw(st.sets(st.sampled_from(sorted(fields)), max_size=4)):
        if draw(st.booleans()):
            conf.pop(key, None)
        else:
            conf[key] = draw(fields[key])
    stdin = json.dumps(conf).encode()
    return env, draw(st.sampled_from([stdin, stdin, stdin, b"", b"{", b"[]", stdin[:20],
                                      b"\xff" + stdin]))


def check_one(env: dict[str, str], stdin: bytes, root: Path, ctx: plugin.Context) -> None:
    assert env.get("CNI_NETNS", "") in netns_paths(root)  # never a path to a real netns
    code, out, err = plugin.handle(env, stdin, ctx)
    if code == 0:
        assert env.get("CNI_COMMAND") != "ADD", f"an ADD succeeded: {env} {out!r}"
        return
    body = json.loads(out)  # exactly one JSON document
    assert isinstance(body.get("code"), int) and body.get("msg"), body
    # 999 is libcni's "internal" code, fine for a failed CHECK; a crash is an exception
    # that reached handle's catch-all: "internal error: ..." with a traceback
    crashed = body["msg"].startswith("internal error:") or b"Traceback" in err
    assert not crashed, f"a crash: {body} for {env} {stdin[:200]!r}\n{err.decode()[-800:]}"


def test_fuzzed_invocations_in_process(scene: Scene) -> None:
    before = scene.links()

    @settings(max_examples=max(50, EXAMPLES // 2), deadline=None,
              suppress_health_check=list(HealthCheck), database=None)
    @given(invocations(scene.root))
    def fuzz(inv: tuple[dict[str, str], bytes]) -> None:
        check_one(*inv, scene.root, ctx)

    ctx = plugin.Context()  # one warm context, as flanneld's CNI server keeps
    try:
        in_netns(scene.ns, fuzz)
    finally:
        ctx.close()
    assert scene.links() == before, "a request changed the namespace's interfaces"
    assert scene.leftovers() == [], "a failed request left reservations or records"
    assert not Path("/tmp/pfl-canary").exists()


# Regression (fixed: open_netns asks NS_GET_NSTYPE): a mount or UTS namespace used to pass
# the nsfs check, addresses were reserved and the bridge made, and the veth creation then
# failed with EINVAL, reported as an internal error (999).
@pytest.mark.parametrize("kind", ["mnt", "uts"])
def test_a_namespace_of_another_type_is_not_a_netns(scene: Scene, kind: str) -> None:
    """CNI_NETNS naming a mount or UTS namespace: refused up front (code 8), like any path
    that is not a network namespace, before anything is reserved or created."""
    env = {"CNI_COMMAND": "ADD", "CNI_CONTAINERID": "c1", "CNI_IFNAME": "eth0",
           "CNI_NETNS": f"/proc/thread-self/ns/{kind}", "CNI_PATH": str(scene.root)}
    conf = {"cniVersion": "1.0.0", "name": "cbr0", "type": "flannel",
            "subnetFile": str(scene.root / "subnet.env"), "dataDir": str(scene.root / "flannel"),
            "ipam": {"dataDir": str(scene.root / "ipam")}}
    before = scene.links()
    code, out, _ = in_netns(scene.ns, lambda: plugin.handle(env, json.dumps(conf).encode()))
    body = json.loads(out)
    assert (code, body["code"]) == (1, 8), body
    assert scene.links() == before and scene.leftovers() == []


# Regression (fixed: name <= 128, CNI_CONTAINERID <= 239 characters, checked up front): they
# become file names and an nft comment, and long ones used to fail deep inside the plugin
# as an internal error (999): "File name too long", "comment too long" with ipMasq.
@pytest.mark.parametrize(("command", "field", "length"), [
    ("ADD", "name", 200), ("ADD", "name", 300), ("DEL", "CNI_CONTAINERID", 300)])
def test_long_identifiers_are_a_clear_error(scene: Scene, sandbox: Sandbox, command: str,
                                            field: str, length: int) -> None:
    pod = sandbox.add_netns(f"cfpod{os.getpid() % 10000}", forwarding=False)
    try:
        env = {"CNI_COMMAND": command, "CNI_CONTAINERID": "c1", "CNI_IFNAME": "eth0",
               "CNI_NETNS": f"/run/netns/{pod}", "CNI_PATH": str(scene.root)}
        conf = {"cniVersion": "1.0.0", "name": "cbr0", "type": "flannel",
                "subnetFile": str(scene.root / "subnet.env"),
                "dataDir": str(scene.root / "flannel"),
                "ipam": {"dataDir": str(scene.root / "ipam")}}
        (env if field.startswith("CNI_") else conf)[field] = "n" * length
        out = in_netns(scene.ns, lambda: plugin.handle(env, json.dumps(conf).encode()))[1]
        assert json.loads(out)["code"] in (4, 7), out[:300]
    finally:
        run(["ip", "netns", "del", pod], check=False)


def exec_plugin(scene: Scene, exe: Path, env: dict[str, str], stdin: bytes
                ) -> tuple[int, dict[str, Any]]:
    proc = subprocess.run(["ip", "netns", "exec", scene.ns, str(exe)], input=stdin,
                          capture_output=True, timeout=60, env={"PATH": "/usr/bin:/bin", **env})
    return proc.returncode, json.loads(proc.stdout)


def test_a_handful_through_the_real_executable(scene: Scene) -> None:
    exe = install(scene.root / "bin")
    good = {"cniVersion": "1.0.0", "name": "cbr0", "type": "flannel",
            "subnetFile": str(scene.root / "subnet.env"), "dataDir": str(scene.root / "flannel"),
            "cniSocket": str(scene.root / "no.sock"), "ipam": {"dataDir": str(scene.root / "ipam")}}
    env = {"CNI_COMMAND": "ADD", "CNI_CONTAINERID": "c1", "CNI_NETNS": "/nonexistent/netns",
           "CNI_IFNAME": "eth0", "CNI_PATH": str(scene.root / "bin")}
    cases: list[tuple[dict[str, str], bytes, int]] = [
        ({"CNI_IFNAME": "eth0eth0eth0eth0"}, json.dumps(good).encode(), 4),
        ({"CNI_IFNAME": "../eth0"}, json.dumps(good).encode(), 4),
        ({"CNI_CONTAINERID": "$(touch /tmp/pfl-canary)"}, json.dumps(good).encode(), 4),
        ({"CNI_ARGS": "IP=1.2.3.4=5"}, json.dumps(good).encode(), 4),
        ({"CNI_NETNS": "/proc/self/ns/net"}, json.dumps(good).encode(), 8),  # its own
        ({}, json.dumps({**good, "subnetFile": str(scene.root / "truncated.env")}).encode(), 11),
        ({}, json.dumps({**good, "name": "cbr0; rm -rf /tmp/pfl-canary"}).encode(), 7),
        ({}, b'{"cniVersion":"1.0.0","name":"cbr0","pad":"' + b"x" * (4 << 20) + b'"', 6),
    ]
    before = scene.links()
    for over, stdin, want in cases:
        code, body = exec_plugin(scene, exe, {**env, **over}, stdin)
        assert code != 0 and body["code"] == want, (over, body)
    assert scene.links() == before and scene.leftovers() == []
    assert not Path("/tmp/pfl-canary").exists()
