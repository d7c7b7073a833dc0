"""The bulk loading path of a full build agrees with the plain one."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from mirrorhub.domain import Mirror, MirrorState
from mirrorhub.index import IndexBuilder, IndexConfig
from mirrorhub.selection import KIND_MISSING, KIND_OUTDATED

MIRRORS = [
    (Mirror(id=i, name=f"m{i}", http_url=f"http://m{i}/", https_url=None), MirrorState())
    for i in (1, 2, 5, 9)
]
FILES = [(f, f"d{f % 3}/f{f}.iso", 5000, 1, None, 1.0) for f in range(1, 9)]


@settings(max_examples=200, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from([f[0] for f in FILES] + [99]),  # 99: deleted between the two reads
        st.dictionaries(st.sampled_from([1, 2, 5, 9, 12]), st.booleans(), min_size=1),  # 12: new
    )
)
def test_code_lists_equal_plain_groups(groups: dict[int, dict[int, bool]]) -> None:
    plain = IndexBuilder(IndexConfig(), MIRRORS, 1)
    bulk = IndexBuilder(IndexConfig(), MIRRORS, 1)
    for builder in (plain, bulk):
        builder.add_files(FILES)
    plain.add_diffs(
        (f, list(lacking), bytes(KIND_MISSING if m else KIND_OUTDATED for m in lacking.values()))
        for f, lacking in groups.items()
    )
    bulk.add_diff_lists(
        (f, ",".join(str(2 * m + missing) for m, missing in lacking.items()))
        for f, lacking in groups.items()
    )
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
