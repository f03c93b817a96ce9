//! The data set: procedurally drawn images of eight shapes with noise (nothing is downloaded).
//!
//! Each image is `size x size` grey levels in `[0, 1]` plus Gaussian noise: one shape of a random
//! size, position and brightness. The same seed gives the same images on every machine.

use burn::data::dataloader::batcher::Batcher;
use burn::data::dataset::InMemDataset;
use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor, TensorData};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// The class names, in label order.
pub const CLASSES: [&str; 8] = [
    "horizontal bar",
    "vertical bar",
    "diagonal \\",
    "diagonal /",
    "plus",
    "cross",
    "square outline",
    "disk",
];

/// One image and its label.
#[derive(Clone, Debug)]
pub struct ShapeItem {
    /// Row-major grey levels, `size * size` values.
    pub pixels: Vec<f32>,
    /// Index into [`CLASSES`].
    pub label: usize,
}

/// `count` images of side `size` (balanced classes, shuffled by `seed`), noise of std `noise`.
pub fn shapes(count: usize, size: usize, noise: f32, seed: u64) -> InMemDataset<ShapeItem> {
    let mut rng = StdRng::seed_from_u64(seed);
    let items = (0..count)
        .map(|i| {
            let label = i % CLASSES.len();
            ShapeItem {
                pixels: draw(label, size, noise, &mut rng),
                label,
            }
        })
        .collect();
    InMemDataset::new(items)
}

/// Draws shape `label` into a `size x size` image.
fn draw(label: usize, size: usize, noise: f32, rng: &mut StdRng) -> Vec<f32> {
    let s = size as i64;
    let mut img = vec![0.0f32; size * size];
    let brightness = rng.random_range(0.6..1.0f32);
    // Extent of the shape: between 40% and 80% of the side; its centre anywhere it fits.
    let len = rng.random_range((s * 2 / 5).max(3)..=(s * 4 / 5).max(4));
    let half = len / 2;
    let cy = rng.random_range(half..s - half);
    let cx = rng.random_range(half..s - half);
    let mut put = |y: i64, x: i64| {
        if (0..s).contains(&y) && (0..s).contains(&x) {
            img[(y * s + x) as usize] = brightness;
        }
    };
    for t in -half..=half {
        match label {
            0 => put(cy, cx + t),
            1 => put(cy + t, cx),
            2 => put(cy + t, cx + t),
            3 => put(cy + t, cx - t),
            4 => {
                put(cy, cx + t);
                put(cy + t, cx);
            }
            5 => {
                put(cy + t, cx + t);
                put(cy + t, cx - t);
            }
            6 => {
                put(cy - half, cx + t);
                put(cy + half, cx + t);
                put(cy + t, cx - half);
                put(cy + t, cx + half);
            }
            _ => {
                for u in -half..=half {
                    if t * t + u * u <= half * half {
                        put(cy + t, cx + u);
                    }
                }
            }
        }
    }
    for p in &mut img {
        *p += noise * gaussian(rng);
    }
    img
}

/// A standard normal sample (Box-Muller).
fn gaussian(rng: &mut StdRng) -> f32 {
    let u1 = rng.random_range(f32::EPSILON..1.0f32);
    let u2 = rng.random::<f32>();
    (-2.0 * u1.ln()).sqrt() * (std::f32::consts::TAU * u2).cos()
}

/// A batch: images `[batch, 1, size, size]` and labels `[batch]`.
#[derive(Clone, Debug)]
pub struct ShapeBatch<B: Backend> {
    /// Grey levels, `[batch, 1, size, size]`.
    pub images: Tensor<B, 4>,
    /// Class indices, `[batch]`.
    pub targets: Tensor<B, 1, Int>,
}

/// Stacks [`ShapeItem`]s of side `size` into a [`ShapeBatch`].
#[derive(Clone, Debug)]
pub struct ShapeBatcher {
    /// Side of the images.
    pub size: usize,
}

impl<B: Backend> Batcher<B, ShapeItem, ShapeBatch<B>> for ShapeBatcher {
    fn batch(&self, items: Vec<ShapeItem>, device: &B::Device) -> ShapeBatch<B> {
        let n = items.len();
        let pixels: Vec<f32> = items
            .iter()
            .flat_map(|i| i.pixels.iter().copied())
            .collect();
        let labels: Vec<i64> = items.iter().map(|i| i.label as i64).collect();
        ShapeBatch {
            images: Tensor::from_data(
                TensorData::new(pixels, [n, 1, self.size, self.size]),
                device,
            ),
            targets: Tensor::from_data(TensorData::new(labels, [n]), device),
        }
    }
}
