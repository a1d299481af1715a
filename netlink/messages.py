"""rtnetlink messages encoded and decoded with struct: pure, no sockets. One import for all.

`from netlink import messages as m` gives every layout, constant, encoder and
parser as `m.<name>`: the numbers (`netlink.uapi`), the primitives
(`netlink.base`), and the bodies and rows of links (`netlink.link`), addresses
(`netlink.addr`), routes (`netlink.route`), neighbours and FDB entries
(`netlink.neigh`). Bodies are returned without the 16-byte nlmsghdr; the socket
(`netlink.rtnl`) adds it, with the sequence number, when it sends them.
Import-light like its parts (the CNI plugin's in-process path loads it).
"""

from __future__ import annotations

from netlink.addr import *  # noqa: F403
from netlink.base import *  # noqa: F403
from netlink.base import Buf  # noqa: F401  (explicit: the type callers annotate with)
from netlink.link import *  # noqa: F403
from netlink.neigh import *  # noqa: F403
from netlink.route import *  # noqa: F403
from netlink.uapi import *  # noqa: F403
