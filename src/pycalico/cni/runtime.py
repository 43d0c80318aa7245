"""What lives across CNI requests: datastore contexts, netlink handles, readiness.

Warm in the fast-path server (one ``Runtime`` for the agent's life), fresh per call
in-process. Also the per-request facts every verb resolves the same way: the node's
name, the pod MTU, and whether the cluster is ready for pods.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from pycalico.cni.cache import CachingEtcdClient, ReconnectingEtcdClient
from pycalico.cni.netconf import NetConf
from pycalico.cni.spec import UNKNOWN_NODE, CniError
from pycalico.datastore.etcd import EtcdClient, TlsConfig
from pycalico.datastore.syncer import Syncer
from pycalico.errors import NotReady, ResourceExists
from pycalico.ipam import IPAM
from pycalico.model import ClusterInformation, Node, Profile, ResourceStore, keys

log = logging.getLogger("pycalico.cni")
# Without a handler Python would print warnings to stderr ("last resort"): the plugin's
# stderr stays empty; its log goes to log_file_path (and, in the agent, to the agent's log).
log.addHandler(logging.NullHandler())


@dataclass
class Context:
    """Clients for one datastore (one set of etcd endpoints and TLS files)."""

    client: EtcdClient
    store: ResourceStore
    ipam: IPAM


class Runtime:
    """Caches shared by requests: datastore contexts, per-thread netlink handles.

    ``parallel`` (the server) runs IPAM and veth creation at the same time.
    """

    def __init__(self, *, parallel: bool = False, mirror: bool = False,
                 syncer: Syncer | None = None) -> None:
        self.parallel = parallel
        self.mirror = mirror
        self.syncer = syncer  # the agent's: mirror through its watches when it serves our etcd
        self._contexts: dict[tuple[str, ...], Context] = {}
        self._kube: dict[str, tuple[Any, Any]] = {}  # kubeconfig → (KubeClient, PodCache or None)
        self._lock = threading.Lock()
        self._local = threading.local()
        self.profiles_ensured: set[tuple[Any, ...]] = set()  # network profiles known to exist
        self._pool: ThreadPoolExecutor | None = ThreadPoolExecutor(24, "cni-io") if parallel else None
        self._log_files: set[str] = set()
        self._active = 0
        self.split_below = int(os.environ.get("PYCALICO_CNI_SPLIT_BELOW", "2"))

    def context(self, conf: NetConf) -> Context:
        key = (*conf.datastore_key, os.path.dirname(conf.ipam_lock_file))
        with self._lock:
            ctx = self._contexts.get(key)
            if ctx is None:
                tls = TlsConfig(conf.etcd_ca_cert_file, conf.etcd_cert_file, conf.etcd_key_file) \
                    if conf.etcd_ca_cert_file else None
                cls = CachingEtcdClient if self.mirror else ReconnectingEtcdClient
                client = cls(list(conf.etcd_endpoints), tls, timeout=5.0, connect_timeout=2.0)
                if isinstance(client, CachingEtcdClient):
                    shared = self.syncer if self.syncer and self.syncer.serves(conf.etcd_endpoints) else None
                    client.start_mirror(syncer=shared)
                ctx = Context(client, ResourceStore(client), IPAM(client, lock_dir=key[-1] or None))
                self._contexts[key] = ctx
            return ctx

    def kube(self, conf: NetConf, node: str) -> tuple[Any, Any]:
        """Kubernetes mode: the API client for the config's kubeconfig and, in the server
        (``mirror``), the watch of this node's pods, namespaces and service accounts that
        answers an ADD without a round trip. Imported only in Kubernetes mode."""
        with self._lock:
            found = self._kube.get(conf.kubeconfig)
            if found is None:
                from pycalico.cni.k8s import KubeClient

                client = KubeClient(conf.kubeconfig)
                cache = None
                if self.mirror:
                    from pycalico.cni.k8s_cache import PodCache

                    cache = PodCache(KubeClient(conf.kubeconfig), node).start()
                found = self._kube[conf.kubeconfig] = (client, cache)
            return found

    def dataplane(self) -> Any:
        dp = getattr(self._local, "dataplane", None)
        if dp is None:
            from pycalico.cni.dataplane import Dataplane

            dp = Dataplane()
            self._local.dataplane = dp
        return dp

    def begin_request(self) -> None:
        with self._lock:
            self._active += 1

    def end_request(self) -> None:
        with self._lock:
            self._active -= 1

    def split_work(self) -> bool:
        """Run a request's datastore and netlink halves side by side only while the
        server is not busy: with many requests in flight the CPU is the limit and the
        hand-offs between threads only add latency."""
        return self.parallel and self._active <= self.split_below

    def submit(self, fn: Callable[..., Any], *args: Any) -> Any:
        assert self._pool is not None
        return self._pool.submit(fn, *args)

    def setup_logging(self, conf: NetConf) -> None:
        level = getattr(logging, conf.log_level.upper(), logging.INFO)
        if log.level != level:
            log.setLevel(level)
        path = conf.log_file_path
        if not path or path in self._log_files:
            return
        with self._lock:
            if path in self._log_files:
                return
            self._log_files.add(path)
            try:
                os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
                handler = logging.FileHandler(path)
            except OSError:
                return  # logging must never break the plugin
            handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s [%(process)d] %(message)s"))
            log.addHandler(handler)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False)
        for client, cache in self._kube.values():
            if cache is not None:
                cache.stop()
            client.close()
        for ctx in self._contexts.values():
            if isinstance(ctx.client, CachingEtcdClient):
                ctx.client.stop_mirror()
            ctx.client.close()
        dp = getattr(self._local, "dataplane", None)
        if dp is not None:
            dp.close()



def resolve_nodename(conf: NetConf) -> str:
    if conf.nodename:
        return conf.nodename
    try:
        with open(conf.nodename_file) as f:
            name = f.read().strip()
    except OSError:
        name = ""
    if not name:
        raise CniError(UNKNOWN_NODE, f"node name unknown: {conf.nodename_file} is missing or empty; "
                                     "check that pycalico-agent is running (it writes that file)")
    return name


def resolve_mtu(conf: NetConf) -> int:
    if conf.mtu:
        return conf.mtu
    try:
        with open(conf.mtu_file) as f:
            value = int(f.read().strip())
        if 68 <= value <= 65535:
            return value
    except (OSError, ValueError):
        pass
    return 1500




def ensure_ready(ctx: Context, node: str, runtime: Runtime, conf: NetConf, *,
                 profile_for_k8s: bool | None = None) -> None:
    """ClusterInformation.datastoreReady must be true and the Node must exist; with
    ``profile_for_k8s`` set (a workload on a network without a policy type) the network's
    profile too, made once per process. One round trip (the server's mirror answers the
    first two from memory)."""
    profile_key = (*conf.datastore_key, conf.name)
    want_profile = profile_for_k8s is not None and profile_key not in runtime.profiles_ensured
    ranges = [(keys.resource_key(ClusterInformation.PLURAL, "default"), False),
              (keys.resource_key(Node.PLURAL, node), False)]
    if want_profile:
        ranges.append((keys.resource_key(Profile.PLURAL, conf.name), False))
    found = ctx.client.read_many(ranges)
    info = ClusterInformation.from_json(found[0][0].json()) if found[0] else None
    if info is None or not info.datastore_ready:
        raise NotReady("the datastore is not ready (ClusterInformation 'default' "
                       f"{'is missing' if info is None else 'has datastoreReady=false'}); refusing to add pods")
    if not found[1]:
        raise CniError(UNKNOWN_NODE, f"node {node!r} is not registered in the datastore; "
                                     "check that pycalico-agent is running on this node")
    if want_profile:
        if not found[2]:
            try:
                ctx.store.create(network_profile(conf, k8s=bool(profile_for_k8s)))
            except ResourceExists:
                pass
        runtime.profiles_ensured.add(profile_key)


def network_profile(conf: NetConf, *, k8s: bool) -> Profile:
    """The profile Calico's plugin makes for a network when no policy type is set: egress
    allowed; ingress allowed (for plain CNI containers only from the network's members)."""
    ingress: dict[str, Any] = {"action": "Allow"}
    if not k8s:
        ingress["source"] = {"selector": f"has({conf.name})"}
    return Profile(conf.name, {"ingress": [ingress], "egress": [{"action": "Allow"}],
                               "labelsToApply": {conf.name: ""}})
