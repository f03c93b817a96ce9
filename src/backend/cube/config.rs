//! Host side of the tiled kernels: which block sizes a launch uses (tensor cores or scalar,
//! within the device's shared memory), and the per-axis tile shapes.

use burn::tensor::DType;
use burn_cubecl::CubeRuntime;
use cubecl::client::ComputeClient;
use cubecl::ir::StorageType;
use cubecl::prelude::*;
use cubecl::{CubeCount, CubeDim};

use super::forward::ForwardBlocks;
use super::kernel_args::Geometry;
use super::tile::TileShapeLaunch;
use crate::backend::TileConfig;

/// Units per cube of the tiled kernels (4 planes of 32 on NVIDIA).
const UNITS: usize = 128;
/// Query rows per plane in the `cmma` path (the 16x16x16 fragment height).
const CMMA_ROWS: usize = 16;

/// Block sizes `(block_q, block_kv)` of the scalar path, preferred first.
const SCALAR_BLOCKS: [(usize, usize); 11] = [
    (64, 64),
    (64, 32),
    (32, 64),
    (32, 32),
    (64, 16),
    (32, 16),
    (16, 32),
    (16, 16),
    (16, 8),
    (8, 16),
    (8, 8),
];

/// Whether the runtime has 16x16x16 `cmma` for `dtype` inputs with f32 accumulation, on
/// planes of 32 (the fragment-to-plane mapping the kernels assume).
fn has_cmma<R: Runtime>(client: &ComputeClient<R>, dtype: DType) -> bool {
    if !matches!(dtype, DType::F16 | DType::BF16) {
        return false;
    }
    let props = client.properties();
    if props.hardware.plane_size_min != 32 || props.hardware.plane_size_max != 32 {
        return false;
    }
    let input: StorageType = dtype.into();
    let acc: StorageType = DType::F32.into();
    props.features.matmul.cmma.iter().any(|c| {
        c.a_type == input
            && c.b_type == input
            && c.cd_type == acc
            && (c.m, c.n, c.k) == (16, 16, 16)
    })
}

/// Shared memory (bytes) of a forward launch with these blocks (rows padded as the kernels
/// pad them: [`ForwardBlocks::ld`]).
pub fn forward_shared_bytes(b: &ForwardBlocks) -> usize {
    let (bq, bk, d, dv) = (b.block_q, b.block_kv, b.head_dim, b.head_dim_v);
    let staged = (bq * b.ld(d) + bk * b.ld(d) + bk * b.ld(dv) + bq * b.ld(bk)) * b.elem_bytes;
    let f32s = (bq * b.ld32(bk) + bq * b.ld32(dv) + 3 * bq) * 4;
    staged + f32s + index_bytes(b)
}

/// Shared memory (bytes) of a dQ launch with these blocks.
pub fn dq_shared_bytes(b: &ForwardBlocks) -> usize {
    let (bq, bk, d, dv) = (b.block_q, b.block_kv, b.head_dim, b.head_dim_v);
    let staged = (bq * b.ld(d) + bq * b.ld(dv) + bk * b.ld(d) + bk * b.ld(dv) + bq * b.ld(bk))
        * b.elem_bytes;
    let f32s = (2 * bq * b.ld32(bk) + bq * b.ld32(d) + 2 * bq) * 4;
    staged + f32s + index_bytes(b)
}

/// Shared memory (bytes) of a dK/dV launch with these blocks.
pub fn dkdv_shared_bytes(b: &ForwardBlocks) -> usize {
    let (bq, bk, d, dv) = (b.block_q, b.block_kv, b.head_dim, b.head_dim_v);
    let staged = (bk * b.ld(d) + bk * b.ld(dv) + bq * b.ld(d) + bq * b.ld(dv) + 2 * bq * b.ld(bk))
        * b.elem_bytes;
    let f32s = (2 * bq * b.ld32(bk) + bk * b.ld32(d) + bk * b.ld32(dv) + 2 * bq) * 4;
    staged + f32s + index_bytes(b)
}

/// The query-row and key index arrays ([`super::tile::QueryRows`], [`super::tile::KeyTile`]).
fn index_bytes(b: &ForwardBlocks) -> usize {
    (8 * b.block_q + 5 * b.block_kv) * 4
}

/// Which pass a launch is for (their shared-memory footprints differ).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pass {
    Forward,
    Dq,
    Dkdv,
}

/// Block sizes `(block_q, block_kv)` of the tensor-core path (64 query rows: 16 per plane),
/// preferred first.
const CMMA_BLOCKS: [(usize, usize); 3] = [(64, 64), (64, 32), (64, 16)];

fn shared_bytes_of(pass: Pass) -> fn(&ForwardBlocks) -> usize {
    match pass {
        Pass::Forward => forward_shared_bytes,
        Pass::Dq => dq_shared_bytes,
        Pass::Dkdv => dkdv_shared_bytes,
    }
}

/// Every block-size choice of `pass` that this device can run (fits its shared memory),
/// preferred first: the tensor-core path where the runtime has it and the head dims are
/// multiples of 16, else the scalar path.
pub fn block_candidates<R: CubeRuntime>(
    client: &ComputeClient<R>,
    pass: Pass,
    head_dim: usize,
    head_dim_v: usize,
    dtype: DType,
) -> Vec<ForwardBlocks> {
    let max_shared = client.properties().hardware.max_shared_memory_size;
    let unroll = !R::name(client).starts_with("wgpu");
    let cmma = has_cmma(client, dtype)
        && head_dim.is_multiple_of(CMMA_ROWS)
        && head_dim_v.is_multiple_of(CMMA_ROWS);
    let list: &[(usize, usize)] = if cmma { &CMMA_BLOCKS } else { &SCALAR_BLOCKS };
    let fits = shared_bytes_of(pass);
    list.iter()
        .map(|&(block_q, block_kv)| ForwardBlocks {
            head_dim,
            head_dim_v,
            block_q,
            block_kv,
            units: UNITS,
            cmma,
            elem_bytes: dtype.size(),
            unroll,
        })
        .filter(|b| fits(b) <= max_shared)
        .collect()
}

/// Whether every pass has a block size that fits this device (else the fused path cannot run
/// and calls take the reference).
pub fn fits<R: CubeRuntime>(
    client: &ComputeClient<R>,
    head_dim: usize,
    head_dim_v: usize,
    dtype: DType,
) -> bool {
    [Pass::Forward, Pass::Dq, Pass::Dkdv]
        .into_iter()
        .all(|pass| !block_candidates(client, pass, head_dim, head_dim_v, dtype).is_empty())
}

/// The preferred block sizes of `pass` (callers check [`fits`] first; the smallest scalar
/// blocks otherwise).
pub fn blocks_for<R: CubeRuntime>(
    client: &ComputeClient<R>,
    pass: Pass,
    head_dim: usize,
    head_dim_v: usize,
    dtype: DType,
) -> ForwardBlocks {
    block_candidates(client, pass, head_dim, head_dim_v, dtype)
        .into_iter()
        .next()
        .unwrap_or(ForwardBlocks {
            head_dim,
            head_dim_v,
            block_q: 8,
            block_kv: 8,
            units: UNITS,
            cmma: false,
            elem_bytes: dtype.size(),
            unroll: false,
        })
}

/// The forward's blocks for a user's tile configuration (validated against
/// [`tile_configs`] before it gets here).
pub fn blocks_for_tiles<R: CubeRuntime>(
    client: &ComputeClient<R>,
    tiles: &TileConfig,
    head_dim: usize,
    head_dim_v: usize,
    dtype: DType,
) -> Option<ForwardBlocks> {
    let block_q: usize = tiles.q_tile.iter().product();
    let block_kv: usize = tiles.kv_tile.iter().product();
    block_candidates(client, Pass::Forward, head_dim, head_dim_v, dtype)
        .into_iter()
        .find(|b| b.block_q == block_q && b.block_kv == block_kv)
}

/// Every tile configuration of the fused forward for a rank-`rank` problem on this device:
/// per-axis power-of-two extents whose products are one of the block-size choices of
/// [`block_candidates`].
pub fn tile_configs<R: CubeRuntime>(
    client: &ComputeClient<R>,
    rank: usize,
    head_dim: usize,
    head_dim_v: usize,
    dtype: DType,
) -> Vec<TileConfig> {
    let mut out = Vec::new();
    if !fits(client, head_dim, head_dim_v, dtype) {
        return out;
    }
    for blocks in block_candidates(client, Pass::Forward, head_dim, head_dim_v, dtype) {
        for q_tile in power_of_two_shapes(rank, blocks.block_q) {
            for kv_tile in power_of_two_shapes(rank, blocks.block_kv) {
                out.push(TileConfig {
                    q_tile: q_tile.clone(),
                    kv_tile,
                });
            }
        }
    }
    out
}

/// All `rank`-axis shapes of powers of two whose product is `block` (a power of two).
fn power_of_two_shapes(rank: usize, block: usize) -> Vec<Vec<usize>> {
    if rank == 1 {
        return vec![vec![block]];
    }
    let mut out = Vec::new();
    let mut first = 1;
    while first <= block {
        for mut rest in power_of_two_shapes(rank - 1, block / first) {
            rest.insert(0, first);
            out.push(rest);
        }
        first *= 2;
    }
    out
}

/// Splits `block` (a power of two) over 3 axes: doubles, one at a time, the axis whose
/// `extent / tile` is largest (ties: the later axis); once every axis is covered, the last.
pub fn split_block(block: usize, extent: [u32; 3]) -> [u32; 3] {
    let mut tile = [1u32; 3];
    while ((tile[0] * tile[1] * tile[2]) as usize) < block {
        let ratio = |a: usize| extent[a] as f64 / tile[a] as f64;
        let axis = (0..3)
            .filter(|&a| ratio(a) > 1.0)
            .max_by(|&a, &b| ratio(a).total_cmp(&ratio(b)).then(a.cmp(&b)))
            .unwrap_or(2);
        tile[axis] *= 2;
    }
    tile
}

/// Per-axis Q and KV tile shapes for `blocks` on `geometry`, and the launch grid.
pub struct TilePlan {
    pub q_tile: [u32; 3],
    pub kv_tile: [u32; 3],
    pub tiles: [u32; 3],
}

impl TilePlan {
    /// Q tiles follow the longest dilation group's extent; KV tiles the KV box of a Q tile.
    pub fn new(geometry: &Geometry, blocks: &ForwardBlocks) -> Self {
        let group_extent = |a: usize| geometry.len[a].div_ceil(geometry.dilation[a]);
        let q_tile = split_block(blocks.block_q, [0, 1, 2].map(group_extent));
        let kv_extent = [0, 1, 2].map(|a| {
            if geometry.len[a] == 1 {
                1
            } else {
                (geometry.kernel_size[a] + q_tile[a] - 1).min(group_extent(a))
            }
        });
        let kv_tile = split_block(blocks.block_kv, kv_extent);
        let tiles = [0, 1, 2].map(|a| group_extent(a).div_ceil(q_tile[a]));
        Self {
            q_tile,
            kv_tile,
            tiles,
        }
    }

    /// The user's tile shapes (rank-`R`, padded in front to 3 axes).
    pub fn from_config(geometry: &Geometry, tiles: &TileConfig) -> Self {
        let pad = |shape: &[usize]| {
            let mut out = [1u32; 3];
            for (a, &x) in shape.iter().enumerate() {
                out[3 - shape.len() + a] = x as u32;
            }
            out
        };
        let q_tile = pad(&tiles.q_tile);
        let kv_tile = pad(&tiles.kv_tile);
        let group_extent = |a: usize| geometry.len[a].div_ceil(geometry.dilation[a]);
        let tiles = [0, 1, 2].map(|a| group_extent(a).div_ceil(q_tile[a]));
        Self {
            q_tile,
            kv_tile,
            tiles,
        }
    }

    /// For the dK/dV pass: KV tiles (of `block_kv` keys) are the outer tiles, in `q_tile` and
    /// `tiles`; Q tiles (of `block_q` queries) the inner ones, in `kv_tile`.
    pub fn for_keys(geometry: &Geometry, blocks: &ForwardBlocks) -> Self {
        let group_extent = |a: usize| geometry.len[a].div_ceil(geometry.dilation[a]);
        let key_tile = split_block(blocks.block_kv, [0, 1, 2].map(group_extent));
        let q_extent = [0, 1, 2].map(|a| {
            if geometry.len[a] == 1 {
                1
            } else {
                (geometry.kernel_size[a] + key_tile[a] - 1).min(group_extent(a))
            }
        });
        let q_tile = split_block(blocks.block_q, q_extent);
        let tiles = [0, 1, 2].map(|a| group_extent(a).div_ceil(key_tile[a]));
        Self {
            q_tile: key_tile,
            kv_tile: q_tile,
            tiles,
        }
    }

    /// The launch argument.
    pub fn arg<R: Runtime>(&self) -> TileShapeLaunch<R> {
        let [q0, q1, q2] = self.q_tile;
        let [k0, k1, k2] = self.kv_tile;
        let [t0, t1, t2] = self.tiles;
        TileShapeLaunch::new(q0, q1, q2, k0, k1, k2, t0, t1, t2)
    }

    /// One cube per (Q tile, head, batch).
    pub fn cube_count(&self, geometry: &Geometry, heads: usize, batch: usize) -> CubeCount {
        let groups: u32 = geometry.dilation.iter().product();
        let tiles: u32 = self.tiles.iter().product();
        CubeCount::Static(groups * tiles, heads as u32, batch as u32)
    }

    /// The cube shape for `blocks` (planes of 32 along y).
    pub fn cube_dim(blocks: &ForwardBlocks) -> CubeDim {
        CubeDim::new_2d(32, (blocks.units / 32) as u32)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_block_follows_extents() {
        assert_eq!(split_block(64, [1, 1, 4096]), [1, 1, 64]);
        assert_eq!(split_block(64, [1, 128, 128]), [1, 8, 8]);
        assert_eq!(split_block(64, [16, 44, 80]), [2, 4, 8]);
        assert_eq!(split_block(16, [1, 3, 100]), [1, 1, 16]);
        assert_eq!(split_block(16, [1, 1, 1]), [1, 1, 16]);
        assert_eq!(split_block(16, [1, 2, 2]), [1, 2, 8]);
    }

    #[test]
    fn power_of_two_shapes_cover_every_split() {
        assert_eq!(power_of_two_shapes(1, 8), vec![vec![8]]);
        assert_eq!(
            power_of_two_shapes(2, 4),
            vec![vec![1, 4], vec![2, 2], vec![4, 1]]
        );
        // Splits of 2^6 over 3 axes: C(8, 2).
        assert_eq!(power_of_two_shapes(3, 64).len(), 28);
    }
}
