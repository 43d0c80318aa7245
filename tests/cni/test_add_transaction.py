"""The ADD transaction's one undo stack: a failure in any step leaves nothing behind, in
both orders (overlapped as the fast-path server runs it, in order as in-process does).

The failure is injected by a subclass whose chosen step raises after doing its work, so
everything before it is real (netns, veth, etcd); what is checked is the real leftovers.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from pycalico.cni.add import AddTransaction
from pycalico.cni.netconf import parse_netconf
from pycalico.cni.plugin import PLUGIN, execute, to_cni_error
from pycalico.cni.runtime import Runtime
from pycalico.cni.spec import DATAPLANE, CniRequest
from pycalico.errors import DataplaneError
from tests.cni.conftest import leftovers
from tests.support.cni_env import CniEnv

pytestmark = pytest.mark.netns

STEPS = ("veth", "assign", "address", "route", "endpoint")


@pytest.fixture(scope="module")
def env() -> Iterator[CniEnv]:
    import os

    if os.geteuid() != 0:
        pytest.skip("needs root for network namespaces")
    with CniEnv("t" + uuid.uuid4().hex[:5], fast=False) as made:
        yield made


def failing_at(step: str, done: list[str]) -> type[AddTransaction]:
    class Failing(AddTransaction):
        def _record(self, name: str) -> None:
            done.append(name)
            if name == step:
                raise DataplaneError(f"injected failure after the {step} step")

        def step_veth(self) -> None:
            super().step_veth()
            self._record("veth")

        def step_assign(self) -> None:
            super().step_assign()
            self._record("assign")

        def step_address(self, addrs: Any) -> None:
            super().step_address(addrs)
            if addrs is self.addresses:  # the committed addresses, not an early guess
                self._record("address")

        def step_route(self) -> None:
            super().step_route()
            self._record("route")

        def step_endpoint(self) -> None:
            super().step_endpoint()
            self._record("endpoint")

    return Failing


@pytest.mark.parametrize("overlapped", [True, False], ids=["overlapped", "in-order"])
@pytest.mark.parametrize("step", STEPS)
def test_a_failure_after_any_step_leaves_nothing(env: CniEnv, step: str, overlapped: bool) -> None:
    name, ns_path, container_id = env.new_pod(f"{step[:3]}{int(overlapped)}")
    runtime = Runtime(parallel=overlapped)
    runtime.split_below = 100 if overlapped else -1
    done: list[str] = []
    try:
        stdin = json.dumps(env.netconf()).encode()
        req = CniRequest.from_env(env.env("ADD", container_id, ns_path), stdin)
        conf = parse_netconf(json.loads(stdin), "1.0.0")
        transaction = failing_at(step, done)(req, conf, runtime)
        with pytest.raises(DataplaneError) as failure:
            transaction.run()
        assert to_cni_error(failure.value).code == DATAPLANE
        assert step in done
        assert [entry for entry, _ in transaction._undo] == []  # the stack was run to the end
        assert leftovers(env) == []
        # the same pod then adds cleanly: nothing of the failed attempt is in its way
        code, out = execute(PLUGIN, env.env("ADD", container_id, ns_path), stdin, runtime)
        assert code == 0, out
        code, out = execute(PLUGIN, env.env("DEL", container_id, ns_path), stdin, runtime)
        assert code == 0, out
        assert leftovers(env) == []
    finally:
        runtime.close()
        env.remove_pod(name)


def test_both_orders_run_the_same_named_steps(env: CniEnv) -> None:
    orders: dict[bool, list[str]] = {}
    for overlapped in (True, False):
        name, ns_path, container_id = env.new_pod(f"order{int(overlapped)}")
        runtime = Runtime(parallel=overlapped)
        runtime.split_below = 100 if overlapped else -1
        done: list[str] = []
        try:
            stdin = json.dumps(env.netconf()).encode()
            req = CniRequest.from_env(env.env("ADD", container_id, ns_path), stdin)
            transaction = failing_at("none", done)(req, parse_netconf(json.loads(stdin), "1.0.0"), runtime)
            result = transaction.run()
            assert result["ips"][0]["address"] == f"{transaction.addresses[0].ip}/32"
            orders[overlapped] = done
            code, out = execute(PLUGIN, env.env("DEL", container_id, ns_path), stdin, runtime)
            assert code == 0, out
        finally:
            runtime.close()
            env.remove_pod(name)
    assert sorted(orders[True]) == sorted(orders[False]) == sorted(STEPS)
    assert orders[False] == list(STEPS)
    assert leftovers(env) == []
