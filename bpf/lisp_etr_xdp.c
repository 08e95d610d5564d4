/* lispctl data plane: the XDP ETR, for RLOC-facing NICs.
 *
 *   lisp_etr_xdp   XDP (native, or generic as a fallback) of an RLOC-facing interface
 *
 * Compiled as part of lisp_datapath.c (included at its end): it uses the same
 * maps and the same header checks (etr_check) as the tc ETR, so both accept,
 * pass and drop exactly the same packets, counted in the same counters.
 *
 * A NIC hands XDP one MTU-sized frame before any skb or GRO exists, so
 * decapsulating there and redirecting straight out of the EID-facing
 * interface skips the skb allocation and the stack for the common case.
 * What it does not do (see docs/datapath.md):
 *   - re-encapsulation (RTR): such packets go on untouched to the tc ETR,
 *     which stays attached behind this program;
 *   - GSO: XDP frames are single packets; on veth the tc ETR is the better
 *     choice (an XDP program there disables the peer's TSO).
 */

/* Kernel >= 5.18; not declared by bcc 0.26. Without XDP frags (we do not set
 * BPF_F_XDP_HAS_FRAGS) it is data_end - data, which the verifier lets only
 * CAP_PERFMON programs compute from packet pointers. A helper call: asked
 * only for a frame with padding to trim; the checks compare pointers. */
static __u64 (*lisp_xdp_buff_len)(struct xdp_md *ctx) = (void *)BPF_FUNC_xdp_get_buff_len;

static __always_inline int xdp_drop(__u32 reason)
{
    count(LISP_CNT_DROP_BASE + reason);
    return XDP_DROP;
}

int lisp_etr_xdp(struct xdp_md *ctx)
{
    void *data = (void *)(long)ctx->data;
    void *data_end = (void *)(long)ctx->data_end;
    struct lisp_config *c = get_config();
    if (!c)
        return XDP_PASS;
    struct lisp_etr_pkt e = {};
    int rc = etr_check(data, data_end, 0, c, &e);
    if (rc == LISP_ETR_PASS)
        return XDP_PASS;
    if (rc != LISP_ETR_DECAP)
        return xdp_drop(rc);
    /* RTR re-encapsulation needs the tc ITR (GSO-aware encapsulation, tail
     * call): the tc ETR behind us handles the packet as it is. */
    if (!e.is_local)
        return XDP_PASS;
    struct ethhdr *eth = data;
    if ((void *)(eth + 1) > data_end)
        return XDP_PASS;
    /* the frame's MAC addresses, in 16-bit words (fib_eth_macs) */
    __u16 macs[ETH_ALEN];
    const __u16 *old = (const void *)eth;
#pragma unroll
    for (int i = 0; i < ETH_ALEN; i++)
        macs[i] = old[i];

    /* Next hop of the inner packet, looked up before anything changes
     * (through the next-hop cache, lisp_nexthop.h). */
    struct bpf_fib_lookup p;
    fib_params(&p, ctx->ingress_ifindex, e.ver == 6, e.f.src, e.f.dst, e.inner_len);
    __u32 out;
    long frc = nh_fib_lookup(ctx, &p, 1, &out);
    __u32 out_if = p.ifindex;
    /* Redirect only with a resolved neighbour and into a device known to
     * take XDP frames; otherwise the stack forwards (and resolves, fragments
     * or delivers locally) the decapsulated packet. */
    int redirect = frc == BPF_FIB_LKUP_RET_SUCCESS && (out & LISP_OUT_XDP);
    /* RFC 9300 5.3: inner TTL = min(inner, outer); redirected, we route it:
     * one less, and at 1 the stack takes it (Time Exceeded). */
    __u8 ttl = e.outer_ttl < e.f.ttl ? e.outer_ttl : e.f.ttl;
    if (redirect) {
        if (ttl <= 1) {
            count(LISP_CNT_TTL_TO_STACK);
            redirect = 0;
        } else {
            ttl -= 1;
        }
    }

    /* trailing bytes after the UDP payload (Ethernet padding) go first */
    __u32 keep = ETH_HLEN + e.olen + e.inner_len;
    __u32 keep_max = keep;
    asm volatile("" : "+r"(keep_max));
    keep_max &= 0x1ffff;    /* a no-op that 6.1's verifier needs as a bound (byte-swapped lengths) */
    if (data + keep_max < data_end) {
        __u32 pkt_len = lisp_xdp_buff_len(ctx);
        if (bpf_xdp_adjust_tail(ctx, (int)keep - (int)pkt_len))
            return xdp_drop(LISP_DROP_DECAP_FAILED);
    }
    if (bpf_xdp_adjust_head(ctx, (int)e.olen))
        return xdp_drop(LISP_DROP_DECAP_FAILED);
    data = (void *)(long)ctx->data;
    data_end = (void *)(long)ctx->data_end;
    eth = data;
    if ((void *)(eth + 1) > data_end)
        return xdp_drop(LISP_DROP_DECAP_FAILED);
    if (redirect) {
        fib_eth_macs(eth, &p);
    } else {
        /* to the stack: the frame must still be addressed to this interface
         * (another destination MAC makes it PACKET_OTHERHOST, never routed) */
        __u16 *d = (void *)eth;
#pragma unroll
        for (int i = 0; i < ETH_ALEN; i++)
            d[i] = macs[i];
    }
    eth->h_proto = e.inner_proto;

    __u8 *ip = (void *)(eth + 1);
    if ((void *)(ip + LISP_INNER_FIX) > data_end)
        return xdp_drop(LISP_DROP_DECAP_FAILED);
    if (lisp_inner_fix(ip, e.ver, e.inner_ecn, ttl))
        count(LISP_CNT_ECN_MARKED);
    count(LISP_CNT_DECAPSULATED);
    count(LISP_CNT_XDP_DECAPSULATED);
    if (redirect)
        return bpf_redirect(out_if, 0);
    count(LISP_CNT_XDP_TO_STACK);
    return XDP_PASS;
}
