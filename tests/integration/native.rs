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
use burn_natten::{NaBackend, NaOptions, NattenError, attention, na2d, na2d_with_extra_kv};

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

/// Random small problems (ranks 1-3, even and odd kernels, stride, dilation, causal axes, GQA),
/// with every supported class of head dim: multiples of 8 below, at and between the compiled
/// kernels' head dims (32, 64, 128, 256).
#[test]
fn native_sweeps_match_f32() {
    if native_unavailable() {
        return;
    }
    let dims = [8, 16, 24, 32, 40, 64, 96, 128, 200, 256];
    for seed in 0..20u64 {
        let d = dims[seed as usize % dims.len()];
        let p = Problem {
            head_dim: d,
            head_dim_v: d,
            extra: 0,
            backend: NaBackend::CudaFna,
            ..Problem::random(seed)
        };
        check_against_f32(&p);
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
    ];
    for p in &problems {
        check_against_f32(p);
    }
}

/// NATTEN's golden cases that the native kernels take (NA, no extra KV, head dims multiples of
/// 8 and equal), in f16 with NATTEN's own f16 tolerance (1e-2 relative to the values'
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
        if p.extra > 0 || p.head_dim % 8 != 0 || p.head_dim != p.head_dim_v {
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
/// the synchronisation protocol shows as an output that differs from the first one.
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
    let [q, k, v] = inputs_2d(DType::BF16, 64);
    let extra = || Tensor::<Cuda, 4>::zeros([2, 3, 4, 64], &device).cast(DType::BF16);
    unsupported(
        na2d_with_extra_kv(q, k, v, extra(), extra(), &opts).map(|_| ()),
        "extra",
    );
    let [q, k, v] = inputs_2d(DType::BF16, 20);
    unsupported(na2d(q, k, v, &opts).map(|_| ()), "head_dim");
    let q = Tensor::<Cuda, 4>::zeros([1, 8, 2, 64], &device).cast(DType::BF16);
    unsupported(
        attention(
            q.clone(),
            q.clone(),
            q,
            &burn_natten::AttentionOptions::new().with_backend(NaBackend::CudaFna),
        )
        .map(|_| ()),
        "FMHA",
    );
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
