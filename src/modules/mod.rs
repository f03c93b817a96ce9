//! Neighborhood-attention layers: Burn modules with a QKV projection, `na1d`/`na2d`/`na3d` and
//! an output projection, as NATTEN's `NeighborhoodAttention1D/2D/3D`.
//!
//! Each layer has a [`Config`](burn::config::Config) (`NeighborhoodAttention2dConfig`, ...)
//! whose `init` validates it and returns the module; `forward` maps `[batch, *spatial,
//! embed_dim]` to the same shape. Both return a [`NattenError`](crate::NattenError) instead of
//! panicking on bad configurations or inputs.

mod check;
mod heads;
mod layers;

pub use layers::{
    NeighborhoodAttention1d, NeighborhoodAttention1dConfig, NeighborhoodAttention2d,
    NeighborhoodAttention2dConfig, NeighborhoodAttention3d, NeighborhoodAttention3dConfig,
};
