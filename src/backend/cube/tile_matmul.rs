//! Tile-level matrix products in shared memory, for every tiled pass:
//! `out[m, n] (+)= op(a) op(b)` with `op` an optional transpose, `out` in f32.
//!
//! With `cmma` each plane (32 units, `UNIT_POS_Y`) computes 16-row blocks of `out` with
//! 16x16x16 tensor-core fragments; otherwise every unit computes whole entries in f32.
//! Storage: `a` is `[m, k]` row-major, or `[k, m]` when `a_t`; `b` is `[k, n]` row-major, or
//! `[n, k]` when `b_t` (so `Q K^T` is `a = Q, b = K, b_t`); rows are `lda` / `ldb` / `ldc`
//! elements apart ([`padded`] strides). All extents are comptime; with `cmma`, `m`, `n` and `k`
//! are multiples of 16.

/// Row stride (elements) of a shared tile with `cols` columns of `elem_bytes`-byte elements:
/// 16 bytes of padding, so that consecutive rows start 4 banks apart (fragment loads and
/// row-per-unit loops without bank conflicts), and a multiple of 16 bytes as `cmma` needs.
pub fn padded(cols: usize, elem_bytes: usize) -> usize {
    cols + 16 / elem_bytes
}

use cubecl::prelude::*;

use super::forward::ForwardBlocks;

/// Shape and execution of one tile product.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TileProduct {
    pub m: usize,
    pub n: usize,
    pub k: usize,
    /// `a` is stored transposed (`[k, m]`).
    pub a_t: bool,
    /// `b` is stored transposed (`[n, k]`).
    pub b_t: bool,
    /// Row strides of `a`, `b` and `out` (elements).
    pub lda: usize,
    pub ldb: usize,
    pub ldc: usize,
    /// Add to `out` instead of overwriting it.
    pub accumulate: bool,
    pub cmma: bool,
    pub units: usize,
}

/// `out = a b^T` for a `[block_q, inner]` tile `a` (Q or dO) and a `[block_kv, inner]` tile `b`
/// (K or V), both staged with [`ForwardBlocks::ld`] strides: the scores `S = Q K^T` and, in the
/// backward, `dP = dO V^T`. `out` is `[block_q, block_kv]` f32. No sync inside.
#[cube]
pub fn rows_by_keys<F: Float>(
    a: &SharedMemory<F>,
    b: &SharedMemory<F>,
    out: &mut SharedMemory<f32>,
    #[comptime] inner: usize,
    #[comptime] blocks: ForwardBlocks,
) {
    let product = comptime!(TileProduct {
        m: blocks.block_q,
        n: blocks.block_kv,
        k: inner,
        a_t: false,
        b_t: true,
        lda: blocks.ld(inner),
        ldb: blocks.ld(inner),
        ldc: blocks.ld32(blocks.block_kv),
        accumulate: false,
        cmma: blocks.cmma,
        units: blocks.units,
    });
    tile_product::<F>(a, b, out, product);
}

/// `out (+)= op(a) op(b)`. No sync inside; the caller syncs before reading `out`.
#[cube]
pub fn tile_product<F: Float>(
    a: &SharedMemory<F>,
    b: &SharedMemory<F>,
    out: &mut SharedMemory<f32>,
    #[comptime] p: TileProduct,
) {
    if p.cmma {
        cmma_product::<F>(a, b, out, p);
    } else {
        scalar_product::<F>(a, b, out, p);
    }
}

#[cube]
fn scalar_product<F: Float>(
    a: &SharedMemory<F>,
    b: &SharedMemory<F>,
    out: &mut SharedMemory<f32>,
    #[comptime] p: TileProduct,
) {
    let (m, n, k) = (p.m, p.n, p.k);
    for it in 0..comptime!((m * n).div_ceil(p.units)) {
        let e = it * p.units + UNIT_POS as usize;
        if e < m * n {
            let i = e / n;
            let j = e % n;
            let at = i * p.ldc + j;
            let mut acc = 0.0f32;
            if p.accumulate {
                acc = out[at];
            }
            for t in 0..k {
                let x = if p.a_t {
                    a[t * p.lda + i]
                } else {
                    a[i * p.lda + t]
                };
                let y = if p.b_t {
                    b[j * p.ldb + t]
                } else {
                    b[t * p.ldb + j]
                };
                acc += f32::cast_from(x) * f32::cast_from(y);
            }
            out[at] = acc;
        }
    }
}

#[cube]
fn cmma_product<F: Float>(
    a: &SharedMemory<F>,
    b: &SharedMemory<F>,
    out: &mut SharedMemory<f32>,
    #[comptime] p: TileProduct,
) {
    let (m, n, k) = (p.m, p.n, p.k);
    let planes = comptime!(p.units / 32);
    let a_layout = comptime!(if p.a_t {
        cmma::MatrixLayout::ColMajor
    } else {
        cmma::MatrixLayout::RowMajor
    });
    let b_layout = comptime!(if p.b_t {
        cmma::MatrixLayout::ColMajor
    } else {
        cmma::MatrixLayout::RowMajor
    });
    let a_len = comptime!((if p.a_t { k } else { m }) * p.lda);
    let b_len = comptime!((if p.b_t { n } else { k }) * p.ldb);
    let out_len = comptime!(m * p.ldc);
    // Output blocks of 16x16, dealt to the planes in turn (row-major over the blocks).
    let col_blocks = comptime!(n / 16);
    let out_blocks = comptime!((m / 16) * col_blocks);
    for block_it in 0..comptime!(out_blocks.div_ceil(planes)) {
        let block = block_it * planes + UNIT_POS_Y as usize;
        if block < out_blocks {
            let row0 = (block / col_blocks) * 16usize;
            let col0 = (block % col_blocks) * 16usize;
            {
                let acc = cmma::Matrix::<f32>::from_value(
                    cmma::MatrixIdent::Accumulator,
                    16usize,
                    16usize,
                    16usize,
                    cmma::MatrixLayout::Undefined,
                    0.0,
                );
                if p.accumulate {
                    cmma::load_with_layout(
                        &acc,
                        &out.slice(row0 * p.ldc + col0, out_len),
                        p.ldc as u32,
                        cmma::MatrixLayout::RowMajor,
                    );
                }
                for kb in 0..comptime!(k / 16) {
                    let t0 = kb * 16usize;
                    let a_at = if p.a_t {
                        t0 * p.lda + row0
                    } else {
                        row0 * p.lda + t0
                    };
                    let b_at = if p.b_t {
                        col0 * p.ldb + t0
                    } else {
                        t0 * p.ldb + col0
                    };
                    let fa = cmma::Matrix::<F>::from_slice(
                        cmma::MatrixIdent::A,
                        16usize,
                        16usize,
                        16usize,
                        a_layout,
                        &a.slice(a_at, a_len),
                        p.lda as u32,
                    );
                    let fb = cmma::Matrix::<F>::from_slice(
                        cmma::MatrixIdent::B,
                        16usize,
                        16usize,
                        16usize,
                        b_layout,
                        &b.slice(b_at, b_len),
                        p.ldb as u32,
                    );
                    cmma::execute::<F, F, f32, f32>(&fa, &fb, &acc, &acc);
                }
                cmma::store(
                    &mut out.slice_mut(row0 * p.ldc + col0, out_len),
                    &acc,
                    p.ldc as u32,
                    cmma::MatrixLayout::RowMajor,
                );
            }
        }
    }
}
