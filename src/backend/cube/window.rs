//! The `#[cube]` mirror of `natten_core::window`: same names, same argument order, same
//! formulas (see that module for the rule). Kernels always work on 3 axes; lower ranks are
//! padded in front with axes of length 1 and kernel size 1, whose window is `[0, 1)`.

use cubecl::prelude::*;

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
