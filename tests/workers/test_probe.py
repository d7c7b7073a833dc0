"""Health probes against real servers on loopback, on SQLite and PostgreSQL.

Each fake mirror is a small asyncio HTTP server in the test's own event loop, bound to its own
127.0.0.x address, whose behaviour the test picks (healthy, 500, hanging, redirecting,
endless body ...) and can stop and restart on the same port.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from mirrorhub.db.index_load import load_index_source
from mirrorhub.db.models import (
    MirrorFileDiffRow,
    MirrorRow,
    MirrorStateRow,
    OriginFileRow,
    ProbeResultRow,
)
from mirrorhub.db.repositories import current_version
from mirrorhub.domain import Client, Health, Options, Reason, Scheme
from mirrorhub.index import IndexConfig, build_index
from mirrorhub.settings import Settings
from mirrorhub.workers.probe import probe_mirrors

TRACE = "project/trace/mirrorhub"
Sessions = async_sessionmaker[AsyncSession]


# --- fake mirrors -----------------------------------------------------------------------


@dataclass
class FakeMirror:
    """An HTTP/1.1 server on ``host``; ``mode`` picks how it answers."""

    host: str
    mode: str = "tree"
    tree: dict[str, bytes] = field(default_factory=dict)
    port: int = 0
    requests: list[str] = field(default_factory=list)
    redirect_to: str = ""
    _server: asyncio.Server | None = None
    _stopping: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/"

    async def start(self) -> FakeMirror:
        self._stopping = asyncio.Event()
        self._server = await asyncio.start_server(self._handle, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            self._stopping.set()  # releases hanging and endless answers
            await self._server.wait_closed()
            self._server = None

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            first = await reader.readexactly(1)
            if first == b"\x16":  # a TLS ClientHello on this plain port: answer like nginx
                writer.write(b"HTTP/1.1 400 Bad Request\r\nConnection: close\r\n\r\n")
                await writer.drain()
                return
            head = first + await reader.readuntil(b"\r\n\r\n")
            path = head.split(b" ", 2)[1].decode()
            self.requests.append(path)
            await self._answer(path, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    async def _answer(self, path: str, writer: asyncio.StreamWriter) -> None:
        mode = self.mode
        if mode == "hang":
            await self._stopping.wait()
            return
        if mode.startswith("status "):
            return await _send(writer, int(mode.split()[1]), b"oops")
        if mode == "elsewhere":
            return await _send(writer, 302, b"", location=self.redirect_to + path.lstrip("/"))
        if mode == "moved" and not path.startswith("/moved/"):
            return await _send(writer, 301, b"", location="/moved" + path)
        if mode == "moved":
            path = path[len("/moved") :]
        if mode == "endless":
            writer.write(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n")
            while not self._stopping.is_set():
                writer.write(b"1" * 4096)
                await writer.drain()
        rel = path.lstrip("/")
        if rel == "":
            return await _send(writer, 200, b"<html>index</html>")
        if rel in self.tree:
            return await _send(writer, 200, self.tree[rel])
        return await _send(writer, 404, b"not found")


async def _send(
    writer: asyncio.StreamWriter, status: int, body: bytes, location: str | None = None
) -> None:
    head = f"HTTP/1.1 {status} X\r\nContent-Length: {len(body)}\r\nConnection: close\r\n"
    if location is not None:
        head += f"Location: {location}\r\n"
    writer.write(head.encode() + b"\r\n" + body)
    await writer.drain()


@pytest.fixture
async def servers() -> AsyncIterator[Callable[..., FakeMirror]]:
    started: list[FakeMirror] = []

    def make(host: str, mode: str = "tree", **kwargs: object) -> FakeMirror:
        server = FakeMirror(host, mode, **kwargs)  # type: ignore[arg-type]
        started.append(server)
        return server

    yield make
    for server in started:
        await server.stop()


def closed_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


# --- database helpers -------------------------------------------------------------------


def settings_for(db_url: str, origin: Path | None, **overrides: object) -> Settings:
    values: dict[str, object] = {
        "database_url": db_url,
        "origin_dir": origin,
        "allow_private_mirrors": True,
        "probe_timeout_seconds": 0.5,
        "probe_connect_timeout_seconds": 0.5,
        "trace_file": TRACE,
    }
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]


def write_origin_trace(root: Path, content: bytes) -> Path:
    path = root / TRACE
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    return root


async def add_mirror(
    sessions: Sessions,
    name: str,
    http_url: str | None,
    https_url: str | None = None,
    *,
    scanned: bool = True,
    scope: str = "",
) -> int:
    now = datetime.now(UTC)
    async with sessions() as session, session.begin():
        row = MirrorRow(
            name=name, http_url=http_url, https_url=https_url, scope=scope,
            created_at=now, updated_at=now,
        )  # fmt: skip
        session.add(row)
        await session.flush()
        if scanned:
            session.add(MirrorStateRow(mirror_id=row.id, last_good_scan=time.time()))
        return row.id


async def state_of(sessions: Sessions, name: str) -> MirrorStateRow:
    async with sessions() as session:
        row = await session.scalar(
            select(MirrorStateRow).join(MirrorRow).where(MirrorRow.name == name)
        )
        assert row is not None
        return row


async def results_of(sessions: Sessions, name: str) -> list[ProbeResultRow]:
    async with sessions() as session:
        rows = await session.scalars(
            select(ProbeResultRow)
            .join(MirrorRow)
            .where(MirrorRow.name == name)
            .order_by(ProbeResultRow.id)
        )
        return list(rows.all())


async def exclusion(sessions: Sessions, name: str) -> Reason | None:
    """The reason the dispatcher's index would exclude ``name`` for every request."""
    async with sessions() as session:
        source = await load_index_source(session)
    index = build_index(source, IndexConfig())
    (slot,) = [s for s in index.slots if s.mirror.name == name]
    return slot.static_reason


async def version(sessions: Sessions) -> int:
    async with sessions() as session:
        return await current_version(session)


# --- a round over every kind of failure -------------------------------------------------


async def test_round_classifies_every_failure(
    db_url: str, sessions: Sessions, tmp_path: Path, servers: Callable[..., FakeMirror]
) -> None:
    now = time.time()
    stamp = str(int(now) - 60).encode() + b"\n"
    origin = write_origin_trace(tmp_path / "origin", stamp)
    healthy = await servers("127.0.0.2", tree={TRACE: stamp}).start()
    other = await servers("127.0.0.7").start()
    mirrors = {
        "healthy": (healthy.url, None),
        "err500": ((await servers("127.0.0.3", "status 500").start()).url, None),
        "hangs": ((await servers("127.0.0.4", "hang").start()).url, None),
        "refused": (f"http://127.0.0.5:{closed_port('127.0.0.5')}/", None),
        "elsewhere": (
            (await servers("127.0.0.6", "elsewhere", redirect_to=other.url).start()).url,
            None,
        ),
        "endless": ((await servers("127.0.0.8", "endless").start()).url, None),
        "garbage": ((await servers("127.0.0.9", tree={TRACE: b"yesterday\n"}).start()).url, None),
        "moved": ((await servers("127.0.0.10", "moved", tree={TRACE: stamp}).start()).url, None),
        # HTTPS on a plain-HTTP port: the TLS handshake fails; HTTP works.
        "badtls": (healthy.url, healthy.url.replace("http://", "https://")),
    }
    for name, (http, https) in mirrors.items():
        await add_mirror(sessions, name, http, https)
    before = await version(sessions)

    started = time.monotonic()
    outcomes = await probe_mirrors(sessions, settings_for(db_url, origin))
    elapsed = time.monotonic() - started
    assert elapsed < 3, "timeouts must bound the round, and endpoints run in parallel"

    errors = {o.probe.name: [r.error for r in o.probe.results] for o in outcomes}
    assert errors == {
        "healthy": [""],
        "err500": ["http 500"],
        "hangs": ["timeout"],
        "refused": ["refused"],
        "elsewhere": ["redirect elsewhere"],
        "endless": ["too large"],
        "garbage": ["bad trace file"],
        "moved": [""],
        "badtls": ["", "tls"],
    }
    assert other.requests == [], "a redirect off the mirror is never followed"

    rows = await results_of(sessions, "healthy")
    assert [(r.scheme, r.ok, r.status, r.error, r.samples) for r in rows] == [
        ("http", True, 200, "", 1)
    ]
    assert rows[0].latency_ms is not None and rows[0].latency_ms < 1000
    (row500,) = await results_of(sessions, "err500")
    assert (row500.ok, row500.status) == (False, 500)
    assert [(r.scheme, r.ok) for r in await results_of(sessions, "badtls")] == [
        ("http", True),
        ("https", False),
    ]

    healthy_state = await state_of(sessions, "healthy")
    assert healthy_state.health == "up"
    assert healthy_state.trace_time == int(now) - 60
    assert healthy_state.lag_seconds == 0 and not healthy_state.lagging
    for name in ("err500", "hangs", "refused"):
        state = await state_of(sessions, name)
        # One failed round is not enough to take a mirror down.
        assert (state.health, state.probe_failures, state.probe_successes) == ("unknown", 1, 0)
        assert state.scheme_health == "http=unknown:1:0"
    badtls = await state_of(sessions, "badtls")
    # Health is per scheme: its working HTTP makes it UP; the round still counts as failed.
    assert (badtls.health, badtls.probe_failures, badtls.probe_successes) == ("up", 1, 0)
    assert badtls.scheme_health == "http=up:0:1 https=unknown:1:0"
    assert badtls.last_probe_error == "https: tls"
    # unknown -> up (twice) changed health: the index is told once, in one transaction.
    assert await version(sessions) == before + 1


async def test_down_after_two_failed_rounds_up_after_two_good(
    db_url: str, sessions: Sessions, tmp_path: Path, servers: Callable[..., FakeMirror]
) -> None:
    stamp = str(int(time.time()) - 60).encode()
    origin = write_origin_trace(tmp_path / "origin", stamp)
    mirror = await servers("127.0.0.2", tree={TRACE: stamp}).start()
    await add_mirror(sessions, "m", mirror.url)
    settings = settings_for(db_url, origin)

    async def round_() -> tuple[str, Reason | None, int]:
        (outcome,) = await probe_mirrors(sessions, settings, ["m"])
        return outcome.health, await exclusion(sessions, "m"), await version(sessions)

    health, reason, v1 = await round_()
    assert (health, reason) == (Health.UP, None)

    await mirror.stop()
    health, reason, v2 = await round_()
    assert (health, reason, v2) == (Health.UP, None, v1), "one failure flips nothing"
    health, reason, v3 = await round_()
    assert (health, reason, v3) == (Health.DOWN, Reason.DOWN, v1 + 1)
    health, reason, v4 = await round_()
    assert (health, v4) == (Health.DOWN, v3), "still down: no new version"
    assert (await state_of(sessions, "m")).probe_failures == 3

    await mirror.start()  # same port
    health, reason, v5 = await round_()
    assert (health, reason, v5) == (Health.DOWN, Reason.DOWN, v3)
    health, reason, v6 = await round_()
    assert (health, reason, v6) == (Health.UP, None, v3 + 1)
    assert [r.ok for r in await results_of(sessions, "m")] == [
        True, False, False, False, True, True,
    ]  # fmt: skip


async def reasons_by_scheme(sessions: Sessions, name: str) -> dict[Scheme, Reason | None]:
    """Why the dispatcher's index excludes ``name`` for an HTTP and an HTTPS request."""
    async with sessions() as session:
        source = await load_index_source(session)
    index = build_index(source, IndexConfig())
    client = Client(ipaddress.ip_address("192.0.2.1"))
    out: dict[Scheme, Reason | None] = {}
    for scheme in Scheme:
        profile = index.profile(client, Options(scheme=scheme))
        found = [e.reason for e in profile.excluded if e.mirror.name == name]
        out[scheme] = found[0] if found else None
        if not found:
            (ranked,) = [r for r in profile.ranked if r.slot.mirror.name == name]
            assert ranked.base.startswith(f"{scheme}://"), "the request's own scheme"
    return out


HTTPS_DOWN = frozenset({Scheme.HTTPS})
BOTH_DOWN = frozenset({Scheme.HTTP, Scheme.HTTPS})


async def test_broken_https_keeps_http_clients(
    db_url: str, sessions: Sessions, tmp_path: Path, servers: Callable[..., FakeMirror]
) -> None:
    stamp = str(int(time.time()) - 60).encode()
    origin = write_origin_trace(tmp_path / "origin", stamp)
    http = await servers("127.0.0.2", tree={TRACE: stamp}).start()
    https = f"https://127.0.0.3:{closed_port('127.0.0.3')}/"  # refuses
    await add_mirror(sessions, "m", http.url, https)
    settings = settings_for(db_url, origin)
    v0 = await version(sessions)

    async def round_() -> tuple[Health, frozenset[Scheme], int]:
        (o,) = await probe_mirrors(sessions, settings, ["m"])
        assert [(r.scheme, r.error) for r in o.probe.results][1:] == [(Scheme.HTTPS, "refused")]
        return o.health, o.down_schemes, await version(sessions)

    assert await round_() == (Health.UP, frozenset(), v0 + 1)  # unknown -> up
    assert await reasons_by_scheme(sessions, "m") == {Scheme.HTTP: None, Scheme.HTTPS: None}
    assert await round_() == (Health.UP, HTTPS_DOWN, v0 + 2)  # a dispatcher change
    state = await state_of(sessions, "m")
    assert state.scheme_health == "http=up:0:2 https=down:2:0"
    assert (state.probe_failures, state.probe_successes) == (2, 0)
    assert await exclusion(sessions, "m") is None, "not excluded for every request"
    assert await reasons_by_scheme(sessions, "m") == {
        Scheme.HTTP: None,
        Scheme.HTTPS: Reason.SCHEME_DOWN,
    }
    assert await round_() == (Health.UP, HTTPS_DOWN, v0 + 2), "nothing new: no bump"

    # HTTP fails too: after two rounds every scheme is down, and so is the mirror.
    await http.stop()
    assert await round_() == (Health.UP, HTTPS_DOWN, v0 + 2)
    assert await round_() == (Health.DOWN, BOTH_DOWN, v0 + 3)
    assert await exclusion(sessions, "m") == Reason.DOWN
    # HTTP back (same port): two good rounds bring the mirror back for HTTP requests.
    await http.start()
    assert await round_() == (Health.DOWN, BOTH_DOWN, v0 + 3)
    assert await round_() == (Health.UP, HTTPS_DOWN, v0 + 4)
    assert await reasons_by_scheme(sessions, "m") == {
        Scheme.HTTP: None,
        Scheme.HTTPS: Reason.SCHEME_DOWN,
    }


# --- lag --------------------------------------------------------------------------------


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


H = 3600.0


async def test_lag_from_the_mirror_trace_file(
    db_url: str, sessions: Sessions, tmp_path: Path, servers: Callable[..., FakeMirror]
) -> None:
    t0 = float(int(time.time()) - 20 * 3600)  # the origin's latest publish
    origin = write_origin_trace(tmp_path / "origin", b"%d\n" % t0)
    yesterday = datetime.fromtimestamp(t0 - 24 * H, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    mirror = await servers("127.0.0.2", tree={TRACE: yesterday.encode()}).start()
    await add_mirror(sessions, "m", mirror.url)
    settings = settings_for(db_url, origin, max_lag_seconds=12 * H)
    clock = Clock(t0 + H)

    # A day behind in trace time, but it only missed the publish of an hour ago.
    (o,) = await probe_mirrors(sessions, settings, clock=clock)
    assert (o.lag_seconds, o.lagging) == (H, False)
    state = await state_of(sessions, "m")
    assert state.trace_time == t0 - 24 * H
    v1 = await version(sessions)

    clock.now = t0 + 13 * H  # still not synced 13 h after the publish
    (o,) = await probe_mirrors(sessions, settings, clock=clock)
    assert (o.lag_seconds, o.lagging, o.health) == (13 * H, True, Health.UP)
    assert await exclusion(sessions, "m") == Reason.LAGGING
    assert await version(sessions) == v1 + 1

    mirror.tree[TRACE] = b"%d" % t0  # the mirror syncs
    clock.now += 300
    (o,) = await probe_mirrors(sessions, settings, clock=clock)
    assert (o.lag_seconds, o.lagging) == (0, False)
    assert await exclusion(sessions, "m") is None
    assert await version(sessions) == v1 + 2
    state = await state_of(sessions, "m")
    assert state.trace_time == t0 and state.trace_checked_at is not None


async def test_origin_trace_from_the_origin_scan_without_a_local_tree(
    db_url: str, sessions: Sessions, servers: Callable[..., FakeMirror]
) -> None:
    t0 = float(int(time.time()) - 600)
    async with sessions() as session, session.begin():
        session.add(OriginFileRow(path=TRACE, size=11, mtime=int(t0), changed_at=t0))
    mirror = await servers("127.0.0.2", tree={TRACE: b"%d\n" % (t0 - 600)}).start()
    await add_mirror(sessions, "m", mirror.url)
    (o,) = await probe_mirrors(sessions, settings_for(db_url, None), clock=Clock(t0 + 60))
    assert o.probe.target.is_trace
    assert o.lag_seconds == 60


async def test_no_origin_trace_means_no_lag_and_another_target(
    db_url: str, sessions: Sessions, tmp_path: Path, servers: Callable[..., FakeMirror]
) -> None:
    # The origin has no trace file (yet): mirrors are not asked for one (they would 404).
    async with sessions() as session, session.begin():
        a = OriginFileRow(path="pub/a.txt", size=1, mtime=1, changed_at=1.0)
        b = OriginFileRow(path="pub/b.txt", size=2, mtime=1, changed_at=1.0)
        c = OriginFileRow(path="pub/big.iso", size=10**9, mtime=1, changed_at=1.0)
        session.add_all([a, b, c])
    scanned = await servers("127.0.0.2", tree={"pub/a.txt": b"a", "pub/b.txt": b"bb"}).start()
    fresh = await servers("127.0.0.3").start()
    scanned_id = await add_mirror(sessions, "scanned", scanned.url)
    await add_mirror(sessions, "fresh", fresh.url, scanned=False)
    async with sessions() as session, session.begin():
        session.add(MirrorFileDiffRow(mirror_id=scanned_id, file_id=a.id, kind="missing"))
    origin = tmp_path / "origin"
    origin.mkdir()
    outcomes = await probe_mirrors(sessions, settings_for(db_url, origin))
    assert scanned.requests == ["/pub/b.txt"], "smallest file it holds"
    assert fresh.requests == ["/"], "never scanned: its base URL"
    assert all(o.ok for o in (o.probe for o in outcomes))
    assert all(o.lag_seconds is None and not o.lagging for o in outcomes)


# --- safety and scale -------------------------------------------------------------------


async def test_private_addresses_are_refused_before_connecting(
    db_url: str, sessions: Sessions, tmp_path: Path, servers: Callable[..., FakeMirror]
) -> None:
    stamp = str(int(time.time())).encode()
    origin = write_origin_trace(tmp_path / "origin", stamp)
    mirror = await servers("127.0.0.2", tree={TRACE: stamp}).start()
    await add_mirror(sessions, "m", mirror.url)
    settings = settings_for(db_url, origin, allow_private_mirrors=False)
    (o,) = await probe_mirrors(sessions, settings)
    assert [r.error for r in o.probe.results] == ["private address"]
    assert mirror.requests == []


async def test_unknown_name(db_url: str, sessions: Sessions) -> None:
    from mirrorhub.errors import NotFound

    with pytest.raises(NotFound, match="nope"):
        await probe_mirrors(sessions, settings_for(db_url, None), ["nope"])


async def test_many_endpoints_with_dead_ones_finish_within_a_few_timeouts(
    db_url: str, sessions: Sessions, tmp_path: Path, servers: Callable[..., FakeMirror]
) -> None:
    stamp = str(int(time.time())).encode()
    origin = write_origin_trace(tmp_path / "origin", stamp)
    good = await servers("127.0.0.2", tree={TRACE: stamp}).start()
    hang = await servers("127.0.0.3", "hang").start()
    dead = f"http://127.0.0.4:{closed_port('127.0.0.4')}/"
    async with sessions() as session, session.begin():
        now = datetime.now(UTC)
        for i in range(300):
            url = (good.url, hang.url, dead)[i % 3]
            session.add(MirrorRow(name=f"m{i:03d}", http_url=url, created_at=now, updated_at=now))
    started = time.monotonic()
    outcomes = await probe_mirrors(sessions, settings_for(db_url, origin), concurrency=200)
    elapsed = time.monotonic() - started
    assert len(outcomes) == 300
    kinds = sorted({r.error for o in outcomes for r in o.probe.results})
    assert kinds == ["", "refused", "timeout"]
    # 100 hanging endpoints all fit in one wave of 200: about one timeout (0.5 s).
    assert elapsed < 4
    async with sessions() as session:
        rows = (await session.scalars(select(ProbeResultRow.id))).all()
    assert len(rows) == 300
