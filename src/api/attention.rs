//! `attention` (FMHA) and `attention_with_lse`.

use burn::tensor::{Tensor, TensorPrimitive};
use natten_core::{NattenError, shape};

use super::checks::{native_can_run, resolve_scale, same_dtype_and_device};
use crate::AttentionOptions;
use crate::backend::{FmhaProblem, NattenBackend};

/// Attention (FMHA): Q `[batch, seq_q, heads, head_dim]`, K `[batch, seq_kv, heads_kv, head_dim]`,
/// V `[batch, seq_kv, heads_kv, head_dim_v]`; returns `[batch, seq_q, heads, head_dim_v]`.
/// `seq_q` and `seq_kv` may differ; causal attention is top-left aligned (query `i` sees keys
/// `0..=i`).
///
/// # Errors
/// [`NattenError::InvalidArgument`] naming `q`, `k`, `v` or `scale` when shapes, dtypes,
/// devices or the scale are invalid.
pub fn attention<B: NattenBackend>(
    q: Tensor<B, 4>,
    k: Tensor<B, 4>,
    v: Tensor<B, 4>,
    opts: &AttentionOptions,
) -> Result<Tensor<B, 4>, NattenError> {
    attention_with_lse(q, k, v, opts).map(|(out, _)| out)
}

/// [`attention`], also returning the LSE `[batch, seq_q, heads]` (f32, natural log; its gradient
/// is ignored).
///
/// # Errors
/// As [`attention`].
pub fn attention_with_lse<B: NattenBackend>(
    q: Tensor<B, 4>,
    k: Tensor<B, 4>,
    v: Tensor<B, 4>,
    opts: &AttentionOptions,
) -> Result<(Tensor<B, 4>, Tensor<B, 3>), NattenError> {
    let s = shape::attention_shape(&q.dims(), &k.dims(), &v.dims())?;
    same_dtype_and_device(
        &q,
        &[("k", k.dtype(), k.device()), ("v", v.dtype(), v.device())],
    )?;
    B::check_backend(opts.backend(), s.head_dim, s.head_dim_v)?;
    let problem = FmhaProblem {
        causal: opts.causal(),
        scale: resolve_scale(opts.scale(), s.head_dim)?,
        backend: opts.backend(),
    };
    native_can_run(problem.backend, problem.scale, &q, s.head_dim, s.head_dim_v)?;
    let result = B::fmha_forward(
        q.into_primitive().tensor(),
        k.into_primitive().tensor(),
        v.into_primitive().tensor(),
        &problem,
    );
    Ok((
        Tensor::from_primitive(TensorPrimitive::Float(result.out)),
        Tensor::from_primitive(TensorPrimitive::Float(result.lse)),
    ))
}
