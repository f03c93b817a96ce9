//! Integration tests: one binary, one module per concern.

mod attention;
mod common;
mod golden;
mod half;
mod memory;
mod modules;
#[cfg(feature = "cuda-native")]
mod native;
mod oracle;
mod sweeps;
mod tiles;
mod training;
mod tuning_cache;
mod validation;
