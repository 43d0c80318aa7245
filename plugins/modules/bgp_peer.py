#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) pycalico developers
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: bgp_peer
short_description: Manage pycalico (Calico v3) BGP peers in etcd
version_added: "0.1.0"
description:
  - Creates, updates or deletes a C(BGPPeer) resource. confd on every node follows the change and reconfigures BIRD.
  - The peer's spec is exactly the options given; an option left out is removed from the stored peer.
  - A peer is global (no O(node), no O(node_selector)), for one node (O(node)) or for the nodes a selector matches.
    It peers with O(peer_ip) or with the nodes O(peer_selector) matches (route reflectors).
  - Every value is validated by the C(pycalico) data model; a failure names the option and what is allowed.
author:
  - pycalico developers (@pycalico)
extends_documentation_fragment:
  - pycalico.network.etcd
  - pycalico.network.etcd.attributes
options:
  name:
    description: Name of the peer resource.
    type: str
    required: true
  state:
    description: Whether the peer should exist.
    type: str
    choices: [present, absent]
    default: present
  peer_ip:
    description: Address of the remote BGP speaker, optionally with a port (C(10.0.0.1:1179)).
    type: str
  as_number:
    description: AS number of the remote speaker.
    type: int
  node:
    description: Name of the one node that peers.
    type: str
  node_selector:
    description: Calico selector of the nodes that peer, for example C(all()).
    type: str
  peer_selector:
    description: Calico selector of the nodes to peer with, for example C(route-reflector == 'true').
    type: str
  keep_original_next_hop:
    description: Keep the next hop of routes sent to this peer.
    type: bool
  source_address:
    description: The source address of the session.
    type: str
    choices: [UseNodeIP, "None"]
  next_hop_mode:
    description: The next hop of the routes sent to the peer.
    type: str
    choices: [Auto, Self, Keep]
  local_as_number:
    description: AS number this side presents to the peer, instead of the node's.
    type: int
  max_restart_time:
    description: Graceful restart time advertised to the peer, a duration such as C(120s).
    type: str
  num_allowed_local_as_numbers:
    description: How often the local AS number may appear in a received AS path.
    type: int
  ttl_security:
    description: Number of hops for GTSM (TTL security); 0 is off.
    type: int
"""

EXAMPLES = r"""
- name: Every node peers with the route reflectors
  pycalico.network.bgp_peer:
    etcd_endpoints: ["https://192.168.1.1:2379"]
    etcd_ca_cert_file: /etc/pycalico/ssl/ca.pem
    etcd_cert_file: /etc/pycalico/ssl/client.pem
    etcd_key_file: /etc/pycalico/ssl/client-key.pem
    name: peer-with-route-reflectors
    node_selector: all()
    peer_selector: route-reflector == 'true'

- name: One node peers with the top-of-rack router
  pycalico.network.bgp_peer:
    etcd_endpoints: ["https://192.168.1.1:2379"]
    etcd_ca_cert_file: /etc/pycalico/ssl/ca.pem
    etcd_cert_file: /etc/pycalico/ssl/client.pem
    etcd_key_file: /etc/pycalico/ssl/client-key.pem
    name: worker-01-tor
    node: worker-01
    peer_ip: 192.168.1.254
    as_number: 64513
"""

RETURN = r"""
peer:
  description: The peer as stored (or as it would be stored in check mode); empty when absent.
  returned: always
  type: dict
  sample:
    kind: BGPPeer
    apiVersion: projectcalico.org/v3
    metadata:
      name: worker-01-tor
    spec:
      node: worker-01
      peerIP: 192.168.1.254
      asNumber: 64513
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.pycalico.network.plugins.module_utils.choices import NEXT_HOP_MODE_CHOICES, SOURCE_ADDRESS_CHOICES
from ansible_collections.pycalico.network.plugins.module_utils.datastore import (
    check_pycalico,
    comparable,
    connected,
    connection_argument_spec,
    diff,
    set_if_given,
)
from ansible_collections.pycalico.network.plugins.module_utils.resources import PEER_FIELDS, ensure_peer

try:
    from pycalico.model import ResourceStore
except ImportError:  # reported by check_pycalico()
    pass

SPEC = {
    "peer_ip": "peerIP",
    "as_number": "asNumber",
    "node": "node",
    "node_selector": "nodeSelector",
    "peer_selector": "peerSelector",
    "keep_original_next_hop": "keepOriginalNextHop",
    "source_address": "sourceAddress",
    "next_hop_mode": "nextHopMode",
    "local_as_number": "localASNumber",
    "max_restart_time": "maxRestartTime",
    "num_allowed_local_as_numbers": "numAllowedLocalASNumbers",
    "ttl_security": "ttlSecurity",
}


def main():
    argument_spec = connection_argument_spec()
    argument_spec.update(
        name=dict(type="str", required=True),
        state=dict(type="str", default="present", choices=["present", "absent"]),
        peer_ip=dict(type="str"),
        as_number=dict(type="int"),
        node=dict(type="str"),
        node_selector=dict(type="str"),
        peer_selector=dict(type="str"),
        keep_original_next_hop=dict(type="bool"),
        source_address=dict(type="str", choices=SOURCE_ADDRESS_CHOICES),
        next_hop_mode=dict(type="str", choices=NEXT_HOP_MODE_CHOICES),
        local_as_number=dict(type="int"),
        max_restart_time=dict(type="str"),
        num_allowed_local_as_numbers=dict(type="int"),
        ttl_security=dict(type="int"),
    )
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True)
    check_pycalico(module)
    p = module.params
    spec = {}
    for option, field in SPEC.items():
        set_if_given(spec, field, p[option])

    with connected(module, PEER_FIELDS) as client:
        result = ensure_peer(ResourceStore(client), p["name"], spec, state=p["state"],
                             check_mode=module.check_mode)

    out = dict(changed=result.changed, peer=comparable(result.after))
    if module._diff:
        out["diff"] = diff(result.before, result.after)
    module.exit_json(**out)


if __name__ == "__main__":
    main()
