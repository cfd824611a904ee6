"""Host side of the benchmark (tools/bench.py): what runs, and the host's figures.

The MNIST model variants and the float size ladder, the kernel tiers, the target
times and the published figures the tables compare with; per cell: accuracy by the
bit-exact reference, the model's size, the model bytes each inference reads from
flash (estimated from the layer layout, beside the emulator's count), and the
benchmark rows (JSON-able dicts) that tools/report.py turns into tables.
"""

from __future__ import annotations

import math
import struct
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from piconn import format as fmt
from piconn import ir, lower, reference

TIERS = ("c", "viper", "python")
MIN_DIGITS = 3
FLASH_BASE = 0x10000000
EXTRA_BASE = FLASH_BASE + 0x200000  # 2 MB in: past the Pico's flash, inside the emulated 16 MB
XIP_CACHE_BYTES = 16 * 1024
XIP_LINE_BYTES = 8  # RP2040 XIP cache line
MISS_NS = 400  # order of one cache miss on hardware (QSPI)


@dataclass(frozen=True)
class Variant:
    """One frozen MNIST model: module name in build/models, kind and a label."""

    name: str
    kind: str  # float | sparse | uint8 | xnor
    variant: str
    sources: tuple[str, ...]  # where the host finds it if build/models/NAME.nnb is missing


VARIANTS = (
    Variant("mnist_f32", "float", "float32", ("mnist_f32.npz",)),
    Variant("mnist_sparse", "sparse", "sparse float32 (90% pruned)", ("mnist_pruned.npz",)),
    Variant("mnist_q8w", "uint8", "uint8 weight-only (float activations)", ("mnist_q8w.nnb",)),
    Variant("mnist_q8", "uint8", "uint8 full integer", ("mnist_q8.nnb",)),
    Variant("mnist_sparse_q8", "sparse", "sparse uint8 (90% pruned)", ("mnist_sparse_q8.nnb",)),
    Variant("mnist_xnor", "xnor", "XNOR (binary weights and activations)", ("mnist_xnor.npz",)),
)

# Target times of the bar column (emulated µs per inference, 784-128-10).
BARS_US = {
    ("mnist_f32", "c"): 80_000,
    ("mnist_q8", "c"): 5_000,
    ("mnist_sparse_q8", "c"): 1_500,
    ("mnist_xnor", "c"): 1_500,
    ("mnist_q8", "viper"): 25_000,
    ("mnist_xnor", "viper"): 5_000,
}

# Published figures of a C++ library on a real Pico, MNIST MLP (per image).
PUBLISHED = (
    {"kind": "float", "variant": "float", "us": 990_000, "accuracy": 0.902},
    {"kind": "sparse", "variant": "pruned float", "us": 500_000, "accuracy": None},
    {"kind": "uint8", "variant": "uint8", "us": 1_470_000, "accuracy": 0.108},
)

# bench.json sections of the published rows (as earlier runs wrote them).
PUBLISHED_SECTION = "cpp-baseline"
PUBLISHED_LADDER_SECTION = "cpp-baseline-ladder"

LADDER = ("784-50-10", "784-100-10", "784-200-10", "784-300-10", "784-300-100-10")
# The same library's float ladder: 0.99 s per image was measured for 784-200-10 only;
# no time was published for 784-300-10.
PUBLISHED_LADDER = {
    "784-200-10": {"accuracy": 0.902, "us": 990_000},
    "784-300-10": {"accuracy": 0.9297, "us": None},
}


# ---------------------------------------------------------------------------------- models


def device_model(path: Path) -> tuple[ir.DeviceModel, bytes]:
    """A .nnb file or a trained .npz (lowered) as (DeviceModel, .nnb bytes)."""
    loaded = lower.load_file(path)
    return loaded.model, loaded.blob


def find_variant(folder: Path, v: Variant) -> tuple[ir.DeviceModel, bytes, Path] | None:
    """The exported build/models/NAME.nnb (the frozen bytes), else its source; None if absent."""
    for name in (f"{v.name}.nnb", *v.sources):
        path = folder / name
        if path.is_file():
            dm, blob = device_model(path)
            return dm, blob, path
    return None


def accuracy(dm: ir.DeviceModel, x: np.ndarray, y: np.ndarray) -> float:
    """Fraction of x classified as y by the bit-exact device reference."""
    return float((reference.predict(dm, x) == np.asarray(y)).mean())


# ---------------------------------------------------------------------------------- flash bytes


def _layer_inputs(dm: ir.DeviceModel, x: np.ndarray) -> list[np.ndarray]:
    """The input of every layer for inputs x [N, input_size] (reference arithmetic)."""
    out = [np.atleast_2d(x)]
    for k in range(1, len(dm.layers)):
        if dm.layers[k].in_dtype == "bits":  # xnor layers read all their weights anyway
            out.append(np.zeros((out[0].shape[0], 0)))
            continue
        prefix = ir.DeviceModel(dm.layers[:k], dm.family, dm.output_scale)
        out.append(np.atleast_2d(reference.run(prefix, x)))
    return out


def layer_flash_bytes(layer: ir.Layer, x: np.ndarray) -> np.ndarray:
    """Model bytes one layer reads per input row of x [N, n_in] (N values).

    The layout of docs/FORMAT.md, read as the kernels do: dense and sparse layers
    read the weight row (input-major) of every nonzero input only, plus each
    per-output vector once; a sparse layer reads colptr[i] and colptr[i+1] and
    the stored (row index, value) pairs of each nonzero input; XNOR layers read
    every weight word.
    """
    n_o = ir.n_out(layer)
    n = x.shape[0]
    if isinstance(layer, ir.Binarize):
        return np.zeros(n, dtype=np.int64)
    if isinstance(layer, (ir.XnorDense, ir.XnorOut)):
        rows = n_o * fmt.words(ir.n_in(layer)) * 4
        vec = 4 * n_o * (1 if isinstance(layer, ir.XnorDense) else 2)
        return np.full(n, rows + vec, dtype=np.int64)
    nz = np.asarray(x) != 0  # [N, n_in]
    if isinstance(layer, ir.DenseF32):
        vec, wbytes = 4 * n_o, 4
    elif isinstance(layer, ir.DenseQ8W):
        vec, wbytes = n_o + 8 * n_o, 1  # zw, scale, b
    elif isinstance(layer, ir.DenseQ8):
        vec, wbytes = n_o + 4 * n_o + (4 * n_o if layer.out_dtype == "u8" else 0), 1
    else:
        raise TypeError(f"not a device layer: {type(layer).__name__}")
    mask = getattr(layer, "mask", None)
    if mask is None:
        return nz.sum(axis=1).astype(np.int64) * n_o * wbytes + vec
    ib = 1 if n_o <= 256 else 2
    per_input = np.asarray(mask, dtype=bool).sum(axis=0).astype(np.int64)  # stored per column
    stored = nz.astype(np.int64) @ per_input
    return stored * (ib + wbytes) + 8 * nz.sum(axis=1).astype(np.int64) + vec


def flash_bytes_estimate(dm: ir.DeviceModel, x: np.ndarray) -> np.ndarray:
    """Host estimate of the model bytes each inference reads, per input row of x."""
    x = np.atleast_2d(x)
    total = np.zeros(x.shape[0], dtype=np.int64)
    for layer, xin in zip(dm.layers, _layer_inputs(dm, x)):
        total += layer_flash_bytes(layer, xin)
    return total


def miss_bound_us(flash_bytes: float | None, model_bytes: int) -> float | None:
    """Upper bound of the time cache misses add on hardware: lines read x MISS_NS.

    Zero when the whole model fits in the XIP cache (it stays cached between inferences).
    """
    if flash_bytes is None:
        return None
    if model_bytes <= XIP_CACHE_BYTES // 2:
        return 0.0
    return math.ceil(flash_bytes / XIP_LINE_BYTES) * MISS_NS / 1000


# ---------------------------------------------------------------------------------- rows


def _round(v: float | None, nd: int = 1) -> float | None:
    return None if v is None else round(float(v), nd)


def agreement(dm: ir.DeviceModel, x: np.ndarray, dev_out: list[list[float]],
              dev_pred: list[int]) -> dict:
    """How the device's outputs on the digits compare with the reference's."""
    ref = np.atleast_2d(reference.run(dm, x[:len(dev_out)]))
    dev = np.asarray(dev_out, dtype=np.float64)
    res = {"pred_match": bool(np.array_equal(np.argmax(ref, axis=1), np.asarray(dev_pred)))}
    if ref.dtype == np.int32:
        res["out_exact"] = bool(np.array_equal(ref.astype(np.int64), dev.astype(np.int64)))
    else:
        scale = max(1.0, float(np.abs(ref).max()))
        res["out_max_rel_diff"] = float(np.abs(ref - dev).max() / scale)
    return res


def cell_row(base: dict, dm: ir.DeviceModel, blob: bytes, x: np.ndarray, dev: dict,
             flash_method: str) -> dict:
    """One benchmark row from the host figures (base) and the device's (dev)."""
    n = dev["digits"]
    us = np.asarray(dev["us"], dtype=np.float64)
    est = flash_bytes_estimate(dm, x[:n])
    row = dict(base)
    measured = dev.get("flash_total")
    k = dev.get("flash_digits") or n
    flash = measured / k if measured is not None else float(est.mean())
    row.update({
        "digits": n, "us": _round(us.mean()), "us_min": int(us.min()), "us_max": int(us.max()),
        "us_each": [int(v) for v in us],
        "flash_bytes_read": _round(flash), "flash_method": flash_method if measured is not None
        else "estimated", "flash_digits": k if measured is not None else n,
        "flash_bytes_est": _round(flash_bytes_estimate(dm, x[:k]).mean()),
        "miss_bound_us": _round(miss_bound_us(flash, len(blob))),
        "heap_bytes": dev["heap"], "heap_after_inference": dev["heap_after"],
        "alloc_free": dev["alloc_free"], "backend": dev["backend"],
        "fallback_of": dev.get("fallback_of"),
        "layer_tiers": dev.get("layer_tiers"), "summary": dev.get("summary"),
        "crc_match": dev["crc"] == struct.unpack_from("<I", blob, 12)[0],
        **agreement(dm, x, dev["out"], dev["pred"]),
    })
    bar = row.get("bar_us")
    if bar is not None:
        row["meets_bar"] = bool(row["us"] <= bar)
    return row


def host_row(section: str, model: str, kind: str, variant: str, tier: str | None,
             dm: ir.DeviceModel, blob: bytes, acc: float, x_bench: np.ndarray) -> dict:
    """The host's figures of a cell (no device): accuracy, size, flash estimate."""
    est = float(flash_bytes_estimate(dm, x_bench).mean())
    row = {"section": section, "model": model, "kind": kind, "variant": variant, "tier": tier,
           "accuracy": round(acc, 4), "model_bytes": len(blob), "us": None, "digits": 0,
           "flash_bytes_read": round(est, 1), "flash_method": "estimated",
           "flash_bytes_est": round(est, 1), "miss_bound_us": _round(miss_bound_us(est, len(blob))),
           "heap_bytes": None}
    bar = BARS_US.get((model, tier)) if tier else None
    if bar is not None:
        row["bar_us"] = bar
        row["meets_bar"] = None
    return row


def published_rows() -> list[dict]:
    """The published figures as rows of bench.json."""
    rows = [{"section": PUBLISHED_SECTION, "model": "C++ baseline MNIST MLP", "tier": "C++ (real Pico)",
             **s} for s in PUBLISHED]
    for arch, s in PUBLISHED_LADDER.items():
        rows.append({"section": PUBLISHED_LADDER_SECTION, "model": arch, "kind": "float",
                     "variant": "float", "tier": "C++ (real Pico)", **s})
    return rows


# ---------------------------------------------------------------------------------- ladder


def ladder_models(folder: Path, train: bool, log: Callable[[str], None]
                  ) -> list[tuple[str, ir.DeviceModel, bytes]]:
    """The trained ladder models (training the missing ones with piconn's defaults)."""
    out = []
    folder.mkdir(parents=True, exist_ok=True)
    for arch in LADDER:
        path = folder / f"mlp_{arch}.npz"
        if not path.is_file() and train:
            log(f"training {arch} (piconn train mnist --arch {arch}) ...")
            subprocess.run([sys.executable, "-m", "piconn", "train", "mnist", "--arch", arch,
                            "--quiet", "--out", str(path)], check=True)
        if not path.is_file():
            log(f"ladder: {path} missing, skipped")
            continue
        dm, blob = device_model(path)
        out.append((arch, dm, blob))
    return out
