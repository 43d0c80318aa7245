#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) pycalico developers
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: ippool
short_description: Manage pycalico (Calico v3) IP pools in etcd
version_added: "0.1.0"
description:
  - Creates, reconciles or deletes an C(IPPool) resource in the Calico-compatible etcd datastore of pycalico.
  - A changed C(ipipMode), C(vxlanMode), C(natOutgoing), C(disabled), C(nodeSelector) or C(disableBGPExport)
    is reconciled in place (no need to delete and recreate the pool).
  - Changing O(block_size) fails, as does changing O(cidr) while addresses or blocks are allocated in the pool;
    the CIDR of an unused pool is changed by replacing the pool.
  - Deleting a pool that still has allocated addresses fails unless O(force=true).
  - Options that are not given keep their current value (or Calico's default on create).
  - Every value is validated by the C(pycalico) data model; a failure names the option and what is allowed.
author:
  - pycalico developers (@pycalico)
extends_documentation_fragment:
  - pycalico.network.etcd
  - pycalico.network.etcd.attributes
options:
  name:
    description: Name of the pool.
    type: str
    default: default-ipv4-ippool
  state:
    description: Whether the pool should exist.
    type: str
    choices: [present, absent]
    default: present
  cidr:
    description: Pool CIDR, for example C(172.20.0.0/16). Required to create a pool.
    type: str
  block_size:
    description: Prefix length of the IPAM blocks (20 to 32 for IPv4; Calico's default 26). Immutable.
    type: int
  ipip_mode:
    description: IPIP encapsulation.
    type: str
    choices: [Never, Always, CrossSubnet]
  vxlan_mode:
    description: VXLAN encapsulation. Not together with IPIP.
    type: str
    choices: [Never, Always, CrossSubnet]
  nat_outgoing:
    description: Masquerade traffic from pods to destinations outside every pool.
    type: bool
  disabled:
    description: No new addresses are assigned from a disabled pool.
    type: bool
  disable_bgp_export:
    description: Do not export the pool's routes over BGP.
    type: bool
  node_selector:
    description: Calico selector of the nodes that assign addresses from this pool, for example C(all()).
    type: str
  allowed_uses:
    description: What the pool's addresses may be used for.
    type: list
    elements: str
    choices: [Workload, Tunnel, LoadBalancer]
  force:
    description: With O(state=absent), delete the pool even when addresses are still allocated in it.
    type: bool
    default: false
"""

EXAMPLES = r"""
- name: Default pool from the kubeasz variables, IPIP off
  pycalico.network.ippool:
    etcd_endpoints: ["https://192.168.1.1:2379"]
    etcd_ca_cert_file: /etc/pycalico/ssl/ca.pem
    etcd_cert_file: /etc/pycalico/ssl/client.pem
    etcd_key_file: /etc/pycalico/ssl/client-key.pem
    cidr: 172.20.0.0/16
    block_size: 26
    ipip_mode: Never
    vxlan_mode: Never
    nat_outgoing: true

- name: Switch the pool to VXLAN in place
  pycalico.network.ippool:
    etcd_endpoints: ["https://192.168.1.1:2379"]
    etcd_ca_cert_file: /etc/pycalico/ssl/ca.pem
    etcd_cert_file: /etc/pycalico/ssl/client.pem
    etcd_key_file: /etc/pycalico/ssl/client-key.pem
    ipip_mode: Never
    vxlan_mode: Always

- name: Remove an unused pool
  pycalico.network.ippool:
    etcd_endpoints: ["https://192.168.1.1:2379"]
    etcd_ca_cert_file: /etc/pycalico/ssl/ca.pem
    etcd_cert_file: /etc/pycalico/ssl/client.pem
    etcd_key_file: /etc/pycalico/ssl/client-key.pem
    name: old-pool
    state: absent
"""

RETURN = r"""
pool:
  description: The pool as stored (or as it would be stored in check mode); empty when absent.
  returned: always
  type: dict
  sample:
    kind: IPPool
    apiVersion: projectcalico.org/v3
    metadata:
      name: default-ipv4-ippool
    spec:
      cidr: 172.20.0.0/16
      blockSize: 26
      ipipMode: Always
      vxlanMode: Never
      natOutgoing: true
      nodeSelector: all()
allocations:
  description: Addresses allocated in the pool's blocks when it was read.
  returned: always
  type: int
  sample: 3
replaced:
  description: The CIDR of an unused pool changed, so the pool was deleted and created again.
  returned: always
  type: bool
  sample: false
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.pycalico.network.plugins.module_utils.choices import ALLOWED_USE_CHOICES, POOL_MODES
from ansible_collections.pycalico.network.plugins.module_utils.datastore import (
    check_pycalico,
    comparable,
    connected,
    connection_argument_spec,
    diff,
    set_if_given,
)
from ansible_collections.pycalico.network.plugins.module_utils.resources import POOL_FIELDS, ensure_pool

try:
    from pycalico.ipam import IPAM
    from pycalico.model import ResourceStore
except ImportError:  # reported by check_pycalico()
    pass

# module option -> IPPool spec field
SPEC = {
    "cidr": "cidr",
    "block_size": "blockSize",
    "ipip_mode": "ipipMode",
    "vxlan_mode": "vxlanMode",
    "nat_outgoing": "natOutgoing",
    "disabled": "disabled",
    "disable_bgp_export": "disableBGPExport",
    "node_selector": "nodeSelector",
    "allowed_uses": "allowedUses",
}


def main():
    argument_spec = connection_argument_spec()
    argument_spec.update(
        name=dict(type="str", default="default-ipv4-ippool"),
        state=dict(type="str", default="present", choices=["present", "absent"]),
        cidr=dict(type="str"),
        block_size=dict(type="int"),
        ipip_mode=dict(type="str", choices=POOL_MODES),
        vxlan_mode=dict(type="str", choices=POOL_MODES),
        nat_outgoing=dict(type="bool"),
        disabled=dict(type="bool"),
        disable_bgp_export=dict(type="bool"),
        node_selector=dict(type="str"),
        allowed_uses=dict(type="list", elements="str", choices=ALLOWED_USE_CHOICES),
        force=dict(type="bool", default=False),
    )
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True)
    check_pycalico(module)
    p = module.params
    spec = {}
    for option, field in SPEC.items():
        set_if_given(spec, field, p[option])

    with connected(module, POOL_FIELDS) as client:
        result = ensure_pool(ResourceStore(client), IPAM(client), p["name"], spec, state=p["state"],
                             force=p["force"], check_mode=module.check_mode)

    out = dict(changed=result.changed, pool=comparable(result.after),
               allocations=result.info.get("allocations", 0), replaced=bool(result.info.get("replaced")))
    if module._diff:
        out["diff"] = diff(result.before, result.after)
    module.exit_json(**out)


if __name__ == "__main__":
    main()
