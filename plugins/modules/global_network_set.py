#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) pycalico developers
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: global_network_set
short_description: Manage pycalico (Calico v3) global network sets in etcd
version_added: "0.1.0"
description:
  - Creates, updates or deletes a C(GlobalNetworkSet) - a labelled list of CIDRs that the selectors of global
    policies (and of any policy with a C(namespaceSelector) of C(global())) can match like endpoints.
  - O(spec) is the Calico C(GlobalNetworkSet) spec verbatim (C(nets)); the labels O(labels) are what selectors
    match.
  - Every value is validated by the C(pycalico) data model; a failure names the field and what is allowed.
author:
  - pycalico developers (@pycalico)
extends_documentation_fragment:
  - pycalico.network.etcd
  - pycalico.network.etcd.attributes
options:
  name:
    description: Name of the global network set.
    type: str
    required: true
  state:
    description: Whether the global network set should exist.
    type: str
    choices: [present, absent]
    default: present
  spec:
    description:
      - The Calico C(GlobalNetworkSet) spec, as in a calicoctl YAML file.
      - The model validates it as Calico does; an unknown field or a bad value fails with the field's path, the
        value and what is allowed, and nothing is written.
    type: dict
    default: {}
  labels:
    description:
      - Labels of the global network set. Given, they are exactly the stored labels (plus those Calico adds);
        left out, the stored labels are kept.
    type: dict
"""

EXAMPLES = r"""
- name: Networks outside the cluster that pods may reach
  pycalico.network.global_network_set:
    etcd_endpoints: ["https://192.168.1.1:2379"]
    etcd_ca_cert_file: /etc/pycalico/ssl/ca.pem
    etcd_cert_file: /etc/pycalico/ssl/client.pem
    etcd_key_file: /etc/pycalico/ssl/client-key.pem
    name: external-services
    labels:
      role: external
    spec:
      nets: [192.0.2.0/24]
"""

RETURN = r"""
resource:
  description: The global network set as stored (or as it would be stored in check mode); empty when absent.
  returned: always
  type: dict
  sample:
    kind: GlobalNetworkSet
    apiVersion: projectcalico.org/v3
    metadata:
      name: example
    spec:
      nets:
      - 192.0.2.0/24
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.pycalico.network.plugins.module_utils.datastore import connection_argument_spec
from ansible_collections.pycalico.network.plugins.module_utils.resources import (
    resource_argument_spec,
    run_resource_module,
)


def main():
    argument_spec = connection_argument_spec()
    argument_spec.update(resource_argument_spec(namespaced=False))
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True)
    run_resource_module(module, "GlobalNetworkSet")


if __name__ == "__main__":
    main()
