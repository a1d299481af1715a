"""Helpers for the etcd integration tests: async polling, lease attrs, a cuttable TCP proxy."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from ipaddress import IPv4Address
from typing import Any, TypeVar

from netns_lab.etcd import EtcdMember

from core.lease import LeaseAttrs, vxlan_backend_data

T = TypeVar("T")
NETWORK = '{"Network":"10.5.0.0/16","Backend":{"Type":"vxlan"}}'


async def until(cond: Callable[[], Any], timeout: float = 10,
                what: str = "condition", interval: float = 0.05) -> Any:
    """Poll `cond` (sync or async) until it is truthy, or fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        value = cond()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        last = value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout} s waiting for {what} (last: {last!r})")
        await asyncio.sleep(interval)


def attrs(n: int, mac_byte: int = 1) -> LeaseAttrs:
    """Lease attributes of fake node n (PublicIP 192.168.<n//250>.<n%250+1>)."""
    return LeaseAttrs(IPv4Address(f"192.168.{n // 250}.{n % 250 + 1}"), "vxlan",
                      vxlan_backend_data(1, f"0e:00:00:00:{n % 256:02x}:{mac_byte:02x}"))


def put_config(member: EtcdMember, prefix: str, config: str = NETWORK) -> None:
    member.etcdctl("put", f"{prefix}/config", config)


def etcd_keys(member: EtcdMember, prefix: str) -> dict[str, str]:
    out = member.etcdctl("get", "--prefix", f"{prefix}/subnets/", "-w", "json")
    import base64
    import json
    kvs = json.loads(out).get("kvs", [])
    return {base64.b64decode(kv["key"]).decode(): base64.b64decode(kv["value"]).decode()
            for kv in kvs}


class TcpProxy:
    """A loopback TCP relay the test can cut (drop every connection, refuse new
    ones) and restore: a real network partition between one client and etcd."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.port = 0
        self.open = True
        self._server: asyncio.Server | None = None
        self._conns: set[asyncio.StreamWriter] = set()

    async def start(self) -> TcpProxy:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if not self.open:
            writer.close()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        except OSError:
            writer.close()
            return
        self._conns.update((writer, up_writer))

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(Exception):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            dst.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        self._conns.difference_update((writer, up_writer))

    def cut(self) -> None:
        self.open = False
        for w in list(self._conns):
            w.transport.abort()
        self._conns.clear()

    def restore(self) -> None:
        self.open = True

    async def close(self) -> None:
        self.cut()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()


async def collect(gen: AsyncIterator[T], into: list[T]) -> None:
    async for item in gen:
        into.append(item)


async def stop(manager: Any, *tasks: asyncio.Task[Any]) -> None:
    """Cancel a test's background tasks (hold, watch), then close the manager."""
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    await manager.close()
