// Binary (XNOR) kernels of format version 2 (see nn_xnor_graph.h).
//
// The XOR-popcount of weight rows is nn_kernels.c's (nn_xnor_dense, nn_popcount_xor:
// the Thumb-1 loop of arch_armv6m.h on the RP2040): a convolution gathers one output
// pixel's receptive field into a contiguous row, so that every output channel is one
// row of the weights against it, the same loop as a binary dense layer.
#include "nn_xnor_graph.h"

#include "nn_kernels.h"

// Channel by channel, so that a channel's bounds stay in registers and the test is one
// unsigned compare: lo <= v <= hi iff (uint32_t)(v - lo) <= (uint32_t)(hi - lo) when
// lo <= hi (a channel with lo > hi is never set).
void nn_xnor_binarize(const int8_t *x, uint32_t rows, uint32_t c, const int32_t *bounds,
    uint32_t *y) {
    uint32_t nw = (c + 31) >> 5;
    for (uint32_t i = 0; i < rows * nw; i++) {
        y[i] = 0;
    }
    for (uint32_t j = 0; j < c; j++) {
        int32_t lo = bounds[2 * j], hi = bounds[2 * j + 1];
        if (lo > hi) {
            continue;
        }
        uint32_t span = (uint32_t)hi - (uint32_t)lo, mask = 1u << (j & 31);
        const int8_t *xp = x + j, *end = xp + rows * c;
        uint32_t *yp = y + (j >> 5);
        for (; xp != end; xp += c, yp += nw) {
            if ((uint32_t)(int32_t)*xp - (uint32_t)lo <= span) {
                *yp |= mask;
            }
        }
    }
}

// The receptive field of the output pixel whose window starts at input (iy0, ix0).
static void gather(const nn_xnor_geometry_t *p, const uint32_t *image, int32_t iy0, int32_t ix0,
    uint32_t *field) {
    uint32_t nw = p->in_words;
    for (uint32_t ky = 0; ky < p->k_h; ky++) {
        int32_t iy = iy0 + (int32_t)ky;
        int row_in = iy >= 0 && (uint32_t)iy < p->in_h;
        for (uint32_t kx = 0; kx < p->k_w; kx++) {
            int32_t ix = ix0 + (int32_t)kx;
            if (row_in && ix >= 0 && (uint32_t)ix < p->in_w) {
                const uint32_t *src = image + ((uint32_t)iy * p->in_w + (uint32_t)ix) * nw;
                for (uint32_t i = 0; i < nw; i++) {
                    field[i] = src[i];
                }
            } else {
                for (uint32_t i = 0; i < nw; i++) {
                    field[i] = 0;  // -1 padding
                }
            }
            field += nw;
        }
    }
}

// The receptive field of output pixel (b, oy, ox).
static void gather_pixel(const nn_xnor_geometry_t *p, const uint32_t *x, uint32_t b, uint32_t oy,
    uint32_t ox, uint32_t *field) {
    gather(p, x + b * p->in_h * p->in_w * p->in_words,
        (int32_t)(oy * p->stride_h) - (int32_t)p->pad_top,
        (int32_t)(ox * p->stride_w) - (int32_t)p->pad_left, field);
}

void nn_xnor_conv_2d_bits(const nn_xnor_geometry_t *p, const uint32_t *x, const uint32_t *w,
    const int32_t *thr, uint32_t *y, uint32_t *field) {
    uint32_t nw = p->k_h * p->k_w * p->in_words;
    uint32_t out_words = (p->out_c + 31) >> 5;
    for (uint32_t b = 0; b < p->batches; b++) {
        for (uint32_t oy = 0; oy < p->out_h; oy++) {
            for (uint32_t ox = 0; ox < p->out_w; ox++) {
                gather_pixel(p, x, b, oy, ox, field);
                nn_xnor_dense(field, w, thr, y, nw << 5, p->out_c);
                y += out_words;
            }
        }
    }
}

void nn_xnor_conv_2d_i32(const nn_xnor_geometry_t *p, const uint32_t *x, const uint32_t *w,
    const int32_t *ch, uint32_t n_bits, int32_t *y, uint32_t *field) {
    uint32_t nw = p->k_h * p->k_w * p->in_words;
    const int32_t *a = ch, *bias = ch + p->out_c;
    for (uint32_t b = 0; b < p->batches; b++) {
        for (uint32_t oy = 0; oy < p->out_h; oy++) {
            for (uint32_t ox = 0; ox < p->out_w; ox++) {
                gather_pixel(p, x, b, oy, ox, field);
                const uint32_t *row = w;
                for (uint32_t c = 0; c < p->out_c; c++) {
                    uint32_t m = nn_popcount_xor(field, row, nw);
                    // |a| * n_bits + |b| <= 2^31 - 1 (checked at load): no overflow
                    *y++ = a[c] * ((int32_t)n_bits - 2 * (int32_t)m) + bias[c];
                    row += nw;
                }
            }
        }
    }
}

void nn_xnor_max_pool(const nn_xnor_geometry_t *p, const uint32_t *x, uint32_t *y) {
    uint32_t nw = p->in_words;
    for (uint32_t b = 0; b < p->batches; b++) {
        const uint32_t *image = x + b * p->in_h * p->in_w * nw;
        for (uint32_t oy = 0; oy < p->out_h; oy++) {
            int32_t iy0 = (int32_t)(oy * p->stride_h) - (int32_t)p->pad_top;
            for (uint32_t ox = 0; ox < p->out_w; ox++) {
                int32_t ix0 = (int32_t)(ox * p->stride_w) - (int32_t)p->pad_left;
                for (uint32_t i = 0; i < nw; i++) {
                    y[i] = 0;
                }
                for (uint32_t ky = 0; ky < p->k_h; ky++) {
                    int32_t iy = iy0 + (int32_t)ky;
                    if (iy < 0 || (uint32_t)iy >= p->in_h) {
                        continue;
                    }
                    for (uint32_t kx = 0; kx < p->k_w; kx++) {
                        int32_t ix = ix0 + (int32_t)kx;
                        if (ix < 0 || (uint32_t)ix >= p->in_w) {
                            continue;
                        }
                        const uint32_t *src = image + ((uint32_t)iy * p->in_w + (uint32_t)ix) * nw;
                        for (uint32_t i = 0; i < nw; i++) {
                            y[i] |= src[i];
                        }
                    }
                }
                y += nw;
            }
        }
    }
}
