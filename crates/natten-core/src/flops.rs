//! FLOP counts for throughput reporting.

use crate::window::axis_pair_count;
use crate::{AttentionShape, AxisParams};

/// Number of attended (query, key) pairs of a neighborhood-attention call, per batch and head:
/// the product over axes of each axis's summed window sizes (the rule is separable), plus
/// `tokens x extra_kv` for extra KV tokens.
pub fn na_pair_count(spatial: &[usize], axes: &[AxisParams], extra_kv: usize) -> u64 {
    let neighborhood: u64 = axes
        .iter()
        .zip(spatial)
        .map(|(a, &len)| axis_pair_count(a, len))
        .product();
    let tokens: u64 = spatial.iter().map(|&n| n as u64).product();
    neighborhood + tokens * extra_kv as u64
}

/// Number of attended pairs of an attention (FMHA) call per batch and head: all pairs, or the
/// lower triangle (top-left aligned) when causal.
pub fn attention_pair_count(seq_q: usize, seq_kv: usize, causal: bool) -> u64 {
    if causal {
        (0..seq_q as u64).map(|i| (i + 1).min(seq_kv as u64)).sum()
    } else {
        seq_q as u64 * seq_kv as u64
    }
}

/// Forward FLOPs for `pairs` attended pairs: `2 * pairs * (head_dim + head_dim_v)` per batch and
/// head (QK^T and PV), i.e. the usual `4 * pairs * head_dim` when the head dims are equal.
pub fn forward_flops(shape: &AttentionShape, pairs: u64) -> f64 {
    2.0 * pairs as f64
        * (shape.head_dim + shape.head_dim_v) as f64
        * shape.heads as f64
        * shape.batch as f64
}

/// Backward FLOPs: 2.5x the forward (recompute QK^T, then dV, dP, dQ, dK).
pub fn backward_flops(shape: &AttentionShape, pairs: u64) -> f64 {
    2.5 * forward_flops(shape, pairs)
}
