#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) pycalico developers
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: pod_probe
short_description: From a test pod, ping every other test pod, probe the pod MTU and watch the tunnel counters
version_added: "0.1.0"
description:
  - For each target, a C(ping) row; a don't-fragment ping at the smaller of the two pods' MTUs (C(mtu) row); and
    whether C(vxlan.calico)/C(tunl0) transmit counters moved as the target's pool implies (C(encapsulation) row);
    they must move for C(Always), and for C(CrossSubnet) only towards a node outside this node's subnet (from
    the Node records' addresses); with direct routing no tunnel counter may move.
  - Run one host at a time (C(throttle) of 1) so the counters see only this probe's traffic.
  - With O(nat_address), a C(nat) row for a ping from the pod to that address outside the pools.
author:
  - pycalico developers (@pycalico)
extends_documentation_fragment:
  - pycalico.network.etcd
options:
  node:
    description: This node's name (its Node record).
    type: str
    required: true
  pod:
    description: This node's test pod, as pycalico.network.test_pod returned it.
    type: dict
    required: true
  targets:
    description: The other pods, each C({node, ip, mtu}).
    type: list
    elements: dict
    default: []
  nat_address:
    description: An address outside the cluster a pod must reach through NAT outgoing; empty skips.
    type: str
    default: ""
  settle_timeout:
    description: Seconds the first ping to a target may be retried (routes and policy of a fresh pod).
    type: float
    default: 20
"""

EXAMPLES = r"""
- name: Probe every other pod
  pycalico.network.pod_probe:
    etcd_endpoints: ["https://192.168.1.1:2379"]
    node: node1
    pod: "{{ pod.pod }}"
    targets: [{node: node2, ip: 10.244.1.2, mtu: 1450}]
"""

RETURN = r"""
rows:
  description: ping, mtu, encapsulation and nat rows.
  returned: always
  type: list
  elements: dict
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.pycalico.network.plugins.module_utils import netcheck
from ansible_collections.pycalico.network.plugins.module_utils.datastore import (
    check_pycalico,
    connected,
    connection_argument_spec,
)

try:
    from pycalico.model import IPPool, Node, ResourceStore
except ImportError:  # reported by check_pycalico()
    pass


def main():
    argument_spec = connection_argument_spec()
    argument_spec.update(
        node=dict(type="str", required=True),
        pod=dict(type="dict", required=True),
        targets=dict(type="list", elements="dict", default=[]),
        nat_address=dict(type="str", default=""),
        settle_timeout=dict(type="float", default=20.0),
    )
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=False)
    check_pycalico(module)
    p = module.params
    pod = p["pod"]
    if not pod.get("ip"):
        module.exit_json(changed=False, rows=[netcheck.row("ping", p["node"], False, "no test pod on this node")])
    with connected(module) as client:
        store = ResourceStore(client)
        pools = [pool for pool in store.list(IPPool) if pool.version == 4]
        nodes = {n.name: n for n in store.list(Node)}
    rows = netcheck.probe_rows(p["node"], pod, [t for t in p["targets"] if t.get("ip")], pools, nodes,
                               settle_s=p["settle_timeout"])
    if p["nat_address"]:
        ok, summary = netcheck.ping_until(pod["netns"], p["nat_address"], p["settle_timeout"])
        rows.append(netcheck.row("nat", "%s (%s)" % (p["node"], pod["ip"]), ok, summary, p["nat_address"]))
    module.exit_json(changed=False, rows=rows)


if __name__ == "__main__":
    main()
