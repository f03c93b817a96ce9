//! Per-device state of the native kernels: the device's primary CUDA context (the one
//! burn-cuda uses, so its buffers' pointers are valid here), a stream of our own, and the
//! kernels loaded from the embedded fatbins. Made once per device, kept for the process.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use cudarc::driver::sys::{CUdevice_attribute, CUfunction_attribute_enum};
use cudarc::driver::{CudaContext, CudaFunction, CudaSlice, CudaStream, DevicePtr};

use super::handoff::StreamKernels;
use super::tensor_map::{TensorMapKind, WalkedSide};

use super::plan;

mod fatbins {
    include!(concat!(env!("OUT_DIR"), "/native_kernels.rs"));
}

/// Head dims whose kernels were built into this binary (`BURN_NATTEN_NATIVE_HEAD_DIMS` at build
/// time; all of [`plan::KERNEL_HEAD_DIMS`] by default).
pub fn built_head_dims() -> Vec<usize> {
    fatbins::FNA_FORWARD_FATBINS
        .iter()
        .map(|(d, _)| *d)
        .collect()
}

/// The two element types of every kernel, in the order kernels are stored.
const ELEMENTS: [&str; 2] = ["f16", "bf16"];

/// A kernel per element type (f16, bf16).
type PerElement = [CudaFunction; 2];

/// A loaded kernel and how to launch it.
#[derive(Clone, Copy)]
pub struct KernelLaunch<'a> {
    /// The entry point.
    pub function: &'a CudaFunction,
    /// Threads per CTA.
    pub threads: u32,
    /// Dynamic shared memory per CTA.
    pub shared_bytes: u32,
    /// For a persistent kernel, the most CTAs worth launching (one per SM): its CTAs walk the
    /// work items of the grid it is given; `None` for a kernel with one CTA per work item.
    pub persistent_ctas: Option<u32>,
    /// How a work item covers the plan tiles of its side (Q tiles for a query-side pass, KV
    /// tiles for a key-side pass).
    pub tiles: TileSplit,
    /// For a kernel that loads its walked tiles with TMA where it can (the Hopper forward and
    /// the paired Hopper backward passes), what its descriptors depend on: it takes a flag and
    /// the two descriptors (K and V, or Q and dO) after its axis ([`super::tensor_map`]);
    /// `None` for the others.
    pub tensor_maps: Option<TensorMapKind>,
    /// Whether the kernel takes the descriptor of the f32 dQ accumulator after those (the fused
    /// Hopper backward, [`super::tensor_map::dq_accumulator_map`]).
    pub dq_accumulator_map: bool,
}

/// How a kernel's work item covers the plan tiles of its side.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TileSplit {
    /// One plan tile.
    Whole,
    /// Two plan tiles paired along the axis the kernel takes as its second argument
    /// (`FnaParams::query_pair_axis` / `key_pair_axis`; the Hopper backward passes at head dim
    /// 128, [`plan::sm90_backward_pairs_tiles`]).
    Pairs,
    /// One plan tile, halved between two consumer warpgroups along the axis the kernel takes as
    /// its second argument (`FnaParams::query_split_axis`; the Hopper forward).
    Halves,
}

impl KernelLaunch<'_> {
    /// The grid that runs the work items `work` (a grid of one CTA per item): `work` itself, or
    /// for a persistent kernel one CTA per SM, at most one per item, in a 1-D grid.
    pub fn grid(&self, work: (u32, u32, u32)) -> (u32, u32, u32) {
        match self.persistent_ctas {
            Some(ctas) => ((work.0 * work.1 * work.2).clamp(1, ctas), 1, 1),
            None => work,
        }
    }
}

/// The backward kernels of one head dim and element type and how to launch them: the dQ pass
/// (the Hopper one where loaded), then the passes over key tiles.
pub struct BackwardKernels<'a> {
    /// The dQ pass (one CTA per Q tile); it writes delta, which the key passes read.
    pub dq: KernelLaunch<'a>,
    /// The dK/dV pass, or (head dim 256, [`plan::backward_splits_dk_dv`]) a dK pass and a dV
    /// pass; one CTA per KV tile each.
    pub key_passes: Vec<KernelLaunch<'a>>,
    /// The fused Hopper backward, where loaded (head dim 128 on compute capability 9.0): with
    /// `BURN_NATTEN_NATIVE_FUSED_BACKWARD=1`, the calls that TMA can describe run it instead of
    /// the two passes.
    pub fused: Option<FusedBackward<'a>>,
    /// The Hopper dQ pass with the masks of S as a product, where loaded (the paired pass, head
    /// dim 128): the calls whose masks fit ([`plan::sm90_dq_product_masks_fit`]) run it
    /// instead of `dq`, unless `BURN_NATTEN_NATIVE_PRODUCT_MASKS=0`.
    pub dq_product_masks: Option<KernelLaunch<'a>>,
    /// The Hopper dK/dV pass with the masks of S^T as a product, where loaded (the paired pass,
    /// head dim 128): the calls whose masks fit ([`plan::sm90_dkdv_product_masks_fit`]) run it
    /// instead of `key_passes`, unless `BURN_NATTEN_NATIVE_PRODUCT_MASKS=0`.
    pub dkdv_product_masks: Option<KernelLaunch<'a>>,
}

/// The fused Hopper backward (`kernels/fna_backward_fused_sm90_d128.cu`): FA3's single pass,
/// where the dK/dV pass also adds each step's dQ into an f32 accumulator with TMA reduce-adds
/// (so dQ is not bit-reproducible); a prologue computes delta and zeroes the accumulator, an
/// epilogue writes dQ from it.
pub struct FusedBackward<'a> {
    /// delta and the zeroed accumulator; one warp per (token, head) row.
    pub prologue: KernelLaunch<'a>,
    /// The paired dK/dV pass with the dQ reduce-adds.
    pub pass: KernelLaunch<'a>,
    /// dQ = accumulator x scale; four elements per thread.
    pub epilogue: KernelLaunch<'a>,
}

/// The launch of a Hopper backward pass `f` walking `side` (the dQ pass walks keys, the dK/dV
/// pass queries; with window masks as a product where `product_masks`) for `kernel_dim` and
/// the element type, over the backward tiles as `tiles` says.
fn sm90_pass_launch(
    f: &PerElement,
    bf16: bool,
    kernel_dim: usize,
    tiles: TileSplit,
    side: WalkedSide,
    product_masks: bool,
) -> KernelLaunch<'_> {
    KernelLaunch {
        function: &f[bf16 as usize],
        threads: plan::sm90_backward_threads(kernel_dim),
        shared_bytes: match side {
            WalkedSide::Keys => plan::sm90_backward_dq_shared_bytes(kernel_dim, product_masks),
            WalkedSide::Queries => plan::sm90_backward_dkdv_shared_bytes(kernel_dim, product_masks),
        },
        persistent_ctas: None,
        tiles,
        // The paired passes load their walked tiles (K/V, Q/dO) with TMA; the 64-row ones gather.
        tensor_maps: (tiles == TileSplit::Pairs).then_some(TensorMapKind {
            bf16,
            kernel_dim,
            side,
        }),
        dq_accumulator_map: false,
    }
}

/// Whether `BURN_NATTEN_NATIVE_SM90` allows the Hopper kernels (the forward and the backward
/// passes; unset or anything but `0`): `0` keeps the SM80-class kernels on compute capability
/// 9.0 too (to compare the two).
fn sm90_allowed() -> bool {
    std::env::var_os("BURN_NATTEN_NATIVE_SM90").is_none_or(|v| v != "0")
}

/// Loaded kernels of one device.
pub struct NativeDevice {
    pub stream: Arc<CudaStream>,
    /// Our stream's side of the GPU-side handoff with cubecl's stream, or why it could not be
    /// compiled (every call then synchronises on the host).
    pub handoff: Result<StreamKernels, String>,
    /// Streaming multiprocessors: the CTAs of a persistent kernel.
    sm_count: u32,
    /// Forward kernel per built head dim and queries per tile.
    forward: Vec<((usize, usize), PerElement)>,
    /// Hopper forward (wgmma, [`plan::SM90_BLOCK_M`] queries per tile) per built head dim, keys
    /// per KV tile ([`plan::FORWARD_BLOCK_N`], and [`plan::SM90_WIDE_BLOCK_N`] where
    /// [`plan::sm90_has_wide_form`]) and window masks (looked up, or as a product with 64-key
    /// tiles); empty unless the device has compute capability 9.0 and the build has the sm_90a
    /// kernels.
    forward_sm90: Vec<((usize, usize, bool), PerElement)>,
    /// Backward kernels per head dim built and fitting the device's shared memory: the dQ
    /// pass, and the dK/dV pass or the dK and dV passes.
    backward: Vec<(usize, PerElement, Vec<PerElement>)>,
    /// Hopper backward (wgmma; the backward plan's [`plan::BACKWARD_BLOCK`]-row tiles): the dQ
    /// pass and the dK/dV pass per built head dim; empty unless the device has compute
    /// capability 9.0 and the build has the sm_90a kernels.
    /// The paired passes with product masks (dQ, dK/dV) ride along where built.
    backward_sm90: Vec<(usize, PerElement, PerElement, Option<[PerElement; 2]>)>,
    /// Fused Hopper backward (prologue, pass, epilogue) per built head dim; empty unless the
    /// device has compute capability 9.0 and the build has the sm_90a kernels.
    backward_fused_sm90: Vec<(usize, PerElement, PerElement, PerElement)>,
    /// The persistent Hopper forward's work counter (`FnaParams::item_counter`, two `u32`s):
    /// zeroed here, and zeroed again by each launch's last CTA, so it holds zeros between
    /// launches. One per device: its launches are ordered on [`Self::stream`].
    _item_counter: CudaSlice<u32>,
    /// Its device pointer.
    pub item_counter: u64,
}

impl NativeDevice {
    /// Whether this device runs the Hopper forward's wide form ([`plan::SM90_WIDE_BLOCK_N`]-key
    /// tiles) at `kernel_dim`.
    pub fn has_wide_forward(&self, kernel_dim: usize) -> bool {
        self.forward_sm90
            .iter()
            .any(|(key, _)| *key == (kernel_dim, plan::SM90_WIDE_BLOCK_N, false))
    }

    /// The forward kernel for `kernel_dim`, `block_m` queries and `block_n` keys per tile and
    /// the element type (`bf16` or f16): the Hopper kernel where it was loaded and takes the
    /// tiles (with window masks as a product where `product_masks` and it has that form), else
    /// the SM80-class one (64-key tiles only).
    pub fn forward(
        &self,
        kernel_dim: usize,
        block_m: usize,
        block_n: usize,
        bf16: bool,
        product_masks: bool,
    ) -> Option<KernelLaunch<'_>> {
        let sm90 = |masks: bool| {
            self.forward_sm90
                .iter()
                .find(move |(key, _)| *key == (kernel_dim, block_n, masks))
                .map(|(_, f)| (f, masks))
        };
        if block_m == plan::SM90_BLOCK_M
            && let Some((f, masks)) = sm90(true).filter(|_| product_masks).or_else(|| sm90(false))
        {
            return Some(KernelLaunch {
                function: &f[bf16 as usize],
                threads: plan::SM90_THREADS,
                shared_bytes: plan::sm90_shared_bytes(kernel_dim, block_n, masks),
                persistent_ctas: Some(self.sm_count),
                tiles: TileSplit::Halves,
                tensor_maps: Some(TensorMapKind {
                    bf16,
                    kernel_dim,
                    side: WalkedSide::Keys,
                }),
                dq_accumulator_map: false,
            });
        }
        if block_n != plan::FORWARD_BLOCK_N {
            return None;
        }
        self.forward
            .iter()
            .find(|(key, _)| *key == (kernel_dim, block_m))
            .map(|(_, f)| KernelLaunch {
                function: &f[bf16 as usize],
                threads: plan::THREADS,
                shared_bytes: plan::shared_bytes(kernel_dim, block_m),
                persistent_ctas: None,
                tiles: TileSplit::Whole,
                tensor_maps: None,
                dq_accumulator_map: false,
            })
    }

    /// Head dims with backward kernels on this device: those built whose shared memory fits a
    /// CTA here.
    pub fn backward_head_dims(&self) -> Vec<usize> {
        self.backward.iter().map(|(d, _, _)| *d).collect()
    }

    /// The backward kernels for `kernel_dim` and the element type (`None` where that head dim
    /// was not built or needs more shared memory than the device gives a CTA): the Hopper
    /// passes where they were loaded, else the SM80-class ones.
    pub fn backward(&self, kernel_dim: usize, bf16: bool) -> Option<BackwardKernels<'_>> {
        let (_, dq, key_passes) = self.backward.iter().find(|(d, _, _)| *d == kernel_dim)?;
        if let Some((_, dq, dkdv, product_masks)) =
            self.backward_sm90.iter().find(|(d, ..)| *d == kernel_dim)
        {
            let backward_sm90_tiles = if plan::sm90_backward_pairs_tiles(kernel_dim) {
                TileSplit::Pairs
            } else {
                TileSplit::Whole
            };
            let launch = |f, side, product_masks| {
                sm90_pass_launch(
                    f,
                    bf16,
                    kernel_dim,
                    backward_sm90_tiles,
                    side,
                    product_masks,
                )
            };
            let (keys, queries) = (WalkedSide::Keys, WalkedSide::Queries);
            return Some(BackwardKernels {
                dq: launch(dq, keys, false),
                key_passes: vec![launch(dkdv, queries, false)],
                fused: self.fused_backward(kernel_dim, bf16),
                dq_product_masks: product_masks.as_ref().map(|[dq, _]| launch(dq, keys, true)),
                dkdv_product_masks: product_masks
                    .as_ref()
                    .map(|[_, dkdv]| launch(dkdv, queries, true)),
            });
        }
        let dq = KernelLaunch {
            function: &dq[bf16 as usize],
            threads: plan::THREADS,
            shared_bytes: plan::backward_shared_bytes(kernel_dim),
            persistent_ctas: None,
            tiles: TileSplit::Whole,
            tensor_maps: None,
            dq_accumulator_map: false,
        };
        let key_passes = key_passes
            .iter()
            .map(|f| KernelLaunch {
                function: &f[bf16 as usize],
                threads: plan::THREADS,
                shared_bytes: plan::backward_shared_bytes(kernel_dim),
                persistent_ctas: None,
                tiles: TileSplit::Whole,
                tensor_maps: None,
                dq_accumulator_map: false,
            })
            .collect();
        Some(BackwardKernels {
            dq,
            key_passes,
            fused: None,
            dq_product_masks: None,
            dkdv_product_masks: None,
        })
    }

    /// The fused Hopper backward for `kernel_dim` and the element type, where it was loaded.
    fn fused_backward(&self, kernel_dim: usize, bf16: bool) -> Option<FusedBackward<'_>> {
        let (_, prologue, pass, epilogue) = self
            .backward_fused_sm90
            .iter()
            .find(|(d, _, _, _)| *d == kernel_dim)?;
        let elementwise = |f| elementwise_launch(f, bf16);
        Some(FusedBackward {
            prologue: elementwise(prologue),
            pass: KernelLaunch {
                function: &pass[bf16 as usize],
                threads: plan::sm90_backward_threads(kernel_dim),
                shared_bytes: plan::sm90_backward_fused_shared_bytes(kernel_dim),
                persistent_ctas: None,
                tiles: TileSplit::Pairs,
                tensor_maps: Some(TensorMapKind {
                    bf16,
                    kernel_dim,
                    side: WalkedSide::Queries,
                }),
                dq_accumulator_map: true,
            },
            epilogue: elementwise(epilogue),
        })
    }
}

/// A launch of the fused backward's prologue or epilogue (no shared memory, no tiles).
fn elementwise_launch(f: &PerElement, bf16: bool) -> KernelLaunch<'_> {
    KernelLaunch {
        function: &f[bf16 as usize],
        threads: FUSED_AUX_THREADS,
        shared_bytes: 0,
        persistent_ctas: None,
        tiles: TileSplit::Whole,
        tensor_maps: None,
        dq_accumulator_map: false,
    }
}

/// Threads per CTA of the fused backward's prologue and epilogue (one warp per (token, head)
/// row in the prologue, four elements per thread in the epilogue).
pub const FUSED_AUX_THREADS: u32 = 256;

/// Head dims whose backward kernels were built into this binary.
pub fn built_backward_head_dims() -> Vec<usize> {
    fatbins::FNA_BACKWARD_FATBINS
        .iter()
        .map(|(d, _)| *d)
        .collect()
}

/// A device's loaded kernels, or why they could not be loaded.
type Loaded = Result<Arc<NativeDevice>, String>;

/// The minimum compute capability of the kernels (SM80: `mma.sync` m16n8k16 and `cp.async`).
pub const MIN_COMPUTE_CAPABILITY: (i32, i32) = (8, 0);

/// The native state of CUDA device `index`, made on first use; `Err` says why the kernels cannot
/// run there (no driver, compute capability below 8.0, a fatbin the driver rejects). The result,
/// success or failure, is kept.
pub fn native_device(index: usize) -> Result<Arc<NativeDevice>, String> {
    static DEVICES: OnceLock<Mutex<HashMap<usize, Loaded>>> = OnceLock::new();
    let mut devices = DEVICES
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    devices.entry(index).or_insert_with(|| load(index)).clone()
}

fn load(index: usize) -> Result<Arc<NativeDevice>, String> {
    // SAFETY: only checks whether libcuda can be dlopen'ed.
    if !unsafe { cudarc::driver::sys::is_culib_present() } {
        return Err("the CUDA driver library (libcuda) is not present".into());
    }
    let ctx = CudaContext::new(index).map_err(|e| format!("CUDA device {index}: {e}"))?;
    let cc = ctx
        .compute_capability()
        .map_err(|e| format!("CUDA device {index}: {e}"))?;
    if cc < MIN_COMPUTE_CAPABILITY {
        return Err(format!(
            "CUDA device {index} has compute capability {}.{}; the native kernels need {}.{} or newer",
            cc.0, cc.1, MIN_COMPUTE_CAPABILITY.0, MIN_COMPUTE_CAPABILITY.1
        ));
    }
    let stream = ctx
        .new_stream()
        .map_err(|e| format!("CUDA device {index}: new stream: {e}"))?;
    // Kernels `{prefix}_{element}_d{dim}{suffix}` of one fatbin, each given `shared` bytes of
    // dynamic shared memory.
    let load_family = |fatbin: &[u8],
                       dim: usize,
                       names: &[(&str, &str, u32)]|
     -> Result<Vec<PerElement>, String> {
        let module = ctx
            .load_module(cudarc::nvrtc::Ptx::from_binary(fatbin.to_vec()))
            .map_err(|e| format!("loading the head-dim-{dim} kernels: {e}"))?;
        names
            .iter()
            .map(|&(prefix, suffix, shared)| {
                let [f16, bf16] = ELEMENTS.map(|element| {
                    let name = format!("{prefix}_{element}_d{dim}{suffix}");
                    let f = module
                        .load_function(&name)
                        .map_err(|e| format!("kernel {name}: {e}"))?;
                    f.set_attribute(
                        CUfunction_attribute_enum::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
                        shared as i32,
                    )
                    .map_err(|e| format!("kernel {name}: shared memory: {e}"))?;
                    Ok::<_, String>(f)
                });
                Ok([f16?, bf16?])
            })
            .collect()
    };
    let mut forward = Vec::new();
    for &(dim, fatbin) in fatbins::FNA_FORWARD_FATBINS {
        let blocks = plan::forward_block_m(dim);
        let names: Vec<_> = blocks
            .iter()
            .map(|&m| {
                (
                    "natten_fna_forward",
                    format!("_m{m}"),
                    plan::shared_bytes(dim, m),
                )
            })
            .collect();
        let names: Vec<_> = names.iter().map(|(p, s, b)| (*p, s.as_str(), *b)).collect();
        let kernels = load_family(fatbin, dim, &names)?;
        forward.extend(blocks.iter().map(|&m| (dim, m)).zip(kernels));
    }
    // The sm_90a kernels run on compute capability 9.0 only (arch-specific SASS).
    let mut forward_sm90 = Vec::new();
    if cc == (9, 0) && sm90_allowed() {
        for &(dim, fatbin) in fatbins::FNA_FORWARD_SM90_FATBINS {
            // Entry points `_m128` (64-key tiles), with window masks as a product `_m128_pm`
            // and, in the wide form, `_m128_n128`.
            let m = plan::SM90_BLOCK_M;
            let n = plan::FORWARD_BLOCK_N;
            let mut blocks = vec![
                ((n, false), format!("_m{m}")),
                ((n, true), format!("_m{m}_pm")),
            ];
            if plan::sm90_has_wide_form(dim) {
                let wide = plan::SM90_WIDE_BLOCK_N;
                blocks.push(((wide, false), format!("_m{m}_n{wide}")));
            }
            let names: Vec<_> = blocks
                .iter()
                .map(|((n, masks), suffix)| {
                    let shared = plan::sm90_shared_bytes(dim, *n, *masks);
                    ("natten_fna_forward_sm90", suffix.as_str(), shared)
                })
                .collect();
            let kernels = load_family(fatbin, dim, &names)?;
            forward_sm90.extend(
                blocks
                    .iter()
                    .map(|((n, masks), _)| (dim, *n, *masks))
                    .zip(kernels),
            );
        }
    }
    let sm_count = ctx
        .attribute(CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT)
        .map_err(|e| format!("CUDA device {index}: multiprocessors: {e}"))?
        .max(1) as u32;
    // Head dims whose backward needs more shared memory than a CTA may have here (head dim 256
    // on SM86/89) are left out: their backward runs on the portable kernels.
    let max_shared = ctx
        .attribute(CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN)
        .map_err(|e| format!("CUDA device {index}: shared memory per block: {e}"))?;
    let mut backward = Vec::new();
    for &(dim, fatbin) in fatbins::FNA_BACKWARD_FATBINS {
        let shared = plan::backward_shared_bytes(dim);
        if shared as i64 > max_shared as i64 {
            continue;
        }
        let key_passes: &[&str] = if plan::backward_splits_dk_dv(dim) {
            &["natten_fna_backward_dk", "natten_fna_backward_dv"]
        } else {
            &["natten_fna_backward_dkdv"]
        };
        let names: Vec<_> = std::iter::once("natten_fna_backward_dq")
            .chain(key_passes.iter().copied())
            .map(|prefix| (prefix, "", shared))
            .collect();
        let mut kernels = load_family(fatbin, dim, &names)?;
        let dq = kernels.remove(0);
        backward.push((dim, dq, kernels));
    }
    let mut backward_sm90 = Vec::new();
    if cc == (9, 0) && sm90_allowed() {
        for &(dim, fatbin) in fatbins::FNA_BACKWARD_SM90_FATBINS {
            // The paired passes also have forms with product masks (`_pm`).
            let mut names = vec![
                (
                    "natten_fna_backward_dq_sm90",
                    "",
                    plan::sm90_backward_dq_shared_bytes(dim, false),
                ),
                (
                    "natten_fna_backward_dkdv_sm90",
                    "",
                    plan::sm90_backward_dkdv_shared_bytes(dim, false),
                ),
            ];
            if plan::sm90_backward_pairs_tiles(dim) {
                names.push((
                    "natten_fna_backward_dq_sm90",
                    "_pm",
                    plan::sm90_backward_dq_shared_bytes(dim, true),
                ));
                names.push((
                    "natten_fna_backward_dkdv_sm90",
                    "_pm",
                    plan::sm90_backward_dkdv_shared_bytes(dim, true),
                ));
            }
            let mut kernels = load_family(fatbin, dim, &names)?.into_iter();
            let (dq, dkdv) = (kernels.next(), kernels.next());
            let (Some(dq), Some(dkdv)) = (dq, dkdv) else {
                return Err(format!(
                    "head dim {dim}: the Hopper backward's entry points"
                ));
            };
            let product_masks = kernels
                .next()
                .zip(kernels.next())
                .map(|(dq, dkdv)| [dq, dkdv]);
            backward_sm90.push((dim, dq, dkdv, product_masks));
        }
    }
    let mut backward_fused_sm90 = Vec::new();
    if cc == (9, 0) && sm90_allowed() {
        for &(dim, fatbin) in fatbins::FNA_BACKWARD_FUSED_SM90_FATBINS {
            let [prologue, pass, epilogue]: [PerElement; 3] = load_family(
                fatbin,
                dim,
                &[
                    ("natten_fna_backward_fused_prologue_sm90", "", 0),
                    (
                        "natten_fna_backward_fused_sm90",
                        "",
                        plan::sm90_backward_fused_shared_bytes(dim),
                    ),
                    ("natten_fna_backward_fused_epilogue_sm90", "", 0),
                ],
            )?
            .try_into()
            .map_err(|_| "three fused backward kernels".to_string())?;
            backward_fused_sm90.push((dim, prologue, pass, epilogue));
        }
    }
    let counter = stream
        .alloc_zeros::<u32>(2)
        .map_err(|e| format!("CUDA device {index}: the forward's work counter: {e}"))?;
    let item_counter = counter.device_ptr(&stream).0;
    Ok(Arc::new(NativeDevice {
        _item_counter: counter,
        item_counter,
        handoff: StreamKernels::load(&ctx),
        stream,
        sm_count,
        forward,
        forward_sm90,
        backward,
        backward_sm90,
        backward_fused_sm90,
    }))
}
