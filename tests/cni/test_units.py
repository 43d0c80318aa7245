"""Pure functions of the CNI plugin: names, config validation, error mapping, launcher role."""

from __future__ import annotations

import hashlib

import pytest

from pycalico.cni import launcher, names
from pycalico.cni.netconf import parse_netconf
from pycalico.cni.plugin import to_cni_error
from pycalico.cni.spec import CniError, CniRequest, Result, parse_cni_args
from pycalico.errors import DatastoreUnavailable, NotReady, PoolExhausted, ValidationError
from pycalico.model import wep_name


def test_host_veth_names_follow_calico() -> None:
    pod = names.workload_from({"K8S_POD_NAMESPACE": "kube-system", "K8S_POD_NAME": "coredns-1"}, "abc", "eth0")
    assert names.host_veth_name(pod) == "cali" + hashlib.sha1(b"kube-system.coredns-1").hexdigest()[:11]
    plain = names.workload_from({}, "0123456789abcdef", "eth0")
    assert names.host_veth_name(plain) == "cali0123456789a"
    assert wep_name("node-1", "k8s", "web-0", "eth0") == "node--1-k8s-web--0-eth0"
    assert names.legacy_handle_id(pod) == "kube-system.coredns-1"
    assert names.legacy_handle_id(plain) == "0123456789abcdef"


def test_cni_args_parse_and_reject_garbage() -> None:
    assert parse_cni_args("IgnoreUnknown=1;K8S_POD_NAME=a=b") == {"IgnoreUnknown": "1", "K8S_POD_NAME": "a=b"}
    with pytest.raises(CniError) as err:
        parse_cni_args("novalue")
    assert err.value.code == 4


def test_del_does_not_need_a_netns() -> None:
    req = CniRequest.from_env({"CNI_COMMAND": "DEL", "CNI_CONTAINERID": "x", "CNI_IFNAME": "eth0",
                               "CNI_PATH": "/opt/cni/bin"}, b"{}")
    assert req.netns == ""


@pytest.mark.parametrize("field,value", [("mtu", -1), ("mtu", True), ("etcd_endpoints", 5),
                                         ("ipam", []), ("nodename_file", 3), ("log_level", "chatty"),
                                         ("policy", {"type": "calico"}), ("policy", "k8s"),
                                         ("kubernetes", {"kubeconfig": 7}), ("kubernetes", ["x"])])
def test_invalid_fields_are_named(field: str, value: object) -> None:
    conf = {"name": "n", "type": "pycalico", "etcd_endpoints": "http://127.0.0.1:2379",
            "ipam": {"type": "pycalico-ipam"}, field: value}
    with pytest.raises(CniError) as err:
        parse_netconf(conf, "1.0.0")
    assert err.value.code == 7 and field in err.value.msg


def test_kubernetes_mode_needs_a_kubeconfig() -> None:
    conf = {"name": "n", "type": "pycalico", "etcd_endpoints": "http://127.0.0.1:2379",
            "ipam": {"type": "pycalico-ipam"}, "policy": {"type": "k8s"}}
    with pytest.raises(CniError) as err:
        parse_netconf(conf, "1.0.0")
    assert err.value.code == 7 and "kubernetes.kubeconfig" in err.value.msg
    parsed = parse_netconf({**conf, "kubernetes": {"kubeconfig": "/etc/cni/net.d/calico-kubeconfig"}}, "1.0.0")
    assert (parsed.policy_type, parsed.kubeconfig) == ("k8s", "/etc/cni/net.d/calico-kubeconfig")


def test_errors_map_to_spec_codes() -> None:
    assert to_cni_error(DatastoreUnavailable(["https://e:2379"], "refused")).code == 11
    assert to_cni_error(DatastoreUnavailable(["https://e:2379"], "refused"), "STATUS").code == 50
    assert to_cni_error(ValidationError("spec.x", 1, "2")).code == 7
    assert to_cni_error(NotReady("no")).code == 101
    assert to_cni_error(PoolExhausted(["p"])).code == 103
    assert to_cni_error(RuntimeError("boom")).code == 100


def test_result_round_trips_between_versions() -> None:
    raw = {"cniVersion": "0.3.1", "interfaces": [{"name": "eth0", "sandbox": "/x"}],
           "ips": [{"version": "4", "address": "10.0.0.1/32", "interface": 0}], "dns": {}}
    result = Result.from_json(raw)
    assert result.to_json("0.3.1") == raw
    assert "version" not in result.to_json("1.0.0")["ips"][0]


def test_launcher_role_comes_from_the_file_name() -> None:
    assert launcher.role_from_name("/opt/cni/bin/pycalico-ipam") == "ipam"
    assert launcher.role_from_name("/opt/cni/bin/pycalico") == "plugin"
    assert launcher.socket_path({}, b'{"agent_socket": "/tmp/x.sock"}') == "/tmp/x.sock"
    assert launcher.socket_path({"PYCALICO_CNI_SOCKET": "/e.sock"}, b"{}") == "/e.sock"
    assert launcher.socket_path({}, b"{}") == "/var/run/pycalico/cni.sock"


def test_agent_dying_mid_request_means_try_again(tmp_path) -> None:
    import socket
    import threading

    path = str(tmp_path / "cni.sock")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(1)

    def accept_and_die() -> None:
        conn, _ = listener.accept()
        conn.recv(65536)
        conn.close()

    t = threading.Thread(target=accept_and_die, daemon=True)
    t.start()
    try:
        code, out = launcher.run("/opt/cni/bin/pycalico", {"PYCALICO_CNI_SOCKET": path, "CNI_COMMAND": "ADD"},
                                 b'{"cniVersion": "1.0.0"}')
    finally:
        listener.close()
    assert code == 11 and b'"code": 11' in out


def test_wire_format_round_trips() -> None:
    env = {"CNI_COMMAND": "ADD", "CNI_ARGS": "A=1;B=x=y", "CNI_PATH": "/opt/cni/bin"}
    stdin = b'{"cniVersion": "1.1.0", "name": "n\\u00e9"}\n'
    assert launcher.decode_request(launcher.encode_request("ipam", env, stdin)) == ("ipam", env, stdin)
    with pytest.raises(ValueError):
        launcher.decode_request(b"GET / HTTP/1.1\r\n\r\n")


def _run_installed(path, env_extra: dict[str, str]) -> tuple[int, bytes, bytes]:
    import os
    import subprocess

    env = {"PATH": os.environ.get("PATH", ""), "CNI_COMMAND": "VERSION", **env_extra}
    proc = subprocess.run([str(path)], input=b'{"cniVersion": "1.0.0"}', env=env, capture_output=True, timeout=60)
    return proc.returncode, proc.stdout, proc.stderr


def test_installed_launcher_is_compiled_and_rewritten_only_on_change(tmp_path) -> None:
    import sys

    from pycalico.cni.install import install, launcher_source

    first = install(tmp_path, sys.executable)
    assert [changed for _, changed in first] == [True, True]
    text = (tmp_path / "pycalico").read_text()
    assert text.startswith(f"#!{sys.executable} -IS\n") and "marshal.loads(" in text
    assert "def forward" not in text  # compiled, not source
    assert [changed for _, changed in install(tmp_path, sys.executable)] == [False, False]
    (tmp_path / "pycalico").chmod(0o644)
    assert install(tmp_path, sys.executable, dry_run=True)[0][1] is True
    assert (tmp_path / "pycalico").stat().st_mode & 0o777 == 0o644  # a dry run writes nothing
    code, out, err = _run_installed(tmp_path / "pycalico-ipam", {"PYCALICO_CNI_NO_FAST_PATH": "1"})
    assert (code, err) == (0, b"") and b'"supportedVersions"' in out
    # Another Python cannot load the compiled launcher: it imports it from site-packages.
    other = tmp_path / "other"
    other.write_text(launcher_source(sys.executable).replace(repr(sys.implementation.cache_tag), "'cpython-0'", 1))
    other.chmod(0o755)
    code, out, err = _run_installed(other, {"PYCALICO_CNI_NO_FAST_PATH": "1"})
    assert (code, err) == (0, b"") and b'"supportedVersions"' in out


def test_add_and_del_do_not_import_pyroute2() -> None:
    """pyroute2 costs ~120 ms to import: the in-process fallback's ADD and DEL must not pay it."""
    import subprocess
    import sys

    code = ("import sys, pycalico.cni.plugin, pycalico.cni.dataplane as d; d.Dataplane().close(); "
            "print(sorted(m for m in sys.modules if m.startswith('pyroute2')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert out.stdout.strip() == "[]"
