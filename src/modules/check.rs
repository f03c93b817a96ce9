//! The rules a module configuration must follow, checked by `init` before any weight exists.
//! The rules that need the input (kernel size x dilation against each axis length) are checked
//! by the `na*` call in `forward`.

use natten_core::shape::check_scale;
use natten_core::validate::validate_axis_params;
use natten_core::{AxisParams, NattenError};

/// Head counts and sizes of a validated configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct HeadLayout {
    /// Channels of the input and output (`num_heads * head_dim`).
    pub embed_dim: usize,
    /// Query heads.
    pub num_heads: usize,
    /// Key/value heads (divides `num_heads`).
    pub num_kv_heads: usize,
    /// Channels per head, for Q, K and V alike.
    pub head_dim: usize,
}

impl HeadLayout {
    /// Output features of the fused QKV projection: `(num_heads + 2 num_kv_heads) head_dim`.
    pub fn qkv_features(&self) -> usize {
        (self.num_heads + 2 * self.num_kv_heads) * self.head_dim
    }
}

/// The configuration fields that every rank shares.
pub(crate) struct ConfigFields<'a> {
    pub embed_dim: usize,
    pub num_heads: usize,
    pub num_kv_heads: Option<usize>,
    pub axes: &'a [AxisParams],
    pub scale: Option<f32>,
    pub proj_drop: f64,
}

/// Checks a module configuration; returns its head layout.
///
/// # Errors
/// [`NattenError::InvalidArgument`] naming the field: `num_heads` or `num_kv_heads` of 0,
/// `embed_dim` not a positive multiple of `num_heads`, `num_kv_heads` not dividing `num_heads`,
/// the per-axis rules of [`validate_axis_params`] (`kernel_size`, `stride`, `dilation`), a
/// `scale` that is not finite or is zero, a `proj_drop` outside `[0, 1]`.
pub(crate) fn check_config(c: &ConfigFields<'_>) -> Result<HeadLayout, NattenError> {
    if c.num_heads == 0 {
        return Err(NattenError::invalid("num_heads", "must be >= 1, got 0"));
    }
    if c.embed_dim == 0 || !c.embed_dim.is_multiple_of(c.num_heads) {
        return Err(NattenError::invalid(
            "embed_dim",
            format!(
                "must be a positive multiple of num_heads, got embed_dim {} for {} heads",
                c.embed_dim, c.num_heads
            ),
        ));
    }
    let num_kv_heads = c.num_kv_heads.unwrap_or(c.num_heads);
    if num_kv_heads == 0 {
        return Err(NattenError::invalid("num_kv_heads", "must be >= 1, got 0"));
    }
    if !c.num_heads.is_multiple_of(num_kv_heads) {
        return Err(NattenError::invalid(
            "num_kv_heads",
            format!(
                "key/value heads must evenly divide query heads, got {num_kv_heads} KV heads for {} query heads",
                c.num_heads
            ),
        ));
    }
    validate_axis_params(c.axes)?;
    if let Some(scale) = c.scale {
        check_scale(scale)?;
    }
    if !(0.0..=1.0).contains(&c.proj_drop) {
        return Err(NattenError::invalid(
            "proj_drop",
            format!("must be a probability in [0, 1], got {}", c.proj_drop),
        ));
    }
    Ok(HeadLayout {
        embed_dim: c.embed_dim,
        num_heads: c.num_heads,
        num_kv_heads,
        head_dim: c.embed_dim / c.num_heads,
    })
}

/// The input must be `[batch, *spatial, embed_dim]`.
///
/// # Errors
/// [`NattenError::InvalidArgument`] naming `x` when its last axis is not `embed_dim`.
pub(crate) fn check_input(dims: &[usize], embed_dim: usize) -> Result<(), NattenError> {
    let channels = dims[dims.len() - 1];
    if channels != embed_dim {
        return Err(NattenError::invalid(
            "x",
            format!(
                "expected [batch, *spatial, embed_dim] with embed_dim {embed_dim}, got shape {dims:?}"
            ),
        ));
    }
    Ok(())
}
