"""verify.yml's check modules (node_check, test_pod, pod_probe, verify_report) on namespace
nodes running the real agent, confd, BIRD and CNI plugin: a healthy cluster passes, and each
injected fault — a wrong MTU on one host, UDP 4789 dropped on one host, a BGP session down, a
stopped agent — fails with the broken pair named in the report.

The modules run the way Ansible runs them on a node (their main(), in a process inside the host's
network namespace), in the order verify.yml runs them; the playbook itself is run by the
molecule scenarios (docs/testing.md)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from pycalico.bgp import bird
from pycalico.bgp.config import peer_name
from tests.support.cluster import Cluster, running_cluster
from tests.support.topology import Host, poll

pytestmark = pytest.mark.netns

RUNNER = """
import contextlib, importlib, io, json, os, sys
if len(sys.argv) > 3:  # enter only the network namespace: netns made here stay visible to the agent
    import ctypes
    fd = os.open("/run/netns/" + sys.argv[3], os.O_RDONLY)
    if ctypes.CDLL(None, use_errno=True).setns(fd, 0x40000000) != 0:
        raise OSError(ctypes.get_errno(), "setns")
from ansible.module_utils.testing import patch_module_args
code = importlib.import_module("ansible_collections.pycalico.network.plugins.modules." + sys.argv[1])
out = io.StringIO()
with patch_module_args(json.loads(sys.argv[2])), contextlib.redirect_stdout(out):
    with contextlib.suppress(SystemExit):
        code.main()
sys.stdout.write(out.getvalue())
"""


class Verifier:
    """verify.yml's sequence against a namespace cluster."""

    def __init__(self, cl: Cluster, connection: dict[str, Any], collections_path: Path, tmp: Path) -> None:
        self.cl, self.connection, self.collections_path, self.tmp = cl, connection, collections_path, tmp
        self.conflist = tmp / "10-pycalico.conflist"
        self.nat_address = cl.topo.outside_ip

    def module(self, host: Host | None, module_name: str, /, **args: Any) -> dict[str, Any]:
        """``ip netns exec`` (its own /sys, for the tunnel counters), except for test_pod: the
        namespaces it makes must be visible to the agent, which ``ip netns exec``'s private
        mounts would hide (on a real node there is one mount namespace)."""
        params = {**args, "_ansible_check_mode": False}
        argv = [sys.executable, "-c", RUNNER, module_name, json.dumps(params)]
        if host is not None and module_name == "test_pod":
            argv.append(host.ns)
        elif host is not None:
            argv = ["ip", "netns", "exec", host.ns, *argv]
        env = host.env() if host is not None else {}
        env["PYTHONPATH"] = str(self.collections_path)
        proc = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=180, check=False)
        try:
            return json.loads(proc.stdout)
        except json.JSONDecodeError:
            raise AssertionError(f"{module_name} printed no JSON: {proc.stdout[-2000:]} {proc.stderr[-2000:]}") \
                from None

    def write_conflist(self, host: Host) -> Path:
        """The conflist the cni role installs, plus the namespace node's state paths."""
        env = host.env()
        path = self.tmp / f"{host.name}.conflist"
        path.write_text(json.dumps({"name": "k8s-pod-network", "cniVersion": "1.0.0", "plugins": [{
            "type": "pycalico", "datastore_type": "etcdv3", "etcd_endpoints": env["ETCD_ENDPOINTS"],
            "etcd_ca_cert_file": env["ETCD_CA_CERT_FILE"], "etcd_cert_file": env["ETCD_CERT_FILE"],
            "etcd_key_file": env["ETCD_KEY_FILE"], "nodename_file": str(host.state_dir / "nodename"),
            "mtu_file": str(host.state_dir / "mtu"), "ipam_lock_file": str(host.run_dir / "ipam.lock"),
            "log_file_path": str(host.dir / "cni.log"), "mtu": 0, "ipam": {"type": "pycalico-ipam"}}]}))
        return path

    def run(self, pods_too: bool = True) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        """verify.yml's tasks; without ``pods_too`` only node_check (faults it alone must name)."""
        rows: list[dict[str, Any]] = []
        hosts = self.cl.hosts
        for i, host in enumerate(hosts):
            out = self.module(host, "node_check", **self.connection, nodename=host.name,
                              health_port=9099, bird_socket=str(host.bird_ctl), expected_cidr="10.77.0.0/16",
                              ipam_check=i == 0)
            rows += out["rows"]
        pods: dict[str, dict[str, Any]] = {}
        if not pods_too:
            hosts = []
        cni = {h.name: dict(cni_bin_dir=self.cl.cni_bin(), conflist=str(self.write_conflist(h)),
                            cni_env={"PYCALICO_CNI_SOCKET": str(h.run_dir / "cni.sock")}) for h in hosts}
        try:
            for host in hosts:
                out = self.module(host, "test_pod", name=f"{self.cl.topo.prefix}v", node=host.name, **cni[host.name])
                pods[host.name] = out["pod"]
                rows += out["rows"]
            for host in hosts:  # throttle: 1, as in verify.yml
                targets = [pods[h.name] for h in hosts if h is not host]
                out = self.module(host, "pod_probe", **self.connection, node=host.name, pod=pods[host.name],
                                  targets=targets, nat_address=self.nat_address, settle_timeout=5)
                rows += out["rows"]
        finally:
            for host in hosts:
                if host.name in pods:
                    rows += self.module(host, "test_pod", state="absent", node=host.name, pod=pods[host.name],
                                        **cni[host.name])["rows"]
        for pod in pods.values():
            assert not Path(f"/run/netns/{pod['netns']}").exists(), f"{pod['netns']} left behind"
        report = self.module(None, "verify_report", rows=rows, json_path=str(self.tmp / "verify.json"),
                             text_path=str(self.tmp / "verify.txt"))
        return rows, report


def failed(rows: list[dict[str, Any]], check: str) -> set[tuple[str, str]]:
    """(node, peer) of the failed rows of one check, names only."""
    return {(r["node"].split(" ")[0], r["peer"].split(" ")[0]) for r in rows if r["check"] == check and not r["ok"]}


def test_verify_passes_healthy_and_names_the_broken_pair_per_fault(etcd_cluster, etcd, unique, connection,
                                                                   collections_path, tmp_path):
    with running_cluster(etcd_cluster, etcd, unique, [2, 1], outside=True) as cl:
        cl.create_pool("10.246.0.0/16", vxlan="CrossSubnet", nat=True)
        cl.start()
        a, b, c = cl.hosts
        for h in cl.hosts:
            poll(lambda h=h: h.ctl("node", "status", check=False).stdout.count("Established") == 2, 30,
                 what=f"{h.name} mesh up")
        v = Verifier(cl, connection, collections_path, tmp_path)

        rows, report = v.run()
        assert report.get("failed") is not True, report.get("report", report)
        checks = {r["check"] for r in rows}
        assert {"readiness", "address", "bgp", "test_pod", "ping", "mtu", "encapsulation", "ipam", "nat"} <= checks
        assert sum(1 for r in rows if r["check"] == "ping") == 6 and sum(r["check"] == "bgp" for r in rows) == 6
        enc = {(r["node"].split(" ")[0], r["peer"].split(" ")[0]): r["detail"] for r in rows
               if r["check"] == "encapsulation"}
        assert "vxlan.calico tx +" in enc[(a.name, c.name)] and "direct expected" in enc[(a.name, b.name)]
        saved = json.loads((tmp_path / "verify.json").read_text())
        assert saved["ok"] is True and len(saved["rows"]) == len(rows)
        assert "Pod to pod ping: all 6 ok" in (tmp_path / "verify.txt").read_text()

        # a wrong MTU on one host: b's uplink narrower than the pod MTU; plain pings still pass
        b.run("ip", "link", "set", "eth0", "mtu", "1300")
        try:
            rows, report = v.run()
        finally:
            b.run("ip", "link", "set", "eth0", "mtu", "1500")
        assert report["failed"] is True
        assert failed(rows, "ping") == set()
        assert (a.name, b.name) in failed(rows, "mtu") and (b.name, a.name) in failed(rows, "mtu")
        assert all(b.name in pair for pair in failed(rows, "mtu")), failed(rows, "mtu")
        assert f"mtu {a.name}" in report["msg"] and b.name in report["msg"]

        # UDP 4789 dropped on c (the other subnet: every pair with c is VXLAN)
        drop = ["PREROUTING", "-p", "udp", "--dport", "4789", "-j", "DROP"]
        c.run("iptables", "-t", "raw", "-I", *drop)
        try:
            rows, report = v.run()
        finally:
            c.run("iptables", "-t", "raw", "-D", *drop)
        assert failed(rows, "ping") == {(a.name, c.name), (b.name, c.name), (c.name, a.name), (c.name, b.name)}
        assert f"ping {a.name}" in report["msg"] and f"-> {c.name}" in report["msg"]

        # a BGP session down: a disables its session to b
        proto = peer_name("mesh", b.addr)
        bird.command(str(a.bird_ctl), f"disable {proto}")
        try:
            rows, report = v.run(pods_too=False)
        finally:
            bird.command(str(a.bird_ctl), f"enable {proto}")
        assert failed(rows, "bgp") >= {(a.name, b.name)} and failed(rows, "bgp") <= {(a.name, b.name),
                                                                                    (b.name, a.name)}
        assert f"bgp {a.name} -> {b.name}" in report["msg"]

        # a stopped agent on c
        c.stop("agent")
        rows, report = v.run(pods_too=False)
        assert (c.name, "-") in {(n, p or "-") for n, p in failed(rows, "readiness")}
        assert {r["node"] for r in rows if r["check"] == "readiness" and not r["ok"]} == {c.name}
        assert f"readiness {c.name}" in report["msg"]


def test_plain_test_pods_leave_out_the_kubernetes_sections(collections_path: Path, tmp_path: Path) -> None:
    """verify.yml's test pods on a Kubernetes network: no Pod object exists for them, so they are
    added as plain CNI containers of the same network (its policy and kubernetes sections left out)."""
    import importlib

    netcheck = importlib.import_module("ansible_collections.pycalico.network.plugins.module_utils.netcheck")
    conflist = tmp_path / "10-pycalico.conflist"
    conflist.write_text(json.dumps({"cniVersion": "1.0.0", "name": "k8s-pod-network", "plugins": [
        {"type": "pycalico", "mtu": 1450, "policy": {"type": "k8s"}, "kubernetes": {"kubeconfig": "/root/.kube/config"},
         "ipam": {"type": "pycalico-ipam"}}, {"type": "portmap", "capabilities": {"portMappings": True}}]}))
    full = netcheck.plugin_conf(str(conflist))
    plain = netcheck.plugin_conf(str(conflist), plain=True)
    assert full["policy"] == {"type": "k8s"} and full["kubernetes"]["kubeconfig"] == "/root/.kube/config"
    assert "policy" not in plain and "kubernetes" not in plain
    assert {k: v for k, v in full.items() if k not in ("policy", "kubernetes")} == plain
    assert plain["name"] == "k8s-pod-network" and plain["mtu"] == 1450
