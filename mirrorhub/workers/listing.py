"""Parse HTTP directory listings (nginx autoindex, Apache mod_autoindex, lighttpd mod_dirlisting).

Pure: HTML text in, :class:`Listing` out. The structure comes from the stdlib ``html.parser``;
regular expressions only read the date and size tokens.

How it works: every ``<a href>`` is collected together with the text that follows it up to the
next link or the end of its row (``</tr>``, ``</li>``). In every supported layout that text is
"date time size [more]" (nginx, Apache ``<pre>`` and table) or "/ date time size type"
(lighttpd), so one tokenizer serves them all; the detected format only says which columns must
be there. Names come from the ``href`` (percent-decoded), never from the link text, which the
servers truncate ("a-very-long-name..>") and escape differently.

Sizes: exact byte counts stay exact. Rounded sizes ("10K", "1.5M", "4.1G") become a byte range
that contains the real size under every server's rounding rule (see :func:`size_range`), widened
by a small margin: a range that is too narrow would report a good mirror as holding a wrong file.

Dates are read as UTC; a listing in local time is corrected later by
:mod:`mirrorhub.workers.tzoffset`. nginx and Apache show minutes (precision 60 s), lighttpd
shows seconds (precision 1 s).

Not supported (-> :class:`ListingError` or the names-only ``GENERIC`` format): nginx
``autoindex_format json/xml``, fancyindex themes, h5ai and other JavaScript listings.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from html.parser import HTMLParser
from urllib.parse import unquote, urljoin, urlsplit

from mirrorhub.errors import ListingError
from mirrorhub.workers.seen import SIZE_UNKNOWN_MAX, SeenFile

__all__ = [
    "Entry",
    "Listing",
    "ListingFormat",
    "parse_listing",
    "parse_listing_time",
    "size_range",
]


class ListingFormat(enum.StrEnum):
    NGINX = "nginx"  # autoindex, <pre>, exact or rounded sizes
    APACHE_TABLE = "apache-table"  # mod_autoindex FancyIndexing + HTMLTable
    APACHE_PRE = "apache-pre"  # mod_autoindex FancyIndexing in <pre>
    APACHE_PLAIN = "apache-plain"  # mod_autoindex without FancyIndexing: names only
    LIGHTTPD = "lighttpd"  # mod_dirlisting table
    GENERIC = "generic"  # an "Index of" page of unknown layout: names, dates/sizes if readable


@dataclass(frozen=True, slots=True)
class Entry:
    name: str  # one path segment, percent-decoded (undecodable bytes as surrogate escapes)
    is_dir: bool
    size_min: int  # inclusive range; 0..SIZE_UNKNOWN_MAX when the listing has no size
    size_max: int
    mtime: int | None  # POSIX seconds, the listed wall time read as UTC; None = no date


@dataclass(frozen=True, slots=True)
class Listing:
    format: ListingFormat
    entries: tuple[Entry, ...]
    truncated: bool  # no </body> or </html>: the page was cut; the caller should fail the scan
    mtime_precision: int  # seconds: 60 when the listing shows minutes, 1 with seconds

    def files(self, prefix: str = "") -> list[SeenFile]:
        """The regular files as :class:`SeenFile`, their paths prefixed with ``prefix``."""
        return [
            SeenFile(prefix + e.name, e.size_min, e.size_max, e.mtime, self.mtime_precision)
            for e in self.entries
            if not e.is_dir
        ]


# --- sizes -------------------------------------------------------------------------------

_UNITS = "KMGTPE"
_EXACT = re.compile(r"\d{1,20}\Z", re.ASCII)
_ROUNDED = re.compile(r"(\d{1,15})(?:\.(\d))?([KMGTPE])\Z", re.ASCII)  # nginx: "12345G"


def _apache_tenth_low(t: int) -> int:
    """Smallest 1/1024 remainder that apr_strfsize shows as tenth ``t``: (5r+256)//512 >= t."""
    return 0 if t <= 0 else (512 * t - 256 + 4) // 5


def size_range(token: str) -> tuple[int, int] | None:
    """The byte range (inclusive) a listed size token stands for; None if it is not a size.

    The rules, from each server's source (``u`` = the unit, ``q = u/1024``):

    - ``"1234"``: exact (nginx always, Apache below 973 bytes).
    - ``"10K"``: nearest integer, half up (nginx ``autoindex_exact_size off``; Apache from
      9.95 units up): ``[N*u - u/2, N*u + u/2 - 1]``.
    - ``"1.5K"``: Apache rounds the 1/1024 remainder to the nearest tenth (and "1.0" also
      covers 973..1023 of the unit below); lighttpd truncates ``remain/100`` (capped at 9,
      and 1..99 bytes show as "0.1K"). The range is the union of both readings, so the
      answer does not depend on telling the two servers apart.

    Rounded ranges are then widened by ``u/256`` on each side for server versions that round
    a little differently.
    """
    if _EXACT.match(token):
        n = int(token)
        return n, n
    m = _ROUNDED.match(token)
    if m is None:
        return None
    whole = int(m[1])
    tenth = m[2]
    u = 1 << (10 * (_UNITS.index(m[3]) + 1))
    q = u >> 10
    if tenth is None:
        # Whole units only appear from 1 unit up (nginx: 10K, 1M, 1G; Apache: from 10).
        lo, hi = max(u, whole * u - u // 2), whole * u + u // 2 - 1
    else:
        y = int(tenth)
        # Apache: remainder index range in units of q.
        a_lo = whole * 1024 + _apache_tenth_low(y) if y else max(0, whole * 1024 - 51)
        a_hi = whole * 1024 + _apache_tenth_low(y + 1)
        # lighttpd: remain // 100 == y (y == 9 takes 900..1023).
        l_lo = whole * 1024 + 100 * y
        l_hi = whole * 1024 + (100 * y + 100 if y < 9 else 1024)
        lo, hi = min(a_lo, l_lo) * q, max(a_hi, l_hi) * q - 1
        if u == 1024 and whole == 0 and y <= 1:
            lo = 0  # lighttpd shows 1..99 bytes as "0.1K"
    margin = u >> 8
    return max(0, lo - margin), hi + margin


# --- dates -------------------------------------------------------------------------------

_MONTHS = {
    m: i
    for i, m in enumerate(
        ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"), 1
    )
}
_DATE_DMY = re.compile(
    r"(\d{2})-([A-Z][a-z]{2})-(\d{4})\Z", re.ASCII
)  # nginx, Apache 2.2: 02-Jan-2024
_DATE_ISO = re.compile(r"(\d{4})-(\d{2})-(\d{2})\Z", re.ASCII)  # Apache 2.4: 2024-01-02
_DATE_YMD = re.compile(r"(\d{4})-([A-Z][a-z]{2})-(\d{2})\Z", re.ASCII)  # lighttpd: 2024-Jan-02
_TIME = re.compile(r"(\d{2}):(\d{2})(?::(\d{2}))?\Z", re.ASCII)


def parse_listing_time(date: str, time: str) -> tuple[int, int] | None:
    """``(POSIX seconds read as UTC, precision in seconds)`` of a listed date and time."""
    tm = _TIME.match(time)
    if tm is None:
        return None
    if m := _DATE_DMY.match(date):
        day, month, year = int(m[1]), _MONTHS.get(m[2]), int(m[3])
    elif m := _DATE_ISO.match(date):
        year, month, day = int(m[1]), int(m[2]), int(m[3])
    elif m := _DATE_YMD.match(date):
        year, month, day = int(m[1]), _MONTHS.get(m[2]), int(m[3])
    else:
        return None
    if month is None:
        return None
    second = tm[3]
    try:
        when = datetime(year, month, day, int(tm[1]), int(tm[2]), int(second or 0), tzinfo=UTC)
    except ValueError:
        return None
    return int(when.timestamp()), 60 if second is None else 1


# --- HTML walk ---------------------------------------------------------------------------

# Real listings only hold simple tags: a "<", then up to the first ">" no other "<" and only
# balanced quotes that hold no "<" or ">". CPython's html.parser (3.11) rescans far ahead for
# every "<" that does not open such a tag ("<a<a<a...", "<a href='>' ..." are quadratic or
# worse), so those are escaped to "&lt;" first. The look-ahead stops at the next "<" or ">",
# so this pass is linear.
_LONE_LT = re.compile(r"""<(?!(?:[^<>"']|"[^"<>]*"|'[^'<>]*'){0,4096}>)""")
_SORT_LINK = re.compile(r"\?C=([NMSD]);O=[AD]\Z", re.ASCII)
_SIMPLE_HREF = re.compile(r"[^/?#:.][^/?#:]*/?\Z", re.ASCII)
_PCT = re.compile(r"%[0-9a-fA-F]{2}", re.ASCII)
_CONTEXT_MAX = 256  # characters of text kept after a link: date, size and a bit of margin
_TEXT_MAX = 256  # characters kept of <title> / heading


class _Anchor:
    __slots__ = ("container", "href", "parts", "size")

    def __init__(self, href: str | None, container: str) -> None:
        self.href = href
        self.container = container  # "table", "li", "pre" or ""
        self.parts: list[str] = []
        self.size = 0

    def text(self) -> str:
        return " ".join(self.parts)


class _Collector(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.anchors: list[_Anchor] = []
        self.sort_columns: set[str] = set()
        self.sort_container = ""
        self.title: list[str] = []
        self.lighttpd = False
        self.closed = False
        self.cells: set[str] = set()  # lighttpd's td classes seen
        self._depth = {"table": 0, "li": 0, "pre": 0, "title": 0, "h1": 0, "h2": 0}
        self._open: _Anchor | None = None  # the <a> we are inside
        self._ctx: _Anchor | None = None  # the anchor collecting the text after it

    def _container(self) -> str:
        d = self._depth
        return "table" if d["table"] else "li" if d["li"] else "pre" if d["pre"] else ""

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in self._depth:
            self._depth[tag] += 1
        if tag == "a":
            href = next((v for k, v in attrs if k == "href"), None)
            anchor = _Anchor(href, self._container())
            if href is not None and (m := _SORT_LINK.match(href)):
                self.sort_columns.add(m[1])
                self.sort_container = anchor.container
            self.anchors.append(anchor)
            self._open, self._ctx = anchor, None
        elif tag in ("tr", "li", "ul"):
            self._ctx = None  # a new row: the previous link's text ends here
        elif tag in ("td", "th"):
            for k, v in attrs:
                if k == "class" and v in ("m", "s"):
                    self.cells.add(v)
            self._add(" ")
        elif tag == "table":
            if any(k == "summary" and v == "Directory Listing" for k, v in attrs):
                self.lighttpd = True
        elif tag in ("br", "hr"):
            self._add(" ")

    def handle_endtag(self, tag: str) -> None:
        if tag in self._depth and self._depth[tag] > 0:
            self._depth[tag] -= 1
        if tag == "a":
            self._ctx, self._open = self._open, None
        elif tag in ("tr", "li", "ul", "pre", "table"):
            self._ctx = None
        elif tag in ("body", "html"):
            self.closed = True

    def handle_data(self, data: str) -> None:
        d = self._depth
        if (d["title"] or d["h1"] or d["h2"]) and len(self.title) < 8:
            self.title.append(data[:_TEXT_MAX])
        if self._open is None:
            self._add(data)

    def _add(self, data: str) -> None:
        ctx = self._ctx
        if ctx is not None and ctx.size < _CONTEXT_MAX:
            ctx.parts.append(data[: _CONTEXT_MAX - ctx.size])
            ctx.size += len(data)


def _norm_pct(path: str) -> str:
    return _PCT.sub(lambda m: m[0].upper(), path)


class _Base:
    """The page URL, ready for the "does this link stay one level below" test."""

    def __init__(self, page_url: str) -> None:
        parts = urlsplit(page_url)
        path = parts.path if parts.path.endswith("/") else parts.path + "/"
        self.url = parts._replace(path=path, query="", fragment="").geturl()
        self.scheme = parts.scheme.lower()
        self.host = (parts.hostname or "").lower()
        self.port = _port(parts.scheme, parts.port)
        self.path = _norm_pct(path)

    def child(self, href: str) -> tuple[str, bool] | None:
        """``(decoded name, is_dir)`` when ``href`` names an entry of this directory."""
        if _SIMPLE_HREF.match(href):
            segment = href  # the common case: a plain relative name
        else:
            try:
                target = urlsplit(urljoin(self.url, href))
                port = _port(target.scheme, target.port)
            except ValueError:
                return None
            if (
                target.query
                or target.fragment
                or target.scheme.lower() != self.scheme
                or (target.hostname or "").lower() != self.host
                or port != self.port
            ):
                return None
            path = _norm_pct(target.path)
            if not path.startswith(self.path):
                return None
            segment = path[len(self.path) :]
        is_dir = segment.endswith("/")
        if is_dir:
            segment = segment[:-1]
        if not segment or "/" in segment:
            return None
        name = unquote(segment, errors="surrogateescape")
        if name in (".", "..") or "/" in name or "\x00" in name:
            return None
        return name, is_dir


def _port(scheme: str, port: int | None) -> int | None:
    if port is not None:
        return port
    return {"http": 80, "https": 443}.get(scheme.lower())


def _detect(c: _Collector) -> ListingFormat:
    title = " ".join(c.title).strip()
    if c.lighttpd or {"m", "s"} <= c.cells:
        return ListingFormat.LIGHTTPD
    if c.sort_columns:
        return ListingFormat.APACHE_PRE if c.sort_container == "pre" else ListingFormat.APACHE_TABLE
    if not title.startswith("Index of"):
        raise ListingError("not a directory listing (no 'Index of' title, no known layout)")
    containers = {a.container for a in c.anchors}
    if "pre" in containers:
        return ListingFormat.NGINX
    if "li" in containers:
        return ListingFormat.APACHE_PLAIN
    return ListingFormat.GENERIC


def _columns(fmt: ListingFormat, sort_columns: set[str]) -> tuple[bool, bool] | None:
    """(has date, has size) the format promises; None = best effort, nothing promised."""
    if fmt in (ListingFormat.NGINX, ListingFormat.LIGHTTPD):
        return True, True
    if fmt in (ListingFormat.APACHE_TABLE, ListingFormat.APACHE_PRE):
        return "M" in sort_columns, "S" in sort_columns
    return None


class _Unreadable(Exception):
    pass


def _read_columns(
    text: str, want_date: bool, want_size: bool, is_dir: bool
) -> tuple[int, int, int | None, int]:
    """``(size_min, size_max, mtime, precision)`` from the text after a link."""
    tokens = text.split(None, 4)
    while tokens and tokens[0] == "/":  # lighttpd prints the "/" of a directory after </a>
        tokens.pop(0)
    i = 0
    mtime: int | None = None
    precision = 60
    if want_date:
        parsed = parse_listing_time(tokens[0], tokens[1]) if len(tokens) >= 2 else None
        if parsed is None:
            raise _Unreadable("date")
        mtime, precision = parsed
        i = 2
    lo, hi = 0, SIZE_UNKNOWN_MAX
    if want_size:
        cell = tokens[i] if len(tokens) > i else ""
        if cell != "-":
            rng = size_range(cell)
            if rng is None:
                raise _Unreadable("size")
            if not is_dir:
                lo, hi = rng
    return lo, hi, mtime, precision


def _read_best_effort(text: str, is_dir: bool) -> tuple[int, int, int | None, int]:
    # Only after a date: a lone number next to a link on an unknown page may be anything
    # (a count, a version), and a size read wrongly would take a good mirror out.
    for want_date, want_size in ((True, True), (True, False)):
        try:
            return _read_columns(text, want_date, want_size, is_dir)
        except _Unreadable:
            continue
    return 0, SIZE_UNKNOWN_MAX, None, 60


def parse_listing(html: str, page_url: str) -> Listing:
    """Parse a directory listing page fetched from ``page_url`` (the directory's URL).

    Only links that name an entry one level below ``page_url`` count (same scheme, host and
    port; no query, no fragment): the parent link, column-sort links and links elsewhere are
    ignored. Raises :class:`ListingError` when the page is not a listing, or when a listing
    of a known format has an entry whose date or size cannot be read (a damaged page must
    fail the scan, not silently drop files). A page cut short sets ``truncated`` instead and
    drops a last entry it cannot read.
    """
    collector = _Collector()
    try:
        collector.feed(_LONE_LT.sub("&lt;", html))
        collector.close()
    except (AssertionError, ValueError) as exc:  # _markupbase raises AssertionError on "<![x"
        raise ListingError(f"unparsable HTML: {exc}") from exc
    fmt = _detect(collector)
    columns = _columns(fmt, collector.sort_columns)
    truncated = not collector.closed
    base = _Base(page_url)

    kept: list[tuple[str, bool, _Anchor]] = []
    names: set[str] = set()
    for anchor in collector.anchors:
        if anchor.href is None:
            continue
        child = base.child(anchor.href.strip())
        if child is None or child[0] in names:
            continue
        names.add(child[0])
        kept.append((child[0], child[1], anchor))

    entries: list[Entry] = []
    precision = 0
    for index, (name, is_dir, anchor) in enumerate(kept):
        text = anchor.text()
        if columns is None:
            lo, hi, mtime, prec = _read_best_effort(text, is_dir)
        else:
            try:
                lo, hi, mtime, prec = _read_columns(text, *columns, is_dir)
            except _Unreadable as exc:
                if truncated and index == len(kept) - 1:
                    break  # the cut went through this entry
                raise ListingError(
                    f"{fmt} listing: cannot read the {exc} of {name[:100]!r} in {text[:80]!r}"
                ) from None
        if is_dir:
            lo, hi = 0, SIZE_UNKNOWN_MAX
        if mtime is not None:
            precision = max(precision, prec)
        entries.append(Entry(name, is_dir, lo, hi, mtime))
    return Listing(fmt, tuple(entries), truncated, precision or 60)
