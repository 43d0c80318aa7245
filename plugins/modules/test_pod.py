#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) pycalico developers
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: test_pod
short_description: A short-lived test pod made through the installed pycalico CNI plugin
version_added: "0.1.0"
description:
  - O(state=present) makes a network namespace and runs the installed plugin's C(ADD) with the installed
    conflist, as a container runtime would; returns the pod (netns, container id, address, MTU).
  - O(state=absent) runs C(DEL) for O(pod) and removes its namespace; every step is attempted.
  - A failed C(ADD) is reported as a row and the half-made pod is still returned, so it can be removed.
author:
  - pycalico developers (@pycalico)
options:
  state:
    description: Make or remove the pod.
    type: str
    choices: [present, absent]
    default: present
  name:
    description: Prefix of the namespace and container id.
    type: str
    default: pcverify
  node:
    description: Name shown in the report rows.
    type: str
    default: ""
  pod:
    description: The pod O(state=present) returned; required with O(state=absent).
    type: dict
  cni_bin_dir:
    description: Where the plugins are installed.
    type: path
    default: /opt/cni/bin
  conflist:
    description: The installed network configuration list.
    type: path
    default: /etc/cni/net.d/10-pycalico.conflist
  cni_env:
    description: Extra environment for the plugin (e.g. C(PYCALICO_CNI_SOCKET), or kubelet's C(CNI_ARGS)).
    type: dict
    default: {}
  plain:
    description:
      - Add the pod as a plain CNI container of the same network, leaving the netconf's C(policy) and C(kubernetes)
        sections out, as Calico's plugin treats a container without Kubernetes pod arguments.
      - On a Kubernetes network (C(policy.type=k8s)) the pod then gets the network's profile, which the plugin
        makes when missing (egress allowed, ingress from the network's members), instead of C(kns.)/C(ksa.)
        profiles from the API; playbooks/verify.yml's test pods are added so.
    type: bool
    default: false
"""

EXAMPLES = r"""
- name: A test pod
  pycalico.network.test_pod:
    node: "{{ inventory_hostname }}"
  register: pod
"""

RETURN = r"""
pod:
  description: netns, container, ip, mtu and node (O(node)) of the pod; a pod_probe target as it is.
  returned: always
  type: dict
rows:
  description: A C(test_pod) row (present) or the removal's errors (absent).
  returned: always
  type: list
  elements: dict
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.pycalico.network.plugins.module_utils import netcheck


def main():
    module = AnsibleModule(argument_spec=dict(
        state=dict(type="str", choices=["present", "absent"], default="present"),
        name=dict(type="str", default="pcverify"),
        node=dict(type="str", default=""),
        pod=dict(type="dict"),
        cni_bin_dir=dict(type="path", default="/opt/cni/bin"),
        conflist=dict(type="path", default="/etc/cni/net.d/10-pycalico.conflist"),
        cni_env=dict(type="dict", default={}),
        plain=dict(type="bool", default=False),
    ), required_if=[("state", "absent", ["pod"])], supports_check_mode=False)
    p = module.params
    env = {str(k): str(v) for k, v in p["cni_env"].items()}
    node = p["node"] or "localhost"
    if p["state"] == "present":
        pod, error = netcheck.pod_add(p["name"], p["cni_bin_dir"], p["conflist"], env, plain=p["plain"])
        pod["node"] = node
        detail = error or "%s in %s, MTU %s" % (pod["ip"], pod["netns"], pod["mtu"])
        module.exit_json(changed=True, pod=pod, rows=[netcheck.row("test_pod", node, not error, detail)])
    errors = netcheck.pod_del(p["pod"], p["cni_bin_dir"], p["conflist"], env, plain=p["plain"])
    rows = [netcheck.row("test_pod", node, False, "removal: %s" % e) for e in errors]
    module.exit_json(changed=True, pod=p["pod"], rows=rows)


if __name__ == "__main__":
    main()
