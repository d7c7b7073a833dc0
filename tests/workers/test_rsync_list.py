"""rsync --list-only parsing: real rsync 3.5 output (local and daemon), damaged lines, speed."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mirrorhub.errors import ListingError
from mirrorhub.workers.rsync_list import (
    EntryKind,
    RsyncEntry,
    parse_rsync_line,
    parse_rsync_listing,
    seen_files,
)

FIXTURES = Path(__file__).parent / "fixtures"
_TREE = json.loads((FIXTURES / "tree.json").read_text())
TREE: dict[str, tuple[int, int]] = {
    k: (v[0], v[1]) for part in ("files", "rsync_only") for k, v in _TREE[part].items()
}
DAY = 1704164645  # 2024/01/02 03:04:05 UTC


def lines(name: str) -> Iterator[str]:
    # Like the scanner will read rsync's stdout: bytes -> str without losing any byte.
    with (FIXTURES / name).open(encoding="utf-8", errors="surrogateescape") as f:
        yield from f


def entries(name: str) -> dict[str, RsyncEntry]:
    return {e.path: e for e in parse_rsync_listing(lines(name))}


@pytest.mark.parametrize(
    ("fixture", "prefix"),
    [
        ("rsync-local-r.txt", ""),
        ("rsync-local-rl.txt", ""),
        ("rsync-local-r-C-locale.txt", "pub/"),
        ("rsync-local-no-h.txt", "pub/iso/"),
        ("rsyncd-r.txt", "pub/"),
        ("rsyncd-rl.txt", "pub/"),
        ("rsyncd-rL-with-stderr.txt", "pub/"),
        ("rsyncd-with-motd.txt", "pub/iso/"),
    ],
)
def test_real_listing_matches_the_tree(fixture: str, prefix: str) -> None:
    got = {f.path: f for f in seen_files(parse_rsync_listing(lines(fixture)), prefix)}
    expected = {p: t for p, t in TREE.items() if p.startswith(prefix or "pub/")}
    if not fixture.startswith("rsyncd-rL"):
        expected.pop("pub/link-to-one", None)  # a symlink unless rsync follows links (-L)
    assert set(got) == set(expected)
    for path, (size, mtime) in expected.items():
        f = got[path]
        assert (f.size_min, f.size_max, f.mtime, f.mtime_precision) == (size, size, mtime, 1)


def test_names_are_decoded() -> None:
    got = entries("rsyncd-r.txt")
    assert "new\nline.txt" in got  # printed as new\#012line.txt
    assert "tab\tname.txt" in got  # rsync leaves tabs alone
    assert "lit\\#123eral.txt" in got  # a literal "\#123", printed as lit\#134#123eral.txt
    assert "latin1-\udce9.txt" in got  # byte 0xE9, not UTF-8: a surrogate escape
    assert "ünïcode-名前.txt" in got
    assert "arrow -> name.txt" in got  # a regular file: the arrow is part of the name
    c_locale = entries("rsync-local-r-C-locale.txt")  # UTF-8 printed as \#303\#274...
    assert "ünïcode-名前.txt" in c_locale
    assert "ünïcode/x.txt" in c_locale


def test_directories_symlinks_and_specials() -> None:
    plain = entries("rsyncd-r.txt")
    assert plain["."].kind is EntryKind.DIR
    assert plain["iso"] == RsyncEntry(EntryKind.DIR, "iso", 4096, DAY, None)
    assert plain["link-to-one"] == RsyncEntry(EntryKind.SYMLINK, "link-to-one", 7, DAY, None)
    assert "a-fifo" not in plain
    with_links = entries("rsyncd-rl.txt")
    assert with_links["link-to-one"].target == "one.bin"
    # rsync does not escape " -> ": the split at the first arrow is a documented guess.
    odd = with_links["dir with space/link with space"]
    assert odd.target == "x -> ../pub/file with spaces.txt"
    followed = entries("rsyncd-rL-with-stderr.txt")  # -L: the link is listed as its target
    assert followed["link-to-one"] == RsyncEntry(EntryKind.FILE, "link-to-one", 1, DAY, None)
    assert "dir with space/link with space -> x" not in followed  # dangling: warned, skipped


def test_client_time_zone_shifts_times() -> None:
    utc = entries("rsyncd-with-motd.txt")
    paris = entries("rsyncd-tz-paris.txt")
    assert paris["big-4.4e9.iso"].mtime - utc["big-4.4e9.iso"].mtime == 3600  # CET
    assert paris["g3.iso"].mtime - utc["g3.iso"].mtime == 7200  # CEST: run rsync with TZ=UTC


def test_error_output_has_no_entries() -> None:
    assert list(parse_rsync_listing(lines("rsyncd-unknown-module.txt"))) == []


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (
            "-rw-r--r--      1,234,567 2024/01/02 03:04:05 path/with spaces/file.iso\n",
            RsyncEntry(EntryKind.FILE, "path/with spaces/file.iso", 1234567, DAY),
        ),
        (
            "-rw-r--r--      1.234.567 2024/01/02 03:04:05 dotted\n",
            RsyncEntry(EntryKind.FILE, "dotted", 1234567, DAY),
        ),
        (
            "-rw-r--r--  1234567 2024/01/02 03:04:05 plain",
            RsyncEntry(EntryKind.FILE, "plain", 1234567, DAY),
        ),
        (
            "-rw-r--r--  12 2024/01/02 03:04:05   leading and trailing  \r\n",
            RsyncEntry(EntryKind.FILE, "  leading and trailing  ", 12, DAY),
        ),
        (
            "-rwsr-sr-t  0 1970/01/01 00:00:00 suid",
            RsyncEntry(EntryKind.FILE, "suid", 0, 0),
        ),
        (
            "drwxr-xr-x          4,096 2024/01/02 03:04:05 .",
            RsyncEntry(EntryKind.DIR, ".", 4096, DAY),
        ),
        (
            "lrwxrwxrwx  7 2024/01/02 03:04:05 a -> b",
            RsyncEntry(EntryKind.SYMLINK, "a", 7, DAY, "b"),
        ),
        (
            "-rw-r--r--  9,223,372,036,854,775,807 2038/01/19 03:14:08 big",
            RsyncEntry(EntryKind.FILE, "big", 2**63 - 1, 2**31),
        ),
        ("-rw-r--r--  1 2024/01/02 03:04:05 a\\#134b", RsyncEntry(EntryKind.FILE, "a\\b", 1, DAY)),
        ("-rw-r--r--  1 2024/01/02 03:04:05 a\\#42", RsyncEntry(EntryKind.FILE, "a\\#42", 1, DAY)),
        ("prw-r--r--  0 2024/01/02 03:04:05 fifo", None),
        ("srwxr-xr-x  0 2024/01/02 03:04:05 socket", None),
        ("crw-rw-rw-  0 2024/01/02 03:04:05 null", None),
        ("brw-rw----  0 2024/01/02 03:04:05 sda", None),
        ("", None),
        ("\n", None),
        ("receiving incremental file list", None),
        ("Welcome to the mirror!", None),
        ('rsync: [sender] send_files failed to open "/x": Permission denied (13)', None),
        ('symlink has no referent: "dir/link" (in pub)', None),
        ("rsync error: some files/attrs were not transferred (code 23) at main.c(1956)", None),
        ("@ERROR: Unknown module 'nope'", None),
        ("*missing                                   gone.iso", None),
        ("sent 833 bytes  received 28 bytes  total size 7747435732", None),
    ],
)
def test_parse_rsync_line(line: str, expected: RsyncEntry | None) -> None:
    assert parse_rsync_line(line) == expected


@pytest.mark.parametrize(
    "line",
    [
        "-rw-r--r--  12 2024/01/0",  # cut short
        "-rw-r--r--  12 2024/01/02 03:04:05",  # no name
        "-rw-r--r--  12 2024/01/02 03:04:05 ",  # empty name
        "-rw-r--r--  1,23,4 2024/01/02 03:04:05 x",  # bad grouping
        "-rw-r--r--  1,234.567 2024/01/02 03:04:05 x",  # mixed separators
        "-rw-r--r--  ١٢ 2024/01/02 03:04:05 x",  # non-ASCII digits
        "-rw-r--r--  12 2024/13/02 03:04:05 x",
        "-rw-r--r--  12 2024/02/30 03:04:05 x",
        "-rw-r--r--  12 2024/01/02 24:00:00 x",
        "-rw-r--r--  12 2024/01/02 03:60:00 x",
        "-rw-r--r--  -12 2024/01/02 03:04:05 x",
        "drwxr-xr-x  this is not a size 2024/01/02 03:04:05 x",
    ],
)
def test_damaged_entry_lines_raise(line: str) -> None:
    with pytest.raises(ListingError):
        parse_rsync_line(line)


def test_damage_after_the_first_entry_fails_the_listing() -> None:
    good = "-rw-r--r--  1 2024/01/02 03:04:05 a\n"
    bad = "-rw-r--r--  1 2024/01/02 03:0\n"
    with pytest.raises(ListingError, match="line 3"):
        list(parse_rsync_listing([good, "warning: a stray message\n", bad]))


def test_entry_shaped_motd_before_the_listing_is_ignored() -> None:
    got = entries("rsyncd-with-motd.txt")  # its 2nd line: "drwxr-xr-x  this line is a ..."
    assert set(got) == {".", "big-4.4e9.iso", "g3.iso"}


def test_stray_warnings_in_the_middle_are_ignored() -> None:
    text = list(lines("rsyncd-r.txt"))
    text.insert(5, 'rsync: [sender] readlink_stat("/x") failed: Permission denied (13)\n')
    text.insert(9, 'file has vanished: "/pub/tmp.iso"\n')
    assert {e.path for e in parse_rsync_listing(text)} == set(entries("rsyncd-r.txt"))


def test_listing_is_lazy() -> None:
    def endless() -> Iterator[str]:
        n = 0
        while True:
            n += 1
            yield f"-rw-r--r--  {n} 2024/01/02 03:04:05 f{n}\n"

    stream = parse_rsync_listing(endless())
    assert [next(stream).size for _ in range(3)] == [1, 2, 3]


# --- round trip against rsync's own formatting ----------------------------------------


def rsync_escape(raw: bytes) -> str:
    """rsync's filtered_fwrite(): control bytes and a literal "\\#ddd" become \\#ooo."""
    out = bytearray()
    for i, b in enumerate(raw):
        literal = raw[i : i + 5]
        if (b < 0x20 and b != 0x09) or (
            b == 0x5C and len(literal) == 5 and literal[1:2] == b"#" and literal[2:].isdigit()
        ):
            out += b"\\#%03o" % b
        else:
            out.append(b)
    return out.decode("utf-8", "surrogateescape")


names = st.one_of(
    st.text(min_size=1, max_size=40).filter(lambda s: "\x00" not in s and "/" not in s),
    st.binary(min_size=1, max_size=40).filter(lambda b: b"\x00" not in b and b"/" not in b),
)


@given(
    name=names,
    size=st.integers(0, 2**63 - 1),
    mtime=st.integers(0, 253402300799),
    sep=st.sampled_from(["", ",", "."]),
)
def test_round_trip(name: str | bytes, size: int, mtime: int, sep: str) -> None:
    raw = name.encode("utf-8", "surrogateescape") if isinstance(name, str) else name
    expected = raw.decode("utf-8", "surrogateescape")
    digits = f"{size:,}".replace(",", sep)
    when = time.strftime("%Y/%m/%d %H:%M:%S", time.gmtime(mtime))
    line = f"-rw-r--r-- {digits:>14} {when} {rsync_escape(raw)}\n"
    assert parse_rsync_line(line) == RsyncEntry(EntryKind.FILE, expected, size, mtime)


def test_speed() -> None:
    text = list(lines("rsyncd-r.txt"))
    sample = (text * (200_000 // len(text) + 1))[:200_000]
    start = time.perf_counter()
    count = sum(1 for _ in parse_rsync_listing(sample))
    rate = len(sample) / (time.perf_counter() - start)
    assert count > 190_000
    assert rate > 50_000  # ~400k lines/s here; this only catches a gross regression
