"""A pycalico cluster on a namespace topology: real etcd, agent, confd, BIRD, pods.

Pods come from the real CNI plugin (``add_pod_cni``: through the agent's fast-path
socket, or in-process), or — where a test needs many quickly or a pool choice —
from the real IPAM plus a WorkloadEndpoint and a netns built the way the plugin
builds it (``add_pod``).
"""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

from pycalico.cni.install import install
from pycalico.datastore.etcd import EtcdClient
from pycalico.ipam import IPAM, handle_id
from pycalico.model import IPPool, Profile, ResourceStore, WorkloadEndpoint, wep_name
from tests.support.etcd import EtcdCluster
from tests.support.topology import Host, Pod, Topology, nsexec, poll, sh


def etcd_env(cluster: EtcdCluster) -> dict[str, str]:
    pki = cluster.pki
    return {
        "ETCD_ENDPOINTS": ",".join(cluster.endpoints),
        "ETCD_CA_CERT_FILE": str(pki.ca),
        "ETCD_CERT_FILE": str(pki.client_cert),
        "ETCD_KEY_FILE": str(pki.client_key),
    }


def etcd_ports(cluster: EtcdCluster) -> list[int]:
    return [m.client_port for m in cluster.members]


class Cluster:
    def __init__(self, topo: Topology, client: EtcdClient) -> None:
        self.topo = topo
        self.client = client
        self.store = ResourceStore(client)
        self.ipam = IPAM(client)

    @property
    def hosts(self) -> list[Host]:
        return self.topo.hosts

    def create_pool(self, cidr: str, *, name: str = "default-ipv4-ippool", ipip: str = "Never",
                    vxlan: str = "Never", nat: bool = False, block_size: int = 26) -> IPPool:
        return self.store.create(IPPool(name, {"cidr": cidr, "ipipMode": ipip, "vxlanMode": vxlan,
                                               "natOutgoing": nat, "blockSize": block_size}))

    def ensure_namespace_profile(self, namespace: str = "default", labels: dict[str, str] | None = None) -> None:
        """``kns.<namespace>`` as kube-controllers writes it: allow all, the namespace's labels as ``pcns.``."""
        if self.store.get(Profile, f"kns.{namespace}") is None:
            apply = {f"pcns.{k}": v for k, v in (labels or {}).items()}
            apply["pcns.projectcalico.org/name"] = namespace
            self.store.apply(Profile(f"kns.{namespace}", {"ingress": [{"action": "Allow"}],
                                                          "egress": [{"action": "Allow"}], "labelsToApply": apply}))

    def add_pod(self, host: Host, name: str, pools: list[str] | None = None, mtu: int = 1500, *,
                namespace: str = "default", labels: dict[str, str] | None = None,
                ports: list[dict[str, object]] | None = None, profiles: list[str] | None = None) -> Pod:
        """A pod as the CNI plugin in Kubernetes mode makes it (``kns.<namespace>`` profile, which is
        created as kube-controllers would when the test did not make it)."""
        if profiles is None:
            self.ensure_namespace_profile(namespace)
            profiles = [f"kns.{namespace}"]
        container = f"{host.name}-{namespace}-{name}"
        handle = handle_id("k8s-pod-network", container)
        ips = self.ipam.auto_assign(handle, {"node": host.name, "namespace": namespace, "pod": name}, host.name,
                                    pools=pools)
        ip = str(ips[0].ip)
        pod = host.add_pod(name if namespace == "default" else f"{namespace}-{name}", ip, mtu=mtu)
        spec: dict[str, object] = {
            "orchestrator": "k8s", "workload": "", "node": host.name, "containerID": container, "pod": name,
            "endpoint": "eth0", "ipNetworks": [f"{ip}/32"], "interfaceName": pod.veth, "profiles": profiles,
        }
        if ports:
            spec["ports"] = ports
        wep = WorkloadEndpoint(wep_name(host.name, "k8s", name, "eth0"), spec, namespace=namespace,
                               metadata={"labels": dict(labels or {})})
        self.store.create(wep)
        return pod

    def cni_bin(self) -> str:
        bin_dir = self.topo.dir / "cni-bin"
        if not (bin_dir / "pycalico").exists():
            install(bin_dir, sys.executable)
        return str(bin_dir)

    def add_pod_cni(self, host: Host, name: str, *, fast: bool = True, namespace: str = "default",
                    kubeconfig: str = "") -> Pod:
        """A pod made by the real CNI plugin: through the agent's socket (``fast``) or in-process.
        With ``kubeconfig``, in the plugin's Kubernetes mode (``policy.type: k8s``): the pod
        ``namespace/name`` must exist in that API."""
        pod_ns = f"{host.ns}-{name}"
        sh("ip", "netns", "add", pod_ns)
        self.topo._namespaces.append(pod_ns)
        container = f"{name}{uuid.uuid4().hex[:12]}"
        env = host.env()
        conf = {
            "cniVersion": "1.0.0", "name": "k8s-pod-network", "type": "pycalico", "datastore_type": "etcdv3",
            "etcd_endpoints": env["ETCD_ENDPOINTS"], "etcd_ca_cert_file": env["ETCD_CA_CERT_FILE"],
            "etcd_cert_file": env["ETCD_CERT_FILE"], "etcd_key_file": env["ETCD_KEY_FILE"],
            "nodename_file": str(host.state_dir / "nodename"), "mtu_file": str(host.state_dir / "mtu"),
            "ipam_lock_file": str(host.run_dir / "ipam.lock"), "log_file_path": str(host.dir / "cni.log"),
            "mtu": 0, "ipam": {"type": "pycalico-ipam"},
        }
        if kubeconfig:
            conf.update({"kubernetes": {"kubeconfig": kubeconfig}, "policy": {"type": "k8s"}})
        cni_env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "CNI_COMMAND": "ADD", "CNI_CONTAINERID": container,
                   "CNI_NETNS": f"/run/netns/{pod_ns}", "CNI_IFNAME": "eth0", "CNI_PATH": self.cni_bin(),
                   "CNI_ARGS": f"K8S_POD_NAMESPACE={namespace};K8S_POD_NAME={name};"
                               f"K8S_POD_INFRA_CONTAINER_ID={container}"}
        if fast:
            cni_env["PYCALICO_CNI_SOCKET"] = str(host.run_dir / "cni.sock")
        else:
            cni_env["PYCALICO_CNI_NO_FAST_PATH"] = "1"
        proc = subprocess.run(["ip", "netns", "exec", host.ns, f"{self.cni_bin()}/pycalico"],
                              input=json.dumps(conf).encode(), env=cni_env, capture_output=True, timeout=120)
        if proc.returncode != 0:
            raise RuntimeError(f"CNI ADD failed ({proc.returncode}): {proc.stdout.decode()} {proc.stderr.decode()}")
        result = json.loads(proc.stdout)
        ip = result["ips"][0]["address"].split("/")[0]
        veth = next(i["name"] for i in result["interfaces"] if not i.get("sandbox"))
        pod = Pod(name, pod_ns, host, ip, veth)
        host.pods.append(pod)
        return pod

    def start(self, *, bird: bool = True, **env: str) -> None:
        for host in self.hosts:
            host.start_agent(**env)
        for host in self.hosts:
            poll((host.state_dir / "nodename").exists, 30, what=f"agent on {host.name} registered")
        if bird:
            for host in self.hosts:
                host.start_confd(**env)
            for host in self.hosts:
                host.start_bird()

    def diagnostics(self) -> str:
        out = []
        for h in self.hosts:
            out.append(f"==== {h.name} routes\n{h.routes()}")
            for name in ("agent", "confd", "bird"):
                out.append(f"---- {h.name} {name} log (tail)\n{h.log(name)[-3000:]}")
        return "\n".join(out)


def ping(pod: Pod, ip: str, count: int = 1, timeout: int = 2, interval: float = 0.02) -> bool:
    """True when the pings are answered (ping exits 0 when any reply came back)."""
    proc = nsexec(pod.ns, "ping", "-c", str(count), "-i", str(interval), "-W", str(timeout), "-q", ip, check=False,
                  timeout=count * timeout + 10)
    return proc.returncode == 0


def ping_until(pod: Pod, ip: str, timeout: float = 15.0) -> None:
    poll(lambda: ping(pod, ip, 1, 1), timeout, interval=0.1, what=f"{pod.name} ({pod.ip}) -> {ip}")


@contextmanager
def background_ping(pod: Pod, ip: str, interval: float = 0.05, count: int = 0) -> Iterator[subprocess.Popen[str]]:
    """A stream of pings; the caller reads the summary after the block. With ``count`` the
    block waits for the last ping instead of interrupting."""
    argv = ["ip", "netns", "exec", pod.ns, "ping", "-q", "-i", str(interval), "-W", "1"]
    if count:
        argv += ["-c", str(count)]
    proc = subprocess.Popen(argv + [ip], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        yield proc
    finally:
        if count:
            proc.wait(count * interval + 30)
        if proc.poll() is None:
            proc.send_signal(2)
        proc.wait(10)


def ping_summary(proc: subprocess.Popen[str]) -> tuple[int, int]:
    """(transmitted, received) from ping's summary line."""
    out = proc.stdout.read() if proc.stdout else ""
    for line in out.splitlines():
        if "packets transmitted" in line:
            parts = line.split(",")
            return int(parts[0].split()[0]), int(parts[1].split()[0])
    raise AssertionError(f"no ping summary in: {out[-500:]}")


@contextmanager
def running_cluster(etcd_cluster: EtcdCluster, client: EtcdClient, prefix: str, subnets: list[int], *,
                    outside: bool = False, env: dict[str, str] | None = None,
                    forward_ports: list[int] | None = None) -> Iterator[Cluster]:
    """``forward_ports``: more loopback ports the nodes reach on the host, as they reach etcd's
    (e.g. a stand-in Kubernetes API)."""
    base = etcd_env(etcd_cluster)
    base.update({"PYCALICO_RESYNC_INTERVAL": "2", "PYCALICO_STATUS_INTERVAL": "5"})
    base.update(env or {})
    ports = etcd_ports(etcd_cluster) + list(forward_ports or [])
    with Topology(prefix, subnets, etcd_ports=ports, base_env=base, outside=outside) as topo:
        cluster = Cluster(topo, client)
        try:
            yield cluster
        except BaseException:
            print(cluster.diagnostics())
            raise
