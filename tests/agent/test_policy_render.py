"""The policy calculation and its iptables rendering, without a kernel: names, ordering,
label inheritance, IP set members, match splitting, stable dispatch chains."""

from __future__ import annotations

import re

from pycalico.agent.policy.iptables import FROM_WL, Renderer, policy_chain
from pycalico.agent.policy.names import MAX_CHAIN, MAX_IPSET, length_limited
from pycalico.agent.policy.params import PolicyParams
from pycalico.agent.policy.resolve import PolicyCalculator, PolicyInputs
from pycalico.agent.policy.selectors import entity_selectors, policy_selector
from pycalico.model import (
    GlobalNetworkPolicy,
    HostEndpoint,
    NetworkPolicy,
    NetworkSet,
    Profile,
    Tier,
    WorkloadEndpoint,
)


def wep(name: str, ip: str, iface: str, labels: dict[str, str], *, node: str = "n1", ns: str = "a",
        profiles: list[str] | None = None, **spec: object) -> WorkloadEndpoint:
    return WorkloadEndpoint(name, {"node": node, "orchestrator": "k8s", "ipNetworks": [f"{ip}/32"],
                                   "interfaceName": iface, "profiles": profiles or [f"kns.{ns}"], **spec},
                            namespace=ns, metadata={"labels": labels})


def model_for(**inputs: object) -> tuple[PolicyCalculator, object]:
    calc = PolicyCalculator("n1")
    return calc, calc.compute(PolicyInputs(**inputs))  # type: ignore[arg-type]


def test_names_are_length_limited_as_felix_does() -> None:
    assert length_limited("cali-pi-", "np/ns1/allow-fe") == "cali-pi-np/ns1/allow-fe"
    long = length_limited("cali-pi-", "np/default/knp.default.web")
    assert len(long) == MAX_CHAIN and long.startswith("cali-pi-_")
    assert length_limited("cali-pro-", "ksa.default.default") == "cali-pro-ksa.default.default"  # exactly 28
    assert len(policy_chain("o", "gnp/" + "x" * 60)) == MAX_CHAIN


def test_selectors_are_scoped_as_felix_does() -> None:
    assert policy_selector({"selector": "app == 'x'"}, "a") == '(app == \'x\') && (projectcalico.org/namespace == "a")'
    positive, negative = entity_selectors({"notSelector": "app == 'y'"}, "a")
    assert positive == '(projectcalico.org/namespace == "a") && !(app == \'y\')' and negative is None
    assert entity_selectors({"notSelector": "app == 'y'"}, None) == (None, "app == 'y'")
    assert entity_selectors({"nets": ["10.0.0.0/8"]}, "a") == (None, None)  # no selector: not scoped
    positive, _ = entity_selectors({"namespaceSelector": "global()"}, "a")
    assert positive == "!has(projectcalico.org/namespace)"


def test_order_tiers_and_profiles_per_endpoint() -> None:
    weps = {"x": wep("x", "10.0.0.1", "calix", {"app": "x"})}
    pols = {
        "late": NetworkPolicy("late", {"selector": "all()", "ingress": [{"action": "Allow"}]}, namespace="a"),
        "b": NetworkPolicy("b", {"selector": "all()", "order": 10, "ingress": [{"action": "Allow"}]}, namespace="a"),
        "a": NetworkPolicy("a", {"selector": "all()", "order": 10, "types": ["Egress"]}, namespace="a"),
        "other-ns": NetworkPolicy("o", {"selector": "all()"}, namespace="b"),
    }
    gnps = {"sec": GlobalNetworkPolicy("sec.g", {"tier": "sec", "selector": "app == 'x'", "types": ["Ingress"]}),
            "dnt": GlobalNetworkPolicy("dnt", {"selector": "all()", "doNotTrack": True, "applyOnForward": True})}
    tiers = {"sec": Tier("sec", {"order": 100, "defaultAction": "Pass"})}
    _, model = model_for(weps=weps, network_policies=pols, global_network_policies=gnps, tiers=tiers,
                         profiles={"kns.a": Profile("kns.a", {})})
    ep = model.workloads["calix"]  # type: ignore[attr-defined]
    assert [(t.name, t.policies, t.end_drop) for t in ep.ingress] == [
        ("sec", ("gnp/sec.g",), False), ("default", ("np/a/b", "np/a/late"), True)]
    # stored without types (not through the client), b and late govern egress too, as in Felix
    assert [t.policies for t in ep.egress] == [("np/a/a", "np/a/b", "np/a/late")]
    assert ep.profiles == ("kns.a",)


def test_ipsets_hold_every_matching_endpoint_and_set_with_inherited_labels() -> None:
    weps = {
        "x": wep("x", "10.0.0.1", "calix", {"app": "x"}, ports=[{"name": "http", "port": 9000, "protocol": "TCP"}]),
        "remote": wep("r", "10.0.9.9", "calir", {"app": "y"}, node="n2"),
        "fake-ns": wep("f", "10.0.9.10", "calif", {"app": "y", "pcns.team": "a"}, node="n2", ns="b"),
    }
    profiles = {"kns.a": Profile("kns.a", {"labelsToApply": {"pcns.team": "a"}}), "kns.b": Profile("kns.b", {})}
    sets = {"s": NetworkSet("s", {"nets": ["192.0.2.0/24", "0.0.0.0/0"]}, namespace="a",
                            metadata={"labels": {"app": "y"}})}
    pol = NetworkPolicy("p", {"selector": "app == 'x'", "ingress": [
        {"action": "Allow", "source": {"selector": "app == 'y'"}},
        {"action": "Allow", "source": {"namespaceSelector": "team == 'a'"}},
        {"action": "Allow", "destination": {"ports": ["http"]}}]}, namespace="a")
    _, model = model_for(weps=weps, network_policies={"p": pol}, profiles=profiles, network_sets=sets)
    members = {s.kind + " " + ",".join(sorted(s.members)) for s in model.ipsets.values()}  # type: ignore[attr-defined]
    # app=y in namespace a: the remote pod and the set (0/0 split in halves); not the pod in b
    assert "hash:net 0.0.0.0/1,10.0.9.9/32,128.0.0.0/1,192.0.2.0/24" in members
    # team=a through kns.a only: a pcns. label stored on the endpoint itself does not count
    assert "hash:net 0.0.0.0/1,10.0.0.1/32,10.0.9.9/32,128.0.0.0/1,192.0.2.0/24" in members
    assert "hash:ip,port 10.0.0.1,tcp:9000" in members
    assert all(len(name) <= MAX_IPSET for name in model.ipsets)  # type: ignore[attr-defined]


def test_rendering_splits_alternatives_and_uses_sets_for_many_nets() -> None:
    weps = {"x": wep("x", "10.0.0.1", "calix", {"app": "x"})}
    ports = list(range(1000, 1020)) + ["2000:2010", "http"]
    pol = NetworkPolicy("p", {"selector": "all()", "ingress": [
        {"action": "Allow", "protocol": "TCP", "destination": {"ports": ports}},
        {"action": "Deny", "source": {"nets": ["10.1.0.0/16", "10.2.0.0/16"], "notNets": ["10.1.1.0/24"]}}]},
        namespace="a")
    _, model = model_for(weps=weps, network_policies={"p": pol}, profiles={"kns.a": Profile("kns.a", {})})
    table = Renderer().render(model)  # type: ignore[arg-type]
    rules = table.chains["cali-pi-np/a/p"]
    multiport = [r for r in rules if "--destination-ports" in r]
    assert len(multiport) == 2 and all(len(r.split("--destination-ports ")[1].split()[0].split(",")) <= 15
                                       for r in multiport)
    assert sum("dst,dst" in r for r in rules) == 1  # the named port: one more alternative
    assert rules[3] == "-m mark --mark 0x10000/0x10000 -j RETURN"  # one return for the three alternatives
    deny = rules[-1]
    assert re.search(r"-m set --match-set cali40c:\S+ src", deny) and "! -s 10.1.1.0/24" in deny
    assert deny.endswith("-j DROP")
    nets = [s for name, s in table.ipsets.items() if name.startswith("cali40c:")]
    assert [sorted(s.members) for s in nets] == [["10.1.0.0/16", "10.2.0.0/16"]]


def test_dispatch_buckets_do_not_move_when_an_interface_comes() -> None:
    profiles = {"kns.a": Profile("kns.a", {})}
    weps = {f"w{i}": wep(f"w{i}", f"10.0.1.{i}", f"cali{i:02x}{'0' * 9}", {}) for i in range(40)}
    renderer = Renderer()
    _, first = model_for(weps=weps, profiles=profiles)
    before = renderer.render(first).chains  # type: ignore[arg-type]
    weps["new"] = wep("new", "10.0.2.1", "califf00000000x", {})
    _, second = model_for(weps=weps, profiles=profiles)
    after = renderer.render(second).chains  # type: ignore[arg-type]
    changed = {name for name in after if name.startswith(FROM_WL) and after[name] != before.get(name)}
    assert changed == {FROM_WL, FROM_WL + "-calif"}
    assert before[FROM_WL][-1] == "-j DROP" and before[FROM_WL + "-cali0"][-1] == "-j DROP"


def hep(name: str, labels: dict[str, str], **spec: object) -> HostEndpoint:
    return HostEndpoint(name, {"node": "n1", **spec}, metadata={"labels": labels})


def test_untracked_and_pre_dnat_policies_render_in_raw_and_mangle_only() -> None:
    heps = {"eth0": hep("n1-eth0", {"role": "edge"}, interfaceName="eth0"),
            "all": hep("n1-all", {"role": "edge"}, interfaceName="*")}
    weps = {"x": wep("x", "10.0.0.1", "calix", {"role": "edge"})}
    gnps = {
        "dnt": GlobalNetworkPolicy("dnt", {"selector": "role == 'edge'", "doNotTrack": True, "applyOnForward": True,
                                           "types": ["Ingress", "Egress"], "egress": [{"action": "Allow"}],
                                           "ingress": [{"action": "Deny", "protocol": "TCP",
                                                        "destination": {"ports": [8081]}}]}),
        "pre": GlobalNetworkPolicy("pre", {"selector": "role == 'edge'", "preDNAT": True, "applyOnForward": True,
                                           "types": ["Ingress"], "ingress": [{"action": "Deny", "protocol": "TCP",
                                                                              "destination": {"ports": [8082]}}]}),
    }
    params = PolicyParams(filter_deny_action="REJECT")
    _, model = model_for(weps=weps, host_endpoints=heps, global_network_policies=gnps, params=params,
                         profiles={"kns.a": Profile("kns.a", {})})
    ep = model.workloads["calix"]  # type: ignore[attr-defined]
    assert ep.ingress == ep.egress == ()  # row 28: pods never get doNotTrack / preDNAT policy
    eth0, everything = model.hosts["eth0"], model.hosts["*"]  # type: ignore[attr-defined]
    assert [t.policies for t in eth0.untracked_ingress] == [("gnp/dnt",)] and eth0.ingress == ()
    assert everything.untracked_ingress == () and [t.policies for t in everything.pre_dnat_ingress] == [("gnp/pre",)]
    table = Renderer().render(model)  # type: ignore[arg-type]
    assert table.raw is not None and table.mangle is not None
    assert not any(name.endswith(("gnp/dnt", "gnp/pre")) for name in table.chains)  # not in filter
    assert table.raw["cali-pi-gnp/dnt"] == ["-p tcp -m multiport --destination-ports 8081 -j DROP"]  # no REJECT
    fh = table.raw["cali-fh-eth0"]
    assert fh[0] == "-j cali-failsafe-in" and not any("conntrack" in r for r in fh)  # before conntrack
    jump = fh.index("-m mark --mark 0x0/0x20000 -j cali-pi-gnp/dnt")
    assert fh[jump + 1:] == ["-m mark --mark 0x10000/0x10000 -j NOTRACK", "-m mark --mark 0x10000/0x10000 -j RETURN"]
    assert table.raw["cali-from-host-endpoint"] == ["-i eth0 -g cali-fh-eth0"]  # no '*' in raw (as Felix)
    assert table.raw["cali-PREROUTING"][-2:] == ["-m mark --mark 0x0/0x80000 -j cali-from-host-endpoint",
                                                 "-m mark --mark 0x10000/0x10000 -j ACCEPT"]
    assert "-p tcp -m tcp --sport 22 -j ACCEPT" in table.raw["cali-failsafe-out"]  # replies of failsafe flows
    pre = table.mangle["cali-fh-*"]
    assert pre[0] == "-m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT" and pre[-1].endswith("-j RETURN")
    assert table.mangle["cali-from-host-endpoint"] == ["-i eth0 -g cali-fh-eth0", "-g cali-fh-*"]
    assert not any("gnp/pre" in rule for rule in table.mangle["cali-th-eth0"])  # preDNAT is ingress only
    _, model = model_for(host_endpoints=heps, global_network_policies=gnps,
                         params=PolicyParams(mangle_allow_action="RETURN"))
    mangle = Renderer().render(model).mangle  # type: ignore[arg-type]
    assert mangle is not None and mangle["cali-PREROUTING"][-1] == "-m mark --mark 0x10000/0x10000 -j RETURN"
    assert mangle["cali-fh-*"][:2] == ["-m conntrack --ctstate RELATED,ESTABLISHED -j MARK --set-xmark 0x10000/0x10000",
                                       "-m conntrack --ctstate RELATED,ESTABLISHED -j RETURN"]


def test_host_endpoints_resolve_by_name_wildcard_or_expected_ips() -> None:
    heps = {"b": hep("b-by-ip", {}, expectedIPs=["192.0.2.1"]),
            "a": hep("a-by-ip", {}, expectedIPs=["192.0.2.1", "198.51.100.7"]),
            "named": hep("z-named", {}, interfaceName="eth9"),
            "pod": hep("pod-ip", {}, expectedIPs=["10.0.0.1"]),
            "other-node": HostEndpoint("far", {"node": "n2", "expectedIPs": ["192.0.2.1"]})}
    interfaces = {"eth0": ("192.0.2.1",), "eth1": ("198.51.100.7",), "eth2": ("203.0.113.1",),
                  "cali123": ("10.0.0.1",)}
    calc = PolicyCalculator("n1")
    model = calc.compute(PolicyInputs(host_endpoints=heps, host_interfaces=interfaces))
    # by address on the interface (the earliest HEP name wins), by name, never a workload interface
    assert sorted(model.hosts) == ["eth0", "eth1", "eth9"]
    table = Renderer().render(model)
    assert table.chains["cali-from-host-endpoint"] == ["-i lo -j RETURN", "-i eth0 -g cali-fh-eth0",
                                                       "-i eth1 -g cali-fh-eth1", "-i eth9 -g cali-fh-eth9"]
    # the address moves: the endpoint follows it
    model = calc.compute(PolicyInputs(host_endpoints=heps, host_interfaces={"eth2": ("192.0.2.1",)}))
    assert sorted(model.hosts) == ["eth2", "eth9"]


def test_one_net_and_one_not_net_on_a_side_give_one_source_match() -> None:
    """A Kubernetes ipBlock with one except (found end to end: iptables refuses two -s in
    one rule and the agent's whole restore failed): the notNet becomes a negated set."""
    weps = {"x": wep("x", "10.0.0.1", "calix", {"app": "x"})}
    pol = NetworkPolicy("p", {"selector": "all()", "ingress": [
        {"action": "Allow", "source": {"nets": ["10.1.0.0/16"], "notNets": ["10.1.1.5/32"]}}]}, namespace="a")
    _, model = model_for(weps=weps, network_policies={"p": pol}, profiles={"kns.a": Profile("kns.a", {})})
    table = Renderer().render(model)  # type: ignore[arg-type]
    [allow] = [r for r in table.chains["cali-pi-np/a/p"] if "10.1.0.0/16" in r]
    assert allow.count("-s ") == 1 and re.search(r"-m set ! --match-set cali40c:\S+ src", allow)
    assert [sorted(s.members) for n, s in table.ipsets.items() if n.startswith("cali40c:")] == [["10.1.1.5/32"]]


def test_raw_prerouting_checks_the_reverse_path_of_workloads_and_untracks_vxlan() -> None:
    """Felix's raw cali-PREROUTING: marks cleared, VXLAN NOTRACK (only when a pool uses VXLAN),
    workload traffic marked, cali-rpf-skip, then the strict RPF drop; OUTPUT untracks VXLAN too."""
    weps = {"x": wep("x", "10.0.0.1", "calix", {"app": "x"})}
    _, plain = model_for(weps=weps)
    _, vxlan = model_for(weps=weps, vxlan=True, params=PolicyParams(vxlan_port=4790))
    raw = Renderer().render(plain).raw  # type: ignore[arg-type]
    raw_vxlan = Renderer().render(vxlan).raw  # type: ignore[arg-type]
    assert raw is not None and raw_vxlan is not None
    assert raw["cali-PREROUTING"] == [
        raw["cali-PREROUTING"][0],  # the clear of every mark bit (checked below)
        "-i cali+ -j MARK --set-xmark 0x80000/0x80000",
        "-m mark --mark 0x80000/0x80000 -j cali-rpf-skip",
        "-m mark --mark 0x80000/0x80000 -m rpfilter --validmark --invert -j DROP",
        "-m mark --mark 0x0/0x80000 -j cali-from-host-endpoint",
        "-m mark --mark 0x10000/0x10000 -j ACCEPT"]
    assert raw["cali-PREROUTING"][0].startswith("-j MARK --set-xmark 0x0/")
    assert raw["cali-rpf-skip"] == []
    assert not any("NOTRACK" in r for r in raw["cali-PREROUTING"] + raw["cali-OUTPUT"])
    notrack = "-p udp -m udp --dport 4790 -j NOTRACK"
    assert raw_vxlan["cali-PREROUTING"][1] == notrack  # before anything can accept it
    assert notrack in raw_vxlan["cali-OUTPUT"]
    assert raw_vxlan["cali-OUTPUT"].index(notrack) < len(raw_vxlan["cali-OUTPUT"]) - 1  # before the ACCEPT
