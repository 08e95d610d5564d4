"""What a veth's peer does with what we send into it.

check: whether a veth takes XDP_REDIRECTed frames: its peer must have an
XDP program attached or GRO on.

handoff: whether the tc programs may hand a packet to the peer's ingress
(bpf_redirect_peer) instead of transmitting it on the veth; see that
function.

Why: veth_xdp_xmit puts a redirected frame on the PEER's receive ring, which
exists only while the peer runs NAPI; the peer runs NAPI when it has an XDP
program or GRO requested (veth_open, veth_set_features). Without it the
kernel drops the frame and counts it nowhere we can see. The peer usually
lives in another network namespace (a container, a lab namespace): it is
found from rtnetlink (IFLA_LINK, IFLA_LINK_NETNSID), its namespace from the
nsid (RTM_GETNSID asked about the named namespaces, then the processes'
ones), and read there from a thread that entered it (setns moves only the
calling thread).
"""
from __future__ import annotations

import ctypes
import fcntl
import os
import socket
import struct
import threading
from dataclasses import dataclass
from pathlib import Path

from lispctl.datapath.errors import DatapathError

CLONE_NEWNET = 0x40000000
SIOCETHTOOL = 0x8946
ETHTOOL_GGRO = 0x2B
NETNS_DIR = Path("/var/run/netns")


@dataclass(frozen=True)
class PeerCheck:
    """accepts: True/False, or None when it could not be determined (reason says why)."""
    peer: str                # the peer's name, or "ifindex N" when unknown
    netns: str               # where the peer lives: "" the current namespace, else a path
    accepts: bool | None
    reason: str

    def info(self) -> dict:
        return {"peer": self.peer, "peer_netns": self.netns or None, "accepts": self.accepts,
                "reason": self.reason}


def _ipr():
    from pyroute2.iproute.linux import IPRoute
    return IPRoute()


def veth_peer(ifname: str) -> tuple[int, int | None] | None:
    """(peer ifindex, nsid or None when in this namespace) of a veth; None if
    ifname is not a veth."""
    with _ipr() as ipr:
        link = ipr.get_links(socket.if_nametoindex(ifname))[0]
    info = link.get_attr("IFLA_LINKINFO")
    if info is None or info.get_attr("IFLA_INFO_KIND") != "veth":
        return None
    peer = link.get_attr("IFLA_LINK")
    if not peer:
        raise DatapathError(f"{ifname}: the kernel names no veth peer (IFLA_LINK)")
    nsid = link.get_attr("IFLA_LINK_NETNSID")
    return int(peer), None if nsid is None or nsid < 0 else int(nsid)


def _netns_candidates():
    if NETNS_DIR.is_dir():
        yield from sorted(str(p) for p in NETNS_DIR.iterdir())
    for p in Path("/proc").iterdir():       # containers: namespaces without a name
        if p.name.isdigit():
            yield f"/proc/{p.name}/ns/net"


def netns_of_nsid(nsid: int) -> str | None:
    """A path opening the namespace this namespace calls nsid, or None."""
    seen = set()
    with _ipr() as ipr:
        for path in _netns_candidates():
            try:
                st = os.stat(path)
                if (st.st_dev, st.st_ino) in seen:
                    continue
                seen.add((st.st_dev, st.st_ino))
                fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            except OSError:
                continue                       # a process that exited
            try:
                ans = ipr.get_netnsid(fd=fd)
            except Exception:                  # noqa: BLE001 - not a namespace we may ask about
                continue
            finally:
                os.close(fd)
            if ans and ans.get("nsid") == nsid:
                return path
    return None


def _in_netns(path: str, fn):
    """fn() run by a thread that entered the network namespace at path."""
    out: list = []

    def run() -> None:
        try:
            if path:
                libc = ctypes.CDLL(None, use_errno=True)
                fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
                try:
                    if libc.setns(fd, CLONE_NEWNET) != 0:
                        raise OSError(ctypes.get_errno(), f"setns {path}")
                finally:
                    os.close(fd)
            out.append((True, fn()))
        except BaseException as exc:          # noqa: BLE001 - handed to the caller
            out.append((False, exc))

    t = threading.Thread(target=run, name="veth-peer", daemon=True)
    t.start()
    t.join()
    ok, val = out[0]
    if not ok:
        raise val
    return val


def _gro_on(ifname: str) -> bool:
    val = ctypes.create_string_buffer(struct.pack("=II", ETHTOOL_GGRO, 0))
    req = struct.pack("16sP", ifname.encode(), ctypes.addressof(val)) + bytes(16)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        fcntl.ioctl(s, SIOCETHTOOL, req)
    return bool(struct.unpack_from("=II", val.raw)[1])


def _peer_state(index: int) -> tuple[str, int, bool]:
    """(name, XDP program id, GRO on) of ifindex in the calling thread's namespace."""
    with _ipr() as ipr:
        link = ipr.get_links(index)[0]
    name = link.get_attr("IFLA_IFNAME")
    xdp = link.get_attr("IFLA_XDP")
    prog = int(xdp.get_attr("IFLA_XDP_PROG_ID") or 0) if xdp is not None else 0
    return name, prog, _gro_on(name)


def _locate(ifname: str) -> tuple[int, int | None] | PeerCheck | None:
    """veth_peer's answer, or why it cannot be had."""
    try:
        return veth_peer(ifname)
    except (OSError, DatapathError) as exc:
        return PeerCheck("?", "", None, f"cannot read {ifname}'s veth peer: {exc}")


def _state(index: int, nsid: int | None) -> tuple[str, str, int, bool] | PeerCheck:
    """(its namespace's path, name, XDP program id, GRO on) of the peer, read
    in its namespace, or why that cannot be done (accepts None)."""
    path = ""
    if nsid is not None:
        try:
            found = netns_of_nsid(nsid)
        except OSError as exc:
            found, why = None, str(exc)
        else:
            why = "no named namespace (/var/run/netns) or process has it"
        if found is None:
            return PeerCheck(f"ifindex {index}", f"nsid {nsid}", None,
                             f"the peer's namespace (nsid {nsid}) cannot be opened: {why}")
        path = found
    try:
        name, prog, gro = _in_netns(path, lambda: _peer_state(index))
    except Exception as exc:                    # noqa: BLE001 - reported, not fatal
        return PeerCheck(f"ifindex {index}", path, None, f"cannot read the peer: {exc}")
    return path, name, prog, gro


def check(ifname: str) -> PeerCheck | None:
    """Whether redirecting XDP frames into veth ifname reaches its peer; None
    when ifname is not a veth."""
    peer = _locate(ifname)
    if not isinstance(peer, tuple):
        return peer
    st = _state(*peer)
    if isinstance(st, PeerCheck):
        return st
    path, name, prog, gro = st
    if prog:
        return PeerCheck(name, path, True, "the peer has an XDP program")
    if gro:
        return PeerCheck(name, path, True, "the peer has GRO on")
    return PeerCheck(name, path, False, "the peer has neither an XDP program nor GRO on")


# clsact's egress hook, as the parent of its filters (TC_H_CLSACT | TC_H_MIN_EGRESS)
CLSACT_EGRESS = 0xFFFFFFF3


def egress_state(index: int) -> str:
    """Why transmitting on ifindex would do more than hand the packet to its
    peer ('' when it would not): a root qdisc other than noqueue (shaping,
    queueing) or a tc egress filter."""
    with _ipr() as ipr:
        for q in ipr.get_qdiscs(index=index):
            kind = q.get_attr("TCA_KIND")
            if q["parent"] == 0xFFFFFFFF and kind != "noqueue":
                return f"it has a {kind} root qdisc"
        if ipr.get_filters(index=index, parent=CLSACT_EGRESS):
            return "it has tc egress filters"
    return ""


# What a veth's transmit needs to leave every packet as it is: a checksum to
# leave partial, each GSO type the data plane's packets carry (inner TCP and
# UDP, in a UDP tunnel with or without its checksum) and GRO's frag lists to
# leave whole.
PASS_THROUGH_FEATURES = ("tx-checksum-ip-generic", "tx-scatter-gather", "tx-scatter-gather-fraglist",
                         "tx-tcp-segmentation", "tx-tcp6-segmentation", "tx-tcp-ecn-segmentation",
                         "tx-tcp-mangleid-segmentation", "tx-udp-segmentation", "tx-udp_tnl-segmentation",
                         "tx-udp_tnl-csum-segmentation")


def transmit_work(ifname: str) -> str:
    """Why transmitting on veth ifname would change a GSO super-packet or a
    partial checksum ('' when it would not): an offload in
    PASS_THROUGH_FEATURES is off, so validate_xmit_skb segments the packet
    or completes its checksum in software (an RLOC veth with rloc-checksum
    "auto" or "complete" has tx checksumming off for exactly that)."""
    from pyroute2.ethtool import Ethtool
    try:
        with Ethtool() as et:
            features = et.get_features(ifname).features
    except Exception as exc:                    # noqa: BLE001 - then only what needs no transmit
        return f"its offloads cannot be read: {exc}"
    off = [name for name in PASS_THROUGH_FEATURES if name in features and not features[name].enable]
    return f"its transmit would work on GSO or checksum-offload packets ({', '.join(off)} off)" if off else ""


def handoff(ifname: str) -> PeerCheck | None:
    """Whether packets redirected into veth ifname may go to its peer's
    ingress directly (bpf_redirect_peer) rather than through the veth's
    transmit: the same packet reaches the peer either way, minus the
    transmit path and the backlog queue the peer would take it from
    (about a third of a veth hop). Only when nothing on that path would act
    on it: the peer is in another namespace (the kernel drops a peer
    redirect within one), runs no XDP program (veth XDP runs on the
    transmit path; a handed-over packet would skip it) and the veth sends
    through noqueue without tc egress filters (a shaper or filter there
    would be skipped too). None when ifname is not a veth; accepts None
    when it could not be determined (then no: the plain redirect is always
    right)."""
    peer = _locate(ifname)
    if not isinstance(peer, tuple):
        return peer
    index, nsid = peer
    if nsid is None:
        return PeerCheck(f"ifindex {index}", "", False, "the peer is in this namespace")
    why = egress_state(socket.if_nametoindex(ifname))
    if why:
        return PeerCheck(f"ifindex {index}", f"nsid {nsid}", False, why)
    st = _state(index, nsid)
    if isinstance(st, PeerCheck):
        return st
    path, name, prog, _ = st
    if prog:
        return PeerCheck(name, path, False, "the peer has an XDP program")
    return PeerCheck(name, path, True, "the peer is in another namespace, without XDP; noqueue, no egress filter")
