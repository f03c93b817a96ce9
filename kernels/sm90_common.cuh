// What the Hopper (sm_90a) kernels share: the window masks of a KV tile (WindowMasksOf), the
// gathered cp.async staging of K/V tile rows into 128-byte-swizzled K-major tiles, wgmma issue
// and the views of a wgmma accumulator (whose per-thread layout is that of the SM80 m16n8 one:
// warp w of a warpgroup holds rows [16 w, 16 w + 16)), and the KV walk's odometer.
#pragma once

#include <cute/arch/mma_sm90.hpp>
#include <cute/atom/mma_traits_sm90_gmma.hpp>
#include <cuda.h>  // CUtensorMap
#include <cutlass/arch/barrier.h>

#include "fna_common.cuh"

namespace natten_native {

__device__ __forceinline__ float exp2_approx(float x) {
    float y;
    asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
    return y;
}

// The TMA descriptors of a walked side's two tensors, K and V (forward, dQ pass) or Q and dO
// (dK/dV pass) (src/backend/native/tensor_map.rs builds them on the host, one per tensor,
// passed as __grid_constant__ kernel arguments): 5-D views (column of all heads, axis 2, axis 1,
// axis 0, batch) of the heads-last tensors, boxes of one 64-row tile (extents 2^log2 of that
// side per axis, every dilation-th token) by 64 columns, 128-byte swizzled: a box lands as one
// 64-column block of a K-major GMMA::Layout_K_SW128_Atom tile, rows in tile order
// (tile_coords). Rows outside the grid read as zero.
struct TensorMapPair {
    const CUtensorMap* first;   // K or Q: head_dim columns per head
    const CUtensorMap* second;  // V or dO: head_dim_v columns per head
};

// Loads the box at (c0, .., c4) of the 5-D tensor map `map` into `smem` (1024-byte aligned),
// completing its bytes of the transaction on mbarrier `bar`.
__device__ __forceinline__ void tma_load_5d(void* smem, const CUtensorMap* map, uint64_t* bar, int c0, int c1, int c2,
                                            int c3, int c4) {
    asm volatile(
        "cp.async.bulk.tensor.5d.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1, {%3, %4, %5, %6, %7}], "
        "[%2];" ::"r"(static_cast<uint32_t>(__cvta_generic_to_shared(smem))),
        "l"(map), "r"(static_cast<uint32_t>(__cvta_generic_to_shared(bar))), "r"(c0), "r"(c1), "r"(c2), "r"(c3),
        "r"(c4)
        : "memory");
}

// The TMA coordinates (axis 2, axis 1, axis 0 of the tensor) of the first row of the tile at
// group-local `origin` of dilation groups `group`: every box of that tile starts there.
__device__ __forceinline__ void tile_box_coords(const FnaParams& p, const int (&origin)[3], const int (&group)[3],
                                                int& c2, int& c1, int& c0) {
    c2 = group[2] + origin[2] * p.dilation[2];
    c1 = group[1] + origin[1] * p.dilation[1];
    c0 = group[0] + origin[0] * p.dilation[0];
}

// Loads the two tiles (K and V, or Q and dO) of the tile at group-local `origin` (dilation
// groups `group`) of (batch, head `head` of the maps' tensors) into `first_tile` and
// `second_tile` (kRows x kHeadDim elements each, one stage of a GatheredTilesSm90 ring) with
// TMA, and arms `full` for their bytes (one arrival). One thread.
template <typename Element, int kRows, int kHeadDim>
__device__ __forceinline__ void tma_load_pair(const TensorMapPair& maps, const FnaParams& p, Element* first_tile,
                                              Element* second_tile, uint64_t* full, const int (&origin)[3],
                                              const int (&group)[3], int batch, int head) {
    constexpr int kBlockCols = 64;  // a 128-byte swizzled row
    cutlass::arch::ClusterTransactionBarrier::arrive_and_expect_tx(full, 2 * kRows * kHeadDim * sizeof(Element));
    int c2, c1, c0;
    tile_box_coords(p, origin, group, c2, c1, c0);
#pragma unroll
    for (int b = 0; b < kHeadDim / kBlockCols; ++b) {
        tma_load_5d(first_tile + b * kRows * kBlockCols, maps.first, full, head * p.head_dim + b * kBlockCols, c2, c1,
                    c0, batch);
        tma_load_5d(second_tile + b * kRows * kBlockCols, maps.second, full, head * p.head_dim_v + b * kBlockCols, c2,
                    c1, c0, batch);
    }
}

// A ring of kStages shared tiles of kRows rows x kHeadDim columns that kThreads threads gather
// with stage_rows_sm90 (each Hopper kernel's walked side): the K-major 128-byte-swizzled layout
// (rows, head dim, stage), the canonical GMMA one; its MN-major view (head dim, rows, stage), the
// B operand of a product over the rows (16-bit types allow it); and the gather's split: thread t
// copies the 16-byte chunk t % kChunks of kGatherRows rows t / kChunks + kRowStep i, which share
// the swizzle phase.
template <typename Element_, int kHeadDim, int kRows, int kStages, int kThreads>
struct GatheredTilesSm90 {
    using Element = Element_;
    using SmemLayout = decltype(tile_to_shape(GMMA::Layout_K_SW128_Atom<Element>{},
                                              Shape<Int<kRows>, Int<kHeadDim>, Int<kStages>>{}));
    using SmemLayoutMN = decltype(composition(
        SmemLayout{}, make_ordered_layout(Shape<Int<kHeadDim>, Int<kRows>, Int<kStages>>{}, Step<_2, _1, _3>{})));
    static constexpr int kChunks = kHeadDim / 8;
    static constexpr int kRowStep = kThreads / kChunks;
    static constexpr int kGatherRows = kRows / kRowStep;
    static_assert(kRowStep % 8 == 0, "rows kRowStep apart share the swizzle phase");
    static_assert(kRows % kRowStep == 0);
};

// The two warpgroup MMAs of every Hopper pass, one warpgroup over 64 rows: MmaS, the SS product
// 64 x kBlockN x kHeadDim (S = Q K^T, dP = dO V^T and their transposes), and MmaAcc, the RS
// product 64 x kHeadDim x kBlockN with A in registers and an MN-major B view of a K-major tile
// (O += P V, dQ += dS K, dV += P^T dO, dK += dS^T Q).
template <typename Element, int kHeadDim, int kBlockN>
struct WarpgroupMmasSm90 {
    using TileShapeS = Shape<_64, Int<kBlockN>, Int<kHeadDim>>;
    using TileShapeAcc = Shape<_64, Int<kHeadDim>, Int<kBlockN>>;
    using MmaS = decltype(make_tiled_mma(GMMA::ss_op_selector<Element, Element, float, TileShapeS>(),
                                         Layout<Shape<_1, _1, _1>>{}));
    using MmaAcc = decltype(make_tiled_mma(
        GMMA::rs_op_selector<Element, Element, float, TileShapeAcc, GMMA::Major::K, GMMA::Major::MN>(),
        Layout<Shape<_1, _1, _1>>{}));
};

// Gathers the rows of a tile of extents 2^log2 at `origin` (row r is tok_off[r] tokens after
// the tile's first token) into the shared tile `tile` with 16-byte cp.async, zero-filling rows
// past `bound` and columns from `cols` on, split as Traits::Gather (GatheredTilesSm90) says: the
// shared addresses of a thread's rows are one swizzled address plus a constant step.
template <typename Traits, typename SmemTensor>
__device__ __forceinline__ void stage_rows_sm90(SmemTensor& tile, const typename Traits::Element* base,
                                                int row_stride, const int* tok_off, const FnaParams& p,
                                                const int (&log2)[3], const int (&origin)[3],
                                                const int (&bound)[3], const int (&group)[3], int cols) {
    using Gather = typename Traits::Gather;
    constexpr int kChunks = Gather::kChunks;
    const int r0 = threadIdx.x / kChunks;
    const int c = (threadIdx.x % kChunks) * 8;
    auto* dst0 = &tile(r0, c);
    const auto row_step = &tile(r0 + Gather::kRowStep, c) - dst0;
    const auto* tile_base = base + (long long)token_of(p, origin, group) * row_stride + c;
    bool whole = true;
#pragma unroll
    for (int a = 0; a < 3; ++a) whole &= origin[a] + (1 << log2[a]) <= bound[a];
    const bool col_ok = c < cols;
    if (whole && col_ok) {  // the common case: no checks
#pragma unroll
        for (int i = 0; i < Gather::kGatherRows; ++i) {
            cp_async_16(dst0 + i * row_step, tile_base + tok_off[r0 + i * Gather::kRowStep] * row_stride, true);
        }
        return;
    }
#pragma unroll
    for (int i = 0; i < Gather::kGatherRows; ++i) {
        const int r = r0 + i * Gather::kRowStep;
        bool ok = col_ok;
        if (!whole) {
            const int j2 = r & ((1 << log2[2]) - 1), j1 = (r >> log2[2]) & ((1 << log2[1]) - 1),
                      j0 = r >> (log2[2] + log2[1]);
            ok &= origin[0] + j0 < bound[0] && origin[1] + j1 < bound[1] && origin[2] + j2 < bound[2];
        }
        const auto* src = ok ? tile_base + tok_off[r] * row_stride : base;
        cp_async_16(dst0 + i * row_step, src, ok);
    }
}

// stage_rows_sm90 for a KV tile (extents p.kv_tile_log2).
template <typename Traits, typename SmemTensor>
__device__ __forceinline__ void stage_kv(SmemTensor& tile, const typename Traits::Element* base, int row_stride,
                                         const int* tok_off, const FnaParams& p, const int (&origin)[3],
                                         const int (&bound)[3], const int (&group)[3], int cols) {
    stage_rows_sm90<Traits>(tile, base, row_stride, tok_off, p, p.kv_tile_log2, origin, bound, group, cols);
}

// acc (+)= A B with wgmma, A and B fragments over the K blocks; commits one batch and waits until
// at most `kWait` batches are pending (no wait when negative).
template <bool kZeroInit, int kWait, typename Mma, typename TA, typename TB, typename TC>
__device__ __forceinline__ void wgmma_gemm(Mma& mma, TA const& a, TB const& b, TC& c) {
    constexpr bool kRegA = !cute::is_base_of<GMMA::DescriptorIterator, typename Mma::FrgTypeA>::value;
    if constexpr (kRegA) warpgroup_fence_operand(const_cast<TA&>(a));
    warpgroup_fence_operand(c);
    warpgroup_arrive();
    if constexpr (kZeroInit) mma.accumulate_ = GMMA::ScaleOut::Zero;
#pragma unroll
    for (int k = 0; k < size<2>(a); ++k) {
        cute::gemm(mma, a(_, _, k), b(_, _, k), c);
        mma.accumulate_ = GMMA::ScaleOut::One;
    }
    warpgroup_commit_batch();
    if constexpr (kWait >= 0) warpgroup_wait<kWait>();
    warpgroup_fence_operand(c);
    if constexpr (kRegA) warpgroup_fence_operand(const_cast<TA&>(a));
}

// ((2, 2, N / 8), MMA_M, MMA_N) wgmma accumulator -> (rows = (2, MMA_M), cols = (2, N / 8, MMA_N)).
template <typename Layout>
__device__ __forceinline__ auto rowcol_sm90(Layout l) {
    return make_layout(make_layout(get<0, 1>(l), get<1>(l)), make_layout(get<0, 0>(l), get<0, 2>(l), get<2>(l)));
}

// The f32 accumulator of S as the register A operand of O += P V:
// ((2, 2, N / 8), 1, 1) -> ((2, 2, 2), 1, N / 16).
template <typename Layout>
__device__ __forceinline__ auto acc_as_a_operand_sm90(Layout l) {
    auto split = logical_divide(get<0, 2>(l), Tile<_2>{});  // ((2, N / 16))
    return make_layout(make_layout(get<0, 0>(l), get<0, 1>(l), get<0, 0>(split)), get<1>(l),
                       coalesce(make_layout(get<0, 1>(split), get<2>(l))));
}

// The walk's next KV tile origin (axis 2 fastest).
__device__ __forceinline__ void next_kv_origin(const FnaParams& p, const KvBox& box, int (&o)[3]) {
    o[2] += 1 << p.kv_tile_log2[2];
    if (o[2] >= box.lo[2] + (box.tiles[2] << p.kv_tile_log2[2])) {
        o[2] = box.lo[2];
        o[1] += 1 << p.kv_tile_log2[1];
        if (o[1] >= box.lo[1] + (box.tiles[1] << p.kv_tile_log2[1])) {
            o[1] = box.lo[1];
            o[0] += 1 << p.kv_tile_log2[0];
        }
    }
}

// The window masks of a kCols-column tile (64 or 128 keys; tile-local column n = row-major over
// the tile's box, extents 2^log2), precomputed per CTA and compressed to the kCols / 4 columns
// that a thread holds of a wgmma accumulator row (quad lane q holds tile columns
// 2 q + 8 (c / 2) + c % 2, c = 0..kCols / 4 - 1): entry (q, a, x) of the shared table has bit c
// set where column c of quad lane q lies below x on axis a (x = 0..kCols). A window's run [l, h)
// on axis a is then entry h AND NOT entry l (runs repeat over the blocks of the axis, so a run's
// mask is the difference of two prefixes), and a row's mask the AND over the axes: two table
// reads per axis. Computing each row's 64-bit mask per tile instead (loops over the axes' blocks)
// made the forward's softmax on masked tiles twice as long as on unmasked ones (H200: 1983
// against 987 cycles per tile; 1363 with the table).
template <int kCols>
struct WindowMasksOf {
    static_assert(kCols == 64 || kCols == 128, "a thread's columns in one 16- or 32-bit word");
    using Word = cute::conditional_t<kCols == 64, uint16_t, uint32_t>;
    static constexpr int kEnds = kCols + 1;           // x = 0..kCols
    static constexpr int kEntries = 4 * 3 * kEnds;    // quad lane x axis x x
    static constexpr int kBytes = kEntries * static_cast<int>(sizeof(Word));

    // Fills `table` (shared memory, kEntries entries) for tiles of extents 2^log2; threads
    // `thread` of `threads` share the work. The caller synchronises before use.
    static __device__ void build(Word* table, const int (&log2)[3], int thread, int threads) {
        for (int idx = thread; idx < kEntries; idx += threads) {
            const int x = idx % kEnds, a = (idx / kEnds) % 3, q = idx / (3 * kEnds);
            int shift = 0;  // log2 of the key-index stride of axis a
            for (int b = a + 1; b < 3; ++b) shift += log2[b];
            const int extent = 1 << log2[a];
            uint32_t cols = 0;
            for (int c = 0; c < kCols / 4; ++c) {
                const int n = 2 * q + (c % 2) + 8 * (c / 2);  // the tile column
                if (((n >> shift) & (extent - 1)) < x) cols |= 1u << c;
            }
            table[idx] = static_cast<Word>(cols);
        }
    }

    // This thread's part of the table (its quad lane's entries).
    static __device__ __forceinline__ const Word* of_thread(const Word* table) {
        return table + (threadIdx.x % 4) * 3 * kEnds;
    }
};

// The 64-column table of the backward passes' tiles.
using WindowMasks = WindowMasksOf<64>;

// The columns of a kCols-column tile at `origin` inside a row's window [`lo`, `hi`), as the
// kCols / 4 bits of the columns this thread holds (bit c: column c of its accumulator row):
// `masks` is this thread's part of the WindowMasksOf<kCols> table (of_thread) built for the tile
// extents 2^log2. It reads no scores: the Hopper forward computes it while S = Q K^T runs (2-D
// anchor 0.588-0.596 -> 0.573-0.574 ms, H100 harness), then apply_keep_sm90.
template <int kCols = 64>
__device__ __forceinline__ uint32_t window_keep_sm90(const int (&lo)[3], const int (&hi)[3],
                                                     const typename WindowMasksOf<kCols>::Word* masks,
                                                     const int (&log2)[3], const int (&origin)[3]) {
    uint32_t keep = 0xffffffffu;
#pragma unroll
    for (int a = 0; a < 3; ++a) {
        const int extent = 1 << log2[a];
        const int l = min(max(lo[a] - origin[a], 0), extent);
        const int h = min(max(hi[a] - origin[a], 0), extent);
        constexpr int kEnds = WindowMasksOf<kCols>::kEnds;
        keep &= masks[a * kEnds + h] & ~static_cast<uint32_t>(masks[a * kEnds + l]);
    }
    return keep;
}

// Sets the scores of row r whose bit in `keep` (window_keep_sm90) is clear to -inf.
template <typename Scores>
__device__ __forceinline__ void apply_keep_sm90(Scores& scores, int r, uint32_t keep) {
    static_assert(decltype(size<1>(scores))::value <= 32, "a thread's columns of a row in one word");
#pragma unroll
    for (int c = 0; c < size<1>(scores); ++c) {
        if (!((keep >> c) & 1)) scores(r, c) = -INFINITY;
    }
}

// Sets the scores of a 64-column tile at `origin` outside row r's window [`lo`, `hi`) to -inf
// (window_keep_sm90, then apply_keep_sm90): the backward passes' steps, where looking the masks
// up while the products ran gained nothing (H100, kernel traces).
template <typename Scores>
__device__ __forceinline__ void mask_row_sm90(Scores& scores, int r, const int (&lo)[3], const int (&hi)[3],
                                              const uint16_t* masks, const int (&log2)[3], const int (&origin)[3]) {
    apply_keep_sm90(scores, r, window_keep_sm90(lo, hi, masks, log2, origin));
}

// Row r (of two) of a 64-row wgmma accumulator held by thread `wg_thread` of its warpgroup.
__device__ __forceinline__ int wg_acc_row(int wg_thread, int r) {
    return (wg_thread / 32) * 16 + (wg_thread % 32) / 4 + r * 8;
}

// Calls f(r, c, row, col) for each pair of adjacent columns (c, c + 1) of row r (of two) that
// thread `wg_thread` holds of a 64-row wgmma accumulator, viewed as rows x columns (`rows`,
// rowcol_sm90): `row` and `col` are the pair's row and first column in the accumulator. The
// epilogues walk their accumulators with it.
template <typename RowCol, typename F>
__device__ __forceinline__ void for_each_acc_pair(const RowCol& rows, int wg_thread, F&& f) {
#pragma unroll
    for (int r = 0; r < 2; ++r) {
        const int row = wg_acc_row(wg_thread, r);
#pragma unroll
        for (int c = 0; c < size<1>(rows); c += 2) f(r, c, row, acc_col(c));
    }
}

// Stores the pair (a, b) as two adjacent elements at `dst` (one 32-bit store for 16-bit types).
template <typename Element, typename T>
__device__ __forceinline__ void store_pair(Element& dst, T a, T b) {
    cutlass::Array<Element, 2> pair;
    pair[0] = Element(a);
    pair[1] = Element(b);
    *reinterpret_cast<cutlass::Array<Element, 2>*>(&dst) = pair;
}

// Named barrier `id` (1..15; 0 is __syncthreads) of `threads` threads: wait there, or arrive
// without waiting.
__device__ __forceinline__ void named_bar_sync(int id, int threads) {
    asm volatile("bar.sync %0, %1;\n" ::"r"(id), "r"(threads) : "memory");
}

__device__ __forceinline__ void named_bar_arrive(int id, int threads) {
    asm volatile("bar.arrive %0, %1;\n" ::"r"(id), "r"(threads) : "memory");
}

// A barrier of the 128 threads of one warpgroup.
__device__ __forceinline__ void bar_sync_wg(int id) {
    named_bar_sync(id, 128);
}

// The first byte of dynamic shared memory `smem` aligned to 1024 bytes, the period of the 128-byte
// swizzle that every Hopper kernel's tiles use (their kSmemBytes count 1024 bytes for it).
__device__ __forceinline__ char* align_to_swizzle_period(char* smem) {
    const uint32_t misalign = static_cast<uint32_t>(__cvta_generic_to_shared(smem)) & 1023u;
    return smem + ((1024u - misalign) & 1023u);
}

// Half `h` (0 or 1) of the tile `whole` along `axis`, whose extents are 2^half_log2 (the whole
// tile's, halved on `axis`): its first half or its second. False when the half lies past the
// group's end (no queries or keys: nothing to do).
__device__ __forceinline__ bool half_of(const TileBox& whole, const int (&half_log2)[3], int axis, int h,
                                        TileBox& half) {
    half = whole;
    half.no_padding = true;
    bool nonempty = true;
#pragma unroll
    for (int a = 0; a < 3; ++a) {
        const int ext = 1 << half_log2[a];
        if (a == axis) {
            half.first[a] = whole.first[a] + h * ext;
            half.end[a] = min(half.first[a] + ext, half.glen[a]);
            nonempty = half.first[a] < half.glen[a];
        }
        half.no_padding &= half.end[a] - half.first[a] == ext;
    }
    return nonempty;
}

// The two plan tiles of a paired CTA (the warp-specialised backward passes): CTA `cta` decodes
// (tile_of) to a tile whose extent on `pair_axis` is the plan tile's (2^log2) doubled; sub-tile
// h (h = 0, 1) is the plan tile 2 t + h on that axis (half_of), `valid[h]` false when it lies
// past the group's end. False when the whole tile does (nothing to do).
__device__ __forceinline__ bool paired_tiles_of(const FnaParams& p, int cta, const int (&len)[3],
                                                const int (&log2)[3], const int (&counts)[3], int pair_axis,
                                                TileBox& whole, TileBox (&sub)[2], int (&valid)[2]) {
    int log2p[3], countp[3];
#pragma unroll
    for (int a = 0; a < 3; ++a) {
        log2p[a] = log2[a] + (a == pair_axis);
        countp[a] = a == pair_axis ? (counts[a] + 1) / 2 : counts[a];
    }
    if (!tile_of(p, cta, len, log2p, countp, whole)) return false;
#pragma unroll
    for (int h = 0; h < 2; ++h) valid[h] = half_of(whole, log2, pair_axis, h, sub[h]);
    return true;
}

// A paired pass's CTA geometry, in shared memory (thread 0 writes it): the box of the whole
// (doubled) tile, which the producer walks, each sub-tile's own box, the sub-tiles and whether
// each holds any rows. `Box` is KvBox in the dQ pass and QueryBox in the dK/dV pass.
template <typename Box>
struct PairedGeometry {
    Box walk;        // the whole tile's box
    Box sub_box[2];  // each sub-tile's
    TileBox sub[2];  // the sub-tiles
    int valid[2];    // sub-tile non-empty
};

// Initialises the mbarriers of a ring of kStages buffers (one thread): per stage `full`
// (`producers` arrivals) and `empty` (`consumers` arrivals). The caller fences the inits
// (cutlass::arch::fence_barrier_init) once all its barriers are set.
template <int kStages>
__device__ __forceinline__ void init_ring(uint64_t* full, uint64_t* empty, int producers, int consumers) {
#pragma unroll
    for (int s = 0; s < kStages; ++s) {
        cutlass::arch::ClusterBarrier::init(full + s, producers);
        cutlass::arch::ClusterBarrier::init(empty + s, consumers);
    }
}

// Initialises the mbarriers of a producer / consumer ring (one thread): `once` (the producer's
// one-time loads, `producers` arrivals) and the ring's (init_ring; `ring_producers` arrivals
// fill a stage: the producer's threads for cp.async, 1 for TMA), then fences them.
template <int kStages>
__device__ __forceinline__ void init_ring_barriers(uint64_t* once, uint64_t* full, uint64_t* empty, int producers,
                                                   int ring_producers, int consumers) {
    cutlass::arch::ClusterBarrier::init(once, producers);
    init_ring<kStages>(full, empty, ring_producers, consumers);
    cutlass::arch::fence_barrier_init();
}

// The thread and register split of the warp-specialised Hopper backward passes: a producer
// warpgroup and two consumer warpgroups, one CTA per SM (__launch_bounds__(384, 1): 168 registers
// a thread at launch). setmaxnreg moves registers from the producer to the consumers, and the
// consumers can only take what the producer released (asking for more hangs them).
template <int kProducerRegs_, int kConsumerRegs_>
struct ProducerConsumersSm90 {
    static constexpr int kProducerThreads = 128;
    static constexpr int kConsumerThreads = 256;
    static constexpr int kNThreads = kProducerThreads + kConsumerThreads;
    static constexpr int kProducerRegs = kProducerRegs_;
    static constexpr int kConsumerRegs = kConsumerRegs_;
    static_assert(kProducerThreads * kProducerRegs + kConsumerThreads * kConsumerRegs <= 168 * kNThreads);
};

}  // namespace natten_native
