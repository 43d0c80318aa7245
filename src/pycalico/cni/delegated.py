"""Delegated IPAM: any ``ipam.type`` other than pycalico-ipam, executed as the spec says
(the plugin found in CNI_PATH, the same stdin, CNI_COMMAND set, its result parsed)."""

from __future__ import annotations

import ipaddress
import json
import os
import subprocess
from typing import Any

from pycalico.cni.netconf import NetConf
from pycalico.cni.spec import DELEGATE_FAILED, INVALID_CONFIG, NO_ADDRESSES, CniError, CniRequest, Result


def find_plugin(req: CniRequest, ptype: str) -> str:
    for directory in req.path:
        candidate = os.path.join(directory, ptype)
        if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    raise CniError(INVALID_CONFIG, f"invalid network config: ipam.type: plugin {ptype!r} not found in "
                                   f"CNI_PATH {req.path}")


def exec_plugin(req: CniRequest, ptype: str, command: str, stdin: bytes) -> dict[str, Any] | None:
    binary = find_plugin(req, ptype)
    env = {k: v for k, v in os.environ.items() if not k.startswith("CNI_")}
    env.update({k: v for k, v in req.env.items() if k.startswith("CNI_")})
    env["CNI_COMMAND"] = command
    try:
        proc = subprocess.run([binary], input=stdin, env=env, capture_output=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise CniError(DELEGATE_FAILED, f"delegated plugin {ptype} failed to run: {exc}") from None
    out = proc.stdout.strip()
    if proc.returncode != 0:
        try:
            err = json.loads(out)
            raise CniError(int(err.get("code") or DELEGATE_FAILED), f"{ptype}: {err.get('msg', '')}",
                           str(err.get("details", "")))
        except (ValueError, AttributeError, TypeError):
            raise CniError(DELEGATE_FAILED, f"{ptype} exited {proc.returncode}: "
                                            f"{proc.stderr.decode(errors='replace')[-300:]}") from None
    if not out:
        return None
    try:
        return json.loads(out)
    except ValueError:
        raise CniError(DELEGATE_FAILED, f"{ptype} printed a result that is not JSON") from None



def assign(req: CniRequest, conf: NetConf) -> list[ipaddress.IPv4Interface]:
    """The delegated plugin's IPv4 addresses for this attachment, as it returned them."""
    parsed = Result.from_json(exec_plugin(req, conf.ipam.type, "ADD", req.stdin) or {})
    v4 = [iface for iface in (ipaddress.ip_interface(ip.address) for ip in parsed.ips)
          if isinstance(iface, ipaddress.IPv4Interface)]
    if not v4:
        exec_plugin(req, conf.ipam.type, "DEL", req.stdin)
        raise CniError(NO_ADDRESSES, f"IPAM plugin {conf.ipam.type} returned no IPv4 address")
    return v4


def release(req: CniRequest, conf: NetConf) -> None:
    exec_plugin(req, conf.ipam.type, "DEL", req.stdin)
