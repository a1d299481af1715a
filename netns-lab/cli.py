"""netns-lab: a whole pyflannel cluster on one Linux box, built from network namespaces.

Hosts, underlay segments and routers, an etcd, flanneld on every host and pods
wired by the real CNI plugin, up in seconds. Several labs can coexist (--name);
each command touches only its own lab. Needs root.
"""

from __future__ import annotations

import argparse
import importlib
import os
import pkgutil
import sys
from types import ModuleType

from netns_lab import commands
from netns_lab.lab import DEFAULT_NAME, LabError
from netns_lab.runtime import CniError
from netns_lab.topology import TopologyError, validate_lab_name

# The order `--help` lists the commands in: the tour first, chaos last.
ORDER = ("up", "status", "ping", "exec", "pod", "capture", "down", "list", "examples",
         "flanneld", "etcd", "link", "partition")


def _commands() -> dict[str, ModuleType]:
    found: dict[str, ModuleType] = {}
    for info in pkgutil.iter_modules(commands.__path__):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{commands.__name__}.{info.name}")
        if hasattr(module, "run") and hasattr(module, "add_arguments"):
            found[info.name.replace("_", "-")] = module
    return found


def _lab_name(value: str) -> str:
    try:
        return validate_lab_name(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="netns-lab", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Start with `netns-lab up --demo`; `netns-lab COMMAND --help` for details.")
    default = os.environ.get("NETNS_LAB_NAME", DEFAULT_NAME)
    parser.add_argument("--name", type=_lab_name, default=default,
                        help=f"the lab to act on (default: $NETNS_LAB_NAME or {DEFAULT_NAME!r})")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    found = _commands()
    for name in sorted(found, key=lambda n: (ORDER.index(n) if n in ORDER else len(ORDER), n)):
        module = found[name]
        doc = (module.__doc__ or "").strip()
        p = sub.add_parser(name, help=doc.split("\n", 1)[0], description=doc,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        p.add_argument("--name", type=_lab_name, default=argparse.SUPPRESS,
                       help="the lab to act on (default: 'lab')")
        module.add_arguments(p)
        p.set_defaults(_run=module.run, _root=getattr(module, "NEEDS_ROOT", True))
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args._root and os.geteuid() != 0:
        print("netns-lab: needs root (network namespaces): run it with sudo", file=sys.stderr)
        return 1
    try:
        return int(args._run(args))
    except (LabError, TopologyError, CniError) as exc:
        print(f"netns-lab: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    sys.exit(main())
