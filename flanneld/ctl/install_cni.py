"""Install the CNI plugin: the `flannel` executable, and optionally flannel's conflist.

Writes DIR/flannel (mode 0755): a tiny script run by the fastest absolute
interpreter available with -I -S (no site, no environment), which imports
only the stdlib-only front (cni/front.py). It forwards each invocation to
flanneld's CNI socket; when flanneld is down it execs this installation's own
interpreter on the same implementation. With --conf-dir it also writes
10-flannel.conflist, kube-flannel's conflist unchanged (flannel + portmap).

  flannelctl install-cni --bin-dir /opt/cni/bin --conf-dir /etc/cni/net.d
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

CONFLIST = {"name": "cbr0", "cniVersion": "0.3.1", "plugins": [
    {"type": "flannel", "delegate": {"hairpinMode": True, "isDefaultGateway": True}},
    {"type": "portmap", "capabilities": {"portMappings": True}}]}
CONFLIST_NAME = "10-flannel.conflist"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--bin-dir", type=Path, required=True,
                        help="CNI plugin directory (e.g. /opt/cni/bin, /usr/lib/cni)")
    parser.add_argument("--conf-dir", type=Path,
                        help=f"also write {CONFLIST_NAME} here (e.g. /etc/cni/net.d)")
    parser.add_argument("--front-python", help="interpreter for the front (default: "
                        "/usr/bin/python3 if >= 3.11, else this interpreter's real path)")


def _is_usable(python: str) -> bool:
    try:
        proc = subprocess.run([python, "-I", "-S", "-c",
                               "import sys; sys.exit(sys.version_info < (3, 11))"],
                              capture_output=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return proc.returncode == 0


def front_python(explicit: str | None = None) -> str:
    """Fastest absolute interpreter for `-I -S`: never a shim (pyenv's costs ~90 ms)."""
    if explicit:
        if not os.path.isabs(explicit) or not _is_usable(explicit):
            raise SystemExit(f"--front-python {explicit!r}: need an absolute path to Python "
                             ">= 3.11")
        return explicit
    if os.path.exists("/usr/bin/python3") and _is_usable("/usr/bin/python3"):
        return "/usr/bin/python3"
    return os.path.realpath(sys.executable)


def source_root() -> str:
    """The directory holding the `cni` package (the repo for an editable install)."""
    import cni
    return str(Path(cni.__file__).resolve().parent.parent)


def render_script(front: str, fallback: str, root: str) -> str:
    return (f"#!{front} -IS\n"
            "# pyflannel CNI plugin (flannelctl install-cni). The front forwards to flanneld's\n"
            "# CNI socket, or execs the fallback interpreter on the same implementation.\n"
            "import sys\n"
            f"sys.path.insert(0, {root!r})  # found first: no scan of the stdlib dirs\n"
            "from cni.front import main\n"
            f"main({fallback!r}, {root!r})\n")


def _write_atomic(path: Path, text: str, mode: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def install(bin_dir: Path, conf_dir: Path | None = None, front: str | None = None) -> Path:
    # The fallback keeps the venv path as is: its pyvenv.cfg is what gives it site-packages.
    fallback = os.path.abspath(sys.executable)
    exe = bin_dir / "flannel"
    _write_atomic(exe, render_script(front_python(front), fallback, source_root()), 0o755)
    if conf_dir is not None:
        _write_atomic(conf_dir / CONFLIST_NAME, json.dumps(CONFLIST, indent=2) + "\n", 0o644)
    return exe


def run(args: argparse.Namespace) -> int:
    exe = install(args.bin_dir, args.conf_dir, args.front_python)
    print(f"installed {exe}")
    if args.conf_dir is not None:
        print(f"installed {args.conf_dir / CONFLIST_NAME}")
    return 0
