"""Spec conformance: bad requests get the exact spec code as JSON on stdout, nothing on
stderr (never a traceback), and leave nothing behind. Both executable paths."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from tests.cni.conftest import leftovers, pod_links
from tests.support.cni_env import CniEnv, free_tcp_port

pytestmark = pytest.mark.netns


@dataclass
class Case:
    id: str
    code: int
    command: str = "ADD"
    conf: Callable[[CniEnv], dict[str, Any]] | None = None  # overrides on the good config
    stdin: bytes | None = None  # raw stdin instead of a config
    drop_env: tuple[str, ...] = ()
    set_env: dict[str, str] = field(default_factory=dict)
    netns: str | None = None  # replaces the pod netns path
    container_id: str | None = None
    msg: str = ""  # must appear in msg
    prepare: Callable[[CniEnv, str], None] | None = None


def _unreachable_etcd(env: CniEnv) -> dict[str, Any]:
    return {"etcd_endpoints": f"https://127.0.0.1:{free_tcp_port()}"}


def _pod_has_eth0(env: CniEnv, ns: str) -> None:
    subprocess.run(["ip", "-n", ns, "link", "add", "eth0", "type", "veth", "peer", "name", "eth0p"], check=True)


CASES = [
    Case("stdin-not-json", 6, stdin=b"{not json"),
    Case("stdin-json-array", 6, stdin=b"[1, 2]"),
    Case("stdin-empty", 6, stdin=b""),
    Case("no-CNI_COMMAND", 4, drop_env=("CNI_COMMAND",), msg="CNI_COMMAND"),
    Case("unknown-CNI_COMMAND", 4, set_env={"CNI_COMMAND": "FROB"}, msg="FROB"),
    Case("no-CNI_CONTAINERID", 4, drop_env=("CNI_CONTAINERID",), msg="CNI_CONTAINERID"),
    Case("no-CNI_NETNS", 4, drop_env=("CNI_NETNS",), msg="CNI_NETNS"),
    Case("no-CNI_IFNAME", 4, drop_env=("CNI_IFNAME",), msg="CNI_IFNAME"),
    Case("no-CNI_PATH", 4, drop_env=("CNI_PATH",), msg="CNI_PATH"),
    Case("bad-container-id", 4, container_id="-bad/id", msg="CNI_CONTAINERID"),
    Case("ifname-too-long", 4, set_env={"CNI_IFNAME": "averyveryverylongname"}, msg="CNI_IFNAME"),
    Case("bad-CNI_ARGS", 4, set_env={"CNI_ARGS": "K8S_POD_NAME"}, msg="CNI_ARGS"),
    Case("cniVersion-too-old", 1, conf=lambda e: {"cniVersion": "0.2.0"}),
    Case("cniVersion-unknown", 1, conf=lambda e: {"cniVersion": "9.9.9"}),
    Case("check-needs-0.4.0", 1, command="CHECK", conf=lambda e: {"cniVersion": "0.3.1"}),
    Case("status-needs-1.1.0", 1, command="STATUS", conf=lambda e: {"cniVersion": "1.0.0"}),
    Case("gc-needs-1.1.0", 1, command="GC", conf=lambda e: {"cniVersion": "0.4.0"}),
    Case("mtu-not-a-number", 7, conf=lambda e: {"mtu": "jumbo"}, msg="mtu"),
    Case("mtu-too-small", 7, conf=lambda e: {"mtu": 10}, msg="mtu"),
    Case("ipam-missing-type", 7, conf=lambda e: {"ipam": {}}, msg="ipam.type"),
    Case("ipam-unknown-type", 7, conf=lambda e: {"ipam": {"type": "no-such-ipam"}}, msg="ipam.type"),
    Case("ipam-not-object", 7, conf=lambda e: {"ipam": "pycalico-ipam"}, msg="ipam"),
    Case("datastore-kubernetes", 7, conf=lambda e: {"datastore_type": "kubernetes"}, msg="datastore_type"),
    Case("no-etcd-endpoints", 7, conf=lambda e: {"etcd_endpoints": ""}, msg="etcd_endpoints"),
    Case("https-without-ca", 7, conf=lambda e: {"etcd_ca_cert_file": ""}, msg="etcd_ca_cert_file"),
    Case("no-network-name", 7, conf=lambda e: {"name": ""}, msg="name"),
    Case("bad-log-level", 7, conf=lambda e: {"log_level": "loud"}, msg="log_level"),
    Case("etcd-down", 11, conf=_unreachable_etcd),
    Case("netns-missing", 104, netns="/run/netns/does-not-exist-pycalico"),
    Case("nodename-file-missing", 102, conf=lambda e: {"nodename_file": str(e.base / "nope")}),
    Case("node-not-registered", 102, conf=lambda e: {"nodename": "ghost-node"}, msg="ghost-node"),
    Case("eth0-already-in-netns", 105, prepare=_pod_has_eth0, msg="eth0"),
    # An uppercase container id passes the spec but not the endpoint name rules: the
    # failure comes after IPAM and the veth, so this exercises the mid-ADD rollback.
    Case("rollback-after-ipam-and-veth", 7, container_id="ROLLBACK0123abc", msg="metadata.name"),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_request_gets_exact_code_and_leaves_nothing(cni: CniEnv, case: Case) -> None:
    name, path, cid = cni.new_pod("x")
    try:
        if case.prepare:
            case.prepare(cni, name)
        cid = case.container_id or cid
        env = cni.env(case.command, cid, case.netns or path)
        env.update(case.set_env)
        for key in case.drop_env:
            env.pop(key, None)
        if case.stdin is not None:
            stdin: bytes = case.stdin
        else:
            conf = cni.netconf("1.1.0")
            if case.conf:
                conf.update(case.conf(cni))
            stdin = json.dumps(conf).encode()
        out = cni.invoke(env, stdin)
        assert out.stderr == ""
        assert "Traceback" not in out.stdout
        assert out.code == case.code, out.stdout
        err = json.loads(out.stdout)
        assert err["code"] == case.code
        assert isinstance(err["msg"], str) and err["msg"]
        assert "cniVersion" in err
        if case.msg:
            assert case.msg in err["msg"] + err.get("details", "")
        assert leftovers(cni) == []
        expected = ["lo", "eth0p", "eth0"] if case.prepare is _pod_has_eth0 else ["lo"]
        assert sorted(pod_links(name)) == sorted(expected)
    finally:
        cni.remove_pod(name)


def test_version_lists_supported_versions(cni: CniEnv) -> None:
    out = cni.invoke(cni.env("VERSION"), {"cniVersion": "1.1.0"})
    assert out.code == 0 and out.stderr == ""
    assert out.json == {"cniVersion": "1.1.0",
                        "supportedVersions": ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"]}
    ipam = cni.invoke(cni.env("VERSION"), b"", plugin="pycalico-ipam")
    assert ipam.code == 0 and "1.1.0" in ipam.json["supportedVersions"]
