#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) pycalico developers
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: cluster_identity
short_description: Claim a pycalico etcd for a cluster, refusing another cluster's
version_added: "0.1.0"
description:
  - Makes the C(default) C(ClusterInformation) resource say the datastore belongs to O(cluster_name) (annotation
    C(pycalico.io/cluster-name)). The resource is created when missing, annotated when unclaimed, and left alone
    when it is already this cluster's.
  - Fails, writing nothing, when the datastore belongs to another cluster.
  - M(pycalico.network.cluster_info) only reads.
author:
  - pycalico developers (@pycalico)
extends_documentation_fragment:
  - pycalico.network.etcd
  - pycalico.network.etcd.attributes
options:
  cluster_name:
    description: The name of the cluster the play deploys (C(CLUSTER_NAME) of the inventory).
    type: str
    required: true
"""

EXAMPLES = r"""
- name: Claim the etcd for cluster1 (or refuse another cluster's)
  pycalico.network.cluster_identity:
    etcd_endpoints: ["https://192.168.1.1:2379"]
    etcd_ca_cert_file: /etc/pycalico/ssl/ca.pem
    etcd_cert_file: /etc/pycalico/ssl/client.pem
    etcd_key_file: /etc/pycalico/ssl/client-key.pem
    cluster_name: cluster1
"""

RETURN = r"""
cluster_information:
  description: The ClusterInformation resource (or what it would be in check mode).
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
  description: The cluster the datastore belongs to.
  returned: always
  type: str
  sample: cluster1
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.pycalico.network.plugins.module_utils.datastore import (
    check_pycalico,
    comparable,
    connected,
    connection_argument_spec,
    diff,
)
from ansible_collections.pycalico.network.plugins.module_utils.resources import ensure_cluster_identity

try:
    from pycalico.model import ResourceStore
except ImportError:  # reported by check_pycalico()
    pass


def main():
    argument_spec = connection_argument_spec()
    argument_spec.update(cluster_name=dict(type="str", required=True))
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True)
    check_pycalico(module)
    p = module.params

    with connected(module) as client:
        result = ensure_cluster_identity(ResourceStore(client), p["cluster_name"], check_mode=module.check_mode)

    after = result.after
    name = after.cluster_name if after is not None else ""
    out = dict(changed=result.changed, cluster_information=comparable(after), cluster_name=name)
    if module._diff:
        out["diff"] = diff(result.before, result.after)
    module.exit_json(**out)


if __name__ == "__main__":
    main()
