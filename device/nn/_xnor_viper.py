# nn._xnor_viper: the viper tier of the binary operators of format version 2
# (docs/FORMAT.md "Binary operators"), bit for bit nn._xnor_python's results; the
# kernels take its argument tuples. BINARIZE_CONV_2D reads its int8 input and weights
# a byte at a time.
#
# Bits tensors are read a word at a time (ptr32), so nn.graph uses this tier only for
# a model at a word-aligned address (the arena always is). XNOR_CONV_2D gathers one
# output pixel's receptive field into a word buffer and counts all output channels
# against it: with nn._viper's Thumb assembler popcount of weight rows on the RP2040
# (rows of up to 31 words), else with the SWAR loop here (_rows). Importing it is a
# SyntaxError on ports without the native emitter: nn.graph imports it only where the
# 'viper' tier exists.
import micropython
from micropython import const

from nn import _viper as V
from nn._xnor_python import MAX_FIELD_BYTES, TAP_INDEX, TAP_VALUE

_TYPING = False  # True for type checkers only (mypy --always-true=_TYPING)
if _TYPING:
    from nn._viper_types import ptr8, ptr16, ptr32, uint

_field = bytearray(MAX_FIELD_BYTES)  # one output pixel's receptive field
_MODE_BITS = const(0)  # nn._viper's row modes: thresholds, fixed point
_MODE_FIXED = const(1)


@micropython.viper
def address(buf) -> int:
    """The address of a buffer's bytes (as an int, for the word kernels)."""
    return int(ptr8(buf))


@micropython.viper
def _binarize(x: int, y: int, rows: int, c: int, bounds: int):
    px = ptr8(x)
    py = ptr32(y)
    pb = ptr32(bounds)
    one = 1
    sgn = one << 31
    m32 = (sgn << 1) - 1  # int32 from a loaded word (64-bit ports sign-extend nothing)
    nw = (c + 31) >> 5
    r = 0
    while r < rows:
        j = 0
        k = 0
        while k < nw:
            end = j + 32
            if end > c:
                end = c
            v = 0
            b = 0
            while j < end:
                t = ((int(px[j]) ^ 0x80) - 0x80)
                lo = ((pb[2 * j] & m32) ^ sgn) - sgn
                hi = ((pb[2 * j + 1] & m32) ^ sgn) - sgn
                if lo <= t and t <= hi:
                    v |= one << b
                b += 1
                j += 1
            py[k] = v
            k += 1
        px = ptr8(int(px) + c)
        py = ptr32(int(py) + 4 * nw)
        r += 1


def binarize(a):
    """BINARIZE: bit c of each row set iff bounds[c][0] <= x[c] <= bounds[c][1]."""
    xb, xo, yb, yo, rows, c, bb, bo = a
    _binarize(address(xb) + xo, address(yb) + yo, rows, c, address(bb) + bo)


@micropython.viper
def _gather(x: int, h: int, w: int, rw: int, iy0: int, ix0: int, kh: int, kw: int, f):
    # the receptive field at (iy0, ix0): kh * kw rows of rw words, 0 (-1) outside
    pf = ptr32(f)
    j = 0
    ky = 0
    while ky < kh:
        iy = iy0 + ky
        kx = 0
        while kx < kw:
            ix = ix0 + kx
            if 0 <= iy and iy < h and 0 <= ix and ix < w:
                px = ptr32(x + ((iy * w + ix) * rw << 2))
                i = 0
                while i < rw:
                    pf[j + i] = px[i]
                    i += 1
            else:
                i = 0
                while i < rw:
                    pf[j + i] = 0
                    i += 1
            j += rw
            kx += 1
        ky += 1


@micropython.viper
def _rows(x, w: int, out: int, a: int, b: int, nw: int, n_out: int, n_in: int, mode: int):
    # m[c] = popcount(x ^ W[c]) over rows of nw words at w; mode _MODE_BITS: bit c of out
    # set iff m[c] <= a[c]; _MODE_FIXED: out[c] = a[c] * (n_in - 2 m[c]) + b[c]. SWAR
    # popcount of each word (machine words of 32 or 64 bits: every value below 2^32).
    px = ptr32(x)
    po = ptr32(out)
    pa = ptr32(a)
    pb = ptr32(b)
    m1 = 0x5555
    m1 |= m1 << 16
    m2 = 0x3333
    m2 |= m2 << 16
    m4 = 0x0F0F
    m4 |= m4 << 16
    one = 1
    sgn = one << 31
    m32 = (sgn << 1) - 1
    if mode == 0:
        c = 0
        while c < ((n_out + 31) >> 5):
            po[c] = 0
            c += 1
    row = w
    c = 0
    while c < n_out:
        pw = ptr32(row)
        m = 0
        k = 0
        while k < nw:
            v = uint(px[k] ^ pw[k])
            v = v - ((v >> 1) & m1)
            v = (v & m2) + ((v >> 2) & m2)
            v = (v + (v >> 4)) & m4
            v = v + (v >> 8)
            v = v + (v >> 16)
            m += int(v & 0x3F)
            k += 1
        if mode == 0:
            if m <= (((pa[c] & m32) ^ sgn) - sgn):
                po[c >> 5] |= one << (c & 31)
        else:
            po[c] = pa[c] * (n_in - 2 * m) + pb[c]
        row += nw << 2
        c += 1


def xnor_conv_2d(a):
    """XNOR_CONV_2D: m = popcount(field XOR w[c]); bits (m <= thr[c]) or int32
    a[c] * (n - 2m) + b[c]."""
    (xb, xo, n, h, w, rb, wb, wo, kh, kw, cb, co, yb, yo, oh, ow, cout, sh, sw, pt, pl,
     n_bits, bits_out) = a
    f = _field
    rw = rb >> 2
    nw = kh * kw * rw  # words of the receptive field and of a weight row
    x0 = address(xb) + xo
    wa = address(wb) + wo
    ca = address(cb) + co
    y = address(yb) + yo
    step = ((cout + 31) >> 5) << 2 if bits_out else 4 * cout
    thumb = V.THUMB and nw <= 31
    mode = _MODE_BITS if bits_out else _MODE_FIXED
    for b in range(n):
        x = x0 + b * h * w * rb
        for oy in range(oh):
            for ox in range(ow):
                _gather(x, h, w, rw, oy * sh - pt, ox * sw - pl, kh, kw, f)
                if thumb:
                    V._xnor_thumb(f, wa, ca, ca + 4 * cout, y, nw, cout, n_bits, mode, V._cnt)
                else:
                    _rows(f, wa, y, ca, ca + 4 * cout, nw, cout, n_bits, mode)
                y += step


@micropython.viper
def _pool(x: int, h: int, w: int, rw: int, y: int, iy0: int, ix0: int, fh: int, fw: int):
    # one output pixel: the OR of the window's rows inside the image
    py = ptr32(y)
    i = 0
    while i < rw:
        py[i] = 0
        i += 1
    ky = 0
    while ky < fh:
        iy = iy0 + ky
        if 0 <= iy and iy < h:
            kx = 0
            while kx < fw:
                ix = ix0 + kx
                if 0 <= ix and ix < w:
                    px = ptr32(x + ((iy * w + ix) * rw << 2))
                    i = 0
                    while i < rw:
                        py[i] = py[i] | px[i]
                        i += 1
                kx += 1
        ky += 1


def binary_max_pool_2d(a):
    """BINARY_MAX_POOL_2D: the OR of the window's rows inside the image."""
    xb, xo, n, h, w, rb, yb, yo, oh, ow, fh, fw, sh, sw, pt, pl = a
    rw = rb >> 2
    x0 = address(xb) + xo
    y = address(yb) + yo
    for b in range(n):
        x = x0 + b * h * w * rb
        for oy in range(oh):
            for ox in range(ow):
                _pool(x, h, w, rw, y, oy * sh - pt, ox * sw - pl, fh, fw)
                y += rb


@micropython.viper
def _bconv_pixel(x: int, h: int, w: int, cin: int, iy0: int, ix0: int, kh: int, kw: int,
                 wa: int, ta: int, y: int, cout: int, zx: int, index, value):
    # one output pixel of BINARIZE_CONV_2D: the taps with x != zx listed once (their
    # index in a weight row, x - zx as a word), then per channel the sum over that list.
    # Sums are taken modulo the machine word and read as int32 (|sum| < 2^25).
    pi = ptr16(index)
    pv = ptr32(value)
    px = ptr8(x)
    n = 0
    j = 0
    ky = 0
    while ky < kh:
        iy = iy0 + ky
        kx = 0
        while kx < kw:
            ix = ix0 + kx
            if 0 <= iy and iy < h and 0 <= ix and ix < w:
                p = (iy * w + ix) * cin
                i = 0
                while i < cin:
                    v = ((int(px[p + i]) ^ 0x80) - 0x80) - zx
                    if v != 0:
                        pi[n] = j + i
                        pv[n] = v
                        n += 1
                    i += 1
            j += cin
            kx += 1
        ky += 1
    pw = ptr8(wa)
    pt = ptr32(ta)
    py = ptr32(y)
    one = 1
    sgn = one << 31
    m32 = (sgn << 1) - 1
    field = kh * kw * cin
    k = 0
    while k < ((cout + 31) >> 5):
        py[k] = 0
        k += 1
    row = 0
    c = 0
    while c < cout:
        s = 0
        i = 0
        while i < n:
            s += pv[i] * ((int(pw[row + pi[i]]) ^ 0x80) - 0x80)
            i += 1
        if ((s & m32) ^ sgn) - sgn >= ((pt[c] & m32) ^ sgn) - sgn:
            py[c >> 5] |= one << (c & 31)
        row += field
        c += 1


def binarize_conv_2d(a):
    """BINARIZE_CONV_2D: bit c set iff sum((x - zx) * w[c]) >= thr[c] over the taps inside
    the image."""
    (xb, xo, n, h, w, cin, wb, wo, kh, kw, tb, to, yb, yo, oh, ow, cout, sh, sw, pt, pl,
     zx) = a
    x0 = address(xb) + xo
    wa = address(wb) + wo
    ta = address(tb) + to
    y = address(yb) + yo
    step = ((cout + 31) >> 5) << 2
    index, value = TAP_INDEX, TAP_VALUE
    for b in range(n):
        x = x0 + b * h * w * cin
        for oy in range(oh):
            for ox in range(ow):
                _bconv_pixel(x, h, w, cin, oy * sh - pt, ox * sw - pl, kh, kw, wa, ta, y, cout,
                             zx, index, value)
                y += step
