"""Lower a trained `nn.Sequential` to an `ir.DeviceModel` (what the Pico runs).

`to_device(model, meta)` handles float models (`dense_f32`), pruned ones (a
`Linear.mask` gives `sparse_f32`) and XNOR models (delegated to `xnor.lower`).
Quantized models are made by `quant.quantize`, which uses `linear_chain` too.

Input convention: a model trained on float pixels `x/255` has
`meta["input_scale"] = 1/255`; the device then takes the raw u8 bytes and the
scale is folded into the first layer's weights. Without `input_scale` the
device model takes f32 inputs as they are.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import ir, nn

_ACTS = {"ReLU": "relu", "Sigmoid": "sigmoid", "Tanh": "tanh", "Softmax": "softmax"}
_SKIP = ("Dropout", "Flatten")


@dataclass
class Dense:
    """One Linear layer of a trained model with its fused activation (float64 copies)."""

    w: np.ndarray  # [n_out, n_in], masked weights are 0
    b: np.ndarray  # [n_out]
    act: str
    mask: np.ndarray | None  # bool [n_out, n_in] or None


def is_xnor(model: nn.Sequential) -> bool:
    """True if the model holds binary layers (see `piconn.xnor`)."""
    return any(type(la).__name__ == "BinaryLinear" for la in model.layers)


def linear_chain(model: nn.Sequential) -> list[Dense]:
    """The model as Linear layers with fused activations; ValueError if it is not one.

    Dropout and Flatten vanish at inference. A Softmax is only allowed last.
    """
    if not isinstance(model, nn.Sequential):
        raise TypeError(f"expected an nn.Sequential, got {type(model).__name__}")
    out: list[Dense] = []
    fused = True  # whether the latest Dense already has an activation
    for k, layer in enumerate(model.layers):
        name = type(layer).__name__
        if isinstance(layer, nn.Linear):
            w = layer.effective_weight().astype(np.float64)
            b = (layer.bias.data.astype(np.float64) if layer.bias is not None
                 else np.zeros(layer.n_out))
            mask = None if layer.mask is None else np.asarray(layer.mask, dtype=bool).copy()
            if out and out[-1].w.shape[0] != layer.n_in:
                raise ValueError(f"layer {k}: Linear takes {layer.n_in}, previous gives "
                                 f"{out[-1].w.shape[0]}")
            out.append(Dense(w, b, "none", mask))
            fused = False
        elif name in _ACTS:
            if not out or fused:
                raise ValueError(f"layer {k}: {name} must follow a Linear layer "
                                 "(the device fuses one activation into each dense layer)")
            out[-1].act = _ACTS[name]
            fused = True
        elif name in _SKIP:
            continue
        else:
            raise ValueError(f"layer {k}: {name} has no device equivalent "
                             f"(supported: Linear, {', '.join(_ACTS)}, {', '.join(_SKIP)})")
    if not out:
        raise ValueError("the model has no Linear layer")
    for d in out[:-1]:
        if d.act == "softmax":
            raise ValueError("softmax is only supported as the last layer")
    return out


def input_scale(meta: dict | None) -> float | None:
    """The scale from raw u8 inputs to the model's float inputs, or None (f32 input)."""
    s = (meta or {}).get("input_scale")
    if s is None:
        return None
    s = float(s)
    if not np.isfinite(s) or s <= 0:
        raise ValueError(f"meta input_scale must be a positive number, got {s}")
    return s


def to_device(model: nn.Sequential, meta: dict | None = None) -> ir.DeviceModel:
    """Float (or pruned float, or XNOR) model -> DeviceModel."""
    if is_xnor(model):
        from . import xnor

        return xnor.lower(model, meta)
    chain = linear_chain(model)
    s_in = input_scale(meta)
    layers: list[ir.Layer] = []
    for k, d in enumerate(chain):
        w = d.w
        in_dtype = "f32"
        if k == 0 and s_in is not None:
            w, in_dtype = w * s_in, "u8"
        layers.append(ir.DenseF32(w.astype(np.float32), d.b.astype(np.float32), d.act,
                                  in_dtype, d.mask))
    family = "sparse" if any(d.mask is not None for d in chain) else "float"
    dm = ir.DeviceModel(layers, family, 1.0, _meta(meta))
    dm.check()
    return dm


def _meta(meta: dict | None) -> dict:
    keep = ("dataset", "arch", "input_scale", "classes")
    return {k: v for k, v in (meta or {}).items() if k in keep}
