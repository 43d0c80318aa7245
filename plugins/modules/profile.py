#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) pycalico developers
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: profile
short_description: Manage pycalico (Calico v3) profiles in etcd
version_added: "0.1.0"
description:
  - Creates, updates or deletes a C(Profile) - rules that apply to the endpoints naming it when no policy of any
    tier decides, and labels those endpoints inherit.
  - In a Kubernetes cluster kube-controllers writes the C(kns.*) and C(ksa.*) profiles; this module is for the
    profiles of other CNI runtimes (a plain CNI network's endpoints carry the network's profile) and for host
    endpoints.
  - O(spec) is the Calico C(Profile) spec verbatim (C(ingress), C(egress), C(labelsToApply)).
  - Every value is validated by the C(pycalico) data model; a failure names the field and what is allowed.
author:
  - pycalico developers (@pycalico)
extends_documentation_fragment:
  - pycalico.network.etcd
  - pycalico.network.etcd.attributes
options:
  name:
    description: Name of the profile.
    type: str
    required: true
  state:
    description: Whether the profile should exist.
    type: str
    choices: [present, absent]
    default: present
  spec:
    description:
      - The Calico C(Profile) spec, as in a calicoctl YAML file.
      - The model validates it as Calico does; an unknown field or a bad value fails with the field's path, the
        value and what is allowed, and nothing is written.
    type: dict
    default: {}
  labels:
    description:
      - Labels of the profile. Given, they are exactly the stored labels (plus those Calico adds);
        left out, the stored labels are kept.
    type: dict
"""

EXAMPLES = r"""
- name: Endpoints of the podman network may talk to each other only
  pycalico.network.profile:
    etcd_endpoints: ["https://192.168.1.1:2379"]
    etcd_ca_cert_file: /etc/pycalico/ssl/ca.pem
    etcd_cert_file: /etc/pycalico/ssl/client.pem
    etcd_key_file: /etc/pycalico/ssl/client-key.pem
    name: podman
    spec:
      ingress:
        - action: Allow
          source:
            selector: network == 'podman'
      egress:
        - action: Allow
      labelsToApply:
        network: podman
"""

RETURN = r"""
resource:
  description: The profile as stored (or as it would be stored in check mode); empty when absent.
  returned: always
  type: dict
  sample:
    kind: Profile
    apiVersion: projectcalico.org/v3
    metadata:
      name: example
    spec:
      ingress:
      - action: Allow
      egress:
      - action: Allow
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
    run_resource_module(module, "Profile")


if __name__ == "__main__":
    main()
