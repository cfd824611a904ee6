"""Bounds-checked reading of the TensorFlow Lite flatbuffer schema (the part piconn uses).

A `.tflite` file is a FlatBuffer (flatbuffers.dev, "Internals"): a root table offset,
the file identifier `TFL3`, then tables reached through unsigned 32-bit offsets, each
table with a vtable of 16-bit field offsets. FlatBuffers' Python runtime (and the `tflite`
package generated from schema.fbs on top of it) does no verification: a truncated or
corrupt file gives a `struct.error` or `IndexError` from deep inside, or, since
`struct.unpack_from` accepts negative offsets, silently reads bytes from the wrong end
of the buffer. So this module reads the wire format itself with `struct`, checking every
position it touches against the file; the first bad one raises `TFLiteError` saying what
was being read. It also keeps numpy piconn's only run-time dependency.

Field slots follow TensorFlow's `tensorflow/compiler/mlir/lite/schema/schema.fbs`
(slot k is the k-th field of a table, its vtable entry at byte 4 + 2k); the tests check
this reader against PyPI `tflite` (the generated classes of that schema) field by field.
"""

from __future__ import annotations

import struct

import numpy as np

from .graph import GraphError

FILE_IDENTIFIER = b"TFL3"
SCHEMA_VERSION = 3


class TFLiteError(GraphError):
    """A .tflite file that is corrupt, or uses something piconn does not support."""


# Table field slots (schema.fbs field order).
class ModelField:
    VERSION = 0
    OPERATOR_CODES = 1
    SUBGRAPHS = 2
    DESCRIPTION = 3
    BUFFERS = 4


class OperatorCodeField:
    DEPRECATED_BUILTIN_CODE = 0
    CUSTOM_CODE = 1
    VERSION = 2
    BUILTIN_CODE = 3


class SubGraphField:
    TENSORS = 0
    INPUTS = 1
    OUTPUTS = 2
    OPERATORS = 3
    NAME = 4


class TensorField:
    SHAPE = 0
    TYPE = 1
    BUFFER = 2
    NAME = 3
    QUANTIZATION = 4
    IS_VARIABLE = 5
    SPARSITY = 6


class QuantizationField:
    MIN = 0
    MAX = 1
    SCALE = 2
    ZERO_POINT = 3
    DETAILS_TYPE = 4
    DETAILS = 5
    QUANTIZED_DIMENSION = 6


class OperatorField:
    OPCODE_INDEX = 0
    INPUTS = 1
    OUTPUTS = 2
    BUILTIN_OPTIONS_TYPE = 3
    BUILTIN_OPTIONS = 4
    CUSTOM_OPTIONS = 5
    MUTATING_VARIABLE_INPUTS = 7
    INTERMEDIATES = 8
    BUILTIN_OPTIONS_2_TYPE = 11


class BufferField:
    DATA = 0
    OFFSET = 1
    SIZE = 2


class Conv2DField:
    PADDING = 0
    STRIDE_W = 1
    STRIDE_H = 2
    FUSED_ACTIVATION = 3
    DILATION_W = 4
    DILATION_H = 5


class DepthwiseConv2DField:
    PADDING = 0
    STRIDE_W = 1
    STRIDE_H = 2
    DEPTH_MULTIPLIER = 3
    FUSED_ACTIVATION = 4
    DILATION_W = 5
    DILATION_H = 6


class Pool2DField:
    PADDING = 0
    STRIDE_W = 1
    STRIDE_H = 2
    FILTER_WIDTH = 3
    FILTER_HEIGHT = 4
    FUSED_ACTIVATION = 5


class FullyConnectedField:
    FUSED_ACTIVATION = 0
    WEIGHTS_FORMAT = 1
    KEEP_NUM_DIMS = 2


class SoftmaxField:
    BETA = 0


class AddField:
    FUSED_ACTIVATION = 0


class ReducerField:
    KEEP_DIMS = 0


# Enumerations of the schema.
class BuiltinOperator:
    ADD = 0
    AVERAGE_POOL_2D = 1
    CONV_2D = 3
    DEPTHWISE_CONV_2D = 4
    DEQUANTIZE = 6
    FULLY_CONNECTED = 9
    LOGISTIC = 14
    MAX_POOL_2D = 17
    RESHAPE = 22
    SOFTMAX = 25
    TANH = 28
    PAD = 34
    MEAN = 40
    QUANTIZE = 114


class BuiltinOptions:
    NONE = 0
    CONV_2D = 1
    DEPTHWISE_CONV_2D = 2
    POOL_2D = 5
    FULLY_CONNECTED = 8
    SOFTMAX = 9
    ADD = 11
    RESHAPE = 17
    PAD = 22
    REDUCER = 27
    DEQUANTIZE = 38  # DequantizeOptions (no fields)
    QUANTIZE = 89  # QuantizeOptions (no fields)


class TensorType:
    FLOAT32 = 0
    FLOAT16 = 1
    INT32 = 2
    UINT8 = 3
    INT64 = 4
    STRING = 5
    BOOL = 6
    INT16 = 7
    INT8 = 9


class Padding:
    SAME = 0
    VALID = 1


class Activation:
    NONE = 0
    RELU = 1
    RELU_N1_TO_1 = 2
    RELU6 = 3
    TANH = 4
    SIGN_BIT = 5


class FullyConnectedWeightsFormat:
    DEFAULT = 0


_U8 = struct.Struct("<B")
_I8 = struct.Struct("<b")
_U16 = struct.Struct("<H")
_I32 = struct.Struct("<i")
_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")
_F32 = struct.Struct("<f")
SCALARS = {"u8": _U8, "i8": _I8, "bool": _U8, "i32": _I32, "u32": _U32, "u64": _U64,
           "f32": _F32}


class File:
    """The bytes of a flatbuffer and checked reads of little-endian scalars."""

    def __init__(self, data: bytes):
        self.data = bytes(data)
        self.n = len(self.data)

    def read(self, fmt: struct.Struct, pos: int, what: str) -> int | float:
        if pos < 0 or pos + fmt.size > self.n:
            raise TFLiteError(f"corrupt .tflite: {what} at byte {pos} lies outside the file"
                              f" ({self.n} bytes)")
        return fmt.unpack_from(self.data, pos)[0]

    def root(self) -> Table:
        if self.n < 8:
            raise TFLiteError(f"not a .tflite file: {self.n} bytes")
        if self.data[4:8] != FILE_IDENTIFIER:
            raise TFLiteError(f"not a .tflite file: identifier {self.data[4:8]!r}, expected"
                              f" {FILE_IDENTIFIER!r}")
        return Table(self, int(self.read(_U32, 0, "root offset")), "model")


class Table:
    """One flatbuffer table: fields by slot, each read checked against the file."""

    __slots__ = ("file", "object_size", "pos", "vtable", "vtable_size", "what")

    def __init__(self, file: File, pos: int, what: str):
        self.file, self.pos, self.what = file, pos, what
        self.vtable = pos - int(file.read(_I32, pos, f"{what} vtable offset"))
        self.vtable_size = int(file.read(_U16, self.vtable, f"{what} vtable size"))
        self.object_size = int(file.read(_U16, self.vtable + 2, f"{what} object size"))
        if self.vtable_size < 4 or self.vtable_size % 2 or self.object_size < 4:
            raise TFLiteError(f"corrupt .tflite: {what} has a malformed vtable")
        if self.vtable + self.vtable_size > file.n or pos + self.object_size > file.n:
            raise TFLiteError(f"corrupt .tflite: {what} extends past the end of the file")

    def _field(self, slot: int, size: int) -> int:
        """Absolute position of field `slot` (`size` bytes inline), or 0 when absent."""
        entry = 4 + 2 * slot
        if entry >= self.vtable_size:
            return 0
        off = int(self.file.read(_U16, self.vtable + entry, f"{self.what} field {slot}"))
        if off == 0:
            return 0
        if off + size > self.object_size:
            raise TFLiteError(f"corrupt .tflite: {self.what} field {slot} lies outside"
                              " its table")
        return self.pos + off

    def has(self, slot: int) -> bool:
        return self._field(slot, 1) != 0

    def scalar(self, slot: int, kind: str, default: float = 0) -> int | float:
        fmt = SCALARS[kind]
        p = self._field(slot, fmt.size)
        return default if p == 0 else self.file.read(fmt, p, f"{self.what} field {slot}")

    def _target(self, slot: int, what: str) -> int:
        p = self._field(slot, 4)
        if p == 0:
            return 0
        return p + int(self.file.read(_U32, p, what))

    def table(self, slot: int, what: str) -> Table | None:
        t = self._target(slot, what)
        return None if t == 0 else Table(self.file, t, what)

    def _vector(self, slot: int, elem_size: int, what: str) -> tuple[int, int] | None:
        """(start, length) of a vector field, its elements checked to lie in the file."""
        v = self._target(slot, what)
        if v == 0:
            return None
        n = int(self.file.read(_U32, v, f"{what} length"))
        if v + 4 + n * elem_size > self.file.n:
            raise TFLiteError(f"corrupt .tflite: {what} ({n} elements) extends past the end"
                              " of the file")
        return v + 4, n

    def array(self, slot: int, dtype: str, what: str) -> np.ndarray | None:
        """A vector of scalars as a numpy array (a copy), or None when absent."""
        dt = np.dtype(dtype).newbyteorder("<")
        vec = self._vector(slot, dt.itemsize, what)
        if vec is None:
            return None
        start, n = vec
        return np.frombuffer(self.file.data, dt, n, start).astype(dt.newbyteorder("="))

    def tables(self, slot: int, what: str) -> list[Table]:
        """A vector of tables (empty when absent)."""
        vec = self._vector(slot, 4, what)
        if vec is None:
            return []
        start, n = vec
        out = []
        for k in range(n):
            p = start + 4 * k
            out.append(Table(self.file, p + int(self.file.read(_U32, p, what)), f"{what} {k}"))
        return out

    def string(self, slot: int, what: str) -> str | None:
        vec = self._vector(slot, 1, what)
        if vec is None:
            return None
        start, n = vec
        return self.file.data[start:start + n].decode("utf-8", errors="replace")
