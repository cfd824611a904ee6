// Binary (XNOR) kernels of format version 2 (see nn_xnor_graph.h).
//
// The XOR-popcount of weight rows is nn_kernels.c's (nn_xnor_dense, nn_popcount_xor:
// the Thumb-1 loop of arch_armv6m.h on the RP2040): a convolution gathers one output
// pixel's receptive field into a contiguous row, so that every output channel is one
// row of the weights against it, the same loop as a binary dense layer.
#include "nn_xnor_graph.h"

#include <stddef.h>

#include "nn_kernels.h"

// Hot kernels go to RAM on the RP2040 (as nn_kernels.c's): the weights they stream from
// flash then have the XIP cache to themselves.
#if defined(NN_KERNELS_IN_RAM) && NN_KERNELS_IN_RAM
#define NN_XNOR_HOT __attribute__((section(".time_critical.nn_xnor")))
#else
#define NN_XNOR_HOT
#endif

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

// ---------------------------------------------------------------------------
// BINARIZE_CONV_2D

#define NN_TAPS_HOT NN_XNOR_HOT
#include "nn_taps.h"

// Architecture-specific loops (Thumb-1 on ARMv6-M) replace the portable ones below.
#if defined(__ARM_ARCH_6M__) && !defined(NN_NO_ASM)
#define NN_UNUSED __attribute__((unused))
#include "arch_armv6m_xnor.h"
#endif

// s[4g + r] = sum of w[(4g + r) * stride + off_k] * x_k over the taps k < n (n even),
// rows r < 4 of each group g < groups (>= 1).
#ifndef NN_ARCH_BCONV_SUMS
static NN_XNOR_HOT void bconv_sums(const uint32_t *list, uint32_t n, const int8_t *w,
    uint32_t stride, int32_t *s, uint32_t groups) {
    for (uint32_t g = 0; g < groups; g++, s += 4, w += 4 * stride) {
        const int8_t *w1 = w + stride, *w2 = w1 + stride, *w3 = w2 + stride;
        int32_t a0 = 0, a1 = 0, a2 = 0, a3 = 0;
        for (const uint32_t *t = list, *end = list + n; t < end; t++) {
            uint32_t off = TAP_OFF(*t);
            int32_t xd = TAP_X(*t);
            a0 += w[off] * xd;
            a1 += w1[off] * xd;
            a2 += w2[off] * xd;
            a3 += w3[off] * xd;
        }
        s[0] = a0;
        s[1] = a1;
        s[2] = a2;
        s[3] = a3;
    }
}
#endif

// The sum of w[off_k] * x_k over the taps k < n.
static NN_XNOR_HOT int32_t bconv_dot1(const uint32_t *list, uint32_t n, const int8_t *w) {
    int32_t a = 0;
    for (const uint32_t *end = list + n; list < end; list++) {
        a += w[TAP_OFF(*list)] * TAP_X(*list);
    }
    return a;
}

// The bits of one output pixel from its tap list (n even: an odd list ends with TAP(0, 0),
// which adds w * 0): up to 32 channels (a word of bits) per pass of bconv_sums.
static NN_XNOR_HOT void bconv_pixel(const uint32_t *list, uint32_t n, const int8_t *w,
    uint32_t field, const int32_t *thr, uint32_t out_c, uint32_t *y) {
    int32_t s[32];
    uint32_t c = 0;
    for (; c + 4 <= out_c; c += 32) {  // (c: a multiple of 32)
        uint32_t groups = (out_c - c) / 4 < 8 ? (out_c - c) / 4 : 8, word = 0;
        bconv_sums(list, n, w + c * field, field, s, groups);
        for (uint32_t r = 0; r < 4 * groups; r++) {
            word |= (uint32_t)(s[r] >= thr[c + r]) << r;
        }
        if (groups < 8) {  // the last word: its remaining channels one by one
            for (uint32_t r = 4 * groups; c + r < out_c; r++) {
                word |= (uint32_t)(bconv_dot1(list, n, w + (c + r) * field) >= thr[c + r]) << r;
            }
        }
        y[c >> 5] = word;
    }
    if (c < out_c) {  // fewer than four channels in the last word
        uint32_t word = 0;
        for (uint32_t r = 0; c + r < out_c; r++) {
            word |= (uint32_t)(bconv_dot1(list, n, w + (c + r) * field) >= thr[c + r]) << r;
        }
        y[c >> 5] = word;
    }
}

// Kernel rows [*k0, *k1) of a window starting at input row i0 (may be negative) inside
// an image of `size` rows.
static inline void bconv_clip(int32_t i0, uint32_t k, uint32_t size, uint32_t *k0,
    uint32_t *k1) {
    int32_t lo = i0 < 0 ? -i0 : 0, hi = (int32_t)size - i0;
    if (hi > (int32_t)k) {
        hi = (int32_t)k;
    }
    *k0 = (uint32_t)lo;
    *k1 = hi > lo ? (uint32_t)hi : (uint32_t)lo;
}

NN_XNOR_HOT void nn_xnor_bconv_2d(const nn_bconv_geometry_t *p, const int8_t *x, const int8_t *w,
    const int32_t *thr, uint32_t *y, uint32_t *list) {
    uint32_t c = p->in_c, field = p->k_h * p->k_w * c;
    uint32_t out_words = (p->out_c + 31) >> 5;
    const uint32_t *blank = NULL;  // the bits of a blank field, once computed
    for (uint32_t b = 0; b < p->batches; b++) {
        const int8_t *image = x + b * p->in_h * p->in_w * c;
        for (uint32_t oy = 0; oy < p->out_h; oy++) {
            int32_t iy0 = (int32_t)(oy * p->stride_h) - (int32_t)p->pad_top;
            uint32_t ky0, ky1;
            bconv_clip(iy0, p->k_h, p->in_h, &ky0, &ky1);
            for (uint32_t ox = 0; ox < p->out_w; ox++, y += out_words) {
                int32_t ix0 = (int32_t)(ox * p->stride_w) - (int32_t)p->pad_left;
                uint32_t kx0, kx1;
                bconv_clip(ix0, p->k_w, p->in_w, &kx0, &kx1);
                uint32_t *end = list, row = (kx1 - kx0) * c;
                uint32_t ix = (uint32_t)(ix0 + (int32_t)kx0);  // the first column inside
                for (uint32_t ky = ky0; ky < ky1 && row; ky++) {
                    uint32_t iy = (uint32_t)(iy0 + (int32_t)ky);
                    end = gather_taps(end, image + (iy * p->in_w + ix) * c, row, p->input_zero,
                        (ky * p->k_w + kx0) * c);
                }
                uint32_t n = (uint32_t)(end - list);
                if (n & 1) {
                    list[n++] = TAP(0, 0);  // (room: the field's taps rounded up to even)
                }
                if (n == 0 && blank != NULL) {
                    for (uint32_t i = 0; i < out_words; i++) {
                        y[i] = blank[i];
                    }
                    continue;
                }
                bconv_pixel(list, n, w, field, thr, p->out_c, y);
                if (n == 0) {
                    blank = y;
                }
            }
        }
    }
}
