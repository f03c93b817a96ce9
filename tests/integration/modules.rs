//! The `NeighborhoodAttention{1,2,3}d` layers: shapes, equality with the hand-composed
//! projection -> `na2d` -> projection, a save/load round trip through Burn's recorders,
//! configuration errors, and gradients through `Autodiff<NdArray>`.

use burn::backend::Autodiff;
use burn::config::Config;
use burn::module::Module;
use burn::record::{FullPrecisionSettings, NamedMpkFileRecorder, Recorder};
use burn::tensor::{DType, Tensor};
use burn_natten::*;

use crate::common::*;

/// A seeded input `[batch, *spatial, channels]` on NdArray.
fn input<const D: usize>(shape: [usize; D], seed: u64) -> Tensor<Cpu, D> {
    let n = shape.iter().product();
    tensor(
        normal(n, &mut rng(seed)),
        shape,
        DType::F32,
        &Default::default(),
    )
}

#[track_caller]
fn expect_err<T: std::fmt::Debug>(result: Result<T, NattenError>, argument: &str, needle: &str) {
    let err = result.expect_err("must be rejected");
    assert_eq!(err.argument(), Some(argument), "wrong argument in: {err}");
    assert!(
        err.to_string().contains(needle),
        "message lacks {needle:?}: {err}"
    );
}

#[test]
fn shapes_1d_2d_3d() -> Result<(), NattenError> {
    let device = Default::default();
    let m1 = NeighborhoodAttention1dConfig::new(16, 4, [5])
        .with_dilation([2])
        .with_is_causal([true])
        .init::<Cpu>(&device)?;
    assert_eq!(m1.forward(input([2, 13, 16], 1))?.dims(), [2, 13, 16]);

    let m2 = NeighborhoodAttention2dConfig::new(24, 6, [3, 4])
        .with_num_kv_heads(Some(2))
        .with_stride([2, 1])
        .init::<Cpu>(&device)?;
    assert_eq!((m2.num_kv_heads(), m2.head_dim()), (2, 4));
    assert_eq!(m2.forward(input([1, 7, 9, 24], 2))?.dims(), [1, 7, 9, 24]);

    // MQA, no biases.
    let m3 = NeighborhoodAttention3dConfig::new(8, 2, [2, 3, 3])
        .with_num_kv_heads(Some(1))
        .with_qkv_bias(false)
        .with_proj_bias(false)
        .init::<Cpu>(&device)?;
    assert!(m3.qkv.bias.is_none() && m3.proj.bias.is_none());
    assert_eq!(m3.qkv.weight.dims(), [8, (2 + 2) * 4]);
    assert_eq!(
        m3.forward(input([1, 3, 4, 5, 8], 3))?.dims(),
        [1, 3, 4, 5, 8]
    );
    Ok(())
}

/// The module equals `x W_qkv + b` split into Q | K | V heads, `na2d`, heads merged,
/// `W_proj + b`, written out by hand with the module's own weights (GQA, stride, dilation,
/// causal and scale all set, so each must reach `na2d`).
#[test]
fn equals_hand_composed_projection_na2d_projection() -> Result<(), NattenError> {
    let device = Default::default();
    let (c, heads, kv_heads, head_dim) = (16, 4, 2, 4);
    let (h, w) = (6, 7);
    let m = NeighborhoodAttention2dConfig::new(c, heads, [3, 4])
        .with_num_kv_heads(Some(kv_heads))
        .with_stride([1, 2])
        .with_dilation([2, 1])
        .with_is_causal([false, true])
        .with_scale(Some(0.3))
        .init::<Cpu>(&device)?;
    let x = input([2, h, w, c], 4);
    let got = values(m.forward(x.clone())?);

    let linear = |x: Tensor<Cpu, 2>, l: &burn::nn::Linear<Cpu>| {
        x.matmul(l.weight.val()) + l.bias.as_ref().unwrap().val().unsqueeze::<2>()
    };
    let qkv = linear(x.reshape([2 * h * w, c]), &m.qkv);
    let part = |start: usize, n: usize| {
        qkv.clone()
            .narrow(1, start * head_dim, n * head_dim)
            .reshape([2, h, w, n, head_dim])
    };
    let q = part(0, heads);
    let k = part(heads, kv_heads);
    let v = part(heads + kv_heads, kv_heads);
    let opts = NaOptions::new([3, 4])
        .with_stride([1, 2])
        .with_dilation([2, 1])
        .with_causal([false, true])
        .with_scale(0.3);
    let attended = na2d(q, k, v, &opts)?.reshape([2 * h * w, c]);
    let want = values(linear(attended, &m.proj));
    assert_close("module vs hand-composed", &got, &want, 1e-6, 1e-5);
    Ok(())
}

/// Config (JSON) and record (named MessagePack, full precision) saved to files; a module
/// rebuilt from the loaded config with fresh weights, then given the loaded record, gives
/// bit-identical outputs.
#[test]
fn save_and_load_round_trip() -> Result<(), Box<dyn std::error::Error>> {
    let device = Default::default();
    let dir = std::env::temp_dir().join(format!("burn-natten-modules-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let config = NeighborhoodAttention2dConfig::new(12, 3, [3, 3])
        .with_dilation([1, 2])
        .with_is_causal([true, false]);
    let module = config.init::<Cpu>(&device)?;
    let x = input([1, 5, 6, 12], 5);
    let before = values(module.forward(x.clone())?);

    config.save(dir.join("config.json"))?;
    let recorder = NamedMpkFileRecorder::<FullPrecisionSettings>::new();
    module.save_file(dir.join("weights"), &recorder)?;

    let config = NeighborhoodAttention2dConfig::load(dir.join("config.json"))?;
    let fresh = config.init::<Cpu>(&device)?;
    assert_ne!(
        values(fresh.forward(x.clone())?),
        before,
        "a fresh module should differ before loading"
    );
    let record = recorder.load(dir.join("weights"), &device)?;
    let loaded = fresh.load_record(record);
    let after = values(loaded.forward(x)?);
    std::fs::remove_dir_all(&dir)?;
    assert_eq!(after, before, "outputs after save and load");
    Ok(())
}

#[test]
fn bad_configurations_are_errors() {
    let device = Default::default();
    let init = |c: NeighborhoodAttention2dConfig| c.init::<Cpu>(&device);
    let base = || NeighborhoodAttention2dConfig::new(16, 4, [3, 3]);
    expect_err(
        init(NeighborhoodAttention2dConfig::new(10, 4, [3, 3])),
        "embed_dim",
        "multiple of num_heads",
    );
    expect_err(
        init(NeighborhoodAttention2dConfig::new(16, 0, [3, 3])),
        "num_heads",
        ">= 1",
    );
    expect_err(
        init(base().with_num_kv_heads(Some(3))),
        "num_kv_heads",
        "evenly divide",
    );
    expect_err(
        init(base().with_num_kv_heads(Some(0))),
        "num_kv_heads",
        ">= 1",
    );
    expect_err(
        init(NeighborhoodAttention2dConfig::new(16, 4, [3, 1])),
        "kernel_size",
        ">= 2",
    );
    expect_err(
        init(base().with_stride([4, 1])),
        "stride",
        "larger than kernel size",
    );
    expect_err(init(base().with_dilation([1, 0])), "dilation", ">= 1");
    expect_err(init(base().with_scale(Some(0.0))), "scale", "non-zero");
    expect_err(init(base().with_proj_drop(1.5)), "proj_drop", "[0, 1]");

    // Rules that need the input are checked by forward.
    let m = init(base().with_dilation([3, 1])).unwrap();
    expect_err(m.forward(input([1, 8, 8, 16], 6)), "dilation", "3 x 3 > 8");
    expect_err(m.forward(input([1, 9, 9, 8], 6)), "x", "embed_dim 16");
}

/// A backward call through the layer on `Autodiff<NdArray>` reaches both projections.
#[test]
fn gradients_flow_through_autodiff() -> Result<(), NattenError> {
    type B = Autodiff<Cpu>;
    let device = Default::default();
    let m = NeighborhoodAttention2dConfig::new(8, 2, [3, 3])
        .with_num_kv_heads(Some(1))
        .with_is_causal([true, false])
        .init::<B>(&device)?;
    let x = Tensor::<B, 4>::from_inner(input([1, 5, 5, 8], 7)).require_grad();
    let loss = m.forward(x.clone())?.powi_scalar(2).mean();
    let grads = loss.backward();
    let nonzero = |g: Option<Vec<f32>>, what: &str| {
        let g = g.unwrap_or_else(|| panic!("no gradient for {what}"));
        assert!(
            g.iter().all(|v| v.is_finite()) && g.iter().any(|&v| v != 0.0),
            "{what}: gradient is zero or not finite"
        );
    };
    nonzero(m.proj.weight.grad(&grads).map(values), "proj.weight");
    nonzero(
        m.proj.bias.as_ref().unwrap().grad(&grads).map(values),
        "proj.bias",
    );
    nonzero(m.qkv.weight.grad(&grads).map(values), "qkv.weight");
    nonzero(x.grad(&grads).map(values), "x");
    Ok(())
}
