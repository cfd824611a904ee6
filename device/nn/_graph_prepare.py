# nn._graph_prepare: the numbers of a version 2 model that its quantization determines
# (docs/FORMAT.md "Precomputed on the host"), recomputed at load and compared with the
# stored params and tables; a file that differs anywhere is refused (ValueError), as the
# host reader refuses it. Also every operator's rules (dtypes, shapes, quantization):
# the checks of piconn.int8_ops.prepare, one function per kind.
#
# The host computes in IEEE double and float32; MicroPython's floats are float32 on the
# RP2040 and doubles elsewhere, so this module computes with integers instead: a
# positive value is a pair (m, e) meaning m * 2^e, and every double or float32 result is
# rounded to nearest even exactly as the FPU rounds it (_round). Load time only (long
# ints allocate); nothing here runs during inference.
import struct
from array import array

from micropython import const

from nn import _graph_format as F
from nn import _int8_fixed as X

_MAX_SHIFT = const(30)
_MAX_SOFTMAX_DEPTH = const(511)
_INT8_MIN = const(-128)
_INT8_MAX = const(127)
_F32_ONE_256 = const(0x3B800000)  # the f32 bits of 1/256
_F32_ONE_128 = const(0x3C000000)  # and of 1/128
_ADD_LEFT_SHIFT = const(20)
_TWO_PERCENT = (5764607523034235, -58)  # the double nearest 0.02
_DOUBLE = const(53)  # significand bits, and below the exponents of the smallest normals
_DOUBLE_EMIN = const(-1022)
_SINGLE = const(24)
_SINGLE_EMIN = const(-126)
_SINGLE_INF = const(0x7F800000)
_SUMS = array("i", bytes(8))  # a channel's weight sums (weight_sums' out)


# ------------------------------------------------------------------ exact arithmetic


def _f32(bits):
    """(m, e) of a positive finite f32 given by its bits."""
    exp = (bits >> 23) & 0xFF
    if exp == 0:
        return bits & 0x7FFFFF, -149
    return (bits & 0x7FFFFF) | 0x800000, exp - 150


def _div(n, d, s):
    # floor(n * 2^s / d), its remainder and the denominator they refer to
    if s >= 0:
        n <<= s
    else:
        d <<= -s
    t = n // d
    return t, n - t * d, d


def _round(n, d, e, p, emin):
    """n / d * 2^e (n, d > 0) rounded to nearest even with p significant bits (steps of
    2^(emin - p + 1) below 2^emin): (t, q) with the value t * 2^q."""
    q = X.bit_length(n) - X.bit_length(d) + e - p
    if q < emin - p + 1:
        q = emin - p + 1
    t, r, den = _div(n, d, e - q)
    if t >> p:
        q += 1
        t, r, den = _div(n, d, e - q)
    r += r
    if r > den or (r == den and t & 1):
        t += 1
        if t >> p:
            t >>= 1
            q += 1
    return t, q


def _ddiv(a, b):
    """a / b in double (a >= 0, b > 0)."""
    if a[0] == 0:
        return 0, 0
    return _round(a[0], b[0], a[1] - b[1], _DOUBLE, _DOUBLE_EMIN)


def _mul(a, b):
    """a * b, exact (a product of two floats fits a double: 48 bits)."""
    return a[0] * b[0], a[1] + b[1]


def _dsub_abs(a, b):
    """|a - b| in double."""
    e = min(a[1], b[1])
    d = (a[0] << (a[1] - e)) - (b[0] << (b[1] - e))
    if d < 0:
        d = -d
    if d == 0:
        return 0, 0
    return _round(d, 1, e, _DOUBLE, _DOUBLE_EMIN)


def _greater(a, b):
    """a > b for (m, e) values."""
    e = min(a[1], b[1])
    return a[0] << (a[1] - e) > b[0] << (b[1] - e)


def quantize_multiplier(v):
    """QuantizeMultiplier of v = (m, e): (multiplier in [2^30, 2^31), shift) or (0, 0)."""
    m, e = v
    if m == 0:
        return 0, 0
    n = X.bit_length(m)
    shift = n + e  # v = (m / 2^n) * 2^shift, the first factor in [0.5, 1)
    if n <= 31:
        q = m << (31 - n)
    else:
        q = (m + (1 << (n - 32))) >> (n - 31)  # std::round: halves up (positive)
    if q == 1 << 31:
        q >>= 1
        shift += 1
    if shift < -31:
        return 0, 0
    return q, shift


def ratio_multiplier(num, den):
    """quantize_multiplier(_ddiv(num, den)) in one step (a channel's multiplier: the
    convolutions have one per output channel): the 53-bit quotient rounded to nearest
    even, then to 31 bits."""
    n, d = num[0], den[0]
    if n == 0:
        return 0, 0
    k = 53 - X.bit_length(n) + X.bit_length(d)  # n * 2^k / d lies in [2^52, 2^54)
    if k >= 0:
        q, r = divmod(n << k, d)
    else:
        d <<= -k
        q, r = divmod(n, d)
    if q >> 53:  # 54 bits: the last one and the remainder decide the rounding
        low = q & 1
        q >>= 1
        k -= 1
        if low and (r or q & 1):
            q += 1
    elif r + r > d or (r + r == d and q & 1):
        q += 1
    if q >> 53:
        q >>= 1
        k -= 1
    shift = 53 + num[1] - den[1] - k  # q * 2^(e - k) = (q / 2^53) * 2^shift
    m = (q + (1 << 21)) >> 22  # the significand's 31 leading bits, halves up
    if m == 1 << 31:
        m >>= 1
        shift += 1
    if shift < -31:
        return 0, 0
    return m, shift


def _round_half_away(t, q):
    # std::round of the non-negative value t * 2^q
    if q >= 0:
        return t << q
    r = t >> -q
    if (t - (r << -q)) << 1 >= 1 << -q:
        r += 1
    return r


def f32_bits(n, d, e, negative):
    """The f32 bits of +-n / d * 2^e (n >= 0) rounded to nearest even; overflow gives inf."""
    if n == 0:
        bits = 0
    else:
        t, q = _round(n, d, e, _SINGLE, _SINGLE_EMIN)
        if t >> (_SINGLE - 1):  # normal
            bits = (q + 150) << 23 | (t & 0x7FFFFF) if q + 150 < 255 else _SINGLE_INF
        else:
            bits = t  # subnormal
    return bits | (0x80000000 if negative else 0)


# ------------------------------------------------------------------ operator checks


def _fail(g, k, message):
    return F.error(g, k, message)


def _counts(g, k, lo, hi):
    n = len(g[F.G_OPS][k][F.O_INPUTS])
    if not lo <= n <= hi:
        raise _fail(g, k, "takes %d..%d inputs, has %d" % (lo, hi, n))


def _tensor(g, k, j):
    ins = g[F.G_OPS][k][F.O_INPUTS]
    i = ins[j] if j < len(ins) else F.NO_INDEX
    return None if i == F.NO_INDEX else g[F.G_TENSORS][i]


def _expect(g, k, t, role, rank, dtype):
    if t[F.T_DTYPE] != dtype:
        raise _fail(g, k, "%s is %s; supported: %s" % (role, F.DTYPE_NAMES[t[F.T_DTYPE]],
                                                       F.DTYPE_NAMES[dtype]))
    if rank is not None and len(t[F.T_SHAPE]) != rank:
        raise _fail(g, k, "%s has shape %s; expected %d-D" % (role, list(t[F.T_SHAPE]), rank))
    if dtype == F.I8 and t[F.T_QUANT] == F.QUANT_NONE:
        raise _fail(g, k, "%s is int8 without quantization" % role)
    return t


def _input(g, k, j, rank=None, dtype=F.I8):
    t = _tensor(g, k, j)
    if t is None:
        raise _fail(g, k, "input %d is missing" % j)
    return _expect(g, k, t, "input %d" % j, rank, dtype)


def _output(g, k, rank=None, dtype=F.I8):
    return _expect(g, k, g[F.G_TENSORS][g[F.G_OPS][k][F.O_OUTPUT]], "output", rank, dtype)


def _per_tensor(g, k, t):
    """(scale as (m, e), its f32 bits, zero point) of a tensor quantized per tensor."""
    s = t[F.T_SCALES]
    if t[F.T_QUANT] == F.QUANT_NONE or len(s) != 1:
        raise _fail(g, k, "a tensor must be quantized per tensor (one scale)")
    zero = t[F.T_ZERO]
    if t[F.T_DTYPE] == F.I8 and not _INT8_MIN <= zero <= _INT8_MAX:
        raise _fail(g, k, "zero point %d outside int8" % zero)
    return _f32(s[0]), s[0], zero


def _constant(g, k, j, dtype):
    t = _tensor(g, k, j)
    if t is None or t[F.T_STORAGE] != F.STORAGE_CONSTANT or t[F.T_DTYPE] != dtype:
        raise _fail(g, k, "input %d must be a constant %s tensor" % (j, F.DTYPE_NAMES[dtype]))
    return t


def _i32s(buf, t):
    return struct.unpack_from("<%di" % t[F.T_SIZE], buf, t[F.T_OFFSET])


def _same_quant(g, k, a, b, tolerance):
    # equal zero points and scales (pools: |f32 difference| <= 1e-6)
    sa, ba, za = _per_tensor(g, k, a)
    sb, bb, zb = _per_tensor(g, k, b)
    if za != zb:
        raise _fail(g, k, "input and output zero points differ (%d, %d)" % (za, zb))
    if not tolerance:
        if ba != bb:
            raise _fail(g, k, "input and output scales differ")
        return
    e = min(sa[1], sb[1])
    d = (sa[0] << (sa[1] - e)) - (sb[0] << (sb[1] - e))
    if d:
        t, q = _round(abs(d), 1, e, _SINGLE, _SINGLE_EMIN)  # the float32 difference
        if q >= 0 or t * 1000000 > 1 << -q:  # > 1e-6
            raise _fail(g, k, "input and output scales differ by more than 1e-6")


def _shift(g, k, shift):
    if shift > _MAX_SHIFT:
        raise _fail(g, k, "requantization scale too large (shift %d > %d)"
                          % (shift, _MAX_SHIFT))


def _activation_range(g, k, act, scale, zero):
    # CalculateActivationRangeQuantized: the fused activation as a clamp
    lo, hi = _INT8_MIN, _INT8_MAX
    if act == F.ACT_RELU or act == F.ACT_RELU6:
        lo = max(lo, zero)
    if act == F.ACT_RELU6:
        t, q = _round(6, scale[0], -scale[1], _SINGLE, _SINGLE_EMIN)  # 6.0f / scale
        r = _round_half_away(t, q)
        if q + X.bit_length(t) > 128 or r > X.INT32_MAX:  # inf, or beyond int32
            raise _fail(g, k, "the activation bound 6 does not fit int32 at this scale")
        hi = min(hi, zero + r)
    return lo, hi


def _out_size(padding, size, filt, stride):
    if padding == F.PADDING_SAME:
        return (size + stride - 1) // stride
    return (size - filt + stride) // stride


def _spatial(g, k, x, y, kh, kw, padding, stride_h, stride_w):
    """(pad_top, pad_left) of a window over x giving y; ValueError if y has not the
    window's output shape."""
    if stride_h < 1 or stride_w < 1 or kh < 1 or kw < 1:
        raise _fail(g, k, "strides and windows must be at least 1")
    _, h, w, _ = x[F.T_SHAPE]
    out_h = _out_size(padding, h, kh, stride_h)
    out_w = _out_size(padding, w, kw, stride_w)
    ys = y[F.T_SHAPE]
    if out_h < 1 or out_w < 1 or ys[1] != out_h or ys[2] != out_w or ys[0] != x[F.T_SHAPE][0]:
        raise _fail(g, k, "output shape %s does not match the input %s and the window"
                          % (list(ys), list(x[F.T_SHAPE])))
    return (max((out_h - 1) * stride_h + kh - h, 0) // 2,
            max((out_w - 1) * stride_w + kw - w, 0) // 2)


def _weights(g, k, c_out, axis):
    w = _tensor(g, k, 1)
    if w is None or w[F.T_STORAGE] != F.STORAGE_CONSTANT or w[F.T_DTYPE] != F.I8 \
            or w[F.T_QUANT] == F.QUANT_NONE:
        raise _fail(g, k, "the weights must be a constant int8 tensor with quantization")
    s = w[F.T_SCALES]
    if len(s) > 1 and (len(s) != c_out or w[F.T_AXIS] != axis):
        raise _fail(g, k, "weights quantized per channel need %d scales along axis %d"
                          % (c_out, axis))
    if w[F.T_ZERO] or not s:
        raise _fail(g, k, "weights must be quantized symmetrically (zero point 0)")
    return w


def _bias(buf, g, k, c_out):
    b = _tensor(g, k, 2)
    if b is None:
        return None
    if b[F.T_STORAGE] != F.STORAGE_CONSTANT or b[F.T_DTYPE] != F.I32 or b[F.T_SHAPE] != (c_out,):
        raise _fail(g, k, "the bias must be a constant int32 tensor of shape [%d]" % c_out)
    return b[F.T_OFFSET]  # (its int32s are read a channel at a time)


def _table_at(buf, g, k, n):
    # the byte offset of operator k's table of n bytes (ValueError if it has none there)
    at = g[F.G_OPS][k][F.O_TABLE]
    if not at or at & 3 or at < g[F.G_DATA] or at + n > len(buf):
        raise _fail(g, k, "stored table differs from the one its quantization gives")
    return at


def _channels(buf, g, k, si, w, so, input_zero, bias_at, sums_fn, c_out, n, stride_out,
              stride):
    # A channel at a time, nothing per channel kept: the bound of its int32 accumulator
    # (no input can overflow it), and its record of the channel table (FORMAT.md: folded
    # bias, multiplier, shift) compared where it is stored. The weights of channel c: n
    # int8 from w + c * stride_out, stride apart. The multiplier is
    # PopulateConvolutionQuantizationParams' (the product in double), computed once for
    # weights quantized per tensor. Returns the table's size.
    if not c_out:
        raise _fail(g, k, "no output channels")
    s = w[F.T_SCALES]
    at = _table_at(buf, g, k, 12 * c_out)
    m = sh = 0
    sums = _SUMS
    for c in range(c_out):
        sums_fn(buf, w[F.T_OFFSET] + c * stride_out, n, stride, sums)
        bias = 0 if bias_at is None else struct.unpack_from("<i", buf, bias_at + 4 * c)[0]
        if sums[1] * 255 + abs(bias) > X.INT32_MAX:
            raise _fail(g, k, "the int32 accumulator can overflow (too many or too large"
                              " weights)")
        if c == 0 or len(s) > 1:
            m, sh = ratio_multiplier(_mul(si, _f32(s[c])), so)
            _shift(g, k, sh)
        folded = bias - input_zero * sums[0]
        if abs(folded) > X.INT32_MAX:
            raise _fail(g, k, "the folded bias leaves int32")
        if struct.unpack_from("<iii", buf, at + 12 * c) != (folded, m, sh):
            raise _fail(g, k, "stored table differs from the one its quantization gives")
    return 12 * c_out


def _conv_common(buf, g, k, sums_fn, depthwise):
    _counts(g, k, 2, 3)
    x, y = _input(g, k, 0, 4), _output(g, k, 4)
    p = g[F.G_OPS][k][F.O_PARAMS]
    xs, ys = x[F.T_SHAPE], y[F.T_SHAPE]
    c_out = ys[3]
    dm = 1
    if depthwise:
        dm = p[F.P_DEPTH_MULTIPLIER]
        if c_out != xs[3] * dm:
            raise _fail(g, k, "output channels %d != input channels %d x depth multiplier %d"
                              % (c_out, xs[3], dm))
    w = _weights(g, k, c_out, 3 if depthwise else 0)
    ws = w[F.T_SHAPE]
    if depthwise and (len(ws) != 4 or ws[0] != 1 or ws[3] != c_out):
        raise _fail(g, k, "weights %s must be [1, kh, kw, %d]" % (list(ws), c_out))
    if not depthwise and (len(ws) != 4 or ws[0] != c_out or ws[3] != xs[3]):
        raise _fail(g, k, "weights %s must be [%d, kh, kw, %d]" % (list(ws), c_out, xs[3]))
    bias = _bias(buf, g, k, c_out)
    taps = ws[1] * ws[2]
    si, _, zi = _per_tensor(g, k, x)
    so, _, zo = _per_tensor(g, k, y)
    lo, hi = _activation_range(g, k, p[F.P_ACTIVATION], so, zo)
    pad_top, pad_left = _spatial(g, k, x, y, ws[1], ws[2], p[F.P_PADDING],
                                 p[F.P_CONV_STRIDE_H], p[F.P_CONV_STRIDE_W])
    named = (p[F.P_PADDING], p[F.P_ACTIVATION], p[F.P_CONV_STRIDE_H], p[F.P_CONV_STRIDE_W],
             pad_top, pad_left, dm, zi, zo, lo, hi)
    if depthwise:  # channel c's weights: taps of c_out bytes each
        return named, _channels(buf, g, k, si, w, so, zi, bias, sums_fn, c_out, taps, 1, c_out)
    return named, _channels(buf, g, k, si, w, so, zi, bias, sums_fn, c_out, taps * ws[3],
                            taps * ws[3], 1)


def _conv(buf, g, k, sums_fn):
    return _conv_common(buf, g, k, sums_fn, False)


def _depthwise(buf, g, k, sums_fn):
    return _conv_common(buf, g, k, sums_fn, True)


def _fully_connected(buf, g, k, sums_fn):
    _counts(g, k, 2, 3)
    x, y = _input(g, k, 0), _output(g, k)
    p = g[F.G_OPS][k][F.O_PARAMS]
    if not y[F.T_SHAPE]:
        raise _fail(g, k, "the output must have at least one dimension")
    c_out = y[F.T_SHAPE][-1]
    w = _weights(g, k, c_out, 0)
    ws = w[F.T_SHAPE]
    if len(ws) != 2 or ws[0] != c_out:
        raise _fail(g, k, "weights %s must be [%d, depth]" % (list(ws), c_out))
    depth = ws[1]
    if depth == 0 or x[F.T_SIZE] != (y[F.T_SIZE] // max(c_out, 1)) * depth:
        raise _fail(g, k, "input %s is not a whole number of rows of %d for output %s"
                          % (list(x[F.T_SHAPE]), depth, list(y[F.T_SHAPE])))
    bias = _bias(buf, g, k, c_out)
    si, _, zi = _per_tensor(g, k, x)
    so, _, zo = _per_tensor(g, k, y)
    b = _tensor(g, k, 2)
    if len(w[F.T_SCALES]) == 1 and b is not None and b[F.T_QUANT] != F.QUANT_NONE:
        # the bias scale is input scale x weight scale (2% of the output scale)
        d = _dsub_abs(_mul(si, _f32(w[F.T_SCALES][0])), _f32(b[F.T_SCALES][0]))
        if _greater(_ddiv(d, so), _TWO_PERCENT):
            raise _fail(g, k, "the bias scale must equal input scale x weight scale")
    lo, hi = _activation_range(g, k, p[F.P_FC_ACTIVATION], so, zo)
    named = (p[F.P_FC_ACTIVATION], 1 if p[F.P_FC_KEEP_NUM_DIMS] else 0, zi, zo, lo, hi)
    return named, _channels(buf, g, k, si, w, so, zi, bias, sums_fn, c_out, depth, depth, 1)


def _pool(buf, g, k, sums_fn):
    _counts(g, k, 1, 1)
    x, y = _input(g, k, 0, 4), _output(g, k, 4)
    p = g[F.G_OPS][k][F.O_PARAMS]
    _same_quant(g, k, x, y, True)
    if y[F.T_SHAPE][3] != x[F.T_SHAPE][3]:
        raise _fail(g, k, "a pool keeps the number of channels")
    so, _, zo = _per_tensor(g, k, y)
    lo, hi = _activation_range(g, k, p[F.P_ACTIVATION], so, zo)
    fh, fw = p[F.P_POOL_FILTER_H], p[F.P_POOL_FILTER_W]
    pad_top, pad_left = _spatial(g, k, x, y, fh, fw, p[F.P_PADDING], p[F.P_POOL_STRIDE_H],
                                 p[F.P_POOL_STRIDE_W])
    named = (p[F.P_PADDING], p[F.P_ACTIVATION], fh, fw, p[F.P_POOL_STRIDE_H],
             p[F.P_POOL_STRIDE_W], pad_top, pad_left, lo, hi)
    return named, None


def broadcast_shape(a, b):
    """numpy's broadcast of two shapes, or None where they do not broadcast."""
    n = max(len(a), len(b))
    a = (1,) * (n - len(a)) + a
    b = (1,) * (n - len(b)) + b
    out = []
    for i in range(n):
        if a[i] == b[i] or b[i] == 1:
            out.append(a[i])
        elif a[i] == 1:
            out.append(b[i])
        else:
            return None
    return tuple(out)


def _add(buf, g, k, sums_fn):
    _counts(g, k, 2, 2)
    a, b, y = _input(g, k, 0), _input(g, k, 1), _output(g, k)
    p = g[F.G_OPS][k][F.O_PARAMS]
    if broadcast_shape(a[F.T_SHAPE], b[F.T_SHAPE]) != y[F.T_SHAPE]:
        raise _fail(g, k, "shapes %s + %s do not broadcast to the output %s"
                          % (list(a[F.T_SHAPE]), list(b[F.T_SHAPE]), list(y[F.T_SHAPE])))
    s1, _, z1 = _per_tensor(g, k, a)
    s2, _, z2 = _per_tensor(g, k, b)
    so, _, zo = _per_tensor(g, k, y)
    twice_max = s1 if _greater(s1, s2) else s2
    twice_max = (twice_max[0], twice_max[1] + 1)
    real_out = _ddiv(twice_max, (so[0], so[1] + _ADD_LEFT_SHIFT))
    if not _greater((1, 0), real_out):
        raise _fail(g, k, "output scale too small for the input scales")
    m1, sh1 = quantize_multiplier(_ddiv(s1, twice_max))
    m2, sh2 = quantize_multiplier(_ddiv(s2, twice_max))
    mo, sho = quantize_multiplier(real_out)
    lo, hi = _activation_range(g, k, p[F.P_ADD_ACTIVATION], so, zo)
    named = (p[F.P_ADD_ACTIVATION], -z1, -z2, _ADD_LEFT_SHIFT, m1, sh1, m2, sh2, mo, sho, zo,
             lo, hi)
    return named, None


def _softmax(buf, g, k, sums_fn):
    _counts(g, k, 1, 1)
    x, y = _input(g, k, 0), _output(g, k)
    p = g[F.G_OPS][k][F.O_PARAMS]
    xs = x[F.T_SHAPE]
    if xs != y[F.T_SHAPE] or not xs:
        raise _fail(g, k, "input and output shapes must be equal")
    if xs[-1] > _MAX_SOFTMAX_DEPTH:
        raise _fail(g, k, "softmax over %d values; supported up to %d"
                          % (xs[-1], _MAX_SOFTMAX_DEPTH))
    _, bo, zo = _per_tensor(g, k, y)
    if zo != -128 or bo != _F32_ONE_256:
        raise _fail(g, k, "the int8 output must have scale 1/256 and zero point -128")
    si, _, _ = _per_tensor(g, k, x)
    beta = p[F.P_SOFTMAX_BETA] & 0xFFFFFFFF
    if beta == 0 or beta >= _SINGLE_INF:  # <= 0, infinite or NaN: no usable multiplier
        raise _fail(g, k, "beta must be finite and > 0")
    real = _mul(_mul(_f32(beta), si), (1, 26))
    if _greater(real, (X.INT32_MAX, 0)):
        real = (X.INT32_MAX, 0)
    if not _greater(real, (1, 0)):
        raise _fail(g, k, "input scale x beta too small (TFLite Micro needs > 2^-26)")
    mult, shift = quantize_multiplier(real)
    _shift(g, k, shift)
    diff_min = -((31 << 26) >> shift)  # -CalculateInputRadius(5, shift)
    named = (p[F.P_SOFTMAX_BETA], mult, shift, diff_min)
    table = bytearray(1024)
    for d in range(256):
        if -d >= diff_min:
            scaled = X.srdhm(X.wrap32(-d << shift), mult)
            struct.pack_into("<i", table, 4 * d,
                             X.exp_on_negative_values(scaled, X.SOFTMAX_DIFF_INTEGER_BITS))
    return named, table


def _sigmoid(buf, g, k, out_bits, out_zero, tanh):
    _counts(g, k, 1, 1)
    x, y = _input(g, k, 0), _output(g, k)
    if x[F.T_SHAPE] != y[F.T_SHAPE]:
        raise _fail(g, k, "input and output shapes must be equal")
    _, bo, zo = _per_tensor(g, k, y)
    if zo != out_zero or bo != out_bits:
        raise _fail(g, k, "the int8 output must have scale 1/%d and zero point %d"
                          % (128 if tanh else 256, out_zero))
    (m, e), _, zi = _per_tensor(g, k, x)
    n = X.bit_length(m)
    left_shift = n + e + 27  # frexp of scale * 2^27
    if left_shift > _MAX_SHIFT or left_shift < 0:
        raise _fail(g, k, "input scale outside the supported range")
    mult = m << (31 - n)
    radius = (15 << 27) >> left_shift  # CalculateInputRadius(4, left_shift)
    named = (zi, radius, mult, left_shift)
    table = bytearray(256)
    for j in range(256):
        v = j - 128 - zi
        if v <= -radius:
            out = _INT8_MIN
        elif v >= radius:
            out = _INT8_MAX
        else:
            q4 = X.mbqm(v, mult, left_shift)
            if tanh:
                out = X.rdbpot(X.tanh_fixed(q4, 4), 24)
            else:
                out = X.rdbpot(X.logistic_fixed(q4, 4), 23) - 128
            out = _INT8_MIN if out < _INT8_MIN else _INT8_MAX if out > _INT8_MAX else out
        table[j] = out & 0xFF
    return named, table


def _logistic(buf, g, k, sums_fn):
    return _sigmoid(buf, g, k, _F32_ONE_256, -128, False)


def _tanh(buf, g, k, sums_fn):
    return _sigmoid(buf, g, k, _F32_ONE_128, 0, True)


def _mean(buf, g, k, sums_fn):
    _counts(g, k, 2, 2)
    x, y = _input(g, k, 0, 4), _output(g, k)
    p = g[F.G_OPS][k][F.O_PARAMS]
    axes = _i32s(buf, _constant(g, k, 1, F.I32))
    if len(axes) != 2 or sorted(a % 4 for a in axes) != [1, 2] or not all(
            -4 <= a < 4 for a in axes):
        raise _fail(g, k, "MEAN over axes %s; supported: height and width (1, 2)" % list(axes))
    n, h, w, c = x[F.T_SHAPE]
    keep = 1 if p[F.P_MEAN_KEEP_DIMS] else 0
    want = (n, 1, 1, c) if keep else (n, c)
    if y[F.T_SHAPE] != want:
        raise _fail(g, k, "output shape %s, expected %s" % (list(y[F.T_SHAPE]), list(want)))
    si, _, zi = _per_tensor(g, k, x)
    so, _, zo = _per_tensor(g, k, y)
    mult, shift = quantize_multiplier(_ddiv(si, so))
    count = h * w
    if count == 0:
        raise _fail(g, k, "MEAN over an empty window")
    # QuantizedMeanOrSum folds the division by the count into the multiplier
    s = min(X.bit_length(count) - 1, 32, 31 + shift)
    mult, shift = (mult << s) // count, shift - s
    _shift(g, k, shift)
    if shift < -31:
        raise _fail(g, k, "requantization scale too small")
    return (keep, zi * count, mult, shift, zo), None


def _pad(buf, g, k, sums_fn):
    _counts(g, k, 2, 2)
    x, y = _input(g, k, 0), _output(g, k)
    pads = _constant(g, k, 1, F.I32)
    xs = x[F.T_SHAPE]
    v = _i32s(buf, pads)
    if pads[F.T_SHAPE] != (len(xs), 2) or len(xs) > 4 or any(e < 0 for e in v):
        raise _fail(g, k, "paddings must be [%d, 2] and non-negative" % len(xs))
    want = tuple(xs[i] + v[2 * i] + v[2 * i + 1] for i in range(len(xs)))
    if y[F.T_SHAPE] != want:
        raise _fail(g, k, "output shape %s, expected %s" % (list(y[F.T_SHAPE]), list(want)))
    _same_quant(g, k, x, y, False)
    return (_per_tensor(g, k, y)[2],), None


def _reshape(buf, g, k, sums_fn):
    _counts(g, k, 1, 2)
    x, y = _input(g, k, 0), _output(g, k)
    if x[F.T_SIZE] != y[F.T_SIZE]:
        raise _fail(g, k, "%s and %s hold different numbers of elements"
                          % (list(x[F.T_SHAPE]), list(y[F.T_SHAPE])))
    _same_quant(g, k, x, y, False)
    return (), None


def _quantize(buf, g, k, sums_fn):
    _counts(g, k, 1, 1)
    x = _tensor(g, k, 0)
    if x is None:
        raise _fail(g, k, "input 0 is missing")
    y = _output(g, k)
    if x[F.T_SHAPE] != y[F.T_SHAPE]:
        raise _fail(g, k, "input and output shapes must be equal")
    so, bo, zo = _per_tensor(g, k, y)
    if x[F.T_DTYPE] == F.F32:
        if x[F.T_QUANT] != F.QUANT_NONE:
            raise _fail(g, k, "input 0 is float32 with quantization")
        return (zo, bo, 0, 0, 0), None
    _input(g, k, 0)
    si, _, zi = _per_tensor(g, k, x)
    mult, shift = quantize_multiplier(_ddiv(si, so))
    _shift(g, k, shift)
    table = bytearray(256)
    for j in range(256):
        v = X.mbqm(j - 128 - zi, mult, shift) + zo
        table[j] = (_INT8_MIN if v < _INT8_MIN else _INT8_MAX if v > _INT8_MAX else v) & 0xFF
    return (zo, bo, zi, mult, shift), table


def _dequantize(buf, g, k, sums_fn):
    _counts(g, k, 1, 1)
    x, y = _input(g, k, 0), _output(g, k, None, F.F32)
    if x[F.T_SHAPE] != y[F.T_SHAPE]:
        raise _fail(g, k, "input and output shapes must be equal")
    if y[F.T_QUANT] != F.QUANT_NONE:
        raise _fail(g, k, "the output is float32 with quantization")
    (m, e), bi, zi = _per_tensor(g, k, x)
    table = bytearray(1024)
    for j in range(256):
        n = j - 128 - zi  # float(double scale * n), the product exact
        struct.pack_into("<I", table, 4 * j, f32_bits(m * abs(n), 1, e, n < 0))
    return (zi, bi), table


def _no_kind(buf, g, k, sums_fn):  # pragma: no cover - code 0 is refused by the reader
    raise _fail(g, k, "unknown kind")


# ------------------------------------------------------------------ binary operators

MAX_FIELD_WORDS = const(1024)  # kh * kw * words(C_in): one output pixel's receptive field
_MAX_STRIDE = const(4096)  # and filter sizes below 2^16: pads below 2^16 (as the C runner)


def _window_limits(g, k, stride_h, stride_w, filter_h, filter_w):
    if stride_h > _MAX_STRIDE or stride_w > _MAX_STRIDE or filter_h > 0xFFFF \
            or filter_w > 0xFFFF:
        raise _fail(g, k, "strides above %d or filter sizes above 65535" % _MAX_STRIDE)


def _positive_dims(g, k, t, role):
    for d in t[F.T_SHAPE]:
        if d < 1:
            raise _fail(g, k, "%s has an empty dimension: %s" % (role, list(t[F.T_SHAPE])))


def _padding_bits_clear(buf, g, k, t, role):
    # every row of a constant bits tensor has its padding bits 0 (the kernels count them)
    c = t[F.T_SHAPE][-1]
    p = c & 31
    if not p:
        return
    nw = (c + 31) >> 5
    o = t[F.T_OFFSET] + 4 * nw - 4 + (p >> 3)  # the byte of the first padding bit
    for _ in range(t[F.T_NBYTES] // (4 * nw)):
        if buf[o] >> (p & 7) or any(buf[o + j] for j in range(1, 4 - (p >> 3))):
            raise _fail(g, k, "%s has padding bits set (past %d elements per row)" % (role, c))
        o += 4 * nw


def _binarize(buf, g, k, sums_fn):
    _counts(g, k, 2, 2)
    x = _input(g, k, 0)
    y = _output(g, k, None, F.BITS)
    b = _constant(g, k, 1, F.I32)
    if not x[F.T_SHAPE] or y[F.T_SHAPE] != x[F.T_SHAPE]:
        raise _fail(g, k, "input and output shapes must be equal, rank 1..4")
    _positive_dims(g, k, x, "input 0")
    if b[F.T_SHAPE] != (x[F.T_SHAPE][-1], 2):
        raise _fail(g, k, "the bounds must be [%d, 2]" % x[F.T_SHAPE][-1])
    return (), None


def _xnor_conv(buf, g, k, sums_fn):
    _counts(g, k, 3, 3)
    x = _input(g, k, 0, 4, F.BITS)
    w = _constant(g, k, 1, F.BITS)
    y = g[F.G_TENSORS][g[F.G_OPS][k][F.O_OUTPUT]]
    y = _output(g, k, 4, F.I32 if y[F.T_DTYPE] == F.I32 else F.BITS)
    _positive_dims(g, k, x, "input 0")
    _positive_dims(g, k, y, "output")
    ws, cin, cout = w[F.T_SHAPE], x[F.T_SHAPE][3], y[F.T_SHAPE][3]
    if len(ws) != 4 or ws[0] != cout or ws[3] != cin:
        raise _fail(g, k, "weights %s, expected [%d, kh, kw, %d]" % (list(ws), cout, cin))
    p = g[F.G_OPS][k][F.O_PARAMS]
    kh, kw = ws[1], ws[2]
    _window_limits(g, k, p[F.P_XNOR_STRIDE_H], p[F.P_XNOR_STRIDE_W], kh, kw)
    pad = _spatial(g, k, x, y, kh, kw, p[F.P_XNOR_PADDING], p[F.P_XNOR_STRIDE_H],
                   p[F.P_XNOR_STRIDE_W])
    if kh * kw * ((cin + 31) >> 5) > MAX_FIELD_WORDS:
        raise _fail(g, k, "receptive field of %d words; at most %d"
                          % (kh * kw * ((cin + 31) >> 5), MAX_FIELD_WORDS))
    _padding_bits_clear(buf, g, k, w, "the weights")
    ch = _constant(g, k, 2, F.I32)
    if y[F.T_DTYPE] == F.BITS:
        if ch[F.T_SHAPE] != (cout,):
            raise _fail(g, k, "the thresholds must be [%d]" % cout)
    else:
        if ch[F.T_SHAPE] != (2, cout):
            raise _fail(g, k, "the fixed-point factors (a; b) must be [2, %d]" % cout)
        if y[F.T_QUANT] == F.QUANT_CHANNEL or y[F.T_ZERO]:
            raise _fail(g, k, "an int32 output is quantized per tensor with zero point 0")
        n = kh * kw * cin
        v = _i32s(buf, ch)
        for c in range(cout):
            if abs(v[c]) * n + abs(v[cout + c]) > X.INT32_MAX:
                raise _fail(g, k, "channel %d: |a|*%d + |b| leaves int32" % (c, n))
    return (p[F.P_XNOR_PADDING], p[F.P_XNOR_STRIDE_H], p[F.P_XNOR_STRIDE_W]) + pad, None


MAX_FIELD_TAPS = const(1024)  # BINARIZE_CONV_2D: kh * kw * C_in (|sum| < 2^25)


def _binarize_conv(buf, g, k, sums_fn):
    _counts(g, k, 3, 3)
    x = _input(g, k, 0, 4, F.I8)
    y = _output(g, k, 4, F.BITS)
    w = _constant(g, k, 1, F.I8)
    t = _constant(g, k, 2, F.I32)
    _positive_dims(g, k, x, "input 0")
    _positive_dims(g, k, y, "output")
    _, _, zx = _per_tensor(g, k, x)
    if w[F.T_QUANT] != F.QUANT_CHANNEL and w[F.T_ZERO]:
        raise _fail(g, k, "the weights' zero points must be 0")
    ws, cin, cout = w[F.T_SHAPE], x[F.T_SHAPE][3], y[F.T_SHAPE][3]
    if len(ws) != 4 or ws[0] != cout or ws[3] != cin:
        raise _fail(g, k, "weights %s, expected [%d, kh, kw, %d]" % (list(ws), cout, cin))
    p = g[F.G_OPS][k][F.O_PARAMS]
    kh, kw = ws[1], ws[2]
    _window_limits(g, k, p[F.P_BCONV_STRIDE_H], p[F.P_BCONV_STRIDE_W], kh, kw)
    pad = _spatial(g, k, x, y, kh, kw, p[F.P_BCONV_PADDING], p[F.P_BCONV_STRIDE_H],
                   p[F.P_BCONV_STRIDE_W])
    if kh * kw * cin > MAX_FIELD_TAPS:
        raise _fail(g, k, "receptive field of %d taps; at most %d" % (kh * kw * cin,
                                                                      MAX_FIELD_TAPS))
    if t[F.T_SHAPE] != (cout,):
        raise _fail(g, k, "the thresholds must be [%d]" % cout)
    return (p[F.P_BCONV_PADDING], p[F.P_BCONV_STRIDE_H], p[F.P_BCONV_STRIDE_W]) + pad \
        + (zx,), None


def _binary_max_pool(buf, g, k, sums_fn):
    _counts(g, k, 1, 1)
    x, y = _input(g, k, 0, 4, F.BITS), _output(g, k, 4, F.BITS)
    _positive_dims(g, k, x, "input 0")
    if y[F.T_SHAPE][3] != x[F.T_SHAPE][3]:
        raise _fail(g, k, "input and output channels differ")
    p = g[F.G_OPS][k][F.O_PARAMS]
    _window_limits(g, k, p[F.P_BPOOL_STRIDE_H], p[F.P_BPOOL_STRIDE_W], p[F.P_BPOOL_FILTER_H],
                   p[F.P_BPOOL_FILTER_W])
    pad = _spatial(g, k, x, y, p[F.P_BPOOL_FILTER_H], p[F.P_BPOOL_FILTER_W],
                   p[F.P_BPOOL_PADDING], p[F.P_BPOOL_STRIDE_H], p[F.P_BPOOL_STRIDE_W])
    return tuple(p[F.P_BPOOL_PADDING:F.P_BPOOL_STRIDE_W + 1]) + pad, None


# per kind code (FORMAT.md): (buf, graph, operator index, weight sums) -> (named params,
# table bytes, or the size of a table already compared in place, or None)
_PREPARE = (_no_kind, _conv, _depthwise, _fully_connected, _pool, _pool, _add, _reshape,
            _softmax, _pad, _mean, _logistic, _tanh, _quantize, _dequantize, _no_kind,
            _no_kind, _no_kind, _no_kind, _no_kind, _binarize, _xnor_conv, _binary_max_pool,
            _binarize_conv)


def weight_sums(buf, p, n, stride, out):
    """One output channel's weights: out[0] = the sum and out[1] = the sum of |w| of the
    n int8 buf[p], buf[p + stride], ... (both stop at 2^24 of |w|, past any accumulator
    bound: then out[0] is 0)."""
    s = a = 0
    for _ in range(n):
        v = buf[p]
        if v > 127:
            v -= 256
            a -= v
        else:
            a += v
        s += v
        if a > 0x1000000:
            a = 0x1000000
            s = 0
            break
        p += stride
    out[0] = s
    out[1] = a


def _writer_kind(g, i):
    # the kind of the operator writing tensor i (0: none)
    for op in g[F.G_OPS]:
        if op[F.O_OUTPUT] == i:
            return op[F.O_KIND]
    return 0


def check(buf, g, sums_fn=weight_sums):
    """Check every operator against its kind's rules and every stored param and table
    against those its tensors' quantization gives; ValueError on the first difference.
    sums_fn: weight_sums or a faster function with its arguments and results (a
    channel's weight sums into an array('i') of two)."""
    ops = g[F.G_OPS]
    for k in range(len(ops)):
        op = ops[k]
        if op[F.O_KIND] < F.QUANTIZE and g[F.G_TENSORS][op[F.O_OUTPUT]][F.T_DTYPE] == F.F32:
            from nn import _float_python as FP  # a float32 operator's rules

            named, table = FP.check(buf, g, k), None
        else:
            named, table = _PREPARE[op[F.O_KIND]](buf, g, k, sums_fn)
        params = op[F.O_PARAMS]
        for j in range(len(named)):
            if params[j] != named[j]:
                raise _fail(g, k, "stored params differ from those its quantization gives")
        if type(table) is int:  # its size: compared where it is stored (_channels)
            continue
        at = op[F.O_TABLE]
        if (at != 0) != (table is not None) or table is not None and (
                at & 3 or at < g[F.G_DATA] or at + len(table) > len(buf)
                or memoryview(buf)[at:at + len(table)] != table):  # (a view: no copy)
            raise _fail(g, k, "stored table differs from the one its quantization gives")
    for i in g[F.G_INPUTS] + g[F.G_OUTPUTS]:
        t = g[F.G_TENSORS][i]
        if t[F.T_DTYPE] == F.BITS or (t[F.T_DTYPE] == F.I32 and (
                i not in g[F.G_OUTPUTS] or t[F.T_STORAGE] == F.STORAGE_CONSTANT
                or _writer_kind(g, i) != F.XNOR_CONV_2D)) \
                or (t[F.T_DTYPE] == F.I8 and t[F.T_QUANT] == F.QUANT_NONE):
            raise ValueError("graph input/output tensor %d is %s; supported: int8 (quantized),"
                             " float32, int32 (an XNOR_CONV_2D output)"
                             % (i, F.DTYPE_NAMES[t[F.T_DTYPE]]))
