//! Running a native kernel on burn-cuda's own buffers.
//!
//! cubecl does not expose its CUDA stream, and its streams do not synchronise with others.
//! A call:
//! 1. makes the inputs contiguous and allocates the outputs through cubecl, on its stream (one
//!    buffer for all outputs of a call);
//! 2. pins each buffer with `get_resource` (it cannot be freed or reused while the returned
//!    `ManagedResource` lives), which gives its device pointer ([`pin`]);
//! 3. runs the kernels on our own stream, in the same (primary) context.
//!
//! The caller (`super::launched`) runs all of it in one task on cubecl's device thread, where
//! the cubecl requests of steps 1 and 2 (and the handoff's) run at once rather than as round
//! trips.
//!
//! By default a call hands off on the GPU ([`super::handoff`]): a cubecl kernel, behind
//! everything pending on cubecl's stream, writes a flag and spins until a second one is
//! written; our stream waits for the first flag, runs the kernels and writes the second, so
//! cubecl's stream runs nothing after the call before the kernels have finished. The host does
//! not wait. The synchronous protocol (a stream's first call, a call that would wrap the
//! handoff's count, every call while tracing or with `BURN_NATTEN_NATIVE_HANDOFF=0`, and every
//! call where the handoff's kernels could not be compiled) syncs cubecl's stream in step 2,
//! before the pins, and synchronises our stream after the launch, before the pins are released
//! and the outputs handed back to Burn: two host waits per call.
//!
//! The stress test in the integration tests interleaves Burn ops and native calls to check
//! both. `BURN_NATTEN_NATIVE_TRACE=1` prints the time of each step of every call on stderr, and
//! `BURN_NATTEN_NATIVE_TRACE_HANDOFF=1` the GPU times of handed-off calls ([`super::trace`]).

use std::sync::OnceLock;
use std::time::Instant;

use burn::tensor::{DType, Shape};
use burn_cubecl::kernel::into_contiguous;
use burn_cubecl::ops::numeric::empty_device_contiguous_dtype;
use burn_cubecl::tensor::CubeTensor;
use cubecl::cuda::CudaRuntime;
use cubecl::device::Device;
use cubecl::device_handle::DeviceHandle;
use cubecl::server::ComputeServer;
use cubecl::stream_id::StreamId;
use cubecl::zspace::{Strides, metadata::Metadata};
use cudarc::driver::{CudaStream, LaunchConfig, PushKernelArg};

use super::CudaServer;
use super::device::{FUSED_AUX_THREADS, KernelLaunch, NativeDevice, TileSplit};
use super::handoff::{Handoff, StreamKernels};
use super::plan::{
    CallShape, FnaParams, Pattern, sm90_dkdv_product_masks_fit, sm90_dq_product_masks_fit,
    sm90_product_masks_fit,
};
use super::tensor_map::{TensorMap, describable, dq_accumulator_map, tile_tensor_maps};
use super::trace::{
    env_flag, env_flag_default_on, handed_off, handoff_timestamp, timestamp, trace_point,
    trace_prepared, tracing, unix_us,
};
use crate::backend::TileConfig;

type CudaTensor = CubeTensor<CudaRuntime>;

/// The element type of the kernels for `dtype`: `Ok(true)` for bf16, `Ok(false)` for f16.
fn is_bf16(dtype: DType) -> Result<bool, String> {
    match dtype {
        DType::BF16 => Ok(true),
        DType::F16 => Ok(false),
        other => Err(format!("dtype {other:?}")),
    }
}

/// A call's outputs, allocated as one buffer so that the protocol pins them with one
/// `get_resource` (each pin is a round trip to cubecl's device thread): the buffer, and each
/// output as a contiguous tensor over its own byte range, at `offsets` (multiples of the
/// memory alignment, as burn's slices of a buffer are).
struct Outputs<const N: usize> {
    buffer: CudaTensor,
    offsets: [u64; N],
    tensors: [CudaTensor; N],
}

impl<const N: usize> Outputs<N> {
    /// Allocates outputs of these shapes and dtypes on `like`'s device.
    fn new(like: &CudaTensor, parts: [(Shape, DType); N]) -> Self {
        let align = like.client.properties().memory.alignment.max(16);
        let bytes = parts
            .each_ref()
            .map(|(shape, dtype)| (shape.num_elements() * dtype.size()) as u64);
        let mut offsets = [0u64; N];
        let mut total = 0u64;
        for (offset, size) in offsets.iter_mut().zip(bytes) {
            *offset = total;
            total += size.div_ceil(align) * align;
        }
        let buffer = empty_device_contiguous_dtype(
            like.client.clone(),
            like.device.clone(),
            Shape::new([total as usize]),
            DType::U8,
        );
        let mut index = 0;
        let tensors = parts.map(|(shape, dtype)| {
            let (offset, size) = (offsets[index], bytes[index]);
            index += 1;
            let strides: Strides = contiguous_strides(&shape).into_iter().collect();
            let handle = buffer
                .handle
                .clone()
                .offset_start(offset)
                .offset_end(total - offset - size);
            CudaTensor::new(
                like.client.clone(),
                handle,
                Metadata::new(shape, strides),
                like.device.clone(),
                dtype,
            )
        });
        Self {
            buffer,
            offsets,
            tensors,
        }
    }

    /// The device pointers of the outputs, from that of the pinned buffer.
    fn pointers(&self, buffer: u64) -> [u64; N] {
        self.offsets.map(|offset| buffer + offset)
    }
}

/// Row-major strides of `shape`.
fn contiguous_strides(shape: &Shape) -> Vec<usize> {
    let dims = shape.as_slice();
    let mut strides = vec![1; dims.len()];
    for axis in (0..dims.len().saturating_sub(1)).rev() {
        strides[axis] = strides[axis + 1] * dims[axis + 1];
    }
    strides
}

/// The call's shape from Q `[batch, tokens, heads, head_dim]`, K `[batch, kv_tokens, heads_kv,
/// head_dim]` and V, checking that 32-bit token indices suffice.
fn call_shape(q: &CudaTensor, k: &CudaTensor, v: &CudaTensor) -> Result<CallShape, String> {
    let [batch, tokens, heads, head_dim] = q.meta.shape().dims();
    let [_, kv_tokens, heads_kv, _] = k.meta.shape().dims();
    let head_dim_v = v.meta.shape()[3];
    let widest = heads.max(heads_kv) * head_dim.max(head_dim_v);
    if tokens
        .max(kv_tokens)
        .checked_mul(widest)
        .is_none_or(|n| n > i32::MAX as usize)
    {
        return Err("more than 2^31 elements per batch entry".into());
    }
    Ok(CallShape {
        batch,
        tokens,
        kv_tokens,
        heads,
        heads_kv,
        head_dim,
        head_dim_v,
    })
}

/// Whether `BURN_NATTEN_NATIVE_FUSED_BACKWARD=1` asks for the fused Hopper backward
/// ([`super::device::FusedBackward`]) where it applies. Off by default: on the H100 anchors it
/// was 1.5-6% slower than the dQ pass and the dK/dV pass (DEVELOPERS.md), which are also
/// deterministic (its dQ reduce-adds run in a varying order).
fn fused_backward_asked() -> bool {
    static FUSED: OnceLock<bool> = OnceLock::new();
    *FUSED.get_or_init(|| env_flag("BURN_NATTEN_NATIVE_FUSED_BACKWARD"))
}

/// Whether the Hopper forward, dQ and dK/dV passes take the window masks as a product
/// (`kernels/product_masks_sm90.cuh`) where they fit ([`sm90_product_masks_fit`],
/// [`sm90_dq_product_masks_fit`], [`sm90_dkdv_product_masks_fit`]): on unless
/// `BURN_NATTEN_NATIVE_PRODUCT_MASKS=0`. On the H100 (sixteenth session) the native suite passed
/// with them, and the 2-D anchor's forward kernel ran 0.539 ms against 0.574 with outputs
/// identical to the looked-up masks' (DEVELOPERS.md).
fn product_masks_enabled() -> bool {
    static PRODUCT: OnceLock<bool> = OnceLock::new();
    *PRODUCT.get_or_init(|| {
        std::env::var_os("BURN_NATTEN_NATIVE_PRODUCT_MASKS").is_none_or(|v| v != "0")
    })
}

/// One kernel launch of a call: the kernel (function, threads per CTA, dynamic shared memory),
/// its grid, and for a kernel that pairs or halves plan tiles its second argument, the axis.
struct Launch<'a> {
    kernel: KernelLaunch<'a>,
    grid: (u32, u32, u32),
    tile_axis: Option<i32>,
}

impl<'a> Launch<'a> {
    /// This launch with a persistent kernel's grid kept off `sms` SMs (its CTAs walk the work
    /// items of any grid size); other kernels unchanged.
    fn leaving_sms(&self, sms: u32) -> Self {
        let mut grid = self.grid;
        if let Some(ctas) = self.kernel.persistent_ctas {
            grid.0 = grid.0.min(ctas.saturating_sub(sms)).max(1);
        }
        Self {
            kernel: self.kernel,
            grid,
            tile_axis: self.tile_axis,
        }
    }

    /// A kernel of one CTA per `per_cta` of `count` items (the fused backward's prologue and
    /// epilogue).
    fn elementwise(kernel: KernelLaunch<'a>, count: usize, per_cta: usize) -> Self {
        Self {
            kernel,
            grid: (count.div_ceil(per_cta).max(1) as u32, 1, 1),
            tile_axis: None,
        }
    }

    /// A query-side pass (forward, dQ): one work item per Q tile, or per pair of them.
    fn query_side(kernel: KernelLaunch<'a>, params: &FnaParams) -> Self {
        Self::over_tiles(
            kernel,
            params.query_grid(),
            || {
                let axis = params.query_pair_axis();
                (axis, params.query_pair_grid(axis))
            },
            || params.query_split_axis(),
        )
    }

    /// A key-side pass (dK/dV, dK, dV): one work item per KV tile, or per pair of them.
    fn key_side(kernel: KernelLaunch<'a>, params: &FnaParams) -> Self {
        Self::over_tiles(
            kernel,
            params.key_grid(),
            || {
                let axis = params.key_pair_axis();
                (axis, params.key_pair_grid(axis))
            },
            || params.key_split_axis(),
        )
    }

    /// The launch of `kernel` over the plan tiles of its side as its [`TileSplit`] asks: `grid`
    /// (one work item per tile), or the pair axis and grid from `pairs`, or the axis from
    /// `split_axis` over `grid`.
    fn over_tiles(
        kernel: KernelLaunch<'a>,
        grid: (u32, u32, u32),
        pairs: impl FnOnce() -> (i32, (u32, u32, u32)),
        split_axis: impl FnOnce() -> i32,
    ) -> Self {
        let (tile_axis, work) = match kernel.tiles {
            TileSplit::Whole => (None, grid),
            TileSplit::Pairs => {
                let (axis, pair_grid) = pairs();
                (Some(axis), pair_grid)
            }
            TileSplit::Halves => (Some(split_axis()), grid),
        };
        Self {
            kernel,
            grid: kernel.grid(work),
            tile_axis,
        }
    }
}

/// Pins each of `buffers` (it cannot be freed or reused while the returned pins live) in one
/// task on cubecl's device thread (run at once: the call runs there), after waiting for the
/// calling thread's cubecl stream when `sync` (steps 2 and 3 of the synchronous protocol).
/// Returns their device pointers, the pins (dropping them releases the buffers to cubecl) and
/// when the task started and when the sync returned (for the trace).
fn pin(
    buffers: &[&CudaTensor],
    sync: bool,
) -> Result<(Vec<u64>, impl Sized + use<>, [Instant; 2]), String> {
    // The stream the client would use: burn-cubecl leaves each thread on its own.
    let stream_id = StreamId::current();
    let bindings: Vec<_> = buffers.iter().map(|t| t.handle.clone().binding()).collect();
    // The handle of the runner thread that cubecl's client of this device talks to (the same
    // queue, so every op submitted before this call runs first).
    let runner = DeviceHandle::<CudaServer>::new(buffers[0].device.to_id());
    runner
        .submit_blocking(move |server: &mut CudaServer| {
            let started = Instant::now();
            if sync {
                cubecl::future::block_on(server.sync(stream_id))
                    .map_err(|e| format!("cubecl sync: {e:?}"))?;
            }
            let synced = Instant::now();
            let pins = bindings
                .into_iter()
                .map(|binding| {
                    server
                        .get_resource(binding, stream_id)
                        .map_err(|e| format!("buffer: {e:?}"))
                })
                .collect::<Result<Vec<_>, _>>()?;
            let pointers = pins.iter().map(|pin| pin.resource().ptr).collect();
            Ok((pointers, pins, [started, synced]))
        })
        .map_err(|e| format!("cubecl device thread: {e:?}"))?
}

/// Whether calls hand off on the GPU ([`super::handoff`]) instead of synchronising on the
/// host (the protocol in the module docs): unless `BURN_NATTEN_NATIVE_HANDOFF=0`, and never
/// while tracing (the trace times the kernels on the host). The default since the eleventh
/// session: with [`SPINNER_SMS`], handed-off calls were faster than synchronous ones on every
/// anchor, per call and back to back (DEVELOPERS.md, "Burn interop").
fn handing_off() -> bool {
    static HANDOFF: OnceLock<bool> = OnceLock::new();
    !tracing() && *HANDOFF.get_or_init(|| env_flag_default_on("BURN_NATTEN_NATIVE_HANDOFF"))
}

/// SMs that a persistent kernel leaves to cubecl's spinning kernel when the call is handed off
/// ([`run_handed_off`]).
const SPINNER_SMS: u32 = 1;

/// Writes the pinned buffers' device pointers into `params` with `set_pointers`, and the
/// device's work counter, or says why the kernels cannot take them (they load 16-byte vectors).
fn write_pointers(
    device: &NativeDevice,
    params: &mut FnaParams,
    pointers: &[u64],
    set_pointers: impl FnOnce(&mut FnaParams, &[u64]),
) -> Result<(), String> {
    if pointers.iter().any(|p| p % 16 != 0) {
        return Err("a buffer is not 16-byte aligned".into());
    }
    set_pointers(params, pointers);
    params.item_counter = device.item_counter;
    Ok(())
}

/// Waits on the host for everything launched on `stream`. A kernel fault leaves the CUDA
/// context unusable, so it is a panic with the driver's message.
fn wait_for_kernels(stream: &CudaStream) {
    if let Err(e) = stream.synchronize() {
        panic!("burn-natten: a native FNA kernel failed on the GPU: {e}");
    }
}

/// Runs `launches` in order on `stream` with `params`.
fn launch_all(
    stream: &CudaStream,
    launches: &[Launch<'_>],
    params: &FnaParams,
) -> Result<(), String> {
    for launch in launches {
        let config = LaunchConfig {
            grid_dim: launch.grid,
            block_dim: (launch.kernel.threads, 1, 1),
            shared_mem_bytes: launch.kernel.shared_bytes,
        };
        // The descriptors of a kernel that takes them (K and V for the Hopper forward and
        // paired dQ pass, Q and dO for the paired dK/dV pass), or the cp.async gather where TMA
        // cannot describe the tensors (`tma` 0, the descriptors unread).
        let (tma, maps) = match launch.kernel.tensor_maps {
            Some(kind) => match tile_tensor_maps(params, kind) {
                Ok(maps) => (1i32, maps),
                Err(why) => {
                    trace_point(&format!(
                        "{:?} tiles gathered with cp.async ({why})",
                        kind.side
                    ));
                    (0, [TensorMap::unused(); 2])
                }
            },
            None => (0, [TensorMap::unused(); 2]),
        };
        let dq_map = match (launch.kernel.dq_accumulator_map, launch.kernel.tensor_maps) {
            (true, Some(kind)) => Some(dq_accumulator_map(params, kind)?),
            _ => None,
        };
        let mut builder = stream.launch_builder(launch.kernel.function);
        builder.arg(params);
        if let Some(axis) = &launch.tile_axis {
            builder.arg(axis);
        }
        if launch.kernel.tensor_maps.is_some() {
            builder.arg(&tma).arg(&maps[0]).arg(&maps[1]);
        }
        if let Some(map) = &dq_map {
            builder.arg(map);
        }
        // SAFETY: every native kernel takes `FnaParams` by value (kernels/fna_params.cuh), and
        // every pointer in it is a pinned, contiguous buffer of the shape the kernel indexes;
        // the kernels that pair or halve plan tiles take the axis (an int) after it, and those
        // with `tensor_maps` then the TMA flag (an int) and two `CUtensorMap`s by value, and the
        // fused backward the dQ accumulator's `CUtensorMap`.
        unsafe { builder.launch(config) }.map_err(|e| format!("launch: {e}"))?;
    }
    Ok(())
}

/// Runs `launches` on `buffers` (their device pointers written into the parameters by
/// `set_pointers`): by the synchronous protocol (module docs), or handed off on the GPU
/// ([`super::handoff`]) when [`handing_off`], except for a stream's first call and where the
/// handoff's kernels could not be compiled.
fn run_on_burn_buffers(
    device: &NativeDevice,
    buffers: &[&CudaTensor],
    params: FnaParams,
    set_pointers: impl FnOnce(&mut FnaParams, &[u64]),
    launches: &[Launch<'_>],
) -> Result<(), String> {
    let handoff = match &device.handoff {
        Ok(kernels) if handing_off() => Handoff::next(buffers[0]).map(|h| (h, kernels)),
        _ => None,
    };
    match handoff {
        Some((handoff, kernels)) => run_handed_off(
            device,
            buffers,
            params,
            set_pointers,
            launches,
            handoff,
            kernels,
        ),
        None => run_synchronously(device, buffers, params, set_pointers, launches),
    }
}

/// The handoff ([`super::handoff`]): pins the buffers and the flags, hands cubecl's stream
/// over (its kernel signals, then spins), runs `launches` on ours between the wait and the
/// write that releases cubecl's stream. Returns without waiting for the GPU.
fn run_handed_off(
    device: &NativeDevice,
    buffers: &[&CudaTensor],
    mut params: FnaParams,
    set_pointers: impl FnOnce(&mut FnaParams, &[u64]),
    launches: &[Launch<'_>],
    handoff: Handoff,
    kernels: &StreamKernels,
) -> Result<(), String> {
    let with_flags: Vec<&CudaTensor> = buffers.iter().copied().chain([&handoff.flags]).collect();
    let pinning = Instant::now();
    let (mut pointers, pins, _) = pin(&with_flags, false)?;
    let flags = pointers.pop().ok_or("no flags")?;
    write_pointers(device, &mut params, &pointers, set_pointers)?;
    let stream = &device.stream;
    let handing_over = Instant::now();
    handoff.hand_over();
    let host = [pinning, handing_over, Instant::now()];
    // From here on cubecl's stream spins until `release_on`'s write, which every path makes.
    let waiting = handoff_timestamp(stream);
    let launched = handoff.wait_on(stream, kernels, flags).and_then(|()| {
        // cubecl's spinning kernel runs beside the call's kernels, and an SM that holds it
        // cannot take a CTA of the persistent forward (measured on the H100: the forward ran
        // 1.6-1.7x slower when its 132 CTAs were launched; most likely the SM's shared memory
        // carveout, which changes only when the SM is idle). The persistent kernels leave it
        // one SM.
        let launches: Vec<Launch<'_>> = launches
            .iter()
            .map(|l| l.leaving_sms(SPINNER_SMS))
            .collect();
        let started = handoff_timestamp(stream);
        let launched = launch_all(stream, &launches, &params);
        handed_off(
            stream,
            [waiting, started, handoff_timestamp(stream)],
            buffers.len(),
            host,
        );
        launched
    });
    if let Err(e) = handoff.release_on(stream, kernels, flags) {
        // Our stream takes neither a kernel nor a memset: the context is unusable, and cubecl's
        // stream would spin for ever behind the handoff's kernel.
        panic!("burn-natten: the native call could not release cubecl's stream: {e}");
    }
    // The buffers go back to cubecl's pool now; cubecl's stream reuses them only after the
    // spinning kernel, that is after our kernels.
    drop(pins);
    launched
}

/// The synchronous protocol (module docs): syncs cubecl's stream, pins `buffers`, writes
/// their device pointers into the parameters with `set_pointers`, runs `launches` in order on
/// our stream and waits for them.
fn run_synchronously(
    device: &NativeDevice,
    buffers: &[&CudaTensor],
    mut params: FnaParams,
    set_pointers: impl FnOnce(&mut FnaParams, &[u64]),
    launches: &[Launch<'_>],
) -> Result<(), String> {
    let start = Instant::now();
    let (pointers, pins, [started, synced]) = pin(buffers, true)?;
    let returned = Instant::now();
    write_pointers(device, &mut params, &pointers, set_pointers)?;
    let stream = &device.stream;
    // With tracing, GPU-side timestamps around the kernels (the kernels' own time), recorded
    // outside the host's launch interval.
    let gpu_start = timestamp(stream);
    let pinned = Instant::now();
    let launched = launch_all(stream, launches, &params);
    let launched_at = Instant::now();
    let gpu_end = timestamp(stream);
    wait_for_kernels(stream);
    drop(pins);
    launched?;
    if tracing() {
        let done = Instant::now();
        let us = |a: Instant, b: Instant| (b - a).as_secs_f64() * 1e6;
        let kernels_us = match (&gpu_start, &gpu_end) {
            (Some(a), Some(b)) => a.elapsed_ms(b).map_or(f64::NAN, |ms| ms as f64 * 1e3),
            _ => f64::NAN,
        };
        eprintln!(
            "burn-natten native: queued {:.0} us, cubecl sync {:.0} us (its stream's pending \
             work), {} pins and the way back {:.0} us, launch {:.0} us, wait {:.0} us (kernels on \
             the GPU {kernels_us:.0} us); done at t={} us",
            us(start, started),
            us(started, synced),
            buffers.len(),
            us(synced, returned),
            us(pinned, launched_at),
            us(launched_at, done),
            unix_us()
        );
    }
    Ok(())
}

/// Runs the native forward (NA or attention, by `pattern`); returns (out, lse) or why it could
/// not launch (nothing was written then). A failure after the launch (a kernel fault) leaves
/// the CUDA context unusable and is a panic with the driver's message.
pub fn forward(
    device: &NativeDevice,
    q: &CudaTensor,
    k: &CudaTensor,
    v: &CudaTensor,
    pattern: Pattern<'_>,
    tiles: &TileConfig,
    kernel_dim: usize,
) -> Result<(CudaTensor, CudaTensor), String> {
    let entered = Instant::now();
    let (q, k, v) = (
        into_contiguous(q.clone()),
        into_contiguous(k.clone()),
        into_contiguous(v.clone()),
    );
    let shape = call_shape(&q, &k, &v)?;
    let block_m: usize = tiles.q_tile.iter().product();
    let block_n: usize = tiles.kv_tile.iter().product();
    let product_masks = product_masks_enabled() && sm90_product_masks_fit(pattern, tiles);
    let kernel = device
        .forward(
            kernel_dim,
            block_m,
            block_n,
            is_bf16(q.dtype)?,
            product_masks,
        )
        .ok_or_else(|| {
            format!(
                "no forward kernel for head dim {kernel_dim}, {block_m} queries x {block_n} keys"
            )
        })?;
    let (b, n, h) = (shape.batch, shape.tokens, shape.heads);
    let outputs = Outputs::new(
        &q,
        [
            (Shape::new([b, n, h, shape.head_dim_v]), q.dtype),
            (Shape::new([b, n, h]), DType::F32),
        ],
    );
    let params = FnaParams::new(pattern, shape, tiles);
    trace_prepared(entered);
    let launch = Launch::query_side(kernel, &params);
    run_on_burn_buffers(
        device,
        &[&q, &k, &v, &outputs.buffer],
        params,
        |p, ptr| {
            [p.q, p.k, p.v] = [ptr[0], ptr[1], ptr[2]];
            [p.out, p.lse] = outputs.pointers(ptr[3]);
        },
        &[launch],
    )?;
    let [out, lse] = outputs.tensors;
    Ok((out, lse))
}

/// Runs the native backward (the fused Hopper backward where asked for and it applies, else the
/// dQ pass, then the dK/dV pass or, at head dim 256, the dK and dV passes; NA or attention, by
/// `pattern`); returns (dq, dk, dv). `out` and `lse` are those of the whole forward (of a merged
/// one, with extra keys).
pub fn backward(
    device: &NativeDevice,
    [q, k, v, out, lse, d_out]: [&CudaTensor; 6],
    pattern: Pattern<'_>,
    tiles: &TileConfig,
    kernel_dim: usize,
) -> Result<(CudaTensor, CudaTensor, CudaTensor), String> {
    let entered = Instant::now();
    let [q, k, v, out, lse, d_out] = [q, k, v, out, lse, d_out].map(|t| into_contiguous(t.clone()));
    let shape = call_shape(&q, &k, &v)?;
    let kernels = device
        .backward(kernel_dim, is_bf16(q.dtype)?)
        .ok_or_else(|| format!("no backward kernels for head dim {kernel_dim}"))?;
    let (b, n, n_kv, h, h_kv) = (
        shape.batch,
        shape.tokens,
        shape.kv_tokens,
        shape.heads,
        shape.heads_kv,
    );
    let outputs = Outputs::new(
        &q,
        [
            (Shape::new([b, n, h, shape.head_dim]), q.dtype),
            (Shape::new([b, n_kv, h_kv, shape.head_dim]), q.dtype),
            (Shape::new([b, n_kv, h_kv, shape.head_dim_v]), q.dtype),
            (Shape::new([b, n, h]), DType::F32),
        ],
    );
    let params = FnaParams::new(pattern, shape, tiles);
    // The fused backward where it was asked for and loaded and TMA can describe the call's
    // tiles; else the dQ pass and the key passes.
    let fused = kernels.fused.filter(|f| {
        fused_backward_asked()
            && f.pass
                .tensor_maps
                .is_some_and(|kind| describable(&params, kind).is_ok())
    });
    let dq_acc = fused.as_ref().map(|_| {
        empty_device_contiguous_dtype(
            q.client.clone(),
            q.device.clone(),
            Shape::new([b * n * h * shape.head_dim]),
            DType::F32,
        )
    });
    trace_prepared(entered);
    let launches: Vec<Launch<'_>> = match &fused {
        Some(f) => vec![
            Launch::elementwise(f.prologue, b * n * h, FUSED_AUX_THREADS as usize / 32),
            Launch::key_side(f.pass, &params),
            Launch::elementwise(
                f.epilogue,
                b * n * h * shape.head_dim,
                FUSED_AUX_THREADS as usize * 4,
            ),
        ],
        None => {
            // The passes with product masks where asked for, loaded and fitting.
            let enabled = product_masks_enabled();
            let dq = match kernels.dq_product_masks {
                Some(pm)
                    if enabled
                        && sm90_dq_product_masks_fit(pattern, tiles, params.query_pair_axis()) =>
                {
                    pm
                }
                _ => kernels.dq,
            };
            let key_passes = match kernels.dkdv_product_masks {
                Some(pm)
                    if enabled
                        && sm90_dkdv_product_masks_fit(pattern, tiles, params.key_pair_axis()) =>
                {
                    vec![pm]
                }
                _ => kernels.key_passes,
            };
            std::iter::once(Launch::query_side(dq, &params))
                .chain(
                    key_passes
                        .into_iter()
                        .map(|kernel| Launch::key_side(kernel, &params)),
                )
                .collect()
        }
    };
    let mut buffers = vec![&q, &k, &v, &out, &lse, &d_out, &outputs.buffer];
    buffers.extend(dq_acc.as_ref());
    run_on_burn_buffers(
        device,
        &buffers,
        params,
        |p, ptr| {
            [p.q, p.k, p.v, p.out, p.lse] = [ptr[0], ptr[1], ptr[2], ptr[3], ptr[4]];
            p.d_out = ptr[5];
            [p.dq, p.dk, p.dv, p.delta] = outputs.pointers(ptr[6]);
            p.dq_acc = ptr.get(7).copied().unwrap_or(0);
        },
        &launches,
    )?;
    let [dq, dk, dv, _delta] = outputs.tensors;
    Ok((dq, dk, dv))
}
