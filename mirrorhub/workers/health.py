"""Health probes, the pure part: what to request, how to judge an answer, and the
hysteresis rule that turns probe rounds into :class:`~mirrorhub.domain.Health`.

Rules (each one is a decision the status page and the tests rely on):

- **What is requested.** The trace file, when the origin has one and the mirror's scope
  covers it (it also gives the lag). Otherwise the smallest origin file the mirror's last
  good scan saw in its current version (in scope, not in its difference set), so a healthy
  answer means "serves the tree", not just "a web server answers". Otherwise (never scanned,
  nothing small enough known) the mirror's base URL.
- **What counts as success.** A 2xx answer, after at most :data:`MAX_REDIRECTS` redirects
  that stay on the mirror (same scheme, host and port as one of its base URLs). A redirect
  anywhere else fails as ``"redirect elsewhere"``: we never follow it, and neither should a
  client's download depend on it.
- **Hysteresis, per scheme.** Each scheme a mirror offers (HTTP, HTTPS) has its own health:
  ``down_after`` consecutive failed probes take it DOWN; a DOWN scheme needs ``up_after``
  consecutive good probes to come back. UNKNOWN (never probed) is already trusted by
  selection, so one good probe makes it UP, and it goes DOWN by the same ``down_after`` rule
  as an UP scheme. One failed probe never flips a scheme. A scheme the mirror no longer
  offers is forgotten; a newly offered one starts UNKNOWN.
- **The mirror-wide health** follows from its schemes: UP when at least one scheme is UP,
  DOWN when every offered scheme is DOWN, UNKNOWN otherwise (say HTTP not yet judged and
  HTTPS DOWN). Selection excludes a DOWN mirror for every request, and a mirror with a DOWN
  scheme only for requests that cannot use another scheme (see
  :attr:`~mirrorhub.domain.MirrorState.down_schemes`): a mirror with broken HTTPS keeps its
  HTTP clients.
- **A round** is "good" when every offered scheme succeeded (:func:`round_ok`); the
  mirror-wide ``probe_failures`` / ``probe_successes`` counters count such rounds for the
  status page, but no longer drive health.
- **Storage.** The per-scheme states live in ``mirror_state.scheme_health``, one token per
  scheme, sorted by scheme, separated by one space:
  ``"http=up:0:3 https=down:2:0"`` is ``<scheme>=<health>:<failures>:<successes>`` (the
  consecutive counters, decimal, at most 7 digits). Parsing is strict, per token
  (:func:`decode_scheme_health`): a token that does not match exactly, names an unknown
  scheme or health, or repeats a scheme, is ignored, so that scheme is UNKNOWN (trusted)
  until probed again. ``""`` (never probed) means every scheme UNKNOWN.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from urllib.parse import urljoin, urlsplit

from mirrorhub.domain import Health, Mirror, Scheme

MAX_REDIRECTS = 3
COUNTER_CAP = 1_000_000  # consecutive counters stop here (an INTEGER column, years of rounds)


@dataclass(frozen=True, slots=True)
class HealthState:
    health: Health = Health.UNKNOWN
    failures: int = 0  # consecutive failed rounds
    successes: int = 0  # consecutive good rounds


def next_health(
    prev: HealthState, round_ok: bool, *, down_after: int, up_after: int
) -> HealthState:
    """The state after one probe round (see the module docstring for the rule)."""
    if round_ok:
        successes = min(prev.successes + 1, COUNTER_CAP)
        if prev.health is Health.DOWN:
            health = Health.UP if successes >= up_after else Health.DOWN
        else:
            health = Health.UP
        return HealthState(health, 0, successes)
    failures = min(prev.failures + 1, COUNTER_CAP)
    health = Health.DOWN if failures >= down_after else prev.health
    return HealthState(health, failures, 0)


def next_scheme_health(
    prev: Mapping[Scheme, HealthState],
    results: Iterable[tuple[Scheme, bool]],
    *,
    down_after: int,
    up_after: int,
) -> dict[Scheme, HealthState]:
    """Every probed scheme's state after this round, by :func:`next_health` from its own
    previous state (UNKNOWN when it has none). Schemes not probed (no longer offered) are
    dropped."""
    return {
        scheme: next_health(
            prev.get(scheme, HealthState()), ok, down_after=down_after, up_after=up_after
        )
        for scheme, ok in results
    }


def mirror_health(schemes: Mapping[Scheme, HealthState]) -> Health:
    """UP when a scheme is UP, DOWN when every (and at least one) scheme is DOWN."""
    healths = [s.health for s in schemes.values()]
    if Health.UP in healths:
        return Health.UP
    if healths and all(h is Health.DOWN for h in healths):
        return Health.DOWN
    return Health.UNKNOWN


def down_schemes(schemes: Mapping[Scheme, HealthState]) -> frozenset[Scheme]:
    return frozenset(scheme for scheme, s in schemes.items() if s.health is Health.DOWN)


def next_round_counts(failures: int, successes: int, ok: bool) -> tuple[int, int]:
    """The mirror-wide consecutive (failed, good) round counters after one round."""
    if ok:
        return 0, min(successes + 1, COUNTER_CAP)
    return min(failures + 1, COUNTER_CAP), 0


_TOKEN = re.compile(r"([a-z]+)=([a-z]+):([0-9]{1,7}):([0-9]{1,7})")


def encode_scheme_health(schemes: Mapping[Scheme, HealthState]) -> str:
    """The ``mirror_state.scheme_health`` text (see the module docstring)."""
    return " ".join(
        f"{scheme.value}={s.health.value}:{min(s.failures, COUNTER_CAP)}:"
        f"{min(s.successes, COUNTER_CAP)}"
        for scheme, s in sorted(schemes.items(), key=lambda item: item[0])
    )


def decode_scheme_health(text: str | None) -> dict[Scheme, HealthState]:
    """Parse ``mirror_state.scheme_health``; what does not parse is UNKNOWN (left out)."""
    found: dict[Scheme, HealthState] = {}
    repeated: set[Scheme] = set()
    for token in (text or "").split(" "):
        match = _TOKEN.fullmatch(token)
        if match is None:
            continue
        name, health, failures, successes = match.groups()
        try:
            scheme, state = Scheme(name), Health(health)
        except ValueError:
            continue
        if scheme in found:
            repeated.add(scheme)
        found[scheme] = HealthState(
            state, min(int(failures), COUNTER_CAP), min(int(successes), COUNTER_CAP)
        )
    for scheme in repeated:
        del found[scheme]
    return found


def round_ok(scheme_ok: Iterable[bool]) -> bool:
    """A round is good when every offered scheme answered well (and at least one was tried)."""
    oks = list(scheme_ok)
    return bool(oks) and all(oks)


def offered_schemes(mirror: Mirror) -> list[tuple[Scheme, str]]:
    out: list[tuple[Scheme, str]] = []
    if mirror.http_url:
        out.append((Scheme.HTTP, mirror.http_url))
    if mirror.https_url:
        out.append((Scheme.HTTPS, mirror.https_url))
    return out


# --- judging one answer -----------------------------------------------------------------


def _origin(url: str) -> tuple[str, str, int] | None:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return None
    try:
        port = parts.port
    except ValueError:
        return None
    return parts.scheme, parts.hostname.lower(), port or (443 if parts.scheme == "https" else 80)


def mirror_origins(mirror: Mirror) -> frozenset[tuple[str, str, int]]:
    """(scheme, host, port) of the mirror's base URLs: where its redirects may lead."""
    found = (_origin(url) for _, url in offered_schemes(mirror))
    return frozenset(o for o in found if o is not None)


@dataclass(frozen=True, slots=True)
class Verdict:
    ok: bool
    error: str = ""  # classified reason when not ok
    follow: str | None = None  # a redirect on the mirror: request this URL next


def judge_response(
    status: int,
    location: str | None,
    url: str,
    allowed: frozenset[tuple[str, str, int]],
    redirects_left: int,
) -> Verdict:
    """Judge one HTTP answer of a probe: success, a redirect to follow, or an error."""
    if 200 <= status < 300:
        return Verdict(ok=True)
    if status in (301, 302, 303, 307, 308):
        if not location:
            return Verdict(ok=False, error=f"http {status}")
        target = urljoin(url, location.strip())
        if _origin(target) not in allowed:
            return Verdict(ok=False, error="redirect elsewhere")
        if redirects_left <= 0:
            return Verdict(ok=False, error="too many redirects")
        return Verdict(ok=False, follow=target)
    return Verdict(ok=False, error=f"http {status}")


# --- what to request --------------------------------------------------------------------


def in_scope(path: str, scope: Sequence[str]) -> bool:
    return not scope or any(path.startswith(prefix) for prefix in scope)


@dataclass(frozen=True, slots=True)
class Target:
    path: str  # published path to request; "" = the base URL itself
    is_trace: bool = False


def choose_target(
    mirror: Mirror,
    scanned: bool,
    trace_path: str | None,
    small_files: Sequence[tuple[int, str]],
    diff_ids: Mapping[int, frozenset[int]],
) -> Target:
    """What to request from ``mirror`` this round.

    ``trace_path`` is the trace file when the origin has a readable one (else None);
    ``small_files`` the origin's smallest files as (id, path), smallest first;
    ``diff_ids`` the ids among them that each mirror does not hold in their origin version.
    """
    if trace_path is not None and in_scope(trace_path, mirror.scope):
        return Target(trace_path, is_trace=True)
    if scanned:
        differs = diff_ids.get(mirror.id, frozenset())
        for file_id, path in small_files:
            if file_id not in differs and in_scope(path, mirror.scope):
                return Target(path)
    return Target("")


# --- what a round saw -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SchemeResult:
    """One probe of one scheme of a mirror."""

    scheme: Scheme
    url: str
    at: float  # POSIX seconds, when the probe started
    ok: bool
    status: int | None = None  # the last HTTP status seen
    latency_ms: float | None = None  # request start to the final answer's headers
    error: str = ""  # classified: "refused", "timeout", "http 500", ... ("" when ok)
    trace_time: float | None = None  # what the trace file said, when one was read


@dataclass(frozen=True, slots=True)
class MirrorProbe:
    """One round's probes of one mirror."""

    mirror_id: int
    name: str
    target: Target
    results: tuple[SchemeResult, ...]

    @property
    def ok(self) -> bool:
        return round_ok(r.ok for r in self.results)

    @property
    def mirror_trace(self) -> float | None:
        """The oldest trace any scheme showed (schemes may reach different back ends)."""
        times = [r.trace_time for r in self.results if r.ok and r.trace_time is not None]
        return min(times) if times else None

    @property
    def error(self) -> str:
        return "; ".join(f"{r.scheme}: {r.error}" for r in self.results if not r.ok)
