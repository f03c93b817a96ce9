//! `merge_attentions`: combine attention results over disjoint key sets.

use burn::tensor::backend::Backend;
use burn::tensor::{FloatDType, Tensor, activation};
use natten_core::NattenError;

/// Merges attention outputs computed over disjoint key sets into the output of one softmax over
/// their union: `lse = log sum_i exp(lse_i)`, `out = sum_i exp(lse_i - lse) out_i`.
///
/// `outs`: at least two tensors `[batch, seq, heads, head_dim_v]` of one shape and dtype;
/// `lses`: as many `[batch, seq, heads]` f32 tensors. Evaluated in f32 in the stable pairwise
/// form (`lse <- lse - log_sigmoid(lse - lse_i)`, `out <- out - sigmoid(lse_i - lse) (out - out_i)`);
/// returns the output in the inputs' dtype and the merged LSE in f32. Differentiable through
/// Burn's autodiff with respect to both outputs and LSEs (but the NA/attention functions ignore
/// the gradient of their LSE: to train with extra tokens, use the `_with_extra_kv` functions).
///
/// # Errors
/// [`NattenError::InvalidArgument`] naming `outs` or `lses` when fewer than two results are
/// given, the counts differ, or shapes do not match.
pub fn merge_attentions<B: Backend>(
    outs: Vec<Tensor<B, 4>>,
    lses: Vec<Tensor<B, 3>>,
) -> Result<(Tensor<B, 4>, Tensor<B, 3>), NattenError> {
    if outs.len() < 2 {
        return Err(NattenError::invalid(
            "outs",
            format!("expected at least 2 outputs to merge, got {}", outs.len()),
        ));
    }
    if lses.len() != outs.len() {
        return Err(NattenError::invalid(
            "lses",
            format!(
                "expected one LSE per output ({}), got {}",
                outs.len(),
                lses.len()
            ),
        ));
    }
    let out_shape = outs[0].dims();
    let dtype = outs[0].dtype();
    for (i, (out, lse)) in outs.iter().zip(&lses).enumerate() {
        if out.dims() != out_shape || out.dtype() != dtype {
            return Err(NattenError::invalid(
                "outs",
                format!(
                    "all outputs must share shape and dtype: output 0 is {out_shape:?} {dtype:?}, output {i} is {:?} {:?}",
                    out.dims(),
                    out.dtype()
                ),
            ));
        }
        if lse.dims() != out_shape[..3] {
            return Err(NattenError::invalid(
                "lses",
                format!(
                    "LSE {i} must be [batch, seq, heads] = {:?}, got {:?}",
                    &out_shape[..3],
                    lse.dims()
                ),
            ));
        }
    }
    let mut pairs = outs.into_iter().zip(lses).map(|(o, l)| {
        (
            o.cast(FloatDType::F32),
            l.cast(FloatDType::F32).unsqueeze_dim::<4>(3),
        )
    });
    let (mut out, mut lse) = pairs.next().expect("at least two results");
    for (out_i, lse_i) in pairs {
        let weight = activation::sigmoid(lse_i.clone() - lse.clone());
        out = out.clone() - weight * (out - out_i);
        lse = lse.clone() - activation::log_sigmoid(lse - lse_i);
    }
    Ok((out.cast(dtype), lse.squeeze_dim::<3>(3)))
}
