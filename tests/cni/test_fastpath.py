"""The fast path's warm state must not make IPAM wrong: the agent's cache of blocks and
handles goes stale whenever another process (the in-process fallback, another tool)
writes, and compare-and-swap has to catch every such case."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest

from pycalico.ipam import IPAM
from pycalico.model import WorkloadEndpoint
from tests.cni.conftest import leftovers
from tests.support.cni_env import CniEnv

pytestmark = pytest.mark.netns


def test_server_and_in_process_callers_never_share_an_address(cni: CniEnv) -> None:
    if not cni.fast:
        pytest.skip("needs the fast-path server")
    pods = [cni.new_pod(f"mix{i}") for i in range(16)]
    ipam = IPAM(cni.client)

    def add(i_pod: tuple[int, tuple[str, str, str]]):
        i, (_, path, cid) = i_pod
        env = cni.env("ADD", cid, path)
        if i % 2:
            env.pop("PYCALICO_CNI_SOCKET")
            env["PYCALICO_CNI_NO_FAST_PATH"] = "1"
        return cni.invoke(env, cni.netconf())

    try:
        # Behind the server's back: addresses taken straight through IPAM, in this process.
        taken = [ipam.auto_assign(f"outsider.{i}", {"node": cni.nodename}, cni.nodename)[0] for i in range(3)]
        with ThreadPoolExecutor(8) as pool:
            outs = list(pool.map(add, enumerate(pods)))
        assert [o.code for o in outs] == [0] * len(pods), [o.stdout for o in outs if o.code]
        ips = [o.json["ips"][0]["address"].split("/")[0] for o in outs]
        assert len(set(ips)) == len(ips)
        assert not set(ips) & {str(t.ip) for t in taken}
        assert len(cni.store.list(WorkloadEndpoint)) == len(pods)
        for i in range(3):
            ipam.release_by_handle(f"outsider.{i}")
        assert IPAM(cni.client).check().ok
        with ThreadPoolExecutor(8) as pool:
            dels = list(pool.map(lambda p: cni.cni("DEL", p[2], p[1]), pods))
        assert [d.code for d in dels] == [0] * len(pods)
        assert leftovers(cni) == []
    finally:
        for name, _, _ in pods:
            cni.remove_pod(name)
