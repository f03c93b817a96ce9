//! `NeighborhoodAttention{1,2,3}d` and their configurations: one definition, three ranks.

use burn::config::Config;
use burn::module::{Initializer, Module};
use burn::nn::{Dropout, DropoutConfig, Linear};
use burn::tensor::Tensor;
use burn::tensor::backend::Backend;
use natten_core::NattenError;

use super::check::{ConfigFields, HeadLayout, check_config, check_input};
use super::heads::{projections, split_qkv};
use crate::{NaBackend, NaOptions, NattenBackend, na1d, na2d, na3d};

macro_rules! na_module {
    (
        rank: $rank:literal,
        x_dims: $x_dims:literal,
        head_dims: $head_dims:literal,
        config: $config:ident,
        module: $module:ident,
        na: $na:ident,
        natten: $natten:literal,
        spatial: $spatial:literal,
        ones: $ones:tt,
        falses: $falses:tt,
    ) => {
        #[doc = concat!("Configuration of a [`", stringify!($module), "`] layer, built with [`",
            stringify!($config), "::init`].")]
        ///
        #[doc = concat!("The defaults are NATTEN's (`natten.", $natten,
            "`): stride 1, dilation 1,")]
        /// not causal, biases on both projections, scale `head_dim^-0.5`, no dropout;
        /// `num_kv_heads` defaults to `num_heads` (plain multi-head attention). Per-axis fields
        /// take one entry per spatial axis.
        #[derive(Config, Debug)]
        pub struct $config {
            /// Channels of the input and output (`C` in `[batch, *spatial, C]`); a multiple of
            /// `num_heads`, with `head_dim = embed_dim / num_heads`.
            pub embed_dim: usize,
            /// Query heads.
            pub num_heads: usize,
            /// Window (kernel) size per spatial axis, each `>= 2`.
            pub kernel_size: [usize; $rank],
            /// Key/value heads (GQA/MQA); must divide `num_heads`. `None`: `num_heads`.
            pub num_kv_heads: Option<usize>,
            /// Stride per axis, `1 <= stride <= kernel_size`.
            #[config(default = $ones)]
            pub stride: [usize; $rank],
            /// Dilation per axis, `>= 1`; `kernel_size * dilation` may not exceed the input's
            /// axis length (checked by `forward`).
            #[config(default = $ones)]
            pub dilation: [usize; $rank],
            /// Causal masking per axis.
            #[config(default = $falses)]
            pub is_causal: [bool; $rank],
            /// Whether the QKV projection has a bias.
            #[config(default = true)]
            pub qkv_bias: bool,
            /// Whether the output projection has a bias.
            #[config(default = true)]
            pub proj_bias: bool,
            /// Softmax scale (finite, non-zero). `None`: `head_dim^-0.5`. NATTEN calls it
            /// `qk_scale`.
            pub scale: Option<f32>,
            /// Dropout probability after the output projection (NATTEN's `proj_drop`); applied
            /// only on autodiff backends, as Burn's [`Dropout`] does.
            #[config(default = 0.0)]
            pub proj_drop: f64,
            /// Initializer of the projections' weights and biases (Burn's `Linear` default).
            #[config(
                default = "Initializer::KaimingUniform {
                    gain: 1.0 / 3.0f64.sqrt(),
                    fan_out_only: false,
                }"
            )]
            pub initializer: Initializer,
        }

        #[doc = concat!("Neighborhood attention over ", $rank,
            " spatial axis/axes as a layer, as NATTEN's `", $natten, "`: a QKV projection, [`",
            stringify!($na), "`], an output projection.")]
        ///
        #[doc = concat!("Input and output `", $spatial, "embed_dim]`. `forward`:")]
        ///
        /// 1. `qkv` (a [`Linear`] `embed_dim -> (num_heads + 2 num_kv_heads) head_dim`): its
        ///    output features are ordered Q | K | V, each head-major. With
        ///    `num_kv_heads == num_heads` this is NATTEN's `qkv` layer (reshaped to
        ///    `[.., 3, heads, head_dim]`); with GQA/MQA the K and V parts have `num_kv_heads`
        ///    heads.
        #[doc = concat!("2. [`", stringify!($na), "`] on Q `", $spatial,
            "num_heads, head_dim]`, K and V `", $spatial, "num_kv_heads, head_dim]`")]
        ///    with the configuration's kernel size, stride, dilation, causal flags and scale.
        /// 3. heads merged back to `embed_dim`, then `proj` (a [`Linear`] `embed_dim -> embed_dim`)
        ///    and `proj_drop`.
        ///
        /// Records (weights) save and load through Burn's recorders; the configuration (kernel
        /// size, heads, ...) is not part of the record: rebuild the module from its config, then
        /// `load_record`.
        #[derive(Module, Debug)]
        pub struct $module<B: Backend> {
            /// Fused QKV projection, `embed_dim -> (num_heads + 2 num_kv_heads) head_dim`.
            pub qkv: Linear<B>,
            /// Output projection, `embed_dim -> embed_dim`.
            pub proj: Linear<B>,
            /// Dropout after the output projection.
            pub proj_drop: Dropout,
            layout: HeadLayout,
            options: NaOptions<$rank>,
        }

        impl $config {
            #[doc = concat!("Builds a [`", stringify!($module),
                "`] on `device`, with freshly initialised weights.")]
            ///
            /// # Errors
            /// [`NattenError::InvalidArgument`] naming the field when the configuration breaks
            /// a rule: `num_heads` or `num_kv_heads` of 0, `embed_dim` not a positive multiple
            /// of `num_heads`, `num_kv_heads` not dividing `num_heads`, a kernel size `< 2`, a
            /// stride or dilation of 0, a stride larger than its kernel size, a scale that is
            /// not finite or is zero, `proj_drop` outside `[0, 1]`.
            pub fn init<B: Backend>(&self, device: &B::Device) -> Result<$module<B>, NattenError> {
                let mut options = NaOptions::new(self.kernel_size)
                    .with_stride(self.stride)
                    .with_dilation(self.dilation)
                    .with_causal(self.is_causal);
                if let Some(scale) = self.scale {
                    options = options.with_scale(scale);
                }
                let layout = check_config(&ConfigFields {
                    embed_dim: self.embed_dim,
                    num_heads: self.num_heads,
                    num_kv_heads: self.num_kv_heads,
                    axes: &options.axes(),
                    scale: self.scale,
                    proj_drop: self.proj_drop,
                })?;
                let (qkv, proj) = projections(
                    &layout,
                    self.qkv_bias,
                    self.proj_bias,
                    &self.initializer,
                    device,
                );
                Ok($module {
                    qkv,
                    proj,
                    proj_drop: DropoutConfig::new(self.proj_drop).init(),
                    layout,
                    options,
                })
            }
        }

        impl<B: Backend> $module<B> {
            /// Channels of the input and output.
            pub fn embed_dim(&self) -> usize {
                self.layout.embed_dim
            }

            /// Query heads.
            pub fn num_heads(&self) -> usize {
                self.layout.num_heads
            }

            /// Key/value heads.
            pub fn num_kv_heads(&self) -> usize {
                self.layout.num_kv_heads
            }

            /// Channels per head (`embed_dim / num_heads`).
            pub fn head_dim(&self) -> usize {
                self.layout.head_dim
            }

            #[doc = concat!("The options `forward` passes to [`", stringify!($na), "`].")]
            pub fn options(&self) -> &NaOptions<$rank> {
                &self.options
            }

            /// Chooses the implementation that runs the attention (default
            /// [`NaBackend::Auto`]).
            pub fn with_backend(mut self, backend: NaBackend) -> Self {
                self.options = self.options.with_backend(backend);
                self
            }
        }

        impl<B: NattenBackend> $module<B> {
            #[doc = concat!("Applies the layer: `x` `", $spatial, "embed_dim]` to the same shape.")]
            ///
            /// # Errors
            /// [`NattenError::InvalidArgument`] naming `x` when its last axis is not
            #[doc = concat!("`embed_dim`, and the errors of [`", stringify!($na),
                "`] (e.g. `dilation` when kernel size x dilation exceeds an axis length).")]
            pub fn forward(
                &self,
                x: Tensor<B, $x_dims>,
            ) -> Result<Tensor<B, $x_dims>, NattenError> {
                check_input(&x.dims(), self.layout.embed_dim)?;
                let [q, k, v] =
                    split_qkv::<B, $x_dims, $head_dims>(self.qkv.forward(x), &self.layout);
                let out = $na(q, k, v, &self.options)?;
                let out = out.flatten::<$x_dims>($head_dims - 2, $head_dims - 1);
                Ok(self.proj_drop.forward(self.proj.forward(out)))
            }
        }
    };
}

na_module! {
    rank: 1,
    x_dims: 3,
    head_dims: 4,
    config: NeighborhoodAttention1dConfig,
    module: NeighborhoodAttention1d,
    na: na1d,
    natten: "NeighborhoodAttention1D",
    spatial: "[batch, length, ",
    ones: "[1]",
    falses: "[false]",
}

na_module! {
    rank: 2,
    x_dims: 4,
    head_dims: 5,
    config: NeighborhoodAttention2dConfig,
    module: NeighborhoodAttention2d,
    na: na2d,
    natten: "NeighborhoodAttention2D",
    spatial: "[batch, height, width, ",
    ones: "[1, 1]",
    falses: "[false, false]",
}

na_module! {
    rank: 3,
    x_dims: 5,
    head_dims: 6,
    config: NeighborhoodAttention3dConfig,
    module: NeighborhoodAttention3d,
    na: na3d,
    natten: "NeighborhoodAttention3D",
    spatial: "[batch, depth, height, width, ",
    ones: "[1, 1, 1]",
    falses: "[false, false, false]",
}
