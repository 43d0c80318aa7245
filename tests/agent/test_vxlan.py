"""VXLAN mode with no BIRD at all; the agent's startup records, health, metrics and status key."""

from __future__ import annotations

import ipaddress
import json
import urllib.error
import urllib.request

import pytest

from pycalico.agent.calc import vxlan_mac
from pycalico.model import CLUSTER_NAME_ANNOTATION, ClusterInformation, FelixConfiguration, IPPool, Node, keys
from tests.support.cluster import ping_until, running_cluster
from tests.support.topology import in_netns, poll

pytestmark = pytest.mark.netns


def http_get(ns: str, url: str) -> tuple[int, str]:
    with in_netns(ns):
        try:
            with urllib.request.urlopen(url, timeout=3) as resp:
                return resp.status, resp.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()


def test_vxlan_without_bird_pods_ping_and_agent_registers(etcd_cluster, etcd, unique):
    env = {"CALICO_NETWORKING_BACKEND": "vxlan", "CALICO_IPV4POOL_CIDR": "10.245.0.0/16",
           "CALICO_IPV4POOL_VXLAN": "Always", "CLUSTER_NAME": "lab-a"}
    with running_cluster(etcd_cluster, etcd, unique, [3], env=env) as cl:
        cl.start(bird=False)  # the default pool comes from the agents' environment
        pools = cl.store.list(IPPool)
        assert [(p.name, p.cidr, p.vxlan_mode, p.nat_outgoing) for p in pools] == [
            ("default-ipv4-ippool", "10.245.0.0/16", "Always", True)]
        # the CNI plugin: through the agent's socket on two nodes, in-process on the third
        pods = [cl.add_pod_cni(h, "web", fast=i < 2) for i, h in enumerate(cl.hosts)]
        for src in pods:
            for dst in pods:
                if src is not dst:
                    ping_until(src, dst.ip)

        for host in cl.hosts:
            node = cl.store.must_get(Node, host.name)
            assert node.ipv4_address == host.ip
            assert node.vxlan_mac == vxlan_mac(host.name)
            tunnel = node.vxlan_tunnel_addr
            assert tunnel and tunnel.startswith("10.245.")
            assert [str(ip) for ip in cl.ipam.ips_by_handle(f"vxlan-tunnel-addr-{host.name}")] == [tunnel]
            link = host.run("ip", "-d", "addr", "show", "vxlan.calico").stdout
            assert "vxlan id 4096" in link and "dstport 4789" in link and f"{tunnel}/32" in link
            assert f"local {host.addr}" in link and "mtu 1450" in link
            assert (host.state_dir / "mtu").read_text().strip() == "1450"
            pod = next(p for p in pods if p.host is host)
            assert "mtu 1450" in host.run("ip", "link", "show", pod.veth).stdout  # the plugin read our MTU file
            assert (host.state_dir / "nodename").read_text().strip() == host.name
            routes = host.routes()
            assert "proto bird" not in routes and not host.bird_ctl.exists()
            for other in cl.hosts:
                if other is host:
                    continue
                o = cl.store.must_get(Node, other.name)
                block = next(p.ip for p in pods if p.host is other).rsplit(".", 1)[0]
                assert any(line.startswith(block) and f"via {o.vxlan_tunnel_addr} dev vxlan.calico" in line
                           and "onlink" in line and "proto 80" in line for line in routes.splitlines()), routes
                neigh = host.run("ip", "neigh", "show", "dev", "vxlan.calico").stdout
                assert f"{o.vxlan_tunnel_addr} lladdr {vxlan_mac(other.name)} PERMANENT" in neigh
                fdb = host.run("bridge", "fdb", "show", "dev", "vxlan.calico").stdout
                assert f"{vxlan_mac(other.name)} dst {other.addr} self permanent" in fdb

            status, body = http_get(host.ns, "http://127.0.0.1:9099/readiness")
            assert status == 200, body
            assert http_get(host.ns, "http://127.0.0.1:9099/liveness")[0] == 200
            metrics = http_get(host.ns, "http://127.0.0.1:9091/metrics")[1]
            assert "pycalico_agent_routes_programmed 3.0" in metrics  # 2 remote blocks + own blackhole
            assert "pycalico_agent_resync_seconds_count" in metrics
            status_kv = etcd.get(keys.felix_status_key(host.name))
            assert status_kv is not None and status_kv.lease != 0
            assert set(json.loads(status_kv.value)) == {"time", "uptime", "first_update"}

        info = cl.store.must_get(ClusterInformation, "default")
        assert info.datastore_ready and info.metadata["annotations"][CLUSTER_NAME_ANNOTATION] == "lab-a"

        # the pool drops VXLAN: the pod MTU file follows, and the device goes
        pool = cl.store.must_get(IPPool, "default-ipv4-ippool")
        pool.spec["vxlanMode"] = "Never"
        cl.store.update(pool)
        for host in cl.hosts:
            poll(lambda h=host: (h.state_dir / "mtu").read_text().strip() == "1500", 15, what="MTU back to 1500")
            poll(lambda h=host: "vxlan.calico" not in h.run("ip", "link").stdout, 15, what="vxlan.calico removed")

        # and back: a node's device carries its new tunnel address (up, with its MAC) before its Node
        # publishes it, so peers that switch their routes at once never send into a missing device
        pool = cl.store.must_get(IPPool, "default-ipv4-ippool")
        pool.spec["vxlanMode"] = "Always"
        cl.store.update(pool)
        checked: dict[str, str] = {}

        def published() -> bool:
            for host in cl.hosts:
                tunnel = cl.store.must_get(Node, host.name).vxlan_tunnel_addr
                if tunnel and host.name not in checked:
                    link = host.run("ip", "-d", "addr", "show", "vxlan.calico", check=False).stdout
                    checked[host.name] = link
                    assert f"{tunnel}/32" in link and ",UP" in link and vxlan_mac(host.name) in link, link
            return len(checked) == len(cl.hosts)

        poll(published, 30, interval=0.01, what="every Node with its new VXLAN tunnel address")


def test_agent_refuses_an_etcd_of_another_cluster(etcd_cluster, etcd, unique):
    with running_cluster(etcd_cluster, etcd, unique, [1], env={"CALICO_NETWORKING_BACKEND": "vxlan"}) as cl:
        cl.store.create(ClusterInformation("default", {"clusterGUID": "x", "datastoreReady": True},
                                           metadata={"annotations": {CLUSTER_NAME_ANNOTATION: "other"}}))
        host = cl.hosts[0]
        proc = host.start_agent(CLUSTER_NAME="mine")
        assert proc.wait(30) == 1
        assert "belongs to cluster 'other'" in host.log("agent")
        assert cl.store.get(Node, host.name) is None


def test_periodic_resync_repairs_a_deleted_route(etcd_cluster, etcd, unique):
    env = {"CALICO_NETWORKING_BACKEND": "vxlan", "CALICO_IPV4POOL_CIDR": "10.246.0.0/16",
           "CALICO_IPV4POOL_VXLAN": "Always"}
    with running_cluster(etcd_cluster, etcd, unique, [2], env=env) as cl:
        cl.start(bird=False)
        a, b = cl.hosts
        pod_a, pod_b = cl.add_pod(a, "x"), cl.add_pod(b, "y")
        ping_until(pod_a, pod_b.ip)
        block_b = str(ipaddress.ip_network(f"{pod_b.ip}/26", strict=False))
        # somebody deletes our route and adds one of their own next to it
        a.run("ip", "route", "del", block_b)
        a.run("ip", "route", "add", "192.0.2.0/24", "via", a.addr.rsplit(".", 1)[0] + ".254")
        poll(lambda: block_b in a.routes(), 15, what="the deleted route is back")
        ping_until(pod_a, pod_b.ip)
        assert "192.0.2.0/24" in a.routes()  # never removes what it does not own

        # FelixConfiguration: another VNI and device MTU on every node, then pods still talk
        cl.store.create(FelixConfiguration("default", {"vxlanVNI": 4200, "vxlanMTU": 1400}))
        for host in (a, b):
            poll(lambda h=host: "vxlan id 4200" in h.run("ip", "-d", "link", "show", "vxlan.calico").stdout
                 and "mtu 1400" in h.run("ip", "link", "show", "vxlan.calico").stdout, 15, what="new VNI and MTU")
            poll(lambda h=host: (h.state_dir / "mtu").read_text().strip() == "1400", 15, what="pod MTU 1400")
        ping_until(pod_a, pod_b.ip)
