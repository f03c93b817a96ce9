//! A small DiNAT-style classifier: patch embedding, blocks of (LayerNorm, 2-D neighborhood
//! attention, LayerNorm, MLP) with residuals whose dilation alternates 1, 2, 1, ..., mean
//! pooling and a linear head.

use burn::config::Config;
use burn::module::Module;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::loss::CrossEntropyLossConfig;
use burn::nn::{Gelu, LayerNorm, LayerNormConfig, Linear, LinearConfig};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Int, Tensor};
use burn::train::{ClassificationOutput, InferenceStep, TrainOutput, TrainStep};
use burn_natten::{
    NattenBackend, NattenError, NeighborhoodAttention2d, NeighborhoodAttention2dConfig,
};

use crate::data::ShapeBatch;

/// The model's hyper-parameters.
#[derive(Config, Debug)]
pub struct DinatConfig {
    /// Number of classes.
    pub num_classes: usize,
    /// Channels of the token embedding.
    #[config(default = 32)]
    pub embed_dim: usize,
    /// Attention heads per block.
    #[config(default = 2)]
    pub num_heads: usize,
    /// Number of blocks; block `i` has dilation `1 + i % 2`.
    #[config(default = 2)]
    pub depth: usize,
    /// Neighbourhood (window) size per axis.
    #[config(default = 3)]
    pub kernel_size: usize,
    /// Side of the square patches that become tokens.
    #[config(default = 2)]
    pub patch: usize,
    /// Hidden width of the MLP, as a multiple of `embed_dim`.
    #[config(default = 2)]
    pub mlp_ratio: usize,
}

// ANCHOR: block
/// One block: `x + NA(LN(x))`, then `x + MLP(LN(x))`, on tokens `[batch, h, w, embed_dim]`.
#[derive(Module, Debug)]
pub struct Block<B: Backend> {
    norm1: LayerNorm<B>,
    attn: NeighborhoodAttention2d<B>,
    norm2: LayerNorm<B>,
    fc1: Linear<B>,
    fc2: Linear<B>,
    act: Gelu,
}

impl<B: NattenBackend> Block<B> {
    fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        // The shapes were checked when the model was built; a failure here is a bug.
        let attended = self.attn.forward(self.norm1.forward(x.clone()));
        let x = x + attended.expect("token grid and window were validated at init");
        let h = self.fc2.forward(
            self.act
                .forward(self.fc1.forward(self.norm2.forward(x.clone()))),
        );
        x + h
    }
}
// ANCHOR_END: block

/// The classifier: images `[batch, 1, size, size]` to logits `[batch, num_classes]`.
#[derive(Module, Debug)]
pub struct Dinat<B: Backend> {
    embed: Conv2d<B>,
    blocks: Vec<Block<B>>,
    norm: LayerNorm<B>,
    head: Linear<B>,
}

impl DinatConfig {
    /// Builds the model for images of side `image_size`.
    ///
    /// # Errors
    /// `NattenError::InvalidArgument` when the token grid (`image_size / patch`) is too small
    /// for the window at dilation 2, or when `embed_dim` is not a multiple of `num_heads`.
    pub fn init<B: Backend>(
        &self,
        image_size: usize,
        device: &B::Device,
    ) -> Result<Dinat<B>, NattenError> {
        let grid = image_size / self.patch;
        let max_dilation = if self.depth > 1 { 2 } else { 1 };
        if !image_size.is_multiple_of(self.patch) || grid < self.kernel_size * max_dilation {
            return Err(NattenError::InvalidArgument {
                argument: "image_size",
                rule: format!(
                    "must be a multiple of the patch ({}) with at least kernel_size x dilation \
                     = {} patches per side, got {image_size} ({grid} patches)",
                    self.patch,
                    self.kernel_size * max_dilation
                ),
            });
        }
        let d = self.embed_dim;
        let blocks = (0..self.depth)
            .map(|i| {
                // ANCHOR: attention
                let dilation = 1 + i % 2; // DiNAT: local (1) and sparse global (2) in turn
                Ok(Block {
                    norm1: LayerNormConfig::new(d).init(device),
                    attn: NeighborhoodAttention2dConfig::new(
                        d,
                        self.num_heads,
                        [self.kernel_size; 2],
                    )
                    .with_dilation([dilation; 2])
                    .init(device)?,
                    // ANCHOR_END: attention
                    norm2: LayerNormConfig::new(d).init(device),
                    fc1: LinearConfig::new(d, d * self.mlp_ratio).init(device),
                    fc2: LinearConfig::new(d * self.mlp_ratio, d).init(device),
                    act: Gelu::new(),
                })
            })
            .collect::<Result<_, NattenError>>()?;
        Ok(Dinat {
            embed: Conv2dConfig::new([1, d], [self.patch; 2])
                .with_stride([self.patch; 2])
                .init(device),
            blocks,
            norm: LayerNormConfig::new(d).init(device),
            head: LinearConfig::new(d, self.num_classes).init(device),
        })
    }
}

impl<B: NattenBackend> Dinat<B> {
    /// Logits `[batch, num_classes]` for images `[batch, 1, size, size]`.
    pub fn forward(&self, images: Tensor<B, 4>) -> Tensor<B, 2> {
        // [batch, d, h, w] -> heads-last tokens [batch, h, w, d]
        let mut x = self.embed.forward(images).permute([0, 2, 3, 1]);
        for block in &self.blocks {
            x = block.forward(x);
        }
        let [batch, h, w, d] = x.dims();
        let pooled = self.norm.forward(x).reshape([batch, h * w, d]).mean_dim(1);
        self.head.forward(pooled.reshape([batch, d]))
    }

    /// Logits, cross-entropy loss and targets, as burn-train's metrics take them.
    pub fn classify(
        &self,
        images: Tensor<B, 4>,
        targets: Tensor<B, 1, Int>,
    ) -> ClassificationOutput<B> {
        let output = self.forward(images);
        let loss = CrossEntropyLossConfig::new()
            .init(&output.device())
            .forward(output.clone(), targets.clone());
        ClassificationOutput::new(loss, output, targets)
    }
}

impl<B: AutodiffBackend + NattenBackend> TrainStep for Dinat<B> {
    type Input = ShapeBatch<B>;
    type Output = ClassificationOutput<B>;

    fn step(&self, batch: ShapeBatch<B>) -> TrainOutput<ClassificationOutput<B>> {
        let item = self.classify(batch.images, batch.targets);
        TrainOutput::new(self, item.loss.backward(), item)
    }
}

impl<B: NattenBackend> InferenceStep for Dinat<B> {
    type Input = ShapeBatch<B>;
    type Output = ClassificationOutput<B>;

    fn step(&self, batch: ShapeBatch<B>) -> ClassificationOutput<B> {
        self.classify(batch.images, batch.targets)
    }
}
