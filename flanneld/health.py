"""/healthz, /readyz and /metrics on --healthz-ip:--healthz-port (a small threaded server).

Unlike flannel, /readyz follows the control plane: it answers 503 with the
reason (e.g. "etcd unreachable: ..." or "out of subnets ...") whenever we hold
no lease or the last reconcile failed, and 200 again once both are fine.
It binds 127.0.0.1 by default, not flannel's 0.0.0.0: metrics and health
need not be on every interface of the host.
"""

from __future__ import annotations

import logging
import socket
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from ipaddress import ip_address

log = logging.getLogger(__name__)


class Readiness:
    """Ready or not, and why not; read by the HTTP threads.

    Either set by the owner (`set_ready` / `set_not_ready`) or, with `compute`,
    worked out afresh at every read, so /readyz is never stale and nothing has
    to poll. Transitions are logged (and reported to `on_change`) when seen.
    """

    def __init__(self, compute: Callable[[], str | None] | None = None,
                 on_change: Callable[[bool], None] | None = None,
                 detail: Callable[[], str | None] | None = None) -> None:
        self.detail = detail or (lambda: None)  # a line for /readyz (wireguard: which mode)
        self._lock = threading.Lock()
        self._set_reason: str | None = "starting"
        self._last: str | None = "starting"
        self._compute = compute
        self._on_change = on_change

    def set_ready(self) -> None:
        self._set_reason = None
        self._observe(None)

    def set_not_ready(self, reason: str) -> None:
        self._set_reason = reason
        self._observe(reason)

    def _observe(self, reason: str | None) -> None:
        with self._lock:
            changed = (reason is None) != (self._last is None)
            if reason != self._last:
                log.log(logging.INFO if changed else logging.DEBUG, "readiness: %s",
                        "ready" if reason is None else f"not ready: {reason}")
            self._last = reason
        if changed and self._on_change is not None:
            self._on_change(reason is None)

    @property
    def reason(self) -> str | None:
        reason = self._compute() if self._compute is not None else self._set_reason
        self._observe(reason)
        return reason

    @property
    def ready(self) -> bool:
        return self.reason is None


class _Server(ThreadingHTTPServer):
    daemon_threads = True


class HealthServer:
    """Serves the three endpoints from a daemon thread until `stop()`."""

    def __init__(self, host: str, port: int, readiness: Readiness,
                 metrics: Callable[[], bytes]) -> None:
        readiness_ = readiness
        metrics_ = metrics

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]
                if path == "/healthz":
                    self._reply(200, b"flanneld is running\n")
                elif path == "/readyz":
                    reason = readiness_.reason
                    detail = readiness_.detail()
                    extra = f"{detail}\n" if detail else ""
                    if reason is None:
                        self._reply(200, f"flanneld is ready\n{extra}".encode())
                    else:
                        self._reply(503, f"flanneld is not ready: {reason}\n{extra}".encode())
                elif path == "/metrics":
                    self._reply(200, metrics_(),
                                "text/plain; version=0.0.4; charset=utf-8")
                else:
                    self._reply(404, b"not found: try /healthz, /readyz or /metrics\n")

            def _reply(self, code: int, body: bytes,
                       ctype: str = "text/plain; charset=utf-8") -> None:
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                log.debug("healthz: " + format, *args)

        family = socket.AF_INET6 if ip_address(host).version == 6 else socket.AF_INET
        server_cls = type("_Server", (_Server,), {"address_family": family})
        self._server = server_cls((host, port), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        name="healthz", daemon=True)

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def start(self) -> HealthServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
