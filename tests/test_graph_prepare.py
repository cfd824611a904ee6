"""`_nn_c.graph_prepare`: a graph checked once at nn.load and run by one call per forward.

On the unix port (build/UNIX/micropython): the prepared graph's outputs equal graph_run's
and the host reference's, under micropython.heap_lock(); nn.graph.Model.forward takes
that path for int8 inputs (and still refuses what it refused); graph_prepare refuses a
writable model, corrupt records, a wrong output buffer; a prepared graph rechecks the
arena it keeps; and graph_run, given buffers directly, still checks every call, also at
the address a valid graph ran from.
"""

from __future__ import annotations

import base64
import struct
import subprocess
from pathlib import Path

import mpy
import numpy as np
import pytest

from piconn import format2, int8_ops, xnor_cnn

ROOT = Path(__file__).resolve().parent.parent
MODELS = ROOT / "build" / "models"


def _unix() -> Path:
    if not mpy.UNIX_BINARY.is_file():
        pytest.skip("no build/UNIX/micropython (make firmware BOARD=UNIX)")
    probe = "import _nn_c; print(hasattr(_nn_c, 'graph_prepare'))"
    r = subprocess.run([str(mpy.UNIX_BINARY), "-c", probe], capture_output=True, text=True,
                       check=False)
    if r.stdout.strip() != "True":
        pytest.skip("the unix build's _nn_c has no graph_prepare (make firmware BOARD=UNIX)")
    return mpy.UNIX_BINARY


def _run(code: str, tmp: Path) -> str:
    script = tmp / "script.py"
    script.write_text(code)
    p = subprocess.run([str(_unix()), "-X", "heapsize=8M", str(script)], capture_output=True,
                       text=True, timeout=300, check=False)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]
    return p.stdout


def _b64(b: bytes) -> str:
    return base64.b64encode(b).decode()


def _xnor_blob() -> tuple[bytes, object]:
    # a small binary CNN (int8 input, int32 output): BINARIZE_CONV_2D, XNOR_CONV_2D
    graph = xnor_cnn.to_graph(xnor_cnn.freeze_stem(xnor_cnn.build_xnor_cnn("c8k4s4-f10", seed=1)))
    return format2.to_bytes(graph), graph


def _op_at(blob: bytes, k: int) -> int:
    return 64 + 40 * struct.unpack_from("<H", blob, 16)[0] + 80 * k


def _graphs() -> list[tuple[str, bytes, object]]:
    blob, graph = _xnor_blob()
    out = [("xnor", blob, graph)]
    small = MODELS / "mnist_cnn_small_int8.nnb"
    if small.is_file():  # an int8 output (make cnn-models)
        data = small.read_bytes()
        out.append(("small_int8", data, format2.from_bytes(data).graph))
    return out


def _inputs(graph, n: int, seed: int) -> list[np.ndarray]:
    t = graph.tensors[graph.inputs[0]]
    rng = np.random.default_rng(seed)
    return [rng.integers(-128, 128, t.shape).astype(np.int8) for _ in range(n)]


FORWARD = """
import nn, _nn_c, binascii, micropython
from array import array
from nn import graph
model = binascii.a2b_base64({blob!r})
m = nn.load(model)
print('prepared', type(m._run).__name__ if m._run is not None else None)
xs = [binascii.a2b_base64(s) for s in {xs!r}]
for x in xs:
    xa = array('b', x)
    micropython.heap_lock()
    y0 = m.forward(x)  # allocates nothing
    micropython.heap_unlock()
    y1 = bytes(y0)
    y2 = bytes(m.forward(bytearray(x)))
    y3 = bytes(m.forward(xa))
    y4 = bytes(m.forward(memoryview(xa)))
    arena = bytearray(m.arena_size)
    off = m._in[0][1]
    arena[off:off + len(x)] = x
    _nn_c.graph_run(model, arena, 0, m.n_operators)
    o = m._out[0][1]
    y5 = bytes(arena[o:o + len(y1)])
    print(y1.hex(), y1 == y2 == y3 == y4 == y5)
for bad in (array('B', xs[0]), bytes(len(xs[0]) - 1), array('h', [0] * len(xs[0])), 5):
    try:
        m.forward(bad)
        print('no error')
    except (TypeError, ValueError) as e:
        print(type(e).__name__)
"""


@pytest.mark.parametrize("name", ["xnor", "small_int8"])
def test_forward_takes_the_prepared_graph(name, tmp_path):
    found = {n: (b, g) for n, b, g in _graphs()}
    if name not in found:
        pytest.skip(f"no {MODELS / 'mnist_cnn_small_int8.nnb'} (make cnn-models)")
    blob, graph = found[name]
    xs = _inputs(graph, 3, seed=5)
    out = _run(FORWARD.format(blob=_b64(blob), xs=[_b64(x.tobytes()) for x in xs]),
               tmp_path).split("\n")
    assert out[0] == "prepared Graph", out[0]
    for x, line in zip(xs, out[1:4]):
        hexed, same = line.split()
        want = np.asarray(int8_ops.run(graph, x[None] if x.shape[0] != 1 else x))
        assert same == "True"
        assert bytes.fromhex(hexed) == want.tobytes()
    # array('B') and int16 elements: TypeError; a short input: ValueError; an int: TypeError
    assert out[4:8] == ["TypeError", "ValueError", "TypeError", "TypeError"], out[4:8]


REFUSALS = """
import _nn_c, binascii, uctypes
model = binascii.a2b_base64({blob!r})
bad = binascii.a2b_base64({bad!r})
arena = bytearray({arena})
out = bytearray({out})
def attempt(f):
    try:
        r = f()
        print('ran', r is out)
    except (TypeError, ValueError) as e:
        print(type(e).__name__, e)
g = _nn_c.graph_prepare(model, arena, out)
x = bytes({n_in})
attempt(lambda: g(x))
print(g(bytes({n_in} - 1)), g(bytearray({n_in} + 1)), g(5))
attempt(lambda: _nn_c.graph_prepare(bytearray(model), arena, out))
attempt(lambda: _nn_c.graph_prepare(uctypes.bytearray_at(uctypes.addressof(model), len(model)),
                                    arena, out))
attempt(lambda: _nn_c.graph_prepare(bad, arena, out))
attempt(lambda: _nn_c.graph_prepare(model, arena, bytearray({out} + 1)))
attempt(lambda: _nn_c.graph_prepare(model, bytearray(8), out))
# a writable copy: graph_run checks it on every call, also once it ran valid from there
w = bytearray(model)
attempt(lambda: _nn_c.graph_run(w, arena, 0, {n_ops}) or out)
w[{at}:{at} + 4] = bad[{at}:{at} + 4]
attempt(lambda: _nn_c.graph_run(w, arena, 0, {n_ops}))
# the model's own address as a writable view, corrupted in place after a valid run
v = uctypes.bytearray_at(uctypes.addressof(model), len(model))
attempt(lambda: _nn_c.graph_run(v, arena, 0, {n_ops}) or out)
keep = bytes(v[{at}:{at} + 4])
v[{at}:{at} + 4] = bad[{at}:{at} + 4]
attempt(lambda: _nn_c.graph_run(v, arena, 0, {n_ops}))
attempt(lambda: _nn_c.graph_run(model, arena, 0, {n_ops}))
v[{at}:{at} + 4] = keep
attempt(lambda: _nn_c.graph_run(model, arena, 0, {n_ops}) or out)
# a prepared graph fetches its arena again: shrunk, it is refused
arena[0:len(arena)] = b''
attempt(lambda: g(x))
"""


def test_prepare_refuses_and_graph_run_still_checks(tmp_path):
    blob, graph = _xnor_blob()
    n_ops = len(graph.operators)
    at = _op_at(blob, 1) + 16 + 4  # XNOR_CONV_2D's stride_h: 0 is out of range
    bad = bytearray(blob)
    struct.pack_into("<i", bad, at, 0)
    x_t, y_t = graph.tensors[graph.inputs[0]], graph.tensors[graph.outputs[0]]
    arena = max(format2.from_bytes(blob).arena_size, 4)
    out = _run(REFUSALS.format(blob=_b64(blob), bad=_b64(bytes(bad)), arena=arena,
                               out=y_t.nbytes, n_in=x_t.nbytes, n_ops=n_ops, at=at),
               tmp_path).strip().split("\n")
    read_only = "TypeError graph_prepare: the model must be read-only"
    stride = "operator 1: param out of range"
    want = [
        "ran True",  # the prepared graph returns its out buffer
        "None None None",  # inputs it does not take: None, nothing ran
        read_only, read_only,  # a bytearray copy; the model's own bytes through uctypes
        "ValueError graph_prepare: " + stride,
        "ValueError graph_prepare: out:",
        "ValueError graph_prepare: operator 0: arena shorter than the model's arena_size",
        "ran True", "ValueError graph_run: " + stride,  # a copy, valid then corrupted
        "ran True", "ValueError graph_run: " + stride,  # the model's address, likewise
        "ValueError graph_run: " + stride,  # the bytes object itself, changed under it
        "ran True",  # restored
        "ValueError arena:",  # the prepared graph's arena, shrunk
    ]
    assert len(out) == len(want), out
    for got, start in zip(out, want):
        assert got.startswith(start), (got, start)


TIERS = """
import nn, binascii
from nn import graph
m = nn.load(binascii.a2b_base64({blob!r}))
x = binascii.a2b_base64({x!r})
calls = []
prepared = m._run
def spy(x):
    calls.append(1)
    return prepared(x)
m._run = spy
c = bytes(m.forward(x))
nn.use_backend('viper')
v = bytes(m.forward(x))
nn.use_backend('python')
p = bytes(m.forward(x))
nn.use_backend('c')
c2 = bytes(m.forward(x))
print(len(calls), c == v == p == c2)
"""


def test_other_tiers_do_not_take_the_prepared_graph(tmp_path):
    blob, graph = _xnor_blob()
    x = _inputs(graph, 1, seed=9)[0]
    out = _run(TIERS.format(blob=_b64(blob), x=_b64(x.tobytes())), tmp_path).split()
    assert out == ["2", "True"], out  # the two forwards on the C tier only
