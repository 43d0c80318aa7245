"""The fast path's warm state must not make IPAM wrong: the agent's cache of blocks and
handles goes stale whenever another process (the in-process fallback, another tool)
writes, and compare-and-swap has to catch every such case."""

from __future__ import annotations

import os
import signal
import subprocess
from concurrent.futures import ThreadPoolExecutor

import pytest

from pycalico.ipam import IPAM
from pycalico.model import WorkloadEndpoint
from tests.cni.conftest import leftovers
from tests.support.cni_env import CniEnv
from tests.support.poll import wait_until

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


def test_a_lost_race_readdresses_the_pod_with_the_address_ipam_kept(cni: CniEnv) -> None:
    """The server addresses the pod with what IPAM is committing while it commits. When
    that commit loses (its remembered block was stale), the pod ends up with the address
    IPAM kept and nothing of the first try. etcd is paused (SIGSTOP) during the ADD so
    that the pod is seen carrying the first address before the commit is answered."""
    if not cni.fast:
        pytest.skip("needs the fast-path server")
    assert cni.etcd is not None and cni.etcd.members[0].proc is not None
    etcd_pid = cni.etcd.members[0].proc.pid
    warm, pod = cni.new_pod("race0"), cni.new_pod("race1")
    ipam = IPAM(cni.client)

    def pod_addresses() -> str:
        return subprocess.run(["ip", "-n", pod[0], "-o", "-4", "addr", "show"], capture_output=True, text=True,
                              check=True).stdout

    def host_route_to(ip: str) -> str:
        routes = subprocess.run(["ip", "-o", "-4", "route", "show"], capture_output=True, text=True,
                                check=True).stdout
        return next((line for line in routes.splitlines() if line.startswith(f"{ip} ")), "")

    try:
        assert cni.cni("ADD", warm[2], warm[1]).code == 0  # the server now remembers this node's block
        # Behind its back: the address its remembered block says is next.
        [outside] = ipam.auto_assign("outsider.race", {"node": cni.nodename}, cni.nodename)
        os.kill(etcd_pid, signal.SIGSTOP)
        try:
            with ThreadPoolExecutor(1) as pool:
                adding = pool.submit(cni.cni, "ADD", pod[2], pod[1])
                assert wait_until(lambda: f" {outside.ip}/32 " in pod_addresses(), timeout=10)
                # The host's route waits for the commit: that address belongs to the outsider.
                assert not host_route_to(str(outside.ip))
                os.kill(etcd_pid, signal.SIGCONT)
                out = adding.result(timeout=60)
        finally:
            os.kill(etcd_pid, signal.SIGCONT)
        assert out.code == 0, out.stdout
        ip = out.json["ips"][0]["address"].split("/")[0]
        assert ip != str(outside.ip)
        log = (cni.base / "cni.log").read_text()
        assert f"ADD {pod[2]}: IPAM took ['{ip}'], not ['{outside.ip}']; readdressing the pod" in log
        addrs = pod_addresses()
        assert f" {ip}/32 " in addrs and f" {outside.ip}/" not in addrs
        assert host_route_to(ip).startswith(f"{ip} dev cali") and not host_route_to(str(outside.ip))
        [wep] = [w for w in cni.store.list(WorkloadEndpoint) if w.container_id == pod[2]]
        assert wep.spec["ipNetworks"] == [f"{ip}/32"]
        assert cni.cni("CHECK", pod[2], pod[1], conf=cni.netconf(prevResult=out.json)).code == 0
    finally:
        for name, path, cid in (warm, pod):
            cni.cni("DEL", cid, path)
            cni.remove_pod(name)
        ipam.release_by_handle("outsider.race")
    assert leftovers(cni) == []
