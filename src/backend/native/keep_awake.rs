//! Keeping cubecl's device thread awake while a handed-off call's kernels run.
//!
//! cubecl 0.10 runs each device's requests on one thread ([`DeviceHandle`]). Idle, that thread
//! spins, then yields, then sleeps in steps of 150 us (`SLEEP_STEP_SERVER` in cubecl-common's
//! channel), and nothing wakes it early: a request that arrives while it sleeps waits for the
//! step to end, 150 us plus the timer's slack (~200 us in all) at worst. A native call's host
//! steps run on that thread (`super::launched`), so a call made after the device thread went
//! idle (for instance after a host sync that waited for a call's kernels: the sync's waiting is
//! done on the calling thread) starts late by that wait.
//!
//! So while a handed-off call's kernels run, and for [`GRACE`] after, a thread of ours submits
//! a no-op task to the device thread every [`PERIOD`] (each task resets its idle count, so it
//! never reaches the sleeping phase). `BURN_NATTEN_NATIVE_KEEP_AWAKE=0` turns this off.

use std::collections::HashMap;
use std::sync::{Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

use cubecl::cuda::CudaDevice;
use cubecl::device::{Device, DeviceId};
use cubecl::device_handle::DeviceHandle;
use cudarc::driver::sys::CUevent_flags;
use cudarc::driver::{CudaEvent, CudaStream};

use super::CudaServer;
use super::trace::env_flag_default_on;

/// How often the device thread gets a no-op task: well inside the spinning phase of its idle
/// loop (8192 spins and 64 yields before it sleeps).
const PERIOD: Duration = Duration::from_micros(20);

/// How long the device thread is kept awake after the last watched call's kernels ended: the
/// caller's next request (its next call, or the work after a host sync) comes within it.
const GRACE: Duration = Duration::from_micros(500);

/// Whether calls keep cubecl's device thread awake (module docs): unless
/// `BURN_NATTEN_NATIVE_KEEP_AWAKE=0`.
fn enabled() -> bool {
    static ON: OnceLock<bool> = OnceLock::new();
    *ON.get_or_init(|| env_flag_default_on("BURN_NATTEN_NATIVE_KEEP_AWAKE"))
}

/// The last handed-off call of a device: an event recorded after its kernels, and when the
/// keeping thread first saw it completed.
struct Call {
    done: CudaEvent,
    ended: Option<Instant>,
}

/// The calls being watched, one per device.
struct Watched {
    calls: Mutex<HashMap<DeviceId, Call>>,
    added: Condvar,
}

fn watched() -> &'static Watched {
    static WATCHED: OnceLock<Watched> = OnceLock::new();
    WATCHED.get_or_init(|| {
        let spawned = std::thread::Builder::new()
            .name("burn-natten-keep-awake".into())
            .spawn(keep_awake);
        if let Err(e) = spawned {
            eprintln!("burn-natten: no thread to keep cubecl's device thread awake ({e})");
        }
        Watched {
            calls: Mutex::new(HashMap::new()),
            added: Condvar::new(),
        }
    })
}

/// Keeps `device`'s cubecl thread awake until the kernels launched so far on `stream` have
/// run, and [`GRACE`] after (module docs).
pub fn until_done(device: &CudaDevice, stream: &CudaStream) {
    if !enabled() {
        return;
    }
    let Ok(done) = stream.record_event(Some(CUevent_flags::CU_EVENT_DISABLE_TIMING)) else {
        return; // Only a delay is at stake.
    };
    let watched = watched();
    watched
        .calls
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .insert(device.to_id(), Call { done, ended: None });
    watched.added.notify_one();
}

/// The keeping thread: pings each watched device's cubecl thread every [`PERIOD`] until its
/// call's kernels ended [`GRACE`] ago; sleeps while nothing is watched.
fn keep_awake() {
    let watched = watched();
    loop {
        let devices: Vec<DeviceId> = {
            let mut calls = watched
                .calls
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            while calls.is_empty() {
                calls = watched
                    .added
                    .wait(calls)
                    .unwrap_or_else(|poisoned| poisoned.into_inner());
            }
            let now = Instant::now();
            calls.retain(|_, call| match call.ended {
                Some(ended) => now - ended < GRACE,
                None => {
                    if call.done.is_complete() {
                        call.ended = Some(now);
                    }
                    true
                }
            });
            calls.keys().copied().collect()
        };
        for device in devices {
            let handle = DeviceHandle::<CudaServer>::new(device);
            handle.submit(|_: &mut CudaServer| ());
            handle.flush_queue();
        }
        let pinged = Instant::now();
        while pinged.elapsed() < PERIOD {
            std::thread::yield_now();
        }
    }
}
