//! The backends that run the trait's reference bodies as they are.

#[cfg(feature = "cubecl-backend")]
use burn::tensor::ops::FloatTensor;

use super::NattenBackend;
#[cfg(feature = "cubecl-backend")]
use super::tokens::{backward_on_tokens, forward_on_tokens};
#[cfg(feature = "cubecl-backend")]
use super::{
    AttentionGradients, AttentionOutput, ExtraKv, FmhaProblem, NaProblem, cube, reference,
};

#[cfg(feature = "ndarray")]
mod ndarray {
    use burn::backend::ndarray::{
        FloatNdArrayElement, IntNdArrayElement, NdArray, NdArrayTensor, QuantElement, SharedArray,
    };

    impl<E: FloatNdArrayElement, I: IntNdArrayElement, Q: QuantElement> super::NattenBackend
        for NdArray<E, I, Q>
    where
        NdArrayTensor: From<SharedArray<E>>,
        NdArrayTensor: From<SharedArray<I>>,
    {
    }
}

/// Every CubeCL runtime (wgpu, CUDA, ROCm), unfused: the fused CubeCL kernels (forward), the
/// reference where they do not apply.
#[cfg(feature = "cubecl-backend")]
impl<R, F, I, BT> NattenBackend for burn_cubecl::CubeBackend<R, F, I, BT>
where
    R: burn_cubecl::CubeRuntime,
    R::Server: burn_cubecl::cubecl::server::ComputeServer,
    R::Device: burn::tensor::backend::DeviceOps,
    F: burn_cubecl::FloatElement,
    I: burn_cubecl::IntElement,
    BT: burn_cubecl::BoolElement,
{
    fn tile_configs(
        device: &burn::tensor::Device<Self>,
        rank: usize,
        head_dim: usize,
        head_dim_v: usize,
        dtype: burn::tensor::DType,
    ) -> Vec<crate::backend::TileConfig> {
        #[cfg(feature = "cuda-native")]
        if let Some(configs) =
            super::native::tile_configs(device, rank, head_dim, head_dim_v, dtype)
        {
            return configs;
        }
        if !cube::supports(head_dim, head_dim_v) {
            return Vec::new();
        }
        let client = R::client(device);
        cube::tile_configs(&client, rank, head_dim, head_dim_v, dtype)
    }

    fn backward_tile_configs(
        device: &burn::tensor::Device<Self>,
        rank: usize,
        head_dim: usize,
        head_dim_v: usize,
        dtype: burn::tensor::DType,
    ) -> Vec<crate::backend::TileConfig> {
        #[cfg(feature = "cuda-native")]
        if let Some(configs) =
            super::native::backward_tile_configs(device, rank, head_dim, head_dim_v, dtype)
        {
            return configs;
        }
        let _ = (device, rank, head_dim, head_dim_v, dtype);
        Vec::new()
    }

    fn cuda_fna_unsupported(
        device: &burn::tensor::Device<Self>,
        head_dim: usize,
        head_dim_v: usize,
        dtype: burn::tensor::DType,
    ) -> Option<String> {
        #[cfg(feature = "cuda-native")]
        return super::native::unsupported_reason(device, head_dim, head_dim_v, dtype);
        #[cfg(not(feature = "cuda-native"))]
        {
            let _ = (device, head_dim, head_dim_v, dtype);
            Some("this build of burn-natten has no `cuda-native` feature".into())
        }
    }

    fn check_backend(
        choice: crate::NaBackend,
        head_dim: usize,
        head_dim_v: usize,
    ) -> Result<(), natten_core::NattenError> {
        match choice {
            crate::NaBackend::CubeFna if !cube::supports(head_dim, head_dim_v) => {
                Err(natten_core::NattenError::Unsupported {
                    backend: choice.name(),
                    reason: format!(
                        "head dims {head_dim} (Q/K) and {head_dim_v} (V) must both be at most {}",
                        super::MAX_FUSED_HEAD_DIM
                    ),
                })
            }
            _ => Ok(()),
        }
    }

    fn na_forward(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        extra: Option<ExtraKv<Self>>,
        problem: &NaProblem,
    ) -> AttentionOutput<Self> {
        forward_on_tokens::<Self>([q, k, v], extra, |[q, k, v], extra| {
            super::trace_mark("backend");
            #[cfg(feature = "cuda-native")]
            if let Some(native) = super::native::try_na_forward(
                &q,
                &k,
                &v,
                extra.as_ref().map(|e| (&e.k, &e.v)),
                problem,
            ) {
                let (out, lse) = native.neighborhood;
                return match native.extra {
                    None => AttentionOutput { out, lse },
                    Some(extra) => merge_two::<Self>((out, lse), extra),
                };
            }
            if !cube::runs(problem.backend, &q, &v) {
                return reference::na_forward::<Self>(q, k, v, extra, problem);
            }
            let dense = extra.map(|e| cube::Dense {
                k: e.k,
                v: e.v,
                causal: false,
            });
            let geometry = cube::Geometry::of(problem);
            let (out, lse) = cube::forward(
                q,
                k,
                v,
                dense,
                Some(geometry),
                problem.tiles.as_ref(),
                problem.scale,
            );
            AttentionOutput { out, lse }
        })
    }

    fn fmha_forward(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        problem: &FmhaProblem,
    ) -> AttentionOutput<Self> {
        #[cfg(feature = "cuda-native")]
        if let Some((out, lse)) = super::native::try_fmha_forward(&q, &k, &v, problem) {
            return AttentionOutput { out, lse };
        }
        if !cube::runs(problem.backend, &q, &v) {
            return reference::fmha_forward::<Self>(q, k, v, problem);
        }
        let dense = cube::Dense {
            k: k.clone(),
            v: v.clone(),
            causal: problem.causal,
        };
        let (out, lse) = cube::forward(q, k, v, Some(dense), None, None, problem.scale);
        AttentionOutput { out, lse }
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
        let inputs = [q, k, v, out, lse, d_out];
        backward_on_tokens::<Self>(inputs, extra, |[q, k, v, out, lse, d_out], extra| {
            super::trace_mark("backend");
            #[cfg(feature = "cuda-native")]
            if let Some(native) = super::native::try_na_backward(
                [&q, &k, &v, &out, &lse, &d_out],
                extra.as_ref().map(|e| (&e.k, &e.v)),
                problem,
            ) {
                let [dq, dk, dv] = native.neighborhood;
                return match native.extra {
                    None => AttentionGradients {
                        dq,
                        dk,
                        dv,
                        extra: None,
                    },
                    Some([dq_extra, dk_extra, dv_extra]) => AttentionGradients {
                        dq: <Self as burn::tensor::ops::FloatTensorOps<Self>>::float_add(
                            dq, dq_extra,
                        ),
                        dk,
                        dv,
                        extra: Some(ExtraKv {
                            k: dk_extra,
                            v: dv_extra,
                        }),
                    },
                };
            }
            if !cube::runs(problem.backend, &q, &v) {
                return reference::na_backward::<Self>(q, k, v, extra, out, lse, d_out, problem);
            }
            let dense = extra.map(|e| cube::Dense {
                k: e.k,
                v: e.v,
                causal: false,
            });
            let geometry = Some(cube::Geometry::of(problem));
            let g = cube::backward(q, k, v, dense, out, lse, d_out, geometry, problem.scale);
            let (dk, dv) = g.neighborhood.expect("NA has a neighbourhood");
            AttentionGradients {
                dq: g.dq,
                dk,
                dv,
                extra: g.dense.map(|(k, v)| ExtraKv { k, v }),
            }
        })
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
        #[cfg(feature = "cuda-native")]
        if let Some([dq, dk, dv]) =
            super::native::try_fmha_backward([&q, &k, &v, &out, &lse, &d_out], problem)
        {
            return AttentionGradients {
                dq,
                dk,
                dv,
                extra: None,
            };
        }
        if !cube::runs(problem.backend, &q, &v) {
            return reference::fmha_backward::<Self>(q, k, v, out, lse, d_out, problem);
        }
        let dense = cube::Dense {
            k: k.clone(),
            v: v.clone(),
            causal: problem.causal,
        };
        let g = cube::backward(q, k, v, Some(dense), out, lse, d_out, None, problem.scale);
        let (dk, dv) = g.dense.expect("FMHA keys are dense");
        AttentionGradients {
            dq: g.dq,
            dk,
            dv,
            extra: None,
        }
    }
}

/// One softmax over two key sets from the (out, lse) of each ([`crate::merge_attentions`]).
#[cfg(feature = "cuda-native")]
fn merge_two<B: burn::tensor::backend::Backend>(
    (out_a, lse_a): (FloatTensor<B>, FloatTensor<B>),
    (out_b, lse_b): (FloatTensor<B>, FloatTensor<B>),
) -> AttentionOutput<B> {
    use burn::tensor::{Tensor, TensorPrimitive};
    let out = |t| Tensor::<B, 4>::from_primitive(TensorPrimitive::Float(t));
    let lse = |t| Tensor::<B, 3>::from_primitive(TensorPrimitive::Float(t));
    let (merged_out, merged_lse) =
        crate::merge_attentions(vec![out(out_a), out(out_b)], vec![lse(lse_a), lse(lse_b)])
            .expect("both parts of one call share shapes and dtype");
    AttentionOutput {
        out: merged_out.into_primitive().tensor(),
        lse: merged_lse.into_primitive().tensor(),
    }
}

/// Compile-time proof that Burn's backend aliases (fused and unfused, with and without autodiff)
/// implement the trait under every enabled feature.
#[allow(dead_code)]
fn backend_aliases_implement_the_trait() {
    fn implements<B: NattenBackend>() {}
    #[cfg(feature = "ndarray")]
    implements::<burn::backend::NdArray>();
    #[cfg(feature = "wgpu")]
    implements::<burn::backend::Wgpu>();
    #[cfg(feature = "cuda")]
    implements::<burn::backend::Cuda>();
    #[cfg(feature = "rocm")]
    implements::<burn::backend::Rocm>();
    #[cfg(all(feature = "autodiff", feature = "wgpu"))]
    implements::<burn::backend::Autodiff<burn::backend::Wgpu>>();
    #[cfg(all(feature = "autodiff", feature = "cuda"))]
    implements::<burn::backend::Autodiff<burn::backend::Cuda>>();
    #[cfg(all(feature = "autodiff", feature = "rocm"))]
    implements::<burn::backend::Autodiff<burn::backend::Rocm>>();
}
