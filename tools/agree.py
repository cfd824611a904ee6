"""Agreement of the device tiers with the host reference on the MNIST test set.

    .venv/bin/python tools/agree.py [--n 10000] [--kinds q8,xnor] [--tiers viper,python]

For each model kind found under build/models (float, sparse f32, uint8 full,
sparse uint8, uint8 weight-only, xnor) and each kernel tier of the unix-port
MicroPython (tools/mpy.py: $PICONN_MPY_UNIX, by default build/UNIX/micropython),
runs `nn` on the first N test digits and compares every output with
`piconn.reference.run` on the same device model:

- integer outputs (i32): rows bit-identical;
- float outputs (f32): every element within 1e-4 of the row's largest |logit|
  (relative to the row's scale: float32 sums in a different order);
- predicted classes (first maximum) identical, and both accuracies.

Prints one line per kind/tier (or JSON lines with --json). Exit status 1 if an
integer kind is not bit-identical or a predicted class differs.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))
sys.path.insert(0, str(ROOT / "host"))

import mpy

from piconn import data, lower, reference

# kind -> model files to try, in order
KINDS = {
    "float": ["mnist_f32.nnb", "mnist_f32.npz"],
    "sparse_f32": ["mnist_sparse.nnb", "mnist_pruned.nnb", "mnist_pruned.npz"],
    "uint8": ["mnist_q8.nnb"],
    "sparse_uint8": ["mnist_sparse_q8.nnb"],
    "uint8_weights": ["mnist_q8w.nnb"],
    "xnor": ["mnist_xnor.nnb", "mnist_xnor.npz"],
}
REL_TOL = 1e-4

SCRIPT = """
import nn
nn.use_backend({tier!r})
m = nn.load({model!r})
print('TIERS', ' '.join(m.tiers()))
buf = bytearray({size})
f = open({images!r}, 'rb')
o = open({out!r}, 'wb')
for i in range({n}):
    f.readinto(buf)
    o.write(m.forward(buf))
f.close()
o.close()
print('DONE')
"""


def find_model(kind: str, models: Path) -> Path | None:
    for name in KINDS[kind]:
        if (models / name).is_file():
            return models / name
    return None


def compare(dm, y_dev: np.ndarray, y_ref: np.ndarray, labels: np.ndarray) -> dict:
    """Agreement figures of device outputs vs reference outputs [N, out]."""
    if dm.output_dtype == "i32":
        same = np.all(y_dev == y_ref, axis=1)
        worst = float(np.abs(y_dev.astype(np.int64) - y_ref).max(initial=0))
    else:
        scale = np.maximum(np.abs(y_ref).max(axis=1, keepdims=True), np.float32(1e-30))
        err = np.abs(y_dev.astype(np.float64) - y_ref) / scale
        same = np.all(err <= REL_TOL, axis=1)
        worst = float(err.max(initial=0))
    p_dev, p_ref = np.argmax(y_dev, axis=1), np.argmax(y_ref, axis=1)
    return {"n": len(labels), "agree": int(same.sum()), "same_class": int((p_dev == p_ref).sum()),
            "acc_device": float((p_dev == labels).mean()),
            "acc_reference": float((p_ref == labels).mean()), "worst": worst}


def run_kind(runner: mpy.Runner, kind: str, path: Path, tier: str, x: np.ndarray,
             y: np.ndarray, tmp: Path) -> dict:
    loaded = lower.load_file(path)
    blob, dm = loaded.blob, loaded.model
    nnb = tmp / f"{path.stem}.nnb"
    nnb.write_bytes(blob)
    images = tmp / "images.bin"
    if not images.exists():
        images.write_bytes(np.ascontiguousarray(x, dtype=np.uint8).tobytes())
    out = tmp / f"out_{kind}_{tier}.bin"
    code = SCRIPT.format(tier=tier, model=str(nnb), size=x.shape[1], images=str(images),
                         out=str(out), n=len(x))
    t0 = time.time()
    text = runner.run(code, timeout=3600)
    secs = time.time() - t0
    tiers = next(line.split()[1:] for line in text.splitlines() if line.startswith("TIERS"))
    dt = "<i4" if dm.output_dtype == "i32" else "<f4"
    y_dev = np.fromfile(out, dtype=dt).reshape(len(x), dm.output_size)
    y_ref = reference.run(dm, x)
    res = {"kind": kind, "model": path.name, "tier": tier, "layer_tiers": tiers,
           "seconds": round(secs, 1), **compare(dm, y_dev, y_ref, y)}
    res["ok"] = res["same_class"] == res["n"] and (dm.output_dtype != "i32"
                                                   or res["agree"] == res["n"])
    return res


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=10000, help="test digits (default all 10000)")
    ap.add_argument("--kinds", default=",".join(KINDS), help="comma-separated kinds")
    ap.add_argument("--tiers", default=None, help="comma-separated tiers (default: all present)")
    ap.add_argument("--models", default=str(ROOT / "build" / "models"))
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    runner = mpy.unix_runner()
    if runner is None:
        print(f"agree: no {mpy.UNIX_BINARY}: run `make firmware BOARD=UNIX` first",
              file=sys.stderr)
        return 2
    _, _, x_test, y_test = data.load_mnist(download=False)
    x, y = x_test[:args.n], y_test[:args.n]
    tiers = args.tiers.split(",") if args.tiers else list(runner.tiers)
    failed = False
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        for kind in args.kinds.split(","):
            path = find_model(kind, Path(args.models))
            if path is None:
                print(f"{kind:14s} no model ({' or '.join(KINDS[kind])}) in {args.models}")
                continue
            for tier in tiers:
                if tier not in runner.tiers:
                    print(f"{kind:14s} tier {tier} not present in {mpy.UNIX_BINARY.name}")
                    continue
                r = run_kind(runner, kind, path, tier, x, y, tmp)
                failed |= not r["ok"]
                if args.json:
                    print(json.dumps(r))
                else:
                    what = "identical" if path and r["worst"] == 0 else f"worst {r['worst']:.2g}"
                    print(f"{kind:14s} {r['model']:22s} {tier:7s} ({'/'.join(r['layer_tiers'])})"
                          f": {r['agree']}/{r['n']} agree ({what}), {r['same_class']}/{r['n']} "
                          f"same class, accuracy {100 * r['acc_device']:.2f}% device / "
                          f"{100 * r['acc_reference']:.2f}% reference, {r['seconds']} s")
                sys.stdout.flush()
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
