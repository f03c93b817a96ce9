//! Fused CubeCL kernels for every CubeCL runtime (wgpu, CUDA, ROCm).
//!
//! Tiled block-sparse flash attention, one file per role: `tile` (tile iteration and masking),
//! `tile_matmul` (tile products: `cmma` or scalar), `forward`, `backward_preprocess`,
//! `backward_dq`, `backward_dkdv`, `config` (block sizes per device, tile plans, tile
//! configurations), `tune` (autotune of the forward's tile plan) and `launch` (host side).

mod backward_dkdv;
mod backward_dq;
mod backward_preprocess;
mod config;
mod forward;
mod kernel_args;
mod launch;
mod tile;
mod tile_matmul;
mod tune;
mod window;

pub use config::tile_configs;
pub use kernel_args::Geometry;
pub use launch::{Dense, backward, forward};

use burn_cubecl::CubeRuntime;
use burn_cubecl::tensor::CubeTensor;

use crate::NaBackend;
use crate::backend::MAX_FUSED_HEAD_DIM;

/// Whether the fused kernels take these head dims.
pub fn supports(head_dim: usize, head_dim_v: usize) -> bool {
    head_dim <= MAX_FUSED_HEAD_DIM && head_dim_v <= MAX_FUSED_HEAD_DIM
}

/// Whether a call with this choice runs the fused kernels (else the reference): not when the
/// reference is asked for, nor when the head dims are too large or no block size of every pass
/// fits the device's shared memory (large head dims in f32 on adapters with 16-32 KB, such as
/// WebGPU's default limit or lavapipe).
pub fn runs<R: CubeRuntime>(choice: NaBackend, q: &CubeTensor<R>, v: &CubeTensor<R>) -> bool {
    let (head_dim, head_dim_v) = (q.meta.shape()[3], v.meta.shape()[3]);
    choice != NaBackend::Reference
        && supports(head_dim, head_dim_v)
        && config::fits(&q.client, head_dim, head_dim_v, q.dtype)
}
