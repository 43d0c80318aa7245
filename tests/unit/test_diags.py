"""``pycalicoctl node diags`` on a namespace node running the real agent, confd and BIRD:
the archive holds the network state, BIRD's view, the agent's health and metrics and the
rendered configs, and never the etcd client key or a BGP password."""

from __future__ import annotations

import subprocess
import tarfile
from pathlib import Path

import pytest

from tests.support.cluster import running_cluster
from tests.support.topology import VENV_BIN, poll

pytestmark = pytest.mark.netns


def _members(archive: Path) -> dict[str, str]:
    with tarfile.open(archive, "r:gz") as tar:
        return {m.name.split("/", 1)[1]: tar.extractfile(m).read().decode()  # type: ignore[union-attr]
                for m in tar.getmembers() if m.isfile()}


def test_node_diags_archive_has_state_and_no_key_material(etcd_cluster, etcd, unique, tmp_path):
    key_text = Path(etcd_cluster.pki.client_key).read_text()
    assert "PRIVATE KEY" in key_text
    with running_cluster(etcd_cluster, etcd, unique, [2]) as cl:
        cl.create_pool("10.244.0.0/16")
        cl.start()
        host = cl.hosts[0]
        cl.add_pod(host, "p")
        poll(lambda: host.ctl("node", "status", check=False).stdout.count("Established") == 1, 30,
             what="BGP session up")
        # an env file as the agent role writes it, plus a secret the archive must mask
        env_file = tmp_path / "pycalico.env"
        env_file.write_text(f"ETCD_KEY_FILE={etcd_cluster.pki.client_key}\nNODENAME={host.name}\n"
                            "KUBE_API_TOKEN=s3cr3t-token\n")
        # a config that embeds the key inline and a BGP password: masked, the rest kept
        (host.bird_dir / "extra.conf").write_text(f'protocol bgp x {{ password "hunter2"; }}\n{key_text}\n')
        archive = tmp_path / "out" / "diags.tar.gz"
        proc = subprocess.run(["ip", "netns", "exec", host.ns, str(VENV_BIN / "pycalicoctl"), "node", "diags",
                               "-o", str(archive)], env=host.env(PYCALICO_ENV_FILE=str(env_file)),
                              capture_output=True, text=True, timeout=60, check=True)
        assert f"Diagnostics written to {archive}" in proc.stdout
        files = _members(archive)

    assert "blackhole 10.244." in files["network/routes.txt"]
    assert "eth0" in files["network/addresses.txt"] and host.addr in files["network/addresses.txt"]
    assert "eth0" in files["network/links.txt"]
    assert ":cali-" in files["network/iptables-save.txt"] or ":cali-" in files.get(
        "network/iptables-legacy-save.txt", "")
    assert "Name: cali" in files["network/ipset.txt"]
    assert "Established" in files["bird/protocols.txt"] and cl.hosts[1].addr in files["bird/protocols.txt"]
    assert "10.244." in files["bird/routes.txt"]
    assert "HTTP 200" in files["agent/readiness.txt"]
    assert "pycalico_agent_" in files["agent/metrics.txt"]
    assert f"router id {host.addr}" in files["config/bird/bird.conf"]
    assert files["state/nodename"].strip() == host.name
    # no systemd in a namespace node: said so, not an error
    assert "journal" in files["SKIPPED.txt"]

    everything = "\n".join(files.values())
    body = "".join(key_text.strip().splitlines()[1:-1])
    assert key_text.strip() not in everything
    assert all(line not in everything for line in key_text.strip().splitlines()[1:-1] if len(line) > 20), body[:20]
    assert "hunter2" not in everything and 'password "<redacted>"' in files["config/bird/extra.conf"]
    assert "s3cr3t-token" not in everything and f"NODENAME={host.name}" in files["config/pycalico.env"]
    assert oct(archive.stat().st_mode & 0o777) == "0o600"
