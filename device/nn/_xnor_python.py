# nn._xnor_python: the plain-Python tier of the binary operators of format version 2
# (docs/FORMAT.md "Binary operators"): BINARIZE, XNOR_CONV_2D, BINARY_MAX_POOL_2D and
# BINARIZE_CONV_2D, on any MicroPython port. Bit for bit the results of the viper and C
# tiers.
#
# Each kernel takes one tuple of arguments that nn.graph builds at load (its layout is
# the kernel's first line): tensors as (buffer, byte offset), read as unsigned bytes. A
# bits tensor is a row of words(C) little-endian u32 words per pixel, so the kernels
# work a byte at a time: XOR and a 256-entry popcount table. Every value stays a small
# int, so the kernels allocate nothing (they run under micropython.heap_lock()).
# Cost: bytecode, some hundred cycles per byte on a Cortex-M0+.
from array import array

from micropython import const

from nn._python import POP8

MAX_FIELD_BYTES = const(4096)  # kh * kw * words(C_in) * 4 (FORMAT.md's limit)
MAX_FIELD_TAPS = const(1024)  # BINARIZE_CONV_2D: kh * kw * C_in (FORMAT.md's limit)

# One output pixel's receptive field: the taps' rows, -1 (bytes 0) outside the image
_field = bytearray(MAX_FIELD_BYTES)
# BINARIZE_CONV_2D: one output pixel's taps with x != zx, their index in a weight row
# and x - zx (the shared scratch of the viper tier too)
TAP_INDEX = array("H", bytes(2 * MAX_FIELD_TAPS))
TAP_VALUE = array("i", bytes(4 * MAX_FIELD_TAPS))


def _i32(m, o):
    # the little-endian i32 at byte o of m
    return m[o] | (m[o + 1] << 8) | (m[o + 2] << 16) | (((m[o + 3] ^ 0x80) - 0x80) << 24)


def _reaches(s, m, o):
    # s >= the little-endian i32 at byte o of m, for |s| < 2^30, in small ints only
    # (thresholds beyond +-2^30 decide by their sign)
    top = m[o + 3]
    if 0x40 <= top < 0x80:
        return False
    if 0x80 <= top < 0xC0:
        return True
    return s >= _i32(m, o)


def binarize(a):
    """BINARIZE: bit c of each row set iff bounds[c][0] <= x[c] <= bounds[c][1]."""
    xb, xo, yb, yo, rows, c, bb, bo = a
    nb = ((c + 31) >> 5) << 2  # bytes per output row
    for r in range(rows):
        x = xo + r * c
        for k in range(nb):
            v = 0
            j = k << 3
            bit = 1
            while bit < 256 and j < c:
                t = (xb[x + j] ^ 0x80) - 0x80
                if _i32(bb, bo + 8 * j) <= t <= _i32(bb, bo + 8 * j + 4):
                    v |= bit
                bit <<= 1
                j += 1
            yb[yo + k] = v
        yo += nb


def gather(xb, xo, h, w, rb, iy0, ix0, kh, kw, f):
    """Copy the receptive field at input (iy0, ix0) of batch image xo (rows of rb bytes
    per pixel) into f: kh * kw rows, bytes 0 (-1) for taps outside the image."""
    j = 0
    for ky in range(kh):
        iy = iy0 + ky
        for kx in range(kw):
            ix = ix0 + kx
            if 0 <= iy < h and 0 <= ix < w:
                p = xo + (iy * w + ix) * rb
                for i in range(rb):
                    f[j + i] = xb[p + i]
            else:
                for i in range(rb):
                    f[j + i] = 0
            j += rb


def xnor_conv_2d(a):
    """XNOR_CONV_2D: m = popcount(field XOR w[c]); bits (m <= thr[c]) or int32
    a[c] * (n - 2m) + b[c]."""
    (xb, xo, n, h, w, rb, wb, wo, kh, kw, cb, co, yb, yo, oh, ow, cout, sh, sw, pt, pl,
     n_bits, bits_out) = a
    f = _field
    pop = POP8
    fb = kh * kw * rb  # bytes of the receptive field, and of a weight row
    ob = ((cout + 31) >> 5) << 2  # bytes per output pixel of a bits output
    for b in range(n):
        x = xo + b * h * w * rb
        for oy in range(oh):
            for ox in range(ow):
                gather(xb, x, h, w, rb, oy * sh - pt, ox * sw - pl, kh, kw, f)
                if bits_out:
                    for k in range(ob):
                        yb[yo + k] = 0
                row = wo
                for c in range(cout):
                    m = 0
                    for i in range(fb):
                        m += pop[f[i] ^ wb[row + i]]
                    row += fb
                    if bits_out:
                        if m <= _i32(cb, co + 4 * c):
                            yb[yo + (c >> 3)] |= 1 << (c & 7)
                    else:
                        v = (_i32(cb, co + 4 * c) * (n_bits - 2 * m)
                             + _i32(cb, co + 4 * (cout + c)))
                        yb[yo + 4 * c] = v & 0xFF
                        yb[yo + 4 * c + 1] = (v >> 8) & 0xFF
                        yb[yo + 4 * c + 2] = (v >> 16) & 0xFF
                        yb[yo + 4 * c + 3] = (v >> 24) & 0xFF
                yo += ob if bits_out else 4 * cout


def binary_max_pool_2d(a):
    """BINARY_MAX_POOL_2D: the OR of the window's rows inside the image."""
    xb, xo, n, h, w, rb, yb, yo, oh, ow, fh, fw, sh, sw, pt, pl = a
    for b in range(n):
        x = xo + b * h * w * rb
        for oy in range(oh):
            iy0 = oy * sh - pt
            for ox in range(ow):
                ix0 = ox * sw - pl
                for i in range(rb):
                    yb[yo + i] = 0
                for ky in range(fh):
                    iy = iy0 + ky
                    if iy < 0 or iy >= h:
                        continue
                    for kx in range(fw):
                        ix = ix0 + kx
                        if ix < 0 or ix >= w:
                            continue
                        p = x + (iy * w + ix) * rb
                        for i in range(rb):
                            yb[yo + i] |= xb[p + i]
                yo += rb


def binarize_conv_2d(a):
    """BINARIZE_CONV_2D: bit c set iff sum((x - zx) * w[c]) >= thr[c] over the taps inside
    the image; per output pixel the taps with x != zx are listed once, then summed per
    channel."""
    (xb, xo, n, h, w, cin, wb, wo, kh, kw, tb, to, yb, yo, oh, ow, cout, sh, sw, pt, pl,
     zx) = a
    index, value = TAP_INDEX, TAP_VALUE
    fn = kh * kw * cin  # taps of the field, bytes of a weight row
    ob = ((cout + 31) >> 5) << 2  # bytes per output pixel
    for b in range(n):
        x = xo + b * h * w * cin
        for oy in range(oh):
            iy0 = oy * sh - pt
            for ox in range(ow):
                ix0 = ox * sw - pl
                nz = 0
                j = 0
                for ky in range(kh):
                    iy = iy0 + ky
                    for kx in range(kw):
                        ix = ix0 + kx
                        if 0 <= iy < h and 0 <= ix < w:
                            p = x + (iy * w + ix) * cin
                            for i in range(cin):
                                v = ((xb[p + i] ^ 0x80) - 0x80) - zx
                                if v:
                                    index[nz] = j + i
                                    value[nz] = v
                                    nz += 1
                        j += cin
                for k in range(ob):
                    yb[yo + k] = 0
                row = wo
                for c in range(cout):
                    s = 0
                    for i in range(nz):
                        s += value[i] * ((wb[row + index[i]] ^ 0x80) - 0x80)
                    if _reaches(s, tb, to + 4 * c):
                        yb[yo + (c >> 3)] |= 1 << (c & 7)
                    row += fn
                yo += ob
