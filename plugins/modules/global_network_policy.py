#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) pycalico developers
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: global_network_policy
short_description: Manage pycalico (Calico v3) global network policies in etcd
version_added: "0.1.0"
description:
  - Creates, updates or deletes a C(GlobalNetworkPolicy) - ordered ingress and egress rules for the workload and
    host endpoints its selector matches in every namespace. The agent on every node follows the change.
  - O(spec) is the Calico C(GlobalNetworkPolicy) spec verbatim (C(tier), C(order), C(selector),
    C(namespaceSelector), C(serviceAccountSelector), C(types), C(ingress), C(egress), C(doNotTrack), C(preDNAT),
    C(applyOnForward), C(performanceHints)); the stored spec is exactly O(spec) plus the defaults Calico adds.
  - Every value is validated by the C(pycalico) data model; a failure names the field and what is allowed.
author:
  - pycalico developers (@pycalico)
extends_documentation_fragment:
  - pycalico.network.etcd
  - pycalico.network.etcd.attributes
options:
  name:
    description: Name of the global network policy.
    type: str
    required: true
  state:
    description: Whether the global network policy should exist.
    type: str
    choices: [present, absent]
    default: present
  spec:
    description:
      - The Calico C(GlobalNetworkPolicy) spec, as in a calicoctl YAML file.
      - The model validates it as Calico does; an unknown field or a bad value fails with the field's path, the
        value and what is allowed, and nothing is written.
    type: dict
    default: {}
  labels:
    description:
      - Labels of the global network policy. Given, they are exactly the stored labels (plus those Calico adds);
        left out, the stored labels are kept.
    type: dict
"""

EXAMPLES = r"""
- name: Let every pod resolve names through kube-dns
  pycalico.network.global_network_policy:
    etcd_endpoints: ["https://192.168.1.1:2379"]
    etcd_ca_cert_file: /etc/pycalico/ssl/ca.pem
    etcd_cert_file: /etc/pycalico/ssl/client.pem
    etcd_key_file: /etc/pycalico/ssl/client-key.pem
    name: allow-dns-egress
    spec:
      order: 100
      selector: all()
      types: [Egress]
      egress:
        - action: Allow
          protocol: UDP
          destination:
            selector: k8s-app == 'kube-dns'
            ports: [53]

- name: Remove it
  pycalico.network.global_network_policy:
    etcd_endpoints: ["https://192.168.1.1:2379"]
    etcd_ca_cert_file: /etc/pycalico/ssl/ca.pem
    etcd_cert_file: /etc/pycalico/ssl/client.pem
    etcd_key_file: /etc/pycalico/ssl/client-key.pem
    name: allow-dns-egress
    state: absent
"""

RETURN = r"""
resource:
  description: The global network policy as stored (or as it would be stored in check mode); empty when absent.
  returned: always
  type: dict
  sample:
    kind: GlobalNetworkPolicy
    apiVersion: projectcalico.org/v3
    metadata:
      name: example
    spec:
      order: 100
      selector: all()
      types:
      - Egress
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
    run_resource_module(module, "GlobalNetworkPolicy")


if __name__ == "__main__":
    main()
