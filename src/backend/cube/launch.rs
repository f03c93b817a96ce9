//! Host side: make inputs contiguous, allocate outputs, choose the launch geometry, launch.

use burn::tensor::{DType, Shape};
use burn_cubecl::CubeRuntime;
use burn_cubecl::kernel::into_contiguous;
use burn_cubecl::ops::numeric::empty_device_contiguous_dtype;
use burn_cubecl::tensor::CubeTensor;
use cubecl::{CubeDim, calculate_cube_count_elemwise};

use super::forward::na_forward_kernel;
use super::kernel_args::Geometry;

/// Dense keys of a call: extra KV tokens (NA) or all keys, causal or not (FMHA).
pub struct Dense<R: CubeRuntime> {
    pub k: CubeTensor<R>,
    pub v: CubeTensor<R>,
    pub causal: bool,
}

/// Launch grid with one unit per (batch, token, head).
fn grid<R: CubeRuntime>(q: &CubeTensor<R>) -> (cubecl::CubeCount, CubeDim, usize) {
    let units = q.meta.num_elements() / q.meta.shape()[3];
    let cube_dim = CubeDim::new(&q.client, units);
    (
        calculate_cube_count_elemwise(&q.client, units, cube_dim),
        cube_dim,
        units,
    )
}

/// Fused forward; `geometry` is `None` for FMHA (no neighbourhood). Returns (out, LSE f32).
pub fn forward<R: CubeRuntime>(
    q: CubeTensor<R>,
    k: CubeTensor<R>,
    v: CubeTensor<R>,
    dense: Option<Dense<R>>,
    geometry: Option<Geometry>,
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
    let g = geometry.unwrap_or_else(Geometry::none);
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
    let (count, cube_dim, _) = grid(&q);
    na_forward_kernel::launch::<R>(
        &client,
        count,
        cube_dim,
        q.into_tensor_arg(),
        k.into_tensor_arg(),
        v.into_tensor_arg(),
        dense_k.into_tensor_arg(),
        dense_v.into_tensor_arg(),
        out.clone().into_tensor_arg(),
        lse.clone().into_tensor_arg(),
        g.len[0],
        g.len[1],
        g.len[2],
        g.kernel_size[0],
        g.kernel_size[1],
        g.kernel_size[2],
        g.stride[0],
        g.stride[1],
        g.stride[2],
        g.dilation[0],
        g.dilation[1],
        g.dilation[2],
        h_kv as u32,
        dense_tokens as u32,
        scale,
        g.causal[0],
        g.causal[1],
        g.causal[2],
        has_neighborhood,
        dense_causal,
        d,
        d_v,
        dtype.into(),
    );
    (out, lse)
}
