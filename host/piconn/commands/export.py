"""`piconn export MODEL --name NAME --out DIR [--samples N] [--format tflite]`: a MicroPython
module (+ .nnb) for the device (see piconn.export), or an int8 model as a TensorFlow Lite
file (see piconn.tflite_write)."""

from __future__ import annotations

import argparse
import zlib
from pathlib import Path

from .. import export, format2, nn, tflite_write, xnor_cnn
from ..graph import FLOAT32, INT8, Graph
from ..tflite import import_tflite
from ..tflite_schema import FILE_IDENTIFIER
from .common import CliError, add_common, model_file, nonneg_int

MICROPYTHON = "micropython"
TFLITE = "tflite"
FORMATS = (MICROPYTHON, TFLITE)
QUANTIZE_FIRST = ("quantize it first: piconn quantize TRAINED.npz --mode int8 --out FILE.nnb, "
                  "then export FILE.nnb")


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="write a model as a MicroPython module (+ .nnb) for the "
                       "device, or an int8 model as a .tflite file",
                       description="Write MODEL (.npz or .nnb) as DIR/NAME.py (one bytes constant, "
                       "frozen into flash) and DIR/NAME.nnb; with --format tflite, write an int8 "
                       "model (the .nnb of `piconn quantize --mode int8` or `piconn import`) as "
                       "DIR/NAME.tflite for TensorFlow Lite (Micro), which computes the same "
                       "outputs bit for bit.")
    p.add_argument("model", help="trained model (.npz) or device model (.nnb); "
                   "--format tflite: an int8 (or float32) version-2 .nnb, or a .tflite")
    p.add_argument("--name", required=True, help="module name, e.g. mnist_q8")
    p.add_argument("--out", required=True, help="output folder, e.g. build/models")
    p.add_argument("--format", choices=FORMATS, default=MICROPYTHON,
                   help=f"{MICROPYTHON}: NAME.py + NAME.nnb (default); {TFLITE}: NAME.tflite")
    p.add_argument("--samples", type=nonneg_int, default=0, metavar="N",
                   help=f"also write N MNIST test digits to DIR/{export.SAMPLES_MODULE}.py "
                   "(shared by all models)")
    p.add_argument("--data", default=None, help="MNIST folder (default: the usual places)")
    add_common(p)
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> tuple[dict, str]:
    if args.format == TFLITE:
        return _run_tflite(args)
    binary = _binary_cnn(args)
    if binary is not None:
        return binary
    result = {"command": "export",
              **export.export(args.model, args.name, args.out, args.samples, args.data)}
    text = (f"exported {result['name']} ({result['kind']}, {result['bytes']} bytes) to "
            f"{result['module']} and {result['nnb']}")
    if result["samples"]:
        text += f"; {args.samples} test digits in {result['samples']}"
    return result, text


def _graph(path: Path) -> Graph:
    """The graph of a version-2 .nnb (int8, or float32) or a .tflite; a CliError naming
    what to run first for any other model."""
    raw = path.read_bytes()
    if raw[4:8] == FILE_IDENTIFIER:
        return import_tflite(raw)
    if format2.is_version2(raw):
        return format2.from_bytes(raw).graph
    if raw[:2] == b"PK":  # a .npz (zip) of trained weights
        raise CliError(f"{path} is a trained float model, --format tflite takes an int8 "
                       f"model; {QUANTIZE_FIRST}")
    raise CliError(f"{path} is not an int8 model (--format tflite takes a version-2 .nnb; "
                   f"version 1 holds float, uint8 and XNOR MLPs); {QUANTIZE_FIRST}")


def _run_tflite(args: argparse.Namespace) -> tuple[dict, str]:
    if args.samples:
        raise CliError("--samples goes with --format micropython")
    export.check_name(args.name)
    path = model_file(args.model)
    graph = _graph(path)
    target = Path(args.out) / f"{args.name}.tflite"
    try:
        blob = tflite_write.write_tflite(graph, target)
    except tflite_write.MissingFlatbuffers as e:
        raise CliError(str(e)) from None
    floats = all(graph.tensors[i].dtype == FLOAT32 for i in graph.activations())
    kind = FLOAT32 if floats else INT8
    result = {"command": "export", "format": TFLITE, "name": args.name, "model": str(path),
              "kind": kind, "tflite": str(target), "bytes": len(blob),
              "crc32": f"{zlib.crc32(blob) & 0xFFFFFFFF:08x}",
              "operators": len(graph.operators), "macs": graph.macs()}
    text = (f"exported {args.name} ({kind}, {len(graph.operators)} operators, {graph.macs():,} "
            f"MACs, {len(blob):,} bytes) to {target}")
    return result, text


def _binary_cnn(args: argparse.Namespace) -> tuple[dict, str] | None:
    """A binary CNN .npz (piconn.xnor_cnn) as a version-2 graph; None for other models."""
    path = Path(args.model)
    if path.suffix != ".npz" or not path.is_file():
        return None
    model, _ = nn.load(path)
    if not xnor_cnn.is_xnor_cnn(model):
        return None
    if args.samples:
        raise CliError("--samples goes with the MNIST models of format version 1")
    graph = xnor_cnn.to_graph(model, args.name)
    written = export.export_graph(graph, args.name, args.out, path.name, "piconn export")
    result = {"command": "export", "model": str(path), "kind": "xnor_cnn", "samples": None,
              "n_samples": 0, **written}
    text = (f"exported {result['name']} (binary CNN, version-2 graph, {result['bytes']} bytes)"
            f" to {result['module']} and {result['nnb']}")
    return result, text
