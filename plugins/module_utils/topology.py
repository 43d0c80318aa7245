# -*- coding: utf-8 -*-
# Copyright (c) pycalico developers
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)
"""External BGP peers from the inventory as one set: the peers given exist as given, and the
peers this collection made earlier (they carry MANAGED_LABEL) that are no longer given go.
Peers made by hand (no label) are never touched."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ansible_collections.pycalico.network.plugins.module_utils.bgp_names import SECRET_KEY, peer_name
from ansible_collections.pycalico.network.plugins.module_utils.datastore import ValidationError, comparable
from ansible_collections.pycalico.network.plugins.module_utils.resources import Result, prepare, same, write

try:
    from pycalico.model import BGPPeer
except ImportError:  # reported by check_pycalico()
    pass

MANAGED_LABEL = "pycalico.io/inventory-peer"


def desired_peers(peers):
    out = {}
    for i, peer in enumerate(peers):
        if not peer.get("peer_ip"):
            raise ValidationError("peers[%d].peer_ip" % i, peer.get("peer_ip"), "the router's address")
        if not peer.get("as_number"):
            raise ValidationError("peers[%d].as_number" % i, peer.get("as_number"), "the router's AS number")
        spec = {"peerIP": str(peer["peer_ip"]), "asNumber": int(peer["as_number"])}
        if peer.get("node"):
            spec["node"] = str(peer["node"])
        for option, field in (("keep_original_next_hop", "keepOriginalNextHop"), ("source_address", "sourceAddress"),
                              ("max_restart_time", "maxRestartTime"), ("ttl_security", "ttlSecurity")):
            if peer.get(option) is not None:
                spec[field] = peer[option]
        if peer.get("password") or peer.get("password_file"):
            raise ValidationError("peers[%d].password" % i, "(hidden)",
                                  "no password here: password_secret, the name of the secret the bgp role installs "
                                  "(the pycalico.network.bgp_peer_refs filter turns password/password_file into it)")
        if peer.get("password_secret"):
            spec["password"] = {"secretKeyRef": {"name": str(peer["password_secret"]), "key": SECRET_KEY}}
        out[peer_name(peer)] = spec
    return out


def ensure_peer_set(store, peers, check_mode=False):
    """Create/update the given peers (labelled), delete the labelled ones not given."""
    wanted = desired_peers(peers)
    current = {p.name: p for p in store.list(BGPPeer)}
    created, updated, deleted = [], [], []
    before, after = {}, {}
    for name, spec in sorted(wanted.items()):
        old = current.get(name)
        desired = BGPPeer(name, dict(spec)) if old is None else old.copy()
        desired.spec = dict(spec)
        desired.metadata["labels"] = dict(desired.metadata.get("labels") or {}, **{MANAGED_LABEL: "true"})
        prepare(store, desired, creating=old is None)
        if old is not None and same(desired, old):
            continue
        before[name], after[name] = comparable(old), comparable(desired)
        write(store, old, desired, check_mode)
        (created if old is None else updated).append(name)
    for name, old in sorted(current.items()):
        if name in wanted or (old.metadata.get("labels") or {}).get(MANAGED_LABEL) != "true":
            continue
        before[name], after[name] = comparable(old), {}
        if not check_mode:
            store.delete(BGPPeer, name, resource_version=old.resource_version)
        deleted.append(name)
    return Result(bool(created or updated or deleted), before, after, created=created, updated=updated,
                  deleted=deleted, names=sorted(wanted))
