// piconn layer kernels (see nn_kernels.h, docs/KERNELS.md, docs/FORMAT.md).
//
// Written for the RP2040's Cortex-M0+: no FPU, no popcount/clz, single-cycle 32x32
// multiply, 2-cycle loads, 8 low registers. Weights are input-major, so each kernel
// walks the inputs, skips the zero ones (most MNIST pixels, half of the ReLU outputs)
// and adds x[i] * W[i][:] into a row of accumulators.
#include "nn_kernels.h"

#include <stddef.h>
#include <string.h>

#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "piconn kernels assume a little-endian target (the model format is little-endian)"
#endif

// FORMAT.md's `>>` on a signed value is an arithmetic shift (floor). C leaves >> of a
// negative value implementation-defined; GCC and Clang document it as arithmetic
// (sign-extending), which this checks at compile time.
_Static_assert((-5 >> 1) == -3 && (-1 >> 31) == -1, "signed >> must be arithmetic");

// Kernels can be placed in RAM on the RP2040 (flash is executed through a 16 KB cache
// that streamed weights keep evicting); micropython.cmake defines NN_KERNELS_IN_RAM.
#if defined(NN_KERNELS_IN_RAM) && NN_KERNELS_IN_RAM
#define NN_HOT __attribute__((section(".time_critical.nn_c")))
#else
#define NN_HOT
#endif

#define NN_UNUSED __attribute__((unused))

// A word read through a byte pointer (weights, inputs): may alias anything.
typedef uint32_t nn_u32a __attribute__((may_alias));

// Architecture-specific inner loops: hand-scheduled Thumb-1 on ARMv6-M (the RP2040).
// Each replaces the portable C loop of the same name below, which every other target
// (the host tests, other ports) uses; -DNN_NO_ASM forces the C loops everywhere.
#if defined(__ARM_ARCH_6M__) && !defined(NN_NO_ASM)
#include "arch_armv6m.h"
#endif

// One 32-bit slot of a float buffer used first as an integer accumulator.
typedef union {
    float f;
    int32_t i;
    uint32_t u;
} nn_word;

// ---------------------------------------------------------------------------
// Input scanning

// Index of the first nonzero byte of x[i..n), or n. Zero words on 4-byte boundaries
// are skipped whole (MNIST borders).
static inline uint32_t nz_next(const uint8_t *x, uint32_t i, uint32_t n) {
    while (i < n) {
        if (x[i]) {
            return i;
        }
        i++;
        if ((((uintptr_t)x + i) & 3) == 0) {
            while (n - i >= 4 && *(const nn_u32a *)(x + i) == 0) {
                i += 4;
            }
        }
    }
    return n;
}

// Float input i as a float, or 0 (and *skip = 1) when it is zero. u8 inputs are raw bytes.
static inline int input_f32(const void *x, int x_u8, uint32_t i, float *xi) {
    if (x_u8) {
        uint32_t v = ((const uint8_t *)x)[i];
        *xi = (float)v;
        return v != 0;
    }
    // x == +-0.0 tested on the bits: no soft-float compare.
    nn_word v = ((const nn_word *)x)[i];
    *xi = v.f;
    return (v.u << 1) != 0;
}

// ---------------------------------------------------------------------------
// Integer row accumulation: acc[c] += xi * w[c] for c < n (mod 2^32).

// acc[4k+j] += xi * byte j of w4[k], k < n4 (n4 >= 1).
#ifndef NN_ARCH_MAC_ROW4
static NN_HOT void mac_row4(uint32_t *acc, const nn_u32a *w4, uint32_t xi, uint32_t n4) {
    uint32_t *end = acc + 4 * n4;
    do {
        uint32_t v = *w4++;
        uint32_t a0 = acc[0], a1 = acc[1], a2 = acc[2], a3 = acc[3];
        a0 += xi * (v & 0xff);
        a1 += xi * ((v >> 8) & 0xff);
        a2 += xi * ((v >> 16) & 0xff);
        a3 += xi * (v >> 24);
        acc[0] = a0;
        acc[1] = a1;
        acc[2] = a2;
        acc[3] = a3;
        acc += 4;
    } while (acc != end);
}
#endif

// Any alignment and length: a byte prologue until w is word-aligned (rows of a layer
// whose n_out is not a multiple of 4), the 4-wide core, a byte tail.
static NN_HOT void mac_row_u8(uint32_t *acc, const uint8_t *w, uint32_t xi, uint32_t n) {
    while (n && ((uintptr_t)w & 3)) {
        *acc++ += xi * *w++;
        n--;
    }
    if (n >= 4) {
        mac_row4(acc, (const nn_u32a *)w, xi, n >> 2);
        acc += n & ~3u;
        w += n & ~3u;
    }
    for (n &= 3; n; n--) {
        *acc++ += xi * *w++;
    }
}

// Sum over the nonzero inputs of x[i] * W[i][:] into acc (n_out words, not cleared);
// returns sum x[i] (for the zero-point term).
static NN_HOT uint32_t mac_dense_u8(uint32_t *acc, const uint8_t *x, const uint8_t *w,
    uint32_t n_in, uint32_t n_out) {
    uint32_t sx = 0;
    for (uint32_t i = nz_next(x, 0, n_in); i < n_in; i = nz_next(x, i + 1, n_in)) {
        uint32_t xi = x[i];
        sx += xi;
        mac_row_u8(acc, w + i * n_out, xi, n_out);
    }
    return sx;
}

// ---------------------------------------------------------------------------
// Requantization (FORMAT.md dense_q8)

NN_HOT uint8_t nn_requant(int32_t acc, uint32_t rq, uint32_t zy) {
    uint32_t m = rq & 0xffff;
    uint32_t s1 = (rq >> 16) & 31;
    uint32_t s2 = (rq >> 24) & 31;
    int32_t t = acc >> s1;
    if (t < -32768) {
        t = -32768;
    } else if (t > 32767) {
        t = 32767;
    }
    // |t*M| < 2^30 for a valid M (< 2^15); unsigned so an invalid one wraps, not UB.
    int32_t p = (int32_t)((uint32_t)t * m + ((1u << s2) >> 1));
    int32_t v = (int32_t)zy + (p >> s2);
    return v < 0 ? 0 : v > 255 ? 255 : (uint8_t)v;
}

// acc[c] = bias[c] + acc[c] - zw[c]*sx, then requantize into y unless rq is NULL.
static NN_HOT void finish_q8(uint32_t *acc, const uint8_t *zw, const int32_t *bias, uint32_t sx,
    const uint32_t *rq, uint8_t *y, uint32_t n_out, uint32_t zy) {
    for (uint32_t c = 0; c < n_out; c++) {
        uint32_t a = (uint32_t)bias[c] + acc[c] - zw[c] * sx;
        acc[c] = a;
        if (rq) {
            y[c] = nn_requant((int32_t)a, rq[c], zy);
        }
    }
}

// ---------------------------------------------------------------------------
// Dense layers

NN_HOT void nn_dense_f32(const void *x, int x_u8, const float *w, const float *b, float *y,
    uint32_t n_in, uint32_t n_out) {
    memcpy(y, b, n_out * sizeof(float));
    for (uint32_t i = 0; i < n_in; i++) {
        float xi;
        if (!input_f32(x, x_u8, i, &xi)) {
            continue;
        }
        const float *wr = w + i * n_out;
        for (uint32_t c = 0; c < n_out; c++) {
            y[c] += xi * wr[c];
        }
    }
}

NN_HOT void nn_dense_q8w(const void *x, int x_u8, const uint8_t *w, const uint8_t *zw,
    const float *scale, const float *b, float *y, uint32_t n_in, uint32_t n_out) {
    nn_word *yw = (nn_word *)y;
    if (x_u8) {
        // Exact integer sum in y's words: sum x*W - zw*sum x, then scaled once.
        memset(y, 0, n_out * sizeof(float));
        uint32_t sx = mac_dense_u8((uint32_t *)y, (const uint8_t *)x, w, n_in, n_out);
        for (uint32_t c = 0; c < n_out; c++) {
            int32_t s = (int32_t)(yw[c].u - zw[c] * sx);
            yw[c].f = scale[c] * (float)s + b[c];
        }
        return;
    }
    // Float input: sum x*(W - zw) term by term (no zw*sum x cancellation).
    memset(y, 0, n_out * sizeof(float));
    for (uint32_t i = 0; i < n_in; i++) {
        float xi;
        if (!input_f32(x, 0, i, &xi)) {
            continue;
        }
        const uint8_t *wr = w + i * n_out;
        for (uint32_t c = 0; c < n_out; c++) {
            y[c] += xi * (float)((int32_t)wr[c] - (int32_t)zw[c]);
        }
    }
    for (uint32_t c = 0; c < n_out; c++) {
        y[c] = scale[c] * y[c] + b[c];
    }
}

NN_HOT void nn_dense_q8(const uint8_t *x, const uint8_t *w, const uint8_t *zw, const int32_t *bias,
    const uint32_t *rq, int32_t *acc, uint8_t *y, uint32_t n_in, uint32_t n_out, uint32_t zy) {
    uint32_t *a = (uint32_t *)acc;
    memset(a, 0, n_out * sizeof(uint32_t));
    uint32_t sx = mac_dense_u8(a, x, w, n_in, n_out);
    finish_q8(a, zw, bias, sx, rq, y, n_out, zy);
}

// ---------------------------------------------------------------------------
// Sparse layers (CSC)

NN_HOT void nn_sparse_f32(const void *x, int x_u8, const uint32_t *colptr, const void *rows,
    uint32_t index_bytes, const float *vals, const float *b, float *y,
    uint32_t n_in, uint32_t n_out) {
    memcpy(y, b, n_out * sizeof(float));
    for (uint32_t i = 0; i < n_in; i++) {
        float xi;
        if (!input_f32(x, x_u8, i, &xi)) {
            continue;
        }
        uint32_t k = colptr[i], k1 = colptr[i + 1];
        if (index_bytes == 1) {
            const uint8_t *r = (const uint8_t *)rows;
            for (; k < k1; k++) {
                y[r[k]] += xi * vals[k];
            }
        } else {
            const uint16_t *r = (const uint16_t *)rows;
            for (; k < k1; k++) {
                y[r[k]] += xi * vals[k];
            }
        }
    }
}

// acc[r[k]] += xi * (vals[k] - zw[r[k]]) for k in [k, k1).
static NN_HOT void mac_col_u8(uint32_t *acc, const uint8_t *r, const uint8_t *v,
    const uint8_t *zw, uint32_t xi, uint32_t n) {
    for (; n; n--) {
        uint32_t c = *r++;
        acc[c] += xi * (uint32_t)(*v++ - zw[c]);
    }
}

static NN_HOT void mac_col_u16(uint32_t *acc, const uint16_t *r, const uint8_t *v,
    const uint8_t *zw, uint32_t xi, uint32_t n) {
    for (; n; n--) {
        uint32_t c = *r++;
        acc[c] += xi * (uint32_t)(*v++ - zw[c]);
    }
}

NN_HOT void nn_sparse_q8(const uint8_t *x, const uint32_t *colptr, const void *rows,
    uint32_t index_bytes, const uint8_t *vals, const uint8_t *zw, const int32_t *bias,
    const uint32_t *rq, int32_t *acc, uint8_t *y, uint32_t n_in, uint32_t n_out, uint32_t zy) {
    uint32_t *a = (uint32_t *)acc;
    memset(a, 0, n_out * sizeof(uint32_t));
    for (uint32_t i = nz_next(x, 0, n_in); i < n_in; i = nz_next(x, i + 1, n_in)) {
        uint32_t k = colptr[i], n = colptr[i + 1] - k;
        if (index_bytes == 1) {
            mac_col_u8(a, (const uint8_t *)rows + k, vals + k, zw, x[i], n);
        } else {
            mac_col_u16(a, (const uint16_t *)rows + k, vals + k, zw, x[i], n);
        }
    }
    // The zero points are subtracted per stored weight, so no zw*sum x term here.
    finish_q8(a, zw, bias, 0, rq, y, n_out, zy);
}

// ---------------------------------------------------------------------------
// Binary layers


NN_HOT void nn_binarize(const uint8_t *x, uint32_t threshold, uint32_t *y, uint32_t n) {
    uint32_t j = 0;
#ifdef NN_ARCH_BINARIZE_WORDS
    if (n >= 32) {
        binarize_words(x, threshold, y, n >> 5);
        j = n & ~31u;
        y += n >> 5;
    }
#endif
    for (; j < n; j += 32) {
        uint32_t m = n - j < 32 ? n - j : 32;
        const uint8_t *xj = x + j;
        uint32_t word = 0;
        // From the last element down, so each bit is shifted into place.
        while (m--) {
            word = (word << 1) | (xj[m] >= threshold);
        }
        *y++ = word;
    }
}

// Per-nibble popcounts of v (each nibble 0..4).
static inline uint32_t pop_nibbles(uint32_t v) {
    v = v - ((v >> 1) & 0x55555555u);
    return (v & 0x33333333u) + ((v >> 2) & 0x33333333u);
}

// Bytes of s (nibble counts <= 15) folded to byte counts.
static inline uint32_t nibbles_to_bytes(uint32_t s) {
    return (s & 0x0f0f0f0fu) + ((s >> 4) & 0x0f0f0f0fu);
}

// m[r] = popcount(x ^ w[r]) for n_rows rows of nw words (the rows of w contiguous).
// SWAR popcount with deferred reductions: 7 ALU ops per word give nibble counts
// (<= 4); groups of 3 words add theirs (<= 12) before one fold to byte counts; byte
// counts of up to 9 groups and 2 more words (<= 232) before a fold to 16-bit lanes.
static NN_HOT void popcount_rows_c(
    const uint32_t *x, const uint32_t *w, uint32_t nw, uint32_t n_rows, uint32_t *m) {
    const uint32_t *x_end = x + nw;
    uint32_t groups = 0;
    for (uint32_t n = nw; n >= 3; n -= 3) {
        groups++;
    }
    const uint32_t *g_end = x + 3 * groups;
    for (; n_rows; n_rows--) {
        const uint32_t *px = x;
        uint32_t lanes = 0;  // two 16-bit lanes; each <= the row's popcount <= 65535
        do {
            const uint32_t *stop = g_end - px > 27 ? px + 27 : g_end;
            uint32_t bytes = 0;
            while (px != stop) {
                uint32_t s = pop_nibbles(px[0] ^ w[0]);
                s += pop_nibbles(px[1] ^ w[1]);
                s += pop_nibbles(px[2] ^ w[2]);
                px += 3;
                w += 3;
                bytes += nibbles_to_bytes(s);
            }
            if (px == g_end && px != x_end) {
                uint32_t s = 0;
                while (px != x_end) {
                    s += pop_nibbles(*px++ ^ *w++);
                }
                bytes += nibbles_to_bytes(s);
            }
            lanes += (bytes & 0x00ff00ffu) + ((bytes >> 8) & 0x00ff00ffu);
        } while (px != x_end);
        *m++ = (lanes & 0xffff) + (lanes >> 16);
    }
}

// m[r] for the n_rows rows: the architecture's loop where it has one for rows this long.
static NN_HOT void popcount_rows(
    const uint32_t *x, const uint32_t *w, uint32_t nw, uint32_t n_rows, uint32_t *m) {
#ifdef NN_ARCH_POPCOUNT_ROWS
    if (nw < NN_ARCH_POPCOUNT_MIN_WORDS) {
        popcount_rows_c(x, w, nw, n_rows, m);
    } else {
        popcount_rows_arch(x, w, nw, n_rows, m);
    }
#else
    popcount_rows_c(x, w, nw, n_rows, m);
#endif
}

NN_HOT uint32_t nn_popcount_xor(const uint32_t *x, const uint32_t *w, uint32_t n_words) {
    uint32_t m;
    popcount_rows(x, w, n_words, 1, &m);
    return m;
}

#ifndef NN_ARCH_THRESHOLD_WORD
// The output word of n (1..32) neurons: bit r set iff m[r] <= t[r] (as int32).
static NN_HOT uint32_t threshold_word(const uint32_t *m, const int32_t *t, uint32_t n) {
    // From the last neuron of the word down, so each bit is shifted into place.
    const uint32_t *mk = m + n;
    t += n;
    uint32_t word = 0;
    while (mk != m) {
        word = (word << 1) | ((int32_t)*--mk <= *--t);
    }
    return word;
}
#endif

// Rows per popcount call of nn_xnor_dense and the _pw kernels: their counts wait on the
// stack (a multiple of 32, so that each output word is made from one call's counts).
#define NN_XNOR_ROWS (128)

NN_HOT void nn_xnor_dense(const uint32_t *x, const uint32_t *w, const int32_t *thr, uint32_t *y,
    uint32_t n_in, uint32_t n_out) {
    uint32_t nw = (n_in + 31) >> 5;
    uint32_t m[NN_XNOR_ROWS];
    for (uint32_t c = 0; c < n_out; c += NN_XNOR_ROWS) {
        uint32_t k = n_out - c < NN_XNOR_ROWS ? n_out - c : NN_XNOR_ROWS;
        popcount_rows(x, w, nw, k, m);
        w += k * nw;
        for (uint32_t r0 = 0; r0 < k; r0 += 32) {
            uint32_t n = k - r0 < 32 ? k - r0 : 32;
            *y++ = threshold_word(m + r0, thr + c + r0, n);
        }
    }
}

NN_HOT void nn_xnor_out(const uint32_t *x, const uint32_t *w, const int32_t *a, const int32_t *b,
    int32_t *y, uint32_t n_in, uint32_t n_out) {
    uint32_t *m = (uint32_t *)y;  // counts first, in place
    popcount_rows(x, w, (n_in + 31) >> 5, n_out, m);
    for (uint32_t c = 0; c < n_out; c++) {
        y[c] = (int32_t)((uint32_t)a[c] * (n_in - 2 * m[c]) + (uint32_t)b[c]);
    }
}

// ---------------------------------------------------------------------------
// Binary layers over the span of nonzero input words (the _pw kernels)

// popcount of v (SWAR, the byte sums added by a multiply: one cycle on the M0+).
static inline uint32_t pop32(uint32_t v) {
    v = v - ((v >> 1) & 0x55555555u);
    v = (v & 0x33333333u) + ((v >> 2) & 0x33333333u);
    v = (v + (v >> 4)) & 0x0f0f0f0fu;
    return (v * 0x01010101u) >> 24;
}

NN_HOT void nn_popcount_rows(const uint32_t *w, uint32_t nw, uint32_t n_rows, uint32_t *pw) {
    for (; n_rows; n_rows--) {
        uint32_t s = 0;
        for (uint32_t k = nw; k; k--) {
            s += pop32(*w++);
        }
        *pw++ = s;
    }
}

// q[r] = popcount(x & w[r]) over nw words for n_rows rows, row r at w + r*stride.
static NN_HOT void popcount_and_rows_c(const uint32_t *x, const uint32_t *w, uint32_t nw,
    uint32_t stride, uint32_t n_rows, uint32_t *q) {
    for (; n_rows; n_rows--, w += stride) {
        uint32_t s = 0;
        for (uint32_t k = 0; k < nw; k++) {
            s += pop32(x[k] & w[k]);
        }
        *q++ = s;
    }
}

// The same for any n_rows: the architecture's loop where it has one; spans over 31 words
// (whose byte counts would overflow there) 32 rows at a time in pieces of at most 31
// words, the pieces after the first counted into part[] and added.
static NN_HOT void popcount_and_rows(const uint32_t *x, const uint32_t *w, uint32_t nw,
    uint32_t stride, uint32_t n_rows, uint32_t *q) {
#ifdef NN_ARCH_POPCOUNT_AND_ROWS
    if (nw >= 8 && nw <= 31) {
        popcount_and_rows_arch(x, w, nw, n_rows, q, stride);
        return;
    }
    for (; nw > 31 && n_rows; ) {
        uint32_t part[32];
        uint32_t k = n_rows < 32 ? n_rows : 32;
        uint32_t *dst = q;
        for (uint32_t at = 0; at < nw; ) {
            uint32_t len = nw - at > 31 ? 24 : nw - at;  // (what is left after 24 is >= 8)
            popcount_and_rows_arch(x + at, w + at, len, k, dst, stride);
            if (dst == part) {
                for (uint32_t r = 0; r < k; r++) {
                    q[r] += part[r];
                }
            }
            dst = part;
            at += len;
        }
        q += k;
        w += k * stride;
        n_rows -= k;
    }
#endif
    popcount_and_rows_c(x, w, nw, stride, n_rows, q);
}

// The words of x[0..nw) from its first nonzero word to its last: *lo and the returned hi
// (lo == hi when x is all zero); *px = popcount of x when the span is shorter than nw.
static NN_HOT uint32_t nz_span(const uint32_t *x, uint32_t nw, uint32_t *lo, uint32_t *px) {
    uint32_t a = 0, b = nw;
    while (a < b && x[a] == 0) {
        a++;
    }
    while (b > a && x[b - 1] == 0) {
        b--;
    }
    uint32_t p = 0;
    for (uint32_t k = a; b - a < nw && k < b; k++) {  // (only a shorter span needs it)
        p += pop32(x[k]);
    }
    *lo = a;
    *px = p;
    return b;
}

// q[r] = popcount(x & w[r]) for n_rows <= NN_XNOR_ROWS rows of nw words, read over x's
// span [lo, hi) only (x is zero elsewhere).
static NN_HOT void and_counts(const uint32_t *x, const uint32_t *w, uint32_t nw,
    uint32_t lo, uint32_t hi, uint32_t n_rows, uint32_t *q) {
    if (lo == hi) {
        memset(q, 0, n_rows * sizeof(uint32_t));
    } else {
        popcount_and_rows(x + lo, w + lo, hi - lo, nw, n_rows, q);
    }
}

// m[c] = popcount(x ^ w[c]) = pw[c] + px - 2*popcount(x & w[c]): x & w[c] is read over the
// span of x's nonzero words only, unless that is the whole row (then as nn_xnor_dense).
NN_HOT void nn_xnor_dense_pw(const uint32_t *x, const uint32_t *w, const int32_t *thr,
    const uint32_t *pw, uint32_t *y, uint32_t n_in, uint32_t n_out) {
    uint32_t nw = (n_in + 31) >> 5;
    uint32_t lo, px;
    uint32_t hi = nz_span(x, nw, &lo, &px);
    if (hi - lo == nw) {
        nn_xnor_dense(x, w, thr, y, n_in, n_out);
        return;
    }
    uint32_t q[NN_XNOR_ROWS];
    for (uint32_t c = 0; c < n_out; c += NN_XNOR_ROWS) {
        uint32_t k = n_out - c < NN_XNOR_ROWS ? n_out - c : NN_XNOR_ROWS;
        and_counts(x, w, nw, lo, hi, k, q);
        w += k * nw;
        for (uint32_t r0 = 0; r0 < k; r0 += 32) {
            // From the last neuron of the word down, so each bit is shifted into place:
            // bit set iff pw + px - 2q <= thr.
            uint32_t r = r0 + (k - r0 < 32 ? k - r0 : 32);
            uint32_t word = 0;
            while (r != r0) {
                r--;
                int32_t m = (int32_t)(pw[c + r] + px - 2 * q[r]);
                word = (word << 1) | (m <= thr[c + r]);
            }
            *y++ = word;
        }
    }
}

NN_HOT void nn_xnor_out_pw(const uint32_t *x, const uint32_t *w, const int32_t *a,
    const int32_t *b, const uint32_t *pw, int32_t *y, uint32_t n_in, uint32_t n_out) {
    uint32_t nw = (n_in + 31) >> 5;
    uint32_t lo, px;
    uint32_t hi = nz_span(x, nw, &lo, &px);
    if (hi - lo == nw) {
        nn_xnor_out(x, w, a, b, y, n_in, n_out);
        return;
    }
    uint32_t *q = (uint32_t *)y;  // counts first, in place
    for (uint32_t c = 0; c < n_out; c += NN_XNOR_ROWS) {
        uint32_t k = n_out - c < NN_XNOR_ROWS ? n_out - c : NN_XNOR_ROWS;
        and_counts(x, w + c * nw, nw, lo, hi, k, q + c);
    }
    for (uint32_t c = 0; c < n_out; c++) {
        uint32_t m = pw[c] + px - 2 * q[c];
        y[c] = (int32_t)((uint32_t)a[c] * (n_in - 2 * m) + (uint32_t)b[c]);
    }
}

// ---------------------------------------------------------------------------

NN_HOT void nn_relu_f32(float *y, uint32_t n) {
    nn_word *yw = (nn_word *)y;
    for (uint32_t c = 0; c < n; c++) {
        // Negative numbers are 0x80000001..0xff800000 (-inf); -0.0 and NaNs are kept.
        if (yw[c].u - 0x80000001u < 0x7f800000u) {
            yw[c].u = 0;
        }
    }
}

// ---------------------------------------------------------------------------
// Helpers

NN_HOT uint32_t nn_argmax_i32(const int32_t *y, uint32_t n) {
    uint32_t best = 0;
    int32_t v = y[0];
    for (uint32_t c = 1; c < n; c++) {
        if (y[c] > v) {
            v = y[c];
            best = c;
        }
    }
    return best;
}

// The float ordering on the bits, without soft-float compares: for non-NaN values,
// key(a) > key(b) exactly when a > b (and key(-0.0) == key(0.0)).
static inline int32_t f32_key(uint32_t u) {
    return (u >> 31) ? -(int32_t)(u & 0x7fffffffu) : (int32_t)u;
}

static inline int f32_is_nan(uint32_t u) {
    return (u & 0x7fffffffu) > 0x7f800000u;
}

NN_HOT uint32_t nn_argmax_f32(const float *y, uint32_t n) {
    const nn_word *yw = (const nn_word *)y;
    if (f32_is_nan(yw[0].u)) {
        return 0;
    }
    uint32_t best = 0;
    int32_t v = f32_key(yw[0].u);
    for (uint32_t c = 1; c < n; c++) {
        uint32_t u = yw[c].u;
        if (f32_is_nan(u)) {
            return c;
        }
        int32_t t = f32_key(u);
        if (t > v) {
            v = t;
            best = c;
        }
    }
    return best;
}

static inline uint32_t rd_u32(const uint8_t *p) {
    return p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

uint32_t nn_check_csc(const uint8_t *colptr, const uint8_t *rows, uint32_t index_bytes,
    uint32_t n_in, uint32_t n_out, uint32_t nnz) {
    if (rd_u32(colptr) != 0 || rd_u32(colptr + 4 * n_in) != nnz) {
        return n_in + 1;
    }
    uint32_t k = 0;
    for (uint32_t i = 0; i < n_in; i++) {
        uint32_t end = rd_u32(colptr + 4 * (i + 1));
        if (end < k || end > nnz) {
            return i + 1;
        }
        uint32_t next = 0;  // the smallest row the next stored weight may have
        for (; k < end; k++) {
            uint32_t r = index_bytes == 1 ? rows[k] : rows[2 * k] | (uint32_t)rows[2 * k + 1] << 8;
            if (r < next || r >= n_out) {
                return i + 1;
            }
            next = r + 1;
        }
    }
    return 0;
}

uint32_t nn_check_f32(const uint8_t *a, uint32_t n) {
    for (uint32_t k = 0; k < n; k++, a += 4) {
        if ((a[2] & 0x80) && (a[3] & 0x7f) == 0x7f) {  // exponent bits all ones
            return k + 1;
        }
    }
    return 0;
}
