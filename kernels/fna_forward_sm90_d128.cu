// Native FNA forward for Hopper (sm_90a), head dim 128: f16 and bf16, 128 queries x 64 keys per
// tile, and x 128 keys (the wide form, `_n128`), warp-specialised and persistent (a producer and
// two consumer warpgroups, wgmma). The kernel body is fna_forward_sm90.cuh;
// src/backend/native/device.rs loads these entry points on
// compute capability 9.0 (natten_fna_forward_sm90_<element>_d<head dim>_m128[_n128]).
#include "fna_forward_sm90.cuh"

NATTEN_FNA_FORWARD_SM90_KERNEL(natten_fna_forward_sm90_f16_d128_m128, cutlass::half_t, 128, 64, false)
NATTEN_FNA_FORWARD_SM90_KERNEL(natten_fna_forward_sm90_bf16_d128_m128, cutlass::bfloat16_t, 128, 64, false)
static_assert(natten_native::FnaSm90Traits<cutlass::half_t, 128>::kSmemBytes == 166784,
              "sm90_shared_bytes in src/backend/native/plan.rs");
NATTEN_FNA_FORWARD_SM90_KERNEL(natten_fna_forward_sm90_f16_d128_m128_n128, cutlass::half_t, 128, 128, false)
NATTEN_FNA_FORWARD_SM90_KERNEL(natten_fna_forward_sm90_bf16_d128_m128_n128, cutlass::bfloat16_t, 128, 128, false)
static_assert(natten_native::FnaSm90Traits<cutlass::half_t, 128, 128>::kSmemBytes == 204424,
              "sm90_shared_bytes in src/backend/native/plan.rs");
// Window masks as a product (product_masks_sm90.cuh): `_pm`.
NATTEN_FNA_FORWARD_SM90_KERNEL(natten_fna_forward_sm90_f16_d128_m128_pm, cutlass::half_t, 128, 64, true)
NATTEN_FNA_FORWARD_SM90_KERNEL(natten_fna_forward_sm90_bf16_d128_m128_pm, cutlass::bfloat16_t, 128, 64, true)
static_assert(natten_native::FnaSm90Traits<cutlass::half_t, 128, 64, true>::kSmemBytes == 226176,
              "sm90_shared_bytes in src/backend/native/plan.rs");
