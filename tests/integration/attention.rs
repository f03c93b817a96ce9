//! Attention (FMHA) sweeps and `merge_attentions`.

use burn::backend::Autodiff;
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::{DType, Tensor};
use burn_natten::*;
use rand::Rng;

use crate::common::*;
use crate::oracle::{dense_attention, fmha_mask};

/// out, lse, dq, dk, dv of a random FMHA problem, by the library or by the dense oracle.
fn run_fmha<B: AutodiffBackend + NattenBackend>(
    seed: u64,
    device: &B::Device,
    oracle: bool,
) -> (String, [Vec<f32>; 5]) {
    let mut r = rng(seed);
    let (b, sq, skv) = (
        r.random_range(1..=2),
        r.random_range(1..=20),
        r.random_range(1..=20),
    );
    let (hkv, g, d, dv) = (
        r.random_range(1..=2),
        r.random_range(1..=3),
        8,
        [4, 8, 12][r.random_range(0..3)],
    );
    let causal = r.random_bool(0.5) && skv >= sq;
    let what =
        format!("seed {seed}: b {b} sq {sq} skv {skv} hkv {hkv} g {g} dv {dv} causal {causal}");
    let mut t = |s: [usize; 4]| {
        tensor::<B, 4>(normal(s.iter().product(), &mut r), s, DType::F32, device).require_grad()
    };
    let (q, k, v) = (
        t([b, sq, hkv * g, d]),
        t([b, skv, hkv, d]),
        t([b, skv, hkv, dv]),
    );
    let d_out = t([b, sq, hkv * g, dv]).detach();
    let (out, lse) = if oracle {
        dense_attention(
            q.clone(),
            k.clone(),
            v.clone(),
            &fmha_mask(sq, skv, causal),
            (d as f32).powf(-0.5),
        )
    } else {
        attention_with_lse(
            q.clone(),
            k.clone(),
            v.clone(),
            &AttentionOptions::new().with_causal(causal),
        )
        .unwrap()
    };
    let grads = (out.clone() * d_out).sum().backward();
    let g = |t: &Tensor<B, 4>| values(t.grad(&grads).unwrap());
    (what, [values(out), values(lse), g(&q), g(&k), g(&v)])
}

#[test]
fn fmha_sweep_ndarray_and_wgpu() {
    let cpu = Default::default();
    let gpu = wgpu_available().then(Default::default);
    for seed in 0..16 {
        let (what, want) = run_fmha::<Autodiff<Cpu>>(seed, &cpu, true);
        let (_, got) = run_fmha::<Autodiff<Cpu>>(seed, &cpu, false);
        for (name, (a, b)) in ["out", "lse", "dq", "dk", "dv"]
            .iter()
            .zip(got.iter().zip(&want))
        {
            assert_close(&format!("ndarray {name} {what}"), a, b, 1e-5, 1e-5);
        }
        if let (Some(gpu), true) = (&gpu, seed % 4 == 0) {
            let (_, got) = run_fmha::<Autodiff<Gpu>>(seed, gpu, false);
            for (name, (a, b)) in ["out", "lse", "dq", "dk", "dv"]
                .iter()
                .zip(got.iter().zip(&want))
            {
                assert_close(&format!("wgpu {name} {what}"), a, b, 1e-5, 1e-5);
            }
        }
    }
}

/// NA with extra tokens equals NA and attention over the extra tokens, merged.
#[test]
fn merge_of_na_and_attention_equals_extra_kv() {
    let device = Default::default();
    let mut r = rng(42);
    let mut t = |s: [usize; 4]| {
        tensor::<Cpu, 4>(normal(s.iter().product(), &mut r), s, DType::F32, &device)
    };
    let (q, k, v) = (t([2, 20, 4, 8]), t([2, 20, 2, 8]), t([2, 20, 2, 6]));
    let (ek, ev) = (t([2, 5, 2, 8]), t([2, 5, 2, 6]));
    let opts = NaOptions::new([5]).with_dilation([2]).with_causal([true]);
    let (fused, fused_lse) = na1d_with_extra_kv(
        q.clone(),
        k.clone(),
        v.clone(),
        ek.clone(),
        ev.clone(),
        &opts,
    )
    .unwrap();
    let (na, na_lse) = na1d_with_lse(q.clone(), k, v, &opts).unwrap();
    let (x, x_lse) = attention_with_lse(q, ek, ev, &AttentionOptions::new()).unwrap();
    let (merged, merged_lse) = merge_attentions(vec![na, x], vec![na_lse, x_lse]).unwrap();
    assert_close("merged out", &values(merged), &values(fused), 1e-5, 1e-5);
    assert_close(
        "merged lse",
        &values(merged_lse),
        &values(fused_lse),
        1e-5,
        1e-5,
    );
}
