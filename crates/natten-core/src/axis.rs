//! Per-axis neighborhood parameters.

/// The neighborhood parameters of one spatial axis.
///
/// The window rule is separable: a key is a neighbour of a query iff it is one on every axis
/// (see [`crate::window`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct AxisParams {
    /// Window size `k` (>= 2; even sizes allowed).
    pub kernel_size: usize,
    /// Stride `s` (1 <= s <= k): queries in a stride group share one window.
    pub stride: usize,
    /// Dilation `d` (>= 1, k * d <= axis length): the axis splits into `d` interleaved groups.
    pub dilation: usize,
    /// Causal: a query sees no key after itself on this axis.
    pub causal: bool,
}

impl AxisParams {
    /// Plain neighborhood attention with window `kernel_size`: stride 1, dilation 1, not causal.
    pub fn new(kernel_size: usize) -> Self {
        Self {
            kernel_size,
            stride: 1,
            dilation: 1,
            causal: false,
        }
    }

    /// Keys to the left of a window's centre: `k / 2`.
    pub fn window_left(&self) -> usize {
        self.kernel_size / 2
    }

    /// Keys to the right of a window's centre: `k / 2 + k % 2 - 1`, so that left + right + 1 == k.
    pub fn window_right(&self) -> usize {
        self.kernel_size / 2 + self.kernel_size % 2 - 1
    }
}
