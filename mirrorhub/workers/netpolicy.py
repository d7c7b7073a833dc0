"""Which network addresses workers may connect to (SSRF guard).

Mirror URLs are entered by admins and resolved by DNS that someone else controls, so a mirror
name may point at loopback, a private network or a cloud metadata address. Workers refuse those
addresses unless ``settings.allow_private_mirrors`` is true (tests, private installs).

The check runs on the *resolved* address of every connection, and the connection goes to that
exact address, so DNS cannot answer "public" to the check and "private" to the connect
(rebinding). Use:

- :func:`check_address` (pure) for an address you already have;
- :func:`resolve_checked` to resolve a host name and check every answer (then connect to one of
  the returned IP literals, e.g. pass it to rsync);
- :class:`GuardedTransport` as the httpx transport: it does both on every new connection, keeps
  the URL's host name for TLS (SNI and certificate checks) and ignores proxy variables.

Errors: :class:`AddressRefused` and :class:`ResolveFailed`, both :class:`NetPolicyError` with a
short ``kind`` and a ``detail`` like :class:`~mirrorhub.errors.ProbeFailed`, so a prober can
re-raise ``ProbeFailed(exc.kind, exc.detail)`` and a scanner ``ScanFailed(str(exc))``.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Iterable
from typing import Any

import httpcore
import httpx

from mirrorhub.domain import IPAddress
from mirrorhub.errors import MirrorhubError

__all__ = [
    "AddressRefused",
    "GuardedTransport",
    "NetPolicyError",
    "ResolveFailed",
    "check_address",
    "refusal_reason",
    "resolve_checked",
]


class NetPolicyError(MirrorhubError):
    """A connection was not attempted: the address is refused or the name did not resolve."""

    kind = "network policy"

    def __init__(self, detail: str) -> None:
        super().__init__(f"{self.kind}: {detail}")
        self.detail = detail


class AddressRefused(NetPolicyError):
    kind = "address refused"


class ResolveFailed(NetPolicyError):
    kind = "dns"


def refusal_reason(ip: IPAddress, allow_private: bool) -> str | None:
    """Why a connection to ``ip`` is refused, or None when it is allowed (pure)."""
    if isinstance(ip, ipaddress.IPv6Address):
        # An IPv4 address wrapped in IPv6 is judged as the IPv4 address it reaches.
        embedded = ip.ipv4_mapped or ip.sixtofour
        if embedded is not None:
            reason = refusal_reason(embedded, allow_private)
            return None if reason is None else f"{reason} ({ip} embeds {embedded})"
    if ip.is_unspecified:
        return f"{ip} is the unspecified address"
    if ip.is_multicast:
        return f"{ip} is a multicast address"
    if allow_private or ip.is_global:
        return None
    if ip.is_loopback:
        kind = "loopback"
    elif ip.is_link_local:
        kind = "link-local"
    elif ip.is_private:
        kind = "private"
    else:
        kind = "not globally routable"
    return f"{ip} is a {kind} address (set MIRRORHUB_ALLOW_PRIVATE_MIRRORS=true to allow)"


def check_address(ip: IPAddress | str, allow_private: bool) -> None:
    """Raise AddressRefused unless workers may connect to ``ip``."""
    address = ipaddress.ip_address(ip) if isinstance(ip, str) else ip
    reason = refusal_reason(address, allow_private)
    if reason is not None:
        raise AddressRefused(reason)


def _ip_literal(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host.strip("[]").split("%", 1)[0])
    except ValueError:
        return None


async def resolve_checked(
    host: str, port: int, allow_private: bool, *, resolve_timeout: float = 10.0
) -> list[IPAddress]:
    """Resolve ``host`` and return its addresses, in resolver order, all of them allowed.

    One refused answer refuses the host: a name that mixes public and private answers is
    either misconfigured or an attack, and picking "the good one" would hide it.
    """
    literal = _ip_literal(host)
    if literal is not None:
        check_address(literal, allow_private)
        return [literal]
    loop = asyncio.get_running_loop()
    try:
        infos = await asyncio.wait_for(
            loop.getaddrinfo(host, port, type=socket.SOCK_STREAM), resolve_timeout
        )
    except TimeoutError as exc:
        raise ResolveFailed(f"resolving {host} timed out") from exc
    except (OSError, UnicodeError) as exc:
        raise ResolveFailed(f"cannot resolve {host}: {exc}") from exc
    addresses: list[IPAddress] = []
    for _family, _type, _proto, _canon, sockaddr in infos:
        address = _ip_literal(str(sockaddr[0]))
        if address is not None and address not in addresses:
            addresses.append(address)
    if not addresses:
        raise ResolveFailed(f"{host} has no address")
    for address in addresses:
        check_address(address, allow_private)
    return addresses


class _GuardedBackend(httpcore.AsyncNetworkBackend):
    """Resolves, checks, then connects to the checked IP literal (no second lookup)."""

    def __init__(self, allow_private: bool) -> None:
        self._allow_private = allow_private
        self._inner = httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109 - httpcore's signature
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        addresses = await resolve_checked(
            host, port, self._allow_private, resolve_timeout=10.0 if timeout is None else timeout
        )
        last: Exception | None = None
        for address in addresses:
            try:
                return await self._inner.connect_tcp(
                    str(address),
                    port,
                    timeout=timeout,
                    local_address=local_address,
                    socket_options=socket_options,
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                last = exc
        assert last is not None
        raise last

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,  # noqa: ASYNC109 - httpcore's signature
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        raise AddressRefused("unix sockets are not mirror addresses")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


_LIMITS = httpx.Limits(max_connections=8, max_keepalive_connections=8)


class GuardedTransport(httpx.AsyncHTTPTransport):
    """An httpx transport whose every new connection passes :func:`check_address`.

    Use with ``httpx.AsyncClient(transport=GuardedTransport(...), follow_redirects=False,
    trust_env=False)``: a proxy from the environment would bypass the check. TLS still
    verifies the certificate against the URL's host name.
    """

    def __init__(
        self,
        allow_private: bool,
        *,
        verify: bool = True,
        limits: httpx.Limits = _LIMITS,
        retries: int = 0,
    ) -> None:
        super().__init__(verify=verify, trust_env=False, limits=limits, retries=retries)
        # httpx has no public hook for the network backend; swap in a pool that uses ours.
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=httpx.create_ssl_context(verify=verify, trust_env=False),
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            retries=retries,
            network_backend=_GuardedBackend(allow_private),
        )
