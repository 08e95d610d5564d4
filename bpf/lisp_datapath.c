/* lispctl data plane: tc (clsact) programs, and the XDP ETR (lisp_etr_xdp.c).
 *
 *   lisp_itr_ingress  ingress of an EID-facing interface (router ITR)
 *   lisp_itr_egress   egress of a host's EID device (mobile node, local traffic)
 *   lisp_etr_ingress  ingress of an RLOC-facing interface (ETR, RTR re-encap)
 *   lisp_etr_xdp      XDP of an RLOC-facing NIC (ETR fast path, optional)
 *
 * Why tc by default: bpf_skb_adjust_room with the ENCAP flags keeps GSO/TSO
 * super-packets intact (the kernel segments them as UDP tunnel packets), the
 * same program type serves locally originated traffic, and decapsulated
 * packets for this host go up the stack with a correct skb->protocol. XDP
 * is only the ETR of physical NICs, which deliver one frame at a time anyway.
 *
 * The loader inlines the lisp_*.h includes textually (bcc only rewrites map
 * accesses in the main file).
 */
/* UAPI headers only: the kernel-internal ones (linux/ipv6.h pulls in
 * skbuff.h and most of the network stack) tripled bcc's compile time, which
 * is paid at every start and dominates the 6.1 VM test under emulation. */
#include <uapi/linux/bpf.h>
#include <uapi/linux/pkt_cls.h>
#include <uapi/linux/if_ether.h>
#include <uapi/linux/in.h>
#include <uapi/linux/ip.h>
#include <uapi/linux/ipv6.h>
#include <uapi/linux/udp.h>
#include <uapi/linux/tcp.h>
#include <uapi/linux/icmp.h>
#include <uapi/linux/icmpv6.h>

#include "lisp_maps.h"
#include "lisp_parse.h"
#include "lisp_encap.h"
#include "lisp_compat.h"
#include "lisp_flowcache.h"
#include "lisp_nexthop.h"

/* Packets built by AF_PACKET TX rings (trafgen) and by some drivers carry
 * only the MAC header in the linear part of the skb, which is all that direct
 * packet access sees; such packets are pulled up to what the parsers read.
 * Only as much as needed: pulling a cloned skb (TCP keeps the original)
 * copies its head. */
#define LISP_L4_PULL 20         /* TCP header without options; covers UDP */

/* bcc 0.26 declares this helper with 3 arguments; the kernel takes 4. */
static long (*lisp_redirect_neigh)(__u32 ifindex, void *params, int plen, __u64 flags) =
    (void *)BPF_FUNC_redirect_neigh;
/* kernel >= 5.10; bcc 0.26 does not declare it */
static long (*lisp_redirect_peer)(__u32 ifindex, __u64 flags) = (void *)BPF_FUNC_redirect_peer;

#define LISP_ICMP4_QUOTE 28     /* IPv4 header without options + 8 bytes */
#define LISP_ICMP6_QUOTE 128    /* enough for the IPv6 header and the L4 ports */

static __always_inline void count(__u32 idx)
{
    __u64 *c = counters.lookup(&idx);
    if (c)
        *c += 1;
}

static __always_inline int drop(__u32 reason)
{
    count(LISP_CNT_DROP_BASE + reason);
    return TC_ACT_SHOT;
}

static __always_inline struct lisp_config *get_config(void)
{
    __u32 zero = 0;
    return config.lookup(&zero);
}

static __always_inline int local_eid(const struct lisp_flow *f, __u32 iid)
{
    if (f->family == 4) {
        struct lisp_key4 k = {.prefixlen = 64, .iid = bpf_htonl(iid)};
        __builtin_memcpy(k.addr, f->dst, 4);
        return local_eid4.lookup(&k) != 0;
    }
    struct lisp_key6 k = {.prefixlen = 160, .iid = bpf_htonl(iid)};
    __builtin_memcpy(k.addr, f->dst, 16);
    return local_eid6.lookup(&k) != 0;
}

/* The ETR's two questions about (iid, inner destination), through the
 * per-CPU flow cache: is iid accepted (accepted_iids; returns 0 when not),
 * and is the destination a local EID (*is_local). A slot says local
 * (LISP_ACT_LOCAL) or, holding a mapping, not local (cache_lookup fills a
 * mapping only after local_eid() missed under the same generation), and
 * with iid_ok that iid was accepted under its generation (the daemon bumps
 * flow_gen after every change of accepted_iids, like of local_eid4/6). A
 * local destination is remembered with both answers; a non-local one is
 * not (no mapping), and a hit without iid_ok (filled by the ITR) gets it
 * here. */
static __always_inline int etr_lookup(const struct lisp_flow *f, __u32 iid, int *is_local)
{
    struct lisp_fc_set *set;
    __u64 gen;
    __u32 ref;
    struct lisp_fc_slot *hit = fc_get(f, iid, &set, &gen, &ref);
    *is_local = 0;
    if (hit && hit->iid_ok) {
        *is_local = hit->m.action == LISP_ACT_LOCAL;
        return 1;
    }
    if (!accepted_iids.lookup(&iid))
        return 0;
    if (hit) {
        hit->iid_ok = 1;    /* looked up after the generation the slot carries was read */
        *is_local = hit->m.action == LISP_ACT_LOCAL;
        return 1;
    }
    if (local_eid(f, iid)) {
        struct lisp_fc_slot *slot = fc_fill(set, f, iid, gen, 0, LISP_ACT_LOCAL, &ref);
        if (slot)
            slot->iid_ok = 1;
        *is_local = 1;
    }
    return 1;
}

/* What the ITR's lookups say about (iid, dst), through the per-CPU flow
 * cache (lisp_flowcache.h): 1 when dst is a local EID (the packet stays in
 * the site), else 0 with *m the map-cache entry (0: none) and *slot the
 * cache slot holding it (0: not cached; *ref names it), for route() to keep
 * the locator in. */
static __always_inline int cache_lookup(const struct lisp_flow *f, __u32 iid, struct lisp_mapping **m,
                                        struct lisp_fc_slot **slot, __u32 *ref)
{
    struct lisp_fc_set *set;
    __u64 gen;
    struct lisp_fc_slot *hit = fc_get(f, iid, &set, &gen, ref);
    *slot = hit;
    if (hit) {
        *m = &hit->m;
        return hit->m.action == LISP_ACT_LOCAL;
    }
    if (local_eid(f, iid)) {
        fc_fill(set, f, iid, gen, 0, LISP_ACT_LOCAL, ref);
        return 1;
    }
    struct lisp_mapping *e;
    if (f->family == 4) {
        struct lisp_key4 k = {.prefixlen = 64, .iid = bpf_htonl(iid)};
        __builtin_memcpy(k.addr, f->dst, 4);
        e = map_cache4.lookup(&k);
    } else {
        struct lisp_key6 k = {.prefixlen = 160, .iid = bpf_htonl(iid)};
        __builtin_memcpy(k.addr, f->dst, 16);
        e = map_cache6.lookup(&k);
    }
    *m = e;
    if (e)
        *slot = fc_fill(set, f, iid, gen, e->id, e->action, ref);
    return 0;
}

/* Locator-status bits of the local mapping the packet's source matches
 * (RFC 9300 5.3), or LISP_LSB_NONE when the source is no EID of ours. */
static __always_inline __u64 source_lsb(const struct lisp_flow *f, __u32 iid)
{
    __u32 *v;
    if (f->family == 4) {
        struct lisp_key4 k = {.prefixlen = 64, .iid = bpf_htonl(iid)};
        __builtin_memcpy(k.addr, f->src, 4);
        v = local_eid4.lookup(&k);
    } else {
        struct lisp_key6 k = {.prefixlen = 160, .iid = bpf_htonl(iid)};
        __builtin_memcpy(k.addr, f->src, 16);
        v = local_eid6.lookup(&k);
    }
    return v ? *v : LISP_LSB_NONE;
}

/* source_lsb() through the flow-cache slot of the packet's destination
 * (lisp_flowcache.h; 0: none): the slot remembers the answer for the last
 * source. */
static __always_inline __u64 cached_source_lsb(struct lisp_fc_slot *slot, const struct lisp_flow *f, __u32 iid)
{
    __u64 a[2], b[2];
    __builtin_memcpy(b, f->src, 16);
    if (slot && slot->has_lsb) {
        __builtin_memcpy(a, slot->src, 16);
        if (a[0] == b[0] && a[1] == b[1])
            return slot->lsb;
    }
    __u64 lsb = source_lsb(f, iid);
    if (slot) {
        __builtin_memcpy(slot->src, b, 16);
        slot->lsb = lsb;
        slot->has_lsb = 1;
    }
    return lsb;
}

/* One ring-buffer event per (iid, destination) per miss_interval_ns. With
 * `carry` (the miss drops the packet) the event is followed by the packet
 * from its IP header (LISP_MISS_PKT_MAX at most, else not carried), so the
 * daemon can send it once the destination resolves (roles/holdq.py). */
struct lisp_miss_record {
    struct lisp_miss_event ev;
    __u8 pkt[LISP_MISS_PKT_MAX];
};

static __always_inline void miss_event(struct __sk_buff *skb, const struct lisp_flow *f, __u32 iid,
                                       const struct lisp_config *c, int carry)
{
    struct lisp_miss_key k = {};
    k.iid = iid;
    k.family = f->family;
    __builtin_memcpy(k.addr, f->dst, 16);
    __u64 now = bpf_ktime_get_ns();
    __u64 *last = miss_rl.lookup(&k);
    if (last && now - *last < c->miss_interval_ns)
        return;
    miss_rl.update(&k, &now);
    __u32 len = f->l3len;
    if (carry && !skb->gso_size && len > 0 && len <= LISP_MISS_PKT_MAX && len <= skb->len - ETH_HLEN) {
        struct lisp_miss_record *r = miss_events.ringbuf_reserve(sizeof(struct lisp_miss_record));
        if (!r) {
            count(LISP_CNT_MISS_EVENTS_LOST);
            return;
        }
        __builtin_memset(&r->ev, 0, sizeof(r->ev));
        r->ev.iid = iid;
        r->ev.family = f->family;
        __builtin_memcpy(r->ev.dst, f->dst, 16);
        __builtin_memcpy(r->ev.src, f->src, 16);
        /* The length passed must carry 1..LISP_MISS_PKT_MAX on a register the
         * check itself bounded: 6.1's verifier does not carry a bound learnt
         * from `len - 1 < MAX` back to len, nor across the shift pair clang
         * emits to zero-extend a 32-bit d (so d is 64-bit: a copy made before
         * the check shares its id and gets the bound too). */
        __u64 d = (__u64)len - 1;
        asm volatile("" : "+r"(d));
        if (d < LISP_MISS_PKT_MAX && bpf_skb_load_bytes(skb, ETH_HLEN, r->pkt, d + 1) == 0)
            r->ev.pkt_len = d + 1;
        miss_events.ringbuf_submit(r, 0);
        count(LISP_CNT_MISS_EVENTS);
        return;
    }
    struct lisp_miss_event ev = {};
    ev.iid = iid;
    ev.family = f->family;
    __builtin_memcpy(ev.dst, f->dst, 16);
    __builtin_memcpy(ev.src, f->src, 16);
    if (miss_events.ringbuf_output(&ev, sizeof(ev), 0) == 0)
        count(LISP_CNT_MISS_EVENTS);
    else
        count(LISP_CNT_MISS_EVENTS_LOST);
}

/* Make the first `want` bytes (or the whole packet if shorter) directly
 * readable; the caller reloads data/data_end afterwards. */
static __always_inline int pull_headers(struct __sk_buff *skb, __u32 want)
{
    __u32 len = skb->len < want ? skb->len : want;
    if ((void *)(long)skb->data + len <= (void *)(long)skb->data_end)
        return 0;
    return bpf_skb_pull_data(skb, len);
}

/* FIB lookup (forwarding mode, from the ingress interface) toward dst.
 * Done before the packet is changed, so a packet without a route is dropped
 * untouched, and the new MAC addresses go into the same store as the new
 * headers. Returns the helper's code; only SUCCESS and NO_NEIGH forward.
 * tot_len: l3 length of the packet as it will leave. For a GSO super-packet
 * (up to 64 KB) it is 0, so the helper checks the skb against the egress
 * device the GSO-aware way instead of failing its MTU check (FRAG_NEEDED);
 * its segment size was checked against path_mtu already. */
static __always_inline void fib_params(struct bpf_fib_lookup *p, __u32 ifindex, int v6,
                                       const __u8 *src, const __u8 *dst, __u32 tot_len)
{
    __builtin_memset(p, 0, sizeof(*p));
    p->ifindex = ifindex;
    p->tot_len = tot_len;
    if (v6) {
        p->family = AF_INET6;
        __builtin_memcpy(p->ipv6_src, src, 16);
        __builtin_memcpy(p->ipv6_dst, dst, 16);
    } else {
        p->family = AF_INET;
        __builtin_memcpy(&p->ipv4_src, src, 4);
        __builtin_memcpy(&p->ipv4_dst, dst, 4);
    }
}

/* Through the next-hop cache (lisp_nexthop.h); a GSO super-packet asks the
 * FIB itself (tot_len 0). On SUCCESS p->mtu_result is set unless GSO, and
 * *out as nh_fib_lookup leaves it (for fib_send). */
static __always_inline long fib_resolve(struct __sk_buff *skb, struct bpf_fib_lookup *p, int v6,
                                        const __u8 *src, const __u8 *dst, __u32 tot_len, __u32 *out)
{
    fib_params(p, skb->ifindex, v6, src, dst, skb->gso_size ? 0 : tot_len);
    return nh_fib_lookup(skb, p, 0, out);
}

static __always_inline int fib_ok(long rc)
{
    return rc == BPF_FIB_LKUP_RET_SUCCESS || rc == BPF_FIB_LKUP_RET_NO_NEIGH;
}

/* The FIB's MAC addresses into an Ethernet header, in 16-bit words.
 * struct ethhdr is packed (alignment 1), so a memcpy into it is 12 byte
 * loads, shifts and stores; frames start at an even address (and x86-64 and
 * arm64, where the verifier does not require aligned packet access, would
 * take any), and p->dmac / p->smac are at even offsets of the lookup. */
static __always_inline void fib_eth_macs(struct ethhdr *eth, const struct bpf_fib_lookup *p)
{
    __u16 *d = (void *)eth;
    const __u16 *dm = (const void *)p->dmac, *sm = (const void *)p->smac;
    d[0] = dm[0];
    d[1] = dm[1];
    d[2] = dm[2];
    d[3] = sm[0];
    d[4] = sm[1];
    d[5] = sm[2];
}

/* The Ethernet header of the forwarded packet: the FIB's MACs, or (NO_NEIGH:
 * bpf_redirect_neigh fills them in) the packet's own. */
static __always_inline void fib_eth(struct ethhdr *eth, long rc, const struct bpf_fib_lookup *p,
                                    const __u8 *old_macs, __be16 proto)
{
    if (rc == BPF_FIB_LKUP_RET_SUCCESS) {
        fib_eth_macs(eth, p);
    } else {
        __builtin_memcpy(eth->h_dest, old_macs, 2 * ETH_ALEN);
    }
    eth->h_proto = proto;
}

/* Whether a packet may skip the transmit path of a device with out_devs
 * bits out (validate_xmit_skb): any packet where the device would leave it
 * as it is (LISP_OUT_PEER_ALL), else only one that is not GSO and has no
 * checksum left for an offload to finish (complete: whether it has). */
static __always_inline int needs_no_xmit(const struct __sk_buff *skb, __u32 out, int complete)
{
    return (out & LISP_OUT_PEER_ALL) || (!skb->gso_size && complete);
}

/* Out of ifindex, whose out_devs bits are out. handoff: the packet needs
 * nothing of a transmit path (needs_no_xmit) and the program runs at tc
 * ingress (the kernel drops a peer redirect from egress). Such a packet goes
 * to a LISP_OUT_PEER veth's peer directly. */
static __always_inline int redirect_out(__u32 ifindex, __u32 out, int handoff)
{
    if (handoff && (out & LISP_OUT_PEER))
        return lisp_redirect_peer(ifindex, 0);
    return bpf_redirect(ifindex, 0);
}

static __always_inline int fib_send(long rc, const struct bpf_fib_lookup *p, __u32 out, int handoff)
{
    if (rc == BPF_FIB_LKUP_RET_SUCCESS)
        return redirect_out(p->ifindex, out, handoff);
    return lisp_redirect_neigh(p->ifindex, 0, 0, 0);
}

struct lisp_icmp4_reply {
    struct iphdr ip;
    struct icmphdr icmp;
    __u8 quote[LISP_ICMP4_QUOTE];
} __attribute__((packed));

struct lisp_icmp6_reply {
    struct ipv6hdr ip6;
    struct icmp6hdr icmp6;
    __u8 quote[LISP_ICMP6_QUOTE];
} __attribute__((packed));

static __always_inline struct lisp_scratch *get_scratch(void)
{
    __u32 zero = 0;
    return scratch.lookup(&zero);
}

/* Turn the packet into an ICMP error addressed to its source and send it
 * back where it came from: "fragmentation needed" / "packet too big" (mtu),
 * or with `exceeded` "time exceeded in transit" (RFC 792 / RFC 4443). The
 * source of the ICMP is the original destination: it is never a local
 * address of the receiving host (which would make it a martian) and routes
 * back the same way. The quote is the packet's first 28 (IPv4) / 128 (IPv6)
 * bytes, or all of a shorter one. */
#define LISP_ICMP_MIN_INTERVAL_NS 10000000ULL   /* Time Exceeded: at most 100/s per CPU */

static __always_inline int send_icmp(struct __sk_buff *skb, const struct lisp_flow *f, __u32 mtu,
                                     int exceeded, int egress)
{
    __u8 mac[2 * ETH_ALEN];
    if (bpf_skb_load_bytes(skb, 0, mac, sizeof(mac)))
        return TC_ACT_SHOT;
    struct lisp_scratch *sc = get_scratch();
    if (!sc)
        return TC_ACT_SHOT;
    if (exceeded) {
        __u64 now = bpf_ktime_get_ns();
        if (now - sc->icmp_exceeded_ns < LISP_ICMP_MIN_INTERVAL_NS)
            return TC_ACT_SHOT;
        sc->icmp_exceeded_ns = now;
    }
    __u32 avail = skb->len - ETH_HLEN;
    if (f->family == 4) {
        struct lisp_icmp4_reply *r = (void *)sc->buf;
        __builtin_memset(r, 0, sizeof(*r));
        __u32 q = avail < LISP_ICMP4_QUOTE ? avail : LISP_ICMP4_QUOTE;
        asm volatile("" : "+r"(q));     /* hide q's range from clang, or it drops the mask */
        q &= 0x1f;          /* no-op (q <= 28); bounds the helper's length for the verifier */
        if (q < 20 || !f->ihl_ok || bpf_skb_load_bytes(skb, ETH_HLEN, r->quote, lisp_len_from(q, 20, 0x0f)))
            return TC_ACT_SHOT;
        if (exceeded) {
            r->icmp.type = ICMP_TIME_EXCEEDED;
            r->icmp.code = ICMP_EXC_TTL;
        } else {
            r->icmp.type = ICMP_DEST_UNREACH;
            r->icmp.code = ICMP_FRAG_NEEDED;
            r->icmp.un.frag.mtu = bpf_htons(mtu);
        }
        /* the zeroed bytes after the quote add nothing to the sum */
        r->icmp.checksum = lisp_csum_fold(lisp_csum_add(0, &r->icmp, (sizeof(r->icmp) + sizeof(r->quote)) / 2));
        __u32 len = sizeof(r->ip) + sizeof(r->icmp) + q;
        r->ip.version = 4;
        r->ip.ihl = 5;
        r->ip.tos = 0xc0;
        r->ip.tot_len = bpf_htons(len);
        r->ip.ttl = 64;
        r->ip.protocol = IPPROTO_ICMP;
        __builtin_memcpy(&r->ip.saddr, f->dst, 4);
        __builtin_memcpy(&r->ip.daddr, f->src, 4);
        r->ip.check = lisp_csum_fold(lisp_csum_add(0, &r->ip, 10));
        if (bpf_skb_change_tail(skb, ETH_HLEN + len, 0))
            return TC_ACT_SHOT;
        asm volatile("" : "+r"(len));
        len &= 0xff;        /* no-op (len <= sizeof(*r)); bounds it for the verifier */
        if (len < sizeof(struct iphdr) || bpf_skb_store_bytes(skb, ETH_HLEN, r, lisp_len_from(len, 20, 0x3f), 0))
            return TC_ACT_SHOT;
    } else {
        struct lisp_icmp6_reply *r = (void *)sc->buf;
        __builtin_memset(r, 0, sizeof(*r));
        __u32 q = avail < LISP_ICMP6_QUOTE ? avail : LISP_ICMP6_QUOTE;
        asm volatile("" : "+r"(q));
        q &= 0xff;          /* no-op (q <= 128); bounds the length (scratch has room) */
        if (q < 40 || bpf_skb_load_bytes(skb, ETH_HLEN, r->quote, lisp_len_from(q, 40, 0x7f)))
            return TC_ACT_SHOT;
        if (exceeded) {
            r->icmp6.icmp6_type = ICMPV6_TIME_EXCEED;
            r->icmp6.icmp6_code = ICMPV6_EXC_HOPLIMIT;
        } else {
            if (mtu < 1280)
                mtu = 1280;
            r->icmp6.icmp6_type = ICMPV6_PKT_TOOBIG;
            r->icmp6.icmp6_mtu = bpf_htonl(mtu);
        }
        __u32 plen = sizeof(r->icmp6) + q;
        r->ip6.version = 6;
        r->ip6.payload_len = bpf_htons(plen);
        r->ip6.nexthdr = IPPROTO_ICMPV6;
        r->ip6.hop_limit = 255;
        __builtin_memcpy(&r->ip6.saddr, f->dst, 16);
        __builtin_memcpy(&r->ip6.daddr, f->src, 16);
        __u32 sum = lisp_csum_add(0, &r->ip6.saddr, 16);
        sum += bpf_htons(plen) + bpf_htons(IPPROTO_ICMPV6);
        sum = lisp_csum_add(sum, &r->icmp6, (sizeof(r->icmp6) + sizeof(r->quote)) / 2);
        r->icmp6.icmp6_cksum = lisp_csum_fold(sum);
        __u32 len = sizeof(r->ip6) + plen;
        if (bpf_skb_change_tail(skb, ETH_HLEN + len, 0))
            return TC_ACT_SHOT;
        asm volatile("" : "+r"(len));
        len &= 0xff;        /* no-op (len <= sizeof(*r)); bounds it for the verifier */
        if (len < sizeof(struct ipv6hdr) || bpf_skb_store_bytes(skb, ETH_HLEN, r, lisp_len_from(len, 40, 0xff), 0))
            return TC_ACT_SHOT;
    }
    /* swap the MAC addresses: the reply goes back to the sender's hop */
    if (bpf_skb_store_bytes(skb, 0, mac + ETH_ALEN, ETH_ALEN, 0) ||
        bpf_skb_store_bytes(skb, ETH_ALEN, mac, ETH_ALEN, 0))
        return TC_ACT_SHOT;
    if (exceeded) {
        count(LISP_CNT_ICMP_TIME_EXCEEDED);
    } else {
        count(LISP_CNT_ICMP_TOO_BIG);
        count(LISP_CNT_DROP_BASE + LISP_DROP_TOO_BIG);
    }
    return bpf_redirect(skb->ifindex, egress ? BPF_F_INGRESS : 0);
}

static __always_inline int send_too_big(struct __sk_buff *skb, const struct lisp_flow *f, __u32 mtu, int egress)
{
    return send_icmp(skb, f, mtu, 0, egress);
}

/* A routed packet whose TTL / hop limit would reach 0 here: dropped
 * (counted ttl_expired), and answered with Time Exceeded (rate limited).
 * Not left to the stack: without a route to the EID (xTRs have none) it
 * would answer "net unreachable" instead. */
static __always_inline int send_time_exceeded(struct __sk_buff *skb, const struct lisp_flow *f, int egress)
{
    count(LISP_CNT_DROP_BASE + LISP_DROP_TTL_EXPIRED);
    return send_icmp(skb, f, 0, 1, egress);
}

/* RFC 9300 7.1, stateless MTU handling: an IPv4 packet without DF that does
 * not fit the path once encapsulated is sent as inner fragments, each
 * encapsulated on its own (the destination host reassembles). A program
 * cannot make two packets out of one, so the packet peels itself: a clone of
 * the whole packet goes back into this program (same hook, bpf_clone_redirect)
 * marked in tc_index with the size of the first fragment, and this packet is
 * cut down to that first fragment and encapsulated; the clone, when it comes
 * back, drops those bytes (lisp_peel) and is handled like any packet, so a
 * rest that still does not fit is split again. tc_index: nothing else uses
 * it on kernels with the tcindex classifier and dsmark qdisc gone (6.3+). */
#define LISP_TC_PEEL 0x8000     /* tc_index: peel (low 15 bits) * 8 payload bytes */

/* Whether the L4 checksum of a whole IPv4 datagram is still the partial
 * (pseudo-header) sum of CHECKSUM_PARTIAL, which only the offload can
 * complete, over the whole datagram: such a packet cannot be fragmented here
 * (a false positive, 1 in 65536, only costs a frag-needed). */
static __always_inline int l4_csum_partial(struct __sk_buff *skb, const struct lisp_flow *f)
{
    __u32 off;
    if (f->proto == IPPROTO_TCP)
        off = 16;
    else if (f->proto == IPPROTO_UDP)
        off = 6;
    else
        return 0;
    __u16 field;
    if (bpf_skb_load_bytes(skb, ETH_HLEN + 20 + off, &field, 2))
        return 1;
    __u32 ps = lisp_csum_add(0, f->src, 2);
    ps = lisp_csum_add(ps, f->dst, 2);
    ps += bpf_htons(f->proto) + bpf_htons(f->l3len - 20);
    return field == (__u16)~lisp_csum_fold(ps);
}

/* Cut the packet to its first fragment of `chunk` payload bytes after
 * sending a clone of the whole packet back to peel the rest. */
static __always_inline int split_first(struct __sk_buff *skb, struct lisp_flow *f, __u32 chunk, int egress)
{
    skb->tc_index = LISP_TC_PEEL | (chunk >> 3);
    long rc = bpf_clone_redirect(skb, skb->ifindex, egress ? 0 : BPF_F_INGRESS);
    skb->tc_index = 0;
    if (rc)
        return -1;
    __be16 w[2];                /* tot_len, id */
    __be16 fo;
    if (bpf_skb_load_bytes(skb, ETH_HLEN + 2, w, 4) || bpf_skb_load_bytes(skb, ETH_HLEN + 6, &fo, 2))
        return -1;
    __be16 tot = bpf_htons(20 + chunk);
    __be16 nfo = fo | bpf_htons(LISP_IP_MF);
    __u32 ck = ETH_HLEN + offsetof(struct iphdr, check);
    if (bpf_l3_csum_replace(skb, ck, w[0], tot, 2) || bpf_l3_csum_replace(skb, ck, fo, nfo, 2) ||
        bpf_skb_store_bytes(skb, ETH_HLEN + 2, &tot, 2, 0) || bpf_skb_store_bytes(skb, ETH_HLEN + 6, &nfo, 2, 0) ||
        bpf_skb_change_tail(skb, ETH_HLEN + 20 + chunk, 0))
        return -1;
    f->l3len = 20 + chunk;
    f->frag = 1;
    count(LISP_CNT_FRAGMENTED);
    return 0;
}

/* The clone of split_first: drop the `chunk` payload bytes its first
 * fragment carried; what remains is the next fragment (offset moved on, MF
 * as the original had it). */
static __always_inline int lisp_peel(struct __sk_buff *skb, __u32 chunk)
{
    __be16 tot, fo;
    if (bpf_skb_load_bytes(skb, ETH_HLEN + 2, &tot, 2) || bpf_skb_load_bytes(skb, ETH_HLEN + 6, &fo, 2))
        return -1;
    __u32 len = bpf_ntohs(tot);
    if (len <= 20 + chunk)
        return -1;
    __be16 ntot = bpf_htons(len - chunk);
    __u16 h = bpf_ntohs(fo);
    __be16 nfo = bpf_htons((h & ~LISP_IP_OFFSET) | (((h & LISP_IP_OFFSET) + (chunk >> 3)) & LISP_IP_OFFSET));
    if (bpf_skb_adjust_room(skb, -(__s32)chunk, BPF_ADJ_ROOM_NET, 0))
        return -1;
    __u32 ck = ETH_HLEN + offsetof(struct iphdr, check);
    if (bpf_l3_csum_replace(skb, ck, tot, ntot, 2) || bpf_l3_csum_replace(skb, ck, fo, nfo, 2) ||
        bpf_skb_store_bytes(skb, ETH_HLEN + 2, &ntot, 2, 0) || bpf_skb_store_bytes(skb, ETH_HLEN + 6, &nfo, 2, 0))
        return -1;
    return 0;
}

/* bpf_skb_adjust_room's flags for the ITR's room toward a locator of
 * family v6 ? 6 : 4: the inner offsets and tunnel type recorded (see
 * itr_can_push). */
static __always_inline __u64 itr_room_flags(int v6)
{
    return BPF_F_ADJ_ROOM_ENCAP_L4_UDP | BPF_F_ADJ_ROOM_ENCAP_L2(sizeof(struct lisp_hdr)) |
           (v6 ? BPF_F_ADJ_ROOM_ENCAP_L3_IPV6 : BPF_F_ADJ_ROOM_ENCAP_L3_IPV4);
}

/* Encapsulate toward one locator of ls and forward. */
#define LISP_MODE_EGRESS 1      /* lisp_itr_egress: locally originated */
#define LISP_MODE_REENCAP 2     /* tail-called by the ETR: the packet came in on an RLOC interface */

/* Re-encapsulation (RTR): the kernel refuses to grow an skb that is still
 * marked encapsulated (-EALREADY), and decapsulation clears that mark only
 * on kernels newer than 6.18 (LISP_ADJ_DECAP_L4_UDP). The inner headers
 * have not moved since the first encapsulation (decapsulation removed the
 * same room at the same offset), so the room is added without the ENCAP
 * flags, which would only record those offsets again. */
static __always_inline long reencap_grow(struct __sk_buff *skb, __u32 olen, __u64 flags, int mode)
{
    if (!(mode & LISP_MODE_REENCAP))
        return -1;
    count(LISP_CNT_REENCAP_MARKED);
    return bpf_skb_adjust_room(skb, olen, BPF_ADJ_ROOM_MAC, flags & BPF_F_ADJ_ROOM_FIXED_GSO);
}

/* Packets and inner bytes encapsulated with mapping id. */
static __always_inline void mapping_stats(__u32 id, __u32 bytes)
{
    struct lisp_stats *st = map_stats.lookup(&id);
    if (st) {
        st->packets += 1;
        st->bytes += bytes;
    }
}

/* The same through the destination's flow-cache slot (0: none), which
 * holds mapping id's counts until it is refilled (lisp_flowcache.h). */
static __always_inline void slot_stats(struct lisp_fc_slot *slot, __u32 id, __u32 bytes)
{
    if (slot) {
        slot->packets += 1;
        slot->bytes += bytes;
    } else {
        mapping_stats(id, bytes);
    }
}

/* Instance ID of packets entering on ifindex (0: not registered). */
static __always_inline __u32 eid_iface_iid(__u32 ifindex)
{
    struct lisp_eid_if *ei = eid_ifaces.lookup(&ifindex);
    return ei ? ei->iid & 0xffffff : 0;
}

/* eid_iface_iid through this CPU's last answer (struct lisp_scratch: its
 * generation is read before the lookup it caches, as the flow cache does).
 * Both ITRs touch that scratch line anyway (the hand-over, the nonce), and
 * it saves a hash lookup per packet (XDP ITR, warm: 197 -> 180 ns). */
static __always_inline __u32 ingress_iid(struct lisp_scratch *sc, __u32 ifindex)
{
    __u32 zero = 0;
    __u64 *g = flow_gen.lookup(&zero);
    __u64 gen = g ? *(volatile __u64 *)g : 0;
    if (!gen)
        return eid_iface_iid(ifindex);
    if (sc->ifc_gen == gen && sc->ifc_index == ifindex)
        return sc->ifc_iid;
    __u32 iid = eid_iface_iid(ifindex);
    sc->ifc_gen = gen;
    sc->ifc_index = ifindex;
    sc->ifc_iid = iid;
    return iid;
}

/* A data packet's nonce (RFC 9300 5.3: random; the N bit is always set):
 * xorshift64 per CPU, seeded from bpf_get_prandom_u32 on the CPU's first
 * packet. A helper call per packet cost ~20 ns of a ~300 ns encapsulation;
 * the kernel's generator behind it is no stronger (a linear generator too,
 * its state recoverable from its outputs): a data nonce is no secret from
 * whoever sees the packets. */
static __always_inline __u32 itr_nonce(struct lisp_scratch *sc)
{
    __u64 x = sc->nonce_state;
    if (!x)
        x = ((__u64)bpf_get_prandom_u32() << 32) | bpf_get_prandom_u32() | 1;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    sc->nonce_state = x;
    return (__u32)(x >> 40);
}

/* itr_nonce for the XDP ITR, which has no scratch line of its own: one
 * lookup of it (~3 ns) against the helper call (~20 ns). */
static __always_inline __u32 xdp_nonce(void)
{
    struct lisp_scratch *sc = get_scratch();
    return sc ? itr_nonce(sc) : bpf_get_prandom_u32() & 0xffffff;
}

/* The locator of ls for flow hash `hash`, or 0 when none is usable. */
static __always_inline const struct lisp_locator *itr_locator(const struct lisp_locset *ls, __u32 hash)
{
    int i = lisp_pick(ls, hash);
    if (i < 0 || i >= LISP_MAX_LOCATORS)
        return 0;
    return &ls->loc[i];
}

/* The outer headers for a packet to locator loc, shared by the tc and the
 * XDP ITR: o (struct lisp_outer4 or lisp_outer6, as loc's family) and in,
 * the inner IP header (lisp_inner_copy bytes, writable), both in the packet
 * (tc) or in a lisp_encap_hdr (XDP). RFC 9300 5.3: TTL and TOS copied, the
 * source site's locator-status bits (through the flow-cache slot `slot` of
 * the destination, 0: none), a random nonce; with `hop` (a routing ITR; the
 * caller answered TTL 1 already) the inner TTL goes down by one and the
 * outer TTL is copied from that. gso: a GSO super-packet (no outer IPv6
 * UDP checksum). family: f->family (a constant in the tc ITR, see itr_write).
 * nonce: 24 random bits (itr_nonce). */
static __always_inline void itr_outer(void *o, __u8 *in, struct lisp_flow *f, int family,
                                      const struct lisp_locator *loc, const struct lisp_config *c,
                                      __u32 inner_len, __u32 hash, __u32 iid, struct lisp_fc_slot *slot,
                                      int hop, int gso, __u32 nonce)
{
    __u64 lsb = cached_source_lsb(slot, f, iid);
    /* A locator with an explicit port is a NAT traversal path (docs/nat.md):
     * an RTR toward a NATed xTR's translated port, or a NATed xTR toward its
     * RTR (port 4341). Those packets leave from source port 4341, not a
     * hashed one, so a NAT keeps one binding for all flows and the RTR's
     * packets match it in reverse. */
    __u16 dport = loc->port ? loc->port : LISP_DATA_PORT;
    if (hop) {
        f->ttl -= 1;
        lisp_hop(in, family);
    }
    if (loc->family == 6) {
        struct lisp_outer6 *o6 = o;
        lisp_build6(o6, f, c->src6, loc->addr, inner_len, hash, iid, lsb, nonce, dport);
        if (loc->port)
            o6->udp.source = bpf_htons(LISP_DATA_PORT);
        o6->udp.check = lisp_outer6_csum(in, f, family, o6, inner_len, gso);
        return;
    }
    struct lisp_outer4 *o4 = o;
    lisp_build4(o4, f, c->src4, loc->addr, inner_len, hash, iid, lsb, nonce, dport);
    if (loc->port)
        o4->udp.source = bpf_htons(LISP_DATA_PORT);
}

/* The inner IP header at data + ETH_HLEN copied to in (lisp_inner_copy
 * bytes); 0 when it is not readable. */
static __always_inline int itr_inner(__u8 *in, void *data, void *data_end, const struct lisp_flow *f)
{
    __u8 *ih = data + ETH_HLEN;
    if (f->family == 4) {
        if ((void *)(ih + sizeof(struct iphdr)) > data_end)
            return 0;
        __builtin_memcpy(in, ih, sizeof(struct iphdr));
    } else {
        if ((void *)(ih + sizeof(struct ipv6hdr)) > data_end)
            return 0;
        __builtin_memcpy(in, ih, sizeof(struct ipv6hdr));
    }
    return 1;
}

/* Everything but the Ethernet header of lisp_encap_hdr (the XDP ITR's,
 * which builds it before it changes the packet): the inner IP header
 * (itr_inner) and the outer headers (itr_outer). Returns the bytes to write
 * from &h->eth, or 0 when the inner header is not readable. */
static __always_inline __u32 itr_headers(struct lisp_encap_hdr *h, void *data, void *data_end,
                                         struct lisp_flow *f, const struct lisp_locator *loc,
                                         const struct lisp_config *c, __u32 inner_len, __u32 hash,
                                         __u32 iid, struct lisp_fc_slot *slot, int hop, int gso)
{
    if (loc->family == 6) {
        if (!itr_inner(h->v6.in, data, data_end, f))
            return 0;
        itr_outer(&h->v6.o, h->v6.in, f, f->family, loc, c, inner_len, hash, iid, slot, hop, gso,
                  xdp_nonce());
        return sizeof(struct ethhdr) + LISP_OVERHEAD6 + lisp_inner_copy(f->family);
    }
    if (!itr_inner(h->v4.in, data, data_end, f))
        return 0;
    itr_outer(&h->v4.o, h->v4.in, f, f->family, loc, c, inner_len, hash, iid, slot, hop, gso, xdp_nonce());
    return sizeof(struct ethhdr) + LISP_OVERHEAD4 + lisp_inner_copy(f->family);
}

/* The tc ITR's headers, written in place after bpf_skb_adjust_room: it left
 * the head writable, with the new headers and the inner IP header in the
 * linear part (direct writes: no scratch copy and no bpf_skb_store_bytes, a
 * helper call that makes the head writable again; a program that writes
 * packet data directly unclones a cloned skb as it starts, e.g. under a
 * packet capture, which adjust_room does to these packets anyway). Constant
 * offsets per outer and inner family, which the 6.1 verifier checks against
 * data_end. Returns -1 when the packet is shorter. */
static __always_inline int itr_write(struct __sk_buff *skb, struct lisp_flow *f,
                                     const struct lisp_locator *loc, const struct lisp_config *c,
                                     __u32 inner_len, __u32 hash, __u32 iid, struct lisp_fc_slot *slot,
                                     int hop, long frc, const struct bpf_fib_lookup *p, const __u8 *macs,
                                     __u32 nonce)
{
    void *data = (void *)(long)skb->data;
    void *data_end = (void *)(long)skb->data_end;
    struct ethhdr *eth = data;
    int v6 = loc->family == 6;
    __u8 *in = data + ETH_HLEN + (v6 ? LISP_OVERHEAD6 : LISP_OVERHEAD4);
    __u16 gso = skb->gso_size;
    if (f->family == 4) {
        if ((void *)(in + sizeof(struct iphdr)) > data_end)
            return -1;
        itr_outer(eth + 1, in, f, 4, loc, c, inner_len, hash, iid, slot, hop, gso, nonce);
    } else {
        if ((void *)(in + sizeof(struct ipv6hdr)) > data_end)
            return -1;
        itr_outer(eth + 1, in, f, 6, loc, c, inner_len, hash, iid, slot, hop, gso, nonce);
    }
    fib_eth(eth, frc, p, macs, v6 ? bpf_htons(ETH_P_IPV6) : bpf_htons(ETH_P_IP));
    return 0;
}

/* The ITRs' FIB answer toward a locator (tc and XDP; in: the ingress
 * device; gso: a GSO super-packet, which asks the FIB itself), through the
 * next hop kept in the destination's flow-cache slot when the locator is
 * the slot's own (struct lisp_fc_slot nh_*: a hit never hashes the next-hop
 * key), else through the next-hop cache (nh_fib_lookup; want_out and *out
 * as there). The generation is read before the lookup whose answer is
 * stored with it, as nh_fib_lookup does. */
static __always_inline long itr_next_hop(void *ctx, struct bpf_fib_lookup *p, __u32 in, int v6, const __u8 *src,
                                         const __u8 *dst, __u32 tot_len, int gso, struct lisp_fc_slot *slot,
                                         int want_out, __u32 *out)
{
    __u32 zero = 0;
    __u64 *g = nh_gen.lookup(&zero);
    __u32 gen = g ? (__u32)*(volatile __u64 *)g : 0;
    __u32 now = 0;
    if (!gen || gso)
        slot = 0;
    if (slot) {
        now = bpf_jiffies64();
        if (slot->nh_gen == gen && now - slot->nh_filled < LISP_NH_MAX_AGE && slot->nh_in == in &&
            tot_len <= slot->nh_mtu) {
            p->ifindex = slot->nh_out;
            __builtin_memcpy(p->smac, slot->nh_smac, ETH_ALEN);
            __builtin_memcpy(p->dmac, slot->nh_dmac, ETH_ALEN);
            *out = slot->nh_outf;
            return BPF_FIB_LKUP_RET_SUCCESS;
        }
    }
    fib_params(p, in, v6, src, dst, gso ? 0 : tot_len);
    long rc = nh_fib_lookup(ctx, p, want_out, out);
    if (!slot || rc != BPF_FIB_LKUP_RET_SUCCESS || p->mtu_result < tot_len)
        return rc;
    slot->nh_gen = 0;           /* never a half-written next hop that looks valid */
    slot->nh_filled = now;
    slot->nh_in = in;
    slot->nh_out = p->ifindex;
    slot->nh_mtu = p->mtu_result;
    slot->nh_outf = *out;
    __builtin_memcpy(slot->nh_smac, p->smac, ETH_ALEN);
    __builtin_memcpy(slot->nh_dmac, p->dmac, ETH_ALEN);
    slot->nh_gen = gen;
    return rc;
}

/* The room for the outer headers. bpf_skb_adjust_room with the ENCAP flags
 * records the inner headers' offsets and the tunnel type, which a GSO
 * packet's segmentation, a checksum left to the offload and a change of
 * family (skb->protocol) need; it is also ~2.5x the cost of
 * bpf_skb_change_head (three kernel calls more, each expensive under
 * return-stack mitigations). A packet that needs none of that (same family,
 * not GSO, not re-encapsulated, its checksum complete: e.g. anything a NIC
 * received) can have its room pushed in front instead, where the new
 * Ethernet header and the outer headers are written over the old Ethernet
 * header: the same bytes, and the kernel's header offsets keep naming the
 * inner packet, which nothing after a redirect reads (the veth or device
 * transmit and the receiver's stack start over; bpf_redirect_neigh resets
 * them). A hand-over to a veth peer (redirect_out) is the exception: the
 * peer's stack reads the network header where it is, so those packets
 * take adjust_room. */
static __always_inline int itr_can_push(struct __sk_buff *skb, const struct lisp_flow *f,
                                        const struct lisp_locator *loc, int mode)
{
    return !skb->gso_size && loc->family == f->family && !(mode & LISP_MODE_REENCAP) && lisp_l4_csum_complete(f);
}

/* loc: the locator route() chose for flow hash `hash` (0: none usable);
 * slot: the flow-cache slot of the destination (0: none); fixed: loc is the
 * slot's own (its next hop is kept there too, itr_next_hop). */
static __always_inline int encap(struct __sk_buff *skb, struct lisp_flow *f, __u32 iid,
                                 const struct lisp_locator *loc, __u32 hash, __u32 id,
                                 const struct lisp_config *c, int mode, struct lisp_fc_slot *slot,
                                 int fixed, struct lisp_scratch *sc)
{
    int egress = mode & LISP_MODE_EGRESS;
    /* a router hop: TTL 1 expires here */
    if (!egress && f->ttl <= 1)
        return send_time_exceeded(skb, f, egress);
    if (!loc)
        return drop(LISP_DROP_NO_LOCATOR);
    int v6 = loc->family == 6;
    if (v6 ? !c->has_src6 : !c->has_src4)
        return drop(LISP_DROP_NO_SOURCE);
    __u32 olen = v6 ? LISP_OVERHEAD6 : LISP_OVERHEAD4;
    /* The inner packet's own length, not the frame's: a short frame's
     * Ethernet padding must not travel inside (the ETR would see a UDP
     * payload longer than the inner packet). A GSO packet has no padding
     * and its headers may not give its length (IPv6 BIG TCP). */
    __u32 inner_len = skb->len - ETH_HLEN;
    if (!skb->gso_size) {
        /* longer than the frame, or shorter than its own IP header */
        if (f->l3len > inner_len || f->l3len < lisp_inner_copy(f->family))
            return drop(LISP_DROP_MALFORMED);
        if (f->l3len < inner_len) {
            if (bpf_skb_change_tail(skb, ETH_HLEN + f->l3len, 0))
                return drop(LISP_DROP_ENCAP_FAILED);
            inner_len = f->l3len;
        }
    }

    __u64 flags = itr_room_flags(v6);
    /* A GSO super-packet is judged by its segments (headers + gso_size), the
     * way a non-GSO packet is judged by its length. When an encapsulated
     * segment fits the path, gso_size stays (FIXED_GSO: as many segments
     * as without LISP); a TCP segment that fits only without the overhead
     * gets gso_size lowered by it instead (the kernel does that without
     * FIXED_GSO), so the outer segments keep the inner segments' size. */
    if (skb->gso_size) {
        __u32 seg = f->hdrlen + skb->gso_size;
        if (!c->path_mtu || seg + olen <= c->path_mtu)
            flags |= BPF_F_ADJ_ROOM_FIXED_GSO;
        else if (f->proto != IPPROTO_TCP || seg > c->path_mtu)
            return send_too_big(skb, f, c->path_mtu > olen ? c->path_mtu - olen : 0, egress);
        /* outer lengths are 16 bits; real GSO packets stay below 64 KB */
        if (inner_len + olen > 0xffff)
            return drop(LISP_DROP_ENCAP_FAILED);
    } else if (c->path_mtu && inner_len + olen > c->path_mtu) {
        __u32 room = c->path_mtu > olen ? c->path_mtu - olen : 0;
        __u32 chunk = room > 20 ? (room - 20) & ~7 : 0;
        /* DF set, IPv6, options, a checksum only the offload can finish: ICMP.
         * Re-encapsulated packets too: a clone sent back to the RLOC
         * interface would meet the ETR there, not this program. */
        if (f->family != 4 || f->df || !f->ihl_ok || chunk < 8 || (mode & LISP_MODE_REENCAP) ||
            (!f->frag && l4_csum_partial(skb, f)))
            return send_too_big(skb, f, room, egress);
        if (split_first(skb, f, chunk, egress))
            return drop(LISP_DROP_ENCAP_FAILED);
        inner_len = f->l3len;
    }

    struct bpf_fib_lookup p;
    __u32 out;
    long frc = itr_next_hop(skb, &p, skb->ifindex, v6, v6 ? c->src6 : c->src4, loc->addr, inner_len + olen,
                            skb->gso_size, fixed ? slot : 0, 0, &out);
    if (!fib_ok(frc))
        return drop(LISP_DROP_NO_ROUTE);
    __u8 macs[2 * ETH_ALEN];
    if (frc != BPF_FIB_LKUP_RET_SUCCESS && bpf_skb_load_bytes(skb, 0, macs, sizeof(macs)))
        return drop(LISP_DROP_ENCAP_FAILED);
    /* Not re-encapsulated packets (RTR): their skb still carries the first
     * tunnel's state (reencap_grow), which the transmit path settles and a
     * peer's stack would not (NAT66 through an RTR lost them). */
    int handoff = !egress && !(mode & LISP_MODE_REENCAP) && (out & LISP_OUT_PEER) &&
                  needs_no_xmit(skb, out, lisp_l4_csum_complete(f));
    long grow;
    if (itr_can_push(skb, f, loc, mode) && !handoff)
        grow = bpf_skb_change_head(skb, olen, 0);
    else
        grow = bpf_skb_adjust_room(skb, olen, BPF_ADJ_ROOM_MAC, flags) && reencap_grow(skb, olen, flags, mode);
    /* a router hop: one less (TTL 1 was answered above) */
    if (grow || itr_write(skb, f, loc, c, inner_len, hash, iid, slot, !egress, frc, &p, macs, itr_nonce(sc)))
        return drop(LISP_DROP_ENCAP_FAILED);

    count(LISP_CNT_ENCAPSULATED);
    slot_stats(slot, id, inner_len);
    return fib_send(frc, &p, out, handoff);
}

/* The Proxy-ETRs' locator set when the ITR uses them (miss action petr). */
static __always_inline struct lisp_locset *petr_set(const struct lisp_config *c)
{
    if (c->miss_action != LISP_MISS_PETR)
        return 0;
    __u32 id = LISP_PETR_SET;
    return locsets.lookup(&id);
}

/* Map-cache decision for an IP packet of instance iid (m, slot, ref: what
 * cache_lookup found). One locator choice: the program is inlined, and a
 * second copy costs verifier budget. Encapsulation is lisp_itr_encap's,
 * by tail call. A destination whose flow-cache slot keeps its locator
 * (fc_keep_locator) never comes here: itr() goes to lisp_itr_encap. */
static __always_inline int route(struct __sk_buff *skb, struct lisp_flow *f, __u32 iid,
                                 const struct lisp_config *c, int mode,
                                 const struct lisp_mapping *m, struct lisp_fc_slot *slot, __u32 ref,
                                 struct lisp_itr_state *st)
{
    if (!m && (c->flags & LISP_CFG_PITR)) {
        /* PITR: outside the EID aggregates; the host's own Internet traffic */
        count(LISP_CNT_PITR_PASSED);
        return TC_ACT_OK;
    }
    __u32 id = LISP_PETR_SET;
    struct lisp_locset *ls = 0;
    const struct lisp_locator *loc = 0;
    __u8 action = m ? m->action : LISP_ACT_SEND_MAP_REQUEST;
    switch (action) {
    case LISP_ACT_NO_ACTION:
        id = m ? m->id : 0;
        ls = locsets.lookup(&id);
        /* Python installs "no-action without locators" (RFC 9301: do not
         * encapsulate) as NATIVELY_FORWARD, and writes a locator set before
         * the entry naming it; an entry without one is inconsistent: never
         * let EID traffic out unencapsulated because of it. */
        if (!ls)
            return drop(LISP_DROP_NO_LOCATOR_SET);
        fc_keep_locator(slot, ls);
        break;
    case LISP_ACT_NATIVELY_FORWARD:
        /* RFC 6832 section 6: with Proxy-ETRs, traffic to non-LISP
         * destinations goes to them (the source is an EID the Internet may
         * not route, or a provider filters it: the PETR forwards it instead) */
        ls = petr_set(c);
        if (!ls) {
            count(LISP_CNT_NATIVE);
            return TC_ACT_OK;
        }
        count(LISP_CNT_PETR);
        break;
    case LISP_ACT_SEND_MAP_REQUEST:
        count(LISP_CNT_MISS);
        if (c->miss_action == LISP_MISS_NATIVE) {
            miss_event(skb, f, iid, c, 0);
            count(LISP_CNT_NATIVE);
            return TC_ACT_OK;
        }
        ls = petr_set(c);
        miss_event(skb, f, iid, c, !ls);     /* a dropped packet goes to the daemon */
        if (!ls)
            return drop(LISP_DROP_MISS);
        count(LISP_CNT_PETR);
        break;
    case LISP_ACT_DROP_POLICY_DENIED:
        return drop(LISP_DROP_POLICY_DENIED);
    case LISP_ACT_DROP_AUTH_FAILURE:
        return drop(LISP_DROP_AUTH_FAILURE);
    default:
        return drop(LISP_DROP_NEGATIVE);
    }
    __u32 hash = lisp_flow_hash(f);
    if (ls)
        loc = itr_locator(ls, hash);
    st->hash = hash;
    st->id = id;
    /* the slot is counted in and keeps the source's LSBs only for a
     * mapping of its own (not for the Proxy-ETRs of a negative entry) */
    st->fc_ref = ref != LISP_FC_NOREF && action == LISP_ACT_NO_ACTION ? ref : LISP_FC_NOREF;
    st->has_loc = loc != 0;
    if (loc)
        st->loc = *loc;
    tail_progs.call(skb, LISP_TAIL_ENCAP);
    return drop(LISP_DROP_ENCAP_FAILED);
}

/* The common case of a decided destination (the slot keeps its locator)
 * encapsulated here, in the lookups' program, as the XDP ITR does it: a
 * forwarded packet (not egress, not re-encapsulated) of the locator's
 * family, not GSO, TTL above 1, no Ethernet padding, within the path MTU,
 * its checksum complete (itr_can_push), its next hop known. Every
 * other packet, untouched, returns -1 for lisp_itr_encap, which handles it
 * whole. One program entry and its lookups less per packet (~10 ns of ~200). */
static __always_inline int itr_fast(struct __sk_buff *skb, struct lisp_flow *f, __u32 iid, int mode,
                                    struct lisp_fc_slot *slot, struct lisp_scratch *sc)
{
    struct lisp_itr_state *st = &sc->itr;
    const struct lisp_locator *loc = &st->loc;
    struct lisp_config *c = get_config();
    if (!c || mode || f->ttl <= 1 || !itr_can_push(skb, f, loc, mode))
        return -1;
    int v6 = f->family == 6;
    if (v6 ? !c->has_src6 : !c->has_src4)
        return -1;
    __u32 olen = v6 ? LISP_OVERHEAD6 : LISP_OVERHEAD4;
    __u32 inner_len = skb->len - ETH_HLEN;
    if (f->l3len != inner_len || inner_len < lisp_inner_copy(f->family) ||
        (c->path_mtu && inner_len + olen > c->path_mtu))
        return -1;
    struct bpf_fib_lookup p;
    __u32 out;
    if (itr_next_hop(skb, &p, skb->ifindex, v6, v6 ? c->src6 : c->src4, loc->addr, inner_len + olen, 0, slot, 0,
                     &out) != BPF_FIB_LKUP_RET_SUCCESS)
        return -1;
    /* handed to a veth peer (LISP_OUT_PEER), the packet enters the peer's
     * stack where its network header says, which bpf_skb_change_head leaves
     * at the inner header: adjust_room, ~60 ns more, moves it with the room
     * (the hand-over saves a veth transmit and a backlog pass, far more). */
    long grow = (out & LISP_OUT_PEER) ? bpf_skb_adjust_room(skb, olen, BPF_ADJ_ROOM_MAC, itr_room_flags(v6)) :
                                        bpf_skb_change_head(skb, olen, 0);
    if (grow ||
        itr_write(skb, f, loc, c, inner_len, st->hash, iid, slot, 1, BPF_FIB_LKUP_RET_SUCCESS, &p, p.dmac,
                  itr_nonce(sc)))
        return drop(LISP_DROP_ENCAP_FAILED);
    count(LISP_CNT_ENCAPSULATED);
    slot_stats(slot, slot->m.id, inner_len);
    return redirect_out(p.ifindex, out, 1);
}

static __always_inline int itr(struct __sk_buff *skb, int egress)
{
    __u32 want = ETH_HLEN + LISP_L4_PULL;
    if (skb->protocol == bpf_htons(ETH_P_IP))
        want += sizeof(struct iphdr);
    else if (skb->protocol == bpf_htons(ETH_P_IPV6))
        want += sizeof(struct ipv6hdr);
    if (skb->tc_index & LISP_TC_PEEL) {
        __u32 chunk = (skb->tc_index & ~LISP_TC_PEEL) << 3;
        skb->tc_index = 0;
        if (lisp_peel(skb, chunk))
            return drop(LISP_DROP_ENCAP_FAILED);
    }
    if (pull_headers(skb, want))
        return TC_ACT_OK;       /* out of memory: the stack decides */
    void *data = (void *)(long)skb->data;
    void *data_end = (void *)(long)skb->data_end;
    struct ethhdr *eth = data;
    if ((void *)(eth + 1) > data_end)
        return TC_ACT_OK;
    /* parsed straight into the hand-over to lisp_itr_route (no copy) */
    struct lisp_scratch *sc = get_scratch();
    if (!sc)
        return TC_ACT_OK;
    struct lisp_itr_state *st = &sc->itr;
    struct lisp_flow *f = &st->f;
    __builtin_memset(f, 0, sizeof(*f));
    if (lisp_parse_ip(eth + 1, data_end, eth->h_proto, f) < 0)
        return TC_ACT_OK;
    if (lisp_special_dst(f))
        return TC_ACT_OK;
    __u32 iid;
    __u32 cb = skb->cb[0];
    int mode = egress ? LISP_MODE_EGRESS : 0;
    if (cb & LISP_CB_IID_VALID) {
        iid = cb & 0xffffff;            /* re-encapsulation: iid of the LISP header */
        skb->cb[0] = 0;
        mode |= LISP_MODE_REENCAP;
    } else {
        iid = ingress_iid(sc, skb->ifindex);
    }
    /* Traffic within the site (and to this router) is not encapsulated. */
    struct lisp_mapping *m;
    struct lisp_fc_slot *slot;
    __u32 ref;
    if (cache_lookup(f, iid, &m, &slot, &ref))
        return TC_ACT_OK;
    /* a fixed locator goes over in the hand-over, so lisp_itr_route needs no slot */
    int fixed = slot && slot->has_loc;
    st->fixed = fixed;
    if (fixed)
        st->loc = slot->loc;
    st->iid = iid;
    st->mode = mode;
    st->fc_ref = slot ? ref : LISP_FC_NOREF;
    st->has_m = m != 0;
    if (m)
        st->m = *m;
    if (fixed && slot) {
        /* Decided already: a slot keeps a locator only for a mapping of its
         * own that every flow takes (route()'s no-action case, fc_keep_locator),
         * so straight to the encapsulation, one program fewer per packet. */
        st->hash = lisp_flow_hash(f);
        st->id = slot->m.id;
        st->has_loc = 1;
        int rc = itr_fast(skb, f, iid, mode, slot, sc);
        if (rc >= 0)
            return rc;
        tail_progs.call(skb, LISP_TAIL_ENCAP);
        return drop(LISP_DROP_ENCAP_FAILED);
    }
    tail_progs.call(skb, LISP_TAIL_ROUTE);
    return drop(LISP_DROP_ENCAP_FAILED);
}

int lisp_itr_ingress(struct __sk_buff *skb)
{
    return itr(skb, 0);
}

int lisp_itr_egress(struct __sk_buff *skb)
{
    return itr(skb, 1);
}

/* The flow-cache slot a tail call's fc_ref names, or 0. Nothing else runs
 * on this CPU between the decision and here, so it is the slot as the
 * decision left it. */
static __always_inline struct lisp_fc_slot *fc_deref(__u32 ref)
{
    if (ref == LISP_FC_NOREF)
        return 0;
    __u32 idx = ref >> 1;
    struct lisp_fc_set *s = flow_cache.lookup(&idx);
    if (!s)
        return 0;
    return ref & 1 ? &s->way[1] : &s->way[0];
}

/* The tc ITR's map-cache decision, tail-called by lisp_itr_ingress/egress
 * with struct lisp_itr_state in scratch. */
int lisp_itr_route(struct __sk_buff *skb)
{
    struct lisp_scratch *sc = get_scratch();
    struct lisp_config *c = get_config();
    if (!sc || !c)
        return TC_ACT_OK;
    struct lisp_itr_state *st = &sc->itr;
    __u32 ref = st->fc_ref;
    return route(skb, &st->f, st->iid, c, st->mode, st->has_m ? &st->m : 0, fc_deref(ref), ref, st);
}

/* The tc ITR's encapsulation, tail-called by lisp_itr_route with struct
 * lisp_itr_state in scratch: encapsulate and forward. */
int lisp_itr_encap(struct __sk_buff *skb)
{
    struct lisp_scratch *sc = get_scratch();
    struct lisp_config *c = get_config();
    if (!sc || !c)
        return drop(LISP_DROP_ENCAP_FAILED);
    struct lisp_itr_state *st = &sc->itr;
    return encap(skb, &st->f, st->iid, st->has_loc ? &st->loc : 0, st->hash, st->id, c, st->mode,
                 fc_deref(st->fc_ref), st->fixed, sc);
}

static __always_inline int local_rloc(int v6, const void *addr)
{
    struct lisp_rloc_key k = {};
    k.family = v6 ? 6 : 4;
    __builtin_memcpy(k.addr, addr, v6 ? 16 : 4);
    return local_rlocs.lookup(&k) != 0;
}

/* local_rloc() for the ETR: the config's outer source of each family is the
 * first local RLOC of that family (Datapath._update_sources keeps it in
 * local_rlocs, and takes it out of the config before the map), and most
 * packets are addressed to it: one compare instead of hashing the key. */
static __always_inline int etr_local_rloc(const struct lisp_config *c, int v6, const void *addr)
{
    if (v6) {
        __u64 a[2], b[2];
        __builtin_memcpy(a, __builtin_assume_aligned(addr, 4), 16);
        __builtin_memcpy(b, c->src6, 16);
        if (c->has_src6 && a[0] == b[0] && a[1] == b[1])
            return 1;
    } else {
        __u32 a, b;
        __builtin_memcpy(&a, __builtin_assume_aligned(addr, 4), 4);
        __builtin_memcpy(&b, c->src4, 4);
        if (c->has_src4 && a == b)
            return 1;
    }
    return local_rloc(v6, addr);
}

/* ---- Proxy-ETR (RFC 6832 section 6) ------------------------------------
 * A PETR decapsulates for any destination, not only local EIDs, and hands
 * the inner packet to the FIB. Because that makes it a relay for whoever
 * can reach its RLOC, two rules apply before anything is changed: an inner
 * address that is only meaningful on one link or host is never forwarded,
 * and with petr.accept-eids only sources inside those prefixes are. */

/* Loopback, unspecified, link-local, multicast/broadcast/reserved (v4 >= 224),
 * and IPv4-mapped IPv6 (a way around IPv4 rules). */
static __always_inline int lisp_local_only(const __u8 *a, int family)
{
    if (family == 4)
        return a[0] == 0 || a[0] == 127 || a[0] >= 224 || (a[0] == 169 && a[1] == 254);
    if (a[0] == 0xff || (a[0] == 0xfe && (a[1] & 0xc0) == 0x80))
        return 1;
    __u32 w0, w1, w2, w3;
    __builtin_memcpy(&w0, a, 4);
    __builtin_memcpy(&w1, a + 4, 4);
    __builtin_memcpy(&w2, a + 8, 4);
    __builtin_memcpy(&w3, a + 12, 4);
    if (w0 || w1)
        return 0;
    if (w2 == bpf_htonl(0xffff))
        return 1;                               /* ::ffff:0:0/96 */
    return !w2 && (w3 == 0 || w3 == bpf_htonl(1));  /* :: and ::1 */
}

static __always_inline int petr_src_accepted(const struct lisp_flow *f, __u32 iid)
{
    if (f->family == 4) {
        struct lisp_key4 k = {.prefixlen = 64, .iid = bpf_htonl(iid)};
        __builtin_memcpy(k.addr, f->src, 4);
        return petr_accept4.lookup(&k) != 0;
    }
    struct lisp_key6 k = {.prefixlen = 160, .iid = bpf_htonl(iid)};
    __builtin_memcpy(k.addr, f->src, 16);
    return petr_accept6.lookup(&k) != 0;
}

/* 0: the PETR may forward this inner packet; else the drop reason. */
static __always_inline int petr_check(const struct lisp_flow *f, __u32 iid, const struct lisp_config *c)
{
    if (lisp_local_only(f->dst, f->family) || lisp_local_only(f->src, f->family))
        return LISP_DROP_PETR_LOCAL_ONLY;
    if ((c->flags & LISP_CFG_PETR_ACL) && !petr_src_accepted(f, iid))
        return LISP_DROP_PETR_SRC_DENIED;
    return 0;
}

/* The FIB's verdict on a PETR packet, taken before decapsulation: forward
 * (SUCCESS/NO_NEIGH), let the stack forward it (FRAG_NEEDED: it fragments
 * or sends the ICMP error), or drop. NOT_FWDED means no route or a
 * destination on this host (the helper does not tell which): a PETR relays,
 * it does not deliver to itself. */
static __always_inline int petr_fib_verdict(long frc)
{
    if (fib_ok(frc) || frc == BPF_FIB_LKUP_RET_FRAG_NEEDED)
        return 0;
    return LISP_DROP_NO_ROUTE;
}

/* What the ETR leaves alone. On a PITR whose Internet-facing interface is
 * also its RLOC interface (one uplink), that is the Internet traffic the
 * ITR program must see: it gets it by tail call, instance ID from
 * eid_ifaces (the ITR passes whatever no map-cache entry covers). */
static __always_inline int etr_pass(struct __sk_buff *skb, const struct lisp_config *c)
{
    if (c && (c->flags & LISP_CFG_PITR)) {
        skb->cb[0] = 0;
        tail_progs.call(skb, LISP_TAIL_ITR);
    }
    return TC_ACT_OK;
}

/* What the ETR checks found out about a packet; shared by the tc and the
 * XDP ETR so both apply exactly the same rules. */
struct lisp_etr_pkt {
    struct lisp_flow f;         /* the inner packet */
    __u32 olen;                 /* outer IP + UDP + LISP header bytes */
    __u32 inner_len;            /* inner IP packet bytes (from the UDP length) */
    __u32 iid;
    __u8 outer_ttl;
    __u8 inner_ecn;             /* the inner ECN field after RFC 6040 decapsulation */
    __u8 ver;                   /* inner IP version */
    __u8 is_local;              /* inner destination in the local EID database */
    __u8 outer6;
    __be16 inner_proto;         /* ethertype of the inner packet */
    __u8 petr;                  /* not local, Proxy-ETR: forward natively */
};

#define LISP_ETR_PASS (-1)      /* not a LISP data packet for us: leave it untouched */
#define LISP_ETR_DECAP (-2)     /* ours and well-formed: decapsulate */

/* A NATed xTR's keepalive to an RTR's data port (docs/nat.md, "Data
 * binding"): an Info-Request (first byte 0x70: type 7, R clear) from its
 * port 4341 to ours, which its NAT translated to any port. As a LISP data
 * header 0x70 would be L, E and V without N: E is meaningless without N, so
 * no ITR sends it. To the stack, where the daemon's 4341 socket reads it. */
#define LISP_INFO_REQUEST_BYTE 0x70
static __always_inline int info_request_on_data_port(struct udphdr *uh, void *data_end)
{
    __u8 *first = (void *)(uh + 1);
    if ((void *)(first + 1) > data_end)
        return 0;
    return *first == LISP_INFO_REQUEST_BYTE;
}

/* The ETR's header checks over [data, data_end) (starting at the Ethernet
 * header; pkt_len: the whole frame, or 0 when it ends at data_end, as an
 * XDP frame without frags does). Returns LISP_ETR_PASS, LISP_ETR_DECAP
 * (e filled in) or the enum lisp_drop_reason to count. Only UDP/4341 to a
 * local RLOC is ours; from there on anything wrong is a drop. */
/* A control message sent from our data port 4341 (NAT traversal: the
 * Info-Request and the ECM'd Map-Register open the NAT binding data uses,
 * docs/nat.md) is answered from port 4342 to 4341: such packets go to the
 * stack (the daemon's socket on 4341), never decapsulated. LISP data never
 * comes from 4342 (4341 or a hashed port >= 0xc000). */
static __always_inline int etr_check(void *data, void *data_end, __u32 pkt_len, const struct lisp_config *c,
                                     struct lisp_etr_pkt *e)
{
    struct ethhdr *eth = data;
    if ((void *)(eth + 1) > data_end)
        return LISP_ETR_PASS;
    __u32 olen;
    __u8 outer_ttl, outer_ecn;
    __u32 l3_len;
    struct udphdr *uh;
    if (eth->h_proto == bpf_htons(ETH_P_IP)) {
        struct iphdr *ip = (void *)(eth + 1);
        if ((void *)(ip + 1) > data_end || ip->protocol != IPPROTO_UDP)
            return LISP_ETR_PASS;
        /* Options and fragments are left to the stack; fragments of LISP
         * packets to a local RLOC are reassembled there and reach the
         * userspace ETR on UDP 4341 (docs/datapath.md, fragmentation). */
        if (ip->frag_off & bpf_htons(LISP_IP_MF | LISP_IP_OFFSET)) {
            if (local_rloc(0, &ip->daddr))
                count(LISP_CNT_FRAG_TO_STACK);
            return LISP_ETR_PASS;
        }
        if (ip->ihl != 5)
            return LISP_ETR_PASS;
        uh = (void *)(ip + 1);
        if ((void *)(uh + 1) > data_end || uh->dest != bpf_htons(LISP_DATA_PORT))
            return LISP_ETR_PASS;
        if (!etr_local_rloc(c, 0, &ip->daddr))
            return LISP_ETR_PASS;
        if (uh->source == bpf_htons(LISP_CTRL_PORT))
            return LISP_ETR_PASS;       /* control reply to our port 4341 (NAT traversal) */
        if (info_request_on_data_port(uh, data_end))
            return LISP_ETR_PASS;       /* NATed xTR's keepalive to an RTR (docs/nat.md) */
        olen = sizeof(*ip) + sizeof(*uh) + sizeof(struct lisp_hdr);
        outer_ttl = ip->ttl;
        outer_ecn = ip->tos & 3;
        l3_len = bpf_ntohs(ip->tot_len);
        e->outer6 = 0;
    } else if (eth->h_proto == bpf_htons(ETH_P_IPV6)) {
        struct ipv6hdr *ip6 = (void *)(eth + 1);
        if ((void *)(ip6 + 1) > data_end)
            return LISP_ETR_PASS;
        if (ip6->nexthdr == IPPROTO_FRAGMENT && local_rloc(1, &ip6->daddr)) {
            count(LISP_CNT_FRAG_TO_STACK);
            return LISP_ETR_PASS;
        }
        if (ip6->nexthdr != IPPROTO_UDP)
            return LISP_ETR_PASS;
        uh = (void *)(ip6 + 1);
        if ((void *)(uh + 1) > data_end || uh->dest != bpf_htons(LISP_DATA_PORT))
            return LISP_ETR_PASS;
        if (!etr_local_rloc(c, 1, &ip6->daddr))
            return LISP_ETR_PASS;
        if (uh->source == bpf_htons(LISP_CTRL_PORT))
            return LISP_ETR_PASS;       /* control reply to our port 4341 (NAT traversal) */
        if (info_request_on_data_port(uh, data_end))
            return LISP_ETR_PASS;       /* NATed xTR's keepalive to an RTR (docs/nat.md) */
        olen = sizeof(*ip6) + sizeof(*uh) + sizeof(struct lisp_hdr);
        outer_ttl = ip6->hop_limit;
        outer_ecn = (ip6->flow_lbl[0] >> 4) & 3;
        l3_len = bpf_ntohs(ip6->payload_len) + sizeof(*ip6);
        e->outer6 = 1;
    } else {
        return LISP_ETR_PASS;
    }

    /* From here on the packet is ours: anything wrong is a counted drop. */
    __u32 ulen = bpf_ntohs(uh->len);
    __u32 udp_off = olen - sizeof(struct udphdr) - sizeof(struct lisp_hdr);
    /* 6.1's verifier keeps no bound through the byte swap of l3_len: the
     * mask (a no-op, l3_len <= 65575) gives it one for the pointer sum */
    __u32 l3_max = l3_len;
    asm volatile("" : "+r"(l3_max));
    l3_max &= 0x1ffff;
    int short_frame = pkt_len ? l3_len + ETH_HLEN > pkt_len : data + ETH_HLEN + l3_max > data_end;
    if (short_frame || ulen + udp_off > l3_len ||
        ulen < sizeof(struct udphdr) + sizeof(struct lisp_hdr) + sizeof(struct iphdr))
        return LISP_DROP_MALFORMED;
    struct lisp_hdr *lh = (void *)(uh + 1);
    if ((void *)(lh + 1) > data_end)
        return LISP_DROP_MALFORMED;
    __u32 iid = 0;
    if (lh->flags & LISP_F_I)
        iid = bpf_ntohl(lh->iid_lsb) >> 8;
    void *inner = (void *)(lh + 1);
    if (inner + 1 > data_end)
        return LISP_DROP_MALFORMED;
    __u8 ver = *(__u8 *)inner >> 4;
    __be16 inner_proto = ver == 4 ? bpf_htons(ETH_P_IP) : ver == 6 ? bpf_htons(ETH_P_IPV6) : 0;
    if (!inner_proto)
        return LISP_DROP_MALFORMED;
    if (lisp_parse_ip_l4(inner, data_end, inner_proto, &e->f, 0) < 0)
        return LISP_DROP_MALFORMED;
    /* the inner packet must fill the UDP payload exactly, no more */
    __u32 inner_len = ulen - sizeof(struct udphdr) - sizeof(struct lisp_hdr);
    if (ver == 4) {
        struct iphdr *iip = inner;
        if ((void *)(iip + 1) > data_end || bpf_ntohs(iip->tot_len) != inner_len ||
            iip->ihl * 4 > inner_len)
            return LISP_DROP_MALFORMED;
    } else {
        struct ipv6hdr *iip6 = inner;
        if ((void *)(iip6 + 1) > data_end || bpf_ntohs(iip6->payload_len) + sizeof(*iip6) != inner_len)
            return LISP_DROP_MALFORMED;
    }
    int is_local;
    if (!etr_lookup(&e->f, iid, &is_local))
        return LISP_DROP_UNKNOWN_IID;
    if (outer_ttl == 0)
        return LISP_DROP_TTL;
    if (e->f.ttl == 0)
        return LISP_DROP_INNER_TTL;
    int ecn = lisp_ecn_decap(e->f.tos, outer_ecn);
    if (ecn < 0)
        return LISP_DROP_ECN;
    if (!is_local && (c->flags & LISP_CFG_PETR)) {
        int bad = petr_check(&e->f, iid, c);
        if (bad)
            return bad;
        e->petr = 1;
    } else if (!is_local && !(c->flags & LISP_CFG_REENCAP)) {
        return LISP_DROP_NOT_LOCAL_EID;
    }
    e->olen = olen;
    e->inner_len = inner_len;
    e->iid = iid;
    e->outer_ttl = outer_ttl;
    e->inner_ecn = ecn;
    e->ver = ver;
    e->is_local = is_local;
    e->inner_proto = inner_proto;
    return LISP_ETR_DECAP;
}

/* ETR: decapsulate UDP 4341 packets to a local RLOC; pass everything else. */
int lisp_etr_ingress(struct __sk_buff *skb)
{
    /* outer IP + UDP + LISP + an inner IPv6 header (the inner ports are not needed) */
    __u32 want = ETH_HLEN + sizeof(struct udphdr) + sizeof(struct lisp_hdr) + sizeof(struct ipv6hdr);
    want += skb->protocol == bpf_htons(ETH_P_IPV6) ? sizeof(struct ipv6hdr) : sizeof(struct iphdr);
    if (pull_headers(skb, want))
        return TC_ACT_OK;
    struct lisp_config *c = get_config();
    if (!c)
        return TC_ACT_OK;
    void *data = (void *)(long)skb->data;
    void *data_end = (void *)(long)skb->data_end;
    struct lisp_etr_pkt e = {};
    int rc = etr_check(data, data_end, skb->len, c, &e);
    if (rc == LISP_ETR_PASS)
        return etr_pass(skb, c);
    if (rc != LISP_ETR_DECAP)
        return drop(rc);
    struct ethhdr *eth = data;
    if ((void *)(eth + 1) > data_end)
        return TC_ACT_OK;
    __u32 olen = e.olen;
    __u8 outer_ttl = e.outer_ttl;
    __u32 iid = e.iid;
    __u8 ver = e.ver;
    __u32 inner_len = e.inner_len;
    __be16 inner_proto = e.inner_proto;
    int is_local = e.is_local;

    /* The next hop of the inner packet, looked up before anything changes.
     * The MAC addresses need no copy: adjust_room (BPF_ADJ_ROOM_MAC) removes
     * the bytes between the Ethernet and the outer IP header, so the frame's
     * own addresses are still in front of the inner packet (bpf_skb_change_proto,
     * 6.1's cross-family step, moves the MAC header the same way). */
    struct bpf_fib_lookup p;
    long frc = -1;
    __u32 out = 0;
    if (is_local || e.petr)
        frc = fib_resolve(skb, &p, ver == 6, e.f.src, e.f.dst, inner_len, &out);
    if (e.petr) {
        int bad = petr_fib_verdict(frc);
        if (bad)
            return drop(bad);
    }
    /* RFC 9300 5.3: the inner TTL becomes min(inner, outer); redirected to
     * the site (or, PETR, on to its destination), it is routed by us: one
     * less, and at 1 the stack takes it (Time Exceeded). Re-encapsulation
     * decrements in the ITR. */
    __u8 ttl = outer_ttl < e.f.ttl ? outer_ttl : e.f.ttl;
    int fwd = (is_local || e.petr) && fib_ok(frc);
    if (fwd) {
        if (ttl <= 1) {
            count(LISP_CNT_TTL_TO_STACK);
            fwd = 0;
            frc = -1;
        } else {
            ttl -= 1;
        }
    }
    __u32 inner_off = ETH_HLEN + (e.outer6 ? LISP_OVERHEAD6 : LISP_OVERHEAD4);
    /* trailing bytes after the UDP payload (Ethernet padding) go too */
    if (skb->len > inner_off + inner_len &&
        bpf_skb_change_tail(skb, inner_off + inner_len, 0))
        return drop(LISP_DROP_DECAP_FAILED);
    if (lisp_decap_room(skb, olen, e.outer6, ver == 6))
        return drop(LISP_DROP_DECAP_FAILED);
    /* The new Ethernet header and the inner IP header's TTL, ECN and
     * checksum, written in place: adjust_room left the head writable, with
     * ETH_HLEN + the pulled inner header in the linear part (direct writes,
     * not bpf_skb_store_bytes, a helper call that makes the head writable
     * again: ~15% of this program's run; a program that writes packet data
     * directly unclones a cloned skb as it starts, e.g. under a packet
     * capture, which adjust_room does to LISP packets anyway). */
    data = (void *)(long)skb->data;
    data_end = (void *)(long)skb->data_end;
    eth = data;
    __u8 *ih = (void *)(eth + 1);
    if ((void *)(ih + LISP_INNER_FIX) > data_end)
        return drop(LISP_DROP_DECAP_FAILED);
    if (frc == BPF_FIB_LKUP_RET_SUCCESS)
        fib_eth_macs(eth, &p);
    eth->h_proto = inner_proto;
    if (lisp_inner_fix(ih, ver, e.inner_ecn, ttl))
        count(LISP_CNT_ECN_MARKED);
    count(LISP_CNT_DECAPSULATED);

    if (e.petr) {
        count(LISP_CNT_PETR_FORWARDED);
        return fwd ? fib_send(frc, &p, out, needs_no_xmit(skb, out, 1)) : TC_ACT_OK;
    }
    if (!is_local) {
        /* RTR / re-encapsulation: the ITR program decides the next locator. */
        count(LISP_CNT_REENCAPSULATED);
        skb->cb[0] = iid | LISP_CB_IID_VALID;
        tail_progs.call(skb, LISP_TAIL_ITR);
        return drop(LISP_DROP_DECAP_FAILED);
    }
    /* no forwarding route (e.g. the EID is this host), or TTL 1: the stack */
    return fwd ? fib_send(frc, &p, out, needs_no_xmit(skb, out, 1)) : TC_ACT_OK;
}

#include "lisp_etr_xdp.c"
#include "lisp_itr_xdp.c"
