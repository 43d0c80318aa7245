"""etcd RBAC on a shared etcd: pycalico.network.etcd_auth against its own real TLS etcd
(never the session's shared one: auth stays on here).

Who is who, as etcd 3.4 decides it:
- kube-apiserver and Calico's Go client speak gRPC: the client certificate's CN is the user
  (checked here with etcdctl, which speaks gRPC too);
- pycalico speaks to the JSON gateway: with auth on a certificate with a CN is refused, one
  without a CN is the user named by the member certificate's CN (``server`` in this PKI).
"""

from __future__ import annotations

import contextlib
import importlib
import io
import json
import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from ipaddress import IPv4Network
from pathlib import Path
from typing import Any

import pytest

from pycalico.datastore.etcd import EtcdClient, TlsConfig
from pycalico.errors import DatastoreError
from pycalico.ipam import IPAM
from pycalico.model import IPPool, ResourceStore
from tests.support.etcd import ETCDCTL_BIN, EtcdCluster, issue_client_cert

ROOT_PASSWORD = "s3cret-for-tests-only"

# What roles/etcd asks for by default (roles/etcd/defaults/main.yml).
RBAC: dict[str, Any] = {
    "roles": [
        {"name": "pycalico", "permissions": [{"prefix": "/calico/"}, {"key": "\0", "type": "read"}]},
        {"name": "kube-apiserver", "permissions": [{"prefix": "/registry/"}, {"key": "compact_rev_key"}]},
    ],
    "users": [
        {"name": "kubernetes", "roles": ["kube-apiserver"]},
        {"name": "calico", "roles": ["pycalico"]},
    ],
    "gateway_role": "pycalico",
}


class AuthEtcd:
    """An etcd of this test alone, with client certificates for each identity."""

    def __init__(self, cluster: EtcdCluster) -> None:
        self.cluster = cluster
        pki = cluster.pki
        self.node = issue_client_cert(pki, "node", "/O=pycalico")           # pycalico's nodes: no CN
        self.apiserver = issue_client_cert(pki, "kubernetes", "/CN=kubernetes")  # kubeasz's kube-apiserver
        self.calico = issue_client_cert(pki, "calico", "/CN=calico")        # kubeasz's Calico (gRPC)
        self.root = issue_client_cert(pki, "root", "/CN=root")

    @property
    def endpoint(self) -> str:
        return self.cluster.endpoints[0]

    def connection(self) -> dict[str, Any]:
        cert, key = self.node
        return {"etcd_endpoints": self.cluster.endpoints, "etcd_ca_cert_file": str(self.cluster.pki.ca),
                "etcd_cert_file": str(cert), "etcd_key_file": str(key)}

    def gateway(self, identity: tuple[Path, Path]) -> EtcdClient:
        """pycalico's own client with one of the certificates."""
        cert, key = identity
        return EtcdClient(self.cluster.endpoints, TlsConfig(str(self.cluster.pki.ca), str(cert), str(key)),
                          timeout=5.0)

    def etcdctl(self, identity: tuple[Path, Path], *args: str) -> subprocess.CompletedProcess[str]:
        cert, key = identity
        return subprocess.run(
            [ETCDCTL_BIN, f"--endpoints={self.endpoint}", f"--cacert={self.cluster.pki.ca}", f"--cert={cert}",
             f"--key={key}", "--dial-timeout=3s", "--command-timeout=5s", *args],
            capture_output=True, text=True, timeout=30, check=False, env={**os.environ, "ETCDCTL_API": "3"})

    def auth_state(self) -> tuple[list[str], list[str]]:
        """Users and roles as root sees them over gRPC (CN=root), whether auth is on or off."""
        users = self.etcdctl(self.root, "user", "list")
        roles = self.etcdctl(self.root, "role", "list")
        assert users.returncode == 0 and roles.returncode == 0, users.stderr + roles.stderr
        return users.stdout.split(), roles.stdout.split()


@pytest.fixture
def auth_etcd(unique: str) -> Iterator[AuthEtcd]:
    cluster = EtcdCluster(prefix=f"{unique}-auth")
    try:
        etcd = AuthEtcd(cluster)
        cluster.start()
        yield etcd
    finally:
        cluster.stop()


def run_etcd_auth(collections_path: Path, check: bool = False, **params: Any) -> dict[str, Any]:
    """The module's main() in this process, as tests/collection/test_modules.py runs modules."""
    from ansible.module_utils.testing import patch_module_args

    code = importlib.import_module("ansible_collections.pycalico.network.plugins.modules.etcd_auth")
    out = io.StringIO()
    with patch_module_args({**params, "_ansible_check_mode": check, "_ansible_diff": True}), \
            contextlib.redirect_stdout(out):
        with contextlib.suppress(SystemExit):
            code.main()
    return json.loads(out.getvalue())


def test_rbac_then_auth_on_keeps_apiserver_and_nodes_and_fences_registry(collections_path, auth_etcd):
    conn = auth_etcd.connection()
    # Kubernetes data is there before (the shared etcd of a kubeasz cluster).
    seed = auth_etcd.gateway(auth_etcd.node)
    seed.put("/registry/secrets/kube-system/token", "secret")
    seed.close()

    first = run_etcd_auth(collections_path, **conn, root_password=ROOT_PASSWORD, **RBAC)
    assert first.get("failed") is not True, first
    assert first["changed"] is True and first["auth_enabled"] is True
    assert first["gateway_users"] == ["server"]
    assert first["actions"][-1] == "enable auth", "auth must be the last step"
    assert first["actions"].index("grant role kube-apiserver to user kubernetes") < first["actions"].index(
        "enable auth")
    assert first["diff"]["before"]["auth_enabled"] is False
    assert first["diff"]["after"]["users"] == {"calico": ["pycalico"], "kubernetes": ["kube-apiserver"],
                                               "root": ["root"], "server": ["pycalico"]}
    assert first["diff"]["after"]["roles"]["pycalico"] == sorted(
        [{"prefix": "/calico/", "type": "readwrite"}, {"key": "\0", "type": "read"}], key=json.dumps)
    assert ROOT_PASSWORD not in json.dumps(first)

    # A node (pycalico's client, certificate without CN) reads and writes /calico/ ...
    node = auth_etcd.gateway(auth_etcd.node)
    try:
        node.put("/calico/resources/v3/projectcalico.org/nodes/n1", '{"kind": "Node"}')
        assert node.get("/calico/resources/v3/projectcalico.org/nodes/n1") is not None
        node.revision()  # the CNI STATUS probe reads the key "\0"
        # What the agent and the CNI plugin do: a pool, an IPAM transaction, a lease, a watch.
        start = node.revision()
        ResourceStore(node).create(IPPool("default-ipv4-ippool", {"cidr": "10.244.0.0/16", "ipipMode": "Always"}))
        address = IPAM(node).auto_assign("k8s-pod-network.c0ffee", {"node": "n1"}, "n1")[0]
        lease = node.lease_grant(30)
        node.put("/calico/felix/v2/no-region/host/n1/status", "{}", lease=lease)
        assert node.lease_keepalive(lease) > 0
        node.lease_revoke(lease)
        stream = node.watch_stream("/calico/resources/", start)
        try:
            assert any(e.kv.key.endswith("/ippools/default-ipv4-ippool") for e in next(iter(stream)))
        finally:
            stream.close()
        # ... and nothing of Kubernetes.
        for attempt in (lambda: node.get("/registry/secrets/kube-system/token"),
                        lambda: node.put("/registry/secrets/kube-system/token", "stolen"),
                        lambda: node.list("/registry/")):
            with pytest.raises(DatastoreError, match="permission denied"):
                attempt()
    finally:
        node.close()
    assert address.ip in IPv4Network("10.244.0.0/16")

    # kube-apiserver (gRPC, CN kubernetes) keeps reading and writing /registry/ and its compaction key.
    api = auth_etcd.etcdctl(auth_etcd.apiserver, "get", "/registry/secrets/kube-system/token", "--print-value-only")
    assert api.returncode == 0 and api.stdout.strip() == "secret", api.stderr
    assert auth_etcd.etcdctl(auth_etcd.apiserver, "put", "/registry/pods/default/p1", "{}").returncode == 0
    assert auth_etcd.etcdctl(auth_etcd.apiserver, "put", "compact_rev_key", "1").returncode == 0
    assert "permission denied" in auth_etcd.etcdctl(auth_etcd.apiserver, "get", "/calico/", "--prefix").stderr

    # A node certificate named by CN over gRPC (kubeasz's calico.pem): /calico/ yes, /registry/ no.
    assert auth_etcd.etcdctl(auth_etcd.calico, "put", "/calico/x", "1").returncode == 0
    denied = auth_etcd.etcdctl(auth_etcd.calico, "get", "/registry/secrets/kube-system/token")
    assert denied.returncode != 0 and "permission denied" in denied.stderr

    # Over the gateway a certificate with a CN is refused outright once auth is on (why nodes carry none).
    named = auth_etcd.gateway(auth_etcd.apiserver)
    with pytest.raises(DatastoreError, match="CommonName"):
        named.get("/registry/pods/default/p1")
    named.close()

    second = run_etcd_auth(collections_path, **conn, root_password=ROOT_PASSWORD, **RBAC)
    assert second["changed"] is False and second["actions"] == [], second
    assert second["diff"]["before"] == second["diff"]["after"]


def test_check_mode_on_a_fresh_etcd_reports_and_changes_nothing(collections_path, auth_etcd):
    conn = auth_etcd.connection()
    checked = run_etcd_auth(collections_path, check=True, **conn, root_password=ROOT_PASSWORD, **RBAC)
    assert checked.get("failed") is not True, checked
    assert checked["changed"] is True and checked["auth_enabled"] is True
    assert checked["actions"][0] == "add role kube-apiserver" and checked["actions"][-1] == "enable auth"
    assert "add user root (with the root password)" in checked["actions"]
    assert "grant readwrite on prefix /registry/ to role kube-apiserver" in checked["actions"]
    assert checked["diff"]["before"] == {
        "auth_enabled": False,
        "roles": {"kube-apiserver": None, "pycalico": None},
        "users": {"calico": None, "kubernetes": None, "root": None, "server": None},
    }
    assert checked["diff"]["after"]["auth_enabled"] is True
    assert checked["diff"]["after"]["roles"]["kube-apiserver"] == [
        {"key": "compact_rev_key", "type": "readwrite"}, {"prefix": "/registry/", "type": "readwrite"}]

    assert auth_etcd.auth_state() == ([], [])
    still_open = auth_etcd.gateway(auth_etcd.apiserver)  # auth off: any certificate, any key
    try:
        still_open.put("/registry/x", "1")
    finally:
        still_open.close()


def test_refuses_what_would_lock_out_or_open_the_gateway(collections_path, auth_etcd):
    conn = auth_etcd.connection()
    named = {**conn, "etcd_cert_file": str(auth_etcd.apiserver[0]), "etcd_key_file": str(auth_etcd.apiserver[1])}
    out = run_etcd_auth(collections_path, **named, root_password=ROOT_PASSWORD, **RBAC)
    assert out["failed"] is True and "has Common Name 'kubernetes'" in out["msg"]

    unknown_role = {**RBAC, "users": [{"name": "kubernetes", "roles": ["kube-apiserverr"]}]}
    out = run_etcd_auth(collections_path, **conn, root_password=ROOT_PASSWORD, **unknown_role)
    assert out["failed"] is True and "kube-apiserverr" in out["msg"] and "users" in out["msg"]

    widened = {**RBAC, "users": [{"name": "server", "roles": ["kube-apiserver"]}]}
    out = run_etcd_auth(collections_path, **conn, root_password=ROOT_PASSWORD, **widened)
    assert out["failed"] is True and "gateway_users: server" in out["msg"] and "kube-apiserver" in out["msg"]
    assert auth_etcd.auth_state() == ([], []), "a refused run changed something"

    assert run_etcd_auth(collections_path, **conn, root_password=ROOT_PASSWORD, **RBAC)["changed"] is True
    wrong = run_etcd_auth(collections_path, **conn, root_password="not-it", **RBAC)
    assert wrong["failed"] is True and "refused the root password" in wrong["msg"]
    assert "not-it" not in json.dumps(wrong)


PLAYBOOK = """
- name: The pycalico client certificate the certs role issues
  hosts: localhost
  connection: local
  gather_facts: false
  roles:
    - role: pycalico.network.certs
      vars:
        certs_install_client: false

- name: RBAC and auth on, as roles/etcd does it
  hosts: localhost
  connection: local
  gather_facts: false
  tasks:
    - name: Users, roles, auth
      ansible.builtin.include_role:
        name: pycalico.network.etcd
        tasks_from: auth
"""


def test_etcd_role_sets_rbac_with_a_root_password_kept_on_the_deploy_host(playbook, tmp_path, auth_etcd):
    pb = tmp_path / "auth.yml"
    pb.write_text(PLAYBOOK)
    cert, key = auth_etcd.node
    password_file = tmp_path / "cluster" / "etcd-root-password"
    extra = {"certs_dir": str(tmp_path / "cluster" / "ssl"), "etcd_auth_endpoints": auth_etcd.cluster.endpoints,
             "etcd_auth_ca_cert_file": str(auth_etcd.cluster.pki.ca), "etcd_auth_cert_file": str(cert),
             "etcd_auth_key_file": str(key), "etcd_auth_root_password_file": str(password_file),
             "etcd_certs_src_dir": str(tmp_path / "cluster" / "ssl")}
    args = ["-i", "localhost,", "-e", f"ansible_python_interpreter={sys.executable}", "-e", json.dumps(extra)]

    first = playbook(pb, *args, "--diff")
    assert first.returncode == 0, first.stdout + first.stderr
    password = password_file.read_text().strip()
    assert len(password) == 32 and stat.S_IMODE(password_file.stat().st_mode) == 0o600
    assert password not in first.stdout + first.stderr
    users, roles = auth_etcd.auth_state()
    assert users == ["calico", "kubernetes", "root", "server"] and roles == ["kube-apiserver", "pycalico"]
    # Auth is on and the kept password is root's.
    login = auth_etcd.etcdctl(auth_etcd.node, f"--user=root:{password}", "user", "get", "root")
    assert login.returncode == 0 and "Roles: root" in login.stdout, login.stdout + login.stderr
    assert "permission denied" in auth_etcd.etcdctl(auth_etcd.node, "get", "/registry/", "--prefix").stderr

    # The certs role's client certificate is one the gateway still takes with auth on: no CN.
    issued = tmp_path / "cluster" / "ssl" / "pycalico.pem"
    subject = subprocess.run(["openssl", "x509", "-noout", "-subject", "-in", str(issued)], check=True,
                             capture_output=True, text=True).stdout
    assert "O = pycalico" in subject and "CN" not in subject, subject

    auth_only = tmp_path / "auth-only.yml"
    auth_only.write_text(PLAYBOOK[PLAYBOOK.index("- name: RBAC and auth on"):])
    again = playbook(auth_only, *args)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "changed=0" in again.stdout.rsplit("PLAY RECAP", 1)[1], again.stdout
