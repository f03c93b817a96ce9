//! f16 on Wgpu (lavapipe has `shaderFloat16`).

use burn::backend::Autodiff;
use burn::tensor::{DType, f16};
use burn_natten::NaBackend;

use crate::common::*;
use crate::golden;
use crate::sweeps::{Inputs, Problem, compare, run};

fn round_f16(x: &[f32]) -> Vec<f32> {
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

#[cfg(feature = "test-cuda")]
fn round_bf16(x: &[f32]) -> Vec<f32> {
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
