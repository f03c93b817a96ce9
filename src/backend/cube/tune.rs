//! Autotune of the fused forward's tile plan (CubeCL's `LocalTuner`).
//!
//! When a call leaves the tiles to the library (no [`crate::NaOptions::with_tiles`], no entry
//! in the [`crate::tuning_cache`]), the forward's block sizes are chosen by timing the device's
//! candidates ([`candidates`]: the block-size classes of [`block_candidates`] that fit its
//! shared memory, at most [`MAX_CANDIDATES`], each split over the axes by [`TilePlan::new`]) on
//! the first call of each problem class ([`ForwardTuneKey`]), then reusing the fastest for every
//! call of that class on that device. CubeCL keeps the results per device, for the process (and
//! on disk where its `autotune` cache is enabled).
//!
//! Problems below [`MIN_TUNED_SCORES`] take the default plan without tuning: timing every
//! candidate (a warm-up and ten runs each) costs more than the choice can save there.

use burn::tensor::DType;
use burn_cubecl::tensor::CubeTensor;
use burn_cubecl::{CubeRuntime, CubeTuneId};
use cubecl::AutotuneKey;
use cubecl::tune::{AutotuneOutput, LocalTuner, Tunable, TunableSet, TuneGroup, local_tuner};
use serde::{Deserialize, Serialize};

use super::config::{Pass, TilePlan, block_candidates};
use super::forward::ForwardBlocks;
use super::launch::ForwardCall;

/// The most tile plans autotune times for one problem class.
pub const MAX_CANDIDATES: usize = 4;

/// Problems with fewer score elements (batch x heads x queries x keys seen per query) than this
/// (2^26) are not tuned.
pub const MIN_TUNED_SCORES: u64 = 1 << 26;

/// What a tuned choice is valid for: the problem's shape class on one device.
#[derive(Hash, Eq, PartialEq, Debug, Clone, Serialize, Deserialize, AutotuneKey)]
pub struct ForwardTuneKey {
    /// Per axis (3, padded in front with 1), the query grid's length rounded up to a power of
    /// two.
    pub len_class: [u32; 3],
    /// Per axis: kernel size, stride, dilation, causal (1, 1, 1, false without a
    /// neighbourhood).
    pub kernel_size: [u32; 3],
    pub stride: [u32; 3],
    pub dilation: [u32; 3],
    pub causal: [bool; 3],
    /// Whether the call has a neighbourhood (NA) or only dense keys (FMHA).
    pub neighborhood: bool,
    /// Dense keys (extra KV tokens, or FMHA's keys) rounded up to a power of two; 0 without.
    pub dense_class: usize,
    pub dense_causal: bool,
    /// Batch x heads.
    #[autotune(anchor)]
    pub batch_heads: usize,
    pub head_dim: usize,
    pub head_dim_v: usize,
    pub dtype: DType,
    /// How many candidates the device offers for these head dims and dtype (slots past it are
    /// skipped).
    pub candidates: usize,
}

impl ForwardTuneKey {
    fn of<R: CubeRuntime>(call: &ForwardCall<R>) -> Self {
        let g = call.q_tiling();
        let [batch, _, heads, head_dim] = call.q.meta.shape().dims();
        let head_dim_v = call.v.meta.shape()[3];
        let (dense_class, dense_causal) = match &call.dense {
            Some(dense) => (dense.k.meta.shape()[1].next_power_of_two(), dense.causal),
            None => (0, false),
        };
        Self {
            len_class: g.len.map(u32::next_power_of_two),
            kernel_size: g.kernel_size,
            stride: g.stride,
            dilation: g.dilation,
            causal: g.causal,
            neighborhood: call.neighborhood.is_some(),
            dense_class,
            dense_causal,
            batch_heads: batch * heads,
            head_dim,
            head_dim_v,
            dtype: call.q.dtype,
            candidates: candidates(call).len(),
        }
    }
}

/// The tile plans autotune times for a call: the device's forward block-size classes, preferred
/// first (the first is the default plan), at most [`MAX_CANDIDATES`].
pub fn candidates<R: CubeRuntime>(call: &ForwardCall<R>) -> Vec<(ForwardBlocks, TilePlan)> {
    let [_, _, _, d] = call.q.meta.shape().dims();
    let d_v = call.v.meta.shape()[3];
    let g = call.q_tiling();
    block_candidates(&call.q.client, Pass::Forward, d, d_v, call.q.dtype)
        .into_iter()
        .take(MAX_CANDIDATES)
        .map(|blocks| (blocks, TilePlan::new(&g, &blocks)))
        .collect()
}

/// Score elements of a call: batch x heads x queries x keys each query sees (the window's
/// size, plus the dense keys; FMHA: all keys).
pub fn scores<R: CubeRuntime>(call: &ForwardCall<R>) -> u64 {
    let [batch, tokens, heads, _] = call.q.meta.shape().dims();
    let window: u64 = match call.neighborhood {
        Some(g) => g.kernel_size.iter().map(|&k| k as u64).product(),
        None => 0,
    };
    let dense = call
        .dense
        .as_ref()
        .map_or(0, |d| d.k.meta.shape()[1] as u64);
    (batch * heads * tokens) as u64 * (window + dense)
}

/// Whether a call without chosen tiles goes through autotune: large enough
/// ([`MIN_TUNED_SCORES`]) and with more than one candidate.
pub fn worth_tuning<R: CubeRuntime>(call: &ForwardCall<R>) -> bool {
    scores(call) >= MIN_TUNED_SCORES && candidates(call).len() > 1
}

/// A forward's outputs: out and LSE.
pub struct Forwarded<R: CubeRuntime> {
    pub out: CubeTensor<R>,
    pub lse: CubeTensor<R>,
}

impl<R: CubeRuntime> AutotuneOutput for Forwarded<R> {}

/// Runs the forward with the fastest candidate for the call's [`ForwardTuneKey`] on its device,
/// timing them all on the first call of the class. Returns (out, LSE f32).
pub fn forward_autotuned<R: CubeRuntime>(call: ForwardCall<R>) -> (CubeTensor<R>, CubeTensor<R>) {
    static TUNER: LocalTuner<ForwardTuneKey, CubeTuneId> = local_tuner!();

    let client = call.q.client.clone();
    let id = CubeTuneId::new(&call.q.client, &call.q.device);
    let tunables = TUNER.init(|| {
        // One group: every candidate of a key is timed in the same batch.
        let plans = TuneGroup::<ForwardTuneKey>::new("tile_plans", |_| 0);
        let mut set =
            TunableSet::<ForwardTuneKey, ForwardCall<R>, Forwarded<R>>::new_cloning_inputs(
                |call: &ForwardCall<R>| ForwardTuneKey::of(call),
            );
        for slot in 0..MAX_CANDIDATES {
            let name = format!("tile_plan_{slot}");
            set = set.with(
                Tunable::new(&name, move |call: ForwardCall<R>| {
                    let (blocks, plan) = candidates(&call)
                        .into_iter()
                        .nth(slot)
                        .ok_or_else(|| format!("no candidate {slot} on this device"))?;
                    let (out, lse) = call.launch(blocks, &plan);
                    Ok::<_, String>(Forwarded { out, lse })
                })
                .group(
                    &plans,
                    move |key| if slot < key.candidates { 0 } else { -1 },
                ),
            );
        }
        set
    });
    let result = TUNER.execute(&id, &client, tunables, call);
    (result.out, result.lse)
}

#[cfg(all(test, feature = "wgpu", not(target_family = "wasm")))]
mod tests {
    use burn::tensor::{Distribution, Tensor};
    use burn_cubecl::CubeBackend;
    use cubecl::wgpu::WgpuRuntime;

    use super::*;
    use crate::backend::cube::Geometry;

    type Unfused = CubeBackend<WgpuRuntime, f32, i32, u32>;

    fn tensor(shape: [usize; 4]) -> CubeTensor<WgpuRuntime> {
        let device = Default::default();
        Tensor::<Unfused, 4>::random(shape, Distribution::Normal(0.0, 1.0), &device)
            .into_primitive()
            .tensor()
    }

    fn read(t: CubeTensor<WgpuRuntime>) -> Vec<f32> {
        Tensor::<Unfused, 4>::from_primitive(burn::tensor::TensorPrimitive::Float(t))
            .into_data()
            .to_vec()
            .unwrap()
    }

    /// The tuner times every candidate of a 2-D problem on the wgpu device (lavapipe in CI) and
    /// runs one of them: the result is the default plan's up to summation order, and a second
    /// call (a cache hit) gives the same result as the first.
    #[test]
    fn autotuned_forward_matches_the_default_plan() {
        let probe = std::panic::catch_unwind(|| tensor([1, 1, 1, 1]));
        if probe.is_err() {
            assert_ne!(
                std::env::var("BURN_NATTEN_REQUIRE_WGPU").as_deref(),
                Ok("1"),
                "BURN_NATTEN_REQUIRE_WGPU=1 but no usable wgpu adapter"
            );
            eprintln!("SKIPPED: no wgpu adapter for the autotune test");
            return;
        }
        let problem = crate::backend::NaProblem {
            spatial: vec![12, 10],
            axes: vec![
                natten_core::AxisParams {
                    kernel_size: 5,
                    stride: 1,
                    dilation: 2,
                    causal: false,
                },
                natten_core::AxisParams {
                    kernel_size: 3,
                    stride: 2,
                    dilation: 1,
                    causal: true,
                },
            ],
            scale: 0.25,
            backend: crate::NaBackend::Auto,
            tiles: None,
            backward_tiles: None,
        };
        let shape = [2, 120, 2, 16];
        let call = ForwardCall {
            q: tensor(shape),
            k: tensor(shape),
            v: tensor([2, 120, 2, 8]),
            dense: None,
            neighborhood: Some(Geometry::of(&problem)),
            scale: problem.scale,
        };
        assert!(
            candidates(&call).len() > 1,
            "the wgpu device offers several block sizes for head dim 16 in f32"
        );
        assert!(
            !worth_tuning(&call),
            "a problem this small is not tuned by default"
        );
        let (blocks, plan) = call.default_plan();
        let (want_out, want_lse) = call.launch(blocks, &plan);
        let (want_out, want_lse) = (read(want_out), read_lse(want_lse));
        for _ in 0..2 {
            let (out, lse) = forward_autotuned(call.clone());
            let (out, lse) = (read(out), read_lse(lse));
            for (got, want) in [(&out, &want_out), (&lse, &want_lse)] {
                assert_eq!(got.len(), want.len());
                for (g, w) in got.iter().zip(want.iter()) {
                    assert!((g - w).abs() <= 1e-5 * (1.0 + w.abs()), "{g} vs {w}");
                }
            }
        }
    }

    fn read_lse(t: CubeTensor<WgpuRuntime>) -> Vec<f32> {
        Tensor::<Unfused, 3>::from_primitive(burn::tensor::TensorPrimitive::Float(t))
            .into_data()
            .to_vec()
            .unwrap()
    }
}
