//! Command-line arguments.

use clap::{Parser, ValueEnum};

/// Times burn-natten's neighborhood attention on one problem: forward and forward+backward,
/// with warm-up and device sync; reports milliseconds and effective TFLOP/s.
#[derive(Debug, Clone, Parser)]
#[command(name = "natten-profile", version)]
pub struct Args {
    /// Spatial shape of the token grid (1 to 3 values: NA-1D/2D/3D).
    #[arg(short = 'i', long, num_args = 1..=3, required = true)]
    pub input_size: Vec<usize>,
    /// Window size per axis (one value is broadcast).
    #[arg(short = 'w', long, num_args = 1..=3, required = true)]
    pub window_size: Vec<usize>,
    /// Stride per axis (one value is broadcast).
    #[arg(short = 's', long, num_args = 1..=3, default_value = "1")]
    pub stride: Vec<usize>,
    /// Dilation per axis (one value is broadcast).
    #[arg(short = 'd', long, num_args = 1..=3, default_value = "1")]
    pub dilation: Vec<usize>,
    /// Q tile shape of the fused forward (one value per axis; with `--kv-tile`). Valid shapes:
    /// `burn_natten::na_tile_configs`; an invalid one is reported with the list.
    #[arg(long, num_args = 1..=3, requires = "kv_tile")]
    pub q_tile: Option<Vec<usize>>,
    /// KV tile shape of the fused forward (one value per axis; with `--q-tile`).
    #[arg(long, num_args = 1..=3, requires = "q_tile")]
    pub kv_tile: Option<Vec<usize>>,
    /// Q tile shape of the fused backward (one value per axis; with `--backward-kv-tile`).
    /// Valid shapes: `burn_natten::na_backward_tile_configs` (the native CUDA backward's).
    #[arg(long, num_args = 1..=3, requires = "backward_kv_tile")]
    pub backward_q_tile: Option<Vec<usize>>,
    /// KV tile shape of the fused backward (one value per axis; with `--backward-q-tile`).
    #[arg(long, num_args = 1..=3, requires = "backward_q_tile")]
    pub backward_kv_tile: Option<Vec<usize>>,
    /// Extra key/value tokens that every query attends to beside its neighbourhood
    /// (`na{1,2,3}d_with_extra_kv`); the dense baseline attends to them too.
    #[arg(long, default_value_t = 0)]
    pub extra_kv: usize,
    /// Causal flag per axis (one value is broadcast).
    #[arg(short = 'c', long, num_args = 1..=3, default_value = "false")]
    pub causal: Vec<bool>,
    /// Batch size.
    #[arg(short = 'b', long, default_value_t = 1)]
    pub batch: usize,
    /// Query heads.
    #[arg(long, default_value_t = 1)]
    pub heads: usize,
    /// Key/value heads (default: as many as query heads).
    #[arg(long)]
    pub heads_kv: Option<usize>,
    /// Head dim of Q and K.
    #[arg(long, default_value_t = 64)]
    pub dim: usize,
    /// Head dim of V (default: `--dim`).
    #[arg(long)]
    pub dim_value: Option<usize>,
    /// Element type.
    #[arg(long, value_enum, default_value_t = Dtype::F32)]
    pub dtype: Dtype,
    /// Also time forward + backward.
    #[arg(long)]
    pub backprop: bool,
    /// Burn backend.
    #[arg(long, value_enum, default_value_t = DeviceBackend::Wgpu)]
    pub backend: DeviceBackend,
    /// Implementation to time; `--compare-reference` also times the reference.
    #[arg(long = "impl", value_enum, default_value_t = Implementation::Auto)]
    pub implementation: Implementation,
    /// Also time the reference implementation on the same device, and report the speedup.
    #[arg(long)]
    pub compare_reference: bool,
    /// Skip the dense-attention baseline (`burn_natten::attention` over all tokens, the same
    /// heads and dims, timed by default to report the speedup of NA over it).
    #[arg(long)]
    pub no_dense: bool,
    /// Time every tile configuration of the fused forward, print the fastest and store it in
    /// the tile cache (`$BURN_NATTEN_CACHE`, else `~/.cache/burn-natten/tiles.json`), which
    /// `NaBackend::Auto` reads when no tiles are given.
    #[arg(long, conflicts_with_all = ["dry_run", "q_tile", "compare_reference"])]
    pub optimize: bool,
    /// Untimed warm-up runs (kernel compilation, autotune).
    #[arg(long, default_value_t = 2)]
    pub warmup: usize,
    /// Timed runs (the median is reported).
    #[arg(long, default_value_t = 5)]
    pub iters: usize,
    /// Time the calls back to back: after the warm-up, `--iters` calls enqueued between two
    /// device syncs, three times; report the median of the three per-call means (the rate of
    /// a stream of calls, where the host runs ahead of the device) instead of the median of
    /// `--iters` calls each timed between two syncs.
    #[arg(long)]
    pub back_to_back: bool,
    /// List the implementations that can run the problem on this device and the fused
    /// forward's tile configurations, without running anything.
    #[arg(long)]
    pub dry_run: bool,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// Element types.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Dtype {
    /// 32-bit float.
    F32,
    /// 16-bit float.
    F16,
    /// bfloat16.
    Bf16,
}

/// Burn backends the profiler was built with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DeviceBackend {
    /// NdArray (CPU).
    Ndarray,
    /// Wgpu (default fused alias).
    Wgpu,
    /// CUDA (default fused alias).
    Cuda,
    /// ROCm (default fused alias).
    Rocm,
}

/// Implementations (`NaBackend`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Implementation {
    /// The fastest available.
    Auto,
    /// The reference in Burn tensor ops.
    Reference,
    /// The fused CubeCL kernels.
    CubeFna,
    /// The native CUDA kernels (burn-cuda built with `cuda-native`).
    CudaFna,
}

impl Args {
    /// A per-axis argument broadcast to the rank, or an error naming it.
    pub fn per_axis<T: Copy>(&self, name: &str, values: &[T]) -> Result<Vec<T>, String> {
        let rank = self.input_size.len();
        match values.len() {
            1 => Ok(vec![values[0]; rank]),
            n if n == rank => Ok(values.to_vec()),
            n => Err(format!(
                "`--{name}` takes 1 or {rank} values (one per axis of --input-size), got {n}"
            )),
        }
    }
}
