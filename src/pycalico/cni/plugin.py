"""The CNI verbs of ``pycalico`` (the network plugin) and ``pycalico-ipam``.

``execute(role, env, stdin, runtime)`` is the one entry point. The launcher calls it
in-process, the fast-path server calls it in the agent; both get the same
``(exit_code, stdout)``. Errors never escape as tracebacks: they become spec JSON.
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import logging
import os
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from pycalico.cni import names
from pycalico.cni.cache import CachingEtcdClient, ReconnectingEtcdClient
from pycalico.cni.netconf import OWN_IPAM, NetConf, parse_netconf
from pycalico.cni.spec import (
    CHECK_FAILED,
    DATAPLANE,
    DELEGATE_FAILED,
    INTERNAL,
    INVALID_CONFIG,
    LATEST,
    NETNS_UNUSABLE,
    NO_ADDRESSES,
    NOT_AVAILABLE,
    NOT_READY,
    TRY_AGAIN_LATER,
    UNKNOWN_NODE,
    CniError,
    CniRequest,
    Interface,
    IPConfig,
    Result,
    check_verb_version,
    config_version,
    decode_config,
    version_result,
)
from pycalico.datastore.etcd import EtcdClient, TlsConfig
from pycalico.datastore.syncer import Syncer
from pycalico.errors import (
    DataplaneError,
    DatastoreError,
    DatastoreUnavailable,
    IPAMError,
    KeyExists,
    NetnsError,
    NotReady,
    PoolExhausted,
    PycalicoError,
    ResourceExists,
    ResourceNotFound,
    ValidationError,
)
from pycalico.ipam import IPAM
from pycalico.model import ClusterInformation, Node, Profile, ResourceStore, WorkloadEndpoint, wep_name

log = logging.getLogger("pycalico.cni")
# Without a handler Python would print warnings to stderr ("last resort"): the plugin's
# stderr stays empty; its log goes to log_file_path (and, in the agent, to the agent's log).
log.addHandler(logging.NullHandler())

NETWORK_ANNOTATION = "pycalico.io/network"
PLUGIN = "plugin"
IPAM_ROLE = "ipam"


# ---- runtime: what lives across requests (warm in the server, fresh in-process) -------------


@dataclass
class Context:
    """Clients for one datastore (one set of etcd endpoints and TLS files)."""

    client: EtcdClient
    store: ResourceStore
    ipam: IPAM


class Runtime:
    """Caches shared by requests: datastore contexts, per-thread netlink handles.

    ``parallel`` (the server) runs IPAM and veth creation at the same time.
    ``ready_ttl`` caches a positive ClusterInformation/Node check for that long.
    """

    def __init__(self, *, parallel: bool = False, ready_ttl: float = 0.0, mirror: bool = False,
                 syncer: Syncer | None = None) -> None:
        self.parallel = parallel
        self.mirror = mirror
        self.syncer = syncer  # the agent's: mirror through its watches when it serves our etcd
        self.ready_ttl = ready_ttl
        self._contexts: dict[tuple[str, ...], Context] = {}
        self._lock = threading.Lock()
        self._local = threading.local()
        self._ready: dict[tuple[Any, ...], float] = {}
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

    def ready_cached(self, key: tuple[Any, ...]) -> bool:
        if self.ready_ttl <= 0:
            return False
        until = self._ready.get(key)
        return until is not None and until > time.monotonic()

    def mark_ready(self, key: tuple[Any, ...]) -> None:
        if self.ready_ttl > 0:
            self._ready[key] = time.monotonic() + self.ready_ttl

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
        for ctx in self._contexts.values():
            if isinstance(ctx.client, CachingEtcdClient):
                ctx.client.stop_mirror()
            ctx.client.close()
        dp = getattr(self._local, "dataplane", None)
        if dp is not None:
            dp.close()


# ---- entry point --------------------------------------------------------------------------


def execute(role: str, env: dict[str, str], stdin: bytes, runtime: Runtime) -> tuple[int, str]:
    """Run one CNI invocation; returns (exit code, stdout text)."""
    version = LATEST
    command = env.get("CNI_COMMAND", "")
    try:
        req = CniRequest.from_env(env, stdin)
        if req.command == "VERSION":
            try:
                raw = decode_config(stdin) if stdin.strip() else {}
            except CniError:
                raw = {}
            v = raw.get("cniVersion")
            return 0, json.dumps(version_result(v if isinstance(v, str) and v else LATEST))
        raw = decode_config(stdin)
        if isinstance(raw.get("cniVersion"), str) and raw["cniVersion"]:
            version = raw["cniVersion"]
        version = config_version(raw)
        check_verb_version(req.command, version)
        conf = parse_netconf(raw, version)
        runtime.setup_logging(conf)
        verbs = IPAM_VERBS if role == IPAM_ROLE else PLUGIN_VERBS
        started = time.monotonic()
        runtime.begin_request()
        try:
            out = verbs[req.command](req, conf, runtime)
        finally:
            runtime.end_request()
        log.info("%s %s %s ok in %.1f ms", role, req.command, req.container_id,
                 (time.monotonic() - started) * 1000)
        return 0, json.dumps(out) if out is not None else ""
    except BaseException as exc:  # noqa: BLE001 - every error becomes spec JSON
        err = to_cni_error(exc, command)
        if err.code >= INTERNAL and not isinstance(exc, CniError | PycalicoError):
            log.exception("%s %s failed", role, command)
        else:
            log.warning("%s %s failed: code %d: %s", role, command, err.code, err.msg)
        return err.code, json.dumps(err.to_json(version))


def to_cni_error(exc: BaseException, command: str = "") -> CniError:
    """The one mapping from pycalico errors to CNI codes."""
    if isinstance(exc, CniError):
        return exc
    if isinstance(exc, DatastoreUnavailable):
        code = NOT_AVAILABLE if command == "STATUS" else TRY_AGAIN_LATER
        return CniError(code, "datastore unreachable, try again later", exc.detail)
    if isinstance(exc, ValidationError):
        return CniError(INVALID_CONFIG, f"invalid value: {exc}")
    if isinstance(exc, NotReady):
        return CniError(NOT_AVAILABLE if command == "STATUS" else NOT_READY, str(exc))
    if isinstance(exc, PoolExhausted):
        return CniError(NO_ADDRESSES, str(exc))
    if isinstance(exc, IPAMError):
        return CniError(NO_ADDRESSES, f"IPAM: {exc}")
    if isinstance(exc, DatastoreError):
        return CniError(TRY_AGAIN_LATER if command != "STATUS" else NOT_AVAILABLE, f"datastore error: {exc}")
    if isinstance(exc, NetnsError):
        return CniError(NETNS_UNUSABLE, str(exc))
    if isinstance(exc, DataplaneError):
        return CniError(DATAPLANE, str(exc))
    if isinstance(exc, PycalicoError):
        return CniError(INTERNAL, str(exc))
    if isinstance(exc, KeyboardInterrupt | SystemExit):
        return CniError(INTERNAL, "interrupted")
    return CniError(INTERNAL, f"internal error: {type(exc).__name__}: {exc}")


# ---- shared helpers ------------------------------------------------------------------------


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


def ensure_ready(ctx: Context, node: str, runtime: Runtime, conf: NetConf,
                 workload: names.Workload | None = None) -> None:
    """ClusterInformation.datastoreReady must be true, the Node must exist, and (for a
    workload without a policy type) the network's profile too, made once per process."""
    if workload is not None and not conf.policy_type:
        profile_key = (*conf.datastore_key, conf.name)
        if profile_key not in runtime.profiles_ensured:
            ensure_network_profile(ctx, conf, k8s=workload.is_k8s)
            runtime.profiles_ensured.add(profile_key)
    key = (*conf.datastore_key, node)
    if runtime.ready_cached(key):
        return
    info = ctx.store.get(ClusterInformation, "default")
    if info is None or not info.datastore_ready:
        raise NotReady("the datastore is not ready (ClusterInformation 'default' "
                       f"{'is missing' if info is None else 'has datastoreReady=false'}); refusing to add pods")
    if ctx.store.get(Node, node) is None:
        raise CniError(UNKNOWN_NODE, f"node {node!r} is not registered in the datastore; "
                                     "check that pycalico-agent is running on this node")
    runtime.mark_ready(key)


def network_profile(conf: NetConf, *, k8s: bool) -> Profile:
    """The profile Calico's plugin makes for a network when no policy type is set: egress
    allowed; ingress allowed (for plain CNI containers only from the network's members)."""
    ingress: dict[str, Any] = {"action": "Allow"}
    if not k8s:
        ingress["source"] = {"selector": f"has({conf.name})"}
    return Profile(conf.name, {"ingress": [ingress], "egress": [{"action": "Allow"}],
                               "labelsToApply": {conf.name: ""}})


def ensure_network_profile(ctx: Context, conf: NetConf, *, k8s: bool) -> None:
    if ctx.store.get(Profile, conf.name) is not None:
        return
    try:
        ctx.store.create(network_profile(conf, k8s=k8s))
    except ResourceExists:
        pass


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M:%S.%f +0000 UTC")


def ipam_attrs(node: str, w: names.Workload) -> dict[str, str]:
    attrs = {"node": node, "timestamp": _now()}
    if w.is_k8s:
        attrs["pod"] = w.workload
        attrs["namespace"] = w.namespace
    return attrs


# ---- delegated IPAM (any type other than pycalico-ipam), executed per spec -----------------


def find_plugin(req: CniRequest, ptype: str) -> str:
    for directory in req.path:
        candidate = os.path.join(directory, ptype)
        if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    raise CniError(INVALID_CONFIG, f"invalid network config: ipam.type: plugin {ptype!r} not found in "
                                   f"CNI_PATH {req.path}")


def exec_plugin(req: CniRequest, ptype: str, command: str, stdin: bytes) -> dict[str, Any] | None:
    binary = find_plugin(req, ptype)
    env = {k: v for k, v in os.environ.items() if not k.startswith("CNI_")}
    env.update({k: v for k, v in req.env.items() if k.startswith("CNI_")})
    env["CNI_COMMAND"] = command
    try:
        proc = subprocess.run([binary], input=stdin, env=env, capture_output=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise CniError(DELEGATE_FAILED, f"delegated plugin {ptype} failed to run: {exc}") from None
    out = proc.stdout.strip()
    if proc.returncode != 0:
        try:
            err = json.loads(out)
            raise CniError(int(err.get("code") or DELEGATE_FAILED), f"{ptype}: {err.get('msg', '')}",
                           str(err.get("details", "")))
        except (ValueError, AttributeError, TypeError):
            raise CniError(DELEGATE_FAILED, f"{ptype} exited {proc.returncode}: "
                                            f"{proc.stderr.decode(errors='replace')[-300:]}") from None
    if not out:
        return None
    try:
        return json.loads(out)
    except ValueError:
        raise CniError(DELEGATE_FAILED, f"{ptype} printed a result that is not JSON") from None


# ---- IPAM steps used by both roles ----------------------------------------------------------


def ipam_assign(req: CniRequest, conf: NetConf) -> list[ipaddress.IPv4Interface]:
    """A delegated IPAM plugin's IPv4 addresses for this attachment (block-masked)."""
    result = exec_plugin(req, conf.ipam.type, "ADD", req.stdin) or {}
    parsed = Result.from_json(result)
    out = [ipaddress.ip_interface(ip.address) for ip in parsed.ips]
    v4 = [i for i in out if i.version == 4]
    if not v4:
        exec_plugin(req, conf.ipam.type, "DEL", req.stdin)
        raise CniError(NO_ADDRESSES, f"IPAM plugin {conf.ipam.type} returned no IPv4 address")
    return v4  # type: ignore[return-value]


def ipam_undo(req: CniRequest, conf: NetConf, ctx: Context, assigned: list[ipaddress.IPv4Interface]) -> None:
    """Roll back an ADD's assignment: only the addresses this ADD took."""
    try:
        if conf.ipam.type == OWN_IPAM:
            if assigned:
                ctx.ipam.release_ips([str(a.ip) for a in assigned])
        else:
            exec_plugin(req, conf.ipam.type, "DEL", req.stdin)
    except Exception:  # noqa: BLE001 - the original error is what the runtime must see
        log.exception("rolling back IPAM for %s failed", req.container_id)


def ipam_release(req: CniRequest, conf: NetConf, ctx: Context, w: names.Workload) -> None:
    if conf.ipam.type == OWN_IPAM:
        # Calico also releases the legacy handle (<ns>.<pod> / <containerID>) of old
        # releases; we never write one, so only when the current handle held nothing.
        released = ctx.ipam.release_by_handle(names.handle_id(conf.name, req.container_id, req.ifname))
        if not released and w.ifname == names.PRIMARY_IFNAME:
            ctx.ipam.release_by_handle(names.legacy_handle_id(w))
    else:
        exec_plugin(req, conf.ipam.type, "DEL", req.stdin)


# ---- pycalico (network plugin) verbs --------------------------------------------------------


def _workload(req: CniRequest) -> names.Workload:
    return names.workload_from(req.args, req.container_id, req.ifname)


def _wep(conf: NetConf, node: str, w: names.Workload, host_if: str, mac: str,
         addrs: list[ipaddress.IPv4Interface]) -> WorkloadEndpoint:
    spec: dict[str, Any] = {
        "orchestrator": w.orchestrator,
        "node": node,
        "containerID": w.container_id,
        "endpoint": w.ifname,
        "ipNetworks": [f"{a.ip}/32" for a in addrs],
        "profiles": [f"kns.{w.namespace}"] if w.is_k8s and conf.policy_type == "k8s" else [conf.name],
        "interfaceName": host_if,
        "mac": mac,
    }
    if w.is_k8s:
        spec["pod"] = w.workload
        spec["workload"] = ""
    else:
        spec["workload"] = w.workload
    return WorkloadEndpoint(wep_name(node, w.orchestrator, w.workload, w.ifname), spec, namespace=w.namespace,
                            metadata={"annotations": {NETWORK_ANNOTATION: conf.name}})


def _result(req: CniRequest, host_if: str, mac: str, mtu: int, addrs: list[ipaddress.IPv4Interface]) -> Result:
    return Result(
        interfaces=[Interface(host_if, "ee:ee:ee:ee:ee:ee"), Interface(req.ifname, mac, req.netns, mtu)],
        ips=[IPConfig(f"{a.ip}/32", 1) for a in addrs],
    )


class _Offer:
    """The addresses IPAM is about to commit, handed from the datastore thread to the
    dataplane thread so that the pod is addressed while the commit is in flight."""

    def __init__(self) -> None:
        self._ready = threading.Event()
        self.addresses: list[ipaddress.IPv4Interface] | None = None

    def offer(self, addresses: list[ipaddress.IPv4Interface]) -> None:
        self.addresses = addresses
        self._ready.set()

    def wait(self, future: Any) -> list[ipaddress.IPv4Interface] | None:
        """The offered addresses, or None once ``future`` ended without an offer."""
        future.add_done_callback(lambda _: self._ready.set())
        self._ready.wait()
        return self.addresses


def plugin_add(req: CniRequest, conf: NetConf, rt: Runtime) -> dict[str, Any]:
    node = resolve_nodename(conf)
    ctx = rt.context(conf)
    w = _workload(req)
    host_if = names.host_veth_name(w)
    mtu = resolve_mtu(conf)
    mac = names.random_mac()
    dp = rt.dataplane()
    offer = _Offer()
    endpoint = _EndpointWriter(ctx, conf, node, w, host_if, mac)

    def may_replace() -> bool:
        return stale_host_veth(ctx, node, host_if, endpoint.name, w.namespace)

    def endpoint_put(assigned: list[Any]) -> dict[str, str]:
        """The endpoint, created in IPAM's transaction (one etcd write per ADD)."""
        addrs = _pod_addresses(assigned)
        key, value = ctx.store.put_for(endpoint.build(addrs))
        offer.offer(addrs)
        return {key: value}

    def datastore_part(check_ready: bool = True) -> list[ipaddress.IPv4Interface]:
        """Readiness, addresses, and the endpoint when it can go with them."""
        if check_ready:
            ensure_ready(ctx, node, rt, conf, w)
        if conf.ipam.type != OWN_IPAM:
            return _pod_addresses(ipam_assign(req, conf))
        handle, attrs = names.handle_id(conf.name, req.container_id, req.ifname), ipam_attrs(node, w)
        pools = conf.ipam.ipv4_pools or None
        try:
            got = ctx.ipam.auto_assign(handle, attrs, node, 1, pools=pools, extra_puts=endpoint_put)
            endpoint.written = True
        except KeyExists:
            # An endpoint of this name exists (an earlier attempt, or this attachment's
            # first ADD): replace it only once the veth is known to be ours.
            got = ctx.ipam.auto_assign(handle, attrs, node, 1, pools=pools)
        return _pod_addresses(got)

    def undo_datastore(addrs: list[ipaddress.IPv4Interface]) -> None:
        if endpoint.written:
            _undo_wep(ctx, endpoint.name, w.namespace, req.container_id)
        ipam_undo(req, conf, ctx, addrs)

    def complete(pending: Any, addrs: list[ipaddress.IPv4Interface],
                 guess: list[ipaddress.IPv4Interface] | None) -> None:
        """The pod's addresses (unless ``guess`` put them there), the host's routes and
        the endpoint, now that IPAM has committed ``addrs``; all undone on failure."""
        try:
            if guess is None:
                dp.address_pod(pending, addrs)
            elif addrs != guess:  # IPAM lost a race and took other addresses
                log.info("ADD %s: IPAM took %s, not %s; readdressing the pod", req.container_id,
                         [str(a.ip) for a in addrs], [str(a.ip) for a in guess])
                dp.readdress_pod(pending, guess, addrs)
            dp.route_to_pod(pending, addrs)
            endpoint.ensure(addrs)
            pending.release()
        except BaseException:
            dp.abort_pod(pending)
            undo_datastore(addrs)
            raise

    if rt.split_work():
        # The datastore on a helper thread while this one builds the veth, then addresses
        # the pod's side with what IPAM is committing (a lost race means swapping it); the
        # host's route only once the address is ours: another pod may hold a guess.
        future = rt.submit(datastore_part)
        try:
            pending = dp.begin_pod(req.netns, req.ifname, host_if, mtu, mac, may_replace)
        except BaseException:
            try:
                undo_datastore(future.result())
            except BaseException:  # noqa: BLE001 - the dataplane error wins
                pass
            raise
        try:
            guess = offer.wait(future)
            if guess:
                dp.address_pod(pending, guess)
            addrs = future.result()
        except BaseException:
            dp.abort_pod(pending)
            try:
                done: list[ipaddress.IPv4Interface] | None = future.result()
            except BaseException:  # noqa: BLE001 - the first error is the one to report
                done = None
            if done is not None:
                undo_datastore(done)
            raise
        complete(pending, addrs, guess)
    else:
        ensure_ready(ctx, node, rt, conf, w)
        pending = dp.begin_pod(req.netns, req.ifname, host_if, mtu, mac, may_replace)
        try:
            addrs = datastore_part(check_ready=False)
        except BaseException:
            dp.abort_pod(pending)
            raise
        complete(pending, addrs, None)
    return _result(req, host_if, mac, mtu, addrs).to_json(conf.cni_version)


def _pod_addresses(assigned: Sequence[Any]) -> list[ipaddress.IPv4Interface]:
    """IPAM's block-masked IPv4 addresses as the pod's /32s."""
    return [ipaddress.IPv4Interface(f"{a.ip}/32") for a in assigned if a.version == 4]


class _EndpointWriter:
    """The attachment's WorkloadEndpoint: built for given addresses, written at most once."""

    def __init__(self, ctx: Context, conf: NetConf, node: str, w: names.Workload, host_if: str, mac: str) -> None:
        self.ctx, self.conf, self.node, self.w, self.host_if, self.mac = ctx, conf, node, w, host_if, mac
        self.name = wep_name(node, w.orchestrator, w.workload, w.ifname)
        self.written = False

    def build(self, addrs: list[ipaddress.IPv4Interface]) -> WorkloadEndpoint:
        return _wep(self.conf, self.node, self.w, self.host_if, self.mac, addrs)

    def ensure(self, addrs: list[ipaddress.IPv4Interface]) -> None:
        """Write it now unless IPAM's transaction did (delegated IPAM, a replaced endpoint)."""
        if not self.written:
            write_wep(self.ctx, self.build(addrs))
            self.written = True


def stale_host_veth(ctx: Context, node: str, host_if: str, name: str, namespace: str) -> bool:
    """Whether an existing host veth named ``host_if`` may be deleted for this attachment:
    only when endpoints claim it and every one is this attachment's own endpoint (an earlier
    sandbox of the same pod interface, which this ADD replaces, as Calico does). A veth no
    endpoint claims may be another attachment's ADD in flight: never deleted."""
    owners = [wep for wep in ctx.store.list(WorkloadEndpoint)
              if wep.node == node and wep.interface_name == host_if]
    return bool(owners) and all((wep.name, wep.namespace) == (name, namespace) for wep in owners)


def _claimed_by_another(ctx: Context, node: str, host_if: str, name: str) -> bool:
    return any(wep.node == node and wep.interface_name == host_if and wep.name != name
               for wep in ctx.store.list(WorkloadEndpoint))


def write_wep(ctx: Context, wep: WorkloadEndpoint) -> None:
    try:
        ctx.store.create(wep)
    except ResourceExists:
        # A stale endpoint of an earlier attempt (its interface is gone, or we would
        # have failed above): this attachment replaces it.
        ctx.store.apply(wep)


def _undo_wep(ctx: Context, name: str, namespace: str, container_id: str) -> None:
    try:
        current = ctx.store.get(WorkloadEndpoint, name, namespace)
        if current is not None and current.container_id == container_id:
            ctx.store.delete(WorkloadEndpoint, name, namespace, resource_version=current.resource_version)
    except PycalicoError:
        log.exception("rolling back endpoint %s failed", name)


def plugin_del(req: CniRequest, conf: NetConf, rt: Runtime) -> None:
    w = _workload(req)
    host_if = names.host_veth_name(w)
    node = resolve_nodename(conf)
    ctx = rt.context(conf)
    name = wep_name(node, w.orchestrator, w.workload, w.ifname)
    has_netns = bool(req.netns) and os.path.exists(req.netns)

    def datastore_part() -> bool:
        """Release addresses and the endpoint; True when the endpoint was ours (or gone)."""
        ipam_release(req, conf, ctx, w)
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
        if not has_netns and not w.is_k8s and _claimed_by_another(ctx, node, host_if, name):
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
    w = _workload(req)
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
        exec_plugin(req, conf.ipam.type, "STATUS", req.stdin)


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
        if (wep.metadata.get("annotations") or {}).get(NETWORK_ANNOTATION) != conf.name:
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
        exec_plugin(req, conf.ipam.type, "GC", req.stdin)


# ---- pycalico-ipam verbs ----------------------------------------------------------------


def ipam_add(req: CniRequest, conf: NetConf, rt: Runtime) -> dict[str, Any]:
    node = resolve_nodename(conf)
    ctx = rt.context(conf)
    ensure_ready(ctx, node, rt, conf)
    w = _workload(req)
    got = ctx.ipam.auto_assign(names.handle_id(conf.name, req.container_id, req.ifname), ipam_attrs(node, w),
                               node, 1, pools=conf.ipam.ipv4_pools or None)
    return Result(ips=[IPConfig(str(i)) for i in got]).to_json(conf.cni_version)


def ipam_del(req: CniRequest, conf: NetConf, rt: Runtime) -> None:
    ctx = rt.context(conf)
    w = _workload(req)
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

__all__ = ["Runtime", "execute", "to_cni_error", "ResourceNotFound"]
