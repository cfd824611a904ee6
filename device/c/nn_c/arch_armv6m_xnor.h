// ARMv6-M (Cortex-M0+: the RP2040) inner loop of BINARIZE_CONV_2D (nn_xnor_graph.c), in
// hand-scheduled Thumb-1 assembly.
//
// nn_xnor_graph.c includes this header when it is compiled for ARMv6-M (and not with
// -DNN_NO_ASM); every other target uses its portable C loop, which computes the same
// sums. The loop here has the name and the contract of the C loop it replaces, and a
// macro announces it:
//   NN_ARCH_BCONV_SUMS   bconv_sums(list, n, w, stride, s, groups)
// Cycle counts are for the RP2040 (single-cycle multiply, 2-cycle loads, taken branches 2).
//
// Not a public header: nn_xnor_graph.c defines NN_XNOR_HOT (placement in RAM) and
// NN_UNUSED before it includes this file.
#ifndef PICONN_ARCH_ARMV6M_XNOR_H
#define PICONN_ARCH_ARMV6M_XNOR_H

#define NN_ARCH_BCONV_SUMS (1)

// s[4g + r] = sum of w[(4g + r) * stride + off_k] * x_k over the taps k < n (n even; tap
// words: offset in the low half, x - zx in the high half), rows r < 4 of each group
// g < groups (>= 1): 43 cycles per two taps (8 MACs) and about 40 per group (rows in,
// sums out), counted below.
//   r0 list, r1 tap -> offset, r2 x, r3 product, r4-r7 the group's four weight rows,
//   r8-r11 the four sums, r12 list end, lr list; on the stack: the next group's rows,
//   stride, then the arguments s and groups (advanced as the groups go).
// (naked: the arguments arrive in r0-r3 and on the stack per the AAPCS)
static NN_XNOR_HOT __attribute__((naked, noinline)) void bconv_sums(
    const uint32_t *list NN_UNUSED, uint32_t n NN_UNUSED, const int8_t *w NN_UNUSED,
    uint32_t stride NN_UNUSED, int32_t *s NN_UNUSED, uint32_t groups NN_UNUSED) {
    __asm__ volatile (
        ".syntax unified\n"
        "push   {r4, r5, r6, r7, lr}\n"
        "mov    r4, r8\n"
        "mov    r5, r9\n"
        "mov    r6, r10\n"
        "mov    r7, r11\n"
        "push   {r4, r5, r6, r7}\n"
        "sub    sp, #8\n"              // [sp] rows, [sp+4] stride; s [sp+44], groups [sp+48]
        "str    r2, [sp, #0]\n"
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
        "movs   r1, #0\n"              // 1  the sums start at 0
        "mov    r8, r1\n"              // 1
        "mov    r9, r1\n"              // 1
        "mov    r10, r1\n"             // 1
        "mov    r11, r1\n"             // 1
        "mov    r0, lr\n"              // 1
        "cmp    r0, r12\n"             // 1
        "beq    3f\n"                  // 1
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
        "ldr    r3, [sp, #44]\n"       // 2  sums out
        "mov    r4, r8\n"              // 4
        "mov    r5, r9\n"
        "mov    r6, r10\n"
        "mov    r7, r11\n"
        "stmia  r3!, {r4, r5, r6, r7}\n" // 5
        "str    r3, [sp, #44]\n"       // 2
        "ldr    r1, [sp, #48]\n"       // 2
        "subs   r1, #1\n"              // 1
        "str    r1, [sp, #48]\n"       // 2
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

#endif // PICONN_ARCH_ARMV6M_XNOR_H
