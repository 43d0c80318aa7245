"""Calico label selectors: parse once, match many label sets.

Grammar (the subset Calico documents for nodeSelector/peerSelector):
``all()``, ``has(k)``, ``k == 'v'``, ``k != 'v'``, ``k in {'a','b'}``,
``k not in {...}``, ``k contains 'x'``, ``k starts with 'x'``,
``k ends with 'x'``, ``!expr``, ``expr && expr``, ``expr || expr``, ``( expr )``.
An empty selector matches everything. ``global()`` is refused, as in Calico.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from functools import lru_cache

from pycalico.errors import ValidationError

Labels = Mapping[str, str]
Matcher = Callable[[Labels], bool]

_TOKEN = re.compile(
    r"""\s*(?:
        (?P<op>&&|\|\||==|!=|!|\(|\)|\{|\}|,)
      | (?P<str>"[^"]*"|'[^']*')
      | (?P<word>[A-Za-z0-9_./-]+(?:\(\))?)
    )""",
    re.VERBOSE,
)

ALLOWED = "a Calico selector such as all(), has(k), k == 'v', k in {'a','b'}, !, &&, ||"


class SelectorSyntaxError(ValueError):
    pass


def _tokenize(text: str) -> list[str]:
    tokens: list[str] = []
    pos = 0
    text = text.rstrip()
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if not m or m.end() == pos:
            raise SelectorSyntaxError(f"unexpected character at position {pos}: {text[pos:pos + 10]!r}")
        tokens.append(m.group("op") or m.group("str") or m.group("word"))
        pos = m.end()
    return tokens


class _Parser:
    def __init__(self, tokens: list[str]) -> None:
        self.tokens = tokens
        self.pos = 0

    def peek(self, offset: int = 0) -> str | None:
        i = self.pos + offset
        return self.tokens[i] if i < len(self.tokens) else None

    def take(self, expected: str | None = None, *, what: str = "") -> str:
        """Consume the next token; ``expected`` is a literal it must equal, ``what`` only describes it."""
        tok = self.peek()
        if tok is None:
            raise SelectorSyntaxError(f"unexpected end, expected {expected or what or 'more'}")
        if expected is not None and tok != expected:
            raise SelectorSyntaxError(f"expected {expected!r}, found {tok!r}")
        self.pos += 1
        return tok

    def parse(self) -> Matcher:
        if not self.tokens:
            return lambda labels: True
        matcher = self.parse_or()
        if self.peek() is not None:
            raise SelectorSyntaxError(f"unexpected {self.peek()!r}")
        return matcher

    def parse_or(self) -> Matcher:
        parts = [self.parse_and()]
        while self.peek() == "||":
            self.take()
            parts.append(self.parse_and())
        return parts[0] if len(parts) == 1 else (lambda labels: any(p(labels) for p in parts))

    def parse_and(self) -> Matcher:
        parts = [self.parse_unary()]
        while self.peek() == "&&":
            self.take()
            parts.append(self.parse_unary())
        return parts[0] if len(parts) == 1 else (lambda labels: all(p(labels) for p in parts))

    def parse_unary(self) -> Matcher:
        if self.peek() == "!":
            self.take()
            inner = self.parse_unary()
            return lambda labels: not inner(labels)
        if self.peek() == "(":
            self.take()
            inner = self.parse_or()
            self.take(")")
            return inner
        return self.parse_term()

    def parse_term(self) -> Matcher:
        tok = self.take(what="a term")
        if tok == "all()":
            return lambda labels: True
        if tok == "global()":
            raise SelectorSyntaxError("global() is not allowed here")
        if tok == "has":
            self.take("(")
            key = self._label_key(self.take(what="a label key"))
            self.take(")")
            return lambda labels: key in labels
        key = self._label_key(tok)
        op = self.take(what="an operator")
        if op in ("==", "!="):
            value = self._string(self.take(what="a quoted value"))
            if op == "==":
                return lambda labels: labels.get(key) == value
            return lambda labels: labels.get(key) != value
        if op == "in" or (op == "not" and self.peek() == "in"):
            negate = op == "not"
            if negate:
                self.take("in")
            values = self._set()
            if negate:
                return lambda labels: labels.get(key) not in values
            return lambda labels: labels.get(key) in values
        if op == "contains":
            value = self._string(self.take(what="a quoted value"))
            return lambda labels: key in labels and value in labels[key]
        if op in ("starts", "ends"):
            self.take("with")
            value = self._string(self.take(what="a quoted value"))
            if op == "starts":
                return lambda labels: labels.get(key, None) is not None and labels[key].startswith(value)
            return lambda labels: labels.get(key, None) is not None and labels[key].endswith(value)
        raise SelectorSyntaxError(f"unknown operator {op!r} after {key!r}")

    def _set(self) -> frozenset[str]:
        self.take("{")
        values: set[str] = set()
        while self.peek() != "}":
            values.add(self._string(self.take(what="a quoted value")))
            if self.peek() == ",":
                self.take()
        self.take("}")
        return frozenset(values)

    @staticmethod
    def _string(tok: str) -> str:
        if len(tok) >= 2 and tok[0] == tok[-1] and tok[0] in "'\"":
            return tok[1:-1]
        raise SelectorSyntaxError(f"expected a quoted value, found {tok!r}")

    @staticmethod
    def _label_key(tok: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_./-]*", tok):
            raise SelectorSyntaxError(f"invalid label key {tok!r}")
        return tok


@lru_cache(maxsize=512)
def parse(selector: str) -> Matcher:
    """Compile ``selector``; raises SelectorSyntaxError."""
    return _Parser(_tokenize(selector or "")).parse()


def validate(field: str, selector: str) -> None:
    try:
        parse(selector)
    except SelectorSyntaxError as exc:
        raise ValidationError(field, selector, ALLOWED, reason=str(exc)) from None


def matches(selector: str, labels: Labels) -> bool:
    return parse(selector)(labels)
