// Binary (XNOR) kernels of format version 2 (docs/FORMAT.md "Binary operators"):
// BINARIZE, XNOR_CONV_2D, BINARY_MAX_POOL_2D and BINARIZE_CONV_2D in plain C on
// pointers and lengths.
//
// A bits tensor is NHWC with the channels packed: each pixel is a row of
// words(C) = ceil(C / 32) little-endian u32 words, channel c at bit c % 32 of word
// c / 32, a set bit +1, padding bits 0. No MicroPython headers and no allocation: the
// caller (nn_graph.c) has checked every size against the model and passes the scratch
// buffer that holds one output pixel's receptive field.
#ifndef PICONN_NN_XNOR_GRAPH_H
#define PICONN_NN_XNOR_GRAPH_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

// Words of the largest receptive field (kh * kw * words(C_in)) of XNOR_CONV_2D.
#define NN_XNOR_MAX_FIELD_WORDS (1024)

// Taps of the largest receptive field (kh * kw * C_in) of BINARIZE_CONV_2D: every
// |(x - zx) * w| <= 255 * 128, so a sum of 1024 stays below 2^25.
#define NN_BCONV_MAX_FIELD_TAPS (1024)

// Geometry of XNOR_CONV_2D and BINARY_MAX_POOL_2D (k_h, k_w: the filter or the window).
typedef struct {
    uint32_t batches;
    uint32_t in_h, in_w, in_words;  // in_words: words(C_in), the row of one pixel
    uint32_t out_h, out_w, out_c;   // out_c: XNOR_CONV_2D's output channels
    uint32_t k_h, k_w;
    uint32_t stride_h, stride_w;
    uint32_t pad_top, pad_left;
} nn_xnor_geometry_t;

// BINARIZE: rows of c int8 values to rows of words(c) words; bit j of a row set iff
// bounds[2j] <= x[j] <= bounds[2j + 1].
void nn_xnor_binarize(const int8_t *x, uint32_t rows, uint32_t c, const int32_t *bounds,
    uint32_t *y);

// XNOR_CONV_2D. Per output pixel: the receptive field gathered into field (taps outside
// the image read -1: words 0), then per output channel m = popcount(field ^ w[c]) over
// the k_h * k_w * in_words words of weight row c. bits output (thr = ch[c_out]): bit c
// set iff m <= thr[c]; int32 output (ch = a[c_out] then b[c_out]):
// y[c] = a[c] * (n_bits - 2m) + b[c]. field: field_words >= k_h * k_w * in_words.
void nn_xnor_conv_2d_bits(const nn_xnor_geometry_t *p, const uint32_t *x, const uint32_t *w,
    const int32_t *thr, uint32_t *y, uint32_t *field);
void nn_xnor_conv_2d_i32(const nn_xnor_geometry_t *p, const uint32_t *x, const uint32_t *w,
    const int32_t *ch, uint32_t n_bits, int32_t *y, uint32_t *field);

// Geometry of BINARIZE_CONV_2D: int8 x [batches, in_h, in_w, in_c], weights
// [out_c, k_h, k_w, in_c], bits y [batches, out_h, out_w, out_c].
typedef struct {
    uint32_t batches;
    uint32_t in_h, in_w, in_c;
    uint32_t out_h, out_w, out_c;
    uint32_t k_h, k_w;
    uint32_t stride_h, stride_w;
    uint32_t pad_top, pad_left;
    int32_t input_zero;
} nn_bconv_geometry_t;

// BINARIZE_CONV_2D: bit c of output pixel (b, oy, ox) set iff
// sum over the taps inside the image of (x - zx) * w[c] >= thr[c]. Per output pixel the
// taps with x != zx are listed once in list (room for k_h * k_w * in_c words rounded up
// to even), then every group of four channels sums over that list only; a blank field
// (every x == zx) copies the bits of the previous blank one.
void nn_xnor_bconv_2d(const nn_bconv_geometry_t *p, const int8_t *x, const int8_t *w,
    const int32_t *thr, uint32_t *y, uint32_t *list);

// BINARY_MAX_POOL_2D: each output row the OR of the window's rows inside the image.
void nn_xnor_max_pool(const nn_xnor_geometry_t *p, const uint32_t *x, uint32_t *y);

#ifdef __cplusplus
}
#endif

#endif // PICONN_NN_XNOR_GRAPH_H
