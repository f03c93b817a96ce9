//! Checks on tensors that the shape rules of `natten-core` cannot see: dtype and device, and
//! whether an explicitly chosen native path can run the call.

use burn::tensor::backend::Backend;
use burn::tensor::{DType, Tensor};
use natten_core::NattenError;

use crate::NaBackend;
use crate::backend::NattenBackend;

/// Q, K, V (and extra K/V) must share one float dtype and one device.
pub(crate) fn same_dtype_and_device<B: Backend, const D: usize>(
    q: &Tensor<B, D>,
    others: &[(&'static str, DType, B::Device)],
) -> Result<(), NattenError> {
    let (dtype, device) = (q.dtype(), q.device());
    if !matches!(dtype, DType::F32 | DType::F16 | DType::BF16 | DType::F64) {
        return Err(NattenError::invalid(
            "q",
            format!("expected a float tensor (f32, f16, bf16, f64), got {dtype:?}"),
        ));
    }
    for (argument, other_dtype, other_device) in others {
        if *other_dtype != dtype {
            return Err(NattenError::invalid(
                argument,
                format!("must have the same dtype as Q: {other_dtype:?} vs {dtype:?}"),
            ));
        }
        if *other_device != device {
            return Err(NattenError::invalid(
                argument,
                format!("must be on the same device as Q: {other_device:?} vs {device:?}"),
            ));
        }
    }
    Ok(())
}

/// The default scale `head_dim^-0.5`, or the validated explicit one.
pub(crate) fn resolve_scale(scale: Option<f32>, head_dim: usize) -> Result<f32, NattenError> {
    match scale {
        Some(scale) => natten_core::shape::check_scale(scale).map(|_| scale),
        None => Ok((head_dim as f32).powf(-0.5)),
    }
}

/// An explicit [`NaBackend::CudaFna`] must be able to run the call (NA, NA with extra tokens or
/// attention: the same rules) on Q's device; any other choice passes.
pub(crate) fn native_can_run<B: NattenBackend, const D: usize>(
    choice: NaBackend,
    scale: f32,
    q: &Tensor<B, D>,
    head_dim: usize,
    head_dim_v: usize,
) -> Result<(), NattenError> {
    if choice != NaBackend::CudaFna {
        return Ok(());
    }
    let reason = if scale <= 0.0 {
        Some(format!(
            "scale {scale}: the native kernels need a positive scale"
        ))
    } else {
        B::cuda_fna_unsupported(&q.device(), head_dim, head_dim_v, q.dtype())
    };
    match reason {
        Some(reason) => Err(NattenError::Unsupported {
            backend: choice.name(),
            reason,
        }),
        None => Ok(()),
    }
}
