"""The int8 graph runner in C (device/c/nn_c/nn_graph.c, nn_int8.c) against int8_ops.run.

Every operator and option in small generated .tflite files, and MLPerf Tiny's four int8
models, run through format version 2 by three builds of the same sources:
- host: the host gcc (-Wall -Wextra -Werror), called through ctypes;
- m0: arm-none-eabi-gcc -O2 for the Cortex-M0+ with the Thumb-1 loops
  (arch_armv6m_int8.h), executed on rp2040py's emulated core;
- m0-c: the same target with the portable C loops (-Os -DNN_NO_ASM).
Outputs must equal the reference bit for bit. Also: the arithmetic building blocks over
their whole ranges, nn_graph_check's refusals (and that a corrupted model it accepts
runs without touching memory outside its buffers), the Arm builds, and `_nn_c.graph_run`
on the unix port (under heap_lock, its errors).
"""

from __future__ import annotations

import base64
import os
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("tflite", reason="PyPI tflite (test extra) builds the models")

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))

import int8_ckernels as ik
import mpy
from tflite_build import ModelBuilder

from piconn import format2, int8, int8_ops
from piconn import graph as g
from piconn.tflite import import_tflite

SAME, VALID = 0, 1
NONE, RELU, RELU6 = 0, 1, 3
N_INPUTS = 3


# ---------------------------------------------------------------------------
# runners


@pytest.fixture(scope="module", params=["host", "m0", "m0-c"])
def runner(request):
    if request.param == "host":
        if not (shutil.which("gcc") or shutil.which("cc")):
            pytest.skip("no host C compiler")
        return ik.HostGraph()
    if not ik.have_arm_toolchain():
        pytest.skip("arm-none-eabi-gcc is not installed (make installs it)")
    pytest.importorskip("rp2040py", reason="rp2040py (the emulated RP2040) is not installed")
    if request.param == "m0":
        return ik.M0Graph("-O2", asm=True)
    return ik.M0Graph("-Os", asm=False)


@pytest.fixture(scope="module")
def host():
    if not (shutil.which("gcc") or shutil.which("cc")):
        pytest.skip("no host C compiler")
    return ik.HostGraph()


# ---------------------------------------------------------------------------
# small graphs: every operator and option


def weights(rng, shape) -> np.ndarray:
    return rng.integers(-127, 128, size=shape).astype(np.int8)


def out_size(padding: int, size: int, k: int, stride: int) -> int:
    return (size + stride - 1) // stride if padding == SAME else (size - k + stride) // stride


def conv(h, w, cin, cout, kh, kw, stride, pad, act, per_channel=True, bias=True, batches=1,
         x_zero=-128):
    rng = np.random.default_rng(h * 1000 + w * 100 + cin * 10 + cout + kh + stride)
    oh, ow = out_size(pad, h, kh, stride), out_size(pad, w, kw, stride)
    b = ModelBuilder()
    x = b.tensor([batches, h, w, cin], scale=0.05, zero=x_zero)
    ws = rng.uniform(0.002, 0.02, cout) if per_channel else [0.01]
    wt = b.tensor([cout, kh, kw, cin], scale=ws, zero=[0] * len(ws), axis=0,
                  data=weights(rng, (cout, kh, kw, cin)))
    bt = -1
    if bias:
        bt = b.tensor([cout], "int32", data=rng.integers(-3000, 3000, cout))
    y = b.tensor([batches, oh, ow, cout], scale=0.02 * np.sqrt(kh * kw * cin), zero=-5)
    b.op("CONV_2D", [x, wt, bt], [y], "Conv2DOptions", Padding=pad, StrideW=stride,
         StrideH=stride, FusedActivationFunction=act, DilationWFactor=1, DilationHFactor=1)
    return b.build([x], [y])


def depthwise(h, w, cin, mult, k, stride, pad, act, bias=True, x_zero=-128):
    rng = np.random.default_rng(h + w + cin + mult + k + stride)
    cout = cin * mult
    oh, ow = out_size(pad, h, k, stride), out_size(pad, w, k, stride)
    b = ModelBuilder()
    x = b.tensor([1, h, w, cin], scale=0.04, zero=x_zero)
    ws = rng.uniform(0.002, 0.03, cout)
    wt = b.tensor([1, k, k, cout], scale=ws, zero=[0] * cout, axis=3,
                  data=weights(rng, (1, k, k, cout)))
    bt = b.tensor([cout], "int32", data=rng.integers(-2000, 2000, cout)) if bias else -1
    y = b.tensor([1, oh, ow, cout], scale=0.05 * k, zero=-3)
    b.op("DEPTHWISE_CONV_2D", [x, wt, bt], [y], "DepthwiseConv2DOptions", Padding=pad,
         StrideW=stride, StrideH=stride, DepthMultiplier=mult, FusedActivationFunction=act,
         DilationWFactor=1, DilationHFactor=1)
    return b.build([x], [y])


def fully_connected(x_shape, depth, cout, act=NONE, per_channel=False, bias=True):
    rng = np.random.default_rng(depth + cout + act)
    rows = int(np.prod(x_shape)) // depth
    b = ModelBuilder()
    x = b.tensor(x_shape, scale=0.1, zero=-20)
    ws = rng.uniform(0.003, 0.02, cout) if per_channel else np.array([0.01])
    wt = b.tensor([cout, depth], scale=ws, zero=[0] * len(ws),
                  data=weights(rng, (cout, depth)))
    bt = b.tensor([cout], "int32", data=rng.integers(-5000, 5000, cout)) if bias else -1
    y = b.tensor([rows, cout], scale=0.15 * np.sqrt(depth / 40), zero=3)
    b.op("FULLY_CONNECTED", [x, wt, bt], [y], "FullyConnectedOptions",
         FusedActivationFunction=act)
    return b.build([x], [y])


def pool(kind, h, w, c, f, s, pad, act):
    b = ModelBuilder()
    x = b.tensor([1, h, w, c], scale=0.05, zero=-4)
    y = b.tensor([1, out_size(pad, h, f, s), out_size(pad, w, f, s), c], scale=0.05, zero=-4)
    b.op(kind, [x], [y], "Pool2DOptions", Padding=pad, StrideW=s, StrideH=s, FilterWidth=f,
         FilterHeight=f, FusedActivationFunction=act)
    return b.build([x], [y])


def add(shape1, shape2, act, constant=True):
    rng = np.random.default_rng(7)
    out = list(np.broadcast_shapes(tuple(shape1), tuple(shape2)))
    b = ModelBuilder()
    x1 = b.tensor(shape1, scale=0.05, zero=-3)
    y = b.tensor(out, scale=0.09, zero=-10)
    if constant:
        x2 = b.tensor(shape2, scale=0.11, zero=12, data=rng.integers(-128, 128, shape2))
        b.op("ADD", [x1, x2], [y], "AddOptions", FusedActivationFunction=act)
        return b.build([x1], [y])
    s = b.tensor(shape1, scale=0.11, zero=12)  # x1 + (x1 + x1): two activations
    b.op("ADD", [x1, x1], [s], "AddOptions")
    b.op("ADD", [x1, s], [y], "AddOptions", FusedActivationFunction=act)
    return b.build([x1], [y])


def softmax(rows, depth, scale, beta):
    b = ModelBuilder()
    x = b.tensor([rows, depth], scale=scale, zero=-5)
    y = b.tensor([rows, depth], scale=1 / 256, zero=-128)
    b.op("SOFTMAX", [x], [y], "SoftmaxOptions", Beta=beta)
    return b.build([x], [y])


def sigmoid(kind, scale, zero):
    b = ModelBuilder()
    x = b.tensor([1, 256], scale=scale, zero=zero)
    y = (b.tensor([1, 256], scale=1 / 256, zero=-128) if kind == "LOGISTIC"
         else b.tensor([1, 256], scale=1 / 128, zero=0))
    b.op(kind, [x], [y])
    return b.build([x], [y])


def mean(keep_dims):
    b = ModelBuilder()
    x = b.tensor([2, 5, 7, 6], scale=0.05, zero=-9)
    axes = b.tensor([2], "int32", data=[1, 2])
    y = b.tensor([2, 1, 1, 6] if keep_dims else [2, 6], scale=0.02, zero=4)
    b.op("MEAN", [x, axes], [y], "ReducerOptions", KeepDims=keep_dims)
    return b.build([x], [y])


def pad(paddings, shape=(1, 4, 5, 3)):
    b = ModelBuilder()
    x = b.tensor(list(shape), scale=0.05, zero=-9)
    pads = b.tensor([len(shape), 2], "int32", data=paddings)
    y = b.tensor([d + p[0] + p[1] for d, p in zip(shape, paddings)], scale=0.05, zero=-9)
    b.op("PAD", [x, pads], [y])
    return b.build([x], [y])


def edges():
    """float32 -> QUANTIZE -> FULLY_CONNECTED -> RESHAPE -> QUANTIZE (int8) -> DEQUANTIZE."""
    rng = np.random.default_rng(9)
    b = ModelBuilder()
    xf = b.tensor([1, 16], "float32")
    xq = b.tensor([1, 16], scale=0.03, zero=-6)
    wt = b.tensor([8, 16], scale=[0.01], zero=[0], data=weights(rng, (8, 16)))
    yq = b.tensor([1, 8], scale=0.05, zero=7)
    shape = b.tensor([2], "int32", data=[2, 4])
    r = b.tensor([2, 4], scale=0.05, zero=7)
    q = b.tensor([2, 4], scale=0.037, zero=-20)
    yf = b.tensor([2, 4], "float32")
    b.op("QUANTIZE", [xf], [xq])
    b.op("FULLY_CONNECTED", [xq, wt, -1], [yq], "FullyConnectedOptions")
    b.op("RESHAPE", [yq, shape], [r], "ReshapeOptions", NewShape=[2, 4])
    b.op("QUANTIZE", [r], [q])
    b.op("DEQUANTIZE", [q], [yf])
    return b.build([xf], [yf])


def small_cnn():
    """PAD, CONV, DEPTHWISE, AVERAGE_POOL, MAX_POOL, ADD, MEAN, FC, LOGISTIC, TANH, SOFTMAX."""
    rng = np.random.default_rng(11)
    b = ModelBuilder()
    x = b.tensor([1, 10, 10, 3], scale=0.05, zero=0)
    pads = b.tensor([4, 2], "int32", data=[[0, 0], [1, 1], [1, 1], [0, 0]])
    xp = b.tensor([1, 12, 12, 3], scale=0.05, zero=0)
    c1 = b.tensor([1, 6, 6, 8], scale=0.1, zero=-128)
    w1 = b.tensor([8, 3, 3, 3], scale=rng.uniform(0.01, 0.02, 8), zero=[0] * 8,
                  data=weights(rng, (8, 3, 3, 3)))
    dw = b.tensor([1, 6, 6, 8], scale=0.1, zero=-128)
    w2 = b.tensor([1, 3, 3, 8], scale=rng.uniform(0.01, 0.02, 8), zero=[0] * 8, axis=3,
                  data=weights(rng, (1, 3, 3, 8)))
    b2 = b.tensor([8], "int32", data=rng.integers(-500, 500, 8))
    av = b.tensor([1, 6, 6, 8], scale=0.1, zero=-128)
    mx = b.tensor([1, 3, 3, 8], scale=0.1, zero=-128)
    ad = b.tensor([1, 3, 3, 8], scale=0.15, zero=-20)
    axes = b.tensor([2], "int32", data=[1, 2])
    mn = b.tensor([1, 8], scale=0.1, zero=-10)
    w3 = b.tensor([6, 8], scale=[0.02], zero=[0], data=weights(rng, (6, 8)))
    fc = b.tensor([1, 6], scale=0.2, zero=3)
    lg = b.tensor([1, 6], scale=1 / 256, zero=-128)
    th = b.tensor([1, 6], scale=1 / 128, zero=0)
    sm = b.tensor([1, 6], scale=1 / 256, zero=-128)
    b.op("PAD", [x, pads], [xp])
    b.op("CONV_2D", [xp, w1, -1], [c1], "Conv2DOptions", Padding=SAME, StrideW=2, StrideH=2,
         FusedActivationFunction=RELU)
    b.op("DEPTHWISE_CONV_2D", [c1, w2, b2], [dw], "DepthwiseConv2DOptions", Padding=SAME,
         StrideW=1, StrideH=1, DepthMultiplier=1, FusedActivationFunction=RELU6)
    b.op("AVERAGE_POOL_2D", [dw], [av], "Pool2DOptions", Padding=SAME, StrideW=1, StrideH=1,
         FilterWidth=3, FilterHeight=3)
    b.op("MAX_POOL_2D", [av], [mx], "Pool2DOptions", Padding=SAME, StrideW=2, StrideH=2,
         FilterWidth=2, FilterHeight=2)
    b.op("ADD", [mx, mx], [ad], "AddOptions", FusedActivationFunction=RELU)
    b.op("MEAN", [ad, axes], [mn], "ReducerOptions", KeepDims=False)
    b.op("FULLY_CONNECTED", [mn, w3, -1], [fc], "FullyConnectedOptions")
    b.op("LOGISTIC", [fc], [lg])
    b.op("TANH", [lg], [th])
    b.op("SOFTMAX", [th], [sm], "SoftmaxOptions", Beta=0.75)
    return b.build([x], [sm])


CASES = {  # name -> .tflite bytes builder
    # CONV_2D: SAME/VALID, strides, ReLU/ReLU6, per tensor/channel, no bias, channels not a
    # multiple of 4, 1x1, batches, and a window of more taps than the scratch list holds
    "conv-3x3-same": lambda: conv(7, 9, 3, 4, 3, 3, 1, SAME, NONE),
    "conv-3x3-s2-relu": lambda: conv(7, 9, 3, 8, 3, 3, 2, SAME, RELU),
    "conv-valid-relu6-nobias": lambda: conv(8, 6, 2, 5, 3, 3, 2, VALID, RELU6, bias=False),
    "conv-1x1-per-tensor": lambda: conv(5, 5, 16, 12, 1, 1, 1, VALID, RELU, False),
    "conv-2x4-s3": lambda: conv(6, 7, 2, 3, 2, 4, 3, SAME, RELU, x_zero=17),
    "conv-batches": lambda: conv(4, 4, 4, 4, 3, 3, 1, SAME, RELU, batches=2),
    "conv-chunked": lambda: conv(6, 6, 48, 6, 5, 5, 1, SAME, RELU),
    # DEPTHWISE_CONV_2D: by words (multiplier 1, channels % 4 == 0) and not
    "depthwise-words-same": lambda: depthwise(7, 9, 8, 1, 3, 1, SAME, RELU),
    "depthwise-words-s2-valid": lambda: depthwise(9, 8, 4, 1, 3, 2, VALID, RELU6, x_zero=9),
    "depthwise-words-5x5-nobias": lambda: depthwise(6, 6, 12, 1, 5, 2, SAME, NONE, False),
    "depthwise-3ch": lambda: depthwise(7, 9, 3, 1, 3, 1, SAME, NONE),
    "depthwise-mult2": lambda: depthwise(7, 9, 3, 2, 3, 2, SAME, RELU, x_zero=10),
    "depthwise-mult3-valid": lambda: depthwise(5, 6, 2, 3, 2, 1, VALID, NONE),
    # FULLY_CONNECTED
    "fc-per-tensor": lambda: fully_connected([1, 40], 40, 12, RELU),
    "fc-per-channel-relu6": lambda: fully_connected([1, 40], 40, 12, RELU6, True),
    "fc-rows-nobias": lambda: fully_connected([1, 3, 2, 8], 8, 5, bias=False),
    "fc-odd-outputs": lambda: fully_connected([2, 33], 33, 7, NONE, True),
    "fc-chunked": lambda: fully_connected([1, 1500], 1500, 6, RELU),
    # pools
    "avgpool-same-s2": lambda: pool("AVERAGE_POOL_2D", 7, 9, 3, 3, 2, SAME, NONE),
    "avgpool-valid-relu": lambda: pool("AVERAGE_POOL_2D", 8, 8, 2, 2, 2, VALID, RELU),
    "maxpool-same-s2": lambda: pool("MAX_POOL_2D", 7, 9, 3, 3, 2, SAME, NONE),
    "maxpool-valid-relu6": lambda: pool("MAX_POOL_2D", 8, 6, 2, 2, 2, VALID, RELU6),
    # ADD: same shapes, broadcasting, two activations; below and above the table size
    "add-same": lambda: add([1, 4, 5, 3], [1, 4, 5, 3], RELU),
    "add-broadcast-channels": lambda: add([1, 4, 5, 3], [1, 1, 1, 3], RELU6),
    "add-broadcast-rank": lambda: add([2, 4, 6], [4, 1], NONE),
    "add-large": lambda: add([1, 12, 12, 8], [1, 12, 12, 8], RELU, constant=False),
    # SOFTMAX, LOGISTIC, TANH, MEAN, PAD, QUANTIZE, DEQUANTIZE, RESHAPE
    "softmax-fine": lambda: softmax(2, 10, 0.02, 1.0),
    "softmax-coarse-beta": lambda: softmax(3, 7, 0.25, 0.5),
    "softmax-511": lambda: softmax(1, 511, 0.1, 1.0),
    "logistic": lambda: sigmoid("LOGISTIC", 0.023, -17),
    "logistic-saturating": lambda: sigmoid("LOGISTIC", 0.5, 40),
    "tanh": lambda: sigmoid("TANH", 0.1, 0),
    "tanh-fine": lambda: sigmoid("TANH", 2e-3, 3),
    "mean-keep-dims": lambda: mean(True),
    "mean": lambda: mean(False),
    "pad-4d": lambda: pad([[0, 0], [1, 2], [0, 3], [0, 0]]),
    "pad-2d": lambda: pad([[1, 1], [2, 0]], (3, 5)),
    "edges": edges,
    "small-cnn": small_cnn,
}


def inputs(graph: g.Graph, n: int = N_INPUTS, seed: int = 0) -> list[np.ndarray]:
    """Random inputs, half of them with most values at the zero point (as after a ReLU),
    and for 256-element inputs every int8 value."""
    t = graph.tensors[graph.inputs[0]]
    rng = np.random.default_rng(seed)
    out = []
    for k in range(n):
        if t.dtype == g.FLOAT32:
            x = rng.normal(0, 2, t.shape).astype(np.float32)
            if k == 0:  # exact halves of the scale and far outside the int8 range
                x.reshape(-1)[:4] = [0.015, -0.045, 1e6, -1e6]
        elif t.size == 256 and k == 0:
            x = np.arange(-128, 128, dtype=np.int8).reshape(t.shape)
        else:
            x = rng.integers(-128, 128, size=t.shape, dtype=np.int8)
            if k % 2:
                x[rng.random(t.shape) < 0.6] = int(t.quant.zero_point[0])
        out.append(x)
    return out


_GRAPHS: dict[str, tuple[g.Graph, bytes]] = {}


def case(name: str) -> tuple[g.Graph, bytes]:
    if name not in _GRAPHS:
        graph = import_tflite(CASES[name]())
        _GRAPHS[name] = graph, format2.to_bytes(graph)
    return _GRAPHS[name]


@pytest.mark.parametrize("name", sorted(CASES))
def test_operator_matches_reference(runner, name):
    graph, data = case(name)
    for x in inputs(graph):
        got = runner.run(data, x)
        want = int8_ops.run(graph, x)
        assert got.dtype == want.dtype and got.shape == want.shape
        np.testing.assert_array_equal(got, want)


# ---------------------------------------------------------------------------
# MLPerf Tiny


def mlperf(name: str) -> tuple[g.Graph, bytes]:
    path = ik.MLPERF_TINY_DIR / ik.MLPERF_TINY[name]
    if not path.is_file():
        pytest.skip(f"no {path} (set PICONN_MLPERF_TINY to MLPerf Tiny's int8 models)")
    key = "mlperf-" + name
    if key not in _GRAPHS:
        graph = import_tflite(path)
        _GRAPHS[key] = graph, format2.to_bytes(graph)
    return _GRAPHS[key]


@pytest.mark.parametrize("name", sorted(ik.MLPERF_TINY))
def test_mlperf_tiny_on_the_host(host, name):
    """Three random inputs and the constant inputs -128, 0 and 127."""
    graph, data = mlperf(name)
    t = graph.tensors[graph.inputs[0]]
    xs = inputs(graph, 3, seed=1) + [np.full(t.shape, v, dtype=np.int8) for v in (-128, 0, 127)]
    for x in xs:
        np.testing.assert_array_equal(host.run(data, x), int8_ops.run(graph, x))


@pytest.mark.parametrize("name", sorted(ik.MLPERF_TINY))
def test_mlperf_tiny_on_the_m0_core(name):
    """The Thumb-1 build on the emulated core: one random input (a few seconds each)."""
    if not ik.have_arm_toolchain():
        pytest.skip("arm-none-eabi-gcc is not installed (make installs it)")
    pytest.importorskip("rp2040py", reason="rp2040py (the emulated RP2040) is not installed")
    graph, data = mlperf(name)
    m0 = ik.M0Graph("-O2", asm=True)
    x = inputs(graph, 1, seed=2)[0]
    np.testing.assert_array_equal(m0.run(data, x), int8_ops.run(graph, x))
    assert len(m0.op_cycles) == len(graph.operators) and min(m0.op_cycles) > 0


# ---------------------------------------------------------------------------
# arithmetic


def test_mbqm_srdhm_rdbpot_over_their_ranges(runner):
    """Both ways of MultiplyByQuantizedMultiplier (|x| < 2^19 with shift <= 0, and the
    64-bit one) and the fixed-point helpers equal piconn.int8's, edges included."""
    rng = np.random.default_rng(3)
    n = 3000 if isinstance(runner, ik.HostGraph) else 250
    x = rng.integers(-(2**31), 2**31, n, dtype=np.int64)
    x[: n // 2] = rng.integers(-(2**20), 2**20, n // 2)
    x[:16] = [0, 1, -1, 2**19 - 1, -(2**19), 2**19, -(2**19) - 1, 2**31 - 1, -(2**31),
              12345, -12345, 2**30, -(2**30), 524287, -524289, 7]
    m = rng.integers(2**30, 2**31, n, dtype=np.int64)
    m[:8] = [2**30, 2**31 - 1, 0, 1, 2**30 + 1, 1518500250, 2**31 - 2, 1073741823]
    shift = rng.integers(-31, 31, n, dtype=np.int64)
    shift[n // 4: n // 2] = rng.integers(-12, 1, n // 2 - n // 4)
    shift[:16] = [0, -1, -31, -30, 0, 1, 30, -5, 0, -1, -7, -8, -9, -10, 0, -31]
    ok = shift <= 0
    ok |= np.abs(int8.wrap32(x << np.maximum(shift, 0))) == np.abs(x << np.maximum(shift, 0))
    x, m, shift = x[ok], m[ok], shift[ok]  # no left shift that leaves int32
    want = int8.mbqm(x, m, shift)
    got = [runner.call("nn_i8_mbqm", int(a), int(b), int(s)) for a, b, s in zip(x, m, shift)]
    np.testing.assert_array_equal(got, want)
    a = rng.integers(-(2**31), 2**31, n, dtype=np.int64)
    b = rng.integers(-(2**31), 2**31, n, dtype=np.int64)
    a[:4], b[:4] = [-(2**31), -(2**31), 2**31 - 1, 0], [-(2**31), 2**31 - 1, -(2**31), 5]
    got = [runner.call("nn_i8_srdhm", int(p), int(q)) for p, q in zip(a, b)]
    np.testing.assert_array_equal(got, int8.srdhm(a, b))
    e = rng.integers(0, 32, n, dtype=np.int64)
    got = [runner.call("nn_i8_rdbpot", int(p), int(q)) for p, q in zip(a, e)]
    np.testing.assert_array_equal(got, int8.rdbpot(a, e))


# ---------------------------------------------------------------------------
# nn_graph_check


def _at(data: bytes, fmt: str, offset: int, value) -> bytes:
    b = bytearray(data)
    struct.pack_into(fmt, b, offset, value)
    return bytes(b)


TENSOR_AT = 64  # the tensor table; the operator table follows it


def _op_at(data: bytes, k: int) -> int:
    n_tensors = struct.unpack_from("<H", data, 16)[0]
    return 64 + 40 * n_tensors + 80 * k


def test_check_accepts_models_and_refuses_what_breaks_a_rule(host):
    graph, data = case("small-cnn")
    model = ik.GraphModel(data)
    n, arena = model.n_operators, model.arena_size
    assert host.check(data, arena, 0, n) == (0, n - 1)
    conv_at = _op_at(data, 1)  # operator 1: CONV_2D
    x, y = graph.operators[1].inputs[0], graph.operators[1].outputs[0]
    refused = {
        "header": (b"XCNN" + data[4:], arena, 0, n),
        "model size": (data, arena, 0, n, len(data) - 1),
        "arena": (data, arena - 1, 0, n),
        "range": (data, arena, 2, 1),
        "kind": (_at(data, "<B", conv_at, 99), arena, 0, n),
        "index": (_at(data, "<H", conv_at + 4, 999), arena, 0, n),
        "tensor": (_at(data, "<I", TENSOR_AT + 40 * x + 12, arena), arena, 0, n),
        "shape": (_at(_at(data, "<H", TENSOR_AT + 40 * y + 8, 8), "<H", TENSOR_AT + 40 * y + 10, 6),
                  arena, 0, n),  # output [1, 6, 6, 8] -> [1, 6, 8, 6]: as many bytes
        "params": (_at(data, "<i", conv_at + 16 + 8, 0), arena, 0, n),  # stride_h 0
        "table": (_at(data, "<I", conv_at + 12, len(data) - 4), arena, 0, n),
    }
    for what, args in refused.items():
        code, _ = host.check(*args)
        assert ik.ERRORS[code] == what, (what, ik.ERRORS[code])
    # a required input given as absent (the weights), an optional one absent (the bias)
    assert host.check(_at(data, "<H", conv_at + 6, 0xFFFF), arena, 0, n)[0] == \
        ik.ERRORS.index("index")
    assert host.check(_at(data, "<H", _op_at(data, 2) + 8, 0xFFFF), arena, 0, n) == (0, n - 1)
    # the operators after a bad one are not checked when the range stops before it
    bad = _at(data, "<B", _op_at(data, 5), 0)
    assert host.check(bad, arena, 0, 5) == (0, 4)
    assert host.check(bad, arena, 0, 6) == (ik.ERRORS.index("kind"), 5)


@pytest.mark.parametrize("name", ["pad-4d", "mean"])
def test_check_refuses_paddings_and_axes_in_the_arena(host, name):
    """PAD's paddings and MEAN's axes are read when the model is checked, before the arena
    holds anything: in the arena instead of the model they are refused (not read)."""
    graph, data = case(name)
    n, arena = len(graph.operators), ik.GraphModel(data).arena_size
    assert host.check(data, arena, 0, n)[0] == 0
    k = graph.operators[0].inputs[1]  # the int32 constant
    moved = _at(_at(data, "<B", TENSOR_AT + 40 * k + 2, 0), "<I", TENSOR_AT + 40 * k + 12, 0)
    assert host.check(moved, arena, 0, n) == (ik.ERRORS.index("shape"), 0)


_FUZZ = r"""
import random, sys
sys.path.insert(0, {tools!r})
import numpy as np
import int8_ckernels as ik
data = open({model!r}, "rb").read()
h = ik.HostGraph()
m = ik.GraphModel(data)
rng = random.Random(5)
records_end = 64 + 40 * m.n_tensors + 80 * m.n_operators
accepted = 0
for k in range({n}):
    b = bytearray(data)
    for _ in range(rng.randint(1, 3)):
        at = rng.randrange(16, records_end)
        if rng.random() < 0.5:
            b[at] ^= 1 << rng.randrange(8)
        else:
            b[at] = rng.choice((0, 1, 2, 3, 4, 0x7f, 0x80, 0xfe, 0xff))
    code, _ = h.check(bytes(b), m.arena_size, 0, m.n_operators)
    if code == 0:
        accepted += 1
        arena = np.zeros(m.arena_size + 64, np.uint8)
        mm = h._aligned(bytes(b))
        h.lib.nn_graph_run(mm.ctypes.data, arena.ctypes.data, 0, m.n_operators)
print("accepted", accepted)
"""


def test_check_makes_corrupt_records_safe(host, tmp_path):
    """Random corruptions of the header and records: whatever nn_graph_check accepts runs
    without a fault (in a child process, so that a fault would fail the test)."""
    _, data = case("small-cnn")
    model = tmp_path / "m.nnb"
    model.write_bytes(data)
    code = _FUZZ.format(tools=str(ROOT / "tools"), model=str(model), n=3000)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT / "host")]))
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       timeout=600, env=env, check=False)
    assert p.returncode == 0, p.stderr[-3000:]
    accepted = int(p.stdout.split()[-1])
    assert 0 < accepted < 3000  # some corruptions are harmless (params, data), most refused


# ---------------------------------------------------------------------------
# builds

GRAPH_SOURCES = [ik.SRC_DIR / "nn_graph.c", ik.SRC_DIR / "nn_int8.c",
                 ik.SRC_DIR / "nn_xnor_graph.c", ik.SRC_DIR / "nn_float.c"]
ALLOWED_HELPERS = {  # no 64-bit multiply or divide: only the RP2040's divider and floats
    "memcpy", "memset", "__aeabi_memcpy", "__aeabi_memset", "__aeabi_memclr",
    "__aeabi_memcpy4", "__aeabi_memclr4", "__aeabi_memset4", "__aeabi_idiv", "__aeabi_uidiv",
    "__aeabi_fdiv", "__aeabi_fsub", "__aeabi_i2f", "__aeabi_f2iz", "__aeabi_fcmpge",
    "__aeabi_fcmple", "__aeabi_fcmplt", "__aeabi_fcmpgt", "__aeabi_fcmpun",
    "__aeabi_fmul", "__aeabi_fadd", "__aeabi_ui2f"}  # (the float32 operators')
ARM_TARGETS = {
    "m0plus": ["-mcpu=cortex-m0plus", "-mthumb"],
    "armv7emsp": ["-mcpu=cortex-m4", "-mthumb", "-mfloat-abi=hard", "-mfpu=fpv4-sp-d16"],
}


@pytest.mark.parametrize("target,flags", [
    ("m0plus", ["-Os"]), ("m0plus", ["-O2"]), ("m0plus", ["-Os", "-DNN_NO_ASM"]),
    ("m0plus", ["-O2", "-DNN_KERNELS_IN_RAM=1"]), ("armv7emsp", ["-Os"]),
    ("armv7emsp", ["-O2"])])
def test_compiles_for_the_boards(target, flags, tmp_path):
    if not ik.have_arm_toolchain():
        pytest.skip("arm-none-eabi-gcc is not installed (make installs it)")
    undefined = set()
    for src in GRAPH_SOURCES:
        obj = tmp_path / (src.stem + ".o")
        cmd = ["arm-none-eabi-gcc", *ARM_TARGETS[target], *flags, "-Wall", "-Wextra", "-Werror",
               "-c", str(src), "-o", str(obj)]
        r = subprocess.run(cmd, check=False, capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
        nm = subprocess.run(["arm-none-eabi-nm", "-u", str(obj)], capture_output=True,
                            text=True, check=True).stdout
        undefined |= {line.split()[-1] for line in nm.splitlines() if line.strip()}
    ours = {s for s in undefined if s.startswith(("nn_i8_", "nn_xnor_", "nn_f32_", "nn_graph_"))
            or s == "nn_popcount_xor"}  # (nn_kernels.c's, as nn_xnor_dense)
    assert undefined - ours <= ALLOWED_HELPERS, undefined - ours - ALLOWED_HELPERS


# ---------------------------------------------------------------------------
# the binding on the unix port


def _unix():
    if not mpy.UNIX_BINARY.is_file():
        pytest.skip("no build/UNIX/micropython (make firmware BOARD=UNIX)")
    probe = "import _nn_c; print(hasattr(_nn_c, 'graph_run'))"
    r = subprocess.run([str(mpy.UNIX_BINARY), "-c", probe], capture_output=True, text=True,
                       check=False)
    if r.stdout.strip() != "True":
        pytest.skip("the unix build's _nn_c has no graph_run (make firmware BOARD=UNIX)")
    return mpy.UNIX_BINARY


def _run_unix(exe: Path, code: str, tmp: Path) -> str:
    script = tmp / "script.py"
    script.write_text(code)
    p = subprocess.run([str(exe), "-X", "heapsize=8M", str(script)], capture_output=True,
                       text=True, timeout=300, check=False)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]
    return p.stdout


def _b64(b: bytes) -> str:
    return base64.b64encode(b).decode()


@pytest.mark.parametrize("name", ["small-cnn", "edges", "mlperf-kws"])
def test_binding_runs_under_heap_lock(name, tmp_path):
    exe = _unix()
    graph, data = mlperf("kws") if name == "mlperf-kws" else case(name)
    model = ik.GraphModel(data)
    x = inputs(graph, 1, seed=4)[0]
    arena = model.arena_with(x)
    off, dt, shape = model.outputs[0]
    n_out = int(np.prod(shape)) * np.dtype(dt).itemsize
    code = (
        "import _nn_c, binascii, micropython\n"
        f"model = binascii.a2b_base64({_b64(data)!r})\n"
        f"arena = bytearray(binascii.a2b_base64({_b64(arena.tobytes())!r}))\n"
        "micropython.heap_lock()\n"
        f"_nn_c.graph_run(model, arena, 0, {model.n_operators // 2})\n"
        f"_nn_c.graph_run(model, arena, {model.n_operators // 2}, {model.n_operators})\n"
        "micropython.heap_unlock()\n"
        f"print(bytes(arena[{off}:{off + n_out}]).hex())\n")
    got = np.frombuffer(bytes.fromhex(_run_unix(exe, code, tmp_path).strip()), dt)
    np.testing.assert_array_equal(got.reshape(shape), int8_ops.run(graph, x))


@pytest.mark.parametrize("call,message", [
    ("_nn_c.graph_run(model, arena, 0, n + 1)", "first/end outside"),
    ("_nn_c.graph_run(model, arena, 2, 1)", "need 0 <= first <= end"),
    ("_nn_c.graph_run(model, arena, -1, 1)", "need 0 <= first <= end"),
    ("_nn_c.graph_run(model, bytearray(8), 0, n)", "arena shorter"),
    ("_nn_c.graph_run(model[:200], arena, 0, n)", "model buffer shorter"),
    ("_nn_c.graph_run(b'PCNN' + bytes(80), arena, 0, 1)", "not a version-2 model header"),
    ("_nn_c.graph_run(memoryview(model)[1:], arena, 0, n)", "4-byte aligned"),
    ("_nn_c.graph_run(model, memoryview(arena)[2:], 0, n)", "4-byte aligned"),
    ("_nn_c.graph_run(bad_stride, arena, 0, n)", "operator 1: param out of range"),
])
def test_binding_refuses_bad_arguments(call, message, tmp_path):
    exe = _unix()
    _, data = case("small-cnn")
    model = ik.GraphModel(data)
    bad = _at(data, "<i", _op_at(data, 1) + 16 + 8, 0)
    code = (
        "import _nn_c, binascii\n"
        f"model = binascii.a2b_base64({_b64(data)!r}); n = {model.n_operators}\n"
        f"bad_stride = binascii.a2b_base64({_b64(bad)!r})\n"
        f"arena = bytearray({model.arena_size + 8})\n"
        f"try:\n    {call}\n    print('no error')\n"
        "except ValueError as e:\n    print('ValueError', e)\n")
    out = _run_unix(exe, code, tmp_path)
    assert out.startswith("ValueError") and message in out, out
    with pytest.raises(AssertionError, match="TypeError"):
        _run_unix(exe, "import _nn_c\n_nn_c.graph_run(5, bytearray(4), 0, 0)\n", tmp_path)
