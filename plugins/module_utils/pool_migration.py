# -*- coding: utf-8 -*-
# Copyright (c) pycalico developers
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)
"""Moving a cluster from one IP pool to another (playbooks/migrate-pool.yml).

One run: create the new pool with the old one's settings, disable the old one (the
IPAM skips disabled pools, also their affine blocks, for new addresses), report what
still holds addresses in it, and delete it once nothing does. Re-running is the way
to finish: the report shrinks as workloads are recreated, then the old pool goes.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import ipaddress

from ansible_collections.pycalico.network.plugins.module_utils.datastore import (
    PycalicoError,
    ValidationError,
    comparable,
)
from ansible_collections.pycalico.network.plugins.module_utils.resources import Result, ensure_pool, pool_usage

try:
    from pycalico.model import IPPool, WorkloadEndpoint
except ImportError:  # reported by check_pycalico()
    pass

# Settings the new pool inherits from the old one.
INHERITED = ("blockSize", "ipipMode", "vxlanMode", "natOutgoing", "nodeSelector", "disableBGPExport", "allowedUses")

FOLLOW_UP = (
    "the pod CIDR known outside Calico must follow: kube-proxy's clusterCIDR (--cluster-cidr), "
    "kube-controller-manager's --cluster-cidr if it allocates node CIDRs, and the inventory's "
    "CLUSTER_CIDR / CALICO_IPV4POOL_CIDR (kubeasz) so that network.yml keeps the new pool"
)


def default_pool_name(cidr):
    """A name for the new pool derived from its CIDR: 10.245.0.0/16 -> ippool-10-245-0-0-16."""
    return "ippool-" + str(cidr).replace(".", "-").replace(":", "-").replace("/", "-")


def _network(field, value):
    try:
        return ipaddress.ip_network(str(value), strict=True)
    except ValueError:
        raise ValidationError(field, value, "a network CIDR such as 10.245.0.0/16 (host bits zero)") from None


def workloads_in(store, cidr):
    """The WorkloadEndpoints with an address in ``cidr``: what must be recreated."""
    net = ipaddress.ip_network(cidr)
    found = []
    for wep in store.list(WorkloadEndpoint):
        ips = [n for n in wep.ip_networks
               if ipaddress.ip_network(n, strict=False).version == net.version
               and ipaddress.ip_network(n, strict=False).subnet_of(net)]
        if not ips:
            continue
        entry = {"namespace": wep.namespace, "name": wep.name, "node": wep.node,
                 "orchestrator": str(wep.spec.get("orchestrator") or ""), "ips": ips}
        if entry["orchestrator"] == "k8s":
            entry["pod"] = "%s/%s" % (wep.namespace, wep.spec.get("pod") or wep.spec.get("workload") or "")
        found.append(entry)
    return sorted(found, key=lambda e: (e["namespace"] or "", e["name"]))


def allocations_in(ipam, cidr):
    """Every allocated address in ``cidr`` with its handle and attributes (pods, tunnel addresses)."""
    net = ipaddress.ip_network(cidr)
    out = []
    for block in ipam.blocks(net.version):
        if not ipaddress.ip_network(block.cidr).subnet_of(net):
            continue
        for ordinal, attrs in block.allocated():
            out.append({"ip": str(block.address(ordinal)), "handle": block.handle_of(ordinal) or "",
                        "attributes": dict((attrs or {}).get("secondary") or {})})
    return sorted(out, key=lambda a: ipaddress.ip_address(a["ip"]))


def _check_cidr(store, old, new_name, new_net):
    if old is not None and new_net == old.network:
        raise ValidationError("NEW_CIDR", str(new_net), "a CIDR other than the old pool's %s" % old.cidr,
                              reason="the new pool must be a different range")
    for pool in store.list(IPPool):
        if pool.name == new_name or new_net.version != pool.network.version:
            continue
        if new_net.overlaps(pool.network):
            raise ValidationError("NEW_CIDR", str(new_net), "a CIDR that overlaps no other pool",
                                  reason="it overlaps IPPool %r (%s)" % (pool.name, pool.cidr))


def migrate_pool(store, ipam, old_name, new_cidr, new_name=None, overrides=None, delete_old=False,
                 check_mode=False):
    """Create the new pool, disable the old, report, delete the old one when empty.

    ``delete_old`` refuses (raises) while anything is still allocated in the old pool,
    instead of leaving it for a later run."""
    new_net = _network("NEW_CIDR", new_cidr)
    new_name = new_name or default_pool_name(new_net)
    if new_name == old_name:
        raise ValidationError("NEW_POOL_NAME", new_name, "a name other than the old pool's")
    old = store.get(IPPool, old_name)
    existing_new = store.get(IPPool, new_name)
    if existing_new is not None and existing_new.network != new_net:
        raise ValidationError("NEW_POOL_NAME", new_name, "a name not used by another pool",
                              reason="IPPool %r exists with CIDR %s" % (new_name, existing_new.cidr))
    if old is None and existing_new is None:
        raise PycalicoError("IPPool %r (OLD_POOL) does not exist, and neither does %r: nothing to migrate from"
                            % (old_name, new_name))
    _check_cidr(store, old, new_name, new_net)

    changed = False
    before = {"old_pool": comparable(old), "new_pool": comparable(existing_new)}
    spec = {"cidr": str(new_net), "disabled": False}
    if old is not None:
        spec.update({k: old.spec[k] for k in INHERITED if k in old.spec})
    spec.update(overrides or {})
    created = ensure_pool(store, ipam, new_name, spec, check_mode=check_mode)
    changed |= created.changed
    new_pool = created.after

    report = {"workloads": [], "allocations": [], "old_pool_deleted": old is None}
    old_after = old
    if old is not None:
        disabled = ensure_pool(store, ipam, old_name, {"disabled": True}, check_mode=check_mode)
        changed |= disabled.changed
        old_after = disabled.after
        report["workloads"] = workloads_in(store, old.cidr)
        report["allocations"] = allocations_in(ipam, old.cidr)
        used, dummy = pool_usage(ipam, old)
        if used and delete_old:
            raise PycalicoError(
                "IPPool %r (%s) still has %d allocated address(es); DELETE_OLD refused. Recreate: %s"
                % (old_name, old.cidr, used, ", ".join(_describe(w) for w in report["workloads"]) or
                   ", ".join("%s (%s)" % (a["ip"], a["handle"]) for a in report["allocations"])))
        if not used:
            ensure_pool(store, ipam, old_name, {}, state="absent", check_mode=check_mode)
            changed = True
            old_after = None
            report["old_pool_deleted"] = True

    report["recreate"] = [w.get("pod") or _describe(w) for w in report["workloads"]]
    report["follow_up"] = FOLLOW_UP
    after = {"old_pool": comparable(old_after), "new_pool": comparable(new_pool)}
    return Result(changed, before, after, **report)


def _describe(workload):
    return workload.get("pod") or "%s/%s on %s" % (workload["namespace"], workload["name"], workload["node"])
