"""The Kubernetes API as the controllers (and the CNI's Kubernetes mode) use it: list in pages,
watch from a resourceVersion with bookmarks, get one object, /healthz.

lightkube supplies the kubeconfig handling (client certificates, tokens, exec plugins, the
cluster CA) and the resource paths; objects travel as the API's own JSON dicts, so nothing is
decoded into models the controllers do not need. Its high-level ``watch`` neither asks for
bookmarks nor reports a 410 to the caller (it silently restarts from "now", which would lose
the events in between), so watches are sent through its request builder instead.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from typing import Any

import httpx2
import lightkube
from lightkube.config.kubeconfig import KubeConfig
from lightkube.core.generic_client import ALL_NS
from lightkube.resources.core_v1 import Namespace, Node, Pod, ServiceAccount
from lightkube.resources.networking_v1 import NetworkPolicy

from pycalico import errors
from pycalico.errors import PycalicoError

log = logging.getLogger(__name__)

RESOURCES: dict[str, Any] = {
    "namespaces": Namespace, "nodes": Node, "pods": Pod, "serviceaccounts": ServiceAccount,
    "networkpolicies": NetworkPolicy,
}
NAMESPACED = {"pods", "serviceaccounts", "networkpolicies"}
Obj = dict[str, Any]


class KubeError(PycalicoError):
    """The API server answered with an error Status."""

    def __init__(self, code: int, reason: str, message: str) -> None:
        super().__init__(f"Kubernetes API: {code} {reason}: {message}")
        self.code, self.reason, self.message = code, reason, message


class KubeUnavailable(errors.KubeUnavailable):
    """The API server could not be reached (network, TLS, timeout)."""

    def __init__(self, server: str, detail: str) -> None:
        super().__init__(f"Kubernetes API unreachable at {server}: {detail}")
        self.server, self.detail = server, detail


class Gone(KubeError):
    """410: the resourceVersion (or continue token) is older than the server keeps; re-list."""


def _status_error(code: int, body: Any) -> KubeError:
    reason, message = "", ""
    if isinstance(body, dict):
        reason, message = str(body.get("reason") or ""), str(body.get("message") or "")
    cls = Gone if code == 410 else KubeError
    return cls(code, reason, message)


class KubeApi:
    """One client for one API server; thread-safe as httpx clients are."""

    def __init__(self, kubeconfig: str = "", *, timeout: float = 10.0) -> None:
        config = KubeConfig.from_file(kubeconfig) if kubeconfig else KubeConfig.from_env()
        self.timeout = timeout
        self._client = lightkube.Client(config, timeout=httpx2.Timeout(timeout), trust_env=False)
        self._generic = self._client._client  # request builder and transport (lightkube's own)
        self.server = str(self._client.config.cluster.server)

    def close(self) -> None:
        self._client.close()

    # ---- transport -----------------------------------------------------------------------
    def _request(self, method: str, plural: str, *, name: str | None = None, namespace: str | None = None,
                 params: dict[str, Any] | None = None, watch: bool = False,
                 read_timeout: float | None = None) -> httpx2.Response:
        res = RESOURCES[plural]
        if plural in NAMESPACED and namespace is None:
            namespace = ALL_NS
        br = self._generic.prepare_request(method, res=res, name=name, namespace=namespace, watch=watch,
                                           params=params)
        if read_timeout is not None:
            br.timeout = httpx2.Timeout(self.timeout, read=read_timeout)
        request = self._generic.build_adapter_request(br)
        try:
            return self._generic.send(request, stream=watch)
        except (httpx2.HTTPError, OSError) as exc:
            raise KubeUnavailable(self.server, f"{type(exc).__name__}: {exc}") from None

    @staticmethod
    def _json(resp: httpx2.Response) -> Any:
        try:
            return resp.json()
        except ValueError:
            return None

    # ---- verbs ---------------------------------------------------------------------------
    def get(self, plural: str, name: str, namespace: str | None = None) -> Obj | None:
        """The object, or None when the server says 404."""
        resp = self._request("get", plural, name=name, namespace=namespace)
        if resp.status_code == 404:
            return None
        if resp.status_code >= 400:
            raise _status_error(resp.status_code, self._json(resp))
        return dict(resp.json())

    def list(self, plural: str, *, page_size: int = 500) -> tuple[list[Obj], str]:
        """Every object of a kind (all namespaces), read in pages; (items, resourceVersion).
        A continue token that expired mid-list raises Gone: the caller lists again."""
        items: list[Obj] = []
        token = ""
        version = ""
        while True:
            params: dict[str, Any] = {"limit": page_size}
            if token:
                params["continue"] = token
            resp = self._request("list", plural, params=params)
            body = self._json(resp)
            if resp.status_code >= 400:
                raise _status_error(resp.status_code, body)
            meta = body.get("metadata") or {}
            version = version or str(meta.get("resourceVersion") or "")
            items += body.get("items") or []
            token = str(meta.get("continue") or "")
            if not token:
                return items, version

    def watch(self, plural: str, resource_version: str, *, timeout_seconds: int = 300) -> Iterator[tuple[str, Obj]]:
        """(type, object) events after ``resource_version``, BOOKMARKs included, until the server
        ends the watch. An ERROR event or HTTP error with code 410 raises Gone."""
        params = {"resourceVersion": resource_version, "allowWatchBookmarks": "true",
                  "timeoutSeconds": timeout_seconds}
        resp = self._request("list", plural, params=params, watch=True, read_timeout=timeout_seconds + 30)
        try:
            if resp.status_code >= 400:
                resp.read()
                raise _status_error(resp.status_code, self._json(resp))
            try:
                for line in resp.iter_lines():
                    if not line.strip():
                        continue
                    event = json.loads(line)
                    kind, obj = str(event.get("type") or ""), event.get("object") or {}
                    if kind == "ERROR":
                        raise _status_error(int(obj.get("code") or 500), obj)
                    yield kind, obj
            except (httpx2.HTTPError, OSError) as exc:
                raise KubeUnavailable(self.server, f"watch of {plural} cut: {type(exc).__name__}: {exc}") from None
        finally:
            resp.close()

    def healthz(self) -> bool:
        try:
            resp = self._generic._client.get("/healthz", timeout=4.0)
        except (httpx2.HTTPError, OSError):
            return False
        return resp.status_code == 200
