# Copyright (c) pycalico developers
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)
"""Remove pycalico's network state from this host, and nothing else.

Links named <prefix>*, the given devices, routes of the given protocols,
iptables chains named <chain-prefix>* with the rules that jump to them, and
ipsets named <ipset-prefix>*. Prints "removed <what>" (or "would remove" with
--dry-run) for every change; exit status 0 unless a removal failed.
"""
import argparse
import json
import os
import re
import shutil
import subprocess
import sys

TABLES = ("raw", "mangle", "filter", "nat")


def run(argv, check=True, data=None):
    proc = subprocess.run(argv, input=data, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          universal_newlines=True, check=False)
    if check and proc.returncode != 0:
        raise RuntimeError("%s: %s" % (" ".join(argv), proc.stderr.strip()))
    return proc


class Cleaner(object):
    def __init__(self, dry_run):
        self.dry_run = dry_run
        self.failed = []

    def act(self, what, argv, data=None, fallback=None):
        if self.dry_run:
            print("would remove %s" % what)
            return
        try:
            run(argv, data=data)
        except RuntimeError as err:
            if fallback is not None:
                try:
                    for cmd in fallback:
                        run(cmd)
                    print("removed %s (set down: the kernel keeps it)" % what)
                    return
                except RuntimeError as err2:
                    err = err2
            self.failed.append(str(err))
            return
        print("removed %s" % what)

    def links(self, prefix, names):
        proc = run(["ip", "-j", "link", "show"], check=False)
        links = json.loads(proc.stdout or "[]") if proc.returncode == 0 else []
        for link in links:
            name = link.get("ifname", "")
            if (prefix and name.startswith(prefix)) or name in names:
                fallback = [["ip", "addr", "flush", "dev", name], ["ip", "link", "set", name, "down"]]
                if name == "tunl0" and "UP" not in link.get("flags", []) and not self._addrs(name):
                    continue  # the ipip module's fallback device, already inert
                self.act("link %s" % name, ["ip", "link", "del", name], fallback=fallback)

    def _addrs(self, name):
        proc = run(["ip", "-j", "addr", "show", "dev", name], check=False)
        data = json.loads(proc.stdout or "[]") if proc.returncode == 0 else []
        return [a for entry in data for a in entry.get("addr_info", [])]

    def routes(self, protocols):
        for proto in protocols:
            proc = run(["ip", "-j", "route", "show", "proto", proto], check=False)
            if proc.returncode != 0:
                continue
            for route in json.loads(proc.stdout or "[]"):
                dst = route.get("dst")
                if not dst:
                    continue
                argv = ["ip", "route", "del"]
                if route.get("type") and route["type"] != "unicast":
                    argv.append(route["type"])
                argv += [dst, "proto", proto]
                if route.get("dev"):
                    argv += ["dev", route["dev"]]
                self.act("route %s proto %s" % (dst, proto), argv)

    def iptables(self, prefix, command):
        save = shutil.which(command + "-save")
        restore = shutil.which(command + "-restore")
        if not save or not restore:
            return
        for table in TABLES:
            proc = run([save, "-t", table], check=False)
            if proc.returncode != 0:
                continue
            ours, jumps = [], []
            for line in proc.stdout.splitlines():
                m = re.match(r"^:(\S+) ", line)
                if m and m.group(1).startswith(prefix):
                    ours.append(m.group(1))
                    continue
                m = re.match(r"^-A (\S+) (.*)$", line)
                target = re.compile(r"(^| )-[jg] %s\S*" % re.escape(prefix))
                # our rules in the kernel's chains: jumps to our chains, and the ones marked
                # with our "cali:" comment (the FORWARD accept-mark rule of the policy engine)
                ours_by_id = re.search(r'--comment "?cali:[A-Za-z0-9_-]{16}"?', m.group(2)) if m else None
                if m and not m.group(1).startswith(prefix) and (target.search(m.group(2)) or ours_by_id):
                    jumps.append("-D %s %s" % (m.group(1), m.group(2)))
            if not ours and not jumps:
                continue
            script = ["*%s" % table] + jumps + ["-F %s" % c for c in ours] + ["-X %s" % c for c in ours]
            script.append("COMMIT")
            what = "%s table %s: %d jump(s), chain(s) %s" % (command, table, len(jumps), " ".join(ours) or "-")
            self.act(what, [restore, "--noflush"], data="\n".join(script) + "\n")

    def ipsets(self, prefix):
        if not shutil.which("ipset"):
            return
        proc = run(["ipset", "list", "-n"], check=False)
        if proc.returncode != 0:
            return
        for name in proc.stdout.split():
            if name.startswith(prefix):
                self.act("ipset %s" % name, ["ipset", "destroy", name])


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--link-prefix", default="cali")
    parser.add_argument("--link", action="append", default=[])
    parser.add_argument("--route-protocol", action="append", default=[])
    parser.add_argument("--chain-prefix", default="cali-")
    parser.add_argument("--ipset-prefix", default="cali")
    parser.add_argument("--dry-run", action="store_true")
    args = parser.parse_args()
    if not args.chain_prefix or not args.ipset_prefix:
        parser.error("empty prefixes would match everything")
    cleaner = Cleaner(args.dry_run)
    cleaner.routes(args.route_protocol)
    cleaner.links(args.link_prefix, set(args.link))
    cleaner.iptables(args.chain_prefix, "iptables-nft" if shutil.which("iptables-nft") else "iptables")
    # Legacy tables only when they are already loaded: reading them would load them.
    if os.path.exists("/proc/net/ip_tables_names") and open("/proc/net/ip_tables_names").read().strip():
        cleaner.iptables(args.chain_prefix, "iptables-legacy")
    cleaner.ipsets(args.ipset_prefix)
    for err in cleaner.failed:
        sys.stderr.write("failed: %s\n" % err)
    return 1 if cleaner.failed else 0


if __name__ == "__main__":
    sys.exit(main())
