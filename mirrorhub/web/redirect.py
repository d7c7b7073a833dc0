"""The hot path: a thin ASGI layer answering published paths with a 302 to a mirror.

Per request it validates the path, finds the client address and location, looks the file up
in the in-memory index, lets selection decide, and renders the 302. No SQL, no file-system
access and no template rendering on a redirect. Everything under ``/-/`` goes to the inner
app (pages, API, assets). This module must never import the database layer, the admin, the
workers or jinja2; a layering test guards that.
"""

from __future__ import annotations

import bisect
import dataclasses
import random
import time
import weakref
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

from mirrorhub import countries
from mirrorhub.domain import Client, Decision, Options, Outcome, Scheme
from mirrorhub.errors import InvalidPath
from mirrorhub.fifo import FifoCache, SpreadFifo
from mirrorhub.geo import GeoLocator
from mirrorhub.index import Index, IndexHolder
from mirrorhub.load import LoadView
from mirrorhub.paths import is_reserved, normalize_path, quote_path
from mirrorhub.proxies import parse_address, resolve_client
from mirrorhub.selection import Profile
from mirrorhub.selection.fast_path import FastBand, band_order, draw_in_band
from mirrorhub.settings import Settings
from mirrorhub.web.wire import NOTED as _NOTED
from mirrorhub.web.wire import header_lines, request_path

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

MAX_LINK_LINE = 350  # old APT breaks on header lines of 360 bytes or more
MAX_LINK_VALUE = MAX_LINK_LINE - len("Link: ")
CONTEXT_CACHE_SIZE = 65536
PATH_CACHE_SIZE = 16384  # valid request paths -> normalised (popular files ask again)
# Ready-made 302 header lines per (client ranking, file, chosen mirror): ~1 KB each.
ANSWER_CACHE_SIZE = 32768
_MISS = object()
# A module constant, not ``Outcome.MIRROR``: an enum member read off its class costs ~170 ns
# on Python 3.11 (a plain global ~17 ns), once per redirect.
_MIRROR = Outcome.MIRROR
_bisect_right = bisect.bisect_right
_FORWARD_HEADERS = frozenset({b"x-forwarded-for", b"forwarded", b"x-forwarded-proto"})
_NO_STORE = (b"cache-control", b"private, no-store")
_EMPTY = (b"content-length", b"0")
_EMPTY_BODY = {"type": "http.response.body", "body": b""}
_LINK_MIDDLES = tuple(b">; rel=duplicate; pri=%d" % n for n in range(1, 65))
_TEXT = (b"content-type", b"text/plain; charset=utf-8")
_DESCRIBEDBY_TAIL = b'.meta4>; rel=describedby; type="application/metalink4+xml"'
# Generated files next to a published one; a file of that name on the origin wins.
_SUFFIX_VIEWS = ((".meta4", "meta4"), (".sha256", "sha256"))


@dataclass(frozen=True, slots=True)
class Request:
    """What the hot path extracted from one ASGI request."""

    path: str  # normalised published path
    client: Client
    options: Options
    head: bool


class BadRequest(Exception):
    pass


class Dispatcher:
    """The outermost ASGI app. ``inner`` serves ``/-/`` and lifespan events.

    ``origin`` answers requests that must come from the origin (no fresh mirror, small or
    origin-only files, directories); ``views`` renders alternative views of a Decision
    (``?json`` ...). Both are injected so this module stays free of their dependencies.
    """

    def __init__(
        self,
        settings: Settings,
        holder: IndexHolder,
        geo: GeoLocator,
        inner: ASGIApp,
        origin: OriginHandler,
        rng: random.Random | None = None,
        views: ViewHandler | None = None,
        clock: Callable[[], float] = time.time,
        recorder: Recorder | None = None,
    ) -> None:
        self.settings = settings
        self.holder = holder
        self.geo = geo
        self.inner = inner
        self.origin = origin
        self.views = views
        self.rng = rng or random.Random()
        self.clock = clock
        self.trusted = settings.trusted_proxies
        self.max_links = settings.link_alternates
        self.recorder = recorder
        # Capacity-aware weights; replaced whole every few seconds by mirrorhub.web.loadsync.
        self.load: LoadView | None = None
        # Link rel=describedby to PATH.meta4: on the configured public URL, else a
        # path-absolute reference (RFC 8288 allows it); never from the Host header.
        self._describedby: bytes | None = None
        self._describedby_room = 0  # the longest %-encoded path that still fits the line
        if views is not None and "meta4" in views.names:
            self._describedby = b"<" + (settings.public_url or "/").encode("ascii")
            self._describedby_room = (
                MAX_LINK_VALUE - len(self._describedby) - len(_DESCRIBEDBY_TAIL)
            )
        self._contexts: FifoCache[tuple[object, ...], ClientContext] = FifoCache(CONTEXT_CACHE_SIZE)
        self._trusted_peers: dict[str, bool] = {}
        self._paths: FifoCache[str, str] = FifoCache(PATH_CACHE_SIZE)
        # For mirrorhub.web.protocol: a request's raw path -> its ``path``, for raw paths
        # ``learn_direct_path`` found valid and published. A target found here needs none
        # of the checks uvicorn makes (ASCII, %-escapes, no fragment), is not ``/-/``.
        self.direct_paths: FifoCache[bytes, str] = FifoCache(PATH_CACHE_SIZE)
        # Keyed by (profile serial, position, file stamp, chosen mirror): the serials are
        # the index's own, so the cache belongs to one Index object.
        self._answers: FifoCache[tuple[int, int, int, int], bytes | None] = FifoCache(
            ANSWER_CACHE_SIZE
        )
        self._answers_index: Index | None = None
        # Answers of band picks, kept on the index's cached bands (Index.fast_band) under
        # one bound: found by the band already in hand, without building a key.
        self._band_answers: SpreadFifo[int, bytes | None] = SpreadFifo(ANSWER_CACHE_SIZE)
        self._owns_bands = False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":  # lifespan, websocket
            await self.inner(scope, receive, send)
            return
        raw_path = scope["path"]
        if raw_path.startswith("/-/") or raw_path == "/-":
            await self.inner(scope, receive, send)
            return
        await self.answer(scope, receive, send)

    def learn_direct_path(self, raw: bytes) -> str | None:
        """For mirrorhub.web.protocol, when ``raw`` (a request target before its query) is
        not in ``direct_paths``: the ``path`` uvicorn would make of it, remembered, when
        it names a published file; else None (uvicorn's path then serves the request).

        Without this, a path took uvicorn's path until ``answer`` had seen it, and a
        request mix wider than the path caches (a large tree's downloads) mostly did:
        ~30 µs more per request. Only an origin-form target without a fragment, as
        uvicorn's ``raw_path`` would be (anything else is left to it), and a valid path:
        what ``answer`` would find in the index too.
        """
        if raw[:1] != b"/" or raw.find(b"#") >= 0:
            return None
        path = request_path(raw)
        if path is None:
            return None
        try:
            normalized = self._normalized(path)
        except InvalidPath:
            return None
        if is_reserved(normalized) or normalized not in self.holder.current.positions:
            return None
        self.direct_paths.put(raw, path)
        return path

    def _normalized(self, path: str) -> str:
        """``normalize_path(path)``, remembered (a pure function; the hot path reads
        ``_paths`` itself and calls this on a miss). Raises InvalidPath."""
        normalized = self._paths.get(path)
        if normalized is None:
            normalized = normalize_path(path)
            self._paths.put(path, normalized)
        return normalized

    def fast_redirect(self, scope: Scope) -> bytes | None:
        """The 302's header lines when this request is a plain redirect to a mirror (the
        common case), already recorded; None for everything else, which ``answer`` serves.

        Synchronous, for mirrorhub.web.protocol to call straight from the HTTP parser, and
        without side effects when it returns None: nothing recorded, and no random draw
        unless a header value could not be written as a line (never for values of ours;
        ``answer`` then decides again and uvicorn refuses the value).
        """
        method = scope["method"]
        if method != "GET" and method != "HEAD":
            return None
        recorder = self.recorder
        started = time.perf_counter() if recorder is not None else 0.0
        index = self.holder.current
        path = self._paths.get(scope["path"])
        if path is None:  # dropped since the protocol's memo kept it
            try:
                path = self._normalized(scope["path"])
            except InvalidPath:
                return None
        pos = index.positions.get(path)
        if pos is None or index.origin_flags[pos]:  # origin_reason(pos) is not None
            return None
        try:
            ctx, profile, accept = self.context(scope, index)
        except BadRequest:
            return None
        if ctx.view is not None or (
            accept and self.views and _accept_view(accept, self.views.names)
        ):
            return None
        if index is not self._answers_index:
            self._new_answers_index(index)
        found: FastBand | None = None
        if self._owns_bands:
            # Index.fast_band's cache lookup and, with no warm load view, draw_in_band's
            # plain draw, in line: two calls fewer per request.
            hit = profile.bands.get(pos)
            if hit.__class__ is FastBand and hit.stamp == index.stamps[pos]:
                found = hit
            else:
                found = index.fast_band(pos, profile)
        lines: bytes | None
        if found is not None:
            load = self.load
            if load is None or not load.warm:
                cumulative = found.cumulative
                n = _bisect_right(cumulative, self.rng.random() * cumulative[-1])
                members = found.members
                try:
                    first = members[n]
                except IndexError:  # random() * total rounded up to the total
                    first = members[-1]
            else:
                first = draw_in_band(found, profile, self.rng, load, index.sizes[pos])
            kept = found.answers.get(first, _MISS)
            if kept is _MISS:
                kept = self.band_answer(index, pos, profile, found, first)
            lines = kept  # type: ignore[assignment]
        else:
            picks = index.fast_pick(pos, profile, self.rng, self.clock(), self.load)
            if picks is None:
                return None
            first = picks[0][0]
            lines = self.answer_lines(index, pos, profile, picks)
        if lines is not None and recorder is not None:
            recorder.record(_MIRROR, profile.mirror_names[first], pos, ctx, scope, started)
        return lines

    async def answer(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Every published-path request that comes through ASGI (mirrorhub.web.protocol
        answers most plain redirects before that, with ``fast_redirect``)."""
        recorder = self.recorder
        started = time.perf_counter() if recorder is not None else 0.0
        method = scope["method"]
        if method != "GET" and method != "HEAD":
            await _plain(send, 405, b"method not allowed\n", [(b"allow", b"GET, HEAD")])
            if recorder is not None:
                recorder.record(Outcome.BAD_REQUEST, None, None, None, scope, started)
            return
        index = self.holder.current
        raw_path = scope["path"]
        try:
            path = self._normalized(raw_path)
            ctx, profile, accept = self.context(scope, index)
        except (InvalidPath, BadRequest) as exc:
            await _plain(send, 400, f"bad request: {exc}\n".encode())
            if recorder is not None:
                recorder.record(Outcome.BAD_REQUEST, None, None, None, scope, started)
            return
        pos = index.positions.get(path)
        view: str | None
        if pos is not None:
            view = ctx.view or (
                _accept_view(accept, self.views.names) if accept and self.views else None
            )
        else:
            derived = self._derived(index, path)
            if derived is None:
                request = Request(path, ctx.client, ctx.options, method == "HEAD")
                if index.is_dir(path):
                    await self.origin.directory(request, scope, receive, send)
                else:
                    await _plain(send, 404, b"not found\n", head=request.head)
                if recorder is not None:
                    recorder.record(Outcome.NOT_FOUND, None, None, ctx, scope, started)
                return
            pos, view = derived
        if view is None and index.origin_reason(pos) is None:
            picks = index.fast_pick(pos, profile, self.rng, self.clock(), self.load)
            if picks is not None:
                headers = self.redirect_headers(index, pos, profile, picks)
                await send({"type": "http.response.start", "status": 302, "headers": headers})
                await send(_EMPTY_BODY)
                if recorder is not None:
                    name = profile.mirror_names[picks[0][0]]
                    recorder.record(_MIRROR, name, pos, ctx, scope, started)
                return
        # Views, origin-only files and files no mirror holds: the full decision.
        request = Request(path, ctx.client, ctx.options, method == "HEAD")
        now = self.clock() if index.config.allow_outdated else None
        decision = index.decide(
            pos, ctx.client, ctx.options, self.rng, full=bool(view), now=now, load=self.load
        )
        if view is not None and self.views is not None:
            await self.views.render(view, decision, index.sha256_digest(pos), scope, send)
            return
        if decision.chosen is None:
            await self.origin.file(request, decision, scope, receive, send)
            if recorder is not None:
                recorder.record(Outcome.ORIGIN, None, pos, ctx, scope, started)
            return
        # Only reached if the fast and full paths ever disagree; answer correctly anyway.
        await self.redirect_decision(index, pos, decision, send)
        if recorder is not None:
            recorder.record(_MIRROR, decision.chosen.mirror.name, pos, ctx, scope, started)

    def answer_lines(
        self, index: Index, pos: int, profile: Profile, picks: tuple[list[int], bool]
    ) -> bytes | None:
        """The 302's header lines for a fast pick (``mirrorhub.web.wire.header_lines`` of
        :meth:`redirect_headers`), made once per (ranking, file, chosen mirror) and kept.

        Everything in it follows from the key: the band, and with it the alternates after
        the chosen mirror and whether it is an outdated pick (made only when the file has no
        band of current copies), is fixed by the ranking and the file's facts
        (``Index.fast_pick``); tests/web/test_redirect.py holds kept and fresh answers equal.
        ``fast_redirect`` keeps most answers on the band instead (:meth:`band_answer`); these
        are the outdated picks and those of a dispatcher that does not own the index's bands.
        """
        order = picks[0]
        if index is not self._answers_index:
            self._new_answers_index(index)
        key = (profile.serial, pos, index.stamps[pos], order[0])
        lines = self._answers.get(key, _MISS)
        if lines is _MISS:
            lines = header_lines(self.redirect_headers(index, pos, profile, picks))
            self._answers.put(key, lines)
        return lines  # type: ignore[return-value]

    def band_answer(
        self, index: Index, pos: int, profile: Profile, found: FastBand, first: int
    ) -> bytes | None:
        """The 302's header lines for ``first`` drawn from the band ``found`` of (profile,
        file at ``pos``), made and kept on the band (``fast_redirect`` reads them there).
        As with :meth:`answer_lines`, everything in them follows from the band and the
        chosen mirror; tests/web/test_redirect.py holds kept and fresh answers equal."""
        order = band_order(found, first, index.config.alternates)
        lines = header_lines(self.redirect_headers(index, pos, profile, (order, False)))
        self._band_answers.put(found.answers, first, lines)
        return lines

    def _new_answers_index(self, index: Index) -> None:
        """Kept answers belong to one Index object (its serials start again): drop the old
        ones, and keep this one's band answers on its bands unless another dispatcher
        already does (they would hold that dispatcher's Link lines)."""
        self._answers.clear()
        self._band_answers.forget()
        self._answers_index = index
        if index.answers_owner is None:
            index.answers_owner = self
        self._owns_bands = index.answers_owner is self

    def redirect_headers(
        self, index: Index, pos: int, profile: Profile, picks: tuple[list[int], bool]
    ) -> list[tuple[bytes, bytes]]:
        """The headers of the 302 for a fast pick."""
        order, maybe_outdated = picks
        quoted = index.rendered(pos)
        first = order[0]
        headers = [
            (b"location", profile.bases[first] + quoted),
            _NO_STORE,
            _EMPTY,
            (b"x-mirrorhub-mirror", profile.names[first]),
        ]
        links = profile.link_prefixes
        geo = profile.geo_suffixes
        budget = MAX_LINK_VALUE - len(quoted)
        join = b"".join
        for pri, i in enumerate(order):
            link, middle, suffix = links[i], _LINK_MIDDLES[pri], geo[i]
            if len(link) + len(middle) + len(suffix) < budget:
                headers.append((b"link", join((link, quoted, middle, suffix))))
        if self._describedby is not None and len(quoted) < self._describedby_room:
            headers.append((b"link", self._describedby + quoted + _DESCRIBEDBY_TAIL))
        if not maybe_outdated:  # an old copy has another hash
            digest = index.digest_header(pos)
            if digest is not None:
                headers.append((b"digest", digest))
        return headers

    async def redirect_decision(
        self, index: Index, pos: int, decision: Decision, send: Send
    ) -> None:
        chosen = decision.chosen
        assert chosen is not None
        headers = [
            (b"location", chosen.url.encode("ascii")),
            _NO_STORE,
            _EMPTY,
            (b"x-mirrorhub-mirror", chosen.mirror.name.encode("ascii", "replace")),
        ]
        headers.extend(link_headers(decision, self.max_links))
        quoted = index.rendered(pos)
        if self._describedby is not None and len(quoted) < self._describedby_room:
            headers.append((b"link", self._describedby + quoted + _DESCRIBEDBY_TAIL))
        digest = index.digest_header(pos) if not chosen.maybe_outdated else None
        if digest is not None:
            headers.append((b"digest", digest))
        await send({"type": "http.response.start", "status": 302, "headers": headers})
        await send(_EMPTY_BODY)

    def context(self, scope: Scope, index: Index) -> tuple[ClientContext, Profile, bytes | None]:
        """The client, options and ranking for this request, cached per client.

        The cache key holds only what decides them: the peer, the forwarding headers when
        (and only when) the peer is a trusted proxy, the scheme and the query string. A
        client cannot grow the cache with headers we ignore. Returns the client's ranking
        (which the context refers to weakly: the index's ranking cache alone bounds how
        many are kept) and the Accept header too.
        """
        peer = scope.get("client")
        host = peer[0] if peer else None
        trusted = self._trusted_peers.get(host)  # type: ignore[arg-type]
        if trusted is None:
            trusted = self._peer_trusted(host)
        accept = None
        # The parser's own (name, value) pairs: no bytes joined per request. Only the noted
        # ones when the protocol passed them (mirrorhub.web.wire).
        headers = scope.get(_NOTED)
        if headers is None:
            headers = scope["headers"]
        # One flat tuple: (host, scheme, query, then name and value of each forwarding
        # header); nested tuples cost ~200 instructions more to hash and compare.
        parts: list[object] = [host, scope.get("scheme"), scope.get("query_string", b"")]
        for header in headers:
            name = header[0]
            if name == b"accept":
                accept = header[1]
            elif trusted and name in _FORWARD_HEADERS:
                parts += header
        key = tuple(parts)
        ctx = self._contexts.get(key)
        if ctx is None:
            ctx, profile = self._new_context(scope, host, index)
            self._contexts.put(key, ctx)
            return ctx, profile, accept
        kept = ctx.ranking()
        if kept is not None and ctx.version == index.version:
            return ctx, kept, accept
        # A new index, or the ranking left the index's cache: rank (or find) it again.
        profile = index.profile(ctx.client, ctx.options)
        ctx = dataclasses.replace(ctx, version=index.version, ranking=weakref.ref(profile))
        self._contexts.put(key, ctx)
        return ctx, profile, accept

    def _new_context(
        self, scope: Scope, host: str | None, index: Index
    ) -> tuple[ClientContext, Profile]:
        addr = resolve_client(host, scope["headers"], self.trusted)
        scheme = Scheme.HTTPS if scope.get("scheme") == "https" else Scheme.HTTP
        if addr.forwarded_proto is not None:
            scheme = Scheme.HTTPS if addr.forwarded_proto == "https" else Scheme.HTTP
        query = scope.get("query_string", b"")
        options = _options(query, scheme) if query else Options(scheme=scheme)
        view = _query_view(query, self.views.names) if query and self.views else None
        client = Client(addr.address, self.geo.locate(addr.address))
        profile = index.profile(client, options)
        return ClientContext(index.version, client, options, weakref.ref(profile), view), profile

    def _peer_trusted(self, host: str | None) -> bool:
        """Whether ``host`` is a trusted proxy, worked out and remembered: ``context``
        reads ``_trusted_peers`` first and calls this only for a peer not seen yet."""
        if host is None:
            return False
        address = parse_address(host) if self.trusted else None
        known = address is not None and any(address in net for net in self.trusted)
        if len(self._trusted_peers) >= CONTEXT_CACHE_SIZE:
            self._trusted_peers.clear()
        self._trusted_peers[host] = known
        return known

    def _derived(self, index: Index, path: str) -> tuple[int, str] | None:
        """``PATH.meta4`` / ``PATH.sha256`` when only ``PATH`` is published: (its position,
        the view). Only asked when the path itself is not a published file."""
        if self.views is None:
            return None
        for suffix, view in _SUFFIX_VIEWS:
            if path.endswith(suffix) and view in self.views.names:
                pos = index.positions.get(path[: -len(suffix)])
                if pos is not None:
                    return pos, view
        return None

    def forget_clients(self) -> None:
        """Drop cached client contexts (their GeoIP answers) after a database reload."""
        self._contexts.clear()


@dataclass(frozen=True, slots=True)
class ClientContext:
    """What the dispatcher keeps per client (up to CONTEXT_CACHE_SIZE of them)."""

    version: int  # the index version ``ranking`` belongs to
    client: Client
    options: Options
    # Weak: held strongly, 65,536 contexts could keep that many ~23 KB rankings alive
    # after the index's ranking cache (MIRRORHUB_RANKING_CACHE_SIZE) dropped them.
    ranking: weakref.ref[Profile]
    view: str | None  # a view asked for in the query string


class Recorder:
    """Observes every answered request: download statistics, metrics.

    ``record`` runs on the hot path once the answer is decided (a plain redirect is recorded
    just before its 302 is written, everything else after): it must be cheap (count in
    memory, flush elsewhere) and must never raise. ``mirror`` is the chosen mirror's name,
    ``pos`` the file's index position, ``ctx`` the client context (None for a bad request),
    ``started`` the request's ``time.perf_counter()`` start. ``scope`` is uvicorn's ASGI
    scope, except for redirects mirrorhub.web.protocol answers directly: those get a dict
    with only ``method``, ``scheme``, ``path``, ``query_string``, ``headers`` and
    ``client``, plus ``mirrorhub.web.wire.NOTED``: those of the headers named in
    ``wire.NOTED_HEADERS``, in order (read those there when present: the same answer, fewer
    headers to loop over). Read nothing else, and do not keep it.
    """

    def record(
        self,
        outcome: Outcome,
        mirror: str | None,
        pos: int | None,
        ctx: ClientContext | None,
        scope: Scope,
        started: float,
    ) -> None:
        raise NotImplementedError


class OriginHandler:
    """Interface for answering from the origin; see mirrorhub.web.origin."""

    async def file(
        self, request: Request, decision: Decision, scope: Scope, receive: Receive, send: Send
    ) -> None:
        raise NotImplementedError

    async def directory(self, request: Request, scope: Scope, receive: Receive, send: Send) -> None:
        raise NotImplementedError


class ViewHandler:
    """Interface for rendering a Decision other than as a 302; see mirrorhub.web.views."""

    names: frozenset[str] = frozenset()

    async def render(
        self, view: str, decision: Decision, digest: bytes | None, scope: Scope, send: Send
    ) -> None:
        raise NotImplementedError


def _query_view(query: bytes, names: frozenset[str]) -> str | None:
    """``?json``-style parameters ask for a view of the decision instead of a 302."""
    for name, _ in parse_qsl(query.decode("latin-1"), keep_blank_values=True):
        if name in names:
            return name
    return None


def _accept_view(accept: bytes, names: frozenset[str]) -> str | None:
    # ``find``, not ``in``: see mirrorhub.web.protocol (every browser sends Accept).
    if "json" in names and accept.find(b"application/json") >= 0:
        return "json"
    if "meta4" in names and accept.find(b"application/metalink4+xml") >= 0:
        return "meta4"
    return None


def _options(query: bytes, scheme: Scheme) -> Options:
    try:
        pairs = parse_qsl(query.decode("ascii"), keep_blank_values=True, strict_parsing=False)
    except UnicodeDecodeError:
        raise BadRequest("query string is not ASCII") from None
    country: str | None = None
    avoid: frozenset[str] = frozenset()
    https_only = False
    for name, value in pairs:
        if name == "country":
            country = _country(value)
        elif name == "avoid":
            avoid = frozenset(_country(v) for v in value.split(",") if v)
        elif name == "https":
            if value not in ("", "0", "1", "true", "false", "yes", "no"):
                raise BadRequest("https must be 0 or 1")
            https_only = value in ("", "1", "true", "yes")
    return Options(scheme=scheme, https_only=https_only, country=country, avoid=avoid)


def _country(value: str) -> str:
    code = value.strip().upper()
    if not countries.is_country(code):
        raise BadRequest("not an ISO 3166 country code")
    return code


def link_headers(decision: Decision, limit: int) -> list[tuple[bytes, bytes]]:
    """RFC 6249 ``Link: rel=duplicate`` lines, one per mirror, each kept short for old APT."""
    out = []
    for pri, cand in enumerate(decision.ranked[: limit + 1], start=1):
        value = f"<{cand.url}>; rel=duplicate; pri={pri}"
        if cand.mirror.country:
            value += f"; geo={cand.mirror.country.lower()}"
        if len(value) + len("Link: ") < MAX_LINK_LINE:
            out.append((b"link", value.encode("ascii")))
    return out


async def _plain(
    send: Send,
    status: int,
    body: bytes,
    extra: list[tuple[bytes, bytes]] | None = None,
    head: bool = False,
) -> None:
    headers = [_TEXT, _NO_STORE, (b"content-length", str(len(body)).encode())]
    if extra:
        headers.extend(extra)
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": b"" if head else body})


def origin_location(origin_url: str, path: str) -> bytes:
    return (origin_url + quote_path(path)).encode("ascii")
