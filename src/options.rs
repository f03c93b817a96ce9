//! Options of the public functions: builder structs with NATTEN's defaults.

use natten_core::AxisParams;

/// Which implementation runs a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum NaBackend {
    /// The fastest path available for the backend, device and problem: the fused CubeCL
    /// kernels on CubeCL backends (wgpu, CUDA, ROCm) where they support the problem, else the
    /// reference.
    #[default]
    Auto,
    /// The reference implementation written in Burn tensor ops: runs on every Burn backend, and
    /// is the CPU path on `NdArray`. Memory is `O(tokens x window)`; it never builds a
    /// `tokens x tokens` mask for neighborhood attention.
    Reference,
    /// The fused CubeCL kernels (any CubeCL runtime: wgpu, CUDA, ROCm). Choosing it on another
    /// backend, or for a problem they do not support (head dims above
    /// [`MAX_FUSED_HEAD_DIM`](crate::backend::MAX_FUSED_HEAD_DIM)), is a
    /// [`NattenError::Unsupported`](crate::NattenError::Unsupported). On a device whose shared
    /// memory cannot hold the kernels' smallest tiles for these head dims and dtype (large head
    /// dims in f32 on 16-32 KB adapters), the call runs the reference.
    CubeFna,
    /// The native CUDA kernels (CUTLASS/CuTe, built with the `cuda-native` feature) on burn-cuda:
    /// the NA forward in f16/bf16 with `head_dim == head_dim_v` (a multiple of 8 up to 256), no
    /// extra KV tokens, positive scale, on GPUs of compute capability 8.0 or newer; its backward
    /// runs the fused CubeCL kernels. Anything else (another backend, a build without the
    /// feature, a device or problem it cannot run, attention/FMHA) is a
    /// [`NattenError::Unsupported`](crate::NattenError::Unsupported) naming the reason. `Auto`
    /// picks it wherever it can run.
    CudaFna,
}

impl NaBackend {
    /// The backend's name, as used in error messages.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Auto => "auto",
            Self::Reference => "reference",
            Self::CubeFna => "cube-fna",
            Self::CudaFna => "cuda-fna",
        }
    }
}

/// Options of a neighborhood-attention call over `R` spatial axes (`na1d`: 1, `na2d`: 2,
/// `na3d`: 3).
///
/// Per axis: kernel (window) size `k >= 2` (even sizes allowed), stride `1 <= s <= k` (default
/// 1), dilation `d >= 1` with `k * d <= axis length` (default 1), and a causal flag (default
/// false). The softmax scale defaults to `head_dim^-0.5`. The rules are NATTEN 0.21's; see the
/// crate documentation for the window they define.
///
/// ```
/// use burn_natten::NaOptions;
/// let opts = NaOptions::new([7, 7]).with_dilation([2, 2]).with_causal([true, false]);
/// assert_eq!(opts.kernel_size(), [7, 7]);
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct NaOptions<const R: usize> {
    kernel_size: [usize; R],
    stride: [usize; R],
    dilation: [usize; R],
    causal: [bool; R],
    scale: Option<f32>,
    backend: NaBackend,
    tiles: Option<([usize; R], [usize; R])>,
    backward_tiles: Option<([usize; R], [usize; R])>,
}

impl<const R: usize> NaOptions<R> {
    /// Neighborhood attention with window `kernel_size` per axis; stride 1, dilation 1, not
    /// causal, default scale, [`NaBackend::Auto`].
    pub fn new(kernel_size: [usize; R]) -> Self {
        Self {
            kernel_size,
            stride: [1; R],
            dilation: [1; R],
            causal: [false; R],
            scale: None,
            backend: NaBackend::Auto,
            tiles: None,
            backward_tiles: None,
        }
    }

    /// Chooses the fused forward's tile configuration: `q_tile` queries and `kv_tile` keys per
    /// axis. It must be one of [`crate::na_tile_configs`] for the problem and device (else the
    /// call is a [`crate::NattenError::InvalidArgument`] on `tiles` listing the valid ones);
    /// without it the backend chooses.
    pub fn with_tiles(mut self, q_tile: [usize; R], kv_tile: [usize; R]) -> Self {
        self.tiles = Some((q_tile, kv_tile));
        self
    }

    /// The chosen tile configuration, if any.
    pub fn tiles(&self) -> Option<([usize; R], [usize; R])> {
        self.tiles
    }

    /// Chooses the fused backward's tile configuration (both passes: `q_tile` queries and
    /// `kv_tile` keys per axis). It must be one of [`crate::na_backward_tile_configs`] for the
    /// problem and device (else the call is a [`crate::NattenError::InvalidArgument`] on
    /// `backward_tiles` listing the valid ones, or [`crate::NattenError::Unsupported`] where
    /// the backward has no tile choice); without it the backend chooses.
    pub fn with_backward_tiles(mut self, q_tile: [usize; R], kv_tile: [usize; R]) -> Self {
        self.backward_tiles = Some((q_tile, kv_tile));
        self
    }

    /// The chosen backward tile configuration, if any.
    pub fn backward_tiles(&self) -> Option<([usize; R], [usize; R])> {
        self.backward_tiles
    }

    /// Sets the stride per axis (`1 <= stride <= kernel_size`).
    pub fn with_stride(mut self, stride: [usize; R]) -> Self {
        self.stride = stride;
        self
    }

    /// Sets the dilation per axis (`dilation >= 1`, `kernel_size * dilation <= axis length`).
    pub fn with_dilation(mut self, dilation: [usize; R]) -> Self {
        self.dilation = dilation;
        self
    }

    /// Sets the causal flag per axis.
    pub fn with_causal(mut self, causal: [bool; R]) -> Self {
        self.causal = causal;
        self
    }

    /// Sets the softmax scale (finite, non-zero); the default is `head_dim^-0.5`.
    pub fn with_scale(mut self, scale: f32) -> Self {
        self.scale = Some(scale);
        self
    }

    /// Chooses the implementation.
    pub fn with_backend(mut self, backend: NaBackend) -> Self {
        self.backend = backend;
        self
    }

    /// Kernel size per axis.
    pub fn kernel_size(&self) -> [usize; R] {
        self.kernel_size
    }

    /// Stride per axis.
    pub fn stride(&self) -> [usize; R] {
        self.stride
    }

    /// Dilation per axis.
    pub fn dilation(&self) -> [usize; R] {
        self.dilation
    }

    /// Causal flag per axis.
    pub fn causal(&self) -> [bool; R] {
        self.causal
    }

    /// The explicit scale, if one was set.
    pub fn scale(&self) -> Option<f32> {
        self.scale
    }

    /// The chosen implementation.
    pub fn backend(&self) -> NaBackend {
        self.backend
    }

    /// The per-axis parameters, in the form `natten-core` works with.
    pub fn axes(&self) -> [AxisParams; R] {
        std::array::from_fn(|a| AxisParams {
            kernel_size: self.kernel_size[a],
            stride: self.stride[a],
            dilation: self.dilation[a],
            causal: self.causal[a],
        })
    }
}

/// Options of an attention (FMHA) call.
///
/// ```
/// use burn_natten::AttentionOptions;
/// let opts = AttentionOptions::new().with_causal(true).with_scale(0.125);
/// assert!(opts.causal());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct AttentionOptions {
    causal: bool,
    scale: Option<f32>,
    backend: NaBackend,
}

impl AttentionOptions {
    /// Full (non-causal) attention with the default scale `head_dim^-0.5`.
    pub fn new() -> Self {
        Self::default()
    }

    /// Causal attention: query `i` sees keys `0..=i` (top-left aligned when the query and
    /// key/value lengths differ).
    pub fn with_causal(mut self, causal: bool) -> Self {
        self.causal = causal;
        self
    }

    /// Sets the softmax scale (finite, non-zero).
    pub fn with_scale(mut self, scale: f32) -> Self {
        self.scale = Some(scale);
        self
    }

    /// Chooses the implementation.
    pub fn with_backend(mut self, backend: NaBackend) -> Self {
        self.backend = backend;
        self
    }

    /// Whether the attention is causal.
    pub fn causal(&self) -> bool {
        self.causal
    }

    /// The explicit scale, if one was set.
    pub fn scale(&self) -> Option<f32> {
        self.scale
    }

    /// The chosen implementation.
    pub fn backend(&self) -> NaBackend {
        self.backend
    }
}
