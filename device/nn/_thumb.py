# nn._thumb: the Thumb assembly of the viper tier (@micropython.asm_thumb), for ports
# with MicroPython's Thumb inline assembler (rp2).
#
# popxor_rows(x, w, out, nw | rows << 8): out[r] = popcount(x ^ W[r]) for each weight
# row r; about 26 cycles a word on the RP2040 against about 85 in viper. nn._viper's
# xnor kernels call it in blocks of rows where it exists (popxor_rows is not None).
#
# The assembly is kept as source and compiled at import (exec), so that this module
# freezes for every port (mpy-cross for x64 has no Thumb assembler: there compiling it
# is a SyntaxError at import and popxor_rows is None), and the machine code lands in
# RAM, out of reach of the weights streamed through the flash cache.
_SOURCE = """import micropython
@micropython.asm_thumb
def popxor_rows(r0, r1, r2, r3):
    # out[r] = popcount(x ^ W[r]) for each row r: r0 x, r1 W (rows of nw words),
    # r2 out (u32 per row), r3 = nw | rows << 8, 1 <= nw <= 31, rows >= 1.
    mov(r4, r8)
    mov(r5, r9)
    mov(r6, r10)
    mov(r7, r11)
    push({r4, r5, r6, r7})
    mov(r4, 0x55)
    lsl(r5, r4, 8)
    orr(r4, r5)
    lsl(r5, r4, 16)
    orr(r4, r5)
    mov(r8, r4)
    mov(r4, 0x33)
    lsl(r5, r4, 8)
    orr(r4, r5)
    lsl(r5, r4, 16)
    orr(r4, r5)
    mov(r9, r4)
    mov(r4, 0x0F)
    lsl(r5, r4, 8)
    orr(r4, r5)
    lsl(r5, r4, 16)
    orr(r4, r5)
    mov(r10, r4)
    lsr(r4, r3, 8)
    mov(r11, r4)
    mov(r4, 0xFF)
    and_(r3, r4)
    mov(r12, r3)
    label(ROW)
    mov(r3, 0)
    mov(r7, r12)
    label(WORD)
    ldr(r4, [r0, 0])
    ldr(r5, [r1, 0])
    eor(r4, r5)
    add(r0, 4)
    add(r1, 4)
    lsr(r5, r4, 1)
    mov(r6, r8)
    and_(r5, r6)
    sub(r4, r4, r5)
    lsr(r5, r4, 2)
    mov(r6, r9)
    and_(r5, r6)
    and_(r4, r6)
    add(r4, r4, r5)
    lsr(r5, r4, 4)
    add(r4, r4, r5)
    mov(r6, r10)
    and_(r4, r6)
    add(r3, r3, r4)
    sub(r7, 1)
    bne(WORD)
    lsr(r5, r3, 8)
    mov(r6, 0xFF)
    lsl(r4, r6, 16)
    orr(r6, r4)
    and_(r3, r6)
    and_(r5, r6)
    add(r3, r3, r5)
    lsr(r5, r3, 16)
    lsl(r3, r3, 16)
    lsr(r3, r3, 16)
    add(r3, r3, r5)
    str(r3, [r2, 0])
    add(r2, 4)
    mov(r5, r12)
    lsl(r5, r5, 2)
    sub(r0, r0, r5)
    mov(r4, r11)
    sub(r4, 1)
    mov(r11, r4)
    bne(ROW)
    pop({r4, r5, r6, r7})
    mov(r8, r4)
    mov(r9, r5)
    mov(r10, r6)
    mov(r11, r7)
    mov(r0, 0)
"""

_ns = {}  # type: dict
try:
    exec(_SOURCE, _ns)
except (SyntaxError, NameError):  # no Thumb assembler here (or no compiler: no exec)
    _ns["popxor_rows"] = None
popxor_rows = _ns["popxor_rows"]
