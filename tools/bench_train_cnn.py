#!/usr/bin/env python3
"""Benchmark: train a CNN on MNIST (default `piconn.conv.DEFAULT_CNN`); report time and accuracy.

    .venv/bin/python tools/bench_train_cnn.py                          # the default CNN
    .venv/bin/python tools/bench_train_cnn.py --arch c8k3s2v-c16k3s2v-f10 --epochs 10 --json

Wall time covers training only (data loading is reported apart). The machine's
load average is printed too: other processes on the same cores slow training.
Multiply-adds per image come from `conv.count_macs`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

from piconn import conv, data, nn, train  # piconn sets the BLAS threads before numpy loads
from piconn.commands import common


def main(argv: list[str] | None = None) -> int:
    d = conv.CNN_DEFAULTS
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--arch", default=d["arch"], help=f"CNN spec (default {d['arch']})")
    p.add_argument("--epochs", type=common.positive_int, default=d["epochs"])
    p.add_argument("--batch-size", type=common.positive_int, default=d["batch_size"])
    p.add_argument("--lr", type=common.positive_float, default=d["lr"])
    p.add_argument("--shift", type=common.nonneg_int, default=d["shift"])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data", default=None, metavar="PATH")
    p.add_argument("--save", default=None, metavar="FILE", help="also save the model (nn.save)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    args = p.parse_args(argv)
    try:
        model = conv.build_cnn(args.arch)
    except ValueError as e:
        p.error(str(e))
    macs = conv.count_macs(model, (784,))

    load0 = os.getloadavg()[0]
    t0 = time.perf_counter()
    try:
        x_train, y_train, x_test, y_test = data.load_mnist(args.data)
    except (data.DataNotFound, ValueError) as e:
        print(f"bench_train_cnn: error: {e}", file=sys.stderr)
        return 1
    t_load = time.perf_counter() - t0
    t0 = time.perf_counter()
    cpu0 = time.process_time()
    model, history, meta = conv.train_cnn(
        x_train, y_train, arch=args.arch, epochs=args.epochs, batch_size=args.batch_size,
        lr=args.lr, shift=args.shift, seed=args.seed, progress=sys.stderr)
    wall = time.perf_counter() - t0
    cpu = time.process_time() - cpu0
    acc = train.evaluate(model, x_test, y_test)
    if args.save:
        nn.save(model, args.save, {**meta, "test_accuracy": acc})
    result = {
        "arch": args.arch, "epochs": args.epochs, "batch_size": args.batch_size, "lr": args.lr,
        "shift": args.shift, "seed": args.seed, "macs": macs,
        "params": nn.count_params(model), "accuracy": acc, "train_seconds": round(wall, 2),
        "cpu_seconds": round(cpu, 2), "load_seconds": round(t_load, 2),
        "epoch_seconds": [round(r["seconds"], 2) for r in history],
        "loadavg_before": round(load0, 2), "loadavg_after": round(os.getloadavg()[0], 2),
        "blas_threads": os.environ.get("OPENBLAS_NUM_THREADS"), "cpus": os.cpu_count(),
    }
    if args.json:
        print(json.dumps(result))
    else:
        print(f"{args.arch}: test accuracy {100 * acc:.2f}%, training {wall:.1f} s wall "
              f"({cpu:.1f} s CPU, {args.epochs} epochs), {macs} MACs/image, "
              f"{result['params']} parameters, data load {t_load:.1f} s, "
              f"load average {load0:.1f} -> {result['loadavg_after']:.1f} on {os.cpu_count()} CPUs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
