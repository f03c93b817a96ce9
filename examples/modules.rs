//! A neighborhood-attention layer: build `NeighborhoodAttention2d` from its config, run it, take
//! one training step on `Autodiff<NdArray>`, save config and weights, load them into a fresh
//! module. The book's "Modules" page includes the marked parts of this file.
//!
//! Run with `cargo run --example modules`.

use burn::backend::{Autodiff, NdArray};
use burn::config::Config;
use burn::module::{AutodiffModule, Module};
use burn::optim::{GradientsParams, Optimizer, SgdConfig};
use burn::record::{FullPrecisionSettings, NamedMpkFileRecorder};
use burn::tensor::{Distribution, Tensor};
use burn_natten::{NattenError, NeighborhoodAttention2dConfig};

type B = NdArray;
type Train = Autodiff<NdArray>;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let device = Default::default();

    // ANCHOR: build
    // embed_dim 64, 4 query heads, a 7x7 window.
    let config = NeighborhoodAttention2dConfig::new(64, 4, [7, 7])
        .with_num_kv_heads(Some(2)) // GQA: the K/V projections produce 2 heads
        .with_dilation([2, 1])
        .with_is_causal([false, true]); // causal along the width only
    let layer = config.init::<B>(&device)?; // Err(NattenError) for a bad config

    // [batch, height, width, embed_dim] -> the same shape
    let x = Tensor::<B, 4>::random([2, 16, 16, 64], Distribution::Normal(0.0, 1.0), &device);
    let y = layer.forward(x.clone())?;
    assert_eq!(y.dims(), [2, 16, 16, 64]);
    // ANCHOR_END: build

    // ANCHOR: errors
    let bad = NeighborhoodAttention2dConfig::new(64, 4, [7, 7]).with_num_kv_heads(Some(3));
    match bad.init::<B>(&device) {
        Err(NattenError::InvalidArgument { argument, rule }) => {
            assert_eq!(argument, "num_kv_heads");
            println!("rejected: {argument}: {rule}");
        }
        other => panic!("expected an error, got {other:?}"),
    }
    // ANCHOR_END: errors

    // ANCHOR: train
    let mut model = config.init::<Train>(&device)?;
    let mut optim = SgdConfig::new().init();
    let batch =
        Tensor::<Train, 4>::random([2, 16, 16, 64], Distribution::Normal(0.0, 1.0), &device);
    let loss = model.forward(batch)?.powi_scalar(2).mean();
    let grads = GradientsParams::from_grads(loss.backward(), &model);
    model = optim.step(1e-2, model, grads);
    // ANCHOR_END: train
    let _trained = model.valid(); // the inner-backend module, for inference

    // ANCHOR: record
    let dir = std::env::temp_dir().join(format!("burn-natten-example-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let recorder = NamedMpkFileRecorder::<FullPrecisionSettings>::new();
    config.save(dir.join("config.json"))?; // the hyper-parameters, as JSON
    layer.clone().save_file(dir.join("layer"), &recorder)?; // the weights: layer.mpk

    let config = NeighborhoodAttention2dConfig::load(dir.join("config.json"))?;
    let loaded = config
        .init::<B>(&device)?
        .load_file(dir.join("layer"), &recorder, &device)?;
    // ANCHOR_END: record
    std::fs::remove_dir_all(&dir)?;

    let same = loaded.forward(x)?.equal(y).all().into_scalar();
    assert!(same, "the loaded layer must give the same output");
    println!("NeighborhoodAttention2d: forward, training step, save and load: ok");
    Ok(())
}
