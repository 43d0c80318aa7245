#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) pycalico developers
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: bgp_configuration
short_description: Manage the pycalico (Calico v3) BGP configuration in etcd
version_added: "0.1.0"
description:
  - Sets fields of a C(BGPConfiguration) resource, C(default) for the cluster or C(node.<name>) for one node.
    Options that are not given keep their current value.
  - Turning O(node_to_node_mesh) off is how route reflectors take over from the full mesh.
  - Every value is validated by the C(pycalico) data model; a failure names the option and what is allowed.
author:
  - pycalico developers (@pycalico)
extends_documentation_fragment:
  - pycalico.network.etcd
  - pycalico.network.etcd.attributes
options:
  name:
    description: C(default) (cluster-wide) or C(node.<nodename>).
    type: str
    default: default
  state:
    description: Whether the resource should exist.
    type: str
    choices: [present, absent]
    default: present
  as_number:
    description: Default AS number of the nodes (Calico's default 64512).
    type: int
  node_to_node_mesh:
    description: Full iBGP mesh between all nodes; off with route reflectors.
    type: bool
  listen_port:
    description: TCP port BIRD listens on (179).
    type: int
  log_severity_screen:
    description: BIRD log level.
    type: str
    choices: [Debug, Info, Warning, Error, Fatal, "None"]
  bind_mode:
    description: Whether BIRD listens on the node's IP only.
    type: str
    choices: ["None", NodeIP]
  node_mesh_max_restart_time:
    description: Graceful restart time of the node-to-node mesh sessions, a duration such as C(120s).
    type: str
  node_mesh_password_secret:
    description:
      - The secret holding the node-to-node mesh password on every node (C(/etc/pycalico/bgp-secrets/<name>/password),
        installed by the bgp role); sets C(nodeMeshPassword.secretKeyRef) C({name, key=password}).
      - An empty string removes the mesh password; unset leaves it as it is.
    type: str
"""

EXAMPLES = r"""
- name: Route reflectors instead of the mesh, AS 64512
  pycalico.network.bgp_configuration:
    etcd_endpoints: ["https://192.168.1.1:2379"]
    etcd_ca_cert_file: /etc/pycalico/ssl/ca.pem
    etcd_cert_file: /etc/pycalico/ssl/client.pem
    etcd_key_file: /etc/pycalico/ssl/client-key.pem
    as_number: 64512
    node_to_node_mesh: false
"""

RETURN = r"""
bgp_configuration:
  description: The resource as stored (or as it would be stored in check mode); empty when absent.
  returned: always
  type: dict
  sample:
    kind: BGPConfiguration
    apiVersion: projectcalico.org/v3
    metadata:
      name: default
    spec:
      asNumber: 64512
      nodeToNodeMeshEnabled: false
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.pycalico.network.plugins.module_utils.choices import BGP_LOG_LEVEL_CHOICES, BIND_MODE_CHOICES
from ansible_collections.pycalico.network.plugins.module_utils.datastore import (
    check_pycalico,
    comparable,
    connected,
    connection_argument_spec,
    diff,
    set_if_given,
)
from ansible_collections.pycalico.network.plugins.module_utils.resources import (
    BGP_CONFIG_FIELDS,
    ensure_bgp_configuration,
)

from ansible_collections.pycalico.network.plugins.module_utils.bgp_names import SECRET_KEY

try:
    from pycalico.model import ResourceStore
except ImportError:  # reported by check_pycalico()
    pass

SPEC = {
    "as_number": "asNumber",
    "node_to_node_mesh": "nodeToNodeMeshEnabled",
    "listen_port": "listenPort",
    "log_severity_screen": "logSeverityScreen",
    "bind_mode": "bindMode",
    "node_mesh_max_restart_time": "nodeMeshMaxRestartTime",
}


def main():
    argument_spec = connection_argument_spec()
    argument_spec.update(
        name=dict(type="str", default="default"),
        state=dict(type="str", default="present", choices=["present", "absent"]),
        as_number=dict(type="int"),
        node_to_node_mesh=dict(type="bool"),
        listen_port=dict(type="int"),
        log_severity_screen=dict(type="str", choices=BGP_LOG_LEVEL_CHOICES),
        bind_mode=dict(type="str", choices=BIND_MODE_CHOICES),
        node_mesh_max_restart_time=dict(type="str"),
        node_mesh_password_secret=dict(type="str", no_log=False),
    )
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True)
    check_pycalico(module)
    p = module.params
    spec = {}
    for option, field in SPEC.items():
        set_if_given(spec, field, p[option])
    if p["node_mesh_password_secret"] is not None:
        # "" takes the mesh password away
        spec["nodeMeshPassword"] = ({"secretKeyRef": {"name": p["node_mesh_password_secret"], "key": SECRET_KEY}}
                                    if p["node_mesh_password_secret"] else None)

    with connected(module, BGP_CONFIG_FIELDS) as client:
        result = ensure_bgp_configuration(ResourceStore(client), p["name"], spec, state=p["state"],
                                          check_mode=module.check_mode)

    out = dict(changed=result.changed, bgp_configuration=comparable(result.after))
    if module._diff:
        out["diff"] = diff(result.before, result.after)
    module.exit_json(**out)


if __name__ == "__main__":
    main()
