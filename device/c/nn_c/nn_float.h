// float32 operators of format version 2 (docs/FORMAT.md "float32 operators"): TensorFlow
// Lite Micro's float reference kernels in plain C on pointers and lengths, and the
// graph runner's check and run of them (nn_graph.c dispatches an operator here when its
// output is float32 and its kind is below QUANTIZE).
//
// Every sum is float32 in the reference kernel's order (convolution: filter_y, filter_x,
// in_channel, taps outside the image skipped; then + bias; then the clamp), compiled
// with -ffp-contract=off, so the results are the host reference's (host/piconn/
// float_ops.py) bit for bit. SOFTMAX, LOGISTIC and TANH use nn_f32_exp, piconn's own
// expf (the C library's differs between libraries), which the host reproduces.
//
// No MicroPython headers and no allocation. Tensors are NHWC; weights keep TensorFlow
// Lite's layouts (CONV_2D [c_out, kh, kw, c_in], DEPTHWISE_CONV_2D [1, kh, kw, c_out],
// FULLY_CONNECTED [c_out, depth]); arrays must be 4-byte aligned and an output must not
// overlap its inputs (the memory plan keeps them apart).
#ifndef PICONN_NN_FLOAT_H
#define PICONN_NN_FLOAT_H

#include <stdint.h>

#include "nn_graph.h"

#ifdef __cplusplus
extern "C" {
#endif

// CONV_2D and DEPTHWISE_CONV_2D (out_c = in_c * depth_multiplier).
typedef struct {
    uint32_t batches;
    uint32_t in_h, in_w, in_c;
    uint32_t out_h, out_w, out_c;
    uint32_t k_h, k_w;
    uint32_t stride_h, stride_w;
    uint32_t pad_top, pad_left;
    uint32_t depth_multiplier;
    float act_min, act_max;  // the fused activation as a clamp
} nn_f32_conv_t;

// AVERAGE_POOL_2D, MAX_POOL_2D.
typedef struct {
    uint32_t batches;
    uint32_t in_h, in_w, channels;
    uint32_t out_h, out_w;
    uint32_t filter_h, filter_w;
    uint32_t stride_h, stride_w;
    uint32_t pad_top, pad_left;
    float act_min, act_max;
} nn_f32_pool_t;

// ADD with broadcasting: the output's 4 dims, each input's element strides (0 along a
// broadcast dim).
typedef struct {
    uint32_t out_dims[4];
    uint32_t in1_strides[4], in2_strides[4];
    float act_min, act_max;
} nn_f32_add_t;

void nn_f32_conv_2d(const nn_f32_conv_t *p, const float *x, const float *w, const float *bias,
    float *y);
void nn_f32_depthwise_conv_2d(const nn_f32_conv_t *p, const float *x, const float *w,
    const float *bias, float *y);
// rows x depth inputs, weights [c_out, depth] -> rows x c_out.
void nn_f32_fully_connected(const float *x, const float *w, const float *bias, float *y,
    uint32_t rows, uint32_t depth, uint32_t c_out, float act_min, float act_max);
void nn_f32_average_pool(const nn_f32_pool_t *p, const float *x, float *y);
void nn_f32_max_pool(const nn_f32_pool_t *p, const float *x, float *y);
void nn_f32_add(const nn_f32_add_t *p, const float *a, const float *b, float *y);
// Zero padding of x (4 dims) by before/after elements per dim.
void nn_f32_pad(const float *x, float *y, const uint32_t dims[4], const uint32_t before[4],
    const uint32_t after[4]);
// MEAN over height and width of [n, h, w, c] -> [n, c].
void nn_f32_mean_hw(const float *x, float *y, uint32_t n, uint32_t h, uint32_t w, uint32_t c);
void nn_f32_softmax(const float *x, float *y, uint32_t rows, uint32_t depth, float beta);
void nn_f32_logistic(const float *x, float *y, uint32_t n);
void nn_f32_tanh(const float *x, float *y, uint32_t n);
// e^x: float_ops.exp_f32's steps (0 below -87, +inf above 88).
float nn_f32_exp(float x);

// The graph runner's side: whether op is a float32 operator this file runs, its check
// (an NN_GRAPH_E_* code; nn_graph_check has checked the header and the op's indices)
// and its run.
int nn_graph_is_float(const uint8_t *model, const nn_graph_op_t *op);
uint32_t nn_graph_float_check(const uint8_t *model, const nn_graph_op_t *op);
void nn_graph_float_run(const uint8_t *model, uint8_t *arena, const nn_graph_op_t *op);

#ifdef __cplusplus
}
#endif

#endif // PICONN_NN_FLOAT_H
