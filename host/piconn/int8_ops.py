"""Prepare and run a `Graph` with the int8 reference kernels (`int8`).

`prepare(graph)` is TensorFlow Lite Micro's Prepare step for every operator: it checks
the operator against what the kernels support (dtypes, shapes, quantization, options)
and computes what the kernels need from the quantization (requantization multipliers
and shifts per channel, activation clamps, padding, softmax/logistic/tanh input scaling),
exactly as TFLite Micro does. These are also the numbers the device format stores, so
the device never recomputes them. Problems raise `GraphError` naming the operator.

`run(graph, x)` runs the graph on one input and returns its output, bit for bit what
TFLite Micro's reference kernels compute (`keep=True` also returns every tensor).
Operators on float32 tensors are prepared and run by `float_ops`.
"""

from __future__ import annotations

import math
from typing import TypeVar

import numpy as np

from . import float_ops, int8, xnor_ops
from . import graph as g
from .int8 import (
    AddParams,
    ConvParams,
    DequantizeParams,
    MeanParams,
    PadParams,
    PoolParams,
    QuantizeParams,
    SigmoidParams,
    SoftmaxParams,
    quantize_multiplier,
)

MAX_SHIFT = 30  # the requantization's left shift must keep x * 2^shift inside int32
MAX_SOFTMAX_DEPTH = 511  # beyond, TFLite Micro's sum of exponentials can exceed its range
MAX_ACCUMULATOR = 2**31 - 1
OptionsT = TypeVar("OptionsT")


# --------------------------------------------------------------------------- checks


class _Op:
    """One operator being prepared: its tensors and a way to complain about them."""

    def __init__(self, graph: g.Graph, index: int):
        self.graph, self.index = graph, index
        self.op = graph.operators[index]

    def fail(self, message: str) -> g.GraphError:
        return self.graph.error(self.index, message)

    def options(self, cls: type[OptionsT]) -> OptionsT:
        """The operator's options, which must be of `cls`."""
        if not isinstance(self.op.options, cls):
            raise self.fail(f"options must be {cls.__name__}, not"
                            f" {type(self.op.options).__name__}")
        return self.op.options

    def counts(self, inputs: tuple[int, ...], outputs: int = 1) -> None:
        if len(self.op.inputs) not in inputs or len(self.op.outputs) != outputs:
            raise self.fail(f"takes {' or '.join(map(str, inputs))} inputs and {outputs} output,"
                            f" has {len(self.op.inputs)} and {len(self.op.outputs)}")

    def tensor(self, k: int) -> g.Tensor | None:
        i = self.op.inputs[k] if k < len(self.op.inputs) else g.NO_TENSOR
        return None if i == g.NO_TENSOR else self.graph.tensors[i]

    def input(self, k: int = 0, rank: int | None = None, dtype: str = g.INT8) -> g.Tensor:
        t = self.tensor(k)
        if t is None:
            raise self.fail(f"input {k} is missing")
        return self._expect(t, f"input {k}", rank, dtype)

    def output(self, rank: int | None = None, dtype: str = g.INT8) -> g.Tensor:
        return self._expect(self.graph.tensors[self.op.outputs[0]], "output", rank, dtype)

    def _expect(self, t: g.Tensor, role: str, rank: int | None, dtype: str) -> g.Tensor:
        if t.dtype != dtype:
            raise self.fail(f"{role} {t.name!r} is {t.dtype}; supported: {dtype}")
        if rank is not None and len(t.shape) != rank:
            raise self.fail(f"{role} {t.name!r} has shape {list(t.shape)}; expected {rank}-D")
        if dtype == g.INT8 and t.quant is None:
            raise self.fail(f"{role} {t.name!r} is int8 without quantization")
        return t

    def per_tensor(self, t: g.Tensor) -> tuple[float, int]:
        """(scale, zero point) of a tensor quantized per tensor."""
        if t.quant is None or t.quant.per_channel:
            raise self.fail(f"{t.name!r} must be quantized per tensor (one scale)")
        zero = int(t.quant.zero_point[0])
        if t.dtype == g.INT8 and not int8.INT8_MIN <= zero <= int8.INT8_MAX:
            raise self.fail(f"{t.name!r} has zero point {zero} outside int8")
        return float(t.quant.scale[0]), zero

    def constant(self, k: int, dtype: str) -> np.ndarray:
        t = self.tensor(k)
        if t is None or not t.is_constant or t.dtype != dtype:
            raise self.fail(f"input {k} must be a constant {dtype} tensor")
        return t.data

    def same_quant(self, a: g.Tensor, b: g.Tensor, tolerance: float = 0.0) -> None:
        sa, za = self.per_tensor(a)
        sb, zb = self.per_tensor(b)
        if za != zb or abs(np.float32(sa) - np.float32(sb)) > tolerance:
            raise self.fail(f"input and output quantization must be equal (scale {sa} vs {sb},"
                            f" zero point {za} vs {zb})")

    def shifts(self, shift: np.ndarray | int) -> None:
        if np.max(shift) > MAX_SHIFT:
            raise self.fail("requantization scale too large (input x weight scale / output"
                            f" scale >= 2^{MAX_SHIFT - 1})")


def _out_size(padding: str, size: int, filt: int, stride: int) -> int:
    if padding == g.SAME:
        return (size + stride - 1) // stride
    return (size - filt + stride) // stride


def _pad_before(size: int, filt: int, stride: int, out: int) -> int:
    return max((out - 1) * stride + filt - size, 0) // 2


def _spatial(o: _Op, x: g.Tensor, y: g.Tensor, kh: int, kw: int,
             opt: g.ConvOptions | g.DepthwiseOptions | g.PoolOptions) -> dict:
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
    return {"stride_h": opt.stride_h, "stride_w": opt.stride_w,
            "pad_top": _pad_before(h, kh, opt.stride_h, out_h),
            "pad_left": _pad_before(w, kw, opt.stride_w, out_w), "out_h": out_h, "out_w": out_w}


def _weights(o: _Op, c_out: int, axis: int) -> g.Tensor:
    w = o.tensor(1)
    if w is None or not w.is_constant or w.dtype != g.INT8 or w.quant is None:
        raise o.fail("the weights must be a constant int8 tensor with quantization")
    q = w.quant
    if q.per_channel and (len(q.scale) != c_out or q.axis != axis):
        raise o.fail(f"weights quantized per channel need {c_out} scales along axis {axis}")
    if np.any(q.zero_point != 0):
        raise o.fail("weights must be quantized symmetrically (zero point 0)")
    return w


def _bias(o: _Op, c_out: int) -> np.ndarray:
    b = o.tensor(2)
    if b is None:
        return np.zeros(c_out, dtype=np.int64)
    if not b.is_constant or b.dtype != g.INT32 or b.shape != (c_out,):
        raise o.fail(f"the bias must be a constant int32 tensor of shape [{c_out}]")
    return b.data.astype(np.int64)


def _accumulator_bound(o: _Op, w: np.ndarray, bias: np.ndarray, out_axis: int) -> None:
    """Reject weights whose int32 accumulator could overflow for some input."""
    axes = tuple(a for a in range(w.ndim) if a != out_axis)
    worst = np.abs(w.astype(np.int64)).sum(axis=axes) * 255 + np.abs(bias)
    if worst.max() > MAX_ACCUMULATOR:
        raise o.fail("the int32 accumulator can overflow (too many or too large weights)")


def _channel_multipliers(o: _Op, in_scale: float, w_scales: np.ndarray, out_scale: float,
                         c_out: int) -> tuple[np.ndarray, np.ndarray]:
    """PopulateConvolutionQuantizationParams: per channel, the product in double."""
    scales = np.broadcast_to(w_scales, (c_out,))
    pairs = [quantize_multiplier(float(in_scale) * float(s) / float(out_scale)) for s in scales]
    mult = np.array([m for m, _ in pairs], dtype=np.int64)
    shift = np.array([s for _, s in pairs], dtype=np.int64)
    o.shifts(shift)
    return mult, shift


def _conv(o: _Op) -> ConvParams:
    o.counts((2, 3))
    x, y = o.input(0, rank=4), o.output(rank=4)
    opt = o.options(g.ConvOptions)
    w = _weights(o, y.shape[3], 0)
    if len(w.shape) != 4 or w.shape[0] != y.shape[3] or w.shape[3] != x.shape[3]:
        raise o.fail(f"weights {list(w.shape)} must be [{y.shape[3]}, kh, kw, {x.shape[3]}]"
                     " (grouped convolutions are not supported)")
    bias = _bias(o, y.shape[3])
    _accumulator_bound(o, w.data, bias, 0)
    (si, zi), (so, zo) = o.per_tensor(x), o.per_tensor(y)
    mult, shift = _channel_multipliers(o, si, w.quant.scale, so, y.shape[3])
    lo, hi = int8.activation_range(opt.activation, so, zo)
    return ConvParams(-zi, zo, mult, shift, lo, hi,
                      **_spatial(o, x, y, w.shape[1], w.shape[2], opt))


def _depthwise(o: _Op) -> ConvParams:
    o.counts((2, 3))
    x, y = o.input(0, rank=4), o.output(rank=4)
    opt = o.options(g.DepthwiseOptions)
    c_out = x.shape[3] * opt.depth_multiplier
    if y.shape[3] != c_out:
        raise o.fail(f"output channels {y.shape[3]} != input channels {x.shape[3]} x depth"
                     f" multiplier {opt.depth_multiplier}")
    w = _weights(o, c_out, 3)
    if len(w.shape) != 4 or w.shape[0] != 1 or w.shape[3] != c_out:
        raise o.fail(f"weights {list(w.shape)} must be [1, kh, kw, {c_out}]")
    bias = _bias(o, c_out)
    _accumulator_bound(o, w.data, bias, 3)
    (si, zi), (so, zo) = o.per_tensor(x), o.per_tensor(y)
    mult, shift = _channel_multipliers(o, si, w.quant.scale, so, c_out)
    lo, hi = int8.activation_range(opt.activation, so, zo)
    return ConvParams(-zi, zo, mult, shift, lo, hi, depth_multiplier=opt.depth_multiplier,
                      **_spatial(o, x, y, w.shape[1], w.shape[2], opt))


def _fully_connected(o: _Op) -> ConvParams:
    o.counts((2, 3))
    x, y = o.input(0), o.output()
    if len(y.shape) < 1:
        raise o.fail("the output must have at least one dimension")
    c_out = y.shape[-1]
    w = _weights(o, c_out, 0)
    if len(w.shape) != 2 or w.shape[0] != c_out:
        raise o.fail(f"weights {list(w.shape)} must be [{c_out}, depth]")
    depth = w.shape[1]
    if depth == 0 or x.size != (y.size // max(c_out, 1)) * depth:
        raise o.fail(f"input {list(x.shape)} is not a whole number of rows of {depth}"
                     f" for output {list(y.shape)}")
    bias = _bias(o, c_out)
    _accumulator_bound(o, w.data, bias, 0)
    (si, zi), (so, zo) = o.per_tensor(x), o.per_tensor(y)
    b = o.tensor(2)
    if not w.quant.per_channel and b is not None and b.quant is not None and (
            abs(si * float(w.quant.scale[0]) - float(b.quant.scale[0])) / so > 0.02):
        raise o.fail("the bias scale must equal input scale x weight scale")
    # Per tensor too, the tflite-micro of the test extra forms the product in double (a
    # float32 product differs in the last bits of the multiplier, and TFLite Micro's
    # outputs agree with the double one on the MLPerf Tiny autoencoder).
    mult, shift = _channel_multipliers(o, si, w.quant.scale, so, c_out)
    lo, hi = int8.activation_range(o.options(g.FullyConnectedOptions).activation, so, zo)
    return ConvParams(-zi, zo, mult, shift, lo, hi)


def _pool(o: _Op) -> PoolParams:
    o.counts((1,))
    x, y = o.input(0, rank=4), o.output(rank=4)
    opt = o.options(g.PoolOptions)
    o.same_quant(x, y, tolerance=1e-6)
    if y.shape[3] != x.shape[3]:
        raise o.fail("a pool keeps the number of channels")
    lo, hi = int8.activation_range(opt.activation, *o.per_tensor(y))
    return PoolParams(opt.filter_h, opt.filter_w, act_min=lo, act_max=hi,
                      **_spatial(o, x, y, opt.filter_h, opt.filter_w, opt))


def _add(o: _Op) -> AddParams:
    o.counts((2,))
    a, b, y = o.input(0), o.input(1), o.output()
    try:
        shape = np.broadcast_shapes(a.shape, b.shape)
    except ValueError:
        shape = None
    if shape != y.shape:
        raise o.fail(f"shapes {list(a.shape)} + {list(b.shape)} do not broadcast to the output"
                     f" {list(y.shape)}")
    (s1, z1), (s2, z2), (so, zo) = o.per_tensor(a), o.per_tensor(b), o.per_tensor(y)
    left_shift = 20
    twice_max = 2 * float(max(np.float32(s1), np.float32(s2)))
    real_out = twice_max / ((1 << left_shift) * float(so))
    if real_out >= 1.0:
        raise o.fail("output scale too small for the input scales")
    m1, sh1 = quantize_multiplier(float(s1) / twice_max)
    m2, sh2 = quantize_multiplier(float(s2) / twice_max)
    mo, sho = quantize_multiplier(real_out)
    lo, hi = int8.activation_range(o.options(g.AddOptions).activation, so, zo)
    return AddParams(-z1, -z2, left_shift, m1, sh1, m2, sh2, mo, sho, zo, lo, hi)


def _softmax(o: _Op) -> SoftmaxParams:
    o.counts((1,))
    x, y = o.input(0), o.output()
    if x.shape != y.shape or len(x.shape) < 1:
        raise o.fail("input and output shapes must be equal")
    if x.shape[-1] > MAX_SOFTMAX_DEPTH:
        raise o.fail(f"softmax over {x.shape[-1]} values; supported up to {MAX_SOFTMAX_DEPTH}")
    so, zo = o.per_tensor(y)
    if zo != -128 or np.float32(so) != np.float32(1 / 256):
        raise o.fail("the int8 output must have scale 1/256 and zero point -128")
    si, _ = o.per_tensor(x)
    # PreprocessSoftmaxScaling with 5 integer bits, then QuantizeMultiplierGreaterThanOne
    beta = float(np.float32(o.options(g.SoftmaxOptions).beta))
    real = min(beta * si * (1 << 26), (1 << 31) - 1.0)
    if real <= 1.0:
        raise o.fail("input scale x beta too small (TFLite Micro needs > 2^-26)")
    mult, shift = quantize_multiplier(real)
    o.shifts(shift)
    diff_min = -int8.calculate_input_radius(int8.SOFTMAX_DIFF_INTEGER_BITS, shift)
    return SoftmaxParams(mult, shift, diff_min)


def _sigmoid(o: _Op, out_scale: float, out_zero: int) -> SigmoidParams:
    """LOGISTIC and TANH: the input multiplier for Q4.27 (frexp of scale * 2^27)."""
    o.counts((1,))
    x, y = o.input(0), o.output()
    if x.shape != y.shape:
        raise o.fail("input and output shapes must be equal")
    so, zo = o.per_tensor(y)
    if zo != out_zero or np.float32(so) != np.float32(out_scale):
        raise o.fail(f"the int8 output must have scale 1/{round(1 / out_scale)} and zero point"
                     f" {out_zero}")
    si, zi = o.per_tensor(x)
    if not si * (1 << 27) < 2.0**MAX_SHIFT:
        raise o.fail(f"input scale {si} outside the supported range")
    q, left_shift = math.frexp(si * (1 << 27))
    mult = int8.round_half_away(q * 2**31)
    if not 0 <= left_shift <= MAX_SHIFT or mult >= 2**31:
        raise o.fail(f"input scale {si} outside the supported range")
    return SigmoidParams(zi, int8.calculate_input_radius(4, left_shift), mult, left_shift)


def _mean(o: _Op) -> MeanParams:
    o.counts((2,))
    x, y = o.input(0, rank=4), o.output()
    axes = o.constant(1, g.INT32).reshape(-1)
    if (sorted(int(a) % 4 for a in axes) != [1, 2] or len(axes) != 2
            or not all(-4 <= a < 4 for a in axes)):
        raise o.fail(f"MEAN over axes {list(axes)}; supported: height and width (1, 2)")
    n, _, _, c = x.shape
    want = (n, 1, 1, c) if o.options(g.MeanOptions).keep_dims else (n, c)
    if y.shape != want:
        raise o.fail(f"output shape {list(y.shape)}, expected {list(want)}")
    (si, zi), (so, zo) = o.per_tensor(x), o.per_tensor(y)
    mult, shift = quantize_multiplier(float(si) / float(so))
    count = x.shape[1] * x.shape[2]
    if count == 0:
        raise o.fail("MEAN over an empty window")
    # QuantizedMeanOrSum folds the division by the count into the multiplier.
    k = min(count.bit_length() - 1, 32, 31 + shift)
    mult, shift = (mult << k) // count, shift - k
    o.shifts(shift)
    if shift < -31:
        raise o.fail("requantization scale too small")
    return MeanParams(zi * count, int(mult), shift, zo)


def _pad(o: _Op) -> PadParams:
    o.counts((2,))
    x, y = o.input(0), o.output()
    pads = o.constant(1, g.INT32)
    if pads.shape != (len(x.shape), 2) or len(x.shape) > 4 or np.any(pads < 0):
        raise o.fail(f"paddings {pads.tolist()} must be [{len(x.shape)}, 2], non-negative,"
                     " for at most 4 dimensions")
    want = tuple(int(d + a + b) for d, (a, b) in zip(x.shape, pads))
    if y.shape != want:
        raise o.fail(f"output shape {list(y.shape)}, expected {list(want)}")
    o.same_quant(x, y)
    return PadParams(tuple((int(a), int(b)) for a, b in pads), o.per_tensor(y)[1])


def _reshape(o: _Op) -> None:
    if len(o.op.inputs) not in (1, 2) or len(o.op.outputs) != 1:
        raise o.fail("takes 1 or 2 inputs and 1 output")
    x, y = o.input(0), o.output()
    if x.size != y.size:
        raise o.fail(f"{list(x.shape)} and {list(y.shape)} hold different numbers of elements")
    o.same_quant(x, y)


def _quantize(o: _Op) -> QuantizeParams:
    o.counts((1,))
    x = o.tensor(0)
    y = o.output()
    if x.shape != y.shape:
        raise o.fail("input and output shapes must be equal")
    so, zo = o.per_tensor(y)
    if x.dtype == g.FLOAT32:
        if x.quant is not None:
            raise o.fail(f"input {x.name!r} is float32 with quantization")
        return QuantizeParams(so, zo)
    o.input(0)
    si, zi = o.per_tensor(x)
    mult, shift = quantize_multiplier(float(si) / float(so))
    o.shifts(shift)
    return QuantizeParams(so, zo, zi, mult, shift)


def _dequantize(o: _Op) -> DequantizeParams:
    o.counts((1,))
    x, y = o.input(0), o.output(dtype=g.FLOAT32)
    if x.shape != y.shape:
        raise o.fail("input and output shapes must be equal")
    if y.quant is not None:
        raise o.fail(f"output {y.name!r} is float32 with quantization")
    si, zi = o.per_tensor(x)
    return DequantizeParams(si, zi)


PREPARE = {
    g.ADD: _add,
    g.AVERAGE_POOL_2D: _pool,
    g.CONV_2D: _conv,
    g.DEPTHWISE_CONV_2D: _depthwise,
    g.DEQUANTIZE: _dequantize,
    g.FULLY_CONNECTED: _fully_connected,
    g.LOGISTIC: lambda o: _sigmoid(o, 1 / 256, -128),
    g.MAX_POOL_2D: _pool,
    g.MEAN: _mean,
    g.PAD: _pad,
    g.QUANTIZE: _quantize,
    g.RESHAPE: _reshape,
    g.SOFTMAX: _softmax,
    g.TANH: lambda o: _sigmoid(o, 1 / 128, 0),
}
PREPARE.update({kind: lambda o: xnor_ops.prepare(o.graph, o.index) for kind in xnor_ops.KINDS})


def prepare(graph: g.Graph) -> list:
    """Check every operator and compute its kernel parameters (one entry per operator)."""
    graph.check()
    params = []
    for k in range(len(graph.operators)):
        try:
            if float_ops.is_float(graph, k):
                params.append(float_ops.prepare_op(_Op(graph, k)))
            else:
                params.append(PREPARE[graph.operators[k].kind](_Op(graph, k)))
        except g.GraphError:
            raise
        except ValueError as e:  # quantization outside what the arithmetic represents
            raise graph.error(k, str(e)) from None
        except (AttributeError, TypeError) as e:  # options of the wrong kind
            raise graph.error(k, f"malformed operator ({e})") from None
    for i in graph.inputs + graph.outputs:  # the ones no operator reads or writes
        t = graph.tensors[i]
        if i in graph.outputs and t.dtype == g.INT32 and _binary_logits(graph, i):
            continue  # the int32 logits of an XNOR_CONV_2D
        if t.dtype not in (g.INT8, g.FLOAT32) or (t.dtype == g.INT8 and t.quant is None):
            raise g.GraphError(f"graph input/output {t.name!r} is {t.dtype}; supported: int8"
                               " (quantized), float32 (through QUANTIZE/DEQUANTIZE)")
    return params


def _binary_logits(graph: g.Graph, i: int) -> bool:
    """Whether tensor i is written by an XNOR_CONV_2D (its int32 output may be a graph output)."""
    return any(op.kind == g.XNOR_CONV_2D and i in op.outputs for op in graph.operators)


# --------------------------------------------------------------------------- run


def _run_op(kind: str, p, args: list[np.ndarray], out: g.Tensor) -> np.ndarray:
    if isinstance(p, float_ops.FloatParams):
        return float_ops.run_op(kind, p, args, out)
    if kind in xnor_ops.KINDS:
        return xnor_ops.run_op(kind, p, args)
    x = args[0]
    if kind == g.CONV_2D:
        return int8.conv2d(x, args[1], _bias_array(args, out), p)
    if kind == g.DEPTHWISE_CONV_2D:
        return int8.depthwise_conv2d(x, args[1], _bias_array(args, out), p)
    if kind == g.FULLY_CONNECTED:
        depth = args[1].shape[1]
        y = int8.fully_connected(x.reshape(-1, depth), args[1], _bias_array(args, out), p)
        return y.reshape(out.shape)
    if kind == g.AVERAGE_POOL_2D:
        return int8.average_pool(x, p)
    if kind == g.MAX_POOL_2D:
        return int8.max_pool(x, p)
    if kind == g.ADD:
        return int8.add(x, args[1], p)
    if kind == g.SOFTMAX:
        return int8.softmax(x, p)
    if kind == g.LOGISTIC:
        return int8.logistic(x, p)
    if kind == g.TANH:
        return int8.tanh(x, p)
    if kind == g.MEAN:
        return int8.mean_hw(x, p).reshape(out.shape)
    if kind == g.PAD:
        return int8.pad(x, p)
    if kind == g.RESHAPE:
        return x.reshape(out.shape)
    if kind == g.QUANTIZE:
        return int8.quantize(x, p) if x.dtype == np.float32 else int8.requantize(x, p)
    return int8.dequantize(x, p)  # DEQUANTIZE


def _bias_array(args: list[np.ndarray | None], out: g.Tensor) -> np.ndarray:
    b = args[2] if len(args) > 2 else None
    return np.zeros(out.shape[-1], dtype=np.int64) if b is None else b.astype(np.int64)


def run(graph: g.Graph, x, params: list | None = None, keep: bool = False):
    """Run the graph on one input (several: a list, in graph input order).

    Returns the output (a tuple for several outputs); with keep=True, a dict of every
    tensor index -> its value. An input must have the graph input's dtype and number of
    elements (ValueError/TypeError otherwise).
    """
    params = prepare(graph) if params is None else params
    xs = list(x) if isinstance(x, (list, tuple)) else [x]
    if len(xs) != len(graph.inputs):
        raise ValueError(f"the graph takes {len(graph.inputs)} inputs, got {len(xs)}")
    values: dict[int, np.ndarray] = {}
    for i, v in zip(graph.inputs, xs):
        values[i] = _check_input(graph.tensors[i], v)
    for k, op in enumerate(graph.operators):
        args = [None if i == g.NO_TENSOR else
                (graph.tensors[i].data if graph.tensors[i].is_constant else values[i])
                for i in op.inputs]
        out = graph.tensors[op.outputs[0]]
        values[op.outputs[0]] = _run_op(op.kind, params[k], args, out)
    if keep:
        return values
    outs = tuple(values[i] if i in values else graph.tensors[i].data for i in graph.outputs)
    return outs[0] if len(outs) == 1 else outs


def _check_input(t: g.Tensor, v) -> np.ndarray:
    a = np.asarray(v)
    want = g.NUMPY_DTYPES[t.dtype]
    if a.dtype != want:
        raise TypeError(f"input {t.name!r} takes {t.dtype}, got {a.dtype}")
    if a.size != t.size:
        raise ValueError(f"input {t.name!r} takes {t.size} elements {list(t.shape)}, got {a.size}")
    if a.dtype == np.float32 and not np.all(np.isfinite(a)):
        raise ValueError(f"input {t.name!r} holds NaN or infinity")
    return a.reshape(t.shape)
