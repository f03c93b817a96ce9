//! `natten-profile`: times burn-natten's neighborhood attention on one problem.
//!
//! ```text
//! natten-profile -i 64 64 -w 13 13 --heads 4 --dim 32 --backend wgpu --compare-reference --backprop
//! ```
//! Effective TFLOP/s = forward FLOPs (`2 * pairs * (dim + dim_value) * heads * batch`, pairs =
//! attended (query, key) pairs) / time; forward+backward counts 3.5x the forward FLOPs.

mod args;
mod dry_run;
mod optimize;
mod seed;
mod timing;

use burn_natten::burn::tensor::DType;
use burn_natten::burn::tensor::backend::Backend;
use burn_natten::natten_core::{flops, validate::validate_axes};
use burn_natten::tuning_cache::{cache_path, tuned_tiles};
use burn_natten::{AxisParams, NaBackend, NattenError};
use clap::Parser;

use args::{Args, DeviceBackend, Dtype, Implementation};
use timing::{Op, Problem, Timing, time};

#[derive(serde::Serialize)]
struct Report {
    device: String,
    backend: DeviceBackend,
    implementation: Implementation,
    dtype: Dtype,
    /// The calls were timed back to back (`--back-to-back`), not each between two syncs.
    back_to_back: bool,
    input_size: Vec<usize>,
    window_size: Vec<usize>,
    stride: Vec<usize>,
    dilation: Vec<usize>,
    causal: Vec<bool>,
    batch: usize,
    heads: usize,
    heads_kv: usize,
    dim: usize,
    dim_value: usize,
    extra_kv: usize,
    /// `(q_tile, kv_tile)` that `NaBackend::Auto` took from the tile cache (`--optimize`), if
    /// any.
    tiles_from_cache: Option<(Vec<usize>, Vec<usize>)>,
    forward_tflops_count: f64,
    timing: Timing,
    forward_tflops: f64,
    forward_backward_tflops: Option<f64>,
    reference: Option<Timing>,
    forward_speedup_over_reference: Option<f64>,
    /// Dense attention over all tokens (+ extra), same heads and dims, same implementation.
    dense: Option<Timing>,
    forward_speedup_over_dense: Option<f64>,
    forward_backward_speedup_over_dense: Option<f64>,
}

fn problem(args: Args) -> Result<Problem, String> {
    let kernel = args.per_axis("window-size", &args.window_size)?;
    let stride = args.per_axis("stride", &args.stride)?;
    let dilation = args.per_axis("dilation", &args.dilation)?;
    let causal = args.per_axis("causal", &args.causal)?;
    let axes: Vec<AxisParams> = (0..kernel.len())
        .map(|a| AxisParams {
            kernel_size: kernel[a],
            stride: stride[a],
            dilation: dilation[a],
            causal: causal[a],
        })
        .collect();
    validate_axes(&args.input_size, &axes).map_err(|e| e.to_string())?;
    let heads_kv = args.heads_kv.unwrap_or(args.heads);
    if heads_kv == 0 || !args.heads.is_multiple_of(heads_kv) {
        return Err(format!(
            "`--heads-kv` must divide `--heads`: {heads_kv} does not divide {}",
            args.heads
        ));
    }
    let dtype = match args.dtype {
        Dtype::F32 => DType::F32,
        Dtype::F16 => DType::F16,
        Dtype::Bf16 => DType::BF16,
    };
    Ok(Problem {
        choice: choice(args.implementation),
        dim_value: args.dim_value.unwrap_or(args.dim),
        heads_kv,
        axes,
        dtype,
        args,
    })
}

fn choice(i: Implementation) -> NaBackend {
    match i {
        Implementation::Auto => NaBackend::Auto,
        Implementation::Reference => NaBackend::Reference,
        Implementation::CubeFna => NaBackend::CubeFna,
        Implementation::CudaFna => NaBackend::CudaFna,
    }
}

fn profile<B: Backend + burn_natten::NattenBackend>(p: &Problem) -> Result<Report, NattenError>
where
    burn_natten::burn::backend::Autodiff<B>: burn_natten::NattenBackend,
{
    let device = B::Device::default();
    let a = &p.args;
    let na = |choice| Op::Na {
        choice,
        tiles: None,
    };
    let timing = time::<B>(p, na(p.choice), &device)?;
    let tiles_from_cache = (p.choice == NaBackend::Auto && a.q_tile.is_none())
        .then(cache_path)
        .flatten()
        .and_then(|path| {
            tuned_tiles::<B>(
                &path,
                &device,
                &a.input_size,
                &p.axes,
                a.dim,
                p.dim_value,
                p.dtype,
            )
        })
        .map(|t| (t.q_tile, t.kv_tile));
    let reference = a
        .compare_reference
        .then(|| time::<B>(p, na(NaBackend::Reference), &device))
        .transpose()?;
    let dense = (!a.no_dense)
        .then(|| time::<B>(p, Op::Dense { choice: p.choice }, &device))
        .transpose()?;
    let shape = burn_natten::natten_core::AttentionShape {
        batch: a.batch,
        spatial: a.input_size.clone(),
        kv_tokens: a.input_size.iter().product(),
        heads: a.heads,
        heads_kv: p.heads_kv,
        head_dim: a.dim,
        head_dim_v: p.dim_value,
    };
    let fwd_flops = flops::forward_flops(
        &shape,
        flops::na_pair_count(&a.input_size, &p.axes, a.extra_kv),
    );
    let tflops = |ms: f64, f: f64| f / (ms * 1e-3) / 1e12;
    Ok(Report {
        device: format!("{} ({device:?})", B::name(&device)),
        backend: a.backend,
        implementation: a.implementation,
        dtype: a.dtype,
        back_to_back: a.back_to_back,
        input_size: a.input_size.clone(),
        window_size: p.axes.iter().map(|x| x.kernel_size).collect(),
        stride: p.axes.iter().map(|x| x.stride).collect(),
        dilation: p.axes.iter().map(|x| x.dilation).collect(),
        causal: p.axes.iter().map(|x| x.causal).collect(),
        batch: a.batch,
        heads: a.heads,
        heads_kv: p.heads_kv,
        dim: a.dim,
        dim_value: p.dim_value,
        extra_kv: a.extra_kv,
        tiles_from_cache,
        forward_tflops_count: fwd_flops / 1e12,
        timing,
        forward_tflops: tflops(timing.forward_ms, fwd_flops),
        forward_backward_tflops: timing
            .forward_backward_ms
            .map(|ms| tflops(ms, 3.5 * fwd_flops)),
        reference,
        forward_speedup_over_reference: reference.map(|r| r.forward_ms / timing.forward_ms),
        dense,
        forward_speedup_over_dense: dense.map(|d| d.forward_ms / timing.forward_ms),
        forward_backward_speedup_over_dense: dense
            .and_then(|d| Some(d.forward_backward_ms? / timing.forward_backward_ms?)),
    })
}

fn print_table(r: &Report) {
    println!("device           {}", r.device);
    println!(
        "problem          input {:?} window {:?} stride {:?} dilation {:?} causal {:?}",
        r.input_size, r.window_size, r.stride, r.dilation, r.causal
    );
    println!(
        "                 batch {} heads {} (kv {}) dim {} (v {}) extra kv {} {:?}",
        r.batch, r.heads, r.heads_kv, r.dim, r.dim_value, r.extra_kv, r.dtype
    );
    if r.back_to_back {
        println!("timing           calls back to back (per-call means, median of three runs)");
    }
    if let Some((q, kv)) = &r.tiles_from_cache {
        println!("tiles            q_tile {q:?} kv_tile {kv:?} (from the tile cache)");
    }
    println!(
        "{:<16} {:>12} {:>12} {:>10} {:>14} {:>12}",
        "implementation", "fwd ms", "fwd TFLOP/s", "bwd ms", "fwd+bwd ms", "TFLOP/s"
    );
    let row = |name: String, t: &Timing, fwd: f64, bwd: Option<f64>| {
        let (bms, btf) = match (t.forward_backward_ms, bwd) {
            (Some(ms), Some(tf)) => (format!("{ms:.3}"), format!("{tf:.4}")),
            _ => ("-".into(), "-".into()),
        };
        let backward = t.backward_ms.map_or("-".into(), |ms| format!("{ms:.3}"));
        println!(
            "{name:<16} {:>12.3} {:>12.4} {backward:>10} {bms:>14} {btf:>12}",
            t.forward_ms, fwd
        );
    };
    row(
        format!("{:?}", r.implementation),
        &r.timing,
        r.forward_tflops,
        r.forward_backward_tflops,
    );
    if let Some(reference) = &r.reference {
        let f = r.forward_tflops_count;
        let fb = reference
            .forward_backward_ms
            .map(|ms| 3.5 * f / (ms * 1e-3));
        row(
            "Reference".into(),
            reference,
            f / (reference.forward_ms * 1e-3),
            fb,
        );
        println!(
            "forward speedup over the reference: {:.2}x",
            r.forward_speedup_over_reference.unwrap()
        );
    }
    if let (Some(dense), Some(speedup)) = (&r.dense, r.forward_speedup_over_dense) {
        let dense_ms = |ms: Option<f64>| ms.map_or("-".into(), |ms| format!("{ms:.3}"));
        println!(
            "{:<16} {:>12.3} {:>12} {:>10} {:>14} {:>12}",
            "dense attention",
            dense.forward_ms,
            "-",
            dense_ms(dense.backward_ms),
            dense_ms(dense.forward_backward_ms),
            "-"
        );
        let backward = r
            .forward_backward_speedup_over_dense
            .map_or(String::new(), |x| format!(", forward+backward {x:.2}x"));
        println!("speedup over dense attention: forward {speedup:.2}x{backward}");
    }
}

/// Calls `$f::<B>($p)` with the Burn backend `B` that `--backend` names (one generic function
/// per mode: optimize, dry run, profile), or stops when that backend was not compiled in.
macro_rules! on_backend {
    ($backend:expr, $($f:ident)::+, $p:expr) => {
        match $backend {
            #[cfg(feature = "ndarray")]
            DeviceBackend::Ndarray => $($f)::+::<burn_natten::burn::backend::NdArray>($p),
            #[cfg(feature = "wgpu")]
            DeviceBackend::Wgpu => $($f)::+::<burn_natten::burn::backend::Wgpu>($p),
            #[cfg(feature = "cuda")]
            DeviceBackend::Cuda => $($f)::+::<burn_natten::burn::backend::Cuda>($p),
            #[cfg(feature = "rocm")]
            DeviceBackend::Rocm => $($f)::+::<burn_natten::burn::backend::Rocm>($p),
            #[allow(unreachable_patterns)]
            other => not_compiled(other),
        }
    };
}

fn not_compiled(backend: DeviceBackend) -> ! {
    eprintln!("error: `--backend {backend:?}` was not compiled in (enable its cargo feature)");
    std::process::exit(2);
}

fn main() {
    let args = Args::parse();
    let json = args.json;
    let backend = args.backend;
    let p = match problem(args) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(2);
        }
    };
    if p.args.optimize {
        let report = on_backend!(backend, optimize::optimize, &p);
        match report {
            Ok(r) if json => println!(
                "{}",
                serde_json::to_string_pretty(&r).expect("serialisable")
            ),
            Ok(r) => optimize::print(&r),
            Err(e) => {
                eprintln!("error: {e}");
                std::process::exit(1);
            }
        }
        return;
    }
    if p.args.dry_run {
        let report = on_backend!(backend, dry_run::dry_run, &p);
        if json {
            println!(
                "{}",
                serde_json::to_string_pretty(&report).expect("serialisable")
            );
        } else {
            dry_run::print(&report);
        }
        return;
    }
    let report = on_backend!(backend, profile, &p);
    match report {
        Ok(r) if json => println!(
            "{}",
            serde_json::to_string_pretty(&r).expect("serialisable")
        ),
        Ok(r) => print_table(&r),
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(1);
        }
    }
}
