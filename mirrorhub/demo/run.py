"""``mirrorhub demo``: a complete, local install with three mirrors and pretend clients.

Steps: write the sample origin tree and three mirror copies that differ from it (one lacks a
file, one has an outdated copy, one carries a sub-tree only); start a small web server per
mirror on 127.0.0.2, .3 and .4; write a GeoIP database that places three documentation
networks in Germany, France and the United States; migrate a SQLite database, scan the
origin, register and scan the mirrors; print what to try; run the dispatcher until Ctrl-C.

The scenario (mirrors, clients, examples) is data in this module: the banner prints it and
the tests replay the printed ``curl`` lines against it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import ipaddress
import shlex
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from mirrorhub.demo.mirror_server import MirrorServer, port_free
from mirrorhub.demo.tree import (
    DEB,
    HANDBOOK,
    ISO_NEW,
    ISO_OLD,
    RELEASE,
    Variant,
    reset_dirs,
    write_mirror,
    write_origin,
)
from mirrorhub.domain import OriginReason, Reason
from mirrorhub.errors import MirrorhubError
from mirrorhub.geodb import write_asn_db, write_city_db
from mirrorhub.paths import quote_path
from mirrorhub.settings import Settings

MARKER = ".mirrorhub-demo"  # marks a directory this command created and may rebuild
RESCAN_SECONDS = 60.0


@dataclass(frozen=True, slots=True)
class DemoMirror:
    name: str
    address: str  # the loopback address its web server listens on
    city: str
    country: str
    continent: str
    latitude: float
    longitude: float
    asn: int
    capacity: int  # Mbit/s
    variant: Variant
    difference: str  # how its copy differs from the origin, for the banner


@dataclass(frozen=True, slots=True)
class DemoClient:
    place: str
    network: str  # a documentation range (RFC 5737) the GeoIP database places
    address: str  # the address the examples pretend to come from
    country: str
    continent: str
    latitude: float
    longitude: float
    asn: int
    org: str


MIRRORS: tuple[DemoMirror, ...] = (
    DemoMirror(
        "berlin", "127.0.0.2", "Berlin", "DE", "EU", 52.52, 13.40, 64501, 1000,
        Variant(missing=(ISO_NEW,)),
        f"lacks {ISO_NEW} (not synced yet)",
    ),
    DemoMirror(
        "paris", "127.0.0.3", "Paris", "FR", "EU", 48.86, 2.35, 64502, 2000,
        Variant(outdated=(DEB,)),
        f"has an outdated {DEB} (older, different size)",
    ),
    DemoMirror(
        "newyork", "127.0.0.4", "New York", "US", "NA", 40.71, -74.01, 64503, 5000,
        Variant(scope=("projects/aurora/",)),
        "carries only projects/aurora/ (its registered scope)",
    ),
)  # fmt: skip

DE, FR, US = CLIENTS = (
    DemoClient("Frankfurt, DE", "192.0.2.0/24", "192.0.2.10", "DE", "EU", 50.11, 8.68, 64496,
               "Demo Carrier DE"),
    DemoClient("Lyon, FR", "198.51.100.0/24", "198.51.100.20", "FR", "EU", 45.76, 4.84, 64497,
               "Demo Carrier FR"),
    DemoClient("Chicago, US", "203.0.113.0/24", "203.0.113.30", "US", "NA", 41.88, -87.63, 64498,
               "Demo Carrier US"),
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class Example:
    """One ready-to-paste request and what it shows."""

    title: str
    client: DemoClient
    path: str
    expect: str  # printed under the curl line
    json: bool = False  # ask for the decision as JSON (?json) instead of a redirect
    status: int = 302
    mirror: str | None = None  # the mirror a 302 goes to
    origin_reason: OriginReason | None = None  # set when the origin answers
    excluded: tuple[tuple[str, Reason], ...] = ()  # (mirror, reason) the JSON lists

    def url(self, base: str) -> str:
        return base + quote_path(self.path) + ("?json" if self.json else "")

    def curl(self, base: str) -> str:
        flags = "-s" if self.json else "-sI"
        header = f"X-Forwarded-For: {self.client.address}"
        return f"curl {flags} -H {shlex.quote(header)} {shlex.quote(self.url(base))}"


EXAMPLES: tuple[Example, ...] = (
    Example(
        "A client in Germany is sent to berlin (same country)",
        DE, ISO_OLD, "302, Location on berlin; Link headers list the alternates",
        mirror="berlin",
    ),
    Example(
        "A client in France is sent to paris",
        FR, ISO_OLD, "302, Location on paris", mirror="paris",
    ),
    Example(
        "A client in the US is sent to newyork",
        US, ISO_OLD, "302, Location on newyork", mirror="newyork",
    ),
    Example(
        "berlin lacks the new ISO: the German client goes to the next closest mirror",
        DE, ISO_NEW, "302, Location on paris (berlin is excluded: missing)", mirror="paris",
    ),
    Example(
        "The decision as JSON, with the reason for every mirror left out",
        US, DEB, 'chosen: berlin; excluded: newyork "out of scope", paris "outdated"',
        json=True, status=200, mirror="berlin",
        excluded=(("newyork", Reason.OUT_OF_SCOPE), ("paris", Reason.OUTDATED)),
    ),
    Example(
        "Repository metadata is always served by the origin, never by a mirror",
        DE, RELEASE, "200 from the dispatcher itself, x-mirrorhub-origin says why",
        status=200, origin_reason=OriginReason.ORIGIN_ONLY,
    ),
)  # fmt: skip

DOWNLOAD = Example(
    "Download through the redirect and check it against the origin's SHA256SUMS",
    FR,
    HANDBOOK,
    "the same digest as the origin's SHA256SUMS",
    mirror="paris",
)


# --- the demo directory ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Layout:
    root: Path

    @property
    def origin(self) -> Path:
        return self.root / "origin"

    @property
    def mirrors(self) -> Path:
        return self.root / "mirrors"

    def mirror(self, name: str) -> Path:
        return self.mirrors / name

    @property
    def geoip(self) -> Path:
        return self.root / "geoip"

    @property
    def database(self) -> Path:
        return self.root / "mirrorhub.db"


def prepare(directory: Path, trace_file: str | None) -> Layout:
    """Create (or rebuild from scratch) the demo directory: trees, GeoIP files, no database.

    A directory that exists, is not empty and was not made by the demo is left alone: the
    demo deletes what it rebuilds, so it must not pick someone else's directory.
    """
    layout = Layout(directory.resolve())
    root = layout.root
    if root.exists():
        if not root.is_dir():
            raise MirrorhubError(f"{directory} exists and is not a directory")
        if any(root.iterdir()) and not (root / MARKER).exists():
            raise MirrorhubError(
                f"{directory} is not empty and was not created by `mirrorhub demo`; "
                "choose another --dir"
            )
    root.mkdir(parents=True, exist_ok=True)
    root.chmod(0o755)
    (root / MARKER).write_text("created by `mirrorhub demo`; rebuilt on every run\n")
    for suffix in ("", "-wal", "-shm", "-journal"):
        Path(f"{layout.database}{suffix}").unlink(missing_ok=True)
    reset_dirs([layout.origin, layout.mirrors, layout.geoip])
    write_origin(layout.origin, trace_file)
    for m in MIRRORS:
        write_mirror(layout.origin, layout.mirror(m.name), m.variant, always=trace_file)
    write_city_db(
        layout.geoip / "city.mmdb",
        [(c.network, c.country, c.continent, c.latitude, c.longitude) for c in CLIENTS],
        database_type="mirrorhub-demo-City",
        description="mirrorhub demo: documentation networks placed in DE, FR and US",
    )
    write_asn_db(
        layout.geoip / "asn.mmdb",
        [(c.network, c.asn, c.org) for c in CLIENTS],
        database_type="mirrorhub-demo-ASN",
        description="mirrorhub demo: documentation networks and AS numbers",
    )
    return layout


def demo_settings(layout: Layout, host: str, port: int) -> Settings:
    """The demo's own settings: MIRRORHUB_* variables and --config do not apply, so the
    printed examples behave the same everywhere."""
    return dataclasses.replace(
        Settings(),
        database_url=f"sqlite:///{layout.database}",
        origin_dir=layout.origin,
        origin_url=None,  # the dispatcher serves origin answers from origin_dir itself
        geoip_city_db=layout.geoip / "city.mmdb",
        geoip_asn_db=layout.geoip / "asn.mmdb",
        # curl runs on this machine: trusting 127.0.0.1 lets X-Forwarded-For pick the client.
        trusted_proxies=(ipaddress.ip_network("127.0.0.1/32"),),
        host=host,
        port=port,
        allow_private_mirrors=True,  # the mirrors are on loopback addresses
        index_refresh_seconds=1.0,
        # Short intervals so that changes to the demo trees show within a minute.
        scan_interval=RESCAN_SECONDS,
        origin_scan_interval=RESCAN_SECONDS,
        probe_interval=10.0,
    )


# --- database -------------------------------------------------------------------------------


async def populate(settings: Settings, servers: Sequence[MirrorServer]) -> None:
    """Scan the origin, register the mirrors through the service layer, scan each mirror."""
    from mirrorhub import services
    from mirrorhub.db.session import create_engine, session_factory
    from mirrorhub.workers.mirror_scan import scan_mirror
    from mirrorhub.workers.origin_scan import scan_origin

    assert settings.origin_dir is not None
    engine = create_engine(settings.database_url)
    sessions = session_factory(engine)
    try:
        await scan_origin(sessions, settings.origin_dir)
        records = [
            await services.add_mirror(sessions, mirror_fields(m, server.url), allow_private=True)
            for m, server in zip(MIRRORS, servers, strict=True)
        ]
        for record in records:
            report = await scan_mirror(sessions, settings, record.mirror)
            if not report.ok:
                # Without a good scan a mirror is excluded as "not scanned": say so now.
                raise MirrorhubError(f"demo mirror {report.mirror}: scan failed: {report.error}")
    finally:
        await engine.dispose()


def mirror_fields(m: DemoMirror, url: str) -> dict[str, str | None]:
    return {
        "name": m.name,
        "http_url": url,
        "country": m.country,
        "continent": m.continent,
        "latitude": str(m.latitude),
        "longitude": str(m.longitude),
        "asn": str(m.asn),
        "capacity": str(m.capacity),
        "scope": " ".join(m.variant.scope),
        "notes": f"mirrorhub demo mirror in {m.city}: {m.difference}",
    }


# --- what the demo prints -------------------------------------------------------------------


def base_url(host: str, port: int) -> str:
    """The dispatcher's URL as a client on this machine reaches it."""
    if host in ("", "0.0.0.0"):  # noqa: S104 - only mapping a wildcard to a reachable address
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}/"


def banner(settings: Settings, layout: Layout, servers: Sequence[MirrorServer]) -> str:
    base = base_url(settings.host, settings.port)
    lines = [
        "",
        "mirrorhub demo",
        "",
        f"  dispatcher  {base}",
        f"  health      {base}-/health",
        f"  data        {layout.root} (SQLite database, origin tree, mirror trees, GeoIP)",
        "",
        "Mirrors, each a small web server on its own loopback address:",
    ]
    for m, server in zip(MIRRORS, servers, strict=True):
        lines.append(
            f"  {m.name:<8} {server.url:<24} {m.city}, {m.country} ({m.continent}), "
            f"AS{m.asn}, {m.capacity} Mbit/s"
        )
        lines.append(f"  {'':<8} {m.difference}")
    lines += [
        "",
        "Pretend clients: the demo trusts X-Forwarded-For from 127.0.0.1 (trusted_proxies =",
        "127.0.0.1/32), so a curl on this machine can say which address it comes from. The",
        "demo's GeoIP database places these documentation addresses:",
    ]
    for c in CLIENTS:
        lines.append(f"  {c.address:<15} {c.place} ({c.continent}), AS{c.asn}")
    lines += ["", "Try:"]
    for number, example in enumerate(EXAMPLES, start=1):
        lines += [
            "",
            f"  # {number}. {example.title}",
            f"  {example.curl(base)}",
            f"  #    -> {example.expect}",
        ]
    sums = base + quote_path(HANDBOOK.rsplit("/", 1)[0] + "/SHA256SUMS")
    header = f"X-Forwarded-For: {DOWNLOAD.client.address}"
    lines += [
        "",
        f"  # {DOWNLOAD.title}",
        f"  curl -sL -H {shlex.quote(header)} {shlex.quote(DOWNLOAD.url(base))} | sha256sum",
        f"  curl -s {shlex.quote(sums)}",
        "",
        "Without X-Forwarded-For the client is 127.0.0.1, which has no location: any mirror",
        "may answer, in proportion to capacity. Add ?country=FR to pretend to be elsewhere.",
        "",
        f"Workers run in this process: origin and mirrors are rescanned every "
        f"{RESCAN_SECONDS:.0f} s. Delete",
        f"  {layout.mirror('paris') / ISO_OLD}",
        "and within a minute example 2 goes to berlin instead.",
        "",
        "Press Ctrl-C to stop.",
        "",
    ]
    return "\n".join(lines)


# --- the command ----------------------------------------------------------------------------


def start_mirrors(layout: Layout, port: int) -> list[MirrorServer]:
    """One server per mirror; all on ``port`` when it is free on their addresses (distinct
    addresses can share a port number), else on any free port."""
    servers: list[MirrorServer] = []
    try:
        for m in MIRRORS:
            servers.append(MirrorServer(layout.mirror(m.name), m.address, port))
    except BaseException:
        for server in servers:
            server.close()
        raise
    return servers


def run_demo(directory: Path, host: str, port: int, out: TextIO = sys.stdout) -> int:
    """Build everything, run the dispatcher until Ctrl-C, then stop the mirrors."""
    import uvicorn

    from mirrorhub.db.migrate import upgrade
    from mirrorhub.web.app import create_app

    if not port_free(host, port):
        # Found now, not after the banner has told the user what to paste.
        raise MirrorhubError(f"cannot listen on {host}:{port} (in use?); choose another --port")
    print(f"mirrorhub demo: preparing {directory} ...", file=out, flush=True)
    base_settings = Settings()
    layout = prepare(directory, base_settings.trace_file)
    settings = demo_settings(layout, host, port)
    upgrade(settings.database_url)
    servers = start_mirrors(layout, port + 1 if port < 65535 else 0)
    try:
        asyncio.run(populate(settings, servers))
        print(banner(settings, layout, servers), file=out, flush=True)
        app = create_app(settings, workers=True)  # scans and probes in-process, as `serve`
        uvicorn.run(
            app,
            host=settings.host,
            port=settings.port,
            loop="uvloop",
            http="httptools",
            lifespan="on",
            access_log=False,
            proxy_headers=False,  # mirrorhub applies its own trusted-proxy rules
            server_header=False,
        )
    finally:
        for server in servers:
            server.close()
    print("mirrorhub demo: stopped", file=out, flush=True)
    return 0
