//! What the kernels take besides tensors: the 3-axis neighbourhood geometry, as one launch
//! argument, built on the host from an [`NaProblem`].

use cubecl::prelude::*;

use crate::backend::NaProblem;

/// Per-axis geometry padded to 3 axes (leading axes of length 1, kernel size 1, whose window is
/// `[0, 1)`). Axis `a` of the kernels is `len{a}`, `kernel{a}`, `stride{a}`, `dilation{a}`.
#[derive(CubeLaunch, CubeType)]
pub struct NaGeometry {
    pub len0: u32,
    pub len1: u32,
    pub len2: u32,
    pub kernel0: u32,
    pub kernel1: u32,
    pub kernel2: u32,
    pub stride0: u32,
    pub stride1: u32,
    pub stride2: u32,
    pub dilation0: u32,
    pub dilation1: u32,
    pub dilation2: u32,
}

/// Host-side geometry; `causal` goes to the kernels as comptime flags.
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

    /// No neighbourhood (FMHA): every axis of length 1; kernels skip it.
    pub fn none() -> Self {
        Self {
            len: [1; 3],
            kernel_size: [1; 3],
            stride: [1; 3],
            dilation: [1; 3],
            causal: [false; 3],
        }
    }

    /// A 1-D sequence of `tokens` queries with no neighbourhood (FMHA's Q tiling in the tiled
    /// forward).
    pub fn sequence(tokens: u32) -> Self {
        let mut g = Self::none();
        g.len[2] = tokens;
        g
    }

    /// The launch argument.
    pub fn arg<R: Runtime>(&self) -> NaGeometryLaunch<R> {
        let [l0, l1, l2] = self.len;
        let [k0, k1, k2] = self.kernel_size;
        let [s0, s1, s2] = self.stride;
        let [d0, d1, d2] = self.dilation;
        NaGeometryLaunch::new(l0, l1, l2, k0, k1, k2, s0, s1, s2, d0, d1, d2)
    }
}
