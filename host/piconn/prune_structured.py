"""Structured pruning: remove whole filters and neurons, leaving a smaller dense model.

`prune_structured(model, fraction)` removes `fraction` of the output filters of every
prunable Conv2d and of the neurons of every prunable hidden Linear, and the matching
inputs downstream, so the result is an ordinary Sequential of the same layer types
(the dense float, int8 and export paths take it unchanged). A layer is prunable when
its outputs reach the next weighted layer only through per-channel layers:

    BatchNorm2d/BatchNorm1d   the same channels are dropped from gamma, beta and the
                              running statistics
    ReLU, Sigmoid, Tanh, Dropout, MaxPool2d, AvgPool2d, GlobalAvgPool2d   pass through
    DepthwiseConv2d           follows its input: channel c goes with its outputs
                              c*M .. c*M + M-1 (weights and biases)
    Flatten                   (H, W, C) -> H*W*C in NHWC order: channel c is every
                              feature (h*W + w)*C + c, so the next Linear loses those columns

The consumer (Conv2d input channels, Linear columns) drops the same inputs. Not pruned:
the last Linear (the classes), a layer whose outputs reach the model's end, and the
channels of a residual stream - a Residual adds its input to its block's output, so the
layer feeding a Residual and the block's last weighted layer keep all their channels;
the other convolutions inside a block are pruned (as Li et al., "Pruning Filters for
Efficient ConvNets", ICLR 2017, prune only the first layer of each residual block).
Any other layer between a producer and its consumer (e.g. Softmax) keeps the producer
whole.

Criterion (which filters go): the smallest scores, per layer, keeping n - round(f*n)
(at least one) in their original order.

    "folded"  L1 norm of the filter as inference sees it, the batch norm that follows
              folded in: |gamma| / sqrt(running_var + eps) * sum |w| (the plain L1 norm
              when no batch norm follows). The default: after a batch norm the raw
              weights' scale says nothing, the norm divides it out.
    "l1"      L1 norm of the filter's weights, sum |w| (Li et al. 2017).

`fine_tune` then trains the smaller model for a few epochs (Adam, cosine decay,
the shifts the model was trained with).
"""

from __future__ import annotations

import copy
import re
from collections.abc import Sequence
from typing import Any, TextIO

import numpy as np

from . import conv, nn, train
from .data import random_shift

CRITERIA = ("folded", "l1")
SCOPES = ("all", "conv")  # what is pruned: convolutions and hidden Linear, or convolutions

# Layers the channels pass through unchanged (per-channel, or no channels at all).
_PASS = (nn.ReLU, nn.Sigmoid, nn.Tanh, nn.Dropout, conv.MaxPool2d, conv.AvgPool2d,
         conv.GlobalAvgPool2d)
_NORMS = (conv.BatchNorm2d, nn.BatchNorm1d)
_PRODUCERS = (conv.Conv2d, nn.Linear)


def check_fraction(fraction: Any) -> float:
    """Return fraction as float; ValueError unless 0 < fraction < 1."""
    try:
        f = float(fraction)
    except (TypeError, ValueError):
        raise ValueError(f"structured fraction must be a number in (0, 1), got {fraction!r}"
                         ) from None
    if not 0.0 < f < 1.0:
        raise ValueError(f"structured fraction must be in (0, 1) (share of filters removed "
                         f"per layer), got {f}")
    return f


def n_kept(n: int, fraction: float) -> int:
    """Filters a layer of n keeps at `fraction`: n - round(fraction * n), at least one."""
    return max(1, n - round(fraction * n))


# ------------------------------------------------------------------- which layers


def _prunable(layers: Sequence[nn.Module], scope: str) -> set[int]:
    """Indices of the layers whose outputs may lose channels (module docstring)."""
    out = set()
    for i, layer in enumerate(layers):
        if not isinstance(layer, _PRODUCERS) or (scope == "conv" and isinstance(layer, nn.Linear)):
            continue
        for nxt in layers[i + 1:]:
            if isinstance(nxt, _PRODUCERS):
                out.add(i)
                break
            if not isinstance(nxt, (*_PASS, *_NORMS, conv.DepthwiseConv2d, nn.Flatten)):
                break  # a Residual, Softmax, Reshape or unknown layer: keep all channels
    return out


def prunable_layers(model: nn.Sequential, scope: str = "all") -> list[int]:
    """Indices in model.layers of the layers `prune_structured` thins (not inside blocks)."""
    _check_model(model, scope)
    return sorted(_prunable(model.layers, scope))


def _has_prunable(layers: Sequence[nn.Module], scope: str) -> bool:
    return bool(_prunable(layers, scope)) or any(
        _has_prunable(la.block.layers, scope) for la in layers if isinstance(la, conv.Residual))


def _check_model(model: nn.Module, scope: str) -> None:
    if not isinstance(model, nn.Sequential):
        raise TypeError(f"expected an nn.Sequential, got {type(model).__name__}")
    if scope not in SCOPES:
        raise ValueError(f"scope must be one of {', '.join(SCOPES)}, got {scope!r}")


# ------------------------------------------------------------------- scores


def _following_norm(layers: Sequence[nn.Module], i: int) -> nn.Module | None:
    nxt = layers[i + 1] if i + 1 < len(layers) else None
    return nxt if isinstance(nxt, _NORMS) else None


def filter_scores(layers: Sequence[nn.Module], i: int, criterion: str = "folded") -> np.ndarray:
    """Score of each output filter (Conv2d) or neuron (Linear) of layers[i] (docstring)."""
    if criterion not in CRITERIA:
        raise ValueError(f"criterion must be one of {', '.join(CRITERIA)}, got {criterion!r}")
    layer = layers[i]
    w = layer.weight.data.astype(np.float64)
    if isinstance(layer, nn.Linear) and layer.mask is not None:
        w = w * layer.mask
    score = np.abs(w).reshape(w.shape[0], -1).sum(axis=1)
    norm = _following_norm(layers, i)
    if criterion == "folded" and norm is not None:
        score = score * np.abs(norm.affine()[0])
    return score


def _choose(score: np.ndarray, fraction: float) -> np.ndarray:
    """Indices of the n_kept largest scores, ascending (ties keep the earlier filter)."""
    keep = n_kept(score.size, fraction)
    order = np.argsort(-score, kind="stable")
    return np.sort(order[:keep])


# ------------------------------------------------------------------- surgery


def _set(param: nn.Param, data: np.ndarray) -> None:
    param.data = np.ascontiguousarray(data)
    param.grad = np.zeros_like(param.data)


def _slice_out(layer: nn.Module, keep: np.ndarray) -> None:
    """Keep output filters/neurons `keep` of a Conv2d or Linear (axis 0 of the weight)."""
    mask = layer.mask if isinstance(layer, nn.Linear) else None
    _set(layer.weight, layer.weight.data[keep])
    if layer.bias is not None:
        _set(layer.bias, layer.bias.data[keep])
    if isinstance(layer, nn.Linear):
        layer.n_out = len(keep)
        layer.weight.mask = None if mask is None else mask[keep]
    else:
        layer.out_ch = len(keep)


def _slice_in(layer: nn.Module, keep: np.ndarray) -> None:
    """Keep inputs `keep` of a Conv2d (last weight axis) or Linear (columns)."""
    if isinstance(layer, nn.Linear):
        mask = layer.mask
        _set(layer.weight, layer.weight.data[:, keep])
        layer.weight.mask = None if mask is None else mask[:, keep]
        layer.n_in = len(keep)
    else:
        _set(layer.weight, layer.weight.data[..., keep])
        layer.in_ch = len(keep)


def _slice_depthwise(layer: conv.DepthwiseConv2d, keep: np.ndarray) -> np.ndarray:
    """Keep input channels `keep` and their outputs; returns the kept output indices."""
    m = layer.depth_multiplier
    out = (keep[:, None] * m + np.arange(m)).ravel()
    _set(layer.weight, layer.weight.data[..., out])
    if layer.bias is not None:
        _set(layer.bias, layer.bias.data[out])
    layer.channels, layer.out_ch = len(keep), len(out)
    return out


def _slice_norm(layer: nn.Module, keep: np.ndarray) -> None:
    _set(layer.gamma, layer.gamma.data[keep])
    _set(layer.beta, layer.beta.data[keep])
    for name in layer.buffers:
        value = getattr(layer, name)
        if value is not None:
            setattr(layer, name, np.ascontiguousarray(value[keep]))
    if isinstance(layer, conv.BatchNorm2d):
        layer.channels = len(keep)
    else:
        layer.n = len(keep)


def _prune_layers(layers: list[nn.Module], shape: tuple[int, ...], fraction: float,
                  criterion: str, scope: str) -> tuple[int, ...]:
    """Prune `layers` in place; `shape` is the per-sample input shape (for Flatten).
    Returns the output shape of the original layers."""
    chosen = _prunable(layers, scope)
    keep: np.ndarray | None = None  # indices of the original channels still flowing
    for i, layer in enumerate(layers):
        out_shape = conv._layer_shape(layer, shape)
        if isinstance(layer, _PRODUCERS):
            if keep is not None:
                _slice_in(layer, keep)
            keep = None
            if i in chosen:
                keep = _choose(filter_scores(layers, i, criterion), fraction)
                _slice_out(layer, keep)
        elif isinstance(layer, conv.DepthwiseConv2d):
            if keep is not None:
                keep = _slice_depthwise(layer, keep)
        elif isinstance(layer, _NORMS):
            if keep is not None:
                _slice_norm(layer, keep)
        elif isinstance(layer, nn.Flatten):
            if keep is not None:
                pixels = int(np.prod(shape[:-1]))
                keep = (np.arange(pixels)[:, None] * shape[-1] + keep).ravel()
        elif isinstance(layer, conv.Residual):
            _prune_layers(layer.block.layers, shape, fraction, criterion, scope)
        elif not isinstance(layer, _PASS):
            keep = None  # (only reached with nothing pruned: see _prunable)
        shape = out_shape
    return shape


def prune_structured(model: nn.Sequential, fraction: float, criterion: str = "folded",
                     scope: str = "all", input_shape: Sequence[int] | None = None
                     ) -> nn.Sequential:
    """A copy of `model` with `fraction` of the filters of every prunable layer removed.

    scope "all": Conv2d filters and hidden Linear neurons; "conv": Conv2d filters only.
    `input_shape` (per sample) is needed only when the model does not start with a
    Reshape. ValueError for a bad fraction, criterion or scope, or a model with
    nothing to prune (no convolution or hidden layer); `model` is not changed.
    """
    f = check_fraction(fraction)
    _check_model(model, scope)
    if criterion not in CRITERIA:
        raise ValueError(f"criterion must be one of {', '.join(CRITERIA)}, got {criterion!r}")
    if not any(isinstance(la, conv.Conv2d) for la in _walk(model.layers)):
        raise ValueError("the model has no Conv2d layer (structured pruning removes "
                         "convolution filters; use a sparsity for Linear models)")
    if not _has_prunable(model.layers, scope):
        raise ValueError("the model has no prunable layer (every convolution feeds the "
                         "logits or a residual stream)")
    pruned = nn.Sequential(dtype=model.dtype)
    for layer in model.layers:
        pruned.add(copy.deepcopy(layer))
    pruned.train(model.training)
    if input_shape is None:
        if not isinstance(model.layers[0], conv.Reshape):
            raise ValueError("input_shape is needed for a model that does not start with a "
                             "Reshape")
        input_shape = model.layers[0].shape
    _prune_layers(pruned.layers, tuple(int(s) for s in input_shape), f, criterion, scope)
    return pruned


def _walk(layers: Sequence[nn.Module]) -> list[nn.Module]:
    """The layers, those inside Residual blocks included."""
    out: list[nn.Module] = []
    for layer in layers:
        out.append(layer)
        if isinstance(layer, conv.Residual):
            out += _walk(layer.block.layers)
    return out


# ------------------------------------------------------------------- report, fine-tune

_WIDTH = re.compile(r"(?<![a-z])([cf])(\d+)")  # "c16" (Conv2d filters), "f64" (Linear)


def pruned_spec(spec: Any, model: nn.Sequential) -> str | None:
    """The CNN spec (`conv.build_cnn`) of `model`, pruned from one built from `spec`: the
    widths of its "c" and "f" layers replaced by the model's. None when `spec` is not a
    CNN spec or does not describe the model."""
    if not isinstance(spec, str):
        return None
    widths = {"c": iter([la.out_ch for la in _walk(model.layers) if isinstance(la, conv.Conv2d)]),
              "f": iter([la.n_out for la in _walk(model.layers) if isinstance(la, nn.Linear)])}
    try:
        new = _WIDTH.sub(lambda m: f"{m[1]}{next(widths[m[1]])}", spec)
        built = conv.build_cnn(new)
    except (StopIteration, TypeError, ValueError):
        return None
    same = len(built.layers) == len(model.layers) and all(
        {k: v.shape for k, v in a.state().items()} == {k: v.shape for k, v in b.state().items()}
        for a, b in zip(built.layers, model.layers))
    return new if same else None



def layer_widths(model: nn.Sequential) -> list[dict]:
    """Per weighted layer: its name, position and output channels (filters or neurons)."""
    rows = []
    for pos, layer in enumerate(_walk(model.layers)):
        if isinstance(layer, (conv.Conv2d, conv.DepthwiseConv2d)):
            rows.append({"layer": pos, "type": type(layer).__name__, "out": layer.out_ch,
                         "params": sum(p.data.size for p in layer.params())})
        elif isinstance(layer, nn.Linear):
            rows.append({"layer": pos, "type": "Linear", "out": layer.n_out,
                         "params": sum(p.data.size for p in layer.params())})
    return rows


def summary(model: nn.Sequential, input_shape: Sequence[int]) -> dict:
    """Filters per weighted layer, parameters and multiply-adds of one inference."""
    return {"layers": layer_widths(model), "params": nn.count_params(model),
            "macs": conv.count_macs(model, input_shape)}


def fine_tune(model: nn.Sequential, x: np.ndarray, y: np.ndarray, *, epochs: int = 6,
              lr: float = 2e-3, batch_size: int = 64, shift: int = 0, seed: int = 0,
              side: int = 28, progress: bool | TextIO | None = None) -> list[dict]:
    """Train `model` in place for `epochs` (Adam, cosine decay from lr, random shifts of
    up to `shift` pixels of side x side images). Returns the training history."""
    if epochs < 0:
        raise ValueError(f"need epochs >= 0, got {epochs}")
    if epochs == 0:
        return []
    opt = nn.Adam(model.params(), lr)
    aug = (lambda xb, rng: random_shift(xb, rng, shift, side)) if shift else None
    return train.fit(model, x, y, optimizer=opt, epochs=epochs, batch_size=batch_size,
                     seed=seed, progress=progress, augment=aug,
                     schedule=train.cosine(lr, epochs))
