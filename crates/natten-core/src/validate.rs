//! NATTEN's rules for the neighborhood parameters.

use crate::{AxisParams, NattenError};

/// Checks the per-axis parameters against the spatial shape with NATTEN's rules: those of
/// [`validate_axis_params`], then kernel size x dilation against each axis length.
///
/// # Errors
/// [`NattenError::InvalidArgument`] naming the argument (`kernel_size`, `stride`, `dilation`)
/// when: the number of axes differs from the spatial rank; a kernel size is < 2; a stride or
/// dilation is 0; a stride is larger than its kernel size; kernel size x dilation exceeds the
/// axis length.
pub fn validate_axes(spatial: &[usize], axes: &[AxisParams]) -> Result<(), NattenError> {
    if spatial.len() != axes.len() {
        return Err(NattenError::invalid(
            "kernel_size",
            format!(
                "expected one entry per spatial axis: the input has {} axes {spatial:?}, the options {}",
                spatial.len(),
                axes.len()
            ),
        ));
    }
    validate_axis_params(axes)?;
    for (axis, (p, &len)) in axes.iter().zip(spatial).enumerate() {
        if p.kernel_size.saturating_mul(p.dilation) > len {
            return Err(NattenError::invalid(
                "dilation",
                format!(
                    "kernel size x dilation cannot be larger than the input size: {} x {} > {len} on axis {axis}",
                    p.kernel_size, p.dilation
                ),
            ));
        }
    }
    Ok(())
}

/// Checks the per-axis parameters with the rules that do not depend on the input's shape (used
/// where the shape is not known yet, e.g. by a module's configuration).
///
/// # Errors
/// [`NattenError::InvalidArgument`] naming the argument (`kernel_size`, `stride`, `dilation`)
/// when a kernel size is < 2, a stride or dilation is 0, or a stride is larger than its kernel
/// size.
pub fn validate_axis_params(axes: &[AxisParams]) -> Result<(), NattenError> {
    for (axis, p) in axes.iter().enumerate() {
        if p.kernel_size < 2 {
            return Err(NattenError::invalid(
                "kernel_size",
                format!(
                    "must be >= 2 on every axis, got {} on axis {axis}",
                    p.kernel_size
                ),
            ));
        }
        if p.stride == 0 {
            return Err(NattenError::invalid(
                "stride",
                format!("must be >= 1, got 0 on axis {axis}"),
            ));
        }
        if p.dilation == 0 {
            return Err(NattenError::invalid(
                "dilation",
                format!("must be >= 1, got 0 on axis {axis}"),
            ));
        }
        if p.stride > p.kernel_size {
            return Err(NattenError::invalid(
                "stride",
                format!(
                    "cannot be larger than kernel size: stride {} > kernel size {} on axis {axis}",
                    p.stride, p.kernel_size
                ),
            ));
        }
    }
    Ok(())
}
