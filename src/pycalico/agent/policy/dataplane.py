"""Write a ``FilterTable`` into the kernel, touching only what changed.

IP sets go first (``ipset restore``: create, add, del; a set whose type changed
is rebuilt and swapped in), then one ``iptables-restore --noflush`` call
declares (= flushes) and refills every changed ``cali-`` chain of the filter,
raw and mangle tables, deletes the ones no longer wanted and adds missing hooks
(one transaction per table); sets no longer referenced go last. Other rules
of those tables, and their chains, are never touched.
Each rule carries a ``cali:<id>`` comment chained over its chain, so reading
the kernel back (at start and on every full resync) tells exactly which chains
drifted. Nothing is ever flushed wholesale: the rules of the last good state
stay in force until a new state replaces them atomically, also across restarts.
"""

from __future__ import annotations

import logging
import re
import subprocess
import time
from dataclasses import dataclass, field

from pycalico.agent.policy.iptables import FORWARD_ACCEPT, FORWARD_MARK, HOOKS, OWNED_SET_PREFIXES, FilterTable
from pycalico.agent.policy.names import rule_hash
from pycalico.agent.policy.resolve import IPSet
from pycalico.errors import PycalicoError

log = logging.getLogger(__name__)

MAXELEM = 1048576
_ID = re.compile(r"cali:([A-Za-z0-9_-]{16})")
# Fixed IDs of the rules in the kernel's own chains (found again by them)
HOOK_IDS = {("filter", "FORWARD"): "wUHhoiAYhphO9Mso", ("filter", "INPUT"): "Cz_u1IQiXIMmKD4c",
            ("filter", "OUTPUT"): "tVnHkvAo15HuiPy0", ("raw", "PREROUTING"): "6gwbT8clXdHdC1b1",
            ("raw", "OUTPUT"): "WqgznqAQ-uYV0oBx", ("mangle", "PREROUTING"): "6BJqBjBC7crtA-7-",
            ("mangle", "POSTROUTING"): "O3xVHkbmFiOZrQ1c"}
FORWARD_ACCEPT_ID = "MH9kMp5aNICL-Olv"
# Appended to the end of FORWARD, in this order: (ID, rule)
FORWARD_APPENDS = ((FORWARD_ACCEPT_ID, FORWARD_ACCEPT), ("f2Q0cA8m2yVd7Sxe", FORWARD_MARK))
FILTER_HOOK_IDS = {i for (table, _), i in HOOK_IDS.items() if table == "filter"} | {FORWARD_ACCEPT_ID}
TABLES = ("filter", "raw", "mangle")
POLICY_CHAIN_PREFIXES = ("cali-pi-", "cali-po-", "cali-pri-", "cali-pro-")
# Only the workload dispatch chains jump to these (host endpoint chains are also reached from
# the raw and mangle tables' dispatch, so they are not prewritten)
WORKLOAD_CHAIN_PREFIXES = ("cali-tw-", "cali-fw-")
UNREACHABLE_UNTIL_DISPATCH = POLICY_CHAIN_PREFIXES + WORKLOAD_CHAIN_PREFIXES


class PolicyDataplaneError(PycalicoError):
    """iptables-restore or ipset refused a change (the previous state stays in force)."""


@dataclass
class ApplyStats:
    chains_written: int = 0
    chains_deleted: int = 0
    set_changes: int = 0
    restore_calls: int = 0
    ipset_calls: int = 0
    seconds: float = 0.0
    errors: list[str] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return bool(self.chains_written or self.chains_deleted or self.set_changes)


def _run(argv: list[str], stdin: str) -> None:
    proc = subprocess.run(argv, input=stdin, capture_output=True, text=True, timeout=60)
    if proc.returncode != 0:
        raise PolicyDataplaneError(f"{argv[0]}: {proc.stderr.strip()[:800]}")


def _ids(chain: str, rules: list[str]) -> list[str]:
    ids, previous = [], ""
    for rule in rules:
        previous = rule_hash(previous, chain, rule)
        ids.append(previous)
    return ids


def _member(text: str) -> str:
    """ipset's spelling of a member (``10.0.0.1/32`` is listed as ``10.0.0.1``)."""
    return text[:-3] if text.endswith("/32") else text


class IptablesPolicyDataplane:
    def __init__(self, backend: str) -> None:
        self.backend = backend  # legacy | nft
        # per table: chain -> rule IDs, as the kernel holds them; chain -> rule texts last written
        self._chains: dict[str, dict[str, list[str]]] = {t: {} for t in TABLES}
        self._written: dict[str, dict[str, list[str]]] = {t: {} for t in TABLES}
        self._sets: dict[str, tuple[str, set[str]]] = {}  # name -> (type, members) in the kernel
        self._hooks: set[str] = set()
        self._unreachable_sets: set[str] = set()  # created by write_unreachable, no live rule names them
        self.in_sync = False
        self.restore_calls = 0
        self.restore_errors = 0
        self.ipset_calls = 0
        self.ipset_errors = 0

    def _tool(self, name: str) -> str:
        return f"iptables-{self.backend}-{name}"

    # ---- reading the kernel --------------------------------------------------------------------
    def read_kernel(self) -> None:
        hooks: set[str] = set()
        known = set(HOOK_IDS.values()) | {i for i, _ in FORWARD_APPENDS}
        for table in TABLES:
            proc = subprocess.run([self._tool("save"), "-t", table], capture_output=True, text=True, timeout=60)
            chains: dict[str, list[str]] = {}
            for line in proc.stdout.splitlines():
                if line.startswith(":cali-"):
                    chains[line[1:].split()[0]] = []
                elif line.startswith("-A "):
                    chain = line.split(None, 2)[1]
                    m = _ID.search(line)
                    if chain.startswith("cali-"):
                        chains.setdefault(chain, []).append(m.group(1) if m else "?")
                    elif m and m.group(1) in known:
                        hooks.add(m.group(1))
            self._chains[table] = chains
        self._hooks = hooks
        self._written = {t: {} for t in TABLES}
        self._sets = self._read_sets()
        self.in_sync = True

    @staticmethod
    def _read_sets() -> dict[str, tuple[str, set[str]]]:
        proc = subprocess.run(["ipset", "save"], capture_output=True, text=True, timeout=60)
        sets: dict[str, tuple[str, set[str]]] = {}
        for line in proc.stdout.splitlines():
            parts = line.split()
            if len(parts) >= 3 and parts[0] == "create" and parts[1].startswith(OWNED_SET_PREFIXES):
                sets[parts[1]] = (parts[2], set())
            elif len(parts) >= 3 and parts[0] == "add" and parts[1] in sets:
                sets[parts[1]][1].add(parts[2])
        return sets

    def hooks_present(self) -> bool:
        """The filter hooks: what fail-closed enforcement depends on."""
        return FILTER_HOOK_IDS <= self._hooks

    # ---- writing ---------------------------------------------------------------------------------
    def _ipset_script(self, wanted: dict[str, IPSet]) -> tuple[list[str], int]:
        lines: list[str] = []
        changes = 0
        for name, ipset in wanted.items():
            members = {_member(m) for m in ipset.members}
            have = self._sets.get(name)
            family = "family inet "
            if have is None:
                lines.append(f"create {name} {ipset.kind} {family}maxelem {MAXELEM}")
                lines += [f"add {name} {m}" for m in sorted(members)]
                changes += 1 + len(members)
            elif have[0] != ipset.kind:
                tmp = "cali4t" + name[6:][-25:]
                lines.append(f"create {tmp} {ipset.kind} {family}maxelem {MAXELEM}")
                lines.append(f"flush {tmp}")
                lines += [f"add {tmp} {m}" for m in sorted(members)]
                lines += [f"swap {tmp} {name}", f"destroy {tmp}"]
                changes += 1 + len(members)
            else:
                added, removed = members - have[1], have[1] - members
                lines += [f"add {name} {m}" for m in sorted(added)]
                lines += [f"del {name} {m}" for m in sorted(removed)]
                changes += len(added) + len(removed)
        return lines, changes

    def apply(self, table: FilterTable, *, insert: bool = True, full: bool = False) -> ApplyStats:
        started = time.monotonic()
        stats = ApplyStats()
        self._unreachable_sets = set()  # from now on rules may reach every set
        if full or not self.in_sync:
            self.read_kernel()
        try:
            self._apply_sets(table, stats)
            self._apply_chains(table, stats, insert)
            self._destroy_unused_sets(table, stats)
        except PolicyDataplaneError as exc:
            stats.errors.append(str(exc))
            self.in_sync = False  # read the kernel again before the next attempt
        stats.seconds = time.monotonic() - started
        return stats

    def write_unreachable(self, table: FilterTable) -> ApplyStats:
        """Ahead of the first complete apply (while endpoints are still being listed): only the
        policy, profile and workload endpoint chains of ``table`` that the kernel does not hold
        yet, and the IP sets it lacks, with the members known so far. No kernel rule can jump to a
        chain that does not exist yet (a new endpoint chain is first reached from the dispatch
        chains, which only the complete apply writes), and only such chains name those sets, so
        this changes no verdict; the complete apply then finds them in place and completes the
        sets before it writes any rule that reaches them. Sets the kernel held before are not
        touched."""
        started = time.monotonic()
        stats = ApplyStats()
        if not self.in_sync:
            self.read_kernel()
        self._unreachable_sets |= {n for n in table.ipsets if n not in self._sets}
        partial = FilterTable({}, {n: s for n, s in table.ipsets.items() if n in self._unreachable_sets},
                              raw={}, mangle={})
        targets = partial.tables()
        for name, chains in table.tables().items():
            have = self._chains[name]
            targets[name].update({chain: rules for chain, rules in chains.items()
                                  if chain.startswith(UNREACHABLE_UNTIL_DISPATCH) and chain not in have})
        try:
            self._apply_sets(partial, stats)
            self._apply_chains(partial, stats, True, complete=False)
        except PolicyDataplaneError as exc:
            stats.errors.append(str(exc))
            self.in_sync = False
        stats.seconds = time.monotonic() - started
        return stats

    def _apply_sets(self, table: FilterTable, stats: ApplyStats) -> None:
        lines, changes = self._ipset_script(table.ipsets)
        if not lines:
            return
        stats.ipset_calls += 1
        self.ipset_calls += 1
        try:
            _run(["ipset", "-exist", "restore"], "\n".join(lines) + "\n")
        except PolicyDataplaneError:
            self.ipset_errors += 1
            raise
        for name, ipset in table.ipsets.items():
            self._sets[name] = (ipset.kind, {_member(m) for m in ipset.members})
        stats.set_changes += changes

    def _table_script(self, table: str, wanted: dict[str, list[str]], insert: bool,
                      new_ids: dict[str, list[str]], complete: bool = True) -> tuple[list[str], list[str]]:
        """(restore lines for one table, its stale chains); ``new_ids`` gets the chains written."""
        have, written = self._chains[table], self._written[table]
        declare: list[str] = []
        body: list[str] = []
        for name, rules in wanted.items():
            last = written.get(name)
            if last is rules or (last is not None and last == rules and name in have):
                continue
            ids = _ids(name, rules)
            if have.get(name) == ids:
                written[name] = rules
                continue
            new_ids[name] = ids
            declare.append(f":{name} - [0:0]")
            body += [f'-A {name} -m comment --comment "cali:{i}" {r}' for i, r in zip(ids, rules, strict=True)]
        stale = [name for name in have if name not in wanted] if complete else []
        declare += [f":{name} - [0:0]" for name in stale]
        hooks: list[str] = []
        for hook_table, kernel_chain, ours in HOOKS if complete else ():
            hook_id = HOOK_IDS[(hook_table, kernel_chain)]
            if hook_table == table and hook_id not in self._hooks:
                verb = f"-I {kernel_chain} 1" if insert else f"-A {kernel_chain}"
                hooks.append(f'{verb} -m comment --comment "cali:{hook_id}" -j {ours}')
        if complete and table == "filter":
            # FORWARD_ACCEPT must stay ahead of FORWARD_MARK: re-append both when either is missing
            missing = any(i not in self._hooks for i, _ in FORWARD_APPENDS)
            for hook_id, rule in FORWARD_APPENDS if missing else ():
                if hook_id in self._hooks:
                    hooks.append(f'-D FORWARD -m comment --comment "cali:{hook_id}" {rule}')
                hooks.append(f'-A FORWARD -m comment --comment "cali:{hook_id}" {rule}')
        if not declare and not hooks:
            return [], []
        return [f"*{table}", *declare, *body, *(f"-X {name}" for name in stale), *hooks, "COMMIT"], stale

    def _apply_chains(self, table: FilterTable, stats: ApplyStats, insert: bool, complete: bool = True) -> None:
        script: list[str] = []
        changes: dict[str, tuple[dict[str, list[str]], list[str]]] = {}
        wanted_tables = table.tables()
        for name, wanted in wanted_tables.items():
            new_ids: dict[str, list[str]] = {}
            lines, stale = self._table_script(name, wanted, insert, new_ids, complete)
            if lines:
                script += lines
                changes[name] = (new_ids, stale)
        if not script:
            return
        stats.restore_calls += 1
        self.restore_calls += 1
        try:
            _run([self._tool("restore"), "-w", "5", "--noflush"], "\n".join(script) + "\n")
        except PolicyDataplaneError:
            self.restore_errors += 1
            raise
        for name, (new_ids, stale) in changes.items():
            have, written = self._chains[name], self._written[name]
            for chain, ids in new_ids.items():
                have[chain] = ids
                written[chain] = wanted_tables[name][chain]
            for chain in stale:
                have.pop(chain, None)
                written.pop(chain, None)
            if complete:
                self._hooks |= {i for (t, _), i in HOOK_IDS.items() if t == name}
                if name == "filter":
                    self._hooks |= {i for i, _ in FORWARD_APPENDS}
            stats.chains_written += len(new_ids)
            stats.chains_deleted += len(stale)

    def _destroy_unused_sets(self, table: FilterTable, stats: ApplyStats) -> None:
        unused = [name for name in self._sets if name not in table.ipsets]
        if not unused:
            return
        stats.ipset_calls += 1
        self.ipset_calls += 1
        proc = subprocess.run(["ipset", "-exist", "restore"], input="".join(f"destroy {n}\n" for n in unused),
                              capture_output=True, text=True, timeout=60)
        if proc.returncode != 0:
            self.ipset_errors += 1
            log.warning("ipset destroy: %s", proc.stderr.strip()[:300])
            self._sets = self._read_sets()
            return
        for name in unused:
            del self._sets[name]
        stats.set_changes += len(unused)

    def chain_count(self, table: str = "filter") -> int:
        return len(self._chains[table])

    def rule_count(self, table: str = "filter") -> int:
        return sum(len(ids) for ids in self._chains[table].values())

    @property
    def set_count(self) -> int:
        return len(self._sets)
