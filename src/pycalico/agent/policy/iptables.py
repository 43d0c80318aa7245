"""The ``PolicyModel`` in Felix's iptables layout (calico-policy.md §4).

Output is the ``cali-`` chains of the filter, raw and mangle tables as rule texts
(what follows ``-A <chain>``), plus the IP sets the rendering itself needs
(multi-CIDR ``nets``/``notNets`` lists). Hooks into the kernel chains are the
writer's job. raw holds host endpoints' doNotTrack policy (before conntrack; an
allowed packet is NOTRACKed and marked accepted for the later tables), mangle
PREROUTING their preDNAT policy (before kube-proxy's DNAT); neither ends a tier
with a drop, since normal policy in filter still follows (calico-policy.md §4.9, §6).
mangle POSTROUTING applies their normal egress policy to host traffic that was
DNATed, which filter OUTPUT leaves alone: only there is its new outgoing interface known.
Every list of alternatives Felix handles with match blocks (several port
chunks, numeric and named ports together) becomes several rules with the same
verdict, which is the same OR.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from dataclasses import dataclass, field

from pycalico.agent.policy.names import ipset_name, length_limited, set_id
from pycalico.agent.policy.params import PolicyParams
from pycalico.agent.policy.resolve import (
    EndpointRules,
    IPSet,
    PolicyModel,
    PolicyRules,
    ResolvedRule,
    ResolvedSide,
    TierRules,
)

ACCEPT = 0x10000
PASS = 0x20000
SCRATCH0 = 0x80000  # raw: "came from a workload interface"
SCRATCH = SCRATCH0 | 0x100000
ALL_MARKS = ACCEPT | PASS | 0x40000 | SCRATCH
MULTIPORT_SLOTS = 15
DISPATCH_SPLIT = 8

FORWARD = "cali-FORWARD"
INPUT = "cali-INPUT"
OUTPUT = "cali-OUTPUT"
FROM_WL = "cali-from-wl-dispatch"
TO_WL = "cali-to-wl-dispatch"
WL_TO_HOST = "cali-wl-to-host"
FROM_HEP = "cali-from-host-endpoint"
TO_HEP = "cali-to-host-endpoint"
FROM_HEP_FWD = "cali-from-hep-forward"
TO_HEP_FWD = "cali-to-hep-forward"
FAILSAFE_IN = "cali-failsafe-in"
FAILSAFE_OUT = "cali-failsafe-out"
RAW_PREROUTING = "cali-PREROUTING"
RAW_OUTPUT = "cali-OUTPUT"
RPF_SKIP = "cali-rpf-skip"  # Felix's: workloads allowed to send from other addresses jump here first
MANGLE_PREROUTING = "cali-PREROUTING"
MANGLE_POSTROUTING = "cali-POSTROUTING"
TUNNEL_HOSTS_SET = "cali40all-vxlan-net"
OWNED_SET_PREFIXES = ("cali40s:", "cali40n:", "cali40c:", TUNNEL_HOSTS_SET)


def _mark(bits: int) -> str:
    return f"-m mark --mark {bits:#x}/{bits:#x}"


def _unmarked(bits: int) -> str:
    return f"-m mark --mark 0x0/{bits:#x}"


def _set_mark(bits: int) -> str:
    return f"-j MARK --set-xmark {bits:#x}/{bits:#x}"


def _clear(bits: int) -> str:
    return f"-j MARK --set-xmark 0x0/{bits:#x}"


def policy_chain(direction: str, ident: str) -> str:
    return length_limited(f"cali-p{direction}-", ident)


def profile_chain(direction: str, name: str) -> str:
    return length_limited(f"cali-pr{direction}-", name)


def endpoint_chain(prefix: str, iface: str) -> str:
    return length_limited(prefix, iface)


def _conntrack_head(params: PolicyParams) -> list[str]:
    """The first rules of every endpoint chain: conntrack shortcut, invalid drop, verdict bits cleared."""
    rules = ["-m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT"]
    if not params.disable_conntrack_invalid_check:
        rules.append("-m conntrack --ctstate INVALID -j DROP")
    rules.append(_clear(ACCEPT | PASS))
    return rules


def _mangle_conntrack_head(params: PolicyParams) -> list[str]:
    """``_conntrack_head`` for mangle: with ``iptablesMangleAllowAction`` RETURN (as Felix) an
    established packet is marked accepted and returned instead of ACCEPTed."""
    head = _conntrack_head(params)
    if params.mangle_allow_action == "RETURN":
        established = "-m conntrack --ctstate RELATED,ESTABLISHED"
        head[:1] = [f"{established} {_set_mark(ACCEPT)}", f"{established} -j RETURN"]
    return head


def _tier_rules(tiers: tuple[TierRules, ...], direction: str, deny: str, *, tracked: bool = True,
                notrack: bool = False) -> list[str]:
    """Per tier: clear pass, each policy (return once one accepted), end-of-tier drop unless Pass.
    Untracked (raw) and preDNAT (mangle) tiers end without a drop (``tracked=False``); in raw an
    accepted packet is NOTRACKed before the return (``notrack``)."""
    rules: list[str] = []
    for tier in tiers:
        rules.append(_clear(PASS))
        for ident in tier.policies:
            rules.append(f"{_unmarked(PASS)} -j {policy_chain(direction, ident)}")
            if notrack:
                rules.append(f"{_mark(ACCEPT)} -j NOTRACK")
            rules.append(f"{_mark(ACCEPT)} -j RETURN")
        if tier.end_drop and tracked:
            rules.append(f"{_unmarked(PASS)} -j {deny}")
    return rules


def _referenced(tiers: Iterable[tuple[TierRules, ...]]) -> set[str]:
    return {ident for group in tiers for tier in group for ident in tier.policies}


@dataclass
class FilterTable:
    """What the writer puts into the kernel: chains per table and the IP sets they use. ``raw`` and
    ``mangle`` None: those tables are left as they are (the fail-closed skeleton)."""

    chains: dict[str, list[str]] = field(default_factory=dict)  # filter
    ipsets: dict[str, IPSet] = field(default_factory=dict)  # model's sets + the renderer's own
    raw: dict[str, list[str]] | None = None
    mangle: dict[str, list[str]] | None = None

    def tables(self) -> dict[str, dict[str, list[str]]]:
        out = {"filter": self.chains}
        if self.raw is not None:
            out["raw"] = self.raw
        if self.mangle is not None:
            out["mangle"] = self.mangle
        return out


def _port_chunks(ports: tuple[str, ...]) -> list[str]:
    """Multiport lists of at most 15 slots (a range takes two)."""
    chunks: list[str] = []
    current: list[str] = []
    slots = 0
    for port in ports:
        need = 2 if ":" in port else 1
        if current and slots + need > MULTIPORT_SLOTS:
            chunks.append(",".join(current))
            current, slots = [], 0
        current.append(port)
        slots += need
    if current:
        chunks.append(",".join(current))
    return chunks


class Renderer:
    def __init__(self) -> None:
        self._policy_cache: dict[tuple[str, str, str], tuple[PolicyRules, list[str], list[str]]] = {}
        self.net_sets: dict[str, IPSet] = {}
        self._endpoint_cache: dict[tuple[str, str], tuple[EndpointRules, object, list[str], list[str]]] = {}

    # ---- matches -----------------------------------------------------------------------------------
    def _nets_set(self, nets: tuple[str, ...]) -> str:
        name = ipset_name(set_id("c", ",".join(sorted(nets))))
        self.net_sets[name] = IPSet(name, "hash:net", frozenset(nets))
        return name

    def _side(self, side: ResolvedSide, flag: str, direction: str) -> tuple[list[str], list[list[str]]]:
        """(always-present match args, alternatives for the ports part) for one side."""
        args: list[str] = []
        if len(side.nets) == 1:
            args += [f"-{flag[0]}", side.nets[0]]
        elif side.nets:
            args += ["-m", "set", "--match-set", self._nets_set(side.nets), direction]
        if side.set:
            args += ["-m", "set", "--match-set", side.set, direction]
        if len(side.not_nets) == 1 and len(side.nets) != 1:
            args += ["!", f"-{flag[0]}", side.not_nets[0]]
        elif side.not_nets:  # a set: iptables takes one -s (or -d) per rule
            args += ["-m", "set", "!", "--match-set", self._nets_set(side.not_nets), direction]
        if side.not_set:
            args += ["-m", "set", "!", "--match-set", side.not_set, direction]
        port_flag = "--source-ports" if direction == "src" else "--destination-ports"
        for chunk in _port_chunks(side.not_ports):
            args += ["-m", "multiport", "!", port_flag, chunk]
        for named in side.not_named_port_sets:
            args += ["-m", "set", "!", "--match-set", named, f"{direction},{direction}"]
        alternatives = [["-m", "multiport", port_flag, chunk] for chunk in _port_chunks(side.ports)]
        alternatives += [["-m", "set", "--match-set", named, f"{direction},{direction}"]
                         for named in side.named_port_sets]
        return args, alternatives

    def _matches(self, rule: ResolvedRule) -> list[str]:
        """Each a complete match text; the rule matches when any of them matches."""
        head: list[str] = []
        if rule.protocol:
            head += ["-p", rule.protocol]
        elif rule.not_protocol:
            head += ["!", "-p", rule.not_protocol]
        src_args, src_alt = self._side(rule.src, "s", "src")
        dst_args, dst_alt = self._side(rule.dst, "d", "dst")
        tail: list[str] = []
        if rule.icmp is not None and rule.protocol == "icmp":
            icmp_type, code = rule.icmp
            tail += ["-m", "icmp", "--icmp-type", f"{icmp_type}/{code}" if code is not None else str(icmp_type)]
        if rule.not_icmp is not None and rule.protocol == "icmp":
            icmp_type, code = rule.not_icmp
            tail += ["-m", "icmp", "!", "--icmp-type",
                     f"{icmp_type}/{code}" if code is not None else str(icmp_type)]
        base = head + src_args + dst_args + tail
        out = []
        for src, dst in itertools.product(src_alt or [[]], dst_alt or [[]]):
            out.append(" ".join(base + src + dst))
        return out

    def _rule(self, rule: ResolvedRule, deny: str, log_prefix: str) -> list[str]:
        if rule.protocol and rule.not_protocol == rule.protocol:
            return []  # can never match
        matches = self._matches(rule)
        if rule.action == "allow":
            return [f"{m} {_set_mark(ACCEPT)}".strip() for m in matches] + [f"{_mark(ACCEPT)} -j RETURN"]
        if rule.action == "pass":
            return [f"{m} {_set_mark(PASS)}".strip() for m in matches] + [f"{_mark(PASS)} -j RETURN"]
        if rule.action == "log":
            return [f'{m} -j LOG --log-prefix "{log_prefix}: " --log-level 5'.strip() for m in matches]
        return [f"{m} -j {deny}".strip() for m in matches]

    def _rules_chain(self, rules: tuple[ResolvedRule, ...], deny: str, log_prefix: str) -> list[str]:
        out: list[str] = []
        for rule in rules:
            out += self._rule(rule, deny, log_prefix)
        if out and out[-1] == f"{_mark(ACCEPT)} -j RETURN":
            out.pop()  # a trailing RETURN is a no-op: the caller tests the mark next
        return out

    def _policy_chains(self, kind: str, pol: PolicyRules, deny: str, log_prefix: str,
                       table: str = "filter") -> dict[str, list[str]]:
        name_of = policy_chain if kind == "policy" else profile_chain
        cached = self._policy_cache.get((table, kind, pol.ident))
        if cached is None or cached[0] is not pol:
            cached = (pol, self._rules_chain(pol.ingress, deny, log_prefix),
                      self._rules_chain(pol.egress, deny, log_prefix))
            self._policy_cache[(table, kind, pol.ident)] = cached
        return {name_of("i", pol.ident): cached[1], name_of("o", pol.ident): cached[2]}

    def forget(self, idents: set[tuple[str, str, str]]) -> None:
        for key in list(self._policy_cache):
            if key not in idents:
                del self._policy_cache[key]

    # ---- endpoints ----------------------------------------------------------------------------------
    @staticmethod
    def _endpoint(ep: EndpointRules, ingress: bool, model: PolicyModel, host: bool) -> list[str]:
        p = model.params
        deny = p.filter_deny_action
        rules = _conntrack_head(p)
        if host:
            rules.append(f"-j {FAILSAFE_IN if ingress else FAILSAFE_OUT}")
        elif not ingress:
            if not p.allow_vxlan_from_workloads:
                rules.append(f"-p udp -m udp --dport {p.vxlan_port} -j DROP")
            if not p.allow_ipip_from_workloads:
                rules.append("-p 4 -j DROP")
        direction = "i" if ingress else "o"
        rules += _tier_rules(ep.ingress if ingress else ep.egress, direction, deny)
        for name in ep.profiles:
            rules.append(f"-j {profile_chain(direction, name)}")
            rules.append(f"{_mark(ACCEPT)} -j RETURN")
        rules.append(f"-j {deny}")
        return rules

    @staticmethod
    def _dispatch(root: str, flag: str, target: str, ifaces: list[str], *, final: str | None,
                  prefixes: tuple[str, ...] = ("cali",)) -> dict[str, list[str]]:
        """Felix-style dispatch: with many interfaces, one child chain per first character after
        the interface prefix, so a packet passes ~16 + n/16 rules instead of n. The buckets do not
        depend on which other interfaces exist, so adding one rewrites at most two chains."""
        names = sorted(ifaces)
        chains: dict[str, list[str]] = {}
        end = [final] if final else []
        if len(names) <= DISPATCH_SPLIT:
            chains[root] = [f"{flag} {n} -g {endpoint_chain(target, n)}" for n in names] + end
            return chains
        buckets: dict[str, list[str]] = {}
        loose: list[str] = []
        for n in names:
            pre = next((p for p in prefixes if n.startswith(p) and len(n) > len(p)), None)
            if pre is None:
                loose.append(n)
            else:
                buckets.setdefault(n[:len(pre) + 1], []).append(n)
        root_rules = [f"{flag} {n} -g {endpoint_chain(target, n)}" for n in loose]
        for head, members in sorted(buckets.items()):
            child = length_limited(f"{root}-", head, 28)
            root_rules.append(f"{flag} {head}+ -g {child}")
            chains[child] = [f"{flag} {n} -g {endpoint_chain(target, n)}" for n in members] + end
        chains[root] = root_rules + end
        return chains

    @staticmethod
    def _forward_chain(ep: EndpointRules, ingress: bool, model: PolicyModel) -> list[str]:
        """Forwarded traffic through a host endpoint: only its applyOnForward policies; with
        none (or when every tier passed) it is allowed, as Felix allows forwarded traffic."""
        deny = model.params.filter_deny_action
        tiers = ep.forward_ingress if ingress else ep.forward_egress
        if not tiers:
            return []
        rules = _conntrack_head(model.params) + _tier_rules(tiers, "i" if ingress else "o", deny)
        rules.append(_set_mark(ACCEPT))
        return rules

    # ---- the table ----------------------------------------------------------------------------------
    def _endpoint_chains(self, prefixes: tuple[str, str], ep: EndpointRules, model: PolicyModel,
                         host: bool) -> tuple[list[str], list[str]]:
        cached = self._endpoint_cache.get((prefixes[0], ep.iface))
        if cached is not None and cached[0] is ep and cached[1] is model.params:
            return cached[2], cached[3]
        ingress = self._endpoint(ep, True, model, host=host)
        egress = self._endpoint(ep, False, model, host=host)
        self._endpoint_cache[(prefixes[0], ep.iface)] = (ep, model.params, ingress, egress)
        return ingress, egress

    def render(self, model: PolicyModel) -> FilterTable:
        p = model.params
        deny = p.filter_deny_action
        self.net_sets = {}
        chains: dict[str, list[str]] = {}
        hosts_all = list(model.hosts.values())
        untracked = _referenced([*(ep.untracked_ingress for ep in hosts_all),
                                 *(ep.untracked_egress for ep in hosts_all)])
        pre_dnat = _referenced(ep.pre_dnat_ingress for ep in hosts_all)
        in_table = {i: "raw" if i in untracked else "mangle" if i in pre_dnat else "filter" for i in model.policies}
        raw: dict[str, list[str]] = {}
        mangle: dict[str, list[str]] = {}
        by_table = {"filter": chains, "raw": raw, "mangle": mangle}
        for ident, pol in model.policies.items():
            table = in_table[ident]
            # REJECT exists only in filter: a Deny before conntrack or DNAT drops
            table_deny = deny if table == "filter" else "DROP"
            by_table[table].update(self._policy_chains("policy", pol, table_deny, p.log_prefix, table))
        for prof in model.profiles.values():
            chains.update(self._policy_chains("profile", prof, deny, p.log_prefix))
        # host endpoints' normal egress policy also runs in mangle POSTROUTING (DNATed host traffic)
        hep_egress = {i for i in _referenced(ep.egress for ep in hosts_all) if in_table[i] == "filter"}
        hep_profiles = {name for ep in hosts_all for name in ep.profiles}
        for kind, items in (("policy", {i: model.policies[i] for i in hep_egress}),
                            ("profile", {n: model.profiles[n] for n in hep_profiles})):
            for resolved in items.values():
                out = self._policy_chains(kind, resolved, "DROP", p.log_prefix, "mangle")
                mangle.update({name: body for name, body in out.items() if name.startswith(("cali-po-", "cali-pro-"))})
        self.forget({(in_table[i], "policy", i) for i in model.policies} |
                    {("filter", "profile", n) for n in model.profiles} |
                    {("mangle", "policy", i) for i in hep_egress} | {("mangle", "profile", n) for n in hep_profiles})
        live: set[tuple[str, str]] = set()
        for iface, ep in model.workloads.items():
            tw, fw = self._endpoint_chains(("cali-tw-", "cali-fw-"), ep, model, False)
            chains[endpoint_chain("cali-tw-", iface)] = tw
            chains[endpoint_chain("cali-fw-", iface)] = fw
            live.add(("cali-tw-", iface))
        wl = list(model.workloads)
        chains.update(self._dispatch(FROM_WL, "-i", "cali-fw-", wl, final=f"-j {deny}",
                                     prefixes=p.interface_prefixes))
        chains.update(self._dispatch(TO_WL, "-o", "cali-tw-", wl, final=f"-j {deny}",
                                     prefixes=p.interface_prefixes))

        hosts = {i: ep for i, ep in model.hosts.items() if i != "*"}
        for iface, ep in model.hosts.items():
            fh, th = self._endpoint_chains(("cali-fh-", "cali-th-"), ep, model, True)
            chains[endpoint_chain("cali-fh-", iface)] = fh
            chains[endpoint_chain("cali-th-", iface)] = th
            live.add(("cali-fh-", iface))
        for key in self._endpoint_cache.keys() - live:
            del self._endpoint_cache[key]
        from_hep = self._dispatch(FROM_HEP, "-i", "cali-fh-", list(hosts), final=None)
        to_hep = self._dispatch(TO_HEP, "-o", "cali-th-", list(hosts), final=None)
        if model.hosts:
            from_hep[FROM_HEP].insert(0, "-i lo -j RETURN")
            to_hep[TO_HEP].insert(0, "-o lo -j RETURN")
        if "*" in model.hosts:
            from_hep[FROM_HEP].append(f"-g {endpoint_chain('cali-fh-', '*')}")
            to_hep[TO_HEP].append(f"-g {endpoint_chain('cali-th-', '*')}")
        chains.update(from_hep)
        chains.update(to_hep)
        from_fwd: list[str] = []
        to_fwd: list[str] = []
        for iface, ep in sorted(model.hosts.items(), key=lambda kv: kv[0] == "*"):
            for ingress, dispatch, prefix, flag in ((True, from_fwd, "cali-fhfw-", "-i"),
                                                    (False, to_fwd, "cali-thfw-", "-o")):
                rules = self._forward_chain(ep, ingress, model)
                if not rules:
                    continue
                chain = endpoint_chain(prefix, iface)
                chains[chain] = rules
                dispatch.append(f"-g {chain}" if iface == "*" else f"{flag} {iface} -g {chain}")
        if to_fwd:
            to_fwd.insert(0, "-o lo -j RETURN")
        chains[FROM_HEP_FWD] = from_fwd
        chains[TO_HEP_FWD] = to_fwd
        chains[FAILSAFE_IN] = [f"-p {proto} -m {proto} --dport {port} -j ACCEPT" for proto, port in p.failsafe_in]
        chains[FAILSAFE_OUT] = [f"-p {proto} -m {proto} --dport {port} -j ACCEPT" for proto, port in p.failsafe_out]
        chains.update(static_chains(model))
        raw.update(raw_chains(model))
        mangle.update(mangle_chains(model))
        ipsets = dict(model.ipsets)
        ipsets.update(self.net_sets)
        if model.hosts and model.tunnel_hosts:
            ipsets[TUNNEL_HOSTS_SET] = IPSet(TUNNEL_HOSTS_SET, "hash:net", frozenset(model.tunnel_hosts))
        return FilterTable(chains, ipsets, raw, mangle)


def static_chains(model: PolicyModel) -> dict[str, list[str]]:
    p = model.params
    prefixes = p.interface_prefixes
    forward = [_clear(ALL_MARKS & ~ACCEPT), f"{_unmarked(ACCEPT)} -j {FROM_HEP_FWD}"]
    forward += [f"-i {pre}+ -j {FROM_WL}" for pre in prefixes]
    forward += [f"-o {pre}+ -j {TO_WL}" for pre in prefixes]
    forward.append(f"-j {TO_HEP_FWD}")
    inp: list[str] = []
    if model.hosts and model.tunnel_hosts:
        inp.append(f"-p udp -m udp --dport {p.vxlan_port} -m set --match-set {TUNNEL_HOSTS_SET} src "
                   "-m addrtype --dst-type LOCAL -j ACCEPT")
    inp += [f"-i {pre}+ -g {WL_TO_HOST}" for pre in prefixes]
    inp += [f"{_mark(ACCEPT)} -j ACCEPT", _clear(ALL_MARKS), f"-j {FROM_HEP}", f"{_mark(ACCEPT)} -j ACCEPT"]
    output = [f"{_mark(ACCEPT)} -j ACCEPT"]
    output += [f"-o {pre}+ -j RETURN" for pre in prefixes]
    output += [_clear(ALL_MARKS), f"-m conntrack ! --ctstate DNAT -j {TO_HEP}", f"{_mark(ACCEPT)} -j ACCEPT"]
    to_host = [f"-j {FROM_WL}", f"-j {p.endpoint_to_host_action}"]
    return {FORWARD: forward, INPUT: inp, OUTPUT: output, WL_TO_HOST: to_host}


def _failsafe(ports: tuple[tuple[str, int], ...], flag: str) -> list[str]:
    return [f"-p {proto} -m {proto} --{flag} {port} -j ACCEPT" for proto, port in ports]


def raw_chains(model: PolicyModel) -> dict[str, list[str]]:
    """The raw table: host endpoints' doNotTrack policy, before conntrack. Only interfaces with
    such a policy are dispatched (as in Felix, which keeps the raw path short); an allowed packet
    is NOTRACKed and ACCEPTed with the accept mark, which filter's INPUT/FORWARD/OUTPUT honour."""
    p = model.params
    prefixes = p.interface_prefixes
    hosts = {i: ep for i, ep in model.hosts.items() if ep.untracked_ingress or ep.untracked_egress}
    chains: dict[str, list[str]] = {}
    for iface, ep in hosts.items():
        for prefix, tiers, ingress in (("cali-fh-", ep.untracked_ingress, True),
                                       ("cali-th-", ep.untracked_egress, False)):
            failsafe = FAILSAFE_IN if ingress else FAILSAFE_OUT
            chains[endpoint_chain(prefix, iface)] = [f"-j {failsafe}", _clear(ACCEPT | PASS)] + _tier_rules(
                tiers, "i" if ingress else "o", "DROP", tracked=False, notrack=True)
    chains.update(Renderer._dispatch(FROM_HEP, "-i", "cali-fh-", list(hosts), final=None))
    chains.update(Renderer._dispatch(TO_HEP, "-o", "cali-th-", list(hosts), final=None))
    # before conntrack, replies of failsafe connections must pass too (by source port)
    chains[FAILSAFE_IN] = _failsafe(p.failsafe_in, "dport") + _failsafe(p.failsafe_out, "sport")
    chains[FAILSAFE_OUT] = _failsafe(p.failsafe_out, "dport") + _failsafe(p.failsafe_in, "sport")
    # VXLAN uses a different source port each way: tracked, its flows would stay unreplied
    notrack = [f"-p udp -m udp --dport {p.vxlan_port} -j NOTRACK"] if model.vxlan else []
    chains[RPF_SKIP] = []
    chains[RAW_PREROUTING] = [
        _clear(ALL_MARKS), *notrack, *(f"-i {pre}+ {_set_mark(SCRATCH0)}" for pre in prefixes),
        # strict reverse-path check of what workloads send: no pod sends from another's address
        f"{_mark(SCRATCH0)} -j {RPF_SKIP}", f"{_mark(SCRATCH0)} -m rpfilter --validmark --invert -j DROP",
        f"{_unmarked(SCRATCH0)} -j {FROM_HEP}", f"{_mark(ACCEPT)} -j ACCEPT"]
    chains[RAW_OUTPUT] = [_clear(ALL_MARKS), f"-j {TO_HEP}", *notrack, f"{_mark(ACCEPT)} -j ACCEPT"]
    return chains


def mangle_chains(model: PolicyModel) -> dict[str, list[str]]:
    """The mangle table: host endpoints' preDNAT policy in PREROUTING (ingress only), so it sees
    the address and port a client asked for, before kube-proxy's DNAT in nat PREROUTING. The
    all-interfaces endpoint (``*``) is the default for every interface no other one governs."""
    p = model.params
    hosts = {i: ep for i, ep in model.hosts.items() if ep.pre_dnat_ingress}
    chains: dict[str, list[str]] = {}
    for iface, ep in hosts.items():
        head = _mangle_conntrack_head(p)[:-1]
        chains[endpoint_chain("cali-fh-", iface)] = [*head, f"-j {FAILSAFE_IN}", _clear(ACCEPT | PASS)] + _tier_rules(
            ep.pre_dnat_ingress, "i", "DROP", tracked=False)
    named = [i for i in hosts if i != "*"]
    chains.update(Renderer._dispatch(FROM_HEP, "-i", "cali-fh-", named, final=None))
    if "*" in hosts:
        chains[FROM_HEP].append(f"-g {endpoint_chain('cali-fh-', '*')}")
    chains[FAILSAFE_IN] = _failsafe(p.failsafe_in, "dport")
    allow = p.mangle_allow_action
    chains[MANGLE_PREROUTING] = [f"-m conntrack --ctstate RELATED,ESTABLISHED -j {allow}",
                                 f"{_mark(ACCEPT)} -j {allow}", f"-j {FROM_HEP}", f"{_mark(ACCEPT)} -j {allow}"]
    chains.update(_mangle_egress_chains(model))
    return chains


def _mangle_egress_chains(model: PolicyModel) -> dict[str, list[str]]:
    """mangle POSTROUTING: every host endpoint's normal egress policy (the filter chain's rules,
    DROP for a deny) for host traffic that was DNATed. Forwarded traffic arrives with the accept
    mark (filter FORWARD sets it at its end), traffic to local workloads returns at once, as in
    filter OUTPUT. ``RETURN`` allows: later mangle and nat POSTROUTING rules still see the packet."""
    p = model.params
    chains: dict[str, list[str]] = {}
    for iface, ep in model.hosts.items():
        rules = [*_mangle_conntrack_head(p), f"-j {FAILSAFE_OUT}", *_tier_rules(ep.egress, "o", "DROP")]
        for name in ep.profiles:
            rules += [f"-j {profile_chain('o', name)}", f"{_mark(ACCEPT)} -j RETURN"]
        chains[endpoint_chain("cali-th-", iface)] = rules + ["-j DROP"]
    to_hep = Renderer._dispatch(TO_HEP, "-o", "cali-th-", [i for i in model.hosts if i != "*"], final=None)
    if model.hosts:
        to_hep[TO_HEP].insert(0, "-o lo -j RETURN")
    if "*" in model.hosts:
        to_hep[TO_HEP].append(f"-g {endpoint_chain('cali-th-', '*')}")
    chains.update(to_hep)
    chains[FAILSAFE_OUT] = _failsafe(p.failsafe_out, "dport")
    chains[MANGLE_POSTROUTING] = [
        f"{_mark(ACCEPT)} -j RETURN", *(f"-o {pre}+ -j RETURN" for pre in p.interface_prefixes), _clear(ALL_MARKS),
        f"-m conntrack --ctstate DNAT -j {TO_HEP}", f"{_mark(ACCEPT)} -j RETURN"]
    return chains


def fail_closed_skeleton(model: PolicyModel) -> dict[str, list[str]]:
    """The chains before the agent knows any endpoint: every workload interface dropped."""
    deny = model.params.filter_deny_action
    chains = static_chains(model)
    chains.update({FROM_WL: [f"-j {deny}"], TO_WL: [f"-j {deny}"], FROM_HEP: [], TO_HEP: [],
                   FROM_HEP_FWD: [], TO_HEP_FWD: []})
    return chains


# The rules the writer puts into the kernel's own chains: (table, kernel chain, ours).
HOOKS = (("filter", "FORWARD", FORWARD), ("filter", "INPUT", INPUT), ("filter", "OUTPUT", OUTPUT),
         ("raw", "PREROUTING", RAW_PREROUTING), ("raw", "OUTPUT", RAW_OUTPUT),
         ("mangle", "PREROUTING", MANGLE_PREROUTING), ("mangle", "POSTROUTING", MANGLE_POSTROUTING))
# Appended to FORWARD: accept what policy accepted; mark the rest (which other rules may still
# accept), so that mangle POSTROUTING does not apply normal host endpoint policy to forwarded traffic.
FORWARD_ACCEPT = f"{_mark(ACCEPT)} -j ACCEPT"
FORWARD_MARK = _set_mark(ACCEPT)
