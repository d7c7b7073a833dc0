"""Health probes, the network part: one round over many mirrors.

Every (mirror, scheme) endpoint gets one GET of a small file (see
:mod:`mirrorhub.workers.health` for what is requested and how answers are judged), under a
connect timeout and a total timeout, with at most ``concurrency`` endpoints in flight, so a
round over a thousand endpoints with dead ones among them takes a few timeouts, not a sum
of them. Safety:

- every connection goes through :class:`~mirrorhub.workers.netpolicy.GuardedTransport`: the
  resolved address is checked (private, loopback ... refused unless
  ``allow_private_mirrors``) and connected to as checked, so DNS rebinding cannot slip by;
- redirects are never followed by httpx; the prober follows at most three, and only back to
  the mirror's own base URLs;
- bodies are streamed and never read past :data:`~mirrorhub.workers.trace.TRACE_MAX_BYTES`
  (+1 to tell "too large"); for a file that is not the trace file only the headers are read;
- no proxy from the environment, ``Accept-Encoding: identity`` (no decompression bombs).

Errors are classified at this boundary into short words the status page can show:
``dns``, ``refused``, ``timeout``, ``tls``, ``http <status>``, ``redirect elsewhere``,
``too many redirects``, ``too large``, ``bad trace file``, ``private address``,
``connection failed``, ``protocol error``.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import ssl
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import httpcore
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from mirrorhub import __version__
from mirrorhub.domain import Mirror, Scheme
from mirrorhub.errors import ProbeFailed
from mirrorhub.paths import quote_path
from mirrorhub.settings import Settings
from mirrorhub.workers.health import (
    MAX_REDIRECTS,
    MirrorProbe,
    SchemeResult,
    Target,
    judge_response,
    mirror_origins,
    offered_schemes,
)
from mirrorhub.workers.netpolicy import AddressRefused, NetPolicyError, ResolveFailed

# netpolicy's httpcore backend (resolve, check_address, connect to the checked IP literal);
# its GuardedTransport puts it in one shared pool, which is quadratic at our concurrency.
from mirrorhub.workers.netpolicy import _GuardedBackend as GuardedBackend
from mirrorhub.workers.probe_apply import (
    MirrorOutcome,
    apply_round,
    load_probe_plan,
    origin_trace_time,
)
from mirrorhub.workers.trace import TRACE_MAX_BYTES, parse_trace

log = logging.getLogger(__name__)

USER_AGENT = f"mirrorhub/{__version__} (health probe)"
# identity: a compressed body is not decompressed (no bombs); it fails the trace parse.
HEADERS = [(b"User-Agent", USER_AGENT.encode()), (b"Accept-Encoding", b"identity")]

Progress = Callable[[int, int], None]  # (mirrors done, mirrors in the round)


# --- classifying failures ---------------------------------------------------------------


def classify_error(exc: BaseException) -> str:
    """A short, stable word for why a probe failed (the boundary translation)."""
    if isinstance(exc, ProbeFailed):
        return exc.kind
    if isinstance(exc, AddressRefused):
        return "private address"
    if isinstance(exc, ResolveFailed):
        return "dns"
    if isinstance(exc, NetPolicyError):
        return exc.kind
    if isinstance(exc, TimeoutError | httpcore.TimeoutException):
        return "timeout"
    seen: set[int] = set()
    cause: BaseException | None = exc
    while cause is not None and id(cause) not in seen:
        seen.add(id(cause))
        if isinstance(cause, ssl.SSLError | ssl.CertificateError):
            return "tls"
        if isinstance(cause, ConnectionRefusedError) or (
            isinstance(cause, OSError) and cause.errno == errno.ECONNREFUSED
        ):
            return "refused"
        if isinstance(cause, TimeoutError):
            return "timeout"
        cause = cause.__cause__ or cause.__context__
    if isinstance(exc, httpcore.RemoteProtocolError | httpcore.LocalProtocolError):
        return "protocol error"
    return "connection failed"


# --- one endpoint -----------------------------------------------------------------------


def target_url(base_url: str, target: Target) -> str:
    return base_url + quote_path(target.path)


@dataclass(frozen=True, slots=True)
class Connector:
    """What every endpoint of a round shares: one TLS context and the guarded backend.

    Each endpoint gets its own one-connection pool: a single shared pool of hundreds of
    connections costs time quadratic in their number (httpcore matches every queued
    request against every connection), which a thousand-endpoint round would feel.
    """

    ssl_context: ssl.SSLContext
    backend: httpcore.AsyncNetworkBackend
    timeouts: dict[str, float]

    def pool(self) -> httpcore.AsyncConnectionPool:
        return httpcore.AsyncConnectionPool(
            ssl_context=self.ssl_context,
            max_connections=1,
            max_keepalive_connections=1,  # a redirect on the mirror may reuse it
            retries=0,
            network_backend=self.backend,
        )


def make_connector(settings: Settings) -> Connector:
    total = settings.probe_timeout_seconds
    return Connector(
        ssl_context=ssl.create_default_context(),
        backend=GuardedBackend(settings.allow_private_mirrors),
        timeouts={
            "connect": settings.probe_connect_timeout_seconds,
            "read": total,
            "write": total,
            "pool": total,
        },
    )


async def probe_endpoint(
    connector: Connector,
    mirror: Mirror,
    scheme: Scheme,
    base_url: str,
    target: Target,
    *,
    total_timeout: float,
    clock: Callable[[], float],
) -> SchemeResult:
    """Probe one scheme of one mirror; never raises for a network or HTTP problem."""
    url = target_url(base_url, target)
    at = clock()
    started = time.monotonic()
    status: int | None = None
    latency: float | None = None
    try:
        async with asyncio.timeout(total_timeout), connector.pool() as pool:
            allowed = mirror_origins(mirror)
            current = url
            for hop in range(MAX_REDIRECTS + 1):
                async with pool.stream(
                    "GET", current, headers=HEADERS, extensions={"timeout": connector.timeouts}
                ) as response:
                    status = response.status
                    latency = (time.monotonic() - started) * 1000.0
                    verdict = judge_response(
                        status,
                        _header(response.headers, b"location"),
                        current,
                        allowed,
                        MAX_REDIRECTS - hop,
                    )
                    if verdict.follow is not None:
                        current = verdict.follow
                        continue
                    if not verdict.ok:
                        raise ProbeFailed(verdict.error)
                    trace = await _read_trace(response, clock()) if target.is_trace else None
                    return SchemeResult(scheme, url, at, True, status, latency, "", trace)
            raise AssertionError("unreachable: judge_response stops redirects")
    except Exception as exc:  # every failure becomes a classified result
        kind = classify_error(exc)
        if kind in ("connection failed", "protocol error"):
            log.info("probe %s %s: %r", mirror.name, url, exc)
        return SchemeResult(scheme, url, at, False, status, latency, kind)


def _header(headers: list[tuple[bytes, bytes]], name: bytes) -> str | None:
    for key, value in headers:
        if key.lower() == name:
            return value.decode("latin-1")
    return None


async def _read_trace(response: httpcore.Response, now: float) -> float:
    length = _header(response.headers, b"content-length")
    if length is not None and length.strip().isdigit() and int(length) > TRACE_MAX_BYTES:
        raise ProbeFailed("too large", f"{length} bytes announced")
    body = bytearray()
    async for chunk in response.aiter_stream():
        body += chunk
        if len(body) > TRACE_MAX_BYTES:
            raise ProbeFailed("too large")
    return parse_trace(bytes(body), now)


# --- a round ----------------------------------------------------------------------------


async def probe_mirrors(
    sessions: async_sessionmaker[AsyncSession],
    settings: Settings,
    names: Sequence[str] | None = None,
    *,
    clock: Callable[[], float] = time.time,
    concurrency: int | None = None,
    progress: Progress | None = None,
) -> list[MirrorOutcome]:
    """Probe every enabled mirror (or the named ones) once and record the round.

    Raises NotFound for an unknown name. Returns one outcome per mirror, by name.
    """
    limit = concurrency or settings.probe_concurrency
    async with sessions() as session:
        origin_trace = await origin_trace_time(session, settings, clock())
        plan = await load_probe_plan(session, settings, names, origin_trace)
    total = len(plan)
    if progress is not None:
        progress(0, total)
    gate = asyncio.Semaphore(limit)
    done = 0

    connector = make_connector(settings)

    async def endpoint(mirror: Mirror, scheme: Scheme, base: str, t: Target) -> SchemeResult:
        async with gate:
            return await probe_endpoint(
                connector,
                mirror,
                scheme,
                base,
                t,
                total_timeout=settings.probe_timeout_seconds,
                clock=clock,
            )

    async def one_mirror(mirror: Mirror, t: Target) -> MirrorProbe:
        nonlocal done
        results = await asyncio.gather(
            *(endpoint(mirror, s, base, t) for s, base in offered_schemes(mirror))
        )
        done += 1
        if progress is not None:
            progress(done, total)
        return MirrorProbe(mirror.id, mirror.name, t, tuple(results))

    probes = await asyncio.gather(*(one_mirror(p.mirror, p.target) for p in plan))
    return await apply_round(sessions, probes, settings, origin_trace, clock())
