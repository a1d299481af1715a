"""The lab's flanneld processes, each a fork of one interpreter that imported flanneld once.

Every lab host still runs the real flanneld: `flanneld.main.main(argv)` with the lab's
argv and environment, in the host's network and mount namespaces, in a session of its
own, writing its log, its pid in its pidfile. What the fork saves is the interpreter's
start and flanneld's imports: ~0.3 s of CPU per process, i.e. 75 s of CPU for 250 hosts
on a 2-core box, and while so many start at once etcd starves and their first
connections time out. What it shares is memory: the pages of the imported modules are
the server's until a process writes to them, so a PSS count (smem's) counts them once.
The mount-namespace holders (`netns_lab.nodens`) are forks too (set up, then `sleep`).

A fork's name (comm, as top and `ps -o comm` show it) is `flanneld`, and its command
line in /proc is its own flanneld argv, written over the server's (padded) argv area.

Protocol, JSON lines on the server's stdin and stdout, one request at a time:

    {"kind": "flanneld", "argv": [...], "env": {...}, "netns": PATH, "mntns": PATH|null,
     "log": PATH}                                                -> {"pid": N}
    {"kind": "nodens", "netns": PATH, "binds": [[src, dst], ...], "label": NAME,
     "log": PATH}                                                -> {"pid": N}
    anything that fails                                          -> {"error": "..."}

The server ends when its stdin closes; its children live on (reparented to init), as
processes started with Popen do when the command that started them ends. It reaps the
ones that end while it runs.

`python -m netns_lab.forkserver flanneld [MODULE...] [-----...]` preloads flanneld and
MODULEs (the lab's backend); the dashes are room for the forks' command lines.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import importlib
import json
import os
import select
import signal
import subprocess
import sys
import threading
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any

CLONE_NEWNET = 0x40000000
CLONE_NEWNS = 0x00020000
PR_SET_NAME = 15
ARGV_ROOM = 4096  # bytes of the server's command line a fork's own argv is written over
# What a flanneld imports up to its first reconcile (python -X importtime of a lab host).
PRELOAD = ("flanneld.main", "flanneld.daemon", "flanneld.subnet_manager", "flanneld.cni_server",
           "backends", "backends.base", "core.subnetenv", "encodings.idna", "netns_lab.nodens")
BACKEND_MODULES = {"vxlan": "backends.vxlan", "host-gw": "backends.hostgw",
                   "wireguard": "backends.wireguard"}

_libc = ctypes.CDLL(None, use_errno=True)


def _setns(path: str, kind: int) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        if _libc.setns(fd, kind) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"setns {path}: {os.strerror(err)}")
    finally:
        os.close(fd)


def _show_as(argv: Sequence[str]) -> None:
    """`flanneld` as the process's name (comm: top, ps -o comm), and its own command line
    in /proc/<pid>/cmdline (ps, pgrep, flannelctl's liveness check, tests): written over
    the server's argv area, which ARGV_ROOM padding makes long enough (setproctitle's
    way; the area's last byte stays NUL, so the kernel shows every argument)."""
    with contextlib.suppress(Exception):
        _libc.prctl(PR_SET_NAME, ctypes.c_char_p(b"flanneld"), 0, 0, 0)
    with contextlib.suppress(Exception):
        fields = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()
        start, end = int(fields[45]), int(fields[46])  # arg_start, arg_end
        raw = b"\0".join(a.encode() for a in argv) + b"\0"
        room = end - start
        if len(raw) < room:
            ctypes.memmove(start, raw.ljust(room, b"\0"), room)


def _open_log(log: str) -> int:
    return os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)


def _child_stdio(out: int) -> None:
    """stdin from /dev/null, stdout and stderr to the log; no other descriptor kept."""
    null = os.open(os.devnull, os.O_RDWR)
    os.dup2(null, 0)
    os.dup2(out, 1)
    os.dup2(out, 2)
    os.closerange(3, 65536)


def _run_flanneld(req: dict[str, Any], ready_w: int) -> int:
    """In the forked child: become the host's flanneld and run it to its end."""
    os.setsid()
    _setns(req["netns"], CLONE_NEWNET)
    if req.get("mntns"):
        _setns(req["mntns"], CLONE_NEWNS)  # (a single-threaded process, as a fork is)
    os.chdir("/")
    out = _open_log(req["log"])
    os.write(ready_w, b"ready\n")
    _child_stdio(out)  # (closes ready_w)
    for s in (signal.SIGCHLD, signal.SIGTERM, signal.SIGHUP):
        signal.signal(s, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    os.environ.clear()
    os.environ.update(req["env"])
    os.environ.setdefault("GRPC_VERBOSITY", "ERROR")  # what flanneld.main sets on import
    argv = [str(a) for a in req["argv"]]
    sys.argv = argv
    _show_as(argv)
    from flanneld.main import main
    try:
        return int(main(argv[1:]))
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 1


def _run_nodens(req: dict[str, Any], ready_w: int) -> None:
    """In the forked child: set up the host's mount namespace, say so, become `sleep`."""
    from netns_lab import nodens
    os.setsid()
    _setns(req["netns"], CLONE_NEWNET)
    nodens.setup([(s, t) for s, t in req["binds"]])
    out = _open_log(req["log"])
    os.write(ready_w, b"ready\n")
    _child_stdio(out)
    sleep = nodens.sleep_binary()
    os.execv(sleep, [f"pfl-node-{req.get('label', '')}", "infinity"])


def _fork(req: dict[str, Any]) -> int:
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            os.close(r)
            if req["kind"] == "nodens":
                _run_nodens(req, w)
            else:
                code = _run_flanneld(req, w)
        except BaseException as exc:
            with contextlib.suppress(Exception):
                os.write(w, f"error {type(exc).__name__}: {exc}\n".encode())
            with contextlib.suppress(Exception):
                traceback.print_exc()
        finally:
            with contextlib.suppress(Exception):
                sys.stdout.flush()
                sys.stderr.flush()
            os._exit(code)
    os.close(w)
    said = b""
    while chunk := os.read(r, 4096):  # EOF: the child said its word, exec'd, or closed it
        said += chunk
    os.close(r)
    if said.startswith(b"error"):
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, 0)
        raise RuntimeError(said.decode(errors="replace").strip()[6:])
    if not said.startswith(b"ready"):
        raise RuntimeError(f"the {req['kind']} child exited during its set-up")
    return pid


def _reap() -> None:
    with contextlib.suppress(ChildProcessError):
        while os.waitpid(-1, os.WNOHANG)[0] > 0:
            pass


def serve(preload: Sequence[str]) -> int:
    for name in (*PRELOAD, *preload):
        importlib.import_module(name)
    gc.collect()
    gc.freeze()  # the children's collections leave the preloaded objects (and pages) alone
    out = sys.stdout
    out.write("ready\n")
    out.flush()
    buf = b""
    while True:
        ready, _, _ = select.select([0], [], [], 0.5)
        _reap()
        if not ready:
            continue
        chunk = os.read(0, 65536)
        if not chunk:
            return 0
        buf += chunk
        while b"\n" in buf:
            line, buf = buf.split(b"\n", 1)
            try:
                reply: dict[str, Any] = {"pid": _fork(json.loads(line))}
            except Exception as exc:
                reply = {"error": f"{type(exc).__name__}: {exc}"}
            out.write(json.dumps(reply) + "\n")
            out.flush()


class ForkServer:
    """The lab side: one server process, requests serialised by a lock."""

    def __init__(self, log: Path, preload: Sequence[str] = (), timeout: float = 60) -> None:
        self.lock = threading.Lock()
        with open(log, "ab") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "netns_lab.forkserver", "flanneld", *preload,
                 "-" * ARGV_ROOM],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err,
                start_new_session=True)
        self.pid = self.proc.pid
        self.log = log
        assert self.proc.stdout is not None
        self._out: IO[bytes] = self.proc.stdout
        if self._readline(timeout) != "ready":
            self.close()
            raise RuntimeError(f"the flanneld fork server did not start: {self._log_tail()}")

    def _log_tail(self) -> str:
        try:
            return " | ".join(self.log.read_text(errors="replace").splitlines()[-5:])
        except OSError:
            return "no log"

    def _readline(self, timeout: float) -> str:
        ready, _, _ = select.select([self._out], [], [], timeout)
        return self._out.readline().decode().strip() if ready else ""

    def request(self, req: dict[str, Any], timeout: float = 30) -> int:
        with self.lock:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the flanneld fork server exited: {self._log_tail()}")
            assert self.proc.stdin is not None
            self.proc.stdin.write(json.dumps(req).encode() + b"\n")
            self.proc.stdin.flush()
            line = self._readline(timeout)
        if not line:
            raise RuntimeError(f"the flanneld fork server did not answer in {timeout:g}s")
        reply = json.loads(line)
        if "error" in reply:
            raise RuntimeError(reply["error"])
        return int(reply["pid"])

    def close(self) -> None:
        if self.proc.stdin is not None:
            with contextlib.suppress(OSError):
                self.proc.stdin.close()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._out.close()


if __name__ == "__main__":
    sys.exit(serve([a for a in sys.argv[2:] if a.strip("-")]))
