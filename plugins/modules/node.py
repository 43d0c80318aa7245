#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) pycalico developers
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: node
short_description: Adjust or remove a pycalico (Calico v3) node in etcd
version_added: "0.1.0"
description:
  - With O(state=absent), removes a node the way Calico does when a node is deleted, using
    C(pycalico.lifecycle.remove_node) - its workload endpoints' and tunnel addresses are released, the workload
    endpoints deleted, its IPAM block affinities released (empty blocks deleted), its node-specific BGP peers
    and per-node configurations deleted, and finally the C(Node) itself. Every step tolerates what is already gone,
    so a half-finished removal can be run again.
  - With O(state=present), adjusts labels and BGP settings of a node the agent registered (it fails when the
    node is not registered).
author:
  - pycalico developers (@pycalico)
extends_documentation_fragment:
  - pycalico.network.etcd
  - pycalico.network.etcd.attributes
options:
  name:
    description: Name of the node (C(NODENAME) of its agent).
    type: str
    required: true
  state:
    description: C(absent) removes the node and everything that names it.
    type: str
    choices: [present, absent]
    default: present
  labels:
    description: Labels to set on the node (merged with the current ones unless O(purge_labels=true)).
    type: dict
  purge_labels:
    description: Remove labels not in O(labels).
    type: bool
    default: false
  remove_labels:
    description: Label keys to remove from the node.
    type: list
    elements: str
  must_exist:
    description:
      - With O(state=present), fail when the node is not registered. When false, a missing node is left alone
        (nothing changes) and RV(registered) is false.
    type: bool
    default: true
  as_number:
    description: AS number of this node; C(0) removes the per-node value (the cluster default applies).
    type: int
  route_reflector_cluster_id:
    description: Make the node a route reflector with this cluster ID (an IPv4 address); an empty string removes it.
    type: str
"""

EXAMPLES = r"""
- name: Remove worker-02 and release everything it held
  pycalico.network.node:
    etcd_endpoints: ["https://192.168.1.1:2379"]
    etcd_ca_cert_file: /etc/pycalico/ssl/ca.pem
    etcd_cert_file: /etc/pycalico/ssl/client.pem
    etcd_key_file: /etc/pycalico/ssl/client-key.pem
    name: worker-02
    state: absent

- name: Make master-01 a route reflector
  pycalico.network.node:
    etcd_endpoints: ["https://192.168.1.1:2379"]
    etcd_ca_cert_file: /etc/pycalico/ssl/ca.pem
    etcd_cert_file: /etc/pycalico/ssl/client.pem
    etcd_key_file: /etc/pycalico/ssl/client-key.pem
    name: master-01
    labels:
      route-reflector: "true"
    route_reflector_cluster_id: 244.0.0.1
"""

RETURN = r"""
registered:
  description: Whether the node is registered (after the change).
  returned: always
  type: bool
  sample: true
node:
  description: The node as stored (or as it would be stored in check mode); empty after removal.
  returned: always
  type: dict
removal:
  description: What removing the node touched (or would touch in check mode).
  returned: when O(state=absent)
  type: dict
  contains:
    node:
      description: The node name.
      type: str
    node_exists:
      description: Whether the Node resource existed.
      type: bool
    workload_endpoints:
      description: Workload endpoints deleted, as C(namespace/name).
      type: list
      elements: str
    ips:
      description: Addresses released.
      type: list
      elements: str
    affinities:
      description: Block affinities released.
      type: list
      elements: str
    bgp_peers:
      description: Node-specific BGP peers deleted.
      type: list
      elements: str
    configs:
      description: Per-node configurations deleted.
      type: list
      elements: str
  sample:
    node: worker-02
    node_exists: true
    workload_endpoints: ["default/worker--02-k8s-web-eth0"]
    ips: ["172.20.1.5", "172.20.1.0"]
    affinities: ["172.20.1.0/26"]
    bgp_peers: []
    configs: []
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.pycalico.network.plugins.module_utils.datastore import (
    check_pycalico,
    comparable,
    connected,
    connection_argument_spec,
)
from ansible_collections.pycalico.network.plugins.module_utils.resources import (
    NODE_FIELDS,
    ensure_node_absent,
    ensure_node_present,
)

try:
    from pycalico.ipam import IPAM
    from pycalico.model import ResourceStore
except ImportError:  # reported by check_pycalico()
    pass


def main():
    argument_spec = connection_argument_spec()
    argument_spec.update(
        name=dict(type="str", required=True),
        state=dict(type="str", default="present", choices=["present", "absent"]),
        labels=dict(type="dict"),
        purge_labels=dict(type="bool", default=False),
        remove_labels=dict(type="list", elements="str"),
        must_exist=dict(type="bool", default=True),
        as_number=dict(type="int"),
        route_reflector_cluster_id=dict(type="str"),
    )
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True)
    check_pycalico(module)
    p = module.params
    if p["labels"] is not None:
        p["labels"] = dict((str(k), str(v)) for k, v in p["labels"].items())

    with connected(module, NODE_FIELDS) as client:
        store = ResourceStore(client)
        if p["state"] == "absent":
            result = ensure_node_absent(store, IPAM(client), p["name"], check_mode=module.check_mode)
        else:
            result = ensure_node_present(store, p["name"], labels=p["labels"], purge_labels=p["purge_labels"],
                                         remove_labels=p["remove_labels"], must_exist=p["must_exist"],
                                         as_number=p["as_number"],
                                         rr_cluster_id=p["route_reflector_cluster_id"],
                                         check_mode=module.check_mode)

    out = dict(changed=result.changed, registered=result.info.get("registered", p["state"] == "present"))
    if p["state"] == "absent":
        out["node"] = {}
        out["removal"] = result.info["plan"]
        if module._diff:
            out["diff"] = dict(before=result.before or {}, after={})
    else:
        out["node"] = comparable(result.after)
        if module._diff:
            out["diff"] = dict(before=comparable(result.before), after=comparable(result.after))
    module.exit_json(**out)


if __name__ == "__main__":
    main()
