"""The per-pod dataplane, exactly Calico's (calico-internals §3.3 step 5).

Host netns: veth ``cali…`` with MAC ee:ee:ee:ee:ee:ee, proxy_arp=1, proxy_delay=0,
forwarding=1, route_localnet=1, accept_ra=0, a /32 route per pod address.
Pod netns: ``CNI_IFNAME`` with the /32, ``169.254.1.1 dev eth0 scope link``,
``default via 169.254.1.1``, ip_forward=0. No static ARP: proxy ARP answers.

One :class:`Dataplane` per thread (netlink sockets are thread-affine). ADD and DEL use
``pycalico.cni.rtnl`` (messages packed by hand); dumps (CHECK) use pyroute2, imported
on first use. Work in the pod netns is done on a netlink socket opened after a
per-thread ``setns`` — no fork.
"""

from __future__ import annotations

import ctypes
import errno
import ipaddress
import os
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pycalico.cni import names
from pycalico.cni.rtnl import RT_SCOPE_LINK, NetlinkError, Rtnl
from pycalico.errors import DataplaneError, NetnsError

if TYPE_CHECKING:
    from pyroute2 import IPRoute

HOST_MAC = "ee:ee:ee:ee:ee:ee"
GATEWAY = "169.254.1.1"
CLONE_NEWNET = 0x40000000

_libc = ctypes.CDLL(None, use_errno=True)


def _setns(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns: {os.strerror(err)}")


def open_netns(path: str) -> int:
    """An fd for the netns at ``path``; NetnsError if it is missing or not a netns."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as exc:
        raise NetnsError(f"failed to open netns {path!r}: {exc.strerror}") from None
    return fd


@contextmanager
def in_netns(fd: int) -> Iterator[None]:
    """Run the block with this *thread* in the netns ``fd``, then come back."""
    home = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        try:
            _setns(fd)
        except OSError as exc:
            raise NetnsError(f"cannot enter netns: {exc.strerror}") from None
        try:
            yield
        finally:
            _setns(home)
    finally:
        os.close(home)


def netlink_errors() -> tuple[type[Exception], ...]:
    """What a failed netlink request raises: our Rtnl's error, and pyroute2's once it is
    loaded (IPRoute, for dumps). pyroute2 is imported only when a dump needs it."""
    loaded = sys.modules.get("pyroute2.netlink.exceptions")
    return (NetlinkError, loaded.NetlinkError) if loaded is not None else (NetlinkError,)


def _errno(exc: Exception) -> int:
    """The errno of a netlink error (ours and pyroute2's both carry it as ``code``)."""
    return int(getattr(exc, "code", 0) or 0)


def _dataplane_error(exc: Exception) -> DataplaneError:
    code = _errno(exc)
    return DataplaneError(f"netlink: {os.strerror(code) if code else exc}")


@contextmanager
def _as_dataplane_error() -> Iterator[None]:
    """A failed netlink request surfaces as DataplaneError (CNI code 105)."""
    try:
        yield
    except netlink_errors() as exc:
        raise _dataplane_error(exc) from None


def _iproute() -> IPRoute:
    from pyroute2 import IPRoute

    return IPRoute()


def write_sysctl(path: str, value: str) -> None:
    """Write /proc/sys/<path> in the calling thread's netns."""
    with open("/proc/sys/" + path, "w") as f:
        f.write(value)


@dataclass
class PendingPod:
    """A veth pair made by begin_pod, waiting for its addresses."""

    nsfd: int
    netns_path: str
    ifname: str
    host_ifname: str
    container_mac: str
    mtu: int
    pod: Rtnl | None = None
    created: bool = False
    host_index: int = 0
    pod_index: int = 0

    def release(self) -> None:
        if self.pod is not None:
            self.pod.close()
            self.pod = None
        if self.nsfd >= 0:
            os.close(self.nsfd)
            self.nsfd = -1


class Dataplane:
    """Netlink handle for the host netns (the calling thread's, at creation)."""

    def __init__(self) -> None:
        self.rtnl = Rtnl()  # the hot path
        self._ipr: IPRoute | None = None

    @property
    def ipr(self) -> IPRoute:
        """pyroute2's full API, for dumps (CHECK) and rare paths; made on first use."""
        if self._ipr is None:
            self._ipr = _iproute()
        return self._ipr

    def close(self) -> None:
        if self._ipr is not None:
            self._ipr.close()
        self.rtnl.close()

    # ---- helpers ---------------------------------------------------------------------

    def _index(self, ipr: IPRoute, ifname: str) -> int | None:
        found = ipr.link_lookup(ifname=ifname)
        return found[0] if found else None

    def _delete_host_link(self, ifname: str) -> bool:
        return self._delete_link(self.rtnl, ifname)

    @staticmethod
    def _delete_link(rtnl: Rtnl, ifname: str) -> bool:
        index = rtnl.link_index(ifname)
        if index is None:
            return False
        try:
            rtnl.link_del(index)
            return True
        except netlink_errors() as exc:
            if _errno(exc) in (errno.ENODEV, errno.ENOENT):
                return False
            raise

    @contextmanager
    def _pod_ipr(self, nsfd: int) -> Iterator[IPRoute]:
        with in_netns(nsfd):
            ipr = _iproute()
        try:
            yield ipr
        finally:
            ipr.close()

    # ---- ADD -------------------------------------------------------------------------

    def begin_pod(self, netns_path: str, ifname: str, host_ifname: str, mtu: int,
                  container_mac: str = "", may_replace: Callable[[], bool] = lambda: False) -> PendingPod:
        """Create the veth pair, host side configured and up; no addresses yet.

        Fails before leaving anything behind when the netns cannot be opened or
        already has ``ifname``. A host veth of that name already there is deleted
        only when ``may_replace()`` says it is a stale one of this attachment;
        otherwise it is another attachment's and the ADD fails (DataplaneError)."""
        nsfd = open_netns(netns_path)
        pending = PendingPod(nsfd, netns_path, ifname, host_ifname, container_mac or names.random_mac(), mtu)
        try:
            with in_netns(nsfd):
                pod = Rtnl()
            pending.pod = pod
            try:
                self._create_veth(host_ifname, ifname, nsfd, pending.container_mac, mtu)
            except netlink_errors() as exc:
                if _errno(exc) != errno.EEXIST:
                    raise
                if pod.link_index(ifname) is not None:
                    raise DataplaneError(f"interface {ifname!r} already exists in netns {netns_path}") from None
                if not may_replace():
                    raise DataplaneError(f"host veth {host_ifname} already exists and belongs to another "
                                         "attachment; not deleting it") from None
                self._delete_host_link(host_ifname)
                self._create_veth(host_ifname, ifname, nsfd, pending.container_mac, mtu)
            pending.created = True
            host_idx = self.rtnl.link_index(host_ifname)
            if host_idx is None:
                raise DataplaneError(f"host veth {host_ifname} vanished after creation")
            pending.host_index = host_idx
            self._host_sysctls(host_ifname)
            return pending
        except netlink_errors() as exc:
            self.abort_pod(pending)
            raise _dataplane_error(exc) from None
        except BaseException:
            self.abort_pod(pending)
            raise

    def address_pod(self, pending: PendingPod, addresses: Sequence[ipaddress.IPv4Interface]) -> None:
        """The pod's side only (its netns: nobody else's): addresses, the 169.254.1.1
        link route, the default route. The caller may still abort the pod (or readdress
        it with other addresses), and must release it."""
        assert pending.pod is not None
        with _as_dataplane_error():
            with in_netns(pending.nsfd):
                pending.pod_index = self._configure_pod(pending.pod, pending.ifname, addresses)

    def readdress_pod(self, pending: PendingPod, old: Sequence[ipaddress.IPv4Interface],
                      new: Sequence[ipaddress.IPv4Interface]) -> None:
        """After address_pod: swap the pod's addresses. New ones first: with no IPv4
        address left the kernel would drop the interface's routes."""
        assert pending.pod is not None and pending.pod_index
        with _as_dataplane_error():
            for addr in new:
                if addr not in old:
                    pending.pod.addr_add(pending.pod_index, str(addr.ip), 32)
            for addr in old:
                if addr not in new:
                    pending.pod.addr_del(pending.pod_index, str(addr.ip), 32)

    def route_to_pod(self, pending: PendingPod, addresses: Sequence[ipaddress.IPv4Interface]) -> None:
        """The host's /32 routes to the pod: shared with every other pod on the host, so
        only for addresses IPAM has committed to this one."""
        with _as_dataplane_error():
            for addr in addresses:
                self._host_route(pending.host_index, pending.host_ifname, addr.ip)

    def abort_pod(self, pending: PendingPod) -> None:
        """Undo begin_pod: remove the veth pair (and with it every address and route)."""
        try:
            if pending.created:
                self._delete_host_link(pending.host_ifname)
                pending.created = False
        finally:
            pending.release()

    def _create_veth(self, host_ifname: str, ifname: str, nsfd: int, mac: str, mtu: int) -> None:
        self.rtnl.veth_add(host_ifname, HOST_MAC, ifname, nsfd, mac, mtu)

    @staticmethod
    def _host_sysctls(host_ifname: str) -> None:
        write_sysctl(f"net/ipv4/conf/{host_ifname}/route_localnet", "1")
        write_sysctl(f"net/ipv4/neigh/{host_ifname}/proxy_delay", "0")
        write_sysctl(f"net/ipv4/conf/{host_ifname}/proxy_arp", "1")
        write_sysctl(f"net/ipv4/conf/{host_ifname}/forwarding", "1")
        try:
            write_sysctl(f"net/ipv6/conf/{host_ifname}/accept_ra", "0")
        except OSError:
            pass  # IPv6 disabled on this host

    def _configure_pod(self, pod: Rtnl, ifname: str, addresses: Sequence[ipaddress.IPv4Interface]) -> int:
        idx = pod.link_index(ifname)
        if idx is None:
            raise DataplaneError(f"container interface {ifname} missing after creation")
        pod.link_up(idx)
        for addr in addresses:
            pod.addr_add(idx, str(addr.ip), 32)
        # A second attachment's routes coexist with the first's: its own metric (the
        # interface index, unique in the netns), so a DEL of either leaves the other's.
        metric = 0 if ifname == names.PRIMARY_IFNAME else idx
        pod.route_add(GATEWAY, 32, idx, scope=RT_SCOPE_LINK, priority=metric)
        pod.route_add("0.0.0.0", 0, idx, gateway=GATEWAY, priority=metric)
        try:
            write_sysctl("net/ipv4/ip_forward", "0")
        except OSError:
            pass
        return idx

    def _host_route(self, host_idx: int, host_ifname: str, ip: ipaddress.IPv4Address) -> None:
        try:
            self.rtnl.route_add(str(ip), 32, host_idx, scope=RT_SCOPE_LINK)
        except netlink_errors() as exc:
            if _errno(exc) != errno.EEXIST:
                raise
            routes = list(self.ipr.route("get", dst=str(ip)))
            oifs = {r.get_attr("RTA_OIF") for r in routes}
            if oifs != {host_idx}:
                raise DataplaneError(
                    f"route to {ip}/32 already exists on another interface; cannot add it to {host_ifname}"
                ) from None

    # ---- DEL -------------------------------------------------------------------------

    def del_pod(self, netns_path: str, ifname: str, host_ifname: str) -> None:
        """Remove the pair, by host name if given, else inside the netns. A missing
        netns or link is success."""
        if host_ifname and self._delete_host_link(host_ifname):
            return
        if not netns_path:
            return
        try:
            nsfd = open_netns(netns_path)
        except NetnsError:
            return
        try:
            with in_netns(nsfd):
                pod = Rtnl()
            try:
                self._delete_link(pod, ifname)
            finally:
                pod.close()
        except NetnsError:
            return
        finally:
            os.close(nsfd)

    def wait_link_gone(self, host_ifname: str, done: Any, timeout: float = 5.0) -> None:
        """Poll (one RTM_GETLINK each) until ``host_ifname`` is unlisted or ``done``
        (a Future) has finished."""
        deadline = time.monotonic() + timeout
        while not done.done() and time.monotonic() < deadline:
            if self.rtnl.link_index(host_ifname) is None:
                return
            time.sleep(0.002)
        if not done.done():
            done.result(timeout=max(0.0, deadline - time.monotonic()) + 30)

    # ---- CHECK -----------------------------------------------------------------------

    def check_pod(
        self, netns_path: str, ifname: str, host_ifname: str, addresses: Sequence[ipaddress.IPv4Interface]
    ) -> list[str]:
        """What is wrong with the attachment ([] when all is in place)."""
        problems: list[str] = []
        host_idx = self._index(self.ipr, host_ifname)
        if host_idx is None:
            return [f"host veth {host_ifname} is missing"]
        link = list(self.ipr.link("get", index=host_idx))[0]
        if (link.get_attr("IFLA_ADDRESS") or "").lower() != HOST_MAC:
            problems.append(f"host veth {host_ifname} MAC is not {HOST_MAC}")
        if not link["flags"] & 1:
            problems.append(f"host veth {host_ifname} is down")
        try:
            with open(f"/proc/sys/net/ipv4/conf/{host_ifname}/proxy_arp") as f:
                if f.read().strip() != "1":
                    problems.append(f"proxy_arp is off on {host_ifname}")
        except OSError:
            problems.append(f"cannot read proxy_arp of {host_ifname}")
        host_routes = {
            (r.get_attr("RTA_DST"), r["dst_len"])
            for r in self.ipr.route("dump", oif=host_idx)
            if r.get_attr("RTA_OIF") == host_idx
        }
        for addr in addresses:
            if (str(addr.ip), 32) not in host_routes:
                problems.append(f"host route {addr.ip}/32 dev {host_ifname} is missing")
        try:
            nsfd = open_netns(netns_path)
        except NetnsError as exc:
            return [*problems, str(exc)]
        try:
            with self._pod_ipr(nsfd) as pod:
                idx = self._index(pod, ifname)
                if idx is None:
                    return [*problems, f"container interface {ifname} is missing"]
                have = {(a.get_attr("IFA_ADDRESS"), a["prefixlen"]) for a in pod.addr("dump", index=idx)
                        if a["index"] == idx}
                for addr in addresses:
                    if (str(addr.ip), 32) not in have:
                        problems.append(f"address {addr.ip}/32 is missing on {ifname}")
                routes = [r for r in pod.route("dump") if r.get_attr("RTA_OIF") == idx]
                if not any(r["dst_len"] == 0 and r.get_attr("RTA_GATEWAY") == GATEWAY for r in routes):
                    problems.append(f"default route via {GATEWAY} is missing")
                if not any(r.get_attr("RTA_DST") == GATEWAY and r["dst_len"] == 32 for r in routes):
                    problems.append(f"route {GATEWAY} dev {ifname} scope link is missing")
        finally:
            os.close(nsfd)
        return problems
