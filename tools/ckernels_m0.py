"""Run the C kernels as Cortex-M0+ machine code on an emulated RP2040 core.

device/c/nn_c/nn_kernels.c is compiled with arm-none-eabi-gcc exactly as for the
firmware (-mcpu=cortex-m0plus -mthumb, with the hand-written Thumb loops), linked
bare-metal into SRAM and called on the rp2040py core with the AAPCS, so tests can
check the real machine code against numpy and the benchmark can count its cycles.
Floats use libgcc's soft-float here, not the RP2040 ROM routines the firmware uses,
so float cycle counts are not the firmware's (measure those on the virtual Pico).

    python tools/ckernels_m0.py            # cycles per kernel on MNIST-sized layers
    python tools/ckernels_m0.py --no-asm   # the same with the portable C loops
"""

from __future__ import annotations

import argparse
import os
import shutil
import struct
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ckernels_host import SIGS, SOURCES, At, source_hash

ARM_CC = "arm-none-eabi-gcc"
ARM_CFLAGS = ["-mcpu=cortex-m0plus", "-mthumb", "-Wall", "-Wextra", "-Werror",
              "-ffunction-sections", "-fno-common", "-ffp-contract=off"]
RAM = 0x20000000
FLASH = 0x10000000  # input arrays go to (emulated) flash, like the model's weights
CODE_MAX = 0x8000  # code and constants at the start of SRAM
HEAP = RAM + CODE_MAX
STACK_TOP = RAM + 0x41000
BKPT_ADDR = RAM + 0x41800  # the return address: a BKPT instruction
MHZ = 125

_LD = """
MEMORY { RAM (rwx) : ORIGIN = 0x20000000, LENGTH = 0x8000 }
SECTIONS {
  .text : { KEEP(*(.text.nn_*)) *(.text*) *(.time_critical*) *(.rodata*) } > RAM
  .data : { *(.data*) } > RAM
  .bss : { *(.bss*) *(COMMON) } > RAM
  /DISCARD/ : { *(.ARM.exidx*) *(.ARM.attributes) *(.comment) }
}
"""


def have_toolchain() -> bool:
    return shutil.which(ARM_CC) is not None


def build_elf(opt: str = "-O2", asm: bool = True) -> Path:
    """Compile and link the kernels for the M0+ at the start of SRAM (cached)."""
    if not have_toolchain():
        raise RuntimeError(f"{ARM_CC} not found (apt-get install gcc-arm-none-eabi "
                           "libnewlib-arm-none-eabi)")
    flags = ARM_CFLAGS + [opt] + ([] if asm else ["-DNN_NO_ASM"])
    out_dir = Path(tempfile.gettempdir()) / "piconn-ckernels"
    out_dir.mkdir(exist_ok=True)
    elf = out_dir / f"nn_kernels-m0-{source_hash(ARM_CC, *flags)}.elf"
    if not elf.exists():
        ld = out_dir / "m0.ld"
        ld.write_text(_LD)
        tmp = elf.with_suffix(f".{os.getpid()}.tmp")
        cmd = [ARM_CC, *flags, *map(str, SOURCES), "-nostdlib", "-nostartfiles",
               f"-T{ld}", "-Wl,--no-gc-sections", "-o", str(tmp), "-lc", "-lgcc"]
        r = subprocess.run(cmd, check=False, capture_output=True, text=True)
        if r.returncode:
            raise RuntimeError(f"ARM compile failed: {' '.join(cmd)}\n{r.stderr}")
        tmp.replace(elf)
    return elf


def _symbols(elf: Path) -> dict[str, int]:
    out = subprocess.run(["arm-none-eabi-nm", str(elf)], capture_output=True, text=True,
                         check=True).stdout
    syms = {}
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 3:
            syms[parts[2]] = int(parts[0], 16)
    return syms


def _image(elf: Path) -> bytes:
    binf = elf.with_suffix(".bin")
    if not binf.exists():
        subprocess.run(["arm-none-eabi-objcopy", "-O", "binary", str(elf), str(binf)],
                       check=True)
    return binf.read_bytes()


class M0Kernels:
    """The kernels as M0+ code on an rp2040py core; `call` mirrors HostKernels.call.

    Input arrays are copied into emulated flash (as the weights are read from flash on
    the Pico; the emulator times flash reads like SRAM reads), output arrays into SRAM
    and back out after the call, so outputs appear in place as with ctypes. `last_cycles` holds the
    cycles of the last call (from the first instruction to the return).
    """

    def __init__(self, opt: str = "-O2", asm: bool = True) -> None:
        from rp2040py import RP2040

        self.elf = build_elf(opt, asm)
        self.syms = _symbols(self.elf)
        image = _image(self.elf)
        if len(image) > CODE_MAX:
            raise RuntimeError(f"kernel image of {len(image)} bytes does not fit")
        self.rp = RP2040()
        self.rp.sram[0:len(image)] = image
        off = BKPT_ADDR - RAM
        self.rp.sram[off:off + 2] = struct.pack("<H", 0xBE00)  # bkpt #0
        self._broke = False
        self.rp.on_break = self._on_break
        self.last_cycles = 0
        self.max_instructions = 200_000_000

    def _on_break(self, code: int) -> None:
        self._broke = True

    def call(self, name: str, *args):
        kinds, ret = SIGS[name]
        if len(args) != len(kinds):
            raise TypeError(f"{name} takes {len(kinds)} arguments, got {len(args)}")
        sram, flash = self.rp.sram, self.rp.flash
        heap, rom = HEAP, FLASH
        words: list[int] = []
        copies: list[tuple[np.ndarray, int]] = []
        for kind, a in zip(kinds, args):
            if kind not in "po":
                words.append(int(a) & 0xFFFFFFFF)
            elif a is None:
                words.append(0)
            else:
                mis = 0
                if isinstance(a, At):
                    a, mis = a.array, a.misalign % 4
                if not (isinstance(a, np.ndarray) and a.flags.c_contiguous):
                    raise TypeError("pointer arguments must be C-contiguous numpy arrays")
                same = [addr for b, addr in copies if b is a]
                if same and not mis:  # the same output array twice: one buffer
                    words.append(same[0])
                    continue
                raw = a.view(np.uint8).reshape(-1).tobytes()
                if kind == "p":
                    rom += mis
                    flash[rom - FLASH:rom - FLASH + len(raw)] = raw
                    words.append(rom)
                    rom = (rom + len(raw) + 7) & ~7
                    continue
                heap += mis
                if heap + len(raw) > STACK_TOP - 0x1000:
                    raise MemoryError("output arrays do not fit in emulated SRAM")
                sram[heap - RAM:heap - RAM + len(raw)] = raw
                words.append(heap)
                copies.append((a, heap))
                heap = (heap + len(raw) + 7) & ~7
        core = self.rp.core
        extra = words[4:]
        sp = (STACK_TOP - 4 * len(extra)) & ~7
        for k, v in enumerate(extra):
            sram[sp - RAM + 4 * k:sp - RAM + 4 * k + 4] = struct.pack("<I", v)
        for k, v in enumerate(words[:4]):
            core.registers[k] = v
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
        self.last_cycles = core.cycles - c0 - 1  # minus the bkpt
        for a, addr in copies:
            a.view(np.uint8).reshape(-1)[:] = np.frombuffer(
                bytes(sram[addr - RAM:addr - RAM + a.nbytes]), dtype=np.uint8)
        r0 = core.registers[0]
        return None if ret == "v" else (r0 & 0xFF if ret == "b" else r0)


# ---------------------------------------------------------------------------
# Benchmark: cycles per kernel on MNIST-sized layers


def _mnist_like_input(rng: np.random.Generator, n: int = 784, frac: float = 0.19) -> np.ndarray:
    """A 28x28-like u8 image: ~frac nonzero pixels clustered in the middle."""
    side = round(n**0.5)
    yy, xx = np.mgrid[0:side, 0:side]
    r = np.hypot(yy - side / 2 + 0.5, xx - side / 2 + 0.5)
    order = np.argsort(r.reshape(-1) + rng.uniform(0, 3, side * side))
    x = np.zeros(side * side, dtype=np.uint8)
    on = order[: int(frac * n)]
    x[on] = rng.integers(1, 256, on.size)
    return x[:n]


def bench(k: M0Kernels, seed: int = 0) -> list[tuple[str, int, int]]:
    """(label, cycles, work) rows; work is MACs or popcount words."""
    rng = np.random.default_rng(seed)
    rows = []
    x = _mnist_like_input(rng)
    nz = int(np.count_nonzero(x))

    def q8(n_in, n_out, xin, out_u8=True):
        w = rng.integers(0, 256, (n_in, n_out), dtype=np.uint8)
        zw = rng.integers(100, 156, n_out, dtype=np.uint8)
        bias = rng.integers(-5000, 5000, n_out).astype(np.int32)
        rq = (np.full(n_out, 20000, np.uint32) | (8 << 16) | (12 << 24)).astype(np.uint32)
        acc = np.zeros(n_out, np.int32)
        y = np.zeros(n_out, np.uint8)
        k.call("nn_dense_q8", xin, w, zw, bias, rq if out_u8 else None, acc, y, n_in, n_out, 0)
        return k.last_cycles, y

    c1, h = q8(784, 128, x)
    rows.append((f"dense_q8 784->128 ({nz} nonzero inputs)", c1, nz * 128))
    h = (rng.random(128) < 0.5).astype(np.uint8) * rng.integers(1, 256, 128, dtype=np.uint8)
    c2, _ = q8(128, 10, h, out_u8=False)
    rows.append((f"dense_q8 128->10 ({int(np.count_nonzero(h))} nonzero)", c2,
                 int(np.count_nonzero(h)) * 10))

    # 90%-sparse q8, u8 row indices
    for n_in, n_out, xin in ((784, 128, x), (128, 10, h)):
        mask = rng.random((n_in, n_out)) < 0.1
        colptr = np.zeros(n_in + 1, np.uint32)
        colptr[1:] = np.cumsum(mask.sum(axis=1))
        rws = np.nonzero(mask)[1].astype(np.uint8)
        vals = rng.integers(0, 256, rws.size, dtype=np.uint8)
        zw = rng.integers(100, 156, n_out, dtype=np.uint8)
        bias = rng.integers(-5000, 5000, n_out).astype(np.int32)
        rq = (np.full(n_out, 20000, np.uint32) | (8 << 16) | (12 << 24)).astype(np.uint32)
        acc = np.zeros(n_out, np.int32)
        y = np.zeros(n_out, np.uint8)
        k.call("nn_sparse_q8", xin, colptr, rws, 1, vals, zw, bias, rq, acc, y, n_in, n_out, 0)
        work = int(sum(mask[i].sum() for i in np.nonzero(xin)[0]))
        rows.append((f"sparse_q8 {n_in}->{n_out} 10% ({work} stored weights visited)",
                     k.last_cycles, work))

    # XNOR 784-256-256-10
    bits = np.zeros(25, np.uint32)
    k.call("nn_binarize", x, 128, bits, 784)
    rows.append(("binarize 784", k.last_cycles, 784))
    for n_in, n_out in ((784, 256), (256, 256)):
        nw = (n_in + 31) // 32
        w = rng.integers(0, 2**32, (n_out, nw), dtype=np.uint64).astype(np.uint32)
        w[:, -1] &= np.uint32((1 << (n_in - 32 * (nw - 1))) - 1 if n_in % 32 else 0xFFFFFFFF)
        thr = rng.integers(n_in // 2 - 20, n_in // 2 + 20, n_out).astype(np.int32)
        xb = rng.integers(0, 2**32, nw, dtype=np.uint64).astype(np.uint32)
        y = np.zeros((n_out + 31) // 32, np.uint32)
        k.call("nn_xnor_dense", xb, w, thr, y, n_in, n_out)
        rows.append((f"xnor_dense {n_in}->{n_out}", k.last_cycles, n_out * nw))
    w = rng.integers(0, 2**32, (10, 8), dtype=np.uint64).astype(np.uint32)
    a = rng.integers(1, 1000, 10).astype(np.int32)
    b = rng.integers(-1000, 1000, 10).astype(np.int32)
    y = np.zeros(10, np.int32)
    k.call("nn_xnor_out", w[0].copy(), w, a, b, y, 256, 10)
    rows.append(("xnor_out 256->10", k.last_cycles, 80))

    # float (libgcc soft-float here, not the RP2040 ROM)
    wf = rng.standard_normal((784, 128)).astype(np.float32)
    bf = rng.standard_normal(128).astype(np.float32)
    yf = np.zeros(128, np.float32)
    k.call("nn_dense_f32", x, 1, wf, bf, yf, 784, 128)
    rows.append(("dense_f32 784->128 u8 input (libgcc floats)", k.last_cycles, nz * 128))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--no-asm", action="store_true", help="portable C loops only")
    ap.add_argument("--opt", default="-O2", help="optimization flag (default -O2)")
    args = ap.parse_args()
    k = M0Kernels(args.opt, asm=not args.no_asm)
    print(f"{'kernel':58s} {'cycles':>9s} {'us@125MHz':>10s} {'cyc/unit':>9s}")
    for label, cyc, work in bench(k):
        print(f"{label:58s} {cyc:9d} {cyc / MHZ:10.1f} {cyc / max(work, 1):9.2f}")


if __name__ == "__main__":
    main()
