"""`piconn export MODEL --name NAME --out DIR [--samples N]`: a MicroPython module
(+ .nnb) for the device (see piconn.export)."""

from __future__ import annotations

import argparse

from .. import export
from .common import add_common, nonneg_int


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="write a model as a MicroPython module (+ .nnb) for the device",
                       description="Write MODEL (.npz or .nnb) as DIR/NAME.py (one bytes constant, "
                       "frozen into flash) and DIR/NAME.nnb.")
    p.add_argument("model", help="trained model (.npz) or device model (.nnb)")
    p.add_argument("--name", required=True, help="module name, e.g. mnist_q8")
    p.add_argument("--out", required=True, help="output folder, e.g. build/models")
    p.add_argument("--samples", type=nonneg_int, default=0, metavar="N",
                   help=f"also write N MNIST test digits to DIR/{export.SAMPLES_MODULE}.py "
                   "(shared by all models)")
    p.add_argument("--data", default=None, help="MNIST folder (default: the usual places)")
    add_common(p)
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> tuple[dict, str]:
    result = {"command": "export",
              **export.export(args.model, args.name, args.out, args.samples, args.data)}
    text = (f"exported {result['name']} ({result['kind']}, {result['bytes']} bytes) to "
            f"{result['module']} and {result['nnb']}")
    if result["samples"]:
        text += f"; {args.samples} test digits in {result['samples']}"
    return result, text
