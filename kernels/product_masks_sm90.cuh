// Window masks as a product, for the Hopper forward (fna_forward_sm90.cuh, FnaSm90Traits with
// kProductMasks) and the paired backward passes (their traits' kProductMasks; there the rows
// are queries against walked keys in the dQ pass and keys against walked queries in the dK/dV
// pass, whose windows are inverse ones): the masked scores come out of the tensor cores with S,
// so the softmax of a partial tile is that of a full one (no mask lookups, no selects).
//
// A window is a box: a key is in the window of a query when it is on every axis, and on axis a
// that depends on the query's coordinate and the key's coordinate there only. So the mask of a
// partial tile is a sum over the masked axes of a per-axis bias (0 inside, kBias outside), and
// each per-axis term is a product over the key's offset x on that axis inside its KV tile:
//
//   bias(query q, key n) = sum_a sum_x B_a(q, origin_a + x) * onehot_a(n, x),
//
// which is one more k-step (16 columns) of S = Q K^T: A = the bias blocks of the tile (64 rows x
// 8 offsets per axis, two axes, so KV tiles at most 8 keys deep on each), B = the one-hot of
// every key's offsets (the same for every tile). A bias block depends on the Q half (its rows'
// windows) and on the tile's origin on its own axis only, so the producer writes, per item, a
// block for each KV tile origin of the walk on each axis (tiles[A] + tiles[B] blocks per half,
// at most kMaxAxisTiles), and a partial tile's k-step picks its two blocks by descriptor: the
// A operand's no-swizzle K-major layout puts the second 8 columns LBO bytes after the first, so
// LBO joins the axis-A block of the tile's origin to its axis-B block.
//
// kOne * kBias = -2^30 per axis outside the window: exp2 of a masked score against any real
// row max is 0, and a row whose first tiles are all outside its window takes a finite max from
// them that the first real score replaces with a correction of exactly 0 (so the outputs equal
// the looked-up masks' bit for bit: harness, 2-D anchor). H100 (harness .dev/h3, bf16, head dim
// 128, 16 heads, three rounds each): the 2-D 128x128 window 31 anchor 0.574-0.578 -> 0.537-0.538
// ms; the backward passes (ncu, 2-D anchor) dK/dV 1220 -> 1190 us, dQ unchanged. The same
// masks written per KV tile (by the producer, 64 x 16 per half and tile) ran no faster than
// the lookups: the producer's per-tile stores took issue slots from the consumers on every SM
// sub-partition; without any producer writes (masks wrong, for timing) the anchor ran
// 0.50-0.52 ms.
#pragma once

#include "sm90_common.cuh"

namespace natten_native {

struct ProductMasks {
    // Bias blocks of one Q half and item: KV tile origins of the walk on both masked axes
    // together (plan::SM90_PRODUCT_MASK_TILES on the host, which checks every Q tile's walk).
    static constexpr int kMaxAxisTiles = 14;
    static constexpr int kBlockBytes = 64 * 16;  // 64 rows x 8 offsets, 2-byte elements
    static constexpr int kHalfBytes = kMaxAxisTiles * kBlockBytes;
    // Two Q buffers x two halves of bias blocks, then the one-hot block (64 keys x 16 columns,
    // k-half 0 for axis A and 1 for axis B, each 1 KB).
    static constexpr int kBiasBytes = 2 * 2 * kHalfBytes;
    static constexpr int kOneHotBytes = 2 * kBlockBytes;
    static constexpr int kBytes = kBiasBytes + kOneHotBytes;
    // A paired backward pass's (one item per CTA): one set of bias blocks per sub-tile, then the
    // one-hot block.
    static constexpr int kPairedBytes = 2 * kHalfBytes + kOneHotBytes;
    // Exact in f16 and bf16; their product is -2^30.
    static constexpr float kOne = 32768.f;
    static constexpr float kBias = -32768.f;

    // The masked axes: the kernels' last two (a 2-D problem's, padded in front; the host takes
    // product masks only where axis 0 is padding: length 1, KV tiles 1 deep). A padding axis
    // among them gets bias blocks of 0 (every window there is [0, 1), every key at 0).
    static constexpr int kAxisA = 1;
    static constexpr int kAxisB = 2;

    // The one-hot block: row n (a key of the walked tile, extents 2^walked_log2; a query in the
    // dK/dV pass) holds kOne at its offset on axis A (k-half 0) and on axis B (k-half 1). No
    // swizzle: row n of k-half k at k * kBlockBytes + 16 n. Threads `thread` of `threads` share
    // the work; the caller fences and synchronises.
    template <typename Element>
    static __device__ void build_one_hot(char* one_hot, const int (&walked_log2)[3], int thread, int threads) {
        for (int idx = thread; idx < 2 * 64; idx += threads) {
            const int kh = idx / 64, n = idx % 64;
            int x[3];
            const int zero[3] = {0, 0, 0};
            tile_coords(n, walked_log2, zero, x);
            const int off = kh == 0 ? x[kAxisA] : x[kAxisB];
            const uint32_t one = Element(kOne).raw();
            uint32_t w[4];
#pragma unroll
            for (int q = 0; q < 4; ++q) w[q] = (off == 2 * q ? one : 0u) | (off == 2 * q + 1 ? one << 16 : 0u);
            store_shared(one_hot + kh * kBlockBytes + n * 16, w);
        }
    }

    // Row `row` of every bias block of a Q half (a key sub-tile in the dK/dV pass) for one
    // item: the row's windows [lo, hi) (of keys; of queries, inverse, in the dK/dV pass) and the
    // item's walk `box` (KvBox, QueryBox) of tiles of extents 2^walked_log2; `half_blocks` is the
    // half's blocks. Block t (t < box.tiles[A]) is the tile origin box.lo[A] + t 2^log2[A] on
    // axis A, block box.tiles[A] + t the origin on axis B.
    template <typename Element, typename Box>
    static __device__ void write_bias_row(char* half_blocks, int row, const int (&lo)[3], const int (&hi)[3],
                                          const Box& box, const int (&walked_log2)[3]) {
        const uint32_t bias = Element(kBias).raw();
        auto write_axis = [&](auto axis, int first_block) {
            constexpr int a = decltype(axis)::value;
            const int ext = 1 << walked_log2[a];
            const int wlo = lo[a], whi = hi[a];
            int origin = box.lo[a];
            for (int t = 0; t < box.tiles[a]; ++t, origin += ext) {
                uint32_t w[4];
#pragma unroll
                for (int q = 0; q < 4; ++q) {
                    const int k0 = origin + 2 * q, k1 = k0 + 1;
                    const bool in0 = 2 * q >= ext || (wlo <= k0 && k0 < whi);
                    const bool in1 = 2 * q + 1 >= ext || (wlo <= k1 && k1 < whi);
                    w[q] = (in0 ? 0u : bias) | (in1 ? 0u : bias << 16);
                }
                store_shared(half_blocks + (first_block + t) * kBlockBytes + row * 16, w);
            }
        };
        write_axis(Int<kAxisA>{}, 0);
        write_axis(Int<kAxisB>{}, box.tiles[kAxisA]);
    }

    // The descriptor of the one-hot block (B operand: 64 keys x 16 columns, K-major, no swizzle).
    static __device__ __forceinline__ uint64_t one_hot_desc(const char* one_hot) {
        return desc(cute::cast_smem_ptr_to_uint(one_hot), kBlockBytes);
    }

    // The descriptor of a walked tile's bias (A operand: 64 rows x 16 columns): the half's
    // blocks at `half_blocks` (shared address), the tile's origin `origin` in the walk of `box`
    // (tiles of extents 2^walked_log2).
    template <typename Box>
    static __device__ __forceinline__ uint64_t bias_desc(uint32_t half_blocks, const int (&origin)[3],
                                                         const Box& box, const int (&walked_log2)[3]) {
        const int ta = (origin[kAxisA] - box.lo[kAxisA]) >> walked_log2[kAxisA];
        const int tb = box.tiles[kAxisA] + ((origin[kAxisB] - box.lo[kAxisB]) >> walked_log2[kAxisB]);
        return desc(half_blocks + ta * kBlockBytes, (tb - ta) * kBlockBytes);
    }

    // acc += A B over one k-step of 16 (64 x 64 x 16, both operands in shared memory, A the bias
    // blocks by `bias` (bias_desc), B the one-hot): issued as a wgmma batch of its own into the
    // accumulator of S after S's own products, not waited for.
    template <typename Element, typename Acc>
    static __device__ __forceinline__ void issue(uint64_t bias, uint64_t one_hot, Acc& acc) {
        using Op = decltype(GMMA::ss_op_selector<Element, Element, float, Shape<_64, _64, _16>>());
        static_assert(decltype(size(acc))::value == 32, "a 64 x 64 f32 accumulator");
        warpgroup_fence_operand(acc);
        warpgroup_arrive();
        Op::fma(bias, one_hot, acc(0), acc(1), acc(2), acc(3), acc(4), acc(5), acc(6), acc(7), acc(8), acc(9),
                acc(10), acc(11), acc(12), acc(13), acc(14), acc(15), acc(16), acc(17), acc(18), acc(19), acc(20),
                acc(21), acc(22), acc(23), acc(24), acc(25), acc(26), acc(27), acc(28), acc(29), acc(30), acc(31));
        warpgroup_commit_batch();
    }

  private:
    // A K-major no-swizzle GMMA descriptor: 8-row core matrices of 16-byte rows, 128 bytes apart
    // (SBO), the second 8 columns `lbo` bytes after the first.
    static __device__ __forceinline__ uint64_t desc(uint32_t start, int lbo) {
        GmmaDescriptor d;
        d.bitfield.start_address_ = static_cast<uint16_t>(start >> 4);
        d.bitfield.leading_byte_offset_ = static_cast<uint16_t>(lbo >> 4);
        d.bitfield.stride_byte_offset_ = 128 >> 4;
        return d.desc_;
    }

    static __device__ __forceinline__ void store_shared(char* dst, const uint32_t (&w)[4]) {
        const uint32_t addr = cute::cast_smem_ptr_to_uint(dst);
        asm volatile("st.shared.v4.u32 [%0], {%1, %2, %3, %4};\n" ::"r"(addr), "r"(w[0]), "r"(w[1]), "r"(w[2]),
                     "r"(w[3]));
    }
};

}  // namespace natten_native
