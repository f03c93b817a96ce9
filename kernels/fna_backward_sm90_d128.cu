// Native FNA backward dQ pass for Hopper (sm_90a), head dim 128: f16 and bf16, 64 queries x 64
// keys per tile (one warpgroup, wgmma), single-buffered K/V (three CTAs per SM). The kernel body
// is fna_backward_sm90.cuh; src/backend/native/device.rs loads these entry points on compute
// capability 9.0 (natten_fna_backward_dq_sm90_<element>_d<head dim>).
#include "fna_backward_sm90.cuh"

NATTEN_FNA_BACKWARD_DQ_SM90_KERNEL(natten_fna_backward_dq_sm90_f16_d128, cutlass::half_t, 128, 1)
NATTEN_FNA_BACKWARD_DQ_SM90_KERNEL(natten_fna_backward_dq_sm90_bf16_d128, cutlass::bfloat16_t, 128, 1)
static_assert(natten_native::FnaBwdSm90Traits<cutlass::half_t, 128, 64, 1>::kSmemBytes == 69120,
              "sm90_backward_dq_shared_bytes in src/backend/native/plan.rs");
