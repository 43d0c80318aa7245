"""Calico label selectors: parse once, match many label sets, print the canonical form.

The grammar, the tokenizer's quirks and the canonical form follow libcalico-go's
``lib/selector`` (tokenizer.go, parser.go, ast.go) so that a selector means here
what it means to Calico, and its canonical text (which names Felix's IP sets) is
the same string:

``all()``, ``has(k)``, ``k == 'v'``, ``k != 'v'``, ``k in {'a','b'}``,
``k not in {...}``, ``k contains 'x'``, ``k starts with 'x'``, ``k ends with 'x'``,
``!expr``, ``expr && expr``, ``expr || expr``, ``( expr )``; an empty selector is
``all()``. Only space and tab separate tokens; string literals have no escapes.
``!=`` and ``not in`` are true when the label is absent. ``global()`` is refused
unless the caller allows it (only an EntityRule ``namespaceSelector`` may hold it).
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Callable, Mapping
from functools import lru_cache

from pycalico.errors import ValidationError

Labels = Mapping[str, str]
Matcher = Callable[[Labels], bool]

ALLOWED = "a Calico selector such as all(), has(k), k == 'v', k in {'a','b'}, !, &&, ||"
MAX_LABEL_LENGTH = 512
_CACHE_SIZE = 16384  # the agent keeps thousands of selectors alive at once


class SelectorSyntaxError(ValueError):
    pass


# ---- tokens ------------------------------------------------------------------------------
LABEL, STRING, LBRACE, RBRACE, COMMA, EQ, NE, IN, NOT_IN, NOT = "label string { } , == != in notin !".split()
CONTAINS, STARTS_WITH, ENDS_WITH, ALL, HAS, LPAREN, RPAREN, AND, OR, GLOBAL, EOF = \
    "contains startswith endswith all has ( ) && || global eof".split()
Token = tuple[str, str]

_IDENT_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_./-")
_SINGLE = {"(": LPAREN, ")": RPAREN, "{": LBRACE, "}": RBRACE, ",": COMMA}
_LABEL_OPERATORS: tuple[tuple[tuple[str, ...], str], ...] = (
    (("contains",), CONTAINS), (("starts", "with"), STARTS_WITH), (("ends", "with"), ENDS_WITH),
    (("not", "in"), NOT_IN), (("in",), IN),
)


def _skip_blanks(text: str, pos: int) -> int:
    while pos < len(text) and text[pos] in " \t":
        pos += 1
    return pos


def _identifier(text: str, pos: int) -> tuple[str, int]:
    end = pos
    while end < len(text) and text[end] in _IDENT_CHARS:
        end += 1
    ident = text[pos:end]
    if not ident:
        raise SelectorSyntaxError(f"expected a label name at position {pos}: {text[pos:pos + 10]!r}")
    if len(ident) > MAX_LABEL_LENGTH:
        raise SelectorSyntaxError(f"label name longer than {MAX_LABEL_LENGTH} characters")
    return ident, end


def _words(text: str, pos: int, words: tuple[str, ...]) -> int:
    """Position after ``words`` (blanks allowed between, a word boundary after), or -1."""
    for i, word in enumerate(words):
        if not text.startswith(word, pos):
            return -1
        pos += len(word)
        if i < len(words) - 1:
            pos = _skip_blanks(text, pos)
    if pos < len(text) and text[pos] in _IDENT_CHARS:
        return -1
    return pos


def _function(text: str, pos: int, name: str) -> int:
    """Position after ``name(`` … ``)`` with no argument, e.g. ``all( )``."""
    pos = _skip_blanks(text, pos + len(name) + 1)
    if not text.startswith(")", pos):
        raise SelectorSyntaxError(f"no closing ')' after {name}(")
    return pos + 1


def tokenize(text: str) -> list[Token]:
    """Calico's tokens for ``text``, ending with EOF; raises SelectorSyntaxError."""
    tokens: list[Token] = []
    pos = 0
    while True:
        pos = _skip_blanks(text, pos)
        if pos >= len(text):
            tokens.append((EOF, ""))
            return tokens
        char = text[pos]
        if char in _SINGLE:
            tokens.append((_SINGLE[char], char))
            pos += 1
        elif char in "\"'":
            end = text.find(char, pos + 1)
            if end < 0:
                raise SelectorSyntaxError(f"unterminated string at position {pos}")
            tokens.append((STRING, text[pos + 1:end]))
            pos = end + 1
        elif char == "=":
            if not text.startswith("==", pos):
                raise SelectorSyntaxError(f"expected == at position {pos}")
            tokens.append((EQ, "=="))
            pos += 2
        elif char == "!":
            if text.startswith("!=", pos):
                tokens.append((NE, "!="))
                pos += 2
            else:
                tokens.append((NOT, "!"))
                pos += 1
        elif char in "&|":
            if not text.startswith(char * 2, pos):
                raise SelectorSyntaxError(f"expected {char * 2} at position {pos}")
            tokens.append((AND if char == "&" else OR, char * 2))
            pos += 2
        elif tokens and tokens[-1][0] == LABEL:
            for words, kind in _LABEL_OPERATORS:
                end = _words(text, pos, words)
                if end >= 0:
                    tokens.append((kind, " ".join(words)))
                    pos = end
                    break
            else:
                raise SelectorSyntaxError(f"expected an operator after label {tokens[-1][1]!r}")
        elif text.startswith("has(", pos):
            ident, pos = _identifier(text, _skip_blanks(text, pos + 4))
            pos = _skip_blanks(text, pos)
            if not text.startswith(")", pos):
                raise SelectorSyntaxError("no closing ')' after has(")
            tokens.append((HAS, ident))
            pos += 1
        elif text.startswith("all(", pos):
            pos = _function(text, pos, "all")
            tokens.append((ALL, "all()"))
        elif text.startswith("global(", pos):
            pos = _function(text, pos, "global")
            tokens.append((GLOBAL, "global()"))
        else:
            ident, pos = _identifier(text, pos)
            tokens.append((LABEL, ident))


# ---- syntax tree -------------------------------------------------------------------------
def _quoted(value: str) -> str:
    quote = "'" if '"' in value else '"'
    return quote + value + quote


class Node:
    """One selector term. ``canonical()`` is Calico's string form; ``matcher()`` a fast test."""

    __slots__ = ()

    def canonical(self) -> str:
        raise NotImplementedError

    def matcher(self) -> Matcher:
        raise NotImplementedError

    def prefixed(self, prefix: str) -> Node:
        """The same tree with every label name prefixed (Calico's PrefixVisitor)."""
        return self

    def has_global(self) -> bool:
        return False


class AllNode(Node):
    __slots__ = ()

    def canonical(self) -> str:
        return "all()"

    def matcher(self) -> Matcher:
        return _true


class GlobalNode(Node):
    """``global()``: true for every label set; the policy engine rewrites it before matching."""

    __slots__ = ()

    def canonical(self) -> str:
        return "global()"

    def matcher(self) -> Matcher:
        return _true

    def has_global(self) -> bool:
        return True


def _true(labels: Labels) -> bool:
    return True


class LabelNode(Node):
    """A test on one label: has, ==, !=, contains, starts with, ends with, in, not in."""

    __slots__ = ("key", "op", "value", "values")

    def __init__(self, key: str, op: str, value: str = "", values: tuple[str, ...] = ()) -> None:
        self.key = key
        self.op = op
        self.value = value
        self.values = tuple(sorted(set(values)))

    def canonical(self) -> str:
        if self.op == HAS:
            return f"has({self.key})"
        if self.op in (IN, NOT_IN):
            word = "in" if self.op == IN else "not in"
            return f"{self.key} {word} {{" + ", ".join(_quoted(v) for v in self.values) + "}"
        word = {EQ: "==", NE: "!=", CONTAINS: "contains", STARTS_WITH: "starts with", ENDS_WITH: "ends with"}[self.op]
        return f"{self.key} {word} {_quoted(self.value)}"

    def matcher(self) -> Matcher:
        key, value, op = self.key, self.value, self.op
        if op == HAS:
            return lambda labels: key in labels
        if op == EQ:
            return lambda labels: labels.get(key) == value
        if op == NE:
            return lambda labels: labels.get(key) != value
        if op in (IN, NOT_IN):
            values = frozenset(self.values)
            if op == IN:
                return lambda labels: labels.get(key) in values
            return lambda labels: labels.get(key) not in values
        if op == CONTAINS:
            return lambda labels: key in labels and value in labels[key]
        if op == STARTS_WITH:
            return lambda labels: key in labels and labels[key].startswith(value)
        return lambda labels: key in labels and labels[key].endswith(value)

    def prefixed(self, prefix: str) -> Node:
        return LabelNode(prefix + self.key, self.op, self.value, self.values)


class NotNode(Node):
    __slots__ = ("operand",)

    def __init__(self, operand: Node) -> None:
        self.operand = operand

    def canonical(self) -> str:
        return "!" + self.operand.canonical()

    def matcher(self) -> Matcher:
        inner = self.operand.matcher()
        return lambda labels: not inner(labels)

    def prefixed(self, prefix: str) -> Node:
        return NotNode(self.operand.prefixed(prefix))

    def has_global(self) -> bool:
        return self.operand.has_global()


class _GroupNode(Node):
    __slots__ = ("operands",)
    JOIN = ""

    def __init__(self, operands: list[Node]) -> None:
        self.operands = operands

    def canonical(self) -> str:
        return "(" + self.JOIN.join(op.canonical() for op in self.operands) + ")"

    def prefixed(self, prefix: str) -> Node:
        return type(self)([op.prefixed(prefix) for op in self.operands])

    def has_global(self) -> bool:
        return any(op.has_global() for op in self.operands)


class AndNode(_GroupNode):
    __slots__ = ()
    JOIN = " && "

    def matcher(self) -> Matcher:
        parts = tuple(op.matcher() for op in self.operands)
        if len(parts) == 2:
            first, second = parts
            return lambda labels: first(labels) and second(labels)

        def every(labels: Labels) -> bool:
            for part in parts:
                if not part(labels):
                    return False
            return True
        return every


class OrNode(_GroupNode):
    __slots__ = ()
    JOIN = " || "

    def matcher(self) -> Matcher:
        parts = tuple(op.matcher() for op in self.operands)
        if len(parts) == 2:
            first, second = parts
            return lambda labels: first(labels) or second(labels)

        def some(labels: Labels) -> bool:
            for part in parts:
                if part(labels):
                    return True
            return False
        return some


# ---- parser ------------------------------------------------------------------------------
_VALUE_OPS = (EQ, NE, CONTAINS, STARTS_WITH, ENDS_WITH)


class _Parser:
    def __init__(self, tokens: list[Token]) -> None:
        self.tokens = tokens
        self.pos = 0

    def kind(self, offset: int = 0) -> str:
        return self.tokens[min(self.pos + offset, len(self.tokens) - 1)][0]

    def parse(self) -> Node:
        if self.kind() == EOF:
            return AllNode()
        node = self.parse_or()
        if self.kind() != EOF:
            raise SelectorSyntaxError(f"unexpected {self.tokens[self.pos][1]!r} at the end of the selector")
        return node

    def parse_or(self) -> Node:
        parts = [self.parse_and()]
        while self.kind() == OR:
            self.pos += 1
            parts.append(self.parse_and())
        return parts[0] if len(parts) == 1 else OrNode(parts)

    def parse_and(self) -> Node:
        parts = [self.parse_operation()]
        while self.kind() == AND:
            self.pos += 1
            parts.append(self.parse_operation())
        return parts[0] if len(parts) == 1 else AndNode(parts)

    def parse_operation(self) -> Node:
        negated = False
        while self.kind() == NOT:  # "!!x" is "x", as Calico collapses them
            negated = not negated
            self.pos += 1
        kind, value = self.tokens[self.pos]
        node: Node
        if kind == HAS:
            node = LabelNode(value, HAS)
            self.pos += 1
        elif kind == ALL:
            node = AllNode()
            self.pos += 1
        elif kind == GLOBAL:
            node = GlobalNode()
            self.pos += 1
        elif kind == LABEL:
            node = self.parse_label_test(value)
        elif kind == LPAREN:
            self.pos += 1
            node = self.parse_or()
            if self.kind() != RPAREN:
                raise SelectorSyntaxError("expected ')'")
            self.pos += 1
        elif kind == EOF:
            raise SelectorSyntaxError("unexpected end of the selector")
        else:
            raise SelectorSyntaxError(f"unexpected {value!r}")
        return NotNode(node) if negated else node

    def parse_label_test(self, key: str) -> Node:
        op = self.kind(1)
        if op in _VALUE_OPS:
            kind, value = self.tokens[min(self.pos + 2, len(self.tokens) - 1)]
            if kind != STRING:
                raise SelectorSyntaxError(f"expected a quoted value after {key!r} {self.tokens[self.pos + 1][1]}")
            self.pos += 3
            return LabelNode(key, op, value)
        if op in (IN, NOT_IN):
            if self.kind(2) != LBRACE:
                word = self.tokens[self.pos + 1][1]
                raise SelectorSyntaxError(f"expected a set literal {{...}} after {key!r} {word}")
            self.pos += 3
            values: list[str] = []
            while self.kind() == STRING:  # a trailing comma is allowed, as in Calico
                values.append(self.tokens[self.pos][1])
                self.pos += 1
                if self.kind() != COMMA:
                    break
                self.pos += 1
            if self.kind() != RBRACE:
                raise SelectorSyntaxError("expected '}'")
            self.pos += 1
            return LabelNode(key, op, values=tuple(values))
        raise SelectorSyntaxError(f"expected an operator after label {key!r}")


@lru_cache(maxsize=_CACHE_SIZE)
def parse_tree(selector: str, allow_global: bool = False) -> Node:
    """The syntax tree of ``selector`` (shared: do not modify); raises SelectorSyntaxError."""
    node = _Parser(tokenize(selector or "")).parse()
    if not allow_global and node.has_global():
        raise SelectorSyntaxError("global() is only allowed alone in an EntityRule namespaceSelector")
    return node


@lru_cache(maxsize=_CACHE_SIZE)
def parse(selector: str, allow_global: bool = False) -> Matcher:
    """Compile ``selector`` to a label-set test; raises SelectorSyntaxError.
    ``global()`` matches everything when allowed (the policy engine rewrites it first)."""
    return parse_tree(selector, allow_global).matcher()


@lru_cache(maxsize=_CACHE_SIZE)
def canonical(selector: str) -> str:
    """Calico's canonical text: values double-quoted (single if the value holds ``"``),
    every ``&&``/``||`` group in parentheses, ``!`` without a space, set values sorted."""
    return parse_tree(selector, True).canonical()


def prefixed(selector: str, prefix: str) -> str:
    """Canonical text of ``selector`` with ``prefix`` before every label name
    (how Felix scopes namespace and service-account selectors: ``pcns.``, ``pcsa.``)."""
    return parse_tree(selector, True).prefixed(prefix).canonical()


def unique_id(selector: str) -> str:
    """Calico's selector ID (``Selector.UniqueID``): ``s:`` + base64url(SHA-224(``s:<canonical>``))."""
    digest = hashlib.sha224(("s:" + canonical(selector)).encode()).digest()
    return "s:" + base64.urlsafe_b64encode(digest).decode().rstrip("=")


def is_only_global(selector: str) -> bool:
    """True when ``selector`` is exactly the term ``global()`` (no other token)."""
    try:
        return [kind for kind, _ in tokenize(selector)] == [GLOBAL, EOF]
    except SelectorSyntaxError:
        return False


def validate(field: str, selector: object, *, allow_global: bool = False) -> None:
    if not isinstance(selector, str):
        raise ValidationError(field, selector, ALLOWED, reason="not a string")
    try:
        parse_tree(selector, allow_global)
    except SelectorSyntaxError as exc:
        raise ValidationError(field, selector, ALLOWED, reason=str(exc)) from None


def matches(selector: str, labels: Labels, *, allow_global: bool = False) -> bool:
    return parse(selector, allow_global)(labels)
