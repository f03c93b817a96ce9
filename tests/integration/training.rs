//! A training step through `na2d` on `Autodiff<Wgpu>`: gradients and the updated weights equal
//! those of the dense oracle on `Autodiff<NdArray>`.

use burn::backend::Autodiff;
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{DType, Tensor};
use burn_natten::*;

use crate::common::*;
use crate::oracle::{dense_attention, na_mask};

const HEADS: usize = 2;
const HEAD_DIM: usize = 4;
const CHANNELS: usize = HEADS * HEAD_DIM;
const GRID: [usize; 2] = [6, 7];

/// One SGD step (lr 0.5) of a QKV projection + 2-D NA (k 3x3, dilation 2x1, causal on axis 1)
/// + output projection on a mean-square loss; returns (loss, grads of the weights, new weights).
fn step<B: AutodiffBackend + NattenBackend>(
    device: &B::Device,
    oracle: bool,
) -> (f32, Vec<Vec<f32>>, Vec<Vec<f32>>) {
    let mut r = rng(7);
    let mut t = |s: [usize; 2]| {
        tensor::<B, 2>(normal(s[0] * s[1], &mut r), s, DType::F32, device).mul_scalar(0.5)
    };
    let x = tensor::<B, 2>(
        normal(GRID[0] * GRID[1] * CHANNELS, &mut rng(8)),
        [GRID[0] * GRID[1], CHANNELS],
        DType::F32,
        device,
    );
    let w_qkv = t([CHANNELS, 3 * CHANNELS]).require_grad();
    let w_out = t([CHANNELS, CHANNELS]).require_grad();
    let opts = NaOptions::new([3, 3])
        .with_dilation([2, 1])
        .with_causal([false, true]);
    let qkv = x
        .matmul(w_qkv.clone())
        .reshape([1, GRID[0], GRID[1], 3, HEADS, HEAD_DIM]);
    let part = |i: usize| {
        qkv.clone()
            .narrow(3, i, 1)
            .reshape([1, GRID[0], GRID[1], HEADS, HEAD_DIM])
    };
    let (q, k, v) = (part(0), part(1), part(2));
    let attended: Tensor<B, 2> = if oracle {
        let flat = |t: Tensor<B, 5>| t.reshape([1, GRID[0] * GRID[1], HEADS, HEAD_DIM]);
        let mask = na_mask(&GRID, &opts.axes(), 0);
        dense_attention(
            flat(q),
            flat(k),
            flat(v),
            &mask,
            (HEAD_DIM as f32).powf(-0.5),
        )
        .0
        .reshape([GRID[0] * GRID[1], CHANNELS])
    } else {
        na2d(q, k, v, &opts)
            .unwrap()
            .reshape([GRID[0] * GRID[1], CHANNELS])
    };
    let loss = attended.matmul(w_out.clone()).powi_scalar(2).mean();
    let grads = loss.backward();
    let params = [w_qkv, w_out];
    let g: Vec<Tensor<B::InnerBackend, 2>> =
        params.iter().map(|p| p.grad(&grads).unwrap()).collect();
    let updated = params
        .iter()
        .zip(&g)
        .map(|(p, g)| values(p.clone().inner() - g.clone().mul_scalar(0.5)))
        .collect();
    (
        values(loss)[0],
        g.into_iter()
            .map(values::<<B as AutodiffBackend>::InnerBackend, 2>)
            .collect(),
        updated,
    )
}

/// `extra_tol`: the backend's matmul allowance (the projections are Burn matmuls).
fn check<B: AutodiffBackend + NattenBackend>(device: &B::Device, extra_tol: f32)
where
    B::InnerBackend: Backend,
{
    let (loss_ref, grads_ref, new_ref) = step::<Autodiff<Cpu>>(&Default::default(), true);
    let (loss, grads, new) = step::<B>(device, false);
    assert!(
        (loss - loss_ref).abs() <= (1e-5 + extra_tol) * loss_ref.abs(),
        "loss {loss} vs {loss_ref}"
    );
    for (i, (g, want)) in grads.iter().zip(&grads_ref).enumerate() {
        assert_close(
            &format!("grad of weight {i}"),
            g,
            want,
            1e-6,
            1e-5 + extra_tol,
        );
    }
    for (i, (w, want)) in new.iter().zip(&new_ref).enumerate() {
        assert_close(
            &format!("updated weight {i}"),
            w,
            want,
            1e-6,
            1e-5 + extra_tol,
        );
    }
}

#[test]
fn training_step_ndarray() {
    check::<Autodiff<Cpu>>(&Default::default(), 0.0);
}

#[test]
fn training_step_wgpu() {
    if wgpu_available() {
        check::<Autodiff<Gpu>>(&Default::default(), GPU_MATMUL_TOL);
    }
}
