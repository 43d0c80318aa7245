"""From datastore objects to the ``PolicyModel`` of one node (calico-policy.md §3, §5).

For every local endpoint: the tiers (in order) that hold at least one policy
selecting it, per direction, with those policies in order, then its profiles.
For every policy and profile in use: its rules with selectors and named ports
turned into IP sets, and the members of those sets over every endpoint and
network set in the cluster. Pure computation with caches; no I/O.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pycalico.agent.policy import labels as labels_mod
from pycalico.agent.policy.index import LabelIndex
from pycalico.agent.policy.labels import Item
from pycalico.agent.policy.names import ipset_name, set_id
from pycalico.agent.policy.params import PolicyParams
from pycalico.agent.policy.rules import Rule, Side, convert
from pycalico.agent.policy.selectors import canonical, policy_selector

DEFAULT_TIER = "default"
DEFAULT_TIER_ORDER = 1e6
DEFAULT_ALLOW_PROFILE = "projectcalico-default-allow"
ALLOW_ALL = ({"action": "Allow"},)


@dataclass(frozen=True)
class SetRef:
    """An IP set a rule matches against, by name; ``kind`` hash:net or hash:ip,port."""

    name: str
    kind: str


@dataclass(frozen=True)
class ResolvedSide:
    nets: tuple[str, ...] = ()
    not_nets: tuple[str, ...] = ()
    set: str | None = None
    not_set: str | None = None
    ports: tuple[str, ...] = ()
    named_port_sets: tuple[str, ...] = ()
    not_ports: tuple[str, ...] = ()
    not_named_port_sets: tuple[str, ...] = ()


@dataclass(frozen=True)
class ResolvedRule:
    action: str
    protocol: str | None
    not_protocol: str | None
    icmp: tuple[int, int | None] | None
    not_icmp: tuple[int, int | None] | None
    src: ResolvedSide
    dst: ResolvedSide
    comment: str


@dataclass(frozen=True)
class PolicyRules:
    ident: str  # Felix's policy ID: np/<ns>/<name>, gnp/<name>; profiles: the profile name
    description: str  # "NetworkPolicy ns/name", "Profile kns.x"
    ingress: tuple[ResolvedRule, ...]
    egress: tuple[ResolvedRule, ...]


@dataclass(frozen=True)
class TierRules:
    name: str
    policies: tuple[str, ...]  # policy IDs in order
    end_drop: bool  # False when the tier's default action is Pass


@dataclass(frozen=True)
class EndpointRules:
    iface: str
    ingress: tuple[TierRules, ...]
    egress: tuple[TierRules, ...]
    profiles: tuple[str, ...]
    # host endpoints only: the applyOnForward policies, for traffic forwarded through the interface
    forward_ingress: tuple[TierRules, ...] = ()
    forward_egress: tuple[TierRules, ...] = ()
    # host endpoints only: doNotTrack policies (raw table) and preDNAT policies (mangle, ingress only)
    untracked_ingress: tuple[TierRules, ...] = ()
    untracked_egress: tuple[TierRules, ...] = ()
    pre_dnat_ingress: tuple[TierRules, ...] = ()


@dataclass(frozen=True)
class IPSet:
    name: str
    kind: str
    members: frozenset[str]


@dataclass
class PolicyModel:
    workloads: dict[str, EndpointRules] = field(default_factory=dict)  # iface -> rules
    hosts: dict[str, EndpointRules] = field(default_factory=dict)  # iface ("*" = every other) -> rules
    policies: dict[str, PolicyRules] = field(default_factory=dict)
    profiles: dict[str, PolicyRules] = field(default_factory=dict)
    ipsets: dict[str, IPSet] = field(default_factory=dict)
    params: PolicyParams = field(default_factory=PolicyParams)
    tunnel_hosts: tuple[str, ...] = ()  # node IPs allowed to send us VXLAN
    vxlan: bool = False  # a pool uses VXLAN: its UDP flows are not tracked (raw NOTRACK)


@dataclass
class PolicyInputs:
    """A snapshot of the datastore, each a mapping key -> resource (the agent's cache)."""

    weps: Mapping[str, Any] = field(default_factory=dict)
    network_sets: Mapping[str, Any] = field(default_factory=dict)
    global_network_sets: Mapping[str, Any] = field(default_factory=dict)
    host_endpoints: Mapping[str, Any] = field(default_factory=dict)
    network_policies: Mapping[str, Any] = field(default_factory=dict)
    global_network_policies: Mapping[str, Any] = field(default_factory=dict)
    profiles: Mapping[str, Any] = field(default_factory=dict)
    tiers: Mapping[str, Any] = field(default_factory=dict)
    params: PolicyParams = field(default_factory=PolicyParams)
    tunnel_hosts: tuple[str, ...] = ()
    vxlan: bool = False
    # this host's interfaces and their IPv4 addresses: HostEndpoints named only by expectedIPs
    # apply to the interfaces holding one of those addresses (Felix's resolveHostEndpoints)
    host_interfaces: Mapping[str, tuple[str, ...]] = field(default_factory=dict)


@dataclass(frozen=True)
class _Policy:
    key: str
    ident: str
    description: str
    kind: str
    name: str
    namespace: str
    tier: str
    order: float
    selector: str
    ingress_on: bool
    egress_on: bool
    category: str  # normal | untracked (doNotTrack) | pre_dnat; only normal ones police workloads
    forward: bool  # applyOnForward: also forwarded traffic through a host endpoint
    ingress: tuple[Rule, ...]
    egress: tuple[Rule, ...]


def _order(value: Any) -> float:
    try:
        return float(value) if value is not None else math.inf
    except (TypeError, ValueError):
        return math.inf


def _convert_rules(rules: Any, namespace: str | None, what: str) -> tuple[Rule, ...]:
    out = []
    for i, raw in enumerate(rules or []):
        if not isinstance(raw, dict):
            continue
        rule = convert(raw, namespace, f"{what} {i}")
        if rule is not None:
            out.append(rule)
    return tuple(out)


def _policy(key: str, res: Any, kind: str) -> _Policy:
    spec = res.spec
    namespace = res.namespace or ""
    name = res.name
    short = "np" if kind == "NetworkPolicy" else "gnp"
    ident = f"{short}/{namespace}/{name}" if namespace else f"{short}/{name}"
    types = [str(t) for t in spec.get("types") or []]
    both = not types  # Felix: no types at all governs both directions
    return _Policy(
        key=key, ident=ident, description=f"{kind} {namespace + '/' if namespace else ''}{name}", kind=kind,
        name=name, namespace=namespace, tier=str(spec.get("tier") or DEFAULT_TIER), order=_order(spec.get("order")),
        selector=policy_selector(spec, namespace or None),
        ingress_on=both or "Ingress" in types, egress_on=both or "Egress" in types,
        category="untracked" if spec.get("doNotTrack") else "pre_dnat" if spec.get("preDNAT") else "normal",
        forward=bool(spec.get("applyOnForward")) and kind == "GlobalNetworkPolicy",
        ingress=_convert_rules(spec.get("ingress"), namespace or None, "ingress"),
        egress=_convert_rules(spec.get("egress"), namespace or None, "egress"),
    )


class PolicyCalculator:
    """Keeps caches between calls; ``compute`` returns the whole model for a snapshot."""

    def __init__(self, nodename: str) -> None:
        self.nodename = nodename
        self.remote = LabelIndex()  # rule selectors over every endpoint and network set
        self.local = LabelIndex()  # policy selectors over this node's endpoints
        self._policies: dict[str, tuple[Any, _Policy]] = {}
        self._items: dict[str, tuple[Any, int, Item]] = {}
        self._profile_labels: dict[str, dict[str, str]] = {}
        self._profile_gen = 0
        self._sets: dict[str, IPSet] = {}
        self._set_sources: dict[str, tuple[str, str | None, str | None]] = {}  # name -> (kind, selector, port)
        self.active_policies = 0
        self._last_inputs: PolicyInputs | None = None
        self._last_items: tuple[dict[str, Item], dict[str, Item], dict[str, Item]] = ({}, {}, {})
        self._endpoints: dict[str, EndpointRules] = {}  # last result per interface, reused when equal
        self._resolved: dict[str, tuple[Any, PolicyRules, dict[str, tuple[str, str | None, str | None]]]] = {}
        self._side_memo: dict[tuple[Side, str | None],
                              tuple[ResolvedSide, dict[str, tuple[str, str | None, str | None]]]] = {}

    # ---- items ---------------------------------------------------------------------------------
    def _profile_label_map(self, profiles: Mapping[str, Any]) -> None:
        fresh = {p.name: dict(p.spec.get("labelsToApply") or {}) for p in profiles.values()}
        if fresh != self._profile_labels:
            self._profile_labels = fresh
            self._profile_gen += 1

    def _item(self, key: str, res: Any, build: Any) -> Item:
        cached = self._items.get(key)
        if cached is not None and cached[0] is res and cached[1] == self._profile_gen:
            return cached[2]
        item: Item = build(key, res, self._profile_labels)
        self._items[key] = (res, self._profile_gen, item)
        return item

    def _all_items(self, inp: PolicyInputs) -> dict[str, Item]:
        items: dict[str, Item] = {}
        for source, build in ((inp.weps, labels_mod.workload_item),
                              (inp.network_sets, labels_mod.network_set_item),
                              (inp.global_network_sets, labels_mod.network_set_item),
                              (inp.host_endpoints, labels_mod.host_endpoint_item)):
            for key, res in source.items():
                items[key] = self._item(key, res, build)
        for key in self._items.keys() - items.keys():
            del self._items[key]
        return items

    # ---- policies ------------------------------------------------------------------------------
    def _all_policies(self, inp: PolicyInputs) -> list[_Policy]:
        out = []
        seen = set()
        for source, kind in ((inp.network_policies, "NetworkPolicy"),
                             (inp.global_network_policies, "GlobalNetworkPolicy")):
            for key, res in source.items():
                seen.add(key)
                cached = self._policies.get(key)
                if cached is None or cached[0] is not res:
                    cached = (res, _policy(key, res, kind))
                    self._policies[key] = cached
                out.append(cached[1])
        for key in self._policies.keys() - seen:
            del self._policies[key]
        return out

    def _tiers(self, inp: PolicyInputs) -> dict[str, tuple[float, bool]]:
        """name -> (order, end_drop); ``default`` exists even before its object is written."""
        tiers = {DEFAULT_TIER: (DEFAULT_TIER_ORDER, True)}
        for res in inp.tiers.values():
            tiers[res.name] = (_order(res.spec.get("order")), str(res.spec.get("defaultAction") or "Deny") != "Pass")
        return tiers

    # ---- the model -----------------------------------------------------------------------------
    def _items_unchanged(self, inp: PolicyInputs) -> bool:
        """True when every endpoint, set and profile is the very object the last call saw (a
        policy change): the item-by-item work is skipped, cheap checks done in C."""
        last = self._last_inputs
        if last is None:
            return False
        for field_name in ("weps", "network_sets", "global_network_sets", "host_endpoints", "profiles"):
            now, before = getattr(inp, field_name), getattr(last, field_name)
            if now is before:
                continue
            if len(now) != len(before) or now.keys() != before.keys() or \
                    not all(map(operator.is_, now.values(), before.values())):
                return False
        return True

    def compute(self, inp: PolicyInputs) -> PolicyModel:
        unchanged = self._items_unchanged(inp)
        self._last_inputs = inp
        if unchanged:
            items, local_weps, local_heps = self._last_items
        else:
            self._profile_label_map(inp.profiles)
            items = self._all_items(inp)
            local_weps = {k: items[k] for k, w in inp.weps.items()
                          if w.spec.get("node") == self.nodename and w.spec.get("interfaceName")}
            local_heps = {k: items[k] for k, h in inp.host_endpoints.items()
                          if h.spec.get("node") == self.nodename}
            self._last_items = (items, local_weps, local_heps)
        policies = self._all_policies(inp)
        # items first: a new selector is then anchored on the label test with the fewest items
        if not unchanged:
            self.local.update({**local_weps, **local_heps})
        self.local.want(p.selector for p in policies)
        self.local.take_changed()
        tiers = self._tiers(inp)

        def sort_key(p: _Policy) -> tuple[int, float, str, float, str]:
            valid = p.tier in tiers
            order = tiers[p.tier][0] if valid else math.inf
            return (0 if valid else 1, order, p.tier, p.order, f"{p.name}/{p.namespace}/{p.kind}")

        applying: dict[str, list[_Policy]] = {k: [] for k in local_weps.keys() | local_heps.keys()}
        for pol in sorted(policies, key=sort_key):
            for key in self.local.members(pol.selector):
                if key in local_heps:
                    if pol.kind != "GlobalNetworkPolicy":
                        continue
                elif pol.category != "normal":
                    continue  # doNotTrack / preDNAT policies never police workloads
                applying[key].append(pol)

        model = PolicyModel(params=inp.params, tunnel_hosts=inp.tunnel_hosts, vxlan=inp.vxlan)
        used_policies: dict[str, _Policy] = {}
        used_profiles: set[str] = set()
        for key in local_weps:
            wep = inp.weps[key]
            profiles = tuple(str(p) for p in wep.spec.get("profiles") or [])
            model.workloads[str(wep.spec["interfaceName"])] = self._endpoint(
                str(wep.spec["interfaceName"]), applying[key], profiles, tiers, used_policies)
            used_profiles.update(profiles)
        for iface, key in self._host_interfaces(inp, local_heps).items():
            hep = inp.host_endpoints[key]
            profiles = tuple(str(p) for p in hep.spec.get("profiles") or [])
            model.hosts[iface] = self._endpoint(iface, applying[key], profiles, tiers, used_policies, host=True)
            used_profiles.update(profiles)
        self.active_policies = len(used_policies)
        for prefix, by_iface in (("", model.workloads), ("hep:", model.hosts)):
            for iface, ep in by_iface.items():
                previous = self._endpoints.get(prefix + iface)
                if previous is not None and previous == ep:
                    by_iface[iface] = previous  # same object: the renderer's cache hits
        self._endpoints = {**model.workloads, **{"hep:" + k: v for k, v in model.hosts.items()}}

        wanted_sets: dict[str, tuple[str, str | None, str | None]] = {}
        resolved: dict[str, tuple[Any, PolicyRules, dict[str, tuple[str, str | None, str | None]]]] = {}
        for ident, pol in used_policies.items():
            cached = self._resolved.get(ident)
            if cached is None or cached[0] is not pol:
                sets: dict[str, tuple[str, str | None, str | None]] = {}
                policy_rules = PolicyRules(
                    ident, pol.description,
                    tuple(self._resolve(r, sets) for r in pol.ingress) if pol.ingress_on else (),
                    tuple(self._resolve(r, sets) for r in pol.egress) if pol.egress_on else ())
                cached = (pol, policy_rules, sets)
            resolved[ident] = cached
            model.policies[ident] = cached[1]
            wanted_sets.update(cached[2])
        by_name = {p.name: p for p in inp.profiles.values()}
        for name in sorted(used_profiles):
            res = by_name.get(name)
            cached = self._resolved.get("profile:" + name)
            if cached is None or cached[0] is not res or res is None:
                sets = {}
                cached = (res, self._profile(name, res, sets), sets)
            resolved["profile:" + name] = cached
            model.profiles[name] = cached[1]
            wanted_sets.update(cached[2])
        self._resolved = resolved

        self._sync_sets(items, wanted_sets, items_changed=not unchanged)
        model.ipsets = dict(self._sets)
        return model

    def _host_interfaces(self, inp: PolicyInputs, local_heps: Mapping[str, Item]) -> dict[str, str]:
        """Interface -> the key of the one HostEndpoint that governs it, as Felix resolves them: by
        ``interfaceName`` (``*``: every interface no other HEP governs), else by an ``expectedIPs``
        address on a non-workload interface; several candidates: the earliest HEP name wins."""
        prefixes = inp.params.interface_prefixes
        best: dict[str, tuple[str, str]] = {}  # iface -> (HEP name, key)

        def offer(iface: str, name: str, key: str) -> None:
            if iface not in best or name < best[iface][0]:
                best[iface] = (name, key)

        for key in local_heps:
            hep = inp.host_endpoints[key]
            name = str(hep.metadata.get("name") or key)
            iface = str(hep.spec.get("interfaceName") or "")
            if iface:
                offer(iface, name, key)
                continue
            wanted = {str(ip) for ip in hep.spec.get("expectedIPs") or []}
            for candidate, addresses in inp.host_interfaces.items():
                if not candidate.startswith(prefixes) and wanted.intersection(addresses):
                    offer(candidate, name, key)
        return {iface: key for iface, (_, key) in sorted(best.items())}

    def _endpoint(self, iface: str, pols: list[_Policy], profiles: tuple[str, ...],
                  tiers: dict[str, tuple[float, bool]], used: dict[str, _Policy], *,
                  host: bool = False) -> EndpointRules:
        def direction(on: str, forward: bool = False, category: str = "normal") -> tuple[TierRules, ...]:
            out: list[TierRules] = []
            for pol in pols:
                if pol.category != category or not getattr(pol, on) or (forward and not pol.forward):
                    continue
                used[pol.ident] = pol
                end_drop = tiers[pol.tier][1] if pol.tier in tiers else True
                if out and out[-1].name == pol.tier:
                    last = out[-1]
                    out[-1] = TierRules(last.name, last.policies + (pol.ident,), last.end_drop)
                else:
                    out.append(TierRules(pol.tier, (pol.ident,), end_drop))
            return tuple(out)

        if not host:
            return EndpointRules(iface, direction("ingress_on"), direction("egress_on"), profiles)
        # Felix ignores doNotTrack policies on the all-interfaces endpoint (it logs a warning)
        untracked = iface != "*"
        return EndpointRules(iface, direction("ingress_on"), direction("egress_on"), profiles,
                             direction("ingress_on", True), direction("egress_on", True),
                             direction("ingress_on", category="untracked") if untracked else (),
                             direction("egress_on", category="untracked") if untracked else (),
                             direction("ingress_on", category="pre_dnat"))

    def _profile(self, name: str, res: Any, wanted: dict[str, tuple[str, str | None, str | None]]) -> PolicyRules:
        if name == DEFAULT_ALLOW_PROFILE and res is None:
            ingress: Any = ALLOW_ALL
            egress: Any = ALLOW_ALL
        elif res is None:
            # A missing profile denies everything (Felix's DummyDropRules)
            ingress = egress = ({"action": "Deny"},)
        else:
            ingress, egress = res.spec.get("ingress") or (), res.spec.get("egress") or ()
        return PolicyRules(name, f"Profile {name}",
                           tuple(self._resolve(r, wanted) for r in _convert_rules(ingress, None, "ingress")),
                           tuple(self._resolve(r, wanted) for r in _convert_rules(egress, None, "egress")))

    # ---- IP sets -------------------------------------------------------------------------------
    def _selector_set(self, sel: str, wanted: dict[str, tuple[str, str | None, str | None]]) -> str:
        name = ipset_name(set_id("s", canonical(sel)))
        wanted[name] = ("hash:net", sel, None)
        return name

    def _named_port_set(self, sel: str | None, proto: str | None, port: str,
                        wanted: dict[str, tuple[str, str | None, str | None]]) -> str:
        sid = set_id("s", canonical(sel)) if sel else "all"
        name = ipset_name(set_id("n", f"{sid},{proto or 'any'},{port}"))
        wanted[name] = ("hash:ip,port", sel, f"{proto or 'any'}/{port}")
        return name

    def _side(self, side: Side, proto: str | None,
              wanted: dict[str, tuple[str, str | None, str | None]]) -> ResolvedSide:
        """Memoised: thousands of rules share a handful of distinct sides (an empty one above all)."""
        memo = self._side_memo.get((side, proto))
        if memo is None:
            sets: dict[str, tuple[str, str | None, str | None]] = {}
            memo = (self._resolve_side(side, proto, sets), sets)
            if len(self._side_memo) > 100_000:
                self._side_memo.clear()
            self._side_memo[(side, proto)] = memo
        wanted.update(memo[1])
        return memo[0]

    def _resolve_side(self, side: Side, proto: str | None,
                      wanted: dict[str, tuple[str, str | None, str | None]]) -> ResolvedSide:
        return ResolvedSide(
            nets=side.nets, not_nets=side.not_nets,
            set=self._selector_set(side.selector, wanted) if side.selector else None,
            not_set=self._selector_set(side.not_selector, wanted) if side.not_selector else None,
            ports=side.ports,
            named_port_sets=tuple(self._named_port_set(side.selector, proto, p, wanted) for p in side.named_ports),
            not_ports=side.not_ports,
            not_named_port_sets=tuple(self._named_port_set(side.selector, proto, p, wanted)
                                      for p in side.not_named_ports),
        )

    def _resolve(self, rule: Rule, wanted: dict[str, tuple[str, str | None, str | None]]) -> ResolvedRule:
        return ResolvedRule(rule.action, rule.protocol, rule.not_protocol, rule.icmp, rule.not_icmp,
                            self._side(rule.src, rule.protocol, wanted), self._side(rule.dst, rule.protocol, wanted),
                            rule.comment)

    def _sync_sets(self, items: dict[str, Item], wanted: dict[str, tuple[str, str | None, str | None]], *,
                   items_changed: bool = True) -> None:
        selectors = {sel for _, sel, _ in wanted.values() if sel}
        if items_changed:
            self.remote.update(items)
        self.remote.want(selectors)
        changed = self.remote.take_changed()
        for name in list(self._sets):
            if name not in wanted:
                del self._sets[name]
                self._set_sources.pop(name, None)
        for name, source in wanted.items():
            kind, sel, port = source
            fresh = name not in self._sets or self._set_sources.get(name) != source
            if not fresh and ((sel is not None and sel not in changed) or (sel is None and not items_changed)):
                continue
            self._sets[name] = IPSet(name, kind, frozenset(self._members(items, kind, sel, port)))
            self._set_sources[name] = source

    def _members(self, items: dict[str, Item], kind: str, sel: str | None, port: str | None) -> set[str]:
        keys = self.remote.members(sel) if sel else items.keys()
        out: set[str] = set()
        if kind == "hash:net":
            for key in keys:
                out.update(items[key].nets)
            if "0.0.0.0/0" in out:  # hash:net cannot hold /0: two halves, as Felix does
                out.discard("0.0.0.0/0")
                out.update(("0.0.0.0/1", "128.0.0.0/1"))
            return out
        proto, _, port_name = (port or "").partition("/")
        for key in keys:
            item = items[key]
            for named in item.ports:
                if named.name != port_name or (proto != "any" and named.protocol != proto):
                    continue
                for net in item.nets:
                    if net.endswith("/32"):
                        out.add(f"{net[:-3]},{named.protocol}:{named.port}")
        return out
