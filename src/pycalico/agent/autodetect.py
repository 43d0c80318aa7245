"""Node IPv4 autodetection, calico-node's methods (calico-internals §6 step 3).

``first-found`` (with Calico's interface exclusions), ``interface=<regex>[,…]``,
``skip-interface=<regex>[,…]``, ``cidr=<cidr>[,…]``, ``can-reach=<ip|host>``.
The selection logic works on a list of ``Interface`` values so it is testable
without a kernel; ``interfaces()`` reads them from ``ip -j addr``.
"""

from __future__ import annotations

import ipaddress
import json
import re
import socket
import subprocess
from dataclasses import dataclass

from pycalico.errors import ValidationError

DEFAULT_EXCLUDES = [
    r"^docker.*", r"^cbr.*", r"^dummy.*", r"^podman.*", r"^virbr.*", r"^lxcbr.*", r"^veth.*", r"^lo",
    r"^br-.*", r"^cali.*", r"^tunl.*", r"^flannel.*", r"^kube-ipvs.*", r"^cni.*", r"^vxlan.calico.*",
    r"^vxlan-v6.calico.*", r"^wireguard.cali.*", r"^wg-v6.cali.*", r"^nodelocaldns.*",
]
METHODS = "first-found, interface=<regex>, skip-interface=<regex>, cidr=<cidr>, can-reach=<ip or host>"


@dataclass(frozen=True)
class Interface:
    name: str
    addresses: tuple[ipaddress.IPv4Interface, ...]
    mtu: int = 1500
    up: bool = True


def interfaces() -> list[Interface]:
    out = subprocess.run(["ip", "-j", "-4", "addr", "show"], capture_output=True, text=True, timeout=30).stdout
    result = []
    for entry in json.loads(out or "[]"):
        addrs = tuple(ipaddress.IPv4Interface(f"{a['local']}/{a['prefixlen']}")
                      for a in entry.get("addr_info") or [] if a.get("family") == "inet")
        result.append(Interface(entry["ifname"], addrs, int(entry.get("mtu", 1500)),
                                "UP" in (entry.get("flags") or [])))
    return result


def _usable(addr: ipaddress.IPv4Interface) -> bool:
    ip = addr.ip
    return ip.is_global or (ip.is_private and not ip.is_loopback and not ip.is_link_local)


def _first(ifaces: list[Interface], include: list[str] | None, exclude: list[str]) -> ipaddress.IPv4Interface | None:
    inc = [re.compile(p) for p in include] if include is not None else None
    exc = [re.compile(p) for p in exclude]
    for iface in ifaces:
        if any(r.match(iface.name) for r in exc):
            continue
        if inc is not None and not any(r.match(iface.name) for r in inc):
            continue
        for addr in iface.addresses:
            if _usable(addr):
                return addr
    return None


def find_interface(ifaces: list[Interface],
                   ip: ipaddress.IPv4Address) -> tuple[Interface, ipaddress.IPv4Interface] | None:
    for iface in ifaces:
        for addr in iface.addresses:
            if addr.ip == ip:
                return iface, addr
    return None


def _can_reach(dest: str) -> ipaddress.IPv4Address:
    try:
        target = socket.gethostbyname(dest)
    except OSError as exc:
        raise ValidationError("IP_AUTODETECTION_METHOD", f"can-reach={dest}", "a resolvable host or IP",
                              reason=str(exc)) from None
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.connect((target, 80))
        return ipaddress.IPv4Address(s.getsockname()[0])


def autodetect(method: str, ifaces: list[Interface] | None = None) -> ipaddress.IPv4Interface | None:
    """The node address (with prefix) chosen by ``method``, or None if none matched."""
    ifaces = interfaces() if ifaces is None else ifaces
    method = (method or "first-found").strip()
    if method == "first-found":
        return _first(ifaces, None, DEFAULT_EXCLUDES)
    kind, _, arg = method.partition("=")
    values = [v.strip() for v in arg.split(",") if v.strip()]
    if kind == "interface" and values:
        return _first(ifaces, [v if v.startswith("^") else f"^{v}$" for v in values], [])
    if kind == "skip-interface" and values:
        return _first(ifaces, None, DEFAULT_EXCLUDES + values)
    if kind == "cidr" and values:
        try:
            nets = [ipaddress.IPv4Network(v, strict=False) for v in values]
        except ValueError as exc:
            raise ValidationError("IP_AUTODETECTION_METHOD", method, METHODS, reason=str(exc)) from None
        excluded = [re.compile(p) for p in DEFAULT_EXCLUDES if p != r"^lo"]
        for iface in ifaces:
            if any(r.match(iface.name) for r in excluded):
                continue
            for addr in iface.addresses:
                if any(addr.ip in n for n in nets):
                    return addr
        return None
    if kind == "can-reach" and values:
        found = find_interface(ifaces, _can_reach(values[0]))
        return found[1] if found else None
    raise ValidationError("IP_AUTODETECTION_METHOD", method, METHODS)


def host_mtu(ifaces: list[Interface], pattern: str = r"^((en|wl|ww|sl|ib)[Pcopsvx].*|(eth|wlan|wwan).*)") -> int:
    """Felix's host MTU: the smallest MTU of up interfaces matching the pattern, else 1460."""
    rx = re.compile(pattern)
    mtus = [i.mtu for i in ifaces if i.up and rx.match(i.name)]
    return min(mtus) if mtus else 1460
