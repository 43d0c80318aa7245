"""Which items each selector matches, kept up to date item by item (Felix's label index).

A changed item is re-evaluated against every selector (cost: selectors); a new
selector is evaluated against every item (cost: items); nothing is ever
evaluated twice for the same (selector, item) pair while both stay unchanged.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

from pycalico.agent.policy.labels import Item
from pycalico.model import selector as selector_mod

Matcher = Callable[[Mapping[str, str]], bool]


class LabelIndex:
    def __init__(self) -> None:
        self.items: dict[str, Item] = {}
        self._matchers: dict[str, Matcher] = {}
        self._members: dict[str, set[str]] = {}
        self.changed: set[str] = set()  # selectors whose members (or members' addresses) changed

    @staticmethod
    def compile(text: str) -> Matcher:
        try:
            return selector_mod.parse(text, allow_global=True)
        except selector_mod.SelectorSyntaxError:
            return lambda labels: False  # an unparsable selector matches nothing (fail closed)

    def want(self, selectors: Iterable[str]) -> None:
        """Track exactly these selectors from now on."""
        wanted = set(selectors)
        for gone in self._matchers.keys() - wanted:
            del self._matchers[gone]
            del self._members[gone]
        for new in wanted - self._matchers.keys():
            matcher = self.compile(new)
            self._matchers[new] = matcher
            self._members[new] = {key for key, item in self.items.items() if matcher(item.labels)}
            self.changed.add(new)

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

    def _drop(self, key: str, item: Item) -> None:
        for sel, members in self._members.items():
            if key in members:
                members.discard(key)
                self.changed.add(sel)

    def _set(self, key: str, item: Item, before: Item | None) -> None:
        nets_changed = before is None or before.nets != item.nets or before.ports != item.ports
        same_labels = before is not None and before.labels == item.labels
        for sel, members in self._members.items():
            if same_labels:
                if key in members and nets_changed:
                    self.changed.add(sel)
                continue
            match = self._matchers[sel](item.labels)
            if match != (key in members):
                (members.add if match else members.discard)(key)
                self.changed.add(sel)
            elif match and nets_changed:
                self.changed.add(sel)

    def members(self, selector: str) -> set[str]:
        return self._members.get(selector, set())

    def take_changed(self) -> set[str]:
        changed, self.changed = self.changed, set()
        return changed
