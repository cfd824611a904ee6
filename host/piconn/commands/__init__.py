"""The `piconn` command line (also `python -m piconn`).

One module per subcommand, listed in `COMMANDS`. Each defines

    def add_parser(subparsers) -> None:
        p = subparsers.add_parser("prune", help="...")
        add_common(p)                          # --json (from .common)
        p.add_argument(...)
        p.set_defaults(handler=run)            # run(args) -> dict | (dict, text)

A handler returns a JSON-able dict (printed as exactly one JSON object with
`--json`, else as `key: value` lines) or `(dict, text)` to choose the human
text. It signals user errors by raising `common.CliError` (or ValueError/OSError):
the message goes to stderr and the exit status is 1. Argument errors exit 2.

The library modules (piconn.nn, train, prune, quant, export, ...) never import
this package; `piconn train --kind K` takes its kinds from `common.TRAIN_KINDS`.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from .. import __version__, data
from . import evaluate, export, import_model, prune, quantize, romfs, train
from .common import CliError

# In the order `piconn --help` lists them.
COMMANDS = (train, evaluate, prune, quantize, export, import_model, romfs)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="piconn", description="Train small networks on a PC, run them on a Pico.")
    parser.add_argument("--version", action="version", version=f"piconn {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for command in COMMANDS:
        command.add_parser(sub)
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
        return e.code if isinstance(e, CliError) else 1
    _emit(args, out)
    return 0
