"""Post-training int8 quantization of a trained `nn.Sequential` (MLP or CNN) to a `graph.Graph`.

The scheme is TensorFlow Lite's full-integer one, so the graph runs on `int8_ops.run`
(bit-exact with TFLite Micro), `format2.to_bytes` writes it and the device runs it:

- batch norms are folded into the convolution or Linear layer before them first
  (`conv.fold_batchnorms`);
- activations are int8 with one scale and zero point per tensor, from the minimum and
  maximum that tensor takes on the calibration images in the float model, the range
  stretched to include 0 (so 0 is exact: zero padding and ReLU's floor);
- weights are int8, symmetric per output channel: zero point 0, scale max|w| / 127;
- biases are int32 with scale input scale x weight scale of their channel;
- a ReLU after a convolution, Linear layer or residual addition is fused into it
  (activation "relu": the clamp at the output's zero point);
- pools keep their input's quantization (TFLite's rule for MAX_POOL_2D and
  AVERAGE_POOL_2D); GlobalAvgPool2d is MEAN over height and width; Residual is ADD;
  Reshape and Flatten are RESHAPE; Dropout is dropped (identity at inference);
  Sigmoid, Tanh and Softmax are LOGISTIC, TANH and SOFTMAX with the fixed output
  quantization TFLite requires (1/256 and -128; 1/128 and 0; 1/256 and -128).

The graph input is int8 with scale 1/255 and zero point -128: the network sees pixel/255,
so the int8 byte is pixel - 128. A leading `Reshape` becomes the input's shape. The graph
output is the int8 logits. A layer without an int8 equivalent raises ValueError naming it.
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np

from . import conv, int8_ops, nn, train
from . import graph as g

__all__ = ["INPUT_SCALE", "INPUT_ZERO_POINT", "activation_quant", "batched", "dequantize_output",
           "predict_int8", "quantize_input", "quantize_int8"]

INPUT_SCALE = 1.0 / 255.0  # pixel/255 in [0, 1] ...
INPUT_ZERO_POINT = -128  # ... as the int8 byte pixel - 128
QMIN, QMAX = -128, 127
WEIGHT_MAX = 127  # symmetric weights use -127..127, as TFLite
INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1


def _per_tensor(scale: float, zero_point: int) -> g.Quant:
    return g.Quant(np.array([scale], np.float32), np.array([zero_point], np.int32))


def activation_quant(y: np.ndarray) -> g.Quant:
    """Per-tensor int8 quantization of the calibrated range of `y`, 0 included.

    A tensor that is constant zero on the calibration set gets the range [0, 1].
    """
    lo, hi = min(float(np.min(y)), 0.0), max(float(np.max(y)), 0.0)
    if hi - lo <= 0.0:
        hi = lo + 1.0
    scale = float(np.float32((hi - lo) / (QMAX - QMIN)))
    zero = int(np.clip(np.round(QMIN - lo / scale), QMIN, QMAX))
    return _per_tensor(scale, zero)


class _Builder:
    """Collects tensors and operators while the float model runs on the calibration set."""

    def __init__(self) -> None:
        self.tensors: list[g.Tensor] = []
        self.operators: list[g.Operator] = []

    def tensor(self, name: str, shape: tuple[int, ...], dtype: str = g.INT8,
               quant: g.Quant | None = None, data: np.ndarray | None = None) -> int:
        self.tensors.append(g.Tensor(name, tuple(int(s) for s in shape), dtype, quant, data))
        return len(self.tensors) - 1

    def activation(self, name: str, y: np.ndarray, quant: g.Quant | None = None) -> int:
        """An int8 activation tensor of batch 1 for the float values `y` (N, ...)."""
        return self.tensor(name, (1, *y.shape[1:]), quant=quant or activation_quant(y))

    def op(self, kind: str, inputs: tuple[int, ...], output: int, options: Any = None) -> int:
        self.operators.append(g.Operator(kind, tuple(inputs), (output,), options))
        return output

    def scale(self, t: int) -> float:
        return float(self.tensors[t].quant.scale[0])


# ------------------------------------------------------------------- weighted layers


def _weights(layer: nn.Module) -> tuple[np.ndarray, int]:
    """(float weights in the graph's layout, output-channel axis)."""
    w = layer.weight.data.astype(np.float64)
    if isinstance(layer, nn.Linear):
        if layer.mask is not None:
            w = w * layer.mask
        return w, 0  # [out, in]
    if isinstance(layer, conv.DepthwiseConv2d):
        return w[None], 3  # [1, kh, kw, C*M]
    return w, 0  # Conv2d: [out, kh, kw, in]


def _quantize_weights(w: np.ndarray, axis: int) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric per-channel int8: (int8 weights, float32 scales). An all-zero channel
    gets scale 1/127 (its weights are 0 at any scale)."""
    others = tuple(a for a in range(w.ndim) if a != axis)
    peak = np.abs(w).max(axis=others)
    scales = np.where(peak > 0, peak / WEIGHT_MAX, 1.0 / WEIGHT_MAX).astype(np.float32)
    shape = [1] * w.ndim
    shape[axis] = -1
    q = np.round(w / scales.astype(np.float64).reshape(shape))
    return np.clip(q, -WEIGHT_MAX, WEIGHT_MAX).astype(np.int8), scales


def _weighted(b: _Builder, layer: nn.Module, name: str, x_t: int, y: np.ndarray,
              activation: str) -> int:
    """CONV_2D, DEPTHWISE_CONV_2D or FULLY_CONNECTED with per-channel weights, int32 bias."""
    w, axis = _weights(layer)
    wq, w_scales = _quantize_weights(w, axis)
    c_out = len(w_scales)
    bias = (layer.bias.data.astype(np.float64) if layer.bias is not None
            else np.zeros(c_out))
    b_scales = (np.float64(np.float32(b.scale(x_t))) * w_scales.astype(np.float64))
    bq = np.clip(np.round(bias / b_scales), INT32_MIN, INT32_MAX).astype(np.int32)
    zeros = np.zeros(c_out, np.int32)
    w_t = b.tensor(f"{name}/weights", wq.shape, g.INT8,
                   g.Quant(w_scales, zeros, axis), wq)
    b_t = b.tensor(f"{name}/bias", (c_out,), g.INT32,
                   g.Quant(b_scales.astype(np.float32), zeros.copy(), 0), bq)
    y_t = b.activation(name, y)
    if isinstance(layer, nn.Linear):
        if len(b.tensors[x_t].shape) != 2:
            raise ValueError(f"{name}: Linear on a {len(b.tensors[x_t].shape) - 1}-D sample; "
                             "flatten first (nn.Flatten)")
        return b.op(g.FULLY_CONNECTED, (x_t, w_t, b_t), y_t,
                    g.FullyConnectedOptions(activation=activation))
    sh, sw = layer.stride
    if isinstance(layer, conv.DepthwiseConv2d):
        return b.op(g.DEPTHWISE_CONV_2D, (x_t, w_t, b_t), y_t,
                    g.DepthwiseOptions(sh, sw, layer.padding, layer.depth_multiplier,
                                       activation))
    return b.op(g.CONV_2D, (x_t, w_t, b_t), y_t, g.ConvOptions(sh, sw, layer.padding, activation))


# ------------------------------------------------------------------- the walk

_WEIGHTED = (conv.Conv2d, conv.DepthwiseConv2d, nn.Linear)
_POOLS = {conv.MaxPool2d: g.MAX_POOL_2D, conv.AvgPool2d: g.AVERAGE_POOL_2D}
# Element-wise functions: the operator and the fixed output quantization TFLite requires.
_FUNCTIONS = {nn.Sigmoid: (g.LOGISTIC, 1 / 256, -128), nn.Tanh: (g.TANH, 1 / 128, 0),
              nn.Softmax: (g.SOFTMAX, 1 / 256, -128)}


def _emit(b: _Builder, layers: list[nn.Module], x: np.ndarray, x_t: int, prefix: str,
          start: int = 0) -> tuple[np.ndarray, int]:
    """Add the operators of layers[start:] applied to tensor `x_t` (float values `x` on
    the calibration set); returns the output's float values and tensor. Layers are named
    by their index in the model ("layer 3", "layer 2.1" inside a Residual)."""
    k = start
    while k < len(layers):
        layer = layers[k]
        name = f"layer {prefix}{k} ({type(layer).__name__})"
        tag = f"{prefix}{k}.{type(layer).__name__.lower()}"
        relu = k + 1 < len(layers) and isinstance(layers[k + 1], nn.ReLU)
        act = g.ACT_RELU if relu else g.ACT_NONE
        if isinstance(layer, nn.Dropout):
            y = x
        elif isinstance(layer, (conv.Reshape, nn.Flatten)):
            y = layer.forward(x)
            x_t = b.op(g.RESHAPE, (x_t,), b.activation(tag, y, copy.deepcopy(
                b.tensors[x_t].quant)))
        elif isinstance(layer, _WEIGHTED):
            y = layer.forward(x)
            if relu:
                y = np.maximum(y, 0)
            x_t = _weighted(b, layer, tag, x_t, y, act)
        elif type(layer) in _POOLS:
            y = layer.forward(x)
            opt = g.PoolOptions(*layer.pool, *layer.stride, layer.padding)
            x_t = b.op(_POOLS[type(layer)], (x_t,),
                       b.activation(tag, y, copy.deepcopy(b.tensors[x_t].quant)), opt)
        elif type(layer) in _FUNCTIONS:
            y = layer.forward(x)
            kind, scale, zero = _FUNCTIONS[type(layer)]
            opt = g.SoftmaxOptions(beta=1.0) if kind == g.SOFTMAX else None
            x_t = b.op(kind, (x_t,), b.activation(tag, y, _per_tensor(scale, zero)), opt)
        elif isinstance(layer, conv.GlobalAvgPool2d):
            y = layer.forward(x)
            axes = b.tensor(f"{tag}/axes", (2,), g.INT32, data=np.array([1, 2], np.int32))
            x_t = b.op(g.MEAN, (x_t, axes), b.activation(tag, y), g.MeanOptions(keep_dims=False))
        elif isinstance(layer, conv.Residual):
            inner, inner_t = _emit(b, layer.block.layers, x, x_t, f"{prefix}{k}.")
            y = x + inner
            if relu:
                y = np.maximum(y, 0)
            x_t = b.op(g.ADD, (x_t, inner_t), b.activation(tag, y), g.AddOptions(act))
        elif isinstance(layer, nn.ReLU):
            raise ValueError(f"{name}: a ReLU must follow a convolution, Linear layer or "
                             "Residual to be fused; int8 graphs have no ReLU operator")
        elif conv._is_batchnorm(layer):
            raise ValueError(f"{name}: a batch norm must directly follow a convolution or "
                             "Linear layer to be folded into it")
        else:
            raise ValueError(f"{name} has no int8 equivalent (supported: Conv2d, "
                             "DepthwiseConv2d, Linear, ReLU, BatchNorm after those, MaxPool2d,"
                             " AvgPool2d, GlobalAvgPool2d, Residual, Reshape, Flatten, Dropout,"
                             " Sigmoid, Tanh, Softmax)")
        x = y
        k += 2 if relu and isinstance(layer, (*_WEIGHTED, conv.Residual)) else 1
    return x, x_t


def quantize_int8(model: nn.Sequential, x_calib: np.ndarray) -> g.Graph:
    """The int8 graph of a trained model, calibrated on `x_calib`.

    `x_calib`: calibration inputs as the model takes them: uint8 pixels (scaled by 1/255,
    as `train.prepare`) or floats in [0, 1]; e.g. 1000-2000 training images. The model
    itself is not changed. Raises ValueError naming a layer without an int8 equivalent.
    """
    if not isinstance(model, nn.Sequential):
        raise TypeError(f"quantize_int8 expects an nn.Sequential, got {type(model).__name__}")
    x = train.prepare(x_calib, model.dtype)
    if x.ndim < 2 or len(x) == 0:
        raise ValueError(f"x_calib must hold at least one sample (N, ...), got shape {x.shape}")
    if not np.all(np.isfinite(x)) or x.min() < 0 or x.max() > 1:
        raise ValueError("x_calib must be pixels (uint8) or floats in [0, 1] (the int8 input"
                         " has scale 1/255 and zero point -128)")
    layers = list(conv.fold_batchnorms(model).layers)
    if not layers:
        raise ValueError("the model has no layers")
    start = 0
    if isinstance(layers[0], conv.Reshape):  # the input tensor takes its shape
        x, start = layers[0].forward(x), 1
    b = _Builder()
    x_t = b.tensor("input", (1, *x.shape[1:]), quant=_per_tensor(INPUT_SCALE, INPUT_ZERO_POINT))
    _, y_t = _emit(b, layers, x, x_t, "", start)
    if y_t == x_t:
        raise ValueError("the model has no layer that computes in int8")
    graph = g.Graph(b.tensors, b.operators, [x_t], [y_t], name="int8")
    int8_ops.prepare(graph)  # TFLite Micro's checks, as the device applies them
    return graph


def quantize_input(graph: g.Graph, x: np.ndarray) -> np.ndarray:
    """uint8 pixels (or floats in [0, 1]) as the graph's int8 input values."""
    q = graph.tensors[graph.inputs[0]].quant
    real = train.prepare(x, np.float64)
    scale, zero = float(q.scale[0]), int(q.zero_point[0])
    return np.clip(np.round(real / scale) + zero, QMIN, QMAX).astype(np.int8)


def batched(graph: g.Graph, n: int) -> g.Graph:
    """A copy of `graph` whose activations have batch `n` (leading dimension), to run many
    inputs in one `int8_ops.run` call."""
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"batch must be a positive int, got {n!r}")
    out = copy.copy(graph)
    out.tensors = [t if t.is_constant else
                   g.Tensor(t.name, (n, *t.shape[1:]), t.dtype, t.quant, t.data)
                   for t in graph.tensors]
    return out


def predict_int8(graph: g.Graph, x: np.ndarray, batch: int = 500) -> np.ndarray:
    """int8 outputs [N, ...] of `graph` for N inputs (uint8 pixels or floats in [0, 1]),
    `batch` at a time through `int8_ops.run` (bit-exact with TFLite Micro)."""
    q = quantize_input(graph, x)
    n = len(q)
    per = graph.tensors[graph.inputs[0]].size
    if q.size != n * per:
        raise ValueError(f"the graph takes {per} values per sample, got shape {np.shape(x)}")
    outs = []
    for lo in range(0, n, batch):
        part = q[lo:lo + batch]
        big = batched(graph, len(part))
        outs.append(int8_ops.run(big, part.reshape(big.tensors[big.inputs[0]].shape)))
    return np.concatenate(outs)


def dequantize_output(graph: g.Graph, y: np.ndarray) -> np.ndarray:
    """int8 outputs as real values: scale * (q - zero point)."""
    q = graph.tensors[graph.outputs[0]].quant
    return float(q.scale[0]) * (y.astype(np.float64) - int(q.zero_point[0]))
