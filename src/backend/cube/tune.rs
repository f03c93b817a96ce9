//! Autotune of the fused kernels' launches (CubeCL's `LocalTuner`): the forward, the dQ pass
//! and the dK/dV pass, each tuned on its own.
//!
//! When a call leaves the tiles to the library (no [`crate::NaOptions::with_tiles`], no entry
//! in the [`crate::tuning_cache`]), each pass's blocks are chosen by timing the device's
//! candidates ([`candidates`]: the block sizes of the pass that fit its shared memory, with 4
//! or 8 planes per cube on the tensor-core path ([`variants`]), at most [`MAX_CANDIDATES`]; the
//! forward and dQ split Q tiles over the axes by [`TilePlan::new`], the dK/dV pass KV tiles by
//! [`TilePlan::for_keys`]) on the first call of each problem class ([`TuneKey`]), then reusing
//! the fastest for every call of that class on that device. CubeCL keeps the results per
//! device, for the process and on disk (its autotune cache, `target/autotune` by default).
//!
//! Problems below [`MIN_TUNED_SCORES`] take the default blocks without tuning: timing every
//! candidate (a warm-up and ten runs each) costs more than the choice can save there.

use burn::tensor::DType;
use burn_cubecl::tensor::CubeTensor;
use burn_cubecl::{CubeRuntime, CubeTuneId};
use cubecl::AutotuneKey;
use cubecl::client::ComputeClient;
use cubecl::tune::{AutotuneOutput, LocalTuner, Tunable, TunableSet, TuneGroup, local_tuner};
use serde::{Deserialize, Serialize};

use super::config::{Pass, TilePlan, block_candidates};
use super::forward::ForwardBlocks;
use super::launch::{BackwardCall, ForwardCall, KeyGradients};

/// The most launches autotune times for one pass of one problem class.
pub const MAX_CANDIDATES: usize = 6;

/// Problems with fewer score elements (batch x heads x queries x keys seen per query) than this
/// (2^26) are not tuned.
pub const MIN_TUNED_SCORES: u64 = 1 << 26;

/// Units per cube of the tensor-core variants that only autotune tries: 8 planes of 32, so 8
/// warps share a tile's products and staging (at head dim 128 the kernels' shared memory allows
/// one cube per SM).
const WIDE_UNITS: usize = 256;

/// What a tuned choice is valid for: one pass of a problem class on one device.
#[derive(Hash, Eq, PartialEq, Debug, Clone, Serialize, Deserialize, AutotuneKey)]
pub struct TuneKey {
    /// The pass: 0 forward, 1 dQ, 2 dK/dV.
    pub pass: u8,
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
    /// How many candidates the device offers for the pass (slots past it are skipped).
    pub candidates: usize,
}

impl TuneKey {
    fn of<R: CubeRuntime>(call: &ForwardCall<R>, pass: Pass) -> Self {
        let g = call.q_tiling();
        let ([batch, _, heads, head_dim], _, head_dim_v) = call.dims();
        let (dense_class, dense_causal) = match &call.dense {
            Some(dense) => (dense.k.meta.shape()[1].next_power_of_two(), dense.causal),
            None => (0, false),
        };
        Self {
            pass: pass as u8,
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
            candidates: candidates(call, pass).len(),
        }
    }
}

/// A pass's launch variants on this device: the block sizes of [`block_candidates`], preferred
/// first, and on the tensor-core path each of them again with [`WIDE_UNITS`] units per cube.
pub fn variants<R: CubeRuntime>(
    client: &ComputeClient<R>,
    pass: Pass,
    head_dim: usize,
    head_dim_v: usize,
    dtype: DType,
) -> Vec<ForwardBlocks> {
    let max_units = client.properties().hardware.max_units_per_cube as usize;
    block_candidates(client, pass, head_dim, head_dim_v, dtype)
        .into_iter()
        .flat_map(|blocks| {
            let wide = ForwardBlocks {
                units: WIDE_UNITS,
                ..blocks
            };
            let wide = (blocks.cmma && WIDE_UNITS <= max_units).then_some(wide);
            std::iter::once(blocks).chain(wide)
        })
        .collect()
}

/// The launches autotune times for one pass of a call, preferred first (the first is the
/// default), at most [`MAX_CANDIDATES`].
pub fn candidates<R: CubeRuntime>(call: &ForwardCall<R>, pass: Pass) -> Vec<ForwardBlocks> {
    let ([_, _, _, d], _, d_v) = call.dims();
    let mut out = variants(&call.q.client, pass, d, d_v, call.q.dtype);
    out.truncate(MAX_CANDIDATES);
    out
}

/// Score elements of a call: batch x heads x queries x keys each query sees (the window's
/// size, plus the dense keys; FMHA: all keys).
pub fn scores<R: CubeRuntime>(call: &ForwardCall<R>) -> u64 {
    let ([batch, tokens, heads, _], _, _) = call.dims();
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

/// Whether a call goes through autotune (when no tiles were chosen): large enough
/// ([`MIN_TUNED_SCORES`]) and with more than one forward candidate.
pub fn worth_tuning<R: CubeRuntime>(call: &ForwardCall<R>) -> bool {
    scores(call) >= MIN_TUNED_SCORES && candidates(call, Pass::Forward).len() > 1
}

/// Runs `run` with the fastest of `pass`'s candidates for the call's class on its device,
/// timing them all on the first call of the class. `inputs` gives the forward-shaped inputs
/// that the key and the candidates are computed from.
fn tuned<R, I, O>(
    tuner: &'static LocalTuner<TuneKey, CubeTuneId>,
    call: I,
    pass: Pass,
    inputs: fn(&I) -> &ForwardCall<R>,
    run: fn(&I, ForwardBlocks) -> O,
) -> O
where
    R: CubeRuntime,
    I: Clone + Send + Sync + 'static,
    O: AutotuneOutput,
{
    let q = &inputs(&call).q;
    let (client, id) = (q.client.clone(), CubeTuneId::new(&q.client, &q.device));
    let tunables = tuner.init(move || {
        // One group: every candidate of a key is timed in the same batch.
        let group = TuneGroup::<TuneKey>::new("blocks", |_| 0);
        let mut set = TunableSet::<TuneKey, I, O>::new_cloning_inputs(move |call: &I| {
            TuneKey::of(inputs(call), pass)
        });
        for slot in 0..MAX_CANDIDATES {
            set = set.with(
                Tunable::new(&format!("blocks_{slot}"), move |call: I| {
                    let blocks = candidates(inputs(&call), pass)
                        .into_iter()
                        .nth(slot)
                        .ok_or_else(|| format!("no candidate {slot} on this device"))?;
                    Ok::<_, String>(run(&call, blocks))
                })
                .group(
                    &group,
                    move |key| if slot < key.candidates { 0 } else { -1 },
                ),
            );
        }
        set
    });
    tuner.execute(&id, &client, tunables, call)
}

/// A forward's outputs: out and LSE.
pub struct Forwarded<R: CubeRuntime> {
    pub out: CubeTensor<R>,
    pub lse: CubeTensor<R>,
}

impl<R: CubeRuntime> AutotuneOutput for Forwarded<R> {}
impl<R: CubeRuntime> AutotuneOutput for KeyGradients<R> {}

/// The forward with the fastest candidate for the call's class. Returns (out, LSE f32).
pub fn forward_autotuned<R: CubeRuntime>(call: ForwardCall<R>) -> (CubeTensor<R>, CubeTensor<R>) {
    static TUNER: LocalTuner<TuneKey, CubeTuneId> = local_tuner!("forward");
    let out = tuned(
        &TUNER,
        call,
        Pass::Forward,
        |c| c,
        |c, blocks| {
            let (out, lse) = c.launch(blocks, &TilePlan::new(&c.q_tiling(), &blocks));
            Forwarded { out, lse }
        },
    );
    (out.out, out.lse)
}

/// The dQ pass with the fastest candidate for the call's class.
pub fn dq_autotuned<R: CubeRuntime>(call: BackwardCall<R>) -> CubeTensor<R> {
    static TUNER: LocalTuner<TuneKey, CubeTuneId> = local_tuner!("dq");
    tuned(
        &TUNER,
        call,
        Pass::Dq,
        |c| &c.inputs,
        |c, blocks| c.launch_dq(blocks),
    )
}

/// The dK/dV passes with the fastest candidate for the call's class.
pub fn dkdv_autotuned<R: CubeRuntime>(call: BackwardCall<R>) -> KeyGradients<R> {
    static TUNER: LocalTuner<TuneKey, CubeTuneId> = local_tuner!("dkdv");
    tuned(
        &TUNER,
        call,
        Pass::Dkdv,
        |c| &c.inputs,
        |c, blocks| c.launch_dkdv(blocks),
    )
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

    /// Checks every candidate of every pass against the default blocks, then the tuned
    /// calls (twice: the tuning call and a cache hit). `tol` is relative: the candidates sum
    /// in other orders, and round the outputs to the input dtype.
    fn check_candidates<R: CubeRuntime>(device: R::Device, dtype: DType, tol: f32) {
        let call = call::<R>(dtype, &device);
        assert!(
            candidates(&call, Pass::Forward).len() > 1,
            "several candidates on this device"
        );
        assert!(
            !worth_tuning(&call),
            "a problem this small is not tuned by default"
        );
        let close = |what: &str, got: &[Vec<f32>], want: &[Vec<f32>]| {
            for (got, want) in got.iter().zip(want) {
                assert_eq!(got.len(), want.len());
                for (g, w) in got.iter().zip(want.iter()) {
                    assert!((g - w).abs() <= tol * (1.0 + w.abs()), "{what}: {g} vs {w}");
                }
            }
        };
        let forward =
            |(out, lse): (CubeTensor<R>, CubeTensor<R>)| vec![read::<R, 4>(out), read::<R, 3>(lse)];
        let (blocks, plan) = call.default_plan();
        let (out, lse) = call.launch(blocks, &plan);
        let want = forward((out.clone(), lse.clone()));
        for blocks in candidates(&call, Pass::Forward) {
            let plan = TilePlan::new(&call.q_tiling(), &blocks);
            close(
                &format!("forward {blocks:?}"),
                &forward(call.launch(blocks, &plan)),
                &want,
            );
        }
        for _ in 0..2 {
            close(
                "tuned forward",
                &forward(forward_autotuned(call.clone())),
                &want,
            );
        }

        let d_out = tensor::<R>([2, 120, 2, 16], dtype, &device);
        let backward = BackwardCall::new(
            call.q.clone(),
            call.k.clone(),
            call.v.clone(),
            None,
            out,
            lse,
            d_out,
            call.neighborhood,
            call.scale,
        );
        let keys = |g: KeyGradients<R>| {
            let (dk, dv) = g.neighborhood.expect("NA has a neighbourhood");
            vec![read::<R, 4>(dk), read::<R, 4>(dv)]
        };
        let want_dq = vec![read::<R, 4>(
            backward.launch_dq(backward.default_blocks(Pass::Dq)),
        )];
        let want_keys = keys(backward.launch_dkdv(backward.default_blocks(Pass::Dkdv)));
        for blocks in candidates(&call, Pass::Dq) {
            let dq = vec![read::<R, 4>(backward.launch_dq(blocks))];
            close(&format!("dq {blocks:?}"), &dq, &want_dq);
        }
        for blocks in candidates(&call, Pass::Dkdv) {
            let got = keys(backward.launch_dkdv(blocks));
            close(&format!("dkdv {blocks:?}"), &got, &want_keys);
        }
        for _ in 0..2 {
            let dq = vec![read::<R, 4>(dq_autotuned(backward.clone()))];
            close("tuned dq", &dq, &want_dq);
            close(
                "tuned dkdv",
                &keys(dkdv_autotuned(backward.clone())),
                &want_keys,
            );
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
