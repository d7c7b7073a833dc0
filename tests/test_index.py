from __future__ import annotations

import asyncio
import base64
import ipaddress
import random

from mirrorhub.domain import (
    Client,
    Health,
    Location,
    Mirror,
    MirrorState,
    Options,
    OriginReason,
    Reason,
)
from mirrorhub.index import (
    IndexConfig,
    IndexHolder,
    IndexSource,
    SourceLoader,
    build_index,
    empty_index,
    refresh_once,
)

UP = MirrorState(Health.UP, last_good_scan=1000.0)


def m(i: int, **kw: object) -> Mirror:
    return Mirror(id=i, name=f"m{i}", http_url=f"http://m{i}.example/", https_url=None, **kw)  # type: ignore[arg-type]


FILES = [
    (11, "pub/a.iso", 10_000, 1, "00" * 32, 10.0),
    (12, "pub/sub/b.iso", 20_000, 2, None, 10.0),
    (13, "pub/Release", 50_000, 3, None, 10.0),
    (14, "tiny.txt", 10, 4, None, 10.0),
]
CONFIG = IndexConfig(min_redirect_size=100, origin_only_patterns=("Release", "*.sha256"))
CLIENT = Client(ipaddress.ip_address("198.51.100.7"), Location())


def source(**kw: object) -> IndexSource:
    base: dict[str, object] = {
        "version": 3,
        "mirrors": [(m(1), UP), (m(2), UP)],
        "files": FILES,
        "diffs": [(1, 11), (2, 11), (2, 12)],
        "missing_kinds": [(1, 11)],
    }
    base.update(kw)
    return IndexSource(**base)  # type: ignore[arg-type]


def test_lookup_dirs_and_file_facts() -> None:
    idx = build_index(source(), CONFIG, clock=lambda: 5.0)
    assert len(idx) == 4 and idx.version == 3 and idx.built_at == 5.0
    pos = idx.lookup("pub/a.iso")
    assert pos is not None and idx.lookup("pub/nope") is None
    f = idx.origin_file(pos)
    assert (f.size, f.sha256) == (10_000, "00" * 32)
    assert idx.is_dir("pub") and idx.is_dir("pub/") and idx.is_dir("pub/sub/") and idx.is_dir("")
    assert not idx.is_dir("pub/a.iso")


def test_difference_sets_and_reasons() -> None:
    idx = build_index(source(), CONFIG)
    d = idx.decide(idx.lookup("pub/a.iso"), CLIENT, Options(), random.Random(1), full=True)  # type: ignore[arg-type]
    assert d.chosen is None and d.origin_reason is OriginReason.NO_FRESH_MIRROR
    assert {e.mirror.name: e.reason for e in d.excluded} == {
        "m1": Reason.MISSING,
        "m2": Reason.OUTDATED,
    }
    d = idx.decide(idx.lookup("pub/sub/b.iso"), CLIENT, Options(), random.Random(1), full=False)  # type: ignore[arg-type]
    assert d.chosen is not None and d.chosen.url == "http://m1.example/pub/sub/b.iso"


def test_small_and_origin_only_files_go_to_the_origin() -> None:
    idx = build_index(source(diffs=[]), CONFIG)
    for path, reason in (
        ("pub/Release", OriginReason.ORIGIN_ONLY),
        ("tiny.txt", OriginReason.TOO_SMALL),
    ):
        d = idx.decide(idx.lookup(path), CLIENT, Options(), random.Random(1), full=False)  # type: ignore[arg-type]
        assert d.chosen is None and d.origin_reason is reason


def test_more_than_255_mirrors_use_wide_difference_sets() -> None:
    mirrors = [(m(i), UP) for i in range(1, 301)]
    diffs = [(i, 11) for i in range(1, 300)]  # only m300 holds a.iso
    idx = build_index(source(mirrors=mirrors, diffs=diffs, missing_kinds=[]), CONFIG)
    d = idx.decide(idx.lookup("pub/a.iso"), CLIENT, Options(), random.Random(1), full=True)  # type: ignore[arg-type]
    assert d.chosen is not None and d.chosen.mirror.name == "m300"
    assert len(d.excluded) == 299


def test_confirmation_makes_a_stale_mirror_fresh() -> None:
    files = [(11, "pub/a.iso", 10_000, 1, None, 2000.0)]  # changed after the last scan (1000)
    idx = build_index(
        source(files=files, diffs=[], missing_kinds=[], confirmations=[(2, 11, 2001.0)]), CONFIG
    )
    d = idx.decide(0, CLIENT, Options(), random.Random(1), full=True)
    assert d.chosen is not None and d.chosen.mirror.name == "m2"
    assert {e.mirror.name: e.reason for e in d.excluded} == {"m1": Reason.STALE}


def test_refresh_keeps_last_good_index_when_the_database_fails() -> None:
    holder = IndexHolder(build_index(source(), CONFIG))

    async def version() -> int:
        raise OSError("connection refused")

    async def load() -> IndexSource:
        raise AssertionError("not reached")

    swapped = asyncio.run(refresh_once(holder, SourceLoader(version, load), CONFIG))
    assert not swapped and holder.current.version == 3
    assert holder.last_error is not None and "connection refused" in holder.last_error


def test_refresh_swaps_when_the_version_moves() -> None:
    holder = IndexHolder(empty_index(CONFIG))

    async def version() -> int:
        return 3

    async def load() -> IndexSource:
        return source()

    assert asyncio.run(refresh_once(holder, SourceLoader(version, load), CONFIG))
    assert holder.current.version == 3 and holder.database_ok
    assert not asyncio.run(refresh_once(holder, SourceLoader(version, load), CONFIG))


def test_allow_outdated_serves_an_old_copy_only_inside_the_window() -> None:
    files = [(11, "pub/nightly/n.iso", 10_000, 1, "00" * 32, 2000.0)]
    diffs = [(1, 11)]  # m1 has an older version; m2 scanned before the change (stale)
    config = IndexConfig(allow_outdated=(("pub/nightly/", 600.0),))
    idx = build_index(source(files=files, diffs=diffs, missing_kinds=[]), config)
    inside = idx.decide(0, CLIENT, Options(), random.Random(1), full=True, now=2500.0)
    assert inside.chosen is not None and inside.chosen.maybe_outdated
    outside = idx.decide(0, CLIENT, Options(), random.Random(1), full=True, now=2601.0)
    assert outside.chosen is None and outside.origin_reason is OriginReason.NO_FRESH_MIRROR
    # A mirror with the current version always wins over tolerated ones.
    fresh = build_index(
        source(files=files, diffs=diffs, missing_kinds=[], confirmations=[(2, 11, 2100.0)]), config
    )
    d = fresh.decide(0, CLIENT, Options(), random.Random(1), full=True, now=2500.0)
    assert d.chosen is not None and d.chosen.mirror.name == "m2" and not d.chosen.maybe_outdated
    # Missing files are never tolerated.
    missing = build_index(
        source(files=files, diffs=[(1, 11), (2, 11)], missing_kinds=[(1, 11), (2, 11)]), config
    )
    assert (
        missing.decide(0, CLIENT, Options(), random.Random(1), full=True, now=2100.0).chosen is None
    )


def test_the_ranking_and_band_caches_keep_their_configured_bounds() -> None:
    config = IndexConfig(min_redirect_size=100, ranking_cache=2, band_cache=3)
    index = build_index(source(), config)
    places = [Location("DE", "EU", 50.0 + i, 10.0) for i in range(5)]
    profiles = [index.profile(Client(CLIENT.address, loc), Options()) for loc in places]
    assert len(index._profiles) == 2  # the two asked last
    assert index.profile(Client(CLIENT.address, places[-1]), Options()) is profiles[-1]
    assert index.profile(Client(CLIENT.address, places[0]), Options()) is not profiles[0]
    for profile in profiles:
        for pos in range(len(index)):
            index.fast_pick(pos, profile, random.Random(1), 0.0)
    assert len(index._bands) == 3


def test_rendered_path_and_digest_follow_the_files_facts() -> None:
    """The rendered path and the Digest value, kept per file, follow a change to the file
    (a new checksum, none, the file removed); a new file's path is %-encoded."""
    idx = build_index(source(), CONFIG)
    a, b = idx.lookup("pub/a.iso"), idx.lookup("pub/sub/b.iso")
    assert a is not None and b is not None
    for _ in range(2):  # made, then kept
        assert idx.rendered(a) == b"pub/a.iso"
        assert idx.digest_header(a) == b"SHA-256=" + base64.b64encode(bytes(32))
        assert idx.rendered(b) == b"pub/sub/b.iso" and idx.digest_header(b) is None
        assert a in idx._rendered and b in idx._rendered
    idx.put_file((12, "pub/sub/b.iso", 20_000, 2, "ff" * 32, 11.0))
    assert idx.digest_header(b) == b"SHA-256=" + base64.b64encode(b"\xff" * 32)
    assert idx.rendered(b) == b"pub/sub/b.iso"
    idx.put_file((11, "pub/a.iso", 10_000, 1, None, 11.0))
    assert idx.digest_header(a) is None and idx.rendered(a) == b"pub/a.iso"
    idx.append_files([(20, "pub/ä b.iso", 10_000, 1, "01" * 32, 12.0)])
    c = idx.lookup("pub/ä b.iso")
    assert c is not None and idx.rendered(c) == b"pub/%C3%A4%20b.iso"
    assert idx.digest_header(c) == b"SHA-256=" + base64.b64encode(b"\x01" * 32)
    idx.drop_file(20)
    assert idx.digest_header(c) is None and c not in idx._rendered
