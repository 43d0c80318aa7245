#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) pycalico developers
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: etcd_auth
short_description: etcd users, roles and key permissions, then auth on, without locking anyone out
version_added: "0.1.0"
description:
  - Makes the etcd's C(root) user (with O(root_password)), the O(roles) with exactly the given key permissions
    and the O(users) with their roles, and only then turns authentication on (O(auth_enabled)). Whoever is listed
    keeps access across the switch; kube-apiserver's user exists with its role before auth is on.
  - Users get no password. etcd names a gRPC client (kube-apiserver, etcdctl, Calico's Go client) by the Common
    Name of its client certificate, so a user is the CN of the certificate it stands for.
  - The JSON gateway (pycalico's own client, and this module) is different. With auth on it refuses every client
    certificate that carries a CN; a certificate without CN is, without a token, the user named by the CN of the
    member's own certificate (the one the gateway presents to etcd). O(gateway_role) is granted to those users,
    so pycalico's nodes (certificates without CN) reach exactly what that role allows.
  - This module talks to the gateway as C(root) with O(root_password) once auth is on; O(etcd_cert_file) must then
    have no CN. It needs only the Python standard library (no C(pycalico) package), so it can run on the deploy host.
  - Only the named roles and users are looked at. Permissions of a named role that are not in O(roles) are revoked;
    roles a named user holds beyond the listed ones are kept, except on gateway users, where they are refused.
author:
  - pycalico developers (@pycalico)
extends_documentation_fragment:
  - pycalico.network.etcd.attributes
options:
  etcd_endpoints:
    description: etcd client URLs, for example C(https://192.168.1.1:2379); the first that answers is used.
    type: list
    elements: str
    required: true
  etcd_ca_cert_file:
    description: CA certificate that signed the etcd server certificates. Required with C(https) endpoints.
    type: path
  etcd_cert_file:
    description:
      - Client certificate for the gateway. Once auth is on (or turned on here) it must have no Common Name.
    type: path
  etcd_key_file:
    description: Private key of O(etcd_cert_file). Only the path is passed around.
    type: path
  root_password:
    description:
      - Password of the etcd C(root) user. Set on C(root) when this module creates it, and on an existing C(root)
        in the run that turns auth on (with auth off it cannot be checked). Never logged.
    type: str
    required: true
  roles:
    description: Roles and their key permissions, exactly (others of these roles are revoked).
    type: list
    elements: dict
    default: []
    suboptions:
      name:
        description: Role name.
        type: str
        required: true
      permissions:
        description: Key permissions.
        type: list
        elements: dict
        default: []
        suboptions:
          prefix:
            description: Every key starting with this (for example C(/calico/)).
            type: str
          key:
            description: Exactly this key (for example C(compact_rev_key)).
            type: str
          type:
            description: Access granted.
            type: str
            choices: [read, write, readwrite]
            default: readwrite
  users:
    description: Users (named by their client certificate's CN) and the roles they must hold.
    type: list
    elements: dict
    default: []
    suboptions:
      name:
        description: User name, the Common Name of the client certificate.
        type: str
        required: true
      roles:
        description: Roles granted to the user.
        type: list
        elements: str
        default: []
  gateway_role:
    description:
      - Role for the users the JSON gateway acts as (O(gateway_users)). Such a user may hold no other role.
    type: str
  gateway_users:
    description:
      - Names of those users. Default the Common Names of the server certificates that the O(etcd_endpoints) present.
    type: list
    elements: str
  auth_enabled:
    description: Authentication on (after every user and role is in place) or off.
    type: bool
    default: true
notes:
  - The JSON gateway behaviour described above is etcd 3.4's (Debian bookworm's C(etcd-server)) and is checked by
    the collection's tests.
"""

EXAMPLES = r"""
- name: RBAC for a shared etcd, then auth on
  pycalico.network.etcd_auth:
    etcd_endpoints: ["https://192.168.1.1:2379"]
    etcd_ca_cert_file: "{{ cluster_dir }}/ssl/ca.pem"
    etcd_cert_file: "{{ cluster_dir }}/ssl/pycalico.pem"
    etcd_key_file: "{{ cluster_dir }}/ssl/pycalico-key.pem"
    root_password: "{{ lookup('ansible.builtin.file', cluster_dir ~ '/etcd-root-password') }}"
    roles:
      - name: pycalico
        permissions:
          - prefix: /calico/
      - name: kube-apiserver
        permissions:
          - prefix: /registry/
          - key: compact_rev_key
    users:
      - name: kubernetes
        roles: [kube-apiserver]
    gateway_role: pycalico
  delegate_to: localhost
  run_once: true
"""

RETURN = r"""
auth_enabled:
  description: Whether auth is on after the run (or would be, in check mode).
  returned: always
  type: bool
  sample: true
actions:
  description: What was done (or would be done in check mode), in order.
  returned: always
  type: list
  elements: str
  sample: ["add role pycalico", "grant readwrite on prefix /calico/ to role pycalico", "enable auth"]
gateway_users:
  description: The users the JSON gateway acts as, given O(gateway_role).
  returned: always
  type: list
  elements: str
  sample: ["etcd-192.168.1.1"]
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.pycalico.network.plugins.module_utils.etcd_auth import (
    AuthGateway,
    EtcdAuthError,
    certificate_common_name,
    comparable,
    desired_from_options,
    expected,
    plan_changes,
    read_state,
    validate,
)


def argument_spec():
    return dict(
        etcd_endpoints=dict(type="list", elements="str", required=True),
        etcd_ca_cert_file=dict(type="path"),
        etcd_cert_file=dict(type="path"),
        etcd_key_file=dict(type="path", no_log=False),
        root_password=dict(type="str", required=True, no_log=True),
        roles=dict(type="list", elements="dict", default=[], options=dict(
            name=dict(type="str", required=True),
            permissions=dict(type="list", elements="dict", default=[], options=dict(
                prefix=dict(type="str"),
                key=dict(type="str", no_log=False),
                type=dict(type="str", choices=["read", "write", "readwrite"], default="readwrite"),
            ), mutually_exclusive=[("prefix", "key")], required_one_of=[("prefix", "key")]),
        )),
        users=dict(type="list", elements="dict", default=[], options=dict(
            name=dict(type="str", required=True),
            roles=dict(type="list", elements="str", default=[]),
        )),
        gateway_role=dict(type="str"),
        gateway_users=dict(type="list", elements="str"),
        auth_enabled=dict(type="bool", default=True),
    )


def run(module, gateway):
    p = module.params
    password = p["root_password"]
    if not password:
        module.fail_json(msg="root_password is empty: give the etcd root user's password")
    will_be_on = p["auth_enabled"]
    cert = p.get("etcd_cert_file")
    if cert and will_be_on:
        cn = certificate_common_name(cert)
        if cn:
            module.fail_json(msg="etcd_cert_file %s has Common Name %r; with auth on etcd's JSON gateway refuses "
                                 "client certificates that carry a CN (this module's and pycalico's). Use a "
                                 "certificate without CN (the certs role issues pycalico.pem so)" % (cert, cn))
    auth_on = gateway.login(password)
    gateway_users = p["gateway_users"]
    if p.get("gateway_role") and gateway_users is None:
        gateway_users = gateway.member_common_names()
    desired = desired_from_options(p, gateway_users or [])
    state = read_state(gateway, desired)
    errors = validate(desired, state)
    if errors:
        module.fail_json(msg="; ".join(errors))
    plan = plan_changes(desired, state, auth_on, password)
    before = comparable(state, auth_on)
    done = []
    if not module.check_mode:
        for description, action in plan.steps:
            try:
                action(gateway)
            except EtcdAuthError as exc:
                module.fail_json(msg="%s failed: %s" % (description, exc), actions=done)
            done.append(description)
            if description == "enable auth":
                # From now on only root's token opens the gateway: prove it before returning.
                if not gateway.login(password):
                    module.fail_json(msg="auth was enabled but etcd still says it is off", actions=done)
            elif description == "disable auth":
                gateway.token = None
        after_on = will_be_on if plan.steps else auth_on
        after = comparable(read_state(gateway, desired), after_on) if plan.steps else before
    else:
        done = plan.descriptions
        after = comparable(expected(desired, state), will_be_on)
    result = dict(changed=bool(plan.steps), actions=done, auth_enabled=after["auth_enabled"],
                  gateway_users=list(desired.gateway_users))
    if module._diff:
        result["diff"] = {"before": before, "after": after}
    module.exit_json(**result)


def main():
    module = AnsibleModule(argument_spec=argument_spec(), supports_check_mode=True)
    p = module.params
    try:
        gateway = AuthGateway(p["etcd_endpoints"], p.get("etcd_ca_cert_file"), p.get("etcd_cert_file"),
                              p.get("etcd_key_file"))
        run(module, gateway)
    except EtcdAuthError as exc:
        module.fail_json(msg=str(exc))
    except (OSError, ValueError) as exc:
        module.fail_json(msg="etcd_auth: %s" % exc)


if __name__ == "__main__":
    main()
