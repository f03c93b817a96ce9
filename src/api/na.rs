//! `na1d`, `na2d`, `na3d` and their `_with_lse` / `_with_extra_kv` forms.

use burn::tensor::{Tensor, TensorPrimitive};
use natten_core::validate::validate_axes;
use natten_core::{NattenError, shape};

use super::checks::{native_can_run, resolve_scale, same_dtype_and_device};
use crate::backend::{ExtraKv, NaProblem, NattenBackend, TileConfig};
use crate::{NaBackend, NaOptions};

/// Which kernel a tile configuration is for.
#[derive(Clone, Copy)]
enum TiledPass {
    Forward,
    Backward,
}

/// The user's tile configuration for `pass`, checked against what the backend offers for this
/// problem.
fn checked_tiles<B: NattenBackend, const R: usize, const D: usize>(
    opts: &NaOptions<R>,
    pass: TiledPass,
    q: &Tensor<B, D>,
    head_dim: usize,
    head_dim_v: usize,
) -> Result<Option<TileConfig>, NattenError> {
    let (chosen, argument, kernels) = match pass {
        TiledPass::Forward => (opts.tiles(), "tiles", "tiled kernels"),
        TiledPass::Backward => (
            opts.backward_tiles(),
            "backward_tiles",
            "tiled backward kernels",
        ),
    };
    let Some((q_tile, kv_tile)) = chosen else {
        return Ok(None);
    };
    let requested = TileConfig {
        q_tile: q_tile.to_vec(),
        kv_tile: kv_tile.to_vec(),
    };
    let (device, dtype) = (q.device(), q.dtype());
    let valid = match (opts.backend(), pass) {
        (NaBackend::Reference, _) => Vec::new(),
        (_, TiledPass::Forward) => B::tile_configs(&device, R, head_dim, head_dim_v, dtype),
        (_, TiledPass::Backward) => {
            B::backward_tile_configs(&device, R, head_dim, head_dim_v, dtype)
        }
    };
    if valid.is_empty() {
        return Err(NattenError::Unsupported {
            backend: opts.backend().name(),
            reason: format!(
                "{argument} {requested}: `{}` has no {kernels} for this problem",
                B::name(&device)
            ),
        });
    }
    if valid.contains(&requested) {
        return Ok(Some(requested));
    }
    const SHOWN: usize = 48;
    let mut list: Vec<String> = valid.iter().take(SHOWN).map(|t| t.to_string()).collect();
    if valid.len() > SHOWN {
        list.push(format!("... and {} more", valid.len() - SHOWN));
    }
    Err(NattenError::InvalidArgument {
        argument,
        rule: format!(
            "{requested} is not a tile configuration of this problem on this device; valid: {}",
            list.join(", ")
        ),
    })
}

/// Every tile configuration [`NaOptions::with_tiles`] accepts for a rank-`rank` NA with these
/// head dims and dtype on `device` (empty where the backend has no tiled kernels).
pub fn na_tile_configs<B: NattenBackend>(
    device: &B::Device,
    rank: usize,
    head_dim: usize,
    head_dim_v: usize,
    dtype: burn::tensor::DType,
) -> Vec<TileConfig> {
    B::tile_configs(device, rank, head_dim, head_dim_v, dtype)
}

/// Every backward tile configuration [`NaOptions::with_backward_tiles`] accepts for a
/// rank-`rank` NA with these head dims and dtype on `device` (NATTEN's
/// `get_bwd_configs_for_cutlass_fna`): empty where the backward has no tile choice (the
/// reference and the portable kernels; the native CUDA backward has one).
pub fn na_backward_tile_configs<B: NattenBackend>(
    device: &B::Device,
    rank: usize,
    head_dim: usize,
    head_dim_v: usize,
    dtype: burn::tensor::DType,
) -> Vec<TileConfig> {
    B::backward_tile_configs(device, rank, head_dim, head_dim_v, dtype)
}

/// Validated inputs of one call, in the layout the user gave (`[batch, *spatial, heads, dim]`,
/// which the backends take: no reshape op is recorded on the way in or out).
struct Prepared<B: NattenBackend, const D: usize> {
    q: Tensor<B, D>,
    k: Tensor<B, D>,
    v: Tensor<B, D>,
    extra: Option<(Tensor<B, 4>, Tensor<B, 4>)>,
    problem: NaProblem,
}

fn prepare<B: NattenBackend, const R: usize, const D: usize>(
    q: Tensor<B, D>,
    k: Tensor<B, D>,
    v: Tensor<B, D>,
    extra: Option<(Tensor<B, 4>, Tensor<B, 4>)>,
    opts: &NaOptions<R>,
) -> Result<Prepared<B, D>, NattenError> {
    crate::backend::trace_mark("na call");
    let s = shape::na_shape(R, &q.dims(), &k.dims(), &v.dims())?;
    let mut others = vec![("k", k.dtype(), k.device()), ("v", v.dtype(), v.device())];
    if let Some((ek, ev)) = &extra {
        shape::extra_kv_tokens(&s, &ek.dims(), &ev.dims())?;
        others.push(("extra_k", ek.dtype(), ek.device()));
        others.push(("extra_v", ev.dtype(), ev.device()));
    }
    same_dtype_and_device(&q, &others)?;
    B::check_backend(opts.backend(), s.head_dim, s.head_dim_v)?;
    let axes = opts.axes();
    validate_axes(&s.spatial, &axes)?;
    let problem = NaProblem {
        spatial: s.spatial.clone(),
        axes: axes.to_vec(),
        scale: resolve_scale(opts.scale(), s.head_dim)?,
        backend: opts.backend(),
        backward_tiles: checked_tiles::<B, R, D>(
            opts,
            TiledPass::Backward,
            &q,
            s.head_dim,
            s.head_dim_v,
        )?,
        tiles: match checked_tiles::<B, R, D>(
            opts,
            TiledPass::Forward,
            &q,
            s.head_dim,
            s.head_dim_v,
        )? {
            // Left to the library: a configuration tuned by `natten-profile --optimize`, if
            // the cache has one that the backend still offers on this device.
            None if opts.backend() == NaBackend::Auto => crate::tuning_cache::cached_tiles::<B>(
                &q.device(),
                &s.spatial,
                &axes,
                s.head_dim,
                s.head_dim_v,
                q.dtype(),
            ),
            chosen => chosen,
        },
    };
    native_can_run(problem.backend, problem.scale, &q, s.head_dim, s.head_dim_v)?;
    Ok(Prepared {
        q,
        k,
        v,
        extra,
        problem,
    })
}

/// Runs a validated call; returns out `[batch, *spatial, heads, head_dim_v]` and LSE
/// `[batch, *spatial, heads]`.
fn run<B: NattenBackend, const D: usize, const L: usize>(
    p: Prepared<B, D>,
) -> (Tensor<B, D>, Tensor<B, L>) {
    let extra = p.extra.map(|(k, v)| ExtraKv {
        k: k.into_primitive().tensor(),
        v: v.into_primitive().tensor(),
    });
    crate::backend::trace_mark("validated");
    let result = B::na_forward(
        p.q.into_primitive().tensor(),
        p.k.into_primitive().tensor(),
        p.v.into_primitive().tensor(),
        extra,
        &p.problem,
    );
    (
        Tensor::from_primitive(TensorPrimitive::Float(result.out)),
        Tensor::from_primitive(TensorPrimitive::Float(result.lse)),
    )
}

macro_rules! na_functions {
    ($rank:literal, $dims:literal, $lse_dims:literal, $na:ident, $with_lse:ident, $with_extra:ident, $layout:literal) => {
        #[doc = concat!("Neighborhood attention over ", $rank, " spatial axis/axes.")]
        ///
        #[doc = concat!("Q `", $layout, "heads, head_dim]`, K `", $layout, "heads_kv, head_dim]`,")]
        #[doc = concat!("V `", $layout, "heads_kv, head_dim_v]` (heads-last, row-major); returns the output")]
        #[doc = concat!("`", $layout, "heads, head_dim_v]` in Q's dtype. `heads_kv` must divide `heads` (GQA/MQA:")]
        /// query head `h` uses KV head `h / (heads / heads_kv)`); `head_dim_v` may differ from
        /// `head_dim`.
        ///
        /// # Errors
        /// [`NattenError::InvalidArgument`] naming the argument when the tensors or the options
        /// break one of NATTEN's rules (see [`NaOptions`]).
        pub fn $na<B: NattenBackend>(
            q: Tensor<B, $dims>,
            k: Tensor<B, $dims>,
            v: Tensor<B, $dims>,
            opts: &NaOptions<$rank>,
        ) -> Result<Tensor<B, $dims>, NattenError> {
            $with_lse(q, k, v, opts).map(|(out, _)| out)
        }

        #[doc = concat!("[`", stringify!($na), "`], also returning the log-sum-exp of the scaled scores:")]
        #[doc = concat!("`", $layout, "heads]`, f32, natural log. Its gradient is ignored, as in NATTEN.")]
        ///
        /// # Errors
        #[doc = concat!("As [`", stringify!($na), "`].")]
        pub fn $with_lse<B: NattenBackend>(
            q: Tensor<B, $dims>,
            k: Tensor<B, $dims>,
            v: Tensor<B, $dims>,
            opts: &NaOptions<$rank>,
        ) -> Result<(Tensor<B, $dims>, Tensor<B, $lse_dims>), NattenError> {
            prepare(q, k, v, None, opts).map(run)
        }

        #[doc = concat!("[`", stringify!($na), "`] with extra key/value tokens that every query attends to:")]
        /// one softmax over the neighbourhood plus all extra tokens. Extra K
        /// `[batch, extra, heads_kv, head_dim]`, extra V `[batch, extra, heads_kv, head_dim_v]`.
        /// Returns the output and the LSE, as the `_with_lse` form does; gradients flow to the
        /// extra tokens too.
        ///
        /// # Errors
        #[doc = concat!("As [`", stringify!($na), "`], and naming `extra_k` / `extra_v` when their shapes, dtype")]
        /// or device do not match K and V.
        pub fn $with_extra<B: NattenBackend>(
            q: Tensor<B, $dims>,
            k: Tensor<B, $dims>,
            v: Tensor<B, $dims>,
            extra_k: Tensor<B, 4>,
            extra_v: Tensor<B, 4>,
            opts: &NaOptions<$rank>,
        ) -> Result<(Tensor<B, $dims>, Tensor<B, $lse_dims>), NattenError> {
            prepare(q, k, v, Some((extra_k, extra_v)), opts).map(run)
        }
    };
}

na_functions!(
    1,
    4,
    3,
    na1d,
    na1d_with_lse,
    na1d_with_extra_kv,
    "[batch, length, "
);
na_functions!(
    2,
    5,
    4,
    na2d,
    na2d_with_lse,
    na2d_with_extra_kv,
    "[batch, height, width, "
);
na_functions!(
    3,
    6,
    5,
    na3d,
    na3d_with_lse,
    na3d_with_extra_kv,
    "[batch, depth, height, width, "
);
