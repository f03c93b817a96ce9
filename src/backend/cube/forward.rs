//! Fused forward: one unit per (batch, query token, head); it walks the query's neighbourhood
//! (the product of its per-axis windows) and then the dense keys (extra KV tokens, or all keys
//! for FMHA), with an online softmax in f32, and writes the output and the LSE.
//!
//! Layouts (contiguous, heads-last): Q `[b, n, h, d]`, K `[b, n, h_kv, d]`,
//! V `[b, n, h_kv, d_v]`, dense K/V `[b, s, h_kv, _]`, out `[b, n, h, d_v]`, LSE `[b, n, h]`.

use cubecl::prelude::*;

use super::kernel_args::NaGeometry;
use super::window::token_windows;

/// Scores below this are "no key yet" (WGSL has no -inf literal).
pub const NO_SCORE: f32 = -1.0e30;

/// Adds one key to the running softmax: `state = [max, sum]`, `acc` the weighted value sum.
#[cube]
pub fn online_softmax_step<F: Float>(
    q_row: &Array<f32>,
    k: &Tensor<F>,
    v: &Tensor<F>,
    k_offset: usize,
    v_offset: usize,
    scale: f32,
    state: &mut Array<f32>,
    acc: &mut Array<f32>,
    #[comptime] head_dim: usize,
    #[comptime] head_dim_v: usize,
) {
    let mut dot = 0.0f32;
    for c in 0..head_dim {
        dot += q_row[c] * f32::cast_from(k[k_offset + c]);
    }
    let score = dot * scale;
    let max_old = state[0];
    let max_new = if score > max_old { score } else { max_old };
    let correction = (max_old - max_new).exp();
    let weight = (score - max_new).exp();
    state[0] = max_new;
    state[1] = state[1] * correction + weight;
    for c in 0..head_dim_v {
        acc[c] = acc[c] * correction + weight * f32::cast_from(v[v_offset + c]);
    }
}

#[cube(launch)]
#[allow(clippy::too_many_arguments)]
pub fn na_forward_kernel<F: Float>(
    q: &Tensor<F>,
    k: &Tensor<F>,
    v: &Tensor<F>,
    dense_k: &Tensor<F>,
    dense_v: &Tensor<F>,
    out: &mut Tensor<F>,
    lse: &mut Tensor<f32>,
    geometry: NaGeometry,
    heads_kv: u32,
    dense_tokens: u32,
    scale: f32,
    #[comptime] causal0: bool,
    #[comptime] causal1: bool,
    #[comptime] causal2: bool,
    #[comptime] has_neighborhood: bool,
    #[comptime] dense_causal: bool,
    #[comptime] head_dim: usize,
    #[comptime] head_dim_v: usize,
    #[define(F)] _dtype: StorageType,
) {
    let heads = q.shape(2);
    let tokens = q.shape(1);
    let heads_kv = heads_kv as usize;
    if ABSOLUTE_POS >= q.shape(0) * tokens * heads {
        terminate!();
    }
    let h = ABSOLUTE_POS % heads;
    let bn = ABSOLUTE_POS / heads;
    let n = bn % tokens;
    let b = bn / tokens;
    let h_kv = h / (heads / heads_kv);

    let mut q_row = Array::<f32>::new(head_dim);
    let q_offset = ABSOLUTE_POS * head_dim;
    for c in 0..head_dim {
        q_row[c] = f32::cast_from(q[q_offset + c]);
    }
    let mut state = Array::<f32>::new(2usize);
    state[0] = NO_SCORE;
    state[1] = 0.0;
    let mut acc = Array::<f32>::new(head_dim_v);
    for c in 0..head_dim_v {
        acc[c] = 0.0;
    }

    if has_neighborhood {
        let n32 = n as u32;
        let w = token_windows(&geometry, n32, false, causal0, causal1, causal2);
        for j0 in w[1]..w[2] {
            let y0 = j0 * geometry.dilation0 + w[0];
            for j1 in w[4]..w[5] {
                let y01 = y0 * geometry.len1 + j1 * geometry.dilation1 + w[3];
                for j2 in w[7]..w[8] {
                    let key = (y01 * geometry.len2 + j2 * geometry.dilation2 + w[6]) as usize;
                    let kv_row = (b * tokens + key) * heads_kv + h_kv;
                    online_softmax_step::<F>(
                        &q_row,
                        k,
                        v,
                        kv_row * head_dim,
                        kv_row * head_dim_v,
                        scale,
                        &mut state,
                        &mut acc,
                        head_dim,
                        head_dim_v,
                    );
                }
            }
        }
    }

    let dense = dense_tokens as usize;
    let mut dense_end = dense;
    if dense_causal {
        dense_end = if n + 1 < dense { n + 1 } else { dense };
    }
    for key in 0..dense_end {
        let kv_row = (b * dense + key) * heads_kv + h_kv;
        online_softmax_step::<F>(
            &q_row,
            dense_k,
            dense_v,
            kv_row * head_dim,
            kv_row * head_dim_v,
            scale,
            &mut state,
            &mut acc,
            head_dim,
            head_dim_v,
        );
    }

    let inv = 1.0f32 / state[1];
    let o_offset = ABSOLUTE_POS * head_dim_v;
    for c in 0..head_dim_v {
        out[o_offset + c] = F::cast_from(acc[c] * inv);
    }
    lse[ABSOLUTE_POS] = state[0] + state[1].ln();
}
