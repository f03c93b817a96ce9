// What the native FNA kernels share: tile traits (shared-memory layouts, the tiled MMA), the
// multi-dimensional tile geometry in group-local coordinates, gathered cp.async staging, and
// register-tile helpers for the SM80 m16n8k16 MMA (f16/bf16 in, f32 accumulate).
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
struct FnaTraits {
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
    // Row tiles read transposed (head dim x rows) as the B operand of a product over the rows:
    // V^T in O += P V, K^T in dQ += dS K, dO^T and Q^T in dV += P^T dO and dK += dS^T Q.
    using SmemLayoutKVt = decltype(composition(
        SmemLayoutKV{}, make_layout(Shape<Int<kHeadDim>, Int<kBlockN>>{}, GenRowMajor{})));
    using SmemLayoutKVtNoSwizzle = decltype(get_nonswizzle_portion(SmemLayoutKVt{}));
    using SmemLayoutQt = decltype(composition(
        SmemLayoutQ{}, make_layout(Shape<Int<kHeadDim>, Int<kBlockM>>{}, GenRowMajor{})));
    using SmemLayoutQtNoSwizzle = decltype(get_nonswizzle_portion(SmemLayoutQt{}));

    using MmaAtom = std::conditional_t<std::is_same_v<Element, cutlass::half_t>,
                                       MMA_Atom<SM80_16x8x16_F32F16F16F32_TN>,
                                       MMA_Atom<SM80_16x8x16_F32BF16BF16F32_TN>>;
    // Warps side by side along M: warp w owns rows [16 w, 16 w + 16) of every 16 * kNWarps.
    using TiledMma = TiledMMA<MmaAtom, Layout<Shape<Int<kNWarps>, _1, _1>>,
                              Tile<Int<16 * kNWarps>, _16, _16>>;
    using SmemCopyAtom = Copy_Atom<SM75_U32x4_LDSM_N, Element>;
    using SmemCopyAtomTransposed = Copy_Atom<SM75_U16x8_LDSM_T, Element>;
    using SmemCopyAtomO = Copy_Atom<DefaultCopy, Element>;

    // Rows of this thread in the (rows, cols) view of an M x N accumulator: row r is tile row
    // warp * 16 + lane / 4 + (r % 2) * 8 + (r / 2) * 16 * kNWarps.
    static constexpr int kRowsPerThread = 2 * (kBlockM / (16 * kNWarps));
};

__device__ __forceinline__ int acc_row(int r, int nwarps) {
    return (threadIdx.x / 32) * 16 + (threadIdx.x % 32) / 4 + (r % 2) * 8 + (r / 2) * 16 * nwarps;
}

// Column c of the (rows, cols) view of an accumulator, as a column of the tile.
__device__ __forceinline__ int acc_col(int c) {
    return (threadIdx.x % 4) * 2 + (c % 2) + (c / 2) * 8;
}

// ---------------------------------------------------------------------------------------------
// Tile geometry (the multi-dimensional tiling, in group-local coordinates).

// A CTA's tile (a Q tile for the query-side passes, a KV tile for the dK/dV pass): per axis its
// dilation group, the group's length, and the group-local tokens [first, end) (end clipped to
// the group).
struct TileBox {
    int group[3];
    int glen[3];
    int first[3];
    int end[3];
    bool no_padding;  // every axis holds a whole tile
};

// Decodes blockIdx.x for tiles of extents 2^log2 (counts[a] tiles per axis in group 0) over a
// grid of `len` (p.len for queries, p.kv_len for keys): tiles fastest (axis 2 first), then
// dilation groups. False when the tile lies past the end of a short dilation group (nothing to
// do).
__device__ __forceinline__ bool tile_of(const FnaParams& p, int cta, const int (&len)[3], const int (&log2)[3],
                                        const int (&counts)[3], TileBox& t) {
    int x = cta;
    int tile[3], group[3];
    tile[2] = x % counts[2]; x /= counts[2];
    tile[1] = x % counts[1]; x /= counts[1];
    tile[0] = x % counts[0]; x /= counts[0];
    group[2] = x % p.dilation[2]; x /= p.dilation[2];
    group[1] = x % p.dilation[1];
    group[0] = x / p.dilation[1];
    t.no_padding = true;
#pragma unroll
    for (int a = 0; a < 3; ++a) {
        int extent = 1 << log2[a];
        t.group[a] = group[a];
        t.glen[a] = group_len(len[a], p.dilation[a], group[a]);
        t.first[a] = tile[a] * extent;
        t.end[a] = min(t.first[a] + extent, t.glen[a]);
        if (t.first[a] >= t.glen[a]) return false;
        t.no_padding &= (t.end[a] - t.first[a] == extent);
    }
    return true;
}

// The keys [lo, hi) (group-local) that group-local query `i` of a group of length `glen` sees on
// axis `a`: the NA window rule, or every key (up to the query itself when causal) for FMHA.
__device__ __forceinline__ void axis_window(const FnaParams& p, int a, int i, int glen, int& lo, int& hi) {
    const bool causal = p.causal[a] != 0;
    if (p.dense) {
        lo = 0;
        hi = causal ? min(i + 1, p.kv_len[a]) : p.kv_len[a];
        return;
    }
    lo = window_start(i, glen, p.kernel[a], p.stride[a], causal);
    hi = window_end(i, glen, p.kernel[a], lo, causal);
}

// The queries [lo, hi) (group-local) whose windows hold group-local key `j` on axis `a`
// (empty when lo >= hi).
__device__ __forceinline__ void axis_inverse_window(const FnaParams& p, int a, int j, int glen, int& lo, int& hi) {
    const bool causal = p.causal[a] != 0;
    if (p.dense) {
        lo = causal ? j : 0;
        hi = p.len[a];
        return;
    }
    inverse_window(j, glen, p.kernel[a], p.stride[a], causal, lo, hi);
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

__device__ __forceinline__ KvBox kv_box_of(const FnaParams& p, const TileBox& t) {
    KvBox b;
#pragma unroll
    for (int a = 0; a < 3; ++a) {
        axis_window(p, a, t.first[a], t.glen[a], b.lo[a], b.inner_hi[a]);
        axis_window(p, a, t.end[a] - 1, t.glen[a], b.inner_lo[a], b.hi[a]);
        int extent = 1 << p.kv_tile_log2[a];
        b.tiles[a] = (b.hi[a] - b.lo[a] + extent - 1) / extent;
    }
    return b;
}

// The box of queries (group-local, [lo, hi) per axis) whose windows reach a key of a KV tile,
// walked in Q tiles (tiles per axis; all 0 when no query reaches the tile), and its inner box
// [full_lo, full_hi) of queries that see every key of the tile (the inverse windows of the
// tile's last and first keys: window starts and ends are monotone in the query). The dK/dV
// passes' mirror of KvBox.
struct QueryBox {
    int lo[3];
    int hi[3];
    int tiles[3];
    int full_lo[3];
    int full_hi[3];
};

// QueryBox's tile counts, once its windows are in `b` (query_box_of_warp).
__device__ __forceinline__ void query_box_tiles(const FnaParams& p, QueryBox& b) {
    bool any = true;
#pragma unroll
    for (int a = 0; a < 3; ++a) {
        any &= b.lo[a] < b.hi[a];
        const int extent = 1 << p.q_tile_log2[a];
        b.tiles[a] = any ? (b.hi[a] - b.lo[a] + extent - 1) / extent : 0;
    }
    if (!any) b.tiles[0] = 0;
}

// The QueryBox of key tile `kt`, by the lanes of one warp into `b` (shared memory; every lane
// calls it, `lane` its index): lane 2 a + e takes the inverse window of the tile's first key
// (e = 0: lo, full_hi) or last key (e = 1: full_lo, hi) on axis a, then lane 0 counts the
// tiles; `b` is ready for the block after the caller's next barrier. The six windows' binary
// searches run side by side: thread 0 alone took a fifth of the warps' time in the Hopper dK/dV
// pass on the 2-D anchor (ncu stall samples at the barrier after it, sixteenth session).
__device__ __forceinline__ void query_box_of_warp(const FnaParams& p, const TileBox& kt, QueryBox& b, int lane) {
    if (lane < 6) {
        const int a = lane / 2;
        if (lane % 2 == 0) {
            axis_inverse_window(p, a, kt.first[a], kt.glen[a], b.lo[a], b.full_hi[a]);
        } else {
            axis_inverse_window(p, a, kt.end[a] - 1, kt.glen[a], b.full_lo[a], b.hi[a]);
        }
    }
    __syncwarp();
    if (lane == 0) query_box_tiles(p, b);
}

// Flat token index (row-major over the spatial grid) of the group-local coordinates `j` of
// dilation groups `group`.
__device__ __forceinline__ int token_of(const FnaParams& p, const int (&j)[3], const int (&group)[3]) {
    int x0 = j[0] * p.dilation[0] + group[0];
    int x1 = j[1] * p.dilation[1] + group[1];
    int x2 = j[2] * p.dilation[2] + group[2];
    return (x0 * p.len[1] + x1) * p.len[2] + x2;
}

// Element offset of the first row of (batch, head) in a heads-last tensor
// [batch, tokens, heads, cols]; its rows are `heads * cols` elements apart.
__device__ __forceinline__ long long head_offset(int batch, int tokens, int heads, int head, int cols) {
    return ((long long)batch * tokens * heads + head) * cols;
}

// Where one (batch, query head, KV head)'s rows lie in the heads-last tensors of a call
// ([batch, tokens, heads, cols]; rows are tokens, `heads * cols` elements apart): each tensor's
// row stride and the element offset of the head's first row. dQ shares Q's, dO and out share
// `o`, dK shares K's and dV V's.
struct HeadRows {
    long long q_stride, o_stride, k_stride, v_stride;
    long long q, o, k, v;
};

__device__ __forceinline__ HeadRows head_rows(const FnaParams& p, int batch, int head, int head_kv) {
    HeadRows r;
    r.q_stride = (long long)p.heads * p.head_dim;
    r.o_stride = (long long)p.heads * p.head_dim_v;
    r.k_stride = (long long)p.heads_kv * p.head_dim;
    r.v_stride = (long long)p.heads_kv * p.head_dim_v;
    r.q = head_offset(batch, p.tokens, p.heads, head, p.head_dim);
    r.o = head_offset(batch, p.tokens, p.heads, head, p.head_dim_v);
    r.k = head_offset(batch, p.kv_tokens, p.heads_kv, head_kv, p.head_dim);
    r.v = head_offset(batch, p.kv_tokens, p.heads_kv, head_kv, p.head_dim_v);
    return r;
}

// `acc` plus the dot product, in f32, of the 8 elements at `o` and at `d_o` (16-byte aligned
// rows of O and dO): the inner step of delta = rowsum(dO * O) in both dQ passes.
template <typename Element>
__device__ __forceinline__ float dot8_f32(const Element* o, const Element* d_o, float acc) {
    const uint4 o8 = *reinterpret_cast<const uint4*>(o);
    const uint4 d8 = *reinterpret_cast<const uint4*>(d_o);
    const Element* a = reinterpret_cast<const Element*>(&o8);
    const Element* b = reinterpret_cast<const Element*>(&d8);
#pragma unroll
    for (int e = 0; e < 8; ++e) acc += float(a[e]) * float(b[e]);
    return acc;
}

// Coordinates of row `r` of a tile (row-major over the tile's box) at `origin`.
__device__ __forceinline__ void tile_coords(int r, const int (&log2)[3], const int (&origin)[3], int (&j)[3]) {
    j[2] = origin[2] + (r & ((1 << log2[2]) - 1));
    j[1] = origin[1] + ((r >> log2[2]) & ((1 << log2[1]) - 1));
    j[0] = origin[0] + (r >> (log2[2] + log2[1]));
}

// Token offset of row `r` of a tile (tile extents 2^log2) from the tile's first token: the
// same for every tile of a dilation group's grid.
__device__ __forceinline__ int tile_row_offset(const FnaParams& p, const int (&log2)[3], int r) {
    int j[3];
    const int zero[3] = {0, 0, 0};
    tile_coords(r, log2, zero, j);
    return (j[0] * p.dilation[0] * p.len[1] + j[1] * p.dilation[1]) * p.len[2] + j[2] * p.dilation[2];
}

// ---------------------------------------------------------------------------------------------
// Staging: gather tile rows from global memory into a swizzled shared tile with 16-byte
// cp.async; rows outside `bound` (padding) and columns from `cols` (the tensor's head dim) on
// are zero-filled.

__device__ __forceinline__ void cp_async_16(void* smem, const void* gmem, bool valid) {
    const uint32_t s = static_cast<uint32_t>(__cvta_generic_to_shared(smem));
    const int bytes = valid ? 16 : 0;
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(s), "l"(gmem), "r"(bytes));
}

template <int kRows, int kHeadDim, int kNThreads, typename Element, typename SmemTensor>
__device__ __forceinline__ void stage_tile(SmemTensor& smem, const Element* base, long long row_stride,
                                           const FnaParams& p, const int (&log2)[3],
                                           const int (&origin)[3], const int (&bound)[3],
                                           const int (&group)[3], int cols, int thread = threadIdx.x) {
    constexpr int kChunks = kHeadDim / 8;
    // Row r of the tile is token token_of(origin) + sum_a j_a(r) * dilation_a * (row-major token
    // stride of axis a): one base per tile, three multiply-adds per row. Offsets inside a batch
    // entry fit 32 bits (checked on the host).
    const int stride1 = p.len[2];
    const int stride0 = p.len[1] * p.len[2];
    const int step0 = p.dilation[0] * stride0 * (int)row_stride;
    const int step1 = p.dilation[1] * stride1 * (int)row_stride;
    const int step2 = p.dilation[2] * (int)row_stride;
    const Element* tile_base = base + (long long)token_of(p, origin, group) * row_stride;
    bool whole = true;  // no row of the tile lies past `bound`: no per-row check
#pragma unroll
    for (int a = 0; a < 3; ++a) whole &= origin[a] + (1 << log2[a]) <= bound[a];
    const int mask2 = (1 << log2[2]) - 1, mask1 = (1 << log2[1]) - 1, shift0 = log2[2] + log2[1];
#pragma unroll
    for (int idx = thread; idx < kRows * kChunks; idx += kNThreads) {
        const int r = idx / kChunks;
        const int c = (idx % kChunks) * 8;
        const int j2 = r & mask2, j1 = (r >> log2[2]) & mask1, j0 = r >> shift0;
        const bool row_ok =
            whole || (origin[0] + j0 < bound[0] && origin[1] + j1 < bound[1] && origin[2] + j2 < bound[2]);
        const bool ok = row_ok && c < cols;
        const Element* src = ok ? tile_base + (j0 * step0 + j1 * step1 + j2 * step2 + c) : base;
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

// Origin (group-local, per axis) of tile t of a walk over a box starting at `lo` with `tiles`
// tiles of extents 2^log2 per axis (axis 2 fastest).
__device__ __forceinline__ void walk_origin(int t, const int (&lo)[3], const int (&tiles)[3], const int (&log2)[3],
                                            int (&origin)[3]) {
    origin[2] = lo[2] + (t % tiles[2]) * (1 << log2[2]);
    origin[1] = lo[1] + ((t / tiles[2]) % tiles[1]) * (1 << log2[1]);
    origin[0] = lo[0] + (t / (tiles[2] * tiles[1])) * (1 << log2[0]);
}

// Whether the group-local key `j` lies in the window [lo, hi) on every axis.
__device__ __forceinline__ bool in_window(const int (&lo)[3], const int (&hi)[3], const int (&j)[3]) {
    return lo[0] <= j[0] && j[0] < hi[0] && lo[1] <= j[1] && j[1] < hi[1] && lo[2] <= j[2] && j[2] < hi[2];
}

// The window of the group-local query `i` (clipped to the last real query `end - 1` per axis, so
// that padding rows get a finite window) on every axis.
__device__ __forceinline__ void query_window(const FnaParams& p, const int (&i)[3], const int (&glen)[3],
                                             const int (&end)[3], int (&lo)[3], int (&hi)[3]) {
#pragma unroll
    for (int a = 0; a < 3; ++a) axis_window(p, a, min(i[a], end[a] - 1), glen[a], lo[a], hi[a]);
}

// The windows of this thread's score rows (queries of Q tile `qt`; padding rows take the last
// query's window: finite, never stored), computed once per CTA: recomputing them on every
// partial KV tile cost 15% on the 2-D anchor (H200), more than the registers they hold.
template <int kRows, int kNWarps>
__device__ __forceinline__ void row_windows(const FnaParams& p, const TileBox& qt, int (&lo)[kRows][3],
                                            int (&hi)[kRows][3]) {
#pragma unroll
    for (int r = 0; r < kRows; ++r) {
        int i[3];
        tile_coords(acc_row(r, kNWarps), p.q_tile_log2, qt.first, i);
        query_window(p, i, qt.glen, qt.end, lo[r], hi[r]);
    }
}

// Sets to -inf the scores outside their row's window: rows are this thread's accumulator rows,
// with windows [win_lo, win_hi) per axis; columns are the tokens of the tile of extents 2^log2 at
// `origin`. The forward and dQ pass mask query rows by their windows over a KV tile, the dK/dV
// pass key rows by their inverse windows over a Q tile.
template <int kRows, typename Scores>
__device__ __forceinline__ void mask_scores(Scores& scores, const int (&win_lo)[kRows][3], const int (&win_hi)[kRows][3],
                                            const int (&log2)[3], const int (&origin)[3]) {
#pragma unroll
    for (int c = 0; c < size<1>(scores); ++c) {
        int j[3];
        tile_coords(acc_col(c), log2, origin, j);
#pragma unroll
        for (int r = 0; r < kRows; ++r) {
            if (!in_window(win_lo[r], win_hi[r], j)) scores(r, c) = -INFINITY;
        }
    }
}

// Writes an f32 accumulator tile (kRowsTile x kHeadDim, the TiledMma's C layout) as `Element`
// rows of a heads-last tensor with `cols` columns: through the shared tile `smem` (free for
// reuse: the caller synchronised), then 16-byte stores of the rows inside `bound`.
template <typename Traits, int kRowsTile, typename Acc, typename SmemTensor>
__device__ __forceinline__ void store_rows(Acc& acc, SmemTensor& smem, typename Traits::Element* base,
                                           long long row_stride, const FnaParams& p, const int (&log2)[3],
                                           const int (&origin)[3], const int (&bound)[3], const int (&group)[3],
                                           int cols) {
    using Element = typename Traits::Element;
    typename Traits::TiledMma tiled_mma;
    Tensor elems = convert_to<Element>(acc);
    auto copy = make_tiled_copy_C(typename Traits::SmemCopyAtomO{}, tiled_mma);
    auto thr_copy = copy.get_thread_slice(threadIdx.x);
    Tensor src = thr_copy.retile_S(elems);
    Tensor dst = thr_copy.partition_D(smem);
    cute::copy(copy, src, dst);
    __syncthreads();
    constexpr int kChunks = Traits::kHeadDim / 8;
    for (int idx = threadIdx.x; idx < kRowsTile * kChunks; idx += Traits::kNThreads) {
        const int r = idx / kChunks;
        const int c = (idx % kChunks) * 8;
        int i[3];
        tile_coords(r, log2, origin, i);
        if (i[0] < bound[0] && i[1] < bound[1] && i[2] < bound[2] && c < cols) {
            *reinterpret_cast<uint4*>(base + (long long)token_of(p, i, group) * row_stride + c) =
                *reinterpret_cast<const uint4*>(&smem(r, c));
        }
    }
}

}  // namespace natten_native
