"""Startup's address check reads the node cache the agent fills while it starts (not a
second list of every Node): an explicit IP another node holds is refused, an
autodetected one is only warned about, as calico-node does."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest

from pycalico.agent.main import Agent
from pycalico.agent.settings import AgentSettings
from pycalico.agent.startup import StartupError, ensure_tunnel_addresses
from pycalico.datastore.etcd import EtcdClient
from pycalico.ipam import IPAM
from pycalico.model import IPPool, Node, ResourceStore


def _agent(etcd: EtcdClient, run_dir: Path, **env: str) -> Agent:
    settings = AgentSettings.from_mapping({"NODENAME": "me", "CALICO_NETWORKING_BACKEND": "none",
                                           "CALICO_IPV4POOL_CIDR": "none",
                                           "PYCALICO_RUN_DIR": str(run_dir), "PYCALICO_STATE_DIR": str(run_dir),
                                           **env})
    agent = Agent(settings, etcd)
    agent.start_watchers()
    return agent


def test_an_explicit_ip_held_by_another_node_is_refused(etcd: EtcdClient) -> None:
    ResourceStore(etcd).create(Node("other", {"bgp": {"ipv4Address": "10.99.0.5/24"}}))
    with tempfile.TemporaryDirectory(prefix="pct-startup-") as run_dir:
        agent = _agent(etcd, Path(run_dir), IP="10.99.0.5/24")
        try:
            with pytest.raises(StartupError, match="IP 10.99.0.5 is already used by node other"):
                agent.run_startup()
            assert ResourceStore(etcd).get(Node, "me") is None  # refused before registering
        finally:
            agent.syncer.stop(1.0)


def test_a_free_explicit_ip_registers(etcd: EtcdClient) -> None:
    ResourceStore(etcd).create(Node("other", {"bgp": {"ipv4Address": "10.99.0.6/24"}}))
    with tempfile.TemporaryDirectory(prefix="pct-startup-") as run_dir:
        agent = _agent(etcd, Path(run_dir), IP="10.99.0.5/24")
        try:
            agent.run_startup()
            node = ResourceStore(etcd).get(Node, "me")
            assert node is not None and node.ip == "10.99.0.5"
        finally:
            agent.syncer.stop(1.0)


def test_a_new_tunnel_address_is_prepared_before_the_node_publishes_it(etcd: EtcdClient) -> None:
    """``prepare(kind, address)`` runs while the Node does not carry the address yet (the agent puts
    it on its device there: peers route to it as soon as they see it), and not again for an
    address the Node already has."""
    store = ResourceStore(etcd)
    store.create(IPPool("vx", {"cidr": "10.199.77.0/24", "blockSize": 28, "vxlanMode": "Always"}))
    store.create(Node("node-p", {"bgp": {"ipv4Address": "172.31.0.5/24"}}))
    seen: list[tuple[str, str, str]] = []

    def prepare(kind: str, address: str) -> None:
        seen.append((kind, address, store.must_get(Node, "node-p").vxlan_tunnel_addr))

    node = ensure_tunnel_addresses(store, IPAM(etcd), "node-p", prepare=prepare)
    assert node.vxlan_tunnel_addr.startswith("10.199.77.")
    assert seen == [("vxlan", node.vxlan_tunnel_addr, "")]
    seen.clear()
    assert ensure_tunnel_addresses(store, IPAM(etcd), "node-p", prepare=prepare).vxlan_tunnel_addr == \
        node.vxlan_tunnel_addr
    assert seen == []
