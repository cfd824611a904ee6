#!/usr/bin/env python3
"""Benchmark: binary CNNs (`piconn.xnor_cnn`, a trained .npz or its exported .nnb): accuracy
of the graph on the 10,000 MNIST test images (the reference, `int8_ops.run`), the trained
model's own predictions beside it (they must agree), and per operator its MACs, XOR+popcount
words and constant bytes; optionally the graph timed on the virtual Pico (C tier).

    .venv/bin/python tools/bench_xnor_cnn.py build/cnn/cnn_xnor.npz [--pico] [--digits 5]
        [--uf2 build/PICO/firmware.uf2] [--json FILE]

--pico: as tools/bench_cnn_int8.py does, each graph goes into flash beside the firmware and
one `_nn_c.graph_run` per test digit runs under `micropython.heap_lock()`, timed with
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

from piconn import data, format2, int8_ops, nn, quant_int8, xnor_cnn
from piconn import graph as g

EXTRA_BASE = 0x10200000  # past the Pico's 2 MB of firmware (the emulated chip has 16 MB)


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


def pico_rows(items: list[tuple[dict, g.Graph, bytes]], x: np.ndarray, uf2_path: Path,
              digits: int, log) -> None:
    """Time each graph on the virtual Pico (C tier); adds the figures to each row."""
    import bench_cnn_int8 as int8_bench
    import uf2
    from int8_ckernels import GraphModel
    from vpico import VirtualPico

    layout = uf2.segment_layout([len(blob) for _, _, blob in items], EXTRA_BASE)
    image = uf2_path.parent / "bench_xnor_cnn.uf2"
    image.write_bytes(uf2.with_segments(uf2_path.read_bytes(),
                                        [(addr, blob) for (addr, _), (_, _, blob)
                                         in zip(layout, items)]))
    with VirtualPico(image, count_flash=True) as pico:
        log(f"virtual Pico up ({image})")
        for (addr, _), (row, graph, blob) in zip(layout, items):
            gm = GraphModel(blob)
            in_off, _, in_shape = gm.inputs[0]
            out_off, out_dt, out_shape = gm.outputs[0]
            n_out = int(np.prod(out_shape)) * np.dtype(out_dt).itemsize

            def script(pixels: bytes, addr=addr, blob=blob, gm=gm, in_off=in_off,
                       out_off=out_off, n_out=n_out) -> str:
                return int8_bench.DEVICE_SETUP + int8_bench.DEVICE_RUN.format(
                    addr=addr, size=len(blob), arena=max(gm.arena_size, 4), in_off=in_off,
                    in_end=in_off + len(pixels), pixels=pixels, n_ops=gm.n_operators,
                    out_off=out_off, out_end=out_off + n_out)

            us, exact = [], 0
            for k in range(digits):
                q = quant_int8.quantize_input(graph, x[k:k + 1]).reshape(in_shape)
                want = int8_ops.run(graph, q)
                t, hexed = pico.run_script(script(q.tobytes()), timeout=1800).split()
                got = np.frombuffer(bytes.fromhex(hexed), want.dtype).reshape(want.shape)
                exact += bool(np.array_equal(got, want))
                us.append(int(t))
                log(f"  {row['model']} digit {k}: {int(t)} us, bit-exact {np.array_equal(got, want)}")
            pico.count_on(addr, addr + len(blob))
            pico.run_script(script(quant_int8.quantize_input(graph, x[:1]).tobytes()),
                            timeout=1800)
            row.update({"pico_us": round(float(np.mean(us))), "pico_us_each": us,
                        "flash_bytes_read": pico.count_off(), "bit_exact": f"{exact}/{digits}"})


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
    p.add_argument("--pico", action="store_true", help="time the graphs on the virtual Pico")
    p.add_argument("--digits", type=int, default=5, help="--pico: test digits (default 5)")
    p.add_argument("--uf2", type=Path, default=ROOT / "build" / "PICO" / "firmware.uf2")
    p.add_argument("--json", type=Path, default=None, help="write the rows as JSON")
    args = p.parse_args(argv)

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    _, _, x_test, y_test = data.load_mnist(args.data)
    items = [accuracy_row(path, x_test, y_test) for path in args.models]
    if args.pico:
        if not args.uf2.is_file():
            raise SystemExit(f"no firmware {args.uf2}: make firmware BOARD=PICO")
        pico_rows(items, x_test, args.uf2, args.digits, log)
    rows = [row for row, _, _ in items]
    print(table(rows))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
