//! Fused tiled forward (flash attention over block-sparse KV tiles).
//!
//! One cube per (Q tile, head, batch) = (`CUBE_POS_X`, `CUBE_POS_Y`, `CUBE_POS_Z`). The Q tile is
//! staged in shared memory once; the cube then walks the KV tiles of the tile's neighbourhood box
//! ([`super::tile`]) and then the dense keys (extra KV tokens, or all keys for FMHA) in tiles of
//! `block_kv` keys. Per KV tile: stage K and V, `S = Q K^T` (tensor cores through `cmma` when the
//! launch enables it, else scalar), masked online softmax in f32 (masking skipped on full tiles),
//! `O = O * correction + P V`. The output accumulator lives in shared memory in f32.
//!
//! Layouts (contiguous, heads-last): Q `[b, n, h, d]`, K `[b, n, h_kv, d]`,
//! V `[b, n, h_kv, d_v]`, dense K/V `[b, s, h_kv, _]`, out `[b, n, h, d_v]`, LSE `[b, n, h]`.

use cubecl::prelude::*;

use super::kernel_args::NaGeometry;
use super::tile::{
    KeyTile, QueryRows, TileMask, TileShape, dense_key_tile, dense_keys_seen, kv_box, kv_tile_grid,
    load_rows, neighborhood_key_tile, q_tile_box, q_tile_is_empty, query_rows, sees,
    shared_key_tile, shared_query_rows, stage_keys, unflatten3,
};
use super::tile_matmul::{TileProduct, padded, rows_by_keys, tile_product};

/// Scores below this are "no key" (WGSL has no -inf literal).
pub const NO_SCORE: f32 = -1.0e30;

/// Comptime shape of a forward launch.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ForwardBlocks {
    pub head_dim: usize,
    pub head_dim_v: usize,
    pub block_q: usize,
    pub block_kv: usize,
    /// Units per cube.
    pub units: usize,
    /// `S` and `P V` on tensor cores (16x16x16 `cmma`, one plane of 32 per 16 query rows).
    pub cmma: bool,
    /// Bytes per element of the input dtype (row padding of the shared tiles).
    pub elem_bytes: usize,
    /// Unroll the per-unit loops (loads in flight together); off where shader compile time
    /// matters more (WGSL, lavapipe).
    pub unroll: bool,
}

impl ForwardBlocks {
    /// Row stride of a shared tile of `cols` input-dtype columns.
    pub fn ld(&self, cols: usize) -> usize {
        padded(cols, self.elem_bytes)
    }

    /// Row stride of a shared tile of `cols` f32 columns.
    pub fn ld32(&self, cols: usize) -> usize {
        padded(cols, 4)
    }
}

/// Shared-memory buffers of one cube (rows padded: [`padded`]).
#[derive(CubeType)]
pub struct Stage<F: Float> {
    pub q: SharedMemory<F>,
    pub k: SharedMemory<F>,
    pub v: SharedMemory<F>,
    /// Scores `[block_q, block_kv]` f32.
    pub s: SharedMemory<f32>,
    /// Probabilities `[block_q, block_kv]` in `F` (the `P V` operand, as in FlashAttention).
    pub p: SharedMemory<F>,
    /// Output accumulator `[block_q, d_v]` f32.
    pub o: SharedMemory<f32>,
    pub row_max: SharedMemory<f32>,
    pub row_sum: SharedMemory<f32>,
    pub row_corr: SharedMemory<f32>,
}

#[cube(launch)]
#[allow(clippy::too_many_arguments)]
// Nested `if`s guard reads: CubeCL's `&&` does not short-circuit.
#[allow(clippy::collapsible_if)]
pub fn na_forward_kernel<F: Float>(
    q: &Tensor<F>,
    k: &Tensor<F>,
    v: &Tensor<F>,
    dense_k: &Tensor<F>,
    dense_v: &Tensor<F>,
    out: &mut Tensor<F>,
    lse: &mut Tensor<f32>,
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

    let mut stage = Stage::<F> {
        q: SharedMemory::<F>::new(comptime!(bq * blocks.ld(d))),
        k: SharedMemory::<F>::new(comptime!(bk * blocks.ld(d))),
        v: SharedMemory::<F>::new(comptime!(bk * blocks.ld(dv))),
        s: SharedMemory::<f32>::new(comptime!(bq * blocks.ld32(bk))),
        p: SharedMemory::<F>::new(comptime!(bq * blocks.ld(bk))),
        o: SharedMemory::<f32>::new(comptime!(bq * blocks.ld32(dv))),
        row_max: SharedMemory::<f32>::new(bq),
        row_sum: SharedMemory::<f32>::new(bq),
        row_corr: SharedMemory::<f32>::new(bq),
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
        blocks.units,
    );
    #[unroll(blocks.unroll)]
    for it in 0..comptime!(bq.div_ceil(blocks.units)) {
        let r = it * blocks.units + UNIT_POS as usize;
        if r < bq {
            stage.row_max[r] = NO_SCORE;
            stage.row_sum[r] = 0.0;
        }
    }
    #[unroll(blocks.unroll)]
    for it in 0..comptime!((bq * blocks.ld32(dv)).div_ceil(blocks.units)) {
        let e = it * blocks.units + UNIT_POS as usize;
        if e < comptime!(bq * blocks.ld32(dv)) {
            stage.o[e] = 0.0;
        }
    }
    sync_cube();
    let q_row_base = b * tokens;
    load_rows::<F>(
        q,
        &mut stage.q,
        &rows.ok,
        &rows.token,
        q_row_base,
        heads,
        head,
        bq,
        d,
        comptime!(blocks.ld(d)),
        blocks.units,
        blocks.unroll,
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
                b * tokens,
                heads_kv as usize,
                head_kv,
                bk,
                blocks.units,
            );
            sync_cube();
            attend_tile::<F>(
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
            blocks.units,
        );
        if dense_causal {
            full = false;
        }
        sync_cube();
        attend_tile::<F>(
            dense_k, dense_v, &mut stage, &rows, &keys, scale, full, dense_mask, blocks,
        );
    }

    #[unroll(blocks.unroll)]
    for it in 0..comptime!((bq * dv).div_ceil(blocks.units)) {
        let e = it * blocks.units + UNIT_POS as usize;
        if e < bq * dv {
            let r = e / dv;
            let col = e % dv;
            if rows.ok[r] == 1 {
                let row = (q_row_base + rows.token[r] as usize) * heads + head;
                let acc = stage.o[r * comptime!(blocks.ld32(dv)) + col];
                out[row * dv + col] = F::cast_from(acc / stage.row_sum[r]);
            }
        }
    }
    #[unroll(blocks.unroll)]
    for it in 0..comptime!(bq.div_ceil(blocks.units)) {
        let r = it * blocks.units + UNIT_POS as usize;
        // CubeCL's `&&` does not short-circuit: guard the shared read with its own `if`.
        if r < bq {
            if rows.ok[r] == 1 {
                let row = (q_row_base + rows.token[r] as usize) * heads + head;
                lse[row] = stage.row_max[r] + stage.row_sum[r].ln();
            }
        }
    }
}

/// One KV tile: stage K/V rows, scores, masked online-softmax update, `O = O * corr + P V`.
/// Starts after a `sync_cube` that published `keys`; ends with one.
#[cube]
#[allow(clippy::too_many_arguments)]
// Nested `if`s: CubeCL's `&&` does not short-circuit, and full tiles must skip the mask.
#[allow(clippy::collapsible_if)]
fn attend_tile<F: Float>(
    k: &Tensor<F>,
    v: &Tensor<F>,
    stage: &mut Stage<F>,
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
    sync_cube();

    // One unit per query row; each row's columns are visited from a row-dependent start
    // (`(i + r) % bk`), so that the units of a plane read different banks.
    let lds = comptime!(blocks.ld32(bk));
    let ldp = comptime!(blocks.ld(bk));
    #[unroll(blocks.unroll)]
    for it in 0..comptime!(bq.div_ceil(units)) {
        let r = it * units + UNIT_POS as usize;
        if r < bq {
            let max_old = stage.row_max[r];
            let mut max_new = max_old;
            #[unroll(blocks.unroll)]
            for i in 0..bk {
                let c = (i + r) % bk;
                let mut score = stage.s[r * lds + c] * scale;
                if !full {
                    if !sees(rows, keys, r, c, mask) {
                        score = NO_SCORE;
                    }
                }
                stage.s[r * lds + c] = score;
                if score > max_new {
                    max_new = score;
                }
            }
            let corr = (max_old - max_new).exp();
            let mut sum = 0.0f32;
            #[unroll(blocks.unroll)]
            for i in 0..bk {
                let c = (i + r) % bk;
                let score = stage.s[r * lds + c];
                let mut p = 0.0f32;
                if score != NO_SCORE {
                    p = (score - max_new).exp();
                }
                sum += p;
                stage.p[r * ldp + c] = F::cast_from(p);
            }
            stage.row_sum[r] = stage.row_sum[r] * corr + sum;
            stage.row_max[r] = max_new;
            stage.row_corr[r] = corr;
        }
    }
    sync_cube();

    #[unroll(blocks.unroll)]
    for it in 0..comptime!((bq * dv).div_ceil(units)) {
        let e = it * units + UNIT_POS as usize;
        if e < bq * dv {
            let r = e / dv;
            stage.o[r * comptime!(blocks.ld32(dv)) + e % dv] *= stage.row_corr[r];
        }
    }
    sync_cube();
    let values = comptime!(TileProduct {
        m: bq,
        n: dv,
        k: bk,
        a_t: false,
        b_t: false,
        lda: blocks.ld(bk),
        ldb: blocks.ld(dv),
        ldc: blocks.ld32(dv),
        accumulate: true,
        cmma: blocks.cmma,
        units,
    });
    tile_product::<F>(&stage.p, &stage.v, &mut stage.o, values);
    sync_cube();
}
