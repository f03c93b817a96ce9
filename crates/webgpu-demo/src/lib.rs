//! The WebGPU browser demo of burn-natten: 2-D neighborhood attention on an image, run with
//! Burn's `Wgpu` backend on the browser's WebGPU (wasm32), checked against the reference on
//! NdArray, with the attention weights of a clicked pixel drawn as a heat map.
//!
//! The page is `www/index.html`; `scripts/build-webgpu-demo.sh` builds the wasm module and its
//! JavaScript bindings, `scripts/test-webgpu-demo.sh` drives the page in headless Chromium.
//!
//! Everything but the browser bindings (`web`, compiled on wasm32 only) is plain Rust that the
//! host's `cargo test` checks: the image and its Q/K/V ([`scene`]), the heat map ([`weights`],
//! from `natten-core`'s window rule) and the timed runs ([`run`], generic over the backend).

pub mod run;
pub mod scene;
#[cfg(target_arch = "wasm32")]
mod web;
pub mod weights;

pub use natten_core::NattenError;

/// Everything that can go wrong in the demo; the page shows its message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DemoError {
    /// Bad input from the page (image size, clicked pixel, head, implementation).
    #[error("{0}")]
    Input(String),
    /// The library rejected the problem (e.g. kernel size x dilation larger than the image).
    #[error(transparent)]
    Natten(#[from] NattenError),
    /// The device failed (e.g. reading a result back).
    #[error("{0}")]
    Backend(String),
}
