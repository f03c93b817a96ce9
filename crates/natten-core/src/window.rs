//! The window math: the one source of truth for which keys a query sees on one axis.
//!
//! For an axis of length `L`, with kernel size `k`, stride `s`, dilation `d`:
//!
//! ```text
//! wl = k / 2 ; wr = k / 2 + k % 2 - 1
//! g = x % d ; i = x / d ; Lg = ceil((L - g) / d)       dilation group, index in group, group length
//! non-causal: leader = min((i / s) * s + s / 2, Lg - 1); start = clamp(leader - wl, 0, Lg - k); end = start + k
//! causal:     leader = min((i / s) * s + s - 1, Lg - 1); start = max(leader - (k - 1), 0);      end = min(i + 1, Lg)
//! ```
//!
//! Key `x'` is a neighbour of query `x` on this axis iff `x' % d == g` and
//! `start <= x' / d < end`. The CubeCL and CUDA mirrors of these functions use the same names
//! and argument order.

use crate::AxisParams;

/// The window of one query on one axis, in the coordinates of its dilation group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct AxisWindow {
    /// The query's dilation group `g = x % d`.
    pub group: usize,
    /// First key of the window, as an index inside the group.
    pub start: usize,
    /// One past the last key of the window, as an index inside the group.
    pub end: usize,
    /// The dilation `d` (the step between global coordinates of consecutive keys).
    pub dilation: usize,
}

impl AxisWindow {
    /// Number of keys in the window (`k` when not causal; `1..=k` when causal).
    pub fn len(&self) -> usize {
        self.end - self.start
    }

    /// Always false: every window holds at least the query itself or `k >= 2` keys.
    pub fn is_empty(&self) -> bool {
        self.end == self.start
    }

    /// The global coordinate of the window's `j`-th key.
    pub fn key(&self, j: usize) -> usize {
        (self.start + j) * self.dilation + self.group
    }

    /// Global coordinates of the keys, in increasing order.
    pub fn keys(&self) -> impl Iterator<Item = usize> + '_ {
        (self.start..self.end).map(|i| i * self.dilation + self.group)
    }

    /// Whether the global coordinate `x` is a key of this window.
    pub fn contains(&self, x: usize) -> bool {
        x % self.dilation == self.group && (self.start..self.end).contains(&(x / self.dilation))
    }
}

/// Length of dilation group `group` on an axis of length `len` with dilation `dilation`:
/// `ceil((len - group) / dilation)`.
pub fn group_len(len: usize, dilation: usize, group: usize) -> usize {
    (len - group).div_ceil(dilation)
}

/// The leader (window-defining query) of group-local query `i` in a group of length `group_len`.
pub fn leader(axis: &AxisParams, i: usize, group_len: usize) -> usize {
    let s = axis.stride;
    let first = (i / s) * s;
    let offset = if axis.causal { s - 1 } else { s / 2 };
    (first + offset).min(group_len - 1)
}

/// Start and end (exclusive) of the window of group-local query `i`, in group-local indices.
///
/// Requires `k <= group_len` (guaranteed by `k * d <= L`).
pub fn window_start_end(axis: &AxisParams, i: usize, group_len: usize) -> (usize, usize) {
    let k = axis.kernel_size;
    let lead = leader(axis, i, group_len);
    if axis.causal {
        let start = lead.saturating_sub(k - 1);
        (start, (i + 1).min(group_len))
    } else {
        let start = lead.saturating_sub(axis.window_left()).min(group_len - k);
        (start, start + k)
    }
}

/// The group-local queries `[lo, hi)` whose windows hold group-local key `j`, in a group of
/// length `group_len` (empty when `lo >= hi`).
///
/// Window starts and ends are non-decreasing in the query, so `lo` is the first query whose
/// window ends after `j` and `hi` the first query whose window starts after `j`: two binary
/// searches. The backward's dK/dV passes walk these queries.
pub fn inverse_window_range(axis: &AxisParams, j: usize, group_len: usize) -> (usize, usize) {
    let window = |i| window_start_end(axis, i, group_len);
    let lo = first_query(0, group_len, |i| window(i).1 > j);
    let hi = first_query(lo, group_len, |i| window(i).0 > j);
    (lo, hi)
}

/// The first query of `[lo, hi)` for which the monotone predicate `past` holds (`hi` if none).
fn first_query(mut lo: usize, mut hi: usize, past: impl Fn(usize) -> bool) -> usize {
    while lo < hi {
        let mid = (lo + hi) / 2;
        if past(mid) {
            hi = mid;
        } else {
            lo = mid + 1;
        }
    }
    lo
}

/// The window of the query at global coordinate `x` on an axis of length `len`.
pub fn axis_window(axis: &AxisParams, len: usize, x: usize) -> AxisWindow {
    let d = axis.dilation;
    let group = x % d;
    let (start, end) = window_start_end(axis, x / d, group_len(len, d, group));
    AxisWindow {
        group,
        start,
        end,
        dilation: d,
    }
}

/// Sum over all queries of the axis of their window sizes (the axis's factor of the number of
/// attended (query, key) pairs).
pub fn axis_pair_count(axis: &AxisParams, len: usize) -> u64 {
    (0..len)
        .map(|x| axis_window(axis, len, x).len() as u64)
        .sum()
}
