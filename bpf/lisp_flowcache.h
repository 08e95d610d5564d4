/* Per-CPU flow cache in front of the ITR's map-cache (LPM trie) lookup.
 *
 * Why: with a million prefixes per family the trie walk is ~20 nodes deep,
 * and over many destinations the lower nodes are cache misses (2.2x the
 * per-packet cost of a 1,000-entry map-cache). A hit here is one hash of
 * (iid, dst) and one per-CPU array element (a set of two slots): no LRU
 * list, no lock, no atomic operation (a third flow in a set replaces the
 * older of the two).
 *
 * What is cached, per (iid, dst): whether dst is a local EID (local_eid4/6:
 * the ITR leaves such packets alone), else the struct lisp_mapping the trie
 * returned (mapping id and action), never a trie miss; and, when every flow
 * to dst takes the same locator (struct lisp_locset.fixed: one usable
 * locator, the common case), that locator, so a hit skips the local-EID
 * trie, the map-cache trie, the locator set and the choice among its
 * locators. A set whose choice depends on the flow is still looked up by id
 * per packet.
 *
 * The ETRs read the same slots for "is the inner destination a local EID"
 * and "is the instance ID accepted" (lisp_datapath.c etr_lookup: iid_ok, set
 * once accepted_iids had it under the slot's generation), and fill
 * LISP_ACT_LOCAL ones.
 *
 * The slot also keeps the answer of the source-site locator-status bits
 * (RFC 9300 5.3: a second local-EID trie lookup, by source) for the last
 * source that sent to dst: one host talking to one destination, the common
 * case, then pays that lookup once. Another source replaces it (a lookup
 * and a 16-byte store: no worse than without). local_eid4/6 bump the
 * generation like the rest, so the same invalidation covers it.
 *
 * And it counts the packets the ITRs encapsulate with its mapping (packets,
 * bytes), instead of a map_stats lookup per packet (a per-CPU hash as large
 * as the ids: with many destinations a bucket, an element and a per-CPU
 * value, each a cache miss). fc_fold adds them to map_stats when the slot
 * is refilled; the daemon's reads add what is still in slots
 * (Datapath.mapping_counters, pinned.read_mapping_stats: the cache is
 * pinned with the programs for that). A slot counts toward a map_stats
 * element only if filled under a generation >= the element's `since`, so a
 * reused mapping id never inherits an older mapping's packets.
 *
 * Invalidation: flow_gen[0] is a generation the daemon increments after every
 * write or delete of map_cache4/6, of the locator sets they name, of
 * local_eid4/6, and after every delete from accepted_iids
 * (lispctl.datapath.Datapath._map_cache_changed: single
 * mappings, bulk loads and removals, expiry, flush, local EIDs). A slot is valid
 * only if it carries the current generation. The program reads the generation
 * BEFORE the trie and stores the slot with that value: a trie result older
 * than the latest write therefore always carries an older generation than the
 * bump that followed that write, and is a miss from then on. Relies on the
 * generation load not being reordered after the trie loads (x86-64: loads are
 * not reordered with other loads; the trie lookup is a helper call after it).
 * Generation 0 is never current (the daemon starts at 1), so a zeroed slot is
 * a miss.
 *
 * Memory: LISP_FC_SETS x 280 bytes per possible CPU (1,120 KiB per CPU at 4,096 sets).
 * Pinned with the programs that use it (prog-<key>/flow_cache), not with
 * the maps: a new build starts with an empty cache of its own, and the old
 * one stays pinned for the counts in its slots (lispctl.datapath.prebuilt,
 * RETIRED_FLOW_CACHE) until the daemon flushes.
 */
#ifndef LISP_FLOWCACHE_H
#define LISP_FLOWCACHE_H

#ifndef LISP_FC_SETS
#define LISP_FC_SETS 4096       /* power of two; 2 ways each */
#endif
_Static_assert((LISP_FC_SETS & (LISP_FC_SETS - 1)) == 0, "LISP_FC_SETS must be a power of two");

/* Flow cache only: the destination is one of our EIDs (local_eid4/6), so the
 * ITR leaves the packet alone. Never a map-cache action (RFC 9301: 0-5). */
#define LISP_ACT_LOCAL 0xff

struct lisp_fc_slot {
    __u64 gen;                 /* flow_gen when filled; 0 / stale: empty */
    __u32 iid;
    __u8 family;
    __u8 has_loc;              /* loc: the locator every flow to dst takes (locset.fixed) */
    __u8 has_lsb;              /* lsb: the source-site LSBs of the last source seen, src */
    __u8 iid_ok;               /* ETR: iid was in accepted_iids under this generation */
    __u8 dst[16];              /* IPv4 in the first 4 bytes, the rest 0 */
    struct lisp_mapping m;     /* action LISP_ACT_LOCAL: a local EID */
    struct lisp_locator loc;
    __u8 src[16];              /* like dst */
    __u64 lsb;                 /* source_lsb() of (iid, src): LISP_LSB_NONE for no EID of ours */
    __u64 packets;             /* encapsulated with m.id since the fill, not yet in map_stats */
    __u64 bytes;
    /* The ITRs' next hop toward loc (has_loc): lisp_nexthop.h's answer
     * kept with the destination, valid as a next-hop slot is (nh_gen's
     * current generation, younger than LISP_NH_MAX_AGE jiffies) for packets
     * from device nh_in no longer than nh_mtu. A hit compares these instead
     * of hashing and matching the next-hop key (~30 ns of a ~240 ns
     * encapsulation). nh_gen 0: none (fc_keep_locator clears it). */
    __u32 nh_gen;
    __u32 nh_filled;
    __u32 nh_in;
    __u32 nh_out;
    __u8 nh_smac[ETH_ALEN];
    __u8 nh_dmac[ETH_ALEN];
    __u16 nh_mtu;
    __u8 nh_outf;              /* nh_out's out_devs bits (their writes bump nh_gen) */
    __u8 nh_pad;
};

/* Two ways per set: a direct-mapped table of the same size lost ~12% of
 * 1,024 flows to collisions (each a trie walk); with two ways and 8,192
 * slots fewer than 1% of them share a set with two others. */
struct lisp_fc_set {
    struct lisp_fc_slot way[2];
    __u32 next;                /* the way the next fill takes (FIFO) */
    __u32 pad;
};

BPF_TABLE_PINNED("array", __u32, __u64, flow_gen, 1, LISP_PIN(flow_gen));
BPF_PERCPU_ARRAY(flow_cache, struct lisp_fc_set, LISP_FC_SETS);

static __always_inline __u32 fc_hash(const struct lisp_flow *f, __u32 iid)
{
    __u32 w[4];
    __builtin_memcpy(w, f->dst, 16);
    __u32 h = iid * 0x9E3779B1u;
    h = (h ^ w[0]) * 0x85EBCA77u;
    if (f->family == 6) {
        h = (h ^ w[1]) * 0xC2B2AE3Du;
        h = (h ^ w[2]) * 0x27D4EB2Fu;
        h = (h ^ w[3]) * 0x165667B1u;
    }
    return lisp_fmix(h) & (LISP_FC_SETS - 1);
}

/* Same flow: family, instance and all 16 address bytes (IPv4 flows have
 * zeros after the first 4: lisp_flow is zero-initialised and the slot is
 * filled from it). */
static __always_inline int fc_match(const struct lisp_fc_slot *s, const struct lisp_flow *f, __u32 iid, __u64 gen)
{
    __u64 a[2], b[2];
    __builtin_memcpy(a, s->dst, 16);
    __builtin_memcpy(b, f->dst, 16);
    return s->gen == gen && s->family == f->family && s->iid == iid && a[0] == b[0] && a[1] == b[1];
}

/* The slot for (iid, dst), or 0. *set, *gen and *ref are for fc_fill;
 * *ref names the slot returned (set index << 1 | way: what the tc ITR's
 * tail call carries instead of a pointer), or LISP_FC_NOREF. */
static __always_inline struct lisp_fc_slot *fc_get(const struct lisp_flow *f, __u32 iid,
                                                   struct lisp_fc_set **set, __u64 *gen, __u32 *ref)
{
    __u32 zero = 0;
    __u64 *g = flow_gen.lookup(&zero);
    *set = 0;
    *gen = 0;
    *ref = LISP_FC_NOREF;
    if (!g)
        return 0;
    *gen = *(volatile __u64 *)g;
    if (!*gen)
        return 0;               /* generation 0: the cache is off */
    __u32 idx = fc_hash(f, iid);
    struct lisp_fc_set *s = flow_cache.lookup(&idx);
    if (!s)
        return 0;
    *set = s;
    *ref = idx << 1;
    if (fc_match(&s->way[0], f, iid, *gen))
        return &s->way[0];
    *ref = idx << 1 | 1;
    if (fc_match(&s->way[1], f, iid, *gen))
        return &s->way[1];
    return 0;
}

/* The packets a slot counted (lisp_itr_encap, lisp_itr_xdp) go to its
 * mapping's map_stats before the slot is reused: the only time a
 * per-mapping counter is looked up while the flow cache is on. */
static __always_inline void fc_fold(struct lisp_fc_slot *slot)
{
    __u64 packets = slot->packets;
    if (!packets)
        return;
    __u32 id = slot->m.id;
    struct lisp_stats *st = map_stats.lookup(&id);
    if (st && slot->gen >= st->since) {
        st->packets += packets;
        st->bytes += slot->bytes;
    }
    slot->packets = 0;
    slot->bytes = 0;
}

/* Remember what the lookups answered (mapping id and action, or
 * LISP_ACT_LOCAL) under the generation read before them: in a stale way if
 * there is one, else the older fill. A trie miss is not cached. */
static __always_inline struct lisp_fc_slot *fc_fill(struct lisp_fc_set *s, const struct lisp_flow *f,
                                                    __u32 iid, __u64 gen, __u32 id, __u8 action, __u32 *ref)
{
    if (!s)
        return 0;
    __u32 w = s->way[0].gen != gen ? 0 : s->way[1].gen != gen ? 1 : s->next & 1;
    *ref = (*ref & ~1u) | w;
    s->next = w ^ 1;
    struct lisp_fc_slot *slot = w ? &s->way[1] : &s->way[0];
    fc_fold(slot);
    slot->gen = 0;              /* never a half-written slot that looks valid */
    slot->iid = iid;
    slot->family = f->family;
    slot->has_loc = 0;
    slot->has_lsb = 0;
    slot->iid_ok = 0;
    __builtin_memcpy(slot->dst, f->dst, 16);
    slot->m.id = id;
    slot->m.action = action;
    slot->gen = gen;
    return slot;
}

/* The locator set of a slot's mapping, read after the generation the slot
 * carries: when every flow takes the same locator, the slot keeps it, and
 * the next hits skip the locator set. */
static __always_inline void fc_keep_locator(struct lisp_fc_slot *slot, const struct lisp_locset *ls)
{
    __u32 i = ls->fixed;
    if (!slot || !i || i > LISP_MAX_LOCATORS || i > ls->count)
        return;
    slot->loc = ls->loc[(i - 1) & (LISP_MAX_LOCATORS - 1)];
    slot->nh_gen = 0;
    slot->has_loc = 1;
}

#endif
