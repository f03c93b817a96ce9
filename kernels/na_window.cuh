// The window rule of neighborhood attention, the CUDA mirror of `natten_core::window` (the one
// source of truth; same names, same argument order, same formulas):
//
//   g = x % d ; i = x / d ; Lg = ceil((L - g) / d)        dilation group, index in group, length
//   non-causal: leader = min((i / s) * s + s / 2, Lg - 1); start = clamp(leader - k / 2, 0, Lg - k)
//               end = start + k
//   causal:     leader = min((i / s) * s + s - 1, Lg - 1); start = max(leader - (k - 1), 0)
//               end = min(i + 1, Lg)
//
// A key x' is a neighbour of query x on an axis iff x' % d == g and start <= x' / d < end.
// Kernels work on 3 axes; lower ranks are padded in front with axes of length 1 and kernel size 1.
#pragma once

namespace natten_native {

// Length of dilation group `group`: ceil((len - group) / dilation).
__device__ __forceinline__ int group_len(int len, int dilation, int group) {
    return (len - group + dilation - 1) / dilation;
}

// The leader (window-defining query) of group-local query `i`.
__device__ __forceinline__ int leader(int i, int glen, int stride, bool causal) {
    int lead = (i / stride) * stride + (causal ? stride - 1 : stride / 2);
    return lead < glen ? lead : glen - 1;
}

// First key (group-local) of the window of group-local query `i`.
__device__ __forceinline__ int window_start(int i, int glen, int kernel, int stride, bool causal) {
    int lead = leader(i, glen, stride, causal);
    if (causal) {
        int start = lead - (kernel - 1);
        return start > 0 ? start : 0;
    }
    int start = lead - kernel / 2;
    start = start > 0 ? start : 0;
    return start < glen - kernel ? start : glen - kernel;
}

// One past the last key (group-local) of the window of group-local query `i` starting at `start`.
__device__ __forceinline__ int window_end(int i, int glen, int kernel, int start, bool causal) {
    if (causal) {
        return i + 1 < glen ? i + 1 : glen;
    }
    return start + kernel;
}

}  // namespace natten_native

namespace natten_native {

// Group-local queries that see group-local key `j` on one axis: [lo, hi) (empty when lo >= hi).
// Window starts and ends are non-decreasing in the query, so lo is the first query whose window
// ends after j and hi the first query whose window starts after j: two binary searches (as
// natten_core::window::inverse_window_range).
__device__ __forceinline__ void inverse_window(int j, int glen, int kernel, int stride, bool causal, int& lo,
                                               int& hi) {
    int a = 0, b = glen;
    while (a < b) {
        const int m = (a + b) / 2;
        const int start = window_start(m, glen, kernel, stride, causal);
        if (window_end(m, glen, kernel, start, causal) > j) {
            b = m;
        } else {
            a = m + 1;
        }
    }
    lo = a;
    b = glen;
    while (a < b) {
        const int m = (a + b) / 2;
        if (window_start(m, glen, kernel, stride, causal) > j) {
            b = m;
        } else {
            a = m + 1;
        }
    }
    hi = a;
}

}  // namespace natten_native
