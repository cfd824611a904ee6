# Benchmark driver that runs ON the Pico (virtual or real) under MicroPython.
#
# tools/bench.py copies it to the device filesystem (compiled: /bench_device.mpy)
# next to /bench_digits.bin (MNIST test digits, raw bytes, input_size each), then
# for every (model, tier) cell runs, after a soft reset:
#     import bench_device as B; B.setup(SRC, TIER, N)
#     B.run(N)
# SRC is a frozen model module's name (its MODEL bytes stay in flash) or
# (address, length) of model bytes placed in flash by a UF2 (read in place
# through uctypes.bytearray_at). Each call prints one JSON line.
#
# Nothing here allocates inside the timed region: the input buffer, the digits
# and the model are made in setup(); run() only copies a digit and times
# model.forward(x) with time.ticks_us() (emulated cycles on the virtual Pico).
import gc
import json
import time

import micropython
import nn
import uctypes

DIGITS = "/bench_digits.bin"
_S = {}


def _buffer(src):
    if isinstance(src, str):
        return __import__(src).MODEL
    return uctypes.bytearray_at(src[0], src[1])


def _u32(b, off):
    return b[off] | b[off + 1] << 8 | b[off + 2] << 16 | b[off + 3] << 24


def _argmax(y):
    best = 0
    for i in range(1, len(y)):
        if y[i] > y[best]:
            best = i
    return best


def _digit(i):
    size = _S["size"]
    _S["x"][:] = _S["mv"][i * size:(i + 1) * size]


def setup(src, tier, n):
    """Load the model with `tier` forced; measure heap; run digit 0 once (warm-up)."""
    nn.use_backend(tier)
    buf = _buffer(src)
    size = _u32(buf, 20)
    digits = bytearray(n * size)
    with open(DIGITS, "rb") as f:
        got = f.readinto(digits)
    if got != len(digits):
        raise ValueError("bench_digits.bin holds " + str(got) + " bytes, need " + str(len(digits)))
    x = bytearray(size)
    _S.update(size=size, x=x, mv=memoryview(digits))
    gc.collect()
    a0 = gc.mem_alloc()
    m = nn.load(buf)
    gc.collect()
    heap = gc.mem_alloc() - a0
    _S["m"] = m
    _digit(0)
    # The empty timing pair, for reference.
    t0 = time.ticks_us()
    overhead = time.ticks_diff(time.ticks_us(), t0)
    # Warm-up under heap_lock: it succeeds only if inference allocates nothing.
    gc.collect()
    micropython.heap_lock()
    try:
        t0 = time.ticks_us()
        m.forward(x)
        first_us = time.ticks_diff(time.ticks_us(), t0)
        alloc_free = True
    except MemoryError:
        alloc_free = False
    micropython.heap_unlock()
    if not alloc_free:
        t0 = time.ticks_us()
        m.forward(x)
        first_us = time.ticks_diff(time.ticks_us(), t0)
    gc.collect()
    heap_after = gc.mem_alloc() - a0
    info = {
        "addr": uctypes.addressof(buf), "len": len(buf), "crc": _u32(buf, 12),
        "heap": heap, "heap_after_first": heap_after, "alloc_free": alloc_free,
        "first_us": first_us, "overhead_us": overhead, "backend": nn.backend(),
        "mem_free": gc.mem_free(),
    }
    try:
        info["layers"] = m.summary()
    except Exception as e:  # noqa: BLE001 - summary is informative only
        info["layers"] = "summary failed: " + repr(e)
    print(json.dumps(info))


def run(n):
    """Time digits 0..n-1; print times (µs), predicted classes and raw outputs."""
    m, x = _S["m"], _S["x"]
    us, pred, out = [], [], []
    for i in range(n):
        _digit(i)
        t0 = time.ticks_us()
        y = m.forward(x)
        dt = time.ticks_diff(time.ticks_us(), t0)
        us.append(dt)
        pred.append(_argmax(y))
        out.append(list(y))
    print(json.dumps({"us": us, "pred": pred, "out": out}))
