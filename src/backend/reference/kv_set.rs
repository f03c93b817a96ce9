//! A set of key/value tokens that a block of queries attends to, in one of two forms.
//!
//! Queries are grouped by KV head: `q5` is `[batch, tokens, heads_kv, group, head_dim]`, where
//! query head `h` is `(h / group, h % group)` (NATTEN's GQA rule `kv_head = h / group`). Every
//! score block is `[batch, tokens, heads_kv, group, width]`.

use burn::tensor::IndexingUpdateOp;
use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor};

/// Key/value tokens seen by the queries, with an optional additive score bias (0 or -inf)
/// shaped `[1, tokens, 1, 1, width]`.
pub(crate) enum KvSet<B: Backend> {
    /// Each query sees its own `width` keys, gathered from `[batch, kv_tokens, heads_kv, _]` by
    /// `index` (`[tokens * width]` flat key indices).
    Gathered {
        k: Tensor<B, 5>,
        v: Tensor<B, 5>,
        index: Tensor<B, 1, Int>,
        kv_tokens: usize,
        bias: Option<Tensor<B, 5>>,
    },
    /// Every query sees the same keys: K `[batch, kv_tokens, heads_kv, head_dim]`.
    Dense {
        k: Tensor<B, 4>,
        v: Tensor<B, 4>,
        bias: Option<Tensor<B, 5>>,
    },
}

/// Gradients of one KV set, shaped like its K and V (`[batch, kv_tokens, heads_kv, _]`).
pub(crate) struct KvGrads<B: Backend> {
    pub dk: Tensor<B, 4>,
    pub dv: Tensor<B, 4>,
}

/// `[b, n, hkv, g, c]` -> `[b, hkv, n * g, c]`: one row per (token, query head) in a KV head.
fn to_rows<B: Backend>(x: Tensor<B, 5>) -> Tensor<B, 4> {
    let [b, n, hkv, g, c] = x.dims();
    x.permute([0, 2, 1, 3, 4]).reshape([b, hkv, n * g, c])
}

/// Inverse of [`to_rows`].
fn from_rows<B: Backend>(x: Tensor<B, 4>, tokens: usize) -> Tensor<B, 5> {
    let [b, hkv, rows, c] = x.dims();
    x.reshape([b, hkv, tokens, rows / tokens, c])
        .permute([0, 2, 1, 3, 4])
}

/// `[b, kv_tokens, hkv, c]` gathered by `index` (`[n * w]`) -> `[b, n, hkv, w, c]`.
fn gather<B: Backend>(x: Tensor<B, 4>, index: Tensor<B, 1, Int>, tokens: usize) -> Tensor<B, 5> {
    let [b, _, hkv, c] = x.dims();
    let width = index.dims()[0] / tokens;
    x.select(1, index)
        .reshape([b, tokens, width, hkv, c])
        .permute([0, 1, 3, 2, 4])
}

/// Inverse of [`gather`], summing the contributions of every slot that names the same key.
fn scatter_add<B: Backend>(
    x: Tensor<B, 5>,
    index: Tensor<B, 1, Int>,
    kv_tokens: usize,
) -> Tensor<B, 4> {
    let [b, n, hkv, w, c] = x.dims();
    let values = x.permute([0, 1, 3, 2, 4]).reshape([b, n * w, hkv, c]);
    Tensor::zeros([b, kv_tokens, hkv, c], (&values.device(), values.dtype())).select_assign(
        1,
        index,
        values,
        IndexingUpdateOp::Add,
    )
}

impl<B: Backend> KvSet<B> {
    /// The gathered form: `k`/`v` `[batch, kv_tokens, heads_kv, _]`, `index` `[tokens * width]`.
    pub fn gathered(
        k: Tensor<B, 4>,
        v: Tensor<B, 4>,
        index: Tensor<B, 1, Int>,
        tokens: usize,
        bias: Option<Tensor<B, 5>>,
    ) -> Self {
        let kv_tokens = k.dims()[1];
        Self::Gathered {
            k: gather(k, index.clone(), tokens),
            v: gather(v, index.clone(), tokens),
            index,
            kv_tokens,
            bias,
        }
    }

    /// Scaled scores `[batch, tokens, heads_kv, group, width]`, bias added.
    pub fn scores(&self, q5: Tensor<B, 5>, scale: f32) -> Tensor<B, 5> {
        let tokens = q5.dims()[1];
        let (scores, bias) = match self {
            Self::Gathered { k, bias, .. } => (q5.matmul(k.clone().swap_dims(3, 4)), bias),
            Self::Dense { k, bias, .. } => {
                let kt = k.clone().permute([0, 2, 3, 1]);
                (from_rows(to_rows(q5).matmul(kt), tokens), bias)
            }
        };
        let scores = scores.mul_scalar(scale);
        match bias {
            Some(bias) => scores.add(bias.clone()),
            None => scores,
        }
    }

    /// `p` `[batch, tokens, heads_kv, group, width]` applied to the values:
    /// `[batch, tokens, heads_kv, group, head_dim_v]`.
    pub fn apply(&self, p: Tensor<B, 5>) -> Tensor<B, 5> {
        match self {
            Self::Gathered { v, .. } => p.matmul(v.clone()),
            Self::Dense { v, .. } => {
                let tokens = p.dims()[1];
                from_rows(to_rows(p).matmul(v.clone().permute([0, 2, 1, 3])), tokens)
            }
        }
    }

    /// `dP = dO V^T` for this set: `[batch, tokens, heads_kv, group, width]`.
    pub fn d_probs(&self, d_out5: Tensor<B, 5>) -> Tensor<B, 5> {
        match self {
            Self::Gathered { v, .. } => d_out5.matmul(v.clone().swap_dims(3, 4)),
            Self::Dense { v, .. } => {
                let tokens = d_out5.dims()[1];
                from_rows(
                    to_rows(d_out5).matmul(v.clone().permute([0, 2, 3, 1])),
                    tokens,
                )
            }
        }
    }

    /// This set's share of dQ (`scale dS K`), and its dK (`scale dS^T Q`) and dV (`P^T dO`),
    /// summed over the query heads of each KV head.
    pub fn grads(
        &self,
        q5: Tensor<B, 5>,
        p: Tensor<B, 5>,
        ds: Tensor<B, 5>,
        d_out5: Tensor<B, 5>,
        scale: f32,
    ) -> (Tensor<B, 5>, KvGrads<B>) {
        let tokens = q5.dims()[1];
        match self {
            Self::Gathered {
                k,
                index,
                kv_tokens,
                ..
            } => {
                let dq = ds.clone().matmul(k.clone()).mul_scalar(scale);
                let dk = ds.swap_dims(3, 4).matmul(q5).mul_scalar(scale);
                let dv = p.swap_dims(3, 4).matmul(d_out5);
                let dk = scatter_add(dk, index.clone(), *kv_tokens);
                let dv = scatter_add(dv, index.clone(), *kv_tokens);
                (dq, KvGrads { dk, dv })
            }
            Self::Dense { k, .. } => {
                let ds_rows = to_rows(ds);
                let dq = from_rows(
                    ds_rows.clone().matmul(k.clone().permute([0, 2, 1, 3])),
                    tokens,
                );
                let dk = ds_rows
                    .swap_dims(2, 3)
                    .matmul(to_rows(q5))
                    .permute([0, 2, 1, 3]);
                let dv = to_rows(p)
                    .swap_dims(2, 3)
                    .matmul(to_rows(d_out5))
                    .permute([0, 2, 1, 3]);
                (
                    dq.mul_scalar(scale),
                    KvGrads {
                        dk: dk.mul_scalar(scale),
                        dv,
                    },
                )
            }
        }
    }

    /// Number of score columns this set contributes per query.
    pub fn width(&self) -> usize {
        match self {
            Self::Gathered { k, .. } => k.dims()[3],
            Self::Dense { k, .. } => k.dims()[1],
        }
    }
}
