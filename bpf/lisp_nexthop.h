/* Per-CPU next-hop cache in front of bpf_fib_lookup.
 *
 * Why: the FIB lookup (route, then neighbour) is ~200-250 ns of every
 * forwarded packet. For the ITR its answer depends only on the locator
 * (outer destination), the configured outer source and the ingress device:
 * a few keys however many flows, so nearly every packet hits. For the ETRs
 * it depends on the inner addresses (a key per site host and source). A hit
 * is one hash and one per-CPU array element (a set of two one-line slots),
 * no helper call. Used by every program that forwards by redirect (tc and
 * XDP ITR, tc and XDP ETR, PETR).
 *
 * What is cached: only BPF_FIB_LKUP_RET_SUCCESS answers of lookups that
 * checked the MTU (tot_len given; GSO super-packets always ask the FIB): the
 * egress device, both MAC addresses, the MTU the FIB reported (mtu_result,
 * kernel >= 5.12) and how the programs may redirect into the egress device
 * (its out_devs bits; the programs then skip that lookup too). A packet longer
 * than the cached MTU asks the FIB, which answers FRAG_NEEDED as before.
 * Keyed by everything the lookup was given: ingress ifindex, family, source,
 * destination.
 *
 * Invalidation, two bounds:
 *   - nh_gen[0] is a generation the daemon increments when the kernel's
 *     forwarding state changes (netlink RTM_NEW/DELROUTE, RULE, NEIGH, LINK, ADDR
 *     in the namespace: lispctl.daemon.ifwatch) and after writes of the
 *     config (outer sources) and out_devs (lispctl.datapath.Datapath).
 *     A slot filled under another generation is a miss. Read before the FIB
 *     lookup and stored with its answer (as the flow cache does), so an
 *     answer older than a change carries an older generation than the bump
 *     that follows the change.
 *   - a slot is a miss LISP_NH_MAX_AGE jiffies after it was filled, so
 *     without any daemon (or between a change and its netlink event) a
 *     route or a neighbour's new MAC is followed within that time: at most
 *     one second for any HZ (100: 1 s; Debian's 250: 0.4 s; 1000: 0.1 s).
 *     Jiffies (bpf_jiffies64, kernel >= 5.5: a plain load behind the call),
 *     not a clock: bpf_ktime_get_coarse_ns cost ~12% of a cached ETR's run
 *     (a timekeeper read under a sequence counter). The program does not
 *     know HZ, hence a bound in jiffies that is one second at the lowest.
 * Generation 0 is never current (Datapath starts it at 1): the cache is off.
 * Slots keep the low 32 bits of the generation (a slot from 2^32 bumps ago
 * would be more than a second old anyway).
 *
 * Memory: LISP_NH_SETS x 128 bytes per possible CPU (128 KiB at 1,024).
 * Not pinned: a new program starts with an empty cache of its own.
 */
#ifndef LISP_NEXTHOP_H
#define LISP_NEXTHOP_H

#ifndef LISP_NH_SETS
#define LISP_NH_SETS 1024       /* power of two; 2 ways each */
#endif
_Static_assert((LISP_NH_SETS & (LISP_NH_SETS - 1)) == 0, "LISP_NH_SETS must be a power of two");
#define LISP_NH_MAX_AGE 100     /* jiffies: 1 s at HZ=100, less at any higher HZ */

/* One cache line: with many destinations each hit is one line to fetch
 * (a FIB lookup over a small table costs about as much as two). */
struct lisp_nh_slot {
    __u32 gen;                 /* low 32 bits of nh_gen when filled; 0 / stale: empty */
    __u32 filled;              /* bpf_jiffies64() when filled (32 bits: 49 days at HZ=1000) */
    __u32 in_ifindex;          /* key: the ingress device the lookup named */
    __u32 out_ifindex;
    __u32 src[4];              /* key, as in struct bpf_fib_lookup (IPv4: word 0, the rest 0) */
    __u32 dst[4];              /* key */
    __u8 family;               /* key: AF_INET / AF_INET6 */
    __u8 out;                  /* out_ifindex's out_devs bits (LISP_OUT_*) */
    __u16 mtu;                 /* the FIB's mtu_result */
    __u8 smac[ETH_ALEN];
    __u8 dmac[ETH_ALEN];
};
_Static_assert(sizeof(struct lisp_nh_slot) == 64, "a next-hop slot is one cache line");

struct lisp_nh_set {
    struct lisp_nh_slot way[2];
};

BPF_TABLE_PINNED("array", __u32, __u64, nh_gen, 1, LISP_PIN(nh_gen));
BPF_PERCPU_ARRAY(nh_cache, struct lisp_nh_set, LISP_NH_SETS);

/* fib_params zeroes the lookup and writes IPv4 addresses into the first
 * word of the IPv6 ones (a union), so the 4 words of each cover both
 * families; for IPv4 the other three are 0 in the lookup and in any slot of
 * that family, so hash and match skip them: a chain of 6 fewer multiplies
 * and 6 fewer compares on every IPv4 lookup (the ETR's, and the ITR's
 * toward an IPv4 locator). */
static __always_inline __u32 nh_hash(const struct bpf_fib_lookup *p)
{
    __u32 h = (p->ifindex ^ ((__u32)p->family << 24)) * 0x9E3779B1u;
    h = (h ^ p->ipv6_dst[0]) * 0x85EBCA77u;
    h = (h ^ p->ipv6_src[0]) * 0xC2B2AE3Du;
    if (p->family == AF_INET6) {
#pragma unroll
        for (int i = 1; i < 4; i++) {
            h = (h ^ p->ipv6_dst[i]) * 0x85EBCA77u;
            h = (h ^ p->ipv6_src[i]) * 0xC2B2AE3Du;
        }
    }
    return lisp_fmix(h) & (LISP_NH_SETS - 1);
}

static __always_inline int nh_match(const struct lisp_nh_slot *s, const struct bpf_fib_lookup *p,
                                    __u32 gen, __u32 now)
{
    if (s->gen != gen || now - s->filled >= LISP_NH_MAX_AGE || s->in_ifindex != p->ifindex ||
        s->family != p->family || s->dst[0] != p->ipv6_dst[0] || s->src[0] != p->ipv6_src[0])
        return 0;
    return p->family != AF_INET6 ||
           (s->dst[1] == p->ipv6_dst[1] && s->dst[2] == p->ipv6_dst[2] && s->dst[3] == p->ipv6_dst[3] &&
            s->src[1] == p->ipv6_src[1] && s->src[2] == p->ipv6_src[2] && s->src[3] == p->ipv6_src[3]);
}

/* bpf_fib_lookup(ctx, p) through the cache, for a lookup that fib_params
 * filled in. On SUCCESS p holds the egress ifindex, both MACs and
 * mtu_result as the helper would leave them (not the gateway the helper
 * writes into the destination), and *out the egress device's out_devs bits
 * (LISP_OUT_*), from a hit or a filled slot, always with want_out (the
 * XDP programs, which may redirect only with LISP_OUT_XDP), and for a GSO
 * packet (tot_len 0, never cached: one lookup per super-packet); else 0,
 * the plain redirect. Any other answer comes straight from the helper, uncached. */
static __always_inline long nh_fib_lookup(void *ctx, struct bpf_fib_lookup *p, int want_out, __u32 *out)
{
    __u32 zero = 0;
    __u16 tot_len = p->tot_len;
    *out = 0;
    __u64 *g = nh_gen.lookup(&zero);
    __u32 gen = g ? (__u32)*(volatile __u64 *)g : 0;
    struct lisp_nh_slot *slot = 0;
    __u32 now = 0;
    if (gen && tot_len) {
        __u32 idx = nh_hash(p);
        struct lisp_nh_set *s = nh_cache.lookup(&idx);
        now = bpf_jiffies64();
        if (s) {
            struct lisp_nh_slot *hit = 0;
            if (nh_match(&s->way[0], p, gen, now))
                hit = &s->way[0];
            else if (nh_match(&s->way[1], p, gen, now))
                hit = &s->way[1];
            if (hit && tot_len <= hit->mtu) {
                p->ifindex = hit->out_ifindex;
                p->mtu_result = hit->mtu;
                __builtin_memcpy(p->smac, hit->smac, ETH_ALEN);
                __builtin_memcpy(p->dmac, hit->dmac, ETH_ALEN);
                *out = hit->out;
                return BPF_FIB_LKUP_RET_SUCCESS;
            }
            /* the way this lookup's answer will take: an empty or stale
             * one, else either. Its key is written now, while p still holds
             * it (the helper overwrites the destination with the gateway,
             * and may change the family). */
            __u32 w;
            if (s->way[0].gen != gen || now - s->way[0].filled >= LISP_NH_MAX_AGE)
                w = 0;
            else if (s->way[1].gen != gen || now - s->way[1].filled >= LISP_NH_MAX_AGE)
                w = 1;
            else
                w = bpf_get_prandom_u32() & 1;
            slot = w ? &s->way[1] : &s->way[0];
            slot->gen = 0;      /* never a half-written slot that looks valid */
            slot->in_ifindex = p->ifindex;
            slot->family = p->family;
            __builtin_memcpy(slot->src, p->ipv6_src, 16);
            __builtin_memcpy(slot->dst, p->ipv6_dst, 16);
        }
    }
    long rc = bpf_fib_lookup(ctx, p, sizeof(*p), 0);
    if (rc != BPF_FIB_LKUP_RET_SUCCESS)
        return rc;
    __u32 out_if = p->ifindex;
    /* mtu_result (kernel >= 5.12) is the MTU the helper checked tot_len
     * against; a packet longer than it asks the FIB again. */
    __u16 mtu = p->mtu_result;
    int fill = slot && mtu >= tot_len;
    if (want_out || fill || !tot_len) {
        __u32 *bits = out_devs.lookup(&out_if);
        *out = bits ? *bits : 0;
    }
    if (!fill)
        return rc;
    slot->filled = now;
    slot->mtu = mtu;
    slot->out = *out;
    slot->out_ifindex = out_if;
    __builtin_memcpy(slot->smac, p->smac, ETH_ALEN);
    __builtin_memcpy(slot->dmac, p->dmac, ETH_ALEN);
    slot->gen = gen;
    return rc;
}

#endif
