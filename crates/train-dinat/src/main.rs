//! Trains a small DiNAT-style classifier (neighborhood-attention blocks with dilation 1 and 2)
//! with burn-train's `Learner` on procedurally drawn shapes, then writes the loss/accuracy curves
//! as a PNG and prints the final validation accuracy.
//!
//! ```sh
//! cargo run -p train-dinat -- --backend ndarray --epochs 6
//! ```
//!
//! `--backend wgpu` (default feature) and `--backend cuda` (this package's `cuda` feature) train
//! on the GPU; `--min-accuracy 50` exits with an error when the final validation accuracy (%) is
//! lower (CI uses it). The book's "Training" page shows a run.

mod data;
mod model;
mod plot;
mod progress;

use std::path::PathBuf;
use std::time::Instant;

use burn::data::dataloader::DataLoaderBuilder;
use burn::data::dataloader::batcher::Batcher;
use burn::data::dataset::Dataset;
use burn::optim::AdamWConfig;
use burn::tensor::ElementConversion;
use burn::tensor::backend::AutodiffBackend;
use burn::train::metric::{AccuracyMetric, LossMetric};
use burn::train::{Learner, LearnerSummary, SupervisedTraining};
use burn_natten::NattenBackend;
use clap::{Parser, ValueEnum};

use data::{CLASSES, ShapeBatcher, ShapeItem, shapes};
use model::{Dinat, DinatConfig};
use plot::Series;

/// Where the model trains.
#[derive(Clone, Copy, Debug, ValueEnum)]
enum BackendArg {
    /// NdArray on the CPU.
    Ndarray,
    /// Wgpu (Vulkan, Metal, DX12; lavapipe on a CPU-only machine).
    Wgpu,
    /// CUDA (needs the crate's `cuda` feature).
    Cuda,
}

/// Command-line options; the defaults train in about a minute on a CPU.
#[derive(Parser, Debug)]
#[command(about = "Train a small DiNAT-style classifier on procedurally drawn shapes")]
struct Args {
    /// Backend to train on.
    #[arg(long, value_enum, default_value = "ndarray")]
    backend: BackendArg,
    /// Passes over the training set.
    #[arg(long, default_value_t = 4)]
    epochs: usize,
    /// Training images (balanced over the 8 classes).
    #[arg(long, default_value_t = 2048)]
    train_size: usize,
    /// Validation images (drawn with another seed).
    #[arg(long, default_value_t = 512)]
    valid_size: usize,
    /// Side of the square images, in pixels (a multiple of the 2x2 patch).
    #[arg(long, default_value_t = 16)]
    image_size: usize,
    /// Standard deviation of the Gaussian pixel noise (shapes have brightness 0.6-1).
    #[arg(long, default_value_t = 0.3)]
    noise: f32,
    /// Images per batch.
    #[arg(long, default_value_t = 32)]
    batch_size: usize,
    /// AdamW learning rate.
    #[arg(long, default_value_t = 2e-3)]
    lr: f64,
    /// Neighborhood-attention blocks (dilation 1, 2, 1, ...).
    #[arg(long, default_value_t = 2)]
    depth: usize,
    /// Token channels.
    #[arg(long, default_value_t = 32)]
    embed_dim: usize,
    /// Seed of the data and of the weights.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Where the loss/accuracy plot goes.
    #[arg(long, default_value = "train-dinat.png")]
    plot: PathBuf,
    /// Exit with an error when the final validation accuracy (%) is below this.
    #[arg(long)]
    min_accuracy: Option<f64>,
}

fn main() -> std::process::ExitCode {
    match run(&Args::parse()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Trains on the backend `--backend` names.
fn run(args: &Args) -> Result<(), Box<dyn std::error::Error>> {
    match args.backend {
        BackendArg::Ndarray => {
            train::<burn::backend::Autodiff<burn::backend::NdArray>>(args, Default::default())
        }
        #[cfg(feature = "wgpu")]
        BackendArg::Wgpu => {
            train::<burn::backend::Autodiff<burn::backend::Wgpu>>(args, Default::default())
        }
        #[cfg(feature = "cuda")]
        BackendArg::Cuda => {
            train::<burn::backend::Autodiff<burn::backend::Cuda>>(args, Default::default())
        }
        #[allow(unreachable_patterns)]
        other => Err(
            format!("backend {other:?}: build train-dinat with its feature of that name").into(),
        ),
    }
}

/// Trains on `B` and reports; returns an error when `--min-accuracy` is not met.
fn train<B>(args: &Args, device: B::Device) -> Result<(), Box<dyn std::error::Error>>
where
    B: AutodiffBackend + NattenBackend,
    B::InnerBackend: NattenBackend,
{
    B::seed(&device, args.seed);
    let config = DinatConfig::new(CLASSES.len())
        .with_depth(args.depth)
        .with_embed_dim(args.embed_dim);
    let model: Dinat<B> = config.init(args.image_size, &device)?;

    let batcher = ShapeBatcher {
        size: args.image_size,
    };
    let train_set = shapes(args.train_size, args.image_size, args.noise, args.seed);
    let valid_set = shapes(args.valid_size, args.image_size, args.noise, args.seed + 1);
    let train_loader = DataLoaderBuilder::new(batcher.clone())
        .batch_size(args.batch_size)
        .shuffle(args.seed)
        .set_device(device.clone())
        .build(train_set);
    let valid_loader = DataLoaderBuilder::new(batcher.clone())
        .batch_size(args.batch_size)
        .set_device(device.clone())
        .build(shapes(
            args.valid_size,
            args.image_size,
            args.noise,
            args.seed + 1,
        ));

    // burn-train's metric logs (read back below for the plot); removed at the end.
    let artifacts = std::env::temp_dir().join(format!("train-dinat-{}", std::process::id()));
    println!(
        "DiNAT-style classifier: {} blocks, embed {}, {} classes, {}x{} images; {} train / {} valid; {:?}",
        args.depth,
        args.embed_dim,
        CLASSES.len(),
        args.image_size,
        args.image_size,
        args.train_size,
        args.valid_size,
        args.backend
    );
    let start = Instant::now();
    // ANCHOR: learner
    let training = SupervisedTraining::new(&artifacts, train_loader, valid_loader)
        .metrics((AccuracyMetric::new(), LossMetric::new()))
        .renderer(progress::BarRenderer::new())
        .with_application_logger(None)
        .num_epochs(args.epochs);
    let mut result = training.launch(Learner::new(model, AdamWConfig::new().init(), args.lr));
    // ANCHOR_END: learner
    result.renderer.manual_close();
    let seconds = start.elapsed().as_secs_f64();

    let accuracy = accuracy(
        &result.model,
        &batcher,
        &valid_set,
        args.batch_size,
        &device,
    );
    curves(&artifacts, &args.plot)?;
    std::fs::remove_dir_all(&artifacts).ok();
    println!(
        "trained {} epochs in {seconds:.1} s; plot: {}",
        args.epochs,
        args.plot.display()
    );
    println!(
        "final validation accuracy: {accuracy:.2}% (chance: {:.2}%)",
        100.0 / CLASSES.len() as f64
    );
    match args.min_accuracy {
        Some(min) if accuracy < min => {
            Err(format!("validation accuracy {accuracy:.2}% is below --min-accuracy {min}%").into())
        }
        _ => Ok(()),
    }
}

/// Percentage of `items` that the trained model classifies correctly.
fn accuracy<B: NattenBackend>(
    model: &Dinat<B>,
    batcher: &ShapeBatcher,
    items: &impl Dataset<ShapeItem>,
    batch_size: usize,
    device: &B::Device,
) -> f64 {
    let mut correct = 0;
    let all: Vec<ShapeItem> = items.iter().collect();
    for chunk in all.chunks(batch_size) {
        let batch = Batcher::<B, _, _>::batch(batcher, chunk.to_vec(), device);
        let predicted = model.forward(batch.images).argmax(1).flatten::<1>(0, 1);
        let hits = predicted.equal(batch.targets).int().sum().into_scalar();
        correct += hits.elem::<i64>();
    }
    100.0 * correct as f64 / all.len().max(1) as f64
}

/// Reads the per-epoch means that burn-train logged and plots them.
fn curves(
    artifacts: &std::path::Path,
    png: &std::path::Path,
) -> Result<(), Box<dyn std::error::Error>> {
    let summary = LearnerSummary::new(artifacts, &["Loss", "Accuracy"])?;
    let series = |name: &str| {
        let splits = [
            ("train", &summary.metrics.train),
            ("valid", &summary.metrics.valid),
        ];
        splits
            .iter()
            .filter_map(|(split, metrics)| {
                let m = metrics.iter().find(|m| m.name == name)?;
                Some(Series {
                    name: format!("{split} {}", name.to_lowercase()),
                    values: m.entries.iter().map(|e| e.value).collect(),
                })
            })
            .collect::<Vec<_>>()
    };
    for s in series("Loss").iter().chain(&series("Accuracy")) {
        let values: Vec<String> = s.values.iter().map(|v| format!("{v:.3}")).collect();
        println!("  {:<14} per epoch: {}", s.name, values.join(", "));
    }
    plot::plot(png, &series("Loss"), &series("Accuracy"))
}
