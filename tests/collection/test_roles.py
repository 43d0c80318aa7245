"""Roles: argument specs match defaults, templates render to what the node services
read (docs/interfaces.md), and the certs role really makes a working PKI."""

from __future__ import annotations

import json
import re
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.collection.conftest import REPO

ROLES = sorted(p.name for p in (REPO / "roles").iterdir() if (p / "tasks" / "main.yml").exists())


def recap(stdout: str, host: str) -> dict[str, int]:
    m = re.search(rf"^{re.escape(host)}\s+:\s+(.*)$", stdout, re.M)
    assert m, stdout
    return {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", m.group(1))}


@pytest.mark.parametrize("role", ROLES)
def test_argument_specs_document_every_default(role):
    defaults = yaml.safe_load((REPO / "roles" / role / "defaults" / "main.yml").read_text()) or {}
    specs = yaml.safe_load((REPO / "roles" / role / "meta" / "argument_specs.yml").read_text())["argument_specs"]
    options = specs["main"]["options"]
    assert sorted(defaults) == sorted(options)
    for name in defaults:
        assert name.startswith(role + "_"), f"{name} is not prefixed with the role name"
        assert options[name].get("description"), f"{name} has no description"
    for entry in specs.values():
        for name in entry["options"]:
            assert name in defaults, f"{name} documented but has no default"


def test_clean_removes_every_pycalico_unit():
    """Each pycalico unit a role installs is stopped by the clean role and its file removed."""
    defaults = yaml.safe_load((REPO / "roles" / "clean" / "defaults" / "main.yml").read_text())
    units = sorted(p.name.removesuffix(".j2") for p in (REPO / "roles").glob("*/templates/pycalico-*.service.j2"))
    assert len(units) >= 4
    assert sorted(defaults["clean_units"]) == units
    assert {f"/etc/systemd/system/{u}" for u in units} <= set(defaults["clean_paths"])
    assert "{{ clean_install_root }}" in defaults["clean_paths"]
    group_vars = yaml.safe_load((REPO / "playbooks" / "group_vars" / "all" / "pycalico.yml").read_text())
    assert group_vars["clean_install_root"] == "{{ pycalico_install_root }}"


@pytest.mark.parametrize("role", ROLES)
def test_templates_start_with_ansible_managed(role):
    for template in (REPO / "roles" / role / "templates").glob("*.j2") if (
            REPO / "roles" / role / "templates").exists() else []:
        text = template.read_text()
        assert "ansible_managed" in text.split("\n", 3)[0] or "ansible_managed" in text, template


RENDER = """
- name: Render the node templates
  hosts: localhost
  connection: local
  gather_facts: false
  vars:
    out: "{{ out_dir }}"
  vars_files:  # role defaults, below the task vars
    - "{{ repo }}/roles/agent/defaults/main.yml"
    - "{{ repo }}/roles/bgp/defaults/main.yml"
    - "{{ repo }}/roles/cni/defaults/main.yml"
    - "{{ repo }}/roles/etcd/defaults/main.yml"
  tasks:
    - name: Render
      ansible.builtin.template:
        src: "{{ repo }}/roles/{{ item.role }}/templates/{{ item.name }}.j2"
        dest: "{{ out }}/{{ item.name }}"
        mode: "0644"
      vars:
        agent_etcd_endpoints: https://192.168.1.1:2379,https://192.168.1.2:2379
        agent_nodename: worker-01
        agent_cluster_name: cluster1
        agent_pool_cidr: 172.20.0.0/16
        agent_rr_cluster_id: 244.0.0.1
        agent_node_labels: {route-reflector: "true", zone: a}
        agent_ip_autodetection_method: can-reach=192.168.1.1
        cni_etcd_endpoints: https://192.168.1.1:2379
        etcd_cluster_hosts: [192.168.1.1, 192.168.1.2, 192.168.1.3]
        etcd_address: 192.168.1.2
        inventory_hostname: 192.168.1.2
        __cni_chain_portmap: true
      loop:
        - {role: agent, name: pycalico.env}
        - {role: agent, name: pycalico-agent.service}
        - {role: bgp, name: pycalico-confd.service}
        - {role: bgp, name: pycalico-bird.service}
        - {role: cni, name: 10-pycalico.conflist}
        - {role: etcd, name: etcd.env}
        - {role: etcd, name: etcd.service}

    - name: Render the conflist of a Kubernetes node
      ansible.builtin.template:
        src: "{{ repo }}/roles/cni/templates/10-pycalico.conflist.j2"
        dest: "{{ out }}/10-pycalico-k8s.conflist"
        mode: "0644"
      vars:
        cni_etcd_endpoints: https://192.168.1.1:2379
        cni_kubernetes: true
        __cni_chain_portmap: false
"""


@pytest.fixture(scope="module")
def rendered(tmp_path_factory, collections_path) -> Path:
    from tests.collection.conftest import VENV_BIN

    out = tmp_path_factory.mktemp("rendered")
    pb = out / "render.yml"
    pb.write_text(RENDER)
    proc = subprocess.run([str(VENV_BIN / "ansible-playbook"), str(pb), "-e", f"out_dir={out}", "-e", f"repo={REPO}",
                           "-e", f"ansible_python_interpreter={sys.executable}"],
                          capture_output=True, text=True, check=False, timeout=120,
                          env={"PATH": f"{VENV_BIN}:/usr/bin:/bin", "ANSIBLE_COLLECTIONS_PATH": str(collections_path),
                               "ANSIBLE_LOCALHOST_WARNING": "false", "ANSIBLE_NOCOLOR": "1", "HOME": str(out)})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return out


def env_file(path: Path) -> dict[str, str]:
    pairs = [line.split("=", 1) for line in path.read_text().splitlines() if line and not line.startswith("#")]
    return dict(pairs)


def test_agent_environment_matches_the_interface_contract(rendered):
    env = env_file(rendered / "pycalico.env")
    contract = (REPO / "docs" / "interfaces.md").read_text()
    for name in env:
        assert f"`{name}`" in contract, f"{name} is not in docs/interfaces.md"
    assert env["ETCD_ENDPOINTS"] == "https://192.168.1.1:2379,https://192.168.1.2:2379"
    assert env["ETCD_KEY_FILE"] == "/etc/pycalico/ssl/client-key.pem"
    assert env["NODENAME"] == "worker-01" and env["CLUSTER_NAME"] == "cluster1"
    assert env["IP_AUTODETECTION_METHOD"] == "can-reach=192.168.1.1"
    assert env["CALICO_IPV4POOL_IPIP"] == "Always" and env["CALICO_IPV4POOL_NAT_OUTGOING"] == "true"
    assert env["PYCALICO_RR_CLUSTER_ID"] == "244.0.0.1"
    assert env["PYCALICO_NODE_LABELS"] == "route-reflector=true,zone=a"


def test_units(rendered):
    agent = (rendered / "pycalico-agent.service").read_text()
    assert "Type=notify" in agent and "EnvironmentFile=/etc/pycalico/pycalico.env" in agent
    assert "ExecStart=/opt/pycalico/current/bin/pycalico-agent" in agent and "NoNewPrivileges=yes" in agent
    bird = (rendered / "pycalico-bird.service").read_text()
    start = next(line for line in bird.splitlines() if line.startswith("ExecStart="))
    assert start.startswith("ExecStart=/usr/sbin/bird ")
    assert " -f " in start and " -c /etc/pycalico/bird/bird.conf " in start
    assert start.endswith(" -s /var/run/pycalico/bird.ctl")
    confd = (rendered / "pycalico-confd.service").read_text()
    assert "ExecStart=/opt/pycalico/current/bin/pycalico-confd" in confd
    etcd = env_file(rendered / "etcd.env")
    assert etcd["ETCD_INITIAL_CLUSTER"] == ",".join(
        f"etcd-192.168.1.{i}=https://192.168.1.{i}:2380" for i in (1, 2, 3))
    assert etcd["ETCD_LISTEN_CLIENT_URLS"] == "https://192.168.1.2:2379,https://127.0.0.1:2379"
    assert etcd["ETCD_CLIENT_CERT_AUTH"] == "true" and etcd["ETCD_PEER_CLIENT_CERT_AUTH"] == "true"
    assert "User=etcd" in (rendered / "etcd.service").read_text()


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="needs systemd-analyze")
@pytest.mark.parametrize("unit", ["pycalico-agent.service", "pycalico-confd.service", "pycalico-bird.service",
                                  "etcd.service"])
def test_units_parse(rendered, tmp_path, unit):
    """systemd accepts every directive (missing executables are expected off a node)."""
    shutil.copy(rendered / unit, tmp_path / unit)
    proc = subprocess.run(["systemd-analyze", "verify", str(tmp_path / unit)], capture_output=True, text=True,
                          check=False)
    problems = [line for line in (proc.stdout + proc.stderr).splitlines()
                if line.strip() and "is not executable" not in line]
    assert problems == []


def test_conflist_chains_portmap(rendered):
    conf = json.loads((rendered / "10-pycalico.conflist").read_text())
    assert conf["name"] == "k8s-pod-network" and conf["cniVersion"] == "1.0.0"
    main, portmap = conf["plugins"]
    assert main["type"] == "pycalico" and main["ipam"] == {"type": "pycalico-ipam"}
    assert main["etcd_endpoints"] == "https://192.168.1.1:2379" and main["mtu"] == 0
    assert portmap == {"type": "portmap", "snat": True, "capabilities": {"portMappings": True}}
    # cni_kubernetes false (the default): plain CNI, no API server.
    assert "kubernetes" not in main and "policy" not in main


def test_conflist_of_a_kubernetes_node_names_the_kubeconfig(rendered):
    """issue 12 item 3: Calico's Kubernetes mode, with kubeasz's kubeconfig, when the inventory is a cluster."""
    (main,) = json.loads((rendered / "10-pycalico-k8s.conflist").read_text())["plugins"]
    assert main["kubernetes"] == {"kubeconfig": "/root/.kube/config"}
    assert main["policy"] == {"type": "k8s"}
    assert main["type"] == "pycalico" and main["etcd_endpoints"] == "https://192.168.1.1:2379"


CERTS = """
- name: Certificates
  hosts: 127.0.0.1
  connection: local
  gather_facts: false
  roles:
    - role: pycalico.network.certs
"""


def test_certs_role_check_real_idempotent_and_verifiable(playbook, tmp_path):
    pb = tmp_path / "certs.yml"
    pb.write_text(CERTS)
    ssl, node = tmp_path / "cluster" / "ssl", tmp_path / "node-ssl"
    args = ["-i", "127.0.0.1,", "-e", f"ansible_python_interpreter={sys.executable}", "-e", f"certs_dir={ssl}",
            "-e", f"certs_client_dir={node}", "-e", '{"certs_etcd_hosts": ["127.0.0.1"]}']

    checked = playbook(pb, *args, "--check", "--diff")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert not (ssl / "ca.pem").exists() and not node.exists()

    real = playbook(pb, *args)
    assert real.returncode == 0, real.stdout + real.stderr
    for name in ("ca", "pycalico", "etcd-127.0.0.1"):
        assert stat.S_IMODE((ssl / f"{name}-key.pem").stat().st_mode) == 0o600
    assert stat.S_IMODE((node / "client-key.pem").stat().st_mode) == 0o600
    assert (node / "client.pem").read_bytes() == (ssl / "pycalico.pem").read_bytes()
    for cert in (node / "client.pem", ssl / "etcd-127.0.0.1.pem"):
        subprocess.run(["openssl", "verify", "-CAfile", str(node / "ca.pem"), str(cert)], check=True,
                       capture_output=True)
    text = subprocess.run(["openssl", "x509", "-noout", "-text", "-in", str(ssl / "etcd-127.0.0.1.pem")],
                          check=True, capture_output=True, text=True).stdout
    assert "IP Address:127.0.0.1" in text and "TLS Web Server Authentication" in text
    assert "BEGIN" not in real.stdout, "key material in the output"

    again = playbook(pb, *args, "--diff")
    assert again.returncode == 0 and recap(again.stdout, "127.0.0.1")["changed"] == 0, again.stdout


def test_certs_role_reuses_an_existing_kubeasz_ca(playbook, tmp_path):
    ssl = tmp_path / "cluster" / "ssl"
    ssl.mkdir(parents=True)
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca-key.pem", "-out",
                    "ca.pem", "-days", "2", "-subj", "/CN=kubernetes-ca"], cwd=ssl, check=True, capture_output=True)
    ca = (ssl / "ca.pem").read_bytes()
    pb = tmp_path / "certs.yml"
    pb.write_text(CERTS)
    proc = playbook(pb, "-i", "127.0.0.1,", "-e", f"ansible_python_interpreter={sys.executable}",
                    "-e", f"certs_dir={ssl}", "-e", "certs_install_client=false")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (ssl / "ca.pem").read_bytes() == ca, "the existing CA was replaced"
    subprocess.run(["openssl", "verify", "-CAfile", str(ssl / "ca.pem"), str(ssl / "pycalico.pem")], check=True,
                   capture_output=True)


def test_certs_role_uses_a_client_certificate_of_an_external_ca(playbook, tmp_path, etcd_cluster):
    """An etcd with its own CA (no CA key here): the given client certificate is installed, nothing is made."""
    pki = etcd_cluster.pki
    ssl, node = tmp_path / "cluster" / "ssl", tmp_path / "node-ssl"
    ssl.mkdir(parents=True)
    shutil.copy(pki.ca, ssl / "ca.pem")
    pb = tmp_path / "certs.yml"
    pb.write_text(CERTS)
    args = ["-i", "127.0.0.1,", "-e", f"ansible_python_interpreter={sys.executable}", "-e", f"certs_dir={ssl}",
            "-e", f"certs_client_dir={node}"]

    missing = playbook(pb, *args)
    assert missing.returncode != 0
    assert "has ca.pem but no ca-key.pem" in missing.stdout + missing.stderr
    assert sorted(p.name for p in ssl.iterdir()) == ["ca.pem"]

    shutil.copy(pki.client_cert, ssl / "pycalico.pem")
    shutil.copy(pki.client_key, ssl / "pycalico-key.pem")
    proc = playbook(pb, *args)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert sorted(p.name for p in ssl.iterdir()) == ["ca.pem", "pycalico-key.pem", "pycalico.pem"]
    assert (node / "ca.pem").read_bytes() == pki.ca.read_bytes()
    assert (node / "client.pem").read_bytes() == pki.client_cert.read_bytes()
