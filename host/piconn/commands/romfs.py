"""`piconn romfs FILES... --out IMAGE`: a ROMFS image whose models the device reads
in place (see piconn.romfs)."""

from __future__ import annotations

import argparse

from .. import romfs
from .common import add_common, nonneg_int


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("romfs", help="build a ROMFS image (models read in place from /rom)",
                       description="Build a ROMFS image of FILES (.nnb models, exported .py "
                       "modules compiled to .mpy, other files) with every model on an aligned "
                       "flash address; deploy it with `mpremote romfs deploy OUT`.")
    p.add_argument("files", nargs="+", help=".nnb, .py, .mpy or other files (stored at /rom/NAME)")
    p.add_argument("--out", "-o", required=True, help="image to write, e.g. build/models.romfs "
                   "(mpremote deploys files ending .romfs or .img as images)")
    p.add_argument("--align", type=int, default=romfs.DEFAULT_ALIGN,
                   help=f"boundary of each model in bytes, power of two 2..64 (default "
                   f"{romfs.DEFAULT_ALIGN}; 4 is enough for in-place word reads)")
    p.add_argument("--size", type=nonneg_int, default=romfs.PICO_ROMFS_BYTES,
                   help=f"partition size to check against (default {romfs.PICO_ROMFS_BYTES}, the "
                   "PICO board; PICO2: 524288; 0: no check)")
    add_common(p)
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> tuple[dict, str]:
    result = {"command": "romfs", **romfs.build(args.files, args.out, args.align, args.size)}
    lines = [f"wrote {result['out']}: {result['bytes']} bytes"
             + (f" of {result['partition']}" if result["partition"] else "")
             + f", data aligned to {result['align']} bytes"]
    for r in result["files"]:
        where = ("" if r["model_offset"] is None
                 else f", model at +{r['model_offset']:#x}")
        lines.append(f"  /rom/{r['name']:<24} {r['size']:>8} B at +{r['offset']:#x}{where}"
                     + ("" if r["model_offset"] is not None or r["kind"] != "module"
                        else " (no model inside: start aligned)"))
    lines.append(f"deploy: mpremote romfs deploy {result['out']}")
    return result, "\n".join(lines)
