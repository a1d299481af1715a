"""A thin multi-endpoint etcd client over aetcd: endpoint URLs, failover, TLS, backoff.

aetcd's `Client` talks to one host:port over an insecure channel. This wrapper
- parses flannel's `--etcd-endpoints` (a comma list of URLs);
- runs each request on the current endpoint and, on a connection error, moves to
  the next one (each endpoint is tried once per request; callers back off);
- speaks TLS (`https://` endpoints, or any of ca/cert/key given) through a small
  aetcd subclass that opens a `grpc.aio.secure_channel`, and passes
  username/password to aetcd (token auth; re-authenticates when the token expires);
- tunes gRPC so a restarted etcd is found again within seconds (gRPC's default
  reconnect backoff grows to two minutes) and a dead peer is noticed by keepalive.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

import aetcd
import aetcd.client
import grpc
from aetcd import rpc
from aetcd.utils import prefix_range_end

log = logging.getLogger("flanneld.etcd")
T = TypeVar("T")

DEFAULT_PORT = 2379
CHANNEL_OPTIONS = {
    "grpc.initial_reconnect_backoff_ms": 100,
    "grpc.min_reconnect_backoff_ms": 100,
    "grpc.max_reconnect_backoff_ms": 2000,
    "grpc.keepalive_time_ms": 10_000,  # etcd refuses pings closer than 5 s apart
    "grpc.keepalive_timeout_ms": 5_000,
    "grpc.max_receive_message_length": 64 << 20,  # a big cluster's lease list
    # Our own connections per client: with gRPC's process-wide pool, a client made after
    # failing over back to an endpoint that had died and come back inherited the old
    # connection's failure and backoff ("Connection refused" from a listening proxy), and
    # every endpoint was tried in vain once more.
    "grpc.use_local_subchannel_pool": 1,
}


class EndpointError(ValueError):
    """A bad `--etcd-endpoints` entry or TLS file; the message says which and why."""


class EtcdUnavailable(ConnectionError):
    """No endpoint answered this request; the message lists what each one said."""


@dataclass(frozen=True)
class Endpoint:
    scheme: str  # "http" | "https"
    host: str
    port: int

    @property
    def grpc_host(self) -> str:
        """The host as it goes before `:port` in a gRPC target: IPv6 literals in brackets.
        (aetcd builds its target as f"{host}:{port}"; a bare `fd72::10` there became
        `fd72::10:2379`, which gRPC reads as the address fd72::10:2379, port 443.)"""
        return f"[{self.host}]" if ":" in self.host else self.host

    @property
    def target(self) -> str:
        """gRPC target: host:port, IPv6 literals in brackets."""
        return f"{self.grpc_host}:{self.port}"

    def __str__(self) -> str:
        return f"{self.scheme}://{self.target}"


def parse_endpoints(spec: str | Sequence[str]) -> tuple[Endpoint, ...]:
    """`http://10.0.0.1:2379,https://[fd00::1]:2379` (or a list) to Endpoints.

    A bare `host:port` means http; a missing port means 2379. IPv6 literals go in
    brackets, as in any URL; the Endpoint keeps the bare address and `target` /
    `grpc_host` put the brackets back for gRPC.
    """
    items = spec.split(",") if isinstance(spec, str) else list(spec)
    found: list[Endpoint] = []
    for item in (i.strip() for i in items):
        if not item:
            continue
        url = item if "://" in item else f"http://{item}"
        netloc = url.split("://", 1)[1].split("/", 1)[0].rsplit("@", 1)[-1]
        if netloc.count(":") > 1 and not netloc.startswith("["):
            raise EndpointError(f"etcd endpoint {item!r}: an IPv6 address needs brackets, "
                                "e.g. http://[fd72::10]:2379")
        try:
            parts = urlsplit(url)
            port = parts.port or DEFAULT_PORT
        except ValueError as exc:
            raise EndpointError(f"etcd endpoint {item!r}: {exc}") from None
        if parts.scheme not in ("http", "https"):
            raise EndpointError(f"etcd endpoint {item!r}: scheme {parts.scheme!r} is not "
                                "http or https")
        if not parts.hostname or parts.path not in ("", "/") or parts.query:
            raise EndpointError(f"etcd endpoint {item!r}: expected a URL like "
                                "http://10.0.0.1:2379")
        found.append(Endpoint(parts.scheme, parts.hostname, port))
    if not found:
        raise EndpointError(f"no etcd endpoint in {spec!r}: give at least one URL like "
                            "http://127.0.0.1:2379")
    return tuple(found)


def channel_target(host: str, port: int) -> str:
    """The gRPC target aetcd's channel gets: `host:port`, an IPv6 literal bracketed once."""
    return f"{Endpoint('http', host.strip('[]'), port).grpc_host}:{port}"


def tls_credentials(cafile: str | None, certfile: str | None,
                    keyfile: str | None) -> grpc.ChannelCredentials:
    """gRPC TLS credentials from PEM files; the CA is optional (system roots)."""
    if (certfile is None) != (keyfile is None):
        raise EndpointError("--etcd-certfile and --etcd-keyfile must be given together "
                            "(a client certificate needs its key)")

    def read(flag: str, path: str | None) -> bytes | None:
        if path is None:
            return None
        try:
            return Path(path).read_bytes()
        except OSError as exc:
            raise EndpointError(f"{flag} {path}: {exc.strerror or exc}") from None

    return grpc.ssl_channel_credentials(
        root_certificates=read("--etcd-cafile", cafile),
        private_key=read("--etcd-keyfile", keyfile),
        certificate_chain=read("--etcd-certfile", certfile))


class _Client(aetcd.Client):
    """aetcd's Client, over a secure channel when TLS credentials are given."""

    _is_connecting: bool

    def __init__(self, *args: Any, credentials: grpc.ChannelCredentials | None = None,
                 **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._credentials = credentials

    async def keepalive_once(self, lease_id: int) -> Any:
        """One LeaseKeepAlive exchange whose request stream stays open until the reply.

        aetcd's `refresh_lease` sends its request from a list, so gRPC half-closes the
        stream at once; `etcd grpc-proxy` then cancels the call ("context canceled")
        before the member's answer comes back, and every refresh through a proxy fails."""
        await self.connect()
        answered = asyncio.Event()

        async def requests() -> Any:
            yield rpc.LeaseKeepAliveRequest(ID=lease_id)
            await answered.wait()

        call = self.leasestub.LeaseKeepAlive(requests(), timeout=self._timeout,
                                             metadata=self.metadata)
        try:
            async for reply in call:
                answered.set()
                return reply
        except rpc.AioRpcError as exc:
            aetcd.exceptions._handle_exception(exc)
        finally:
            answered.set()
            call.cancel()
        # closed without an answer: this endpoint said nothing about the lease (an expired
        # one is a reply with TTL <= 0), so try the next rather than give the lease up
        raise EtcdUnavailable(f"{self._host}:{self._port}: the keepalive stream closed "
                              "without a reply")

    async def connect(self) -> None:
        if self._credentials is None:
            await super().connect()
            return
        try:
            await self._connect_tls()
        except rpc.AioRpcError as exc:
            aetcd.exceptions._handle_exception(exc)

    async def _connect_tls(self) -> None:
        # aetcd.Client.connect, with secure_channel instead of insecure_channel
        if self._connected.is_set():
            return
        if self._is_connecting:
            await asyncio.wait_for(self._connected.wait(), self._connect_wait_timeout)
            return
        try:
            self._is_connecting = True
            self.channel = rpc.secure_channel(channel_target(self._host, self._port),
                                              self._credentials,
                                              options=list(self._options.items()))
            if self._username is not None and self._password is not None:
                self.auth_stub = rpc.AuthStub(self.channel)
                resp = await self.auth_stub.Authenticate(
                    rpc.AuthenticateRequest(name=self._username, password=self._password),
                    timeout=self._timeout)
                self.metadata = (("token", resp.token),)
            self.kvstub = rpc.KVStub(self.channel)
            self.clusterstub = rpc.ClusterStub(self.channel)
            self.leasestub = rpc.LeaseStub(self.channel)
            self.maintenancestub = rpc.MaintenanceStub(self.channel)
            self._watcher = aetcd.client.watcher.Watcher(
                rpc.WatchStub(self.channel), timeout=self._timeout, metadata=self.metadata)
            self._connected.set()
        finally:
            self._is_connecting = False


def is_connection_error(exc: BaseException) -> bool:
    """Does this error mean "this endpoint is not answering" (as opposed to a bad request)?"""
    if isinstance(exc, EtcdUnavailable | aetcd.ConnectionFailedError
                  | aetcd.exceptions.ConnectionTimeoutError | grpc.aio.UsageError
                  | asyncio.TimeoutError | OSError):
        return True
    cause = exc.__cause__
    return isinstance(exc, aetcd.ClientError) and isinstance(cause, rpc.AioRpcError) and \
        cause.code() in (grpc.StatusCode.CANCELLED, grpc.StatusCode.UNAVAILABLE,
                         grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.UNKNOWN)


def is_retryable(exc: BaseException) -> bool:
    """Worth retrying later: the connection failed, or etcd answered with an error
    (leader change, overload, expired token...). Anything else is a bug: let it raise."""
    return is_connection_error(exc) or isinstance(exc, aetcd.ClientError)


class EtcdClient:
    """Requests against the current endpoint, failing over to the next on connection errors."""

    def __init__(self, endpoints: str | Sequence[str], *, username: str | None = None,
                 password: str | None = None, cafile: str | None = None,
                 certfile: str | None = None, keyfile: str | None = None,
                 timeout: float = 5.0) -> None:
        self.endpoints = parse_endpoints(endpoints)
        if (username is None) != (password is None):
            raise EndpointError("--etcd-username and --etcd-password must be given together")
        tls = any(e.scheme == "https" for e in self.endpoints) or any((cafile, certfile, keyfile))
        self._credentials = tls_credentials(cafile, certfile, keyfile) if tls else None
        self._username, self._password, self._timeout = username, password, timeout
        self._index = 0
        self._generation = 0
        self._client: _Client | None = None
        self.reauthentications = 0  # auth tokens that expired and were renewed

    @property
    def endpoint(self) -> Endpoint:
        return self.endpoints[self._index]

    def _current(self) -> tuple[_Client, int]:
        if self._client is None:
            ep = self.endpoint
            self._client = _Client(ep.grpc_host, ep.port, username=self._username,
                                   password=self._password, timeout=self._timeout,
                                   options=CHANNEL_OPTIONS, credentials=self._credentials)
        return self._client, self._generation

    async def call(self, op: Callable[[aetcd.Client], Awaitable[T]]) -> T:
        """Run `op(client)`; on a connection error try the next endpoint, each once."""
        problems: list[str] = []
        reauthenticated = replaced = False
        attempt = 0
        while attempt < len(self.endpoints):
            client, generation = self._current()
            endpoint = self.endpoint
            try:
                return await op(client)
            except aetcd.exceptions.UnauthenticatedError:
                if reauthenticated or self._username is None:
                    raise
                reauthenticated = True  # the auth token expired: log in again, same endpoint
                self.reauthentications += 1
                await self.reset(generation, rotate=False)
                continue
            except Exception as exc:
                if generation != self._generation and not replaced:
                    # the client was closed under this call (another task failed over
                    # meanwhile), which fails it in odd ways ("Internal error from Core"):
                    # run it once more, on the client now in use
                    replaced = True
                    continue
                if not is_connection_error(exc):
                    raise
                problems.append(f"{endpoint}: {exc or type(exc).__name__}")
                await self.reset(generation, rotate=True, reason=str(exc))
            attempt += 1
        raise EtcdUnavailable("no etcd endpoint answered: " + "; ".join(problems))

    async def reset(self, generation: int, *, rotate: bool, reason: str = "") -> None:
        """Drop the client of `generation` (if still current), moving on if `rotate`.

        Several tasks share the client and may see the same failure; only the
        first one to report it switches endpoints.
        """
        if generation != self._generation:
            return
        self._generation += 1
        old, self._client = self._client, None
        if rotate and len(self.endpoints) > 1:
            before = self.endpoint
            self._index = (self._index + 1) % len(self.endpoints)
            log.warning("etcd endpoint %s failed (%s); switching to %s", before, reason,
                        self.endpoint)
        if old is not None:
            await _close_quietly(old)

    async def watch_prefix(self, prefix: bytes, start_revision: int) -> Any:
        """A prefix watch (aetcd `Watch`) from `start_revision` on the current endpoint."""
        return await self.call(lambda c: c.watch_prefix(prefix, start_revision=start_revision))

    # -- the few key-value operations the subnet manager needs, all atomic --------

    async def get(self, key: str) -> Any:
        """The key's aetcd KeyValue (with .value, .lease, .mod_revision), or None."""
        return await self.call(lambda c: c.get(key.encode()))

    async def list_prefix(self, prefix: str) -> Any:
        """aetcd GetRange: iterate for KeyValues; `.header.revision` is the read revision."""
        return await self.call(lambda c: c.get_prefix(prefix.encode()))

    async def create(self, key: str, value: bytes, lease_id: int, *,
                     unless_prefix: str | None = None) -> Any:
        """Put `key` only if no key starting with `unless_prefix` (default: the key
        itself) exists; the stored KeyValue, or None if something was there."""
        guard = (unless_prefix or key).encode()
        return await self._txn(lambda t: [t.create(guard, range_end=prefix_range_end(guard))
                                          == 0], key, value, lease_id)

    async def put_if_unchanged(self, key: str, value: bytes, lease_id: int,
                               mod_revision: int) -> Any:
        """Put `key` only if it is still at `mod_revision`; the stored KeyValue, or None."""
        return await self._txn(lambda t: [t.mod(key.encode()) == mod_revision], key, value,
                               lease_id)

    async def replace_key(self, old_key: str, old_mod_revision: int, key: str, value: bytes,
                          lease_id: int, *, unless_prefix: str | None = None) -> Any:
        """In one transaction: put `key` and delete `old_key`, only if `old_key` is still at
        `old_mod_revision` and no key starting with `unless_prefix` exists (default: no
        key `key`; `old_key` itself may start with it). The stored KeyValue, or None if
        a condition failed (then nothing changed)."""
        guard = (unless_prefix or key).encode()
        end = prefix_range_end(guard) if unless_prefix else None

        async def txn(c: aetcd.Client) -> Any:
            t = c.transactions
            ok, responses = await c.transaction(
                compare=[t.mod(old_key.encode()) == old_mod_revision,
                         t.create(guard, range_end=end) == 0],
                failure=[],
                success=[t.put(key.encode(), value, lease=lease_id or None),
                         t.delete(old_key.encode()), t.get(key.encode())])
            return responses[2][0][1] if ok else None
        return await self.call(txn)

    async def delete_if_unchanged(self, key: str, mod_revision: int) -> bool:
        async def txn(c: aetcd.Client) -> bool:
            t = c.transactions
            ok, _ = await c.transaction(compare=[t.mod(key.encode()) == mod_revision],
                                        success=[t.delete(key.encode())], failure=[])
            return bool(ok)
        return await self.call(txn)

    async def _txn(self, compare: Callable[[Any], list[Any]], key: str, value: bytes,
                   lease_id: int) -> Any:
        async def txn(c: aetcd.Client) -> Any:
            t = c.transactions
            ok, responses = await c.transaction(
                compare=compare(t), failure=[],
                success=[t.put(key.encode(), value, lease=lease_id or None), t.get(key.encode())])
            # the Get in the same transaction gives the revision and lease we just wrote
            return responses[1][0][1] if ok else None
        return await self.call(txn)

    async def grant(self, ttl: int) -> tuple[int, int]:
        """A new etcd lease: (id, granted TTL)."""
        lease = await self.call(lambda c: c.lease(ttl))
        return int(lease.id), int(lease.ttl)

    async def keepalive(self, lease_id: int) -> int:
        """Refresh a lease once; its new TTL, or 0 if it has expired."""
        reply = await self.call(lambda c: c.keepalive_once(lease_id))
        ttl = int(getattr(reply, "TTL", 0)) if reply is not None else 0
        return max(ttl, 0)  # an expired lease: 0 from a member, -1 through grpc-proxy

    async def revoke(self, lease_id: int, *, only_if_unused: bool = False) -> None:
        if only_if_unused:
            info = await self.call(lambda c: c.get_lease_info(lease_id, keys=True))
            if info.TTL <= 0 or list(info.keys):
                return
        await self.call(lambda c: c.revoke_lease(lease_id))

    @property
    def generation(self) -> int:
        return self._generation

    async def close(self) -> None:
        old, self._client = self._client, None
        self._generation += 1
        if old is not None:
            await _close_quietly(old)


async def _close_quietly(client: aetcd.Client) -> None:
    try:
        await asyncio.wait_for(client.close(), 5)
    except Exception as exc:  # closing a broken channel may fail; it is gone either way
        log.debug("closing etcd client: %r", exc)
