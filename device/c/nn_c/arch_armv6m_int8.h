// ARMv6-M (Cortex-M0+: the RP2040) inner loops of the int8 kernels (nn_int8.c), in
// hand-scheduled Thumb-1 assembly.
//
// nn_int8.c includes this header when it is compiled for ARMv6-M (and not with
// -DNN_NO_ASM); every other target uses the portable C loops of nn_int8.c, which compute
// the same values. Each loop here has the name and the contract of the C loop it
// replaces, and a macro announces it:
//   NN_ARCH_DOT4   dot4(list, n, w, stride, acc)
//   NN_ARCH_DW_PIXEL  dw_pixel(taps, n, ch, acc, n_c)
//   NN_ARCH_HIGH_MUL_ROUND  high_mul_round(a, b)
// Cycle counts are for the RP2040 (single-cycle multiply, 2-cycle loads, LDM at one
// cycle per word plus one, taken branches 2).
//
// Not a public header: nn_int8.c defines NN_I8_HOT (placement in RAM) and NN_UNUSED
// before it includes this file.
#ifndef PICONN_ARCH_ARMV6M_INT8_H
#define PICONN_ARCH_ARMV6M_INT8_H

#define NN_ARCH_DOT4 (1)
#define NN_ARCH_DW_PIXEL (1)
#define NN_ARCH_HIGH_MUL_ROUND (1)

// acc[r] += w[r * stride + off_k] * x_k over the taps k < n (TAP words: offset in the low
// half, x in the high half), rows r < 4: 43 cycles per two taps (8 MACs), counted below.
//   r0 list, r1 tap -> offset, r2 x, r3 product, r4-r7 the four weight rows,
//   r8-r11 the four accumulators, r12 list end.
// (naked: the arguments arrive in r0-r3 and on the stack per the AAPCS)
static NN_I8_HOT __attribute__((naked, noinline)) void dot4(const uint32_t *list NN_UNUSED,
    uint32_t n NN_UNUSED, const int8_t *w NN_UNUSED, uint32_t stride NN_UNUSED,
    int32_t *acc NN_UNUSED) {
    __asm__ volatile (
        ".syntax unified\n"
        "push   {r4, r5, r6, r7, lr}\n"
        "mov    r4, r8\n"
        "mov    r5, r9\n"
        "mov    r6, r10\n"
        "mov    r7, r11\n"
        "push   {r4, r5, r6, r7}\n"
        // rows: r4 = w, r5 = w + stride, r6 = w + 2 stride, r7 = w + 3 stride
        "movs   r4, r2\n"
        "adds   r5, r4, r3\n"
        "adds   r6, r5, r3\n"
        "adds   r7, r6, r3\n"
        // accumulators from acc (the 5th argument, above the 9 saved words)
        "ldr    r3, [sp, #36]\n"
        "ldr    r2, [r3, #0]\n"
        "mov    r8, r2\n"
        "ldr    r2, [r3, #4]\n"
        "mov    r9, r2\n"
        "ldr    r2, [r3, #8]\n"
        "mov    r10, r2\n"
        "ldr    r2, [r3, #12]\n"
        "mov    r11, r2\n"
        // end = list + 4 n; an odd tap first, then two per turn
        "lsls   r1, r1, #2\n"
        "adds   r3, r0, r1\n"
        "mov    r12, r3\n"
        "lsrs   r1, r1, #3\n"           // carry: n was odd
        "bcc    2f\n"
        "ldmia  r0!, {r1}\n"
        "asrs   r2, r1, #16\n"
        "uxth   r1, r1\n"
        "ldrsb  r3, [r4, r1]\n"
        "muls   r3, r2\n"
        "add    r8, r3\n"
        "ldrsb  r3, [r5, r1]\n"
        "muls   r3, r2\n"
        "add    r9, r3\n"
        "ldrsb  r3, [r6, r1]\n"
        "muls   r3, r2\n"
        "add    r10, r3\n"
        "ldrsb  r3, [r7, r1]\n"
        "muls   r3, r2\n"
        "add    r11, r3\n"
        "2:\n"
        "cmp    r0, r12\n"
        "beq    3f\n"
        "1:\n"
        "ldmia  r0!, {r1}\n"            // 2  tap
        "asrs   r2, r1, #16\n"          // 1  x
        "uxth   r1, r1\n"               // 1  offset
        "ldrsb  r3, [r4, r1]\n"         // 2
        "muls   r3, r2\n"               // 1
        "add    r8, r3\n"               // 1
        "ldrsb  r3, [r5, r1]\n"         // 2
        "muls   r3, r2\n"               // 1
        "add    r9, r3\n"               // 1
        "ldrsb  r3, [r6, r1]\n"         // 2
        "muls   r3, r2\n"               // 1
        "add    r10, r3\n"              // 1
        "ldrsb  r3, [r7, r1]\n"         // 2
        "muls   r3, r2\n"               // 1
        "add    r11, r3\n"              // 1  = 20
        "ldmia  r0!, {r1}\n"
        "asrs   r2, r1, #16\n"
        "uxth   r1, r1\n"
        "ldrsb  r3, [r4, r1]\n"
        "muls   r3, r2\n"
        "add    r8, r3\n"
        "ldrsb  r3, [r5, r1]\n"
        "muls   r3, r2\n"
        "add    r9, r3\n"
        "ldrsb  r3, [r6, r1]\n"
        "muls   r3, r2\n"
        "add    r10, r3\n"
        "ldrsb  r3, [r7, r1]\n"
        "muls   r3, r2\n"
        "add    r11, r3\n"              // 20
        "cmp    r0, r12\n"              // 1
        "bne    1b\n"                   // 2   = 43 cycles / 8 MACs
        "3:\n"
        "ldr    r3, [sp, #36]\n"
        "mov    r2, r8\n"
        "str    r2, [r3, #0]\n"
        "mov    r2, r9\n"
        "str    r2, [r3, #4]\n"
        "mov    r2, r10\n"
        "str    r2, [r3, #8]\n"
        "mov    r2, r11\n"
        "str    r2, [r3, #12]\n"
        "pop    {r4, r5, r6, r7}\n"
        "mov    r8, r4\n"
        "mov    r9, r5\n"
        "mov    r10, r6\n"
        "mov    r11, r7\n"
        "pop    {r4, r5, r6, r7, pc}\n"
        );
}

// acc[c] = ch[c].bias + sum over the taps of byte c % 4 of the weight word at
// taps[k].w + c - c % 4 times the same byte of the x word at taps[k].x + c - c % 4 (both
// signed), every channel c < n_c (a multiple of 4; n >= 1): 30 cycles per tap and four
// channels (4 MACs), 30 more per four channels (biases in, sums out), counted below.
//   r0 taps, r1 channel records, r2 c (byte offset of the four channels), r3 acc,
//   r4 x, r5 weights, r6-r7 lanes, r8-r11 the four sums, r12 taps end, lr taps.
static NN_I8_HOT __attribute__((naked, noinline)) void dw_pixel(
    const dw_tap_t *taps NN_UNUSED, uint32_t n NN_UNUSED, const nn_i8_channel_t *ch NN_UNUSED,
    int32_t *acc NN_UNUSED, uint32_t n_c NN_UNUSED) {
    __asm__ volatile (
        ".syntax unified\n"
        "push   {r4, r5, r6, r7, lr}\n"
        "mov    r4, r8\n"
        "mov    r5, r9\n"
        "mov    r6, r10\n"
        "mov    r7, r11\n"
        "push   {r4, r5, r6, r7}\n"    // n_c is now at [sp, #36]
        "mov    lr, r0\n"
        "lsls   r1, r1, #3\n"
        "adds   r1, r0, r1\n"
        "mov    r12, r1\n"
        "movs   r1, r2\n"
        "movs   r2, #0\n"
        "2:\n"
        "ldr    r4, [r1, #0]\n"        // 8  the four biases
        "ldr    r5, [r1, #12]\n"
        "ldr    r6, [r1, #24]\n"
        "ldr    r7, [r1, #36]\n"
        "adds   r1, #48\n"             // 1
        "mov    r8, r4\n"              // 4
        "mov    r9, r5\n"
        "mov    r10, r6\n"
        "mov    r11, r7\n"
        "mov    r0, lr\n"              // 1
        "1:\n"
        "ldmia  r0!, {r4, r5}\n"       // 3  the tap's pixel and weight row
        "ldr    r4, [r4, r2]\n"        // 2  four x
        "ldr    r5, [r5, r2]\n"        // 2  four weights
        "sxtb   r6, r4\n"              // 1
        "sxtb   r7, r5\n"              // 1
        "muls   r6, r7\n"              // 1
        "add    r8, r6\n"              // 1
        "lsls   r6, r4, #16\n"         // 1
        "asrs   r6, r6, #24\n"         // 1
        "lsls   r7, r5, #16\n"         // 1
        "asrs   r7, r7, #24\n"         // 1
        "muls   r6, r7\n"              // 1
        "add    r9, r6\n"              // 1
        "lsls   r6, r4, #8\n"          // 1
        "asrs   r6, r6, #24\n"         // 1
        "lsls   r7, r5, #8\n"          // 1
        "asrs   r7, r7, #24\n"         // 1
        "muls   r6, r7\n"              // 1
        "add    r10, r6\n"             // 1
        "asrs   r4, r4, #24\n"         // 1
        "asrs   r5, r5, #24\n"         // 1
        "muls   r4, r5\n"              // 1
        "add    r11, r4\n"             // 1
        "cmp    r0, r12\n"             // 1
        "bne    1b\n"                  // 2  = 30 cycles / 4 MACs
        "mov    r4, r8\n"              // 4
        "mov    r5, r9\n"
        "mov    r6, r10\n"
        "mov    r7, r11\n"
        "stmia  r3!, {r4, r5, r6, r7}\n" // 5  the four sums
        "adds   r2, #4\n"              // 1
        "ldr    r4, [sp, #36]\n"       // 2
        "cmp    r2, r4\n"              // 1
        "bne    2b\n"                  // 2  = 29 + 30 per tap
        "pop    {r4, r5, r6, r7}\n"
        "mov    r8, r4\n"
        "mov    r9, r5\n"
        "mov    r10, r6\n"
        "mov    r11, r7\n"
        "pop    {r4, r5, r6, r7, pc}\n"
        );
}

// floor((a * b + 2^30) / 2^31): the 64-bit product from four 16 x 16-bit products, summed
// with carries into (hi, lo); 29 cycles with the call and return.
//   r0 a -> ah -> hi, r1 b -> bh, r2 al, r3 bl, r4 lo.
static NN_I8_HOT __attribute__((naked, noinline)) int32_t high_mul_round(int32_t a NN_UNUSED,
    int32_t b NN_UNUSED) {
    __asm__ volatile (
        ".syntax unified\n"
        "push   {r4, lr}\n"
        "uxth   r2, r0\n"              // al
        "asrs   r0, r0, #16\n"         // ah
        "uxth   r3, r1\n"              // bl
        "asrs   r1, r1, #16\n"         // bh
        "movs   r4, r2\n"
        "muls   r4, r3\n"              // lo = al * bl (unsigned, exact)
        "muls   r3, r0\n"              // ah * bl
        "muls   r2, r1\n"              // al * bh
        "muls   r0, r1\n"              // hi = ah * bh
        "lsls   r1, r3, #16\n"
        "asrs   r3, r3, #16\n"
        "adds   r4, r4, r1\n"          // + (ah * bl) << 16
        "adcs   r0, r3\n"
        "lsls   r1, r2, #16\n"
        "asrs   r2, r2, #16\n"
        "adds   r4, r4, r1\n"          // + (al * bh) << 16
        "adcs   r0, r2\n"
        "movs   r1, #1\n"
        "lsls   r1, r1, #30\n"
        "movs   r2, #0\n"
        "adds   r4, r4, r1\n"          // + 2^30
        "adcs   r0, r2\n"
        "lsls   r0, r0, #1\n"          // bits 62..31
        "lsrs   r4, r4, #31\n"
        "orrs   r0, r4\n"
        "pop    {r4, pc}\n"
        );
}

#endif // PICONN_ARCH_ARMV6M_INT8_H
