//! Timing one implementation on one backend.

use std::time::Instant;

use burn_natten::burn::backend::Autodiff;
use burn_natten::burn::tensor::{DType, Distribution, Shape, Tensor};
use burn_natten::*;

use crate::args::Args;
use crate::seed::seeded;

/// Median milliseconds of the forward and (if asked) forward+backward, and the backward's
/// share: the backward kernels (the native path's dQ and dK/dV passes, the portable path's
/// delta, dQ and dK/dV kernels) run only in the second, so their time is the difference.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct Timing {
    /// Forward, milliseconds.
    pub forward_ms: f64,
    /// Forward + backward (the backward from a ready random dO), milliseconds.
    pub forward_backward_ms: Option<f64>,
    /// Backward alone (forward+backward minus forward), milliseconds.
    pub backward_ms: Option<f64>,
}

/// The validated problem, flattened.
pub struct Problem {
    pub args: Args,
    pub axes: Vec<AxisParams>,
    pub heads_kv: usize,
    pub dim_value: usize,
    pub dtype: DType,
    /// The implementation `--impl` asks for.
    pub choice: NaBackend,
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

/// What one timed call runs.
#[derive(Debug, Clone, Copy)]
pub enum Op<'a> {
    /// `na{1,2,3}d` (with the extra tokens, if any) by `choice`, with these tiles if given,
    /// else those of `--q-tile/--kv-tile`.
    Na {
        /// The implementation.
        choice: NaBackend,
        /// Tiles that override the command line's.
        tiles: Option<&'a TileConfig>,
    },
    /// Dense attention (`burn_natten::attention`) over all tokens (and the extra ones) by
    /// `choice`: the baseline of the speedup.
    Dense {
        /// The implementation.
        choice: NaBackend,
    },
}

/// One call's inputs, in the layout the timed function takes (made before the timing, as a
/// peer's benchmark makes its tensors): Q, K, V of rank `D`, `[b, *grid, h, d]` for NA and
/// `[b, n, h, d]` for dense attention, and the extra tokens `[b, extra, h_kv, d]`, if any (for
/// dense attention, already among K and V).
struct Inputs<B: burn_natten::burn::tensor::backend::Backend, const D: usize> {
    q: Tensor<B, D>,
    k: Tensor<B, D>,
    v: Tensor<B, D>,
    extra: Option<(Tensor<B, 4>, Tensor<B, 4>)>,
}

impl<B: burn_natten::burn::tensor::backend::Backend, const D: usize> Clone for Inputs<B, D> {
    fn clone(&self) -> Self {
        Self {
            q: self.q.clone(),
            k: self.k.clone(),
            v: self.v.clone(),
            extra: self.extra.clone(),
        }
    }
}

/// The same tensor, typed with its rank `E` (equal to `D` where it is called: a rank-erased
/// primitive changes hands, nothing runs).
fn ranked<B: burn_natten::burn::tensor::backend::Backend, const D: usize, const E: usize>(
    t: Tensor<B, D>,
) -> Tensor<B, E> {
    debug_assert_eq!(D, E);
    Tensor::from_primitive(t.into_primitive())
}

/// Runs `op` on inputs made by [`inputs`] for it; returns the output, of Q's rank.
fn call<B: NattenBackend, const D: usize>(
    p: &Problem,
    op: Op,
    x: Inputs<B, D>,
) -> Result<Tensor<B, D>, NattenError> {
    let Inputs { q, k, v, extra } = x;
    let (choice, tiles) = match op {
        Op::Na { choice, tiles } => (choice, tiles),
        Op::Dense { choice } => {
            let (q, k, v) = (ranked(q), ranked(k), ranked(v));
            return attention(q, k, v, &AttentionOptions::new().with_backend(choice)).map(ranked);
        }
    };
    macro_rules! go {
        ($r:literal, $f:ident, $with_extra:ident) => {{
            let get = |f: fn(&AxisParams) -> usize| -> [usize; $r] {
                std::array::from_fn(|a| f(&p.axes[a]))
            };
            let mut opts = NaOptions::new(get(|a| a.kernel_size))
                .with_stride(get(|a| a.stride))
                .with_dilation(get(|a| a.dilation))
                .with_causal(std::array::from_fn(|a| p.axes[a].causal))
                .with_backend(choice);
            let (q_tile, kv_tile) = match tiles {
                Some(t) => (Some(&t.q_tile), Some(&t.kv_tile)),
                None => (p.args.q_tile.as_ref(), p.args.kv_tile.as_ref()),
            };
            let shape =
                |argument: &'static str, t: &Vec<usize>| -> Result<[usize; $r], NattenError> {
                    t.as_slice()
                        .try_into()
                        .map_err(|_| NattenError::InvalidArgument {
                            argument,
                            rule: format!("needs {} values (one per axis), got {}", $r, t.len()),
                        })
                };
            if let (Some(q_tile), Some(kv_tile), false) =
                (q_tile, kv_tile, choice == NaBackend::Reference)
            {
                opts = opts.with_tiles(shape("q-tile", q_tile)?, shape("kv-tile", kv_tile)?);
            }
            if let (Some(q_tile), Some(kv_tile)) =
                (&p.args.backward_q_tile, &p.args.backward_kv_tile)
            {
                opts = opts.with_backward_tiles(
                    shape("backward-q-tile", q_tile)?,
                    shape("backward-kv-tile", kv_tile)?,
                );
            }
            let (q, k, v) = (ranked(q), ranked(k), ranked(v));
            let out = match extra {
                Some((ek, ev)) => $with_extra(q, k, v, ek, ev, &opts)?.0,
                None => $f(q, k, v, &opts)?,
            };
            Ok(ranked(out))
        }};
    }
    match p.args.input_size.len() {
        1 => go!(1, na1d, na1d_with_extra_kv),
        2 => go!(2, na2d, na2d_with_extra_kv),
        _ => go!(3, na3d, na3d_with_extra_kv),
    }
}

/// Whether `BURN_NATTEN_NATIVE_TRACE` asks for the time of each step.
fn trace_enabled() -> bool {
    std::env::var_os("BURN_NATTEN_NATIVE_TRACE").is_some_and(|v| v != "0")
}

/// Whether `BURN_NATTEN_NATIVE_TRACE` or `BURN_NATTEN_NATIVE_TRACE_HANDOFF` asks for the
/// time of each step.
fn marking() -> bool {
    trace_enabled()
        || std::env::var_os("BURN_NATTEN_NATIVE_TRACE_HANDOFF").is_some_and(|v| v != "0")
}

/// With either variable set, prints `what` with the wall-clock time in microseconds
/// since the Unix epoch, comparable with the native calls' own trace lines.
fn trace_point(what: &str) {
    if marking() {
        let at = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_micros());
        eprintln!("natten-profile: {what} at t={at} us");
    }
}

/// Milliseconds per call of `run` after `args.warmup` untimed calls: the median of
/// `args.iters` calls each timed between two syncs, or with `args.back_to_back` the median of
/// three per-call means of `args.iters` calls enqueued between two syncs.
fn time_calls(
    args: &Args,
    sync: &impl Fn() -> Result<(), NattenError>,
    mut run: impl FnMut() -> Result<(), NattenError>,
) -> Result<f64, NattenError> {
    for _ in 0..args.warmup {
        sync()?;
        run()?;
    }
    let mut times = vec![];
    if args.back_to_back {
        for _ in 0..3 {
            sync()?;
            trace_point("synced, starting a run");
            let start = Instant::now();
            for _ in 0..args.iters {
                run()?;
            }
            sync()?;
            trace_point("run synced");
            times.push(start.elapsed().as_secs_f64() * 1e3 / args.iters as f64);
        }
    } else {
        for _ in 0..args.iters {
            sync()?;
            let start = Instant::now();
            run()?;
            sync()?;
            times.push(start.elapsed().as_secs_f64() * 1e3);
            trace_point("synced");
            if trace_enabled() {
                sync()?;
                trace_point("synced again (nothing pending)");
            }
        }
    }
    Ok(median(times))
}

/// Times `op` on backend `B`.
pub fn time<B: NattenBackend>(
    p: &Problem,
    op: Op,
    device: &B::Device,
) -> Result<Timing, NattenError>
where
    Autodiff<B>: NattenBackend,
{
    match (op, p.args.input_size.len()) {
        (Op::Dense { .. }, _) | (Op::Na { .. }, 1) => time_rank::<B, 4>(p, op, device),
        (_, 2) => time_rank::<B, 5>(p, op, device),
        _ => time_rank::<B, 6>(p, op, device),
    }
}

/// Random inputs for `op` (normal, `p`'s dtype), of rank `D` (4 for dense attention and 1-D
/// NA, the grid's rank + 3 otherwise).
fn inputs<B: NattenBackend, const D: usize>(
    p: &Problem,
    op: Op,
    device: &B::Device,
) -> Inputs<B, D> {
    let a = &p.args;
    let tokens: usize = a.input_size.iter().product();
    let random = |n: usize, h: usize, d: usize| {
        Tensor::<B, 4>::random(
            [a.batch, n, h, d],
            Distribution::Normal(0.0, 1.0),
            (device, p.dtype),
        )
    };
    let (q, k, v) = (
        random(tokens, a.heads, a.dim),
        random(tokens, p.heads_kv, a.dim),
        random(tokens, p.heads_kv, p.dim_value),
    );
    let extra = (a.extra_kv > 0).then(|| {
        (
            random(a.extra_kv, p.heads_kv, a.dim),
            random(a.extra_kv, p.heads_kv, p.dim_value),
        )
    });
    match op {
        Op::Dense { .. } => {
            let (k, v) = match extra {
                Some((ek, ev)) => (Tensor::cat(vec![k, ek], 1), Tensor::cat(vec![v, ev], 1)),
                None => (k, v),
            };
            Inputs {
                q: ranked(q),
                k: ranked(k),
                v: ranked(v),
                extra: None,
            }
        }
        Op::Na { .. } => {
            let grid = |t: Tensor<B, 4>| {
                let [b, _, h, d] = t.dims();
                let mut shape = vec![b];
                shape.extend(&a.input_size);
                shape.extend([h, d]);
                t.reshape::<D, _>(Shape::from(shape))
            };
            Inputs {
                q: grid(q),
                k: grid(k),
                v: grid(v),
                extra,
            }
        }
    }
}

/// [`time`] with inputs of rank `D`.
fn time_rank<B: NattenBackend, const D: usize>(
    p: &Problem,
    op: Op,
    device: &B::Device,
) -> Result<Timing, NattenError>
where
    Autodiff<B>: NattenBackend,
{
    let a = &p.args;
    let x = inputs::<B, D>(p, op, device);
    let sync = || B::sync(device).map_err(|e| NattenError::Backend(format!("{e:?}")));

    let forward_ms = time_calls(a, &sync, || {
        trace_point("forward started");
        let out = call::<B, D>(p, op, x.clone())?;
        trace_point("forward call returned");
        drop(out);
        Ok(())
    })?;
    let forward_backward_ms = if a.backprop {
        // The upstream gradient, ready before the timing as a peer's is (`seed.rs`).
        let mut out_shape = x.q.dims();
        out_shape[D - 1] = p.dim_value;
        let d_out =
            Tensor::<B, D>::random(out_shape, Distribution::Normal(0.0, 1.0), (device, p.dtype));
        fn tracked<B: NattenBackend, const R: usize>(t: &Tensor<B, R>) -> Tensor<Autodiff<B>, R>
        where
            Autodiff<B>: NattenBackend,
        {
            Tensor::from_inner(t.clone()).require_grad()
        }
        Some(time_calls(a, &sync, || {
            let (q, k, v) = (tracked(&x.q), tracked(&x.k), tracked(&x.v));
            let extra = x.extra.as_ref().map(|(ek, ev)| (tracked(ek), tracked(ev)));
            let inputs = Inputs {
                q: q.clone(),
                k: k.clone(),
                v: v.clone(),
                extra,
            };
            trace_point("forward+backward started");
            let out = call::<Autodiff<B>, D>(p, op, inputs)?;
            trace_point("backward called");
            // The backward from the ready dO: no loss ops and no fill in the time. (Until the
            // thirteenth session `(out * d_out).sum().backward()`, whose product, sum and their
            // backward took ~0.5 ms per call on the 2-D H100 anchor; until the twentieth
            // `out.backward()`, whose dO = ones fill took ~21 us.)
            let grads = seeded(out, &d_out).backward();
            drop((q.grad(&grads), k.grad(&grads), v.grad(&grads)));
            trace_point("backward returned");
            Ok(())
        })?)
    } else {
        None
    };
    Ok(Timing {
        forward_ms,
        forward_backward_ms,
        backward_ms: forward_backward_ms.map(|fb| fb - forward_ms),
    })
}
