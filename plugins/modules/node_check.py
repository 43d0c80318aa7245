#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) pycalico developers
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: node_check
short_description: Check one pycalico node for playbooks/verify.yml (units, readiness, address, BGP, IPAM)
version_added: "0.1.0"
description:
  - Reports rows C({check, node, peer, ok, detail}); never fails on a problem (pycalico.network.verify_report does).
  - C(units) are active (systemd); the agent answers C(/readiness) with 200; with O(release), they run that release.
  - The Node record's address is on a local interface and inside O(expected_cidr).
  - BIRD's BGP protocols are exactly those confd derives from the datastore (pycalico.bgp.config.compute_peers),
    each Established.
  - With O(ipam_check=true), C(pycalicoctl ipam check)'s report (the same code) must be clean.
author:
  - pycalico developers (@pycalico)
extends_documentation_fragment:
  - pycalico.network.etcd
options:
  nodename:
    description: The node's name; default the agent's C(<state_dir>/nodename).
    type: str
    default: ""
  state_dir:
    description: The agent's state directory.
    type: path
    default: /var/lib/pycalico
  units:
    description: systemd units that must be active (none checked when empty).
    type: list
    elements: str
    default: []
  health_port:
    description: The agent's health port (C(PYCALICO_HEALTH_PORT)); 0 skips the readiness check.
    type: int
    default: 9099
  bgp:
    description: Check BIRD's sessions against the topology.
    type: bool
    default: true
  bird_socket:
    description: BIRD's control socket.
    type: path
    default: /var/run/pycalico/bird.ctl
  expected_cidr:
    description: The subnet the node address must be in (e.g. from C(IP_AUTODETECTION_METHOD=cidr=...)); empty skips.
    type: str
    default: ""
  ipam_check:
    description: Also run the IPAM consistency check (once per cluster is enough).
    type: bool
    default: false
  release:
    description:
      - A release directory, or a link to one (C(/opt/pycalico/current)); empty skips.
      - The main process of each of O(release_units) that is also in O(units) must run that release's interpreter
        (the gate of playbooks/upgrade.yml, so that the restarted services are known to run the new code).
    type: path
    default: ""
  release_units:
    description: The units run from the pycalico venv, checked against O(release).
    type: list
    elements: str
    default: [pycalico-agent, pycalico-confd]
"""

EXAMPLES = r"""
- name: Check this node
  pycalico.network.node_check:
    etcd_endpoints: ["https://192.168.1.1:2379"]
    etcd_ca_cert_file: /etc/pycalico/ssl/ca.pem
    etcd_cert_file: /etc/pycalico/ssl/client.pem
    etcd_key_file: /etc/pycalico/ssl/client-key.pem
    units: [pycalico-agent, pycalico-confd, pycalico-bird]
    expected_cidr: 192.168.1.0/24
"""

RETURN = r"""
rows:
  description: One row per check.
  returned: always
  type: list
  elements: dict
  sample: [{check: bgp, node: node1, peer: node2, ok: true, detail: "Mesh_10_0_0_2 up Established"}]
ok:
  description: Whether every row passed.
  returned: always
  type: bool
nodename:
  description: The node checked.
  returned: always
  type: str
"""

import os

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.pycalico.network.plugins.module_utils import netcheck
from ansible_collections.pycalico.network.plugins.module_utils.datastore import (
    check_pycalico,
    connected,
    connection_argument_spec,
)

try:
    from pycalico.bgp import bird
    from pycalico.ipam import IPAM
    from pycalico.model import Node, ResourceStore
except ImportError:  # reported by check_pycalico()
    pass


def _nodename(p):
    if p["nodename"]:
        return p["nodename"]
    try:
        with open(os.path.join(p["state_dir"], "nodename")) as f:
            return f.read().strip()
    except OSError:
        return ""


def main():
    argument_spec = connection_argument_spec()
    argument_spec.update(
        nodename=dict(type="str", default=""),
        state_dir=dict(type="path", default="/var/lib/pycalico"),
        units=dict(type="list", elements="str", default=[]),
        health_port=dict(type="int", default=9099),
        bgp=dict(type="bool", default=True),
        bird_socket=dict(type="path", default="/var/run/pycalico/bird.ctl"),
        expected_cidr=dict(type="str", default=""),
        ipam_check=dict(type="bool", default=False),
        release=dict(type="path", default=""),
        release_units=dict(type="list", elements="str", default=["pycalico-agent", "pycalico-confd"]),
    )
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True)
    check_pycalico(module)
    p = module.params
    name = _nodename(p)
    label = name or "(unregistered)"
    rows = netcheck.unit_rows(label, p["units"])
    if p["release"]:
        rows += netcheck.release_rows(label, [u for u in p["release_units"] if u in p["units"]], p["release"])
    if p["health_port"]:
        rows.append(netcheck.readiness_row(label, p["health_port"]))
    with connected(module) as client:
        store = ResourceStore(client)
        nodes = {n.name: n for n in store.list(Node)}
        rows.append(netcheck.address_row(label, nodes.get(name), p["expected_cidr"], netcheck.local_addresses()))
        if p["bgp"]:
            expected = netcheck.expected_peers(store, name)
            by_ip = {n.ip: n.name for n in nodes.values() if n.ip}
            try:
                protocols = bird.show_protocols(p["bird_socket"])
            except (bird.BirdError, OSError) as exc:
                rows.append(netcheck.row("bgp", label, False, "BIRD not answering: %s" % exc))
            else:
                rows += netcheck.bgp_rows(label, expected, protocols, by_ip)
        if p["ipam_check"]:
            rows += netcheck.ipam_rows(label, IPAM(client).check())
    module.exit_json(changed=False, rows=rows, ok=all(r["ok"] for r in rows), nodename=name)


if __name__ == "__main__":
    main()
