//! Backward, dQ pass: one unit per (batch, query token, head), over the same keys as the
//! forward: `dQ = scale * sum_k P (dP - delta) K`, with `P = exp(S - lse)`, `dP = dO . V`.

use cubecl::prelude::*;

use super::kernel_args::NaGeometry;
use super::window::token_windows;

/// Adds one key's contribution to `dq_acc` (unscaled).
#[cube]
#[allow(clippy::too_many_arguments)]
pub fn dq_step<F: Float>(
    q_row: &Array<f32>,
    do_row: &Array<f32>,
    k: &Tensor<F>,
    v: &Tensor<F>,
    k_offset: usize,
    v_offset: usize,
    scale: f32,
    lse: f32,
    delta: f32,
    dq_acc: &mut Array<f32>,
    #[comptime] head_dim: usize,
    #[comptime] head_dim_v: usize,
) {
    let mut dot = 0.0f32;
    for c in 0..head_dim {
        dot += q_row[c] * f32::cast_from(k[k_offset + c]);
    }
    let p = (dot * scale - lse).exp();
    let mut dp = 0.0f32;
    for c in 0..head_dim_v {
        dp += do_row[c] * f32::cast_from(v[v_offset + c]);
    }
    let ds = p * (dp - delta);
    for c in 0..head_dim {
        dq_acc[c] += ds * f32::cast_from(k[k_offset + c]);
    }
}

#[cube(launch)]
#[allow(clippy::too_many_arguments)]
pub fn dq_kernel<F: Float>(
    q: &Tensor<F>,
    k: &Tensor<F>,
    v: &Tensor<F>,
    dense_k: &Tensor<F>,
    dense_v: &Tensor<F>,
    d_out: &Tensor<F>,
    lse: &Tensor<f32>,
    delta: &Tensor<f32>,
    dq: &mut Tensor<F>,
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
    if ABSOLUTE_POS >= q.shape(0) * tokens * heads {
        terminate!();
    }
    let heads_kv = heads_kv as usize;
    let h = ABSOLUTE_POS % heads;
    let bn = ABSOLUTE_POS / heads;
    let n = bn % tokens;
    let b = bn / tokens;
    let h_kv = h / (heads / heads_kv);

    let mut q_row = Array::<f32>::new(head_dim);
    let mut dq_acc = Array::<f32>::new(head_dim);
    for c in 0..head_dim {
        q_row[c] = f32::cast_from(q[ABSOLUTE_POS * head_dim + c]);
        dq_acc[c] = 0.0;
    }
    let mut do_row = Array::<f32>::new(head_dim_v);
    for c in 0..head_dim_v {
        do_row[c] = f32::cast_from(d_out[ABSOLUTE_POS * head_dim_v + c]);
    }
    let row_lse = lse[ABSOLUTE_POS];
    let row_delta = delta[ABSOLUTE_POS];

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
                    dq_step::<F>(
                        &q_row,
                        &do_row,
                        k,
                        v,
                        kv_row * head_dim,
                        kv_row * head_dim_v,
                        scale,
                        row_lse,
                        row_delta,
                        &mut dq_acc,
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
        dq_step::<F>(
            &q_row,
            &do_row,
            dense_k,
            dense_v,
            kv_row * head_dim,
            kv_row * head_dim_v,
            scale,
            row_lse,
            row_delta,
            &mut dq_acc,
            head_dim,
            head_dim_v,
        );
    }

    for c in 0..head_dim {
        dq[ABSOLUTE_POS * head_dim + c] = F::cast_from(dq_acc[c] * scale);
    }
}
