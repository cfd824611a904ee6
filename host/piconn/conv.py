"""Convolutional layers for `piconn.nn`: NHWC tensors, as on the device and in TFLite.

Layers (all `nn.Module`s, registered for `nn.save`/`nn.load`, same protocol as `Linear`):

    Reshape(shape)                 (N, prod(shape)) -> (N, *shape): flat pixels to an image
    Conv2d(in_ch, out_ch, kernel, stride=1, padding="same", bias=True)
    DepthwiseConv2d(channels, kernel, depth_multiplier=1, stride=1, padding="same", bias=True)
    MaxPool2d(pool, stride=None, padding="valid"), AvgPool2d(...)   (stride defaults to pool)
    GlobalAvgPool2d()              (N, H, W, C) -> (N, C)
    BatchNorm2d(channels)          per channel over N, H, W; `fold_batchnorm(s)` for export
    Residual(block)                y = x + block(x); block: a Module, a list of them, or a Sequential
    nn.Flatten()                   (N, H, W, C) -> (N, H*W*C) in NHWC order, as TFLite's RESHAPE

Layouts follow TFLite so an export is a transpose-free copy: activations (N, H, W, C);
Conv2d weight (out, kh, kw, in) (TFLite's OHWI); DepthwiseConv2d weight (kh, kw, C*M)
(TFLite's [1, kh, kw, C*M] without the 1; output channel c*M + m reads input channel c).
Padding "same" is TensorFlow's: out = ceil(in / stride), and when the total padding is
odd the extra row/column goes at the bottom/right. Pools with "same" ignore the padding
(max over, and average over, the real pixels only), as TFLite does.

Speed: Conv2d is im2col (a strided window view, one copy) and one matrix product; the
backward pass is two products and a scatter-add of the kernel taps. Depthwise, pooling and
col2im loop over the kernel taps (9 for 3x3), never over pixels. `input_grad = False` on
the first weighted layer (set by `train.fit`) skips the input gradient.

CNN specs (`build_cnn(spec)`): layers joined by "-", optionally after an input shape:

    spec   := [H "x" W "x" C ":"] layer ("-" layer)*         input default 28x28x1
    layer  := "c" N "k" K [s S] [v] [b]   Conv2d N filters KxK, stride S (default 1),
                                          "same" padding ("v": valid), then ReLU;
                                          "b": BatchNorm2d before the ReLU (conv bias off)
            | "d" [M] "k" K [s S] [v] [b] DepthwiseConv2d, depth multiplier M (default 1)
            | "p" K [s S] [v]             MaxPool2d KxK, stride S (default K), "same" padding
                                          unless "v" ("valid" drops the leftover rows)
            | "a" K [s S] [v]             AvgPool2d, same options
            | "g"                         GlobalAvgPool2d
            | "f" N                       Linear to N (Flatten first if the input is an image),
                                          then ReLU, except for the last layer (the logits)
            | "dr" P                      Dropout with probability P (e.g. dr0.25)
            | "r(" layer ("-" layer)* ")" Residual: y = relu(x + block(x)); the block's last
                                          layer has no ReLU of its own (ResNet's basic block)

The network takes the loader's flat uint8 rows scaled to [0, 1] (`train.prepare`:
pixel / 255): the model starts with `Reshape((H, W, C))`. A spec must end with "f" N.

Default MNIST CNN (`DEFAULT_CNN`, "c16k3v-p2-c32k3vb-p2-f64-f10"): conv 3x3 x16 valid,
ReLU, max-pool 2; conv 3x3 x32 valid, BN, ReLU, max-pool 2 ("same": 11 -> 6); dense 64,
ReLU; dense 10. 729,280 multiply-adds per image, 79,274 parameters. Trained by
`train_cnn` with `CNN_DEFAULTS` (Adam 3e-3, cosine decay, +-1 pixel shifts, batch 64,
8 epochs): 99.47%, 99.47%, 99.42% test accuracy (seeds 0, 1, 2), 108-112 s of CPU on one
BLAS thread; `tools/bench_train_cnn.py` prints accuracy, wall and CPU time.

Small CNN for int8 on the RP2040 (`SMALL_CNN`, "c8k5s2vb-c16k3s2vb-f32-f10"): conv 5x5
x8 stride 2 valid (12x12x8), BN, ReLU; conv 3x3 x16 stride 2 valid (5x5x16), BN, ReLU;
dense 32, ReLU; dense 10. 70,720 multiply-adds; 14,562 parameters, 14,538 once the batch
norms are folded into the convolutions (`fold_batchnorms`); the largest activation holds
1,152 values. Why so small: the device's int8 dense kernel takes 8 cycles per
multiply-add on the Cortex-M0+ (device/c/README.md), so 5 ms at 125 MHz buys about 78,000
of them and 300,000 would take about 19 ms (an estimate: the device has no int8
convolution kernel yet). Float accuracy 99.33%, 99.42%, 99.24% (seeds 0, 1, 2; 15
epochs, batch 128, otherwise `CNN_DEFAULTS`; about 35 s of CPU).
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
from numpy.lib.stride_tricks import as_strided

from . import nn, train
from .data import random_shift

__all__ = [
    "CNN_DEFAULTS",
    "DEFAULT_CNN",
    "SMALL_CNN",
    "AvgPool2d",
    "BatchNorm2d",
    "Conv2d",
    "DepthwiseConv2d",
    "GlobalAvgPool2d",
    "MaxPool2d",
    "Reshape",
    "Residual",
    "build_cnn",
    "count_macs",
    "fold_batchnorm",
    "fold_batchnorms",
    "output_shape",
    "parse_input",
    "train_cnn",
]

PADDINGS = ("same", "valid")

DEFAULT_CNN = "c16k3v-p2-c32k3vb-p2-f64-f10"
SMALL_CNN = "c8k5s2vb-c16k3s2vb-f32-f10"


# ------------------------------------------------------------------------ geometry


def _pair(value: int | Sequence[int], name: str) -> tuple[int, int]:
    """An int or (h, w) pair of positive ints."""
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        pair = (int(value), int(value))
    elif isinstance(value, (tuple, list)) and len(value) == 2 and all(
            isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in value):
        pair = (int(value[0]), int(value[1]))
    else:
        raise TypeError(f"{name} must be an int or a pair of ints, got {value!r}")
    if pair[0] < 1 or pair[1] < 1:
        raise ValueError(f"{name} must be positive, got {value!r}")
    return pair


def _padding(value: str) -> str:
    if value not in PADDINGS:
        raise ValueError(f"padding must be 'same' or 'valid', got {value!r}")
    return value


def _positive(value: Any, name: str) -> int:
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool):
        raise TypeError(f"{name} must be an int, got {value!r}")
    if value < 1:
        raise ValueError(f"{name} must be positive, got {value}")
    return int(value)


def conv_geometry(size: int, kernel: int, stride: int, padding: str) -> tuple[int, int, int]:
    """(output size, padding before, padding after) along one axis, as TensorFlow computes it."""
    if padding == "same":
        out = -(-size // stride)
        total = max((out - 1) * stride + kernel - size, 0)
        return out, total // 2, total - total // 2
    if size < kernel:
        raise ValueError(f"input size {size} is smaller than the kernel {kernel} ('valid')")
    return (size - kernel) // stride + 1, 0, 0


class _Window:
    """Geometry of one sliding-window layer on an (H, W) input."""

    def __init__(self, hw: tuple[int, int], kernel: tuple[int, int], stride: tuple[int, int],
                 padding: str) -> None:
        self.oh, self.top, self.bottom = conv_geometry(hw[0], kernel[0], stride[0], padding)
        self.ow, self.left, self.right = conv_geometry(hw[1], kernel[1], stride[1], padding)
        self.kernel, self.stride = kernel, stride
        self.padded = (hw[0] + self.top + self.bottom, hw[1] + self.left + self.right)

    def pad(self, x: np.ndarray, value: float = 0.0) -> np.ndarray:
        if not (self.top or self.bottom or self.left or self.right):
            return x
        return np.pad(x, ((0, 0), (self.top, self.bottom), (self.left, self.right), (0, 0)),
                      constant_values=value)

    def crop(self, xp: np.ndarray) -> np.ndarray:
        return xp[:, self.top:self.padded[0] - self.bottom, self.left:self.padded[1] - self.right]

    def windows(self, xp: np.ndarray) -> np.ndarray:
        """Read-only view (N, OH, OW, KH, KW, C) of the padded input `xp`."""
        n, _, _, c = xp.shape
        sn, sh, sw, sc = xp.strides
        return as_strided(xp, (n, self.oh, self.ow, self.kernel[0], self.kernel[1], c),
                          (sn, sh * self.stride[0], sw * self.stride[1], sh, sw, sc),
                          writeable=False)

    def tap(self, i: int, j: int) -> tuple[slice, slice]:
        """The (rows, cols) slices of the padded input that kernel tap (i, j) reads."""
        sh, sw = self.stride
        return (slice(i, i + sh * (self.oh - 1) + 1, sh), slice(j, j + sw * (self.ow - 1) + 1, sw))

    def taps(self) -> Iterable[tuple[int, int, slice, slice]]:
        for i in range(self.kernel[0]):
            for j in range(self.kernel[1]):
                yield (i, j, *self.tap(i, j))


def _image(module: nn.Module, x: np.ndarray, channels: int | None = None) -> None:
    if x.ndim != 4:
        raise ValueError(
            f"{type(module).__name__} expects NHWC input (N, H, W, C), got shape {x.shape}")
    if channels is not None and x.shape[3] != channels:
        raise ValueError(
            f"{module!r} expects {channels} input channels, got shape {x.shape}")


# -------------------------------------------------------------------------- layers


@nn.register
class Reshape(nn.Module):
    """(N, ...) -> (N, *shape); e.g. the loader's (N, 784) rows to (N, 28, 28, 1) images."""

    def __init__(self, shape: Sequence[int]) -> None:
        super().__init__()
        if not isinstance(shape, (tuple, list)) or not shape:
            raise TypeError(f"Reshape shape must be a non-empty tuple of ints, got {shape!r}")
        self.shape = tuple(_positive(s, "Reshape size") for s in shape)
        self._in_shape: tuple[int, ...] | None = None

    def config(self) -> dict:
        return {"shape": list(self.shape)}

    def forward(self, x: np.ndarray) -> np.ndarray:
        size = int(np.prod(self.shape))
        if x.ndim < 1 or int(np.prod(x.shape[1:])) != size:
            raise ValueError(f"{self!r} needs {size} values per sample, got shape {x.shape}")
        self._in_shape = x.shape if self.training else None
        return x.reshape((x.shape[0], *self.shape))

    def backward(self, grad_y: np.ndarray) -> np.ndarray:
        return grad_y.reshape(nn.need_cache(self, self._in_shape))


@nn.register
class Conv2d(nn.Module):
    """2-D convolution (cross-correlation, as TensorFlow) on NHWC input.

    weight: (out_ch, kh, kw, in_ch), Glorot-uniform (fan in kh*kw*in, fan out kh*kw*out);
    bias: (out_ch,), zero.
    """

    def __init__(self, in_ch: int, out_ch: int, kernel: int | Sequence[int] = 3,
                 stride: int | Sequence[int] = 1, padding: str = "same", bias: bool = True
                 ) -> None:
        super().__init__()
        self.in_ch = _positive(in_ch, "Conv2d in_ch")
        self.out_ch = _positive(out_ch, "Conv2d out_ch")
        self.kernel = _pair(kernel, "Conv2d kernel")
        self.stride = _pair(stride, "Conv2d stride")
        self.padding = _padding(padding)
        self.has_bias = bool(bias)
        self.weight = nn.Param(np.zeros((self.out_ch, *self.kernel, self.in_ch), nn.DEFAULT_DTYPE))
        self.bias = nn.Param(np.zeros(self.out_ch, nn.DEFAULT_DTYPE)) if bias else None
        self.input_grad = True  # False: backward skips grad_x (first layer of a model)
        self._cache: tuple | None = None

    def config(self) -> dict:
        return {"in_ch": self.in_ch, "out_ch": self.out_ch, "kernel": list(self.kernel),
                "stride": list(self.stride), "padding": self.padding, "bias": self.has_bias}

    def init(self, rng: np.random.Generator) -> None:
        area = self.kernel[0] * self.kernel[1]
        limit = np.sqrt(6.0 / (area * (self.in_ch + self.out_ch)))
        dt = self.weight.data.dtype
        self.weight.data = rng.uniform(-limit, limit, self.weight.data.shape).astype(dt)
        self.weight.grad = np.zeros_like(self.weight.data)
        if self.bias is not None:
            self.bias.data = np.zeros(self.out_ch, dt)
            self.bias.grad = np.zeros_like(self.bias.data)

    def output_shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        win = _Window(shape[:2], self.kernel, self.stride, self.padding)
        return (win.oh, win.ow, self.out_ch)

    def macs(self, shape: tuple[int, ...]) -> int:
        oh, ow, _ = self.output_shape(shape)
        return oh * ow * self.out_ch * self.kernel[0] * self.kernel[1] * self.in_ch

    def forward(self, x: np.ndarray) -> np.ndarray:
        _image(self, x, self.in_ch)
        n = x.shape[0]
        win = _Window(x.shape[1:3], self.kernel, self.stride, self.padding)
        if self.kernel == (1, 1) and self.stride == (1, 1):
            cols = x.reshape(-1, self.in_ch)  # pointwise: the input is already the matrix
        else:
            cols = win.windows(win.pad(x)).reshape(n * win.oh * win.ow, -1)
        y = cols @ self.weight.data.reshape(self.out_ch, -1).T
        if self.bias is not None:
            y += self.bias.data
        self._cache = (cols, x.shape, win) if self.training else None
        return y.reshape(n, win.oh, win.ow, self.out_ch)

    def backward(self, grad_y: np.ndarray) -> np.ndarray:
        cols, shape, win = nn.need_cache(self, self._cache)
        g = grad_y.reshape(-1, self.out_ch)
        self.weight.grad += (g.T @ cols).reshape(self.weight.data.shape)
        if self.bias is not None:
            self.bias.grad += g.sum(axis=0)
        if not self.input_grad:
            return None  # type: ignore[return-value]
        w = self.weight.data
        if self.kernel == (1, 1) and self.stride == (1, 1):
            return (g @ w.reshape(self.out_ch, -1)).reshape(shape)
        # col2im one tap at a time: each product is contiguous, only the add is strided.
        gxp = np.zeros((shape[0], *win.padded, self.in_ch), np.result_type(g, w))
        for i, j, rows, cols_ in win.taps():
            gxp[:, rows, cols_] += (g @ w[:, i, j, :]).reshape(shape[0], win.oh, win.ow, -1)
        return win.crop(gxp)


@nn.register
class DepthwiseConv2d(nn.Module):
    """Depthwise convolution: output channel c*M + m = input channel c * filter (c, m).

    weight: (kh, kw, channels*M) (TFLite's layout), Glorot-uniform with fan in kh*kw and
    fan out kh*kw*M; bias: (channels*M,), zero.
    """

    def __init__(self, channels: int, kernel: int | Sequence[int] = 3,
                 depth_multiplier: int = 1, stride: int | Sequence[int] = 1,
                 padding: str = "same", bias: bool = True) -> None:
        super().__init__()
        self.channels = _positive(channels, "DepthwiseConv2d channels")
        self.depth_multiplier = _positive(depth_multiplier, "DepthwiseConv2d depth_multiplier")
        self.kernel = _pair(kernel, "DepthwiseConv2d kernel")
        self.stride = _pair(stride, "DepthwiseConv2d stride")
        self.padding = _padding(padding)
        self.has_bias = bool(bias)
        self.out_ch = self.channels * self.depth_multiplier
        self.weight = nn.Param(np.zeros((*self.kernel, self.out_ch), nn.DEFAULT_DTYPE))
        self.bias = nn.Param(np.zeros(self.out_ch, nn.DEFAULT_DTYPE)) if bias else None
        self.input_grad = True
        self._cache: tuple | None = None

    def config(self) -> dict:
        return {"channels": self.channels, "kernel": list(self.kernel),
                "depth_multiplier": self.depth_multiplier, "stride": list(self.stride),
                "padding": self.padding, "bias": self.has_bias}

    def init(self, rng: np.random.Generator) -> None:
        area = self.kernel[0] * self.kernel[1]
        limit = np.sqrt(6.0 / (area * (1 + self.depth_multiplier)))
        dt = self.weight.data.dtype
        self.weight.data = rng.uniform(-limit, limit, self.weight.data.shape).astype(dt)
        self.weight.grad = np.zeros_like(self.weight.data)
        if self.bias is not None:
            self.bias.data = np.zeros(self.out_ch, dt)
            self.bias.grad = np.zeros_like(self.bias.data)

    def output_shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        win = _Window(shape[:2], self.kernel, self.stride, self.padding)
        return (win.oh, win.ow, self.out_ch)

    def macs(self, shape: tuple[int, ...]) -> int:
        oh, ow, _ = self.output_shape(shape)
        return oh * ow * self.out_ch * self.kernel[0] * self.kernel[1]

    def forward(self, x: np.ndarray) -> np.ndarray:
        _image(self, x, self.channels)
        n, c, m = x.shape[0], self.channels, self.depth_multiplier
        win = _Window(x.shape[1:3], self.kernel, self.stride, self.padding)
        xp = win.pad(x)
        w = self.weight.data.reshape(*self.kernel, c, m)
        y = np.zeros((n, win.oh, win.ow, c, m), np.result_type(x, w))
        for i, j, rows, cols in win.taps():
            y += xp[:, rows, cols, :, None] * w[i, j]
        y = y.reshape(n, win.oh, win.ow, self.out_ch)
        if self.bias is not None:
            y += self.bias.data
        self._cache = (xp, win) if self.training else None
        return y

    def backward(self, grad_y: np.ndarray) -> np.ndarray:
        xp, win = nn.need_cache(self, self._cache)
        c, m = self.channels, self.depth_multiplier
        g = grad_y.reshape(*grad_y.shape[:3], c, m)
        w = self.weight.data.reshape(*self.kernel, c, m)
        gw = np.zeros_like(w)
        gxp = np.zeros_like(xp) if self.input_grad else None
        for i, j, rows, cols in win.taps():
            xs = xp[:, rows, cols]
            gw[i, j] = np.einsum("nhwc,nhwcm->cm", xs, g)
            if gxp is not None:
                gxp[:, rows, cols] += (g * w[i, j]).sum(axis=-1)
        self.weight.grad += gw.reshape(self.weight.data.shape)
        if self.bias is not None:
            self.bias.grad += grad_y.reshape(-1, self.out_ch).sum(axis=0)
        if gxp is None:
            return None  # type: ignore[return-value]
        return win.crop(gxp)


class _Pool2d(nn.Module):
    """Base of MaxPool2d and AvgPool2d: pool size, stride (default = pool), padding."""

    def __init__(self, pool: int | Sequence[int] = 2, stride: int | Sequence[int] | None = None,
                 padding: str = "valid") -> None:
        super().__init__()
        name = type(self).__name__
        self.pool = _pair(pool, f"{name} pool")
        self.stride = self.pool if stride is None else _pair(stride, f"{name} stride")
        self.padding = _padding(padding)
        self._cache: tuple | None = None

    def config(self) -> dict:
        return {"pool": list(self.pool), "stride": list(self.stride), "padding": self.padding}

    def output_shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        win = _Window(shape[:2], self.pool, self.stride, self.padding)
        return (win.oh, win.ow, shape[2])


@nn.register
class MaxPool2d(_Pool2d):
    """Maximum over each window; "same" padding never wins. The gradient goes to the first
    maximum of each window (row-major in the window)."""

    def forward(self, x: np.ndarray) -> np.ndarray:
        _image(self, x)
        win = _Window(x.shape[1:3], self.pool, self.stride, self.padding)
        xp = win.pad(x, -np.inf)
        taps = iter(win.taps())
        _i, _j, rows, cols = next(taps)
        y = xp[:, rows, cols].copy()
        # Which tap holds each maximum: strictly greater keeps the first one, and as the
        # tap index only grows, max(arg, k * greater) updates it without a masked copy.
        arg = np.zeros(y.shape, np.uint8 if win.kernel[0] * win.kernel[1] <= 255 else np.int32)
        for k, (_i, _j, rows, cols) in enumerate(taps, 1):
            tap = xp[:, rows, cols]
            if self.training:
                np.maximum(arg, np.multiply(tap > y, k, dtype=arg.dtype), out=arg)
            np.maximum(y, tap, out=y)
        self._cache = (arg, x.shape, win) if self.training else None
        return y

    def backward(self, grad_y: np.ndarray) -> np.ndarray:
        arg, shape, win = nn.need_cache(self, self._cache)
        gxp = np.zeros((shape[0], *win.padded, shape[3]), grad_y.dtype)
        overlap = win.stride[0] < win.kernel[0] or win.stride[1] < win.kernel[1]
        for k, (_i, _j, rows, cols) in enumerate(win.taps()):
            if overlap:
                gxp[:, rows, cols] += grad_y * (arg == k)
            else:  # each input pixel is in one window at most: write in place
                np.multiply(grad_y, arg == k, out=gxp[:, rows, cols])
        return win.crop(gxp)


@nn.register
class AvgPool2d(_Pool2d):
    """Mean over each window; with "same" padding the mean of the real pixels only."""

    def _counts(self, win: _Window, shape: tuple[int, ...], dtype: Any) -> np.ndarray | float:
        """Real pixels in each window: (OH, OW, 1), or the pool area without padding."""
        if self.padding == "valid":
            return float(self.pool[0] * self.pool[1])
        ones = win.pad(np.ones((1, shape[1], shape[2], 1), dtype))
        return win.windows(ones).sum(axis=(3, 4))[0]

    def forward(self, x: np.ndarray) -> np.ndarray:
        _image(self, x)
        win = _Window(x.shape[1:3], self.pool, self.stride, self.padding)
        xp = win.pad(x)
        total = np.zeros((x.shape[0], win.oh, win.ow, x.shape[3]), x.dtype)
        for _i, _j, rows, cols in win.taps():
            total += xp[:, rows, cols]
        counts = self._counts(win, x.shape, x.dtype)
        self._cache = (x.shape, win, counts) if self.training else None
        return total / counts

    def backward(self, grad_y: np.ndarray) -> np.ndarray:
        shape, win, counts = nn.need_cache(self, self._cache)
        g = grad_y / counts
        gxp = np.zeros((shape[0], *win.padded, shape[3]), g.dtype)
        for _i, _j, rows, cols in win.taps():
            gxp[:, rows, cols] += g
        return win.crop(gxp)


@nn.register
class GlobalAvgPool2d(nn.Module):
    """(N, H, W, C) -> (N, C): the mean of each channel."""

    def output_shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        return (shape[2],)

    def forward(self, x: np.ndarray) -> np.ndarray:
        _image(self, x)
        self._shape = x.shape if self.training else None
        return x.mean(axis=(1, 2))

    def backward(self, grad_y: np.ndarray) -> np.ndarray:
        n, h, w, c = nn.need_cache(self, getattr(self, "_shape", None))
        return np.broadcast_to((grad_y / (h * w))[:, None, None, :], (n, h, w, c)).copy()


@nn.register
class BatchNorm2d(nn.Module):
    """Batch norm per channel of NHWC input: y = gamma*(x - mean)/sqrt(var + eps) + beta.

    Training uses the statistics over N, H, W and updates running ones (unbiased variance,
    `momentum` weight of the new batch); eval uses the running statistics. For export,
    `fold_batchnorm` merges it into the convolution before it.
    """

    buffers = ("running_mean", "running_var")

    def __init__(self, channels: int, eps: float = 1e-5, momentum: float = 0.1) -> None:
        super().__init__()
        self.channels = _positive(channels, "BatchNorm2d channels")
        self.eps, self.momentum = float(eps), float(momentum)
        if not self.eps > 0 or not 0 <= self.momentum <= 1:
            raise ValueError(f"BatchNorm2d needs eps > 0 and momentum in [0, 1], "
                             f"got {eps}, {momentum}")
        self.gamma = nn.Param(np.ones(self.channels, nn.DEFAULT_DTYPE))
        self.beta = nn.Param(np.zeros(self.channels, nn.DEFAULT_DTYPE))
        self.running_mean = np.zeros(self.channels, nn.DEFAULT_DTYPE)
        self.running_var = np.ones(self.channels, nn.DEFAULT_DTYPE)
        self._cache: tuple | None = None

    def config(self) -> dict:
        return {"channels": self.channels, "eps": self.eps, "momentum": self.momentum}

    def init(self, rng: np.random.Generator) -> None:
        dt, c = self.gamma.data.dtype, self.channels
        self.gamma.data, self.beta.data = np.ones(c, dt), np.zeros(c, dt)
        self.gamma.grad, self.beta.grad = np.zeros(c, dt), np.zeros(c, dt)
        self.running_mean, self.running_var = np.zeros(c, dt), np.ones(c, dt)

    def output_shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        return shape

    def forward(self, x: np.ndarray) -> np.ndarray:
        _image(self, x, self.channels)
        x2 = x.reshape(-1, self.channels)
        n = x2.shape[0]
        if self.training:
            # Sums over pixels as products with a ones vector: BLAS, far faster than
            # numpy's reductions over the leading axes.
            ones = np.ones(n, x.dtype)
            mean = (ones @ x2) / n
            xc = x2 - mean
            var = np.einsum("pc,pc->c", xc, xc) / n
            mom = self.momentum
            self.running_mean = ((1 - mom) * self.running_mean + mom * mean).astype(x.dtype)
            unbiased = var * n / max(n - 1, 1)
            self.running_var = ((1 - mom) * self.running_var + mom * unbiased).astype(x.dtype)
        else:
            mean, var = self.running_mean, self.running_var
            xc = x2 - mean
        inv = (1.0 / np.sqrt(var + self.eps)).astype(x.dtype)
        self._cache = (xc, inv) if self.training else None
        y = xc * (self.gamma.data * inv)
        y += self.beta.data
        return y.reshape(x.shape)

    def backward(self, grad_y: np.ndarray) -> np.ndarray:
        xc, inv = nn.need_cache(self, self._cache)
        g = grad_y.reshape(xc.shape)
        n = g.shape[0]
        g_sum = np.ones(n, g.dtype) @ g
        g_xc = np.einsum("pc,pc->c", g, xc)  # sum of g * xhat is inv * g_xc
        self.gamma.grad += inv * g_xc
        self.beta.grad += g_sum
        # grad_x = gamma*inv * (g - mean(g) - xhat * mean(g * xhat))
        scale = self.gamma.data * inv
        gx = g * scale
        gx -= xc * (scale * inv * inv * g_xc / n)
        gx -= scale * g_sum / n
        return gx.reshape(grad_y.shape)

    def affine(self) -> tuple[np.ndarray, np.ndarray]:
        """Inference as y = k*x + c per channel (float64)."""
        k = self.gamma.data.astype(np.float64) / np.sqrt(
            self.running_var.astype(np.float64) + self.eps)
        return k, self.beta.data.astype(np.float64) - k * self.running_mean.astype(np.float64)


def _block(layers: Any) -> nn.Sequential:
    """A Residual's block as a Sequential: from a Module, a list of Modules or saved records."""
    if isinstance(layers, nn.Sequential):
        return layers
    if isinstance(layers, nn.Module):
        return nn.Sequential(layers)
    if isinstance(layers, (list, tuple)) and layers:
        if all(isinstance(v, nn.Module) for v in layers):
            # Keep the layers' own float type (a plain Sequential would cast to float32).
            dtypes = [p.data.dtype for layer in layers for p in layer.params()]
            return nn.Sequential(*layers, dtype=dtypes[0] if dtypes else nn.DEFAULT_DTYPE)
        if all(isinstance(v, dict) for v in layers):
            block = nn.Sequential()
            for rec in layers:
                cls = nn._resolve_type(rec)
                try:
                    block.add(cls(**rec.get("config", {})))
                except TypeError as e:
                    raise ValueError(f"Residual block: {cls.__name__}: bad config: {e}") from None
            return block
    raise TypeError(
        f"Residual expects a Module, a non-empty list of Modules or saved layer records, "
        f"got {layers!r}")


@nn.register
class Residual(nn.Module):
    """y = x + block(x); the block must keep the shape of its input.

    `block` (a Sequential, or a Module or list of Modules made into one) is trained with
    the Residual; `nn.save` stores its layers inside this layer's config and its arrays
    as "<layer index>.<name>".
    """

    def __init__(self, block: Any) -> None:
        super().__init__()
        self.block = _block(block)
        self.block.train(self.training)

    def config(self) -> dict:
        return {"block": [nn._layer_record(layer) for layer in self.block.layers]}

    def init(self, rng: np.random.Generator) -> None:
        self.block.init(rng)

    def astype(self, dtype: Any) -> None:
        self.block.astype(dtype)

    def train(self, mode: bool = True) -> Residual:
        self.training = mode
        self.block.train(mode)
        return self

    def state(self) -> dict[str, np.ndarray]:
        return {f"{k}.{name}": arr for k, layer in enumerate(self.block.layers)
                for name, arr in layer.state().items()}

    def load_state(self, state: dict[str, np.ndarray]) -> None:
        parts: list[dict[str, np.ndarray]] = [{} for _ in self.block.layers]
        for key, arr in state.items():
            index, _, name = key.partition(".")
            if not index.isdigit() or int(index) >= len(parts) or not name:
                raise ValueError(f"Residual has no array {key!r}")
            parts[int(index)][name] = arr
        for layer, part in zip(self.block.layers, parts):
            layer.load_state(part)

    def output_shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        out = output_shape(self.block, shape)
        if out != tuple(shape):
            raise ValueError(f"Residual block changes the shape {tuple(shape)} to {out}")
        return out

    def forward(self, x: np.ndarray) -> np.ndarray:
        y = self.block.forward(x)
        if y.shape != x.shape:
            raise ValueError(f"Residual block changes the shape {x.shape} to {y.shape}")
        return x + y

    def backward(self, grad_y: np.ndarray) -> np.ndarray:
        return grad_y + self.block.backward(grad_y)


# ---------------------------------------------------------- shapes, MACs, BN folding


def _layer_shape(layer: nn.Module, shape: tuple[int, ...]) -> tuple[int, ...]:
    if hasattr(layer, "output_shape"):
        if len(shape) != 3 and not isinstance(layer, Residual):
            raise ValueError(f"{layer!r} needs an image (H, W, C), got shape {shape}")
        return tuple(layer.output_shape(shape))
    if isinstance(layer, Reshape):
        if int(np.prod(shape)) != int(np.prod(layer.shape)):
            raise ValueError(f"{layer!r} cannot take shape {shape}")
        return layer.shape
    if isinstance(layer, nn.Flatten):
        return (int(np.prod(shape)),)
    if isinstance(layer, nn.Linear):
        if shape[-1] != layer.n_in:
            raise ValueError(f"{layer!r} cannot take shape {shape}")
        return (*shape[:-1], layer.n_out)
    return shape  # element-wise layers: activations, Dropout, BatchNorm1d


def output_shape(model: nn.Module, shape: Sequence[int]) -> tuple[int, ...]:
    """Per-sample output shape of `model` (Sequential or layer) for per-sample input `shape`."""
    shape = tuple(int(s) for s in shape)
    layers = model.layers if isinstance(model, nn.Sequential) else [model]
    for layer in layers:
        shape = _layer_shape(layer, shape)
    return shape


def count_macs(model: nn.Module, shape: Sequence[int]) -> int:
    """Multiply-adds of one inference (convolutions and Linear layers; pools and BN not counted)."""
    shape = tuple(int(s) for s in shape)
    total = 0
    layers = model.layers if isinstance(model, nn.Sequential) else [model]
    for layer in layers:
        if isinstance(layer, (Conv2d, DepthwiseConv2d)):
            total += layer.macs(shape)
        elif isinstance(layer, nn.Linear):
            total += layer.n_in * layer.n_out * int(np.prod(shape[:-1]))
        elif isinstance(layer, Residual):
            total += count_macs(layer.block, shape)
        shape = _layer_shape(layer, shape)
    return total


FOLDABLE = (Conv2d, DepthwiseConv2d, nn.Linear)


def fold_batchnorm(layer: nn.Module, bn: nn.Module) -> nn.Module:
    """A new layer computing bn(layer(x)) in eval mode: weights scaled per output channel.

    `layer`: Conv2d, DepthwiseConv2d or Linear (its mask is kept); `bn`: a layer with
    `affine()` (BatchNorm2d, or a batch norm over features after Linear) whose size is
    the layer's output channels. The result always has a bias.
    """
    if not isinstance(layer, FOLDABLE):
        raise TypeError(f"cannot fold a batch norm into {type(layer).__name__}")
    if not callable(getattr(bn, "affine", None)):
        raise TypeError(f"{type(bn).__name__} is not a batch norm (no affine())")
    k, c = bn.affine()
    out = layer.n_out if isinstance(layer, nn.Linear) else layer.out_ch
    if k.shape != (out,):
        raise ValueError(f"batch norm of {k.shape[0]} channels after {layer!r} "
                         f"({out} output channels)")
    config = {**layer.config(), "bias": True}
    folded = type(layer)(**config)
    dt = layer.weight.data.dtype
    w = layer.weight.data.astype(np.float64)
    # Output channels: axis 0 for Conv2d (OHWI) and Linear, the last for depthwise.
    w = w * k if isinstance(layer, DepthwiseConv2d) else w * k.reshape(-1, *[1] * (w.ndim - 1))
    b = layer.bias.data.astype(np.float64) if layer.bias is not None else np.zeros(out)
    folded.astype(dt)
    folded.weight.data = w.astype(dt)
    folded.bias.data = (b * k + c).astype(dt)
    folded.weight.grad = np.zeros_like(folded.weight.data)
    folded.bias.grad = np.zeros_like(folded.bias.data)
    if isinstance(layer, nn.Linear) and layer.mask is not None:
        folded.mask = layer.mask.copy()
    folded.eval()
    return folded


def _is_batchnorm(layer: nn.Module) -> bool:
    return callable(getattr(layer, "affine", None)) and "running_var" in layer.buffers


def _fold_layers(layers: list[nn.Module]) -> list[nn.Module]:
    out: list[nn.Module] = []
    for layer in layers:
        if isinstance(layer, Residual):
            block = nn.Sequential(*_fold_layers(layer.block.layers), dtype=layer.block.dtype)
            layer = Residual(block)
        if _is_batchnorm(layer) and out and isinstance(out[-1], FOLDABLE):
            out[-1] = fold_batchnorm(out[-1], layer)
        else:
            out.append(layer)
    return out


def fold_batchnorms(model: nn.Sequential) -> nn.Sequential:
    """A copy of `model` for export, in eval mode, with every batch norm that directly
    follows a convolution or Linear layer merged into it (also inside Residual blocks).
    `model` itself is not changed.
    """
    if not isinstance(model, nn.Sequential):
        raise TypeError(f"fold_batchnorms expects a Sequential, got {type(model).__name__}")
    layers = copy.deepcopy(list(model.layers))
    folded = nn.Sequential(*_fold_layers(layers), dtype=model.dtype)
    return folded.eval()


# -------------------------------------------------------------------------- specs

_INPUT = re.compile(r"(\d+)x(\d+)x(\d+)")
_TOKENS = {
    "conv": re.compile(r"c(\d+)k(\d+)(?:s(\d+))?(v?)(b?)"),
    "depthwise": re.compile(r"d(\d*)k(\d+)(?:s(\d+))?(v?)(b?)"),
    "maxpool": re.compile(r"p(\d+)(?:s(\d+))?(v?)"),
    "avgpool": re.compile(r"a(\d+)(?:s(\d+))?(v?)"),
    "global_pool": re.compile(r"g"),
    "dense": re.compile(r"f(\d+)"),
    "dropout": re.compile(r"dr(0?\.\d+|0)"),
}


def _split(spec: str) -> list[str]:
    """Split on "-" outside parentheses; ValueError on unbalanced parentheses."""
    parts, depth, start = [], 0, 0
    for pos, ch in enumerate(spec):
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
            if depth < 0:
                raise ValueError(f"CNN spec {spec!r}: unbalanced ')'")
        elif ch == "-" and depth == 0:
            parts.append(spec[start:pos])
            start = pos + 1
    if depth:
        raise ValueError(f"CNN spec {spec!r}: unbalanced '('")
    parts.append(spec[start:])
    return parts


class _Builder:
    """Turns spec tokens into layers, tracking the per-sample shape."""

    def __init__(self, spec: str) -> None:
        self.spec = spec

    def error(self, token: str, why: str) -> ValueError:
        return ValueError(f"CNN spec {self.spec!r}, layer {token!r}: {why}")

    def image(self, token: str, shape: tuple[int, ...]) -> None:
        if len(shape) != 3:
            raise self.error(token, f"needs an image, but the input here is flat {shape}")

    def build(self, tokens: list[str], shape: tuple[int, ...], last_is_logits: bool
              ) -> tuple[list[nn.Module], tuple[int, ...]]:
        layers: list[nn.Module] = []
        for pos, token in enumerate(tokens):
            last = pos == len(tokens) - 1
            new, shape = self.layer(token, shape, last and last_is_logits)
            if last and not last_is_logits and new and isinstance(new[-1], nn.ReLU):
                new.pop()  # a residual block's last layer: ReLU after the addition
            layers += new
        return layers, shape

    def layer(self, token: str, shape: tuple[int, ...], logits: bool
              ) -> tuple[list[nn.Module], tuple[int, ...]]:
        if not token:
            raise self.error(token, "empty layer (two '-' in a row, or a '-' at an end)")
        if token.startswith("r(") and token.endswith(")"):
            inner = _split(token[2:-1])
            block, out = self.build(inner, shape, last_is_logits=False)
            if out != shape:
                raise self.error(token, f"the block changes the shape {shape} to {out}; a "
                                 "residual block must keep it (same channels, stride 1, 'same')")
            return [Residual(block), nn.ReLU()], shape
        kind, match = next(((k, m) for k, rx in _TOKENS.items()
                            if (m := rx.fullmatch(token))), (None, None))
        if match is None:
            raise self.error(token, "unknown layer; expected c<N>k<K>[s<S>][v][b], "
                             "d[<M>]k<K>[s<S>][v][b], p<K>[s<S>][v], a<K>[s<S>][v], g, f<N>, "
                             "dr<P> or r(...)")
        try:
            return getattr(self, kind)(token, match, shape, logits)
        except (ValueError, TypeError) as e:
            if isinstance(e, ValueError) and str(e).startswith("CNN spec"):
                raise
            raise self.error(token, str(e)) from None

    def _conv_tail(self, layer: nn.Module, bn: bool, shape: tuple[int, ...]
                   ) -> tuple[list[nn.Module], tuple[int, ...]]:
        out = tuple(layer.output_shape(shape))
        layers = [layer] + ([BatchNorm2d(out[2])] if bn else []) + [nn.ReLU()]
        return layers, out

    def conv(self, token: str, m: re.Match, shape: tuple[int, ...], logits: bool) -> Any:
        self.image(token, shape)
        n, k, s, valid, bn = int(m[1]), int(m[2]), int(m[3] or 1), m[4], m[5]
        layer = Conv2d(shape[2], n, k, s, "valid" if valid else "same", bias=not bn)
        return self._conv_tail(layer, bool(bn), shape)

    def depthwise(self, token: str, m: re.Match, shape: tuple[int, ...], logits: bool) -> Any:
        self.image(token, shape)
        mult, k, s, valid, bn = int(m[1] or 1), int(m[2]), int(m[3] or 1), m[4], m[5]
        layer = DepthwiseConv2d(shape[2], k, mult, s, "valid" if valid else "same", bias=not bn)
        return self._conv_tail(layer, bool(bn), shape)

    def _pool(self, cls: type[_Pool2d], token: str, m: re.Match, shape: tuple[int, ...]) -> Any:
        self.image(token, shape)
        k, s = int(m[1]), int(m[2] or m[1])
        layer = cls(k, s, "valid" if m[3] else "same")
        return [layer], tuple(layer.output_shape(shape))

    def maxpool(self, token: str, m: re.Match, shape: tuple[int, ...], logits: bool) -> Any:
        return self._pool(MaxPool2d, token, m, shape)

    def avgpool(self, token: str, m: re.Match, shape: tuple[int, ...], logits: bool) -> Any:
        return self._pool(AvgPool2d, token, m, shape)

    def global_pool(self, token: str, m: re.Match, shape: tuple[int, ...], logits: bool) -> Any:
        self.image(token, shape)
        return [GlobalAvgPool2d()], (shape[2],)

    def dense(self, token: str, m: re.Match, shape: tuple[int, ...], logits: bool) -> Any:
        layers: list[nn.Module] = []
        if len(shape) != 1:
            layers.append(nn.Flatten())
        n_in = int(np.prod(shape))
        layers.append(nn.Linear(n_in, int(m[1])))
        if not logits:
            layers.append(nn.ReLU())
        return layers, (int(m[1]),)

    def dropout(self, token: str, m: re.Match, shape: tuple[int, ...], logits: bool) -> Any:
        return [nn.Dropout(float(m[1]))], shape


def parse_input(text: str) -> tuple[int, int, int]:
    """'28x28x1' -> (28, 28, 1)."""
    m = _INPUT.fullmatch(text.strip())
    if m is None or min(int(g) for g in m.groups()) < 1:
        raise ValueError(f"CNN input shape must be HxWxC with positive sizes, got {text!r}")
    return int(m[1]), int(m[2]), int(m[3])


def build_cnn(spec: str, input_shape: Sequence[int] = (28, 28, 1),
              dtype: Any = nn.DEFAULT_DTYPE) -> nn.Sequential:
    """A Sequential from a CNN spec (grammar in the module docstring), not yet initialized.

    It starts with `Reshape(input_shape)` so it takes flat rows (the MNIST loader's) or
    images; an input shape at the head of the spec ("32x32x3:...") overrides
    `input_shape`. Raises ValueError naming the bad layer.
    """
    if not isinstance(spec, str):
        raise TypeError(f"CNN spec must be a string, got {type(spec).__name__}")
    text = spec.strip().lower()
    if ":" in text:
        head, _, text = text.partition(":")
        shape = parse_input(head)
    else:
        shape = tuple(_positive(int(s), "input size") for s in input_shape)
        if len(shape) != 3:
            raise ValueError(f"input_shape must be (H, W, C), got {tuple(input_shape)}")
    if not text:
        raise ValueError(f"CNN spec {spec!r} has no layers")
    tokens = _split(text)
    if not _TOKENS["dense"].fullmatch(tokens[-1]):
        raise ValueError(f"CNN spec {spec!r} must end with a dense layer f<N> (the logits)")
    layers, _ = _Builder(spec).build(tokens, shape, last_is_logits=True)
    return nn.Sequential(Reshape(shape), *layers, dtype=dtype)


# ---------------------------------------------------------------------- training

# The CNN policy: Adam, cosine decay over the epochs, random +-shift pixel augmentation.
CNN_DEFAULTS = {"arch": DEFAULT_CNN, "epochs": 8, "batch_size": 64, "lr": 3e-3, "shift": 1}


def train_cnn(x: np.ndarray, y: np.ndarray, *, arch: str = DEFAULT_CNN,
              epochs: int = CNN_DEFAULTS["epochs"], batch_size: int = CNN_DEFAULTS["batch_size"],
              lr: float = CNN_DEFAULTS["lr"], shift: int = CNN_DEFAULTS["shift"], seed: int = 0,
              side: int = 28, progress: Any = None) -> tuple[nn.Sequential, list[dict], dict]:
    """Build `arch` (a CNN spec) and train it on flat uint8 rows of side x side images.

    Returns (model, history, meta); meta names the spec, optimizer, schedule and shift.
    """
    model = build_cnn(arch).init(seed)
    opt = nn.Adam(model.params(), lr)
    aug = (lambda xb, rng: random_shift(xb, rng, shift, side)) if shift else None
    history = train.fit(model, x, y, optimizer=opt, epochs=epochs, batch_size=batch_size,
                        seed=seed, progress=progress, augment=aug,
                        schedule=train.cosine(lr, epochs))
    meta = {"arch": arch, "optimizer": "adam", "schedule": "cosine", "shift": shift}
    return model, history, meta
