"""Crawl a mirror's HTTP(S) directory listings: the thin I/O around :mod:`listing`.

Breadth-first over directories with a few requests in flight per mirror. Every limit fails the
scan with a reason rather than returning a partial picture (a partial listing would mark good
files missing): a page that is cut (``truncated``) or not a listing, a page larger than
``max_page_bytes`` (read by streaming, decoded bytes counted), more pages or entries than the
budget, a tree deeper than ``max_depth``, and the whole crawl running past ``total_timeout``
(an endless listing ends in one of these).

Redirects are never followed by httpx. A redirect to another directory below the mirror's base
URL is followed by hand (a few hops); one that leaves the base (another host, scheme, port or
path) fails the scan. Every connection goes through :class:`netpolicy.GuardedTransport`, so an
address the policy refuses is refused on every connection, not only when the mirror is added.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field
from urllib.parse import quote, urljoin, urlsplit

import httpx

from mirrorhub import __version__
from mirrorhub.errors import ListingError, ScanFailed
from mirrorhub.workers.listing import parse_listing
from mirrorhub.workers.netpolicy import GuardedTransport, NetPolicyError
from mirrorhub.workers.seen import SeenFile

MiB = 1024 * 1024
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
MAX_REDIRECTS = 5


@dataclass(frozen=True, slots=True)
class CrawlLimits:
    concurrency: int = 4
    request_timeout: float = 30.0
    total_timeout: float = 1800.0
    max_pages: int = 200_000
    max_entries: int = 5_000_000
    max_page_bytes: int = 8 * MiB
    max_depth: int = 64


@dataclass(slots=True)
class CrawlResult:
    files: list[SeenFile] = field(default_factory=list)
    pages: int = 0
    entries: int = 0
    mtime_precision: int = 60  # the coarsest precision any page showed


def scope_roots(scope: Sequence[str]) -> list[str]:
    """Directories to start from: the scope's sub-trees without nested duplicates ('' = all)."""
    roots: list[str] = []
    for prefix in sorted({p.strip("/") + "/" for p in scope if p.strip("/")}):
        if not any(prefix.startswith(r) for r in roots):
            roots.append(prefix)
    return roots or [""]


def within(base_url: str, url: str) -> bool:
    """Whether ``url`` is ``base_url`` or below it (same scheme, host and port)."""
    b, u = urlsplit(base_url), urlsplit(url)
    try:
        same_port = (b.port or _default_port(b.scheme)) == (u.port or _default_port(u.scheme))
    except ValueError:
        return False
    return (
        b.scheme.lower() == u.scheme.lower()
        and (b.hostname or "").lower() == (u.hostname or "").lower()
        and same_port
        and not u.query
        and u.path.startswith(b.path)
        and "/../" not in u.path + "/"
    )


def _default_port(scheme: str) -> int | None:
    return {"http": 80, "https": 443}.get(scheme.lower())


def _segment(name: str) -> str:
    return quote(name.encode("utf-8", "surrogateescape"), safe="")


class _Crawl:
    def __init__(
        self, client: httpx.AsyncClient, base_url: str, limits: CrawlLimits, roots: list[str]
    ) -> None:
        self.client = client
        self.base = base_url if base_url.endswith("/") else base_url + "/"
        self.limits = limits
        self.roots = set(roots)
        self.result = CrawlResult()
        self.queue: asyncio.Queue[str] = asyncio.Queue()
        self.seen_dirs: set[str] = set()
        self.precision = 0
        for root in roots:
            self._enqueue(root)

    def _enqueue(self, rel: str) -> None:
        if rel in self.seen_dirs:
            return
        if rel.count("/") > self.limits.max_depth:
            raise ListingError(
                f"listing deeper than {self.limits.max_depth} directories at /{rel[:200]} "
                "(endless listing?)"
            )
        self.seen_dirs.add(rel)
        self.queue.put_nowait(rel)

    async def worker(self) -> None:
        while True:
            rel = await self.queue.get()
            try:
                await self._visit(rel)
            finally:
                self.queue.task_done()

    async def _visit(self, rel: str) -> None:
        result = self.result
        result.pages += 1
        if result.pages > self.limits.max_pages:
            raise ListingError(
                f"more than {self.limits.max_pages} listing pages (endless listing?)"
            )
        url = self.base + "".join(_segment(s) + "/" for s in rel.split("/") if s)
        page = await self._fetch(url, missing_ok=rel in self.roots and rel != "")
        if page is None:
            return  # a scope sub-tree the mirror does not have: its files are missing
        body, page_url = page
        listing = parse_listing(body.decode("utf-8", "surrogateescape"), page_url)
        if listing.truncated:
            raise ListingError(f"truncated listing at {url}")
        result.entries += len(listing.entries)
        if result.entries > self.limits.max_entries:
            raise ListingError(f"more than {self.limits.max_entries} entries (endless listing?)")
        if any(e.mtime is not None for e in listing.entries):
            self.precision = max(self.precision, listing.mtime_precision)
        result.files.extend(listing.files(rel))
        for entry in listing.entries:
            if entry.is_dir:
                self._enqueue(f"{rel}{entry.name}/")

    async def _fetch(self, url: str, *, missing_ok: bool) -> tuple[bytes, str] | None:
        limit = self.limits.max_page_bytes
        for _hop in range(MAX_REDIRECTS + 1):
            try:
                async with self.client.stream("GET", url) as response:
                    status = response.status_code
                    if status in REDIRECT_STATUSES:
                        target = urljoin(url, response.headers.get("location", ""))
                        if not within(self.base, target):
                            raise ScanFailed(f"redirect off the mirror: {url} -> {target[:300]}")
                        url = target
                        continue
                    if status == 404 and missing_ok:
                        return None
                    if status != 200:
                        raise ScanFailed(f"HTTP {status} for {url}")
                    chunks: list[bytes] = []
                    size = 0
                    async for chunk in response.aiter_bytes():
                        size += len(chunk)
                        if size > limit:
                            raise ListingError(f"listing page larger than {limit} bytes: {url}")
                        chunks.append(chunk)
                    return b"".join(chunks), str(response.url)
            except httpx.TimeoutException as exc:
                raise ScanFailed(f"timeout: {url}") from exc
            except httpx.ConnectError as exc:
                raise ScanFailed(f"cannot connect: {_connect_reason(exc)} ({url})") from exc
            except httpx.HTTPError as exc:
                raise ScanFailed(f"HTTP error for {url}: {exc or type(exc).__name__}") from exc
            except NetPolicyError as exc:
                raise ScanFailed(str(exc)) from exc
        raise ScanFailed(f"more than {MAX_REDIRECTS} redirects from {url}")


def _connect_reason(exc: httpx.ConnectError) -> str:
    text = str(exc) or type(exc).__name__
    low = text.lower()
    if "refused" in low or "all connection attempts failed" in low:
        return "connection refused"
    return text


async def crawl(
    base_url: str,
    *,
    scope: Sequence[str] = (),
    allow_private: bool = False,
    limits: CrawlLimits | None = None,
    verify: bool = True,
) -> CrawlResult:
    """List every file below ``base_url`` (or below its ``scope`` sub-trees).

    Paths in the result are relative to ``base_url``. Raises ScanFailed (ListingError for a bad
    or endless listing) with a reason; never returns a partial result.
    """
    limits = limits or CrawlLimits()
    transport = GuardedTransport(
        allow_private,
        verify=verify,
        limits=httpx.Limits(
            max_connections=limits.concurrency, max_keepalive_connections=limits.concurrency
        ),
    )
    async with httpx.AsyncClient(
        transport=transport,
        follow_redirects=False,
        trust_env=False,
        timeout=httpx.Timeout(limits.request_timeout),
        headers={"User-Agent": f"mirrorhub/{__version__} (mirror scan)"},
    ) as client:
        state = _Crawl(client, base_url, limits, scope_roots(scope))
        try:
            async with asyncio.timeout(limits.total_timeout):
                await _run(state, limits.concurrency)
        except TimeoutError as exc:
            raise ScanFailed(
                f"timeout: the scan took more than {limits.total_timeout:.0f} s "
                f"({state.result.pages} pages; endless listing?)"
            ) from exc
    state.result.mtime_precision = state.precision or 60
    return state.result


async def _run(state: _Crawl, concurrency: int) -> None:
    """Run the workers until the queue drains; the first error cancels the others."""
    workers = [asyncio.create_task(state.worker()) for _ in range(concurrency)]
    joined = asyncio.create_task(state.queue.join())
    try:
        done, _pending = await asyncio.wait([joined, *workers], return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            if task is not joined:
                task.result()  # a worker only ends by raising
    finally:
        for task in [joined, *workers]:
            task.cancel()
        await asyncio.gather(joined, *workers, return_exceptions=True)
