"""Build small .tflite files for tests, with the `tflite` package's generated builders.

    b = ModelBuilder()
    x = b.tensor([1, 8, 8, 3], scale=0.05, zero=-3)
    w = b.tensor([4, 3, 3, 3], scale=[...], zero=[0] * 4, data=weights)
    y = b.tensor([1, 8, 8, 4], scale=0.1, zero=2)
    b.op("CONV_2D", [x, w, -1], [y], "Conv2DOptions", Padding=0, StrideW=1, StrideH=1)
    data = b.build([x], [y])

Options are given as the schema's table name and its fields (the generated
`<Table>Add<Field>` functions); the options' union type is looked up by name.
"""

from __future__ import annotations

import flatbuffers
import numpy as np
import tflite

DTYPES = {"float32": tflite.TensorType.FLOAT32, "int32": tflite.TensorType.INT32,
          "int8": tflite.TensorType.INT8, "int16": tflite.TensorType.INT16,
          "uint8": tflite.TensorType.UINT8, "int64": tflite.TensorType.INT64}
NUMPY = {"float32": np.float32, "int32": np.int32, "int8": np.int8, "int16": np.int16,
         "uint8": np.uint8, "int64": np.int64}

# The schema's Padding and ActivationFunctionType codes the operator tests use.
SAME, VALID = tflite.Padding.SAME, tflite.Padding.VALID
NONE, RELU, RELU6 = (tflite.ActivationFunctionType.NONE, tflite.ActivationFunctionType.RELU,
                     tflite.ActivationFunctionType.RELU6)

# Depthwise convolutions of both the int8 and the float32 operator tests:
# (h, w, c_in, multiplier, k, stride, padding, activation).
DEPTHWISE_CASES = [
    (7, 9, 3, 1, 3, 1, SAME, NONE),
    (7, 9, 3, 2, 3, 2, SAME, RELU),
    (8, 6, 4, 1, 3, 2, VALID, RELU6),
    (5, 6, 2, 3, 2, 1, VALID, NONE),
]


def depthwise_id(case) -> str:
    """A pytest id of a DEPTHWISE_CASES entry."""
    return "h{}w{}c{}m{}k{}s{}p{}a{}".format(*case)


def pool_id(case) -> str:
    """A pytest id of a pool case (kind, h, w, c, filter, stride, padding, activation)."""
    return "{}-h{}w{}c{}f{}s{}p{}a{}".format(*case)


def out_size(padding: int, size: int, k: int, stride: int) -> int:
    """An output's height or width (TensorFlow Lite's SAME or VALID padding)."""
    return (size + stride - 1) // stride if padding == SAME else (size - k + stride) // stride


class ModelBuilder:
    def __init__(self) -> None:
        self.tensors: list[dict] = []
        self.buffers: list[bytes] = [b""]  # buffer 0: the empty sentinel
        self.codes: list[tuple[int, str | None]] = []
        self.ops: list[dict] = []

    def tensor(self, shape, dtype: str = "int8", scale=None, zero=None, axis: int = 0,
               data=None, name: str | None = None) -> int:
        """Add a tensor; `data` makes it constant. Returns its index."""
        buf = 0
        if data is not None:
            raw = np.ascontiguousarray(np.asarray(data, dtype=NUMPY[dtype])).astype(
                np.dtype(NUMPY[dtype]).newbyteorder("<")).tobytes()
            self.buffers.append(raw)
            buf = len(self.buffers) - 1
        quant = None
        if scale is not None:
            scales = np.atleast_1d(np.asarray(scale, dtype=np.float32))
            zeros = np.atleast_1d(np.asarray(0 if zero is None else zero, dtype=np.int64))
            quant = (scales, np.broadcast_to(zeros, scales.shape).copy(), axis)
        self.tensors.append({"shape": list(shape), "type": DTYPES[dtype], "buffer": buf,
                             "name": name or f"t{len(self.tensors)}", "quant": quant})
        return len(self.tensors) - 1

    def op(self, kind: str, inputs, outputs, options: str | None = None,
           custom: str | None = None, **fields) -> None:
        """Add an operator (builtin `kind`, or a custom operator named `custom`)."""
        code = getattr(tflite.BuiltinOperator, kind) if custom is None else 32  # CUSTOM
        key = (code, custom)
        if key not in self.codes:
            self.codes.append(key)
        self.ops.append({"code": self.codes.index(key), "inputs": list(inputs),
                         "outputs": list(outputs), "options": options, "fields": fields})

    # ----------------------------------------------------------------- serialization

    def build(self, inputs, outputs) -> bytes:
        b = flatbuffers.Builder(1024)
        buffers = []
        for raw in self.buffers:
            data = b.CreateByteVector(raw) if raw else None
            tflite.BufferStart(b)
            if data is not None:
                tflite.BufferAddData(b, data)
            buffers.append(tflite.BufferEnd(b))
        tensors = [self._tensor(b, t) for t in self.tensors]
        ops = [self._op(b, o) for o in self.ops]
        codes = []
        for code, custom in self.codes:
            name = b.CreateString(custom) if custom else None
            tflite.OperatorCodeStart(b)
            tflite.OperatorCodeAddDeprecatedBuiltinCode(b, min(code, 127))
            tflite.OperatorCodeAddBuiltinCode(b, code)
            tflite.OperatorCodeAddVersion(b, 1)
            if name is not None:
                tflite.OperatorCodeAddCustomCode(b, name)
            codes.append(tflite.OperatorCodeEnd(b))
        t_vec = _offsets(b, tflite.SubGraphStartTensorsVector, tensors)
        o_vec = _offsets(b, tflite.SubGraphStartOperatorsVector, ops)
        in_vec = _ints(b, tflite.SubGraphStartInputsVector, inputs)
        out_vec = _ints(b, tflite.SubGraphStartOutputsVector, outputs)
        tflite.SubGraphStart(b)
        tflite.SubGraphAddTensors(b, t_vec)
        tflite.SubGraphAddOperators(b, o_vec)
        tflite.SubGraphAddInputs(b, in_vec)
        tflite.SubGraphAddOutputs(b, out_vec)
        sub = tflite.SubGraphEnd(b)
        subs = _offsets(b, tflite.ModelStartSubgraphsVector, [sub])
        code_vec = _offsets(b, tflite.ModelStartOperatorCodesVector, codes)
        buf_vec = _offsets(b, tflite.ModelStartBuffersVector, buffers)
        desc = b.CreateString("piconn test")
        tflite.ModelStart(b)
        tflite.ModelAddVersion(b, 3)
        tflite.ModelAddOperatorCodes(b, code_vec)
        tflite.ModelAddSubgraphs(b, subs)
        tflite.ModelAddBuffers(b, buf_vec)
        tflite.ModelAddDescription(b, desc)
        b.Finish(tflite.ModelEnd(b), file_identifier=b"TFL3")
        return bytes(b.Output())

    def _tensor(self, b: flatbuffers.Builder, t: dict) -> int:
        name = b.CreateString(t["name"])
        shape = _ints(b, tflite.TensorStartShapeVector, t["shape"])
        quant = None
        if t["quant"] is not None:
            scales, zeros, axis = t["quant"]
            s_vec = _floats(b, tflite.QuantizationParametersStartScaleVector, scales)
            tflite.QuantizationParametersStartZeroPointVector(b, len(zeros))
            for z in reversed(zeros):
                b.PrependInt64(int(z))
            z_vec = b.EndVector()
            tflite.QuantizationParametersStart(b)
            tflite.QuantizationParametersAddScale(b, s_vec)
            tflite.QuantizationParametersAddZeroPoint(b, z_vec)
            tflite.QuantizationParametersAddQuantizedDimension(b, axis)
            quant = tflite.QuantizationParametersEnd(b)
        tflite.TensorStart(b)
        tflite.TensorAddShape(b, shape)
        tflite.TensorAddType(b, t["type"])
        tflite.TensorAddBuffer(b, t["buffer"])
        tflite.TensorAddName(b, name)
        if quant is not None:
            tflite.TensorAddQuantization(b, quant)
        return tflite.TensorEnd(b)

    def _op(self, b: flatbuffers.Builder, o: dict) -> int:
        options = None
        if o["options"] is not None:
            name = o["options"]
            vectors = {}
            for field, value in o["fields"].items():
                if isinstance(value, (list, tuple)):
                    vectors[field] = _ints(b, getattr(tflite, f"{name}Start{field}Vector"), value)
            getattr(tflite, f"{name}Start")(b)
            for field, value in o["fields"].items():
                getattr(tflite, f"{name}Add{field}")(b, vectors.get(field, value))
            options = getattr(tflite, f"{name}End")(b)
        ins = _ints(b, tflite.OperatorStartInputsVector, o["inputs"])
        outs = _ints(b, tflite.OperatorStartOutputsVector, o["outputs"])
        tflite.OperatorStart(b)
        tflite.OperatorAddOpcodeIndex(b, o["code"])
        tflite.OperatorAddInputs(b, ins)
        tflite.OperatorAddOutputs(b, outs)
        if options is not None:
            tflite.OperatorAddBuiltinOptionsType(b, getattr(tflite.BuiltinOptions, o["options"]))
            tflite.OperatorAddBuiltinOptions(b, options)
        return tflite.OperatorEnd(b)


def _offsets(b: flatbuffers.Builder, start, items: list[int]) -> int:
    start(b, len(items))
    for item in reversed(items):
        b.PrependUOffsetTRelative(item)
    return b.EndVector()


def _ints(b: flatbuffers.Builder, start, items) -> int:
    start(b, len(items))
    for item in reversed(list(items)):
        b.PrependInt32(int(item))
    return b.EndVector()


def _floats(b: flatbuffers.Builder, start, items) -> int:
    start(b, len(items))
    for item in reversed(list(items)):
        b.PrependFloat32(float(item))
    return b.EndVector()
