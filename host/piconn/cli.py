"""The `piconn` command line (also `python -m piconn`).

Subcommands are plug-ins. A module listed in `COMMAND_MODULES` defines

    def add_parser(subparsers) -> None:
        p = subparsers.add_parser("prune", help="...")
        cli.add_common(p)                      # --json
        p.add_argument(...)
        p.set_defaults(handler=run_prune)      # run_prune(args) -> dict | (dict, text)

A handler returns a JSON-able dict (printed as exactly one JSON object with
`--json`, else as `key: value` lines) or `(dict, text)` to choose the human
text. It signals user errors by raising `CliError` (or ValueError/OSError):
the message goes to stderr and the exit status is 1. Argument errors exit 2.

`piconn train mnist --kind K`: kinds are registered with `register_train_kind`
(the float MLP here; other modules add theirs, e.g. "xnor").
"""

from __future__ import annotations

import os

# BLAS threads: on a small shared machine one thread per process is much faster
# than two fighting over two cores. Must be set before numpy loads; override
# by setting the variable yourself.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse
import importlib
import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from . import __version__, data, nn, train

# Modules contributing subcommands (each defines add_parser(subparsers)).
# A module that does not exist yet, or has no add_parser, is skipped.
COMMAND_MODULES: list[str] = [
    "piconn.cli",
    "piconn.prune",
    "piconn.quant",
    "piconn.xnor",
    "piconn.export",
    "piconn.romfs",
]


class CliError(Exception):
    """A user-facing error: printed without traceback, exit status `code`."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


# ------------------------------------------------------------------ arg helpers


def _number(cast: Callable[[str], Any], ok: Callable[[Any], bool], what: str):
    """An argparse type: `cast` the text, then require `ok`, else say `what` was expected."""

    def parse(text: str):
        try:
            v = cast(text)
        except ValueError:
            v = None
        if v is None or not ok(v):
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
        return v

    return parse


positive_int = _number(int, lambda v: v >= 1, "a positive integer")
nonneg_int = _number(int, lambda v: v >= 0, "an integer >= 0")
positive_float = _number(float, lambda v: v > 0 and np.isfinite(v), "a positive number")


def arch(text: str) -> list[int]:
    """'784-128-10' -> [784, 128, 10] (at least input and output sizes)."""
    try:
        sizes = [int(t) for t in text.split("-")]
    except ValueError:
        sizes = []
    if len(sizes) < 2 or any(s < 1 or s > 65535 for s in sizes):
        raise argparse.ArgumentTypeError(
            f"expected layer sizes like 784-128-10 (positive, at most 65535), got {text!r}"
        )
    return sizes


def add_common(p: argparse.ArgumentParser) -> None:
    """Options every subcommand takes."""
    p.add_argument("--json", action="store_true",
                   help="print exactly one JSON object on stdout (progress stays on stderr)")


def add_data(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", metavar="PATH", default=None,
                   help="folder with the MNIST IDX files (default: search, see piconn.data)")


def load_data(args: argparse.Namespace) -> tuple[np.ndarray, ...]:
    return data.load_mnist(args.data)


def model_stats(model: nn.Module) -> dict:
    """params (trainable scalars), nonzero weights, bytes as float32."""
    params = nn.count_params(model)
    nonzero = 0
    for layer in getattr(model, "layers", [model]):
        for p in layer.params():
            mask = p.mask
            nonzero += int(np.count_nonzero(p.data if mask is None else p.data * mask))
    return {"params": params, "nonzero": nonzero, "bytes": 4 * params}


# ---------------------------------------------------------------- train kinds


@dataclass
class TrainKind:
    """How `piconn train mnist --kind NAME` builds and trains a model.

    run(args, x_train, y_train) -> (model, history, meta) trains and returns the
    model, the per-epoch history and extra meta to save. `defaults` fill the
    common options the user did not give (epochs, lr, batch_size, act, arch).
    `add_arguments(parser)` may add kind-specific options (give them defaults).
    """

    name: str
    run: Callable[[argparse.Namespace, np.ndarray, np.ndarray],
                  tuple[nn.Sequential, list[dict], dict]]
    help: str = ""
    defaults: dict[str, Any] = field(default_factory=dict)
    add_arguments: Callable[[argparse.ArgumentParser], None] | None = None


TRAIN_KINDS: dict[str, TrainKind] = {}


def register_train_kind(kind: TrainKind) -> TrainKind:
    TRAIN_KINDS[kind.name] = kind
    return kind


ACTIVATIONS: dict[str, type[nn.Module]] = {"relu": nn.ReLU, "sigmoid": nn.Sigmoid,
                                           "tanh": nn.Tanh}

FLOAT_DEFAULTS = {"arch": [784, 128, 10], "act": "relu", "epochs": 15, "batch_size": 128,
                  "lr": 2e-3, "shift": 1}


def build_mlp(sizes: list[int], act: str = "relu") -> nn.Sequential:
    """Linear layers of `sizes` with `act` between them; the last layer outputs logits."""
    model = nn.Sequential()
    for k in range(len(sizes) - 1):
        if k:
            model.add(ACTIVATIONS[act]())
        model.add(nn.Linear(sizes[k], sizes[k + 1]))
    return model


def cosine(lr: float, epochs: int) -> Callable[[int], float]:
    """Cosine decay from lr (epoch 0) towards 0 (after the last epoch)."""
    return lambda e: float(lr * 0.5 * (1 + np.cos(np.pi * e / max(epochs, 1))))


def train_float(args: argparse.Namespace, x: np.ndarray, y: np.ndarray
                ) -> tuple[nn.Sequential, list[dict], dict]:
    """Float MLP: Adam, cosine learning-rate decay, random +-shift pixel augmentation."""
    model = build_mlp(args.arch, args.act).init(args.seed)
    opt = nn.Adam(model.params(), args.lr)
    shift = args.shift
    aug = (lambda xb, rng: data.random_shift(xb, rng, shift)) if shift else None
    history = train.fit(model, x, y, optimizer=opt, epochs=args.epochs,
                        batch_size=args.batch_size, seed=args.seed, progress=args.progress,
                        schedule=cosine(args.lr, args.epochs), augment=aug)
    return model, history, {"optimizer": "adam", "schedule": "cosine", "shift": shift}


register_train_kind(TrainKind("float", train_float, "float32 MLP (default)", FLOAT_DEFAULTS))


# ------------------------------------------------------------------- commands


def _add_train(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train a model on a data set and save it (.npz)",
                       description="Train a model and save it with nn.save.")
    add_common(p)
    p.add_argument("dataset", choices=["mnist"], help="data set")
    p.add_argument("--kind", choices=sorted(TRAIN_KINDS), default="float",
                   help="model kind (default float)")
    p.add_argument("--arch", type=arch, default=None,
                   help="layer sizes, e.g. 784-128-10 (default 784-128-10)")
    p.add_argument("--act", choices=sorted(ACTIVATIONS), default=None,
                   help="hidden activation (default relu)")
    p.add_argument("--epochs", type=positive_int, default=None)
    p.add_argument("--batch-size", type=positive_int, default=None)
    p.add_argument("--lr", type=positive_float, default=None, help="initial learning rate")
    p.add_argument("--shift", type=nonneg_int, default=None,
                   help="random shift augmentation in pixels, 0 = off (default 1)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", "-o", required=True, metavar="FILE", help="output model file")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    add_data(p)
    for kind in TRAIN_KINDS.values():
        if kind.add_arguments is not None:
            kind.add_arguments(p)
    p.set_defaults(handler=run_train, parser=p)


def run_train(args: argparse.Namespace) -> tuple[dict, str]:
    kind = TRAIN_KINDS[args.kind]
    defaults = {**FLOAT_DEFAULTS, **kind.defaults}
    for key, value in defaults.items():
        if getattr(args, key, None) is None:
            setattr(args, key, value)
    if args.arch[0] != 784 or args.arch[-1] != 10:
        args.parser.error(f"--arch for mnist must start with 784 and end with 10, "
                          f"got {'-'.join(map(str, args.arch))}")
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
        "dataset": "mnist", "kind": kind.name, "arch": args.arch, "act": args.act,
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


def _add_eval(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("eval", help="test accuracy of a saved model",
                       description="Print the test accuracy of a model saved by train.")
    add_common(p)
    p.add_argument("model", metavar="FILE",
                   help="model file (.npz from piconn train/prune, or a .nnb)")
    add_data(p)
    p.set_defaults(handler=run_eval)


def model_file(name: str) -> Path:
    """The path of an existing model file, or a CliError that names it."""
    path = Path(name)
    if not path.is_file():
        raise CliError(f"no such model file: {path}")
    return path


def run_eval(args: argparse.Namespace) -> tuple[dict, str]:
    path = model_file(args.model)
    _, _, x_test, y_test = load_data(args)
    from . import reference  # .nnb and compressed .npz: accuracy of the device arithmetic

    device = reference.eval_file(path, x_test, y_test)
    if device is not None:
        return device
    model, meta = nn.load(path)
    acc = train.evaluate(model, x_test, y_test)
    result = {"command": "eval", "model": str(path), "kind": meta.get("kind"),
              "accuracy": acc, "n": len(y_test), **model_stats(model)}
    return result, f"test accuracy {100 * acc:.2f}% on {len(y_test)} images ({path})"


def add_parser(sub: argparse._SubParsersAction) -> None:
    """This module's subcommands: train, eval."""
    _add_train(sub)
    _add_eval(sub)


# ----------------------------------------------------------------------- main


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="piconn", description="Train small networks on a PC, run them on a Pico.")
    parser.add_argument("--version", action="version", version=f"piconn {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    modules = []
    for name in dict.fromkeys(COMMAND_MODULES):  # import all first: they may add train kinds
        try:
            modules.append(importlib.import_module(name))
        except ModuleNotFoundError as e:
            if e.name != name:
                raise
            # not written yet
    for mod in modules:
        hook = getattr(mod, "add_parser", None)
        if callable(hook):
            hook(sub)
    return parser


def _emit(args: argparse.Namespace, out: Any) -> None:
    result, text = out if isinstance(out, tuple) else (out, None)
    if getattr(args, "json", False):
        print(json.dumps(result))
    elif text is not None:
        print(text)
    else:
        for k, v in result.items():
            print(f"{k}: {v}")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    prog = f"piconn {args.command}"
    try:
        out = args.handler(args)
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    except (CliError, OSError, ValueError) as e:
        if isinstance(e, OSError) and not isinstance(e, data.DataNotFound) and e.filename:
            msg = f"{e.strerror or e}: {e.filename}"
        else:
            msg = str(e)
        print(f"{prog}: error: {msg}", file=sys.stderr)
        if getattr(args, "json", False):
            print(json.dumps({"command": args.command, "error": msg}))
        return getattr(e, "code", 1) if isinstance(e, CliError) else 1
    _emit(args, out)
    return 0


if __name__ == "__main__":  # python -m piconn.cli: use the one imported module
    from piconn.cli import main as _main

    sys.exit(_main())
