#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) pycalico developers
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: cluster_info
short_description: Read the cluster identity of a pycalico etcd, and refuse another cluster's
version_added: "0.1.0"
description:
  - Reads the C(default) C(ClusterInformation) resource. Its annotation C(pycalico.io/cluster-name) names the
    cluster the datastore belongs to.
  - With O(cluster_name), fails when that name is another cluster's, so a play aimed at the wrong etcd stops before
    it changes anything (C(network.yml) runs it from the deploy host before it touches any node).
  - Never writes. M(pycalico.network.cluster_identity) claims an unclaimed datastore.
author:
  - pycalico developers (@pycalico)
extends_documentation_fragment:
  - pycalico.network.etcd
attributes:
  check_mode:
    description: Runs the same in check mode (it only reads).
    support: full
  diff_mode:
    description: Nothing changes, so there is no diff.
    support: none
options:
  cluster_name:
    description:
      - The name of the cluster the play deploys (C(CLUSTER_NAME) of the inventory).
      - When given, an etcd claimed by another cluster fails the module. An unclaimed one passes.
    type: str
"""

EXAMPLES = r"""
- name: Refuse an etcd of another cluster
  pycalico.network.cluster_info:
    etcd_endpoints: ["https://192.168.1.1:2379"]
    etcd_ca_cert_file: /etc/pycalico/ssl/ca.pem
    etcd_cert_file: /etc/pycalico/ssl/client.pem
    etcd_key_file: /etc/pycalico/ssl/client-key.pem
    cluster_name: cluster1
"""

RETURN = r"""
cluster_information:
  description: The ClusterInformation resource; empty when there is none.
  returned: always
  type: dict
  sample:
    kind: ClusterInformation
    apiVersion: projectcalico.org/v3
    metadata:
      name: default
      annotations:
        pycalico.io/cluster-name: cluster1
    spec:
      clusterGUID: 5f0c6a2d8d9d4e4c9a4f1e7b2c3d4e5f
      datastoreReady: true
cluster_name:
  description: The cluster the datastore belongs to (empty when unclaimed).
  returned: always
  type: str
  sample: cluster1
claimed:
  description: Whether the datastore belongs to a cluster.
  returned: always
  type: bool
  sample: true
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.pycalico.network.plugins.module_utils.datastore import (
    check_pycalico,
    comparable,
    connected,
    connection_argument_spec,
)

try:
    from pycalico.cluster import plan_claim
    from pycalico.model import ClusterInformation, ResourceStore
except ImportError:  # reported by check_pycalico()
    pass


def main():
    argument_spec = connection_argument_spec()
    argument_spec.update(cluster_name=dict(type="str"))
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True)
    check_pycalico(module)
    wanted = module.params["cluster_name"]

    with connected(module) as client:
        current = ResourceStore(client).get(ClusterInformation, "default")
        if wanted:
            plan_claim(current, wanted)  # raises ClusterMismatch (mapped to fail_json) for another cluster's etcd

    name = current.cluster_name if current is not None else ""
    module.exit_json(changed=False, cluster_information=comparable(current), cluster_name=name, claimed=bool(name))


if __name__ == "__main__":
    main()
