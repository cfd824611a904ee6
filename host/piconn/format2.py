"""Write and read version 2 of the piconn model format: int8 graphs (docs/FORMAT.md).

`to_bytes(graph)` lays out the tensor and operator tables, the constants, the memory plan
and every precomputed number (requantization per channel, folded biases, clamps, lookup
tables), each computed by `int8_ops.prepare`. `from_bytes(data)` checks a file the way the
device will (sizes, offsets, alignment, CRC, indices, the memory plan) and also recomputes
every stored number from the tensors' quantization, refusing the file on any difference;
it returns the `Graph` and its memory plan. `read(data)` takes either version.

Tensor names are not stored; a graph read back has names `t0`, `t1`, ...
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass

import numpy as np

from . import float_ops, int8, int8_ops, xnor_ops
from . import format as format1
from . import graph as g

MAGIC = b"PCNN"
VERSION = 2
HEADER_SIZE = 64
TENSOR_RECORD_SIZE = 40
OPERATOR_RECORD_SIZE = 80
MAX_TENSORS = 1024
MAX_OPERATORS = 1024
MAX_GRAPH_IO = 4
MAX_OP_INPUTS = 3
MAX_RANK = 4
N_PARAMS = 16
NO_INDEX = 0xFFFF

_HEADER = struct.Struct("<4sHHIIHHHHIIIIBBH4H4HI")
_TENSOR = struct.Struct("<BBBB4HIIfiIHHI")
_OPERATOR = struct.Struct(f"<BBH3HHI{N_PARAMS}i")
assert (_HEADER.size, _TENSOR.size, _OPERATOR.size) == (
    HEADER_SIZE, TENSOR_RECORD_SIZE, OPERATOR_RECORD_SIZE)

DTYPE_CODES = {g.FLOAT32: 1, g.BITS: 2, g.INT32: 3, g.INT8: 4}
DTYPE_NAMES = {v: k for k, v in DTYPE_CODES.items()}
STORAGE_ARENA = 0
STORAGE_CONSTANT = 1
QUANT_NONE = 0
QUANT_TENSOR = 1
QUANT_CHANNEL = 2
KIND_CODES = {g.CONV_2D: 1, g.DEPTHWISE_CONV_2D: 2, g.FULLY_CONNECTED: 3, g.AVERAGE_POOL_2D: 4,
              g.MAX_POOL_2D: 5, g.ADD: 6, g.RESHAPE: 7, g.SOFTMAX: 8, g.PAD: 9, g.MEAN: 10,
              g.LOGISTIC: 11, g.TANH: 12, g.QUANTIZE: 13, g.DEQUANTIZE: 14}
KIND_CODES.update({g.BINARIZE: 20, g.XNOR_CONV_2D: 21, g.BINARY_MAX_POOL_2D: 22,
                   g.BINARIZE_CONV_2D: 23})
KIND_NAMES = {v: k for k, v in KIND_CODES.items()}
PADDING_CODES = {g.SAME: 0, g.VALID: 1}
ACTIVATION_CODES = {g.ACT_NONE: 0, g.ACT_RELU: 1, g.ACT_RELU6: 2}

_CONV = ("padding", "activation", "stride_h", "stride_w", "pad_top", "pad_left",
         "depth_multiplier", "input_zero", "output_zero", "act_min", "act_max")
_POOL = ("padding", "activation", "filter_h", "filter_w", "stride_h", "stride_w", "pad_top",
         "pad_left", "act_min", "act_max")
_SIGMOID = ("input_zero", "input_range_radius", "input_multiplier", "input_left_shift")
PARAMS = {  # kind -> the names of its params, in record order (FORMAT.md)
    g.CONV_2D: _CONV,
    g.DEPTHWISE_CONV_2D: _CONV,
    g.FULLY_CONNECTED: ("activation", "keep_num_dims", "input_zero", "output_zero", "act_min",
                        "act_max"),
    g.AVERAGE_POOL_2D: _POOL,
    g.MAX_POOL_2D: _POOL,
    g.ADD: ("activation", "input1_offset", "input2_offset", "left_shift", "input1_multiplier",
            "input1_shift", "input2_multiplier", "input2_shift", "output_multiplier",
            "output_shift", "output_zero", "act_min", "act_max"),
    g.RESHAPE: (),
    g.SOFTMAX: ("beta", "input_multiplier", "input_left_shift", "diff_min"),
    g.PAD: ("value",),
    g.MEAN: ("keep_dims", "input_zero_times_count", "multiplier", "shift", "output_zero"),
    g.LOGISTIC: _SIGMOID,
    g.TANH: _SIGMOID,
    g.QUANTIZE: ("output_zero", "scale", "input_zero", "multiplier", "shift"),
    g.DEQUANTIZE: ("input_zero", "scale"),
}
PARAMS.update(xnor_ops.PARAMS)  # the binary kinds (FORMAT.md "Binary operators")
EVERY_INT8 = np.arange(-128, 128, dtype=np.int8)


class FormatError(ValueError):
    """A version-2 file that breaks a rule of docs/FORMAT.md."""


@dataclass
class GraphModel:
    """A graph read from a version-2 file, with its memory plan."""

    graph: g.Graph
    arena_size: int
    offsets: dict[int, int]  # activation tensor -> arena offset


# --------------------------------------------------------------------------- values


def _f32_bits(x: float) -> int:
    return struct.unpack("<i", struct.pack("<f", x))[0]


def _param_values(graph: g.Graph, k: int, p) -> dict[str, int]:
    """The named params of operator k (prepared params p) as int32 values."""
    op = graph.operators[k]
    o = op.options
    if isinstance(p, float_ops.FloatParams):
        return _float_param_values(op, p)
    if op.kind in xnor_ops.KINDS:
        return xnor_ops.param_values(op.kind, p)
    v: dict[str, int] = {}
    if op.kind in (g.CONV_2D, g.DEPTHWISE_CONV_2D):
        v = {"padding": PADDING_CODES[o.padding], "activation": ACTIVATION_CODES[o.activation],
             "stride_h": p.stride_h, "stride_w": p.stride_w, "pad_top": p.pad_top,
             "pad_left": p.pad_left, "depth_multiplier": p.depth_multiplier,
             "input_zero": -p.input_offset, "output_zero": p.output_zero,
             "act_min": p.act_min, "act_max": p.act_max}
    elif op.kind == g.FULLY_CONNECTED:
        v = {"activation": ACTIVATION_CODES[o.activation], "keep_num_dims": int(o.keep_num_dims),
             "input_zero": -p.input_offset, "output_zero": p.output_zero,
             "act_min": p.act_min, "act_max": p.act_max}
    elif op.kind in (g.AVERAGE_POOL_2D, g.MAX_POOL_2D):
        v = {"padding": PADDING_CODES[o.padding], "activation": ACTIVATION_CODES[o.activation],
             "filter_h": p.filter_h, "filter_w": p.filter_w, "stride_h": p.stride_h,
             "stride_w": p.stride_w, "pad_top": p.pad_top, "pad_left": p.pad_left,
             "act_min": p.act_min, "act_max": p.act_max}
    elif op.kind == g.ADD:
        v = {"activation": ACTIVATION_CODES[o.activation]}
        v.update((name, getattr(p, name)) for name in PARAMS[g.ADD][1:-3])
        v.update(output_zero=p.output_zero, act_min=p.act_min, act_max=p.act_max)
    elif op.kind == g.SOFTMAX:
        v = {"beta": _f32_bits(o.beta), "input_multiplier": p.input_multiplier,
             "input_left_shift": p.input_left_shift, "diff_min": p.diff_min}
    elif op.kind == g.PAD:
        v = {"value": p.value}
    elif op.kind == g.MEAN:
        v = {"keep_dims": int(o.keep_dims), "input_zero_times_count": p.input_zero_times_count,
             "multiplier": p.multiplier, "shift": p.shift, "output_zero": p.output_zero}
    elif op.kind in (g.LOGISTIC, g.TANH):
        v = {name: getattr(p, name) for name in _SIGMOID}
    elif op.kind == g.QUANTIZE:
        v = {"output_zero": p.output_zero, "scale": _f32_bits(p.scale),
             "input_zero": p.input_zero, "multiplier": p.multiplier, "shift": p.shift}
    elif op.kind == g.DEQUANTIZE:
        v = {"input_zero": p.input_zero, "scale": _f32_bits(p.scale)}
    return {name: int(v[name]) for name in PARAMS[op.kind]}


def _float_param_values(op: g.Operator, p: float_ops.FloatParams) -> dict[str, int]:
    """A float32 operator's params: the int8 kind's names, the quantization ones 0, the
    clamp and beta as f32 bits (FORMAT.md "float32 operators")."""
    o = op.options
    v = dict.fromkeys(PARAMS[op.kind], 0)
    if op.kind in (g.CONV_2D, g.DEPTHWISE_CONV_2D, g.AVERAGE_POOL_2D, g.MAX_POOL_2D):
        v.update(padding=PADDING_CODES[o.padding], stride_h=p.stride_h, stride_w=p.stride_w,
                 pad_top=p.pad_top, pad_left=p.pad_left)
    if op.kind in (g.CONV_2D, g.DEPTHWISE_CONV_2D):
        v["depth_multiplier"] = p.depth_multiplier
    if op.kind in (g.AVERAGE_POOL_2D, g.MAX_POOL_2D):
        v.update(filter_h=p.filter_h, filter_w=p.filter_w)
    if op.kind == g.FULLY_CONNECTED:
        v["keep_num_dims"] = int(o.keep_num_dims)
    if op.kind == g.MEAN:
        v["keep_dims"] = int(o.keep_dims)
    if op.kind == g.SOFTMAX:
        v["beta"] = _f32_bits(p.beta)
    if "act_min" in v:
        v.update(activation=ACTIVATION_CODES[o.activation], act_min=_f32_bits(p.act_min),
                 act_max=_f32_bits(p.act_max))
    return {name: int(v[name]) for name in PARAMS[op.kind]}


def _table(graph: g.Graph, k: int, p) -> bytes:
    """The operator's table (FORMAT.md), or b"" when its kind has none."""
    op = graph.operators[k]
    if isinstance(p, float_ops.FloatParams):
        return b""  # float32 operators read their tensors only
    if op.kind in (g.CONV_2D, g.DEPTHWISE_CONV_2D, g.FULLY_CONNECTED):
        w = graph.tensors[op.inputs[1]]
        out_axis = 3 if op.kind == g.DEPTHWISE_CONV_2D else 0
        sums = w.data.astype(np.int64).sum(axis=tuple(a for a in range(w.data.ndim)
                                                      if a != out_axis))
        b = op.inputs[2] if len(op.inputs) > 2 else g.NO_TENSOR
        bias = (np.zeros(len(sums), dtype=np.int64) if b == g.NO_TENSOR
                else graph.tensors[b].data.astype(np.int64))
        folded = bias + p.input_offset * sums
        if np.any(np.abs(folded) > int8.INT32_MAX):
            raise FormatError(f"operator {k} ({op.kind}): the folded bias leaves int32")
        rows = np.stack([folded, p.multiplier, p.shift], axis=1)
        return rows.astype("<i4").tobytes()
    if op.kind == g.SOFTMAX:
        diff = -np.arange(256, dtype=np.int64)
        scaled = int8.srdhm(int8.wrap32(diff << p.input_left_shift), p.input_multiplier)
        exps = int8.exp_on_negative_values(scaled, int8.SOFTMAX_DIFF_INTEGER_BITS)
        return np.where(diff >= p.diff_min, exps, 0).astype("<i4").tobytes()
    x = EVERY_INT8.reshape(1, 256)
    if op.kind == g.LOGISTIC:
        return int8.logistic(x, p).tobytes()
    if op.kind == g.TANH:
        return int8.tanh(x, p).tobytes()
    if op.kind == g.QUANTIZE and graph.tensors[op.inputs[0]].dtype == g.INT8:
        return int8.requantize(x, p).tobytes()
    if op.kind == g.DEQUANTIZE:
        return int8.dequantize(x, p).astype("<f4").tobytes()
    return b""


# --------------------------------------------------------------------------- writer


def _pad4(n: int) -> int:
    return (n + 3) & ~3


def _check_writable(graph: g.Graph) -> None:
    if not 1 <= len(graph.tensors) <= MAX_TENSORS:
        raise FormatError(f"{len(graph.tensors)} tensors; version 2 holds 1..{MAX_TENSORS}")
    if not 1 <= len(graph.operators) <= MAX_OPERATORS:
        raise FormatError(f"{len(graph.operators)} operators; version 2 holds 1..{MAX_OPERATORS}")
    if not (1 <= len(graph.inputs) <= MAX_GRAPH_IO and 1 <= len(graph.outputs) <= MAX_GRAPH_IO):
        raise FormatError(f"version 2 holds 1..{MAX_GRAPH_IO} graph inputs and outputs")
    used = set(graph.inputs) | set(graph.outputs)
    for k, op in enumerate(graph.operators):
        if len(op.inputs) > MAX_OP_INPUTS or len(op.outputs) != 1:
            raise graph.error(k, f"version 2 holds 1..{MAX_OP_INPUTS} inputs and one output")
        used.update(op.inputs + op.outputs)
    for i, t in enumerate(graph.tensors):
        if i not in used:
            raise FormatError(f"tensor {t.name!r} is used by no operator")
        if t.dtype not in DTYPE_CODES or len(t.shape) > MAX_RANK or max(t.shape, default=1) > 65535:
            raise FormatError(f"tensor {t.name!r}: {t.dtype}{list(t.shape)} does not fit version 2"
                              f" (i8, i32 or f32; rank <= {MAX_RANK}; dims <= 65535)")
        q = t.quant
        if q is not None and q.per_channel and (np.any(q.zero_point != 0) or not
                                                0 <= q.axis < len(t.shape) or
                                                t.shape[q.axis] != len(q.scale)):
            raise FormatError(f"tensor {t.name!r}: per-channel quantization needs zero points 0"
                              " and one scale per index of its axis")


def to_bytes(graph: g.Graph) -> bytes:
    """The version-2 bytes of a graph (deterministic). Raises GraphError/FormatError."""
    params = int8_ops.prepare(graph)
    _check_writable(graph)
    plan = g.plan_memory(graph, align=4)
    tensor_table = HEADER_SIZE
    operator_table = tensor_table + TENSOR_RECORD_SIZE * len(graph.tensors)
    data_start = operator_table + OPERATOR_RECORD_SIZE * len(graph.operators)
    chunks: list[bytes] = []
    end = data_start

    def place(blob: bytes) -> int:
        nonlocal end
        at = end
        chunks.append(blob + b"\0" * (_pad4(len(blob)) - len(blob)))
        end += _pad4(len(blob))
        return at

    records = []
    for i, t in enumerate(graph.tensors):
        dims = list(t.shape) + [1] * (MAX_RANK - len(t.shape))
        if t.is_constant and t.dtype == g.BITS:
            storage, offset = STORAGE_CONSTANT, place(
                xnor_ops.pack(t.data).astype("<u4").tobytes())
        elif t.is_constant:
            storage, offset = STORAGE_CONSTANT, place(t.data.astype(
                np.dtype(g.NUMPY_DTYPES[t.dtype]).newbyteorder("<")).tobytes())
        else:
            storage, offset = STORAGE_ARENA, plan.offsets[i]
        quant, scale, zero, scales, channels, axis = QUANT_NONE, 0.0, 0, 0, 0, 0
        if t.quant is not None and t.quant.per_channel:
            quant, channels, axis = QUANT_CHANNEL, len(t.quant.scale), t.quant.axis
            scales = place(t.quant.scale.astype("<f4").tobytes())
        elif t.quant is not None:
            quant, scale, zero = QUANT_TENSOR, float(t.quant.scale[0]), int(t.quant.zero_point[0])
        records.append(_TENSOR.pack(DTYPE_CODES[t.dtype], len(t.shape), storage, quant, *dims,
                                    offset, t.nbytes, scale, zero, scales, channels, axis, 0))
    for k, op in enumerate(graph.operators):
        table = _table(graph, k, params[k])
        at = place(table) if table else 0
        records.append(_operator_record(graph, k, params[k], at))
    io = [list(graph.inputs) + [NO_INDEX] * (MAX_GRAPH_IO - len(graph.inputs)),
          list(graph.outputs) + [NO_INDEX] * (MAX_GRAPH_IO - len(graph.outputs))]
    body = b"".join(records) + b"".join(chunks)
    head = _HEADER.pack(MAGIC, VERSION, HEADER_SIZE, HEADER_SIZE + len(body), 0,
                        len(graph.tensors), len(graph.operators), TENSOR_RECORD_SIZE,
                        OPERATOR_RECORD_SIZE, tensor_table, operator_table, data_start,
                        plan.arena_size, len(graph.inputs), len(graph.outputs), 0, *io[0],
                        *io[1], 0)
    blob = bytearray(head + body)
    struct.pack_into("<I", blob, 12, zlib.crc32(blob[16:]) & 0xFFFFFFFF)
    return bytes(blob)


def _operator_record(graph: g.Graph, k: int, p, table_offset: int) -> bytes:
    op = graph.operators[k]
    values = _param_values(graph, k, p)
    row = [values[name] for name in PARAMS[op.kind]] + [0] * (N_PARAMS - len(values))
    ins = [NO_INDEX if i == g.NO_TENSOR else i for i in op.inputs]
    ins += [NO_INDEX] * (MAX_OP_INPUTS - len(ins))
    return _OPERATOR.pack(KIND_CODES[op.kind], len(op.inputs), 0, *ins, op.outputs[0],
                          table_offset, *row)


# --------------------------------------------------------------------------- reader


def is_version2(data: bytes) -> bool:
    """Whether `data` claims to be a version-2 model (magic and version field)."""
    return len(data) >= 6 and data[:4] == MAGIC and struct.unpack_from("<H", data, 4)[0] == VERSION


def read(data: bytes):
    """Either version: a version-1 `ir.DeviceModel` or a version-2 `GraphModel`."""
    if is_version2(data):
        return from_bytes(data)
    return format1.from_bytes(data)


def from_bytes(data: bytes) -> GraphModel:
    """Check a version-2 file completely and return its graph and memory plan."""
    data = bytes(data)
    if len(data) < HEADER_SIZE:
        raise FormatError(f"model too short: {len(data)} bytes, the header alone is {HEADER_SIZE}")
    (magic, version, hsize, total, crc, n_t, n_o, t_size, o_size, t_table, o_table, data_start,
     arena, n_in, n_out, reserved, *rest) = _HEADER.unpack_from(data, 0)
    inputs, outputs, reserved2 = rest[:4], rest[4:8], rest[8]
    if magic != MAGIC:
        raise FormatError(f"not a piconn model: magic {magic!r}, expected {MAGIC!r}")
    if version != VERSION:
        raise FormatError(f"model format version {version}; this reader reads version {VERSION}")
    if hsize != HEADER_SIZE or (t_size, o_size) != (TENSOR_RECORD_SIZE, OPERATOR_RECORD_SIZE):
        raise FormatError("header or record sizes differ from version 2's")
    if total != len(data):
        raise FormatError(f"total_size {total} != buffer length {len(data)}")
    if zlib.crc32(data[16:]) & 0xFFFFFFFF != crc:
        raise FormatError("CRC mismatch: the model is corrupt")
    if not (1 <= n_t <= MAX_TENSORS and 1 <= n_o <= MAX_OPERATORS):
        raise FormatError(f"{n_t} tensors, {n_o} operators: outside 1..{MAX_TENSORS}")
    if (t_table != HEADER_SIZE or o_table != t_table + t_size * n_t
            or data_start != o_table + o_size * n_o or data_start > total):
        raise FormatError("the tables are not where the header says they must be")
    if not (1 <= n_in <= MAX_GRAPH_IO and 1 <= n_out <= MAX_GRAPH_IO) or reserved or reserved2:
        raise FormatError("graph inputs/outputs: counts outside 1..4 or reserved fields set")
    io = [_indices(inputs, n_in, n_t, "graph input"), _indices(outputs, n_out, n_t, "graph output")]
    tensors, offsets = [], {}
    for i in range(n_t):
        t, offset = _read_tensor(data, t_table + t_size * i, i, data_start, arena)
        tensors.append(t)
        if not t.is_constant:
            offsets[i] = offset
    operators = [_read_operator(data, o_table + o_size * k, k, n_t) for k in range(n_o)]
    graph = g.Graph(tensors, [op for op, _, _ in operators], io[0], io[1])
    try:
        params = int8_ops.prepare(graph)
    except g.GraphError as e:
        raise FormatError(str(e)) from None
    for k, (_, raw, table_offset) in enumerate(operators):
        if raw != _operator_record(graph, k, params[k], table_offset):
            raise FormatError(str(graph.error(k, "stored params differ from those its"
                                                 " quantization gives")))
        table = _table(graph, k, params[k])
        if (table_offset != 0) != bool(table) or (table and (
                table_offset % 4 or table_offset < data_start
                or data[table_offset:table_offset + len(table)] != table)):
            raise FormatError(str(graph.error(k, "stored table differs from the one its"
                                                 " quantization gives")))
    _check_plan(graph, offsets, arena)
    return GraphModel(graph, arena, offsets)


def _indices(values, n: int, n_tensors: int, what: str) -> list[int]:
    if any(v >= n_tensors for v in values[:n]) or any(v != NO_INDEX for v in values[n:]):
        raise FormatError(f"{what} index out of range")
    return list(values[:n])


def _read_tensor(data: bytes, at: int, i: int, data_start: int, arena: int
                 ) -> tuple[g.Tensor, int]:
    (dt, rank, storage, quant, *rest) = _TENSOR.unpack_from(data, at)
    dims, (offset, nbytes, scale, zero, scales, channels, axis, reserved) = rest[:4], rest[4:]
    what = f"tensor {i}"
    if dt not in DTYPE_NAMES or rank > MAX_RANK or storage not in (0, 1) or quant > 2 or reserved:
        raise FormatError(f"{what}: unknown dtype, storage or quantization, or rank > 4")
    if any(d != 1 for d in dims[rank:]):
        raise FormatError(f"{what}: dims past the rank must be 1")
    dtype, shape = DTYPE_NAMES[dt], tuple(dims[:rank])
    item = np.dtype(g.NUMPY_DTYPES[dtype]).itemsize
    if dtype == g.BITS:
        return _read_bits(data, i, shape, storage, quant, offset, nbytes, data_start, arena,
                          (scale, zero, scales, channels, axis))
    if nbytes != int(np.prod(shape, dtype=np.int64)) * item or offset % 4:
        raise FormatError(f"{what}: nbytes does not match its shape, or a misaligned offset")
    data_array = None
    if storage == STORAGE_CONSTANT:
        if offset < data_start or offset + nbytes > len(data):
            raise FormatError(f"{what}: constant data outside the data area")
        dt_le = np.dtype(g.NUMPY_DTYPES[dtype]).newbyteorder("<")
        data_array = np.frombuffer(data, dt_le, nbytes // item, offset).astype(
            g.NUMPY_DTYPES[dtype]).reshape(shape)
    elif offset + nbytes > arena:
        raise FormatError(f"{what}: arena offset {offset} + {nbytes} bytes past the arena {arena}")
    q = None
    if quant == QUANT_TENSOR:
        if not np.isfinite(scale) or scale <= 0 or (scales, channels, axis) != (0, 0, 0):
            raise FormatError(f"{what}: per-tensor quantization needs a finite positive scale")
        q = g.Quant(np.array([scale], np.float32), np.array([zero], np.int32))
    elif quant == QUANT_CHANNEL:
        if (axis >= rank or channels != shape[axis] or scales % 4 or scales < data_start
                or scales + 4 * channels > len(data) or zero or scale):
            raise FormatError(f"{what}: per-channel quantization fields out of range")
        s = np.frombuffer(data, "<f4", channels, scales).astype(np.float32)
        if not np.all(np.isfinite(s)) or np.any(s <= 0):
            raise FormatError(f"{what}: per-channel scales must be finite and positive")
        q = g.Quant(s, np.zeros(channels, np.int32), axis)
    elif scale or zero or scales or channels or axis:
        raise FormatError(f"{what}: quantization fields set without quantization")
    return g.Tensor(f"t{i}", shape, dtype, q, data_array), offset


def _read_bits(data: bytes, i: int, shape: tuple[int, ...], storage: int, quant: int,
               offset: int, nbytes: int, data_start: int, arena: int, qfields: tuple
               ) -> tuple[g.Tensor, int]:
    """A `bits` tensor record: rank 1..4, whole words per row of the last axis, no
    quantization; a constant's padding bits must be 0."""
    what = f"tensor {i}"
    t = g.Tensor(f"t{i}", shape, g.BITS)
    if not shape or quant != QUANT_NONE or any(qfields):
        raise FormatError(f"{what}: a bits tensor has rank 1..4 and no quantization")
    if nbytes != t.nbytes or offset % 4:
        raise FormatError(f"{what}: nbytes does not match its shape, or a misaligned offset")
    if storage == STORAGE_ARENA:
        if offset + nbytes > arena:
            raise FormatError(f"{what}: arena offset {offset} + {nbytes} bytes past the arena"
                              f" {arena}")
        return t, offset
    if offset < data_start or offset + nbytes > len(data):
        raise FormatError(f"{what}: constant data outside the data area")
    row_words = xnor_ops.words(shape[-1])
    packed = np.frombuffer(data, "<u4", nbytes // 4, offset).reshape(*shape[:-1], row_words)
    t.data, clean = xnor_ops.unpack(packed, shape[-1])
    if not clean:
        raise FormatError(f"{what}: a constant bits tensor has padding bits set")
    return t, offset


def _options(kind: str, values: dict[str, int]) -> g.Options:
    """Graph options from the named params (codes checked against the tables)."""
    padding = {v: k for k, v in PADDING_CODES.items()}
    activation = {v: k for k, v in ACTIVATION_CODES.items()}
    act = activation.get(values.get("activation", 0))
    if act is None or ("padding" in values and values["padding"] not in padding):
        raise FormatError(f"{kind}: unknown padding or activation code")
    if kind == g.CONV_2D:
        return g.ConvOptions(values["stride_h"], values["stride_w"], padding[values["padding"]],
                             act)
    if kind == g.DEPTHWISE_CONV_2D:
        return g.DepthwiseOptions(values["stride_h"], values["stride_w"],
                                  padding[values["padding"]], values["depth_multiplier"], act)
    if kind == g.FULLY_CONNECTED:
        return g.FullyConnectedOptions(act, bool(values["keep_num_dims"]))
    if kind in (g.AVERAGE_POOL_2D, g.MAX_POOL_2D):
        return g.PoolOptions(values["filter_h"], values["filter_w"], values["stride_h"],
                             values["stride_w"], padding[values["padding"]], act)
    if kind == g.ADD:
        return g.AddOptions(act)
    if kind == g.SOFTMAX:
        return g.SoftmaxOptions(struct.unpack("<f", struct.pack("<i", values["beta"]))[0])
    if kind == g.MEAN:
        return g.MeanOptions(bool(values["keep_dims"]))
    if kind in (g.XNOR_CONV_2D, g.BINARIZE_CONV_2D):
        return g.ConvOptions(values["stride_h"], values["stride_w"], padding[values["padding"]])
    if kind == g.BINARY_MAX_POOL_2D:
        return g.PoolOptions(values["filter_h"], values["filter_w"], values["stride_h"],
                             values["stride_w"], padding[values["padding"]])
    return None


def _read_operator(data: bytes, at: int, k: int, n_tensors: int
                   ) -> tuple[g.Operator, bytes, int]:
    code, n_in, reserved, i0, i1, i2, out, table, *row = _OPERATOR.unpack_from(data, at)
    if code not in KIND_NAMES or not 1 <= n_in <= MAX_OP_INPUTS or reserved:
        raise FormatError(f"operator {k}: unknown kind {code} or input count {n_in}")
    kind = KIND_NAMES[code]
    ins = [i0, i1, i2]
    if any(i != NO_INDEX for i in ins[n_in:]) or out >= n_tensors or any(
            i >= n_tensors and i != NO_INDEX for i in ins[:n_in]):
        raise FormatError(f"operator {k} ({kind}): tensor index out of range")
    names = PARAMS[kind]
    if any(row[len(names):]):
        raise FormatError(f"operator {k} ({kind}): unused params must be 0")
    values = dict(zip(names, row))
    try:
        options = _options(kind, values)
    except FormatError as e:
        raise FormatError(f"operator {k} ({e})") from None
    inputs = tuple(g.NO_TENSOR if i == NO_INDEX else i for i in ins[:n_in])
    return (g.Operator(kind, inputs, (out,), options),
            bytes(data[at:at + OPERATOR_RECORD_SIZE]), table)


def _check_plan(graph: g.Graph, offsets: dict[int, int], arena: int) -> None:
    """No two activations alive during the same operator share a byte (RESHAPE pairs may)."""
    plan_buffers = g.buffers(graph, align=1)
    spans = []
    for b in plan_buffers:
        at = {offsets[i] for i in b.tensors}
        if len(at) != 1:
            raise FormatError("a RESHAPE output must have its input's arena offset")
        spans.append((at.pop(), b))
    for a in range(len(spans)):
        for c in range(a + 1, len(spans)):
            (oa, x), (oc, y) = spans[a], spans[c]
            live = x.first <= y.last and y.first <= x.last
            if live and oa < oc + y.size and oc < oa + x.size:
                raise FormatError(f"memory plan: tensors {x.tensors[0]} and {y.tensors[0]} are"
                                  " alive together and overlap in the arena")
    extent = max((o + (b.size + 3) // 4 * 4 for o, b in spans), default=0)
    if arena != extent:
        raise FormatError(f"memory plan: arena_size {arena}, the plan's extent (its regions"
                          f" rounded up to 4 bytes) is {extent}")
