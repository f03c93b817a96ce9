//! Native CUDA kernels (CUTLASS/CuTe, compiled by nvcc in `build.rs` into embedded fatbins),
//! swapped in on burn-cuda (`CubeBackend<CudaRuntime, ..>`, fused or not, under `Autodiff`)
//! by the `cuda-native` feature.
//!
//! - [`plan`]: block sizes, tile configurations, the launch parameters;
//! - [`device`]: per-device context, stream and loaded kernels;
//! - [`launch`]: running kernels on cubecl's buffers: pins, the launch, the synchronous protocol;
//! - [`handoff`]: the GPU-side handoff between cubecl's stream and ours (no host wait);
//! - [`tensor_map`]: the TMA descriptors of K and V for the Hopper forward;
//! - [`trace`]: the calls' traces on stderr (`BURN_NATTEN_NATIVE_TRACE`, `..._TRACE_HANDOFF`).
//!
//! What runs natively: NA forward and backward (ranks 1-3, kernel size, stride, dilation,
//! per-axis causal, GQA/MQA, extra KV tokens) and attention (FMHA: causal, Q/KV lengths that
//! differ) in f16/bf16, head dims (Q/K and V, which may differ) multiples of 8 up to 256
//! (backward at head dim 256: where a CTA may have 129 KiB of shared memory, A100 and H100),
//! positive scale, on GPUs of compute capability 8.0 or newer. Extra KV
//! tokens run as a second, dense call of the same kernels whose result the caller merges
//! (`merge_attentions`); their backward runs both calls against the merged output and LSE.
//! Everything else runs the portable CubeCL kernels.

mod device;
mod handoff;
mod launch;
mod plan;
mod tensor_map;
mod trace;

use std::any::Any;

use burn::tensor::DType;
use burn_cubecl::CubeRuntime;
use burn_cubecl::tensor::CubeTensor;
use cubecl::Runtime;
use cubecl::cuda::{CudaDevice, CudaRuntime};
use cubecl::device::Device;
use cubecl::device_handle::DeviceHandle;

use crate::NaBackend;
use crate::backend::{FmhaProblem, NaProblem, TileConfig};
use plan::Pattern;
pub use trace::{mark, trace_point};

/// cubecl's CUDA server: its device thread runs the tasks of a `DeviceHandle` of it.
type CudaServer = <CudaRuntime as Runtime>::Server;

/// Why the native kernels cannot run a call with these properties on this device, or `None`.
pub fn unsupported_reason<D: 'static>(
    device: &D,
    head_dim: usize,
    head_dim_v: usize,
    dtype: DType,
) -> Option<String> {
    let Some(device) = (device as &dyn Any).downcast_ref::<CudaDevice>() else {
        return Some("the native kernels run on burn-cuda only".into());
    };
    if !matches!(dtype, DType::F16 | DType::BF16) {
        return Some(format!(
            "dtype {dtype:?}: the native kernels take f16 and bf16"
        ));
    }
    for (name, dim) in [("head_dim", head_dim), ("head_dim_v", head_dim_v)] {
        if !dim.is_multiple_of(8) || dim > 256 {
            return Some(format!(
                "{name} {dim}: the native kernels take multiples of 8 up to 256"
            ));
        }
    }
    let widest = head_dim.max(head_dim_v);
    if plan::kernel_head_dim(widest, &device::built_head_dims()).is_none() {
        return Some(format!(
            "head dim {widest}: this build has native kernels for head dims {:?} only \
             (BURN_NATTEN_NATIVE_HEAD_DIMS at build time)",
            device::built_head_dims()
        ));
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
    if unsupported_reason(device, head_dim, head_dim_v, dtype).is_some() {
        return None;
    }
    let kernel_dim = plan::kernel_head_dim(head_dim.max(head_dim_v), &device::built_head_dims())?;
    let index = (device as &dyn Any).downcast_ref::<CudaDevice>()?.index;
    let wide = device::native_device(index)
        .ok()?
        .has_wide_forward(kernel_dim);
    Some(plan::tile_configs(rank, kernel_dim, wide))
}

/// The native backward tile configurations for this call, when the native backward runs it
/// (`None` otherwise).
pub fn backward_tile_configs<D: 'static>(
    device: &D,
    rank: usize,
    head_dim: usize,
    head_dim_v: usize,
    dtype: DType,
) -> Option<Vec<TileConfig>> {
    if unsupported_reason(device, head_dim, head_dim_v, dtype).is_some() {
        return None;
    }
    let index = (device as &dyn Any).downcast_ref::<CudaDevice>()?.index;
    let native = device::native_device(index).ok()?;
    plan::kernel_head_dim(head_dim.max(head_dim_v), &native.backward_head_dims())?;
    Some(plan::backward_tile_configs(rank))
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

/// Extra key/value tokens of an NA call: K `[batch, extra, heads_kv, head_dim]`, V likewise with
/// `head_dim_v`.
pub type ExtraRefs<'a, R> = Option<(&'a CubeTensor<R>, &'a CubeTensor<R>)>;

/// A native NA forward: the neighborhood's (out, lse), and the extra tokens' when the call has
/// some (the caller merges the two).
pub struct NaForward<R: CubeRuntime> {
    /// Output and LSE over the neighborhood.
    pub neighborhood: (CubeTensor<R>, CubeTensor<R>),
    /// Output and LSE over the extra tokens.
    pub extra: Option<(CubeTensor<R>, CubeTensor<R>)>,
}

/// Gradients of one native backward call: (dq, dk, dv).
pub type Grads<R> = [CubeTensor<R>; 3];

/// A native NA backward: the neighborhood's gradients and the extra tokens' (whose dq the caller
/// adds to the neighborhood's).
pub struct NaBackward<R: CubeRuntime> {
    /// Gradients through the neighborhood.
    pub neighborhood: Grads<R>,
    /// Gradients through the extra tokens.
    pub extra: Option<Grads<R>>,
}

/// A call the native kernels run: its tensors on the CUDA runtime, the device's kernels and the
/// kernel head dim.
struct NativeCall<'a, const N: usize> {
    tensors: [&'a CubeTensor<CudaRuntime>; N],
    device: std::sync::Arc<device::NativeDevice>,
    kernel_dim: usize,
}

/// The native call for these tensors (Q, K, V first) when `choice` lets the native kernels run
/// them: the choice is `Auto` or `CudaFna`, the scale positive, the runtime CUDA,
/// [`unsupported_reason`] `None`, and a kernel head dim among the `built` ones.
fn native_call<'a, R: CubeRuntime, const N: usize>(
    tensors: [&'a CubeTensor<R>; N],
    choice: NaBackend,
    scale: f32,
    built: &[usize],
) -> Option<NativeCall<'a, N>> {
    if !matches!(choice, NaBackend::Auto | NaBackend::CudaFna) || scale <= 0.0 {
        return None;
    }
    let tensors = tensors.map(cast::<_, CubeTensor<CudaRuntime>>);
    if tensors.iter().any(Option::is_none) {
        return None;
    }
    let tensors = tensors.map(Option::unwrap);
    let (q, v) = (tensors[0], tensors[2]);
    let (head_dim, head_dim_v) = (q.meta.shape()[3], v.meta.shape()[3]);
    if unsupported_reason(&q.device, head_dim, head_dim_v, q.dtype).is_some() {
        return None;
    }
    let kernel_dim = plan::kernel_head_dim(head_dim.max(head_dim_v), built)?;
    let device = device::native_device(q.device.index).ok()?;
    Some(NativeCall {
        tensors,
        device,
        kernel_dim,
    })
}

/// The extra tokens as CUDA tensors (`Some(None)` when there are none; `None` when they are not
/// on the CUDA runtime).
fn cuda_extra<'a, R: CubeRuntime>(
    extra: ExtraRefs<'a, R>,
) -> Option<Option<[&'a CubeTensor<CudaRuntime>; 2]>> {
    match extra {
        Some((k, v)) => Some(Some([cast(k)?, cast(v)?])),
        None => Some(None),
    }
}

/// The extra tokens' pattern: every query sees every extra token.
fn extra_tokens(problem: &NaProblem) -> Pattern<'static> {
    Pattern::Dense {
        causal: false,
        scale: problem.scale,
    }
}

/// Runs `run` (a call's host steps: its allocations, pins, handoff and launches) on cubecl's
/// device thread for `device`, and returns its result, or `None` with a warning naming `what`
/// when the launches could not start.
///
/// `run` is one `DeviceHandle::exclusive` task (the caller's cubecl stream kept): the cubecl
/// requests it makes (allocations, pins, the handoff's kernel) run at once there instead of one
/// round trip to that thread each, and nothing else runs on that thread until it returns, which
/// the handoff needs ([`handoff`]).
fn launched<T: Send>(
    what: &str,
    device: &CudaDevice,
    run: impl FnOnce() -> Result<T, String> + Send,
) -> Option<T> {
    trace::mark("to cubecl's thread");
    DeviceHandle::<CudaServer>::new(device.to_id())
        .exclusive(run)
        .map_err(|e| format!("cubecl device thread: {e:?}"))
        .and_then(|r| r)
        .map_err(|reason| {
            eprintln!("burn-natten: native {what} not launched ({reason}); portable kernels run")
        })
        .ok()
}

/// The native NA forward, when it applies to this call (see [`native_call`]); `None` lets the
/// caller run the portable path. A launch that cannot start (for instance a misaligned buffer)
/// also returns `None`, with a warning on stderr.
pub fn try_na_forward<R: CubeRuntime>(
    q: &CubeTensor<R>,
    k: &CubeTensor<R>,
    v: &CubeTensor<R>,
    extra: ExtraRefs<'_, R>,
    problem: &NaProblem,
) -> Option<NaForward<R>> {
    let built = device::built_head_dims();
    let NativeCall {
        tensors: [q, k, v],
        device: native,
        kernel_dim,
    } = native_call([q, k, v], problem.backend, problem.scale, &built)?;
    let extra = cuda_extra(extra)?;
    let wide = native.has_wide_forward(kernel_dim);
    let tiles = match &problem.tiles {
        Some(t) if plan::tile_configs(problem.spatial.len(), kernel_dim, wide).contains(t) => {
            t.clone()
        }
        _ => plan::default_tiles(problem.into(), kernel_dim, wide),
    };
    let run = || -> Result<_, String> {
        let neighborhood = launch::forward(&native, q, k, v, problem.into(), &tiles, kernel_dim)?;
        let extra = match extra {
            Some([ek, ev]) => {
                let dense = extra_tokens(problem);
                let tiles = plan::default_tiles(dense, kernel_dim, wide);
                Some(launch::forward(
                    &native, q, ek, ev, dense, &tiles, kernel_dim,
                )?)
            }
            None => None,
        };
        Ok((neighborhood, extra))
    };
    let (neighborhood, extra) = launched("NA forward", &q.device, run)?;
    Some(NaForward {
        neighborhood: pair_back(neighborhood)?,
        extra: match extra {
            Some(e) => Some(pair_back(e)?),
            None => None,
        },
    })
}

/// The native NA backward, under the same conditions as [`try_na_forward`] and a head dim with
/// backward kernels on the device; `None` lets the caller run the portable backward. `out` and
/// `lse` are the whole forward's (merged over the extra tokens), from either path.
pub fn try_na_backward<R: CubeRuntime>(
    tensors: [&CubeTensor<R>; 6],
    extra: ExtraRefs<'_, R>,
    problem: &NaProblem,
) -> Option<NaBackward<R>> {
    let built = device::built_backward_head_dims();
    let NativeCall {
        tensors,
        device: native,
        kernel_dim,
    } = native_call(tensors, problem.backend, problem.scale, &built)?;
    if !native.backward_head_dims().contains(&kernel_dim) {
        return None; // built, but more shared memory than this device gives a CTA
    }
    let extra = cuda_extra(extra)?;
    let tiles = match &problem.backward_tiles {
        Some(t) if plan::backward_tile_configs(problem.spatial.len()).contains(t) => t.clone(),
        _ => plan::default_backward_tiles(problem.into()),
    };
    let run = || -> Result<_, String> {
        let neighborhood = launch::backward(&native, tensors, problem.into(), &tiles, kernel_dim)?;
        let extra = match extra {
            Some([ek, ev]) => {
                let [q, _, _, out, lse, d_out] = tensors;
                let dense = extra_tokens(problem);
                let tiles = plan::default_backward_tiles(dense);
                let with_extra = [q, ek, ev, out, lse, d_out];
                Some(launch::backward(
                    &native, with_extra, dense, &tiles, kernel_dim,
                )?)
            }
            None => None,
        };
        Ok((neighborhood, extra))
    };
    let (neighborhood, extra) = launched("NA backward", &tensors[0].device, run)?;
    Some(NaBackward {
        neighborhood: grads_back(neighborhood)?,
        extra: match extra {
            Some(e) => Some(grads_back(e)?),
            None => None,
        },
    })
}

/// The native attention (FMHA) forward, under the conditions of [`try_na_forward`].
pub fn try_fmha_forward<R: CubeRuntime>(
    q: &CubeTensor<R>,
    k: &CubeTensor<R>,
    v: &CubeTensor<R>,
    problem: &FmhaProblem,
) -> Option<(CubeTensor<R>, CubeTensor<R>)> {
    let built = device::built_head_dims();
    let NativeCall {
        tensors: [q, k, v],
        device: native,
        kernel_dim,
    } = native_call([q, k, v], problem.backend, problem.scale, &built)?;
    let tiles = plan::default_tiles(
        problem.into(),
        kernel_dim,
        native.has_wide_forward(kernel_dim),
    );
    let run = || launch::forward(&native, q, k, v, problem.into(), &tiles, kernel_dim);
    pair_back(launched("attention forward", &q.device, run)?)
}

/// The native attention (FMHA) backward, under the conditions of [`try_na_backward`].
pub fn try_fmha_backward<R: CubeRuntime>(
    tensors: [&CubeTensor<R>; 6],
    problem: &FmhaProblem,
) -> Option<Grads<R>> {
    let built = device::built_backward_head_dims();
    let NativeCall {
        tensors,
        device: native,
        kernel_dim,
    } = native_call(tensors, problem.backend, problem.scale, &built)?;
    if !native.backward_head_dims().contains(&kernel_dim) {
        return None;
    }
    let tiles = plan::default_backward_tiles(problem.into());
    let run = || launch::backward(&native, tensors, problem.into(), &tiles, kernel_dim);
    grads_back(launched("attention backward", &tensors[0].device, run)?)
}

fn pair_back<R: CubeRuntime>(
    (a, b): (CubeTensor<CudaRuntime>, CubeTensor<CudaRuntime>),
) -> Option<(CubeTensor<R>, CubeTensor<R>)> {
    Some((cast_owned(a)?, cast_owned(b)?))
}

fn grads_back<R: CubeRuntime>(
    (dq, dk, dv): (
        CubeTensor<CudaRuntime>,
        CubeTensor<CudaRuntime>,
        CubeTensor<CudaRuntime>,
    ),
) -> Option<Grads<R>> {
    Some([cast_owned(dq)?, cast_owned(dk)?, cast_owned(dv)?])
}
