// float32 operators of format version 2 (see nn_float.h, docs/FORMAT.md "float32
// operators"). Kernels first (plain C on pointers and lengths), then the graph runner's
// check and run of them.
//
// Built with -ffp-contract=off (micropython.mk, micropython.cmake, natmod): every
// product and sum is rounded to float32 on its own, as the host reference rounds it; a
// fused multiply-add would change the last bits.
#include "nn_float.h"

#include <stddef.h>

// The multiply-add loops run from RAM on the RP2040 (.time_critical.* sections, placed in
// SRAM by the pico-sdk linker script): flash runs through a 16 KB XIP cache that the
// streamed weights keep evicting (as nn_int8.c's kernels).
#if defined(NN_KERNELS_IN_RAM) && NN_KERNELS_IN_RAM
#define NN_F32_HOT __attribute__((section(".time_critical.nn_float")))
#else
#define NN_F32_HOT
#endif

// piconn.float_ops' exp constants, as exact float32 (hexadecimal) literals: log2(e), ln 2
// in two parts (k * LN2_HI is exact for |k| < 2^8), the Taylor coefficients 1/7! ... 1/1!, 1.
#define LOG2E (0x1.715476p+0f)
#define LN2_HI (0x1.63p-1f)
#define LN2_LO (-0x1.bd0106p-13f)
#define EXP_MIN (-87.0f)
#define EXP_MAX (88.0f)
#define LOGISTIC_UPPER (0x1.09e79ep+4f)  // TensorFlow Lite Micro's cutoffs (16.619047...)
#define LOGISTIC_LOWER (-9.0f)
#define F32_INF_BITS (0x7f800000u)
#define F32_LOWEST_BITS (0xff7fffffu)  // -FLT_MAX

static const float exp_poly[] = {
    0x1.a01a02p-13f, 0x1.6c16c2p-10f, 0x1.111112p-7f, 0x1.555556p-5f, 0x1.555556p-3f, 0.5f,
    1.0f, 1.0f,
};

// A float read as its bits (may alias the float array).
typedef uint32_t nn_f32_bits __attribute__((may_alias));

// Whether x is +0 or -0, from its bits (no soft-float compare). A zero input adds x * w =
// +-0 to a sum that starts at +0 and so is never -0: it leaves the sum unchanged and the
// multiply-add is skipped (after a ReLU most activations are 0). The result is the
// reference's bit for bit.
static inline int is_zero(const float *x) {
    return (*(const nn_f32_bits *)x << 1) == 0;
}

static inline float f32_of_bits(uint32_t u) {
    union {
        uint32_t u;
        float f;
    } v = { u };
    return v.f;
}

// ActivationFunctionWithMinMax: min(max(v, lo), hi).
static inline float clamp(float v, float lo, float hi) {
    v = v < lo ? lo : v;
    return hi < v ? hi : v;
}

// ---------------------------------------------------------------------------
// Kernels

// One output channel at a time, over every pixel: its weights (kh x kw x in_c floats) stay
// in the XIP cache while the input, in SRAM, is read again; each output's sum is the same.
NN_F32_HOT void nn_f32_conv_2d(const nn_f32_conv_t *p, const float *x, const float *w,
    const float *bias, float *y) {
    uint32_t pixels = p->out_h * p->out_w;
    for (uint32_t b = 0; b < p->batches; b++) {
        const float *xb = x + b * p->in_h * p->in_w * p->in_c;
        float *yb = y + b * pixels * p->out_c;
        for (uint32_t oc = 0; oc < p->out_c; oc++) {
            const float *wc = w + oc * p->k_h * p->k_w * p->in_c;
            float bias_c = bias ? bias[oc] : 0.0f;
            float *yc = yb + oc;
            for (uint32_t oy = 0; oy < p->out_h; oy++) {
                int32_t iy0 = (int32_t)(oy * p->stride_h) - (int32_t)p->pad_top;
                for (uint32_t ox = 0; ox < p->out_w; ox++) {
                    int32_t ix0 = (int32_t)(ox * p->stride_w) - (int32_t)p->pad_left;
                    float total = 0.0f;
                    for (uint32_t ky = 0; ky < p->k_h; ky++) {
                        int32_t iy = iy0 + (int32_t)ky;
                        if (iy < 0 || iy >= (int32_t)p->in_h) {
                            continue;
                        }
                        for (uint32_t kx = 0; kx < p->k_w; kx++) {
                            int32_t ix = ix0 + (int32_t)kx;
                            if (ix < 0 || ix >= (int32_t)p->in_w) {
                                continue;
                            }
                            const float *xp = xb + ((uint32_t)iy * p->in_w + (uint32_t)ix) * p->in_c;
                            const float *wp = wc + (ky * p->k_w + kx) * p->in_c;
                            for (uint32_t ic = 0; ic < p->in_c; ic++) {
                                if (!is_zero(&xp[ic])) {
                                    total += xp[ic] * wp[ic];
                                }
                            }
                        }
                    }
                    *yc = clamp(total + bias_c, p->act_min, p->act_max);
                    yc += p->out_c;
                }
            }
        }
    }
}

NN_F32_HOT void nn_f32_depthwise_conv_2d(const nn_f32_conv_t *p, const float *x, const float *w,
    const float *bias, float *y) {
    for (uint32_t b = 0; b < p->batches; b++) {
        const float *xb = x + b * p->in_h * p->in_w * p->in_c;
        for (uint32_t oy = 0; oy < p->out_h; oy++) {
            int32_t iy0 = (int32_t)(oy * p->stride_h) - (int32_t)p->pad_top;
            for (uint32_t ox = 0; ox < p->out_w; ox++) {
                int32_t ix0 = (int32_t)(ox * p->stride_w) - (int32_t)p->pad_left;
                for (uint32_t oc = 0; oc < p->out_c; oc++) {
                    uint32_t ic = oc / p->depth_multiplier;
                    float total = 0.0f;
                    for (uint32_t ky = 0; ky < p->k_h; ky++) {
                        int32_t iy = iy0 + (int32_t)ky;
                        if (iy < 0 || iy >= (int32_t)p->in_h) {
                            continue;
                        }
                        for (uint32_t kx = 0; kx < p->k_w; kx++) {
                            int32_t ix = ix0 + (int32_t)kx;
                            if (ix < 0 || ix >= (int32_t)p->in_w) {
                                continue;
                            }
                            const float *xv = &xb[((uint32_t)iy * p->in_w + (uint32_t)ix)
                                                  * p->in_c + ic];
                            if (!is_zero(xv)) {
                                total += *xv * w[(ky * p->k_w + kx) * p->out_c + oc];
                            }
                        }
                    }
                    *y++ = clamp(total + (bias ? bias[oc] : 0.0f), p->act_min, p->act_max);
                }
            }
        }
    }
}

NN_F32_HOT void nn_f32_fully_connected(const float *x, const float *w, const float *bias, float *y,
    uint32_t rows, uint32_t depth, uint32_t c_out, float act_min, float act_max) {
    for (uint32_t r = 0; r < rows; r++) {
        const float *xr = x + r * depth;
        for (uint32_t oc = 0; oc < c_out; oc++) {
            const float *wr = w + oc * depth;
            float total = 0.0f;
            for (uint32_t d = 0; d < depth; d++) {
                if (!is_zero(&xr[d])) {
                    total += xr[d] * wr[d];
                }
            }
            *y++ = clamp(total + (bias ? bias[oc] : 0.0f), act_min, act_max);
        }
    }
}

// The window of output pixel (oy, ox) clipped to the image: rows [*y0, *y1), columns
// [*x0, *x1).
static void pool_window(const nn_f32_pool_t *p, uint32_t oy, uint32_t ox, uint32_t *y0,
    uint32_t *y1, uint32_t *x0, uint32_t *x1) {
    int32_t top = (int32_t)(oy * p->stride_h) - (int32_t)p->pad_top;
    int32_t left = (int32_t)(ox * p->stride_w) - (int32_t)p->pad_left;
    int32_t bottom = top + (int32_t)p->filter_h, right = left + (int32_t)p->filter_w;
    *y0 = top < 0 ? 0 : (uint32_t)top;
    *x0 = left < 0 ? 0 : (uint32_t)left;
    *y1 = bottom > (int32_t)p->in_h ? p->in_h : bottom < 0 ? 0 : (uint32_t)bottom;
    *x1 = right > (int32_t)p->in_w ? p->in_w : right < 0 ? 0 : (uint32_t)right;
}

void nn_f32_average_pool(const nn_f32_pool_t *p, const float *x, float *y) {
    uint32_t c_n = p->channels;
    for (uint32_t b = 0; b < p->batches; b++) {
        const float *xb = x + b * p->in_h * p->in_w * c_n;
        for (uint32_t oy = 0; oy < p->out_h; oy++) {
            for (uint32_t ox = 0; ox < p->out_w; ox++) {
                uint32_t y0, y1, x0, x1;
                pool_window(p, oy, ox, &y0, &y1, &x0, &x1);
                for (uint32_t c = 0; c < c_n; c++) {
                    float total = 0.0f, count = 0.0f;
                    for (uint32_t iy = y0; iy < y1; iy++) {
                        for (uint32_t ix = x0; ix < x1; ix++) {
                            total += xb[(iy * p->in_w + ix) * c_n + c];
                            count += 1.0f;
                        }
                    }
                    // (an empty window cannot happen: the output size keeps one tap inside)
                    *y++ = clamp(total / count, p->act_min, p->act_max);
                }
            }
        }
    }
}

void nn_f32_max_pool(const nn_f32_pool_t *p, const float *x, float *y) {
    uint32_t c_n = p->channels;
    for (uint32_t b = 0; b < p->batches; b++) {
        const float *xb = x + b * p->in_h * p->in_w * c_n;
        for (uint32_t oy = 0; oy < p->out_h; oy++) {
            for (uint32_t ox = 0; ox < p->out_w; ox++) {
                uint32_t y0, y1, x0, x1;
                pool_window(p, oy, ox, &y0, &y1, &x0, &x1);
                for (uint32_t c = 0; c < c_n; c++) {
                    float best = f32_of_bits(F32_LOWEST_BITS);
                    for (uint32_t iy = y0; iy < y1; iy++) {
                        for (uint32_t ix = x0; ix < x1; ix++) {
                            float v = xb[(iy * p->in_w + ix) * c_n + c];
                            best = best < v ? v : best;
                        }
                    }
                    *y++ = clamp(best, p->act_min, p->act_max);
                }
            }
        }
    }
}

void nn_f32_add(const nn_f32_add_t *p, const float *a, const float *b, float *y) {
    const uint32_t *d = p->out_dims, *sa = p->in1_strides, *sb = p->in2_strides;
    for (uint32_t i0 = 0; i0 < d[0]; i0++) {
        for (uint32_t i1 = 0; i1 < d[1]; i1++) {
            for (uint32_t i2 = 0; i2 < d[2]; i2++) {
                const float *pa = a + i0 * sa[0] + i1 * sa[1] + i2 * sa[2];
                const float *pb = b + i0 * sb[0] + i1 * sb[1] + i2 * sb[2];
                for (uint32_t i3 = 0; i3 < d[3]; i3++) {
                    *y++ = clamp(pa[i3 * sa[3]] + pb[i3 * sb[3]], p->act_min, p->act_max);
                }
            }
        }
    }
}

void nn_f32_pad(const float *x, float *y, const uint32_t dims[4], const uint32_t before[4],
    const uint32_t after[4]) {
    uint32_t od[4];
    for (uint32_t k = 0; k < 4; k++) {
        od[k] = dims[k] + before[k] + after[k];
    }
    uint32_t n = od[0] * od[1] * od[2] * od[3];
    for (uint32_t i = 0; i < n; i++) {
        y[i] = 0.0f;
    }
    for (uint32_t i0 = 0; i0 < dims[0]; i0++) {
        for (uint32_t i1 = 0; i1 < dims[1]; i1++) {
            for (uint32_t i2 = 0; i2 < dims[2]; i2++) {
                float *row = y + (((i0 + before[0]) * od[1] + i1 + before[1]) * od[2]
                                  + i2 + before[2]) * od[3] + before[3];
                for (uint32_t i3 = 0; i3 < dims[3]; i3++) {
                    row[i3] = *x++;
                }
            }
        }
    }
}

void nn_f32_mean_hw(const float *x, float *y, uint32_t n, uint32_t h, uint32_t w, uint32_t c) {
    float count = (float)(h * w);
    for (uint32_t b = 0; b < n; b++) {
        const float *xb = x + b * h * w * c;
        for (uint32_t ch = 0; ch < c; ch++) {
            float total = 0.0f;
            for (uint32_t i = 0; i < h * w; i++) {
                total += xb[i * c + ch];
            }
            *y++ = total / count;
        }
    }
}

float nn_f32_exp(float x) {
    if (x < EXP_MIN) {
        return 0.0f;
    }
    if (x > EXP_MAX) {
        return f32_of_bits(F32_INF_BITS);
    }
    float t = x * LOG2E;
    t = t + (x < 0.0f ? -0.5f : 0.5f);
    int32_t k = (int32_t)t;  // toward zero: round to nearest of x log2(e)
    k = k < -126 ? -126 : k > 127 ? 127 : k;
    float kf = (float)k;
    float r = (x - kf * LN2_HI) - kf * LN2_LO;
    float e = exp_poly[0];
    for (uint32_t i = 1; i < sizeof(exp_poly) / sizeof(exp_poly[0]); i++) {
        e = e * r + exp_poly[i];
    }
    return e * f32_of_bits((uint32_t)(k + 127) << 23);
}

void nn_f32_softmax(const float *x, float *y, uint32_t rows, uint32_t depth, float beta) {
    for (uint32_t r = 0; r < rows; r++, x += depth, y += depth) {
        float top = f32_of_bits(F32_LOWEST_BITS);
        for (uint32_t c = 0; c < depth; c++) {
            top = top < x[c] ? x[c] : top;
        }
        float total = 0.0f;
        for (uint32_t c = 0; c < depth; c++) {
            float e = nn_f32_exp((x[c] - top) * beta);
            y[c] = e;
            total += e;
        }
        for (uint32_t c = 0; c < depth; c++) {
            y[c] = y[c] / total;
        }
    }
}

void nn_f32_logistic(const float *x, float *y, uint32_t n) {
    for (uint32_t i = 0; i < n; i++) {
        float v = x[i];
        if (v > LOGISTIC_UPPER) {
            y[i] = 1.0f;
        } else if (v < LOGISTIC_LOWER) {
            y[i] = nn_f32_exp(v);
        } else {
            y[i] = 1.0f / (1.0f + nn_f32_exp(-v));
        }
    }
}

void nn_f32_tanh(const float *x, float *y, uint32_t n) {
    for (uint32_t i = 0; i < n; i++) {
        float v = x[i], m = v < 0.0f ? -v : v;
        float t = 1.0f - 2.0f / (nn_f32_exp(m + m) + 1.0f);
        y[i] = v < 0.0f ? -t : t;
    }
}

// ---------------------------------------------------------------------------
// The graph runner's side

static inline const nn_graph_header_t *header(const uint8_t *model) {
    return (const nn_graph_header_t *)(const void *)model;
}

static inline const nn_graph_tensor_t *tensor(const uint8_t *model, uint32_t index) {
    return (const nn_graph_tensor_t *)(const void *)(model + header(model)->tensor_table)
           + index;
}

static inline uint32_t elements(const nn_graph_tensor_t *t) {
    return t->nbytes >> 2;
}

static inline uint32_t dim_from_end(const nn_graph_tensor_t *t, uint32_t k) {
    return k < t->rank ? t->dims[t->rank - 1 - k] : 1;
}

// Input k of op (k = NN_GRAPH_MAX_OP_INPUTS: its output, which must be in the arena) of
// `dtype` and `rank` (0: any), its record checked by nn_graph.c.
#define OUTPUT (NN_GRAPH_MAX_OP_INPUTS)
static uint32_t expect(const uint8_t *model, const nn_graph_op_t *op, uint32_t k,
    uint32_t dtype, uint32_t rank, const nn_graph_tensor_t **out) {
    uint32_t e = nn_graph_expect(model, op, k, dtype, rank, out);
    return e ? e : k == OUTPUT && (*out)->storage != NN_STORAGE_ARENA ? NN_GRAPH_E_TENSOR
           : NN_GRAPH_OK;
}

static inline const float *tensor_floats(const uint8_t *model, uint8_t *arena,
    const nn_graph_tensor_t *t) {
    return (const float *)(const void *)((t->storage == NN_STORAGE_CONSTANT ? model : arena)
                                          + t->offset);
}

static inline void *data(const uint8_t *model, uint8_t *arena, uint32_t index) {
    const nn_graph_tensor_t *t = tensor(model, index);
    if (t->storage == NN_STORAGE_CONSTANT) {
        return (void *)(uintptr_t)(model + t->offset);
    }
    return arena + t->offset;
}

static const float *bias_of(const uint8_t *model, uint8_t *arena, const nn_graph_op_t *op) {
    if (op->n_inputs < 3 || op->inputs[2] == NN_GRAPH_NO_TENSOR) {
        return NULL;
    }
    return tensor_floats(model, arena, tensor(model, op->inputs[2]));
}

static uint32_t check_conv(const uint8_t *model, const nn_graph_op_t *op) {
    const nn_graph_tensor_t *x, *w, *y;
    uint32_t e;
    if ((e = expect(model, op, 0, NN_DTYPE_F32, 4, &x))
        || (e = expect(model, op, 1, NN_DTYPE_F32, 4, &w))
        || (e = expect(model, op, OUTPUT, NN_DTYPE_F32, 4, &y))
        || (e = nn_graph_check_conv_shape(op, x, w, y))) {
        return e;
    }
    return nn_graph_check_bias(model, op, NN_DTYPE_F32, y->dims[3]);
}

static uint32_t check_fully_connected(const uint8_t *model, const nn_graph_op_t *op) {
    const nn_graph_tensor_t *x, *w, *y;
    uint32_t e;
    if ((e = expect(model, op, 0, NN_DTYPE_F32, 0, &x))
        || (e = expect(model, op, 1, NN_DTYPE_F32, 2, &w))
        || (e = expect(model, op, OUTPUT, NN_DTYPE_F32, 0, &y))
        || (e = nn_graph_check_fc_shape(x, w, y))) {
        return e;
    }
    return nn_graph_check_bias(model, op, NN_DTYPE_F32, w->dims[0]);
}

static uint32_t check_pool(const uint8_t *model, const nn_graph_op_t *op) {
    const nn_graph_tensor_t *x, *y;
    uint32_t e;
    if ((e = expect(model, op, 0, NN_DTYPE_F32, 4, &x))
        || (e = expect(model, op, OUTPUT, NN_DTYPE_F32, 4, &y))) {
        return e;
    }
    return nn_graph_check_pool_shape(op, x, y);
}

static uint32_t check_add(const uint8_t *model, const nn_graph_op_t *op) {
    const nn_graph_tensor_t *a, *b, *y;
    uint32_t e;
    if ((e = expect(model, op, 0, NN_DTYPE_F32, 0, &a))
        || (e = expect(model, op, 1, NN_DTYPE_F32, 0, &b))
        || (e = expect(model, op, OUTPUT, NN_DTYPE_F32, 0, &y))) {
        return e;
    }
    return nn_graph_check_broadcast(a, b, y);
}

// Input 0 and the output: float32 of as many elements.
static uint32_t check_elementwise(const uint8_t *model, const nn_graph_op_t *op) {
    const nn_graph_tensor_t *x, *y;
    uint32_t e;
    if ((e = expect(model, op, 0, NN_DTYPE_F32, 0, &x))
        || (e = expect(model, op, OUTPUT, NN_DTYPE_F32, 0, &y))) {
        return e;
    }
    return elements(x) == elements(y) ? NN_GRAPH_OK : NN_GRAPH_E_SHAPE;
}

static uint32_t check_softmax(const uint8_t *model, const nn_graph_op_t *op) {
    uint32_t e = check_elementwise(model, op);
    if (e) {
        return e;
    }
    const nn_graph_tensor_t *x = tensor(model, op->inputs[0]), *y = tensor(model, op->output);
    uint32_t depth = dim_from_end(x, 0);
    return x->rank >= 1 && depth >= 1 && dim_from_end(y, 0) == depth ? NN_GRAPH_OK
           : NN_GRAPH_E_SHAPE;
}

static uint32_t check_pad(const uint8_t *model, const nn_graph_op_t *op) {
    const nn_graph_tensor_t *x, *y;
    uint32_t e;
    if ((e = expect(model, op, 0, NN_DTYPE_F32, 0, &x))
        || (e = expect(model, op, OUTPUT, NN_DTYPE_F32, 0, &y))) {
        return e;
    }
    return nn_graph_check_pads(model, op, x, y);
}

static uint32_t check_mean(const uint8_t *model, const nn_graph_op_t *op) {
    const nn_graph_tensor_t *x, *y;
    uint32_t e;
    if ((e = expect(model, op, 0, NN_DTYPE_F32, 4, &x))
        || (e = expect(model, op, OUTPUT, NN_DTYPE_F32, 0, &y))
        || (e = nn_graph_check_mean_axes(model, op, x, y))) {
        return e;
    }
    // (the kernel divides by h x w)
    return x->dims[1] && x->dims[2] ? NN_GRAPH_OK : NN_GRAPH_E_SHAPE;
}

static void run_conv(const uint8_t *model, uint8_t *arena, const nn_graph_op_t *op) {
    const nn_graph_tensor_t *x = tensor(model, op->inputs[0]), *w = tensor(model, op->inputs[1]);
    const nn_graph_tensor_t *y = tensor(model, op->output);
    const nn_graph_conv_params_t *q = &op->params.conv;
    int depthwise = op->kind == NN_OP_DEPTHWISE_CONV_2D;
    nn_f32_conv_t p = {
        .batches = x->dims[0], .in_h = x->dims[1], .in_w = x->dims[2], .in_c = x->dims[3],
        .out_h = y->dims[1], .out_w = y->dims[2], .out_c = y->dims[3],
        .k_h = w->dims[1], .k_w = w->dims[2],
        .stride_h = (uint32_t)q->stride_h, .stride_w = (uint32_t)q->stride_w,
        .pad_top = (uint32_t)q->pad_top, .pad_left = (uint32_t)q->pad_left,
        .depth_multiplier = depthwise ? (uint32_t)q->depth_multiplier : 1,
        .act_min = f32_of_bits((uint32_t)q->act_min), .act_max = f32_of_bits((uint32_t)q->act_max),
    };
    (depthwise ? nn_f32_depthwise_conv_2d : nn_f32_conv_2d)(&p, data(model, arena, op->inputs[0]),
        data(model, arena, op->inputs[1]), bias_of(model, arena, op),
        data(model, arena, op->output));
}

static void run_fully_connected(const uint8_t *model, uint8_t *arena, const nn_graph_op_t *op) {
    const nn_graph_tensor_t *w = tensor(model, op->inputs[1]), *y = tensor(model, op->output);
    const nn_graph_fc_params_t *q = &op->params.fc;
    nn_f32_fully_connected(data(model, arena, op->inputs[0]), data(model, arena, op->inputs[1]),
        bias_of(model, arena, op), data(model, arena, op->output), elements(y) / w->dims[0],
        w->dims[1], w->dims[0], f32_of_bits((uint32_t)q->act_min),
        f32_of_bits((uint32_t)q->act_max));
}

static void run_pool(const uint8_t *model, uint8_t *arena, const nn_graph_op_t *op) {
    const nn_graph_tensor_t *x = tensor(model, op->inputs[0]), *y = tensor(model, op->output);
    const nn_graph_pool_params_t *q = &op->params.pool;
    nn_f32_pool_t p = {
        .batches = x->dims[0], .in_h = x->dims[1], .in_w = x->dims[2], .channels = x->dims[3],
        .out_h = y->dims[1], .out_w = y->dims[2],
        .filter_h = (uint32_t)q->filter_h, .filter_w = (uint32_t)q->filter_w,
        .stride_h = (uint32_t)q->stride_h, .stride_w = (uint32_t)q->stride_w,
        .pad_top = (uint32_t)q->pad_top, .pad_left = (uint32_t)q->pad_left,
        .act_min = f32_of_bits((uint32_t)q->act_min), .act_max = f32_of_bits((uint32_t)q->act_max),
    };
    (op->kind == NN_OP_AVERAGE_POOL_2D ? nn_f32_average_pool : nn_f32_max_pool)(&p,
        data(model, arena, op->inputs[0]), data(model, arena, op->output));
}

// Element strides of a tensor's dims as 4 (leading 1s), 0 along a dim of 1 (broadcast).
static void broadcast_strides(const nn_graph_tensor_t *t, uint32_t strides[4]) {
    uint32_t s = 1;
    for (uint32_t k = 0; k < 4; k++) {
        uint32_t d = dim_from_end(t, k);
        strides[3 - k] = d == 1 ? 0 : s;
        s *= d;
    }
}

static void run_add(const uint8_t *model, uint8_t *arena, const nn_graph_op_t *op) {
    const nn_graph_tensor_t *y = tensor(model, op->output);
    nn_f32_add_t p = {
        .act_min = f32_of_bits((uint32_t)op->params.add.act_min),
        .act_max = f32_of_bits((uint32_t)op->params.add.act_max),
    };
    for (uint32_t k = 0; k < 4; k++) {
        p.out_dims[3 - k] = dim_from_end(y, k);
    }
    broadcast_strides(tensor(model, op->inputs[0]), p.in1_strides);
    broadcast_strides(tensor(model, op->inputs[1]), p.in2_strides);
    nn_f32_add(&p, data(model, arena, op->inputs[0]), data(model, arena, op->inputs[1]),
        data(model, arena, op->output));
}

static void run_softmax(const uint8_t *model, uint8_t *arena, const nn_graph_op_t *op) {
    const nn_graph_tensor_t *x = tensor(model, op->inputs[0]);
    uint32_t depth = dim_from_end(x, 0);
    nn_f32_softmax(data(model, arena, op->inputs[0]), data(model, arena, op->output),
        elements(x) / depth, depth, f32_of_bits((uint32_t)op->params.softmax.beta));
}

static void run_pad(const uint8_t *model, uint8_t *arena, const nn_graph_op_t *op) {
    const nn_graph_tensor_t *x = tensor(model, op->inputs[0]);
    const int32_t *pv = data(model, arena, op->inputs[1]);
    uint32_t dims[4], before[4], after[4];
    uint32_t lead = 4 - x->rank;
    for (uint32_t k = 0; k < 4; k++) {
        int in = k >= lead;
        dims[k] = in ? x->dims[k - lead] : 1;
        before[k] = in ? (uint32_t)pv[2 * (k - lead)] : 0;
        after[k] = in ? (uint32_t)pv[2 * (k - lead) + 1] : 0;
    }
    nn_f32_pad(data(model, arena, op->inputs[0]), data(model, arena, op->output), dims, before,
        after);
}

static void run_mean(const uint8_t *model, uint8_t *arena, const nn_graph_op_t *op) {
    const nn_graph_tensor_t *x = tensor(model, op->inputs[0]);
    nn_f32_mean_hw(data(model, arena, op->inputs[0]), data(model, arena, op->output),
        x->dims[0], x->dims[1], x->dims[2], x->dims[3]);
}

static void run_logistic(const uint8_t *model, uint8_t *arena, const nn_graph_op_t *op) {
    nn_f32_logistic(data(model, arena, op->inputs[0]), data(model, arena, op->output),
        elements(tensor(model, op->output)));
}

static void run_tanh(const uint8_t *model, uint8_t *arena, const nn_graph_op_t *op) {
    nn_f32_tanh(data(model, arena, op->inputs[0]), data(model, arena, op->output),
        elements(tensor(model, op->output)));
}

typedef struct {
    uint32_t (*check)(const uint8_t *model, const nn_graph_op_t *op);
    void (*run)(const uint8_t *model, uint8_t *arena, const nn_graph_op_t *op);
} float_kind_t;

// The float32 kinds (RESHAPE is nn_graph.c's: a copy of bytes whatever their type).
static const float_kind_t float_kinds[NN_OP_QUANTIZE] = {
    [NN_OP_CONV_2D] = { check_conv, run_conv },
    [NN_OP_DEPTHWISE_CONV_2D] = { check_conv, run_conv },
    [NN_OP_FULLY_CONNECTED] = { check_fully_connected, run_fully_connected },
    [NN_OP_AVERAGE_POOL_2D] = { check_pool, run_pool },
    [NN_OP_MAX_POOL_2D] = { check_pool, run_pool },
    [NN_OP_ADD] = { check_add, run_add },
    [NN_OP_SOFTMAX] = { check_softmax, run_softmax },
    [NN_OP_PAD] = { check_pad, run_pad },
    [NN_OP_MEAN] = { check_mean, run_mean },
    [NN_OP_LOGISTIC] = { check_elementwise, run_logistic },
    [NN_OP_TANH] = { check_elementwise, run_tanh },
};

int nn_graph_is_float(const uint8_t *model, const nn_graph_op_t *op) {
    return op->kind < NN_OP_QUANTIZE && float_kinds[op->kind].run != NULL
           && op->output < header(model)->n_tensors
           && tensor(model, op->output)->dtype == NN_DTYPE_F32;
}

uint32_t nn_graph_float_check(const uint8_t *model, const nn_graph_op_t *op) {
    return float_kinds[op->kind].check(model, op);
}

void nn_graph_float_run(const uint8_t *model, uint8_t *arena, const nn_graph_op_t *op) {
    float_kinds[op->kind].run(model, arena, op);
}
