#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) pycalico developers
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: pool_migration
short_description: Move pycalico workloads from one IP pool to a new one
version_added: "0.2.0"
description:
  - Creates the new pool with the old pool's settings (block size, encapsulation, NAT outgoing, node selector,
    BGP export, allowed uses) unless overridden, and disables the old pool so no new address comes from it.
  - Reports what still holds addresses in the old pool (workload endpoints, with the Kubernetes pods to recreate,
    and every allocation such as tunnel addresses), and deletes the old pool once nothing is allocated in it.
  - Run it again after the workloads were recreated to finish; with O(delete_old=true) it fails instead while
    the old pool is still used.
  - Refuses a new CIDR equal to the old one or overlapping any other pool.
author:
  - pycalico developers (@pycalico)
extends_documentation_fragment:
  - pycalico.network.etcd
  - pycalico.network.etcd.attributes
options:
  old_pool:
    description: Name of the pool to migrate away from.
    type: str
    default: default-ipv4-ippool
  new_cidr:
    description: CIDR of the new pool.
    type: str
    required: true
  new_pool:
    description: Name of the new pool; derived from O(new_cidr) when not given (C(ippool-10-245-0-0-16)).
    type: str
  block_size:
    description: Block size of the new pool instead of the old pool's.
    type: int
  ipip_mode:
    description: IPIP mode of the new pool instead of the old pool's.
    type: str
    choices: [Never, Always, CrossSubnet]
  vxlan_mode:
    description: VXLAN mode of the new pool instead of the old pool's.
    type: str
    choices: [Never, Always, CrossSubnet]
  nat_outgoing:
    description: NAT outgoing of the new pool instead of the old pool's.
    type: bool
  delete_old:
    description: Fail while anything is still allocated in the old pool instead of leaving it for a later run.
    type: bool
    default: false
"""

EXAMPLES = r"""
- name: Move to 10.245.0.0/16
  pycalico.network.pool_migration:
    etcd_endpoints: ["https://192.168.1.1:2379"]
    etcd_ca_cert_file: /etc/pycalico/ssl/ca.pem
    etcd_cert_file: /etc/pycalico/ssl/client.pem
    etcd_key_file: /etc/pycalico/ssl/client-key.pem
    new_cidr: 10.245.0.0/16
"""

RETURN = r"""
new_pool:
  description: The new pool as stored (or as it would be in check mode).
  returned: always
  type: dict
old_pool:
  description: The old pool after this run; empty once deleted.
  returned: always
  type: dict
old_pool_deleted:
  description: The old pool is gone (deleted now or earlier).
  returned: always
  type: bool
workloads:
  description: Workload endpoints with an address in the old pool (namespace, name, node, orchestrator, ips, pod).
  returned: always
  type: list
  elements: dict
recreate:
  description: What to recreate (namespace/pod for Kubernetes pods) so the workloads move to the new pool.
  returned: always
  type: list
  elements: str
allocations:
  description: Every address still allocated in the old pool (ip, handle, attributes).
  returned: always
  type: list
  elements: dict
follow_up:
  description: What must change outside Calico (kube-proxy's clusterCIDR, the inventory's CLUSTER_CIDR).
  returned: always
  type: str
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.pycalico.network.plugins.module_utils.choices import POOL_MODES
from ansible_collections.pycalico.network.plugins.module_utils.datastore import (
    check_pycalico,
    connected,
    connection_argument_spec,
    set_if_given,
)
from ansible_collections.pycalico.network.plugins.module_utils.pool_migration import migrate_pool
from ansible_collections.pycalico.network.plugins.module_utils.resources import POOL_FIELDS

try:
    from pycalico.ipam import IPAM
    from pycalico.model import ResourceStore
except ImportError:  # reported by check_pycalico()
    pass

OVERRIDES = {"block_size": "blockSize", "ipip_mode": "ipipMode", "vxlan_mode": "vxlanMode",
             "nat_outgoing": "natOutgoing"}


def main():
    argument_spec = connection_argument_spec()
    argument_spec.update(
        old_pool=dict(type="str", default="default-ipv4-ippool"),
        new_cidr=dict(type="str", required=True),
        new_pool=dict(type="str"),
        block_size=dict(type="int"),
        ipip_mode=dict(type="str", choices=POOL_MODES),
        vxlan_mode=dict(type="str", choices=POOL_MODES),
        nat_outgoing=dict(type="bool"),
        delete_old=dict(type="bool", default=False),
    )
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True)
    check_pycalico(module)
    p = module.params
    overrides = {}
    for option, field in OVERRIDES.items():
        set_if_given(overrides, field, p[option])

    fields = dict(POOL_FIELDS, NEW_CIDR="new_cidr", NEW_POOL_NAME="new_pool")
    with connected(module, fields) as client:
        result = migrate_pool(ResourceStore(client), IPAM(client), p["old_pool"], p["new_cidr"], p["new_pool"],
                              overrides=overrides, delete_old=p["delete_old"], check_mode=module.check_mode)

    out = dict(changed=result.changed, new_pool=result.after["new_pool"], old_pool=result.after["old_pool"],
               **result.info)
    if module._diff:
        out["diff"] = {"before": result.before, "after": result.after}
    module.exit_json(**out)


if __name__ == "__main__":
    main()
