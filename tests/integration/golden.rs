//! The golden cases computed by NATTEN 0.21.7 (tests/golden, see its README): forward output,
//! LSE, and every gradient through `Autodiff<B>`, on NdArray and on Wgpu.

use burn::backend::Autodiff;
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::{DType, Tensor};
use burn_natten::*;
use safetensors::SafeTensors;
use serde_json::Value;

use crate::common::*;

/// One golden case: its parameters and stored tensors.
pub struct Case {
    pub name: String,
    pub params: Value,
    bytes: Vec<u8>,
}

impl Case {
    fn tensors(&self) -> SafeTensors<'_> {
        SafeTensors::deserialize(&self.bytes).expect("valid safetensors file")
    }

    /// A stored tensor's f32 values and shape, if present.
    pub fn get(&self, name: &str) -> Option<(Vec<f32>, Vec<usize>)> {
        let tensors = self.tensors();
        let view = tensors.tensor(name).ok()?;
        let values = view
            .data()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
            .collect();
        Some((values, view.shape().to_vec()))
    }

    fn usizes(&self, key: &str) -> Vec<usize> {
        self.params[key]
            .as_array()
            .expect(key)
            .iter()
            .map(|x| x.as_u64().unwrap() as usize)
            .collect()
    }

    fn bools(&self, key: &str) -> Vec<bool> {
        self.params[key]
            .as_array()
            .expect(key)
            .iter()
            .map(|x| x.as_bool().unwrap())
            .collect()
    }
}

/// Every golden case, in file-name order.
pub fn cases() -> Vec<Case> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden");
    let mut paths: Vec<_> = std::fs::read_dir(&dir)
        .expect("tests/golden exists")
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "safetensors"))
        .collect();
    paths.sort();
    assert_eq!(paths.len(), 39, "expected the 39 golden cases in {dir:?}");
    paths
        .into_iter()
        .map(|path| {
            let bytes = std::fs::read(&path).unwrap();
            let (_, meta) = SafeTensors::read_metadata(&bytes).unwrap();
            let params = meta
                .metadata()
                .as_ref()
                .and_then(|m| m.get("params"))
                .expect("params metadata");
            Case {
                name: path.file_stem().unwrap().to_string_lossy().into_owned(),
                params: serde_json::from_str(params).unwrap(),
                bytes,
            }
        })
        .collect()
}

fn options<const R: usize>(case: &Case) -> NaOptions<R> {
    let arr = |v: Vec<usize>| -> [usize; R] { v.try_into().unwrap() };
    let causal: [bool; R] = case.bools("is_causal").try_into().unwrap();
    let mut opts = NaOptions::new(arr(case.usizes("kernel_size")))
        .with_stride(arr(case.usizes("stride")))
        .with_dilation(arr(case.usizes("dilation")))
        .with_causal(causal);
    if let Some(scale) = case.params["scale_arg"].as_f64() {
        opts = opts.with_scale(scale as f32);
    }
    opts
}

type Extra<B> = Option<(Tensor<B, 4>, Tensor<B, 4>)>;

/// What a case's call returns: out and LSE.
type Call<B, const D: usize, const L: usize> =
    fn(&Case, Tensor<B, D>, Tensor<B, D>, Tensor<B, D>, Extra<B>) -> (Tensor<B, D>, Tensor<B, L>);

fn call_na1d<B: NattenBackend>(
    c: &Case,
    q: Tensor<B, 4>,
    k: Tensor<B, 4>,
    v: Tensor<B, 4>,
    e: Extra<B>,
) -> (Tensor<B, 4>, Tensor<B, 3>) {
    let o = options::<1>(c);
    match e {
        None => na1d_with_lse(q, k, v, &o),
        Some((ek, ev)) => na1d_with_extra_kv(q, k, v, ek, ev, &o),
    }
    .expect("valid golden case")
}

fn call_na2d<B: NattenBackend>(
    c: &Case,
    q: Tensor<B, 5>,
    k: Tensor<B, 5>,
    v: Tensor<B, 5>,
    e: Extra<B>,
) -> (Tensor<B, 5>, Tensor<B, 4>) {
    let o = options::<2>(c);
    match e {
        None => na2d_with_lse(q, k, v, &o),
        Some((ek, ev)) => na2d_with_extra_kv(q, k, v, ek, ev, &o),
    }
    .expect("valid golden case")
}

fn call_na3d<B: NattenBackend>(
    c: &Case,
    q: Tensor<B, 6>,
    k: Tensor<B, 6>,
    v: Tensor<B, 6>,
    e: Extra<B>,
) -> (Tensor<B, 6>, Tensor<B, 5>) {
    let o = options::<3>(c);
    match e {
        None => na3d_with_lse(q, k, v, &o),
        Some((ek, ev)) => na3d_with_extra_kv(q, k, v, ek, ev, &o),
    }
    .expect("valid golden case")
}

fn call_attention<B: NattenBackend>(
    c: &Case,
    q: Tensor<B, 4>,
    k: Tensor<B, 4>,
    v: Tensor<B, 4>,
    _: Extra<B>,
) -> (Tensor<B, 4>, Tensor<B, 3>) {
    let mut o = AttentionOptions::new().with_causal(c.bools("is_causal")[0]);
    if let Some(scale) = c.params["scale_arg"].as_f64() {
        o = o.with_scale(scale as f32);
    }
    attention_with_lse(q, k, v, &o).expect("valid golden case")
}

/// Tolerances of a run against the stored float64-derived values.
#[derive(Clone, Copy)]
pub struct Tolerance {
    pub atol: f32,
    pub rtol: f32,
}

fn check<B, const D: usize, const L: usize>(
    case: &Case,
    device: &B::Device,
    dtype: DType,
    tol: Tolerance,
    call: Call<B, D, L>,
) where
    B: AutodiffBackend + NattenBackend,
{
    let load = |name: &str| -> Tensor<B, D> {
        let (values, shape) = case
            .get(name)
            .unwrap_or_else(|| panic!("{}: no `{name}`", case.name));
        tensor(values, shape.try_into().unwrap(), dtype, device).require_grad()
    };
    let load4 = |name: &str| -> Option<Tensor<B, 4>> {
        case.get(name).map(|(values, shape)| {
            tensor(values, shape.try_into().unwrap(), dtype, device).require_grad()
        })
    };
    let (q, k, v) = (load("q"), load("k"), load("v"));
    let extra = load4("add_k").zip(load4("add_v"));
    let (out, lse) = call(case, q.clone(), k.clone(), v.clone(), extra.clone());
    let what = |t: &str| format!("{} {t} ({dtype:?})", case.name);
    assert_close(
        &what("out"),
        &values(out.clone()),
        &case.get("out").unwrap().0,
        tol.atol,
        tol.rtol,
    );
    assert_close(
        &what("lse"),
        &values(lse),
        &case.get("lse").unwrap().0,
        tol.atol,
        tol.rtol,
    );

    let d_out = load("d_out").detach();
    let grads = (out * d_out).sum().backward();
    let grad = |t: &Tensor<B, D>| values(t.grad(&grads).expect("gradient registered"));
    assert_close(
        &what("dq"),
        &grad(&q),
        &case.get("dq").unwrap().0,
        tol.atol,
        tol.rtol,
    );
    assert_close(
        &what("dk"),
        &grad(&k),
        &case.get("dk").unwrap().0,
        tol.atol,
        tol.rtol,
    );
    assert_close(
        &what("dv"),
        &grad(&v),
        &case.get("dv").unwrap().0,
        tol.atol,
        tol.rtol,
    );
    if let Some((ek, ev)) = extra {
        let grad4 = |t: &Tensor<B, 4>| values(t.grad(&grads).expect("extra gradient registered"));
        assert_close(
            &what("d_add_k"),
            &grad4(&ek),
            &case.get("d_add_k").unwrap().0,
            tol.atol,
            tol.rtol,
        );
        assert_close(
            &what("d_add_v"),
            &grad4(&ev),
            &case.get("d_add_v").unwrap().0,
            tol.atol,
            tol.rtol,
        );
    }
}

/// Runs one case on backend `B` in `dtype`.
pub fn run_case<B: AutodiffBackend + NattenBackend>(
    case: &Case,
    device: &B::Device,
    dtype: DType,
    tol: Tolerance,
) {
    let rank = case.params["rank"].as_u64().unwrap();
    match (case.params["op"].as_str().unwrap(), rank) {
        ("attention", _) => check::<B, 4, 3>(case, device, dtype, tol, call_attention::<B>),
        ("na", 1) => check::<B, 4, 3>(case, device, dtype, tol, call_na1d::<B>),
        ("na", 2) => check::<B, 5, 4>(case, device, dtype, tol, call_na2d::<B>),
        ("na", 3) => check::<B, 6, 5>(case, device, dtype, tol, call_na3d::<B>),
        other => panic!("{}: unknown case kind {other:?}", case.name),
    }
}

/// f32 against the float64 values rounded to f32: the golden README's 1e-5 absolute on these
/// sizes, plus 1e-5 relative for the larger gradients (f32 sums of up to ~100 products).
pub const F32: Tolerance = Tolerance {
    atol: 1e-5,
    rtol: 1e-5,
};

#[test]
fn golden_ndarray_f32() {
    let device = Default::default();
    for case in cases() {
        run_case::<Autodiff<Cpu>>(&case, &device, DType::F32, F32);
    }
}

#[test]
fn golden_wgpu_f32() {
    if !wgpu_available() {
        return;
    }
    let device = Default::default();
    for case in cases() {
        run_case::<Autodiff<Gpu>>(&case, &device, DType::F32, F32);
    }
}

#[test]
fn golden_natten_own_output_agrees() {
    // The stored float64 reference agrees with NATTEN's own float32 output (`natten_out`):
    // this is what makes the reference values NATTEN's semantics, not only our own.
    for case in cases() {
        let (natten, _) = case.get("natten_out").expect("natten_out");
        assert_close(
            &format!("{} natten_out", case.name),
            &natten,
            &case.get("out").unwrap().0,
            1e-5,
            0.0,
        );
    }
}

#[test]
fn golden_wgpu_unfused_f32() {
    if !wgpu_available() {
        return;
    }
    let device = Default::default();
    for case in cases() {
        run_case::<Autodiff<GpuUnfused>>(&case, &device, DType::F32, F32);
    }
}
