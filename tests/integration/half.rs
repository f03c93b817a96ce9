//! f16 on Wgpu (lavapipe has `shaderFloat16`).

use burn::backend::Autodiff;
use burn::tensor::{DType, f16};
use burn_natten::NaBackend;

use crate::common::*;
use crate::golden;
use crate::sweeps::{Inputs, Problem, compare, run};

pub fn round_f16(x: &[f32]) -> Vec<f32> {
    x.iter().map(|&v| f16::from_f32(v).to_f32()).collect()
}

/// f16 against the f32 path on the same (f16-rounded) inputs. The reference computes in f32, so
/// the results differ by the final rounding to f16 (2^-11 relative) and, in the backward, by
/// the f16-rounded `out` entering `delta = rowsum(dO * out)`: 2e-3 relative to the largest
/// value, plus 1e-3 absolute, bounds both with a 2-4x margin.
#[test]
fn f16_wgpu_matches_f32_on_rounded_inputs() {
    if !wgpu_available() {
        return;
    }
    let device = Default::default();
    for seed in [3, 7, 11, 19] {
        let p = Problem::random(seed);
        let mut x = Inputs::random(&p);
        for v in [
            &mut x.q,
            &mut x.k,
            &mut x.v,
            &mut x.d_out,
            &mut x.ek,
            &mut x.ev,
        ] {
            *v = round_f16(v);
        }
        let want = run::<Autodiff<Gpu>>(&p, &x, DType::F32, &device, false);
        let got = run::<Autodiff<Gpu>>(&p, &x, DType::F16, &device, false);
        compare(&p, &got, &want, 1e-3, 2e-3);
    }
}

/// f16 against NATTEN's golden values with the tolerance of NATTEN's own f16 tests (1e-2 on
/// outputs and LSE; applied to the gradients too), relative to the values' magnitude.
#[test]
fn f16_wgpu_golden() {
    if !wgpu_available() {
        return;
    }
    let device = Default::default();
    let tol = golden::Tolerance {
        atol: 1e-2,
        rtol: 1e-2,
    };
    for case in golden::cases().iter().step_by(4) {
        golden::run_case::<Autodiff<Gpu>>(case, &device, DType::F16, tol, NaBackend::Auto);
    }
}

pub fn round_bf16(x: &[f32]) -> Vec<f32> {
    x.iter()
        .map(|&v| burn::tensor::bf16::from_f32(v).to_f32())
        .collect()
}

/// bf16 (CUDA only: WGSL has no bf16) against the f32 path on the same bf16-rounded inputs. As
/// for f16, the results differ by the final rounding (bf16: 2^-8 relative) and the rounded `out`
/// inside `delta`: 1.6e-2 relative to the largest value plus 8e-3 absolute (a 2-4x margin).
#[cfg(feature = "test-cuda")]
#[test]
fn bf16_gpu_matches_f32_on_rounded_inputs() {
    let device = Default::default();
    for seed in [3, 7, 11, 19, 23] {
        let p = Problem::random(seed);
        let mut x = Inputs::random(&p);
        for v in [
            &mut x.q,
            &mut x.k,
            &mut x.v,
            &mut x.d_out,
            &mut x.ek,
            &mut x.ev,
        ] {
            *v = round_bf16(v);
        }
        let p = Problem {
            backend: NaBackend::CubeFna,
            ..p
        };
        let want = run::<Autodiff<Gpu>>(&p, &x, DType::F32, &device, false);
        let got = run::<Autodiff<Gpu>>(&p, &x, DType::BF16, &device, false);
        compare(&p, &got, &want, 8e-3, 1.6e-2);
    }
}

/// Head dims that are multiples of 16 with 16-bit inputs: the tensor-core (`cmma`) path where
/// the runtime has one (CUDA), the scalar path elsewhere; 2-D, dilated, causal on one axis,
/// windows larger than a 16-wide fragment, GQA, extra KV tokens. Same comparison and tolerances
/// as the sweeps above (f16: 1e-3 + 2e-3 relative; bf16: 8e-3 + 1.6e-2 relative): `P` and `dS`
/// enter the tile products rounded to the input dtype, one more rounding of relative size
/// 2^-11 (f16) / 2^-8 (bf16) on values that are averaged, not accumulated.
#[test]
fn half_precision_tensor_core_shapes() {
    if !wgpu_available() {
        return;
    }
    let device = Default::default();
    let p = Problem {
        seed: 41,
        batch: 1,
        spatial: vec![20, 18],
        axes: vec![
            burn_natten::AxisParams {
                kernel_size: 7,
                stride: 1,
                dilation: 2,
                causal: false,
            },
            burn_natten::AxisParams {
                kernel_size: 5,
                stride: 2,
                dilation: 1,
                causal: true,
            },
        ],
        heads_kv: 2,
        group: 2,
        head_dim: 32,
        head_dim_v: 16,
        extra: 5,
        scale: None,
        backend: NaBackend::CubeFna,
    };
    let dtypes: &[(DType, f32, f32)] = if cfg!(feature = "test-cuda") {
        &[(DType::F16, 1e-3, 2e-3), (DType::BF16, 8e-3, 1.6e-2)]
    } else {
        &[(DType::F16, 1e-3, 2e-3)]
    };
    for &(dtype, atol, rtol) in dtypes {
        let mut x = Inputs::random(&p);
        let round: fn(&[f32]) -> Vec<f32> = if dtype == DType::F16 {
            round_f16
        } else {
            round_bf16
        };
        for v in [
            &mut x.q,
            &mut x.k,
            &mut x.v,
            &mut x.d_out,
            &mut x.ek,
            &mut x.ev,
        ] {
            *v = round(v);
        }
        let want = run::<Autodiff<Gpu>>(&p, &x, DType::F32, &device, false);
        let got = run::<Autodiff<Gpu>>(&p, &x, dtype, &device, false);
        compare(&p, &got, &want, atol, rtol);
    }
}
