"""Fixtures for the CNI tests: one node environment per module and per path.

Every test runs against both ways the executable works: through the agent's socket
(``fast``) and in-process (``inproc``, no server listening).
"""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import Iterator

import pytest

from pycalico.ipam import IPAM
from pycalico.model import WorkloadEndpoint, keys
from tests.support.cni_env import CniEnv


def _require_root() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root for network namespaces")


@pytest.fixture(scope="module", params=["fast", "inproc"])
def cni(request: pytest.FixtureRequest) -> Iterator[CniEnv]:
    _require_root()
    prefix = "c" + uuid.uuid4().hex[:5]
    with CniEnv(prefix, fast=request.param == "fast") as env:
        yield env


def host_links(prefix: str = "cali") -> list[str]:
    out = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True, check=True).stdout
    names = [line.split(":")[1].strip().split("@")[0] for line in out.splitlines() if ":" in line]
    return [n for n in names if n.startswith(prefix)]


def pod_links(netns: str) -> list[str]:
    out = subprocess.run(["ip", "-n", netns, "-o", "link", "show"], capture_output=True, text=True).stdout
    return [line.split(":")[1].strip().split("@")[0] for line in out.splitlines() if ":" in line]


def leftovers(env: CniEnv) -> list[str]:
    """Everything an attachment could leave behind, described; [] when clean."""
    found = [f"link {n}" for n in host_links()]
    found += [f"endpoint {w.namespace}/{w.name}" for w in env.store.list(WorkloadEndpoint)]
    kvs, _ = env.client.list(keys.HANDLE_PREFIX)
    found += [f"handle {kv.key}" for kv in kvs]
    for block in IPAM(env.client).blocks():
        found += [f"allocation {block.address(o)} ({attr.get('handle_id')})" for o, attr in block.allocated()]
    out = subprocess.run(["ip", "-o", "-4", "route", "show"], capture_output=True, text=True).stdout
    found += [f"route {line}" for line in out.splitlines() if "cali" in line]
    return found
