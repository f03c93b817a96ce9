//! Integration tests: one binary, one module per concern.

mod attention;
mod common;
mod golden;
mod half;
mod memory;
mod oracle;
mod sweeps;
mod training;
mod validation;
