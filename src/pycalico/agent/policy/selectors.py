"""Felix's selector rewriting (calico-policy.md §2.3-§2.5).

Policies and rules name endpoints by label; Felix scopes them: a NetworkPolicy
and its rule selectors to the policy's namespace, namespace selectors to the
``pcns.`` labels inherited from ``kns.<ns>`` profiles, service-account selectors
to ``pcsa.`` labels. The results are plain selector strings that the label
index evaluates; rule selectors become IP sets.
"""

from __future__ import annotations

import functools
import re
from typing import Any

from pycalico.model import selector as selector_mod

NAMESPACE_LABEL = "projectcalico.org/namespace"
ORCHESTRATOR_LABEL = "projectcalico.org/orchestrator"
SERVICE_ACCOUNT_LABEL = "projectcalico.org/serviceaccount"
NS_PREFIX = "pcns."
SA_PREFIX = "pcsa."
def _quote(value: str) -> str:
    return f"'{value}'" if '"' in value else f'"{value}"'


_SPECIAL = re.compile(r"(\"[^\"]*\"|'[^']*')|all\(\)|global\(\)")


def prefix_labels(text: str, prefix: str, *, has_label: str) -> str:
    """Every label key of ``text`` prefixed; ``all()`` becomes ``has(<has_label>)`` and
    ``global()`` its negation (both only meaningful in namespace/SA selectors)."""
    try:
        prefixed = selector_mod.prefixed(text or "all()", prefix)
    except selector_mod.SelectorSyntaxError:
        return "!all()"  # unparsable (validation refuses it): matches nothing

    def replace(m: re.Match[str]) -> str:
        if m.group(1):
            return m.group(1)
        return f"has({has_label})" if m.group(0) == "all()" else f"!has({has_label})"

    return _SPECIAL.sub(replace, prefixed)


def and_all(*terms: str) -> str:
    parts = [t for t in terms if t]
    if not parts:
        return "all()"
    if len(parts) == 1:
        return parts[0]
    return " && ".join(f"({t})" for t in parts)


def namespace_term(namespace: str) -> str:
    return f"{NAMESPACE_LABEL} == {_quote(namespace)}"


def policy_selector(spec: dict[str, Any], namespace: str | None) -> str:
    """The selector a policy applies to (§2.3)."""
    own = str(spec.get("selector") or "")
    terms = [own]
    if namespace:
        terms.append(namespace_term(namespace))
    elif spec.get("namespaceSelector"):
        terms.append(prefix_labels(str(spec["namespaceSelector"]), NS_PREFIX, has_label=NAMESPACE_LABEL))
    if spec.get("serviceAccountSelector"):
        terms.append(prefix_labels(str(spec["serviceAccountSelector"]), SA_PREFIX,
                                   has_label=SERVICE_ACCOUNT_LABEL))
    return and_all(*terms)


def _service_accounts(entity: dict[str, Any]) -> str:
    sa = entity.get("serviceAccounts") or {}
    terms = []
    names = [str(n) for n in sa.get("names") or []]
    if names:
        terms.append(f"{SERVICE_ACCOUNT_LABEL} in {{{', '.join(_quote(n) for n in sorted(names))}}}")
    if sa.get("selector"):
        terms.append(prefix_labels(str(sa["selector"]), SA_PREFIX, has_label=SERVICE_ACCOUNT_LABEL))
    return and_all(*terms) if terms else ""


def entity_selectors(entity: dict[str, Any], namespace: str | None) -> tuple[str | None, str | None]:
    """(positive, negative) selectors of a rule's source or destination (§2.4), with a
    notSelector folded into the positive one when there is one (Felix's rule scanner)."""
    own = str(entity.get("selector") or "")
    not_sel = str(entity.get("notSelector") or "")
    ns_sel = entity.get("namespaceSelector")
    sa = _service_accounts(entity) if "serviceAccounts" in entity else ""
    selector_like = bool(own or not_sel or sa or (ns_sel is not None and ns_sel != ""))
    if not selector_like:
        return None, None
    if ns_sel not in (None, ""):
        ns_term = prefix_labels(str(ns_sel), NS_PREFIX, has_label=NAMESPACE_LABEL)
    elif namespace:
        ns_term = namespace_term(namespace)
    else:
        ns_term = ""
    terms = [t for t in (ns_term, sa, own) if t]
    positive = and_all(*terms) if terms else None
    if positive and not_sel:
        return f"({positive}) && !({not_sel})", None
    return positive, (not_sel or None)


@functools.lru_cache(maxsize=65536)
def canonical(text: str) -> str:
    """Calico's canonical text of a selector, which names its IP set."""
    try:
        return selector_mod.canonical(text)
    except selector_mod.SelectorSyntaxError:
        return text
