#!/usr/bin/env python3
"""Benchmark: trained float models (.npz) quantized to int8 (`piconn.quant_int8`), float vs
int8 accuracy on the 10,000 MNIST test images; optionally the int8 graph timed on the
virtual Pico through `_nn_c.graph_run` (the C tier).

    .venv/bin/python tools/bench_cnn_int8.py build/cnn/cnn.npz build/cnn/cnn_small.npz
    .venv/bin/python tools/bench_cnn_int8.py build/cnn/cnn_small.npz --pico [--digits 5]
        [--uf2 build/PICO/firmware.uf2] [--save-dir build/cnn] [--json FILE]

Accuracy: int8 from `int8_ops.run` (TensorFlow Lite Micro's arithmetic, bit for bit),
float from the model itself (`train.evaluate`); calibration on --calib training images
(a fixed random sample, --seed). Per model: MACs, version-2 file bytes, arena bytes.

--pico: the graphs go into flash beside the firmware (a UF2 with extra segments, placed
and timed by tools/bench_cnn.py's time_graphs) and the device reads them in place. For
each of the first --digits MNIST test digits, the raw pixels - 128 are written into the
arena and one `_nn_c.graph_run` runs under `micropython.heap_lock()`, timed with
`time.ticks_us()` (emulated RP2040 at 125 MHz, the check of the records included); the
device's logits are compared with `int8_ops.run`. One more inference counts the model
bytes read from flash.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
for _path in (ROOT / "tools", ROOT / "host"):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

from bench_cnn import add_pico_args, check_args, log, pico_cells, pico_note, time_graphs

from piconn import data, format2, nn, quant_int8, train
from piconn import graph as g


def accuracy(path: Path, x_train: np.ndarray, x_test: np.ndarray, y_test: np.ndarray,
             calib: int, seed: int) -> tuple[dict, g.Graph, bytes]:
    model, _ = nn.load(path)
    idx = np.sort(np.random.default_rng(seed).permutation(len(x_train))[:calib])
    t0 = time.perf_counter()
    graph = quant_int8.quantize_int8(model, x_train[idx])
    t_quant = time.perf_counter() - t0
    blob = format2.to_bytes(graph)
    t0 = time.perf_counter()
    pred = quant_int8.predict_int8(graph, x_test).reshape(len(y_test), -1).argmax(axis=1)
    t_eval = time.perf_counter() - t0
    acc = float((pred == y_test).mean())
    acc_float = train.evaluate(model, x_test, y_test)
    row = {"model": path.name, "float_pct": round(100 * acc_float, 2),
           "int8_pct": round(100 * acc, 2), "diff_pt": round(100 * (acc - acc_float), 2),
           "macs": graph.macs(), "model_bytes": len(blob),
           "weight_bytes": graph.constant_bytes(),
           "arena_bytes": g.plan_memory(graph, align=4).arena_size,
           "quantize_s": round(t_quant, 2), "int8_eval_s": round(t_eval, 1),
           "operators": [op.kind for op in graph.operators]}
    return row, graph, blob


def table(rows: list[dict]) -> str:
    head = (f"{'model':20s} {'float %':>8s} {'int8 %':>7s} {'diff pt':>7s} {'MACs':>9s}"
            f" {'bytes':>7s} {'arena':>6s} {'eval s':>6s}")
    pico = any("pico_us" in r for r in rows)
    if pico:
        head += pico_cells(None)
    lines = [head]
    for r in rows:
        line = (f"{r['model']:20s} {r['float_pct']:8.2f} {r['int8_pct']:7.2f}"
                f" {r['diff_pt']:+7.2f} {r['macs']:>9,} {r['model_bytes']:>7,}"
                f" {r['arena_bytes']:>6,} {r['int8_eval_s']:6.1f}")
        if "pico_us" in r:
            line += pico_cells(r)
        lines.append(line)
    lines.append("accuracy on the 10,000 MNIST test images; int8 by int8_ops.run (TFLite Micro "
                 "arithmetic); eval s: host seconds for the 10,000 int8 inferences")
    if pico:
        lines.append(pico_note())
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("models", nargs="+", type=Path, help="trained float models (.npz)")
    p.add_argument("--calib", type=int, default=2000, help="calibration images (default 2000)")
    p.add_argument("--seed", type=int, default=0, help="calibration sample")
    p.add_argument("--data", default=None, metavar="PATH", help="MNIST folder")
    p.add_argument("--save-dir", type=Path, default=None,
                   help="also write each int8 graph as DIR/<model>_int8.nnb")
    add_pico_args(p, digits=5)
    p.add_argument("--json", type=Path, default=None, help="write the rows as JSON")
    a = p.parse_args(argv)
    if a.calib < 1:
        p.error("--calib must be >= 1")
    check_args(p, a)
    try:
        x_train, _, x_test, y_test = data.load_mnist(a.data)
    except (data.DataNotFound, ValueError) as e:
        print(f"bench_cnn_int8: error: {e}", file=sys.stderr)
        return 1
    items = []
    for path in a.models:
        try:
            row, graph, blob = accuracy(path, x_train, x_test, y_test, a.calib, a.seed)
        except ValueError as e:
            print(f"bench_cnn_int8: {path}: {e}", file=sys.stderr)
            return 1
        log(f"{path.name}: float {row['float_pct']}%, int8 {row['int8_pct']}% "
            f"({row['int8_eval_s']} s)")
        if a.save_dir is not None:
            a.save_dir.mkdir(parents=True, exist_ok=True)
            (a.save_dir / f"{path.stem}_int8.nnb").write_bytes(blob)
        items.append((row, graph, blob))
    if a.pico:
        time_graphs(items, quant_int8.quantize_input, x_test, a.uf2, "bench_cnn_int8.uf2",
                    a.digits, log)
    rows = [row for row, _, _ in items]
    print(table(rows))
    if a.json is not None:
        a.json.write_text(json.dumps(rows, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
