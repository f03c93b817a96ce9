// Fused neighborhood attention backward (FNA), SM80-class, deterministic (no atomics): two
// passes over the same multi-dimensional tiling as the forward (fna_forward.cuh).
//
// - dQ pass, one CTA per (Q tile, head, batch): computes delta = rowsum(dO * O) for its rows
//   (written for the next pass), then walks the Q tile's KV box like the forward:
//   S = Q K^T, dP = dO V^T, P = exp(scale S - LSE), dS = P (dP - delta), dQ += dS K;
//   dQ *= scale.
// - dK/dV pass, one CTA per (KV tile, KV head, batch): walks the box of queries whose windows
//   reach its keys (inverse windows), for every query head of the GQA group, in the transposed
//   form that keeps every product's A operand in registers:
//   S^T = K Q^T, dP^T = V dO^T, P^T = exp(scale S^T - LSE), dS^T = P^T (dP^T - delta),
//   dV += P^T dO, dK += dS^T Q; dK *= scale.
// Masking, the full-tile fast path and padding follow the forward: padding queries get
// LSE = +inf (P = 0) and delta = 0.
// Both passes double-buffer the walked side (K/V in the dQ pass; Q/dO, LSE and delta in the
// dK/dV pass): the next tile's cp.async loads run under the current tile's products. Head dim
// 256 single-buffers it (kStages = 1: the shared memory of an A100 or H100 CTA) and splits the
// dK/dV pass into a dK pass and a dV pass (kGrads): 64 x 256 f32 accumulators for both dK and
// dV would need 256 registers per thread.
#pragma once

#include "fna_common.cuh"

namespace natten_native {

// Shared memory of both passes: two tiles of kBlockM rows (the CTA's own: Q and dO, or K and
// V), kStages buffers of two tiles of kBlockN rows (the walked side), then two buffers of the
// LSE (in log2 units) and delta of up to max(kBlockM, kBlockN) query rows.
template <typename Traits, int kStages = 2>
constexpr int backward_smem_bytes() {
    return (2 * Traits::kBlockM + 2 * kStages * Traits::kBlockN) * Traits::kHeadDim * 2 +
           4 * (Traits::kBlockM > Traits::kBlockN ? Traits::kBlockM : Traits::kBlockN) * 4;
}

// The gradients a dK/dV pass computes (kGrads): both, or one of them (head dim 256).
constexpr int kGradK = 1;
constexpr int kGradV = 2;

// kStages: buffers of the walked K/V tiles (2: tile t + 1 loads under tile t's products; 1: it
// loads after them).
template <typename Traits, int kStages = 2>
__device__ void fna_backward_dq(const FnaParams& p, char* smem_raw) {
    static_assert(kStages == 1 || kStages == 2);
    using Element = typename Traits::Element;
    constexpr int kBlockM = Traits::kBlockM;
    constexpr int kBlockN = Traits::kBlockN;
    constexpr int kHeadDim = Traits::kHeadDim;
    constexpr int kNWarps = Traits::kNWarps;
    constexpr int kNThreads = Traits::kNThreads;
    constexpr int kRows = Traits::kRowsPerThread;

    TileBox qt;
    if (!tile_of(p, blockIdx.x, p.len, p.q_tile_log2, p.q_tiles, qt)) return;
    const KvBox box = kv_box_of(p, qt);
    const int head = blockIdx.y;
    const int batch = blockIdx.z;
    const int head_kv = head / (p.heads / p.heads_kv);

    const HeadRows rows = head_rows(p, batch, head, head_kv);
    const Element* q_base = reinterpret_cast<const Element*>(p.q) + rows.q;
    const Element* do_base = reinterpret_cast<const Element*>(p.d_out) + rows.o;
    const Element* o_base = reinterpret_cast<const Element*>(p.out) + rows.o;
    const Element* k_base = reinterpret_cast<const Element*>(p.k) + rows.k;
    const Element* v_base = reinterpret_cast<const Element*>(p.v) + rows.v;

    // Q, dO, then the K/V buffers: K(0), K(1), V(0), V(1) (K, V with one stage).
    Tensor sQ = make_tensor(make_smem_ptr(reinterpret_cast<Element*>(smem_raw)), typename Traits::SmemLayoutQ{});
    Tensor sdO = make_tensor(sQ.data() + size(sQ), typename Traits::SmemLayoutQ{});
    Tensor sK = make_tensor(sdO.data() + size(sdO), typename Traits::SmemLayoutKV{});
    Tensor sV = make_tensor(sK.data() + kStages * size(sK), typename Traits::SmemLayoutKV{});
    Tensor sKt = make_tensor(sK.data(), typename Traits::SmemLayoutKVt{});
    Tensor sKtNoSwizzle = make_tensor(sK.data().get(), typename Traits::SmemLayoutKVtNoSwizzle{});
    constexpr int kBuffer = kBlockN * kHeadDim;  // elements between the two buffers of K or V
    float* s_lse = reinterpret_cast<float*>(smem_raw + (2 * kBlockM + 2 * kStages * kBlockN) * kHeadDim * 2);
    float* s_delta = s_lse + kBlockM;

    typename Traits::TiledMma tiled_mma;
    auto thr_mma = tiled_mma.get_thread_slice(threadIdx.x);
    Tensor tSrQ = thr_mma.partition_fragment_A(sQ);
    Tensor tSrK = thr_mma.partition_fragment_B(sK);
    Tensor tPrdO = thr_mma.partition_fragment_A(sdO);
    Tensor tPrV = thr_mma.partition_fragment_B(sV);
    Tensor tQrKt = thr_mma.partition_fragment_B(sKtNoSwizzle);
    Tensor acc_dq = partition_fragment_C(tiled_mma, Shape<Int<kBlockM>, Int<kHeadDim>>{});

    auto copy_a = make_tiled_copy_A(typename Traits::SmemCopyAtom{}, tiled_mma);
    auto thr_copy_a = copy_a.get_thread_slice(threadIdx.x);
    Tensor tSsQ = thr_copy_a.partition_S(sQ);
    Tensor tPsdO = thr_copy_a.partition_S(sdO);
    auto copy_b = make_tiled_copy_B(typename Traits::SmemCopyAtom{}, tiled_mma);
    auto thr_copy_b = copy_b.get_thread_slice(threadIdx.x);
    Tensor tSsK = thr_copy_b.partition_S(sK);
    Tensor tPsV = thr_copy_b.partition_S(sV);
    auto copy_bt = make_tiled_copy_B(typename Traits::SmemCopyAtomTransposed{}, tiled_mma);
    auto thr_copy_bt = copy_bt.get_thread_slice(threadIdx.x);
    Tensor tQsKt = thr_copy_bt.partition_S(sKt);

    // Stages the K and V tiles at `origin` into buffer `buf`.
    auto stage_kv = [&](const int (&origin)[3], int buf) {
        Tensor k_buf = make_tensor(sK.data() + buf * kBuffer, typename Traits::SmemLayoutKV{});
        Tensor v_buf = make_tensor(sV.data() + buf * kBuffer, typename Traits::SmemLayoutKV{});
        stage_tile<kBlockN, kHeadDim, kNThreads>(k_buf, k_base, rows.k_stride, p, p.kv_tile_log2, origin, box.hi,
                                                 qt.group, p.head_dim);
        stage_tile<kBlockN, kHeadDim, kNThreads>(v_buf, v_base, rows.v_stride, p, p.kv_tile_log2, origin, box.hi,
                                                 qt.group, p.head_dim_v);
    };

    stage_tile<kBlockM, kHeadDim, kNThreads>(sQ, q_base, rows.q_stride, p, p.q_tile_log2, qt.first, qt.end,
                                             qt.group, p.head_dim);
    stage_tile<kBlockM, kHeadDim, kNThreads>(sdO, do_base, rows.o_stride, p, p.q_tile_log2, qt.first, qt.end,
                                             qt.group, p.head_dim_v);
    int origin[3];
    walk_origin(0, box.lo, box.tiles, p.kv_tile_log2, origin);
    stage_kv(origin, 0);
    cute::cp_async_fence();

    // delta = rowsum(dO * O) in f32 and the LSE in log2 units, per query row; written out for
    // the dK/dV pass.
    for (int r = threadIdx.x; r < kBlockM; r += kNThreads) {
        int i[3];
        tile_coords(r, p.q_tile_log2, qt.first, i);
        float lse_log2 = INFINITY, delta = 0.f;
        if (i[0] < qt.end[0] && i[1] < qt.end[1] && i[2] < qt.end[2]) {
            const long long token = token_of(p, i, qt.group);
            const long long row = ((long long)batch * p.tokens + token) * p.heads + head;
            for (int c = 0; c < p.head_dim_v; c += 8) {
                delta = dot8_f32(o_base + token * rows.o_stride + c, do_base + token * rows.o_stride + c, delta);
            }
            lse_log2 = p.lse[row] * 1.4426950408889634f;
            p.delta[row] = delta;
        }
        s_lse[r] = lse_log2;
        s_delta[r] = delta;
    }

    int win_lo[kRows][3], win_hi[kRows][3];
    row_windows<kRows, kNWarps>(p, qt, win_lo, win_hi);
    clear(acc_dq);

    const int n_tiles = box.tiles[0] * box.tiles[1] * box.tiles[2];
    for (int t = 0; t < n_tiles; ++t) {
        cute::cp_async_wait<0>();
        // K(t), V(t) (and Q, dO, LSE, delta) are in shared memory, and every warp is done with
        // tile t - 1: its buffer takes tile t + 1, loaded under this tile's products.
        __syncthreads();
        const int buf = kStages == 2 ? t & 1 : 0;
        if (kStages == 2 && t + 1 < n_tiles) {
            int next[3];
            walk_origin(t + 1, box.lo, box.tiles, p.kv_tile_log2, next);
            stage_kv(next, buf ^ 1);
            cute::cp_async_fence();
        }
        Tensor tSsK_t = tSsK;
        Tensor tPsV_t = tPsV;
        Tensor tQsKt_t = tQsKt;
        tSsK_t.data() = tSsK.data() + buf * kBuffer;
        tPsV_t.data() = tPsV.data() + buf * kBuffer;
        tQsKt_t.data() = tQsKt.data() + buf * kBuffer;

        Tensor acc_s = partition_fragment_C(tiled_mma, Shape<Int<kBlockM>, Int<kBlockN>>{});
        Tensor acc_dp = partition_fragment_C(tiled_mma, Shape<Int<kBlockM>, Int<kBlockN>>{});
        clear(acc_s);
        clear(acc_dp);
        gemm_smem(acc_s, tSrQ, tSrK, tSsQ, tSsK_t, tiled_mma, copy_a, copy_b, thr_copy_a, thr_copy_b);
        gemm_smem(acc_dp, tPrdO, tPrV, tPsdO, tPsV_t, tiled_mma, copy_a, copy_b, thr_copy_a, thr_copy_b);

        Tensor scores = make_tensor(acc_s.data(), rowcol(acc_s.layout()));
        Tensor dp = make_tensor(acc_dp.data(), rowcol(acc_dp.layout()));
        walk_origin(t, box.lo, box.tiles, p.kv_tile_log2, origin);
        bool full = qt.no_padding;
#pragma unroll
        for (int a = 0; a < 3; ++a) {
            full &= origin[a] >= box.inner_lo[a] && origin[a] + (1 << p.kv_tile_log2[a]) <= box.inner_hi[a];
        }
        if (!full) mask_scores<kRows>(scores, win_lo, win_hi, p.kv_tile_log2, origin);
#pragma unroll
        for (int r = 0; r < kRows; ++r) {
            const int row = acc_row(r, kNWarps);
            const float lse = s_lse[row], delta = s_delta[row];
#pragma unroll
            for (int c = 0; c < size<1>(scores); ++c) {
                const float prob = exp2f(scores(r, c) * p.scale_log2 - lse);
                scores(r, c) = prob * (dp(r, c) - delta);  // dS / scale
            }
        }
        Tensor ds = convert_to<Element>(acc_s);
        Tensor tdS = make_tensor(ds.data(), acc_as_a_operand(ds.layout()));
        gemm_regs_smem(acc_dq, tdS, tQrKt, tQsKt_t, tiled_mma, copy_bt, thr_copy_bt);
        if (kStages == 1 && t + 1 < n_tiles) {
            __syncthreads();  // every warp is done with K(t) and V(t)
            int next[3];
            walk_origin(t + 1, box.lo, box.tiles, p.kv_tile_log2, next);
            stage_kv(next, 0);
            cute::cp_async_fence();
        }
    }
    cute::cp_async_wait<0>();
    __syncthreads();  // every warp is done with Q (its tile takes dQ)
#pragma unroll
    for (int e = 0; e < size(acc_dq); ++e) acc_dq(e) *= p.scale;
    store_rows<Traits, kBlockM>(acc_dq, sQ, reinterpret_cast<Element*>(p.dq) + rows.q, rows.q_stride, p,
                                p.q_tile_log2, qt.first, qt.end, qt.group, p.head_dim);
}

// The dK/dV pass: here the M side of every product is the CTA's keys (kBlockM of them, tile
// shape kv_tile_log2) and the N side the walked queries (kBlockN, tile shape q_tile_log2).
// kStages: buffers of the walked Q/dO tiles (as in the dQ pass); kGrads: kGradK | kGradV (both),
// kGradK (dK only: dV is not computed or written) or kGradV (dV only: no dP^T product, V is not
// loaded, dK is not written).
template <typename Traits, int kStages = 2, int kGrads = kGradK | kGradV>
__device__ void fna_backward_dkdv(const FnaParams& p, char* smem_raw) {
    static_assert(kStages == 1 || kStages == 2);
    static_assert(kGrads >= 1 && kGrads <= 3);
    constexpr bool kDk = kGrads & kGradK;
    constexpr bool kDv = kGrads & kGradV;
    using Element = typename Traits::Element;
    constexpr int kBlockM = Traits::kBlockM;
    constexpr int kBlockN = Traits::kBlockN;
    constexpr int kHeadDim = Traits::kHeadDim;
    constexpr int kNWarps = Traits::kNWarps;
    constexpr int kNThreads = Traits::kNThreads;
    constexpr int kRows = Traits::kRowsPerThread;

    // The tile geometry lives in shared memory (as in the forward): no registers held through
    // the walk over query tiles.
    __shared__ TileBox kt;
    __shared__ QueryBox qb;
    TileBox mine;
    if (!tile_of(p, blockIdx.x, p.kv_len, p.kv_tile_log2, p.kv_tiles, mine)) return;
    const int head_kv = blockIdx.y;
    const int batch = blockIdx.z;
    const int group_size = p.heads / p.heads_kv;

    // The box of queries whose windows reach a key of this tile, walked in Q tiles.
    if (threadIdx.x == 0) kt = mine;
    if (threadIdx.x < 32) query_box_of_warp(p, mine, qb, threadIdx.x);
    __syncthreads();
    const int n_tiles = qb.tiles[0] * qb.tiles[1] * qb.tiles[2];

    // K/V rows of this KV head; the Q-side offsets are those of each walked query head.
    const HeadRows rows = head_rows(p, batch, head_kv * group_size, head_kv);
    const Element* k_base = reinterpret_cast<const Element*>(p.k) + rows.k;
    const Element* v_base = reinterpret_cast<const Element*>(p.v) + rows.v;

    // K, V, then the Q/dO buffers: Q(0), Q(1), dO(0), dO(1) (Q, dO with one stage); after them
    // the two buffers of LSE and delta.
    Tensor sK = make_tensor(make_smem_ptr(reinterpret_cast<Element*>(smem_raw)), typename Traits::SmemLayoutQ{});
    Tensor sV = make_tensor(sK.data() + size(sK), typename Traits::SmemLayoutQ{});
    Tensor sQ = make_tensor(sV.data() + size(sV), typename Traits::SmemLayoutKV{});
    Tensor sdO = make_tensor(sQ.data() + kStages * size(sQ), typename Traits::SmemLayoutKV{});
    Tensor sQt = make_tensor(sQ.data(), typename Traits::SmemLayoutKVt{});
    Tensor sQtNoSwizzle = make_tensor(sQ.data().get(), typename Traits::SmemLayoutKVtNoSwizzle{});
    Tensor sdOt = make_tensor(sdO.data(), typename Traits::SmemLayoutKVt{});
    Tensor sdOtNoSwizzle = make_tensor(sdO.data().get(), typename Traits::SmemLayoutKVtNoSwizzle{});
    constexpr int kBuffer = kBlockN * kHeadDim;  // elements between the two buffers of Q or dO
    float* s_lse = reinterpret_cast<float*>(smem_raw + (2 * kBlockM + 2 * kStages * kBlockN) * kHeadDim * 2);
    float* s_delta = s_lse + 2 * kBlockN;

    typename Traits::TiledMma tiled_mma;
    auto thr_mma = tiled_mma.get_thread_slice(threadIdx.x);
    Tensor tSrK = thr_mma.partition_fragment_A(sK);
    Tensor tSrQ = thr_mma.partition_fragment_B(sQ);
    Tensor tPrV = thr_mma.partition_fragment_A(sV);
    Tensor tPrdO = thr_mma.partition_fragment_B(sdO);
    Tensor tVrdOt = thr_mma.partition_fragment_B(sdOtNoSwizzle);
    Tensor tKrQt = thr_mma.partition_fragment_B(sQtNoSwizzle);
    Tensor acc_dk = partition_fragment_C(tiled_mma, Shape<Int<kBlockM>, Int<kHeadDim>>{});
    Tensor acc_dv = partition_fragment_C(tiled_mma, Shape<Int<kBlockM>, Int<kHeadDim>>{});

    auto copy_a = make_tiled_copy_A(typename Traits::SmemCopyAtom{}, tiled_mma);
    auto thr_copy_a = copy_a.get_thread_slice(threadIdx.x);
    Tensor tSsK = thr_copy_a.partition_S(sK);
    Tensor tPsV = thr_copy_a.partition_S(sV);
    auto copy_b = make_tiled_copy_B(typename Traits::SmemCopyAtom{}, tiled_mma);
    auto thr_copy_b = copy_b.get_thread_slice(threadIdx.x);
    Tensor tSsQ = thr_copy_b.partition_S(sQ);
    Tensor tPsdO = thr_copy_b.partition_S(sdO);
    auto copy_bt = make_tiled_copy_B(typename Traits::SmemCopyAtomTransposed{}, tiled_mma);
    auto thr_copy_bt = copy_bt.get_thread_slice(threadIdx.x);
    Tensor tVsdOt = thr_copy_bt.partition_S(sdOt);
    Tensor tKsQt = thr_copy_bt.partition_S(sQt);

    // The walk: step s is query head head_kv * group_size + s / n_tiles (every head of the GQA
    // group) and Q tile s % n_tiles of the query box.
    const int n_steps = group_size * n_tiles;
    // Stages step s's Q and dO tiles into buffer `buf`, and loads (into registers) the LSE, in
    // log2 units, and delta of query row threadIdx.x (+inf and 0 for padding rows).
    auto stage_step = [&](int s, int buf, float& lse_log2, float& delta) {
        const int head = head_kv * group_size + s / n_tiles;
        int origin[3];
        walk_origin(s % n_tiles, qb.lo, qb.tiles, p.q_tile_log2, origin);
        Tensor q_buf = make_tensor(sQ.data() + buf * kBuffer, typename Traits::SmemLayoutKV{});
        Tensor do_buf = make_tensor(sdO.data() + buf * kBuffer, typename Traits::SmemLayoutKV{});
        const HeadRows q_rows = head_rows(p, batch, head, head_kv);
        stage_tile<kBlockN, kHeadDim, kNThreads>(q_buf, reinterpret_cast<const Element*>(p.q) + q_rows.q,
                                                 rows.q_stride, p, p.q_tile_log2, origin, qb.hi, kt.group,
                                                 p.head_dim);
        stage_tile<kBlockN, kHeadDim, kNThreads>(do_buf, reinterpret_cast<const Element*>(p.d_out) + q_rows.o,
                                                 rows.o_stride, p, p.q_tile_log2, origin, qb.hi, kt.group,
                                                 p.head_dim_v);
        cute::cp_async_fence();
        lse_log2 = INFINITY;
        delta = 0.f;
        if (threadIdx.x < kBlockN) {
            int i[3];
            tile_coords(threadIdx.x, p.q_tile_log2, origin, i);
            if (i[0] < qb.hi[0] && i[1] < qb.hi[1] && i[2] < qb.hi[2]) {
                const long long row = ((long long)batch * p.tokens + token_of(p, i, kt.group)) * p.heads + head;
                lse_log2 = p.lse[row] * 1.4426950408889634f;
                delta = p.delta[row];
            }
        }
    };
    static_assert(kBlockN <= kNThreads, "one thread per query row loads its LSE and delta");

    stage_tile<kBlockM, kHeadDim, kNThreads>(sK, k_base, rows.k_stride, p, p.kv_tile_log2, kt.first, kt.end,
                                             kt.group, p.head_dim);
    if constexpr (kDk) {
        stage_tile<kBlockM, kHeadDim, kNThreads>(sV, v_base, rows.v_stride, p, p.kv_tile_log2, kt.first, kt.end,
                                                 kt.group, p.head_dim_v);
    }
    float next_lse = INFINITY, next_delta = 0.f;
    if (n_steps > 0) stage_step(0, 0, next_lse, next_delta);
    if (threadIdx.x < kBlockN) {
        s_lse[threadIdx.x] = next_lse;
        s_delta[threadIdx.x] = next_delta;
    }

    // The queries that see each of this thread's key rows (padding keys take the last key's:
    // finite, never stored): the mask of a partial step is a test of the query's coordinates.
    int key_lo[kRows][3], key_hi[kRows][3];
#pragma unroll
    for (int r = 0; r < kRows; ++r) {
        int key[3];
        tile_coords(acc_row(r, kNWarps), p.kv_tile_log2, kt.first, key);
#pragma unroll
        for (int a = 0; a < 3; ++a) {
            axis_inverse_window(p, a, min(key[a], kt.end[a] - 1), kt.glen[a], key_lo[r][a], key_hi[r][a]);
        }
    }

    clear(acc_dk);
    clear(acc_dv);
    for (int s = 0; s < n_steps; ++s) {
        cute::cp_async_wait<0>();
        // Step s's Q, dO, LSE and delta are in shared memory, and every warp is done with step
        // s - 1: its buffers take step s + 1, loaded under this step's products.
        __syncthreads();
        const int buf = kStages == 2 ? s & 1 : 0;
        const int lse_buf = s & 1;  // LSE and delta: two buffers with either stage count
        if (kStages == 2 && s + 1 < n_steps) stage_step(s + 1, buf ^ 1, next_lse, next_delta);
        int origin[3];
        walk_origin(s % n_tiles, qb.lo, qb.tiles, p.q_tile_log2, origin);
        Tensor tSsQ_s = tSsQ;
        Tensor tPsdO_s = tPsdO;
        Tensor tVsdOt_s = tVsdOt;
        Tensor tKsQt_s = tKsQt;
        tSsQ_s.data() = tSsQ.data() + buf * kBuffer;
        tPsdO_s.data() = tPsdO.data() + buf * kBuffer;
        tVsdOt_s.data() = tVsdOt.data() + buf * kBuffer;
        tKsQt_s.data() = tKsQt.data() + buf * kBuffer;
        const float* lse_s = s_lse + lse_buf * kBlockN;
        const float* delta_s = s_delta + lse_buf * kBlockN;

        Tensor acc_st = partition_fragment_C(tiled_mma, Shape<Int<kBlockM>, Int<kBlockN>>{});
        Tensor acc_dpt = partition_fragment_C(tiled_mma, Shape<Int<kBlockM>, Int<kBlockN>>{});
        clear(acc_st);
        gemm_smem(acc_st, tSrK, tSrQ, tSsK, tSsQ_s, tiled_mma, copy_a, copy_b, thr_copy_a, thr_copy_b);
        if constexpr (kDk) {
            clear(acc_dpt);
            gemm_smem(acc_dpt, tPrV, tPrdO, tPsV, tPsdO_s, tiled_mma, copy_a, copy_b, thr_copy_a, thr_copy_b);
        }

        // Full: no padding keys, and the step's Q tile inside the queries that see every key.
        bool full = kt.no_padding;
#pragma unroll
        for (int a = 0; a < 3; ++a) {
            full &= origin[a] >= qb.full_lo[a] && origin[a] + (1 << p.q_tile_log2[a]) <= qb.full_hi[a];
        }

        Tensor st = make_tensor(acc_st.data(), rowcol(acc_st.layout()));
        Tensor dpt = make_tensor(acc_dpt.data(), rowcol(acc_dpt.layout()));
        if (!full) mask_scores<kRows>(st, key_lo, key_hi, p.q_tile_log2, origin);
#pragma unroll
        for (int c = 0; c < size<1>(st); ++c) {
            const int col = acc_col(c);
            const float lse = lse_s[col], delta = delta_s[col];
#pragma unroll
            for (int r = 0; r < kRows; ++r) {
                const float prob = exp2f(st(r, c) * p.scale_log2 - lse);
                st(r, c) = prob;
                if constexpr (kDk) dpt(r, c) = prob * (dpt(r, c) - delta);  // dS^T / scale
            }
        }
        if constexpr (kDv) {
            Tensor pt = convert_to<Element>(acc_st);
            Tensor tPt = make_tensor(pt.data(), acc_as_a_operand(pt.layout()));
            gemm_regs_smem(acc_dv, tPt, tVrdOt, tVsdOt_s, tiled_mma, copy_bt, thr_copy_bt);
        }
        if constexpr (kDk) {
            Tensor dst = convert_to<Element>(acc_dpt);
            Tensor tdSt = make_tensor(dst.data(), acc_as_a_operand(dst.layout()));
            gemm_regs_smem(acc_dk, tdSt, tKrQt, tKsQt_s, tiled_mma, copy_bt, thr_copy_bt);
        }
        if (kStages == 1 && s + 1 < n_steps) {
            __syncthreads();  // every warp is done with Q(s) and dO(s)
            stage_step(s + 1, 0, next_lse, next_delta);
        }
        // Step s + 1's LSE and delta (loaded under the products with two stages) into the other
        // buffer (last read in step s - 1).
        if (s + 1 < n_steps && threadIdx.x < kBlockN) {
            s_lse[(lse_buf ^ 1) * kBlockN + threadIdx.x] = next_lse;
            s_delta[(lse_buf ^ 1) * kBlockN + threadIdx.x] = next_delta;
        }
    }
    cute::cp_async_wait<0>();
    __syncthreads();
    if constexpr (kDk) {
#pragma unroll
        for (int e = 0; e < size(acc_dk); ++e) acc_dk(e) *= p.scale;
        store_rows<Traits, kBlockM>(acc_dk, sK, reinterpret_cast<Element*>(p.dk) + rows.k, rows.k_stride, p,
                                    p.kv_tile_log2, kt.first, kt.end, kt.group, p.head_dim);
    }
    if constexpr (kDv) {
        store_rows<Traits, kBlockM>(acc_dv, sV, reinterpret_cast<Element*>(p.dv) + rows.v, rows.v_stride, p,
                                    p.kv_tile_log2, kt.first, kt.end, kt.group, p.head_dim_v);
    }
}

}  // namespace natten_native

// extern "C" entry points of the two passes for one instantiation (element type, head dim;
// 64 x 64 blocks, 4 warps).
#define NATTEN_FNA_BACKWARD_KERNELS(SUFFIX, ELEMENT, HEAD_DIM)                                          \
    extern "C" __global__ void __launch_bounds__(128)                                                  \
        natten_fna_backward_dq_##SUFFIX(const natten_native::FnaParams p) {                            \
        extern __shared__ __align__(128) char smem[];                                                  \
        natten_native::fna_backward_dq<natten_native::FnaTraits<ELEMENT, HEAD_DIM, 64, 64, 4>>(p, smem); \
    }                                                                                                  \
    extern "C" __global__ void __launch_bounds__(128)                                                  \
        natten_fna_backward_dkdv_##SUFFIX(const natten_native::FnaParams p) {                          \
        extern __shared__ __align__(128) char smem[];                                                  \
        natten_native::fna_backward_dkdv<natten_native::FnaTraits<ELEMENT, HEAD_DIM, 64, 64, 4>>(p,   \
                                                                                                 smem); \
    }

// extern "C" entry points for head dim 256: the dQ pass, a dK pass and a dV pass, each with one
// buffer of walked tiles (64 x 64 blocks, 4 warps; 129 KiB of shared memory: A100 and H100,
// not SM86/89's 99 KiB, where the device loader leaves them out).
#define NATTEN_FNA_BACKWARD_SPLIT_KERNELS(SUFFIX, ELEMENT, HEAD_DIM)                                      \
    extern "C" __global__ void __launch_bounds__(128) natten_fna_backward_dq_##SUFFIX(                   \
        const natten_native::FnaParams p) {                                                            \
        extern __shared__ __align__(128) char smem[];                                                  \
        natten_native::fna_backward_dq<natten_native::FnaTraits<ELEMENT, HEAD_DIM, 64, 64, 4>, 1>(p, smem); \
    }                                                                                                  \
    extern "C" __global__ void __launch_bounds__(128) natten_fna_backward_dk_##SUFFIX(                   \
        const natten_native::FnaParams p) {                                                            \
        extern __shared__ __align__(128) char smem[];                                                  \
        natten_native::fna_backward_dkdv<natten_native::FnaTraits<ELEMENT, HEAD_DIM, 64, 64, 4>, 1,    \
                                         natten_native::kGradK>(p, smem);                              \
    }                                                                                                  \
    extern "C" __global__ void __launch_bounds__(128) natten_fna_backward_dv_##SUFFIX(                   \
        const natten_native::FnaParams p) {                                                            \
        extern __shared__ __align__(128) char smem[];                                                  \
        natten_native::fna_backward_dkdv<natten_native::FnaTraits<ELEMENT, HEAD_DIM, 64, 64, 4>, 1,    \
                                         natten_native::kGradV>(p, smem);                              \
    }
