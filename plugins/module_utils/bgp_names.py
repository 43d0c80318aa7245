# -*- coding: utf-8 -*-
# Copyright (c) pycalico developers
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)
"""Names the collection gives the inventory's external BGP peers and their password secrets
(used on the node by the bgp_peers module, on the deploy host by the bgp_* filters)."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import re

MESH_SECRET = "pycalico-mesh"
SECRET_KEY = "password"


def peer_name(peer):
    """pycalico-ext-<node or global>-<address>, a valid resource name; also its password secret's name."""
    scope = peer.get("node") or "global"
    return re.sub(r"[^a-z0-9.-]", "-", ("pycalico-ext-%s-%s" % (scope, peer["peer_ip"])).lower())


def has_password(peer):
    return bool(peer.get("password") or peer.get("password_file"))
