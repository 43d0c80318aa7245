# -*- coding: utf-8 -*-
# Copyright (c) pycalico developers
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)

from __future__ import absolute_import, division, print_function

__metaclass__ = type


class ModuleDocFragment(object):
    # The etcd connection shared by every pycalico.network module.
    DOCUMENTATION = r"""
options:
  etcd_endpoints:
    description:
      - etcd client URLs, for example C(https://192.168.1.1:2379); several endpoints fail over.
      - On a node these are the C(ETCD_ENDPOINTS) of C(/etc/pycalico/pycalico.env).
    type: list
    elements: str
    required: true
  etcd_ca_cert_file:
    description:
      - CA certificate that signed the etcd server certificates. Required with C(https) endpoints.
    type: path
  etcd_cert_file:
    description:
      - Client certificate for etcd (mutual TLS). Required with C(https) endpoints.
    type: path
  etcd_key_file:
    description:
      - Private key of O(etcd_cert_file). Only the path is passed around, never the key.
    type: path
requirements:
  - The C(pycalico) Python package on the host that runs the module (the C(node) role installs it in
    C(/opt/pycalico/current); set C(ansible_python_interpreter=/opt/pycalico/current/bin/python3)).
notes:
  - The module is a thin front end over the C(pycalico) data model, which validates every resource.
"""

    ATTRIBUTES = r"""
attributes:
  check_mode:
    description: Can run in check_mode and return changed status prediction without modifying the datastore.
    support: full
  diff_mode:
    description: Will return details on what has changed (or would change in check mode) as before and after resource documents.
    support: full
"""
