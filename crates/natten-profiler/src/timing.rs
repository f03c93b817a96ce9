//! Timing one implementation on one backend.

use std::time::Instant;

use burn_natten::burn::backend::Autodiff;
use burn_natten::burn::tensor::{DType, Distribution, Shape, Tensor};
use burn_natten::*;

use crate::args::Args;

/// Median milliseconds of the forward and (if asked) forward+backward, and the backward's
/// share: the backward kernels (the native path's dQ and dK/dV passes, the portable path's
/// delta, dQ and dK/dV kernels) run only in the second, so their time is the difference.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct Timing {
    /// Forward, milliseconds.
    pub forward_ms: f64,
    /// Forward + backward (the backward seeded with dO = ones), milliseconds.
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

/// `[b, n, h, d]` inputs and the extra tokens `[b, extra, h_kv, d]`, if any.
struct Inputs<B: burn_natten::burn::tensor::backend::Backend> {
    q: Tensor<B, 4>,
    k: Tensor<B, 4>,
    v: Tensor<B, 4>,
    extra: Option<(Tensor<B, 4>, Tensor<B, 4>)>,
}

/// Runs `op` on `[b, n, h, d]` tensors (reshaped to the problem's grid for NA).
fn call<B: NattenBackend>(p: &Problem, op: Op, x: Inputs<B>) -> Result<Tensor<B, 4>, NattenError> {
    let Inputs { q, k, v, extra } = x;
    let (choice, tiles) = match op {
        Op::Na { choice, tiles } => (choice, tiles),
        Op::Dense { choice } => {
            let (k, v) = match extra {
                Some((ek, ev)) => (Tensor::cat(vec![k, ek], 1), Tensor::cat(vec![v, ev], 1)),
                None => (k, v),
            };
            return attention(q, k, v, &AttentionOptions::new().with_backend(choice));
        }
    };
    let [b, n, h, _] = q.dims();
    let spatial = &p.args.input_size;
    let grid = |t: Tensor<B, 4>| {
        let mut s = vec![b];
        s.extend(spatial);
        s.extend(&t.dims()[2..]);
        (t, Shape::from(s))
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
            let [(q, sq), (k, sk), (v, sv)] = [grid(q), grid(k), grid(v)];
            let (q, k, v) = (
                q.reshape::<{ $r + 3 }, _>(sq),
                k.reshape::<{ $r + 3 }, _>(sk),
                v.reshape::<{ $r + 3 }, _>(sv),
            );
            let out = match extra {
                Some((ek, ev)) => $with_extra(q, k, v, ek, ev, &opts)?.0,
                None => $f(q, k, v, &opts)?,
            };
            Ok(out.reshape([b, n, h, p.dim_value]))
        }};
    }
    match spatial.len() {
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
    let sync = || B::sync(device).map_err(|e| NattenError::Backend(format!("{e:?}")));

    let forward_ms = time_calls(a, &sync, || {
        trace_point("forward started");
        let inputs = Inputs {
            q: q.clone(),
            k: k.clone(),
            v: v.clone(),
            extra: extra.clone(),
        };
        let out = call::<B>(p, op, inputs)?;
        trace_point("forward call returned");
        drop(out);
        Ok(())
    })?;
    let forward_backward_ms = if a.backprop {
        let ad = |t: &Tensor<B, 4>| Tensor::<Autodiff<B>, 4>::from_inner(t.clone()).require_grad();
        Some(time_calls(a, &sync, || {
            let (q, k, v) = (ad(&q), ad(&k), ad(&v));
            let extra = extra.as_ref().map(|(ek, ev)| (ad(ek), ad(ev)));
            let inputs = Inputs {
                q: q.clone(),
                k: k.clone(),
                v: v.clone(),
                extra,
            };
            trace_point("forward+backward started");
            let out = call::<Autodiff<B>>(p, op, inputs)?;
            trace_point("backward called");
            // The backward seeded with dO = ones (Burn's seed of a non-scalar root), as a
            // peer's timing gives its backward a ready dO: no loss ops in the time. (Until the
            // thirteenth session: `(out * d_out).sum().backward()` with a random d_out, whose
            // product, sum and their backward took ~0.5 ms per call on the 2-D H100 anchor.)
            let grads = out.backward();
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
