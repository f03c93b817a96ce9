//! The native CUDA kernels (feature `cuda-native`, with `test-cuda`), run on the GPU machine
//! through burn-cuda. Where the native kernels cannot run (no CUDA driver, compute capability
//! below 8.0), every test prints SKIPPED and passes.
//!
//! Tolerances are those of the f16/bf16 sweeps in [`crate::half`] (f16: 1e-3 + 2e-3 relative;
//! bf16: 8e-3 + 1.6e-2 relative) against the f32 fused path on the same rounded inputs: the
//! native forward rounds `P` to the input dtype before `P V`, as the tensor-core path does.

use burn::backend::{Autodiff, Cuda};
use burn::tensor::{DType, Distribution, Tensor};
use burn_natten::natten_core::AxisParams;
use burn_natten::{
    AttentionOptions, NaBackend, NaOptions, NattenError, TileConfig, attention,
    na_backward_tile_configs, na_tile_configs, na1d, na2d, na2d_with_extra_kv, na3d,
};
use rand::Rng;

use crate::attention::{FmhaCase, run_fmha};
use crate::common::*;
use crate::golden;
use crate::half::{round_bf16, round_f16};
use crate::sweeps::{Inputs, Problem, compare, run};

fn native_unavailable() -> bool {
    match burn_natten::cuda_native_status(0) {
        Ok(()) => false,
        Err(why) => {
            eprintln!("SKIPPED: native CUDA tests: {why}");
            true
        }
    }
}

type Rounding = fn(&[f32]) -> Vec<f32>;
const HALF: [(DType, f32, f32, Rounding); 2] = [
    (DType::F16, 1e-3, 2e-3, round_f16),
    (DType::BF16, 8e-3, 1.6e-2, round_bf16),
];

/// Native (`CudaFna`) in f16/bf16 against the reference in f32 on NdArray (the CPU path the
/// golden cases check) on the same rounded inputs: output, LSE, and the gradients (the
/// portable backward fed the native `out`/`lse`).
fn check_against_f32(p: &Problem) {
    let device = Default::default();
    for (dtype, atol, rtol, round) in HALF {
        let mut x = Inputs::random(p);
        for v in [&mut x.q, &mut x.k, &mut x.v, &mut x.d_out] {
            *v = round(v);
        }
        let reference = Problem {
            backend: NaBackend::Reference,
            ..p.clone()
        };
        let want = run::<Autodiff<Cpu>>(&reference, &x, DType::F32, &Default::default(), false);
        let got = run::<Autodiff<Cuda>>(p, &x, dtype, &device, false);
        compare(p, &got, &want, atol, rtol);
    }
}

/// Random small problems (ranks 1-3, even and odd kernels, stride, dilation, causal axes, GQA,
/// extra KV tokens in a third of them), with every supported class of head dim for Q/K and for
/// V, equal or not: multiples of 8 below, at and between the compiled kernels' head dims (32,
/// 64, 128, 256).
#[test]
fn native_sweeps_match_f32() {
    if native_unavailable() {
        return;
    }
    let dims = [8, 16, 24, 32, 40, 64, 96, 128, 200, 256];
    for seed in 0..30u64 {
        let d = dims[seed as usize % dims.len()];
        let d_v = if seed % 3 == 0 {
            d
        } else {
            dims[(seed as usize * 7 + 3) % 8]
        };
        let p = Problem {
            head_dim: d,
            head_dim_v: d_v,
            backend: NaBackend::CudaFna,
            ..Problem::random(seed)
        };
        check_against_f32(&p);
    }
}

/// Attention (FMHA) natively: causal or not, Q and KV lengths that differ (one tile to several,
/// partial tiles), GQA, head dims of Q/K and V that differ, against the f32 reference on the
/// same rounded inputs (output, LSE and the gradients through the native backward).
#[test]
fn native_fmha_matches_f32() {
    if native_unavailable() {
        return;
    }
    let dims = [32, 64, 128, 24, 96];
    for seed in 0..16u64 {
        let mut r = rng(seed ^ 0xf4);
        let (b, sq, skv) = (
            r.random_range(1..=2),
            r.random_range(1..=300),
            r.random_range(1..=300),
        );
        let (hkv, g) = (r.random_range(1..=2), r.random_range(1..=3));
        let (d, dv) = (dims[seed as usize % 5], dims[(seed as usize / 2) % 5]);
        let causal = seed % 2 == 1;
        let shapes = [
            [b, sq, hkv * g, d],
            [b, skv, hkv, d],
            [b, skv, hkv, dv],
            [b, sq, hkv * g, dv],
        ];
        let what = format!("seed {seed}: b {b} sq {sq} skv {skv} hkv {hkv} g {g} d {d} dv {dv}");
        check_fmha_against_f32(&what, shapes, causal, &mut r);
    }
}

/// Attention of `shapes` (Q, K, V, dO) natively against the f32 reference on the same rounded
/// random inputs, in each half type: output, LSE and the gradients through the native backward.
fn check_fmha_against_f32(
    what: &str,
    shapes: [[usize; 4]; 4],
    causal: bool,
    r: &mut rand::rngs::SmallRng,
) {
    let device = Default::default();
    for (dtype, atol, rtol, round) in HALF {
        let values = shapes.map(|s| round(&normal(s.iter().product(), r)));
        let case = |backend| FmhaCase {
            what: format!("{what} causal {causal} {dtype:?}"),
            shapes,
            values: values.clone(),
            causal,
            scale: None,
            backend,
        };
        let (native, reference) = (case(NaBackend::CudaFna), case(NaBackend::Reference));
        let want = run_fmha::<Autodiff<Cpu>>(&reference, DType::F32, &Default::default(), false);
        let got = run_fmha::<Autodiff<Cuda>>(&native, dtype, &device, false);
        for (name, (a, b)) in ["out", "lse", "dq", "dk", "dv"]
            .iter()
            .zip(got.iter().zip(&want))
        {
            assert_close(&format!("{name} of {}", native.what), a, b, atol, rtol);
        }
    }
}

fn axis(kernel_size: usize, stride: usize, dilation: usize, causal: bool) -> AxisParams {
    AxisParams {
        kernel_size,
        stride,
        dilation,
        causal,
    }
}

/// Problems large enough for many KV tiles per Q tile, full tiles (the unmasked fast path) next
/// to partial ones, padded Q tiles and dilation groups of different lengths.
#[test]
fn native_large_problems_match_f32() {
    if native_unavailable() {
        return;
    }
    let problem = |seed, spatial: Vec<usize>, axes, heads_kv, group, d| Problem {
        seed,
        batch: 2,
        spatial,
        axes,
        heads_kv,
        group,
        head_dim: d,
        head_dim_v: d,
        extra: 0,
        scale: None,
        backend: NaBackend::CudaFna,
    };
    let problems = [
        problem(1, vec![1000], vec![axis(63, 1, 1, false)], 1, 2, 64),
        problem(2, vec![777], vec![axis(100, 3, 2, true)], 2, 1, 128),
        problem(
            3,
            vec![40, 36],
            vec![axis(13, 1, 2, false), axis(9, 2, 1, false)],
            1,
            1,
            32,
        ),
        problem(
            4,
            vec![33, 47],
            vec![axis(7, 1, 1, true), axis(8, 1, 1, true)],
            2,
            2,
            128,
        ),
        problem(
            5,
            vec![10, 12, 14],
            vec![
                axis(5, 1, 1, false),
                axis(3, 1, 2, false),
                axis(7, 2, 1, true),
            ],
            1,
            1,
            64,
        ),
        problem(6, vec![300], vec![axis(31, 1, 3, false)], 1, 1, 256),
        // 1-D windows of 256 keys or more at head dim 128: the Hopper forward's wide form.
        problem(7, vec![1500], vec![axis(300, 1, 1, true)], 1, 2, 128),
        problem(8, vec![1100], vec![axis(257, 2, 2, false)], 2, 1, 128),
    ];
    for p in &problems {
        check_against_f32(p);
    }
    // Extra KV tokens (more than one KV tile of them) and head dims of V that differ from Q/K.
    let with = |p: Problem, extra, head_dim_v| Problem {
        extra,
        head_dim_v,
        ..p
    };
    let [a, _, c, d, _, _, g, _] = problems;
    check_against_f32(&with(a, 100, 32));
    check_against_f32(&with(c, 17, 64));
    check_against_f32(&with(d, 1, 128));
    check_against_f32(&with(g, 130, 64));
}

/// Head dim 128 with V's equal to it: on an H100 with `BURN_NATTEN_NATIVE_FUSED_BACKWARD=1` the
/// backward runs the fused Hopper kernel (kernels/fna_backward_fused_dq_sm90.cuh: dQ by f32
/// reduce-adds from the dK/dV pass), else the dQ and dK/dV passes (run it both ways). Small random
/// problems (ranks 1-3, stride, dilation, causal axes, GQA, extra KV tokens) and larger ones
/// with full and partial steps, each sub-tile of a 128-key pair active alone, and padding.
#[test]
fn native_fused_backward_matches_f32() {
    if native_unavailable() {
        return;
    }
    for seed in 100..118u64 {
        let p = Problem {
            head_dim: 128,
            head_dim_v: 128,
            backend: NaBackend::CudaFna,
            ..Problem::random(seed)
        };
        check_against_f32(&p);
    }
    let problem = |seed, spatial: Vec<usize>, axes, heads_kv, group| Problem {
        seed,
        batch: 2,
        spatial,
        axes,
        heads_kv,
        group,
        head_dim: 128,
        head_dim_v: 128,
        extra: 0,
        scale: None,
        backend: NaBackend::CudaFna,
    };
    for p in [
        problem(11, vec![700], vec![axis(65, 1, 1, false)], 2, 2),
        problem(
            12,
            vec![40, 44],
            vec![axis(13, 1, 1, false), axis(9, 2, 2, true)],
            1,
            3,
        ),
        problem(
            13,
            vec![6, 12, 20],
            vec![
                axis(3, 1, 1, true),
                axis(5, 1, 2, false),
                axis(7, 3, 1, false),
            ],
            1,
            1,
        ),
        problem(
            14,
            vec![37, 29],
            vec![axis(31, 1, 1, false), axis(4, 1, 1, false)],
            1,
            1,
        ),
    ] {
        check_against_f32(&p);
    }
    // Attention (FMHA) through the same pass: Q and KV lengths that differ, causal or not.
    for (seed, sq, skv, causal) in [(1u64, 200, 170, false), (2, 130, 260, true)] {
        let shapes = [
            [2, sq, 4, 128],
            [2, skv, 2, 128],
            [2, skv, 2, 128],
            [2, sq, 4, 128],
        ];
        let what = format!("fused FMHA sq {sq} skv {skv}");
        check_fmha_against_f32(&what, shapes, causal, &mut rng(seed ^ 0xf5));
    }
}

/// NATTEN's golden cases that the native kernels take (NA, head dims multiples of 8), in f16 with NATTEN's own f16 tolerance (1e-2 relative to the values'
/// magnitude, as [`crate::half`]'s f16 golden test).
#[test]
fn native_golden_f16() {
    if native_unavailable() {
        return;
    }
    let device = Default::default();
    let tol = golden::Tolerance {
        atol: 1e-2,
        rtol: 1e-2,
    };
    let mut ran = 0;
    for case in golden::cases() {
        if case.params["op"].as_str() != Some("na") {
            continue;
        }
        let (p, _) = golden::na_problem(&case, NaBackend::CudaFna);
        if p.head_dim % 8 != 0 || p.head_dim_v % 8 != 0 {
            continue;
        }
        golden::run_case::<Autodiff<Cuda>>(&case, &device, DType::F16, tol, NaBackend::CudaFna);
        ran += 1;
    }
    eprintln!("native golden: {ran} cases");
    assert!(ran >= 10, "only {ran} golden cases ran natively");
}

fn inputs_2d(dtype: DType, d: usize) -> [Tensor<Cuda, 5>; 3] {
    let device = Default::default();
    let t = || {
        Tensor::<Cuda, 5>::random([2, 24, 20, 4, d], Distribution::Normal(0.0, 1.0), &device)
            .cast(dtype)
    };
    [t(), t(), t()]
}

/// `Auto` runs the native kernels where they apply: its output equals `CudaFna`'s bit for bit
/// (the native kernel is deterministic; the portable kernels round differently).
#[test]
fn native_auto_picks_native() {
    if native_unavailable() {
        return;
    }
    let [q, k, v] = inputs_2d(DType::BF16, 64);
    let opts = NaOptions::new([7, 5]).with_dilation([2, 1]);
    let auto = na2d(q.clone(), k.clone(), v.clone(), &opts).unwrap();
    let native = na2d(
        q.clone(),
        k.clone(),
        v.clone(),
        &opts.with_backend(NaBackend::CudaFna),
    )
    .unwrap();
    let portable = na2d(q, k, v, &opts.with_backend(NaBackend::CubeFna)).unwrap();
    let (auto, native, portable) = (values(auto), values(native), values(portable));
    assert_eq!(auto, native, "Auto did not run the native kernel");
    assert_ne!(
        native, portable,
        "native and portable paths agree bit for bit: suspicious"
    );
}

/// Interleaves Burn ops (queued on cubecl's stream) and native calls (on our stream) for
/// thousands of iterations, with allocations freed and reused around every call: any gap in
/// the handoff (the default) or the synchronous protocol (`BURN_NATTEN_NATIVE_HANDOFF=0`) shows
/// as an output that differs from the first one. The device runs take both.
#[test]
fn native_stress_interleaves_with_burn_ops() {
    if native_unavailable() {
        return;
    }
    let device = Default::default();
    let [q0, k0, v0] = inputs_2d(DType::BF16, 64);
    let opts = NaOptions::new([7, 7]).with_backend(NaBackend::CudaFna);
    let baseline = na2d(q0.clone(), k0.clone(), v0.clone(), &opts).unwrap();
    let mut drift = Tensor::<Cuda, 1>::zeros([1], &device);
    let iterations = 3000;
    for i in 0..iterations {
        // exact in bf16: scaling by powers of two, double negation, adding zeros
        let q = (q0.clone() * 4.0) * 0.25;
        let k = k0.clone().neg().neg();
        let scratch = Tensor::<Cuda, 1>::random(
            [1 << (10 + i % 8)],
            Distribution::Uniform(0.0, 1.0),
            &device,
        );
        let v = v0.clone() + Tensor::zeros_like(&v0);
        let out = na2d(q, k, v, &opts).unwrap();
        let diff = (out - baseline.clone())
            .cast(DType::F32)
            .abs()
            .sum()
            .reshape([1]);
        drift = drift + diff + scratch.sum().reshape([1]) * 0.0;
    }
    let drift = values(drift)[0];
    assert_eq!(
        drift, 0.0,
        "outputs drifted over {iterations} interleaved calls"
    );
}

/// The protocol under training: forward and backward (`Autodiff<Cuda>`) on two threads at
/// once (two cubecl streams, each with its own handoff flags and no host wait between
/// iterations; or, with `BURN_NATTEN_NATIVE_HANDOFF=0`, host waits), the inputs and gradients
/// dropped right after use (their memory reused by the next iteration's tensors). Every
/// iteration's gradients must equal the first's bit for bit.
#[test]
fn native_protocol_trains_on_two_threads() {
    if native_unavailable() {
        return;
    }
    let iterations = 400;
    let run = move || {
        let device = Default::default();
        let [q0, k0, v0] = inputs_2d(DType::BF16, 64);
        let d_out = Tensor::<Autodiff<Cuda>, 5>::from_inner(inputs_2d(DType::BF16, 64)[0].clone());
        let opts = NaOptions::new([5, 7]).with_backend(NaBackend::CudaFna);
        let grads = |scale: f32| {
            let ad = |t: &Tensor<Cuda, 5>| {
                Tensor::<Autodiff<Cuda>, 5>::from_inner(t.clone() * scale * (1.0 / scale))
                    .require_grad()
            };
            let (q, k, v) = (ad(&q0), ad(&k0), ad(&v0));
            let out = na2d(q.clone(), k.clone(), v.clone(), &opts).unwrap();
            let g = (out * d_out.clone()).sum().backward();
            [&q, &k, &v].map(|t| t.grad(&g).unwrap())
        };
        let first = grads(1.0);
        let mut drift = Tensor::<Cuda, 1>::zeros([1], &device);
        for i in 0..iterations {
            // exact in bf16: scaling by a power of two and back
            let got = grads((1u32 << (i % 4)) as f32);
            for (got, want) in got.into_iter().zip(&first) {
                let diff = (got - want.clone())
                    .cast(DType::F32)
                    .abs()
                    .sum()
                    .reshape([1]);
                drift = drift + diff;
            }
        }
        values(drift)[0]
    };
    let threads: Vec<_> = (0..2).map(|_| std::thread::spawn(run)).collect();
    for (i, thread) in threads.into_iter().enumerate() {
        let drift = thread.join().expect("thread panicked");
        assert_eq!(
            drift, 0.0,
            "thread {i}: gradients drifted over {iterations} iterations"
        );
    }
}

/// What the native kernels do not take is a clear `Unsupported` error with `CudaFna`.
#[test]
fn native_unsupported_calls_are_errors() {
    if native_unavailable() {
        return;
    }
    let device = Default::default();
    let unsupported = |r: Result<(), NattenError>, what: &str| match r {
        Err(NattenError::Unsupported { backend, reason }) => {
            assert_eq!(backend, "cuda-fna");
            assert!(reason.contains(what), "{reason}");
        }
        other => panic!("expected Unsupported ({what}), got {other:?}"),
    };
    let opts = NaOptions::new([5, 5]).with_backend(NaBackend::CudaFna);
    let [q, k, v] = inputs_2d(DType::F32, 64);
    unsupported(na2d(q, k, v, &opts).map(|_| ()), "dtype");
    let [q, k, _] = inputs_2d(DType::BF16, 64);
    let [_, _, v] = inputs_2d(DType::BF16, 20);
    let extra = |d| Tensor::<Cuda, 4>::zeros([2, 3, 4, d], &device).cast(DType::BF16);
    unsupported(
        na2d_with_extra_kv(q, k, v, extra(64), extra(20), &opts).map(|_| ()),
        "head_dim_v 20",
    );
    let [q, k, v] = inputs_2d(DType::BF16, 20);
    unsupported(na2d(q, k, v, &opts).map(|_| ()), "head_dim 20");
    let q = Tensor::<Cuda, 4>::zeros([1, 8, 2, 64], &device);
    let native = AttentionOptions::new().with_backend(NaBackend::CudaFna);
    unsupported(
        attention(q.clone(), q.clone(), q.clone(), &native).map(|_| ()),
        "dtype",
    );
    let q = q.cast(DType::BF16);
    unsupported(
        attention(q.clone(), q.clone(), q, &native.with_scale(-1.0)).map(|_| ()),
        "positive scale",
    );
}

/// The backward's tile configurations (`na_backward_tile_configs`, `with_backward_tiles`):
/// several Q/KV tile shapes give the reference's gradients; one outside the list is an error
/// naming `backward_tiles`.
#[test]
fn native_backward_tile_configurations_match_reference() {
    if native_unavailable() {
        return;
    }
    let device = Default::default();
    let configs = na_backward_tile_configs::<Cuda>(&device, 2, 64, 64, DType::BF16);
    assert_eq!(
        configs.len(),
        49,
        "7 Q tiles x 7 KV tiles of 64 on two axes"
    );
    let p = Problem {
        seed: 9,
        batch: 1,
        spatial: vec![24, 20],
        axes: vec![axis(7, 1, 2, false), axis(9, 2, 1, true)],
        heads_kv: 2,
        group: 2,
        head_dim: 64,
        head_dim_v: 64,
        extra: 0,
        scale: None,
        backend: NaBackend::Reference,
    };
    let mut x = Inputs::random(&p);
    for v in [&mut x.q, &mut x.k, &mut x.v, &mut x.d_out] {
        *v = round_bf16(v);
    }
    let want = run::<Autodiff<Cpu>>(&p, &x, DType::F32, &Default::default(), false);
    let [q, k, v] = [(&x.q, 4), (&x.k, 2), (&x.v, 2)].map(|(t, h)| {
        tensor::<Autodiff<Cuda>, 5>(t.clone(), [1, 24, 20, h, 64], DType::BF16, &device)
            .require_grad()
    });
    let d_out =
        tensor::<Autodiff<Cuda>, 5>(x.d_out.clone(), [1, 24, 20, 4, 64], DType::BF16, &device);
    let opts = NaOptions::new([7, 9])
        .with_dilation([2, 1])
        .with_stride([1, 2])
        .with_causal([false, true])
        .with_backend(NaBackend::CudaFna);
    for (q_tile, kv_tile) in [([8, 8], [8, 8]), ([2, 32], [16, 4]), ([64, 1], [1, 64])] {
        let o = opts.with_backward_tiles(q_tile, kv_tile);
        let out = na2d(q.clone(), k.clone(), v.clone(), &o).unwrap();
        let grads = (out * d_out.clone()).sum().backward();
        for (name, t, want) in [
            ("dq", &q, &want[2]),
            ("dk", &k, &want[3]),
            ("dv", &v, &want[4]),
        ] {
            let got = values(t.grad(&grads).unwrap());
            assert_close(
                &format!("{name} with tiles {q_tile:?} {kv_tile:?}"),
                &got,
                want,
                8e-3,
                1.6e-2,
            );
        }
    }
    let bad = na2d(
        q.clone(),
        k.clone(),
        v.clone(),
        &opts.with_backward_tiles([4, 4], [8, 8]),
    );
    match bad {
        Err(NattenError::InvalidArgument { argument, .. }) => {
            assert_eq!(argument, "backward_tiles")
        }
        other => panic!(
            "expected InvalidArgument on backward_tiles, got {:?}",
            other.map(|_| ())
        ),
    }
}

/// The head-dim-256 backward (the dQ pass, then separate dK and dV passes) natively, where the
/// device gives a CTA its 129 KiB of shared memory (A100, H100; SM86/89 run the portable
/// backward, and this test says SKIPPED there): ranks 1-3, causal, stride, dilation, GQA,
/// partial tiles, V head dims that differ, extra KV tokens, against the f32 reference.
#[test]
fn native_backward_head_dim_256_matches_f32() {
    if native_unavailable() {
        return;
    }
    let device = Default::default();
    if na_backward_tile_configs::<Cuda>(&device, 1, 256, 256, DType::BF16).is_empty() {
        eprintln!(
            "SKIPPED: this device gives a CTA less than the 129 KiB of shared memory of the \
             head-dim-256 native backward"
        );
        return;
    }
    let problem = |seed, spatial: Vec<usize>, axes, group, (head_dim, head_dim_v), extra| Problem {
        seed,
        batch: 1,
        spatial,
        axes,
        heads_kv: 2,
        group,
        head_dim,
        head_dim_v,
        extra,
        scale: None,
        backend: NaBackend::CudaFna,
    };
    let problems = [
        problem(21, vec![300], vec![axis(47, 2, 2, true)], 2, (256, 256), 0),
        problem(
            22,
            vec![20, 26],
            vec![axis(7, 1, 2, false), axis(9, 2, 1, true)],
            1,
            (256, 136),
            0,
        ),
        problem(
            23,
            vec![6, 10, 12],
            vec![
                axis(3, 1, 1, false),
                axis(5, 1, 2, false),
                axis(4, 2, 1, true),
            ],
            2,
            (200, 256),
            9,
        ),
    ];
    for p in &problems {
        check_against_f32(p);
    }
}

/// Both forward kernels (128- and 64-query tiles) through explicit tile configurations, against
/// the reference in f32 on the same bf16 inputs (bf16 tolerance of the sweeps).
#[test]
fn native_tile_configurations_match_reference() {
    if native_unavailable() {
        return;
    }
    let [q, k, v] = inputs_2d(DType::BF16, 64);
    let opts = NaOptions::new([7, 9])
        .with_dilation([2, 1])
        .with_causal([false, true]);
    let f32 = |t: &Tensor<Cuda, 5>| t.clone().cast(DType::F32);
    let want = na2d(
        f32(&q),
        f32(&k),
        f32(&v),
        &opts.with_backend(NaBackend::Reference),
    )
    .unwrap();
    let want = values(want);
    let configs = [
        ([8, 16], [8, 8]),
        ([2, 64], [16, 4]),
        ([8, 8], [4, 16]),
        ([1, 64], [64, 1]),
    ];
    for (q_tile, kv_tile) in configs {
        let o = opts
            .with_backend(NaBackend::CudaFna)
            .with_tiles(q_tile, kv_tile);
        let got = values(na2d(q.clone(), k.clone(), v.clone(), &o).unwrap());
        assert_close(
            &format!("tiles {q_tile:?} {kv_tile:?}"),
            &got,
            &want,
            8e-3,
            1.6e-2,
        );
    }
}

/// The Hopper forward's wide form (128-key KV tiles, head dim 128) through explicit tile
/// configurations on ranks 1-3, with stride, dilation, causal axes and GQA, against the
/// reference in f32 on the same bf16 inputs (bf16 tolerance of the sweeps). The defaults take
/// it for attention and 1-D windows of 256 keys or more (`native_fmha_matches_f32`,
/// `native_large_problems_match_f32`).
#[test]
fn native_wide_kv_tiles_match_reference() {
    if native_unavailable() {
        return;
    }
    let device = Default::default();
    let wide = |rank: usize| {
        na_tile_configs::<Cuda>(&device, rank, 128, 128, DType::BF16)
            .into_iter()
            .filter(|c| c.kv_tile.iter().product::<usize>() == 128)
            .collect::<Vec<TileConfig>>()
    };
    if wide(1).is_empty() {
        eprintln!("SKIPPED: the wide Hopper forward (128-key tiles) needs compute capability 9.0");
        return;
    }
    let random = |shape: Vec<usize>| {
        let n = shape.iter().product();
        let mut rng = rand::rng();
        let values: Vec<f32> = (0..n).map(|_| rng.random_range(-1.0..1.0)).collect();
        (round_bf16(&values), shape)
    };
    let flat = |(values, _): &(Vec<f32>, Vec<usize>), dtype: DType| {
        Tensor::<Cuda, 1>::from_floats(values.as_slice(), &device).cast(dtype)
    };
    // (spatial, window, stride, dilation, causal, Q tile, KV tile), heads 4 over 2 KV heads.
    type Case = (
        Vec<usize>,
        Vec<usize>,
        Vec<usize>,
        Vec<usize>,
        Vec<bool>,
        Vec<usize>,
        Vec<usize>,
    );
    let cases: [Case; 5] = [
        (
            vec![700],
            vec![300],
            vec![1],
            vec![1],
            vec![true],
            vec![128],
            vec![128],
        ),
        (
            vec![900],
            vec![257],
            vec![3],
            vec![2],
            vec![false],
            vec![128],
            vec![128],
        ),
        (
            vec![40, 36],
            vec![13, 9],
            vec![1, 2],
            vec![2, 1],
            vec![false, true],
            vec![8, 16],
            vec![8, 16],
        ),
        (
            vec![33, 47],
            vec![31, 31],
            vec![1, 1],
            vec![1, 1],
            vec![false, false],
            vec![8, 16],
            vec![16, 8],
        ),
        (
            vec![10, 16, 14],
            vec![5, 7, 7],
            vec![1, 1, 2],
            vec![1, 2, 1],
            vec![true, false, false],
            vec![4, 4, 8],
            vec![2, 8, 8],
        ),
    ];
    for (spatial, window, stride, dilation, causal, q_tile, kv_tile) in cases {
        let rank = spatial.len();
        let config = TileConfig {
            q_tile: q_tile.clone(),
            kv_tile: kv_tile.clone(),
        };
        assert!(
            wide(rank).contains(&config),
            "{config:?} is a wide configuration"
        );
        let shape = |heads| [vec![2], spatial.clone(), vec![heads, 128]].concat();
        let [q, k, v] = [random(shape(4)), random(shape(2)), random(shape(2))];
        // The call at rank $r (tensors of rank $d = $r + 3) in f32 on the reference and in bf16
        // with the wide tiles.
        macro_rules! both {
            ($na:ident, $r:literal, $d:literal) => {{
                let arr = |v: &Vec<usize>| -> [usize; $r] { v.as_slice().try_into().unwrap() };
                let opts = NaOptions::new(arr(&window))
                    .with_stride(arr(&stride))
                    .with_dilation(arr(&dilation))
                    .with_causal(causal.as_slice().try_into().unwrap());
                let call = |dtype, opts: &NaOptions<$r>| {
                    let t = |x: &(Vec<f32>, Vec<usize>)| {
                        let dims: [usize; $d] = x.1.as_slice().try_into().unwrap();
                        flat(x, dtype).reshape(dims)
                    };
                    values($na(t(&q), t(&k), t(&v), opts).unwrap())
                };
                let want = call(DType::F32, &opts.with_backend(NaBackend::Reference));
                let tiled = opts
                    .with_backend(NaBackend::CudaFna)
                    .with_tiles(arr(&q_tile), arr(&kv_tile));
                (call(DType::BF16, &tiled), want)
            }};
        }
        let (got, want) = match rank {
            1 => both!(na1d, 1, 4),
            2 => both!(na2d, 2, 5),
            _ => both!(na3d, 3, 6),
        };
        assert_close(
            &format!("wide tiles {spatial:?} window {window:?} {q_tile:?} {kv_tile:?}"),
            &got,
            &want,
            8e-3,
            1.6e-2,
        );
    }
}
