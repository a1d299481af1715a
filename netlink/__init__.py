"""The one netlink layer: the kernel's numbers and layouts, codecs, and the socket.

`uapi` holds the constants and struct layouts; `base` the header, attribute and
error primitives; `link`, `addr`, `route` and `neigh` the rtnetlink bodies we
encode and the rows we decode (`messages` re-exports all of it as `m.<name>`);
`rtnl` the one socket class, with batching, dumps and errno -> OSError mapping;
`netns` namespace switching. Import-light throughout (stdlib only, no `socket`,
`typing` or `pathlib` at import time), so the CNI plugin's in-process path can
use it; the daemon's kernel watch (`flanneld/kwatch.py`) parses with it too.
"""
