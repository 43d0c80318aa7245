# -*- coding: utf-8 -*-
# Copyright (c) pycalico developers
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)
"""Desired-state logic of the pycalico.network modules, over ``pycalico.model``.

Each ``ensure_*`` reads the current resource, builds the desired one with the
model's classes, lets the model validate it (the same checks a write would
make), and writes only when not in check mode. Each returns a ``Result`` whose
before/after are the resources, so the diff is structured, not text.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import ipaddress

from ansible_collections.pycalico.network.plugins.module_utils.datastore import (
    PycalicoError,
    ValidationError,
    check_pycalico,
    comparable,
    connected,
    diff,
)

try:
    from pycalico.model import (
        KINDS,
        BGPConfiguration,
        BGPPeer,
        ClusterInformation,
        IPPool,
        Node,
        ResourceStore,
    )
    from pycalico.lifecycle import plan_node_removal, remove_node
    from pycalico.cluster import plan_claim
except ImportError:  # reported by check_pycalico()
    pass


class Result(object):
    def __init__(self, changed, before=None, after=None, **info):
        self.changed = changed
        self.before = before
        self.after = after
        self.info = info


def prepare(store, resource, creating):
    """Defaults + validation + datastore checks (pool overlap, immutable fields): what a write would do."""
    store.check(resource, creating=creating)


def same(a, b):
    return comparable(a) == comparable(b)


def write(store, current, desired, check_mode):
    """Create or compare-and-swap update ``desired``; ``current`` is what was read (or None)."""
    if check_mode:
        return desired
    if current is None:
        return store.create(desired)
    return store.update(desired)


# ---- IPPool --------------------------------------------------------------------------------------

# module option -> model field, so validation messages name the option.
POOL_FIELDS = {
    "spec.cidr": "cidr",
    "spec.blockSize": "block_size",
    "spec.ipipMode": "ipip_mode",
    "spec.vxlanMode": "vxlan_mode",
    "spec.natOutgoing": "nat_outgoing",
    "spec.disabled": "disabled",
    "spec.disableBGPExport": "disable_bgp_export",
    "spec.nodeSelector": "node_selector",
    "spec.allowedUses": "allowed_uses",
    "metadata.name": "name",
}


def pool_usage(ipam, pool):
    """(allocated addresses, blocks) of the IPAM blocks inside ``pool``."""
    net = pool.network
    addresses, blocks = 0, 0
    for block in ipam.blocks(net.version):
        if ipaddress.ip_network(block.cidr).subnet_of(net):
            blocks += 1
            addresses += len(list(block.allocated()))
    return addresses, blocks


def ensure_pool(store, ipam, name, spec, state="present", force=False, check_mode=False):
    current = store.get(IPPool, name)
    if state == "absent":
        if current is None:
            return Result(False)
        used, blocks = pool_usage(ipam, current)
        if used and not force:
            raise PycalicoError(
                "IPPool %r (%s) still has %d allocated address(es) in %d block(s): release them first "
                "(or use force=true to delete it anyway)" % (name, current.cidr, used, blocks))
        if not check_mode:
            ipam.release_pool_affinities(current)
            store.delete(IPPool, name)
        return Result(True, current, None, allocations=used)

    if current is None:
        if not spec.get("cidr"):
            raise ValidationError("spec.cidr", spec.get("cidr"), "a CIDR such as 10.244.0.0/16",
                                  reason="required to create a pool")
        desired = IPPool(name, dict(spec))
        prepare(store, desired, creating=True)
        return Result(True, None, write(store, None, desired, check_mode), allocations=0)

    desired = current.copy()
    desired.spec.update(spec)
    desired.apply_defaults()
    used, blocks = pool_usage(ipam, current)
    if same(desired, current):
        return Result(False, current, current, allocations=used)
    if _cidr_changed(current, desired):
        if used or blocks:
            raise ValidationError(
                "spec.cidr", desired.spec.get("cidr"),
                "%s (the CIDR of a pool in use cannot change)" % current.cidr,
                reason="IPPool %r has %d allocated address(es) in %d block(s); create a new pool, disable "
                       "this one and move the workloads" % (name, used, blocks))
        # Unused: replace the pool (delete, then create under the same name).
        fresh = IPPool(name, dict(desired.spec), metadata={
            k: v for k, v in desired.metadata.items()
            if k not in ("resourceVersion", "uid", "creationTimestamp")})
        prepare(store, fresh, creating=True)
        after = fresh
        if not check_mode:
            store.delete(IPPool, name, resource_version=current.resource_version)
            after = store.create(fresh)
        return Result(True, current, after, allocations=0, replaced=True)
    prepare(store, desired, creating=False)
    return Result(True, current, write(store, current, desired, check_mode), allocations=used)


def _cidr_changed(current, desired):
    try:
        return ipaddress.ip_network(str(current.cidr)) != ipaddress.ip_network(str(desired.spec.get("cidr")))
    except ValueError:
        return True


# ---- BGPPeer -------------------------------------------------------------------------------------

PEER_FIELDS = {
    "spec.peerIP": "peer_ip",
    "spec.asNumber": "as_number",
    "spec.node": "node",
    "spec.nodeSelector": "node_selector",
    "spec.peerSelector": "peer_selector",
    "spec.keepOriginalNextHop": "keep_original_next_hop",
    "spec.sourceAddress": "source_address",
    "spec.nextHopMode": "next_hop_mode",
    "spec.localASNumber": "local_as_number",
    "spec.maxRestartTime": "max_restart_time",
    "spec.numAllowedLocalASNumbers": "num_allowed_local_as_numbers",
    "spec.ttlSecurity": "ttl_security",
    "metadata.name": "name",
}


def _ensure(store, cls, name, state, check_mode, desired_from):
    """Delete for state=absent; else write ``desired_from(current)`` unless it is what is
    stored. Shared by the resources whose whole state is their spec."""
    current = store.get(cls, name)
    if state == "absent":
        if current is None:
            return Result(False)
        if not check_mode:
            store.delete(cls, name)
        return Result(True, current, None)
    desired = desired_from(current)
    prepare(store, desired, creating=current is None)
    if current is not None and same(desired, current):
        return Result(False, current, current)
    return Result(True, current, write(store, current, desired, check_mode))


def ensure_peer(store, name, spec, state="present", check_mode=False):
    """A peer's spec is exactly the options given (fields not given are removed)."""
    def desired_from(current):
        if current is None:
            return BGPPeer(name, dict(spec))
        desired = current.copy()
        desired.spec = dict(spec)
        return desired

    return _ensure(store, BGPPeer, name, state, check_mode, desired_from)


# ---- BGPConfiguration ----------------------------------------------------------------------------

BGP_CONFIG_FIELDS = {
    "spec.asNumber": "as_number",
    "spec.nodeToNodeMeshEnabled": "node_to_node_mesh",
    "spec.listenPort": "listen_port",
    "spec.logSeverityScreen": "log_severity_screen",
    "spec.bindMode": "bind_mode",
    "spec.nodeMeshMaxRestartTime": "node_mesh_max_restart_time",
    "spec.nodeMeshPassword": "node_mesh_password_secret",
    "metadata.name": "name",
}


def ensure_bgp_configuration(store, name, spec, state="present", check_mode=False):
    """Fields given are set (None: removed); fields not given are kept."""
    def desired_from(current):
        desired = BGPConfiguration(name, {}) if current is None else current.copy()
        for field, value in spec.items():
            if value is None:
                desired.spec.pop(field, None)
            else:
                desired.spec[field] = value
        return desired

    return _ensure(store, BGPConfiguration, name, state, check_mode, desired_from)


# ---- Node ----------------------------------------------------------------------------------------

NODE_FIELDS = {
    "spec.bgp.asNumber": "as_number",
    "spec.bgp.routeReflectorClusterID": "route_reflector_cluster_id",
    "metadata.labels": "labels",
    "metadata.name": "name",
}


def plan_as_dict(plan):
    return {
        "node": plan.node,
        "node_exists": plan.node_exists,
        "workload_endpoints": list(plan.workload_endpoints),
        "ips": list(plan.ips),
        "affinities": list(plan.affinities),
        "bgp_peers": list(plan.bgp_peers),
        "configs": list(plan.configs),
    }


def ensure_node_absent(store, ipam, name, check_mode=False):
    """The node and everything that names it: addresses, blocks, endpoints, peers, configs."""
    plan = plan_node_removal(store, ipam, name)
    if plan.empty:
        return Result(False, plan=plan_as_dict(plan), registered=False)
    if not check_mode:
        plan = remove_node(store, ipam, name)
    return Result(True, plan_as_dict(plan), {}, plan=plan_as_dict(plan), registered=False)


def ensure_node_present(store, name, labels=None, purge_labels=False, as_number=None, rr_cluster_id=None,
                        remove_labels=None, must_exist=True, check_mode=False):
    """Adjust labels and BGP settings of a Node the agent registered."""
    current = store.get(Node, name)
    if current is None and not must_exist:
        return Result(False, registered=False)
    if current is None:
        raise PycalicoError("Node %r is not registered (the agent registers it when it starts)" % name)
    desired = current.copy()
    if labels is not None or remove_labels:
        merged = {} if purge_labels else dict(desired.labels)
        merged.update(labels or {})
        for key in remove_labels or []:
            merged.pop(key, None)
        if merged:
            desired.metadata["labels"] = merged
        else:
            desired.metadata.pop("labels", None)
    bgp = dict(desired.spec.get("bgp") or {})
    if as_number is not None:
        if as_number == 0:
            bgp.pop("asNumber", None)
        else:
            bgp["asNumber"] = as_number
    if rr_cluster_id is not None:
        if rr_cluster_id == "":
            bgp.pop("routeReflectorClusterID", None)
        else:
            bgp["routeReflectorClusterID"] = rr_cluster_id
    if bgp or "bgp" in desired.spec:
        desired.spec["bgp"] = bgp
    prepare(store, desired, creating=False)
    if same(desired, current):
        return Result(False, current, current)
    return Result(True, current, write(store, current, desired, check_mode))


# ---- ClusterInformation --------------------------------------------------------------------------

def ensure_cluster_identity(store, cluster_name, check_mode=False):
    """Refuse a datastore that belongs to another cluster; claim it for ``cluster_name`` when unclaimed."""
    current = store.get(ClusterInformation, "default")
    desired = plan_claim(current, cluster_name)  # raises ClusterMismatch for another cluster's etcd
    if desired is None:
        return Result(False, current, current)
    prepare(store, desired, creating=current is None)
    return Result(True, current, write(store, current, desired, check_mode))


# ---- policy kinds: NetworkPolicy, GlobalNetworkPolicy, NetworkSet, GlobalNetworkSet, HostEndpoint, Profile ----

def resource_argument_spec(namespaced):
    """Options of the modules whose resource is a Calico spec given verbatim, plus labels."""
    spec = dict(
        name=dict(type="str", required=True),
        state=dict(type="str", default="present", choices=["present", "absent"]),
        spec=dict(type="dict", default={}),
        labels=dict(type="dict"),
    )
    if namespaced:
        spec["namespace"] = dict(type="str", default="default")
    return spec


def ensure_resource(store, cls, name, namespace=None, spec=None, labels=None, state="present", check_mode=False):
    """The spec is exactly ``spec`` (the model adds its defaults, e.g. a policy's types);
    labels are exactly ``labels`` when given, else kept."""
    namespace = namespace if cls.NAMESPACED else None
    current = store.get(cls, name, namespace)
    if state == "absent":
        if current is None:
            return Result(False)
        if not check_mode:
            store.delete(cls, name, namespace, resource_version=current.resource_version)
        return Result(True, current, None)
    desired = cls(name, {}, namespace=namespace) if current is None else current.copy()
    desired.spec = dict(spec or {})
    if labels is not None:
        if labels:
            desired.metadata["labels"] = dict(labels)
        else:
            desired.metadata.pop("labels", None)
    prepare(store, desired, creating=current is None)
    if current is not None and same(desired, current):
        return Result(False, current, current)
    return Result(True, current, write(store, current, desired, check_mode))


def run_resource_module(module, kind):
    """main() of a policy-kind module: ensure, then exit with the resource and its diff."""
    check_pycalico(module)
    p = module.params
    with connected(module) as client:
        result = ensure_resource(ResourceStore(client), KINDS[kind], p["name"], p.get("namespace"), p["spec"],
                                 p["labels"], state=p["state"], check_mode=module.check_mode)
    out = dict(changed=result.changed, resource=comparable(result.after))
    if module._diff:
        out["diff"] = diff(result.before, result.after)
    module.exit_json(**out)
