// ARMv6-M (Cortex-M0+: the RP2040) inner loops of the piconn kernels, hand-scheduled
// in Thumb-1 assembly.
//
// nn_kernels.c includes this header when it is compiled for ARMv6-M (and not with
// -DNN_NO_ASM); every other target uses the portable C loops of nn_kernels.c, which
// compute the same values. Each loop here has the name and the contract of the C loop
// it replaces, and a macro announces it:
//   NN_ARCH_MAC_ROW4        mac_row4(acc, w4, xi, n4)
//   NN_ARCH_BINARIZE_WORDS  binarize_words(x, threshold, y, n_words)
//   NN_ARCH_POPCOUNT_ROWS   popcount_rows_arch(x, w, nw, n_rows, m), for rows of
//                           nw >= NN_ARCH_POPCOUNT_MIN_WORDS words
//   NN_ARCH_POPCOUNT_AND_ROWS  popcount_and_rows_arch(x, w, nw, n_rows, m, stride), for
//                           8 <= nw <= 31
//   NN_ARCH_THRESHOLD_WORD  threshold_word(m, t, n)
// Cycle counts are for the RP2040 (single-cycle multiply, 2-cycle loads, LDM/STM at one
// cycle per word plus one); device/c/README.md has the measured figures.
//
// Not a public header: nn_kernels.c defines NN_HOT (placement in RAM), NN_UNUSED and
// nn_u32a (a word that may alias bytes) before it includes this file.
#ifndef PICONN_ARCH_ARMV6M_H
#define PICONN_ARCH_ARMV6M_H

#define NN_ARCH_MAC_ROW4 (1)
#define NN_ARCH_BINARIZE_WORDS (1)
#define NN_ARCH_POPCOUNT_ROWS (1)
#define NN_ARCH_POPCOUNT_MIN_WORDS (3)
#define NN_ARCH_POPCOUNT_AND_ROWS (1)
#define NN_ARCH_THRESHOLD_WORD (1)

// ---------------------------------------------------------------------------
// Integer row accumulation

// acc[4k+j] += xi * byte j of w4[k], k < n4 (n4 >= 1): 32 cycles per 4 MACs (counted
// below), the four accumulators moving with one LDM and one STM.
//   r0-r3 accumulators, r4 weight word, r5 xi, r6 scratch, r7 acc pointer,
//   r8 weight pointer, r9 acc end.
// (naked: the arguments arrive in r0-r3 per the AAPCS; the body is assembly only)
static NN_HOT __attribute__((naked, noinline)) void mac_row4(uint32_t *acc NN_UNUSED,
    const nn_u32a *w4 NN_UNUSED, uint32_t xi NN_UNUSED, uint32_t n4 NN_UNUSED) {
    __asm__ volatile (
        ".syntax unified\n"
        "push   {r4, r5, r6, r7, lr}\n"
        "mov    r4, r8\n"
        "mov    r5, r9\n"
        "push   {r4, r5}\n"
        "mov    r8, r1\n"
        "lsls   r3, r3, #4\n"
        "adds   r3, r0, r3\n"
        "mov    r9, r3\n"
        "movs   r7, r0\n"
        "movs   r5, r2\n"
        "1:\n"
        "mov    r6, r8\n"               // 1
        "ldmia  r6!, {r4}\n"            // 2  four weights
        "mov    r8, r6\n"               // 1
        "ldmia  r7!, {r0, r1, r2, r3}\n" // 5  four accumulators
        "uxtb   r6, r4\n"               // 1
        "muls   r6, r5\n"               // 1
        "adds   r0, r0, r6\n"           // 1
        "lsrs   r6, r4, #8\n"           // 1
        "uxtb   r6, r6\n"               // 1
        "muls   r6, r5\n"               // 1
        "adds   r1, r1, r6\n"           // 1
        "lsrs   r6, r4, #16\n"          // 1
        "uxtb   r6, r6\n"               // 1
        "muls   r6, r5\n"               // 1
        "adds   r2, r2, r6\n"           // 1
        "lsrs   r4, r4, #24\n"          // 1
        "muls   r4, r5\n"               // 1
        "adds   r3, r3, r4\n"           // 1
        "subs   r7, #16\n"              // 1
        "stmia  r7!, {r0, r1, r2, r3}\n" // 5
        "cmp    r7, r9\n"               // 1
        "bne    1b\n"                   // 2   = 32 cycles / 4 MACs
        "pop    {r4, r5}\n"
        "mov    r8, r4\n"
        "mov    r9, r5\n"
        "pop    {r4, r5, r6, r7, pc}\n"
        );
}

// ---------------------------------------------------------------------------
// Binarization

// y[k] for k < n_words: 32 pixels per word, from the last one down, each shifted in
// by CMP (carry = x >= threshold) and ADCS (word = 2 * word + carry): 4 cycles a pixel.
static NN_HOT __attribute__((naked, noinline)) void binarize_words(const uint8_t *x NN_UNUSED,
    uint32_t threshold NN_UNUSED, uint32_t *y NN_UNUSED, uint32_t n_words NN_UNUSED) {
    __asm__ volatile (
        ".syntax unified\n"
        "push   {r4, r5}\n"
        "1:\n"
        "movs   r4, #0\n"
        "ldrb   r5, [r0, #31]\n"
        "cmp    r5, r1\n"
        "adcs   r4, r4\n"
        "ldrb   r5, [r0, #30]\n"
        "cmp    r5, r1\n"
        "adcs   r4, r4\n"
        "ldrb   r5, [r0, #29]\n"
        "cmp    r5, r1\n"
        "adcs   r4, r4\n"
        "ldrb   r5, [r0, #28]\n"
        "cmp    r5, r1\n"
        "adcs   r4, r4\n"
        "ldrb   r5, [r0, #27]\n"
        "cmp    r5, r1\n"
        "adcs   r4, r4\n"
        "ldrb   r5, [r0, #26]\n"
        "cmp    r5, r1\n"
        "adcs   r4, r4\n"
        "ldrb   r5, [r0, #25]\n"
        "cmp    r5, r1\n"
        "adcs   r4, r4\n"
        "ldrb   r5, [r0, #24]\n"
        "cmp    r5, r1\n"
        "adcs   r4, r4\n"
        "ldrb   r5, [r0, #23]\n"
        "cmp    r5, r1\n"
        "adcs   r4, r4\n"
        "ldrb   r5, [r0, #22]\n"
        "cmp    r5, r1\n"
        "adcs   r4, r4\n"
        "ldrb   r5, [r0, #21]\n"
        "cmp    r5, r1\n"
        "adcs   r4, r4\n"
        "ldrb   r5, [r0, #20]\n"
        "cmp    r5, r1\n"
        "adcs   r4, r4\n"
        "ldrb   r5, [r0, #19]\n"
        "cmp    r5, r1\n"
        "adcs   r4, r4\n"
        "ldrb   r5, [r0, #18]\n"
        "cmp    r5, r1\n"
        "adcs   r4, r4\n"
        "ldrb   r5, [r0, #17]\n"
        "cmp    r5, r1\n"
        "adcs   r4, r4\n"
        "ldrb   r5, [r0, #16]\n"
        "cmp    r5, r1\n"
        "adcs   r4, r4\n"
        "ldrb   r5, [r0, #15]\n"
        "cmp    r5, r1\n"
        "adcs   r4, r4\n"
        "ldrb   r5, [r0, #14]\n"
        "cmp    r5, r1\n"
        "adcs   r4, r4\n"
        "ldrb   r5, [r0, #13]\n"
        "cmp    r5, r1\n"
        "adcs   r4, r4\n"
        "ldrb   r5, [r0, #12]\n"
        "cmp    r5, r1\n"
        "adcs   r4, r4\n"
        "ldrb   r5, [r0, #11]\n"
        "cmp    r5, r1\n"
        "adcs   r4, r4\n"
        "ldrb   r5, [r0, #10]\n"
        "cmp    r5, r1\n"
        "adcs   r4, r4\n"
        "ldrb   r5, [r0, #9]\n"
        "cmp    r5, r1\n"
        "adcs   r4, r4\n"
        "ldrb   r5, [r0, #8]\n"
        "cmp    r5, r1\n"
        "adcs   r4, r4\n"
        "ldrb   r5, [r0, #7]\n"
        "cmp    r5, r1\n"
        "adcs   r4, r4\n"
        "ldrb   r5, [r0, #6]\n"
        "cmp    r5, r1\n"
        "adcs   r4, r4\n"
        "ldrb   r5, [r0, #5]\n"
        "cmp    r5, r1\n"
        "adcs   r4, r4\n"
        "ldrb   r5, [r0, #4]\n"
        "cmp    r5, r1\n"
        "adcs   r4, r4\n"
        "ldrb   r5, [r0, #3]\n"
        "cmp    r5, r1\n"
        "adcs   r4, r4\n"
        "ldrb   r5, [r0, #2]\n"
        "cmp    r5, r1\n"
        "adcs   r4, r4\n"
        "ldrb   r5, [r0, #1]\n"
        "cmp    r5, r1\n"
        "adcs   r4, r4\n"
        "ldrb   r5, [r0, #0]\n"
        "cmp    r5, r1\n"
        "adcs   r4, r4\n"
        "adds   r0, #32\n"
        "stmia  r2!, {r4}\n"
        "subs   r3, #1\n"
        "bne    1b\n"
        "pop    {r4, r5}\n"
        "bx     lr\n"
        );
}

// ---------------------------------------------------------------------------
// XOR popcount of weight rows

// The same for rows of 3..29 words (n_in 65..928 bits: the byte counts of a row never
// overflow), n_rows >= 1, the whole layer in one call. A group of 3 words costs 42
// cycles (three x words with one LDM, 7 ALU ops per word, one fold), two groups per loop
// turn (3 cycles), so 14.5 cycles per word; about 20 cycles per row besides.
//   r0 x pointer, r1 w pointer, r2-r4 words, r5 scratch, r6 0x55555555, r7 0x33333333,
//   r8 0x0f0f0f0f, r9 byte counts, r10 x + 12*(nw/3) (end of the groups), r11 x,
//   r12 x + 4*nw, lr m pointer, [sp] m + n_rows, [sp+4] 1 if the number of groups is odd.
static NN_HOT __attribute__((naked, noinline)) void popcount_rows_short(
    const uint32_t *x NN_UNUSED, const uint32_t *w NN_UNUSED, uint32_t nw NN_UNUSED,
    uint32_t n_rows NN_UNUSED, uint32_t *m NN_UNUSED) {
    __asm__ volatile (
        ".syntax unified\n"
        "push   {r4, r5, r6, r7, lr}\n"
        "mov    r4, r8\n"
        "mov    r5, r9\n"
        "mov    r6, r10\n"
        "mov    r7, r11\n"
        "push   {r4, r5, r6, r7}\n"
        "sub    sp, #8\n"
        "ldr    r4, [sp, #44]\n"        // m (5th argument)
        "mov    lr, r4\n"
        "lsls   r3, r3, #2\n"
        "adds   r3, r4, r3\n"
        "str    r3, [sp, #0]\n"         // m end
        "mov    r11, r0\n"
        "lsls   r3, r2, #2\n"
        "adds   r3, r0, r3\n"
        "mov    r12, r3\n"              // x end
        "movs   r3, #11\n"              // groups = nw / 3 = (nw * 11) >> 5 for nw < 30
        "muls   r3, r2\n"
        "lsrs   r3, r3, #5\n"
        "movs   r4, #1\n"
        "ands   r4, r3\n"
        "str    r4, [sp, #4]\n"         // odd number of groups: enter at the second
        "lsls   r2, r3, #3\n"
        "lsls   r3, r3, #2\n"
        "adds   r3, r3, r2\n"
        "adds   r3, r0, r3\n"
        "mov    r10, r3\n"              // end of the groups
        "ldr    r4, =0x0f0f0f0f\n"
        "mov    r8, r4\n"
        "ldr    r6, =0x55555555\n"
        "ldr    r7, =0x33333333\n"
        "1:\n"                          // ---- row
        "mov    r0, r11\n"
        "movs   r2, #0\n"
        "mov    r9, r2\n"
        "ldr    r2, [sp, #4]\n"
        "cmp    r2, #0\n"
        "bne    3f\n"
        "2:\n"                          // ---- two groups of 3 words per turn
        "ldmia  r0!, {r2, r3, r4}\n"      // 4  three x words
        "ldmia  r1!, {r5}\n"              // 2  w words, XOR
        "eors   r2, r5\n"
        "ldmia  r1!, {r5}\n"
        "eors   r3, r5\n"
        "ldmia  r1!, {r5}\n"
        "eors   r4, r5\n"
        "lsrs   r5, r2, #1\n"             // 21 SWAR: 7 per word
        "ands   r5, r6\n"
        "subs   r2, r2, r5\n"
        "lsrs   r5, r2, #2\n"
        "ands   r2, r7\n"
        "ands   r5, r7\n"
        "adds   r2, r2, r5\n"
        "lsrs   r5, r3, #1\n"
        "ands   r5, r6\n"
        "subs   r3, r3, r5\n"
        "lsrs   r5, r3, #2\n"
        "ands   r3, r7\n"
        "ands   r5, r7\n"
        "adds   r3, r3, r5\n"
        "lsrs   r5, r4, #1\n"
        "ands   r5, r6\n"
        "subs   r4, r4, r5\n"
        "lsrs   r5, r4, #2\n"
        "ands   r4, r7\n"
        "ands   r5, r7\n"
        "adds   r4, r4, r5\n"
        "adds   r2, r2, r3\n"             // 2  nibble sums <= 12
        "adds   r2, r2, r4\n"
        "mov    r5, r8\n"                 // 6  nibbles -> bytes
        "lsrs   r3, r2, #4\n"
        "ands   r2, r5\n"
        "ands   r3, r5\n"
        "adds   r2, r2, r3\n"
        "add    r9, r2\n"
        "3:\n"
        "ldmia  r0!, {r2, r3, r4}\n"
        "ldmia  r1!, {r5}\n"
        "eors   r2, r5\n"
        "ldmia  r1!, {r5}\n"
        "eors   r3, r5\n"
        "ldmia  r1!, {r5}\n"
        "eors   r4, r5\n"
        "lsrs   r5, r2, #1\n"
        "ands   r5, r6\n"
        "subs   r2, r2, r5\n"
        "lsrs   r5, r2, #2\n"
        "ands   r2, r7\n"
        "ands   r5, r7\n"
        "adds   r2, r2, r5\n"
        "lsrs   r5, r3, #1\n"
        "ands   r5, r6\n"
        "subs   r3, r3, r5\n"
        "lsrs   r5, r3, #2\n"
        "ands   r3, r7\n"
        "ands   r5, r7\n"
        "adds   r3, r3, r5\n"
        "lsrs   r5, r4, #1\n"
        "ands   r5, r6\n"
        "subs   r4, r4, r5\n"
        "lsrs   r5, r4, #2\n"
        "ands   r4, r7\n"
        "ands   r5, r7\n"
        "adds   r4, r4, r5\n"
        "adds   r2, r2, r3\n"
        "adds   r2, r2, r4\n"
        "mov    r5, r8\n"
        "lsrs   r3, r2, #4\n"
        "ands   r2, r5\n"
        "ands   r3, r5\n"
        "adds   r2, r2, r3\n"
        "add    r9, r2\n"
        "cmp    r0, r10\n"
        "bne    2b\n"                   // 3
        "cmp    r0, r12\n"              // 0, 1 or 2 words left
        "beq    4f\n"
        "ldmia  r0!, {r2}\n"
        "ldmia  r1!, {r5}\n"
        "eors   r2, r5\n"
        "lsrs   r5, r2, #1\n"
        "ands   r5, r6\n"
        "subs   r2, r2, r5\n"
        "lsrs   r5, r2, #2\n"
        "ands   r2, r7\n"
        "ands   r5, r7\n"
        "adds   r2, r2, r5\n"
        "cmp    r0, r12\n"
        "beq    5f\n"
        "ldmia  r0!, {r3}\n"
        "ldmia  r1!, {r5}\n"
        "eors   r3, r5\n"
        "lsrs   r5, r3, #1\n"
        "ands   r5, r6\n"
        "subs   r3, r3, r5\n"
        "lsrs   r5, r3, #2\n"
        "ands   r3, r7\n"
        "ands   r5, r7\n"
        "adds   r3, r3, r5\n"
        "adds   r2, r2, r3\n"
        "5:\n"
        "mov    r5, r8\n"
        "lsrs   r3, r2, #4\n"
        "ands   r2, r5\n"
        "ands   r3, r5\n"
        "adds   r2, r2, r3\n"
        "add    r9, r2\n"
        "4:\n"                          // byte counts -> count, store m[row]
        "mov    r2, r9\n"
        "ldr    r3, =0x00ff00ff\n"
        "lsrs   r4, r2, #8\n"
        "ands   r4, r3\n"
        "ands   r2, r3\n"
        "adds   r2, r2, r4\n"
        "lsrs   r3, r2, #16\n"
        "uxth   r2, r2\n"
        "adds   r2, r2, r3\n"
        "mov    r3, lr\n"
        "stmia  r3!, {r2}\n"
        "mov    lr, r3\n"
        "ldr    r2, [sp, #0]\n"
        "cmp    r3, r2\n"
        "beq    9f\n"
        "b      1b\n"                   // (conditional branches reach only 256 bytes)
        "9:\n"
        "add    sp, #8\n"
        "pop    {r4, r5, r6, r7}\n"
        "mov    r8, r4\n"
        "mov    r9, r5\n"
        "mov    r10, r6\n"
        "mov    r11, r7\n"
        "pop    {r4, r5, r6, r7, pc}\n"
        ".ltorg\n"
        );
}

// Rows of 8..31 words, n_rows >= 1, the whole layer in one call: blocks of 8 words
// through a carry-save adder tree, the words left over one by one. A full adder of
// three words a, b, c (carry = majority, sum = a ^ b ^ c) costs 5 ALU ops and no
// scratch register in two-operand Thumb:
//   b ^= a; a ^= c; a &= ~b; a ^= c (a: carry); c ^= b (c: sum)
// Four adders reduce a block to two words of weight 1, one of weight 2 and one of 4
// (at most 8 per bit), which are popcounted to nibble counts (7 ops each), weighted
// and folded into the row's byte counts: 101 cycles per 8 words (12.6 per word). A
// byte count stays <= 8 * 31 = 248, so the 16-bit fold at the row end is exact.
//   r0 x pointer, r1 w pointer, r2-r7 words and scratch, r8 0x55555555,
//   r9 0x33333333, r10 0x0f0f0f0f, r11 byte counts, r12 x + 32*(nw/8) (end of the
//   blocks), lr x + 4*nw, [sp] m pointer, [sp+4] m + n_rows, [sp+8] x.
static NN_HOT __attribute__((naked, noinline)) void popcount_rows_blocks(
    const uint32_t *x NN_UNUSED, const uint32_t *w NN_UNUSED, uint32_t nw NN_UNUSED,
    uint32_t n_rows NN_UNUSED, uint32_t *m NN_UNUSED) {
    __asm__ volatile (
        ".syntax unified\n"
        "push   {r4, r5, r6, r7, lr}\n"
        "mov    r4, r8\n"
        "mov    r5, r9\n"
        "mov    r6, r10\n"
        "mov    r7, r11\n"
        "push   {r4, r5, r6, r7}\n"
        "sub    sp, #12\n"
        "ldr    r4, [sp, #48]\n"        // m (5th argument)
        "str    r4, [sp, #0]\n"
        "lsls   r3, r3, #2\n"
        "adds   r3, r4, r3\n"
        "str    r3, [sp, #4]\n"         // m end
        "str    r0, [sp, #8]\n"         // x
        "lsls   r3, r2, #2\n"
        "adds   r3, r0, r3\n"
        "mov    lr, r3\n"               // x end
        "lsrs   r3, r2, #3\n"
        "lsls   r3, r3, #5\n"
        "adds   r3, r0, r3\n"
        "mov    r12, r3\n"              // end of the blocks
        "ldr    r4, =0x55555555\n"
        "mov    r8, r4\n"
        "ldr    r4, =0x33333333\n"
        "mov    r9, r4\n"
        "ldr    r4, =0x0f0f0f0f\n"
        "mov    r10, r4\n"
        "1:\n"                          // ---- row
        "ldr    r0, [sp, #8]\n"
        "movs   r2, #0\n"
        "mov    r11, r2\n"
        "2:\n"                          // ---- block of 8 words v0..v7 (v = x ^ w)
        "ldmia  r0!, {r2, r3, r4}\n"      // 4
        "ldmia  r1!, {r5, r6, r7}\n"      // 4
        "eors   r2, r5\n"                 // 3  v0 v1 v2
        "eors   r3, r6\n"
        "eors   r4, r7\n"
        "eors   r3, r2\n"                 // 5  r2 = carry h1, r4 = sum s1
        "eors   r2, r4\n"
        "bics   r2, r3\n"
        "eors   r2, r4\n"
        "eors   r4, r3\n"
        "ldmia  r0!, {r3, r5}\n"          // 3
        "ldmia  r1!, {r6, r7}\n"          // 3
        "eors   r3, r6\n"                 // 2  v3 v4
        "eors   r5, r7\n"
        "eors   r5, r3\n"                 // 5  r3 = h2, r4 = s2
        "eors   r3, r4\n"
        "bics   r3, r5\n"
        "eors   r3, r4\n"
        "eors   r4, r5\n"
        "ldmia  r0!, {r5, r6}\n"          // 3
        "ldmia  r1!, {r7}\n"              // 2
        "eors   r5, r7\n"                 // 1  v5
        "ldmia  r1!, {r7}\n"              // 2
        "eors   r6, r7\n"                 // 1  v6
        "eors   r6, r5\n"                 // 5  r5 = h3, r4 = s3 (weight 1)
        "eors   r5, r4\n"
        "bics   r5, r6\n"
        "eors   r5, r4\n"
        "eors   r4, r6\n"
        "eors   r3, r2\n"                 // 5  h1 + h2 + h3: r2 = f (4), r5 = t (2)
        "eors   r2, r5\n"
        "bics   r2, r3\n"
        "eors   r2, r5\n"
        "eors   r5, r3\n"
        "ldmia  r0!, {r3}\n"              // 2
        "ldmia  r1!, {r6}\n"              // 2
        "eors   r3, r6\n"                 // 1  v7 (weight 1)
        "mov    r6, r8\n"                 // 13 pairs of bits: p - ((p >> 1) & 0x55..)
        "lsrs   r7, r4, #1\n"
        "ands   r7, r6\n"
        "subs   r4, r4, r7\n"
        "lsrs   r7, r3, #1\n"
        "ands   r7, r6\n"
        "subs   r3, r3, r7\n"
        "lsrs   r7, r5, #1\n"
        "ands   r7, r6\n"
        "subs   r5, r5, r7\n"
        "lsrs   r7, r2, #1\n"
        "ands   r7, r6\n"
        "subs   r2, r2, r7\n"
        "mov    r6, r9\n"                 // 17 nibbles (<= 4 each)
        "lsrs   r7, r4, #2\n"
        "ands   r4, r6\n"
        "ands   r7, r6\n"
        "adds   r4, r4, r7\n"
        "lsrs   r7, r3, #2\n"
        "ands   r3, r6\n"
        "ands   r7, r6\n"
        "adds   r3, r3, r7\n"
        "lsrs   r7, r5, #2\n"
        "ands   r5, r6\n"
        "ands   r7, r6\n"
        "adds   r5, r5, r7\n"
        "lsrs   r7, r2, #2\n"
        "ands   r2, r6\n"
        "ands   r7, r6\n"
        "adds   r2, r2, r7\n"
        "adds   r4, r4, r3\n"             // 3  s3 + v7 <= 8, t + 2 f <= 12 per nibble
        "lsls   r2, r2, #1\n"
        "adds   r5, r5, r2\n"
        "mov    r6, r10\n"                // 12 nibbles -> bytes, (s3 + v7) + 2 (t + 2 f)
        "lsrs   r7, r4, #4\n"
        "ands   r4, r6\n"
        "ands   r7, r6\n"
        "adds   r4, r4, r7\n"
        "lsrs   r7, r5, #4\n"
        "ands   r5, r6\n"
        "ands   r7, r6\n"
        "adds   r5, r5, r7\n"
        "lsls   r5, r5, #1\n"
        "adds   r4, r4, r5\n"
        "add    r11, r4\n"
        "cmp    r0, r12\n"
        "bne    2b\n"                     // 3   = 101 cycles / 8 words
        "cmp    r0, lr\n"
        "beq    4f\n"
        "3:\n"                          // ---- the 1..7 words after the blocks
        "ldmia  r0!, {r2}\n"
        "ldmia  r1!, {r3}\n"
        "eors   r2, r3\n"
        "mov    r6, r8\n"
        "lsrs   r7, r2, #1\n"
        "ands   r7, r6\n"
        "subs   r2, r2, r7\n"
        "mov    r6, r9\n"
        "lsrs   r7, r2, #2\n"
        "ands   r2, r6\n"
        "ands   r7, r6\n"
        "adds   r2, r2, r7\n"
        "mov    r6, r10\n"
        "lsrs   r7, r2, #4\n"
        "ands   r2, r6\n"
        "ands   r7, r6\n"
        "adds   r2, r2, r7\n"
        "add    r11, r2\n"
        "cmp    r0, lr\n"
        "bne    3b\n"
        "4:\n"                          // byte counts -> count, store m[row]
        "mov    r2, r11\n"
        "ldr    r6, =0x00ff00ff\n"
        "lsrs   r7, r2, #8\n"
        "ands   r2, r6\n"
        "ands   r7, r6\n"
        "adds   r2, r2, r7\n"
        "lsrs   r7, r2, #16\n"
        "uxth   r2, r2\n"
        "adds   r2, r2, r7\n"
        "ldr    r3, [sp, #0]\n"
        "stmia  r3!, {r2}\n"
        "str    r3, [sp, #0]\n"
        "ldr    r2, [sp, #4]\n"
        "cmp    r3, r2\n"
        "beq    9f\n"
        "b      1b\n"                   // (conditional branches reach only 256 bytes)
        "9:\n"
        "add    sp, #12\n"
        "pop    {r4, r5, r6, r7}\n"
        "mov    r8, r4\n"
        "mov    r9, r5\n"
        "mov    r10, r6\n"
        "mov    r11, r7\n"
        "pop    {r4, r5, r6, r7, pc}\n"
        ".ltorg\n"
        );
}

// Rows of exactly 8 words (a 256-input layer), n_rows >= 1: the block of
// popcount_rows_blocks once per row, with no block loop and no byte-count accumulator, so
// that x, the m pointer and its end stay in registers: 113 cycles per row instead of 127.
//   r0 x pointer, r1 w pointer, r2-r7 words and scratch, r8 0x55555555, r9 0x33333333,
//   r10 0x0f0f0f0f, r11 x, r12 m pointer, lr m + n_rows.
static NN_HOT __attribute__((naked, noinline)) void popcount_rows_8(
    const uint32_t *x NN_UNUSED, const uint32_t *w NN_UNUSED, uint32_t n_rows NN_UNUSED,
    uint32_t *m NN_UNUSED) {
    __asm__ volatile (
        ".syntax unified\n"
        "push   {r4, r5, r6, r7, lr}\n"
        "mov    r4, r8\n"
        "mov    r5, r9\n"
        "mov    r6, r10\n"
        "mov    r7, r11\n"
        "push   {r4, r5, r6, r7}\n"
        "mov    r11, r0\n"
        "mov    r12, r3\n"
        "lsls   r2, r2, #2\n"
        "adds   r2, r3, r2\n"
        "mov    lr, r2\n"              // m end
        "ldr    r4, =0x55555555\n"
        "mov    r8, r4\n"
        "ldr    r4, =0x33333333\n"
        "mov    r9, r4\n"
        "ldr    r4, =0x0f0f0f0f\n"
        "mov    r10, r4\n"
        "1:\n"                          // ---- row: one block of 8 words v0..v7 (v = x ^ w)
        "mov    r0, r11\n"
        "ldmia  r0!, {r2, r3, r4}\n"      // 4
        "ldmia  r1!, {r5, r6, r7}\n"      // 4
        "eors   r2, r5\n"                 // 3  v0 v1 v2
        "eors   r3, r6\n"
        "eors   r4, r7\n"
        "eors   r3, r2\n"                 // 5  r2 = carry h1, r4 = sum s1
        "eors   r2, r4\n"
        "bics   r2, r3\n"
        "eors   r2, r4\n"
        "eors   r4, r3\n"
        "ldmia  r0!, {r3, r5}\n"          // 3
        "ldmia  r1!, {r6, r7}\n"          // 3
        "eors   r3, r6\n"                 // 2  v3 v4
        "eors   r5, r7\n"
        "eors   r5, r3\n"                 // 5  r3 = h2, r4 = s2
        "eors   r3, r4\n"
        "bics   r3, r5\n"
        "eors   r3, r4\n"
        "eors   r4, r5\n"
        "ldmia  r0!, {r5, r6}\n"          // 3
        "ldmia  r1!, {r7}\n"              // 2
        "eors   r5, r7\n"                 // 1  v5
        "ldmia  r1!, {r7}\n"              // 2
        "eors   r6, r7\n"                 // 1  v6
        "eors   r6, r5\n"                 // 5  r5 = h3, r4 = s3 (weight 1)
        "eors   r5, r4\n"
        "bics   r5, r6\n"
        "eors   r5, r4\n"
        "eors   r4, r6\n"
        "eors   r3, r2\n"                 // 5  h1 + h2 + h3: r2 = f (4), r5 = t (2)
        "eors   r2, r5\n"
        "bics   r2, r3\n"
        "eors   r2, r5\n"
        "eors   r5, r3\n"
        "ldmia  r0!, {r3}\n"              // 2
        "ldmia  r1!, {r6}\n"              // 2
        "eors   r3, r6\n"                 // 1  v7 (weight 1)
        "mov    r6, r8\n"                 // 13 pairs of bits: p - ((p >> 1) & 0x55..)
        "lsrs   r7, r4, #1\n"
        "ands   r7, r6\n"
        "subs   r4, r4, r7\n"
        "lsrs   r7, r3, #1\n"
        "ands   r7, r6\n"
        "subs   r3, r3, r7\n"
        "lsrs   r7, r5, #1\n"
        "ands   r7, r6\n"
        "subs   r5, r5, r7\n"
        "lsrs   r7, r2, #1\n"
        "ands   r7, r6\n"
        "subs   r2, r2, r7\n"
        "mov    r6, r9\n"                 // 17 nibbles (<= 4 each)
        "lsrs   r7, r4, #2\n"
        "ands   r4, r6\n"
        "ands   r7, r6\n"
        "adds   r4, r4, r7\n"
        "lsrs   r7, r3, #2\n"
        "ands   r3, r6\n"
        "ands   r7, r6\n"
        "adds   r3, r3, r7\n"
        "lsrs   r7, r5, #2\n"
        "ands   r5, r6\n"
        "ands   r7, r6\n"
        "adds   r5, r5, r7\n"
        "lsrs   r7, r2, #2\n"
        "ands   r2, r6\n"
        "ands   r7, r6\n"
        "adds   r2, r2, r7\n"
        "adds   r4, r4, r3\n"             // 3  s3 + v7 <= 8, t + 2 f <= 12 per nibble
        "lsls   r2, r2, #1\n"
        "adds   r5, r5, r2\n"
        "mov    r6, r10\n"                // 12 nibbles -> bytes, (s3 + v7) + 2 (t + 2 f)
        "lsrs   r7, r4, #4\n"
        "ands   r4, r6\n"
        "ands   r7, r6\n"
        "adds   r4, r4, r7\n"
        "lsrs   r7, r5, #4\n"
        "ands   r5, r6\n"
        "ands   r7, r6\n"
        "adds   r5, r5, r7\n"
        "lsls   r5, r5, #1\n"
        "adds   r4, r4, r5\n"
        "ldr    r6, =0x00ff00ff\n"      // byte counts -> count, store m[row]
        "lsrs   r7, r4, #8\n"
        "ands   r4, r6\n"
        "ands   r7, r6\n"
        "adds   r4, r4, r7\n"
        "lsrs   r7, r4, #16\n"
        "uxth   r4, r4\n"
        "adds   r4, r4, r7\n"
        "mov    r3, r12\n"
        "stmia  r3!, {r4}\n"
        "mov    r12, r3\n"
        "cmp    r3, lr\n"
        "beq    9f\n"
        "b      1b\n"                   // (conditional branches reach only 256 bytes)
        "9:\n"
        "pop    {r4, r5, r6, r7}\n"
        "mov    r8, r4\n"
        "mov    r9, r5\n"
        "mov    r10, r6\n"
        "mov    r11, r7\n"
        "pop    {r4, r5, r6, r7, pc}\n"
        ".ltorg\n"
        );
}

// Rows of exactly 9 words (a 3x3 binary convolution over 32 channels, n_in 288), n_rows
// >= 1: popcount_rows_8's block, with the ninth word v8 folded in by one more full adder
// (s3 + v7 + v8: sum s4 of weight 1, carry h4 of weight 2) and two half adders (t + h4:
// t' of weight 2, c of weight 4; f + c: f' of weight 4, g of weight 8). Four words are
// popcounted as in the 8-word block and the byte counts (s4 + 2t') + 4 (f' + 2g) added
// by two multiplies: about 129 cycles per row instead of 150 through
// popcount_rows_blocks. Same registers as popcount_rows_8.
static NN_HOT __attribute__((naked, noinline)) void popcount_rows_9(
    const uint32_t *x NN_UNUSED, const uint32_t *w NN_UNUSED, uint32_t n_rows NN_UNUSED,
    uint32_t *m NN_UNUSED) {
    __asm__ volatile (
        ".syntax unified\n"
        "push   {r4, r5, r6, r7, lr}\n"
        "mov    r4, r8\n"
        "mov    r5, r9\n"
        "mov    r6, r10\n"
        "mov    r7, r11\n"
        "push   {r4, r5, r6, r7}\n"
        "mov    r11, r0\n"
        "mov    r12, r3\n"
        "lsls   r2, r2, #2\n"
        "adds   r2, r3, r2\n"
        "mov    lr, r2\n"              // m end
        "ldr    r4, =0x55555555\n"
        "mov    r8, r4\n"
        "ldr    r4, =0x33333333\n"
        "mov    r9, r4\n"
        "ldr    r4, =0x0f0f0f0f\n"
        "mov    r10, r4\n"
        "1:\n"                          // ---- row: 8 words v0..v7 as popcount_rows_8, then v8
        "mov    r0, r11\n"
        "ldmia  r0!, {r2, r3, r4}\n"      // 4
        "ldmia  r1!, {r5, r6, r7}\n"      // 4
        "eors   r2, r5\n"                 // 3  v0 v1 v2
        "eors   r3, r6\n"
        "eors   r4, r7\n"
        "eors   r3, r2\n"                 // 5  r2 = carry h1, r4 = sum s1
        "eors   r2, r4\n"
        "bics   r2, r3\n"
        "eors   r2, r4\n"
        "eors   r4, r3\n"
        "ldmia  r0!, {r3, r5}\n"          // 3
        "ldmia  r1!, {r6, r7}\n"          // 3
        "eors   r3, r6\n"                 // 2  v3 v4
        "eors   r5, r7\n"
        "eors   r5, r3\n"                 // 5  r3 = h2, r4 = s2
        "eors   r3, r4\n"
        "bics   r3, r5\n"
        "eors   r3, r4\n"
        "eors   r4, r5\n"
        "ldmia  r0!, {r5, r6}\n"          // 3
        "ldmia  r1!, {r7}\n"              // 2
        "eors   r5, r7\n"                 // 1  v5
        "ldmia  r1!, {r7}\n"              // 2
        "eors   r6, r7\n"                 // 1  v6
        "eors   r6, r5\n"                 // 5  r5 = h3, r4 = s3 (weight 1)
        "eors   r5, r4\n"
        "bics   r5, r6\n"
        "eors   r5, r4\n"
        "eors   r4, r6\n"
        "eors   r3, r2\n"                 // 5  h1 + h2 + h3: r2 = f (4), r5 = t (2)
        "eors   r2, r5\n"
        "bics   r2, r3\n"
        "eors   r2, r5\n"
        "eors   r5, r3\n"
        "ldmia  r0!, {r3}\n"              // 2
        "ldmia  r1!, {r6}\n"              // 2
        "eors   r3, r6\n"                 // 1  v7 (weight 1)
        "ldmia  r0!, {r6}\n"              // 2
        "ldmia  r1!, {r7}\n"              // 2
        "eors   r6, r7\n"                 // 1  v8 (weight 1)
        "eors   r4, r3\n"                 // 5  s3 + v7 + v8: r3 = h4 (2), r6 = s4 (1)
        "eors   r3, r6\n"
        "bics   r3, r4\n"
        "eors   r3, r6\n"
        "eors   r6, r4\n"
        "movs   r7, r5\n"                 // 3  t + h4: r7 = c (4), r5 = t' (2)
        "ands   r7, r3\n"
        "eors   r5, r3\n"
        "movs   r3, r2\n"                 // 3  f + c: r3 = g (8), r2 = f' (4)
        "ands   r3, r7\n"
        "eors   r2, r7\n"
        "mov    r4, r8\n"                 // 13 pairs of bits
        "lsrs   r7, r6, #1\n"
        "ands   r7, r4\n"
        "subs   r6, r6, r7\n"
        "lsrs   r7, r5, #1\n"
        "ands   r7, r4\n"
        "subs   r5, r5, r7\n"
        "lsrs   r7, r2, #1\n"
        "ands   r7, r4\n"
        "subs   r2, r2, r7\n"
        "lsrs   r7, r3, #1\n"
        "ands   r7, r4\n"
        "subs   r3, r3, r7\n"
        "mov    r4, r9\n"                 // 17 nibbles (<= 4 each)
        "lsrs   r7, r6, #2\n"
        "ands   r6, r4\n"
        "ands   r7, r4\n"
        "adds   r6, r6, r7\n"
        "lsrs   r7, r5, #2\n"
        "ands   r5, r4\n"
        "ands   r7, r4\n"
        "adds   r5, r5, r7\n"
        "lsrs   r7, r2, #2\n"
        "ands   r2, r4\n"
        "ands   r7, r4\n"
        "adds   r2, r2, r7\n"
        "lsrs   r7, r3, #2\n"
        "ands   r3, r4\n"
        "ands   r7, r4\n"
        "adds   r3, r3, r7\n"
        "lsls   r5, r5, #1\n"             // 4  s4 + 2t' <= 12, f' + 2g <= 12 per nibble
        "adds   r6, r6, r5\n"
        "lsls   r3, r3, #1\n"
        "adds   r2, r2, r3\n"
        "mov    r4, r10\n"                // 9  nibbles -> bytes (<= 24 each)
        "lsrs   r7, r6, #4\n"
        "ands   r6, r4\n"
        "ands   r7, r4\n"
        "adds   r6, r6, r7\n"
        "lsrs   r7, r2, #4\n"
        "ands   r2, r4\n"
        "ands   r7, r4\n"
        "adds   r2, r2, r7\n"
        "ldr    r4, =0x01010101\n"        // 8  bytes summed by multiplies (<= 96 each),
        "muls   r6, r4\n"                 //    count = low + 4 high
        "muls   r2, r4\n"
        "lsrs   r6, r6, #24\n"
        "lsrs   r2, r2, #24\n"
        "lsls   r2, r2, #2\n"
        "adds   r6, r6, r2\n"
        "mov    r3, r12\n"
        "stmia  r3!, {r6}\n"
        "mov    r12, r3\n"
        "cmp    r3, lr\n"
        "beq    9f\n"
        "b      1b\n"                   // (conditional branches reach only 256 bytes)
        "9:\n"
        "pop    {r4, r5, r6, r7}\n"
        "mov    r8, r4\n"
        "mov    r9, r5\n"
        "mov    r10, r6\n"
        "mov    r11, r7\n"
        "pop    {r4, r5, r6, r7, pc}\n"
        ".ltorg\n"
        );
}

// Rows of nw >= NN_ARCH_POPCOUNT_MIN_WORDS words: 3..7 words, 8, 9 and 10..31 words in
// one call for the whole layer, longer rows one by one in chunks of 24 words.
static NN_HOT void popcount_rows_arch(
    const uint32_t *x, const uint32_t *w, uint32_t nw, uint32_t n_rows, uint32_t *m) {
    if (nw < 8) {
        popcount_rows_short(x, w, nw, n_rows, m);
    } else if (nw == 8) {
        popcount_rows_8(x, w, n_rows, m);
    } else if (nw == 9) {
        popcount_rows_9(x, w, n_rows, m);
    } else if (nw <= 31) {
        popcount_rows_blocks(x, w, nw, n_rows, m);
    } else {
        for (; n_rows; n_rows--, w += nw) {
            uint32_t total = 0, k = 0, part;
            for (; nw - k > 31; k += 24) {
                popcount_rows_blocks(x + k, w + k, 24, 1, &part);
                total += part;
            }
            popcount_rows_blocks(x + k, w + k, nw - k, 1, &part);
            *m++ = total + part;
        }
    }
}


// popcount_rows_blocks with x & w for x ^ w, and rows `stride` words apart (nw of
// them read): m[r] = popcount(x & w[r]) for rows of 8..31 words, n_rows >= 1. The same
// 101 cycles per block of 8 words, 3 more per row; the stack frame has one more slot,
// [sp+12] = 4*(stride - nw), added to the w pointer at each row end. The _pw kernels of
// nn_kernels.c read only the span of x's nonzero words this way.
static NN_HOT __attribute__((naked, noinline)) void popcount_and_rows_arch(
    const uint32_t *x NN_UNUSED, const uint32_t *w NN_UNUSED, uint32_t nw NN_UNUSED,
    uint32_t n_rows NN_UNUSED, uint32_t *m NN_UNUSED, uint32_t stride NN_UNUSED) {
    __asm__ volatile (
        ".syntax unified\n"
        "push   {r4, r5, r6, r7, lr}\n"
        "mov    r4, r8\n"
        "mov    r5, r9\n"
        "mov    r6, r10\n"
        "mov    r7, r11\n"
        "push   {r4, r5, r6, r7}\n"
        "sub    sp, #16\n"
        "ldr    r4, [sp, #52]\n"        // m (5th argument)
        "str    r4, [sp, #0]\n"
        "lsls   r3, r3, #2\n"
        "adds   r3, r4, r3\n"
        "str    r3, [sp, #4]\n"         // m end
        "str    r0, [sp, #8]\n"         // x
        "ldr    r4, [sp, #56]\n"        // stride (6th argument)
        "subs   r4, r4, r2\n"
        "lsls   r4, r4, #2\n"
        "str    r4, [sp, #12]\n"        // bytes from a row's last word read to the next row
        "lsls   r3, r2, #2\n"
        "adds   r3, r0, r3\n"
        "mov    lr, r3\n"               // x end
        "lsrs   r3, r2, #3\n"
        "lsls   r3, r3, #5\n"
        "adds   r3, r0, r3\n"
        "mov    r12, r3\n"              // end of the blocks
        "ldr    r4, =0x55555555\n"
        "mov    r8, r4\n"
        "ldr    r4, =0x33333333\n"
        "mov    r9, r4\n"
        "ldr    r4, =0x0f0f0f0f\n"
        "mov    r10, r4\n"
        "1:\n"                          // ---- row
        "ldr    r0, [sp, #8]\n"
        "movs   r2, #0\n"
        "mov    r11, r2\n"
        "2:\n"                          // ---- block of 8 words v0..v7 (v = x & w)
        "ldmia  r0!, {r2, r3, r4}\n"      // 4
        "ldmia  r1!, {r5, r6, r7}\n"      // 4
        "ands   r2, r5\n"                 // 3  v0 v1 v2
        "ands   r3, r6\n"
        "ands   r4, r7\n"
        "eors   r3, r2\n"                 // 5  r2 = carry h1, r4 = sum s1
        "eors   r2, r4\n"
        "bics   r2, r3\n"
        "eors   r2, r4\n"
        "eors   r4, r3\n"
        "ldmia  r0!, {r3, r5}\n"          // 3
        "ldmia  r1!, {r6, r7}\n"          // 3
        "ands   r3, r6\n"                 // 2  v3 v4
        "ands   r5, r7\n"
        "eors   r5, r3\n"                 // 5  r3 = h2, r4 = s2
        "eors   r3, r4\n"
        "bics   r3, r5\n"
        "eors   r3, r4\n"
        "eors   r4, r5\n"
        "ldmia  r0!, {r5, r6}\n"          // 3
        "ldmia  r1!, {r7}\n"              // 2
        "ands   r5, r7\n"                 // 1  v5
        "ldmia  r1!, {r7}\n"              // 2
        "ands   r6, r7\n"                 // 1  v6
        "eors   r6, r5\n"                 // 5  r5 = h3, r4 = s3 (weight 1)
        "eors   r5, r4\n"
        "bics   r5, r6\n"
        "eors   r5, r4\n"
        "eors   r4, r6\n"
        "eors   r3, r2\n"                 // 5  h1 + h2 + h3: r2 = f (4), r5 = t (2)
        "eors   r2, r5\n"
        "bics   r2, r3\n"
        "eors   r2, r5\n"
        "eors   r5, r3\n"
        "ldmia  r0!, {r3}\n"              // 2
        "ldmia  r1!, {r6}\n"              // 2
        "ands   r3, r6\n"                 // 1  v7 (weight 1)
        "mov    r6, r8\n"                 // 13 pairs of bits: p - ((p >> 1) & 0x55..)
        "lsrs   r7, r4, #1\n"
        "ands   r7, r6\n"
        "subs   r4, r4, r7\n"
        "lsrs   r7, r3, #1\n"
        "ands   r7, r6\n"
        "subs   r3, r3, r7\n"
        "lsrs   r7, r5, #1\n"
        "ands   r7, r6\n"
        "subs   r5, r5, r7\n"
        "lsrs   r7, r2, #1\n"
        "ands   r7, r6\n"
        "subs   r2, r2, r7\n"
        "mov    r6, r9\n"                 // 17 nibbles (<= 4 each)
        "lsrs   r7, r4, #2\n"
        "ands   r4, r6\n"
        "ands   r7, r6\n"
        "adds   r4, r4, r7\n"
        "lsrs   r7, r3, #2\n"
        "ands   r3, r6\n"
        "ands   r7, r6\n"
        "adds   r3, r3, r7\n"
        "lsrs   r7, r5, #2\n"
        "ands   r5, r6\n"
        "ands   r7, r6\n"
        "adds   r5, r5, r7\n"
        "lsrs   r7, r2, #2\n"
        "ands   r2, r6\n"
        "ands   r7, r6\n"
        "adds   r2, r2, r7\n"
        "adds   r4, r4, r3\n"             // 3  s3 + v7 <= 8, t + 2 f <= 12 per nibble
        "lsls   r2, r2, #1\n"
        "adds   r5, r5, r2\n"
        "mov    r6, r10\n"                // 12 nibbles -> bytes, (s3 + v7) + 2 (t + 2 f)
        "lsrs   r7, r4, #4\n"
        "ands   r4, r6\n"
        "ands   r7, r6\n"
        "adds   r4, r4, r7\n"
        "lsrs   r7, r5, #4\n"
        "ands   r5, r6\n"
        "ands   r7, r6\n"
        "adds   r5, r5, r7\n"
        "lsls   r5, r5, #1\n"
        "adds   r4, r4, r5\n"
        "add    r11, r4\n"
        "cmp    r0, r12\n"
        "bne    2b\n"                     // 3   = 101 cycles / 8 words
        "cmp    r0, lr\n"
        "beq    4f\n"
        "3:\n"                          // ---- the 1..7 words after the blocks, two at a
        "adds   r2, r0, #4\n"            // time (35 cycles a pair, 23 for a single word)
        "cmp    r2, lr\n"
        "beq    5f\n"
        "ldmia  r0!, {r2, r3}\n"
        "ldmia  r1!, {r4, r5}\n"
        "ands   r2, r4\n"
        "ands   r3, r5\n"
        "mov    r6, r8\n"
        "lsrs   r7, r2, #1\n"
        "ands   r7, r6\n"
        "subs   r2, r2, r7\n"
        "lsrs   r7, r3, #1\n"
        "ands   r7, r6\n"
        "subs   r3, r3, r7\n"
        "mov    r6, r9\n"
        "lsrs   r7, r2, #2\n"
        "ands   r2, r6\n"
        "ands   r7, r6\n"
        "adds   r2, r2, r7\n"
        "lsrs   r7, r3, #2\n"
        "ands   r3, r6\n"
        "ands   r7, r6\n"
        "adds   r3, r3, r7\n"
        "adds   r2, r2, r3\n"            // nibble counts <= 8
        "mov    r6, r10\n"
        "lsrs   r7, r2, #4\n"
        "ands   r2, r6\n"
        "ands   r7, r6\n"
        "adds   r2, r2, r7\n"
        "add    r11, r2\n"
        "cmp    r0, lr\n"
        "bne    3b\n"
        "b      4f\n"
        "5:\n"                          // ---- the last word
        "ldmia  r0!, {r2}\n"
        "ldmia  r1!, {r3}\n"
        "ands   r2, r3\n"
        "mov    r6, r8\n"
        "lsrs   r7, r2, #1\n"
        "ands   r7, r6\n"
        "subs   r2, r2, r7\n"
        "mov    r6, r9\n"
        "lsrs   r7, r2, #2\n"
        "ands   r2, r6\n"
        "ands   r7, r6\n"
        "adds   r2, r2, r7\n"
        "mov    r6, r10\n"
        "lsrs   r7, r2, #4\n"
        "ands   r2, r6\n"
        "ands   r7, r6\n"
        "adds   r2, r2, r7\n"
        "add    r11, r2\n"
        "4:\n"                          // byte counts -> count, store m[row]
        "mov    r2, r11\n"
        "ldr    r6, =0x00ff00ff\n"
        "lsrs   r7, r2, #8\n"
        "ands   r2, r6\n"
        "ands   r7, r6\n"
        "adds   r2, r2, r7\n"
        "lsrs   r7, r2, #16\n"
        "uxth   r2, r2\n"
        "adds   r2, r2, r7\n"
        "ldr    r3, [sp, #0]\n"
        "stmia  r3!, {r2}\n"
        "str    r3, [sp, #0]\n"
        "ldr    r2, [sp, #12]\n"
        "adds   r1, r1, r2\n"          // the next row
        "ldr    r2, [sp, #4]\n"
        "cmp    r3, r2\n"
        "beq    9f\n"
        "b      1b\n"                   // (conditional branches reach only 256 bytes)
        "9:\n"
        "add    sp, #16\n"
        "pop    {r4, r5, r6, r7}\n"
        "mov    r8, r4\n"
        "mov    r9, r5\n"
        "mov    r10, r6\n"
        "mov    r11, r7\n"
        "pop    {r4, r5, r6, r7, pc}\n"
        ".ltorg\n"
        );
}

// ---------------------------------------------------------------------------
// Thresholds of an XNOR layer

// The output word of n (1..32) neurons: bit r set iff (int32_t)m[r] <= t[r], from the last
// neuron down so that ADCS shifts each bit into place. The signed comparison is an
// unsigned one of both values with the sign bit flipped (CMP sets carry = t' >= m'): 10.5
// cycles a neuron, two per loop turn, instead of 15 for the compiled C loop.
//   r0 m pointer (from the end down), r1 t pointer, r2 word, r3 0x80000000, r4-r7 values,
//   r12 m (the stop).
static NN_HOT __attribute__((naked, noinline)) uint32_t threshold_word(
    const uint32_t *m NN_UNUSED, const int32_t *t NN_UNUSED, uint32_t n NN_UNUSED) {
    __asm__ volatile (
        ".syntax unified\n"
        "push   {r4, r5, r6, r7, lr}\n"
        "mov    r12, r0\n"
        "lsls   r2, r2, #2\n"
        "adds   r0, r0, r2\n"
        "adds   r1, r1, r2\n"
        "movs   r3, #1\n"
        "lsls   r3, r3, #31\n"
        "lsrs   r2, r2, #3\n"          // carry = n odd
        "movs   r2, #0\n"              // (MOVS of an immediate keeps the carry)
        "bcc    1f\n"
        "subs   r0, #4\n"              // the last neuron of an odd n
        "subs   r1, #4\n"
        "ldr    r4, [r0]\n"
        "ldr    r6, [r1]\n"
        "eors   r4, r3\n"
        "eors   r6, r3\n"
        "cmp    r6, r4\n"
        "adcs   r2, r2\n"
        "1:\n"
        "cmp    r0, r12\n"
        "beq    9f\n"
        "2:\n"                          // ---- two neurons per turn
        "subs   r0, #8\n"                // 2
        "subs   r1, #8\n"
        "ldr    r5, [r0, #4]\n"          // 4
        "ldr    r7, [r1, #4]\n"
        "eors   r5, r3\n"                // 4
        "eors   r7, r3\n"
        "cmp    r7, r5\n"
        "adcs   r2, r2\n"
        "ldr    r4, [r0]\n"              // 4
        "ldr    r6, [r1]\n"
        "eors   r4, r3\n"                // 4
        "eors   r6, r3\n"
        "cmp    r6, r4\n"
        "adcs   r2, r2\n"
        "cmp    r0, r12\n"
        "bne    2b\n"                    // 3   = 21 cycles / 2 neurons
        "9:\n"
        "movs   r0, r2\n"
        "pop    {r4, r5, r6, r7, pc}\n"
        );
}

#endif // PICONN_ARCH_ARMV6M_H
