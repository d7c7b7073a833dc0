"""Download the free monthly DB-IP Lite city and ASN databases and install them atomically.

For each database: format the URL template with this month (``{year}``, ``{month}``), fall
back to last month on 404 (a month's file appears some days into the month), stream the body
to a temporary file next to the destination (gunzipping ``.gz`` URLs, capped in size), open
the result with maxminddb and look one address up, then ``os.replace`` it into place. Both
files are verified before either is installed, so a failure leaves the previous pair
untouched. A running :class:`mirrorhub.geo.GeoLocator` notices the new files by their stat.
"""

from __future__ import annotations

import os
import tempfile
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit

import httpx

from mirrorhub.errors import GeoIPError
from mirrorhub.geo import open_reader
from mirrorhub.settings import Settings

MAX_BYTES = 1 << 30  # refuse anything bigger than 1 GiB, compressed or not
CHUNK = 1 << 20
CITY_FILE = "dbip-city-lite.mmdb"
ASN_FILE = "dbip-asn-lite.mmdb"


@dataclass(frozen=True, slots=True)
class Installed:
    kind: str  # "city" or "ASN"
    path: Path
    url: str
    size: int
    database_type: str
    build_epoch: int


@dataclass(frozen=True, slots=True)
class _Job:
    kind: str
    template: str
    dest: Path


def destination_paths(settings: Settings, dest: Path | None = None) -> tuple[Path, Path]:
    """Where the city and ASN databases go: ``dest`` if given, else the configured files,
    else ``geoip_dir``."""
    if dest is not None:
        return dest / CITY_FILE, dest / ASN_FILE
    return settings.geoip_city_path, settings.geoip_asn_path


def month_urls(template: str, now: datetime) -> list[str]:
    """This month's URL, then last month's (when the template depends on the month)."""
    previous = (now.year, now.month - 1) if now.month > 1 else (now.year - 1, 12)
    urls = []
    for year, month in ((now.year, now.month), previous):
        try:
            url = template.format(year=year, month=month)
        except (KeyError, IndexError, ValueError) as exc:
            raise GeoIPError(f"bad GeoIP URL template {template!r}: {exc}") from None
        if url not in urls:
            urls.append(url)
    return urls


def fetch_databases(
    settings: Settings,
    *,
    city_url: str | None = None,
    asn_url: str | None = None,
    dest: Path | None = None,
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    client: httpx.Client | None = None,
    max_bytes: int = MAX_BYTES,
) -> list[Installed]:
    """Download, verify and install both databases; raise GeoIPError and keep the old ones
    on any failure."""
    city_path, asn_path = destination_paths(settings, dest)
    jobs = [
        _Job("city", city_url or settings.geoip_city_url, city_path),
        _Job("ASN", asn_url or settings.geoip_asn_url, asn_path),
    ]
    now = clock()
    own_client = client is None
    http = client or httpx.Client(timeout=httpx.Timeout(30.0), follow_redirects=True)
    staged: list[Path] = []
    ready: list[tuple[Path, Installed]] = []
    try:
        for job in jobs:
            try:
                job.dest.parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise GeoIPError(f"cannot create {job.dest.parent}: {exc.strerror}") from None
            tmp, url = _download_first(http, job, month_urls(job.template, now), max_bytes)
            staged.append(tmp)
            database_type, build_epoch = _verify(tmp, job.kind, url)
            size = tmp.stat().st_size
            ready.append(
                (tmp, Installed(job.kind, job.dest, url, size, database_type, build_epoch))
            )
        for tmp, installed in ready:
            os.chmod(tmp, 0o644)  # mkstemp makes 0600; the server may run as another user
            os.replace(tmp, installed.path)
        return [installed for _, installed in ready]
    finally:
        for tmp in staged:
            tmp.unlink(missing_ok=True)  # a no-op once installed
        if own_client:
            http.close()


def _download_first(
    http: httpx.Client, job: _Job, urls: list[str], max_bytes: int
) -> tuple[Path, str]:
    """Download the first URL that exists; 404 moves on to the next one."""
    for url in urls:
        tmp = _download(http, url, job.dest, max_bytes)
        if tmp is not None:
            return tmp, url
    tried = " or ".join(urls)
    raise GeoIPError(f"no GeoIP {job.kind} database at {tried} (HTTP 404)")


def _download(http: httpx.Client, url: str, dest: Path, max_bytes: int) -> Path | None:
    """Stream ``url`` into a temporary file beside ``dest``; None on 404."""
    gz = urlsplit(url).path.endswith(".gz")
    fd, name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    tmp = Path(name)
    try:
        with os.fdopen(fd, "wb") as out, http.stream("GET", url) as response:
            if response.status_code == 404:
                tmp.unlink()
                return None
            if response.status_code != 200:
                raise GeoIPError(f"cannot download {url}: HTTP {response.status_code}")
            chunks = _capped(response.iter_bytes(CHUNK), max_bytes, url)
            for data in _gunzip(chunks, max_bytes, url) if gz else chunks:
                out.write(data)
        return tmp
    except httpx.HTTPError as exc:
        tmp.unlink(missing_ok=True)
        raise GeoIPError(f"cannot download {url}: {str(exc) or type(exc).__name__}") from exc
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise GeoIPError(f"cannot write {dest.parent}: {exc.strerror or exc}") from exc
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _capped(chunks: Iterable[bytes], max_bytes: int, url: str) -> Iterator[bytes]:
    total = 0
    for chunk in chunks:
        total += len(chunk)
        if total > max_bytes:
            raise GeoIPError(f"{url} is larger than {max_bytes} bytes; refusing it")
        yield chunk


def _gunzip(chunks: Iterable[bytes], max_bytes: int, url: str) -> Iterator[bytes]:
    """Decompress a (possibly multi-member) gzip stream with a bound on the output.

    A body that does not start with the gzip magic is passed through: some servers send
    ``.gz`` files with ``Content-Encoding: gzip``, which httpx has already decoded.
    """
    iterator = iter(chunks)
    head = next((chunk for chunk in iterator if chunk), b"")
    if not head.startswith(b"\x1f\x8b"):
        if head:
            yield head
            yield from iterator
        return
    decoder = zlib.decompressobj(16 + zlib.MAX_WBITS)
    total = 0
    for chunk in _prepend(head, iterator):
        while True:
            if decoder.eof:  # another gzip member follows
                decoder = zlib.decompressobj(16 + zlib.MAX_WBITS)
            try:
                data = decoder.decompress(chunk, CHUNK)
            except zlib.error as exc:
                raise GeoIPError(f"{url} is not a valid gzip file: {exc}") from None
            total += len(data)
            if total > max_bytes:
                raise GeoIPError(f"{url} unpacks to more than {max_bytes} bytes; refusing it")
            if data:
                yield data
            chunk = decoder.unused_data if decoder.eof else decoder.unconsumed_tail
            # An output-bound call may leave output pending with no input left: go again.
            if not chunk and (decoder.eof or len(data) < CHUNK):
                break
    if not decoder.eof:
        raise GeoIPError(f"{url} is a truncated gzip file")


def _prepend(first: bytes, rest: Iterable[bytes]) -> Iterator[bytes]:
    yield first
    yield from rest


def _verify(path: Path, kind: str, url: str) -> tuple[str, int]:
    """Open the file and do one lookup; return (database_type, build_epoch)."""
    try:
        with open_reader(path) as reader:
            reader.get("1.1.1.1")
            metadata = reader.metadata()
            if metadata.node_count <= 0:
                raise ValueError("empty search tree")
            return str(metadata.database_type), int(metadata.build_epoch)
    except (OSError, ValueError, RuntimeError) as exc:
        raise GeoIPError(f"{url} is not a usable GeoIP {kind} database: {exc}") from None
