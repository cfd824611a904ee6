#!/usr/bin/env python3
"""Benchmark: train an MLP on MNIST with the `piconn train` defaults; report time and accuracy.

    .venv/bin/python tools/bench_train.py                 # 784-128-10
    .venv/bin/python tools/bench_train.py --arch 784-200-10 --seed 1 --json

Wall time covers training only (data loading is reported apart). The machine's
load average is printed too: other processes on the same cores slow training.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

from piconn import data, train  # piconn sets the BLAS threads before numpy loads
from piconn.commands import common


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    defaults = train.FLOAT_DEFAULTS
    p.add_argument("--arch", type=common.arch, default=defaults["arch"])
    p.add_argument("--act", choices=sorted(train.ACTIVATIONS), default=defaults["act"])
    p.add_argument("--epochs", type=common.positive_int, default=defaults["epochs"])
    p.add_argument("--batch-size", type=common.positive_int, default=defaults["batch_size"])
    p.add_argument("--lr", type=common.positive_float, default=defaults["lr"])
    p.add_argument("--shift", type=common.nonneg_int, default=defaults["shift"])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data", default=None, metavar="PATH")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    args = p.parse_args(argv)
    if args.arch[0] != 784 or args.arch[-1] != 10:
        p.error("--arch must start with 784 and end with 10")

    load0 = os.getloadavg()[0]
    t0 = time.perf_counter()
    try:
        x_train, y_train, x_test, y_test = data.load_mnist(args.data)
    except (data.DataNotFound, ValueError) as e:
        print(f"bench_train: error: {e}", file=sys.stderr)
        return 1
    t_load = time.perf_counter() - t0
    t0 = time.perf_counter()
    cpu0 = time.process_time()
    model, history, _ = train.train_float(
        x_train, y_train, arch=args.arch, act=args.act, epochs=args.epochs,
        batch_size=args.batch_size, lr=args.lr, shift=args.shift, seed=args.seed,
        progress=sys.stderr)
    wall = time.perf_counter() - t0
    cpu = time.process_time() - cpu0
    acc = train.evaluate(model, x_test, y_test)
    result = {
        "arch": "-".join(map(str, args.arch)), "act": args.act, "epochs": args.epochs,
        "batch_size": args.batch_size, "lr": args.lr, "shift": args.shift, "seed": args.seed,
        "accuracy": acc, "train_seconds": round(wall, 2), "cpu_seconds": round(cpu, 2),
        "load_seconds": round(t_load, 2),
        "epoch_seconds": [round(r["seconds"], 2) for r in history],
        "loadavg_before": round(load0, 2), "loadavg_after": round(os.getloadavg()[0], 2),
        "blas_threads": os.environ.get("OPENBLAS_NUM_THREADS"), "cpus": os.cpu_count(),
    }
    if args.json:
        print(json.dumps(result))
    else:
        print(f"{result['arch']}: test accuracy {100 * acc:.2f}%, training {wall:.1f} s wall "
              f"({cpu:.1f} s CPU, {args.epochs} epochs), data load {t_load:.1f} s, "
              f"load average {load0:.1f} -> {result['loadavg_after']:.1f} on {os.cpu_count()} CPUs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
