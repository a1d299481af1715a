"""The one netlink layer: message layouts and constants, codecs, and the socket.

`base` holds the header, attribute and error primitives; `messages` the
rtnetlink bodies we encode and the rows we decode; `rtnl` the socket with
batching, dumps and per-request error mapping. Import-light throughout (no
`socket`, `typing` or `pathlib` at import time), so the CNI plugin's
in-process path can use it.
"""
