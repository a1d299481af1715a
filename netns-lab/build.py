"""Bring a lab up and down: namespaces, underlay, etcd, flanneld per host, pods via CNI.

`up` is parallel wherever the kernel and the daemons allow it and waits on
conditions (etcd healthy, flanneld /readyz, every peer programmed), never on
sleeps. `down` needs nothing but the lab's name: it kills what the pidfiles
name, then everything still inside a namespace with the lab's prefix, then
removes those namespaces and the state directory.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
from pathlib import Path

from netns_lab import observe
from netns_lab.lab import Lab, Pod
from netns_lab.netns import (
    Sandbox,
    WaitAbort,
    kill_pids,
    list_netns,
    pid_alive,
    run,
    wait_for,
)
from netns_lab.plan import BRIDGE, POD_IFACE, lab_prefix
from netns_lab.progress import Progress
from netns_lab.runtime import (
    CNI_SYSTEM_DIR,
    CONFLIST_NAME,
    CniError,
    Runtime,
    result_address,
    write_conflist,
)
from netns_lab.tls import make_pki, passwords

READY_TIMEOUT = 30.0
CONVERGE_TIMEOUT = 30.0


def _venv_tool(name: str, module: str) -> list[str]:
    """A console script of this installation, or `python -m` when it is not installed."""
    exe = Path(sys.executable).parent / name
    return [str(exe)] if exe.exists() else [sys.executable, "-m", module]


def _ip_batch(netns: str, lines: list[str]) -> None:
    if lines:
        run(["ip", "-n", netns, "-batch", "-"], input="\n".join(lines) + "\n")


def _clean_env() -> dict[str, str]:
    # flanneld reads FLANNELD_*, etcd ETCD_*: never hand them the caller's.
    return {k: v for k, v in os.environ.items() if not k.startswith(("FLANNELD_", "ETCD"))}


# -- underlay -------------------------------------------------------------------


def create_namespaces(lab: Lab) -> int:
    t = lab.topology
    # Routers and hosts forward (hosts: for their pods); segments are bridges, the world
    # is an end.
    ends = {s.name for s in t.segments} | ({t.world.name} if t.world else set())
    v6 = 6 in t.underlay_versions or t.enable_ipv6
    names = lab.plan.infra_namespaces()

    def add(n: str) -> None:
        lab.sandbox.add_netns(n, forwarding=n not in ends, forwarding6=v6 and n not in ends)
    # The first `ip netns add` sets up /run/netns; the rest can go in parallel.
    add(names[0])
    observe.parallel(add, names[1:])
    return len(names)


def create_node_mounts(lab: Lab) -> None:
    """Each host's own mount namespace: its /run/flannel, /var/lib/cni, ... (lab.NODE_DIRS)."""
    observe.parallel(lambda h: lab.sandbox.add_mount_ns(lab.ns(h), lab.node_binds(h)),
                     lab.topology.host_names)


def build_underlay(lab: Lab) -> None:
    plan = lab.plan

    def segment(seg: str) -> None:
        lines = [f"link add {BRIDGE} type bridge", f"link set {BRIDGE} up"]
        for lk in plan.links_on(seg):
            lines += [f"link add {lk.port} mtu {lk.mtu} type veth peer name {lk.ifname} "
                      f"mtu {lk.mtu} netns {lab.ns(lk.owner)}",
                      f"link set {lk.port} master {BRIDGE}", f"link set {lk.port} up"]
        _ip_batch(lab.ns(seg), lines)

    def owner(name: str) -> None:
        lines = []
        for lk in plan.links_of(name):
            lines.append(f"link set {lk.ifname} up")
            # nodad: an IPv6 address is usable at once (no DAD on a lab's own segment)
            lines += [f"addr add {c} dev {lk.ifname}" + (" nodad" if ":" in c else "")
                      for c in lk.cidrs]
        lines += [f"route add {r.dst} via {r.via}" for r in plan.routes.get(name, ())]
        _ip_batch(lab.ns(name), lines)

    observe.parallel(segment, [s.name for s in lab.topology.segments])
    observe.parallel(owner, sorted({lk.owner for lk in plan.links}))


# -- etcd -----------------------------------------------------------------------


def start_etcd(lab: Lab) -> None:
    t = lab.topology
    if t.etcd_tls and not lab.pki.exists():
        make_pki(lab.pki.dir, [str(a) for m in t.etcd for a in lab.plan.addresses_of(m.name)])
    members = lab.etcd_members()
    for m in members:
        m.start(wait=False)
    observe.parallel(lambda m: m.wait_healthy(READY_TIMEOUT), members)
    if t.etcd_auth:
        enable_auth(lab)


def enable_auth(lab: Lab) -> None:
    """Users root and flanneld; flanneld may only read and write under the network's prefix."""
    pw = passwords(lab.pki.dir)
    prefix = lab.topology.etcd_prefix + "/"
    # The TLS port accepts connections a moment before etcd serves on it.
    wait_for(lambda: observe.etcdctl(lab, "endpoint", "health", auth=False), READY_TIMEOUT,
             what="etcd to answer etcdctl over TLS")
    for args in (("user", "add", f"root:{pw['root']}", "--interactive=false"),
                 ("user", "grant-role", "root", "root"),
                 ("role", "add", "flannel"),
                 ("role", "grant-permission", "flannel", "--prefix=true", "readwrite", prefix),
                 ("user", "add", f"flanneld:{pw['flanneld']}", "--interactive=false"),
                 ("user", "grant-role", "flanneld", "flannel"),
                 ("auth", "enable")):
        observe.etcdctl(lab, *args, auth=False)


def write_network_config(lab: Lab) -> None:
    value = json.dumps(lab.topology.network, separators=(",", ":"))
    observe.etcdctl(lab, "put", lab.topology.etcd_prefix + "/config", value)


# -- flanneld ---------------------------------------------------------------------


def flanneld_argv(lab: Lab, host: str) -> list[str]:
    """flanneld as on a real node: its files at the defaults (/run/flannel/subnet.env,
    /var/lib/pyflannel), which are the host's own (it runs in its mount namespace)."""
    spec = lab.topology.host(host)
    return [*_venv_tool("flanneld", "flanneld.main"),
            "--etcd-endpoints", ",".join(lab.plan.etcd_endpoints),
            "--etcd-prefix", lab.topology.etcd_prefix, *flanneld_etcd_security(lab),
            "--iface", flanneld_iface(lab, host),
            "--healthz-port", str(observe.HEALTHZ_PORT), "--healthz-ip", "127.0.0.1",
            "--resync-interval", "2", "--log-level", "info",
            *(["--ip-masq"] if spec.ip_masq else []), *spec.flanneld_args]


def flanneld_iface(lab: Lab, host: str) -> str:
    """eth0 (flanneld takes its IPv4 and, dual stack, its global IPv6 address); on an
    IPv6-only underlay the host's IPv6 address, which flanneld accepts as --iface."""
    if 4 in lab.topology.underlay_versions:
        return "eth0"
    return str(lab.plan.addr_of(host))


def flanneld_etcd_security(lab: Lab) -> list[str]:
    """flanneld's TLS and user flags for an `etcd: {tls, auth}` lab (the password goes in
    its environment, see flanneld_env: not on a command line everyone can read)."""
    args: list[str] = []
    if lab.topology.etcd_tls:
        pki = lab.pki
        args += ["--etcd-cafile", str(pki.ca), "--etcd-certfile", str(pki.cert("flanneld")),
                 "--etcd-keyfile", str(pki.key("flanneld"))]
    if lab.topology.etcd_auth:
        args += ["--etcd-username", "flanneld"]
    return args


def flanneld_env(lab: Lab) -> dict[str, str]:
    env = _clean_env()
    if lab.topology.etcd_auth:
        env["FLANNELD_ETCD_PASSWORD"] = passwords(lab.pki.dir)["flanneld"]
    return env


def flanneld_proc(host: str) -> str:
    return f"flanneld-{host}"


def start_flanneld(lab: Lab, host: str) -> None:
    if lab.sandbox.mount_ns_pid(lab.ns(host)) is None:  # (raises if it is gone)
        raise RuntimeError(f"{host} has no mount namespace: flanneld would use the box's "
                           "/run/flannel")
    lab.sandbox.spawn(flanneld_proc(host), flanneld_argv(lab, host), netns=lab.ns(host),
                      env=flanneld_env(lab))


def log_tail(lab: Lab, proc_name: str, lines: int = 15) -> str:
    path = lab.state_dir / f"{proc_name}.log"
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return "(no log)"


def wait_flanneld(lab: Lab, host: str, timeout: float = READY_TIMEOUT) -> None:
    name = flanneld_proc(host)

    def ready() -> bool:
        if lab.sandbox.pid(name) is None:
            raise WaitAbort(f"flanneld on {host} exited; its log "
                            f"({lab.state_dir / (name + '.log')}) ends:\n{log_tail(lab, name)}")
        return observe.flanneld_ready(lab.ns(host))
    try:
        wait_for(ready, timeout, what=f"flanneld on {host} to be ready (/readyz)")
    except TimeoutError as exc:
        raise TimeoutError(f"{exc}\nits log ends:\n{log_tail(lab, name)}") from None


def wait_converged(lab: Lab, timeout: float = CONVERGE_TIMEOUT) -> None:
    wait_for(lambda: observe.converged(lab), timeout,
             what="every host to program every other host's lease", interval=0.1)


# -- CNI and pods -----------------------------------------------------------------


def install_cni(lab: Lab) -> None:
    run([*_venv_tool("flannelctl", "flanneld.ctl"), "install-cni", "--bin-dir", str(lab.cni_bin)],
        timeout=60)


def runtime_for(lab: Lab, host: str) -> Runtime:
    hd = lab.host_dir(host)
    conflist = hd / "cni" / CONFLIST_NAME
    if not conflist.exists():
        write_conflist(hd)
    return Runtime(lab.ns(host), conflist, [lab.cni_bin, CNI_SYSTEM_DIR],
                   enter=lab.sandbox.enter(lab.ns(host)))


def add_pod(lab: Lab, host: str, pod: str) -> Pod:
    """A pod namespace, wired by the CNI plugin exactly as a runtime would ask."""
    short = lab.plan.pod_short(host, pod)
    full = lab.sandbox.add_netns(short, forwarding=False)
    try:
        result = runtime_for(lab, host).add(lab.plan.container_id(host, pod),
                                            f"/run/netns/{full}", POD_IFACE, pod)
        made = Pod(host, pod, result_address(result, 4), result, result_address(result, 6))
        if not made.addresses:
            raise CniError("result", "ADD", 0, f"no address in the result: {result}")
        return made
    except BaseException:
        run(["ip", "netns", "del", full], check=False)
        raise


def del_pod(lab: Lab, host: str, pod: str) -> None:
    p = lab.pods.get(host, {}).get(pod)
    full = lab.plan.pod_ns(host, pod)
    runtime_for(lab, host).delete(lab.plan.container_id(host, pod), f"/run/netns/{full}",
                                  POD_IFACE, pod, p.result if p else None)
    run(["ip", "netns", "del", full], check=False)


# -- up / down ----------------------------------------------------------------------


def tentative6(netns: str) -> int:
    """How many IPv6 addresses in `netns` are still in duplicate address detection."""
    out = run(["ip", "-n", netns, "-6", "-o", "addr", "show", "tentative"], check=False)
    return len(out.stdout.splitlines()) if out.returncode == 0 else 0


def wait_dad(lab: Lab, timeout: float = 15) -> int:
    """Wait until no IPv6 address of the lab is tentative; the namespaces looked at.

    Until DAD ends, a new link-local (cni0's, the veths', flannel-v6.N's) is tentative
    and the first IPv6 pings after `up` go unanswered for up to a second (measured:
    ~200 of 400 pings 4 ms apart): a lab that says "up" must carry IPv6 at once."""
    names = [*map(lab.ns, lab.plan.infra_namespaces()),
             *(lab.plan.pod_ns(h, p) for h, pods in lab.pods.items() for p in pods)]
    wait_for(lambda: not any(observe.parallel(tentative6, names)), timeout,
             what="IPv6 duplicate address detection to finish in every lab namespace")
    return len(names)


def up(lab: Lab, progress: Progress) -> None:
    t = lab.topology
    lab.save()  # first, so that `down` and `status` know the lab from here on
    cni_error: list[BaseException] = []

    def cni() -> None:
        try:
            install_cni(lab)
        except BaseException as exc:
            cni_error.append(exc)
    installer = threading.Thread(target=cni, name="install-cni")
    installer.start()
    with progress.step("namespaces") as s:
        s.detail = f"{create_namespaces(lab)} ({lab.plan.prefix}-*)"
        create_node_mounts(lab)
        s.detail += f" + {len(t.hosts)} mount (one per host)"
    with progress.step("underlay") as s:
        build_underlay(lab)
        s.detail = (f"{len(t.segments)} segment(s), {len(t.routers)} router(s), "
                    f"{len(lab.plan.links)} links")
    with progress.step("etcd") as s:
        start_etcd(lab)
        write_network_config(lab)
        s.detail = f"{len(t.etcd)} member(s) at {', '.join(lab.plan.etcd_endpoints)}"
    with progress.step("flanneld") as s:
        for h in t.host_names:
            write_conflist(lab.host_dir(h))
            start_flanneld(lab, h)
        observe.parallel(lambda h: wait_flanneld(lab, h), t.host_names)
        s.detail = f"{len(t.hosts)} host(s) ready, backend {t.backend_type}"
    with progress.step("peers") as s:
        wait_converged(lab)
        pairs = len(t.hosts) * (len(t.hosts) - 1)
        s.detail = f"{pairs * len(t.families)} peer entries programmed" + (
            f" ({pairs} per family)" if len(t.families) > 1 else "")
    with progress.step("pods") as s:
        installer.join()
        if cni_error:
            raise RuntimeError(f"installing the CNI plugin failed: {cni_error[0]}")
        wanted = [(h.name, p) for h in t.hosts for p in h.pods]
        for pod in observe.parallel(lambda hp: add_pod(lab, *hp), wanted):
            lab.pods.setdefault(pod.host, {})[pod.name] = pod
        for h in t.host_names:
            lab.pods.setdefault(h, {})
        lab.save()
        s.detail = f"{len(wanted)} via CNI ADD"
    if 6 in t.underlay_versions or t.enable_ipv6:
        with progress.step("ipv6") as s:
            s.detail = f"duplicate address detection done in {wait_dad(lab)} namespaces"


def down(name: str) -> tuple[int, int]:
    """Remove a lab by name alone: (namespaces removed, processes stopped)."""
    prefix = lab_prefix(name)
    state = Lab.state_dir_of(name)
    namespaces = [n for n in list_netns() if n.startswith(prefix + "-")]
    if not namespaces and not any(state.glob("*.pid")) and not (state / "lab.json").exists():
        shutil.rmtree(state, ignore_errors=True)
        return 0, 0
    box = Sandbox(prefix)
    pids = {pf.stem: pid for pf in box.state_dir.glob("*.pid")
            if (pid := _pidfile_pid(pf)) and pid_alive(pid)}
    # flanneld first and gently; then etcd at once: a member told to stop while its peers
    # stop too spends seconds trying to hand over leadership, for a cluster about to vanish.
    kill_pids([p for n, p in pids.items() if n.startswith("flanneld-")], signal.SIGTERM, 5)
    kill_pids([p for n, p in pids.items() if n.startswith("etcd-")], signal.SIGKILL, 5)
    box.cleanup()
    return len(namespaces), len(pids)


def _pidfile_pid(pf: Path) -> int | None:
    try:
        return int(pf.read_text())
    except (ValueError, OSError):
        return None


def leftovers(name: str) -> dict[str, list[str]]:
    """What of a lab still exists: namespaces, state dir, processes in its namespaces."""
    prefix = lab_prefix(name)
    ns = [n for n in list_netns() if n.startswith(prefix + "-")]
    procs = [p for n in ns for p in subprocess.run(["ip", "netns", "pids", n],
                                                   capture_output=True, text=True).stdout.split()]
    state = [str(Lab.state_dir_of(name))] if Lab.state_dir_of(name).exists() else []
    return {"namespaces": ns, "processes": procs, "state": state}
