"""Version 2 of the model format (int8 graphs): round trips, layout rules, refusals.

A graph written by `format2.to_bytes` and read back by `format2.from_bytes` has the same
tensors, operators and results; writing it again gives the same bytes. The reader refuses
what breaks a rule: a flipped bit (CRC), stored numbers that differ from what the
quantization gives, a memory plan whose live tensors overlap. Version-1 files keep loading.
"""

from __future__ import annotations

import struct
import zlib

import numpy as np
import pytest

pytest.importorskip("tflite", reason="PyPI tflite (test extra) builds the models")

from test_tflite_models import MODELS, model_path
from tflite_build import ModelBuilder

from piconn import format as format1
from piconn import format2, int8_ops, ir
from piconn import graph as g
from piconn.tflite import import_tflite

SAME, VALID, RELU, RELU6 = 0, 1, 1, 3


def every_kind() -> g.Graph:
    """A graph with every operator kind version 2 holds."""
    rng = np.random.default_rng(4)
    b = ModelBuilder()
    xf = b.tensor([1, 8, 8, 2], "float32")
    x = b.tensor([1, 8, 8, 2], scale=0.05, zero=-4)
    pads = b.tensor([4, 2], "int32", data=[[0, 0], [1, 0], [0, 1], [0, 0]])
    xp = b.tensor([1, 9, 9, 2], scale=0.05, zero=-4)
    c1 = b.tensor([1, 5, 5, 4], scale=0.1, zero=-128)
    dw = b.tensor([1, 5, 5, 8], scale=0.1, zero=-128)
    av = b.tensor([1, 5, 5, 8], scale=0.1, zero=-128)
    mx = b.tensor([1, 3, 3, 8], scale=0.1, zero=-128)
    ad = b.tensor([1, 3, 3, 8], scale=0.15, zero=-20)
    mean = b.tensor([1, 1, 1, 8], scale=0.1, zero=-10)
    flat = b.tensor([1, 8], scale=0.1, zero=-10)
    fc = b.tensor([1, 6], scale=0.2, zero=3)
    lg = b.tensor([1, 6], scale=1 / 256, zero=-128)
    th = b.tensor([1, 6], scale=1 / 128, zero=0)
    rq = b.tensor([1, 6], scale=0.01, zero=5)
    sm = b.tensor([1, 6], scale=1 / 256, zero=-128)
    out = b.tensor([1, 6], "float32")
    w1 = b.tensor([4, 3, 3, 2], scale=rng.uniform(0.01, 0.02, 4), zero=[0] * 4,
                  data=rng.integers(-127, 128, (4, 3, 3, 2)))
    b1 = b.tensor([4], "int32", scale=0.05 * np.full(4, 0.015), zero=[0] * 4, axis=0,
                  data=rng.integers(-500, 500, 4))
    w2 = b.tensor([1, 3, 3, 8], scale=rng.uniform(0.01, 0.02, 8), zero=[0] * 8, axis=3,
                  data=rng.integers(-127, 128, (1, 3, 3, 8)))
    b2 = b.tensor([8], "int32", data=rng.integers(-500, 500, 8))
    axes = b.tensor([2], "int32", data=[1, 2])
    shape = b.tensor([2], "int32", data=[1, 8])
    w3 = b.tensor([6, 8], scale=[0.02], zero=[0], data=rng.integers(-127, 128, (6, 8)))
    b.op("QUANTIZE", [xf], [x])
    b.op("PAD", [x, pads], [xp])
    b.op("CONV_2D", [xp, w1, b1], [c1], "Conv2DOptions", Padding=SAME, StrideW=2, StrideH=2,
         FusedActivationFunction=RELU)
    b.op("DEPTHWISE_CONV_2D", [c1, w2, b2], [dw], "DepthwiseConv2DOptions", Padding=SAME,
         StrideW=1, StrideH=1, DepthMultiplier=2, FusedActivationFunction=RELU6)
    b.op("AVERAGE_POOL_2D", [dw], [av], "Pool2DOptions", Padding=SAME, StrideW=1, StrideH=1,
         FilterWidth=3, FilterHeight=3)
    b.op("MAX_POOL_2D", [av], [mx], "Pool2DOptions", Padding=SAME, StrideW=2, StrideH=2,
         FilterWidth=2, FilterHeight=2)
    b.op("ADD", [mx, mx], [ad], "AddOptions", FusedActivationFunction=RELU)
    b.op("MEAN", [ad, axes], [mean], "ReducerOptions", KeepDims=True)
    b.op("RESHAPE", [mean, shape], [flat], "ReshapeOptions", NewShape=[1, 8])
    b.op("FULLY_CONNECTED", [flat, w3, -1], [fc], "FullyConnectedOptions")
    b.op("LOGISTIC", [fc], [lg])
    b.op("TANH", [lg], [th])
    b.op("QUANTIZE", [th], [rq])
    b.op("SOFTMAX", [rq], [sm], "SoftmaxOptions", Beta=0.75)
    b.op("DEQUANTIZE", [sm], [out])
    return import_tflite(b.build([xf], [out]))


@pytest.fixture(scope="module", params=["every_kind"] + sorted(MODELS))
def graph(request) -> g.Graph:
    if request.param == "every_kind":
        return every_kind()
    return import_tflite(model_path(request.param))


def same_graph(a: g.Graph, b: g.Graph) -> None:
    assert (a.inputs, a.outputs) == (b.inputs, b.outputs)
    assert len(a.tensors) == len(b.tensors)
    for s, t in zip(a.tensors, b.tensors):
        assert (s.shape, s.dtype, s.is_constant) == (t.shape, t.dtype, t.is_constant)
        if s.is_constant:
            np.testing.assert_array_equal(s.data, t.data)
        assert (s.quant is None) == (t.quant is None)
        if s.quant is not None:
            np.testing.assert_array_equal(s.quant.scale, t.quant.scale)
            np.testing.assert_array_equal(s.quant.zero_point, t.quant.zero_point)
            if s.quant.per_channel:
                assert s.quant.axis == t.quant.axis
    assert a.operators == b.operators


def test_round_trip(graph):
    data = format2.to_bytes(graph)
    model = format2.from_bytes(data)
    same_graph(graph, model.graph)
    plan = g.plan_memory(graph, align=4)
    assert model.arena_size == plan.arena_size and model.offsets == plan.offsets
    assert format2.to_bytes(model.graph) == data  # deterministic, nothing lost
    assert format2.read(data).graph.operators == graph.operators
    t = graph.tensors[graph.inputs[0]]
    rng = np.random.default_rng(0)
    for _ in range(3):
        x = (rng.normal(0, 1, t.shape).astype(np.float32) if t.dtype == g.FLOAT32
             else rng.integers(-128, 128, t.shape, dtype=np.int8))
        np.testing.assert_array_equal(int8_ops.run(model.graph, x), int8_ops.run(graph, x))


def test_layout(graph):
    """Header fields, 4-byte alignment of every constant and table, CRC over [16, end)."""
    data = format2.to_bytes(graph)
    head = struct.unpack_from("<4sHHIIHHHHIIII", data)
    magic, version, hsize, total, crc, n_t, n_o, t_size, o_size, t_at, o_at, d_at, arena = head
    assert (magic, version, hsize, total) == (b"PCNN", 2, 64, len(data))
    assert crc == zlib.crc32(data[16:]) & 0xFFFFFFFF
    assert (n_t, n_o, t_size, o_size) == (len(graph.tensors), len(graph.operators), 40, 80)
    assert (t_at, o_at, d_at) == (64, 64 + 40 * n_t, 64 + 40 * n_t + 80 * n_o)
    for i, t in enumerate(graph.tensors):
        dtype, rank, storage, _, *rest = struct.unpack_from("<BBBB4HII", data, t_at + 40 * i)
        offset, nbytes = rest[4:]
        assert dtype == format2.DTYPE_CODES[t.dtype] and rank == len(t.shape)
        assert storage == int(t.is_constant) and nbytes == t.nbytes and offset % 4 == 0
        if t.is_constant:
            assert d_at <= offset and data[offset:offset + nbytes] == t.data.astype(
                t.data.dtype.newbyteorder("<")).tobytes()
        else:
            assert offset + nbytes <= arena
    for k in range(n_o):
        (table,) = struct.unpack_from("<I", data, o_at + 80 * k + 12)
        assert table % 4 == 0 and (table == 0 or table >= d_at)


def refuses(data: bytes, pattern: str) -> None:
    with pytest.raises(format2.FormatError, match=pattern):
        format2.from_bytes(data)


def with_crc(blob: bytearray) -> bytes:
    struct.pack_into("<I", blob, 12, zlib.crc32(bytes(blob[16:])) & 0xFFFFFFFF)
    return bytes(blob)


def test_refusals():
    graph = every_kind()
    data = format2.to_bytes(graph)
    refuses(data[:40], "too short")
    refuses(data[:-4], "total_size")
    refuses(b"XXXX" + data[4:], "magic")
    refuses(data[:4] + b"\x03\x00" + data[6:], "version 3; this reader reads version 2")
    for pos in range(16, len(data), max(1, len(data) // 300)):
        flipped = bytearray(data)
        flipped[pos] ^= 0x10
        refuses(bytes(flipped), "CRC")
    o_at = 64 + 40 * len(graph.tensors)
    conv = next(k for k, op in enumerate(graph.operators) if op.kind == g.CONV_2D)
    # a stored param that its quantization does not give (the output zero point)
    blob = bytearray(data)
    struct.pack_into("<i", blob, o_at + 80 * conv + 16 + 4 * 8, 7)
    refuses(with_crc(blob), "stored params differ")
    # a requantization multiplier in the channel table
    (table,) = struct.unpack_from("<I", data, o_at + 80 * conv + 12)
    blob = bytearray(data)
    blob[table + 4] ^= 1
    refuses(with_crc(blob), "stored table differs")
    # two activations alive together at the same arena offset
    fc = next(k for k, op in enumerate(graph.operators) if op.kind == g.FULLY_CONNECTED)
    x_in, y_out = graph.operators[fc].inputs[0], graph.operators[fc].outputs[0]
    (x_off,) = struct.unpack_from("<I", data, 64 + 40 * x_in + 12)
    blob = bytearray(data)
    struct.pack_into("<I", blob, 64 + 40 * y_out + 12, x_off)
    refuses(with_crc(blob), "alive together and overlap")
    # an unknown operator kind
    blob = bytearray(data)
    blob[o_at] = 99
    refuses(with_crc(blob), "unknown kind 99")


def test_version_one_keeps_loading():
    """read() takes both versions; the version-1 reader refuses version 2 by name."""
    rng = np.random.default_rng(0)
    v1_model = ir.DeviceModel([ir.DenseF32(rng.normal(0, 0.1, (3, 5)).astype(np.float32),
                                           np.zeros(3, np.float32))], "float")
    v1 = format1.to_bytes(v1_model)
    read = format2.read(v1)
    assert isinstance(read, ir.DeviceModel)
    np.testing.assert_array_equal(read.layers[0].w, v1_model.layers[0].w)
    with pytest.raises(ValueError, match="version 2"):
        format1.from_bytes(format2.to_bytes(every_kind()))
