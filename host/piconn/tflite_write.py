"""Write an int8 (or float32) `Graph` as a TensorFlow Lite flatbuffer (`.tflite`, schema 3).

`to_tflite(graph)` is the inverse of `piconn.tflite.import_tflite`: one subgraph, the
graph's tensors in order (shapes, types, names, quantization per tensor or per channel
with its quantized dimension, constant data each in a buffer of its own, 16-byte aligned
as the converter aligns them; buffer 0 is the schema's empty sentinel and every
activation names it), the operators in order with their options, and one operator code
per builtin operator with the version TensorFlow's converter writes for its operands
(tensorflow/lite/tools/versioning/op_version.cc; TensorFlow Lite Micro checks some) and
the deprecated one-byte code filled as the converter fills it.

piconn's int8 is TensorFlow Lite's int8 (`int8_ops` is bit-exact with TFLite Micro), so
the file runs in TensorFlow Lite Micro with the same outputs as `int8_ops.run` on the
graph (float32 operators: see `float_ops` for how close). The one change: a RESHAPE
without a shape tensor (as `quant_int8` and version-2 files have it) gets one, an int32
constant appended to the tensors, besides ReshapeOptions.new_shape, as the converter
writes it; `converter_form(graph)` is the graph with that change, which `import_tflite`
reads back exactly.

The tables are written field by field with the `flatbuffers` package's Builder (an
optional dependency: `pip install 'piconn[tflite]'`); the field slots are the named ones
of `tflite_schema`.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from . import graph as g
from .tflite_schema import (
    FILE_IDENTIFIER,
    SCHEMA_VERSION,
    Activation,
    AddField,
    BufferField,
    BuiltinOperator,
    BuiltinOptions,
    Conv2DField,
    DepthwiseConv2DField,
    FullyConnectedField,
    ModelField,
    OperatorCodeField,
    OperatorField,
    Padding,
    Pool2DField,
    QuantizationField,
    ReducerField,
    SoftmaxField,
    SubGraphField,
    TensorField,
    TensorType,
)

__all__ = ["MissingFlatbuffers", "converter_form", "graph_difference", "operator_version",
           "to_tflite", "write_tflite"]


class ReshapeField:
    """ReshapeOptions (schema.fbs)."""

    NEW_SHAPE = 0


# Tables' field counts (schema.fbs), for Builder.StartObject.
MODEL_FIELDS = 8
OPERATOR_CODE_FIELDS = 4
SUBGRAPH_FIELDS = 5
TENSOR_FIELDS = 5
QUANTIZATION_FIELDS = 7
OPERATOR_FIELDS = 5
BUFFER_FIELDS = 1

DEPRECATED_CODE_LIMIT = 127  # PLACEHOLDER_FOR_GREATER_OP_CODES: codes above live in builtin_code
BUFFER_ALIGN = 16  # the converter's alignment of constant data
SUBGRAPH_NAME = "main"
DESCRIPTION = "piconn export"

KIND_CODES = {
    g.ADD: BuiltinOperator.ADD,
    g.AVERAGE_POOL_2D: BuiltinOperator.AVERAGE_POOL_2D,
    g.CONV_2D: BuiltinOperator.CONV_2D,
    g.DEPTHWISE_CONV_2D: BuiltinOperator.DEPTHWISE_CONV_2D,
    g.DEQUANTIZE: BuiltinOperator.DEQUANTIZE,
    g.FULLY_CONNECTED: BuiltinOperator.FULLY_CONNECTED,
    g.LOGISTIC: BuiltinOperator.LOGISTIC,
    g.MAX_POOL_2D: BuiltinOperator.MAX_POOL_2D,
    g.MEAN: BuiltinOperator.MEAN,
    g.PAD: BuiltinOperator.PAD,
    g.QUANTIZE: BuiltinOperator.QUANTIZE,
    g.RESHAPE: BuiltinOperator.RESHAPE,
    g.SOFTMAX: BuiltinOperator.SOFTMAX,
    g.TANH: BuiltinOperator.TANH,
}
DTYPE_CODES = {g.FLOAT32: TensorType.FLOAT32, g.INT32: TensorType.INT32,
               g.INT8: TensorType.INT8, g.INT16: TensorType.INT16, g.INT64: TensorType.INT64}
PADDING_CODES = {g.SAME: Padding.SAME, g.VALID: Padding.VALID}
ACTIVATION_CODES = {g.ACT_NONE: Activation.NONE, g.ACT_RELU: Activation.RELU,
                    g.ACT_RELU6: Activation.RELU6}

# Operator versions for int8 operands, as op_version.cc gives them; with float32 operands
# every kind here is version 1 (QUANTIZE from float32 included).
FLOAT_VERSION = 1
INT8_VERSIONS = {
    g.ADD: 2, g.AVERAGE_POOL_2D: 2, g.CONV_2D: 3, g.DEPTHWISE_CONV_2D: 3, g.DEQUANTIZE: 2,
    g.FULLY_CONNECTED: 4, g.LOGISTIC: 2, g.MAX_POOL_2D: 2, g.MEAN: 2, g.PAD: 2,
    g.QUANTIZE: 1, g.RESHAPE: 1, g.SOFTMAX: 2, g.TANH: 2,
}
FC_KEEP_NUM_DIMS_VERSION = 5
FC_NO_BIAS_VERSION = 6


class MissingFlatbuffers(ImportError):
    """The optional `flatbuffers` package is not installed."""


def _builder_class() -> Any:
    try:
        import flatbuffers
    except ImportError:
        raise MissingFlatbuffers("writing .tflite needs the flatbuffers package: "
                                 "pip install 'piconn[tflite]'") from None
    return flatbuffers.Builder


# --------------------------------------------------------------------------- the graph


def converter_form(graph: g.Graph) -> g.Graph:
    """The graph as the .tflite file holds it: every RESHAPE with its shape tensor (an int32
    constant [rank] holding the output shape, appended to the tensors). A copy; the
    tensors' data is shared."""
    out = copy.copy(graph)
    out.tensors = list(graph.tensors)
    out.operators = []
    for op in graph.operators:
        if op.kind == g.RESHAPE and len(op.inputs) == 1:
            y = graph.tensors[op.outputs[0]]
            shape = np.array(y.shape, dtype=np.int32)
            out.tensors.append(g.Tensor(f"{y.name}/shape", (len(shape),), g.INT32, None, shape))
            op = g.Operator(op.kind, (op.inputs[0], len(out.tensors) - 1), op.outputs,
                            op.options)
        out.operators.append(op)
    return out


def operator_version(graph: g.Graph, op: g.Operator) -> int:
    """The operator's version as TensorFlow's converter writes it for its operands (int8,
    or float32)."""
    if op.kind == g.FULLY_CONNECTED:
        if len(op.inputs) == 2:
            return FC_NO_BIAS_VERSION
        if isinstance(op.options, g.FullyConnectedOptions) and op.options.keep_num_dims:
            return FC_KEEP_NUM_DIMS_VERSION
    if graph.tensors[op.inputs[0]].dtype == g.INT8:
        return INT8_VERSIONS[op.kind]
    return FLOAT_VERSION


# --------------------------------------------------------------------------- writing


class _Writer:
    """Builds the flatbuffer bottom-up: children before the tables that point to them."""

    def __init__(self, builder: Any) -> None:
        self.b = builder

    def ints(self, values: Any) -> int:
        """A vector of int32."""
        values = [int(v) for v in values]
        self.b.StartVector(4, len(values), 4)
        for v in reversed(values):
            self.b.PrependInt32(v)
        return self.b.EndVector()

    def int64s(self, values: Any) -> int:
        values = [int(v) for v in values]
        self.b.StartVector(8, len(values), 8)
        for v in reversed(values):
            self.b.PrependInt64(v)
        return self.b.EndVector()

    def floats(self, values: Any) -> int:
        values = [float(v) for v in values]
        self.b.StartVector(4, len(values), 4)
        for v in reversed(values):
            self.b.PrependFloat32(v)
        return self.b.EndVector()

    def offsets(self, items: list[int]) -> int:
        """A vector of tables or strings."""
        self.b.StartVector(4, len(items), 4)
        for item in reversed(items):
            self.b.PrependUOffsetTRelative(item)
        return self.b.EndVector()

    def aligned_bytes(self, raw: bytes) -> int:
        """A byte vector whose first byte is BUFFER_ALIGN-aligned in the finished file."""
        b = self.b
        b.StartVector(1, len(raw), BUFFER_ALIGN)
        b.head = b.head - len(raw)
        b.Bytes[b.head:b.head + len(raw)] = raw
        return b.EndVector()

    def table(self, n_fields: int, fields: list[tuple[str, int, Any, Any]]) -> int:
        """A table from (kind, slot, value, default) fields; kind names the Builder's
        Prepend<kind>Slot ("Int32", "Uint32", "Int8", "Uint8", "Bool", "Float32",
        "UOffsetTRelative"). A field equal to its default is left out (the reader's
        default), as the converter leaves it out."""
        b = self.b
        b.StartObject(n_fields)
        for kind, slot, value, default in fields:
            if value is None:
                continue
            getattr(b, f"Prepend{kind}Slot")(slot, value, default)
        return b.EndObject()


def _quantization(w: _Writer, q: g.Quant | None) -> int | None:
    if q is None:
        return None
    scale = w.floats(np.asarray(q.scale, dtype=np.float32))
    zero = w.int64s(np.asarray(q.zero_point, dtype=np.int64))
    F = QuantizationField
    return w.table(QUANTIZATION_FIELDS, [
        ("UOffsetTRelative", F.SCALE, scale, 0),
        ("UOffsetTRelative", F.ZERO_POINT, zero, 0),
        ("Int32", F.QUANTIZED_DIMENSION, int(q.axis), 0),
    ])


def _tensor(w: _Writer, t: g.Tensor, buffer: int) -> int:
    name = w.b.CreateString(t.name)
    shape = w.ints(t.shape)
    quant = _quantization(w, t.quant)
    F = TensorField
    return w.table(TENSOR_FIELDS, [
        ("UOffsetTRelative", F.SHAPE, shape, 0),
        ("Int8", F.TYPE, DTYPE_CODES[t.dtype], TensorType.FLOAT32),
        ("Uint32", F.BUFFER, buffer, 0),
        ("UOffsetTRelative", F.NAME, name, 0),
        ("UOffsetTRelative", F.QUANTIZATION, quant, 0),
    ])


def _buffer(w: _Writer, raw: bytes) -> int:
    data = w.aligned_bytes(raw) if raw else None
    return w.table(BUFFER_FIELDS, [("UOffsetTRelative", BufferField.DATA, data, 0)])


def _little_endian(t: g.Tensor) -> bytes:
    dt = np.dtype(g.NUMPY_DTYPES[t.dtype]).newbyteorder("<")
    return np.ascontiguousarray(t.data).astype(dt).tobytes()


# Options tables: kind -> (BuiltinOptions type, write the table or None for none).
def _conv(w: _Writer, o: g.ConvOptions, _: g.Graph, __: g.Operator) -> int:
    F = Conv2DField
    return w.table(F.DILATION_H + 1, [
        ("Int8", F.PADDING, PADDING_CODES[o.padding], 0),
        ("Int32", F.STRIDE_W, o.stride_w, 0),
        ("Int32", F.STRIDE_H, o.stride_h, 0),
        ("Int8", F.FUSED_ACTIVATION, ACTIVATION_CODES[o.activation], 0),
    ])


def _depthwise(w: _Writer, o: g.DepthwiseOptions, _: g.Graph, __: g.Operator) -> int:
    F = DepthwiseConv2DField
    return w.table(F.DILATION_H + 1, [
        ("Int8", F.PADDING, PADDING_CODES[o.padding], 0),
        ("Int32", F.STRIDE_W, o.stride_w, 0),
        ("Int32", F.STRIDE_H, o.stride_h, 0),
        ("Int32", F.DEPTH_MULTIPLIER, o.depth_multiplier, 0),
        ("Int8", F.FUSED_ACTIVATION, ACTIVATION_CODES[o.activation], 0),
    ])


def _pool(w: _Writer, o: g.PoolOptions, _: g.Graph, __: g.Operator) -> int:
    F = Pool2DField
    return w.table(F.FUSED_ACTIVATION + 1, [
        ("Int8", F.PADDING, PADDING_CODES[o.padding], 0),
        ("Int32", F.STRIDE_W, o.stride_w, 0),
        ("Int32", F.STRIDE_H, o.stride_h, 0),
        ("Int32", F.FILTER_WIDTH, o.filter_w, 0),
        ("Int32", F.FILTER_HEIGHT, o.filter_h, 0),
        ("Int8", F.FUSED_ACTIVATION, ACTIVATION_CODES[o.activation], 0),
    ])


def _fully_connected(w: _Writer, o: g.FullyConnectedOptions | None, _: g.Graph,
                     __: g.Operator) -> int:
    o = o or g.FullyConnectedOptions()
    F = FullyConnectedField
    return w.table(F.KEEP_NUM_DIMS + 1, [
        ("Int8", F.FUSED_ACTIVATION, ACTIVATION_CODES[o.activation], 0),
        ("Bool", F.KEEP_NUM_DIMS, bool(o.keep_num_dims), False),
    ])


def _add(w: _Writer, o: g.AddOptions | None, _: g.Graph, __: g.Operator) -> int:
    o = o or g.AddOptions()
    return w.table(AddField.FUSED_ACTIVATION + 1, [
        ("Int8", AddField.FUSED_ACTIVATION, ACTIVATION_CODES[o.activation], 0)])


def _softmax(w: _Writer, o: g.SoftmaxOptions, _: g.Graph, __: g.Operator) -> int:
    return w.table(SoftmaxField.BETA + 1, [("Float32", SoftmaxField.BETA, float(o.beta), 0.0)])


def _reshape(w: _Writer, _: None, graph: g.Graph, op: g.Operator) -> int:
    shape = w.ints(graph.tensors[op.outputs[0]].shape)
    return w.table(ReshapeField.NEW_SHAPE + 1,
                   [("UOffsetTRelative", ReshapeField.NEW_SHAPE, shape, 0)])


def _mean(w: _Writer, o: g.MeanOptions | None, _: g.Graph, __: g.Operator) -> int:
    o = o or g.MeanOptions()
    return w.table(ReducerField.KEEP_DIMS + 1,
                   [("Bool", ReducerField.KEEP_DIMS, bool(o.keep_dims), False)])


def _empty(w: _Writer, _: None, __: g.Graph, ___: g.Operator) -> int:
    return w.table(0, [])


OptionWriter = Callable[[_Writer, Any, g.Graph, g.Operator], int]
OPTION_WRITERS: dict[str, tuple[int, OptionWriter | None]] = {
    g.ADD: (BuiltinOptions.ADD, _add),
    g.AVERAGE_POOL_2D: (BuiltinOptions.POOL_2D, _pool),
    g.CONV_2D: (BuiltinOptions.CONV_2D, _conv),
    g.DEPTHWISE_CONV_2D: (BuiltinOptions.DEPTHWISE_CONV_2D, _depthwise),
    g.DEQUANTIZE: (BuiltinOptions.DEQUANTIZE, _empty),
    g.FULLY_CONNECTED: (BuiltinOptions.FULLY_CONNECTED, _fully_connected),
    g.LOGISTIC: (BuiltinOptions.NONE, None),
    g.MAX_POOL_2D: (BuiltinOptions.POOL_2D, _pool),
    g.MEAN: (BuiltinOptions.REDUCER, _mean),
    g.PAD: (BuiltinOptions.PAD, _empty),
    g.QUANTIZE: (BuiltinOptions.QUANTIZE, _empty),
    g.RESHAPE: (BuiltinOptions.RESHAPE, _reshape),
    g.SOFTMAX: (BuiltinOptions.SOFTMAX, _softmax),
    g.TANH: (BuiltinOptions.NONE, None),
}


def _operator(w: _Writer, graph: g.Graph, op: g.Operator, code_index: int) -> int:
    options_type, write = OPTION_WRITERS[op.kind]
    options = None if write is None else write(w, op.options, graph, op)
    inputs, outputs = w.ints(op.inputs), w.ints(op.outputs)
    F = OperatorField
    return w.table(OPERATOR_FIELDS, [
        ("Uint32", F.OPCODE_INDEX, code_index, 0),
        ("UOffsetTRelative", F.INPUTS, inputs, 0),
        ("UOffsetTRelative", F.OUTPUTS, outputs, 0),
        ("Uint8", F.BUILTIN_OPTIONS_TYPE, options_type, BuiltinOptions.NONE),
        ("UOffsetTRelative", F.BUILTIN_OPTIONS, options, 0),
    ])


def _operator_code(w: _Writer, code: int, version: int) -> int:
    F = OperatorCodeField
    return w.table(OPERATOR_CODE_FIELDS, [
        ("Int8", F.DEPRECATED_BUILTIN_CODE, min(code, DEPRECATED_CODE_LIMIT), 0),
        ("Int32", F.VERSION, version, 1),
        ("Int32", F.BUILTIN_CODE, code, 0),
    ])


def _check(graph: g.Graph) -> None:
    """The rules `import_tflite` applies: the structure and every int8 operator."""
    from . import int8_ops

    graph.check()
    int8_ops.prepare(graph)
    for k, op in enumerate(graph.operators):
        if op.kind not in KIND_CODES:
            raise graph.error(k, "has no TensorFlow Lite operator")
        if graph.tensors[op.inputs[0]].dtype not in (g.INT8, g.FLOAT32):
            raise graph.error(k, "TensorFlow Lite versions are written for int8 and float32"
                                 " operands only")
    for t in graph.tensors:
        if t.dtype not in DTYPE_CODES:
            raise g.GraphError(f"tensor {t.name!r}: {t.dtype} has no TensorFlow Lite type")


def to_tflite(graph: g.Graph) -> bytes:
    """The .tflite bytes of a graph (`converter_form(graph)`, written as it is).

    Raises GraphError (a ValueError) for a graph `int8_ops.prepare` refuses, and
    MissingFlatbuffers (an ImportError) without the `flatbuffers` package.
    """
    _check(graph)
    graph = converter_form(graph)
    w = _Writer(_builder_class()(1024 + 2 * graph.constant_bytes()))
    # Operator codes: one per builtin operator, in the order of first use; its version is
    # the highest its operators need (the converter's UpdateOpVersion).
    codes: list[int] = []
    versions: dict[int, int] = {}
    for op in graph.operators:
        code = KIND_CODES[op.kind]
        if code not in versions:
            codes.append(code)
        versions[code] = max(versions.get(code, 0), operator_version(graph, op))
    # Buffers: 0 is empty; each constant tensor has its own, in tensor order.
    raws = [b""]
    buffer_of = []
    for t in graph.tensors:
        if t.is_constant:
            raws.append(_little_endian(t))
            buffer_of.append(len(raws) - 1)
        else:
            buffer_of.append(0)
    buffers = [_buffer(w, raw) for raw in raws]
    tensors = [_tensor(w, t, buffer_of[i]) for i, t in enumerate(graph.tensors)]
    operators = [_operator(w, graph, op, codes.index(KIND_CODES[op.kind]))
                 for op in graph.operators]
    name = w.b.CreateString(SUBGRAPH_NAME)
    fields = [w.offsets(tensors), w.ints(graph.inputs), w.ints(graph.outputs),
              w.offsets(operators)]
    S = SubGraphField
    subgraph = w.table(SUBGRAPH_FIELDS, [
        ("UOffsetTRelative", S.TENSORS, fields[0], 0),
        ("UOffsetTRelative", S.INPUTS, fields[1], 0),
        ("UOffsetTRelative", S.OUTPUTS, fields[2], 0),
        ("UOffsetTRelative", S.OPERATORS, fields[3], 0),
        ("UOffsetTRelative", S.NAME, name, 0),
    ])
    code_tables = [_operator_code(w, c, versions[c]) for c in codes]
    description = w.b.CreateString(DESCRIPTION)
    vectors = [w.offsets(code_tables), w.offsets([subgraph]), w.offsets(buffers)]
    M = ModelField
    model = w.table(MODEL_FIELDS, [
        ("Uint32", M.VERSION, SCHEMA_VERSION, 0),
        ("UOffsetTRelative", M.OPERATOR_CODES, vectors[0], 0),
        ("UOffsetTRelative", M.SUBGRAPHS, vectors[1], 0),
        ("UOffsetTRelative", M.DESCRIPTION, description, 0),
        ("UOffsetTRelative", M.BUFFERS, vectors[2], 0),
    ])
    w.b.Finish(model, file_identifier=FILE_IDENTIFIER)
    return bytes(w.b.Output())


def write_tflite(graph: g.Graph, path: str | Path) -> bytes:
    """Write `to_tflite(graph)` to `path` after reading it back with `import_tflite` (every
    rule it applies) and checking that it is `converter_form(graph)`; returns the bytes."""
    from .tflite import import_tflite

    blob = to_tflite(graph)
    diff = graph_difference(converter_form(graph), import_tflite(blob))
    if diff:
        raise g.GraphError(f"the .tflite file does not read back as the graph: {diff}")
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_bytes(blob)
    return blob


# --------------------------------------------------------------------------- comparing


def _quant_difference(a: g.Quant | None, b: g.Quant | None) -> str:
    if a is None or b is None:
        return "" if a is b else "quantization present in one only"
    if not (np.array_equal(np.asarray(a.scale, np.float32), np.asarray(b.scale, np.float32))
            and np.array_equal(a.zero_point, b.zero_point) and a.axis == b.axis):
        return "quantization differs"
    return ""


def _tensor_difference(a: g.Tensor, b: g.Tensor) -> str:
    if (a.name, tuple(a.shape), a.dtype) != (b.name, tuple(b.shape), b.dtype):
        return f"{a.name!r} {a.dtype}{list(a.shape)} != {b.name!r} {b.dtype}{list(b.shape)}"
    if a.data is None or b.data is None:
        if a.data is not b.data:
            return "constant in one only"
    elif a.data.dtype != b.data.dtype or not np.array_equal(a.data, b.data):
        return "data differs"
    return _quant_difference(a.quant, b.quant)


def _same_options(a: g.Options, b: g.Options) -> bool:
    """Equal options; softmax's beta as the float32 the file holds."""
    if isinstance(a, g.SoftmaxOptions) and isinstance(b, g.SoftmaxOptions):
        return bool(np.float32(a.beta) == np.float32(b.beta))
    return a == b


def graph_difference(a: g.Graph, b: g.Graph) -> str:
    """The first difference between two graphs ("" when equal): tensors (names, shapes,
    dtypes, quantization, data), operators (kinds, tensors, options), graph inputs and
    outputs. The graphs' own names are not compared."""
    if len(a.tensors) != len(b.tensors):
        return f"{len(a.tensors)} tensors != {len(b.tensors)}"
    for i, (x, y) in enumerate(zip(a.tensors, b.tensors)):
        diff = _tensor_difference(x, y)
        if diff:
            return f"tensor {i}: {diff}"
    if len(a.operators) != len(b.operators):
        return f"{len(a.operators)} operators != {len(b.operators)}"
    for k, (p, q) in enumerate(zip(a.operators, b.operators)):
        if (p.kind, tuple(p.inputs), tuple(p.outputs)) != (q.kind, tuple(q.inputs),
                                                             tuple(q.outputs)):
            return f"operator {k}: {p.kind}{p.inputs}->{p.outputs} != {q.kind}{q.inputs}->{q.outputs}"
        if not _same_options(p.options, q.options):
            return f"operator {k} ({p.kind}): options {p.options} != {q.options}"
    if list(a.inputs) != list(b.inputs) or list(a.outputs) != list(b.outputs):
        return "graph inputs or outputs differ"
    return ""
