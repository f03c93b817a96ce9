// Native FNA backward passes for Hopper (sm_90a), head dim 128, f16 and bf16, both
// warp-specialised with two 64-row plan tiles per CTA, paired along the axis the host passes
// (src/backend/native/device.rs loads these entry points on compute capability 9.0:
// natten_fna_backward_{dq,dkdv}_sm90_<element>_d128).
//
// The dQ pass (fna_backward_dq_sm90_ws.cuh): 128 queries per CTA, a producer warpgroup gathering
// 64-key K/V tiles into a 3-stage ring for two consumer warpgroups (one CTA per SM). Shared
// bytes: 4 x Q/dO sub-tile (4 x 64 x 128 x 2) + 2 x 3 stages of K/V tiles (6 x 64 x 128 x 2) +
// geometry (512 + 64 x 4 + 2 x 2 x 64 x 4 + 7 x 8) + 1024 (alignment).
#include "fna_backward_dq_sm90_ws.cuh"

NATTEN_FNA_BACKWARD_DQ_SM90_WS_KERNEL(natten_fna_backward_dq_sm90_f16_d128, cutlass::half_t, 128)
NATTEN_FNA_BACKWARD_DQ_SM90_WS_KERNEL(natten_fna_backward_dq_sm90_bf16_d128, cutlass::bfloat16_t, 128)
static_assert(natten_native::FnaBwdDqSm90WsTraits<cutlass::half_t, 128>::kSmemBytes == 168272,
              "sm90_backward_dq_shared_bytes in src/backend/native/plan.rs");

// The dK/dV pass (fna_backward_dkdv_sm90_ws.cuh): 128 keys per CTA (two 64-key KV tiles paired
// along the axis the host passes), a producer warpgroup gathering 64-query Q/dO tiles into a
// 3-stage ring for two consumer warpgroups (one CTA per SM). Shared bytes: 4 x K/V sub-tile
// (4 x 64 x 128 x 2) + 2 x 3 stages of Q/dO tiles (6 x 64 x 128 x 2) + geometry (512 + 64 x 4
// + 2 x 3 x 64 x 4 + 128 x 24 + 7 x 8) + 1024 (alignment).
#include "fna_backward_dkdv_sm90_ws.cuh"

NATTEN_FNA_BACKWARD_DKDV_SM90_WS_KERNEL(natten_fna_backward_dkdv_sm90_f16_d128, cutlass::half_t, 128)
NATTEN_FNA_BACKWARD_DKDV_SM90_WS_KERNEL(natten_fna_backward_dkdv_sm90_bf16_d128, cutlass::bfloat16_t, 128)
static_assert(natten_native::FnaBwdDkdvSm90WsTraits<cutlass::half_t, 128>::kSmemBytes == 171856,
              "the dK/dV pass's shared bytes on the Rust side (src/backend/native/plan.rs)");
// The dQ pass with the window masks of S as a product (product_masks_sm90.cuh): `_pm`.
NATTEN_FNA_BACKWARD_DQ_SM90_WS_KERNEL_MASKS(natten_fna_backward_dq_sm90_f16_d128_pm, cutlass::half_t, 128, true)
NATTEN_FNA_BACKWARD_DQ_SM90_WS_KERNEL_MASKS(natten_fna_backward_dq_sm90_bf16_d128_pm, cutlass::bfloat16_t, 128, true)
static_assert(natten_native::FnaBwdDqSm90WsTraits<cutlass::half_t, 128, 3, 56, 224, true>::kSmemBytes ==
                  168272 + 2 * 14 * 1024 + 2048,
              "sm90_backward_dq_shared_bytes in src/backend/native/plan.rs");

// The dK/dV pass with the window masks of S^T as a product (product_masks_sm90.cuh): `_pm`.
NATTEN_FNA_BACKWARD_DKDV_SM90_WS_KERNEL_MASKS(natten_fna_backward_dkdv_sm90_f16_d128_pm, cutlass::half_t, 128, true)
NATTEN_FNA_BACKWARD_DKDV_SM90_WS_KERNEL_MASKS(natten_fna_backward_dkdv_sm90_bf16_d128_pm, cutlass::bfloat16_t, 128,
                                              true)
static_assert(natten_native::FnaBwdDkdvSm90WsTraits<cutlass::half_t, 128, false, 3, 56, 224, true>::kSmemBytes ==
                  171856 + 2 * 14 * 1024 + 2048,
              "the dK/dV pass's shared bytes on the Rust side (src/backend/native/plan.rs)");
