// Native FNA forward, head dim 32: f16 and bf16 (block 128 queries x 64 keys, 4 warps).
// The kernel body is fna_forward.cuh; src/backend/native/device.rs loads these entry points.
#include "fna_forward.cuh"

NATTEN_FNA_FORWARD_KERNEL(natten_fna_forward_f16_d32, cutlass::half_t, 32, 128, 64, 4)
NATTEN_FNA_FORWARD_KERNEL(natten_fna_forward_bf16_d32, cutlass::bfloat16_t, 32, 128, 64, 4)
