"""pyflannel behind `etcd grpc-proxy`, judged by the etcd member's own /metrics.

- Coalescing: every node's lease watch is the same key range, started at the
  revision of its own listing + 1, which the proxy's shared watch has not passed;
  so N nodes behind one proxy cost the member one watcher
  (`etcd_debugging_mvcc_watcher_total`), and N nodes straight on the member N.
  Both are measured, on a member of this module's own.
- Failover: a node listing two proxies (or a proxy, then the member) keeps its
  lease alive and its watch going when the one in use is killed: the keepalive
  renews through the next endpoint, a lease put after the kill (and one put
  while the watch is moving) is seen, the lease list is read again exactly once,
  and nothing else is emitted (no peer removed and re-added: the data plane is
  not touched).
"""

from __future__ import annotations

import asyncio
import signal
import urllib.request
from collections.abc import Iterator
from ipaddress import IPv4Network
from typing import Any

import pytest
from etcd_helpers import attrs, put_config, until
from netns_lab.etcd import EtcdMember, EtcdProxy
from netns_lab.netns import Sandbox, wait_for

from core.lease import Lease, encode_attrs
from flanneld.events import LeaseEvent, apply_event
from flanneld.subnet_manager import EtcdSubnetManager

pytestmark = [pytest.mark.etcd, pytest.mark.xdist_group("etcd")]
NODES = 10
# Nodes lease in 10.5.100-199; the leases the tests write are below, where none of theirs is.
NETWORK = ('{"Network":"10.5.0.0/16","SubnetMin":"10.5.100.0","SubnetMax":"10.5.199.0",'
           '"Backend":{"Type":"vxlan"}}')


def member_gauge(member: EtcdMember, name: str) -> float:
    with urllib.request.urlopen(f"{member.client_url}/metrics", timeout=5) as r:
        for line in r.read().decode().splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
    raise AssertionError(f"{name} not in the member's /metrics")


def watchers(member: EtcdMember) -> int:
    return int(member_gauge(member, "etcd_debugging_mvcc_watcher_total"))


@pytest.fixture(scope="module")
def member(sandbox: Sandbox) -> Iterator[EtcdMember]:
    """A member of this module's own: nothing else adds watchers to it."""
    m = EtcdMember(sandbox, "pxscale").start()
    try:
        yield m
    finally:
        m.stop()


class Node:
    """What flanneld does with etcd: acquire, then hold (keepalive) and watch, in tasks."""

    def __init__(self, endpoints: list[str], prefix: str, n: int, ttl: int = 60) -> None:
        self.manager = EtcdSubnetManager(endpoints, prefix, ttl=ttl)
        self.n = n
        self.events: list[LeaseEvent] = []
        self.view: dict[IPv4Network, Lease] = {}
        self.lease: Lease | None = None
        self.tasks: list[asyncio.Task[None]] = []
        self.watches = 0  # lease watches etcd (or the proxy) has confirmed as created
        create = self.manager.etcd.watch_prefix

        async def watch_prefix(prefix: bytes, start_revision: int) -> Any:
            watch = await create(prefix, start_revision)
            self.watches += 1
            return watch
        self.manager.etcd.watch_prefix = watch_prefix  # type: ignore[method-assign]

    async def start(self) -> Node:
        self.lease = await self.manager.acquire(attrs(self.n))

        async def watch() -> None:
            async for event in self.manager.watch(lambda: self.lease and self.lease.subnet):
                self.events.append(event)
                apply_event(self.view, event)

        async def hold() -> None:
            await self.manager.hold(attrs(self.n), lambda lease: None)

        self.tasks = [asyncio.create_task(watch()), asyncio.create_task(hold())]
        return self

    async def stop(self) -> None:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        await self.manager.close()


async def fleet(endpoints: list[str], prefix: str, n: int) -> list[Node]:
    """n nodes started together; until each knows the n-1 others."""
    nodes = await asyncio.gather(*(Node(endpoints, prefix, i).start() for i in range(n)))
    await until(lambda: all(len(node.view) == n - 1 for node in nodes), 30,
                f"{n} nodes to know each other")
    return list(nodes)


def count_listings(manager: EtcdSubnetManager) -> list[int]:
    """Count the manager's lease listings that etcd answered, from now on (a one-item list,
    updated in place)."""
    count = [0]
    listing = manager._list

    async def counted() -> Any:
        result = await listing()
        count[0] += 1
        return result
    manager._list = counted  # type: ignore[method-assign]
    return count


def put_lease(member: EtcdMember, prefix: str, third_octet: int, n: int) -> IPv4Network:
    member.etcdctl("put", f"{prefix}/subnets/10.5.{third_octet}.0-24",
                   encode_attrs(attrs(n)).decode())
    return IPv4Network(f"10.5.{third_octet}.0/24")


def test_watchers_behind_a_proxy_cost_the_member_one(sandbox: Sandbox, member: EtcdMember,
                                                     etcd_prefix: str) -> None:
    alone = watchers(member)
    proxy = EtcdProxy(sandbox, "pxs", [member.client_url]).start()
    try:
        # the proxy's own two: its lease and watch services each watch a key to notice a
        # lost leader
        idle = alone + 2
        wait_for(lambda: watchers(member) == idle, 10, what="the proxy's own watches")

        def run(endpoint: str, prefix: str) -> tuple[int, list[int], bool]:
            put_config(member, prefix, NETWORK)
            # the proxy cancels its shared watch once its last client has gone
            wait_for(lambda: watchers(member) == idle, 10, what="the member's watchers to "
                     f"settle at {idle}")
            base = idle

            async def main() -> tuple[int, list[int], bool]:
                seen = []
                nodes: list[Node] = []
                try:
                    for i in range(NODES):  # one by one: the count after each node
                        nodes.append(await Node([endpoint], prefix, i).start())
                        await until(lambda: nodes[-1].watches == 1, 10, "its lease watch")
                        seen.append(watchers(member) - base)
                    await until(lambda: all(len(x.view) == NODES - 1 for x in nodes), 30,
                                "every node to know the others")
                    new = put_lease(member, prefix, 20, 200)  # one event for all
                    await until(lambda: all(new in x.view for x in nodes), 15,
                                "the new lease on every node")
                    return watchers(member) - base, seen, True
                finally:
                    await asyncio.gather(*(x.stop() for x in nodes))
            return asyncio.run(main())

        added, along, delivered = run(proxy.client_url, etcd_prefix + "/proxied")
        assert delivered
        assert added <= 2 and max(along) <= 2, (added, along)  # flat: the proxy's one s-watcher
        added, along, delivered = run(member.client_url, etcd_prefix + "/direct")
        assert delivered
        assert added == NODES and along == list(range(1, NODES + 1)), (added, along)
    finally:
        proxy.stop()


@pytest.mark.parametrize("second", ["proxy", "member"])
def test_failover_keeps_the_lease_and_the_watch(sandbox: Sandbox, member: EtcdMember,
                                                etcd_prefix: str, second: str) -> None:
    """Kill the proxy in use: keepalive and watch move to the next endpoint, nothing lost,
    the lease list read once more, nothing emitted but the new leases. With two proxies,
    the first is then brought back and the second killed: back to the first."""
    prefix = f"{etcd_prefix}/network"
    put_config(member, prefix, NETWORK)
    p1 = EtcdProxy(sandbox, f"f1{second[0]}", [member.client_url]).start()
    p2 = EtcdProxy(sandbox, f"f2{second[0]}", [member.client_url]).start() \
        if second == "proxy" else None
    endpoints = [p1.client_url, p2.client_url if p2 is not None else member.client_url]
    put_lease(member, prefix, 1, 101)

    async def main() -> None:
        # ttl 6: a keepalive every 2 s (through a proxy up to 0.5 s later: its lessor's
        # tick), so a renewal failing over shows soon, with room on a loaded machine
        node = await Node(endpoints, prefix, 1, ttl=6).start()
        m = node.manager
        try:
            await until(lambda: len(node.view) == 1 and m.status.renewals >= 1, 10,
                        "the snapshot and a first renewal")
            assert node.lease is not None
            lease_id = node.lease.lease_id
            assert m.status.endpoint == endpoints[0] and m.status.watch_restarts == 0
            listings = count_listings(m)
            n_events = len(node.events)

            p1.stop(signal.SIGKILL)
            during = put_lease(member, prefix, 2, 102)  # while the watch is moving
            renewed = m.status.renewals
            await until(lambda: m.status.renewals >= renewed + 2, 15,
                        "two renewals through the next endpoint")
            after = put_lease(member, prefix, 3, 103)
            await until(lambda: after in node.view, 10, "the lease put after the kill")
            assert during in node.view
            assert m.status.endpoint == endpoints[1]
            assert listings == [1] and m.status.watch_restarts == 1  # read again, once
            assert m.status.reacquisitions == 0 and node.lease.lease_id == lease_id
            assert [(e.kind, e.lease and e.lease.subnet) for e in node.events[n_events:]] == \
                [("added", during), ("added", after)]  # nothing removed, nothing re-added
            key = member.etcdctl("get", f"{prefix}/subnets/{node.lease.key}", "-w", "json")
            assert f'"lease":{lease_id}' in key.replace(" ", "")  # still ours, same etcd lease

            if p2 is None:
                return
            p1.start()
            n_events = len(node.events)
            p2.stop(signal.SIGKILL)
            renewed = m.status.renewals
            await until(lambda: m.status.renewals >= renewed + 2, 15,
                        "two renewals through the first proxy again")
            back = put_lease(member, prefix, 4, 104)
            await until(lambda: back in node.view, 10, "a lease put after the second kill")
            assert m.status.endpoint == endpoints[0] and m.status.watch_restarts == 2
            assert listings == [2]
            assert m.status.reacquisitions == 0 and node.lease.lease_id == lease_id
            assert [(e.kind, e.lease and e.lease.subnet) for e in node.events[n_events:]] == \
                [("added", back)]
        finally:
            await node.stop()

    try:
        asyncio.run(main())
    finally:
        p1.stop()
        if p2 is not None:
            p2.stop()
