//! The stream-ordered handoff between cubecl's stream and ours: a native call that does not
//! wait on the host. The default; `BURN_NATTEN_NATIVE_HANDOFF=0` turns it off
//! ([`super::launch`]).
//!
//! cubecl does not expose its CUDA stream, so neither stream can wait on the other's events.
//! Instead, each cubecl stream (each [`StreamId`] of each device) has two `u32` flags in a
//! cubecl buffer, `[ready, done]`, and a count of its native calls. Call `n` on that stream:
//! 1. [`hand_over_to_native_call`] (a one-thread cubecl kernel, on cubecl's stream) writes `n`
//!    into `ready`: everything cubecl's stream ran before it (the inputs' writes, the outputs'
//!    allocations) has completed when `ready >= n`. Then it spins until `done >= n`, so nothing
//!    that cubecl's stream runs after it (reads of the outputs, reuse of the inputs' memory,
//!    which cubecl's pool only hands out on the same stream) runs before the call's kernels
//!    have finished. (Until the twentieth session these were two cubecl kernels, the second
//!    launched after ours: one cubecl launch, ~10-15 us of the host's time, more per call.)
//! 2. on our stream, [`StreamKernels`] (two one-thread kernels of our own, compiled with NVRTC
//!    when the device is loaded) wait for `ready >= n`, then the call's kernels run, then `n` is
//!    written into `done`. (The driver's stream memory operations, `cuStreamWaitValue32`, are
//!    what one would use here, but they answer `CUDA_ERROR_INVALID_VALUE` on the memory of
//!    cubecl's pool, measured on an H100 with driver 580.)
//!
//! The host returns as soon as everything is enqueued. Each spinning kernel is one thread
//! with no shared memory, and no kernel waits for another CTA of its own grid. Step 1's kernel
//! waits for a write that is launched only after it, so nothing may block on the device
//! between the two launches: a call runs all of its host steps in one task on cubecl's device
//! thread (`super::launched`), whose steps after step 1's launch are our stream's launches
//! alone, and cubecl's thread cannot run anything else (a device-wide synchronisation, an
//! implicitly synchronising `cuMemFree`) in between. Each kernel of the call on our stream may
//! wait only for work that is already launched; a launch of ours that fails still writes
//! `done` ([`Handoff::release_on`]), so that cubecl's stream goes on.
//!
//! An SM that holds cubecl's spinning kernel did not take a CTA of the persistent Hopper
//! forward (H100, tenth session: the forward ran 1.6-1.7x slower back to back, its static
//! walk waiting for the displaced CTA; most likely the SM's shared memory carveout, which
//! changes only when the SM is idle), so handed-off persistent kernels leave one SM free
//! (`launch::SPINNER_SMS`). With the taken walk (eighteenth session) all 132 CTAs ran as fast
//! as 131 (2-D forward 479.1 against 480.3 us), so the SM left free costs nothing measurable
//! either way.
//!
//! The flags' memory comes from cubecl's pool and is not zeroed when it is created (cubecl
//! uploads the zeros on its stream), so a stream's first call, and the call that would wrap
//! the count, synchronise on the host instead ([`Handoff::next`] returns `None`), after which
//! the flags are known to hold zeros.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

use burn::tensor::{DType, Shape};
use burn_cubecl::tensor::CubeTensor;
use cubecl::cuda::CudaRuntime;
use cubecl::prelude::*;
use cubecl::stream_id::StreamId;
use cudarc::driver::sys::cuMemsetD32Async;
use cudarc::driver::{CudaContext, CudaFunction, CudaStream, LaunchConfig, PushKernelArg};
use cudarc::nvrtc::{CompileOptions, compile_ptx_with_opts};

type CudaTensor = CubeTensor<CudaRuntime>;

/// Index of the `ready` flag: cubecl's stream has run everything before call `n`.
const READY: usize = 0;
/// Index of the `done` flag: our stream has run call `n`'s kernels.
const DONE: usize = 1;

/// Step 1: `flags[READY] = call`, then returns once `flags[DONE] >= call`.
#[cube(launch)]
fn hand_over_to_native_call(flags: &mut Array<Atomic<u32>>, call: u32) {
    flags[READY].store(call);
    while flags[DONE].load() < call {}
}

/// One cubecl stream's flags and the number of native calls it has made.
struct StreamFlags {
    flags: CudaTensor,
    calls: u32,
}

/// The flags of every (device, cubecl stream) that made a native call.
fn streams() -> &'static Mutex<HashMap<(usize, StreamId), StreamFlags>> {
    static STREAMS: OnceLock<Mutex<HashMap<(usize, StreamId), StreamFlags>>> = OnceLock::new();
    STREAMS.get_or_init(Default::default)
}

/// New flags (zeros, uploaded on cubecl's stream) on `like`'s device.
fn new_flags(like: &CudaTensor) -> CudaTensor {
    let handle = like.client.create_from_slice(&[0u8; 8]);
    CudaTensor::new_contiguous(
        like.client.clone(),
        like.device.clone(),
        Shape::new([2]),
        handle,
        DType::U32,
    )
}

/// One native call's handoff: its flags (pin them with the call's buffers to get their
/// address) and its number on its cubecl stream.
pub struct Handoff {
    pub flags: CudaTensor,
    call: u32,
}

impl Handoff {
    /// The handoff of the calling thread's next native call on `like`'s device, or `None` when
    /// this call must synchronise on the host (the stream's first call, the call that would
    /// wrap the count; module docs).
    pub fn next(like: &CudaTensor) -> Option<Self> {
        let key = (like.device.index, StreamId::current());
        let mut streams = streams()
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        match streams.get_mut(&key) {
            Some(stream) if stream.calls < u32::MAX => {
                stream.calls += 1;
                Some(Self {
                    flags: stream.flags.clone(),
                    call: stream.calls,
                })
            }
            _ => {
                // New (or renewed) flags: this call's host synchronisation also completes
                // their upload. The old flags' memory goes back to cubecl's pool behind the
                // last spinning kernel that reads it, on the same stream.
                let flags = StreamFlags {
                    flags: new_flags(like),
                    calls: 0,
                };
                streams.insert(key, flags);
                None
            }
        }
    }

    /// Step 1, on cubecl's stream. Only on cubecl's device thread, in the task that then makes
    /// the call's launches on our stream (module docs): its kernel spins until
    /// [`Self::release_on`]'s write.
    pub fn hand_over(&self) {
        hand_over_to_native_call::launch::<CudaRuntime>(
            &self.flags.client,
            CubeCount::Static(1, 1, 1),
            CubeDim::new_1d(1),
            self.flags.clone().into_array_arg(),
            self.call,
        );
    }

    /// Step 2's wait, on our stream; `flags` is the flags' device address.
    pub fn wait_on(
        &self,
        stream: &CudaStream,
        kernels: &StreamKernels,
        flags: u64,
    ) -> Result<(), String> {
        kernels.launch(
            stream,
            &kernels.wait_at_least,
            flags + (READY * 4) as u64,
            self.call,
        )
    }

    /// Step 2's write, on our stream, after the call's kernels: by our store kernel, or where
    /// that cannot be launched by a memset on our stream. Errs only when neither could be
    /// enqueued: then cubecl's stream never goes past step 1's kernel.
    pub fn release_on(
        &self,
        stream: &CudaStream,
        kernels: &StreamKernels,
        flags: u64,
    ) -> Result<(), String> {
        let done = flags + (DONE * 4) as u64;
        kernels
            .launch(stream, &kernels.store, done, self.call)
            .or_else(|launch| {
                // SAFETY: `done` is the address of a pinned u32 of this device.
                unsafe { cuMemsetD32Async(done, self.call, 1, stream.cu_stream()) }
                    .result()
                    .map_err(|memset| format!("{launch}; writing the flag with a memset: {memset}"))
            })
    }
}

/// The source of [`StreamKernels`]: the flags are read with volatile loads (from L2, not
/// L1) and written with an atomic, as cubecl's side reads them (`atomicAdd(flag, 0)`).
const STREAM_KERNELS: &str = r#"
extern "C" __global__ void burn_natten_wait_at_least(const volatile unsigned int* flag,
                                                      unsigned int value) {
    while ((int)(*flag - value) < 0) {
        __nanosleep(256);
    }
}
extern "C" __global__ void burn_natten_store(unsigned int* flag, unsigned int value) {
    atomicExch(flag, value);
}
"#;

/// Our stream's side of the handoff: one-thread kernels that wait until a flag reaches a
/// value (wrapping comparison) and that store a value into a flag.
pub struct StreamKernels {
    wait_at_least: CudaFunction,
    store: CudaFunction,
}

impl StreamKernels {
    /// Compiles the kernels with NVRTC (as cubecl compiles its own) and loads them in `ctx`.
    pub fn load(ctx: &std::sync::Arc<CudaContext>) -> Result<Self, String> {
        let options = CompileOptions {
            arch: Some("compute_80"),
            ..Default::default()
        };
        let ptx = compile_ptx_with_opts(STREAM_KERNELS, options)
            .map_err(|e| format!("compiling the handoff kernels: {e}"))?;
        let module = ctx
            .load_module(ptx)
            .map_err(|e| format!("loading the handoff kernels: {e}"))?;
        let function = |name: &str| {
            module
                .load_function(name)
                .map_err(|e| format!("handoff kernel {name}: {e}"))
        };
        Ok(Self {
            wait_at_least: function("burn_natten_wait_at_least")?,
            store: function("burn_natten_store")?,
        })
    }

    /// Launches `function` (one thread) on `stream` with a flag's address and a value.
    fn launch(
        &self,
        stream: &CudaStream,
        function: &CudaFunction,
        flag: u64,
        value: u32,
    ) -> Result<(), String> {
        let mut builder = stream.launch_builder(function);
        builder.arg(&flag).arg(&value);
        // SAFETY: both kernels take (unsigned int*, unsigned int); `flag` is the address of a
        // pinned u32 of this device.
        let one_thread = LaunchConfig {
            grid_dim: (1, 1, 1),
            block_dim: (1, 1, 1),
            shared_mem_bytes: 0,
        };
        unsafe { builder.launch(one_thread) }
            .map(|_| ())
            .map_err(|e| format!("handoff kernel launch: {e}"))
    }
}
