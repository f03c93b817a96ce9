//! What a native FNA forward launch needs besides buffers: the kernel's block sizes per head dim,
//! the tile shapes (valid list, default choice) and the `#[repr(C)]` launch parameters.

use crate::backend::{FmhaProblem, NaProblem, TileConfig};

/// Which keys each query sees: a neighborhood (the NA window rule) or every key (attention,
/// FMHA, which the kernels run as one axis of queries over one axis of keys).
#[derive(Debug, Clone, Copy)]
pub enum Pattern<'a> {
    /// Neighborhood attention: the problem's window parameters per axis.
    Na(&'a NaProblem),
    /// Attention over every key; causal is top-left aligned.
    Dense {
        /// Query `i` sees keys `0..=i` only.
        causal: bool,
        /// Softmax scale.
        scale: f32,
    },
}

impl<'a> From<&'a NaProblem> for Pattern<'a> {
    fn from(problem: &'a NaProblem) -> Self {
        Pattern::Na(problem)
    }
}

impl From<&FmhaProblem> for Pattern<'_> {
    fn from(problem: &FmhaProblem) -> Self {
        Pattern::Dense {
            causal: problem.causal,
            scale: problem.scale,
        }
    }
}

impl Pattern<'_> {
    /// The softmax scale.
    pub fn scale(&self) -> f32 {
        match self {
            Pattern::Na(problem) => problem.scale,
            Pattern::Dense { scale, .. } => *scale,
        }
    }
}

/// Head dims with a compiled kernel (`kernels/fna_forward_d{dim}.cu`); a problem's head dim (a
/// multiple of 8) runs on the smallest one at least as large (columns past it are zero-filled).
pub const KERNEL_HEAD_DIMS: [usize; 4] = [32, 64, 128, 256];

/// Threads per CTA of the SM80-class kernels (4 warps).
pub const THREADS: u32 = 128;

/// Keys per KV tile of every forward kernel (the Hopper forward also has a wide form,
/// [`SM90_WIDE_BLOCK_N`]).
pub const FORWARD_BLOCK_N: usize = 64;

/// Keys per KV tile of the Hopper forward's wide form (`natten_fna_forward_sm90_*_n128`, head
/// dim 128 only): half the steps of 64-key tiles, so half their per-step cost, for more keys
/// outside the windows on multi-dimensional tiles. H100 (kernel harness, bf16, 16 heads): 1-D
/// 32768 tokens window 2048 1.279-1.288 -> 1.199-1.202 ms, attention over 8192 keys 1.050-1.055
/// -> 0.956-0.967, the 2-D 128x128 window 31 anchor 0.578-0.582 -> 0.588-0.589 (slower:
/// [`prefers_wide_kv_tiles`]).
pub const SM90_WIDE_BLOCK_N: usize = 128;

/// Whether the Hopper forward has the wide form ([`SM90_WIDE_BLOCK_N`]) at `kernel_dim`.
pub fn sm90_has_wide_form(kernel_dim: usize) -> bool {
    kernel_dim == 128
}

/// Queries per Q tile of the forward kernels for head dim `kernel_dim`, as instantiated in
/// `kernels/fna_forward_d*.cu` (entry points `natten_fna_forward_<element>_d<dim>_m<queries>`).
pub fn forward_block_m(kernel_dim: usize) -> &'static [usize] {
    if kernel_dim <= 128 { &[128, 64] } else { &[64] }
}

/// Dynamic shared memory of the forward kernel with `block_m` queries per tile (Q tile + K tile
/// + V tile, 2-byte elements).
pub fn shared_bytes(kernel_dim: usize, block_m: usize) -> u32 {
    ((block_m + 2 * FORWARD_BLOCK_N) * kernel_dim * 2) as u32
}

/// Threads per CTA of the Hopper forward (`kernels/fna_forward_sm90.cuh`: a producer warpgroup
/// and two consumer warpgroups).
pub const SM90_THREADS: u32 = 384;

/// Queries per Q tile of the Hopper forward (its KV tiles have [`FORWARD_BLOCK_N`] keys, like
/// every forward kernel, or [`SM90_WIDE_BLOCK_N`] in the wide form); the 64-query tiles run on
/// the SM80 kernel there too.
pub const SM90_BLOCK_M: usize = 128;

/// K/V buffers in the ring of the Hopper forward with `block_n`-key tiles
/// (`FnaSm90Traits::kStages`): three of 64 keys, two of 128 (shared memory).
pub fn sm90_stages(block_n: usize) -> usize {
    if block_n == FORWARD_BLOCK_N { 3 } else { 2 }
}

/// Bytes of the window-mask table of a Hopper kernel with `block_n`-key tiles
/// (`WindowMasksOf::kBytes` in `kernels/sm90_common.cuh`): a column mask per quad lane (4), axis
/// (3) and run end (`block_n + 1`), of a thread's `block_n / 4` columns (16 or 32 bits).
pub const fn sm90_window_mask_bytes(block_n: usize) -> usize {
    4 * 3 * (block_n + 1) * if block_n == 64 { 2 } else { 4 }
}

/// Bytes of the window-mask table of the Hopper backward passes (64-column tiles).
pub const SM90_WINDOW_MASK_BYTES: usize = sm90_window_mask_bytes(64);

/// Dynamic shared memory of the Hopper forward with `block_n`-key tiles
/// (`FnaSm90Traits::kSmemBytes`): two Q tiles, the ring of K and V tiles, the token offset of
/// each KV tile row (4 bytes each), the mbarriers (8 bytes each: three per Q buffer, two per
/// ring stage), each Q buffer's work item (4 bytes), the window-mask table and 1024 bytes to
/// align the tiles to the 128-byte swizzle's period.
///
/// With `product_masks` (64-key tiles), the product masks' blocks too
/// ([`SM90_PRODUCT_MASK_BYTES`]).
pub fn sm90_shared_bytes(kernel_dim: usize, block_n: usize, product_masks: bool) -> u32 {
    let stages = sm90_stages(block_n);
    let tiles = (2 * SM90_BLOCK_M + 2 * stages * block_n) * kernel_dim * 2;
    let barriers = (6 + 2 * stages) * 8 + 2 * 4;
    let masks = if product_masks {
        SM90_PRODUCT_MASK_BYTES
    } else {
        0
    };
    (tiles + masks + block_n * 4 + barriers + sm90_window_mask_bytes(block_n) + 1024) as u32
}

/// KV tile origins that one Q tile's walk may have on the masked axes together, for the Hopper
/// forward's window masks as a product (`ProductMasks::kMaxAxisTiles` in
/// `kernels/product_masks_sm90.cuh`: a 1 KB bias block for each, per Q buffer and half).
pub const SM90_PRODUCT_MASK_TILES: usize = 14;

/// Keys that a KV tile may hold on a masked axis with product masks (a one-hot per offset in
/// each half of the masks' 16-column k-step).
pub const SM90_PRODUCT_MASK_DEPTH: usize = 8;

/// Shared memory of a set of product-mask bias blocks (`ProductMasks::kHalfBytes`): one Q half's
/// (one key sub-tile's in the dK/dV pass) [`SM90_PRODUCT_MASK_TILES`] blocks of 64 rows x 8
/// offsets, 2-byte elements.
pub const SM90_PRODUCT_MASK_SET_BYTES: usize = SM90_PRODUCT_MASK_TILES * 64 * 8 * 2;

/// Shared memory of the product masks' one-hot block (`ProductMasks::kOneHotBytes`): 64 walked
/// rows x 16 columns, 2-byte elements.
pub const SM90_PRODUCT_MASK_ONE_HOT_BYTES: usize = 64 * 16 * 2;

/// Shared memory of the Hopper forward's product masks (`ProductMasks::kBytes`): bias blocks for
/// two Q buffers x two halves, and the one-hot block.
pub const SM90_PRODUCT_MASK_BYTES: usize =
    4 * SM90_PRODUCT_MASK_SET_BYTES + SM90_PRODUCT_MASK_ONE_HOT_BYTES;

/// Whether the Hopper forward can take a problem's window masks as a product
/// (`natten_fna_forward_sm90_*_m128_pm`, `kernels/product_masks_sm90.cuh`): neighborhood
/// attention with 128-query, 64-key `tiles` whose masked axes are the kernels' last two (2-D
/// problems, and 3-D ones of length 1 with tiles 1 deep on the first axis), KV tiles at most
/// [`SM90_PRODUCT_MASK_DEPTH`] keys deep on each, and every Q tile's walk holding at most
/// [`SM90_PRODUCT_MASK_TILES`] KV tile origins on them together. The 2-D anchor (128x128,
/// window 31, 8x16 Q tiles and 8x8 KV tiles) walks 5 + 6.
pub fn sm90_product_masks_fit(pattern: Pattern<'_>, tiles: &TileConfig) -> bool {
    let blocks = (SM90_BLOCK_M, FORWARD_BLOCK_N);
    product_masks_fit(pattern, tiles, blocks, |axis, len, a, _| {
        let (q_ext, kv_ext) = (tiles.q_tile[a], tiles.kv_tile[a]);
        (kv_ext <= SM90_PRODUCT_MASK_DEPTH).then(|| most_walked_kv_tiles(axis, len, q_ext, kv_ext))
    })
}

/// The most KV tiles of extent `kv_ext` that the keys of a Q tile of extent `q_ext` span on one
/// axis (from the first query's window start to the last query's window end, as the kernels'
/// `kv_box_of`), over every Q tile of every dilation group.
fn most_walked_kv_tiles(
    axis: &natten_core::AxisParams,
    len: usize,
    q_ext: usize,
    kv_ext: usize,
) -> usize {
    use natten_core::window::window_start_end;
    most_walked_tiles(axis, len, q_ext, kv_ext, |first, last, glen| {
        (
            window_start_end(axis, first, glen).0,
            window_start_end(axis, last, glen).1,
        )
    })
}

/// The most Q tiles of extent `q_ext` that the queries seeing a KV tile of extent `kv_ext` span
/// on one axis (from the first key's inverse window start to the last key's inverse window
/// end, as the kernels' `query_box_of_warp`), over every KV tile of every dilation group.
fn most_walked_q_tiles(
    axis: &natten_core::AxisParams,
    len: usize,
    kv_ext: usize,
    q_ext: usize,
) -> usize {
    use natten_core::window::inverse_window_range;
    most_walked_tiles(axis, len, kv_ext, q_ext, |first, last, glen| {
        (
            inverse_window_range(axis, first, glen).0,
            inverse_window_range(axis, last, glen).1,
        )
    })
}

/// The most tiles of extent `walked_ext` over `span(first, last, group length)` (a walked
/// range `[lo, hi)`) of an own tile `[first, last]` of extent `own_ext`, over every own tile of
/// every dilation group of an axis of length `len`.
fn most_walked_tiles(
    axis: &natten_core::AxisParams,
    len: usize,
    own_ext: usize,
    walked_ext: usize,
    span: impl Fn(usize, usize, usize) -> (usize, usize),
) -> usize {
    let mut most = 0;
    for group in 0..axis.dilation.min(len) {
        let glen = natten_core::window::group_len(len, axis.dilation, group);
        for first in (0..glen).step_by(own_ext) {
            let (lo, hi) = span(first, (first + own_ext).min(glen) - 1, glen);
            most = most.max(hi.saturating_sub(lo).div_ceil(walked_ext));
        }
    }
    most
}

/// Whether the Hopper dQ pass can take a problem's masks of S as a product
/// (`natten_fna_backward_dq_sm90_*_pm`, where built): as [`sm90_product_masks_fit`] for the
/// pass's backward `tiles` (64-key KV tiles at most [`SM90_PRODUCT_MASK_DEPTH`] deep on the
/// masked axes, the kernels' last two), each CTA's pair of Q tiles (doubled on the kernels' axis
/// `pair_axis`, [`FnaParams::query_pair_axis`]) walking at most [`SM90_PRODUCT_MASK_TILES`] KV
/// tile origins on them together.
pub fn sm90_dq_product_masks_fit(pattern: Pattern<'_>, tiles: &TileConfig, pair_axis: i32) -> bool {
    let blocks = (BACKWARD_BLOCK, BACKWARD_BLOCK);
    product_masks_fit(pattern, tiles, blocks, |axis, len, a, kernel_axis| {
        let paired = kernel_axis == pair_axis;
        let (q_ext, kv_ext) = (tiles.q_tile[a] << paired as usize, tiles.kv_tile[a]);
        (kv_ext <= SM90_PRODUCT_MASK_DEPTH).then(|| most_walked_kv_tiles(axis, len, q_ext, kv_ext))
    })
}

/// Whether the Hopper dK/dV pass can take a problem's masks of S^T as a product
/// (`natten_fna_backward_dkdv_sm90_*_pm`, where built): as [`sm90_product_masks_fit`] for the
/// pass's backward `tiles` (64-query Q tiles at most [`SM90_PRODUCT_MASK_DEPTH`] deep on the
/// masked axes, the kernels' last two), each CTA's pair of KV tiles (doubled on the kernels'
/// axis `pair_axis`, [`FnaParams::key_pair_axis`]) walking at most [`SM90_PRODUCT_MASK_TILES`]
/// Q tile origins on them together.
pub fn sm90_dkdv_product_masks_fit(
    pattern: Pattern<'_>,
    tiles: &TileConfig,
    pair_axis: i32,
) -> bool {
    let blocks = (BACKWARD_BLOCK, BACKWARD_BLOCK);
    product_masks_fit(pattern, tiles, blocks, |axis, len, a, kernel_axis| {
        let paired = kernel_axis == pair_axis;
        let (kv_ext, q_ext) = (tiles.kv_tile[a] << paired as usize, tiles.q_tile[a]);
        (q_ext <= SM90_PRODUCT_MASK_DEPTH).then(|| most_walked_q_tiles(axis, len, kv_ext, q_ext))
    })
}

/// The checks every pass's product masks share: neighborhood attention, `tiles` of `blocks`
/// (queries, keys), masked axes the kernels' last two (the problem's leading axes of length 1
/// with tiles 1 deep there), and the walked tile origins: `walked(axis, length, a, kernel
/// axis)` gives problem axis `a`'s most walked tiles (`kernel axis`: its index among the
/// kernels' 3), or `None` where the walked tiles are too deep for the one-hot.
fn product_masks_fit(
    pattern: Pattern<'_>,
    tiles: &TileConfig,
    blocks: (usize, usize),
    walked: impl Fn(&natten_core::AxisParams, usize, usize, i32) -> Option<usize>,
) -> bool {
    let Pattern::Na(problem) = pattern else {
        return false;
    };
    let rank = problem.spatial.len();
    let block_m: usize = tiles.q_tile.iter().product();
    let block_n: usize = tiles.kv_tile.iter().product();
    if (block_m, block_n) != blocks || rank > 3 {
        return false;
    }
    // The problem's axes are the kernels' last ones (padded in front to 3).
    let first_masked = rank.saturating_sub(2);
    let flat = |a: usize| problem.spatial[a] == 1 && tiles.q_tile[a] == 1 && tiles.kv_tile[a] == 1;
    if !(0..first_masked).all(flat) {
        return false;
    }
    let mut origins = 0;
    for a in first_masked..rank {
        let kernel_axis = (3 - rank + a) as i32;
        match walked(&problem.axes[a], problem.spatial[a], a, kernel_axis) {
            Some(n) => origins += n,
            None => return false,
        }
    }
    origins <= SM90_PRODUCT_MASK_TILES
}

/// Queries and keys per tile of both backward passes (every head dim).
pub const BACKWARD_BLOCK: usize = 64;

/// Buffers of the walked tiles in the SM80-class backward passes (`kStages` in
/// `kernels/fna_backward.cuh`): two (the next tile loads under the current one's products), one
/// at head dim 256 (the shared memory of an A100 or H100 CTA).
pub fn backward_stages(kernel_dim: usize) -> usize {
    if kernel_dim > 128 { 1 } else { 2 }
}

/// Whether the SM80-class backward computes dK and dV in separate passes (head dim 256: 64 x 256
/// f32 accumulators for both would need 256 registers per thread) rather than in one dK/dV pass.
pub fn backward_splits_dk_dv(kernel_dim: usize) -> bool {
    kernel_dim > 128
}

/// Dynamic shared memory of the SM80-class backward kernels for head dim `kernel_dim`: two tiles
/// of the CTA's own rows (Q and dO, or K and V), [`backward_stages`] buffers of two tiles of the
/// walked rows, and two buffers of the LSE and delta of 64 query rows (`backward_smem_bytes` in
/// `kernels/fna_backward.cuh`).
pub fn backward_shared_bytes(kernel_dim: usize) -> u32 {
    let tiles = (2 + 2 * backward_stages(kernel_dim)) * BACKWARD_BLOCK * kernel_dim * 2;
    (tiles + 4 * BACKWARD_BLOCK * 4) as u32
}

/// Whether the Hopper backward passes at `kernel_dim` pair plan tiles: at head dim 128 both are
/// warp-specialised (`kernels/fna_backward_dq_sm90_ws.cuh`, `kernels/fna_backward_dkdv_sm90_ws.cuh`)
/// and run one CTA per two [`BACKWARD_BLOCK`]-row tiles of their side (Q tiles, KV tiles) along
/// [`FnaParams::query_pair_axis`] / [`FnaParams::key_pair_axis`], which they take as a second
/// kernel argument; at head dim 64 the one-warpgroup passes (three CTAs per SM) stay faster.
pub fn sm90_backward_pairs_tiles(kernel_dim: usize) -> bool {
    kernel_dim >= 128
}

/// Threads per CTA of the Hopper backward passes: a producer warpgroup and two consumer
/// warpgroups where they pair tiles, else one warpgroup over a [`BACKWARD_BLOCK`]-row tile
/// (`kernels/fna_backward_sm90.cuh`, `kernels/fna_backward_dkdv_sm90.cuh`).
pub fn sm90_backward_threads(kernel_dim: usize) -> u32 {
    if sm90_backward_pairs_tiles(kernel_dim) {
        384
    } else {
        128
    }
}

/// Dynamic shared memory of the Hopper dQ pass (`FnaBwdSm90Traits::kSmemBytes`, or
/// `FnaBwdDqSm90WsTraits::kSmemBytes` where it pairs tiles). The 64-query pass: the Q and dO
/// tiles, two stages of K and V tiles, the tile geometry (Q tile box and KV box, 128 bytes each;
/// the token offset of each KV tile row, 4 bytes each; the LSE and delta of each query row, 8
/// bytes each). The paired pass: two Q and two dO tiles, three stages of K and V tiles, its
/// geometry (512 bytes of boxes; the KV rows' token offsets; the LSE and delta of 128 query rows;
/// seven 8-byte mbarriers). Both hold the window-mask table ([`SM90_WINDOW_MASK_BYTES`]) and add
/// 1024 bytes to align the tiles to the 128-byte swizzle's period.
///
/// With `product_masks` (the paired pass), the product masks' blocks too: a set of
/// [`SM90_PRODUCT_MASK_TILES`] bias blocks per Q sub-tile and the one-hot block.
pub fn sm90_backward_dq_shared_bytes(kernel_dim: usize, product_masks: bool) -> u32 {
    let tile = BACKWARD_BLOCK * kernel_dim * 2;
    let masks = paired_product_mask_bytes(product_masks);
    let bytes = masks
        + if sm90_backward_pairs_tiles(kernel_dim) {
            let stages = 3;
            let geometry =
                512 + BACKWARD_BLOCK * 4 + 2 * 2 * BACKWARD_BLOCK * 4 + (1 + 2 * stages) * 8;
            (4 + 2 * stages) * tile + geometry + SM90_WINDOW_MASK_BYTES
        } else {
            let geometry = 256 + BACKWARD_BLOCK * 4 + BACKWARD_BLOCK * 8;
            (2 + 2 * 2) * tile + geometry + SM90_WINDOW_MASK_BYTES
        };
    (bytes + 1024) as u32
}

/// The product masks' shared memory in a paired backward pass (`ProductMasks::kPairedBytes`: two
/// sub-tiles' bias blocks and the one-hot block), where `product_masks`.
fn paired_product_mask_bytes(product_masks: bool) -> usize {
    if product_masks {
        2 * SM90_PRODUCT_MASK_SET_BYTES + SM90_PRODUCT_MASK_ONE_HOT_BYTES
    } else {
        0
    }
}

/// Dynamic shared memory of the Hopper dK/dV pass (`FnaBwdDkdvSm90Traits::kSmemBytes`, or
/// `FnaBwdDkdvSm90WsTraits::kSmemBytes` where it pairs tiles). The 64-key pass: the K and V
/// tiles, two stages of Q and dO tiles, the tile geometry (the KV tile box and the query box, 128
/// bytes each; the token offset of each Q tile row, 4 bytes each; two stages of the LSE and delta
/// of each query row, 16 bytes per row; the inverse window of each key row, 24 bytes each). The
/// paired pass: two K and two V tiles, three stages of Q and dO tiles, its geometry (512 bytes of
/// boxes; the Q rows' token offsets; three stages of LSE and delta; the inverse windows of 128
/// key rows; seven 8-byte mbarriers). Both hold the window-mask table
/// ([`SM90_WINDOW_MASK_BYTES`]) and add 1024 bytes to align the tiles to the 128-byte swizzle's
/// period.
///
/// With `product_masks` (the paired pass), the product masks' blocks too: a set of
/// [`SM90_PRODUCT_MASK_TILES`] bias blocks per key sub-tile and the one-hot block.
pub fn sm90_backward_dkdv_shared_bytes(kernel_dim: usize, product_masks: bool) -> u32 {
    let tile = BACKWARD_BLOCK * kernel_dim * 2;
    let masks = paired_product_mask_bytes(product_masks);
    let bytes = masks
        + if sm90_backward_pairs_tiles(kernel_dim) {
            let stages = 3;
            let geometry = 512
                + BACKWARD_BLOCK * 4
                + 2 * stages * BACKWARD_BLOCK * 4
                + 2 * BACKWARD_BLOCK * 24
                + (1 + 2 * stages) * 8;
            (4 + 2 * stages) * tile + geometry + SM90_WINDOW_MASK_BYTES
        } else {
            let geometry =
                256 + BACKWARD_BLOCK * 4 + 2 * 2 * BACKWARD_BLOCK * 4 + BACKWARD_BLOCK * 24;
            (2 + 2 * 2) * tile + geometry + SM90_WINDOW_MASK_BYTES
        };
    (bytes + 1024) as u32
}

/// Dynamic shared memory of the fused Hopper backward (`FnaBwdDkdvSm90WsTraits<.., true>`,
/// `kernels/fna_backward_fused_dq_sm90.cuh`; head dim 128 only): the paired dK/dV pass's, plus
/// both consumers' dS^T tiles (64 x 64 elements each) and f32 dQ staging (64 x 64 floats each).
pub fn sm90_backward_fused_shared_bytes(kernel_dim: usize) -> u32 {
    let fused = 2 * BACKWARD_BLOCK * BACKWARD_BLOCK * 2 + 2 * BACKWARD_BLOCK * BACKWARD_BLOCK * 4;
    sm90_backward_dkdv_shared_bytes(kernel_dim, false) + fused as u32
}

/// Default tiles of the backward passes: 64-query Q tiles over the dilation groups, 64-key KV
/// tiles over the windows.
pub fn default_backward_tiles(pattern: Pattern<'_>) -> TileConfig {
    tiles_for(pattern, BACKWARD_BLOCK, BACKWARD_BLOCK)
}

/// The tile configurations of the backward passes on a rank-`rank` problem: every Q tile and KV
/// tile whose per-axis extents are powers of two multiplying to [`BACKWARD_BLOCK`] (both passes
/// use the same pair).
pub fn backward_tile_configs(rank: usize) -> Vec<TileConfig> {
    let tiles = factorizations(rank, BACKWARD_BLOCK.trailing_zeros());
    tiles
        .iter()
        .flat_map(|q| {
            tiles.iter().map(move |kv| TileConfig {
                q_tile: q.clone(),
                kv_tile: kv.clone(),
            })
        })
        .collect()
}

/// The kernel head dim for a problem head dim, among `available` (those built).
pub fn kernel_head_dim(head_dim: usize, available: &[usize]) -> Option<usize> {
    KERNEL_HEAD_DIMS
        .into_iter()
        .find(|&d| d >= head_dim && available.contains(&d))
}

/// Every way to write `2^log2` as a product of `rank` powers of two (one extent per axis).
fn factorizations(rank: usize, log2: u32) -> Vec<Vec<usize>> {
    if rank == 1 {
        return vec![vec![1 << log2]];
    }
    (0..=log2)
        .flat_map(|first| {
            factorizations(rank - 1, log2 - first)
                .into_iter()
                .map(move |rest| [vec![1usize << first], rest].concat())
        })
        .collect()
}

/// The tile configurations of the forward kernels for head dim `kernel_dim` on a rank-`rank`
/// problem: every Q tile and KV tile whose per-axis extents are powers of two multiplying to the
/// block sizes of one of the kernels (the Q tile's size selects the kernel; with `wide`, where
/// the device runs the Hopper forward's wide form, its 128-query tiles also take
/// [`SM90_WIDE_BLOCK_N`]-key tiles).
pub fn tile_configs(rank: usize, kernel_dim: usize, wide: bool) -> Vec<TileConfig> {
    let kv_tiles = |block_n: usize| factorizations(rank, block_n.trailing_zeros());
    forward_block_m(kernel_dim)
        .iter()
        .flat_map(|&m| {
            let wide_tiles = if wide && sm90_has_wide_form(kernel_dim) && m == SM90_BLOCK_M {
                kv_tiles(SM90_WIDE_BLOCK_N)
            } else {
                Vec::new()
            };
            let kv: Vec<_> = kv_tiles(FORWARD_BLOCK_N)
                .into_iter()
                .chain(wide_tiles)
                .collect();
            factorizations(rank, m.trailing_zeros())
                .into_iter()
                .flat_map(move |q| {
                    kv.clone().into_iter().map(move |kv| TileConfig {
                        q_tile: q.clone(),
                        kv_tile: kv,
                    })
                })
        })
        .collect()
}

/// Whether a problem's default forward tiles take the Hopper forward's wide form where the
/// device runs it: attention, and 1-D windows of at least 256 keys (the measured gains; on
/// multi-dimensional tiles the wide KV tiles hold more keys outside the windows, and the 2-D
/// anchor ran slower).
pub fn prefers_wide_kv_tiles(pattern: Pattern<'_>) -> bool {
    match pattern {
        Pattern::Dense { .. } => true,
        Pattern::Na(problem) => problem.axes.len() == 1 && problem.axes[0].kernel_size >= 256,
    }
}

/// A tile of `2^log2` elements over `extents` (per axis, the group length the tile walks):
/// doubles the smallest axis that is still shorter than its extent, last axis first on ties
/// (contiguous rows), so that short axes get short tiles.
fn default_tile(extents: &[usize], log2: u32) -> Vec<usize> {
    let mut tile = vec![1usize; extents.len()];
    for _ in 0..log2 {
        let grow = (0..extents.len())
            .rev()
            .filter(|&a| tile[a] < extents[a].next_power_of_two())
            .min_by_key(|&a| tile[a])
            .unwrap_or(extents.len() - 1);
        tile[grow] *= 2;
    }
    tile
}

/// The default tile configuration of a problem: Q tiles of the largest kernel (128 queries up to
/// head dim 128: faster than 64 on every anchor problem on an H200, despite the larger KV box)
/// sized by the dilation groups' lengths, KV tiles by the window sizes; with `wide` (the device
/// runs the Hopper forward's wide form at `kernel_dim`), [`SM90_WIDE_BLOCK_N`]-key tiles where
/// [`prefers_wide_kv_tiles`].
pub fn default_tiles(pattern: Pattern<'_>, kernel_dim: usize, wide: bool) -> TileConfig {
    let block_m = forward_block_m(kernel_dim)[0];
    let wide = wide && sm90_has_wide_form(kernel_dim) && block_m == SM90_BLOCK_M;
    let block_n = if wide && prefers_wide_kv_tiles(pattern) {
        SM90_WIDE_BLOCK_N
    } else {
        FORWARD_BLOCK_N
    };
    tiles_for(pattern, block_m, block_n)
}

/// Tiles of `block_m` queries sized by the dilation groups' lengths and of `block_n` keys sized
/// by the window sizes ([`default_tile`]); one-axis tiles for attention.
fn tiles_for(pattern: Pattern<'_>, block_m: usize, block_n: usize) -> TileConfig {
    let Pattern::Na(problem) = pattern else {
        return TileConfig {
            q_tile: vec![block_m],
            kv_tile: vec![block_n],
        };
    };
    let groups: Vec<usize> = problem
        .spatial
        .iter()
        .zip(&problem.axes)
        .map(|(&len, axis)| len.div_ceil(axis.dilation))
        .collect();
    let windows: Vec<usize> = problem.axes.iter().map(|a| a.kernel_size).collect();
    TileConfig {
        q_tile: default_tile(&groups, block_m.trailing_zeros()),
        kv_tile: default_tile(&windows, block_n.trailing_zeros()),
    }
}

/// Launch parameters of every native kernel, the mirror of `FnaParams` in `kernels/fna_params.cuh` (same fields,
/// same order, C layout). Device pointers are raw `CUdeviceptr`s of burn-cuda's buffers.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct FnaParams {
    pub q: u64,
    pub k: u64,
    pub v: u64,
    pub out: u64,
    pub lse: u64,
    pub d_out: u64,
    pub dq: u64,
    pub dk: u64,
    pub dv: u64,
    pub delta: u64,
    pub dq_acc: u64,
    pub batch: i32,
    pub tokens: i32,
    pub kv_tokens: i32,
    pub heads: i32,
    pub heads_kv: i32,
    pub head_dim: i32,
    pub head_dim_v: i32,
    pub dense: i32,
    pub len: [i32; 3],
    pub kv_len: [i32; 3],
    pub kernel: [i32; 3],
    pub stride: [i32; 3],
    pub dilation: [i32; 3],
    pub causal: [i32; 3],
    pub q_tile_log2: [i32; 3],
    pub kv_tile_log2: [i32; 3],
    pub q_tiles: [i32; 3],
    pub kv_tiles: [i32; 3],
    pub scale: f32,
    pub scale_log2: f32,
    /// The persistent Hopper forward's work counter (two `u32`s, zero between launches): the
    /// device's ([`super::device::NativeDevice::item_counter`]), written in at launch.
    pub item_counter: u64,
}

// SAFETY: plain C struct of integers and floats, the kernel's by-value parameter.
unsafe impl cudarc::driver::DeviceRepr for FnaParams {}

/// Shapes of one call: Q `[batch, tokens, heads, head_dim]`, K `[batch, kv_tokens, heads_kv,
/// head_dim]`, V `[batch, kv_tokens, heads_kv, head_dim_v]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CallShape {
    pub batch: usize,
    pub tokens: usize,
    pub kv_tokens: usize,
    pub heads: usize,
    pub heads_kv: usize,
    pub head_dim: usize,
    pub head_dim_v: usize,
}

impl FnaParams {
    /// Parameters of `pattern` with tiles `tiles` (validated powers of two), pointers zero
    /// (filled at launch).
    pub fn new(pattern: Pattern<'_>, shape: CallShape, tiles: &TileConfig) -> Self {
        let mut p = Self {
            q: 0,
            k: 0,
            v: 0,
            out: 0,
            lse: 0,
            d_out: 0,
            dq: 0,
            dk: 0,
            dv: 0,
            delta: 0,
            dq_acc: 0,
            batch: shape.batch as i32,
            tokens: shape.tokens as i32,
            kv_tokens: shape.kv_tokens as i32,
            heads: shape.heads as i32,
            heads_kv: shape.heads_kv as i32,
            head_dim: shape.head_dim as i32,
            head_dim_v: shape.head_dim_v as i32,
            dense: 0,
            len: [1; 3],
            kv_len: [1; 3],
            kernel: [1; 3],
            stride: [1; 3],
            dilation: [1; 3],
            causal: [0; 3],
            q_tile_log2: [0; 3],
            kv_tile_log2: [0; 3],
            q_tiles: [1; 3],
            kv_tiles: [1; 3],
            scale: pattern.scale(),
            scale_log2: pattern.scale() * std::f32::consts::LOG2_E,
            item_counter: 0,
        };
        let problem = match pattern {
            Pattern::Na(problem) => problem,
            Pattern::Dense { causal, .. } => {
                p.dense = 1;
                p.len[2] = shape.tokens as i32;
                p.kv_len[2] = shape.kv_tokens as i32;
                p.causal[2] = causal as i32;
                p.q_tile_log2[2] = tiles.q_tile[0].trailing_zeros() as i32;
                p.kv_tile_log2[2] = tiles.kv_tile[0].trailing_zeros() as i32;
                p.q_tiles[2] = shape.tokens.div_ceil(tiles.q_tile[0]) as i32;
                p.kv_tiles[2] = shape.kv_tokens.div_ceil(tiles.kv_tile[0]) as i32;
                return p;
            }
        };
        let pad = 3 - problem.spatial.len();
        for (a, (axis, &len)) in problem.axes.iter().zip(&problem.spatial).enumerate() {
            let i = pad + a;
            p.len[i] = len as i32;
            p.kv_len[i] = len as i32;
            p.kernel[i] = axis.kernel_size as i32;
            p.stride[i] = axis.stride as i32;
            p.dilation[i] = axis.dilation as i32;
            p.causal[i] = axis.causal as i32;
            p.q_tile_log2[i] = tiles.q_tile[a].trailing_zeros() as i32;
            p.kv_tile_log2[i] = tiles.kv_tile[a].trailing_zeros() as i32;
            p.q_tiles[i] = len.div_ceil(axis.dilation).div_ceil(tiles.q_tile[a]) as i32;
            p.kv_tiles[i] = len.div_ceil(axis.dilation).div_ceil(tiles.kv_tile[a]) as i32;
        }
        p
    }

    /// The grid of the query-side kernels (forward, dQ pass): `(Q tiles x dilation groups,
    /// heads, batch)`.
    pub fn query_grid(&self) -> (u32, u32, u32) {
        let ctas = self.q_tiles.iter().product::<i32>() * self.dilation.iter().product::<i32>();
        (ctas as u32, self.heads as u32, self.batch as u32)
    }

    /// The grid of the key-side kernel (dK/dV pass): `(KV tiles x dilation groups, KV heads,
    /// batch)`.
    pub fn key_grid(&self) -> (u32, u32, u32) {
        let ctas = self.kv_tiles.iter().product::<i32>() * self.dilation.iter().product::<i32>();
        (ctas as u32, self.heads_kv as u32, self.batch as u32)
    }

    /// The axis along which a query-side pass that pairs Q tiles ([`sm90_backward_pairs_tiles`])
    /// doubles its tile: [`Self::pair_axis`] of the Q tiles against the KV tiles they walk.
    pub fn query_pair_axis(&self) -> i32 {
        self.pair_axis(self.q_tiles, self.q_tile_log2, self.kv_tile_log2)
    }

    /// The axis along which a key-side pass that pairs KV tiles ([`sm90_backward_pairs_tiles`])
    /// doubles its tile: [`Self::pair_axis`] of the KV tiles against the Q tiles they walk.
    pub fn key_pair_axis(&self) -> i32 {
        self.pair_axis(self.kv_tiles, self.kv_tile_log2, self.q_tile_log2)
    }

    /// Among the axes with at least two of a pass's own tiles (`own_tiles`, extents
    /// `2^own_log2`), the one whose walked box (in tiles of `2^walked_log2`, ignoring stride and
    /// causality) grows least when the own tile's extent doubles, ties to the later
    /// (faster-varying) axis; the last axis where no axis has two tiles, and for attention. A
    /// choice of speed only: every axis gives the same result.
    fn pair_axis(&self, own_tiles: [i32; 3], own_log2: [i32; 3], walked_log2: [i32; 3]) -> i32 {
        if self.dense != 0 {
            return 2;
        }
        let mut best = (2, f64::INFINITY);
        for a in 0..3 {
            if own_tiles[a] < 2 {
                continue;
            }
            let own = 1 << own_log2[a];
            let growth = f64::from(self.walked_tiles(a, 2 * own, walked_log2))
                / f64::from(self.walked_tiles(a, own, walked_log2));
            if growth <= best.1 {
                best = (a as i32, growth);
            }
        }
        best.0
    }

    /// The axis along which the Hopper forward halves its Q tile between its two consumer
    /// warpgroups: [`Self::split_axis`] of the Q tiles against the KV tiles they walk.
    pub fn query_split_axis(&self) -> i32 {
        self.split_axis(self.q_tile_log2, self.kv_tile_log2)
    }

    /// The axis along which a key-side pass that halves its KV tile would split it:
    /// [`Self::split_axis`] of the KV tiles against the Q tiles they walk.
    pub fn key_split_axis(&self) -> i32 {
        self.split_axis(self.kv_tile_log2, self.q_tile_log2)
    }

    /// Among the axes where a pass's own tile (extents `2^own_log2`) is at least 2 long, the one
    /// whose walked box (in tiles of `2^walked_log2`, ignoring stride and causality) shrinks most
    /// when the tile's extent halves, ties to the later (faster-varying) axis; for attention
    /// the last such axis (every key is walked whatever the split). A choice of speed only:
    /// every axis gives the same result. The last axis where the tile is a single point.
    fn split_axis(&self, own_log2: [i32; 3], walked_log2: [i32; 3]) -> i32 {
        let mut best = (2, f64::INFINITY);
        for (a, &log2) in own_log2.iter().enumerate() {
            if log2 < 1 {
                continue;
            }
            let own = 1 << log2;
            let shrink = if self.dense != 0 {
                1.0
            } else {
                f64::from(self.walked_tiles(a, own / 2, walked_log2))
                    / f64::from(self.walked_tiles(a, own, walked_log2))
            };
            if shrink <= best.1 {
                best = (a as i32, shrink);
            }
        }
        best.0
    }

    /// Tiles of extent `2^walked_log2[a]` that the windows of `extent` consecutive tokens span
    /// on axis `a` (their union is `kernel + extent - 1` long; no stride, causality or edge).
    fn walked_tiles(&self, a: usize, extent: i32, walked_log2: [i32; 3]) -> i32 {
        let walked = 1 << walked_log2[a];
        (self.kernel[a] + extent - 1 + walked - 1) / walked
    }

    /// The grid of a query-side pass that pairs Q tiles along `axis`: `(Q tile pairs x
    /// dilation groups, heads, batch)`, half the tiles on `axis` rounded up. (With the heads
    /// fastest, as [`Self::key_pair_grid`], the dQ pass ran 1% slower on the 2-D anchor and
    /// 3.5% on the 3-D one: H100, ncu, seventeenth session.)
    pub fn query_pair_grid(&self, axis: i32) -> (u32, u32, u32) {
        (
            self.pair_ctas(self.q_tiles, axis),
            self.heads as u32,
            self.batch as u32,
        )
    }

    /// The grid of a key-side pass that pairs KV tiles along `axis`: `(KV tile pairs x
    /// dilation groups x KV heads, 1, batch)`, half the tiles on `axis` rounded up; CTA `x` is
    /// KV head `x % heads_kv` of pair `x / heads_kv`. Heads fastest, the CTAs at work at once
    /// read the same few token rows of Q and dO (a row holds every head), as in the persistent
    /// forward's walk: the dK/dV pass 0.3-1% faster than with the tiles fastest on the three
    /// anchors (H100, ncu, seventeenth session).
    pub fn key_pair_grid(&self, axis: i32) -> (u32, u32, u32) {
        (
            self.pair_ctas(self.kv_tiles, axis) * self.heads_kv as u32,
            1,
            self.batch as u32,
        )
    }

    /// Pairs of `tiles` along `axis` times the dilation groups.
    fn pair_ctas(&self, tiles: [i32; 3], axis: i32) -> u32 {
        let pairs: i32 = (0..3)
            .map(|a| {
                if a == axis as usize {
                    (tiles[a] + 1) / 2
                } else {
                    tiles[a]
                }
            })
            .product();
        (pairs * self.dilation.iter().product::<i32>()) as u32
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    #[test]
    fn factorizations_cover_every_power_of_two_split() {
        assert_eq!(factorizations(1, 6), vec![vec![64]]);
        assert_eq!(
            factorizations(2, 2),
            vec![vec![1, 4], vec![2, 2], vec![4, 1]]
        );
        // compositions of 7 into 3 parts: C(9, 2)
        assert_eq!(factorizations(3, 7).len(), 36);
        assert!(
            factorizations(3, 7)
                .iter()
                .all(|f| f.iter().product::<usize>() == 128)
        );
    }

    #[test]
    fn default_tiles_follow_short_axes() {
        assert_eq!(default_tile(&[128, 128], 7), vec![8, 16]);
        assert_eq!(default_tile(&[32768], 7), vec![128]);
        assert_eq!(default_tile(&[16, 44, 80], 7), vec![4, 4, 8]);
        // an axis of length 2 takes at most 2
        assert_eq!(default_tile(&[2, 1000], 6), vec![2, 32]);
    }

    #[test]
    fn params_match_the_c_layout() {
        // 11 pointers, 8 + 10 x 3 ints, 2 floats, the work counter's pointer:
        // 88 + 152 + 8 + 8 = 256
        assert_eq!(std::mem::size_of::<FnaParams>(), 256);
        assert_eq!(std::mem::offset_of!(FnaParams, batch), 88);
        assert_eq!(std::mem::offset_of!(FnaParams, len), 120);
        assert_eq!(std::mem::offset_of!(FnaParams, scale), 240);
        assert_eq!(std::mem::offset_of!(FnaParams, item_counter), 248);
    }

    #[test]
    fn attention_runs_as_one_axis_of_all_keys() {
        let shape = CallShape {
            batch: 2,
            tokens: 300,
            kv_tokens: 70,
            heads: 4,
            heads_kv: 2,
            head_dim: 64,
            head_dim_v: 32,
        };
        let pattern = Pattern::Dense {
            causal: true,
            scale: 0.5,
        };
        let tiles = default_tiles(pattern, 64, false);
        assert_eq!(tiles.q_tile, vec![128]);
        let p = FnaParams::new(pattern, shape, &tiles);
        assert_eq!((p.dense, p.len, p.kv_len), (1, [1, 1, 300], [1, 1, 70]));
        assert_eq!(
            (p.causal, p.q_tiles, p.kv_tiles),
            ([0, 0, 1], [1, 1, 3], [1, 1, 2])
        );
        assert_eq!(p.query_grid(), (3, 4, 2));
        assert_eq!(p.key_grid(), (2, 2, 2));
    }

    #[test]
    fn sm90_shared_memory_fits_one_cta_per_sm() {
        // kernels/fna_forward_sm90.cuh (the static_asserts of kernels/fna_forward_sm90_d*.cu):
        // 2 x 32 KiB Q + 2 x 3 x 16 KiB K/V + 256 + 80 + 1560 + 1024 at head dim 128, under the
        // 227 KiB an H100 CTA may have.
        assert_eq!(sm90_shared_bytes(128, 64, false), 166_784);
        assert_eq!(sm90_shared_bytes(64, 64, false), 84_864);
        // The wide form: 2 x 32 KiB Q + 2 x 2 x 32 KiB K/V + 512 + 64 + 6192 + 1024.
        assert_eq!(sm90_shared_bytes(128, 128, false), 204_424);
        assert!(sm90_shared_bytes(128, 128, false) <= 227 * 1024);
        // Product masks: + 2 x 2 x 14 x 1 KiB bias blocks + 2 KiB one-hot.
        assert_eq!(sm90_shared_bytes(128, 64, true), 226_176);
        assert_eq!(sm90_shared_bytes(64, 64, true), 144_256);
        assert!(sm90_shared_bytes(128, 64, true) <= 227 * 1024);
    }

    /// [`na_problem`] with dilation `dilation` and causal windows where `causal`.
    fn na(spatial: &[usize], kernel: &[usize], dilation: usize, causal: bool) -> NaProblem {
        let mut problem = na_problem(spatial, kernel);
        for axis in &mut problem.axes {
            (axis.dilation, axis.causal) = (dilation, causal);
        }
        problem
    }

    #[test]
    fn product_masks_fit_the_2d_anchor_and_not_1d_or_big_windows() {
        let tiles = |q: &[usize], kv: &[usize]| TileConfig {
            q_tile: q.to_vec(),
            kv_tile: kv.to_vec(),
        };
        let anchor = na(&[128, 128], &[31, 31], 1, false);
        // 8x16 Q tiles walk 5 x 6 KV tiles of 8x8 (the interior; fewer at the borders).
        assert_eq!(
            default_tiles(Pattern::Na(&anchor), 128, false),
            tiles(&[8, 16], &[8, 8])
        );
        assert!(sm90_product_masks_fit(
            Pattern::Na(&anchor),
            &tiles(&[8, 16], &[8, 8])
        ));
        // Causal and dilated windows span no more.
        let causal = na(&[128, 128], &[31, 31], 1, true);
        assert!(sm90_product_masks_fit(
            Pattern::Na(&causal),
            &tiles(&[8, 16], &[8, 8])
        ));
        let dilated = na(&[128, 128], &[31, 31], 2, false);
        assert!(sm90_product_masks_fit(
            Pattern::Na(&dilated),
            &tiles(&[8, 16], &[8, 8])
        ));
        // KV tiles deeper than 8 on a masked axis, 64-query tiles, 1-D (64 keys deep), three
        // masked axes, walks of more than 14 origins (window 63: 9 + 10), attention: the
        // looked-up masks.
        assert!(!sm90_product_masks_fit(
            Pattern::Na(&anchor),
            &tiles(&[8, 16], &[4, 16])
        ));
        assert!(!sm90_product_masks_fit(
            Pattern::Na(&anchor),
            &tiles(&[8, 8], &[8, 8])
        ));
        let one_d = na(&[4096], &[255], 1, false);
        assert!(!sm90_product_masks_fit(
            Pattern::Na(&one_d),
            &tiles(&[128], &[64])
        ));
        let three_d = na(&[16, 44, 80], &[8, 16, 24], 1, false);
        assert!(!sm90_product_masks_fit(
            Pattern::Na(&three_d),
            &tiles(&[4, 4, 8], &[4, 4, 4])
        ));
        let big = na(&[256, 256], &[63, 63], 1, false);
        assert!(!sm90_product_masks_fit(
            Pattern::Na(&big),
            &tiles(&[8, 16], &[8, 8])
        ));
        let dense = Pattern::Dense {
            causal: false,
            scale: 1.0,
        };
        assert!(!sm90_product_masks_fit(dense, &tiles(&[128], &[64])));
        // A 3-D problem of length 1 on its first axis (KV tiles 1 deep there) has two masked
        // axes, the kernels' last two; one of length 1 on another axis does not fit.
        let flat = na(&[1, 128, 128], &[1, 31, 31], 1, false);
        assert!(sm90_product_masks_fit(
            Pattern::Na(&flat),
            &tiles(&[1, 8, 16], &[1, 8, 8])
        ));
        let flat_middle = na(&[128, 1, 128], &[31, 1, 31], 1, false);
        assert!(!sm90_product_masks_fit(
            Pattern::Na(&flat_middle),
            &tiles(&[8, 1, 16], &[8, 1, 8])
        ));
        // The dK/dV pass: 8x8 Q and KV tiles, KV tiles paired along either kernel axis (1 or
        // 2), walk at most 6 + 6 Q tile origins; not for 1-D, big windows or deep Q tiles.
        let backward = tiles(&[8, 8], &[8, 8]);
        for pair_axis in [1, 2] {
            assert!(sm90_dkdv_product_masks_fit(
                Pattern::Na(&anchor),
                &backward,
                pair_axis
            ));
            assert!(sm90_dkdv_product_masks_fit(
                Pattern::Na(&dilated),
                &backward,
                pair_axis
            ));
            assert!(!sm90_dkdv_product_masks_fit(
                Pattern::Na(&big),
                &backward,
                pair_axis
            ));
        }
        let deep = tiles(&[4, 16], &[8, 8]);
        assert!(!sm90_dkdv_product_masks_fit(Pattern::Na(&anchor), &deep, 2));
        // The dQ pass: the pair of Q tiles walks the forward's KV boxes (at most 5 + 6 here).
        for pair_axis in [1, 2] {
            assert!(sm90_dq_product_masks_fit(
                Pattern::Na(&anchor),
                &backward,
                pair_axis
            ));
            assert!(!sm90_dq_product_masks_fit(
                Pattern::Na(&big),
                &backward,
                pair_axis
            ));
        }
        let deep_keys = tiles(&[8, 8], &[4, 16]);
        assert!(!sm90_dq_product_masks_fit(
            Pattern::Na(&anchor),
            &deep_keys,
            2
        ));
        assert!(!sm90_dkdv_product_masks_fit(
            Pattern::Na(&one_d),
            &tiles(&[64], &[64]),
            2
        ));
        // Near a border, where windows shift inward, a key is seen by more queries: the KV
        // tile of keys 24..32 by queries 0..47 (6 tiles), as many as keys 16..32.
        assert_eq!(most_walked_q_tiles(&anchor.axes[0], 128, 8, 8), 6);
        assert_eq!(most_walked_q_tiles(&anchor.axes[0], 128, 16, 8), 6);
        // The walk starts at its box's first key: window 31 over 8-wide Q tiles spans 38 keys,
        // 5 KV tiles of 8, and over 16-wide ones 46 keys, 6 tiles.
        let axis = &anchor.axes[0];
        assert_eq!(most_walked_kv_tiles(axis, 128, 8, 8), 5);
        assert_eq!(most_walked_kv_tiles(axis, 128, 16, 8), 6);
    }

    #[test]
    fn wide_kv_tiles_go_with_128_query_tiles_where_built() {
        let narrow = tile_configs(2, 128, false);
        let wide = tile_configs(2, 128, true);
        let keys = |c: &TileConfig| c.kv_tile.iter().product::<usize>();
        let queries = |c: &TileConfig| c.q_tile.iter().product::<usize>();
        assert!(narrow.iter().all(|c| keys(c) == FORWARD_BLOCK_N));
        // 8 Q tiles of 128 x 8 KV tiles of 128 added to the 64-key configurations.
        assert_eq!(wide.len(), narrow.len() + 8 * 8);
        assert!(
            wide.iter()
                .filter(|c| keys(c) == SM90_WIDE_BLOCK_N)
                .all(|c| queries(c) == SM90_BLOCK_M)
        );
        // Defaults: wide for attention and long 1-D windows, where the device has the form.
        let dense = Pattern::Dense {
            causal: false,
            scale: 1.0,
        };
        assert_eq!(default_tiles(dense, 128, true).kv_tile, vec![128]);
        assert_eq!(default_tiles(dense, 128, false).kv_tile, vec![64]);
        assert_eq!(default_tiles(dense, 64, true).kv_tile, vec![64]);
        let one_d = na_problem(&[32768], &[2048]);
        assert_eq!(
            default_tiles(Pattern::Na(&one_d), 128, true).kv_tile,
            vec![128]
        );
        let short = na_problem(&[32768], &[255]);
        assert_eq!(
            default_tiles(Pattern::Na(&short), 128, true).kv_tile,
            vec![64]
        );
        let two_d = na_problem(&[128, 128], &[31, 31]);
        assert_eq!(
            default_tiles(Pattern::Na(&two_d), 128, true).kv_tile,
            vec![8, 8]
        );
    }

    #[test]
    fn sm90_backward_dq_shared_memory_fits() {
        // The static_asserts of kernels/fna_backward_sm90_d*.cu. Head dim 64, the 64-query pass
        // (kernels/fna_backward_sm90.cuh): 2 x 8 KiB Q/dO + 2 x 2 x 8 KiB K/V + 1024 + 1560 + 1024,
        // built for three CTAs per SM (__launch_bounds__(128, 3)); an H100 SM has 228 KiB, 1 KiB
        // of it reserved per CTA.
        assert_eq!(sm90_backward_dq_shared_bytes(64, false), 52_760);
        assert!(3 * (sm90_backward_dq_shared_bytes(64, false) + 1024) <= 228 * 1024);
        // Head dim 128, the paired pass (kernels/fna_backward_dq_sm90_ws.cuh): 4 x 16 KiB Q/dO +
        // 2 x 3 x 16 KiB K/V + 1848 + 1560 + 1024, one CTA per SM.
        assert_eq!(sm90_backward_dq_shared_bytes(128, false), 168_272);
        assert!(sm90_backward_dq_shared_bytes(128, false) <= 227 * 1024);
        // Product masks (kernels/fna_backward_sm90_d128.cu): + 2 x 14 KiB bias blocks + 2 KiB.
        assert_eq!(sm90_backward_dq_shared_bytes(128, true), 168_272 + 30_720);
        assert!(sm90_backward_dq_shared_bytes(128, true) <= 227 * 1024);
    }

    #[test]
    fn sm90_backward_dkdv_shared_memory_fits() {
        // The static_asserts of kernels/fna_backward_sm90_d*.cu. Head dim 64, the 64-key pass
        // (kernels/fna_backward_dkdv_sm90.cuh): 2 x 8 KiB K/V + 2 x 2 x 8 KiB Q/dO + 3072 + 1560 + 1024,
        // three CTAs per H100 SM (228 KiB, 1 KiB reserved per CTA). Head dim 128, the paired
        // pass (kernels/fna_backward_dkdv_sm90_ws.cuh): 4 x 16 KiB K/V + 2 x 3 x 16 KiB Q/dO +
        // 5432 + 1560 + 1024, one CTA per SM, under the 227 KiB a block may opt into.
        assert_eq!(sm90_backward_dkdv_shared_bytes(64, false), 54_808);
        assert!(3 * (sm90_backward_dkdv_shared_bytes(64, false) + 1024) <= 228 * 1024);
        assert_eq!(sm90_backward_dkdv_shared_bytes(128, false), 171_856);
        assert!(sm90_backward_dkdv_shared_bytes(128, false) <= 227 * 1024);
        // Product masks (kernels/fna_backward_sm90_d128.cu): + 2 x 14 KiB bias blocks + 2 KiB.
        assert_eq!(sm90_backward_dkdv_shared_bytes(128, true), 171_856 + 30_720);
        assert!(sm90_backward_dkdv_shared_bytes(128, true) <= 227 * 1024);
        assert_eq!(sm90_backward_threads(128), 384);
        assert_eq!(sm90_backward_threads(64), 128);
        // The fused backward (kernels/fna_backward_fused_sm90_d128.cu): + 2 x 8 KiB dS^T + 2 x
        // 16 KiB f32 staging.
        assert_eq!(sm90_backward_fused_shared_bytes(128), 221_008);
        assert!(sm90_backward_fused_shared_bytes(128) <= 227 * 1024);
    }

    /// A neighborhood attention problem: windows `kernel`, stride and dilation 1, not causal.
    fn na_problem(spatial: &[usize], kernel: &[usize]) -> NaProblem {
        NaProblem {
            spatial: spatial.to_vec(),
            axes: kernel
                .iter()
                .map(|&kernel_size| natten_core::AxisParams {
                    kernel_size,
                    stride: 1,
                    dilation: 1,
                    causal: false,
                })
                .collect(),
            scale: 1.0,
            backend: crate::NaBackend::Auto,
            tiles: None,
            backward_tiles: None,
        }
    }

    /// Parameters of a neighborhood attention problem (16 heads, head dim 128) with the given
    /// tiles (the tensor_map tests use it too).
    pub(crate) fn na_params(
        spatial: &[usize],
        kernel: &[usize],
        q_tile: &[usize],
        kv_tile: &[usize],
    ) -> FnaParams {
        let problem = na_problem(spatial, kernel);
        let tokens = spatial.iter().product();
        let shape = CallShape {
            batch: 1,
            tokens,
            kv_tokens: tokens,
            heads: 16,
            heads_kv: 16,
            head_dim: 128,
            head_dim_v: 128,
        };
        let tiles = TileConfig {
            q_tile: q_tile.to_vec(),
            kv_tile: kv_tile.to_vec(),
        };
        FnaParams::new(Pattern::Na(&problem), shape, &tiles)
    }

    #[test]
    fn key_pairs_follow_the_axis_whose_query_box_grows_least() {
        // 1-D anchor: only one axis has tiles.
        let p = na_params(&[32768], &[2048], &[64], &[64]);
        assert_eq!(p.key_pair_axis(), 2);
        assert_eq!(p.key_pair_grid(2), (256 * 16, 1, 1));
        // 2-D anchor, 8x8 tiles, window 31: doubling either axis takes the box from 38 to 46
        // rows (5 to 6 Q tiles), a tie, which goes to the last axis.
        let p = na_params(&[128, 128], &[31, 31], &[8, 8], &[8, 8]);
        assert_eq!(p.key_pair_axis(), 2);
        assert_eq!(p.key_pair_grid(2), (16 * 8 * 16, 1, 1));
        // 3-D anchor, 4x4x4 tiles, window 8x16x24: 27 -> 31 rows on the last axis (7 -> 8 Q
        // tiles) grows least (11 -> 15 rows, 3 -> 4 tiles, on the first).
        let p = na_params(&[16, 44, 80], &[8, 16, 24], &[4, 4, 4], &[4, 4, 4]);
        assert_eq!(p.key_pair_axis(), 2);
        assert_eq!(p.key_pair_grid(2), (4 * 11 * 10 * 16, 1, 1));
        // A tall tile on the last axis makes another axis cheaper to double.
        let p = na_params(&[64, 64], &[7, 7], &[4, 16], &[2, 32]);
        assert_eq!(p.key_pair_axis(), 1);
        assert_eq!(p.key_pair_grid(1), (16 * 2 * 16, 1, 1));
        // Odd tile counts round up: the last pair holds one tile.
        let p = na_params(&[192], &[7], &[64], &[64]);
        assert_eq!(p.key_pair_grid(p.key_pair_axis()), (2 * 16, 1, 1));
        // No axis with two tiles: the last axis.
        let p = na_params(&[40], &[7], &[64], &[64]);
        assert_eq!(p.key_pair_axis(), 2);
    }

    #[test]
    fn query_pairs_follow_the_axis_whose_kv_box_grows_least() {
        // The anchors pair Q tiles on the last axis too (the roles of the key pairs' test
        // swapped: the KV box of a doubled Q tile against that of one tile).
        let p = na_params(&[32768], &[2048], &[64], &[64]);
        assert_eq!(
            (p.query_pair_axis(), p.query_pair_grid(2)),
            (2, (256, 16, 1))
        );
        let p = na_params(&[128, 128], &[31, 31], &[8, 8], &[8, 8]);
        assert_eq!(
            (p.query_pair_axis(), p.query_pair_grid(2)),
            (2, (16 * 8, 16, 1))
        );
        let p = na_params(&[16, 44, 80], &[8, 16, 24], &[4, 4, 4], &[4, 4, 4]);
        assert_eq!(
            (p.query_pair_axis(), p.query_pair_grid(2)),
            (2, (4 * 11 * 10, 16, 1))
        );
        // A Q tile tall on the last axis walking short KV tiles: doubling the first axis grows
        // the KV box by 1.5x (2 -> 3 tiles), the last by 1.67x (3 -> 5).
        let p = na_params(&[64, 64], &[7, 7], &[2, 32], &[4, 16]);
        assert_eq!(
            (p.query_pair_axis(), p.query_pair_grid(1)),
            (1, (16 * 2, 16, 1))
        );
    }

    #[test]
    fn forward_halves_split_the_axis_whose_kv_box_shrinks_most() {
        // The anchors' default forward tiles (kernels/fna_forward_sm90.cuh halves them between
        // its consumer warpgroups). 1-D: 128 -> 64 queries, 34 -> 33 KV tiles.
        assert_eq!(
            na_params(&[32768], &[2048], &[128], &[64]).query_split_axis(),
            2
        );
        // 2-D 8x16 over 8x8 KV tiles, window 31: halving the last axis takes the box from 46 to
        // 38 columns (6 -> 5 KV tiles); the first stays at 5 tiles (38 -> 34 rows).
        let p = na_params(&[128, 128], &[31, 31], &[8, 16], &[8, 8]);
        assert_eq!(p.query_split_axis(), 2);
        // The same tile transposed: the other axis; and the key side's mirror.
        let p = na_params(&[128, 128], &[31, 31], &[16, 8], &[8, 8]);
        assert_eq!(p.query_split_axis(), 1);
        let p = na_params(&[128, 128], &[31, 31], &[8, 8], &[16, 8]);
        assert_eq!(p.key_split_axis(), 1);
        // 3-D 4x4x8 over 4x4x4, window 8x16x24: the last axis, 8 -> 7 KV tiles (the others
        // keep theirs: a tie between the first two is no shrink).
        let p = na_params(&[16, 44, 80], &[8, 16, 24], &[4, 4, 8], &[4, 4, 4]);
        assert_eq!(p.query_split_axis(), 2);
        // Never an axis of extent 1: a 128-query tile 1 x 128 splits the last axis.
        let p = na_params(&[64, 256], &[63, 7], &[1, 128], &[1, 64]);
        assert_eq!(p.query_split_axis(), 2);
        // Attention walks every key whatever the split: its one axis, the last.
        let shape = CallShape {
            batch: 1,
            tokens: 8192,
            kv_tokens: 8192,
            heads: 16,
            heads_kv: 16,
            head_dim: 128,
            head_dim_v: 128,
        };
        let tiles = TileConfig {
            q_tile: vec![128],
            kv_tile: vec![64],
        };
        let dense = Pattern::Dense {
            causal: true,
            scale: 1.0,
        };
        assert_eq!(FnaParams::new(dense, shape, &tiles).query_split_axis(), 2);
    }

    #[test]
    fn backward_shared_memory_fits() {
        // kernels/fna_backward.cuh at head dim 128: 2 x 16 KiB own tiles + 2 x 2 x 16 KiB walked
        // tiles + 1 KiB of LSE and delta: two CTAs per H100 SM (228 KiB, 1 KiB reserved per
        // CTA), and under the 99 KiB per-block limit of SM86/SM89.
        assert_eq!(backward_shared_bytes(128), 99_328);
        for dim in [32, 64, 128] {
            assert!(2 * (backward_shared_bytes(dim) + 1024) <= 228 * 1024);
            assert!(backward_shared_bytes(dim) <= 99 * 1024);
        }
        // Head dim 256, one buffer of walked tiles (the static_assert of
        // kernels/fna_backward_d256.cu): 2 x 32 KiB own + 2 x 32 KiB walked + 1 KiB, under an
        // A100's 163 KiB per block (the loader leaves it out on devices with less).
        assert_eq!(backward_shared_bytes(256), 132_096);
        assert!(backward_shared_bytes(256) <= 163 * 1024);
        assert!(backward_splits_dk_dv(256) && !backward_splits_dk_dv(128));
    }

    #[test]
    fn backward_configs_multiply_to_the_block() {
        let configs = backward_tile_configs(2);
        assert_eq!(configs.len(), 49);
        assert!(
            configs
                .iter()
                .all(|c| c.q_tile.iter().product::<usize>() == 64
                    && c.kv_tile.iter().product::<usize>() == 64)
        );
    }
}
