/* Every map, key, value and enum of the lispctl data plane.
 *
 * Python never copies these layouts: it reads them back from the loaded
 * program (bcc's ctypes Key/Leaf types) and parses the enums below from this
 * file, so this header is the single source of truth.
 *
 * LISP_PIN_ROOT is defined by the loader (e.g. "/sys/fs/bpf/lispctl/xtr1"):
 * every map except the ring buffer is pinned there, so a restarted controller
 * loads new programs on the same maps and forwarding state survives.
 */
#ifndef LISP_MAPS_H
#define LISP_MAPS_H

#ifndef LISP_PIN_ROOT
#error "LISP_PIN_ROOT must be defined by the loader"
#endif
#define LISP_PIN(name) LISP_PIN_ROOT "/" #name

/* struct lisp_flow, part of struct lisp_itr_state */
#include "lisp_parse.h"

#define LISP_DATA_PORT 4341
#define LISP_CTRL_PORT 4342
#define LISP_MAX_LOCATORS 8     /* fits the 8 LSB bits that remain when I=1 */
#define LISP_SLOTS 64           /* weight resolution of a slot table */
#define LISP_LEVELS 4           /* priority levels precomputed per locator set */
#define LISP_NO_LOCATOR 0xff    /* empty slot */
/* Map-cache entries per address family: set at load time from the config
 * (datapath.max-mappings, -DLISP_MAX_MAPPINGS=n); this is the default. Ids
 * (locator sets, per-mapping counters) are shared by both families. */
#ifndef LISP_MAX_MAPPINGS
#define LISP_MAX_MAPPINGS 1048576
#endif
#define LISP_MAX_MAPPING_IDS (2 * LISP_MAX_MAPPINGS)
#define LISP_PETR_SET 0         /* locator set id reserved for the Proxy-ETRs */

/* Map-cache actions: the ACT values of RFC 9301 section 5.4. */
enum lisp_action {
    LISP_ACT_NO_ACTION = 0,
    LISP_ACT_NATIVELY_FORWARD = 1,
    LISP_ACT_SEND_MAP_REQUEST = 2,
    LISP_ACT_DROP = 3,
    LISP_ACT_DROP_POLICY_DENIED = 4,
    LISP_ACT_DROP_AUTH_FAILURE = 5,
};

/* What the ITR does with a packet that has no usable map-cache entry. */
enum lisp_miss_action {
    LISP_MISS_DROP = 0,
    LISP_MISS_NATIVE = 1,
    LISP_MISS_PETR = 2,
};

/* Drop reasons; the counter of reason r lives at LISP_CNT_DROP_BASE + r. */
enum lisp_drop_reason {
    LISP_DROP_MALFORMED = 0,      /* LISP packet to a local RLOC that does not parse */
    LISP_DROP_UNKNOWN_IID = 1,    /* ETR: instance ID not accepted */
    LISP_DROP_NOT_LOCAL_EID = 2,  /* ETR: inner destination not in the local EID database */
    LISP_DROP_NEGATIVE = 3,       /* map-cache entry says drop */
    LISP_DROP_POLICY_DENIED = 4,
    LISP_DROP_AUTH_FAILURE = 5,
    LISP_DROP_MISS = 6,           /* no entry and the miss action is drop */
    LISP_DROP_NO_LOCATOR = 7,     /* every locator down or priority 255 */
    LISP_DROP_NO_SOURCE = 8,      /* no local RLOC of the locator's family */
    LISP_DROP_NO_ROUTE = 9,       /* FIB has no route to the locator (PETR: to the inner destination, or it is this host) */
    LISP_DROP_TOO_BIG = 10,       /* inner packet + overhead > path MTU */
    LISP_DROP_ENCAP_FAILED = 11,  /* bpf_skb_adjust_room or store failed */
    LISP_DROP_DECAP_FAILED = 12,
    LISP_DROP_TTL = 13,           /* outer TTL/hop limit 0 */
    LISP_DROP_PETR_SRC_DENIED = 14, /* PETR: inner source outside petr.accept-eids */
    LISP_DROP_PETR_LOCAL_ONLY = 15, /* PETR: inner address local-only (loopback, link-local,
                                     * multicast, unspecified, v4-mapped) */
    LISP_DROP_NO_LOCATOR_SET = 16,/* no-action entry whose locator set is missing (never forwarded natively) */
    LISP_DROP_INNER_TTL = 17,     /* ETR: inner TTL/hop limit 0 */
    LISP_DROP_ECN = 18,           /* ETR: outer CE over a not-ECT inner packet (RFC 6040) */
    LISP_DROP_TTL_EXPIRED = 19,   /* ITR: routed packet with TTL/hop limit <= 1 (Time Exceeded sent, rate limited) */
    LISP_DROP__MAX = 20,
};

enum lisp_counter {
    LISP_CNT_ENCAPSULATED = 0,
    LISP_CNT_DECAPSULATED = 1,
    LISP_CNT_MISS = 2,            /* packets without a usable entry (incl. send-Map-Request) */
    LISP_CNT_MISS_EVENTS = 3,     /* events actually written to the ring buffer */
    LISP_CNT_MISS_EVENTS_LOST = 4,/* ring buffer full */
    LISP_CNT_NATIVE = 5,          /* forwarded natively by a negative entry or miss action */
    LISP_CNT_PETR = 6,            /* encapsulated to a Proxy-ETR on a miss */
    LISP_CNT_REENCAPSULATED = 7,  /* RTR: decapsulated then encapsulated again */
    LISP_CNT_ICMP_TOO_BIG = 8,    /* ICMP frag-needed / packet-too-big sent back */
    LISP_CNT_XDP_DECAPSULATED = 9,/* of decapsulated: done by the XDP ETR */
    LISP_CNT_XDP_TO_STACK = 10,   /* of those: passed to the stack (no neighbour / no redirect target) */
    LISP_CNT_PETR_FORWARDED = 11, /* of decapsulated: PETR, inner packet forwarded natively */
    LISP_CNT_PITR_PASSED = 12,    /* PITR: packet outside every EID aggregate, left to the stack */
    LISP_CNT_TTL_TO_STACK = 13,   /* ETR: decapsulated packet with TTL/hop limit <= 1: the stack sends Time Exceeded */
    LISP_CNT_FRAG_TO_STACK = 14,  /* outer fragment to a local RLOC: left to the stack to reassemble */
    LISP_CNT_FRAGMENTED = 15,     /* ITR: DF=0 IPv4 packet too big for the path, sent as inner fragments */
    LISP_CNT_ECN_MARKED = 16,     /* ETR: outer CE (or ECT(1)) copied into the inner header (RFC 6040) */
    LISP_CNT_ICMP_TIME_EXCEEDED = 17, /* ITR: ICMP Time Exceeded sent back */
    LISP_CNT_REENCAP_MARKED = 18, /* RTR: re-encapsulated a packet the kernel still marks encapsulated (reencap_grow) */
    LISP_CNT_XDP_ENCAPSULATED = 19, /* of encapsulated: done by the XDP ITR */
    LISP_CNT_DROP_BASE = 24,
    LISP_CNT__MAX = 56,           /* room for 32 drop reasons */
};

/* Every drop reason has its counter slot. */
_Static_assert(LISP_CNT_DROP_BASE + LISP_DROP__MAX <= LISP_CNT__MAX, "counters too small for the drop reasons");

/* LPM keys. prefixlen counts the 32 bits of iid first, so a lookup never
 * crosses instances; iid is big-endian so the trie compares it bitwise. */
struct lisp_key4 {
    __u32 prefixlen;
    __be32 iid;
    __u8 addr[4];
};

struct lisp_key6 {
    __u32 prefixlen;
    __be32 iid;
    __u8 addr[16];
};

/* Map-cache value. id names both the locator set and the counters. */
struct lisp_mapping {
    __u32 id;
    __u8 action;               /* enum lisp_action; NO_ACTION = encapsulate */
    __u8 pad[3];
};

struct lisp_locator {
    __u8 addr[16];             /* IPv4 in the first 4 bytes */
    __u8 family;               /* 4 or 6 */
    __u8 priority;
    __u8 weight;
    __u8 up;                   /* 0: never picked, whatever the slot tables say */
    __u16 port;                /* UDP destination, host order; 0: LISP_DATA_PORT. An xTR
                                * behind a NAT is reached at its translated port; with a
                                * port set the outer source port is 4341, not hashed (docs/nat.md) */
};

/* slots[l * LISP_SLOTS + h % LISP_SLOTS] is the locator index for flow hash h
 * at level l (one dimension: bcc's ctypes view drops inner array dimensions);
 * level 0 is the best usable priority. Python fills them in proportion to the
 * weights; the kernel walks the levels and skips locators that are not up. */
struct lisp_locset {
    __u8 count;
    __u8 nlevels;
    __u8 fixed;                /* 1 + the locator every flow takes (lisp_pick's answer for any
                                * hash), or 0: depends on the flow; computed by Python
                                * (locsets.fixed_choice), cached by the flow cache */
    __u8 pad;
    struct lisp_locator loc[LISP_MAX_LOCATORS];
    __u8 slots[LISP_LEVELS * LISP_SLOTS];
};

struct lisp_rloc_key {
    __u8 family;
    __u8 pad[3];
    __u8 addr[16];
};

struct lisp_eid_if {
    __u32 iid;                 /* instance ID of packets entering on this interface */
};

#define LISP_CFG_REENCAP 1     /* re-encapsulate decapsulated packets for non-local EIDs */
/* Proxy-ETR (RFC 6832): decapsulated packets for non-local EIDs go out
 * natively (before any re-encapsulation); with PETR_ACL only those whose
 * inner source is in petr_accept4/6. */
#define LISP_CFG_PETR 2
#define LISP_CFG_PETR_ACL 4
/* Proxy-ITR (RFC 6832): the ITR program touches only destinations covered by
 * a map-cache entry (the EID aggregates are installed as send-Map-Request
 * entries); everything else is the PITR host's own Internet traffic. */
#define LISP_CFG_PITR 8

struct lisp_config {
    __u32 path_mtu;            /* 0: no check */
    __u32 miss_action;         /* enum lisp_miss_action */
    __u64 miss_interval_ns;    /* at most one miss event per (iid, dst) per interval */
    __u32 flags;
    __u8 has_src4;
    __u8 has_src6;
    __u8 pad[2];
    __u8 src4[4];              /* outer source of IPv4-encapsulated packets */
    __u8 src6[16];
};

struct lisp_miss_key {
    __u32 iid;
    __u8 family;
    __u8 pad[3];
    __u8 addr[16];
};

/* bcc spelling (u32/u8): bcc derives the event's ctypes class from this
 * declaration and knows only its own type names there. */
struct lisp_miss_event {
    u32 iid;
    u8 family;
    u8 pad[3];
    u8 dst[16];
    u8 src[16];
    u32 pkt_len;    /* bytes of the missed packet that follow the event (0: none) */
};
/* A miss that drops its packet (miss action drop, no Proxy-ETR) carries the
 * packet, from its IP header, in the same ring-buffer record right after
 * struct lisp_miss_event, so the daemon can hold it while the destination
 * resolves and send it once the mapping is installed (roles/holdq.py). Longer
 * packets (GSO super-packets, jumbo frames) are not carried. */
#define LISP_MISS_PKT_MAX 1500

/* Per-mapping counters. The ITRs count a flow-cache hit in the slot
 * (lisp_flowcache.h: no map_stats lookup per packet, a cold one with many
 * destinations) and the slot's counts come here when it is refilled; the
 * daemon adds the counts still in slots (Datapath.mapping_counters). since:
 * flow_gen when the daemon created the element (before the entry naming it
 * is written); a slot counts toward it only if filled under a generation
 * >= since, so a slot left by an earlier mapping with the same (reused) id
 * never does. */
struct lisp_stats {
    __u64 packets;
    __u64 bytes;
    __u64 since;
};

BPF_TABLE_PINNED("lpm_trie", struct lisp_key4, struct lisp_mapping, map_cache4, LISP_MAX_MAPPINGS, LISP_PIN(map_cache4), BPF_F_NO_PREALLOC);
BPF_TABLE_PINNED("lpm_trie", struct lisp_key6, struct lisp_mapping, map_cache6, LISP_MAX_MAPPINGS, LISP_PIN(map_cache6), BPF_F_NO_PREALLOC);
BPF_TABLE_PINNED("hash", __u32, struct lisp_locset, locsets, LISP_MAX_MAPPING_IDS, LISP_PIN(locsets), BPF_F_NO_PREALLOC);
/* Local EID database: prefix -> locator-status bits of that prefix's own
 * mapping (bit i: the site's locator i, in the order of its mapping, is up).
 * The ITR sends them for packets whose source matches (RFC 9300 5.3). */
BPF_TABLE_PINNED("lpm_trie", struct lisp_key4, __u32, local_eid4, 4096, LISP_PIN(local_eid4), BPF_F_NO_PREALLOC);
BPF_TABLE_PINNED("lpm_trie", struct lisp_key6, __u32, local_eid6, 4096, LISP_PIN(local_eid6), BPF_F_NO_PREALLOC);
BPF_TABLE_PINNED("hash", struct lisp_rloc_key, __u32, local_rlocs, 256, LISP_PIN(local_rlocs));
BPF_TABLE_PINNED("hash", __u32, __u32, accepted_iids, 4096, LISP_PIN(accepted_iids));
/* PETR allow-list (petr.accept-eids): inner source EID prefixes, per instance. */
BPF_TABLE_PINNED("lpm_trie", struct lisp_key4, __u32, petr_accept4, 4096, LISP_PIN(petr_accept4), BPF_F_NO_PREALLOC);
BPF_TABLE_PINNED("lpm_trie", struct lisp_key6, __u32, petr_accept6, 4096, LISP_PIN(petr_accept6), BPF_F_NO_PREALLOC);
BPF_TABLE_PINNED("hash", __u32, struct lisp_eid_if, eid_ifaces, 256, LISP_PIN(eid_ifaces));
/* How the programs may redirect into a device (ifindex -> LISP_OUT_* bits;
 * lispctl.datapath.Datapath decides at attach; a device not here gets the
 * plain bpf_redirect from tc and XDP_PASS from XDP).
 * LISP_OUT_XDP: the XDP programs may XDP_REDIRECT into it (EID-facing for the
 * XDP ETR, RLOC-facing for the XDP ITR). Redirecting into a device that
 * cannot take XDP frames (a veth whose peer has neither an XDP program nor
 * GRO) drops them silently, so any other egress gets the packet through the
 * stack instead (XDP_PASS: the tc programs take it from there).
 * LISP_OUT_PEER: a veth whose peer is in another namespace and would do
 * nothing with the packet that its transmit path does (the veth sends
 * through noqueue with no tc egress filter, the peer runs no XDP program):
 * the tc programs at ingress hand the packet to the peer's ingress
 * (bpf_redirect_peer), skipping the veth's transmit and the backlog queue
 * the peer would take it from, a third of a veth hop's cost.
 * LISP_OUT_PEER_ALL (with LISP_OUT_PEER): the veth's transmit would not
 * touch GSO super-packets or partial checksums either (tx checksumming and
 * the segmentation offloads on: validate_xmit_skb passes them whole), so
 * those are handed over too; without it only packets that need no transmit
 * work are (an RLOC veth with tx checksumming off completes checksums and
 * segments in its transmit, for socket readers beyond it). */
#define LISP_OUT_XDP 1
#define LISP_OUT_PEER 2
#define LISP_OUT_PEER_ALL 4
BPF_TABLE_PINNED("hash", __u32, __u32, out_devs, 256, LISP_PIN(out_devs));
BPF_TABLE_PINNED("array", __u32, struct lisp_config, config, 1, LISP_PIN(config));
BPF_TABLE_PINNED("lru_hash", struct lisp_miss_key, __u64, miss_rl, 8192, LISP_PIN(miss_rl));
BPF_TABLE_PINNED("percpu_array", __u32, __u64, counters, LISP_CNT__MAX, LISP_PIN(counters));
BPF_TABLE_PINNED("percpu_hash", __u32, struct lisp_stats, map_stats, LISP_MAX_MAPPING_IDS, LISP_PIN(map_stats), BPF_F_NO_PREALLOC);
/* Scratch space for buffers too big for the 512-byte BPF stack (ICMP
 * replies, checksum input). Per CPU, used within one program run; not pinned. */
/* What the tc ITR's three programs hand on across their tail calls:
 * lisp_itr_ingress/egress (parse, lookups) -> lisp_itr_route (the
 * map-cache decision, the locator) -> lisp_itr_encap. */
struct lisp_itr_state {
    struct lisp_flow f;
    struct lisp_locator loc;   /* route -> encap, valid when has_loc */
    struct lisp_mapping m;     /* lookups -> route, valid when has_m */
    __u32 iid;
    __u32 hash;                /* route -> encap: lisp_flow_hash */
    __u32 id;                  /* route -> encap: mapping id (stats), LISP_PETR_SET for the Proxy-ETRs */
    __u32 fc_ref;              /* flow-cache slot: set index << 1 | way, or LISP_FC_NOREF */
#define LISP_FC_NOREF 0xffffffff
    __u8 mode;                 /* LISP_MODE_* */
    __u8 has_loc;
    __u8 has_m;
    __u8 fixed;                /* lookups -> encap: loc is the flow-cache slot's (fc_keep_locator) */
};
struct lisp_scratch {
    __u8 buf[512];             /* room beyond the largest use, so masked lengths stay inside */
    __u64 icmp_exceeded_ns;    /* last Time Exceeded sent from this CPU (rate limit) */
    /* The ITRs' last eid_ifaces answer on this CPU (lisp_datapath.c
     * ingress_iid): valid while flow_gen is ifc_gen (writes of eid_ifaces
     * bump it), so a packet from the same interface skips the hash lookup. */
    __u64 ifc_gen;
    __u32 ifc_index;
    __u32 ifc_iid;
    __u64 nonce_state;         /* the ITRs' nonce generator (lisp_datapath.c itr_nonce) */
    struct lisp_itr_state itr;
};
BPF_PERCPU_ARRAY(scratch, struct lisp_scratch, 1);
/* lisp_etr_ingress tail-calls lisp_itr_ingress (slot LISP_TAIL_ITR) to
 * re-encapsulate, with the instance ID in skb->cb[0] | LISP_CB_IID_VALID.
 * lisp_itr_ingress/egress tail-call lisp_itr_route (LISP_TAIL_ROUTE), which
 * tail-calls lisp_itr_encap (LISP_TAIL_ENCAP; a destination whose flow-cache
 * slot keeps its locator goes there directly), with struct lisp_itr_state in
 * scratch: in one program the verifier walks every path of the lookups
 * times every path of the decision times every path of the encapsulation,
 * nearly all of its 1,000,000-instruction budget (over it on 6.1 with any
 * addition). */
#define LISP_TAIL_ITR 0
#define LISP_TAIL_ENCAP 1
#define LISP_TAIL_ROUTE 2
#define LISP_CB_IID_VALID 0x80000000
BPF_PROG_ARRAY(tail_progs, 3);
/* Not pinned here: lispctl.datapath.prebuilt pins it with the programs it
 * belongs to (a recompiled program gets a new one). */
BPF_RINGBUF_OUTPUT(miss_events, 64);  /* 256 KiB: ~170 events that carry a packet */

#endif
