#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) pycalico developers
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: clean_network
short_description: Remove pycalico's links, routes, iptables chains and ipsets from a host, and nothing else
version_added: "0.1.0"
description:
  - Removes the links named O(link_prefix)* (host ends of pod veths) and the O(links) devices; a device the kernel
    will not delete (C(tunl0) while the C(ipip) module is loaded) has its addresses flushed and is set down. An
    inert C(tunl0) (down, no address) is left alone.
  - Removes the routes of the O(route_protocols) in the main table.
  - Removes the iptables chains named O(chain_prefix)* of the C(raw), C(mangle), C(filter) and C(nat) tables with
    the rules of other chains that jump to them or carry pycalico's C(cali:) rule-ID comment; those rules go first,
    then the chains are flushed and deleted, in one C(iptables-restore --noflush) per table. C(iptables-nft) is
    preferred; of the legacy tables only those already loaded (C(/proc/net/ip_tables_names)) are read, since reading
    one would load it.
  - Destroys the ipsets named O(ipset_prefix)*.
  - Needs only the Python standard library (no C(pycalico) package) and C(ip); C(iptables-save)/C(-restore) and
    C(ipset) where present.
  - A removal that fails does not stop the others; the module then fails naming each, with what it did remove.
author:
  - pycalico developers (@pycalico)
attributes:
  check_mode:
    description: Reports what would be removed (RV(removed), RV(diff)); changes nothing.
    support: full
  diff_mode:
    description: RV(diff) holds what of pycalico's is on the host before and what is left after, by kind.
    support: full
options:
  link_prefix:
    description: Links whose name starts with this are removed; empty removes only O(links).
    type: str
    default: cali
  links:
    description: Devices removed by name (set down and stripped when the kernel does not allow deleting them).
    type: list
    elements: str
    default: [tunl0, vxlan.calico]
  route_protocols:
    description: Routes with these protocols (names of C(/etc/iproute2/rt_protos) or numbers) are removed.
    type: list
    elements: str
    default: [bird, "80"]
  chain_prefix:
    description: iptables chains with this prefix are flushed and deleted, with the rules that jump to them. Not empty.
    type: str
    default: cali-
  ipset_prefix:
    description: ipsets with this prefix are destroyed. Not empty.
    type: str
    default: cali
"""

EXAMPLES = r"""
- name: Remove pycalico's network state
  pycalico.network.clean_network:
    links: [tunl0, vxlan.calico]
    route_protocols: [bird, "80"]
  register: cleaned

- name: What would go
  pycalico.network.clean_network:
  check_mode: true
  diff: true
"""

RETURN = r"""
removed:
  description:
    - What was removed (in check mode, what would be), in the order of removal.
    - "A device that was only set down ends in C( (set down: the kernel keeps it))."
  returned: always
  type: list
  elements: str
  sample:
    - route 10.244.1.0/26 proto bird
    - link cali0123456789a
    - "link tunl0 (set down: the kernel keeps it)"
    - 'rule filter -A FORWARD -m comment --comment "cali:wUHhoiAYhphO9Mso" -j cali-FORWARD (iptables-nft)'
    - chain filter cali-FORWARD (iptables-nft)
    - ipset cali40masq-ipam-pools
diff:
  description: What of pycalico's is on the host, by kind (C(routes), C(links), C(rules), C(chains), C(ipsets)).
  returned: when diff mode is on
  type: dict
  contains:
    before:
      description: Before the run.
      type: dict
      sample: {routes: ["10.244.1.0/26 proto bird"], links: [cali0123456789a], rules: [], chains: [], ipsets: []}
    after:
      description: What is left (in check mode, what would be).
      type: dict
      sample: {routes: [], links: [], rules: [], chains: [], ipsets: []}
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.pycalico.network.plugins.module_utils.clean_network import (
    Cleaner,
    CleanError,
    describe,
    state,
)


def argument_spec():
    return dict(
        link_prefix=dict(type="str", default="cali"),
        links=dict(type="list", elements="str", default=["tunl0", "vxlan.calico"]),
        route_protocols=dict(type="list", elements="str", default=["bird", "80"]),
        chain_prefix=dict(type="str", default="cali-"),
        ipset_prefix=dict(type="str", default="cali"),
    )


def run(module):
    p = module.params

    def command(argv, data=None):
        return module.run_command(argv, data=data, check_rc=False)

    cleaner = Cleaner(command, module.get_bin_path, p["link_prefix"], p["links"], p["route_protocols"],
                      p["chain_prefix"], p["ipset_prefix"])
    steps = cleaner.survey()
    before = state(steps)
    if module.check_mode:
        removed = [describe(kind, label) for step in steps for kind, label in step.removes]
        after = state([])
        failures = []
    else:
        removed, failures = cleaner.apply(steps)
        after = before
        if steps:
            try:
                after = state(cleaner.survey())
            except CleanError as exc:
                failures.append("reading what is left: %s" % exc)
    result = dict(changed=bool(removed), removed=removed)
    if module._diff:
        result["diff"] = {"before": before, "after": after}
    if failures:
        module.fail_json(msg="clean_network failed: %s" % "; ".join(failures), **result)
    module.exit_json(**result)


def main():
    module = AnsibleModule(argument_spec=argument_spec(), supports_check_mode=True)
    try:
        run(module)
    except CleanError as exc:
        module.fail_json(msg=str(exc), changed=False, removed=[])


if __name__ == "__main__":
    main()
