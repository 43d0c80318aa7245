# -*- coding: utf-8 -*-
# Copyright (c) pycalico developers
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)
"""pycalico's network state on a host, found and removed, for the pycalico.network.clean_network
module: links named <link_prefix>* and the listed devices, routes of the listed protocols,
iptables chains named <chain_prefix>* with the rules of other chains that jump to them or carry
pycalico's ``cali:`` comment, and ipsets named <ipset_prefix>*. Nothing else.

Standard library only (the module runs with the host's Python, not pycalico's): commands go
through a ``run(argv, data=None) -> (rc, stdout, stderr)`` and are looked up with
``which(name) -> path or None``, both given by the module.

``survey()`` lists the steps that would remove what is there; ``state()`` of those steps is the
diff's before; ``apply()`` runs them. Check mode surveys only.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json
import re

TABLES = ("raw", "mangle", "filter", "nat")
KINDS = ("routes", "links", "rules", "chains", "ipsets")
SET_DOWN = " (set down: the kernel keeps it)"
# The policy engine marks its rules in the kernel's chains with a 16-character rule ID.
_OUR_COMMENT = re.compile(r'--comment "?cali:[A-Za-z0-9_-]{16}"?')
_LEGACY_TABLES = "/proc/net/ip_tables_names"


class CleanError(Exception):
    """A command whose failure means the host's state cannot be read."""


class Step(object):
    """One command that removes ``removes`` (``(kind, label)`` pairs); ``fallback`` commands
    run when it fails (a device the kernel will not delete is stripped and set down)."""

    def __init__(self, removes, argv, data=None, fallback=None):
        self.removes = removes
        self.argv = argv
        self.data = data
        self.fallback = fallback or []


def describe(kind, label):
    """``("links", "cali1")`` -> ``"link cali1"``, as the module returns it in ``removed``."""
    return "%s %s" % (kind[:-1], label)


def state(steps):
    """What the steps would remove, by kind: the diff's before (or what is left, after)."""
    out = dict((kind, []) for kind in KINDS)
    for step in steps:
        for kind, label in step.removes:
            out[kind].append(label)
    return out


def _json_list(text):
    try:
        data = json.loads(text or "[]")
    except ValueError:
        return []
    return data if isinstance(data, list) else []


class Cleaner(object):
    def __init__(self, run, which, link_prefix, links, route_protocols, chain_prefix, ipset_prefix,
                 legacy_tables=_LEGACY_TABLES):
        if not chain_prefix:
            raise CleanError("chain_prefix is empty: it would match every iptables chain")
        if not ipset_prefix:
            raise CleanError("ipset_prefix is empty: it would match every ipset")
        self.run = run
        self.which = which
        self.link_prefix = link_prefix or ""
        self.links = set(links or [])
        self.route_protocols = list(route_protocols or [])
        self.chain_prefix = chain_prefix
        self.ipset_prefix = ipset_prefix
        self.legacy_tables = legacy_tables
        self.ip = which("ip")
        if not self.ip:
            raise CleanError("the ip command (iproute2) is not installed")

    # --- survey -------------------------------------------------------------------------------

    def survey(self):
        """The steps that remove what of ours is on the host, in the order they must run:
        routes, links, iptables (jumps before chains, per table), ipsets."""
        steps = self._routes() + self._links()
        primary = "iptables-nft" if self.which("iptables-nft") else "iptables"
        steps += self._iptables(primary)
        # Legacy tables only those already loaded: reading one would load it. And not twice
        # when plain iptables (no iptables-nft) is itself the legacy backend.
        legacy = self._legacy_tables()
        if legacy and not (primary == "iptables" and self._is_legacy(primary)):
            steps += self._iptables("iptables-legacy", legacy)
        return steps + self._ipsets()

    def _read(self, argv, what):
        rc, out, err = self.run(argv)
        if rc != 0:
            raise CleanError("%s: %s failed (rc %s): %s" % (what, " ".join(argv), rc, err.strip()))
        return out

    def _routes(self):
        steps = []
        for proto in self.route_protocols:
            out = self._read([self.ip, "-j", "route", "show", "proto", proto], "route_protocols %r" % proto)
            for route in _json_list(out):
                dst = route.get("dst")
                if not dst:
                    continue
                argv = [self.ip, "route", "del"]
                if route.get("type") and route["type"] != "unicast":
                    argv.append(route["type"])
                argv += [dst, "proto", proto]
                if route.get("dev"):
                    argv += ["dev", route["dev"]]
                steps.append(Step([("routes", "%s proto %s" % (dst, proto))], argv))
        return steps

    def _links(self):
        steps = []
        for link in _json_list(self._read([self.ip, "-j", "link", "show"], "listing links")):
            name = link.get("ifname", "")
            if not ((self.link_prefix and name.startswith(self.link_prefix)) or name in self.links):
                continue
            if name == "tunl0" and "UP" not in link.get("flags", []) and not self._addresses(name):
                continue  # the ipip module's fallback device, already inert
            fallback = [[self.ip, "addr", "flush", "dev", name], [self.ip, "link", "set", name, "down"]]
            steps.append(Step([("links", name)], [self.ip, "link", "del", name], fallback=fallback))
        return steps

    def _addresses(self, name):
        rc, out, dummy = self.run([self.ip, "-j", "addr", "show", "dev", name])
        entries = _json_list(out) if rc == 0 else []
        return [a for entry in entries for a in entry.get("addr_info", [])]

    def _legacy_tables(self):
        """The legacy iptables tables this network namespace has loaded, in TABLES order."""
        try:
            with open(self.legacy_tables) as f:
                loaded = f.read().split()
        except (IOError, OSError):
            return ()
        return tuple(t for t in TABLES if t in loaded)

    def _is_legacy(self, command):
        path = self.which(command)
        if not path:
            return False
        rc, out, err = self.run([path, "--version"])
        return rc == 0 and "nf_tables" not in out + err

    def _iptables(self, command, tables=TABLES):
        save = self.which(command + "-save")
        restore = self.which(command + "-restore")
        if not save or not restore:
            return []
        prefix = self.chain_prefix
        target = re.compile(r"(^| )-[jg] %s\S*" % re.escape(prefix))
        steps = []
        for table in tables:
            rc, out, dummy = self.run([save, "-t", table])
            if rc != 0:
                continue  # a table this kernel does not have
            chains, jumps = [], []
            for line in out.splitlines():
                m = re.match(r"^:(\S+) ", line)
                if m and m.group(1).startswith(prefix):
                    chains.append(m.group(1))
                    continue
                m = re.match(r"^-A (\S+) (.*)$", line)
                if not m or m.group(1).startswith(prefix):
                    continue  # rules in our own chains go with the chain
                if target.search(m.group(2)) or _OUR_COMMENT.search(m.group(2)):
                    jumps.append((m.group(1), m.group(2)))
            if not chains and not jumps:
                continue
            script = ["*%s" % table] + ["-D %s %s" % j for j in jumps]
            script += ["-F %s" % c for c in chains] + ["-X %s" % c for c in chains] + ["COMMIT"]
            removes = [("rules", "%s -A %s %s (%s)" % (table, chain, spec, command)) for chain, spec in jumps]
            removes += [("chains", "%s %s (%s)" % (table, chain, command)) for chain in chains]
            steps.append(Step(removes, [restore, "--noflush"], data="\n".join(script) + "\n"))
        return steps

    def _ipsets(self):
        ipset = self.which("ipset")
        if not ipset:
            return []
        rc, out, dummy = self.run([ipset, "list", "-n"])
        if rc != 0:
            return []  # no ipset support in this kernel: nothing of ours either
        return [Step([("ipsets", name)], [ipset, "destroy", name])
                for name in out.split() if name.startswith(self.ipset_prefix)]

    # --- apply ----------------------------------------------------------------------------------

    def apply(self, steps):
        """Run every step; a failure does not stop the others. Returns (removed, failures)."""
        removed, failures = [], []
        for step in steps:
            what = [describe(kind, label) for kind, label in step.removes]
            rc, dummy, err = self.run(step.argv, data=step.data)
            if rc == 0:
                removed += what
                continue
            failure = "%s: %s: %s" % (", ".join(what), " ".join(step.argv), err.strip())
            if step.fallback:
                for argv in step.fallback:
                    rc, dummy, err2 = self.run(argv)
                    if rc != 0:
                        failure += "; then %s: %s" % (" ".join(argv), err2.strip())
                        break
                else:
                    removed += [w + SET_DOWN for w in what]
                    continue
            failures.append(failure)
        return removed, failures
