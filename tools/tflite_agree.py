"""piconn's int8 reference against TensorFlow Lite Micro on .tflite models, with sizes.

    .venv/bin/python tools/tflite_agree.py [--n 200] [--dir DIR] [--json] [FILE.tflite ...]

For each model (by default MLPerf Tiny's four int8 reference models in $PICONN_MLPERF_TINY),
imports it with `piconn.tflite.import_tflite`, runs `int8_ops.run` and TFLite Micro's
interpreter (PyPI tflite-micro) on the same N random int8 inputs (the first three all -128,
0 and 127) and counts the outputs that differ in any byte. Prints one row per model:
MACs, constant bytes, the size of its version-2 file (docs/FORMAT.md), the arena of piconn's memory plan (4- and 16-byte aligned) beside
TFLite Micro's planned arena ("head") and its whole arena (head + persistent data, for this
64-bit host build), host milliseconds per inference of both, and the mismatches.
Exit status 1 if any output differs.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "host"))

from piconn import format2, int8_ops
from piconn import graph as g
from piconn.tflite import import_tflite

DEFAULT_DIR = os.environ.get("PICONN_MLPERF_TINY") or str(ROOT.parent / "shared" / "models" / "mlperf-tiny")
MLPERF_TINY = ("kws_ref_model.tflite", "vww_96_int8.tflite", "pretrainedResnet_quant.tflite",
               "ad01_int8.tflite")


def tflm_arena(runtime, path: Path) -> tuple[int, int]:
    """(head, total) arena bytes that TFLite Micro reports (print_allocations, on stderr)."""
    with tempfile.TemporaryFile(mode="w+") as err:
        saved = os.dup(2)
        os.dup2(err.fileno(), 2)
        try:
            runtime.Interpreter.from_file(str(path)).print_allocations()
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        err.seek(0)
        text = err.read()
    head = re.search(r"allocation head (\d+) bytes", text)
    total = re.search(r"allocation total (\d+) bytes", text)
    return int(head.group(1)), int(total.group(1))


def check(runtime, path: Path, n: int) -> dict:
    graph = import_tflite(path)
    params = int8_ops.prepare(graph)
    it = runtime.Interpreter.from_file(str(path))
    shape = graph.tensors[graph.inputs[0]].shape
    rng = np.random.default_rng(0)
    mismatches, t_ref, t_tflm = 0, 0.0, 0.0
    for k in range(n):
        x = (np.full(shape, (-128, 0, 127)[k], dtype=np.int8) if k < 3
             else rng.integers(-128, 128, size=shape, dtype=np.int8))
        t = time.perf_counter()
        it.set_input(x, 0)
        it.invoke()
        want = it.get_output(0)
        t_tflm += time.perf_counter() - t
        t = time.perf_counter()
        got = int8_ops.run(graph, x, params)
        t_ref += time.perf_counter() - t
        mismatches += not np.array_equal(got, want)
    head, total = tflm_arena(runtime, path)
    return {"model": path.name, "inputs": n, "mismatches": mismatches, "macs": graph.macs(),
            "constant_bytes": graph.constant_bytes(), "v2_bytes": len(format2.to_bytes(graph)),
            "arena_4": g.plan_memory(graph, 4).arena_size,
            "arena_16": g.plan_memory(graph, 16).arena_size,
            "tflm_head": head, "tflm_total": total,
            "ms_reference": 1000 * t_ref / n, "ms_tflm": 1000 * t_tflm / n}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("files", nargs="*", type=Path)
    ap.add_argument("--n", type=int, default=200, help="random inputs per model (default 200)")
    ap.add_argument("--dir", type=Path, default=Path(DEFAULT_DIR))
    ap.add_argument("--json", action="store_true", help="one JSON object per model")
    args = ap.parse_args()
    try:
        from tflite_micro.python.tflite_micro import runtime
    except ImportError:
        print("error: needs PyPI tflite-micro (pip install -e '.[test]')", file=sys.stderr)
        return 2
    files = args.files or [args.dir / f for f in MLPERF_TINY]
    missing = [f for f in files if not f.is_file()]
    if missing:
        print(f"error: not found: {', '.join(map(str, missing))} (--dir or PICONN_MLPERF_TINY)",
              file=sys.stderr)
        return 2
    if not args.json:
        print(f"{'model':32s} {'MACs':>11s} {'const B':>9s} {'v2 B':>9s} {'arena/4':>8s}"
              f" {'arena/16':>8s}"
              f" {'TFLM head':>9s} {'TFLM all':>9s} {'ms ref':>7s} {'ms TFLM':>7s}  agree")
    bad = 0
    for f in files:
        r = check(runtime, f, args.n)
        bad += r["mismatches"]
        if args.json:
            print(json.dumps(r))
        else:
            print(f"{r['model']:32s} {r['macs']:11,d} {r['constant_bytes']:9,d}"
                  f" {r['v2_bytes']:9,d} {r['arena_4']:8,d} {r['arena_16']:8,d} {r['tflm_head']:9,d}"
                  f" {r['tflm_total']:9,d} {r['ms_reference']:7.1f} {r['ms_tflm']:7.1f}"
                  f"  {r['inputs'] - r['mismatches']}/{r['inputs']}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
