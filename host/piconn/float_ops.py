"""The float32 operators of a `Graph`: their rules and TensorFlow Lite Micro's float kernels.

An operator whose output is float32 (other than DEQUANTIZE, the int8 -> float32 edge) is
a float operator: CONV_2D, DEPTHWISE_CONV_2D, FULLY_CONNECTED, AVERAGE_POOL_2D,
MAX_POOL_2D, ADD, RESHAPE, SOFTMAX, PAD, MEAN (height and width), LOGISTIC and TANH on
float32 tensors without quantization, with float32 weights and biases. `int8_ops.prepare`
and `int8_ops.run` hand such operators to `prepare_op` and `run_op` here.

The kernels are TensorFlow Lite Micro's float reference kernels (`reference/conv.h`,
`depthwiseconv_float.h`, `fully_connected.h`, `pooling.h`, `add.h`, `pad.h`,
`reduce.h`, `softmax.h`, `logistic.h`) with every sum in float32 in the kernel's order,
so that a C kernel built without contraction (`-ffp-contract=off`) gets the same bits:

- convolution: `total = 0; for filter_y, filter_x, in_channel: total += x * w` (taps
  outside the image skipped), then `total + bias`, then the clamp of the activation;
- depthwise: the same over filter_y, filter_x; fully connected: over the depth;
- average pool: the sum over the taps inside the image, divided by their count; max pool:
  the maximum; MEAN: the sum in row-major order (h, w) divided by h * w;
- ADD: `x1 + x2` (broadcast), clamped.

SOFTMAX, LOGISTIC and TANH need exp. TensorFlow Lite Micro calls the C library's `expf`
and `tanhf`, whose last bit differs between C libraries, so piconn uses its own `expf`
(`exp_f32` below: Cody-Waite range reduction and a degree-7 polynomial, every step a
float32 operation) on the host and in every device tier alike; these three operators
agree with TensorFlow Lite Micro to about 1e-6 (tests/test_float_ops.py) and bit for
bit between piconn's host and device kernels.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import graph as g

F32 = np.float32
FLT_MAX = float(np.finfo(np.float32).max)

# exp_f32's constants (float32): log2(e), ln 2 split in a part whose products with
# |k| < 2^8 are exact and the rest, the Taylor coefficients 1/n! (n <= 7) of e^r for |r| <= ln2/2.
LOG2E = F32(1.44269504)
LN2_HI = F32(0.693359375)
LN2_LO = F32(-2.12194440e-4)
EXP_POLY = tuple(F32(c) for c in (1 / 5040, 1 / 720, 1 / 120, 1 / 24, 1 / 6, 1 / 2, 1.0, 1.0))
EXP_MIN = F32(-87.0)  # below: 0 (no subnormal results)
EXP_MAX = F32(88.0)  # above: +inf
LOGISTIC_UPPER = F32(16.619047164916992188)  # TFLite Micro's cutoffs
LOGISTIC_LOWER = F32(-9.0)


@dataclass
class FloatParams:
    """What a float kernel needs beyond its tensors (prepared once, stored in the file)."""

    act_min: float = -FLT_MAX  # the fused activation as a clamp (float32 values)
    act_max: float = FLT_MAX
    stride_h: int = 1
    stride_w: int = 1
    pad_top: int = 0
    pad_left: int = 0
    filter_h: int = 1
    filter_w: int = 1
    depth_multiplier: int = 1
    beta: float = 1.0
    out_h: int = 0
    out_w: int = 0


def is_float(graph: g.Graph, index: int) -> bool:
    """Whether operator `index` is a float32 operator (its output is float32 and it is not
    DEQUANTIZE)."""
    op = graph.operators[index]
    if op.kind == g.DEQUANTIZE or not op.outputs:
        return False
    out = op.outputs[0]
    return 0 <= out < len(graph.tensors) and graph.tensors[out].dtype == g.FLOAT32


def activation_range(activation: str) -> tuple[float, float]:
    """CalculateActivationRange for float: (lowest, max), (0, max) or (0, 6)."""
    if activation == g.ACT_RELU:
        return 0.0, FLT_MAX
    if activation == g.ACT_RELU6:
        return 0.0, 6.0
    if activation == g.ACT_NONE:
        return -FLT_MAX, FLT_MAX
    raise ValueError(f"unknown activation {activation!r}")


# --------------------------------------------------------------------------- checks


def _expect(o, k: int, rank: int | None = None) -> g.Tensor:
    t = o.tensor(k) if k >= 0 else o.graph.tensors[o.op.outputs[0]]
    role = f"input {k}" if k >= 0 else "output"
    if t is None:
        raise o.fail(f"{role} is missing")
    if t.dtype != g.FLOAT32:
        raise o.fail(f"{role} {t.name!r} is {t.dtype}; a float32 operator takes float32")
    if t.quant is not None:
        raise o.fail(f"{role} {t.name!r} is float32 with quantization")
    if rank is not None and len(t.shape) != rank:
        raise o.fail(f"{role} {t.name!r} has shape {list(t.shape)}; expected {rank}-D")
    return t


def _finite_constant(o, k: int, shape: tuple[int, ...] | None, what: str) -> g.Tensor:
    t = o.tensor(k)
    if t is None or not t.is_constant or t.dtype != g.FLOAT32 or t.quant is not None:
        raise o.fail(f"the {what} must be a constant float32 tensor")
    if shape is not None and t.shape != shape:
        raise o.fail(f"the {what} {list(t.shape)} must be {list(shape)}")
    if not np.all(np.isfinite(t.data)):
        raise o.fail(f"the {what} hold NaN or infinity")
    return t


def _bias(o, c_out: int) -> None:
    if o.tensor(2) is not None:
        _finite_constant(o, 2, (c_out,), "bias")


def _out_size(padding: str, size: int, filt: int, stride: int) -> int:
    if padding == g.SAME:
        return (size + stride - 1) // stride
    return (size - filt + stride) // stride


def _window(o, x: g.Tensor, y: g.Tensor, kh: int, kw: int, opt) -> FloatParams:
    """A window's params (the int8 kernels' rules: output size, SAME's top/left pad)."""
    if min(opt.stride_h, opt.stride_w, kh, kw) < 1:
        raise o.fail(f"strides {opt.stride_h}x{opt.stride_w} and window {kh}x{kw} must be at"
                     " least 1")
    _, h, w, _ = x.shape
    out_h = _out_size(opt.padding, h, kh, opt.stride_h)
    out_w = _out_size(opt.padding, w, kw, opt.stride_w)
    if out_h < 1 or out_w < 1 or y.shape[1:3] != (out_h, out_w) or y.shape[0] != x.shape[0]:
        raise o.fail(f"output shape {list(y.shape)} does not match the input {list(x.shape)},"
                     f" a {kh}x{kw} window, strides {opt.stride_h}x{opt.stride_w} and"
                     f" {opt.padding.upper()} padding")
    lo, hi = activation_range(opt.activation)
    return FloatParams(lo, hi, opt.stride_h, opt.stride_w,
                       max((out_h - 1) * opt.stride_h + kh - h, 0) // 2,
                       max((out_w - 1) * opt.stride_w + kw - w, 0) // 2,
                       kh, kw, out_h=out_h, out_w=out_w)


def _conv(o) -> FloatParams:
    o.counts((2, 3))
    x, y = _expect(o, 0, 4), _expect(o, -1, 4)
    opt = o.options(g.ConvOptions)
    w = _finite_constant(o, 1, None, "weights")
    if len(w.shape) != 4 or w.shape[0] != y.shape[3] or w.shape[3] != x.shape[3]:
        raise o.fail(f"weights {list(w.shape)} must be [{y.shape[3]}, kh, kw, {x.shape[3]}]"
                     " (grouped convolutions are not supported)")
    _bias(o, y.shape[3])
    return _window(o, x, y, w.shape[1], w.shape[2], opt)


def _depthwise(o) -> FloatParams:
    o.counts((2, 3))
    x, y = _expect(o, 0, 4), _expect(o, -1, 4)
    opt = o.options(g.DepthwiseOptions)
    c_out = x.shape[3] * opt.depth_multiplier
    if opt.depth_multiplier < 1 or y.shape[3] != c_out:
        raise o.fail(f"output channels {y.shape[3]} != input channels {x.shape[3]} x depth"
                     f" multiplier {opt.depth_multiplier}")
    w = _finite_constant(o, 1, None, "weights")
    if len(w.shape) != 4 or w.shape[0] != 1 or w.shape[3] != c_out:
        raise o.fail(f"weights {list(w.shape)} must be [1, kh, kw, {c_out}]")
    _bias(o, c_out)
    p = _window(o, x, y, w.shape[1], w.shape[2], opt)
    p.depth_multiplier = opt.depth_multiplier
    return p


def _fully_connected(o) -> FloatParams:
    o.counts((2, 3))
    x, y = _expect(o, 0), _expect(o, -1)
    if len(y.shape) < 1:
        raise o.fail("the output must have at least one dimension")
    c_out = y.shape[-1]
    w = _finite_constant(o, 1, None, "weights")
    if len(w.shape) != 2 or w.shape[0] != c_out:
        raise o.fail(f"weights {list(w.shape)} must be [{c_out}, depth]")
    depth = w.shape[1]
    if depth == 0 or c_out == 0 or x.size != (y.size // c_out) * depth:
        raise o.fail(f"input {list(x.shape)} is not a whole number of rows of {depth}"
                     f" for output {list(y.shape)}")
    _bias(o, c_out)
    lo, hi = activation_range(o.options(g.FullyConnectedOptions).activation)
    return FloatParams(lo, hi)


def _pool(o) -> FloatParams:
    o.counts((1,))
    x, y = _expect(o, 0, 4), _expect(o, -1, 4)
    opt = o.options(g.PoolOptions)
    if y.shape[3] != x.shape[3]:
        raise o.fail("a pool keeps the number of channels")
    return _window(o, x, y, opt.filter_h, opt.filter_w, opt)


def _add(o) -> FloatParams:
    o.counts((2,))
    a, b, y = _expect(o, 0), _expect(o, 1), _expect(o, -1)
    try:
        shape = np.broadcast_shapes(a.shape, b.shape)
    except ValueError:
        shape = None
    if shape != y.shape or len(y.shape) > 4:
        raise o.fail(f"shapes {list(a.shape)} + {list(b.shape)} do not broadcast to the output"
                     f" {list(y.shape)} (at most 4-D)")
    lo, hi = activation_range(o.options(g.AddOptions).activation)
    return FloatParams(lo, hi)


def _same_shape(o) -> tuple[g.Tensor, g.Tensor]:
    o.counts((1,))
    x, y = _expect(o, 0), _expect(o, -1)
    if x.shape != y.shape:
        raise o.fail("input and output shapes must be equal")
    return x, y


def _softmax(o) -> FloatParams:
    x, _ = _same_shape(o)
    if len(x.shape) < 1 or x.shape[-1] < 1:
        raise o.fail("softmax over an empty last dimension")
    beta = float(np.float32(o.options(g.SoftmaxOptions).beta))
    if not np.isfinite(beta) or beta <= 0:
        raise o.fail(f"softmax beta {beta} must be finite and positive")
    return FloatParams(beta=beta)


def _elementwise(o) -> FloatParams:
    _same_shape(o)
    return FloatParams()


def _mean(o) -> FloatParams:
    o.counts((2,))
    x, y = _expect(o, 0, 4), _expect(o, -1)
    axes = o.constant(1, g.INT32).reshape(-1)
    if (len(axes) != 2 or sorted(int(a) % 4 for a in axes) != [1, 2]
            or not all(-4 <= a < 4 for a in axes)):
        raise o.fail(f"MEAN over axes {list(axes)}; supported: height and width (1, 2)")
    n, h, w, c = x.shape
    want = (n, 1, 1, c) if o.options(g.MeanOptions).keep_dims else (n, c)
    if y.shape != want:
        raise o.fail(f"output shape {list(y.shape)}, expected {list(want)}")
    if h * w == 0:
        raise o.fail("MEAN over an empty window")
    return FloatParams()


def _pad(o) -> FloatParams:
    o.counts((2,))
    x, y = _expect(o, 0), _expect(o, -1)
    pads = o.constant(1, g.INT32)
    if pads.shape != (len(x.shape), 2) or not 1 <= len(x.shape) <= 4 or np.any(pads < 0):
        raise o.fail(f"paddings {pads.tolist()} must be [{len(x.shape)}, 2], non-negative,"
                     " for 1 to 4 dimensions")
    want = tuple(int(d + a + b) for d, (a, b) in zip(x.shape, pads))
    if y.shape != want:
        raise o.fail(f"output shape {list(y.shape)}, expected {list(want)}")
    return FloatParams()


def _reshape(o) -> FloatParams:
    if len(o.op.inputs) not in (1, 2) or len(o.op.outputs) != 1:
        raise o.fail("takes 1 or 2 inputs and 1 output")
    x, y = _expect(o, 0), _expect(o, -1)
    if x.size != y.size:
        raise o.fail(f"{list(x.shape)} and {list(y.shape)} hold different numbers of elements")
    return FloatParams()


def _not_float(o) -> FloatParams:
    raise o.fail("has no float32 version (its output must not be float32)")


PREPARE = {
    g.ADD: _add,
    g.AVERAGE_POOL_2D: _pool,
    g.CONV_2D: _conv,
    g.DEPTHWISE_CONV_2D: _depthwise,
    g.FULLY_CONNECTED: _fully_connected,
    g.LOGISTIC: _elementwise,
    g.MAX_POOL_2D: _pool,
    g.MEAN: _mean,
    g.PAD: _pad,
    g.QUANTIZE: _not_float,
    g.RESHAPE: _reshape,
    g.SOFTMAX: _softmax,
    g.TANH: _elementwise,
}


def prepare_op(o) -> FloatParams:
    """Check float operator `o` (an `int8_ops._Op`) and compute its parameters."""
    return PREPARE.get(o.op.kind, _not_float)(o)


# --------------------------------------------------------------------------- kernels


def _clamp(v: np.ndarray, p: FloatParams) -> np.ndarray:
    # ActivationFunctionWithMinMax: min(max(v, lo), hi)
    return np.minimum(np.maximum(v, F32(p.act_min)), F32(p.act_max))


def _padded(x: np.ndarray, top: int, left: int, h_need: int, w_need: int) -> np.ndarray:
    """x [N, H, W, C] with zero rows/columns around it, so every tap is in range (an
    outside tap then adds x * w = 0 * w, which leaves a float32 sum unchanged: the sum
    starts at +0 and never becomes -0)."""
    n, h, w, c = x.shape
    out = np.zeros((n, max(h_need, top + h), max(w_need, left + w), c), F32)
    out[:, top:top + h, left:left + w] = x
    return out


def _taps(x: np.ndarray, p: FloatParams, kh: int, kw: int):
    """For each tap (fy, fx): the input pixels [N, out_h, out_w, C] it reads."""
    oh, ow = p.out_h, p.out_w
    need_h = (oh - 1) * p.stride_h + kh
    need_w = (ow - 1) * p.stride_w + kw
    xp = _padded(x, p.pad_top, p.pad_left, need_h, need_w)
    for fy in range(kh):
        for fx in range(kw):
            yield fy, fx, xp[:, fy:fy + (oh - 1) * p.stride_h + 1:p.stride_h,
                             fx:fx + (ow - 1) * p.stride_w + 1:p.stride_w]


def conv2d(x: np.ndarray, w: np.ndarray, bias: np.ndarray | None, p: FloatParams) -> np.ndarray:
    """CONV_2D: x [N, H, W, Cin], w [Cout, kh, kw, Cin] -> [N, oh, ow, Cout]."""
    c_out, kh, kw, c_in = w.shape
    total = np.zeros((x.shape[0], p.out_h, p.out_w, c_out), F32)
    for fy, fx, xs in _taps(x, p, kh, kw):
        for ci in range(c_in):
            total += xs[..., ci:ci + 1] * w[:, fy, fx, ci]
    if bias is not None:
        total += bias
    return _clamp(total, p)


def depthwise_conv2d(x: np.ndarray, w: np.ndarray, bias: np.ndarray | None, p: FloatParams
                     ) -> np.ndarray:
    """DEPTHWISE_CONV_2D: w [1, kh, kw, C*M]; output channel c reads input c // M."""
    _, kh, kw, c_out = w.shape
    total = np.zeros((x.shape[0], p.out_h, p.out_w, c_out), F32)
    for fy, fx, xs in _taps(x, p, kh, kw):
        total += np.repeat(xs, p.depth_multiplier, axis=3) * w[0, fy, fx]
    if bias is not None:
        total += bias
    return _clamp(total, p)


def fully_connected(x: np.ndarray, w: np.ndarray, bias: np.ndarray | None, p: FloatParams
                    ) -> np.ndarray:
    """FULLY_CONNECTED: x [rows, depth], w [Cout, depth] -> [rows, Cout]."""
    total = np.zeros((x.shape[0], w.shape[0]), F32)
    for d in range(w.shape[1]):
        total += x[:, d:d + 1] * w[:, d]
    if bias is not None:
        total += bias
    return _clamp(total, p)


def average_pool(x: np.ndarray, p: FloatParams) -> np.ndarray:
    """AVERAGE_POOL_2D: the sum of the taps inside the image / their count."""
    ones = np.ones((1, *x.shape[1:3], 1), F32)
    total = np.zeros((x.shape[0], p.out_h, p.out_w, x.shape[3]), F32)
    count = np.zeros((1, p.out_h, p.out_w, 1), F32)
    for (_, _, xs), (_, _, ms) in zip(_taps(x, p, p.filter_h, p.filter_w),
                                      _taps(ones, p, p.filter_h, p.filter_w)):
        total += xs
        count += ms
    return _clamp(total / count, p)


def max_pool(x: np.ndarray, p: FloatParams) -> np.ndarray:
    """MAX_POOL_2D: the maximum of the taps inside the image (from float lowest)."""
    lowest = F32(-FLT_MAX)
    ones = np.ones((1, *x.shape[1:3], 1), bool)
    best = np.full((x.shape[0], p.out_h, p.out_w, x.shape[3]), lowest, F32)
    for (_, _, xs), (_, _, ms) in zip(_taps(x, p, p.filter_h, p.filter_w),
                                      _taps(ones.astype(F32), p, p.filter_h, p.filter_w)):
        best = np.where(ms > 0, np.maximum(best, xs), best)
    return _clamp(best, p)


def add(x1: np.ndarray, x2: np.ndarray, p: FloatParams) -> np.ndarray:
    return _clamp(x1 + x2, p)


def pad(x: np.ndarray, pads: np.ndarray) -> np.ndarray:
    return np.pad(x, [(int(a), int(b)) for a, b in pads]).astype(F32)


def mean_hw(x: np.ndarray) -> np.ndarray:
    """MEAN over height and width: the sum in row-major order / (h * w), as [N, C]."""
    n, h, w, c = x.shape
    total = np.zeros((n, c), F32)
    for i in range(h):
        for j in range(w):
            total += x[:, i, j]
    return total / F32(h * w)


def exp_f32(x: np.ndarray) -> np.ndarray:
    """e^x in float32 operations (the device kernels compute the same bits):
    k = trunc(x log2e +- 1/2), r = (x - k ln2_hi) - k ln2_lo, e^r by Horner's rule,
    times 2^k by its exponent bits; 0 below EXP_MIN, inf above EXP_MAX."""
    x = np.asarray(x, F32)
    half = np.where(x < 0, F32(-0.5), F32(0.5)).astype(F32)
    k = np.trunc(x * LOG2E + half).astype(F32)
    k = np.clip(k, -126, 127)
    r = (x - k * LN2_HI) - k * LN2_LO
    e = np.full_like(x, EXP_POLY[0])
    for c in EXP_POLY[1:]:
        e = e * r + c
    scale = ((k.astype(np.int32) + 127) << 23).view(F32)
    with np.errstate(over="ignore"):
        y = e * scale
    y = np.where(x < EXP_MIN, F32(0), y)
    return np.where(x > EXP_MAX, F32(np.inf), y).astype(F32)


def softmax(x: np.ndarray, p: FloatParams) -> np.ndarray:
    """reference_ops::Softmax: per row, exp((x - max) * beta) / their sum (summed in order)."""
    rows = x.reshape(-1, x.shape[-1])
    top = rows.max(axis=1, keepdims=True)
    e = exp_f32((rows - top) * F32(p.beta))
    total = np.zeros((rows.shape[0], 1), F32)
    for c in range(rows.shape[1]):
        total += e[:, c:c + 1]
    return (e / total).reshape(x.shape)


def logistic(x: np.ndarray) -> np.ndarray:
    """reference_ops::Logistic: 1 past the upper cutoff, e^x below the lower one, else
    1 / (1 + e^-x)."""
    x = np.asarray(x, F32)
    mid = F32(1) / (F32(1) + exp_f32(-x))
    y = np.where(x < LOGISTIC_LOWER, exp_f32(x), mid)
    return np.where(x > LOGISTIC_UPPER, F32(1), y).astype(F32)


def tanh(x: np.ndarray) -> np.ndarray:
    """tanh(x) = sign(x) (1 - 2 / (e^(2|x|) + 1)) with exp_f32 (e^(2|x|) is inf past 44,
    giving exactly 1)."""
    x = np.asarray(x, F32)
    a = np.abs(x)
    e = exp_f32(a + a)
    y = F32(1) - F32(2) / (e + F32(1))
    return np.where(x < 0, -y, y).astype(F32)


def run_op(kind: str, p: FloatParams, args: list, out: g.Tensor) -> np.ndarray:
    """Run one float operator on its input arrays (None for an absent bias)."""
    x = args[0]
    bias = args[2] if len(args) > 2 else None
    with np.errstate(over="ignore", invalid="ignore"):
        if kind == g.CONV_2D:
            return conv2d(x, args[1], bias, p)
        if kind == g.DEPTHWISE_CONV_2D:
            return depthwise_conv2d(x, args[1], bias, p)
        if kind == g.FULLY_CONNECTED:
            depth = args[1].shape[1]
            return fully_connected(x.reshape(-1, depth), args[1], bias, p).reshape(out.shape)
        if kind == g.AVERAGE_POOL_2D:
            return average_pool(x, p)
        if kind == g.MAX_POOL_2D:
            return max_pool(x, p)
        if kind == g.ADD:
            return add(x, args[1], p)
        if kind == g.SOFTMAX:
            return softmax(x, p)
        if kind == g.LOGISTIC:
            return logistic(x)
        if kind == g.TANH:
            return tanh(x)
        if kind == g.MEAN:
            return mean_hw(x).reshape(out.shape)
        if kind == g.PAD:
            return pad(x, args[1])
        return x.reshape(out.shape)  # RESHAPE
