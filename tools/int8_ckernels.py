"""The int8 graph runner of device/c/nn_c (nn_graph.c + nn_int8.c) on the host and on an
emulated Cortex-M0+.

The same sources that go into the firmware's `_nn_c.graph_run` are compiled with the
host's C compiler into a shared library (called through ctypes), or with
arm-none-eabi-gcc for the Cortex-M0+ and executed on the rp2040py core (the model in
emulated flash, the arena in SRAM), where every operator's cycles are counted:

    g = HostGraph()                       # or M0Graph()
    y = g.run(model, x)                   # model: version-2 bytes; x: the graph input(s)
    g.check(model, len(arena), 0, n_ops)  # nn_graph_check's code (0: runnable)

    python tools/int8_ckernels.py [FILE.tflite ...]   # cycles per operator on the M0+ core
"""

from __future__ import annotations

import argparse
import ctypes
import hashlib
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
SRC_DIR = ROOT / "device" / "c" / "nn_c"
SOURCES = [SRC_DIR / "nn_graph.c", SRC_DIR / "nn_int8.c", SRC_DIR / "nn_xnor_graph.c",
           SRC_DIR / "nn_kernels.c",  # (the binary operators use nn_kernels' popcount)
           SRC_DIR / "nn_float.c"]
HEADERS = [SRC_DIR / "nn_graph.h", SRC_DIR / "nn_int8.h", SRC_DIR / "arch_armv6m_int8.h",
           SRC_DIR / "nn_xnor_graph.h", SRC_DIR / "nn_kernels.h", SRC_DIR / "arch_armv6m.h",
           SRC_DIR / "nn_float.h"]
HOST_CFLAGS = ["-O2", "-Wall", "-Wextra", "-Werror", "-shared", "-fPIC", "-ffp-contract=off"]
ARM_CC = "arm-none-eabi-gcc"
ARM_CFLAGS = ["-mcpu=cortex-m0plus", "-mthumb", "-Wall", "-Wextra", "-Werror",
              "-ffunction-sections", "-fno-common", "-ffp-contract=off"]
CACHE = Path(tempfile.gettempdir()) / "piconn-int8-ckernels"
MLPERF_TINY_DIR = Path(os.environ.get("PICONN_MLPERF_TINY")
                       or ROOT.parent / "shared" / "models" / "mlperf-tiny")
MLPERF_TINY = {"kws": "kws_ref_model.tflite", "vww": "vww_96_int8.tflite",
               "resnet": "pretrainedResnet_quant.tflite", "ad": "ad01_int8.tflite"}

# docs/FORMAT.md "Version 2": the fields read here.
_HEADER = struct.Struct("<4sHHIIHHHHIIIIBBH4H4HI")
_TENSOR = struct.Struct("<BBBB4HIIfiIHHI")
_DTYPES = {1: np.float32, 3: np.int32, 4: np.int8}
NO_INDEX = 0xFFFF

# nn_graph.h's NN_GRAPH_E_* codes, in order.
ERRORS = ("ok", "header", "model size", "arena", "range", "kind", "index", "tensor", "shape",
          "params", "table")


class GraphModel:
    """What a caller of nn_graph_run needs from a version-2 file: the arena size, the
    operator count and the arena place, dtype and shape of every graph input and output."""

    def __init__(self, data: bytes) -> None:
        h = _HEADER.unpack_from(data, 0)
        if h[0] != b"PCNN" or h[1] != 2:
            raise ValueError("not a version-2 piconn model")
        self.data = bytes(data)
        self.n_tensors, self.n_operators = h[5], h[6]
        self.arena_size = h[12]
        n_in, n_out = h[13], h[14]
        self.inputs = [self.tensor(i) for i in h[16:16 + n_in]]
        self.outputs = [self.tensor(i) for i in h[20:20 + n_out]]

    def tensor(self, index: int) -> tuple[int, type, tuple[int, ...]]:
        """(arena offset, numpy dtype, shape) of tensor `index`."""
        t = _TENSOR.unpack_from(self.data, 64 + 40 * index)
        return t[8], _DTYPES[t[0]], tuple(t[4:4 + t[1]])

    def arena_with(self, xs) -> np.ndarray:
        """A zeroed arena (uint8, 4-byte aligned) with the graph inputs written in."""
        xs = list(xs) if isinstance(xs, (list, tuple)) else [xs]
        if len(xs) != len(self.inputs):
            raise ValueError(f"the model takes {len(self.inputs)} inputs, got {len(xs)}")
        arena = np.zeros(max(self.arena_size, 4), dtype=np.uint8)
        for (off, dt, shape), x in zip(self.inputs, xs):
            x = np.ascontiguousarray(x, dtype=dt).reshape(-1)
            if x.size != int(np.prod(shape)):
                raise ValueError(f"input of {x.size} elements, the model takes {shape}")
            arena[off:off + x.nbytes] = x.view(np.uint8)
        return arena

    def outputs_of(self, arena: np.ndarray):
        outs = [arena[off:off + int(np.prod(shape)) * np.dtype(dt).itemsize].view(dt)
                .reshape(shape).copy() for off, dt, shape in self.outputs]
        return outs[0] if len(outs) == 1 else tuple(outs)


def _digest(*extra: str) -> str:
    h = hashlib.sha256()
    for p in SOURCES + HEADERS:
        if p.exists():
            h.update(p.read_bytes())
    for e in extra:
        h.update(e.encode())
    return h.hexdigest()[:16]


def _compile(cmd_head: list[str], out: Path, tail: list[str]) -> Path:
    if not out.exists():
        CACHE.mkdir(exist_ok=True)
        tmp = out.with_suffix(f".{os.getpid()}.tmp")
        cmd = [*cmd_head, *map(str, SOURCES), "-o", str(tmp), *tail]
        r = subprocess.run(cmd, check=False, capture_output=True, text=True)
        if r.returncode:
            raise RuntimeError(f"compile failed: {' '.join(cmd)}\n{r.stderr}")
        tmp.replace(out)
    return out


class HostGraph:
    """nn_graph.c and nn_int8.c compiled for the host, called through ctypes."""

    def __init__(self, cflags: list[str] | None = None) -> None:
        cc = os.environ.get("CC") or shutil.which("gcc") or shutil.which("cc")
        if not cc:
            raise RuntimeError("no host C compiler (gcc/cc) found")
        flags = HOST_CFLAGS + list(cflags or [])
        lib = _compile([cc, *flags], CACHE / f"nn_graph-{_digest(cc, *flags)}.so", [])
        self.lib = ctypes.CDLL(str(lib))
        p, u = ctypes.c_void_p, ctypes.c_uint32
        self.lib.nn_graph_check.argtypes = [p, u, u, u, u, ctypes.POINTER(u)]
        self.lib.nn_graph_check.restype = u
        self.lib.nn_graph_run.argtypes = [p, p, u, u]
        self.lib.nn_graph_run.restype = None
        for name in ("nn_i8_mbqm", "nn_i8_srdhm"):
            getattr(self.lib, name).argtypes = [ctypes.c_int32] * 3 if name == "nn_i8_mbqm" \
                else [ctypes.c_int32] * 2
            getattr(self.lib, name).restype = ctypes.c_int32
        self.lib.nn_i8_rdbpot.argtypes = [ctypes.c_int32, u]
        self.lib.nn_i8_rdbpot.restype = ctypes.c_int32

    def call(self, name: str, *args: int) -> int:
        """One of the arithmetic functions (nn_i8_mbqm, nn_i8_srdhm, nn_i8_rdbpot)."""
        return int(getattr(self.lib, name)(*args))

    @staticmethod
    def _aligned(data: bytes) -> np.ndarray:
        buf = np.zeros(len(data) + 8, dtype=np.uint8)
        off = (-buf.ctypes.data) % 8
        view = buf[off:off + len(data)]
        view[:] = np.frombuffer(data, dtype=np.uint8)
        return view

    def check(self, data: bytes, arena_len: int, first: int, end: int,
              model_len: int | None = None) -> tuple[int, int]:
        """(NN_GRAPH_E_* code, operator index) of nn_graph_check."""
        m = self._aligned(data)
        at = ctypes.c_uint32(0)
        code = self.lib.nn_graph_check(m.ctypes.data, len(data) if model_len is None
                                       else model_len, arena_len, first, end,
                                       ctypes.byref(at))
        return code, at.value

    def run(self, data: bytes, x, first: int = 0, end: int | None = None, keep_arena=False):
        """The graph outputs for input(s) x (checked first: ValueError names the problem)."""
        model = GraphModel(data)
        end = model.n_operators if end is None else end
        arena = model.arena_with(x)
        code, at = self.check(data, arena.size, first, end)
        if code:
            raise ValueError(f"nn_graph_check: {ERRORS[code]} (operator {at})")
        m = self._aligned(data)
        self.lib.nn_graph_run(m.ctypes.data, arena.ctypes.data, first, end)
        return (model.outputs_of(arena), arena) if keep_arena else model.outputs_of(arena)


# ---------------------------------------------------------------------------
# The emulated Cortex-M0+

RAM = 0x20000000
FLASH = 0x10000000  # the model goes to (emulated) flash, as on the Pico
CODE_MAX = 0xC000  # code, data and the scratch buffer at the start of SRAM
ARENA = RAM + CODE_MAX
STACK_TOP = RAM + 0x41000
BKPT_ADDR = RAM + 0x41800  # the return address: a BKPT instruction

_LD = """
MEMORY { RAM (rwx) : ORIGIN = 0x20000000, LENGTH = 0xC000 }
SECTIONS {
  .text : { *(.text*) *(.time_critical*) *(.rodata*) } > RAM
  .data : { *(.data*) } > RAM
  .bss : { *(.bss*) *(COMMON) } > RAM
  /DISCARD/ : { *(.ARM.exidx*) *(.ARM.attributes) *(.comment) }
}
"""


def have_arm_toolchain() -> bool:
    return shutil.which(ARM_CC) is not None


def build_m0_elf(opt: str = "-O2", asm: bool = True) -> Path:
    """Compile and link the runner for the M0+ at the start of SRAM (cached)."""
    if not have_arm_toolchain():
        raise RuntimeError(f"{ARM_CC} not found (apt-get install gcc-arm-none-eabi)")
    flags = ARM_CFLAGS + [opt] + ([] if asm else ["-DNN_NO_ASM"])
    CACHE.mkdir(exist_ok=True)
    ld = CACHE / "m0.ld"
    ld.write_text(_LD)
    elf = CACHE / f"nn_graph-m0-{_digest(ARM_CC, *flags)}.elf"
    return _compile([ARM_CC, *flags], elf, ["-nostdlib", "-nostartfiles", f"-T{ld}",
                                            "-Wl,--no-gc-sections", "-lc", "-lgcc"])


class M0Graph:
    """The runner as M0+ machine code on an rp2040py core; `run` mirrors HostGraph.run.

    `op_cycles` holds the cycles of each operator of the last run (each a separate call of
    nn_graph_run). The emulator charges flash reads like SRAM reads and has no XIP cache.
    """

    def __init__(self, opt: str = "-O2", asm: bool = True) -> None:
        from rp2040py import RP2040

        elf = build_m0_elf(opt, asm)
        out = subprocess.run(["arm-none-eabi-nm", str(elf)], capture_output=True, text=True,
                             check=True).stdout
        self.syms = {p[2]: int(p[0], 16) for p in (line.split() for line in out.splitlines())
                     if len(p) == 3}
        binf = elf.with_suffix(".bin")
        if not binf.exists():
            subprocess.run(["arm-none-eabi-objcopy", "-O", "binary", str(elf), str(binf)],
                           check=True)
        image = binf.read_bytes()
        end = max(v for k, v in self.syms.items() if k in ("nn_graph_scratch",)) + 4096
        if len(image) > CODE_MAX or end > ARENA:
            raise RuntimeError(f"runner image of {len(image)} bytes does not fit")
        self.rp = RP2040()
        self.rp.sram[0:len(image)] = image
        off = BKPT_ADDR - RAM
        self.rp.sram[off:off + 2] = struct.pack("<H", 0xBE00)  # bkpt #0
        self._broke = False
        self.rp.on_break = self._on_break
        self.op_cycles: list[int] = []
        self.max_instructions = 2_000_000_000
        self._model: bytes | None = None

    def _on_break(self, code: int) -> None:
        self._broke = True

    def _call(self, name: str, *words: int) -> tuple[int, int]:
        """Call a function with word arguments; (r0, cycles)."""
        core, sram = self.rp.core, self.rp.sram
        extra = words[4:]
        sp = (STACK_TOP - 4 * len(extra)) & ~7
        for k, v in enumerate(extra):
            sram[sp - RAM + 4 * k:sp - RAM + 4 * k + 4] = struct.pack("<I", v & 0xFFFFFFFF)
        for k, v in enumerate(words[:4]):
            core.registers[k] = v & 0xFFFFFFFF
        core.sp = sp
        core.lr = BKPT_ADDR | 1
        core.pc = self.syms[name] & ~1
        self._broke = False
        c0 = core.cycles
        n = 0
        step = core.execute_instruction
        while not self._broke:
            step()
            n += 1
            if n > self.max_instructions:
                raise RuntimeError(f"{name} did not return")
        if core.sp != sp:
            raise RuntimeError(f"{name} returned with a different stack pointer")
        return core.registers[0], core.cycles - c0 - 1  # minus the bkpt

    def call(self, name: str, *args: int) -> int:
        """A function of word arguments returning int32 (nn_i8_mbqm, ...)."""
        r0, _ = self._call(name, *args)
        return r0 - (1 << 32) if r0 & 0x80000000 else r0

    def _load(self, data: bytes) -> None:
        if self._model != data:
            self.rp.flash[0:len(data)] = data
            self._model = bytes(data)

    def check(self, data: bytes, arena_len: int, first: int, end: int) -> tuple[int, int]:
        self._load(data)
        at_addr = STACK_TOP + 0x100
        code, _ = self._call("nn_graph_check", FLASH, len(data), arena_len, first, end, at_addr)
        at = struct.unpack_from("<I", bytes(self.rp.sram[at_addr - RAM:at_addr - RAM + 4]))[0]
        return code, at

    def run(self, data: bytes, x, first: int = 0, end: int | None = None):
        model = GraphModel(data)
        end = model.n_operators if end is None else end
        arena = model.arena_with(x)
        if ARENA + arena.size > STACK_TOP - 0x2000:
            raise MemoryError("the arena does not fit in emulated SRAM")
        code, at = self.check(data, arena.size, first, end)
        if code:
            raise ValueError(f"nn_graph_check: {ERRORS[code]} (operator {at})")
        sram = self.rp.sram
        sram[ARENA - RAM:ARENA - RAM + arena.size] = arena.tobytes()
        self.op_cycles = []
        for k in range(first, end):
            _, cycles = self._call("nn_graph_run", FLASH, ARENA, k, k + 1)
            self.op_cycles.append(cycles)
        arena[:] = np.frombuffer(bytes(sram[ARENA - RAM:ARENA - RAM + arena.size]), np.uint8)
        return model.outputs_of(arena)


# ---------------------------------------------------------------------------
# Command line: cycles per operator of MLPerf Tiny's models on the M0+ core


def _macs(graph, k: int) -> int:
    from piconn import graph as g

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


def main(argv: list[str] | None = None) -> int:
    sys.path.insert(0, str(ROOT / "host"))
    from piconn import format2, int8_ops
    from piconn.tflite import import_tflite

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("models", nargs="*", help=".tflite files (default: MLPerf Tiny's four)")
    ap.add_argument("--no-asm", action="store_true", help="the portable C loops")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args(argv)
    paths = [Path(m) for m in a.models] or [MLPERF_TINY_DIR / f for f in MLPERF_TINY.values()]
    m0 = M0Graph(asm=not a.no_asm)
    for path in paths:
        graph = import_tflite(path)
        data = format2.to_bytes(graph)
        t = graph.tensors[graph.inputs[0]]
        rng = np.random.default_rng(a.seed)
        x = rng.integers(-128, 128, size=t.shape, dtype=np.int8)
        wall = time.perf_counter()
        y = m0.run(data, x)
        wall = time.perf_counter() - wall
        ok = np.array_equal(y, int8_ops.run(graph, x))
        total = sum(m0.op_cycles)
        macs = sum(_macs(graph, k) for k in range(len(graph.operators)))
        print(f"{path.name}: {total:,} cycles = {total / 125e3:.2f} ms at 125 MHz, {macs:,} MACs,"
              f" {total / max(macs, 1):.2f} cycles/MAC, bit-exact {ok} ({wall:.0f} s wall)")
        for k, (op, c) in enumerate(zip(graph.operators, m0.op_cycles)):
            m = _macs(graph, k)
            per = f"{c / m:6.2f} c/MAC" if m else ""
            print(f"  {k:3d} {op.kind:18s} {c:12,d} {per}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
