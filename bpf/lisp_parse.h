/* Packet parsing shared by every program (tc and XDP): pure functions over
 * [data, data_end), no maps, no context, so both hook types can use them. */
#ifndef LISP_PARSE_H
#define LISP_PARSE_H

#define LISP_IP_DF 0x4000
#define LISP_IP_MF 0x2000
#define LISP_IP_OFFSET 0x1fff

#define LISP_F_N 0x80   /* nonce present */
#define LISP_F_L 0x40   /* locator-status bits valid */
#define LISP_F_E 0x20
#define LISP_F_V 0x10
#define LISP_F_I 0x08   /* instance ID present */

struct lisp_hdr {
    __u8 flags;
    __u8 nonce[3];
    __be32 iid_lsb;     /* iid << 8 | lsb when I=1, 32 LSBs otherwise */
};

/* What the data plane needs to know about an IP packet. */
struct lisp_flow {
    __u8 family;        /* 4 or 6 */
    __u8 proto;         /* L4 protocol (first next-header for IPv6) */
    __u8 ttl;
    __u8 tos;           /* IPv4 TOS / IPv6 traffic class */
    __u8 df;            /* IPv4 DF set; always 1 for IPv6 */
    __u8 ihl_ok;        /* IPv4 header without options (ICMP quoting needs it) */
    __u8 frag;          /* a fragment: no L4 header to rely on */
    __u8 udp_nocsum;    /* UDP with checksum 0 (allowed in IPv4) */
    __u16 hdrlen;       /* IP + TCP/UDP header bytes: the per-segment overhead of GSO */
    __u16 l3len;        /* IP total length from the header */
    __be16 sport;
    __be16 dport;
    __u8 src[16];
    __u8 dst[16];
    __u16 l4csum;       /* TCP/UDP checksum field as received (lisp_l4_csum_complete) */
} __attribute__((aligned(8)));     /* zeroed and copied in 8-byte words, not 2-byte ones */

/* want_l4 (a constant): also the TCP/UDP ports and header length. The ETRs
 * need only the IP header (addresses, TTL, TOS): without it they skip the
 * L4 reads and their bounds checks. */
static __always_inline int lisp_parse_ip_l4(void *l3, void *end, __be16 proto, struct lisp_flow *f, int want_l4)
{
    void *l4;
    if (proto == bpf_htons(ETH_P_IP)) {
        struct iphdr *ip = l3;
        if ((void *)(ip + 1) > end)
            return -1;
        if (ip->version != 4 || ip->ihl < 5)
            return -1;
        f->family = 4;
        f->proto = ip->protocol;
        f->ttl = ip->ttl;
        f->tos = ip->tos;
        f->df = (ip->frag_off & bpf_htons(LISP_IP_DF)) != 0;
        f->ihl_ok = ip->ihl == 5;
        __builtin_memcpy(f->src, &ip->saddr, 4);
        __builtin_memcpy(f->dst, &ip->daddr, 4);
        __u32 hl = ip->ihl * 4;
        f->hdrlen = hl;
        f->l3len = bpf_ntohs(ip->tot_len);
        /* Fragments carry no ports (or not ours): hash them by addresses only. */
        if (ip->frag_off & bpf_htons(LISP_IP_MF | LISP_IP_OFFSET)) {
            f->frag = 1;
            return 0;
        }
        l4 = l3 + hl;
    } else if (proto == bpf_htons(ETH_P_IPV6)) {
        struct ipv6hdr *ip6 = l3;
        if ((void *)(ip6 + 1) > end)
            return -1;
        if (ip6->version != 6)
            return -1;
        f->family = 6;
        f->proto = ip6->nexthdr;
        f->ttl = ip6->hop_limit;
        f->tos = (ip6->priority << 4) | (ip6->flow_lbl[0] >> 4);
        f->df = 1;
        f->ihl_ok = 1;
        __builtin_memcpy(f->src, &ip6->saddr, 16);
        __builtin_memcpy(f->dst, &ip6->daddr, 16);
        f->hdrlen = sizeof(*ip6);
        f->l3len = bpf_ntohs(ip6->payload_len) + sizeof(*ip6);
        l4 = l3 + sizeof(*ip6);
    } else {
        return -1;
    }
    if (!want_l4)
        return 0;
    if (f->proto == IPPROTO_TCP) {
        struct tcphdr *th = l4;
        if ((void *)(th + 1) > end)
            return 0;
        f->sport = th->source;
        f->dport = th->dest;
        f->l4csum = th->check;
        f->hdrlen += th->doff * 4;
    } else if (f->proto == IPPROTO_UDP) {
        struct udphdr *uh = l4;
        if ((void *)(uh + 1) > end)
            return 0;
        f->sport = uh->source;
        f->dport = uh->dest;
        f->udp_nocsum = uh->check == 0;
        f->l4csum = uh->check;
        f->hdrlen += sizeof(*uh);
    }
    return 0;
}

static __always_inline int lisp_parse_ip(void *l3, void *end, __be16 proto, struct lisp_flow *f)
{
    return lisp_parse_ip_l4(l3, end, proto, f, 1);
}

/* Destinations an ITR never encapsulates: multicast, broadcast, link-local. */
static __always_inline int lisp_special_dst(const struct lisp_flow *f)
{
    if (f->family == 4)
        return f->dst[0] >= 224 || (f->dst[0] == 169 && f->dst[1] == 254);
    return f->dst[0] == 0xff || (f->dst[0] == 0xfe && (f->dst[1] & 0xc0) == 0x80);
}

/* murmur3's finaliser: every output bit depends on every input bit. The
 * per-CPU caches index their sets by the low bits of a multiplicative hash,
 * in which a multiply carries input bits only upwards: without this, IPv4
 * addresses that differ in the last octet (the top byte of the word as
 * loaded) fell into 8 of 1,024 next-hop sets. */
static __always_inline __u32 lisp_fmix(__u32 h)
{
    h ^= h >> 16;
    h *= 0x85ebca6b;
    h ^= h >> 13;
    h *= 0xc2b2ae35;
    h ^= h >> 16;
    return h;
}

static __always_inline __u32 lisp_mix(__u32 h, __u32 w)
{
    h ^= w;
    h *= 0x9e3779b1;
    return (h << 13) | (h >> 19);
}

/* A flow hash of our own, not skb->hash: a socket's txhash changes after an
 * RTO, and one flow must keep one locator. IPv4 without DF is hashed by
 * addresses only, like fragments: all fragments of a datagram (the source's
 * or ours, RFC 9300 7.1) then take the same locator as its first one. */
static __always_inline __u32 lisp_flow_hash(const struct lisp_flow *f)
{
    __u32 h = 0x4c495350 ^ f->proto;
    __u32 w;
    int n = f->family == 4 ? 1 : 4;
#pragma unroll
    for (int i = 0; i < 4; i++) {
        if (i < n) {
            __builtin_memcpy(&w, &f->src[i * 4], 4);
            h = lisp_mix(h, w);
            __builtin_memcpy(&w, &f->dst[i * 4], 4);
            h = lisp_mix(h, w);
        }
    }
    if (f->df)
        h = lisp_mix(h, ((__u32)f->sport << 16) | f->dport);
    return lisp_fmix(h);
}

static __always_inline __u32 lisp_csum_add(__u32 sum, const void *buf, int words)
{
    const __u16 *p = buf;
#pragma unroll
    for (int i = 0; i < words; i++)
        sum += p[i];
    return sum;
}

static __always_inline __u16 lisp_csum_fold(__u32 sum)
{
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    return (__u16)~sum;
}

/* The packet's TCP/UDP checksum is complete: its field does not hold the
 * pseudo-header sum, which is what the stack leaves there for an offload to
 * finish (CHECKSUM_PARTIAL: a packet from a local socket, a veth or a tap;
 * never one a NIC received). Whatever forwards the packet after us then
 * needs no offsets into it. 0 for anything else (other protocols, IPv4
 * options, IPv6 extension headers, fragments) and for the one in 65,536
 * complete checksums that equal the sum: callers take the general path. */
static __always_inline int lisp_l4_csum_complete(const struct lisp_flow *f)
{
    if (f->frag || (f->proto != IPPROTO_TCP && f->proto != IPPROTO_UDP))
        return 0;
    __u32 ps;
    if (f->family == 4) {
        if (!f->ihl_ok)
            return 0;
        ps = lisp_csum_add(0, f->src, 2);
        ps = lisp_csum_add(ps, f->dst, 2);
        ps += bpf_htons(f->proto) + bpf_htons(f->l3len - 20);
    } else {
        ps = lisp_csum_add(0, f->src, 8);
        ps = lisp_csum_add(ps, f->dst, 8);
        ps += bpf_htons(f->proto) + bpf_htons(f->l3len - 40);
    }
    return f->l4csum != (__u16)~lisp_csum_fold(ps);
}

/* Checksum after one 16-bit word of the summed data changed from old to
 * new (RFC 1624, eqn. 3); all values in network byte order. */
static __always_inline __u16 lisp_csum_replace2(__u16 check, __u16 old, __u16 new)
{
    __u32 sum = (__u16)~check + (__u16)~old + (__u32)new;
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    return (__u16)~sum;
}

#endif
