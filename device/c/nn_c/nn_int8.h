// int8 kernels of format version 2 (docs/FORMAT.md "Version 2"): TensorFlow Lite Micro's
// int8 reference arithmetic, bit for bit, in plain C on pointers and lengths.
//
// No MicroPython headers and no allocation: the caller (nn_graph.c) has checked every
// size, offset and alignment against the model and passes a scratch buffer where a
// kernel needs one. Tensors are NHWC; weights keep TensorFlow Lite's layouts
// (CONV_2D [c_out, kh, kw, c_in], DEPTHWISE_CONV_2D [1, kh, kw, c_out],
// FULLY_CONNECTED [c_out, depth]). int32 and f32 arrays must be 4-byte aligned.
//
// CONV_2D and FULLY_CONNECTED compute acc = b + sum w * (x - input_zero) over the taps
// whose x differs from input_zero (the others add nothing: after a ReLU most activations
// equal the zero point), from the bias tensor b itself (NULL: 0); DEPTHWISE_CONV_2D by
// words computes acc = folded bias + sum w * x over every tap (taps outside the image
// read the zero point), its other cases as CONV_2D does. All requantize with the channel
// table of the file.
#ifndef PICONN_NN_INT8_H
#define PICONN_NN_INT8_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

// One record of a "channels" table (FORMAT.md): per output channel of CONV_2D,
// DEPTHWISE_CONV_2D and FULLY_CONNECTED.
typedef struct {
    int32_t bias;        // b - input_zero * sum(w): the input zero point folded in
    int32_t multiplier;  // requantization: MultiplyByQuantizedMultiplier(acc, multiplier, shift)
    int32_t shift;
} nn_i8_channel_t;

// Geometry and quantization of CONV_2D, DEPTHWISE_CONV_2D and FULLY_CONNECTED (as a 1x1
// convolution over in_w = rows, in_h = 1).
typedef struct {
    uint32_t batches;
    uint32_t in_h, in_w, in_c;
    uint32_t out_h, out_w, out_c;
    uint32_t k_h, k_w;
    uint32_t stride_h, stride_w;
    uint32_t pad_top, pad_left;
    uint32_t depth_multiplier;  // DEPTHWISE_CONV_2D: out_c = in_c * depth_multiplier
    int32_t input_zero, output_zero;
    int32_t act_min, act_max;
} nn_i8_conv_t;

// AVERAGE_POOL_2D, MAX_POOL_2D (channels = in_c = out_c).
typedef struct {
    uint32_t batches;
    uint32_t in_h, in_w, channels;
    uint32_t out_h, out_w;
    uint32_t filter_h, filter_w;
    uint32_t stride_h, stride_w;
    uint32_t pad_top, pad_left;
    int32_t act_min, act_max;
} nn_i8_pool_t;

#define NN_I8_MAX_RANK (4)

// ADD with broadcasting: shapes right-aligned to 4 dimensions (leading 1s).
typedef struct {
    uint32_t out_dims[NN_I8_MAX_RANK];
    uint32_t in1_dims[NN_I8_MAX_RANK];  // each 1 or the output's
    uint32_t in2_dims[NN_I8_MAX_RANK];
    int32_t input1_offset, input2_offset;
    int32_t left_shift;
    int32_t input1_multiplier, input1_shift;
    int32_t input2_multiplier, input2_shift;
    int32_t output_multiplier, output_shift;
    int32_t output_zero;
    int32_t act_min, act_max;
} nn_i8_add_t;

// Scratch bytes (4-byte aligned) that make nn_i8_add fast: two tables of the 256
// rescaled values of each input. With less, it computes them per element.
#define NN_I8_ADD_SCRATCH (2 * 256 * 4)

// Scratch for convolutions: a row of out_c int32 sums and the taps of one output pixel
// that differ from the input zero point (4 bytes each, kh * kw * c_in + 1 at most) when
// both fit; otherwise windows are taken in pieces as long as the scratch holds.
#define NN_I8_CONV_MIN_SCRATCH (64 * 4)

// ---------------------------------------------------------------------------
// Arithmetic (exported for tests)

// MultiplyByQuantizedMultiplier: x * multiplier * 2^(shift - 31), rounded twice (a
// rounding doubling high multiply, then a rounding right shift), shift in [-31, 30].
int32_t nn_i8_mbqm(int32_t x, int32_t multiplier, int32_t shift);
// SaturatingRoundingDoublingHighMul (gemmlowp).
int32_t nn_i8_srdhm(int32_t a, int32_t b);
// RoundingDivideByPOT: x / 2^exponent rounded to nearest, halves away from 0 (0..31).
int32_t nn_i8_rdbpot(int32_t x, uint32_t exponent);

// ---------------------------------------------------------------------------
// Kernels

// CONV_2D (and FULLY_CONNECTED). scratch: at least NN_I8_CONV_MIN_SCRATCH bytes.
void nn_i8_conv_2d(const nn_i8_conv_t *p, const int8_t *x, const int8_t *w,
    const int32_t *bias, const nn_i8_channel_t *ch, int8_t *y, uint32_t *scratch,
    uint32_t scratch_bytes);
// DEPTHWISE_CONV_2D. With depth multiplier 1 and a multiple of 4 channels, a scratch of
// kh * kw * 2 pointers + 5 * in_c bytes makes it run four channels per word.
void nn_i8_depthwise_conv_2d(const nn_i8_conv_t *p, const int8_t *x, const int8_t *w,
    const int32_t *bias, const nn_i8_channel_t *ch, int8_t *y, uint32_t *scratch,
    uint32_t scratch_bytes);
void nn_i8_average_pool(const nn_i8_pool_t *p, const int8_t *x, int8_t *y);
void nn_i8_max_pool(const nn_i8_pool_t *p, const int8_t *x, int8_t *y);
void nn_i8_add(const nn_i8_add_t *p, const int8_t *x1, const int8_t *x2, int8_t *y,
    uint32_t *scratch, uint32_t scratch_bytes);
// SOFTMAX over rows of `depth` (1..511) values; exp: the operator's table (i32[256]).
void nn_i8_softmax(const int8_t *x, int8_t *y, uint32_t rows, uint32_t depth,
    const int32_t *exp, int32_t diff_min);
// PAD with `value`: dims of x (4, right-aligned), before[k]/after[k] elements per dimension.
void nn_i8_pad(const int8_t *x, int8_t *y, const uint32_t *dims, const uint32_t *before,
    const uint32_t *after, int8_t value);
// MEAN over height and width of NHWC x: y[n, c].
void nn_i8_mean_hw(const int8_t *x, int8_t *y, uint32_t batches, uint32_t h, uint32_t w,
    uint32_t c, int32_t input_zero_times_count, int32_t multiplier, int32_t shift,
    int32_t output_zero);
// LOGISTIC, TANH, QUANTIZE int8 -> int8: y = lut[x + 128].
void nn_i8_lut8(const int8_t *x, int8_t *y, uint32_t n, const int8_t *lut);
// DEQUANTIZE: y (f32 bits) = lutf[x + 128].
void nn_i8_lut_f32(const int8_t *x, uint32_t *y, uint32_t n, const uint32_t *lutf);
// QUANTIZE f32 -> int8: round(x / scale) (float32 division, halves away from 0) + zero,
// clamped to int8 (NaN gives 127).
void nn_i8_quantize_f32(const float *x, int8_t *y, uint32_t n, float scale,
    int32_t output_zero);

#ifdef __cplusplus
}
#endif

#endif // PICONN_NN_INT8_H
