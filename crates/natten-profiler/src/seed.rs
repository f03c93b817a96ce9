//! A backward seeded with a ready upstream gradient, as a peer's timing gives its backward
//! (`out.backward(d_out)` in PyTorch): Burn seeds a non-scalar root with ones, a fill of the
//! whole output on the GPU before the backward (~21 us for the 2-D anchor's 64 MB), which a
//! peer's backward does not pay.

use burn_natten::burn::backend::Autodiff;
use burn_natten::burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn_natten::burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
use burn_natten::burn::backend::autodiff::grads::Gradients;
use burn_natten::burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn_natten::burn::tensor::backend::Backend;
use burn_natten::burn::tensor::ops::FloatTensor;
use burn_natten::burn::tensor::{Shape, Tensor, TensorMetadata, TensorPrimitive};

/// The backward step of [`seeded`]'s root: it gives its parent (the output) the ready
/// gradient it holds.
#[derive(Debug)]
struct Seed;

impl<B: Backend> Backward<B, 1> for Seed {
    type State = FloatTensor<B>;

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        drop(grads.consume::<B>(&ops.node));
        if let [Some(out)] = ops.parents {
            grads.register::<B>(out.id, ops.state);
        }
    }
}

/// A one-element root whose backward gives `out` the gradient `d_out` (shaped like `out`):
/// `seeded(out, d_out).backward()` runs `out`'s backward from `d_out`, with a one-element
/// fill where Burn would fill `out`'s shape with ones.
pub fn seeded<B: Backend, const D: usize>(
    out: Tensor<Autodiff<B>, D>,
    d_out: &Tensor<B, D>,
) -> Tensor<Autodiff<B>, 1> {
    let out = out.into_primitive().tensor();
    let root = B::float_zeros(
        Shape::new([1]),
        &B::float_device(&out.primitive),
        out.primitive.dtype().into(),
    );
    let root = match Seed
        .prepare::<NoCheckpointing>([out.node.clone()])
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(prep) => prep.finish(d_out.clone().into_primitive().tensor(), root),
        OpsKind::UnTracked(prep) => prep.finish(root),
    };
    Tensor::from_primitive(TensorPrimitive::Float(root))
}

#[cfg(test)]
mod tests {
    use super::seeded;
    use burn_natten::burn::backend::{Autodiff, NdArray};
    use burn_natten::burn::tensor::{Distribution, Tensor, Tolerance};

    /// The seeded backward gives the gradients of `sum(out * d_out)`.
    #[test]
    fn seeds_the_output_gradient() {
        let device = Default::default();
        let x = Tensor::<NdArray, 3>::random([2, 3, 4], Distribution::Default, &device);
        let d_out = Tensor::<NdArray, 3>::random([2, 3, 4], Distribution::Default, &device);
        let tracked = Tensor::<Autodiff<NdArray>, 3>::from_inner(x.clone()).require_grad();
        let grads = seeded(tracked.clone().exp(), &d_out).backward();
        let grad = tracked.grad(&grads).expect("x is tracked");
        grad.into_data()
            .assert_approx_eq::<f32>(&(d_out * x.exp()).into_data(), Tolerance::default());
    }
}
