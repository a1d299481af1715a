"""The kernel's netlink ABI as Python: every constant and struct layout pyflannel uses.

One place for the numbers of <linux/netlink.h>, <linux/rtnetlink.h>,
<linux/neighbour.h>, <linux/if_link.h>, <linux/if_addr.h>, <linux/if.h> and
<asm-generic/socket.h>, so no module writes a bare 24 or 33. Pure data: imports
only `struct` (the CNI plugin's in-process path loads this).
"""

from __future__ import annotations

import struct

# --- sockets and protocols (<linux/netlink.h>, <asm-generic/socket.h>) ------------------------
AF_UNSPEC, AF_INET, AF_BRIDGE, AF_NETLINK, AF_INET6 = 0, 2, 7, 16, 10
NETLINK_ROUTE, NETLINK_NETFILTER = 0, 12
SOL_SOCKET, SO_SNDBUF, SO_RCVBUF, SO_RCVBUFFORCE = 1, 7, 8, 33
SOL_NETLINK = 270
NETLINK_ADD_MEMBERSHIP, NETLINK_CAP_ACK, NETLINK_EXT_ACK, NETLINK_GET_STRICT_CHK = 1, 10, 11, 12
# Legacy multicast group bits for bind() (RTMGRP_*) and a netfilter group number
RTMGRP_LINK, RTMGRP_NEIGH, RTMGRP_IPV4_IFADDR, RTMGRP_IPV4_ROUTE = 0x1, 0x4, 0x10, 0x40
RTMGRP_IPV6_IFADDR, RTMGRP_IPV6_ROUTE = 0x100, 0x400
NFNLGRP_NFTABLES = 7
CLONE_NEWNET = 0x40000000
NS_GET_NSTYPE = 0xB703  # ioctl _IO(0xb7, 0x3) on an nsfs fd (<linux/nsfs.h>)

# --- nlmsghdr ---------------------------------------------------------------------------------
NLMSG_HDRLEN = 16
NLMSG_NOOP, NLMSG_ERROR, NLMSG_DONE = 1, 2, 3
NLM_F_REQUEST, NLM_F_MULTI, NLM_F_ACK, NLM_F_ECHO, NLM_F_DUMP_INTR = 0x1, 0x2, 0x4, 0x8, 0x10
NLM_F_DUMP = 0x300
NLM_F_REPLACE, NLM_F_EXCL, NLM_F_CREATE = 0x100, 0x200, 0x400
NLM_F_CAPPED, NLM_F_ACK_TLVS = 0x100, 0x200  # in NLMSG_ERROR replies
NLMSGERR_ATTR_MSG = 1
NLA_F_NESTED, NLA_F_NET_BYTEORDER = 0x8000, 0x4000
NLA_TYPE_MASK = ~(NLA_F_NESTED | NLA_F_NET_BYTEORDER) & 0xFFFF

# --- rtnetlink message types ------------------------------------------------------------------
RTM_NEWLINK, RTM_DELLINK, RTM_GETLINK = 16, 17, 18
RTM_NEWADDR, RTM_DELADDR, RTM_GETADDR = 20, 21, 22
RTM_NEWROUTE, RTM_DELROUTE, RTM_GETROUTE = 24, 25, 26
RTM_NEWNEIGH, RTM_DELNEIGH, RTM_GETNEIGH = 28, 29, 30

# --- links (<linux/if_link.h>, <linux/if.h>, <linux/veth.h>, <linux/ip.h>) ---------------------
IFLA_ADDRESS, IFLA_IFNAME, IFLA_MTU, IFLA_LINK, IFLA_MASTER = 1, 3, 4, 5, 10
IFLA_TXQLEN, IFLA_OPERSTATE, IFLA_LINKINFO, IFLA_AF_SPEC, IFLA_NET_NS_FD = 13, 16, 18, 26, 28
IFLA_PROMISCUITY = 30
IFLA_INFO_KIND, IFLA_INFO_DATA, IFLA_INFO_SLAVE_KIND, IFLA_INFO_SLAVE_DATA = 1, 2, 4, 5
IFLA_INET_CONF, IFLA_BRPORT_MODE, VETH_INFO_PEER = 1, 4, 1
IPV4_DEVCONF_FORWARDING, IPV4_DEVCONF_ARP_NOTIFY = 1, 22
IFF_UP, IFF_PROMISC, IF_OPER_UP = 0x1, 0x100, 6
# IFLA_VXLAN_*
VX_ID, VX_LINK, VX_LOCAL, VX_TTL, VX_TOS, VX_LEARNING = 1, 3, 4, 5, 6, 7
VX_PROXY, VX_RSC, VX_L2MISS, VX_L3MISS, VX_PORT = 11, 12, 13, 14, 15
VX_UDP_ZERO_CSUM6_TX, VX_UDP_ZERO_CSUM6_RX, VX_GBP = 19, 20, 23
VX_LOCAL6 = 17

# --- addresses (<linux/if_addr.h>) ------------------------------------------------------------
IFA_ADDRESS, IFA_LOCAL, IFA_FLAGS = 1, 2, 8
IFA_F_NODAD, IFA_F_PERMANENT = 0x02, 0x80

# --- routes (<linux/rtnetlink.h>) -------------------------------------------------------------
RTA_DST, RTA_OIF, RTA_GATEWAY, RTA_PRIORITY, RTA_MULTIPATH, RTA_TABLE = 1, 4, 5, 6, 9, 15
RTN_UNICAST = 1
RTPROT_BOOT = 3
RT_TABLE_MAIN = 254
RT_SCOPE_UNIVERSE, RT_SCOPE_LINK, RT_SCOPE_NOWHERE = 0, 253, 255
RTNH_F_ONLINK = 0x4

# --- neighbours and FDB (<linux/neighbour.h>) -------------------------------------------------
NDA_DST, NDA_LLADDR, NDA_CACHEINFO, NDA_PORT, NDA_VNI, NDA_IFINDEX = 1, 2, 3, 6, 7, 8
NUD_FAILED = 0x20
NUD_PERMANENT = 0x80
NTF_SELF = 0x02

# --- layouts: native byte order, no padding ("="), as the kernel lays them out ----------------
NLMSG_HDR = struct.Struct("=IHHII")        # nlmsghdr: len, type, flags, seq, pid
RTATTR = struct.Struct("=HH")              # rtattr / nlattr: len, type
IFINFOMSG = struct.Struct("=BxHiII")       # family, (pad), type, index (int), flags, change
IFADDRMSG = struct.Struct("=BBBBI")        # family, prefixlen, flags, scope, index (__u32)
RTMSG = struct.Struct("=BBBBBBBBI")        # family, dst_len, src_len, tos, table, protocol,
#                                            scope, type, flags
NDMSG = struct.Struct("=BBHiHBB")          # family, (pad1, pad2), ifindex (__s32), state,
#                                            flags, type
NLMSGERR = struct.Struct("=i")             # nlmsgerr.error (then the request's nlmsghdr)
U32_ATTR = struct.Struct("=HHI")           # an rtattr carrying one native u32
IP4_ATTR = struct.Struct("=HH4s")          # an rtattr carrying one IPv4 address
U32 = struct.Struct("=I")
BE16 = struct.Struct(">H")
BE32 = struct.Struct(">I")
