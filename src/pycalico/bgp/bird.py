"""Talking to BIRD: config check, reload, and ``show protocols`` over its control socket."""

from __future__ import annotations

import socket
import subprocess
from dataclasses import dataclass

from pycalico.errors import BirdError


def check_config(path: str, bird: str = "bird") -> str | None:
    """None when ``bird -p -c path`` accepts the file, else BIRD's complaint."""
    try:
        proc = subprocess.run([bird, "-p", "-c", path], capture_output=True, text=True, timeout=30)
    except FileNotFoundError:
        return f"{bird} not found"
    if proc.returncode == 0:
        return None
    return (proc.stderr or proc.stdout).strip() or f"bird -p exited {proc.returncode}"


def command(ctl: str, cmd: str, timeout: float = 5.0) -> list[tuple[str, str]]:
    """Send one CLI command; returns (code, text) lines. ``code`` is "" for continuation lines."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        try:
            s.connect(ctl)
        except OSError as exc:
            raise BirdError(f"cannot connect to BIRD at {ctl}: {exc.strerror or exc}") from None
        buf = b""
        lines: list[tuple[str, str]] = []
        sent = False
        while True:
            try:
                chunk = s.recv(65536)
            except TimeoutError:
                raise BirdError(f"BIRD at {ctl} did not answer within {timeout}s") from None
            if not chunk:
                break
            buf += chunk
            done = False
            while b"\n" in buf:
                raw, buf = buf.split(b"\n", 1)
                line = raw.decode(errors="replace")
                if len(line) >= 5 and line[:4].isdigit() and line[4] in " -":
                    code, text = line[:4], line[5:]
                    if not sent and code == "0001":
                        s.sendall(cmd.encode() + b"\n")
                        sent = True
                        continue
                    lines.append((code, text))
                    if line[4] == " ":
                        done = True
                elif line.startswith(" "):
                    lines.append(("", line[1:]))
            if done:
                break
        return lines


def configure(ctl: str) -> str:
    """``birdc configure``: reload the config file BIRD was started with."""
    lines = command(ctl, "configure", timeout=30)
    text = "\n".join(t for _, t in lines)
    if any(code.startswith(("8", "9")) for code, _ in lines):
        raise BirdError(text)
    return text


@dataclass(frozen=True)
class Protocol:
    name: str
    proto: str
    table: str
    state: str
    since: str
    info: str


def show_protocols(ctl: str) -> list[Protocol]:
    lines = command(ctl, "show protocols")
    rows: list[Protocol] = []
    for code, text in lines:
        if code in ("1002", ""):
            parts = text.split(None, 5)
            if len(parts) < 4:
                continue
            name, proto, table, state = parts[:4]
            rest = parts[4:]
            # "since" is one or two fields (date and time) depending on timeformat
            since, info = "", ""
            if rest:
                tail = " ".join(rest).split()
                if len(tail) >= 2 and ":" in tail[1] and "-" in tail[0]:
                    since, info = " ".join(tail[:2]), " ".join(tail[2:])
                else:
                    since, info = tail[0], " ".join(tail[1:])
            rows.append(Protocol(name, proto, table, state, since, info))
        elif code.startswith(("8", "9")):
            raise BirdError(text)
    return rows


def bgp_peers(ctl: str) -> list[dict[str, str]]:
    """calicoctl's view: BGP protocols named Mesh_/Node_/Global_ + IP."""
    kinds = {"Mesh": "node-to-node mesh", "Node": "node specific", "Global": "global"}
    out = []
    for p in show_protocols(ctl):
        if p.proto != "BGP":
            continue
        prefix, _, rest = p.name.partition("_")
        if prefix not in kinds or not rest:
            continue
        port = ""
        if "_port_" in rest:
            rest, port = rest.split("_port_", 1)
        ip = rest.replace("_", ".") if rest.count("_") == 3 else rest.replace("_", ":")
        if port:
            ip = f"{ip}:{port}"
        out.append({"peer": ip, "type": kinds[prefix], "state": p.state, "since": p.since, "info": p.info})
    return out
