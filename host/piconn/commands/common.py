"""What the subcommands share: user errors, argument types, data and model files,
and the table of `piconn train --kind` kinds."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .. import conv, data, nn, train, xnor, xnor_cnn


class CliError(Exception):
    """A user-facing error: printed without traceback, exit status `code`."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


# ------------------------------------------------------------------ argument types


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


# ------------------------------------------------------------------ data and model files


def load_data(args: argparse.Namespace) -> tuple[np.ndarray, ...]:
    return data.load_mnist(args.data)


def model_file(name: str) -> Path:
    """The path of an existing model file, or a CliError that names it."""
    path = Path(name)
    if not path.is_file():
        raise CliError(f"no such model file: {path}")
    return path


def model_stats(model: nn.Module) -> dict:
    """params (trainable scalars), nonzero weights, bytes as float32."""
    params = nn.count_params(model)
    nonzero = 0
    for layer in getattr(model, "layers", [model]):
        for p in layer.params():
            mask = p.mask
            nonzero += int(np.count_nonzero(p.data if mask is None else p.data * mask))
    return {"params": params, "nonzero": nonzero, "bytes": 4 * params}


# ------------------------------------------------------------------ train kinds


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


def _train_float(args: argparse.Namespace, x: np.ndarray, y: np.ndarray
                 ) -> tuple[nn.Sequential, list[dict], dict]:
    return train.train_float(x, y, arch=args.arch, act=args.act, epochs=args.epochs,
                             batch_size=args.batch_size, lr=args.lr, shift=args.shift,
                             seed=args.seed, progress=args.progress)


def _xnor_arguments(p: argparse.ArgumentParser) -> None:
    t = xnor.DEFAULT_THRESHOLD
    p.add_argument("--binarize-threshold", type=int, default=t, metavar="T",
                   help=f"xnor: input pixels >= T are +1, others -1 (default {t})")
    p.add_argument("--xnor-dropout", type=float, default=0.0, metavar="P",
                   help="xnor: dropout after each hidden sign activation (default 0)")


def _train_xnor(args: argparse.Namespace, x: np.ndarray, y: np.ndarray
                ) -> tuple[nn.Sequential, list[dict], dict]:
    return xnor.train_xnor(x, y, arch=args.arch, epochs=args.epochs,
                           batch_size=args.batch_size, lr=args.lr, shift=args.shift,
                           seed=args.seed, threshold=args.binarize_threshold,
                           dropout=args.xnor_dropout, progress=args.progress)


def _train_cnn(args: argparse.Namespace, x: np.ndarray, y: np.ndarray
               ) -> tuple[nn.Sequential, list[dict], dict]:
    return conv.train_cnn(x, y, arch=args.arch, epochs=args.epochs, batch_size=args.batch_size,
                          lr=args.lr, shift=args.shift, seed=args.seed, progress=args.progress)


def _train_xnor_cnn(args: argparse.Namespace, x: np.ndarray, y: np.ndarray
                    ) -> tuple[nn.Sequential, list[dict], dict]:
    teacher = None
    if getattr(args, "teacher", None):
        teacher, _ = nn.load(model_file(args.teacher))
    model, history, meta = xnor_cnn.train_xnor_cnn(
        x, y, arch=args.arch, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
        shift=args.shift, seed=args.seed, teacher=teacher, progress=args.progress)
    if teacher is not None:
        meta["teacher"] = str(args.teacher)
    return model, history, meta


# `--model cnn` with `--kind float`: a convolutional network from a spec (piconn.conv).
CNN_KIND = TrainKind("float", _train_cnn, "float32 CNN", conv.CNN_DEFAULTS)
# `--model cnn` with `--kind xnor`: a binary CNN from a spec (piconn.xnor_cnn).
XNOR_CNN_KIND = TrainKind("xnor", _train_xnor_cnn, "binary CNN: int8 stem, XNOR/popcount layers",
                          xnor_cnn.TRAIN_DEFAULTS)
CNN_KINDS = {"float": CNN_KIND, "xnor": XNOR_CNN_KIND}

TRAIN_KINDS: dict[str, TrainKind] = {
    "float": TrainKind("float", _train_float, "float32 MLP (default)", train.FLOAT_DEFAULTS),
    "xnor": TrainKind("xnor", _train_xnor, "binary MLP: binarized input, XNOR/popcount layers",
                      xnor.TRAIN_DEFAULTS, _xnor_arguments),
}
