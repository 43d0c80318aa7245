"""``pycalicoctl node diags``: one tar.gz with what a bug report needs from this node.

Routes, addresses, links, iptables-save, ipsets, BIRD's protocols and routes (over
the control socket confd and ``node status`` use), the units' journals, the agent's
health and metrics, and the rendered configs. Key material never goes in: files
named as keys (``ETCD_KEY_FILE``, ``*key*.pem``) are not read, PEM private-key
blocks and BGP passwords are masked in whatever is collected. A command or file
that is absent is recorded as such and the archive is still written.
"""

from __future__ import annotations

import io
import os
import re
import shutil
import subprocess
import tarfile
import time
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

UNITS = ("pycalico-agent", "pycalico-confd", "pycalico-bird", "pycalico-kube-controllers")

COMMANDS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("network/routes.txt", ("ip", "-4", "route", "show", "table", "all")),
    ("network/routes6.txt", ("ip", "-6", "route", "show", "table", "all")),
    ("network/rules.txt", ("ip", "rule", "show")),
    ("network/addresses.txt", ("ip", "-d", "addr", "show")),
    ("network/links.txt", ("ip", "-d", "-s", "link", "show")),
    ("network/neighbours.txt", ("ip", "neigh", "show")),
    ("network/iptables-save.txt", ("iptables-save", "-c")),
    ("network/iptables-legacy-save.txt", ("iptables-legacy-save", "-c")),
    ("network/ipset.txt", ("ipset", "list")),
)

_PEM_KEY = re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----.*?-----END [A-Z ]*PRIVATE KEY-----", re.S)
_BIRD_PASSWORD = re.compile(r'(password\s+)"[^"]*"')
_SECRET_ENV = re.compile(r"^(\s*[A-Z0-9_]*(?:PASSWORD|TOKEN|SECRET)[A-Z0-9_]*\s*=).*$", re.M)
_SECRET_JSON = re.compile(r'("[a-z_]*(?:password|token|secret|key_data|client-key-data)"\s*:\s*)"[^"]*"', re.I)

REDACTED = "<redacted>"


def redact(text: str) -> str:
    """Mask private keys, BGP passwords and secret-looking settings."""
    text = _PEM_KEY.sub(REDACTED, text)
    text = _BIRD_PASSWORD.sub(rf'\1"{REDACTED}"', text)
    text = _SECRET_ENV.sub(rf"\1{REDACTED}", text)
    return _SECRET_JSON.sub(rf'\1"{REDACTED}"', text)


def is_key_path(path: Path, env: Mapping[str, str]) -> bool:
    key_files = {env.get(k, "") for k in ("ETCD_KEY_FILE", "PYCALICO_ETCD_KEY_FILE")} - {""}
    name = path.name.lower()
    return str(path) in key_files or "key" in name and name.endswith((".pem", ".key")) or name.endswith(".key")


@dataclass
class Diags:
    env: Mapping[str, str]
    members: dict[str, bytes] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)

    def add(self, name: str, text: str) -> None:
        self.members[name] = redact(text).encode()

    def run(self, name: str, argv: tuple[str, ...] | list[str], timeout: float = 20) -> None:
        if shutil.which(argv[0]) is None:
            self.skipped.append(f"{name}: {argv[0]} not installed")
            return
        try:
            proc = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            self.skipped.append(f"{name}: {exc}")
            return
        body = proc.stdout
        if proc.returncode != 0:
            body += f"\n# exit {proc.returncode}: {proc.stderr.strip()}\n"
        self.add(name, body)

    def fetch(self, name: str, url: str) -> None:
        try:
            with urllib.request.urlopen(url, timeout=3) as resp:
                self.add(name, f"# {url}: HTTP {resp.status}\n" + resp.read().decode(errors="replace"))
        except urllib.error.HTTPError as exc:  # readiness answers 503 with a body when not ready
            self.add(name, f"# {url}: HTTP {exc.code}\n" + exc.read().decode(errors="replace"))
        except OSError as exc:
            self.skipped.append(f"{name}: {url} unreachable ({exc})")

    def file(self, name: str, path: Path) -> None:
        if is_key_path(path, self.env):
            self.skipped.append(f"{name}: key material, not collected")
            return
        try:
            self.add(name, path.read_text(errors="replace"))
        except FileNotFoundError:
            self.skipped.append(f"{name}: {path} absent")
        except OSError as exc:
            self.skipped.append(f"{name}: {exc}")


def _bird(d: Diags, ctl: str) -> None:
    from pycalico.bgp import bird

    for name, cmd in (("bird/protocols.txt", "show protocols all"), ("bird/routes.txt", "show route all"),
                      ("bird/status.txt", "show status")):
        try:
            d.add(name, "\n".join(text for _, text in bird.command(ctl, cmd, timeout=10)) + "\n")
        except (bird.BirdError, OSError) as exc:
            d.skipped.append(f"{name}: {exc}")


def collect(env: Mapping[str, str]) -> Diags:
    d = Diags(env)
    for name, argv in COMMANDS:
        d.run(name, argv)
    run_dir = Path(env.get("PYCALICO_RUN_DIR") or "/var/run/pycalico")
    bird_dir = Path(env.get("PYCALICO_BIRD_DIR") or "/etc/pycalico/bird")
    _bird(d, str(run_dir / "bird.ctl"))
    if shutil.which("journalctl") and Path("/run/systemd/system").is_dir():
        for unit in UNITS:
            d.run(f"journal/{unit}.txt", ("journalctl", "-u", unit, "--no-pager", "-n", "2000", "-o", "short-iso"))
            d.run(f"units/{unit}.txt", ("systemctl", "status", "--no-pager", unit))
    else:
        d.skipped.append("journal: no systemd journal on this host")
    health_port = env.get("PYCALICO_HEALTH_PORT") or "9099"
    metrics_port = env.get("PYCALICO_METRICS_PORT") or "9091"
    for probe in ("liveness", "readiness"):
        d.fetch(f"agent/{probe}.txt", f"http://127.0.0.1:{health_port}/{probe}")
    if metrics_port != "0":
        d.fetch("agent/metrics.txt", f"http://127.0.0.1:{metrics_port}/metrics")
    env_file = Path(env.get("PYCALICO_ENV_FILE") or "/etc/pycalico/pycalico.env")
    d.file("config/pycalico.env", env_file)
    if bird_dir.is_dir():
        for conf in sorted(bird_dir.glob("*.conf*")):
            d.file(f"config/bird/{conf.name}", conf)
    cni_dir = Path(env.get("PYCALICO_CNI_NET_DIR") or "/etc/cni/net.d")
    if cni_dir.is_dir():
        for conf in sorted(cni_dir.glob("*pycalico*")):
            d.file(f"config/cni/{conf.name}", conf)
    for state in ("nodename", "mtu"):
        d.file(f"state/{state}", Path(env.get("PYCALICO_STATE_DIR") or "/var/lib/pycalico") / state)
    return d


def write_archive(d: Diags, out: Path) -> Path:
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    top = f"pycalico-diags-{stamp}"
    members = dict(d.members)
    members["SKIPPED.txt"] = ("\n".join(d.skipped) + "\n").encode()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".part")
    with tarfile.open(tmp, "w:gz") as tar:
        for name, data in sorted(members.items()):
            info = tarfile.TarInfo(f"{top}/{name}")
            info.size, info.mtime, info.mode = len(data), int(time.time()), 0o600
            tar.addfile(info, io.BytesIO(data))
    os.chmod(tmp, 0o600)
    tmp.replace(out)
    return out


def default_path() -> Path:
    return Path.cwd() / f"pycalico-diags-{os.uname().nodename}-{time.strftime('%Y%m%dT%H%M%S')}.tar.gz"
