#!/usr/bin/env python3
"""Benchmark: trained float CNNs (.npz) as float32 version-2 graphs (`piconn.float_graph`),
their accuracy through the host reference (`float_ops`, the device's arithmetic) on the
10,000 MNIST test images beside the model's own; optionally the graph timed on the
virtual Pico through `_nn_c.graph_run` (the C tier, nn_float.c).

    .venv/bin/python tools/bench_cnn_float.py build/cnn/cnn.npz [--pico] [--digits 3]
        [--uf2 build/PICO/firmware.uf2] [--json FILE]

--pico: the graphs go into flash beside the firmware (a UF2 with extra segments, placed
and timed by tools/bench_cnn.py's time_graphs) and the device reads them in place. For each of the
first --digits test digits, pixel/255 as float32 is written into the arena and one
`_nn_c.graph_run` runs under `micropython.heap_lock()`, timed with `time.ticks_us()`
(emulated RP2040 at 125 MHz, the check of the records included); the logits are compared
with the host reference byte for byte. One more inference counts the model bytes read
from flash.
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

from piconn import data, float_graph, format2, nn, train
from piconn import graph as g


def accuracy(path: Path, x_test: np.ndarray, y_test: np.ndarray) -> tuple[dict, g.Graph, bytes]:
    model, _ = nn.load(path)
    model.eval()
    graph = float_graph.float_graph(model)
    blob = format2.to_bytes(graph)
    t0 = time.perf_counter()
    pred = float_graph.predict_float(graph, x_test, batch=1000).argmax(axis=1)
    t_eval = time.perf_counter() - t0
    ref = np.concatenate([model.forward(train.prepare(x_test[i:i + 1000], model.dtype))
                          for i in range(0, len(x_test), 1000)]).argmax(axis=1)
    row = {"model": path.name, "model_pct": round(100 * float((ref == y_test).mean()), 2),
           "graph_pct": round(100 * float((pred == y_test).mean()), 2),
           "same_class": int((pred == ref).sum()), "macs": graph.macs(),
           "model_bytes": len(blob), "weight_bytes": graph.constant_bytes(),
           "arena_bytes": g.plan_memory(graph, align=4).arena_size,
           "eval_s": round(t_eval, 1), "operators": [op.kind for op in graph.operators]}
    return row, graph, blob


def table(rows: list[dict]) -> str:
    head = (f"{'model':14s} {'model %':>8s} {'graph %':>8s} {'same':>6s} {'MACs':>9s}"
            f" {'bytes':>8s} {'arena':>7s}")
    pico = any("pico_us" in r for r in rows)
    if pico:
        head += pico_cells(None, "ms")
    lines = [head]
    for r in rows:
        line = (f"{r['model']:14s} {r['model_pct']:8.2f} {r['graph_pct']:8.2f}"
                f" {r['same_class']:>6,} {r['macs']:>9,} {r['model_bytes']:>8,}"
                f" {r['arena_bytes']:>7,}")
        if "pico_us" in r:
            line += pico_cells(r, "ms")
        lines.append(line)
    lines.append("accuracy on the 10,000 MNIST test images: the trained model (model %) and its "
                 "float32 graph through the host reference (graph %); same: equal classes")
    if pico:
        lines.append(pico_note("ms"))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("models", nargs="+", type=Path, help="trained float CNNs (.npz)")
    p.add_argument("--data", default=None, metavar="PATH", help="MNIST folder")
    add_pico_args(p, digits=3)
    p.add_argument("--json", type=Path, default=None, help="write the rows as JSON")
    a = p.parse_args(argv)
    check_args(p, a)
    try:
        _, _, x_test, y_test = data.load_mnist(a.data)
    except (data.DataNotFound, ValueError) as e:
        print(f"bench_cnn_float: error: {e}", file=sys.stderr)
        return 1
    items = []
    for path in a.models:
        try:
            row, graph, blob = accuracy(path, x_test, y_test)
        except ValueError as e:
            print(f"bench_cnn_float: {path}: {e}", file=sys.stderr)
            return 1
        log(f"{path.name}: model {row['model_pct']}%, float32 graph {row['graph_pct']}% "
            f"({row['same_class']} of {len(y_test)} same class, {row['eval_s']} s)")
        items.append((row, graph, blob))
    if a.pico:
        time_graphs(items, lambda _graph, x: float_graph.float_input(x), x_test, a.uf2,
                    "bench_cnn_float.uf2", a.digits, log)
    rows = [row for row, _, _ in items]
    print(table(rows))
    if a.json is not None:
        a.json.write_text(json.dumps(rows, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
