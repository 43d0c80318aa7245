"""The CNI verbs other than the plugin's ADD (``pycalico.cni.add``): the plugin's DEL,
CHECK, STATUS, GC and the ``pycalico-ipam`` verbs."""

from __future__ import annotations

import ipaddress
import logging
import os
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

from pycalico.cni import delegated, endpoint, names
from pycalico.cni.add import plugin_add
from pycalico.cni.netconf import OWN_IPAM, NetConf
from pycalico.cni.runtime import Context, Runtime, ensure_ready, resolve_nodename
from pycalico.cni.spec import CHECK_FAILED, INVALID_CONFIG, NOT_AVAILABLE, CniError, CniRequest, IPConfig, Result
from pycalico.errors import DatastoreError, PycalicoError
from pycalico.model import ClusterInformation, Node, WorkloadEndpoint, wep_name

log = logging.getLogger("pycalico.cni")


def workload_of(req: CniRequest) -> names.Workload:
    return names.workload_from(req.args, req.container_id, req.ifname)


def release_addresses(req: CniRequest, conf: NetConf, ctx: Context, w: names.Workload) -> None:
    if conf.ipam.type == OWN_IPAM:
        # Calico also releases the legacy handle (<ns>.<pod> / <containerID>) of old
        # releases; we never write one, so only when the current handle held nothing.
        released = ctx.ipam.release_by_handle(names.handle_id(conf.name, req.container_id, req.ifname))
        if not released and w.ifname == names.PRIMARY_IFNAME:
            ctx.ipam.release_by_handle(names.legacy_handle_id(w))
    else:
        delegated.release(req, conf)


def plugin_del(req: CniRequest, conf: NetConf, rt: Runtime) -> None:
    w = workload_of(req)
    host_if = names.host_veth_name(w)
    node = resolve_nodename(conf)
    ctx = rt.context(conf)
    name = wep_name(node, w.orchestrator, w.workload, w.ifname)
    has_netns = bool(req.netns) and os.path.exists(req.netns)

    def datastore_part() -> bool:
        """Release addresses and the endpoint; True when the endpoint was ours (or gone)."""
        release_addresses(req, conf, ctx, w)
        if not w.is_k8s:
            # The name carries the container id: the endpoint can only be this one's.
            ctx.store.delete(WorkloadEndpoint, name, w.namespace)
            return True
        wep = ctx.store.get(WorkloadEndpoint, name, w.namespace)
        if wep is None:
            return True
        if wep.container_id and wep.container_id != req.container_id:
            # Kubernetes: a newer sandbox of the same pod owns the endpoint now.
            return False
        ctx.store.delete(WorkloadEndpoint, name, w.namespace, resource_version=wep.resource_version)
        return True

    def dataplane_part(owned: bool | None) -> None:
        dp = rt.dataplane()
        if has_netns:
            dp.del_pod(req.netns, req.ifname, "")
        elif owned or (owned is None and not w.is_k8s):
            # No netns: delete the host veth by name only when it is ours (with the
            # datastore down, a plain-CNI one: its name comes from the container id).
            dp.del_pod("", req.ifname, host_if)

    if rt.parallel and has_netns:  # the early answer needs the helper even when busy
        # The kernel unlists a deleted veth at once but takes ~15 ms more to free it;
        # answer once it is gone from the host (and the datastore is done), not freed.
        datastore = rt.submit(datastore_part)
        removal = rt.submit(dataplane_part, None)
        rt.dataplane().wait_link_gone(host_if, removal)
        if removal.done():
            removal.result()
        else:
            removal.add_done_callback(lambda f: _log_late_failure(req, f))
        datastore.result()
        return
    owned: bool | None = None
    ds_error = None
    try:
        if not has_netns and not w.is_k8s and endpoint.claimed_by_another(ctx, node, host_if, name):
            owned = False  # a plain-CNI name shared with another container's live veth
        owned = datastore_part() and owned is not False
    except DatastoreError as exc:
        ds_error = exc
    dataplane_part(owned)
    if ds_error is not None:
        raise ds_error


def _log_late_failure(req: CniRequest, removal: Future[None]) -> None:
    if removal.exception() is not None:
        log.error("DEL %s: removing %s in %s failed after the answer: %s", req.container_id, req.ifname,
                  req.netns, removal.exception())


def _addrs_from_prev(conf: NetConf) -> list[ipaddress.IPv4Interface]:
    if not conf.prev_result:
        return []
    prev = Result.from_json(conf.prev_result)
    return [ipaddress.IPv4Interface(ip.address) for ip in prev.ips if ":" not in ip.address]


def plugin_check(req: CniRequest, conf: NetConf, rt: Runtime) -> None:
    if conf.prev_result is None:
        raise CniError(INVALID_CONFIG, "invalid network config: prevResult: required for CHECK")
    node = resolve_nodename(conf)
    ctx = rt.context(conf)
    w = workload_of(req)
    host_if = names.host_veth_name(w)
    name = wep_name(node, w.orchestrator, w.workload, w.ifname)
    wep = ctx.store.get(WorkloadEndpoint, name, w.namespace)
    if wep is None or wep.container_id != req.container_id:
        raise CniError(CHECK_FAILED, f"WorkloadEndpoint {w.namespace}/{name} is missing")
    expected = _addrs_from_prev(conf)
    have = sorted(ipaddress.IPv4Interface(n) for n in wep.ip_networks)
    if sorted(ipaddress.IPv4Interface(f"{a.ip}/32") for a in expected) != have:
        raise CniError(CHECK_FAILED, f"addresses in prevResult {[str(a) for a in expected]} differ from the "
                                     f"WorkloadEndpoint's {[str(a) for a in have]}")
    if conf.ipam.type == OWN_IPAM:
        owned = {str(ip) for ip in ctx.ipam.ips_by_handle(names.handle_id(conf.name, req.container_id, req.ifname))}
        missing = [str(a.ip) for a in have if str(a.ip) not in owned]
        if missing:
            raise CniError(CHECK_FAILED, f"addresses {missing} are not allocated to this container in IPAM")
    problems = rt.dataplane().check_pod(req.netns, req.ifname, host_if, have)
    if problems:
        raise CniError(CHECK_FAILED, "; ".join(problems))
    return None


def plugin_status(req: CniRequest, conf: NetConf, rt: Runtime) -> None:
    _status(conf, rt)
    if conf.ipam.type != OWN_IPAM:
        delegated.exec_plugin(req, conf.ipam.type, "STATUS", req.stdin)


def _status(conf: NetConf, rt: Runtime) -> None:
    try:
        node = resolve_nodename(conf)
    except CniError as exc:
        raise CniError(NOT_AVAILABLE, exc.msg) from None
    ctx = rt.context(conf)
    ctx.client.revision()  # a real round trip: the agent's cache would answer with etcd down
    info = ctx.store.get(ClusterInformation, "default")
    if info is None or not info.datastore_ready:
        raise CniError(NOT_AVAILABLE, "the datastore is not ready (ClusterInformation datastoreReady is not true)")
    if ctx.store.get(Node, node) is None:
        raise CniError(NOT_AVAILABLE, f"node {node!r} is not registered yet")


def _valid_attachments(conf: NetConf) -> set[tuple[str, str]]:
    """``cni.dev/valid-attachments`` as (containerID, ifname) pairs (a missing ifname is eth0)."""
    return {(a["containerID"], str(a.get("ifname") or names.PRIMARY_IFNAME)) for a in conf.valid_attachments or []}


def gc_ipam(conf: NetConf, ctx: Context, node: str) -> list[str]:
    """Release handles of this network on this node that belong to no valid attachment."""
    valid = {names.handle_id(conf.name, cid, ifname) for cid, ifname in _valid_attachments(conf)}
    prefix = f"{conf.name}."
    stale: set[str] = set()
    for block in ctx.ipam.blocks():
        for _, attr in block.allocated():
            handle = attr.get("handle_id") or ""
            if not handle.startswith(prefix):
                continue
            if (attr.get("secondary") or {}).get("node") != node:
                continue
            if handle not in valid:
                stale.add(handle)
    for handle in sorted(stale):
        try:
            ctx.ipam.release_by_handle(handle)
        except PycalicoError:  # keep going: GC is best effort per attachment
            log.exception("GC: releasing %s failed", handle)
    return sorted(stale)


def plugin_gc(req: CniRequest, conf: NetConf, rt: Runtime) -> None:
    node = resolve_nodename(conf)
    ctx = rt.context(conf)
    pairs = _valid_attachments(conf)
    for wep in ctx.store.list(WorkloadEndpoint):
        if wep.node != node:
            continue
        if (wep.metadata.get("annotations") or {}).get(endpoint.NETWORK_ANNOTATION) != conf.name:
            continue
        if (wep.container_id, str(wep.spec.get("endpoint", ""))) in pairs:
            continue
        try:
            ctx.store.delete(WorkloadEndpoint, wep.name, wep.namespace, resource_version=wep.resource_version)
        except PycalicoError:
            log.exception("GC: deleting endpoint %s failed", wep.name)
        if wep.spec.get("orchestrator") == "cni" and wep.interface_name:
            try:
                rt.dataplane().del_pod("", "", wep.interface_name)
            except Exception:  # noqa: BLE001
                log.exception("GC: deleting %s failed", wep.interface_name)
    if conf.ipam.type == OWN_IPAM:
        gc_ipam(conf, ctx, node)
    else:
        delegated.exec_plugin(req, conf.ipam.type, "GC", req.stdin)


# ---- pycalico-ipam verbs ----------------------------------------------------------------


def ipam_add(req: CniRequest, conf: NetConf, rt: Runtime) -> dict[str, Any]:
    node = resolve_nodename(conf)
    ctx = rt.context(conf)
    ensure_ready(ctx, node, rt, conf)
    w = workload_of(req)
    got = ctx.ipam.auto_assign(names.handle_id(conf.name, req.container_id, req.ifname), endpoint.ipam_attrs(node, w),
                               node, 1, pools=conf.ipam.ipv4_pools or None)
    return Result(ips=[IPConfig(str(i)) for i in got]).to_json(conf.cni_version)


def ipam_del(req: CniRequest, conf: NetConf, rt: Runtime) -> None:
    ctx = rt.context(conf)
    w = workload_of(req)
    ctx.ipam.release_by_handle(names.handle_id(conf.name, req.container_id, req.ifname))
    if w.ifname == names.PRIMARY_IFNAME:
        ctx.ipam.release_by_handle(names.legacy_handle_id(w))


def ipam_check(req: CniRequest, conf: NetConf, rt: Runtime) -> None:
    ctx = rt.context(conf)
    owned = {str(ip) for ip in ctx.ipam.ips_by_handle(names.handle_id(conf.name, req.container_id, req.ifname))}
    if not owned:
        raise CniError(CHECK_FAILED, f"no addresses are allocated to container {req.container_id}")
    missing = [str(a.ip) for a in _addrs_from_prev(conf) if str(a.ip) not in owned]
    if missing:
        raise CniError(CHECK_FAILED, f"addresses {missing} are not allocated to container {req.container_id}")


def ipam_status(req: CniRequest, conf: NetConf, rt: Runtime) -> None:
    _status(conf, rt)


def ipam_gc(req: CniRequest, conf: NetConf, rt: Runtime) -> None:
    gc_ipam(conf, rt.context(conf), resolve_nodename(conf))



Verb = Callable[[CniRequest, NetConf, Runtime], Any]

PLUGIN_VERBS: dict[str, Verb] = {
    "ADD": plugin_add, "DEL": plugin_del, "CHECK": plugin_check, "STATUS": plugin_status, "GC": plugin_gc,
}
IPAM_VERBS: dict[str, Verb] = {
    "ADD": ipam_add, "DEL": ipam_del, "CHECK": ipam_check, "STATUS": ipam_status, "GC": ipam_gc,
}
