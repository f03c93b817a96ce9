//! Host-side description of a launch: the 3-axis geometry the kernels take as scalars.

use crate::backend::NaProblem;

/// Per-axis geometry padded to 3 axes (leading axes of length 1, kernel size 1).
#[derive(Debug, Clone, Copy)]
pub struct Geometry {
    pub len: [u32; 3],
    pub kernel_size: [u32; 3],
    pub stride: [u32; 3],
    pub dilation: [u32; 3],
    pub causal: [bool; 3],
}

impl Geometry {
    /// The neighbourhood geometry of an NA problem.
    pub fn of(problem: &NaProblem) -> Self {
        let pad = 3 - problem.spatial.len();
        let mut g = Self::none();
        for (a, (axis, &len)) in problem.axes.iter().zip(&problem.spatial).enumerate() {
            g.len[pad + a] = len as u32;
            g.kernel_size[pad + a] = axis.kernel_size as u32;
            g.stride[pad + a] = axis.stride as u32;
            g.dilation[pad + a] = axis.dilation as u32;
            g.causal[pad + a] = axis.causal;
        }
        g
    }

    /// No neighbourhood (FMHA): one "axis" of length 1 everywhere; kernels skip it.
    pub fn none() -> Self {
        Self {
            len: [1; 3],
            kernel_size: [1; 3],
            stride: [1; 3],
            dilation: [1; 3],
            causal: [false; 3],
        }
    }
}
