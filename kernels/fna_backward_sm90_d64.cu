// Native FNA backward dQ pass for Hopper (sm_90a), head dim 64: f16 and bf16, 64 queries x 64
// keys per tile (one warpgroup, wgmma), double-buffered K/V (three CTAs per SM). The kernel body
// is fna_backward_sm90.cuh; src/backend/native/device.rs loads these entry points on compute
// capability 9.0 (natten_fna_backward_dq_sm90_<element>_d<head dim>).
#include "fna_backward_sm90.cuh"

NATTEN_FNA_BACKWARD_DQ_SM90_KERNEL(natten_fna_backward_dq_sm90_f16_d64, cutlass::half_t, 64)
NATTEN_FNA_BACKWARD_DQ_SM90_KERNEL(natten_fna_backward_dq_sm90_bf16_d64, cutlass::bfloat16_t, 64)
static_assert(natten_native::FnaBwdSm90Traits<cutlass::half_t, 64>::kSmemBytes == 52760,
              "sm90_backward_dq_shared_bytes in src/backend/native/plan.rs");

// The dK/dV pass (fna_backward_dkdv_sm90.cuh): 64 keys per CTA walking 64-query tiles, one
// warpgroup, K/V resident, Q/dO double-buffered, dK/dV in registers (three CTAs per SM, 168
// registers). Shared bytes: 2 x K/V tile (2 x 64 x 64 x 2) + 2 x 2 stages of Q/dO tiles
// (4 x 64 x 64 x 2) + geometry (256 + 64 x 4 + 2 x 2 x 64 x 4 + 64 x 24) + 1024 (alignment).
#include "fna_backward_dkdv_sm90.cuh"

NATTEN_FNA_BACKWARD_DKDV_SM90_KERNEL(natten_fna_backward_dkdv_sm90_f16_d64, cutlass::half_t, 64, 3)
NATTEN_FNA_BACKWARD_DKDV_SM90_KERNEL(natten_fna_backward_dkdv_sm90_bf16_d64, cutlass::bfloat16_t, 64, 3)
static_assert(natten_native::FnaBwdDkdvSm90Traits<cutlass::half_t, 64>::kSmemBytes == 54808,
              "the dK/dV pass's shared bytes on the Rust side (src/backend/native/plan.rs)");
