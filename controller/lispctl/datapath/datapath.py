"""The Python face of the BPF data plane: load, attach, write maps, read
counters and miss events. Map layouts come from the loaded program (bcc's
Key/Leaf ctypes), never from a copy here."""
from __future__ import annotations

import ctypes
import ipaddress
import logging
import operator
import os
import select
import shutil
import socket
import struct
from array import array
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from lispctl.datapath import attach as _attach
from lispctl.datapath import vethpeer as _vethpeer
from lispctl.datapath.errors import DatapathError
from lispctl.datapath.loader import header_define, header_enum
from lispctl.datapath.idpool import IdPool
from lispctl.datapath.maps import RingBuffer
from lispctl.datapath.pinned import add_slot_counts, slot_counts
from lispctl.datapath.prebuilt import RETIRED_FLOW_CACHE, forget_layout, open_datapath
from lispctl.datapath.locsets import build_locator_set, fixed_choice
from lispctl.mapping.bulkfile import KEY_SIZE, BulkTable, key_bytes
from lispctl.mapping.types import EidPrefix, IPAddress, MapAction, Rloc
from lispctl.roles.base import MissEvent

log = logging.getLogger(__name__)

DEFAULT_PIN_BASE = Path("/sys/fs/bpf/lispctl")
DEFAULT_MISS_INTERVAL_MS = 1000
CFG_REENCAP = header_define("LISP_CFG_REENCAP")
CFG_PETR = header_define("LISP_CFG_PETR")
CFG_PETR_ACL = header_define("LISP_CFG_PETR_ACL")
CFG_PITR = header_define("LISP_CFG_PITR")
OUT_XDP = header_define("LISP_OUT_XDP")
OUT_PEER = header_define("LISP_OUT_PEER")
OUT_PEER_ALL = header_define("LISP_OUT_PEER_ALL")

MAX_LOCATORS = header_define("LISP_MAX_LOCATORS")
SLOTS = header_define("LISP_SLOTS")
LEVELS = header_define("LISP_LEVELS")
NO_LOCATOR = header_define("LISP_NO_LOCATOR")
DEFAULT_MAX_MAPPINGS = header_define("LISP_MAX_MAPPINGS")   # per family, unless the caller sets it
PETR_SET = header_define("LISP_PETR_SET")
_CHUNK = 8192           # mappings per batched update round (bounded Python buffers)
MISS_BATCH = 256        # miss events returned by one poll_misses() at most


def _enum_names(enum: str, prefix: str) -> dict[int, str]:
    return {v: k[len(prefix):].lower() for k, v in header_enum(enum).items() if not k[len(prefix):].startswith("_")}


DROP_REASONS = _enum_names("lisp_drop_reason", "LISP_DROP_")
COUNTER_NAMES = _enum_names("lisp_counter", "LISP_CNT_")
_CNT = header_enum("lisp_counter")
_MISS = header_enum("lisp_miss_action")


@dataclass
class BulkSet:
    """A table installed with load_bulk: what unload_bulk removes."""
    name: str
    keys4: bytes                 # LPM keys installed, back to back
    keys6: bytes
    ids: array                   # their mapping ids: one per distinct locator set
    skipped: int = 0             # prefixes left out: already in the map-cache (or listed twice)

    def __len__(self) -> int:
        return self.count(4) + self.count(6)

    def count(self, version: int) -> int:
        return len(self.keys4 if version == 4 else self.keys6) // KEY_SIZE[version]

    def info(self) -> dict:
        return {"name": self.name, "ipv4": len(self.keys4) // KEY_SIZE[4],
                "ipv6": len(self.keys6) // KEY_SIZE[6], "skipped": self.skipped}


_first = operator.itemgetter(0)
_LEAF = struct.Struct("=IB3x")     # struct lisp_mapping: id, action (checked against the loaded map)


@dataclass(frozen=True)
class Counters:
    """Sums over all CPUs. drops: reason name (enum lisp_drop_reason, lower
    case, e.g. 'unknown_iid') -> packets; other: every remaining counter."""
    encapsulated: int
    decapsulated: int
    miss: int
    drops: dict[str, int] = field(default_factory=dict)
    other: dict[str, int] = field(default_factory=dict)

    @property
    def total_drops(self) -> int:
        return sum(self.drops.values())


def _set_bytes(arr, data: bytes) -> None:
    ctypes.memmove(ctypes.addressof(arr), data, len(data))


def _addr16(addr: IPAddress) -> bytes:
    return addr.packed.ljust(16, b"\0")


class Datapath:
    """One loaded data plane instance, maps pinned at <pin_root>/<instance>.

    Opening an instance whose maps are already pinned reuses them (entries and
    counters survive a controller restart); programs are reloaded and
    re-attached with replace semantics."""

    def __init__(self, instance: str = "default", pin_root: str | os.PathLike | None = None,
                 cflags: Sequence[str] = (), max_mappings: int | None = None) -> None:
        if not instance or "/" in instance or instance.startswith("."):
            raise DatapathError(f"bad instance name {instance!r}")
        if os.geteuid() != 0:
            raise DatapathError("the BPF data plane needs root (CAP_BPF, CAP_NET_ADMIN)")
        base = Path(pin_root) if pin_root is not None else DEFAULT_PIN_BASE
        if not _on_bpffs(base):
            raise DatapathError(f"{base} is not on a bpf filesystem (mount -t bpf bpf /sys/fs/bpf)")
        self.instance = instance
        self.pin_dir = base / instance
        if max_mappings is not None:
            # per family; part of the build key (prebuilt.py), so another
            # size compiles and loads anew. Maps already pinned keep theirs:
            # capacity is read back from the loaded maps.
            if not 1 <= int(max_mappings) < 1 << 26:
                raise DatapathError(f"bad max-mappings {max_mappings}")
            cflags = (*cflags, f"-DLISP_MAX_MAPPINGS={int(max_mappings)}")
        fresh = not self.pin_dir.exists()
        self.pin_dir.mkdir(parents=True, exist_ok=True)
        try:
            # compiled by a short-lived child, or reused when the pinned
            # programs match the source and flags (prebuilt.py): no bcc here
            self._loaded = open_datapath(self.pin_dir, tuple(cflags))
        except BaseException:
            # bcc pins maps before loading programs: a new instance that failed
            # leaves nothing behind (an existing one keeps its state)
            if fresh:
                shutil.rmtree(self.pin_dir, ignore_errors=True)
            raise
        self._t = self._loaded.tables
        self.compiled = self._loaded.compiled      # False: pinned programs reused
        # ifname -> whether (and why) the XDP programs may redirect into it,
        # for interfaces whose default was decided (_redirect_default)
        self.xdp_redirects: dict[str, dict] = {}
        # ifname -> whether (and why) the tc programs hand packets for it to
        # its veth peer (_decide_handoff), for the interfaces attached
        self.peer_handoffs: dict[str, dict] = {}
        self._attachments: list[_attach.TcAttachment | _attach.XdpAttachment | _attach.TxCsumAttachment] = []
        self._local_rlocs: list[IPAddress] = self._read_local_rlocs()
        self._ids: dict[EidPrefix, int] = self._read_mapping_ids()
        self._count = {4: 0, 6: 0}                   # entries of _ids per family
        for eid in self._ids:
            self._count[eid.prefix.version] += 1
        self._pool = IdPool(int(self._t["locsets"].max_entries), self._ids.values(), reserved=PETR_SET)
        self._bulk: dict[str, BulkSet] = {}
        self._ring: RingBuffer | None = None
        self._events: list[MissEvent] = []
        self._closed = False
        self._mtu_explicit = False
        self._petr_iids: set[int] = set()
        # a writer that died between a map-cache write and its bump, or maps
        # never opened before (generation 0 disables the flow cache)
        self._map_cache_changed()
        self.next_hops_changed()
        cfg = self._config()
        if cfg.miss_interval_ns == 0 and not any(True for _ in self._t["map_cache4"].keys()):
            cfg.miss_interval_ns = DEFAULT_MISS_INTERVAL_MS * 1_000_000
            self._write_config(cfg)

    # ---- program access (tests, benchmark) ----
    def prog_fd(self, name: str) -> int:
        """fd of lisp_itr_ingress, lisp_itr_egress, lisp_etr_ingress (tc),
        lisp_etr_xdp or lisp_itr_xdp (XDP)."""
        return self._loaded.progs[name]

    def table(self, name: str):
        """A map of bpf/lisp_maps.h (maps.Table: bcc's Key/Leaf ctypes and item access)."""
        return self._t[name]

    # ---- attach ----
    def attach_eid_interface(self, ifname: str, iid: int = 0, xdp_redirect: bool | None = None,
                             mode: str = "tc") -> str:
        """ITR on a router: tc ingress of an EID-facing interface; packets
        entering there belong to instance `iid`.

        mode "xdp" also attaches the XDP ITR (lisp_itr_xdp) in front of it,
        native or (with a logged warning) generic, as attach_rloc_interface
        does for the ETR: it encapsulates the common case and XDP_REDIRECTs
        it out of an RLOC interface that may take XDP frames
        (set_xdp_redirect); the rest goes on to the tc ITR. "auto": "xdp" on
        physical NICs, "tc" on virtual devices (veth: XDP there turns off
        the host's TSO). Returns "tc", "xdp-native" or "xdp-generic".

        xdp_redirect: whether the XDP ETR may XDP_REDIRECT decapsulated
        packets out of this interface (see set_xdp_redirect); None decides by
        the device (_redirect_default): yes for a physical NIC with our XDP
        program attached in native mode (many drivers transmit redirected
        frames only then) and for a veth running it natively whose peer has
        an XDP program or GRO on, no otherwise."""
        resolved = _attach.resolve_eid_mode(ifname, mode)
        ifindex = _attach.ifindex_of(ifname)
        self._set_eid_if(ifindex, iid)
        self._attachments.append(_attach.attach_tc(ifname, self.prog_fd("lisp_itr_ingress"),
                                                   "lisp_itr_ingress", _attach.INGRESS))
        used = self._attach_xdp(ifname, "lisp_itr_xdp") if resolved == "xdp" else "tc"
        self.set_xdp_redirect(ifname, self._decide_redirect(ifname, used, xdp_redirect))
        self._decide_handoff(ifname)
        return used

    def _attach_xdp(self, ifname: str, prog: str) -> str:
        xatt = _attach.attach_xdp(ifname, self.prog_fd(prog), prog)
        self._attachments.append(xatt)
        return f"xdp-{xatt.mode}"

    def _decide_redirect(self, ifname: str, used: str, xdp_redirect: bool | None) -> bool:
        if xdp_redirect is None:
            return self._redirect_default(ifname, used)
        self.xdp_redirects[ifname] = {"redirect": xdp_redirect, "reason": "set by the caller"}
        return xdp_redirect

    def _redirect_default(self, ifname: str, used: str) -> bool:
        """Whether XDP programs may redirect into ifname when the caller did
        not say: only where the user asked for XDP (mode "xdp", or "auto" on
        a NIC) and it runs natively, and only into a device that transmits
        redirected frames: a physical NIC, or a veth whose peer has an XDP
        program or GRO on (vethpeer.py). Decided now, at attach: a peer that
        changes later is not followed. The answer, and why, is kept in
        xdp_redirects (the daemon's status shows it); a veth left out gets
        one warning saying what to do."""
        if used != "xdp-native":
            return False
        if _attach.is_physical(ifname):
            self.xdp_redirects[ifname] = {"redirect": True, "reason": "physical NIC running XDP natively"}
            return True
        peer = _vethpeer.check(ifname)
        if peer is None:
            self.xdp_redirects[ifname] = {"redirect": False, "reason": "virtual device that is not a veth"}
            return False
        self.xdp_redirects[ifname] = {"redirect": bool(peer.accepts), **peer.info()}
        if not peer.accepts:
            log.warning("%s: XDP attached, but XDP_REDIRECT into it stays off (its veth peer %s%s: %s); "
                        "packets for it take the tc path. Enable GRO on the peer: ethtool -K %s gro on, "
                        "or attach an XDP program to it, then restart lispctl",
                        ifname, peer.peer, f" in {peer.netns}" if peer.netns else "",
                        "could not be checked: " + peer.reason if peer.accepts is None else peer.reason,
                        peer.peer if peer.accepts is not None else "<peer>")
        return bool(peer.accepts)

    def set_eid_interface(self, ifname: str, iid: int = 0) -> None:
        """Instance ID of packets entering ifname, without attaching the ITR
        there: a PITR whose Internet-facing interface is also an RLOC
        interface, where the ETR program hands what is not LISP to the ITR
        program (PITR mode)."""
        self._set_eid_if(_attach.ifindex_of(ifname), iid)

    def attach_eid_device(self, ifname: str, iid: int = 0) -> None:
        """Mobile node: tc egress of the host's EID device (dummy/veth; an
        Ethernet-type device), so locally originated packets are encapsulated."""
        ifindex = _attach.ifindex_of(ifname)
        self._set_eid_if(ifindex, iid)
        self._attachments.append(_attach.attach_tc(ifname, self.prog_fd("lisp_itr_egress"),
                                                   "lisp_itr_egress", _attach.EGRESS))

    def attach_rloc_interface(self, ifname: str, mode: str = "tc", complete_checksums: bool | None = None,
                              xdp_redirect: bool | None = None) -> str:
        """ETR: tc ingress of an RLOC-facing interface. Also sets the path MTU
        from this interface's MTU unless set_path_mtu() was called.

        mode "xdp" also attaches the XDP ETR (lisp_etr_xdp) in native mode,
        or generic mode with a logged warning when the driver has no native
        XDP; the tc ETR stays behind it for what XDP passes on
        (re-encapsulation). "auto": "xdp" on physical NICs, "tc" on virtual
        devices (veth, where XDP would cost GSO/TSO). Returns the mode used:
        "tc", "xdp-native" or "xdp-generic".

        complete_checksums: switch the device's tx checksum offload off (and
        back on at detach), so every inner TCP/UDP checksum is complete on
        the wire whoever decapsulates (see attach.tx_checksum_off). None: on
        virtual devices (veth never completes a partial checksum), not on
        physical NICs (they complete it). False keeps offloads, and GSO
        super-packets whole across veth, for underlays whose ETRs are all
        kernel ones (lispctl), as the lab's throughput figures want.

        xdp_redirect: whether the XDP ITR may XDP_REDIRECT encapsulated
        packets out of this interface (see set_xdp_redirect); None: a
        physical NIC running the XDP ETR natively, or a veth running it
        natively whose peer has an XDP program or GRO on."""
        physical = _attach.is_physical(ifname) if mode == "auto" or complete_checksums is None else None
        resolved = _attach.resolve_rloc_mode(ifname, mode, physical=physical)
        if complete_checksums is None:
            complete_checksums = not physical
        if complete_checksums:
            self._attachments.append(_attach.tx_checksum_off(ifname))
        att = _attach.attach_tc(ifname, self.prog_fd("lisp_etr_ingress"), "lisp_etr_ingress", _attach.INGRESS)
        self._attachments.append(att)
        used = self._attach_xdp(ifname, "lisp_etr_xdp") if resolved == "xdp" else "tc"
        self.set_xdp_redirect(ifname, self._decide_redirect(ifname, used, xdp_redirect))
        self._decide_handoff(ifname)
        if not self._mtu_explicit:
            mtu = _attach.link_mtu(att.ifindex)
            cfg = self._config()
            if cfg.path_mtu == 0 or mtu < cfg.path_mtu:
                cfg.path_mtu = mtu
                self._write_config(cfg)
        return used

    def _decide_handoff(self, ifname: str) -> None:
        """Whether the tc programs give packets they redirect into ifname
        (the ETR's into an EID-facing interface, the ITR's into an
        RLOC-facing one) to its veth peer directly (vethpeer.handoff): the
        same packet, a shorter path. Decided now, at attach, like the XDP
        redirect, except that a qdisc or egress filter added to ifname later
        takes the hand-over back (recheck_handoffs, which the daemon calls on
        tc and link notifications); an XDP program attached to the peer later (another
        namespace: no notification reaches us) is skipped by handed-over
        packets until the interface is attached again. Which packets go:
        every one when the veth's transmit would leave GSO super-packets and
        partial checksums as they are (its offloads on), else only those
        that need no transmit work (vethpeer.transmit_work). Kept in
        peer_handoffs (the daemon's status shows it)."""
        peer = _vethpeer.handoff(ifname)
        if peer is None:
            self.peer_handoffs[ifname] = {"handoff": False, "reason": "not a veth"}
        else:
            self.peer_handoffs[ifname] = {"handoff": bool(peer.accepts), **peer.info()}
        self.set_peer_handoff(ifname, bool(peer and peer.accepts))
        if peer and peer.accepts:
            self._decide_handoff_all(ifname)

    def _decide_handoff_all(self, ifname: str) -> None:
        """LISP_OUT_PEER_ALL for a handed-over device: from its own
        features, read here (no other namespace), so given as well as taken."""
        why = _vethpeer.transmit_work(ifname)
        decided = self.peer_handoffs[ifname]
        if decided.get("all_packets") != (not why):
            self._set_out_bit(ifname, OUT_PEER_ALL, not why)
        decided.update(all_packets=not why, all_packets_reason=why or "its offloads leave every packet whole")

    def recheck_handoffs(self) -> list[str]:
        """Take the hand-over back from every interface that has gained a
        root qdisc other than noqueue or a tc egress filter since it was
        decided, and follow its offloads for which packets go (local
        netlink and ethtool reads only: cheap enough for the daemon's loop,
        which calls this on tc and link notifications). Returns the
        interfaces it took the hand-over from. Never gives that back: it
        needs the peer's namespace read again, at the next attach."""
        taken = []
        for ifname, decided in self.peer_handoffs.items():
            if not decided.get("handoff"):
                continue
            try:
                why = _vethpeer.egress_state(_attach.ifindex_of(ifname))
                if not why:
                    self._decide_handoff_all(ifname)
            except (OSError, DatapathError):
                continue            # gone: its bits went with its ifindex's use
            if why:
                self.set_peer_handoff(ifname, False)
                decided.update(handoff=False, accepts=False, reason=why + " (since attach)", all_packets=False)
                log.warning("%s: packets for it no longer go straight to its veth peer: %s", ifname, why)
                taken.append(ifname)
        return taken

    def set_peer_handoff(self, ifname: str, enabled: bool) -> None:
        """Let (or not) the tc programs at ingress hand packets for ifname to
        its veth peer's ingress (bpf_redirect_peer; LISP_OUT_PEER). Only for a
        veth whose peer is in another namespace (the kernel drops the packet
        otherwise) and where nothing on the transmit path must see it.
        Disabling also clears LISP_OUT_PEER_ALL, which means nothing without it."""
        self._set_out_bit(ifname, OUT_PEER if enabled else OUT_PEER | OUT_PEER_ALL, enabled)

    def _set_out_bit(self, ifname: str, bit: int, enabled: bool) -> None:
        t = self._t["out_devs"]
        key = t.Key(_attach.ifindex_of(ifname))
        bits = (t[key].value if key in t else 0) & ~bit | (bit if enabled else 0)
        if bits:
            t[key] = t.Leaf(bits)
        elif key in t:
            del t[key]
        self.next_hops_changed()      # cached next hops carry the bits

    def set_xdp_redirect(self, ifname: str, enabled: bool) -> None:
        """Allow (or not) the XDP programs to XDP_REDIRECT into ifname: the
        XDP ETR into an EID-facing interface, the XDP ITR into an RLOC-facing
        one. Only for devices that take XDP frames: a NIC driver with
        ndo_xdp_xmit (many want an XDP program of their own attached), or a
        veth whose peer has an XDP program or GRO on (otherwise the kernel
        drops redirected frames without a trace). Packets that may not be
        redirected go to the stack (XDP_PASS): decapsulated ones are
        forwarded there, the ITR's are encapsulated by the tc ITR."""
        self._set_out_bit(ifname, OUT_XDP, enabled)

    def detach(self) -> None:
        """Remove every filter and XDP program this object attached (maps stay)."""
        errors = []
        for att in reversed(self._attachments):
            try:
                if isinstance(att, _attach.XdpAttachment):
                    _attach.detach_xdp(att)
                elif isinstance(att, _attach.TxCsumAttachment):
                    _attach.restore_tx_checksum(att)
                else:
                    _attach.detach_tc(att)
            except DatapathError as exc:
                errors.append(str(exc))
        self._attachments.clear()
        if errors:
            raise DatapathError("; ".join(errors))

    def _set_eid_if(self, ifindex: int, iid: int) -> None:
        t = self._t["eid_ifaces"]
        leaf = t.Leaf()
        leaf.iid = iid
        t[t.Key(ifindex)] = leaf
        self._map_cache_changed()       # the ITRs keep the last answer per CPU under flow_gen

    # ---- local RLOCs and EIDs ----
    def add_local_rloc(self, addr: IPAddress) -> None:
        addr = ipaddress.ip_address(addr)
        t = self._t["local_rlocs"]
        t[self._rloc_key(addr)] = t.Leaf(1)
        if addr not in self._local_rlocs:
            self._local_rlocs.append(addr)
        self._update_sources()

    def remove_local_rloc(self, addr: IPAddress) -> None:
        addr = ipaddress.ip_address(addr)
        # out of the config's outer sources first: the ETR takes a source
        # as local without asking local_rlocs (etr_local_rloc)
        if addr in self._local_rlocs:
            self._local_rlocs.remove(addr)
        self._update_sources()
        try:
            del self._t["local_rlocs"][self._rloc_key(addr)]
        except KeyError:
            pass

    def local_rlocs(self) -> list[IPAddress]:
        return list(self._local_rlocs)

    def prefer_local_rloc(self, addr: IPAddress) -> None:
        """Make a local RLOC the first of its family: the outer source of
        encapsulated packets (a mobile node's preferred uplink)."""
        addr = ipaddress.ip_address(addr)
        if addr in self._local_rlocs and self._local_rlocs.index(addr) != 0:
            self._local_rlocs.remove(addr)
            self._local_rlocs.insert(0, addr)
            self._update_sources()

    def add_local_eid(self, eid: EidPrefix, lsb: int = 1) -> None:
        """EID prefix of this site: decapsulated packets to it are delivered,
        packets to it from the EID side are not encapsulated, and its instance
        ID is accepted by the ETR.

        lsb: the locator-status bits the ITR sends for packets from this
        prefix (RFC 9300 5.3): bit i set when locator i of this prefix's own
        mapping (in its order, as registered) is up; see local_lsb(). Calling
        again with another value updates them. Packets whose source is no
        local EID (RTR, PITR) are sent with L=0."""
        if not 0 <= lsb < 1 << 32:
            raise DatapathError(f"bad locator-status bits {lsb:#x}")
        t = self._eid_table(eid, "local_eid")
        key = self._lpm_key(t, eid)
        old = t.get(key)
        if old is not None and old.value == lsb:
            return                      # unchanged: the flow cache stays warm
        t[key] = t.Leaf(lsb)
        if old is None:
            self._iid_ref(eid.iid, +1)
        # the flow cache keeps local-EID answers, and the XDP ITR's slots a
        # source's bits: new or changed, the next packet must see them
        self._map_cache_changed()

    def remove_local_eid(self, eid: EidPrefix) -> None:
        t = self._eid_table(eid, "local_eid")
        try:
            del t[self._lpm_key(t, eid)]
        except KeyError:
            return
        self._iid_ref(eid.iid, -1)
        self._map_cache_changed()       # the flow cache keeps local-EID answers

    def iid_accepted(self, iid: int) -> bool:
        """Whether the ETR decapsulates instance `iid` (the kernel's rule)."""
        t = self._t["accepted_iids"]
        return t.Key(iid) in t

    def is_local_eid(self, iid: int, addr: IPAddress) -> bool:
        """Whether addr of instance iid is in the local EID database (LPM)."""
        t = self._t[f"local_eid{addr.version}"]
        k = t.Key()
        k.prefixlen = 32 + addr.max_prefixlen
        k.iid = socket.htonl(iid)
        _set_bytes(k.addr, addr.packed)
        try:
            t[k]
        except KeyError:
            return False
        return True

    def open_reassembly(self):
        """The ETR's path for outer fragments, which the programs leave to
        the stack: a ReassemblyReceiver on UDP 4341 deciding with this data
        plane's maps (see lispctl.datapath.reassembled). The caller polls
        its fds() and calls handle(fd)."""
        from lispctl.datapath.reassembled import ReassemblyReceiver
        return ReassemblyReceiver(self.iid_accepted, self.is_local_eid)

    def accept_iid(self, iid: int, accept: bool = True) -> None:
        """Accept decapsulation for an instance ID without a local EID (RTR)."""
        self._iid_ref(iid, +1 if accept else -1)

    # ---- map-cache ----
    def set_mapping(self, eid: EidPrefix, rlocs: Sequence[Rloc], action: MapAction = MapAction.NO_ACTION) -> None:
        """Install or replace a map-cache entry. Empty rlocs + action is a
        negative entry (no-action without locators: forward natively, RFC
        9301); rlocs with NO_ACTION encapsulate. Counters of a prefix survive
        replacement (the mapping id is kept).

        Atomic for the packets in flight: a locator set is written before the
        entry that needs it (a hash map update replaces the old one whole)
        and deleted only after the entry stopped needing it, so no packet
        ever sees an encapsulating entry without locators (the kernel drops
        such a packet, counted no_locator_set, rather than leak it)."""
        t = self._eid_table(eid, "map_cache")
        key = self._lpm_key(t, eid)
        mid = self._ids.get(eid)
        if mid is None:
            if self._bulk and key in t:
                raise DatapathError(f"{eid} is held by a bulk-loaded table (unload it first)")
            if self._count[eid.prefix.version] + self._bulk_count(eid.prefix.version) >= t.max_entries:
                raise DatapathError(f"map-cache full ({t.max_entries} IPv{eid.prefix.version} mappings)")
            mid = self._alloc_id()
            self._count[eid.prefix.version] += 1
            self._zero_stats(mid)
        if rlocs:
            self._write_locset(mid, rlocs)
        elif action == MapAction.NO_ACTION:
            action = MapAction.NATIVELY_FORWARD
        leaf = t.Leaf()
        leaf.id = mid
        leaf.action = int(action)
        t[key] = leaf
        self._map_cache_changed()
        self._ids[eid] = mid
        if not rlocs:
            self._del_locset(mid)

    def delete_mapping(self, eid: EidPrefix) -> None:
        """Remove an entry (then its locator set: never the other way round).
        Only entries set with set_mapping: a bulk-loaded one goes with its table."""
        mid = self._ids.pop(eid, None)
        if mid is None:
            return
        t = self._eid_table(eid, "map_cache")
        try:
            del t[self._lpm_key(t, eid)]
        except KeyError:
            pass
        self._map_cache_changed()
        self._count[eid.prefix.version] -= 1
        self._del_locset(mid)
        try:
            del self._t["map_stats"][self._t["map_stats"].Key(mid)]
        except KeyError:
            pass
        self._pool.release(mid)

    @property
    def capacity(self) -> int:
        """Map-cache entries the data plane can hold, IPv4 and IPv6 together
        (each family at most family_capacity): each takes a locator-set id
        and PETR_SET's is reserved. Read from the loaded maps, so it follows
        the max_mappings they were created with (datapath.max-mappings)."""
        return min(int(self._t["locsets"].max_entries) - 1,
                   self.family_capacity(4) + self.family_capacity(6))

    def family_capacity(self, version: int) -> int:
        return int(self._t[f"map_cache{version}"].max_entries)

    # ---- bulk map-cache tables ----
    def load_bulk(self, name: str, table: BulkTable) -> BulkSet:
        """Install a whole table (lispctl.mapping.bulkfile) with batched map
        updates (BPF_MAP_UPDATE_BATCH, or one bpf(2) per element where the
        kernel has no batch for the map type: decided once per map).

        The mappings of a table that share a locator set (the same text
        after the prefix) share one mapping id, so one locator set: the
        kernel then holds one LPM node per mapping (~100 bytes), not a
        500-byte locator set each. What they give up is per-mapping counters
        (map_stats, which the program skips when missing; the global
        counters count their packets): a per-CPU element per mapping would
        cost the kernel ~40 us each, a minute per million.

        Locator sets are written before the entries naming them, so no packet
        meets an entry without its locator set. Prefixes already in the
        map-cache (set_mapping or another table) or listed twice (the first
        line wins) are left out and counted (BulkSet.skipped). All or
        nothing: a table that does not fit, or a failing update, leaves the
        maps as they were."""
        if name in self._bulk:
            raise DatapathError(f"a bulk table named {name!r} is loaded (unload it first)")
        self._check_layouts()
        taken: set[bytes] = {key_bytes(e) for e in self._ids}
        for other in self._bulk.values():
            for blob, ks in ((other.keys4, KEY_SIZE[4]), (other.keys6, KEY_SIZE[6])):
                mv = memoryview(blob)
                taken.update(mv[o:o + ks].tobytes() for o in range(0, len(blob), ks))
        skipped = 0
        keep: dict[int, array | None] = {}            # None: every row
        for rows_ in (table.v4, table.v6):
            fmt = f"{KEY_SIZE[rows_.version]}s"
            uniq = set(map(_first, struct.iter_unpack(fmt, rows_.keys)))
            if len(uniq) == len(rows_) and uniq.isdisjoint(taken):
                keep[rows_.version] = None                    # the common case: no per-row work
                if rows_.version == 4:
                    taken |= uniq
                continue
            del uniq
            rows = array("I")
            for i, k in enumerate(map(_first, struct.iter_unpack(fmt, rows_.keys))):
                if k in taken:
                    skipped += 1
                    continue
                taken.add(k)
                rows.append(i)
            keep[rows_.version] = rows
        del taken
        counts = {}
        for v in (4, 6):
            kv = keep[v]
            counts[v] = len(table.family(v)) if kv is None else len(kv)
        for v in (4, 6):
            free = self.family_capacity(v) - self._count[v] - self._bulk_count(v)
            if counts[v] > free:
                raise DatapathError(f"map-cache full: the table has {counts[v]} IPv{v} mappings, "
                                    f"{free} more fit (datapath.max-mappings)")
        groups_used: set[int] = set()
        for v in (4, 6):
            grp, kv = table.family(v).groups, keep[v]
            groups_used.update(grp if kv is None else (grp[i] for i in kv))
        order = sorted(groups_used)
        ids = self._pool.take_many(len(order))
        if ids is None:
            raise DatapathError(f"map-cache full: {len(self._pool)} mapping ids left, the table needs "
                                f"{len(order)}")
        gid = dict(zip(order, ids))
        leaf: dict[int, bytes] = {}
        installed: dict[int, bytearray] = {4: bytearray(), 6: bytearray()}
        locsets = self._t["locsets"]
        try:
            with_locs = [g for g in order if table.locator_sets[g]]
            for start in range(0, len(with_locs), _CHUNK):
                part = with_locs[start:start + _CHUNK]
                locsets.update_many(array("I", (gid[g] for g in part)).tobytes(),
                                    b"".join(bytes(self._locset_leaf(table.locator_sets[g])) for g in part))
            pack = _LEAF.pack
            for grp_i in order:
                leaf[grp_i] = pack(gid[grp_i], table.actions_of[grp_i])
            for v in (4, 6):
                self._bulk_entries(table.family(v), keep[v], leaf, installed[v])
        except OSError as exc:
            self._bulk_remove(bytes(installed[4]), bytes(installed[6]), ids)
            self._pool.release_many(ids)
            raise DatapathError(f"bulk load of {name!r} failed after "
                                f"{(len(installed[4]) // 12) + (len(installed[6]) // 24)} mappings: {exc}") from exc
        bs = BulkSet(name, bytes(installed[4]), bytes(installed[6]), ids, skipped)
        self._bulk[name] = bs
        return bs

    def _bulk_entries(self, rows_, keep: array | None, leaf: dict[int, bytes], installed: bytearray) -> None:
        cache = self._t[f"map_cache{rows_.version}"]
        ks, keys, groups = KEY_SIZE[rows_.version], rows_.keys, rows_.groups
        n = len(rows_) if keep is None else len(keep)
        for start in range(0, n, _CHUNK):
            if keep is None:
                end = min(n, start + _CHUNK)
                ckeys = keys[start * ks:end * ks]
                vals = b"".join([leaf[g] for g in groups[start:end]])
            else:
                part = keep[start:start + _CHUNK]
                ckeys = bytearray(b"".join([keys[i * ks:(i + 1) * ks] for i in part]))
                vals = b"".join([leaf[groups[i]] for i in part])
            cache.update_many(ckeys, vals)
            self._map_cache_changed()      # a more-specific prefix is seen by the next packet
            installed += ckeys

    def unload_bulk(self, name: str) -> int:
        """Remove a table load_bulk installed (batched deletes); returns how
        many mappings went."""
        bs = self._bulk.pop(name, None)
        if bs is None:
            raise DatapathError(f"no bulk table named {name!r}")
        self._bulk_remove(bs.keys4, bs.keys6, bs.ids)
        self._pool.release_many(bs.ids)
        return len(bs)

    def _bulk_remove(self, keys4: bytes, keys6: bytes, ids: array) -> None:
        # entries first, then what they name (as delete_mapping does)
        self._t["map_cache4"].delete_many(keys4)
        self._t["map_cache6"].delete_many(keys6)
        self._map_cache_changed()
        # (bulk mappings have no per-mapping counters: see load_bulk)
        self._t["locsets"].delete_many(ids.tobytes())

    def bulk_tables(self) -> dict[str, BulkSet]:
        return dict(self._bulk)

    def _bulk_count(self, version: int) -> int:
        return sum(b.count(version) for b in self._bulk.values())

    def _check_layouts(self) -> None:
        """The bulk path packs keys and entries with struct, for speed: check
        once that the loaded maps agree with that packing."""
        for v in (4, 6):
            t = self._t[f"map_cache{v}"]
            K = t.Key
            if (ctypes.sizeof(K), K.prefixlen.offset, K.iid.offset, K.addr.offset) != (KEY_SIZE[v], 0, 4, 8):
                raise DatapathError(f"map_cache{v} key layout differs from the bulk packing")
            L = t.Leaf
            if (ctypes.sizeof(L), L.id.offset, L.action.offset) != (_LEAF.size, 0, 4):
                raise DatapathError(f"map_cache{v} value layout differs from the bulk packing")

    def mappings(self) -> dict[EidPrefix, int]:
        """Installed prefixes -> mapping id."""
        return dict(self._ids)

    def set_miss_action(self, action: MapAction, petr: Sequence[Rloc] = ()) -> None:
        """What to do on a miss (no entry, or a send-Map-Request entry): with
        petr locators, encapsulate to them; otherwise NATIVELY_FORWARD or
        NO_ACTION forward natively, anything else drops. A miss event is
        emitted in every case."""
        cfg = self._config()
        if petr:
            self._write_locset(PETR_SET, petr)
            cfg.miss_action = _MISS["LISP_MISS_PETR"]
        else:
            self._del_locset(PETR_SET)
            native = action in (MapAction.NATIVELY_FORWARD, MapAction.NO_ACTION)
            cfg.miss_action = _MISS["LISP_MISS_NATIVE" if native else "LISP_MISS_DROP"]
        self._write_config(cfg)

    # ---- config ----
    def set_path_mtu(self, mtu: int) -> None:
        """Largest outer packet; 0 disables the check."""
        if not 0 <= mtu < 1 << 32:
            raise DatapathError(f"bad MTU {mtu}")
        self._mtu_explicit = True
        cfg = self._config()
        cfg.path_mtu = mtu
        self._write_config(cfg)

    def set_miss_rate_limit_ms(self, ms: int) -> None:
        """At most one miss event per (instance, destination) per `ms`."""
        cfg = self._config()
        cfg.miss_interval_ns = int(ms) * 1_000_000
        self._write_config(cfg)

    def set_reencap(self, enabled: bool) -> None:
        """RTR/PITR: re-encapsulate decapsulated packets for non-local EIDs."""
        cfg = self._config()
        cfg.flags = (cfg.flags | CFG_REENCAP) if enabled else (cfg.flags & ~CFG_REENCAP)
        self._write_config(cfg)

    def set_petr(self, enabled: bool, accept_eids: Sequence[EidPrefix] | None = None,
                 iids: Sequence[int] = (0,)) -> None:
        """Proxy-ETR (RFC 6832): decapsulate packets for any destination and
        forward the inner packet natively. accept_eids: None accepts every
        inner source; a list accepts only sources inside those prefixes
        (everything else is dropped as petr_src_denied). The instance IDs of
        iids and of accept_eids are accepted by the ETR."""
        for name in ("petr_accept4", "petr_accept6"):
            t = self._t[name]
            for k in list(t.keys()):
                try:
                    del t[k]
                except KeyError:
                    pass
        for iid in self._petr_iids:
            self._iid_ref(iid, -1)
        self._petr_iids = set()
        cfg = self._config()
        cfg.flags &= ~(CFG_PETR | CFG_PETR_ACL)
        if enabled:
            for eid in accept_eids or ():
                t = self._eid_table(eid, "petr_accept")
                t[self._lpm_key(t, eid)] = t.Leaf(1)
            self._petr_iids = set(iids) | {e.iid for e in accept_eids or ()}
            for iid in self._petr_iids:
                self._iid_ref(iid, +1)
            cfg.flags |= CFG_PETR | (CFG_PETR_ACL if accept_eids is not None else 0)
        self._write_config(cfg)

    def set_pitr(self, enabled: bool) -> None:
        """Proxy-ITR (RFC 6832): the ITR programs leave alone every packet no
        map-cache entry covers (install the EID aggregates as
        send-Map-Request entries to attract resolution for them)."""
        cfg = self._config()
        cfg.flags = (cfg.flags | CFG_PITR) if enabled else (cfg.flags & ~CFG_PITR)
        self._write_config(cfg)

    def reset(self) -> None:
        """Empty every map and restore the default configuration (flush)."""
        self._petr_iids = set()
        for bulk_name in list(self._bulk):
            self.unload_bulk(bulk_name)
        # the default configuration first: its outer sources go before
        # local_rlocs (the ETR takes a source as local without the map)
        t = self._t["config"]
        cfg = t.Leaf()
        cfg.miss_interval_ns = DEFAULT_MISS_INTERVAL_MS * 1_000_000
        t[t.Key(0)] = cfg
        for name in ("map_cache4", "map_cache6", "locsets", "local_eid4", "local_eid6", "local_rlocs",
                     "accepted_iids", "eid_ifaces", "miss_rl", "map_stats", "out_devs",
                     "petr_accept4", "petr_accept6"):
            if name == "locsets":
                self._map_cache_changed()  # the entries are gone: before their locator sets
            t = self._t[name]
            for k in list(t.keys()):
                try:
                    del t[k]
                except KeyError:
                    pass
        self._map_cache_changed()          # local EIDs too (the flow cache keeps them)
        for retired in self.pin_dir.glob(RETIRED_FLOW_CACHE + "*"):
            retired.unlink()               # their counts were of mappings now gone
        self._t["counters"].clear()
        self.next_hops_changed()       # out_devs and the outer sources are gone
        self._ids.clear()
        self._count = {4: 0, 6: 0}
        self._bulk.clear()
        self._pool = IdPool(int(self._t["locsets"].max_entries), reserved=PETR_SET)
        self._local_rlocs.clear()
        self._mtu_explicit = False

    def config(self) -> dict:
        cfg = self._config()
        return {"path_mtu": cfg.path_mtu, "miss_action": cfg.miss_action,
                "miss_interval_ms": cfg.miss_interval_ns // 1_000_000, "reencap": bool(cfg.flags & CFG_REENCAP),
                "petr": bool(cfg.flags & CFG_PETR), "petr_acl": bool(cfg.flags & CFG_PETR_ACL),
                "pitr": bool(cfg.flags & CFG_PITR),
                "src4": str(ipaddress.IPv4Address(bytes(cfg.src4))) if cfg.has_src4 else None,
                "src6": str(ipaddress.IPv6Address(bytes(cfg.src6))) if cfg.has_src6 else None}

    # ---- counters ----
    def counters(self) -> Counters:
        t = self._t["counters"]
        vals = {}
        for idx, name in COUNTER_NAMES.items():
            if name in ("drop_base",):
                continue
            vals[name] = int(t.sum(t.Key(idx)).value)
        base = _CNT["LISP_CNT_DROP_BASE"]
        drops = {name: int(t.sum(t.Key(base + r)).value) for r, name in DROP_REASONS.items()}
        main = ("encapsulated", "decapsulated", "miss")
        return Counters(vals["encapsulated"], vals["decapsulated"], vals["miss"], drops,
                        {k: v for k, v in vals.items() if k not in main})

    def mapping_counters(self, eid: EidPrefix) -> tuple[int, int]:
        """(packets, bytes of inner packets) encapsulated with this mapping."""
        mid = self._ids.get(eid)
        if mid is None:
            raise DatapathError(f"no mapping for {eid}")
        return self._stats_of({mid}).get(mid, (0, 0))

    def all_mapping_counters(self) -> dict[EidPrefix, tuple[int, int]]:
        """mapping_counters of every installed prefix, with one read of the
        flow cache."""
        stats = self._stats_of(set(self._ids.values()))
        return {eid: stats.get(mid, (0, 0)) for eid, mid in self._ids.items()}

    def _stats_of(self, ids: set[int]) -> dict[int, tuple[int, int]]:
        """{id: (packets, bytes)}: map_stats summed over CPUs, plus what the
        ITRs counted in flow-cache slots and not yet folded into map_stats
        (bpf/lisp_flowcache.h). map_stats is read first: a slot folded
        between the two reads is missed by this read (never counted twice),
        and found in map_stats by the next."""
        t = self._t["map_stats"]
        out: dict[int, list[int]] = {}
        since: dict[int, int] = {}
        for mid in ids:
            try:
                per_cpu = t[t.Key(mid)]
            except KeyError:
                continue
            out[mid] = [sum(int(v.packets) for v in per_cpu), sum(int(v.bytes) for v in per_cpu)]
            since[mid] = int(per_cpu[0].since)
        if since:
            add_slot_counts(out, since, slot_counts(self.pin_dir))
        return {mid: (v[0], v[1]) for mid, v in out.items()}

    # ---- miss events ----
    def miss_fd(self) -> int:
        """A pollable fd (the ring buffer map): readable when events wait.
        Call poll_misses(0) when it is."""
        return self._open_ring().fd

    def poll_misses(self, timeout_ms: int = 0) -> list[MissEvent]:
        ring = self._open_ring()
        ring.consume()
        if timeout_ms > 0 and not self._events:
            p = select.poll()
            p.register(ring.fd, select.POLLIN)
            p.poll(timeout_ms)
            ring.consume()
        out, self._events = self._events, []
        return out

    def _open_ring(self) -> RingBuffer:
        if self._ring is not None:
            return self._ring
        ev_type = self._loaded.event_type
        size = ctypes.sizeof(ev_type)

        def on_event(data: bytes) -> int:
            if len(data) >= size:
                ev = ev_type.from_buffer_copy(data[:size])
                # a carried packet follows the event in the same record (lisp_maps.h)
                n = int(getattr(ev, "pkt_len", 0))
                pkt = data[size:size + n] if n and size + n <= len(data) else b""
                self._events.append(_decode_miss(ev, pkt))
            # A negative return stops the consume loop (this event is already
            # taken): under a miss storm it would otherwise go on as long as
            # the producer does and starve the event loop.
            return -1 if len(self._events) >= MISS_BATCH else 0

        self._ring = self._loaded.ring(on_event)
        return self._ring

    # ---- lifecycle ----
    def close(self, unpin: bool = False) -> None:
        """Detach what we attached; with unpin, remove the pinned maps too (the
        instance is gone). Without, maps stay for the next Datapath(instance)."""
        if self._closed:
            return
        self._closed = True
        try:
            self.detach()
        finally:
            if self._ring is not None:
                self._ring.close()
                self._ring = None
            self._loaded.close()
            if unpin:
                shutil.rmtree(self.pin_dir, ignore_errors=True)
                forget_layout(self._loaded.key)

    def release(self) -> None:
        """Drop our handles but leave programs attached and maps pinned, so
        traffic keeps flowing until a new Datapath(instance) takes over.
        Bulk tables are removed first: the next instance would not know them
        apart from learnt entries (and reloads its datapath.map-cache-files)."""
        for name in list(self._bulk):
            self.unload_bulk(name)
        self._attachments.clear()
        self.close(unpin=False)

    def __enter__(self) -> "Datapath":
        return self

    def __exit__(self, *exc) -> None:
        self.close(unpin=False)

    # ---- internals ----
    def _map_cache_changed(self) -> None:
        """Every write or delete of map_cache4/6 (and of the locator sets
        they name, which are written before the entry) comes through here,
        every new or removed local EID prefix and every instance ID no longer
        accepted, after the entries changed
        and before anything they named (locator sets, ids) is freed: the new generation makes every per-CPU flow-cache slot
        filled before it a miss (bpf/lisp_flowcache.h), so the next packet
        walks the trie again. Read from the pinned map each time, so several
        processes on the same maps (a restarted daemon) never reuse a value."""
        self._bump("flow_gen")

    def next_hops_changed(self) -> None:
        """The kernel's routes, rules, neighbours, links or addresses changed (the
        daemon calls this on every such netlink event, lispctl.daemon.ifwatch):
        a new generation makes every per-CPU next-hop slot filled before it a
        miss (bpf/lisp_nexthop.h), so the next packet asks the FIB again.
        Without a call, slots still expire one second after they were filled."""
        self._bump("nh_gen")

    def _bump(self, name: str) -> None:
        """Increments a pinned one-element generation map (flow_gen, nh_gen)."""
        t = self._t[name]
        key = t.Key(0)
        gen = t[key]
        gen.value += 1
        t[key] = gen

    def _config(self):
        t = self._t["config"]
        return t[t.Key(0)]

    def _write_config(self, cfg) -> None:
        t = self._t["config"]
        t[t.Key(0)] = cfg
        self.next_hops_changed()      # the outer sources are part of the ITR's next-hop key

    def _update_sources(self) -> None:
        cfg = self._config()
        v4 = [a for a in self._local_rlocs if a.version == 4]
        v6 = [a for a in self._local_rlocs if a.version == 6]
        cfg.has_src4 = 1 if v4 else 0
        cfg.has_src6 = 1 if v6 else 0
        _set_bytes(cfg.src4, v4[0].packed if v4 else bytes(4))
        _set_bytes(cfg.src6, v6[0].packed if v6 else bytes(16))
        self._write_config(cfg)

    def _rloc_key(self, addr: IPAddress):
        k = self._t["local_rlocs"].Key()
        k.family = addr.version
        _set_bytes(k.addr, _addr16(addr))
        return k

    def _eid_table(self, eid: EidPrefix, base: str):
        return self._t[f"{base}{eid.prefix.version}"]

    @staticmethod
    def _lpm_key(t, eid: EidPrefix):
        k = t.Key()
        k.prefixlen = 32 + eid.prefix.prefixlen
        k.iid = socket.htonl(eid.iid)
        _set_bytes(k.addr, eid.prefix.network_address.packed)
        return k

    def _iid_ref(self, iid: int, delta: int) -> None:
        t = self._t["accepted_iids"]
        key = t.Key(iid)
        cur = int(t[key].value) if key in t else 0
        new = max(0, cur + delta)
        if new:
            t[key] = t.Leaf(new)
        elif key in t:
            del t[key]
            # the ETR keeps "iid accepted" in flow-cache slots (etr_lookup in
            # bpf/lisp_datapath.c); never a "not accepted", so only a removal
            # needs the new generation
            self._map_cache_changed()

    def _alloc_id(self) -> int:
        mid = self._pool.take()
        if mid is None:
            raise DatapathError(f"map-cache full ({self._pool.limit - 1} mapping ids)")
        return mid

    def _write_locset(self, mid: int, rlocs: Sequence[Rloc]) -> None:
        t = self._t["locsets"]
        t[t.Key(mid)] = self._locset_leaf(rlocs)

    def _locset_leaf(self, rlocs: Sequence[Rloc]):
        ls = build_locator_set(rlocs, MAX_LOCATORS, LEVELS, SLOTS)
        t = self._t["locsets"]
        leaf = t.Leaf()
        leaf.count = len(ls.locators)
        leaf.nlevels = len(ls.levels)
        leaf.fixed = fixed_choice(ls, SLOTS)
        for i, r in enumerate(ls.locators):
            loc = leaf.loc[i]
            _set_bytes(loc.addr, _addr16(r.address))
            loc.family = r.address.version
            loc.priority = r.priority
            loc.weight = r.weight
            loc.up = 1 if r.reachable else 0
            loc.port = r.port             # 0: 4341; a NATed xTR's translated port
        flat = b"".join(bytes(ls.levels[lvl]) if lvl < len(ls.levels) else bytes([NO_LOCATOR]) * SLOTS
                        for lvl in range(LEVELS))
        _set_bytes(leaf.slots, flat)
        return leaf

    def _del_locset(self, mid: int) -> None:
        t = self._t["locsets"]
        try:
            del t[t.Key(mid)]
        except KeyError:
            pass

    def _zero_stats(self, mid: int) -> None:
        """A new mapping's counters, before its entry is written: since is
        the generation now, so flow-cache slots an earlier mapping with the
        same id left never count toward it (bpf/lisp_maps.h, lisp_stats)."""
        t = self._t["map_stats"]
        g = self._t["flow_gen"]
        leaf = t.sLeaf()
        leaf.since = int(g[g.Key(0)].value)
        t[t.Key(mid)] = leaf

    def _read_local_rlocs(self) -> list[IPAddress]:
        out: list[IPAddress] = []
        for k in self._t["local_rlocs"].keys():
            raw = bytes(k.addr)
            out.append(ipaddress.IPv4Address(raw[:4]) if k.family == 4 else ipaddress.IPv6Address(raw))
        return sorted(out, key=lambda a: (a.version, a.packed))

    def _read_mapping_ids(self) -> dict[EidPrefix, int]:
        """Mappings already in pinned maps (a restarted controller). Entries
        of a bulk table left by a process that did not release() them (it
        died) are removed: they share ids, which single mappings never do,
        and have no per-mapping counters, which single mappings always have;
        adopted as single mappings, the first removal would free an id the
        others still use."""
        ids: dict[EidPrefix, int] = {}
        stats = self._t["map_stats"]
        has_stats: dict[int, bool] = {}
        leftover: dict[int, bytearray] = {4: bytearray(), 6: bytearray()}
        leftover_ids: set[int] = set()
        for ver in (4, 6):
            t = self._t[f"map_cache{ver}"]
            for k, v in t.items():
                mid = int(v.id)
                single = has_stats.get(mid)
                if single is None:
                    single = has_stats[mid] = stats.Key(mid) in stats
                if not single:
                    leftover[ver] += bytes(k)
                    leftover_ids.add(mid)
                    continue
                plen = k.prefixlen - 32
                raw = bytes(k.addr)
                net = ipaddress.ip_network((raw, plen))
                ids[EidPrefix(socket.ntohl(k.iid), net)] = mid
        if leftover_ids:
            self._bulk_remove(bytes(leftover[4]), bytes(leftover[6]), array("I", sorted(leftover_ids)))
        return ids


def _decode_miss(ev, packet: bytes = b"") -> MissEvent:
    """ev: bcc's ctypes view of struct lisp_miss_event (derived from the program)."""
    dst, src = bytes(ev.dst), bytes(ev.src)
    d: ipaddress.IPv4Address | ipaddress.IPv6Address
    s: ipaddress.IPv4Address | ipaddress.IPv6Address
    if ev.family == 4:
        d, s = ipaddress.IPv4Address(dst[:4]), ipaddress.IPv4Address(src[:4])
        net: ipaddress.IPv4Network | ipaddress.IPv6Network = ipaddress.IPv4Network((d, 32))
    else:
        d, s = ipaddress.IPv6Address(dst), ipaddress.IPv6Address(src)
        net = ipaddress.IPv6Network((d, 128))
    return MissEvent(EidPrefix(int(ev.iid) & 0xFFFFFF, net), s, packet)


def _on_bpffs(path: Path) -> bool:
    """True when path (or its nearest existing parent) is on bpffs."""
    p = path
    while not p.exists():
        p = p.parent
    # statfs f_type is not exposed by os; the mount table says it
    best = ""
    fstype = ""
    try:
        with open("/proc/self/mounts") as fh:
            for line in fh:
                parts = line.split()
                mnt = parts[1]
                if (str(p) == mnt or str(p).startswith(mnt.rstrip("/") + "/")) and len(mnt) >= len(best):
                    best, fstype = mnt, parts[2]
    except OSError:
        return False
    return fstype == "bpf"
