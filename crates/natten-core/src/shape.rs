//! Tensor-shape validation: what the Q, K, V (and extra K/V) of a call must look like.

use crate::NattenError;

/// The sizes of a neighborhood-attention or attention call, read off validated tensor shapes.
///
/// Layout is heads-last: Q `[batch, *spatial, heads, head_dim]`,
/// K `[batch, *spatial, heads_kv, head_dim]`, V `[batch, *spatial, heads_kv, head_dim_v]`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct AttentionShape {
    /// Batch size.
    pub batch: usize,
    /// Spatial shape of the query tokens (one entry per axis; for `attention`, `[seq_q]`).
    pub spatial: Vec<usize>,
    /// Number of key/value tokens (equals the product of `spatial` for neighborhood attention).
    pub kv_tokens: usize,
    /// Query heads.
    pub heads: usize,
    /// Key/value heads (divides `heads`).
    pub heads_kv: usize,
    /// Head dim of Q and K.
    pub head_dim: usize,
    /// Head dim of V and of the output.
    pub head_dim_v: usize,
}

impl AttentionShape {
    /// Number of query tokens: the product of the spatial shape.
    pub fn tokens(&self) -> usize {
        self.spatial.iter().product()
    }

    /// Query heads per key/value head (`heads / heads_kv`).
    pub fn group_size(&self) -> usize {
        self.heads / self.heads_kv
    }
}

fn check_rank(argument: &'static str, shape: &[usize], rank: usize) -> Result<(), NattenError> {
    if shape.len() != rank {
        return Err(NattenError::invalid(
            argument,
            format!("expected a {rank}-D tensor, got shape {shape:?}"),
        ));
    }
    if let Some(axis) = shape.iter().position(|&n| n == 0) {
        return Err(NattenError::invalid(
            argument,
            format!("every dimension must be non-zero, dimension {axis} of {shape:?} is 0"),
        ));
    }
    Ok(())
}

fn check_heads(heads: usize, heads_kv: usize) -> Result<(), NattenError> {
    if !heads.is_multiple_of(heads_kv) {
        return Err(NattenError::invalid(
            "k",
            format!(
                "key/value heads must evenly divide query heads, got {heads_kv} KV heads for {heads} query heads"
            ),
        ));
    }
    Ok(())
}

/// Validates the Q, K, V shapes of a neighborhood-attention call with `rank` spatial axes.
///
/// # Errors
/// [`NattenError::InvalidArgument`] naming `q`, `k` or `v` when a tensor is not `rank + 3`-D,
/// has a zero dimension, when batch or token layouts differ, when the head dims of Q and K
/// differ, when K and V head counts differ, or when KV heads do not divide Q heads.
pub fn na_shape(
    rank: usize,
    q: &[usize],
    k: &[usize],
    v: &[usize],
) -> Result<AttentionShape, NattenError> {
    let dims = rank + 3;
    check_rank("q", q, dims)?;
    check_rank("k", k, dims)?;
    check_rank("v", v, dims)?;
    let layout = |s: &[usize]| s[..rank + 1].to_vec();
    for (argument, shape) in [("k", k), ("v", v)] {
        if layout(shape) != layout(q) {
            return Err(NattenError::invalid(
                argument,
                format!(
                    "Q, K and V must match in batch and token layout, got {:?} for Q and {:?} for {}",
                    layout(q),
                    layout(shape),
                    argument.to_uppercase()
                ),
            ));
        }
    }
    let shape = heads_and_dims(q, k, v)?;
    Ok(AttentionShape {
        batch: q[0],
        spatial: q[1..=rank].to_vec(),
        kv_tokens: q[1..=rank].iter().product(),
        ..shape
    })
}

/// Validates the Q, K, V shapes of an attention (FMHA) call: `[batch, seq, heads, dim]`, where
/// the query and key/value sequence lengths may differ.
///
/// # Errors
/// As [`na_shape`], except that only the batch must match between Q and K/V, and K and V must
/// have the same sequence length.
pub fn attention_shape(
    q: &[usize],
    k: &[usize],
    v: &[usize],
) -> Result<AttentionShape, NattenError> {
    check_rank("q", q, 4)?;
    check_rank("k", k, 4)?;
    check_rank("v", v, 4)?;
    if k[0] != q[0] || v[0] != q[0] {
        return Err(NattenError::invalid(
            "k",
            format!(
                "Q, K and V must have the same batch size, got {}, {} and {}",
                q[0], k[0], v[0]
            ),
        ));
    }
    if v[1] != k[1] {
        return Err(NattenError::invalid(
            "v",
            format!(
                "K and V must have the same sequence length, got {} and {}",
                k[1], v[1]
            ),
        ));
    }
    let shape = heads_and_dims(q, k, v)?;
    Ok(AttentionShape {
        batch: q[0],
        spatial: vec![q[1]],
        kv_tokens: k[1],
        ..shape
    })
}

/// Heads and head dims from the last two axes of Q, K, V (batch and tokens left empty).
fn heads_and_dims(q: &[usize], k: &[usize], v: &[usize]) -> Result<AttentionShape, NattenError> {
    let n = q.len();
    let (heads, head_dim) = (q[n - 2], q[n - 1]);
    let (heads_kv, head_dim_k) = (k[n - 2], k[n - 1]);
    let (heads_v, head_dim_v) = (v[n - 2], v[n - 1]);
    if head_dim_k != head_dim {
        return Err(NattenError::invalid(
            "k",
            format!("Q and K must have the same head dim, got {head_dim} and {head_dim_k}"),
        ));
    }
    if heads_v != heads_kv {
        return Err(NattenError::invalid(
            "v",
            format!("K and V must have the same number of heads, got {heads_kv} and {heads_v}"),
        ));
    }
    check_heads(heads, heads_kv)?;
    Ok(AttentionShape {
        batch: 0,
        spatial: vec![],
        kv_tokens: 0,
        heads,
        heads_kv,
        head_dim,
        head_dim_v,
    })
}

/// Validates extra K/V tokens (`[batch, extra, heads_kv, head_dim]` and
/// `[batch, extra, heads_kv, head_dim_v]`) against the main call's shape; returns the number of
/// extra tokens.
///
/// # Errors
/// [`NattenError::InvalidArgument`] naming `extra_k` or `extra_v` when a tensor is not 4-D or its
/// batch, heads, head dim or token count do not match.
pub fn extra_kv_tokens(
    shape: &AttentionShape,
    extra_k: &[usize],
    extra_v: &[usize],
) -> Result<usize, NattenError> {
    check_rank("extra_k", extra_k, 4)?;
    check_rank("extra_v", extra_v, 4)?;
    let expected_k = [shape.batch, extra_k[1], shape.heads_kv, shape.head_dim];
    if extra_k != expected_k {
        return Err(NattenError::invalid(
            "extra_k",
            format!(
                "expected shape [batch, extra, heads_kv, head_dim] = {expected_k:?}, got {extra_k:?}"
            ),
        ));
    }
    let expected_v = [shape.batch, extra_k[1], shape.heads_kv, shape.head_dim_v];
    if extra_v != expected_v {
        return Err(NattenError::invalid(
            "extra_v",
            format!(
                "expected shape [batch, extra, heads_kv, head_dim_v] = {expected_v:?} (extra tokens as in extra_k), got {extra_v:?}"
            ),
        ));
    }
    Ok(extra_k[1])
}

/// Validates the softmax scale: finite and non-zero.
///
/// # Errors
/// [`NattenError::InvalidArgument`] naming `scale`.
pub fn check_scale(scale: f32) -> Result<(), NattenError> {
    if !scale.is_finite() || scale == 0.0 {
        return Err(NattenError::invalid(
            "scale",
            format!("must be finite and non-zero, got {scale}"),
        ));
    }
    Ok(())
}
