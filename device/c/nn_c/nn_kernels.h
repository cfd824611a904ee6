// piconn layer kernels in plain C (docs/KERNELS.md, arithmetic of docs/FORMAT.md).
//
// Plain functions on pointers and lengths: no MicroPython headers, no allocation,
// no division, no 64-bit arithmetic. The caller (mod_nn_c.c on the device, ctypes
// in the host tests) has checked sizes and alignment; kernels trust their arguments.
//
// Alignment: every f32/i32/u32 pointer must be 4-byte aligned (the Cortex-M0+ faults
// on unaligned word loads). u8 arrays (inputs, weights, zero points, row indices)
// may have any alignment; u16 row indices must be 2-byte aligned.
//
// Integer kinds are exact and bit-identical to the other tiers: accumulators are
// computed modulo 2^32 (unsigned arithmetic, so never undefined behaviour), which
// equals the exact int32 result whenever that result fits in int32 (the exporter
// and host/piconn/reference.py guarantee it does).
#ifndef PICONN_NN_KERNELS_H
#define PICONN_NN_KERNELS_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

// y[c] = b[c] + sum_i x[i]*w[i*n_out + c], i increasing, zero inputs skipped.
// x: u8[n_in] if x_u8 else f32[n_in]; w: f32[n_in][n_out]; b, y: f32[n_out].
void nn_dense_f32(const void *x, int x_u8, const float *w, const float *b, float *y,
    uint32_t n_in, uint32_t n_out);

// y[c] = scale[c]*sum_i x[i]*(w[i][c] - zw[c]) + b[c]; for u8 x the sum is an exact
// integer first (kept in y's words as int32 until the final scaling).
// w: u8[n_in][n_out]; zw: u8[n_out]; scale, b, y: f32[n_out].
void nn_dense_q8w(const void *x, int x_u8, const uint8_t *w, const uint8_t *zw,
    const float *scale, const float *b, float *y, uint32_t n_in, uint32_t n_out);

// acc[c] = bias[c] + sum_i x[i]*(w[i][c] - zw[c]) (int32). If rq is NULL the output
// is acc itself (y unused); else y[c] = requant(acc[c], rq[c], zy) (u8).
void nn_dense_q8(const uint8_t *x, const uint8_t *w, const uint8_t *zw, const int32_t *bias,
    const uint32_t *rq, int32_t *acc, uint8_t *y, uint32_t n_in, uint32_t n_out, uint32_t zy);

// CSC sparse layers: input i's weights are vals[k] at output rows[k] for k in
// [colptr[i], colptr[i+1]); rows are u8 (index_bytes 1) or u16 (index_bytes 2).
void nn_sparse_f32(const void *x, int x_u8, const uint32_t *colptr, const void *rows,
    uint32_t index_bytes, const float *vals, const float *b, float *y,
    uint32_t n_in, uint32_t n_out);
void nn_sparse_q8(const uint8_t *x, const uint32_t *colptr, const void *rows,
    uint32_t index_bytes, const uint8_t *vals, const uint8_t *zw, const int32_t *bias,
    const uint32_t *rq, int32_t *acc, uint8_t *y, uint32_t n_in, uint32_t n_out, uint32_t zy);

// y bits (u32[ceil(n/32)]): bit j set iff x[j] >= threshold; padding bits cleared.
void nn_binarize(const uint8_t *x, uint32_t threshold, uint32_t *y, uint32_t n);

// m[c] = popcount(x ^ w[c]) over ceil(n_in/32) words (row c of w).
// xnor_dense: bit c of y set iff m[c] <= thr[c] (y: u32[ceil(n_out/32)], padding cleared).
// xnor_out:   y[c] = a[c]*(n_in - 2*m[c]) + b[c] (int32).
void nn_xnor_dense(const uint32_t *x, const uint32_t *w, const int32_t *thr, uint32_t *y,
    uint32_t n_in, uint32_t n_out);
void nn_xnor_out(const uint32_t *x, const uint32_t *w, const int32_t *a, const int32_t *b,
    int32_t *y, uint32_t n_in, uint32_t n_out);

// The same with pw[c] = popcount(W[c]) over the row (nn_popcount_rows, once at load):
// m[c] = pw[c] + popcount(x) - 2*popcount(x & W[c]), where x & W[c] needs only the words
// of x from its first nonzero word to its last (a binarized MNIST digit: about 18 of 25).
// Same results as the kernels above when pw is right.
void nn_xnor_dense_pw(const uint32_t *x, const uint32_t *w, const int32_t *thr,
    const uint32_t *pw, uint32_t *y, uint32_t n_in, uint32_t n_out);
void nn_xnor_out_pw(const uint32_t *x, const uint32_t *w, const int32_t *a, const int32_t *b,
    const uint32_t *pw, int32_t *y, uint32_t n_in, uint32_t n_out);
// pw[r] = popcount of row r of w (n_rows rows of nw words), for the _pw kernels.
void nn_popcount_rows(const uint32_t *w, uint32_t nw, uint32_t n_rows, uint32_t *pw);

// y[c] = max(y[c], 0) in place (as `if y < 0: y = 0`: -0.0 and NaN are kept).
void nn_relu_f32(float *y, uint32_t n);

// Helpers (docs/KERNELS.md). Index of the first maximum of y[:n] (n >= 1); for floats
// the first NaN wins and -0.0 equals 0.0, as numpy's argmax and `t > v` comparisons.
uint32_t nn_argmax_i32(const int32_t *y, uint32_t n);
uint32_t nn_argmax_f32(const float *y, uint32_t n);
// Load-time checks on arrays of any alignment (they run before nn copies misaligned
// arrays). check_csc: 0 if colptr (u32[n_in+1]) starts at 0, ends at nnz, never
// decreases and stays <= nnz, and each column's rows (u8 or u16 by index_bytes) are
// strictly increasing and < n_out; else 1 + the first bad column, n_in + 1 for bad ends.
// check_f32: 0 if the n f32 values are finite, else 1 + the index of the first that is not.
uint32_t nn_check_csc(const uint8_t *colptr, const uint8_t *rows, uint32_t index_bytes,
    uint32_t n_in, uint32_t n_out, uint32_t nnz);
uint32_t nn_check_f32(const uint8_t *a, uint32_t n);

// Building blocks, exported for tests.
// FORMAT.md requantization of one accumulator (rq = M | s1 << 16 | s2 << 24).
uint8_t nn_requant(int32_t acc, uint32_t rq, uint32_t zy);
// popcount(x[k] ^ w[k]) summed over k < n_words.
uint32_t nn_popcount_xor(const uint32_t *x, const uint32_t *w, uint32_t n_words);

#ifdef __cplusplus
}
#endif

#endif // PICONN_NN_KERNELS_H
