// Tap lists: the nonzero inputs of a convolution window, gathered once per output pixel
// and then summed per output channel (the int8 convolutions and BINARIZE_CONV_2D).
//
// Each including file defines NN_TAPS_HOT (the section its hot code lives in) first, so
// the gather compiles into that file's section exactly as a local function would.
#ifndef NN_TAPS_H
#define NN_TAPS_H

#include <stdint.h>

// A tap: weight offset in the low half, x - zero point (-255..255) in the high half.
#define TAP(off, xd) ((uint32_t)(off) | ((uint32_t)(xd) << 16))
#define TAP_OFF(t) ((t) & 0xffffu)
#define TAP_X(t) ((int32_t)(t) >> 16)
#define TAP_MAX_OFF (0x10000u)

// A word of input bytes (may alias the int8 tensor).
typedef uint32_t nn_tap_word __attribute__((may_alias));

// Appends TAP(off + i, x[i] - zero) for every i < n with x[i] != zero; returns the new
// end. Words equal to four zero points are skipped whole.
static NN_TAPS_HOT uint32_t *gather_taps(uint32_t *list, const int8_t *x, uint32_t n,
    int32_t zero, uint32_t off) {
    uint32_t i = 0;
    uint32_t zero4 = ((uint32_t)zero & 0xffu) * 0x01010101u;
    while (i < n) {
        if ((((uintptr_t)(x + i)) & 3) == 0) {
            while (n - i >= 4 && *(const nn_tap_word *)(const void *)(x + i) == zero4) {
                i += 4;
            }
            if (i == n) {
                break;
            }
        }
        int32_t d = x[i] - zero;
        if (d) {
            *list++ = TAP(off + i, d);
        }
        i++;
    }
    return list;
}

#endif // NN_TAPS_H
