"""Run the plugin (or the CNI server) with a crash point armed: at that step the process
SIGKILLs itself, as a plugin or a daemon killed there would die. Test-side fault
injection, so that product code carries no test hooks.

    crashpoint.py POINT plugin|server [ARGS...]

POINT `reserved`: addresses reserved and recorded, nothing wired (the bridge is next);
POINT `wired`: links up and addressed, no masquerade chain or scratch file yet.
"""

from __future__ import annotations

import os
import signal
import sys


def arm(point: str) -> None:
    import cni.link
    import cni.masq

    def die(*_args: object, **_kw: object) -> None:
        os.kill(os.getpid(), signal.SIGKILL)

    if point == "reserved":
        cni.link.ensure_bridge = die  # type: ignore[assignment]
    elif point == "wired":
        cni.masq.setup = die  # type: ignore[assignment]
    else:
        raise SystemExit(f"crashpoint: unknown point {point!r} (reserved, wired)")


def main() -> int:
    point, what, *rest = sys.argv[1:]
    arm(point)
    if what == "plugin":
        from cni.plugin import main as plugin_main
        return plugin_main()
    from flanneld.cni_server import main as server_main
    return server_main(rest)


if __name__ == "__main__":
    sys.exit(main())
