"""Synthetic but realistic data for the benchmarks: a migrated SQLite database and GeoIP files.

Everything is deterministic for a given seed. Nothing here sends traffic anywhere.

The database
    ``mirrors`` spread over ~50 countries (more in Europe and North America), with varied
    coordinates, capacities (100 Mbit/s .. 40 Gbit/s) and ASNs; a few mirrors carry networks,
    scopes, restrictions, or are down/disabled. ``origin_files`` form a tree
    ``pub/<project>/<version>/<file>`` (ISOs, tarballs, checksums, signatures, small READMEs).
    ``mirror_file_diffs`` holds a few percent of the files per mirror (0.5 .. 6 %), 60 % of
    them among the newest 5 % of files (mirrors lag on recent uploads), the rest anywhere.
    Every mirror's ``last_good_scan`` is newer than every file's ``changed_at``.

The GeoIP files
    A city and an ASN ``.mmdb`` (written with :mod:`mirrorhub.geodb`) covering 20 IPv4 /16
    blocks per country (1,000 blocks), each block a "city" near its country's centroid, each
    /17 half its own AS; some mirrors share an AS or a /16 with clients of their country.
"""

from __future__ import annotations

import ipaddress
import random
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, event, insert, update
from sqlalchemy.engine import Engine

from mirrorhub import countries
from mirrorhub.db.migrate import upgrade
from mirrorhub.db.models import (
    IndexVersionRow,
    MirrorFileDiffRow,
    MirrorRow,
    MirrorStateRow,
    OriginFileRow,
)
from mirrorhub.geodb import AsnEntry, CityEntry, write_asn_db, write_city_db
from mirrorhub.paths import quote_path
from mirrorhub.settings import DEFAULT_ORIGIN_ONLY, Settings

# Country -> relative number of mirrors. 50 countries; the GeoIP blocks cover all of them.
COUNTRY_WEIGHTS: dict[str, int] = {
    "DE": 20, "US": 20, "FR": 8, "GB": 7, "NL": 7, "SE": 5, "FI": 3, "NO": 3, "DK": 3,
    "PL": 4, "CZ": 4, "AT": 4, "CH": 4, "IT": 4, "ES": 4, "PT": 2, "BE": 2, "IE": 2,
    "RU": 5, "UA": 2, "RO": 2, "HU": 2, "GR": 2, "TR": 2, "IL": 1, "IN": 3, "CN": 5,
    "JP": 5, "KR": 3, "TW": 3, "HK": 2, "SG": 3, "ID": 2, "TH": 1, "VN": 1, "AU": 4,
    "NZ": 2, "CA": 5, "MX": 2, "BR": 5, "AR": 2, "CL": 2, "CO": 1, "ZA": 2, "KE": 1,
    "EG": 1, "NG": 1, "IR": 1, "SA": 1, "AE": 1,
}  # fmt: skip
BLOCKS_PER_COUNTRY = 20
FIRST_OCTET = 11  # country i owns <11+i>.0.0.0 .. <11+i>.19.255.255
UNKNOWN_NET = ipaddress.ip_network("198.51.100.0/24")  # not in the GeoIP data
PROJECTS = (
    "alpine", "archlinux", "centos", "debian", "fedora", "freebsd", "gentoo", "kali",
    "linuxmint", "manjaro", "opensuse", "rocky", "slackware", "ubuntu", "void", "almalinux",
    "blender", "gimp", "inkscape", "libreoffice", "kicad", "qgis", "postgresql", "python",
    "gnu", "kde", "gnome", "xfce", "tor", "videolan", "apache", "eclipse", "mariadb",
)  # fmt: skip
ARCHES = ("x86_64", "aarch64", "armhf", "i686", "ppc64le", "s390x", "riscv64")
MIN_REDIRECT_SIZE = Settings().min_redirect_size
CHUNK = 50_000


@dataclass(frozen=True)
class Block:
    network: ipaddress.IPv4Network
    country: str
    latitude: float
    longitude: float
    asns: tuple[int, int]  # one per /17 half


@dataclass(frozen=True)
class GeoData:
    city_db: Path
    asn_db: Path
    blocks: tuple[Block, ...]


@dataclass(frozen=True)
class DatabaseStats:
    files: int
    mirrors: int
    diffs: int
    redirectable: tuple[str, ...]  # paths a mirror should serve (big enough, not origin-only)
    mirror_hosts: frozenset[str]
    seconds: float


def country_list() -> list[str]:
    return list(COUNTRY_WEIGHTS)


def make_blocks(seed: int = 1) -> tuple[Block, ...]:
    rng = random.Random(seed)
    blocks = []
    for ci, cc in enumerate(country_list()):
        _, clat, clon = countries.COUNTRIES[cc]
        spread = 6.0 if cc in ("US", "RU", "CN", "BR", "AU", "CA", "IN") else 1.5
        for j in range(BLOCKS_PER_COUNTRY):
            lat = max(-89.0, min(89.0, clat + rng.uniform(-spread, spread)))
            lon = max(-179.0, min(179.0, clon + rng.uniform(-spread, spread)))
            asns = (10_000 + ci * 10 + j % 5, 10_000 + ci * 10 + 5 + j % 5)
            net = ipaddress.IPv4Network(f"{FIRST_OCTET + ci}.{j}.0.0/16")
            blocks.append(Block(net, cc, round(lat, 4), round(lon, 4), asns))
    return tuple(blocks)


def write_geoip(directory: Path, seed: int = 1) -> GeoData:
    blocks = make_blocks(seed)
    city: list[CityEntry] = []
    asn: list[AsnEntry] = []
    for b in blocks:
        continent = countries.continent_of(b.country)
        city.append((str(b.network), b.country, continent, b.latitude, b.longitude))
        for half, number in zip(b.network.subnets(prefixlen_diff=1), b.asns, strict=True):
            asn.append((str(half), number, f"AS{number} {b.country} Networks"))
    city_db = directory / "city.mmdb"
    asn_db = directory / "asn.mmdb"
    write_city_db(city_db, city)
    write_asn_db(asn_db, asn)
    return GeoData(city_db, asn_db, blocks)


def client_addresses(blocks: tuple[Block, ...], count: int, seed: int = 2) -> list[str]:
    """``count`` distinct IPv4 clients: 98 % inside the GeoIP blocks, 2 % unknown."""
    rng = random.Random(seed)
    out: set[str] = set()
    unknown = list(UNKNOWN_NET.hosts())
    while len(out) < count:
        if rng.random() < 0.02:
            out.add(str(rng.choice(unknown)))
            continue
        b = rng.choice(blocks)
        host = rng.randrange(1, 65_535)
        out.add(str(b.network.network_address + host))
    result = sorted(out)
    rng.shuffle(result)
    return result


# --- the database ---------------------------------------------------------------------------


def _sync_engine(path: Path) -> Engine:
    engine = create_engine(f"sqlite:///{path}")

    @event.listens_for(engine, "connect")
    def _pragmas(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=OFF")
        cursor.execute("PRAGMA cache_size=-200000")
        cursor.close()

    return engine


def _origin_only(name: str) -> bool:
    import fnmatch

    return any(fnmatch.fnmatchcase(name, p) for p in DEFAULT_ORIGIN_ONLY)


def file_tree(count: int, seed: int, now: float) -> Iterator[dict[str, Any]]:
    """``count`` origin files, oldest first: ``pub/<project>/<version>/<file>``."""
    rng = random.Random(seed)
    n = 0
    oldest = now - 3 * 365 * 86_400
    newest = now - 7_200
    releases: dict[str, int] = {}
    while n < count:
        project = PROJECTS[rng.randrange(len(PROJECTS))]
        v = releases[project] = releases.get(project, 0) + 1
        version = f"{v // 100}.{(v // 10) % 10}.{v % 10}"
        names = []
        for arch in rng.sample(ARCHES, rng.randint(2, 5)):
            names.append(f"{project}-{version}-{arch}.iso")
            names.append(f"{project}-{version}-{arch}.tar.xz")
            names.append(f"{project}-{version}-{arch}.tar.xz.asc")
        names += ["SHA256SUMS", "SHA256SUMS.gpg", "README.txt"]
        for name in names:
            if n >= count:
                break
            changed = oldest + (newest - oldest) * n / max(1, count - 1)  # ids grow with time
            if name.endswith((".iso", ".tar.xz")):
                size = int(10 ** rng.uniform(5, 9.6))
            else:
                size = rng.randint(200, 3_000)
            n += 1
            yield {
                "id": n,
                "path": f"pub/{project}/{version}/{name}",
                "size": size,
                "mtime": int(changed) - rng.randint(0, 3_600),
                "sha256": rng.randbytes(32).hex(),
                "changed_at": changed,
            }


def _mirror_rows(
    count: int, rng: random.Random, blocks: tuple[Block, ...], now: float
) -> list[dict[str, Any]]:
    ccs = country_list()
    weights = [COUNTRY_WEIGHTS[c] for c in ccs]
    created = datetime.fromtimestamp(now - 400 * 86_400, UTC)
    by_country: dict[str, list[Block]] = {}
    for b in blocks:
        by_country.setdefault(b.country, []).append(b)
    rows = []
    for i in range(1, count + 1):
        cc = rng.choices(ccs, weights)[0]
        continent, clat, clon = countries.COUNTRIES[cc]
        host = f"mirror{i:03d}.{cc.lower()}.example.net"
        kind = rng.random()
        http_url = f"http://{host}/mirrorhub/" if kind < 0.95 else None
        https_url = f"https://{host}/mirrorhub/" if kind >= 0.15 else None
        lat: float | None = round(clat + rng.uniform(-3, 3), 4)
        lon: float | None = round(clon + rng.uniform(-3, 3), 4)
        if rng.random() < 0.1:
            lat = lon = None  # country only: the index uses the centroid
        home = rng.choice(by_country[cc])
        asn = rng.choice(home.asns) if rng.random() < 0.3 else 200_000 + i
        rows.append(
            {
                "id": i,
                "name": f"mirror-{i:03d}-{cc.lower()}",
                "http_url": http_url,
                "https_url": https_url,
                "rsync_url": f"rsync://{host}/mirrorhub/",
                "country": cc,
                "continent": continent,
                "latitude": max(-89.0, min(89.0, lat)) if lat is not None else None,
                "longitude": max(-179.0, min(179.0, lon)) if lon is not None else None,
                "asn": asn,
                "networks": str(home.network) if i % 40 == 1 else "",
                "capacity": rng.choice((100, 1000, 1000, 2000, 10_000, 10_000, 40_000)),
                "enabled": i % 97 != 0,
                "only_own_country": i % 67 == 0,
                "excluded_countries": "CN RU" if i % 71 == 0 else "",
                "scope": (
                    f"pub/{PROJECTS[i % len(PROJECTS)]}/ pub/{PROJECTS[(i + 7) % len(PROJECTS)]}/"
                    if i % 20 == 0
                    else ""
                ),
                "created_at": created,
                "updated_at": created,
            }
        )
    return rows


def build_database(
    path: Path,
    *,
    files: int,
    mirrors: int,
    blocks: tuple[Block, ...],
    diff_percent: float = 2.5,
    seed: int = 3,
    progress: bool = True,
    capacity_scale: float = 1.0,
) -> DatabaseStats:
    """Create and fill a migrated SQLite database at ``path``. Mirror capacities are 100 Mbit/s
    to 40 Gbit/s times ``capacity_scale``."""
    started = time.perf_counter()
    url = f"sqlite:///{path}"
    upgrade(url)
    rng = random.Random(seed)
    now = time.time()
    engine = _sync_engine(path)
    redirectable: list[str] = []
    mirror_rows = _mirror_rows(mirrors, rng, blocks, now)
    for row in mirror_rows:
        row["capacity"] = round(row["capacity"] * capacity_scale)
    total_diffs = 0
    with engine.begin() as conn:
        conn.execute(insert(MirrorRow), mirror_rows)
        conn.execute(
            insert(MirrorStateRow),
            [
                {
                    "mirror_id": m["id"],
                    "health": "down" if m["id"] % 61 == 0 else "up",
                    "lagging": False,
                    "scan_failed": False,
                    "last_good_scan": now - 1_800,
                    "last_scan_error": "",
                }
                for m in mirror_rows
            ],
        )
        chunk: list[dict[str, Any]] = []
        for row in file_tree(files, seed, now):
            chunk.append(row)
            name = row["path"].rsplit("/", 1)[1]
            if row["size"] >= MIN_REDIRECT_SIZE and not _origin_only(name):
                redirectable.append(row["path"])
            if len(chunk) >= CHUNK:
                conn.execute(insert(OriginFileRow), chunk)
                chunk = []
        if chunk:
            conn.execute(insert(OriginFileRow), chunk)
        if progress:
            print(f"  files inserted in {time.perf_counter() - started:.1f} s", flush=True)
        recent_start = int(files * 0.95)
        for m in mirror_rows:
            share = rng.uniform(0.5, 2.0) if rng.random() < 0.7 else rng.uniform(2.0, 6.0)
            share *= diff_percent / 2.5
            k = min(files, int(files * share / 100))
            k_recent = min(files - recent_start, int(k * 0.6))
            ids = set(rng.sample(range(recent_start + 1, files + 1), k_recent))
            while len(ids) < k:
                ids.add(rng.randint(1, files))
            diff_rows = []
            for fid in sorted(ids):
                r = rng.random()
                kind = "missing" if r < 0.5 else ("size" if r < 0.8 else "mtime")
                diff_rows.append(
                    {
                        "mirror_id": m["id"],
                        "file_id": fid,
                        "kind": kind,
                        "seen_size": None if kind == "missing" else rng.randint(0, 10**9),
                        "seen_mtime": None if kind == "missing" else int(now) - 86_400,
                    }
                )
            if diff_rows:
                conn.execute(insert(MirrorFileDiffRow), diff_rows)
            total_diffs += len(diff_rows)
        conn.execute(update(IndexVersionRow).where(IndexVersionRow.id == 1).values(version=1))
    engine.dispose()
    hosts = frozenset(
        url.split("/")[2] for m in mirror_rows for url in (m["http_url"], m["https_url"]) if url
    )
    return DatabaseStats(
        files=files,
        mirrors=mirrors,
        diffs=total_diffs,
        redirectable=tuple(redirectable),
        mirror_hosts=hosts,
        seconds=time.perf_counter() - started,
    )


def request_path(path: str) -> str:
    return "/" + quote_path(path)
