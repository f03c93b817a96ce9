// Native FNA backward, head dim 256: f16 and bf16 (64 x 64 blocks, 4 warps), the dQ pass and
// separate dK and dV passes with single-buffered walked tiles. The kernel bodies are in
// fna_backward.cuh; src/backend/native/device.rs loads these entry points where the device
// gives a CTA the shared memory (plan.rs: backward_shared_bytes).
#include "fna_backward.cuh"

NATTEN_FNA_BACKWARD_SPLIT_KERNELS(f16_d256, cutlass::half_t, 256)
NATTEN_FNA_BACKWARD_SPLIT_KERNELS(bf16_d256, cutlass::bfloat16_t, 256)
static_assert(natten_native::backward_smem_bytes<natten_native::FnaTraits<cutlass::half_t, 256, 64, 64, 4>, 1>() ==
                  132096,
              "backward_shared_bytes in src/backend/native/plan.rs");
