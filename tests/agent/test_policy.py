"""Network policy with real traffic: Calico's truth table (calico-policy.md §8) and more.

Two nodes in network namespaces (BGP through real BIRD), the real agent on each,
pods in namespaces A (team=a) and B (team=b) with kube-controllers' ``kns.``
profiles; TCP/UDP/ICMP probes from the traffic harness. A connection that must
fail waits its deadline and must fail by silence (a DROP); one that must pass
exchanges data.
"""

from __future__ import annotations

import re
import subprocess
import time

import pytest

from pycalico.agent.policy.dataplane import FORWARD_APPENDS, IptablesPolicyDataplane
from pycalico.agent.policy.iptables import FilterTable, Renderer
from pycalico.agent.policy.resolve import PolicyCalculator, PolicyInputs
from pycalico.model import (
    FelixConfiguration,
    GlobalNetworkPolicy,
    GlobalNetworkSet,
    HostEndpoint,
    NetworkPolicy,
    NetworkSet,
    Profile,
    Tier,
    WorkloadEndpoint,
    keys,
)
from tests.agent.policy_support import At, Policies, T, last_written, metrics, wait_applied
from tests.support.cluster import Cluster, ping_until, running_cluster
from tests.support.topology import in_netns, nsexec, poll
from tests.support.traffic import Connection, Servers, UdpStream, assert_reachability

pytestmark = pytest.mark.netns

POOL = "10.248.0.0/16"
TCP_PORTS = [22, 80, 81, 5432, 8085, 9000, 10250]
UDP_PORTS = [53, 4789]


def rpf_drops(ns: str) -> int:
    """Packets raw cali-PREROUTING's reverse-path check dropped in ``ns``."""
    out = nsexec(ns, "iptables", "-t", "raw", "-L", "cali-PREROUTING", "-v", "-x", "-n").stdout
    return sum(int(line.split()[0]) for line in out.splitlines() if "rpfilter" in line and "DROP" in line)


def np(name: str, ns: str, spec: dict) -> NetworkPolicy:
    return NetworkPolicy(name, spec, namespace=ns)


def gnp(name: str, spec: dict) -> GlobalNetworkPolicy:
    return GlobalNetworkPolicy(name, spec)


def namespaces(cl: Cluster) -> None:
    for ns, team in (("ns-a", "a"), ("ns-b", "b")):
        cl.store.create(Profile(f"kns.{ns}", {
            "ingress": [{"action": "Allow"}], "egress": [{"action": "Allow"}],
            "labelsToApply": {"pcns.team": team, "pcns.projectcalico.org/name": ns}}))


def test_truth_table_bgp(etcd_cluster, etcd, unique):
    with running_cluster(etcd_cluster, etcd, unique, [2], outside=True, env={"CALICO_IPV4POOL_CIDR": POOL}) as cl:
        cl.start()
        h1, h2 = cl.hosts
        namespaces(cl)
        x = cl.add_pod(h1, "x", namespace="ns-a", labels={"app": "x"},
                       ports=[{"name": "http", "port": 9000, "protocol": "TCP"}])
        y = cl.add_pod(h1, "y", namespace="ns-a", labels={"app": "y"})
        w = cl.add_pod(h1, "w", namespace="ns-b", labels={"app": "y"})
        q = cl.add_pod(h2, "q", namespace="ns-a", labels={"app": "q"})
        z = cl.add_pod(h2, "z", namespace="ns-b", labels={"app": "z"})
        lost = cl.add_pod(h1, "m", namespace="ns-a", labels={"app": "m"}, profiles=["kns.nothere"])
        bare = cl.add_pod(h1, "e", namespace="ns-a", labels={"app": "e"}, profiles=[])
        nowep = h1.add_pod("nowep", "10.248.250.1")  # a cali veth the datastore knows nothing of
        outside = At(cl.topo.outside, cl.topo.outside_ip)
        ext = f"{cl.topo.outside_ip}/32"
        nsexec(cl.topo.router, "ip", "route", "add", POOL, "via", h1.addr)  # outside reaches the pods via node 1
        pods = [x, y, w, q, z, lost, bare, nowep]
        hosts = [At(h.ns, h.addr) for h in cl.hosts]
        pol = Policies(cl)
        failures: list[str] = []

        def check(name: str, rows: list) -> None:
            try:
                assert_reachability(rows)
            except AssertionError as exc:
                failures.append(f"{name}: {exc}")

        def scenario(name: str, resources: list, rows: list) -> None:
            pol.create(*resources)
            try:
                check(name, rows)
            finally:
                pol.clear()

        with Servers(pods + [outside] + hosts, tcp=TCP_PORTS, udp=UDP_PORTS):
            wait_applied(cl.hosts, "weps", last_written(cl.client, keys.resource_prefix("workloadendpoints")))
            ping_until(z, x.ip, 30)  # BGP has converged
            ping_until(x, q.ip, 30)
            # 1: no policies: profiles allow everything
            check("row 1", [T(y, x, "tcp", 80, True, "same node"), T(z, x, "tcp", 80, True, "remote, other ns"),
                            T(x, z, "udp", 53, True, "udp"), T(y, x, "icmp", None, True, "icmp"),
                            T(x, outside, "tcp", 80, True, "to the internet"),
                            T(outside, x, "tcp", 80, True, "from outside")])
            # 2: a missing profile, or no profile at all, denies everything; so does an unknown veth
            check("row 2/35", [T(y, lost, "tcp", 80, False, "to missing profile"),
                               T(lost, y, "tcp", 80, False, "from missing profile"),
                               T(y, bare, "tcp", 80, False, "to no profiles"),
                               T(bare, y, "icmp", None, False, "from no profiles"),
                               T(y, nowep, "tcp", 80, False, "to unknown veth"),
                               T(nowep, y, "tcp", 80, False, "from unknown veth")])
            # 34: pods may not send VXLAN (or IPIP) themselves
            check("row 34", [T(x, y, "udp", 4789, False, "vxlan port"), T(x, y, "udp", 53, True, "other udp")])
            # strict RPF in raw: a pod sending from an address that is not its own is dropped
            # before conntrack (the reply could not come back anyway: the count shows the drop)
            spoofed = "10.248.251.7"
            nsexec(x.ns, "ip", "addr", "add", f"{spoofed}/32", "dev", "eth0")
            before = rpf_drops(h1.ns)
            nsexec(x.ns, "ping", "-c", "3", "-i", "0.2", "-W", "1", "-I", spoofed, y.ip, check=False)
            if rpf_drops(h1.ns) < before + 3:
                failures.append(f"rpf: a spoofed source was not dropped in raw ({before} -> {rpf_drops(h1.ns)})")
            nsexec(x.ns, "ip", "addr", "del", f"{spoofed}/32", "dev", "eth0")
            before = rpf_drops(h1.ns)
            ping_until(x, y.ip, 10)
            if rpf_drops(h1.ns) != before:
                failures.append("rpf: the pod's own address was dropped in raw")
            scenario("row 3", [np("deny-in", "ns-a", {"selector": "all()", "types": ["Ingress"]})],
                     [T(z, x, "tcp", 80, False, "ingress governed"), T(y, x, "tcp", 80, False, "same ns too"),
                      T(x, z, "tcp", 80, True, "egress not governed")])
            scenario("row 4", [np("deny-both", "ns-a", {"selector": "all()", "types": ["Ingress", "Egress"]})],
                     [T(x, outside, "udp", 53, False, "dns"), T(x, z, "tcp", 80, False, "to other ns")])
            scenario("row 5", [np("from-y", "ns-a", {"selector": "app == 'x'", "ingress": [
                {"action": "Allow", "source": {"selector": "app == 'y'"}}]})],
                [T(y, x, "tcp", 80, True, "y in A"), T(z, x, "tcp", 80, False, "z in B"),
                 T(w, x, "tcp", 80, False, "app=y but in B")])
            scenario("row 6", [np("from-team-b", "ns-a", {"selector": "app == 'x'", "ingress": [
                {"action": "Allow", "source": {"selector": "app == 'y'", "namespaceSelector": "team == 'b'"}}]})],
                [T(w, x, "tcp", 80, True, "app=y in team b"), T(y, x, "tcp", 80, False, "app=y in A")])
            scenario("row 7", [np("any-ns", "ns-a", {"selector": "app == 'x'", "ingress": [
                {"action": "Allow", "source": {"namespaceSelector": "all()"}}]})],
                [T(q, x, "tcp", 80, True, "remote pod via ipset"), T(outside, x, "tcp", 80, False, "external"),
                 T(At(h2.ns, h2.addr), x, "tcp", 80, False, "remote node")])
            scenario("row 8 nets", [np("from-ext", "ns-a", {"selector": "app == 'x'", "ingress": [
                {"action": "Allow", "source": {"nets": [ext]}}]})],
                [T(outside, x, "tcp", 80, True, "in nets"), T(y, x, "tcp", 80, False, "not in nets")])
            scenario("notNets", [np("not-ext", "ns-a", {"selector": "app == 'x'", "ingress": [
                {"action": "Allow", "source": {"notNets": [ext, "192.0.2.0/24"]}}]})],
                [T(outside, x, "tcp", 80, False, "in notNets"), T(z, x, "tcp", 80, True, "outside notNets")])
            scenario("row 10 order", [
                np("deny-y", "ns-a", {"selector": "app == 'x'", "order": 100, "ingress": [
                    {"action": "Deny", "source": {"selector": "app == 'y'"}}]}),
                np("allow-all", "ns-a", {"selector": "app == 'x'", "order": 200, "ingress": [{"action": "Allow"}]})],
                [T(y, x, "tcp", 80, False, "first policy denies"), T(z, x, "tcp", 80, True, "second allows")])
            scenario("row 11 name tie", [
                np("b-allow", "ns-a", {"selector": "app == 'x'", "order": 100, "ingress": [{"action": "Allow"}]}),
                np("a-deny", "ns-a", {"selector": "app == 'x'", "order": 100, "ingress": [{"action": "Deny"}]})],
                [T(y, x, "tcp", 80, False, "a-deny sorts first")])
            scenario("row 11 reversed", [
                np("a-allow", "ns-a", {"selector": "app == 'x'", "order": 100, "ingress": [{"action": "Allow"}]}),
                np("b-deny", "ns-a", {"selector": "app == 'x'", "order": 100, "ingress": [{"action": "Deny"}]})],
                [T(y, x, "tcp", 80, True, "a-allow sorts first")])
            scenario("row 12 nil order", [
                np("no-order", "ns-a", {"selector": "app == 'x'", "ingress": [{"action": "Allow"}]}),
                np("late-deny", "ns-a", {"selector": "app == 'x'", "order": 5000, "ingress": [{"action": "Deny"}]})],
                [T(y, x, "tcp", 80, False, "missing order sorts last")])
            scenario("row 13 pass", [np("pass", "ns-a", {"selector": "app == 'x'", "ingress": [{"action": "Pass"}]})],
                     [T(z, x, "tcp", 80, True, "pass reaches the profile")])
            sec = Tier("sec", {"order": 100, "defaultAction": "Deny"})
            scenario("row 14 tiers", [sec, gnp("sec.deny-y", {"tier": "sec", "selector": "app == 'x'", "ingress": [
                {"action": "Deny", "source": {"selector": "app == 'y'"}}]}),
                np("allow-all", "ns-a", {"selector": "app == 'x'", "ingress": [{"action": "Allow"}]})],
                [T(y, x, "tcp", 80, False, "denied in tier sec"), T(z, x, "tcp", 80, False, "end of tier sec")])
            scenario("row 15 tier pass", [Tier("sec", {"order": 100, "defaultAction": "Pass"}),
                     gnp("sec.deny-q", {"tier": "sec", "selector": "app == 'x'", "ingress": [
                         {"action": "Deny", "source": {"selector": "app == 'q'"}}]})],
                     [T(y, x, "tcp", 80, True, "tier passes to profiles"), T(q, x, "tcp", 80, False, "denied")])
            scenario("row 16 tier deny", [Tier("sec", {"order": 100, "defaultAction": "Deny"}),
                     gnp("sec.deny-q", {"tier": "sec", "selector": "app == 'x'", "ingress": [
                         {"action": "Deny", "source": {"selector": "app == 'q'"}}]})],
                     [T(y, x, "tcp", 80, False, "end of tier drop")])
            pol.create(np("log-allow", "ns-a", {"selector": "app == 'x'", "ingress": [
                {"action": "Log"}, {"action": "Allow"}]}))
            assert '--log-prefix "calico-packet: "' in h1.run("iptables-save", "-t", "filter").stdout
            check("row 17 log", [T(y, x, "tcp", 80, True, "log then allow")])
            pol.clear()
            scenario("row 18 absent label", [np("not-prod", "ns-a", {"selector": "app == 'x'", "ingress": [
                {"action": "Allow", "source": {"selector": "env != 'prod'"}},
                {"action": "Allow", "source": {"selector": "env not in {'prod'}"}, "protocol": "UDP"}]})],
                [T(y, x, "tcp", 80, True, "!= with label absent"), T(y, x, "udp", 53, True, "not in, label absent")])
            scenario("row 18 has", [np("has-env", "ns-a", {"selector": "app == 'x'", "ingress": [
                {"action": "Allow", "source": {"selector": "has(env)"}},
                {"action": "Allow", "source": {"selector": "!has(app)"}}]})],
                [T(y, x, "tcp", 80, False, "has() with label absent")])
            scenario("row 19 notSelector NP", [np("not-y", "ns-a", {"selector": "app == 'x'", "ingress": [
                {"action": "Allow", "source": {"notSelector": "app == 'y'"}}]})],
                [T(y, x, "tcp", 80, False, "excluded"), T(q, x, "tcp", 80, True, "own ns, remote"),
                 T(z, x, "tcp", 80, False, "other ns"), T(outside, x, "tcp", 80, False, "external")])
            scenario("row 20 notSelector GNP", [gnp("not-y", {"selector": "app == 'x'", "ingress": [
                {"action": "Allow", "source": {"notSelector": "app == 'y'"}}]})],
                [T(outside, x, "tcp", 80, True, "external"), T(y, x, "tcp", 80, False, "excluded")])
            scenario("row 24 same node", [
                np("y-out", "ns-a", {"selector": "app == 'y'", "types": ["Egress"], "egress": [{"action": "Allow"}]}),
                np("x-in", "ns-a", {"selector": "app == 'x'", "types": ["Ingress"]})],
                [T(y, x, "tcp", 80, False, "egress allowed, ingress not")])
            scenario("row 23 host to pod", [np("deny-in", "ns-a", {"selector": "app == 'x'", "types": ["Ingress"]})],
                     [T(At(h1.ns, h1.addr), x, "tcp", 80, True, "own host is not policed"),
                      T(At(h2.ns, h2.addr), x, "tcp", 80, False, "other host is")])
            # 25: DefaultEndpointToHostAction
            for action, expect in (("Drop", False), ("Accept", True), ("Return", True)):
                scenario(f"row 25 {action}", [FelixConfiguration(f"node.{h1.name}",
                                                                  {"defaultEndpointToHostAction": action})],
                         [T(x, At(h1.ns, h1.addr), "tcp", 10250, expect, f"pod to its node ({action})")])
            # 26: an established connection outlives a new deny
            with Connection(y, x, 80) as live:
                pol.create(np("deny-in", "ns-a", {"selector": "app == 'x'", "types": ["Ingress"]}))
                if not live.exchange():
                    failures.append("row 26: the established connection was cut")
                check("row 26", [T(y, x, "tcp", 80, False, "new connection")])
                pol.clear()
            check("policy deleted", [T(y, x, "tcp", 80, True, "access restored")])
            # 27: staged policies never enforce
            staged = {"kind": "StagedNetworkPolicy", "apiVersion": "projectcalico.org/v3",
                      "metadata": {"name": "staged", "namespace": "ns-a"},
                      "spec": {"selector": "all()", "types": ["Ingress"], "stagedAction": "Set"}}
            pol.put_raw(keys.resource_key("stagednetworkpolicies", "staged", "ns-a"), staged, "staged")
            check("row 27", [T(y, x, "tcp", 80, True, "staged deny-all")])
            pol.clear()
            # 29/30: types missing in etcd govern both directions; through the client they default
            raw = {"kind": "NetworkPolicy", "apiVersion": "projectcalico.org/v3",
                   "metadata": {"name": "raw", "namespace": "ns-a"},
                   "spec": {"selector": "app == 'x'", "ingress": [{"action": "Allow"}]}}
            pol.put_raw(keys.resource_key("networkpolicies", "raw", "ns-a"), raw, "networkpolicies")
            check("row 29", [T(x, y, "tcp", 80, False, "egress governed by a raw policy")])
            pol.clear()
            scenario("row 30", [np("client", "ns-a", {"selector": "app == 'x'", "ingress": [{"action": "Allow"}]})],
                     [T(x, y, "tcp", 80, True, "defaulted to Ingress")])
            scenario("row 31 ports", [np("ports", "ns-a", {"selector": "app == 'x'", "ingress": [
                {"action": "Allow", "protocol": "TCP", "destination": {"ports": [80, "8080:8090", "http"]}}]})],
                [T(y, x, "tcp", 80, True, "port"), T(y, x, "tcp", 8085, True, "range"),
                 T(y, x, "tcp", 9000, True, "named port"), T(y, x, "tcp", 81, False, "other port"),
                 T(y, x, "udp", 53, False, "other protocol")])
            scenario("row 32 notPorts", [np("not-22", "ns-a", {"selector": "app == 'x'", "ingress": [
                {"action": "Allow", "protocol": "TCP", "destination": {"notPorts": [22]}}]})],
                [T(y, x, "tcp", 22, False, "excluded port"), T(y, x, "tcp", 80, True, "other port"),
                 T(y, x, "udp", 53, False, "tcp only")])
            scenario("row 33 icmp", [np("echo", "ns-a", {"selector": "app == 'x'", "ingress": [
                {"action": "Allow", "protocol": "ICMP", "icmp": {"type": 8}}]})],
                [T(y, x, "icmp", None, True, "echo"), T(y, x, "icmp", None, False, "timestamp", icmp_type=13)])
            scenario("named port, no protocol", [np("named", "ns-a", {"selector": "app == 'x'", "ingress": [
                {"action": "Allow", "destination": {"ports": ["http"]}}]})],
                [T(q, x, "tcp", 9000, True, "named port from a remote pod"), T(q, x, "tcp", 80, False, "not it")])
            scenario("NetworkSet", [
                NetworkSet("ext", {"nets": [ext]}, namespace="ns-a", metadata={"labels": {"role": "ext"}}),
                np("from-set", "ns-a", {"selector": "app == 'x'", "ingress": [
                    {"action": "Allow", "source": {"selector": "role == 'ext'"}}]})],
                [T(outside, x, "tcp", 80, True, "member of the set"), T(y, x, "tcp", 80, False, "not a member")])
            scenario("GlobalNetworkSet global()", [
                GlobalNetworkSet("ext", {"nets": [ext]}, metadata={"labels": {"role": "ext"}}),
                gnp("from-global", {"selector": "app == 'x'", "ingress": [
                    {"action": "Allow", "source": {"selector": "role == 'ext'", "namespaceSelector": "global()"}}]})],
                [T(outside, x, "tcp", 80, True, "global set"), T(y, x, "tcp", 80, False, "namespaced pod")])
            scenario("egress to nets", [np("to-ext", "ns-a", {"selector": "app == 'x'", "types": ["Egress"], "egress": [
                {"action": "Allow", "protocol": "TCP", "destination": {"nets": [ext], "ports": [80]}}]})],
                [T(x, outside, "tcp", 80, True, "allowed destination"), T(x, y, "tcp", 80, False, "other dst"),
                 T(x, outside, "tcp", 81, False, "other port")])
            scenario("egress udp", [np("dns", "ns-a", {"selector": "app == 'x'", "types": ["Egress"], "egress": [
                {"action": "Allow", "protocol": "UDP", "destination": {"ports": [53]}}]})],
                [T(x, q, "udp", 53, True, "udp 53"), T(x, q, "tcp", 80, False, "tcp")])
            scenario("egress deny to selector", [np("no-z", "ns-a", {"selector": "app == 'x'", "egress": [
                {"action": "Deny", "destination": {"namespaceSelector": "team == 'b'"}}, {"action": "Allow"}]})],
                [T(x, z, "tcp", 80, False, "to team b"), T(x, q, "tcp", 80, True, "to team a")])
            # a host endpoint with no policy: only failsafe ports (and established traffic) pass
            scenario("HostEndpoint failsafe", [HostEndpoint(f"{h1.name}-eth0", {
                "node": h1.name, "interfaceName": "eth0", "expectedIPs": [h1.addr]})],
                [T(At(h2.ns, h2.addr), At(h1.ns, h1.addr), "tcp", 22, True, "failsafe ssh"),
                 T(At(h2.ns, h2.addr), At(h1.ns, h1.addr), "tcp", 80, False, "not failsafe"),
                 T(q, x, "tcp", 80, True, "pods still talk across")])
            scenario("HostEndpoint applyOnForward", [
                HostEndpoint(f"{h1.name}-eth0", {"node": h1.name, "interfaceName": "eth0", "expectedIPs": [h1.addr]},
                             metadata={"labels": {"role": "edge"}}),
                gnp("edge-fwd", {"selector": "role == 'edge'", "applyOnForward": True, "types": ["Egress"],
                                 "egress": [{"action": "Deny", "protocol": "TCP", "destination": {"ports": [81]}},
                                            {"action": "Allow"}]})],
                [T(x, outside, "tcp", 80, True, "forwarded out, allowed"),
                 T(x, outside, "tcp", 81, False, "forwarded out, denied on the host endpoint"),
                 T(q, x, "tcp", 80, True, "forwarded in: no forward ingress policy"),
                 T(At(h2.ns, h2.addr), At(h1.ns, h1.addr), "tcp", 22, True, "failsafe ssh")])
        text = metrics(h1)
        for name in ("felix_active_local_endpoints", "felix_iptables_restore_calls", "felix_ipsets_total",
                     "felix_int_dataplane_apply_time_seconds_count", "felix_active_local_policies"):
            assert name in text, name
        assert "felix_iptables_restore_errors 0.0" in text
        assert not failures, "\n".join(failures)


def test_fail_closed_vxlan(etcd_cluster, etcd, unique):
    """A pod made while the agent is down has no connectivity at all until the agent programs it;
    kill -9 of the agent while a Deny applies lets no forbidden packet through."""
    env = {"CALICO_NETWORKING_BACKEND": "vxlan", "CALICO_IPV4POOL_CIDR": "10.249.0.0/16",
           "CALICO_IPV4POOL_VXLAN": "Always"}
    with running_cluster(etcd_cluster, etcd, unique, [2], env=env) as cl:
        cl.start(bird=False)
        h1, h2 = cl.hosts
        namespaces(cl)
        x = cl.add_pod(h1, "x", namespace="ns-a", labels={"app": "x"})
        good = cl.add_pod(h2, "good", namespace="ns-a", labels={"app": "good"})
        bad = cl.add_pod(h2, "bad", namespace="ns-a", labels={"app": "bad"})
        pol = Policies(cl)
        pol.create(np("no-bad", "ns-a", {"selector": "app == 'x'", "ingress": [
            {"action": "Deny", "source": {"selector": "app == 'bad'"}}, {"action": "Allow"}]}))

        ping_until(good, x.ip, 30)
        with Servers([x], tcp=[80]):
            assert_reachability([T(good, x, "tcp", 80, True, "allowed remote pod"),
                                 T(bad, x, "tcp", 80, False, "denied remote pod")])
            # VXLAN's UDP is not tracked (raw NOTRACK, as Felix): the pods' flows are, the tunnel's not
            for host in (h1, h2):
                table = nsexec(host.ns, "cat", "/proc/net/nf_conntrack").stdout
                assert "dport=80 " in table and "dport=4789 " not in table, table
            with UdpStream(bad, At(x.ns, x.ip), 5000, rate=200) as forbidden, \
                    UdpStream(good, At(x.ns, x.ip), 5001, rate=200) as allowed:
                allowed.wait_for_arrivals(20, 10)
                h1.kill("agent")
                killed = time.monotonic()
                h1.start_agent()
                poll(lambda: h1.log("agent").count("in sync: first dataplane apply done") >= 2, 30,
                     what="restarted agent in sync")
                restarted = time.monotonic()
                allowed.wait_for_arrival_after(restarted, 10)
                allowed.wait_for_arrivals(len(allowed.snapshot()[1]) + 20, 10)
            sent, arrived = forbidden.snapshot()
            assert len(sent) > 100
            assert arrived == {}, f"{len(arrived)} forbidden packets got through"
            assert allowed.arrived_between(killed, restarted), "the allowed flow stopped while the agent was down"

            # the agent stopped: a pod made now has no connectivity at all
            h1.stop("agent")
            late = cl.add_pod(h1, "late", namespace="ns-a", labels={"app": "late"})
            assert_reachability([T(late, x, "tcp", 80, False, "to a local pod"),
                                 T(good, late, "icmp", None, False, "from a remote pod"),
                                 T(late, good, "icmp", None, False, "to a remote pod")])
            h1.start_agent()
            wep_rev = last_written(cl.client, keys.resource_prefix("workloadendpoints"))
            wait_applied([h1], "weps", wep_rev)
            assert_reachability([T(late, x, "tcp", 80, True, "allowed once programmed"),
                                 T(late, good, "icmp", None, True, "to a remote pod"),
                                 T(bad, x, "tcp", 80, False, "still denied")])


def test_kube_proxy_rules_untouched(etcd_cluster, etcd, unique):
    """With KUBE-* iptables chains and a kube-proxy nftables table present, enforcement is the
    same and none of their rules changes."""
    env = {"CALICO_NETWORKING_BACKEND": "vxlan", "CALICO_IPV4POOL_CIDR": "10.250.0.0/16",
           "CALICO_IPV4POOL_VXLAN": "Always"}
    with running_cluster(etcd_cluster, etcd, unique, [1], env=env) as cl:
        (h1,) = cl.hosts
        kube = ["*filter", ":KUBE-FORWARD - [0:0]", ":KUBE-SERVICES - [0:0]",
                "-A FORWARD -m comment --comment kubernetes-forwarding-rules -j KUBE-FORWARD",
                "-A INPUT -m conntrack --ctstate NEW -j KUBE-SERVICES",
                "-A KUBE-FORWARD -m conntrack --ctstate INVALID -j DROP",
                "-A KUBE-FORWARD -m mark --mark 0x4000/0x4000 -j ACCEPT",
                "-A KUBE-SERVICES -d 10.68.0.1/32 -p tcp -m tcp --dport 443 -j REJECT", "COMMIT", ""]
        nsexec(h1.ns, "sh", "-c", f"printf '%s\\n' {' '.join(repr(line) for line in kube)} | iptables-nft-restore")
        nsexec(h1.ns, "sh", "-c", "nft add table ip kube-proxy && nft add chain ip kube-proxy services "
               "'{ type nat hook prerouting priority -100; }' && "
               "nft add rule ip kube-proxy services ip daddr 10.68.0.10 tcp dport 53 counter accept")

        def kube_state() -> tuple[list[str], str]:
            save = h1.run("iptables-nft-save", "-t", "filter").stdout.splitlines()
            return ([line for line in save if "KUBE" in line or "kubernetes" in line],
                    h1.run("nft", "list", "table", "ip", "kube-proxy").stdout)

        before = kube_state()
        cl.start(bird=False)
        namespaces(cl)
        a = cl.add_pod(h1, "a", namespace="ns-a", labels={"app": "a"})
        b = cl.add_pod(h1, "b", namespace="ns-a", labels={"app": "b"})
        pol = Policies(cl)
        with Servers([a, b], tcp=[80, 81]):
            pol.create(np("only-80", "ns-a", {"selector": "app == 'a'", "ingress": [
                {"action": "Allow", "protocol": "TCP", "destination": {"ports": [80]}}]}))
            assert_reachability([T(b, a, "tcp", 80, True, "allowed"), T(b, a, "tcp", 81, False, "denied")])
            pol.clear()
            assert_reachability([T(b, a, "tcp", 81, True, "deleted policy")])
        after = kube_state()
        assert after == before
        save = h1.run("iptables-nft-save", "-t", "filter").stdout
        assert "-j cali-FORWARD" in save and "-j KUBE-FORWARD" in save
        assert before[0] and "10.68.0.10" in before[1]


def _conntrack_ports(host: object, proto: str) -> set[int]:
    """Destination ports of the flows in the host namespace's conntrack table (original direction)."""
    table = host.run("cat", "/proc/net/nf_conntrack").stdout  # type: ignore[attr-defined]
    out = set()
    for line in table.splitlines():
        fields = line.split()
        if len(fields) > 2 and fields[2] == proto:
            dport = next((f for f in fields if f.startswith("dport=")), None)
            if dport:
                out.add(int(dport.split("=")[1]))
    return out


def test_host_endpoint_untracked_and_pre_dnat(etcd_cluster, etcd, unique):
    """doNotTrack policy acts in raw, before conntrack: its Deny cuts an established connection (a
    normal Deny would not, row 26) and its Allow leaves no conntrack entry; preDNAT policy acts in
    mangle before DNAT: a Deny on the port a client asks for blocks it while the port it is DNATed to
    stays open. The HostEndpoint is found by its expectedIPs alone, then as the '*' endpoint; other
    software's raw, mangle and nat rules stay as they were."""
    env = {"CALICO_NETWORKING_BACKEND": "vxlan", "CALICO_IPV4POOL_CIDR": "10.251.0.0/16",
           "CALICO_IPV4POOL_VXLAN": "Always"}
    with running_cluster(etcd_cluster, etcd, unique, [2], env=env) as cl:
        h1, h2 = cl.hosts
        others = ["*raw", "-A PREROUTING -p udp --dport 9999 -m comment --comment other-software -j NOTRACK", "COMMIT",
                  "*mangle", "-A PREROUTING -p tcp --dport 9998 -m comment --comment other-software "
                  "-j MARK --set-xmark 0x1/0x1", "COMMIT",
                  "*nat", f"-A PREROUTING -d {h1.addr}/32 -p tcp --dport 30080 -m comment --comment node-port "
                  f"-j DNAT --to-destination {h1.addr}:8080", "COMMIT", ""]
        h1.run("sh", "-c", f"printf '%s\\n' {' '.join(repr(line) for line in others)} | iptables-nft-restore --noflush")

        def other_rules() -> list[str]:
            return [line for table in ("raw", "mangle", "nat")
                    for line in h1.run("iptables-nft-save", "-t", table).stdout.splitlines()
                    if "other-software" in line or "node-port" in line]

        before = other_rules()
        cl.start(bird=False)
        src, dst = At(h2.ns, h2.addr), At(h1.ns, h1.addr)
        pol = Policies(cl)
        open_host = gnp("host-open", {"selector": "role == 'edge'", "types": ["Ingress", "Egress"],
                                      "ingress": [{"action": "Allow"}], "egress": [{"action": "Allow"}]})
        with Servers([dst], tcp=[22, 8080, 8081], udp=[53, 5353]):
            pol.create(HostEndpoint(f"{h1.name}-by-ip", {"node": h1.name, "expectedIPs": [h1.addr]},
                                    metadata={"labels": {"role": "edge"}}),
                       gnp("host-closed", {"selector": "role == 'edge'", "types": ["Ingress"]}))
            assert_reachability([T(src, dst, "tcp", 8080, False, "HEP by expectedIPs: no rule allows it"),
                                 T(src, dst, "tcp", 22, True, "failsafe")])
            pol.clear()
            pol.create(HostEndpoint(f"{h1.name}-by-ip", {"node": h1.name, "expectedIPs": [h1.addr]},
                                    metadata={"labels": {"role": "edge"}}), open_host)
            with Connection(src, dst, 8081) as live:
                pol.create(gnp("untracked", {
                    "selector": "role == 'edge'", "doNotTrack": True, "applyOnForward": True,
                    "types": ["Ingress", "Egress"],
                    "ingress": [{"action": "Deny", "protocol": "TCP", "destination": {"ports": [8081]}},
                                {"action": "Allow", "protocol": "UDP", "destination": {"ports": [5353]}}],
                    "egress": [{"action": "Allow", "protocol": "UDP", "source": {"ports": [5353]}}]}))
                assert not live.exchange(timeout=1.5), "an untracked Deny must cut the established connection"
            assert_reachability([T(src, dst, "tcp", 8081, False, "untracked deny"),
                                 T(src, dst, "tcp", 8080, True, "falls through to normal policy"),
                                 T(src, dst, "udp", 5353, True, "untracked allow, both directions"),
                                 T(src, dst, "udp", 53, True, "tracked")])
            tracked = _conntrack_ports(h1, "udp")
            assert 53 in tracked and 5353 not in tracked, tracked
            pol.clear()

            pol.create(HostEndpoint(f"{h1.name}-all", {"node": h1.name, "interfaceName": "*"},
                                    metadata={"labels": {"role": "edge"}}), open_host)
            assert_reachability([T(src, dst, "tcp", 30080, True, "DNATed to 8080 before the preDNAT policy")])
            pol.create(gnp("pre-dnat", {"selector": "role == 'edge'", "preDNAT": True, "applyOnForward": True,
                                        "types": ["Ingress"], "ingress": [
                                            {"action": "Deny", "protocol": "TCP", "destination": {"ports": [30080]}}]}))
            assert_reachability([T(src, dst, "tcp", 30080, False, "denied on the port asked for"),
                                 T(src, dst, "tcp", 8080, True, "the DNAT target is otherwise allowed")])
            pol.clear()
            assert_reachability([T(src, dst, "tcp", 30080, True, "preDNAT policy deleted")])
        assert other_rules() == before and len(before) == 3
        assert "-j cali-PREROUTING" in h1.run("iptables-nft-save", "-t", "raw").stdout


def test_prewrite_writes_only_chains_no_rule_reaches(unique):
    """The start-up prewrite (while endpoints are still listed) leaves every verdict as it was: it
    writes only policy and workload endpoint chains the kernel lacks and the IP sets it lacks (with the members known so
    far); it changes no existing chain or set, adds no hook, deletes nothing; the complete apply
    then skips what it wrote."""
    ns = f"{unique}-pw"
    subprocess.run(["ip", "netns", "add", ns], check=True)

    def table(selector: str, extra: bool) -> FilterTable:
        pols = {"p": np("p", "a", {"selector": "all()", "ingress": [
            {"action": "Allow", "source": {"selector": selector}}]})}
        if extra:
            pols["q"] = np("q", "a", {"selector": "all()", "ingress": [
                {"action": "Allow", "source": {"selector": "app == 'y' && has(app)"}}]})
        weps = {"x": WorkloadEndpoint("x", {"node": "n1", "interfaceName": "calix", "profiles": [],
                                            "ipNetworks": ["10.0.0.1/32"]}, namespace="a",
                                      metadata={"labels": {"app": "y"}})}
        return Renderer().render(PolicyCalculator("n1").compute(PolicyInputs(weps=weps, network_policies=pols)))

    def sets() -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for line in nsexec(ns, "ipset", "save").stdout.splitlines():
            parts = line.split()
            if parts[0] == "create":
                out[parts[1]] = []
            elif parts[0] == "add":
                out[parts[1]].append(parts[2])
        return out

    try:
        with in_netns(ns):
            first = IptablesPolicyDataplane("nft")
            first.read_kernel()
            assert not first.write_unreachable(table("app == 'y'", False)).errors
            save = nsexec(ns, "iptables-nft-save").stdout
            assert "cali-pi-np/a/p" in save and "-j cali-FORWARD" not in save  # no hook, no static chain
            assert ":cali-tw-calix" in save and "-g cali-tw-calix" not in save  # written, not reached
            assert "cali-to-wl-dispatch" not in save  # the dispatch waits for the complete apply
            live_set = re.search(r"--match-set (cali40s:\S+) src", save).group(1)  # type: ignore[union-attr]
            assert sets() == {live_set: ["10.0.0.1"]}  # created with the members known so far
            assert first.apply(table("app == 'y'", False)).chains_written > 0
            before = nsexec(ns, "iptables-nft-save", "-t", "filter").stdout

            again = IptablesPolicyDataplane("nft")  # a restart: the kernel holds the last state
            again.read_kernel()
            stats = again.write_unreachable(table("app == 'z'", True))  # p changed, q new
            assert stats.chains_written == 2 and not stats.errors  # cali-pi- and cali-po- of q only
            after = nsexec(ns, "iptables-nft-save", "-t", "filter").stdout
            def rules(save: str) -> list[str]:  # without "# Completed on <time>": it differs by the second
                return [line for line in save.splitlines() if not line.startswith("#") and "np/a/q" not in line]

            assert rules(after) == rules(before), "an existing chain or hook changed"
            now = sets()
            assert now[live_set] == ["10.0.0.1"]  # still there: the live chain of p names it
            assert sorted(map(len, now.values())) == [0, 1, 1]  # p's new (empty) set, q's with x
    finally:
        subprocess.run(["ip", "netns", "del", ns], check=False)


def test_host_endpoint_egress_applies_to_dnated_host_traffic(etcd_cluster, etcd, unique):
    """Normal HostEndpoint egress policy also governs host traffic that nat OUTPUT DNATs (as Felix,
    in mangle POSTROUTING: filter OUTPUT leaves DNATed traffic alone, its outgoing interface is only
    known later). A Deny of port 8081 blocks a connection to a VIP DNATed to 8081 and leaves the VIP's
    8080 mapping open; deleting the policy opens it again. Forwarded traffic (a pod's, and DNATed
    traffic the node only forwards) stays out of it."""
    env = {"CALICO_NETWORKING_BACKEND": "vxlan", "CALICO_IPV4POOL_CIDR": "10.252.0.0/16",
           "CALICO_IPV4POOL_VXLAN": "Always"}
    vip, hairpin = "10.96.77.1", "10.96.77.2"
    with running_cluster(etcd_cluster, etcd, unique, [2], env=env) as cl:
        h1, h2 = cl.hosts
        h1.run("ip", "route", "add", f"{vip}/32", "via", h2.addr)
        h2.run("ip", "route", "add", f"{hairpin}/32", "via", h1.addr)
        h1.run("sh", "-c", "printf '%s\\n' '*nat' "
               f"'-A OUTPUT -d {vip}/32 -p tcp --dport 80 -j DNAT --to-destination {h2.addr}:8080' "
               f"'-A OUTPUT -d {vip}/32 -p tcp --dport 81 -j DNAT --to-destination {h2.addr}:8081' "
               f"'-A PREROUTING -d {vip}/32 -p tcp --dport 81 -j DNAT --to-destination {h2.addr}:8081' "
               # h2 -> hairpin:82 is DNATed back to h2:8081 and masqueraded: traffic h1 only forwards
               f"'-A PREROUTING -d {hairpin}/32 -p tcp --dport 82 -j DNAT --to-destination {h2.addr}:8081' "
               f"'-A POSTROUTING -s {h2.addr}/32 -d {h2.addr}/32 -p tcp --dport 8081 -j MASQUERADE' "
               "COMMIT | iptables-nft-restore --noflush")
        cl.start(bird=False)
        namespaces(cl)
        a = cl.add_pod(h1, "a", namespace="ns-a", labels={"app": "a"})
        src, dst, via_vip = At(h1.ns, h1.addr), At(h2.ns, h2.addr), At(h2.ns, vip)
        pol = Policies(cl)
        with Servers([dst], tcp=[8080, 8081]):
            rows = [T(src, via_vip, "tcp", 80, True, "VIP:80 -> 8080"),
                    T(src, via_vip, "tcp", 81, True, "VIP:81 -> 8081")]
            assert_reachability(rows)
            pol.create(HostEndpoint(f"{h1.name}-all", {"node": h1.name, "interfaceName": "*"},
                                    metadata={"labels": {"role": "edge"}}),
                       gnp("no-8081", {"selector": "role == 'edge'", "types": ["Ingress", "Egress"],
                                       "ingress": [{"action": "Allow"}],
                                       "egress": [{"action": "Deny", "protocol": "TCP",
                                                   "destination": {"ports": [8081]}}, {"action": "Allow"}]}))
            # a local sender sees its own dropped packet as EPERM, not as silence
            assert_reachability([T(src, dst, "tcp", 8081, False, "direct: filter OUTPUT"),
                                 T(src, dst, "tcp", 8080, True, "direct, allowed"),
                                 T(src, via_vip, "tcp", 81, False, "DNATed to 8081: mangle POSTROUTING"),
                                 T(src, via_vip, "tcp", 80, True, "DNATed to 8080, allowed"),
                                 T(a, dst, "tcp", 8081, True, "a pod's forwarded traffic: not host egress"),
                                 T(a, via_vip, "tcp", 81, True, "a pod's DNATed traffic: forwarded, accepted"),
                                 T(At(h2.ns, h2.addr), At(h2.ns, hairpin), "tcp", 82, True,
                                   "DNATed traffic h1 forwards: marked at FORWARD's end, not host egress")],
                                drop_means_timeout=False)
            mangle = h1.run("iptables-nft-save", "-t", "mangle").stdout
            assert "-A POSTROUTING -m comment" in mangle and "-j cali-POSTROUTING" in mangle
            assert re.search(r"-A cali-POSTROUTING .*--ctstate DNAT -j cali-to-host-endpoint", mangle), mangle
            pol.clear()
            assert_reachability(rows)


def test_forward_appends_stay_in_order_when_one_is_missing(unique):
    """The end of FORWARD: accept what policy accepted, then mark the rest as forwarded (for mangle
    POSTROUTING). Marking first would make the accept rule accept everything, so a kernel that has
    only the first (written by an older agent) gets both appended again, in order, once each."""
    ns = f"{unique}-fw"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    table = Renderer().render(PolicyCalculator("n1").compute(PolicyInputs()))
    (accept_id, accept), (mark_id, mark) = FORWARD_APPENDS

    def forward_tail() -> list[str]:
        rules = [line for line in nsexec(ns, "iptables-nft-save", "-t", "filter").stdout.splitlines()
                 if line.startswith("-A FORWARD")]
        return [next((i for i in (accept_id, mark_id) if i in line), line) for line in rules]

    try:
        with in_netns(ns):
            assert not IptablesPolicyDataplane("nft").apply(table).errors
            assert forward_tail()[-2:] == [accept_id, mark_id]
            nsexec(ns, "iptables-nft", "-D", "FORWARD", "-m", "comment", "--comment", f"cali:{mark_id}",
                   *mark.split())
            nsexec(ns, "iptables-nft", "-A", "FORWARD", "-m", "comment", "--comment", "other-software", "-j", "RETURN")
            assert forward_tail()[-2:] == [accept_id, "-A FORWARD -m comment --comment other-software -j RETURN"]
            assert not IptablesPolicyDataplane("nft").apply(table).errors  # a restarted (newer) agent
            tail = forward_tail()
            assert tail[-2:] == [accept_id, mark_id] and tail.count(accept_id) == 1 and tail.count(mark_id) == 1
    finally:
        subprocess.run(["ip", "netns", "del", ns], check=False)
