# Benchmark driver that runs ON the Pico (virtual or real) under MicroPython.
#
# tools/bench.py copies it to the device filesystem (compiled: /bench_device.mpy)
# and runs probe() once; then for every (model, tier) cell, after a soft reset:
#     import bench_device as B; B.setup(SRC, TIER, N_MAX, DIGITS)
#     B.run(0, 1, True)     digit 0 under heap_lock (does inference allocate?)
#     B.run(1, K)           (the host counts flash reads over digits 0..K-1)
#     B.run(K, N)           the rest, without counting
# SRC is a frozen model module's name (its MODEL bytes stay in flash) or
# (address, length) of model bytes placed in flash by a UF2 (read in place
# through uctypes.bytearray_at). DIGITS is "mnist_samples" (the frozen test
# digits of `piconn export --samples`) or a file of raw digits (input_size
# bytes each) that bench.py wrote. Each call prints one JSON line.
#
# Nothing here allocates inside the timed region: the input buffer, the digits
# and the model are made in setup(); run() only copies a digit and times
# model.forward(x) with time.ticks_us() (emulated cycles on the virtual Pico).
# The first timed inference is the first after load (there is no warm-up: nn
# allocates its buffers in load and has no caches).
import gc
import json
import time
from binascii import crc32

import micropython
import nn
import uctypes

_S = {}


def _buffer(src):
    if isinstance(src, str):
        return __import__(src).MODEL
    return memoryview(uctypes.bytearray_at(src[0], src[1]))


def probe(names, n_bytes):
    """Which model modules are frozen (their length and CRC field) and the CRC-32
    of the first n_bytes of the frozen digits, if any."""
    out = {"models": {}, "samples": None}
    for name in names:
        try:
            b = __import__(name).MODEL
            out["models"][name] = [len(b), _u32(b, 12)]
        except (ImportError, AttributeError):
            pass
    try:
        import mnist_samples

        im = mnist_samples.IMAGES
        if len(im) >= n_bytes:
            out["samples"] = crc32(memoryview(im)[:n_bytes])
    except ImportError:
        pass
    print(json.dumps(out))


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


def setup(src, tier, n, digits):
    """Load the model with `tier` forced (no inference yet); measure its heap."""
    nn.use_backend(tier)
    buf = _buffer(src)
    size = _u32(buf, 20)
    if digits == "mnist_samples":
        import mnist_samples

        mv = memoryview(mnist_samples.IMAGES)
    else:
        data = bytearray(n * size)
        with open(digits, "rb") as f:
            got = f.readinto(data)
        if got != len(data):
            raise ValueError(digits + " holds " + str(got) + " bytes, need " + str(len(data)))
        mv = memoryview(data)
    x = bytearray(size)
    _S.update(size=size, x=x, mv=mv)
    gc.collect()
    a0 = gc.mem_alloc()
    m = nn.load(buf)
    gc.collect()
    heap = gc.mem_alloc() - a0
    _S.update(m=m, a0=a0)
    # The empty timing pair, for reference.
    t0 = time.ticks_us()
    overhead = time.ticks_diff(time.ticks_us(), t0)
    print(json.dumps({
        "addr": uctypes.addressof(buf), "len": len(buf), "crc": _u32(buf, 12), "heap": heap,
        "overhead_us": overhead, "backend": nn.backend(), "mem_free": gc.mem_free(),
        "layer_tiers": m.tiers(), "summary": m.summary(),
    }))


def run(i0, i1, lock=False):
    """Time digits i0..i1-1; print their times (µs), predicted classes, raw outputs and
    the heap the model holds after the inferences before i0. lock: run each inference under micropython.heap_lock(); if one
    allocates, stop and print {"alloc_free": false} instead."""
    m, x = _S["m"], _S["x"]
    gc.collect()
    heap = gc.mem_alloc() - _S["a0"]  # the model's heap after the inferences so far
    us, pred, out = [], [], []
    for i in range(i0, i1):
        _digit(i)
        if lock:
            gc.collect()
            micropython.heap_lock()
        try:
            t0 = time.ticks_us()
            y = m.forward(x)
            dt = time.ticks_diff(time.ticks_us(), t0)
        except MemoryError:
            if not lock:
                raise
            micropython.heap_unlock()
            print(json.dumps({"alloc_free": False}))
            return
        if lock:
            micropython.heap_unlock()
        us.append(dt)
        pred.append(_argmax(y))
        out.append(list(y))
    res = {"us": us, "pred": pred, "out": out, "heap_after": heap}
    if lock:
        res["alloc_free"] = True
    print(json.dumps(res))
