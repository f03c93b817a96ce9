//! Host side: make inputs contiguous, allocate outputs, choose the launch geometry, launch.

use burn::tensor::{DType, Shape};
use burn_cubecl::CubeRuntime;
use burn_cubecl::kernel::into_contiguous;
use burn_cubecl::ops::numeric::empty_device_contiguous_dtype;
use burn_cubecl::tensor::CubeTensor;
use cubecl::{CubeCount, CubeDim, calculate_cube_count_elemwise};

use super::config::{Pass, TilePlan, blocks_for, blocks_for_tiles};
use super::forward::{ForwardBlocks, na_forward_kernel};
use super::kernel_args::Geometry;
use super::tune;
use crate::backend::TileConfig;

/// Dense keys of a call: extra KV tokens (NA) or all keys, causal or not (FMHA).
#[derive(Clone)]
pub struct Dense<R: CubeRuntime> {
    pub k: CubeTensor<R>,
    pub v: CubeTensor<R>,
    pub causal: bool,
}

/// The inputs of one fused forward, contiguous: what every tile plan of the call launches on
/// (and what autotune hands to each candidate).
#[derive(Clone)]
pub struct ForwardCall<R: CubeRuntime> {
    pub q: CubeTensor<R>,
    pub k: CubeTensor<R>,
    pub v: CubeTensor<R>,
    /// Dense keys, if any: extra KV tokens (NA) or all keys (FMHA).
    pub dense: Option<Dense<R>>,
    /// The neighbourhood, `None` for FMHA.
    pub neighborhood: Option<Geometry>,
    pub scale: f32,
}

impl<R: CubeRuntime> ForwardCall<R> {
    /// The call's inputs, made contiguous. `geometry` is `None` for FMHA.
    pub fn new(
        q: CubeTensor<R>,
        k: CubeTensor<R>,
        v: CubeTensor<R>,
        dense: Option<Dense<R>>,
        geometry: Option<Geometry>,
        scale: f32,
    ) -> Self {
        Self {
            q: into_contiguous(q),
            k: into_contiguous(k),
            v: into_contiguous(v),
            dense: dense.map(|x| Dense {
                k: into_contiguous(x.k),
                v: into_contiguous(x.v),
                causal: x.causal,
            }),
            neighborhood: geometry,
            scale,
        }
    }

    /// The Q tiling's geometry: the neighbourhood's, or one sequence of queries (FMHA).
    pub fn q_tiling(&self) -> Geometry {
        self.neighborhood
            .unwrap_or_else(|| Geometry::sequence(self.q.meta.shape()[1] as u32))
    }

    /// `[batch, tokens, heads, head_dim]` of Q and `(heads_kv, head_dim_v)` of V.
    pub fn dims(&self) -> ([usize; 4], usize, usize) {
        let [_, _, h_kv, d_v] = self.v.meta.shape().dims();
        (self.q.meta.shape().dims(), h_kv, d_v)
    }

    /// The kernels' dense-key arguments: K, V, token count and causal flag of the dense keys;
    /// without dense keys, K/V again with no tokens (the kernels skip them).
    fn dense_keys(&self) -> (CubeTensor<R>, CubeTensor<R>, usize, bool) {
        match &self.dense {
            Some(x) => (x.k.clone(), x.v.clone(), x.k.meta.shape()[1], x.causal),
            None => (self.k.clone(), self.v.clone(), 0, false),
        }
    }

    /// The tile plan used when neither the caller nor autotune chose one: the preferred block
    /// sizes of the device, split over the axes by [`TilePlan::new`].
    pub fn default_plan(&self) -> (ForwardBlocks, TilePlan) {
        let ([_, _, _, d], _, d_v) = self.dims();
        let blocks = blocks_for(&self.q.client, Pass::Forward, d, d_v, self.q.dtype);
        (blocks, TilePlan::new(&self.q_tiling(), &blocks))
    }

    /// Runs the forward with these blocks and tiles. Returns (out, LSE f32).
    pub fn launch(&self, blocks: ForwardBlocks, plan: &TilePlan) -> (CubeTensor<R>, CubeTensor<R>) {
        let ([b, n, h, _], h_kv, d_v) = self.dims();
        let (client, dtype) = (self.q.client.clone(), self.q.dtype);
        let out = empty_like(&self.q, Shape::new([b, n, h, d_v]), dtype);
        let lse = empty_like(&self.q, Shape::new([b, n, h]), DType::F32);
        let g = self.q_tiling();
        let (dense_k, dense_v, dense_tokens, dense_causal) = self.dense_keys();
        na_forward_kernel::launch::<R>(
            &client,
            plan.cube_count(&g, h, b),
            TilePlan::cube_dim(&blocks),
            self.q.clone().into_tensor_arg(),
            self.k.clone().into_tensor_arg(),
            self.v.clone().into_tensor_arg(),
            dense_k.into_tensor_arg(),
            dense_v.into_tensor_arg(),
            out.clone().into_tensor_arg(),
            lse.clone().into_tensor_arg(),
            g.arg(),
            plan.arg(),
            h_kv as u32,
            dense_tokens as u32,
            self.scale,
            g.causal[0],
            g.causal[1],
            g.causal[2],
            self.neighborhood.is_some(),
            dense_causal,
            blocks,
            dtype.into(),
        );
        (out, lse)
    }
}

/// Fused forward; `geometry` is `None` for FMHA (no neighbourhood). The tiles are the
/// caller's when given ([`crate::NaOptions::with_tiles`], validated against
/// [`super::tile_configs`]); otherwise autotune chooses among the device's candidates for
/// problems large enough to be worth it ([`super::tune`]), and small problems take the default
/// plan. Returns (out, LSE f32).
pub fn forward<R: CubeRuntime>(
    q: CubeTensor<R>,
    k: CubeTensor<R>,
    v: CubeTensor<R>,
    dense: Option<Dense<R>>,
    geometry: Option<Geometry>,
    tiles: Option<&TileConfig>,
    scale: f32,
) -> (CubeTensor<R>, CubeTensor<R>) {
    let call = ForwardCall::new(q, k, v, dense, geometry, scale);
    let ([_, _, _, d], _, d_v) = call.dims();
    let chosen = tiles.and_then(|t| {
        let blocks = blocks_for_tiles(&call.q.client, t, d, d_v, call.q.dtype)?;
        Some((blocks, TilePlan::from_config(&call.q_tiling(), t)))
    });
    match chosen {
        Some((blocks, plan)) => call.launch(blocks, &plan),
        None if tune::worth_tuning(&call) => tune::forward_autotuned(call),
        None => {
            let (blocks, plan) = call.default_plan();
            call.launch(blocks, &plan)
        }
    }
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

/// The key-side gradients of a dK/dV pass: the neighbourhood's and the dense keys'.
pub struct KeyGradients<R: CubeRuntime> {
    pub neighborhood: Option<(CubeTensor<R>, CubeTensor<R>)>,
    pub dense: Option<(CubeTensor<R>, CubeTensor<R>)>,
}

/// The inputs of one fused backward's dQ and dK/dV passes, contiguous, with delta
/// (`rowsum(dO * O)`, `[b, n, h]` f32) computed.
#[derive(Clone)]
pub struct BackwardCall<R: CubeRuntime> {
    pub inputs: ForwardCall<R>,
    pub lse: CubeTensor<R>,
    pub d_out: CubeTensor<R>,
    pub delta: CubeTensor<R>,
}

impl<R: CubeRuntime> BackwardCall<R> {
    /// The dQ pass with these blocks (Q tiles as in the forward: [`TilePlan::new`]).
    pub fn launch_dq(&self, blocks: ForwardBlocks) -> CubeTensor<R> {
        use super::backward_dq::dq_kernel;
        let c = &self.inputs;
        let ([b, _, h, _], h_kv, _) = c.dims();
        let (client, dtype) = (c.q.client.clone(), c.q.dtype);
        let (dense_k, dense_v, dense_tokens, dense_causal) = c.dense_keys();
        let dq = empty_like(&c.q, c.q.meta.shape().clone(), dtype);
        let q_tiling = c.q_tiling();
        let plan = TilePlan::new(&q_tiling, &blocks);
        dq_kernel::launch::<R>(
            &client,
            plan.cube_count(&q_tiling, h, b),
            TilePlan::cube_dim(&blocks),
            c.q.clone().into_tensor_arg(),
            c.k.clone().into_tensor_arg(),
            c.v.clone().into_tensor_arg(),
            dense_k.into_tensor_arg(),
            dense_v.into_tensor_arg(),
            self.d_out.clone().into_tensor_arg(),
            self.lse.clone().into_tensor_arg(),
            self.delta.clone().into_tensor_arg(),
            dq.clone().into_tensor_arg(),
            q_tiling.arg(),
            plan.arg(),
            h_kv as u32,
            dense_tokens as u32,
            c.scale,
            q_tiling.causal[0],
            q_tiling.causal[1],
            q_tiling.causal[2],
            c.neighborhood.is_some(),
            dense_causal,
            blocks,
            dtype.into(),
        );
        dq
    }

    /// The dK/dV passes with these blocks: over the neighbourhood's KV tiles
    /// ([`TilePlan::for_keys`]) and over runs of `block_kv` dense keys.
    pub fn launch_dkdv(&self, blocks: ForwardBlocks) -> KeyGradients<R> {
        use super::backward_dkdv::{dkdv_dense_kernel, dkdv_neighborhood_kernel};
        let c = &self.inputs;
        let ([b, _, _, _], h_kv, _) = c.dims();
        let (client, dtype) = (c.q.client.clone(), c.q.dtype);
        let neighborhood = c.neighborhood.map(|g| {
            let dk = empty_like(&c.k, c.k.meta.shape().clone(), dtype);
            let dv = empty_like(&c.v, c.v.meta.shape().clone(), dtype);
            let plan = TilePlan::for_keys(&g, &blocks);
            dkdv_neighborhood_kernel::launch::<R>(
                &client,
                plan.cube_count(&g, h_kv, b),
                TilePlan::cube_dim(&blocks),
                c.q.clone().into_tensor_arg(),
                c.k.clone().into_tensor_arg(),
                c.v.clone().into_tensor_arg(),
                self.d_out.clone().into_tensor_arg(),
                self.lse.clone().into_tensor_arg(),
                self.delta.clone().into_tensor_arg(),
                dk.clone().into_tensor_arg(),
                dv.clone().into_tensor_arg(),
                g.arg(),
                plan.arg(),
                c.scale,
                g.causal[0],
                g.causal[1],
                g.causal[2],
                blocks,
                dtype.into(),
            );
            (dk, dv)
        });
        let dense = c.dense.as_ref().map(|x| {
            let dk = empty_like(&x.k, x.k.meta.shape().clone(), dtype);
            let dv = empty_like(&x.v, x.v.meta.shape().clone(), dtype);
            let tiles = x.k.meta.shape()[1].div_ceil(blocks.block_kv) as u32;
            dkdv_dense_kernel::launch::<R>(
                &client,
                CubeCount::Static(tiles, h_kv as u32, b as u32),
                TilePlan::cube_dim(&blocks),
                c.q.clone().into_tensor_arg(),
                x.k.clone().into_tensor_arg(),
                x.v.clone().into_tensor_arg(),
                self.d_out.clone().into_tensor_arg(),
                self.lse.clone().into_tensor_arg(),
                self.delta.clone().into_tensor_arg(),
                dk.clone().into_tensor_arg(),
                dv.clone().into_tensor_arg(),
                c.scale,
                x.causal,
                blocks,
                dtype.into(),
            );
            (dk, dv)
        });
        KeyGradients {
            neighborhood,
            dense,
        }
    }
}

impl<R: CubeRuntime> BackwardCall<R> {
    /// Makes the inputs contiguous and computes delta. `geometry` is `None` for FMHA.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        q: CubeTensor<R>,
        k: CubeTensor<R>,
        v: CubeTensor<R>,
        dense: Option<Dense<R>>,
        out: CubeTensor<R>,
        lse: CubeTensor<R>,
        d_out: CubeTensor<R>,
        geometry: Option<Geometry>,
        scale: f32,
    ) -> Self {
        use super::backward_preprocess::delta_kernel;

        let inputs = ForwardCall::new(q, k, v, dense, geometry, scale);
        let (out, lse, d_out) = (
            into_contiguous(out),
            into_contiguous(lse),
            into_contiguous(d_out),
        );
        let ([b, n, h, _], _, d_v) = inputs.dims();
        let (client, dtype) = (inputs.q.client.clone(), inputs.q.dtype);
        let delta = empty_like(&inputs.q, Shape::new([b, n, h]), DType::F32);
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
        Self {
            inputs,
            lse,
            d_out,
            delta,
        }
    }

    /// The blocks of `pass` when autotune does not choose: the device's preferred ones.
    pub fn default_blocks(&self, pass: Pass) -> ForwardBlocks {
        let ([_, _, _, d], _, d_v) = self.inputs.dims();
        blocks_for(&self.inputs.q.client, pass, d, d_v, self.inputs.q.dtype)
    }
}

/// Fused backward without atomics: delta, then a dQ pass over queries and dK/dV passes over
/// keys. `geometry` is `None` for FMHA. Each pass's blocks are autotuned like the forward's
/// ([`super::tune`]) on problems large enough, else the device's preferred ones.
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
    let call = BackwardCall::new(q, k, v, dense, out, lse, d_out, geometry, scale);
    let tuned = tune::worth_tuning(&call.inputs);
    let dq = if tuned {
        tune::dq_autotuned(call.clone())
    } else {
        call.launch_dq(call.default_blocks(Pass::Dq))
    };
    let keys = if tuned {
        tune::dkdv_autotuned(call)
    } else {
        call.launch_dkdv(call.default_blocks(Pass::Dkdv))
    };
    Gradients {
        dq,
        neighborhood: keys.neighborhood,
        dense: keys.dense,
    }
}
