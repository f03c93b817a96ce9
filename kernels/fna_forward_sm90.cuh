// Fused neighborhood attention forward (FNA) for Hopper (sm_90a only): warpgroup MMA (wgmma,
// CuTe SM90 GMMA atoms), f16/bf16 in, f32 accumulate. Same semantics, parameters, tiling and
// outputs as fna_forward.cuh (the SM80 kernel, which runs everywhere else):
//
// - one CTA per (Q tile, head, batch) of 128 queries, two warpgroups of 64 query rows each;
// - Q and the KV tiles are gathered row by row with cp.async (multi-dimensional tiles are not
//   boxes of memory) into K-major 128-byte-swizzled shared tiles, the canonical GMMA layout;
//   K and V are double-buffered, so tile t + 1 loads while tile t is computed;
// - S = Q K^T: SS wgmma (both operands read from shared memory by the tensor cores);
// - masked online softmax in f32 on the accumulator fragment (the per-thread layout of a
//   64 x N wgmma accumulator is that of the SM80 m16n8 one, warp w of the warpgroup holding
//   rows [16 w, 16 w + 16)), so the window masks and the full-tile fast path are those of
//   fna_common.cuh;
// - O += P V: RS wgmma, P converted in registers to the A operand, V read from the same shared
//   tile as an MN-major B operand (16-bit types allow it).
#pragma once

#include <cute/arch/mma_sm90.hpp>
#include <cute/atom/mma_traits_sm90_gmma.hpp>
#include <cutlass/arch/barrier.h>

#include "fna_common.cuh"

namespace natten_native {

template <typename Element_, int kHeadDim_, int kBlockN_>
struct FnaSm90Traits {
    using Element = Element_;
    static constexpr int kHeadDim = kHeadDim_;
    static constexpr int kBlockM = 128;  // 2 warpgroups x 64 rows
    static constexpr int kBlockN = kBlockN_;
    static constexpr int kNWarps = 8;
    static constexpr int kNThreads = kNWarps * 32;
    static constexpr int kStages = 2;
    static_assert(kHeadDim % 64 == 0, "128-byte swizzled rows");
    static_assert(kBlockN == 64, "window masks are 64-bit words (window_bits)");

    using TileShapeS = Shape<Int<kBlockM>, Int<kBlockN>, Int<kHeadDim>>;  // M, N, K of S = Q K^T
    using TileShapeO = Shape<Int<kBlockM>, Int<kHeadDim>, Int<kBlockN>>;  // M, N, K of O = P V
    using MmaS = decltype(make_tiled_mma(GMMA::ss_op_selector<Element, Element, float, TileShapeS>(),
                                         Layout<Shape<_2, _1, _1>>{}));
    using MmaO = decltype(make_tiled_mma(
        GMMA::rs_op_selector<Element, Element, float, TileShapeO, GMMA::Major::K, GMMA::Major::MN>(),
        Layout<Shape<_2, _1, _1>>{}));

    using SmemAtom = GMMA::Layout_K_SW128_Atom<Element>;  // 8 rows x 64 columns
    using SmemLayoutQ = decltype(tile_to_shape(SmemAtom{}, Shape<Int<kBlockM>, Int<kHeadDim>>{}));
    using SmemLayoutKV =
        decltype(tile_to_shape(SmemAtom{}, Shape<Int<kBlockN>, Int<kHeadDim>, Int<kStages>>{}));
    // V^T (head dim x keys) viewed on the same memory: the MN-major B operand of O += P V.
    using SmemLayoutVt = decltype(composition(
        SmemLayoutKV{},
        make_ordered_layout(Shape<Int<kHeadDim>, Int<kBlockN>, Int<kStages>>{}, Step<_2, _1, _3>{})));

    static constexpr int kRowsPerThread = 2;
    static constexpr int kQBytes = kBlockM * kHeadDim * 2;
    static constexpr int kKVBytes = kStages * kBlockN * kHeadDim * 2;
    // Staging of KV tiles: thread t copies the 16-byte chunk t % kChunks of rows
    // t / kChunks + kRowStep * i.
    static constexpr int kChunks = kHeadDim / 8;
    static constexpr int kRowStep = kNThreads / kChunks;
    static constexpr int kKVRowsPerThread = kBlockN / kRowStep;
    static_assert(kRowStep % 8 == 0, "rows kRowStep apart share the swizzle phase");
    static_assert(kBlockN % kRowStep == 0);
    // The geometry after the tiles: Q tile box (128 bytes), KV box (128), per KV tile row its
    // token offset from the tile's first token (kBlockN ints), per Q tile row its window
    // (lo[3], hi[3]).
    static constexpr int kGeometryBytes = 256 + kBlockN * 4 + kBlockM * 6 * 4;
    // Q, K stages, V stages, the geometry; +1024 to align the tiles to the swizzle's 1024-byte
    // period (the dynamic shared window's start is not guaranteed to be).
    static constexpr int kSmemBytes = kQBytes + 2 * kKVBytes + kGeometryBytes + 1024;
};

__device__ __forceinline__ float exp2_approx(float x) {
    float y;
    asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
    return y;
}

// The mask of the bits [0, n) of a 64-bit word (n in [0, 64]).
__device__ __forceinline__ uint64_t low_bits(int n) {
    return n >= 64 ? ~0ull : (1ull << n) - 1;
}

// The keys of the 64-key KV tile at `origin` (tile-local key n = row-major over the tile's box,
// extents 2^log2) that lie in the window [lo, hi) on every axis, as bit n of a 64-bit mask:
// per axis, the window's run of keys in one block of the axis, repeated over the blocks.
// About 20 instructions per axis instead of a window test per score.
__device__ __forceinline__ uint64_t window_bits(const int (&lo)[3], const int (&hi)[3], const int (&log2)[3],
                                                const int (&origin)[3]) {
    uint64_t bits = ~0ull;
    int shift = 0;  // log2 of the key-index stride of axis a
#pragma unroll
    for (int a = 2; a >= 0; --a) {
        const int extent = 1 << log2[a];
        const int l = min(max(lo[a] - origin[a], 0), extent);
        const int h = min(max(hi[a] - origin[a], 0), extent);
        uint64_t run = h > l ? low_bits(h << shift) & ~low_bits(l << shift) : 0ull;
        for (int period = extent << shift; period < 64; period <<= 1) run |= run << period;
        bits &= run;
        shift += log2[a];
    }
    return bits;
}

// Gathers KV tile rows (tile at `origin`, rows `tok_off` tokens after the tile's first token)
// into the shared tile `tile` with 16-byte cp.async, zero-filling rows past `bound` and columns
// from `cols` on. Each thread copies one column chunk of kKVRowsPerThread rows kRowStep apart,
// whose shared addresses are one swizzled address plus a constant step.
template <typename Traits, typename SmemTensor>
__device__ __forceinline__ void stage_kv(SmemTensor& tile, const typename Traits::Element* base, int row_stride,
                                         const int* tok_off, const FnaParams& p, const int (&origin)[3],
                                         const int (&bound)[3], const int (&group)[3], int cols) {
    constexpr int kChunks = Traits::kChunks;
    const int r0 = threadIdx.x / kChunks;
    const int c = (threadIdx.x % kChunks) * 8;
    auto* dst0 = &tile(r0, c);
    const auto row_step = &tile(r0 + Traits::kRowStep, c) - dst0;
    const auto* tile_base = base + (long long)token_of(p, origin, group) * row_stride + c;
    const int* log2 = p.kv_tile_log2;
    bool whole = true;
#pragma unroll
    for (int a = 0; a < 3; ++a) whole &= origin[a] + (1 << log2[a]) <= bound[a];
    const bool col_ok = c < cols;
    if (whole && col_ok) {  // the common case: no checks
#pragma unroll
        for (int i = 0; i < Traits::kKVRowsPerThread; ++i) {
            cp_async_16(dst0 + i * row_step, tile_base + tok_off[r0 + i * Traits::kRowStep] * row_stride, true);
        }
        return;
    }
#pragma unroll
    for (int i = 0; i < Traits::kKVRowsPerThread; ++i) {
        const int r = r0 + i * Traits::kRowStep;
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

template <typename Traits>
__device__ void fna_forward_sm90(const FnaParams& p, char* smem_unaligned) {
    using Element = typename Traits::Element;
    constexpr int kBlockM = Traits::kBlockM;
    constexpr int kBlockN = Traits::kBlockN;
    constexpr int kHeadDim = Traits::kHeadDim;
    constexpr int kNWarps = Traits::kNWarps;
    constexpr int kNThreads = Traits::kNThreads;
    constexpr int kRows = Traits::kRowsPerThread;

    // Offsetting the __shared__ array itself (not a rounded generic address) keeps every access
    // below a shared-memory access (LDS/STS, not generic loads).
    const uint32_t misalign = static_cast<uint32_t>(__cvta_generic_to_shared(smem_unaligned)) & 1023u;
    char* smem_raw = smem_unaligned + ((1024u - misalign) & 1023u);
    char* geometry = smem_raw + Traits::kQBytes + 2 * Traits::kKVBytes;
    TileBox& qt = *reinterpret_cast<TileBox*>(geometry);
    KvBox& box = *reinterpret_cast<KvBox*>(geometry + 128);
    int* kv_tok_off = reinterpret_cast<int*>(geometry + 256);               // [kBlockN]
    int* windows = reinterpret_cast<int*>(geometry + 256 + kBlockN * 4);    // [kBlockM][6]
    static_assert(sizeof(TileBox) <= 128 && sizeof(KvBox) <= 128);
    {
        TileBox mine;
        if (!tile_of(p, blockIdx.x, p.len, p.q_tile_log2, p.q_tiles, mine)) return;
        if (threadIdx.x == 0) {
            qt = mine;
            box = kv_box_of(p, mine);
        }
    }
    if (threadIdx.x < kBlockN) {
        // Token offset of KV tile row r from the tile's first token (the same for every tile).
        int j[3];
        const int zero[3] = {0, 0, 0};
        tile_coords(threadIdx.x, p.kv_tile_log2, zero, j);
        kv_tok_off[threadIdx.x] =
            (j[0] * p.dilation[0] * p.len[1] + j[1] * p.dilation[1]) * p.len[2] + j[2] * p.dilation[2];
    }
    __syncthreads();
    const int head = blockIdx.y;
    const int batch = blockIdx.z;
    const int head_kv = head / (p.heads / p.heads_kv);

    const HeadRows rows = head_rows(p, batch, head, head_kv);
    const Element* q_base = reinterpret_cast<const Element*>(p.q) + rows.q;
    const Element* k_base = reinterpret_cast<const Element*>(p.k) + rows.k;
    const Element* v_base = reinterpret_cast<const Element*>(p.v) + rows.v;

    Element* smem_q = reinterpret_cast<Element*>(smem_raw);
    Element* smem_k = reinterpret_cast<Element*>(smem_raw + Traits::kQBytes);
    Element* smem_v = reinterpret_cast<Element*>(smem_raw + Traits::kQBytes + Traits::kKVBytes);
    Tensor sQ = make_tensor(make_smem_ptr(smem_q), typename Traits::SmemLayoutQ{});
    Tensor sK = make_tensor(make_smem_ptr(smem_k), typename Traits::SmemLayoutKV{});
    Tensor sV = make_tensor(make_smem_ptr(smem_v), typename Traits::SmemLayoutKV{});
    Tensor sVt = make_tensor(make_smem_ptr(smem_v), typename Traits::SmemLayoutVt{});

    typename Traits::MmaS mma_s;
    typename Traits::MmaO mma_o;
    auto thr_s = mma_s.get_thread_slice(threadIdx.x);
    auto thr_o = mma_o.get_thread_slice(threadIdx.x);
    Tensor tSrQ = thr_s.partition_fragment_A(sQ);   // (MMA, 1, K blocks)
    Tensor tSrK = thr_s.partition_fragment_B(sK);   // (MMA, 1, K blocks, stages)
    Tensor tOrV = thr_o.partition_fragment_B(sVt);  // (MMA, 1, key blocks, stages)
    Tensor acc_o = partition_fragment_C(mma_o, Shape<Int<kBlockM>, Int<kHeadDim>>{});

    float row_max[kRows], row_sum[kRows];
#pragma unroll
    for (int r = 0; r < kRows; ++r) {
        row_max[r] = -INFINITY;
        row_sum[r] = 0.f;
    }

    // The windows of the Q tile's rows live in shared memory (read on partial KV tiles only):
    // in registers they cost 12 of the 128 that two CTAs per SM leave each thread.
    if (threadIdx.x % 4 == 0) {
        int win_lo[kRows][3], win_hi[kRows][3];
        row_windows<kRows, kNWarps>(p, qt, win_lo, win_hi);
#pragma unroll
        for (int r = 0; r < kRows; ++r) {
            int* w = windows + acc_row(r, kNWarps) * 6;
#pragma unroll
            for (int a = 0; a < 3; ++a) {
                w[a] = win_lo[r][a];
                w[3 + a] = win_hi[r][a];
            }
        }
    }
    const int n_tiles = box.tiles[0] * box.tiles[1] * box.tiles[2];
    stage_tile<kBlockM, kHeadDim, kNThreads>(sQ, q_base, rows.q_stride, p, p.q_tile_log2, qt.first, qt.end,
                                             qt.group, p.head_dim);
    int origin[3];
    walk_origin(0, box.lo, box.tiles, p.kv_tile_log2, origin);
    {
        Tensor k0 = sK(_, _, 0);
        Tensor v0 = sV(_, _, 0);
        __syncthreads();  // kv_tok_off written
        stage_kv<Traits>(k0, k_base, (int)rows.k_stride, kv_tok_off, p, origin, box.hi, qt.group, p.head_dim);
        stage_kv<Traits>(v0, v_base, (int)rows.v_stride, kv_tok_off, p, origin, box.hi, qt.group, p.head_dim_v);
    }
    cute::cp_async_fence();
    clear(acc_o);

    for (int t = 0; t < n_tiles; ++t) {
        const int stage = t & 1;
        cute::cp_async_wait<0>();
        // Every thread's part of tile t landed and is visible to the async proxy; every
        // warpgroup is done with tile t - 1, whose buffers the next loads overwrite.
        cutlass::arch::fence_view_async_shared();
        __syncthreads();
        // S = Q K^T runs on the tensor cores while the threads issue the next tile's loads.
        Tensor acc_s = partition_fragment_C(mma_s, Shape<Int<kBlockM>, Int<kBlockN>>{});
        wgmma_gemm<true, -1>(mma_s, tSrQ, tSrK(_, _, _, stage), acc_s);
        int next[3];
        if (t + 1 < n_tiles) {
            // The walk's next tile (axis 2 fastest), as an odometer: no integer divisions.
#pragma unroll
            for (int a = 0; a < 3; ++a) next[a] = origin[a];
            next[2] += 1 << p.kv_tile_log2[2];
            if (next[2] >= box.lo[2] + (box.tiles[2] << p.kv_tile_log2[2])) {
                next[2] = box.lo[2];
                next[1] += 1 << p.kv_tile_log2[1];
                if (next[1] >= box.lo[1] + (box.tiles[1] << p.kv_tile_log2[1])) {
                    next[1] = box.lo[1];
                    next[0] += 1 << p.kv_tile_log2[0];
                }
            }
            Tensor kn = sK(_, _, stage ^ 1);
            Tensor vn = sV(_, _, stage ^ 1);
            stage_kv<Traits>(kn, k_base, (int)rows.k_stride, kv_tok_off, p, next, box.hi, qt.group, p.head_dim);
            stage_kv<Traits>(vn, v_base, (int)rows.v_stride, kv_tok_off, p, next, box.hi, qt.group,
                             p.head_dim_v);
            cute::cp_async_fence();
        }

        warpgroup_wait<0>();
        warpgroup_fence_operand(acc_s);

        Tensor scores = make_tensor(acc_s.data(), rowcol_sm90(acc_s.layout()));
        bool full = qt.no_padding;
#pragma unroll
        for (int a = 0; a < 3; ++a) {
            full &= origin[a] >= box.inner_lo[a] && origin[a] + (1 << p.kv_tile_log2[a]) <= box.inner_hi[a];
        }
        if (!full) {
#pragma unroll
            for (int r = 0; r < kRows; ++r) {
                const int* w = windows + acc_row(r, kNWarps) * 6;
                const int lo[3] = {w[0], w[1], w[2]};
                const int hi[3] = {w[3], w[4], w[5]};
                // Column c of this thread is key acc_col(c) = 2 (lane % 4) + (c % 2) + 8 (c / 2).
                const uint64_t bits = window_bits(lo, hi, p.kv_tile_log2, origin) >> ((threadIdx.x % 4) * 2);
#pragma unroll
                for (int c = 0; c < size<1>(scores); ++c) {
                    if (!((bits >> ((c % 2) + 8 * (c / 2))) & 1)) scores(r, c) = -INFINITY;
                }
            }
        }

        // Online softmax (base-2 exponentials of scale * log2(e) * s; the scale is positive);
        // rows that saw no key yet keep max -inf and sum 0.
        Tensor o_rows = make_tensor(acc_o.data(), rowcol_sm90(acc_o.layout()));
        float new_max[kRows];
        bool grew = false;
#pragma unroll
        for (int r = 0; r < kRows; ++r) {
            float m = row_max[r];
#pragma unroll
            for (int c = 0; c < size<1>(scores); ++c) m = fmaxf(m, scores(r, c));
            new_max[r] = quad_max(m);
            grew |= new_max[r] != row_max[r];
        }
        // Rescaling O is skipped when no row max of the warp changed (the correction would be
        // exactly 1): on long windows most tiles.
        if (__any_sync(0xffffffffu, grew)) {
#pragma unroll
            for (int r = 0; r < kRows; ++r) {
                const float m_scaled = new_max[r] == -INFINITY ? 0.f : new_max[r] * p.scale_log2;
                const float correction = exp2_approx(row_max[r] * p.scale_log2 - m_scaled);
                row_sum[r] *= correction;
#pragma unroll
                for (int c = 0; c < size<1>(o_rows); ++c) o_rows(r, c) *= correction;
            }
        }
#pragma unroll
        for (int r = 0; r < kRows; ++r) {
            const float m = new_max[r];
            row_max[r] = m;
            const float m_scaled = m == -INFINITY ? 0.f : m * p.scale_log2;
#pragma unroll
            for (int c = 0; c < size<1>(scores); ++c) {
                scores(r, c) = exp2_approx(scores(r, c) * p.scale_log2 - m_scaled);
                row_sum[r] += scores(r, c);
            }
        }

        Tensor p_regs = convert_to<Element>(acc_s);
        Tensor tOrP = make_tensor(p_regs.data(), acc_as_a_operand_sm90(p_regs.layout()));
        wgmma_gemm<false, 0>(mma_o, tOrP, tOrV(_, _, _, stage), acc_o);
        if (t + 1 < n_tiles) {
#pragma unroll
            for (int a = 0; a < 3; ++a) origin[a] = next[a];
        }
    }

    // Epilogue: normalise, LSE (natural log), O through shared memory to 16-byte stores.
    Tensor o_rows = make_tensor(acc_o.data(), rowcol_sm90(acc_o.layout()));
#pragma unroll
    for (int r = 0; r < kRows; ++r) {
        const float sum = quad_sum(row_sum[r]);
        const float inv = sum > 0.f ? 1.f / sum : 0.f;
#pragma unroll
        for (int c = 0; c < size<1>(o_rows); ++c) o_rows(r, c) *= inv;
        int i[3];
        tile_coords(acc_row(r, kNWarps), p.q_tile_log2, qt.first, i);
        if (threadIdx.x % 4 == 0 && i[0] < qt.end[0] && i[1] < qt.end[1] && i[2] < qt.end[2]) {
            const long long token = token_of(p, i, qt.group);
            p.lse[((long long)batch * p.tokens + token) * p.heads + head] =
                sum > 0.f ? row_max[r] * p.scale + __logf(sum) : -INFINITY;
        }
    }
    __syncthreads();  // every warpgroup is done reading sQ
    // Pairs of adjacent columns are adjacent in the swizzled tile: 4-byte shared stores.
#pragma unroll
    for (int r = 0; r < kRows; ++r) {
        const int row = acc_row(r, kNWarps);
#pragma unroll
        for (int c = 0; c < size<1>(o_rows); c += 2) {
            const int col = acc_col(c);
            cutlass::Array<Element, 2> pair;
            pair[0] = Element(o_rows(r, c));
            pair[1] = Element(o_rows(r, c + 1));
            *reinterpret_cast<cutlass::Array<Element, 2>*>(&sQ(row, col)) = pair;
        }
    }
    __syncthreads();
    Element* out_base =
        reinterpret_cast<Element*>(p.out) + rows.o;
    constexpr int kChunks = kHeadDim / 8;
    for (int idx = threadIdx.x; idx < kBlockM * kChunks; idx += kNThreads) {
        const int r = idx / kChunks;
        const int c = (idx % kChunks) * 8;
        int i[3];
        tile_coords(r, p.q_tile_log2, qt.first, i);
        if (i[0] < qt.end[0] && i[1] < qt.end[1] && i[2] < qt.end[2] && c < p.head_dim_v) {
            *reinterpret_cast<uint4*>(out_base + (long long)token_of(p, i, qt.group) * rows.o_stride + c) =
                *reinterpret_cast<const uint4*>(&sQ(r, c));
        }
    }
}

}  // namespace natten_native

// One extern "C" entry point per instantiation (element type, head dim, keys per KV tile); 128
// queries per tile, 256 threads, two CTAs per SM.
#define NATTEN_FNA_FORWARD_SM90_KERNEL(NAME, ELEMENT, HEAD_DIM, BLOCK_N)                                \
    extern "C" __global__ void __launch_bounds__(256, 2) NAME(const natten_native::FnaParams p) {       \
        extern __shared__ __align__(1024) char smem[];                                                  \
        natten_native::fna_forward_sm90<natten_native::FnaSm90Traits<ELEMENT, HEAD_DIM, BLOCK_N>>(p, smem); \
    }
