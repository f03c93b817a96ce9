//! Tile iteration and masking for the tiled kernels (design.md section 4), without a permutation
//! copy: tiles live in *group-local* coordinates, so a tile never mixes dilation groups.
//!
//! - A **Q tile** is a box of `q_tile[a]` group-local queries per axis inside one dilation group
//!   per axis; the cube at `CUBE_POS_X` owns one (groups and tiles flattened, tile fastest).
//! - Its **KV box** is `[window_start(first query), window_end(last query))` per axis (both are
//!   monotone in the query: natten-core's proptests check it), walked in **KV tiles** of
//!   `kv_tile[a]` keys per axis.
//! - A KV tile is **full** when every query of the Q tile sees every key of it: then the kernel
//!   skips per-element masking (the block-sparse fast path). It is full when the Q tile has no
//!   padding rows, the KV tile has no padding keys, and the KV tile lies inside
//!   `[window_start(last query), window_end(first query))` on every axis.
//!
//! Rows of a Q tile and keys of a KV tile are numbered row-major over the tile's box.

use cubecl::prelude::*;

use super::forward::ForwardBlocks;
use super::kernel_args::NaGeometry;
use super::window::{group_len, window_end, window_start};

/// Per-axis tile shapes (padded to 3 axes like [`NaGeometry`]) and the number of Q tiles per
/// axis in the longest dilation group.
#[derive(CubeLaunch, CubeType)]
pub struct TileShape {
    pub q0: u32,
    pub q1: u32,
    pub q2: u32,
    pub kv0: u32,
    pub kv1: u32,
    pub kv2: u32,
    pub tiles0: u32,
    pub tiles1: u32,
    pub tiles2: u32,
}

/// Where a cube's Q tile lies: per axis `[group, group length, first query, end query]`
/// (group-local, `end` clipped to the group), flattened as `4 * axis + field`.
#[cube]
pub fn q_tile_box(geometry: &NaGeometry, tiles: &TileShape, cube: u32) -> Array<u32> {
    let g = geometry;
    let t = tiles;
    let mut x = cube;
    let t2 = x % t.tiles2;
    x /= t.tiles2;
    let t1 = x % t.tiles1;
    x /= t.tiles1;
    let t0 = x % t.tiles0;
    x /= t.tiles0;
    let g2 = x % g.dilation2;
    x /= g.dilation2;
    let g1 = x % g.dilation1;
    let g0 = x / g.dilation1;
    let mut out = Array::<u32>::new(12usize);
    fill_axis(
        &mut out,
        0usize,
        g0,
        group_len(g.len0, g.dilation0, g0),
        t0 * t.q0,
        t.q0,
    );
    fill_axis(
        &mut out,
        1usize,
        g1,
        group_len(g.len1, g.dilation1, g1),
        t1 * t.q1,
        t.q1,
    );
    fill_axis(
        &mut out,
        2usize,
        g2,
        group_len(g.len2, g.dilation2, g2),
        t2 * t.q2,
        t.q2,
    );
    out
}

#[cube]
fn fill_axis(
    out: &mut Array<u32>,
    #[comptime] axis: usize,
    group: u32,
    glen: u32,
    first: u32,
    tile: u32,
) {
    let end = if first + tile < glen {
        first + tile
    } else {
        glen
    };
    let base = comptime!(4 * axis);
    out[base] = group;
    out[base + 1] = glen;
    out[base + 2] = first;
    out[base + 3] = end;
}

/// Whether the Q tile has any query (tiles past the end of a short dilation group are empty).
#[cube]
pub fn q_tile_is_empty(qbox: &Array<u32>) -> bool {
    qbox[2] >= qbox[3] || qbox[6] >= qbox[7] || qbox[10] >= qbox[11]
}

/// The KV box of a Q tile and its "inner" box (keys every query sees), per axis
/// `[box_lo, box_hi, inner_lo, inner_hi]` flattened as `4 * axis + field`.
#[cube]
pub fn kv_box(
    geometry: &NaGeometry,
    qbox: &Array<u32>,
    #[comptime] causal0: bool,
    #[comptime] causal1: bool,
    #[comptime] causal2: bool,
) -> Array<u32> {
    let g = geometry;
    let mut out = Array::<u32>::new(12usize);
    kv_axis(&mut out, 0usize, qbox, g.kernel0, g.stride0, causal0);
    kv_axis(&mut out, 1usize, qbox, g.kernel1, g.stride1, causal1);
    kv_axis(&mut out, 2usize, qbox, g.kernel2, g.stride2, causal2);
    out
}

#[cube]
fn kv_axis(
    out: &mut Array<u32>,
    #[comptime] axis: usize,
    qbox: &Array<u32>,
    kernel: u32,
    stride: u32,
    #[comptime] causal: bool,
) {
    let base = comptime!(4 * axis);
    let glen = qbox[base + 1];
    let first = qbox[base + 2];
    let last = qbox[base + 3] - 1;
    let first_start = window_start(first, glen, kernel, stride, causal);
    let last_start = window_start(last, glen, kernel, stride, causal);
    out[base] = first_start;
    out[base + 1] = window_end(last, glen, kernel, last_start, causal);
    out[base + 2] = last_start;
    out[base + 3] = window_end(first, glen, kernel, first_start, causal);
}

/// The KV tiles of the KV box `kb`: `[count, tiles on axis 1, tiles on axis 2]` (tile `t` is at
/// `unflatten3(t, n1, n2)` in tile units).
#[cube]
pub fn kv_tile_grid(kb: &Array<u32>, tiles: &TileShape) -> Array<u32> {
    let mut grid = Array::<u32>::new(3usize);
    grid[1] = tile_count(kb[4], kb[5], tiles.kv1);
    grid[2] = tile_count(kb[8], kb[9], tiles.kv2);
    grid[0] = tile_count(kb[0], kb[1], tiles.kv0) * grid[1] * grid[2];
    grid
}

/// How many of the `dense` keys the Q tile `qbox` sees: all, or with `causal` (FMHA, whose Q
/// tiles are 1-D over axis 2) those up to its last query.
#[cube]
pub fn dense_keys_seen(qbox: &Array<u32>, dense: usize, #[comptime] causal: bool) -> usize {
    let mut end = dense;
    if causal {
        let q_end = qbox[11] as usize;
        if q_end < dense {
            end = q_end;
        }
    }
    end
}

/// Number of tiles of length `tile` covering `[lo, hi)`.
#[cube]
#[allow(clippy::manual_div_ceil)]
pub fn tile_count(lo: u32, hi: u32, tile: u32) -> u32 {
    (hi - lo + tile - 1) / tile
}

/// Row-major coordinates of entry `index` of a `[s0, s1, s2]` box, as `[c0, c1, c2]`.
#[cube]
pub fn unflatten3(index: u32, s1: u32, s2: u32) -> Array<u32> {
    let mut c = Array::<u32>::new(3usize);
    c[2] = index % s2;
    c[1] = (index / s2) % s1;
    c[0] = index / (s2 * s1);
    c
}

/// Whether query row `r` sees key `c` of a tile that is not full.
#[cube]
pub fn sees(
    rows: &QueryRows,
    keys: &KeyTile,
    r: usize,
    c: usize,
    #[comptime] mask: TileMask,
) -> bool {
    match mask {
        TileMask::Neighborhood => keys.ok[c] == 1 && row_sees_key(&rows.window, &keys.pos, r, c),
        TileMask::Dense => keys.ok[c] == 1,
        TileMask::DenseCausal => keys.ok[c] == 1 && keys.pos[c * 3] <= rows.token[r],
    }
}

/// Which per-element mask a KV tile needs when it is not full.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TileMask {
    /// Neighbourhood keys: the key must lie in the query's window on every axis.
    Neighborhood,
    /// Dense keys (extra KV tokens, non-causal FMHA): only padding keys are masked.
    Dense,
    /// Causal FMHA: key index <= query index.
    DenseCausal,
}

/// Whether query row `r` (windows in `row_window`, 6 per row) sees key `c` (group-local
/// coordinates in `key_pos`, 3 per key).
#[cube]
pub fn row_sees_key(
    row_window: &SharedMemory<u32>,
    key_pos: &SharedMemory<u32>,
    r: usize,
    c: usize,
) -> bool {
    let mut ok = true;
    #[unroll]
    for a in 0..3usize {
        let j = key_pos[c * 3 + a];
        let w = r * 6 + 2 * a;
        ok = ok && row_window[w] <= j && j < row_window[w + 1];
    }
    ok
}

/// Shared per-row data of a Q tile: whether the row is a query (not padding), its token (flat
/// index over the spatial grid, or the query index for FMHA), and its window per axis
/// (`[start, end)` group-local, 6 per row; neighbourhood only).
#[derive(CubeType)]
pub struct QueryRows {
    pub ok: SharedMemory<u32>,
    pub token: SharedMemory<u32>,
    pub window: SharedMemory<u32>,
}

/// Shared per-key data of a KV tile: whether the key exists (not padding), its row in the K/V
/// tensors (`(batch * tokens + key) * heads_kv + head_kv`), and its group-local coordinates
/// (3 per key; for dense keys, the key index in the first).
#[derive(CubeType)]
pub struct KeyTile {
    pub ok: SharedMemory<u32>,
    pub row: SharedMemory<u32>,
    pub pos: SharedMemory<u32>,
}

/// Shared arrays for `block_q` query rows; `windows`: with room for their per-axis windows
/// (neighbourhood masking).
#[cube]
pub fn shared_query_rows(#[comptime] block_q: usize, #[comptime] windows: bool) -> QueryRows {
    QueryRows {
        ok: SharedMemory::<u32>::new(block_q),
        token: SharedMemory::<u32>::new(block_q),
        window: SharedMemory::<u32>::new(comptime!(if windows { block_q * 6 } else { 1 })),
    }
}

/// Shared arrays for a tile of `block_kv` keys.
#[cube]
pub fn shared_key_tile(#[comptime] block_kv: usize) -> KeyTile {
    KeyTile {
        ok: SharedMemory::<u32>::new(block_kv),
        row: SharedMemory::<u32>::new(block_kv),
        pos: SharedMemory::<u32>::new(block_kv * 3),
    }
}

/// Fills `rows` for the Q tile `qbox`. Ends without a sync.
#[cube]
#[allow(clippy::too_many_arguments)]
pub fn query_rows(
    geometry: &NaGeometry,
    tiles: &TileShape,
    qbox: &Array<u32>,
    rows: &mut QueryRows,
    #[comptime] has_neighborhood: bool,
    #[comptime] causal0: bool,
    #[comptime] causal1: bool,
    #[comptime] causal2: bool,
    #[comptime] block_q: usize,
    #[comptime] units: usize,
) {
    let g = geometry;
    for it in 0..comptime!(block_q.div_ceil(units)) {
        let r = it * units + UNIT_POS as usize;
        if r < block_q {
            let c = unflatten3(r as u32, tiles.q1, tiles.q2);
            let i0 = qbox[2] + c[0];
            let i1 = qbox[6] + c[1];
            let i2 = qbox[10] + c[2];
            let ok = i0 < qbox[3] && i1 < qbox[7] && i2 < qbox[11];
            let x0 = i0 * g.dilation0 + qbox[0];
            let x1 = i1 * g.dilation1 + qbox[4];
            let x2 = i2 * g.dilation2 + qbox[8];
            let mut flag = 0u32;
            let mut token = 0u32;
            if ok {
                flag = 1;
                token = (x0 * g.len1 + x1) * g.len2 + x2;
            }
            rows.ok[r] = flag;
            rows.token[r] = token;
            if has_neighborhood && ok {
                row_axis_window(rows, r, 0usize, i0, qbox[1], g.kernel0, g.stride0, causal0);
                row_axis_window(rows, r, 1usize, i1, qbox[5], g.kernel1, g.stride1, causal1);
                row_axis_window(rows, r, 2usize, i2, qbox[9], g.kernel2, g.stride2, causal2);
            }
        }
    }
}

#[cube]
#[allow(clippy::too_many_arguments)]
fn row_axis_window(
    rows: &mut QueryRows,
    r: usize,
    #[comptime] axis: usize,
    i: u32,
    glen: u32,
    kernel: u32,
    stride: u32,
    #[comptime] causal: bool,
) {
    let start = window_start(i, glen, kernel, stride, causal);
    let at = r * 6 + comptime!(2 * axis);
    rows.window[at] = start;
    rows.window[at + 1] = window_end(i, glen, kernel, start, causal);
}

/// Fills `keys` for KV tile `kc` (tile coordinates inside the KV box `kb`) of the Q tile `qbox`;
/// returns whether the tile is full. Ends without a sync.
#[cube]
#[allow(clippy::too_many_arguments)]
pub fn neighborhood_key_tile(
    geometry: &NaGeometry,
    tiles: &TileShape,
    qbox: &Array<u32>,
    kb: &Array<u32>,
    kc: &Array<u32>,
    keys: &mut KeyTile,
    row_base: usize,
    heads_kv: usize,
    head_kv: usize,
    #[comptime] block_kv: usize,
    #[comptime] units: usize,
) -> bool {
    let g = geometry;
    let lo0 = kb[0] + kc[0] * tiles.kv0;
    let lo1 = kb[4] + kc[1] * tiles.kv1;
    let lo2 = kb[8] + kc[2] * tiles.kv2;
    let end0 = lo0 + tiles.kv0;
    let end1 = lo1 + tiles.kv1;
    let end2 = lo2 + tiles.kv2;
    let whole = end0 <= kb[1] && end1 <= kb[5] && end2 <= kb[9];
    let inner = lo0 >= kb[2]
        && end0 <= kb[3]
        && lo1 >= kb[6]
        && end1 <= kb[7]
        && lo2 >= kb[10]
        && end2 <= kb[11];
    for it in 0..comptime!(block_kv.div_ceil(units)) {
        let c = it * units + UNIT_POS as usize;
        if c < block_kv {
            let cc = unflatten3(c as u32, tiles.kv1, tiles.kv2);
            let j0 = lo0 + cc[0];
            let j1 = lo1 + cc[1];
            let j2 = lo2 + cc[2];
            let ok = j0 < kb[1] && j1 < kb[5] && j2 < kb[9];
            let y0 = j0 * g.dilation0 + qbox[0];
            let y1 = j1 * g.dilation1 + qbox[4];
            let y2 = j2 * g.dilation2 + qbox[8];
            let key = ((y0 * g.len1 + y1) * g.len2 + y2) as usize;
            let mut flag = 0u32;
            let mut row = 0u32;
            if ok {
                flag = 1;
                row = ((row_base + key) * heads_kv + head_kv) as u32;
            }
            keys.ok[c] = flag;
            keys.row[c] = row;
            keys.pos[c * 3] = j0;
            keys.pos[c * 3 + 1] = j1;
            keys.pos[c * 3 + 2] = j2;
        }
    }
    whole && inner
}

/// Fills `keys` for dense tile `kt` (keys `[kt * block_kv, ..)` below `end`); returns whether
/// the tile has no padding. Ends without a sync.
#[cube]
#[allow(clippy::too_many_arguments)]
pub fn dense_key_tile(
    keys: &mut KeyTile,
    kt: usize,
    end: usize,
    row_base: usize,
    heads_kv: usize,
    head_kv: usize,
    #[comptime] block_kv: usize,
    #[comptime] units: usize,
) -> bool {
    for it in 0..comptime!(block_kv.div_ceil(units)) {
        let c = it * units + UNIT_POS as usize;
        if c < block_kv {
            let key = kt * block_kv + c;
            let ok = key < end;
            let mut flag = 0u32;
            let mut row = 0u32;
            if ok {
                flag = 1;
                row = ((row_base + key) * heads_kv + head_kv) as u32;
            }
            keys.ok[c] = flag;
            keys.row[c] = row;
            keys.pos[c * 3] = key as u32;
        }
    }
    (kt + 1) * block_kv <= end
}

/// Stages `rows` rows of `dim` elements into `dst` (rows `stride` apart, zeros for padding rows):
/// row `r` is `src[((row_base + index[r]) * heads + head) * dim ..]`. `unroll` unrolls the
/// loop so that every unit has all its loads in flight at once. Ends without a sync.
#[cube]
#[allow(clippy::too_many_arguments)]
pub fn load_rows<F: Float>(
    src: &Tensor<F>,
    dst: &mut SharedMemory<F>,
    ok: &SharedMemory<u32>,
    index: &SharedMemory<u32>,
    row_base: usize,
    heads: usize,
    head: usize,
    #[comptime] rows: usize,
    #[comptime] dim: usize,
    #[comptime] stride: usize,
    #[comptime] units: usize,
    #[comptime] unroll: bool,
) {
    #[unroll(unroll)]
    for it in 0..comptime!((rows * dim).div_ceil(units)) {
        let e = it * units + UNIT_POS as usize;
        if e < rows * dim {
            let r = e / dim;
            let mut value = F::new(0.0);
            if ok[r] == 1 {
                let row = (row_base + index[r] as usize) * heads + head;
                value = src[row * dim + e % dim];
            }
            dst[r * stride + e % dim] = value;
        }
    }
}

/// Stages the K and V rows of the key tile `keys` into `k_buf` / `v_buf` (rows padded as
/// [`ForwardBlocks::ld`]; zeros for padding keys). No sync inside.
#[cube]
pub fn stage_keys<F: Float>(
    k: &Tensor<F>,
    v: &Tensor<F>,
    k_buf: &mut SharedMemory<F>,
    v_buf: &mut SharedMemory<F>,
    keys: &KeyTile,
    #[comptime] blocks: ForwardBlocks,
) {
    let (bk, d, dv, units) = (
        blocks.block_kv,
        blocks.head_dim,
        blocks.head_dim_v,
        blocks.units,
    );
    load_rows::<F>(
        k,
        k_buf,
        &keys.ok,
        &keys.row,
        0usize,
        1usize,
        0usize,
        bk,
        d,
        comptime!(blocks.ld(d)),
        units,
        blocks.unroll,
    );
    load_rows::<F>(
        v,
        v_buf,
        &keys.ok,
        &keys.row,
        0usize,
        1usize,
        0usize,
        bk,
        dv,
        comptime!(blocks.ld(dv)),
        units,
        blocks.unroll,
    );
}
