"""The scan comparison: origin rows vs. what a mirror listed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mirrorhub.workers.listing import parse_listing, size_range
from mirrorhub.workers.reconcile import (
    Diff,
    DiffKind,
    OriginRow,
    ScanResult,
    compare,
    compare_detecting_tz,
    detect_tz_offset,
    mtime_matches,
)
from mirrorhub.workers.rsync_list import parse_rsync_listing, seen_files
from mirrorhub.workers.seen import SIZE_UNKNOWN_MAX, SeenFile

FIXTURES = Path(__file__).parent / "fixtures"
T = 1704164645  # 2024-01-02 03:04:05 UTC
H = 3600


def exact(path: str, size: int, mtime: int | None) -> SeenFile:
    return SeenFile(path, size, size, mtime, 1)


def by_path(*files: SeenFile) -> dict[str, SeenFile]:
    return {f.path: f for f in files}


ORIGIN: list[OriginRow] = [
    (1, "pub/iso/a.iso", 1000, T),
    (2, "pub/iso/b.iso", 2000, T),
    (3, "pub/src/c.tar", 3000, T),
]


@pytest.mark.parametrize(
    ("seen", "scope", "diffs", "counts"),
    [
        pytest.param(
            by_path(exact("pub/iso/a.iso", 1000, T), exact("pub/iso/b.iso", 2000, T)),
            (),
            [Diff(3, DiffKind.MISSING, None, None)],
            (2, 2, 1, 0, 0, 0),
            id="missing",
        ),
        pytest.param(
            by_path(exact("pub/iso/a.iso", 999, T), exact("pub/iso/b.iso", 2000, T + 1)),
            ("pub/iso/",),
            [Diff(1, DiffKind.SIZE, 999, T), Diff(2, DiffKind.MTIME, 2000, T + 1)],
            (2, 0, 0, 2, 0, 1),
            id="size-and-mtime-in-scope",
        ),
        pytest.param(
            by_path(exact("pub/iso/a.iso", 1000, T + 86400)),  # newer, same size
            ("pub/iso/a",),
            [Diff(1, DiffKind.MTIME, 1000, T + 86400)],
            (1, 0, 0, 1, 0, 2),
            id="newer-is-a-difference",
        ),
        pytest.param(
            by_path(exact("pub/iso/a.iso", 999, T + 5)),  # both wrong: size wins
            ("pub/iso/a.iso",),
            [Diff(1, DiffKind.SIZE, 999, T + 5)],
            (1, 0, 0, 1, 0, 2),
            id="size-before-mtime",
        ),
        pytest.param(
            by_path(
                exact("pub/iso/a.iso", 1000, T),
                exact("pub/iso/b.iso", 2000, T),
                exact("pub/src/c.tar", 3000, T),
                exact("pub/old.iso", 1, T),
                exact("elsewhere", 1, T),
            ),
            ("pub/iso/",),
            [],
            (5, 2, 0, 0, 2, 1),
            id="extra-and-seen-out-of-scope",
        ),
        pytest.param(
            {},
            ("pub/nothing/",),
            [],
            (0, 0, 0, 0, 0, 3),
            id="empty-scope-match",
        ),
        pytest.param(
            by_path(
                SeenFile("pub/iso/a.iso", 0, SIZE_UNKNOWN_MAX, None, 60),
                SeenFile("pub/iso/b.iso", 1024, 1100, None, 60),
            ),
            ("pub/iso/",),
            [Diff(2, DiffKind.SIZE, 1062, None)],
            (2, 1, 0, 1, 0, 1),
            id="undated-and-unsized",
        ),
    ],
)
def test_compare(
    seen: dict[str, SeenFile],
    scope: tuple[str, ...],
    diffs: list[Diff],
    counts: tuple[int, int, int, int, int, int],
) -> None:
    result = compare(ORIGIN, seen, scope)
    assert result.diffs == diffs
    assert (
        result.files_seen,
        result.files_matching,
        result.missing,
        result.outdated,
        result.extra,
        result.out_of_scope,
    ) == counts
    assert result.compared == len(ORIGIN) - result.out_of_scope


@pytest.mark.parametrize(
    ("origin", "listed", "precision", "offset", "expected"),
    [
        (T, T, 1, 0, True),
        (T, T + 1, 1, 0, False),
        (T, T - 1, 1, 0, False),
        (T, T - T % 60, 60, 0, True),  # 03:04 on the page for 03:04:05
        (T, T - T % 60 + 59, 60, 0, True),
        (T, T - T % 60 + 60, 60, 0, False),  # 03:05
        (T, T - T % 60 - 60, 60, 0, False),  # 03:03
        (T, T - T % 60 + H, 60, H, True),
        (T, T - T % 60 + H, 60, 0, False),
        (T, T + 2 * H, 1, 2 * H, True),
        (T, None, 60, 0, True),  # an undated listing cannot tell
    ],
)
def test_mtime_matches(
    origin: int, listed: int | None, precision: int, offset: int, expected: bool
) -> None:
    seen = SeenFile("x", 0, 0, listed, precision)
    assert mtime_matches(origin, seen, offset) is expected


def test_tz_offset_is_removed_from_seen_mtime() -> None:
    seen = by_path(SeenFile("pub/iso/a.iso", 1000, 1000, T + H - T % 60 + 120, 60))
    result = compare(ORIGIN[:1], seen, (), tz_offset=H)
    assert result.diffs == [Diff(1, DiffKind.MTIME, 1000, T - T % 60 + 120)]
    assert result.tz_offset == H


def test_tz_detection_then_compare() -> None:
    origin = [(i, f"f{i}", 100 + i, T + 7919 * i) for i in range(10)]
    local = {
        f"f{i}": SeenFile(f"f{i}", 100 + i, 100 + i, (m + H) - (m + H) % 60, 60)
        for i, _, _, m in origin
    }
    local["f9"] = SeenFile("f9", 109, 109, T, 60)  # one truly outdated file
    assert detect_tz_offset(origin, local) == H
    assert compare(origin, local).files_matching == 0
    result = compare_detecting_tz(origin, local)
    assert result.tz_offset == H
    assert result.files_matching == 9
    assert [d.file_id for d in result.diffs] == [9]


def test_tz_detection_ignores_files_whose_size_differs() -> None:
    origin = [(i, f"f{i}", 100, T + 7919 * i) for i in range(6)]
    seen = {p: SeenFile(p, 5, 5, m + H, 1) for _, p, _, m in origin}
    assert detect_tz_offset(origin, seen) == 0


# --- end to end on the real fixtures -------------------------------------------------------

TREE = json.loads((FIXTURES / "tree.json").read_text())
ORIGIN_TREE: list[OriginRow] = [
    (i, path, size, mtime)
    for i, (path, (size, mtime)) in enumerate(
        sorted({**TREE["files"], **TREE["rsync_only"]}.items()), 1
    )
]
HTML_DIRS = ("pub/", "pub/iso/", "pub/dir with space/")


def html_seen(pages: dict[str, str], host: str) -> dict[str, SeenFile]:
    seen: dict[str, SeenFile] = {}
    for directory, fixture in pages.items():
        html = (FIXTURES / fixture).read_text()
        url = f"http://{host}/{directory.replace(' ', '%20')}"
        seen.update((f.path, f) for f in parse_listing(html, url).files(directory))
    return seen


def html_origin() -> list[OriginRow]:
    # Only the files the captured pages can show: one level of the captured directories.
    return [
        row
        for row in ORIGIN_TREE
        if row[1] in TREE["files"] and row[1].rpartition("/")[0] + "/" in HTML_DIRS
    ]


@pytest.mark.parametrize(
    "pages",
    [
        {
            "pub/": "nginx-exact-pub.html",
            "pub/iso/": "nginx-exact-pub-iso.html",
            "pub/dir with space/": "nginx-exact-pub-dir-with-space.html",
        },
        {
            "pub/": "apache-table-pub.html",
            "pub/iso/": "apache-table-pub-iso.html",
            "pub/dir with space/": "apache-table-pub-dir-with-space.html",
        },
        {"pub/": "nginx-rounded-pub.html", "pub/iso/": "nginx-rounded-pub-iso.html"},
        {"pub/": "apache-pre-pub.html", "pub/iso/": "apache-pre-pub-iso.html"},
        {"pub/": "lighttpd-pub.html", "pub/iso/": "lighttpd-pub-iso.html"},
        {"pub/": "apache-plain-pub.html"},
    ],
    ids=["nginx-exact", "apache-table", "nginx-rounded", "apache-pre", "lighttpd", "apache-plain"],
)
def test_real_http_listing_of_an_up_to_date_mirror(pages: dict[str, str]) -> None:
    seen = html_seen(pages, "h")
    origin = [row for row in html_origin() if row[1].rpartition("/")[0] + "/" in pages]
    result = compare_detecting_tz(origin, seen, ("pub/",))
    assert result.diffs == []
    assert result.files_matching == len(origin)
    assert result.tz_offset == 0


def test_real_localtime_listing_needs_the_offset() -> None:
    seen = html_seen({"pub/": "nginx-localtime-paris-pub.html"}, "127.0.0.5:18083")
    origin = [row for row in html_origin() if row[1].count("/") == 1]
    plain = compare(origin, seen)
    assert plain.outdated == len(origin)
    assert {d.kind for d in plain.diffs} == {DiffKind.MTIME}
    detected = compare_detecting_tz(origin, seen)
    assert (detected.tz_offset, detected.diffs) == (H, [])


def test_real_rsync_listing_of_an_up_to_date_mirror() -> None:
    with (FIXTURES / "rsyncd-rL-with-stderr.txt").open(errors="surrogateescape") as f:
        seen = {s.path: s for s in seen_files(parse_rsync_listing(f), "pub/")}
    result = compare_detecting_tz(ORIGIN_TREE, seen)
    assert result.diffs == []
    assert (result.files_seen, result.files_matching, result.extra) == (
        len(ORIGIN_TREE),
        len(ORIGIN_TREE),
        0,
    )


def test_real_rsync_listing_of_an_outdated_mirror() -> None:
    with (FIXTURES / "rsyncd-rL-with-stderr.txt").open(errors="surrogateescape") as f:
        seen = {s.path: s for s in seen_files(parse_rsync_listing(f), "pub/")}
    origin = [
        (i, p, s + 1 if p.endswith("g3.iso") else s, m + 1 if p.endswith("m117.bin") else m)
        for i, p, s, m in ORIGIN_TREE
    ] + [(999, "pub/iso/new.iso", 5, T)]
    del seen["pub/one.bin"]
    result = compare(origin, seen, ("pub/",))
    kinds = {(next(r[1] for r in origin if r[0] == d.file_id), d.kind) for d in result.diffs}
    assert kinds == {
        ("pub/iso/g3.iso", DiffKind.SIZE),
        ("pub/m117.bin", DiffKind.MTIME),
        ("pub/one.bin", DiffKind.MISSING),
        ("pub/iso/new.iso", DiffKind.MISSING),
    }


# --- properties ---------------------------------------------------------------------------

rows = st.lists(
    st.tuples(st.text(min_size=1, max_size=12), st.integers(0, 2**40), st.integers(0, 2**33)),
    max_size=40,
    unique_by=lambda r: r[0],
).map(lambda rs: [(i, p, s, m) for i, (p, s, m) in enumerate(rs)])


@given(rows)
def test_a_mirror_equal_to_the_origin_has_no_diffs(origin: list[OriginRow]) -> None:
    seen = {p: exact(p, s, m) for _, p, s, m in origin}
    result = compare(origin, seen)
    assert result == ScanResult([], len(origin), len(origin), 0, 0, 0, 0, 0)


def nginx_token(n: int) -> str:
    if n > 2**30 - 1:
        return f"{n // 2**30 + (n % 2**30 >= 2**29)}G"
    if n > 2**20 - 1:
        return f"{n // 2**20 + (n % 2**20 >= 2**19)}M"
    if n > 9999:
        return f"{n // 1024 + (n % 1024 >= 512)}K"
    return str(n)


@given(rows, st.integers(-12, 14))
def test_a_rounded_local_time_listing_of_an_equal_mirror_has_no_diffs(
    origin: list[OriginRow], hours: int
) -> None:
    offset = hours * H
    seen = {}
    for _, p, s, m in origin:
        lo, hi = size_range(nginx_token(s)) or (0, 0)
        local = m + offset
        seen[p] = SeenFile(p, lo, hi, local - local % 60, 60)
    assert compare(origin, seen, (), offset).diffs == []
    detected = compare_detecting_tz(origin, seen)
    if len(origin) >= 3:
        assert detected.tz_offset == offset
        assert detected.diffs == []


@given(rows, st.data())
def test_every_origin_file_is_counted_once(origin: list[OriginRow], data: st.DataObject) -> None:
    paths = [p for _, p, _, _ in origin]
    kept = data.draw(st.lists(st.sampled_from(paths), unique=True) if paths else st.just([]))
    seen = {p: exact(p, 0, 0) for p in kept}
    scope = data.draw(st.sampled_from([(), ("a",), ("", "b"), ("zz",)]))
    r = compare(origin, seen, scope)
    assert r.files_matching + r.missing + r.outdated + r.out_of_scope == len(origin)
    assert len(r.diffs) == r.missing + r.outdated
