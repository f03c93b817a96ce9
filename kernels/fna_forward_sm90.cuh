// Fused neighborhood attention forward (FNA) for Hopper (sm_90a only): warp-specialised and
// persistent, with warpgroup MMA (wgmma, CuTe SM90 GMMA atoms), f16/bf16 in, f32 accumulate.
// Same semantics, parameters, tiling and outputs as fna_forward.cuh (the SM80 kernel, which runs
// everywhere else), for 128-query tiles:
//
// - one CTA per SM (the grid is min(SMs, work items)); the CTAs walk the work items (head, Q
//   tile, batch; heads fastest): CTA b takes item b, then the next untaken one from a counter
//   in global memory (take_item) each time a Q buffer frees; the producer's first stager
//   publishes it to the others, to warp 0 and to the consumers through the buffer's "item"
//   mbarrier. H100 (harness .dev/h5, three rounds, outputs identical): 2-D anchor
//   0.511-0.517 -> 0.472-0.477 ms, 1-D 1.167-1.185 -> 1.136-1.156, 3-D 5.43-5.58 -> 5.20-5.48
//   against item = blockIdx.x + k gridDim.x;
// - 384 threads: a producer warpgroup and two consumer warpgroups. setmaxnreg gives the
//   producer kProducerRegs registers and the consumers kConsumerRegs;
// - the Q tile is split in two 64-query halves along `split_axis` (the kernel's second
//   argument; the host picks the axis whose halving shrinks a half's KV box most,
//   FnaParams::query_split_axis in src/backend/native/plan.rs); consumer h owns half h;
// - the producer gathers each item's Q tile with cp.async (two buffers; half h into rows
//   [64 h, 64 h + 64), with the half's own row order; signalled with cp.async.mbarrier.arrive)
//   and loads the KV tiles of the whole tile's KV box (a ring of kStages K/V buffers that runs
//   on across items) into K-major 128-byte-swizzled tiles: with TMA where the host could
//   describe K and V (`kv_tma`, the third argument; one thread issues each tile's boxes,
//   tma_load_pair in sm90_common.cuh, and the "full" mbarrier counts their bytes), else
//   gathered with cp.async by the whole warpgroup; the consumers hand a buffer back through
//   its "empty" mbarrier. So the next item's Q and first K/V tiles load under this item's last
//   tiles and epilogue;
// - consumers skip the KV tiles that miss their own half's KV box (2-D anchor: 25 of the 30
//   tiles of the 128-query tile's box are a half's); on the others S = Q K^T (SS wgmma), masked
//   online softmax in f32 on the accumulator fragment (window masks from a per-CTA table,
//   WindowMasks in sm90_common.cuh, looked up while S is computed; tiles inside the half's
//   inner box skip the mask; a row of O rescaled only when its max moves, kRescaleThresholdLog2),
//   O += P V (RS wgmma, P converted in
//   registers, V read through an MN-major view of its tile); the epilogue writes the LSE and O
//   (through the half's rows of the Q buffer, 16-byte stores), then frees the Q buffer;
// - with kProductMasks (entry points `_pm`, taken where plan::sm90_product_masks_fit says the
//   masks fit), the masks of partial tiles are one more k-step of S instead of lookups
//   (product_masks_sm90.cuh): the producer writes each item's bias blocks beside its Q tile,
//   under the same Q-buffer barriers.
//
// H100, bf16, head dim 128, 16 heads (kernel time, harness): 1-D 32768 tokens window 2048 332 ->
// 367 TFLOP/s against the previous two-CTAs-per-SM kernel, 2-D 128x128 window 31 138 -> 139,
// 3-D 16x44x80 window 8x16x24 152 -> 159. Warp specialisation alone (one CTA per item) was
// slower than two CTAs per SM (318 on 1-D); the persistent walk is what pays. FA3's
// intra-warpgroup overlap (S of tile t + 1 under the softmax of tile t) was 25% slower here.
// Halving the Q tile (ninth session; harness .dev/s9/h, same runs): 2-D 0.92-0.94 -> 0.85 ms,
// 3-D 8.72-8.76 -> 8.16, 2-D 256x256 window 63 8.05 -> 7.67, 1-D 1.50-1.53 -> 1.50 (one of 34
// KV tiles skipped), attention over 8192 keys 1.19 -> 1.21-1.24 (nothing to skip). Deriving the
// consumer's half from threadIdx.x made the Q descriptors per-thread values (R2UR before every
// wgmma, +8% instructions, 7-10% slower); cutlass::canonical_warp_group_idx() keeps them
// uniform. Four stages were 1-2% faster on the windows and 2-7% slower on attention; two 64-row
// Q tiles per buffer instead of one 128-row tile were 2-3% slower; a barrier of both consumers
// per item (the previous kernel's lock step) no faster.
// Eleventh session (harness .dev/h, H200 unless said; leave-one-out variants and clock64
// probes): the producer alone (consumers skipping every tile) took 60-70% of the kernel's time
// and the consumers alone (no loads) 55-65%; masked tiles' softmax was twice an unmasked one's.
// The mask table (WindowMasks) took the 2-D anchor 0.865 -> 0.801 ms and 3-D 8.38 -> 7.71;
// heads fastest 0.797 -> 0.750 and 7.70 -> 7.07 (H100), 1-D and attention the same; TMA for
// K/V 0.749 -> 0.586 ms (2-D), 7.19 -> 5.89 (3-D), 1.484 -> 1.321 (1-D), attention over 8192
// keys 1.254 -> 1.088, outputs bit-identical. Four stages gained nothing with either loader.
// Twelfth session (harness .dev/h2, H100, this kernel against variants, two rounds each): the
// 2-D anchor runs 0.51 ms without masks (0.59-0.60 with), 0.48 without masks and rescales;
// FA3's intra-warpgroup overlap (now without the serialisation ptxas reports when a path it
// cannot rule out reads an accumulator in flight) 0.63-0.65 ms at 184, 224 or 232 consumer
// registers; Q in registers (RS product, 56 / 224 registers) 0.62; FA3's ping-pong of the two
// consumers' S products (named barriers) 0.62-0.63; 56 / 224 registers alone 0.60. None kept.
// Fourteenth session (harness .dev/h3, H100, two rounds each): the consumers bound the 1-D and
// 2-D anchors (a producer issuing no loads left them as fast: 2-D 0.574 against 0.577-0.582 ms);
// ncu's stall samples put 40% of a consumer's step in the softmax and 17% in the mask lookups
// under S. 128-key KV tiles (the wide form: kBlockN = 128, two stages; half the steps, so half
// the per-step cost) ran 1-D 1.199-1.202 ms against 1.279-1.288, attention over 8192 keys
// 0.956-0.967 against 1.050-1.055, 2-D 256x256 window 63 6.30-6.33 against 6.34-6.48; the 2-D
// anchor 0.588-0.589 against 0.578-0.582 (its halves' KV boxes take 15 tiles of 128 keys, 1920
// keys, against 25 of 64) and 3-D about the same. src/backend/native/plan.rs picks them for
// 1-D windows and attention of at least 256 keys.
#pragma once

#include <cutlass/arch/reg_reconfig.h>

#include "product_masks_sm90.cuh"
#include "sm90_common.cuh"

namespace natten_native {

template <typename Element_, int kHeadDim_, int kBlockN_ = 64, bool kProductMasks_ = false>
struct FnaSm90Traits {
    using Element = Element_;
    static constexpr int kHeadDim = kHeadDim_;
    // Window masks as a product (ProductMasks below) rather than looked up (WindowMasksOf).
    static constexpr bool kProductMasks = kProductMasks_;
    static_assert(!kProductMasks || kBlockN_ == 64, "product masks: 64-key tiles (shared memory)");
    static constexpr int kBlockM = 64;   // queries of a consumer warpgroup: half a 128-query Q tile
    static constexpr int kBlockN = kBlockN_;  // keys of a KV tile: 64, or 128 (the wide form)
    // The K/V ring: three stages of 64-key tiles, two of 128-key ones (shared memory).
    static constexpr int kStages = kBlockN == 64 ? 3 : 2;
    using Masks = WindowMasksOf<kBlockN>;
    static constexpr int kProducerThreads = 128;
    static constexpr int kConsumerThreads = 256;
    static constexpr int kNThreads = kProducerThreads + kConsumerThreads;
    // 128 x 112 + 256 x 184 (192 with 128-key tiles: 64 more S registers) <= 384 x 168
    // registers: one CTA per SM. The producer spills below 112 (104 before it staged the two
    // halves of the Q tile apart); with 128-key tiles, 96 / 200 spilled more than 112 / 192.
    static constexpr int kProducerRegs = 112;
    // The producer threads that stage each item's Q tile (and bias blocks): warps 1-3 where
    // warp 0 issues the K/V tiles with TMA, all four where they gather K/V with cp.async.
    static __device__ __forceinline__ int q_stagers(bool kv_tma) {
        return kv_tma ? kProducerThreads - 32 : kProducerThreads;
    }
    static constexpr int kConsumerRegs = kBlockN == 64 ? 184 : 192;
    static_assert(kProducerThreads * kProducerRegs + kConsumerThreads * kConsumerRegs <= kNThreads * 168);
    static_assert(kHeadDim % 64 == 0, "128-byte swizzled rows");

    // One consumer warpgroup's products: S = Q K^T, O += P V.
    using MmaS = typename WarpgroupMmasSm90<Element, kHeadDim, kBlockN>::MmaS;
    using MmaO = typename WarpgroupMmasSm90<Element, kHeadDim, kBlockN>::MmaAcc;

    using SmemAtom = GMMA::Layout_K_SW128_Atom<Element>;  // 8 rows x 64 columns
    // A Q buffer: the whole 128-query tile; consumer h reads rows [64 h, 64 h + 64).
    using SmemLayoutQ = decltype(tile_to_shape(SmemAtom{}, Shape<Int<2 * kBlockM>, Int<kHeadDim>>{}));
    // The K and V rings, gathered by the producer warpgroup (threads 0..127); V^T is the
    // MN-major B operand of O += P V.
    using Gather = GatheredTilesSm90<Element, kHeadDim, kBlockN, kStages, kProducerThreads>;
    using SmemLayoutKV = typename Gather::SmemLayout;
    using SmemLayoutVt = typename Gather::SmemLayoutMN;

    static constexpr int kRowsPerThread = 2;
    static constexpr int kQBytes = 2 * kBlockM * kHeadDim * 2;  // one Q buffer: both halves
    static constexpr int kKVBytes = kStages * kBlockN * kHeadDim * 2;
    // Two Q buffers, the K ring, the V ring, then the token offset of each KV tile row (4 bytes
    // each), the mbarriers (Q full x2, Q empty x2, K/V full x kStages, K/V empty x kStages, item
    // x2), the work item of each Q buffer (2 ints) and the window-mask table (Masks); +1024 to
    // align the tiles to the swizzle's 1024-byte period.
    static constexpr int kProductMaskBytes = kProductMasks ? ProductMasks::kBytes : 0;
    static constexpr int kSmemBytes = 2 * kQBytes + 2 * kKVBytes + kProductMaskBytes + kBlockN * 4 +
                                      (6 + 2 * kStages) * 8 + 2 * 4 + Masks::kBytes + 1024;
};

// How far (log2 units of the scaled scores) a row's max may rise above the max that its
// exponentials are taken against before that max moves and O is rescaled: P then stays below
// 2^8, which f32 sums and 16-bit P hold with their full relative precision, and the result is
// the same softmax (numerator and denominator share the stale max; FlashAttention-4 does the
// same on Blackwell). H100, harness .dev/h2, two rounds each: 1-D anchor 1.336-1.345 ->
// 1.301-1.302 ms, FMHA over 8192 keys 1.092-1.104 -> 1.060-1.067, 2-D anchor 0.592-0.595 ->
// 0.595-0.599 (its softmax is bound by the masks: without them it ran 0.51 ms).
constexpr float kRescaleThresholdLog2 = 8.f;

// Masks the scores of a KV tile (unless the tile is full) with each row's `keep` bits
// (window_keep_sm90), updates the running row max / sum and turns the scores into P
// (unnormalised, base-2 exponentials against the row max in use). A row's max in use moves
// only when the tile's max exceeds it by more than kRescaleThresholdLog2 (`rise`: that
// threshold in raw score units), and then to the exact max; `correction` is the factor the row
// of O must be scaled by (1 where the max stayed) and `grew_any` whether any row of the warp
// moved. Each row decides alone, so its exponentials do not wait for the warp's vote (a first
// form that moved every row of the warp once any moved, after the vote, gained nothing).
template <int kRows, typename Scores>
__device__ __forceinline__ void online_softmax_sm90(Scores& scores, bool full, const uint32_t (&keep)[kRows],
                                                   const FnaParams& p, float rise, float (&row_max)[kRows],
                                                   float (&row_sum)[kRows], float (&correction)[kRows],
                                                   bool& grew_any) {
    if (!full) {
#pragma unroll
        for (int r = 0; r < kRows; ++r) apply_keep_sm90(scores, r, keep[r]);
    }
    bool grew = false;
#pragma unroll
    for (int r = 0; r < kRows; ++r) {
        float m = -INFINITY;
#pragma unroll
        for (int c = 0; c < size<1>(scores); ++c) m = fmaxf(m, scores(r, c));
        const float tile_max = quad_max(m);
        const bool moves = tile_max > row_max[r] + rise;  // also a first finite max (-inf + rise = -inf)
        const float m_new = moves ? tile_max : row_max[r];
        const float m_scaled = m_new == -INFINITY ? 0.f : m_new * p.scale_log2;
        correction[r] = moves ? exp2_approx(row_max[r] * p.scale_log2 - m_scaled) : 1.f;
        row_sum[r] *= correction[r];
        row_max[r] = m_new;
        grew |= moves;
#pragma unroll
        for (int c = 0; c < size<1>(scores); ++c) {
            scores(r, c) = exp2_approx(scores(r, c) * p.scale_log2 - m_scaled);
            row_sum[r] += scores(r, c);
        }
    }
    grew_any = __any_sync(0xffffffffu, grew);
}

// The work items of the persistent walk: (head, Q tile incl. dilation group x, batch), numbered
// with the head fastest, then x; `ctas_x` is the number of x. CTA b takes item b first, then
// the next untaken item in that order (take_item). Heads fastest, the CTAs at work at once read
// the same few token rows (a row holds every head) rather than one head's rows of the whole
// grid: 5-8% faster on the 2-D and 3-D anchors than x fastest (H100 and H200, harness), 1-D the
// same.
struct WorkItem {
    int x, head, batch;
};

__device__ __forceinline__ int forward_items(const FnaParams& p, int& ctas_x) {
    ctas_x = p.q_tiles[0] * p.q_tiles[1] * p.q_tiles[2] * p.dilation[0] * p.dilation[1] * p.dilation[2];
    return ctas_x * p.heads * p.batch;
}

// Work item `item`'s head and batch, and its Q tile in `qt`; false for an empty tile (no
// queries: skipped by the producer and the consumers alike).
__device__ __forceinline__ bool work_item(const FnaParams& p, int ctas_x, int item, WorkItem& w, TileBox& qt) {
    w = {(item / p.heads) % ctas_x, item % p.heads, item / (ctas_x * p.heads)};
    return tile_of(p, w.x, p.len, p.q_tile_log2, p.q_tiles, qt);
}

// The next work item of CTA's walk: item blockIdx.x first (`first`), then items taken in turn
// from p.item_counter (after the first gridDim.x), skipping empty tiles; -1 once none is left.
// Taken as the CTA's Q buffer frees rather than fixed as b, b + gridDim.x, ...: the items of a
// window problem differ in cost (a Q tile at a border walks fewer KV tiles), and a static walk
// left the CTAs with the most work 8% above the mean on the 2-D anchor (2048 items over 132
// CTAs; a taken walk about 2%). The CTA that takes -1 last zeroes the counter for the next
// launch (each CTA takes -1 once).
__device__ __forceinline__ int take_item(const FnaParams& p, int ctas_x, int n_items, bool first) {
    WorkItem w;
    TileBox qt;
    if (first && (int)blockIdx.x < n_items && work_item(p, ctas_x, blockIdx.x, w, qt)) return blockIdx.x;
    for (;;) {
        const int item = gridDim.x + (int)atomicAdd(p.item_counter, 1u);
        if (item >= n_items) break;
        if (work_item(p, ctas_x, item, w, qt)) return item;
    }
    __threadfence();
    if (atomicAdd(p.item_counter + 1, 1u) == gridDim.x - 1) {
        p.item_counter[0] = 0;
        p.item_counter[1] = 0;
    }
    return -1;
}

template <typename Traits>
__device__ void fna_forward_sm90(const FnaParams& p, int split_axis, bool kv_tma, const TensorMapPair& maps,
                                 char* smem_unaligned) {
    using Element = typename Traits::Element;
    constexpr int kBlockM = Traits::kBlockM;
    constexpr int kBlockN = Traits::kBlockN;
    constexpr int kHeadDim = Traits::kHeadDim;
    constexpr int kStages = Traits::kStages;
    constexpr int kRows = Traits::kRowsPerThread;

    char* smem_raw = align_to_swizzle_period(smem_unaligned);
    // Product masks (Traits::kProductMasks): the bias blocks, then the one-hot block.
    char* product_masks = smem_raw + 2 * Traits::kQBytes + 2 * Traits::kKVBytes;
    char* one_hot = product_masks + ProductMasks::kBiasBytes;
    char* geometry = product_masks + Traits::kProductMaskBytes;
    int* kv_tok_off = reinterpret_cast<int*>(geometry);
    uint64_t* bar_qfull = reinterpret_cast<uint64_t*>(geometry + kBlockN * 4);
    uint64_t* bar_qempty = bar_qfull + 2;
    uint64_t* bar_full = bar_qfull + 4;
    uint64_t* bar_empty = bar_full + kStages;
    // Q buffer b's work item (item_of[b], -1: none left), published through bar_item[b].
    uint64_t* bar_item = bar_empty + kStages;
    int* item_of = reinterpret_cast<int*>(bar_item + 2);
    using MaskWord = typename Traits::Masks::Word;
    MaskWord* window_masks = reinterpret_cast<MaskWord*>(item_of + 2);
    if (threadIdx.x == 0) {
        // Two rings: the Q buffers and the K/V stages.
        // The producer's threads fill a Q buffer (cp.async) and, with product masks, its bias
        // blocks (their arrivals after the stores).
        init_ring<2>(bar_qfull, bar_qempty, (Traits::kProductMasks ? 2 : 1) * Traits::q_stagers(kv_tma),
                     Traits::kConsumerThreads);
        init_ring<kStages>(bar_full, bar_empty, kv_tma ? 1 : Traits::kProducerThreads, Traits::kConsumerThreads);
        // The items: one arrival, by the stager that takes them.
        cutlass::arch::ClusterBarrier::init(bar_item, 1);
        cutlass::arch::ClusterBarrier::init(bar_item + 1, 1);
        cutlass::arch::fence_barrier_init();
    }
    if (threadIdx.x < kBlockN) {
        kv_tok_off[threadIdx.x] = tile_row_offset(p, p.kv_tile_log2, threadIdx.x);
    }
    Traits::Masks::build(window_masks, p.kv_tile_log2, threadIdx.x, Traits::kNThreads);
    if constexpr (Traits::kProductMasks) {
        ProductMasks::build_one_hot<Element>(one_hot, p.kv_tile_log2, threadIdx.x, Traits::kNThreads);
        cutlass::arch::fence_view_async_shared();  // to the tensor cores
    }
    __syncthreads();
    int ctas_x;
    const int n_items = forward_items(p, ctas_x);
    const int group_heads = p.heads / p.heads_kv;
    // The extents of a half of the Q tile (the tile's, halved on split_axis).
    int half_log2[3];
#pragma unroll
    for (int a = 0; a < 3; ++a) half_log2[a] = p.q_tile_log2[a] - (a == split_axis);
    // Half h of Q buffer b: rows [64 h, 64 h + 64) of the buffer's 128-row tile (one tile rather
    // than two 64-row ones: 2-3% faster, dense attention most).
    auto q_half = [&](int b, int h) {
        Tensor buffer = make_tensor(make_smem_ptr(reinterpret_cast<Element*>(smem_raw + b * Traits::kQBytes)),
                                    typename Traits::SmemLayoutQ{});
        return local_tile(buffer, Shape<Int<kBlockM>, Int<kHeadDim>>{}, make_coord(h, 0));
    };

    Element* smem_k = reinterpret_cast<Element*>(smem_raw + 2 * Traits::kQBytes);
    Element* smem_v = reinterpret_cast<Element*>(smem_raw + 2 * Traits::kQBytes + Traits::kKVBytes);
    Tensor sK = make_tensor(make_smem_ptr(smem_k), typename Traits::SmemLayoutKV{});
    Tensor sV = make_tensor(make_smem_ptr(smem_v), typename Traits::SmemLayoutKV{});
    Tensor sVt = make_tensor(make_smem_ptr(smem_v), typename Traits::SmemLayoutVt{});

    if (threadIdx.x < Traits::kProducerThreads) {
        // ---------------- producer warpgroup ----------------
        cutlass::arch::warpgroup_reg_dealloc<Traits::kProducerRegs>();
        int stage = 0, j = 0;
        uint32_t phase = 0;
        int loaded = 0;  // K/V tiles loaded so far (all items)
        // With TMA for K/V, warp 0 issues the K/V tiles alone and warps 1-3 stage each item's Q
        // tile and bias blocks, so the next item's Q does not wait behind warp 0's waits on the
        // K/V ring; with the cp.async gather all four warps do both.
        const bool q_stager = !kv_tma || threadIdx.x >= 32;
        const int stagers = Traits::q_stagers(kv_tma);
        const int stager = kv_tma ? threadIdx.x - 32 : threadIdx.x;
        for (;; ++j) {
            const int qb = j & 1;
            // Stager 0 takes Q buffer qb's item once the buffer is free and publishes it to the
            // other stagers (named barrier 3), the consumers and warp 0 (bar_item).
            if (q_stager) {
                if (j >= 2) cutlass::arch::ClusterBarrier::wait(bar_qempty + qb, ((j >> 1) - 1) & 1);
                if (stager == 0) {
                    item_of[qb] = take_item(p, ctas_x, n_items, j == 0);
                    cutlass::arch::ClusterBarrier::arrive(bar_item + qb);
                }
                named_bar_sync(3, stagers);
            } else {
                cutlass::arch::ClusterBarrier::wait(bar_item + qb, (j >> 1) & 1);
            }
            const int item = item_of[qb];
            if (item < 0) break;
            WorkItem w;
            TileBox qt;
            work_item(p, ctas_x, item, w, qt);
            const int head = w.head, batch = w.batch;
            const KvBox box = kv_box_of(p, qt);
            const HeadRows rows = head_rows(p, batch, head, head / group_heads);
            const Element* q_base = reinterpret_cast<const Element*>(p.q) + rows.q;
            const Element* k_base = reinterpret_cast<const Element*>(p.k) + rows.k;
            const Element* v_base = reinterpret_cast<const Element*>(p.v) + rows.v;
            if (q_stager) {
#pragma unroll 1
                for (int h = 0; h < 2; ++h) {
                    TileBox half;
                    if (!half_of(qt, half_log2, split_axis, h, half)) continue;
                    Tensor sQ = q_half(qb, h);
                    if (kv_tma) {
                        stage_tile<kBlockM, kHeadDim, Traits::kProducerThreads - 32>(
                            sQ, q_base, rows.q_stride, p, half_log2, half.first, half.end, half.group, p.head_dim,
                            stager);
                    } else {
                        stage_tile<kBlockM, kHeadDim, Traits::kProducerThreads>(
                            sQ, q_base, rows.q_stride, p, half_log2, half.first, half.end, half.group, p.head_dim,
                            stager);
                    }
                }
                cutlass::arch::cpasync_barrier_arrive_noinc(bar_qfull + qb);
                if constexpr (Traits::kProductMasks) {
                    // Row r % 64 of half r / 64's bias blocks for this item, r = stager + k stagers.
                    for (int r = stager; r < 2 * kBlockM; r += stagers) {
                        const int bh = r / kBlockM, row = r % kBlockM;
                        TileBox bhalf;
                        if (!half_of(qt, half_log2, split_axis, bh, bhalf)) continue;
                        int i[3], lo[3], hi[3];
                        tile_coords(row, half_log2, bhalf.first, i);
                        query_window(p, i, bhalf.glen, bhalf.end, lo, hi);
                        char* half_blocks = product_masks + (qb * 2 + bh) * ProductMasks::kHalfBytes;
                        ProductMasks::write_bias_row<Element>(half_blocks, row, lo, hi, box, p.kv_tile_log2);
                    }
                    cutlass::arch::fence_view_async_shared();  // to the tensor cores
                    cutlass::arch::ClusterBarrier::arrive(bar_qfull + qb);
                }
            }
            if (kv_tma && threadIdx.x >= 32) continue;  // warp 0 alone issues the K/V tiles
            const int n_tiles = box.tiles[0] * box.tiles[1] * box.tiles[2];
            int origin[3];
            walk_origin(0, box.lo, box.tiles, p.kv_tile_log2, origin);
            for (int t = 0; t < n_tiles; ++t, ++loaded) {
                if (kv_tma) {
                    // One thread of warp 0 (the only warp here) loads the tile.
                    if (loaded >= kStages) cutlass::arch::ClusterBarrier::wait(bar_empty + stage, phase);
                    if (threadIdx.x == 0) {
                        tma_load_pair<Element, kBlockN, kHeadDim>(
                            maps, p, smem_k + stage * kBlockN * kHeadDim, smem_v + stage * kBlockN * kHeadDim,
                            bar_full + stage, origin, qt.group, batch, head / group_heads);
                    }
                } else {
                    if (loaded >= kStages) cutlass::arch::ClusterBarrier::wait(bar_empty + stage, phase);
                    Tensor kn = sK(_, _, stage);
                    Tensor vn = sV(_, _, stage);
                    stage_kv<Traits>(kn, k_base, (int)rows.k_stride, kv_tok_off, p, origin, box.hi, qt.group,
                                     p.head_dim);
                    stage_kv<Traits>(vn, v_base, (int)rows.v_stride, kv_tok_off, p, origin, box.hi, qt.group,
                                     p.head_dim_v);
                    cutlass::arch::cpasync_barrier_arrive_noinc(bar_full + stage);
                }
                next_kv_origin(p, box, origin);
                if (++stage == kStages) {
                    stage = 0;
                    if (loaded >= kStages) phase ^= 1;
                }
            }
        }
        cute::cp_async_wait<0>();
        return;
    }

    // ---------------- consumer warpgroups ----------------
    cutlass::arch::warpgroup_reg_alloc<Traits::kConsumerRegs>();
    // The consumer's half of each Q tile; warp-uniform to the compiler (a shuffle from lane 0),
    // so the Q descriptors stay in uniform registers.
    const int h = cutlass::canonical_warp_group_idx() - 1;
    const int lt = threadIdx.x % 128;     // thread of the warpgroup
    const MaskWord* masks = Traits::Masks::of_thread(window_masks);
    const float rise = kRescaleThresholdLog2 / p.scale_log2;  // the threshold in raw score units
    typename Traits::MmaS mma_s;
    typename Traits::MmaO mma_o;
    auto thr_s = mma_s.get_thread_slice(lt);
    auto thr_o = mma_o.get_thread_slice(lt);
    Tensor sQ0 = q_half(0, h);
    Tensor tSrQ0 = thr_s.partition_fragment_A(sQ0);
    Tensor sQ1 = q_half(1, h);
    Tensor tSrQ1 = thr_s.partition_fragment_A(sQ1);
    Tensor tSrK = thr_s.partition_fragment_B(sK);
    const uint64_t one_hot_desc = ProductMasks::one_hot_desc(one_hot);
    Tensor tOrV = thr_o.partition_fragment_B(sVt);
    Tensor acc_o = partition_fragment_C(mma_o, Shape<Int<kBlockM>, Int<kHeadDim>>{});
    Tensor o_rows = make_tensor(acc_o.data(), rowcol_sm90(acc_o.layout()));

    int stage = 0;
    uint32_t phase = 0;
    for (int j = 0;; ++j) {
        const int qb = j & 1;
        const uint32_t qphase = (j >> 1) & 1;
        cutlass::arch::ClusterBarrier::wait(bar_item + qb, qphase);
        const int item = item_of[qb];
        if (item < 0) break;
        WorkItem w;
        TileBox qt;
        work_item(p, ctas_x, item, w, qt);
        const int head = w.head, batch = w.batch;
        const KvBox box = kv_box_of(p, qt);  // the walk: the whole tile's KV box
        TileBox mt;                          // my half
        const bool valid = half_of(qt, half_log2, split_axis, h, mt);
        // My half's KV box differs from the whole tile's on split_axis only: a KV tile of the
        // walk reaches it where it does on that axis, and its inner box gives the full tiles.
        const KvBox mb = kv_box_of(p, mt);
        auto on_split_axis = [&](const int (&v)[3]) {
            return split_axis == 0 ? v[0] : split_axis == 1 ? v[1] : v[2];
        };
        const int split_lo = on_split_axis(mb.lo) - (1 << on_split_axis(p.kv_tile_log2));
        const int split_hi = on_split_axis(mb.hi);
        // My half's bias blocks for this item (product masks).
        const uint32_t half_blocks =
            cute::cast_smem_ptr_to_uint(product_masks + (qb * 2 + h) * ProductMasks::kHalfBytes);
        const int n_tiles = box.tiles[0] * box.tiles[1] * box.tiles[2];

        float row_max[kRows], row_sum[kRows], correction[kRows];
        int win_lo[kRows][3], win_hi[kRows][3];
#pragma unroll
        for (int r = 0; r < kRows; ++r) {
            row_max[r] = -INFINITY;
            row_sum[r] = 0.f;
            if constexpr (!Traits::kProductMasks) {
                int i[3];
                tile_coords(wg_acc_row(lt, r), half_log2, mt.first, i);
                query_window(p, i, mt.glen, mt.end, win_lo[r], win_hi[r]);
            }
        }
        auto rescale_o = [&]() {
#pragma unroll
            for (int r = 0; r < kRows; ++r) {
#pragma unroll
                for (int c = 0; c < size<1>(o_rows); ++c) o_rows(r, c) *= correction[r];
            }
        };
        auto advance = [&]() {
            if (++stage == kStages) {
                stage = 0;
                phase ^= 1;
            }
        };
        int origin[3];
        walk_origin(0, box.lo, box.tiles, p.kv_tile_log2, origin);
        clear(acc_o);
        cutlass::arch::ClusterBarrier::wait(bar_qfull + qb, qphase);
        // The products read the Q fragment (descriptors) of this item's Q buffer.
        auto body = [&](auto& tSrQ) {
            for (int t = 0; t < n_tiles; ++t) {
                // Does the KV tile reach my half's KV box? Full: no padding query, and the tile
                // inside my half's inner box (every key seen by every query).
                const int o = on_split_axis(origin);
                const bool active = valid && split_lo < o && o < split_hi;
                bool full = mt.no_padding;
#pragma unroll
                for (int a = 0; a < 3; ++a) {
                    full &= origin[a] >= mb.inner_lo[a] && origin[a] + (1 << p.kv_tile_log2[a]) <= mb.inner_hi[a];
                }
                // Waited on even when skipped: the "empty" arrival must follow this fill.
                cutlass::arch::ClusterBarrier::wait(bar_full + stage, phase);
                if (active) {
                    cutlass::arch::fence_view_async_shared();  // the cp.async writes, to the tensor cores
                    Tensor acc_s = partition_fragment_C(mma_s, Shape<Int<kBlockM>, Int<kBlockN>>{});
                    wgmma_gemm<true, -1>(mma_s, tSrQ, tSrK(_, _, _, stage), acc_s);
                    uint32_t keep[kRows];
                    if constexpr (Traits::kProductMasks) {
                        // The masks' k-step, on partial tiles.
                        if (!full) {
                            const uint64_t bias = ProductMasks::bias_desc(half_blocks, origin, box, p.kv_tile_log2);
                            ProductMasks::issue<Element>(bias, one_hot_desc, acc_s);
                        }
#pragma unroll
                        for (int r = 0; r < kRows; ++r) keep[r] = 0xffffffffu;
                    } else {
                        // The rows' window masks, while S is computed.
#pragma unroll
                        for (int r = 0; r < kRows; ++r) {
                            keep[r] = full ? 0xffffffffu
                                           : window_keep_sm90<kBlockN>(win_lo[r], win_hi[r], masks, p.kv_tile_log2,
                                                                       origin);
                        }
                    }
                    warpgroup_wait<0>();
                    warpgroup_fence_operand(acc_s);
                    Tensor scores = make_tensor(acc_s.data(), rowcol_sm90(acc_s.layout()));
                    bool grew;
                    online_softmax_sm90<kRows>(scores, full || Traits::kProductMasks, keep, p, rise, row_max, row_sum,
                                               correction, grew);
                    if (grew) rescale_o();
                    Tensor p_regs = convert_to<Element>(acc_s);
                    Tensor tOrP = make_tensor(p_regs.data(), acc_as_a_operand_sm90(p_regs.layout()));
                    wgmma_gemm<false, 0>(mma_o, tOrP, tOrV(_, _, _, stage), acc_o);
                }
                cutlass::arch::ClusterBarrier::arrive(bar_empty + stage);  // the stage goes back
                next_kv_origin(p, box, origin);
                advance();
            }
        };
        if (qb == 0) body(tSrQ0); else body(tSrQ1);

        // Epilogue: normalise, LSE, O through my half of this item's Q buffer to 16-byte stores;
        // then the buffer goes back to the producer (both consumers arrive, valid half or not).
        if (valid) {
            Tensor sQ = q_half(qb, h);
#pragma unroll
            for (int r = 0; r < kRows; ++r) {
                const float sum = quad_sum(row_sum[r]);
                const float inv = sum > 0.f ? 1.f / sum : 0.f;
#pragma unroll
                for (int c = 0; c < size<1>(o_rows); ++c) o_rows(r, c) *= inv;
                int i[3];
                tile_coords(wg_acc_row(lt, r), half_log2, mt.first, i);
                if (lt % 4 == 0 && i[0] < mt.end[0] && i[1] < mt.end[1] && i[2] < mt.end[2]) {
                    const long long token = token_of(p, i, mt.group);
                    p.lse[((long long)batch * p.tokens + token) * p.heads + head] =
                        sum > 0.f ? row_max[r] * p.scale + __logf(sum) : -INFINITY;
                }
            }
            bar_sync_wg(1 + h);  // my warpgroup is done reading my half of the Q buffer
            for_each_acc_pair(o_rows, lt, [&](int r, int c, int row, int col) {
                store_pair(sQ(row, col), o_rows(r, c), o_rows(r, c + 1));
            });
            bar_sync_wg(1 + h);
            const HeadRows rows = head_rows(p, batch, head, head / group_heads);
            Element* out_base = reinterpret_cast<Element*>(p.out) + rows.o;
            constexpr int kChunks = kHeadDim / 8;
            for (int idx = lt; idx < kBlockM * kChunks; idx += 128) {
                const int r = idx / kChunks;
                const int c = (idx % kChunks) * 8;
                int i[3];
                tile_coords(r, half_log2, mt.first, i);
                if (i[0] < mt.end[0] && i[1] < mt.end[1] && i[2] < mt.end[2] && c < p.head_dim_v) {
                    *reinterpret_cast<uint4*>(out_base + (long long)token_of(p, i, mt.group) * rows.o_stride + c) =
                        *reinterpret_cast<const uint4*>(&sQ(r, c));
                }
            }
        }
        cutlass::arch::ClusterBarrier::arrive(bar_qempty + qb);
    }
}

}  // namespace natten_native

// One extern "C" entry point per instantiation (element type, head dim, keys per KV tile: 64, or
// 128 for the wide form; window masks looked up, or as a product: product_masks_sm90.cuh, 64-key
// tiles only): 128 queries per tile, 384 threads, one CTA per SM; launched on
// min(SMs, work items) CTAs. Its arguments:
// the parameters, the axis the Q tile is halved on (0, 1 or 2, with an extent of at least 2
// there; FnaParams::query_split_axis on the Rust side), whether K/V tiles load with TMA (1) or
// are gathered with cp.async (0: where the host could not describe the tensors,
// src/backend/native/tensor_map.rs), and the TMA descriptors of K and V (unread when 0).
#define NATTEN_FNA_FORWARD_SM90_KERNEL(NAME, ELEMENT, HEAD_DIM, BLOCK_N, PRODUCT_MASKS)                     \
    extern "C" __global__ void __launch_bounds__(384, 1)                                                   \
        NAME(const natten_native::FnaParams p, int split_axis, int kv_tma, const __grid_constant__ CUtensorMap k_map, \
             const __grid_constant__ CUtensorMap v_map) {                                                  \
        extern __shared__ __align__(1024) char smem[];                                                      \
        natten_native::fna_forward_sm90<natten_native::FnaSm90Traits<ELEMENT, HEAD_DIM, BLOCK_N, PRODUCT_MASKS>>( \
            p, split_axis, kv_tma != 0, natten_native::TensorMapPair{&k_map, &v_map}, smem);                \
    }
