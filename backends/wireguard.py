"""The WireGuard backend: flannel's `flannel-wg` (and `flannel-wg-v6`), reconciled.

Per device (`backends.wg_desired.device_specs`): our private key and listen port, the
MTU (interface MTU - 80), our subnet's address as a /32 (/128), a route for the whole
Network through the device (scope link), and one WireGuard peer per lease: its
public key, endpoint `PublicIP:Port`, allowed IPs = its subnet(s), PSK and keepalive.

Reconcile, not replay: a full run reads the device back (UAPI `get`, from kernel
WireGuard or wireguard-go alike: `backends.wg_device`), diffs it against the leases'
peers (`plan_peers`, which lets a live peer's endpoint roam) and sends one `set` with
the difference; a peer removed or altered by hand is put back and counted as
`kind="wgpeer"` in `flanneld_repairs_total`. An event diffs against what we last
applied, without reading the device.

Unlike flannel, the device is never deleted: not on "already exists" (a wireguard-go
device is a tun link; deleting it would cut traffic), not at shutdown. A restarted
flanneld adopts it through its socket.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from ipaddress import IPv4Network, IPv6Network
from pathlib import Path
from typing import TYPE_CHECKING

from backends.base import ExternalInterface, OnceLog, ReconcileResult
from backends.wg_desired import (
    ActualPeer,
    PeerCache,
    PeerPlan,
    WgDeviceSpec,
    WgPeer,
    desired_peers,
    device_specs,
    plan_peers,
)
from backends.wg_device import WgDevice, WgDeviceError, open_device
from backends.wg_uapi import UapiError, parse_get, render_set
from core.config import WireguardConfig
from core.lease import Lease, LeaseAttrs, wireguard_backend_data
from core.wgkey import (
    clamp,
    encode_key,
    key_file_path,
    load_or_create_private_key,
    public_key,
)
from netlink import messages as m
from netlink.rtnl import NetlinkError, RtNetlink

if TYPE_CHECKING:
    from core.config import NetworkConfig

log = logging.getLogger("pyflannel.backends.wireguard")
KIND = "wgpeer"
_REPLACE = m.NLM_F_CREATE | m.NLM_F_REPLACE
PRIME_MAX = 64
PRIME_LATER = 0.5  # s: when the end with the larger key primes, if still no handshake


class WireguardBackend:
    backend_type = "wireguard"
    drift_unannounced = True  # `wg set` and wireguard-go announce nothing on rtnetlink

    def __init__(self, config: NetworkConfig, ext: ExternalInterface, state_dir: Path,
                 netns: str | None = None, *, userspace: str = "auto",
                 key_file: Path | None = None) -> None:
        wg = config.backend
        if not isinstance(wg, WireguardConfig):
            raise ValueError(f"wireguard backend: config.backend is {type(wg).__name__}")
        if config.enable_ipv6 and ext.public_ipv6 is None:
            raise ValueError(f"wireguard: IPv6 is enabled but {ext.name} has no public IPv6 "
                             "address: give it one, or pass --public-ipv6")
        self.config, self.wg, self.ext, self.netns = config, wg, ext, netns
        self.userspace = userspace
        self.specs = device_specs(wg, config.enable_ipv4, config.enable_ipv6, ext.mtu)
        self.mtu = min(s.mtu for s in self.specs)
        self.key_file = key_file or key_file_path(os.environ)
        self.private_key, created = load_or_create_private_key(self.key_file)
        self.public_key = encode_key(public_key(self.private_key))
        log.info("%s WireGuard key %s (public key %s)", "generated a new" if created
                 else "using the", self.key_file, self.public_key)
        self.nl = RtNetlink(netns)
        self._lock = threading.Lock()
        self._devices: dict[str, WgDevice] = {}
        self._index: dict[str, int] = {}
        self._applied: dict[str, dict[str, WgPeer]] = {}  # device -> what we last set
        self._done: set[str] = set()  # devices set up once: later fixes are repairs
        self._programmed = 0
        self._timers: list[threading.Timer] = []
        self._cache: dict[str, tuple[object, PeerCache]] = {}  # device -> (own lease, peers)
        self._skip_log = OnceLog()
        self.dev_index = 0
        self.on_fdb_write: Callable[[list[str]], None] | None = None
        self.on_lease_attrs: Callable[[LeaseAttrs], object] | None = None

    # --- the Backend API ------------------------------------------------------------------

    @property
    def netlink_portid(self) -> int:
        return self.nl.portid

    @property
    def mode(self) -> str:
        """How each device runs, for logs, /readyz and flannelctl status."""
        return ", ".join(f"{d.info.name}: {d.info.kind}"
                         + (f" (wireguard-go pid {d.info.pid}"
                            + (", adopted" if d.info.adopted else "") + ")"
                            if d.info.pid else "")
                         for d in self._devices.values()) or "not set up"

    def _port(self, family: int) -> int:
        return next((s.listen_port for s in self.specs if family in s.families),
                    self.wg.listen_port)

    def lease_attrs(self) -> LeaseAttrs:
        with self._lock:
            for spec in self.specs:
                self._ensure_device(spec, ReconcileResult())
            log.info("wireguard devices: %s", self.mode)
        v4, v6 = self.config.enable_ipv4, self.config.enable_ipv6
        return LeaseAttrs(
            public_ip=self.ext.public, backend_type="wireguard",
            backend_data=wireguard_backend_data(self.public_key, self._port(4)) if v4 else None,
            public_ipv6=self.ext.public_ipv6 if v6 else None,
            # the port the device carrying IPv6 listens on: ListenPortV6 in separate mode,
            # ListenPort otherwise (flannel writes ListenPortV6 there, where nothing listens)
            backend_v6_data=wireguard_backend_data(self.public_key, self._port(6))
            if v6 else None)

    def reconcile(self, own: Lease, peers: Iterable[Lease], *,
                  full: bool = True) -> ReconcileResult:
        peers = list(peers)
        result = ReconcileResult(full=full)
        with self._lock:
            programmed: set[str] = set()
            for spec in self.specs:
                try:
                    programmed |= self._reconcile_device(spec, own, peers, result, full=full)
                except (WgDeviceError, UapiError, NetlinkError, OSError) as exc:
                    self._forget(spec.name)
                    log.warning("wireguard %s reconcile failed: %s", spec.name, exc)
                    result.errors.append(f"wireguard {spec.name}: {exc}")
            result.programmed_peers = len(programmed)
        self._skip_log.update(result.skipped, "wireguard: skipping lease")
        return result

    def close(self) -> None:
        for timer in self._timers:
            timer.cancel()
        with self._lock:
            for dev in self._devices.values():
                dev.close()  # never the device itself: traffic goes on while we are away
            self._devices.clear()
            self.nl.close()

    # --- one device -----------------------------------------------------------------------

    def _open(self, spec: WgDeviceSpec) -> WgDevice:
        return open_device(spec.name, netns=self.netns, mtu=spec.mtu, userspace=self.userspace,
                           log_dir=self.key_file.parent)

    def _forget(self, name: str) -> None:
        self._applied.pop(name, None)
        dev = self._devices.pop(name, None)
        if dev is not None:
            dev.close()

    def _reconcile_device(self, spec: WgDeviceSpec, own: Lease, peers: list[Lease],
                          result: ReconcileResult, *, full: bool) -> set[str]:
        """Bring one device in line; the public keys of the peers it holds."""
        applied = self._applied.get(spec.name)
        incremental = not full and applied is not None and spec.name in self._devices
        ctx = (own.key, own.attrs, own.ipv4_subnet, own.ipv6_subnet)
        cache = self._cache.get(spec.name)
        want = desired_peers(own, peers, self.wg, spec, self.public_key,
                             cache[1] if cache is not None and cache[0] == ctx else None)
        self._cache[spec.name] = (ctx, want.cache)
        result.skipped += sorted(want.skipped.items())
        previous = applied
        actual: Mapping[str, object]  # the peers the device holds (what we set, or read back)
        if incremental:
            assert applied is not None
            # against what we set last, without reading the device: only changed peers
            dev, actual = self._devices[spec.name], applied
            plan = PeerPlan(tuple(p for k, p in want.peers.items() if applied.get(k) != p),
                            tuple(k for k in applied if k not in want.peers))
        else:
            dev, device_peers = self._ensure_device(spec, result)
            self._ensure_link(spec, own, result)
            full, actual = True, device_peers
            plan = plan_peers(want.peers, device_peers, time.time())
        if plan.remove or plan.upsert:
            dev.set(render_set(plan=plan, prime=self._to_prime(spec, plan, actual)))
        if plan.remove:
            result.count("removed", KIND, len(plan.remove))
        for p in plan.upsert:
            # set before, exactly so, and now missing or altered on the device: a repair
            had = previous is not None and previous.get(p.public_key) == p
            result.count("repaired" if full and had else "added", KIND)
        self._applied[spec.name] = dict(want.peers)
        return set(want.peers)  # by public key: one per lease, across both devices

    def _to_prime(self, spec: WgDeviceSpec, plan: PeerPlan, actual: Mapping[str, object]
                  ) -> tuple[str, ...]:
        """New peers to handshake with at once (see `render_set`).

        A pair learns of each other within milliseconds; if both ends primed then, their
        initiations would cross, each would answer the other's and drop its own, and the
        pair would wait REKEY_TIMEOUT (5 s) anyway. So the end with the smaller public key
        primes now; the other looks again PRIME_LATER later and primes only a peer that
        has still not handshaken (the first initiation reached us before we knew it).
        A few at a time only: a node starting among a thousand peers sends no burst. Not
        with a keepalive configured, which starts a handshake by itself."""
        if self.wg.keepalive:
            return ()
        new = [p.public_key for p in plan.upsert if p.public_key not in actual]
        if len(new) > PRIME_MAX:
            return ()
        later = tuple(k for k in new if k < self.public_key)
        if later:
            timer = threading.Timer(PRIME_LATER, self._prime_late, (spec.name, later))
            timer.daemon = True
            self._timers = [t for t in self._timers if t.is_alive()] + [timer]
            timer.start()
        return tuple(k for k in new if k > self.public_key)

    def _prime_late(self, name: str, keys: tuple[str, ...]) -> None:
        with self._lock:
            dev = self._devices.get(name)
            if dev is None:
                return
            try:
                peers = parse_get(dev.get()).peers
                due = tuple(k for k in keys if k in peers and not peers[k].last_handshake)
                if due:
                    dev.set(render_set(prime=due))
            except (WgDeviceError, UapiError, OSError) as exc:
                log.debug("wireguard %s: late prime: %s", name, exc)  # the next resync sees it

    def _ensure_device(self, spec: WgDeviceSpec, result: ReconcileResult
                       ) -> tuple[WgDevice, dict[str, ActualPeer]]:
        """The device exists, adopted or created, with our key and port; its peers."""
        dev = self._devices.get(spec.name)
        fresh = dev is None
        if dev is None:
            dev = self._open(spec)
            self._devices[spec.name] = dev
            if dev.info.adopted:
                log.info("adopted %s (%s)", spec.name, self.mode)
        try:
            state = parse_get(dev.get())
        except (WgDeviceError, OSError):
            self._forget(spec.name)  # its process is gone: start or adopt again, once
            dev = self._devices[spec.name] = self._open(spec)
            state, fresh = parse_get(dev.get()), True
            result.count("repaired" if spec.name in self._done else "added", "device")
        # devices hold the key clamped, as X25519 uses it (a key file need not be)
        if state.private_key != clamp(self.private_key) or state.listen_port != spec.listen_port:
            dev.set(render_set(private_key=self.private_key, listen_port=spec.listen_port))
            result.count("repaired" if spec.name in self._done else "added", "device")
        if fresh:
            self._link_up(spec, result)
        return dev, state.peers

    def _link_up(self, spec: WgDeviceSpec, result: ReconcileResult) -> int:
        """The device's MTU, and up; its ifindex. Done as soon as the device exists:
        wireguard-go learns of "up" asynchronously, and a device it still thinks is down
        sends no handshake for the peers we prime."""
        row = self.nl.get(m.RTM_GETLINK, m.link_get_body(spec.name), m.parse_link,
                          m.RTM_NEWLINK)
        if row is None:
            raise WgDeviceError(19, f"{spec.name} has no link (its process exited?)")
        if row.mtu != spec.mtu or not row.flags & m.IFF_UP:
            self.nl.check(m.RTM_NEWLINK, 0, m.link_set_body(row.ifindex, up=True, mtu=spec.mtu),
                          f"set {spec.name} up, MTU {spec.mtu}")
            result.count("repaired" if spec.name in self._done else "added", "mtu")
        return row.ifindex

    def _ensure_link(self, spec: WgDeviceSpec, own: Lease, result: ReconcileResult) -> None:
        """MTU, up, our address(es) and the Network route(s) through the device."""
        index = self._index[spec.name] = self._link_up(spec, result)
        self.dev_index = self.dev_index or index
        nets: list[tuple[IPv4Network | IPv6Network, IPv4Network | IPv6Network]] = []
        if 4 in spec.families and own.ipv4_subnet is not None and self.config.ipv4_network:
            nets.append((own.ipv4_subnet, self.config.ipv4_network))
        if 6 in spec.families and own.ipv6_subnet is not None and self.config.ipv6_network:
            nets.append((own.ipv6_subnet, self.config.ipv6_network))
        for subnet, network in nets:
            self._ensure_address(spec, index, subnet, network, result)
            self._ensure_route(spec, index, network, result)
        self._done.add(spec.name)

    def _ensure_address(self, spec: WgDeviceSpec, index: int,
                        subnet: IPv4Network | IPv6Network, network: IPv4Network | IPv6Network,
                        result: ReconcileResult) -> None:
        family = m.AF_INET if subnet.version == 4 else m.AF_INET6
        want, plen = subnet.network_address.packed, subnet.max_prefixlen
        have = [a for a in self.nl.dump(m.RTM_GETADDR, m.addr_dump_body(index, family),
                                        m.parse_addr_entry, m.RTM_NEWADDR)
                if a.ifindex == index and a.family == family]
        for a in have:  # an old subnet's address (we were renumbered)
            if a.address != want and a.prefixlen == plen and \
                    network.__class__((a.address, network.prefixlen), strict=False) == network:
                self.nl.check(*m.msg_del_addr(index, family, a.address, a.prefixlen),
                              f"remove an old address of {spec.name}")
                result.count("removed", "address")
        if not any(a.address == want and a.prefixlen == plen for a in have):
            kind, _, body = m.msg_new_addr(index, family, want, plen, nodad=family == m.AF_INET6)
            self.nl.check(kind, _REPLACE, body, f"add {subnet.network_address}/{plen} to "
                          f"{spec.name}")
            result.count("repaired" if spec.name in self._done else "added", "address")

    def _ensure_route(self, spec: WgDeviceSpec, index: int, network: IPv4Network | IPv6Network,
                      result: ReconcileResult) -> None:
        family = m.AF_INET if network.version == 4 else m.AF_INET6
        dst, plen = network.network_address.packed, network.prefixlen
        for e in self.nl.dump(m.RTM_GETROUTE, m.route_dump_body(m.RT_TABLE_MAIN, family),
                              m.parse_route_entry, m.RTM_NEWROUTE):
            if e.table == m.RT_TABLE_MAIN and e.oif == index and not e.gateway and \
                    e.dst_len == plen and (e.dst or bytes(len(dst))) == dst:
                return
        kind, _, body = m.msg_new_route(index, family, dst, plen, None)
        self.nl.check(kind, _REPLACE, body, f"route {network} dev {spec.name}")
        result.count("repaired" if spec.name in self._done else "added", "route")
