//! The golden cases computed by NATTEN 0.21.7 (tests/golden, see its README): forward output,
//! LSE, and every gradient through `Autodiff<B>`, on NdArray and on Wgpu.

use burn::backend::Autodiff;
use burn::tensor::DType;
use burn::tensor::backend::AutodiffBackend;
use burn_natten::natten_core::AxisParams;
use burn_natten::{NaBackend, NattenBackend};
use safetensors::SafeTensors;
use serde_json::Value;

use crate::attention::{FmhaCase, run_fmha};
use crate::common::*;
use crate::sweeps::{Inputs, Problem, run};

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
    // `BURN_NATTEN_GOLDEN_DIR` serves test binaries carried to another machine.
    let dir = std::env::var_os("BURN_NATTEN_GOLDEN_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden"));
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

/// The NA case as a sweep problem with its stored inputs.
pub fn na_problem(case: &Case, backend: NaBackend) -> (Problem, Inputs) {
    let axes = (0..case.params["rank"].as_u64().unwrap() as usize)
        .map(|a| AxisParams {
            kernel_size: case.usizes("kernel_size")[a],
            stride: case.usizes("stride")[a],
            dilation: case.usizes("dilation")[a],
            causal: case.bools("is_causal")[a],
        })
        .collect();
    let p = &case.params;
    let n = |key: &str| p[key].as_u64().unwrap() as usize;
    let problem = Problem {
        seed: 0,
        batch: n("batch"),
        spatial: case.usizes("input_size"),
        axes,
        heads_kv: n("heads_kv"),
        group: n("heads") / n("heads_kv"),
        head_dim: n("head_dim"),
        head_dim_v: n("head_dim_v"),
        extra: n("additional_kv"),
        scale: p["scale_arg"].as_f64().map(|s| s as f32),
        backend,
    };
    let get = |name: &str| case.get(name).map(|(v, _)| v).unwrap_or_default();
    let inputs = Inputs {
        q: get("q"),
        k: get("k"),
        v: get("v"),
        d_out: get("d_out"),
        ek: get("add_k"),
        ev: get("add_v"),
    };
    (problem, inputs)
}

/// The attention case with its stored inputs.
fn fmha_case(case: &Case, backend: NaBackend) -> FmhaCase {
    let load = |name: &str| {
        let (values, shape) = case.get(name).unwrap();
        (values, <[usize; 4]>::try_from(shape).unwrap())
    };
    let [(q, sq), (k, sk), (v, sv), (d, sd)] = ["q", "k", "v", "d_out"].map(load);
    FmhaCase {
        what: case.name.clone(),
        shapes: [sq, sk, sv, sd],
        values: [q, k, v, d],
        causal: case.bools("is_causal")[0],
        scale: case.params["scale_arg"].as_f64().map(|s| s as f32),
        backend,
    }
}

/// Tolerances of a run against the stored float64-derived values.
#[derive(Clone, Copy)]
pub struct Tolerance {
    pub atol: f32,
    pub rtol: f32,
}

/// Runs one case on backend `B` in `dtype`: forward output, LSE and every gradient through
/// `Autodiff<B>` against the stored values.
pub fn run_case<B: AutodiffBackend + NattenBackend>(
    case: &Case,
    device: &B::Device,
    dtype: DType,
    tol: Tolerance,
    backend: NaBackend,
) {
    let got: Vec<Vec<f32>> = match case.params["op"].as_str().unwrap() {
        "na" => {
            let (problem, inputs) = na_problem(case, backend);
            run::<B>(&problem, &inputs, dtype, device, false).to_vec()
        }
        "attention" => run_fmha::<B>(&fmha_case(case, backend), dtype, device, false).to_vec(),
        other => panic!("{}: unknown op {other}", case.name),
    };
    let names = ["out", "lse", "dq", "dk", "dv", "d_add_k", "d_add_v"];
    for (name, got) in names.iter().zip(&got) {
        if let Some((want, _)) = case.get(name) {
            assert_close(
                &format!("{} {name} ({dtype:?})", case.name),
                got,
                &want,
                tol.atol,
                tol.rtol,
            );
        }
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
        run_case::<Autodiff<Cpu>>(&case, &device, DType::F32, F32, NaBackend::Auto);
    }
}

#[test]
fn golden_wgpu_f32() {
    if !wgpu_available() {
        return;
    }
    let device = Default::default();
    for case in cases() {
        run_case::<Autodiff<Gpu>>(&case, &device, DType::F32, F32, NaBackend::Auto);
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
        run_case::<Autodiff<GpuUnfused>>(&case, &device, DType::F32, F32, NaBackend::Auto);
    }
}

#[test]
fn golden_wgpu_reference_f32() {
    if !wgpu_available() {
        return;
    }
    let device = Default::default();
    for case in cases() {
        let tol = Tolerance {
            atol: F32.atol + GPU_MATMUL_TOL,
            rtol: F32.rtol + GPU_MATMUL_TOL,
        };
        run_case::<Autodiff<Gpu>>(&case, &device, DType::F32, tol, NaBackend::Reference);
    }
}
