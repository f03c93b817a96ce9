//! Running a native kernel on burn-cuda's own buffers.
//!
//! The synchronisation protocol (cubecl does not expose its CUDA stream, and its streams do
//! not synchronise with others):
//! 1. inputs are made contiguous and the outputs allocated through cubecl, on its stream;
//! 2. the client's stream is synchronised (`client.sync()`), so every pending write to the
//!    inputs and the outputs' stream-ordered allocations have completed;
//! 3. `get_resource` pins each buffer (it cannot be freed or reused while the returned
//!    `ManagedResource` lives) and gives its device pointer;
//! 4. the kernel runs on our own stream in the same (primary) context, and that stream is
//!    synchronised before the resources are released and the outputs handed back to Burn.
//!
//! Two host synchronisations per call; the stress test in the integration tests interleaves
//! Burn ops and native calls to check the protocol.

use burn::tensor::{DType, Shape};
use burn_cubecl::kernel::into_contiguous;
use burn_cubecl::ops::numeric::empty_device_contiguous_dtype;
use burn_cubecl::tensor::CubeTensor;
use cubecl::cuda::CudaRuntime;
use cudarc::driver::{LaunchConfig, PushKernelArg};

use super::device::NativeDevice;
use super::plan::{CallShape, FnaForwardParams, THREADS, shared_bytes};
use crate::backend::{NaProblem, TileConfig};

type CudaTensor = CubeTensor<CudaRuntime>;

/// Runs the native FNA forward; returns (out, lse) or why it could not launch (nothing was
/// written then). A failure after the launch (a kernel fault) leaves the CUDA context unusable
/// and is a panic with the driver's message.
#[allow(clippy::too_many_arguments)]
pub fn na_forward(
    device: &NativeDevice,
    q: &CudaTensor,
    k: &CudaTensor,
    v: &CudaTensor,
    problem: &NaProblem,
    tiles: &TileConfig,
    kernel_dim: usize,
) -> Result<(CudaTensor, CudaTensor), String> {
    let (q, k, v) = (
        into_contiguous(q.clone()),
        into_contiguous(k.clone()),
        into_contiguous(v.clone()),
    );
    let [batch, tokens, heads, head_dim] = q.meta.shape().dims();
    let heads_kv = k.meta.shape()[2];
    if tokens.checked_mul(heads.max(heads_kv) * head_dim).is_none_or(|n| n > i32::MAX as usize) {
        return Err("more than 2^31 elements per batch entry".into());
    }
    let bf16 = match q.dtype {
        DType::BF16 => true,
        DType::F16 => false,
        other => return Err(format!("dtype {other:?}")),
    };
    let function = device
        .forward(kernel_dim, bf16)
        .ok_or_else(|| format!("no kernel for head dim {kernel_dim}"))?;
    let client = q.client.clone();
    let out = empty_device_contiguous_dtype(
        client.clone(),
        q.device.clone(),
        Shape::new([batch, tokens, heads, head_dim]),
        q.dtype,
    );
    let lse = empty_device_contiguous_dtype(
        client.clone(),
        q.device.clone(),
        Shape::new([batch, tokens, heads]),
        DType::F32,
    );

    let shape = CallShape {
        batch,
        tokens,
        heads,
        heads_kv,
        head_dim,
    };
    let (mut params, grid) = FnaForwardParams::new(problem, shape, tiles);

    cubecl::future::block_on(client.sync()).map_err(|e| format!("cubecl sync: {e:?}"))?;
    let resource = |t: &CudaTensor| {
        client
            .get_resource(t.handle.clone())
            .map_err(|e| format!("buffer: {e:?}"))
    };
    let (rq, rk, rv, ro, rl) = (
        resource(&q)?,
        resource(&k)?,
        resource(&v)?,
        resource(&out)?,
        resource(&lse)?,
    );
    params.q = rq.resource().ptr;
    params.k = rk.resource().ptr;
    params.v = rv.resource().ptr;
    params.out = ro.resource().ptr;
    params.lse = rl.resource().ptr;
    if [params.q, params.k, params.v, params.out].iter().any(|p| p % 16 != 0) {
        return Err("a buffer is not 16-byte aligned".into());
    }

    let config = LaunchConfig {
        grid_dim: grid,
        block_dim: (THREADS, 1, 1),
        shared_mem_bytes: shared_bytes(kernel_dim),
    };
    let stream = &device.stream;
    let mut launch = stream.launch_builder(function);
    launch.arg(&params);
    // SAFETY: the kernel's only parameter is `FnaForwardParams` by value (kernels/fna_params.cuh);
    // every pointer in it is a pinned, contiguous buffer of the sizes the kernel indexes.
    unsafe { launch.launch(config) }.map_err(|e| format!("launch: {e}"))?;
    if let Err(e) = stream.synchronize() {
        panic!("burn-natten: the native FNA forward kernel failed on the GPU: {e}");
    }
    drop((rq, rk, rv, ro, rl));
    Ok((out, lse))
}
