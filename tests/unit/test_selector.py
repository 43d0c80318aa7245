"""Selectors behave as libcalico-go's (lib/selector parser_test.go, tokenizer_test.go): the
cases below are Calico's, restated as data."""

from __future__ import annotations

import pytest

from pycalico.errors import ValidationError
from pycalico.model.selector import (
    SelectorSyntaxError,
    canonical,
    is_only_global,
    matches,
    parse,
    prefixed,
    tokenize,
    unique_id,
    validate,
)

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


# (selector, label sets it matches, label sets it does not match) — Calico's selectorTests.
CALICO_MATCH_CASES: list[tuple[str, list[dict[str, str]], list[dict[str, str]]]] = [
    ('a == "b"', [{"a": "b"}, {"a": "b", "c": "d"}], [{}, {"a": "c"}, {"c": "d"}]),
    ('a == "b" && c == "d"', [{"a": "b", "c": "d"}],
     [{}, {"a": "b", "c": "e"}, {"a": "c", "c": "d"}, {"c": "d"}, {"a": "b"}]),
    ('a == "b" || c == "d"', [{"a": "b", "c": "d"}, {"a": "b"}, {"c": "d"}],
     [{}, {"a": "e", "c": "e"}, {"c": "e"}, {"a": "e"}]),
    ("a in {\"'\", '\"', \"c\"}", [{"a": "c"}, {"a": '"'}, {"a": "'"}], [{}, {"a": "e"}]),
    ("a not in {\"'\", '\"', \"c\"}", [{}, {"a": "e"}], [{"a": "c"}, {"a": '"'}, {"a": "'"}]),
    ("a == 'a'", [{"a": "a"}], [{"a": "b"}, {}]),
    ('a != "b"', [{"a": "a"}], []),
    ('a != "a"', [{}], [{"a": "a"}]),
    ('a contains "a"', [{"a": "a"}, {"a": "bab"}, {"a": "aaa", "b": "c"}], [{}, {"a": "b"}, {"b": "aaa"}]),
    ('a starts with "a"', [{"a": "a"}, {"a": "abb"}, {"a": "aaa", "b": "c"}],
     [{}, {"a": "b"}, {"a": "baa"}, {"b": "aaa"}]),
    ('a ends with "a"', [{"a": "a"}, {"a": "bba"}, {"a": "aaa", "b": "c"}],
     [{}, {"a": "b"}, {"a": "aab"}, {"b": "aaa"}]),
    ('a in {"a"}', [{"a": "a"}], [{"a": "b"}]),
    ('!a in {"a"}', [{"a": "b"}], []),
    ('a in {"a", "b"}', [{"a": "a"}, {"a": "b"}], [{"a": "c"}]),
    ('a not in {"d", "e"}', [{"a": "a"}], []),
    ('a not in {"a"}', [], [{"a": "a"}]),
    ("has(a)", [{"a": "b"}], []),
    ("!has(a)", [{"b": "b"}], [{"a": "b"}]),
    ("has(b)", [], [{"a": "b"}]),
    ("!!has(b)", [], [{"a": "b"}]),
    ("! has(a)", [], [{"a": "b"}]),
    ("!!! has(a)", [], [{"a": "b"}]),
    ("!!!has(a)", [], [{"a": "b"}]),
    ("!! ! has(a)", [], [{"a": "b"}]),
    ("! !!has(a)", [], [{"a": "b"}]),
    ("", [{}, {"a": "b"}], []),
    (" ", [{}], []),
    ("all()", [{}], []),
    (" all()", [{}, {"a": "b"}], []),
    ("a == 'a1' && b == 'b1'", [{"a": "a1", "b": "b1"}], []),
    ("a == 'a1' && b != 'b1'", [], [{"a": "a1", "b": "b1"}]),
    ("a != 'a1' && b == 'b1'", [], [{"a": "a1", "b": "b1"}]),
    ("a != 'a1' && b != 'b1'", [], [{"a": "a1", "b": "b1"}]),
    ("a != 'a1' && !b == 'b1'", [], [{"a": "a1", "b": "b1"}]),
    ("!a == 'a1' && b == 'b1'", [], [{"a": "a1", "b": "b1"}]),
    ("has(a) && !has(b)", [{"a": "a"}], []),
    ("!has(b) && has(a)", [{"a": "a"}], []),
    ("!(!has(a) || has(b))", [{"a": "a"}], []),
    ("!(has(b) || !has(a))", [{"a": "a"}], []),
    ("a == 'a1' || b == 'b1'", [{"a": "a1", "b": "b1"}], []),
    ("a == 'a1' || b != 'b1'", [{"a": "a1", "b": "b1"}], []),
    ("a != 'a1' || b == 'b1'", [{"a": "a1", "b": "b1"}], []),
    ("a != 'a1' || b != 'b1'", [], [{"a": "a1", "b": "b1"}]),
    ("! a == 'a1' || ! b == 'b1'", [], [{"a": "a1", "b": "b1"}]),
    # absent labels (calico-policy.md §2.1): only !=, not in and !has hold without the label
    ("env != 'prod'", [{}, {"env": "dev"}], [{"env": "prod"}]),
    ("env not in {'prod'}", [{}, {"env": "dev"}], [{"env": "prod"}]),
    ("!has(env)", [{}], [{"env": ""}]),
    ("env contains ''", [{"env": ""}], [{}]),
    ("env starts with ''", [{"env": "x"}], [{}]),
    ("env ends with ''", [{"env": "x"}], [{}]),
]


@pytest.mark.parametrize(("selector", "hits", "misses"), CALICO_MATCH_CASES, ids=[c[0] for c in CALICO_MATCH_CASES])
def test_calico_match_cases_hold_before_and_after_canonicalising(selector: str, hits: list[dict[str, str]],
                                                                 misses: list[dict[str, str]]) -> None:
    validate("selector", selector)
    for text in (selector, canonical(selector)):
        assert [matches(text, labels) for labels in hits] == [True] * len(hits)
        assert [matches(text, labels) for labels in misses] == [False] * len(misses)


CALICO_BAD_SELECTORS = [
    "b == b", "b contains b", "b starts with b", "b ends with b", "'b1' == b", "b", "a b", "!",
    'foo == "bar" &', 'foo == "bar" |', "foo != ||", 'foo in {"", ||', 'foo in ""', '"FOO', "\"FOO'", "'FOO",
    "(", '(a == "foo"', ")", "()", "%", 'a == "b" && %', 'a == "b" || %', "a ", "has(foo) &&",
    # tokenizer errors
    "a" * 513 + ' == "value"', 'label == "value', "label == 'value", 'label = "value"', "all(", "global(",
    "has()", "has(foo", "has( foo ", 'a == "b" & has(foo)', 'a == "b" | has(foo)', 'label starts foo "value"',
    'label inf "value"', 'label ends foo "value"', 'label ends withs "value"', 'label squiggles "value"',
    # ours: refused before, still refused
    "role ==", "role = 'x'", "a in {'x'", "&& role", "role == x", "a in {,}", "a == 'b'\n",
]


@pytest.mark.parametrize("bad", CALICO_BAD_SELECTORS)
def test_bad_selectors_are_refused(bad: str) -> None:
    with pytest.raises(SelectorSyntaxError):
        parse(bad)
    with pytest.raises(ValidationError) as err:
        validate("spec.selector", bad)
    assert err.value.field == "spec.selector" and err.value.value == bad


@pytest.mark.parametrize(("text", "kinds"), [
    ('a=="b"', ["label", "==", "string", "eof"]),
    ('a!="b"', ["label", "!=", "string", "eof"]),
    ('(a=="b")', ["(", "label", "==", "string", ")", "eof"]),
    ('contains contains "contains"', ["label", "contains", "string", "eof"]),
    ('label contains"value"', ["label", "contains", "string", "eof"]),
    ('label startswith "value"', ["label", "startswith", "string", "eof"]),
    ('startswith starts with "value"', ["label", "startswith", "string", "eof"]),
    ('label ends  with "value"', ["label", "endswith", "string", "eof"]),
    ('a notin"bar"&&!has(foo)||b in"c"', ["label", "notin", "string", "&&", "!", "has", "||", "label", "in",
                                           "string", "eof"]),
    ("a  not  in  \"bar\"  &&  ! has( foo )  ||  b  in  c ", ["label", "notin", "string", "&&", "!", "has", "||",
                                                              "label", "in", "label", "eof"]),
    ('a not in {"a","B"}', ["label", "notin", "{", "string", ",", "string", "}", "eof"]),
    ("global( )", ["global", "eof"]),
    ("all( )", ["all", "eof"]),
    ("a" * 512 + ' == "value"', ["label", "==", "string", "eof"]),
])
def test_tokens_as_calicos_tokenizer(text: str, kinds: list[str]) -> None:
    assert [kind for kind, _ in tokenize(text)] == kinds


@pytest.mark.parametrize("label", ["calico/k8s_ns", "calico/k8s_ns/role", "calico/k8s_NS-.1/role"])
def test_has_takes_any_label_name(label: str) -> None:
    assert tokenize(f"has({label})") == [("has", label), ("eof", "")]


# Calico's canonicalisationTests (with the selector IDs it computes, where it lists them).
@pytest.mark.parametrize(("text", "expected", "uid"), [
    ("", "all()", "s:5y5I3VdRZfDU01O--xXAPx2yxCQQqMf0M6IWug"),
    (" all() ", "all()", "s:5y5I3VdRZfDU01O--xXAPx2yxCQQqMf0M6IWug"),
    (" (all() )", "all()", "s:5y5I3VdRZfDU01O--xXAPx2yxCQQqMf0M6IWug"),
    ("! (has( b)||! has(a ))", "!(has(b) || !has(a))", "s:Iss0uCleLYv1GSv_pNm7hAO58kE9jAx1NKyG3Q"),
    ('! (a == "b"&&! c != "d")', '!(a == "b" && !c != "d")', "s:lh3haoY1ikTRkd4UZu0nWSaIBknYLPJLX16d-w"),
    ("a == \"'\"", "a == \"'\"", ""),
    ("a == '\"'", "a == '\"'", ""),
    ("a contains '\"'", "a contains '\"'", ""),
    ("a contains \"'\"", "a contains \"'\"", ""),
    ("a startswith '\"'", "a starts with '\"'", ""),
    ("a endswith \"'\"", "a ends with \"'\"", ""),
    ("a!='\"'", "a != '\"'", ""),
    ('a in {"d"}', 'a in {"d"}', ""),
    ('a in {"a", "b"}', 'a in {"a", "b"}', ""),
    ('a in {"d", "a", "b"}', 'a in {"a", "b", "d"}', ""),
    ('a in {"z", "x", "y", "a"}', 'a in {"a", "x", "y", "z"}', ""),
    ('a in {"z", "z", "x", "y", "x", "a"}', 'a in {"a", "x", "y", "z"}', ""),
    # groups keep their parentheses and are never flattened; a lone term loses them
    ("a == 'b' && (c == 'd' && e == 'f')", '(a == "b" && (c == "d" && e == "f"))', ""),
    ("a == 'b' || c == 'd' && e == 'f'", '(a == "b" || (c == "d" && e == "f"))', ""),
    ("!(k == 'v')", '!k == "v"', ""),
    ("k not in {'v',}", 'k not in {"v"}', ""),
    ("global()", "global()", ""),
])
def test_canonical_form_and_id_as_calico(text: str, expected: str, uid: str) -> None:
    assert canonical(text) == expected
    assert canonical(expected) == expected
    assert unique_id(text) == unique_id(expected)
    if uid:
        assert unique_id(text) == uid


@pytest.mark.parametrize(("text", "expected"), [
    ("k == 'v'", 'visited/k == "v"'),
    ("k != 'v'", 'visited/k != "v"'),
    ("k contains 'v'", 'visited/k contains "v"'),
    ("k starts with 'v'", 'visited/k starts with "v"'),
    ("k ends with 'v'", 'visited/k ends with "v"'),
    ("k == 'v' && x == 'y'", '(visited/k == "v" && visited/x == "y")'),
    ("k == 'v' || has(x)", '(visited/k == "v" || has(visited/x))'),
    ("!(k == 'v')", '!visited/k == "v"'),
    ("k in {'v'}", 'visited/k in {"v"}'),
    ("k not in {'v'}", 'visited/k not in {"v"}'),
    ("!(!(k == 'v' && has(t) || all()) && (a in {'b', 'c'}))",
     '!(!((visited/k == "v" && has(visited/t)) || all()) && visited/a in {"b", "c"})'),
])
def test_prefixed_as_calicos_prefix_visitor(text: str, expected: str) -> None:
    assert prefixed(text, "visited/") == expected


def test_global_only_when_allowed() -> None:
    for text in ("global()", " global()", "has(a) || global()"):
        with pytest.raises(SelectorSyntaxError):
            parse(text)
        assert matches(text, {}, allow_global=True) is True
        assert matches(text, {"a": "b"}, allow_global=True) is True
    assert is_only_global(" global( ) ") and not is_only_global("(global())")
    assert not is_only_global("global() && a == 'b'") and not is_only_global("all()")
    with pytest.raises(ValidationError):
        validate("spec.selector", "global()")
    validate("source.namespaceSelector", "global()", allow_global=True)
