// The fused Hopper backward (sm_90a), head dim 128, f16 and bf16: the paired dK/dV pass that
// also adds each step's dQ into an f32 accumulator (fna_backward_fused_dq_sm90.cuh), and the
// kernels before it (delta, the accumulator zeroed) and after it (dQ from the accumulator).
// src/backend/native/device.rs loads these on compute capability 9.0:
// natten_fna_backward_{fused,fused_prologue,fused_epilogue}_sm90_<element>_d128.
//
// Shared bytes of the fused pass: the dK/dV pass's (fna_backward_sm90_d128.cu) + 2 x dS^T tile
// (2 x 64 x 64 x 2) + 2 x f32 staging (2 x 64 x 64 x 4).
#include "fna_backward_dkdv_sm90_ws.cuh"

NATTEN_FNA_BACKWARD_FUSED_SM90_KERNEL(natten_fna_backward_fused_sm90_f16_d128, cutlass::half_t, 128)
NATTEN_FNA_BACKWARD_FUSED_SM90_KERNEL(natten_fna_backward_fused_sm90_bf16_d128, cutlass::bfloat16_t, 128)
NATTEN_FNA_BACKWARD_FUSED_SM90_AUX_KERNELS(natten_fna_backward_fused_prologue_sm90_f16_d128,
                                           natten_fna_backward_fused_epilogue_sm90_f16_d128, cutlass::half_t)
NATTEN_FNA_BACKWARD_FUSED_SM90_AUX_KERNELS(natten_fna_backward_fused_prologue_sm90_bf16_d128,
                                           natten_fna_backward_fused_epilogue_sm90_bf16_d128, cutlass::bfloat16_t)
static_assert(natten_native::FnaBwdDkdvSm90WsTraits<cutlass::half_t, 128, true>::kSmemBytes == 221008,
              "sm90_backward_fused_shared_bytes in src/backend/native/plan.rs");
