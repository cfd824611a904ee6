"""The float32 operators (piconn.float_ops) against TFLite Micro's float reference kernels.

Each case builds a float32 .tflite model with `tflite_build.ModelBuilder`, imports it
with `piconn.tflite.import_tflite`, runs `int8_ops.run` (which hands float operators to
`float_ops`) on random inputs and compares with TFLite Micro's Python interpreter (PyPI
`tflite-micro`). Operators whose arithmetic is fixed by the kernel's order (convolutions,
fully connected, pools, ADD, PAD, MEAN, RESHAPE, the fused ReLU clamps) must agree bit
for bit. SOFTMAX, LOGISTIC and TANH call exp: piconn's own `exp_f32` (the same bits in
every device tier) differs from the C library's `expf` TFLite Micro calls in the last
bits, so those agree within EXP_TOLERANCE.
"""

from __future__ import annotations

import numpy as np
import pytest

tflite = pytest.importorskip("tflite", reason="PyPI tflite (test extra) builds the models")
runtime = pytest.importorskip("tflite_micro.python.tflite_micro.runtime",
                              reason="PyPI tflite-micro (test extra) is the oracle")

from tflite_build import (
    DEPTHWISE_CASES,
    NONE,
    RELU,
    RELU6,
    SAME,
    VALID,
    ModelBuilder,
    depthwise_id,
    out_size,
    pool_id,
)

from piconn import float_ops, format2, int8_ops
from piconn import graph as g
from piconn.tflite import import_tflite

N_INPUTS = 12
EXP_TOLERANCE = 4e-7  # absolute, on outputs in [0, 1] (softmax, logistic) or [-1, 1] (tanh)


def tflm(data: bytes):
    return runtime.Interpreter.from_bytes(data, arena_size=1 << 20)


def agree(data: bytes, inputs: list[np.ndarray], tolerance: float = 0.0) -> int:
    """Run piconn and TFLite Micro; assert equal outputs (bits, or within `tolerance`);
    also through the version-2 file (written and read back). Returns how many distinct
    outputs there were."""
    graph = import_tflite(data)
    params = int8_ops.prepare(graph)
    assert any(isinstance(p, float_ops.FloatParams) for p in params)
    again = format2.from_bytes(format2.to_bytes(graph)).graph
    it = tflm(data)
    outs = []
    for x in inputs:
        it.set_input(x, 0)
        it.invoke()
        want = it.get_output(0)
        got = int8_ops.run(graph, x, params)
        assert got.dtype == want.dtype and got.shape == tuple(want.shape)
        if tolerance:
            np.testing.assert_allclose(got, want, rtol=0, atol=tolerance)
        else:
            np.testing.assert_array_equal(got, want)
        np.testing.assert_array_equal(int8_ops.run(again, x).view(np.uint32),
                                      got.view(np.uint32))
        outs.append(got)
    return len({o.tobytes() for o in outs})


def float_inputs(shape, n: int = N_INPUTS, seed: int = 0, sd: float = 2.0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.normal(0, sd, size=shape).astype(np.float32) for _ in range(n)]


# ----------------------------------------------------------------------- convolutions

CONV_CASES = [  # (h, w, c_in, c_out, k, stride, padding, activation, bias)
    (7, 9, 3, 4, 3, 1, SAME, NONE, True),
    (7, 9, 3, 4, 3, 2, SAME, RELU, True),
    (8, 6, 2, 5, 3, 2, VALID, RELU6, False),
    (5, 5, 4, 3, 1, 1, VALID, NONE, True),
    (6, 7, 2, 3, 2, 3, SAME, RELU, True),
]


@pytest.mark.parametrize("case", CONV_CASES, ids=lambda c: "h{}w{}c{}o{}k{}s{}{}a{}{}".format(
    *c[:6], "same" if c[6] == SAME else "valid", c[7], "" if c[8] else "-nobias"))
def test_conv2d(case):
    h, w, cin, cout, k, s, pad, act, with_bias = case
    rng = np.random.default_rng(sum(case))
    oh, ow = out_size(pad, h, k, s), out_size(pad, w, k, s)
    b = ModelBuilder()
    x = b.tensor([1, h, w, cin], "float32")
    wt = b.tensor([cout, k, k, cin], "float32", data=rng.normal(0, 1, (cout, k, k, cin)))
    bias = b.tensor([cout], "float32", data=rng.normal(0, 1, cout)) if with_bias else -1
    y = b.tensor([1, oh, ow, cout], "float32")
    b.op("CONV_2D", [x, wt, bias], [y], "Conv2DOptions", Padding=pad, StrideW=s, StrideH=s,
         FusedActivationFunction=act, DilationWFactor=1, DilationHFactor=1)
    assert agree(b.build([x], [y]), float_inputs([1, h, w, cin])) > 1


@pytest.mark.parametrize("case", DEPTHWISE_CASES, ids=depthwise_id)
def test_depthwise_conv2d(case):
    h, w, cin, m, k, s, pad, act = case
    rng = np.random.default_rng(sum(case))
    cout = cin * m
    oh, ow = out_size(pad, h, k, s), out_size(pad, w, k, s)
    b = ModelBuilder()
    x = b.tensor([1, h, w, cin], "float32")
    wt = b.tensor([1, k, k, cout], "float32", data=rng.normal(0, 1, (1, k, k, cout)))
    bias = b.tensor([cout], "float32", data=rng.normal(0, 1, cout))
    y = b.tensor([1, oh, ow, cout], "float32")
    b.op("DEPTHWISE_CONV_2D", [x, wt, bias], [y], "DepthwiseConv2DOptions", Padding=pad,
         StrideW=s, StrideH=s, DepthMultiplier=m, FusedActivationFunction=act,
         DilationWFactor=1, DilationHFactor=1)
    assert agree(b.build([x], [y]), float_inputs([1, h, w, cin])) > 1


@pytest.mark.parametrize("act", [NONE, RELU, RELU6], ids=["none", "relu", "relu6"])
@pytest.mark.parametrize("with_bias", [True, False], ids=["bias", "nobias"])
def test_fully_connected(act, with_bias):
    rng = np.random.default_rng(act + 7 * with_bias)
    depth, cout = 40, 12
    b = ModelBuilder()
    x = b.tensor([2, depth], "float32")
    wt = b.tensor([cout, depth], "float32", data=rng.normal(0, 0.3, (cout, depth)))
    bias = b.tensor([cout], "float32", data=rng.normal(0, 1, cout)) if with_bias else -1
    y = b.tensor([2, cout], "float32")
    b.op("FULLY_CONNECTED", [x, wt, bias], [y], "FullyConnectedOptions",
         FusedActivationFunction=act)
    assert agree(b.build([x], [y]), float_inputs([2, depth])) > 1


# ----------------------------------------------------------------------- pools and the rest

POOL_CASES = [  # (kind, h, w, c, filter, stride, padding, activation)
    ("AVERAGE_POOL_2D", 7, 9, 3, 3, 2, SAME, NONE),
    ("AVERAGE_POOL_2D", 8, 8, 2, 2, 2, VALID, RELU),
    ("AVERAGE_POOL_2D", 6, 5, 4, 3, 1, SAME, RELU6),
    ("MAX_POOL_2D", 7, 9, 3, 3, 2, SAME, NONE),
    ("MAX_POOL_2D", 8, 8, 2, 2, 2, VALID, RELU),
    ("MAX_POOL_2D", 11, 11, 3, 2, 2, SAME, RELU6),
]


@pytest.mark.parametrize("case", POOL_CASES, ids=pool_id)
def test_pool(case):
    kind, h, w, c, f, s, pad, act = case
    oh, ow = out_size(pad, h, f, s), out_size(pad, w, f, s)
    b = ModelBuilder()
    x = b.tensor([1, h, w, c], "float32")
    y = b.tensor([1, oh, ow, c], "float32")
    b.op(kind, [x], [y], "Pool2DOptions", Padding=pad, StrideW=s, StrideH=s, FilterWidth=f,
         FilterHeight=f, FusedActivationFunction=act)
    assert agree(b.build([x], [y]), float_inputs([1, h, w, c], seed=len(kind) + f)) > 1


@pytest.mark.parametrize("shapes", [([1, 4, 5, 3], [1, 4, 5, 3]), ([1, 4, 5, 3], [3]),
                                    ([2, 1, 5, 1], [1, 4, 1, 3])],
                         ids=["same", "channel", "both"])
@pytest.mark.parametrize("act", [NONE, RELU6], ids=["none", "relu6"])
def test_add(shapes, act):
    rng = np.random.default_rng(len(shapes[1]) + act)
    sa, sb = shapes
    sy = list(np.broadcast_shapes(tuple(sa), tuple(sb)))
    b = ModelBuilder()
    x = b.tensor(sa, "float32")
    c = b.tensor(sb, "float32", data=rng.normal(0, 2, sb))
    y = b.tensor(sy, "float32")
    b.op("ADD", [x, c], [y], "AddOptions", FusedActivationFunction=act)
    assert agree(b.build([x], [y]), float_inputs(sa)) > 1


def test_pad_mean_reshape():
    b = ModelBuilder()
    x = b.tensor([1, 5, 6, 3], "float32")
    pads = b.tensor([4, 2], "int32", data=[[0, 0], [1, 2], [2, 0], [0, 0]])
    xp = b.tensor([1, 8, 8, 3], "float32")
    axes = b.tensor([2], "int32", data=[1, 2])
    m = b.tensor([1, 1, 1, 3], "float32")
    shape = b.tensor([2], "int32", data=[1, 3])
    y = b.tensor([1, 3], "float32")
    b.op("PAD", [x, pads], [xp])
    b.op("MEAN", [xp, axes], [m], "ReducerOptions", KeepDims=True)
    b.op("RESHAPE", [m, shape], [y], "ReshapeOptions", NewShape=[1, 3])
    assert agree(b.build([x], [y]), float_inputs([1, 5, 6, 3])) > 1


def test_pad_alone():
    b = ModelBuilder()
    x = b.tensor([2, 3], "float32")
    pads = b.tensor([2, 2], "int32", data=[[1, 0], [2, 1]])
    y = b.tensor([3, 6], "float32")
    b.op("PAD", [x, pads], [y])
    assert agree(b.build([x], [y]), float_inputs([2, 3])) > 1


def test_mean_without_keep_dims():
    b = ModelBuilder()
    x = b.tensor([1, 7, 3, 5], "float32")
    axes = b.tensor([2], "int32", data=[2, 1])
    y = b.tensor([1, 5], "float32")
    b.op("MEAN", [x, axes], [y], "ReducerOptions", KeepDims=False)
    assert agree(b.build([x], [y]), float_inputs([1, 7, 3, 5], sd=100.0)) > 1


# ----------------------------------------------------------------------- exp-based

@pytest.mark.parametrize("beta", [1.0, 0.5])
def test_softmax(beta):
    b = ModelBuilder()
    x = b.tensor([3, 10], "float32")
    y = b.tensor([3, 10], "float32")
    b.op("SOFTMAX", [x], [y], "SoftmaxOptions", Beta=beta)
    assert agree(b.build([x], [y]), float_inputs([3, 10], sd=4.0), EXP_TOLERANCE) > 1


@pytest.mark.parametrize("kind", ["LOGISTIC", "TANH"])
def test_logistic_tanh(kind):
    b = ModelBuilder()
    x = b.tensor([1, 400], "float32")
    y = b.tensor([1, 400], "float32")
    b.op(kind, [x], [y])
    wide = np.concatenate([np.linspace(-30, 30, 200), np.linspace(-1, 1, 200)])
    inputs = float_inputs([1, 400], sd=5.0) + [wide.astype(np.float32).reshape(1, 400)]
    assert agree(b.build([x], [y]), inputs, EXP_TOLERANCE) > 1


def test_exp_f32_accuracy():
    """exp_f32 within 1.5 ulp of the correctly rounded e^x over the range softmax and
    logistic use, 0 below EXP_MIN, inf above EXP_MAX."""
    x = np.linspace(-87, 88, 200001, dtype=np.float32)
    got = float_ops.exp_f32(x).astype(np.float64)
    want = np.exp(x.astype(np.float64))
    ulp = np.spacing(want.astype(np.float32)).astype(np.float64)
    assert np.max(np.abs(got - want) / ulp) <= 1.5
    assert float_ops.exp_f32(np.float32([-88, -1000]))[0] == 0
    assert np.isinf(float_ops.exp_f32(np.float32([89]))[0])
    assert float_ops.exp_f32(np.float32([0]))[0] == 1.0


# ----------------------------------------------------------------------- mixed and errors

def test_mixed_model():
    """float32 CONV_2D -> QUANTIZE -> int8 FULLY_CONNECTED -> DEQUANTIZE -> float32 SOFTMAX."""
    rng = np.random.default_rng(3)
    b = ModelBuilder()
    x = b.tensor([1, 6, 6, 2], "float32")
    w = b.tensor([4, 3, 3, 2], "float32", data=rng.normal(0, 0.5, (4, 3, 3, 2)))
    c = b.tensor([1, 4, 4, 4], "float32")
    shape = b.tensor([2], "int32", data=[1, 64])
    cf = b.tensor([1, 64], "float32")
    cq = b.tensor([1, 64], scale=0.05, zero=-3)
    wq = b.tensor([10, 64], scale=[0.01], zero=[0], data=rng.integers(-127, 128, (10, 64)))
    yq = b.tensor([1, 10], scale=0.1, zero=2)
    yf = b.tensor([1, 10], "float32")
    out = b.tensor([1, 10], "float32")
    b.op("CONV_2D", [x, w, -1], [c], "Conv2DOptions", Padding=VALID, StrideW=1, StrideH=1,
         FusedActivationFunction=RELU, DilationWFactor=1, DilationHFactor=1)
    b.op("RESHAPE", [c, shape], [cf], "ReshapeOptions", NewShape=[1, 64])
    b.op("QUANTIZE", [cf], [cq])
    b.op("FULLY_CONNECTED", [cq, wq, -1], [yq], "FullyConnectedOptions")
    b.op("DEQUANTIZE", [yq], [yf])
    b.op("SOFTMAX", [yf], [out], "SoftmaxOptions", Beta=1.0)
    assert agree(b.build([x], [out]), float_inputs([1, 6, 6, 2]), EXP_TOLERANCE) > 1


def test_refusals_name_the_problem():
    rng = np.random.default_rng(5)
    b = ModelBuilder()
    x = b.tensor([1, 4], "float32")
    w = b.tensor([3, 4], "float32", data=rng.normal(0, 1, (3, 4)))
    y = b.tensor([1, 3], scale=0.1, zero=0)  # int8 output of float input: no such kernel
    b.op("FULLY_CONNECTED", [x, w, -1], [y], "FullyConnectedOptions")
    with pytest.raises(ValueError, match="float32; supported: int8"):
        import_tflite(b.build([x], [y]))
    b = ModelBuilder()
    x = b.tensor([1, 4], "float32")
    w = b.tensor([3, 4], "float32", data=np.array([[np.nan] * 4] * 3))
    y = b.tensor([1, 3], "float32")
    b.op("FULLY_CONNECTED", [x, w, -1], [y], "FullyConnectedOptions")
    with pytest.raises(ValueError, match="NaN or infinity"):
        import_tflite(b.build([x], [y]))
    b = ModelBuilder()
    x = b.tensor([1, 4], "float32")
    w = b.tensor([3, 4], scale=[0.1], zero=[0], data=np.ones((3, 4)))
    y = b.tensor([1, 3], "float32")
    b.op("FULLY_CONNECTED", [x, w, -1], [y], "FullyConnectedOptions")  # hybrid: int8 weights
    with pytest.raises(ValueError, match="constant float32"):
        import_tflite(b.build([x], [y]))


def test_float_params_in_the_file():
    """A float operator stores its clamp as f32 bits and no table; a changed bit is refused."""
    b = ModelBuilder()
    x = b.tensor([1, 4, 4, 1], "float32")
    y = b.tensor([1, 2, 2, 1], "float32")
    b.op("MAX_POOL_2D", [x], [y], "Pool2DOptions", Padding=VALID, StrideW=2, StrideH=2,
         FilterWidth=2, FilterHeight=2, FusedActivationFunction=RELU6)
    graph = import_tflite(b.build([x], [y]))
    data = bytearray(format2.to_bytes(graph))
    op_at = format2.HEADER_SIZE + format2.TENSOR_RECORD_SIZE * len(graph.tensors)
    params = np.frombuffer(bytes(data), "<i4", 16, op_at + 16)
    assert params[8:10].view(np.float32).tolist() == [0.0, 6.0]
    assert np.frombuffer(bytes(data), "<u4", 1, op_at + 12)[0] == 0  # no table
    data[op_at + 16 + 4 * 9] ^= 1  # act_max 6.0 -> 6.0000005
    import zlib
    data[12:16] = (zlib.crc32(bytes(data[16:])) & 0xFFFFFFFF).to_bytes(4, "little")
    with pytest.raises(format2.FormatError, match="stored params differ"):
        format2.from_bytes(bytes(data))


def test_graph_without_tflite():
    """A float graph built in Python runs (no .tflite needed) and plans its memory."""
    t = [g.Tensor("x", (1, 3), g.FLOAT32), g.Tensor("y", (1, 3), g.FLOAT32)]
    graph = g.Graph(t, [g.Operator(g.TANH, (0,), (1,))], [0], [1])
    y = int8_ops.run(graph, np.float32([[-1, 0, 2]]))
    np.testing.assert_allclose(y, np.tanh([[-1, 0, 2]]), atol=EXP_TOLERANCE)
    assert format2.from_bytes(format2.to_bytes(graph)).arena_size == 24  # both alive


# ----------------------------------------------------------------------- the C kernels on the host

def test_c_kernels_on_the_host_are_bit_exact():
    """device/c/nn_c's graph runner with nn_float.c, compiled for the host: the float
    graphs' outputs equal the reference byte for byte, and nn_f32_exp is exp_f32."""
    import ctypes
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
    import int8_ckernels
    from test_float_device import GRAPHS

    try:
        host = int8_ckernels.HostGraph()
    except RuntimeError as e:
        pytest.skip(str(e))
    host.lib.nn_f32_exp.argtypes = [ctypes.c_float]
    host.lib.nn_f32_exp.restype = ctypes.c_float
    xs = np.concatenate([np.linspace(-90, 90, 3001, dtype=np.float32),
                         np.float32([-87, 88, 0, -0.0, 1e-30, -1e-30])])
    got = np.array([host.lib.nn_f32_exp(float(v)) for v in xs], np.float32)
    assert got.tobytes() == float_ops.exp_f32(xs).tobytes()
    rng = np.random.default_rng(8)
    for name, make in GRAPHS.items():
        graph = make()
        blob = format2.to_bytes(graph)
        for _ in range(3):
            x = rng.normal(0, 2, graph.tensors[graph.inputs[0]].shape).astype(np.float32)
            x[rng.random(x.shape) < 0.5] = np.float32(rng.choice([0.0, -0.0]))  # skipped
            want = int8_ops.run(graph, x)
            want = list(want) if isinstance(want, tuple) else [want]
            out = host.run(blob, x)
            out = list(out) if isinstance(out, (tuple, list)) else [out]
            assert [o.tobytes() for o in out] == [w.tobytes() for w in want], name
