"""BGP passwords: Calico's secretKeyRef read from files, rendered for BIRD (TCP MD5), never logged."""

from __future__ import annotations

import shutil
import stat
import time

import pytest

from pycalico.bgp import config as bgpconfig
from pycalico.bgp import secrets as bgpsecrets
from pycalico.bgp.main import Confd
from pycalico.errors import ValidationError
from pycalico.model import BGPConfiguration, BGPPeer, IPPool, Node, ResourceStore
from tests.support.cluster import running_cluster
from tests.support.topology import poll

bird_missing = pytest.mark.skipif(shutil.which("bird") is None, reason="bird not installed")
REF = {"secretKeyRef": {"name": "bgp-tor", "key": "password"}}


def write_secret(directory, name: str, key: str, value: str) -> None:
    (directory / name).mkdir(parents=True, exist_ok=True)
    path = directory / name / key
    path.write_text(value)
    path.chmod(0o600)


def make_confd(etcd, tmp_path) -> Confd:
    confd = Confd(etcd, "a", tmp_path / "bird", str(tmp_path / "bird.ctl"), secrets_dir=tmp_path / "secrets")
    confd.uplink, confd._uplink_ip = "eth0", "10.0.0.1"
    confd.cache["nodes"] = {"n/a": Node("a", {"bgp": {"ipv4Address": "10.0.0.1/24"}}),
                            "n/b": Node("b", {"bgp": {"ipv4Address": "10.0.0.2/24"}})}
    confd.cache["pools"] = {"p": IPPool("p", {"cidr": "10.244.0.0/16"})}
    confd.cache["peers"] = {"x": BGPPeer("tor", {"peerIP": "10.0.0.254", "asNumber": 64600, "password": REF})}
    confd.cache["bgpconfig"] = {"d": BGPConfiguration("default", {"nodeMeshPassword": {
        "secretKeyRef": {"name": "bgp-mesh", "key": "password"}}})}
    return confd


@bird_missing
def test_passwords_rendered_from_files_with_the_config_0600_and_never_logged(etcd, tmp_path, caplog):
    write_secret(tmp_path / "secrets", "bgp-tor", "password", "tor s3cret\n")
    write_secret(tmp_path / "secrets", "bgp-mesh", "password", "mesh-s3cret")
    confd = make_confd(etcd, tmp_path)
    assert confd.update() is True  # bird -p accepted it
    conf = tmp_path / "bird" / "bird.conf"
    text = conf.read_text()
    tor = text[text.index("protocol bgp Global_10_0_0_254"):]
    mesh = text[text.index("protocol bgp Mesh_10_0_0_2"):]
    assert 'password "tor s3cret";' in tor[:tor.index("\n}")]  # the file's newline is not part of it
    assert 'password "mesh-s3cret";' in mesh[:mesh.index("\n}")]
    assert stat.S_IMODE(conf.stat().st_mode) == 0o600
    assert "s3cret" not in caplog.text

    # A secret that cannot be read leaves that peer out (and names the file, not a value).
    (tmp_path / "secrets" / "bgp-tor" / "password").unlink()
    confd.cache["affinities"] = {"y": "10.244.4.0/26"}
    assert confd.update() is True
    text = conf.read_text()
    assert "Global_10_0_0_254" not in text and "Mesh_10_0_0_2" in text
    assert "bgp-tor/password" in caplog.text and "left out" in caplog.text
    # optional: the session goes on without a password
    confd.cache["peers"]["x"] = BGPPeer("tor", {"peerIP": "10.0.0.254", "asNumber": 64600, "password": {
        "secretKeyRef": {**REF["secretKeyRef"], "optional": True}}})
    assert confd.update() is True
    tor = conf.read_text()[conf.read_text().index("protocol bgp Global_10_0_0_254"):]
    assert "password" not in tor[:tor.index("\n}")]
    assert "s3cret" not in caplog.text


def test_a_password_bird_cannot_carry_is_refused_by_file(tmp_path):
    secrets = bgpsecrets.FileSecrets(tmp_path)
    write_secret(tmp_path, "s", "k", 'has"quote')
    with pytest.raises(bgpsecrets.SecretError, match=r"s/k holds a double quote"):
        secrets.read("s", "k")
    write_secret(tmp_path, "s", "e", "\n")
    with pytest.raises(bgpsecrets.SecretError, match="is empty"):
        secrets.read("s", "e")
    with pytest.raises(bgpsecrets.SecretError, match="not a secret name"):
        secrets.path("..", "k")


@pytest.mark.parametrize(("spec", "field"), [
    ({"password": "plain"}, "spec.password"),
    ({"password": {"secretKeyRef": {"name": "a"}}}, "spec.password.secretKeyRef.key"),
    ({"password": {"secretKeyRef": {"name": "../etc", "key": "k"}}}, "spec.password.secretKeyRef.name"),
    ({"password": {"secretKeyRef": {"name": "a", "key": "k", "optional": "yes"}}},
     "spec.password.secretKeyRef.optional"),
    ({"password": {"secretKeyRef": {"name": "a", "key": "k", "namespace": "x"}}}, "spec.password.secretKeyRef"),
])
def test_bad_password_references_are_refused_naming_the_field(spec, field):
    with pytest.raises(ValidationError) as exc:
        BGPPeer.from_json({"kind": "BGPPeer", "apiVersion": "projectcalico.org/v3", "metadata": {"name": "p"},
                           "spec": {"peerIP": "10.0.0.9", "asNumber": 64600, **spec}}).validate()
    assert field in str(exc.value)


def test_expected_peers_do_not_need_the_secrets():
    """verify.yml's expected peers (netcheck) come from compute_peers without reading any secret."""
    me = Node("a", {"bgp": {"ipv4Address": "10.0.0.1/24"}})
    nodes = {"a": me, "b": Node("b", {"bgp": {"ipv4Address": "10.0.0.2/24"}})}
    peers = bgpconfig.compute_peers(me, nodes, BGPConfiguration("default", {}),
                                    [BGPPeer("tor", {"peerIP": "10.0.0.254", "asNumber": 64600, "password": REF})])
    assert [p.name for p in peers] == ["Mesh_10_0_0_2", "Global_10_0_0_254"] and not any(p.password for p in peers)


@bird_missing
@pytest.mark.netns
def test_mesh_sessions_with_a_password_and_a_wrong_one(etcd_cluster, etcd, unique):
    """Two nodes, nodeMeshPassword from each node's own secrets directory: the same password
    establishes the session (TCP MD5 in the kernel); a different one on one node keeps it down
    for the whole deadline; the right one again (confd restarted, as the bgp role's handler does)
    brings it back."""
    with running_cluster(etcd_cluster, etcd, unique, [2]) as cl:
        cl.create_pool("10.244.0.0/16")
        ResourceStore(etcd).create(BGPConfiguration("default", {"nodeMeshPassword": {
            "secretKeyRef": {"name": "bgp-mesh", "key": "password"}}}))
        for host in cl.hosts:
            write_secret(host.state_dir / "bgp-secrets", "bgp-mesh", "password", "m3sh-pass")
        for host in cl.hosts:
            host.start_agent()
        for host in cl.hosts:
            poll((host.state_dir / "nodename").exists, 30, what=f"agent on {host.name} registered")
        for host in cl.hosts:
            host.start_confd(PYCALICO_BGP_SECRETS_DIR=str(host.state_dir / "bgp-secrets"))
        for host in cl.hosts:
            host.start_bird()

        def established(host) -> bool:
            return host.ctl("node", "status").stdout.count("Established") == 1

        for host in cl.hosts:
            poll(lambda h=host: established(h), 30, what=f"{host.name}: the mesh session with the password is up")
        for host in cl.hosts:
            assert 'password "m3sh-pass";' in (host.bird_dir / "bird.conf").read_text()
            assert "m3sh-pass" not in host.log("confd")

        a, b = cl.hosts
        write_secret(b.state_dir / "bgp-secrets", "bgp-mesh", "password", "wrong-pass")
        b.stop("confd")
        b.start_confd(PYCALICO_BGP_SECRETS_DIR=str(b.state_dir / "bgp-secrets"))
        poll(lambda: 'password "wrong-pass";' in (b.bird_dir / "bird.conf").read_text(), 20,
             what="b's config carries the new password")
        poll(lambda: not established(a), 40, what="the session drops once the passwords differ")
        deadline = time.monotonic() + 12  # a session that must not come up: watched for the whole deadline
        while time.monotonic() < deadline:
            assert not established(a) and not established(b)
            time.sleep(0.5)

        write_secret(b.state_dir / "bgp-secrets", "bgp-mesh", "password", "m3sh-pass")
        b.stop("confd")
        b.start_confd(PYCALICO_BGP_SECRETS_DIR=str(b.state_dir / "bgp-secrets"))
        for host in cl.hosts:
            poll(lambda h=host: established(h), 40, what=f"{host.name}: the session is back with the same password")
