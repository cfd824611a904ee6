"""Accuracy and size of the compressed MNIST models against their bars.

    .venv/bin/python tools/bench_compress.py [--models build/models] [--json]

Reads mnist_f32.npz, mnist_pruned.npz, mnist_q8w.nnb, mnist_q8.nnb,
mnist_sparse_q8.nnb and mnist_xnor.npz (whichever exist), evaluates each on the
10k MNIST test images with the bit-exact device reference (`piconn.reference`),
and checks the project's bars: pruned 90% within 0.5 points of float,
weight-only uint8 within 0.2, full integer within 0.3, pruned+quantized within
0.5, XNOR >= 96.0% with at most 64 KB of packed weights.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from piconn import data, lower, nn, reference, train, xnor  # piconn sets the BLAS threads

BARS = {  # name: (source, max points below float, or absolute minimum accuracy)
    "mnist_pruned.npz": ("drop", 0.5),
    "mnist_q8w.nnb": ("drop", 0.2),
    "mnist_q8.nnb": ("drop", 0.3),
    "mnist_sparse_q8.nnb": ("drop", 0.5),
    "mnist_xnor.npz": ("min", 96.0),
}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="build/models", help="folder with the model files")
    ap.add_argument("--json", action="store_true", help="one JSON object on stdout")
    args = ap.parse_args(argv)
    folder = Path(args.models)
    _, _, x_test, y_test = data.load_mnist()
    rows, float_acc, ok = [], None, True
    for name in ["mnist_f32.npz", *BARS]:
        path = folder / name
        if not path.is_file():
            rows.append({"model": name, "missing": True})
            continue
        dm = lower.load_file(path).model
        acc = 100 * float((reference.predict(dm, x_test) == y_test).mean())
        row = {"model": name, "family": dm.family, "accuracy": round(acc, 2),
               **reference.stats(dm)}
        if path.suffix == ".npz":
            model, _ = nn.load(path)
            row["accuracy_host_model"] = round(100 * train.evaluate(model, x_test, y_test), 2)
        if name == "mnist_f32.npz":
            float_acc = acc
        if dm.family == "xnor":
            row["weight_bytes"] = xnor.weight_bytes(dm)
            row["weight_words"] = row["weight_bytes"] // 4
        bar = BARS.get(name)
        if bar:
            kind, value = bar
            if kind == "drop" and float_acc is not None:
                row["drop_points"] = round(float_acc - acc, 2)
                row["bar"] = f"<= {value} below float"
                row["pass"] = float_acc - acc <= value + 1e-9
            elif kind == "min":
                row["bar"] = f">= {value}% and <= {xnor.WEIGHT_BYTES_MAX} weight bytes"
                row["pass"] = acc >= value and row["weight_bytes"] <= xnor.WEIGHT_BYTES_MAX
            ok &= bool(row.get("pass", True))
        rows.append(row)
    if args.json:
        print(json.dumps({"models": rows, "pass": ok}))
    else:
        for r in rows:
            if r.get("missing"):
                print(f"{r['model']:22s} missing")
                continue
            extra = f"  nnz {r['nnz']}" if "nnz" in r else ""
            extra += f"  weights {r['weight_bytes']} B" if "weight_bytes" in r else ""
            verdict = "" if "pass" not in r else ("  PASS" if r["pass"] else "  FAIL")
            drop = f"  (-{r['drop_points']:.2f})" if "drop_points" in r else ""
            print(f"{r['model']:22s} {r['accuracy']:6.2f}%{drop}  {r['bytes']:7d} B .nnb"
                  f"{extra}{verdict}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
