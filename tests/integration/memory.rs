//! A problem whose `tokens x window x heads` f32 score matrix (96*96 * 31*31 * 4 * 4 bytes =
//! 142 MB) exceeds lavapipe's 128 MiB storage-buffer limit: the fused path must run it (its
//! memory is O(tokens x head dim)) and match an f64 host computation on a sample of rows.

use burn::tensor::{DType, Tensor};
use burn_natten::natten_core::neighborhood::{neighbors, unflatten};
use burn_natten::*;

use crate::common::*;

const GRID: [usize; 2] = [96, 96];
const WINDOW: [usize; 2] = [31, 31];
const HEADS: usize = 4;
const DIM: usize = 32;

fn row(x: &[f32], token: usize, head: usize) -> &[f32] {
    &x[(token * HEADS + head) * DIM..][..DIM]
}

#[test]
fn fused_forward_beyond_the_score_matrix_limit() {
    if !wgpu_available() {
        return;
    }
    let tokens = GRID[0] * GRID[1];
    assert!(
        tokens * WINDOW[0] * WINDOW[1] * HEADS * 4 > 128 << 20,
        "the score matrix must exceed 128 MiB"
    );
    let device = Default::default();
    let mut r = rng(96);
    let n = tokens * HEADS * DIM;
    let (q, k, v) = (normal(n, &mut r), normal(n, &mut r), normal(n, &mut r));
    let shape = [1, GRID[0], GRID[1], HEADS, DIM];
    let t = |x: &Vec<f32>| tensor::<Gpu, 5>(x.clone(), shape, DType::F32, &device);
    let opts = NaOptions::new(WINDOW)
        .with_causal([false, true])
        .with_backend(NaBackend::CubeFna);
    let (out, lse): (Tensor<Gpu, 5>, Tensor<Gpu, 4>) =
        na2d_with_lse(t(&q), t(&k), t(&v), &opts).unwrap();
    let (out, lse) = (values(out), values(lse));

    let axes = opts.axes();
    let scale = (DIM as f64).powf(-0.5);
    for sample in 0..24 {
        let (token, head) = ((sample * 7919 + 13) % tokens, sample % HEADS);
        let keys = neighbors(&GRID, &axes, &unflatten(token, &GRID));
        let scores: Vec<f64> = keys
            .iter()
            .map(|&key| {
                scale
                    * row(&q, token, head)
                        .iter()
                        .zip(row(&k, key, head))
                        .map(|(a, b)| *a as f64 * *b as f64)
                        .sum::<f64>()
            })
            .collect();
        let max = scores.iter().cloned().fold(f64::MIN, f64::max);
        let sum: f64 = scores.iter().map(|s| (s - max).exp()).sum();
        let want_lse = max + sum.ln();
        let idx = token * HEADS + head;
        assert!(
            (lse[idx] as f64 - want_lse).abs() < 1e-4,
            "lse of token {token} head {head}: {} vs {want_lse}",
            lse[idx]
        );
        for c in 0..DIM {
            let want: f64 = keys
                .iter()
                .zip(&scores)
                .map(|(&key, s)| (s - want_lse).exp() * row(&v, key, head)[c] as f64)
                .sum();
            let got = out[idx * DIM + c] as f64;
            assert!(
                (got - want).abs() < 1e-4,
                "out[{c}] of token {token} head {head}: {got} vs {want}"
            );
        }
    }
}
