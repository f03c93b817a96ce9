//! `Fusion<B>` (the default `Wgpu`, `Cuda`, `Rocm` aliases): each call is one custom operation in
//! the fusion stream, executed by the inner backend `B`'s implementation.
//!
//! Running the inner backend's (fused or reference) implementation keeps one code path per
//! backend. It also keeps the reference's tensor ops out of burn-fusion's kernel fusion, which
//! in Burn 0.21 computes a wrong dQ for some of these graphs on wgpu (seen on golden case
//! A001; the unfused `CubeBackend` and NdArray compute it correctly).
//!
//! A call is executed as soon as it is registered: [`register`] drains the calling thread's
//! fusion stream (no device sync), so the call's kernels are queued on the GPU while the caller
//! goes on building the graph (the backward, typically). Left to burn-fusion, a call whose
//! execution plan is cached waits in the queue for the operations that follow it, often until
//! the next sync. `BURN_NATTEN_FUSION_EAGER=0` leaves the calls to burn-fusion.

use burn::backend::ir::{CustomOpIr, HandleContainer, OperationIr, TensorIr};
use burn::tensor::ops::FloatTensor;
use burn::tensor::{DType, Shape};
use burn_fusion::stream::{Operation, OperationStreams};
use burn_fusion::{Fusion, FusionBackend, FusionRuntime, FusionTensor};

use super::{AttentionGradients, AttentionOutput, ExtraKv, FmhaProblem, NaProblem, NattenBackend};

/// Which trait method a recorded operation runs.
#[derive(Debug, Clone)]
enum Kind {
    NaForward(NaProblem),
    NaBackward(NaProblem),
    FmhaForward(FmhaProblem),
    FmhaBackward(FmhaProblem),
}

/// The recorded operation: inputs are Q, K, V, [extra K, extra V], [out, LSE, dO].
#[derive(Debug)]
struct NattenOp<B> {
    desc: CustomOpIr,
    kind: Kind,
    has_extra: bool,
    _backend: core::marker::PhantomData<fn() -> B>,
}

impl<B: FusionBackend + NattenBackend> Operation<B::FusionRuntime> for NattenOp<B> {
    fn execute(
        &self,
        handles: &mut HandleContainer<<B::FusionRuntime as FusionRuntime>::FusionHandle>,
    ) {
        super::trace_mark("fusion executes");
        let mut inputs = self
            .desc
            .inputs
            .iter()
            .map(|t| handles.get_float_tensor::<B>(t));
        let mut next = || inputs.next().expect("input count fixed at registration");
        let (q, k, v) = (next(), next(), next());
        let extra = self.has_extra.then(|| ExtraKv {
            k: next(),
            v: next(),
        });
        let outputs: Vec<FloatTensor<B>> = match &self.kind {
            Kind::NaForward(p) => forward_outputs(B::na_forward(q, k, v, extra, p)),
            Kind::FmhaForward(p) => forward_outputs(B::fmha_forward(q, k, v, p)),
            Kind::NaBackward(p) => {
                let (out, lse, d_out) = (next(), next(), next());
                gradient_outputs(B::na_backward(q, k, v, extra, out, lse, d_out, p))
            }
            Kind::FmhaBackward(p) => {
                let (out, lse, d_out) = (next(), next(), next());
                gradient_outputs(B::fmha_backward(q, k, v, out, lse, d_out, p))
            }
        };
        for (ir, tensor) in self.desc.outputs.iter().zip(outputs) {
            handles.register_float_tensor::<B>(&ir.id, tensor);
        }
        #[cfg(test)]
        EXECUTED.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        #[cfg(feature = "cuda-native")]
        super::native::trace_point("fusion custom op executed");
    }
}

/// Calls executed so far, in this process (the unit test of eager execution counts them).
#[cfg(test)]
static EXECUTED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

fn forward_outputs<B: NattenBackend>(r: AttentionOutput<B>) -> Vec<FloatTensor<B>> {
    vec![r.out, r.lse]
}

fn gradient_outputs<B: NattenBackend>(g: AttentionGradients<B>) -> Vec<FloatTensor<B>> {
    let mut out = vec![g.dq, g.dk, g.dv];
    out.extend(g.extra.into_iter().flat_map(|e| [e.k, e.v]));
    out
}

/// Registers the operation and, unless `BURN_NATTEN_FUSION_EAGER=0`, executes it at once (module
/// docs); returns its outputs, shaped and typed as `outputs` says.
fn register<B: FusionBackend + NattenBackend>(
    inputs: Vec<FusionTensor<B::FusionRuntime>>,
    outputs: Vec<(Shape, DType)>,
    kind: Kind,
    has_extra: bool,
) -> Vec<FusionTensor<B::FusionRuntime>> {
    super::trace_mark("fusion register");
    let client = inputs[0].client.clone();
    let streams = OperationStreams::with_inputs(&inputs);
    let outputs: Vec<TensorIr> = outputs
        .into_iter()
        .map(|(shape, dtype)| TensorIr::uninit(client.create_empty_handle(), shape, dtype))
        .collect();
    let inputs: Vec<TensorIr> = inputs.into_iter().map(FusionTensor::into_ir).collect();
    let desc = CustomOpIr::new("burn_natten", &inputs, &outputs);
    let op = NattenOp::<B> {
        desc: desc.clone(),
        kind,
        has_extra,
        _backend: core::marker::PhantomData,
    };
    let outputs = client.register(streams, OperationIr::Custom(desc), op);
    super::trace_mark("registered");
    if launch_eagerly() {
        // Drain this thread's fusion stream now (no device sync): the call's kernels start
        // while the caller goes on building the graph, instead of when a later operation or a
        // sync makes burn-fusion execute its queue.
        client.sync(|| ());
    }
    outputs
}

/// Whether a registered call is executed at once: unless `BURN_NATTEN_FUSION_EAGER=0` (module
/// docs).
fn launch_eagerly() -> bool {
    static EAGER: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *EAGER.get_or_init(|| std::env::var_os("BURN_NATTEN_FUSION_EAGER").is_none_or(|v| v != "0"))
}

/// Shapes of a forward's outputs: out shaped as Q with V's head dim (Q's dtype) and LSE as Q
/// without its head dim (f32).
fn forward_specs<R: FusionRuntime>(
    q: &FusionTensor<R>,
    v: &FusionTensor<R>,
) -> Vec<(Shape, DType)> {
    let q_dims = q.shape.as_slice();
    let (tokens_and_heads, head_dim_v) =
        (&q_dims[..q_dims.len() - 1], v.shape[v.shape.num_dims() - 1]);
    let mut out = tokens_and_heads.to_vec();
    out.push(head_dim_v);
    vec![
        (Shape::from(out), q.dtype),
        (Shape::from(tokens_and_heads.to_vec()), DType::F32),
    ]
}

fn forward_result<R: FusionRuntime, B>(mut outs: Vec<FusionTensor<R>>) -> AttentionOutput<B>
where
    B: burn::tensor::backend::Backend<FloatTensorPrimitive = FusionTensor<R>>,
{
    let lse = outs.pop().expect("two outputs");
    AttentionOutput {
        out: outs.pop().expect("two outputs"),
        lse,
    }
}

fn gradient_result<R: FusionRuntime, B>(outs: Vec<FusionTensor<R>>) -> AttentionGradients<B>
where
    B: burn::tensor::backend::Backend<FloatTensorPrimitive = FusionTensor<R>>,
{
    let mut outs = outs.into_iter();
    let (dq, dk, dv) = (
        outs.next().unwrap(),
        outs.next().unwrap(),
        outs.next().unwrap(),
    );
    let extra = outs.next().map(|k| ExtraKv {
        k,
        v: outs.next().expect("extra V gradient"),
    });
    AttentionGradients { dq, dk, dv, extra }
}

fn spec<R: FusionRuntime>(t: &FusionTensor<R>) -> (Shape, DType) {
    (t.shape.clone(), t.dtype)
}

impl<B: FusionBackend + NattenBackend> NattenBackend for Fusion<B> {
    fn tile_configs(
        device: &burn::tensor::Device<Self>,
        rank: usize,
        head_dim: usize,
        head_dim_v: usize,
        dtype: burn::tensor::DType,
    ) -> Vec<crate::backend::TileConfig> {
        B::tile_configs(device, rank, head_dim, head_dim_v, dtype)
    }

    fn backward_tile_configs(
        device: &burn::tensor::Device<Self>,
        rank: usize,
        head_dim: usize,
        head_dim_v: usize,
        dtype: burn::tensor::DType,
    ) -> Vec<crate::backend::TileConfig> {
        B::backward_tile_configs(device, rank, head_dim, head_dim_v, dtype)
    }

    fn cuda_fna_unsupported(
        device: &burn::tensor::Device<Self>,
        head_dim: usize,
        head_dim_v: usize,
        dtype: burn::tensor::DType,
    ) -> Option<String> {
        B::cuda_fna_unsupported(device, head_dim, head_dim_v, dtype)
    }

    fn check_backend(
        choice: crate::NaBackend,
        head_dim: usize,
        head_dim_v: usize,
    ) -> Result<(), natten_core::NattenError> {
        B::check_backend(choice, head_dim, head_dim_v)
    }

    fn na_forward(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        extra: Option<ExtraKv<Self>>,
        problem: &NaProblem,
    ) -> AttentionOutput<Self> {
        let specs = forward_specs(&q, &v);
        let has_extra = extra.is_some();
        let mut inputs = vec![q, k, v];
        inputs.extend(extra.into_iter().flat_map(|e| [e.k, e.v]));
        forward_result(register::<B>(
            inputs,
            specs,
            Kind::NaForward(problem.clone()),
            has_extra,
        ))
    }

    fn na_backward(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        extra: Option<ExtraKv<Self>>,
        out: FloatTensor<Self>,
        lse: FloatTensor<Self>,
        d_out: FloatTensor<Self>,
        problem: &NaProblem,
    ) -> AttentionGradients<Self> {
        let has_extra = extra.is_some();
        let mut inputs = vec![q, k, v];
        inputs.extend(extra.into_iter().flat_map(|e| [e.k, e.v]));
        let specs = inputs.iter().map(spec).collect();
        inputs.extend([out, lse, d_out]);
        gradient_result(register::<B>(
            inputs,
            specs,
            Kind::NaBackward(problem.clone()),
            has_extra,
        ))
    }

    fn fmha_forward(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        problem: &FmhaProblem,
    ) -> AttentionOutput<Self> {
        let specs = forward_specs(&q, &v);
        forward_result(register::<B>(
            vec![q, k, v],
            specs,
            Kind::FmhaForward(problem.clone()),
            false,
        ))
    }

    fn fmha_backward(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        out: FloatTensor<Self>,
        lse: FloatTensor<Self>,
        d_out: FloatTensor<Self>,
        problem: &FmhaProblem,
    ) -> AttentionGradients<Self> {
        let specs = [&q, &k, &v].into_iter().map(spec).collect();
        let inputs = vec![q, k, v, out, lse, d_out];
        gradient_result(register::<B>(
            inputs,
            specs,
            Kind::FmhaBackward(problem.clone()),
            false,
        ))
    }
}

#[cfg(all(test, feature = "wgpu"))]
mod tests {
    use super::{EXECUTED, launch_eagerly};
    use crate::{NaOptions, na1d};
    use burn::backend::Wgpu;
    use burn::tensor::{Distribution, Tensor};
    use std::sync::atomic::Ordering;

    /// A call on a fusion backend runs when it is registered: before any sync or read of its
    /// output (on lavapipe in CI; skipped with a printed reason without a wgpu adapter, unless
    /// `BURN_NATTEN_REQUIRE_WGPU=1`).
    #[test]
    fn a_call_runs_when_registered() {
        if !launch_eagerly() {
            eprintln!("SKIPPED: BURN_NATTEN_FUSION_EAGER=0 leaves the calls to burn-fusion");
            return;
        }
        let device = Default::default();
        let probe = std::panic::catch_unwind(|| {
            Tensor::<Wgpu, 1>::from_floats([1.0, 2.0], &device)
                .sum()
                .into_scalar()
        });
        if probe.is_err() {
            assert!(
                std::env::var("BURN_NATTEN_REQUIRE_WGPU").as_deref() != Ok("1"),
                "BURN_NATTEN_REQUIRE_WGPU=1 but no usable wgpu adapter"
            );
            eprintln!("SKIPPED: no wgpu adapter (install mesa-vulkan-drivers for lavapipe)");
            return;
        }
        let input = || Tensor::<Wgpu, 4>::random([1, 16, 2, 8], Distribution::Default, &device);
        let (q, k, v) = (input(), input(), input());
        let before = EXECUTED.load(Ordering::SeqCst);
        let out = na1d(q, k, v, &NaOptions::new([5])).expect("a valid call");
        assert!(
            EXECUTED.load(Ordering::SeqCst) > before,
            "the call was still queued in the fusion stream when na1d returned"
        );
        assert_eq!(out.dims(), [1, 16, 2, 8]);
    }
}
