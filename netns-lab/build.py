"""Bring a lab up and down: namespaces, underlay, etcd, flanneld per host, pods via CNI.

`up` is parallel wherever the kernel and the daemons allow it and waits on
conditions (etcd healthy, flanneld /readyz, every peer programmed), never on
sleeps. `down` needs nothing but the lab's name: it kills what the pidfiles
name, then everything still inside a namespace with the lab's prefix, then
removes those namespaces and the state directory.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from netns_lab import kernel, observe
from netns_lab.lab import Lab, Pod, flanneld_proc
from netns_lab.netns import (
    NETNS_DIR,
    Sandbox,
    WaitAbort,
    kill_pids,
    list_netns,
    pid_alive,
    run,
    wait_for,
)
from netns_lab.plan import BRIDGE, POD_IFACE, lab_prefix
from netns_lab.progress import Progress, Step
from netns_lab.runtime import (
    CNI_SYSTEM_DIR,
    CONFLIST_NAME,
    CniError,
    Runtime,
    result_address,
    write_conflist,
)
from netns_lab.tls import make_pki, passwords

KERNEL_FILE = "kernel.json"  # what `up` changed host-wide, in the lab's state
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
    forks = lab.forks()
    observe.parallel(lambda h: lab.sandbox.add_mount_ns(lab.ns(h), lab.node_binds(h),
                                                        forks=forks),
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


ETCD_NICE = -15  # an etcd member's scheduling priority (its autogroup's), see favour_etcd


def favour_etcd(pid: int) -> None:
    """Run an etcd member ahead of the hosts' daemons. On one box the lab's control plane
    competes with them for the CPU (on real nodes it has machines of its own), and the
    scheduler shares the CPU between sessions: with 250 flanneld busy at once (each its
    own session), the member's share was 1/250 and flanneld's connections timed out
    ("connection attempt timed out before receiving SETTINGS frame") for over 88 s. At
    nice -15 its share is ~28 times a flanneld's. Only this process changes: its session's
    autogroup, and its threads when autogroups are off."""
    with contextlib.suppress(OSError):
        Path(f"/proc/{pid}/autogroup").write_text(f"{ETCD_NICE}\n")
    with contextlib.suppress(OSError):
        for tid in os.listdir(f"/proc/{pid}/task"):
            with contextlib.suppress(OSError):
                os.setpriority(os.PRIO_PROCESS, int(tid), ETCD_NICE)


def start_etcd(lab: Lab) -> None:
    t = lab.topology
    if t.etcd_tls and not lab.pki.exists():
        make_pki(lab.pki.dir, [str(a) for m in t.etcd for a in lab.plan.addresses_of(m.name)])
    members = lab.etcd_members()
    for m in members:
        m.start(wait=False)
        if m.proc is not None:
            favour_etcd(m.proc.pid)
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
    return [*_venv_tool("flanneld", "flanneld.main"), *flanneld_options(lab, host)]


def flanneld_options(lab: Lab, host: str) -> list[str]:
    """flanneld's command line after the program."""
    spec = lab.topology.host(host)
    return ["--etcd-endpoints", ",".join(lab.plan.etcd_endpoints),
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


def start_flanneld(lab: Lab, host: str) -> None:
    """The host's flanneld, in its network and mount namespaces: a fork of the lab's fork
    server (netns_lab.forkserver), or exec'd afresh with NETNS_LAB_FORKSERVER=0."""
    mnt = lab.sandbox.mount_ns_pid(lab.ns(host))  # (raises if it is gone)
    if mnt is None:
        raise RuntimeError(f"{host} has no mount namespace: flanneld would use the box's "
                           "/run/flannel")
    name = flanneld_proc(host)
    forks = lab.forks()
    if forks is None:
        lab.sandbox.spawn(name, flanneld_argv(lab, host), netns=lab.ns(host),
                          env=flanneld_env(lab))
        return
    exe = Path(sys.executable).parent / "flanneld"
    pid = forks.request({"kind": "flanneld", "argv": [str(exe), *flanneld_options(lab, host)],
                         "env": flanneld_env(lab), "netns": str(NETNS_DIR / lab.ns(host)),
                         "mntns": f"/proc/{mnt}/ns/mnt",
                         "log": str(lab.state_dir / f"{name}.log")})
    lab.sandbox.pidfile(name).write_text(f"{pid}\n")


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


def scaled_timeout(base: float, hosts: int) -> float:
    """A wait's timeout for a lab of `hosts`: `base`, plus 0.25 s a host beyond 16 (on
    2 cores, 250 flanneld start in ~25 s and program each other's 62,000 entries)."""
    return base + 0.25 * max(0, hosts - 16)


def poll_interval(pending: int) -> float:
    """How often to look again: often for a few, less for many (each look costs CPU the
    daemons being waited on need)."""
    return 0.05 if pending <= 8 else min(0.5, 0.01 * pending)


def wait_all_flanneld(lab: Lab, hosts: list[str], step: Step | None = None,
                      timeout: float | None = None) -> None:
    """Wait for every host's flanneld /readyz. A host is asked once its subnet.env exists
    (flanneld writes it just before it is ready), else every 2 s; a flanneld that exits
    ends the wait with its log."""
    timeout = timeout if timeout is not None else scaled_timeout(READY_TIMEOUT, len(hosts))
    pending = set(hosts)
    asked: dict[str, float] = {}
    deadline = time.monotonic() + timeout

    def ready(host: str) -> bool:
        name = flanneld_proc(host)
        if lab.sandbox.pid(name) is None:
            raise WaitAbort(f"flanneld on {host} exited; its log "
                            f"({lab.state_dir / (name + '.log')}) ends:\n{log_tail(lab, name)}")
        now = time.monotonic()
        if not (lab.host_dir(host) / "subnet.env").exists() and now - asked.get(host, 0) < 2:
            return False
        asked[host] = now
        return observe.flanneld_ready(lab.ns(host))

    while pending:
        done = observe.parallel(ready, sorted(pending))
        pending -= {h for h, ok in zip(sorted(pending), done, strict=True) if ok}
        if step is not None:
            step.update(f"{len(hosts) - len(pending)}/{len(hosts)} ready")
        if not pending:
            return
        if time.monotonic() >= deadline:
            first = sorted(pending, key=_host_order)[0]
            raise TimeoutError(
                f"timed out after {timeout:.0f}s waiting for flanneld to be ready (/readyz) on "
                f"{len(pending)} host(s): {_some(pending)}\n{first}'s log ends:\n"
                f"{log_tail(lab, flanneld_proc(first))}")
        time.sleep(poll_interval(len(pending)))


def _host_order(name: str) -> tuple[int, str]:
    digits = "".join(ch for ch in name if ch.isdigit())
    return (int(digits) if digits else 0, name)


def _some(names: set[str] | list[str], n: int = 10) -> str:
    ordered = sorted(names, key=_host_order)
    return ", ".join(ordered[:n]) + (f" and {len(ordered) - n} more" if len(ordered) > n else "")


def wait_converged(lab: Lab, timeout: float | None = None, step: Step | None = None) -> None:
    """Wait until every host holds a lease and has programmed every other host's, in each
    family. A host found done is not looked at again until all are; then every host is
    looked at once more (one may have lost an entry meanwhile) and the wait goes on for
    those that did."""
    hosts = lab.topology.host_names
    timeout = timeout if timeout is not None else scaled_timeout(CONVERGE_TIMEOUT, len(hosts))
    deadline = time.monotonic() + timeout
    pending, whole, why = list(hosts), True, ""  # whole: this round looks at every host
    while True:
        look = list(hosts) if whole else pending
        try:
            leases = [ls for ls in observe.read_leases(lab) if observe.lease_owner(lab, ls)]
            owners = {observe.lease_owner(lab, ls) for ls in leases}
            if len(owners) < len(hosts):
                why = f"hosts without a lease: {_some(set(hosts) - owners - {None})}"
                look, pending = [], list(hosts)
            else:
                views = observe.parallel(lambda h: observe.host_view(lab, h), look)
                pending = [h for h, v in zip(look, views, strict=True)
                           if not observe.all_peers_ok(lab, h, leases, v)]
                why = f"not yet programmed everywhere: {_some(pending)}"
                if not pending and whole:
                    return
            whole = not pending  # each found done in turn: look at all of them once more
        except Exception as exc:  # keep polling; report the last error on timeout
            why, whole = f"last error: {exc!r}", False
        if step is not None:
            step.update(f"{len(hosts) - len(pending)}/{len(hosts)} hosts programmed")
        if time.monotonic() >= deadline:
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for every host to "
                               f"program every other host's lease ({why})")
        if not whole:
            time.sleep(poll_interval(len(pending)) * 2)


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


def lab_id(name: str) -> str:
    """How the kernel registry names a lab: its state directory (unique per state root)."""
    return str(Lab.state_dir_of(name))


def size_kernel(lab: Lab, change: bool = True) -> tuple[list[kernel.Change],
                                                         list[kernel.Restore]]:
    """Raise the host-wide settings the lab needs (netns_lab.kernel) and record the
    changes in the lab's state (kernel.json); with `change` False, refuse instead."""
    t = lab.topology
    pods = sum(len(h.pods) for h in t.hosts)
    what = f"lab {lab.name!r}: {len(t.hosts)} hosts, {pods} pods"
    meta = {"name": lab.name, "prefix": lab.plan.prefix, "state_dir": str(lab.state_dir)}
    changes, restored = kernel.acquire(lab_id(lab.name), meta, kernel.entries_needed(t),
                                       change=change, what=what, netns=list_netns)
    record = {"changed": [{"key": c.key, "old": c.old, "new": c.new, "why": c.why}
                          for c in changes],
              "entries": {str(v): n for v, n in kernel.entries_needed(t).items()}}
    (lab.state_dir / KERNEL_FILE).write_text(json.dumps(record, indent=2) + "\n")
    return changes, restored


def release_kernel(name: str) -> list[kernel.Restore]:
    """The lab's holds on host-wide settings released: what was written back (or left)."""
    return kernel.release(lab_id(name), netns=list_netns)


def verify_pods(lab: Lab, before: dict[int, dict[str, int]] | None = None) -> str:
    """Ping the sample of pod pairs covering every host (netns_lab.reach); raise if any
    pair fails, naming them and what the kernel's neighbour tables say."""
    from netns_lab import reach  # (reach -> ping -> status -> build: not at import time)
    verdict = reach.verify(lab)
    if verdict.failed:
        bad = verdict.failed
        shown = ", ".join(f"{r.src} -> {r.dst}" + (f" (IPv{r.family})"
                                                   if len(lab.topology.families) > 1 else "")
                          for r in bad[:10])
        more = f" and {len(bad) - 10} more" if len(bad) > 10 else ""
        raise RuntimeError(
            f"the data plane does not carry pod traffic: {len(bad)} of {verdict.pairs} "
            f"sampled pod pairs got no echo reply ({shown}{more}), although every host "
            f"programmed every peer. {kernel.neigh_diagnosis(before)}")
    detail = f"{verdict.pairs} pod pairs answer (every host with pods as source and target)"
    if verdict.unsampled:
        detail += f"; not sampled (no pods): {_some(verdict.unsampled)}"
    return detail


def up(lab: Lab, progress: Progress, kernel_sizing: bool = True) -> None:
    t = lab.topology
    lab.save()  # first, so that `down` and `status` know the lab from here on
    with progress.step("kernel") as s:
        tables = kernel.neigh_stats()
        changes, restored = size_kernel(lab, kernel_sizing)
        for r in restored:
            progress.announce(f"      {r.key}: {r.note} (its lab is gone)")
        if changes:
            s.detail = (f"raised {len(changes)} host-wide setting(s) for this lab (restored "
                        "at `down`)")
            for why in dict.fromkeys(c.why for c in changes):
                s.notes.append(f"      {why}:")
                s.notes += [f"        {c.key} {c.old} -> {c.new}" for c in changes
                            if c.why == why]
        else:
            entries = kernel.entries_needed(t)
            s.detail = "host-wide settings suffice (neighbour entries: " + ", ".join(
                f"IPv{v} ~{n:,}" for v, n in entries.items()) + ")"
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
        wait_all_flanneld(lab, t.host_names, s)
        s.detail = f"{len(t.hosts)} host(s) ready, backend {t.backend_type}"
    with progress.step("peers") as s:
        wait_converged(lab, step=s)
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
    if any(lab.pods.values()):
        with progress.step("data plane") as s:
            s.detail = verify_pods(lab, tables)


def down(name: str) -> tuple[int, int, list[kernel.Restore]]:
    """Remove a lab by name alone: (namespaces removed, processes stopped, the host-wide
    settings written back or left as someone else set them)."""
    prefix = lab_prefix(name)
    state = Lab.state_dir_of(name)
    namespaces = [n for n in list_netns() if n.startswith(prefix + "-")]
    if not namespaces and not any(state.glob("*.pid")) and not (state / "lab.json").exists():
        shutil.rmtree(state, ignore_errors=True)
        return 0, 0, release_kernel(name)
    box = Sandbox(prefix)
    pids = {pf.stem: pid for pf in box.state_dir.glob("*.pid")
            if (pid := _pidfile_pid(pf)) and pid_alive(pid)}
    # flanneld first and gently; then etcd at once: a member told to stop while its peers
    # stop too spends seconds trying to hand over leadership, for a cluster about to vanish.
    kill_pids([p for n, p in pids.items() if n.startswith("flanneld-")], signal.SIGTERM, 5)
    kill_pids([p for n, p in pids.items() if n.startswith("etcd-")], signal.SIGKILL, 5)
    box.cleanup()
    # after the namespaces are gone: the entries that needed the raise are gone with them
    return len(namespaces), len(pids), release_kernel(name)


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
