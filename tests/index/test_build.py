"""The bulk loading path of a full build agrees with the plain one."""

from __future__ import annotations

from array import array
from collections.abc import Iterator

from hypothesis import given, settings
from hypothesis import strategies as st

from mirrorhub.domain import Mirror, MirrorState
from mirrorhub.index import IndexBuilder, IndexConfig
from mirrorhub.index.source import DiffGroup
from mirrorhub.selection import KIND_MISSING, KIND_OUTDATED

MIRRORS = [
    (Mirror(id=i, name=f"m{i}", http_url=f"http://m{i}/", https_url=None), MirrorState())
    for i in (1, 2, 5, 9)
]
FILES = [(f, f"d{f % 3}/f{f}.iso", 5000, 1, None, 1.0) for f in range(1, 9)]


Groups = dict[int, dict[int, bool]]  # file id -> {mirror id: missing (else outdated)}


def _plain_groups(groups: Groups) -> Iterator[DiffGroup]:
    """``groups`` as IndexBuilder.add_diffs takes them."""
    for f, lacking in sorted(groups.items()):
        kinds = bytes(KIND_MISSING if m else KIND_OUTDATED for m in lacking.values())
        yield f, list(lacking), kinds


def _code_lists(groups: Groups) -> Iterator[tuple[int, str]]:
    """``groups`` as IndexBuilder.add_diff_lists takes them (SQL's aggregated codes)."""
    for f, lacking in sorted(groups.items()):
        yield f, ",".join(str(2 * m + missing) for m, missing in lacking.items())


@settings(max_examples=200, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from([f[0] for f in FILES] + [99]),  # 99: deleted between the two reads
        st.dictionaries(st.sampled_from([1, 2, 5, 9, 12]), st.booleans(), min_size=1),  # 12: new
    )
)
def test_code_lists_equal_plain_groups(groups: Groups) -> None:
    plain = IndexBuilder(IndexConfig(), MIRRORS, 1)
    bulk = IndexBuilder(IndexConfig(), MIRRORS, 1)
    for builder in (plain, bulk):
        builder.add_files(FILES)
    plain.add_diffs(_plain_groups(groups))
    bulk.add_diff_lists(_code_lists(groups))
    a, b = plain.finish(), bulk.finish()
    for pos in range(len(FILES)):
        want = sorted(zip(a.bad[pos] or (), a.kinds[pos] or (), strict=True))
        assert sorted(zip(b.bad[pos] or (), b.kinds[pos] or (), strict=True)) == want
        ids = {m.id for m, _ in MIRRORS}
        expected = sorted(
            ([m.id for m, _ in MIRRORS].index(m), KIND_MISSING if missing else KIND_OUTDATED)
            for m, missing in groups.get(FILES[pos][0], {}).items()
            if m in ids
        )
        assert want == expected


def _sets(groups: Groups, positions: dict[int, int], wide: bool) -> tuple:  # type: ignore[type-arg]
    """What mirrorhub.db.diff_reader makes of ``groups``: shared sets, mirrors unknown to
    ``positions`` left out, a file left with nothing left out."""
    file_ids, set_of, offsets = array("q"), array("I"), array("I", [0])
    pos, kinds, known = array("H" if wide else "B"), bytearray(), {}
    for f in sorted(groups):
        lacking = [(m, missing) for m, missing in groups[f].items() if m in positions]
        if not lacking:
            continue
        key = tuple(lacking)
        if key not in known:
            known[key] = len(offsets) - 1
            pos.extend(positions[m] for m, _ in lacking)
            kinds += bytes(KIND_MISSING if missing else KIND_OUTDATED for _, missing in lacking)
            offsets.append(len(kinds))
        file_ids.append(f)
        set_of.append(known[key])
    return file_ids, set_of, offsets, pos if wide else pos.tobytes(), bytes(kinds)


@settings(max_examples=200, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from([f[0] for f in FILES] + [0, 99]),  # not in the index: gone
        st.dictionaries(st.sampled_from([1, 2, 5, 9, 12]), st.booleans(), min_size=1),  # 12: new
    ),
    st.booleans(),
)
def test_diff_sets_equal_code_lists(groups: Groups, wide: bool) -> None:
    lists = IndexBuilder(IndexConfig(), MIRRORS, 1)
    sets = IndexBuilder(IndexConfig(), MIRRORS, 1)
    for builder in (lists, sets):
        builder.add_files(FILES)
    lists.add_diff_lists(_code_lists(groups))
    sets.add_diff_sets(*_sets(groups, sets.index.mirror_positions(), wide))
    a, b = lists.finish(), sets.finish()
    for pos in range(len(FILES)):
        assert (a.bad[pos] is None) == (b.bad[pos] is None)
        assert list(a.bad[pos] or ()) == list(b.bad[pos] or ())
        assert a.kinds[pos] == b.kinds[pos]


def test_files_with_equal_kinds_share_one_object_whichever_way_they_came() -> None:
    # Files 1 and 2 lack different mirrors the same way (missing, outdated): one kinds
    # object between them, as at 1M files most kinds lists repeat a few hundred values.
    groups = {1: {1: True, 2: False}, 2: {5: True, 9: False}, 3: {1: False, 2: True}}
    plain, lists, sets = (IndexBuilder(IndexConfig(), MIRRORS, 1) for _ in range(3))
    for builder in (plain, lists, sets):
        builder.add_files(FILES)
    plain.add_diffs(_plain_groups(groups))
    lists.add_diff_lists(_code_lists(groups))
    sets.add_diff_sets(*_sets(groups, sets.index.mirror_positions(), wide=False))
    for index in (plain.finish(), lists.finish(), sets.finish()):
        assert index.kinds[0] == index.kinds[1] == bytes([KIND_MISSING, KIND_OUTDATED])
        assert index.kinds[0] is index.kinds[1]
        assert index.kinds[2] == bytes([KIND_OUTDATED, KIND_MISSING])
        index.put_diffs(3, [2, 9], bytes([KIND_OUTDATED, KIND_MISSING]))  # a live update
        assert index.kinds[3] is index.kinds[2]
