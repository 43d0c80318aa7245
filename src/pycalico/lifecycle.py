"""Node removal in Calico's order (calico-internals §6), every step tolerant of not-found."""

from __future__ import annotations

from dataclasses import dataclass, field

from pycalico.ipam import IPAM, tunnel_handle
from pycalico.model import BGPConfiguration, BGPPeer, FelixConfiguration, Node, ResourceStore, WorkloadEndpoint


@dataclass
class RemovalPlan:
    """What removing a node touches; also the diff an Ansible module shows."""

    node: str
    node_exists: bool = False
    workload_endpoints: list[str] = field(default_factory=list)
    ips: list[str] = field(default_factory=list)
    affinities: list[str] = field(default_factory=list)
    bgp_peers: list[str] = field(default_factory=list)
    configs: list[str] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not (self.node_exists or self.workload_endpoints or self.ips or self.affinities
                    or self.bgp_peers or self.configs)


def plan_node_removal(store: ResourceStore, ipam: IPAM, name: str) -> RemovalPlan:
    plan = RemovalPlan(name)
    node = store.get(Node, name)
    plan.node_exists = node is not None
    for wep in store.list(WorkloadEndpoint):
        if wep.node == name:
            plan.workload_endpoints.append(f"{wep.namespace}/{wep.name}")
            plan.ips += [net.split("/")[0] for net in wep.ip_networks]
    if node is not None:
        plan.ips += [ip for ip in (node.ipip_tunnel_addr, node.vxlan_tunnel_addr) if ip]
    plan.affinities = sorted(ipam.affinities(name, 4)) + sorted(ipam.affinities(name, 6))
    plan.bgp_peers = [p.name for p in store.list(BGPPeer) if p.node == name]
    plan.configs = [f"{cls.KIND}/node.{name}" for cls in (FelixConfiguration, BGPConfiguration)
                    if store.get(cls, f"node.{name}") is not None]
    return plan


def remove_node(store: ResourceStore, ipam: IPAM, name: str) -> RemovalPlan:
    """Release the node's addresses and blocks and delete everything that names it."""
    plan = plan_node_removal(store, ipam, name)
    if plan.ips:
        ipam.release_ips(plan.ips)
    for kind in ("ipip", "vxlan", "wireguard"):
        ipam.release_by_handle(tunnel_handle(kind, name))
    for wep in plan.workload_endpoints:
        namespace, _, wep_name = wep.partition("/")
        store.delete(WorkloadEndpoint, wep_name, namespace)
    ipam.release_host(name)
    for peer in plan.bgp_peers:
        store.delete(BGPPeer, peer)
    store.delete(FelixConfiguration, f"node.{name}")
    store.delete(BGPConfiguration, f"node.{name}")
    store.delete(Node, name)
    return plan
