"""HTML directory listings: real nginx / Apache / lighttpd pages, hostile pages, size rules."""

from __future__ import annotations

import contextlib
import json
import re
import time
from html import escape
from pathlib import Path
from urllib.parse import quote

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mirrorhub.errors import ListingError
from mirrorhub.workers.listing import (
    Listing,
    ListingFormat,
    parse_listing,
    parse_listing_time,
    size_range,
)
from mirrorhub.workers.seen import SIZE_UNKNOWN_MAX

FIXTURES = Path(__file__).parent / "fixtures"
TREE: dict[str, tuple[int, int]] = {
    k: (v[0], v[1]) for k, v in json.loads((FIXTURES / "tree.json").read_text())["files"].items()
}
PUB_NAMES = {p.split("/")[1] for p in TREE if p.startswith("pub/")}  # files and directories
PARIS_WINTER = 3600


def load(name: str) -> str:
    return (FIXTURES / name).read_text(encoding="utf-8")


def children(directory: str) -> dict[str, tuple[bool, tuple[int, int] | None]]:
    """name -> (is_dir, (size, mtime) for files) one level below ``directory``."""
    out: dict[str, tuple[bool, tuple[int, int] | None]] = {}
    for path, truth in TREE.items():
        if not path.startswith(directory):
            continue
        head, sep, _ = path[len(directory) :].partition("/")
        out[head] = (True, None) if sep else (False, truth)
    return out


# fixture, page URL, directory in TREE, format, precision, dated, sized, tz offset
CASES = [
    ("nginx-exact-pub.html", "http://127.0.0.5:18081/pub/", "pub/", ListingFormat.NGINX, 60),
    ("nginx-exact-pub-iso.html", "http://127.0.0.5:18081/pub/iso/", "pub/iso/", "nginx", 60),
    (
        "nginx-exact-pub-dir-with-space.html",
        "http://127.0.0.5:18081/pub/dir%20with%20space/",
        "pub/dir with space/",
        "nginx",
        60,
    ),
    ("nginx-rounded-pub.html", "http://127.0.0.5:18082/pub/", "pub/", "nginx", 60),
    ("nginx-rounded-pub-iso.html", "http://127.0.0.5:18082/pub/iso/", "pub/iso/", "nginx", 60),
    ("apache-table-pub.html", "http://127.0.0.6:18091/pub/", "pub/", "apache-table", 60),
    (
        "apache-table-pub-iso.html",
        "http://127.0.0.6:18091/pub/iso/",
        "pub/iso/",
        "apache-table",
        60,
    ),
    (
        "apache-table-pub-dir-with-space.html",
        "http://127.0.0.6:18091/pub/dir%20with%20space/",
        "pub/dir with space/",
        "apache-table",
        60,
    ),
    ("apache-xhtml-table-pub.html", "http://127.0.0.6:18094/pub/", "pub/", "apache-table", 60),
    ("apache-pre-pub.html", "http://127.0.0.6:18092/pub/", "pub/", "apache-pre", 60),
    ("apache-pre-pub-iso.html", "http://127.0.0.6:18092/pub/iso/", "pub/iso/", "apache-pre", 60),
    ("apache22-pre-pub.html", "http://127.0.0.6/pub/", "pub/", "apache-pre", 60),
    ("apache22-table-pub.html", "http://127.0.0.6/pub/", "pub/", "apache-table", 60),
    ("lighttpd-pub.html", "http://127.0.0.7:18101/pub/", "pub/", "lighttpd", 1),
    ("lighttpd-pub-iso.html", "http://127.0.0.7:18101/pub/iso/", "pub/iso/", "lighttpd", 1),
    ("lighttpd-extcss-pub-iso.html", "http://127.0.0.7:18102/pub/iso/", "pub/iso/", "lighttpd", 1),
]


@pytest.mark.parametrize(("fixture", "url", "directory", "fmt", "precision"), CASES)
def test_real_listing_matches_the_tree(
    fixture: str, url: str, directory: str, fmt: str, precision: int
) -> None:
    listing = parse_listing(load(fixture), url)
    assert listing.format == fmt
    assert not listing.truncated
    assert listing.mtime_precision == precision
    truth = children(directory)
    assert {e.name for e in listing.entries} == set(truth)
    for e in listing.entries:
        is_dir, file_truth = truth[e.name]
        assert e.is_dir is is_dir, e.name
        if file_truth is None:
            continue
        size, mtime = file_truth
        assert e.size_min <= size <= e.size_max, (e.name, size, e.size_min, e.size_max)
        assert e.mtime == mtime - mtime % precision, e.name


def test_exact_sizes_stay_exact() -> None:
    for fixture in ("nginx-exact-pub.html", "nginx-exact-pub-iso.html"):
        listing = parse_listing(
            load(fixture), "http://h/pub/iso/" if "iso" in fixture else "http://h/pub/"
        )
        for e in listing.entries:
            if not e.is_dir:
                assert e.size_min == e.size_max


def test_rounded_ranges_are_narrow_enough_to_catch_a_wrong_size() -> None:
    listing = parse_listing(load("nginx-rounded-pub-iso.html"), "http://h/pub/iso/")
    g3 = next(e for e in listing.entries if e.name == "g3.iso")  # "3G"
    assert not g3.size_min <= 2 * 2**30 <= g3.size_max
    assert not g3.size_min <= 4 * 2**30 <= g3.size_max


def test_localtime_listing_reads_local_wall_time_as_utc() -> None:
    listing = parse_listing(load("nginx-localtime-paris-pub.html"), "http://127.0.0.5:18083/pub/")
    m117 = next(e for e in listing.entries if e.name == "m117.bin")
    _, mtime = TREE["pub/m117.bin"]
    assert m117.mtime == mtime - mtime % 60 + PARIS_WINTER  # 01-Jan-2024 00:59 on the page


def test_plain_apache_has_names_only() -> None:
    listing = parse_listing(load("apache-plain-pub.html"), "http://127.0.0.6:18093/pub/")
    assert listing.format is ListingFormat.APACHE_PLAIN
    assert {e.name for e in listing.entries} == PUB_NAMES
    for e in listing.entries:
        assert (e.size_min, e.size_max, e.mtime) == (0, SIZE_UNKNOWN_MAX, None)


def test_odd_names_come_from_the_href() -> None:
    listing = parse_listing(load("apache-pre-pub.html"), "http://127.0.0.6:18092/pub/")
    names = {e.name for e in listing.entries}
    # The link texts are cut ("a-very-long-file-nam..>") and HTML-escaped; the hrefs are not.
    assert "a-very-long-file-name-that-exceeds-fifty-characters-for-sure-yes-indeed.tar.gz" in names
    assert "amp&lt<gt>quote\"apos'.txt" in names
    assert "hash#percent%25question?.txt" in names
    assert "new\nline.txt" in names
    assert "ünïcode-名前.txt" in names


def test_files_helper_prefixes_paths_and_skips_directories() -> None:
    listing = parse_listing(load("nginx-exact-pub-iso.html"), "http://h/pub/iso/")
    files = {f.path: f for f in listing.files("pub/iso/")}
    assert set(files) == {"pub/iso/big-4.4e9.iso", "pub/iso/g3.iso"}
    assert files["pub/iso/g3.iso"].mtime_precision == 60
    dirs = parse_listing(load("nginx-exact-pub.html"), "http://h/pub/").files("pub/")
    assert "pub/iso" not in {f.path for f in dirs}


# --- sizes -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("token", "inside", "outside"),
    [
        ("0", [0], [1]),
        ("1234", [1234], [1233, 1235]),
        ("10K", [9728, 10751], [9000, 11500]),
        ("1024K", [1048575], [1000000]),
        ("2M", [1572864, 2621439], [1400000, 2800000]),
        ("118M", [123456789], [120 * 2**20]),
        ("3G", [3 * 2**30], [2 * 2**30]),
        ("1.0K", [973, 1023, 1024, 1075], [900, 1200]),  # Apache: 973.. shows as 1.0K
        ("0.1K", [1, 99, 199], [300]),  # lighttpd: 1..99 bytes show as 0.1K
        ("0.0K", [0], [200]),
        ("0.9M", [1048575, 1000 * 1024], [800 * 1024]),  # lighttpd: 1000K..1023K -> 0.9M
        ("4.9K", [5000], [4000, 6000]),
        ("117.7M", [123456789], [118 * 2**20 + 2**19]),
        ("4.1G", [4400000000], [4 * 2**30, int(4.3 * 2**30)]),
    ],
)
def test_size_range(token: str, inside: list[int], outside: list[int]) -> None:
    rng = size_range(token)
    assert rng is not None
    lo, hi = rng
    for n in inside:
        assert lo <= n <= hi, (token, n, rng)
    for n in outside:
        assert not lo <= n <= hi, (token, n, rng)


@pytest.mark.parametrize(
    "token", ["", "-", "1.5", "K", "1.55K", "1,5K", "12k", "1e3", "0x10", "١٢"]
)
def test_size_range_rejects_non_sizes(token: str) -> None:
    assert size_range(token) is None


# Ports of each server's formatter, to check the ranges against every possible size.


def nginx_size(n: int) -> str:  # ngx_http_autoindex_module.c, autoindex_exact_size off
    if n > 1024**3 - 1:
        return f"{n // 1024**3 + (n % 1024**3 > 1024**3 // 2 - 1)}G"
    if n > 1024**2 - 1:
        return f"{n // 1024**2 + (n % 1024**2 > 1024**2 // 2 - 1)}M"
    if n > 9999:
        return f"{n // 1024 + (n % 1024 > 511)}K"
    return str(n)


def apache_size(n: int) -> str:  # apr_strfsize() in apr/strings/apr_strings.c
    if n < 973:
        return str(n)
    units = "KMGTPE"
    o = 0
    while True:
        remain = n & 1023
        n >>= 10
        if n >= 973:
            o += 1
            continue
        if n < 9 or (n == 9 and remain < 973):
            tenth = (remain * 5 + 256) // 512
            if tenth >= 10:
                n, tenth = n + 1, 0
            return f"{n}.{tenth}{units[o]}"
        if remain >= 512:
            n += 1
        return f"{n}{units[o]}"


def lighttpd_size(n: int) -> str:  # http_list_directory_sizefmt() in mod_dirlisting.c
    if 0 < n < 100:
        n += 99
    u = -1
    while True:
        remain = n & 1023
        n >>= 10
        u += 1
        if not n & ~1023:
            break
    remain //= 100
    remain = min(remain, 9)
    if n > 999:
        n, remain, u = 0, 9, u + 1
    return f"{n}.{remain}{'KMGTPE'[u]}"


FORMATTERS = {"nginx": nginx_size, "apache": apache_size, "lighttpd": lighttpd_size}


def test_formatter_ports_agree_with_the_real_servers() -> None:
    sizes = {name: size for name, (size, _) in TREE.items()}
    seen = {
        "nginx": "nginx-rounded-pub.html",
        "apache": "apache-table-pub.html",
        "lighttpd": "lighttpd-pub.html",
    }
    for server, fixture in seen.items():
        html = load(fixture)
        for name in ("k10239.bin", "m1_5.bin", "m1minus.bin", "m117.bin", "file with spaces.txt"):
            token = FORMATTERS[server](sizes[f"pub/{name}"])
            assert re.search(rf"[\s>]{re.escape(token)}[\s<]", html), (server, name, token)


@pytest.mark.parametrize("server", sorted(FORMATTERS))
@given(st.one_of(st.integers(0, 2**21), st.integers(0, 2**62)))
def test_every_rounded_size_falls_in_its_range(server: str, n: int) -> None:
    rng = size_range(FORMATTERS[server](n))
    assert rng is not None
    assert rng[0] <= n <= rng[1]


@pytest.mark.parametrize(("server", "share"), [("nginx", 0.7), ("apache", 0.2), ("lighttpd", 0.2)])
@given(st.integers(10_000, 2**50))
def test_rounded_ranges_are_not_wider_than_the_rounding(server: str, share: float, n: int) -> None:
    lo, hi = size_range(FORMATTERS[server](n)) or (0, 0)
    # nginx "2M" covers 1.5M..2.5M; Apache and lighttpd keep a decimal below 10 units.
    assert hi - lo <= n * share + 2048


# --- dates -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("date", "time_", "expected"),
    [
        ("02-Jan-2024", "03:04", (1704164640, 60)),  # nginx, Apache 2.2
        ("2024-01-02", "03:04", (1704164640, 60)),  # Apache 2.4
        ("2024-Jan-02", "03:04:05", (1704164645, 1)),  # lighttpd
        ("29-Feb-2024", "23:59", (1709251140, 60)),
        ("29-Feb-2023", "23:59", None),
        ("2024-13-02", "03:04", None),
        ("02-Foo-2024", "03:04", None),
        ("02-jan-2024", "03:04", None),
        ("2024-01-02", "24:00", None),
        ("2024-01-02", "3:04", None),
        ("2024/01/02", "03:04", None),
    ],
)
def test_parse_listing_time(date: str, time_: str, expected: tuple[int, int] | None) -> None:
    assert parse_listing_time(date, time_) == expected


# --- links -------------------------------------------------------------------------------


def nginx_page(hrefs: list[str], *, closed: bool = True) -> str:
    rows = "".join(
        f'<a href="{escape(h)}">{escape(h)[:50]}</a> 02-Jan-2024 03:04 {i}\n'
        for i, h in enumerate(hrefs)
    )
    page = (
        "<html>\r\n<head><title>Index of /pub/</title></head>\r\n<body>\r\n"
        f'<h1>Index of /pub/</h1><hr><pre><a href="../">../</a>\r\n{rows}</pre><hr>'
    )
    return page + ("</body>\r\n</html>\r\n" if closed else "")


PAGE = "http://Mirror.Example:80/pub/"


@pytest.mark.parametrize(
    ("href", "expected"),
    [
        ("x.iso", ("x.iso", False)),
        ("sub/", ("sub", True)),
        ("file%20with%20space", ("file with space", False)),
        ("%C3%BC", ("ü", False)),
        ("%E9.txt", ("\udce9.txt", False)),  # not UTF-8: kept as a surrogate escape
        ("/pub/abs.iso", ("abs.iso", False)),
        ("/pub/a%2fb", None),  # an encoded slash cannot be one name
        ("http://mirror.example/pub/x", ("x", False)),
        ("HTTP://MIRROR.EXAMPLE:80/pub/y", ("y", False)),
        ("//mirror.example/pub/z", ("z", False)),
        ("./dot", ("dot", False)),
        (".hidden", (".hidden", False)),
        ("../", None),
        ("..", None),
        (".", None),
        ("%2e%2e", None),
        ("/", None),
        ("/pub/", None),
        ("/other/x", None),
        ("a/b", None),
        ("/pub/a/b", None),
        ("?C=N;O=D", None),
        ("x?y", None),
        ("x#frag", None),
        ("#top", None),
        ("https://mirror.example/pub/x", None),
        ("http://mirror.example:8080/pub/x", None),
        ("http://evil.example/pub/x", None),
        ("mailto:root@mirror.example", None),
        ("javascript:alert(1)", None),
        ("x%00y", None),
        ("", None),
    ],
)
def test_links_must_stay_one_level_below_the_page(
    href: str, expected: tuple[str, bool] | None
) -> None:
    listing = parse_listing(nginx_page([href]), PAGE)
    got = [(e.name, e.is_dir) for e in listing.entries]
    assert got == ([] if expected is None else [expected])


def test_page_url_without_trailing_slash_is_the_directory() -> None:
    listing = parse_listing(nginx_page(["x"]), "http://h/pub")
    assert [e.name for e in listing.entries] == ["x"]


def test_duplicate_links_count_once() -> None:
    listing = parse_listing(nginx_page(["x", "x", "./x"]), PAGE)
    assert [e.name for e in listing.entries] == ["x"]


# --- damaged and hostile pages ------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "",
        "garbage",
        "\x00\x01\x02" * 1000,
        bytes(range(256)).decode("latin-1") * 100,
        "<html><body><p>Hello</p></body></html>",
        '{"name": "x.iso", "size": 1}',
        "<html><head><title>Index of /</title></head><body><![x>",
    ],
    ids=["empty", "word", "control", "binary", "html", "json", "marked-section"],
)
def test_not_a_listing(text: str) -> None:
    with pytest.raises(ListingError):
        parse_listing(text, PAGE)


def test_nginx_404_page_is_not_a_listing() -> None:
    with pytest.raises(ListingError, match="not a directory listing"):
        parse_listing(load("nginx-404.html"), PAGE)


@pytest.mark.parametrize(
    ("fixture", "url"),
    [(c[0], c[1]) for c in CASES] + [("apache-plain-pub.html", "http://h/pub/")],
)
def test_truncated_pages_are_flagged_or_rejected(fixture: str, url: str) -> None:
    html = load(fixture)
    full = {e.name for e in parse_listing(html, url).entries}
    cut_at = html.rindex("</body>")
    for cut in range(0, cut_at, max(1, cut_at // 60)):
        try:
            listing = parse_listing(html[:cut], url)
        except ListingError:
            continue  # cut before the title, or through a row of a format with fixed columns
        assert listing.truncated, cut
        # A name may be cut short only inside the href, where the tag is incomplete and
        # therefore no link at all: every name read is a real one.
        assert {e.name for e in listing.entries} <= full, cut


def test_damaged_row_in_a_known_format_fails() -> None:
    html = load("nginx-exact-pub.html").replace("02-Jan-2024 03:04                1023", "?? 1023")
    with pytest.raises(ListingError, match=r"k1023\.bin"):
        parse_listing(html, "http://h/pub/")


def test_apache_without_size_column_has_unknown_sizes() -> None:
    html = load("apache-table-pub.html").replace('<a href="?C=S;O=A">Size</a>', "Size")
    listing = parse_listing(html, "http://h/pub/")
    one = next(e for e in listing.entries if e.name == "one.bin")
    assert (one.size_min, one.size_max) == (0, SIZE_UNKNOWN_MAX)
    assert one.mtime == 1704164640


@pytest.mark.parametrize(
    "unit",
    [
        "<a",
        "<",
        "<a href='>' ",
        '<a x="> ',
        "<a <b>",
        "<![",
        "<!--",
        "</",
        "<a href=x>",
        "<a href=\"x\" y='z'>",
        "&#",
    ],
)
def test_hostile_markup_is_parsed_in_linear_time(unit: str) -> None:
    # Unguarded, CPython 3.11's html.parser needs ~20 s for 200 KB of "<a<a..." and minutes
    # for "<a href='>' ..."; 1 MB here must stay well under a second or two.
    head = "<html><head><title>Index of /pub/</title></head><body><pre>"
    text = head + unit * (1_000_000 // len(unit))
    start = time.perf_counter()
    with contextlib.suppress(ListingError):
        parse_listing(text, PAGE)
    assert time.perf_counter() - start < 5


def test_enormous_single_line() -> None:
    text = nginx_page(["x"]).replace("<pre>", "<pre>" + "y" * 5_000_000)
    start = time.perf_counter()
    listing = parse_listing(text, PAGE)
    assert time.perf_counter() - start < 5
    assert [e.name for e in listing.entries] == ["x"]


def test_large_listing_parses_quickly() -> None:
    names = [f"file-{i:06d}-{quote('ü')}.iso" for i in range(100_000)]
    start = time.perf_counter()
    listing = parse_listing(nginx_page(names), PAGE)
    elapsed = time.perf_counter() - start
    assert len(listing.entries) == 100_000
    assert elapsed < 10  # ~1 s here; linear, so a million entries take ~10 s


def test_unclosed_page_is_truncated() -> None:
    listing = parse_listing(nginx_page(["a", "b"], closed=False), PAGE)
    assert listing.truncated
    assert [e.name for e in listing.entries] == ["a", "b"]


def test_listing_is_plain_data() -> None:
    listing = parse_listing(nginx_page(["a"]), PAGE)
    assert isinstance(listing, Listing)
    with pytest.raises(AttributeError):
        listing.truncated = True  # type: ignore[misc]
