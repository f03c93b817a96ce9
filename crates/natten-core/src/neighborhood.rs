//! Multi-dimensional neighbourhoods: the Cartesian product of the per-axis windows.

use crate::AxisParams;
use crate::window::axis_window;

/// Flat (row-major) index of a coordinate in a grid of shape `shape`.
pub fn flat_index(coord: &[usize], shape: &[usize]) -> usize {
    coord.iter().zip(shape).fold(0, |acc, (&c, &n)| acc * n + c)
}

/// Coordinate of a flat (row-major) index in a grid of shape `shape`.
pub fn unflatten(mut index: usize, shape: &[usize]) -> Vec<usize> {
    let mut coord = vec![0; shape.len()];
    for (c, &n) in coord.iter_mut().zip(shape).rev() {
        *c = index % n;
        index /= n;
    }
    coord
}

/// Global coordinates of the neighbours of the query at `query` (one coordinate per axis), as
/// flat row-major key indices, in increasing order.
pub fn neighbors(spatial: &[usize], axes: &[AxisParams], query: &[usize]) -> Vec<usize> {
    let per_axis: Vec<Vec<usize>> = axes
        .iter()
        .zip(spatial)
        .zip(query)
        .map(|((axis, &len), &x)| axis_window(axis, len, x).keys().collect())
        .collect();
    let mut out = vec![0usize];
    for (keys, &len) in per_axis.iter().zip(spatial) {
        out = out
            .iter()
            .flat_map(|&base| keys.iter().map(move |&key| base * len + key))
            .collect();
    }
    out
}

/// The neighbour table of a whole token grid: for each query (flat row-major index), the flat
/// indices of its keys, padded to the full window size `W = prod(kernel_size)`.
///
/// This is the gather plan of the reference path: memory is `O(tokens x W)`, never
/// `tokens x tokens`. Slot order is row-major over the per-axis window slots. Causal windows
/// hold fewer than `k` keys on their causal axes; their missing slots repeat the window's first
/// key and are marked invalid in [`NeighborTable::valid`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NeighborTable {
    /// Number of query tokens (`prod(spatial)`).
    pub tokens: usize,
    /// Slots per query: `prod(kernel_size)`.
    pub window: usize,
    /// `[tokens * window]` flat key indices.
    pub indices: Vec<u32>,
    /// `[tokens * window]` validity of each slot; `None` when every slot is valid (no axis is
    /// causal).
    pub valid: Option<Vec<bool>>,
}

impl NeighborTable {
    /// Builds the table for `spatial` and `axes` (one entry per axis, already validated).
    pub fn new(spatial: &[usize], axes: &[AxisParams]) -> Self {
        // Per axis and coordinate: the k slot coordinates and how many of them are valid.
        let per_axis: Vec<Vec<(Vec<usize>, usize)>> = axes
            .iter()
            .zip(spatial)
            .map(|(axis, &len)| {
                (0..len)
                    .map(|x| {
                        let w = axis_window(axis, len, x);
                        let slots = (0..axis.kernel_size).map(|j| w.key(j.min(w.len() - 1)));
                        (slots.collect(), w.len())
                    })
                    .collect()
            })
            .collect();
        let tokens: usize = spatial.iter().product();
        let window: usize = axes.iter().map(|a| a.kernel_size).product();
        let any_causal = axes.iter().any(|a| a.causal);
        let mut indices = Vec::with_capacity(tokens * window);
        let mut valid = Vec::with_capacity(if any_causal { tokens * window } else { 0 });
        for q in 0..tokens {
            let coord = unflatten(q, spatial);
            // Running product over axes: (flat index so far, all slots valid so far).
            let mut slots = vec![(0usize, true)];
            for (a, &x) in coord.iter().enumerate() {
                let (keys, n_valid) = &per_axis[a][x];
                slots = slots
                    .iter()
                    .flat_map(|&(base, ok)| {
                        keys.iter()
                            .enumerate()
                            .map(move |(j, &key)| (base * spatial[a] + key, ok && j < *n_valid))
                    })
                    .collect();
            }
            for (index, ok) in slots {
                indices.push(index as u32);
                if any_causal {
                    valid.push(ok);
                }
            }
        }
        Self {
            tokens,
            window,
            indices,
            valid: any_causal.then_some(valid),
        }
    }
}
