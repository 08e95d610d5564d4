/* Kernel differences, settled once at load time: lispctl.datapath.probe asks
 * the running kernel which bpf_skb_adjust_room flags it accepts and the
 * loader passes the answers as LISP_HAVE_* (0/1), so every packet runs one
 * fixed path. Oldest kernel supported: 6.1 (Debian 12). */
#ifndef LISP_COMPAT_H
#define LISP_COMPAT_H

#if !defined(LISP_HAVE_DECAP_L3) || !defined(LISP_HAVE_DECAP_L4_UDP)
#error "LISP_HAVE_DECAP_L3 and LISP_HAVE_DECAP_L4_UDP come from lispctl.datapath.probe"
#endif

/* UAPI values newer than the 6.1 headers we compile with */
#define LISP_ADJ_DECAP_L3_IPV4 (1ULL << 7)     /* kernel >= 6.3 */
#define LISP_ADJ_DECAP_L3_IPV6 (1ULL << 8)
/* Newer than 6.18 (bpf-next 2025): clears SKB_GSO_UDP_TUNNEL and
 * skb->encapsulation of a decapsulated GSO packet. */
#define LISP_ADJ_DECAP_L4_UDP (1ULL << 10)

#define LISP_IP6_IP4_DIFF 20    /* sizeof(struct ipv6hdr) - sizeof(struct iphdr) */

/* Remove the olen bytes of outer IP + UDP + LISP that follow the Ethernet
 * header, and leave skb->protocol set to the inner family (the stack picks
 * the L3 handler of a packet passed up, and drivers their offloads, by it).
 * FIXED_GSO: a GSO packet's gso_size is the inner payload per segment,
 * which removing outer headers does not change. Returns 0 or < 0 (the packet
 * may then be half changed: the caller drops it).
 * The DECAP_L3 flag only across families (and with DECAP_L4_UDP, which the
 * probe asked together with it): for the same family skb->protocol already
 * is the inner one and the minimum length the flag would set is the one the
 * helper takes anyway (the outer family's header), while the flag costs
 * ~13 ns per packet on 6.18 (BPF_PROG_TEST_RUN, 124 vs 137 ns for a program
 * doing only this and the redirect). Newer kernels also drop the skb's route
 * with the flag; at tc ingress, before routing, there is none. */
static __always_inline int lisp_decap_room(struct __sk_buff *skb, __u32 olen, int outer6, int inner6)
{
    __u64 flags = BPF_F_ADJ_ROOM_FIXED_GSO;
#if LISP_HAVE_DECAP_L3
    __u64 decap_l3 = inner6 ? LISP_ADJ_DECAP_L3_IPV6 : LISP_ADJ_DECAP_L3_IPV4;
    if (outer6 != inner6)
        flags |= decap_l3;
#if LISP_HAVE_DECAP_L4_UDP
    if (skb->gso_size)
        flags |= decap_l3 | LISP_ADJ_DECAP_L4_UDP;
#endif
#else
    /* Before 6.3 bpf_skb_adjust_room keeps skb->protocol (and refuses the
     * DECAP flags). Same family: nothing to change. Across families,
     * bpf_skb_change_proto sets it, inserting (4 -> 6) or removing (6 -> 4)
     * 20 bytes right after the Ethernet header, i.e. in the outer header we
     * remove anyway; in 6.1 it leaves gso_size alone and only swaps
     * SKB_GSO_TCPV4/V6, which a tunnel packet's inner type is already. The
     * 6 -> 4 order also keeps adjust_room's minimum (the outer family's
     * header length) from refusing inner IPv4 packets of 20-39 bytes. */
    if (outer6 != inner6) {
        if (bpf_skb_change_proto(skb, inner6 ? bpf_htons(ETH_P_IPV6) : bpf_htons(ETH_P_IP), 0))
            return -1;
        olen = inner6 ? olen + LISP_IP6_IP4_DIFF : olen - LISP_IP6_IP4_DIFF;
    }
#endif
    return bpf_skb_adjust_room(skb, -(__s32)olen, BPF_ADJ_ROOM_MAC, flags);
}

/* A helper length of at least lo that 6.1's verifier can see is not 0.
 * `if (n < lo || helper(..., n))` is not enough there: when clang spilled n
 * to the stack before the comparison, 6.1 does not carry the bound it learns
 * to the copy reloaded for the call, and rejects a length that may be 0
 * (newer verifiers do). lo + ((n - lo) & mask) takes its range from the
 * arithmetic instead, so it holds in any register. The caller has checked
 * lo <= n <= lo + mask, where this returns n. */
static __always_inline __u32 lisp_len_from(__u32 n, __u32 lo, __u32 mask)
{
    __u32 d = n - lo;
    asm volatile("" : "+r"(d));     /* keep clang from dropping the mask */
    return lo + (d & mask);
}

#endif
