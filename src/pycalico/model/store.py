"""Resource CRUD on etcd with Calico's semantics (calico-internals §1.1, §1.4)."""

from __future__ import annotations

import datetime
import ipaddress
import json
import uuid
from collections.abc import Sequence
from typing import TypeVar

from pycalico.datastore.etcd import EtcdClient, KeyValue
from pycalico.errors import (
    KeyExists,
    KeyNotFound,
    ResourceExists,
    ResourceNotFound,
    RevisionConflict,
    ValidationError,
)
from pycalico.model import keys
from pycalico.model.policy import BUILTIN_TIERS, DEFAULT_TIER, GlobalNetworkPolicy, NetworkPolicy, Tier, builtin_tier
from pycalico.model.resources import IPPool, Resource

R = TypeVar("R", bound=Resource)


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _encode(res: Resource) -> str:
    data = res.to_json()
    meta = data["metadata"]
    # Calico never stores resourceVersion: it is the key's mod_revision on read.
    meta.pop("resourceVersion", None)
    meta.pop("selfLink", None)
    return json.dumps(data, separators=(",", ":"))


def _decode(cls: type[R], kv: KeyValue) -> R:
    res = cls.from_json(json.loads(kv.value))
    res.metadata["resourceVersion"] = str(kv.mod_revision)
    return res


class ResourceStore:
    def __init__(self, client: EtcdClient) -> None:
        self.client = client
        self._default_tier_seen = False  # Calico refuses to delete it: once seen, not read again

    def get(self, cls: type[R], name: str, namespace: str | None = None) -> R | None:
        kv = self.client.get(keys.resource_key(cls.PLURAL, name, namespace if cls.NAMESPACED else None))
        return _decode(cls, kv) if kv else None

    def must_get(self, cls: type[R], name: str, namespace: str | None = None) -> R:
        res = self.get(cls, name, namespace)
        if res is None:
            raise ResourceNotFound(cls.KIND, name)
        return res

    def list(self, cls: type[R], namespace: str | None = None, *, name_prefix: str = "") -> list[R]:
        prefix = keys.resource_prefix(cls.PLURAL, namespace if cls.NAMESPACED else None) + name_prefix
        kvs, _ = self.client.list(prefix)
        out = []
        for kv in kvs:
            if cls.NAMESPACED and namespace is None and kv.key.count("/") != prefix.count("/") + 1:
                continue
            out.append(_decode(cls, kv))
        return out

    def check(self, res: Resource, *, creating: bool) -> None:
        """Apply defaults and run every check a create/update would (validation, pool
        overlap, immutable fields) without writing: for check modes and dry runs."""
        self._prepare(res, creating=creating)

    def _prepare(self, res: Resource, *, creating: bool) -> None:
        res.apply_defaults()
        res.validate()
        if isinstance(res, IPPool):
            self._check_pool_overlap(res, creating=creating)
        if isinstance(res, (NetworkPolicy, GlobalNetworkPolicy)):
            self._check_tier_exists(res)

    def _check_tier_exists(self, policy: NetworkPolicy | GlobalNetworkPolicy) -> None:
        """Calico's client refuses a policy in a tier that does not exist; the default
        tier is the exception: it is created with the policy (``_ensure_policy_tier``)."""
        if policy.tier != DEFAULT_TIER and self.get(Tier, policy.tier) is None:
            names = ", ".join(t.name for t in self.list(Tier)) or "none yet"
            raise ValidationError("spec.tier", policy.tier, f"the name of an existing Tier ({names})",
                                  reason=f"Tier {policy.tier!r} does not exist: create it first")

    def _ensure_policy_tier(self, res: Resource) -> None:
        if isinstance(res, (NetworkPolicy, GlobalNetworkPolicy)) and res.tier == DEFAULT_TIER \
                and not self._default_tier_seen:
            ensure_tier(self, DEFAULT_TIER)
            self._default_tier_seen = True

    def _check_pool_overlap(self, pool: IPPool, *, creating: bool) -> None:
        net = pool.network
        for other in self.list(IPPool):
            if other.name == pool.name:
                if creating:
                    continue  # the create itself reports that the pool exists
                if other.cidr != pool.cidr:
                    raise ValidationError("spec.cidr", pool.cidr, f"{other.cidr} (the CIDR of a pool cannot change)")
                if other.block_size != pool.block_size:
                    raise ValidationError("spec.blockSize", pool.block_size,
                                          f"{other.block_size} (the block size of a pool cannot change)")
                continue
            try:
                other_net = ipaddress.ip_network(other.cidr)
            except ValueError:
                continue
            if other_net.version == net.version and other_net.overlaps(net):  # type: ignore[arg-type]
                raise ValidationError("spec.cidr", pool.cidr, "a CIDR that overlaps no other pool",
                                      reason=f"IPPool({pool.name}) CIDR overlaps with IPPool({other.name}) "
                                             f"CIDR {other.cidr}")

    def _as_new(self, res: R) -> R:
        """A validated copy with defaults, a uid and a creationTimestamp, as created."""
        res = res.copy()
        self._prepare(res, creating=True)
        res.metadata.setdefault("uid", str(uuid.uuid4()))
        res.metadata.setdefault("creationTimestamp", _now())
        return res

    def put_for(self, res: Resource) -> tuple[str, str]:
        """(key, value) that writes ``res`` as a new object, for a caller that puts it
        inside its own transaction (the stored value never carries a resourceVersion)."""
        res = self._as_new(res)
        return res.key(), _encode(res)

    def create_all(self, cls: type[R], resources: Sequence[R]) -> dict[str, R | None]:
        """Create every one of ``resources`` in one transaction, or none of them when any
        key exists. Returns {} when all were created; otherwise what each key holds now,
        by key (read in the same round trip, for the caller to update what differs)."""
        if not resources:
            return {}
        for res in resources:
            self._ensure_policy_tier(res)
        puts = dict(self.put_for(res) for res in resources)
        created, current = self.client.commit(dict.fromkeys(puts, 0), puts)
        if created:
            return {}
        return {key: _decode(cls, kv) if kv else None for key, kv in current.items()}

    def create(self, res: R) -> R:
        if res.resource_version:
            raise ValidationError("metadata.resourceVersion", res.resource_version, "empty on create")
        res = self._as_new(res)
        self._ensure_policy_tier(res)
        try:
            rev = self.client.create(res.key(), _encode(res))
        except KeyExists:
            raise ResourceExists(res.KIND, res.name) from None
        res.metadata["resourceVersion"] = str(rev)
        return res

    def update(self, res: R) -> R:
        """Compare-and-swap on ``metadata.resourceVersion``; RevisionConflict if it moved."""
        if not res.resource_version:
            raise ValidationError("metadata.resourceVersion", "", "the resourceVersion read with the resource")
        res = res.copy()
        self._prepare(res, creating=False)
        self._ensure_policy_tier(res)
        try:
            rev = self.client.update(res.key(), _encode(res), int(res.resource_version))
        except KeyNotFound:
            raise ResourceNotFound(res.KIND, res.name) from None
        res.metadata["resourceVersion"] = str(rev)
        return res

    def apply(self, res: R) -> R:
        """Create or update, keeping uid and creationTimestamp; retried on conflicts."""
        for _ in range(100):
            current = self.get(type(res), res.name, res.namespace)
            if current is None:
                try:
                    return self.create(_without_version(res))
                except ResourceExists:
                    continue
            desired: R = res.copy()
            for field in ("uid", "creationTimestamp"):
                if field in current.metadata:
                    desired.metadata[field] = current.metadata[field]
            desired.metadata["resourceVersion"] = current.resource_version
            try:
                return self.update(desired)
            except (RevisionConflict, ResourceNotFound):
                continue
        raise RevisionConflict(res.key())

    def delete(self, cls: type[Resource], name: str, namespace: str | None = None,
               *, resource_version: str = "") -> bool:
        """Returns False when it was already gone."""
        if cls is Tier and name == DEFAULT_TIER:
            raise ValidationError("metadata.name", name, "a tier other than the default tier",
                                  reason="the default tier cannot be deleted (as in Calico)")
        key = keys.resource_key(cls.PLURAL, name, namespace if cls.NAMESPACED else None)
        return self.client.delete(key, mod_revision=int(resource_version) if resource_version else None)


def ensure_tier(store: ResourceStore, name: str) -> bool:
    """Create the built-in tier ``name`` as Calico's client does, unless it exists; True if created."""
    if store.get(Tier, name) is not None:
        return False
    try:
        store.create(builtin_tier(name))
    except ResourceExists:
        return False
    return True


def ensure_default_tiers(store: ResourceStore) -> list[str]:
    """What Calico's client ``EnsureInitialized`` does for tiers: create ``default``
    (order 1e6, Deny), ``kube-admin`` (1e3, Pass) and ``kube-baseline`` (1e7, Pass) when
    missing. For agent startup; returns the names created."""
    return [name for name in BUILTIN_TIERS if ensure_tier(store, name)]


def _without_version(res: R) -> R:
    fresh = res.copy()
    fresh.metadata.pop("resourceVersion", None)
    return fresh
