//! Backends under test, tensor helpers, and error measures shared by the test modules.

use burn::tensor::backend::Backend;
use burn::tensor::{DType, Distribution, Tensor, TensorData};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

/// The CPU path: NdArray, f32.
pub type Cpu = burn::backend::NdArray<f32>;
/// The default fused wgpu backend (WGSL; lavapipe in CI).
#[cfg(not(feature = "test-cuda"))]
pub type Gpu = burn::backend::Wgpu;
/// The unfused CubeCL wgpu backend.
#[cfg(not(feature = "test-cuda"))]
pub type GpuUnfused =
    burn::backend::wgpu::CubeBackend<burn::backend::wgpu::WgpuRuntime, f32, i32, u32>;
/// With `test-cuda`, the "wgpu" tests run on the default fused CUDA backend.
#[cfg(feature = "test-cuda")]
pub type Gpu = burn::backend::Cuda;
/// With `test-cuda`, the unfused CubeCL CUDA backend.
#[cfg(feature = "test-cuda")]
pub type GpuUnfused = burn_cubecl::CubeBackend<cubecl::cuda::CudaRuntime, f32, i32, u8>;

/// Whether a wgpu adapter can run kernels here. Probed once; a missing adapter skips the wgpu
/// tests with a printed reason, unless `BURN_NATTEN_REQUIRE_WGPU=1` (set by CI), where it fails.
pub fn wgpu_available() -> bool {
    static PROBE: std::sync::OnceLock<Result<(), String>> = std::sync::OnceLock::new();
    let probe = PROBE.get_or_init(|| {
        std::panic::catch_unwind(|| {
            let device = Default::default();
            let x = Tensor::<Gpu, 1>::from_data([1.0f32, 2.0], &device);
            x.sum().into_scalar()
        })
        .map_err(|e| {
            e.downcast_ref::<String>()
                .cloned()
                .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "unknown panic".into())
        })
        .and_then(|sum| {
            if sum == 3.0 {
                Ok(())
            } else {
                Err(format!("1 + 2 = {sum} on wgpu"))
            }
        })
    });
    match probe {
        Ok(()) => true,
        Err(why) if std::env::var("BURN_NATTEN_REQUIRE_WGPU").as_deref() == Ok("1") => {
            panic!("BURN_NATTEN_REQUIRE_WGPU=1 but no usable wgpu adapter: {why}")
        }
        Err(why) => {
            eprintln!(
                "SKIPPED: wgpu tests need a Vulkan/Metal/DX12 adapter (install mesa-vulkan-drivers for lavapipe): {why}"
            );
            false
        }
    }
}

/// Values of a tensor as f32, whatever its dtype.
pub fn values<B: Backend, const D: usize>(t: Tensor<B, D>) -> Vec<f32> {
    t.into_data()
        .convert::<f32>()
        .to_vec::<f32>()
        .expect("f32 data")
}

/// A tensor from f32 values, in `dtype`.
pub fn tensor<B: Backend, const D: usize>(
    values: Vec<f32>,
    shape: [usize; D],
    dtype: DType,
    device: &B::Device,
) -> Tensor<B, D> {
    Tensor::from_data(TensorData::new(values, shape), (device, dtype))
}

/// Seeded standard-normal values.
pub fn normal(n: usize, rng: &mut SmallRng) -> Vec<f32> {
    (0..n)
        .map(|_| {
            // Box-Muller: exact enough for test inputs and needs no extra crate.
            let (u1, u2): (f32, f32) = (rng.random_range(1e-7..1.0), rng.random());
            (-2.0 * u1.ln()).sqrt() * (2.0 * std::f32::consts::PI * u2).cos()
        })
        .collect()
}

/// A seeded random number generator.
pub fn rng(seed: u64) -> SmallRng {
    SmallRng::seed_from_u64(seed)
}

/// Random normal tensor on a backend (Burn's own RNG; for tests that need no host copy).
#[allow(dead_code)]
pub fn random<B: Backend, const D: usize>(shape: [usize; D], device: &B::Device) -> Tensor<B, D> {
    Tensor::random(shape, Distribution::Normal(0.0, 1.0), device)
}

/// Largest absolute difference, and the largest magnitude of the expected values.
pub fn max_abs_err(got: &[f32], want: &[f32]) -> (f32, f32) {
    assert_eq!(got.len(), want.len(), "length mismatch");
    let err = got
        .iter()
        .zip(want)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    let scale = want.iter().map(|b| b.abs()).fold(0.0f32, f32::max);
    (
        if got.iter().any(|x| !x.is_finite()) {
            f32::INFINITY
        } else {
            err
        },
        scale,
    )
}

/// Asserts `|got - want| <= atol + rtol * max|want|` elementwise-max, naming what is compared.
pub fn assert_close(what: &str, got: &[f32], want: &[f32], atol: f32, rtol: f32) {
    let (err, scale) = max_abs_err(got, want);
    let tol = atol + rtol * scale;
    assert!(
        err <= tol,
        "{what}: max abs error {err:e} > tolerance {tol:e} (max |expected| {scale:e})"
    );
}

/// Extra tolerance for results that go through Burn's own f32 matmuls on the GPU backend: 0 on
/// wgpu (true f32), and on CUDA (`test-cuda`) the TF32 rounding that burn-cuda's matmul applies
/// to f32 on tensor cores (10-bit mantissa: 2^-11 relative per operand; for O(1) scores, about
/// 1e-3 on outputs). Never applied to the fused kernels, which accumulate in f32.
#[cfg(not(feature = "test-cuda"))]
pub const GPU_MATMUL_TOL: f32 = 0.0;
/// See above: the TF32 allowance on CUDA.
#[cfg(feature = "test-cuda")]
pub const GPU_MATMUL_TOL: f32 = 4e-3;
