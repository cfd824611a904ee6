"""`piconn export`: write a model as a MicroPython module (and a .nnb file) for the device.

    piconn export MODEL --name mnist_q8 --out DIR [--samples N] [--json]

MODEL is a trained/compressed .npz (lowered with `lower.to_device`) or a .nnb
(already lowered). Writes

- DIR/NAME.py: a module holding the model as ONE bytes constant `MODEL` (frozen
  into the firmware it stays in flash and `nn.load(module)` reads it in place)
  plus small metadata (NAME, KIND, INPUT_SIZE, INPUT_DTYPE, OUTPUT_SIZE,
  OUTPUT_DTYPE, OUTPUT_SCALE, CLASSES, CRC32, MODEL_BYTES);
- DIR/NAME.nnb: the same bytes, for `nn.load(path)` or the host tools;
- with `--samples N`: DIR/mnist_samples.py, the first N MNIST test digits
  (IMAGES: N*784 raw bytes, LABELS: N bytes). It is one module shared by every
  exported model, so the digits are in flash once however many models are
  frozen (100 digits are 78 KB); exporting again writes the same bytes.

Output is deterministic: the same model gives byte-identical files. Before
writing, the model is checked as strictly as the device's `nn.load` checks it
(`device_check`), so an exported model never fails to load on the device.
"""

from __future__ import annotations

import argparse
import keyword
import os
import struct
import zlib
from pathlib import Path

import numpy as np

from . import format as fmt
from . import ir

SAMPLES_MODULE = "mnist_samples"
_LINE_BYTES = 48  # bytes per source line of a bytes literal
_INT32_MAX = 2**31 - 1
_MAC_MAX = 255 * 255
# the f32 parameter slots of each kind
F32_SLOTS = {"dense_f32": (0, 1), "dense_q8w": (2, 3), "sparse_f32": (2, 3)}


# ------------------------------------------------------------------ device rules


def device_check(blob: bytes) -> None:
    """Raise ValueError where the device's `nn.load` would refuse a model that
    `format.from_bytes` accepts.

    The device adds checks the host IR cannot express: input dtype u8/f32 and
    output dtype f32/i32 (FORMAT.md), sparse row indices strictly increasing
    within each column (the writer's order; a duplicate would be summed by the
    kernels but collapsed by the reader), padding bits of binary weight rows
    clear (the kernels count them), accumulators that cannot leave int32 for any
    input (|bias| + 255*255*n_in, |a|*n_in + |b|), and finite f32 parameters (the
    kernels skip zero inputs, which must not change a result: 0*inf is NaN).
    """
    dm = fmt.from_bytes(blob)  # everything the host checks first
    if dm.input_dtype not in ("u8", "f32"):
        raise ValueError(f"model input dtype {dm.input_dtype}: must be u8 or f32")
    if dm.output_dtype not in ("f32", "i32"):
        raise ValueError(f"model output dtype {dm.output_dtype}: must be f32 or i32")
    n_layers = struct.unpack_from("<H", blob, 16)[0]
    for k in range(n_layers):
        rec = fmt._RECORD.unpack_from(blob, fmt.HEADER_SIZE + fmt.RECORD_SIZE * k)
        code, _act, dt_in, _dt_out, n_i, n_o, nnz, _zy, ib = rec[:9]
        offs = rec[11:]
        kind = fmt.KIND_NAMES[code]
        for slot in F32_SLOTS.get(kind, ()):
            size = fmt._array_bytes(kind, slot, n_i, n_o, nnz, ib)
            if not np.all(np.isfinite(np.frombuffer(blob, "<f4", size // 4, offs[slot]))):
                raise ValueError(f"layer {k}: parameter {slot} holds NaN or infinity")
        if kind in ("sparse_f32", "sparse_q8"):
            colptr = np.frombuffer(blob, "<u4", n_i + 1, offs[0]).astype(np.int64)
            rows = np.frombuffer(blob, "<u1" if ib == 1 else "<u2", nnz,
                                 offs[1]).astype(np.int64) if nnz else np.zeros(0, np.int64)
            col = np.repeat(np.arange(n_i), np.diff(colptr))
            same = col[1:] == col[:-1]
            if np.any(rows[1:][same] <= rows[:-1][same]):
                raise ValueError(f"layer {k}: sparse row indices not increasing within a column")
        if kind in ("dense_q8", "sparse_q8"):
            bias = np.frombuffer(blob, "<i4", n_o, offs[2 if kind == "dense_q8" else 4])
            _bound(k, int(np.abs(bias.astype(np.int64)).max()), _MAC_MAX * n_i)
        if kind == "dense_q8w" and fmt.DTYPE_NAMES[dt_in] == "u8":
            _bound(k, 0, _MAC_MAX * n_i)
        if kind in ("xnor_dense", "xnor_out"):
            nw = fmt.words(n_i)
            w = np.frombuffer(blob, "<u4", nw * n_o, offs[0]).reshape(n_o, nw)
            if n_i % 32 and np.any(w[:, -1] >> np.uint32(n_i % 32)):
                raise ValueError(f"layer {k}: padding bits set in binary weight rows")
            if kind == "xnor_out":
                a = np.frombuffer(blob, "<i4", n_o, offs[1]).astype(np.int64)
                b = np.frombuffer(blob, "<i4", n_o, offs[2]).astype(np.int64)
                _bound(k, int(np.abs(b).max()), int(np.abs(a).max()) * n_i)


def _bound(k: int, bias: int, macs: int) -> None:
    if bias + macs > _INT32_MAX:
        raise ValueError(f"layer {k}: accumulator could leave the int32 range "
                         f"(|bias| {bias} + {macs})")


# ------------------------------------------------------------------ sources


def load_model(path: str | Path) -> tuple[bytes, ir.DeviceModel, dict]:
    """The device bytes of a .nnb or .npz model, its DeviceModel and its metadata."""
    path = Path(path)
    with open(path, "rb") as f:
        head = f.read(4)
    if head == fmt.MAGIC:
        blob = path.read_bytes()
        return blob, fmt.from_bytes(blob), {}
    if path.suffix != ".npz" and head[:2] != b"PK":
        raise ValueError(f"{path}: neither a .nnb model (magic {fmt.MAGIC!r}) nor a .npz")
    from . import lower, nn

    model, meta = nn.load(path)
    dm = lower.to_device(model, meta)
    return fmt.to_bytes(dm), dm, dict(meta or {})


def _bytes_literal(data: bytes, indent: str = "    ") -> str:
    """A parenthesized run of adjacent bytes literals (one constant once compiled)."""
    if not data:
        return 'b""'
    lines = [indent + repr(data[i:i + _LINE_BYTES]) for i in range(0, len(data), _LINE_BYTES)]
    return "(\n" + "\n".join(lines) + "\n)"


def _classes(dm: ir.DeviceModel, meta: dict) -> tuple[str, ...]:
    classes = meta.get("classes")
    if classes is not None and len(classes) == dm.output_size:
        return tuple(str(c) for c in classes)
    return tuple(str(i) for i in range(dm.output_size))


def module_source(name: str, blob: bytes, dm: ir.DeviceModel, classes: tuple[str, ...],
                  source: str) -> str:
    """The text of NAME.py (deterministic)."""
    crc = zlib.crc32(blob) & 0xFFFFFFFF
    return (
        f'"""piconn model {name}: {dm.family}, {dm.input_size} {dm.input_dtype} -> '
        f'{dm.output_size} {dm.output_dtype}.\n\n'
        f"Generated by `piconn export` from {source}; do not edit.\n"
        f"Use: import nn, {name}; m = nn.load({name})  (MODEL is read in place).\n"
        '"""\n\n'
        f"NAME = {name!r}\n"
        f"KIND = {dm.family!r}\n"
        f"INPUT_SIZE = {dm.input_size}\n"
        f"INPUT_DTYPE = {dm.input_dtype!r}\n"
        f"OUTPUT_SIZE = {dm.output_size}\n"
        f"OUTPUT_DTYPE = {dm.output_dtype!r}\n"
        f"OUTPUT_SCALE = {float(np.float32(dm.output_scale))!r}\n"
        f"CLASSES = {classes!r}\n"
        f"MODEL_BYTES = {len(blob)}\n"
        f"CRC32 = 0x{crc:08x}\n"
        f"MODEL = {_bytes_literal(blob)}\n"
    )


def samples_source(images: np.ndarray, labels: np.ndarray) -> str:
    """The text of mnist_samples.py: N digits (u8 [N, 784]) and their labels."""
    images = np.ascontiguousarray(images, dtype=np.uint8).reshape(len(images), -1)
    labels = np.ascontiguousarray(labels, dtype=np.uint8)
    n, size = images.shape
    return (
        f'"""The first {n} MNIST test digits, for demos on the device.\n\n'
        "Generated by `piconn export --samples`; do not edit.\n"
        "Digit k is IMAGES[k*SIZE:(k+1)*SIZE] (raw bytes, row-major 28x28), its class LABELS[k].\n"
        '"""\n\n'
        f"COUNT = {n}\n"
        f"SIZE = {size}\n"
        "ROWS = 28\n"
        "COLS = 28\n"
        f"LABELS = {_bytes_literal(labels.tobytes())}\n"
        f"IMAGES = {_bytes_literal(images.tobytes())}\n"
    )


def _write(path: Path, data: str | bytes) -> None:
    """Write atomically and only when the content changes (parallel exports share files)."""
    raw = data.encode() if isinstance(data, str) else data
    if path.exists() and path.read_bytes() == raw:
        return
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(raw)
    os.replace(tmp, path)


def check_name(name: str) -> str:
    """A module name: a Python identifier, not a keyword, not the samples module."""
    if not name.isidentifier() or keyword.iskeyword(name) or not name.isascii():
        raise ValueError(f"--name {name!r} is not a valid Python module name")
    if name in (SAMPLES_MODULE, "nn"):
        raise ValueError(f"--name {name!r} is reserved")
    return name


def export_bytes(blob: bytes, dm: ir.DeviceModel, name: str, out: str | Path,
                 classes: tuple[str, ...] | None = None, source: str = "a DeviceModel"
                 ) -> tuple[Path, Path]:
    """Write OUT/NAME.py and OUT/NAME.nnb for model bytes `blob`; returns both paths."""
    check_name(name)
    device_check(blob)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    mod_path, nnb_path = out / f"{name}.py", out / f"{name}.nnb"
    _write(nnb_path, blob)
    _write(mod_path, module_source(name, blob, dm, classes or _classes(dm, {}), source))
    return mod_path, nnb_path


def export(model: str | Path, name: str, out: str | Path, samples: int = 0,
           data_path: str | None = None) -> dict:
    """Export one model; returns what was written (paths, sizes, CRC)."""
    check_name(name)
    if samples < 0:
        raise ValueError("--samples must be 0 or more")
    blob, dm, meta = load_model(model)
    device_check(blob)
    out = Path(out)
    samples_path = None
    if samples:
        from . import data

        _, _, x_test, y_test = data.load_mnist(data_path, download=False)
        if samples > len(x_test):
            raise ValueError(f"--samples {samples}: the test set has {len(x_test)} digits")
        if dm.input_size != x_test.shape[1]:
            raise ValueError(f"--samples: the model takes {dm.input_size} inputs, "
                             f"MNIST digits have {x_test.shape[1]}")
        samples_path = out / f"{SAMPLES_MODULE}.py"
    mod_path, nnb_path = export_bytes(blob, dm, name, out, _classes(dm, meta), Path(model).name)
    if samples_path is not None:
        _write(samples_path, samples_source(x_test[:samples], y_test[:samples]))
    return {
        "command": "export", "name": name, "model": str(model), "kind": dm.family,
        "module": str(mod_path), "nnb": str(nnb_path), "bytes": len(blob),
        "crc32": f"{zlib.crc32(blob) & 0xFFFFFFFF:08x}",
        "samples": str(samples_path) if samples_path else None, "n_samples": samples,
    }


def run_export(args: argparse.Namespace) -> tuple[dict, str]:
    result = export(args.model, args.name, args.out, args.samples, getattr(args, "data", None))
    text = (f"exported {result['name']} ({result['kind']}, {result['bytes']} bytes) to "
            f"{result['module']} and {result['nnb']}")
    if result["samples"]:
        text += f"; {args.samples} test digits in {result['samples']}"
    return result, text


def add_parser(sub: argparse._SubParsersAction) -> None:
    """The `export` subcommand."""
    from . import cli

    p = sub.add_parser("export", help="write a model as a MicroPython module (+ .nnb) for the device",
                       description="Write MODEL (.npz or .nnb) as DIR/NAME.py (one bytes constant, "
                       "frozen into flash) and DIR/NAME.nnb.")
    p.add_argument("model", help="trained model (.npz) or device model (.nnb)")
    p.add_argument("--name", required=True, help="module name, e.g. mnist_q8")
    p.add_argument("--out", required=True, help="output folder, e.g. build/models")
    p.add_argument("--samples", type=cli.nonneg_int, default=0, metavar="N",
                   help=f"also write N MNIST test digits to DIR/{SAMPLES_MODULE}.py (shared by "
                   "all models)")
    p.add_argument("--data", default=None, help="MNIST folder (default: the usual places)")
    cli.add_common(p)
    p.set_defaults(handler=run_export)
