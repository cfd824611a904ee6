"""The binary (XNOR) CNN: training layers, the spec grammar, training and the frozen int8 stem.

A binary CNN here is

    Reshape(28, 28, 1)
    Conv2d(1, C, K, S, "valid") BatchNorm2d [MaxPool2d] SignSTE    the stem: real weights
                                                                   (int8 on the device)
    [BinaryConv2d(C_in, C_out, K, S) BatchNorm2d [MaxPool2d] SignSTE | MaxPool2d]*
    [Flatten] [BinaryLinear BatchNorm1d SignSTE]*                  hidden dense layers
    BinaryLinear BatchNorm1d                                       the logits

and its graph (`to_graph`, format version 2): the stem as BINARIZE_CONV_2D (an int8
convolution whose output bit is its accumulator's sign: no requantization), binary
convolutions and dense layers as XNOR_CONV_2D (a dense layer is a window over its whole
input; the last one gives int32 fixed-point logits), pools as BINARY_MAX_POOL_2D.

A pool right after a convolution pools the batch norm's output and signs the result
(conv -> BN -> pool -> sign): the same values as signing first and pooling the ±1 values
(the maximum's sign is the OR of the signs), which is what the device does with bits
(sign, then BINARY_MAX_POOL_2D), but the gradient reaches the window's maximum.

Padding: every binary convolution is "valid" (no padding), so no tap ever reads a value
the ±1 arithmetic cannot represent; the device computes exactly what training computed.

Training (`train_xnor_cnn`) runs in two phases. Phase 1 trains everything with a float
stem (Adam, learning rate decaying exponentially as `xnor.fit`). Phase 2 freezes the stem
as the integer layer the device runs (`QuantConv2d`: its batch norm folded into the
convolution, weights int8 per channel, bias int32 on the scale of the accumulator) and
trains the binary layers for a few more epochs on its exact output signs. The saved model
therefore computes, bit for bit, what its lowered graph computes (`to_graph`).

Specs (`build_xnor_cnn(spec)`): layers joined by "-", input 28x28x1:

    spec   := stem ("-" layer)*
    stem   := "c" N "k" K [s S]       Conv2d N filters KxK stride S (default 1), valid
    layer  := "b" N "k" K [s S]       BinaryConv2d N filters KxK stride S, valid
            | "p" K [s S]             MaxPool2d KxK stride S (default K), valid
            | "f" N                   BinaryLinear to N (hidden: sign; last: the logits)

A spec ends with "f" N (the logits).

The first default shape, "c32k4s4-b32k3-f64-f10", follows the device's costs, measured
on the virtual Pico (C tier, emulated RP2040, `_nn_c.graph_run` on the graph in flash).
The stem (BINARIZE_CONV_2D) lists each output position's pixels that are not blank
(x != zx) once and sums only those: about 6 cycles per non-blank tap and output channel,
35 per output channel of a position with any such tap, 400 per position (the gather of 16
taps; a blank position copies the bits of the previous one). An XNOR_CONV_2D output
channel costs about 20 cycles plus 13-18 per word of its receptive field. So the stem
reads 4x4 patches at stride 4 (7x7x32; an MNIST digit has 141 non-blank taps in 18 of
the 49 positions on average), one binary 3x3 convolution gives 5x5x32 (800 outputs of 9
words), then a binary dense layer of 64 and the logits: 98.27%, 2.02 ms per digit on
average over 30 test digits (1.83-2.27 ms; the stem 0.52 ms of it, 0.33-0.77 ms, the 3x3
binary convolution 1.23 ms, the dense layers 0.21 ms), 45,851 bytes read from flash per
digit. (Lowered to CONV_2D + BINARIZE, with requantization per output, the same network
took 2.80 ms.) Before that lowering, with 24 stem channels: 97.83% and 2.34-2.65 ms (5
digits); with 16, 97.54% and 2.16-2.38 ms. A 13x13 stem with a pool (c16k3s2-p2-b64k3-f128-f10) reached 97.86% but
takes 4.7-4.8 ms.

That network underfits (96.7% training accuracy at the end). The default (`DEFAULT_SPEC`,
"c32k6s4-b64k3-f128-f10") reads overlapping 6x6 patches at stride 4 (6x6x32; the last 4
rows and columns, blank in MNIST, unread), one binary 3x3 convolution gives 4x4x64 (1,024
outputs of 9 words), then a binary dense layer of 128 (32 words each) and the logits.
Trained as `TRAIN_DEFAULTS` (seed 0, +-1 pixel shifts, batch 100, 30 epochs of Adam from
lr 0.01 falling 100x exponentially, then the stem frozen and 2 epochs from lr/100 to lr/1000):
98.80% on the MNIST test set (the graph predicts as the model on all 10,000 digits), 2.85
ms per digit (2.57-3.09 ms, 10 test digits; `tools/bench_xnor_cnn.py --pico`, with the
9-word popcount loop of docs/KERNELS.md), 69,931 bytes read from flash per digit, 20,128
bytes of weights (a 22,008-byte graph). Tried with the same recipe (test accuracy of the
trained model, which its graph equals; ms per digit on the emulated RP2040, C tier, 5-10
digits, where measured; the 2.02 ms row before the 9-word loop):

    spec                            epochs   test     ms      weights
    c32k4s4-b32k3-f64-f10           20 + 2   98.27%   2.02     8,272 B  (phase 2 from lr/10)
    c32k4s4-b32k3-f128-f10          30 + 2   98.61%   2.20    14,752 B
    c32k6s4-b32k3-f128-f10          30 + 2   98.62%   1.87    10,784 B
    c32k6s4-b32k3-f128-f10          50 + 2   98.77%   1.87    10,784 B
    c32k6s4-b32k3-f128-f10          65 + 2   98.67%   -       10,784 B
    c32k6s4-b32k3-f128-f10          80 + 2   98.79%   -       10,784 B
    c32k6s4-b64k3-f64-f10           30       98.68%   -       11,856 B
    c32k6s4-b64k3-f128-f10          30 + 2   98.80%   2.85    20,128 B  the default

c32k4s4-b32k3-b32k3-f128-f10 trained no better than the first row (stopped at epoch 12 of
30). The 64-channel convolution lifts the training accuracy to 98.3%; it costs about 164
cycles per 9-word output channel (1.3 ms of the 2.85).
"""

from __future__ import annotations

import copy
import re
from collections.abc import Sequence
from typing import Any, TextIO

import numpy as np

from . import conv, int8_ops, nn, quant_int8, train, xnor
from . import graph as g
from .data import random_shift
from .format import words
from .xnor import BinaryLinear, SignSTE

__all__ = [
    "DEFAULT_SPEC",
    "TRAIN_DEFAULTS",
    "BinaryConv2d",
    "QuantConv2d",
    "build_xnor_cnn",
    "freeze_stem",
    "is_xnor_cnn",
    "layer_costs",
    "train_xnor_cnn",
]

DEFAULT_SPEC = "c32k6s4-b64k3-f128-f10"
INPUT_SHAPE = (28, 28, 1)
INPUT_LEVELS = 255  # the stem sees pixel / 255; on the device the int8 byte pixel - 128
WEIGHT_MAX = 127  # symmetric int8 weights of the stem, as TFLite


def _sign(x: np.ndarray) -> np.ndarray:
    return np.where(x >= 0, 1, -1).astype(x.dtype)


# ------------------------------------------------------------------------ layers


@nn.register
class BinaryConv2d(nn.Module):
    """2-D convolution with ±1 weights (signs of latent weights in [-1, 1]; 0 counts as +1),
    "valid" padding, no bias, NHWC. Weight (out_ch, kh, kw, in_ch) as `conv.Conv2d`.

    The gradient passes straight through the sign (STE) where |w| <= 1, as in
    `xnor.BinaryLinear`; the latent weights are clipped to [-1, 1] before each training
    forward.
    """

    def __init__(self, in_ch: int, out_ch: int, kernel: int | Sequence[int] = 3,
                 stride: int | Sequence[int] = 1) -> None:
        super().__init__()
        self.in_ch = conv._positive(in_ch, "BinaryConv2d in_ch")
        self.out_ch = conv._positive(out_ch, "BinaryConv2d out_ch")
        self.kernel = conv._pair(kernel, "BinaryConv2d kernel")
        self.stride = conv._pair(stride, "BinaryConv2d stride")
        self.padding = "valid"
        self.weight = nn.Param(np.zeros((self.out_ch, *self.kernel, self.in_ch), nn.DEFAULT_DTYPE))
        self.input_grad = True
        self._cache: tuple | None = None

    def config(self) -> dict:
        return {"in_ch": self.in_ch, "out_ch": self.out_ch, "kernel": list(self.kernel),
                "stride": list(self.stride)}

    def init(self, rng: np.random.Generator) -> None:
        dt = self.weight.data.dtype
        self.weight.data = rng.uniform(-1, 1, self.weight.data.shape).astype(dt)
        self.weight.grad = np.zeros_like(self.weight.data)

    def binary_weight(self) -> np.ndarray:
        """The ±1 weights the forward pass uses."""
        return _sign(self.weight.data)

    def output_shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        win = conv._Window(shape[:2], self.kernel, self.stride, "valid")
        return (win.oh, win.ow, self.out_ch)

    def macs(self, shape: tuple[int, ...]) -> int:
        oh, ow, _ = self.output_shape(shape)
        return oh * ow * self.out_ch * self.kernel[0] * self.kernel[1] * self.in_ch

    def forward(self, x: np.ndarray) -> np.ndarray:
        conv._image(self, x, self.in_ch)
        if self.training:
            np.clip(self.weight.data, -1, 1, out=self.weight.data)
        n = x.shape[0]
        win = conv._Window(x.shape[1:3], self.kernel, self.stride, "valid")
        cols = win.windows(x).reshape(n * win.oh * win.ow, -1)
        wb = self.binary_weight().reshape(self.out_ch, -1)
        y = cols @ wb.T
        self._cache = (cols, x.shape, win) if self.training else None
        return y.reshape(n, win.oh, win.ow, self.out_ch)

    def backward(self, grad_y: np.ndarray) -> np.ndarray:
        cols, shape, win = nn.need_cache(self, self._cache)
        g = grad_y.reshape(-1, self.out_ch)
        gw = (g.T @ cols).reshape(self.weight.data.shape)
        gw *= np.abs(self.weight.data) <= 1
        self.weight.grad += gw
        if not self.input_grad:
            return None  # type: ignore[return-value]
        wb = self.binary_weight()
        gx = np.zeros((shape[0], *win.padded, self.in_ch), np.result_type(g, wb))
        for i, j, rows, cols_ in win.taps():
            gx[:, rows, cols_] += (g @ wb[:, i, j, :]).reshape(shape[0], win.oh, win.ow, -1)
        return gx


@nn.register
class QuantConv2d(nn.Module):
    """The frozen stem as the device computes it: an int8 convolution whose output is only
    ever signed (a `SignSTE` follows it).

    Input: pixel / 255 (NHWC floats, as `train.prepare` gives). Output: the exact integer
    accumulator `v = bias + sum(weight * pixel)` (as floats; int8 weights, int32 bias), so
    `v >= 0` is the output bit. No parameters: phase 2 of `train_xnor_cnn` trains the
    binary layers after it. `scale` (per channel, f32) is the real value of one weight step
    over the pixel scale; with it `v * scale / 255` is the stem's real pre-sign output.
    """

    buffers = ("weight", "bias", "scale")

    def __init__(self, in_ch: int, out_ch: int, kernel: int | Sequence[int] = 3,
                 stride: int | Sequence[int] = 1) -> None:
        super().__init__()
        self.in_ch = conv._positive(in_ch, "QuantConv2d in_ch")
        self.out_ch = conv._positive(out_ch, "QuantConv2d out_ch")
        self.kernel = conv._pair(kernel, "QuantConv2d kernel")
        self.stride = conv._pair(stride, "QuantConv2d stride")
        self.weight = np.zeros((self.out_ch, *self.kernel, self.in_ch), np.int8)
        self.bias = np.zeros(self.out_ch, np.int32)
        self.scale = np.ones(self.out_ch, np.float32)

    def config(self) -> dict:
        return {"in_ch": self.in_ch, "out_ch": self.out_ch, "kernel": list(self.kernel),
                "stride": list(self.stride)}

    def output_shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        win = conv._Window(shape[:2], self.kernel, self.stride, "valid")
        return (win.oh, win.ow, self.out_ch)

    def macs(self, shape: tuple[int, ...]) -> int:
        oh, ow, _ = self.output_shape(shape)
        return oh * ow * self.out_ch * self.kernel[0] * self.kernel[1] * self.in_ch

    def accumulate(self, pixels: np.ndarray) -> np.ndarray:
        """int64 accumulators (N, OH, OW, C) of integer pixels (N, H, W, in_ch)."""
        win = conv._Window(pixels.shape[1:3], self.kernel, self.stride, "valid")
        n = pixels.shape[0]
        cols = win.windows(np.ascontiguousarray(pixels, np.int64)).reshape(n * win.oh * win.ow, -1)
        acc = cols @ self.weight.reshape(self.out_ch, -1).astype(np.int64).T
        acc += self.bias.astype(np.int64)
        return acc.reshape(n, win.oh, win.ow, self.out_ch)

    def forward(self, x: np.ndarray) -> np.ndarray:
        conv._image(self, x, self.in_ch)
        pixels = np.rint(np.asarray(x, np.float64) * INPUT_LEVELS)
        if np.any(pixels < 0) or np.any(pixels > INPUT_LEVELS):
            raise ValueError("QuantConv2d takes pixel / 255 in [0, 1]")
        return self.accumulate(pixels.astype(np.int64)).astype(x.dtype)

    def backward(self, grad_y: np.ndarray) -> np.ndarray:
        return None  # type: ignore[return-value]  # frozen, and the model input needs none


def quantize_stem(layer: conv.Conv2d, bn: conv.BatchNorm2d) -> QuantConv2d:
    """Conv2d + BatchNorm2d -> QuantConv2d with the same output signs up to quantization.

    The batch norm is folded into the convolution (`conv.fold_batchnorm`), the weights
    quantized symmetrically per output channel (max |w| -> 127) and the bias rounded on
    the accumulator's scale (w_scale / 255), then clamped to just beyond the largest
    |accumulator| the weights can reach (which keeps every sign).
    """
    folded = conv.fold_batchnorm(layer, bn)
    w = folded.weight.data.astype(np.float64)
    b = folded.bias.data.astype(np.float64)
    peak = np.abs(w).reshape(len(w), -1).max(axis=1)
    scale = np.where(peak > 0, peak / WEIGHT_MAX, 1.0 / WEIGHT_MAX)
    wq = np.clip(np.round(w / scale[:, None, None, None]), -WEIGHT_MAX, WEIGHT_MAX)
    reach = np.abs(wq).reshape(len(wq), -1).sum(axis=1) * INPUT_LEVELS
    bq = np.clip(np.round(b * INPUT_LEVELS / scale), -reach - 1, reach + 1)
    q = QuantConv2d(layer.in_ch, layer.out_ch, layer.kernel, layer.stride)
    q.weight, q.bias, q.scale = wq.astype(np.int8), bq.astype(np.int32), scale.astype(np.float32)
    return q.eval()


# -------------------------------------------------------------------------- specs

_TOKENS = {
    "stem": re.compile(r"c(\d+)k(\d+)(?:s(\d+))?"),
    "binary_conv": re.compile(r"b(\d+)k(\d+)(?:s(\d+))?"),
    "pool": re.compile(r"p(\d+)(?:s(\d+))?"),
    "dense": re.compile(r"f(\d+)"),
}


def _error(spec: str, token: str, why: str) -> ValueError:
    return ValueError(f"XNOR CNN spec {spec!r}, layer {token!r}: {why}")


def build_xnor_cnn(spec: str = DEFAULT_SPEC, seed: int | None = None) -> nn.Sequential:
    """A binary CNN from a spec (grammar in the module docstring); initialized from `seed`
    when given. Raises ValueError naming the bad layer."""
    if not isinstance(spec, str):
        raise TypeError(f"XNOR CNN spec must be a string, got {type(spec).__name__}")
    tokens = spec.strip().lower().split("-")
    shape: tuple[int, ...] = INPUT_SHAPE
    layers: list[nn.Module] = [conv.Reshape(INPUT_SHAPE)]
    for pos, token in enumerate(tokens):
        kind, m = next(((k, m) for k, rx in _TOKENS.items() if (m := rx.fullmatch(token))),
                       (None, None))
        if m is None:
            raise _error(spec, token, "unknown layer; expected c<N>k<K>[s<S>] (first), "
                         "b<N>k<K>[s<S>], p<K>[s<S>] or f<N>")
        if (kind == "stem") != (pos == 0):
            raise _error(spec, token, "the spec starts with the stem c<N>k<K>[s<S>], "
                         "and only there")
        last = pos == len(tokens) - 1
        if last and kind != "dense":
            raise _error(spec, token, "the spec must end with f<N> (the logits)")
        try:
            shape = _add_layer(layers, kind, m, shape, last)
        except (TypeError, ValueError) as e:
            raise _error(spec, token, str(e)) from None
        if min(shape) < 1:
            raise _error(spec, token, f"gives an empty output {shape}")
    model = nn.Sequential(*layers)
    return model if seed is None else model.init(seed)


def _add_layer(layers: list[nn.Module], kind: str, m: re.Match, shape: tuple[int, ...],
               last: bool) -> tuple[int, ...]:
    if kind != "dense" and len(shape) != 3:
        raise ValueError(f"needs an image, but the input here is flat {shape}")
    if kind in ("stem", "binary_conv"):
        n, k, s = int(m[1]), int(m[2]), int(m[3] or 1)
        layer = (conv.Conv2d(shape[2], n, k, s, "valid", bias=False) if kind == "stem"
                 else BinaryConv2d(shape[2], n, k, s))
        out = layer.output_shape(shape)
        layers += [layer, conv.BatchNorm2d(n), SignSTE()]
        return out
    if kind == "pool":
        k = int(m[1])
        layer = conv.MaxPool2d(k, int(m[2] or k), "valid")
        if isinstance(layers[-1], SignSTE) and isinstance(layers[-2], conv.BatchNorm2d):
            layers.insert(len(layers) - 1, layer)  # pool the batch norm's output, then sign
        else:
            layers.append(layer)
        return layer.output_shape(shape)
    n_in = int(np.prod(shape))
    if len(shape) != 1:
        layers.append(nn.Flatten())
    n = int(m[1])
    layers += [BinaryLinear(n_in, n), nn.BatchNorm1d(n)]
    if not last:
        layers.append(SignSTE())
    return (n,)


def is_xnor_cnn(model: nn.Module) -> bool:
    """Whether `model` is a binary CNN of this module (a binary convolution or frozen stem)."""
    return isinstance(model, nn.Sequential) and any(
        isinstance(la, (BinaryConv2d, QuantConv2d)) for la in model.layers)


def layer_costs(model: nn.Sequential) -> list[dict]:
    """Per weighted layer of a binary CNN: kind, output shape, MACs (the stem, int8) or
    XOR+popcount words (binary layers: each pixel's channels packed 32 to a word, a
    flattened image keeps that packing), weight bytes as stored on the device."""
    shape: tuple[int, ...] = INPUT_SHAPE
    packed = 0  # words of one sample's bits (each pixel's channels in whole words)
    rows = []
    for layer in model.layers[1:]:
        if isinstance(layer, (BinaryConv2d, QuantConv2d, conv.Conv2d)):
            out = tuple(layer.output_shape(shape))
        elif isinstance(layer, BinaryLinear):
            out = (layer.n_out,)
        else:
            out = conv._layer_shape(layer, shape)
        if isinstance(layer, (conv.Conv2d, QuantConv2d)):
            rows.append({"layer": "stem (int8 conv)", "output": list(out),
                         "macs": layer.macs(shape), "word_ops": 0,
                         "weight_bytes": layer.out_ch * layer.kernel[0] * layer.kernel[1]
                         * layer.in_ch + 4 * layer.out_ch})
        elif isinstance(layer, BinaryConv2d):
            per_out = layer.kernel[0] * layer.kernel[1] * words(layer.in_ch)
            rows.append({"layer": "binary conv", "output": list(out), "macs": 0,
                         "word_ops": out[0] * out[1] * out[2] * per_out,
                         "weight_bytes": 4 * layer.out_ch * per_out})
        elif isinstance(layer, BinaryLinear):
            rows.append({"layer": "binary dense", "output": list(out), "macs": 0,
                         "word_ops": packed * layer.n_out,
                         "weight_bytes": 4 * packed * layer.n_out})
        shape = tuple(out)
        if len(shape) == 3:
            packed = shape[0] * shape[1] * words(shape[2])
        elif not isinstance(layer, nn.Flatten):  # a flattened image keeps its pixels' words
            packed = words(shape[0])
    return rows


# ---------------------------------------------------------------------- training

# DEFAULT_SPEC, 50 + 2 epochs, +-1 pixel shifts: 98.77% on the MNIST test set (seed 0), the
# graph 1.97 ms per digit on the virtual Pico (C tier); more in the module docstring.
# c24k4s4-b32k3-f64-f10: 97.83%; c16k4s4-b32k3-f64-f10: 97.54% (distilled from the float
# DEFAULT_CNN, --teacher; 97.53% without, 15 + 2 epochs).
TRAIN_DEFAULTS = {"arch": DEFAULT_SPEC, "epochs": 30, "batch_size": 100, "lr": 1e-2, "shift": 1}
FINETUNE_EPOCHS = 2
# Phase 1's learning rate falls by LR_DECAY; phase 2 starts where phase 1 ended and falls
# by FINETUNE_DECAY more. Restarting phase 2 at lr / 10 undid part of phase 1: on
# c32k6s4-b64k3-f128-f10 98.80% frozen, 98.60% after 2 epochs from lr / 10, 98.80% from
# lr / 100; on c32k6s4-b64k3-f64-f10 98.68% frozen, 98.57% from lr / 10.
LR_DECAY = 100.0
FINETUNE_DECAY = 10.0
DISTILL_TEMPERATURE = 4.0
DISTILL_WEIGHT = 0.7


def _stem(model: nn.Sequential) -> tuple[int, conv.Conv2d, conv.BatchNorm2d]:
    if (len(model.layers) < 4 or not isinstance(model.layers[1], conv.Conv2d)
            or not isinstance(model.layers[2], conv.BatchNorm2d)):
        raise ValueError("a binary CNN with a float stem starts with Reshape, Conv2d, "
                         "BatchNorm2d")
    return 1, model.layers[1], model.layers[2]


def freeze_stem(model: nn.Sequential) -> nn.Sequential:
    """A copy of `model` whose float stem (Conv2d, BatchNorm2d) is the integer
    `QuantConv2d` (`quantize_stem`); the other layers are copies."""
    at, layer, bn = _stem(model)
    layers = copy.deepcopy(list(model.layers))
    layers[at:at + 2] = [quantize_stem(layer, bn)]
    return nn.Sequential(*layers, dtype=model.dtype)


class _Distill:
    """Soft targets from a trained float model (knowledge distillation): the loss is the
    cross-entropy against `weight * softmax(teacher / temperature) + (1 - weight) * labels`,
    the teacher run on each (augmented) batch the student sees."""

    def __init__(self, teacher: nn.Sequential, temperature: float, weight: float,
                 shift: int) -> None:
        self.teacher, self.temperature, self.weight, self.shift = teacher, temperature, weight, shift
        self.soft: np.ndarray | None = None

    def augment(self, xb: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        if self.shift:
            xb = random_shift(xb, rng, self.shift)
        z = np.asarray(self.teacher.forward(train.prepare(xb)), np.float64) / self.temperature
        z -= z.max(axis=1, keepdims=True)
        p = np.exp(z)
        self.soft = p / p.sum(axis=1, keepdims=True)
        return xb

    def loss(self, out: np.ndarray, labels: np.ndarray) -> nn.Loss:
        target = self.weight * nn.need_cache(self, self.soft)
        target[np.arange(len(labels)), labels] += 1 - self.weight
        return nn.cross_entropy(out, target.astype(out.dtype))


def _fit(model: nn.Sequential, x: np.ndarray, y: np.ndarray, *, epochs: int, lr: float,
         lr_end: float, batch_size: int, seed: int, shift: int,
         progress: bool | TextIO | None, distill: _Distill | None = None) -> list[dict]:
    opt = nn.Adam(model.params(), lr)
    decay = (lr_end / lr) ** (1 / max(epochs - 1, 1))
    aug = (lambda xb, rng: random_shift(xb, rng, shift)) if shift else None
    loss: Any = "cross_entropy"
    if distill is not None:
        aug, loss = distill.augment, distill.loss
    return train.fit(model, x, y, loss=loss, optimizer=opt, epochs=epochs,
                     batch_size=batch_size, seed=seed, progress=progress,
                     schedule=lambda e: lr * decay**e, augment=aug)


def train_xnor_cnn(x: np.ndarray, y: np.ndarray, *, arch: str = DEFAULT_SPEC,
                   epochs: int = TRAIN_DEFAULTS["epochs"],
                   batch_size: int = TRAIN_DEFAULTS["batch_size"],
                   lr: float = TRAIN_DEFAULTS["lr"], shift: int = TRAIN_DEFAULTS["shift"],
                   finetune: int = FINETUNE_EPOCHS, seed: int = 0,
                   teacher: nn.Sequential | None = None,
                   temperature: float = DISTILL_TEMPERATURE, distill_weight: float = DISTILL_WEIGHT,
                   progress: bool | TextIO | None = None
                   ) -> tuple[nn.Sequential, list[dict], dict]:
    """`piconn train mnist --kind xnor --model cnn`: phase 1, `epochs` epochs of Adam with
    the learning rate decaying 100x exponentially; phase 2, the stem frozen as integers
    (`freeze_stem`) and `finetune` more epochs of the binary layers from phase 1's last
    rate lr/100 down to lr/1000. With a `teacher` (a trained float model taking the same
    images), both phases learn from its softened outputs too (`_Distill`). Returns (model,
    history of both phases, meta)."""
    model = build_xnor_cnn(arch, seed)
    distill = None
    if teacher is not None:
        if not 0 <= distill_weight <= 1 or not temperature > 0:
            raise ValueError("distillation needs a weight in [0, 1] and a temperature > 0")
        distill = _Distill(teacher.eval(), temperature, distill_weight, shift)
    last_lr = lr / LR_DECAY
    history = _fit(model, x, y, epochs=epochs, lr=lr, lr_end=last_lr, batch_size=batch_size,
                   seed=seed, shift=shift, progress=progress, distill=distill)
    model = freeze_stem(model)
    if finetune:
        history += _fit(model, x, y, epochs=finetune, lr=last_lr,
                        lr_end=last_lr / FINETUNE_DECAY, batch_size=batch_size, seed=seed + 1,
                        shift=shift, progress=progress, distill=distill)
    model.eval()
    costs = layer_costs(model)
    meta = {"arch": arch, "optimizer": "adam", "schedule": "exponential", "shift": shift,
            "finetune_epochs": finetune, "layers": costs,
            "weight_bytes": sum(r["weight_bytes"] for r in costs)}
    if distill is not None:
        meta.update(distill_temperature=temperature, distill_weight=distill_weight)
    return model, history, meta


def predict_signs(model: nn.Sequential, x: np.ndarray, batch_size: int = 1000) -> np.ndarray:
    """Logits of the trained network in float64 (its reference for the lowered graph)."""
    m = copy.deepcopy(model)
    m.astype(np.float64)
    m.dtype = np.dtype(np.float64)
    return train.predict(m, x, batch_size)


# --------------------------------------------------------------------------- lowering

INPUT_SCALE = 1.0 / 255.0  # the graph input: int8 pixel - 128 (as piconn.quant_int8)
INPUT_ZERO_POINT = -128


class _GraphBuilder:
    def __init__(self) -> None:
        self.tensors: list[g.Tensor] = []
        self.operators: list[g.Operator] = []

    def tensor(self, name: str, shape: tuple[int, ...], dtype: str, quant: g.Quant | None = None,
               data: np.ndarray | None = None) -> int:
        self.tensors.append(g.Tensor(name, tuple(int(s) for s in shape), dtype, quant, data))
        return len(self.tensors) - 1

    def op(self, kind: str, inputs: tuple[int, ...], output: int, options: object = None) -> int:
        self.operators.append(g.Operator(kind, tuple(inputs), (output,), options))
        return output

    def pool(self, x: int, layer: conv.MaxPool2d, name: str) -> int:
        if layer.padding != "valid":
            raise ValueError(f"{layer!r}: the binary CNN pools with 'valid' padding only")
        _, h, w, c = self.tensors[x].shape
        oh, ow, _ = layer.output_shape((h, w, c))
        y = self.tensor(name, (1, oh, ow, c), g.BITS)
        return self.op(g.BINARY_MAX_POOL_2D, (x,), y, g.PoolOptions(
            layer.pool[0], layer.pool[1], layer.stride[0], layer.stride[1], g.VALID))


def _per_tensor(scale: float, zero: int) -> g.Quant:
    return g.Quant(np.array([scale], np.float32), np.array([zero], np.int32))


def _stem_op(b: _GraphBuilder, x: int, q: QuantConv2d) -> int:
    """BINARIZE_CONV_2D: bit = sum((x - zx) * weight) >= -bias with x - zx the pixel
    (0..255), i.e. the frozen stem's accumulator v >= 0, exactly (no requantization). The
    weights keep their quantization scales (informative: only the sign of v is used)."""
    _, h, wd, _ = b.tensors[x].shape
    oh, ow, c = q.output_shape((h, wd, q.in_ch))
    w = b.tensor("stem.weight", q.weight.shape, g.INT8,
                 g.Quant(q.scale.astype(np.float32), np.zeros(q.out_ch, np.int32), 0), q.weight)
    thr = b.tensor("stem.thresholds", (q.out_ch,), g.INT32, None,
                   (-q.bias.astype(np.int64)).astype(np.int32))
    bits = b.tensor("stem.bits", (1, oh, ow, c), g.BITS)
    return b.op(g.BINARIZE_CONV_2D, (x, w, thr), bits,
                g.ConvOptions(q.stride[0], q.stride[1], g.VALID))


def _xnor_op(b: _GraphBuilder, x: int, w_pm: np.ndarray, k: np.ndarray, c: np.ndarray,
             stride: tuple[int, int], name: str, logits: bool) -> int:
    """XNOR_CONV_2D of ±1 weights w_pm [C_out, kh, kw, C_in] (VALID) computing
    sign(k*h + c) (bits) or the fixed-point k*h + c (int32 logits)."""
    c_out, kh, kw, c_in = w_pm.shape
    n = kh * kw * c_in
    bits = w_pm > 0
    _, h, wd, _ = b.tensors[x].shape
    oh, ow = (h - kh) // stride[0] + 1, (wd - kw) // stride[1] + 1
    if logits:
        a, bb, out_scale = xnor.fixed_point_affine(k, c, n)
        table = np.stack([a, bb]).astype(np.int32)
        y = b.tensor(f"{name}.out", (1, oh, ow, c_out), g.INT32, _per_tensor(out_scale, 0))
    else:
        thr, invert = xnor.fold_threshold(k, c, n)
        bits = bits ^ invert[:, None, None, None]
        table = thr.astype(np.int32)
        y = b.tensor(f"{name}.out", (1, oh, ow, c_out), g.BITS)
    wt = b.tensor(f"{name}.weight", bits.shape, g.BITS, None, bits)
    ct = b.tensor(f"{name}.channels", table.shape, g.INT32, None, table)
    return b.op(g.XNOR_CONV_2D, (x, wt, ct), y, g.ConvOptions(stride[0], stride[1], g.VALID))


def to_graph(model: nn.Sequential, name: str = "cnn_xnor") -> g.Graph:
    """A trained binary CNN (its stem frozen: `freeze_stem`) -> a version-2 graph:
    BINARIZE_CONV_2D (the stem), XNOR_CONV_2D (binary convolutions and dense layers,
    bits out; the last one int32 fixed-point logits) and BINARY_MAX_POOL_2D. The graph
    takes the int8 image (pixel - 128) and computes what `model` computes: the same
    bits, and logits equal to the model's up to the fixed point's rounding."""
    layers = [la for la in model.layers if not isinstance(la, nn.Dropout)]
    if not layers or not isinstance(layers[0], conv.Reshape) or layers[0].shape != INPUT_SHAPE:
        raise ValueError(f"a binary CNN starts with Reshape{INPUT_SHAPE}")
    if len(layers) < 2 or not isinstance(layers[1], QuantConv2d):
        raise ValueError("the stem must be frozen first (freeze_stem: QuantConv2d after Reshape)")
    b = _GraphBuilder()
    x_in = b.tensor("input", (1, *INPUT_SHAPE), g.INT8, _per_tensor(INPUT_SCALE, INPUT_ZERO_POINT))
    x = _stem_op(b, x_in, layers[1])
    i = 2
    expect_sign = True  # the stem's SignSTE (maybe after a pool) is still to come
    pending_pool: conv.MaxPool2d | None = None
    n_layer = 0
    while i < len(layers):
        layer = layers[i]
        if isinstance(layer, conv.MaxPool2d):
            if expect_sign:
                pending_pool = layer
            else:
                x = b.pool(x, layer, f"pool{i}")
            i += 1
        elif isinstance(layer, SignSTE):
            if not expect_sign:
                raise ValueError(f"layer {i}: SignSTE without a convolution or dense layer before")
            if pending_pool is not None:
                x = b.pool(x, pending_pool, f"pool{i}")
                pending_pool = None
            expect_sign = False
            i += 1
        elif isinstance(layer, nn.Flatten):
            i += 1
        elif isinstance(layer, (BinaryConv2d, BinaryLinear)):
            if expect_sign:
                raise ValueError(f"layer {i}: {type(layer).__name__} before the previous sign")
            bn = layers[i + 1] if i + 1 < len(layers) else None
            if not callable(getattr(bn, "affine", None)):
                raise TypeError(f"layer {i}: {type(layer).__name__} must be followed by a batch"
                                " norm")
            k, c = bn.affine()
            _, h, wd, ch = b.tensors[x].shape
            if isinstance(layer, BinaryConv2d):
                w_pm, stride = layer.binary_weight(), layer.stride
            else:
                if layer.n_in != h * wd * ch:
                    raise ValueError(f"layer {i}: {layer!r} takes {layer.n_in} inputs, the"
                                     f" layer before gives {h * wd * ch}")
                w_pm = layer.binary_weight().reshape(layer.n_out, h, wd, ch)
                stride = (1, 1)
                if layer.bias is not None:
                    c = c + k * layer.bias.data.astype(np.float64)
            i += 2
            last = i >= len(layers)
            n_layer += 1
            x = _xnor_op(b, x, w_pm, k, c, stride, f"xnor{n_layer}", logits=last)
            expect_sign = not last
        else:
            raise TypeError(f"layer {i}: {type(layer).__name__} has no binary-graph equivalent")
    if expect_sign or b.tensors[x].dtype != g.INT32:
        raise ValueError("a binary CNN ends with a binary dense layer and its batch norm (the"
                         " logits)")
    graph = g.Graph(b.tensors, b.operators, [x_in], [x], name)
    int8_ops.prepare(graph)
    return graph


def graph_logits(graph: g.Graph, x: np.ndarray, batch: int = 500) -> np.ndarray:
    """The graph's int32 logits [N, classes] for uint8 images [N, 784], by the reference."""
    y = quant_int8.predict_int8(graph, x, batch)
    return y.reshape(len(y), -1)


def word_ops(graph: g.Graph) -> list[dict]:
    """Per operator of a binary graph: kind, output shape, MACs (int8) or XOR+popcount words
    (XNOR_CONV_2D: output pixels x channels x kh x kw x words(C_in)), constant bytes."""
    rows = []
    for k, op in enumerate(graph.operators):
        out = graph.tensors[op.outputs[0]]
        words_ = 0
        if op.kind == g.XNOR_CONV_2D:
            w = graph.tensors[op.inputs[1]].shape
            words_ = out.size * w[1] * w[2] * words(w[3])
        consts = sum(graph.tensors[i].nbytes for i in op.inputs
                     if i != g.NO_TENSOR and graph.tensors[i].is_constant)
        rows.append({"index": k, "op": op.kind, "output": list(out.shape),
                     "macs": graph.op_macs(k), "word_ops": words_, "const_bytes": consts})
    return rows
