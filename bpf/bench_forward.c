/* BENCHMARK ONLY, not part of the data plane: the "bpf-forward" baseline of
 * `make bench` (controller/lispctl/bench/forwarder.py loads it with bcc; the
 * daemon's loader never reads this file).
 *
 * The least a BPF router does to forward a packet: bpf_fib_lookup on the
 * destination, new MAC addresses, TTL / hop limit one less, redirect out of
 * the FIB's interface. No map, no encapsulation, no counter. It is the
 * ceiling of the method the LISP programs use (forward with a redirect
 * instead of the stack), so LISP / bpf-forward measures what encapsulation
 * and the LISP lookups cost, where LISP / plain also measures redirect
 * against the kernel's forwarding path. Same shape as the kernel's
 * samples/bpf/xdp_fwd_kern.c: anything but a resolved next hop (no route, no
 * neighbour yet, too big, TTL <= 1, local, not IP) goes to the stack
 * untouched, which forwards, resolves, fragments or answers it.
 * Like the LISP programs, tc hands a packet to a veth peer's ingress
 * (bpf_redirect_peer) where the data plane would (fwd_peer, filled by
 * forwarder.py with lispctl.datapath.vethpeer.handoff's answer).
 */
#include <uapi/linux/bpf.h>
#include <uapi/linux/pkt_cls.h>
#include <uapi/linux/if_ether.h>
#include <uapi/linux/ip.h>
#include <uapi/linux/ipv6.h>

/* ifindex -> 1: hand over. An array: its lookup is inlined, no call. */
BPF_ARRAY(fwd_peer, __u32, 65536);
static long (*fwd_redirect_peer)(__u32 ifindex, __u64 flags) = (void *)BPF_FUNC_redirect_peer;

#define FWD_AF_INET 2
#define FWD_AF_INET6 10

/* IPv4 TTL one less with the checksum updated incrementally (RFC 1624), as
 * ip_decrease_ttl does. */
static __always_inline void ttl_dec4(struct iphdr *ip)
{
    __u32 check = ip->check;
    check += bpf_htons(0x0100);
    ip->check = (__u16)(check + (check >= 0xFFFF));
    ip->ttl--;
}

/* Fill the lookup from the IP header at l3; returns 0, or -1 when the packet
 * is not ours to forward (not IP, TTL <= 1, truncated). */
static __always_inline int fwd_params(void *l3, void *data_end, __be16 proto,
                                      struct bpf_fib_lookup *p, int gso)
{
    if (proto == bpf_htons(ETH_P_IP)) {
        struct iphdr *ip = l3;
        if ((void *)(ip + 1) > data_end || ip->ttl <= 1)
            return -1;
        p->family = FWD_AF_INET;
        p->tos = ip->tos;
        p->l4_protocol = ip->protocol;
        p->tot_len = gso ? 0 : bpf_ntohs(ip->tot_len);
        p->ipv4_src = ip->saddr;
        p->ipv4_dst = ip->daddr;
        return 0;
    }
    if (proto == bpf_htons(ETH_P_IPV6)) {
        struct ipv6hdr *ip6 = l3;
        if ((void *)(ip6 + 1) > data_end || ip6->hop_limit <= 1)
            return -1;
        p->family = FWD_AF_INET6;
        p->flowinfo = *(__be32 *)ip6 & bpf_htonl(0x0FFFFFFF);
        p->l4_protocol = ip6->nexthdr;
        p->tot_len = gso ? 0 : sizeof(*ip6) + bpf_ntohs(ip6->payload_len);
        __builtin_memcpy(p->ipv6_src, &ip6->saddr, 16);
        __builtin_memcpy(p->ipv6_dst, &ip6->daddr, 16);
        return 0;
    }
    return -1;
}

static __always_inline void fwd_rewrite(struct ethhdr *eth, void *l3, const struct bpf_fib_lookup *p)
{
    if (p->family == FWD_AF_INET)
        ttl_dec4(l3);
    else
        ((struct ipv6hdr *)l3)->hop_limit--;
    __builtin_memcpy(eth->h_dest, p->dmac, ETH_ALEN);
    __builtin_memcpy(eth->h_source, p->smac, ETH_ALEN);
}

/* tc (clsact ingress). tot_len 0 for a GSO super-packet: the helper then
 * checks its segments against the egress MTU (is_skb_forwardable). */
int bench_fwd_tc(struct __sk_buff *skb)
{
    void *data = (void *)(long)skb->data;
    void *data_end = (void *)(long)skb->data_end;
    struct ethhdr *eth = data;
    if ((void *)(eth + 1) > data_end)
        return TC_ACT_OK;
    /* AF_PACKET TX rings (trafgen) leave only the MAC header linear. */
    __u32 want = sizeof(*eth) + sizeof(struct ipv6hdr);
    if (want > skb->len)
        want = skb->len;
    if (data + want > data_end) {
        if (bpf_skb_pull_data(skb, want) < 0)
            return TC_ACT_OK;
        data = (void *)(long)skb->data;
        data_end = (void *)(long)skb->data_end;
        eth = data;
        if ((void *)(eth + 1) > data_end)
            return TC_ACT_OK;
    }
    struct bpf_fib_lookup p = {};
    if (fwd_params(eth + 1, data_end, eth->h_proto, &p, skb->gso_size != 0) < 0)
        return TC_ACT_OK;
    p.ifindex = skb->ifindex;   /* the ingress device, at tc ingress */
    if (bpf_fib_lookup(skb, &p, sizeof(p), 0) != BPF_FIB_LKUP_RET_SUCCESS)
        return TC_ACT_OK;
    fwd_rewrite(eth, eth + 1, &p);
    __u32 out = p.ifindex;
    __u32 *peer = fwd_peer.lookup(&out);
    if (peer && *peer)
        return fwd_redirect_peer(out, 0);
    return bpf_redirect(out, 0);
}

/* XDP: the same for one frame (no GSO here). */
int bench_fwd_xdp(struct xdp_md *ctx)
{
    void *data = (void *)(long)ctx->data;
    void *data_end = (void *)(long)ctx->data_end;
    struct ethhdr *eth = data;
    if ((void *)(eth + 1) > data_end)
        return XDP_PASS;
    struct bpf_fib_lookup p = {};
    if (fwd_params(eth + 1, data_end, eth->h_proto, &p, 0) < 0)
        return XDP_PASS;
    p.ifindex = ctx->ingress_ifindex;
    if (bpf_fib_lookup(ctx, &p, sizeof(p), 0) != BPF_FIB_LKUP_RET_SUCCESS)
        return XDP_PASS;
    fwd_rewrite(eth, eth + 1, &p);
    return bpf_redirect(p.ifindex, 0);
}

/* The generator's sink: the cheapest thing the first hop can do with a
 * packet. trafgen's rate into it is the generator's ceiling on this machine
 * (docs/benchmarks.md: generator-bound or data-path-bound). */
int bench_drop_tc(struct __sk_buff *skb)
{
    return TC_ACT_SHOT;
}
