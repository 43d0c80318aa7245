"""NAT outgoing the way Felix does it: ipsets of pools and ``cali-`` chains.

Only our chains are written, with ``iptables-restore --noflush`` (declaring a
chain flushes just that chain); the jump from ``POSTROUTING`` is inserted once,
found again by its ``cali:`` comment. kube-proxy's chains are never touched.
The iptables backend (legacy or nft) is the one that already holds rules, as
Felix detects it; ``nft`` when neither does.
"""

from __future__ import annotations

import logging
import subprocess

from pycalico.errors import NatError

log = logging.getLogger(__name__)

MASQ_SET = "cali40masq-ipam-pools"
ALL_SET = "cali40all-ipam-pools"
HOOK_COMMENT = "cali:O3lYWMrLQYEMJtB5"
MASQ_COMMENT = "cali:flqWnvo8yq4ULQLa"


def _count_rules(cmd: str) -> int:
    try:
        proc = subprocess.run([cmd], capture_output=True, text=True, timeout=30)
    except FileNotFoundError:
        return -1
    if proc.returncode != 0:
        return -1
    return sum(1 for line in proc.stdout.splitlines() if line.startswith("-"))


def detect_backend(preference: str = "auto") -> str:
    if preference in ("legacy", "nft"):
        return preference
    legacy = _count_rules("iptables-legacy-save")
    nft = _count_rules("iptables-nft-save")
    return "legacy" if legacy > max(nft, 0) else "nft"


def ipset_script(masq: list[str], all_pools: list[str]) -> str:
    lines = []
    for name, members in ((MASQ_SET, masq), (ALL_SET, all_pools)):
        tmp = "cali4t" + name[6:]
        lines.append(f"create {name} hash:net family inet")
        lines.append(f"create {tmp} hash:net family inet")
        lines.append(f"flush {tmp}")
        lines += [f"add {tmp} {cidr}" for cidr in members]
        lines.append(f"swap {tmp} {name}")
        lines.append(f"destroy {tmp}")
    return "\n".join(lines) + "\n"


def iptables_script(with_hook: bool) -> str:
    lines = [
        "*nat",
        ":cali-POSTROUTING - [0:0]",
        ":cali-nat-outgoing - [0:0]",
        '-A cali-POSTROUTING -m comment --comment "cali:Z-c7XtVd2Bq7s_hA" -j cali-nat-outgoing',
        f'-A cali-nat-outgoing -m comment --comment "{MASQ_COMMENT}" -m set --match-set {MASQ_SET} src '
        f"-m set ! --match-set {ALL_SET} dst -j MASQUERADE --random-fully",
    ]
    if with_hook:
        lines.append(f'-I POSTROUTING 1 -m comment --comment "{HOOK_COMMENT}" -j cali-POSTROUTING')
    lines.append("COMMIT")
    return "\n".join(lines) + "\n"


class NatOutgoing:
    def __init__(self, backend: str = "auto") -> None:
        self.preference = backend
        self.backend = ""
        self._last: tuple[tuple[str, ...], tuple[str, ...]] | None = None

    def _tool(self, name: str) -> str:
        return f"iptables-{self.backend}-{name}" if name else f"iptables-{self.backend}"

    def hook_present(self) -> bool:
        proc = subprocess.run([f"iptables-{self.backend}", "-w", "5", "-t", "nat", "-S", "POSTROUTING"],
                              capture_output=True, text=True, timeout=30)
        return HOOK_COMMENT in proc.stdout

    def in_sync(self) -> bool:
        """Our chain and its rule are present (used by the periodic resync to find drift)."""
        proc = subprocess.run([f"iptables-{self.backend}", "-w", "5", "-t", "nat", "-S", "cali-nat-outgoing"],
                              capture_output=True, text=True, timeout=30)
        return proc.returncode == 0 and MASQ_COMMENT in proc.stdout and self.hook_present()

    def apply(self, masq: list[str], all_pools: list[str], *, force: bool = False, check_drift: bool = True) -> bool:
        """Returns True when something was written. Without ``check_drift`` an unchanged
        pool list costs nothing (the periodic resync checks the kernel)."""
        if not self.backend:
            self.backend = detect_backend(self.preference)
            log.info("iptables backend: %s", self.backend)
        key = (tuple(masq), tuple(all_pools))
        if not force and key == self._last and (not check_drift or self.in_sync()):
            return False
        proc = subprocess.run(["ipset", "-exist", "restore"], input=ipset_script(masq, all_pools),
                              capture_output=True, text=True, timeout=30)
        if proc.returncode != 0:
            raise NatError(f"ipset restore: {proc.stderr.strip()}")
        script = iptables_script(not self.hook_present())
        proc = subprocess.run([self._tool("restore"), "-w", "5", "--noflush"], input=script,
                              capture_output=True, text=True, timeout=30)
        if proc.returncode != 0:
            raise NatError(f"{self._tool('restore')}: {proc.stderr.strip()}")
        self._last = key
        return True
