//! The backends that run the trait's reference bodies as they are.

use super::NattenBackend;

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

/// Every CubeCL runtime (wgpu, CUDA, ROCm), unfused.
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
