"""tc clsact attach/detach with pyroute2 (no shelling out to tc)."""
from __future__ import annotations

import errno
from dataclasses import dataclass

from lispctl.datapath.errors import DatapathError

INGRESS = "ffff:fff2"
EGRESS = "ffff:fff3"
FILTER_PRIO = 49152 - 7      # a fixed priority of ours so replace hits our filter only
FILTER_HANDLE = 0x4C49       # "LI"


@dataclass(frozen=True)
class TcAttachment:
    ifname: str
    ifindex: int
    parent: str            # INGRESS or EGRESS
    program: str
    created_clsact: bool


def _ipr():
    try:
        from pyroute2 import IPRoute
    except ImportError as exc:
        raise DatapathError("pyroute2 is not installed") from exc
    return IPRoute()


def ifindex_of(ifname: str) -> int:
    with _ipr() as ipr:
        idx = ipr.link_lookup(ifname=ifname)
    if not idx:
        raise DatapathError(f"no such interface: {ifname}")
    return idx[0]


def link_mtu(ifindex: int) -> int:
    with _ipr() as ipr:
        link = ipr.get_links(ifindex)[0]
    return int(link.get_attr("IFLA_MTU"))


def attach_tc(ifname: str, prog_fd: int, prog_name: str, parent: str) -> TcAttachment:
    """Install (or atomically replace) our direct-action bpf filter.

    replace-filter on our own prio/handle swaps programs without a gap, which
    is how a restarted controller takes over from the previous one."""
    from pyroute2.netlink.exceptions import NetlinkError

    ifindex = ifindex_of(ifname)
    created = False
    with _ipr() as ipr:
        try:
            ipr.tc("add", "clsact", ifindex)
            created = True
        except NetlinkError as exc:
            if exc.code != errno.EEXIST:
                raise DatapathError(f"cannot add clsact qdisc on {ifname}: {exc}") from exc
        try:
            ipr.tc("replace-filter", "bpf", ifindex, FILTER_HANDLE, fd=prog_fd, name=prog_name,
                   parent=parent, prio=FILTER_PRIO, direct_action=True)
        except NetlinkError as exc:
            raise DatapathError(f"cannot attach {prog_name} to {ifname}: {exc}") from exc
    return TcAttachment(ifname, ifindex, parent, prog_name, created)


def detach_tc(att: TcAttachment) -> None:
    """Remove our filter; remove clsact too if we created it. Missing interfaces
    (a namespace already torn down) are not an error."""
    from pyroute2.netlink.exceptions import NetlinkError

    with _ipr() as ipr:
        try:
            ipr.tc("del-filter", "bpf", att.ifindex, FILTER_HANDLE, parent=att.parent, prio=FILTER_PRIO)
        except NetlinkError as exc:
            if exc.code not in (errno.ENOENT, errno.ENODEV, errno.EINVAL):
                raise DatapathError(f"cannot detach from {att.ifname}: {exc}") from exc
        if att.created_clsact:
            try:
                ipr.tc("del", "clsact", att.ifindex)
            except NetlinkError:
                pass
