"""Time the `_nn_c` kernels on the virtual Pico (firmware with the C module) and check them.

Realistic layer sizes (MNIST 784-128-10, 90%-sparse 784-128-10, XNOR 784-256-256-10)
with random weights and a real MNIST test digit as input (116 of 784 pixels nonzero). Each
kernel runs under micropython.heap_lock() (so it cannot allocate) and is timed with
time.ticks_us (the emulator's clock follows emulated cycles at 125 MHz); the best of
3 runs is reported. Every output is also compared with the same C code run on the host
(tools/ckernels_host.py): integer kinds bit for bit, float kinds to 1e-5.

Weights are in RAM here (the model's would be read from flash through the XIP cache;
the emulator times flash like SRAM). The f32 layers are smaller than the MNIST model's
(784x128 f32 weights do not fit in RAM): their time per multiply-add is reported.

    python tools/bench_ckernels_pico.py [build/PICO/firmware.uf2]
"""

from __future__ import annotations

import argparse
import base64
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))
sys.path.insert(0, str(ROOT / "host"))

from ckernels_host import HostKernels

REPS = 3
BIG_BYTES = 784 * 128  # the largest weight array (u8 784x128), reused for the others
CHUNK = 3000  # bytes of data per script line
SCRIPT_PART = 12000  # characters per script sent to the device

_DEVICE_HEAD = """
import _nn_c, array, time, micropython, gc
from binascii import a2b_base64 as b64
BIG = bytearray(BIG_BYTES)  # first: the large weights reuse it (no fragmentation)
def tile(block, n, big=False):
    mv = memoryview(BIG if big else bytearray(n))
    L = len(block)
    for k in range(0, n, L):
        m = min(L, n - k)
        mv[k:k + m] = block[:m]
    return mv[:n]
def best(name, times):
    print("T", name, min(times))
def out(name, buf):
    print("O", name, bytes(buf).hex())
T = [0] * REPS
_ = t0 = 0  # globals assigned under heap_lock must exist already
"""


def _b64(a: np.ndarray) -> str:
    return base64.b64encode(np.ascontiguousarray(a).tobytes()).decode()


def _tile(block: np.ndarray, n: int) -> np.ndarray:
    return np.resize(block.view(np.uint8), n)


class Case:
    """One kernel call: host arrays, the device code that builds the same, the outputs."""

    def __init__(self, name: str, kernel: str, args: list, outputs: dict[str, str],
                 work: int, unit: str) -> None:
        self.name, self.kernel, self.args = name, kernel, args
        self.outputs, self.work, self.unit = outputs, work, unit


def mnist_digit(index: int = 0) -> np.ndarray:
    from piconn import data

    path = data.find_mnist(ROOT.parent / "shared" / "data" / "mnist")
    if path is None:
        raise SystemExit("MNIST not found")
    imgs = data.read_idx(data._find_file(path, "t10k-images-idx3-ubyte"))
    return imgs[index].reshape(-1).astype(np.uint8)


def build(seed: int = 0) -> tuple[str, list[tuple[str, str, list, dict]]]:
    """Device script and the host-side calls [(name, kernel, host args, {arg index: kind})]."""
    rng = np.random.default_rng(seed)
    lines = [f"REPS = {REPS}\nBIG_BYTES = {BIG_BYTES}", _DEVICE_HEAD]
    calls: list[tuple[str, str, list, list[int], str, int]] = []

    class _Calls(list):
        def append(self, c) -> None:
            super().append(c)
            name, kernel, args, outs, _, _ = c
            a = ", ".join("None" if v is None else str(v) for v in args)
            # inline (f(*args) would allocate under heap_lock); one top-level statement
            lines.append(f"for _ in range(REPS):\n    gc.collect(); micropython.heap_lock();"
                         f" t0 = time.ticks_us(); _nn_c.{kernel}({a});"
                         f" T[_] = time.ticks_diff(time.ticks_us(), t0);"
                         f" micropython.heap_unlock()")
            lines.append(f"best({name!r}, T)")
            for i in outs:
                lines.append(f"out({name!r}, {args[i]})")

    calls = _Calls()

    def dev_array(var: str, a: np.ndarray, typecode: str | None, big_at: int | None = None) -> None:
        raw = np.ascontiguousarray(a).view(np.uint8).reshape(-1)
        if big_at is None:
            lines.append(f"{var} = bytearray({raw.size})")
        else:  # a slice of BIG
            lines.append(f"{var} = memoryview(BIG)[{big_at}:{big_at + raw.size}]")
        for k in range(0, raw.size, CHUNK):  # short lines: the console takes small scripts
            lines.append(f"{var}[{k}:{k + CHUNK}] = b64('{_b64(raw[k:k + CHUNK])}')")
        # (a bytearray is 4-byte aligned, and the kernels take any buffer: no typed copy)

    def dev_tiled(var: str, block: np.ndarray, n_bytes: int, big: bool = False) -> np.ndarray:
        lines.append(f"{var} = tile(b64('{_b64(block)}'), {n_bytes}, {big})")
        # (a bytearray is 4-byte aligned, and the kernels take any buffer: no typed copy)
        return _tile(block, n_bytes)

    x = mnist_digit(0)
    nz = int(np.count_nonzero(x))
    dev_array("x", x, None)

    # ---- uint8 full integer 784-128-10
    w1 = dev_tiled("w1", rng.integers(0, 256, 4099, dtype=np.uint8), 784 * 128, big=True)
    zw1, b1 = rng.integers(110, 146, 128).astype(np.uint8), rng.integers(-9000, 9000, 128)
    rq1 = (rng.integers(1 << 14, 1 << 15, 128) | 12 << 16 | 14 << 24).astype(np.uint32)
    b1 = b1.astype(np.int32)
    dev_array("zw1", zw1, None)
    dev_array("b1", b1, "i")
    dev_array("rq1", rq1, "I")
    lines.append("acc1 = array.array('i', bytes(512)); h1 = bytearray(128)")
    calls.append(("dense_q8 784->128 u8 out", "dense_q8",
                  ["x", "w1", "zw1", "b1", "rq1", "acc1", "h1", 784, 128, 0], [6], "MAC",
                  nz * 128))
    h1 = np.zeros(128, np.uint8)
    acc = np.zeros(128, np.int32)
    HostKernels().call("nn_dense_q8", x, w1, zw1, b1, rq1, acc, h1, 784, 128, 0)
    nz1 = int(np.count_nonzero(h1))
    dev_tiled("w2", rng.integers(0, 256, 1031, dtype=np.uint8), 128 * 10)
    zw2, b2 = rng.integers(110, 146, 10).astype(np.uint8), rng.integers(-9000, 9000, 10)
    b2 = b2.astype(np.int32)
    dev_array("zw2", zw2, None)
    dev_array("b2", b2, "i")
    lines.append("acc2 = array.array('i', bytes(40))")
    # the device feeds its own h1 (checked above) into layer 2
    calls.append(("dense_q8 128->10 i32 out", "dense_q8",
                  ["h1", "w2", "zw2", "b2", None, "acc2", "acc2", 128, 10, 0], [5], "MAC",
                  nz1 * 10))

    # ---- weight-only uint8 (float activations), same weights
    xf = rng.standard_normal(128).astype(np.float32)
    xf[rng.random(128) < 0.5] = 0
    dev_array("xf", xf, "f")
    lines.append("yf2 = array.array('f', bytes(512)); bf2 = array.array('f', bytes(512));"
                 " sc = array.array('f', [0.01] * 128)")
    calls.append(("dense_q8w 784->128 u8 in", "dense_q8w",
                  ["x", 1, "w1", "zw1", "sc", "bf2", "yf2", 784, 128], [6], "MAC", nz * 128))
    calls.append(("dense_q8w 128->128 f32 in", "dense_q8w",
                  ["xf", 0, "w1", "zw1", "sc", "bf2", "yf2", 128, 128], [6], "MAC",
                  int(np.count_nonzero(xf)) * 128))
    lines.append("del w1")

    # ---- 90%-sparse uint8 784-128-10
    for name, n_in, n_out, xin in (("s1", 784, 128, "x"), ("s2", 128, 10, "h1")):
        mask = rng.random((n_in, n_out)) < 0.1
        colptr = np.zeros(n_in + 1, np.uint32)
        colptr[1:] = np.cumsum(mask.sum(axis=1))
        rows = np.nonzero(mask)[1].astype(np.uint8)
        vals = rng.integers(0, 256, rows.size, dtype=np.uint8)
        zw = rng.integers(110, 146, n_out).astype(np.uint8)
        bias = rng.integers(-3000, 3000, n_out).astype(np.int32)
        rq = (rng.integers(1 << 14, 1 << 15, n_out) | 8 << 16 | 14 << 24).astype(np.uint32)
        for var, a, tc in ((f"{name}c", colptr, "I"), (f"{name}r", rows, None),
                           (f"{name}v", vals, None), (f"{name}z", zw, None),
                           (f"{name}b", bias, "i"), (f"{name}q", rq, "I")):
            dev_array(var, a, tc)
        lines.append(f"{name}a = array.array('i', bytes({4 * n_out})); {name}y = bytearray({n_out})")
        xv = x if xin == "x" else h1
        visited = int(sum(mask[i].sum() for i in np.nonzero(xv)[0]))
        calls.append((f"sparse_q8 {n_in}->{n_out} 10%", "sparse_q8",
                      [xin, f"{name}c", f"{name}r", 1, f"{name}v", f"{name}z", f"{name}b",
                       f"{name}q", f"{name}a", f"{name}y", n_in, n_out, 0], [9],
                      "stored weight visited", visited))

    # ---- XNOR 784-256-256-10
    lines.append("xb = array.array('I', bytes(100)); hb1 = array.array('I', bytes(32));"
                 " hb2 = array.array('I', bytes(32)); yo = array.array('i', bytes(40))")
    calls.append(("binarize 784", "binarize", ["x", 128, "xb", 784], [2], "pixel", 784))
    for var, n_in, n_out, xin, yout, at in (("xw1", 784, 256, "xb", "hb1", 0),
                                            ("xw2", 256, 256, "hb1", "hb2", 25600)):
        nw = (n_in + 31) // 32
        w = rng.integers(0, 2**32, (n_out, nw), dtype=np.uint64).astype(np.uint32)
        if n_in % 32:  # padding bits of the last word are 0
            w[:, -1] &= np.uint32((1 << (n_in % 32)) - 1)
        dev_array(var, w, "I", big_at=at)
        thr = rng.integers(n_in // 2 - 10, n_in // 2 + 10, n_out).astype(np.int32)
        dev_array(var + "t", thr, "i")
        calls.append((f"xnor_dense {n_in}->{n_out}", "xnor_dense",
                      [xin, var, var + "t", yout, n_in, n_out], [3], "word", nw * n_out))
    dev_array("xw3", rng.integers(0, 2**32, 80, dtype=np.uint64).astype(np.uint32), "I")
    dev_array("xa3", rng.integers(1, 2000, 10).astype(np.int32), "i")
    dev_array("xb3", rng.integers(-9000, 9000, 10).astype(np.int32), "i")
    calls.append(("xnor_out 256->10", "xnor_out", ["hb2", "xw3", "xa3", "xb3", "yo", 256, 10],
                  [4], "word", 80))
    # the whole XNOR model in one call from Python: _nn_c.run(steps, x)
    lines.append("steps = ((_nn_c.binarize, (x, 128, xb, 784)),"
                 " (_nn_c.xnor_dense, (xb, xw1, xw1t, hb1, 784, 256)),"
                 " (_nn_c.xnor_dense, (hb1, xw2, xw2t, hb2, 256, 256)),"
                 " (_nn_c.xnor_out, (hb2, xw3, xa3, xb3, yo, 256, 10)))")
    calls.append(("XNOR 784-256-256-10 via run()", "run", ["steps", "x"], [], "model", 1))

    lines.append("del xw1, xw2, s1c, s1r, s1v")

    # ---- float: smaller layers (f32 weights in RAM), time per multiply-add
    dev_tiled("wf", rng.standard_normal(1021).astype(np.float32), 4 * 784 * 16, big=True)
    dev_array("bf", rng.standard_normal(128).astype(np.float32), "f")
    lines.append("yf = array.array('f', bytes(64))")
    calls.append(("dense_f32 784->16 u8 in", "dense_f32", ["x", 1, "wf", "bf", "yf", 784, 16],
                  [4], "MAC", nz * 16))
    calls.append(("dense_f32 128->96 f32 in", "dense_f32",
                  ["xf", 0, "wf", "bf", "yf2", 128, 96], [4], "MAC",
                  int(np.count_nonzero(xf)) * 96))
    calls.append(("relu_f32 128", "relu_f32", ["yf2", 128], [0], "element", 128))
    calls.append(("none (relu_f32 of 1 element: call overhead)", "relu_f32", ["yf2", 1], [],
                  "call", 1))
    # the timing code alone (ticks_us twice, the store): subtract it from every row
    lines.append("for _ in range(REPS):\n    gc.collect(); micropython.heap_lock();"
                 " t0 = time.ticks_us(); T[_] = time.ticks_diff(time.ticks_us(), t0);"
                 " micropython.heap_unlock()")
    lines.append("best('timer alone', T)")

    return "\n".join(lines) + "\n", list(calls)


def host_outputs(calls, dev_script: str) -> dict[str, bytes]:
    """Replay the device script on the host with the host C build: {name: output bytes}."""
    import array
    import binascii

    env: dict = {"array": array, "b64": binascii.a2b_base64, "tile": _tile_env,
                 "BIG": bytearray(BIG_BYTES)}
    k = HostKernels()
    res: dict[str, bytes] = {}

    def arr(v):
        if v is None or isinstance(v, int):
            return v
        obj = env[v]
        if isinstance(obj, (bytes, bytearray, memoryview)):
            return np.frombuffer(obj, dtype=np.uint8)
        return np.frombuffer(obj, dtype={"I": "<u4", "i": "<i4", "f": "<f4"}[obj.typecode])

    pending = iter(calls)
    for line in dev_script.splitlines():
        if line.startswith("best('timer alone'"):
            continue
        if line.startswith("best("):
            name, kernel, args, outs, _, _ = next(pending)
            if kernel == "run":  # the same calls again, same results: nothing to check
                continue
            hargs = [arr(v) for v in args]
            k.call("nn_" + kernel, *hargs)
            for i in outs:
                res[name] = hargs[i].tobytes()
        elif line and not line.startswith(("out(", "import", "from ", "def ", " ", "for _",
                                           "steps =")):
            exec(line, env)  # noqa: S102 - our own generated assignments
    return res


def _tile_env(block, n, big=False):
    return bytearray(np.resize(np.frombuffer(block, np.uint8), n).tobytes())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("uf2", nargs="?", default=str(ROOT / "build" / "PICO" / "firmware.uf2"))
    args = ap.parse_args()
    from vpico import VirtualPico

    script, calls = build()
    with VirtualPico(args.uf2) as pico:
        if "_nn_c" not in pico.run_script("help('modules')"):
            print(f"{args.uf2} has no _nn_c module")
            return 1
        out = ""
        body = script.splitlines()
        head = next(i for i, line in enumerate(body) if line.startswith("_ = t0")) + 1
        parts, size = [body[:head]], 0
        for line in body[head:]:  # top-level lines only: each part is a complete script
            if size + len(line) > SCRIPT_PART and parts[-1] and not line.startswith(" "):
                parts.append([])
                size = 0
            parts[-1].append(line)
            size += len(line) + 1
        for k, part in enumerate(parts):
            out += pico.run_script("\n".join(part) + "\n", timeout=1800, soft_reset=k == 0)
    times, outputs = {}, {}
    for line in out.splitlines():
        tag, _, rest = line.partition(" ")
        if tag == "T":
            name, _, us = rest.rpartition(" ")
            times[name] = int(us)
        elif tag == "O":
            name, _, hx = rest.rpartition(" ")
            outputs[name] = bytes.fromhex(hx)
    ref = host_outputs(calls, script)
    ok = True
    print(f"timer alone: {times.get('timer alone')} us (included in every row)")
    print(f"{'kernel':46s} {'us':>7s} {'cycles':>8s} {'per unit':>10s}  unit         check")
    for name, kernel, _, outs, unit, work in calls:
        us = times.get(name)
        if us is None:
            print(f"{name:46s} missing")
            ok = False
            continue
        check = ""
        if outs:
            got, exp = outputs.get(name), ref.get(name)
            if kernel in ("dense_f32", "dense_q8w", "relu_f32"):
                g, e = np.frombuffer(got, np.float32), np.frombuffer(exp, np.float32)
                good = np.allclose(g, e, rtol=1e-5, atol=1e-5 * float(np.abs(e).max()))
            else:
                good = got == exp
            check = "ok" if good else "MISMATCH"
            if not good and kernel in ("dense_f32", "dense_q8w", "relu_f32"):
                check += f" (max |diff| {np.abs(g - e).max():.3g}, max |y| {np.abs(e).max():.3g})"
            ok &= good
        cyc = us * 125
        print(f"{name:46s} {us:7d} {cyc:8d} {cyc / max(work, 1):10.2f}  "
              f"cycles/{unit:14s} {check}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
