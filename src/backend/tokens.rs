//! The two layouts of an NA call's tensors: the grid layout that [`super::NattenBackend`]'s NA
//! methods take and return (`[batch, *spatial, heads, dim]`, the user's), and the flattened
//! tokens (`[batch, tokens, heads, dim]`, spatial axes row-major) that the kernels and the
//! reference compute on. A backend that computes (not one that wraps another, as `Fusion` and
//! `Autodiff` do) goes from one to the other with [`forward_on_tokens`] and
//! [`backward_on_tokens`]: reshapes of the inner primitives, free on contiguous tensors.

use burn::tensor::backend::Backend;
use burn::tensor::ops::FloatTensor;
use burn::tensor::{Shape, TensorMetadata};

use super::{AttentionGradients, AttentionOutput, ExtraKv};

/// `t` `[batch, *spatial, ..last]` (with `last` trailing axes) as `[batch, tokens, ..last]`.
fn flattened<B: Backend>(t: FloatTensor<B>, last: usize) -> FloatTensor<B> {
    let dims = t.shape().as_slice().to_vec();
    if dims.len() == 2 + last {
        return t;
    }
    let split = dims.len() - last;
    let mut flat = vec![dims[0], dims[1..split].iter().product()];
    flat.extend(&dims[split..]);
    B::float_reshape(t, Shape::from(flat))
}

/// `t` `[batch, tokens, ..last]` in the grid layout of `grid` (`[batch, *spatial, ..]`, the
/// shape of a tensor of the call), keeping `t`'s `last` trailing axes.
fn gridded<B: Backend>(t: FloatTensor<B>, grid: &Shape, last: usize) -> FloatTensor<B> {
    let dims = t.shape().as_slice().to_vec();
    let mut shape = grid.as_slice()[..grid.num_dims() - 2].to_vec();
    shape.extend(&dims[dims.len() - last..]);
    if shape == dims {
        return t;
    }
    B::float_reshape(t, Shape::from(shape))
}

/// Runs `forward` (a forward on flattened tokens) on Q, K, V of the grid layout; returns out
/// `[batch, *spatial, heads, head_dim_v]` and LSE `[batch, *spatial, heads]`.
pub fn forward_on_tokens<B: Backend>(
    [q, k, v]: [FloatTensor<B>; 3],
    extra: Option<ExtraKv<B>>,
    forward: impl FnOnce([FloatTensor<B>; 3], Option<ExtraKv<B>>) -> AttentionOutput<B>,
) -> AttentionOutput<B> {
    let grid = q.shape();
    let r = forward([q, k, v].map(|t| flattened::<B>(t, 2)), extra);
    AttentionOutput {
        out: gridded::<B>(r.out, &grid, 2),
        lse: gridded::<B>(r.lse, &grid, 1),
    }
}

/// Runs `backward` (a backward on flattened tokens) on Q, K, V, out, LSE and dO of the grid
/// layout; returns dQ, dK, dV shaped as Q, K, V (the extra tokens' gradients as they come).
pub fn backward_on_tokens<B: Backend>(
    [q, k, v, out, lse, d_out]: [FloatTensor<B>; 6],
    extra: Option<ExtraKv<B>>,
    backward: impl FnOnce([FloatTensor<B>; 6], Option<ExtraKv<B>>) -> AttentionGradients<B>,
) -> AttentionGradients<B> {
    let [q_shape, k_shape, v_shape] = [&q, &k, &v].map(|t| t.shape());
    let flat = [
        flattened::<B>(q, 2),
        flattened::<B>(k, 2),
        flattened::<B>(v, 2),
        flattened::<B>(out, 2),
        flattened::<B>(lse, 1),
        flattened::<B>(d_out, 2),
    ];
    let g = backward(flat, extra);
    AttentionGradients {
        dq: gridded::<B>(g.dq, &q_shape, 2),
        dk: gridded::<B>(g.dk, &k_shape, 2),
        dv: gridded::<B>(g.dv, &v_shape, 2),
        extra: g.extra,
    }
}

#[cfg(all(test, feature = "ndarray"))]
mod tests {
    use super::*;
    use burn::backend::NdArray;
    use burn::tensor::ops::FloatTensorOps;
    use burn::tensor::{Int, Tensor, TensorPrimitive};

    type B = NdArray;

    fn primitive<const D: usize>(t: Tensor<B, D>) -> FloatTensor<B> {
        t.into_primitive().tensor()
    }

    fn dims(t: &FloatTensor<B>) -> Vec<usize> {
        t.shape().as_slice().to_vec()
    }

    /// The computation sees flattened tokens; the outputs and gradients come back in the grid
    /// layout, values unchanged.
    #[test]
    fn layouts_round_trip() {
        let device = Default::default();
        let q = Tensor::<B, 1, Int>::arange(0..2 * 3 * 4 * 2 * 5, &device)
            .float()
            .reshape([2, 3, 4, 2, 5]);
        let lse = q.clone().sum_dim(4).squeeze_dim::<4>(4);
        let r = forward_on_tokens::<B>(
            [0; 3].map(|_| primitive(q.clone())),
            None,
            |[q, _, _], _| {
                assert_eq!(dims(&q), [2, 12, 2, 5]);
                let lse = B::float_sum_dim(q.clone(), 3);
                AttentionOutput {
                    out: q,
                    lse: B::float_reshape(lse, Shape::new([2, 12, 2])),
                }
            },
        );
        assert_eq!(dims(&r.out), [2, 3, 4, 2, 5]);
        Tensor::<B, 5>::from_primitive(TensorPrimitive::Float(r.out))
            .into_data()
            .assert_eq(&q.clone().into_data(), true);
        assert_eq!(dims(&r.lse), [2, 3, 4, 2]);
        Tensor::<B, 4>::from_primitive(TensorPrimitive::Float(r.lse))
            .into_data()
            .assert_eq(&lse.clone().into_data(), true);

        let inputs = [
            primitive(q.clone()),
            primitive(q.clone()),
            primitive(q.clone()),
            primitive(q.clone()),
            primitive(lse),
            primitive(q),
        ];
        let g = backward_on_tokens::<B>(inputs, None, |[q, k, v, out, lse, d_out], _| {
            for t in [&q, &k, &v, &out, &d_out] {
                assert_eq!(dims(t), [2, 12, 2, 5]);
            }
            assert_eq!(dims(&lse), [2, 12, 2]);
            AttentionGradients {
                dq: q,
                dk: k,
                dv: v,
                extra: None,
            }
        });
        for t in [g.dq, g.dk, g.dv] {
            assert_eq!(dims(&t), [2, 3, 4, 2, 5]);
        }
    }
}
