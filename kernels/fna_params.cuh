// Launch parameters of the native FNA forward: one struct passed by value. The Rust mirror is
// `FnaForwardParams` in src/backend/native/params.rs (#[repr(C)], same fields, same order).
#pragma once

namespace natten_native {

struct FnaForwardParams {
    // Q [batch, tokens, heads, head_dim], K [batch, tokens, heads_kv, head_dim],
    // V [batch, tokens, heads_kv, head_dim], out like Q, all contiguous (heads-last);
    // lse [batch, tokens, heads] f32. Spatial axes are flattened row-major into `tokens`.
    const void* q;
    const void* k;
    const void* v;
    void* out;
    float* lse;
    int batch;
    int tokens;
    int heads;
    int heads_kv;
    int head_dim;  // multiple of 8, at most the kernel's compile-time head dim
    // Per axis, padded in front to 3 axes (length 1, kernel 1, stride 1, dilation 1).
    int len[3];
    int kernel[3];
    int stride[3];
    int dilation[3];
    int causal[3];
    // Tile shapes as log2 of the extent per axis (extents are powers of two whose product is
    // the kernel's block size), and the number of Q tiles per axis in dilation group 0.
    int q_tile_log2[3];
    int kv_tile_log2[3];
    int q_tiles[3];
    float scale;       // softmax scale
    float scale_log2;  // scale * log2(e)
};

}  // namespace natten_native
