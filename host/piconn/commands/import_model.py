"""`piconn import FILE.tflite --name NAME --out DIR [--json]`: an int8 TensorFlow Lite
model as a MicroPython module (+ .nnb, format version 2) for the device."""

from __future__ import annotations

import argparse
from pathlib import Path

from .. import export
from ..tflite import import_tflite
from .common import add_common


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("import", help="import an int8 .tflite model for the device",
                       description="Read FILE.tflite (TensorFlow Lite, full-integer int8) and "
                       "write DIR/NAME.py (one bytes constant, frozen into flash) and "
                       "DIR/NAME.nnb (format version 2); print its operators, shapes, MACs, "
                       "weight bytes and arena bytes.")
    p.add_argument("model", help="a .tflite file")
    p.add_argument("--name", help="module name (default: the file's name)")
    p.add_argument("--out", required=True, help="output folder, e.g. build/models")
    add_common(p)
    p.set_defaults(handler=run)


def _shape(dims: list[int]) -> str:
    return "x".join(str(d) for d in dims)


def run(args: argparse.Namespace) -> tuple[dict, str]:
    path = Path(args.model)
    name = args.name or path.stem.replace("-", "_")
    export.check_name(name)
    graph = import_tflite(path)
    table = export.graph_table(graph)
    written = export.export_graph(graph, name, args.out, path.name)
    result = {"command": "import", "model": str(path), **written, **table}
    lines = [(f"  {'#':>3}  {'operator':18} {'input':14} {'output':12} {'MACs':>10} "
             f"{'weights B':>10} {'arena B':>8}")]
    for r in table["operators"]:
        lines.append(f"  {r['index']:3d}  {r['op']:18} {','.join(map(_shape, r['inputs'])):14} "
                     f"{_shape(r['output']):12} {r['macs']:10,} {r['weight_bytes']:10,} "
                     f"{r['arena_bytes']:8,}")
    lines.append(f"  total: {table['macs']:,} MACs, weights {table['weight_bytes']:,} B, "
                 f"arena {table['arena_bytes']:,} B (peak)")
    lines.append(f"imported {path.name} as {name} ({written['bytes']:,} bytes) to "
                 f"{written['module']} and {written['nnb']}")
    return result, "\n".join(lines)
