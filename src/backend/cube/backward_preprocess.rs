//! Backward preprocessing: `delta = rowsum(dO * out)` per (batch, token, head), in f32.

use cubecl::prelude::*;

#[cube(launch)]
pub fn delta_kernel<F: Float>(
    out: &Tensor<F>,
    d_out: &Tensor<F>,
    delta: &mut Tensor<f32>,
    #[comptime] head_dim_v: usize,
    #[define(F)] _dtype: StorageType,
) {
    if ABSOLUTE_POS >= delta.len() {
        terminate!();
    }
    let offset = ABSOLUTE_POS * head_dim_v;
    let mut sum = 0.0f32;
    for c in 0..head_dim_v {
        sum += f32::cast_from(out[offset + c]) * f32::cast_from(d_out[offset + c]);
    }
    delta[ABSOLUTE_POS] = sum;
}
