//! The native calls' traces on stderr, for measuring the decorator (DEVELOPERS.md, "Burn
//! interop"):
//! - `BURN_NATTEN_NATIVE_TRACE=1`: every call runs by the synchronous protocol and prints the
//!   host time of each of its steps and its kernels' GPU time (CUDA events around them);
//! - `BURN_NATTEN_NATIVE_TRACE_HANDOFF=1`: calls stay handed off ([`super::handoff`]) and
//!   back to back, and each prints, once its events have completed (read at a later call,
//!   without waiting), how long our stream waited for cubecl's, its kernels' GPU time and the
//!   GPU time since the previous call's kernels ended.

use std::collections::VecDeque;
use std::sync::{Mutex, OnceLock};
use std::time::Instant;

use cudarc::driver::sys::CUevent_flags;
use cudarc::driver::{CudaEvent, CudaStream};

/// Whether the environment variable `name` is set to something other than `0`.
pub fn env_flag(name: &str) -> bool {
    std::env::var_os(name).is_some_and(|v| v != "0")
}

/// Whether the switch `name` is on where it is on by default: unless it is set to `0`.
pub fn env_flag_default_on(name: &str) -> bool {
    std::env::var_os(name).is_none_or(|v| v != "0")
}

/// Whether `BURN_NATTEN_NATIVE_TRACE` asks for the time of each step of every call.
pub fn tracing() -> bool {
    static TRACE: OnceLock<bool> = OnceLock::new();
    *TRACE.get_or_init(|| env_flag("BURN_NATTEN_NATIVE_TRACE"))
}

/// Wall-clock time in microseconds since the Unix epoch: the trace's timestamps, comparable
/// with those of a caller's own trace (`natten-profile` prints them under the same variable).
pub fn unix_us() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros())
}

/// With tracing, prints `what` with the wall-clock time (the trace's timestamps).
pub fn trace_point(what: &str) {
    if tracing() {
        eprintln!("burn-natten native: {what} at t={} us", unix_us());
    }
}

/// With `BURN_NATTEN_NATIVE_TRACE_HANDOFF`, the host's way from a call to the native code:
/// named timestamps (the trace's clock), printed with the next handed-off call's line. One list
/// for all threads (trace one calling thread), kept to [`MARKS_KEPT`] entries where no native
/// call takes them.
fn marks() -> &'static Mutex<Vec<(&'static str, u128)>> {
    static MARKS: OnceLock<Mutex<Vec<(&'static str, u128)>>> = OnceLock::new();
    MARKS.get_or_init(Default::default)
}

/// The most marks kept between two native calls.
const MARKS_KEPT: usize = 64;

/// With `BURN_NATTEN_NATIVE_TRACE_HANDOFF`, records that a call reached `what` now (on the way
/// to the native code; [`marks`]).
pub fn mark(what: &'static str) {
    if tracing_handoff() {
        let at = unix_us();
        let mut marks = marks()
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if marks.len() == MARKS_KEPT {
            marks.remove(0);
        }
        marks.push((what, at));
    }
}

/// The marks recorded since the last call, as "what +N us" from the first, up to `entered`.
fn way_in(entered: u128) -> String {
    let marks = std::mem::take(
        &mut *marks()
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()),
    );
    let Some(&(_, first)) = marks.first() else {
        return String::new();
    };
    let mut way: Vec<String> = marks
        .iter()
        .map(|(what, at)| format!("{what} +{}", at.saturating_sub(first)))
        .collect();
    way.push(format!("entered +{}", entered.saturating_sub(first)));
    format!("; way in (us): {}", way.join(", "))
}

thread_local! {
    /// The calling thread's last call: when it entered the native code (the trace's
    /// timestamps) and how long it took to make the inputs contiguous and allocate outputs.
    static PREPARED: std::cell::Cell<(u128, f64)> = const { std::cell::Cell::new((0, f64::NAN)) };
}

/// With either trace, when the call entered the native code and the time since then spent
/// making inputs contiguous and allocating outputs: printed (`BURN_NATTEN_NATIVE_TRACE`), or
/// kept for the call's handed-off line (`BURN_NATTEN_NATIVE_TRACE_HANDOFF`).
pub fn trace_prepared(entered: Instant) {
    if !(tracing() || tracing_handoff()) {
        return;
    }
    let us = entered.elapsed().as_secs_f64() * 1e6;
    let at = unix_us() - entered.elapsed().as_micros();
    if tracing_handoff() {
        PREPARED.set((at, us));
    }
    if tracing() {
        eprintln!(
            "burn-natten native: entered at t={at} us; contiguous inputs and outputs allocated in {us:.0} us"
        );
    }
}

/// An event recorded now on `stream` (a GPU timestamp) when `on`, else `None`.
fn record_if(on: bool, stream: &CudaStream) -> Option<CudaEvent> {
    on.then(|| {
        stream
            .record_event(Some(CUevent_flags::CU_EVENT_DEFAULT))
            .ok()
    })
    .flatten()
}

/// With `BURN_NATTEN_NATIVE_TRACE`, an event recorded now on `stream`, else `None`.
pub fn timestamp(stream: &CudaStream) -> Option<CudaEvent> {
    record_if(tracing(), stream)
}

/// Whether `BURN_NATTEN_NATIVE_TRACE_HANDOFF` asks for the GPU times of handed-off calls.
fn tracing_handoff() -> bool {
    static TRACE: OnceLock<bool> = OnceLock::new();
    *TRACE.get_or_init(|| env_flag("BURN_NATTEN_NATIVE_TRACE_HANDOFF"))
}

/// GPU timestamps of one handed-off call, on our stream: before the wait for cubecl's stream,
/// before the kernels and after them.
struct HandoffEvents {
    waiting: CudaEvent,
    started: CudaEvent,
    finished: CudaEvent,
    buffers: usize,
    /// When the host had launched the kernels (the trace's timestamps).
    launched_us: u128,
    /// When the call entered the native code.
    entered_us: u128,
    /// The marks on its way there ([`way_in`]).
    way_in: String,
    steps: HostSteps,
}

/// The host's steps of one handed-off call, in microseconds.
struct HostSteps {
    /// Preparing the buffers (outputs allocated, inputs made contiguous).
    prepare: f64,
    /// Pinning them and writing their pointers.
    pin: f64,
    /// Launching the handoff's kernel on cubecl's stream.
    hand_over: f64,
    /// Launching our kernels (the trace's events included).
    launch: f64,
}

/// The calls whose events have not all completed, and the end of the last reported call's
/// kernels.
struct Pending {
    calls: VecDeque<HandoffEvents>,
    last_finished: Option<CudaEvent>,
    /// Recorded right after the first traced call's kernels: the origin of the GPU times
    /// printed (the first call's start is negative).
    origin: Option<CudaEvent>,
}

fn pending() -> &'static Mutex<Pending> {
    static PENDING: OnceLock<Mutex<Pending>> = OnceLock::new();
    PENDING.get_or_init(|| {
        Mutex::new(Pending {
            calls: VecDeque::new(),
            last_finished: None,
            origin: None,
        })
    })
}

/// With `BURN_NATTEN_NATIVE_TRACE_HANDOFF`, an event recorded now on `stream`, else `None`.
pub fn handoff_timestamp(stream: &CudaStream) -> Option<CudaEvent> {
    record_if(tracing_handoff(), stream)
}

/// Queues a handed-off call's three events (`None` when not tracing handed-off calls, or when
/// an event could not be recorded), then prints every queued call whose events have completed,
/// in order.
pub fn handed_off(
    stream: &CudaStream,
    [waiting, started, finished]: [Option<CudaEvent>; 3],
    buffers: usize,
    [pinning, handing_over, handed_over]: [Instant; 3],
) {
    let (Some(waiting), Some(started), Some(finished)) = (waiting, started, finished) else {
        return;
    };
    let (entered_us, prepared) = PREPARED.get();
    let us_between = |a: Instant, b: Instant| (b - a).as_secs_f64() * 1e6;
    let steps = HostSteps {
        prepare: prepared,
        pin: us_between(pinning, handing_over),
        hand_over: us_between(handing_over, handed_over),
        launch: handed_over.elapsed().as_secs_f64() * 1e6,
    };
    let mut pending = pending()
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if pending.origin.is_none() {
        pending.origin = handoff_timestamp(stream);
    }
    pending.calls.push_back(HandoffEvents {
        waiting,
        started,
        finished,
        buffers,
        launched_us: unix_us(),
        entered_us,
        way_in: way_in(entered_us),
        steps,
    });
    let us = |a: &CudaEvent, b: &CudaEvent| a.elapsed_ms(b).map_or(f64::NAN, |ms| ms as f64 * 1e3);
    while let Some(call) = pending
        .calls
        .pop_front_if(|call| call.finished.is_complete())
    {
        let since = pending
            .last_finished
            .as_ref()
            .map_or(f64::NAN, |last| us(last, &call.started));
        let at = pending
            .origin
            .as_ref()
            .map_or(f64::NAN, |origin| us(origin, &call.started));
        eprintln!(
            "burn-natten native (handed off): {} pins, waited {:.1} us, kernels on the GPU {:.1} \
             us, {since:.1} us after the previous call's kernels; started at {at:.1} us on the \
             GPU; entered at t={} us, prepared {:.0} us, pinned {:.0} us, handed over {:.0} us, \
             launched {:.0} us, at t={} us{}",
            call.buffers,
            us(&call.waiting, &call.started),
            us(&call.started, &call.finished),
            call.entered_us,
            call.steps.prepare,
            call.steps.pin,
            call.steps.hand_over,
            call.steps.launch,
            call.launched_us,
            call.way_in,
        );
        pending.last_finished = Some(call.finished);
    }
}
