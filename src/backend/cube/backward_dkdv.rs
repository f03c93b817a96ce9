//! Backward, dK/dV pass without atomics, tiled: one cube per (KV tile, KV head, batch) walks the
//! Q tiles that can see its keys, for every query head of the KV head's group (GQA summed in
//! the cube), and accumulates `dV = P^T dO`, `dK = scale * dS^T Q` in shared memory.
//!
//! Neighbourhood keys: the KV tile is a box of group-local keys (the launch's `TileShape` holds
//! the KV tile shape in its `q*` fields and the Q tile shape in its `kv*` fields); its queries
//! are the box `[first query that sees the first key, last query that sees the last key]` per
//! axis. Dense keys (extra KV tokens, FMHA): a run of `block_kv` keys against every query (from
//! the first key on, when causal) in 1-D tiles of `block_q` tokens.

use cubecl::prelude::*;

use super::backward_dq::stage_query_side;
use super::forward::ForwardBlocks;
use super::kernel_args::NaGeometry;
use super::tile::{
    KeyTile, QueryRows, TileMask, TileShape, dense_key_tile, neighborhood_key_tile, q_tile_box,
    q_tile_is_empty, query_rows, sees, shared_key_tile, shared_query_rows, stage_keys, tile_count,
    unflatten3,
};
use super::tile_matmul::{TileProduct, rows_by_keys, tile_product};
use super::window::{inverse_window, window_end, window_start};

/// Shared-memory buffers of one dK/dV cube.
#[derive(CubeType)]
pub struct DkdvStage<F: Float> {
    pub k: SharedMemory<F>,
    pub v: SharedMemory<F>,
    pub q: SharedMemory<F>,
    pub d_out: SharedMemory<F>,
    /// Scores `[block_q, block_kv]`.
    pub s: SharedMemory<f32>,
    /// `dO V^T`, `[block_q, block_kv]`.
    pub dp: SharedMemory<f32>,
    /// `P` and `dS` in `F`, `[block_q, block_kv]`.
    pub p: SharedMemory<F>,
    pub ds: SharedMemory<F>,
    /// Accumulators `[block_kv, d]` and `[block_kv, d_v]`.
    pub dk: SharedMemory<f32>,
    pub dv: SharedMemory<f32>,
    pub row_lse: SharedMemory<f32>,
    pub row_delta: SharedMemory<f32>,
}

#[cube]
fn new_stage<F: Float>(#[comptime] blocks: ForwardBlocks) -> DkdvStage<F> {
    let bq = blocks.block_q;
    let bk = blocks.block_kv;
    let d = blocks.head_dim;
    let dv = blocks.head_dim_v;
    DkdvStage::<F> {
        k: SharedMemory::<F>::new(comptime!(bk * blocks.ld(d))),
        v: SharedMemory::<F>::new(comptime!(bk * blocks.ld(dv))),
        q: SharedMemory::<F>::new(comptime!(bq * blocks.ld(d))),
        d_out: SharedMemory::<F>::new(comptime!(bq * blocks.ld(dv))),
        s: SharedMemory::<f32>::new(comptime!(bq * blocks.ld32(bk))),
        dp: SharedMemory::<f32>::new(comptime!(bq * blocks.ld32(bk))),
        p: SharedMemory::<F>::new(comptime!(bq * blocks.ld(bk))),
        ds: SharedMemory::<F>::new(comptime!(bq * blocks.ld(bk))),
        dk: SharedMemory::<f32>::new(comptime!(bk * blocks.ld32(d))),
        dv: SharedMemory::<f32>::new(comptime!(bk * blocks.ld32(dv))),
        row_lse: SharedMemory::<f32>::new(bq),
        row_delta: SharedMemory::<f32>::new(bq),
    }
}

#[cube(launch)]
#[allow(clippy::too_many_arguments)]
pub fn dkdv_neighborhood_kernel<F: Float>(
    q: &Tensor<F>,
    k: &Tensor<F>,
    v: &Tensor<F>,
    d_out: &Tensor<F>,
    lse: &Tensor<f32>,
    delta: &Tensor<f32>,
    dk: &mut Tensor<F>,
    dv: &mut Tensor<F>,
    geometry: NaGeometry,
    tiles: TileShape,
    scale: f32,
    #[comptime] causal0: bool,
    #[comptime] causal1: bool,
    #[comptime] causal2: bool,
    #[comptime] blocks: ForwardBlocks,
    #[define(F)] _dtype: StorageType,
) {
    let kbox = q_tile_box(&geometry, &tiles, CUBE_POS_X);
    if q_tile_is_empty(&kbox) {
        terminate!();
    }
    let b = CUBE_POS_Z as usize;
    let head_kv = CUBE_POS_Y as usize;
    let tokens = q.shape(1);
    let heads = q.shape(2);
    let heads_kv = k.shape(2);
    let units = blocks.units;
    // Roles swapped: keys are the outer tile, queries the inner one.
    let swapped = TileShape {
        q0: tiles.kv0,
        q1: tiles.kv1,
        q2: tiles.kv2,
        kv0: tiles.q0,
        kv1: tiles.q1,
        kv2: tiles.q2,
        tiles0: tiles.tiles0,
        tiles1: tiles.tiles1,
        tiles2: tiles.tiles2,
    };
    let mut stage = new_stage::<F>(blocks);
    let mut rows = shared_query_rows(blocks.block_q, true);
    let mut keys = shared_key_tile(blocks.block_kv);

    // The key box as a "KV box" with one tile: `[first, end)` per axis.
    let mut kb = Array::<u32>::new(12usize);
    let mut zero = Array::<u32>::new(3usize);
    #[unroll]
    for a in 0..3usize {
        kb[4 * a] = kbox[4 * a + 2];
        kb[4 * a + 1] = kbox[4 * a + 3];
        kb[4 * a + 2] = 0;
        kb[4 * a + 3] = 0;
        zero[a] = 0;
    }
    neighborhood_key_tile(
        &geometry,
        &swapped,
        &kbox,
        &kb,
        &zero,
        &mut keys,
        b * tokens,
        heads_kv,
        head_kv,
        blocks.block_kv,
        units,
    );
    zero_accumulators::<F>(&mut stage, blocks);
    sync_cube();
    stage_keys::<F>(k, v, &mut stage.k, &mut stage.v, &keys, blocks);

    let qb = query_box(&geometry, &kbox, causal0, causal1, causal2);
    let n1 = tile_count(qb[2], qb[3], swapped.q1);
    let n2 = tile_count(qb[4], qb[5], swapped.q2);
    let count = tile_count(qb[0], qb[1], swapped.q0) * n1 * n2;
    for qt in 0..count {
        let tc = unflatten3(qt, n1, n2);
        let mut qbox = Array::<u32>::new(12usize);
        inner_axis(&mut qbox, 0usize, &kbox, &qb, tc[0], swapped.q0);
        inner_axis(&mut qbox, 1usize, &kbox, &qb, tc[1], swapped.q1);
        inner_axis(&mut qbox, 2usize, &kbox, &qb, tc[2], swapped.q2);
        let full = sees_whole_box(&geometry, &qbox, &kb, causal0, causal1, causal2);
        for head in 0..heads / heads_kv {
            sync_cube();
            query_rows(
                &geometry,
                &swapped,
                &qbox,
                &mut rows,
                true,
                causal0,
                causal1,
                causal2,
                blocks.block_q,
                units,
            );
            sync_cube();
            query_tile::<F>(
                q,
                d_out,
                lse,
                delta,
                &mut stage,
                &rows,
                &keys,
                b * tokens,
                heads,
                head_kv * (heads / heads_kv) + head,
                scale,
                full,
                TileMask::Neighborhood,
                blocks,
            );
        }
    }
    sync_cube();
    store_gradients::<F>(dk, dv, &stage, &keys, scale, blocks);
}

#[cube(launch)]
#[allow(clippy::too_many_arguments)]
pub fn dkdv_dense_kernel<F: Float>(
    q: &Tensor<F>,
    k: &Tensor<F>,
    v: &Tensor<F>,
    d_out: &Tensor<F>,
    lse: &Tensor<f32>,
    delta: &Tensor<f32>,
    dk: &mut Tensor<F>,
    dv: &mut Tensor<F>,
    scale: f32,
    #[comptime] causal: bool,
    #[comptime] blocks: ForwardBlocks,
    #[define(F)] _dtype: StorageType,
) {
    let b = CUBE_POS_Z as usize;
    let head_kv = CUBE_POS_Y as usize;
    let kt = CUBE_POS_X as usize;
    let tokens = q.shape(1);
    let heads = q.shape(2);
    let dense = k.shape(1);
    let heads_kv = k.shape(2);
    let bq = blocks.block_q;
    let units = blocks.units;
    let mut stage = new_stage::<F>(blocks);
    let mut rows = shared_query_rows(bq, false);
    let mut keys = shared_key_tile(blocks.block_kv);
    let full_keys = dense_key_tile(
        &mut keys,
        kt,
        dense,
        b * dense,
        heads_kv,
        head_kv,
        blocks.block_kv,
        units,
    );
    zero_accumulators::<F>(&mut stage, blocks);
    sync_cube();
    stage_keys::<F>(k, v, &mut stage.k, &mut stage.v, &keys, blocks);
    let mut first_tile = 0usize;
    if causal {
        first_tile = kt * blocks.block_kv / bq;
    }
    for qt in first_tile..tokens.div_ceil(bq) {
        for head in 0..heads / heads_kv {
            sync_cube();
            #[unroll(blocks.unroll)]
            for it in 0..comptime!(bq.div_ceil(units)) {
                let r = it * units + UNIT_POS as usize;
                if r < bq {
                    let token = qt * bq + r;
                    let mut ok = 0u32;
                    if token < tokens {
                        ok = 1;
                    }
                    rows.ok[r] = ok;
                    rows.token[r] = token as u32;
                }
            }
            sync_cube();
            if causal {
                query_tile::<F>(
                    q,
                    d_out,
                    lse,
                    delta,
                    &mut stage,
                    &rows,
                    &keys,
                    b * tokens,
                    heads,
                    head_kv * (heads / heads_kv) + head,
                    scale,
                    false,
                    TileMask::DenseCausal,
                    blocks,
                );
            } else {
                query_tile::<F>(
                    q,
                    d_out,
                    lse,
                    delta,
                    &mut stage,
                    &rows,
                    &keys,
                    b * tokens,
                    heads,
                    head_kv * (heads / heads_kv) + head,
                    scale,
                    full_keys,
                    TileMask::Dense,
                    blocks,
                );
            }
        }
    }
    sync_cube();
    store_gradients::<F>(dk, dv, &stage, &keys, scale, blocks);
}

/// Axis `axis` of the `tile`-th Q tile (of extent `tile`) inside the query box `qb`, in the
/// key box's group.
#[cube]
fn inner_axis(
    qbox: &mut Array<u32>,
    #[comptime] axis: usize,
    kbox: &Array<u32>,
    qb: &Array<u32>,
    index: u32,
    tile: u32,
) {
    let base = comptime!(4 * axis);
    let at = comptime!(2 * axis);
    let first = qb[at] + index * tile;
    let mut end = first + tile;
    if end > qb[at + 1] {
        end = qb[at + 1];
    }
    qbox[base] = kbox[base];
    qbox[base + 1] = kbox[base + 1];
    qbox[base + 2] = first;
    qbox[base + 3] = end;
}

/// Per axis `[lo, hi)` (flattened `2 * axis + field`): the queries of the key box's group that
/// see at least one key of it (windows are monotone, so the first key's first viewer to the
/// last key's last viewer).
#[cube]
fn query_box(
    geometry: &NaGeometry,
    kbox: &Array<u32>,
    #[comptime] causal0: bool,
    #[comptime] causal1: bool,
    #[comptime] causal2: bool,
) -> Array<u32> {
    let g = geometry;
    let mut out = Array::<u32>::new(6usize);
    query_axis(
        &mut out,
        0usize,
        kbox,
        g.len0,
        g.kernel0,
        g.stride0,
        g.dilation0,
        causal0,
    );
    query_axis(
        &mut out,
        1usize,
        kbox,
        g.len1,
        g.kernel1,
        g.stride1,
        g.dilation1,
        causal1,
    );
    query_axis(
        &mut out,
        2usize,
        kbox,
        g.len2,
        g.kernel2,
        g.stride2,
        g.dilation2,
        causal2,
    );
    out
}

#[cube]
#[allow(clippy::too_many_arguments)]
fn query_axis(
    out: &mut Array<u32>,
    #[comptime] axis: usize,
    kbox: &Array<u32>,
    len: u32,
    kernel: u32,
    stride: u32,
    dilation: u32,
    #[comptime] causal: bool,
) {
    let base = comptime!(4 * axis);
    let group = kbox[base];
    let first = kbox[base + 2] * dilation + group;
    let last = (kbox[base + 3] - 1) * dilation + group;
    let lo_first = inverse_window(first, len, kernel, stride, dilation, causal);
    let lo_last = inverse_window(last, len, kernel, stride, dilation, causal);
    let mut lo = lo_first[1];
    if lo_last[1] < lo {
        lo = lo_last[1];
    }
    let mut hi = lo_first[2];
    if lo_last[2] > hi {
        hi = lo_last[2];
    }
    if hi < lo {
        hi = lo;
    }
    let at = comptime!(2 * axis);
    out[at] = lo;
    out[at + 1] = hi;
}

/// Whether every query of `qbox` sees every key of the key box `kb` (`[first, end)` at
/// `4 * axis`): the keys lie in `[start(last query), end(first query))` on every axis.
#[cube]
fn sees_whole_box(
    geometry: &NaGeometry,
    qbox: &Array<u32>,
    kb: &Array<u32>,
    #[comptime] causal0: bool,
    #[comptime] causal1: bool,
    #[comptime] causal2: bool,
) -> bool {
    let g = geometry;
    inside(qbox, kb, 0usize, g.kernel0, g.stride0, causal0)
        && inside(qbox, kb, 1usize, g.kernel1, g.stride1, causal1)
        && inside(qbox, kb, 2usize, g.kernel2, g.stride2, causal2)
}

#[cube]
fn inside(
    qbox: &Array<u32>,
    kb: &Array<u32>,
    #[comptime] axis: usize,
    kernel: u32,
    stride: u32,
    #[comptime] causal: bool,
) -> bool {
    let base = comptime!(4 * axis);
    let glen = qbox[base + 1];
    let first = qbox[base + 2];
    let last = qbox[base + 3] - 1;
    let first_start = window_start(first, glen, kernel, stride, causal);
    let first_end = window_end(first, glen, kernel, first_start, causal);
    let last_start = window_start(last, glen, kernel, stride, causal);
    kb[base] >= last_start && kb[base + 1] <= first_end
}

#[cube]
fn zero_accumulators<F: Float>(stage: &mut DkdvStage<F>, #[comptime] blocks: ForwardBlocks) {
    let units = blocks.units;
    let bk = blocks.block_kv;
    #[unroll(blocks.unroll)]
    for it in 0..comptime!((bk * blocks.ld32(blocks.head_dim)).div_ceil(units)) {
        let e = it * units + UNIT_POS as usize;
        if e < comptime!(bk * blocks.ld32(blocks.head_dim)) {
            stage.dk[e] = 0.0;
        }
    }
    #[unroll(blocks.unroll)]
    for it in 0..comptime!((bk * blocks.ld32(blocks.head_dim_v)).div_ceil(units)) {
        let e = it * units + UNIT_POS as usize;
        if e < comptime!(bk * blocks.ld32(blocks.head_dim_v)) {
            stage.dv[e] = 0.0;
        }
    }
}

/// One Q tile (one query head) against the cube's keys. Starts after a sync that published
/// `rows`; ends with one.
#[cube]
#[allow(clippy::too_many_arguments)]
fn query_tile<F: Float>(
    q: &Tensor<F>,
    d_out: &Tensor<F>,
    lse: &Tensor<f32>,
    delta: &Tensor<f32>,
    stage: &mut DkdvStage<F>,
    rows: &QueryRows,
    keys: &KeyTile,
    q_row_base: usize,
    heads: usize,
    head: usize,
    scale: f32,
    full: bool,
    #[comptime] mask: TileMask,
    #[comptime] blocks: ForwardBlocks,
) {
    let bq = blocks.block_q;
    let bk = blocks.block_kv;
    let d = blocks.head_dim;
    let dv = blocks.head_dim_v;
    let units = blocks.units;
    stage_query_side::<F>(
        q,
        d_out,
        lse,
        delta,
        rows,
        &mut stage.q,
        &mut stage.d_out,
        &mut stage.row_lse,
        &mut stage.row_delta,
        q_row_base,
        heads,
        head,
        blocks,
    );
    sync_cube();
    rows_by_keys::<F>(&stage.q, &stage.k, &mut stage.s, d, blocks);
    rows_by_keys::<F>(&stage.d_out, &stage.v, &mut stage.dp, dv, blocks);
    sync_cube();
    #[unroll(blocks.unroll)]
    for it in 0..comptime!((bq * bk).div_ceil(units)) {
        let e = it * units + UNIT_POS as usize;
        if e < bq * bk {
            let r = e / bk;
            let c = e % bk;
            let mut p = 0.0f32;
            // Full tiles skip the mask (CubeCL's `||` would evaluate it anyway).
            let mut seen = true;
            if !full {
                seen = sees(rows, keys, r, c, mask);
            }
            let at = r * comptime!(blocks.ld32(bk)) + c;
            if seen {
                p = (stage.s[at] * scale - stage.row_lse[r]).exp();
            }
            let at_p = r * comptime!(blocks.ld(bk)) + c;
            stage.p[at_p] = F::cast_from(p);
            stage.ds[at_p] = F::cast_from(p * (stage.dp[at] - stage.row_delta[r]));
        }
    }
    sync_cube();
    let d_values = comptime!(TileProduct {
        m: bk,
        n: dv,
        k: bq,
        a_t: true,
        b_t: false,
        lda: blocks.ld(bk),
        ldb: blocks.ld(dv),
        ldc: blocks.ld32(dv),
        accumulate: true,
        cmma: blocks.cmma,
        units,
    });
    tile_product::<F>(&stage.p, &stage.d_out, &mut stage.dv, d_values);
    let d_keys = comptime!(TileProduct {
        m: bk,
        n: d,
        k: bq,
        a_t: true,
        b_t: false,
        lda: blocks.ld(bk),
        ldb: blocks.ld(d),
        ldc: blocks.ld32(d),
        accumulate: true,
        cmma: blocks.cmma,
        units,
    });
    tile_product::<F>(&stage.ds, &stage.q, &mut stage.dk, d_keys);
    sync_cube();
}

/// Writes `dK = scale * acc` and `dV` for the cube's keys. Starts after a sync.
#[cube]
fn store_gradients<F: Float>(
    dk: &mut Tensor<F>,
    dv: &mut Tensor<F>,
    stage: &DkdvStage<F>,
    keys: &KeyTile,
    scale: f32,
    #[comptime] blocks: ForwardBlocks,
) {
    let (bk, d, d_v, units) = (
        blocks.block_kv,
        blocks.head_dim,
        blocks.head_dim_v,
        blocks.units,
    );
    #[unroll(blocks.unroll)]
    for it in 0..comptime!((bk * d).div_ceil(units)) {
        let e = it * units + UNIT_POS as usize;
        if e < bk * d {
            let c = e / d;
            if keys.ok[c] == 1 {
                let at = keys.row[c] as usize * d + e % d;
                dk[at] = F::cast_from(stage.dk[c * comptime!(blocks.ld32(d)) + e % d] * scale);
            }
        }
    }
    #[unroll(blocks.unroll)]
    for it in 0..comptime!((bk * d_v).div_ceil(units)) {
        let e = it * units + UNIT_POS as usize;
        if e < bk * d_v {
            let c = e / d_v;
            if keys.ok[c] == 1 {
                let at = keys.row[c] as usize * d_v + e % d_v;
                dv[at] = F::cast_from(stage.dv[c * comptime!(blocks.ld32(d_v)) + e % d_v]);
            }
        }
    }
}
