"""`piconn prune MODEL --sparsity S --out FILE [--epochs N] [--global | --per-layer]`
(magnitude pruning of Linear weights) or `piconn prune MODEL --structured F --out FILE`
(whole filters and neurons of a CNN, `piconn.prune_structured`)."""

from __future__ import annotations

import argparse
import sys
import time

from .. import conv, lower, nn, prune, prune_structured, train
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


def fraction(text: str) -> float:
    """An argparse type: a share of filters removed per layer, in (0, 1)."""
    try:
        return prune_structured.check_fraction(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


# Fine-tuning defaults: magnitude pruning (MLPs) / structured pruning (CNNs).
EPOCHS = {"sparsity": 20, "structured": 10}
LR = {"sparsity": 2e-3, "structured": 2e-3}


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "prune", help="magnitude-prune a float model, fine-tuning as it goes (.npz)",
        description="Prune the Linear weights of a float model to a target sparsity "
                    "(gradually, cubic schedule, while fine-tuning on the training set), or "
                    "with --structured remove whole filters of a CNN's convolutions (and "
                    "neurons of its hidden Linear layers), leaving a smaller dense model, "
                    "then fine-tune it.")
    add_common(p)
    p.add_argument("model", metavar="MODEL", help="float model (.npz from piconn train)")
    what = p.add_mutually_exclusive_group()
    what.add_argument("--sparsity", type=sparsity, default=None,
                      help="fraction of weights removed, in [0, 1) (default 0.9)")
    what.add_argument("--structured", type=fraction, default=None, metavar="F",
                      help="CNN: fraction of the filters of every prunable layer removed, "
                           "in (0, 1); the classes layer is never pruned")
    p.add_argument("--out", "-o", required=True, metavar="FILE", help="pruned model (.npz)")
    p.add_argument("--epochs", type=nonneg_int, default=None,
                   help="fine-tuning epochs; 0 = prune once, no fine-tuning (default "
                        f"{EPOCHS['sparsity']}, --structured {EPOCHS['structured']})")
    p.add_argument("--criterion", choices=prune_structured.CRITERIA, default="folded",
                   help="--structured: which filters go: the smallest L1 norms with the "
                        "following batch norm folded in (folded, default) or of the raw "
                        "weights (l1)")
    p.add_argument("--scope", choices=prune_structured.SCOPES, default="all",
                   help="--structured: thin convolutions and hidden Linear layers (all, "
                        "default) or convolutions only (conv)")
    scope = p.add_mutually_exclusive_group()
    scope.add_argument("--global", dest="global_", action="store_true", default=True,
                       help="one magnitude threshold over all layers (the default: the small "
                            "output layer keeps more of its weights)")
    scope.add_argument("--per-layer", dest="global_", action="store_false",
                       help="every Linear layer pruned to the same sparsity")
    p.add_argument("--lr", type=positive_float, default=None,
                   help=f"initial fine-tuning learning rate (default {LR['sparsity']}, "
                        f"decays 10x; --structured {LR['structured']}, cosine decay)")
    p.add_argument("--batch-size", type=positive_int, default=None,
                   help="default 128, --structured 64")
    p.add_argument("--update-every", type=positive_int, default=50,
                   help="steps between mask updates (default 50)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    add_data(p)
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> tuple[dict, str]:
    how = "sparsity" if args.structured is None else "structured"
    if args.epochs is None:
        args.epochs = EPOCHS[how]
    if args.lr is None:
        args.lr = LR[how]
    if args.batch_size is None:
        args.batch_size = 128 if how == "sparsity" else 64
    if how == "structured":
        return run_structured(args)
    if args.sparsity is None:
        args.sparsity = 0.9
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


def _width_line(before: dict, after: dict, last: bool) -> str:
    unit = "neurons" if before["type"] == "Linear" else "filters"
    note = " (the classes)" if last else ""
    return (f"layer {before['layer']} {before['type']}: {before['out']} -> {after['out']} "
            f"{unit}{note}")


def run_structured(args: argparse.Namespace) -> tuple[dict, str]:
    path = model_file(args.model)
    model, meta = nn.load(path)
    if lower.is_xnor(model):
        raise CliError("XNOR models cannot be pruned (their weights are already binary)")
    if not isinstance(model.layers[0], conv.Reshape):
        raise CliError(f"{path} is not a CNN (no Conv2d layer): --structured removes "
                       "convolution filters; use --sparsity for dense models")
    shape = model.layers[0].shape
    try:
        pruned = prune_structured.prune_structured(model, args.structured, args.criterion,
                                                   args.scope)
    except ValueError as e:
        raise CliError(f"{path}: {e}") from None
    x_train, y_train, x_test, y_test = load_data(args)
    before = prune_structured.summary(model, shape)
    after = prune_structured.summary(pruned, shape)
    acc_before = train.evaluate(model, x_test, y_test)
    acc_cut = train.evaluate(pruned, x_test, y_test)
    t0 = time.perf_counter()
    shift = int(meta.get("shift") or 0)
    history = prune_structured.fine_tune(
        pruned, x_train, y_train, epochs=args.epochs, lr=args.lr, batch_size=args.batch_size,
        shift=shift, seed=args.seed, side=shape[0],
        progress=False if args.quiet else sys.stderr)
    seconds = time.perf_counter() - t0
    acc = train.evaluate(pruned, x_test, y_test)
    spec = prune_structured.pruned_spec(meta.get("arch"), pruned)
    info = {"structured": args.structured, "criterion": args.criterion, "scope": args.scope,
            "epochs": args.epochs, "lr": args.lr, "batch_size": args.batch_size,
            "shift": shift, "source": str(path), "source_arch": meta.get("arch"),
            "source_accuracy": acc_before, "accuracy_after_cut": acc_cut,
            "before": before, "after": after, "history": history}
    meta = {**meta, "arch": spec, "kind": "pruned", "test_accuracy": acc, "pruning": info}
    out = nn.save(pruned, args.out, meta)
    result = {"command": "prune", "structured": args.structured, "out": str(out),
              "arch": spec, "accuracy": acc, "accuracy_before": acc_before,
              "accuracy_after_cut": acc_cut, "n": len(y_test), "before": before,
              "after": after, "criterion": args.criterion, "scope": args.scope,
              "epochs": args.epochs, "seconds": round(seconds, 3)}
    rows = list(zip(before["layers"], after["layers"]))
    lines = [_width_line(b, a, k == len(rows) - 1) for k, (b, a) in enumerate(rows)]
    lines.append(f"parameters {before['params']:,} -> {after['params']:,} "
                 f"({before['params'] / after['params']:.2f}x fewer); multiply-adds "
                 f"{before['macs']:,} -> {after['macs']:,} "
                 f"({before['macs'] / after['macs']:.2f}x fewer)")
    lines.append(f"test accuracy {100 * acc_before:.2f}% -> {100 * acc_cut:.2f}% after the cut "
                 f"-> {100 * acc:.2f}% after {args.epochs} epochs of fine-tuning "
                 f"({len(y_test)} images); saved {out}")
    return result, "\n".join(lines)
