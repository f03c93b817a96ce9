// The Hopper (sm_90a) dK/dV pass at head dim 128, warp-specialised (FA3's backward shape on the
// NA tiling). Same semantics and outputs as fna_backward_dkdv_sm90 (which runs head dim 64) and
// the SM80 pass; the grid differs:
//
// - one CTA per (pair of 64-key KV tiles along axis `pair_axis`, KV head, batch): a 128-key tile
//   (the KV tile's extent doubled on that axis). Sub-tile h (h = 0, 1) is the plan's 64-key KV
//   tile 2 t + h on that axis (empty when past the group's end). The host picks the axis
//   (src/backend/native/plan.rs, `FnaParams::key_pair_axis`: the one whose query box grows least
//   when its tile extent doubles) and passes it as the kernel's second argument;
// - 384 threads: a producer warpgroup (setmaxnreg kProducerRegs) and two consumer warpgroups
//   (kConsumerRegs), consumer h owning sub-tile h (K/V resident, dK/dV in registers);
// - the producer stages K and V of both sub-tiles (one "kv" mbarrier), then walks the query box
//   of the whole 128-key tile (query_box_of_warp: the union of the sub-tiles' boxes) x the GQA
//   group, loading each step's Q and dO tiles (64 queries) into a ring of kStages buffers, with TMA
//   where the host could describe Q and dO (`q_tma`, the third argument; tma_load_pair, as the
//   forward's K and V), else gathered with cp.async, and their LSE and delta (4-byte cp.async)
//   ("full" mbarriers: cp.async.mbarrier.arrive.noinc, plus one arrival with the TMA bytes;
//   consumers free a buffer through its "empty" mbarrier), so both consumers share each load;
// - consumer h skips a step whose Q tile misses its own sub-tile's query box (so its MMA work is
//   that of the 64-key pass), masks non-full steps with its key rows' inverse windows and runs
//   the step body the 64-key pass runs (dkdv_step_sm90); epilogue through its own K/V tiles
//   (pack_dkdv_sm90, store_dkdv_sm90).
//
// Measured (H100, bf16, 16 heads, dK/dV pass alone, .dev/hopper-bwd/ws/harness_ws.cu, same run
// as the 64-key pass): d128 1-D 32768 w2048 3.57 -> 3.06 ms, 2-D 128x128 w31 1.71 -> 1.41, 3-D
// 16x44x80 w8x16x24 17.69 -> 12.43; d64 1-D 2.22 -> 2.43 (slower: the 64-key d64 pass runs 3
// CTAs per SM, so head dim 64 keeps it). Bit-identical to the SM80 pass on all 18 harness cases
// in bf16; in f16 one case (1d-1000-w17) differs in 10 elements by 3.1e-5 (a sub-tile's steps
// group its queries differently from its own 64-key walk, so the f32 sums run in another order).
// ptxas (sm_90a, 56/224 registers, 3 stages): 168 registers at launch, a 112-byte stack frame
// with 4 bytes of spill; 170,296 bytes of shared memory at head dim 128. 2 stages: slower (3-D
// 13.0 ms); 4 stages: same as 3; 40/232 registers: 40 bytes of spills, slower. Q / dO by TMA
// instead of the cp.async gather (thirteenth session; H100, whole backward, same run): 1-D
// 4.86 -> 4.64 ms, 2-D 2.13 -> 1.98, 3-D 17.9 -> 16.2.
#pragma once

#include <cutlass/arch/reg_reconfig.h>

#include "fna_backward_dkdv_sm90.cuh"
#include "fna_backward_fused_dq_sm90.cuh"
#include "product_masks_sm90.cuh"

namespace natten_native {

// kFusedDq: the fused backward (fna_backward_fused_dq_sm90.cuh), which also adds each step's dQ
// into an f32 accumulator. kProductMasks: the masks of S^T as a product (product_masks_sm90.cuh;
// the rows are keys, the bias blocks their inverse windows against the walk's Q tile origins,
// written once per CTA by the consumers beside the windows).
template <typename Element_, int kHeadDim_, bool kFusedDq_ = false, int kStages_ = 3, int kProducerRegs_ = 56,
          int kConsumerRegs_ = 224, bool kProductMasks_ = false>
struct FnaBwdDkdvSm90WsTraits : ProducerConsumersSm90<kProducerRegs_, kConsumerRegs_> {
    using Element = Element_;
    static constexpr int kHeadDim = kHeadDim_;
    static constexpr bool kFusedDq = kFusedDq_;
    static constexpr bool kProductMasks = kProductMasks_;
    static_assert(!(kFusedDq && kProductMasks), "product masks: the two passes only");
    using FusedDq = FusedDqSm90<Element>;
    static_assert(!kFusedDq || kHeadDim == 128, "the fused dQ splits 128 columns between the two consumers");
    static constexpr int kBlockM = 64;  // keys of a consumer (a plan KV tile)
    static constexpr int kBlockN = 64;  // queries of a walked step (a Q tile)
    static constexpr int kStages = kStages_;
    static_assert(kHeadDim % 64 == 0, "128-byte swizzled rows");

    // S^T = K Q^T and dP^T = V dO^T; dV += P^T dO and dK += dS^T Q.
    using MmaS = typename WarpgroupMmasSm90<Element, kHeadDim, kBlockN>::MmaS;
    using MmaKV = typename WarpgroupMmasSm90<Element, kHeadDim, kBlockN>::MmaAcc;

    using SmemAtom = GMMA::Layout_K_SW128_Atom<Element>;
    using SmemLayoutK = decltype(tile_to_shape(SmemAtom{}, Shape<Int<kBlockM>, Int<kHeadDim>>{}));
    // The Q / dO ring, gathered by the producer warpgroup (threads 0..127).
    using Split = ProducerConsumersSm90<kProducerRegs_, kConsumerRegs_>;
    using Gather = GatheredTilesSm90<Element, kHeadDim, kBlockN, kStages, Split::kProducerThreads>;
    using SmemLayoutQ = typename Gather::SmemLayout;
    using SmemLayoutQt = typename Gather::SmemLayoutMN;

    static constexpr int kRowsPerThread = 2;
    static constexpr int kKBytes = kBlockM * kHeadDim * 2;            // one sub-tile of K (or V)
    static constexpr int kQBytes = kStages * kBlockN * kHeadDim * 2;  // the Q ring (or dO ring)
    // Geometry: PairedGeometry<QueryBox> (512 bytes), q_tok_off (kBlockN ints), LSE / delta
    // rings (2 x kStages x kBlockN floats), inverse windows of the 128 key rows (128 x 6 ints),
    // mbarriers (kv, full x kStages, empty x kStages), the window-mask table of the Q tiles'
    // columns (WindowMasks).
    static constexpr int kGeometryBytes = 512 + kBlockN * 4 + 2 * kStages * kBlockN * 4 + 2 * kBlockM * 24 +
                                          (1 + 2 * kStages) * 8 + WindowMasks::kBytes;
    // The fused dQ's dS^T tiles and f32 staging, after the Q / dO rings.
    static constexpr int kFusedBytes = kFusedDq ? FusedDq::kBytes : 0;
    // Product masks: one set of bias blocks per key sub-tile (one item per CTA), the one-hot.
    static constexpr int kProductMaskBytes = kProductMasks ? ProductMasks::kPairedBytes : 0;
    static constexpr int kSmemBytes =
        4 * kKBytes + 2 * kQBytes + kFusedBytes + kProductMaskBytes + kGeometryBytes + 1024;
};

__device__ __forceinline__ void cp_async_4(void* smem, const void* gmem, bool valid) {
    const uint32_t s = static_cast<uint32_t>(__cvta_generic_to_shared(smem));
    asm volatile("cp.async.ca.shared.global [%0], [%1], 4, %2;\n" ::"r"(s), "l"(gmem), "r"(valid ? 4 : 0));
}

template <typename Traits>
__device__ void fna_backward_dkdv_sm90_ws(const FnaParams& p, int pair_axis, bool q_tma, const TensorMapPair& maps,
                                          const CUtensorMap* dq_map, char* smem_unaligned) {
    using Element = typename Traits::Element;
    constexpr int kBlockM = Traits::kBlockM;
    constexpr int kBlockN = Traits::kBlockN;
    constexpr int kHeadDim = Traits::kHeadDim;
    constexpr int kStages = Traits::kStages;

    char* smem_raw = align_to_swizzle_period(smem_unaligned);
    char* fused = smem_raw + 4 * Traits::kKBytes + 2 * Traits::kQBytes;  // kFusedBytes
    char* product_masks = fused + Traits::kFusedBytes;  // kProductMaskBytes: bias blocks, one-hot
    char* one_hot = product_masks + 2 * ProductMasks::kHalfBytes;
    char* geometry = product_masks + Traits::kProductMaskBytes;
    PairedGeometry<QueryBox>& geo = *reinterpret_cast<PairedGeometry<QueryBox>*>(geometry);
    static_assert(sizeof(PairedGeometry<QueryBox>) <= 512);
    int* q_tok_off = reinterpret_cast<int*>(geometry + 512);                     // [kBlockN]
    float* s_lse = reinterpret_cast<float*>(geometry + 512 + kBlockN * 4);       // [kStages][kBlockN]
    float* s_delta = s_lse + kStages * kBlockN;                                  // [kStages][kBlockN]
    int* windows = reinterpret_cast<int*>(s_delta + kStages * kBlockN);          // [2 kBlockM][6]
    uint64_t* bar_kv = reinterpret_cast<uint64_t*>(windows + 2 * kBlockM * 6);
    uint64_t* bar_full = bar_kv + 1;
    uint64_t* bar_empty = bar_full + kStages;
    uint16_t* window_masks = reinterpret_cast<uint16_t*>(bar_empty + kStages);

    // The 128-key tile (pair_axis doubled), its sub-tiles and their query boxes.
    {
        TileBox whole, sub[2];
        int valid[2];
        if (!paired_tiles_of(p, blockIdx.x / p.heads_kv, p.kv_len, p.kv_tile_log2, p.kv_tiles, pair_axis, whole, sub,
                             valid)) {
            return;
        }
        // The three query boxes, by warps 0 (the whole tile's), 1 and 2 (the sub-tiles').
        const int warp = threadIdx.x / 32;
        if (warp == 0) {
            query_box_of_warp(p, whole, geo.walk, threadIdx.x % 32);
        } else if (warp <= 2 && valid[warp - 1]) {
            query_box_of_warp(p, warp == 1 ? sub[0] : sub[1], geo.sub_box[warp - 1], threadIdx.x % 32);
        }
        if (threadIdx.x == 0) {
#pragma unroll
            for (int h = 0; h < 2; ++h) {
                geo.valid[h] = valid[h];
                geo.sub[h] = sub[h];
                if (!valid[h]) geo.sub_box[h].tiles[0] = 0;
            }
            // A full buffer: the producer threads' LSE / delta copies, plus thread 0's TMA arrival.
            init_ring_barriers<kStages>(bar_kv, bar_full, bar_empty, Traits::kProducerThreads,
                                        Traits::kProducerThreads + (q_tma ? 1 : 0), Traits::kConsumerThreads);
        }
        if (threadIdx.x < kBlockN) {
            q_tok_off[threadIdx.x] = tile_row_offset(p, p.q_tile_log2, threadIdx.x);
        }
        WindowMasks::build(window_masks, p.q_tile_log2, threadIdx.x, blockDim.x);
        if constexpr (Traits::kProductMasks) {
            ProductMasks::build_one_hot<Element>(one_hot, p.q_tile_log2, threadIdx.x, blockDim.x);
            cutlass::arch::fence_view_async_shared();  // to the tensor cores
        }
    }
    __syncthreads();

    // The grid: (tile pairs x KV heads, 1, batch), the KV head fastest (FnaParams::key_pair_grid).
    const int head_kv = blockIdx.x % p.heads_kv;
    const int batch = blockIdx.z;
    const int group_size = p.heads / p.heads_kv;
    const int head0 = head_kv * group_size;
    const HeadRows rows = head_rows(p, batch, head0, head_kv);
    const int n_tiles = geo.walk.tiles[0] * geo.walk.tiles[1] * geo.walk.tiles[2];
    const int n_steps = group_size * n_tiles;

    Element* smem_k = reinterpret_cast<Element*>(smem_raw);                         // [2] sub-tiles
    Element* smem_v = reinterpret_cast<Element*>(smem_raw + 2 * Traits::kKBytes);   // [2]
    Element* smem_q = reinterpret_cast<Element*>(smem_raw + 4 * Traits::kKBytes);
    Element* smem_do = reinterpret_cast<Element*>(smem_raw + 4 * Traits::kKBytes + Traits::kQBytes);
    Tensor sQ = make_tensor(make_smem_ptr(smem_q), typename Traits::SmemLayoutQ{});
    Tensor sdO = make_tensor(make_smem_ptr(smem_do), typename Traits::SmemLayoutQ{});

    if (threadIdx.x < Traits::kProducerThreads) {
        // ---------------- producer warpgroup ----------------
        cutlass::arch::warpgroup_reg_dealloc<Traits::kProducerRegs>();
        const Element* q_base = reinterpret_cast<const Element*>(p.q) + rows.q;
        const Element* do_base = reinterpret_cast<const Element*>(p.d_out) + rows.o;
        {
            const Element* k_base = reinterpret_cast<const Element*>(p.k) + rows.k;
            const Element* v_base = reinterpret_cast<const Element*>(p.v) + rows.v;
#pragma unroll 1
            for (int h = 0; h < 2; ++h) {
                if (!geo.valid[h]) continue;
                const TileBox& t = geo.sub[h];
                Tensor sK = make_tensor(make_smem_ptr(smem_k + h * (Traits::kKBytes / 2)),
                                        typename Traits::SmemLayoutK{});
                Tensor sV = make_tensor(make_smem_ptr(smem_v + h * (Traits::kKBytes / 2)),
                                        typename Traits::SmemLayoutK{});
                stage_tile<kBlockM, kHeadDim, Traits::kProducerThreads>(sK, k_base, rows.k_stride, p,
                                                                        p.kv_tile_log2, t.first, t.end, t.group,
                                                                        p.head_dim);
                stage_tile<kBlockM, kHeadDim, Traits::kProducerThreads>(sV, v_base, rows.v_stride, p,
                                                                        p.kv_tile_log2, t.first, t.end, t.group,
                                                                        p.head_dim_v);
            }
            cutlass::arch::cpasync_barrier_arrive_noinc(bar_kv);
        }
        int stage = 0;
        uint32_t phase = 0;
        int g = 0, t = 0;
#pragma unroll 1
        for (int s = 0; s < n_steps; ++s) {
            if (s >= kStages) cutlass::arch::ClusterBarrier::wait(bar_empty + stage, phase ^ 1);
            int origin[3];
            walk_origin(t, geo.walk.lo, geo.walk.tiles, p.q_tile_log2, origin);
            int hi[3], grp[3];
#pragma unroll
            for (int a = 0; a < 3; ++a) {
                hi[a] = geo.walk.hi[a];
                grp[a] = geo.sub[0].group[a];
            }
            if (q_tma) {
                // Rows past the walk's box but inside the grid load too (the gather zero-fills
                // them): they are outside every key row's inverse window, so masked.
                if (threadIdx.x == 0) {
                    tma_load_pair<Element, kBlockN, kHeadDim>(maps, p, smem_q + stage * kBlockN * kHeadDim,
                                                              smem_do + stage * kBlockN * kHeadDim, bar_full + stage,
                                                              origin, grp, batch, head0 + g);
                }
            } else {
                Tensor qn = sQ(_, _, stage);
                Tensor don = sdO(_, _, stage);
                stage_rows_sm90<Traits>(qn, q_base + g * p.head_dim, (int)rows.q_stride, q_tok_off, p,
                                        p.q_tile_log2, origin, hi, grp, p.head_dim);
                stage_rows_sm90<Traits>(don, do_base + g * p.head_dim_v, (int)rows.o_stride, q_tok_off, p,
                                        p.q_tile_log2, origin, hi, grp, p.head_dim_v);
            }
            if (threadIdx.x < 2 * kBlockN) {
                const int r = threadIdx.x % kBlockN;
                int i[3];
                tile_coords(r, p.q_tile_log2, origin, i);
                const bool ok = i[0] < hi[0] && i[1] < hi[1] && i[2] < hi[2];
                const long long row =
                    ok ? ((long long)batch * p.tokens + token_of(p, i, grp)) * p.heads + head0 + g : 0;
                if (threadIdx.x < kBlockN) cp_async_4(s_lse + stage * kBlockN + r, p.lse + row, ok);
                else cp_async_4(s_delta + stage * kBlockN + r, p.delta + row, ok);
            }
            cutlass::arch::cpasync_barrier_arrive_noinc(bar_full + stage);
            if (++t == n_tiles) {
                t = 0;
                ++g;
            }
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
    // The inverse window of each key row of my sub-tile (read on partial steps only) and, with
    // product masks, its bias blocks, by my first 64 threads while the producer's first loads
    // are under way (until the sixteenth session the whole CTA waited for them at a barrier).
    if (lt < kBlockM && geo.valid[h]) {
        const TileBox& t = geo.sub[h];
        int key[3];
        tile_coords(lt, p.kv_tile_log2, t.first, key);
        int* w = windows + (h * kBlockM + lt) * 6;
#pragma unroll
        for (int a = 0; a < 3; ++a) {
            axis_inverse_window(p, a, min(key[a], t.end[a] - 1), t.glen[a], w[a], w[3 + a]);
        }
        if constexpr (Traits::kProductMasks) {
            const int lo[3] = {w[0], w[1], w[2]}, hi[3] = {w[3], w[4], w[5]};
            ProductMasks::write_bias_row<Element>(product_masks + h * ProductMasks::kHalfBytes, lt, lo, hi,
                                                  geo.walk, p.q_tile_log2);
            cutlass::arch::fence_view_async_shared();  // to the tensor cores
        }
    }
    bar_sync_wg(1 + h);  // my windows and bias blocks
    Element* my_k = smem_k + h * (Traits::kKBytes / 2);
    Element* my_v = smem_v + h * (Traits::kKBytes / 2);
    Tensor sK = make_tensor(make_smem_ptr(my_k), typename Traits::SmemLayoutK{});
    Tensor sV = make_tensor(make_smem_ptr(my_v), typename Traits::SmemLayoutK{});
    Tensor sQt = make_tensor(make_smem_ptr(smem_q), typename Traits::SmemLayoutQt{});
    Tensor sdOt = make_tensor(make_smem_ptr(smem_do), typename Traits::SmemLayoutQt{});

    typename Traits::MmaS mma_s;
    typename Traits::MmaKV mma_kv;
    auto thr_s = mma_s.get_thread_slice(lt);
    auto thr_kv = mma_kv.get_thread_slice(lt);
    Tensor tSrK = thr_s.partition_fragment_A(sK);
    Tensor tSrV = thr_s.partition_fragment_A(sV);
    Tensor tSrQ = thr_s.partition_fragment_B(sQ);
    Tensor tSrdO = thr_s.partition_fragment_B(sdO);
    Tensor tKrQt = thr_kv.partition_fragment_B(sQt);
    Tensor tVrdOt = thr_kv.partition_fragment_B(sdOt);
    Tensor acc_dk = partition_fragment_C(mma_kv, Shape<Int<kBlockM>, Int<kHeadDim>>{});
    Tensor acc_dv = partition_fragment_C(mma_kv, Shape<Int<kBlockM>, Int<kHeadDim>>{});
    clear(acc_dk);
    clear(acc_dv);
    const bool valid = geo.valid[h] != 0;
    const int* my_windows = windows + h * kBlockM * 6;
    // My sub-tile's bias blocks and the one-hot (product masks).
    const uint32_t my_bias = cute::cast_smem_ptr_to_uint(product_masks + h * ProductMasks::kHalfBytes);
    const uint64_t one_hot_desc = ProductMasks::one_hot_desc(one_hot);
    const bool no_padding = geo.sub[h].no_padding;

    // The fused dQ (kFusedDq): both consumers' dS^T, this consumer's f32 staging, and the
    // products dQ[:, 64 h, 64 h + 64) += dS_j K_j[:, 64 h, 64 h + 64) over sub-tiles j.
    using FusedDq = typename Traits::FusedDq;
    Element* ds_tiles = reinterpret_cast<Element*>(fused);
    float* staging = reinterpret_cast<float*>(fused + 2 * FusedDq::kDsBytes) + h * (FusedDq::kStagingBytes / 4);
    typename FusedDq::Mma mma_dq;
    auto thr_dq = mma_dq.get_thread_slice(lt);
    Tensor tDrDs0 = thr_dq.partition_fragment_A(make_tensor(make_smem_ptr(ds_tiles), typename FusedDq::SmemLayoutDs{}));
    Tensor tDrDs1 = thr_dq.partition_fragment_A(
        make_tensor(make_smem_ptr(ds_tiles + FusedDq::kDsBytes / 2), typename FusedDq::SmemLayoutDs{}));
    Tensor tDrKt0 = thr_dq.partition_fragment_B(
        make_tensor(make_smem_ptr(smem_k + h * 64 * 64), typename FusedDq::SmemLayoutKBlockT{}));
    Tensor tDrKt1 = thr_dq.partition_fragment_B(
        make_tensor(make_smem_ptr(smem_k + Traits::kKBytes / 2 + h * 64 * 64), typename FusedDq::SmemLayoutKBlockT{}));
    if constexpr (Traits::kFusedDq) named_bar_arrive(kFreedBarrier + (1 - h), 256);  // nothing to read yet

    cutlass::arch::ClusterBarrier::wait(bar_kv, 0);
    int stage = 0;
    uint32_t phase = 0;
    int t = 0, g = 0;
#pragma unroll 1
    for (int s = 0; s < n_steps; ++s) {
        int origin[3];
        walk_origin(t, geo.walk.lo, geo.walk.tiles, p.q_tile_log2, origin);
        // Does the step's Q tile reach sub-tile j's query box? Full: no padding key, and the
        // step's queries inside this sub-tile's inner box.
        auto reaches = [&](int j) {
            const QueryBox& qb = geo.sub_box[j];
            bool hit = geo.valid[j] && qb.tiles[0] > 0;
#pragma unroll
            for (int a = 0; a < 3; ++a) {
                hit &= origin[a] < qb.hi[a] && origin[a] + (1 << p.q_tile_log2[a]) > qb.lo[a];
            }
            return hit;
        };
        const bool active = reaches(h);
        const bool other = Traits::kFusedDq && reaches(1 - h);  // the fused dQ: the other consumer's
        bool full = no_padding;
#pragma unroll
        for (int a = 0; a < 3; ++a) {
            const int e = 1 << p.q_tile_log2[a];
            full &= origin[a] >= geo.sub_box[h].full_lo[a] && origin[a] + e <= geo.sub_box[h].full_hi[a];
        }
        // The fused dQ's product, issued once both dS^T are in shared memory (under the dK
        // product where this consumer is active), over the active sub-tiles.
        Tensor acc_dq = partition_fragment_C(mma_dq, Shape<_64, _64>{});
        auto issue_dq = [&] {
            cutlass::arch::fence_view_async_shared();
            named_bar_sync(kWrittenBarrier, 256);  // both dS^T written
            if (h == 0 ? active : other) {
                wgmma_gemm<true, -1>(mma_dq, tDrDs0, tDrKt0, acc_dq);
                if (h == 0 ? other : active) wgmma_gemm<false, -1>(mma_dq, tDrDs1, tDrKt1, acc_dq);
            } else {
                wgmma_gemm<true, -1>(mma_dq, tDrDs1, tDrKt1, acc_dq);
            }
        };
        cutlass::arch::ClusterBarrier::wait(bar_full + stage, phase);
        if (active) {
            cutlass::arch::fence_view_async_shared();
            Tensor acc_st = partition_fragment_C(mma_s, Shape<Int<kBlockM>, Int<kBlockN>>{});
            Tensor acc_dpt = partition_fragment_C(mma_s, Shape<Int<kBlockM>, Int<kBlockN>>{});
            wgmma_gemm<true, -1>(mma_s, tSrK, tSrQ(_, _, _, stage), acc_st);
            if constexpr (Traits::kProductMasks) {
                // The masks' k-step of S^T, on partial steps (its own batch, before dP^T's).
                if (!full) {
                    const uint64_t bias = ProductMasks::bias_desc(my_bias, origin, geo.walk, p.q_tile_log2);
                    ProductMasks::issue<Element>(bias, one_hot_desc, acc_st);
                }
            }
            wgmma_gemm<true, -1>(mma_s, tSrV, tSrdO(_, _, _, stage), acc_dpt);
            dkdv_step_sm90<Traits>(p, acc_st, acc_dpt, full || Traits::kProductMasks,
                                   WindowMasks::of_thread(window_masks), my_windows, lt,
                                   origin, s_lse + stage * kBlockN, 1.4426950408889634f, s_delta + stage * kBlockN,
                                   tKrQt(_, _, _, stage), tVrdOt(_, _, _, stage), acc_dk, acc_dv,
                                   [&](const auto& dst) {
                                       if constexpr (Traits::kFusedDq) {
                                           named_bar_sync(kFreedBarrier + h, 256);  // the other read it
                                           write_ds_sm90<Element>(dst, ds_tiles + h * (FusedDq::kDsBytes / 2), lt);
                                           issue_dq();
                                       }
                                   });
        } else if constexpr (Traits::kFusedDq) {
            if (other) {
                named_bar_sync(kFreedBarrier + h, 256);  // the barrier's phases stay paired
                issue_dq();
                warpgroup_wait<0>();
            }
        }
        cutlass::arch::ClusterBarrier::arrive(bar_empty + stage);
        if constexpr (Traits::kFusedDq) {
            if (active || other) {
                warpgroup_fence_operand(acc_dq);
                named_bar_arrive(kFreedBarrier + (1 - h), 256);  // done reading the other's dS^T
                if (lt == 0) bulk_wait_group_read();               // the previous step's reduce read the staging
                bar_sync_wg(1 + h);
                stage_dq_sm90(acc_dq, staging, lt);
                cutlass::arch::fence_view_async_shared();
                bar_sync_wg(1 + h);
                if (lt == 0) {
                    int c2, c1, c0;
                    tile_box_coords(p, origin, geo.sub[0].group, c2, c1, c0);
                    const int col = (head0 + g) * p.head_dim + 64 * h;
                    tma_reduce_add_5d(staging, dq_map, col, c2, c1, c0, batch);
                    tma_reduce_add_5d(staging + 64 * 32, dq_map, col + 32, c2, c1, c0, batch);
                    bulk_commit_group();
                }
            }
        }
        if (++t == n_tiles) {
            t = 0;
            ++g;
        }
        if (++stage == kStages) {
            stage = 0;
            phase ^= 1;
        }
    }
    if constexpr (Traits::kFusedDq) {
        named_bar_sync(kFreedBarrier + h, 256);  // the other's last arrival
        if (lt == 0) bulk_wait_group();
        named_bar_sync(kWrittenBarrier, 256);  // both dQ products are done with both K tiles
    }
    if (!valid) return;

    // Epilogue: dK (scaled) and dV through this warpgroup's K / V tiles, then 16-byte stores.
    pack_dkdv_sm90<Element>(acc_dk, acc_dv, p.scale, lt, sK, sV);
    bar_sync_wg(1 + h);
    store_dkdv_sm90<kBlockM, kHeadDim, Element>(p, rows, geo.sub[h], sK, sV, lt, 128);
}

}  // namespace natten_native

// One extern "C" entry point per element type and head dim (kernels/fna_backward_sm90_d128.cu):
// the parameters, the pair axis (0, 1 or 2; FnaParams::key_pair_axis on the Rust side), the
// TMA flag and the Q and dO descriptors (src/backend/native/tensor_map.rs; unread when 0).
#define NATTEN_FNA_BACKWARD_DKDV_SM90_WS_KERNEL(NAME, ELEMENT, HEAD_DIM)                                \
    NATTEN_FNA_BACKWARD_DKDV_SM90_WS_KERNEL_MASKS(NAME, ELEMENT, HEAD_DIM, false)

// The same with the window masks as a product where PRODUCT_MASKS (entry points `_pm`).
#define NATTEN_FNA_BACKWARD_DKDV_SM90_WS_KERNEL_MASKS(NAME, ELEMENT, HEAD_DIM, PRODUCT_MASKS)               \
    extern "C" __global__ void __launch_bounds__(384, 1)                                               \
        NAME(const natten_native::FnaParams p, int pair_axis, int q_tma,                               \
             const __grid_constant__ CUtensorMap q_map, const __grid_constant__ CUtensorMap do_map) {  \
        extern __shared__ __align__(1024) char smem[];                                                  \
        using Traits = natten_native::FnaBwdDkdvSm90WsTraits<ELEMENT, HEAD_DIM, false, 3, 56, 224, PRODUCT_MASKS>; \
        natten_native::fna_backward_dkdv_sm90_ws<Traits>(                                              \
            p, pair_axis, q_tma != 0, natten_native::TensorMapPair{&q_map, &do_map}, nullptr, smem);    \
    }

// The fused backward's entry point (kFusedDq): the dK/dV pass's arguments and the descriptor of
// the f32 dQ accumulator (WalkedSide::Queries boxes, 32 columns, 128-byte swizzle).
#define NATTEN_FNA_BACKWARD_FUSED_SM90_KERNEL(NAME, ELEMENT, HEAD_DIM)                                    \
    extern "C" __global__ void __launch_bounds__(384, 1)                                               \
        NAME(const natten_native::FnaParams p, int pair_axis, int q_tma,                               \
             const __grid_constant__ CUtensorMap q_map, const __grid_constant__ CUtensorMap do_map,    \
             const __grid_constant__ CUtensorMap dq_map) {                                             \
        extern __shared__ __align__(1024) char smem[];                                                  \
        natten_native::fna_backward_dkdv_sm90_ws<natten_native::FnaBwdDkdvSm90WsTraits<ELEMENT, HEAD_DIM, true>>( \
            p, pair_axis, q_tma != 0, natten_native::TensorMapPair{&q_map, &do_map}, &dq_map, smem);   \
    }
