/* lispctl data plane: the XDP ITR, for EID-facing NICs.
 *
 *   lisp_itr_xdp   XDP of an EID-facing interface (eid-mode "xdp"/"auto")
 *
 * Compiled as part of lisp_datapath.c (included at its end, after the XDP
 * ETR): the parsing, the lookups (instance of the interface, local EIDs,
 * map-cache, locator set), the locator choice and the headers (itr_headers)
 * are the tc ITR's own functions, so both encapsulate a packet to the same
 * bytes (but for the random nonce).
 *
 * An EID-facing NIC hands XDP one frame at a time before any skb exists, so
 * encapsulating there and redirecting straight out of the RLOC interface
 * never builds an skb on the router. Only the common case is done here: a
 * map-cache entry with a usable locator, a TTL above 1, a packet that fits
 * the path, a resolved next hop on an interface with LISP_OUT_XDP. Everything
 * else is XDP_PASSed untouched, and the tc ITR behind this program handles
 * it as before, counters included: misses (miss events, carried packets),
 * negative entries, native forwarding, Proxy-ETRs, PITR, fragmentation and
 * ICMP too big, Time Exceeded, next hops without a neighbour entry. GSO
 * super-packets and locally originated traffic never reach XDP; they stay
 * with tc.
 */

int lisp_itr_xdp(struct xdp_md *ctx)
{
    void *data = (void *)(long)ctx->data;
    void *data_end = (void *)(long)ctx->data_end;
    struct ethhdr *eth = data;
    if ((void *)(eth + 1) > data_end)
        return XDP_PASS;
    struct lisp_flow f = {};
    if (lisp_parse_ip(eth + 1, data_end, eth->h_proto, &f) < 0)
        return XDP_PASS;
    if (lisp_special_dst(&f))
        return XDP_PASS;
    struct lisp_scratch *sc = get_scratch();
    __u32 iid = sc ? ingress_iid(sc, ctx->ingress_ifindex) : eid_iface_iid(ctx->ingress_ifindex);
    struct lisp_mapping *m;
    struct lisp_fc_slot *slot;
    __u32 ref;
    if (cache_lookup(&f, iid, &m, &slot, &ref) || !m || m->action != LISP_ACT_NO_ACTION || f.ttl <= 1)
        return XDP_PASS;
    struct lisp_config *c = get_config();
    if (!c)
        return XDP_PASS;
    __u32 id = m->id;
    __u32 hash = lisp_flow_hash(&f);
    const struct lisp_locator *loc;
    int fixed = slot && slot->has_loc;      /* the slot keeps loc's next hop too */
    if (fixed) {
        loc = &slot->loc;
    } else {
        struct lisp_locset *ls = locsets.lookup(&id);
        if (!ls)
            return XDP_PASS;
        fc_keep_locator(slot, ls);
        loc = itr_locator(ls, hash);
    }
    if (!loc)
        return XDP_PASS;
    int v6 = loc->family == 6;
    if (v6 ? !c->has_src6 : !c->has_src4)
        return XDP_PASS;
    __u32 olen = v6 ? LISP_OVERHEAD6 : LISP_OVERHEAD4;
    /* the inner packet's own length: Ethernet padding is trimmed below */
    __u32 inner_len = f.l3len;
    __u32 frame_len = lisp_xdp_buff_len(ctx);
    /* malformed (the tc ITR drops it), or too big for the path */
    if (inner_len < lisp_inner_copy(f.family) || inner_len + ETH_HLEN > frame_len ||
        (c->path_mtu && inner_len + olen > c->path_mtu))
        return XDP_PASS;

    struct bpf_fib_lookup p;
    __u32 out;
    long frc = itr_next_hop(ctx, &p, ctx->ingress_ifindex, v6, v6 ? c->src6 : c->src4, loc->addr,
                            inner_len + olen, 0, fixed ? slot : 0, 1, &out);
    __u32 out_if = p.ifindex;
    if (frc != BPF_FIB_LKUP_RET_SUCCESS || !(out & LISP_OUT_XDP))
        return XDP_PASS;

    struct lisp_encap_hdr h = {};
    __builtin_memcpy(h.eth.h_dest, p.dmac, ETH_ALEN);
    __builtin_memcpy(h.eth.h_source, p.smac, ETH_ALEN);
    h.eth.h_proto = v6 ? bpf_htons(ETH_P_IPV6) : bpf_htons(ETH_P_IP);
    __u32 n = itr_headers(&h, data, data_end, &f, loc, c, inner_len, hash, iid, slot, 1, 0);
    if (!n)
        return XDP_PASS;
    /* Until here nothing changed. Trimming the padding alone leaves a packet
     * the tc ITR handles the same way. */
    if (frame_len > inner_len + ETH_HLEN &&
        bpf_xdp_adjust_tail(ctx, (int)(inner_len + ETH_HLEN) - (int)frame_len))
        return XDP_PASS;
    if (bpf_xdp_adjust_head(ctx, -(int)olen))
        return XDP_PASS;
    data = (void *)(long)ctx->data;
    data_end = (void *)(long)ctx->data_end;
    /* n is one of three sizes (outer 36/56 + inner header 20/40 bytes);
     * copies to packet memory need a constant length */
    if (n == sizeof(struct ethhdr) + LISP_OVERHEAD4 + sizeof(struct iphdr)) {
        if (data + sizeof(struct ethhdr) + LISP_OVERHEAD4 + sizeof(struct iphdr) > data_end)
            return xdp_drop(LISP_DROP_ENCAP_FAILED);
        __builtin_memcpy(data, &h.eth, sizeof(struct ethhdr) + LISP_OVERHEAD4 + sizeof(struct iphdr));
    } else if (n == sizeof(struct ethhdr) + LISP_OVERHEAD6 + sizeof(struct ipv6hdr)) {
        if (data + sizeof(struct ethhdr) + LISP_OVERHEAD6 + sizeof(struct ipv6hdr) > data_end)
            return xdp_drop(LISP_DROP_ENCAP_FAILED);
        __builtin_memcpy(data, &h.eth, sizeof(struct ethhdr) + LISP_OVERHEAD6 + sizeof(struct ipv6hdr));
    } else {
        /* 4 in 6 and 6 in 4: 14 + 56 + 20 = 14 + 36 + 40 */
        if (data + sizeof(struct ethhdr) + LISP_OVERHEAD6 + sizeof(struct iphdr) > data_end)
            return xdp_drop(LISP_DROP_ENCAP_FAILED);
        __builtin_memcpy(data, &h.eth, sizeof(struct ethhdr) + LISP_OVERHEAD6 + sizeof(struct iphdr));
    }
    count(LISP_CNT_ENCAPSULATED);
    count(LISP_CNT_XDP_ENCAPSULATED);
    slot_stats(slot, id, inner_len);
    return bpf_redirect(out_if, 0);
}
