"""Attachments keyed by (CNI_CONTAINERID, CNI_IFNAME), as the spec keys them: a second
interface of one container, on the same network or on a second one (as Multus adds it),
gets its own host veth, IPAM handle and WorkloadEndpoint; each DEL leaves the other
intact and CHECK-clean. Real plugin, both executable paths (see conftest)."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from typing import Any

import pytest

from pycalico.ipam import IPAM
from pycalico.model import WorkloadEndpoint
from tests.cni.conftest import host_links, leftovers, pod_links
from tests.support.cni_env import CniEnv, Outcome, ping_from

pytestmark = pytest.mark.netns

NET = "k8s-pod-network"


@pytest.fixture
def pods(cni: CniEnv) -> Iterator[list[tuple[str, str, str]]]:
    """Pod namespaces for one test, removed afterwards (with whatever attachments remain)."""
    made: list[tuple[str, str, str]] = []
    yield made
    try:
        for _, path, cid in made:
            for ifname in ("eth0", "net1", "net2"):
                for conf in (cni.netconf(), cni.netconf(name="second-net")):
                    cni.cni("DEL", cid, path, conf=conf, ifname=ifname)
    finally:
        for name, _, _ in made:
            cni.remove_pod(name)


def _new(cni: CniEnv, pods: list[tuple[str, str, str]], index: str) -> tuple[str, str, str]:
    pod = cni.new_pod(index)
    pods.append(pod)
    return pod


def _address(out: Outcome) -> str:
    assert out.code == 0, out.stdout
    return str(out.json["ips"][0]["address"].split("/")[0])


def _check(cni: CniEnv, cid: str, path: str, ifname: str, result: dict[str, Any], args: str = "",
           **conf: Any) -> Outcome:
    return cni.cni("CHECK", cid, path, conf=cni.netconf(prevResult=result, **conf), ifname=ifname, args=args)


def test_two_ifnames_of_one_container_each_get_their_own_attachment(cni: CniEnv, pods) -> None:
    name, path, cid = _new(cni, pods, "two")
    _, peer_path, peer_cid = _new(cni, pods, "peer")
    first = cni.cni("ADD", cid, path)
    second = cni.cni("ADD", cid, path, ifname="net1")
    peer = cni.cni("ADD", peer_cid, peer_path)
    ip0, ip1 = _address(first), _address(second)
    assert ip0 != ip1
    veth0, veth1 = first.json["interfaces"][0]["name"], second.json["interfaces"][0]["name"]
    assert veth0 == "cali" + cid[:11]  # the first interface keeps Calico's names
    assert veth1 == "cali" + hashlib.sha1(f"{cid}.net1".encode()).hexdigest()[:11]
    assert {veth0, veth1} <= set(host_links())
    assert {"eth0", "net1"} <= set(pod_links(name))
    ipam = IPAM(cni.client)
    assert [str(a) for a in ipam.ips_by_handle(f"{NET}.{cid}")] == [ip0]
    assert [str(a) for a in ipam.ips_by_handle(f"{NET}.{cid}.net1")] == [ip1]
    weps = {w.name: w for w in cni.store.list(WorkloadEndpoint) if w.container_id == cid}
    assert set(weps) == {f"node--1-cni-{cid}-eth0", f"node--1-cni-{cid}-net1"}
    assert weps[f"node--1-cni-{cid}-net1"].interface_name == veth1
    assert ping_from(peer_path, [ip0, ip1]) == {ip0, ip1}
    assert _check(cni, cid, path, "eth0", first.json).code == 0
    assert _check(cni, cid, path, "net1", second.json).code == 0

    # DEL of the first leaves the second working, and the other way round.
    assert cni.cni("DEL", cid, path).code == 0
    assert veth0 not in host_links() and veth1 in host_links()
    check = _check(cni, cid, path, "net1", second.json)
    assert check.code == 0, check.stdout
    assert [str(a) for a in ipam.ips_by_handle(f"{NET}.{cid}.net1")] == [ip1]
    assert ping_from(peer_path, [ip1]) == {ip1}
    again = cni.cni("ADD", cid, path)
    assert _check(cni, cid, path, "eth0", again.json).code == 0
    assert cni.cni("DEL", cid, path, ifname="net1").code == 0
    check = _check(cni, cid, path, "eth0", again.json)
    assert check.code == 0, check.stdout
    assert ping_from(peer_path, [_address(again)]) == {_address(again)}
    assert cni.cni("DEL", cid, path).code == 0
    assert cni.cni("DEL", peer_cid, peer_path).code == 0
    assert peer.code == 0
    assert leftovers(cni) == []


def test_a_second_network_on_another_ifname_coexists_as_multus_adds_it(cni: CniEnv, pods) -> None:
    name, path, cid = _new(cni, pods, "multus")
    args = f"K8S_POD_NAMESPACE=ns1;K8S_POD_NAME=multi-0;K8S_POD_INFRA_CONTAINER_ID={cid}"
    second_net = cni.netconf(name="second-net")
    first = cni.cni("ADD", cid, path, args=args)
    second = cni.cni("ADD", cid, path, conf=second_net, ifname="net1", args=args)
    ip0, ip1 = _address(first), _address(second)
    veth0, veth1 = first.json["interfaces"][0]["name"], second.json["interfaces"][0]["name"]
    assert veth0 == "cali" + hashlib.sha1(b"ns1.multi-0").hexdigest()[:11]
    assert veth1 == "cali" + hashlib.sha1(b"ns1.multi-0.net1").hexdigest()[:11]
    ipam = IPAM(cni.client)
    assert [str(a) for a in ipam.ips_by_handle(f"{NET}.{cid}")] == [ip0]
    assert [str(a) for a in ipam.ips_by_handle(f"second-net.{cid}.net1")] == [ip1]
    assert _check(cni, cid, path, "net1", second.json, args, name="second-net").code == 0

    # GC of the first network with both attachments valid keeps both; with only eth0
    # valid it still keeps the other network's (not its business).
    both = cni.netconf("1.1.0")
    both["cni.dev/valid-attachments"] = [{"containerID": cid, "ifname": "eth0"},
                                         {"containerID": cid, "ifname": "net1"}]
    assert cni.cni("GC", conf=both).code == 0
    assert len(ipam.ips_by_handle(f"{NET}.{cid}")) == 1
    assert len(ipam.ips_by_handle(f"second-net.{cid}.net1")) == 1

    assert cni.cni("DEL", cid, path, conf=second_net, ifname="net1", args=args).code == 0
    check = _check(cni, cid, path, "eth0", first.json, args)
    assert check.code == 0, check.stdout
    assert cni.cni("DEL", cid, path, args=args).code == 0
    assert leftovers(cni) == []


def test_gc_matches_valid_attachments_on_the_pair(cni: CniEnv, pods) -> None:
    name, path, cid = _new(cni, pods, "gcpair")
    assert cni.cni("ADD", cid, path).code == 0
    second = cni.cni("ADD", cid, path, ifname="net1")
    ip1 = _address(second)
    conf = cni.netconf("1.1.0")
    conf["cni.dev/valid-attachments"] = [{"containerID": cid, "ifname": "net1"}]
    out = cni.cni("GC", conf=conf)
    assert (out.code, out.stdout) == (0, "")
    ipam = IPAM(cni.client)
    assert ipam.ips_by_handle(f"{NET}.{cid}") == []
    assert [str(a) for a in ipam.ips_by_handle(f"{NET}.{cid}.net1")] == [ip1]
    assert {w.name for w in cni.store.list(WorkloadEndpoint)} == {f"node--1-cni-{cid}-net1"}
    assert _check(cni, cid, path, "net1", second.json).code == 0
    assert cni.cni("DEL", cid, path, ifname="net1").code == 0
    assert cni.cni("DEL", cid, path).code == 0
    assert leftovers(cni) == []


def test_a_host_veth_of_another_attachment_is_an_error_never_deleted(cni: CniEnv, pods) -> None:
    # Plain-CNI names are the container id's first 11 characters: two ids that share
    # them name the same host veth. The second ADD must fail and the first stay.
    _, path_a, cid_a = _new(cni, pods, "clash")
    _, path_b, _ = _new(cni, pods, "clash2")
    cid_b = cid_a[:11] + "other0"
    pods[-1] = (pods[-1][0], path_b, cid_b)
    first = cni.cni("ADD", cid_a, path_a)
    ip_a = _address(first)
    clash = cni.cni("ADD", cid_b, path_b)
    assert clash.code == 105 and "another attachment" in clash.json["msg"], clash.stdout
    assert _check(cni, cid_a, path_a, "eth0", first.json).code == 0
    assert IPAM(cni.client).ips_by_handle(f"{NET}.{cid_b}") == []
    assert {w.container_id for w in cni.store.list(WorkloadEndpoint)} == {cid_a}
    assert cni.cni("DEL", cid_b, path_b).code == 0  # a failed ADD is followed by DEL
    assert cni.invoke(cni.env("DEL", cid_b, ""), cni.netconf()).code == 0  # and one without a netns
    assert _check(cni, cid_a, path_a, "eth0", first.json).code == 0
    assert [str(a) for a in IPAM(cni.client).ips_by_handle(f"{NET}.{cid_a}")] == [ip_a]
    assert cni.cni("DEL", cid_a, path_a).code == 0
    assert leftovers(cni) == []


def test_churn_over_two_attachments_leaves_nothing(cni: CniEnv, pods) -> None:
    _, path, cid = _new(cni, pods, "churn")
    rounds = 20 if cni.fast else 5  # in-process each call pays Python's imports (~0.1-0.5 s)
    for _ in range(rounds):
        assert cni.cni("ADD", cid, path).code == 0
        assert cni.cni("ADD", cid, path, ifname="net1").code == 0
        assert cni.cni("DEL", cid, path).code == 0
        assert cni.cni("DEL", cid, path, ifname="net1").code == 0
    assert leftovers(cni) == []
