"""Shared helpers for the geolocation tests: sample databases and a loopback file server."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from mirrorhub.geodb import AsnEntry, CityEntry, write_asn_db, write_city_db

BERLIN = (52.52, 13.405)
PARIS = (48.8566, 2.3522)
NEW_YORK = (40.7128, -74.006)

# Documentation ranges only (RFC 5737, RFC 3849).
CITY_ENTRIES: list[CityEntry] = [
    ("192.0.2.0/24", "DE", "EU", *BERLIN),
    ("192.0.2.128/25", "FR", "EU", *PARIS),  # a subnet overriding its supernet
    ("198.51.100.0/24", "JP", "AS", None, None),  # country only: centroid fallback
    ("203.0.113.0/24", "BR", None, -23.55, -46.63),  # continent derived from the country
    ("2001:db8::/32", "US", "NA", *NEW_YORK),
]
ASN_ENTRIES: list[AsnEntry] = [
    ("192.0.2.0/24", 64500, "Example DE"),
    ("2001:db8::/32", 4200000001, "Example US"),  # a 32-bit ASN
]


def build_city(path: Path, entries: list[CityEntry] | None = None, **meta: str) -> Path:
    write_city_db(path, CITY_ENTRIES if entries is None else entries, **meta)
    return path


def build_asn(path: Path, entries: list[AsnEntry] | None = None, **meta: str) -> Path:
    write_asn_db(path, ASN_ENTRIES if entries is None else entries, **meta)
    return path


class FileServer:
    """Serves ``routes`` (path -> (status, body, extra headers)) on 127.0.0.1."""

    def __init__(self) -> None:
        self.routes: dict[str, tuple[int, bytes, dict[str, str]]] = {}
        self.requests: list[str] = []
        self.port = 0

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def add(
        self, path: str, body: bytes, status: int = 200, headers: dict[str, str] | None = None
    ) -> None:
        self.routes[path] = (status, body, headers or {})


@contextmanager
def file_server() -> Iterator[FileServer]:
    state = FileServer()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            state.requests.append(self.path)
            status, body, headers = state.routes.get(self.path, (404, b"not found", {}))
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            for name, value in headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    state.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
