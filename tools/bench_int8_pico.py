"""MLPerf Tiny's int8 models on the virtual Pico through `_nn_c.graph_run` (the C tier).

    .venv/bin/python tools/bench_int8_pico.py [--inputs 3] [--per-op] [--no-count]
        [--uf2 build/PICO/firmware.uf2] [--json FILE] [FILE.tflite ...]

Each model (by default MLPerf Tiny's four int8 reference models in $PICONN_MLPERF_TINY) is
imported with `piconn.tflite.import_tflite` and written as format version 2; the models
go into flash beside the firmware (a UF2 with extra segments from EXTRA_BASE, as
tools/bench.py places its ladder models) and the device reads them in place through
`uctypes.bytearray_at`. On the device, for each of N inputs (bytes of a 16-bit linear
congruential generator, the same on the host), the input is written into a bytearray
arena and one `_nn_c.graph_run(model, arena, 0, n_operators)` runs under
`micropython.heap_lock()`, timed with `time.ticks_us()` (emulated RP2040 at 125 MHz:
the check of the records is included). The output is compared with `int8_ops.run`.
With the flash counter (default), one more inference counts the model bytes read from
flash. `--per-op` also times every operator by itself (one graph_run call each).

Prints one row per model: emulated ms per inference (mean), MACs, cycles per MAC,
flash bytes read per inference, inputs bit-exact.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
for _path in (ROOT / "tools", ROOT / "host"):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

import uf2
from int8_ckernels import MLPERF_TINY, MLPERF_TINY_DIR, GraphModel
from vpico import EMULATED_HZ, VirtualPico

from piconn import format2, int8_ops
from piconn import graph as g
from piconn.tflite import import_tflite

TIERS = ("c", "viper", "python")
EXTRA_BASE = 0x10200000  # past the Pico's 2 MB of firmware (the emulated chip has 16 MB)
SCRATCH_BYTES = 4096  # nn_graph_scratch: the C kernels' static tap-list buffer (BSS)

# The benchmark's short names of MLPerf Tiny's models (int8_ckernels.MLPERF_TINY's keys).
SHORT_NAMES = {"kws": "kws", "vww": "vww", "resnet": "ic", "ad": "ad"}
# TensorFlow Lite Micro on the same emulated chip (raspberrypi/pico-tflmicro, CMSIS-NN
# kernels compiled as plain C for the Cortex-M0+, -O2): us per inference, arena bytes.
TFLM = {"kws": (280_000, 22_820), "vww": (837_000, 100_708), "ic": (1_052_000, 54_980),
        "ad": (18_500, 2_580)}
# TinyMaix's 96x96 VWW MobileNet (sipeed/TinyMaix benchmark.md): 716 ms on an RP2040 at
# 280 MHz, scaled by clock to 125 MHz.
TINYMAIX_VWW_MS_280MHZ = 716
TINYMAIX_VWW_US_125MHZ = round(TINYMAIX_VWW_MS_280MHZ * 1000 * 280 / 125, -4)


def lcg_bytes(seed: int, n: int) -> np.ndarray:
    """n int8 values from the ZX81 generator s' = (75 s + 74) mod 65537 (s from seed):
    small integers on the device too, so the device makes its inputs without allocating
    long ints or receiving them over the console."""
    out = np.empty(n, dtype=np.uint8)
    s = seed
    for i in range(n):
        s = (75 * s + 74) % 65537
        out[i] = s & 0xFF
    return out.view(np.int8)


DEVICE_SETUP = """
import _nn_c, micropython, time, uctypes
def fill(buf, off, n, seed):
    s = seed
    for i in range(n):
        s = (75 * s + 74) % 65537
        buf[off + i] = s & 0xff
"""

DEVICE_RUN = """
import gc
gc.collect()
h0 = gc.mem_alloc()
model = uctypes.bytearray_at({addr}, {size})
heap = gc.mem_alloc() - h0
arena = bytearray({arena})
fill(arena, {in_off}, {in_n}, {seed})
t0 = dt = 0  # (globals made before the heap is locked)
micropython.heap_lock()
t0 = time.ticks_us()
_nn_c.graph_run(model, arena, {first}, {end})
dt = time.ticks_diff(time.ticks_us(), t0)
micropython.heap_unlock()
print(dt, heap, bytes(arena[{out_off}:{out_end}]).hex())
"""

DEVICE_PER_OP = """
model = uctypes.bytearray_at({addr}, {size})
arena = bytearray({arena})
fill(arena, {in_off}, {in_n}, {seed})
ts = []
for k in range({n_ops}):
    t0 = time.ticks_us()
    _nn_c.graph_run(model, arena, k, k + 1)
    ts.append(time.ticks_diff(time.ticks_us(), t0))
print(ts)
"""

# Through nn.load with a kernel tier forced (nn.use_backend): nn.load's time, the heap
# the model object keeps (after a collection: the load's garbage is not the model's), the
# tier of every operator, then one timed forward(). Operators on the python kernels
# allocate, so forward() runs with the collector off (not under heap_lock) and the heap
# it took is measured; if the heap runs out that way, forward() runs again with the
# collector on (allocated bytes unknown: -1).
DEVICE_NN_LOAD = """
import gc, nn
nn.use_backend({tier!r})
gc.collect()
h0 = gc.mem_alloc()
t0 = time.ticks_us()
m = nn.load(uctypes.bytearray_at({addr}, {size}))
dt = time.ticks_diff(time.ticks_us(), t0)
gc.collect()
heap = gc.mem_alloc() - h0
x = bytearray({in_n})
fill(x, 0, {in_n}, {seed})
m._prepare_steps()  # (the operator steps of this tier, built once before the first run)
y = t0 = a0 = a1 = None  # (globals made before the timing)
print(heap, ",".join(sorted(set(m.tiers()))), dt)
"""

DEVICE_NN_RUN = """
gc.collect()
gc.disable()
try:
    a0 = gc.mem_alloc()
    t0 = time.ticks_us()
    y = m.forward(x)
    dt = time.ticks_diff(time.ticks_us(), t0)
    a1 = gc.mem_alloc() - a0
except MemoryError:
    gc.enable()
    gc.collect()
    t0 = time.ticks_us()
    y = m.forward(x)
    dt = time.ticks_diff(time.ticks_us(), t0)
    a1 = -1
gc.enable()
print(dt, a1, bytes(y).hex())
"""


def op_macs(graph: g.Graph, k: int) -> int:
    op = graph.operators[k]
    if op.kind not in (g.CONV_2D, g.DEPTHWISE_CONV_2D, g.FULLY_CONNECTED):
        return 0
    w = graph.tensors[op.inputs[1]].shape
    y = graph.tensors[op.outputs[0]]
    if op.kind == g.CONV_2D:
        return y.size * int(np.prod(w[1:]))
    if op.kind == g.DEPTHWISE_CONV_2D:
        return y.size * w[1] * w[2]
    return y.size * w[1]


class Bench:
    """One model: its graph, version-2 bytes, flash place and the device scripts."""

    def __init__(self, path: Path) -> None:
        self.name = path.name
        self.graph = import_tflite(path)
        self.data = format2.to_bytes(self.graph)
        self.model = GraphModel(self.data)
        if len(self.model.inputs) != 1 or self.model.inputs[0][1] is not np.int8:
            raise ValueError(f"{path.name}: the benchmark feeds one int8 input")
        self.macs = sum(op_macs(self.graph, k) for k in range(len(self.graph.operators)))
        self.addr = 0

    def script(self, template: str, seed: int, first: int = 0, end: int | None = None,
               **extra: object) -> str:
        in_off, _, in_shape = self.model.inputs[0]
        out_off, out_dt, out_shape = self.model.outputs[0]
        n_out = int(np.prod(out_shape)) * np.dtype(out_dt).itemsize
        return template.format(
            addr=self.addr, size=len(self.data), arena=max(self.model.arena_size, 4),
            in_off=in_off, in_n=int(np.prod(in_shape)), seed=seed, first=first,
            end=self.model.n_operators if end is None else end, out_off=out_off,
            out_end=out_off + n_out, n_ops=self.model.n_operators, **extra)

    def reference(self, seed: int) -> np.ndarray:
        shape = self.model.inputs[0][2]
        x = lcg_bytes(seed, int(np.prod(shape))).reshape(shape)
        return int8_ops.run(self.graph, x)


def run(pico: VirtualPico, b: Bench, n_inputs: int, count: bool, per_op: bool,
        log) -> dict:
    us, exact, heap = [], 0, 0
    for k in range(n_inputs):
        seed = 1 + 977 * k
        out = pico.run_script(DEVICE_SETUP + b.script(DEVICE_RUN, seed), timeout=1800)
        t, h, hexed = out.split()
        heap = int(h)
        want = b.reference(seed)
        got = np.frombuffer(bytes.fromhex(hexed), want.dtype).reshape(want.shape)
        exact += bool(np.array_equal(got, want))
        us.append(int(t))
        log(f"  input {k}: {int(t) / 1000:.2f} ms, bit-exact {np.array_equal(got, want)}")
    row = {"model": b.name, "ms": round(float(np.mean(us)) / 1000, 3),
           "ms_each": [u / 1000 for u in us], "macs": b.macs,
           "cycles_per_mac": round(float(np.mean(us)) * EMULATED_HZ / 1e6 / b.macs, 2),
           "inputs": n_inputs, "bit_exact": exact, "model_bytes": len(b.data),
           "arena_bytes": b.model.arena_size, "model_heap_bytes": heap,
           "flash_bytes_read": None,
           "ram_bytes": b.model.arena_size + SCRATCH_BYTES + heap}
    if count:
        pico.count_on(b.addr, b.addr + len(b.data))
        pico.run_script(DEVICE_SETUP + b.script(DEVICE_RUN, 1), timeout=3600)
        row["flash_bytes_read"] = pico.count_off()
        log(f"  flash bytes read per inference: {row['flash_bytes_read']:,}")
    if per_op:
        ts = json.loads(pico.run_script(DEVICE_SETUP + b.script(DEVICE_PER_OP, 1), timeout=1800))
        row["per_op_us"] = [{"kind": op.kind, "us": t, "macs": op_macs(b.graph, k)}
                            for k, (op, t) in enumerate(zip(b.graph.operators, ts))]
    return row


def run_nn(pico: VirtualPico, b: Bench, tier: str, count: bool, log) -> dict:
    """One input through nn.load with `tier` forced (one timed forward, the heap it takes
    measured); a row like `run`'s (flash bytes counted over that inference, the model
    object's heap measured)."""
    seed = 1
    heap, tiers, load_us = pico.run_script(
        DEVICE_SETUP + b.script(DEVICE_NN_LOAD, seed, tier=tier),
        timeout=1800).split()
    if count:
        pico.count_on(b.addr, b.addr + len(b.data))
    try:
        out = pico.run_script(DEVICE_NN_RUN, timeout=3600, soft_reset=False)
    finally:
        flash = pico.count_off() if count else None
    t, alloc, hexed = out.split()
    if int(alloc) < 0:
        flash = None  # (counted over the attempt that ran out of heap too)
    want = b.reference(seed)
    got = np.frombuffer(bytes.fromhex(hexed), want.dtype).reshape(want.shape)
    exact = bool(np.array_equal(got, want))
    log(f"  {tier}: {int(t) / 1000:.2f} ms, bit-exact {exact}, operator tiers {tiers}, "
        f"nn.load {int(load_us) / 1000:.1f} ms keeping {int(heap):,} B, "
        f"allocated {alloc} B in forward()"
        + ("" if flash is None else f", flash bytes read {flash:,}"))
    return {"model": b.name, "ms": int(t) / 1000, "ms_each": [int(t) / 1000],
            "macs": b.macs, "cycles_per_mac": round(int(t) * EMULATED_HZ / 1e6 / b.macs, 2),
            "inputs": 1, "bit_exact": int(exact), "model_bytes": len(b.data),
            "arena_bytes": b.model.arena_size, "model_heap_bytes": int(heap),
            "flash_bytes_read": flash, "operator_tiers": tiers.split(","),
            "forward_alloc_bytes": None if int(alloc) < 0 else int(alloc),
            "load_ms": int(load_us) / 1000,
            # the model object holds the arena; the C kernels add their static scratch
            "ram_bytes": int(heap) + (SCRATCH_BYTES if "c" in tiers.split(",") else 0)}


def table(rows: list[dict]) -> str:
    head = (f"{'model':32s} {'ms':>9s} {'MACs':>12s} {'cycles/MAC':>10s}"
            f" {'flash B/inference':>18s} {'bit-exact':>9s}")
    lines = [head]
    for r in rows:
        name = f"{r['model']} [{r.get('tier', 'c')}]"
        if "error" in r:
            lines.append(f"{name:32s} failed: {r['error']}")
            continue
        flash = "-" if r["flash_bytes_read"] is None else f"{r['flash_bytes_read']:,}"
        lines.append(f"{name:32s} {r['ms']:9.2f} {r['macs']:>12,} {r['cycles_per_mac']:>10.2f}"
                     f" {flash:>18s} {str(r['bit_exact']) + '/' + str(r['inputs']):>9s}")
    lines.append("ms: emulated RP2040 at 125 MHz (time.ticks_us); c: one graph_run call per "
                 "inference, other tiers: one nn.load model's forward()")
    return "\n".join(lines)


def short_name(path: Path) -> str:
    """kws, vww, ic or ad for MLPerf Tiny's files; the file's stem otherwise."""
    by_file = {f: SHORT_NAMES[k] for k, f in MLPERF_TINY.items()}
    return by_file.get(path.name, path.stem)


def bench_row(row: dict, tier: str = "c") -> dict:
    """A row of `run` or `run_nn` as a row of build/bench.json (section "int8"): emulated
    us per inference, RAM (arena + the C kernels' scratch + the model object's heap) and
    the TFLite Micro figures of the same model."""
    model, tier = short_name(Path(row["model"])), row.get("tier", tier)
    tflm_us, tflm_arena = TFLM.get(model, (None, None))
    if "error" in row:
        return {"section": "int8", "model": model, "kind": "int8", "tier": tier,
                "file": row["model"], "us": None, "macs": row["macs"],
                "model_bytes": row["model_bytes"], "arena_bytes": row["arena_bytes"],
                "exact": None, "error": row["error"], "tflm_us": tflm_us,
                "tflm_arena_bytes": tflm_arena}
    heap = row.get("model_heap_bytes") or 0
    out = {"section": "int8", "model": model, "kind": "int8", "tier": tier,
           "file": row["model"], "us": round(row["ms"] * 1000, 1),
           "us_each": [round(m * 1000, 1) for m in row["ms_each"]], "inputs": row["inputs"],
           "macs": row["macs"], "cycles_per_mac": row["cycles_per_mac"],
           "model_bytes": row["model_bytes"], "arena_bytes": row["arena_bytes"],
           "scratch_bytes": SCRATCH_BYTES if "c" in row.get("operator_tiers", ["c"]) else 0,
           "model_heap_bytes": heap,
           "ram_bytes": row["ram_bytes"],
           "flash_bytes_read": row["flash_bytes_read"],
           "exact": row["bit_exact"] == row["inputs"],
           "tflm_us": tflm_us, "tflm_arena_bytes": tflm_arena}
    for k in ("operator_tiers", "forward_alloc_bytes", "load_ms"):
        if k in row:
            out[k] = row[k]
    if model == "vww":
        out["tinymaix_us"] = TINYMAIX_VWW_US_125MHZ
    return out


def default_paths() -> list[Path]:
    return [MLPERF_TINY_DIR / f for f in MLPERF_TINY.values()]


def check_inputs(paths: list[Path], uf2_path: Path) -> str | None:
    """Why the benchmark cannot run (a missing model or firmware), or None."""
    missing = [p for p in paths if not p.is_file()]
    if missing:
        return f"no {missing[0]} (set PICONN_MLPERF_TINY)"
    if not uf2_path.is_file():
        return f"no firmware at {uf2_path}: run `make firmware BOARD=PICO`"
    return None


def run_all(paths: list[Path], uf2_path: Path, n_inputs: int, count: bool, per_op: bool,
            log, tiers: tuple[str, ...] = ("c",), on_row=None) -> list[dict]:
    """Every model on one virtual Pico (the firmware plus the models in flash), each tier
    of `tiers`: "c" through `run` (n_inputs inputs), any other through `run_nn` (one
    input); the rows, each with its "tier". on_row(row) is called after each row.
    RuntimeError if the firmware has no graph_run."""
    benches = [Bench(p) for p in paths]
    layout = uf2.segment_layout([len(b.data) for b in benches], EXTRA_BASE)
    for b, (addr, _) in zip(benches, layout):
        b.addr = addr
    image = uf2_path.parent / "bench_int8.uf2"
    image.write_bytes(uf2.with_segments(uf2_path.read_bytes(),
                                        [(b.addr, b.data) for b in benches]))
    rows = []
    with VirtualPico(image, count_flash=count) as pico:
        log(f"virtual Pico up ({image})")
        if pico.eval("hasattr(__import__('_nn_c'), 'graph_run')") != "True":
            raise RuntimeError("the firmware's _nn_c has no graph_run")
        for b in benches:
            log(f"{b.name}: {len(b.data):,} bytes at {b.addr:#x}, arena {b.model.arena_size:,}")
            for tier in tiers:
                try:
                    if tier == "c":
                        row = run(pico, b, n_inputs, count, per_op, log)
                    else:
                        row = run_nn(pico, b, tier, count, log)
                except Exception as e:  # noqa: BLE001 - one failed cell must not stop the others
                    # the device's traceback: where it failed and the message
                    msg = " / ".join(line.strip() for line in str(e).strip().splitlines()[-3:])
                    msg = msg[-400:] or repr(e)
                    log(f"  {tier}: FAILED {type(e).__name__}: {msg}")
                    row = {"model": b.name, "macs": b.macs, "model_bytes": len(b.data),
                           "arena_bytes": b.model.arena_size, "error": msg}
                rows.append(dict(row, tier=tier))
                if on_row is not None:
                    on_row(rows[-1])
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("models", nargs="*", type=Path,
                    help=".tflite files (default: MLPerf Tiny's four int8 models)")
    ap.add_argument("--uf2", type=Path, default=ROOT / "build" / "PICO" / "firmware.uf2")
    ap.add_argument("--inputs", type=int, default=3, help="inputs per model (default 3)")
    ap.add_argument("--per-op", action="store_true", help="also time every operator alone")
    ap.add_argument("--no-count", action="store_true", help="no flash-read counting")
    ap.add_argument("--tiers", default="c",
                    help="comma-separated tiers (default c; viper, python: one input each "
                         "through nn.load)")
    ap.add_argument("--json", type=Path, help="write the rows as JSON")
    a = ap.parse_args(argv)
    a.tiers = tuple(t for t in a.tiers.split(",") if t)
    for t in a.tiers:
        if t not in TIERS:
            ap.error(f"unknown tier {t!r} (known: {', '.join(TIERS)})")
    if a.inputs < 1:
        ap.error("--inputs must be >= 1")
    paths = a.models or default_paths()
    why = check_inputs(paths, a.uf2)
    if why:
        print(f"bench_int8_pico: {why}", file=sys.stderr)
        return 1

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    try:
        rows = run_all(paths, a.uf2, a.inputs, not a.no_count, a.per_op, log, a.tiers)
    except RuntimeError as e:
        print(f"bench_int8_pico: {e}", file=sys.stderr)
        return 1
    print(table(rows))
    if a.json:
        a.json.write_text(json.dumps(rows, indent=1) + "\n")
    return 0 if all("error" not in r and r["bit_exact"] == r["inputs"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
