"""Probe history retention: the pure plan, and its apply on both databases."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from mirrorhub.db.models import MirrorRow, ProbeResultRow
from mirrorhub.settings import Settings
from mirrorhub.workers.retention import (
    ProbeSample,
    apply_retention,
    cutoffs,
    merge,
    plan_downsample,
)

H = 3600.0
NOW = datetime(2024, 11, 29, 12, 30, tzinfo=UTC).timestamp()
HOUR0 = NOW // H * H - 48 * H  # a whole hour two days ago


def sample(
    i: int, at: float, ok: bool = True, ms: float | None = 10.0, **kw: object
) -> ProbeSample:
    values: dict[str, object] = {
        "id": i, "mirror_id": 1, "scheme": "http", "at": at, "ok": ok,
        "status": 200 if ok else 500, "latency_ms": ms, "error": "" if ok else "http 500",
    }  # fmt: skip
    values.update(kw)
    return ProbeSample(**values)  # type: ignore[arg-type]


def test_cutoffs() -> None:
    delete_before, downsample_before = cutoffs(NOW, 14)
    assert delete_before == NOW - 14 * 86_400
    assert downsample_before == NOW // H * H - 24 * H  # whole hours only


def test_merge_majority_mean_and_most_common_error() -> None:
    rows = [
        sample(1, HOUR0 + 60, ok=True, ms=10.0),
        sample(2, HOUR0 + 360, ok=False, ms=None, error="timeout", status=None),
        sample(3, HOUR0 + 660, ok=False, ms=30.0, error="http 500"),
        sample(4, HOUR0 + 960, ok=False, ms=50.0, error="timeout", status=None),
    ]
    m = merge(rows, HOUR0)
    assert (m.id, m.at, m.samples, m.ok) == (None, HOUR0, 4, False)
    assert m.latency_ms == 30.0  # mean of the timed ones
    assert m.error == "timeout"
    assert m.status is None  # the latest


def test_merge_ties_are_not_ok_and_weights_count() -> None:
    assert not merge([sample(1, HOUR0), sample(2, HOUR0 + 1, ok=False)], HOUR0).ok
    weighted = merge(
        [sample(1, HOUR0, samples=3, ms=10.0), sample(2, HOUR0 + 1, ok=False, ms=50.0)], HOUR0
    )
    assert weighted.ok and weighted.samples == 4 and weighted.error == ""
    assert weighted.latency_ms == 20.0


def test_plan_groups_by_mirror_scheme_and_hour() -> None:
    rows = [
        sample(1, HOUR0 + 1),
        sample(2, HOUR0 + 2),
        sample(3, HOUR0 + 3, scheme="https"),
        sample(4, HOUR0 + 4, scheme="https"),
        sample(5, HOUR0 + 5, mirror_id=2),  # alone in its group: left as it is
        sample(6, HOUR0 + H + 1),
        sample(7, HOUR0 + H + 2),
        sample(8, HOUR0 + 2 * H),  # alone
    ]
    plan = plan_downsample(rows)
    assert sorted(plan.delete_ids) == [1, 2, 3, 4, 6, 7]
    assert [(r.mirror_id, r.scheme, r.at, r.samples) for r in plan.inserts] == [
        (1, "http", HOUR0, 2),
        (1, "http", HOUR0 + H, 2),
        (1, "https", HOUR0, 2),
    ]


def test_plan_of_nothing() -> None:
    assert plan_downsample([]).inserts == ()


async def test_apply_deletes_old_and_downsamples(
    db_url: str, sessions: async_sessionmaker[AsyncSession]
) -> None:
    def ts(t: float) -> datetime:
        return datetime.fromtimestamp(t, UTC)

    async with sessions() as session, session.begin():
        now = ts(NOW)
        mirror = MirrorRow(name="m", http_url="http://m/", created_at=now, updated_at=now)
        session.add(mirror)
        await session.flush()

        def row(at: float, ok: bool = True, ms: float = 10.0) -> ProbeResultRow:
            return ProbeResultRow(
                mirror_id=mirror.id, scheme="http", at=ts(at), ok=ok, status=200,
                latency_ms=ms, error="" if ok else "timeout", samples=1,
            )  # fmt: skip

        session.add_all(
            [
                row(NOW - 20 * 86_400),  # past the history: deleted
                *(row(HOUR0 + i * 300, ok=i != 0, ms=10.0 * (i + 1)) for i in range(12)),
                row(NOW - 3600),  # recent: untouched
                row(NOW - 60),
            ]
        )
    result = await apply_retention(sessions, Settings(probe_history_days=14), clock=lambda: NOW)
    assert (result.deleted, result.merged, result.hourly_rows) == (1, 12, 1)

    async with sessions() as session:
        rows = (await session.scalars(select(ProbeResultRow).order_by(ProbeResultRow.at))).all()
    assert [r.samples for r in rows] == [12, 1, 1]
    hourly = rows[0]
    at = hourly.at if hourly.at.tzinfo else hourly.at.replace(tzinfo=UTC)
    assert at.timestamp() == HOUR0
    assert hourly.ok and hourly.latency_ms == 65.0 and hourly.error == ""

    again = await apply_retention(sessions, Settings(probe_history_days=14), clock=lambda: NOW)
    assert (again.deleted, again.merged, again.hourly_rows) == (0, 0, 0), "idempotent"
