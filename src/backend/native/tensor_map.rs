//! TMA descriptors of the tiles a Hopper kernel walks (`tma_load_pair` in
//! `kernels/sm90_common.cuh`), built on the host for every call (the pointers change): K and V
//! for the forward and the paired dQ pass, Q and dO for the paired dK/dV pass.
//!
//! Each describes a heads-last tensor `[batch, tokens, heads, cols]` (tokens row-major over its
//! grid: `kv_len` for K and V, `len` for Q and dO) as five dimensions, innermost first: the
//! column of all heads (`heads * cols`, contiguous), axis 2, axis 1, axis 0 and the batch. A box
//! is one 64-row tile of that side (extents `2^kv_tile_log2` or `2^q_tile_log2` per axis, every
//! `dilation`-th token) by 64 columns of one head, 128-byte swizzled: one 64-column block of the
//! kernel's K-major tile. Rows outside the grid read as zero, so a tile never reads another
//! batch's rows, as the cp.async gather never did.
//!
//! The kernel loads `kernel_dim` columns per head, so a head dim below the kernel's would read
//! the next head's columns into products over the head dim (S = Q K^T, and dP = dO V^T in the
//! backward passes), where the other operand's zero columns times a non-finite value would be
//! NaN: both head dims must equal the kernel's.

use cudarc::driver::DeviceRepr;
use cudarc::driver::sys;

use super::plan::FnaParams;

/// Columns of a box: 64 two-byte elements, the 128-byte swizzle's row.
const BOX_COLS: u32 = 64;

/// TMA limits (CUDA driver API, `cuTensorMapEncodeTiled`): elements of a box per dimension and
/// the traversal stride per dimension.
const MAX_BOX: u32 = 256;
const MAX_ELEMENT_STRIDE: u32 = 8;

/// The side whose tiles a kernel walks, and so the two tensors its descriptors describe.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WalkedSide {
    /// K and V over the key grid, KV tiles (the forward and the dQ pass).
    Keys,
    /// Q and dO over the query grid, Q tiles (the dK/dV pass).
    Queries,
}

/// What the descriptors of a kernel's call depend on besides the call: the element type (bf16
/// or f16), the head dim the kernel was built for and the side it walks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TensorMapKind {
    pub bf16: bool,
    pub kernel_dim: usize,
    pub side: WalkedSide,
}

/// One TMA descriptor, passed by value as a `const __grid_constant__ CUtensorMap` kernel
/// argument.
#[repr(transparent)]
#[derive(Clone, Copy)]
pub struct TensorMap(sys::CUtensorMap);

// SAFETY: `CUtensorMap` is the driver's opaque, aligned plain-data descriptor, the by-value
// kernel argument of that type.
unsafe impl DeviceRepr for TensorMap {}

impl TensorMap {
    /// A descriptor that no kernel reads (the argument of a launch that gathers with cp.async).
    pub fn unused() -> Self {
        Self(sys::CUtensorMap { opaque: [0; 16] })
    }
}

/// The part of a side's descriptors that does not depend on the pointers: its grid, heads and
/// per-axis boxes (tensor dimensions 1..4: extent times dilation, traversal stride dilation).
struct SideBoxes {
    grid: [i32; 3],
    heads: i32,
    box_dims: [u32; 5],
    element_strides: [u32; 5],
}

/// The boxes of `kind`'s side, or why TMA cannot describe its tiles: a head dim (of K or V)
/// other than the kernel's, a dilation above 8, or a tile extent times its dilation above 256.
fn side_boxes(params: &FnaParams, kind: TensorMapKind) -> Result<SideBoxes, String> {
    for (name, dim) in [
        ("head_dim", params.head_dim),
        ("head_dim_v", params.head_dim_v),
    ] {
        if dim as usize != kind.kernel_dim {
            return Err(format!(
                "{name} {dim} below the kernel's {}",
                kind.kernel_dim
            ));
        }
    }
    let (grid, heads, tile_log2) = match kind.side {
        WalkedSide::Keys => (params.kv_len, params.heads_kv, params.kv_tile_log2),
        WalkedSide::Queries => (params.len, params.heads, params.q_tile_log2),
    };
    let mut box_dims = [BOX_COLS, 1, 1, 1, 1];
    let mut element_strides = [1u32; 5];
    // Tensor dimension 1 + i is axis 2 - i.
    for i in 0..3 {
        let axis = 2 - i;
        let dilation = params.dilation[axis] as u32;
        let extent = 1u32 << tile_log2[axis];
        if dilation > MAX_ELEMENT_STRIDE || extent * dilation > MAX_BOX {
            return Err(format!(
                "axis {axis}: tile extent {extent} x dilation {dilation} is outside TMA's limits"
            ));
        }
        box_dims[1 + i] = extent * dilation;
        element_strides[1 + i] = dilation;
    }
    Ok(SideBoxes {
        grid,
        heads,
        box_dims,
        element_strides,
    })
}

/// Whether TMA can describe the tiles of `kind`'s side for `params` (pointers not needed), or
/// why not ([`tile_tensor_maps`]).
pub fn describable(params: &FnaParams, kind: TensorMapKind) -> Result<(), String> {
    side_boxes(params, kind).map(|_| ())
}

/// The descriptors of `params` (device pointers already written) for a kernel of `kind`: K and
/// V, or Q and dO ([`WalkedSide`]). Or why TMA cannot describe them (the kernel then gathers
/// with cp.async): a head dim (of K or V) other than the kernel's, a dilation above 8, or a
/// tile extent times its dilation above 256.
pub fn tile_tensor_maps(params: &FnaParams, kind: TensorMapKind) -> Result<[TensorMap; 2], String> {
    let boxes = side_boxes(params, kind)?;
    let pointers = match kind.side {
        WalkedSide::Keys => [params.k, params.v],
        WalkedSide::Queries => [params.q, params.d_out],
    };
    let data_type = if kind.bf16 {
        sys::CUtensorMapDataType::CU_TENSOR_MAP_DATA_TYPE_BFLOAT16
    } else {
        sys::CUtensorMapDataType::CU_TENSOR_MAP_DATA_TYPE_FLOAT16
    };
    Ok([
        encode(params, &boxes, pointers[0], params.head_dim, data_type, 2)?,
        encode(params, &boxes, pointers[1], params.head_dim_v, data_type, 2)?,
    ])
}

/// The descriptor of the fused backward's f32 dQ accumulator (`params.dq_acc`, like Q): Q tile
/// boxes ([`WalkedSide::Queries`]) by 32 columns (the 128-byte swizzle's row of floats), the
/// target of the kernel's reduce-adds (`tma_reduce_add_5d`).
pub fn dq_accumulator_map(params: &FnaParams, kind: TensorMapKind) -> Result<TensorMap, String> {
    let mut boxes = side_boxes(
        params,
        TensorMapKind {
            side: WalkedSide::Queries,
            ..kind
        },
    )?;
    boxes.box_dims[0] = BOX_COLS / 2;
    let data_type = sys::CUtensorMapDataType::CU_TENSOR_MAP_DATA_TYPE_FLOAT32;
    encode(params, &boxes, params.dq_acc, params.head_dim, data_type, 4)
}

/// One descriptor: the tensor at `pointer` of `cols` columns per head of `element_bytes` each,
/// over the grid and heads of `boxes`, 128-byte swizzled.
fn encode(
    params: &FnaParams,
    boxes: &SideBoxes,
    pointer: u64,
    cols: i32,
    data_type: sys::CUtensorMapDataType,
    element_bytes: u64,
) -> Result<TensorMap, String> {
    let [len0, len1, len2] = boxes.grid.map(|l| l as u64);
    let row = boxes.heads as u64 * cols as u64;
    let dims = [row, len2, len1, len0, params.batch as u64];
    // Byte strides of dimensions 1..5 (dimension 0 is contiguous).
    let bytes = element_bytes * row;
    let strides = [
        bytes,
        bytes * len2,
        bytes * len2 * len1,
        bytes * len2 * len1 * len0,
    ];
    let mut map = TensorMap::unused();
    // SAFETY: every array has the rank's length (5, and 4 strides); `pointer` is a pinned
    // device buffer of the described extent, 16-byte aligned (checked with the others), and
    // the strides are multiples of 16 bytes (cols is a multiple of 8).
    let result = unsafe {
        sys::cuTensorMapEncodeTiled(
            &mut map.0,
            data_type,
            5,
            pointer as *mut std::ffi::c_void,
            dims.as_ptr(),
            strides.as_ptr(),
            boxes.box_dims.as_ptr(),
            boxes.element_strides.as_ptr(),
            sys::CUtensorMapInterleave::CU_TENSOR_MAP_INTERLEAVE_NONE,
            sys::CUtensorMapSwizzle::CU_TENSOR_MAP_SWIZZLE_128B,
            sys::CUtensorMapL2promotion::CU_TENSOR_MAP_L2_PROMOTION_L2_256B,
            sys::CUtensorMapFloatOOBfill::CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE,
        )
    };
    match result {
        sys::CUresult::CUDA_SUCCESS => Ok(map),
        e => Err(format!("cuTensorMapEncodeTiled: {e:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::native::plan::tests::na_params;

    #[test]
    fn tma_descriptors_refuse_what_tma_cannot_describe() {
        // kernels/sm90_common.cuh (tma_load_pair) loads kernel_dim columns per head and boxes
        // of the tile's extents times the dilation: a smaller head dim or a box past TMA's
        // limits falls back to the cp.async gather (checked before any driver call).
        let kind = |side| TensorMapKind {
            bf16: true,
            kernel_dim: 128,
            side,
        };
        // Why the descriptors were refused ("" when they were built).
        let refusal = |p: &FnaParams| {
            tile_tensor_maps(p, kind(WalkedSide::Keys))
                .err()
                .unwrap_or_default()
        };
        let mut p = na_params(&[64, 64], &[7, 7], &[8, 16], &[8, 8]);
        p.head_dim_v = 64;
        assert!(refusal(&p).contains("head_dim_v 64"));
        p.head_dim_v = 128;
        p.head_dim = 96;
        assert!(refusal(&p).contains("head_dim 96"));
        p.head_dim = 128;
        p.dilation[2] = 9;
        assert!(refusal(&p).contains("dilation 9"));
        p.dilation[2] = 4;
        p.kv_tile_log2[2] = 6; // 64 x 4 = 256 elements: the limit
        p.dilation[1] = 8;
        p.kv_tile_log2[1] = 6; // 64 x 8 = 512: past it
        assert!(refusal(&p).contains("axis 1"));
        // The query side's boxes are Q tiles (the dK/dV pass): its own extents count.
        let refusal_q = |p: &FnaParams| {
            tile_tensor_maps(p, kind(WalkedSide::Queries))
                .err()
                .unwrap_or_default()
        };
        p.q_tile_log2[2] = 7; // 128 x 4 = 512: past the limit on axis 2 for Q tiles only
        assert!(refusal_q(&p).contains("axis 2"));
        assert!(refusal(&p).contains("axis 1"));
        p.head_dim_v = 64;
        assert!(refusal_q(&p).contains("head_dim_v 64"));
    }
}
