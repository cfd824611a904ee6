// ARMv6-M (Cortex-M0+: the RP2040) inner loop of BINARIZE_CONV_2D (nn_xnor_graph.c), in
// hand-scheduled Thumb-1 assembly.
//
// nn_xnor_graph.c includes this header when it is compiled for ARMv6-M (and not with
// -DNN_NO_ASM); every other target uses its portable C loop, which computes the same
// sums. The loop here has the name and the contract of the C loop it replaces, and a
// macro announces it:
//   NN_ARCH_BCONV_DOT4   bconv_dot4(list, n, w, stride, s)
// Cycle counts are for the RP2040 (single-cycle multiply, 2-cycle loads, taken branches 2).
//
// Not a public header: nn_xnor_graph.c defines NN_XNOR_HOT (placement in RAM) and
// NN_UNUSED before it includes this file.
#ifndef PICONN_ARCH_ARMV6M_XNOR_H
#define PICONN_ARCH_ARMV6M_XNOR_H

#define NN_ARCH_BCONV_DOT4 (1)

// s[r] = sum of w[r * stride + off_k] * x_k over the taps k < n (tap words: offset in
// the low half, x - zx in the high half), rows r < 4: 43 cycles per two taps (8 MACs),
// counted below.
//   r0 list, r1 tap -> offset, r2 x, r3 product, r4-r7 the four weight rows,
//   r8-r11 the four sums, r12 list end.
// (naked: the arguments arrive in r0-r3 and on the stack per the AAPCS)
static NN_XNOR_HOT __attribute__((naked, noinline)) void bconv_dot4(
    const uint32_t *list NN_UNUSED, uint32_t n NN_UNUSED, const int8_t *w NN_UNUSED,
    uint32_t stride NN_UNUSED, int32_t *s NN_UNUSED) {
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
        // the sums start at 0
        "movs   r2, #0\n"
        "mov    r8, r2\n"
        "mov    r9, r2\n"
        "mov    r10, r2\n"
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
        "asrs   r2, r1, #16\n"          // 1  x - zx
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
        "ldr    r3, [sp, #36]\n"        // s (the 5th argument, above the 9 saved words)
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

#endif // PICONN_ARCH_ARMV6M_XNOR_H
