"""Calico's block IPAM on etcd (calico-internals §2): affinities, blocks, handles.

Every write that can race is a compare-and-swap, retried on conflict. A block
and the handles it counts are written in one transaction, so a crash leaves no
count behind and no address owned by nobody.

A write whose reply was lost (``OutcomeUnknown``) is settled by reading, never
resent blind: an assignment stamps each ordinal with the block's sequence number
(``sequenceNumberForAllocation``), so "the block holds our handle at these ordinals
with that stamp" says our commit landed. A retry compares the same mod_revision the
uncertain commit did (or a newer one, which that commit can no longer match), so at
most one of them is applied, and every block we look at afterwards — reads and the
current values of a lost compare — is checked for the first one's stamp.
"""

from __future__ import annotations

import datetime
import fcntl
import ipaddress
import itertools
import json
import os
import random
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, cast

from pycalico.datastore import settle
from pycalico.datastore.etcd import EtcdClient, KeyValue
from pycalico.errors import IPAMError, KeyExists, KeyNotFound, OutcomeUnknown, PoolExhausted, RevisionConflict
from pycalico.ipam.block import AllocationBlock
from pycalico.model import IPPool, Node, ResourceStore, keys

RETRIES = 100
CLAIM_PROBE = 64  # candidate blocks one transaction checks (etcd allows 128 operations per transaction)
CLAIM_PROBE_ROUNDS = 4
DEFAULT_MAX_BLOCKS_PER_HOST = 20
TUNNEL_TYPES = {
    "ipip": ("ipip-tunnel-addr-", "ipipTunnelAddress"),
    "vxlan": ("vxlan-tunnel-addr-", "vxlanTunnelAddress"),
    "wireguard": ("wireguard-tunnel-addr-", "wireguardTunnelAddress"),
}

IPv4or6Interface = ipaddress.IPv4Interface | ipaddress.IPv6Interface
# Keys to write in the transaction that assigns the addresses it is given.
ExtraPuts = Callable[[list[IPv4or6Interface]], dict[str, str]]


@dataclass(frozen=True)
class _Attempt:
    """An assignment commit whose outcome is unknown: its ordinals and their stamp."""

    ordinals: tuple[int, ...]
    stamp: int
    completing: bool

    def landed_in(self, block: AllocationBlock, handle: str) -> bool:
        for o in self.ordinals:
            if o >= len(block.allocations) or block.handle_of(o) != handle \
                    or block.sequence_for_allocation.get(str(o)) != self.stamp:
                return False
        return True


@dataclass
class _Extras:
    """``auto_assign``'s extra keys: sent with the transaction that completes the request."""

    make: ExtraPuts
    wanted: int
    written: bool = False


def handle_id(network: str, container_id: str) -> str:
    """The CNI handle: ``<network-name>.<containerID>``."""
    return f"{network}.{container_id}"


def tunnel_handle(kind: str, node: str) -> str:
    return TUNNEL_TYPES[kind][0] + node


def tunnel_attrs(kind: str, node: str) -> dict[str, str]:
    return {"node": node, "type": TUNNEL_TYPES[kind][1]}


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _fnv32(text: str) -> int:
    h = 0x811C9DC5
    for byte in text.encode():
        h = (h * 0x01000193) & 0xFFFFFFFF
        h ^= byte
    return h


@dataclass(frozen=True)
class IpamConfig:
    strict_affinity: bool = False
    auto_allocate_blocks: bool = True
    max_blocks_per_host: int = 0

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> IpamConfig:
        return cls(bool(data.get("strict_affinity", False)), bool(data.get("auto_allocate_blocks", True)),
                   int(data.get("maxBlocksPerHost", 0) or 0))

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"strict_affinity": self.strict_affinity,
                               "auto_allocate_blocks": self.auto_allocate_blocks}
        if self.max_blocks_per_host:
            out["maxBlocksPerHost"] = self.max_blocks_per_host
        return out


@dataclass
class CheckReport:
    """What ``ipam check`` finds; ``ok`` when there is nothing to fix."""

    allocations: int = 0
    in_use: int = 0
    leaked: list[dict[str, str]] = field(default_factory=list)
    not_allocated: list[dict[str, str]] = field(default_factory=list)
    duplicate_owners: list[dict[str, Any]] = field(default_factory=list)
    handles_without_ips: list[str] = field(default_factory=list)
    handles_missing: list[str] = field(default_factory=list)
    block_problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.leaked or self.not_allocated or self.duplicate_owners or self.handles_without_ips
                    or self.handles_missing or self.block_problems)

    def to_json(self) -> dict[str, Any]:
        return {"ok": self.ok, "allocations": self.allocations, "inUse": self.in_use, "leaked": self.leaked,
                "notAllocated": self.not_allocated, "duplicateOwners": self.duplicate_owners,
                "handlesWithoutIPs": self.handles_without_ips, "handlesMissing": self.handles_missing,
                "blockProblems": self.block_problems}


class IPAM:
    """Block IPAM for one datastore. Safe for many threads and processes."""

    def __init__(self, client: EtcdClient, *, lock_dir: str | None = None) -> None:
        self.client = client
        self.store = ResourceStore(client)
        self.lock_dir = lock_dir
        self._thread_locks: dict[str, threading.Lock] = {}
        self._locks_guard = threading.Lock()

    # ---- locking ----------------------------------------------------------------------
    @contextmanager
    def host_lock(self, host: str) -> Iterator[None]:
        """Serialises callers for one host: threads in-process, processes by flock
        (best effort, as in Calico: a lock file that cannot be opened is skipped)."""
        with self._locks_guard:
            lock = self._thread_locks.setdefault(host, threading.Lock())
        with lock:
            fd = -1
            if self.lock_dir:
                try:
                    os.makedirs(self.lock_dir, exist_ok=True)
                    fd = os.open(os.path.join(self.lock_dir, f"ipam-{host}.lock"), os.O_RDWR | os.O_CREAT, 0o600)
                    fcntl.flock(fd, fcntl.LOCK_EX)
                except OSError:
                    if fd >= 0:
                        os.close(fd)
                    fd = -1
            try:
                yield
            finally:
                if fd >= 0:
                    fcntl.flock(fd, fcntl.LOCK_UN)
                    os.close(fd)

    # ---- config -----------------------------------------------------------------------
    def get_config(self) -> IpamConfig:
        kv = self.client.get(keys.IPAM_CONFIG_KEY)
        return IpamConfig.from_json(kv.json()) if kv else IpamConfig()

    def set_config(self, config: IpamConfig) -> None:
        settle.put_settled(self.client, keys.IPAM_CONFIG_KEY, json.dumps(config.to_json()))

    # ---- reading ----------------------------------------------------------------------
    def _read_block(self, cidr: str) -> tuple[AllocationBlock, int] | None:
        kv = self.client.get(keys.block_key(cidr))
        if kv is None:
            return None
        block = AllocationBlock.from_json(kv.json())
        if block.deleted:
            return None
        return block, kv.mod_revision

    def blocks(self, version: int = 4) -> list[AllocationBlock]:
        kvs, _ = self.client.list(keys.block_prefix(version))
        return [b for b in (AllocationBlock.from_json(kv.json()) for kv in kvs) if not b.deleted]

    def block_cidrs(self, version: int = 4) -> set[str]:
        """The CIDRs of every block key (deleted ones included), read without the blocks'
        values: what a claim needs to skip taken subnets."""
        prefix = keys.block_prefix(version)
        return {keys.segment_to_cidr(key[len(prefix):]) for key in self.client.keys(prefix)}

    def affinities(self, host: str, version: int = 4) -> dict[str, tuple[str, KeyValue]]:
        """``{block cidr: (state, kv)}`` for the host."""
        kvs, _ = self.client.list(keys.host_affinity_prefix(host, version))
        out = {}
        for kv in kvs:
            parsed = keys.parse_affinity_key(kv.key)
            if parsed is None:
                continue
            data = kv.json() if kv.value else {}
            if data.get("deleted"):
                continue
            out[parsed[1]] = (str(data.get("state") or "confirmed"), kv)
        return out

    def all_affinities(self) -> list[tuple[str, str, str]]:
        """(host, cidr, state) for every host affinity."""
        kvs, _ = self.client.list(keys.HOST_AFFINITY_ROOT)
        out = []
        for kv in kvs:
            parsed = keys.parse_affinity_key(kv.key)
            if parsed:
                out.append((parsed[0], parsed[1], str((kv.json() if kv.value else {}).get("state") or "confirmed")))
        return out

    def _context(self, host: str) -> tuple[IpamConfig, list[IPPool], dict[str, str], dict[str, str]]:
        """Config, pools, the node's labels and its affinities ``{cidr: state}``, in one round trip."""
        config_kvs, pool_kvs, node_kvs, aff_kvs = self.client.read_many([
            (keys.IPAM_CONFIG_KEY, False),
            (keys.resource_prefix(IPPool.PLURAL), True),
            (keys.resource_key(Node.PLURAL, host), False),
            (keys.host_affinity_prefix(host, 4), True),
        ])
        config = IpamConfig.from_json(config_kvs[0].json()) if config_kvs else IpamConfig()
        pools = [p for p in (cast(IPPool, IPPool.from_json(kv.json())) for kv in pool_kvs) if p.version == 4]
        labels = Node.from_json(node_kvs[0].json()).labels if node_kvs else {}
        affinities = {}
        for kv in aff_kvs:
            parsed = keys.parse_affinity_key(kv.key)
            data = kv.json() if kv.value else {}
            if parsed and not data.get("deleted"):
                affinities[parsed[1]] = str(data.get("state") or "confirmed")
        return config, pools, labels, affinities

    @staticmethod
    def _select_pools(pools: list[IPPool], labels: dict[str, str], use: str,
                      requested: Sequence[str] | None) -> list[IPPool]:
        if requested:
            chosen = []
            for want in requested:
                match = [p for p in pools if p.name == want or p.cidr == want]
                if not match:
                    raise IPAMError(f"requested pool {want!r} does not exist")
                if match[0].disabled:
                    raise IPAMError(f"requested pool {want!r} is disabled")
                chosen.append(match[0])
            pools = chosen
        else:
            pools = [p for p in pools if not p.disabled and p.assignment_mode == "Automatic"
                     and p.selects_node(labels)]
        return [p for p in pools if use in p.allowed_uses]

    # ---- assignment -------------------------------------------------------------------
    def _assign_in_block(self, cidr: str, num: int, handle: str, attrs: dict[str, str],
                         require_host: str | None, block_kv: KeyValue | None = None,
                         extras: _Extras | None = None,
                         prior: Sequence[IPv4or6Interface] = (), *,
                         ordinal: int | None = None) -> list[IPv4or6Interface]:
        """Assign up to ``num`` addresses (or exactly ``ordinal``) from one block; []
        when it has none to give.

        The block and the handle are written in one transaction (Calico writes the
        handle first and rolls it back on a lost race; one transaction cannot leave
        a count behind), with ``extras`` when these addresses complete the request.
        A commit whose reply is lost is settled as the module docstring says."""
        block_key, handle_key = keys.block_key(cidr), keys.handle_key(handle)
        if block_kv is None:
            block_kv = self.client.get(block_key)
        handle_kv: KeyValue | None = None  # assume a new handle; a lost compare tells us otherwise
        uncertain: list[_Attempt] = []
        for _ in range(RETRIES):
            if block_kv is None:
                return []  # gone: an uncertain commit compared its mod_revision and cannot land
            block = AllocationBlock.from_json(block_kv.json())
            landed = next((a for a in uncertain if a.landed_in(block, handle)), None)
            if landed is not None:
                if landed.completing and extras is not None:
                    extras.written = True
                return self._addresses(block, landed.ordinals)
            if block.deleted or (require_host is not None and block.host() != require_host):
                return []
            stamp = block.sequence_number
            if ordinal is None:
                ordinals = block.assign(num, handle, attrs)
            elif block.assign_ordinal(ordinal, handle, attrs):
                ordinals = [ordinal]
            else:
                raise IPAMError(f"{block.address(ordinal)} is already assigned (handle {block.handle_of(ordinal)})")
            if not ordinals:
                return []
            block.bump()
            counts = dict(handle_kv.json().get("block") or {}) if handle_kv else {}
            counts[cidr] = counts.get(cidr, 0) + len(ordinals)
            addrs = self._addresses(block, ordinals)
            puts = {block_key: json.dumps(block.to_json()), handle_key: json.dumps({"block": counts, "deleted": False})}
            expected = {block_key: block_kv.mod_revision, handle_key: handle_kv.mod_revision if handle_kv else 0}
            completing = extras if extras is not None and len(prior) + len(addrs) == extras.wanted else None
            if completing is not None:
                more = completing.make([*prior, *addrs])
                puts.update(more)
                expected.update(dict.fromkeys(more, 0))
            try:
                ok, current = self.client.commit(expected, puts)
            except OutcomeUnknown as exc:
                uncertain.append(_Attempt(tuple(ordinals), stamp, completing is not None))
                block_kv, handle_kv = settle.current(self.client, [block_key, handle_key], exc)
                continue
            if ok:
                if completing is not None:
                    completing.written = True
                return addrs
            block_kv, handle_kv = current[block_key], current[handle_key]
            if block_kv is not None and any(a.landed_in(AllocationBlock.from_json(block_kv.json()), handle)
                                            for a in uncertain):
                continue  # an earlier, uncertain commit of ours is what changed the block
            taken = next((k for k in expected if k not in (block_key, handle_key) and current.get(k)), None)
            if taken is not None:
                raise KeyExists(taken)
        raise IPAMError(f"block {cidr}: too many conflicting updates")

    @staticmethod
    def _addresses(block: AllocationBlock, ordinals: Sequence[int]) -> list[IPv4or6Interface]:
        prefix = block.network.prefixlen
        return [ipaddress.ip_interface(f"{block.address(o)}/{prefix}") for o in ordinals]

    def _claim_block(self, host: str, pools: list[IPPool], config: IpamConfig, owned: int) -> str | None:
        """Claim a free block in one of ``pools`` for ``host`` (which owns ``owned``); returns its CIDR.

        The walk's candidates are checked ``CLAIM_PROBE`` at a time, one keys-only transaction
        each: in a pool with room the first one finds a free block, where reading every block
        key took ~1 s at 20,000 blocks. After ``CLAIM_PROBE_ROUNDS`` windows with no free block
        the pools are dense, and every block key is read once instead (what taken blocks cost)."""
        limit = config.max_blocks_per_host or DEFAULT_MAX_BLOCKS_PER_HOST
        if owned >= limit:
            return None
        existing: set[str] | None = None
        probes = 0
        for pool in pools:
            for window in _windows((str(s) for s in self._subnet_walk(pool, host)), CLAIM_PROBE):
                if existing is None and probes < CLAIM_PROBE_ROUNDS:
                    probes += 1
                    block_keys = [keys.block_key(cidr) for cidr in window]
                    present = self.client.existing(block_keys)
                    taken = {cidr for cidr, key in zip(window, block_keys, strict=True) if key in present}
                else:
                    existing = self.block_cidrs() if existing is None else existing
                    taken = existing
                for cidr in window:
                    if cidr not in taken and self._claim(host, cidr):
                        return cidr
        return None

    @staticmethod
    def _subnet_walk(pool: IPPool, host: str) -> Iterator[ipaddress.IPv4Network | ipaddress.IPv6Network]:
        """The pool's blocks from a start point derived from the host name, wrapping."""
        net = pool.network
        count = 1 << (pool.block_size - net.prefixlen)
        start = random.Random(_fnv32(host)).randrange(count)
        step = 1 << ((32 if net.version == 4 else 128) - pool.block_size)
        base = int(net.network_address)
        for i in range(count):
            index = (start + i) % count
            yield ipaddress.ip_network((base + index * step, pool.block_size))

    def _claim(self, host: str, cidr: str) -> bool:
        """Two-phase claim: pending affinity → block create → confirmed affinity.
        The affinity is this host's own key (written under its lock), so repeating
        its puts is harmless; the block's value is unique (its sequenceNumber)."""
        aff_key = keys.affinity_key(host, cidr)
        pending = json.dumps({"state": "pending", "deleted": False})
        try:
            settle.create_settled(self.client, aff_key, pending)
        except KeyExists:
            settle.put_settled(self.client, aff_key, pending)
        block = AllocationBlock.new(cidr, f"host:{host}", _now())
        try:
            settle.create_settled(self.client, keys.block_key(cidr), json.dumps(block.to_json()))
        except KeyExists:
            read = self._read_block(cidr)
            if read is None or read[0].host() != host:
                self.client.delete(aff_key)
                return False
        settle.put_settled(self.client, aff_key, json.dumps({"state": "confirmed", "deleted": False}))
        return True

    def auto_assign(self, handle: str, attrs: dict[str, str], host: str, num: int = 1, *,
                    use: str = "Workload", pools: Sequence[str] | None = None,
                    extra_puts: ExtraPuts | None = None) -> list[IPv4or6Interface]:
        """Assign ``num`` IPv4 addresses to ``handle`` for ``host``. Addresses come
        back with the block's mask (``10.244.12.5/26``); callers narrow to /32.
        Raises PoolExhausted when there is no room, releasing any partial result.

        ``extra_puts(addresses)`` gives keys to create in the same transaction as the
        addresses (the CNI plugin's workload endpoint: one etcd write per ADD instead
        of two). It is called just before each attempt is sent, with the addresses that
        attempt would assign; a lost race calls it again with others. When one of its
        keys exists already, nothing is assigned and KeyExists names it. Should the
        addresses come from several blocks, its keys are written after the last one."""
        extras = _Extras(extra_puts, num) if extra_puts is not None else None
        with self.host_lock(host):
            config, pools_all, labels, affinities = self._context(host)
            candidates = self._select_pools(pools_all, labels, use, pools)
            if not candidates:
                raise PoolExhausted([], f"no enabled IPv4 pool allows {use} use on node {host}")
            pool_nets = [p.network for p in candidates]

            def in_pools(cidr: str) -> bool:
                net = ipaddress.ip_network(cidr)
                return any(net.subnet_of(p) for p in pool_nets if p.version == net.version)  # type: ignore

            result: list[IPv4or6Interface] = []
            try:
                affine = sorted((c for c, state in affinities.items() if state == "confirmed" and in_pools(c)),
                                key=ipaddress.ip_network)
                # One read for every affine block, then write only to one with room.
                for cidr, kvs in zip(affine, self.client.read_many([(keys.block_key(c), False) for c in affine]),
                                     strict=True):
                    if len(result) >= num:
                        break
                    if not kvs:
                        self._claim(host, cidr)  # affinity without a block: finish the interrupted claim
                    elif not kvs[0].json().get("unallocated"):  # full
                        continue
                    result += self._assign_in_block(cidr, num - len(result), handle, attrs, host,
                                                    kvs[0] if kvs else None, extras, result)
                while len(result) < num and config.auto_allocate_blocks:
                    claimed = self._claim_block(host, candidates, config, len(affinities))
                    if claimed is None:
                        break
                    affinities[claimed] = "confirmed"
                    result += self._assign_in_block(claimed, num - len(result), handle, attrs, host, None, extras,
                                                    result)
                if len(result) < num and not config.strict_affinity:
                    for block in self.blocks():
                        if len(result) >= num:
                            break
                        if block.free and in_pools(block.cidr):
                            result += self._assign_in_block(block.cidr, num - len(result), handle, attrs, None,
                                                            None, extras, result)
            except KeyExists:  # an extra key exists: give back what was taken before it
                if result:
                    self.release_ips([str(r.ip) for r in result])
                raise
            if len(result) < num:
                if result:
                    self.release_ips([str(r.ip) for r in result])
                reason = "strictAffinity is on: no borrowing from other hosts' blocks" if config.strict_affinity \
                    else "every block is full"
                raise PoolExhausted([p.name for p in candidates], reason)
            if extras is not None and not extras.written:
                more = extras.make(result)
                taken = self._create_all(more)
                if taken is not None:
                    self.release_ips([str(r.ip) for r in result])
                    raise KeyExists(taken)
            return result

    def _create_all(self, values: dict[str, str]) -> str | None:
        """Create every key in one transaction; None when done, else a key that exists.
        A lost reply is settled by reading: our values there → created (they carry uids)."""
        uncertain: OutcomeUnknown | None = None
        for _ in range(10):
            try:
                ok, current = self.client.commit(dict.fromkeys(values, 0), values)
            except OutcomeUnknown as exc:
                uncertain = exc
                current = dict(zip(values, settle.current(self.client, list(values), exc), strict=True))
                if all(current.get(k) is None for k in values):
                    continue  # not applied (yet): the same create-if-absent again is exclusive with it
                ok = False
            if ok:
                return None
            if all((kv := current.get(k)) is not None and kv.value == v for k, v in values.items()):
                return None  # our earlier, uncertain commit
            return next((k for k in values if current.get(k)), next(iter(values)))
        assert uncertain is not None
        raise uncertain

    def assign_ip(self, ip: str, handle: str, attrs: dict[str, str], host: str, *,
                  extra_puts: ExtraPuts | None = None) -> list[IPv4or6Interface]:
        """Assign one given address (a requested IP) to ``handle``, claiming its block for
        ``host`` when no block holds it yet. The block, the handle and ``extra_puts``' keys
        go in one transaction, as in ``auto_assign`` (and KeyExists when one of those keys
        exists, nothing assigned). IPAMError when the address is in no pool, its pool is
        disabled, or it is taken."""
        addr = ipaddress.ip_address(ip)
        pools = [p for p in self.store.list(IPPool) if addr in p.network]
        if not pools:
            raise IPAMError(f"{ip} is not in any IP pool")
        pool = pools[0]
        if pool.disabled:
            raise IPAMError(f"{ip} is in pool {pool.name}, which is disabled")
        cidr = str(ipaddress.ip_network(f"{addr}/{pool.block_size}", strict=False))
        ordinal = int(addr) - int(ipaddress.ip_network(cidr).network_address)
        extras = _Extras(extra_puts, 1) if extra_puts is not None else None
        with self.host_lock(host):
            if self._read_block(cidr) is None:
                self._claim(host, cidr)
            got = self._assign_in_block(cidr, 1, handle, attrs, None, extras=extras, ordinal=ordinal)
            if not got:
                raise IPAMError(f"block {cidr} vanished while assigning {ip}")
            return got

    # ---- release ----------------------------------------------------------------------
    def release_by_handle(self, handle: str) -> int:
        """Free every address of ``handle``. Idempotent; returns how many were freed.
        A commit whose reply was lost is settled by the next read of the handle: it no
        longer counts that block and moved on from the revision we compared → applied."""
        handle_key = keys.handle_key(handle)
        total = 0
        uncertain: tuple[int, str, int] | None = None  # (handle mod_revision compared, cidr, freed)
        for _ in range(RETRIES):
            handle_kv = self.client.get(handle_key)
            if uncertain is not None:
                rev, done_cidr, done = uncertain
                uncertain = None
                if handle_kv is None or (handle_kv.mod_revision != rev
                                         and done_cidr not in (handle_kv.json().get("block") or {})):
                    total += done
            if handle_kv is None:
                return total
            counts: dict[str, int] = dict(handle_kv.json().get("block") or {})
            if not counts:
                self.client.delete(handle_key, mod_revision=handle_kv.mod_revision)
                return total
            cidr = next(iter(counts))
            del counts[cidr]
            block_key = keys.block_key(cidr)
            block_kv = self.client.get(block_key)
            puts: dict[str, str] = {}
            deletes: list[str] = []
            freed = 0
            if block_kv is not None:
                block = AllocationBlock.from_json(block_kv.json())
                freed = block.release(block.ordinals_of_handle(handle)).get(handle, 0)
                if freed:
                    if block.is_empty() and block.affinity is None:
                        deletes.append(block_key)
                    else:
                        block.bump()
                        puts[block_key] = json.dumps(block.to_json())
            # What the handle counted in a block that no longer has it was stale: drop it.
            if counts:
                puts[handle_key] = json.dumps({"block": counts, "deleted": False})
            else:
                deletes.append(handle_key)
            expected = {handle_key: handle_kv.mod_revision}
            if block_kv is not None:
                expected[block_key] = block_kv.mod_revision
            try:
                ok, _ = self.client.commit(expected, puts, deletes)
            except OutcomeUnknown as exc:
                settle.read_to_settle(exc, lambda: self.client.get(handle_key))  # etcd answers again
                uncertain = (handle_kv.mod_revision, cidr, freed)
                continue
            if ok:
                total += freed
        raise IPAMError(f"handle {handle}: too many conflicting updates")

    def release_ips(self, ips: Sequence[str]) -> list[str]:
        """Free the given addresses whatever their handle; returns those that were not allocated."""
        by_block: dict[str, list[ipaddress.IPv4Address | ipaddress.IPv6Address]] = {}
        blocks = {b.cidr: b.network for b in self.blocks()}
        not_allocated: list[str] = []
        for ip in ips:
            addr = ipaddress.ip_address(ip)
            owner = next((c for c, n in blocks.items() if addr in n), None)
            if owner is None:
                not_allocated.append(str(addr))
            else:
                by_block.setdefault(owner, []).append(addr)
        for cidr, addrs in by_block.items():
            not_allocated += self._release_in_block(cidr, addrs)
        return not_allocated

    def _release_in_block(self, cidr: str, addrs: Sequence[ipaddress.IPv4Address | ipaddress.IPv6Address]) -> list[str]:
        """Free ``addrs`` of one block and take them off their handles' counts, in one
        transaction. A lost reply is settled by the next read of the block: the ordinals
        we freed no longer hold the allocation (handle and stamp) they held → applied."""
        block_key = keys.block_key(cidr)
        uncertain: dict[int, tuple[str | None, int | None]] = {}  # ordinal → (handle, stamp) we freed
        for _ in range(RETRIES):
            block_kv = self.client.get(block_key)
            block = AllocationBlock.from_json(block_kv.json()) if block_kv is not None else None
            if block is not None and block.deleted:
                block = None
            if uncertain:
                if block is None or all((block.handle_of(o), block.sequence_for_allocation.get(str(o))) != was
                                        for o, was in uncertain.items()):
                    # applied: what it freed was ours; the rest were not allocated then
                    base = int(ipaddress.ip_network(cidr).network_address)
                    return [str(a) for a in addrs if int(a) - base not in uncertain]
                uncertain = {}  # not applied (its compare can no longer match, or we retry the same)
            if block is None or block_kv is None:
                return [str(a) for a in addrs]
            ordinals = [block.ordinal(a) for a in addrs]
            before = {o: (block.handle_of(o), block.sequence_for_allocation.get(str(o))) for o in ordinals
                      if block.allocations[o] is not None}
            missing = [str(a) for a, o in zip(addrs, ordinals, strict=True) if o not in before]
            freed = block.release(ordinals)
            if not freed:
                return missing
            handles = sorted(h for h in freed if h)
            handle_kvs = dict(zip(handles, (kvs[0] if kvs else None for kvs in self.client.read_many(
                [(keys.handle_key(h), False) for h in handles])), strict=True))
            puts: dict[str, str] = {}
            deletes: list[str] = []
            expected = {block_key: block_kv.mod_revision}
            if block.is_empty() and block.affinity is None:
                deletes.append(block_key)
            else:
                block.bump()
                puts[block_key] = json.dumps(block.to_json())
            for h, kv in handle_kvs.items():
                if kv is None:
                    continue
                counts: dict[str, int] = dict(kv.json().get("block") or {})
                counts[cidr] = counts.get(cidr, 0) - freed[h]
                if counts[cidr] <= 0:
                    del counts[cidr]
                expected[keys.handle_key(h)] = kv.mod_revision
                if counts:
                    puts[keys.handle_key(h)] = json.dumps({"block": counts, "deleted": False})
                else:
                    deletes.append(keys.handle_key(h))
            try:
                ok, _ = self.client.commit(expected, puts, deletes)
            except OutcomeUnknown as exc:
                settle.read_to_settle(exc, lambda: self.client.get(block_key))  # etcd answers again
                uncertain = before
                continue
            if ok:
                return missing
        raise IPAMError(f"block {cidr}: too many conflicting updates")

    def ips_by_handle(self, handle: str) -> list[ipaddress.IPv4Address | ipaddress.IPv6Address]:
        kv = self.client.get(keys.handle_key(handle))
        if kv is None:
            return []
        out = []
        for cidr in (kv.json().get("block") or {}):
            read = self._read_block(cidr)
            if read:
                out += [read[0].address(o) for o in read[0].ordinals_of_handle(handle)]
        return out

    def release_block_affinity(self, host: str, cidr: str, *, must_be_empty: bool = False) -> bool:
        """Give up ``host``'s claim on a block: empty blocks are deleted, others become
        orphans that can only be borrowed from. Returns False if it was kept (not empty).
        A block write whose reply was lost is settled by the loop's next read."""
        aff_key = keys.affinity_key(host, cidr)
        kv = self.client.get(aff_key)
        if kv is not None:
            settle.put_settled(self.client, aff_key, json.dumps({"state": "pendingDeletion", "deleted": False}))
        for _ in range(RETRIES):
            read = self._read_block(cidr)
            if read is None:
                break
            block, rev = read
            if block.host() != host:
                break
            if not block.is_empty() and must_be_empty:
                settle.put_settled(self.client, aff_key, json.dumps({"state": "confirmed", "deleted": False}))
                return False
            try:
                if block.is_empty():
                    if not self.client.delete(keys.block_key(cidr), mod_revision=rev):
                        continue
                else:
                    block.affinity = None
                    block.affinity_claim_time = None
                    block.bump()
                    self.client.update(keys.block_key(cidr), json.dumps(block.to_json()), rev)
                break
            except (RevisionConflict, KeyNotFound):
                continue
            except OutcomeUnknown as exc:
                settle.read_to_settle(exc, lambda: self.client.get(keys.block_key(cidr)))
                continue
        self.client.delete(aff_key)
        return True

    def release_host(self, host: str) -> int:
        """Release every affinity of ``host`` (node removal). Returns how many."""
        with self.host_lock(host):
            affinities = list(self.affinities(host, 4)) + list(self.affinities(host, 6))
            for cidr in affinities:
                self.release_block_affinity(host, cidr)
            self.client.delete(f"{keys.HOST_AFFINITY_ROOT}{host}")
            return len(affinities)

    def release_pool_affinities(self, pool: IPPool) -> None:
        """Before a pool is deleted: drop affinities of its blocks (empty blocks go)."""
        for host, cidr, _ in self.all_affinities():
            if ipaddress.ip_network(cidr).subnet_of(pool.network):  # type: ignore[arg-type]
                self.release_block_affinity(host, cidr)

    # ---- check ------------------------------------------------------------------------
    def check(self) -> CheckReport:
        """Compare allocations with their owners: workload endpoints and node tunnel addresses."""
        from pycalico.model import WorkloadEndpoint

        report = CheckReport()
        owners: dict[str, list[str]] = {}
        for wep in self.store.list(WorkloadEndpoint):
            for net in wep.ip_networks:
                ip = str(ipaddress.ip_interface(net).ip)
                owners.setdefault(ip, []).append(f"WorkloadEndpoint {wep.namespace}/{wep.name}")
        for node in self.store.list(Node):
            for kind, ip in (("ipip", node.ipip_tunnel_addr), ("vxlan", node.vxlan_tunnel_addr)):
                if ip:
                    owners.setdefault(str(ipaddress.ip_address(ip)), []).append(f"Node {node.name} {kind} tunnel")
        report.in_use = len(owners)

        allocated: dict[str, dict[str, Any]] = {}
        handle_counts: dict[str, int] = {}
        for block in self.blocks(4) + self.blocks(6):
            report.block_problems += block.problems()
            for o, attr in block.allocated():
                ip = str(block.address(o))
                allocated[ip] = {"ip": ip, "block": block.cidr, "handle": attr.get("handle_id") or "",
                                 **(attr.get("secondary") or {})}
                handle = attr.get("handle_id")
                if handle:
                    handle_counts[handle] = handle_counts.get(handle, 0) + 1
        report.allocations = len(allocated)

        for ip, info in sorted(allocated.items()):
            if ip not in owners:
                report.leaked.append(info)
        for ip, who in sorted(owners.items()):
            if ip not in allocated:
                report.not_allocated.append({"ip": ip, "owner": who[0]})
            if len(who) > 1:
                report.duplicate_owners.append({"ip": ip, "owners": who})
        kvs, _ = self.client.list(keys.HANDLE_PREFIX)
        stored_handles = {kv.key[len(keys.HANDLE_PREFIX):] for kv in kvs}
        report.handles_without_ips = sorted(stored_handles - set(handle_counts))
        report.handles_missing = sorted(set(handle_counts) - stored_handles)
        return report

    def release_leaked(self, report: CheckReport | None = None) -> list[str]:
        """Release what a fresh check calls leaked (and stale handles). Returns the IPs freed."""
        report = report or self.check()
        ips = [item["ip"] for item in report.leaked]
        self.release_ips(ips)
        for handle in report.handles_without_ips:
            self.client.delete(keys.handle_key(handle))
        return ips


def _windows(items: Iterator[str], size: int) -> Iterator[list[str]]:
    """``items`` in consecutive lists of ``size`` (the last one shorter)."""
    while window := list(itertools.islice(items, size)):
        yield window
