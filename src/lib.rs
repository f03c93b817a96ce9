//! Neighborhood attention (NA) for [Burn](https://burn.dev), with the semantics of NATTEN 0.21.
//!
//! # Layout and math
//!
//! Tensors are heads-last and row-major: Q `[batch, *spatial, heads, head_dim]`,
//! K `[batch, *spatial, heads_kv, head_dim]`, V `[batch, *spatial, heads_kv, head_dim_v]`,
//! out `[batch, *spatial, heads, head_dim_v]`, LSE `[batch, *spatial, heads]` (f32).
//!
//! Per axis of length `L` with kernel size `k`, stride `s`, dilation `d` and a causal flag, a
//! query at `x` sees the keys of its dilation group `x % d` inside a window of `k` group
//! positions (fewer when causal) — the rule lives in [`natten_core::window`]. A key is a
//! neighbour when it is one on every axis.
//!
//! Forward: `S = scale * Q K^T` over the neighbours (and every extra KV token),
//! `lse = log sum exp S`, `out = softmax(S) V`, with `scale = head_dim^-0.5` by default.
//! Backward: `delta = rowsum(dO * out)`, `dS = P * (dP - delta)`, `dQ = scale dS K`,
//! `dK = scale dS^T Q`, `dV = P^T dO`; GQA sums dK/dV over the query heads of a KV head.
//!
//! # Example
//!
//! ```
//! use burn::backend::NdArray;
//! use burn::tensor::{Distribution, Tensor};
//! use burn_natten::{NaOptions, na2d};
//!
//! let device = Default::default();
//! let q = Tensor::<NdArray, 5>::random([1, 8, 8, 2, 16], Distribution::Normal(0.0, 1.0), &device);
//! let (k, v) = (q.clone(), q.clone());
//! let out = na2d(q, k, v, &NaOptions::new([3, 3]).with_dilation([2, 2]))?;
//! assert_eq!(out.dims(), [1, 8, 8, 2, 16]);
//! # Ok::<(), burn_natten::NattenError>(())
//! ```
//!
//! # Modules
//!
//! [`NeighborhoodAttention1d`], [`NeighborhoodAttention2d`] and [`NeighborhoodAttention3d`] are
//! Burn modules, as NATTEN's `NeighborhoodAttention1D/2D/3D`: a QKV projection, `na*`, an output
//! projection, on `[batch, *spatial, embed_dim]`. Build them from their `Config`:
//!
//! ```
//! use burn::backend::NdArray;
//! use burn::tensor::{Distribution, Tensor};
//! use burn_natten::NeighborhoodAttention2dConfig;
//!
//! let device = Default::default();
//! let layer = NeighborhoodAttention2dConfig::new(32, 4, [5, 5]) // embed_dim, heads, window
//!     .with_num_kv_heads(Some(2))
//!     .init::<NdArray>(&device)?;
//! let x = Tensor::<NdArray, 4>::random([1, 8, 8, 32], Distribution::Normal(0.0, 1.0), &device);
//! assert_eq!(layer.forward(x)?.dims(), [1, 8, 8, 32]);
//! # Ok::<(), burn_natten::NattenError>(())
//! ```
//!
//! # Backends
//!
//! Every function is generic over [`NattenBackend`], implemented for `NdArray`, the CubeCL
//! backends (`Wgpu`, `Cuda`, `Rocm`, fused and unfused) and `Autodiff<B>`. NdArray runs the
//! reference implementation ([`NaBackend::Reference`]); the CubeCL backends run fused tiled
//! kernels ([`NaBackend::CubeFna`], chosen by [`NaBackend::Auto`]), whose tile configuration
//! [`NaOptions::with_tiles`] can fix (the valid ones: [`na_tile_configs`]). With the
//! `cuda-native` feature, burn-cuda also runs native CUTLASS/CuTe kernels
//! ([`NaBackend::CudaFna`], chosen by `Auto` where they apply; [`cuda_native_status`]).

mod api;
pub mod backend;
mod modules;
mod options;
pub mod tuning_cache;

pub use api::{
    attention, attention_with_lse, merge_attentions, na_backward_tile_configs, na_tile_configs,
    na1d, na1d_with_extra_kv, na1d_with_lse, na2d, na2d_with_extra_kv, na2d_with_lse, na3d,
    na3d_with_extra_kv, na3d_with_lse,
};
pub use backend::{NattenBackend, TileConfig};
pub use modules::{
    NeighborhoodAttention1d, NeighborhoodAttention1dConfig, NeighborhoodAttention2d,
    NeighborhoodAttention2dConfig, NeighborhoodAttention3d, NeighborhoodAttention3dConfig,
};
pub use natten_core::{AxisParams, NattenError};
pub use options::{AttentionOptions, NaBackend, NaOptions};

/// Whether the native CUDA kernels can run on CUDA device `index` (driver present, compute
/// capability 8.0 or newer, the embedded kernels load): `Err` names the reason. The first call
/// per device loads the kernels.
#[cfg(feature = "cuda-native")]
pub fn cuda_native_status(index: usize) -> Result<(), String> {
    backend::native::status(index)
}

/// Re-export of the Burn version this crate is built against.
pub use burn;
/// Re-export of the backend-independent core: window math, validation, FLOP counts.
pub use natten_core;
