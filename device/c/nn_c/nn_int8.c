// int8 kernels of format version 2 (see nn_int8.h, docs/FORMAT.md "Version 2").
//
// Written for the RP2040's Cortex-M0+: no FPU, no DSP instructions, a single-cycle
// 32x32 -> 32 multiply, 2-cycle loads, 8 low registers. The arithmetic is TensorFlow
// Lite Micro's reference kernels, re-expressed without 64-bit types (the doubling high
// multiply is built from 16-bit halves) so that the same code runs on the host tests,
// the RP2040 and the RP2350 with identical results.
//
// Convolutions gather, per output pixel, the taps whose input differs from the input
// zero point into a list of (weight offset, x - zero) words, then run that list against
// four weight rows at a time (dot_pixel, dot4): zero-point taps cost nothing past the
// gather, and each gathered tap serves every output channel. Depthwise convolutions run
// four channels per word of inputs and weights (dw_pixel). Each output pixel's sums are
// then requantized in one pass (requant_row).
#include "nn_int8.h"

#include <stddef.h>
#include <string.h>

#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "piconn kernels assume a little-endian target (the model format is little-endian)"
#endif

_Static_assert((-5 >> 1) == -3 && (-1 >> 31) == -1, "signed >> must be arithmetic");

// Hot kernels go to RAM on the RP2040 (.time_critical.*, placed in SRAM by the pico-sdk
// linker script: flash runs through a 16 KB XIP cache that streamed weights evict).
#if defined(NN_KERNELS_IN_RAM) && NN_KERNELS_IN_RAM
#define NN_I8_HOT __attribute__((section(".time_critical.nn_int8")))
#else
#define NN_I8_HOT
#endif

#define NN_UNUSED __attribute__((unused))

// A word read through a byte pointer (inputs, weights): may alias anything.
typedef uint32_t nn_i8_word __attribute__((may_alias));

#define I8_MIN (-128)
#define I8_MAX (127)

#define NN_TAPS_HOT NN_I8_HOT
#include "nn_taps.h"

// A tap of a depthwise window: its pixel (or a row of zero points) and its weight row.
typedef struct {
    const int8_t *x;
    const int8_t *w;
} dw_tap_t;

// Architecture-specific inner loops (hand-scheduled Thumb-1 on ARMv6-M); each replaces
// the portable C loop of the same name below. -DNN_NO_ASM forces the C loops.
#if defined(__ARM_ARCH_6M__) && !defined(NN_NO_ASM)
#include "arch_armv6m_int8.h"
#endif

// ---------------------------------------------------------------------------
// Fixed-point arithmetic (TensorFlow Lite Micro's, from gemmlowp)

// floor((a * b + 2^30) / 2^31) from the 64-bit product in 16-bit halves. For a product
// >= 0 that is gemmlowp's (ab + 2^30) / 2^31; for a negative one, its (ab + 1 - 2^30) /
// 2^31 truncated toward zero equals the same floor.
#ifndef NN_ARCH_HIGH_MUL_ROUND
static inline int32_t high_mul_round(int32_t a, int32_t b) {
    uint32_t al = (uint32_t)a & 0xffffu, bl = (uint32_t)b & 0xffffu;
    int32_t ah = a >> 16, bh = b >> 16;
    uint32_t p0 = al * bl;
    int32_t p1 = ah * (int32_t)bl;
    int32_t p2 = (int32_t)al * bh;
    int32_t hi = ah * bh + (p1 >> 16) + (p2 >> 16);
    uint32_t lo = p0, t = (uint32_t)p1 << 16;
    lo += t;
    hi += lo < t;
    t = (uint32_t)p2 << 16;
    lo += t;
    hi += lo < t;
    t = 1u << 30;
    lo += t;
    hi += lo < t;
    return (int32_t)(((uint32_t)hi << 1) | (lo >> 31));
}
#endif

NN_I8_HOT int32_t nn_i8_srdhm(int32_t a, int32_t b) {
    if (a == b && a == INT32_MIN) {
        return INT32_MAX;
    }
    return high_mul_round(a, b);
}

NN_I8_HOT int32_t nn_i8_rdbpot(int32_t x, uint32_t exponent) {
    int32_t mask = (int32_t)((1u << exponent) - 1u);
    int32_t remainder = x & mask;
    int32_t threshold = (mask >> 1) + (x < 0);
    return (x >> exponent) + (remainder > threshold);
}

// MultiplyByQuantizedMultiplier for any x: the long way, with the 64-bit product.
static NN_I8_HOT __attribute__((noinline)) int32_t mbqm_long(int32_t x, int32_t multiplier,
    int32_t shift) {
    if (shift > 0) {
        x = (int32_t)((uint32_t)x << shift);
        shift = 0;
    }
    return nn_i8_rdbpot(nn_i8_srdhm(x, multiplier), (uint32_t)-shift);
}

static inline int32_t clamp(int32_t v, int32_t lo, int32_t hi) {
    return v < lo ? lo : v > hi ? hi : v;
}

// Accumulators in [-2^19, 2^19) (nearly all, in the models measured) take a short way
// when shift <= 0: the product with the multiplier split into 9 + 11 + 11 bits, each
// partial product inside int32, summed by nested floor divisions (exact), gives
// floor((x * multiplier + 2^30) / 2^31) = the doubling high multiply; the rounding right
// shift needs no overflow care at that size.
#define MBQM_SHORT_RANGE (1u << 19)

static inline int32_t mbqm(int32_t x, int32_t multiplier, int32_t shift) {
    if (shift > 0 || (uint32_t)x + MBQM_SHORT_RANGE >= 2u * MBQM_SHORT_RANGE) {
        return mbqm_long(x, multiplier, shift);
    }
    int32_t m0 = multiplier & 0x7ff, m1 = (multiplier >> 11) & 0x7ff, m2 = multiplier >> 22;
    int32_t t = ((x * m0) >> 11) + x * m1;
    t = (t >> 11) + x * m2;
    int32_t high = (t + (1 << 8)) >> 9;
    if (shift == 0) {
        return high;
    }
    uint32_t e = (uint32_t)-shift;
    return (high + (1 << (e - 1)) - (high < 0)) >> e;
}

NN_I8_HOT int32_t nn_i8_mbqm(int32_t x, int32_t multiplier, int32_t shift) {
    return mbqm(x, multiplier, shift);
}

// The output stage that requant_row reads: output_zero, act_min, act_max, in this order.
_Static_assert(offsetof(nn_i8_conv_t, act_min) == offsetof(nn_i8_conv_t, output_zero) + 4
    && offsetof(nn_i8_conv_t, act_max) == offsetof(nn_i8_conv_t, output_zero) + 8,
    "output_zero, act_min, act_max must be consecutive");

// y[c] = clamp(MBQM(acc[c], ch[c]) + output_zero, act_min, act_max) for c < n; out:
// output_zero, act_min, act_max. With a multiplier >= 0 (as every channel table has),
// MBQM(acc <= 0) <= 0, so when act_min >= output_zero (a fused ReLU) every acc <= 0 gives
// act_min: about half the outputs of a ReLU layer.
#ifndef NN_ARCH_REQUANT_ROW
static NN_I8_HOT void requant_row(const int32_t *acc, const nn_i8_channel_t *ch,
    const int32_t *out, int8_t *y, uint32_t n) {
    int32_t zero = out[0], lo = out[1], hi = out[2];
    int relu = lo >= zero;
    for (uint32_t c = 0; c < n; c++) {
        int32_t a = acc[c];
        if (a <= 0 && relu) {
            y[c] = (int8_t)lo;
        } else {
            y[c] = (int8_t)clamp(mbqm(a, ch[c].multiplier, ch[c].shift) + zero, lo, hi);
        }
    }
}
#endif

// Bits below the highest set bit of x > 0 (31 - clz), without a CLZ instruction.
static uint32_t leading_zeros(uint32_t x) {
    uint32_t n = 0;
    if (x < 0x10000u) {
        n += 16;
        x <<= 16;
    }
    if (x < 0x1000000u) {
        n += 8;
        x <<= 8;
    }
    if (x < 0x10000000u) {
        n += 4;
        x <<= 4;
    }
    if (x < 0x40000000u) {
        n += 2;
        x <<= 2;
    }
    if (x < 0x80000000u) {
        n += 1;
    }
    return n;
}

// ---------------------------------------------------------------------------
// Convolution: gather and dot loops

// acc[r] += w[r * stride + off_k] * x_k over the taps k < n, for rows r < 4.
#ifndef NN_ARCH_DOT4
static NN_I8_HOT void dot4(const uint32_t *list, uint32_t n, const int8_t *w,
    uint32_t stride, int32_t *acc) {
    const int8_t *w1 = w + stride, *w2 = w1 + stride, *w3 = w2 + stride;
    int32_t a0 = acc[0], a1 = acc[1], a2 = acc[2], a3 = acc[3];
    for (const uint32_t *end = list + n; list < end; list++) {
        uint32_t t = *list;
        uint32_t off = TAP_OFF(t);
        int32_t xd = TAP_X(t);
        a0 += w[off] * xd;
        a1 += w1[off] * xd;
        a2 += w2[off] * xd;
        a3 += w3[off] * xd;
    }
    acc[0] = a0;
    acc[1] = a1;
    acc[2] = a2;
    acc[3] = a3;
}
#endif

// acc[0] += w[off_k] * x_k over the taps k < n.
static NN_I8_HOT void dot1(const uint32_t *list, uint32_t n, const int8_t *w, int32_t *acc) {
    int32_t a = acc[0];
    for (const uint32_t *end = list + n; list < end; list++) {
        a += w[TAP_OFF(*list)] * TAP_X(*list);
    }
    acc[0] = a;
}

// The taps of a window inside the image: rows [ky0, ky1) and columns [kx0, kx1) of the
// kernel, and the input pixel of its top-left tap (iy0 + ky0, ix0 + kx0).
typedef struct {
    uint32_t ky0, ky1, kx0, kx1;
    int32_t iy0, ix0;
} window_t;

static inline uint32_t clip_lo(int32_t i0) {
    return i0 < 0 ? (uint32_t)-i0 : 0;
}

static inline uint32_t clip_hi(int32_t i0, uint32_t k, uint32_t size) {
    int32_t room = (int32_t)size - i0;
    return room < 0 ? 0 : (uint32_t)room < k ? (uint32_t)room : k;
}

static inline void window(window_t *win, uint32_t oy, uint32_t ox, uint32_t k_h, uint32_t k_w,
    uint32_t stride_h, uint32_t stride_w, uint32_t pad_top, uint32_t pad_left, uint32_t in_h,
    uint32_t in_w) {
    win->iy0 = (int32_t)(oy * stride_h) - (int32_t)pad_top;
    win->ix0 = (int32_t)(ox * stride_w) - (int32_t)pad_left;
    win->ky0 = clip_lo(win->iy0);
    win->ky1 = clip_hi(win->iy0, k_h, in_h);
    win->kx0 = clip_lo(win->ix0);
    win->kx1 = clip_hi(win->ix0, k_w, in_w);
    if (win->ky1 < win->ky0) {
        win->ky1 = win->ky0;
    }
    if (win->kx1 < win->kx0) {
        win->kx1 = win->kx0;
    }
}

// Element offset in the image of the first tap inside it on kernel row ky (inside).
static inline uint32_t tap_at(const window_t *win, uint32_t ky, uint32_t in_w, uint32_t c) {
    return ((uint32_t)(win->iy0 + (int32_t)ky) * in_w + (uint32_t)(win->ix0 + (int32_t)win->kx0))
           * c;
}

// acc[4g + r] = bias[4g + r] (0 without bias) + w[(4g + r) * stride + off_k] * x_k summed
// over the taps k < n (n even: an odd list ends with TAP(0, 0)), for groups g < groups
// (>= 1).
#ifndef NN_ARCH_DOT_PIXEL
static NN_I8_HOT void dot_pixel(const uint32_t *list, uint32_t n, const int8_t *w,
    uint32_t stride, const int32_t *bias, int32_t *acc, uint32_t groups) {
    for (uint32_t g = 0; g < groups; g++, acc += 4, w += 4 * stride) {
        for (uint32_t r = 0; r < 4; r++) {
            acc[r] = bias ? bias[4 * g + r] : 0;
        }
        dot4(list, n, w, stride, acc);
    }
}
#endif

// Every output channel of one output pixel from its gathered taps (offsets within a
// weight row of k_size bytes; the list has room for one more tap), through acc[out_c].
static NN_I8_HOT void conv_pixel(const nn_i8_conv_t *p, uint32_t *list, uint32_t n,
    const int8_t *w, uint32_t k_size, const int32_t *bias, const nn_i8_channel_t *ch,
    int32_t *acc, int8_t *y) {
    if (n & 1) {
        list[n++] = TAP(0, 0);  // adds w * 0
    }
    uint32_t groups = p->out_c / 4;
    if (groups) {
        dot_pixel(list, n, w, k_size, bias, acc, groups);
    }
    for (uint32_t c = 4 * groups; c < p->out_c; c++) {
        acc[c] = bias ? bias[c] : 0;
        dot1(list, n, w + c * k_size, &acc[c]);
    }
    requant_row(acc, ch, &p->output_zero, y, p->out_c);
}

// One output pixel whose taps do not fit the scratch list: per group of four channels,
// the window in pieces of at most `cap` taps (offsets relative to each piece).
static void conv_pixel_chunked(const nn_i8_conv_t *p, const window_t *win, const int8_t *x_img,
    const int8_t *w, uint32_t k_size, const int32_t *bias, const nn_i8_channel_t *ch,
    int8_t *y, uint32_t *list, uint32_t cap) {
    uint32_t row = (win->kx1 - win->kx0) * p->in_c;
    for (uint32_t c = 0; c < p->out_c; c += 4) {
        uint32_t group = p->out_c - c < 4 ? p->out_c - c : 4;
        int32_t acc[4] = { 0, 0, 0, 0 };
        for (uint32_t r = 0; r < group; r++) {
            acc[r] = bias ? bias[c + r] : 0;
        }
        for (uint32_t ky = win->ky0; ky < win->ky1; ky++) {
            const int8_t *xs = x_img + tap_at(win, ky, p->in_w, p->in_c);
            uint32_t w_at = (ky * p->k_w + win->kx0) * p->in_c;
            for (uint32_t s = 0; s < row; s += cap) {
                uint32_t len = row - s < cap ? row - s : cap;
                uint32_t n = (uint32_t)(gather_taps(list, xs + s, len, p->input_zero, 0) - list);
                const int8_t *wr = w + c * k_size + w_at + s;
                if (group == 4) {
                    dot4(list, n, wr, k_size, acc);
                } else {
                    for (uint32_t r = 0; r < group; r++) {
                        dot1(list, n, wr + r * k_size, &acc[r]);
                    }
                }
            }
        }
        requant_row(acc, &ch[c], &p->output_zero, &y[c], group);
    }
}

NN_I8_HOT void nn_i8_conv_2d(const nn_i8_conv_t *p, const int8_t *x, const int8_t *w,
    const int32_t *bias, const nn_i8_channel_t *ch, int8_t *y, uint32_t *scratch,
    uint32_t scratch_bytes) {
    uint32_t k_size = p->k_h * p->k_w * p->in_c;
    uint32_t cap = scratch_bytes / 4;
    if (cap > TAP_MAX_OFF) {
        cap = TAP_MAX_OFF;
    }
    // Whole windows: the pixel's accumulators, then its tap list (one spare tap), when
    // they fit and offsets fit 16 bits; else windows in pieces of up to `cap` taps.
    int32_t *acc = (int32_t *)scratch;
    uint32_t *list = scratch + p->out_c;
    int whole = p->out_c < cap && k_size + 1 <= cap - p->out_c && k_size <= TAP_MAX_OFF;
    for (uint32_t b = 0; b < p->batches; b++) {
        const int8_t *x_img = x + b * p->in_h * p->in_w * p->in_c;
        for (uint32_t oy = 0; oy < p->out_h; oy++) {
            for (uint32_t ox = 0; ox < p->out_w; ox++) {
                window_t win;
                window(&win, oy, ox, p->k_h, p->k_w, p->stride_h, p->stride_w, p->pad_top,
                    p->pad_left, p->in_h, p->in_w);
                if (!whole) {
                    conv_pixel_chunked(p, &win, x_img, w, k_size, bias, ch, y, scratch, cap);
                    y += p->out_c;
                    continue;
                }
                uint32_t *end = list;
                uint32_t row = (win.kx1 - win.kx0) * p->in_c;
                for (uint32_t ky = win.ky0; ky < win.ky1; ky++) {
                    const int8_t *xs = x_img + tap_at(&win, ky, p->in_w, p->in_c);
                    end = gather_taps(end, xs, row, p->input_zero, (ky * p->k_w + win.kx0) * p->in_c);
                }
                conv_pixel(p, list, (uint32_t)(end - list), w, k_size, bias, ch, acc, y);
                y += p->out_c;
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Depthwise convolution

// Depthwise taps by words: with depth multiplier 1 and a multiple of 4 channels, one
// word of x and one of weights give four channels of a tap. Each tap of the window is a
// pair of pointers (dw_tap_t); a tap outside the image points at a row of input zero
// points, so acc = folded bias + sum w * x over every tap (the channel table's bias has
// -input_zero * sum w folded in): no zero point to subtract per tap.

// acc[c] = ch[c].bias + sum over the n taps of byte c % 4 of the weight word at w + c - c % 4
// times the same byte of the x word at x + c - c % 4 (signed), for every channel c < n_c
// (n_c a multiple of 4, n >= 1).
#ifndef NN_ARCH_DW_PIXEL
static NN_I8_HOT void dw_pixel(const dw_tap_t *taps, uint32_t n, const nn_i8_channel_t *ch,
    int32_t *acc, uint32_t n_c) {
    for (uint32_t c = 0; c < n_c; c += 4, ch += 4, acc += 4) {
        int32_t a0 = ch[0].bias, a1 = ch[1].bias, a2 = ch[2].bias, a3 = ch[3].bias;
        for (const dw_tap_t *t = taps, *end = taps + n; t < end; t++) {
            uint32_t xv = *(const nn_i8_word *)(t->x + c);
            uint32_t wv = *(const nn_i8_word *)(t->w + c);
            a0 += (int8_t)wv * (int8_t)xv;
            a1 += (int8_t)(wv >> 8) * (int8_t)(xv >> 8);
            a2 += (int8_t)(wv >> 16) * (int8_t)(xv >> 16);
            a3 += (int8_t)(wv >> 24) * (int8_t)(xv >> 24);
        }
        acc[0] = a0;
        acc[1] = a1;
        acc[2] = a2;
        acc[3] = a3;
    }
}
#endif

// The depthwise convolution by words, if its taps and zero-point row fit the scratch.
static NN_I8_HOT int depthwise_words(const nn_i8_conv_t *p, const int8_t *x, const int8_t *w,
    const nn_i8_channel_t *ch, int8_t *y, uint32_t *scratch, uint32_t scratch_bytes) {
    uint32_t c_n = p->in_c, k_n = p->k_h * p->k_w;
    if (p->depth_multiplier != 1 || c_n % 4 || ((uintptr_t)x & 3) || ((uintptr_t)w & 3)
        || k_n == 0 || k_n * sizeof(dw_tap_t) + 5 * c_n > scratch_bytes) {
        return 0;
    }
    int32_t *acc = (int32_t *)scratch;  // the pixel's accumulators, then its taps
    dw_tap_t *taps = (dw_tap_t *)(void *)(acc + c_n);
    int8_t *zero_row = (int8_t *)(taps + k_n);
    memset(zero_row, p->input_zero, c_n);
    for (uint32_t b = 0; b < p->batches; b++) {
        const int8_t *x_img = x + b * p->in_h * p->in_w * c_n;
        for (uint32_t oy = 0; oy < p->out_h; oy++) {
            for (uint32_t ox = 0; ox < p->out_w; ox++) {
                int32_t iy0 = (int32_t)(oy * p->stride_h) - (int32_t)p->pad_top;
                int32_t ix0 = (int32_t)(ox * p->stride_w) - (int32_t)p->pad_left;
                dw_tap_t *t = taps;
                for (uint32_t ky = 0; ky < p->k_h; ky++) {
                    int32_t iy = iy0 + (int32_t)ky;
                    for (uint32_t kx = 0; kx < p->k_w; kx++, t++) {
                        int32_t ix = ix0 + (int32_t)kx;
                        t->w = w + (ky * p->k_w + kx) * c_n;
                        t->x = iy >= 0 && (uint32_t)iy < p->in_h && ix >= 0
                            && (uint32_t)ix < p->in_w
                            ? x_img + ((uint32_t)iy * p->in_w + (uint32_t)ix) * c_n : zero_row;
                    }
                }
                dw_pixel(taps, k_n, ch, acc, c_n);
                requant_row(acc, ch, &p->output_zero, y, c_n);
                y += c_n;
            }
        }
    }
    return 1;
}

NN_I8_HOT void nn_i8_depthwise_conv_2d(const nn_i8_conv_t *p, const int8_t *x, const int8_t *w,
    const int32_t *bias, const nn_i8_channel_t *ch, int8_t *y, uint32_t *scratch,
    uint32_t scratch_bytes) {
    if (depthwise_words(p, x, w, ch, y, scratch, scratch_bytes)) {
        return;
    }
    uint32_t dm = p->depth_multiplier;
    for (uint32_t b = 0; b < p->batches; b++) {
        const int8_t *x_img = x + b * p->in_h * p->in_w * p->in_c;
        for (uint32_t oy = 0; oy < p->out_h; oy++) {
            for (uint32_t ox = 0; ox < p->out_w; ox++) {
                window_t win;
                window(&win, oy, ox, p->k_h, p->k_w, p->stride_h, p->stride_w, p->pad_top,
                    p->pad_left, p->in_h, p->in_w);
                uint32_t c = 0;
                for (uint32_t ic = 0; ic < p->in_c; ic++) {
                    for (uint32_t m = 0; m < dm; m++, c++) {
                        int32_t acc = bias ? bias[c] : 0;
                        for (uint32_t ky = win.ky0; ky < win.ky1; ky++) {
                            const int8_t *xr = x_img + tap_at(&win, ky, p->in_w, p->in_c) + ic;
                            const int8_t *wr = w + (ky * p->k_w + win.kx0) * p->out_c + c;
                            for (uint32_t kx = win.kx0; kx < win.kx1; kx++) {
                                acc += *wr * (*xr - p->input_zero);
                                wr += p->out_c;
                                xr += p->in_c;
                            }
                        }
                        requant_row(&acc, &ch[c], &p->output_zero, &y[c], 1);
                    }
                }
                y += p->out_c;
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Pools

void nn_i8_average_pool(const nn_i8_pool_t *p, const int8_t *x, int8_t *y) {
    for (uint32_t b = 0; b < p->batches; b++) {
        const int8_t *x_img = x + b * p->in_h * p->in_w * p->channels;
        for (uint32_t oy = 0; oy < p->out_h; oy++) {
            for (uint32_t ox = 0; ox < p->out_w; ox++) {
                window_t win;
                window(&win, oy, ox, p->filter_h, p->filter_w, p->stride_h, p->stride_w,
                    p->pad_top, p->pad_left, p->in_h, p->in_w);
                int32_t count = (int32_t)((win.ky1 - win.ky0) * (win.kx1 - win.kx0));
                for (uint32_t c = 0; c < p->channels; c++) {
                    int32_t sum = 0;
                    for (uint32_t ky = win.ky0; ky < win.ky1; ky++) {
                        const int8_t *xr = x_img + tap_at(&win, ky, p->in_w, p->channels) + c;
                        for (uint32_t kx = win.kx0; kx < win.kx1; kx++, xr += p->channels) {
                            sum += *xr;
                        }
                    }
                    int32_t avg = 0;
                    if (count > 0) {  // (a window always overlaps the image: checked)
                        avg = sum > 0 ? (sum + count / 2) / count : (sum - count / 2) / count;
                    }
                    *y++ = (int8_t)clamp(avg, p->act_min, p->act_max);
                }
            }
        }
    }
}

void nn_i8_max_pool(const nn_i8_pool_t *p, const int8_t *x, int8_t *y) {
    for (uint32_t b = 0; b < p->batches; b++) {
        const int8_t *x_img = x + b * p->in_h * p->in_w * p->channels;
        for (uint32_t oy = 0; oy < p->out_h; oy++) {
            for (uint32_t ox = 0; ox < p->out_w; ox++) {
                window_t win;
                window(&win, oy, ox, p->filter_h, p->filter_w, p->stride_h, p->stride_w,
                    p->pad_top, p->pad_left, p->in_h, p->in_w);
                for (uint32_t c = 0; c < p->channels; c++) {
                    int32_t best = I8_MIN;
                    for (uint32_t ky = win.ky0; ky < win.ky1; ky++) {
                        const int8_t *xr = x_img + tap_at(&win, ky, p->in_w, p->channels) + c;
                        for (uint32_t kx = win.kx0; kx < win.kx1; kx++, xr += p->channels) {
                            best = *xr > best ? *xr : best;
                        }
                    }
                    *y++ = (int8_t)clamp(best, p->act_min, p->act_max);
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------
// ADD

// An input rescaled to the common scale: MBQM((x + offset) << left_shift, ...).
static inline int32_t add_input(int32_t x, int32_t offset, int32_t left_shift,
    int32_t multiplier, int32_t shift) {
    return mbqm((int32_t)((uint32_t)(x + offset) << left_shift), multiplier, shift);
}

static inline int8_t add_output(const nn_i8_add_t *p, int32_t a, int32_t b) {
    int32_t sum = (int32_t)((uint32_t)a + (uint32_t)b);
    int32_t v = mbqm(sum, p->output_multiplier, p->output_shift) + p->output_zero;
    return (int8_t)clamp(v, p->act_min, p->act_max);
}

// Below this many outputs the two 256-entry tables cost more than they save.
#define ADD_TABLE_MIN (384u)

// One row of n outputs; the inputs advance by step1 and step2 elements (0: broadcast).
static void add_row(const nn_i8_add_t *p, const int8_t *a, uint32_t step1, const int8_t *b,
    uint32_t step2, int8_t *y, uint32_t n, const int32_t *t1, const int32_t *t2) {
    if (t1) {
        for (uint32_t i = 0; i < n; i++, a += step1, b += step2) {
            y[i] = add_output(p, t1[*a + 128], t2[*b + 128]);
        }
        return;
    }
    for (uint32_t i = 0; i < n; i++, a += step1, b += step2) {
        y[i] = add_output(p,
            add_input(*a, p->input1_offset, p->left_shift, p->input1_multiplier,
                p->input1_shift),
            add_input(*b, p->input2_offset, p->left_shift, p->input2_multiplier,
                p->input2_shift));
    }
}

void nn_i8_add(const nn_i8_add_t *p, const int8_t *x1, const int8_t *x2, int8_t *y,
    uint32_t *scratch, uint32_t scratch_bytes) {
    const uint32_t *od = p->out_dims;
    uint32_t total = od[0] * od[1] * od[2] * od[3];
    int32_t *t1 = NULL, *t2 = NULL;
    if (total >= ADD_TABLE_MIN && scratch_bytes >= NN_I8_ADD_SCRATCH) {
        t1 = (int32_t *)scratch;
        t2 = t1 + 256;
        for (int32_t v = I8_MIN; v <= I8_MAX; v++) {
            t1[v + 128] = add_input(v, p->input1_offset, p->left_shift, p->input1_multiplier,
                p->input1_shift);
            t2[v + 128] = add_input(v, p->input2_offset, p->left_shift, p->input2_multiplier,
                p->input2_shift);
        }
    }
    // Element strides of each input per output dimension (0 where it broadcasts).
    uint32_t s1[NN_I8_MAX_RANK], s2[NN_I8_MAX_RANK];
    uint32_t n1 = 1, n2 = 1;
    for (int k = NN_I8_MAX_RANK - 1; k >= 0; k--) {
        s1[k] = p->in1_dims[k] == 1 ? 0 : n1;
        s2[k] = p->in2_dims[k] == 1 ? 0 : n2;
        n1 *= p->in1_dims[k];
        n2 *= p->in2_dims[k];
    }
    if (n1 == total && n2 == total) {  // no broadcasting: one row
        add_row(p, x1, 1, x2, 1, y, total, t1, t2);
        return;
    }
    for (uint32_t i0 = 0; i0 < od[0]; i0++) {
        for (uint32_t i1 = 0; i1 < od[1]; i1++) {
            for (uint32_t i2 = 0; i2 < od[2]; i2++) {
                add_row(p, x1 + i0 * s1[0] + i1 * s1[1] + i2 * s1[2], s1[3],
                    x2 + i0 * s2[0] + i1 * s2[1] + i2 * s2[2], s2[3], y, od[3], t1, t2);
                y += od[3];
            }
        }
    }
}

// ---------------------------------------------------------------------------
// SOFTMAX (gemmlowp fixed point)

#define ONE_Q0 (INT32_MAX)   // 1.0 in Q0.31 (saturated)
#define ONE_Q2 (1 << 29)     // 1.0 in Q2.29
#define SOFTMAX_ACC_INTEGER_BITS (12)  // the sum of exponentials in Q12.19

// SaturatingRoundingMultiplyByPOT with exponent > 0.
static int32_t saturating_shift_left(int32_t x, uint32_t exponent) {
    int32_t threshold = (int32_t)((1u << (31 - exponent)) - 1u);
    if (x > threshold) {
        return INT32_MAX;
    }
    if (x < -threshold) {
        return INT32_MIN;
    }
    return (int32_t)((uint32_t)x << exponent);
}

// 1 / (1 + a) for a in [0, 1) (Q0.31): Newton-Raphson on the half denominator (Q2.29).
static int32_t one_over_one_plus_x(int32_t a) {
    // RoundingHalfSum(a, 1.0): (a + 2^31 - 1 + 1) / 2, a >= 0
    int32_t half_denominator = (int32_t)(((uint32_t)a + 0x80000000u) >> 1);
    int32_t x = 1515870810 + nn_i8_srdhm(half_denominator, -1010580540);  // 48/17 - 32/17 d
    for (int k = 0; k < 3; k++) {
        int32_t one_minus = ONE_Q2 - nn_i8_srdhm(half_denominator, x);
        x = x + saturating_shift_left(nn_i8_srdhm(x, one_minus), 2);
    }
    return saturating_shift_left(x, 1);
}

void nn_i8_softmax(const int8_t *x, int8_t *y, uint32_t rows, uint32_t depth,
    const int32_t *exp, int32_t diff_min) {
    (void)diff_min;  // the exp table is 0 past diff_min: those outputs come out -128
    for (uint32_t r = 0; r < rows; r++, x += depth, y += depth) {
        int32_t max = I8_MIN;
        for (uint32_t i = 0; i < depth; i++) {
            max = x[i] > max ? x[i] : max;
        }
        uint32_t sum = 0;
        for (uint32_t i = 0; i < depth; i++) {
            sum += (uint32_t)nn_i8_rdbpot(exp[max - x[i]], SOFTMAX_ACC_INTEGER_BITS);
        }
        // GetReciprocal: the sum normalized to [1, 2) (it is >= 2^19: exp(0) is in it)
        uint32_t headroom_plus_one = leading_zeros(sum);
        int32_t shifted = (int32_t)((sum << headroom_plus_one) - 0x80000000u);
        int32_t scale = one_over_one_plus_x(shifted);
        uint32_t exponent = SOFTMAX_ACC_INTEGER_BITS - headroom_plus_one + 31 - 8;
        for (uint32_t i = 0; i < depth; i++) {
            int32_t v = nn_i8_rdbpot(nn_i8_srdhm(scale, exp[max - x[i]]), exponent) + I8_MIN;
            y[i] = (int8_t)clamp(v, I8_MIN, I8_MAX);
        }
    }
}

// ---------------------------------------------------------------------------
// PAD, MEAN, lookup tables, QUANTIZE from float

void nn_i8_pad(const int8_t *x, int8_t *y, const uint32_t *dims, const uint32_t *before,
    const uint32_t *after, int8_t value) {
    uint32_t od[NN_I8_MAX_RANK];
    for (int k = 0; k < NN_I8_MAX_RANK; k++) {
        od[k] = dims[k] + before[k] + after[k];
    }
    for (uint32_t i0 = 0; i0 < od[0]; i0++) {
        for (uint32_t i1 = 0; i1 < od[1]; i1++) {
            for (uint32_t i2 = 0; i2 < od[2]; i2++) {
                int inside = i0 >= before[0] && i0 - before[0] < dims[0]
                    && i1 >= before[1] && i1 - before[1] < dims[1]
                    && i2 >= before[2] && i2 - before[2] < dims[2];
                if (!inside) {
                    memset(y, value, od[3]);
                } else {
                    const int8_t *xr = x + (((i0 - before[0]) * dims[1] + (i1 - before[1]))
                        * dims[2] + (i2 - before[2])) * dims[3];
                    memset(y, value, before[3]);
                    memcpy(y + before[3], xr, dims[3]);
                    memset(y + before[3] + dims[3], value, after[3]);
                }
                y += od[3];
            }
        }
    }
}

void nn_i8_mean_hw(const int8_t *x, int8_t *y, uint32_t batches, uint32_t h, uint32_t w,
    uint32_t c, int32_t input_zero_times_count, int32_t multiplier, int32_t shift,
    int32_t output_zero) {
    uint32_t hw = h * w;
    for (uint32_t b = 0; b < batches; b++, x += hw * c) {
        for (uint32_t ch = 0; ch < c; ch++) {
            uint32_t sum = 0;
            for (uint32_t k = 0; k < hw; k++) {
                sum += (uint32_t)(int32_t)x[k * c + ch];
            }
            int32_t total = (int32_t)(sum - (uint32_t)input_zero_times_count);
            int32_t v = mbqm(total, multiplier, shift) + output_zero;
            *y++ = (int8_t)clamp(v, I8_MIN, I8_MAX);
        }
    }
}

void nn_i8_lut8(const int8_t *x, int8_t *y, uint32_t n, const int8_t *lut) {
    for (uint32_t i = 0; i < n; i++) {
        y[i] = lut[x[i] + 128];
    }
}

void nn_i8_lut_f32(const int8_t *x, uint32_t *y, uint32_t n, const uint32_t *lutf) {
    for (uint32_t i = 0; i < n; i++) {
        y[i] = lutf[x[i] + 128];
    }
}

// Past this |x / scale| every output is clamped (|q + zero| > 127 for any int8 zero).
#define QUANTIZE_SATURATED (1000.0f)

void nn_i8_quantize_f32(const float *x, int8_t *y, uint32_t n, float scale,
    int32_t output_zero) {
    for (uint32_t i = 0; i < n; i++) {
        float v = x[i] / scale;
        int32_t q;
        if (!(v <= QUANTIZE_SATURATED)) {  // (also NaN)
            q = I8_MAX;
        } else if (v < -QUANTIZE_SATURATED) {
            q = I8_MIN;
        } else {
            // std::round: truncate, then step away from 0 on a fraction of at least 1/2
            // (v - trunc(v) is exact in float32).
            int32_t t = (int32_t)v;
            float frac = v - (float)t;
            t += frac >= 0.5f ? 1 : frac <= -0.5f ? -1 : 0;
            q = clamp(t + output_zero, I8_MIN, I8_MAX);
        }
        y[i] = (int8_t)q;
    }
}
