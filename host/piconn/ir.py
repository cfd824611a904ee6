"""The device model: what the Pico computes, as plain numpy arrays.

Compression (`prune`, `quant`, `xnor`) lowers a trained `nn.Sequential` to a
`DeviceModel`; `reference` runs it bit-exactly as the device will; `export`
writes it in the binary format of docs/FORMAT.md. Arrays here are the logical
(output-major, `w[c, i]`) view; the exporter transposes to the input-major layout
and packs bits.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

ACTS = ("none", "relu", "sigmoid", "tanh", "softmax")
DTYPES = ("u8", "f32", "bits", "i32")


@dataclass
class DenseF32:
    """`dense_f32`, or `sparse_f32` when `mask` is given. w: f32 [n_out, n_in]."""

    w: np.ndarray
    b: np.ndarray
    act: str = "none"
    in_dtype: str = "f32"
    mask: np.ndarray | None = None  # bool [n_out, n_in]; True = stored weight

    kind = "dense_f32"


@dataclass
class DenseQ8W:
    """`dense_q8w`: uint8 weights, float activations. Real w = scale[c]*(w - zw[c])."""

    w: np.ndarray  # u8 [n_out, n_in]
    zw: np.ndarray  # u8 [n_out]
    scale: np.ndarray  # f32 [n_out]
    b: np.ndarray  # f32 [n_out]
    act: str = "none"
    in_dtype: str = "f32"

    kind = "dense_q8w"


@dataclass
class DenseQ8:
    """`dense_q8` (or `sparse_q8` with `mask`): full integer, see FORMAT.md.

    out_dtype "u8": requantized with per-channel (mult, s1, s2) and zy.
    out_dtype "i32": acc itself (last layer).
    """

    w: np.ndarray  # u8 [n_out, n_in]
    zw: np.ndarray  # u8 [n_out]
    bias: np.ndarray  # i32 [n_out], input zero point already folded in
    mult: np.ndarray | None = None  # i32 [n_out], in [0, 32767]
    s1: np.ndarray | None = None  # i32 [n_out]
    s2: np.ndarray | None = None  # i32 [n_out]
    zy: int = 0
    out_dtype: str = "u8"
    mask: np.ndarray | None = None

    kind = "dense_q8"
    in_dtype = "u8"


@dataclass
class Binarize:
    """`binarize`: u8 -> bits, +1 where x >= threshold."""

    n: int
    threshold: int

    kind = "binarize"
    in_dtype = "u8"


@dataclass
class XnorDense:
    """`xnor_dense`: bits -> bits. w: bool [n_out, n_in] (True = +1); thr: i32 [n_out]."""

    w: np.ndarray
    thr: np.ndarray

    kind = "xnor_dense"
    in_dtype = "bits"


@dataclass
class XnorOut:
    """`xnor_out`: bits -> i32, y = a*(n_in - 2*popcount(x^w)) + b."""

    w: np.ndarray  # bool [n_out, n_in]
    a: np.ndarray  # i32 [n_out]
    b: np.ndarray  # i32 [n_out]

    kind = "xnor_out"
    in_dtype = "bits"


Layer = DenseF32 | DenseQ8W | DenseQ8 | Binarize | XnorDense | XnorOut


def n_in(layer: Layer) -> int:
    return layer.n if isinstance(layer, Binarize) else int(layer.w.shape[1])


def n_out(layer: Layer) -> int:
    return layer.n if isinstance(layer, Binarize) else int(layer.w.shape[0])


def out_dtype(layer: Layer) -> str:
    if isinstance(layer, (DenseF32, DenseQ8W)):
        return "f32"
    if isinstance(layer, DenseQ8):
        return layer.out_dtype
    if isinstance(layer, (Binarize, XnorDense)):
        return "bits"
    return "i32"


@dataclass
class DeviceModel:
    """A model as the device runs it: typed layers plus what the header carries.

    family: "float", "sparse", "uint8" or "xnor" (what the benchmarks call the kind).
    """

    layers: list[Layer]
    family: str
    output_scale: float = 1.0
    meta: dict = field(default_factory=dict)

    @property
    def input_size(self) -> int:
        return n_in(self.layers[0])

    @property
    def output_size(self) -> int:
        return n_out(self.layers[-1])

    @property
    def input_dtype(self) -> str:
        return self.layers[0].in_dtype

    @property
    def output_dtype(self) -> str:
        return out_dtype(self.layers[-1])

    def check(self) -> None:
        """Raise ValueError unless consecutive layers agree in size and dtype."""
        prev_n, prev_dt = None, None
        for k, layer in enumerate(self.layers):
            if prev_n is not None and (n_in(layer) != prev_n or layer.in_dtype != prev_dt):
                raise ValueError(
                    f"layer {k} ({layer.kind}) takes {n_in(layer)} {layer.in_dtype}, "
                    f"but layer {k - 1} gives {prev_n} {prev_dt}"
                )
            prev_n, prev_dt = n_out(layer), out_dtype(layer)
