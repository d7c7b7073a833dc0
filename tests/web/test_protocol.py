"""RedirectProtocol answers exactly as uvicorn's own httptools protocol does.

Two real uvicorn servers on loopback serve two identical dispatchers (same index, same
random seed): one with uvicorn's stock protocol, one with mirrorhub's. The same raw
requests, sent byte for byte over sockets, must get byte-identical answers (the ``date``
header aside), whether the direct path answers them or they fall through to ASGI.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from uvicorn.server import ServerState

from mirrorhub.fifo import FifoCache
from mirrorhub.geo import GeoLocator
from mirrorhub.web import protocol, redirect
from mirrorhub.web.protocol import RedirectProtocol
from mirrorhub.web.redirect import Dispatcher
from mirrorhub.web.wire import NOTED, NOTED_HEADERS
from tests.web.test_redirect import geo, make_app  # noqa: F401  (geo is a fixture)

TRUST_LOOPBACK = {"trusted_proxies": (ipaddress.ip_network("127.0.0.1/32"),)}


class CountingProtocol(RedirectProtocol):
    """Counts the answers written directly (not through ASGI)."""

    direct = 0

    def _write(self, lines: bytes, keep_alive: bool) -> None:
        super()._write(lines, keep_alive)
        CountingProtocol.direct += 1


@contextlib.contextmanager
def running(app: Dispatcher, http: Any, **options: Any) -> Iterator[int]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port: int = sock.getsockname()[1]
    config = uvicorn.Config(
        app,
        loop="uvloop",
        http=http,
        lifespan="off",
        access_log=False,
        log_level="warning",
        proxy_headers=False,  # as mirrorhub serve: the dispatcher applies its own rules
        **options,
    )
    config.server_header = False
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.01)
    try:
        yield port
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


def exchange(port: int, raw: bytes) -> bytes:
    """Send ``raw`` and read until the server closes the connection."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
        conn.sendall(raw)
        chunks = []
        while chunk := conn.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def without_date(response: bytes) -> bytes:
    lines = response.split(b"\r\n")
    return b"\r\n".join(line for line in lines if not line.lower().startswith(b"date: "))


def get(target: str, *headers: str, method: str = "GET", version: str = "1.1") -> bytes:
    lines = [f"{method} {target} HTTP/{version}", "host: dl.example", *headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


BERLIN = "x-forwarded-for: 192.0.2.10"
CLOSE = "connection: close"
# Each entry is one connection; the last request closes it.
CONVERSATIONS = [
    # the same file three times, each answered directly
    get("/pub/x.iso", BERLIN) + get("/pub/x.iso", BERLIN) + get("/pub/x.iso", BERLIN, CLOSE),
    get("/pub/x.iso", BERLIN, method="HEAD") + get("/pub/only-us.iso", CLOSE),
    get("/pub/x.iso", BERLIN, version="1.0"),  # HTTP/1.0: answered, then closed
    # HTTP/1.0 asking to be kept alive: uvicorn closes it all the same
    get("/pub/x.iso", BERLIN, "Connection: keep-alive", version="1.0"),
    get("/pub/x.iso", BERLIN, "Connection: Keep-Alive")
    + get("/pub/x.iso", BERLIN, "connection: upgrade, keep-alive")
    + get("/pub/x.iso", BERLIN, "CONNECTION: Close"),
    get("/pub/x.iso?json", BERLIN) + get("/pub/x.iso", "accept: application/json", CLOSE),
    get("/pub/x.iso?country=US", BERLIN) + get("/pub/x.iso?country=ZZ", BERLIN, CLOSE),
    get("/pub/a%20b+%C3%BC@.iso", BERLIN) + get("/pub/x.iso.meta4", BERLIN, CLOSE),
    # escaped spellings, answered directly
    get("/pub/a%20b+%C3%BC@.iso", BERLIN)
    + get("/pub/a%20b+%c3%bc%40.iso", BERLIN)
    + get("/pub/a%20b+%c3%bc%40.iso", BERLIN)
    + get("/pub/%78.iso", BERLIN)
    + get("/pub/%78.iso", BERLIN)
    + get("/pub/x.iso%23f", BERLIN, CLOSE),
    # ... and those of the inner app's paths (never direct), or of invalid ones
    get("/%2D/ping", BERLIN)
    + get("/%2D/ping", BERLIN)
    + get("/pub/%2E%2E/x.iso", BERLIN)
    + get("/pub/%2E%2E/x.iso", BERLIN)
    + get("/pub/%FF.iso", BERLIN, CLOSE),
    get("/small.txt", BERLIN) + get("/pub/", BERLIN) + get("/nope.iso", BERLIN, CLOSE),
    get("/pub/../etc/passwd") + get("/pub//x.iso", CLOSE),
    get("/-/ping", BERLIN) + get("/-", CLOSE),
    get("http://dl.example/pub/x.iso", BERLIN, CLOSE),  # absolute form
    get("/pub/x.iso#frag", BERLIN, CLOSE),
    # a fragment after the query: uvicorn leaves it out of the query string
    get("/pub/x.iso?json#x", BERLIN) + get("/pub/x.iso?https#x", BERLIN, CLOSE),
    # the Accept view of a file the direct path knows
    get("/pub/x.iso", BERLIN, "Accept: application/json", CLOSE),
    # request bodies and other methods go through ASGI
    get("/pub/x.iso", BERLIN, "content-length: 3") + b"abc" + get("/pub/x.iso", CLOSE),
    get("/pub/x.iso", BERLIN, "content-length: 0", method="POST")
    + get("/pub/x.iso", "transfer-encoding: chunked", CLOSE)
    + b"0\r\n\r\n",
    get("/pub/x.iso", BERLIN, "expect: 100-continue", "content-length: 0", CLOSE),
    # a browser's many headers, names in any case, forwarding headers twice and a range: the
    # direct path reads only the noted ones (mirrorhub.web.wire) and answers the same
    get(
        "/pub/x.iso",
        "User-Agent: Mozilla/5.0",
        "X-Forwarded-For: 203.0.113.9",
        "Accept: text/html,*/*;q=0.8",
        "Range: bytes=0-",
        "X-FORWARDED-FOR: 192.0.2.10",
        "Cookie: a=b",
    )
    + get("/pub/x.iso", "Forwarded: for=192.0.2.11;proto=https", "Accept: */*")
    + get("/pub/x.iso", "x-forwarded-for: 192.0.2.12", "X-Forwarded-Proto: https", CLOSE),
    # pipelined: several requests in one write, answered in order
    b"".join(get("/pub/x.iso", f"x-forwarded-for: 192.0.2.{n}") for n in range(10, 20))
    + get("/pub/x.iso?json", BERLIN)
    + get("/pub/x.iso", BERLIN, CLOSE),
]


def test_answers_are_byte_identical_to_uvicorns(geo: GeoLocator, tmp_path: Path) -> None:  # noqa: F811
    stock_app = make_app(geo, tmp_path, **TRUST_LOOPBACK)
    ours_app = make_app(geo, tmp_path, **TRUST_LOOPBACK)
    CountingProtocol.direct = 0
    with running(stock_app, "httptools") as stock, running(ours_app, CountingProtocol) as ours:
        for raw in CONVERSATIONS:
            expected = without_date(exchange(stock, raw))
            got = without_date(exchange(ours, raw))
            assert got == expected, raw
            assert expected.startswith(b"HTTP/1.1 ")
    # The direct path answered the repeated plain redirects (not only fallbacks).
    assert CountingProtocol.direct >= 12


def test_a_published_path_is_answered_directly_from_its_first_request(
    geo: GeoLocator,  # noqa: F811
    tmp_path: Path,
) -> None:
    """Escaped or not, the dispatcher learns a published file's target on its first request
    (``learn_direct_path``): answered directly, as uvicorn's path answers it."""
    stock_app = make_app(geo, tmp_path, **TRUST_LOOPBACK)
    app = make_app(geo, tmp_path, **TRUST_LOOPBACK)
    CountingProtocol.direct = 0
    escaped = "/pub/a%20b+%C3%BC%40.iso"
    with running(stock_app, "httptools") as stock, running(app, CountingProtocol) as port:
        first = exchange(port, get(escaped, BERLIN, CLOSE))
        assert CountingProtocol.direct == 1
        exchange(port, get("/pub/x.iso", BERLIN, CLOSE))
        assert CountingProtocol.direct == 2
        expected = exchange(stock, get(escaped, BERLIN, CLOSE))
    assert b"location: http://de1.example/pub/pub/a%20b%2B%C3%BC%40.iso\r\n" in first
    assert without_date(first) == without_date(expected)
    assert app.direct_paths.get(escaped.encode()) == "/pub/a b+\u00fc@.iso"


def test_a_learnt_target_stays_direct_when_the_path_memo_dropped_it(
    geo: GeoLocator,  # noqa: F811
    tmp_path: Path,
) -> None:
    """The dispatcher's two memos (raw target -> path, path -> published path) drop
    entries apart: a target the protocol still knows is answered directly all the same."""
    app = make_app(geo, tmp_path, **TRUST_LOOPBACK)
    app._paths = FifoCache(1)  # every other path pushes the last one out
    CountingProtocol.direct = 0
    with running(app, CountingProtocol) as port:
        for target in ["/pub/x.iso", "/small.txt"] * 3:
            exchange(port, get(target, BERLIN, CLOSE))
    assert CountingProtocol.direct == 3  # each /pub/x.iso; /small.txt comes from the origin


@pytest.mark.parametrize(
    "target",
    [
        b"/pub/",  # a directory
        b"/nope.iso",  # not published
        b"/pub/%2E%2E/x.iso",  # invalid once decoded
        b"/pub//x.iso",
        b"/pub/%FF.iso",  # not UTF-8
        b"/pub/x.iso%23f",  # "#f" is part of the name: no such file
        b"/pub/x.iso#f",  # a fragment
        b"/%2D/ping",  # the inner app's, escaped
        b"/-/ping",
        b"http://dl.example/pub/x.iso",  # absolute form
        b"pub/x.iso",
    ],
)
def test_only_published_files_are_learnt_for_the_direct_path(
    geo: GeoLocator,  # noqa: F811
    tmp_path: Path,
    target: bytes,
) -> None:
    app = make_app(geo, tmp_path, **TRUST_LOOPBACK)
    assert app.learn_direct_path(target) is None
    assert len(app.direct_paths) == 0
    assert app.learn_direct_path(b"/pub/x.iso") == "/pub/x.iso"
    assert app.direct_paths.get(b"/pub/x.iso") == "/pub/x.iso"


@contextlib.contextmanager
def connected(app: Dispatcher, **options: Any) -> Iterator[socket.socket]:
    """One client connection to the app served with our protocol (its counter reset)."""
    CountingProtocol.direct = 0
    with (
        running(app, CountingProtocol, **options) as port,
        socket.create_connection(("127.0.0.1", port), timeout=10) as conn,
    ):
        yield conn


def test_a_direct_answer_keeps_the_connection_and_the_date(
    geo: GeoLocator,  # noqa: F811
    tmp_path: Path,
) -> None:
    app = make_app(geo, tmp_path, **TRUST_LOOPBACK)
    with connected(app) as conn:
        for _ in range(3):  # keep-alive: three answers on one connection
            conn.sendall(get("/pub/x.iso", BERLIN))
            answer = conn.recv(65536)
            assert answer.startswith(b"HTTP/1.1 302 Found\r\ndate: ")
            assert b"\r\nlocation: http://de1.example/pub/pub/x.iso\r\n" in answer
            assert answer.endswith(b"\r\n\r\n") and b"connection: close" not in answer
    assert CountingProtocol.direct == 3


def answers(response: bytes) -> list[bytes]:
    """The status lines in ``response``, in order."""
    return [line for line in response.split(b"\r\n") if line.startswith(b"HTTP/1.1 ")]


@pytest.mark.parametrize("ours", [False, True])
def test_answers_held_for_the_pass_go_out_before_uvicorns_400(
    geo: GeoLocator,  # noqa: F811
    tmp_path: Path,
    ours: bool,
) -> None:
    """Direct answers and a bad request after them in one write: the 302s first, then the
    400 uvicorn writes itself (stock uvicorn loses its 302s there: its tasks write after
    the 400 closed the connection)."""
    app = make_app(geo, tmp_path, **TRUST_LOOPBACK)
    CountingProtocol.direct = 0
    with running(app, CountingProtocol if ours else "httptools") as port:
        got = exchange(port, get("/pub/x.iso", BERLIN) * 2 + b"BAD REQUEST\r\n\r\n")
    if ours:
        assert CountingProtocol.direct == 2
        assert answers(got) == [b"HTTP/1.1 302 Found"] * 2 + [b"HTTP/1.1 400 Bad Request"]
    else:
        assert answers(got) == [b"HTTP/1.1 400 Bad Request"]


def test_answers_held_for_the_pass_go_out_before_a_refused_upgrade(
    geo: GeoLocator,  # noqa: F811
    tmp_path: Path,
) -> None:
    """uvicorn's WebSocket handler refuses a handshake without a key by writing a 400 and
    closing at once, from the parser's callback: the direct answers before it go first."""
    app = make_app(geo, tmp_path, **TRUST_LOOPBACK)
    CountingProtocol.direct = 0
    refused = get("/ws", "upgrade: websocket", "connection: upgrade")  # no Sec-WebSocket-Key
    with running(app, CountingProtocol) as port:
        got = exchange(port, get("/pub/x.iso", BERLIN) * 2 + refused)
    assert CountingProtocol.direct == 2
    assert answers(got) == [b"HTTP/1.1 302 Found"] * 2 + [b"HTTP/1.1 400 Bad Request"]


def test_a_client_that_stops_sending_after_its_request_gets_the_answer(
    geo: GeoLocator,  # noqa: F811
    tmp_path: Path,
) -> None:
    """The end of input closes the connection (uvicorn keeps nothing open) once the
    transport has written what it holds."""
    app = make_app(geo, tmp_path, **TRUST_LOOPBACK)
    with connected(app) as conn:
        conn.sendall(get("/pub/x.iso", BERLIN) * 2)
        conn.shutdown(socket.SHUT_WR)
        got = b"".join(iter(lambda: conn.recv(65536), b""))
    assert CountingProtocol.direct == 2
    assert answers(got) == [b"HTTP/1.1 302 Found"] * 2


def test_a_plain_asgi_app_is_served_the_ordinary_way(tmp_path: Path) -> None:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    CountingProtocol.direct = 0
    with running(app, CountingProtocol) as port:  # type: ignore[arg-type]
        assert exchange(port, get("/pub/x.iso", CLOSE)).startswith(b"HTTP/1.1 204 ")
    assert CountingProtocol.direct == 0


@pytest.mark.parametrize("bad", [b"\r\nx-injected: 1", b"\x00"])
def test_a_header_value_uvicorn_would_refuse_is_not_written(
    geo: GeoLocator,  # noqa: F811
    tmp_path: Path,
    bad: bytes,
) -> None:
    app = make_app(geo, tmp_path, **TRUST_LOOPBACK)
    original = app.redirect_headers

    def tainted(*args: Any) -> Any:
        return [*original(*args), (b"x-test", b"value" + bad)]

    app.redirect_headers = tainted  # type: ignore[method-assign]
    CountingProtocol.direct = 0
    with running(app, CountingProtocol) as port:
        exchange(port, get("/pub/x.iso", BERLIN, CLOSE))  # refused on either path
        answer = exchange(port, get("/pub/x.iso", BERLIN, CLOSE))
    assert b"x-injected" not in answer and b"\x00" not in answer
    assert CountingProtocol.direct == 0


def closed_within(conn: socket.socket, seconds: float) -> float | None:
    """Seconds until the server closed ``conn`` (None: still open after ``seconds``)."""
    started = time.monotonic()
    conn.settimeout(seconds)
    try:
        assert conn.recv(65536) == b""
    except TimeoutError:
        return None
    return time.monotonic() - started


def test_an_idle_connection_is_closed_after_the_keep_alive_timeout(
    geo: GeoLocator,  # noqa: F811
    tmp_path: Path,
) -> None:
    app = make_app(geo, tmp_path, **TRUST_LOOPBACK)
    with connected(app, timeout_keep_alive=1) as conn:
        # Requests 0.4 s apart for 2.4 s, longer than the timeout: never idle for 1 s.
        for _ in range(7):
            conn.sendall(get("/pub/x.iso", BERLIN))
            assert conn.recv(65536).startswith(b"HTTP/1.1 302 Found\r\n")
            time.sleep(0.4)
        # 0.4 s idle already: closed about 0.6 s later, not at once and not never.
        waited = closed_within(conn, 5)
        assert waited is not None and 0.3 < waited < 2.0
    assert CountingProtocol.direct == 7


def test_a_slow_asgi_answer_after_direct_ones_is_not_cut_by_the_idle_timer(
    geo: GeoLocator,  # noqa: F811
    tmp_path: Path,
) -> None:
    app = make_app(geo, tmp_path, **TRUST_LOOPBACK)

    async def slow(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await asyncio.sleep(2.0)  # twice the keep-alive timeout
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    app.inner = slow  # serves /-/
    with connected(app, timeout_keep_alive=1) as conn:
        conn.sendall(get("/pub/x.iso", BERLIN))  # direct: arms the idle timer
        assert conn.recv(65536).startswith(b"HTTP/1.1 302 Found\r\n")
        conn.sendall(get("/-/slow", BERLIN))
        assert conn.recv(65536).startswith(b"HTTP/1.1 204 ")
        conn.sendall(get("/pub/x.iso", BERLIN))  # the connection is still open
        assert conn.recv(65536).startswith(b"HTTP/1.1 302 Found\r\n")
        # and uvicorn's own timing still closes it once idle
        waited = closed_within(conn, 5)
        assert waited is not None and 0.5 < waited < 2.5
    assert CountingProtocol.direct == 2


class FakeTransport(asyncio.Transport):
    """Keeps what is written (and logs it, with its own id, in ``log`` if given)."""

    def __init__(self, log: list[tuple[int, bytes]] | None = None) -> None:
        super().__init__()
        self.log = log if log is not None else []  # (id of the transport, bytes), all in turn

    @property
    def written(self) -> list[bytes]:
        return [data for owner, data in self.log if owner == id(self)]

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        extra = {"peername": ("127.0.0.1", 40000), "sockname": ("127.0.0.1", 8080)}
        return extra.get(name, default)

    def write(self, data: Any) -> None:
        self.log.append((id(self), bytes(data)))

    def is_closing(self) -> bool:
        return False

    def close(self) -> None:  # uvicorn closes it when the connection is lost
        pass


def connect(
    app: Any,
    loop: asyncio.AbstractEventLoop,
    log: list[tuple[int, bytes]] | None = None,
    state: ServerState | None = None,
) -> tuple[RedirectProtocol, FakeTransport]:
    """A RedirectProtocol connection serving ``app`` on ``loop`` (run by the caller, or not:
    the protocol is fed by hand), on a FakeTransport."""
    config = uvicorn.Config(
        app, http=RedirectProtocol, lifespan="off", access_log=False, proxy_headers=False
    )
    config.load()
    proto = RedirectProtocol(  # type: ignore[no-untyped-call]
        config=config, server_state=state or ServerState(), app_state={}, _loop=loop
    )
    transport = FakeTransport(log)
    proto.connection_made(transport)
    return proto, transport


class _DirectApp:
    """Answers every request directly and keeps the scopes it was given."""

    def __init__(self) -> None:
        self.scopes: list[dict[str, Any]] = []
        self.direct_paths = {b"/pub/x.iso": "/pub/x.iso"}  # as if learnt

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        raise AssertionError("not answered directly")

    def fast_redirect(self, scope: dict[str, Any]) -> bytes:
        self.scopes.append(scope)
        return b"location: http://m.example/x.iso\r\n"


def test_the_noted_headers_are_the_named_ones_in_order_per_request() -> None:
    app = _DirectApp()
    loop = asyncio.new_event_loop()
    try:
        proto, transport = connect(app, loop)
        proto.data_received(
            get(
                "/pub/x.iso",
                "User-Agent: t",
                "X-Forwarded-For: 192.0.2.1",
                "Accept: */*",
                "Range: bytes=0-",
                "X-FORWARDED-FOR: 192.0.2.2",
                "Forwarded: for=192.0.2.3",
                "X-Forwarded-Proto: https",
                "Cookie: c",
            )
            + get("/pub/x.iso", "User-Agent: t")
        )
        loop.run_until_complete(asyncio.sleep(0))  # the pass ends: the answers are written
        proto.connection_lost(None)
    finally:
        loop.close()
    first, second = app.scopes
    assert first[NOTED] == [
        (b"x-forwarded-for", b"192.0.2.1"),
        (b"accept", b"*/*"),
        (b"range", b"bytes=0-"),
        (b"x-forwarded-for", b"192.0.2.2"),
        (b"forwarded", b"for=192.0.2.3"),
        (b"x-forwarded-proto", b"https"),
    ]
    for scope in (first, second):
        assert scope[NOTED] == [h for h in scope["headers"] if h[0] in NOTED_HEADERS]
    assert second[NOTED] == [] and len(second["headers"]) == 2  # not the first one's
    assert len(transport.written) == 2 and transport.written[0].startswith(b"HTTP/1.1 302 ")


def test_every_header_a_direct_reader_looks_for_is_noted() -> None:
    read = redirect._FORWARD_HEADERS | {b"accept", b"range", b"expect"}
    assert read | set(protocol._BODY_HEADERS) <= NOTED_HEADERS


def test_direct_answers_are_written_together_after_the_loops_pass() -> None:
    app = _DirectApp()
    loop = asyncio.new_event_loop()
    log: list[tuple[int, bytes]] = []
    try:
        state = ServerState()
        protos, transports = zip(*(connect(app, loop, log, state) for _ in range(3)), strict=True)
        a, b, c = transports
        protos[0].data_received(get("/pub/x.iso"))
        protos[1].data_received(get("/pub/x.iso") * 2)
        assert log == []  # held while the loop is still handing over what it read
        loop.run_until_complete(asyncio.sleep(0))
        assert [t for t, _ in log] == [id(a), id(b), id(b)]
        assert all(data.startswith(b"HTTP/1.1 302 Found\r\n") for _, data in log)
        # A closing answer is written at once, after the answers held before it.
        log.clear()
        protos[2].data_received(get("/pub/x.iso"))
        protos[0].data_received(get("/pub/x.iso", "connection: close"))
        assert [t for t, _ in log] == [id(c), id(a)]
        assert log[1][1].endswith(b"connection: close\r\n\r\n")
        loop.run_until_complete(asyncio.sleep(0))
        assert len(log) == 2  # nothing held twice
        # The end of input and a shutdown close the transport: what is held goes first.
        for proto, transport, close in (
            (protos[1], b, protos[1].eof_received),
            (protos[2], c, protos[2].shutdown),
        ):
            log.clear()
            proto.data_received(get("/pub/x.iso"))
            close()
            assert [t for t, _ in log] == [id(transport)]
        # A pass holds MOST_HELD answers at most: a client that pipelines requests and
        # reads nothing is written to (and met by the transport's flow control) meanwhile.
        log.clear()
        greedy, _ = connect(app, loop, log, state)
        greedy.data_received(get("/pub/x.iso") * 200)
        held = len(greedy._replies.held)
        assert 0 < held < protocol.MOST_HELD and len(log) == 200 - held
        loop.run_until_complete(asyncio.sleep(0))
        assert len(log) == 200
        for proto in (*protos, greedy):
            proto.connection_lost(None)
    finally:
        loop.close()
