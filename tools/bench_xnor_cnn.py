#!/usr/bin/env python3
"""Benchmark: binary CNNs (`piconn.xnor_cnn`, a trained .npz or its exported .nnb): accuracy
of the graph on the 10,000 MNIST test images (the reference, `int8_ops.run`), the trained
model's own predictions beside it (they must agree), and per operator its MACs, XOR+popcount
words and constant bytes; optionally the graph timed on the virtual Pico (C tier).

    .venv/bin/python tools/bench_xnor_cnn.py build/cnn/cnn_xnor.npz [--pico] [--digits 5]
        [--uf2 build/PICO/firmware.uf2] [--json FILE]

--pico: each graph goes into flash beside the firmware (tools/bench_cnn.py's time_graphs)
and one `_nn_c.graph_run` per test digit runs under `micropython.heap_lock()`, timed with
`time.ticks_us()` (emulated RP2040 at 125 MHz, the check of the records included); the
device's logits are compared with the reference's. One more inference counts the model
bytes read from flash.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
for _path in (ROOT / "tools", ROOT / "host"):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

from bench_cnn import add_pico_args, check_args, log, time_graphs

from piconn import data, format2, nn, quant_int8, xnor_cnn
from piconn import graph as g


def load(path: Path) -> tuple[g.Graph, nn.Sequential | None]:
    """The graph of a binary CNN .npz (and the model) or of a version-2 .nnb."""
    raw = path.read_bytes()
    if format2.is_version2(raw):
        return format2.from_bytes(raw).graph, None
    model, _ = nn.load(path)
    if not xnor_cnn.is_xnor_cnn(model):
        raise SystemExit(f"{path} is not a binary CNN (piconn train --kind xnor --model cnn)")
    return xnor_cnn.to_graph(model), model


def accuracy_row(path: Path, x: np.ndarray, y: np.ndarray) -> tuple[dict, g.Graph, bytes]:
    graph, model = load(path)
    blob = format2.to_bytes(graph)
    pred = xnor_cnn.graph_logits(graph, x).argmax(1)
    row = {"model": path.name, "accuracy": float((pred == y).mean()), "bytes": len(blob),
           "constant_bytes": graph.constant_bytes(), "macs": graph.macs(),
           "arena_bytes": g.plan_memory(graph).arena_size,
           "operators": xnor_cnn.word_ops(graph)}
    row["word_ops"] = sum(r["word_ops"] for r in row["operators"])
    if model is not None:
        mine = xnor_cnn.predict_signs(model, x).argmax(1)
        row["model_accuracy"] = float((mine == y).mean())
        row["differ_from_model"] = int((mine != pred).sum())
    return row, graph, blob


def table(rows: list[dict]) -> str:
    head = ("| model | accuracy | ms (emulated RP2040, C) | flash bytes read | file bytes |"
            " constants | MACs | XOR words | arena |")
    lines = [head, "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        ms = f"{r['pico_us'] / 1000:.2f}" if "pico_us" in r else "-"
        lines.append(f"| {r['model']} | {100 * r['accuracy']:.2f}% | {ms} |"
                     f" {r.get('flash_bytes_read', '-')} | {r['bytes']:,} |"
                     f" {r['constant_bytes']:,} | {r['macs']:,} | {r['word_ops']:,} |"
                     f" {r['arena_bytes']:,} |")
    for r in rows:
        lines.append(f"\n{r['model']}:")
        lines += [f"  {o['index']:2d} {o['op']:18s} {o['output']!s:16s} MACs {o['macs']:6,}"
                  f"  words {o['word_ops']:6,}  constants {o['const_bytes']:6,} B"
                  for o in r["operators"]]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("models", nargs="+", type=Path, help="binary CNNs (.npz or .nnb)")
    p.add_argument("--data", default=None, metavar="PATH", help="MNIST folder")
    add_pico_args(p, digits=5)
    p.add_argument("--json", type=Path, default=None, help="write the rows as JSON")
    args = p.parse_args(argv)
    check_args(p, args)
    _, _, x_test, y_test = data.load_mnist(args.data)
    items = [accuracy_row(path, x_test, y_test) for path in args.models]
    if args.pico:
        time_graphs(items, quant_int8.quantize_input, x_test, args.uf2, "bench_xnor_cnn.uf2",
                    args.digits, log, per_mac=False)
    rows = [row for row, _, _ in items]
    print(table(rows))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
