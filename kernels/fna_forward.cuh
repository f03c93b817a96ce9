// Fused neighborhood attention forward (FNA), SM80-class: warp-level tensor-core MMA
// (mma.sync m16n8k16, f16/bf16 in, f32 accumulate) with CuTe, cp.async staging, online softmax
// in f32. Runs on every NVIDIA GPU from Ampere on (SM80 ... SM100).
//
// Multi-dimensional tiling is fused into the kernel (no permutation copy):
// - one CTA per (Q tile, head, batch); a Q tile is a box of group-local queries of one dilation
//   group per axis (groups folded into blockIdx.x), gathered row by row from the heads-last
//   tensors;
// - its KV box is [window_start(first query), window_end(last query)) per axis, walked in KV
//   tiles (boxes of keys); a KV tile inside [window_start(last), window_end(first)) on every axis
//   of a Q tile without padding is "full": no per-element mask (the block-sparse fast path);
// - other tiles mask each score with the query's window per axis (na_window.cuh).
#pragma once

#include "fna_common.cuh"

namespace natten_native {

// ---------------------------------------------------------------------------------------------
// The kernel body.

template <typename Traits>
__device__ void fna_forward(const FnaParams& p, char* smem_raw) {
    using Element = typename Traits::Element;
    constexpr int kBlockM = Traits::kBlockM;
    constexpr int kBlockN = Traits::kBlockN;
    constexpr int kHeadDim = Traits::kHeadDim;
    constexpr int kNWarps = Traits::kNWarps;
    constexpr int kNThreads = Traits::kNThreads;
    constexpr int kRows = Traits::kRowsPerThread;

    // The tile geometry lives in shared memory: read where needed (staging, masking, the
    // epilogue), it holds no registers through the KV walk, whose MMA accumulators need them
    // (with it in registers, the 128-query kernel spilled 228 bytes instead of 196).
    __shared__ TileBox qt;
    __shared__ KvBox box;
    TileBox mine;
    if (!tile_of(p, blockIdx.x, p.len, p.q_tile_log2, p.q_tiles, mine)) return;
    if (threadIdx.x == 0) {
        qt = mine;
        box = kv_box_of(p, mine);
    }
    __syncthreads();
    const int head = blockIdx.y;
    const int batch = blockIdx.z;
    const int head_kv = head / (p.heads / p.heads_kv);

    const HeadRows rows = head_rows(p, batch, head, head_kv);
    const Element* q_base = reinterpret_cast<const Element*>(p.q) + rows.q;
    const Element* k_base = reinterpret_cast<const Element*>(p.k) + rows.k;
    const Element* v_base = reinterpret_cast<const Element*>(p.v) + rows.v;

    Tensor sQ = make_tensor(make_smem_ptr(reinterpret_cast<Element*>(smem_raw)), typename Traits::SmemLayoutQ{});
    Tensor sK = make_tensor(sQ.data() + size(sQ), typename Traits::SmemLayoutKV{});
    Tensor sV = make_tensor(sK.data() + size(sK), typename Traits::SmemLayoutKV{});
    Tensor sVt = make_tensor(sV.data(), typename Traits::SmemLayoutKVt{});
    Tensor sVtNoSwizzle = make_tensor(sV.data().get(), typename Traits::SmemLayoutKVtNoSwizzle{});

    typename Traits::TiledMma tiled_mma;
    auto thr_mma = tiled_mma.get_thread_slice(threadIdx.x);
    Tensor tSrQ = thr_mma.partition_fragment_A(sQ);            // (MMA, MMA_M, MMA_K)
    Tensor tSrK = thr_mma.partition_fragment_B(sK);            // (MMA, MMA_N, MMA_K)
    Tensor tOrVt = thr_mma.partition_fragment_B(sVtNoSwizzle);  // (MMA, MMA_K, MMA_N)
    Tensor acc_o = partition_fragment_C(tiled_mma, Shape<Int<kBlockM>, Int<kHeadDim>>{});

    auto copy_q = make_tiled_copy_A(typename Traits::SmemCopyAtom{}, tiled_mma);
    auto thr_copy_q = copy_q.get_thread_slice(threadIdx.x);
    Tensor tSsQ = thr_copy_q.partition_S(sQ);
    auto copy_k = make_tiled_copy_B(typename Traits::SmemCopyAtom{}, tiled_mma);
    auto thr_copy_k = copy_k.get_thread_slice(threadIdx.x);
    Tensor tSsK = thr_copy_k.partition_S(sK);
    auto copy_v = make_tiled_copy_B(typename Traits::SmemCopyAtomTransposed{}, tiled_mma);
    auto thr_copy_v = copy_v.get_thread_slice(threadIdx.x);
    Tensor tOsVt = thr_copy_v.partition_S(sVt);

    float row_max[kRows], row_sum[kRows];
#pragma unroll
    for (int r = 0; r < kRows; ++r) {
        row_max[r] = -INFINITY;
        row_sum[r] = 0.f;
    }

    int win_lo[kRows][3], win_hi[kRows][3];
    row_windows<kRows, kNWarps>(p, qt, win_lo, win_hi);
    const int n_tiles = box.tiles[0] * box.tiles[1] * box.tiles[2];
    stage_tile<kBlockM, kHeadDim, kNThreads>(sQ, q_base, rows.q_stride, p, p.q_tile_log2, qt.first, qt.end,
                                             qt.group, p.head_dim);
    int origin[3];
    walk_origin(0, box.lo, box.tiles, p.kv_tile_log2, origin);
    stage_tile<kBlockN, kHeadDim, kNThreads>(sK, k_base, rows.k_stride, p, p.kv_tile_log2, origin, box.hi,
                                             qt.group, p.head_dim);
    cute::cp_async_fence();
    clear(acc_o);

    for (int t = 0; t < n_tiles; ++t) {
        Tensor acc_s = partition_fragment_C(tiled_mma, Shape<Int<kBlockM>, Int<kBlockN>>{});
        clear(acc_s);
        cute::cp_async_wait<0>();
        __syncthreads();  // K(t) landed; every warp is done with V(t - 1)
        stage_tile<kBlockN, kHeadDim, kNThreads>(sV, v_base, rows.v_stride, p, p.kv_tile_log2, origin, box.hi,
                                                 qt.group, p.head_dim_v);
        cute::cp_async_fence();

        gemm_smem(acc_s, tSrQ, tSrK, tSsQ, tSsK, tiled_mma, copy_q, copy_k, thr_copy_q, thr_copy_k);

        Tensor scores = make_tensor(acc_s.data(), rowcol(acc_s.layout()));
        bool full = qt.no_padding;
#pragma unroll
        for (int a = 0; a < 3; ++a) {
            full &= origin[a] >= box.inner_lo[a] && origin[a] + (1 << p.kv_tile_log2[a]) <= box.inner_hi[a];
        }
        if (!full) mask_scores<kRows>(scores, win_lo, win_hi, p.kv_tile_log2, origin);

        cute::cp_async_wait<0>();
        __syncthreads();  // V(t) landed; every warp is done with K(t)
        if (t + 1 < n_tiles) {
            walk_origin(t + 1, box.lo, box.tiles, p.kv_tile_log2, origin);
            stage_tile<kBlockN, kHeadDim, kNThreads>(sK, k_base, rows.k_stride, p, p.kv_tile_log2, origin,
                                                     box.hi, qt.group, p.head_dim);
            cute::cp_async_fence();
        }

        // Online softmax (base-2 exponentials of scale * log2(e) * s; the scale is positive);
        // rows that saw no key yet keep max -inf and sum 0.
        Tensor o_rows = make_tensor(acc_o.data(), rowcol(acc_o.layout()));
#pragma unroll
        for (int r = 0; r < kRows; ++r) {
            float m = row_max[r];
#pragma unroll
            for (int c = 0; c < size<1>(scores); ++c) m = fmaxf(m, scores(r, c));
            m = quad_max(m);
            const float m_scaled = m == -INFINITY ? 0.f : m * p.scale_log2;
            const float correction = exp2f(row_max[r] * p.scale_log2 - m_scaled);
            row_max[r] = m;
            row_sum[r] *= correction;
#pragma unroll
            for (int c = 0; c < size<1>(o_rows); ++c) o_rows(r, c) *= correction;
#pragma unroll
            for (int c = 0; c < size<1>(scores); ++c) {
                scores(r, c) = exp2f(scores(r, c) * p.scale_log2 - m_scaled);
                row_sum[r] += scores(r, c);
            }
        }

        Tensor p_regs = convert_to<Element>(acc_s);
        Tensor tOrP = make_tensor(p_regs.data(), acc_as_a_operand(p_regs.layout()));
        gemm_regs_smem(acc_o, tOrP, tOrVt, tOsVt, tiled_mma, copy_v, thr_copy_v);
    }

    // Epilogue: normalise, LSE (natural log), O through shared memory to 16-byte stores.
    Tensor o_rows = make_tensor(acc_o.data(), rowcol(acc_o.layout()));
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
    __syncthreads();  // every warp is done reading sQ / sV
    Element* out_base =
        reinterpret_cast<Element*>(p.out) + rows.o;
    store_rows<Traits, kBlockM>(acc_o, sQ, out_base, rows.o_stride, p, p.q_tile_log2, qt.first, qt.end, qt.group,
                                p.head_dim_v);
}

}  // namespace natten_native

// One extern "C" entry point per instantiation (element type, head dim, block sizes, warps).
#define NATTEN_FNA_FORWARD_KERNEL(NAME, ELEMENT, HEAD_DIM, BLOCK_M, BLOCK_N, WARPS)                   \
    extern "C" __global__ void __launch_bounds__(WARPS * 32) NAME(const natten_native::FnaParams p) { \
        extern __shared__ __align__(128) char smem[];                                                \
        natten_native::fna_forward<natten_native::FnaTraits<ELEMENT, HEAD_DIM, BLOCK_M, BLOCK_N, WARPS>>( \
            p, smem);                                                                                \
    }
