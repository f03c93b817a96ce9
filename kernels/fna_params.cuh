// Launch parameters of the native FNA kernels (forward, dQ pass, dK/dV pass): one struct passed
// by value. The Rust mirror is `FnaParams` in src/backend/native/plan.rs (#[repr(C)], same
// fields, same order).
#pragma once

namespace natten_native {

struct FnaParams {
    // Q [batch, tokens, heads, head_dim], K [batch, kv_tokens, heads_kv, head_dim],
    // V [batch, kv_tokens, heads_kv, head_dim_v], out / d_out like Q with head_dim_v columns,
    // dq like Q, dk like K, dv like V, all contiguous (heads-last); lse and delta
    // [batch, tokens, heads] f32. Spatial axes are flattened row-major into `tokens`. The
    // forward uses q, k, v, out, lse; the backward passes all of them (delta is written by the
    // dQ pass, or the fused backward's prologue, and read by the dK/dV pass).
    const void* q;
    const void* k;
    const void* v;
    void* out;
    float* lse;
    const void* d_out;
    void* dq;
    void* dk;
    void* dv;
    float* delta;
    // The fused backward's dQ accumulator (like dq, f32; fna_backward_fused_dq_sm90.cuh); unused
    // by the other kernels.
    float* dq_acc;
    int batch;
    int tokens;
    int kv_tokens;   // == tokens for NA
    int heads;
    int heads_kv;
    int head_dim;    // of Q and K: a multiple of 8, at most the kernel's compile-time head dim
    int head_dim_v;  // of V and out: the same rule
    // 0: neighborhood attention (the window rule of na_window.cuh). 1: attention (FMHA) on one
    // axis: query i sees keys [0, kv_len) or, causal, [0, min(i + 1, kv_len)) (top-left
    // aligned); kernel, stride and dilation are 1.
    int dense;
    // Per axis, padded in front to 3 axes (length 1, kernel 1, stride 1, dilation 1); kv_len is
    // the key grid (== len for NA).
    int len[3];
    int kv_len[3];
    int kernel[3];
    int stride[3];
    int dilation[3];
    int causal[3];
    // Tile shapes as log2 of the extent per axis (extents are powers of two whose product is
    // the kernel's block size), and the number of Q tiles / KV tiles per axis in dilation
    // group 0 (the longest): the launch grids of the query-side and key-side passes.
    int q_tile_log2[3];
    int kv_tile_log2[3];
    int q_tiles[3];
    int kv_tiles[3];
    float scale;       // softmax scale
    float scale_log2;  // scale * log2(e)
    // The persistent Hopper forward's work counter: [items taken, CTAs finished], zero before
    // each launch; the launch's last CTA to finish zeroes it again (fna_forward_sm90.cuh). One
    // per device (its launches are ordered on one stream); unused by the other kernels.
    unsigned int* item_counter;
};
// The host's mirror (FnaParams in src/backend/native/plan.rs) has the same layout.
static_assert(sizeof(FnaParams) == 256, "FnaParams in src/backend/native/plan.rs");

}  // namespace natten_native
