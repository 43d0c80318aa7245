#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) pycalico developers
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: bgp_peers
short_description: Reconcile the external BGP routers of the inventory as pycalico BGP peers
version_added: "0.2.0"
description:
  - Each entry of O(peers) becomes a C(BGPPeer) named C(pycalico-ext-<node or global>-<address>), labelled
    C(pycalico.io/inventory-peer=true); labelled peers that are no longer listed are deleted.
  - Peers without that label (made by hand or with M(pycalico.network.bgp_peer)) are left alone.
author:
  - pycalico developers (@pycalico)
extends_documentation_fragment:
  - pycalico.network.etcd
  - pycalico.network.etcd.attributes
options:
  peers:
    description:
      - The routers; each has C(peer_ip), C(as_number), optionally C(node) (the node name; global without),
        C(keep_original_next_hop), C(source_address), C(max_restart_time), C(ttl_security), C(password_secret).
      - C(password_secret) names the secret holding the session's password on the nodes
        (C(/etc/pycalico/bgp-secrets/<name>/password), installed by the bgp role); the BGPPeer gets
        C(password.secretKeyRef) C({name, key=password}). A password itself is refused here.
    type: list
    elements: dict
    default: []
"""

EXAMPLES = r"""
- name: Every node peers with the core router, worker-01 also with its ToR
  pycalico.network.bgp_peers:
    etcd_endpoints: ["https://192.168.1.1:2379"]
    etcd_ca_cert_file: /etc/pycalico/ssl/ca.pem
    etcd_cert_file: /etc/pycalico/ssl/client.pem
    etcd_key_file: /etc/pycalico/ssl/client-key.pem
    peers:
      - {peer_ip: 192.168.1.254, as_number: 64513}
      - {peer_ip: 192.168.1.253, as_number: 64514, node: worker-01}
"""

RETURN = r"""
created:
  description: Peers created.
  returned: always
  type: list
  elements: str
updated:
  description: Peers changed.
  returned: always
  type: list
  elements: str
deleted:
  description: Labelled peers deleted because they are no longer listed.
  returned: always
  type: list
  elements: str
names:
  description: Names of the listed peers.
  returned: always
  type: list
  elements: str
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.pycalico.network.plugins.module_utils.datastore import (
    check_pycalico,
    connected,
    connection_argument_spec,
)
from ansible_collections.pycalico.network.plugins.module_utils.topology import ensure_peer_set

try:
    from pycalico.model import ResourceStore
except ImportError:  # reported by check_pycalico()
    pass


def main():
    argument_spec = connection_argument_spec()
    argument_spec.update(peers=dict(type="list", elements="dict", default=[]))
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True)
    # a password given here by mistake is refused, and masked wherever Ansible echoes the arguments
    for peer in module.params["peers"]:
        if isinstance(peer, dict) and peer.get("password"):
            module.no_log_values.add(str(peer["password"]))
    check_pycalico(module)
    with connected(module) as client:
        result = ensure_peer_set(ResourceStore(client), module.params["peers"], check_mode=module.check_mode)
    out = dict(changed=result.changed, **result.info)
    if module._diff:
        out["diff"] = {"before": result.before, "after": result.after}
    module.exit_json(**out)


if __name__ == "__main__":
    main()
