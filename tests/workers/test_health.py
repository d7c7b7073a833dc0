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
    decode_scheme_health,
    down_schemes,
    encode_scheme_health,
    judge_response,
    mirror_health,
    mirror_origins,
    next_health,
    next_round_counts,
    next_scheme_health,
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
    assert not round_ok([True, False])  # counted as a failed round; health is per scheme
    assert not round_ok([])


# --- per-scheme health ------------------------------------------------------------------

HTTP, HTTPS = Scheme.HTTP, Scheme.HTTPS


def run_schemes(rounds: str, down: int = 2, up: int = 2) -> str:
    """Rounds of "<http><https>" results ("+" good, "-" bad, "." not offered), space
    separated; per round: the HTTP letter, the HTTPS letter ("." when absent) and the
    mirror-wide one, e.g. "UDU"."""
    states: dict[Scheme, HealthState] = {}
    out = []
    for r in rounds.split():
        results = [(s, c == "+") for s, c in zip((HTTP, HTTPS), r, strict=True) if c != "."]
        states = next_scheme_health(states, results, down_after=down, up_after=up)
        letters = [LETTER[states[s].health] if s in states else "." for s in (HTTP, HTTPS)]
        out.append("".join(letters) + LETTER[mirror_health(states)])
    return " ".join(out)


@pytest.mark.parametrize(
    ("rounds", "expected"),
    [
        # Both fine: both UP at once (UNKNOWN is trusted; one good probe confirms).
        ("++ ++", "UUU UUU"),
        # Broken HTTPS: HTTPS goes DOWN after two failures, the mirror stays UP by HTTP.
        ("+- +- +-", "U?U UDU UDU"),
        # ... and needs two good probes in a row to come back.
        ("+- +- ++ +- ++ ++", "U?U UDU UDU UDU UDU UUU"),
        # Broken HTTP, fine HTTPS: the mirror-wide health is UP.
        ("-+ -+", "?UU DUU"),
        # Every scheme DOWN: the mirror is DOWN; one scheme back (after up_after) lifts it.
        ("-- --", "??? DDD"),
        ("-- -- +- +-", "??? DDD DDD UDU"),
        # One scheme DOWN, the other not yet judged: UNKNOWN (trusted, per scheme).
        ("-- -- -+", "??? DDD DDD"),
        # Schemes are independent: alternating failures never flip either.
        ("+- -+ +- -+", "U?U UUU UUU UUU"),
        # HTTP only.
        ("+. -. -.", "U.U U.U D.D"),
        # A scheme no longer offered is forgotten; a new one starts UNKNOWN.
        ("+- +- +.", "U?U UDU U.U"),
        ("-. -. .-", "?.? D.D .??"),
    ],
)
def test_scheme_hysteresis(rounds: str, expected: str) -> None:
    assert run_schemes(rounds) == expected


def test_scheme_hysteresis_thresholds_of_three() -> None:
    assert run_schemes("+- +- +- ++ ++ ++", down=3, up=3) == "U?U U?U UDU UDU UDU UUU"


@pytest.mark.parametrize(
    ("schemes", "health"),
    [
        ({}, Health.UNKNOWN),
        ({HTTP: Health.UP}, Health.UP),
        ({HTTP: Health.DOWN}, Health.DOWN),
        ({HTTP: Health.UNKNOWN}, Health.UNKNOWN),
        ({HTTP: Health.UP, HTTPS: Health.DOWN}, Health.UP),
        ({HTTP: Health.DOWN, HTTPS: Health.UP}, Health.UP),
        ({HTTP: Health.DOWN, HTTPS: Health.DOWN}, Health.DOWN),
        ({HTTP: Health.UNKNOWN, HTTPS: Health.DOWN}, Health.UNKNOWN),
        ({HTTP: Health.UNKNOWN, HTTPS: Health.UP}, Health.UP),
    ],
)
def test_mirror_health_from_schemes(schemes: dict[Scheme, Health], health: Health) -> None:
    states = {s: HealthState(h) for s, h in schemes.items()}
    assert mirror_health(states) is health
    assert down_schemes(states) == {s for s, h in schemes.items() if h is Health.DOWN}


def test_round_counters() -> None:
    assert next_round_counts(0, 4, False) == (1, 0)
    assert next_round_counts(3, 0, True) == (0, 1)
    assert next_round_counts(COUNTER_CAP, 0, False) == (COUNTER_CAP, 0)


def test_scheme_health_encoding_round_trips() -> None:
    states = {
        HTTPS: HealthState(Health.DOWN, 2, 0),
        HTTP: HealthState(Health.UP, 0, 3),
    }
    text = encode_scheme_health(states)
    assert text == "http=up:0:3 https=down:2:0"  # sorted by scheme
    assert decode_scheme_health(text) == states
    assert encode_scheme_health({}) == ""
    big = {HTTP: HealthState(Health.UP, 0, COUNTER_CAP)}
    assert decode_scheme_health(encode_scheme_health(big)) == big


UP3 = HealthState(Health.UP, 0, 3)
DOWN2 = HealthState(Health.DOWN, 2, 0)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (None, {}),
        ("", {}),
        ("http=up:0:3", {HTTP: UP3}),
        ("https=down:2:0", {HTTPS: DOWN2}),
        ("https=down:2:0 http=up:0:3", {HTTP: UP3, HTTPS: DOWN2}),  # any order
        # Strict, per token: what does not match exactly leaves that scheme UNKNOWN.
        ("http=up:0:3 https=sideways:2:0", {HTTP: UP3}),  # unknown health
        ("http=up:0:3 ftp=down:2:0", {HTTP: UP3}),  # unknown scheme
        ("HTTP=up:0:3", {}),
        ("http=UP:0:3", {}),
        ("http=up:0", {}),
        ("http=up:0:3:4", {}),
        ("http=up:-1:3", {}),
        ("http=up:0:3x", {}),
        ("http = up:0:3", {}),
        ("http=up:0:12345678", {}),  # more than 7 digits
        ("http=up:0:٣", {}),  # only ASCII digits
        ("http=up:0:3\n", {}),
        ("http=up:0:3,https=down:2:0", {}),
        ("http=up:0:3  https=down:2:0", {HTTP: UP3, HTTPS: DOWN2}),  # an empty token
        ("http=up:0:3 http=down:2:0 https=down:2:0", {HTTPS: DOWN2}),  # repeated: unknown
        ("http=up:0:9999999", {HTTP: HealthState(Health.UP, 0, COUNTER_CAP)}),  # capped
    ],
)
def test_scheme_health_parse_is_strict(
    text: str | None, expected: dict[Scheme, HealthState]
) -> None:
    assert decode_scheme_health(text) == expected


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
