//! Native CUDA kernels (CUTLASS/CuTe, compiled by nvcc in `build.rs` into embedded fatbins),
//! swapped in on burn-cuda (`CubeBackend<CudaRuntime, ..>`, fused or not, under `Autodiff`)
//! by the `cuda-native` feature.
//!
//! - [`plan`]: block sizes, tile configurations, the launch parameters;
//! - [`device`]: per-device context, stream and loaded kernels;
//! - [`launch`]: the synchronisation protocol with cubecl and the launch.
//!
//! What runs natively: NA forward and backward (ranks 1-3, kernel size, stride, dilation,
//! per-axis causal, GQA/MQA) in f16/bf16 with `head_dim == head_dim_v`, a multiple of 8 up to
//! 256 (backward: up to 128), no extra KV tokens, positive scale, on GPUs of compute capability
//! 8.0 or newer. Everything else runs the portable CubeCL kernels.

mod device;
mod launch;
mod plan;

use std::any::Any;

use burn::tensor::DType;
use burn_cubecl::CubeRuntime;
use burn_cubecl::tensor::CubeTensor;
use cubecl::cuda::{CudaDevice, CudaRuntime};

use crate::NaBackend;
use crate::backend::{NaProblem, TileConfig};

/// Why the native kernels cannot run a call with these properties on this device, or `None`.
pub fn unsupported_reason<D: 'static>(
    device: &D,
    head_dim: usize,
    head_dim_v: usize,
    dtype: DType,
    has_extra: bool,
) -> Option<String> {
    let Some(device) = (device as &dyn Any).downcast_ref::<CudaDevice>() else {
        return Some("the native kernels run on burn-cuda only".into());
    };
    if !matches!(dtype, DType::F16 | DType::BF16) {
        return Some(format!(
            "dtype {dtype:?}: the native kernels take f16 and bf16"
        ));
    }
    if head_dim != head_dim_v {
        return Some(format!(
            "head_dim {head_dim} != head_dim_v {head_dim_v}: the native kernels need them equal"
        ));
    }
    if !head_dim.is_multiple_of(8) || head_dim > 256 {
        return Some(format!(
            "head_dim {head_dim}: the native kernels take multiples of 8 up to 256"
        ));
    }
    if plan::kernel_head_dim(head_dim, &device::built_head_dims()).is_none() {
        return Some(format!(
            "head_dim {head_dim}: this build has native kernels for head dims {:?} only \
             (BURN_NATTEN_NATIVE_HEAD_DIMS at build time)",
            device::built_head_dims()
        ));
    }
    if has_extra {
        return Some("extra KV tokens run on the portable kernels".into());
    }
    device::native_device(device.index).err()
}

/// The native tile configurations for this call, when the native kernels run it (`None`
/// otherwise: the portable kernels' configurations apply).
pub fn tile_configs<D: 'static>(
    device: &D,
    rank: usize,
    head_dim: usize,
    head_dim_v: usize,
    dtype: DType,
) -> Option<Vec<TileConfig>> {
    if unsupported_reason(device, head_dim, head_dim_v, dtype, false).is_some() {
        return None;
    }
    let kernel_dim = plan::kernel_head_dim(head_dim, &device::built_head_dims())?;
    Some(plan::tile_configs(rank, kernel_dim))
}

/// Whether CUDA device `index` can run the native kernels (see [`crate::cuda_native_status`]).
pub fn status(index: usize) -> Result<(), String> {
    device::native_device(index).map(|_| ())
}

fn cast<A: 'static, B: 'static>(a: &A) -> Option<&B> {
    (a as &dyn Any).downcast_ref::<B>()
}

fn cast_owned<A: 'static, B: 'static>(a: A) -> Option<B> {
    (Box::new(a) as Box<dyn Any>)
        .downcast::<B>()
        .ok()
        .map(|b| *b)
}

/// The native NA forward, when it applies to this call (`R` is CUDA, the choice is `Auto` or
/// `CudaFna`, and [`unsupported_reason`] is `None`); `None` lets the caller run the portable
/// path. A launch that cannot start (for instance a misaligned buffer) also returns `None`,
/// with a warning on stderr.
pub fn try_na_forward<R: CubeRuntime>(
    q: &CubeTensor<R>,
    k: &CubeTensor<R>,
    v: &CubeTensor<R>,
    has_extra: bool,
    problem: &NaProblem,
) -> Option<(CubeTensor<R>, CubeTensor<R>)> {
    if !matches!(problem.backend, NaBackend::Auto | NaBackend::CudaFna) || problem.scale <= 0.0 {
        return None;
    }
    let (q, k, v) = (
        cast::<_, CubeTensor<CudaRuntime>>(q)?,
        cast::<_, CubeTensor<CudaRuntime>>(k)?,
        cast::<_, CubeTensor<CudaRuntime>>(v)?,
    );
    let (head_dim, head_dim_v) = (q.meta.shape()[3], v.meta.shape()[3]);
    if unsupported_reason(&q.device, head_dim, head_dim_v, q.dtype, has_extra).is_some() {
        return None;
    }
    let native = device::native_device(q.device.index).ok()?;
    let kernel_dim = plan::kernel_head_dim(head_dim, &device::built_head_dims())?;
    let tiles = match &problem.tiles {
        Some(t) if plan::tile_configs(problem.spatial.len(), kernel_dim).contains(t) => t.clone(),
        _ => plan::default_tiles(problem, kernel_dim),
    };
    match launch::na_forward(&native, q, k, v, problem, &tiles, kernel_dim) {
        Ok((out, lse)) => Some((cast_owned(out)?, cast_owned(lse)?)),
        Err(reason) => {
            eprintln!(
                "burn-natten: native FNA forward not launched ({reason}); portable kernels run"
            );
            None
        }
    }
}

/// The native NA backward, under the same conditions as [`try_na_forward`] and a head dim with
/// backward kernels (up to 128); `None` lets the caller run the portable backward. `out` and
/// `lse` may come from either forward (same layouts).
pub fn try_na_backward<R: CubeRuntime>(
    [q, k, v, out, lse, d_out]: [&CubeTensor<R>; 6],
    has_extra: bool,
    problem: &NaProblem,
) -> Option<[CubeTensor<R>; 3]> {
    if !matches!(problem.backend, NaBackend::Auto | NaBackend::CudaFna) || problem.scale <= 0.0 {
        return None;
    }
    let [q, k, v, out, lse, d_out] =
        [q, k, v, out, lse, d_out].map(cast::<_, CubeTensor<CudaRuntime>>);
    let tensors = [q?, k?, v?, out?, lse?, d_out?];
    let (head_dim, head_dim_v) = (tensors[0].meta.shape()[3], tensors[2].meta.shape()[3]);
    let device = &tensors[0].device;
    if unsupported_reason(device, head_dim, head_dim_v, tensors[0].dtype, has_extra).is_some() {
        return None;
    }
    let native = device::native_device(device.index).ok()?;
    let kernel_dim = plan::kernel_head_dim(head_dim, &device::built_backward_head_dims())?;
    let tiles = plan::default_backward_tiles(problem);
    match launch::na_backward(&native, tensors, problem, &tiles, kernel_dim) {
        Ok((dq, dk, dv)) => Some([cast_owned(dq)?, cast_owned(dk)?, cast_owned(dv)?]),
        Err(reason) => {
            eprintln!(
                "burn-natten: native FNA backward not launched ({reason}); portable kernels run"
            );
            None
        }
    }
}
