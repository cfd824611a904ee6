"""Lower a trained `nn.Sequential` to an `ir.DeviceModel` (what the Pico runs).

`to_device(model, meta)` handles float models (`dense_f32`), pruned ones (a
`Linear.mask` gives `sparse_f32`) and XNOR models (delegated to `xnor.lower`).
Quantized models are made by `quant.quantize`, which uses `linear_chain` too.
`load_file(path)` turns a model file (.nnb, or a trained .npz lowered here) into
the device model the reference runs and the exporter writes.

Input convention: a model trained on float pixels `x/255` has
`meta["input_scale"] = 1/255`; the device then takes the raw u8 bytes and the
scale is folded into the first layer's weights. Without `input_scale` the
device model takes f32 inputs as they are.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import format as fmt
from . import ir, nn, xnor

# Activation layers the device fuses into the dense layer before them.
_ACTS: dict[type[nn.Module], str] = {nn.ReLU: "relu", nn.Sigmoid: "sigmoid", nn.Tanh: "tanh",
                                     nn.Softmax: "softmax"}
# Layers that do nothing at inference.
_SKIP: tuple[type[nn.Module], ...] = (nn.Dropout, nn.Flatten)


@dataclass
class Dense:
    """One Linear layer of a trained model with its fused activation (float64 copies)."""

    w: np.ndarray  # [n_out, n_in], masked weights are 0
    b: np.ndarray  # [n_out]
    act: str
    mask: np.ndarray | None  # bool [n_out, n_in] or None


def is_xnor(model: nn.Sequential) -> bool:
    """True if the model holds binary layers (see `piconn.xnor`)."""
    return any(isinstance(la, xnor.BinaryLinear) for la in model.layers)


def is_compressed(model: nn.Sequential) -> bool:
    """True for a pruned (masked) or XNOR model: its accuracy is the device arithmetic's."""
    return is_xnor(model) or any(getattr(la, "mask", None) is not None for la in model.layers)


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
        act = _ACTS.get(type(layer))
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
        elif act is not None:
            if not out or fused:
                raise ValueError(f"layer {k}: {name} must follow a Linear layer "
                                 "(the device fuses one activation into each dense layer)")
            out[-1].act = act
            fused = True
        elif type(layer) in _SKIP:
            continue
        else:
            supported = ["Linear", *(c.__name__ for c in (*_ACTS, *_SKIP))]
            raise ValueError(f"layer {k}: {name} has no device equivalent "
                             f"(supported: {', '.join(supported)})")
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
    dm = ir.DeviceModel(layers, family, 1.0, device_meta(meta))
    dm.check()
    return dm


def device_meta(meta: dict | None) -> dict:
    """The part of a trained model's meta a DeviceModel keeps."""
    keep = ("dataset", "arch", "input_scale", "classes")
    return {k: v for k, v in (meta or {}).items() if k in keep}


# ------------------------------------------------------------------ model files


@dataclass(frozen=True)
class DeviceFile:
    """A model file as the device sees it."""

    model: ir.DeviceModel  # what reference.run runs
    blob: bytes  # its .nnb bytes (a .nnb file's own bytes)
    meta: dict  # the trained model's meta ({} for a .nnb)


def is_nnb(path: str | Path) -> bool:
    """True if the file starts with the .nnb magic (FORMAT.md)."""
    with open(path, "rb") as f:
        return f.read(len(fmt.MAGIC)) == fmt.MAGIC


def load_file(path: str | Path) -> DeviceFile:
    """A .nnb file (checked with every rule of the device's `nn.load`) or a trained
    .npz (read with `nn.load`, lowered with `to_device`) as a DeviceFile."""
    path = Path(path)
    if is_nnb(path):
        blob = path.read_bytes()
        return DeviceFile(fmt.from_bytes(blob), blob, {})
    with open(path, "rb") as f:
        head = f.read(2)
    if path.suffix != ".npz" and head != b"PK":
        raise ValueError(f"{path}: neither a .nnb model (magic {fmt.MAGIC!r}) nor a .npz")
    model, meta = nn.load(path)
    dm = to_device(model, meta)
    return DeviceFile(dm, fmt.to_bytes(dm), dict(meta or {}))
