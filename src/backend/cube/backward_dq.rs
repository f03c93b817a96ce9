//! Backward, dQ pass, tiled like the forward: one cube per (Q tile, head, batch) walks the same
//! KV tiles (neighbourhood box, then dense keys) and accumulates
//! `dQ = scale * dS K` with `P = exp(scale * Q K^T - lse)`, `dS = P * (dO V^T - delta)`.

use cubecl::prelude::*;

use super::forward::ForwardBlocks;
use super::kernel_args::NaGeometry;
use super::tile::{
    KeyTile, QueryRows, TileMask, TileShape, dense_key_tile, dense_keys_seen, kv_box, kv_tile_grid,
    load_rows, neighborhood_key_tile, q_tile_box, q_tile_is_empty, query_rows, sees,
    shared_key_tile, shared_query_rows, stage_keys, unflatten3,
};
use super::tile_matmul::{TileProduct, rows_by_keys, tile_product};

/// Shared-memory buffers of one dQ cube.
#[derive(CubeType)]
pub struct DqStage<F: Float> {
    pub q: SharedMemory<F>,
    pub d_out: SharedMemory<F>,
    pub k: SharedMemory<F>,
    pub v: SharedMemory<F>,
    /// Scores `[block_q, block_kv]`.
    pub s: SharedMemory<f32>,
    /// `dO V^T`, `[block_q, block_kv]`.
    pub dp: SharedMemory<f32>,
    /// `dS` in `F` (the `dS K` operand).
    pub ds: SharedMemory<F>,
    /// `[block_q, d]` accumulator.
    pub dq: SharedMemory<f32>,
    pub row_lse: SharedMemory<f32>,
    pub row_delta: SharedMemory<f32>,
}

#[cube(launch)]
#[allow(clippy::too_many_arguments)]
pub fn dq_kernel<F: Float>(
    q: &Tensor<F>,
    k: &Tensor<F>,
    v: &Tensor<F>,
    dense_k: &Tensor<F>,
    dense_v: &Tensor<F>,
    d_out: &Tensor<F>,
    lse: &Tensor<f32>,
    delta: &Tensor<f32>,
    dq: &mut Tensor<F>,
    geometry: NaGeometry,
    tiles: TileShape,
    heads_kv: u32,
    dense_tokens: u32,
    scale: f32,
    #[comptime] causal0: bool,
    #[comptime] causal1: bool,
    #[comptime] causal2: bool,
    #[comptime] has_neighborhood: bool,
    #[comptime] dense_causal: bool,
    #[comptime] blocks: ForwardBlocks,
    #[define(F)] _dtype: StorageType,
) {
    let qbox = q_tile_box(&geometry, &tiles, CUBE_POS_X);
    if q_tile_is_empty(&qbox) {
        terminate!();
    }
    let b = CUBE_POS_Z as usize;
    let head = CUBE_POS_Y as usize;
    let heads = q.shape(2);
    let tokens = q.shape(1);
    let head_kv = head / (heads / heads_kv as usize);
    let bq = blocks.block_q;
    let bk = blocks.block_kv;
    let d = blocks.head_dim;
    let dv = blocks.head_dim_v;
    let units = blocks.units;

    let mut stage = DqStage::<F> {
        q: SharedMemory::<F>::new(comptime!(bq * blocks.ld(d))),
        d_out: SharedMemory::<F>::new(comptime!(bq * blocks.ld(dv))),
        k: SharedMemory::<F>::new(comptime!(bk * blocks.ld(d))),
        v: SharedMemory::<F>::new(comptime!(bk * blocks.ld(dv))),
        s: SharedMemory::<f32>::new(comptime!(bq * blocks.ld32(bk))),
        dp: SharedMemory::<f32>::new(comptime!(bq * blocks.ld32(bk))),
        ds: SharedMemory::<F>::new(comptime!(bq * blocks.ld(bk))),
        dq: SharedMemory::<f32>::new(comptime!(bq * blocks.ld32(d))),
        row_lse: SharedMemory::<f32>::new(bq),
        row_delta: SharedMemory::<f32>::new(bq),
    };
    let mut rows = shared_query_rows(bq, true);
    let mut keys = shared_key_tile(bk);

    query_rows(
        &geometry,
        &tiles,
        &qbox,
        &mut rows,
        has_neighborhood,
        causal0,
        causal1,
        causal2,
        bq,
        units,
    );
    #[unroll(blocks.unroll)]
    for it in 0..comptime!((bq * blocks.ld32(d)).div_ceil(units)) {
        let e = it * units + UNIT_POS as usize;
        if e < comptime!(bq * blocks.ld32(d)) {
            stage.dq[e] = 0.0;
        }
    }
    sync_cube();
    let q_row_base = b * tokens;
    stage_query_side::<F>(
        q,
        d_out,
        lse,
        delta,
        &rows,
        &mut stage.q,
        &mut stage.d_out,
        &mut stage.row_lse,
        &mut stage.row_delta,
        q_row_base,
        heads,
        head,
        blocks,
    );

    if has_neighborhood {
        let kb = kv_box(&geometry, &qbox, causal0, causal1, causal2);
        let grid = kv_tile_grid(&kb, &tiles);
        for kt in 0..grid[0] {
            let kc = unflatten3(kt, grid[1], grid[2]);
            let full = neighborhood_key_tile(
                &geometry,
                &tiles,
                &qbox,
                &kb,
                &kc,
                &mut keys,
                q_row_base,
                heads_kv as usize,
                head_kv,
                bk,
                units,
            );
            sync_cube();
            dq_tile::<F>(
                k,
                v,
                &mut stage,
                &rows,
                &keys,
                scale,
                full,
                TileMask::Neighborhood,
                blocks,
            );
        }
    }

    let dense = dense_tokens as usize;
    let dense_end = dense_keys_seen(&qbox, dense, dense_causal);
    let dense_mask = comptime!(if dense_causal {
        TileMask::DenseCausal
    } else {
        TileMask::Dense
    });
    for kt in 0..dense_end.div_ceil(bk) {
        let mut full = dense_key_tile(
            &mut keys,
            kt,
            dense_end,
            b * dense,
            heads_kv as usize,
            head_kv,
            bk,
            units,
        );
        if dense_causal {
            full = false;
        }
        sync_cube();
        dq_tile::<F>(
            dense_k, dense_v, &mut stage, &rows, &keys, scale, full, dense_mask, blocks,
        );
    }

    #[unroll(blocks.unroll)]
    for it in 0..comptime!((bq * d).div_ceil(units)) {
        let e = it * units + UNIT_POS as usize;
        if e < bq * d {
            let r = e / d;
            let col = e % d;
            if rows.ok[r] == 1 {
                let row = (q_row_base + rows.token[r] as usize) * heads + head;
                let acc = stage.dq[r * comptime!(blocks.ld32(d)) + col];
                dq[row * d + col] = F::cast_from(acc * scale);
            }
        }
    }
}

/// One KV tile of the dQ pass. Starts after a `sync_cube` that published `keys`; ends with one.
#[cube]
#[allow(clippy::too_many_arguments)]
fn dq_tile<F: Float>(
    k: &Tensor<F>,
    v: &Tensor<F>,
    stage: &mut DqStage<F>,
    rows: &QueryRows,
    keys: &KeyTile,
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
    stage_keys::<F>(k, v, &mut stage.k, &mut stage.v, keys, blocks);
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
            let mut ds = 0.0f32;
            // Full tiles skip the mask (CubeCL's `||` would evaluate it anyway).
            let mut seen = true;
            if !full {
                seen = sees(rows, keys, r, c, mask);
            }
            let at = r * comptime!(blocks.ld32(bk)) + c;
            if seen {
                let p = (stage.s[at] * scale - stage.row_lse[r]).exp();
                ds = p * (stage.dp[at] - stage.row_delta[r]);
            }
            stage.ds[r * comptime!(blocks.ld(bk)) + c] = F::cast_from(ds);
        }
    }
    sync_cube();
    let dq_product = comptime!(TileProduct {
        m: bq,
        n: d,
        k: bk,
        a_t: false,
        b_t: false,
        lda: blocks.ld(bk),
        ldb: blocks.ld(d),
        ldc: blocks.ld32(d),
        accumulate: true,
        cmma: blocks.cmma,
        units,
    });
    tile_product::<F>(&stage.ds, &stage.k, &mut stage.dq, dq_product);
    sync_cube();
}

/// Stages what the backward reads per query row of a Q tile (one head): Q and dO rows, LSE and
/// delta (padding rows get LSE = 1e30, so their `P = exp(S - LSE)` is 0). No sync inside.
#[cube]
#[allow(clippy::too_many_arguments)]
pub fn stage_query_side<F: Float>(
    q: &Tensor<F>,
    d_out: &Tensor<F>,
    lse: &Tensor<f32>,
    delta: &Tensor<f32>,
    rows: &QueryRows,
    q_buf: &mut SharedMemory<F>,
    d_out_buf: &mut SharedMemory<F>,
    row_lse: &mut SharedMemory<f32>,
    row_delta: &mut SharedMemory<f32>,
    q_row_base: usize,
    heads: usize,
    head: usize,
    #[comptime] blocks: ForwardBlocks,
) {
    let bq = blocks.block_q;
    let units = blocks.units;
    #[unroll(blocks.unroll)]
    for it in 0..comptime!(bq.div_ceil(units)) {
        let r = it * units + UNIT_POS as usize;
        if r < bq {
            let mut lse_r = 1.0e30f32;
            let mut delta_r = 0.0f32;
            if rows.ok[r] == 1 {
                let row = (q_row_base + rows.token[r] as usize) * heads + head;
                lse_r = lse[row];
                delta_r = delta[row];
            }
            row_lse[r] = lse_r;
            row_delta[r] = delta_r;
        }
    }
    let d = blocks.head_dim;
    let dv = blocks.head_dim_v;
    load_rows::<F>(
        q,
        q_buf,
        &rows.ok,
        &rows.token,
        q_row_base,
        heads,
        head,
        bq,
        d,
        comptime!(blocks.ld(d)),
        units,
        blocks.unroll,
    );
    load_rows::<F>(
        d_out,
        d_out_buf,
        &rows.ok,
        &rows.token,
        q_row_base,
        heads,
        head,
        bq,
        dv,
        comptime!(blocks.ld(dv)),
        units,
        blocks.unroll,
    );
}
