//! Tile configurations of the fused forward: the list the backend offers, the error for one it
//! does not, and equal results (to the reference on NdArray) for every block-size class.

use burn::tensor::{DType, Tensor};
use burn_natten::*;

use crate::common::{Cpu, Gpu, assert_close, normal, rng, tensor, values, wgpu_available};

/// 2-D, dilated on one axis, causal on the other, GQA, D_v != D: every masking case at once.
fn options() -> NaOptions<2> {
    NaOptions::new([5, 3])
        .with_dilation([2, 1])
        .with_causal([false, true])
}

/// The same seeded inputs on every backend.
fn inputs<B: NattenBackend>(device: &B::Device) -> [Tensor<B, 5>; 3] {
    let mut r = rng(31);
    let mut make = |heads, dim| {
        let shape = [1, 14, 11, heads, dim];
        tensor::<B, 5>(
            normal(shape.iter().product(), &mut r),
            shape,
            DType::F32,
            device,
        )
    };
    [make(4, 16), make(2, 16), make(2, 8)]
}

#[test]
fn tiles_on_the_reference_are_unsupported() {
    let [q, k, v] = inputs::<Cpu>(&Default::default());
    let err = na2d(q, k, v, &options().with_tiles([8, 8], [8, 8])).unwrap_err();
    assert!(
        matches!(err, NattenError::Unsupported { .. }),
        "expected Unsupported, got {err}"
    );
    assert!(na_tile_configs::<Cpu>(&Default::default(), 2, 16, 8, DType::F32).is_empty());
}

/// Backward tiles exist only on the native CUDA backward: elsewhere (the reference, the
/// portable kernels) choosing them is `Unsupported`, and the list is empty.
#[test]
fn backward_tiles_without_native_kernels_are_unsupported() {
    let [q, k, v] = inputs::<Cpu>(&Default::default());
    let opts = options().with_backward_tiles([8, 8], [8, 8]);
    let err = na2d(q, k, v, &opts).unwrap_err();
    assert!(
        matches!(err, NattenError::Unsupported { ref reason, .. } if reason.contains("backward_tiles")),
        "expected Unsupported naming backward_tiles, got {err}"
    );
    assert!(na_backward_tile_configs::<Cpu>(&Default::default(), 2, 16, 8, DType::F32).is_empty());
    if !wgpu_available() {
        return;
    }
    let device = Default::default();
    assert!(na_backward_tile_configs::<Gpu>(&device, 2, 16, 8, DType::F32).is_empty());
    let [q, k, v] = inputs::<Gpu>(&device);
    let err = na2d(q, k, v, &opts).unwrap_err();
    assert!(matches!(err, NattenError::Unsupported { .. }), "{err}");
}

#[test]
fn invalid_tiles_list_the_valid_ones() {
    if !wgpu_available() {
        return;
    }
    let device = Default::default();
    let valid = na_tile_configs::<Gpu>(&device, 2, 16, 8, DType::F32);
    assert!(
        !valid.is_empty(),
        "the fused backend offers tile configurations"
    );
    let [q, k, v] = inputs::<Gpu>(&device);
    let err = na2d(q, k, v, &options().with_tiles([3, 5], [8, 8])).unwrap_err();
    assert_eq!(err.argument(), Some("tiles"), "{err}");
    let message = err.to_string();
    assert!(message.contains("valid:"), "{message}");
    assert!(message.contains(&valid[0].to_string()), "{message}");
}

#[test]
fn every_block_size_matches_the_reference() {
    if !wgpu_available() {
        return;
    }
    let device = Default::default();
    let [q, k, v] = inputs::<Cpu>(&Default::default());
    let (want, want_lse) = na2d_with_lse(q, k, v, &options()).unwrap();
    let (want, want_lse) = (values(want), values(want_lse));
    let valid = na_tile_configs::<Gpu>(&device, 2, 16, 8, DType::F32);
    // One configuration per (Q block, KV block) class, in its first and last axis split.
    let mut chosen: Vec<TileConfig> = Vec::new();
    for config in &valid {
        let class = |c: &TileConfig| {
            (
                c.q_tile.iter().product::<usize>(),
                c.kv_tile.iter().product::<usize>(),
            )
        };
        let same: Vec<&TileConfig> = valid.iter().filter(|c| class(c) == class(config)).collect();
        for pick in [same[0], same[same.len() - 1]] {
            if !chosen.contains(pick) {
                chosen.push(pick.clone());
            }
        }
    }
    for config in chosen {
        let q_tile = [config.q_tile[0], config.q_tile[1]];
        let kv_tile = [config.kv_tile[0], config.kv_tile[1]];
        let [q, k, v] = inputs::<Gpu>(&device);
        let opts = options().with_tiles(q_tile, kv_tile);
        let (out, lse) = na2d_with_lse(q, k, v, &opts).unwrap();
        let what = format!("tiles {config}");
        assert_close(&format!("{what} out"), &values(out), &want, 1e-5, 1e-4);
        assert_close(&format!("{what} lse"), &values(lse), &want_lse, 1e-5, 1e-4);
    }
}

/// Head dims of 256 in f32 need more shared memory than some adapters have (lavapipe: 32 KB,
/// WebGPU's default: 16 KB): there the call runs the reference instead of failing at launch;
/// elsewhere the fused kernels. Either way the result is NATTEN's.
#[test]
fn large_head_dims_run_where_shared_memory_is_small() {
    if !wgpu_available() {
        return;
    }
    let device = Default::default();
    let mut r = rng(5);
    let shape = [1, 6, 6, 1, 256];
    let data: Vec<Vec<f32>> = (0..3)
        .map(|_| normal(shape.iter().product(), &mut r))
        .collect();
    let opts = NaOptions::new([3, 3]);
    let cpu = Default::default();
    let [q, k, v] = [0, 1, 2].map(|i| tensor::<Cpu, 5>(data[i].clone(), shape, DType::F32, &cpu));
    let (want, want_lse) = na2d_with_lse(q, k, v, &opts).unwrap();
    let [q, k, v] =
        [0, 1, 2].map(|i| tensor::<Gpu, 5>(data[i].clone(), shape, DType::F32, &device));
    let (out, lse) = na2d_with_lse(q, k, v, &opts).unwrap();
    let tol = 1e-5 + crate::common::GPU_MATMUL_TOL;
    assert_close("out", &values(out), &values(want), tol, 1e-4);
    assert_close("lse", &values(lse), &values(want_lse), tol, 1e-4);
}
