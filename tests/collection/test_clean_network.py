"""The clean role's module, pycalico.network.clean_network, in a network namespace: it removes
pycalico's links, routes, chains (with the rules jumping to them) and sets, leaves everything
else alone, changes nothing in check mode, and a second run has nothing to do.

The module runs as Ansible runs it on a node: its main(), in a process inside the namespace."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

RUNNER = """
import contextlib, importlib, io, json, sys
from ansible.module_utils.testing import patch_module_args
code = importlib.import_module("ansible_collections.pycalico.network.plugins.modules.clean_network")
out = io.StringIO()
with patch_module_args(json.loads(sys.argv[1])), contextlib.redirect_stdout(out):
    with contextlib.suppress(SystemExit):
        code.main()
sys.stdout.write(out.getvalue())
"""
ARGS = {"links": ["tunl0", "vxlan.calico"], "route_protocols": ["bird", "80"]}
EMPTY: dict[str, list[str]] = {"routes": [], "links": [], "rules": [], "chains": [], "ipsets": []}


def sh(ns: str, command: str) -> str:
    return subprocess.run(["ip", "netns", "exec", ns, "sh", "-ec", command], capture_output=True, text=True,
                          check=True).stdout


@pytest.fixture
def ns() -> Iterator[str]:
    name = f"pccn{uuid.uuid4().hex[:8]}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)


@pytest.fixture
def clean(ns: str, collections_path: Path) -> Any:
    def run(check: bool = False, **args: Any) -> dict[str, Any]:
        params = {**ARGS, **args, "_ansible_check_mode": check, "_ansible_diff": True}
        proc = subprocess.run(["ip", "netns", "exec", ns, sys.executable, "-c", RUNNER, json.dumps(params)],
                              env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "PYTHONPATH": str(collections_path)},
                              capture_output=True, text=True, timeout=120, check=False)
        try:
            return json.loads(proc.stdout)
        except json.JSONDecodeError:
            raise AssertionError(f"clean_network printed no JSON: {proc.stdout} {proc.stderr}") from None

    return run


OURS_AND_OTHERS = """
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
"""
HOOK = 'nat -A POSTROUTING -m comment --comment "cali:hook" -j cali-POSTROUTING (iptables-nft)'
EXPECTED = {
    "routes": ["10.9.0.0/26 proto bird", "10.9.1.0/26 proto 80"],
    "links": ["cali0123456789a", "vxlan.calico"],
    "rules": [HOOK],
    "chains": ["nat cali-POSTROUTING (iptables-nft)", "nat cali-nat-outgoing (iptables-nft)"],
    "ipsets": ["cali40masq-ipam-pools"],
}
REMOVED = ["route 10.9.0.0/26 proto bird", "route 10.9.1.0/26 proto 80", "link cali0123456789a", "link vxlan.calico",
           f"rule {HOOK}", "chain nat cali-POSTROUTING (iptables-nft)", "chain nat cali-nat-outgoing (iptables-nft)",
           "ipset cali40masq-ipam-pools"]


def host_state(ns: str) -> dict[str, str]:
    return {"links": sh(ns, "ip -o link"), "routes": sh(ns, "ip route"), "ipsets": sh(ns, "ipset list -n"),
            "nat": sh(ns, "iptables-nft -t nat -S")}


@pytest.mark.netns
def test_check_mode_reports_what_would_go_and_changes_nothing(ns, clean):
    sh(ns, OURS_AND_OTHERS)
    before = host_state(ns)
    out = clean(check=True)
    assert out["changed"] is True and not out.get("failed"), out
    assert out["removed"] == REMOVED
    assert out["diff"] == {"before": EXPECTED, "after": EMPTY}
    assert host_state(ns) == before


@pytest.mark.netns
def test_removes_ours_keeps_the_rest_and_a_second_run_changes_nothing(ns, clean):
    sh(ns, OURS_AND_OTHERS)
    out = clean()
    assert out["changed"] is True and not out.get("failed"), out
    assert out["removed"] == REMOVED
    assert out["diff"] == {"before": EXPECTED, "after": EMPTY}
    left = host_state(ns)
    assert "cali" not in left["links"] and "vxlan.calico" not in left["links"] and "keep0" in left["links"]
    assert "10.7.0.0/24 via 10.8.0.2" in left["routes"] and "10.9." not in left["routes"]
    assert left["ipsets"].split() == ["keep-set"]
    assert "cali" not in left["nat"] and "-A POSTROUTING -j KUBE-POSTROUTING" in left["nat"]

    again = clean()
    assert again["changed"] is False and again["removed"] == [] and not again.get("failed"), again
    assert again["diff"] == {"before": EMPTY, "after": EMPTY}
    assert clean(check=True)["changed"] is False


@pytest.mark.netns
def test_legacy_tables_are_cleaned_only_where_loaded(ns, clean):
    """A legacy filter table with our chain is cleaned too; the legacy tables not loaded are
    not read (reading one would load it)."""
    sh(ns, "iptables-legacy -N cali-L; iptables-legacy -A INPUT -j cali-L; iptables-legacy -N KEEP-L")
    out = clean()
    assert out["changed"] is True and not out.get("failed"), out
    assert out["removed"] == ["rule filter -A INPUT -j cali-L (iptables-legacy)",
                              "chain filter cali-L (iptables-legacy)"]
    assert sh(ns, "cat /proc/net/ip_tables_names").split() == ["filter"]
    assert sh(ns, "iptables-legacy -S") == "-P INPUT ACCEPT\n-P FORWARD ACCEPT\n-P OUTPUT ACCEPT\n-N KEEP-L\n"


@pytest.mark.netns
def test_legacy_tables_not_loaded_stay_unloaded(ns, clean):
    sh(ns, "iptables-nft -N cali-N")
    assert clean()["removed"] == ["chain filter cali-N (iptables-nft)"]
    assert sh(ns, "cat /proc/net/ip_tables_names") == ""


@pytest.mark.netns
def test_a_device_the_kernel_keeps_is_stripped_and_set_down(ns, clean):
    """The tunl0 fallback (this kernel has no ipip to make a real tunl0): lo cannot be deleted
    either, so a listed lo is flushed and set down, and reported so."""
    sh(ns, "ip link set lo up; ip addr add 10.6.0.1/32 dev lo")
    out = clean(links=["lo"])
    assert out["changed"] is True and not out.get("failed"), out
    assert out["removed"] == ["link lo (set down: the kernel keeps it)"]
    lo = json.loads(sh(ns, "ip -j addr show dev lo"))[0]
    assert "UP" not in lo["flags"] and lo["addr_info"] == []


@pytest.mark.netns
def test_an_unknown_route_protocol_fails_naming_it(ns, clean):
    out = clean(route_protocols=["no-such-proto"])
    assert out["failed"] is True and "route_protocols 'no-such-proto'" in out["msg"], out
    assert out["changed"] is False


@pytest.mark.netns
def test_empty_prefixes_are_refused(ns, clean):
    out = clean(chain_prefix="")
    assert out["failed"] is True and "chain_prefix is empty" in out["msg"], out


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
def test_removes_the_policy_engines_chains_hooks_and_sets(ns, clean):
    """Everything the agent's policy engine writes: filter chains, the hooks and the FORWARD
    accept-mark rule in the kernel's chains (by its cali: comment), and the selector IP sets
    (names with ':')."""
    sh(ns, "ip link set lo up; iptables-nft -N KUBE-FORWARD; iptables-nft -A FORWARD -j KUBE-FORWARD")
    subprocess.run(["ip", "netns", "exec", ns, sys.executable, "-c", POLICY_STATE], check=True)
    before = sh(ns, "iptables-nft -S")
    assert "-j cali-FORWARD" in before and "--mark 0x10000/0x10000 -j ACCEPT" in before
    assert any(name.startswith("cali40s:") for name in sh(ns, "ipset list -n").split())

    out = clean()
    assert out["changed"] is True and not out.get("failed"), out
    assert any("--mark 0x10000/0x10000 -j ACCEPT" in r for r in out["diff"]["before"]["rules"]), out
    after = sh(ns, "iptables-nft -S")
    assert "cali" not in after and "0x10000" not in after and "-A FORWARD -j KUBE-FORWARD" in after
    assert sh(ns, "ipset list -n").split() == []
    assert clean()["changed"] is False


class FakeHost:
    """run() and which() for the Cleaner without a kernel: canned answers by command line."""

    def __init__(self, answers: dict[str, str], legacy_iptables: bool = False) -> None:
        self.answers, self.legacy_iptables = answers, legacy_iptables
        self.ran: list[str] = []

    def which(self, name: str) -> str | None:
        if name.startswith("iptables-nft"):
            return None
        return f"/usr/sbin/{name}"

    def run(self, argv: list[str], data: str | None = None) -> tuple[int, str, str]:
        line = " ".join(a.rsplit("/", 1)[-1] for a in argv)
        self.ran.append(line)
        if line == "iptables --version":
            return 0, "iptables v1.8.9 (legacy)" if self.legacy_iptables else "iptables v1.8.9 (nf_tables)", ""
        return 0, self.answers.get(line, "[]" if line.startswith("ip ") else ""), ""


def cleaner(collections_path: Path, host: FakeHost, tmp_path: Path) -> Any:
    from ansible_collections.pycalico.network.plugins.module_utils.clean_network import Cleaner

    names = tmp_path / "ip_tables_names"
    names.write_text("filter\n")
    return Cleaner(host.run, host.which, "cali", ["tunl0"], [], "cali-", "cali", legacy_tables=str(names))


def test_an_inert_tunl0_is_left_alone_and_a_live_one_removed(collections_path, tmp_path):
    inert = FakeHost({"ip -j link show": json.dumps([{"ifname": "tunl0", "flags": ["NOARP"]}])})
    assert [s.removes for s in cleaner(collections_path, inert, tmp_path).survey()] == []
    up = FakeHost({"ip -j link show": json.dumps([{"ifname": "tunl0", "flags": ["NOARP", "UP"]}])})
    steps = cleaner(collections_path, up, tmp_path).survey()
    assert [s.removes for s in steps] == [[("links", "tunl0")]]
    assert [" ".join(a.rsplit("/", 1)[-1] for a in cmd) for cmd in steps[0].fallback] == [
        "ip addr flush dev tunl0", "ip link set tunl0 down"]


def test_plain_iptables_on_the_legacy_backend_is_read_once(collections_path, tmp_path):
    save = ":INPUT ACCEPT [0:0]\n:cali-X - [0:0]\n-A INPUT -j cali-X\n"
    host = FakeHost({"iptables-save -t filter": save, "iptables-legacy-save -t filter": save}, legacy_iptables=True)
    steps = cleaner(collections_path, host, tmp_path).survey()
    assert [s.removes for s in steps] == [[("rules", "filter -A INPUT -j cali-X (iptables)"),
                                           ("chains", "filter cali-X (iptables)")]]
    assert not any(line.startswith("iptables-legacy") for line in host.ran)
    nft = FakeHost({"iptables-save -t filter": save, "iptables-legacy-save -t filter": save})
    steps = cleaner(collections_path, nft, tmp_path).survey()
    assert [label for s in steps for _, label in s.removes] == [
        "filter -A INPUT -j cali-X (iptables)", "filter cali-X (iptables)",
        "filter -A INPUT -j cali-X (iptables-legacy)", "filter cali-X (iptables-legacy)"]
    assert "iptables-legacy-save -t nat" not in nft.ran  # only the loaded legacy table is read
