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

#include <cute/tensor.hpp>
#include <cutlass/array.h>
#include <cutlass/numeric_conversion.h>
#include <cutlass/numeric_types.h>

#include "fna_params.cuh"
#include "na_window.cuh"

namespace natten_native {

using namespace cute;

template <typename Element_, int kHeadDim_, int kBlockM_, int kBlockN_, int kNWarps_>
struct FnaForwardTraits {
    using Element = Element_;
    static constexpr int kHeadDim = kHeadDim_;
    static constexpr int kBlockM = kBlockM_;
    static constexpr int kBlockN = kBlockN_;
    static constexpr int kNWarps = kNWarps_;
    static constexpr int kNThreads = kNWarps * 32;
    static_assert(kHeadDim % 32 == 0);
    static_assert(kBlockM % (16 * kNWarps) == 0);
    static_assert(kBlockN % 16 == 0);

    // Shared tiles: 8-row atoms of 32 or 64 columns, XOR-swizzled so that ldmatrix reads and the
    // 16-byte cp.async writes are free of bank conflicts.
    static constexpr int kBlockKSmem = kHeadDim % 64 == 0 ? 64 : 32;
    static constexpr int kSwizzle = kBlockKSmem == 32 ? 2 : 3;
    using SmemLayoutAtom = decltype(composition(
        Swizzle<kSwizzle, 3, 3>{},
        Layout<Shape<_8, Int<kBlockKSmem>>, Stride<Int<kBlockKSmem>, _1>>{}));
    using SmemLayoutQ = decltype(tile_to_shape(SmemLayoutAtom{}, Shape<Int<kBlockM>, Int<kHeadDim>>{}));
    using SmemLayoutKV = decltype(tile_to_shape(SmemLayoutAtom{}, Shape<Int<kBlockN>, Int<kHeadDim>>{}));
    // V read as V^T (head dim x keys) for O += P V.
    using SmemLayoutVt = decltype(composition(
        SmemLayoutKV{}, make_layout(Shape<Int<kHeadDim>, Int<kBlockN>>{}, GenRowMajor{})));
    using SmemLayoutVtNoSwizzle = decltype(get_nonswizzle_portion(SmemLayoutVt{}));

    using MmaAtom = std::conditional_t<std::is_same_v<Element, cutlass::half_t>,
                                       MMA_Atom<SM80_16x8x16_F32F16F16F32_TN>,
                                       MMA_Atom<SM80_16x8x16_F32BF16BF16F32_TN>>;
    // Warps side by side along M: warp w owns rows [16 w, 16 w + 16) of every 16 * kNWarps.
    using TiledMma = TiledMMA<MmaAtom, Layout<Shape<Int<kNWarps>, _1, _1>>,
                              Tile<Int<16 * kNWarps>, _16, _16>>;
    using SmemCopyAtom = Copy_Atom<SM75_U32x4_LDSM_N, Element>;
    using SmemCopyAtomTransposed = Copy_Atom<SM75_U16x8_LDSM_T, Element>;
    using SmemCopyAtomO = Copy_Atom<DefaultCopy, Element>;

    static constexpr int kSmemBytes =
        int(size(SmemLayoutQ{}) + 2 * size(SmemLayoutKV{})) * int(sizeof(Element));
    static_assert(kSmemBytes == (kBlockM + 2 * kBlockN) * kHeadDim * 2,
                  "the host computes the dynamic shared memory as (M + 2 N) * D * 2 bytes");
};

// ---------------------------------------------------------------------------------------------
// Tile geometry (the multi-dimensional tiling, in group-local coordinates).

// A CTA's Q tile: per axis its dilation group, the group's length, and the group-local queries
// [first, end) (end clipped to the group).
struct QTile {
    int group[3];
    int glen[3];
    int first[3];
    int end[3];
    bool no_padding;  // every axis holds a whole tile of queries
};

// Decodes blockIdx.x: Q tiles fastest (axis 2 first), then dilation groups. False when the tile
// lies past the end of a short dilation group (nothing to do).
__device__ __forceinline__ bool q_tile_of(const FnaForwardParams& p, int cta, QTile& t) {
    int x = cta;
    int tile[3], group[3];
    tile[2] = x % p.q_tiles[2]; x /= p.q_tiles[2];
    tile[1] = x % p.q_tiles[1]; x /= p.q_tiles[1];
    tile[0] = x % p.q_tiles[0]; x /= p.q_tiles[0];
    group[2] = x % p.dilation[2]; x /= p.dilation[2];
    group[1] = x % p.dilation[1];
    group[0] = x / p.dilation[1];
    t.no_padding = true;
#pragma unroll
    for (int a = 0; a < 3; ++a) {
        int extent = 1 << p.q_tile_log2[a];
        t.group[a] = group[a];
        t.glen[a] = group_len(p.len[a], p.dilation[a], group[a]);
        t.first[a] = tile[a] * extent;
        t.end[a] = min(t.first[a] + extent, t.glen[a]);
        if (t.first[a] >= t.glen[a]) return false;
        t.no_padding &= (t.end[a] - t.first[a] == extent);
    }
    return true;
}

// The KV box of a Q tile, [lo, hi) per axis, and its inner box [inner_lo, inner_hi) of keys that
// every query of the tile sees (window starts and ends are monotone in the query).
struct KvBox {
    int lo[3];
    int hi[3];
    int inner_lo[3];
    int inner_hi[3];
    int tiles[3];  // KV tiles per axis
};

__device__ __forceinline__ KvBox kv_box_of(const FnaForwardParams& p, const QTile& t) {
    KvBox b;
#pragma unroll
    for (int a = 0; a < 3; ++a) {
        const bool causal = p.causal[a] != 0;
        int first = t.first[a], last = t.end[a] - 1;
        int first_start = window_start(first, t.glen[a], p.kernel[a], p.stride[a], causal);
        int last_start = window_start(last, t.glen[a], p.kernel[a], p.stride[a], causal);
        b.lo[a] = first_start;
        b.hi[a] = window_end(last, t.glen[a], p.kernel[a], last_start, causal);
        b.inner_lo[a] = last_start;
        b.inner_hi[a] = window_end(first, t.glen[a], p.kernel[a], first_start, causal);
        int extent = 1 << p.kv_tile_log2[a];
        b.tiles[a] = (b.hi[a] - b.lo[a] + extent - 1) / extent;
    }
    return b;
}

// Flat token index (row-major over the spatial grid) of the group-local coordinates `j` of
// dilation groups `group`.
__device__ __forceinline__ int token_of(const FnaForwardParams& p, const int (&j)[3], const int (&group)[3]) {
    int x0 = j[0] * p.dilation[0] + group[0];
    int x1 = j[1] * p.dilation[1] + group[1];
    int x2 = j[2] * p.dilation[2] + group[2];
    return (x0 * p.len[1] + x1) * p.len[2] + x2;
}

// Coordinates of row `r` of a tile (row-major over the tile's box) at `origin`.
__device__ __forceinline__ void tile_coords(int r, const int (&log2)[3], const int (&origin)[3], int (&j)[3]) {
    j[2] = origin[2] + (r & ((1 << log2[2]) - 1));
    j[1] = origin[1] + ((r >> log2[2]) & ((1 << log2[1]) - 1));
    j[0] = origin[0] + (r >> (log2[2] + log2[1]));
}

// ---------------------------------------------------------------------------------------------
// Staging: gather tile rows from global memory into a swizzled shared tile with 16-byte
// cp.async; rows outside `bound` (padding) and columns past the head dim are zero-filled.

__device__ __forceinline__ void cp_async_16(void* smem, const void* gmem, bool valid) {
    const uint32_t s = static_cast<uint32_t>(__cvta_generic_to_shared(smem));
    const int bytes = valid ? 16 : 0;
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(s), "l"(gmem), "r"(bytes));
}

template <int kRows, int kHeadDim, int kNThreads, typename Element, typename SmemTensor>
__device__ __forceinline__ void stage_tile(SmemTensor& smem, const Element* base, long long row_stride,
                                           const FnaForwardParams& p, const int (&log2)[3],
                                           const int (&origin)[3], const int (&bound)[3],
                                           const int (&group)[3]) {
    constexpr int kChunks = kHeadDim / 8;
#pragma unroll
    for (int idx = threadIdx.x; idx < kRows * kChunks; idx += kNThreads) {
        const int r = idx / kChunks;
        const int c = (idx % kChunks) * 8;
        int j[3];
        tile_coords(r, log2, origin, j);
        const bool row_ok = j[0] < bound[0] && j[1] < bound[1] && j[2] < bound[2];
        const bool ok = row_ok && c < p.head_dim;
        const Element* src = ok ? base + (long long)token_of(p, j, group) * row_stride + c : base;
        cp_async_16(&smem(r, c), src, ok);
    }
}

// ---------------------------------------------------------------------------------------------
// Register-tile helpers (accumulator layouts of the SM80 m16n8k16 MMA).

// (MMA=4, MMA_M, MMA_N) -> (rows=(2, MMA_M), cols=(2, MMA_N)).
template <typename Layout>
__device__ __forceinline__ auto rowcol(Layout acc) {
    auto l = logical_divide(acc, Shape<_2>{});
    return make_layout(make_layout(get<0, 1>(l), get<1>(l)), make_layout(get<0, 0>(l), get<2>(l)));
}

// An f32 accumulator (MMA=4, MMA_M, MMA_N) as the A operand of the next MMA:
// ((4, 2), MMA_M, MMA_N / 2).
template <typename Layout>
__device__ __forceinline__ auto acc_as_a_operand(Layout acc) {
    auto l = logical_divide(acc, Shape<Underscore, Underscore, _2>{});
    return make_layout(make_layout(get<0>(l), get<2, 0>(l)), get<1>(l), get<2, 1>(l));
}

template <typename To, typename Engine, typename Layout>
__device__ __forceinline__ auto convert_to(Tensor<Engine, Layout> const& t) {
    using From = typename Engine::value_type;
    constexpr int n = decltype(size(t))::value;
    cutlass::NumericArrayConverter<To, From, n> op;
    auto frag = op(*reinterpret_cast<const cutlass::Array<From, n>*>(t.data()));
    return make_tensor(make_rmem_ptr<To>(&frag), t.layout());
}

// acc += A B^T with both operands in shared memory, loading k-slices one step ahead.
template <typename Acc, typename RA, typename RB, typename SA, typename SB, typename Mma, typename CpA,
          typename CpB, typename ThrA, typename ThrB>
__device__ __forceinline__ void gemm_smem(Acc& acc, RA& ra, RB& rb, SA const& sa, SB const& sb, Mma mma,
                                          CpA cpa, CpB cpb, ThrA thra, ThrB thrb) {
    Tensor ra_view = thra.retile_D(ra);
    Tensor rb_view = thrb.retile_D(rb);
    cute::copy(cpa, sa(_, _, _0{}), ra_view(_, _, _0{}));
    cute::copy(cpb, sb(_, _, _0{}), rb_view(_, _, _0{}));
#pragma unroll
    for (int i = 0; i < size<2>(ra); ++i) {
        if (i < size<2>(ra) - 1) {
            cute::copy(cpa, sa(_, _, i + 1), ra_view(_, _, i + 1));
            cute::copy(cpb, sb(_, _, i + 1), rb_view(_, _, i + 1));
        }
        cute::gemm(mma, ra(_, _, i), rb(_, _, i), acc);
    }
}

// acc += A B^T with A in registers and B in shared memory.
template <typename Acc, typename RA, typename RB, typename SB, typename Mma, typename CpB, typename ThrB>
__device__ __forceinline__ void gemm_regs_smem(Acc& acc, RA& ra, RB& rb, SB const& sb, Mma mma, CpB cpb,
                                               ThrB thrb) {
    Tensor rb_view = thrb.retile_D(rb);
    cute::copy(cpb, sb(_, _, _0{}), rb_view(_, _, _0{}));
#pragma unroll
    for (int i = 0; i < size<2>(ra); ++i) {
        if (i < size<2>(ra) - 1) {
            cute::copy(cpb, sb(_, _, i + 1), rb_view(_, _, i + 1));
        }
        cute::gemm(mma, ra(_, _, i), rb(_, _, i), acc);
    }
}

__device__ __forceinline__ float quad_max(float x) {
    x = fmaxf(x, __shfl_xor_sync(0xffffffff, x, 1));
    return fmaxf(x, __shfl_xor_sync(0xffffffff, x, 2));
}

__device__ __forceinline__ float quad_sum(float x) {
    x += __shfl_xor_sync(0xffffffff, x, 1);
    return x + __shfl_xor_sync(0xffffffff, x, 2);
}

// ---------------------------------------------------------------------------------------------
// The kernel body.

template <typename Traits>
__device__ void fna_forward(const FnaForwardParams& p, char* smem_raw) {
    using Element = typename Traits::Element;
    constexpr int kBlockM = Traits::kBlockM;
    constexpr int kBlockN = Traits::kBlockN;
    constexpr int kHeadDim = Traits::kHeadDim;
    constexpr int kNWarps = Traits::kNWarps;
    constexpr int kNThreads = Traits::kNThreads;

    QTile qt;
    if (!q_tile_of(p, blockIdx.x, qt)) return;
    const KvBox box = kv_box_of(p, qt);
    const int head = blockIdx.y;
    const int batch = blockIdx.z;
    const int head_kv = head / (p.heads / p.heads_kv);

    const long long q_row_stride = (long long)p.heads * p.head_dim;
    const long long kv_row_stride = (long long)p.heads_kv * p.head_dim;
    const Element* q_base = reinterpret_cast<const Element*>(p.q) +
                            ((long long)batch * p.tokens * p.heads + head) * p.head_dim;
    const long long kv_offset = ((long long)batch * p.tokens * p.heads_kv + head_kv) * p.head_dim;
    const Element* k_base = reinterpret_cast<const Element*>(p.k) + kv_offset;
    const Element* v_base = reinterpret_cast<const Element*>(p.v) + kv_offset;

    Tensor sQ = make_tensor(make_smem_ptr(reinterpret_cast<Element*>(smem_raw)), typename Traits::SmemLayoutQ{});
    Tensor sK = make_tensor(sQ.data() + size(sQ), typename Traits::SmemLayoutKV{});
    Tensor sV = make_tensor(sK.data() + size(sK), typename Traits::SmemLayoutKV{});
    Tensor sVt = make_tensor(sV.data(), typename Traits::SmemLayoutVt{});
    Tensor sVtNoSwizzle = make_tensor(sV.data().get(), typename Traits::SmemLayoutVtNoSwizzle{});

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

    // This thread's score rows: row r of the (rows, cols) view is tile row
    // warp * 16 + lane / 4 + (r % 2) * 8 + (r / 2) * 16 * kNWarps. Each keeps its query's window
    // per axis (padding rows take the last query's window: finite, never stored).
    constexpr int kRows = 2 * (kBlockM / (16 * kNWarps));
    const int lane = threadIdx.x % 32;
    const int warp = threadIdx.x / 32;
    int win_lo[kRows][3], win_hi[kRows][3];
#pragma unroll
    for (int r = 0; r < kRows; ++r) {
        const int row = warp * 16 + lane / 4 + (r % 2) * 8 + (r / 2) * 16 * kNWarps;
        int i[3];
        tile_coords(row, p.q_tile_log2, qt.first, i);
#pragma unroll
        for (int a = 0; a < 3; ++a) {
            const bool causal = p.causal[a] != 0;
            const int query = min(i[a], qt.end[a] - 1);
            win_lo[r][a] = window_start(query, qt.glen[a], p.kernel[a], p.stride[a], causal);
            win_hi[r][a] = window_end(query, qt.glen[a], p.kernel[a], win_lo[r][a], causal);
        }
    }
    float row_max[kRows], row_sum[kRows];
#pragma unroll
    for (int r = 0; r < kRows; ++r) {
        row_max[r] = -INFINITY;
        row_sum[r] = 0.f;
    }

    const int n_tiles = box.tiles[0] * box.tiles[1] * box.tiles[2];
    auto tile_origin = [&](int t, int (&origin)[3]) {
        origin[2] = box.lo[2] + (t % box.tiles[2]) * (1 << p.kv_tile_log2[2]);
        origin[1] = box.lo[1] + ((t / box.tiles[2]) % box.tiles[1]) * (1 << p.kv_tile_log2[1]);
        origin[0] = box.lo[0] + (t / (box.tiles[2] * box.tiles[1])) * (1 << p.kv_tile_log2[0]);
    };

    stage_tile<kBlockM, kHeadDim, kNThreads>(sQ, q_base, q_row_stride, p, p.q_tile_log2, qt.first, qt.end,
                                             qt.group);
    int origin[3];
    tile_origin(0, origin);
    stage_tile<kBlockN, kHeadDim, kNThreads>(sK, k_base, kv_row_stride, p, p.kv_tile_log2, origin, box.hi,
                                             qt.group);
    cute::cp_async_fence();
    clear(acc_o);

    for (int t = 0; t < n_tiles; ++t) {
        Tensor acc_s = partition_fragment_C(tiled_mma, Shape<Int<kBlockM>, Int<kBlockN>>{});
        clear(acc_s);
        cute::cp_async_wait<0>();
        __syncthreads();  // K(t) landed; every warp is done with V(t - 1)
        stage_tile<kBlockN, kHeadDim, kNThreads>(sV, v_base, kv_row_stride, p, p.kv_tile_log2, origin, box.hi,
                                                 qt.group);
        cute::cp_async_fence();

        gemm_smem(acc_s, tSrQ, tSrK, tSsQ, tSsK, tiled_mma, copy_q, copy_k, thr_copy_q, thr_copy_k);

        Tensor scores = make_tensor(acc_s.data(), rowcol(acc_s.layout()));
        bool full = qt.no_padding;
#pragma unroll
        for (int a = 0; a < 3; ++a) {
            full &= origin[a] >= box.inner_lo[a] && origin[a] + (1 << p.kv_tile_log2[a]) <= box.inner_hi[a];
        }
        if (!full) {
#pragma unroll
            for (int c = 0; c < size<1>(scores); ++c) {
                const int col = (lane % 4) * 2 + (c % 2) + (c / 2) * 8;
                int j[3];
                tile_coords(col, p.kv_tile_log2, origin, j);
#pragma unroll
                for (int r = 0; r < kRows; ++r) {
                    const bool sees = win_lo[r][0] <= j[0] && j[0] < win_hi[r][0] && win_lo[r][1] <= j[1] &&
                                      j[1] < win_hi[r][1] && win_lo[r][2] <= j[2] && j[2] < win_hi[r][2];
                    if (!sees) scores(r, c) = -INFINITY;
                }
            }
        }

        cute::cp_async_wait<0>();
        __syncthreads();  // V(t) landed; every warp is done with K(t)
        if (t + 1 < n_tiles) {
            tile_origin(t + 1, origin);
            stage_tile<kBlockN, kHeadDim, kNThreads>(sK, k_base, kv_row_stride, p, p.kv_tile_log2, origin,
                                                     box.hi, qt.group);
            cute::cp_async_fence();
        }

        // Online softmax (base-2 exponentials of scale * log2(e) * s), rows that saw no key yet
        // keep max -inf and sum 0.
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
    float lse[kRows];
#pragma unroll
    for (int r = 0; r < kRows; ++r) {
        const float sum = quad_sum(row_sum[r]);
        const float inv = sum > 0.f ? 1.f / sum : 0.f;
        lse[r] = sum > 0.f ? row_max[r] * p.scale + __logf(sum) : -INFINITY;
#pragma unroll
        for (int c = 0; c < size<1>(o_rows); ++c) o_rows(r, c) *= inv;
    }
    Tensor o_elems = convert_to<Element>(acc_o);
    __syncthreads();  // every warp is done reading sQ / sV
    Tensor sO = make_tensor(sQ.data(), typename Traits::SmemLayoutQ{});
    auto copy_o = make_tiled_copy_C(typename Traits::SmemCopyAtomO{}, tiled_mma);
    auto thr_copy_o = copy_o.get_thread_slice(threadIdx.x);
    Tensor tOrO = thr_copy_o.retile_S(o_elems);
    Tensor tOsO = thr_copy_o.partition_D(sO);
    cute::copy(copy_o, tOrO, tOsO);

    if (lane % 4 == 0) {
#pragma unroll
        for (int r = 0; r < kRows; ++r) {
            const int row = warp * 16 + lane / 4 + (r % 2) * 8 + (r / 2) * 16 * kNWarps;
            int i[3];
            tile_coords(row, p.q_tile_log2, qt.first, i);
            if (i[0] < qt.end[0] && i[1] < qt.end[1] && i[2] < qt.end[2]) {
                const long long token = token_of(p, i, qt.group);
                p.lse[((long long)batch * p.tokens + token) * p.heads + head] = lse[r];
            }
        }
    }
    __syncthreads();

    Element* o_base = reinterpret_cast<Element*>(p.out) + ((long long)batch * p.tokens * p.heads + head) * p.head_dim;
    constexpr int kChunks = kHeadDim / 8;
#pragma unroll
    for (int idx = threadIdx.x; idx < kBlockM * kChunks; idx += kNThreads) {
        const int r = idx / kChunks;
        const int c = (idx % kChunks) * 8;
        int i[3];
        tile_coords(r, p.q_tile_log2, qt.first, i);
        if (i[0] < qt.end[0] && i[1] < qt.end[1] && i[2] < qt.end[2] && c < p.head_dim) {
            const long long token = token_of(p, i, qt.group);
            *reinterpret_cast<uint4*>(o_base + token * q_row_stride + c) =
                *reinterpret_cast<const uint4*>(&sO(r, c));
        }
    }
}

}  // namespace natten_native

// One extern "C" entry point per instantiation (element type, head dim, block sizes, warps).
#define NATTEN_FNA_FORWARD_KERNEL(NAME, ELEMENT, HEAD_DIM, BLOCK_M, BLOCK_N, WARPS)                   \
    extern "C" __global__ void __launch_bounds__(WARPS * 32)                                         \
        NAME(const natten_native::FnaForwardParams p) {                                              \
        extern __shared__ __align__(128) char smem[];                                                \
        natten_native::fna_forward<natten_native::FnaForwardTraits<ELEMENT, HEAD_DIM, BLOCK_M, BLOCK_N, \
                                                                   WARPS>>(p, smem);                 \
    }
