"""Security in a lab whose etcd speaks TLS with client certificates and users
(`etcd: {tls: true, auth: true}`, certificates made by the lab):

- the lab works that way, and etcd refuses clients without a certificate or out of
  their prefix;
- flanneld refuses plain HTTP to the https endpoint, a server certificate that does not
  verify, and is refused with a foreign or no client certificate or a wrong password:
  each time a clear error, /readyz 503, and nothing changed (lease, subnet.env, kernel);
- health, readiness and metrics listen on 127.0.0.1 unless configured;
- state files keep tight modes even under umask 000; the CNI socket is root-only;
- lease keys and values carrying shell metacharacters or path traversal do nothing.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
from collections.abc import Iterator
from functools import partial
from ipaddress import IPv4Network
from pathlib import Path

import pytest
from labrun import LabRun, lab_up
from netns_lab import build, chaos, observe
from netns_lab.etcd import EtcdMember, etcdctl_binary
from netns_lab.lab import Lab
from netns_lab.measure import http_get, metric, peer_entries, readyz
from netns_lab.netns import in_netns, run, wait_for
from netns_lab.tls import make_pki

from cni.front import encode_request
from core.lease import subnet_key

pytestmark = [pytest.mark.e2e, pytest.mark.netns, pytest.mark.slow]


@pytest.fixture(scope="module")
def lab() -> Iterator[LabRun]:
    with lab_up("etcd-tls") as run:
        yield run


@pytest.fixture(scope="module")
def foreign(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Another CA, with certificates for the same addresses: nothing of it may be trusted."""
    d = tmp_path_factory.mktemp("foreign-pki")
    make_pki(d, ["192.168.100.1"], ca_name="not-the-lab-ca")
    return d


def etcdctl_raw(lab: Lab, *args: str, env: dict[str, str] | None = None
                ) -> subprocess.CompletedProcess[str]:
    argv = ["ip", "netns", "exec", lab.ns("etcd"), etcdctl_binary(),
            "--endpoints", lab.plan.etcd_endpoints[0], "--dial-timeout", "2s", *args]
    return subprocess.run(argv, capture_output=True, text=True, timeout=30,
                          env={"ETCDCTL_API": "3", "PATH": "/usr/bin:/bin", **(env or {})})


def test_lab_runs_on_tls_and_auth_and_etcd_refuses_others(lab: LabRun) -> None:
    the = lab.lab()
    assert the.plan.etcd_endpoints[0].startswith("https://")
    assert all(r["ok"] for r in lab.ping())
    assert {h["flanneld"] for h in lab.status()["hosts"]} == {"ready"}
    pki = the.pki
    anonymous = etcdctl_raw(the, "--cacert", str(pki.ca), "get", "/coreos.com/network/config")
    assert anonymous.returncode != 0  # no client certificate: the handshake fails
    # flanneld's user may read its prefix but nothing else, and may not write outside it
    as_flanneld = ["--cacert", str(pki.ca), "--cert", str(pki.cert("flanneld")),
                   "--key", str(pki.key("flanneld"))]
    pw = json.loads((pki.dir / "passwords.json").read_text())["flanneld"]
    env = {"ETCDCTL_USER": f"flanneld:{pw}"}
    ok = etcdctl_raw(the, *as_flanneld, "get", "/coreos.com/network/config", env=env)
    assert ok.returncode == 0 and "Network" in ok.stdout
    denied = etcdctl_raw(the, *as_flanneld, "put", "/elsewhere", "x", env=env)
    assert denied.returncode != 0 and "permission denied" in denied.stderr
    assert (pki.dir / "passwords.json").stat().st_mode & 0o777 == 0o600
    assert all(pki.key(n).stat().st_mode & 0o777 == 0o600 for n in ("ca", "server", "flanneld"))


def with_flags(argv: list[str], **changes: str | None) -> list[str]:
    """argv with `--flag value` pairs replaced (a str) or removed (None); keys use _ for -."""
    out = list(argv)
    for key, value in changes.items():
        flag = "--" + key.replace("_", "-")
        if flag in out:
            i = out.index(flag)
            del out[i:i + 2]
        if value is not None:
            out[1:1] = [flag, value]
    return out


def log_since(lab: Lab, host: str, offset: int) -> str:
    path = lab.state_dir / f"{build.flanneld_proc(host)}.log"
    with open(path, "rb") as f:
        f.seek(offset)
        return f.read().decode(errors="replace")


def run_flanneld(lab: Lab, host: str, argv: list[str], env: dict[str, str]) -> int:
    """Replace `host`'s flanneld with this one (tracked like the lab's own); the log offset."""
    chaos.flanneld_kill(lab, host)
    log = lab.state_dir / f"{build.flanneld_proc(host)}.log"
    offset = log.stat().st_size if log.exists() else 0
    lab.sandbox.spawn(build.flanneld_proc(host), argv, netns=lab.ns(host), env=env)
    return offset


def snapshot(lab: Lab, host: str) -> tuple[str, str, dict[str, object]]:
    """What a refused flanneld must not change: its lease, its subnet.env, its kernel."""
    sub = observe.read_subnet_env(lab.host_dir(host) / "subnet.env")["FLANNEL_SUBNET"]
    key = f"{lab.topology.etcd_prefix}/subnets/{subnet_key(IPv4Network(sub, strict=False))}"
    lease = json.loads(observe.etcdctl(lab, "get", key, "-w", "json"))["kvs"][0]
    return (f"{lease['mod_revision']} {lease['value']}",
            (lab.host_dir(host) / "subnet.env").read_text(), peer_entries(lab, host))


CASES: dict[str, tuple[dict[str, str | None], str | None, str]] = {
    # name: (flag changes, password override, words the log must show)
    "plain-http-to-https": ({"etcd_endpoints": "http://192.168.100.1:2379", "etcd_cafile": None,
                             "etcd_certfile": None, "etcd_keyfile": None}, None,
                            "etcd unreachable: no etcd endpoint answered: http://192.168.100.1"),
    "server-cert-of-another-ca": ({"etcd_cafile": "{foreign}/ca.pem"}, None,
                                  "CERTIFICATE_VERIFY_FAILED"),
    "client-cert-of-another-ca": ({"etcd_certfile": "{foreign}/flanneld.pem",
                                   "etcd_keyfile": "{foreign}/flanneld.key"}, None,
                                  "BAD_CERTIFICATE"),
    "no-client-cert": ({"etcd_certfile": None, "etcd_keyfile": None}, None, "BAD_CERTIFICATE"),
    "wrong-password": ({}, "not-the-password", "authentication failed"),
}


# Regression: an etcd error that is not a connection failure (authentication failed) used
# to leave /readyz at "waiting for the network config at ..." without saying why.
@pytest.mark.parametrize("case", list(CASES))
def test_flanneld_refuses_what_does_not_verify(lab: LabRun, foreign: Path, case: str) -> None:
    the = lab.lab()
    changes, password, words = CASES[case]
    flags = {k: v.format(foreign=foreign) if v else v for k, v in changes.items()}
    argv = with_flags(build.flanneld_argv(the, "h3"), **flags)
    env = build.flanneld_env(the)
    if password is not None:
        env["FLANNELD_ETCD_PASSWORD"] = password
    before = snapshot(the, "h3")
    offset = run_flanneld(the, "h3", argv, env)
    try:
        wait_for(lambda: words in log_since(the, "h3", offset), 30,
                 what=f"flanneld to log {words!r}")
        code, body = readyz(the, "h3")
        assert code == 503, body
        assert the.sandbox.pid(build.flanneld_proc("h3")) is not None, "it keeps retrying"
        assert snapshot(the, "h3") == before, "a refused flanneld changed nothing"
        assert words in body, f"/readyz should say why: {body}"
    finally:
        chaos.flanneld_kill(the, "h3")
        chaos.flanneld_start(the, "h3")


def test_https_endpoint_never_falls_back_to_plain_http(etcd_server: EtcdMember,
                                                       tmp_path: Path) -> None:
    """A plain-HTTP etcd behind an https:// URL: no answer, never a downgrade."""
    import asyncio

    from flanneld.etcd import EtcdClient, EtcdUnavailable
    pki = make_pki(tmp_path, ["127.0.0.1"])

    async def main() -> None:
        client = EtcdClient([f"https://127.0.0.1:{etcd_server.client_port}"], cafile=str(pki.ca),
                            timeout=2)
        try:
            with pytest.raises(EtcdUnavailable, match=r"https://127\.0\.0\.1"):
                await asyncio.wait_for(client.call(lambda c: c.get(b"/x")), 20)
        finally:
            await client.close()
    asyncio.run(main())


def listening(lab: Lab, host: str) -> set[str]:
    out = run(["ip", "netns", "exec", lab.ns(host), "ss", "-ltnH"]).stdout
    return {line.split()[3] for line in out.splitlines()
            if line.split()[3].endswith(f":{observe.HEALTHZ_PORT}")}


def reach(lab: Lab, src: str, dst: str) -> bool:
    """Can `src` open a TCP connection to `dst`'s health port on the underlay?"""
    import socket

    def probe() -> bool:
        try:
            with socket.create_connection((str(lab.plan.ip_of(dst)), observe.HEALTHZ_PORT), 2):
                return True
        except OSError:
            return False
    return in_netns(lab.ns(src), probe)


def test_health_and_metrics_bind_loopback_unless_configured(lab: LabRun) -> None:
    the = lab.lab()
    assert listening(the, "h1") == {f"127.0.0.1:{observe.HEALTHZ_PORT}"}
    assert not reach(the, "h2", "h1")
    argv = build.flanneld_argv(the, "h3")
    try:
        for value, bound, reachable in ((None, "127.0.0.1", False), ("0.0.0.0", "0.0.0.0", True)):
            run_flanneld(the, "h3", with_flags(argv, healthz_ip=value), build.flanneld_env(the))
            build.wait_flanneld(the, "h3")
            assert listening(the, "h3") == {f"{bound}:{observe.HEALTHZ_PORT}"}, value
            assert reach(the, "h2", "h3") is reachable, value
    finally:
        chaos.flanneld_kill(the, "h3")
        chaos.flanneld_start(the, "h3")
    assert http_get(the, "h3", "/metrics")[0] == 200


def modes(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): p.stat().st_mode & 0o7777
            for p in [root, *root.rglob("*")] if not p.is_symlink()}


def test_state_files_keep_tight_modes_under_umask_000(lab: LabRun) -> None:
    the = lab.lab()
    hd = the.host_dir("h3")
    mac_files = list(hd.glob("vtep-mac.*"))
    assert mac_files, "flanneld persists its VtepMAC"
    for f in [hd / "subnet.env", *mac_files]:
        f.unlink()  # rewritten by a flanneld whose umask lets everything through
    argv = ["sh", "-c", 'umask 000; exec "$@"', "sh", *build.flanneld_argv(the, "h3")]
    try:
        run_flanneld(the, "h3", argv, build.flanneld_env(the))
        build.wait_flanneld(the, "h3")
        added = subprocess.run([*cli(lab), "pod", "add", "h3", "umask"], capture_output=True,
                               text=True, timeout=60, preexec_fn=lambda: os.umask(0))
        assert added.returncode == 0, added.stderr
        m = modes(hd)
        assert m["subnet.env"] == 0o644  # as flannel: readable by the CNI plugin, not writable
        assert all(m[f.name] == 0o600 for f in mac_files)
        assert m["cni.sock"] & 0o077 == 0
        stores = {k: v for k, v in m.items() if k.startswith(("ipam", "cni-flannel"))}
        assert stores, m
        writable = {k: oct(v) for k, v in stores.items() if v & 0o002}
        assert not writable, f"world-writable under umask 000: {writable}"
        reservations = {k: oct(v) for k, v in stores.items()
                        if k.startswith("ipam/") and (hd / k).is_file() and v & 0o077}
        assert not reservations, f"address store files readable by others: {reservations}"
    finally:
        lab.cli("pod", "del", "h3", "umask", check=False)
        chaos.flanneld_kill(the, "h3")
        chaos.flanneld_start(the, "h3")


def cli(lab: LabRun) -> list[str]:
    from labrun import cli_argv
    return [*cli_argv(), "--name", lab.name]


ASK = """
import socket, sys
s = socket.socket(socket.AF_UNIX)
try:
    s.connect(sys.argv[1])
except OSError as exc:
    print("connect:", exc.strerror); sys.exit(0)
s.sendall(bytes.fromhex(sys.argv[2]))
print("answer:", s.recv(64)[:1])
"""


def test_cni_socket_is_root_only(lab: LabRun) -> None:
    the = lab.lab()
    sock = the.host_dir("h1") / "cni.sock"
    st = sock.stat()
    assert st.st_uid == 0 and st.st_mode & 0o777 == 0o600

    request = encode_request({b"CNI_COMMAND": b"VERSION"}, b'{"cniVersion":"1.0.0"}').hex()

    def as_nobody(*caps: str) -> str:
        argv = ["ip", "netns", "exec", the.ns("h1"), "setpriv", "--reuid=65534", "--regid=65534",
                "--clear-groups", *caps, "/usr/bin/python3", "-I", "-c", ASK, str(sock), request]
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=30)
        assert proc.returncode == 0, proc.stderr
        return proc.stdout.strip()
    assert as_nobody() == "connect: Permission denied"  # the file mode keeps others out
    # with the permission bits bypassed, SO_PEERCRED still refuses a non-root caller
    bypass = ("--inh-caps=+dac_override", "--ambient-caps=+dac_override")
    assert as_nobody(*bypass) == "answer: b'R'"


def rejected_more(lab: Lab, host: str, at_least: float) -> bool:
    return metric(lab, host, "flanneld_leases_rejected_total") >= at_least


def test_shell_and_path_metacharacters_in_leases_do_nothing(lab: LabRun) -> None:
    the = lab.lab()
    canary = f"pfl-canary-{secrets.token_hex(4)}"
    touch = f"touch /tmp/{canary}"
    sub = f"{the.topology.etcd_prefix}/subnets"
    mac = "0e:5c:00:00:00:aa"
    good = {"PublicIP": "192.168.100.250", "PublicIPv6": None, "BackendType": "vxlan",
            "BackendData": {"VNI": 1, "VtepMAC": mac}}
    evil = {
        f"{sub}/10.244.250.0-24;{touch}": good,
        f"{sub}/$({touch})": good,
        f"{sub}/../../../../tmp/{canary}": good,
        f"{sub}/10.244.250.0-24/../../config": good,
        f"{sub}/10.244.251.0-24": {**good, "PublicIP": f"192.168.100.250;{touch}"},
        f"{sub}/10.244.252.0-24": {**good, "BackendType": f"vxlan$({touch})"},
        f"{sub}/10.244.253.0-24": {**good, "BackendData": {"VNI": f"1; {touch}",
                                                           "VtepMAC": f"../../../tmp/{canary}"}},
        f"{sub}/10.244.254.0-24": {**good, "BackendData": {"VNI": 1, "VtepMAC": mac,
                                                           "Evil": f"`{touch}`"}},
    }
    hosts = the.topology.host_names
    dirs = {h: sorted(str(p) for p in the.host_dir(h).rglob("*")) for h in hosts}
    before = {h: peer_entries(the, h) for h in hosts}
    rejected = {h: metric(the, h, "flanneld_leases_rejected_total") for h in hosts}
    try:
        for key, value in evil.items():
            observe.etcdctl(the, "put", key, json.dumps(value))
        # 6 are rejected by the watch, the BackendType one is skipped by the backend, and
        # the last is a valid lease with one field more: programmed
        for h in hosts:
            wait_for(partial(rejected_more, the, h, rejected[h] + 6), 20,
                     what=f"{h} to reject the bad leases")
            assert metric(the, h, "flanneld_peers_skipped") >= 1
        [valid], _ = observe.decode_leases(observe.etcdctl(
            the, "get", f"{sub}/10.244.254.0-24", "-w", "json"))
        wait_for(lambda: all(observe.peer_state(valid, observe.kernel_view(the.ns(h)))
                             == "vxlan" for h in hosts), 20, what="the valid one programmed")
    finally:
        for key in evil:
            observe.etcdctl(the, "del", key)
    for h in hosts:
        wait_for(partial(lambda h: peer_entries(the, h) == before[h], h), 20,
                 what=f"{h}'s kernel as it was")
        assert sorted(str(p) for p in the.host_dir(h).rglob("*")) == dirs[h]
        assert readyz(the, h)[0] == 200
    assert not list(Path("/tmp").glob(f"{canary}*"))
    assert not [p for p in the.state_dir.rglob("*") if canary in p.name]
    assert all(r["ok"] for r in lab.ping())
