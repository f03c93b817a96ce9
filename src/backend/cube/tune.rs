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

use super::config::{TilePlan, forward_variants};
use super::forward::ForwardBlocks;
use super::launch::ForwardCall;

/// The most tile plans autotune times for one problem class.
pub const MAX_CANDIDATES: usize = 6;

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

/// The launches autotune times for a call: the device's forward variants, preferred first (the
/// first is the default plan), at most [`MAX_CANDIDATES`].
pub fn candidates<R: CubeRuntime>(call: &ForwardCall<R>) -> Vec<(ForwardBlocks, TilePlan)> {
    let [_, _, _, d] = call.q.meta.shape().dims();
    let d_v = call.v.meta.shape()[3];
    let g = call.q_tiling();
    forward_variants(&call.q.client, d, d_v, call.q.dtype)
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

#[cfg(all(
    test,
    any(feature = "wgpu", feature = "cuda"),
    not(target_family = "wasm")
))]
mod tests {
    use burn::tensor::{DType, Distribution, Tensor, TensorPrimitive};
    use burn_cubecl::CubeBackend;

    use super::*;
    use crate::backend::cube::Geometry;

    type Backend<R> = CubeBackend<R, f32, i32, u32>;

    fn tensor<R: CubeRuntime>(
        shape: [usize; 4],
        dtype: DType,
        device: &R::Device,
    ) -> CubeTensor<R> {
        Tensor::<Backend<R>, 4>::random(shape, Distribution::Normal(0.0, 1.0), device)
            .cast(dtype)
            .into_primitive()
            .tensor()
    }

    fn read<R: CubeRuntime, const D: usize>(t: CubeTensor<R>) -> Vec<f32> {
        Tensor::<Backend<R>, D>::from_primitive(TensorPrimitive::Float(t))
            .cast(DType::F32)
            .into_data()
            .to_vec()
            .unwrap()
    }

    /// A 2-D problem (dilation, stride, causal, D_v != D) on `device` with a lone neighbourhood.
    fn call<R: CubeRuntime>(dtype: DType, device: &R::Device) -> ForwardCall<R> {
        let axis = |kernel_size, stride, dilation, causal| natten_core::AxisParams {
            kernel_size,
            stride,
            dilation,
            causal,
        };
        let problem = crate::backend::NaProblem {
            spatial: vec![12, 10],
            axes: vec![axis(5, 1, 2, false), axis(3, 2, 1, true)],
            scale: 0.25,
            backend: crate::NaBackend::Auto,
            tiles: None,
            backward_tiles: None,
        };
        ForwardCall {
            q: tensor([2, 120, 2, 32], dtype, device),
            k: tensor([2, 120, 2, 32], dtype, device),
            v: tensor([2, 120, 2, 16], dtype, device),
            dense: None,
            neighborhood: Some(Geometry::of(&problem)),
            scale: problem.scale,
        }
    }

    /// Every candidate's out and LSE against the default plan's, then the tuner's (twice: the
    /// tuning call and a cache hit). `tol` is relative: the candidates sum in other orders, and
    /// round the output to the input dtype.
    fn check_candidates<R: CubeRuntime>(device: R::Device, dtype: DType, tol: f32) {
        let call = call::<R>(dtype, &device);
        let variants = candidates(&call);
        assert!(variants.len() > 1, "several candidates on this device");
        assert!(
            !worth_tuning(&call),
            "a problem this small is not tuned by default"
        );
        let (blocks, plan) = call.default_plan();
        let (out, lse) = call.launch(blocks, &plan);
        let want = (read::<R, 4>(out), read::<R, 3>(lse));
        let close = |what: &str, got: (Vec<f32>, Vec<f32>)| {
            for (got, want) in [(&got.0, &want.0), (&got.1, &want.1)] {
                assert_eq!(got.len(), want.len());
                for (g, w) in got.iter().zip(want.iter()) {
                    assert!((g - w).abs() <= tol * (1.0 + w.abs()), "{what}: {g} vs {w}");
                }
            }
        };
        for (blocks, plan) in &variants {
            let (out, lse) = call.launch(*blocks, plan);
            close(
                &format!("{blocks:?}"),
                (read::<R, 4>(out), read::<R, 3>(lse)),
            );
        }
        for _ in 0..2 {
            let (out, lse) = forward_autotuned(call.clone());
            close("autotuned", (read::<R, 4>(out), read::<R, 3>(lse)));
        }
    }

    /// Whether `device` runs kernels (a probe in a panic guard).
    fn usable<R: CubeRuntime>(device: &R::Device) -> bool {
        let device = device.clone();
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || {
            read::<R, 4>(tensor::<R>([1, 1, 1, 1], DType::F32, &device))
        }))
        .is_ok()
    }

    /// On the wgpu device (lavapipe in CI: the scalar path's block sizes), in f32.
    #[cfg(feature = "wgpu")]
    #[test]
    fn autotune_candidates_match_the_default_plan_on_wgpu() {
        type R = cubecl::wgpu::WgpuRuntime;
        let device = Default::default();
        if !usable::<R>(&device) {
            assert_ne!(
                std::env::var("BURN_NATTEN_REQUIRE_WGPU").as_deref(),
                Ok("1"),
                "BURN_NATTEN_REQUIRE_WGPU=1 but no usable wgpu adapter"
            );
            eprintln!("SKIPPED: no wgpu adapter for the autotune test");
            return;
        }
        check_candidates::<R>(device, DType::F32, 1e-5);
    }

    /// On CUDA (the GPU machine): f16 on the tensor-core path, 4- and 8-plane variants. f16
    /// rounds the output to 11 significant bits: 2e-3 relative.
    #[cfg(feature = "cuda")]
    #[test]
    fn autotune_candidates_match_the_default_plan_on_cuda() {
        type R = cubecl::cuda::CudaRuntime;
        let device = Default::default();
        if !usable::<R>(&device) {
            eprintln!("SKIPPED: no CUDA driver or device for the autotune test");
            return;
        }
        check_candidates::<R>(device, DType::F16, 2e-3);
    }
}
