# nn._float_python: the float32 operators of format version 2 (docs/FORMAT.md "float32
# operators") in plain Python, on any MicroPython port, and their load-time checks.
#
# The kernels are the host's piconn.float_ops (TensorFlow Lite Micro's float reference
# kernels): every sum in float32 in the kernel's order, so they give the bits of the C
# tier (nn_float.c) and of the host. MicroPython's floats are doubles on the unix and
# webassembly ports and float32 on the RP2040; every result goes through a float32 store
# (the array _R) so that both round like float32 arithmetic (a float32 product or sum
# computed in double and rounded once is the float32 result).
#
# These kernels allocate: every float read (struct.unpack_from) or computed is a heap
# object on ports with boxed floats; nn.graph runs them with the collector on. The viper
# tier has no float arithmetic of its own, so float32 operators run here under
# nn.use_backend('viper') as well. Cost: tens of thousands of cycles per multiply-add on
# a Cortex-M0+; the C tier is the one to use for float models.
import struct
from array import array

from micropython import const

from nn import _graph_format as F
from nn import _graph_prepare as P

# the float32 values of piconn.float_ops' constants (by their bits, exact on every port)
def _bits(u):
    return struct.unpack("<f", struct.pack("<I", u))[0]


_LOG2E = _bits(0x3FB8AA3B)
_LN2_HI = _bits(0x3F318000)
_LN2_LO = _bits(0xB95E8083)
_EXP_POLY = tuple(_bits(u) for u in (0x39500D01, 0x3AB60B61, 0x3C088889, 0x3D2AAAAB,
                                     0x3E2AAAAB, 0x3F000000, 0x3F800000, 0x3F800000))
_EXP_MIN = -87.0
_EXP_MAX = 88.0
_INF = _bits(0x7F800000)
_LOGISTIC_UPPER = _bits(0x4184F3CF)
_LOGISTIC_LOWER = -9.0
_F32_LOWEST = const(0xFF7FFFFF)  # -FLT_MAX: a clamp that does not clamp, max pool's start
_F32_MAX = const(0x7F7FFFFF)
_F32_SIX = const(0x40C00000)

_R = array("f", (0.0, 0.0))  # float32 rounding: a store then a load


def is_float(g, k):
    """Whether operator k is a float32 operator: a kind below QUANTIZE with a float32
    output (nn._graph_prepare and nn.graph test the same without importing this)."""
    op = g[F.G_OPS][k]
    return op[F.O_KIND] < F.QUANTIZE and g[F.G_TENSORS][op[F.O_OUTPUT]][F.T_DTYPE] == F.F32


def _f(m, o):
    return struct.unpack_from("<f", m, o)[0]


def _put(m, o, v):
    struct.pack_into("<f", m, o, v)


def _clamp(v, lo, hi):
    # ActivationFunctionWithMinMax: min(max(v, lo), hi)
    if v < lo:
        v = lo
    return hi if v > hi else v


# ------------------------------------------------------------------ kernels


def conv_2d_f32(a):
    """CONV_2D (DEPTHWISE_CONV_2D when depthwise): sum over filter_y, filter_x, in_channel
    of x * w (taps inside the image), + bias, clamped."""
    (xb, xo, n, h, w, cin, wb, wo, kh, kw, bb, bo, yb, yo, oh, ow, cout, sh, sw, pt, pl,
     dm, depthwise, lo, hi) = a
    R = _R
    y = yo
    for b in range(n):
        for oy in range(oh):
            iy0 = oy * sh - pt
            for ox in range(ow):
                ix0 = ox * sw - pl
                for oc in range(cout):
                    R[1] = 0.0
                    for ky in range(kh):
                        iy = iy0 + ky
                        if iy < 0 or iy >= h:
                            continue
                        for kx in range(kw):
                            ix = ix0 + kx
                            if ix < 0 or ix >= w:
                                continue
                            px = xo + 4 * (((b * h + iy) * w + ix) * cin)
                            if depthwise:
                                v = _f(xb, px + 4 * (oc // dm))
                                if v:  # (a zero input leaves the sum as it is: nn_float.c)
                                    R[0] = v * _f(wb, wo + 4 * ((ky * kw + kx) * cout + oc))
                                    R[1] += R[0]
                                continue
                            pw = wo + 4 * (((oc * kh + ky) * kw + kx) * cin)
                            for ic in range(cin):
                                v = _f(xb, px + 4 * ic)
                                if v:
                                    R[0] = v * _f(wb, pw + 4 * ic)
                                    R[1] += R[0]
                    if bb is not None:
                        R[1] += _f(bb, bo + 4 * oc)
                    _put(yb, y, _clamp(R[1], lo, hi))
                    y += 4


def fully_connected_f32(a):
    """FULLY_CONNECTED: per row and output, the sum over the depth of x * w, + bias."""
    xb, xo, rows, depth, wb, wo, bb, bo, yb, yo, cout, lo, hi = a
    R = _R
    y = yo
    for r in range(rows):
        px = xo + 4 * depth * r
        for oc in range(cout):
            pw = wo + 4 * depth * oc
            R[1] = 0.0
            for d in range(depth):
                v = _f(xb, px + 4 * d)
                if v:
                    R[0] = v * _f(wb, pw + 4 * d)
                    R[1] += R[0]
            if bb is not None:
                R[1] += _f(bb, bo + 4 * oc)
            _put(yb, y, _clamp(R[1], lo, hi))
            y += 4


def pool_f32(a):
    """AVERAGE_POOL_2D (average) or MAX_POOL_2D over the taps inside the image."""
    xb, xo, n, h, w, c, yb, yo, oh, ow, fh, fw, sh, sw, pt, pl, lo, hi, average = a
    R = _R
    lowest = _bits(_F32_LOWEST)
    y = yo
    for b in range(n):
        for oy in range(oh):
            y0 = oy * sh - pt
            ya, yz = max(y0, 0), min(y0 + fh, h)
            for ox in range(ow):
                x0 = ox * sw - pl
                xa, xz = max(x0, 0), min(x0 + fw, w)
                for ch in range(c):
                    R[1] = 0.0 if average else lowest
                    for iy in range(ya, yz):
                        p = xo + 4 * (((b * h + iy) * w + xa) * c + ch)
                        for _ in range(xa, xz):
                            v = _f(xb, p)
                            if average:
                                R[1] += v
                            elif v > R[1]:
                                R[1] = v
                            p += 4 * c
                    if average:
                        R[1] = R[1] / ((yz - ya) * (xz - xa))
                    _put(yb, y, _clamp(R[1], lo, hi))
                    y += 4


def add_f32(a):
    """ADD with broadcasting (strides 0 along broadcast dims), clamped."""
    ab, ao, bb, bo, yb, yo, dims, sa, sb, lo, hi = a
    R = _R
    y = yo
    for i0 in range(dims[0]):
        for i1 in range(dims[1]):
            for i2 in range(dims[2]):
                pa = ao + 4 * (i0 * sa[0] + i1 * sa[1] + i2 * sa[2])
                pb = bo + 4 * (i0 * sb[0] + i1 * sb[1] + i2 * sb[2])
                for i3 in range(dims[3]):
                    R[0] = _f(ab, pa + 4 * i3 * sa[3]) + _f(bb, pb + 4 * i3 * sb[3])
                    _put(yb, y, _clamp(R[0], lo, hi))
                    y += 4


def exp_f32(x):
    """piconn.float_ops.exp_f32 of a float32 value, step by step in float32."""
    if x < _EXP_MIN:
        return 0.0
    if x > _EXP_MAX:
        return _INF
    R = _R
    R[0] = x * _LOG2E
    R[0] += -0.5 if x < 0 else 0.5
    k = int(R[0])  # toward zero
    k = -126 if k < -126 else 127 if k > 127 else k
    R[0] = k * _LN2_HI
    R[0] = x - R[0]
    R[1] = k * _LN2_LO
    r = R[0] - R[1]
    R[0] = r
    r = R[0]
    poly = _EXP_POLY
    R[1] = poly[0]
    for j in range(1, len(poly)):
        R[1] *= r
        R[1] += poly[j]
    R[1] *= _bits((k + 127) << 23)
    return R[1]


def softmax_f32(a):
    """SOFTMAX: per row, e = exp((x - max) * beta), then e / (their sum in order)."""
    xb, xo, yb, yo, rows, depth, beta = a
    R = _R
    for r in range(rows):
        px, py = xo + 4 * depth * r, yo + 4 * depth * r
        top = _bits(_F32_LOWEST)
        for c in range(depth):
            v = _f(xb, px + 4 * c)
            if v > top:
                top = v
        total = 0.0
        for c in range(depth):
            R[0] = _f(xb, px + 4 * c) - top
            R[0] *= beta
            e = exp_f32(R[0])
            _put(yb, py + 4 * c, e)
            R[0] = total + e
            total = R[0]
        for c in range(depth):
            R[0] = _f(yb, py + 4 * c) / total
            _put(yb, py + 4 * c, R[0])


def logistic_f32(a):
    """LOGISTIC: 1 past the upper cutoff, e^x below the lower one, else 1 / (1 + e^-x)."""
    xb, xo, yb, yo, n = a
    R = _R
    for i in range(n):
        v = _f(xb, xo + 4 * i)
        if v > _LOGISTIC_UPPER:
            out = 1.0
        elif v < _LOGISTIC_LOWER:
            out = exp_f32(v)
        else:
            R[0] = 1.0 + exp_f32(-v)
            R[0] = 1.0 / R[0]
            out = R[0]
        _put(yb, yo + 4 * i, out)


def tanh_f32(a):
    """TANH: sign(x) (1 - 2 / (e^(2|x|) + 1))."""
    xb, xo, yb, yo, n = a
    R = _R
    for i in range(n):
        v = _f(xb, xo + 4 * i)
        m = -v if v < 0 else v
        R[0] = exp_f32(m + m) + 1.0
        R[0] = 2.0 / R[0]
        R[0] = 1.0 - R[0]
        _put(yb, yo + 4 * i, -R[0] if v < 0 else R[0])


def pad_f32(a):
    """PAD with zeros: the output is zeroed, then each input row copied into place."""
    xb, xo, yb, yo, xd, yd, before = a
    for i in range(4 * yd[0] * yd[1] * yd[2] * yd[3]):
        yb[yo + i] = 0
    row = 4 * xd[3]
    p = xo
    for i0 in range(xd[0]):
        for i1 in range(xd[1]):
            for i2 in range(xd[2]):
                q = yo + 4 * ((((i0 + before[0]) * yd[1] + i1 + before[1]) * yd[2] + i2
                               + before[2]) * yd[3] + before[3])
                yb[q:q + row] = xb[p:p + row]
                p += row


def mean_f32(a):
    """MEAN over height and width: the sum in row-major order / (h * w)."""
    xb, xo, n, h, w, c, yb, yo = a
    R = _R
    y = yo
    for b in range(n):
        for ch in range(c):
            R[1] = 0.0
            p = xo + 4 * (b * h * w * c + ch)
            for _ in range(h * w):
                R[1] += _f(xb, p)
                p += 4 * c
            R[1] = R[1] / (h * w)
            _put(yb, y, R[1])
            y += 4


def nothing(a):
    pass


# ------------------------------------------------------------------ nn.graph's arguments


def operator(model, g, k):
    """(kernel name, argument tuple, MACs) of float operator k; model._loc gives
    (buffer, offset) of a tensor."""
    op = g[F.G_OPS][k]
    kind, p = op[F.O_KIND], op[F.O_PARAMS]
    ts = g[F.G_TENSORS]
    ins = [ts[i] if i != F.NO_INDEX else None for i in op[F.O_INPUTS]]  # type: list
    x, y = ins[0], ts[op[F.O_OUTPUT]]
    xb, xo = model._loc(x)
    yb, yo = model._loc(y)
    if kind == F.CONV_2D or kind == F.DEPTHWISE_CONV_2D:
        w = ins[1]
        bb, bo = model._loc(ins[2]) if len(ins) > 2 and ins[2] is not None else (None, 0)
        n, h, wd, cin = x[F.T_SHAPE]
        _, kh, kw, _ = w[F.T_SHAPE]
        _, oh, ow, cout = y[F.T_SHAPE]
        dw = kind == F.DEPTHWISE_CONV_2D
        return "conv_2d_f32", (
            xb, xo, n, h, wd, cin, model._buf, w[F.T_OFFSET], kh, kw, bb, bo, yb, yo, oh, ow,
            cout, p[F.P_CONV_STRIDE_H], p[F.P_CONV_STRIDE_W], p[F.P_CONV_PAD_TOP],
            p[F.P_CONV_PAD_LEFT], p[F.P_DEPTH_MULTIPLIER], dw, _bits(p[F.P_CONV_ACT_MIN]),
            _bits(p[F.P_CONV_ACT_MAX])), y[F.T_SIZE] * kh * kw * (1 if dw else cin)
    if kind == F.FULLY_CONNECTED:
        w = ins[1]
        bb, bo = model._loc(ins[2]) if len(ins) > 2 and ins[2] is not None else (None, 0)
        cout, depth = w[F.T_SHAPE]
        return "fully_connected_f32", (
            xb, xo, y[F.T_SIZE] // cout, depth, model._buf, w[F.T_OFFSET], bb, bo, yb, yo,
            cout, _bits(p[F.P_FC_ACT_MIN]), _bits(p[F.P_FC_ACT_MAX])), y[F.T_SIZE] * depth
    if kind == F.AVERAGE_POOL_2D or kind == F.MAX_POOL_2D:
        n, h, wd, c = x[F.T_SHAPE]
        return "pool_f32", (
            xb, xo, n, h, wd, c, yb, yo, y[F.T_SHAPE][1], y[F.T_SHAPE][2],
            p[F.P_POOL_FILTER_H], p[F.P_POOL_FILTER_W], p[F.P_POOL_STRIDE_H],
            p[F.P_POOL_STRIDE_W], p[F.P_POOL_PAD_TOP], p[F.P_POOL_PAD_LEFT],
            _bits(p[F.P_POOL_ACT_MIN]), _bits(p[F.P_POOL_ACT_MAX]),
            kind == F.AVERAGE_POOL_2D), 0
    if kind == F.ADD:
        bb, bo = model._loc(ins[1])
        return "add_f32", (xb, xo, bb, bo, yb, yo, _four(y[F.T_SHAPE]), _strides(x[F.T_SHAPE]),
                           _strides(ins[1][F.T_SHAPE]), _bits(p[F.P_ADD_ACT_MIN]),
                           _bits(p[F.P_ADD_ACT_MAX])), 0
    if kind == F.SOFTMAX:
        depth = x[F.T_SHAPE][-1]
        return "softmax_f32", (xb, xo, yb, yo, x[F.T_SIZE] // depth, depth,
                               _bits(p[F.P_SOFTMAX_BETA])), 0
    if kind == F.PAD:
        r = len(x[F.T_SHAPE])
        pads = struct.unpack_from("<%di" % (2 * r), model._buf, ins[1][F.T_OFFSET])
        before = (0,) * (4 - r) + tuple(pads[2 * i] for i in range(r))
        return "pad_f32", (xb, xo, yb, yo, _four(x[F.T_SHAPE]), _four(y[F.T_SHAPE]), before), 0
    if kind == F.MEAN:
        n, h, wd, c = x[F.T_SHAPE]
        return "mean_f32", (xb, xo, n, h, wd, c, yb, yo), 0
    if kind == F.LOGISTIC:
        return "logistic_f32", (xb, xo, yb, yo, y[F.T_SIZE]), 0
    if kind == F.TANH:
        return "tanh_f32", (xb, xo, yb, yo, y[F.T_SIZE]), 0
    return "nothing", (), 0  # RESHAPE: the output shares the input's bytes


def _four(shape):
    return (1,) * (4 - len(shape)) + tuple(shape)


def _strides(shape):
    # element strides of a shape as four dims; 0 along dims of 1 (broadcast)
    d = _four(shape)
    s = [0, 0, 0, 1]
    for i in (2, 1, 0):
        s[i] = s[i + 1] * d[i + 1]
    return tuple(0 if d[i] == 1 else s[i] for i in range(4))


# ------------------------------------------------------------------ load-time checks
# piconn.float_ops' rules; each returns the named params the file must store.


def _t(g, k, j, rank=None):
    # input j (-1: the output), float32 without quantization
    if j < 0:
        t = g[F.G_TENSORS][g[F.G_OPS][k][F.O_OUTPUT]]
    else:
        t = P._tensor(g, k, j)
        if t is None:
            raise P._fail(g, k, "input %d is missing" % j)
    role = "output" if j < 0 else "input %d" % j
    if t[F.T_DTYPE] != F.F32:
        raise P._fail(g, k, "%s is %s; a float32 operator takes float32"
                            % (role, F.DTYPE_NAMES[t[F.T_DTYPE]]))
    if t[F.T_QUANT] != F.QUANT_NONE:
        raise P._fail(g, k, "%s is float32 with quantization" % role)
    if rank is not None and len(t[F.T_SHAPE]) != rank:
        raise P._fail(g, k, "%s has shape %s; expected %d-D" % (role, list(t[F.T_SHAPE]), rank))
    return t


def _finite(buf, g, k, j, shape, what):
    t = P._tensor(g, k, j)
    if t is None or t[F.T_STORAGE] != F.STORAGE_CONSTANT or t[F.T_DTYPE] != F.F32 \
            or t[F.T_QUANT] != F.QUANT_NONE:
        raise P._fail(g, k, "the %s must be a constant float32 tensor" % what)
    if shape is not None and t[F.T_SHAPE] != shape:
        raise P._fail(g, k, "the %s %s must be %s" % (what, list(t[F.T_SHAPE]), list(shape)))
    o = t[F.T_OFFSET]
    for i in range(t[F.T_SIZE]):  # exponent all ones: inf or NaN
        if buf[o + 4 * i + 3] & 0x7F == 0x7F and buf[o + 4 * i + 2] & 0x80:
            raise P._fail(g, k, "the %s hold NaN or infinity" % what)
    return t


def _clamp_bits(act):
    if act == F.ACT_RELU:
        return 0, _F32_MAX
    if act == F.ACT_RELU6:
        return 0, _F32_SIX
    return _F32_LOWEST, _F32_MAX


def _signed(u):
    return u - 0x100000000 if u & 0x80000000 else u


def _conv(buf, g, k):
    P._counts(g, k, 2, 3)
    x, y = _t(g, k, 0, 4), _t(g, k, -1, 4)
    p = g[F.G_OPS][k][F.O_PARAMS]
    xs, ys = x[F.T_SHAPE], y[F.T_SHAPE]
    dw = g[F.G_OPS][k][F.O_KIND] == F.DEPTHWISE_CONV_2D
    dm = p[F.P_DEPTH_MULTIPLIER] if dw else 1
    w = _finite(buf, g, k, 1, None, "weights")
    ws = w[F.T_SHAPE]
    if dw and (dm < 1 or ys[3] != xs[3] * dm or len(ws) != 4 or ws[0] != 1 or ws[3] != ys[3]):
        raise P._fail(g, k, "weights %s, input %s and depth multiplier %d do not fit the output"
                            " %s" % (list(ws), list(xs), dm, list(ys)))
    if not dw and (len(ws) != 4 or ws[0] != ys[3] or ws[3] != xs[3]):
        raise P._fail(g, k, "weights %s must be [%d, kh, kw, %d]" % (list(ws), ys[3], xs[3]))
    if P._tensor(g, k, 2) is not None:
        _finite(buf, g, k, 2, (ys[3],), "bias")
    pt, pl = P._spatial(g, k, x, y, ws[1], ws[2], p[F.P_PADDING], p[F.P_CONV_STRIDE_H],
                        p[F.P_CONV_STRIDE_W])
    lo, hi = _clamp_bits(p[F.P_ACTIVATION])
    return (p[F.P_PADDING], p[F.P_ACTIVATION], p[F.P_CONV_STRIDE_H], p[F.P_CONV_STRIDE_W],
            pt, pl, dm, 0, 0, _signed(lo), _signed(hi))


def _fully_connected(buf, g, k):
    P._counts(g, k, 2, 3)
    x, y = _t(g, k, 0), _t(g, k, -1)
    p = g[F.G_OPS][k][F.O_PARAMS]
    if not y[F.T_SHAPE]:
        raise P._fail(g, k, "the output must have at least one dimension")
    cout = y[F.T_SHAPE][-1]
    w = _finite(buf, g, k, 1, None, "weights")
    ws = w[F.T_SHAPE]
    if len(ws) != 2 or ws[0] != cout or ws[1] == 0 or cout == 0 \
            or x[F.T_SIZE] != y[F.T_SIZE] // cout * ws[1]:
        raise P._fail(g, k, "weights %s do not fit input %s and output %s"
                            % (list(ws), list(x[F.T_SHAPE]), list(y[F.T_SHAPE])))
    if P._tensor(g, k, 2) is not None:
        _finite(buf, g, k, 2, (cout,), "bias")
    lo, hi = _clamp_bits(p[F.P_FC_ACTIVATION])
    return (p[F.P_FC_ACTIVATION], 1 if p[F.P_FC_KEEP_NUM_DIMS] else 0, 0, 0, _signed(lo),
            _signed(hi))


def _pool(buf, g, k):
    P._counts(g, k, 1, 1)
    x, y = _t(g, k, 0, 4), _t(g, k, -1, 4)
    p = g[F.G_OPS][k][F.O_PARAMS]
    if y[F.T_SHAPE][3] != x[F.T_SHAPE][3]:
        raise P._fail(g, k, "a pool keeps the number of channels")
    fh, fw = p[F.P_POOL_FILTER_H], p[F.P_POOL_FILTER_W]
    pt, pl = P._spatial(g, k, x, y, fh, fw, p[F.P_PADDING], p[F.P_POOL_STRIDE_H],
                        p[F.P_POOL_STRIDE_W])
    lo, hi = _clamp_bits(p[F.P_ACTIVATION])
    return (p[F.P_PADDING], p[F.P_ACTIVATION], fh, fw, p[F.P_POOL_STRIDE_H],
            p[F.P_POOL_STRIDE_W], pt, pl, _signed(lo), _signed(hi))


def _add(buf, g, k):
    P._counts(g, k, 2, 2)
    a, b, y = _t(g, k, 0), _t(g, k, 1), _t(g, k, -1)
    if P.broadcast_shape(a[F.T_SHAPE], b[F.T_SHAPE]) != y[F.T_SHAPE] or len(y[F.T_SHAPE]) > 4:
        raise P._fail(g, k, "shapes %s + %s do not broadcast to the output %s"
                            % (list(a[F.T_SHAPE]), list(b[F.T_SHAPE]), list(y[F.T_SHAPE])))
    act = g[F.G_OPS][k][F.O_PARAMS][F.P_ADD_ACTIVATION]
    lo, hi = _clamp_bits(act)
    return (act, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, _signed(lo), _signed(hi))


def _same_shape(g, k):
    P._counts(g, k, 1, 1)
    x, y = _t(g, k, 0), _t(g, k, -1)
    if x[F.T_SHAPE] != y[F.T_SHAPE]:
        raise P._fail(g, k, "input and output shapes must be equal")
    return x


def _softmax(buf, g, k):
    x = _same_shape(g, k)
    beta = g[F.G_OPS][k][F.O_PARAMS][F.P_SOFTMAX_BETA] & 0xFFFFFFFF
    if not x[F.T_SHAPE] or x[F.T_SHAPE][-1] < 1:
        raise P._fail(g, k, "softmax over an empty last dimension")
    if beta == 0 or beta >= 0x7F800000:  # <= 0, infinite or NaN
        raise P._fail(g, k, "beta must be finite and > 0")
    return (_signed(beta), 0, 0, 0)


def _elementwise(buf, g, k):
    _same_shape(g, k)
    return (0, 0, 0, 0)


def _mean(buf, g, k):
    P._counts(g, k, 2, 2)
    x, y = _t(g, k, 0, 4), _t(g, k, -1)
    axes = P._i32s(buf, P._constant(g, k, 1, F.I32))
    if len(axes) != 2 or sorted(a % 4 for a in axes) != [1, 2] or not all(
            -4 <= a < 4 for a in axes):
        raise P._fail(g, k, "MEAN over axes %s; supported: height and width (1, 2)"
                            % list(axes))
    n, h, w, c = x[F.T_SHAPE]
    keep = 1 if g[F.G_OPS][k][F.O_PARAMS][F.P_MEAN_KEEP_DIMS] else 0
    want = (n, 1, 1, c) if keep else (n, c)
    if y[F.T_SHAPE] != want or h * w == 0:
        raise P._fail(g, k, "output shape %s, expected %s" % (list(y[F.T_SHAPE]), list(want)))
    return (keep, 0, 0, 0, 0)


def _pad(buf, g, k):
    P._counts(g, k, 2, 2)
    x, y = _t(g, k, 0), _t(g, k, -1)
    pads = P._constant(g, k, 1, F.I32)
    xs = x[F.T_SHAPE]
    v = P._i32s(buf, pads)
    if pads[F.T_SHAPE] != (len(xs), 2) or not 1 <= len(xs) <= 4 or any(e < 0 for e in v):
        raise P._fail(g, k, "paddings must be [%d, 2] and non-negative" % len(xs))
    want = tuple(xs[i] + v[2 * i] + v[2 * i + 1] for i in range(len(xs)))
    if y[F.T_SHAPE] != want:
        raise P._fail(g, k, "output shape %s, expected %s" % (list(y[F.T_SHAPE]), list(want)))
    return (0,)


def _reshape(buf, g, k):
    P._counts(g, k, 1, 2)
    x, y = _t(g, k, 0), _t(g, k, -1)
    if x[F.T_SIZE] != y[F.T_SIZE]:
        raise P._fail(g, k, "%s and %s hold different numbers of elements"
                            % (list(x[F.T_SHAPE]), list(y[F.T_SHAPE])))
    return ()


def _none(buf, g, k):
    raise P._fail(g, k, "has no float32 version (its output must not be float32)")


# per kind code below QUANTIZE (FORMAT.md): (buf, graph, operator index) -> named params
_CHECKS = (_none, _conv, _conv, _fully_connected, _pool, _pool, _add, _reshape, _softmax,
           _pad, _mean, _elementwise, _elementwise)


def check(buf, g, k):
    """The named params float operator k must store; ValueError if it breaks a rule."""
    return _CHECKS[g[F.G_OPS][k][F.O_KIND]](buf, g, k)
