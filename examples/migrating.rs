//! The burn-natten side of the book's "Migrating from NATTEN" page: each marked part is the
//! counterpart of one NATTEN 0.21 call, and this file runs them all on NdArray.
//!
//! Run with `cargo run --example migrating`.

use burn::backend::NdArray;
use burn::tensor::{Distribution, Tensor};
use burn_natten::{
    AttentionOptions, NaBackend, NaOptions, NattenError, NeighborhoodAttention2dConfig, attention,
    attention_with_lse, merge_attentions, na1d, na2d, na2d_with_extra_kv, na2d_with_lse, na3d,
};

type B = NdArray;

fn randn<const D: usize>(shape: [usize; D]) -> Tensor<B, D> {
    Tensor::random(shape, Distribution::Normal(0.0, 1.0), &Default::default())
}

fn main() -> Result<(), NattenError> {
    let device = Default::default();
    // [batch, height, width, heads, head_dim], heads-last as in NATTEN 0.21.
    let (q, k, v) = (
        randn([1, 16, 16, 4, 32]),
        randn([1, 16, 16, 4, 32]),
        randn([1, 16, 16, 4, 32]),
    );

    // ANCHOR: na2d
    let out = na2d(q.clone(), k.clone(), v.clone(), &NaOptions::new([7, 7]))?;
    // ANCHOR_END: na2d
    assert_eq!(out.dims(), [1, 16, 16, 4, 32]);

    // ANCHOR: params
    let opts = NaOptions::new([7, 5])
        .with_stride([2, 1])
        .with_dilation([2, 3])
        .with_causal([true, false])
        .with_scale(0.125);
    let out = na2d(q.clone(), k.clone(), v.clone(), &opts)?;
    // ANCHOR_END: params
    assert_eq!(out.dims(), [1, 16, 16, 4, 32]);

    // ANCHOR: ranks
    let out1 = na1d(
        randn([2, 64, 4, 32]),
        randn([2, 64, 4, 32]),
        randn([2, 64, 4, 32]),
        &NaOptions::new([9]),
    )?;
    let out3 = na3d(
        randn([1, 8, 8, 8, 2, 16]),
        randn([1, 8, 8, 8, 2, 16]),
        randn([1, 8, 8, 8, 2, 16]),
        &NaOptions::new([3, 3, 3]),
    )?;
    // ANCHOR_END: ranks
    assert_eq!(
        (out1.dims(), out3.dims()),
        ([2, 64, 4, 32], [1, 8, 8, 8, 2, 16])
    );

    // ANCHOR: lse
    let (out, lse) = na2d_with_lse(q.clone(), k.clone(), v.clone(), &opts)?;
    // out [1, 16, 16, 4, 32], lse [1, 16, 16, 4] (f32, natural log)
    // ANCHOR_END: lse
    assert_eq!(
        (out.dims(), lse.dims()),
        ([1, 16, 16, 4, 32], [1, 16, 16, 4])
    );

    // ANCHOR: extra_kv
    // extra tokens [batch, extra, heads_kv, head_dim]: seen by every query, one softmax
    let (extra_k, extra_v) = (randn([1, 10, 4, 32]), randn([1, 10, 4, 32]));
    let (out, lse) = na2d_with_extra_kv(q.clone(), k.clone(), v.clone(), extra_k, extra_v, &opts)?;
    // ANCHOR_END: extra_kv
    assert_eq!(
        (out.dims(), lse.dims()),
        ([1, 16, 16, 4, 32], [1, 16, 16, 4])
    );

    // ANCHOR: gqa
    // 8 query heads, 2 KV heads: query head h uses KV head h / 4; head_dim_v may differ.
    let out = na2d(
        randn([1, 16, 16, 8, 32]),
        randn([1, 16, 16, 2, 32]),
        randn([1, 16, 16, 2, 48]),
        &NaOptions::new([5, 5]),
    )?;
    // ANCHOR_END: gqa
    assert_eq!(out.dims(), [1, 16, 16, 8, 48]);

    // ANCHOR: attention
    // [batch, seq, heads, head_dim]
    let (q4, k4, v4) = (
        randn([2, 100, 4, 32]),
        randn([2, 100, 4, 32]),
        randn([2, 100, 4, 32]),
    );
    let out = attention(
        q4.clone(),
        k4.clone(),
        v4.clone(),
        &AttentionOptions::new().with_causal(true),
    )?;
    let (_, lse) = attention_with_lse(q4, k4, v4, &AttentionOptions::new())?;
    // ANCHOR_END: attention
    assert_eq!((out.dims(), lse.dims()), ([2, 100, 4, 32], [2, 100, 4]));

    // ANCHOR: merge
    let q4 = randn([1, 64, 4, 32]);
    let (o1, l1) = attention_with_lse(
        q4.clone(),
        randn([1, 40, 4, 32]),
        randn([1, 40, 4, 32]),
        &AttentionOptions::new(),
    )?;
    let (o2, l2) = attention_with_lse(
        q4,
        randn([1, 24, 4, 32]),
        randn([1, 24, 4, 32]),
        &AttentionOptions::new(),
    )?;
    let (out, lse) = merge_attentions(vec![o1, o2], vec![l1, l2])?;
    // ANCHOR_END: merge
    assert_eq!((out.dims(), lse.dims()), ([1, 64, 4, 32], [1, 64, 4]));

    // ANCHOR: backend
    let opts = NaOptions::new([7, 7]).with_backend(NaBackend::Reference);
    // ANCHOR_END: backend
    na2d(q, k, v, &opts)?;

    // ANCHOR: module
    let model = NeighborhoodAttention2dConfig::new(512, 4, [8, 16]) // embed_dim, num_heads
        .with_stride([1, 2])
        .with_dilation([2, 1])
        .with_is_causal([false, false])
        .init::<B>(&device)?;
    let x = randn([1, 16, 32, 512]);
    let y = model.forward(x)?; // [1, 16, 32, 512]
    // ANCHOR_END: module
    assert_eq!(y.dims(), [1, 16, 32, 512]);

    println!("every NATTEN counterpart ran");
    Ok(())
}
