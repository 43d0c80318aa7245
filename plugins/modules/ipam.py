#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) pycalico developers
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: ipam
short_description: Check pycalico IPAM and release leaked addresses
version_added: "0.1.0"
description:
  - O(state=checked) compares every allocation in the IPAM blocks with its owner (workload endpoints and node
    tunnel addresses), like C(calicoctl ipam check), and reports what it finds without changing anything.
  - O(state=released) also releases leaked addresses (allocated, but no owner) and handles without addresses.
    In check mode it reports what would be released.
author:
  - pycalico developers (@pycalico)
extends_documentation_fragment:
  - pycalico.network.etcd
  - pycalico.network.etcd.attributes
options:
  state:
    description: C(checked) only reports; C(released) releases leaked addresses.
    type: str
    choices: [checked, released]
    default: checked
  fail_on_problems:
    description: Fail when the check finds problems that releasing leaks does not fix (for O(state=checked), any problem).
    type: bool
    default: false
"""

EXAMPLES = r"""
- name: Check IPAM
  pycalico.network.ipam:
    etcd_endpoints: ["https://192.168.1.1:2379"]
    etcd_ca_cert_file: /etc/pycalico/ssl/ca.pem
    etcd_cert_file: /etc/pycalico/ssl/client.pem
    etcd_key_file: /etc/pycalico/ssl/client-key.pem
  register: ipam_report

- name: Release leaked addresses
  pycalico.network.ipam:
    etcd_endpoints: ["https://192.168.1.1:2379"]
    etcd_ca_cert_file: /etc/pycalico/ssl/ca.pem
    etcd_cert_file: /etc/pycalico/ssl/client.pem
    etcd_key_file: /etc/pycalico/ssl/client-key.pem
    state: released
"""

RETURN = r"""
report:
  description: The IPAM check (before any release).
  returned: always
  type: dict
  sample:
    ok: false
    allocations: 4
    inUse: 3
    leaked: [{"ip": "172.20.1.7", "block": "172.20.1.0/26", "handle": "k8s-pod-network.abc"}]
    notAllocated: []
    duplicateOwners: []
    handlesWithoutIPs: []
    handlesMissing: []
    blockProblems: []
released:
  description: Addresses released (or that would be released in check mode).
  returned: always
  type: list
  elements: str
  sample: ["172.20.1.7"]
released_handles:
  description: Handles without addresses deleted (or that would be deleted in check mode).
  returned: always
  type: list
  elements: str
  sample: []
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.pycalico.network.plugins.module_utils.datastore import (
    check_pycalico,
    connected,
    connection_argument_spec,
)

try:
    from pycalico.ipam import IPAM
except ImportError:  # reported by check_pycalico()
    pass


def main():
    argument_spec = connection_argument_spec()
    argument_spec.update(
        state=dict(type="str", default="checked", choices=["checked", "released"]),
        fail_on_problems=dict(type="bool", default=False),
    )
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True)
    check_pycalico(module)
    p = module.params

    with connected(module) as client:
        ipam = IPAM(client)
        report = ipam.check()
        leaked = [item["ip"] for item in report.leaked]
        handles = list(report.handles_without_ips)
        if p["state"] == "released" and (leaked or handles) and not module.check_mode:
            leaked = ipam.release_leaked(report)

    data = report.to_json()
    releasing = p["state"] == "released"
    out = dict(changed=bool(releasing and (leaked or handles)), report=data,
               released=leaked if releasing else [], released_handles=handles if releasing else [])
    if module._diff and releasing:
        out["diff"] = dict(before=dict(leaked=sorted(i["ip"] for i in report.leaked), handles_without_ips=handles),
                           after=dict(leaked=[], handles_without_ips=[]))
    remaining = [k for k in ("notAllocated", "duplicateOwners", "handlesMissing", "blockProblems") if data[k]]
    if not releasing:
        remaining += [k for k in ("leaked", "handlesWithoutIPs") if data[k]]
    if p["fail_on_problems"] and remaining:
        module.fail_json(msg="IPAM check found problems: %s" % ", ".join(remaining), **out)
    module.exit_json(**out)


if __name__ == "__main__":
    main()
