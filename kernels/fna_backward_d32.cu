// Native FNA backward (dQ and dK/dV passes), head dim 32: f16 and bf16 (64 x 64 blocks, 4 warps).
// The kernel bodies are in fna_backward.cuh; src/backend/native/device.rs loads these entry points.
#include "fna_backward.cuh"

NATTEN_FNA_BACKWARD_KERNELS(f16_d32, cutlass::half_t, 32)
NATTEN_FNA_BACKWARD_KERNELS(bf16_d32, cutlass::bfloat16_t, 32)
