//! Timing one implementation on one backend.

use std::time::Instant;

use burn_natten::burn::backend::Autodiff;
use burn_natten::burn::tensor::{DType, Distribution, Shape, Tensor};
use burn_natten::*;

use crate::args::Args;

/// Median milliseconds of the forward and (if asked) forward+backward.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct Timing {
    /// Forward, milliseconds.
    pub forward_ms: f64,
    /// Forward + backward, milliseconds.
    pub forward_backward_ms: Option<f64>,
}

/// The validated problem, flattened.
pub struct Problem {
    pub args: Args,
    pub axes: Vec<AxisParams>,
    pub heads_kv: usize,
    pub dim_value: usize,
    pub dtype: DType,
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

/// Runs `na{1,2,3}d` on `[b, n, h, d]` tensors reshaped to the problem's grid.
fn call<B: NattenBackend>(
    p: &Problem,
    choice: NaBackend,
    q: Tensor<B, 4>,
    k: Tensor<B, 4>,
    v: Tensor<B, 4>,
) -> Result<Tensor<B, 4>, NattenError> {
    let [b, n, h, _] = q.dims();
    let spatial = &p.args.input_size;
    let grid = |t: Tensor<B, 4>| {
        let mut s = vec![b];
        s.extend(spatial);
        s.extend(&t.dims()[2..]);
        (t, Shape::from(s))
    };
    macro_rules! go {
        ($r:literal, $f:ident) => {{
            let get = |f: fn(&AxisParams) -> usize| -> [usize; $r] {
                std::array::from_fn(|a| f(&p.axes[a]))
            };
            let mut opts = NaOptions::new(get(|a| a.kernel_size))
                .with_stride(get(|a| a.stride))
                .with_dilation(get(|a| a.dilation))
                .with_causal(std::array::from_fn(|a| p.axes[a].causal))
                .with_backend(choice);
            if let (Some(q_tile), Some(kv_tile), false) = (
                &p.args.q_tile,
                &p.args.kv_tile,
                choice == NaBackend::Reference,
            ) {
                let shape = |argument: &'static str,
                             t: &Vec<usize>|
                 -> Result<[usize; $r], NattenError> {
                    t.as_slice()
                        .try_into()
                        .map_err(|_| NattenError::InvalidArgument {
                            argument,
                            rule: format!("needs {} values (one per axis), got {}", $r, t.len()),
                        })
                };
                opts = opts.with_tiles(shape("q-tile", q_tile)?, shape("kv-tile", kv_tile)?);
            }
            let [(q, sq), (k, sk), (v, sv)] = [grid(q), grid(k), grid(v)];
            let out = $f(
                q.reshape::<{ $r + 3 }, _>(sq),
                k.reshape::<{ $r + 3 }, _>(sk),
                v.reshape::<{ $r + 3 }, _>(sv),
                &opts,
            )?;
            Ok(out.reshape([b, n, h, p.dim_value]))
        }};
    }
    match spatial.len() {
        1 => go!(1, na1d),
        2 => go!(2, na2d),
        _ => go!(3, na3d),
    }
}

/// Times `choice` on backend `B`.
pub fn time<B: NattenBackend>(
    p: &Problem,
    choice: NaBackend,
    device: &B::Device,
) -> Result<Timing, NattenError>
where
    Autodiff<B>: NattenBackend,
{
    let a = &p.args;
    let tokens: usize = a.input_size.iter().product();
    let random = |h: usize, d: usize| {
        Tensor::<B, 4>::random(
            [a.batch, tokens, h, d],
            Distribution::Normal(0.0, 1.0),
            (device, p.dtype),
        )
    };
    let (q, k, v) = (
        random(a.heads, a.dim),
        random(p.heads_kv, a.dim),
        random(p.heads_kv, p.dim_value),
    );
    let sync = || B::sync(device).map_err(|e| NattenError::Backend(format!("{e:?}")));

    let mut forward = vec![];
    for i in 0..a.warmup + a.iters {
        sync()?;
        let start = Instant::now();
        let out = call::<B>(p, choice, q.clone(), k.clone(), v.clone())?;
        sync()?;
        drop(out);
        if i >= a.warmup {
            forward.push(start.elapsed().as_secs_f64() * 1e3);
        }
    }
    let forward_backward_ms = if a.backprop {
        let d_out = Tensor::<Autodiff<B>, 4>::from_inner(random(a.heads, p.dim_value));
        let ad = |t: &Tensor<B, 4>| Tensor::<Autodiff<B>, 4>::from_inner(t.clone()).require_grad();
        let mut times = vec![];
        for i in 0..a.warmup + a.iters {
            let (q, k, v) = (ad(&q), ad(&k), ad(&v));
            sync()?;
            let start = Instant::now();
            let out = call::<Autodiff<B>>(p, choice, q.clone(), k.clone(), v.clone())?;
            let grads = (out * d_out.clone()).sum().backward();
            let (dq, dk, dv) = (q.grad(&grads), k.grad(&grads), v.grad(&grads));
            sync()?;
            drop((dq, dk, dv));
            if i >= a.warmup {
                times.push(start.elapsed().as_secs_f64() * 1e3);
            }
        }
        Some(median(times))
    } else {
        None
    };
    Ok(Timing {
        forward_ms: median(forward),
        forward_backward_ms,
    })
}
