"""CNI spec mechanics: versions, the request environment, error codes, result shaping.

Facts from the CNI SPEC (1.1.0) and the reference Go ``skel`` package; nothing here
knows about Calico. Stdlib only and cheap to import.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from pycalico.errors import PycalicoError

SUPPORTED_VERSIONS = ("0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0")
LATEST = "1.1.0"
COMMANDS = ("ADD", "DEL", "CHECK", "VERSION", "STATUS", "GC")

# Spec error codes.
INCOMPATIBLE_VERSION = 1
UNSUPPORTED_FIELD = 2
UNKNOWN_CONTAINER = 3
INVALID_ENV = 4
IO_FAILURE = 5
DECODE_FAILURE = 6
INVALID_CONFIG = 7
TRY_AGAIN_LATER = 11
NOT_AVAILABLE = 50
LIMITED_CONNECTIVITY = 51
# Ours (100+).
INTERNAL = 100
NOT_READY = 101
UNKNOWN_NODE = 102
NO_ADDRESSES = 103
NETNS_UNUSABLE = 104
DATAPLANE = 105
CHECK_FAILED = 106
DELEGATE_FAILED = 107

_CONTAINER_ID = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.\-]*$")


class CniError(PycalicoError):
    """An error the plugin reports as spec JSON on stdout with a non-zero exit: the one
    pycalico error that already carries its CNI code."""

    def __init__(self, code: int, msg: str, details: str = "") -> None:
        super().__init__(msg)
        self.code = code
        self.msg = msg
        self.details = details

    def to_json(self, cni_version: str) -> dict[str, Any]:
        out: dict[str, Any] = {"cniVersion": cni_version, "code": self.code, "msg": self.msg}
        if self.details:
            out["details"] = self.details
        return out


def version_tuple(version: str) -> tuple[int, ...]:
    try:
        return tuple(int(p) for p in version.split("."))
    except ValueError:
        return (0,)


def at_least(version: str, minimum: str) -> bool:
    return version_tuple(version) >= version_tuple(minimum)


@dataclass
class CniRequest:
    """One invocation: the CNI_* environment and the config bytes from stdin."""

    command: str
    container_id: str = ""
    netns: str = ""
    ifname: str = ""
    args: dict[str, str] = field(default_factory=dict)
    path: list[str] = field(default_factory=list)
    stdin: bytes = b""
    env: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_env(cls, env: dict[str, str], stdin: bytes) -> CniRequest:
        """Validate the environment the way the reference skel does (code 4)."""
        command = env.get("CNI_COMMAND", "")
        if not command:
            raise CniError(INVALID_ENV, "required env variables [CNI_COMMAND] missing")
        if command not in COMMANDS:
            raise CniError(INVALID_ENV, f"unknown CNI_COMMAND: {command}")
        required: list[str] = []
        if command in ("ADD", "CHECK"):
            required = ["CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME", "CNI_PATH"]
        elif command == "DEL":
            required = ["CNI_CONTAINERID", "CNI_IFNAME", "CNI_PATH"]
        elif command in ("GC", "STATUS"):
            required = ["CNI_PATH"]
        missing = [name for name in required if not env.get(name)]
        if missing:
            raise CniError(INVALID_ENV, f"required env variables [{','.join(missing)}] missing")
        container_id = env.get("CNI_CONTAINERID", "")
        if container_id and not _CONTAINER_ID.match(container_id):
            raise CniError(INVALID_ENV, "invalid characters in CNI_CONTAINERID", container_id)
        ifname = env.get("CNI_IFNAME", "")
        if ifname:
            if len(ifname) > 15:
                raise CniError(INVALID_ENV, "CNI_IFNAME is too long (max 15 characters)", ifname)
            if ifname in (".", "..") or any(c in ifname for c in "/: \t\n"):
                raise CniError(INVALID_ENV, "CNI_IFNAME contains invalid characters", ifname)
        return cls(
            command=command,
            container_id=container_id,
            netns=env.get("CNI_NETNS", ""),
            ifname=ifname,
            args=parse_cni_args(env.get("CNI_ARGS", "")),
            path=[p for p in env.get("CNI_PATH", "").split(":") if p],
            stdin=stdin,
            env=dict(env),
        )


def parse_cni_args(raw: str) -> dict[str, str]:
    """``K=V;K2=V2`` → dict; malformed pairs are an env error (code 4)."""
    out: dict[str, str] = {}
    for pair in raw.split(";"):
        if not pair:
            continue
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise CniError(INVALID_ENV, "CNI_ARGS: invalid pair (expected KEY=VALUE)", pair)
        out[key] = value
    return out


def decode_config(stdin: bytes) -> dict[str, Any]:
    """stdin → a JSON object (code 6 when it is not one)."""
    try:
        conf = json.loads(stdin or b"")
    except (ValueError, UnicodeDecodeError) as exc:
        raise CniError(DECODE_FAILURE, f"error decoding network configuration: {exc}") from None
    if not isinstance(conf, dict):
        raise CniError(DECODE_FAILURE, "error decoding network configuration: not a JSON object")
    return conf


def config_version(conf: dict[str, Any]) -> str:
    version = conf.get("cniVersion", "")
    if version == "" or version is None:
        version = "0.1.0"  # the spec's default for a missing field
    if not isinstance(version, str):
        raise CniError(DECODE_FAILURE, "cniVersion: must be a string")
    if version not in SUPPORTED_VERSIONS:
        raise CniError(
            INCOMPATIBLE_VERSION,
            f"incompatible CNI versions: config is {version!r}, plugin supports {list(SUPPORTED_VERSIONS)}",
        )
    return version


def check_verb_version(command: str, version: str) -> None:
    if command == "CHECK" and not at_least(version, "0.4.0"):
        raise CniError(INCOMPATIBLE_VERSION, f"config version {version} does not allow CHECK")
    if command in ("STATUS", "GC") and not at_least(version, "1.1.0"):
        raise CniError(INCOMPATIBLE_VERSION, f"config version {version} does not allow {command}")


def version_result(conf_version: str) -> dict[str, Any]:
    return {"cniVersion": conf_version, "supportedVersions": list(SUPPORTED_VERSIONS)}


# ---- results ---------------------------------------------------------------------------


@dataclass
class Interface:
    name: str
    mac: str = ""
    sandbox: str = ""
    mtu: int = 0


@dataclass
class IPConfig:
    address: str  # CIDR
    interface: int | None = None
    gateway: str = ""


@dataclass
class Route:
    dst: str
    gw: str = ""


@dataclass
class Result:
    interfaces: list[Interface] = field(default_factory=list)
    ips: list[IPConfig] = field(default_factory=list)
    routes: list[Route] = field(default_factory=list)
    dns: dict[str, Any] = field(default_factory=dict)

    def to_json(self, version: str) -> dict[str, Any]:
        """Shape the result for ``version`` (0.3.x/0.4.0 carry ips[].version; 1.1.0 interface mtu)."""
        legacy = not at_least(version, "1.0.0")
        out: dict[str, Any] = {"cniVersion": version}
        if self.interfaces:
            ifaces = []
            for i in self.interfaces:
                item: dict[str, Any] = {"name": i.name}
                if i.mac:
                    item["mac"] = i.mac
                if i.mtu and at_least(version, "1.1.0"):
                    item["mtu"] = i.mtu
                if i.sandbox:
                    item["sandbox"] = i.sandbox
                ifaces.append(item)
            out["interfaces"] = ifaces
        ips = []
        for ip in self.ips:
            entry: dict[str, Any] = {}
            if legacy:
                entry["version"] = "6" if ":" in ip.address else "4"
            if ip.interface is not None:
                entry["interface"] = ip.interface
            entry["address"] = ip.address
            if ip.gateway:
                entry["gateway"] = ip.gateway
            ips.append(entry)
        out["ips"] = ips
        if self.routes:
            out["routes"] = [{"dst": r.dst, **({"gw": r.gw} if r.gw else {})} for r in self.routes]
        out["dns"] = dict(self.dns)
        return out

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> Result:
        """Parse a result of any supported version (an IPAM plugin's or a prevResult)."""
        if not isinstance(raw, dict):
            raise CniError(DECODE_FAILURE, "result is not a JSON object")
        try:
            interfaces = [
                Interface(str(i.get("name", "")), str(i.get("mac", "")), str(i.get("sandbox", "")),
                          int(i.get("mtu", 0) or 0))
                for i in raw.get("interfaces") or []
            ]
            ips = [
                IPConfig(str(ip["address"]), ip.get("interface"), str(ip.get("gateway", "") or ""))
                for ip in raw.get("ips") or []
            ]
            routes = [Route(str(r["dst"]), str(r.get("gw", "") or "")) for r in raw.get("routes") or []]
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise CniError(DECODE_FAILURE, f"cannot decode result: {exc}") from None
        dns = raw.get("dns") if isinstance(raw.get("dns"), dict) else {}
        return cls(interfaces, ips, routes, dict(dns or {}))
