"""Every supported operator and option, in small generated .tflite files, against TFLite Micro.

Each case builds a model with `tflite_build.ModelBuilder`, imports it with
`piconn.tflite.import_tflite`, runs `int8_ops.run` on random inputs and compares every
output byte with TFLite Micro's Python interpreter (PyPI `tflite-micro`). LOGISTIC,
TANH, QUANTIZE (int8 -> int8) and DEQUANTIZE are also checked on all 256 int8 inputs.
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

from piconn import graph as g
from piconn import int8, int8_ops
from piconn.tflite import import_tflite

N_INPUTS = 30


def tflm(data: bytes):
    return runtime.Interpreter.from_bytes(data, arena_size=1 << 20)


def agree(data: bytes, inputs: list[np.ndarray]) -> int:
    """Run both; assert equal outputs; return how many outputs were not constant."""
    graph = import_tflite(data)
    params = int8_ops.prepare(graph)
    it = tflm(data)
    outs = []
    for x in inputs:
        it.set_input(x, 0)
        it.invoke()
        want = it.get_output(0)
        got = int8_ops.run(graph, x, params)
        assert got.dtype == want.dtype and got.shape == tuple(want.shape)
        np.testing.assert_array_equal(got, want)
        outs.append(got)
    return len({o.tobytes() for o in outs})


def int8_inputs(shape, n: int = N_INPUTS, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(-128, 128, size=shape, dtype=np.int8) for _ in range(n)]


def weights(rng, shape) -> np.ndarray:
    return rng.integers(-127, 128, size=shape).astype(np.int8)


# ----------------------------------------------------------------------- convolutions

CONV_CASES = [  # (h, w, c_in, c_out, k, stride, padding, activation, per_channel, bias)
    (7, 9, 3, 4, 3, 1, SAME, NONE, True, True),
    (7, 9, 3, 4, 3, 2, SAME, RELU, True, True),
    (8, 6, 2, 5, 3, 2, VALID, RELU6, True, False),
    (5, 5, 4, 3, 1, 1, VALID, NONE, False, True),
    (6, 7, 2, 3, 2, 3, SAME, RELU, True, True),
]


@pytest.mark.parametrize("case", CONV_CASES, ids=lambda c: "h{}w{}c{}o{}k{}s{}{}a{}{}{}".format(
    *c[:6], "same" if c[6] == SAME else "valid", c[7], "pc" if c[8] else "pt",
    "" if c[9] else "-nobias"))
def test_conv2d(case):
    h, w, cin, cout, k, s, pad, act, per_channel, with_bias = case
    rng = np.random.default_rng(hash(case) % 2**32)
    oh, ow = out_size(pad, h, k, s), out_size(pad, w, k, s)
    b = ModelBuilder()
    x = b.tensor([1, h, w, cin], scale=0.05, zero=-7)
    ws = rng.uniform(0.002, 0.02, cout) if per_channel else [0.01]
    wt = b.tensor([cout, k, k, cin], scale=ws, zero=[0] * len(ws), axis=0,
                  data=weights(rng, (cout, k, k, cin)))
    bias = -1
    if with_bias:
        bias = b.tensor([cout], "int32", scale=0.05 * np.asarray(ws), zero=[0] * len(ws),
                        data=rng.integers(-3000, 3000, cout))
    y = b.tensor([1, oh, ow, cout], scale=0.02 * np.sqrt(k * k * cin), zero=5)
    b.op("CONV_2D", [x, wt, bias], [y], "Conv2DOptions", Padding=pad, StrideW=s, StrideH=s,
         FusedActivationFunction=act, DilationWFactor=1, DilationHFactor=1)
    assert agree(b.build([x], [y]), int8_inputs([1, h, w, cin])) > 1


@pytest.mark.parametrize("case", DEPTHWISE_CASES, ids=depthwise_id)
def test_depthwise_conv2d(case):
    h, w, cin, m, k, s, pad, act = case
    rng = np.random.default_rng(sum(case))
    cout = cin * m
    oh, ow = out_size(pad, h, k, s), out_size(pad, w, k, s)
    b = ModelBuilder()
    x = b.tensor([1, h, w, cin], scale=0.04, zero=10)
    ws = rng.uniform(0.002, 0.03, cout)
    wt = b.tensor([1, k, k, cout], scale=ws, zero=[0] * cout, axis=3,
                  data=weights(rng, (1, k, k, cout)))
    bias = b.tensor([cout], "int32", scale=0.04 * ws, zero=[0] * cout,
                    data=rng.integers(-2000, 2000, cout))
    y = b.tensor([1, oh, ow, cout], scale=0.05 * k, zero=-3)
    b.op("DEPTHWISE_CONV_2D", [x, wt, bias], [y], "DepthwiseConv2DOptions", Padding=pad,
         StrideW=s, StrideH=s, DepthMultiplier=m, FusedActivationFunction=act,
         DilationWFactor=1, DilationHFactor=1)
    assert agree(b.build([x], [y]), int8_inputs([1, h, w, cin])) > 1


@pytest.mark.parametrize("per_channel", [False, True], ids=["per_tensor", "per_channel"])
@pytest.mark.parametrize("act", [NONE, RELU, RELU6], ids=["none", "relu", "relu6"])
def test_fully_connected(per_channel, act):
    rng = np.random.default_rng(act + 10 * per_channel)
    depth, cout = 40, 12
    b = ModelBuilder()
    x = b.tensor([1, depth], scale=0.1, zero=-20)
    ws = rng.uniform(0.003, 0.02, cout) if per_channel else np.array([0.01])
    wt = b.tensor([cout, depth], scale=ws, zero=[0] * len(ws), data=weights(rng, (cout, depth)))
    bias = b.tensor([cout], "int32", scale=np.float32(0.1) * ws.astype(np.float32),
                    zero=[0] * len(ws), data=rng.integers(-5000, 5000, cout))
    y = b.tensor([1, cout], scale=0.15, zero=3)
    b.op("FULLY_CONNECTED", [x, wt, bias], [y], "FullyConnectedOptions",
         FusedActivationFunction=act)
    assert agree(b.build([x], [y]), int8_inputs([1, depth])) > 1


def test_fully_connected_per_tensor_multiplier_in_double():
    """The per-tensor multiplier is input x weight / output scale formed in double. At these
    scales a float32 product changes the multiplier by 87 units; the accumulators where that
    changes the output are put in the biases, and TFLite Micro agrees with the double one."""
    si, sw, so = 0.08532493561506271, 0.007818369194865227, 1.413415789604187
    m32, s32 = int8.quantize_multiplier(float(np.float32(si) * np.float32(sw))
                                        / float(np.float32(so)))
    m64, s64 = int8.quantize_multiplier(float(np.float32(si)) * float(np.float32(sw))
                                        / float(np.float32(so)))
    acc = np.arange(-100000, 100000)
    critical = acc[int8.mbqm(acc, m32, s32) != int8.mbqm(acc, m64, s64)]
    assert len(critical) >= 4
    b = ModelBuilder()
    x = b.tensor([1, 1], scale=si, zero=0)
    wt = b.tensor([len(critical), 1], scale=[sw], zero=[0], data=np.ones((len(critical), 1)))
    bias = b.tensor([len(critical)], "int32", data=critical)  # acc = bias + x
    y = b.tensor([1, len(critical)], scale=so, zero=0)
    b.op("FULLY_CONNECTED", [x, wt, bias], [y], "FullyConnectedOptions")
    data = b.build([x], [y])
    it = tflm(data)
    it.set_input(np.zeros((1, 1), dtype=np.int8), 0)
    it.invoke()
    want = it.get_output(0)[0]
    np.testing.assert_array_equal(want, int8.mbqm(critical, m64, s64))
    assert np.all(want != int8.mbqm(critical, m32, s32))
    np.testing.assert_array_equal(int8_ops.run(import_tflite(data),
                                               np.zeros((1, 1), dtype=np.int8))[0], want)


def test_fully_connected_batches_and_4d_input():
    """A 4-D input flattened into rows of the weights' depth; no bias."""
    rng = np.random.default_rng(5)
    b = ModelBuilder()
    x = b.tensor([1, 3, 2, 4], scale=0.1, zero=0)
    wt = b.tensor([5, 8], scale=[0.02], zero=[0], data=weights(rng, (5, 8)))
    y = b.tensor([3, 5], scale=0.3, zero=-1)
    b.op("FULLY_CONNECTED", [x, wt, -1], [y], "FullyConnectedOptions")
    assert agree(b.build([x], [y]), int8_inputs([1, 3, 2, 4])) > 1


# ----------------------------------------------------------------------- pools

POOL_CASES = [  # (kind, h, w, c, filter, stride, padding, activation)
    ("AVERAGE_POOL_2D", 7, 9, 3, 3, 2, SAME, NONE),
    ("AVERAGE_POOL_2D", 8, 8, 2, 2, 2, VALID, RELU),
    ("AVERAGE_POOL_2D", 5, 5, 4, 5, 1, VALID, NONE),
    ("MAX_POOL_2D", 7, 9, 3, 3, 2, SAME, NONE),
    ("MAX_POOL_2D", 8, 6, 2, 2, 2, VALID, RELU6),
    ("MAX_POOL_2D", 6, 6, 2, 3, 1, SAME, RELU),
]


@pytest.mark.parametrize("case", POOL_CASES, ids=pool_id)
def test_pool(case):
    kind, h, w, c, f, s, pad, act = case
    oh, ow = out_size(pad, h, f, s), out_size(pad, w, f, s)
    b = ModelBuilder()
    x = b.tensor([1, h, w, c], scale=0.05, zero=-4)
    y = b.tensor([1, oh, ow, c], scale=0.05, zero=-4)
    b.op(kind, [x], [y], "Pool2DOptions", Padding=pad, StrideW=s, StrideH=s, FilterWidth=f,
         FilterHeight=f, FusedActivationFunction=act)
    assert agree(b.build([x], [y]), int8_inputs([1, h, w, c])) > 1


# ----------------------------------------------------------------------- elementwise


@pytest.mark.parametrize("shape2", [[1, 4, 5, 3], [1, 1, 1, 3]], ids=["same", "broadcast"])
@pytest.mark.parametrize("act", [NONE, RELU, RELU6], ids=["none", "relu", "relu6"])
def test_add(shape2, act):
    """ADD rescales both inputs (different scales and zero points) to the output's."""
    rng = np.random.default_rng(7)
    b = ModelBuilder()
    x1 = b.tensor([1, 4, 5, 3], scale=0.05, zero=-3)
    x2 = b.tensor(shape2, scale=0.11, zero=12, data=rng.integers(-128, 128, shape2))
    y = b.tensor([1, 4, 5, 3], scale=0.09, zero=-10)
    b.op("ADD", [x1, x2], [y], "AddOptions", FusedActivationFunction=act)
    assert agree(b.build([x1], [y]), int8_inputs([1, 4, 5, 3])) > 1


def test_add_two_activations_and_reshape():
    """A graph, not a chain: x feeds two operators whose results ADD joins; RESHAPE at the end."""
    rng = np.random.default_rng(8)
    b = ModelBuilder()
    x = b.tensor([1, 6], scale=0.05, zero=1)
    w1 = b.tensor([6, 6], scale=[0.02], zero=[0], data=weights(rng, (6, 6)))
    a = b.tensor([1, 6], scale=0.07, zero=-2)
    y = b.tensor([1, 6], scale=0.1, zero=0)
    r = b.tensor([2, 3], scale=0.1, zero=0)
    shape = b.tensor([2], "int32", data=[2, 3])
    b.op("FULLY_CONNECTED", [x, w1, -1], [a], "FullyConnectedOptions")
    b.op("ADD", [x, a], [y], "AddOptions")
    b.op("RESHAPE", [y, shape], [r], "ReshapeOptions", NewShape=[2, 3])
    assert agree(b.build([x], [r]), int8_inputs([1, 6])) > 1


@pytest.mark.parametrize("beta", [1.0, 0.5], ids=["beta1", "beta0.5"])
@pytest.mark.parametrize("scale", [0.02, 0.25], ids=["fine", "coarse"])
def test_softmax(beta, scale):
    b = ModelBuilder()
    x = b.tensor([2, 10], scale=scale, zero=-5)
    y = b.tensor([2, 10], scale=1 / 256, zero=-128)
    b.op("SOFTMAX", [x], [y], "SoftmaxOptions", Beta=beta)
    assert agree(b.build([x], [y]), int8_inputs([2, 10])) > 1


@pytest.mark.parametrize("kind", ["LOGISTIC", "TANH"])
@pytest.mark.parametrize("scale,zero", [(0.1, 0), (0.023, -17), (0.5, 40), (2e-3, 3)])
def test_logistic_tanh_every_input(kind, scale, zero):
    """All 256 int8 inputs, at input scales that saturate early or never."""
    b = ModelBuilder()
    x = b.tensor([1, 256], scale=scale, zero=zero)
    y = (b.tensor([1, 256], scale=1 / 256, zero=-128) if kind == "LOGISTIC"
         else b.tensor([1, 256], scale=1 / 128, zero=0))
    b.op(kind, [x], [y])
    every = np.arange(-128, 128, dtype=np.int8).reshape(1, 256)
    assert agree(b.build([x], [y]), [every]) == 1


@pytest.mark.parametrize("keep_dims", [True, False])
def test_mean_over_height_width(keep_dims):
    b = ModelBuilder()
    x = b.tensor([1, 5, 7, 6], scale=0.05, zero=-9)
    axes = b.tensor([2], "int32", data=[1, 2])
    y = b.tensor([1, 1, 1, 6] if keep_dims else [1, 6], scale=0.02, zero=4)
    b.op("MEAN", [x, axes], [y], "ReducerOptions", KeepDims=keep_dims)
    assert agree(b.build([x], [y]), int8_inputs([1, 5, 7, 6])) > 1


def test_pad():
    b = ModelBuilder()
    x = b.tensor([1, 4, 5, 3], scale=0.05, zero=-9)
    pads = b.tensor([4, 2], "int32", data=[[0, 0], [1, 2], [0, 3], [0, 0]])
    y = b.tensor([1, 7, 8, 3], scale=0.05, zero=-9)
    b.op("PAD", [x, pads], [y])
    assert agree(b.build([x], [y]), int8_inputs([1, 4, 5, 3])) > 1


# ----------------------------------------------------------------------- the edges


def test_quantize_dequantize_at_the_edges():
    """float32 in -> QUANTIZE -> int8 FULLY_CONNECTED -> DEQUANTIZE -> float32 out."""
    rng = np.random.default_rng(9)
    b = ModelBuilder()
    xf = b.tensor([1, 16], "float32")
    xq = b.tensor([1, 16], scale=0.03, zero=-6)
    wt = b.tensor([8, 16], scale=[0.01], zero=[0], data=weights(rng, (8, 16)))
    yq = b.tensor([1, 8], scale=0.05, zero=7)
    yf = b.tensor([1, 8], "float32")
    b.op("QUANTIZE", [xf], [xq])
    b.op("FULLY_CONNECTED", [xq, wt, -1], [yq], "FullyConnectedOptions")
    b.op("DEQUANTIZE", [yq], [yf])
    inputs = [rng.normal(0, 2, (1, 16)).astype(np.float32) for _ in range(N_INPUTS)]
    # exact halves of the scale round away from zero; beyond the int8 range clamps
    inputs.append((np.arange(-8, 8, dtype=np.float32) * np.float32(0.015)).reshape(1, 16))
    inputs.append(np.linspace(-10, 10, 16, dtype=np.float32).reshape(1, 16))
    assert agree(b.build([xf], [yf]), inputs) > 1


def test_requantize_and_dequantize_every_input():
    """QUANTIZE int8 -> int8 (another scale and zero point), then DEQUANTIZE: all 256 inputs."""
    b = ModelBuilder()
    x = b.tensor([1, 256], scale=0.037, zero=5)
    q = b.tensor([1, 256], scale=0.05, zero=-20)
    y = b.tensor([1, 256], "float32")
    b.op("QUANTIZE", [x], [q])
    b.op("DEQUANTIZE", [q], [y])
    every = np.arange(-128, 128, dtype=np.int8).reshape(1, 256)
    assert agree(b.build([x], [y]), [every]) == 1


def test_small_cnn_plan_and_intermediates():
    """PAD, CONV, DEPTHWISE, MAX_POOL, MEAN, FULLY_CONNECTED, SOFTMAX in one graph: every
    intermediate tensor equals TFLite Micro's, and the memory plan has no overlap."""
    rng = np.random.default_rng(11)
    b = ModelBuilder()
    x = b.tensor([1, 10, 10, 2], scale=0.05, zero=0)
    pads = b.tensor([4, 2], "int32", data=[[0, 0], [1, 1], [1, 1], [0, 0]])
    xp = b.tensor([1, 12, 12, 2], scale=0.05, zero=0)
    w1 = b.tensor([6, 3, 3, 2], scale=rng.uniform(0.005, 0.02, 6), zero=[0] * 6,
                  data=weights(rng, (6, 3, 3, 2)))
    c1 = b.tensor([1, 10, 10, 6], scale=0.08, zero=-128)
    w2 = b.tensor([1, 3, 3, 6], scale=rng.uniform(0.005, 0.02, 6), zero=[0] * 6, axis=3,
                  data=weights(rng, (1, 3, 3, 6)))
    b2 = b.tensor([6], "int32", data=rng.integers(-500, 500, 6))  # TFLite Micro needs it
    c2 = b.tensor([1, 5, 5, 6], scale=0.06, zero=-128)
    p = b.tensor([1, 3, 3, 6], scale=0.06, zero=-128)
    axes = b.tensor([2], "int32", data=[1, 2])
    m = b.tensor([1, 6], scale=0.05, zero=-100)
    w3 = b.tensor([4, 6], scale=[0.02], zero=[0], data=weights(rng, (4, 6)))
    f = b.tensor([1, 4], scale=0.1, zero=0)
    s = b.tensor([1, 4], scale=1 / 256, zero=-128)
    b.op("PAD", [x, pads], [xp])
    b.op("CONV_2D", [xp, w1, -1], [c1], "Conv2DOptions", Padding=VALID, StrideW=1, StrideH=1,
         FusedActivationFunction=RELU)
    b.op("DEPTHWISE_CONV_2D", [c1, w2, b2], [c2], "DepthwiseConv2DOptions", Padding=SAME,
         StrideW=2, StrideH=2, DepthMultiplier=1, FusedActivationFunction=RELU6)
    b.op("MAX_POOL_2D", [c2], [p], "Pool2DOptions", Padding=SAME, StrideW=2, StrideH=2,
         FilterWidth=2, FilterHeight=2)
    b.op("MEAN", [p, axes], [m], "ReducerOptions", KeepDims=False)
    b.op("FULLY_CONNECTED", [m, w3, -1], [f], "FullyConnectedOptions")
    b.op("SOFTMAX", [f], [s], "SoftmaxOptions", Beta=1.0)
    data = b.build([x], [s])
    graph = import_tflite(data)
    it = runtime.Interpreter.from_bytes(
        data, arena_size=1 << 20,
        intrepreter_config=runtime.InterpreterConfig.kPreserveAllTensors)
    for x_in in int8_inputs([1, 10, 10, 2], n=5):
        it.set_input(x_in, 0)
        it.invoke()
        values = int8_ops.run(graph, x_in, keep=True)
        assert len(values) == 8  # the activations
        for i, v in values.items():
            np.testing.assert_array_equal(v, it.GetTensor(i, 0)["tensor_data"].reshape(v.shape),
                                          err_msg=graph.tensors[i].name)
    plan = g.plan_memory(graph)
    assert plan.overlapping_pairs() == []
    assert plan.arena_size >= max(b.size for b in plan.buffers)
