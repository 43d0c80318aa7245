"""The one error hierarchy of pycalico.

Front ends map these in one place each: the CNI plugin to spec error codes,
the Ansible modules to ``fail_json``, the CLI to exit codes. Messages never
carry key material.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any


class PycalicoError(Exception):
    """Base of every error pycalico raises on purpose."""


class ValidationError(PycalicoError):
    """A field holds a value that is not allowed."""

    def __init__(self, field: str, value: Any, allowed: str, *, reason: str = "") -> None:
        self.field = field
        self.value = value
        self.allowed = allowed
        self.reason = reason
        text = f"{field}: invalid value {value!r}"
        if reason:
            text += f" ({reason})"
        text += f"; allowed: {allowed}"
        super().__init__(text)


class DatastoreError(PycalicoError):
    """The datastore answered with an error we cannot handle."""


class DatastoreUnavailable(DatastoreError):
    """No etcd endpoint could be reached (network, TLS, or every member down)."""

    def __init__(self, endpoints: Sequence[str], detail: str) -> None:
        self.endpoints = list(endpoints)
        self.detail = detail
        super().__init__(f"etcd unreachable at {', '.join(self.endpoints)}: {detail}")


class OutcomeUnknown(DatastoreError):
    """A write may have reached etcd but no answer came back (reply lost, timed out,
    connection reset after the request was sent): it may or may not have been applied.
    The client never resends such a write; the caller settles it by reading.

    Carries the operation, the keys written (never values) and the endpoint."""

    def __init__(self, operation: str, keys: Sequence[str], endpoint: str, detail: str) -> None:
        self.operation = operation
        self.keys = list(keys)
        self.endpoint = endpoint
        self.detail = detail
        shown = ", ".join(self.keys[:3]) + (f" (+{len(self.keys) - 3} more)" if len(self.keys) > 3 else "")
        super().__init__(f"outcome unknown: {operation} of {shown or 'no key'} sent to {endpoint}: {detail}; "
                         "it may or may not have been applied")


class KeyExists(DatastoreError):
    """A create-if-absent found the key already there."""

    def __init__(self, key: str, existing: Any = None) -> None:
        self.key = key
        self.existing = existing
        super().__init__(f"key already exists: {key}")


class KeyNotFound(DatastoreError):
    def __init__(self, key: str) -> None:
        self.key = key
        super().__init__(f"key not found: {key}")


class RevisionConflict(DatastoreError):
    """A compare-and-swap lost: the key changed since it was read."""

    def __init__(self, key: str) -> None:
        self.key = key
        super().__init__(f"update conflict on {key}: it changed since it was read")


class Compacted(DatastoreError):
    def __init__(self, revision: int) -> None:
        self.revision = revision
        super().__init__(f"revision {revision} has been compacted")


class ResourceNotFound(PycalicoError):
    def __init__(self, kind: str, name: str) -> None:
        self.kind = kind
        self.name = name
        super().__init__(f"{kind} {name!r} not found")


class ResourceExists(PycalicoError):
    def __init__(self, kind: str, name: str) -> None:
        self.kind = kind
        self.name = name
        super().__init__(f"{kind} {name!r} already exists")


class IPAMError(PycalicoError):
    pass


class PoolExhausted(IPAMError):
    def __init__(self, pools: Iterable[str], reason: str = "") -> None:
        self.pools = list(pools)
        text = f"pool exhausted: no IPs available in pools {self.pools}"
        if reason:
            text += f" ({reason})"
        super().__init__(text)


class NotReady(PycalicoError):
    """The cluster or node is not ready to serve (datastoreReady false, unknown node)."""


class DataplaneError(PycalicoError):
    """A change to the kernel's network state failed (netlink, sysctl, a name in use,
    an ``ip`` command of the agent's route and tunnel reconcilers)."""


class NetnsError(DataplaneError):
    """A network namespace cannot be opened or entered."""


class NatError(DataplaneError):
    """The agent's NAT-outgoing rules or ipset could not be programmed."""


class StartupError(PycalicoError):
    """The agent cannot start: no node address, a Node record it may not take over."""


class BirdError(PycalicoError):
    """BIRD refused a configuration or its control socket did not answer."""


class KubeError(PycalicoError):
    """The Kubernetes API answered, but not with what is needed (e.g. the pod does not exist)."""


class KubeUnavailable(KubeError):
    """The Kubernetes API could not be reached or failed (try again later)."""


class AnnotationError(ValidationError, KubeError):
    """A pod's or namespace's annotation holds a value that is not allowed."""
