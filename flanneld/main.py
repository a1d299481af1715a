"""`flanneld` entry point: options, logging, signals, exit codes.

Exit codes: 0 after SIGTERM/SIGINT (data plane left in place), 1 when start-up
cannot go on (no interface fits, backend failure), 2 for bad options.
A second SIGTERM/SIGINT kills the process at once.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import signal
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

# gRPC (under the etcd client) logs every failed TLS handshake, once a second, at INFO;
# our own log already says what failed and why. An operator's setting wins.
os.environ.setdefault("GRPC_VERBOSITY", "ERROR")

from flanneld import __version__, runtime_file
from flanneld.options import Options, OptionsError, format_help, load_options

if TYPE_CHECKING:
    from flanneld.daemon import Daemon

log = logging.getLogger("flanneld")
STOP_TIMEOUT = 10.0


def _setup_logging(level: str) -> None:
    logging.basicConfig(level=getattr(logging, level.upper()), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # gRPC logs cancelled streams with tracebacks at debug level: noise even when debugging.
    logging.getLogger("grpc").setLevel(logging.WARNING)
    if level != "debug":
        for noisy in ("aetcd", "asyncio"):
            logging.getLogger(noisy).setLevel(logging.WARNING)


class _RuntimeFile:
    """flanneld.json next to subnet.env, how flannelctl finds our settings (runtime_file)."""

    def __init__(self, opts: Options) -> None:
        self.opts, self.pid, self.started = opts, os.getpid(), runtime_file.now_utc()
        self.path = runtime_file.path_for(opts.subnet_file)

    def write(self, daemon: Daemon | None = None) -> None:
        own, config = (daemon.own, daemon.config) if daemon is not None else (None, None)
        public_ip = own.attrs.public_ip if own is not None else None
        info = runtime_file.from_options(
            self.opts, pid=self.pid, flanneld_version=__version__, started_at=self.started,
            public_ip=str(public_ip) if public_ip else None,
            backend=config.backend_type if config is not None else None)
        try:
            runtime_file.write(self.path, info)
        except OSError as exc:
            log.warning("cannot write %s (flannelctl reads our settings there): %s",
                        self.path, exc)

    def remove(self) -> None:
        runtime_file.remove(self.path, self.pid)


async def _run(opts: Options) -> int:
    from flanneld.daemon import Daemon, FatalError

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()

    def on_signal(signum: int) -> None:
        log.info("%s received: exiting, leaving the data plane in place (again to kill)",
                 signal.Signals(signum).name)
        for s in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(s)
            signal.signal(s, signal.SIG_DFL)  # a second signal kills at once
        stop.set()

    for s in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(s, on_signal, s)

    daemon = Daemon(opts)
    runtime = _RuntimeFile(opts)
    runtime.write()
    starting = asyncio.create_task(daemon.start(), name="start")
    stopping = asyncio.create_task(stop.wait(), name="stop")
    code = 0
    try:
        await asyncio.wait({starting, stopping}, return_when=asyncio.FIRST_COMPLETED)
        if starting.done():
            starting.result()  # raises a start-up failure
            runtime.write(daemon)  # now with the backend and our public IP
            await stop.wait()
        else:
            starting.cancel()
            await asyncio.gather(starting, return_exceptions=True)
    except FatalError as exc:
        log.error("%s", exc)
        code = 1
    except Exception:
        log.exception("start-up failed")
        code = 1
    finally:
        stopping.cancel()
        try:
            await asyncio.wait_for(daemon.stop(), STOP_TIMEOUT)
        except TimeoutError:
            log.warning("shutdown took over %.0fs; exiting anyway", STOP_TIMEOUT)
        runtime.remove()
    if code == 0:
        log.info("exiting cleanly")
    return code


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        opts = load_options(args, os.environ)
    except OptionsError as exc:
        print(f"flanneld: {exc}", file=sys.stderr)
        return 2
    if opts.help:
        sys.stdout.write(format_help())
        return 0
    if opts.version:
        print(__version__)
        return 0
    _setup_logging(opts.log_level)
    for warning in opts.warnings:
        log.warning("%s", warning)
    log.info("pyflannel flanneld %s starting (pid %d)", __version__, os.getpid())
    shown = dataclasses.replace(opts, etcd_password="***" if opts.etcd_password else None)
    log.debug("options: %s", shown)
    return asyncio.run(_run(opts))


if __name__ == "__main__":
    sys.exit(main())
