"""The CNI's Kubernetes mode: what the API server says about the pod being added
(calico-kubernetes.md §1-2, Calico's ``k8s.go`` and pod → WorkloadEndpoint conversion).

With ``kubernetes.kubeconfig`` and ``policy.type: k8s`` in the network config, the
WorkloadEndpoint carries the pod's labels plus Calico's implicit ones, the profiles
``kns.<namespace>`` and ``ksa.<namespace>.<serviceaccount>``, the named container ports,
and the address choices of the ``cni.projectcalico.org/ipAddrs`` and ``…/ipv4pools``
annotations (the pod's, else its namespace's).

The client is the standard library on purpose: the plugin runs as a fresh process per
call, a Kubernetes client library costs ~200 ms to import (docs/kubernetes.md) and nodes
do not carry one. It reads a kubeconfig (inline or file CA, client certificate or token)
and makes plain GETs; an API server it cannot reach is ``KubeUnavailable``, which the
plugin returns as "try again later" (code 11) — never a pod without its labels.
"""

from __future__ import annotations

import base64
import http.client
import ipaddress
import json
import os
import ssl
import tempfile
import threading
import urllib.parse
from dataclasses import dataclass, field
from typing import Any

from pycalico.errors import AnnotationError, KubeError, KubeUnavailable

IP_ADDRS_ANNOTATION = "cni.projectcalico.org/ipAddrs"
IPV4_POOLS_ANNOTATION = "cni.projectcalico.org/ipv4pools"
NAMESPACE_LABEL = "projectcalico.org/namespace"
ORCHESTRATOR_LABEL = "projectcalico.org/orchestrator"
SERVICE_ACCOUNT_LABEL = "projectcalico.org/serviceaccount"


@dataclass(frozen=True)
class PodInfo:
    namespace: str
    name: str
    labels: dict[str, str]
    profiles: list[str]
    service_account: str
    ports: list[dict[str, Any]] = field(default_factory=list)
    ip_addrs: list[str] = field(default_factory=list)
    ipv4_pools: list[str] = field(default_factory=list)


def _inline_or_file(entry: dict[str, Any], data_key: str, file_key: str, base: str, tmp: list[str]) -> str:
    if entry.get(data_key):
        handle, path = tempfile.mkstemp(prefix="pycalico-kube-")
        with os.fdopen(handle, "wb") as out:
            out.write(base64.b64decode(entry[data_key]))
        tmp.append(path)
        return path
    value = str(entry.get(file_key) or "")
    return value if not value or os.path.isabs(value) else os.path.join(base, value)


class KubeClient:
    """GETs against the API server of a kubeconfig's current context."""

    def __init__(self, kubeconfig: str, *, timeout: float = 5.0) -> None:
        import yaml  # only in Kubernetes mode: the plain CNI path does not pay for it

        try:
            with open(kubeconfig, encoding="utf-8") as fh:
                config = yaml.safe_load(fh) or {}
        except OSError as exc:
            raise KubeError(f"kubernetes.kubeconfig {kubeconfig!r}: {exc.strerror}") from None
        except yaml.YAMLError as exc:
            raise KubeError(f"kubernetes.kubeconfig {kubeconfig!r}: not YAML ({exc})") from None
        base = os.path.dirname(os.path.abspath(kubeconfig))

        def named(section: str, name: str) -> dict[str, Any]:
            for item in config.get(section) or []:
                if isinstance(item, dict) and item.get("name") == name:
                    return dict(item.get(section[:-1]) or {})
            raise KubeError(f"kubernetes.kubeconfig {kubeconfig!r}: no {section[:-1]} named {name!r}")

        context = named("contexts", str(config.get("current-context") or ""))
        cluster = named("clusters", str(context.get("cluster") or ""))
        user = named("users", str(context.get("user") or ""))
        url = urllib.parse.urlsplit(str(cluster.get("server") or ""))
        if url.scheme != "https" or not url.hostname:
            raise KubeError(f"kubernetes.kubeconfig {kubeconfig!r}: server {cluster.get('server')!r} is not https")
        self.host, self.port, self.timeout = url.hostname, url.port or 443, timeout
        self._tmp: list[str] = []
        try:
            ctx = ssl.create_default_context(cafile=_inline_or_file(
                cluster, "certificate-authority-data", "certificate-authority", base, self._tmp) or None)
            cert = _inline_or_file(user, "client-certificate-data", "client-certificate", base, self._tmp)
            key = _inline_or_file(user, "client-key-data", "client-key", base, self._tmp)
            if cert:
                ctx.load_cert_chain(cert, key or None)
        except (OSError, ssl.SSLError) as exc:
            raise KubeError(f"kubernetes.kubeconfig {kubeconfig!r}: TLS material: {exc}") from None
        finally:
            for path in self._tmp:
                os.unlink(path)
        self.ssl = ctx
        token = user.get("token")
        if not token and user.get("tokenFile"):
            with open(str(user["tokenFile"]), encoding="utf-8") as fh:
                token = fh.read().strip()
        self.headers = {"Accept": "application/json"}
        if token:
            self.headers["Authorization"] = f"Bearer {token}"
        self._conn: http.client.HTTPSConnection | None = None
        self._lock = threading.Lock()  # one kept-alive connection, shared by the mirrors' threads

    def get(self, path: str) -> dict[str, Any] | None:
        """The object at ``path``, or None when it does not exist (404)."""
        with self._lock:
            return self._get(path)

    def _get(self, path: str) -> dict[str, Any] | None:
        try:
            if self._conn is None:
                self._conn = http.client.HTTPSConnection(self.host, self.port, timeout=self.timeout,
                                                         context=self.ssl)
            self._conn.request("GET", path, headers=self.headers)
            resp = self._conn.getresponse()
            body = resp.read()
        except (OSError, http.client.HTTPException) as exc:
            conn, self._conn = self._conn, None
            if conn is not None:
                conn.close()
            raise KubeUnavailable(f"Kubernetes API {self.host}:{self.port} unreachable: {exc}") from None
        if resp.status == 404:
            return None
        if resp.status >= 500 or resp.status == 429:
            raise KubeUnavailable(f"Kubernetes API {self.host}:{self.port}: HTTP {resp.status} for {path}")
        if resp.status != 200:
            raise KubeError(f"Kubernetes API {self.host}:{self.port}: HTTP {resp.status} for {path}: "
                            f"{body[:200].decode(errors='replace')}")
        try:
            data = json.loads(body)
        except ValueError:
            raise KubeUnavailable(f"Kubernetes API {self.host}:{self.port}: not JSON for {path}") from None
        return data if isinstance(data, dict) else None

    def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()


def _json_list(value: str, what: str) -> list[str]:
    try:
        items = json.loads(value)
    except ValueError:
        items = None
    if not isinstance(items, list) or not all(isinstance(i, str) for i in items):
        raise AnnotationError(f"annotation {what}", value, 'a JSON list of strings, e.g. ["10.244.1.5"]')
    return items


def _fixed_addresses(value: str) -> list[str]:
    """``ipAddrs``: at most one IPv4 address (IPv6 ones are not ours to assign: ignored)."""
    out = []
    for item in _json_list(value, IP_ADDRS_ANNOTATION):
        try:
            addr = ipaddress.ip_address(item)
        except ValueError:
            raise AnnotationError(f"annotation {IP_ADDRS_ANNOTATION}", value,
                                  'a JSON list of IP addresses, e.g. ["10.244.1.5"]') from None
        if addr.version == 4:
            out.append(str(addr))
    if len(out) > 1:
        raise AnnotationError(f"annotation {IP_ADDRS_ANNOTATION}", value, "at most one IPv4 address")
    return out


def container_ports(pod: dict[str, Any]) -> list[dict[str, Any]]:
    """Named container ports as WorkloadEndpoint ports (Calico's ``appendEndpointPorts``)."""
    out = []
    for container in (pod.get("spec") or {}).get("containers") or []:
        for port in container.get("ports") or []:
            if port.get("name") and port.get("containerPort"):
                out.append({"name": str(port["name"]), "port": int(port["containerPort"]),
                            "protocol": str(port.get("protocol") or "TCP").upper()})
    return out


def pod_info(client: KubeClient, namespace: str, name: str, cache: Any = None) -> PodInfo:
    """What the WorkloadEndpoint needs of the pod; ``cache`` (a ``k8s_cache.PodCache``) answers
    without a round trip when its watch already delivered the pod and namespace."""
    pod = cache.pod(namespace, name) if cache is not None else None
    if pod is None:
        pod = client.get(f"/api/v1/namespaces/{urllib.parse.quote(namespace)}/pods/{urllib.parse.quote(name)}")
    if pod is None:
        raise KubeError(f"pod {namespace}/{name} not found in the Kubernetes API")
    meta = pod.get("metadata") or {}
    annotations = dict(meta.get("annotations") or {})
    service_account = str((pod.get("spec") or {}).get("serviceAccountName") or "default")
    labels = {str(k): str(v) for k, v in (meta.get("labels") or {}).items()}
    labels.update({NAMESPACE_LABEL: namespace, ORCHESTRATOR_LABEL: "k8s", SERVICE_ACCOUNT_LABEL: service_account})
    ip_addrs = _fixed_addresses(annotations[IP_ADDRS_ANNOTATION]) if IP_ADDRS_ANNOTATION in annotations else []
    pools: list[str] = []
    if IPV4_POOLS_ANNOTATION in annotations:
        pools = _json_list(annotations[IPV4_POOLS_ANNOTATION], IPV4_POOLS_ANNOTATION)
    elif not ip_addrs:
        ns = (cache.namespace(namespace) if cache is not None else None) or \
            client.get(f"/api/v1/namespaces/{urllib.parse.quote(namespace)}") or {}
        ns_annotations = (ns.get("metadata") or {}).get("annotations") or {}
        if IPV4_POOLS_ANNOTATION in ns_annotations:
            pools = _json_list(ns_annotations[IPV4_POOLS_ANNOTATION], f"{IPV4_POOLS_ANNOTATION} of namespace "
                                                                      f"{namespace}")
    return PodInfo(namespace, name, labels, [f"kns.{namespace}", f"ksa.{namespace}.{service_account}"],
                   service_account, container_ports(pod), ip_addrs, pools)
