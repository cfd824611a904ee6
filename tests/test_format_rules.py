"""One place for the format rules: `format.from_bytes` refuses what the device refuses,
and empty arrays (a sparse layer with nnz = 0) are written, read and run everywhere.

The crafted bad models of test_device.py check the device and the host message by
message; here each content rule of docs/FORMAT.md is checked on the host reader
alone, and nnz = 0 models run under MicroPython in every kernel tier.
"""

from __future__ import annotations

import importlib.util
import struct
import sys
import types
import zlib
from pathlib import Path

import numpy as np
import pytest
from test_device import RT, _ids, _inputs, assert_agrees, run_model

from piconn import format as fmt
from piconn import ir, reference


def _rq(n: int) -> dict:
    return {"mult": np.full(n, 20000), "s1": np.full(n, 6), "s2": np.full(n, 14)}


def empty_models() -> dict[str, ir.DeviceModel]:
    """Models with a sparse layer that stores no weight (nnz = 0), one per sparse kind."""
    rng = np.random.default_rng(3)
    n, h = 50, 20
    u8 = lambda *s: rng.integers(0, 256, s).astype(np.uint8)
    none = lambda *s: np.zeros(s, dtype=bool)
    some = lambda *s: rng.random(s) < 0.3
    bias = lambda k: rng.integers(-20000, 20000, k).astype(np.int32)
    f32 = lambda *s: rng.normal(0, 0.1, s).astype(np.float32)
    return {
        "q8_first_empty": ir.DeviceModel([
            ir.DenseQ8(u8(h, n), u8(h), bias(h), **_rq(h), zy=5, out_dtype="u8", mask=none(h, n)),
            ir.DenseQ8(u8(10, h), u8(10), bias(10), out_dtype="i32", mask=some(10, h))],
            "sparse", 0.01),
        "q8_last_empty_u16": ir.DeviceModel([
            ir.DenseQ8(u8(300, n), u8(300), bias(300), **_rq(300), out_dtype="u8",
                       mask=some(300, n)),
            ir.DenseQ8(u8(10, 300), u8(10), bias(10), out_dtype="i32", mask=none(10, 300))],
            "sparse", 0.01),
        "f32_empty": ir.DeviceModel([
            ir.DenseF32(f32(h, n) / 25, f32(h), "relu", "u8", mask=some(h, n)),
            ir.DenseF32(f32(10, h), f32(10), mask=none(10, h))], "sparse"),
    }


@pytest.mark.parametrize("name", list(empty_models()))
def test_empty_arrays_round_trip(name):
    dm = empty_models()[name]
    blob = fmt.to_bytes(dm)
    k = next(i for i, la in enumerate(dm.layers) if not la.mask.any())
    rec = fmt._RECORD.unpack_from(blob, fmt.HEADER_SIZE + fmt.RECORD_SIZE * k)
    kind, n_i, n_o, nnz, ib, offs = fmt.KIND_NAMES[rec[0]], rec[4], rec[5], rec[6], rec[8], rec[11:]
    assert nnz == 0 and offs[1] == 0 and offs[2] == 0  # rows and vals: empty, offset 0
    for slot in (0, 3, 4):  # colptr, then b (f32) or zw, bias (q8): stored
        if slot < fmt.N_KIND_SLOTS[kind]:
            assert offs[slot] > 0 and fmt._array_bytes(kind, slot, n_i, n_o, nnz, ib) > 0
    back = fmt.from_bytes(blob)
    assert fmt.to_bytes(back) == blob
    x = _inputs(dm, np.random.default_rng(0), 4)
    np.testing.assert_array_equal(reference.run(back, x), reference.run(dm, x))


@pytest.mark.device
@pytest.mark.parametrize("rt", RT, ids=_ids)
@pytest.mark.parametrize("name", list(empty_models()))
def test_empty_arrays_run_on_micropython(rt, name, tmp_path):
    """nn.load accepts nnz = 0 and every tier's kernels compute the reference."""
    runner, tier = rt
    dm = empty_models()[name]
    x = _inputs(dm, np.random.default_rng(1), 6)
    tiers, ys, _ = run_model(runner, tier, fmt.to_bytes(dm), x, tmp_path)
    assert len(tiers) == len(dm.layers)
    assert_agrees(dm, ys, x)


def _recrc(b: bytearray) -> bytes:
    b[12:16] = struct.pack("<I", zlib.crc32(bytes(b[16:])) & 0xFFFFFFFF)
    return bytes(b)


def test_host_reader_refuses_what_the_device_refuses(device_models):
    """Every crafted bad model of test_device.py (which the device refuses, checked there)
    is refused by format.from_bytes alone, with the device's message."""
    from test_device import bad_models

    cases = bad_models(device_models)
    assert len(cases) > 40
    for what, blob, msg in cases:
        with pytest.raises(ValueError, match=msg):
            fmt.from_bytes(blob)
            raise AssertionError(f"host accepted: {what}")


@pytest.mark.parametrize("kind", ["uint8", "xnor"])
def test_header_dtypes(device_models, kind):
    """The model's input must be u8 or f32 and its output f32 or i32 (checked from the
    header, before the layer chain: an xnor_dense first layer would take bits)."""
    blob = device_models[kind][1]
    b = bytearray(blob)
    b[28] = fmt.DTYPE_CODES["bits"]
    with pytest.raises(ValueError, match="input dtype 2: must be u8 or f32"):
        fmt.from_bytes(_recrc(b))
    b = bytearray(blob)
    b[29] = fmt.DTYPE_CODES["u8"]
    with pytest.raises(ValueError, match="output dtype 0: must be f32 or i32"):
        fmt.from_bytes(_recrc(b))


# ------------------------------------------------------------------ the device's copy

ROOT = Path(__file__).resolve().parent.parent


def device_format():
    """device/nn/_format.py (the device reader's layouts and kind table) imported under
    CPython, with micropython.const as the identity."""
    shim = types.ModuleType("micropython")
    shim.const = lambda v: v  # type: ignore[attr-defined]
    saved = sys.modules.get("micropython")
    sys.modules["micropython"] = shim
    try:
        spec = importlib.util.spec_from_file_location("device_nn_format",
                                                      ROOT / "device" / "nn" / "_format.py")
        assert spec is not None and spec.loader is not None
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
    finally:
        if saved is None:
            sys.modules.pop("micropython", None)
        else:
            sys.modules["micropython"] = saved
    return mod


SIZES = [(1, 1, 0, 1), (100, 22, 500, 1), (33, 300, 7, 2), (784, 128, 0, 1), (65, 31, 2015, 1)]


def test_device_tables_match_the_host():
    """nn._format's layouts, codes and table of kinds equal format.py's, entry by entry:
    dtypes each kind takes and gives, its slots, which of them are f32, and the byte length
    of every slot for several layer shapes (rq only for a u8 output)."""
    d = device_format()
    assert (d.MAGIC, d.VERSION, d.HEADER_SIZE, d.RECORD_SIZE, d.MAX_LAYERS, d.N_SLOTS) == (
        fmt.MAGIC, fmt.VERSION, fmt.HEADER_SIZE, fmt.RECORD_SIZE, fmt.MAX_LAYERS, fmt.N_SLOTS)
    assert "<4s" + d.HEADER[1:] == fmt._HEADER.format
    assert d.RECORD == fmt._RECORD.format
    assert dict(enumerate(d.DTYPES)) == fmt.DTYPE_NAMES
    assert {name: code for code, name in enumerate(d.ACTS)} == fmt.ACT_CODES
    assert d.KINDS[0] is None and len(d.KINDS) == len(fmt.KIND_CODES) + 1 == d.N_KINDS + 1
    for name, code in fmt.KIND_CODES.items():
        entry = d.KINDS[code]
        assert entry[d.KIND_NAME] == name
        ins, outs = fmt.KIND_DTYPES[name]
        assert tuple(d.DTYPES[c] for c in entry[d.KIND_IN]) == ins, name
        assert tuple(d.DTYPES[c] for c in entry[d.KIND_OUT]) == outs, name
        slots = entry[d.KIND_SLOTS]
        assert len(slots) == fmt.N_KIND_SLOTS[name], name
        f32 = tuple(i for i, (_, el) in enumerate(slots) if el == d.EL_F32)
        assert f32 == fmt.F32_SLOTS.get(name, ()), name
        for n_i, n_o, nnz, ib in SIZES:
            for out in outs:
                for slot in range(fmt.N_SLOTS):
                    host = fmt._array_bytes(name, slot, n_i, n_o, nnz, ib)
                    rq = (name, slot) in (("dense_q8", 3), ("sparse_q8", 5))
                    if rq and out != "u8":
                        host = 0  # the rq slot exists only for a u8 output
                    dev = d.array_bytes(code, slot, n_i, n_o, nnz, ib, fmt.DTYPE_CODES[out])
                    assert dev == host, (name, out, slot, n_i, n_o, nnz, ib)


def test_model_constants_match_the_device_format():
    """nn.model repeats some of nn._format's codes as const() (inlined on the hot path):
    each has _format's value."""
    import ast

    d = device_format()
    tree = ast.parse((ROOT / "device" / "nn" / "model.py").read_text())
    consts = {}
    for node in tree.body:
        if (isinstance(node, ast.Assign) and len(node.targets) == 1
                and isinstance(node.targets[0], ast.Name) and isinstance(node.value, ast.Call)
                and getattr(node.value.func, "id", "") == "const"):
            consts[node.targets[0].id] = ast.literal_eval(node.value.args[0])
    shared = {name: getattr(d, name.lstrip("_")) for name in consts
              if hasattr(d, name.lstrip("_")) and not name.startswith("_L_")}
    assert {"_DENSE_F32", "_XNOR_OUT", "_U8", "_I32", "_ACT_RELU"} <= set(shared)
    for name, value in shared.items():
        assert consts[name] == value, name
