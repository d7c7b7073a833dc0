"""Settings, loaded once from ``MIRRORHUB_*`` variables and an optional TOML file.

Precedence: environment > TOML file > default. The TOML file uses the same names in lower
case without the prefix (``database_url = "..."``). Nothing else in mirrorhub reads the
environment; the frozen :class:`Settings` is passed down.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from mirrorhub.domain import IPNetwork
from mirrorhub.errors import SettingsError

PREFIX = "MIRRORHUB_"

DEFAULT_ORIGIN_ONLY = (
    "Release",
    "Release.gpg",
    "InRelease",
    "Packages*",
    "Sources*",
    "Contents-*",
    "Translation-*",
    "repomd.xml*",
    "*.sha256",
    "*.sha512",
    "*SUMS",
    "*SUMS.gpg",
    "*.asc",
    "*.sig",
    "*.db",
    "*.db.tar.gz",
    "*.files",
    "*.files.tar.gz",
)


@dataclass(frozen=True)
class Settings:
    database_url: str = "sqlite:///mirrorhub.db"
    origin_dir: Path | None = None
    origin_url: str | None = None
    public_url: str | None = None  # the dispatcher's own public base URL; never the Host header
    geoip_city_db: Path | None = None
    geoip_asn_db: Path | None = None
    trusted_proxies: tuple[IPNetwork, ...] = ()
    host: str = "127.0.0.1"
    port: int = 8080
    min_redirect_size: int = 4096
    origin_only_patterns: tuple[str, ...] = DEFAULT_ORIGIN_ONLY
    distance_band_factor: float = 1.5
    distance_band_km: float = 500.0
    link_alternates: int = 4
    # Per-dispatcher caches of what selection derives (memory against CPU; see
    # docs/configuration.md): client rankings (one per coarse client location and options)
    # and bands (one per ranking and file).
    ranking_cache_size: int = 16384
    band_cache_size: int = 65536
    index_refresh_seconds: float = 2.0
    allow_private_mirrors: bool = False
    # Mirror scans: consecutive failed scans before a mirror is excluded (one hiccup does not
    # take it out; its last good diffs stay in use meanwhile), the whole-scan time budget,
    # one request's timeout, parallel requests per HTTP scan, and caps that stop an endless
    # listing (pages fetched, entries seen).
    scan_failures_before_exclusion: int = 3
    scan_timeout_seconds: float = 1800.0
    scan_request_timeout_seconds: float = 30.0
    http_scan_concurrency: int = 4
    scan_max_pages: int = 200_000
    scan_max_entries: int = 5_000_000
    # Health probes and trace-file lag (workers/probe.py). trace_file is a path relative to
    # the published tree that the origin rewrites at each publish (epoch seconds or one
    # RFC 3339 line); "" turns lag probing off. A mirror goes down after probe_down_after
    # failed rounds and back up after probe_up_after good ones; it is "lagging" once it has
    # missed the origin's newest publish for more than max_lag_seconds.
    trace_file: str | None = "project/trace/mirrorhub"
    max_lag_seconds: float = 12 * 3600.0
    probe_down_after: int = 2
    probe_up_after: int = 2
    probe_connect_timeout_seconds: float = 3.0
    probe_timeout_seconds: float = 10.0
    probe_concurrency: int = 100
    probe_history_days: int = 14
    geoip_city_url: str = (
        "https://download.db-ip.com/free/dbip-city-lite-{year}-{month:02d}.mmdb.gz"
    )
    geoip_asn_url: str = "https://download.db-ip.com/free/dbip-asn-lite-{year}-{month:02d}.mmdb.gz"
    geoip_dir: Path = field(default_factory=lambda: Path("geoip"))
    allow_outdated: tuple[tuple[str, float], ...] = ()  # (prefix, seconds), longest first
    load_window_seconds: float = 60.0
    load_sync_seconds: float = 2.0
    origin_scan_interval: float = 600.0
    origin_watch_seconds: float = 5.0
    scan_interval: float = 1800.0
    probe_interval: float = 15.0
    recheck_interval: float = 30.0
    recheck_max_files: int = 200
    recheck_concurrency: int = 4
    recheck_timeout_seconds: float = 10.0
    worker_concurrency: int = 4
    job_lease_seconds: float = 120.0
    # Who may read /-/metrics (client address per the trusted-proxy rules); loopback only.
    metrics_allow: tuple[IPNetwork, ...] = (
        ipaddress.ip_network("127.0.0.0/8"),
        ipaddress.ip_network("::1/128"),
    )
    # Download statistics (mirrorhub/stats): counted in memory, flushed every
    # stats_flush_seconds; ranged requests from one client for one file within
    # stats_range_window_seconds count once (at most stats_range_clients remembered);
    # during a database outage at most stats_buffer_rows rows wait in memory; daily rows
    # are kept stats_raw_days, then only monthly totals.
    stats_enabled: bool = True
    stats_flush_seconds: float = 30.0
    stats_range_window_seconds: float = 600.0
    stats_range_clients: int = 100_000
    stats_buffer_rows: int = 200_000
    stats_raw_days: int = 90
    # Scale-out (mirrorhub/fleet.py, mirrorhub/notify.py): how often each process refreshes
    # its row in `processes` (live = a heartbeat within 3x this), and whether dispatchers
    # LISTEN for index changes on PostgreSQL (the periodic version check stays as fallback).
    heartbeat_seconds: float = 5.0
    pg_notify: bool = True

    # Dashboard sign-in (mirrorhub.auth). secret_key signs session cookies; when unset, a
    # random key is stored in the database on first start so every dispatcher shares it.
    secret_key: str | None = None
    session_max_age_seconds: float = 12 * 3600.0
    login_window_seconds: float = 900.0
    login_max_failures_per_account: int = 5
    login_max_failures_per_address: int = 20

    @property
    def async_database_url(self) -> str:
        return async_url(self.database_url)

    @property
    def geoip_city_path(self) -> Path:
        """The city database in use: geoip_city_db, else the one `geoip fetch` installs."""
        return self.geoip_city_db or self.geoip_dir / "dbip-city-lite.mmdb"

    @property
    def geoip_asn_path(self) -> Path:
        """The ASN database in use: geoip_asn_db, else the one `geoip fetch` installs."""
        return self.geoip_asn_db or self.geoip_dir / "dbip-asn-lite.mmdb"


# --- parsers: each raises ValueError with a reason; the loader adds the setting's name ---


def _path(value: str) -> Path:
    if not value:
        raise ValueError("empty path")
    return Path(value).expanduser()


def _http_url(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"not an http(s) URL: {value!r}")
    return value if value.endswith("/") else value + "/"


def _public_url(value: str) -> str:
    """An ASCII http(s) base URL without query or fragment: it is pasted into headers."""
    if not value.isascii() or any(c in value for c in '?#<> "') or "@" in urlsplit(value).netloc:
        raise ValueError(f"not a plain ASCII http(s) base URL: {value!r}")
    return _http_url(value)


def _db_url(value: str) -> str:
    async_url(value)  # validates
    return value


def _networks(value: str) -> tuple[IPNetwork, ...]:
    nets = []
    for item in value.replace(",", " ").split():
        try:
            nets.append(ipaddress.ip_network(item, strict=False))
        except ValueError:
            raise ValueError(f"not an address or CIDR network: {item!r}") from None
    return tuple(nets)


def _patterns(value: str) -> tuple[str, ...]:
    return tuple(p for p in value.replace(",", " ").split() if p)


def _bool(value: str) -> bool:
    low = value.strip().lower()
    if low in ("1", "true", "yes", "on"):
        return True
    if low in ("0", "false", "no", "off", ""):
        return False
    raise ValueError(f"not a boolean: {value!r} (use true or false)")


def _nonneg_int(value: str) -> int:
    number = int(value)
    if number < 0:
        raise ValueError("must not be negative")
    return number


def _positive_int(value: str) -> int:
    number = int(value)
    if number < 1:
        raise ValueError("must be at least 1")
    return number


def _trace_file(value: str) -> str | None:
    """A relative path inside the published tree; "" means no trace file."""
    if not value:
        return None
    parts = value.split("/")
    if value.startswith("/") or "" in parts or "." in parts or ".." in parts:
        raise ValueError(f"not a relative path inside the tree: {value!r}")
    if "\\" in value or not value.isprintable():
        raise ValueError(f"control character or backslash in {value!r}")
    return value


def _port(value: str) -> int:
    number = int(value)
    if not 0 < number < 65536:
        raise ValueError("must be between 1 and 65535")
    return number


def _positive_float(value: str) -> float:
    number = float(value)
    if not number > 0:
        raise ValueError("must be greater than zero")
    return number


def _nonneg_float(value: str) -> float:
    number = float(value)
    if not number >= 0:
        raise ValueError("must not be negative")
    return number


def _band_factor(value: str) -> float:
    number = float(value)
    if not number >= 1:
        raise ValueError("must be at least 1")
    return number


def _secret_key(value: str) -> str | None:
    """At least 32 characters, or "" for the key stored in the database."""
    if not value:
        return None
    if len(value) < 32:
        raise ValueError("must be at least 32 characters (e.g. `openssl rand -hex 32`)")
    return value


def _allow_outdated(value: str) -> tuple[tuple[str, float], ...]:
    """``pub/nightly/=60, pub/daily/=30``: path prefix = minutes."""
    rules = []
    for item in value.replace(",", " ").split():
        prefix, sep, minutes = item.partition("=")
        if not sep or not minutes.strip().isdigit():
            raise ValueError(f"expected PREFIX=MINUTES, got {item!r}")
        prefix = prefix.strip().lstrip("/")
        if ".." in prefix.split("/"):
            raise ValueError(f"prefix must not contain '..': {item!r}")
        rules.append((prefix, int(minutes) * 60.0))
    return tuple(sorted(rules, key=lambda rule: -len(rule[0])))


_PARSERS: dict[str, Callable[[str], Any]] = {
    "secret_key": _secret_key,
    "session_max_age_seconds": _positive_float,
    "login_window_seconds": _positive_float,
    "login_max_failures_per_account": _positive_int,
    "login_max_failures_per_address": _positive_int,
    "database_url": _db_url,
    "origin_dir": _path,
    "origin_url": _http_url,
    "public_url": _public_url,
    "geoip_city_db": _path,
    "geoip_asn_db": _path,
    "trusted_proxies": _networks,
    "host": str,
    "port": _port,
    "min_redirect_size": _nonneg_int,
    "origin_only_patterns": _patterns,
    "distance_band_factor": _band_factor,
    "distance_band_km": _nonneg_float,
    "link_alternates": _nonneg_int,
    "ranking_cache_size": _positive_int,
    "band_cache_size": _positive_int,
    "index_refresh_seconds": _positive_float,
    "allow_private_mirrors": _bool,
    "scan_failures_before_exclusion": _positive_int,
    "scan_timeout_seconds": _positive_float,
    "scan_request_timeout_seconds": _positive_float,
    "http_scan_concurrency": _positive_int,
    "scan_max_pages": _positive_int,
    "scan_max_entries": _positive_int,
    "trace_file": _trace_file,
    "max_lag_seconds": _positive_float,
    "probe_down_after": _positive_int,
    "probe_up_after": _positive_int,
    "probe_connect_timeout_seconds": _positive_float,
    "probe_timeout_seconds": _positive_float,
    "probe_concurrency": _positive_int,
    "probe_history_days": _positive_int,
    "geoip_city_url": str,
    "geoip_asn_url": str,
    "geoip_dir": _path,
    "allow_outdated": _allow_outdated,
    "load_window_seconds": _positive_float,
    "load_sync_seconds": _positive_float,
    "origin_scan_interval": _positive_float,
    "origin_watch_seconds": _positive_float,
    "scan_interval": _positive_float,
    "probe_interval": _positive_float,
    "recheck_interval": _positive_float,
    "recheck_max_files": _positive_int,
    "recheck_concurrency": _positive_int,
    "recheck_timeout_seconds": _positive_float,
    "worker_concurrency": _positive_int,
    "job_lease_seconds": _positive_float,
    "metrics_allow": _networks,
    "stats_enabled": _bool,
    "stats_flush_seconds": _positive_float,
    "stats_range_window_seconds": _nonneg_float,
    "stats_range_clients": _positive_int,
    "stats_buffer_rows": _positive_int,
    "stats_raw_days": _positive_int,
    "heartbeat_seconds": _positive_float,
    "pg_notify": _bool,
}


def async_url(url: str) -> str:
    """Map a plain ``sqlite:///`` or ``postgresql://`` URL to its asyncio driver."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        raise ValueError(f"not a database URL: {url!r}")
    base = scheme.split("+", 1)[0]
    if base == "sqlite":
        return f"sqlite+aiosqlite://{rest}"
    if base in ("postgresql", "postgres"):
        return f"postgresql+asyncpg://{rest}"
    raise ValueError(f"unsupported database {scheme!r} (use sqlite:/// or postgresql://)")


def env_name(name: str) -> str:
    return PREFIX + name.upper()


def load_settings(
    environ: Mapping[str, str] | None = None, config_file: Path | None = None
) -> Settings:
    """Read settings once; a wrong value raises SettingsError naming the setting."""
    environ = os.environ if environ is None else environ
    if config_file is None and environ.get(env_name("config")):
        config_file = Path(environ[env_name("config")])
    raw: dict[str, str] = {}
    if config_file is not None:
        raw.update(_read_toml(config_file))
    for name in _PARSERS:
        if env_name(name) in environ:
            raw[name] = environ[env_name(name)]
    unknown = sorted(
        key[len(PREFIX) :].lower()
        for key in environ
        if key.startswith(PREFIX) and key[len(PREFIX) :].lower() not in {*_PARSERS, "config"}
    )
    if unknown:
        raise SettingsError(env_name(unknown[0]), "unknown setting")
    values: dict[str, Any] = {}
    for name, text in raw.items():
        if text == "" and name in (
            "origin_dir", "origin_url", "public_url", "geoip_city_db", "geoip_asn_db",
        ):  # fmt: skip
            continue  # an empty optional setting means "not set"
        try:
            values[name] = _PARSERS[name](text)
        except ValueError as exc:
            raise SettingsError(env_name(name), str(exc)) from None
    return dataclasses.replace(Settings(), **values)


def _read_toml(path: Path) -> dict[str, str]:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise SettingsError("MIRRORHUB_CONFIG", f"cannot read {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise SettingsError("MIRRORHUB_CONFIG", f"{path} is not valid TOML: {exc}") from None
    out: dict[str, str] = {}
    for key, value in data.items():
        if key not in _PARSERS:
            raise SettingsError(f"{path}: {key}", "unknown setting")
        if isinstance(value, list):
            value = ",".join(str(v) for v in value)
        elif isinstance(value, bool):
            value = "true" if value else "false"
        out[key] = str(value)
    return out
