"""BINARIZE_CONV_2D's reference (piconn.xnor_ops): an int8 convolution whose output is one
bit per channel, set when the accumulator reaches the channel's threshold. Brute force
against the reference, thresholds at the edges, the load rules, the file format."""

from __future__ import annotations

import struct
import zlib

import numpy as np
import pytest

from piconn import format2, int8_ops, xnor_ops
from piconn import graph as g


def _graph(x: np.ndarray | None, w: np.ndarray, t: np.ndarray, shape: tuple[int, ...],
           stride: tuple[int, int], padding: str, zx: int) -> g.Graph:
    """A one-operator graph: x i8 [N, H, W, C_in] (zero point zx) -> bits."""
    q = g.Quant(np.array([0.5], np.float32), np.array([zx], np.int32))
    n, h, wd, _ = shape
    _, kh, kw, _ = w.shape
    if padding == g.SAME:
        oh, ow = -(-h // stride[0]), -(-wd // stride[1])
    else:
        oh, ow = (h - kh) // stride[0] + 1, (wd - kw) // stride[1] + 1
    tensors = [g.Tensor("x", shape, g.INT8, q),
               g.Tensor("w", w.shape, g.INT8, None, w),
               g.Tensor("t", t.shape, g.INT32, None, t),
               g.Tensor("y", (n, oh, ow, w.shape[0]), g.BITS)]
    op = g.Operator(g.BINARIZE_CONV_2D, (0, 1, 2), (3,), g.ConvOptions(*stride, padding))
    return g.Graph(tensors, [op], [0], [3])


def _brute(x: np.ndarray, w: np.ndarray, p: xnor_ops.WindowParams) -> np.ndarray:
    """FORMAT.md's sum, tap by tap: sum over taps inside the image of (x - zx) * w."""
    n, h, wd, _ = x.shape
    c_out, kh, kw, _ = w.shape
    s = np.zeros((n, p.out_h, p.out_w, c_out), np.int64)
    for b in range(n):
        for oy in range(p.out_h):
            for ox in range(p.out_w):
                for c in range(c_out):
                    total = 0
                    for ky in range(kh):
                        for kx in range(kw):
                            iy = oy * p.stride_h - p.pad_top + ky
                            ix = ox * p.stride_w - p.pad_left + kx
                            if 0 <= iy < h and 0 <= ix < wd:
                                total += int(((x[b, iy, ix].astype(np.int64) - p.input_zero)
                                              * w[c, ky, kx]).sum())
                    s[b, oy, ox, c] = total
    return s


@pytest.mark.parametrize("padding, stride, kernel, c_in, zx", [
    (g.VALID, (1, 1), (3, 3), 1, -128),
    (g.VALID, (4, 4), (4, 4), 1, -128),
    (g.SAME, (2, 1), (3, 2), 3, 5),
    (g.SAME, (1, 3), (2, 4), 2, 127),
    (g.VALID, (2, 3), (1, 1), 5, 0),
])
def test_reference_equals_the_brute_force_sum(rng, padding, stride, kernel, c_in, zx):
    x = rng.integers(-128, 128, (2, 7, 9, c_in)).astype(np.int8)
    x[0, :3] = zx  # blank rows: every tap x == zx
    w = rng.integers(-128, 128, (5, *kernel, c_in)).astype(np.int8)
    w[0] = -128  # the extreme weight everywhere in channel 0
    t = rng.integers(-3000, 3000, 5).astype(np.int32)
    graph = _graph(x, w, t, x.shape, stride, padding, zx)
    p = xnor_ops.prepare(graph, 0)
    assert p.input_zero == zx
    sums = _brute(x, w, p)
    np.testing.assert_array_equal(xnor_ops.binarize_conv_sums(x, w, p), sums)
    np.testing.assert_array_equal(xnor_ops.binarize_conv2d(x, w, t, p), sums >= t)
    # thresholds at the edge: t = sum sets the bit, t = sum + 1 clears it
    s0 = sums[1, 0, 0]
    np.testing.assert_array_equal(xnor_ops.binarize_conv2d(x, w, s0, p)[1, 0, 0], True)
    np.testing.assert_array_equal(xnor_ops.binarize_conv2d(x, w, s0 + 1, p)[1, 0, 0], False)


def test_all_blank_input_and_extreme_thresholds(rng):
    x = np.full((1, 6, 6, 2), -128, np.int8)
    w = rng.integers(-128, 128, (4, 3, 3, 2)).astype(np.int8)
    t = np.array([0, 1, -(2**31), 2**31 - 1], np.int32)
    graph = _graph(x, w, t, x.shape, (1, 1), g.SAME, -128)
    p = xnor_ops.prepare(graph, 0)
    y = xnor_ops.binarize_conv2d(x, w, t, p)
    np.testing.assert_array_equal(y[0, 2, 3], [True, False, True, False])  # 0 >= t
    # the largest sum a field can reach is far inside int32 (255 * 128 * 1024 < 2^25)
    x = np.full((1, 32, 32, 1), 127, np.int8)
    w = np.full((1, 32, 32, 1), -128, np.int8)
    p = xnor_ops.prepare(_graph(x, w, t[:1], x.shape, (1, 1), g.VALID, -128), 0)
    assert xnor_ops.binarize_conv_sums(x, w, p)[0, 0, 0, 0] == -255 * 128 * 1024


def _refused(graph: g.Graph, message: str) -> None:
    with pytest.raises(g.GraphError, match=message):
        xnor_ops.prepare(graph, 0)


def test_prepare_refuses_what_breaks_the_rules(rng):
    x = rng.integers(-128, 128, (1, 8, 8, 2)).astype(np.int8)
    w = rng.integers(-128, 128, (3, 3, 3, 2)).astype(np.int8)
    t = np.zeros(3, np.int32)
    xnor_ops.prepare(_graph(x, w, t, x.shape, (1, 1), g.VALID, 0), 0)

    bad = _graph(x, w, np.zeros(4, np.int32), x.shape, (1, 1), g.VALID, 0)
    _refused(bad, "thresholds")
    bad = _graph(x, w, t, x.shape, (1, 1), g.VALID, 0)
    bad.tensors[2] = g.Tensor("t", (3,), g.INT32)  # not a constant
    _refused(bad, "thresholds")
    bad = _graph(x, w, t, x.shape, (1, 1), g.VALID, 0)
    bad.tensors[1] = g.Tensor("w", w.shape, g.INT8)  # not a constant
    _refused(bad, "constant 4-D int8")
    bad = _graph(x, w, t, x.shape, (1, 1), g.VALID, 0)
    bad.tensors[0].quant = None
    _refused(bad, "per tensor")
    bad = _graph(x, w, t, x.shape, (1, 1), g.VALID, 0)
    bad.tensors[1].quant = g.Quant(np.ones(3, np.float32), np.array([0, 1, 0], np.int32))
    _refused(bad, "zero points")
    bad = _graph(x, w, t, x.shape, (1, 1), g.VALID, 0)
    bad.tensors[3] = g.Tensor("y", (1, 6, 6, 3), g.INT8, bad.tensors[0].quant)
    _refused(bad, "expected bits")
    bad = _graph(x, w, t, x.shape, (1, 1), g.VALID, 0)
    bad.tensors[3] = g.Tensor("y", (1, 5, 6, 3), g.BITS)
    _refused(bad, "output shape")
    bad = _graph(x, w[:, :, :, :1], t, x.shape, (1, 1), g.VALID, 0)
    _refused(bad, "must be")
    bad = _graph(x, w, t, x.shape, (1, 1), g.VALID, 0)
    bad.operators[0].options = g.ConvOptions(1, 1, g.VALID, g.ACT_RELU)
    _refused(bad, "no fused activation")
    # the receptive field: 1024 taps at most
    x2 = np.zeros((1, 33, 32, 1), np.int8)
    _refused(_graph(x2, np.zeros((1, 33, 32, 1), np.int8), t[:1], x2.shape, (1, 1), g.VALID, 0),
             "1024")
    xnor_ops.prepare(_graph(x2, np.zeros((1, 32, 32, 1), np.int8), t[:1], x2.shape, (1, 1),
                            g.VALID, 0), 0)


def _with_crc(blob: bytearray) -> bytes:
    struct.pack_into("<I", blob, 12, zlib.crc32(blob[16:]) & 0xFFFFFFFF)
    return bytes(blob)


def test_file_round_trip_and_refused_params(rng):
    x = rng.integers(-128, 128, (1, 9, 9, 2)).astype(np.int8)
    w = rng.integers(-128, 128, (40, 3, 3, 2)).astype(np.int8)
    t = rng.integers(-500, 500, 40).astype(np.int32)
    graph = _graph(x, w, t, x.shape, (2, 2), g.SAME, -7)
    graph.outputs = []  # a bits tensor is never a graph output: feed a pool
    graph.tensors.append(g.Tensor("z", (1, 1, 1, 40), g.BITS))
    graph.operators.append(g.Operator(g.BINARY_MAX_POOL_2D, (3,), (4,),
                                      g.PoolOptions(5, 5, 5, 5, g.VALID)))
    graph.tensors.append(g.Tensor("wd", (10, 1, 1, 40), g.BITS, None,
                                  rng.random((10, 1, 1, 40)) < 0.5))
    graph.tensors.append(g.Tensor("ab", (2, 10), g.INT32, None,
                                  np.ones((2, 10), np.int32)))
    graph.tensors.append(g.Tensor("logits", (1, 1, 1, 10), g.INT32))
    graph.operators.append(g.Operator(g.XNOR_CONV_2D, (4, 5, 6), (7,),
                                      g.ConvOptions(1, 1, g.VALID)))
    graph.outputs = [7]
    blob = format2.to_bytes(graph)
    gm = format2.from_bytes(blob)
    assert gm.graph.operators[0].kind == g.BINARIZE_CONV_2D
    np.testing.assert_array_equal(gm.graph.tensors[1].data, w)
    np.testing.assert_array_equal(gm.graph.tensors[2].data, t)
    want = xnor_ops.binarize_conv2d(x, w, t, xnor_ops.prepare(graph, 0))
    np.testing.assert_array_equal(int8_ops.run(graph, x, keep=True)[3], want)
    np.testing.assert_array_equal(int8_ops.run(gm.graph, x), int8_ops.run(graph, x))
    # the record: code 23, params padding (0: SAME), strides, pads, the input zero point
    at = format2.HEADER_SIZE + format2.TENSOR_RECORD_SIZE * len(gm.graph.tensors)
    assert blob[at] == 23
    params = struct.unpack_from("<16i", blob, at + 16)
    assert params[:6] == (0, 2, 2, 1, 1, -7) and not any(params[6:])
    for field, value in ((5, -8), (3, 0), (6, 1)):  # input_zero, pad_top, an unused param
        bad = bytearray(blob)
        struct.pack_into("<i", bad, at + 16 + 4 * field, value)
        with pytest.raises(ValueError, match="BINARIZE_CONV_2D|params"):
            format2.from_bytes(_with_crc(bad))
