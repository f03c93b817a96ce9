// The dQ pass of the FNA backward for Hopper (sm_90a only): warpgroup MMA (wgmma, CuTe SM90 GMMA
// atoms), f16/bf16 in, f32 accumulate. Same semantics, parameters, grid and outputs as
// fna_backward_dq in fna_backward.cuh (the SM80 pass, which runs everywhere else), including
// the delta = rowsum(dO * O) it writes for the dK/dV pass:
//
// - one CTA per (Q tile of 64 queries, head, batch): one warpgroup, 128 threads, three CTAs per
//   SM; the backward plan's tiles (64-query Q tiles, 64-key KV tiles) are unchanged. It runs
//   head dim 64; head dim 128 runs the warp-specialised pass (fna_backward_dq_sm90_ws.cuh);
// - Q and dO resident, K and V gathered with cp.async (stage_kv, sm90_common.cuh) into
//   K-major 128-byte-swizzled shared tiles, double-buffered;
// - S = Q K^T and dP = dO V^T: two SS wgmma issued back to back, the next tile's loads issued
//   under them;
// - P = exp2(S scale_log2 - LSE_log2) with the row's LSE (masked scores give 0),
//   dS = P (dP - delta), on the accumulator fragments (SM80 m16n8 per-thread layout);
// - dQ += dS K: RS wgmma, dS converted in registers to the A operand, K read from the same
//   shared tile as an MN-major B operand (as V in the forward's O += P V).
#pragma once

#include "sm90_common.cuh"

namespace natten_native {

// 64 queries per CTA (one warpgroup, the backward plan's Q tiles) walking 64-key tiles, K and V
// double-buffered. (A 128-query, two-warpgroup form sharing the K/V tiles was no faster on the
// H100 anchors; single-buffered K/V for three CTAs per SM at head dim 128 gave way to the
// warp-specialised pass, fna_backward_dq_sm90_ws.cuh.)
template <typename Element_, int kHeadDim_>
struct FnaBwdSm90Traits {
    using Element = Element_;
    static constexpr int kHeadDim = kHeadDim_;
    static constexpr int kBlockM = 64;
    static constexpr int kBlockN = 64;
    static constexpr int kNWarps = kBlockM / 16;
    static constexpr int kNThreads = kNWarps * 32;
    static constexpr int kStages = 2;
    static_assert(kHeadDim % 64 == 0, "128-byte swizzled rows");

    // S = Q K^T and dP = dO V^T; dQ += dS K.
    using MmaS = typename WarpgroupMmasSm90<Element, kHeadDim, kBlockN>::MmaS;
    using MmaDQ = typename WarpgroupMmasSm90<Element, kHeadDim, kBlockN>::MmaAcc;

    using SmemAtom = GMMA::Layout_K_SW128_Atom<Element>;
    using SmemLayoutQ = decltype(tile_to_shape(SmemAtom{}, Shape<Int<kBlockM>, Int<kHeadDim>>{}));
    // The K and V tiles (stage_kv); K^T is the MN-major B operand of dQ += dS K.
    using Gather = GatheredTilesSm90<Element, kHeadDim, kBlockN, kStages, kNThreads>;
    using SmemLayoutKV = typename Gather::SmemLayout;
    using SmemLayoutKt = typename Gather::SmemLayoutMN;

    static constexpr int kRowsPerThread = 2;
    static constexpr int kQBytes = kBlockM * kHeadDim * 2;
    static constexpr int kKVBytes = kStages * kBlockN * kHeadDim * 2;
    // Geometry after the tiles: Q tile box (128 bytes), KV box (128), per KV tile row its token
    // offset (kBlockN ints), per Q tile row its LSE (log2 units) and delta (2 x kBlockM floats),
    // the window-mask table (WindowMasks, last).
    static constexpr int kGeometryBytes = 256 + kBlockN * 4 + kBlockM * 8 + WindowMasks::kBytes;
    // Q, dO, K stages, V stages, the geometry, +1024 to align the tiles to the swizzle period.
    static constexpr int kSmemBytes = 2 * kQBytes + 2 * kKVBytes + kGeometryBytes + 1024;
};

// delta = rowsum(dO * O) in f32 (written out for the dK/dV pass) and the LSE in log2 units of
// the 64 query rows of Q tile `qt`, into s_lse / s_delta (+inf and 0 for padding rows): two
// threads per row (`wg_thread` of a warpgroup's 128), each half of the columns. Both dQ passes
// run it.
template <typename Element>
__device__ __forceinline__ void delta_and_lse_sm90(const FnaParams& p, const HeadRows& rows, const TileBox& qt,
                                                   int batch, int head, int wg_thread, float* s_lse,
                                                   float* s_delta) {
    const Element* do_base = reinterpret_cast<const Element*>(p.d_out) + rows.o;
    const Element* o_base = reinterpret_cast<const Element*>(p.out) + rows.o;
    const int r = wg_thread / 2;
    const int half = wg_thread % 2;
    int i[3];
    tile_coords(r, p.q_tile_log2, qt.first, i);
    const bool real = i[0] < qt.end[0] && i[1] < qt.end[1] && i[2] < qt.end[2];
    float delta = 0.f;
    long long row = 0;
    if (real) {
        const long long token = token_of(p, i, qt.group);
        row = ((long long)batch * p.tokens + token) * p.heads + head;
        for (int c = half * 8; c < p.head_dim_v; c += 16) {
            delta = dot8_f32(o_base + token * rows.o_stride + c, do_base + token * rows.o_stride + c, delta);
        }
    }
    delta += __shfl_xor_sync(0xffffffffu, delta, 1);
    if (half == 0) {
        float lse_log2 = INFINITY;
        if (real) {
            lse_log2 = p.lse[row] * 1.4426950408889634f;
            p.delta[row] = delta;
        }
        s_lse[r] = lse_log2;
        s_delta[r] = delta;
    }
}

// The rest of one walked step of a dQ warpgroup (64 queries x 64 keys) once it has issued
// S = Q K^T into acc_s and dP = dO V^T into acc_dp (SS wgmma, not yet waited for):
// P = exp2(S scale_log2 - LSE_log2[row]), masked unless `full` by each row's window (`win_lo`,
// `win_hi`), dS = P (dP - delta[row]), dQ += dS K (RS wgmma from the step's MN-major K view),
// waited for. Both dQ passes run it.
template <typename Traits, typename Acc, typename FragB, typename AccDQ>
__device__ __forceinline__ void dq_step_sm90(const FnaParams& p, Acc& acc_s, Acc& acc_dp, bool full,
                                             const uint16_t* masks, const int (&win_lo)[2][3],
                                             const int (&win_hi)[2][3],
                                             const int (&origin)[3], const float (&row_lse)[2],
                                             const float (&row_delta)[2], FragB tQrKt, AccDQ& acc_dq) {
    using Element = typename Traits::Element;
    constexpr int kRows = Traits::kRowsPerThread;
    static_assert(kRows == 2);
    typename Traits::MmaDQ mma_dq;
    warpgroup_wait<1>();  // S done (dP may still run)
    warpgroup_fence_operand(acc_s);
    Tensor scores = make_tensor(acc_s.data(), rowcol_sm90(acc_s.layout()));
    if (!full) {
#pragma unroll
        for (int r = 0; r < kRows; ++r) mask_row_sm90(scores, r, win_lo[r], win_hi[r], masks, p.kv_tile_log2, origin);
    }
#pragma unroll
    for (int r = 0; r < kRows; ++r) {
#pragma unroll
        for (int c = 0; c < size<1>(scores); ++c) {
            scores(r, c) = exp2_approx(fmaf(scores(r, c), p.scale_log2, -row_lse[r]));
        }
    }
    warpgroup_wait<0>();  // dP done
    warpgroup_fence_operand(acc_dp);
    Tensor dp = make_tensor(acc_dp.data(), rowcol_sm90(acc_dp.layout()));
#pragma unroll
    for (int r = 0; r < kRows; ++r) {
#pragma unroll
        for (int c = 0; c < size<1>(scores); ++c) {
            scores(r, c) = scores(r, c) * (dp(r, c) - row_delta[r]);  // dS / scale
        }
    }
    Tensor ds = convert_to<Element>(acc_s);
    Tensor tdS = make_tensor(ds.data(), acc_as_a_operand_sm90(ds.layout()));
    wgmma_gemm<false, 0>(mma_dq, tdS, tQrKt, acc_dq);
}

// A dQ warpgroup's epilogue, first half: dQ (times the softmax scale) as element pairs into its
// Q shared tile (64 x head dim, read back by store_dq_sm90 after a barrier).
template <typename Element, typename AccDQ, typename SmemTile>
__device__ __forceinline__ void pack_dq_sm90(const AccDQ& acc_dq, float scale, int wg_thread, SmemTile& sQ) {
    Tensor dq_rows = make_tensor(acc_dq.data(), rowcol_sm90(acc_dq.layout()));
    for_each_acc_pair(dq_rows, wg_thread, [&](int r, int c, int row, int col) {
        store_pair(sQ(row, col), dq_rows(r, c) * scale, dq_rows(r, c + 1) * scale);
    });
}

// The second half: 16-byte row stores of dQ from the shared tile to the query rows of the tile
// box `qt` (padding rows skipped), by thread `thread` of `threads`.
template <int kBlockM, int kHeadDim, typename Element, typename SmemTile>
__device__ __forceinline__ void store_dq_sm90(const FnaParams& p, const HeadRows& rows, const TileBox& qt,
                                              const SmemTile& sQ, int thread, int threads) {
    Element* dq_base = reinterpret_cast<Element*>(p.dq) + rows.q;
    constexpr int kChunks = kHeadDim / 8;
    for (int idx = thread; idx < kBlockM * kChunks; idx += threads) {
        const int r = idx / kChunks;
        const int c = (idx % kChunks) * 8;
        int i[3];
        tile_coords(r, p.q_tile_log2, qt.first, i);
        if (i[0] < qt.end[0] && i[1] < qt.end[1] && i[2] < qt.end[2] && c < p.head_dim) {
            *reinterpret_cast<uint4*>(dq_base + (long long)token_of(p, i, qt.group) * rows.q_stride + c) =
                *reinterpret_cast<const uint4*>(&sQ(r, c));
        }
    }
}

template <typename Traits>
__device__ void fna_backward_dq_sm90(const FnaParams& p, char* smem_unaligned) {
    using Element = typename Traits::Element;
    constexpr int kBlockM = Traits::kBlockM;
    constexpr int kBlockN = Traits::kBlockN;
    constexpr int kHeadDim = Traits::kHeadDim;
    constexpr int kNWarps = Traits::kNWarps;
    constexpr int kNThreads = Traits::kNThreads;
    constexpr int kRows = Traits::kRowsPerThread;

    char* smem_raw = align_to_swizzle_period(smem_unaligned);
    char* geometry = smem_raw + 2 * Traits::kQBytes + 2 * Traits::kKVBytes;
    TileBox& qt = *reinterpret_cast<TileBox*>(geometry);
    KvBox& box = *reinterpret_cast<KvBox*>(geometry + 128);
    int* kv_tok_off = reinterpret_cast<int*>(geometry + 256);                  // [kBlockN]
    float* s_lse = reinterpret_cast<float*>(geometry + 256 + kBlockN * 4);     // [kBlockM]
    uint16_t* window_masks = reinterpret_cast<uint16_t*>(geometry + Traits::kGeometryBytes - WindowMasks::kBytes);
    float* s_delta = s_lse + kBlockM;                                          // [kBlockM]
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
        kv_tok_off[threadIdx.x] = tile_row_offset(p, p.kv_tile_log2, threadIdx.x);
    }
    WindowMasks::build(window_masks, p.kv_tile_log2, threadIdx.x, kNThreads);
    __syncthreads();
    const int head = blockIdx.y;
    const int batch = blockIdx.z;
    const int head_kv = head / (p.heads / p.heads_kv);

    const HeadRows rows = head_rows(p, batch, head, head_kv);
    const long long k_row_stride = rows.k_stride;
    const long long v_row_stride = rows.v_stride;
    const Element* q_base = reinterpret_cast<const Element*>(p.q) + rows.q;
    const Element* do_base = reinterpret_cast<const Element*>(p.d_out) + rows.o;
    const Element* k_base = reinterpret_cast<const Element*>(p.k) + rows.k;
    const Element* v_base = reinterpret_cast<const Element*>(p.v) + rows.v;

    Element* smem_q = reinterpret_cast<Element*>(smem_raw);
    Element* smem_do = reinterpret_cast<Element*>(smem_raw + Traits::kQBytes);
    Element* smem_k = reinterpret_cast<Element*>(smem_raw + 2 * Traits::kQBytes);
    Element* smem_v = reinterpret_cast<Element*>(smem_raw + 2 * Traits::kQBytes + Traits::kKVBytes);
    Tensor sQ = make_tensor(make_smem_ptr(smem_q), typename Traits::SmemLayoutQ{});
    Tensor sdO = make_tensor(make_smem_ptr(smem_do), typename Traits::SmemLayoutQ{});
    Tensor sK = make_tensor(make_smem_ptr(smem_k), typename Traits::SmemLayoutKV{});
    Tensor sV = make_tensor(make_smem_ptr(smem_v), typename Traits::SmemLayoutKV{});
    Tensor sKt = make_tensor(make_smem_ptr(smem_k), typename Traits::SmemLayoutKt{});

    typename Traits::MmaS mma_s;
    typename Traits::MmaDQ mma_dq;
    auto thr_s = mma_s.get_thread_slice(threadIdx.x);
    auto thr_dq = mma_dq.get_thread_slice(threadIdx.x);
    Tensor tSrQ = thr_s.partition_fragment_A(sQ);     // (MMA, 1, K blocks)
    Tensor tSrdO = thr_s.partition_fragment_A(sdO);   // (MMA, 1, K blocks)
    Tensor tSrK = thr_s.partition_fragment_B(sK);     // (MMA, 1, K blocks, stages)
    Tensor tSrV = thr_s.partition_fragment_B(sV);     // (MMA, 1, K blocks, stages)
    Tensor tQrKt = thr_dq.partition_fragment_B(sKt);  // (MMA, 1, key blocks, stages)
    Tensor acc_dq = partition_fragment_C(mma_dq, Shape<Int<kBlockM>, Int<kHeadDim>>{});

    const int n_tiles = box.tiles[0] * box.tiles[1] * box.tiles[2];
    stage_tile<kBlockM, kHeadDim, kNThreads>(sQ, q_base, rows.q_stride, p, p.q_tile_log2, qt.first, qt.end,
                                             qt.group, p.head_dim);
    stage_tile<kBlockM, kHeadDim, kNThreads>(sdO, do_base, rows.o_stride, p, p.q_tile_log2, qt.first, qt.end,
                                             qt.group, p.head_dim_v);
    int origin[3];
    walk_origin(0, box.lo, box.tiles, p.kv_tile_log2, origin);
    {
        Tensor k0 = sK(_, _, 0);
        Tensor v0 = sV(_, _, 0);
        stage_kv<Traits>(k0, k_base, (int)k_row_stride, kv_tok_off, p, origin, box.hi, qt.group, p.head_dim);
        stage_kv<Traits>(v0, v_base, (int)v_row_stride, kv_tok_off, p, origin, box.hi, qt.group, p.head_dim_v);
    }
    cute::cp_async_fence();

    static_assert(kNThreads == 2 * kBlockM);
    delta_and_lse_sm90<Element>(p, rows, qt, batch, head, threadIdx.x, s_lse, s_delta);
    int win_lo[kRows][3], win_hi[kRows][3];
    row_windows<kRows, kNWarps>(p, qt, win_lo, win_hi);
    clear(acc_dq);
    __syncthreads();  // s_lse, s_delta
    float row_lse[kRows], row_delta[kRows];
#pragma unroll
    for (int r = 0; r < kRows; ++r) {
        row_lse[r] = s_lse[acc_row(r, kNWarps)];
        row_delta[r] = s_delta[acc_row(r, kNWarps)];
    }

    for (int t = 0; t < n_tiles; ++t) {
        const int stage = t & 1;
        cute::cp_async_wait<0>();
        // Tile t (and Q, dO) landed and is visible to the async proxy; every warp is done with
        // tile t - 1 (its dQ product was waited for), whose buffers the next loads overwrite.
        cutlass::arch::fence_view_async_shared();
        __syncthreads();
        Tensor acc_s = partition_fragment_C(mma_s, Shape<Int<kBlockM>, Int<kBlockN>>{});
        Tensor acc_dp = partition_fragment_C(mma_s, Shape<Int<kBlockM>, Int<kBlockN>>{});
        wgmma_gemm<true, -1>(mma_s, tSrQ, tSrK(_, _, _, stage), acc_s);
        wgmma_gemm<true, -1>(mma_s, tSrdO, tSrV(_, _, _, stage), acc_dp);
        int next[3] = {origin[0], origin[1], origin[2]};
        const bool more = t + 1 < n_tiles;
        if (more) {
            next_kv_origin(p, box, next);
            Tensor kn = sK(_, _, stage ^ 1);
            Tensor vn = sV(_, _, stage ^ 1);
            stage_kv<Traits>(kn, k_base, (int)k_row_stride, kv_tok_off, p, next, box.hi, qt.group, p.head_dim);
            stage_kv<Traits>(vn, v_base, (int)v_row_stride, kv_tok_off, p, next, box.hi, qt.group,
                             p.head_dim_v);
            cute::cp_async_fence();
        }
        bool full = qt.no_padding;
#pragma unroll
        for (int a = 0; a < 3; ++a) {
            full &= origin[a] >= box.inner_lo[a] && origin[a] + (1 << p.kv_tile_log2[a]) <= box.inner_hi[a];
        }
        dq_step_sm90<Traits>(p, acc_s, acc_dp, full, WindowMasks::of_thread(window_masks), win_lo, win_hi, origin,
                             row_lse, row_delta, tQrKt(_, _, _, stage), acc_dq);
        if (more) {
#pragma unroll
            for (int a = 0; a < 3; ++a) origin[a] = next[a];
        }
    }
    cute::cp_async_wait<0>();
    __syncthreads();  // every warp is done reading sQ (its tile takes dQ)
    pack_dq_sm90<Element>(acc_dq, p.scale, threadIdx.x, sQ);
    __syncthreads();
    store_dq_sm90<kBlockM, kHeadDim, Element>(p, rows, qt, sQ, threadIdx.x, kNThreads);
}

}  // namespace natten_native

// One extern "C" entry point per instantiation (element type, head dim); 64 queries and 64 keys
// per tile (the backward plan's), 128 threads, three CTAs per SM (168 registers). H100, bf16,
// head dim 64: double-buffered K/V at three CTAs per SM beat two CTAs per SM by 18% on the 1-D
// anchor (four CTAs per SM spill: slower).
#define NATTEN_FNA_BACKWARD_DQ_SM90_KERNEL(NAME, ELEMENT, HEAD_DIM)                                        \
    extern "C" __global__ void __launch_bounds__(128, 3) NAME(const natten_native::FnaParams p) {          \
        extern __shared__ __align__(1024) char smem[];                                                     \
        natten_native::fna_backward_dq_sm90<natten_native::FnaBwdSm90Traits<ELEMENT, HEAD_DIM>>(p, smem);   \
    }
