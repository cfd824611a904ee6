"""Reference of the binary operators of format version 2 (docs/FORMAT.md, "Binary operators").

BINARIZE (int8 -> bits by per-channel bounds), XNOR_CONV_2D (bits -> bits by popcount
thresholds, or -> int32 fixed-point logits), BINARY_MAX_POOL_2D (OR of bits) and
BINARIZE_CONV_2D (an int8 convolution whose output is each accumulator's comparison with a
per-channel threshold: int8 -> bits), in numpy, integer-exact: the device's three tiers
must equal these bit for bit.

A `bits` tensor's values are numpy bool arrays of its shape (True = +1, False = -1); the
32-to-a-word packing (`pack`, `unpack`) is only the file's and the device's layout. The
checks here (`prepare`) are the format's rules for these kinds; `int8_ops.prepare` and
`int8_ops.run` dispatch to them, so a graph mixing int8 and binary operators prepares
and runs as one.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import graph as g

KINDS = (g.BINARIZE, g.XNOR_CONV_2D, g.BINARY_MAX_POOL_2D, g.BINARIZE_CONV_2D)
MAX_FIELD_WORDS = 1024  # kh * kw * words(C_in): the receptive field of one output (4 KB)
# BINARIZE_CONV_2D: kh * kw * C_in taps per output. Each (x - zx) * w is at most
# 255 * 128 = 32,640 in magnitude, so a sum of 1024 stays below 2^25: inside int32 with room.
MAX_FIELD_TAPS = 1024
MAX_STRIDE = 4096  # FORMAT.md: the device's index arithmetic stays inside int32
INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1
INT8_MIN, INT8_MAX = -128, 127


def words(n: int) -> int:
    """32-bit words of n bits."""
    return (int(n) + 31) // 32


# ----------------------------------------------------------------------- packing


def pack(bits: np.ndarray) -> np.ndarray:
    """bool [..., C] -> uint32 [..., words(C)]: element c is bit c % 32 of word c // 32,
    padding bits 0."""
    b = np.asarray(bits, dtype=bool)
    c = b.shape[-1]
    padded = np.zeros((*b.shape[:-1], 32 * words(c)), np.uint64)
    padded[..., :c] = b
    weights = np.uint64(1) << np.arange(32, dtype=np.uint64)
    grouped = padded.reshape(*b.shape[:-1], words(c), 32)
    return (grouped * weights).sum(axis=-1).astype(np.uint32)


def unpack(w: np.ndarray, c: int) -> tuple[np.ndarray, bool]:
    """uint32 [..., words(c)] -> (bool [..., c], whether every padding bit is 0)."""
    w = np.asarray(w, np.uint32)
    shifts = np.arange(32, dtype=np.uint32)
    bits = ((w[..., None] >> shifts) & 1).astype(bool).reshape(*w.shape[:-1], 32 * w.shape[-1])
    return bits[..., :c], not bits[..., c:].any()


# ----------------------------------------------------------------------- params


@dataclass
class WindowParams:
    """XNOR_CONV_2D and BINARY_MAX_POOL_2D: the window, its strides and the top/left
    padding (SAME: TensorFlow's; VALID: 0)."""

    padding: str
    filter_h: int
    filter_w: int
    stride_h: int
    stride_w: int
    pad_top: int
    pad_left: int
    out_h: int
    out_w: int
    logits: bool = False  # XNOR_CONV_2D with an i32 output
    input_zero: int = 0  # BINARIZE_CONV_2D: the int8 input's zero point


def _fail(graph: g.Graph, k: int, message: str) -> g.GraphError:
    return graph.error(k, message)


def _tensor(graph: g.Graph, k: int, pos: int) -> g.Tensor:
    op = graph.operators[k]
    if pos >= len(op.inputs) or op.inputs[pos] == g.NO_TENSOR:
        raise _fail(graph, k, f"input {pos} is missing")
    return graph.tensors[op.inputs[pos]]


def _expect(graph: g.Graph, k: int, t: g.Tensor, role: str, dtype: str, rank: int | None
            ) -> None:
    if t.dtype != dtype:
        raise _fail(graph, k, f"{role} {t.name!r} is {t.dtype}; expected {dtype}")
    if rank is not None and len(t.shape) != rank:
        raise _fail(graph, k, f"{role} {t.name!r} has shape {list(t.shape)}; expected {rank}-D")
    if dtype == g.BITS and t.quant is not None:
        raise _fail(graph, k, f"{role} {t.name!r}: a bits tensor has no quantization")


def _counts(graph: g.Graph, k: int, n_in: int) -> None:
    op = graph.operators[k]
    if len(op.inputs) != n_in or len(op.outputs) != 1:
        raise _fail(graph, k, f"takes {n_in} inputs and 1 output, has {len(op.inputs)} and"
                              f" {len(op.outputs)}")


def _out_size(padding: str, size: int, filt: int, stride: int) -> int:
    if padding == g.SAME:
        return (size + stride - 1) // stride
    return (size - filt) // stride + 1 if size >= filt else 0


def _window(graph: g.Graph, k: int, x: g.Tensor, y: g.Tensor, kh: int, kw: int,
            opt: g.ConvOptions | g.PoolOptions) -> WindowParams:
    if opt.padding not in (g.SAME, g.VALID):
        raise _fail(graph, k, f"unknown padding {opt.padding!r}")
    if min(opt.stride_h, opt.stride_w, kh, kw) < 1:
        raise _fail(graph, k, f"strides {opt.stride_h}x{opt.stride_w} and window {kh}x{kw}"
                              " must be at least 1")
    if max(opt.stride_h, opt.stride_w) > MAX_STRIDE or max(kh, kw) > 0xFFFF:
        raise _fail(graph, k, f"strides above {MAX_STRIDE} or filter sizes above 65535")
    _, h, w, _ = x.shape
    oh = _out_size(opt.padding, h, kh, opt.stride_h)
    ow = _out_size(opt.padding, w, kw, opt.stride_w)
    if oh < 1 or ow < 1 or tuple(y.shape[1:3]) != (oh, ow) or y.shape[0] != x.shape[0]:
        raise _fail(graph, k, f"output shape {list(y.shape)} does not match the input"
                              f" {list(x.shape)}, a {kh}x{kw} window, strides"
                              f" {opt.stride_h}x{opt.stride_w} and {opt.padding.upper()} padding")
    top = max((oh - 1) * opt.stride_h + kh - h, 0) // 2 if opt.padding == g.SAME else 0
    left = max((ow - 1) * opt.stride_w + kw - w, 0) // 2 if opt.padding == g.SAME else 0
    return WindowParams(opt.padding, kh, kw, opt.stride_h, opt.stride_w, top, left, oh, ow)


def _options(graph: g.Graph, k: int, cls: type) -> g.ConvOptions | g.PoolOptions:
    opt = graph.operators[k].options
    if not isinstance(opt, cls):
        raise _fail(graph, k, f"options must be {cls.__name__}, not {type(opt).__name__}")
    if getattr(opt, "activation", g.ACT_NONE) != g.ACT_NONE:
        raise _fail(graph, k, "a binary operator has no fused activation")
    return opt


def _binarize(graph: g.Graph, k: int) -> None:
    _counts(graph, k, 2)
    x, bounds = _tensor(graph, k, 0), _tensor(graph, k, 1)
    y = graph.tensors[graph.operators[k].outputs[0]]
    _expect(graph, k, x, "input 0", g.INT8, None)
    _expect(graph, k, y, "output", g.BITS, None)
    if not 1 <= len(x.shape) <= 4 or tuple(y.shape) != tuple(x.shape):
        raise _fail(graph, k, f"output {list(y.shape)} must have the input's dims"
                              f" {list(x.shape)} (rank 1..4)")
    if graph.operators[k].options is not None:
        raise _fail(graph, k, "BINARIZE has no options")
    if (not bounds.is_constant or bounds.dtype != g.INT32
            or tuple(bounds.shape) != (x.shape[-1], 2)):
        raise _fail(graph, k, f"bounds must be a constant int32 tensor [{x.shape[-1]}, 2]")


def _xnor_conv(graph: g.Graph, k: int) -> WindowParams:
    _counts(graph, k, 3)
    x, w, ch = (_tensor(graph, k, i) for i in range(3))
    y = graph.tensors[graph.operators[k].outputs[0]]
    _expect(graph, k, x, "input 0", g.BITS, 4)
    _expect(graph, k, w, "weights", g.BITS, 4)
    if not w.is_constant:
        raise _fail(graph, k, "the weights must be a constant bits tensor")
    if y.dtype not in (g.BITS, g.INT32) or len(y.shape) != 4:
        raise _fail(graph, k, f"output {y.name!r} must be a 4-D bits or int32 tensor")
    c_out, kh, kw, c_in = w.shape
    if c_in != x.shape[3] or y.shape[3] != c_out:
        raise _fail(graph, k, f"weights {list(w.shape)} must be [{y.shape[3]}, kh, kw,"
                              f" {x.shape[3]}]")
    if kh * kw * words(c_in) > MAX_FIELD_WORDS:
        raise _fail(graph, k, f"receptive field of {kh}x{kw}x{words(c_in)} words exceeds"
                              f" {MAX_FIELD_WORDS}")
    p = _window(graph, k, x, y, kh, kw, _options(graph, k, g.ConvOptions))
    logits = y.dtype == g.INT32
    want = (2, c_out) if logits else (c_out,)
    if not ch.is_constant or ch.dtype != g.INT32 or tuple(ch.shape) != want:
        raise _fail(graph, k, f"the channel table must be a constant int32 tensor {list(want)}"
                              + (" (a, b)" if logits else " (thresholds)"))
    if logits:
        q = y.quant
        if q is not None and (q.per_channel or int(q.zero_point[0]) != 0):
            raise _fail(graph, k, "the int32 output is quantized per tensor with zero point 0,"
                                  " or not at all")
        a, b = ch.data.astype(np.int64)
        n = kh * kw * c_in
        if np.any(np.abs(a) * n + np.abs(b) > INT32_MAX):
            raise _fail(graph, k, "a channel's a*(n - 2m) + b can leave int32")
    elif y.quant is not None:
        raise _fail(graph, k, "a bits tensor has no quantization")
    p.logits = logits
    return p


def _binarize_conv(graph: g.Graph, k: int) -> WindowParams:
    _counts(graph, k, 3)
    x, w, t = (_tensor(graph, k, i) for i in range(3))
    y = graph.tensors[graph.operators[k].outputs[0]]
    _expect(graph, k, x, "input 0", g.INT8, 4)
    _expect(graph, k, y, "output", g.BITS, 4)
    if x.quant is None or x.quant.per_channel:
        raise _fail(graph, k, f"input {x.name!r} must be quantized per tensor")
    if not w.is_constant or w.dtype != g.INT8 or len(w.shape) != 4:
        raise _fail(graph, k, "the weights must be a constant 4-D int8 tensor")
    if w.quant is not None and np.any(w.quant.zero_point != 0):
        raise _fail(graph, k, "the weights' zero points must be 0")
    c_out, kh, kw, c_in = w.shape
    if c_in != x.shape[3] or y.shape[3] != c_out:
        raise _fail(graph, k, f"weights {list(w.shape)} must be [{y.shape[3]}, kh, kw,"
                              f" {x.shape[3]}]")
    if kh * kw * c_in > MAX_FIELD_TAPS:
        raise _fail(graph, k, f"receptive field of {kh}x{kw}x{c_in} taps exceeds"
                              f" {MAX_FIELD_TAPS}")
    if not t.is_constant or t.dtype != g.INT32 or tuple(t.shape) != (c_out,):
        raise _fail(graph, k, f"the thresholds must be a constant int32 tensor [{c_out}]")
    p = _window(graph, k, x, y, kh, kw, _options(graph, k, g.ConvOptions))
    zx = int(x.quant.zero_point[0])
    if not INT8_MIN <= zx <= INT8_MAX:
        raise _fail(graph, k, f"input zero point {zx} outside int8")
    p.input_zero = zx
    return p


def _max_pool(graph: g.Graph, k: int) -> WindowParams:
    _counts(graph, k, 1)
    x = _tensor(graph, k, 0)
    y = graph.tensors[graph.operators[k].outputs[0]]
    _expect(graph, k, x, "input 0", g.BITS, 4)
    _expect(graph, k, y, "output", g.BITS, 4)
    if y.shape[3] != x.shape[3]:
        raise _fail(graph, k, f"output {list(y.shape)} must keep the channels of {list(x.shape)}")
    opt = _options(graph, k, g.PoolOptions)
    return _window(graph, k, x, y, opt.filter_h, opt.filter_w, opt)


_PREPARE = {g.BINARIZE: _binarize, g.XNOR_CONV_2D: _xnor_conv,
            g.BINARY_MAX_POOL_2D: _max_pool, g.BINARIZE_CONV_2D: _binarize_conv}


def prepare(graph: g.Graph, k: int) -> WindowParams | None:
    """Check binary operator k of `graph` (GraphError naming it) and return its params."""
    return _PREPARE[graph.operators[k].kind](graph, k)


def param_values(kind: str, p: WindowParams | None) -> dict[str, int]:
    """The stored params of a binary operator, by name (FORMAT.md's order: `PARAMS`)."""
    if kind == g.BINARIZE or p is None:
        return {}
    values = {"padding": 0 if p.padding == g.SAME else 1, "filter_h": p.filter_h,
              "filter_w": p.filter_w, "stride_h": p.stride_h, "stride_w": p.stride_w,
              "pad_top": p.pad_top, "pad_left": p.pad_left, "input_zero": p.input_zero}
    return {name: values[name] for name in PARAMS[kind]}


PARAMS = {
    g.BINARIZE: (),
    g.XNOR_CONV_2D: ("padding", "stride_h", "stride_w", "pad_top", "pad_left"),
    g.BINARY_MAX_POOL_2D: ("padding", "filter_h", "filter_w", "stride_h", "stride_w",
                           "pad_top", "pad_left"),
    g.BINARIZE_CONV_2D: ("padding", "stride_h", "stride_w", "pad_top", "pad_left",
                         "input_zero"),
}


# -------------------------------------------------------------------------- run


def binarize(x: np.ndarray, bounds: np.ndarray) -> np.ndarray:
    """bits (bool) = bounds[c, 0] <= x[..., c] <= bounds[c, 1]."""
    x = np.asarray(x, np.int64)
    b = np.asarray(bounds, np.int64)
    return (x >= b[:, 0]) & (x <= b[:, 1])


def _taps(x: np.ndarray, p: WindowParams, fill: bool = False) -> np.ndarray:
    """(N, OH, OW, kh, kw, C) of every window's taps; taps outside the image are `fill`
    (False = -1, as FORMAT.md pads)."""
    n, h, w, c = x.shape
    bottom = max((p.out_h - 1) * p.stride_h + p.filter_h - h - p.pad_top, 0)
    right = max((p.out_w - 1) * p.stride_w + p.filter_w - w - p.pad_left, 0)
    xp = np.full((n, h + p.pad_top + bottom, w + p.pad_left + right, c), fill, bool)
    xp[:, p.pad_top:p.pad_top + h, p.pad_left:p.pad_left + w] = x
    rows = (np.arange(p.out_h) * p.stride_h)[:, None] + np.arange(p.filter_h)
    cols = (np.arange(p.out_w) * p.stride_w)[:, None] + np.arange(p.filter_w)
    return xp[:, rows[:, None, :, None], cols[None, :, None, :]]


def mismatches(x: np.ndarray, w: np.ndarray, p: WindowParams) -> np.ndarray:
    """m = popcount(x XOR w) over each output's receptive field: int64 (N, OH, OW, C_out)."""
    taps = _taps(np.asarray(x, bool), p).reshape(x.shape[0], p.out_h, p.out_w, -1)
    wf = np.asarray(w, bool).reshape(w.shape[0], -1)
    # m = (count of x) + (count of w) - 2 * (count of both): a float64 matrix product,
    # exact for these small integer counts (< 2^53)
    xf, wff = taps.astype(np.float64), wf.astype(np.float64)
    both = (xf @ wff.T).astype(np.int64)
    return taps.sum(axis=-1, keepdims=True, dtype=np.int64) + wf.sum(axis=1, dtype=np.int64) \
        - 2 * both


def xnor_conv2d(x: np.ndarray, w: np.ndarray, ch: np.ndarray, p: WindowParams) -> np.ndarray:
    """XNOR_CONV_2D: bits (m <= ch[c]) or int32 a[c]*(n - 2m) + b[c]."""
    m = mismatches(x, w, p)
    if p.logits:
        n = w.shape[1] * w.shape[2] * w.shape[3]
        a, b = np.asarray(ch, np.int64)
        return (a * (n - 2 * m) + b).astype(np.int32)
    return m <= np.asarray(ch, np.int64)


def binarize_conv_sums(x: np.ndarray, w: np.ndarray, p: WindowParams) -> np.ndarray:
    """The int64 sums (N, OH, OW, C_out) of (x - zx) * w over each output's taps; a tap
    outside the image (SAME padding) contributes 0 (reads as zx)."""
    xi = np.asarray(x, np.int64) - p.input_zero
    n, h, wd, c = xi.shape
    bottom = max((p.out_h - 1) * p.stride_h + p.filter_h - h - p.pad_top, 0)
    right = max((p.out_w - 1) * p.stride_w + p.filter_w - wd - p.pad_left, 0)
    xp = np.zeros((n, h + p.pad_top + bottom, wd + p.pad_left + right, c), np.int64)
    xp[:, p.pad_top:p.pad_top + h, p.pad_left:p.pad_left + wd] = xi
    rows = (np.arange(p.out_h) * p.stride_h)[:, None] + np.arange(p.filter_h)
    cols = (np.arange(p.out_w) * p.stride_w)[:, None] + np.arange(p.filter_w)
    taps = xp[:, rows[:, None, :, None], cols[None, :, None, :]]  # (N, OH, OW, kh, kw, C)
    wf = np.asarray(w, np.int64).reshape(w.shape[0], -1)
    return taps.reshape(n, p.out_h, p.out_w, -1) @ wf.T


def binarize_conv2d(x: np.ndarray, w: np.ndarray, t: np.ndarray, p: WindowParams
                    ) -> np.ndarray:
    """BINARIZE_CONV_2D: bit c (True = +1) iff sum((x - zx) * w[c]) >= t[c]."""
    return binarize_conv_sums(x, w, p) >= np.asarray(t, np.int64)


def max_pool(x: np.ndarray, p: WindowParams) -> np.ndarray:
    """BINARY_MAX_POOL_2D: OR over each window's taps inside the image."""
    return _taps(np.asarray(x, bool), p).any(axis=(3, 4))


def run_op(kind: str, p: WindowParams | None, args: list[np.ndarray]) -> np.ndarray:
    """One binary operator on its input values (bits as bool arrays)."""
    if kind == g.BINARIZE:
        return binarize(args[0], args[1])
    if kind == g.XNOR_CONV_2D:
        return xnor_conv2d(args[0], args[1], args[2], p)
    if kind == g.BINARIZE_CONV_2D:
        return binarize_conv2d(args[0], args[1], args[2], p)
    return max_pool(args[0], p)
