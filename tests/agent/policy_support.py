"""Helpers for the policy tests: write resources and wait until every agent enforces them.

"Enforced" is read from the agents themselves: each exposes, per watched prefix, the
datastore revision its dataplane reflects (``pycalico_agent_applied_revision``), so a
test waits for the revision of its own write instead of sleeping.
"""

from __future__ import annotations

import base64
import functools
import json
import re
import urllib.request
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from pycalico.datastore.etcd import EtcdClient
from pycalico.model import Resource
from tests.support.cluster import Cluster
from tests.support.topology import Host, in_netns, poll
from tests.support.traffic import Case

_GAUGE = re.compile(r'pycalico_agent_applied_revision\{source="([a-z]+)"\} ([0-9.e+]+)')


def applied_revisions(host: Host) -> dict[str, int]:
    with in_netns(host.ns), urllib.request.urlopen("http://127.0.0.1:9091/metrics", timeout=3) as resp:
        body = resp.read().decode()
    return {m.group(1): int(float(m.group(2))) for m in _GAUGE.finditer(body)}


def metrics(host: Host) -> str:
    with in_netns(host.ns), urllib.request.urlopen("http://127.0.0.1:9091/metrics", timeout=3) as resp:
        return resp.read().decode()


def _applied_at_least(host: Host, source: str, revision: int) -> bool:
    return applied_revisions(host).get(source, 0) >= revision


def last_written(client: EtcdClient, prefix: str) -> int:
    """The revision of the newest write under ``prefix``: what an agent that saw it reports.

    Not the list's header revision: a later write under another prefix raises that, and an
    agent's revision for this prefix only follows events of this prefix."""
    kvs, _ = client.list(prefix)
    return max((kv.mod_revision for kv in kvs), default=0)


def wait_applied(hosts: Iterable[Host], source: str, revision: int, timeout: float = 20.0) -> None:
    for host in hosts:
        poll(functools.partial(_applied_at_least, host, source, revision), timeout,
             what=f"{host.name} applied {source} revision {revision}")


def _source(res: Resource) -> str:
    return {"FelixConfiguration": "felix", "WorkloadEndpoint": "weps"}.get(res.KIND, res.PLURAL)


@dataclass
class Policies:
    """Resources a scenario writes; ``clear()`` deletes them again, each step waited for."""

    cluster: Cluster
    live: list[Resource] = field(default_factory=list)
    raw_keys: list[tuple[str, str]] = field(default_factory=list)  # (key, source) written around the model

    def create(self, *resources: Resource) -> None:
        for res in resources:
            created = self.cluster.store.create(res)
            self.live.append(created)
            wait_applied(self.cluster.hosts, _source(res), int(created.resource_version))

    def put_raw(self, key: str, value: dict[str, Any], source: str) -> None:
        """Straight into etcd, as something other than the API client would write it."""
        revision = self.cluster.client.put(key, json.dumps(value))
        self.raw_keys.append((key, source))
        if source in ("networkpolicies", "globalnetworkpolicies", "profiles", "tiers"):
            wait_applied(self.cluster.hosts, source, revision)

    def delete(self, key: str, source: str) -> None:
        resp = self.cluster.client.txn([], [{"request_delete_range": {"key": base64.b64encode(key.encode()).decode()}}])
        revision = int(resp["header"]["revision"])
        if source in ("networkpolicies", "globalnetworkpolicies", "profiles", "tiers", "felix", "networksets",
                      "globalnetworksets", "hostendpoints", "weps"):
            wait_applied(self.cluster.hosts, source, revision)

    def clear(self) -> None:
        # policies first, then the tiers they sit in
        order = sorted(self.live, key=lambda r: r.KIND == "Tier")
        for res in order:
            self.delete(res.key(), _source(res))
        for key, source in self.raw_keys:
            self.delete(key, source)
        self.live, self.raw_keys = [], []


@dataclass(frozen=True)
class At:
    """A place traffic starts or ends: a namespace and an address in it."""

    ns: str
    ip: str


def T(src: Any, dst: Any, proto: str, port: int | None, expect: bool, label: str, **kw: Any) -> tuple[Case, bool]:
    """One row of a truth table."""
    return Case(src, dst, proto, port, label=label, **kw), expect
