"""A trained float `nn.Sequential` (a CNN of `piconn.conv`) as a float32 `graph.Graph`.

The float counterpart of `quant_int8.quantize_int8`: the same walk over the layers, with
float32 tensors and weights instead of int8 ones, so `format2.to_bytes` writes it as
format version 2's float32 operators (`float_ops`) and every device tier runs it:

- batch norms are folded into the convolution or Linear layer before them
  (`conv.fold_batchnorms`), the weights rounded once to float32;
- a ReLU after a convolution, Linear layer or Residual is fused into it (activation
  "relu": the clamp at 0);
- MaxPool2d and AvgPool2d are MAX_POOL_2D and AVERAGE_POOL_2D, GlobalAvgPool2d is MEAN
  over height and width, Residual is ADD, Reshape and Flatten are RESHAPE, Dropout is
  dropped; Sigmoid, Tanh and Softmax are LOGISTIC, TANH and SOFTMAX.

The graph input is float32: the network sees pixel/255 (`float_input`), as in training.
A leading `Reshape` becomes the input's shape. The output is the float32 logits (or the
last function's values). A layer without an equivalent raises ValueError naming it.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from . import conv, int8_ops, nn, train
from . import graph as g

__all__ = ["float_graph", "float_input", "is_cnn", "predict_float"]

_WEIGHTED = (conv.Conv2d, conv.DepthwiseConv2d, nn.Linear)
_POOLS = {conv.MaxPool2d: g.MAX_POOL_2D, conv.AvgPool2d: g.AVERAGE_POOL_2D}
_FUNCTIONS = {nn.Sigmoid: g.LOGISTIC, nn.Tanh: g.TANH, nn.Softmax: g.SOFTMAX}
_CNN_LAYERS = (conv.Conv2d, conv.DepthwiseConv2d, conv.MaxPool2d, conv.AvgPool2d,
               conv.GlobalAvgPool2d, conv.Residual, conv.Reshape)


def is_cnn(model: nn.Sequential) -> bool:
    """Whether the model has a layer of `piconn.conv` (exported as a graph, not a layer chain)."""
    return any(isinstance(la, _CNN_LAYERS) for la in model.layers)


class _Builder:
    def __init__(self) -> None:
        self.tensors: list[g.Tensor] = []
        self.operators: list[g.Operator] = []

    def tensor(self, name: str, shape: tuple[int, ...], dtype: str = g.FLOAT32,
               data: np.ndarray | None = None) -> int:
        self.tensors.append(g.Tensor(name, tuple(int(s) for s in shape), dtype, None, data))
        return len(self.tensors) - 1

    def op(self, kind: str, inputs: tuple[int, ...], output: int, options: Any = None) -> int:
        self.operators.append(g.Operator(kind, tuple(inputs), (output,), options))
        return output

    def shape(self, t: int) -> tuple[int, ...]:
        return self.tensors[t].shape


def _weighted(b: _Builder, layer: nn.Module, tag: str, name: str, x_t: int,
              out_shape: tuple[int, ...], activation: str) -> int:
    w = layer.weight.data.astype(np.float64)
    if isinstance(layer, nn.Linear) and layer.mask is not None:
        w = w * layer.mask
    if isinstance(layer, conv.DepthwiseConv2d):
        w = w[None]  # [1, kh, kw, C*M]
    c_out = w.shape[3] if isinstance(layer, conv.DepthwiseConv2d) else w.shape[0]
    w_t = b.tensor(f"{tag}/weights", w.shape, data=w.astype(np.float32))
    inputs = (x_t, w_t)
    if layer.bias is not None:
        bias = layer.bias.data.astype(np.float32).reshape(c_out)
        inputs += (b.tensor(f"{tag}/bias", (c_out,), data=bias),)
    y_t = b.tensor(tag, out_shape)
    if isinstance(layer, nn.Linear):
        if len(b.shape(x_t)) != 2:
            raise ValueError(f"{name}: Linear on a {len(b.shape(x_t)) - 1}-D sample; "
                             "flatten first (nn.Flatten)")
        return b.op(g.FULLY_CONNECTED, inputs, y_t, g.FullyConnectedOptions(activation))
    sh, sw = layer.stride
    if isinstance(layer, conv.DepthwiseConv2d):
        return b.op(g.DEPTHWISE_CONV_2D, inputs, y_t,
                    g.DepthwiseOptions(sh, sw, layer.padding, layer.depth_multiplier,
                                       activation))
    return b.op(g.CONV_2D, inputs, y_t, g.ConvOptions(sh, sw, layer.padding, activation))


def _emit(b: _Builder, layers: list, x: np.ndarray, x_t: int, prefix: str,
          start: int = 0) -> tuple[np.ndarray, int]:
    """Add the operators of layers[start:] to tensor x_t; `x` is one sample run through
    the float model alongside (for the output shapes)."""
    k = start
    while k < len(layers):
        layer = layers[k]
        name = f"layer {prefix}{k} ({type(layer).__name__})"
        tag = f"{prefix}{k}.{type(layer).__name__.lower()}"
        relu = k + 1 < len(layers) and isinstance(layers[k + 1], nn.ReLU)
        act = g.ACT_RELU if relu else g.ACT_NONE
        y = x
        if isinstance(layer, nn.Dropout):
            pass
        elif isinstance(layer, (conv.Reshape, nn.Flatten)):
            y = layer.forward(x)
            x_t = b.op(g.RESHAPE, (x_t,), b.tensor(tag, (1, *y.shape[1:])))
        elif isinstance(layer, _WEIGHTED):
            y = layer.forward(x)
            x_t = _weighted(b, layer, tag, name, x_t, (1, *y.shape[1:]), act)
        elif type(layer) in _POOLS:
            y = layer.forward(x)
            opt = g.PoolOptions(*layer.pool, *layer.stride, layer.padding)
            x_t = b.op(_POOLS[type(layer)], (x_t,), b.tensor(tag, (1, *y.shape[1:])), opt)
        elif type(layer) in _FUNCTIONS:
            y = layer.forward(x)
            kind = _FUNCTIONS[type(layer)]
            opt = g.SoftmaxOptions(beta=1.0) if kind == g.SOFTMAX else None
            x_t = b.op(kind, (x_t,), b.tensor(tag, (1, *y.shape[1:])), opt)
        elif isinstance(layer, conv.GlobalAvgPool2d):
            y = layer.forward(x)
            axes = b.tensor(f"{tag}/axes", (2,), g.INT32, np.array([1, 2], np.int32))
            x_t = b.op(g.MEAN, (x_t, axes), b.tensor(tag, (1, *y.shape[1:])),
                       g.MeanOptions(keep_dims=False))
        elif isinstance(layer, conv.Residual):
            inner, inner_t = _emit(b, layer.block.layers, x, x_t, f"{prefix}{k}.")
            y = x + inner
            x_t = b.op(g.ADD, (x_t, inner_t), b.tensor(tag, (1, *y.shape[1:])),
                       g.AddOptions(act))
        elif isinstance(layer, nn.ReLU):
            raise ValueError(f"{name}: a ReLU must follow a convolution, Linear layer or "
                             "Residual to be fused; graphs have no ReLU operator")
        elif conv._is_batchnorm(layer):
            raise ValueError(f"{name}: a batch norm must directly follow a convolution or "
                             "Linear layer to be folded into it")
        else:
            raise ValueError(f"{name} has no float32 graph equivalent (supported: Conv2d, "
                             "DepthwiseConv2d, Linear, ReLU, BatchNorm after those, MaxPool2d,"
                             " AvgPool2d, GlobalAvgPool2d, Residual, Reshape, Flatten, Dropout,"
                             " Sigmoid, Tanh, Softmax)")
        if relu and isinstance(layer, (*_WEIGHTED, conv.Residual)):
            y = np.maximum(y, 0)
            k += 1
        x = y
        k += 1
    return x, x_t


def float_graph(model: nn.Sequential, input_shape: tuple[int, ...] | None = None) -> g.Graph:
    """The float32 graph of a trained model (batch norms folded). `input_shape`: one
    sample's shape when the model has no leading Reshape (default: MNIST's 784 values)."""
    if not isinstance(model, nn.Sequential):
        raise TypeError(f"float_graph expects an nn.Sequential, got {type(model).__name__}")
    layers = list(conv.fold_batchnorms(model).layers)
    if not layers:
        raise ValueError("the model has no layers")
    x = np.zeros((1, *(input_shape or (784,))), np.float64)
    start = 0
    if isinstance(layers[0], conv.Reshape):
        x, start = layers[0].forward(x.reshape(1, -1)), 1
    b = _Builder()
    x_t = b.tensor("input", (1, *x.shape[1:]))
    _, y_t = _emit(b, layers, x, x_t, "", start)
    if y_t == x_t:
        raise ValueError("the model has no layer that computes")
    graph = g.Graph(b.tensors, b.operators, [x_t], [y_t], name="float32")
    int8_ops.prepare(graph)  # the rules every reader applies
    return graph


def float_input(x: np.ndarray) -> np.ndarray:
    """uint8 pixels (or floats in [0, 1]) as the graph's float32 input: pixel/255."""
    return train.prepare(x, np.float64).astype(np.float32)


def predict_float(graph: g.Graph, x: np.ndarray, batch: int = 500) -> np.ndarray:
    """float32 outputs [N, ...] of `graph` for N inputs (uint8 pixels or floats in
    [0, 1]), `batch` at a time through `int8_ops.run` (the float kernels' exact order)."""
    from .quant_int8 import batched

    xf = float_input(x)
    per = graph.tensors[graph.inputs[0]].size
    if xf.size != len(xf) * per:
        raise ValueError(f"the graph takes {per} values per sample, got shape {np.shape(x)}")
    outs = []
    for lo in range(0, len(xf), batch):
        part = xf[lo:lo + batch]
        big = batched(graph, len(part))
        outs.append(int8_ops.run(big, part.reshape(big.tensors[big.inputs[0]].shape)))
    return np.concatenate(outs)
