//! An independent oracle: dense masked softmax attention in plain Burn ops (autodiff through the
//! ops), on a `tokens x (tokens + extra)` boolean mask enumerated with `natten_core::neighbors`.
//! Only for small test problems; the library never builds such a mask.

use burn::tensor::backend::Backend;
use burn::tensor::{DType, Tensor, TensorData};
use burn_natten::natten_core::AxisParams;
use burn_natten::natten_core::neighborhood::{neighbors, unflatten};

/// `[tokens, tokens + extra]` mask: the neighbourhood, and every extra token.
pub fn na_mask(spatial: &[usize], axes: &[AxisParams], extra: usize) -> Vec<bool> {
    let n: usize = spatial.iter().product();
    let mut mask = vec![false; n * (n + extra)];
    for q in 0..n {
        for key in neighbors(spatial, axes, &unflatten(q, spatial)) {
            mask[q * (n + extra) + key] = true;
        }
        for e in 0..extra {
            mask[q * (n + extra) + n + e] = true;
        }
    }
    mask
}

/// Causal (top-left) FMHA mask `[seq_q, seq_kv]`, or all-true.
pub fn fmha_mask(seq_q: usize, seq_kv: usize, causal: bool) -> Vec<bool> {
    (0..seq_q)
        .flat_map(|i| (0..seq_kv).map(move |j| !causal || j <= i))
        .collect()
}

fn repeat_heads<B: Backend>(x: Tensor<B, 4>, group: usize) -> Tensor<B, 4> {
    let [b, n, hkv, d] = x.dims();
    x.reshape([b, n, hkv, 1, d])
        .repeat_dim(3, group)
        .reshape([b, n, hkv * group, d])
}

/// Dense attention of Q `[b, n, h, d]` over K/V `[b, m, h_kv, _]` with `mask` `[n, m]`; returns
/// out `[b, n, h, d_v]` and LSE `[b, n, h]`, in f32.
pub fn dense_attention<B: Backend>(
    q: Tensor<B, 4>,
    k: Tensor<B, 4>,
    v: Tensor<B, 4>,
    mask: &[bool],
    scale: f32,
) -> (Tensor<B, 4>, Tensor<B, 3>) {
    let [_, n, h, _] = q.dims();
    let m = k.dims()[1];
    let group = h / k.dims()[2];
    let (k, v) = (repeat_heads(k, group), repeat_heads(v, group));
    let bias: Vec<f32> = mask
        .iter()
        .map(|&ok| if ok { 0.0 } else { f32::NEG_INFINITY })
        .collect();
    let bias = Tensor::<B, 4>::from_data(
        TensorData::new(bias, [1, 1, n, m]),
        (&q.device(), DType::F32),
    );
    let scores = q
        .permute([0, 2, 1, 3])
        .matmul(k.permute([0, 2, 3, 1]))
        .mul_scalar(scale)
        + bias;
    let max = scores.clone().max_dim(3).detach();
    let lse = max.clone() + (scores.clone() - max).exp().sum_dim(3).log();
    let p = (scores - lse.clone()).exp();
    let out = p.matmul(v.permute([0, 2, 1, 3])).permute([0, 2, 1, 3]);
    (out, lse.squeeze_dim::<3>(3).permute([0, 2, 1]))
}
