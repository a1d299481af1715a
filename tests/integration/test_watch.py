"""Watching peer leases against a real etcd: events, poison, restarts, partitions, compaction."""

from __future__ import annotations

import asyncio
import logging
import shutil
from collections.abc import AsyncIterator
from ipaddress import IPv4Network
from typing import Any

import pytest
from etcd_helpers import (
    NETWORK,
    TcpProxy,
    attrs,
    collect,
    etcd_keys,
    put_config,
    stop,
    until,
)
from netns_lab.etcd import EtcdMember
from netns_lab.netns import Sandbox

from core.lease import Lease, decode_lease, encode_attrs
from flanneld.events import LeaseEvent, apply_event
from flanneld.subnet_manager import EtcdSubnetManager

pytestmark = pytest.mark.etcd
OWN = IPv4Network("10.5.52.0/24")


def put_peer(member: EtcdMember, prefix: str, third_octet: int, n: int, mac: int = 1) -> None:
    member.etcdctl("put", f"{prefix}/subnets/10.5.{third_octet}.0-24",
                   encode_attrs(attrs(n, mac)).decode())


def etcd_view(member: EtcdMember, prefix: str) -> dict[IPv4Network, Lease]:
    """The valid peer leases in etcd right now, as a watcher should see them."""
    leases = [decode_lease(k, v) for k, v in etcd_keys(member, prefix).items()]
    return {le.subnet: le for le in leases if le.subnet != OWN}


class Watcher:
    """A manager's watch() drained into a list and a view, in the background."""

    def __init__(self, url: str | list[str], prefix: str) -> None:
        self.manager = EtcdSubnetManager(url if isinstance(url, list) else [url], prefix)
        self.events: list[LeaseEvent] = []
        self.view: dict[IPv4Network, Lease] = {}
        self.task: asyncio.Task[None] | None = None

    async def start(self) -> Watcher:
        async def run(gen: AsyncIterator[LeaseEvent]) -> None:
            async for event in gen:
                self.events.append(event)
                apply_event(self.view, event)
        self.task = asyncio.create_task(run(self.manager.watch(lambda: OWN)))
        await until(lambda: self.events, 10, "the first snapshot")
        return self

    def since(self, n: int) -> list[tuple[str, IPv4Network]]:
        return [(e.kind, e.lease.subnet) for e in self.events[n:] if e.lease is not None]

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)
        await self.manager.close()


def same_view(a: dict[IPv4Network, Lease], b: dict[IPv4Network, Lease]) -> bool:
    return a.keys() == b.keys() and all(a[s].attrs == b[s].attrs for s in a)


def test_snapshot_then_events_and_renewals_are_silent(etcd_server: EtcdMember,
                                                      prefix: str) -> None:
    put_peer(etcd_server, prefix, 1, 1)
    put_peer(etcd_server, prefix, 52, 9)  # our own subnet: never a peer

    async def main() -> None:
        w = await Watcher(etcd_server.client_url, prefix).start()
        try:
            assert w.events[0].kind == "snapshot"
            assert [le.subnet for le in w.events[0].snapshot] == [IPv4Network("10.5.1.0/24")]
            put_peer(etcd_server, prefix, 2, 2)
            put_peer(etcd_server, prefix, 1, 1)  # same value again (a flannel renewal)
            put_peer(etcd_server, prefix, 1, 1, mac=7)  # VtepMAC changed
            etcd_server.etcdctl("del", f"{prefix}/subnets/10.5.2.0-24")
            await until(lambda: len(w.events) == 4, 15, "three events")
            assert w.since(1) == [("added", IPv4Network("10.5.2.0/24")),
                                  ("changed", IPv4Network("10.5.1.0/24")),
                                  ("removed", IPv4Network("10.5.2.0/24"))]
            assert same_view(w.view, etcd_view(etcd_server, prefix))
        finally:
            await w.stop()
    asyncio.run(main())


def test_poisoned_keys_change_nothing_and_warn_once(etcd_server: EtcdMember, prefix: str,
                                                    caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, "flanneld.subnet")
    put_peer(etcd_server, prefix, 1, 1)
    put_peer(etcd_server, prefix, 2, 2)
    poison = {
        "garbage": "not a subnet key",
        "10.5.3.0-24": "{not json",
        "10.5.4.0-24": '{"PublicIP":"fd00::1"}',
        "10.6.1.0-24": encode_attrs(attrs(5)).decode(),  # outside the Network
        "10.5.52.0-23": encode_attrs(attrs(6)).decode(),  # overlaps our own subnet
        "10.5.7.0-24": encode_attrs(attrs(7)).decode().replace("0e:00:00:00:07:01",
                                                               "ff:ff:ff:ff:ff:ff"),
        "10.5.8.0-24": '{"PublicIP":"127.0.0.1","BackendType":"host-gw"}',
    }

    async def main() -> None:
        w = await Watcher(etcd_server.client_url, prefix).start()
        try:
            before = dict(w.view)
            for name, value in poison.items():
                etcd_server.etcdctl("put", f"{prefix}/subnets/{name}", value)
            put_peer(etcd_server, prefix, 9, 9)  # a good one after the poison, as a marker
            await until(lambda: IPv4Network("10.5.9.0/24") in w.view, 15, "the marker")
            assert w.since(1) == [("added", IPv4Network("10.5.9.0/24"))]
            assert {s: w.view[s] for s in before} == before
            # a re-list (reconnect) must neither warn again nor emit anything
            n = len(w.events)
            await w.manager.etcd.reset(w.manager.etcd.generation, rotate=False)
            await until(lambda: w.manager.status.watch_restarts >= 1, 15, "a re-list")
            await until(lambda: w.manager.status.rejected_leases == len(poison), 15,
                        "the rejected count")
            assert w.events[n:] == []
        finally:
            await w.stop()
    asyncio.run(main())
    warnings = [r.getMessage() for r in caplog.records
                if r.name == "flanneld.subnet" and r.levelno == logging.WARNING]
    for name in poison:
        assert sum(f"/subnets/{name} (revision" in m for m in warnings) == 1, (name, warnings)
    assert len(warnings) == len(poison)


def test_watch_survives_an_etcd_restart(sandbox: Sandbox, etcd_prefix: str) -> None:
    member = EtcdMember(sandbox, f"x{id(etcd_prefix) % 100000}").start()
    prefix = etcd_prefix
    try:
        put_config(member, prefix, NETWORK)
        put_peer(member, prefix, 1, 1)
        put_peer(member, prefix, 2, 2)

        async def main() -> None:
            w = await Watcher(member.client_url, prefix).start()
            try:
                member.stop()
                await until(lambda: w.manager.status.state == "etcd-unreachable", 10,
                            "the watcher to notice")
                member.start()
                put_peer(member, prefix, 3, 3)
                put_peer(member, prefix, 2, 2, mac=5)
                want = etcd_view(member, prefix)
                await until(lambda: same_view(w.view, want), 15, "the watcher to catch up")
                assert sorted(w.since(1)) == [("added", IPv4Network("10.5.3.0/24")),
                                              ("changed", IPv4Network("10.5.2.0/24"))]
                assert w.manager.status.watch_restarts >= 1
            finally:
                await w.stop()
        asyncio.run(main())
    finally:
        member.stop()
        shutil.rmtree(member.data_dir, ignore_errors=True)


def test_partition_and_compaction_lose_and_invent_nothing(etcd_server: EtcdMember,
                                                          prefix: str) -> None:
    for i in (1, 2, 3):
        put_peer(etcd_server, prefix, i, i)

    async def main() -> None:
        proxy = await TcpProxy(etcd_server.client_port).start()
        w = await Watcher(proxy.url, prefix).start()
        try:
            assert len(w.view) == 3
            proxy.cut()  # the watcher is cut off; etcd goes on without it
            await until(lambda: w.manager.status.watch_restarts >= 1, 10, "the disconnect")
            n = len(w.events)
            etcd_server.etcdctl("del", f"{prefix}/subnets/10.5.1.0-24")
            put_peer(etcd_server, prefix, 2, 2, mac=9)
            put_peer(etcd_server, prefix, 4, 4)
            put_peer(etcd_server, prefix, 5, 5)
            etcd_server.etcdctl("del", f"{prefix}/subnets/10.5.5.0-24")  # came and went
            revision = etcd_server.etcdctl("get", f"{prefix}/config", "-w", "fields")
            rev = next(line.split(":")[1].strip() for line in revision.splitlines()
                       if line.startswith('"Revision"'))
            etcd_server.etcdctl("compact", rev)
            proxy.restore()
            want = etcd_view(etcd_server, prefix)
            await until(lambda: same_view(w.view, want), 15, "the watcher to catch up")
            assert sorted(w.since(n)) == [("added", IPv4Network("10.5.4.0/24")),
                                          ("changed", IPv4Network("10.5.2.0/24")),
                                          ("removed", IPv4Network("10.5.1.0/24"))]
        finally:
            await w.stop()
            await proxy.close()
    asyncio.run(main())


def test_failover_to_the_next_endpoint(etcd_server: EtcdMember, prefix: str) -> None:
    async def main() -> None:
        dead = await TcpProxy(etcd_server.client_port).start()
        dead.cut()
        m = EtcdSubnetManager([dead.url, etcd_server.client_url], prefix, ttl=60)
        try:
            lease = await asyncio.wait_for(m.acquire(attrs(1)), 10)
            assert lease.subnet in IPv4Network("10.5.0.0/16").subnets(8)
            assert m.status.endpoint == etcd_server.client_url
        finally:
            await m.close()
            await dead.close()
    asyncio.run(main())


def test_own_key_events_wake_hold(etcd_server: EtcdMember, prefix: str) -> None:
    """With a long renew interval, the watch is what notices our key being deleted."""
    async def main() -> None:
        m = EtcdSubnetManager([etcd_server.client_url], prefix, ttl=600)
        lease = await m.acquire(attrs(1))
        changes: list[Lease] = []
        events: list[LeaseEvent] = []
        tasks = [asyncio.create_task(m.hold(attrs(1), changes.append)),
                 asyncio.create_task(collect(m.watch(lambda: m.lease.subnet if m.lease
                                                     else None), events))]
        try:
            await until(lambda: events, 15, "the snapshot")
            assert m.renew_interval > 100
            etcd_server.etcdctl("del", f"{prefix}/subnets/{lease.key}")
            await until(lambda: changes, 15, "re-acquire woken by the watch")
            assert changes[0].subnet == lease.subnet
            assert [e for e in events if e.kind != "snapshot"] == []  # never our own
        finally:
            await stop(m, *tasks)
    asyncio.run(main())


def test_compaction_between_list_and_watch_is_recovered(etcd_server: EtcdMember, prefix: str,
                                                         caplog: pytest.LogCaptureFixture
                                                         ) -> None:
    """Force the real RevisionCompactedError path: etcd moves on and compacts right after
    the first listing, so the watch from listing+1 is refused and the manager re-lists."""
    caplog.set_level(logging.INFO, "flanneld.subnet")
    put_peer(etcd_server, prefix, 1, 1)
    put_peer(etcd_server, prefix, 2, 2)

    class CompactingManager(EtcdSubnetManager):
        compacted = False

        async def _list(self) -> Any:
            listing = await super()._list()
            if not self.compacted:
                self.compacted = True
                put_peer(etcd_server, prefix, 2, 2, mac=3)
                put_peer(etcd_server, prefix, 6, 6)
                rev = await self.etcd.call(lambda c: c.get(f"{prefix}/config".encode()))
                await self.etcd.call(lambda c: c.compact(rev.header.revision))
            return listing

    async def main() -> None:
        w = Watcher(etcd_server.client_url, prefix)
        await w.manager.close()
        w.manager = CompactingManager([etcd_server.client_url], prefix)
        await w.start()
        try:
            want = etcd_view(etcd_server, prefix)
            await until(lambda: same_view(w.view, want), 10, "the re-list after compaction")
            assert w.events[0].kind == "snapshot" and len(w.events[0].snapshot) == 2
            assert sorted(w.since(1)) == [("added", IPv4Network("10.5.6.0/24")),
                                          ("changed", IPv4Network("10.5.2.0/24"))]
        finally:
            await w.stop()
    asyncio.run(main())
    assert any("compacted" in r.getMessage() for r in caplog.records)


def test_takeover_moves_us_and_the_thief_becomes_a_peer(etcd_server: EtcdMember,
                                                         prefix: str) -> None:
    put_peer(etcd_server, prefix, 1, 1)

    async def main() -> None:
        m = EtcdSubnetManager([etcd_server.client_url], prefix, ttl=600, renew_interval=0.2)
        lease = await m.acquire(attrs(50))
        events: list[LeaseEvent] = []
        view: dict[IPv4Network, Lease] = {}
        changes: list[Lease] = []

        def own() -> IPv4Network | None:
            return m.lease.subnet if m.lease else None

        async def consume() -> None:
            async for event in m.watch(own):
                events.append(event)
                apply_event(view, event)
        tasks = [asyncio.create_task(m.hold(attrs(50), changes.append)),
                 asyncio.create_task(consume())]
        try:
            await until(lambda: events, 15, "the snapshot")
            etcd_server.etcdctl("put", f"{prefix}/subnets/{lease.key}",
                                encode_attrs(attrs(60)).decode())  # another node takes it
            await until(lambda: changes, 10, "us moving elsewhere")
            moved = changes[0].subnet
            assert moved != lease.subnet
            await until(lambda: lease.subnet in view, 15, "the thief as a peer")
            assert view[lease.subnet].attrs == attrs(60) and moved not in view
            assert all(e.lease is None or e.lease.subnet != moved for e in events)
            assert set(view) == {IPv4Network("10.5.1.0/24"), lease.subnet}
        finally:
            await stop(m, *tasks)
    asyncio.run(main())
