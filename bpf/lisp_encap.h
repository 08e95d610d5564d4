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
