"""The clean role's script in a network namespace: it removes pycalico's links, routes,
chains and sets, and leaves everything else alone."""

from __future__ import annotations

import subprocess
import sys
import uuid

import pytest

from tests.collection.conftest import REPO

SCRIPT = REPO / "roles" / "clean" / "files" / "pycalico_clean_network.py"
ARGS = ["--link", "tunl0", "--link", "vxlan.calico", "--route-protocol", "bird", "--route-protocol", "80"]


def sh(ns: str, command: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", "netns", "exec", ns, "sh", "-ec", command], capture_output=True, text=True,
                          check=check)


@pytest.fixture
def ns():
    name = f"pcclean{uuid.uuid4().hex[:6]}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)


@pytest.mark.netns
def test_removes_ours_and_keeps_the_rest(ns):
    sh(ns, """
        ip link set lo up
        ip link add cali0123456789a type veth peer name eth1
        ip link add keep0 type veth peer name keep1
        ip link set keep0 up; ip link set keep1 up; ip link set cali0123456789a up
        ip addr add 10.8.0.1/24 dev keep0
        ip link add vxlan.calico type vxlan id 4096 dstport 4789 nolearning
        ip route add 10.9.0.0/26 dev cali0123456789a proto bird
        ip route add blackhole 10.9.1.0/26 proto 80
        ip route add 10.7.0.0/24 via 10.8.0.2 dev keep0
        ipset create cali40masq-ipam-pools hash:net
        ipset create keep-set hash:net
        iptables-nft -t nat -N cali-POSTROUTING
        iptables-nft -t nat -N cali-nat-outgoing
        iptables-nft -t nat -A cali-POSTROUTING -j cali-nat-outgoing
        iptables-nft -t nat -A cali-nat-outgoing -m set --match-set cali40masq-ipam-pools src -j MASQUERADE
        iptables-nft -t nat -I POSTROUTING 1 -m comment --comment cali:hook -j cali-POSTROUTING
        iptables-nft -t nat -N KUBE-POSTROUTING
        iptables-nft -t nat -A POSTROUTING -j KUBE-POSTROUTING
    """)
    dry = sh(ns, f"{sys.executable} {SCRIPT} {' '.join(ARGS)} --dry-run")
    assert "would remove link cali0123456789a" in dry.stdout and "removed" not in dry.stdout
    assert "cali0123456789a" in sh(ns, "ip -o link").stdout

    real = sh(ns, f"{sys.executable} {SCRIPT} {' '.join(ARGS)}")
    for what in ("link cali0123456789a", "link vxlan.calico", "route 10.9.0.0/26 proto bird",
                 "route 10.9.1.0/26 proto 80", "ipset cali40masq-ipam-pools"):
        assert f"removed {what}" in real.stdout, real.stdout
    links = sh(ns, "ip -o link").stdout
    assert "cali" not in links and "vxlan.calico" not in links and "keep0" in links
    assert "10.7.0.0/24 via 10.8.0.2" in sh(ns, "ip route").stdout
    assert sh(ns, "ipset list -n").stdout.split() == ["keep-set"]
    nat = sh(ns, "iptables-nft -t nat -S").stdout
    assert "cali" not in nat and "-A POSTROUTING -j KUBE-POSTROUTING" in nat

    again = sh(ns, f"{sys.executable} {SCRIPT} {' '.join(ARGS)}")
    assert again.stdout == "", again.stdout


POLICY_STATE = """
from pycalico.agent.policy.engine import PolicyEngine
from pycalico.agent.policy.params import PolicyParams
from pycalico.agent.policy.resolve import PolicyInputs
from pycalico.model import NetworkPolicy, Profile, WorkloadEndpoint
wep = WorkloadEndpoint("w", {"node": "n1", "ipNetworks": ["10.9.0.5/32"], "interfaceName": "cali0123456789a",
                             "profiles": ["kns.a"]}, namespace="a", metadata={"labels": {"app": "x"}})
rule = {"action": "Allow", "source": {"selector": "app == 'x'"}}
pol = NetworkPolicy("p", {"selector": "app == 'x'", "ingress": [rule]}, namespace="a")
engine = PolicyEngine("n1", "nft")
engine.ensure_fail_closed(PolicyParams())
stats = engine.apply(PolicyInputs(weps={"w": wep}, network_policies={"p": pol},
                                  profiles={"a": Profile("kns.a", {"ingress": [{"action": "Allow"}]})}))
assert not stats.errors, stats.errors
"""


@pytest.mark.netns
def test_removes_the_policy_engines_chains_hooks_and_sets(ns):
    """Everything the agent's policy engine writes: filter chains, the hooks and the FORWARD
    accept-mark rule in the kernel's chains, and the selector IP sets (names with ':')."""
    sh(ns, "ip link set lo up; iptables-nft -N KUBE-FORWARD; iptables-nft -A FORWARD -j KUBE-FORWARD")
    subprocess.run(["ip", "netns", "exec", ns, sys.executable, "-c", POLICY_STATE], check=True)
    before = sh(ns, "iptables-nft -S").stdout
    assert "-j cali-FORWARD" in before and "--mark 0x10000/0x10000 -j ACCEPT" in before
    assert any(name.startswith("cali40s:") for name in sh(ns, "ipset list -n").stdout.split())

    sh(ns, f"{sys.executable} {SCRIPT} {' '.join(ARGS)}")
    after = sh(ns, "iptables-nft -S").stdout
    assert "cali" not in after and "0x10000" not in after and "-A FORWARD -j KUBE-FORWARD" in after
    assert sh(ns, "ipset list -n").stdout.split() == []
