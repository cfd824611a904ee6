"""`piconn quantize MODEL --mode {weights,full,int8} --out FILE.nnb`: uint8 quantization
(format version 1), or int8 as TensorFlow Lite quantizes (a version-2 graph)."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from .. import export, format2, nn, quant, quant_int8, reference, train
from .. import format as fmt
from .. import graph as g
from .common import add_common, add_data, load_data, model_file, positive_int

INT8 = "int8"
MODES = (*quant.MODES, INT8)
CALIB_DEFAULT = {"weights": 5000, "full": 5000, INT8: 2000}


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "quantize", help="quantize a float (or pruned) model to uint8 or int8 and write a .nnb",
        description="uint8 quantization. weights: u8 weights, float activations (dense_q8w). "
                    "full: integer-only inference (dense_q8 / sparse_q8), activation ranges "
                    "calibrated on training images. int8: TensorFlow Lite's int8 scheme for "
                    "MLPs and CNNs (per-channel weights, calibrated activation ranges), "
                    "written as a version-2 graph (piconn.quant_int8).")
    add_common(p)
    p.add_argument("model", metavar="MODEL", help="float or pruned model (.npz)")
    p.add_argument("--mode", choices=MODES, default="full", help="default full")
    p.add_argument("--out", "-o", required=True, metavar="FILE", help="output model (.nnb)")
    p.add_argument("--calib", type=positive_int, default=None,
                   help="training images used to calibrate activations (default 5000; "
                        "int8: 2000)")
    p.add_argument("--percentile", type=float, default=quant.DEFAULT_PERCENTILE,
                   help=f"activation range: this percentile of each ReLU output "
                        f"(100 = max; default {quant.DEFAULT_PERCENTILE})")
    p.add_argument("--no-bias-correction", dest="bias_correction", action="store_false",
                   help="do not correct the mean output shift of weight rounding")
    p.add_argument("--seed", type=int, default=0, help="calibration sample")
    p.add_argument("--name", default=None,
                   help="int8: also write NAME.py and NAME.nnb (the device module, "
                        "piconn.export.export_graph) in the folder of --out")
    add_data(p)
    p.set_defaults(handler=run)


def _calibration(args: argparse.Namespace, x_train: np.ndarray) -> np.ndarray:
    count = args.calib or CALIB_DEFAULT[args.mode]
    idx = np.random.default_rng(args.seed).permutation(len(x_train))[:count]
    return x_train[np.sort(idx)]


def run(args: argparse.Namespace) -> tuple[dict, str]:
    path = model_file(args.model)
    if args.name is not None and args.mode != INT8:
        raise ValueError("--name is for --mode int8 (piconn export writes modules of the "
                         "uint8 modes)")
    if args.name is not None:
        export.check_name(args.name)
    model, meta = nn.load(path)
    x_train, _, x_test, y_test = load_data(args)
    if args.mode == INT8:
        return _run_int8(args, model, _calibration(args, x_train), x_test, y_test)
    x_cal = None
    if args.mode == "full":
        x_cal = _calibration(args, x_train)
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


def _run_int8(args: argparse.Namespace, model: nn.Sequential, x_cal: np.ndarray,
              x_test: np.ndarray, y_test: np.ndarray) -> tuple[dict, str]:
    """--mode int8: the graph, its bytes, and int8 vs float accuracy on the test set."""
    graph = quant_int8.quantize_int8(model, x_cal)
    blob = format2.to_bytes(graph)
    format2.from_bytes(blob)  # every rule the device applies
    out = Path(args.out)
    out.write_bytes(blob)
    start = time.perf_counter()
    logits = quant_int8.predict_int8(graph, x_test)
    seconds = time.perf_counter() - start
    acc = float((logits.reshape(len(y_test), -1).argmax(axis=1) == y_test).mean())
    acc_float = train.evaluate(model, x_test, y_test)
    ops = [op.kind for op in graph.operators]
    result = {"command": "quantize", "out": str(out), "mode": INT8, "accuracy": acc,
              "accuracy_float": acc_float, "n": len(y_test), "bytes": len(blob),
              "macs": graph.macs(), "weight_bytes": graph.constant_bytes(),
              "arena_bytes": g.plan_memory(graph, align=4).arena_size, "calib": len(x_cal),
              "eval_seconds": round(seconds, 2), "operators": ops}
    text = (f"int8: test accuracy {100 * acc:.2f}% (TFLite Micro arithmetic, "
            f"{seconds:.1f} s for {len(y_test)} images; float {100 * acc_float:.2f}%); "
            f"{len(blob)} bytes, {graph.macs():,} MACs, arena {result['arena_bytes']} B; "
            f"operators {', '.join(ops)}; saved {out}")
    if args.name is not None:
        written = export.export_graph(graph, args.name, out.parent, source=Path(args.model).name,
                                       tool="piconn quantize")
        result["module"] = written["module"]
        text += f" and {written['module']}"
    return result, text

