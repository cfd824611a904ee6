"""Fuzz `nn.load` under MicroPython: random corruptions of real models.

Each corrupted model must either be refused with ValueError/TypeError, exactly
when the host refuses it (`format.from_bytes` + `export.device_check`), or load
and compute what `piconn.reference` computes for the same bytes (bit for bit for
integer outputs): no crash, no hang (a timeout fails the test), no silently
wrong load. Most corruptions get a recomputed CRC, so the structural checks
(offsets, sizes, dtype chain, sparse indices, ...) are what refuses them.
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import mpy
import numpy as np
import pytest

from piconn import export, reference
from piconn import format as fmt

ROOT = Path(__file__).resolve().parent.parent
N_TOTAL = 2100  # corruptions per tier, split over the base models
# trained models when they exist (make models), else the random ones of conftest
REAL = {"xnor": "mnist_xnor.nnb", "sparse_uint8": "mnist_sparse_q8.nnb", "uint8": "mnist_q8.nnb"}


def base_models(device_models) -> dict[str, bytes]:
    out = {}
    for kind, name in REAL.items():
        path = ROOT / "build" / "models" / name
        out[kind] = path.read_bytes() if path.is_file() else device_models[kind][1]
    out["float_acts"] = device_models["float_acts"][1]  # float kinds and activations
    return out


def corrupt(blob: bytes, rng: np.random.Generator) -> bytes:
    """One random corruption; the CRC is recomputed 85% of the time."""
    b = bytearray(blob)
    n_layers = struct.unpack_from("<H", b, 16)[0]
    table_end = fmt.HEADER_SIZE + fmt.RECORD_SIZE * n_layers
    r = rng.random()
    if r < 0.35:  # a few bit flips in the header and the layer table
        for _ in range(rng.integers(1, 4)):
            b[rng.integers(0, table_end)] ^= 1 << int(rng.integers(8))
    elif r < 0.55:  # a u32 of the header/table set to a boundary value
        pos = 4 * int(rng.integers(1, table_end // 4))
        vals = [0, 1, 2, 3, 0xFFFFFFFF, 0xFFFFFFFC, 0x80000000, 0x7FFFFFFF, len(b), len(b) - 4,
                len(b) + 4, table_end, table_end - 4, int(rng.integers(0, 2**32))]
        struct.pack_into("<I", b, pos, vals[int(rng.integers(len(vals)))])
    elif r < 0.8:  # bit flips anywhere (mostly parameters)
        for _ in range(rng.integers(1, 6)):
            b[rng.integers(0, len(b))] ^= 1 << int(rng.integers(8))
    elif r < 0.9:  # truncated or extended, sometimes with total_size patched
        if rng.random() < 0.5:
            b = b[:int(rng.integers(0, len(b)))]
        else:
            b += bytes(rng.integers(0, 256, int(rng.integers(1, 64))).astype(np.uint8))
        if len(b) >= 12 and rng.random() < 0.7:
            struct.pack_into("<I", b, 8, len(b))
    else:  # a run of random bytes
        pos = int(rng.integers(0, len(b)))
        k = min(int(rng.integers(1, 24)), len(b) - pos)
        b[pos:pos + k] = rng.integers(0, 256, k).astype(np.uint8).tobytes()
    if len(b) >= 16 and rng.random() < 0.85:
        struct.pack_into("<I", b, 12, zlib.crc32(bytes(b[16:])) & 0xFFFFFFFF)
    return bytes(b)


def host_verdict(b: bytes, x: np.ndarray):
    """None if the host refuses the model, else (output dtype, reference output)."""
    try:
        dm = fmt.from_bytes(b)
        export.device_check(b)
    except ValueError:
        return None
    with np.errstate(all="ignore"):
        return dm.output_dtype, reference.run(dm, x)


FUZZ = """
import nn, binascii
nn.use_backend({tier!r})
f = open({path!r}, 'rb')
x = f.read({size})
count = int(f.readline())
for i in range(count):
    n = int(f.readline())
    b = f.read(n)
    try:
        m = nn.load(b)
    except (ValueError, TypeError) as e:
        print('R')
        continue
    except Exception as e:
        print('X', repr(e))
        continue
    try:
        y = m.forward(x)
        print('Y', binascii.hexlify(bytes(y)).decode())
    except Exception as e:
        print('F', repr(e))
"""


def _same_float(y: np.ndarray, ref: np.ndarray) -> bool:
    ref = ref.astype(np.float32)
    if not np.all(np.isfinite(ref)) or not np.all(np.isfinite(y)):
        return bool(np.array_equal(np.isnan(y), np.isnan(ref)))
    scale = max(float(np.abs(ref).max()), 1e-30)
    return bool(np.all(np.abs(y - ref) <= 1e-4 * scale))


def _tiers() -> list:
    rs = mpy.runners()
    if not rs:
        return [pytest.param(None, marks=pytest.mark.skip(reason=mpy.why_none()))]
    return [(rs[0], t) for t in rs[0].tiers]


@pytest.mark.parametrize("rt", _tiers(), ids=lambda p: f"{p[0].name}-{p[1]}")
def test_fuzz_load(rt, device_models, tmp_path):
    runner, tier = rt
    rng = np.random.default_rng(20260 + len(tier))
    bases = base_models(device_models)
    per = N_TOTAL // len(bases)
    x = rng.integers(0, 256, 784).astype(np.uint8)
    x[rng.random(784) < 0.6] = 0
    total, refused, loaded = 0, 0, 0
    for kind, blob in bases.items():
        size = fmt.from_bytes(blob).input_size
        xi = x[:size]
        cases = [corrupt(blob, rng) for _ in range(per)]
        path = tmp_path / f"fuzz_{kind}.bin"
        with open(path, "wb") as f:
            f.write(xi.tobytes() + b"%d\n" % len(cases))
            f.writelines(b"%d\n" % len(c) + c for c in cases)
        out = runner.run(FUZZ.format(tier=tier, path=str(path), size=size), timeout=600,
                         dirs=(tmp_path,)).splitlines()
        assert len(out) == len(cases), f"{kind}: {len(out)} results for {len(cases)} models"
        for i, (c, line) in enumerate(zip(cases, out, strict=True)):
            verdict = host_verdict(c, xi)
            where = f"{kind} case {i}: {line[:120]}"
            assert line[0] in "RY", where  # X/F: an unexpected exception
            if verdict is None:
                assert line == "R", f"device loaded a model the host refuses: {where}"
                refused += 1
                continue
            assert line[0] == "Y", f"device refused a model the host accepts: {where}"
            dt, ref = verdict
            y = np.frombuffer(bytes.fromhex(line.split()[1]), "<i4" if dt == "i32" else "<f4")
            if dt == "i32":
                np.testing.assert_array_equal(y, ref, err_msg=where)
            else:
                assert _same_float(y, ref), where
            loaded += 1
        total += len(cases)
    print(f"fuzz {runner.name}-{tier}: {total} corruptions, {refused} refused, {loaded} loaded "
          "and equal to the reference")
    assert total >= 2000
    # both outcomes must be well represented, or the fuzzing proves little
    assert refused > total // 4 and loaded > total // 10, (refused, loaded)
