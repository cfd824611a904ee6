"""Bad and unsupported .tflite files give a clear TFLiteError, never a traceback from deep
inside, a hang or a graph that cannot run; the reader agrees with PyPI `tflite` field by field.
"""

from __future__ import annotations

import numpy as np
import pytest

tflite = pytest.importorskip("tflite", reason="PyPI tflite (test extra) builds the models")

from test_tflite_models import MODELS, model_path
from tflite_build import ModelBuilder

from piconn import graph as g
from piconn import int8_ops
from piconn.tflite import SUPPORTED, TFLiteError, import_tflite

SAME, VALID = 0, 1


def small_cnn() -> bytes:
    """CONV -> DEPTHWISE -> AVERAGE_POOL -> RESHAPE -> FULLY_CONNECTED -> SOFTMAX, small."""
    rng = np.random.default_rng(0)
    b = ModelBuilder()
    x = b.tensor([1, 6, 6, 2], scale=0.05, zero=3)
    w1 = b.tensor([4, 3, 3, 2], scale=rng.uniform(0.01, 0.02, 4), zero=[0] * 4,
                  data=rng.integers(-127, 128, (4, 3, 3, 2)))
    b1 = b.tensor([4], "int32", data=rng.integers(-100, 100, 4))
    c1 = b.tensor([1, 6, 6, 4], scale=0.1, zero=-128)
    w2 = b.tensor([1, 3, 3, 4], scale=rng.uniform(0.01, 0.02, 4), zero=[0] * 4, axis=3,
                  data=rng.integers(-127, 128, (1, 3, 3, 4)))
    b2 = b.tensor([4], "int32", data=rng.integers(-100, 100, 4))
    c2 = b.tensor([1, 3, 3, 4], scale=0.1, zero=-128)
    p = b.tensor([1, 1, 1, 4], scale=0.1, zero=-128)
    shape = b.tensor([2], "int32", data=[1, 4])
    r = b.tensor([1, 4], scale=0.1, zero=-128)
    w3 = b.tensor([3, 4], scale=[0.02], zero=[0], data=rng.integers(-127, 128, (3, 4)))
    f = b.tensor([1, 3], scale=0.2, zero=0)
    s = b.tensor([1, 3], scale=1 / 256, zero=-128)
    b.op("CONV_2D", [x, w1, b1], [c1], "Conv2DOptions", Padding=SAME, StrideW=1, StrideH=1,
         FusedActivationFunction=1)
    b.op("DEPTHWISE_CONV_2D", [c1, w2, b2], [c2], "DepthwiseConv2DOptions", Padding=SAME,
         StrideW=2, StrideH=2, DepthMultiplier=1, FusedActivationFunction=3)
    b.op("AVERAGE_POOL_2D", [c2], [p], "Pool2DOptions", Padding=VALID, StrideW=3, StrideH=3,
         FilterWidth=3, FilterHeight=3)
    b.op("RESHAPE", [p, shape], [r], "ReshapeOptions", NewShape=[1, 4])
    b.op("FULLY_CONNECTED", [r, w3, -1], [f], "FullyConnectedOptions")
    b.op("SOFTMAX", [f], [s], "SoftmaxOptions", Beta=1.0)
    return b.build([x], [s])


def import_or_refuse(data: bytes) -> g.Graph | None:
    """import_tflite either refuses with TFLiteError or returns a graph that runs."""
    try:
        graph = import_tflite(data)
    except TFLiteError as e:
        assert str(e)
        return None
    x = np.zeros(graph.tensors[graph.inputs[0]].shape,
                 dtype=g.NUMPY_DTYPES[graph.tensors[graph.inputs[0]].dtype])
    out = int8_ops.run(graph, x)
    assert out.shape == graph.tensors[graph.outputs[0]].shape
    return graph


def corruptions(data: bytes, n_cuts: int, n_flips: int, seed: int):
    rng = np.random.default_rng(seed)
    cuts = sorted({0, 1, 4, 7, 8, 16, len(data) - 1}
                  | set(rng.integers(0, len(data), n_cuts).tolist()))
    for cut in cuts:
        yield f"truncated at {cut}", data[:cut]
    # Half the flips in the first and last 8 KB, where the converter puts the tables.
    ends = np.concatenate([np.arange(min(8192, len(data))),
                           np.arange(max(0, len(data) - 8192), len(data))])
    for k in range(n_flips):
        pos = int(rng.choice(ends) if k % 2 else rng.integers(0, len(data)))
        flipped = bytearray(data)
        flipped[pos] ^= int(rng.integers(1, 256))
        yield f"byte {pos} flipped", bytes(flipped)


def test_corrupt_small_model():
    data = small_cnn()
    refused = 0
    for what, bad in corruptions(data, n_cuts=60, n_flips=600, seed=1):
        try:
            refused += import_or_refuse(bad) is None
        except Exception as e:  # anything but TFLiteError is a failure
            raise AssertionError(f"{what}: {type(e).__name__}: {e}") from e
    assert refused > 100


@pytest.mark.parametrize("name", sorted(MODELS))
def test_corrupt_mlperf_models(name):
    data = model_path(name).read_bytes()
    refused = 0
    for what, bad in corruptions(data, n_cuts=20, n_flips=40, seed=len(name)):
        try:
            refused += import_or_refuse(bad) is None
        except Exception as e:
            raise AssertionError(f"{name}, {what}: {type(e).__name__}: {e}") from e
    assert refused >= 20  # every truncation that cuts a table


def test_not_a_tflite_file():
    for data in (b"", b"TFL3", b"\0" * 64, bytes(range(256)) * 4):
        with pytest.raises(TFLiteError):
            import_tflite(data)
    with pytest.raises(TFLiteError, match="identifier"):
        import_tflite(b"\x10\0\0\0PCNN" + b"\0" * 32)


# ----------------------------------------------------------------------- unsupported


def one_op(kind: str, in_dtype: str = "int8", options: str | None = None, custom=None,
           out_scale=0.05, out_zero=0, **fields) -> bytes:
    b = ModelBuilder()
    x = b.tensor([1, 4, 4, 2], in_dtype, scale=0.05, zero=0)
    y = b.tensor([1, 4, 4, 2], in_dtype, scale=out_scale, zero=out_zero)
    b.op(kind, [x, x] if kind in ("MUL", "ADD") else [x], [y], options, custom=custom, **fields)
    return b.build([x], [y])


def conv(dilation: int = 1, act: int = 0, in_dtype: str = "int8", c_in_w: int = 2,
         w_zero: int = 0) -> bytes:
    rng = np.random.default_rng(0)
    b = ModelBuilder()
    x = b.tensor([1, 5, 5, 2], in_dtype, scale=0.05, zero=0)
    w = b.tensor([3, 3, 3, c_in_w], scale=[0.01] * 3, zero=[w_zero] * 3,
                 data=rng.integers(-127, 128, (3, 3, 3, c_in_w)))
    y = b.tensor([1, 5, 5, 3], in_dtype, scale=0.1, zero=0)
    b.op("CONV_2D", [x, w, -1], [y], "Conv2DOptions", Padding=SAME, StrideW=1, StrideH=1,
         FusedActivationFunction=act, DilationWFactor=dilation, DilationHFactor=dilation)
    return b.build([x], [y])


UNSUPPORTED = {
    "builtin MUL": (lambda: one_op("MUL", options="MulOptions"), r"operator 0: builtin operator MUL"),
    "custom": (lambda: one_op("CUSTOM", custom="MyOp"), r"custom operator 'MyOp'"),
    "dilation 2": (lambda: conv(dilation=2), r"operator 0 \(CONV_2D\).*dilation 2x2"),
    "RELU_N1_TO_1": (lambda: conv(act=2), r"RELU_N1_TO_1 is not supported \(NONE, RELU, RELU6\)"),
    "int16 activations": (lambda: conv(in_dtype="int16"),
                          r"operator 0 \(CONV_2D\): input 0 .* is int16; supported: int8"),
    "grouped conv": (lambda: conv(c_in_w=1), r"grouped convolutions are not supported"),
    "asymmetric weights": (lambda: conv(w_zero=3), r"symmetrically"),
    "uint8 tensor": (lambda: one_op("LOGISTIC", in_dtype="uint8"), r"uint8 tensors"),
    "logistic output scale": (lambda: one_op("LOGISTIC"), r"scale 1/256 and zero point -128"),
    "pool requantizes": (lambda: one_op("MAX_POOL_2D", options="Pool2DOptions", out_scale=0.1,
                                        Padding=SAME, StrideW=1, StrideH=1, FilterWidth=2,
                                        FilterHeight=2),
                         r"operator 0 \(MAX_POOL_2D\): input and output quantization"),
    "missing options": (lambda: one_op("AVERAGE_POOL_2D"), r"options table is missing"),
}


@pytest.mark.parametrize("case", sorted(UNSUPPORTED))
def test_unsupported_is_named(case):
    build, pattern = UNSUPPORTED[case]
    with pytest.raises(TFLiteError, match=pattern):
        import_tflite(build())


def test_unsupported_operator_lists_what_is_supported():
    with pytest.raises(TFLiteError) as e:
        import_tflite(one_op("MUL", options="MulOptions"))
    assert SUPPORTED in str(e.value) and "FULLY_CONNECTED" in SUPPORTED


# ----------------------------------------------------------------------- schema agreement


@pytest.mark.parametrize("name", sorted(MODELS))
def test_reader_agrees_with_generated_schema(name):
    """Every field piconn reads equals what PyPI tflite's generated classes read."""
    data = model_path(name).read_bytes()
    graph = import_tflite(data)
    m = tflite.Model.GetRootAs(data, 0)
    sub = m.Subgraphs(0)
    assert graph.inputs == list(sub.InputsAsNumpy()) and graph.outputs == list(sub.OutputsAsNumpy())
    assert len(graph.tensors) == sub.TensorsLength()
    for i, t in enumerate(graph.tensors):
        ref = sub.Tensors(i)
        assert t.name == ref.Name().decode()
        assert t.shape == tuple(ref.ShapeAsNumpy())
        q = ref.Quantization()
        if t.quant is not None:
            np.testing.assert_array_equal(t.quant.scale, q.ScaleAsNumpy())
            np.testing.assert_array_equal(t.quant.zero_point, q.ZeroPointAsNumpy())
            assert t.quant.axis == q.QuantizedDimension()
        raw = m.Buffers(ref.Buffer()).DataAsNumpy()
        if t.is_constant:
            assert t.data.tobytes() == raw.tobytes()
        else:
            assert isinstance(raw, int) or raw.size == 0
    assert len(graph.operators) == sub.OperatorsLength()
    for k, op in enumerate(graph.operators):
        ref = sub.Operators(k)
        assert op.inputs == tuple(ref.InputsAsNumpy())
        assert op.outputs == tuple(ref.OutputsAsNumpy())
        code = m.OperatorCodes(ref.OpcodeIndex())
        assert getattr(tflite.BuiltinOperator, op.kind) == max(code.BuiltinCode(),
                                                               code.DeprecatedBuiltinCode())
        table = ref.BuiltinOptions()
        o = op.options
        if op.kind in (g.CONV_2D, g.DEPTHWISE_CONV_2D):
            opt = (tflite.Conv2DOptions() if op.kind == g.CONV_2D
                   else tflite.DepthwiseConv2DOptions())
            opt.Init(table.Bytes, table.Pos)
            assert (o.stride_h, o.stride_w) == (opt.StrideH(), opt.StrideW())
            assert o.padding == (g.SAME if opt.Padding() == SAME else g.VALID)
            assert o.activation == {0: g.ACT_NONE, 1: g.ACT_RELU, 3: g.ACT_RELU6}[
                opt.FusedActivationFunction()]
            if op.kind == g.DEPTHWISE_CONV_2D:
                assert o.depth_multiplier == opt.DepthMultiplier()
        elif op.kind in (g.AVERAGE_POOL_2D, g.MAX_POOL_2D):
            opt = tflite.Pool2DOptions()
            opt.Init(table.Bytes, table.Pos)
            assert (o.filter_h, o.filter_w, o.stride_h, o.stride_w) == (
                opt.FilterHeight(), opt.FilterWidth(), opt.StrideH(), opt.StrideW())
        elif op.kind == g.FULLY_CONNECTED:
            opt = tflite.FullyConnectedOptions()
            opt.Init(table.Bytes, table.Pos)
            assert o.keep_num_dims == bool(opt.KeepNumDims())
        elif op.kind == g.SOFTMAX:
            opt = tflite.SoftmaxOptions()
            opt.Init(table.Bytes, table.Pos)
            assert np.float32(o.beta) == np.float32(opt.Beta())
