// The Hopper (sm_90a) dQ pass at head dim 128, warp-specialised: the dQ mirror of
// fna_backward_dkdv_sm90_ws.cuh. Same semantics and outputs (dQ and delta = rowsum(dO * O)) as
// fna_backward_dq_sm90 (which runs head dim 64) and the SM80 pass; the grid differs:
//
// - one CTA per (pair of 64-query Q tiles along axis `pair_axis`, head, batch): a 128-query tile
//   (the Q tile's extent doubled on that axis). Sub-tile h (h = 0, 1) is the plan's 64-query Q
//   tile 2 t + h on that axis (empty when past the group's end). The host picks the axis
//   (src/backend/native/plan.rs, `FnaParams::query_pair_axis`: the one whose KV box grows least
//   when the Q tile doubles) and passes it as the kernel's second argument;
// - 384 threads: a producer warpgroup (setmaxnreg kProducerRegs) and two consumer warpgroups
//   (kConsumerRegs), consumer h owning sub-tile h (Q, dO resident; dQ in registers);
// - the producer stages Q and dO of both sub-tiles (one "q" mbarrier), then walks the KV box of
//   the whole 128-query tile (kv_box_of of the doubled tile), loading each step's K and V tiles
//   into a ring of kStages buffers: with TMA where the host could describe K and V (`kv_tma`,
//   the third argument; tma_load_pair, as the forward), else gathered with cp.async ("full"
//   mbarriers via cp.async.mbarrier.arrive.noinc); consumers free a buffer through its "empty"
//   mbarrier, so both consumers share each load;
// - consumer h computes its rows' delta (from global O and dO) and LSE, skips a step whose KV
//   tile misses its own sub-tile's KV box, masks non-full steps with its query rows' windows (in
//   registers) and runs the 64-query pass's step body (S, dP SS wgmma; P, dS on the fragments;
//   dQ += dS K RS wgmma); epilogue through its own Q tile.
//
// Measured (a helper's harness, .dev/hopper-bwd/wsdq/harness_wsdq.cu; H100, bf16, d128, 16 heads,
// batch 1, dQ pass alone, CUDA events, same run as the 64-query pass): 1-D 32768 w2048 2.33 ->
// 1.96 ms, 2-D 128x128 w31 1.17 -> 0.955, 3-D 16x44x80 w8x16x24 11.77 -> 9.15 (f16 the same
// within 1%). dQ and delta bit-identical to the 64-query pass on the three anchors (bf16 and
// f16); small cases differ in a few elements (f32 sums in another KV tile order where the whole
// tile's walk starts elsewhere). Other pair axes were no faster; 2 stages slower (3-D 10.41),
// 4 no better; leaving step t's dQ product running under step t + 1's S and dP was slower (3-D
// 9.45), and so were persistent forms (static striding 10.20, an atomic work counter 9.63).
// ptxas (sm_90a, 56/224, 3 stages): 168 registers at launch, no spills; 166,712 bytes of shared
// memory (one CTA per SM).
#pragma once

#include <cutlass/arch/reg_reconfig.h>

// The 64-query pass: its delta/LSE prologue, step body and epilogue (delta_and_lse_sm90,
// dq_step_sm90, pack_dq_sm90, store_dq_sm90) are this pass's too.
#include "fna_backward_sm90.cuh"
#include "product_masks_sm90.cuh"

namespace natten_native {

// kProductMasks: the masks of S as a product (product_masks_sm90.cuh; bias blocks of the query
// rows' windows against the walk's KV tile origins, written once per CTA by the consumers).
template <typename Element_, int kHeadDim_, int kStages_ = 3, int kProducerRegs_ = 56, int kConsumerRegs_ = 224,
          bool kProductMasks_ = false>
struct FnaBwdDqSm90WsTraits : ProducerConsumersSm90<kProducerRegs_, kConsumerRegs_> {
    using Element = Element_;
    static constexpr int kHeadDim = kHeadDim_;
    static constexpr bool kProductMasks = kProductMasks_;
    static constexpr int kBlockM = 64;  // queries of a consumer (a plan Q tile)
    static constexpr int kBlockN = 64;  // keys of a walked step (a KV tile)
    static constexpr int kStages = kStages_;
    static_assert(kHeadDim % 64 == 0, "128-byte swizzled rows");

    // S = Q K^T and dP = dO V^T; dQ += dS K.
    using MmaS = typename WarpgroupMmasSm90<Element, kHeadDim, kBlockN>::MmaS;
    using MmaDQ = typename WarpgroupMmasSm90<Element, kHeadDim, kBlockN>::MmaAcc;

    using SmemAtom = GMMA::Layout_K_SW128_Atom<Element>;
    using SmemLayoutQ = decltype(tile_to_shape(SmemAtom{}, Shape<Int<kBlockM>, Int<kHeadDim>>{}));
    // The K / V ring, gathered by the producer warpgroup (threads 0..127).
    using Split = ProducerConsumersSm90<kProducerRegs_, kConsumerRegs_>;
    using Gather = GatheredTilesSm90<Element, kHeadDim, kBlockN, kStages, Split::kProducerThreads>;
    using SmemLayoutKV = typename Gather::SmemLayout;
    using SmemLayoutKt = typename Gather::SmemLayoutMN;

    static constexpr int kRowsPerThread = 2;
    static constexpr int kQBytes = kBlockM * kHeadDim * 2;              // one sub-tile of Q (or dO)
    static constexpr int kKVBytes = kStages * kBlockN * kHeadDim * 2;   // the K ring (or V ring)
    // Geometry: PairedGeometry<KvBox> (512 bytes), kv_tok_off (kBlockN ints), LSE / delta of
    // the 128 query rows (2 x 128 floats), mbarriers (q, full x kStages, empty x kStages), the
    // window-mask table (WindowMasks).
    static constexpr int kGeometryBytes =
        512 + kBlockN * 4 + 2 * 2 * kBlockM * 4 + (1 + 2 * kStages) * 8 + WindowMasks::kBytes;
    // Product masks: one set of bias blocks per Q sub-tile (one item per CTA), the one-hot.
    static constexpr int kProductMaskBytes = kProductMasks ? ProductMasks::kPairedBytes : 0;
    static constexpr int kSmemBytes = 4 * kQBytes + 2 * kKVBytes + kProductMaskBytes + kGeometryBytes + 1024;
};

template <typename Traits>
__device__ void fna_backward_dq_sm90_ws(const FnaParams& p, int pair_axis, bool kv_tma, const TensorMapPair& maps,
                                        char* smem_unaligned) {
    using Element = typename Traits::Element;
    constexpr int kBlockM = Traits::kBlockM;
    constexpr int kBlockN = Traits::kBlockN;
    constexpr int kHeadDim = Traits::kHeadDim;
    constexpr int kStages = Traits::kStages;
    constexpr int kRows = Traits::kRowsPerThread;

    char* smem_raw = align_to_swizzle_period(smem_unaligned);
    char* product_masks = smem_raw + 4 * Traits::kQBytes + 2 * Traits::kKVBytes;  // kProductMaskBytes
    char* one_hot = product_masks + 2 * ProductMasks::kHalfBytes;
    char* geometry = product_masks + Traits::kProductMaskBytes;
    PairedGeometry<KvBox>& geo = *reinterpret_cast<PairedGeometry<KvBox>*>(geometry);
    static_assert(sizeof(PairedGeometry<KvBox>) <= 512);
    int* kv_tok_off = reinterpret_cast<int*>(geometry + 512);                   // [kBlockN]
    float* s_lse = reinterpret_cast<float*>(geometry + 512 + kBlockN * 4);      // [2 kBlockM]
    float* s_delta = s_lse + 2 * kBlockM;                                       // [2 kBlockM]
    uint64_t* bar_q = reinterpret_cast<uint64_t*>(s_delta + 2 * kBlockM);
    uint64_t* bar_full = bar_q + 1;
    uint64_t* bar_empty = bar_full + kStages;
    uint16_t* window_masks = reinterpret_cast<uint16_t*>(bar_empty + kStages);

    // The 128-query tile (pair_axis doubled), its sub-tiles and their KV boxes.
    {
        TileBox whole, sub[2];
        int valid[2];
        if (!paired_tiles_of(p, blockIdx.x, p.len, p.q_tile_log2, p.q_tiles, pair_axis, whole, sub, valid)) {
            return;
        }
        // The three KV boxes, by the first lanes of warps 0 (the whole tile's), 1 and 2 (the
        // sub-tiles'), side by side: thread 0 alone was the longest part of the setup (ncu,
        // sixteenth session).
        const int warp = threadIdx.x / 32;
        if (threadIdx.x % 32 == 0) {
            if (warp == 0) {
                geo.walk = kv_box_of(p, whole);
            } else if (warp <= 2 && valid[warp - 1]) {
                geo.sub_box[warp - 1] = kv_box_of(p, warp == 1 ? sub[0] : sub[1]);
            }
        }
        if (threadIdx.x == 0) {
#pragma unroll
            for (int h = 0; h < 2; ++h) {
                geo.valid[h] = valid[h];
                geo.sub[h] = sub[h];
            }
            init_ring_barriers<kStages>(bar_q, bar_full, bar_empty, Traits::kProducerThreads,
                                        kv_tma ? 1 : Traits::kProducerThreads, Traits::kConsumerThreads);
        }
        if (threadIdx.x < kBlockN) {
            kv_tok_off[threadIdx.x] = tile_row_offset(p, p.kv_tile_log2, threadIdx.x);
        }
        WindowMasks::build(window_masks, p.kv_tile_log2, threadIdx.x, blockDim.x);
        if constexpr (Traits::kProductMasks) {
            ProductMasks::build_one_hot<Element>(one_hot, p.kv_tile_log2, threadIdx.x, blockDim.x);
            cutlass::arch::fence_view_async_shared();  // to the tensor cores
        }
    }
    __syncthreads();

    const int head = blockIdx.y;
    const int batch = blockIdx.z;
    const int head_kv = head / (p.heads / p.heads_kv);
    const HeadRows rows = head_rows(p, batch, head, head_kv);
    const int n_tiles = geo.walk.tiles[0] * geo.walk.tiles[1] * geo.walk.tiles[2];

    Element* smem_q = reinterpret_cast<Element*>(smem_raw);                          // [2] sub-tiles
    Element* smem_do = reinterpret_cast<Element*>(smem_raw + 2 * Traits::kQBytes);   // [2]
    Element* smem_k = reinterpret_cast<Element*>(smem_raw + 4 * Traits::kQBytes);
    Element* smem_v = reinterpret_cast<Element*>(smem_raw + 4 * Traits::kQBytes + Traits::kKVBytes);
    Tensor sK = make_tensor(make_smem_ptr(smem_k), typename Traits::SmemLayoutKV{});
    Tensor sV = make_tensor(make_smem_ptr(smem_v), typename Traits::SmemLayoutKV{});

    if (threadIdx.x < Traits::kProducerThreads) {
        // ---------------- producer warpgroup ----------------
        cutlass::arch::warpgroup_reg_dealloc<Traits::kProducerRegs>();
        {
            const Element* q_base = reinterpret_cast<const Element*>(p.q) + rows.q;
            const Element* do_base = reinterpret_cast<const Element*>(p.d_out) + rows.o;
#pragma unroll 1
            for (int h = 0; h < 2; ++h) {
                if (!geo.valid[h]) continue;
                const TileBox& t = geo.sub[h];
                Tensor sQ = make_tensor(make_smem_ptr(smem_q + h * (Traits::kQBytes / 2)),
                                        typename Traits::SmemLayoutQ{});
                Tensor sdO = make_tensor(make_smem_ptr(smem_do + h * (Traits::kQBytes / 2)),
                                         typename Traits::SmemLayoutQ{});
                stage_tile<kBlockM, kHeadDim, Traits::kProducerThreads>(sQ, q_base, rows.q_stride, p,
                                                                        p.q_tile_log2, t.first, t.end, t.group,
                                                                        p.head_dim);
                stage_tile<kBlockM, kHeadDim, Traits::kProducerThreads>(sdO, do_base, rows.o_stride, p,
                                                                        p.q_tile_log2, t.first, t.end, t.group,
                                                                        p.head_dim_v);
            }
            cutlass::arch::cpasync_barrier_arrive_noinc(bar_q);
        }
        const Element* k_base = reinterpret_cast<const Element*>(p.k) + rows.k;
        const Element* v_base = reinterpret_cast<const Element*>(p.v) + rows.v;
        int hi[3], grp[3], origin[3];
#pragma unroll
        for (int a = 0; a < 3; ++a) {
            hi[a] = geo.walk.hi[a];
            grp[a] = geo.sub[0].group[a];
            origin[a] = geo.walk.lo[a];
        }
        int stage = 0;
        uint32_t phase = 0;
#pragma unroll 1
        for (int t = 0; t < n_tiles; ++t) {
            if (kv_tma) {
                // One thread of warp 0 loads the tile (tma_load_pair, as in the forward).
                if (threadIdx.x < 32) {
                    if (t >= kStages) cutlass::arch::ClusterBarrier::wait(bar_empty + stage, phase ^ 1);
                    if (threadIdx.x == 0) {
                        tma_load_pair<Element, kBlockN, kHeadDim>(maps, p, smem_k + stage * kBlockN * kHeadDim,
                                                                smem_v + stage * kBlockN * kHeadDim, bar_full + stage,
                                                                origin, grp, batch, head_kv);
                    }
                }
            } else {
                if (t >= kStages) cutlass::arch::ClusterBarrier::wait(bar_empty + stage, phase ^ 1);
                Tensor kn = sK(_, _, stage);
                Tensor vn = sV(_, _, stage);
                stage_kv<Traits>(kn, k_base, (int)rows.k_stride, kv_tok_off, p, origin, hi, grp, p.head_dim);
                stage_kv<Traits>(vn, v_base, (int)rows.v_stride, kv_tok_off, p, origin, hi, grp, p.head_dim_v);
                cutlass::arch::cpasync_barrier_arrive_noinc(bar_full + stage);
            }
            next_kv_origin(p, geo.walk, origin);
            if (++stage == kStages) {
                stage = 0;
                phase ^= 1;
            }
        }
        cute::cp_async_wait<0>();
        return;
    }

    // ---------------- consumer warpgroups ----------------
    cutlass::arch::warpgroup_reg_alloc<Traits::kConsumerRegs>();
    const int h = cutlass::canonical_warp_group_idx() - 1;  // sub-tile (warp-uniform to the compiler)
    const int lt = threadIdx.x % 128;     // thread of the warpgroup
    const bool valid = geo.valid[h] != 0;
    const TileBox& qt = geo.sub[h];
    Element* my_q = smem_q + h * (Traits::kQBytes / 2);
    Element* my_do = smem_do + h * (Traits::kQBytes / 2);
    Tensor sQ = make_tensor(make_smem_ptr(my_q), typename Traits::SmemLayoutQ{});
    Tensor sdO = make_tensor(make_smem_ptr(my_do), typename Traits::SmemLayoutQ{});
    Tensor sKt = make_tensor(make_smem_ptr(smem_k), typename Traits::SmemLayoutKt{});
    float* my_lse = s_lse + h * kBlockM;
    float* my_delta = s_delta + h * kBlockM;

    if (valid) delta_and_lse_sm90<Element>(p, rows, qt, batch, head, lt, my_lse, my_delta);
    // The windows of this thread's accumulator rows (wg_acc_row), in registers.
    int win_lo[kRows][3], win_hi[kRows][3];
    if (valid) {
#pragma unroll
        for (int r = 0; r < kRows; ++r) {
            int i[3];
            tile_coords(wg_acc_row(lt, r), p.q_tile_log2, qt.first, i);
            query_window(p, i, qt.glen, qt.end, win_lo[r], win_hi[r]);
        }
    }
    if constexpr (Traits::kProductMasks) {
        // My sub-tile's bias blocks: row lt (of 64) by the first 64 threads.
        if (valid && lt < kBlockM) {
            int i[3], lo[3], hi[3];
            tile_coords(lt, p.q_tile_log2, qt.first, i);
            query_window(p, i, qt.glen, qt.end, lo, hi);
            ProductMasks::write_bias_row<Element>(product_masks + h * ProductMasks::kHalfBytes, lt, lo, hi,
                                                  geo.walk, p.kv_tile_log2);
            cutlass::arch::fence_view_async_shared();  // to the tensor cores
        }
    }
    bar_sync_wg(1 + h);  // my_lse, my_delta (and my bias blocks)
    float row_lse[kRows], row_delta[kRows];
#pragma unroll
    for (int r = 0; r < kRows; ++r) {
        row_lse[r] = my_lse[wg_acc_row(lt, r)];
        row_delta[r] = my_delta[wg_acc_row(lt, r)];
    }

    typename Traits::MmaS mma_s;
    typename Traits::MmaDQ mma_dq;
    auto thr_s = mma_s.get_thread_slice(lt);
    auto thr_dq = mma_dq.get_thread_slice(lt);
    Tensor tSrQ = thr_s.partition_fragment_A(sQ);
    Tensor tSrdO = thr_s.partition_fragment_A(sdO);
    Tensor tSrK = thr_s.partition_fragment_B(sK);
    Tensor tSrV = thr_s.partition_fragment_B(sV);
    Tensor tQrKt = thr_dq.partition_fragment_B(sKt);
    Tensor acc_dq = partition_fragment_C(mma_dq, Shape<Int<kBlockM>, Int<kHeadDim>>{});
    clear(acc_dq);
    const KvBox& mb = geo.sub_box[h];
    const bool no_padding = qt.no_padding;
    // My sub-tile's bias blocks and the one-hot (product masks).
    const uint32_t my_bias = cute::cast_smem_ptr_to_uint(product_masks + h * ProductMasks::kHalfBytes);
    const uint64_t one_hot_desc = ProductMasks::one_hot_desc(one_hot);

    cutlass::arch::ClusterBarrier::wait(bar_q, 0);
    int origin[3];
#pragma unroll
    for (int a = 0; a < 3; ++a) origin[a] = geo.walk.lo[a];
    int stage = 0;
    uint32_t phase = 0;
#pragma unroll 1
    for (int t = 0; t < n_tiles; ++t) {
        // Does the step's KV tile reach this sub-tile's KV box? Full: no padding query, and the
        // step's keys inside the sub-tile's inner box.
        bool active = valid;
        bool full = no_padding;
#pragma unroll
        for (int a = 0; a < 3; ++a) {
            const int e = 1 << p.kv_tile_log2[a];
            active &= origin[a] < mb.hi[a] && origin[a] + e > mb.lo[a];
            full &= origin[a] >= mb.inner_lo[a] && origin[a] + e <= mb.inner_hi[a];
        }
        cutlass::arch::ClusterBarrier::wait(bar_full + stage, phase);
        if (active) {
            cutlass::arch::fence_view_async_shared();
            Tensor acc_s = partition_fragment_C(mma_s, Shape<Int<kBlockM>, Int<kBlockN>>{});
            Tensor acc_dp = partition_fragment_C(mma_s, Shape<Int<kBlockM>, Int<kBlockN>>{});
            wgmma_gemm<true, -1>(mma_s, tSrQ, tSrK(_, _, _, stage), acc_s);
            if constexpr (Traits::kProductMasks) {
                // The masks' k-step of S, on partial steps (its own batch, before dP's).
                if (!full) {
                    const uint64_t bias = ProductMasks::bias_desc(my_bias, origin, geo.walk, p.kv_tile_log2);
                    ProductMasks::issue<Element>(bias, one_hot_desc, acc_s);
                }
            }
            wgmma_gemm<true, -1>(mma_s, tSrdO, tSrV(_, _, _, stage), acc_dp);
            dq_step_sm90<Traits>(p, acc_s, acc_dp, full || Traits::kProductMasks, WindowMasks::of_thread(window_masks),
                                 win_lo, win_hi, origin, row_lse, row_delta, tQrKt(_, _, _, stage), acc_dq);
            cutlass::arch::ClusterBarrier::arrive(bar_empty + stage);
        } else {
            cutlass::arch::ClusterBarrier::arrive(bar_empty + stage);
        }
        next_kv_origin(p, geo.walk, origin);
        if (++stage == kStages) {
            stage = 0;
            phase ^= 1;
        }
    }
    if (!valid) return;

    // Epilogue: dQ (scaled) through this warpgroup's Q tile (its products are done), then
    // 16-byte stores.
    pack_dq_sm90<Element>(acc_dq, p.scale, lt, sQ);
    bar_sync_wg(1 + h);
    store_dq_sm90<kBlockM, kHeadDim, Element>(p, rows, qt, sQ, lt, 128);
}

}  // namespace natten_native

// One extern "C" entry point per element type and head dim (kernels/fna_backward_sm90_d128.cu):
// the parameters and the pair axis (0, 1 or 2; FnaParams::query_pair_axis on the Rust side).
#define NATTEN_FNA_BACKWARD_DQ_SM90_WS_KERNEL(NAME, ELEMENT, HEAD_DIM)                                  \
    NATTEN_FNA_BACKWARD_DQ_SM90_WS_KERNEL_MASKS(NAME, ELEMENT, HEAD_DIM, false)

// The same with the window masks as a product where PRODUCT_MASKS (entry points `_pm`).
#define NATTEN_FNA_BACKWARD_DQ_SM90_WS_KERNEL_MASKS(NAME, ELEMENT, HEAD_DIM, PRODUCT_MASKS)                 \
    extern "C" __global__ void __launch_bounds__(384, 1)                                               \
        NAME(const natten_native::FnaParams p, int pair_axis, int kv_tma,                              \
             const __grid_constant__ CUtensorMap k_map, const __grid_constant__ CUtensorMap v_map) {   \
        extern __shared__ __align__(1024) char smem[];                                                  \
        using Traits = natten_native::FnaBwdDqSm90WsTraits<ELEMENT, HEAD_DIM, 3, 56, 224, PRODUCT_MASKS>; \
        natten_native::fna_backward_dq_sm90_ws<Traits>(                                                \
            p, pair_axis, kv_tma != 0, natten_native::TensorMapPair{&k_map, &v_map}, smem);             \
    }
