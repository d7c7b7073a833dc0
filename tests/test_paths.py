from __future__ import annotations

import fnmatch

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mirrorhub.errors import InvalidPath
from mirrorhub.paths import is_reserved, name_matcher, normalize_path, parent_dirs, quote_path


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("/pub/x.iso", "pub/x.iso"),
        ("/pub/dir/", "pub/dir/"),
        ("/", ""),
        ("/a b/ü.iso", "a b/ü.iso"),
        ("/pub/..x/x..y", "pub/..x/x..y"),
        ("/@evil.example", "@evil.example"),
    ],
)
def test_valid_paths(raw: str, expected: str) -> None:
    assert normalize_path(raw) == expected


@pytest.mark.parametrize(
    "raw",
    [
        "pub/x",
        "/pub/../etc/passwd",
        "/..",
        "/pub/./x",
        "//evil.example/x",
        "/pub//x",
        "/pub\\x",
        "/pub/\x00x",
        "/pub/\nx",
        "/pub/\x7f",
        "/bad\ufffd",
        "/" + "a" * 1024,
        "/" + "é" * 600,
    ],
)
def test_malformed_paths_are_refused(raw: str) -> None:
    with pytest.raises(InvalidPath):
        normalize_path(raw)


def test_quote_path_cannot_change_the_host() -> None:
    base = "https://m.example/pub/"
    for path in ("@evil.example/x", "x?y#z", ":8080/x", "%2e%2e/x"):
        url = base + quote_path(path)
        assert url.startswith(base)
        assert "@" not in url[len(base) :] and "?" not in url and "#" not in url


def test_reserved_and_parents() -> None:
    assert is_reserved("-/status") and not is_reserved("-x/file")
    assert parent_dirs("a/b/c.iso") == ["a/", "a/b/"]


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.sampled_from(
            ["Release", "*.asc", "Packages*", "*SUMS.gpg", "a?c", "[ab]*.iso", "x*y", "*", "*.db"]
        ),
        max_size=5,
    ),
    st.text(alphabet="abcxyRPSUMgpes.*?[]", max_size=12),
)
def test_name_matcher_agrees_with_fnmatch(patterns: list[str], name: str) -> None:
    matches = name_matcher(patterns)
    expected = any(fnmatch.fnmatchcase(name, p) for p in patterns)
    assert (matches is not None and matches(name)) == expected
    assert (matches is None) == (not patterns)
