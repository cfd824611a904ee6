# nn._int8_viper: the viper tier of the hot version 2 operators (CONV_2D,
# DEPTHWISE_CONV_2D, FULLY_CONNECTED, the pools, ADD) and the weight sums of the load
# check: @micropython.viper machine code, bit for bit nn._int8_python's results.
#
# Importing it is a SyntaxError on ports without the native emitter: nn.graph imports it
# only where the 'viper' tier exists (nn._tiers). The kernels take nn._int8_python's
# argument tuples. Every value stays an int32 without 64-bit arithmetic (viper has
# machine words: 32 bits on the RP2040, 64 on the unix port of a PC): the doubling high
# multiply of the requantization is done on 15-bit limbs, whose partial sums stay below
# 2^31 (_requantize), and int32 wrap-around is written out where it matters. Tensors are
# read a byte at a time (ptr8), so the model may have any alignment.
import micropython
from array import array

_TYPING = False  # True for type checkers only (mypy --always-true=_TYPING)
if _TYPING:
    from nn._viper_types import ptr8, ptr32

_acc = array("i", bytes(4 * 512))  # accumulators of one output pixel / row; ADD's tables


def reserve(n):
    """Make the scratch hold n int32 (at load, never during inference)."""
    global _acc
    if len(_acc) < n:
        _acc = array("i", bytes(4 * n))


@micropython.viper
def _requantize(acc, at: int, n: int, per_channel: int, tb, to: int, m: int, s: int):
    # acc[at + c] = MultiplyByQuantizedMultiplier(acc[at + c], m, s) for c < n, with m and
    # s the channel table's if per_channel (tb, to: records of bias, multiplier, shift)
    pa = ptr32(acc)
    pt = ptr8(tb)
    one = 1
    sgn = one << 31
    m32 = (sgn << 1) - 1  # all ones in the low 32 bits (a no-op mask on 32-bit ports)
    c = 0
    while c < n:
        if per_channel:
            p = to + 12 * c + 4
            m = int(pt[p]) | (int(pt[p + 1]) << 8) | (int(pt[p + 2]) << 16) | (int(pt[p + 3]) << 24)
            m = ((m & m32) ^ sgn) - sgn
            s = int(pt[p + 4]) | (int(pt[p + 5]) << 8) | (int(pt[p + 6]) << 16) | (int(pt[p + 7]) << 24)
            s = ((s & m32) ^ sgn) - sgn
        x = ((pa[at + c] & m32) ^ sgn) - sgn
        if s > 0:
            x = (((x << s) & m32) ^ sgn) - sgn
        # srdhm(x, m): (|x| * m + nudge) >> 31 on 15-bit limbs, the sign put back
        neg = x < 0
        if neg:
            x = 0 - x  # -2^31 stays 2^31 in the masks below
        a0 = x & 0x7FFF
        a1 = (x >> 15) & 0x7FFF
        a2 = (x >> 30) & 3
        b0 = m & 0x7FFF
        b1 = (m >> 15) & 0x7FFF
        b2 = (m >> 30) & 1
        k = 0x7FFF if neg else 0  # the nudge: 2^30 - 1 below zero, 2^30 above
        c0 = a0 * b0 + k
        c1 = a1 * b0 + a0 * b1 + k + (c0 >> 15)
        c2 = a2 * b0 + a1 * b1 + a0 * b2 + (0 if neg else 1) + (c1 >> 15)
        c3 = a2 * b1 + a1 * b2 + (c2 >> 15)
        c4 = a2 * b2 + (c3 >> 15)
        v = ((c2 & 0x7FFF) >> 1) + ((c3 & 0x7FFF) << 14) + (c4 << 29)
        if neg:
            v = 0 - v
        if s < 0:  # rounding divide by 2^-s, halves away from zero
            e = 0 - s
            mask = (one << e) - 1
            threshold = (mask >> 1) + (1 if v < 0 else 0)
            r = v & mask
            v = v >> e
            if r > threshold:
                v += 1
        pa[at + c] = v
        c += 1


@micropython.viper
def _store(acc, at: int, n: int, zo: int, lo: int, hi: int, yb, yo: int):
    # y[yo + c] = clamp(acc[at + c] + zo, lo, hi) as int8 bytes
    pa = ptr32(acc)
    py = ptr8(yb)
    one = 1
    sgn = one << 31
    m32 = (sgn << 1) - 1
    c = 0
    while c < n:
        v = (((pa[at + c] & m32) ^ sgn) - sgn) + zo
        if v < lo:
            v = lo
        elif v > hi:
            v = hi
        py[yo + c] = v
        c += 1


@micropython.viper
def _bias(acc, n: int, has_bias: int, bb, bo: int):
    # acc[c] = the bias tensor's c (0 without one)
    pa = ptr32(acc)
    if not has_bias:
        c = 0
        while c < n:
            pa[c] = 0
            c += 1
        return
    pb = ptr8(bb)
    c = 0
    while c < n:
        p = bo + 4 * c
        pa[c] = int(pb[p]) | (int(pb[p + 1]) << 8) | (int(pb[p + 2]) << 16) | (int(pb[p + 3]) << 24)
        c += 1


@micropython.viper
def _conv_image(oc: int, p: int, v: int, acc, xb, xo: int, h: int, w: int, cin: int, wb,
                wo: int, kh: int, kw: int, has_bias: int, bb, bo: int, tb, to: int, yb,
                yo: int, oh: int, ow: int, cout: int, sh: int, sw: int, pt: int, pl: int,
                zi: int, zo: int, lo: int, hi: int):
    # One image (h x w x cin at xo) of CONV_2D into y at yo: per output pixel acc[oc] =
    # bias + the sum over the taps inside the image and ic < cin of w[wo + oc * step +
    # tap * cin + ic] * (x - zi) (the weights of output channel oc `step` bytes apart),
    # then requantized and stored. The loops over pixels and taps are machine code: from
    # Python, a call per tap did only cout products with one input channel. The inner
    # loop's variables come first: the native emitter keeps the first three in registers
    pa = ptr32(acc)
    px = ptr8(xb)
    pw = ptr8(wb)
    pb = ptr8(bb)
    step = kh * kw * cin
    y = yo
    oy = 0
    while oy < oh:
        iy0 = oy * sh - pt
        ox = 0
        while ox < ow:
            ix0 = ox * sw - pl
            oc = 0
            while oc < cout:
                if has_bias:
                    p = bo + 4 * oc
                    pa[oc] = int(pb[p]) | (int(pb[p + 1]) << 8) | (int(pb[p + 2]) << 16) | (int(pb[p + 3]) << 24)
                else:
                    pa[oc] = 0
                oc += 1
            ky = 0
            while ky < kh:
                iy = iy0 + ky
                if 0 <= iy and iy < h:
                    kx = 0
                    while kx < kw:
                        ix = ix0 + kx
                        if 0 <= ix and ix < w:
                            xp = xo + (iy * w + ix) * cin
                            wp = wo + (ky * kw + kx) * cin
                            ic = 0
                            while ic < cin:
                                v = ((int(px[xp + ic]) ^ 0x80) - 0x80) - zi
                                if v:
                                    p = wp + ic
                                    oc = 0
                                    while oc < cout:
                                        pa[oc] += ((int(pw[p]) ^ 0x80) - 0x80) * v
                                        p += step
                                        oc += 1
                                ic += 1
                        kx += 1
                ky += 1
            _requantize(acc, 0, cout, 1, tb, to, 0, 0)
            _store(acc, 0, cout, zo, lo, hi, yb, y)
            y += cout
            ox += 1
        oy += 1


@micropython.viper
def _depthwise_tap(oc: int, v: int, j: int, acc, xb, xp: int, wb, wp: int, cout: int,
                   dm: int, zi: int):
    # acc[oc] += w[wp + oc] * (x[xp + oc // dm] - zi): one tap of a depthwise convolution
    pa = ptr32(acc)
    px = ptr8(xb)
    pw = ptr8(wb)
    oc = 0
    ic = 0
    while oc < cout:
        v = ((int(px[xp + ic]) ^ 0x80) - 0x80) - zi
        j = 0
        while j < dm:
            if v:
                pa[oc] += ((int(pw[wp + oc]) ^ 0x80) - 0x80) * v
            oc += 1
            j += 1
        ic += 1


def conv_2d(a):
    """CONV_2D and DEPTHWISE_CONV_2D (nn._int8_python.conv_2d's arguments)."""
    (xb, xo, n, h, w, cin, wb, wo, kh, kw, bb, bo, tb, to, yb, yo, oh, ow, cout, sh, sw,
     pt, pl, zi, zo, lo, hi, dm, depthwise) = a
    acc = _acc
    has_bias = 0 if bb is None else 1
    if bb is None:
        bb = acc
    y = yo
    for b in range(n):
        xi = xo + b * h * w * cin  # image b
        if not depthwise:
            _conv_image(0, 0, 0, acc, xb, xi, h, w, cin, wb, wo, kh, kw, has_bias, bb, bo, tb,
                        to, yb, y, oh, ow, cout, sh, sw, pt, pl, zi, zo, lo, hi)
            y += oh * ow * cout
            continue
        for oy in range(oh):
            iy0 = oy * sh - pt
            for ox in range(ow):
                ix0 = ox * sw - pl
                _bias(acc, cout, has_bias, bb, bo)
                for ky in range(kh):
                    iy = iy0 + ky
                    if iy < 0 or iy >= h:
                        continue
                    for kx in range(kw):
                        ix = ix0 + kx
                        if ix < 0 or ix >= w:
                            continue
                        _depthwise_tap(0, 0, 0, acc, xb, xi + (iy * w + ix) * cin, wb,
                                       wo + (ky * kw + kx) * cout, cout, dm, zi)
                _requantize(acc, 0, cout, 1, tb, to, 0, 0)
                _store(acc, 0, cout, zo, lo, hi, yb, y)
                y += cout


@micropython.viper
def _dot_rows(d: int, s: int, p: int, acc, xb, xp: int, wb, wo: int, depth: int, cout: int,
              zi: int):
    # acc[oc] += sum over d < depth of w[wo + oc * depth + d] * (x[xp + d] - zi)
    pa = ptr32(acc)
    px = ptr8(xb)
    pw = ptr8(wb)
    oc = 0
    while oc < cout:
        p = wo + oc * depth
        s = 0
        d = 0
        while d < depth:
            s += ((int(pw[p + d]) ^ 0x80) - 0x80) * (((int(px[xp + d]) ^ 0x80) - 0x80) - zi)
            d += 1
        pa[oc] += s
        oc += 1


def fully_connected(a):
    """FULLY_CONNECTED (nn._int8_python.fully_connected's arguments)."""
    (xb, xo, batches, depth, wb, wo, bb, bo, tb, to, yb, yo, cout, zi, zo, lo, hi) = a
    acc = _acc
    has_bias = 0 if bb is None else 1
    if bb is None:
        bb = acc
    for b in range(batches):
        _bias(acc, cout, has_bias, bb, bo)
        _dot_rows(0, 0, 0, acc, xb, xo + b * depth, wb, wo, depth, cout, zi)
        _requantize(acc, 0, cout, 1, tb, to, 0, 0)
        _store(acc, 0, cout, zo, lo, hi, yb, yo + b * cout)


@micropython.viper
def _pool(xb, xo: int, h: int, w: int, c: int, yb, yo: int, oh: int, ow: int, fh: int,
          fw: int, sh: int, sw: int, pt: int, pl: int, lo: int, hi: int, average: int):
    # one image of AVERAGE_POOL_2D (average != 0) or MAX_POOL_2D
    px = ptr8(xb)
    py = ptr8(yb)
    y = yo
    oy = 0
    while oy < oh:
        ox = 0
        while ox < ow:
            ch = 0
            while ch < c:
                acc = 0
                count = 0
                top = -129
                ky = 0
                while ky < fh:
                    iy = oy * sh - pt + ky
                    if 0 <= iy and iy < h:
                        kx = 0
                        while kx < fw:
                            ix = ox * sw - pl + kx
                            if 0 <= ix and ix < w:
                                v = (int(px[xo + (iy * w + ix) * c + ch]) ^ 0x80) - 0x80
                                acc += v
                                count += 1
                                if v > top:
                                    top = v
                            kx += 1
                    ky += 1
                if average:
                    half = count >> 1
                    if acc > 0:
                        top = (acc + half) // count
                    else:
                        top = 0 - (half - acc) // count
                if top < lo:
                    top = lo
                elif top > hi:
                    top = hi
                py[y] = top
                y += 1
                ch += 1
            ox += 1
        oy += 1


def pool(a):
    """AVERAGE_POOL_2D and MAX_POOL_2D (nn._int8_python.pool's arguments)."""
    (xb, xo, n, h, w, c, yb, yo, oh, ow, fh, fw, sh, sw, pt, pl, lo, hi, average) = a
    for b in range(n):
        _pool(xb, xo + b * h * w * c, h, w, c, yb, yo + b * oh * ow * c, oh, ow, fh, fw, sh,
              sw, pt, pl, lo, hi, 1 if average else 0)


@micropython.viper
def _shifted(acc, at: int, offset: int, left_shift: int):
    # acc[at + j] = (j - 128 + offset) << left_shift for the 256 int8 values
    pa = ptr32(acc)
    j = 0
    while j < 256:
        pa[at + j] = (j - 128 + offset) << left_shift
        j += 1


@micropython.viper
def _add_row(acc, ab, pa: int, sa: int, bb, pb: int, sb: int, n: int):
    # acc[512 + i] = table1[x1] + table2[x2] (int32 wrap) along one row of n elements
    pt = ptr32(acc)
    px = ptr8(ab)
    py = ptr8(bb)
    one = 1
    sgn = one << 31
    m32 = (sgn << 1) - 1
    i = 0
    while i < n:
        v = (((pt[int(px[pa]) ^ 0x80] & m32) ^ sgn) - sgn) + \
            (((pt[256 + (int(py[pb]) ^ 0x80)] & m32) ^ sgn) - sgn)
        pt[512 + i] = ((v & m32) ^ sgn) - sgn
        pa += sa
        pb += sb
        i += 1


def add(a):
    """ADD (nn._int8_python.add's arguments): each input's 256 rescaled values as a
    table, then a row at a time the output requantization."""
    (ab, ao, bb, bo, yb, yo, dims, astr, bstr, off1, off2, ls, m1, s1, m2, s2, mo, so, zo,
     lo, hi, _, _, _, _, _, _) = a  # (the multipliers' halves: the python tier's)
    acc = _acc
    _shifted(acc, 0, off1, ls)
    _requantize(acc, 0, 256, 0, acc, 0, m1, s1)
    _shifted(acc, 256, off2, ls)
    _requantize(acc, 256, 256, 0, acc, 0, m2, s2)
    d0, d1, d2, d3 = dims
    y = yo
    for i0 in range(d0):
        for i1 in range(d1):
            for i2 in range(d2):
                _add_row(acc, ab, ao + i0 * astr[0] + i1 * astr[1] + i2 * astr[2], astr[3],
                         bb, bo + i0 * bstr[0] + i1 * bstr[1] + i2 * bstr[2], bstr[3], d3)
                _requantize(acc, 512, d3, 0, acc, 0, mo, so)
                _store(acc, 512, d3, zo, lo, hi, yb, y)
                y += d3


@micropython.viper
def _sums(buf, p: int, n: int, stride: int, out):
    # out[0] = sum of the n int8 at p, p + stride, ...; out[1] = the sum of their |w|
    # (both stop growing at 2^24: past the accumulator bound either way)
    pb = ptr8(buf)
    po = ptr32(out)
    s = 0
    a = 0
    j = 0
    while j < n:
        v = (int(pb[p]) ^ 0x80) - 0x80
        s += v
        if v < 0:
            a -= v
        else:
            a += v
        if a > 0x1000000:
            a = 0x1000000
            s = 0
        p += stride
        j += 1
    po[0] = s
    po[1] = a


weight_sums = _sums  # nn._graph_prepare.weight_sums (its arguments), in machine code


def nothing(a):
    """RESHAPE: the output shares its input's bytes."""
