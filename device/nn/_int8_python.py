# nn._int8_python: the plain-Python tier of every version 2 operator (docs/FORMAT.md
# "Version 2"), on any MicroPython port (webassembly too). Bit for bit the arithmetic of
# TensorFlow Lite Micro's reference kernels (host/piconn/int8.py), as the viper and C
# tiers compute it.
#
# Each kernel takes one tuple of arguments that nn.graph builds at load (its layout is
# the kernel's first line): tensors as (buffer, byte offset), the buffer the model's
# bytes or the arena, both read as unsigned bytes, so every int8 is sign-extended as it
# is read (v ^ 128) - 128. Convolutions compute TFLite Micro's sum, bias + sum of
# w * (x - input_zero) over the taps inside the image, with the bias tensor itself; the
# channel table gives each channel's multiplier and shift.
#
# The int8 operators allocate nothing on any port: the requantization and softmax run on
# nn._int8_fixed's small-int functions (32-bit ports hold ints within +-2^30 unboxed;
# the multipliers and Q0.31 values are read as 16-bit halves). The one exception is a
# convolution accumulator past +-2^30 (its bound, 255 x sum |w| + |bias|, allowed up to
# 2^31), which is a heap int on a 32-bit port. The float edges (QUANTIZE of a float32
# input, DEQUANTIZE) box floats or long ints. Cost: bytecode, thousands of cycles per
# multiply-add on a Cortex-M0+.
from nn import _int8_fixed as X
from nn._graph_prepare import _round


def _i32(m, o):
    # the little-endian i32 at byte o of m
    return m[o] | (m[o + 1] << 8) | (m[o + 2] << 16) | (((m[o + 3] ^ 0x80) - 0x80) << 24)


def _clamp(v, lo, hi):
    return lo if v < lo else hi if v > hi else v


def _wrap(v):
    # int32 wrap-around, without arithmetic past +-2^30 where there is none to do
    return v if -0x3FFFFFFF <= v <= 0x3FFFFFFF else X.wrap32(v)


def _channel(acc, tb, t):
    # acc requantized by the channel record at t (folded bias, multiplier, shift): the
    # multiplier, in [2^30, 2^31), read as its 16-bit halves
    return X.requantize(acc, tb[t + 6] | (tb[t + 7] << 8), tb[t + 4] | (tb[t + 5] << 8),
                        _i32(tb, t + 8))


def conv_2d(a):
    """CONV_2D (and DEPTHWISE_CONV_2D when depthwise): NHWC, weights [c_out, kh, kw,
    c_in] (depthwise [1, kh, kw, c_out], output channel c reads input c // dm)."""
    (xb, xo, n, h, w, cin, wb, wo, kh, kw, bb, bo, tb, to, yb, yo, oh, ow, cout, sh, sw,
     pt, pl, zi, zo, lo, hi, dm, depthwise) = a
    cx = 128 + zi  # x - zi from the unsigned byte v: (v ^ 128) - cx
    y = yo
    for b in range(n):
        for oy in range(oh):
            iy0 = oy * sh - pt
            for ox in range(ow):
                ix0 = ox * sw - pl
                for oc in range(cout):
                    acc = _i32(bb, bo + 4 * oc) if bb is not None else 0
                    for ky in range(kh):
                        iy = iy0 + ky
                        if iy < 0 or iy >= h:
                            continue
                        for kx in range(kw):
                            ix = ix0 + kx
                            if ix < 0 or ix >= w:
                                continue
                            xp = xo + ((b * h + iy) * w + ix) * cin
                            if depthwise:
                                acc += (((wb[wo + (ky * kw + kx) * cout + oc] ^ 128) - 128)
                                        * ((xb[xp + oc // dm] ^ 128) - cx))
                            else:
                                wp = wo + ((oc * kh + ky) * kw + kx) * cin
                                for ic in range(cin):
                                    acc += ((wb[wp + ic] ^ 128) - 128) * ((xb[xp + ic] ^ 128) - cx)
                    yb[y] = _clamp(_channel(acc, tb, to + 12 * oc) + zo, lo, hi) & 0xFF
                    y += 1


def fully_connected(a):
    """FULLY_CONNECTED: x as [batches, depth], weights [c_out, depth]."""
    (xb, xo, batches, depth, wb, wo, bb, bo, tb, to, yb, yo, cout, zi, zo, lo, hi) = a
    cx = 128 + zi
    y = yo
    for b in range(batches):
        xp = xo + b * depth
        for oc in range(cout):
            acc = _i32(bb, bo + 4 * oc) if bb is not None else 0
            wp = wo + oc * depth
            for d in range(depth):
                acc += ((wb[wp + d] ^ 128) - 128) * ((xb[xp + d] ^ 128) - cx)
            yb[y] = _clamp(_channel(acc, tb, to + 12 * oc) + zo, lo, hi) & 0xFF
            y += 1


def pool(a):
    """AVERAGE_POOL_2D (rounded half away from zero) or MAX_POOL_2D over the taps
    inside the image, then the activation clamp."""
    (xb, xo, n, h, w, c, yb, yo, oh, ow, fh, fw, sh, sw, pt, pl, lo, hi, average) = a
    y = yo
    for b in range(n):
        for oy in range(oh):
            iy0 = oy * sh - pt
            for ox in range(ow):
                ix0 = ox * sw - pl
                for ch in range(c):
                    acc = 0
                    count = 0
                    top = -129
                    for ky in range(fh):
                        iy = iy0 + ky
                        if iy < 0 or iy >= h:
                            continue
                        for kx in range(fw):
                            ix = ix0 + kx
                            if ix < 0 or ix >= w:
                                continue
                            v = (xb[xo + ((b * h + iy) * w + ix) * c + ch] ^ 128) - 128
                            acc += v
                            count += 1
                            if v > top:
                                top = v
                    if average:
                        half = count >> 1
                        top = (acc + half) // count if acc > 0 else -((half - acc) // count)
                    yb[y] = _clamp(top, lo, hi) & 0xFF
                    y += 1


def add(a):
    """ADD with rescaling, numpy broadcasting through per-dimension strides (0 where
    an input has 1 element along a dimension the output has more)."""
    (ab, ao, bb, bo, yb, yo, dims, astr, bstr, off1, off2, ls, _, s1, _, s2, _, so, zo,
     lo, hi, m1h, m1l, m2h, m2l, moh, mol) = a
    d0, d1, d2, d3 = dims
    y = yo
    for i0 in range(d0):
        for i1 in range(d1):
            for i2 in range(d2):
                pa = ao + i0 * astr[0] + i1 * astr[1] + i2 * astr[2]
                pb = bo + i0 * bstr[0] + i1 * bstr[1] + i2 * bstr[2]
                for _ in range(d3):
                    # |va|, |vb| <= 255 * 2^20 * 2^-1 (each input scale over twice the
                    # larger): their sum never wraps int32
                    va = X.requantize((((ab[pa] ^ 128) - 128) + off1) << ls, m1h, m1l, s1)
                    vb = X.requantize((((bb[pb] ^ 128) - 128) + off2) << ls, m2h, m2l, s2)
                    v = X.requantize(va + vb, moh, mol, so) + zo
                    yb[y] = _clamp(v, lo, hi) & 0xFF
                    y += 1
                    pa += astr[3]
                    pb += bstr[3]


def softmax(a):
    """SOFTMAX int8 over the last dimension with the exp table (entry d: exp of the
    rescaled difference -d, 0 below diff_min)."""
    (xb, xo, yb, yo, rows, depth, tb, to) = a
    for r in range(rows):
        xp = xo + r * depth
        top = -128
        for j in range(depth):
            v = (xb[xp + j] ^ 128) - 128
            if v > top:
                top = v
        # the entries are in [0, 2^31): read as halves; each divided by 2^12 (rounded) and
        # summed (at most 511 x 2^19: no int32 wrap)
        total = 0
        for j in range(depth):
            t = to + 4 * (top - ((xb[xp + j] ^ 128) - 128))
            total += ((tb[t + 2] | (tb[t + 3] << 8)) << 4) + (
                ((tb[t] | (tb[t + 1] << 8)) + 2048) >> 12)  # rdbpot(entry, 12)
        headroom = X.headroom_plus_one(total)
        scale = X.reciprocal_small(total, headroom)  # the reciprocal - 2^30
        sh = (scale >> 16) + 0x4000
        sl = scale & 0xFFFF
        exponent = X.SOFTMAX_ACCUMULATION_INTEGER_BITS - headroom + 23  # bits over 1.0 + 23
        yp = yo + r * depth
        for j in range(depth):
            t = to + 4 * (top - ((xb[xp + j] ^ 128) - 128))
            v = X.mul_round(tb[t + 2] | (tb[t + 3] << 8), tb[t] | (tb[t + 1] << 8), sh, sl,
                            False, exponent)
            yb[yp + j] = _clamp(v - 128, -128, 127) & 0xFF


def pad(a):
    """PAD with the output zero point; shapes as four dims (leading ones)."""
    (xb, xo, yb, yo, xd, yd, before, value) = a
    v = value & 0xFF
    y = yo
    for i0 in range(yd[0]):
        j0 = i0 - before[0]
        for i1 in range(yd[1]):
            j1 = i1 - before[1]
            for i2 in range(yd[2]):
                j2 = i2 - before[2]
                inside = (0 <= j0 < xd[0]) and (0 <= j1 < xd[1]) and (0 <= j2 < xd[2])
                xp = xo + ((j0 * xd[1] + j1) * xd[2] + j2) * xd[3] - before[3]
                for i3 in range(yd[3]):
                    if inside and before[3] <= i3 < before[3] + xd[3]:
                        yb[y] = xb[xp + i3]
                    else:
                        yb[y] = v
                    y += 1


def mean(a):
    """MEAN over height and width: [n, c] (the same bytes with keep_dims)."""
    (xb, xo, n, h, w, c, yb, yo, izc, _, shift, zo, mh, ml) = a
    y = yo
    for b in range(n):
        for ch in range(c):
            total = -izc
            p = xo + b * h * w * c + ch
            for _ in range(h * w):
                total += (xb[p] ^ 128) - 128
                p += c
            v = X.requantize(_wrap(total), mh, ml, shift) + zo
            yb[y] = _clamp(v, -128, 127) & 0xFF
            y += 1


def lut8(a):
    """LOGISTIC, TANH and int8 QUANTIZE: the table's entry x + 128."""
    (xb, xo, yb, yo, size, tb, to) = a
    t = to + 128
    for i in range(size):
        yb[yo + i] = tb[t + ((xb[xo + i] ^ 128) - 128)]


def dequantize(a):
    """DEQUANTIZE: the table's f32 (4 bytes) for x + 128."""
    (xb, xo, yb, yo, size, tb, to) = a
    for i in range(size):
        t = to + 4 * ((xb[xo + i] ^ 128))
        y = yo + 4 * i
        yb[y] = tb[t]
        yb[y + 1] = tb[t + 1]
        yb[y + 2] = tb[t + 2]
        yb[y + 3] = tb[t + 3]


def quantize_f32(a):
    """QUANTIZE float32 -> int8: round(x / scale) (float32 division, halves away from
    zero) + zero point, saturated; exact integer arithmetic on the float32 bits."""
    (xb, xo, yb, yo, size, scale_bits, zo) = a
    ms = (scale_bits & 0x7FFFFF) | (0x800000 if scale_bits >> 23 else 0)
    es = (scale_bits >> 23 or 1) - 150
    for i in range(size):
        p = xo + 4 * i
        bits = xb[p] | (xb[p + 1] << 8) | (xb[p + 2] << 16) | (xb[p + 3] << 24)
        yb[yo + i] = _clamp(quantize_bits(bits, ms, es) + zo, -128, 127) & 0xFF


def quantize_bits(bits, ms, es):
    """round(x / s) of the finite f32 x (its bits) and s = ms * 2^es as TFLite Micro
    computes it (float32 quotient, std::round), saturated to int32."""
    e = (bits >> 23) & 0xFF
    m = bits & 0x7FFFFF
    if e:
        m |= 0x800000
    if m == 0:
        return 0
    t, q = _round(m, ms, (e or 1) - 150 - es, 24, -126)
    if q + X.bit_length(t) > 128:  # the quotient overflows to infinity: saturated
        r = X.INT32_MAX + 1
    elif q >= 0:
        r = t << q
    else:
        r = t >> -q
        if (t - (r << -q)) << 1 >= 1 << -q:
            r += 1
    if bits >> 31:
        return -r if r <= X.INT32_MAX + 1 else X.INT32_MIN
    return r if r <= X.INT32_MAX else X.INT32_MAX


def nothing(a):
    """RESHAPE: the output shares its input's bytes."""
