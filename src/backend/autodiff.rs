//! `Autodiff<B>`: one graph node per call, whose backward runs `B`'s fused or reference
//! backward (never autodiff through the reference's tensor ops).
//!
//! The node tracks the attention output; the LSE is returned as an untracked tensor, so its
//! gradient is ignored (as in NATTEN). Calling the backward methods on `Autodiff<B>` directly
//! (double backward) is not differentiable: their results are untracked.

use burn::backend::Autodiff;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::tensor::backend::Backend;
use burn::tensor::ops::FloatTensor;

use super::{AttentionGradients, AttentionOutput, ExtraKv, FmhaProblem, NaProblem, NattenBackend};

/// Which problem a recorded node belongs to.
#[derive(Debug, Clone)]
enum Problem {
    Na(NaProblem),
    Fmha(FmhaProblem),
}

/// What the backward needs, saved at forward time (inner-backend primitives).
#[derive(Debug, Clone)]
struct SavedForward<B: Backend> {
    q: FloatTensor<B>,
    k: FloatTensor<B>,
    v: FloatTensor<B>,
    extra: Option<ExtraKv<B>>,
    out: FloatTensor<B>,
    lse: FloatTensor<B>,
    problem: Problem,
}

impl<B: NattenBackend> SavedForward<B> {
    fn backward(self, d_out: FloatTensor<B>) -> AttentionGradients<B> {
        super::trace_mark("autodiff backward");
        let Self {
            q,
            k,
            v,
            extra,
            out,
            lse,
            problem,
        } = self;
        match problem {
            Problem::Na(p) => B::na_backward(q, k, v, extra, out, lse, d_out, &p),
            Problem::Fmha(p) => B::fmha_backward(q, k, v, out, lse, d_out, &p),
        }
    }
}

/// The backward step of every attention node: 3 parents (Q, K, V) or 5 (with extra K, V).
#[derive(Debug)]
struct AttentionBackward;

/// Registers `grad` for a parent node that is tracked (`Some`).
macro_rules! register {
    ($grads:expr, $node:expr, $grad:expr) => {
        if let Some(node) = $node {
            $grads.register::<B>(node.id, $grad);
        }
    };
}

impl<B: NattenBackend> Backward<B, 3> for AttentionBackward {
    type State = SavedForward<B>;

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
        let d_out = grads.consume::<B>(&ops.node);
        let g = ops.state.backward(d_out);
        let [q, k, v] = ops.parents;
        register!(grads, q, g.dq);
        register!(grads, k, g.dk);
        register!(grads, v, g.dv);
    }
}

impl<B: NattenBackend> Backward<B, 5> for AttentionBackward {
    type State = SavedForward<B>;

    fn backward(self, ops: Ops<Self::State, 5>, grads: &mut Gradients, _: &mut Checkpointer) {
        let d_out = grads.consume::<B>(&ops.node);
        let g = ops.state.backward(d_out);
        let [q, k, v, ek, ev] = ops.parents;
        register!(grads, q, g.dq);
        register!(grads, k, g.dk);
        register!(grads, v, g.dv);
        if let Some(extra) = g.extra {
            register!(grads, ek, extra.k);
            register!(grads, ev, extra.v);
        }
    }
}

/// Runs `forward` on the inner primitives and records the node when any input is tracked.
fn record<B, C, const N: usize>(
    inputs: [&FloatTensor<Autodiff<B, C>>; N],
    problem: Problem,
    forward: impl FnOnce() -> AttentionOutput<B>,
    saved: impl FnOnce(AttentionOutput<B>, Problem) -> SavedForward<B>,
) -> AttentionOutput<Autodiff<B, C>>
where
    B: NattenBackend,
    C: CheckpointStrategy,
    AttentionBackward: Backward<B, N, State = SavedForward<B>>,
{
    let nodes = inputs.map(|t| t.node.clone());
    let result = forward();
    let lse = <FloatTensor<Autodiff<B, C>>>::new(result.lse.clone());
    let out = match AttentionBackward
        .prepare::<C>(nodes)
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(prep) => {
            let out = result.out.clone();
            prep.finish(saved(result, problem), out)
        }
        OpsKind::UnTracked(prep) => prep.finish(result.out),
    };
    AttentionOutput { out, lse }
}

fn inner_extra<B: Backend>(
    extra: &Option<ExtraKv<Autodiff<B, impl CheckpointStrategy>>>,
) -> Option<ExtraKv<B>> {
    extra.as_ref().map(|e| ExtraKv {
        k: e.k.primitive.clone(),
        v: e.v.primitive.clone(),
    })
}

fn untracked<B: Backend, C: CheckpointStrategy>(
    g: AttentionGradients<B>,
) -> AttentionGradients<Autodiff<B, C>> {
    type AutodiffTensor<B, C> = FloatTensor<Autodiff<B, C>>;
    AttentionGradients {
        dq: AutodiffTensor::<B, C>::new(g.dq),
        dk: AutodiffTensor::<B, C>::new(g.dk),
        dv: AutodiffTensor::<B, C>::new(g.dv),
        extra: g.extra.map(|e| ExtraKv {
            k: AutodiffTensor::<B, C>::new(e.k),
            v: AutodiffTensor::<B, C>::new(e.v),
        }),
    }
}

impl<B: NattenBackend, C: CheckpointStrategy> NattenBackend for Autodiff<B, C> {
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
        let inner = inner_extra(&extra);
        let (qp, kp, vp) = (
            q.primitive.clone(),
            k.primitive.clone(),
            v.primitive.clone(),
        );
        let forward = || B::na_forward(qp.clone(), kp.clone(), vp.clone(), inner.clone(), problem);
        let saved = |r: AttentionOutput<B>, problem| SavedForward {
            q: qp.clone(),
            k: kp.clone(),
            v: vp.clone(),
            extra: inner.clone(),
            out: r.out,
            lse: r.lse,
            problem,
        };
        let problem_ = Problem::Na(problem.clone());
        match &extra {
            None => record::<B, C, 3>([&q, &k, &v], problem_, forward, saved),
            Some(e) => record::<B, C, 5>([&q, &k, &v, &e.k, &e.v], problem_, forward, saved),
        }
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
        let inner = inner_extra(&extra);
        untracked(B::na_backward(
            q.primitive,
            k.primitive,
            v.primitive,
            inner,
            out.primitive,
            lse.primitive,
            d_out.primitive,
            problem,
        ))
    }

    fn fmha_forward(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        problem: &FmhaProblem,
    ) -> AttentionOutput<Self> {
        let (qp, kp, vp) = (
            q.primitive.clone(),
            k.primitive.clone(),
            v.primitive.clone(),
        );
        let forward = || B::fmha_forward(qp.clone(), kp.clone(), vp.clone(), problem);
        let saved = |r: AttentionOutput<B>, problem| SavedForward {
            q: qp.clone(),
            k: kp.clone(),
            v: vp.clone(),
            extra: None,
            out: r.out,
            lse: r.lse,
            problem,
        };
        record::<B, C, 3>([&q, &k, &v], Problem::Fmha(problem.clone()), forward, saved)
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
        untracked(B::fmha_backward(
            q.primitive,
            k.primitive,
            v.primitive,
            out.primitive,
            lse.primitive,
            d_out.primitive,
            problem,
        ))
    }
}
