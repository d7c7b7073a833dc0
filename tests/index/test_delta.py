"""Changes applied in place give exactly the decisions of a full rebuild."""

from __future__ import annotations

import dataclasses
import ipaddress
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mirrorhub.domain import Client, Health, Location, Mirror, MirrorState, Options, Scheme
from mirrorhub.index import (
    Index,
    IndexConfig,
    IndexSource,
    NeedsRebuild,
    apply_now,
    build_index,
    restrict,
)
from mirrorhub.index.source import FileTuple
from mirrorhub.selection import Band

PLACES = [("DE", "EU", 52.5, 13.4), ("US", "NA", 40.7, -74.0), ("JP", "AS", 35.7, 139.7)]
CONFIG = IndexConfig(Band(1.5, 500.0), 2, 1_000, ("*.asc",), (("a/", 100.0),))
DIRS = ["a", "a/x", "b", "c/d/e"]


def mirror(i: int, draw: st.DrawFn) -> Mirror:
    cc, cont, lat, lon = draw(st.sampled_from(PLACES))
    return Mirror(
        id=i,
        name=f"m{i}",
        http_url=f"http://m{i}.example/",
        https_url=draw(st.sampled_from([f"https://m{i}.example/", None])),
        country=cc,
        continent=cont,
        latitude=lat + draw(st.floats(-2, 2)),
        longitude=lon,
        capacity=draw(st.integers(1, 5000)),
        scope=draw(st.sampled_from([(), (), ("a/",)])),
    )


def state(draw: st.DrawFn) -> MirrorState:
    return MirrorState(
        health=draw(st.sampled_from([Health.UP, Health.UP, Health.DOWN])),
        last_good_scan=draw(st.sampled_from([100.0, 200.0, 300.0])),
    )


def a_file(fid: int, draw: st.DrawFn) -> FileTuple:
    name = draw(st.sampled_from([".iso", ".tar.gz", ".asc"]))
    return (
        fid,
        f"{draw(st.sampled_from(DIRS))}/f{fid}{name}",
        draw(st.sampled_from([10, 50_000, 70_000])),
        draw(st.integers(1, 3)),
        draw(st.sampled_from([None, "ab" * 32, "cd" * 32])),
        float(draw(st.sampled_from([50, 150, 250]))),
    )


@st.composite
def diff_sets(draw: st.DrawFn, mirror_ids: list[int], file_ids: list[int]):  # type: ignore[no-untyped-def]
    if not file_ids:  # every file was removed and none added
        return [], [], []
    pairs = draw(
        st.lists(
            st.tuples(st.sampled_from(mirror_ids), st.sampled_from(file_ids)),
            unique=True,
            max_size=3 * len(file_ids),
        )
    )
    missing = [p for p in pairs if draw(st.booleans())]
    confirmations = [
        (m, f, draw(st.sampled_from([120.0, 260.0])))
        for m, f in draw(st.lists(st.sampled_from(pairs), unique=True, max_size=4))
    ] if pairs else []  # fmt: skip
    return pairs, missing, confirmations


@st.composite
def changes(draw: st.DrawFn) -> tuple[IndexSource, IndexSource, frozenset[int]]:
    """A world before, the world after random changes, and the ids the change log names."""
    n_mirrors = draw(st.integers(1, 8))
    mirrors = [(mirror(i, draw), state(draw)) for i in range(1, n_mirrors + 1)]
    n_files = draw(st.integers(1, 25))
    files = [a_file(f, draw) for f in range(1, n_files + 1)]
    ids = [f[0] for f in files]
    diffs, missing, confirmations = draw(diff_sets(list(range(1, n_mirrors + 1)), ids))
    before = IndexSource(1, mirrors, files, diffs, missing, confirmations)

    # Mirrors: new states, new facts, new mirrors at the end (a removal is tested apart).
    # (Half the time the mirrors stay as they were: cached rankings then live on, and only
    # the files' own cache keys keep stale answers out.)
    touch_mirrors = draw(st.booleans())
    after_mirrors = [
        (dataclasses.replace(m, capacity=draw(st.integers(1, 5000))), state(draw))
        if touch_mirrors and draw(st.booleans()) else (m, s)
        for m, s in mirrors
    ]  # fmt: skip
    added = draw(st.integers(0, 2)) if touch_mirrors else 0
    after_mirrors += [(mirror(n_mirrors + i, draw), state(draw)) for i in range(1, added + 1)]
    # Files: some change, some go, some come (ids beyond every earlier one).
    kept = [f for f in files if not draw(st.booleans()) or len(files) == 1]
    after_files = [
        (f[0], f[1], *a_file(f[0], draw)[2:]) if draw(st.booleans()) else f for f in kept
    ]
    new_count = draw(st.integers(0, 4))
    after_files += [a_file(n_files + i, draw) for i in range(1, new_count + 1)]
    after_ids = [f[0] for f in after_files]
    all_mirror_ids = [m.id for m, _ in after_mirrors]
    new_diffs, new_missing, new_conf = draw(diff_sets(all_mirror_ids, after_ids))
    # Keep some of the old differences of files still there, so not everything changes.
    keep_old = draw(st.booleans())
    if keep_old:
        survivors = {f[0] for f in after_files}
        new_diffs = list(dict.fromkeys([*(d for d in diffs if d[1] in survivors), *new_diffs]))
        new_missing = [d for d in new_diffs if d in set(missing) | set(new_missing)]
        new_conf = [c for c in confirmations if c[1] in survivors] + [
            c for c in new_conf if (c[0], c[1]) not in {(x[0], x[1]) for x in confirmations}
        ]
    after = IndexSource(2, after_mirrors, after_files, new_diffs, new_missing, new_conf)
    changed = _changed_ids(before, after)
    # The log may name more files than changed (a scan lists what it rewrote): harmless.
    extra = draw(st.sets(st.sampled_from(ids), max_size=3))
    return before, after, frozenset(changed | extra)


def _facts(source: IndexSource) -> dict[int, tuple[object, ...]]:
    out: dict[int, tuple[object, ...]] = {f[0]: (f, set(), set(), set()) for f in source.files}
    for m, f in source.diffs:
        if f in out:
            out[f][1].add(m)  # type: ignore[attr-defined]
    for m, f in source.missing_kinds:
        if f in out:
            out[f][2].add(m)  # type: ignore[attr-defined]
    for m, f, at in source.confirmations:
        if f in out:
            out[f][3].add((m, at))  # type: ignore[attr-defined]
    return out


def _changed_ids(before: IndexSource, after: IndexSource) -> set[int]:
    a, b = _facts(before), _facts(after)
    return {f for f in a.keys() | b.keys() if a.get(f) != b.get(f)}


CLIENTS = [
    Client(ipaddress.ip_address("192.0.2.7"), Location(cc, cont, lat, lon, None))
    for cc, cont, lat, lon in [*PLACES, (None, None, None, None)]
]
OPTIONS = [Options(), Options(scheme=Scheme.HTTPS), Options(country="JP")]


def assert_same_answers(patched: Index, rebuilt: Index, paths: set[str], seed: int) -> None:
    assert patched.version == rebuilt.version
    assert len(patched) == len(rebuilt)
    assert set(patched.positions) == set(rebuilt.positions)
    assert sorted(patched.dirs) == sorted(rebuilt.dirs)
    for path in paths:
        for probe in (path, path.rsplit("/", 1)[0], path.rsplit("/", 1)[0] + "/"):
            assert patched.is_dir(probe) == rebuilt.is_dir(probe)
        p, r = patched.lookup(path), rebuilt.lookup(path)
        assert (p is None) == (r is None)
        if p is None or r is None:
            continue
        assert patched.origin_file(p) == rebuilt.origin_file(r)
        assert patched.rendered(p) == rebuilt.rendered(r)
        assert patched.digest_header(p) == rebuilt.digest_header(r)
        for client in CLIENTS:
            for options in OPTIONS:
                for now in (240.0, 2000.0):
                    got = patched.decide(
                        p, client, options, random.Random(seed), full=True, now=now
                    )
                    want = rebuilt.decide(
                        r, client, options, random.Random(seed), full=True, now=now
                    )
                    assert got == want
                    fast_p = patched.fast_pick(
                        p, patched.profile(client, options), random.Random(seed), now
                    )
                    fast_r = rebuilt.fast_pick(
                        r, rebuilt.profile(client, options), random.Random(seed), now
                    )
                    assert fast_p == fast_r


@settings(max_examples=200, deadline=None)
@given(changes(), st.integers(0, 2**32), st.booleans())
def test_delta_equals_full_rebuild(world, seed: int, warm: bool) -> None:  # type: ignore[no-untyped-def]
    before, after, changed = world
    index = build_index(before, CONFIG)
    every_path = {f[1] for f in before.files} | {f[1] for f in after.files}
    if warm:  # answers cached before the change must not survive it
        assert_same_answers(index, build_index(before, CONFIG), every_path, seed)
    apply_now(index, restrict(after, changed, version=2))
    assert_same_answers(index, build_index(after, CONFIG), every_path, seed)


def test_a_removed_mirror_needs_a_rebuild() -> None:
    m1 = Mirror(id=1, name="m1", http_url="http://m1/", https_url=None)
    m2 = Mirror(id=2, name="m2", http_url="http://m2/", https_url=None)
    source = IndexSource(1, [(m1, MirrorState()), (m2, MirrorState())], [], [])
    index = build_index(source, CONFIG)
    gone = IndexSource(2, [(m2, MirrorState())], [], [])
    with pytest.raises(NeedsRebuild):
        apply_now(index, restrict(gone, frozenset(), version=2))
    assert index.version == 1 and [s.mirror.name for s in index.slots] == ["m1", "m2"]


def test_a_reused_file_id_needs_a_rebuild() -> None:
    """SQLite hands out the id of a deleted newest row again."""
    files = [(1, "a/one.iso", 5000, 1, None, 1.0), (2, "a/two.iso", 5000, 1, None, 1.0)]
    index = build_index(IndexSource(1, [], files, []), CONFIG)
    apply_now(index, restrict(IndexSource(2, [], files[:1], []), frozenset({2}), version=2))
    assert index.lookup("a/two.iso") is None and len(index) == 1
    again = IndexSource(3, [], [files[0], (2, "b/new.iso", 5000, 1, None, 3.0)], [])
    with pytest.raises(NeedsRebuild):
        apply_now(index, restrict(again, frozenset({2}), version=3))


def test_positions_keep_their_file() -> None:
    """Counters keyed by position stay right: a removed file leaves a hole, a new one is added
    at the end."""
    files = [(i, f"d/f{i}.iso", 5000, 1, None, 1.0) for i in (1, 2, 3)]
    index = build_index(IndexSource(1, [], files, []), CONFIG)
    after = IndexSource(2, [], [files[0], files[2], (9, "d/f9.iso", 5000, 1, None, 2.0)], [])
    apply_now(index, restrict(after, frozenset({2, 9}), version=2))
    assert [index.lookup(f"d/f{i}.iso") for i in (1, 2, 3, 9)] == [0, None, 2, 3]
    assert index.is_dir("d") and not index.is_dir("e")
