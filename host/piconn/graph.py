"""A tensor/operator graph of an int8 model, and its static memory plan.

The graph is what `piconn.tflite.import_tflite` reads out of a `.tflite` file and what
`piconn.int8_ops` runs: tensors with shapes (NHWC), dtypes and quantization (per
tensor, or per channel along one axis), constant tensors with their data, and operators
that name their input and output tensors by index, in execution order. `Graph.check`
applies the structural rules (indices, one producer per tensor, produced before used,
constant data of the declared shape and dtype); the per-operator rules of the int8
kernels live with them in `int8_ops.prepare`.

`plan_memory` places every activation tensor in one arena at an offset computed from the
tensor lifetimes, like TensorFlow Lite Micro's greedy planner: largest first, each at the
lowest offset that overlaps no tensor alive at the same time. RESHAPE's output shares its
input's bytes (no copy).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

# dtypes: name -> numpy dtype of one element.
INT8 = "int8"
INT16 = "int16"
INT32 = "int32"
INT64 = "int64"
FLOAT32 = "float32"
NUMPY_DTYPES = {INT8: np.int8, INT16: np.int16, INT32: np.int32, INT64: np.int64,
                FLOAT32: np.float32}
# ±1 values (bool: True = +1), stored with the last axis packed 32 to a u32 word
# (docs/FORMAT.md, "Binary operators"; `piconn.xnor_ops`).
BITS = "bits"
NUMPY_DTYPES[BITS] = np.bool_

# Operator kinds, named as in TensorFlow Lite.
ADD = "ADD"
AVERAGE_POOL_2D = "AVERAGE_POOL_2D"
CONV_2D = "CONV_2D"
DEPTHWISE_CONV_2D = "DEPTHWISE_CONV_2D"
DEQUANTIZE = "DEQUANTIZE"
FULLY_CONNECTED = "FULLY_CONNECTED"
LOGISTIC = "LOGISTIC"
MAX_POOL_2D = "MAX_POOL_2D"
MEAN = "MEAN"
PAD = "PAD"
QUANTIZE = "QUANTIZE"
RESHAPE = "RESHAPE"
SOFTMAX = "SOFTMAX"
TANH = "TANH"
KINDS = (ADD, AVERAGE_POOL_2D, CONV_2D, DEPTHWISE_CONV_2D, DEQUANTIZE, FULLY_CONNECTED,
         LOGISTIC, MAX_POOL_2D, MEAN, PAD, QUANTIZE, RESHAPE, SOFTMAX, TANH)
# Binary (XNOR) operators of format version 2 (`piconn.xnor_ops`).
BINARIZE = "BINARIZE"
XNOR_CONV_2D = "XNOR_CONV_2D"
BINARY_MAX_POOL_2D = "BINARY_MAX_POOL_2D"
BINARIZE_CONV_2D = "BINARIZE_CONV_2D"  # int8 convolution -> bits (accumulator >= threshold)
KINDS += (BINARIZE, XNOR_CONV_2D, BINARY_MAX_POOL_2D, BINARIZE_CONV_2D)

# Padding of convolutions and pools; fused activations.
SAME = "same"
VALID = "valid"
ACT_NONE = "none"
ACT_RELU = "relu"
ACT_RELU6 = "relu6"
ACTIVATIONS = (ACT_NONE, ACT_RELU, ACT_RELU6)

NO_TENSOR = -1  # an optional operator input that is absent (a convolution without bias)
MAX_ELEMENTS = 2**31 - 1  # elements of one tensor (sizes and offsets are 32-bit)


class GraphError(ValueError):
    """A graph that breaks a rule; the message names the operator and its index."""


@dataclass
class Quant:
    """Affine quantization: real = scale * (q - zero_point).

    One scale and zero point per tensor, or one per index along `axis` (per channel).
    """

    scale: np.ndarray  # float32 [n]
    zero_point: np.ndarray  # int32 [n]
    axis: int = 0

    @property
    def per_channel(self) -> bool:
        return len(self.scale) > 1


@dataclass
class Tensor:
    name: str
    shape: tuple[int, ...]
    dtype: str
    quant: Quant | None = None
    data: np.ndarray | None = None  # constant tensors only, of `shape` and `dtype`

    @property
    def size(self) -> int:
        """Elements."""
        return int(np.prod(self.shape, dtype=np.int64))

    @property
    def nbytes(self) -> int:
        if self.dtype == BITS:  # whole u32 words per row of the last axis
            rows = int(np.prod(self.shape[:-1], dtype=np.int64))
            return 4 * rows * ((self.shape[-1] + 31) // 32) if self.shape else 4
        return self.size * np.dtype(NUMPY_DTYPES[self.dtype]).itemsize

    @property
    def is_constant(self) -> bool:
        return self.data is not None


@dataclass
class ConvOptions:
    """CONV_2D."""

    stride_h: int
    stride_w: int
    padding: str
    activation: str = ACT_NONE


@dataclass
class DepthwiseOptions:
    """DEPTHWISE_CONV_2D: output channel c reads input channel c // depth_multiplier."""

    stride_h: int
    stride_w: int
    padding: str
    depth_multiplier: int
    activation: str = ACT_NONE


@dataclass
class PoolOptions:
    """AVERAGE_POOL_2D and MAX_POOL_2D."""

    filter_h: int
    filter_w: int
    stride_h: int
    stride_w: int
    padding: str
    activation: str = ACT_NONE


@dataclass
class FullyConnectedOptions:
    activation: str = ACT_NONE
    keep_num_dims: bool = False


@dataclass
class AddOptions:
    activation: str = ACT_NONE


@dataclass
class SoftmaxOptions:
    beta: float = 1.0


@dataclass
class MeanOptions:
    """MEAN; the axes are the operator's second (constant) input."""

    keep_dims: bool = False


Options = (ConvOptions | DepthwiseOptions | PoolOptions | FullyConnectedOptions | AddOptions
           | SoftmaxOptions | MeanOptions | None)


@dataclass
class Operator:
    kind: str
    inputs: tuple[int, ...]
    outputs: tuple[int, ...]
    options: Options = None


@dataclass
class Graph:
    tensors: list[Tensor]
    operators: list[Operator]
    inputs: list[int]
    outputs: list[int]
    name: str = ""

    def error(self, index: int, message: str) -> GraphError:
        """A GraphError about operator `index`."""
        return GraphError(f"operator {index} ({self.operators[index].kind}): {message}")

    def check(self) -> None:
        """Structural rules; raises GraphError. Operator rules: int8_ops.prepare."""
        n = len(self.tensors)
        for t in self.tensors:
            if t.dtype not in NUMPY_DTYPES:
                raise GraphError(f"tensor {t.name!r}: unknown dtype {t.dtype!r}")
            if any(d < 0 for d in t.shape) or t.size > MAX_ELEMENTS:
                raise GraphError(f"tensor {t.name!r}: shape {list(t.shape)} has a negative"
                                 f" dimension or more than {MAX_ELEMENTS} elements")
            if t.data is not None and (t.data.shape != t.shape
                                       or t.data.dtype != NUMPY_DTYPES[t.dtype]):
                raise GraphError(f"tensor {t.name!r}: data {t.data.dtype}{list(t.data.shape)}"
                                 f" does not match {t.dtype}{list(t.shape)}")
        if not self.inputs or not self.outputs:
            raise GraphError("the graph needs at least one input and one output")
        for i in list(self.inputs) + list(self.outputs):
            if not 0 <= i < n:
                raise GraphError(f"graph input/output tensor {i} out of range (0..{n - 1})")
        ready = set(self.inputs) | {i for i, t in enumerate(self.tensors) if t.is_constant}
        for i in self.inputs:
            if self.tensors[i].is_constant:
                raise GraphError(f"graph input {self.tensors[i].name!r} is a constant")
        produced: set[int] = set()
        for k, op in enumerate(self.operators):
            if op.kind not in KINDS:
                raise self.error(k, "unknown operator kind")
            for i in op.inputs:
                if i == NO_TENSOR:
                    continue
                if not 0 <= i < n:
                    raise self.error(k, f"input tensor {i} out of range (0..{n - 1})")
                if i not in ready:
                    raise self.error(k, f"input {self.tensors[i].name!r} is not computed"
                                        " by an earlier operator")
            for i in op.outputs:
                if not 0 <= i < n:
                    raise self.error(k, f"output tensor {i} out of range (0..{n - 1})")
                t = self.tensors[i]
                if t.is_constant or i in self.inputs or i in produced:
                    raise self.error(k, f"output {t.name!r} is a constant, a graph input or"
                                        " the output of another operator")
                produced.add(i)
                ready.add(i)
        for i in self.outputs:
            if i not in ready:
                raise GraphError(f"graph output {self.tensors[i].name!r} is never computed")

    def activations(self) -> list[int]:
        """Indices of the tensors computed at run time (graph inputs and operator outputs)."""
        used = set(self.inputs) | set(self.outputs)
        for op in self.operators:
            used.update(i for i in op.inputs + op.outputs if i != NO_TENSOR)
        return sorted(i for i in used if not self.tensors[i].is_constant)

    def op_macs(self, index: int) -> int:
        """Multiply-accumulates of one operator (convolutions and fully connected)."""
        op = self.operators[index]
        if op.kind not in (CONV_2D, DEPTHWISE_CONV_2D, FULLY_CONNECTED, BINARIZE_CONV_2D):
            return 0
        out = self.tensors[op.outputs[0]]
        w = self.tensors[op.inputs[1]].shape
        if op.kind in (CONV_2D, BINARIZE_CONV_2D):  # w: [out_c, kh, kw, in_c]
            return out.size * w[1] * w[2] * w[3]
        if op.kind == DEPTHWISE_CONV_2D:  # w: [1, kh, kw, out_c]
            return out.size * w[1] * w[2]
        return out.size * w[-1]  # w: [out_c, in_depth]

    def macs(self) -> int:
        return sum(self.op_macs(k) for k in range(len(self.operators)))

    def constant_bytes(self) -> int:
        """Bytes of constant data (weights, biases, shapes)."""
        return sum(t.nbytes for t in self.tensors if t.is_constant)

    def summary(self) -> str:
        """One line per operator: kind, input and output shapes, MACs."""
        head = (f"{self.name or 'graph'}: {len(self.operators)} operators, "
                f"{self.macs():,} MACs, constants {self.constant_bytes():,} B")
        lines = [head]
        for k, op in enumerate(self.operators):
            ins = " ".join(_describe(self.tensors[i]) for i in op.inputs if i != NO_TENSOR)
            outs = " ".join(_describe(self.tensors[i]) for i in op.outputs)
            macs = self.op_macs(k)
            lines.append(f"  {k:3d} {op.kind:18s} {ins} -> {outs}"
                         + (f"  {macs:,} MACs" if macs else ""))
        return "\n".join(lines)


def _describe(t: Tensor) -> str:
    return ("c" if t.is_constant else "") + t.dtype + "[" + ",".join(map(str, t.shape)) + "]"


# --------------------------------------------------------------------------- memory plan


@dataclass
class Buffer:
    """One arena region: the tensors that share it (a RESHAPE chain), its lifetime."""

    tensors: list[int]
    size: int  # bytes, rounded up to the plan's alignment
    first: int  # index of the first operator that writes or reads it
    last: int  # index of the last operator that reads it (inclusive)
    offset: int = -1


@dataclass
class MemoryPlan:
    buffers: list[Buffer]
    arena_size: int
    align: int
    offsets: dict[int, int] = field(default_factory=dict)  # tensor index -> arena offset

    def overlapping_pairs(self) -> list[tuple[int, int]]:
        """Pairs of buffers alive at the same time whose bytes overlap (a correct plan has none)."""
        bad = []
        for a in range(len(self.buffers)):
            for b in range(a + 1, len(self.buffers)):
                x, y = self.buffers[a], self.buffers[b]
                live = x.first <= y.last and y.first <= x.last
                if live and x.offset < y.offset + y.size and y.offset < x.offset + x.size:
                    bad.append((a, b))
        return bad


def _round_up(n: int, align: int) -> int:
    return (n + align - 1) // align * align


def buffers(graph: Graph, align: int = 4) -> list[Buffer]:
    """Activation buffers with lifetimes; a RESHAPE output joins its input's buffer."""
    last_op = max(len(graph.operators) - 1, 0)
    group = {i: i for i in graph.activations()}  # tensor -> representative tensor

    def find(i: int) -> int:
        while group[i] != i:
            i = group[i]
        return i

    for op in graph.operators:
        if op.kind == RESHAPE:
            group[find(op.outputs[0])] = find(op.inputs[0])
    first: dict[int, int] = {}
    last: dict[int, int] = {}

    def touch(i: int, k: int) -> None:
        r = find(i)
        first[r] = min(first.get(r, k), k)
        last[r] = max(last.get(r, k), k)

    for i in graph.inputs:
        touch(i, 0)
    for k, op in enumerate(graph.operators):
        for i in op.inputs + op.outputs:
            if i != NO_TENSOR and not graph.tensors[i].is_constant:
                touch(i, k)
    for i in graph.outputs:
        touch(i, last_op)
    members: dict[int, list[int]] = {}
    for i in group:
        members.setdefault(find(i), []).append(i)
    return [Buffer(tensors=sorted(m),
                   size=_round_up(max(graph.tensors[i].nbytes for i in m), align),
                   first=first[r], last=last[r])
            for r, m in sorted(members.items())]


def plan_memory(graph: Graph, align: int = 4) -> MemoryPlan:
    """Arena offsets: largest buffer first, each at the lowest offset that fits beside the
    already placed buffers whose lifetimes overlap its own (first fit by offset)."""
    bufs = buffers(graph, align)
    order = sorted(range(len(bufs)), key=lambda b: -bufs[b].size)  # stable: ties by index
    placed: list[Buffer] = []
    for b in order:
        want = bufs[b]
        live = sorted((p for p in placed if p.first <= want.last and want.first <= p.last),
                      key=lambda p: p.offset)
        offset = 0
        for p in live:
            if offset + want.size <= p.offset:
                break
            offset = max(offset, p.offset + p.size)
        want.offset = offset
        placed.append(want)
    arena = max((b.offset + b.size for b in bufs), default=0)
    offsets = {i: b.offset for b in bufs for i in b.tensors}
    return MemoryPlan(bufs, arena, align, offsets)
