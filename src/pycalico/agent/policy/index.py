"""Which items each selector matches, kept up to date item by item (Felix's label index).

Every selector is anchored, where it can be, on the most selective label test that any
match must pass (``k == 'v'`` or ``k in {...}`` at its top level): a new selector is
evaluated only against the items carrying such a label, and a changed item only
against the selectors anchored on its labels (old and new) plus the few that have no
anchor. Nothing is evaluated twice for the same (selector, item) while both stay
unchanged.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

from pycalico.agent.policy.labels import Item
from pycalico.model import selector as selector_mod

Matcher = Callable[[Mapping[str, str]], bool]
Anchor = tuple[str, frozenset[str]]


def required_terms(node: selector_mod.Node) -> list[Anchor]:
    """Label tests every match must pass: ``==``/``in`` terms of the top-level conjunction."""
    if isinstance(node, selector_mod.LabelNode):
        if node.op == selector_mod.EQ:
            return [(node.key, frozenset((node.value,)))]
        if node.op == selector_mod.IN and node.values:
            return [(node.key, frozenset(node.values))]
        return []
    if isinstance(node, selector_mod.AndNode):
        out: list[Anchor] = []
        for operand in node.operands:
            out += required_terms(operand)
        return out
    return []


class LabelIndex:
    def __init__(self) -> None:
        self.items: dict[str, Item] = {}
        self._matchers: dict[str, Matcher] = {}
        self._members: dict[str, set[str]] = {}
        self._anchor: dict[str, Anchor | None] = {}
        self._by_label: dict[tuple[str, str], set[str]] = {}  # (key, value) -> item keys
        self._anchored: dict[tuple[str, str], set[str]] = {}  # (key, value) -> selectors
        self._unanchored: set[str] = set()
        self._member_of: dict[str, set[str]] = {}  # item key -> selectors it matches
        self.changed: set[str] = set()  # selectors whose members (or members' addresses) changed

    @staticmethod
    def compile(text: str) -> tuple[Matcher, list[Anchor]]:
        try:
            tree = selector_mod.parse_tree(text, True)
        except selector_mod.SelectorSyntaxError:
            return (lambda labels: False), []  # an unparsable selector matches nothing (fail closed)
        return tree.matcher(), required_terms(tree)

    # ---- selectors ---------------------------------------------------------------------------
    def want(self, selectors: Iterable[str]) -> None:
        """Track exactly these selectors from now on."""
        wanted = set(selectors)
        for gone in self._matchers.keys() - wanted:
            self._forget(gone)
        for new in wanted - self._matchers.keys():
            self._add(new)

    def _candidates(self, anchor: Anchor) -> set[str]:
        key, values = anchor
        out: set[str] = set()
        for value in values:
            out |= self._by_label.get((key, value), set())
        return out

    def _add(self, sel: str) -> None:
        matcher, terms = self.compile(sel)
        anchor = min(terms, key=lambda t: len(self._candidates(t))) if terms else None
        self._matchers[sel] = matcher
        self._anchor[sel] = anchor
        if anchor is None:
            self._unanchored.add(sel)
            candidates: Iterable[str] = self.items
        else:
            for value in anchor[1]:
                self._anchored.setdefault((anchor[0], value), set()).add(sel)
            candidates = self._candidates(anchor)
        items = self.items
        members = {key for key in candidates if matcher(items[key].labels)}
        self._members[sel] = members
        for key in members:
            self._member_of.setdefault(key, set()).add(sel)
        self.changed.add(sel)

    def _forget(self, sel: str) -> None:
        for key in self._members.pop(sel):
            self._member_of.get(key, set()).discard(sel)
        anchor = self._anchor.pop(sel)
        if anchor is None:
            self._unanchored.discard(sel)
        else:
            for value in anchor[1]:
                bucket = self._anchored.get((anchor[0], value))
                if bucket is not None:
                    bucket.discard(sel)
                    if not bucket:
                        del self._anchored[(anchor[0], value)]
        del self._matchers[sel]
        self.changed.discard(sel)

    # ---- items -------------------------------------------------------------------------------
    def update(self, items: Mapping[str, Item]) -> None:
        """Make the index hold exactly ``items`` (compared with what it held)."""
        old = self.items
        for key in old.keys() - items.keys():
            self._drop(key, old[key])
        for key, item in items.items():
            before = old.get(key)
            if before is item or before == item:
                continue
            self._set(key, item, before)
        self.items = dict(items)

    def _unlabel(self, key: str, item: Item) -> None:
        for pair in item.labels.items():
            bucket = self._by_label.get(pair)
            if bucket is not None:
                bucket.discard(key)
                if not bucket:
                    del self._by_label[pair]

    def _drop(self, key: str, item: Item) -> None:
        self._unlabel(key, item)
        for sel in self._member_of.pop(key, set()):
            self._members[sel].discard(key)
            self.changed.add(sel)

    def _set(self, key: str, item: Item, before: Item | None) -> None:
        member_of = self._member_of.setdefault(key, set())
        if before is not None and before.labels == item.labels:
            if before.nets != item.nets or before.ports != item.ports:
                self.changed |= member_of
            return
        if before is not None:
            self._unlabel(key, before)
        for pair in item.labels.items():
            self._by_label.setdefault(pair, set()).add(key)
        affected = set(self._unanchored) | member_of
        for pair in item.labels.items():
            affected |= self._anchored.get(pair, set())
        nets_changed = before is None or before.nets != item.nets or before.ports != item.ports
        for sel in affected:
            match = self._matchers[sel](item.labels)
            was = sel in member_of
            if match != was:
                if match:
                    self._members[sel].add(key)
                    member_of.add(sel)
                else:
                    self._members[sel].discard(key)
                    member_of.discard(sel)
                self.changed.add(sel)
            elif match and nets_changed:
                self.changed.add(sel)

    def members(self, selector: str) -> set[str]:
        return self._members.get(selector, set())

    def take_changed(self) -> set[str]:
        changed, self.changed = self.changed, set()
        return changed
