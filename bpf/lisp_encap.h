/* Locator selection and outer header construction, shared by every program.
 * Pure functions: the caller writes the result into the packet. */
#ifndef LISP_ENCAP_H
#define LISP_ENCAP_H

struct lisp_outer4 {
    struct iphdr ip;
    struct udphdr udp;
    struct lisp_hdr lisp;
} __attribute__((packed));

struct lisp_outer6 {
    struct ipv6hdr ip6;
    struct udphdr udp;
    struct lisp_hdr lisp;
} __attribute__((packed));

#define LISP_OVERHEAD4 (sizeof(struct lisp_outer4))
#define LISP_OVERHEAD6 (sizeof(struct lisp_outer6))

static __always_inline int lisp_usable(const struct lisp_locset *ls, __u32 i)
{
    if (i >= LISP_MAX_LOCATORS || i >= ls->count)
        return 0;
    return ls->loc[i].up && ls->loc[i].priority != 255;
}

/* Locator index for flow hash h, or -1. Level 0 holds the best priority; if
 * the slot's locator is down, the rest of that level is searched before the
 * next priority, so a failed locator sheds only its own flows. */
static __always_inline int lisp_pick(const struct lisp_locset *ls, __u32 h)
{
    __u32 s = h & (LISP_SLOTS - 1);
    for (int l = 0; l < LISP_LEVELS; l++) {
        if (l >= ls->nlevels)
            break;
        __u32 base = l * LISP_SLOTS;
        __u32 i = ls->slots[base + s];
        if (lisp_usable(ls, i))
            return i;
        for (int j = 1; j < LISP_SLOTS; j++) {
            i = ls->slots[base + ((s + j) & (LISP_SLOTS - 1))];
            if (lisp_usable(ls, i))
                return i;
        }
    }
    return -1;
}

/* Outer UDP source port: entropy for ECMP, kept in the dynamic range. */
static __always_inline __be16 lisp_sport(__u32 h)
{
    return bpf_htons(0xc000 | ((h >> 16) & 0x3fff));
}

/* lsb: the sending site's locator-status bits (RFC 9300 5.3: of the local
 * mapping the inner source matches), or LISP_LSB_NONE when the source is not
 * one of our EIDs (RTR, PITR): then L=0 and the field is zero. */
#define LISP_LSB_NONE 0xffffffffffffULL
static __always_inline void lisp_fill_hdr(struct lisp_hdr *l, __u32 iid, __u64 lsb, __u32 nonce)
{
    int has_lsb = lsb != LISP_LSB_NONE;
    __u32 bits = has_lsb ? (__u32)lsb : 0;
    l->flags = LISP_F_N | (has_lsb ? LISP_F_L : 0) | (iid ? LISP_F_I : 0);
    l->nonce[0] = nonce >> 16;
    l->nonce[1] = nonce >> 8;
    l->nonce[2] = nonce;
    l->iid_lsb = bpf_htonl(iid ? (iid << 8) | (bits & 0xff) : bits);
}

/* Everything an encapsulated packet gets written in front of and into it,
 * as the XDP ITR builds it on the stack before it changes the frame and
 * copies it at once after bpf_xdp_adjust_head (the tc ITR writes the same
 * bytes in place after bpf_skb_adjust_room): the new Ethernet header, the outer IP + UDP + LISP headers,
 * and the inner IP header (IPv4: its first 20 bytes), whose TTL a routing
 * ITR decrements here rather than with helper calls of its own. */
#define LISP_INNER_COPY 40
struct lisp_encap_hdr {
    __u8 pad[2];                /* keeps the outer IP header 4-byte aligned on the stack */
    struct ethhdr eth;
    union {
        struct {
            struct lisp_outer4 o;
            __u8 in[LISP_INNER_COPY];
        } __attribute__((packed)) v4;
        struct {
            struct lisp_outer6 o;
            __u8 in[LISP_INNER_COPY];
        } __attribute__((packed)) v6;
    };
} __attribute__((packed, aligned(4)));

/* Bytes of the inner IP header copied into lisp_encap_hdr. */
static __always_inline __u32 lisp_inner_copy(int family)
{
    return family == 4 ? sizeof(struct iphdr) : sizeof(struct ipv6hdr);
}

/* An IP header one router hop on: TTL / hop limit - 1 (the caller checked
 * it is > 1), the IPv4 header checksum updated incrementally (RFC 1624). */
static __always_inline void lisp_hop(__u8 *ip, int family)
{
    if (family == 4) {
        __u16 old, new, check;
        __builtin_memcpy(&old, ip + 8, 2);      /* TTL, protocol */
        ip[8] -= 1;
        __builtin_memcpy(&new, ip + 8, 2);
        __builtin_memcpy(&check, ip + 10, 2);
        check = lisp_csum_replace2(check, old, new);
        __builtin_memcpy(ip + 10, &check, 2);
    } else {
        ip[7] -= 1;
    }
}

/* UDP checksum of an IPv6-encapsulated packet without reading the payload,
 * the way Linux's local checksum offload (lco_csum) does it: an inner TCP,
 * UDP or ICMP segment with a correct checksum sums to the complement of its
 * pseudo-header sum (ICMPv4: to zero), and that holds as well when the
 * checksum is still to be filled in by offload (CHECKSUM_PARTIAL). So the
 * outer sum = outer pseudo header + UDP + LISP + inner IP header + that.
 * Where it cannot be known (gso: a GSO super-packet, fragments, IPv6
 * extension headers, IPv4 UDP without checksum, other protocols) the
 * RFC 6935 zero checksum stays. in: the inner IP header as it will leave
 * (lisp_inner_copy bytes); family: f->family, as a constant where in is
 * packet memory (the verifier checks the bytes read against data_end). */
static __always_inline __u16 lisp_outer6_csum(const __u8 *in, const struct lisp_flow *f, int family,
                                              const struct lisp_outer6 *o, __u32 inner_len, int gso)
{
    if (gso || f->frag || f->l3len != inner_len)
        return 0;
    __u8 proto = f->proto;
    if (proto != IPPROTO_TCP && proto != IPPROTO_UDP &&
        !(family == 4 && proto == IPPROTO_ICMP) && !(family == 6 && proto == IPPROTO_ICMPV6))
        return 0;
    if (proto == IPPROTO_UDP && f->udp_nocsum && family == 4)
        return 0;
    __u32 sum;
    if (family == 4) {
        if (!f->ihl_ok)
            return 0;
        sum = lisp_csum_add(0, in, 10);
        if (proto != IPPROTO_ICMP) {
            __u32 ps = lisp_csum_add(0, f->src, 2);
            ps = lisp_csum_add(ps, f->dst, 2);
            ps += bpf_htons(proto) + bpf_htons(inner_len - 20);
            sum += lisp_csum_fold(ps);           /* ~pseudo, folded */
        }
    } else {
        sum = lisp_csum_add(0, in, 20);
        __u32 ps = lisp_csum_add(0, f->src, 8);
        ps = lisp_csum_add(ps, f->dst, 8);
        ps += bpf_htons(inner_len - 40) + bpf_htons(proto);
        sum += lisp_csum_fold(ps);
    }
    sum = lisp_csum_add(sum, &o->ip6.saddr, 16);
    sum += o->ip6.payload_len + bpf_htons(IPPROTO_UDP);
    sum = lisp_csum_add(sum, &o->udp, 4);
    sum = lisp_csum_add(sum, &o->lisp, 4);
    __u16 c = lisp_csum_fold(sum);
    return c ? c : 0xffff;
}

/* RFC 6040 normal-mode decapsulation: the inner ECN field given the inner
 * and outer ones, or -1 to drop (CE over a not-ECT packet). */
static __always_inline int lisp_ecn_decap(__u8 inner, __u8 outer)
{
    inner &= 3;
    outer &= 3;
    if (inner == 0)                 /* Not-ECT */
        return outer == 3 ? -1 : 0;
    if (outer == 3)                 /* CE */
        return 3;
    if (inner == 2 && outer == 1)   /* ECT(0) inside ECT(1) */
        return 1;
    return inner;
}

/* The inner IP header after decapsulation (its first 12 bytes, in place):
 * the RFC 6040 ECN field `ecn` and TTL / hop limit `ttl`, the IPv4 header
 * checksum updated incrementally (RFC 1624). Returns 1 when the ECN field
 * changed. Shared by the tc ETR (on a copy it stores with the new Ethernet
 * header) and the XDP ETR (on the packet). */
#define LISP_INNER_FIX 12
static __always_inline int lisp_inner_fix(__u8 *ip, int family, __u8 ecn, __u8 ttl)
{
    int marked = 0;
    if (family == 4) {
        __u16 old, new, check;
        __builtin_memcpy(&check, ip + 10, 2);
        if ((ip[1] & 3) != ecn) {
            __builtin_memcpy(&old, ip, 2);
            ip[1] = (ip[1] & ~3) | ecn;
            __builtin_memcpy(&new, ip, 2);
            check = lisp_csum_replace2(check, old, new);
            marked = 1;
        }
        if (ip[8] != ttl) {
            __builtin_memcpy(&old, ip + 8, 2);
            ip[8] = ttl;
            __builtin_memcpy(&new, ip + 8, 2);
            check = lisp_csum_replace2(check, old, new);
        }
        __builtin_memcpy(ip + 10, &check, 2);
    } else {
        if (((ip[1] >> 4) & 3) != ecn) {
            ip[1] = (ip[1] & ~0x30) | (ecn << 4);
            marked = 1;
        }
        ip[7] = ttl;
    }
    return marked;
}

/* inner_len: bytes of the inner IP packet (for GSO, of the whole super-packet);
 * dport: the locator's UDP port (4341 unless it is a NATed xTR's translated port).
 * The outer TTL and DSCP/ECN are copied from the inner header (RFC 9300 5.3). */
static __always_inline void lisp_build4(struct lisp_outer4 *o, const struct lisp_flow *f,
                                        const __u8 *src, const __u8 *dst, __u32 inner_len,
                                        __u32 h, __u32 iid, __u64 lsb, __u32 nonce, __u16 dport)
{
    o->ip.version = 4;
    o->ip.ihl = 5;
    o->ip.tos = f->tos;
    o->ip.tot_len = bpf_htons(inner_len + sizeof(*o));
    o->ip.id = 0;
    /* DF: the MTU check happens here, before encapsulation */
    o->ip.frag_off = bpf_htons(LISP_IP_DF);
    o->ip.ttl = f->ttl;
    o->ip.protocol = IPPROTO_UDP;
    o->ip.check = 0;
    __builtin_memcpy(&o->ip.saddr, src, 4);
    __builtin_memcpy(&o->ip.daddr, dst, 4);
    o->ip.check = lisp_csum_fold(lisp_csum_add(0, &o->ip, 10));
    o->udp.source = lisp_sport(h);
    o->udp.dest = bpf_htons(dport);
    o->udp.len = bpf_htons(inner_len + sizeof(o->udp) + sizeof(o->lisp));
    o->udp.check = 0;
    lisp_fill_hdr(&o->lisp, iid, lsb, nonce);
}

static __always_inline void lisp_build6(struct lisp_outer6 *o, const struct lisp_flow *f,
                                        const __u8 *src, const __u8 *dst, __u32 inner_len,
                                        __u32 h, __u32 iid, __u64 lsb, __u32 nonce, __u16 dport)
{
    __u32 flow = h & 0xfffff;
    o->ip6.version = 6;
    o->ip6.priority = f->tos >> 4;
    o->ip6.flow_lbl[0] = ((f->tos & 0xf) << 4) | ((flow >> 16) & 0xf);
    o->ip6.flow_lbl[1] = flow >> 8;
    o->ip6.flow_lbl[2] = flow;
    o->ip6.payload_len = bpf_htons(inner_len + sizeof(o->udp) + sizeof(o->lisp));
    o->ip6.nexthdr = IPPROTO_UDP;
    o->ip6.hop_limit = f->ttl;
    __builtin_memcpy(&o->ip6.saddr, src, 16);
    __builtin_memcpy(&o->ip6.daddr, dst, 16);
    o->udp.source = lisp_sport(h);
    o->udp.dest = bpf_htons(dport);
    o->udp.len = o->ip6.payload_len;
    /* Zero checksum for tunnels over IPv6: RFC 6935/6936 (see docs/datapath.md). */
    o->udp.check = 0;
    lisp_fill_hdr(&o->lisp, iid, lsb, nonce);
}

#endif
