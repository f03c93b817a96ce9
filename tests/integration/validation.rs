//! Every validation rule returns a `NattenError` naming the argument (no panic).

use burn::tensor::{DType, Tensor};
use burn_natten::*;

use crate::common::Cpu;

fn zeros<const D: usize>(shape: [usize; D]) -> Tensor<Cpu, D> {
    Tensor::zeros(shape, &Default::default())
}

#[track_caller]
fn expect_err<T: std::fmt::Debug>(result: Result<T, NattenError>, argument: &str, needle: &str) {
    let err = result.expect_err("must be rejected");
    assert_eq!(
        err.argument(),
        Some(argument),
        "wrong argument named in: {err}"
    );
    assert!(
        err.to_string().contains(needle),
        "message lacks {needle:?}: {err}"
    );
}

/// `result` must be `NattenError::Unsupported` naming `backend`, with `needle` in its message
/// (`""`: any message).
fn expect_unsupported<T: std::fmt::Debug>(
    result: Result<T, NattenError>,
    backend: &str,
    needle: &str,
) {
    let err = result.expect_err("must be unsupported");
    assert!(
        matches!(&err, NattenError::Unsupported { backend: b, .. } if *b == backend),
        "not Unsupported by {backend}: {err}"
    );
    assert!(
        err.to_string().contains(needle),
        "message lacks {needle:?}: {err}"
    );
}

fn qkv2d() -> (Tensor<Cpu, 5>, Tensor<Cpu, 5>, Tensor<Cpu, 5>) {
    (
        zeros([1, 8, 8, 4, 16]),
        zeros([1, 8, 8, 2, 16]),
        zeros([1, 8, 8, 2, 8]),
    )
}

#[test]
fn parameter_rules() {
    let (q, k, v) = qkv2d();
    let run = |o: NaOptions<2>| na2d(q.clone(), k.clone(), v.clone(), &o);
    expect_err(run(NaOptions::new([1, 3])), "kernel_size", ">= 2");
    expect_err(
        run(NaOptions::new([3, 3]).with_stride([4, 1])),
        "stride",
        "cannot be larger than kernel size",
    );
    expect_err(
        run(NaOptions::new([3, 3]).with_stride([0, 1])),
        "stride",
        ">= 1",
    );
    expect_err(
        run(NaOptions::new([3, 3]).with_dilation([1, 0])),
        "dilation",
        ">= 1",
    );
    expect_err(
        run(NaOptions::new([3, 3]).with_dilation([3, 1])),
        "dilation",
        "3 x 3 > 8",
    );
    expect_err(run(NaOptions::new([9, 3])), "dilation", "9 x 1 > 8");
    expect_err(
        run(NaOptions::new([3, 3]).with_scale(f32::NAN)),
        "scale",
        "finite",
    );
    expect_err(
        run(NaOptions::new([3, 3]).with_scale(0.0)),
        "scale",
        "non-zero",
    );
    assert!(
        run(NaOptions::new([8, 8])
            .with_stride([8, 8])
            .with_causal([true, false]))
        .is_ok()
    );
}

#[test]
fn tensor_rules() {
    let (q, k, v) = qkv2d();
    let o = NaOptions::new([3, 3]);
    expect_err(
        na2d(q.clone(), zeros([1, 8, 8, 2, 8]), v.clone(), &o),
        "k",
        "same head dim",
    );
    expect_err(
        na2d(q.clone(), zeros([1, 8, 7, 2, 16]), v.clone(), &o),
        "k",
        "token layout",
    );
    expect_err(
        na2d(q.clone(), k.clone(), zeros([2, 8, 8, 2, 8]), &o),
        "v",
        "token layout",
    );
    expect_err(
        na2d(
            q.clone(),
            zeros([1, 8, 8, 3, 16]),
            zeros([1, 8, 8, 3, 8]),
            &o,
        ),
        "k",
        "evenly divide",
    );
    expect_err(
        na2d(q.clone(), k.clone(), zeros([1, 8, 8, 1, 8]), &o),
        "v",
        "same number of heads",
    );
    expect_err(
        na2d(zeros([1, 8, 0, 4, 16]), k.clone(), v.clone(), &o),
        "q",
        "non-zero",
    );
    let other_dtype = k.clone().cast(DType::F64);
    expect_err(
        na2d(q.clone(), other_dtype, v.clone(), &o),
        "k",
        "same dtype",
    );
}

#[test]
fn extra_kv_rules() {
    let (q, k, v) = qkv2d();
    let o = NaOptions::new([3, 3]);
    let run = |ek: Tensor<Cpu, 4>, ev: Tensor<Cpu, 4>| {
        na2d_with_extra_kv(q.clone(), k.clone(), v.clone(), ek, ev, &o)
    };
    expect_err(
        run(zeros([1, 5, 2, 8]), zeros([1, 5, 2, 8])),
        "extra_k",
        "[batch, extra, heads_kv, head_dim]",
    );
    expect_err(
        run(zeros([1, 5, 2, 16]), zeros([1, 4, 2, 8])),
        "extra_v",
        "extra tokens as in extra_k",
    );
    expect_err(
        run(zeros([1, 5, 1, 16]), zeros([1, 5, 1, 8])),
        "extra_k",
        "heads_kv",
    );
    expect_err(
        run(zeros([2, 5, 2, 16]), zeros([2, 5, 2, 8])),
        "extra_k",
        "batch",
    );
    assert!(run(zeros([1, 5, 2, 16]), zeros([1, 5, 2, 8])).is_ok());
}

#[test]
fn attention_and_merge_rules() {
    let o = AttentionOptions::new();
    let q = zeros([2, 6, 4, 8]);
    expect_err(
        attention(q.clone(), zeros([1, 9, 2, 8]), zeros([1, 9, 2, 8]), &o),
        "k",
        "batch",
    );
    expect_err(
        attention(q.clone(), zeros([2, 9, 2, 8]), zeros([2, 7, 2, 8]), &o),
        "v",
        "sequence length",
    );
    expect_err(
        attention(q.clone(), zeros([2, 9, 3, 8]), zeros([2, 9, 3, 8]), &o),
        "k",
        "evenly divide",
    );
    assert_eq!(
        attention(q.clone(), zeros([2, 9, 2, 8]), zeros([2, 9, 2, 4]), &o)
            .unwrap()
            .dims(),
        [2, 6, 4, 4]
    );

    let out = zeros([2, 6, 4, 8]);
    let lse = zeros([2, 6, 4]);
    expect_err(
        merge_attentions(vec![out.clone()], vec![lse.clone()]),
        "outs",
        "at least 2",
    );
    expect_err(
        merge_attentions(vec![out.clone(), out.clone()], vec![lse.clone()]),
        "lses",
        "one LSE per output",
    );
    expect_err(
        merge_attentions(
            vec![out.clone(), zeros([2, 6, 4, 4])],
            vec![lse.clone(), lse.clone()],
        ),
        "outs",
        "share shape",
    );
    expect_err(
        merge_attentions(
            vec![out.clone(), out.clone()],
            vec![lse.clone(), zeros([2, 6, 3])],
        ),
        "lses",
        "[batch, seq, heads]",
    );
}

#[test]
fn explicit_backend_that_cannot_run_is_an_error() {
    let (q, k, v) = qkv2d();
    let opts = NaOptions::new([3, 3]).with_backend(NaBackend::CubeFna);
    expect_unsupported(na2d(q, k, v, &opts), "cube-fna", "not a CubeCL backend");
}

#[test]
fn native_cuda_elsewhere_is_an_error() {
    let (q, k, v) = qkv2d();
    let opts = NaOptions::new([3, 3]).with_backend(NaBackend::CudaFna);
    expect_unsupported(na2d(q, k, v, &opts), "cuda-fna", "not burn-cuda");
    // Attention (FMHA) follows the same rule.
    let x = zeros([1, 8, 2, 16]);
    let native = AttentionOptions::new().with_backend(NaBackend::CudaFna);
    expect_unsupported(attention(x.clone(), x.clone(), x, &native), "cuda-fna", "");
    // On a CubeCL backend of this build (no `cuda-native`), the reason names the feature or
    // the runtime.
    if !crate::common::wgpu_available() {
        return;
    }
    type G = crate::common::Gpu;
    let x = Tensor::<G, 5>::zeros([1, 6, 6, 1, 8], &Default::default());
    expect_unsupported(na2d(x.clone(), x.clone(), x, &opts), "cuda-fna", "");
}

#[test]
fn fused_head_dim_limit_is_an_error_when_explicit() {
    if !crate::common::wgpu_available() {
        return;
    }
    type G = crate::common::Gpu;
    let device = Default::default();
    let q = Tensor::<G, 4>::zeros([1, 8, 1, 264], &device);
    let opts = NaOptions::new([3]).with_backend(NaBackend::CubeFna);
    let err =
        na1d(q.clone(), q.clone(), q.clone(), &opts).expect_err("head dim above the fused limit");
    assert!(err.to_string().contains("at most 256"), "{err}");
    // Auto falls back to the reference instead.
    assert!(na1d(q.clone(), q.clone(), q, &NaOptions::new([3])).is_ok());
}
