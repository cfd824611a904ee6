"""Format version 2 (int8 graphs) on the device: `nn.load` of TensorFlow Lite models.

Under MicroPython (tools/mpy.py's runners: the unix-port build with every tier it has,
the webassembly port's plain-Python tier), in every tier present:
- bit-exact: small graphs covering every operator and option, and the four MLPerf Tiny
  models, give the outputs of the host reference (`int8_ops.run`) byte for byte;
- `forward`/`predict` allocate nothing for int8 models (`micropython.heap_lock()`);
- the model object (OpenMV ml's names, quantize/dequantize, summary, input checks);
- fuzz: thousands of corruptions of two small models (byte flips and every record field
  at boundary values, the CRC recomputed) are refused by the device exactly when
  `format2.from_bytes` refuses them, and the ones that load compute the reference's
  output.
"""

from __future__ import annotations

import copy
import os
import struct
import zlib
from pathlib import Path

import mpy
import numpy as np
import pytest

pytest.importorskip("tflite", reason="PyPI tflite (test extra) builds the models")

from test_tflite_format2 import every_kind
from tflite_build import ModelBuilder

from piconn import format2, int8, int8_ops
from piconn import graph as g
from piconn.tflite import import_tflite

ROOT = Path(__file__).resolve().parent.parent
MLPERF = Path(os.environ.get("PICONN_MLPERF_TINY")
              or ROOT.parent / "shared" / "models" / "mlperf-tiny")
MLPERF_MODELS = ("kws_ref_model", "vww_96_int8", "pretrainedResnet_quant", "ad01_int8")
SAME, VALID = 0, 1
NONE, RELU, RELU6 = 0, 1, 3
N_FUZZ = 1050  # corruptions per base model (two base models) per tier
N_VARIANTS = 100  # and valid models near it


def _runner_tiers(unix_only: bool = False) -> list:
    out = [(r, t) for r in mpy.runners() for t in r.tiers if r.name == "unix" or not unix_only]
    return out or [pytest.param(None, marks=pytest.mark.skip(reason=mpy.why_none()))]


def _ids(p) -> str:
    return f"{p[0].name}-{p[1]}"


RT = _runner_tiers()
RT_UNIX = _runner_tiers(unix_only=True)


# ------------------------------------------------------------------ small graphs


def _weights(rng, shape) -> np.ndarray:
    return rng.integers(-127, 128, size=shape).astype(np.int8)


def cnn() -> g.Graph:
    """PAD, CONV_2D (per channel, SAME, stride 2, RELU; 1x1 per tensor without bias),
    DEPTHWISE_CONV_2D (multiplier 2, VALID, RELU6, no bias), both pools, ADD with a
    broadcast constant, MEAN, FULLY_CONNECTED, SOFTMAX; int8 in and out."""
    rng = np.random.default_rng(21)
    b = ModelBuilder()
    x = b.tensor([1, 9, 9, 3], scale=0.05, zero=-7)
    pads = b.tensor([4, 2], "int32", data=[[0, 0], [1, 0], [0, 1], [0, 0]])
    xp = b.tensor([1, 10, 10, 3], scale=0.05, zero=-7)
    w1 = b.tensor([6, 3, 3, 3], scale=rng.uniform(0.005, 0.02, 6), zero=[0] * 6,
                  data=_weights(rng, (6, 3, 3, 3)))
    b1 = b.tensor([6], "int32", data=rng.integers(-800, 800, 6))
    c1 = b.tensor([1, 5, 5, 6], scale=0.1, zero=-128)
    w2 = b.tensor([1, 3, 3, 12], scale=rng.uniform(0.005, 0.02, 12), zero=[0] * 12, axis=3,
                  data=_weights(rng, (1, 3, 3, 12)))
    d = b.tensor([1, 3, 3, 12], scale=0.08, zero=-100)
    a = b.tensor([1, 3, 3, 12], scale=0.08, zero=-100)
    w3 = b.tensor([8, 1, 1, 12], scale=[0.01], zero=[0], data=_weights(rng, (8, 1, 1, 12)))
    c2 = b.tensor([1, 3, 3, 8], scale=0.1, zero=5)
    m = b.tensor([1, 2, 2, 8], scale=0.1, zero=5)
    k = b.tensor([1, 1, 1, 8], scale=0.07, zero=3, data=rng.integers(-128, 128, (1, 1, 1, 8)))
    ad = b.tensor([1, 2, 2, 8], scale=0.12, zero=-3)
    axes = b.tensor([2], "int32", data=[1, 2])
    me = b.tensor([1, 8], scale=0.05, zero=2)
    w4 = b.tensor([10, 8], scale=rng.uniform(0.01, 0.03, 10), zero=[0] * 10,
                  data=_weights(rng, (10, 8)))
    b4 = b.tensor([10], "int32", data=rng.integers(-300, 300, 10))
    f = b.tensor([1, 10], scale=0.2, zero=-10)
    s = b.tensor([1, 10], scale=1 / 256, zero=-128)
    b.op("PAD", [x, pads], [xp])
    b.op("CONV_2D", [xp, w1, b1], [c1], "Conv2DOptions", Padding=SAME, StrideW=2, StrideH=2,
         FusedActivationFunction=RELU)
    b.op("DEPTHWISE_CONV_2D", [c1, w2, -1], [d], "DepthwiseConv2DOptions", Padding=VALID,
         StrideW=1, StrideH=1, DepthMultiplier=2, FusedActivationFunction=RELU6)
    b.op("AVERAGE_POOL_2D", [d], [a], "Pool2DOptions", Padding=SAME, StrideW=1, StrideH=1,
         FilterWidth=3, FilterHeight=3)
    b.op("CONV_2D", [a, w3, -1], [c2], "Conv2DOptions", Padding=VALID, StrideW=1, StrideH=1)
    b.op("MAX_POOL_2D", [c2], [m], "Pool2DOptions", Padding=VALID, StrideW=1, StrideH=1,
         FilterWidth=2, FilterHeight=2, FusedActivationFunction=RELU)
    b.op("ADD", [m, k], [ad], "AddOptions", FusedActivationFunction=RELU6)
    b.op("MEAN", [ad, axes], [me], "ReducerOptions", KeepDims=False)
    b.op("FULLY_CONNECTED", [me, w4, b4], [f], "FullyConnectedOptions",
         FusedActivationFunction=RELU)
    b.op("SOFTMAX", [f], [s], "SoftmaxOptions", Beta=0.7)
    return import_tflite(b.build([x], [s]))


def elementwise() -> g.Graph:
    """FULLY_CONNECTED over batches of a 3-D input (no bias), LOGISTIC, TANH, QUANTIZE
    int8 -> int8, RESHAPE."""
    rng = np.random.default_rng(22)
    b = ModelBuilder()
    x = b.tensor([2, 3, 4], scale=0.1, zero=-20)
    w = b.tensor([5, 4], scale=[0.02], zero=[0], data=_weights(rng, (5, 4)))
    f = b.tensor([6, 5], scale=0.05, zero=4)
    lg = b.tensor([6, 5], scale=1 / 256, zero=-128)
    th = b.tensor([6, 5], scale=1 / 128, zero=0)
    q = b.tensor([6, 5], scale=0.02, zero=9)
    shape = b.tensor([1], "int32", data=[30])
    r = b.tensor([30], scale=0.02, zero=9)
    b.op("FULLY_CONNECTED", [x, w, -1], [f], "FullyConnectedOptions")
    b.op("LOGISTIC", [f], [lg])
    b.op("TANH", [lg], [th])
    b.op("QUANTIZE", [th], [q])
    b.op("RESHAPE", [q, shape], [r], "ReshapeOptions", NewShape=[30])
    return import_tflite(b.build([x], [r]))


def two_in_two_out() -> g.Graph:
    """Two graph inputs (ADD broadcasting one over the other), two outputs (the sum and
    its MEAN, keep_dims), a max pool with SAME padding."""
    b = ModelBuilder()
    x1 = b.tensor([1, 4, 5, 3], scale=0.05, zero=-3)
    x2 = b.tensor([1, 1, 5, 3], scale=0.11, zero=12)
    y1 = b.tensor([1, 4, 5, 3], scale=0.09, zero=-10)
    p = b.tensor([1, 2, 3, 3], scale=0.09, zero=-10)
    axes = b.tensor([2], "int32", data=[2, 1])
    y2 = b.tensor([1, 1, 1, 3], scale=0.03, zero=1)
    b.op("ADD", [x1, x2], [y1], "AddOptions")
    b.op("MAX_POOL_2D", [y1], [p], "Pool2DOptions", Padding=SAME, StrideW=2, StrideH=2,
         FilterWidth=3, FilterHeight=2)
    b.op("MEAN", [p, axes], [y2], "ReducerOptions", KeepDims=True)
    return import_tflite(b.build([x1, x2], [y1, y2]))


def one_channel() -> g.Graph:
    """CONV_2D of one input channel (5x5, stride 2, SAME: windows cut at every edge) over
    a batch of two images, then 3x3 stride 2 VALID: the viper tier's whole-pixel loop."""
    rng = np.random.default_rng(23)
    b = ModelBuilder()
    x = b.tensor([2, 11, 10, 1], scale=0.04, zero=-128)
    w1 = b.tensor([5, 5, 5, 1], scale=rng.uniform(0.005, 0.02, 5), zero=[0] * 5,
                  data=_weights(rng, (5, 5, 5, 1)))
    b1 = b.tensor([5], "int32", data=rng.integers(-500, 500, 5))
    c1 = b.tensor([2, 6, 5, 5], scale=0.1, zero=-20)
    w2 = b.tensor([3, 3, 3, 5], scale=rng.uniform(0.005, 0.02, 3), zero=[0] * 3,
                  data=_weights(rng, (3, 3, 3, 5)))
    c2 = b.tensor([2, 2, 2, 3], scale=0.15, zero=4)
    b.op("CONV_2D", [x, w1, b1], [c1], "Conv2DOptions", Padding=SAME, StrideW=2, StrideH=2,
         FusedActivationFunction=RELU)
    b.op("CONV_2D", [c1, w2, -1], [c2], "Conv2DOptions", Padding=VALID, StrideW=2, StrideH=2)
    return import_tflite(b.build([x], [c2]))


SMALL = {"cnn": cnn, "elementwise": elementwise, "two_in_two_out": two_in_two_out,
         "every_kind": every_kind, "one_channel": one_channel}


def mlperf(name: str) -> g.Graph:
    path = MLPERF / f"{name}.tflite"
    if not path.is_file():
        pytest.skip(f"{path} not found: set PICONN_MLPERF_TINY to the folder holding MLPerf"
                    " Tiny's four int8 reference models")
    return import_tflite(path)


def random_inputs(graph: g.Graph, n: int, seed: int) -> list[list[np.ndarray]]:
    """n inputs (one array per graph input); the first is all -128 where int8."""
    rng = np.random.default_rng(seed)
    out = []
    for k in range(n):
        xs = []
        for i in graph.inputs:
            t = graph.tensors[i]
            if t.dtype == g.FLOAT32:
                xs.append(rng.normal(0, 2, t.shape).astype(np.float32))
            else:
                v = -128 if k == 0 else None
                xs.append(np.full(t.shape, v, np.int8) if v is not None else
                          rng.integers(-128, 128, t.shape, dtype=np.int8))
        out.append(xs)
    return out


def reference(graph: g.Graph, xs: list[np.ndarray]) -> list[np.ndarray]:
    y = int8_ops.run(graph, xs if len(xs) > 1 else xs[0])
    return list(y) if isinstance(y, tuple) else [y]


# ------------------------------------------------------------------ running on the device

RUN = """
import nn, binascii, array
nn.use_backend({tier!r})
f = open({path!r}, 'rb')
for _ in range(int(f.readline())):
    m = nn.load(f.read(int(f.readline())))
    print('T', ' '.join(m.tiers()))
    sizes = [1 if d == 'b' else 4 for d in m.input_dtype]
    for _ in range(int(f.readline())):
        raw = f.read(int(f.readline()))
        xs = []
        at = 0
        for j in range(len(m.input_shape)):
            n = 1
            for d in m.input_shape[j]:
                n *= d
            x = raw[at:at + n * sizes[j]]
            at += n * sizes[j]
            xs.append(array.array('f', x) if m.input_dtype[j] == 'f' else x)
        y = m.forward(xs[0] if len(xs) == 1 else tuple(xs))
        ys = y if type(y) is tuple else (y,)
        print('Y', ' '.join(binascii.hexlify(bytes(v)).decode() for v in ys), m.predict(
            xs[0] if len(xs) == 1 else tuple(xs)))
"""


def run_on_device(runner: mpy.Runner, tier: str, cases, tmp: Path, timeout: float = 300):
    """cases: [(blob, [[x per graph input], ...])]; returns [(tiers, [[outputs], ...],
    [predictions])] as the device computed them."""
    path = tmp / "cases.bin"
    with open(path, "wb") as f:
        f.write(b"%d\n" % len(cases))
        for blob, inputs in cases:
            f.write(b"%d\n" % len(blob) + blob + b"%d\n" % len(inputs))
            for xs in inputs:
                raw = b"".join(np.ascontiguousarray(x).tobytes() for x in xs)
                f.write(b"%d\n" % len(raw) + raw)
    lines = runner.run(RUN.format(tier=tier, path=str(path)), timeout=timeout,
                       dirs=(tmp,)).splitlines()
    out = []
    for blob, inputs in cases:
        tiers = lines.pop(0).split()[1:]
        ys, preds = [], []
        for _ in inputs:
            words = lines.pop(0).split()
            ys.append([bytes.fromhex(h) for h in words[1:-1]])
            preds.append(int(words[-1]))
        out.append((tiers, ys, preds))
    return out


_GRAPH_RUN: dict[str, bool] = {}


def has_graph_run(runner: mpy.Runner) -> bool:
    """Whether the runner's C module (firmware or native) has graph_run."""
    if runner.name not in _GRAPH_RUN:
        out = runner.run("from nn._tiers import C_MODULE\n"
                         "print(hasattr(C_MODULE, 'graph_run'))", timeout=60)
        _GRAPH_RUN[runner.name] = out.strip() == "True"
    return _GRAPH_RUN[runner.name]


def expected_tiers(runner: mpy.Runner, tier: str) -> set[str]:
    """The tiers operators may report when `tier` is in use: C runs every operator
    where its module has graph_run, else the tiers below it do."""
    if tier in ("c", "natmod"):
        return {tier} if has_graph_run(runner) else {"viper", "python"}
    return {"viper", "python"} if tier == "viper" else {"python"}


def check_agreement(graph: g.Graph, runner: mpy.Runner, tier: str, result, inputs) -> None:
    tiers, ys, preds = result
    assert len(tiers) == len(graph.operators)
    allowed = expected_tiers(runner, tier)
    assert set(tiers) <= allowed
    if tier != "python":  # the tier's own kernels run the convolutions
        conv = [t for t, op in zip(tiers, graph.operators, strict=True)
                if op.kind in (g.CONV_2D, g.DEPTHWISE_CONV_2D, g.FULLY_CONNECTED)]
        assert all(t == min(allowed, key=("c", "natmod", "viper", "python").index)
                   for t in conv)
    for xs, got, pred in zip(inputs, ys, preds, strict=True):
        want = reference(graph, xs)
        assert got == [w.tobytes() for w in want]
        assert pred == int(np.argmax(want[0].reshape(-1)))


@pytest.mark.parametrize("rt", RT, ids=_ids)
def test_small_graphs_bit_exact(rt, tmp_path):
    """Every operator and option in small graphs: the device's outputs are the host
    reference's, byte for byte, in every tier."""
    runner, tier = rt
    graphs = {k: f() for k, f in SMALL.items()}
    cases = [(format2.to_bytes(gr), random_inputs(gr, 6, seed)) for seed, gr in
             enumerate(graphs.values())]
    results = run_on_device(runner, tier, cases, tmp_path)
    kinds = set()
    for gr, (_, inputs), result in zip(graphs.values(), cases, results, strict=True):
        check_agreement(gr, runner, tier, result, inputs)
        kinds |= {op.kind for op in gr.operators}
    binary = {g.BINARIZE, g.XNOR_CONV_2D, g.BINARY_MAX_POOL_2D,  # test_xnor_graph_device's
              g.BINARIZE_CONV_2D}
    assert kinds == set(format2.KIND_CODES) - binary  # every int8 kind version 2 holds


@pytest.mark.parametrize("rt", RT_UNIX, ids=_ids)
@pytest.mark.parametrize("name", MLPERF_MODELS)
def test_mlperf_tiny_bit_exact(rt, name, tmp_path):
    """The four MLPerf Tiny models: outputs equal the host reference's (2 random
    inputs, 1 in the python tier: 1-4 s each on the unix port)."""
    runner, tier = rt
    graph = mlperf(name)
    inputs = random_inputs(graph, 1 if tier == "python" else 2, seed=5)
    [result] = run_on_device(runner, tier, [(format2.to_bytes(graph), inputs)], tmp_path,
                             timeout=600)
    check_agreement(graph, runner, tier, result, inputs)


HEAP = """
import nn, micropython, gc
nn.use_backend({tier!r})
m = nn.load(open({path!r}, 'rb').read())
x = bytes(range(256)) * ({n} // 256) + bytes(range({n} % 256))
out = bytearray({n_out})

def run(m, x, out):
    # locals only: a new global would grow the module dict (an allocation)
    err = None
    y = k = None
    micropython.heap_lock()
    try:
        for i in range(3):
            y = m.forward(x)
            k = m.predict(x)
            m.forward(x, out)
    except Exception as e:
        err = e
    micropython.heap_unlock()
    return err, y, k

gc.collect()
err, y, k = run(m, x, out)  # the first forward after load too
print('ERR', repr(err)) if err is not None else print('OK', k, bytes(y).hex(), out.hex())
m2 = nn.load(open({path2!r}, 'rb').read())
x2 = (bytes(range(60)), bytes(range(100, 115)))
out2 = (bytearray(60), bytearray(3))
m2.forward(x2)
gc.collect()
err, y, k = run(m2, x2, out2)
print('ERR', repr(err)) if err is not None else print('OK', k, ' '.join(
    bytes(v).hex() for v in y + out2))
"""


@pytest.mark.parametrize("rt", RT, ids=_ids)
def test_heap_lock(rt, tmp_path):
    """forward (also with out=) and predict of int8 models allocate nothing (one input
    and output; two of each, passed and returned as tuples)."""
    runner, tier = rt
    graph = cnn()
    graph2 = two_in_two_out()
    (tmp_path / "m.nnb").write_bytes(format2.to_bytes(graph))
    (tmp_path / "m2.nnb").write_bytes(format2.to_bytes(graph2))
    t_in = graph.tensors[graph.inputs[0]]
    t_out = graph.tensors[graph.outputs[0]]
    out = runner.run(HEAP.format(tier=tier, path=str(tmp_path / "m.nnb"), n=t_in.size,
                                 n_out=t_out.size, path2=str(tmp_path / "m2.nnb")),
                     dirs=(tmp_path,), timeout=120).splitlines()
    assert out[0].startswith("OK") and out[1].startswith("OK"), out
    raw = bytes(range(256)) * (t_in.size // 256) + bytes(range(t_in.size % 256))
    want = reference(graph, [np.frombuffer(raw, np.int8).reshape(t_in.shape)])[0]
    _, k, y, y_out = out[0].split()
    assert int(k) == int(np.argmax(want)) and bytes.fromhex(y) == want.tobytes()
    assert bytes.fromhex(y_out) == want.tobytes()
    xs = [np.frombuffer(bytes(range(60)), np.int8).reshape(1, 4, 5, 3),
          np.frombuffer(bytes(range(100, 115)), np.int8).reshape(1, 1, 5, 3)]
    want = [w.tobytes().hex() for w in reference(graph2, xs)]
    words = out[1].split()
    assert int(words[1]) == int(np.argmax(reference(graph2, xs)[0]))
    assert words[2:] == want + want


PICO = """
import nn, binascii, micropython
from nn import graph
print('B', graph._graph_run is not None, ' '.join(nn.backends()))
m = nn.load({blob!r})
xs = {inputs!r}
y = None
for be in nn.backends():
    nn.use_backend(be)
    m.forward(xs[0])  # (the first call after a change of tier builds its steps)
    for x in xs:
        micropython.heap_lock()
        try:
            y = m.forward(x)
        finally:
            micropython.heap_unlock()
        print('Y', be, ' '.join(m.tiers()), binascii.hexlify(bytes(y)).decode())
"""


def test_virtual_pico(tmp_path):
    """On the emulated RP2040 (32-bit: the requantization on limbs in viper and python,
    the C module's graph_run) the cnn graph gives the host reference's outputs in every
    tier, each forward() under heap_lock."""
    uf2 = ROOT / "build" / "PICO" / "firmware.uf2"
    if not uf2.is_file():
        pytest.skip("no build/PICO/firmware.uf2 (make firmware)")
    pytest.importorskip("rp2040py", reason="rp2040py (the virtual Pico) is not installed")
    from vpico import DeviceError, VirtualPico

    graph = cnn()
    inputs = [xs[0] for xs in random_inputs(graph, 3, 12)]
    code = PICO.format(blob=format2.to_bytes(graph), inputs=[x.tobytes() for x in inputs])
    with VirtualPico(uf2) as pico:
        try:
            out = pico.run_script(code, timeout=900).splitlines()
        except DeviceError as e:
            if "no module named 'nn.graph'" in str(e):  # an older firmware
                pytest.skip("the firmware predates nn.graph (make firmware BOARD=PICO)")
            raise
    has_graph_run, tiers = out[0].split()[1] == "True", out[0].split()[2:]
    want = [reference(graph, [x])[0].tobytes().hex() for x in inputs]
    rows = [line.split() for line in out[1:]]
    assert [r[1] for r in rows] == [t for t in tiers for _ in inputs]
    assert "python" in tiers
    for r, w in zip(rows, want * (len(rows) // len(inputs)), strict=True):
        assert r[-1] == w, r[:-1]
        ops = r[2:-1]
        if r[1] == "python":
            assert set(ops) == {"python"}, r[:-1]
        elif r[1] == "viper" or not has_graph_run:
            assert ops[1] == "viper" and set(ops) <= {"viper", "python"}, r[:-1]
        else:
            assert set(ops) == {r[1]}, r[:-1]


# ------------------------------------------------------------------ the model object

API = """
import nn, array
m = nn.load({path!r})
print('SHAPES', m.input_shape, m.input_dtype, m.input_zero_point, m.output_shape,
      m.output_dtype, m.output_zero_point)
print('SCALES', repr(m.input_scale[0]), repr(m.output_scale[0]))
print('SIZES', m.arena_size, m.model_bytes, m.where, m.integer)
n = 1
for d in m.input_shape[0]:
    n *= d
for bad in (array.array('B', bytes(n)), array.array('h', bytes(2 * n)), bytes(n - 1), 7,
            [0] * n, array.array('b', bytes(n + 1))):
    try:
        m.forward(bad)
        print('ACCEPTED', type(bad).__name__)
    except (TypeError, ValueError) as e:
        print(type(e).__name__, e)
try:
    m.forward(bytes(n), out=bytes(10))
except TypeError as e:
    print('TypeError', e)
q = m.quantize([{reals}])
print('Q', bytes(q).hex())
y = m.forward(q)
print('Y', bytes(y).hex(), m.predict(q), m.predict(memoryview(bytes(q))))
print('D', ' '.join(repr(v) for v in m.dequantize(y)))
print(m.summary())
"""


def test_model_object(micropython, tmp_path):
    """OpenMV ml's names (lists per input/output), quantize/dequantize as TensorFlow
    Lite computes them, input checks naming what the model takes, the summary."""
    graph = cnn()
    blob = format2.to_bytes(graph)
    (tmp_path / "m.nnb").write_bytes(blob)
    t_in, t_out = graph.tensors[graph.inputs[0]], graph.tensors[graph.outputs[0]]
    rng = np.random.default_rng(3)
    reals = rng.normal(0, 3, t_in.size).astype(np.float32)
    reals[:4] = [0.025, -0.025, 0.075, 100.0]  # halves of the scale, saturation
    out = micropython(API.format(path=str(tmp_path / "m.nnb"),
                                 reals=", ".join(repr(float(v)) for v in reals)),
                      dirs=(tmp_path,)).splitlines()
    assert out[0] == (f"SHAPES [{tuple(t_in.shape)}] ['b'] [{int(t_in.quant.zero_point[0])}] "
                      f"[{tuple(t_out.shape)}] ['b'] [-128]")
    s_in, s_out = (float(v) for v in out[1].split()[1:])
    assert np.float32(s_in) == t_in.quant.scale[0] and s_out == 1 / 256
    plan = g.plan_memory(graph)
    assert out[2] == f"SIZES {plan.arena_size} {len(blob)} file True"
    errors = out[3:10]
    assert errors[0].startswith("TypeError") and "array('B')" in errors[0]
    assert errors[1].startswith("TypeError") and "wider elements" in errors[1]
    assert errors[2] == f"ValueError input takes {t_in.size} int8 values, got {t_in.size - 1}"
    assert errors[3].startswith("TypeError") and "not int" in errors[3]
    assert errors[4].startswith("TypeError") and "not list" in errors[4]
    assert errors[5].startswith("ValueError") and f"got {t_in.size + 1}" in errors[5]
    assert errors[6].startswith("TypeError") and "writable" in errors[6]
    want_q = int8.quantize(reals.reshape(t_in.shape),
                           int8.QuantizeParams(float(t_in.quant.scale[0]),
                                               int(t_in.quant.zero_point[0])))
    assert out[10] == "Q " + want_q.tobytes().hex()
    want_y = reference(graph, [want_q])[0]
    words = out[11].split()
    assert words[1] == want_y.tobytes().hex()
    assert int(words[2]) == int(words[3]) == int(np.argmax(want_y))
    deq = [float(v) for v in out[12].split()[1:]]
    np.testing.assert_array_equal(np.float32(deq), int8.dequantize(
        want_y, int8.DequantizeParams(1 / 256, -128)).reshape(-1))
    summary = "\n".join(out[13:])
    for k, op in enumerate(graph.operators):
        line = summary.splitlines()[2 + k]
        assert op.kind in line and str(graph.op_macs(k)) in line
    assert f"MACs {graph.macs()}; arena {plan.arena_size} B" in summary
    assert "read from a file into RAM" in summary


LOADS = """
import nn
m1 = nn.load({v1!r})
m2 = nn.load(open({v2!r}, 'rb').read())
print(type(m1).__name__, m1.family, type(m2).__name__, len(m2.input_shape))
for src in (bytearray(open({v2!r}, 'rb').read()), {v3!r}, {short!r}, {crc!r}):
    try:
        nn.load(src)
        print('LOADED')
    except (TypeError, ValueError) as e:
        print(type(e).__name__, e)
"""


def test_load_dispatch(micropython, device_models, tmp_path):
    """nn.load hands version 2 to nn.graph and version 1 to nn.model; a writable buffer,
    another version, a truncated file and a flipped bit are refused with what is wrong."""
    blob = format2.to_bytes(cnn())
    (tmp_path / "m.nnb").write_bytes(blob)
    (tmp_path / "v1.nnb").write_bytes(device_models["uint8"][1])
    v3 = blob[:4] + b"\x03\x00" + blob[6:]
    flipped = bytearray(blob)
    flipped[200] ^= 1
    out = micropython(LOADS.format(v1=str(tmp_path / "v1.nnb"), v2=str(tmp_path / "m.nnb"),
                                   v3=v3, short=blob[:-4], crc=bytes(flipped)),
                      dirs=(tmp_path,)).splitlines()
    assert out[0] == "Model uint8 Model 1"
    assert out[1].startswith("TypeError") and "read-only" in out[1]
    assert out[2].startswith("ValueError") and "version 3" in out[2]
    assert out[3].startswith("ValueError") and "buffer has" in out[3]
    assert out[4].startswith("ValueError") and "CRC" in out[4]


# ------------------------------------------------------------------ exact arithmetic

EXACT = """
from nn import _graph_prepare as P
from nn._int8_python import quantize_bits
f = open({path!r})
for line in f:
    a, b, c, x = (int(v) for v in line.split())
    num, den = P._mul(P._f32(a), P._f32(b)), P._f32(c)
    m1 = P.ratio_multiplier(num, den)
    m2 = P.quantize_multiplier(P._ddiv(num, den))
    ms, es = P._f32(c)
    print(m1[0], m1[1], m2[0], m2[1], P.f32_bits(6, ms, -es, False),
          P.f32_bits(ms * 77, 1, es, True), quantize_bits(x, ms, es))
"""


def _f32s(rng, n: int) -> np.ndarray:
    """Positive finite float32s: typical scales, and any exponent (subnormals too)."""
    typical = rng.uniform(1e-5, 1.0, n).astype(np.float32)
    bits = rng.integers(1, 0x7F800000, n).astype(np.uint32).view(np.float32)
    return np.where(rng.random(n) < 0.5, typical, bits)


def test_exact_arithmetic(micropython, tmp_path):
    """The device's integer re-expression of double and float32 steps equals the FPU's:
    QuantizeMultiplier of a * b / c in double (both ways nn._graph_prepare computes it),
    6.0f / c (a RELU6 bound), float(double(c) * -77) (a DEQUANTIZE table entry), and
    round(x / c) in float32 (QUANTIZE), for random float32s of every exponent."""
    rng = np.random.default_rng(8)
    n = 3000
    a, b, c = _f32s(rng, n), _f32s(rng, n), _f32s(rng, n)
    with np.errstate(over="ignore"):
        x = np.where(rng.random(n) < 0.5, rng.normal(0, 100, n).astype(np.float32) * c,
                     _f32s(rng, n) * np.where(rng.random(n) < 0.5, -1, 1).astype(np.float32))
    x = np.where(np.isfinite(x), x, c)  # finite inputs (forward refuses others)
    bits = lambda v: v.astype(np.float32).view(np.uint32).astype(np.int64)
    rows = np.stack([bits(a), bits(b), bits(c), bits(x)], axis=1)
    (tmp_path / "exact.txt").write_text("\n".join(" ".join(map(str, r)) for r in rows))
    out = micropython(EXACT.format(path=str(tmp_path / "exact.txt")), dirs=(tmp_path,),
                      timeout=300).splitlines()
    assert len(out) == n
    with np.errstate(over="ignore", invalid="ignore"):  # x / c may overflow to inf
        six = bits(np.float32(6) / c)
        lutf = bits((c.astype(np.float64) * -77).astype(np.float32))
        q = int8.round_half_away_f32(x / c)
    for i, line in enumerate(out):
        m1, s1, m2, s2, d6, dq, qx = (int(v) for v in line.split())
        want = int8.quantize_multiplier(float(a[i]) * float(b[i]) / float(c[i]))
        assert (m1, s1) == want and (m2, s2) == want, (i, a[i], b[i], c[i])
        assert d6 == six[i] and dq == lutf[i], (i, c[i])
        assert qx == int(np.clip(q[i], int8.INT32_MIN, int8.INT32_MAX)), (i, x[i], c[i])


SMALL_INTS = """
import micropython, array
from nn import _int8_fixed as X
f = open({path!r})
xs = array.array('i', [int(v) for v in f.readline().split()])
mh = array.array('i', [int(v) for v in f.readline().split()])
ml = array.array('i', [int(v) for v in f.readline().split()])
shift = array.array('i', [int(v) for v in f.readline().split()])
totals = array.array('i', [int(v) for v in f.readline().split()])
out = array.array('i', bytes(4 * len(xs)))
rec = array.array('i', bytes(4 * len(totals)))

def run(xs, mh, ml, shift, totals, out, rec):
    micropython.heap_lock()
    try:
        for i in range(len(xs)):
            out[i] = X.requantize(xs[i], mh[i], ml[i], shift[i])
        for i in range(len(totals)):
            rec[i] = X.reciprocal_small(totals[i], X.headroom_plus_one(totals[i]))
    finally:
        micropython.heap_unlock()

run(xs, mh, ml, shift, totals, out, rec)
print(' '.join(str(v) for v in out))
print(' '.join(str(v) for v in rec))
"""


@pytest.mark.parametrize("runner", [r for r in mpy.runners()] or [pytest.param(
    None, marks=pytest.mark.skip(reason=mpy.why_none()))], ids=str)
def test_small_int_requantization(runner, tmp_path):
    """The python tier's requantization on small ints (16-bit halves of the multiplier,
    14-bit limbs) equals TensorFlow Lite Micro's MultiplyByQuantizedMultiplier (the host's
    int8.mbqm) for random int32 accumulators of up to 30 bits, multipliers and shifts
    (results beyond +-(2^30 - 1) saturate there), and the softmax reciprocal equals
    GetReciprocal's; all under heap_lock, so allocation-free on the webassembly port's
    31-bit small ints too."""
    rng = np.random.default_rng(30)
    n = 4000
    x = np.where(rng.random(n) < 0.5, rng.integers(-(1 << 30) + 1, 1 << 30, n),
                 rng.integers(-70000, 70000, n))
    x[:4] = [-(1 << 30) + 1, (1 << 30) - 1, 0, -1]
    m = np.where(rng.random(n) < 0.9, rng.integers(1 << 30, 1 << 31, n),
                 rng.integers(0, 1 << 31, n))
    shift = np.where(rng.random(n) < 0.5, rng.integers(-31, 31, n), rng.integers(-12, 4, n))
    totals = np.concatenate([rng.integers(1, 1 << 28, 400), 1 << np.arange(28),
                             rng.integers(1 << 19, 1 << 20, 400)])
    lines = [x, m >> 16, m & 0xFFFF, shift, totals]
    (tmp_path / "v.txt").write_text("\n".join(" ".join(map(str, v)) for v in lines) + "\n")
    out = runner.run(SMALL_INTS.format(path=str(tmp_path / "v.txt")), dirs=(tmp_path,),
                     timeout=300).splitlines()
    limit = (1 << 30) - 1
    want = np.clip(int8.mbqm(x, m, shift), -limit, limit)
    np.testing.assert_array_equal(np.array(out[0].split(), np.int64), want)
    assert np.count_nonzero(np.abs(want) == limit) < n // 2  # most results exact, unsaturated
    scale, _ = int8.reciprocal(totals, 12)
    np.testing.assert_array_equal(np.array(out[1].split(), np.int64) + (1 << 30), scale)


LOAD_HEAP = """
import array, gc, os
from nn import _graph_format as F, _graph_prepare as P
path = {path!r}
f = open(path, 'rb')
buf = memoryview(f.read(os.stat(path)[6]))
f.close()
g = F.read(buf)
live = array.array('i', bytes(4 * 2000))  # (made before: the record must not grow)
calls = array.array('i', [0])
multiplier = P.ratio_multiplier

def counted(*args):
    # the heap in use at each channel's multiplier, after a collection
    gc.collect()
    live[calls[0]] = gc.mem_alloc()
    calls[0] += 1
    return multiplier(*args)

P.ratio_multiplier = counted
gc.collect()
before = gc.mem_alloc()
P.check(buf, g)
n = calls[0]
print(n, live[1] - before, max(live[1:n]) - live[1])
"""


@pytest.mark.parametrize("rt", RT_UNIX[:1], ids=lambda p: p[0].name)
def test_load_check_keeps_nothing_per_channel(rt, tmp_path):
    """nn.load's check of a convolution or fully connected operator holds nothing per
    output channel: across the 1,024 channels of a fully connected layer (weights
    quantized per channel) the heap in use after a collection grows by less than 1 KB,
    and is within 4 KB of the heap before the check (no lists of weight sums, biases or
    multipliers, no table built beside the stored one). On the unix port (the webassembly
    port's collector does not free what its JavaScript stack may reference)."""
    runner = rt[0]
    rng = np.random.default_rng(31)
    b = ModelBuilder()
    x = b.tensor([1, 4], scale=0.05, zero=-3)
    w = b.tensor([1024, 4], scale=rng.uniform(0.005, 0.02, 1024), zero=[0] * 1024,
                 data=_weights(rng, (1024, 4)))
    bias = b.tensor([1024], "int32", data=rng.integers(-300, 300, 1024))
    y = b.tensor([1, 1024], scale=0.2, zero=-10)
    b.op("FULLY_CONNECTED", [x, w, bias], [y], "FullyConnectedOptions")
    (tmp_path / "fc.nnb").write_bytes(format2.to_bytes(import_tflite(b.build([x], [y]))))
    out = runner.run(LOAD_HEAP.format(path=str(tmp_path / "fc.nnb")), dirs=(tmp_path,),
                     timeout=300).split()
    calls, at_start, growth = (int(v) for v in out)
    assert calls == 1024
    assert at_start < 4096 and growth < 1024, (at_start, growth)


# ------------------------------------------------------------------ fuzz


def _recrc(b: bytearray) -> bytes:
    struct.pack_into("<I", b, 12, zlib.crc32(bytes(b[16:])) & 0xFFFFFFFF)
    return bytes(b)


def _fields(blob: bytes) -> list[tuple[int, str]]:
    """(offset, struct format) of every header, tensor record and operator record field
    and of some table and constant entries."""
    n_t, n_o = struct.unpack_from("<HH", blob, 16)
    t_at, o_at = struct.unpack_from("<II", blob, 24)
    out = [(4, "<H"), (6, "<H"), (8, "<I"), (16, "<H"), (18, "<H"), (20, "<H"), (22, "<H"),
           (24, "<I"), (28, "<I"), (32, "<I"), (36, "<I"), (40, "<B"), (41, "<B"), (42, "<H"),
           (60, "<I")] + [(44 + 2 * j, "<H") for j in range(8)]
    for i in range(n_t):
        r = t_at + 40 * i
        out += [(r, "<B"), (r + 1, "<B"), (r + 2, "<B"), (r + 3, "<B"), (r + 12, "<I"),
                (r + 16, "<I"), (r + 20, "<f"), (r + 24, "<i"), (r + 28, "<I"), (r + 32, "<H"),
                (r + 34, "<H"), (r + 36, "<I")] + [(r + 4 + 2 * j, "<H") for j in range(4)]
        offset, nbytes = struct.unpack_from("<II", blob, r + 12)
        if blob[r + 2] == format2.STORAGE_CONSTANT and nbytes:
            out += [(offset, "<b"), (offset + nbytes - 1, "<b")]
    for k in range(n_o):
        r = o_at + 80 * k
        out += [(r, "<B"), (r + 1, "<B"), (r + 2, "<H"), (r + 10, "<H"), (r + 12, "<I")]
        out += [(r + 4 + 2 * j, "<H") for j in range(3)]
        out += [(r + 16 + 4 * j, "<i") for j in range(16)]
        (table,) = struct.unpack_from("<I", blob, r + 12)
        if table:
            out += [(table, "<i"), (table + 4, "<i"), (table + 8, "<i")]
    return out


def _boundary(fmt: str, v, total: int) -> list:
    if fmt == "<f":
        return [0.0, -0.0, float("inf"), float("nan"), 1e-45, 3.4e38, -v, v * 2, v / 2,
                float(np.nextafter(np.float32(v), np.float32(1e9)))]
    bits = 8 * struct.calcsize(fmt)
    if fmt[1].isupper():
        top = (1 << bits) - 1
        cands = [0, 1, 2, 3, 4, top, top - 1, v + 1, v - 1, v + 4, v - 4, total, total - 4,
                 1 << (bits - 1)]
        return [c for c in cands if 0 <= c <= top and c != v]
    lo, hi = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    cands = [0, 1, -1, lo, hi, v + 1, v - 1, -v, 30, 31, -31, -32, 127, -128, 1 << 30]
    return [c for c in cands if lo <= c <= hi and c != v]


def corruptions(blob: bytes, n: int, seed: int) -> list[bytes]:
    """n corruptions of blob, the CRC recomputed: about a third single bit flips anywhere
    after the CRC, the rest single fields set to boundary values."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n // 3):
        b = bytearray(blob)
        pos = int(rng.integers(16, len(b)))
        b[pos] ^= 1 << int(rng.integers(0, 8))
        out.append(_recrc(b))
    cands = []
    for at, fmt in _fields(blob):
        (v,) = struct.unpack_from(fmt, blob, at)
        cands += [(at, fmt, c) for c in _boundary(fmt, v, len(blob))]
    for j in rng.permutation(len(cands))[:n - len(out)]:
        at, fmt, c = cands[j]
        b = bytearray(blob)
        struct.pack_into(fmt, b, at, c)
        out.append(_recrc(b))
    return out


def variants(graph: g.Graph, n: int, seed: int) -> list[bytes]:
    """n valid models near graph, written by format2.to_bytes (every stored number
    recomputed): new weights and biases, other scales and zero points, other fused
    activations; they load, and their outputs are compared."""
    rng = np.random.default_rng(seed)
    out: list[bytes] = []
    while len(out) < n:
        gr = copy.deepcopy(graph)
        for _ in range(int(rng.integers(1, 4))):
            t = gr.tensors[int(rng.integers(len(gr.tensors)))]
            r = rng.random()
            if t.is_constant and t.dtype == g.INT8 and r < 0.4:
                t.data = rng.integers(-127, 128, t.shape).astype(np.int8)
            elif t.is_constant and t.dtype == g.INT32 and t.quant is not None and r < 0.4:
                t.data = rng.integers(-5000, 5000, t.shape).astype(np.int32)  # a bias
            elif t.quant is not None and not t.quant.per_channel and r < 0.7:
                t.quant = g.Quant(t.quant.scale * np.float32(rng.uniform(0.3, 3)),
                                  t.quant.zero_point.copy())
            elif t.quant is not None and not t.quant.per_channel and t.dtype == g.INT8:
                t.quant = g.Quant(t.quant.scale.copy(),
                                  np.array([rng.integers(-128, 128)], np.int32))
        op = gr.operators[int(rng.integers(len(gr.operators)))]
        if hasattr(op.options, "activation") and rng.random() < 0.3:
            op.options.activation = str(rng.choice(g.ACTIVATIONS))
        try:
            out.append(format2.to_bytes(gr))
        except (g.GraphError, format2.FormatError):
            continue  # a rule of the kernels broken (a softmax scale, say): not a model
    return out


def host_outcome(blob: bytes, raw: bytes) -> str:
    """'R' refused, 'I' the input refused, else 'Y' + the output's hex, as the host does."""
    try:
        model = format2.from_bytes(blob)
    except Exception:  # noqa: BLE001 - any refusal; FormatError expected (checked below)
        return "R"
    graph = model.graph
    t = graph.tensors[graph.inputs[0]]
    dt = np.float32 if t.dtype == g.FLOAT32 else np.int8
    if len(graph.inputs) != 1 or len(raw) % np.dtype(dt).itemsize:
        return "I"
    try:
        y = int8_ops.run(graph, np.frombuffer(raw, dt).reshape(-1))
    except (ValueError, TypeError):
        return "I"
    ys = y if isinstance(y, tuple) else (y,)
    return "Y " + " ".join(v.tobytes().hex() for v in ys)


FUZZ = """
import nn, binascii, array
nn.use_backend({tier!r})
f = open({path!r}, 'rb')
raw = f.read(int(f.readline()))
for _ in range(int(f.readline())):
    b = f.read(int(f.readline()))
    try:
        m = nn.load(b)
    except (ValueError, TypeError):
        print('R')
        continue
    except Exception as e:
        print('X load', type(e).__name__, e)
        continue
    try:
        x = array.array('f', raw) if m.input_dtype[0] == 'f' else raw
        y = m.forward(x) if len(m.input_shape) == 1 else None
        if y is None:
            print('I')
            continue
    except (ValueError, TypeError):
        print('I')
        continue
    except Exception as e:
        print('X forward', type(e).__name__, e)
        continue
    ys = y if type(y) is tuple else (y,)
    print('Y', ' '.join(binascii.hexlify(bytes(v)).decode() for v in ys))
"""


@pytest.mark.parametrize("rt", RT_UNIX, ids=_ids)
def test_fuzz(rt, tmp_path):
    """2,100 corruptions per tier (1,050 of each base model: every_kind, with float32
    edges and all fourteen kinds, and the int8 cnn) and 200 valid variants: refused by
    the device exactly when the host refuses them (ValueError/TypeError, never another
    exception), and a model that loads gives the host reference's output."""
    runner, tier = rt
    total = {"R": 0, "I": 0, "Y": 0}
    for seed, gr in enumerate((every_kind(), cnn())):
        blob = format2.to_bytes(gr)
        t = gr.tensors[gr.inputs[0]]
        rng = np.random.default_rng(seed)
        x = (rng.normal(0, 2, t.shape).astype(np.float32) if t.dtype == g.FLOAT32 else
             rng.integers(-128, 128, t.shape, dtype=np.int8))
        raw = x.tobytes()
        mutants = corruptions(blob, N_FUZZ, seed) + variants(gr, N_VARIANTS, seed)
        path = tmp_path / "fuzz.bin"
        with open(path, "wb") as f:
            f.write(b"%d\n" % len(raw) + raw + b"%d\n" % len(mutants))
            f.writelines(b"%d\n" % len(m) + m for m in mutants)
        lines = runner.run(FUZZ.format(tier=tier, path=str(path)), timeout=900,
                           dirs=(tmp_path,)).splitlines()
        assert len(lines) == len(mutants)
        bad = []
        for m, line in zip(mutants, lines, strict=True):
            want = host_outcome(m, raw)
            total[want[0]] += 1
            if line != want:
                bad.append((want[:60], line[:200]))
        assert not bad, f"{len(bad)} of {len(mutants)} differ (host, device): {bad[:5]}"
    assert total["R"] > 1900 and total["Y"] > 200, total  # both outcomes well exercised


def test_fuzz_host_refuses_with_format_error():
    """The host refuses every corruption with FormatError (no other exception escapes
    from_bytes), so 'refused' means the same thing on both sides."""
    for seed, gr in enumerate((every_kind(), cnn())):
        for m in corruptions(format2.to_bytes(gr), 600, seed + 10):
            try:
                format2.from_bytes(m)
            except format2.FormatError:
                pass
