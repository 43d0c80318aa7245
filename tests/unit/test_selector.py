from __future__ import annotations

import pytest

from pycalico.model.selector import SelectorSyntaxError, matches, parse

LABELS = {"role": "rr", "zone": "a", "kubernetes.io/hostname": "node-1"}


@pytest.mark.parametrize(("selector", "expected"), [
    ("", True),
    ("all()", True),
    ("has(role)", True),
    ("!has(role)", False),
    ("role == 'rr'", True),
    ('role != "rr"', False),
    ("role in {'rr', 'x'}", True),
    ("role not in {'rr'}", False),
    ("zone == 'a' && role == 'rr'", True),
    ("zone == 'b' || role == 'rr'", True),
    ("!(zone == 'b' || role == 'x')", True),
    ("kubernetes.io/hostname == 'node-1'", True),
    ("role contains 'r'", True),
    ("role starts with 'x'", False),
    ("zone ends with 'a'", True),
    ("missing == ''", False),
])
def test_selector_matches_like_calico(selector: str, expected: bool) -> None:
    assert matches(selector, LABELS) is expected


@pytest.mark.parametrize("bad", ["role ==", "has(", "role = 'x'", "global()", "a in {'x'", "&& role", "role == x"])
def test_bad_selectors_are_refused(bad: str) -> None:
    with pytest.raises(SelectorSyntaxError):
        parse(bad)
