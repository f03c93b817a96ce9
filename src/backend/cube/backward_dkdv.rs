//! Backward, dK/dV pass, without atomics: one unit per (batch, key token, KV head) walks the
//! queries that see its key (`dV = sum P dO`, `dK = scale * sum P (dP - delta) Q`), summing
//! over the query heads that share the KV head (GQA).
//!
//! The queries that see a key form, per axis, an interval of group-local indices (see
//! [`super::window::inverse_window`]).

use cubecl::prelude::*;

use super::kernel_args::NaGeometry;
use super::window::token_windows;

/// Adds the contribution of query row `qi` (a (batch, token, head) index) to the key's
/// accumulators; `dk_acc` is unscaled.
#[cube]
#[allow(clippy::too_many_arguments)]
pub fn dkdv_step<F: Float>(
    q: &Tensor<F>,
    d_out: &Tensor<F>,
    lse: &Tensor<f32>,
    delta: &Tensor<f32>,
    qi: usize,
    k_row: &Array<f32>,
    v_row: &Array<f32>,
    scale: f32,
    dk_acc: &mut Array<f32>,
    dv_acc: &mut Array<f32>,
    #[comptime] head_dim: usize,
    #[comptime] head_dim_v: usize,
) {
    let mut dot = 0.0f32;
    for c in 0..head_dim {
        dot += f32::cast_from(q[qi * head_dim + c]) * k_row[c];
    }
    let p = (dot * scale - lse[qi]).exp();
    let mut dp = 0.0f32;
    for c in 0..head_dim_v {
        let d_o = f32::cast_from(d_out[qi * head_dim_v + c]);
        dp += d_o * v_row[c];
        dv_acc[c] += p * d_o;
    }
    let ds = p * (dp - delta[qi]);
    for c in 0..head_dim {
        dk_acc[c] += ds * f32::cast_from(q[qi * head_dim + c]);
    }
}

/// Loads a K and V row into local arrays and zeroes the accumulators.
#[cube]
#[allow(clippy::too_many_arguments)]
fn load_rows<F: Float>(
    k: &Tensor<F>,
    v: &Tensor<F>,
    row: usize,
    k_row: &mut Array<f32>,
    v_row: &mut Array<f32>,
    dk_acc: &mut Array<f32>,
    dv_acc: &mut Array<f32>,
    #[comptime] head_dim: usize,
    #[comptime] head_dim_v: usize,
) {
    for c in 0..head_dim {
        k_row[c] = f32::cast_from(k[row * head_dim + c]);
        dk_acc[c] = 0.0;
    }
    for c in 0..head_dim_v {
        v_row[c] = f32::cast_from(v[row * head_dim_v + c]);
        dv_acc[c] = 0.0;
    }
}

#[cube]
#[allow(clippy::too_many_arguments)]
fn store_rows<F: Float>(
    dk: &mut Tensor<F>,
    dv: &mut Tensor<F>,
    row: usize,
    dk_acc: &Array<f32>,
    dv_acc: &Array<f32>,
    scale: f32,
    #[comptime] head_dim: usize,
    #[comptime] head_dim_v: usize,
) {
    for c in 0..head_dim {
        dk[row * head_dim + c] = F::cast_from(dk_acc[c] * scale);
    }
    for c in 0..head_dim_v {
        dv[row * head_dim_v + c] = F::cast_from(dv_acc[c]);
    }
}

/// dK/dV of the neighbourhood keys: K `[b, n, h_kv, d]`, one unit per (b, key, h_kv).
#[cube(launch)]
#[allow(clippy::too_many_arguments)]
pub fn dkdv_neighborhood_kernel<F: Float>(
    q: &Tensor<F>,
    k: &Tensor<F>,
    v: &Tensor<F>,
    d_out: &Tensor<F>,
    lse: &Tensor<f32>,
    delta: &Tensor<f32>,
    dk: &mut Tensor<F>,
    dv: &mut Tensor<F>,
    geometry: NaGeometry,
    scale: f32,
    #[comptime] causal0: bool,
    #[comptime] causal1: bool,
    #[comptime] causal2: bool,
    #[comptime] head_dim: usize,
    #[comptime] head_dim_v: usize,
    #[define(F)] _dtype: StorageType,
) {
    let heads = q.shape(2);
    let tokens = k.shape(1);
    let heads_kv = k.shape(2);
    if ABSOLUTE_POS >= k.shape(0) * tokens * heads_kv {
        terminate!();
    }
    let group = heads / heads_kv;
    let h_kv = ABSOLUTE_POS % heads_kv;
    let bm = ABSOLUTE_POS / heads_kv;
    let m = (bm % tokens) as u32;
    let b = bm / tokens;

    let mut k_row = Array::<f32>::new(head_dim);
    let mut v_row = Array::<f32>::new(head_dim_v);
    let mut dk_acc = Array::<f32>::new(head_dim);
    let mut dv_acc = Array::<f32>::new(head_dim_v);
    load_rows::<F>(
        k,
        v,
        ABSOLUTE_POS,
        &mut k_row,
        &mut v_row,
        &mut dk_acc,
        &mut dv_acc,
        head_dim,
        head_dim_v,
    );

    let w = token_windows(&geometry, m, true, causal0, causal1, causal2);
    for i0 in w[1]..w[2] {
        let x0 = i0 * geometry.dilation0 + w[0];
        for i1 in w[4]..w[5] {
            let x01 = x0 * geometry.len1 + i1 * geometry.dilation1 + w[3];
            for i2 in w[7]..w[8] {
                let n = (x01 * geometry.len2 + i2 * geometry.dilation2 + w[6]) as usize;
                for g in 0..group {
                    let qi = (b * tokens + n) * heads + h_kv * group + g;
                    dkdv_step::<F>(
                        q,
                        d_out,
                        lse,
                        delta,
                        qi,
                        &k_row,
                        &v_row,
                        scale,
                        &mut dk_acc,
                        &mut dv_acc,
                        head_dim,
                        head_dim_v,
                    );
                }
            }
        }
    }
    store_rows::<F>(
        dk,
        dv,
        ABSOLUTE_POS,
        &dk_acc,
        &dv_acc,
        scale,
        head_dim,
        head_dim_v,
    );
}

/// dK/dV of dense keys (extra KV tokens, or all FMHA keys): K `[b, s, h_kv, d]`, one unit per
/// (b, key, h_kv), over every query (or, when causal, the queries at or after the key).
#[cube(launch)]
#[allow(clippy::too_many_arguments)]
pub fn dkdv_dense_kernel<F: Float>(
    q: &Tensor<F>,
    k: &Tensor<F>,
    v: &Tensor<F>,
    d_out: &Tensor<F>,
    lse: &Tensor<f32>,
    delta: &Tensor<f32>,
    dk: &mut Tensor<F>,
    dv: &mut Tensor<F>,
    scale: f32,
    #[comptime] causal: bool,
    #[comptime] head_dim: usize,
    #[comptime] head_dim_v: usize,
    #[define(F)] _dtype: StorageType,
) {
    let heads = q.shape(2);
    let q_tokens = q.shape(1);
    let kv_tokens = k.shape(1);
    let heads_kv = k.shape(2);
    if ABSOLUTE_POS >= k.shape(0) * kv_tokens * heads_kv {
        terminate!();
    }
    let group = heads / heads_kv;
    let h_kv = ABSOLUTE_POS % heads_kv;
    let bm = ABSOLUTE_POS / heads_kv;
    let m = bm % kv_tokens;
    let b = bm / kv_tokens;

    let mut k_row = Array::<f32>::new(head_dim);
    let mut v_row = Array::<f32>::new(head_dim_v);
    let mut dk_acc = Array::<f32>::new(head_dim);
    let mut dv_acc = Array::<f32>::new(head_dim_v);
    load_rows::<F>(
        k,
        v,
        ABSOLUTE_POS,
        &mut k_row,
        &mut v_row,
        &mut dk_acc,
        &mut dv_acc,
        head_dim,
        head_dim_v,
    );

    let mut first = 0usize;
    if causal {
        first = m;
    }
    for n in first..q_tokens {
        for g in 0..group {
            let qi = (b * q_tokens + n) * heads + h_kv * group + g;
            dkdv_step::<F>(
                q,
                d_out,
                lse,
                delta,
                qi,
                &k_row,
                &v_row,
                scale,
                &mut dk_acc,
                &mut dv_acc,
                head_dim,
                head_dim_v,
            );
        }
    }
    store_rows::<F>(
        dk,
        dv,
        ABSOLUTE_POS,
        &dk_acc,
        &dv_acc,
        scale,
        head_dim,
        head_dim_v,
    );
}
