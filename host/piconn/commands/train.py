"""`piconn train mnist [--kind K] --out FILE`: train a model and save it (.npz)."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from .. import __version__, conv, data, nn, train, xnor_cnn
from .common import (
    CNN_KINDS,
    TRAIN_KINDS,
    CliError,
    add_common,
    add_data,
    arch,
    load_data,
    model_stats,
    nonneg_int,
    positive_float,
    positive_int,
)


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train a model on a data set and save it (.npz)",
                       description="Train a model and save it with nn.save.")
    add_common(p)
    p.add_argument("dataset", choices=["mnist"], help="data set")
    p.add_argument("--kind", choices=sorted(TRAIN_KINDS), default="float",
                   help="model kind (default float)")
    p.add_argument("--model", choices=("mlp", "cnn"), default="mlp",
                   help="network: mlp (dense layers, default) or cnn (convolutional)")
    p.add_argument("--arch", default=None,
                   help="mlp: layer sizes, e.g. 784-128-10 (default); cnn: a spec, e.g. "
                   f"{conv.DEFAULT_CNN} (default; grammar in piconn.conv); cnn with --kind "
                   f"xnor: e.g. {xnor_cnn.DEFAULT_SPEC} (default; grammar in piconn.xnor_cnn)")
    p.add_argument("--act", choices=sorted(train.ACTIVATIONS), default=None,
                   help="hidden activation (default relu)")
    p.add_argument("--epochs", type=positive_int, default=None)
    p.add_argument("--batch-size", type=positive_int, default=None)
    p.add_argument("--lr", type=positive_float, default=None, help="initial learning rate")
    p.add_argument("--shift", type=nonneg_int, default=None,
                   help="random shift augmentation in pixels, 0 = off (default 1)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--teacher", metavar="MODEL", default=None,
                   help="--model cnn --kind xnor: a trained float model (.npz) whose softened "
                   "outputs the binary CNN also learns from (distillation)")
    p.add_argument("--out", "-o", required=True, metavar="FILE", help="output model file")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    add_data(p)
    for kind in TRAIN_KINDS.values():
        if kind.add_arguments is not None:
            kind.add_arguments(p)
    p.set_defaults(handler=run, parser=p)


def _check_arch(args: argparse.Namespace) -> None:
    """--arch as the model takes it: MLP layer sizes, or a CNN spec for 784 pixels -> 10."""
    if args.model == "cnn" and args.kind == "xnor":
        try:
            n_out = xnor_cnn.build_xnor_cnn(args.arch).layers[-2].n_out
        except (TypeError, ValueError) as e:
            args.parser.error(f"--arch: {e}")
        if n_out != 10:
            args.parser.error(f"--arch {args.arch}: a CNN for mnist must end with 10 outputs, "
                              f"this one gives {n_out}")
        return
    if args.model == "cnn":
        try:
            shape = conv.output_shape(conv.build_cnn(args.arch), (784,))
        except (TypeError, ValueError) as e:
            args.parser.error(f"--arch: {e}")
        if tuple(shape) != (10,):
            args.parser.error(f"--arch {args.arch}: a CNN for mnist must end with 10 outputs, "
                              f"this one gives {list(shape)}")
        return
    if isinstance(args.arch, str):
        try:
            args.arch = arch(args.arch)
        except argparse.ArgumentTypeError as e:
            args.parser.error(f"argument --arch: {e}")
    if args.arch[0] != 784 or args.arch[-1] != 10:
        args.parser.error(f"--arch for mnist must start with 784 and end with 10, "
                          f"got {'-'.join(map(str, args.arch))}")


def run(args: argparse.Namespace) -> tuple[dict, str]:
    if args.model == "cnn" and args.kind not in CNN_KINDS:
        raise CliError(f"--model cnn trains float or xnor CNNs; --kind {args.kind} is for "
                       "--model mlp")
    if args.teacher and (args.model, args.kind) != ("cnn", "xnor"):
        raise CliError("--teacher goes with --model cnn --kind xnor")
    kind = CNN_KINDS[args.kind] if args.model == "cnn" else TRAIN_KINDS[args.kind]
    defaults = {**train.FLOAT_DEFAULTS, **kind.defaults}
    for key, value in defaults.items():
        if getattr(args, key, None) is None:
            setattr(args, key, value)
    _check_arch(args)
    out_dir = Path(args.out).parent
    if not out_dir.is_dir():
        raise CliError(f"output folder does not exist: {out_dir}")
    args.progress = False if args.quiet else sys.stderr
    x_train, y_train, x_test, y_test = load_data(args)
    t0 = time.perf_counter()
    model, history, extra = kind.run(args, x_train, y_train)
    seconds = time.perf_counter() - t0
    acc = train.evaluate(model, x_test, y_test)
    meta = {
        "dataset": "mnist", "kind": kind.name, "model": args.model, "arch": args.arch, "act": args.act,
        "input_scale": data.INPUT_SCALE, "epochs": args.epochs, "batch_size": args.batch_size,
        "lr": args.lr, "seed": args.seed, "test_accuracy": acc, "train_seconds": seconds,
        "history": history, "piconn_version": __version__, **extra,
    }
    out = nn.save(model, args.out, meta)
    result = {"command": "train", "out": str(out), "kind": kind.name, "accuracy": acc,
              "n": len(y_test), **model_stats(model), "seconds": round(seconds, 3),
              "epochs": args.epochs, "history": history}
    text = (f"test accuracy {100 * acc:.2f}% on {len(y_test)} images; "
            f"trained in {seconds:.1f} s; saved {out}")
    return result, text
