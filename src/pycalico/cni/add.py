"""The plugin's ADD as one transaction: named steps and one undo stack.

Steps, each undone by what it pushes:

- ``pod``      Kubernetes mode (``policy.type: k8s``): the pod's labels, profiles, service
               account, ports and address annotations, from the server's watch or a GET;
               the API unreachable fails the ADD (11) before anything is made;
- ``ready``    ClusterInformation ready, the Node known, the network's profile there;
- ``veth``     the veth pair, host side configured and up (undo: delete it);
- ``assign``   the addresses (pycalico-ipam: the endpoint goes in IPAM's etcd
               transaction, one write per ADD; a pod's ``ipAddrs`` through
               ``assign_ip``, its ``ipv4pools`` as the pools; delegated IPAM: the plugin's ADD)
               (undo: release exactly those addresses, delete that endpoint);
- ``address``  the pod's side: addresses and its default route;
- ``route``    the host's /32 route to the pod: shared with every other pod, so only
               for addresses IPAM has committed to this one;
- ``endpoint`` the WorkloadEndpoint, unless ``assign`` wrote it (undo: delete it).

Two orders, the same stack. In order (in-process, or a busy server): pod, ready, veth,
assign, address, route, endpoint. Overlapped (the server when it is not busy):
pod + ready + assign on a helper thread while this one makes the veth; the pod is addressed
with what IPAM is committing as soon as it is offered (a lost race means readdressing).
Any failure waits for the helper, then runs the stack backwards.
"""

from __future__ import annotations

import ipaddress
import logging
import threading
from collections.abc import Callable
from concurrent.futures import Future, wait
from typing import Any

from pycalico.cni import delegated, endpoint, names
from pycalico.cni.k8s import PodInfo, pod_info
from pycalico.cni.netconf import OWN_IPAM, NetConf
from pycalico.cni.runtime import Runtime, ensure_ready, resolve_mtu, resolve_nodename
from pycalico.cni.spec import CniRequest, Interface, IPConfig, Result
from pycalico.errors import KeyExists
from pycalico.model import WorkloadEndpoint, wep_name

log = logging.getLogger("pycalico.cni")

Addresses = list[ipaddress.IPv4Interface]


class _Offer:
    """The addresses IPAM is about to commit, handed from the helper thread to the one
    making the veth, so that the pod is addressed while the commit is in flight."""

    def __init__(self) -> None:
        self._ready = threading.Event()
        self.addresses: Addresses | None = None

    def offer(self, addresses: Addresses) -> None:
        self.addresses = addresses
        self._ready.set()

    def wait(self, future: Future[Any]) -> Addresses | None:
        """The offered addresses, or None once ``future`` ended without an offer."""
        future.add_done_callback(lambda _: self._ready.set())
        self._ready.wait()
        return self.addresses


class AddTransaction:
    """One ADD of the pycalico plugin (see the module docstring)."""

    def __init__(self, req: CniRequest, conf: NetConf, rt: Runtime) -> None:
        self.req, self.conf, self.rt = req, conf, rt
        self.node = resolve_nodename(conf)
        self.ctx = rt.context(conf)
        self.workload = names.workload_from(req.args, req.container_id, req.ifname)
        self.host_if = names.host_veth_name(self.workload)
        self.mtu = resolve_mtu(conf)
        self.mac = names.random_mac()
        w = self.workload
        self.endpoint_name = wep_name(self.node, w.orchestrator, w.workload, w.ifname)
        self.dp = rt.dataplane()
        self.pending: Any = None  # the dataplane's PendingPod once the veth exists
        self.addresses: Addresses = []  # committed by IPAM
        self.addressed: Addresses | None = None  # what the pod's side carries now
        self.endpoint_written = False
        self.pod: PodInfo | None = None  # Kubernetes mode, from the pod step
        self._offer = _Offer()
        self._undo: list[tuple[str, Callable[[], object]]] = []
        self._undo_lock = threading.Lock()  # the helper thread pushes too

    # ---- the transaction ---------------------------------------------------------------

    def run(self) -> dict[str, Any]:
        try:
            if self.rt.split_work():
                self._overlapped()
            else:
                self._in_order()
            self.step_endpoint()
        except BaseException:
            self.rollback()
            raise
        finally:
            if self.pending is not None:
                self.pending.release()
        self._undo.clear()
        return self.result().to_json(self.conf.cni_version)

    def _in_order(self) -> None:
        self.step_pod()
        self.step_ready()
        self.step_veth()
        self.step_assign()
        self.step_address(self.addresses)
        self.step_route()

    def _overlapped(self) -> None:
        future = self.rt.submit(self._datastore_steps)
        try:
            self.step_veth()
            guess = self._offer.wait(future)
            if guess:
                self.step_address(guess)
        finally:
            wait([future])  # its undo entries are on the stack before any rollback
        future.result()
        self.step_address(self.addresses)
        self.step_route()

    def _datastore_steps(self) -> None:
        self.step_pod()
        self.step_ready()
        self.step_assign()

    def _push(self, step: str, undo: Callable[[], object]) -> None:
        with self._undo_lock:
            self._undo.append((step, undo))

    def rollback(self) -> None:
        """Undo every step done, last first; an undo that fails is logged, the rest still run
        (the error the runtime sees is the one that started the rollback)."""
        while self._undo:
            step, undo = self._undo.pop()
            try:
                undo()
            except Exception:  # noqa: BLE001 - keep undoing
                log.exception("ADD %s: undoing %s failed", self.req.container_id, step)

    # ---- steps -------------------------------------------------------------------------

    def step_pod(self) -> None:
        if self.conf.policy_type != "k8s" or not self.workload.is_k8s:
            return
        client, cache = self.rt.kube(self.conf, self.node)
        self.pod = pod_info(client, self.workload.namespace, self.workload.workload, cache)

    def step_ready(self) -> None:
        ensure_ready(self.ctx, self.node, self.rt, self.conf,
                     profile_for_k8s=None if self.conf.policy_type else self.workload.is_k8s)

    def step_veth(self) -> None:
        def may_replace() -> bool:
            return endpoint.stale_host_veth(self.ctx, self.node, self.host_if, self.endpoint_name,
                                            self.workload.namespace)

        pending = self.dp.begin_pod(self.req.netns, self.req.ifname, self.host_if, self.mtu, self.mac, may_replace)
        self.pending = pending
        self._push("veth", lambda: self.dp.abort_pod(pending))

    def step_assign(self) -> None:
        if self.conf.ipam.type != OWN_IPAM:
            addrs = endpoint.pod_addresses(delegated.assign(self.req, self.conf))
            self._push("assign", lambda: delegated.release(self.req, self.conf))
            self.addresses = addrs
            return
        ipam = self.ctx.ipam
        handle = names.handle_id(self.conf.name, self.req.container_id, self.req.ifname)
        attrs = endpoint.ipam_attrs(self.node, self.workload)
        pools = (self.pod.ipv4_pools if self.pod else None) or self.conf.ipam.ipv4_pools or None
        fixed = self.pod.ip_addrs[0] if self.pod and self.pod.ip_addrs else ""

        if fixed:
            self._release_earlier_sandbox()

        def assign(extra_puts: Any) -> list[Any]:
            if fixed:
                return ipam.assign_ip(fixed, handle, attrs, self.node, extra_puts=extra_puts)
            return ipam.auto_assign(handle, attrs, self.node, 1, pools=pools, extra_puts=extra_puts)

        try:
            got = assign(self._endpoint_put)
            written = True
        except KeyExists:
            # An endpoint of this name exists (an earlier attempt, or this attachment's
            # first ADD): the endpoint step replaces it once the veth is known to be ours.
            got = assign(None)
            written = False
        addrs = endpoint.pod_addresses(got)
        self._push("assign", lambda: ipam.release_ips([str(a.ip) for a in addrs]))
        if written:
            self._written()
        self.addresses = addrs

    def _release_earlier_sandbox(self) -> None:
        """A fixed address held by an earlier sandbox of this pod (its endpoint, another
        container ID): released first, as Calico does, so the new sandbox can take it."""
        old = self.ctx.store.get(WorkloadEndpoint, self.endpoint_name, self.workload.namespace)
        if old is not None and old.container_id != self.req.container_id and old.ip_networks:
            log.info("ADD %s: releasing %s of the pod's earlier sandbox %s", self.req.container_id,
                     old.ip_networks, old.container_id)
            self.ctx.ipam.release_ips([network.split("/")[0] for network in old.ip_networks])

    def _endpoint_put(self, assigned: list[Any]) -> dict[str, str]:
        """The endpoint for the addresses IPAM's transaction is about to commit."""
        addrs = endpoint.pod_addresses(assigned)
        key, value = self.ctx.store.put_for(self.build_endpoint(addrs))
        self._offer.offer(addrs)
        return {key: value}

    def step_address(self, addrs: Addresses) -> None:
        if self.addressed is None:
            self.dp.address_pod(self.pending, addrs)
        elif self.addressed != addrs:  # IPAM lost a race and took other addresses
            log.info("ADD %s: IPAM took %s, not %s; readdressing the pod", self.req.container_id,
                     [str(a.ip) for a in addrs], [str(a.ip) for a in self.addressed])
            self.dp.readdress_pod(self.pending, self.addressed, addrs)
        self.addressed = addrs

    def step_route(self) -> None:
        self.dp.route_to_pod(self.pending, self.addresses)  # undone with the veth

    def step_endpoint(self) -> None:
        if not self.endpoint_written:
            endpoint.write(self.ctx, self.build_endpoint(self.addresses))
            self._written()

    def _written(self) -> None:
        self.endpoint_written = True
        self._push("endpoint", lambda: endpoint.undo(self.ctx, self.endpoint_name, self.workload.namespace,
                                                     self.req.container_id))

    # ---- what it writes and answers ----------------------------------------------------

    def build_endpoint(self, addrs: Addresses) -> Any:
        return endpoint.build(self.conf, self.node, self.workload, self.host_if, self.mac, addrs, self.pod)

    def result(self) -> Result:
        return Result(
            interfaces=[Interface(self.host_if, "ee:ee:ee:ee:ee:ee"),
                        Interface(self.req.ifname, self.mac, self.req.netns, self.mtu)],
            ips=[IPConfig(f"{a.ip}/32", 1) for a in self.addresses],
        )


def plugin_add(req: CniRequest, conf: NetConf, rt: Runtime) -> dict[str, Any]:
    return AddTransaction(req, conf, rt).run()
