"""flanneld's CNI server: the plugin's work, warm, over a root-only unix socket.

The exec'd `flannel` front (cni/front.py) forwards each invocation here and
relays the answer; this process keeps netlink sockets, the nft context and
the bridge state warm, and hands veth deletions (an RCU grace period each) to
a background thread. The work itself is `cni.plugin.handle`, the very function
the front's in-process fallback runs.

Callers are checked with SO_PEERCRED: uid 0, and the same network namespace as
the server (the plugin's host side must be ours). Anyone else gets a refusal
and the front falls back to doing the work itself.

Standalone (tests, benchmarks, a node without the daemon):
    python -m flanneld.cni_server --socket /run/flannel/cni.sock
"""

from __future__ import annotations

import argparse
import contextlib
import os
import queue
import signal
import socket
import struct
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

MAX_REQUEST = 16 << 20
_CRED = struct.Struct("3i")
_TIMEOUT = struct.pack("ll", 30, 0)  # struct timeval: a stalled client is dropped after 30 s


def _netns_id(pid: int | str = "thread-self") -> tuple[int, int]:
    st = os.stat(f"/proc/{pid}/ns/net")
    return st.st_dev, st.st_ino


class _Reader:
    """Frames off a socket with as few recv calls as possible (one, for a normal request)."""

    def __init__(self, conn: socket.socket) -> None:
        self.conn = conn
        self.buf = b""
        self.pos = 0

    def take(self, n: int) -> bytes:
        if n > MAX_REQUEST:
            raise ConnectionError("request too large")
        while len(self.buf) - self.pos < n:
            chunk = self.conn.recv(1 << 16)
            if not chunk:
                raise ConnectionError("short request")
            self.buf = self.buf[self.pos:] + chunk
            self.pos = 0
        out = self.buf[self.pos:self.pos + n]
        self.pos += n
        return out


def read_request(conn: socket.socket) -> tuple[dict[str, str], bytes]:
    reader = _Reader(conn)
    head = reader.take(8)
    if head[:4] != b"PFC1":
        raise ConnectionError("bad magic")
    pairs = reader.take(int.from_bytes(head[4:8], "big"))
    stdin = reader.take(int.from_bytes(reader.take(4), "big"))
    env = {}
    for pair in pairs.split(b"\0") if pairs else []:
        key, _, value = pair.partition(b"=")
        env[key.decode(errors="replace")] = value.decode(errors="replace")
    return env, stdin


def encode_response(code: int, out: bytes, err: bytes) -> bytes:
    return (b"K" + code.to_bytes(4, "big") + len(out).to_bytes(4, "big") + out
            + len(err).to_bytes(4, "big") + err)


class CniServer:
    """Serve CNI invocations on `socket_path` from worker threads (never the asyncio loop)."""

    def __init__(self, socket_path: Path, workers: int = 4) -> None:
        self.socket_path = Path(socket_path)
        self.workers = workers
        self._listener: socket.socket | None = None
        self._threads: list[threading.Thread] = []
        self._later: queue.Queue[Callable[[Any], None] | None] = queue.Queue()
        self._netns: tuple[int, int] = (0, 0)
        self._stopping = threading.Event()

    # lifecycle -----------------------------------------------------------------

    def start(self) -> None:
        from cni import link, masq  # the plugin's modules load here, not at daemon import
        self._netns = _netns_id()
        self._prepare_dir()
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        listener.bind(str(self.socket_path))
        os.chmod(self.socket_path, 0o600)
        listener.listen(512)
        self._listener = listener
        masq.nft()  # its netlink socket must be opened here, in the host namespace
        bridges = link.BridgeCache()
        self._spawn("cni-reaper", self._reap)
        for i in range(self.workers):
            self._spawn(f"cni-worker-{i}", self._work, bridges)

    def stop(self) -> None:
        self._stopping.set()
        listener, self._listener = self._listener, None
        if listener is not None:
            with contextlib.suppress(OSError):
                listener.shutdown(socket.SHUT_RDWR)  # wakes every accept() with an error
        workers = [t for t in self._threads if t.name.startswith("cni-worker")]
        for t in workers:
            t.join(timeout=30)
        if listener is not None:
            listener.close()
        self._later.put(None)  # the reaper finishes what is queued, then exits
        for t in self._threads:
            t.join(timeout=30)
        self._threads = []
        with contextlib.suppress(FileNotFoundError):
            self.socket_path.unlink()

    def _spawn(self, name: str, target: Any, *args: Any) -> None:
        t = threading.Thread(target=target, args=args, name=name, daemon=True)
        t.start()
        self._threads.append(t)

    def _prepare_dir(self) -> None:
        parent = self.socket_path.parent
        if not parent.exists():
            parent.mkdir(mode=0o700, parents=True)
        st = parent.stat()
        if st.st_uid != os.geteuid():
            raise PermissionError(f"{parent} is owned by uid {st.st_uid}, not by us: refusing "
                                  "to put the CNI socket there")
        if st.st_mode & 0o022 and not st.st_mode & 0o1000:
            raise PermissionError(f"{parent} is writable by others (mode "
                                  f"{st.st_mode & 0o7777:o}): refusing to serve the CNI there")
        if self.socket_path.exists() or self.socket_path.is_symlink():
            probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                probe.connect(str(self.socket_path))
                raise RuntimeError(f"{self.socket_path}: another CNI server is listening")
            except OSError:
                self.socket_path.unlink()  # stale, from a process that is gone
            finally:
                probe.close()

    # threads ---------------------------------------------------------------------

    def _work(self, bridges: Any) -> None:
        """Each worker accepts for itself: no hand-off between threads on the hot path."""
        from cni.context import Context
        listener = self._listener
        assert listener is not None
        ctx = Context(defer=self._defer, flush=self._flush, bridges=bridges)
        try:
            while not self._stopping.is_set():
                try:
                    conn, _ = listener.accept()
                except OSError:
                    if not self._stopping.is_set():
                        time.sleep(0.05)  # e.g. EMFILE: do not spin
                    continue
                with conn:
                    self._serve(conn, ctx)
        finally:
            ctx.close()

    def _serve(self, conn: Any, ctx: Any) -> None:
        from cni.plugin import handle
        # A kernel receive timeout keeps the socket blocking (settimeout would poll per call).
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, _TIMEOUT)
        try:
            env, stdin = read_request(conn)
        except (OSError, ConnectionError):
            return
        why = self._untrusted(conn)
        if why:
            print(f"cni-server: refused a caller ({why}); it does the work itself",
                  file=sys.stderr, flush=True)
            with contextlib.suppress(OSError):
                conn.sendall(b"R")
            return
        code, out, err = handle(env, stdin, ctx)
        with contextlib.suppress(OSError):
            conn.sendall(encode_response(code, out, err))
        ctx.release()  # only now may the background thread compete for the GIL

    def _untrusted(self, conn: socket.socket) -> str:
        """Why this caller may not use us ("" if it may): root, in our network namespace."""
        pid, uid, _gid = _CRED.unpack(conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED,
                                                      _CRED.size))
        if uid != 0:
            return f"pid {pid} runs as uid {uid}, not root"
        try:
            if _netns_id(pid) != self._netns:
                return f"pid {pid} is in another network namespace"
        except OSError as exc:
            return f"pid {pid}: cannot read its namespace ({exc.strerror})"
        return ""

    def _defer(self, work: Callable[[Any], None]) -> None:
        self._later.put(work)

    def _flush(self) -> None:
        self._later.join()

    def _reap(self) -> None:
        """Run work queued by requests, in order, after their replies went out.

        Veth deletions (each waits for an RCU grace period) and flannel's scratch
        file; a DEL's removal of that file queues behind the ADD's write of it.
        """
        from netlink.rtnl import RtNetlink
        with RtNetlink() as host:
            while True:
                work = self._later.get()
                try:
                    if work is None:
                        return
                    work(host)
                except Exception as exc:  # one failed item must not stop the queue
                    print(f"cni-server: deferred work failed: {exc!r}", file=sys.stderr)
                finally:
                    self._later.task_done()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Serve the pyflannel CNI plugin on a socket.")
    parser.add_argument("--socket", type=Path, required=True)
    parser.add_argument("--workers", type=int, default=4)
    args = parser.parse_args(argv)
    server = CniServer(args.socket, workers=args.workers)
    done = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: done.set())
    server.start()
    print(f"cni-server: serving on {args.socket}", file=sys.stderr, flush=True)
    done.wait()
    server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
