// ARMv6-M (Cortex-M0+: the RP2040) inner loops of the int8 kernels (nn_int8.c), in
// hand-scheduled Thumb-1 assembly.
//
// nn_int8.c includes this header when it is compiled for ARMv6-M (and not with
// -DNN_NO_ASM); every other target uses the portable C loops of nn_int8.c, which compute
// the same values. Each loop here has the name and the contract of the C loop it
// replaces, and a macro announces it:
//   NN_ARCH_DOT4   dot4(list, n, w, stride, acc)
//   NN_ARCH_DOT_PIXEL  dot_pixel(list, n, w, stride, bias, acc, groups)
//   NN_ARCH_DW_PIXEL  dw_pixel(taps, n, ch, acc, n_c)
//   NN_ARCH_HIGH_MUL_ROUND  high_mul_round(a, b)
//   NN_ARCH_REQUANT_ROW     requant_row(acc, ch, out, y, n)
// Cycle counts are for the RP2040 (single-cycle multiply, 2-cycle loads, LDM at one
// cycle per word plus one, taken branches 2).
//
// Not a public header: nn_int8.c defines NN_I8_HOT (placement in RAM) and NN_UNUSED
// before it includes this file.
#ifndef PICONN_ARCH_ARMV6M_INT8_H
#define PICONN_ARCH_ARMV6M_INT8_H

#define NN_ARCH_DOT4 (1)
#define NN_ARCH_DOT_PIXEL (1)
#define NN_ARCH_DW_PIXEL (1)
#define NN_ARCH_HIGH_MUL_ROUND (1)
#define NN_ARCH_REQUANT_ROW (1)

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

// acc[4g + r] = bias[4g + r] (0 if bias is NULL) + w[(4g + r) * stride + off_k] * x_k
// over the taps k < n (n even), for rows r < 4 of each group g < groups (>= 1): dot4's
// 43 cycles per two taps, and 45 per group (rows, biases in, sums out), counted below.
//   r0 list, r1 tap -> offset, r2 x, r3 product, r4-r7 the group's four weight rows,
//   r8-r11 the four sums, r12 list end, lr list; on the stack: the next group's rows,
//   stride, then the arguments bias, acc, groups (advanced as the groups go).
static NN_I8_HOT __attribute__((naked, noinline)) void dot_pixel(
    const uint32_t *list NN_UNUSED, uint32_t n NN_UNUSED, const int8_t *w NN_UNUSED,
    uint32_t stride NN_UNUSED, const int32_t *bias NN_UNUSED, int32_t *acc NN_UNUSED,
    uint32_t groups NN_UNUSED) {
    __asm__ volatile (
        ".syntax unified\n"
        "push   {r4, r5, r6, r7, lr}\n"
        "mov    r4, r8\n"
        "mov    r5, r9\n"
        "mov    r6, r10\n"
        "mov    r7, r11\n"
        "push   {r4, r5, r6, r7}\n"
        "sub    sp, #8\n"              // [sp] rows, [sp+4] stride; bias [sp+44], acc [sp+48],
        "str    r2, [sp, #0]\n"        // groups [sp+52]
        "str    r3, [sp, #4]\n"
        "mov    lr, r0\n"
        "lsls   r1, r1, #2\n"
        "adds   r1, r0, r1\n"
        "mov    r12, r1\n"
        "2:\n"
        "ldr    r4, [sp, #0]\n"        // 2  the group's rows
        "ldr    r3, [sp, #4]\n"        // 2
        "adds   r5, r4, r3\n"          // 1
        "adds   r6, r5, r3\n"          // 1
        "adds   r7, r6, r3\n"          // 1
        "adds   r0, r7, r3\n"          // 1
        "str    r0, [sp, #0]\n"        // 2
        "ldr    r0, [sp, #44]\n"       // 2  biases
        "cmp    r0, #0\n"              // 1
        "beq    4f\n"                  // 1
        "ldmia  r0!, {r1, r2, r3}\n"   // 4
        "mov    r8, r1\n"              // 1
        "mov    r9, r2\n"              // 1
        "mov    r10, r3\n"             // 1
        "ldmia  r0!, {r1}\n"           // 2
        "mov    r11, r1\n"             // 1
        "str    r0, [sp, #44]\n"       // 2
        "b      5f\n"                  // 2
        "4:\n"
        "movs   r1, #0\n"
        "mov    r8, r1\n"
        "mov    r9, r1\n"
        "mov    r10, r1\n"
        "mov    r11, r1\n"
        "5:\n"
        "mov    r0, lr\n"              // 1
        "cmp    r0, r12\n"             // 1
        "beq    3f\n"                  // 1
        "1:\n"
        "ldmia  r0!, {r1}\n"           // 2  tap
        "asrs   r2, r1, #16\n"         // 1  x
        "uxth   r1, r1\n"              // 1  offset
        "ldrsb  r3, [r4, r1]\n"        // 2
        "muls   r3, r2\n"              // 1
        "add    r8, r3\n"              // 1
        "ldrsb  r3, [r5, r1]\n"        // 2
        "muls   r3, r2\n"              // 1
        "add    r9, r3\n"              // 1
        "ldrsb  r3, [r6, r1]\n"        // 2
        "muls   r3, r2\n"              // 1
        "add    r10, r3\n"             // 1
        "ldrsb  r3, [r7, r1]\n"        // 2
        "muls   r3, r2\n"              // 1
        "add    r11, r3\n"             // 1  = 20
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
        "add    r11, r3\n"             // 20
        "cmp    r0, r12\n"             // 1
        "bne    1b\n"                  // 2   = 43 cycles / 8 MACs
        "3:\n"
        "ldr    r3, [sp, #48]\n"       // 2  sums out
        "mov    r4, r8\n"              // 4
        "mov    r5, r9\n"
        "mov    r6, r10\n"
        "mov    r7, r11\n"
        "stmia  r3!, {r4, r5, r6, r7}\n" // 5
        "str    r3, [sp, #48]\n"       // 2
        "ldr    r1, [sp, #52]\n"       // 2
        "subs   r1, #1\n"              // 1
        "str    r1, [sp, #52]\n"       // 2
        "bne    2b\n"                  // 2
        "add    sp, #8\n"
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

// y[c] = clamp(MBQM(acc[c], ch[c].multiplier, ch[c].shift) + zero, lo, hi) for c < n,
// out = {zero, lo, hi}: acc <= 0 under a ReLU (lo >= zero) gives lo (17 cycles); shift
// <= 0 and |acc| < 2^19, nn_int8.c's short way (55 cycles); otherwise nn_i8_mbqm.
//   r0 acc, r1 channel records, r2 scratch, r3 y, r4 x, r5 multiplier, r6 shift, r7 v,
//   r8 zero, r9 lo, r10 hi, r11 ReLU (1) or not (0), r12 y end.
static NN_I8_HOT __attribute__((naked, noinline)) void requant_row(
    const int32_t *acc NN_UNUSED, const nn_i8_channel_t *ch NN_UNUSED,
    const int32_t *out NN_UNUSED, int8_t *y NN_UNUSED, uint32_t n NN_UNUSED) {
    __asm__ volatile (
        ".syntax unified\n"
        "push   {r4, r5, r6, r7, lr}\n"
        "mov    r4, r8\n"
        "mov    r5, r9\n"
        "mov    r6, r10\n"
        "mov    r7, r11\n"
        "push   {r4, r5, r6, r7}\n"    // n is now at [sp, #36]
        "ldmia  r2!, {r4, r5, r6}\n"
        "mov    r8, r4\n"
        "mov    r9, r5\n"
        "mov    r10, r6\n"
        "movs   r7, #0\n"
        "cmp    r5, r4\n"
        "blt    0f\n"
        "movs   r7, #1\n"
        "0:\n"
        "mov    r11, r7\n"
        "ldr    r4, [sp, #36]\n"
        "adds   r4, r3, r4\n"
        "mov    r12, r4\n"
        "cmp    r3, r12\n"
        "beq    9f\n"
        "1:\n"
        "ldmia  r0!, {r4}\n"           // 2  x
        "adds   r1, #12\n"             // 1
        "cmp    r4, #0\n"              // 1
        "bgt    2f\n"                  // 1 / 2
        "mov    r7, r11\n"             // 1  x <= 0: lo under a ReLU
        "cmp    r7, #0\n"              // 1
        "beq    2f\n"                  // 1
        "mov    r7, r9\n"              // 1
        "b      6f\n"                  // 2
        "2:\n"
        "subs   r1, #12\n"             // 1
        "ldr    r5, [r1, #4]\n"        // 2  multiplier
        "ldr    r6, [r1, #8]\n"        // 2  shift
        "adds   r1, #12\n"             // 1
        "cmp    r6, #0\n"              // 1  shift > 0: the long way
        "bgt    7f\n"                  // 1
        "movs   r7, #1\n"              // 1  |x| >= 2^19: the long way
        "lsls   r7, r7, #19\n"         // 1
        "adds   r7, r7, r4\n"          // 1
        "lsrs   r7, r7, #20\n"         // 1
        "bne    7f\n"                  // 1
        "lsls   r7, r5, #21\n"         // 1  x * (m & 0x7ff) >> 11
        "lsrs   r7, r7, #21\n"         // 1
        "muls   r7, r4\n"              // 1
        "asrs   r7, r7, #11\n"         // 1
        "lsls   r2, r5, #10\n"         // 1  + x * (m >> 11 & 0x7ff), >> 11
        "lsrs   r2, r2, #21\n"         // 1
        "muls   r2, r4\n"              // 1
        "adds   r7, r7, r2\n"          // 1
        "asrs   r7, r7, #11\n"         // 1
        "asrs   r5, r5, #22\n"         // 1  + x * (m >> 22)
        "muls   r5, r4\n"              // 1
        "adds   r7, r7, r5\n"          // 1
        "adds   r7, #128\n"            // 1  (+ 2^8) >> 9: the doubling high multiply
        "adds   r7, #128\n"            // 1
        "asrs   r7, r7, #9\n"          // 1
        "rsbs   r6, r6, #0\n"          // 1  e = -shift
        "beq    5f\n"                  // 1
        "subs   r5, r6, #1\n"          // 1  (v + 2^(e-1) - (v < 0)) >> e
        "movs   r2, #1\n"              // 1
        "lsls   r2, r5\n"              // 1
        "asrs   r5, r7, #31\n"         // 1
        "adds   r7, r7, r2\n"          // 1
        "adds   r7, r7, r5\n"          // 1
        "asrs   r7, r6\n"              // 1
        "5:\n"
        "add    r7, r8\n"              // 1  + zero
        "cmp    r7, r9\n"              // 1  clamp to [lo, hi]
        "bge    3f\n"                  // 2
        "mov    r7, r9\n"
        "3:\n"
        "cmp    r7, r10\n"             // 1
        "ble    6f\n"                  // 2
        "mov    r7, r10\n"
        "6:\n"
        "strb   r7, [r3]\n"            // 2
        "adds   r3, #1\n"              // 1
        "cmp    r3, r12\n"             // 1
        "bne    1b\n"                  // 2
        "9:\n"
        "pop    {r4, r5, r6, r7}\n"
        "mov    r8, r4\n"
        "mov    r9, r5\n"
        "mov    r10, r6\n"
        "mov    r11, r7\n"
        "pop    {r4, r5, r6, r7, pc}\n"
        "7:\n"                         // the long way: nn_i8_mbqm(x, multiplier, shift)
        "mov    r2, r12\n"
        "push   {r0, r1, r2, r3}\n"
        "movs   r0, r4\n"
        "movs   r1, r5\n"
        "movs   r2, r6\n"
        "bl     nn_i8_mbqm\n"
        "movs   r7, r0\n"
        "pop    {r0, r1, r2, r3}\n"
        "mov    r12, r2\n"
        "b      5b\n"
        );
}

#endif // PICONN_ARCH_ARMV6M_INT8_H
