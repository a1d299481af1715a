"""Acquiring and keeping a subnet lease against a real etcd (no mocks)."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network

import pytest
from etcd_helpers import attrs, etcd_keys, put_config, stop, until
from netns_lab.etcd import EtcdMember

from core.config import ConfigError
from core.lease import Lease, LeaseAttrs, decode_attrs, encode_attrs, vxlan_backend_data
from flanneld.subnet_manager import EtcdSubnetManager

pytestmark = pytest.mark.etcd

SMALL = ('{"Network":"10.5.0.0/16","SubnetLen":24,"SubnetMin":"10.5.10.0",'
         '"SubnetMax":"10.5.49.0","Backend":{"Type":"vxlan"}}')  # 40 candidates


def key_lease(member: EtcdMember, key: str) -> int | None:
    """The etcd lease id attached to a key (0: none), or None if the key is absent."""
    out = json.loads(member.etcdctl("get", key, "-w", "json"))
    kvs = out.get("kvs", [])
    return int(kvs[0].get("lease", 0)) if kvs else None


def test_thirty_concurrent_acquirers_get_distinct_subnets(
        etcd_server: EtcdMember, etcd_prefix: str, caplog: pytest.LogCaptureFixture) -> None:
    put_config(etcd_server, etcd_prefix, SMALL)
    caplog.set_level(logging.INFO, "flanneld.subnet")

    async def main() -> list[Lease]:
        managers = [EtcdSubnetManager([etcd_server.client_url], etcd_prefix, ttl=60)
                    for _ in range(30)]
        try:
            return list(await asyncio.wait_for(
                asyncio.gather(*(m.acquire(attrs(i)) for i, m in enumerate(managers))), 60))
        finally:
            await asyncio.gather(*(m.close() for m in managers))

    leases = asyncio.run(main())
    subnets = {lease.subnet for lease in leases}
    assert len(subnets) == 30
    assert all(IPv4Network("10.5.10.0/23").network_address <= s.network_address
               <= IPv4Network("10.5.49.0/24").network_address for s in subnets)
    keys = etcd_keys(etcd_server, etcd_prefix)
    assert len(keys) == 30
    assert {decode_attrs(v).public_ip for v in keys.values()} == \
        {attrs(i).public_ip for i in range(30)}
    races = [r for r in caplog.records if "taken by another node just now" in r.getMessage()]
    assert races, "no create race happened: the test did not exercise the retry"


def test_out_of_subnets_is_reported_and_retried(etcd_server: EtcdMember,
                                                etcd_prefix: str) -> None:
    put_config(etcd_server, etcd_prefix, '{"Network":"10.5.0.0/16","SubnetMin":"10.5.1.0",'
                                         '"SubnetMax":"10.5.2.0"}')

    async def main() -> None:
        ms = [EtcdSubnetManager([etcd_server.client_url], etcd_prefix, ttl=60) for _ in range(3)]
        try:
            first = await ms[0].acquire(attrs(1))
            await ms[1].acquire(attrs(2))
            third = asyncio.create_task(ms[2].acquire(attrs(3)))
            await until(lambda: ms[2].status.state == "out-of-subnets", what="out-of-subnets")
            error = ms[2].status.last_error or ""
            assert "10.5.0.0/16" in error and "2 subnets" in error and "2 are in use" in error
            assert not third.done()
            etcd_server.etcdctl("del", f"{etcd_prefix}/subnets/{first.key}")
            lease = await asyncio.wait_for(third, 10)
            assert lease.subnet == first.subnet
            assert ms[2].status.state == "held"
        finally:
            for m in ms:
                await m.close()
    asyncio.run(main())


def test_restart_gets_the_same_subnet_back(etcd_server: EtcdMember, prefix: str) -> None:
    async def main() -> None:
        a = EtcdSubnetManager([etcd_server.client_url], prefix, ttl=60)
        first = await a.acquire(attrs(7))
        await a.close()
        # by PublicIP (step 1): same subnet, our new etcd lease, the old one revoked
        b = EtcdSubnetManager([etcd_server.client_url], prefix, ttl=60)
        again = await b.acquire(attrs(7, mac_byte=9))  # new VtepMAC after a reboot
        assert again.subnet == first.subnet and again.lease_id != first.lease_id
        assert decode_attrs(etcd_keys(etcd_server, prefix)[f"{prefix}/subnets/{first.key}"]
                            ).vtep_mac == "0e:00:00:00:07:09"
        assert str(first.lease_id) not in etcd_server.etcdctl("lease", "list")
        # by the previous subnet from subnet.env (step 2), after the key is gone
        await b.release()
        c = EtcdSubnetManager([etcd_server.client_url], prefix, ttl=60)
        other = await c.acquire(attrs(99), previous=first.subnet)
        assert other.subnet == first.subnet
        # a previous subnet someone else holds is not taken
        d = EtcdSubnetManager([etcd_server.client_url], prefix, ttl=60)
        fresh = await d.acquire(attrs(100), previous=first.subnet)
        assert fresh.subnet != first.subnet
        for m in (b, c, d):
            await m.close()
    asyncio.run(main())


def test_a_lease_that_no_longer_fits_is_replaced(etcd_server: EtcdMember, prefix: str) -> None:
    stale = f"{prefix}/subnets/10.5.0.0-24"  # below SubnetMin: does not fit
    lease_id = etcd_server.etcdctl("lease", "grant", "60").split()[1]
    etcd_server.etcdctl("put", "--lease", lease_id, stale, encode_attrs(attrs(5)).decode())
    reservation = f"{prefix}/subnets/10.5.0.0-25"  # ours too, but the operator's: kept
    etcd_server.etcdctl("put", reservation, encode_attrs(attrs(5)).decode())

    async def main() -> Lease:
        m = EtcdSubnetManager([etcd_server.client_url], prefix, ttl=60)
        try:
            return await m.acquire(attrs(5))
        finally:
            await m.close()
    lease = asyncio.run(main())
    assert lease.subnet != IPv4Network("10.5.0.0/24")
    assert stale not in etcd_keys(etcd_server, prefix)
    assert reservation in etcd_keys(etcd_server, prefix)


def test_expiry_frees_the_subnet(etcd_server: EtcdMember, prefix: str) -> None:
    async def main() -> None:
        m = EtcdSubnetManager([etcd_server.client_url], prefix, ttl=2)
        lease = await m.acquire(attrs(1))
        assert m.status.lease_expiry is not None
        assert m.status.lease_expiry - time.time() <= 2.5  # etcd did not raise the TTL
        key = f"{prefix}/subnets/{lease.key}"  # nobody renews it (no hold())
        await until(lambda: key_lease(etcd_server, key) is None, 15, "the key to expire")
        other = EtcdSubnetManager([etcd_server.client_url], prefix, ttl=60)
        assert (await other.acquire(attrs(2), previous=lease.subnet)).subnet == lease.subnet
        await other.close()
        # the first manager's etcd lease is gone too: acquiring again grants a new one
        again = await asyncio.wait_for(m.acquire(attrs(1)), 10)
        assert again.subnet != lease.subnet and again.lease_id != lease.lease_id
        await m.close()
    asyncio.run(main())


def test_hold_keeps_one_etcd_lease_alive(etcd_server: EtcdMember, prefix: str) -> None:
    async def main() -> None:
        m = EtcdSubnetManager([etcd_server.client_url], prefix, ttl=2)
        lease = await m.acquire(attrs(1))
        changes: list[Lease] = []
        task = asyncio.create_task(m.hold(attrs(1), changes.append))
        try:
            start = time.monotonic()
            await until(lambda: m.status.renewals >= 6, 15, "six renewals")
            assert time.monotonic() - start > 2  # longer than the TTL
            assert key_lease(etcd_server, f"{prefix}/subnets/{lease.key}") == lease.lease_id
            assert changes == [] and m.status.state == "held"
        finally:
            await stop(m, task)
    asyncio.run(main())


def test_reservation_stays_a_reservation(etcd_server: EtcdMember, prefix: str) -> None:
    key = f"{prefix}/subnets/10.5.77.0-24"
    # an operator's reservation for our PublicIP, without backend data, without a lease
    etcd_server.etcdctl("put", key, '{"PublicIP":"192.168.0.4","PublicIPv6":null}')

    async def main() -> None:
        m = EtcdSubnetManager([etcd_server.client_url], prefix, ttl=2, renew_interval=0.1)
        lease = await m.acquire(attrs(3))
        assert lease.subnet == IPv4Network("10.5.77.0/24") and lease.is_reservation
        assert m.status.lease_expiry is None
        task = asyncio.create_task(m.hold(attrs(3), lambda lease: None))
        try:
            await until(lambda: m.status.renewals >= 5, 10, "five renewal cycles")
            assert key_lease(etcd_server, key) == 0
            assert decode_attrs(etcd_keys(etcd_server, prefix)[key]) == attrs(3)
            assert m.status.reacquisitions == 0
        finally:
            await stop(m, task)
    asyncio.run(main())
    assert key_lease(etcd_server, key) == 0  # survives us, too


def test_lost_lease_is_reacquired_loudly(etcd_server: EtcdMember, prefix: str,
                                         caplog: pytest.LogCaptureFixture) -> None:
    async def main() -> None:
        m = EtcdSubnetManager([etcd_server.client_url], prefix, ttl=60, renew_interval=0.2)
        lease = await m.acquire(attrs(1))
        changes: list[Lease] = []
        task = asyncio.create_task(m.hold(attrs(1), changes.append))
        try:
            # deleted: we take the same subnet back (it is our previous one)
            etcd_server.etcdctl("del", f"{prefix}/subnets/{lease.key}")
            await until(lambda: len(changes) == 1, 10, "re-acquire after delete")
            assert changes[0].subnet == lease.subnet
            # taken by another node: we move elsewhere and never overwrite it
            thief = encode_attrs(attrs(2)).decode()
            etcd_server.etcdctl("put", f"{prefix}/subnets/{lease.key}", thief)
            await until(lambda: len(changes) == 2, 10, "re-acquire after takeover")
            assert changes[1].subnet != lease.subnet
            assert etcd_keys(etcd_server, prefix)[f"{prefix}/subnets/{lease.key}"] == thief
            assert m.lease == changes[1] and m.status.reacquisitions == 2
        finally:
            await stop(m, task)
    asyncio.run(main())
    lost = [r for r in caplog.records if r.levelno >= logging.ERROR and "LOST" in r.getMessage()]
    assert len(lost) == 2 and "deleted" in lost[0].getMessage()
    assert "192.168.0.3" in lost[1].getMessage()


def test_changed_attrs_are_written_only_while_the_key_is_ours(etcd_server: EtcdMember,
                                                               prefix: str) -> None:
    async def main() -> None:
        m = EtcdSubnetManager([etcd_server.client_url], prefix, ttl=60, renew_interval=0.1)
        lease = await m.acquire(attrs(1))
        task = asyncio.create_task(m.hold(attrs(1, mac_byte=2), lambda lease: None))
        try:
            key = f"{prefix}/subnets/{lease.key}"
            await until(lambda: decode_attrs(etcd_keys(etcd_server, prefix)[key])
                        == attrs(1, mac_byte=2), 5, "the new VtepMAC in etcd")
            assert m.status.reacquisitions == 0
        finally:
            await stop(m, task)
    asyncio.run(main())


def test_republished_attrs_are_written_at_once_and_kept(etcd_server: EtcdMember,
                                                          prefix: str) -> None:
    """A VtepMAC changed after a clash: hold() writes it now (not at the next renewal) and a
    restarted hold() keeps it instead of the value it was first called with."""
    async def main() -> None:
        m = EtcdSubnetManager([etcd_server.client_url], prefix, ttl=60, renew_interval=30)
        lease = await m.acquire(attrs(1))
        task = asyncio.create_task(m.hold(attrs(1), lambda lease: None))
        key = f"{prefix}/subnets/{lease.key}"
        try:
            await asyncio.sleep(0.2)
            t0 = time.monotonic()
            m.republish(attrs(1, mac_byte=3))
            await until(lambda: decode_attrs(etcd_keys(etcd_server, prefix)[key])
                        == attrs(1, mac_byte=3), 5, "the republished VtepMAC in etcd")
            assert time.monotonic() - t0 < 5 and m.status.reacquisitions == 0
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            task = asyncio.create_task(m.hold(attrs(1), lambda lease: None))
            await asyncio.sleep(0.5)
            assert decode_attrs(etcd_keys(etcd_server, prefix)[key]) == attrs(1, mac_byte=3)
        finally:
            await stop(m, task)
    asyncio.run(main())


def test_config_is_awaited_and_bad_config_named(etcd_server: EtcdMember,
                                                etcd_prefix: str) -> None:
    async def main() -> None:
        m = EtcdSubnetManager([etcd_server.client_url], etcd_prefix)
        task = asyncio.create_task(m.get_network_config())
        await asyncio.sleep(0.2)
        assert not task.done()
        put_config(etcd_server, etcd_prefix)
        config = await asyncio.wait_for(task, 15)
        assert config.network == IPv4Network("10.5.0.0/16")
        put_config(etcd_server, etcd_prefix, '{"Network":"10.5.0.0/16","SubnetLen":31}')
        with pytest.raises(ConfigError, match=f"{etcd_prefix}/config: SubnetLen 31"):
            await m.get_network_config()
        await m.close()
    asyncio.run(main())


def test_dual_stack_lease(etcd_server: EtcdMember, etcd_prefix: str) -> None:
    put_config(etcd_server, etcd_prefix,
               '{"EnableIPv6":true,"Network":"10.5.0.0/16","IPv6Network":"fd00:10:5::/48"}')
    v6 = LeaseAttrs(attrs(1).public_ip, "vxlan", attrs(1).backend_data)

    async def main() -> tuple[Lease, Lease]:
        a = EtcdSubnetManager([etcd_server.client_url], etcd_prefix, ttl=60)
        first = await a.acquire(v6)
        await a.release()
        await a.close()
        b = EtcdSubnetManager([etcd_server.client_url], etcd_prefix, ttl=60)
        again = await b.acquire(v6, previous=first.subnet, previous_ipv6=first.ipv6_subnet)
        await b.close()
        return first, again
    first, again = asyncio.run(main())
    assert first.ipv6_subnet is not None and first.ipv6_subnet.prefixlen == 64
    assert first.ipv6_subnet.subnet_of(IPv6Network("fd00:10:5::/48"))
    assert (again.subnet, again.ipv6_subnet) == (first.subnet, first.ipv6_subnet)
    assert list(etcd_keys(etcd_server, etcd_prefix)) == [
        f"{etcd_prefix}/subnets/{first.subnet.network_address}-24&"
        f"{first.ipv6_subnet.network_address}-64"]


DUAL = '{"EnableIPv6":true,"Network":"10.5.0.0/16","IPv6Network":"fd00:10:5::/48"}'
V6ONLY = ('{"EnableIPv4":false,"EnableIPv6":true,"IPv6Network":"fd00:10:5::/56",'
          '"Backend":{"Type":"vxlan"}}')


def attrs6(n: int, *, v4: bool = True) -> LeaseAttrs:
    """Node n with PublicIPv6 fd72::<n> (and, if `v4`, its PublicIP)."""
    base = attrs(n)
    return LeaseAttrs(base.public_ip if v4 else IPv4Address(0), "vxlan", base.backend_data,
                      public_ipv6=IPv6Address(f"fd72::{n:x}"))


def test_ipv6_only_concurrent_acquirers_get_distinct_subnets(etcd_server: EtcdMember,
                                                              etcd_prefix: str) -> None:
    put_config(etcd_server, etcd_prefix, V6ONLY)

    async def main() -> tuple[list[Lease], Lease]:
        ms = [EtcdSubnetManager([etcd_server.client_url], etcd_prefix, ttl=60)
              for _ in range(12)]
        try:
            leases = list(await asyncio.wait_for(asyncio.gather(
                *(m.acquire(attrs6(i, v4=False)) for i, m in enumerate(ms))), 60))
            # a restart finds its lease again by PublicIPv6 (PublicIP is 0.0.0.0 for all)
            again = EtcdSubnetManager([etcd_server.client_url], etcd_prefix, ttl=60)
            try:
                return leases, await again.acquire(attrs6(5, v4=False))
            finally:
                await again.close()
        finally:
            await asyncio.gather(*(m.close() for m in ms))

    leases, again = asyncio.run(main())
    assert all(lease.ipv4_subnet is None for lease in leases)
    six = {lease.ipv6_subnet for lease in leases}
    assert len(six) == 12 and None not in six
    assert all(s is not None and s.subnet_of(IPv6Network("fd00:10:5::/56")) and s.prefixlen == 64
               and s != IPv6Network("fd00:10:5::/64") for s in six)
    keys = etcd_keys(etcd_server, etcd_prefix)
    assert sorted(keys) == sorted(f"{etcd_prefix}/subnets/&{s.network_address}-64"
                                  for s in six if s is not None)
    assert again.key == leases[5].key
    value = keys[f"{etcd_prefix}/subnets/{leases[0].key}"]
    assert value.startswith('{"PublicIP":"0.0.0.0","PublicIPv6":"fd72::","BackendType":"vxlan"')


def test_dual_stack_value_and_key_are_flannels(etcd_server: EtcdMember, etcd_prefix: str) -> None:
    put_config(etcd_server, etcd_prefix, DUAL)
    mine = LeaseAttrs(attrs(1).public_ip, "vxlan", vxlan_backend_data(1, "0e:00:00:00:01:01"),
                      public_ipv6=IPv6Address("fd72::1"),
                      backend_v6_data=vxlan_backend_data(1, "0e:00:00:00:06:01"))

    async def main() -> Lease:
        m = EtcdSubnetManager([etcd_server.client_url], etcd_prefix, ttl=60)
        try:
            return await m.acquire(mine)
        finally:
            await m.close()
    lease = asyncio.run(main())
    assert lease.ipv4_subnet is not None and lease.ipv6_subnet is not None
    key = (f"{etcd_prefix}/subnets/{lease.ipv4_subnet.network_address}-24&"
           f"{lease.ipv6_subnet.network_address}-64")
    assert etcd_keys(etcd_server, etcd_prefix) == {key: (
        '{"PublicIP":"192.168.0.2","PublicIPv6":"fd72::1","BackendType":"vxlan",'
        '"BackendData":{"VNI":1,"VtepMAC":"0e:00:00:00:01:01"},'
        '"BackendV6Data":{"VNI":1,"VtepMAC":"0e:00:00:00:06:01"}}')}


def test_switching_to_dual_stack_keeps_every_running_nodes_ipv4_subnet(
        etcd_server: EtcdMember, etcd_prefix: str) -> None:
    put_config(etcd_server, etcd_prefix, '{"Network":"10.5.0.0/16"}')

    async def main() -> tuple[list[Lease], list[Lease], list[Lease]]:
        url = [etcd_server.client_url]
        ms = [EtcdSubnetManager(url, etcd_prefix, ttl=60) for _ in range(6)]
        try:
            before = list(await asyncio.gather(*(m.acquire(attrs(i)) for i, m in enumerate(ms))))
        finally:
            await asyncio.gather(*(m.close() for m in ms))
        put_config(etcd_server, etcd_prefix, DUAL)
        # every node restarts with the new config at once: the migrations race each other
        ms = [EtcdSubnetManager(url, etcd_prefix, ttl=60) for _ in range(6)]
        try:
            after = list(await asyncio.gather(*(m.acquire(attrs6(i)) for i, m in enumerate(ms))))
        finally:
            await asyncio.gather(*(m.close() for m in ms))
        put_config(etcd_server, etcd_prefix, '{"Network":"10.5.0.0/16"}')  # and back
        ms = [EtcdSubnetManager(url, etcd_prefix, ttl=60) for _ in range(6)]
        try:
            back = list(await asyncio.gather(*(m.acquire(attrs6(i)) for i, m in enumerate(ms))))
        finally:
            await asyncio.gather(*(m.close() for m in ms))
        return before, after, back

    before, after, back = asyncio.run(main())
    assert [a.ipv4_subnet for a in after] == [b.ipv4_subnet for b in before]  # not renumbered
    six = [a.ipv6_subnet for a in after]
    assert None not in six and len(set(six)) == 6
    assert [(b.ipv4_subnet, b.ipv6_subnet) for b in back] == \
        [(b.ipv4_subnet, None) for b in before]
    keys = etcd_keys(etcd_server, etcd_prefix)
    assert sorted(keys) == sorted(f"{etcd_prefix}/subnets/{b.key}" for b in before)
    assert all(key_lease(etcd_server, k) for k in keys)  # still leases with a TTL


def test_migration_never_overwrites_a_changed_key(etcd_server: EtcdMember,
                                                  etcd_prefix: str) -> None:
    put_config(etcd_server, etcd_prefix, '{"Network":"10.5.0.0/16"}')

    async def main() -> tuple[Lease, Lease, str]:
        url = [etcd_server.client_url]
        m = EtcdSubnetManager(url, etcd_prefix, ttl=60)
        old = await m.acquire(attrs(1))
        await m.close()
        put_config(etcd_server, etcd_prefix, DUAL)
        m = EtcdSubnetManager(url, etcd_prefix, ttl=60)
        try:
            assert m.config is None
            config = await m.get_network_config()
            listing = await m._list()
            occupied_key = f"{etcd_prefix}/subnets/{old.key}"
            # between our listing and our transaction, the key is rewritten (same etcd lease)
            stale = next(kv for kv in listing if kv.key.decode() == occupied_key)
            assert await m.etcd.put_if_unchanged(occupied_key, encode_attrs(attrs(1, 9)),
                                                 old.lease_id, stale.mod_revision)
            plan_lease = Lease(old.ipv4_subnet, attrs(1), lease_id=1,
                               mod_revision=stale.mod_revision)
            from flanneld.allocator import AcquirePlan
            plan = AcquirePlan("migrate", subnet=old.ipv4_subnet,
                               ipv6_subnet=IPv6Network("fd00:10:5:7::/64"), replace=plan_lease)
            assert await m._migrate(config, plan, attrs6(1)) is None  # refused: changed
            assert await m.etcd.get(occupied_key) is not None
            # the next attempt sees the new revision and moves it
            new = await m.acquire(attrs6(1))
            return old, new, occupied_key
        finally:
            await m.close()

    old, new, _ = asyncio.run(main())
    assert new.ipv4_subnet == old.ipv4_subnet and new.ipv6_subnet is not None
    assert list(etcd_keys(etcd_server, etcd_prefix)) == [f"{etcd_prefix}/subnets/{new.key}"]
