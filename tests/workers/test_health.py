"""Pure parts of the health probe: hysteresis, round verdicts, answers, targets."""

from __future__ import annotations

import pytest

from mirrorhub.domain import Health, Mirror, Scheme
from mirrorhub.errors import ProbeFailed
from mirrorhub.workers.health import (
    COUNTER_CAP,
    HealthState,
    MirrorProbe,
    SchemeResult,
    Target,
    choose_target,
    judge_response,
    mirror_origins,
    next_health,
    round_ok,
)
from mirrorhub.workers.netpolicy import AddressRefused, ResolveFailed
from mirrorhub.workers.probe import classify_error

LETTER = {Health.UP: "U", Health.DOWN: "D", Health.UNKNOWN: "?"}


def run(rounds: str, start: Health = Health.UNKNOWN, down: int = 2, up: int = 2) -> str:
    """Health after each round of ``rounds`` ("+" good, "-" bad), as letters."""
    state = HealthState(start)
    out = []
    for r in rounds:
        state = next_health(state, r == "+", down_after=down, up_after=up)
        out.append(LETTER[state.health])
    return "".join(out)


@pytest.mark.parametrize(
    ("start", "rounds", "expected"),
    [
        # From UNKNOWN (trusted by selection): one success confirms, N failures take it down.
        ("?", "+", "U"),
        ("?", "-", "?"),
        ("?", "--", "?D"),
        ("?", "-+", "?U"),
        ("?", "-+-", "?UU"),
        # UP: one failed round never flips it; two in a row do.
        ("U", "-", "U"),
        ("U", "-+-+-+", "UUUUUU"),
        ("U", "--", "UD"),
        ("U", "---", "UDD"),
        # DOWN: needs two good rounds in a row to come back.
        ("D", "+", "D"),
        ("D", "++", "DU"),
        ("D", "+-+-+", "DDDDD"),
        ("D", "+-++", "DDDU"),
        # The full cycle the probe tests drive against real servers.
        ("?", "+--++", "UUDDU"),
        ("?", "+--+-++", "UUDDDDU"),
    ],
)
def test_hysteresis(start: str, rounds: str, expected: str) -> None:
    health = {v: k for k, v in LETTER.items()}[start]
    assert run(rounds, health) == expected


def test_thresholds_of_one_flip_at_once() -> None:
    assert run("-+-+", Health.UP, down=1, up=1) == "DUDU"


def test_thresholds_of_three() -> None:
    assert run("---+++", Health.UP, down=3, up=3) == "UUDDDU"


def test_counters_are_consecutive_and_capped() -> None:
    state = next_health(HealthState(Health.UP, 5, 0), True, down_after=2, up_after=2)
    assert (state.failures, state.successes) == (0, 1)
    state = next_health(HealthState(Health.UP, 0, COUNTER_CAP), True, down_after=2, up_after=2)
    assert state.successes == COUNTER_CAP


def test_round_needs_every_scheme() -> None:
    assert round_ok([True, True])
    assert not round_ok([True, False])  # broken HTTPS takes the mirror out
    assert not round_ok([])


def _result(scheme: Scheme, ok: bool, trace: float | None = None, error: str = "") -> SchemeResult:
    return SchemeResult(scheme, "http://x/", 0.0, ok, 200 if ok else None, 1.0, error, trace)


def test_mirror_probe_summary() -> None:
    probe = MirrorProbe(
        1,
        "m",
        Target("t", is_trace=True),
        (_result(Scheme.HTTP, True, 200.0), _result(Scheme.HTTPS, False, error="tls")),
    )
    assert not probe.ok
    assert probe.error == "https: tls"
    assert probe.mirror_trace == 200.0
    both = MirrorProbe(
        1, "m", Target("t"), (_result(Scheme.HTTP, True, 200.0), _result(Scheme.HTTPS, True, 100.0))
    )
    assert both.ok and both.mirror_trace == 100.0  # the older back end counts


# --- judging answers --------------------------------------------------------------------

MIRROR = Mirror(
    id=1,
    name="m",
    http_url="http://m.example/pub/",
    https_url="https://m.example:8443/pub/",
)
ALLOWED = mirror_origins(MIRROR)
URL = "http://m.example/pub/x"


def test_origins() -> None:
    assert mirror_origins(MIRROR) == {("http", "m.example", 80), ("https", "m.example", 8443)}


@pytest.mark.parametrize(
    ("status", "location", "ok", "error", "follow"),
    [
        (200, None, True, "", None),
        (204, None, True, "", None),
        (404, None, False, "http 404", None),
        (500, None, False, "http 500", None),
        (304, None, False, "http 304", None),
        (302, None, False, "http 302", None),
        (302, "/pub/y", False, "", "http://m.example/pub/y"),
        (301, "y", False, "", "http://m.example/pub/y"),
        (308, "https://m.example:8443/pub/x", False, "", "https://m.example:8443/pub/x"),
        (307, "HTTP://M.EXAMPLE:80/pub/x", False, "", "http://M.EXAMPLE:80/pub/x"),
        (302, "https://m.example/pub/x", False, "redirect elsewhere", None),  # port 443
        (302, "http://evil.example/pub/x", False, "redirect elsewhere", None),
        (302, "//evil.example/pub/x", False, "redirect elsewhere", None),
        (302, "http://m.example@evil.example/", False, "redirect elsewhere", None),
        (302, "http://169.254.169.254/latest/", False, "redirect elsewhere", None),
        (302, "file:///etc/passwd", False, "redirect elsewhere", None),
        (302, "http://m.example:99999/", False, "redirect elsewhere", None),
    ],
)
def test_judge_response(
    status: int, location: str | None, ok: bool, error: str, follow: str | None
) -> None:
    verdict = judge_response(status, location, URL, ALLOWED, redirects_left=3)
    assert (verdict.ok, verdict.error, verdict.follow) == (ok, error, follow)


def test_redirect_budget() -> None:
    verdict = judge_response(302, "/pub/y", URL, ALLOWED, redirects_left=0)
    assert verdict.error == "too many redirects"


# --- classifying exceptions -------------------------------------------------------------


def test_classify_error() -> None:
    import ssl

    import httpcore

    assert classify_error(ProbeFailed("too large")) == "too large"
    assert classify_error(AddressRefused("10.0.0.1 is a private address")) == "private address"
    assert classify_error(ResolveFailed("no such host")) == "dns"
    assert classify_error(TimeoutError()) == "timeout"
    assert classify_error(httpcore.ConnectTimeout("x")) == "timeout"
    refused = httpcore.ConnectError("All connection attempts failed")
    refused.__cause__ = OSError("All connection attempts failed")
    refused.__cause__.__cause__ = ConnectionRefusedError(111, "refused")
    assert classify_error(refused) == "refused"
    tls = httpcore.ConnectError("wrong version")
    tls.__cause__ = ssl.SSLError(1, "WRONG_VERSION_NUMBER")
    assert classify_error(tls) == "tls"
    assert classify_error(httpcore.RemoteProtocolError("x")) == "protocol error"
    assert classify_error(httpcore.ReadError("x")) == "connection failed"


# --- choosing the target ----------------------------------------------------------------

SMALL = [(10, "pub/iso/a.txt"), (11, "pub/doc/b.txt"), (12, "pub/iso/c.txt")]


def test_trace_file_first() -> None:
    assert choose_target(MIRROR, True, "project/trace/m", SMALL, {}) == Target(
        "project/trace/m", is_trace=True
    )


def test_trace_out_of_scope_falls_back_to_a_held_file() -> None:
    scoped = Mirror(id=1, name="m", http_url="http://m/", https_url=None, scope=("pub/iso/",))
    assert choose_target(scoped, True, "project/trace/m", SMALL, {}) == Target("pub/iso/a.txt")
    assert choose_target(scoped, True, None, SMALL, {1: frozenset({10})}) == Target("pub/iso/c.txt")


def test_unscanned_or_nothing_held_probes_the_base_url() -> None:
    assert choose_target(MIRROR, False, None, SMALL, {}) == Target("")
    assert choose_target(MIRROR, True, None, SMALL, {1: frozenset({10, 11, 12})}) == Target("")
