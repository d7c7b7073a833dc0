"""A small TCP proxy that tests can cut and restore, to take PostgreSQL away from processes.

It runs its own asyncio loop in a thread, so synchronous tests (driving subprocesses) and
async tests can both use it:

    with TcpProxy("127.0.0.1", 5432) as proxy:     # proxy.port forwards to 127.0.0.1:5432
        proxy.cut()      # abort every connection (RST) and refuse new ones at once
        proxy.cut(hang=True)  # or: accept new connections but never answer (a black hole)
        proxy.restore()

Cutting never touches the shared PostgreSQL server: only the sockets through this proxy.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from types import TracebackType


class TcpProxy:
    def __init__(self, target_host: str, target_port: int, listen_host: str = "127.0.0.1"):
        self.target = (target_host, target_port)
        self.listen_host = listen_host
        self.port = 0
        self.connections = 0  # accepted and forwarded, for assertions
        self._mode = "up"  # "up" | "reset" | "hang"
        self._writers: set[asyncio.StreamWriter] = set()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.Server | None = None

    # --- control (from any thread) ---

    def start(self) -> TcpProxy:
        self._thread.start()
        self._call(self._start())
        return self

    def cut(self, *, hang: bool = False) -> None:
        self._call(self._cut("hang" if hang else "reset"))

    def restore(self) -> None:
        """Forward again; connections held silent by ``hang`` are reset (as a healed link
        answers a retransmission to a connection the server never saw)."""
        self._call(self._restore())

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._call(self._close())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        self._loop.close()

    def __enter__(self) -> TcpProxy:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _call(self, coro: object) -> None:
        asyncio.run_coroutine_threadsafe(coro, self._loop).result(10)  # type: ignore[arg-type]

    # --- inside the proxy's loop ---

    async def _start(self) -> None:
        self._server = await asyncio.start_server(self._handle, self.listen_host, 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _restore(self) -> None:
        if self._mode == "hang":
            await self._cut("hang")  # drops the silent ones (nothing else is open now)
        self._mode = "up"

    async def _cut(self, mode: str) -> None:
        self._mode = mode
        for writer in list(self._writers):
            writer.transport.abort()  # RST now, as when a link or a server goes away
        self._writers.clear()

    async def _close(self) -> None:
        await self._cut("reset")
        if self._server is not None:
            self._server.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._mode == "reset":
            writer.transport.abort()
            return
        if self._mode == "hang":
            self._writers.add(writer)  # held open, silent, until restore/cut/close
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.transport.abort()
            return
        self.connections += 1
        self._writers.update((writer, up_writer))
        await asyncio.gather(
            self._pipe(reader, up_writer), self._pipe(up_reader, writer), return_exceptions=True
        )
        for w in (writer, up_writer):
            self._writers.discard(w)
            w.transport.abort()

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        finally:
            writer.transport.abort()  # one side gone: drop the other too
