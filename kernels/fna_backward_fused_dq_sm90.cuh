// The dQ side of the fused Hopper backward (fna_backward_dkdv_sm90_ws.cuh with kFusedDq): FA3's
// single-pass backward on the NA tiling. The dK/dV pass already computes, per step, dS^T for its
// 128 keys (two consumer warpgroups x 64) against the step's 64 queries; instead of recomputing
// S and dP in a dQ pass, each step also computes the step's partial dQ = dS K over the 128 keys
// and adds it, in f32, to a dQ accumulator in global memory with a TMA reduce-add (dQ is then
// not deterministic: the order of the f32 adds varies). A step, after dS^T:
//
// 1. consumer h writes its dS^T (64 keys x 64 queries, bf16/f16) to shared memory as the
//    MN-major A operand of dQ (SmemLayoutDs: queries contiguous), once the other warpgroup is
//    done reading it (named barrier kFreedBarrier + h: the other arrives after its dQ product);
// 2. both warpgroups meet (kWrittenBarrier), then consumer h issues dQ's columns
//    [64 h, 64 h + 64) over the keys of both sub-tiles (SS wgmma, K as an MN-major B view of the
//    resident K tiles' column block h; 32 accumulator registers) under its dK product (waiting
//    for dK first and issuing dQ after was 10-20% slower on the whole backward);
// 3. it stages them (f32, two 32-column 128-byte-swizzled boxes, 16 KiB) and one thread issues
//    the reduce-add of each box into the accumulator (tensor map of dQ's accumulator with the Q
//    tile's box, src/backend/native/tensor_map.rs); the staging is reused once the previous
//    step's reduce has read it (cp.async.bulk.wait_group.read).
//
// Before the pass a small kernel computes delta = rowsum(dO * O) and zeroes the accumulator;
// after it another writes dQ = accumulator x scale in the element type (both below).
//
// Opt-in (BURN_NATTEN_NATIVE_FUSED_BACKWARD=1): on the H100 anchors (bf16, d128, 16 heads,
// thirteenth session, whole backward, same device call as the two passes) it ran 1-D 4.74 ms
// against 4.62-4.68, 2-D 1.99 against 1.95-1.97, 3-D 17.1 against 16.0-16.2, 2-D 256x256 w63
// 19.1 against 18.1. ncu (2-D): the pass 1.84 ms against 0.74 + 1.22 for the dQ and dK/dV
// passes, but the prologue takes 88 us and the epilogue 62 us (memory-bound: zeroing and
// reading back 134 MB of f32 accumulator, reading O and dO). Next: the reduce-adds issued by
// a producer warp (FA3), not by each consumer between two of its own barriers.
#pragma once

#include "sm90_common.cuh"

namespace natten_native {

// Named barriers of the fused pass (1 and 2 are the consumers' own, bar_sync_wg(1 + h)).
constexpr int kWrittenBarrier = 3;  // both consumers' dS^T are in shared memory
constexpr int kFreedBarrier = 4;    // + h: consumer h may overwrite its dS^T (the other read it)

// TMA reduce-add (f32) of the box at (c0, .., c4) of `map` from shared `smem` (1024-byte aligned).
__device__ __forceinline__ void tma_reduce_add_5d(const void* smem, const CUtensorMap* map, int c0, int c1, int c2,
                                                  int c3, int c4) {
    asm volatile(
        "cp.reduce.async.bulk.tensor.5d.global.shared::cta.add.tile.bulk_group [%0, {%2, %3, %4, %5, %6}], [%1];" ::"l"(
            map),
        "r"(static_cast<uint32_t>(__cvta_generic_to_shared(smem))), "r"(c0), "r"(c1), "r"(c2), "r"(c3), "r"(c4)
        : "memory");
}

__device__ __forceinline__ void bulk_commit_group() {
    asm volatile("cp.async.bulk.commit_group;\n" ::: "memory");
}

// Waits until the bulk groups this thread committed have read their shared memory.
__device__ __forceinline__ void bulk_wait_group_read() {
    asm volatile("cp.async.bulk.wait_group.read 0;\n" ::: "memory");
}

// Waits until the bulk groups this thread committed are complete (their writes done).
__device__ __forceinline__ void bulk_wait_group() {
    asm volatile("cp.async.bulk.wait_group 0;\n" ::: "memory");
}

// The shared tiles and products of the fused dQ (16-bit Element, 64 keys per consumer, 64
// queries per step, 64 of the head dim's columns per consumer).
template <typename Element>
struct FusedDqSm90 {
    // dS of one consumer as the A operand (queries x its 64 keys), queries contiguous.
    using SmemLayoutDs = decltype(tile_to_shape(GMMA::Layout_MN_SW128_Atom<Element>{}, Shape<_64, _64>{}));
    // A 64-key x 64-column block of a resident K tile (K-major, 128-byte swizzled) and its
    // MN-major view (columns x keys), the B operand of dQ = dS K.
    using SmemLayoutKBlock = decltype(tile_to_shape(GMMA::Layout_K_SW128_Atom<Element>{}, Shape<_64, _64>{}));
    using SmemLayoutKBlockT =
        decltype(composition(SmemLayoutKBlock{}, make_ordered_layout(Shape<_64, _64>{}, Step<_2, _1>{})));
    using Mma = decltype(make_tiled_mma(GMMA::ss_op_selector<Element, Element, float, Shape<_64, _64, _64>,
                                                              GMMA::Major::MN, GMMA::Major::MN>(),
                                        Layout<Shape<_1, _1, _1>>{}));
    static constexpr int kDsBytes = 64 * 64 * 2;         // one consumer's dS^T
    static constexpr int kStagingBytes = 64 * 64 * 4;    // one consumer's f32 dQ columns
    static constexpr int kBytes = 2 * kDsBytes + 2 * kStagingBytes;
};

// Step 1: thread `lt` of consumer h writes its dS^T fragment (`dst`, the converted accumulator of
// 64 keys x 64 queries) into `ds` (SmemLayoutDs: element (query, key)); pairs of queries are
// contiguous, so 32-bit stores, conflict-free under the swizzle.
template <typename Element, typename Frag>
__device__ __forceinline__ void write_ds_sm90(const Frag& dst, Element* ds, int lt) {
    Tensor sds = make_tensor(make_smem_ptr(ds), typename FusedDqSm90<Element>::SmemLayoutDs{});
    Tensor v = make_tensor(dst.data(), rowcol_sm90(dst.layout()));
    for_each_acc_pair(v, lt, [&](int r, int c, int key, int query) {  // a row is a key
        store_pair(sds(query, key), v(r, c), v(r, c + 1));
    });
}

// Step 3: the f32 dQ columns of this consumer (`acc`, 64 queries x 64 columns) into its staging
// (two boxes of 64 rows x 32 floats, 128-byte swizzle: 16-byte chunk j of row r at j ^ (r % 8)).
template <typename Acc>
__device__ __forceinline__ void stage_dq_sm90(const Acc& acc, float* staging, int lt) {
    Tensor v = make_tensor(acc.data(), rowcol_sm90(acc.layout()));
    for_each_acc_pair(v, lt, [&](int r, int c, int row, int col) {
        const int box = col / 32, cb = col % 32;
        float* dst = staging + box * (64 * 32) + row * 32 + (((cb / 4) ^ (row % 8)) * 4) + cb % 4;
        *reinterpret_cast<float2*>(dst) = make_float2(v(r, c), v(r, c + 1));
    });
}

}  // namespace natten_native

// The kernels before and after the fused pass, one thread block of 256 threads per 8 rows
// (token, head) of the call (the epilogue: per 1024 elements). Prologue: delta[row] = sum over
// the head dim of dO * O (f32), and the row's dQ accumulator p.dq_acc (head_dim floats) zeroed.
// Epilogue: dQ = accumulator x scale, in the element type.
#define NATTEN_FNA_BACKWARD_FUSED_SM90_AUX_KERNELS(PROLOGUE, EPILOGUE, ELEMENT)                            \
    extern "C" __global__ void __launch_bounds__(256) PROLOGUE(const natten_native::FnaParams p) {      \
        const long long row = (long long)blockIdx.x * 8 + threadIdx.x / 32;                              \
        const int lane = threadIdx.x % 32;                                                               \
        if (row >= (long long)p.batch * p.tokens * p.heads) return;                                     \
        const ELEMENT* o = reinterpret_cast<const ELEMENT*>(p.out) + row * p.head_dim_v;                 \
        const ELEMENT* d_o = reinterpret_cast<const ELEMENT*>(p.d_out) + row * p.head_dim_v;             \
        float acc = 0.f;                                                                                 \
        for (int c = lane * 8; c < p.head_dim_v; c += 256) acc = natten_native::dot8_f32(o + c, d_o + c, acc); \
        for (int off = 16; off > 0; off /= 2) acc += __shfl_xor_sync(0xffffffffu, acc, off);             \
        if (lane == 0) p.delta[row] = acc;                                                                \
        float4* z = reinterpret_cast<float4*>(p.dq_acc + row * p.head_dim);                              \
        for (int c = lane; c < p.head_dim / 4; c += 32) z[c] = make_float4(0.f, 0.f, 0.f, 0.f);          \
    }                                                                                                    \
    extern "C" __global__ void __launch_bounds__(256) EPILOGUE(const natten_native::FnaParams p) {      \
        const long long i = ((long long)blockIdx.x * 256 + threadIdx.x) * 4;                            \
        if (i >= (long long)p.batch * p.tokens * p.heads * p.head_dim) return;                          \
        const float4 a = *reinterpret_cast<const float4*>(p.dq_acc + i);                                 \
        cutlass::Array<ELEMENT, 4> out;                                                                  \
        out[0] = ELEMENT(a.x * p.scale);                                                                 \
        out[1] = ELEMENT(a.y * p.scale);                                                                 \
        out[2] = ELEMENT(a.z * p.scale);                                                                 \
        out[3] = ELEMENT(a.w * p.scale);                                                                 \
        *reinterpret_cast<cutlass::Array<ELEMENT, 4>*>(reinterpret_cast<ELEMENT*>(p.dq) + i) = out;     \
    }
