//! Random sweeps: the library (forward, LSE, custom backward through `Autodiff<B>`) against the
//! dense oracle of [`crate::oracle`] with autodiff through its ops, on random shapes and
//! parameters. A failure prints the problem and its seed.

use burn::backend::Autodiff;
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::{DType, Tensor};
use burn_natten::natten_core::AxisParams;
use burn_natten::*;
use rand::Rng;

use crate::common::*;
use crate::oracle::{dense_attention, na_mask};

/// A random NA problem.
#[derive(Debug, Clone)]
pub struct Problem {
    pub seed: u64,
    pub batch: usize,
    pub spatial: Vec<usize>,
    pub axes: Vec<AxisParams>,
    pub heads_kv: usize,
    pub group: usize,
    pub head_dim: usize,
    pub head_dim_v: usize,
    pub extra: usize,
    pub scale: Option<f32>,
    /// The implementation under test.
    pub backend: NaBackend,
}

impl Problem {
    pub fn random(seed: u64) -> Self {
        let mut r = rng(seed);
        let rank = r.random_range(1..=3usize);
        let max_len = [24, 9, 5][rank - 1];
        let mut spatial = vec![];
        let mut axes = vec![];
        for _ in 0..rank {
            let kernel_size = r.random_range(2..=4usize.min(max_len));
            let dilation = r.random_range(1..=(max_len / kernel_size).min(3));
            let len = r.random_range(kernel_size * dilation..=max_len);
            let stride = r.random_range(1..=kernel_size);
            spatial.push(len);
            axes.push(AxisParams {
                kernel_size,
                stride,
                dilation,
                causal: r.random_bool(0.4),
            });
        }
        Self {
            seed,
            batch: r.random_range(1..=2),
            spatial,
            axes,
            heads_kv: r.random_range(1..=2),
            group: r.random_range(1..=3),
            head_dim: [4, 8, 16][r.random_range(0..3)],
            head_dim_v: [4, 8, 12][r.random_range(0..3)],
            extra: [0, 0, 3][r.random_range(0..3)],
            scale: r.random_bool(0.3).then_some(0.3),
            backend: NaBackend::Auto,
        }
    }

    fn tokens(&self) -> usize {
        self.spatial.iter().product()
    }

    fn heads(&self) -> usize {
        self.heads_kv * self.group
    }

    fn resolved_scale(&self) -> f32 {
        self.scale.unwrap_or((self.head_dim as f32).powf(-0.5))
    }
}

/// Inputs of a problem, as host values: q, k, v, dO, extra k, extra v.
pub struct Inputs {
    pub q: Vec<f32>,
    pub k: Vec<f32>,
    pub v: Vec<f32>,
    pub d_out: Vec<f32>,
    pub ek: Vec<f32>,
    pub ev: Vec<f32>,
}

impl Inputs {
    pub fn random(p: &Problem) -> Self {
        let mut r = rng(p.seed ^ 0x5eed);
        let (b, n, h, hkv) = (p.batch, p.tokens(), p.heads(), p.heads_kv);
        Self {
            q: normal(b * n * h * p.head_dim, &mut r),
            k: normal(b * n * hkv * p.head_dim, &mut r),
            v: normal(b * n * hkv * p.head_dim_v, &mut r),
            d_out: normal(b * n * h * p.head_dim_v, &mut r),
            ek: normal(b * p.extra * hkv * p.head_dim, &mut r),
            ev: normal(b * p.extra * hkv * p.head_dim_v, &mut r),
        }
    }
}

/// Everything compared: out, lse, dq, dk, dv, d_extra_k, d_extra_v (empty when no extra).
pub type Results = [Vec<f32>; 7];

fn options<const R: usize>(p: &Problem) -> NaOptions<R> {
    let get =
        |f: fn(&AxisParams) -> usize| -> [usize; R] { std::array::from_fn(|a| f(&p.axes[a])) };
    let mut o = NaOptions::new(get(|a| a.kernel_size))
        .with_backend(p.backend)
        .with_stride(get(|a| a.stride))
        .with_dilation(get(|a| a.dilation))
        .with_causal(std::array::from_fn(|a| p.axes[a].causal));
    if let Some(s) = p.scale {
        o = o.with_scale(s);
    }
    o
}

/// Calls the rank's `na*d_with_lse` / `na*d_with_extra_kv` on flattened `[b, n, h, d]` tensors.
pub fn call_na<B: NattenBackend>(
    p: &Problem,
    q: Tensor<B, 4>,
    k: Tensor<B, 4>,
    v: Tensor<B, 4>,
    extra: Option<(Tensor<B, 4>, Tensor<B, 4>)>,
) -> (Tensor<B, 4>, Tensor<B, 3>) {
    let [b, n, h, _] = q.dims();
    let dv = v.dims()[3];
    macro_rules! run {
        ($r:literal, $with_lse:ident, $with_extra:ident) => {{
            let s: [usize; $r] = p.spatial.clone().try_into().unwrap();
            let shape = |x: &Tensor<B, 4>| {
                let mut d = vec![b];
                d.extend(s);
                d.extend(&x.dims()[2..]);
                burn::tensor::Shape::from(d)
            };
            let (sq, sk, sv) = (shape(&q), shape(&k), shape(&v));
            let (q, k, v) = (
                q.reshape::<{ $r + 3 }, _>(sq),
                k.reshape::<{ $r + 3 }, _>(sk),
                v.reshape::<{ $r + 3 }, _>(sv),
            );
            let o = options::<$r>(p);
            let (out, lse) = match extra {
                None => $with_lse(q, k, v, &o),
                Some((ek, ev)) => $with_extra(q, k, v, ek, ev, &o),
            }
            .unwrap_or_else(|e| panic!("{p:?}: {e}"));
            (out.reshape([b, n, h, dv]), lse.reshape([b, n, h]))
        }};
    }
    match p.spatial.len() {
        1 => run!(1, na1d_with_lse, na1d_with_extra_kv),
        2 => run!(2, na2d_with_lse, na2d_with_extra_kv),
        3 => run!(3, na3d_with_lse, na3d_with_extra_kv),
        r => unreachable!("rank {r}"),
    }
}

/// Runs the library (`oracle = false`) or the dense oracle (`oracle = true`) on backend `B`.
pub fn run<B: AutodiffBackend + NattenBackend>(
    p: &Problem,
    x: &Inputs,
    dtype: DType,
    device: &B::Device,
    oracle: bool,
) -> Results {
    let (b, n, h, hkv) = (p.batch, p.tokens(), p.heads(), p.heads_kv);
    let t =
        |v: &Vec<f32>, s: [usize; 4]| tensor::<B, 4>(v.clone(), s, dtype, device).require_grad();
    let q = t(&x.q, [b, n, h, p.head_dim]);
    let k = t(&x.k, [b, n, hkv, p.head_dim]);
    let v = t(&x.v, [b, n, hkv, p.head_dim_v]);
    let extra = (p.extra > 0).then(|| {
        (
            t(&x.ek, [b, p.extra, hkv, p.head_dim]),
            t(&x.ev, [b, p.extra, hkv, p.head_dim_v]),
        )
    });
    let (out, lse) = if oracle {
        let (kk, vv) = match &extra {
            Some((ek, ev)) => (
                Tensor::cat(vec![k.clone(), ek.clone()], 1),
                Tensor::cat(vec![v.clone(), ev.clone()], 1),
            ),
            None => (k.clone(), v.clone()),
        };
        dense_attention(
            q.clone(),
            kk,
            vv,
            &na_mask(&p.spatial, &p.axes, p.extra),
            p.resolved_scale(),
        )
    } else {
        call_na(p, q.clone(), k.clone(), v.clone(), extra.clone())
    };
    let d_out = tensor::<B, 4>(x.d_out.clone(), [b, n, h, p.head_dim_v], dtype, device);
    let grads = (out.clone() * d_out).sum().backward();
    let g = |t: &Tensor<B, 4>| values(t.grad(&grads).expect("gradient"));
    let (dek, dev) = extra
        .as_ref()
        .map(|(ek, ev)| (g(ek), g(ev)))
        .unwrap_or_default();
    [values(out), values(lse), g(&q), g(&k), g(&v), dek, dev]
}

const NAMES: [&str; 7] = ["out", "lse", "dq", "dk", "dv", "d_extra_k", "d_extra_v"];

/// Compares two result sets with `|a - b| <= atol + rtol * max|b|` per tensor.
pub fn compare(p: &Problem, got: &Results, want: &Results, atol: f32, rtol: f32) {
    for ((name, got), want) in NAMES.iter().zip(got).zip(want) {
        assert_close(&format!("{name} of {p:?}"), got, want, atol, rtol);
    }
}

/// f32 against the f32 dense oracle: both sum at most ~100 products per entry in a different
/// order, so ~1e-6 relative; 1e-5 absolute/relative leaves a margin without hiding a wrong key
/// (one wrong key moves results by ~1e-1).
const F32_ATOL: f32 = 1e-5;
const F32_RTOL: f32 = 1e-5;

#[test]
fn sweep_ndarray_f32() {
    let device = Default::default();
    for seed in 0..40 {
        let p = Problem::random(seed);
        let x = Inputs::random(&p);
        let want = run::<Autodiff<Cpu>>(&p, &x, DType::F32, &device, true);
        let got = run::<Autodiff<Cpu>>(&p, &x, DType::F32, &device, false);
        compare(&p, &got, &want, F32_ATOL, F32_RTOL);
    }
}

#[test]
fn sweep_wgpu_f32() {
    if !wgpu_available() {
        return;
    }
    let (cpu, gpu) = (Default::default(), Default::default());
    for seed in 100..112 {
        let p = Problem::random(seed);
        let x = Inputs::random(&p);
        let want = run::<Autodiff<Cpu>>(&p, &x, DType::F32, &cpu, true);
        let got = run::<Autodiff<Gpu>>(&p, &x, DType::F32, &gpu, false);
        compare(&p, &got, &want, F32_ATOL, F32_RTOL);
    }
}

/// The fused CubeCL path (explicitly chosen) and the reference, both on Wgpu, against the oracle.
#[test]
fn sweep_wgpu_fused_and_reference() {
    if !wgpu_available() {
        return;
    }
    let (cpu, gpu) = (Default::default(), Default::default());
    for seed in 200..206 {
        let p = Problem::random(seed);
        let x = Inputs::random(&p);
        let want = run::<Autodiff<Cpu>>(&p, &x, DType::F32, &cpu, true);
        for (backend, extra) in [
            (NaBackend::CubeFna, 0.0),
            (NaBackend::Reference, GPU_MATMUL_TOL),
        ] {
            let p = Problem {
                backend,
                ..p.clone()
            };
            let got = run::<Autodiff<Gpu>>(&p, &x, DType::F32, &gpu, false);
            compare(&p, &got, &want, F32_ATOL + extra, F32_RTOL + extra);
        }
    }
}
