"""Import a TensorFlow Lite int8 or float32 model (`.tflite`) as a piconn `Graph`.

`import_tflite(path_or_bytes)` reads the flatbuffer with the bounds-checked reader of
`tflite_schema` (why not the `flatbuffers`/`tflite` packages: see there), converts the
one subgraph into a `graph.Graph`, and checks it completely: the structure
(`Graph.check`) and every operator against what the int8 kernels of `int8_ops` support
(`int8_ops.prepare`), so a graph it returns runs. Anything else raises `TFLiteError`:
a corrupt or truncated file, or an unsupported feature, with a message that names the
operator, its index and what is supported.

Supported: FULLY_CONNECTED, CONV_2D, DEPTHWISE_CONV_2D, AVERAGE_POOL_2D, MAX_POOL_2D,
ADD, RESHAPE, SOFTMAX, PAD, MEAN (over height and width), LOGISTIC, TANH with int8
activations (scale and zero point per tensor), int8 weights (symmetric, per channel or
per tensor), int32 biases; the same operators on float32 tensors with float32 weights
and biases (`float_ops`, TensorFlow Lite Micro's float kernels); QUANTIZE from float32
and DEQUANTIZE to float32 between the two (at the graph's edges or inside it).
"""

from __future__ import annotations

import os
from collections.abc import Callable

import numpy as np

from . import graph as g
from .tflite_schema import (
    Activation,
    AddField,
    BufferField,
    BuiltinOperator,
    BuiltinOptions,
    Conv2DField,
    DepthwiseConv2DField,
    File,
    FullyConnectedField,
    FullyConnectedWeightsFormat,
    ModelField,
    OperatorCodeField,
    OperatorField,
    Padding,
    Pool2DField,
    QuantizationField,
    ReducerField,
    SoftmaxField,
    SubGraphField,
    Table,
    TensorField,
    TensorType,
    TFLiteError,
)

__all__ = ["SUPPORTED", "TFLiteError", "import_tflite"]

# builtin operator code -> (graph kind, the options table it may carry)
OPERATORS = {
    BuiltinOperator.ADD: (g.ADD, BuiltinOptions.ADD),
    BuiltinOperator.AVERAGE_POOL_2D: (g.AVERAGE_POOL_2D, BuiltinOptions.POOL_2D),
    BuiltinOperator.CONV_2D: (g.CONV_2D, BuiltinOptions.CONV_2D),
    BuiltinOperator.DEPTHWISE_CONV_2D: (g.DEPTHWISE_CONV_2D, BuiltinOptions.DEPTHWISE_CONV_2D),
    BuiltinOperator.DEQUANTIZE: (g.DEQUANTIZE, BuiltinOptions.DEQUANTIZE),
    BuiltinOperator.FULLY_CONNECTED: (g.FULLY_CONNECTED, BuiltinOptions.FULLY_CONNECTED),
    BuiltinOperator.LOGISTIC: (g.LOGISTIC, BuiltinOptions.NONE),
    BuiltinOperator.MAX_POOL_2D: (g.MAX_POOL_2D, BuiltinOptions.POOL_2D),
    BuiltinOperator.MEAN: (g.MEAN, BuiltinOptions.REDUCER),
    BuiltinOperator.PAD: (g.PAD, BuiltinOptions.PAD),
    BuiltinOperator.QUANTIZE: (g.QUANTIZE, BuiltinOptions.QUANTIZE),
    BuiltinOperator.RESHAPE: (g.RESHAPE, BuiltinOptions.RESHAPE),
    BuiltinOperator.SOFTMAX: (g.SOFTMAX, BuiltinOptions.SOFTMAX),
    BuiltinOperator.TANH: (g.TANH, BuiltinOptions.NONE),
}
SUPPORTED = ", ".join(sorted(kind for kind, _ in OPERATORS.values()))

DTYPES = {TensorType.FLOAT32: g.FLOAT32, TensorType.INT32: g.INT32, TensorType.INT8: g.INT8,
          TensorType.INT16: g.INT16, TensorType.INT64: g.INT64}
DTYPE_NAMES = {TensorType.FLOAT16: "float16", TensorType.UINT8: "uint8",
               TensorType.STRING: "string", TensorType.BOOL: "bool"}
PADDINGS = {Padding.SAME: g.SAME, Padding.VALID: g.VALID}
ACTIVATIONS = {Activation.NONE: g.ACT_NONE, Activation.RELU: g.ACT_RELU,
               Activation.RELU6: g.ACT_RELU6}
ACTIVATION_NAMES = {Activation.RELU_N1_TO_1: "RELU_N1_TO_1", Activation.TANH: "TANH",
                    Activation.SIGN_BIT: "SIGN_BIT"}
MAX_RANK = 6


def import_tflite(source: str | os.PathLike | bytes) -> g.Graph:
    """Read a .tflite file (a path, or its bytes) into a checked `Graph`.

    Raises TFLiteError for a corrupt file or anything unsupported; the graph it returns
    passes `Graph.check` and `int8_ops.prepare`.
    """
    if isinstance(source, (bytes, bytearray, memoryview)):
        data, name = bytes(source), ""
    else:
        with open(source, "rb") as f:
            data = f.read()
        name = os.path.splitext(os.path.basename(os.fspath(source)))[0]
    graph = _read_model(File(data), name)
    from . import int8_ops  # the operator rules live with the kernels

    try:
        graph.check()
        int8_ops.prepare(graph)
    except TFLiteError:
        raise
    except g.GraphError as e:
        raise TFLiteError(str(e)) from None
    return graph


def _read_model(file: File, name: str) -> g.Graph:
    model = file.root()
    version = model.scalar(ModelField.VERSION, "u32")
    if version != 3:
        raise TFLiteError(f"unsupported .tflite schema version {version}; piconn reads version 3")
    subgraphs = model.tables(ModelField.SUBGRAPHS, "subgraph")
    if len(subgraphs) != 1:
        raise TFLiteError(f"the model has {len(subgraphs)} subgraphs; piconn supports"
                          " exactly one (no control flow)")
    codes = [_operator_code(t, k) for k, t in
             enumerate(model.tables(ModelField.OPERATOR_CODES, "operator code"))]
    buffers = model.tables(ModelField.BUFFERS, "buffer")
    sub = subgraphs[0]
    tensors = [_tensor(t, k, buffers) for k, t in
               enumerate(sub.tables(SubGraphField.TENSORS, "tensor"))]
    operators = [_operator(t, k, codes, tensors) for k, t in
                 enumerate(sub.tables(SubGraphField.OPERATORS, "operator"))]
    inputs = _indices(sub, SubGraphField.INPUTS, "subgraph inputs")
    outputs = _indices(sub, SubGraphField.OUTPUTS, "subgraph outputs")
    for i in inputs + outputs:
        if not 0 <= i < len(tensors):
            raise TFLiteError(f"corrupt .tflite: graph input/output tensor {i} out of range"
                              f" (0..{len(tensors) - 1})")
    return g.Graph(tensors, operators, inputs, outputs, name)


def _indices(table: Table, slot: int, what: str) -> list[int]:
    a = table.array(slot, "i4", what)
    return [] if a is None else [int(v) for v in a]


def _operator_code(t: Table, index: int) -> int | str:
    """The builtin operator code, or the custom operator's name."""
    custom = t.string(OperatorCodeField.CUSTOM_CODE, "custom code")
    if custom is not None:
        return custom
    # Codes above 127 live only in builtin_code; older files only fill the deprecated byte.
    return max(int(t.scalar(OperatorCodeField.BUILTIN_CODE, "i32")),
               int(t.scalar(OperatorCodeField.DEPRECATED_BUILTIN_CODE, "i8")))


def _tensor(t: Table, index: int, buffers: list[Table]) -> g.Tensor:
    name = t.string(TensorField.NAME, "tensor name") or f"tensor{index}"
    what = f"tensor {index} ({name!r})"
    code = int(t.scalar(TensorField.TYPE, "i8"))
    if code not in DTYPES:
        kind = DTYPE_NAMES.get(code, f"type {code}")
        raise TFLiteError(f"{what}: {kind} tensors are not supported (int8, int32, float32)")
    dtype = DTYPES[code]
    shape_array = t.array(TensorField.SHAPE, "i4", f"{what} shape")
    shape = () if shape_array is None else tuple(int(d) for d in shape_array)
    if len(shape) > MAX_RANK or any(d < 0 for d in shape):
        raise TFLiteError(f"{what}: unsupported shape {list(shape)} (static, rank <= {MAX_RANK})")
    if t.scalar(TensorField.IS_VARIABLE, "bool"):
        raise TFLiteError(f"{what}: variable tensors are not supported")
    if t.has(TensorField.SPARSITY):
        raise TFLiteError(f"{what}: sparse tensors are not supported")
    quant = _quantization(t.table(TensorField.QUANTIZATION, f"{what} quantization"), what)
    data = _tensor_data(t, what, buffers, shape, dtype)
    return g.Tensor(name, shape, dtype, quant, data)


def _quantization(q: Table | None, what: str) -> g.Quant | None:
    if q is None:
        return None
    if q.scalar(QuantizationField.DETAILS_TYPE, "u8"):
        raise TFLiteError(f"{what}: custom quantization details are not supported")
    scale = q.array(QuantizationField.SCALE, "f4", f"{what} scales")
    zero = q.array(QuantizationField.ZERO_POINT, "i8", f"{what} zero points")
    if scale is None or len(scale) == 0:
        return None  # min/max only: not quantized
    if zero is None or len(zero) != len(scale):
        raise TFLiteError(f"{what}: {len(scale)} scales but"
                          f" {0 if zero is None else len(zero)} zero points")
    if not np.all(np.isfinite(scale)) or np.any(scale <= 0):
        raise TFLiteError(f"{what}: quantization scales must be finite and positive")
    if np.any(np.abs(zero) > 2**31 - 1):
        raise TFLiteError(f"{what}: zero point outside int32")
    axis = int(q.scalar(QuantizationField.QUANTIZED_DIMENSION, "i32"))
    return g.Quant(scale.astype(np.float32), zero.astype(np.int32), axis)


def _tensor_data(t: Table, what: str, buffers: list[Table], shape: tuple[int, ...],
                 dtype: str) -> np.ndarray | None:
    index = int(t.scalar(TensorField.BUFFER, "u32"))
    if index == 0:
        return None  # buffer 0 is the schema's empty sentinel
    if index >= len(buffers):
        raise TFLiteError(f"corrupt .tflite: {what} names buffer {index} of {len(buffers)}")
    b = buffers[index]
    if int(b.scalar(BufferField.OFFSET, "u64")) > 1:
        raise TFLiteError(f"{what}: data stored outside the flatbuffer is not supported")
    raw = b.array(BufferField.DATA, "u1", f"{what} data")
    if raw is None or len(raw) == 0:
        return None  # an activation (the converter gives each one an empty buffer)
    item = np.dtype(g.NUMPY_DTYPES[dtype]).newbyteorder("<")
    size = int(np.prod(shape, dtype=np.int64))
    if len(raw) != size * item.itemsize:
        raise TFLiteError(f"corrupt .tflite: {what} has {len(raw)} data bytes, its shape"
                          f" {list(shape)} of {dtype} needs {size * item.itemsize}")
    return raw.view(item).astype(item.newbyteorder("=")).reshape(shape)


def _activation(code: int, what: str) -> str:
    if code not in ACTIVATIONS:
        name = ACTIVATION_NAMES.get(code, str(code))
        raise TFLiteError(f"{what}: fused activation {name} is not supported"
                          " (NONE, RELU, RELU6)")
    return ACTIVATIONS[code]


def _padding(code: int, what: str) -> str:
    if code not in PADDINGS:
        raise TFLiteError(f"{what}: unknown padding {code} (SAME, VALID)")
    return PADDINGS[code]


def _positive(value: int, field: str, what: str) -> int:
    if not 1 <= value <= 65535:
        raise TFLiteError(f"{what}: {field} {value} out of range (1..65535)")
    return value


def _dilation(o: Table, slot_w: int, slot_h: int, what: str) -> None:
    dw, dh = int(o.scalar(slot_w, "i32", 1)), int(o.scalar(slot_h, "i32", 1))
    if (dw, dh) != (1, 1):
        raise TFLiteError(f"{what}: dilation {dh}x{dw} is not supported (only 1)")


def _int(o: Table, slot: int, kind: str = "i32") -> int:
    return int(o.scalar(slot, kind))


def _conv_options(o: Table, what: str) -> g.ConvOptions:
    F = Conv2DField
    _dilation(o, F.DILATION_W, F.DILATION_H, what)
    return g.ConvOptions(_positive(_int(o, F.STRIDE_H), "stride", what),
                         _positive(_int(o, F.STRIDE_W), "stride", what),
                         _padding(_int(o, F.PADDING, "i8"), what),
                         _activation(_int(o, F.FUSED_ACTIVATION, "i8"), what))


def _depthwise_options(o: Table, what: str) -> g.DepthwiseOptions:
    F = DepthwiseConv2DField
    _dilation(o, F.DILATION_W, F.DILATION_H, what)
    return g.DepthwiseOptions(_positive(_int(o, F.STRIDE_H), "stride", what),
                              _positive(_int(o, F.STRIDE_W), "stride", what),
                              _padding(_int(o, F.PADDING, "i8"), what),
                              _positive(_int(o, F.DEPTH_MULTIPLIER), "depth multiplier", what),
                              _activation(_int(o, F.FUSED_ACTIVATION, "i8"), what))


def _pool_options(o: Table, what: str) -> g.PoolOptions:
    F = Pool2DField
    return g.PoolOptions(_positive(_int(o, F.FILTER_HEIGHT), "filter height", what),
                         _positive(_int(o, F.FILTER_WIDTH), "filter width", what),
                         _positive(_int(o, F.STRIDE_H), "stride", what),
                         _positive(_int(o, F.STRIDE_W), "stride", what),
                         _padding(_int(o, F.PADDING, "i8"), what),
                         _activation(_int(o, F.FUSED_ACTIVATION, "i8"), what))


def _fully_connected_options(o: Table, what: str) -> g.FullyConnectedOptions:
    F = FullyConnectedField
    if _int(o, F.WEIGHTS_FORMAT, "i8") != FullyConnectedWeightsFormat.DEFAULT:
        raise TFLiteError(f"{what}: shuffled weights are not supported")
    return g.FullyConnectedOptions(_activation(_int(o, F.FUSED_ACTIVATION, "i8"), what),
                                   bool(o.scalar(F.KEEP_NUM_DIMS, "bool")))


def _add_options(o: Table, what: str) -> g.AddOptions:
    return g.AddOptions(_activation(_int(o, AddField.FUSED_ACTIVATION, "i8"), what))


def _softmax_options(o: Table, what: str) -> g.SoftmaxOptions:
    beta = float(o.scalar(SoftmaxField.BETA, "f32"))
    if not np.isfinite(beta) or beta <= 0:
        raise TFLiteError(f"{what}: softmax beta {beta} must be finite and positive")
    return g.SoftmaxOptions(beta)


def _mean_options(o: Table, what: str) -> g.MeanOptions:
    return g.MeanOptions(bool(o.scalar(ReducerField.KEEP_DIMS, "bool")))


# kind -> (read its options table, make its options when the table is absent; None: required)
OptionReader = Callable[[Table, str], g.Options]
OPTION_READERS: dict[str, tuple[OptionReader, Callable[[], g.Options] | None]] = {
    g.CONV_2D: (_conv_options, None),
    g.DEPTHWISE_CONV_2D: (_depthwise_options, None),
    g.AVERAGE_POOL_2D: (_pool_options, None),
    g.MAX_POOL_2D: (_pool_options, None),
    g.SOFTMAX: (_softmax_options, None),
    g.FULLY_CONNECTED: (_fully_connected_options, g.FullyConnectedOptions),
    g.ADD: (_add_options, g.AddOptions),
    g.MEAN: (_mean_options, g.MeanOptions),
}


def _options(kind: str, o: Table | None, what: str) -> g.Options:
    """The graph options of one operator from its options table."""
    if kind not in OPTION_READERS:
        return None
    read, default = OPTION_READERS[kind]
    if o is not None:
        return read(o, what)
    if default is None:
        raise TFLiteError(f"{what}: the options table is missing")
    return default()


def _operator(t: Table, index: int, codes: list[int | str], tensors: list[g.Tensor]
              ) -> g.Operator:
    code_index = int(t.scalar(OperatorField.OPCODE_INDEX, "u32"))
    if code_index >= len(codes):
        raise TFLiteError(f"corrupt .tflite: operator {index} names operator code"
                          f" {code_index} of {len(codes)}")
    code = codes[code_index]
    if isinstance(code, str):
        raise TFLiteError(f"operator {index}: custom operator {code!r} is not supported;"
                          f" supported: {SUPPORTED}")
    if code not in OPERATORS:
        raise TFLiteError(f"operator {index}: builtin operator {_builtin_name(code)} is not"
                          f" supported; supported: {SUPPORTED}")
    kind, options_type = OPERATORS[code]
    what = f"operator {index} ({kind})"
    inputs = _indices(t, OperatorField.INPUTS, f"{what} inputs")
    outputs = _indices(t, OperatorField.OUTPUTS, f"{what} outputs")
    for i in inputs + outputs:
        if not 0 <= i < len(tensors) and not (i == g.NO_TENSOR and i not in outputs):
            raise TFLiteError(f"corrupt .tflite: {what} names tensor {i} of {len(tensors)}")
    for slot, field in ((OperatorField.MUTATING_VARIABLE_INPUTS, "variable inputs"),
                        (OperatorField.INTERMEDIATES, "intermediate tensors")):
        a = t.array(slot, "i4", f"{what} {field}")
        if a is not None and len(a):
            raise TFLiteError(f"{what}: {field} are not supported")
    if t.scalar(OperatorField.BUILTIN_OPTIONS_2_TYPE, "u8"):
        raise TFLiteError(f"{what}: options of the second options table are not supported")
    found = int(t.scalar(OperatorField.BUILTIN_OPTIONS_TYPE, "u8"))
    if found not in (BuiltinOptions.NONE, options_type):
        raise TFLiteError(f"corrupt .tflite: {what} carries options of type {found}")
    table = t.table(OperatorField.BUILTIN_OPTIONS, f"{what} options") if found else None
    return g.Operator(kind, tuple(inputs), tuple(outputs), _options(kind, table, what))


def _builtin_name(code: int) -> str:
    """The schema's name of a builtin operator code, when the `tflite` package is present."""
    try:
        import tflite as schema  # optional: only for a friendlier message
    except ImportError:
        return str(code)
    names = {v: k for k, v in vars(schema.BuiltinOperator).items() if isinstance(v, int)}
    return names.get(code, str(code))
