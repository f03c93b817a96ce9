//! Build script: a no-op until the native CUDA kernels (kernels/*.cu) land; then it compiles
//! them to fatbins with nvcc when the native CUDA feature is on.

fn main() {}
