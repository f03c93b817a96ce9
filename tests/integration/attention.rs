//! Attention (FMHA) sweeps and `merge_attentions`.

use burn::backend::Autodiff;
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::{DType, Tensor};
use burn_natten::*;
use rand::Rng;

use crate::common::*;
use crate::oracle::{dense_attention, fmha_mask};

/// An FMHA problem with its inputs (host values): Q, K, V and the upstream gradient dO.
pub struct FmhaCase {
    pub what: String,
    pub shapes: [[usize; 4]; 4],
    pub values: [Vec<f32>; 4],
    pub causal: bool,
    pub scale: Option<f32>,
    pub backend: NaBackend,
}

impl FmhaCase {
    fn random(seed: u64) -> Self {
        let mut r = rng(seed);
        let (b, sq, skv) = (
            r.random_range(1..=2),
            r.random_range(1..=20),
            r.random_range(1..=20),
        );
        let (hkv, g, d) = (r.random_range(1..=2), r.random_range(1..=3), 8);
        let dv = [4, 8, 12][r.random_range(0..3)];
        let causal = r.random_bool(0.5) && skv >= sq;
        let shapes = [
            [b, sq, hkv * g, d],
            [b, skv, hkv, d],
            [b, skv, hkv, dv],
            [b, sq, hkv * g, dv],
        ];
        let values = shapes.map(|s| normal(s.iter().product(), &mut r));
        let what =
            format!("seed {seed}: b {b} sq {sq} skv {skv} hkv {hkv} g {g} dv {dv} causal {causal}");
        Self {
            what,
            shapes,
            values,
            causal,
            scale: None,
            backend: NaBackend::Auto,
        }
    }
}

/// out, lse, dq, dk, dv of an FMHA case, by the library or by the dense oracle.
pub fn run_fmha<B: AutodiffBackend + NattenBackend>(
    c: &FmhaCase,
    dtype: DType,
    device: &B::Device,
    oracle: bool,
) -> [Vec<f32>; 5] {
    let [q, k, v, d_out] = std::array::from_fn(|i| {
        tensor::<B, 4>(c.values[i].clone(), c.shapes[i], dtype, device).require_grad()
    });
    let [_, sq, _, d] = c.shapes[0];
    let skv = c.shapes[1][1];
    let (out, lse) = if oracle {
        let scale = c.scale.unwrap_or((d as f32).powf(-0.5));
        dense_attention(
            q.clone(),
            k.clone(),
            v.clone(),
            &fmha_mask(sq, skv, c.causal),
            scale,
        )
    } else {
        let mut opts = AttentionOptions::new()
            .with_causal(c.causal)
            .with_backend(c.backend);
        if let Some(scale) = c.scale {
            opts = opts.with_scale(scale);
        }
        attention_with_lse(q.clone(), k.clone(), v.clone(), &opts).unwrap()
    };
    let grads = (out.clone() * d_out.detach()).sum().backward();
    let g = |t: &Tensor<B, 4>| values(t.grad(&grads).unwrap());
    [values(out), values(lse), g(&q), g(&k), g(&v)]
}

#[test]
fn fmha_sweep_ndarray_and_wgpu() {
    let cpu = Default::default();
    let gpu = wgpu_available().then(Default::default);
    for seed in 0..16 {
        let case = FmhaCase::random(seed);
        let what = &case.what;
        let want = run_fmha::<Autodiff<Cpu>>(&case, DType::F32, &cpu, true);
        let got = run_fmha::<Autodiff<Cpu>>(&case, DType::F32, &cpu, false);
        for (name, (a, b)) in ["out", "lse", "dq", "dk", "dv"]
            .iter()
            .zip(got.iter().zip(&want))
        {
            assert_close(&format!("ndarray {name} {what}"), a, b, 1e-5, 1e-5);
        }
        if let (Some(gpu), true) = (&gpu, seed % 4 == 0) {
            let got = run_fmha::<Autodiff<Gpu>>(&case, DType::F32, gpu, false);
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
