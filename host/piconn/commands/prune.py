"""`piconn prune MODEL --sparsity S --out FILE [--epochs N] [--global | --per-layer]`."""

from __future__ import annotations

import argparse
import sys
import time

from .. import lower, nn, prune, train
from .common import (
    CliError,
    add_common,
    add_data,
    load_data,
    model_file,
    nonneg_int,
    positive_float,
    positive_int,
)


def sparsity(text: str) -> float:
    """An argparse type: a fraction of weights removed, in [0, 1)."""
    try:
        return prune.check_sparsity(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "prune", help="magnitude-prune a float model, fine-tuning as it goes (.npz)",
        description="Prune the Linear weights of a float model to a target sparsity "
                    "(gradually, cubic schedule, while fine-tuning on the training set).")
    add_common(p)
    p.add_argument("model", metavar="MODEL", help="float model (.npz from piconn train)")
    p.add_argument("--sparsity", type=sparsity, default=0.9,
                   help="fraction of weights removed, in [0, 1) (default 0.9)")
    p.add_argument("--out", "-o", required=True, metavar="FILE", help="pruned model (.npz)")
    p.add_argument("--epochs", type=nonneg_int, default=20,
                   help="fine-tuning epochs; 0 = prune once, no fine-tuning (default 20)")
    scope = p.add_mutually_exclusive_group()
    scope.add_argument("--global", dest="global_", action="store_true", default=True,
                       help="one magnitude threshold over all layers (the default: the small "
                            "output layer keeps more of its weights)")
    scope.add_argument("--per-layer", dest="global_", action="store_false",
                       help="every Linear layer pruned to the same sparsity")
    p.add_argument("--lr", type=positive_float, default=2e-3,
                   help="initial fine-tuning learning rate (default 2e-3, decays 10x)")
    p.add_argument("--batch-size", type=positive_int, default=128)
    p.add_argument("--update-every", type=positive_int, default=50,
                   help="steps between mask updates (default 50)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    add_data(p)
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> tuple[dict, str]:
    path = model_file(args.model)
    model, meta = nn.load(path)
    if lower.is_xnor(model):
        raise CliError("XNOR models cannot be pruned (their weights are already binary)")
    lower.linear_chain(model)  # ValueError unless a Linear/activation model
    x_train, y_train, x_test, y_test = load_data(args)
    acc_before = train.evaluate(model, x_test, y_test)
    t0 = time.perf_counter()
    shift = int(meta.get("shift") or 0)
    history = prune.prune(model, x_train, y_train, args.sparsity, epochs=args.epochs,
                          global_=args.global_, lr=args.lr, lr_end=args.lr / 10,
                          batch_size=args.batch_size, update_every=args.update_every,
                          seed=args.seed, shift=shift,
                          progress=False if args.quiet else sys.stderr)
    seconds = time.perf_counter() - t0
    acc = train.evaluate(model, x_test, y_test)
    rep = prune.report(model)
    info = {"sparsity": args.sparsity, "global": args.global_, "epochs": args.epochs,
            "lr": args.lr, "shift": shift, "source": str(path),
            "source_accuracy": acc_before, "layers": rep["layers"], "history": history}
    meta = {**meta, "kind": "pruned", "test_accuracy": acc, "pruning": info}
    out = nn.save(model, args.out, meta)
    result = {"command": "prune", "out": str(out), "accuracy": acc,
              "accuracy_before": acc_before, "n": len(y_test), "sparsity": rep["sparsity"],
              "nnz": rep["nnz"], "weights": rep["weights"], "layers": rep["layers"],
              "global": args.global_, "epochs": args.epochs, "seconds": round(seconds, 3)}
    lines = [f"layer {r['layer']} {r['shape'][0]}x{r['shape'][1]}: {r['nnz']}/{r['weights']} "
             f"weights kept, sparsity {100 * r['sparsity']:.1f}%" for r in rep["layers"]]
    lines.append(f"total sparsity {100 * rep['sparsity']:.1f}% ({rep['nnz']} of {rep['weights']} "
                 f"weights kept)")
    lines.append(f"test accuracy {100 * acc:.2f}% (before pruning {100 * acc_before:.2f}%); "
                 f"saved {out}")
    return result, "\n".join(lines)
