"""Fuzz `nn.load` under MicroPython: corruptions of real models, random and structured.

Each corrupted model must either be refused with ValueError/TypeError, exactly
when the host refuses it (`format.from_bytes`), or load and compute what
`piconn.reference` computes for the same bytes: bit for bit for integer outputs,
NaN and +-inf in the same places for float outputs (and finite values to float32
rounding). No crash, no hang (a timeout fails the test), no silently wrong load.

Two sets of corruptions, every kernel tier each:
- random: bit flips, boundary u32s, truncation, runs of random bytes (the CRC
  recomputed most of the time, so the structural checks are what refuses them);
- structured: every field of the header and of each layer record set to each of
  its boundary values, and the first and last element of every parameter array set
  to the boundary values of its element type, the CRC recomputed each time.
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import mpy
import numpy as np
import pytest
from test_device import assert_same_floats

from piconn import format as fmt
from piconn import reference

ROOT = Path(__file__).resolve().parent.parent
N_TOTAL = 2100  # random corruptions per tier, split over the base models
# trained models when they exist (make models), else the random ones of conftest
REAL = {"xnor": "mnist_xnor.nnb", "sparse_uint8": "mnist_sparse_q8.nnb", "uint8": "mnist_q8.nnb"}
FLOAT = ("float_acts", "sparse_f32", "uint8_weights")  # float kinds, u8 inputs


def base_models(device_models) -> dict[str, bytes]:
    out = {}
    for kind, name in REAL.items():
        path = ROOT / "build" / "models" / name
        out[kind] = path.read_bytes() if path.is_file() else device_models[kind][1]
    for kind in FLOAT:
        out[kind] = device_models[kind][1]
    return out


def _recrc(b: bytearray) -> bytes:
    struct.pack_into("<I", b, 12, zlib.crc32(bytes(b[16:])) & 0xFFFFFFFF)
    return bytes(b)


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


# ------------------------------------------------------------------ structured

# (name, offset, struct code) of every header field but the magic and the CRC
HEADER_FIELDS = [("version", 4, "H"), ("header_size", 6, "H"), ("total_size", 8, "I"),
                 ("n_layers", 16, "H"), ("record_size", 18, "H"), ("input_size", 20, "I"),
                 ("output_size", 24, "I"), ("input_dtype", 28, "B"), ("output_dtype", 29, "B"),
                 ("reserved16", 30, "H"), ("output_scale", 32, "f"), ("reserved32", 36, "I")]
# every field of a layer record, offsets from the record's start
RECORD_FIELDS = ([("kind", 0, "B"), ("act", 1, "B"), ("in_dtype", 2, "B"), ("out_dtype", 3, "B"),
                  ("n_in", 4, "H"), ("n_out", 6, "H"), ("nnz", 8, "I"), ("zy", 12, "B"),
                  ("index_bytes", 13, "B"), ("threshold", 14, "B"), ("reserved", 15, "B")]
                 + [(f"offset{s}", 16 + 4 * s, "I") for s in range(fmt.N_SLOTS)])
F32_EDGES = [0.0, -0.0, 1.0, -1.0, 2.0, 1e-45, -1e-45, 3.4e38, -3.4e38, float("inf"),
             float("-inf"), float("nan")]


def _edges(code: str, orig, size: int, table_end: int) -> list:
    """Boundary values of a field of struct type `code` (orig: its value in the model)."""
    if code == "f":
        return [v for v in F32_EDGES if not (v == orig and np.signbit(v) == np.signbit(orig))]
    top = {"B": 0xFF, "H": 0xFFFF, "I": 0xFFFFFFFF}[code]
    vals = {0, 1, 2, 3, 4, 5, 8, 9, 127, 128, 255, 256, 257, 32767, 32768, 65535, 65536,
            0x7FFFFFFF, 0x80000000, 0xFFFFFFFC, top, size, size - 4, size + 4, table_end,
            table_end - 4, table_end + 4, orig - 4, orig - 1, orig + 1, orig + 4, orig * 2,
            orig // 2}
    return sorted(v for v in vals if 0 <= v <= top and v != orig)


# the elements of each kind's parameter arrays, in slot order (FORMAT.md "Layer kinds")
ELEMENTS = {
    "dense_f32": ("f32", "f32"),
    "dense_q8w": ("u8", "u8", "f32", "f32"),
    "dense_q8": ("u8", "u8", "i32", "rq"),
    "sparse_f32": ("colptr", "rows", "f32", "f32"),
    "sparse_q8": ("colptr", "rows", "u8", "u8", "i32", "rq"),
    "xnor_dense": ("bits", "i32"),
    "xnor_out": ("bits", "i32", "i32"),
}


def _element_edges(element: str, n_o: int, nnz: int, ib: int) -> tuple[str, list]:
    """(struct code, boundary values) of one element of a parameter array."""
    if element == "f32":
        return "f", F32_EDGES
    if element == "colptr":
        return "I", [0, 1, max(nnz - 1, 0), nnz, nnz + 1, 0x7FFFFFFF, 0xFFFFFFF0, 0xFFFFFFFF]
    if element == "rows":
        return ("B" if ib == 1 else "H"), [0, n_o - 1, n_o, n_o + 1, 255 if ib == 1 else 65535]
    if element == "bits":
        return "I", [0, 0xFFFFFFFF, 0x80000000, 1]
    if element == "rq":  # M | s1 << 16 | s2 << 24: in range, and each field just outside
        return "I", [0, 0xFFFFFFFF, 32767 | 31 << 16 | 30 << 24, 32768 | 5 << 16 | 10 << 24,
                     20000 | 32 << 16 | 10 << 24, 20000 | 5 << 16, 20000 | 5 << 16 | 31 << 24]
    if element == "u8":
        return "B", [0, 1, 127, 128, 255]
    return "i", [0, 1, -1, 2**31 - 1, -(2**31), 2**30, -(2**30)]  # i32


def structured(blob: bytes) -> list[tuple[str, bytes]]:
    """Every header and record field at each of its boundary values, and the first and
    last element of every parameter array at its element type's boundary values; the
    CRC recomputed. Also the magic and the CRC itself wrong."""
    size = len(blob)
    n_layers = struct.unpack_from("<H", blob, 16)[0]
    table_end = fmt.HEADER_SIZE + fmt.RECORD_SIZE * n_layers
    cases = []

    def put(what: str, pos: int, code: str, value) -> None:
        b = bytearray(blob)
        struct.pack_into("<" + code, b, pos, value)
        cases.append((what, _recrc(b)))

    for name, off, code in HEADER_FIELDS:
        orig = struct.unpack_from("<" + code, blob, off)[0]
        for v in _edges(code, orig, size, table_end):
            put(f"header {name}={v}", off, code, v)
    for v in (b"PCNM", b"pcnn", b"\0\0\0\0", b"NNCP"):
        put(f"header magic={v!r}", 0, "4s", v)
    for v in (0, 0xFFFFFFFF, struct.unpack_from("<I", blob, 12)[0] ^ 1):  # CRC not recomputed
        b = bytearray(blob)
        struct.pack_into("<I", b, 12, v)
        cases.append((f"crc={v}", bytes(b)))
    for k in range(n_layers):
        rec = fmt.HEADER_SIZE + fmt.RECORD_SIZE * k
        for name, off, code in RECORD_FIELDS:
            orig = struct.unpack_from("<" + code, blob, rec + off)[0]
            for v in _edges(code, orig, size, table_end):
                put(f"layer {k} {name}={v}", rec + off, code, v)
        fields = fmt._RECORD.unpack_from(blob, rec)
        kind, n_i, n_o, nnz, ib, offs = (fmt.KIND_NAMES[fields[0]], fields[4], fields[5],
                                         fields[6], fields[8], fields[11:])
        for slot in range(fmt.N_KIND_SLOTS[kind]):
            n_bytes = fmt._array_bytes(kind, slot, n_i, n_o, nnz, ib)
            if not offs[slot] or not n_bytes:
                continue
            code, values = _element_edges(ELEMENTS[kind][slot], n_o, nnz, ib)
            width = struct.calcsize("<" + code)
            for pos in sorted({offs[slot], offs[slot] + n_bytes - width}):
                for v in values:
                    put(f"layer {k} slot {slot} @{pos}={v}", pos, code, v)
    return cases


# ------------------------------------------------------------------ the test

def host_verdict(b: bytes, x: np.ndarray):
    """None if the host refuses the model, else (output dtype, reference output)."""
    try:
        dm = fmt.from_bytes(b)
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


def _tiers() -> list:
    rs = mpy.runners()
    if not rs:
        return [pytest.param(None, marks=pytest.mark.skip(reason=mpy.why_none()))]
    return [(rs[0], t) for t in rs[0].tiers]


def _input(rng: np.random.Generator) -> np.ndarray:
    x = rng.integers(0, 256, 784).astype(np.uint8)
    x[rng.random(784) < 0.6] = 0
    return x


def run_cases(runner, tier: str, cases: list[tuple[str, bytes]], xi: np.ndarray, tmp_path: Path,
              tag: str) -> tuple[int, int]:
    """Run the corrupted models on the device; check each against the host. Returns
    (refused, loaded)."""
    path = tmp_path / f"fuzz_{tag}.bin"
    with open(path, "wb") as f:
        f.write(xi.tobytes() + b"%d\n" % len(cases))
        f.writelines(b"%d\n" % len(c) + c for _, c in cases)
    out = runner.run(FUZZ.format(tier=tier, path=str(path), size=len(xi)), timeout=900,
                     dirs=(tmp_path,)).splitlines()
    assert len(out) == len(cases), f"{tag}: {len(out)} results for {len(cases)} models"
    refused = loaded = 0
    for (what, c), line in zip(cases, out, strict=True):
        verdict = host_verdict(c, xi)
        where = f"{tag} {what}: {line[:120]}"
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
            assert_same_floats(y, ref, where)
        loaded += 1
    return refused, loaded


@pytest.mark.parametrize("rt", _tiers(), ids=lambda p: f"{p[0].name}-{p[1]}")
def test_fuzz_load(rt, device_models, tmp_path):
    """Random corruptions: refused exactly when the host refuses them, else equal to the
    reference."""
    runner, tier = rt
    rng = np.random.default_rng(20260 + len(tier))
    bases = base_models(device_models)
    per = N_TOTAL // len(bases)
    x = _input(rng)
    total, refused, loaded = 0, 0, 0
    for kind, blob in bases.items():
        xi = x[:fmt.from_bytes(blob).input_size]
        cases = [(f"random {i}", corrupt(blob, rng)) for i in range(per)]
        r, ld = run_cases(runner, tier, cases, xi, tmp_path, kind)
        refused, loaded, total = refused + r, loaded + ld, total + len(cases)
    print(f"fuzz {runner.name}-{tier}: {total} corruptions, {refused} refused, {loaded} loaded "
          "and equal to the reference")
    assert total >= 2000
    # both outcomes must be well represented, or the fuzzing proves little
    assert refused > total // 4 and loaded > total // 10, (refused, loaded)


@pytest.mark.parametrize("rt", _tiers(), ids=lambda p: f"{p[0].name}-{p[1]}")
def test_fuzz_fields(rt, device_models, tmp_path):
    """Structured corruptions (every header and record field, the first and last element
    of every parameter array, at boundary values; CRC recomputed): refused exactly when
    the host refuses them, else equal to the reference, NaN/inf positions included."""
    runner, tier = rt
    x = _input(np.random.default_rng(7))
    total, refused, loaded, nonfinite = 0, 0, 0, 0
    for kind, blob in base_models(device_models).items():
        xi = x[:fmt.from_bytes(blob).input_size]
        cases = structured(blob)
        r, ld = run_cases(runner, tier, cases, xi, tmp_path, kind)
        refused, loaded, total = refused + r, loaded + ld, total + len(cases)
        for _, c in cases:
            v = host_verdict(c, xi)
            nonfinite += v is not None and v[0] == "f32" and not np.all(np.isfinite(v[1]))
    print(f"fuzz fields {runner.name}-{tier}: {total} corruptions, {refused} refused, {loaded} "
          f"loaded and equal to the reference ({nonfinite} with NaN or inf outputs)")
    assert refused > total // 2 and loaded > total // 20, (refused, loaded)
    assert nonfinite > 0  # overflows to inf/NaN were compared too
