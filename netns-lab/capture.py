"""`python -m netns_lab.capture`: the underlay decoder, run inside a lab namespace.

The decoder is flannelctl's (`flanneld.capture`, which `flanneld.ctl.wgwire` wraps
for WireGuard): one piece serves `flannelctl trace` and `netns-lab capture`, so both
decode IPv4 and IPv6 (outer and inner), VXLAN and WireGuard alike.
"""

from __future__ import annotations

import argparse
import sys

from flanneld.capture import decode, format_line
from flanneld.ctl.wgwire import add_arguments, run

__all__ = ["decode", "format_line", "main"]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="netns_lab.capture")
    add_arguments(p)
    p.add_argument("--label", default="")
    return run(p.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
