# -*- coding: utf-8 -*-
# Copyright (c) pycalico developers
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)
"""The inventory's external BGP routers and their passwords, on the deploy host.

A router's password (kubespray's C(password), or C(password_file) on the deploy host) never
goes into etcd or a module's arguments: the bgp role installs it on the nodes that peer with
the router as C(/etc/pycalico/bgp-secrets/<secret>/password) (0600), and the BGPPeer refers
to it as Calico's C(password.secretKeyRef) does.
"""

from __future__ import annotations

from ansible.errors import AnsibleFilterError

from ansible_collections.pycalico.network.plugins.module_utils.bgp_names import (
    MESH_SECRET,
    SECRET_KEY,
    has_password,
    peer_name,
)


def kubespray_peers(hosts, hostvars):
    """kubespray's per-host ``peers`` ({router_id, as, scope: global|node, password?, password_file?})
    of ``hosts`` as bgp_peers entries ({peer_ip, as_number, node, password?, password_file?})."""
    out = []
    for host in hosts or []:
        host_vars = hostvars[host]
        for i, p in enumerate(host_vars.get("peers") or []):
            if not p.get("router_id") or not p.get("as"):
                raise AnsibleFilterError("peers[%d] of %s: %r needs router_id and as (kubespray's format)" % (
                    i, host, {k: v for k, v in p.items() if k != "password"}))
            entry = {"peer_ip": str(p["router_id"]), "as_number": int(p["as"]),
                     "node": None if p.get("scope", "node") == "global" else host_vars.get("pycalico_nodename", host)}
            for key in ("password", "password_file"):
                if p.get(key):
                    entry[key] = p[key]
            out.append(entry)
    return out


def bgp_peer_refs(peers):
    """The peers as the bgp_peers module takes them: password/password_file replaced by
    password_secret, the name of the secret the bgp role installs."""
    out = []
    for p in peers or []:
        entry = {k: v for k, v in p.items() if k not in ("password", "password_file")}
        if has_password(p):
            entry["password_secret"] = peer_name(p)
        out.append(entry)
    return out


def bgp_secrets(peers, nodename, mesh_password_file=""):
    """The password secrets one node needs: [{name, key, file | value}] for the mesh (when
    ``mesh_password_file``) and for every router with a password that peers with the node."""
    out = {}
    if mesh_password_file:
        out[MESH_SECRET] = {"name": MESH_SECRET, "key": SECRET_KEY, "file": str(mesh_password_file)}
    for p in peers or []:
        if not has_password(p) or (p.get("node") and p["node"] != nodename):
            continue
        name = peer_name(p)
        out[name] = {"name": name, "key": SECRET_KEY}
        if p.get("password_file"):
            out[name]["file"] = str(p["password_file"])
        else:
            out[name]["value"] = str(p["password"])
    return [out[k] for k in sorted(out)]


class FilterModule(object):
    def filters(self):
        return {"kubespray_peers": kubespray_peers, "bgp_peer_refs": bgp_peer_refs, "bgp_secrets": bgp_secrets}
