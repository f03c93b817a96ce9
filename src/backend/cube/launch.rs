//! Host side: make inputs contiguous, allocate outputs, choose the launch geometry, launch.

use burn::tensor::{DType, Shape};
use burn_cubecl::CubeRuntime;
use burn_cubecl::kernel::into_contiguous;
use burn_cubecl::ops::numeric::empty_device_contiguous_dtype;
use burn_cubecl::tensor::CubeTensor;
use cubecl::{CubeCount, CubeDim, calculate_cube_count_elemwise};

use super::config::{Pass, TilePlan, blocks_for, blocks_for_tiles};
use super::forward::na_forward_kernel;
use super::kernel_args::Geometry;
use crate::backend::TileConfig;

/// Dense keys of a call: extra KV tokens (NA) or all keys, causal or not (FMHA).
pub struct Dense<R: CubeRuntime> {
    pub k: CubeTensor<R>,
    pub v: CubeTensor<R>,
    pub causal: bool,
}

/// Fused forward; `geometry` is `None` for FMHA (no neighbourhood). Returns (out, LSE f32).
pub fn forward<R: CubeRuntime>(
    q: CubeTensor<R>,
    k: CubeTensor<R>,
    v: CubeTensor<R>,
    dense: Option<Dense<R>>,
    geometry: Option<Geometry>,
    tiles: Option<&TileConfig>,
    scale: f32,
) -> (CubeTensor<R>, CubeTensor<R>) {
    let (q, k, v) = (into_contiguous(q), into_contiguous(k), into_contiguous(v));
    let [b, n, h, d] = q.meta.shape().dims();
    let [_, _, h_kv, d_v] = v.meta.shape().dims();
    let (client, device, dtype) = (q.client.clone(), q.device.clone(), q.dtype);
    let out = empty_device_contiguous_dtype(
        client.clone(),
        device.clone(),
        Shape::new([b, n, h, d_v]),
        dtype,
    );
    let lse =
        empty_device_contiguous_dtype(client.clone(), device, Shape::new([b, n, h]), DType::F32);
    let has_neighborhood = geometry.is_some();
    let g = geometry.unwrap_or_else(|| Geometry::sequence(n as u32));
    let (dense_k, dense_v, dense_tokens, dense_causal) = match dense {
        Some(dense) => {
            let tokens = dense.k.meta.shape()[1];
            (
                into_contiguous(dense.k),
                into_contiguous(dense.v),
                tokens,
                dense.causal,
            )
        }
        None => (k.clone(), v.clone(), 0, false),
    };
    let chosen = tiles.and_then(|t| Some((t, blocks_for_tiles(&client, t, d, d_v, dtype)?)));
    let (blocks, plan) = match chosen {
        Some((t, blocks)) => (blocks, TilePlan::from_config(&g, t)),
        None => {
            let blocks = blocks_for(&client, Pass::Forward, d, d_v, dtype);
            (blocks, TilePlan::new(&g, &blocks))
        }
    };
    na_forward_kernel::launch::<R>(
        &client,
        plan.cube_count(&g, h, b),
        TilePlan::cube_dim(&blocks),
        q.into_tensor_arg(),
        k.into_tensor_arg(),
        v.into_tensor_arg(),
        dense_k.into_tensor_arg(),
        dense_v.into_tensor_arg(),
        out.clone().into_tensor_arg(),
        lse.clone().into_tensor_arg(),
        g.arg(),
        plan.arg(),
        h_kv as u32,
        dense_tokens as u32,
        scale,
        g.causal[0],
        g.causal[1],
        g.causal[2],
        has_neighborhood,
        dense_causal,
        blocks,
        dtype.into(),
    );
    (out, lse)
}

/// Launch grid with one unit per row (a (batch, token, head) or (batch, key, KV head) index).
fn grid_rows<R: CubeRuntime>(
    client: &cubecl::client::ComputeClient<R>,
    rows: usize,
) -> (cubecl::CubeCount, CubeDim) {
    let cube_dim = CubeDim::new(client, rows);
    (
        calculate_cube_count_elemwise(client, rows, cube_dim),
        cube_dim,
    )
}

fn empty_like<R: CubeRuntime>(t: &CubeTensor<R>, shape: Shape, dtype: DType) -> CubeTensor<R> {
    empty_device_contiguous_dtype(t.client.clone(), t.device.clone(), shape, dtype)
}

/// Gradients of a fused backward: dQ, the neighbourhood's dK/dV (NA), the dense keys' dK/dV
/// (extra tokens for NA, all keys for FMHA).
pub struct Gradients<R: CubeRuntime> {
    pub dq: CubeTensor<R>,
    pub neighborhood: Option<(CubeTensor<R>, CubeTensor<R>)>,
    pub dense: Option<(CubeTensor<R>, CubeTensor<R>)>,
}

/// Fused backward without atomics: delta, then a dQ pass over queries and dK/dV passes over
/// keys. `geometry` is `None` for FMHA.
#[allow(clippy::too_many_arguments)]
pub fn backward<R: CubeRuntime>(
    q: CubeTensor<R>,
    k: CubeTensor<R>,
    v: CubeTensor<R>,
    dense: Option<Dense<R>>,
    out: CubeTensor<R>,
    lse: CubeTensor<R>,
    d_out: CubeTensor<R>,
    geometry: Option<Geometry>,
    scale: f32,
) -> Gradients<R> {
    use super::backward_dkdv::{dkdv_dense_kernel, dkdv_neighborhood_kernel};
    use super::backward_dq::dq_kernel;
    use super::backward_preprocess::delta_kernel;

    let (q, k, v) = (into_contiguous(q), into_contiguous(k), into_contiguous(v));
    let (out, lse, d_out) = (
        into_contiguous(out),
        into_contiguous(lse),
        into_contiguous(d_out),
    );
    let [b, n, h, d] = q.meta.shape().dims();
    let [_, _, h_kv, d_v] = v.meta.shape().dims();
    let (client, dtype) = (q.client.clone(), q.dtype);

    let delta = empty_like(&q, Shape::new([b, n, h]), DType::F32);
    let (count, dim) = grid_rows(&client, b * n * h);
    delta_kernel::launch::<R>(
        &client,
        count,
        dim,
        out.into_tensor_arg(),
        d_out.clone().into_tensor_arg(),
        delta.clone().into_tensor_arg(),
        d_v,
        dtype.into(),
    );

    let has_neighborhood = geometry.is_some();
    let g = geometry.unwrap_or_else(Geometry::none);
    let dense = dense.map(|x| Dense {
        k: into_contiguous(x.k),
        v: into_contiguous(x.v),
        causal: x.causal,
    });
    let (dense_k, dense_v, dense_tokens, dense_causal) = match &dense {
        Some(x) => (x.k.clone(), x.v.clone(), x.k.meta.shape()[1], x.causal),
        None => (k.clone(), v.clone(), 0, false),
    };

    let dq = empty_like(&q, q.meta.shape().clone(), dtype);
    let q_tiling = geometry.unwrap_or_else(|| Geometry::sequence(n as u32));
    let blocks = blocks_for(&client, Pass::Dq, d, d_v, dtype);
    let plan = TilePlan::new(&q_tiling, &blocks);
    dq_kernel::launch::<R>(
        &client,
        plan.cube_count(&q_tiling, h, b),
        TilePlan::cube_dim(&blocks),
        q.clone().into_tensor_arg(),
        k.clone().into_tensor_arg(),
        v.clone().into_tensor_arg(),
        dense_k.into_tensor_arg(),
        dense_v.into_tensor_arg(),
        d_out.clone().into_tensor_arg(),
        lse.clone().into_tensor_arg(),
        delta.clone().into_tensor_arg(),
        dq.clone().into_tensor_arg(),
        q_tiling.arg(),
        plan.arg(),
        h_kv as u32,
        dense_tokens as u32,
        scale,
        g.causal[0],
        g.causal[1],
        g.causal[2],
        has_neighborhood,
        dense_causal,
        blocks,
        dtype.into(),
    );

    let blocks = blocks_for(&client, Pass::Dkdv, d, d_v, dtype);
    let neighborhood = has_neighborhood.then(|| {
        let dk = empty_like(&k, k.meta.shape().clone(), dtype);
        let dv = empty_like(&v, v.meta.shape().clone(), dtype);
        let plan = TilePlan::for_keys(&g, &blocks);
        dkdv_neighborhood_kernel::launch::<R>(
            &client,
            plan.cube_count(&g, h_kv, b),
            TilePlan::cube_dim(&blocks),
            q.clone().into_tensor_arg(),
            k.clone().into_tensor_arg(),
            v.clone().into_tensor_arg(),
            d_out.clone().into_tensor_arg(),
            lse.clone().into_tensor_arg(),
            delta.clone().into_tensor_arg(),
            dk.clone().into_tensor_arg(),
            dv.clone().into_tensor_arg(),
            g.arg(),
            plan.arg(),
            scale,
            g.causal[0],
            g.causal[1],
            g.causal[2],
            blocks,
            dtype.into(),
        );
        (dk, dv)
    });

    let dense = dense.map(|x| {
        let dk = empty_like(&x.k, x.k.meta.shape().clone(), dtype);
        let dv = empty_like(&x.v, x.v.meta.shape().clone(), dtype);
        let tiles = x.k.meta.shape()[1].div_ceil(blocks.block_kv) as u32;
        dkdv_dense_kernel::launch::<R>(
            &client,
            CubeCount::Static(tiles, h_kv as u32, b as u32),
            TilePlan::cube_dim(&blocks),
            q.clone().into_tensor_arg(),
            x.k.into_tensor_arg(),
            x.v.into_tensor_arg(),
            d_out.clone().into_tensor_arg(),
            lse.clone().into_tensor_arg(),
            delta.clone().into_tensor_arg(),
            dk.clone().into_tensor_arg(),
            dv.clone().into_tensor_arg(),
            scale,
            x.causal,
            blocks,
            dtype.into(),
        );
        (dk, dv)
    });

    Gradients {
        dq,
        neighborhood,
        dense,
    }
}
