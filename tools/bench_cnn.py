#!/usr/bin/env python3
"""The MNIST CNNs of `make cnn-models` on the virtual Pico, each kind one row per tier.

    .venv/bin/python tools/bench_cnn.py [--tiers c,viper] [--models build/models]
        [--uf2 build/PICO/firmware.uf2] [--budget-ms 300] [--no-count] [--json FILE]
        [--kinds mnist_cnn_f32,...] [--measure-fallbacks] [--update build]

(`make bench` and `make bench-cnn` run it through tools/bench.py as section "cnn" of
build/bench.json.) Every kind of `CNN_KINDS` whose model (NAME.nnb, format version 2) was
made is benchmarked; a kind that was not made becomes a row saying why (the error the
Makefile step left in FILE.why, or which file is missing).

Host: accuracy on the 10,000 MNIST test images through `piconn.int8_ops.run` (the
reference the device equals bit for bit: TFLite Micro's arithmetic for int8 and float32).
The input is what the model takes: pixel/255 as float32, or those values quantized with
the model's input scale and zero point.

Device: the models and their inputs for the first digits go into flash beside the
firmware (a UF2 with extra segments, as tools/bench_int8_pico.py places its models) and
are read in place. Per (model, tier) cell, after a soft reset: `nn.use_backend(tier)`,
`nn.load` of the model (gc.mem_alloc() growth, nn.graph imported before: the model
object with its arena), then
one `forward()` per digit timed with time.ticks_us() (emulated RP2040 at 125 MHz). Digit
0 runs under micropython.heap_lock() (no alloc) with the flash counter on (model bytes
read per inference); if it allocates, it runs again without the lock. The digit count
fits --budget-ms of emulated time (1 to 10; c: at least 3 when the first digit fits).
Every output is compared with the reference. A viper cell whose operators all run the
python kernels (float32 layers) is not timed without --measure-fallbacks (with it, its row
keeps "fallback_of": the README marks it "(python kernels)"). --update DIR puts the rows of
the run in place of DIR/bench.json's rows of the same CNN and tier (e.g. those cells alone:
--kinds mnist_cnn_f32,mnist_cnn_pruned --tiers viper --measure-fallbacks).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
for _path in (ROOT / "tools", ROOT / "host"):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

from piconn import format2, int8_ops, quant_int8, train
from piconn import graph as g

if TYPE_CHECKING:  # vpico needs mpremote, which the host-side tests do without
    from vpico import VirtualPico

SECTION = "cnn"
TIERS = ("c", "viper", "python")
EXTRA_BASE = 0x10200000  # past the Pico's 2 MB of firmware (the emulated chip has 16 MB)
SCRATCH_BYTES = 4096  # nn_graph_scratch: the C kernels' static buffer (BSS)
MAX_DIGITS = 10
MIN_DIGITS = {"c": 3}  # when the first digit fits the budget; else (and other tiers) 1
EMULATED_HZ = 125_000_000


@dataclass(frozen=True)
class CnnKind:
    """One CNN of `make cnn-models`: its module name, kind, description, and the files its
    Makefile steps make in order (relative to the models folder; the last is NAME.py,
    written with NAME.nnb)."""

    name: str
    kind: str
    variant: str
    steps: tuple[str, ...]

    def nnb(self, models: Path) -> Path:
        return models / Path(self.steps[-1]).with_suffix(".nnb")


CNN_KINDS = (
    CnnKind("mnist_cnn_f32", "float32", "float32 CNN", ("mnist_cnn.npz", "large/mnist_cnn_f32.py")),
    CnnKind("mnist_cnn_pruned", "float32", "float32 CNN, 50% of the filters pruned",
            ("mnist_cnn.npz", "mnist_cnn_pruned.npz", "large/mnist_cnn_pruned.py")),
    CnnKind("mnist_cnn_int8", "int8", "int8 CNN", ("mnist_cnn.npz", "mnist_cnn_int8.py")),
    CnnKind("mnist_cnn_small_int8", "int8", "int8 small CNN",
            ("mnist_cnn_small.npz", "mnist_cnn_small_int8.py")),
    CnnKind("mnist_cnn_xnor", "xnor", "XNOR CNN (binary)",
            ("mnist_cnn_xnor.npz", "mnist_cnn_xnor.py")),
)


def _shown(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(ROOT))
    except ValueError:
        return str(path)


def missing_reason(k: CnnKind, models: Path) -> str | None:
    """Why kind k has no model in `models` (None when its .nnb is there): the first step's
    file that is missing, with the error its Makefile step left in FILE.why."""
    if k.nnb(models).is_file():
        return None
    for step in k.steps:
        path = models / step
        if path.is_file():
            continue
        why = path.with_name(path.name + ".why")
        if why.is_file():
            return f"{_shown(path)} not made: {why.read_text().strip()}"
        return f"no {_shown(path)} (make cnn-models)"
    return f"no {_shown(k.nnb(models))} (make cnn-models)"


# ---------------------------------------------------------------------------------- host


def model_inputs(graph: g.Graph, x: np.ndarray) -> np.ndarray:
    """The graph's input values for uint8 pixels x [N, 784]: pixel/255 as float32 (as
    training prepares them), quantized with the input's scale and zero point for an int8
    input; shape [N, *input shape[1:]]."""
    t = graph.tensors[graph.inputs[0]]
    if t.dtype == g.FLOAT32:
        v = train.prepare(x, np.float32)
    elif t.dtype == g.INT8:
        v = quant_int8.quantize_input(graph, x)
    else:
        raise ValueError(f"the CNN's input is {t.dtype}: the benchmark feeds float32 or int8")
    if v.size != len(x) * int(np.prod(t.shape[1:])):
        raise ValueError(f"the CNN takes {t.shape} per image, MNIST digits have {x.shape[1:]}")
    return v.reshape(len(x), *t.shape[1:])


def logits(graph: g.Graph, x: np.ndarray, batch: int = 500) -> np.ndarray:
    """The reference's outputs [N, ...] for uint8 pixels x, `batch` images per run."""
    v = model_inputs(graph, x)
    outs = []
    for lo in range(0, len(v), batch):
        part = v[lo:lo + batch]
        big = quant_int8.batched(graph, len(part))
        outs.append(np.asarray(int8_ops.run(big, part)))
    return np.concatenate(outs)


@dataclass
class Model:
    """A kind's model on the host: bytes, graph, reference outputs of the benchmark
    digits, accuracy; its place in flash and the inputs' place, once laid out."""

    kind: CnnKind
    blob: bytes
    graph: g.Graph
    accuracy: float
    reference: np.ndarray  # outputs for the benchmark digits
    inputs: bytes  # the model's input bytes for the benchmark digits, one after another
    addr: int = 0
    in_addr: int = 0

    @property
    def input_nbytes(self) -> int:
        return len(self.inputs) // len(self.reference)

    @property
    def f32_input(self) -> bool:
        return self.graph.tensors[self.graph.inputs[0]].dtype == g.FLOAT32


def load_model(k: CnnKind, models: Path, x_test: np.ndarray, y_test: np.ndarray,
               n_bench: int) -> Model:
    blob = k.nnb(models).read_bytes()
    graph = format2.from_bytes(blob).graph
    out = logits(graph, x_test)
    acc = float((out.reshape(len(y_test), -1).argmax(axis=1) == y_test).mean())
    inputs = model_inputs(graph, x_test[:n_bench])
    return Model(k, blob, graph, acc, out[:n_bench], inputs.tobytes())


def base_row(k: CnnKind, tier: str | None, m: Model | None = None) -> dict:
    row: dict = {"section": SECTION, "model": k.name, "kind": k.kind, "variant": k.variant,
                 "tier": tier}
    if m is not None:
        row.update(accuracy=m.accuracy, model_bytes=len(m.blob), macs=m.graph.macs(),
                   arena_bytes=g.plan_memory(m.graph, align=4).arena_size,
                   source=f"UF2 at {m.addr:#x}")
    return row


def missing_row(k: CnnKind, why: str) -> dict:
    return dict(base_row(k, None), missing=why)


def cell_row(m: Model, tier: str, dev: dict) -> dict:
    """A bench.json row from the device's figures of one cell (not timed: us None). A
    timed cell whose operators all ran the python kernels keeps "fallback_of"."""
    if dev.get("fallback_of") and not dev["digits"]:
        return dict(base_row(m.kind, tier, m), us=None, digits=0, heap_bytes=dev["heap"],
                    ram_bytes=dev["heap"], alloc_free=None, exact=None,
                    operator_tiers=sorted(set(dev["tiers"])), fallback_of=dev["fallback_of"])
    us = [d[0] for d in dev["digits"]]
    outs = [bytes.fromhex(d[1]) for d in dev["digits"]]
    exact = all(o == m.reference[i].tobytes() for i, o in enumerate(outs))
    op_tiers = sorted(set(dev["tiers"]))
    scratch = SCRATCH_BYTES if "c" in op_tiers else 0
    mean = sum(us) / len(us)
    macs = m.graph.macs()
    return dict(base_row(m.kind, tier, m), us=round(mean, 1), us_each=us, digits=len(us),
                cycles_per_mac=round(mean * EMULATED_HZ / 1e6 / macs, 2) if macs else None,
                flash_bytes_read=dev.get("flash"), heap_bytes=dev["heap"],
                scratch_bytes=scratch, ram_bytes=dev["heap"] + scratch,
                alloc_free=dev["alloc_free"], exact=exact, operator_tiers=op_tiers,
                **({"fallback_of": dev["fallback_of"]} if dev.get("fallback_of") else {}))


# ---------------------------------------------------------------------------------- device

DEVICE_LOAD = """
import gc, json, micropython, nn, time, uctypes
from array import array
from nn import graph  # (the package's own heap is not the model's)
nn.use_backend({tier!r})
gc.collect()
h0 = gc.mem_alloc()
m = nn.load(uctypes.bytearray_at({addr}, {size}))
gc.collect()
heap = gc.mem_alloc() - h0
inp = uctypes.bytearray_at({in_addr}, {in_size})
x = array('f', bytes({nb})) if {f32} else bytearray({nb})
xb = uctypes.bytearray_at(uctypes.addressof(x), {nb})
m._prepare_steps()
y = t0 = dt = ok = None  # (globals made before the heap is locked)
print(json.dumps({{"heap": heap, "tiers": m.tiers()}}))
"""

DEVICE_RUN = """
res = []
for i in range({i0}, {i1}):
    xb[:] = inp[i * {nb}:(i + 1) * {nb}]
    gc.collect()
    ok = False
    if {lock}:
        micropython.heap_lock()
        try:
            t0 = time.ticks_us()
            y = m.forward(x)
            dt = time.ticks_diff(time.ticks_us(), t0)
            ok = True
        except MemoryError:
            pass
        micropython.heap_unlock()
    if not ok:
        t0 = time.ticks_us()
        y = m.forward(x)
        dt = time.ticks_diff(time.ticks_us(), t0)
    res.append([dt, bytes(y).hex(), ok])
print(json.dumps(res))
"""


def _json(out: str):
    for line in reversed(out.strip().splitlines()):
        if line.startswith(("{", "[")):
            return json.loads(line)
    raise ValueError(f"no JSON line in the device output: {out[-500:]!r}")


def run_cell(pico: VirtualPico, m: Model, tier: str, budget_us: float, count: bool,
             log: Callable[[str], None], measure_fallbacks: bool = False) -> dict:
    """The device's figures of one (model, tier) cell: heap, operator tiers, per digit
    [us, output hex], no alloc, flash bytes read over digit 0. A viper cell whose every
    operator runs the python kernels (float layers: viper has no float arithmetic) is not
    timed unless measure_fallbacks (minutes of emulation per digit): no digits, and
    "fallback_of": "python". (A RESHAPE copies nothing: its tier does not count.)"""
    nb = m.input_nbytes
    info = _json(pico.run_script(DEVICE_LOAD.format(
        tier=tier, addr=m.addr, size=len(m.blob), in_addr=m.in_addr, in_size=len(m.inputs),
        nb=nb, f32=m.f32_input), timeout=1800))
    compute = {t for k, t in enumerate(info["tiers"]) if m.graph.operators[k].kind != g.RESHAPE}
    fallback = tier not in ("c", "python") and compute == {"python"}
    if fallback and not measure_fallbacks:
        log(f"  {tier:6s} every operator runs the python kernels: not timed")
        return {"heap": info["heap"], "tiers": info["tiers"], "digits": [],
                "alloc_free": None, "flash": None, "fallback_of": "python"}

    def run(i0: int, i1: int, lock: bool = False) -> list:
        return _json(pico.run_script(DEVICE_RUN.format(i0=i0, i1=i1, nb=nb, lock=lock),
                                     timeout=7200, soft_reset=False))

    lo, hi = m.addr, m.addr + len(m.blob)
    if count:
        pico.count_on(lo, hi)
    try:
        first = run(0, 1, lock=True)
        alloc_free = bool(first[0][2])
        if not alloc_free and count:  # the failed attempt read too: count again
            pico.count_on(lo, hi)
            first = run(0, 1)
    finally:
        flash = pico.count_off() if count and pico.pid is not None else None
    digits = [d[:2] for d in first]
    n_max = len(m.reference)
    least = MIN_DIGITS.get(tier, 1) if digits[0][0] <= budget_us else 1
    n = int(max(least, min(n_max, budget_us // max(digits[0][0], 1))))
    if n > 1:
        digits += [d[:2] for d in run(1, n)]
    mean = sum(d[0] for d in digits) / len(digits)
    log(f"  {tier:6s} {mean / 1000:10.3f} ms mean over {len(digits)} digit(s)"
        + ("" if flash is None else f"; {flash:,} flash bytes read")
        + f"; operators on {','.join(sorted(set(info['tiers'])))}")
    return {"heap": info["heap"], "tiers": info["tiers"], "digits": digits,
            "alloc_free": alloc_free, "flash": flash,
            **({"fallback_of": "python"} if fallback else {})}


# ---------------------------------------------------------------- bare graphs in flash
# (tools/bench_cnn_float.py, bench_cnn_int8.py and bench_xnor_cnn.py time their graphs
# through _nn_c.graph_run alone, without nn.load)

GRAPH_RUN = """
import _nn_c, micropython, time, uctypes

model = uctypes.bytearray_at({addr}, {size})
arena = bytearray({arena})
arena[{in_off}:{in_end}] = {values!r}
t0 = dt = 0  # (globals made before the heap is locked)
micropython.heap_lock()
t0 = time.ticks_us()
_nn_c.graph_run(model, arena, 0, {n_ops})
dt = time.ticks_diff(time.ticks_us(), t0)
micropython.heap_unlock()
print(dt, bytes(arena[{out_off}:{out_end}]).hex())
"""


def flash_image(uf2_path: Path, blobs: list[bytes], name: str) -> tuple[Path, list[int]]:
    """The firmware of uf2_path with `blobs` in flash past it (from EXTRA_BASE), written
    beside it as `name`: (that UF2, each blob's address)."""
    import uf2

    layout = uf2.segment_layout([len(b) for b in blobs], EXTRA_BASE)
    image = uf2_path.parent / name
    image.write_bytes(uf2.with_segments(uf2_path.read_bytes(),
                                        [(addr, b) for (addr, _), b in zip(layout, blobs)]))
    return image, [addr for addr, _ in layout]


def graph_run(pico: VirtualPico, addr: int, blob: bytes, values: bytes) -> tuple[int, bytes]:
    """One `_nn_c.graph_run` of the graph file `blob` read in place at flash address
    `addr`, its input bytes `values`, under heap_lock: (us, the output's bytes)."""
    from int8_ckernels import GraphModel

    gm = GraphModel(blob)
    in_off, out_off = gm.inputs[0][0], gm.outputs[0][0]
    _, out_dt, out_shape = gm.outputs[0]
    n_out = int(np.prod(out_shape)) * np.dtype(out_dt).itemsize
    t, hexed = pico.run_script(GRAPH_RUN.format(
        addr=addr, size=len(blob), arena=max(gm.arena_size, 4), in_off=in_off,
        in_end=in_off + len(values), values=values, n_ops=gm.n_operators, out_off=out_off,
        out_end=out_off + n_out), timeout=3600).split()
    return int(t), bytes.fromhex(hexed)


def time_graphs(items: list[tuple[dict, g.Graph, bytes]],
                inputs: Callable[[g.Graph, np.ndarray], np.ndarray], x: np.ndarray,
                uf2_path: Path, image_name: str, digits: int, log: Callable[[str], None],
                per_mac: bool = True) -> None:
    """Each (row, graph, file bytes) of items in flash beside the firmware (the UF2
    image_name) on the virtual Pico: one graph_run per digit of x[:digits], its input
    inputs(graph, pixels); the outputs compared with `int8_ops.run` byte for byte, then one
    more run of digit 0 counting the model bytes read from flash. Adds to each row
    pico_us (mean), pico_us_each, with per_mac cycles_per_mac, flash_bytes_read and
    bit_exact ("equal/digits")."""
    from vpico import VirtualPico

    image, addrs = flash_image(uf2_path, [blob for _, _, blob in items], image_name)
    with VirtualPico(image, count_flash=True) as pico:
        log(f"virtual Pico up ({image})")
        for addr, (row, graph, blob) in zip(addrs, items):
            shape = graph.tensors[graph.inputs[0]].shape
            us, exact = [], 0
            for k in range(digits):
                v = inputs(graph, x[k:k + 1]).reshape(shape)
                t, got = graph_run(pico, addr, blob, v.tobytes())
                same = got == int8_ops.run(graph, v).tobytes()
                exact += same
                us.append(t)
                log(f"  {row['model']} digit {k}: {t} us, bit-exact {same}")
            pico.count_on(addr, addr + len(blob))
            graph_run(pico, addr, blob, inputs(graph, x[:1]).tobytes())
            mean = float(np.mean(us))
            row.update({"pico_us": round(mean), "pico_us_each": us})
            if per_mac:
                row["cycles_per_mac"] = round(mean * EMULATED_HZ / 1e6 / row["macs"], 2)
            row.update({"flash_bytes_read": pico.count_off(), "bit_exact": f"{exact}/{digits}"})


def add_pico_args(p: argparse.ArgumentParser, digits: int) -> None:
    """The --pico, --digits and --uf2 options of a script timing graphs with time_graphs."""
    p.add_argument("--pico", action="store_true", help="time the graphs on the virtual Pico")
    p.add_argument("--digits", type=int, default=digits,
                   help=f"--pico: test digits (default {digits})")
    p.add_argument("--uf2", type=Path, default=ROOT / "build" / "PICO" / "firmware.uf2")


def check_args(p: argparse.ArgumentParser, a: argparse.Namespace) -> None:
    """Refuses (p.error) a missing model file of a.models, --digits below 1, and --pico
    without the firmware."""
    missing = [m for m in a.models if not m.is_file()]
    if missing:
        p.error(f"no model file {missing[0]}")
    if a.digits < 1:
        p.error("--digits must be >= 1")
    if a.pico and not a.uf2.is_file():
        p.error(f"no firmware at {a.uf2}: run `make firmware BOARD=PICO`")


def log(msg: str) -> None:
    """A line of progress, on stderr."""
    print(msg, file=sys.stderr, flush=True)


def pico_cells(r: dict | None, unit: str = "us") -> str:
    """The columns time_graphs fills in a script's table: their heads (r None) or row r's
    figures, the time in `unit` (ms or us)."""
    if r is None:
        return f" {'Pico ' + unit:>8s} {'cyc/MAC':>7s} {'flash B read':>12s} {'exact':>5s}"
    t = f"{r['pico_us'] / 1000:8.1f}" if unit == "ms" else f"{r['pico_us']:>8,}"
    return f" {t} {r['cycles_per_mac']:7.2f} {r['flash_bytes_read']:>12,} {r['bit_exact']:>5s}"


def pico_note(unit: str = "us") -> str:
    """The table's note on the pico_cells columns."""
    return (f"Pico {unit}: emulated RP2040 at 125 MHz (time.ticks_us), one _nn_c.graph_run "
            "per digit under heap_lock; flash B read: model bytes per inference")


def run_all(models_dir: Path, uf2_path: Path, tiers: tuple[str, ...], budget_ms: float,
            count: bool, log: Callable[[str], None],
            on_row: Callable[[dict], None] | None = None,
            measure_fallbacks: bool = False,
            kinds: tuple[str, ...] | None = None) -> list[dict]:
    """Every kind of CNN_KINDS (or those named in kinds): a row per tier (a row saying why
    for a kind not made, an error row for a failed cell). on_row(row) is called after each
    row."""
    from piconn import data

    rows: list[dict] = []

    def add(row: dict) -> None:
        rows.append(row)
        if on_row is not None:
            on_row(row)

    _, _, x_test, y_test = data.load_mnist()
    present = []
    for k in CNN_KINDS:
        if kinds is not None and k.name not in kinds:
            continue
        why = missing_reason(k, models_dir)
        if why is not None:
            log(f"{k.name}: missing: {why}")
            add(missing_row(k, why))
            continue
        try:
            m = load_model(k, models_dir, x_test, y_test, MAX_DIGITS)
        except (ValueError, TypeError, format2.FormatError) as e:
            log(f"{k.name}: cannot evaluate: {e}")
            add(missing_row(k, f"{k.nnb(models_dir)}: {e}"))
            continue
        log(f"{k.name}: {100 * m.accuracy:.2f}% (reference, 10k), {len(m.blob):,} bytes, "
            f"{m.graph.macs():,} MACs")
        present.append(m)
    if not present:
        return rows
    image, addrs = flash_image(uf2_path, [b for m in present for b in (m.blob, m.inputs)],
                               "bench_cnn.uf2")
    for j, m in enumerate(present):
        m.addr, m.in_addr = addrs[2 * j], addrs[2 * j + 1]
    from vpico import VirtualPico

    with VirtualPico(image, count_flash=count) as pico:
        log(f"virtual Pico up ({image})")
        for m in present:
            log(f"{m.kind.name} at {m.addr:#x}")
            for tier in tiers:
                try:
                    dev = run_cell(pico, m, tier, budget_ms * 1000, count, log,
                                   measure_fallbacks)
                    row = cell_row(m, tier, dev)
                except Exception as e:  # noqa: BLE001 - one failed cell must not stop the others
                    msg = " / ".join(line.strip() for line in str(e).strip().splitlines()[-3:])
                    msg = msg[-400:] or repr(e)
                    log(f"  {tier}: FAILED {type(e).__name__}: {msg}")
                    row = dict(base_row(m.kind, tier, m), error=msg)
                add(row)
    return rows


def table(rows: list[dict]) -> str:
    """The console table: one line per row, failed and missing ones saying why."""
    lines = [(f"{'model':24s} {'tier':6s} {'ms':>9s} {'digits':>6s} {'accuracy':>8s}"
              f" {'MACs':>9s} {'bytes':>8s} {'flash B/inf':>11s} {'RAM B':>7s} {'exact':>5s}")]
    for r in rows:
        name = f"{r['model']:24s} {r.get('tier') or '-':6s}"
        if r.get("missing"):
            lines.append(f"{name} missing: {r['missing']}")
        elif r.get("error"):
            lines.append(f"{name} failed: {r['error']}")
        elif r.get("fallback_of") and r.get("us") is None:
            lines.append(f"{name} not timed: every operator runs the python kernels")
        else:
            flash = "-" if r.get("flash_bytes_read") is None else f"{r['flash_bytes_read']:,}"
            lines.append(f"{name} {r['us'] / 1000:9.2f} {r['digits']:6d}"
                         f" {100 * r['accuracy']:7.2f}% {r['macs']:>9,} {r['model_bytes']:>8,}"
                         f" {flash:>11s} {r['ram_bytes']:>7,} {'yes' if r['exact'] else 'NO':>5s}")
    lines.append("ms: emulated RP2040 at 125 MHz (time.ticks_us), forward() of nn.load's model; "
                 "accuracy: the reference on the 10,000 test images")
    return "\n".join(lines)


def merge_rows(old: list[dict], new: list[dict]) -> list[dict]:
    """old with each CNN row of the same (model, tier) as a row of new replaced by it (in
    its place), new rows without such a row appended."""
    fresh = {(r["model"], r.get("tier")): r for r in new}
    rows = [fresh.pop((r["model"], r.get("tier")), r) if r.get("section") == SECTION else r
            for r in old]
    return rows + [r for r in new if (r["model"], r.get("tier")) in fresh]


def parse_kinds(text: str) -> tuple[str, ...]:
    names = tuple(n for n in text.split(",") if n)
    known = [k.name for k in CNN_KINDS]
    for n in names:
        if n not in known:
            raise ValueError(f"unknown CNN {n!r} (known: {', '.join(known)})")
    return names


def parse_tiers(text: str) -> tuple[str, ...]:
    tiers = tuple(t for t in text.split(",") if t)
    for t in tiers:
        if t not in TIERS:
            raise ValueError(f"unknown tier {t!r} (known: {', '.join(TIERS)})")
    return tiers


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", type=Path, default=ROOT / "build" / "models")
    ap.add_argument("--uf2", type=Path, default=ROOT / "build" / "PICO" / "firmware.uf2")
    ap.add_argument("--tiers", default="c,viper", help="comma-separated (default c,viper)")
    ap.add_argument("--budget-ms", type=float, default=300.0,
                    help="emulated ms per cell that sets the digit count (default 300)")
    ap.add_argument("--no-count", action="store_true", help="no flash-read counting")
    ap.add_argument("--measure-fallbacks", action="store_true",
                    help="time viper cells whose operators all run the python kernels")
    ap.add_argument("--kinds", default=None,
                    help="comma-separated CNN names (default: every kind of CNN_KINDS)")
    ap.add_argument("--update", type=Path, default=None, metavar="DIR",
                    help="put the rows into DIR/bench.json in place of the CNN rows of the "
                         "same model and tier (then `tools/report.py --readme README.md "
                         "--section cnn`)")
    ap.add_argument("--json", type=Path, help="write the rows as JSON")
    a = ap.parse_args(argv)
    try:
        tiers = parse_tiers(a.tiers)
        kinds = None if a.kinds is None else parse_kinds(a.kinds)
    except ValueError as e:
        ap.error(str(e))
    if a.update is not None and not (a.update / "bench.json").is_file():
        ap.error(f"--update: no {a.update / 'bench.json'} (run `make bench-cnn` first)")
    if not a.uf2.is_file():
        print(f"bench_cnn: no firmware at {a.uf2}: run `make firmware BOARD=PICO`",
              file=sys.stderr)
        return 1

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    rows = run_all(a.models, a.uf2, tiers, a.budget_ms, not a.no_count, log,
                   measure_fallbacks=a.measure_fallbacks, kinds=kinds)
    print(table(rows))
    if a.json:
        a.json.write_text(json.dumps(rows, indent=1) + "\n")
    if a.update is not None:
        import report

        old, meta = report.read_rows(a.update)
        report.write_rows(merge_rows(old, [r for r in rows if not r.get("error")]), meta,
                          a.update)
    return 0 if all("error" not in r and r.get("exact", True) for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
