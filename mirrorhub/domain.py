"""Plain frozen data shared by every layer: mirrors, files, clients and decisions.

Nothing here does I/O. Times are POSIX seconds (``float``) unless a name says otherwise;
file modification times are whole seconds (``int``) because that is what origin and mirror
listings can agree on.
"""

from __future__ import annotations

import enum
import ipaddress
from dataclasses import dataclass, field

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# ``OriginFile.changed_at`` of a version the origin scan has committed but not stamped yet
# (see mirrorhub.workers.origin_scan): later than any clock reading, so no mirror scan or
# re-check counts as having seen it, and finite (2**53, exact as a float) so it stays a
# valid JSON number. Never a date: nothing may format it as one.
CHANGE_PENDING = float(2**53)


class Scheme(enum.StrEnum):
    HTTP = "http"
    HTTPS = "https"


class Health(enum.StrEnum):
    UNKNOWN = "unknown"  # never probed: trusted until a probe says otherwise
    UP = "up"
    DOWN = "down"


class Tier(enum.IntEnum):
    """How close a mirror is to a client, best first."""

    NETWORK = 0
    ASN = 1
    COUNTRY = 2
    CONTINENT = 3
    WORLD = 4


class Reason(enum.StrEnum):
    """Why a mirror is not a candidate for a request. Every exclusion carries one."""

    DISABLED = "disabled"
    DOWN = "down"
    LAGGING = "lagging"
    SCAN_FAILED = "scan failed"
    NOT_SCANNED = "not scanned"
    OUT_OF_SCOPE = "out of scope"
    MISSING = "missing"
    OUTDATED = "outdated"  # wrong size or mtime on the mirror
    STALE = "stale"  # the origin changed the file after the mirror's last good scan
    NO_SCHEME = "no https"  # the request needs HTTPS and the mirror offers none
    SCHEME_DOWN = "scheme down"  # the probes took down every scheme this request could use
    COUNTRY_EXCLUDED = "country excluded"  # the mirror refuses the client's country
    AVOIDED = "avoided"  # the client asked to avoid the mirror's country
    NOT_OWN_NETWORK = "only serves its own networks"
    NOT_OWN_ASN = "only serves its own AS"
    NOT_OWN_COUNTRY = "only serves its own country"
    NOT_OWN_CONTINENT = "only serves its own continent"


class Outcome(enum.StrEnum):
    MIRROR = "mirror"
    ORIGIN = "origin"
    NOT_FOUND = "not found"
    BAD_REQUEST = "bad request"


class OriginReason(enum.StrEnum):
    """Why a request was sent to the origin instead of a mirror."""

    NO_FRESH_MIRROR = "no fresh mirror"
    TOO_SMALL = "smaller than the redirect threshold"
    ORIGIN_ONLY = "matches an origin-only pattern"
    DIRECTORY = "directory"


@dataclass(frozen=True, slots=True)
class Restrictions:
    only_own_networks: bool = False
    only_own_asn: bool = False
    only_own_country: bool = False
    only_own_continent: bool = False
    excluded_countries: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class Mirror:
    id: int
    name: str
    http_url: str | None  # base URL ending in "/"
    https_url: str | None
    rsync_url: str | None = None
    country: str | None = None  # ISO 3166-1 alpha-2, upper case
    continent: str | None = None  # two-letter continent code (EU, NA, ...)
    latitude: float | None = None
    longitude: float | None = None
    asn: int | None = None
    networks: tuple[IPNetwork, ...] = ()
    capacity: int = 1000  # Mbit/s; the selection weight
    enabled: bool = True
    restrictions: Restrictions = field(default_factory=Restrictions)
    scope: tuple[str, ...] = ()  # published sub-trees it carries ("pub/iso/"); empty = all


@dataclass(frozen=True, slots=True)
class MirrorState:
    """What the workers know about a mirror, as of the index build."""

    health: Health = Health.UNKNOWN
    lagging: bool = False
    scan_failed: bool = False  # the mirror has no usable scan (failing for too long)
    last_good_scan: float | None = None  # start of the last good scan; None = never scanned
    # Offered schemes the probes took DOWN. ``health`` is DOWN only when all of them are.
    down_schemes: frozenset[Scheme] = frozenset()


@dataclass(frozen=True, slots=True)
class OriginFile:
    path: str  # published path without a leading "/"
    size: int
    mtime: int
    sha256: str | None  # hex
    # When the origin scan saw this version first, read after the version committed;
    # CHANGE_PENDING in between.
    changed_at: float


@dataclass(frozen=True, slots=True)
class Location:
    country: str | None = None
    continent: str | None = None
    latitude: float | None = None
    longitude: float | None = None
    asn: int | None = None


@dataclass(frozen=True, slots=True)
class Client:
    address: IPAddress
    location: Location = Location()


@dataclass(frozen=True, slots=True)
class Options:
    """Per-request choices a client may make with query parameters."""

    scheme: Scheme = Scheme.HTTP  # the scheme the request arrived with
    https_only: bool = False  # ?https=1
    country: str | None = None  # ?country=XX: pretend to be in XX
    avoid: frozenset[str] = frozenset()  # ?avoid=XX,YY

    @property
    def needs_https(self) -> bool:
        return self.https_only or self.scheme is Scheme.HTTPS


@dataclass(frozen=True, slots=True)
class Candidate:
    mirror: Mirror
    url: str  # full URL of the file on this mirror
    tier: Tier
    distance_km: float | None
    share: float = 0.0  # share of traffic for this file among the chosen band (0 outside it)
    maybe_outdated: bool = False  # chosen under an allow_outdated window: may be the old version


@dataclass(frozen=True, slots=True)
class Exclusion:
    mirror: Mirror
    reason: Reason


@dataclass(frozen=True, slots=True)
class Decision:
    """The outcome of selection for one request; every view renders one of these."""

    path: str
    file: OriginFile | None
    client: Client
    options: Options
    chosen: Candidate | None
    ranked: tuple[Candidate, ...]  # chosen first, then alternates best first
    excluded: tuple[Exclusion, ...]
    origin_reason: OriginReason | None = None  # set when the answer is the origin

    @property
    def outcome(self) -> Outcome:
        if self.chosen is not None:
            return Outcome.MIRROR
        return Outcome.ORIGIN if self.file is not None else Outcome.NOT_FOUND
