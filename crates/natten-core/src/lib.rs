//! Neighborhood-attention semantics of NATTEN 0.21, with no Burn dependency.
//!
//! This crate is the one source of truth for the window math ([`window`]), the neighbour
//! tables of the reference path ([`neighborhood`]), NATTEN's validation rules ([`validate`],
//! [`shape`]) and FLOP counts ([`flops`]). The reference path, the CubeCL kernels and the CUDA
//! kernels all mirror or call it, and are tested against the same golden data.

mod axis;
mod error;
pub mod flops;
pub mod neighborhood;
pub mod shape;
pub mod validate;
pub mod window;

pub use axis::AxisParams;
pub use error::NattenError;
pub use neighborhood::NeighborTable;
pub use shape::AttentionShape;
pub use window::{AxisWindow, axis_window};

#[cfg(test)]
mod tests;
