// The dK/dV pass of the FNA backward for Hopper (sm_90a only): warpgroup MMA (wgmma, CuTe SM90
// GMMA atoms), f16/bf16 in, f32 accumulate. Same semantics, parameters, grid and outputs as
// fna_backward_dkdv in fna_backward.cuh (the SM80 pass, which runs everywhere else); it reads the
// delta that the dQ pass wrote:
//
// - one CTA per (KV tile of 64 keys, KV head, batch): one warpgroup, 128 threads; it walks the
//   box of Q tiles (64 queries) whose windows reach its keys (inverse windows), for every query
//   head of the GQA group, as one flat walk of group_size x n_tiles steps;
// - K and V resident, Q and dO of each step gathered with cp.async (token offsets per tile row,
//   stage_rows_sm90 of sm90_common.cuh) into K-major 128-byte-swizzled shared tiles,
//   double-buffered: step s + 1 loads under step s's products; the LSE (log2 units) and delta
//   of each step's queries in shared memory, double-buffered likewise;
// - S^T = K Q^T and dP^T = V dO^T: two SS wgmma issued back to back (64 keys x 64 queries);
// - P^T = exp2(S^T scale_log2 - LSE_log2[query]) (the columns are queries), masked on partial
//   steps by each key row's inverse window (column masks from the WindowMasks table), and
//   dS^T = P^T (dP^T - delta[query]), on the accumulator fragments;
// - dV += P^T dO and dK += dS^T Q: RS wgmma, P^T / dS^T converted in registers to the A operand,
//   dO / Q read from their shared tiles as MN-major B operands (the dQ pass's K^T view);
// - dK and dV (64 x head dim each) stay in registers through the walk; dK *= scale; both leave
//   through the K / V shared tiles as 16-byte row stores, padding keys skipped.
#pragma once

// The SM90 helpers (wgmma_gemm, rowcol_sm90, acc_as_a_operand_sm90, WindowMasks, exp2_approx).
#include "fna_backward_sm90.cuh"

namespace natten_native {

// Each step waits for its dK/dV products before the next step's barrier. Letting them run on
// under step s + 1's barrier and S^T / dP^T issue (an extra barrier before step s + 1's loads)
// made ptxas serialize every wgmma (C7515) and was 8-18% slower on the H200 anchors.
template <typename Element_, int kHeadDim_>
struct FnaBwdDkdvSm90Traits {
    using Element = Element_;
    static constexpr int kHeadDim = kHeadDim_;
    static constexpr int kBlockM = 64;  // keys of the CTA (the KV tile)
    static constexpr int kBlockN = 64;  // queries of a walked step (a Q tile)
    static constexpr int kNWarps = 4;
    static constexpr int kNThreads = kNWarps * 32;
    static constexpr int kStages = 2;
    static_assert(kHeadDim % 64 == 0, "128-byte swizzled rows");
    static_assert(kBlockN == 64, "column masks cover 64-column tiles (WindowMasks)");

    // S^T = K Q^T and dP^T = V dO^T; dV += P^T dO and dK += dS^T Q.
    using MmaS = typename WarpgroupMmasSm90<Element, kHeadDim, kBlockN>::MmaS;
    using MmaKV = typename WarpgroupMmasSm90<Element, kHeadDim, kBlockN>::MmaAcc;

    using SmemAtom = GMMA::Layout_K_SW128_Atom<Element>;
    using SmemLayoutK = decltype(tile_to_shape(SmemAtom{}, Shape<Int<kBlockM>, Int<kHeadDim>>{}));
    // The Q and dO stages (stage_rows_sm90); Q^T and dO^T are the MN-major B operands of
    // dK += dS^T Q and dV += P^T dO.
    using Gather = GatheredTilesSm90<Element, kHeadDim, kBlockN, kStages, kNThreads>;
    using SmemLayoutQ = typename Gather::SmemLayout;
    using SmemLayoutQt = typename Gather::SmemLayoutMN;

    static constexpr int kRowsPerThread = 2;
    static constexpr int kKBytes = kBlockM * kHeadDim * 2;            // K, and V
    static constexpr int kQBytes = kStages * kBlockN * kHeadDim * 2;  // Q stages, and dO stages
    // Geometry after the tiles: the KV tile box (128 bytes), the query box (128), per Q tile row
    // its token offset from the tile's first token (kBlockN ints), per stage the LSE (log2 units)
    // and delta of the step's queries (2 x kStages x kBlockN floats), per key row its inverse
    // window (lo[3], hi[3]: kBlockM x 6 ints; read on partial steps only), the window-mask table
    // of the Q tiles' columns (WindowMasks).
    static constexpr int kGeometryBytes =
        256 + kBlockN * 4 + 2 * kStages * kBlockN * 4 + kBlockM * 24 + WindowMasks::kBytes;
    // K, V, Q stages, dO stages, the geometry, +1024 to align the tiles to the swizzle period.
    static constexpr int kSmemBytes = 2 * kKBytes + 2 * kQBytes + kGeometryBytes + 1024;
};

// The rest of one walked step of a dK/dV warpgroup (64 keys x 64 queries) once it has issued
// S^T = K Q^T into acc_st and dP^T = V dO^T into acc_dpt (SS wgmma, not yet waited for):
// P^T = exp2(S^T scale_log2 - LSE[query] lse_to_log2), masked unless `full` by each key row's
// inverse window (`windows`: 6 ints per key row), dV += P^T dO, dS^T = P^T (dP^T - delta[query]),
// dK += dS^T Q (RS wgmma from the step's MN-major Q / dO views), then waits for both products.
// `under_products(dS^T)` (the converted fragment the dK product reads) runs while the dK product
// is in flight. `lse_s` / `delta_s`: the step's 64
// queries; `wg_thread`: this thread in its warpgroup. Both dK/dV passes run it.
template <typename Traits, typename Acc, typename FragB, typename AccKV, typename Work>
__device__ __forceinline__ void dkdv_step_sm90(const FnaParams& p, Acc& acc_st, Acc& acc_dpt, bool full,
                                               const uint16_t* masks, const int* windows, int wg_thread,
                                               const int (&origin)[3],
                                               const float* lse_s, float lse_to_log2, const float* delta_s,
                                               FragB tKrQt, FragB tVrdOt, AccKV& acc_dk, AccKV& acc_dv,
                                               Work under_products) {
    using Element = typename Traits::Element;
    constexpr int kRows = Traits::kRowsPerThread;
    typename Traits::MmaKV mma_kv;
    warpgroup_wait<1>();  // S^T done (dP^T may still run)
    warpgroup_fence_operand(acc_st);
    Tensor st = make_tensor(acc_st.data(), rowcol_sm90(acc_st.layout()));
    if (!full) {
#pragma unroll
        for (int r = 0; r < kRows; ++r) {
            const int* w = windows + wg_acc_row(wg_thread, r) * 6;
            const int lo[3] = {w[0], w[1], w[2]};
            const int hi[3] = {w[3], w[4], w[5]};
            mask_row_sm90(st, r, lo, hi, masks, p.q_tile_log2, origin);  // the columns are queries
        }
    }
#pragma unroll
    for (int c = 0; c < size<1>(st); c += 2) {
        const float2 lse = *reinterpret_cast<const float2*>(lse_s + acc_col(c));
        const float l0 = lse.x * lse_to_log2, l1 = lse.y * lse_to_log2;
#pragma unroll
        for (int r = 0; r < kRows; ++r) {
            st(r, c) = exp2_approx(fmaf(st(r, c), p.scale_log2, -l0));
            st(r, c + 1) = exp2_approx(fmaf(st(r, c + 1), p.scale_log2, -l1));
        }
    }
    {
        Tensor pt = convert_to<Element>(acc_st);
        Tensor tPt = make_tensor(pt.data(), acc_as_a_operand_sm90(pt.layout()));
        wgmma_gemm<false, -1>(mma_kv, tPt, tVrdOt, acc_dv);
    }
    warpgroup_wait<1>();  // dP^T done (dV may still run)
    warpgroup_fence_operand(acc_dpt);
    Tensor dpt = make_tensor(acc_dpt.data(), rowcol_sm90(acc_dpt.layout()));
#pragma unroll
    for (int c = 0; c < size<1>(dpt); c += 2) {
        const float2 delta = *reinterpret_cast<const float2*>(delta_s + acc_col(c));
#pragma unroll
        for (int r = 0; r < kRows; ++r) {
            dpt(r, c) = st(r, c) * (dpt(r, c) - delta.x);  // dS^T / scale
            dpt(r, c + 1) = st(r, c + 1) * (dpt(r, c + 1) - delta.y);
        }
    }
    {
        Tensor dst = convert_to<Element>(acc_dpt);
        Tensor tdSt = make_tensor(dst.data(), acc_as_a_operand_sm90(dst.layout()));
        wgmma_gemm<false, -1>(mma_kv, tdSt, tKrQt, acc_dk);
        under_products(dst);
    }
    warpgroup_wait<0>();
    warpgroup_fence_operand(acc_dv);
    warpgroup_fence_operand(acc_dk);
}

// A dK/dV warpgroup's epilogue, first half: dK (times the softmax scale) and dV as element
// pairs into its K and V shared tiles (`sK`, `sV`: 64 x head dim, read back by store_dkdv_sm90
// after a barrier).
template <typename Element, typename AccKV, typename SmemTile>
__device__ __forceinline__ void pack_dkdv_sm90(const AccKV& acc_dk, const AccKV& acc_dv, float scale, int wg_thread,
                                               SmemTile& sK, SmemTile& sV) {
    Tensor dk_rows = make_tensor(acc_dk.data(), rowcol_sm90(acc_dk.layout()));
    Tensor dv_rows = make_tensor(acc_dv.data(), rowcol_sm90(acc_dv.layout()));
    for_each_acc_pair(dk_rows, wg_thread, [&](int r, int c, int row, int col) {
        store_pair(sK(row, col), dk_rows(r, c) * scale, dk_rows(r, c + 1) * scale);
        store_pair(sV(row, col), dv_rows(r, c), dv_rows(r, c + 1));
    });
}

// The second half: 16-byte row stores of dK and dV from the shared tiles to the key rows of the
// tile box `kt` (padding keys skipped), by thread `thread` of `threads`.
template <int kBlockM, int kHeadDim, typename Element, typename SmemTile>
__device__ __forceinline__ void store_dkdv_sm90(const FnaParams& p, const HeadRows& rows, const TileBox& kt,
                                                const SmemTile& sK, const SmemTile& sV, int thread, int threads) {
    Element* dk_base = reinterpret_cast<Element*>(p.dk) + rows.k;
    Element* dv_base = reinterpret_cast<Element*>(p.dv) + rows.v;
    constexpr int kChunks = kHeadDim / 8;
    for (int idx = thread; idx < kBlockM * kChunks; idx += threads) {
        const int r = idx / kChunks;
        const int c = (idx % kChunks) * 8;
        int i[3];
        tile_coords(r, p.kv_tile_log2, kt.first, i);
        if (i[0] < kt.end[0] && i[1] < kt.end[1] && i[2] < kt.end[2]) {
            const long long token = token_of(p, i, kt.group);
            if (c < p.head_dim) {
                *reinterpret_cast<uint4*>(dk_base + token * rows.k_stride + c) =
                    *reinterpret_cast<const uint4*>(&sK(r, c));
            }
            if (c < p.head_dim_v) {
                *reinterpret_cast<uint4*>(dv_base + token * rows.v_stride + c) =
                    *reinterpret_cast<const uint4*>(&sV(r, c));
            }
        }
    }
}

template <typename Traits>
__device__ void fna_backward_dkdv_sm90(const FnaParams& p, char* smem_unaligned) {
    using Element = typename Traits::Element;
    constexpr int kBlockM = Traits::kBlockM;
    constexpr int kBlockN = Traits::kBlockN;
    constexpr int kHeadDim = Traits::kHeadDim;
    constexpr int kNThreads = Traits::kNThreads;

    char* smem_raw = align_to_swizzle_period(smem_unaligned);
    char* geometry = smem_raw + 2 * Traits::kKBytes + 2 * Traits::kQBytes;
    TileBox& kt = *reinterpret_cast<TileBox*>(geometry);
    QueryBox& qb = *reinterpret_cast<QueryBox*>(geometry + 128);
    int* q_tok_off = reinterpret_cast<int*>(geometry + 256);                          // [kBlockN]
    float* s_lse = reinterpret_cast<float*>(geometry + 256 + kBlockN * 4);            // [kStages][kBlockN]
    float* s_delta = s_lse + Traits::kStages * kBlockN;                               // [kStages][kBlockN]
    int* windows = reinterpret_cast<int*>(s_delta + Traits::kStages * kBlockN);       // [kBlockM][6]
    uint16_t* window_masks = reinterpret_cast<uint16_t*>(windows + kBlockM * 6);
    static_assert(sizeof(TileBox) <= 128 && sizeof(QueryBox) <= 128);
    static_assert(kBlockM <= kNThreads && kBlockN <= kNThreads);
    {
        TileBox mine;
        if (!tile_of(p, blockIdx.x, p.kv_len, p.kv_tile_log2, p.kv_tiles, mine)) return;
        if (threadIdx.x == 0) kt = mine;
        if (threadIdx.x < 32) query_box_of_warp(p, mine, qb, threadIdx.x);
        if (threadIdx.x < kBlockM) {
            // The queries that see key row threadIdx.x (padding keys take the last key's: finite,
            // never stored).
            int key[3];
            tile_coords(threadIdx.x, p.kv_tile_log2, mine.first, key);
            int* w = windows + threadIdx.x * 6;
#pragma unroll
            for (int a = 0; a < 3; ++a) {
                axis_inverse_window(p, a, min(key[a], mine.end[a] - 1), mine.glen[a], w[a], w[3 + a]);
            }
        }
    }
    if (threadIdx.x < kBlockN) {
        // Token offset of Q tile row r from the tile's first token (the same for every tile).
        q_tok_off[threadIdx.x] = tile_row_offset(p, p.q_tile_log2, threadIdx.x);
    }
    WindowMasks::build(window_masks, p.q_tile_log2, threadIdx.x, kNThreads);
    __syncthreads();
    const int head_kv = blockIdx.y;
    const int batch = blockIdx.z;
    const int group_size = p.heads / p.heads_kv;
    const int head0 = head_kv * group_size;

    // K/V rows of this KV head; Q/dO rows of the group's first query head (the others are
    // head_dim / head_dim_v columns further).
    const HeadRows rows = head_rows(p, batch, head0, head_kv);
    const Element* k_base = reinterpret_cast<const Element*>(p.k) + rows.k;
    const Element* v_base = reinterpret_cast<const Element*>(p.v) + rows.v;
    const Element* q_base = reinterpret_cast<const Element*>(p.q) + rows.q;
    const Element* do_base = reinterpret_cast<const Element*>(p.d_out) + rows.o;

    Element* smem_k = reinterpret_cast<Element*>(smem_raw);
    Element* smem_v = reinterpret_cast<Element*>(smem_raw + Traits::kKBytes);
    Element* smem_q = reinterpret_cast<Element*>(smem_raw + 2 * Traits::kKBytes);
    Element* smem_do = reinterpret_cast<Element*>(smem_raw + 2 * Traits::kKBytes + Traits::kQBytes);
    Tensor sK = make_tensor(make_smem_ptr(smem_k), typename Traits::SmemLayoutK{});
    Tensor sV = make_tensor(make_smem_ptr(smem_v), typename Traits::SmemLayoutK{});
    Tensor sQ = make_tensor(make_smem_ptr(smem_q), typename Traits::SmemLayoutQ{});
    Tensor sdO = make_tensor(make_smem_ptr(smem_do), typename Traits::SmemLayoutQ{});
    Tensor sQt = make_tensor(make_smem_ptr(smem_q), typename Traits::SmemLayoutQt{});
    Tensor sdOt = make_tensor(make_smem_ptr(smem_do), typename Traits::SmemLayoutQt{});

    typename Traits::MmaS mma_s;
    typename Traits::MmaKV mma_kv;
    auto thr_s = mma_s.get_thread_slice(threadIdx.x);
    auto thr_kv = mma_kv.get_thread_slice(threadIdx.x);
    Tensor tSrK = thr_s.partition_fragment_A(sK);       // (MMA, 1, K blocks)
    Tensor tSrV = thr_s.partition_fragment_A(sV);       // (MMA, 1, K blocks)
    Tensor tSrQ = thr_s.partition_fragment_B(sQ);       // (MMA, 1, K blocks, stages)
    Tensor tSrdO = thr_s.partition_fragment_B(sdO);     // (MMA, 1, K blocks, stages)
    Tensor tKrQt = thr_kv.partition_fragment_B(sQt);    // (MMA, 1, query blocks, stages)
    Tensor tVrdOt = thr_kv.partition_fragment_B(sdOt);  // (MMA, 1, query blocks, stages)
    Tensor acc_dk = partition_fragment_C(mma_kv, Shape<Int<kBlockM>, Int<kHeadDim>>{});
    Tensor acc_dv = partition_fragment_C(mma_kv, Shape<Int<kBlockM>, Int<kHeadDim>>{});

    const int n_tiles = qb.tiles[0] * qb.tiles[1] * qb.tiles[2];
    const int n_steps = group_size * n_tiles;

    // Stages step s (query head head0 + s / n_tiles, Q tile s % n_tiles of the query box): its Q
    // and dO tiles into stage `stage` (cp.async), and the LSE (log2 units) and delta of query
    // row threadIdx.x into registers (+inf and 0 for padding rows), stored later.
    auto stage_step = [&](int s, int stage, float& lse_log2, float& delta) {
        const int g = s / n_tiles;
        int origin[3];
        walk_origin(s - g * n_tiles, qb.lo, qb.tiles, p.q_tile_log2, origin);
        Tensor qn = sQ(_, _, stage);
        Tensor don = sdO(_, _, stage);
        stage_rows_sm90<Traits>(qn, q_base + g * p.head_dim, (int)rows.q_stride, q_tok_off, p, p.q_tile_log2,
                                origin, qb.hi, kt.group, p.head_dim);
        stage_rows_sm90<Traits>(don, do_base + g * p.head_dim_v, (int)rows.o_stride, q_tok_off, p,
                                p.q_tile_log2, origin, qb.hi, kt.group, p.head_dim_v);
        cute::cp_async_fence();
        lse_log2 = INFINITY;
        delta = 0.f;
        if (threadIdx.x < kBlockN) {
            int i[3];
            tile_coords(threadIdx.x, p.q_tile_log2, origin, i);
            if (i[0] < qb.hi[0] && i[1] < qb.hi[1] && i[2] < qb.hi[2]) {
                const long long row =
                    ((long long)batch * p.tokens + token_of(p, i, kt.group)) * p.heads + head0 + g;
                lse_log2 = p.lse[row] * 1.4426950408889634f;
                delta = p.delta[row];
            }
        }
    };

    stage_tile<kBlockM, kHeadDim, kNThreads>(sK, k_base, rows.k_stride, p, p.kv_tile_log2, kt.first, kt.end,
                                             kt.group, p.head_dim);
    stage_tile<kBlockM, kHeadDim, kNThreads>(sV, v_base, rows.v_stride, p, p.kv_tile_log2, kt.first, kt.end,
                                             kt.group, p.head_dim_v);
    float next_lse = INFINITY, next_delta = 0.f;
    if (n_steps > 0) {
        stage_step(0, 0, next_lse, next_delta);
    } else {
        cute::cp_async_fence();
    }
    if (threadIdx.x < kBlockN) {
        s_lse[threadIdx.x] = next_lse;
        s_delta[threadIdx.x] = next_delta;
    }
    clear(acc_dk);
    clear(acc_dv);

    for (int s = 0; s < n_steps; ++s) {
        const int stage = s & 1;
        cute::cp_async_wait<0>();
        // Step s's Q and dO (and K, V) landed and are visible to the async proxy, its LSE and
        // delta are in shared memory; every warp is done with step s - 1 (its products were
        // waited for), whose buffers the next loads overwrite.
        cutlass::arch::fence_view_async_shared();
        __syncthreads();
        Tensor acc_st = partition_fragment_C(mma_s, Shape<Int<kBlockM>, Int<kBlockN>>{});
        Tensor acc_dpt = partition_fragment_C(mma_s, Shape<Int<kBlockM>, Int<kBlockN>>{});
        wgmma_gemm<true, -1>(mma_s, tSrK, tSrQ(_, _, _, stage), acc_st);
        wgmma_gemm<true, -1>(mma_s, tSrV, tSrdO(_, _, _, stage), acc_dpt);
        const bool more = s + 1 < n_steps;
        if (more) stage_step(s + 1, stage ^ 1, next_lse, next_delta);

        int origin[3];
        walk_origin(s % n_tiles, qb.lo, qb.tiles, p.q_tile_log2, origin);
        // Full: no padding key, and the step's queries inside the inner box (queries that see
        // every key of the tile; window starts and ends are monotone): then no padding query
        // either, and every key row's inverse window holds every query of the step. (Computed
        // once per CTA instead of the SM80 pass's two query windows per step: 1.13-1.29x on the
        // H200 anchors.)
        bool full = kt.no_padding;
#pragma unroll
        for (int a = 0; a < 3; ++a) {
            full &= origin[a] >= qb.full_lo[a] && origin[a] + (1 << p.q_tile_log2[a]) <= qb.full_hi[a];
        }

        dkdv_step_sm90<Traits>(p, acc_st, acc_dpt, full, WindowMasks::of_thread(window_masks), windows, threadIdx.x,
                               origin, s_lse + stage * kBlockN, 1.f, s_delta + stage * kBlockN,
                               tKrQt(_, _, _, stage), tVrdOt(_, _, _, stage),
                               acc_dk, acc_dv, [&](const auto&) {
                                   // Step s + 1's LSE and delta, loaded under the products, into
                                   // the other buffer (last read in step s - 1).
                                   if (more && threadIdx.x < kBlockN) {
                                       s_lse[(stage ^ 1) * kBlockN + threadIdx.x] = next_lse;
                                       s_delta[(stage ^ 1) * kBlockN + threadIdx.x] = next_delta;
                                   }
                               });
    }
    cute::cp_async_wait<0>();
    __syncthreads();  // every product is done: the K and V tiles take dK and dV

    pack_dkdv_sm90<Element>(acc_dk, acc_dv, p.scale, threadIdx.x, sK, sV);
    __syncthreads();
    store_dkdv_sm90<kBlockM, kHeadDim, Element>(p, rows, kt, sK, sV, threadIdx.x, kNThreads);
}

}  // namespace natten_native

// One extern "C" entry point per instantiation (element type, head dim, minimum CTAs per SM for
// __launch_bounds__); 64 keys per KV tile and 64 queries per walked Q tile (the backward plan's),
// 128 threads (one warpgroup). H200, bf16: head dim 128 at 2 CTAs per SM (244 registers, 100 KB
// of shared memory each); head dim 64 at 3 CTAs per SM (168 registers, a few bytes of spill) beat
// 2 CTAs per SM by 19% on the 1-D anchor.
#define NATTEN_FNA_BACKWARD_DKDV_SM90_KERNEL(NAME, ELEMENT, HEAD_DIM, MIN_CTAS)                          \
    extern "C" __global__ void __launch_bounds__(128, MIN_CTAS) NAME(const natten_native::FnaParams p) {  \
        extern __shared__ __align__(1024) char smem[];                                                  \
        natten_native::fna_backward_dkdv_sm90<natten_native::FnaBwdDkdvSm90Traits<ELEMENT, HEAD_DIM>>(p, \
                                                                                                 smem); \
    }
