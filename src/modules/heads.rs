//! The projections and the split of the fused QKV projection into heads.

use burn::module::Initializer;
use burn::nn::{Linear, LinearConfig};
use burn::tensor::backend::Backend;
use burn::tensor::{Shape, Tensor};

use super::check::HeadLayout;

/// The fused QKV projection `embed_dim -> (num_heads + 2 num_kv_heads) head_dim` and the output
/// projection `embed_dim -> embed_dim`.
pub(crate) fn projections<B: Backend>(
    layout: &HeadLayout,
    qkv_bias: bool,
    proj_bias: bool,
    initializer: &Initializer,
    device: &B::Device,
) -> (Linear<B>, Linear<B>) {
    let linear = |d_output, bias| {
        LinearConfig::new(layout.embed_dim, d_output)
            .with_bias(bias)
            .with_initializer(initializer.clone())
            .init(device)
    };
    (
        linear(layout.qkv_features(), qkv_bias),
        linear(layout.embed_dim, proj_bias),
    )
}

/// Splits the fused projection `[batch, *spatial, (num_heads + 2 num_kv_heads) head_dim]`
/// (features ordered Q | K | V, each head-major) into Q `[batch, *spatial, num_heads, head_dim]`
/// and K, V `[batch, *spatial, num_kv_heads, head_dim]`. `E` is `D + 1`.
pub(crate) fn split_qkv<B: Backend, const D: usize, const E: usize>(
    qkv: Tensor<B, D>,
    layout: &HeadLayout,
) -> [Tensor<B, E>; 3] {
    let dims = qkv.dims();
    let q_features = layout.num_heads * layout.head_dim;
    let kv_features = layout.num_kv_heads * layout.head_dim;
    let heads_shape = |heads: usize| {
        let mut shape = dims[..D - 1].to_vec();
        shape.extend([heads, layout.head_dim]);
        Shape::from(shape)
    };
    let mut parts = qkv
        .split_with_sizes(vec![q_features, kv_features, kv_features], D - 1)
        .into_iter();
    let mut next = |heads| {
        parts
            .next()
            .expect("three parts")
            .reshape::<E, _>(heads_shape(heads))
    };
    let q = next(layout.num_heads);
    let k = next(layout.num_kv_heads);
    let v = next(layout.num_kv_heads);
    [q, k, v]
}
