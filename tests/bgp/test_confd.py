"""confd's switch-over: a config BIRD rejects never replaces the last good one."""

from __future__ import annotations

import shutil

import pytest

from pycalico.bgp import config as bgpconfig
from pycalico.bgp.main import Confd
from pycalico.model import IPPool, Node

pytestmark = pytest.mark.skipif(shutil.which("bird") is None, reason="bird not installed")


def make_confd(etcd, tmp_path) -> Confd:
    confd = Confd(etcd, "a", tmp_path / "bird", str(tmp_path / "bird.ctl"))
    confd.uplink, confd._uplink_ip = "eth0", "10.0.0.1"
    confd.cache["nodes"] = {"n/a": Node("a", {"bgp": {"ipv4Address": "10.0.0.1/24"}}),
                            "n/b": Node("b", {"bgp": {"ipv4Address": "10.0.0.2/24"}})}
    confd.cache["pools"] = {"p": IPPool("p", {"cidr": "10.244.0.0/16"})}
    confd.cache["affinities"] = {"x": "10.244.3.0/26"}
    return confd


def test_good_config_goes_live_and_a_rejected_one_is_kept_aside(etcd, tmp_path, monkeypatch, caplog):
    confd = make_confd(etcd, tmp_path)
    assert confd.update() is True  # BIRD is not running: the file waits for it
    live = (tmp_path / "bird" / "bird.conf").read_text()
    assert "Mesh_10_0_0_2" in live and "route 10.244.3.0/26 blackhole;" in live
    assert confd.update() is False  # nothing changed, nothing written

    real_render = bgpconfig.render
    monkeypatch.setattr(bgpconfig, "render", lambda cfg: real_render(cfg) + "\nprotocol bgp rr { }\n")
    confd.cache["affinities"]["y"] = "10.244.4.0/26"
    assert confd.update() is False
    assert (tmp_path / "bird" / "bird.conf").read_text() == live
    rejected = (tmp_path / "bird" / "bird.conf.rejected").read_text()
    assert "10.244.4.0/26" in rejected
    assert confd.last_error and "keeping the last good config" in caplog.text

    monkeypatch.setattr(bgpconfig, "render", real_render)
    assert confd.update() is True
    assert "10.244.4.0/26" in (tmp_path / "bird" / "bird.conf").read_text()
    assert confd.last_error == ""


def test_no_config_until_the_node_has_an_address(etcd, tmp_path):
    confd = make_confd(etcd, tmp_path)
    confd.cache["nodes"] = {"n/a": Node("a", {})}
    assert confd.update() is False
    assert not (tmp_path / "bird" / "bird.conf").exists()
