#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) pycalico developers
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: host_endpoint
short_description: Manage pycalico (Calico v3) host endpoints in etcd
version_added: "0.1.0"
description:
  - Creates, updates or deletes a C(HostEndpoint) - a host interface (or every interface, C(interfaceName) C(*))
    of a node that policies with matching selectors govern. Failsafe ports stay reachable.
  - O(spec) is the Calico C(HostEndpoint) spec verbatim (C(node), C(interfaceName), C(expectedIPs), C(profiles),
    C(ports)); the labels O(labels) are what policy selectors match.
  - Every value is validated by the C(pycalico) data model; a failure names the field and what is allowed.
author:
  - pycalico developers (@pycalico)
extends_documentation_fragment:
  - pycalico.network.etcd
  - pycalico.network.etcd.attributes
options:
  name:
    description: Name of the host endpoint.
    type: str
    required: true
  state:
    description: Whether the host endpoint should exist.
    type: str
    choices: [present, absent]
    default: present
  spec:
    description:
      - The Calico C(HostEndpoint) spec, as in a calicoctl YAML file.
      - The model validates it as Calico does; an unknown field or a bad value fails with the field's path, the
        value and what is allowed, and nothing is written.
    type: dict
    default: {}
  labels:
    description:
      - Labels of the host endpoint. Given, they are exactly the stored labels (plus those Calico adds);
        left out, the stored labels are kept.
    type: dict
"""

EXAMPLES = r"""
- name: Police eth0 of worker-01
  pycalico.network.host_endpoint:
    etcd_endpoints: ["https://192.168.1.1:2379"]
    etcd_ca_cert_file: /etc/pycalico/ssl/ca.pem
    etcd_cert_file: /etc/pycalico/ssl/client.pem
    etcd_key_file: /etc/pycalico/ssl/client-key.pem
    name: worker-01-eth0
    labels:
      role: worker
    spec:
      node: worker-01
      interfaceName: eth0
      expectedIPs: [192.168.1.11]
"""

RETURN = r"""
resource:
  description: The host endpoint as stored (or as it would be stored in check mode); empty when absent.
  returned: always
  type: dict
  sample:
    kind: HostEndpoint
    apiVersion: projectcalico.org/v3
    metadata:
      name: example
    spec:
      node: worker-01
      interfaceName: eth0
      expectedIPs:
      - 192.168.1.11
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
    run_resource_module(module, "HostEndpoint")


if __name__ == "__main__":
    main()
