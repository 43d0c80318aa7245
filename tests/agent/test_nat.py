"""NAT outgoing: a pod reaches an "outside" namespace that has no route back to the pool."""

from __future__ import annotations

import pytest

from pycalico.agent import nat
from pycalico.model import IPPool
from tests.support.cluster import ping, ping_until, running_cluster
from tests.support.topology import poll

pytestmark = pytest.mark.netns


def test_nat_outgoing_follows_the_pool_setting_and_leaves_other_chains_alone(etcd_cluster, etcd, unique):
    env = {"CALICO_NETWORKING_BACKEND": "vxlan"}
    with running_cluster(etcd_cluster, etcd, unique, [2], outside=True, env=env) as cl:
        cl.create_pool("10.247.0.0/16", vxlan="Always", nat=False)
        a, b = cl.hosts
        # kube-proxy's chain exists before the agent starts
        a.run("iptables-nft", "-t", "nat", "-N", "KUBE-POSTROUTING")
        a.run("iptables-nft", "-t", "nat", "-A", "KUBE-POSTROUTING", "-m", "mark", "--mark", "0x4000/0x4000",
              "-j", "MASQUERADE")
        a.run("iptables-nft", "-t", "nat", "-A", "POSTROUTING", "-j", "KUBE-POSTROUTING")
        cl.start(bird=False)
        pod = cl.add_pod(a, "client")
        peer = cl.add_pod(b, "server")
        ping_until(pod, peer.ip)
        outside = cl.topo.outside_ip
        assert not ping(pod, outside, 1, 1)  # no NAT: the reply has no way back

        pool = cl.store.must_get(IPPool, "default-ipv4-ippool")
        pool.spec["natOutgoing"] = True
        cl.store.update(pool)
        ping_until(pod, outside, timeout=15)

        rules = a.run("iptables-nft-save", "-t", "nat").stdout
        assert f"-A cali-nat-outgoing -m comment --comment \"{nat.MASQ_COMMENT}\" -m set --match-set " \
               f"{nat.MASQ_SET} src -m set ! --match-set {nat.ALL_SET} dst -j MASQUERADE" in rules
        assert rules.count("-j cali-POSTROUTING") == 1
        assert "-A KUBE-POSTROUTING -m mark --mark 0x4000/0x4000 -j MASQUERADE" in rules
        assert "-A POSTROUTING -j KUBE-POSTROUTING" in rules
        sets = a.run("ipset", "list", nat.MASQ_SET).stdout
        assert "10.247.0.0/16" in sets
        # pod to pod traffic is not masqueraded: the server sees the client's own address
        assert ping(pod, peer.ip)

        # drift: somebody flushes our chain; the periodic resync puts it back
        a.run("iptables-nft", "-t", "nat", "-F", "cali-nat-outgoing")
        poll(lambda: nat.MASQ_COMMENT in a.run("iptables-nft-save", "-t", "nat").stdout, 15,
             what="cali-nat-outgoing restored")


def test_scripts_are_what_iptables_restore_expects():
    script = nat.iptables_script(True)
    assert script.startswith("*nat\n:cali-POSTROUTING - [0:0]\n") and script.endswith("COMMIT\n")
    assert "-I POSTROUTING 1" in script and "-I POSTROUTING" not in nat.iptables_script(False)
    ipset = nat.ipset_script(["10.0.0.0/16"], ["10.0.0.0/16", "10.1.0.0/16"])
    assert "swap cali4tmasq-ipam-pools cali40masq-ipam-pools" in ipset
    assert all(len(word) <= 31 for line in ipset.splitlines() for word in line.split())


def test_backend_detection_follows_the_rules_already_there():
    """kube-proxy on iptables-legacy → our chains go to legacy too; nothing anywhere → nft."""
    import uuid

    from tests.support.topology import in_netns, nsexec, sh

    ns = f"tnat{uuid.uuid4().hex[:6]}"
    sh("ip", "netns", "add", ns)
    try:
        with in_netns(ns):
            assert nat.detect_backend("auto") == "nft"
        nsexec(ns, "iptables-legacy", "-t", "nat", "-N", "KUBE-SERVICES")
        nsexec(ns, "iptables-legacy", "-t", "nat", "-A", "PREROUTING", "-j", "KUBE-SERVICES")
        with in_netns(ns):
            assert nat.detect_backend("auto") == "legacy"
            assert nat.detect_backend("nft") == "nft"
            n = nat.NatOutgoing("auto")
            assert n.apply(["10.9.0.0/16"], ["10.9.0.0/16"])
            assert not n.apply(["10.9.0.0/16"], ["10.9.0.0/16"])  # unchanged and in place: nothing written
        assert nat.MASQ_COMMENT in nsexec(ns, "iptables-legacy-save", "-t", "nat").stdout
        assert "cali-" not in nsexec(ns, "iptables-nft-save", "-t", "nat").stdout
    finally:
        sh("ip", "netns", "del", ns, check=False)
