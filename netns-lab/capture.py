"""`python -m netns_lab.capture`: the underlay decoder, run inside a lab namespace.

The decoder is flannelctl's (`flanneld.capture`): one piece serves `flannelctl
trace` and `netns-lab capture`, so both decode IPv4 and IPv6 (outer and inner) alike.
"""

from __future__ import annotations

import sys

from flanneld.capture import decode, format_line, main

__all__ = ["decode", "format_line", "main"]

if __name__ == "__main__":
    sys.exit(main())
