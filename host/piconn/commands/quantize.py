"""`piconn quantize MODEL --mode {weights,full} --out FILE.nnb`: uint8 quantization."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from .. import format as fmt
from .. import nn, quant, reference, train
from .common import add_common, add_data, load_data, model_file, positive_int


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "quantize", help="quantize a float (or pruned) model to uint8 and write a .nnb",
        description="uint8 quantization. weights: u8 weights, float activations (dense_q8w). "
                    "full: integer-only inference (dense_q8 / sparse_q8), activation ranges "
                    "calibrated on training images.")
    add_common(p)
    p.add_argument("model", metavar="MODEL", help="float or pruned model (.npz)")
    p.add_argument("--mode", choices=quant.MODES, default="full", help="default full")
    p.add_argument("--out", "-o", required=True, metavar="FILE", help="output model (.nnb)")
    p.add_argument("--calib", type=positive_int, default=5000,
                   help="training images used to calibrate activations (default 5000)")
    p.add_argument("--percentile", type=float, default=quant.DEFAULT_PERCENTILE,
                   help=f"activation range: this percentile of each ReLU output "
                        f"(100 = max; default {quant.DEFAULT_PERCENTILE})")
    p.add_argument("--no-bias-correction", dest="bias_correction", action="store_false",
                   help="do not correct the mean output shift of weight rounding")
    p.add_argument("--seed", type=int, default=0, help="calibration sample")
    add_data(p)
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> tuple[dict, str]:
    path = model_file(args.model)
    model, meta = nn.load(path)
    x_train, _, x_test, y_test = load_data(args)
    x_cal = None
    if args.mode == "full":
        idx = np.random.default_rng(args.seed).permutation(len(x_train))[:args.calib]
        x_cal = x_train[np.sort(idx)]
    dm = quant.quantize(model, meta, args.mode, x_cal, args.percentile, args.bias_correction)
    blob = fmt.to_bytes(dm)
    out = Path(args.out)
    out.write_bytes(blob)
    acc = float((reference.predict(dm, x_test) == y_test).mean())
    acc_float = train.evaluate(model, x_test, y_test)
    result = {"command": "quantize", "out": str(out), "mode": args.mode, "accuracy": acc,
              "accuracy_float": acc_float, "n": len(y_test), **reference.stats(dm, blob),
              "layers": [la.kind if getattr(la, "mask", None) is None
                         else la.kind.replace("dense", "sparse") for la in dm.layers]}
    text = (f"{args.mode} uint8: test accuracy {100 * acc:.2f}% (device arithmetic; float "
            f"{100 * acc_float:.2f}%); {len(blob)} bytes; layers {', '.join(result['layers'])}; "
            f"saved {out}")
    return result, text
