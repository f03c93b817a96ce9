//! The backend extension trait [`NattenBackend`] and its implementations.
//!
//! The trait's default bodies are the reference implementation (Burn tensor ops), so every
//! backend works on day one; a backend with fused kernels overrides the methods and falls back
//! to [`mod@reference`] for what it cannot run. `Autodiff<B>` records one node whose backward calls
//! `B`'s [`NattenBackend::na_backward`] / [`NattenBackend::fmha_backward`].

#[cfg(feature = "autodiff")]
mod autodiff;
#[cfg(feature = "cubecl-backend")]
pub(crate) mod cube;
#[cfg(feature = "fusion")]
mod fusion;
mod impls;
#[cfg(feature = "cuda-native")]
pub(crate) mod native;
pub mod reference;
mod tokens;

use burn::tensor::backend::Backend;
use burn::tensor::ops::FloatTensor;
use natten_core::{AxisParams, NattenError};

use crate::NaBackend;

/// Marks that a call reached `what` on its way to the native code, for the handoff trace
/// (`BURN_NATTEN_NATIVE_TRACE_HANDOFF`); nothing without the `cuda-native` feature.
pub(crate) fn trace_mark(what: &'static str) {
    #[cfg(feature = "cuda-native")]
    native::mark(what);
    #[cfg(not(feature = "cuda-native"))]
    let _ = what;
}

/// The largest head dim (of Q/K and of V) the fused CubeCL kernels take.
pub const MAX_FUSED_HEAD_DIM: usize = 256;

/// A validated neighborhood-attention problem, as the backends receive it.
#[derive(Debug, Clone, PartialEq)]
pub struct NaProblem {
    /// Spatial shape of the token grid (one entry per axis).
    pub spatial: Vec<usize>,
    /// Window parameters per axis.
    pub axes: Vec<AxisParams>,
    /// Softmax scale (already resolved: never the "default" placeholder).
    pub scale: f32,
    /// The implementation the user asked for.
    pub backend: NaBackend,
    /// The fused forward's tile configuration, when the user chose one (validated against
    /// [`NattenBackend::tile_configs`]); `None` lets the backend choose.
    pub tiles: Option<TileConfig>,
    /// The fused backward's tile configuration, when the user chose one (validated against
    /// [`NattenBackend::backward_tile_configs`]); `None` lets the backend choose.
    pub backward_tiles: Option<TileConfig>,
}

/// A tile configuration of a fused kernel (forward, or both backward passes): the Q tile and the
/// KV tile, one extent per spatial axis (tiles are boxes of queries / keys of one dilation
/// group).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TileConfig {
    /// Queries per axis of a Q tile.
    pub q_tile: Vec<usize>,
    /// Keys per axis of a KV tile.
    pub kv_tile: Vec<usize>,
}

impl core::fmt::Display for TileConfig {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "(q_tile {:?}, kv_tile {:?})", self.q_tile, self.kv_tile)
    }
}

/// A validated attention (FMHA) problem.
#[derive(Debug, Clone, PartialEq)]
pub struct FmhaProblem {
    /// Causal, top-left aligned: query `i` sees keys `0..=i`.
    pub causal: bool,
    /// Softmax scale (resolved).
    pub scale: f32,
    /// The implementation the user asked for.
    pub backend: NaBackend,
}

/// Extra key/value tokens that every query attends to, beside its neighbourhood: K
/// `[batch, extra, heads_kv, head_dim]`, V `[batch, extra, heads_kv, head_dim_v]`.
/// In gradients, the same struct holds their gradients.
#[derive(Debug, Clone)]
pub struct ExtraKv<B: Backend> {
    /// Keys (or their gradient).
    pub k: FloatTensor<B>,
    /// Values (or their gradient).
    pub v: FloatTensor<B>,
}

/// What a forward pass returns: `out` `[batch, *tokens, heads, head_dim_v]` in the input dtype,
/// `lse` `[batch, *tokens, heads]` in f32 (natural log of the summed exponentiated scores), where
/// `*tokens` is Q's token axes (the spatial axes of an NA call, in the layout it was given).
#[derive(Debug, Clone)]
pub struct AttentionOutput<B: Backend> {
    /// Attention output.
    pub out: FloatTensor<B>,
    /// Log-sum-exp of the scaled scores, f32.
    pub lse: FloatTensor<B>,
}

/// What a backward pass returns: gradients shaped like the inputs.
#[derive(Debug, Clone)]
pub struct AttentionGradients<B: Backend> {
    /// Gradient of Q.
    pub dq: FloatTensor<B>,
    /// Gradient of K (summed over the query heads that share a KV head).
    pub dk: FloatTensor<B>,
    /// Gradient of V (summed over the query heads that share a KV head).
    pub dv: FloatTensor<B>,
    /// Gradients of the extra K/V tokens, when the forward had some.
    pub extra: Option<ExtraKv<B>>,
}

/// The backend extension for neighborhood attention and attention.
///
/// NA tensors have the grid layout: Q `[batch, *spatial, heads, head_dim]`, K
/// `[batch, *spatial, heads_kv, head_dim]`, V `[batch, *spatial, heads_kv, head_dim_v]` (or the
/// spatial axes flattened, row-major, into one token axis: the same memory), extra K/V
/// `[batch, extra, heads_kv, dim]`; outputs and gradients come back in the inputs' layout.
/// Attention (FMHA) tensors are `[batch, tokens, heads, dim]`. The caller has validated shapes
/// and parameters.
///
/// The NA methods take the grid layout so that a wrapping backend (`Fusion`, `Autodiff`)
/// records no reshape around a call; a backend that computes flattens the tokens itself
/// (`forward_on_tokens`, `backward_on_tokens` in `tokens.rs`), on the inner primitives.
///
/// Forward: `S = scale * Q K^T` over each query's neighbours (and every extra token),
/// `lse = log sum exp S`, `out = softmax(S) V`. Backward: `delta = rowsum(dO * O)`,
/// `dS = P * (dP - delta)`, `dQ = scale dS K`, `dK = scale dS^T Q`, `dV = P^T dO`. The gradient
/// through `lse` is ignored, as in NATTEN.
pub trait NattenBackend: Backend {
    /// Whether `choice` can run a call with these head dims on this backend: `Ok` for
    /// [`NaBackend::Auto`] and [`NaBackend::Reference`] everywhere.
    ///
    /// # Errors
    /// [`NattenError::Unsupported`] when an explicitly chosen implementation cannot run here.
    fn check_backend(
        choice: NaBackend,
        head_dim: usize,
        head_dim_v: usize,
    ) -> Result<(), NattenError> {
        let _ = (head_dim, head_dim_v);
        match choice {
            NaBackend::Auto | NaBackend::Reference => Ok(()),
            NaBackend::CubeFna | NaBackend::CudaFna => Err(NattenError::Unsupported {
                backend: choice.name(),
                reason: format!(
                    "`{}` is not {}",
                    Self::name(&Default::default()),
                    if choice == NaBackend::CudaFna {
                        "burn-cuda"
                    } else {
                        "a CubeCL backend (wgpu, CUDA, ROCm)"
                    }
                ),
            }),
        }
    }

    /// The tile configurations the fused NA forward can run on `device` for a rank-`rank`
    /// problem with these head dims and dtype (what [`crate::NaOptions::with_tiles`] accepts).
    /// Empty when this backend has no tiled kernels (the reference has none).
    fn tile_configs(
        device: &burn::tensor::Device<Self>,
        rank: usize,
        head_dim: usize,
        head_dim_v: usize,
        dtype: burn::tensor::DType,
    ) -> Vec<TileConfig> {
        let _ = (device, rank, head_dim, head_dim_v, dtype);
        Vec::new()
    }

    /// The tile configurations the fused NA backward can run on `device` (what
    /// [`crate::NaOptions::with_backward_tiles`] accepts; both backward passes use the pair).
    /// Empty when the backward has no tile choice here (the reference and the portable
    /// kernels have none).
    fn backward_tile_configs(
        device: &burn::tensor::Device<Self>,
        rank: usize,
        head_dim: usize,
        head_dim_v: usize,
        dtype: burn::tensor::DType,
    ) -> Vec<TileConfig> {
        let _ = (device, rank, head_dim, head_dim_v, dtype);
        Vec::new()
    }

    /// Why [`NaBackend::CudaFna`] cannot run a call (NA, with or without extra KV tokens, or
    /// attention) with these properties on `device`, or `None` when it can. Only burn-cuda
    /// built with the `cuda-native` feature has native kernels.
    fn cuda_fna_unsupported(
        device: &burn::tensor::Device<Self>,
        head_dim: usize,
        head_dim_v: usize,
        dtype: burn::tensor::DType,
    ) -> Option<String> {
        let _ = (head_dim, head_dim_v, dtype);
        Some(format!(
            "`{}` is not burn-cuda built with the `cuda-native` feature",
            Self::name(device)
        ))
    }

    /// Neighborhood-attention forward, with optional extra KV tokens.
    fn na_forward(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        extra: Option<ExtraKv<Self>>,
        problem: &NaProblem,
    ) -> AttentionOutput<Self> {
        tokens::forward_on_tokens::<Self>([q, k, v], extra, |[q, k, v], extra| {
            reference::na_forward::<Self>(q, k, v, extra, problem)
        })
    }

    /// Neighborhood-attention backward: `out` and `lse` are the forward's, `d_out` the upstream
    /// gradient of `out`.
    #[allow(clippy::too_many_arguments)]
    fn na_backward(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        extra: Option<ExtraKv<Self>>,
        out: FloatTensor<Self>,
        lse: FloatTensor<Self>,
        d_out: FloatTensor<Self>,
        problem: &NaProblem,
    ) -> AttentionGradients<Self> {
        tokens::backward_on_tokens::<Self>(
            [q, k, v, out, lse, d_out],
            extra,
            |[q, k, v, out, lse, d_out], extra| {
                reference::na_backward::<Self>(q, k, v, extra, out, lse, d_out, problem)
            },
        )
    }

    /// Attention (FMHA) forward; Q `[batch, seq_q, heads, head_dim]`, K/V with `seq_kv` tokens.
    fn fmha_forward(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        problem: &FmhaProblem,
    ) -> AttentionOutput<Self> {
        reference::fmha_forward::<Self>(q, k, v, problem)
    }

    /// Attention (FMHA) backward.
    fn fmha_backward(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        out: FloatTensor<Self>,
        lse: FloatTensor<Self>,
        d_out: FloatTensor<Self>,
        problem: &FmhaProblem,
    ) -> AttentionGradients<Self> {
        reference::fmha_backward::<Self>(q, k, v, out, lse, d_out, problem)
    }
}
