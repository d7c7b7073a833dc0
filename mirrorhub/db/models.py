"""SQLAlchemy 2 typed models. Alembic migrations are the schema's source of truth; a test
checks that these models and the migrations agree on SQLite and PostgreSQL.

Storage rule: origin files are stored once; per mirror only the files that differ from the
origin (``mirror_file_diffs``) plus scan times, never one row per (file, mirror).
"""

from __future__ import annotations

from datetime import date, datetime

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Date,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class MirrorRow(Base):
    __tablename__ = "mirrors"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    http_url: Mapped[str | None] = mapped_column(String(512))
    https_url: Mapped[str | None] = mapped_column(String(512))
    rsync_url: Mapped[str | None] = mapped_column(String(512))
    country: Mapped[str | None] = mapped_column(String(2))
    continent: Mapped[str | None] = mapped_column(String(2))
    latitude: Mapped[float | None] = mapped_column(Float)
    longitude: Mapped[float | None] = mapped_column(Float)
    asn: Mapped[int | None] = mapped_column(BigInteger)
    networks: Mapped[str] = mapped_column(Text, default="")  # space-separated CIDRs
    capacity: Mapped[int] = mapped_column(Integer, default=1000)  # Mbit/s
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    only_own_networks: Mapped[bool] = mapped_column(Boolean, default=False)
    only_own_asn: Mapped[bool] = mapped_column(Boolean, default=False)
    only_own_country: Mapped[bool] = mapped_column(Boolean, default=False)
    only_own_continent: Mapped[bool] = mapped_column(Boolean, default=False)
    excluded_countries: Mapped[str] = mapped_column(String(512), default="")  # "CN RU"
    scope: Mapped[str] = mapped_column(Text, default="")  # space-separated prefixes; "" = all
    contact: Mapped[str] = mapped_column(String(256), default="")
    notes: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))

    __table_args__ = (
        CheckConstraint("capacity > 0", name="capacity_positive"),
        CheckConstraint("http_url IS NOT NULL OR https_url IS NOT NULL", name="has_http_or_https"),
    )


class MirrorStateRow(Base):
    """What workers learnt about a mirror. One row per mirror."""

    __tablename__ = "mirror_state"

    mirror_id: Mapped[int] = mapped_column(
        ForeignKey("mirrors.id", ondelete="CASCADE"), primary_key=True
    )
    health: Mapped[str] = mapped_column(String(8), default="unknown")
    lagging: Mapped[bool] = mapped_column(Boolean, default=False)
    lag_seconds: Mapped[float | None] = mapped_column(Float)
    scan_failed: Mapped[bool] = mapped_column(Boolean, default=False)
    # POSIX seconds: compared with origin_files.changed_at when the index is built
    last_good_scan: Mapped[float | None] = mapped_column(Float)
    last_scan_error: Mapped[str] = mapped_column(Text, default="")
    scan_failures: Mapped[int] = mapped_column(Integer, default=0)  # consecutive
    tz_offset: Mapped[int] = mapped_column(Integer, default=0)  # seconds, from HTTP listings
    probe_failures: Mapped[int] = mapped_column(Integer, default=0)  # consecutive
    probe_successes: Mapped[int] = mapped_column(Integer, default=0)  # consecutive
    # Per-scheme probe hysteresis, "http=up:0:3 https=down:2:0" (mirrorhub.workers.health)
    scheme_health: Mapped[str] = mapped_column(Text, default="")
    last_probe_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    last_probe_error: Mapped[str] = mapped_column(String(256), default="")
    trace_time: Mapped[float | None] = mapped_column(Float)  # what the mirror's trace file says
    trace_checked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class OriginFileRow(Base):
    __tablename__ = "origin_files"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    path: Mapped[str] = mapped_column(String(1024), unique=True)
    size: Mapped[int] = mapped_column(BigInteger)
    mtime: Mapped[int] = mapped_column(BigInteger)  # POSIX seconds
    sha256: Mapped[str | None] = mapped_column(String(64))
    changed_at: Mapped[float] = mapped_column(Float)  # POSIX seconds


class MirrorFileDiffRow(Base):
    """A file a mirror does not hold in its origin version: missing, wrong size or mtime."""

    __tablename__ = "mirror_file_diffs"

    mirror_id: Mapped[int] = mapped_column(
        ForeignKey("mirrors.id", ondelete="CASCADE"), primary_key=True
    )
    file_id: Mapped[int] = mapped_column(
        ForeignKey("origin_files.id", ondelete="CASCADE"), primary_key=True
    )
    kind: Mapped[str] = mapped_column(String(8))  # "missing" | "size" | "mtime"
    seen_size: Mapped[int | None] = mapped_column(BigInteger)
    seen_mtime: Mapped[int | None] = mapped_column(BigInteger)

    __table_args__ = (
        CheckConstraint("kind IN ('missing', 'size', 'mtime')", name="kind_known"),
        # covering: a full index build reads the differences grouped by file (index only)
        Index("ix_mirror_file_diffs_file_id", "file_id", "mirror_id", "kind"),
    )


class IndexVersionRow(Base):
    """A single counter bumped by every change that the dispatcher index must see."""

    __tablename__ = "index_version"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    version: Mapped[int] = mapped_column(BigInteger, default=0)


class IndexChangeRow(Base):
    """Which files one version bump changed, so dispatchers can update their index in place.

    ``file_ids``: the ids as packed integers (mirrorhub.db.changelog); NULL when the change
    is too wide to list (dispatchers then rebuild). Mirror changes need no entry: every
    update re-reads all mirrors. Old entries are pruned as new ones arrive.
    """

    __tablename__ = "index_changes"

    version: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    file_ids: Mapped[bytes | None] = mapped_column(LargeBinary)
    created_at: Mapped[float] = mapped_column(Float)  # POSIX seconds


class MirrorScanRow(Base):
    """One mirror scan: when, how, what it found, and why it failed if it did."""

    __tablename__ = "mirror_scans"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    mirror_id: Mapped[int] = mapped_column(ForeignKey("mirrors.id", ondelete="CASCADE"))
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    duration_seconds: Mapped[float] = mapped_column(Float)
    method: Mapped[str] = mapped_column(String(8))  # "rsync" | "http"
    ok: Mapped[bool] = mapped_column(Boolean)
    files_seen: Mapped[int] = mapped_column(Integer, default=0)
    files_matching: Mapped[int] = mapped_column(Integer, default=0)
    missing: Mapped[int] = mapped_column(Integer, default=0)
    outdated: Mapped[int] = mapped_column(Integer, default=0)
    extra: Mapped[int] = mapped_column(Integer, default=0)
    tz_offset: Mapped[int] = mapped_column(Integer, default=0)  # seconds, HTTP listings only
    error: Mapped[str] = mapped_column(Text, default="")

    __table_args__ = (Index("ix_mirror_scans_mirror_started", "mirror_id", "started_at"),)


class ProbeResultRow(Base):
    """One health probe of one scheme of a mirror (bounded retention, downsampled)."""

    __tablename__ = "probe_results"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    mirror_id: Mapped[int] = mapped_column(ForeignKey("mirrors.id", ondelete="CASCADE"))
    scheme: Mapped[str] = mapped_column(String(8))  # "http" | "https"
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    ok: Mapped[bool] = mapped_column(Boolean)
    status: Mapped[int | None] = mapped_column(Integer)  # HTTP status when one came back
    latency_ms: Mapped[float | None] = mapped_column(Float)
    error: Mapped[str] = mapped_column(String(256), default="")  # classified: refused, timeout...
    samples: Mapped[int] = mapped_column(Integer, default=1)  # >1 once downsampled

    __table_args__ = (Index("ix_probe_results_mirror_at", "mirror_id", "at"),)


class MirrorFileConfirmationRow(Base):
    """A targeted re-check saw the origin's current version of a file on a mirror.

    Only files changed since the mirror's last good scan get rows; the next good scan
    clears the mirror's rows, so the table stays small (storage rule).
    """

    __tablename__ = "mirror_file_confirmations"

    mirror_id: Mapped[int] = mapped_column(
        ForeignKey("mirrors.id", ondelete="CASCADE"), primary_key=True
    )
    file_id: Mapped[int] = mapped_column(
        ForeignKey("origin_files.id", ondelete="CASCADE"), primary_key=True
    )
    checked_at: Mapped[float] = mapped_column(Float)  # POSIX seconds


class JobRow(Base):
    """A background job and its lease: at most one worker runs a job at a time.

    Keys: ``origin-scan``, ``scan:<mirror id>``, ``probe``, ``recheck``, ``retention``. A
    worker claims a due job by moving ``lease_until`` forward in one conditional UPDATE; a
    worker that dies loses the job when the lease runs out.
    """

    __tablename__ = "jobs"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    next_run: Mapped[float] = mapped_column(Float, default=0.0)  # POSIX seconds
    lease_owner: Mapped[str] = mapped_column(String(128), default="")
    lease_until: Mapped[float] = mapped_column(Float, default=0.0)
    failures: Mapped[int] = mapped_column(Integer, default=0)  # consecutive
    last_started: Mapped[float | None] = mapped_column(Float)
    last_finished: Mapped[float | None] = mapped_column(Float)
    last_error: Mapped[str] = mapped_column(Text, default="")


# --- people, access and history (admin dashboard, API) ---------------------------------------


class UserRow(Base):
    """A person who signs in to the dashboard: ``admin`` (everything) or ``operator``."""

    __tablename__ = "users"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    password_hash: Mapped[str] = mapped_column(String(256))  # argon2id, encoded
    role: Mapped[str] = mapped_column(String(16))  # "admin" | "operator"
    session_epoch: Mapped[int] = mapped_column(Integer, default=0)  # bump: sign out everywhere
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    last_login_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    __table_args__ = (CheckConstraint("role IN ('admin', 'operator')", name="role_known"),)


class MirrorOperatorRow(Base):
    """Which operators may edit which mirrors."""

    __tablename__ = "mirror_operators"

    mirror_id: Mapped[int] = mapped_column(
        ForeignKey("mirrors.id", ondelete="CASCADE"), primary_key=True
    )
    user_id: Mapped[int] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    )


class LoginAttemptRow(Base):
    """Failed sign-ins, for the per-account and per-address limits (pruned as they age)."""

    __tablename__ = "login_attempts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    at: Mapped[float] = mapped_column(Float)  # POSIX seconds
    username: Mapped[str] = mapped_column(String(64))
    address: Mapped[str] = mapped_column(String(64))

    __table_args__ = (
        Index("ix_login_attempts_username_at", "username", "at"),
        Index("ix_login_attempts_address_at", "address", "at"),
    )


class AuditRow(Base):
    """Every change made through the dashboard, the API or the CLI: who, when, what."""

    __tablename__ = "audit_log"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    actor: Mapped[str] = mapped_column(String(128))  # "user:alice", "token:ci", "cli"
    action: Mapped[str] = mapped_column(String(64))  # "mirror.add", "mirror.edit", ...
    target: Mapped[str] = mapped_column(String(256))
    changes: Mapped[str] = mapped_column(Text, default="")  # JSON {field: [before, after]}

    __table_args__ = (Index("ix_audit_log_at", "at"),)


class AppSecretRow(Base):
    """Random keys every dispatcher must share (the session-signing key), made on first use."""

    __tablename__ = "app_secrets"

    name: Mapped[str] = mapped_column(String(32), primary_key=True)
    value: Mapped[str] = mapped_column(String(128))


class ApiTokenRow(Base):
    """An API token for automation; only its SHA-256 is stored."""

    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)  # sha256 hex
    prefix: Mapped[str] = mapped_column(String(16))  # shown in lists to tell tokens apart
    created_by: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    last_used_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


# --- download statistics ---------------------------------------------------------------------


class StatsFileDailyRow(Base):
    __tablename__ = "stats_file_daily"

    day: Mapped[date] = mapped_column(Date, primary_key=True)
    path: Mapped[str] = mapped_column(String(1024), primary_key=True)
    downloads: Mapped[int] = mapped_column(BigInteger, default=0)
    bytes: Mapped[int] = mapped_column(BigInteger, default=0)


class StatsMirrorDailyRow(Base):
    __tablename__ = "stats_mirror_daily"

    day: Mapped[date] = mapped_column(Date, primary_key=True)
    mirror: Mapped[str] = mapped_column(String(64), primary_key=True)  # name; "" = origin
    downloads: Mapped[int] = mapped_column(BigInteger, default=0)
    bytes: Mapped[int] = mapped_column(BigInteger, default=0)


class StatsCountryDailyRow(Base):
    __tablename__ = "stats_country_daily"

    day: Mapped[date] = mapped_column(Date, primary_key=True)
    country: Mapped[str] = mapped_column(String(2), primary_key=True)  # "" = unknown
    downloads: Mapped[int] = mapped_column(BigInteger, default=0)
    bytes: Mapped[int] = mapped_column(BigInteger, default=0)


class StatsMonthlyRow(Base):
    """Monthly totals that outlive the raw daily rows (retention)."""

    __tablename__ = "stats_monthly"

    month: Mapped[date] = mapped_column(Date, primary_key=True)  # first day of the month
    kind: Mapped[str] = mapped_column(String(8), primary_key=True)  # file | mirror | country
    key: Mapped[str] = mapped_column(String(1024), primary_key=True)
    downloads: Mapped[int] = mapped_column(BigInteger, default=0)
    bytes: Mapped[int] = mapped_column(BigInteger, default=0)


# --- the fleet (scale-out) --------------------------------------------------------------------


class WorkerRow(Base):
    """A live worker or dispatcher process, for the page that lists workers and leases."""

    __tablename__ = "processes"

    id: Mapped[str] = mapped_column(String(128), primary_key=True)  # HOST:PID or --id
    role: Mapped[str] = mapped_column(String(16))  # "worker" | "dispatcher"
    host: Mapped[str] = mapped_column(String(256))
    pid: Mapped[int] = mapped_column(Integer)
    started_at: Mapped[float] = mapped_column(Float)
    heartbeat_at: Mapped[float] = mapped_column(Float)
    index_version: Mapped[int | None] = mapped_column(BigInteger)


class MirrorLoadRow(Base):
    """Each dispatcher's current estimate of the traffic it sends to each mirror.

    Dispatchers add up the fresh rows of the others to hold a mirror back fleet-wide.
    """

    __tablename__ = "mirror_load"

    process: Mapped[str] = mapped_column(String(128), primary_key=True)
    mirror: Mapped[str] = mapped_column(String(64), primary_key=True)
    mbps: Mapped[float] = mapped_column(Float)
    updated_at: Mapped[float] = mapped_column(Float)  # POSIX seconds
