"""The plugin's network configuration (one entry of a conflist), validated field by field.

Every invalid field is a spec code 7 whose message names the field.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pycalico.cni.spec import INVALID_CONFIG, CniError

DEFAULT_NODENAME_FILE = "/var/lib/pycalico/nodename"
DEFAULT_MTU_FILE = "/var/lib/pycalico/mtu"
DEFAULT_IPAM_LOCK = "/var/run/pycalico/ipam.lock"
DEFAULT_LOG_FILE = "/var/log/pycalico/cni.log"
DEFAULT_MTU = 1500
OWN_IPAM = "pycalico-ipam"
LOG_LEVELS = ("debug", "info", "warning", "error", "critical")


def _bad(field_name: str, value: Any, allowed: str) -> CniError:
    return CniError(INVALID_CONFIG,
                    f"invalid network config: {field_name}: {value!r} is not allowed; expected {allowed}")


def _str(conf: dict[str, Any], key: str, default: str = "", *, prefix: str = "") -> str:
    value = conf.get(key, default)
    if value is None:
        return default
    if not isinstance(value, str):
        raise _bad(prefix + key, value, "a string")
    return value


@dataclass
class IpamConf:
    type: str
    raw: dict[str, Any]
    assign_ipv4: bool = True
    ipv4_pools: list[str] = field(default_factory=list)


@dataclass
class NetConf:
    """What ADD/DEL/CHECK/GC/STATUS need from the config."""

    cni_version: str
    name: str
    type: str
    raw: dict[str, Any]
    ipam: IpamConf
    etcd_endpoints: tuple[str, ...]
    etcd_ca_cert_file: str = ""
    etcd_cert_file: str = ""
    etcd_key_file: str = ""
    mtu: int = 0
    mtu_file: str = DEFAULT_MTU_FILE
    nodename: str = ""
    nodename_file: str = DEFAULT_NODENAME_FILE
    log_level: str = "info"
    log_file_path: str = DEFAULT_LOG_FILE
    ipam_lock_file: str = DEFAULT_IPAM_LOCK
    prev_result: dict[str, Any] | None = None
    runtime_config: dict[str, Any] = field(default_factory=dict)
    valid_attachments: list[dict[str, str]] | None = None
    policy_type: str = ""  # "k8s": kube-controllers writes the kns./ksa. profiles
    kubeconfig: str = ""  # kubernetes.kubeconfig: Kubernetes mode reads the pod from the API

    @property
    def datastore_key(self) -> tuple[str, ...]:
        return (*self.etcd_endpoints, self.etcd_ca_cert_file, self.etcd_cert_file, self.etcd_key_file)


def parse_netconf(conf: dict[str, Any], cni_version: str, *, need_datastore: bool = True) -> NetConf:
    name = _str(conf, "name")
    if not name:
        raise _bad("name", conf.get("name"), "a non-empty network name")
    ptype = _str(conf, "type")

    datastore_type = _str(conf, "datastore_type", "etcdv3")
    if datastore_type not in ("etcdv3", ""):
        raise _bad("datastore_type", datastore_type, "'etcdv3'")

    raw_endpoints = conf.get("etcd_endpoints", "")
    if isinstance(raw_endpoints, list) and all(isinstance(e, str) for e in raw_endpoints):
        endpoints = tuple(e.strip() for e in raw_endpoints if e.strip())
    elif isinstance(raw_endpoints, str):
        endpoints = tuple(e.strip() for e in raw_endpoints.split(",") if e.strip())
    else:
        raise _bad("etcd_endpoints", raw_endpoints, "a comma-separated string of https://host:port URLs")
    if need_datastore and not endpoints:
        raise _bad("etcd_endpoints", raw_endpoints, "a comma-separated string of https://host:port URLs")
    for endpoint in endpoints:
        if not endpoint.startswith(("https://", "http://")):
            raise _bad("etcd_endpoints", endpoint, "URLs starting with https:// or http://")
    ca = _str(conf, "etcd_ca_cert_file")
    cert = _str(conf, "etcd_cert_file")
    key = _str(conf, "etcd_key_file")
    if any(e.startswith("https://") for e in endpoints):
        for fname, value in (("etcd_ca_cert_file", ca), ("etcd_cert_file", cert), ("etcd_key_file", key)):
            if not value:
                raise _bad(fname, value, "a file path (required with https etcd_endpoints)")

    mtu = conf.get("mtu", 0)
    if mtu is None:
        mtu = 0
    if isinstance(mtu, str) and mtu.strip().isdigit():
        mtu = int(mtu)
    if isinstance(mtu, bool) or not isinstance(mtu, int) or not (mtu == 0 or 68 <= mtu <= 65535):
        raise _bad("mtu", mtu, "0 (use the agent's MTU file) or an integer 68..65535")

    log_level = _str(conf, "log_level", "info").lower() or "info"
    if log_level == "warn":
        log_level = "warning"
    if log_level not in LOG_LEVELS:
        raise _bad("log_level", conf.get("log_level"), "one of debug, info, warning, error")

    raw_ipam = conf.get("ipam")
    if raw_ipam is None:
        raw_ipam = {}
    if not isinstance(raw_ipam, dict):
        raise _bad("ipam", raw_ipam, "an object with a 'type'")
    ipam_type = _str(raw_ipam, "type", prefix="ipam.")
    if not ipam_type:
        raise _bad("ipam.type", raw_ipam.get("type"), f"'{OWN_IPAM}' or the name of an IPAM plugin in CNI_PATH")
    if "/" in ipam_type or ipam_type in (".", ".."):
        raise _bad("ipam.type", ipam_type, "a plugin name, not a path")
    assign_v4 = raw_ipam.get("assign_ipv4", "true")
    if isinstance(assign_v4, bool):
        assign_v4 = "true" if assign_v4 else "false"
    if assign_v4 not in ("true", "false"):
        raise _bad("ipam.assign_ipv4", assign_v4, "'true' or 'false'")
    pools = raw_ipam.get("ipv4_pools", [])
    if not isinstance(pools, list) or not all(isinstance(p, str) for p in pools):
        raise _bad("ipam.ipv4_pools", pools, "a list of pool names or CIDRs")
    if ipam_type == OWN_IPAM and assign_v4 == "false":
        raise _bad("ipam.assign_ipv4", assign_v4, "'true' (pycalico-ipam assigns IPv4 only)")

    prev = conf.get("prevResult")
    if prev is not None and not isinstance(prev, dict):
        raise _bad("prevResult", prev, "an object")
    runtime = conf.get("runtimeConfig") or {}
    if not isinstance(runtime, dict):
        raise _bad("runtimeConfig", runtime, "an object")
    attachments = conf.get("cni.dev/valid-attachments")
    if attachments is not None:
        if not isinstance(attachments, list) or not all(
            isinstance(a, dict) and isinstance(a.get("containerID"), str) for a in attachments
        ):
            raise _bad("cni.dev/valid-attachments", attachments, "a list of {containerID, ifname} objects")

    raw_policy = conf.get("policy") or {}
    if not isinstance(raw_policy, dict):
        raise _bad("policy", raw_policy, "an object such as {\"type\": \"k8s\"}")
    policy_type = _str(raw_policy, "type", prefix="policy.")
    if policy_type not in ("", "k8s"):
        raise _bad("policy.type", policy_type, "'k8s' or empty")
    raw_kube = conf.get("kubernetes") or {}
    if not isinstance(raw_kube, dict):
        raise _bad("kubernetes", raw_kube, "an object such as {\"kubeconfig\": \"/etc/cni/net.d/calico-kubeconfig\"}")
    kubeconfig = _str(raw_kube, "kubeconfig", prefix="kubernetes.")
    if policy_type == "k8s" and not kubeconfig:
        raise _bad("kubernetes.kubeconfig", kubeconfig, "the path of a kubeconfig (required with policy.type k8s)")

    return NetConf(
        cni_version=cni_version,
        name=name,
        type=ptype,
        raw=conf,
        ipam=IpamConf(ipam_type, raw_ipam, assign_v4 == "true", list(pools)),
        etcd_endpoints=endpoints,
        etcd_ca_cert_file=ca,
        etcd_cert_file=cert,
        etcd_key_file=key,
        mtu=mtu,
        mtu_file=_str(conf, "mtu_file", DEFAULT_MTU_FILE) or DEFAULT_MTU_FILE,
        nodename=_str(conf, "nodename"),
        nodename_file=_str(conf, "nodename_file", DEFAULT_NODENAME_FILE) or DEFAULT_NODENAME_FILE,
        log_level=log_level,
        log_file_path=_str(conf, "log_file_path", DEFAULT_LOG_FILE),
        ipam_lock_file=_str(conf, "ipam_lock_file", DEFAULT_IPAM_LOCK) or DEFAULT_IPAM_LOCK,
        prev_result=prev,
        runtime_config=runtime,
        valid_attachments=attachments,
        policy_type=policy_type,
        kubeconfig=kubeconfig,
    )
