//! The `#[cube]` mirror of `natten_core::window`: same names, same argument order, same
//! formulas (see that module for the rule). Kernels always work on 3 axes; lower ranks are
//! padded in front with axes of length 1 and kernel size 1, whose window is `[0, 1)`.

use cubecl::prelude::*;

use super::kernel_args::NaGeometry;

/// Length of dilation group `group`: `ceil((len - group) / dilation)`.
#[cube]
#[allow(clippy::manual_div_ceil)] // `div_ceil` is not a CubeCL operation
pub fn group_len(len: u32, dilation: u32, group: u32) -> u32 {
    (len - group + dilation - 1) / dilation
}

/// The leader (window-defining query) of group-local query `i`.
#[cube]
pub fn leader(i: u32, group_len: u32, stride: u32, #[comptime] causal: bool) -> u32 {
    let first = (i / stride) * stride;
    let offset = if causal { stride - 1 } else { stride / 2 };
    let lead = first + offset;
    if lead < group_len {
        lead
    } else {
        group_len - 1
    }
}

/// First key (group-local) of the window of group-local query `i`.
#[cube]
pub fn window_start(
    i: u32,
    group_len: u32,
    kernel_size: u32,
    stride: u32,
    #[comptime] causal: bool,
) -> u32 {
    let lead = leader(i, group_len, stride, causal);
    let mut start = 0u32;
    if causal {
        if lead >= kernel_size - 1 {
            start = lead - (kernel_size - 1);
        }
    } else {
        let left = kernel_size / 2;
        if lead >= left {
            start = lead - left;
        }
        if start > group_len - kernel_size {
            start = group_len - kernel_size;
        }
    }
    start
}

/// One past the last key (group-local) of the window of group-local query `i` starting at
/// `start`.
#[cube]
pub fn window_end(
    i: u32,
    group_len: u32,
    kernel_size: u32,
    start: u32,
    #[comptime] causal: bool,
) -> u32 {
    let mut end = start + kernel_size;
    if causal {
        end = if i + 1 < group_len { i + 1 } else { group_len };
    }
    end
}

/// The window of the query at coordinate `x` on one axis: `[group, start, end]` (group-local
/// start/end; key coordinate = `j * dilation + group`).
#[cube]
pub fn axis_window(
    x: u32,
    len: u32,
    kernel_size: u32,
    stride: u32,
    dilation: u32,
    #[comptime] causal: bool,
) -> Array<u32> {
    let mut w = Array::<u32>::new(3usize);
    let group = x % dilation;
    let i = x / dilation;
    let glen = group_len(len, dilation, group);
    let start = window_start(i, glen, kernel_size, stride, causal);
    w[0] = group;
    w[1] = start;
    w[2] = window_end(i, glen, kernel_size, start, causal);
    w
}

/// Queries that see the key at coordinate `y` on one axis: `[group, lo, hi)` (group-local;
/// empty when `lo >= hi`), by the two binary searches of
/// `natten_core::window::inverse_window_range` (window starts and ends are non-decreasing in
/// the query).
#[cube]
pub fn inverse_window(
    y: u32,
    len: u32,
    kernel_size: u32,
    stride: u32,
    dilation: u32,
    #[comptime] causal: bool,
) -> Array<u32> {
    let group = y % dilation;
    let j = y / dilation;
    let glen = group_len(len, dilation, group);
    // lo: the first query whose window ends after j.
    let mut a = 0u32;
    let mut b = glen;
    while a < b {
        let mid = (a + b) / 2;
        let start = window_start(mid, glen, kernel_size, stride, causal);
        if window_end(mid, glen, kernel_size, start, causal) > j {
            b = mid;
        } else {
            a = mid + 1;
        }
    }
    let lo = a;
    // hi: the first query whose window starts after j.
    b = glen;
    while a < b {
        let mid = (a + b) / 2;
        if window_start(mid, glen, kernel_size, stride, causal) > j {
            b = mid;
        } else {
            a = mid + 1;
        }
    }
    let mut w = Array::<u32>::new(3usize);
    w[0] = group;
    w[1] = lo;
    w[2] = a;
    w
}

/// Per-axis windows of a token (flat row-major index over the padded 3-axis grid), flattened
/// as `[group, from, to]` per axis: the keys a query sees (`inverse = false`, [`axis_window`]),
/// or the queries that see a key (`inverse = true`, [`inverse_window`]), group-local.
#[cube]
pub fn token_windows(
    geometry: &NaGeometry,
    token: u32,
    #[comptime] inverse: bool,
    #[comptime] causal0: bool,
    #[comptime] causal1: bool,
    #[comptime] causal2: bool,
) -> Array<u32> {
    let g = geometry;
    let x2 = token % g.len2;
    let x1 = (token / g.len2) % g.len1;
    let x0 = token / (g.len2 * g.len1);
    let (w0, w1, w2) = if inverse {
        (
            inverse_window(x0, g.len0, g.kernel0, g.stride0, g.dilation0, causal0),
            inverse_window(x1, g.len1, g.kernel1, g.stride1, g.dilation1, causal1),
            inverse_window(x2, g.len2, g.kernel2, g.stride2, g.dilation2, causal2),
        )
    } else {
        (
            axis_window(x0, g.len0, g.kernel0, g.stride0, g.dilation0, causal0),
            axis_window(x1, g.len1, g.kernel1, g.stride1, g.dilation1, causal1),
            axis_window(x2, g.len2, g.kernel2, g.stride2, g.dilation2, causal2),
        )
    };
    let mut w = Array::<u32>::new(9usize);
    for i in 0..3usize {
        w[i] = w0[i];
        w[3 + i] = w1[i];
        w[6 + i] = w2[i];
    }
    w
}
