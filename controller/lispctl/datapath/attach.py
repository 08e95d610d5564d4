"""tc clsact and XDP attach/detach with pyroute2 (no shelling out to tc/ip)."""
from __future__ import annotations

import ctypes
import errno
import logging
import os
import socket
import struct
from dataclasses import dataclass

from lispctl.datapath.errors import DatapathError
from lispctl.datapath.syscall import bpf

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
        from pyroute2.iproute.linux import IPRoute
    except ImportError as exc:
        raise DatapathError("pyroute2 is not installed") from exc
    return IPRoute()


def ifindex_of(ifname: str) -> int:
    # one ioctl in the current namespace; an IPRoute session (socket, and
    # pyroute2's machinery) per lookup cost a start-up ~14 of them
    try:
        return socket.if_nametoindex(ifname)
    except OSError:
        raise DatapathError(f"no such interface: {ifname}") from None


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


# ---- tx checksum offload of virtual RLOC devices ----

# rloc-checksum setting -> Datapath.attach_rloc_interface(complete_checksums=)
CHECKSUM_MODES = {"auto": None, "complete": True, "offload": False}
TX_CSUM_FEATURES = ("tx-checksum-ip-generic", "tx-checksum-ipv4", "tx-checksum-ipv6")


@dataclass(frozen=True)
class TxCsumAttachment:
    """Checksum offload features we switched off on an RLOC device (restored at detach)."""
    ifname: str
    ifindex: int
    features: tuple[str, ...]


def _set_tx_features(ifname: str, want: dict[str, bool]) -> None:
    from pyroute2.ethtool import Ethtool
    with Ethtool() as et:
        cur = et.get_features(ifname)
        for name, on in want.items():
            cur.features[name].enable = on
        et.set_features(ifname, cur)


def tx_checksum_off(ifname: str) -> TxCsumAttachment:
    """Switch off the tx checksum offload of a (virtual) RLOC device.

    Why: a packet whose inner TCP/UDP checksum is CHECKSUM_PARTIAL (a veth
    host's TCP, a local socket) keeps only the pseudo-header sum in its
    bytes until a device completes it. A NIC does (in hardware, or the
    kernel in software for it); veth never does: the skb crosses into the
    next namespace still "partial", and a userspace ETR reading UDP 4341
    (OOR) gets a bad inner checksum, GSO super-packets even as one 64 KB
    datagram. No BPF helper can complete such a checksum and clear
    CHECKSUM_PARTIAL (writing the sum from BPF would be summed again, wrongly,
    by the next device that completes it), so the device must: without tx
    checksum offload, validate_xmit_skb completes non-GSO packets
    (skb_checksum_help) and segments GSO ones in software with every inner
    checksum computed. See docs/datapath.md."""
    from pyroute2.ethtool import Ethtool
    ifindex = ifindex_of(ifname)
    try:
        with Ethtool() as et:
            cur = et.get_features(ifname)
            on = tuple(f for f in TX_CSUM_FEATURES if f in cur.features and cur.features[f].enable)
        if on:
            _set_tx_features(ifname, {f: False for f in on})
    except (OSError, KeyError) as exc:
        raise DatapathError(f"cannot switch off tx checksum offload on {ifname}: {exc}") from exc
    return TxCsumAttachment(ifname, ifindex, on)


def restore_tx_checksum(att: TxCsumAttachment) -> None:
    if not att.features:
        return
    try:
        if not ifindex_of(att.ifname) == att.ifindex:
            return
        _set_tx_features(att.ifname, {f: True for f in att.features})
    except (OSError, KeyError, DatapathError):
        pass                     # interface gone (namespace torn down)


# ---- XDP ----

XDP_FLAGS_SKB_MODE = 1 << 1
XDP_FLAGS_DRV_MODE = 1 << 2
XDP_MODES = {XDP_FLAGS_DRV_MODE: "native", XDP_FLAGS_SKB_MODE: "generic"}
RLOC_MODES = ("tc", "xdp", "auto")
EID_MODES = RLOC_MODES

_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class XdpAttachment:
    ifname: str
    ifindex: int
    program: str
    prog_id: int
    flags: int              # XDP_FLAGS_DRV_MODE or XDP_FLAGS_SKB_MODE

    @property
    def mode(self) -> str:
        return XDP_MODES.get(self.flags, hex(self.flags))


def _xdp_state(ipr, ifindex: int) -> tuple[int, int]:
    """(attached mode 0/1 native/2 generic, program id) of the device."""
    link = ipr.get_links(ifindex)[0]
    xdp = link.get_attr("IFLA_XDP")
    if xdp is None:
        return 0, 0
    mode = xdp.get_attr("IFLA_XDP_ATTACHED") or 0
    if isinstance(mode, str):     # pyroute2 names the modes
        mode = {"xdp": 1, "xdpgeneric": 2, "xdpoffload": 3, "xdpmulti": 4}.get(mode, 0)
    return int(mode), int(xdp.get_attr("IFLA_XDP_PROG_ID") or 0)


def _set_xdp(ipr, ifindex: int, fd: int, flags: int) -> None:
    ipr.link("set", index=ifindex, xdp={"attrs": [("IFLA_XDP_FD", fd), ("IFLA_XDP_FLAGS", flags)]})


def attach_xdp(ifname: str, prog_fd: int, prog_name: str) -> XdpAttachment:
    """Attach prog_fd as the device's XDP program: native (driver) mode, or
    generic (skb) mode with a warning when the driver refuses native XDP.

    Replaces an XDP program of ours (same name: a restarted controller takes
    over without a gap); refuses to replace anybody else's."""
    from pyroute2.netlink.exceptions import NetlinkError

    ifindex = ifindex_of(ifname)
    new_id = prog_id_of_fd(prog_fd)
    with _ipr() as ipr:
        mode, cur = _xdp_state(ipr, ifindex)
        if cur and prog_name_of_id(cur) != prog_name:
            raise DatapathError(f"{ifname} already has an XDP program ({prog_name_of_id(cur) or 'id %d' % cur}) "
                                f"that is not ours; remove it first")
        order = [XDP_FLAGS_DRV_MODE, XDP_FLAGS_SKB_MODE]
        if mode == 2:          # ours in generic mode: stay there (a mode switch needs a detach)
            order = [XDP_FLAGS_SKB_MODE]
        errors = []
        for flags in order:
            try:
                _set_xdp(ipr, ifindex, prog_fd, flags)
            except NetlinkError as exc:
                errors.append(f"{XDP_MODES[flags]}: {exc}")
                continue
            if errors:
                _log.warning("%s: native XDP refused (%s); %s attached in generic (skb) mode, "
                             "which has none of native XDP's speed", ifname, errors[0], prog_name)
            return XdpAttachment(ifname, ifindex, prog_name, new_id, flags)
    raise DatapathError(f"cannot attach XDP program {prog_name} to {ifname}: " + "; ".join(errors))


def detach_xdp(att: XdpAttachment) -> None:
    """Remove our XDP program if it is still the one attached (a newer
    instance may have replaced it). Missing interfaces are not an error."""
    from pyroute2.netlink.exceptions import NetlinkError

    with _ipr() as ipr:
        try:
            _mode, cur = _xdp_state(ipr, att.ifindex)
        except NetlinkError as exc:
            if exc.code in (errno.ENODEV, errno.ENOENT):
                return
            raise DatapathError(f"cannot read XDP state of {att.ifname}: {exc}") from exc
        if cur != att.prog_id:
            return
        try:
            _set_xdp(ipr, att.ifindex, -1, att.flags)
        except NetlinkError as exc:
            if exc.code not in (errno.ENODEV, errno.ENOENT):
                raise DatapathError(f"cannot detach XDP from {att.ifname}: {exc}") from exc


def xdp_program_id(ifname: str) -> int:
    """Id of the XDP program attached to ifname (0: none)."""
    with _ipr() as ipr:
        return _xdp_state(ipr, ifindex_of(ifname))[1]


def is_physical(ifname: str) -> bool:
    """A NIC with a driver of its own (PCI, virtio, ...): no rtnetlink kind
    (veth, vxlan, dummy, bridge... all have one) and a parent bus device.
    Asked over netlink, so it answers for the current network namespace
    (/sys/class/net shows the namespace sysfs was mounted in)."""
    with _ipr() as ipr:
        link = ipr.get_links(ifindex_of(ifname))[0]
    info = link.get_attr("IFLA_LINKINFO")
    if info is not None and info.get_attr("IFLA_INFO_KIND"):
        return False
    return bool(link.get_attr("IFLA_PARENT_DEV_NAME"))


def resolve_rloc_mode(ifname: str, mode: str, side: str = "RLOC", physical: bool | None = None) -> str:
    """"tc" or "xdp" for attach_rloc_interface's and attach_eid_interface's
    mode ("auto": XDP on physical NICs, tc on virtual devices, where XDP
    would cost GSO). physical: is_physical(ifname), when the caller has it
    already."""
    if mode not in RLOC_MODES:
        raise DatapathError(f"bad {side} interface mode {mode!r} (one of {', '.join(RLOC_MODES)})")
    if mode != "auto":
        return mode
    return "xdp" if (is_physical(ifname) if physical is None else physical) else "tc"


def resolve_eid_mode(ifname: str, mode: str) -> str:
    return resolve_rloc_mode(ifname, mode, "EID")


# ---- BPF program ids (bpf(2), no bcc) ----

BPF_PROG_GET_FD_BY_ID, BPF_OBJ_GET_INFO_BY_FD = 13, 15
_PROG_INFO_SIZE = 80        # struct bpf_prog_info up to and including name[16]
_PROG_INFO_ID, _PROG_INFO_NAME = 4, 64


_bpf = bpf


def _prog_info(fd: int) -> bytes:
    info = ctypes.create_string_buffer(_PROG_INFO_SIZE)
    _bpf(BPF_OBJ_GET_INFO_BY_FD, struct.pack("=IIQ", fd, _PROG_INFO_SIZE, ctypes.addressof(info)))
    return info.raw


def prog_id_of_fd(fd: int) -> int:
    return struct.unpack_from("=I", _prog_info(fd), _PROG_INFO_ID)[0]


def prog_name_of_id(prog_id: int) -> str:
    """The name of a loaded program ("" if it is gone)."""
    try:
        fd = _bpf(BPF_PROG_GET_FD_BY_ID, struct.pack("=I", prog_id))
    except OSError:
        return ""
    try:
        raw = _prog_info(fd)
    finally:
        os.close(fd)
    return raw[_PROG_INFO_NAME:_PROG_INFO_NAME + 16].split(b"\0", 1)[0].decode(errors="replace")
