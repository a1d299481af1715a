"""The one netlink layer (issue 11), without root: rows, header walks, the shared parsers,
and that the CNI plugin's in-process path stays import-light."""

from __future__ import annotations

import json
import struct
import subprocess
import sys
from pathlib import Path

from netlink import messages as m
from netlink.base import iter_headers, rta, rta_u32, strz

ROOT = Path(__file__).resolve().parents[2]


def test_cni_path_loads_no_heavy_modules() -> None:
    code = ("import sys; sys.path.insert(0, sys.argv[1]); import cni.plugin, cni.verify, cni.gc; "
            "import json; print(json.dumps(sorted(sys.modules)))")
    out = subprocess.run([sys.executable, "-I", "-S", "-c", code, str(ROOT)], check=True,
                         capture_output=True, text=True).stdout
    loaded = set(json.loads(out))
    assert not loaded & {"typing", "socket", "selectors", "asyncio", "pathlib", "pyroute2"}
    ours = {name for name in loaded if name.split(".")[0] == "netlink"}
    assert "netlink.rtnl" in ours and "netlink.messages" in ours


def test_rows_are_named_tuples_with_defaults_and_properties() -> None:
    row = m.LinkRow(3, m.IFF_UP, "cni0", 1450, "02:00:00:00:00:01", "bridge", {})
    assert row == (3, m.IFF_UP, "cni0", 1450, "02:00:00:00:00:01", "bridge", {}, 0, 0, 0)
    assert row._replace(master=7).master == 7 and isinstance(row, tuple)
    route = m.RouteRow(0x0A050000, "10.5.0.0", 16, 254, 3, 0, 1, 0, 2, None, 0, False)
    assert route.cidr == "10.5.0.0/16" and repr(route).startswith("RouteRow(dst=")


def _msg(kind: int, body: bytes, pid: int = 0) -> bytes:
    return struct.pack("=IHHII", 16 + len(body), kind, 0, 9, pid) + body + b"\0" * (-len(body) % 4)


def test_iter_headers_reports_port_ids_and_where_it_stopped() -> None:
    data = _msg(m.RTM_NEWROUTE, b"\0" * 12, pid=42) + _msg(m.RTM_NEWLINK, b"\0" * 16)
    stop = [0]
    got = [(k, pid, a, b) for k, _f, _s, pid, a, b in iter_headers(data, len(data), stop)]
    assert got == [(m.RTM_NEWROUTE, 42, 16, 28), (m.RTM_NEWLINK, 0, 44, 60)]
    assert stop == [len(data)]
    trailing = data + b"\1\2\3"
    list(iter_headers(trailing, len(trailing), stop))
    assert stop[0] < len(trailing)
    malformed = struct.pack("=IHHII", 4, 1, 0, 0, 0) + b"\0" * 12
    assert list(iter_headers(malformed, len(malformed), stop)) == [] and stop == [0]


def test_parse_link_reads_what_the_plugin_and_the_backends_need() -> None:
    body = (m.ifinfo(5, m.IFF_UP) + strz(m.IFLA_IFNAME, "vethab") + rta_u32(m.IFLA_MTU, 1450)
            + rta(m.IFLA_ADDRESS, bytes.fromhex("020000000005")) + rta_u32(m.IFLA_MASTER, 3)
            + rta_u32(m.IFLA_LINK, 2) + rta(m.IFLA_OPERSTATE, bytes([m.IF_OPER_UP]))
            + m.nested(m.IFLA_LINKINFO, strz(m.IFLA_INFO_KIND, "veth"),
                       m.nested(m.IFLA_INFO_DATA, rta_u32(9, 1))))
    row = m.parse_link(body, 0, len(body))
    assert row == m.LinkRow(5, m.IFF_UP, "vethab", 1450, "02:00:00:00:00:05", "veth",
                            {9: struct.pack("=I", 1)}, 3, m.IF_OPER_UP, 2)


def test_address_and_route_entries_of_any_family() -> None:
    v6 = bytes.fromhex("fd000000000000000000000000000001")
    _, _, body = m.msg_new_addr(4, m.AF_INET6, v6, 64, nodad=True)
    assert m.parse_addr_entry(body, 0, len(body)) == m.AddrEntry(4, m.AF_INET6, v6, 64)
    assert m.parse_addr(body, 0, len(body)) == (4, None)  # the backends' view: IPv4 only
    _, _, body = m.msg_new_addr(4, m.AF_INET, bytes([10, 0, 0, 2]), 24)
    assert m.parse_addr(body, 0, len(body)) == (4, "10.0.0.2/24")
    _, _, body = m.msg_new_route(4, m.AF_INET6, v6, 128, None)
    e = m.parse_route_entry(body, 0, len(body))
    assert (e.family, e.dst, e.dst_len, e.gateway, e.oif, e.table) == (
        m.AF_INET6, v6, 128, b"", 4, m.RT_TABLE_MAIN)


def test_one_ifaddrmsg_layout_with_an_unsigned_index() -> None:
    assert m.IFADDRMSG.format == "=BBBBI"
    assert m.addr_dump_body(0xFFFFFFFF)[4:] == b"\xff\xff\xff\xff"
