//! Quickstart: 2-D neighborhood attention on the default device (Wgpu when an adapter exists,
//! else NdArray), checked against the reference path on NdArray.
//!
//! Run with `cargo run --release --example quickstart`.

use std::time::Instant;

use burn::backend::{NdArray, Wgpu};
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};
use burn_natten::{NaBackend, NaOptions, NattenBackend, na2d};

const SHAPE: [usize; 5] = [1, 32, 32, 4, 32]; // [batch, height, width, heads, head_dim]

/// Deterministic inputs (a cheap hash), so both devices see the same values.
fn input(seed: u32) -> Vec<f32> {
    (0..SHAPE.iter().product::<usize>() as u32)
        .map(|i| {
            let h =
                (i.wrapping_mul(2654435761) ^ seed.wrapping_mul(40503)).wrapping_mul(2246822519);
            (h >> 8) as f32 / (1u32 << 24) as f32 * 2.0 - 1.0
        })
        .collect()
}

/// Runs `na2d` on backend `B`; returns the output values and the time of the timed call.
fn run<B: NattenBackend>(device: &B::Device, opts: &NaOptions<2>) -> (Vec<f32>, f64) {
    let t = |seed| Tensor::<B, 5>::from_data(TensorData::new(input(seed), SHAPE), device);
    let (q, k, v) = (t(1), t(2), t(3));
    // Warm-up: the first call compiles kernels on GPU backends.
    let _ = na2d(q.clone(), k.clone(), v.clone(), opts)
        .expect("valid problem")
        .into_data();
    B::sync(device).expect("device sync");
    let start = Instant::now();
    // ANCHOR: main_call
    let out = na2d(q, k, v, opts).expect("valid problem");
    // ANCHOR_END: main_call
    B::sync(device).expect("device sync");
    let elapsed = start.elapsed().as_secs_f64();
    println!("  input  q/k/v {SHAPE:?}\n  output {:?}", out.dims());
    (
        out.into_data().convert::<f32>().to_vec().expect("f32 data"),
        elapsed,
    )
}

/// Whether wgpu finds an adapter (a missing one makes Burn panic on first use).
fn wgpu_adapter_available() -> bool {
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let ok = std::panic::catch_unwind(|| {
        Tensor::<Wgpu, 1>::from_data([1.0f32], &Default::default()).into_scalar()
    })
    .is_ok();
    std::panic::set_hook(hook);
    ok
}

fn main() {
    let opts = NaOptions::new([7, 7])
        .with_dilation([2, 2])
        .with_causal([false, true]);
    println!("burn-natten quickstart: na2d, kernel 7x7, dilation 2x2, causal on the second axis");

    let (out, elapsed, device_name) = if wgpu_adapter_available() {
        let device = Default::default();
        let name = <Wgpu as Backend>::name(&device);
        println!("device: {name}");
        let (out, t) = run::<Wgpu>(&device, &opts);
        (out, t, name)
    } else {
        println!("device: NdArray (no wgpu adapter found)");
        let (out, t) = run::<NdArray>(&Default::default(), &opts);
        (out, t, "ndarray".into())
    };
    println!("  time   {:.3} ms on {device_name}", elapsed * 1e3);

    println!("reference: NdArray, NaBackend::Reference");
    let (want, _) = run::<NdArray>(
        &Default::default(),
        &opts.with_backend(NaBackend::Reference),
    );
    let max_err = out
        .iter()
        .zip(&want)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    println!("max |out - reference| = {max_err:.3e}");
    assert!(
        max_err < 1e-4,
        "the default device disagrees with the reference"
    );
    println!("ok");
}
