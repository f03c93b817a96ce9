//! The reference implementation, written in Burn tensor ops: runs on every backend.
//!
//! Neighborhood attention gathers each query's keys through an index table from
//! [`natten_core::NeighborTable`] (`[tokens, window]`, causal windows padded and masked), so
//! memory is `O(tokens x window)`: no `tokens x tokens` mask is ever built. Extra KV tokens and
//! attention (FMHA) use dense score blocks. Scores, softmax and LSE are computed in f32
//! whatever the input dtype; outputs and gradients are cast back to it.

mod kv_set;

use burn::tensor::backend::Backend;
use burn::tensor::ops::FloatTensor;
use burn::tensor::{DType, FloatDType, Int, Tensor, TensorData, TensorPrimitive};
use natten_core::NeighborTable;

use super::{AttentionGradients, AttentionOutput, ExtraKv, FmhaProblem, NaProblem};
use kv_set::{KvGrads, KvSet};

fn to_f32<B: Backend, const D: usize>(x: FloatTensor<B>) -> Tensor<B, D> {
    Tensor::<B, D>::from_primitive(TensorPrimitive::Float(x)).cast(FloatDType::F32)
}

fn to_primitive<B: Backend, const D: usize>(x: Tensor<B, D>, dtype: DType) -> FloatTensor<B> {
    x.cast(dtype).into_primitive().tensor()
}

/// `[b, n, h, d]` -> `[b, n, heads_kv, h / heads_kv, d]`.
fn group_heads<B: Backend>(x: Tensor<B, 4>, heads_kv: usize) -> Tensor<B, 5> {
    let [b, n, h, d] = x.dims();
    x.reshape([b, n, heads_kv, h / heads_kv, d])
}

fn ungroup_heads<B: Backend>(x: Tensor<B, 5>) -> Tensor<B, 4> {
    let [b, n, hkv, g, d] = x.dims();
    x.reshape([b, n, hkv * g, d])
}

/// An additive score bias `[1, rows, 1, 1, cols]`: 0 where `valid`, -inf elsewhere.
fn bias_from_mask<B: Backend>(valid: &[bool], rows: usize, device: &B::Device) -> Tensor<B, 5> {
    let values: Vec<f32> = valid
        .iter()
        .map(|&ok| if ok { 0.0 } else { f32::NEG_INFINITY })
        .collect();
    let cols = valid.len() / rows;
    Tensor::from_data(
        TensorData::new(values, [1, rows, 1, 1, cols]),
        (device, DType::F32),
    )
}

/// The neighbourhood of every query as a gathered KV set.
fn neighborhood_set<B: Backend>(k: Tensor<B, 4>, v: Tensor<B, 4>, problem: &NaProblem) -> KvSet<B> {
    let device = k.device();
    let table = NeighborTable::new(&problem.spatial, &problem.axes);
    let indices: Vec<i64> = table.indices.iter().map(|&i| i as i64).collect();
    let index =
        Tensor::<B, 1, Int>::from_data(TensorData::new(indices, [table.indices.len()]), &device);
    let bias = table
        .valid
        .as_ref()
        .map(|valid| bias_from_mask::<B>(valid, table.tokens, &device));
    KvSet::gathered(k, v, index, table.tokens, bias)
}

fn extra_set<B: Backend>(extra: Option<ExtraKv<B>>) -> Option<KvSet<B>> {
    extra.map(|e| KvSet::Dense {
        k: to_f32(e.k),
        v: to_f32(e.v),
        bias: None,
    })
}

/// The NA problem's KV sets: the neighbourhood, then the extra tokens if any.
fn na_sets<B: Backend>(
    k: FloatTensor<B>,
    v: FloatTensor<B>,
    extra: Option<ExtraKv<B>>,
    problem: &NaProblem,
) -> Vec<KvSet<B>> {
    let mut sets = vec![neighborhood_set(to_f32(k), to_f32(v), problem)];
    sets.extend(extra_set(extra));
    sets
}

/// The FMHA problem's one dense KV set, with a top-left causal bias if asked for.
fn fmha_set<B: Backend>(
    q_tokens: usize,
    k: FloatTensor<B>,
    v: FloatTensor<B>,
    causal: bool,
) -> KvSet<B> {
    let (k, v): (Tensor<B, 4>, Tensor<B, 4>) = (to_f32(k), to_f32(v));
    let kv_tokens = k.dims()[1];
    let bias = causal.then(|| {
        let valid: Vec<bool> = (0..q_tokens)
            .flat_map(|i| (0..kv_tokens).map(move |j| j <= i))
            .collect();
        bias_from_mask::<B>(&valid, q_tokens, &k.device())
    });
    KvSet::Dense { k, v, bias }
}

/// Scores of every set, concatenated along the last axis, in f32.
fn scores<B: Backend>(q5: &Tensor<B, 5>, sets: &[KvSet<B>], scale: f32) -> Tensor<B, 5> {
    Tensor::cat(
        sets.iter().map(|s| s.scores(q5.clone(), scale)).collect(),
        4,
    )
}

/// Splits a concatenated score-shaped tensor back into the sets' blocks.
fn split<B: Backend>(x: Tensor<B, 5>, sets: &[KvSet<B>]) -> Vec<Tensor<B, 5>> {
    x.split_with_sizes(sets.iter().map(KvSet::width).collect(), 4)
}

/// One softmax over all sets: returns `(out5, lse5)` with `lse5` `[b, n, hkv, g, 1]`.
fn attend<B: Backend>(
    q5: Tensor<B, 5>,
    sets: &[KvSet<B>],
    scale: f32,
) -> (Tensor<B, 5>, Tensor<B, 5>) {
    let s = scores(&q5, sets, scale);
    // Every query sees at least one key, so the row maximum is finite.
    let max = s.clone().max_dim(4);
    let lse = max.clone() + s.clone().sub(max).exp().sum_dim(4).log();
    let p = s.sub(lse.clone()).exp();
    let out = split(p, sets)
        .into_iter()
        .zip(sets)
        .map(|(p, set)| set.apply(p))
        .reduce(|a, b| a + b)
        .expect("at least one KV set");
    (out, lse)
}

/// Backward of [`attend`]: dQ, and per set its dK/dV.
fn attend_backward<B: Backend>(
    q5: Tensor<B, 5>,
    sets: &[KvSet<B>],
    out5: Tensor<B, 5>,
    lse5: Tensor<B, 5>,
    d_out5: Tensor<B, 5>,
    scale: f32,
) -> (Tensor<B, 5>, Vec<KvGrads<B>>) {
    let p = scores(&q5, sets, scale).sub(lse5).exp();
    let delta = d_out5.clone().mul(out5).sum_dim(4);
    let dp = Tensor::cat(sets.iter().map(|s| s.d_probs(d_out5.clone())).collect(), 4);
    let ds = p.clone().mul(dp.sub(delta));
    let mut dq: Option<Tensor<B, 5>> = None;
    let mut grads = Vec::with_capacity(sets.len());
    for ((set, p), ds) in sets.iter().zip(split(p, sets)).zip(split(ds, sets)) {
        let (dq_part, kv) = set.grads(q5.clone(), p, ds, d_out5.clone(), scale);
        dq = Some(match dq {
            Some(dq) => dq + dq_part,
            None => dq_part,
        });
        grads.push(kv);
    }
    (dq.expect("at least one KV set"), grads)
}

/// Q in f32, grouped by KV head (`[b, n, heads_kv, group, d]`), and Q's dtype.
fn grouped_queries<B: Backend>(q: FloatTensor<B>, k: &FloatTensor<B>) -> (Tensor<B, 5>, DType) {
    use burn::tensor::TensorMetadata;
    let (dtype, heads_kv) = (q.dtype(), k.shape()[2]);
    (group_heads(to_f32::<B, 4>(q), heads_kv), dtype)
}

/// Reference neighborhood-attention forward (see [`super::NattenBackend::na_forward`]), on
/// flattened tokens: Q `[batch, tokens, heads, head_dim]`, K and V likewise.
pub fn na_forward<B: Backend>(
    q: FloatTensor<B>,
    k: FloatTensor<B>,
    v: FloatTensor<B>,
    extra: Option<ExtraKv<B>>,
    problem: &NaProblem,
) -> AttentionOutput<B> {
    let (q5, dtype) = grouped_queries::<B>(q, &k);
    let sets = na_sets(k, v, extra, problem);
    finish_forward(q5, &sets, problem.scale, dtype)
}

fn finish_forward<B: Backend>(
    q5: Tensor<B, 5>,
    sets: &[KvSet<B>],
    scale: f32,
    dtype: DType,
) -> AttentionOutput<B> {
    let [b, n, hkv, g, _] = q5.dims();
    let (out5, lse5) = attend(q5, sets, scale);
    AttentionOutput {
        out: to_primitive(ungroup_heads(out5), dtype),
        lse: lse5.reshape([b, n, hkv * g]).into_primitive().tensor(),
    }
}

/// Reference neighborhood-attention backward (see [`super::NattenBackend::na_backward`]), on
/// flattened tokens, as [`na_forward`].
#[allow(clippy::too_many_arguments)]
pub fn na_backward<B: Backend>(
    q: FloatTensor<B>,
    k: FloatTensor<B>,
    v: FloatTensor<B>,
    extra: Option<ExtraKv<B>>,
    out: FloatTensor<B>,
    lse: FloatTensor<B>,
    d_out: FloatTensor<B>,
    problem: &NaProblem,
) -> AttentionGradients<B> {
    let (q5, dtype) = grouped_queries::<B>(q, &k);
    let sets = na_sets(k, v, extra, problem);
    finish_backward(q5, &sets, out, lse, d_out, problem.scale, dtype)
}

fn finish_backward<B: Backend>(
    q5: Tensor<B, 5>,
    sets: &[KvSet<B>],
    out: FloatTensor<B>,
    lse: FloatTensor<B>,
    d_out: FloatTensor<B>,
    scale: f32,
    dtype: DType,
) -> AttentionGradients<B> {
    let [b, n, hkv, g, _] = q5.dims();
    let out5 = group_heads(to_f32::<B, 4>(out), hkv);
    let d_out5 = group_heads(to_f32::<B, 4>(d_out), hkv);
    let lse5 = to_f32::<B, 3>(lse).reshape([b, n, hkv, g, 1]);
    let (dq5, grads) = attend_backward(q5, sets, out5, lse5, d_out5, scale);
    let mut grads = grads.into_iter().map(|kv| ExtraKv {
        k: to_primitive(kv.dk, dtype),
        v: to_primitive(kv.dv, dtype),
    });
    let main = grads.next().expect("the main KV set");
    AttentionGradients {
        dq: to_primitive(ungroup_heads(dq5), dtype),
        dk: main.k,
        dv: main.v,
        extra: grads.next(),
    }
}

/// Reference attention forward (see [`super::NattenBackend::fmha_forward`]).
pub fn fmha_forward<B: Backend>(
    q: FloatTensor<B>,
    k: FloatTensor<B>,
    v: FloatTensor<B>,
    problem: &FmhaProblem,
) -> AttentionOutput<B> {
    let (q5, dtype) = grouped_queries::<B>(q, &k);
    let set = fmha_set(q5.dims()[1], k, v, problem.causal);
    finish_forward(q5, &[set], problem.scale, dtype)
}

/// Reference attention backward (see [`super::NattenBackend::fmha_backward`]).
pub fn fmha_backward<B: Backend>(
    q: FloatTensor<B>,
    k: FloatTensor<B>,
    v: FloatTensor<B>,
    out: FloatTensor<B>,
    lse: FloatTensor<B>,
    d_out: FloatTensor<B>,
    problem: &FmhaProblem,
) -> AttentionGradients<B> {
    let (q5, dtype) = grouped_queries::<B>(q, &k);
    let set = fmha_set(q5.dims()[1], k, v, problem.causal);
    finish_backward(q5, &[set], out, lse, d_out, problem.scale, dtype)
}
