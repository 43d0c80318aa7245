"""Mesh off, one route reflector, and an external router (a plain BIRD) that learns the blocks."""

from __future__ import annotations

import ipaddress

import pytest

from pycalico.model import BGPConfiguration, BGPPeer
from tests.support.cluster import ping_until, running_cluster
from tests.support.topology import poll

pytestmark = pytest.mark.netns

EXTERNAL_AS = 65000


def external_bird_config(router_id: str, neighbours: list[str]) -> str:
    peers = "\n".join(f"""
protocol bgp node{i} {{
  local as {EXTERNAL_AS};
  neighbor {ip} as 64512;
  ipv4 {{ import all; export none; }};
}}""" for i, ip in enumerate(neighbours))
    return f"""router id {router_id};
protocol device {{ }}
protocol kernel {{ ipv4 {{ import none; export all; }}; }}
{peers}
"""


def test_route_reflector_and_external_peer(etcd_cluster, etcd, unique):
    with running_cluster(etcd_cluster, etcd, unique, [3]) as cl:
        cl.create_pool("10.248.0.0/16")
        cl.store.create(BGPConfiguration("default", {"nodeToNodeMeshEnabled": False,
                                                     "serviceClusterIPs": [{"cidr": "10.100.0.0/16"}]}))
        cl.store.create(BGPPeer("peer-with-rr", {"nodeSelector": "all()",
                                                 "peerSelector": "route-reflector == 'true'"}))
        ext = cl.topo.add_host(f"{cl.topo.prefix}-ext", 0, 9)
        cl.store.create(BGPPeer("upstream", {"peerIP": ext.addr, "asNumber": EXTERNAL_AS}))
        rr, c1, c2 = cl.hosts[:3]
        rr.start_agent(PYCALICO_RR_CLUSTER_ID="244.0.0.1", PYCALICO_NODE_LABELS="route-reflector=true")
        for h in (c1, c2):
            h.start_agent()
        for h in (rr, c1, c2):
            poll(lambda h=h: (h.state_dir / "nodename").exists(), 30, what=f"{h.name} registered")
            h.start_confd()
        for h in (rr, c1, c2):
            h.start_bird()
        conf = ext.bird_dir / "bird.conf"
        conf.write_text(external_bird_config(ext.addr, [h.addr for h in (rr, c1, c2)]))
        ext.spawn("bird", ["bird", "-f", "-c", str(conf), "-s", str(ext.bird_ctl)])

        pods = [cl.add_pod(h, "web") for h in (rr, c1, c2)]
        blocks = {p.host.name: str(ipaddress.ip_network(f"{p.ip}/26", strict=False)) for p in pods}

        # clients learn each other's blocks through the reflector, next hop kept
        for h, other in ((c1, c2), (c2, c1), (c1, rr)):
            poll(lambda h=h, o=other: any(
                line.startswith(blocks[o.name]) and f"via {o.addr}" in line and "proto bird" in line
                for line in h.routes().splitlines()), 20, what=f"{h.name} learns {other.name}'s block")
        for src in pods:
            for dst in pods:
                if src is not dst:
                    ping_until(src, dst.ip)

        # the external router learns every node's block, each via its own node
        for h in (rr, c1, c2):
            poll(lambda h=h: any(line.startswith(blocks[h.name]) and f"via {h.addr}" in line
                                 for line in ext.routes().splitlines()),
                 20, what=f"external router learns {h.name}'s block")
        assert "default" not in "".join(x for x in ext.routes().splitlines() if "proto bird" in x)
        poll(lambda: "10.100.0.0/16" in ext.routes(), 20, what="external router learns the service range")
        assert "10.100.0.0/16" not in c1.routes()  # announced, never programmed on the nodes

        def status(h):
            out = h.ctl("node", "status").stdout
            return out if out.count("Established") == (3 if h is rr else 2) else ""
        rr_status = poll(lambda: status(rr), 20, what="RR sessions up")
        assert "Mesh_" not in rr_status and "node-to-node mesh" not in rr_status
        assert c1.addr in rr_status and c2.addr in rr_status and ext.addr in rr_status
        c1_status = poll(lambda: status(c1), 20, what="client sessions up")
        assert "node specific" in c1_status and "global" in c1_status
        assert c2.addr not in c1_status  # no session between clients
        rr_conf = (rr.bird_dir / "bird.conf").read_text()
        assert rr_conf.count("rr client;") == 2 and "rr cluster id 244.0.0.1;" in rr_conf
