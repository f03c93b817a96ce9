// Native FNA forward, head dim 32: f16 and bf16, 128 queries x 64 keys, 64 queries x 64 keys per tile (4 warps).
// The kernel body is fna_forward.cuh; src/backend/native/device.rs loads these entry points
// (natten_fna_forward_<element>_d<head dim>_m<queries per tile>).
#include "fna_forward.cuh"

NATTEN_FNA_FORWARD_KERNEL(natten_fna_forward_f16_d32_m128, cutlass::half_t, 32, 128, 64, 4)
NATTEN_FNA_FORWARD_KERNEL(natten_fna_forward_bf16_d32_m128, cutlass::bfloat16_t, 32, 128, 64, 4)
NATTEN_FNA_FORWARD_KERNEL(natten_fna_forward_f16_d32_m64, cutlass::half_t, 32, 64, 64, 4)
NATTEN_FNA_FORWARD_KERNEL(natten_fna_forward_bf16_d32_m64, cutlass::bfloat16_t, 32, 64, 64, 4)
