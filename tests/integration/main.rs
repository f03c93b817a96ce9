//! Integration tests: one binary, one module per concern.

mod attention;
mod common;
mod golden;
mod half;
mod memory;
mod modules;
mod oracle;
mod sweeps;
mod tiles;
mod training;
mod tuning_cache;
mod validation;
