# nn._graph_format: the structure of a format version 2 model (docs/FORMAT.md
# "Version 2": int8 graphs): header, tensor and operator records, the graph's rules
# (every input computed before it is read, one writer per tensor) and the memory plan.
#
# read(buf) checks everything but the numbers the quantization determines (those are
# nn._graph_prepare's) and returns a Graph of plain tuples read with the named indices
# below. Every refusal is a ValueError naming what is wrong; the same files are refused
# as by the host reader (piconn.format2.from_bytes).
import struct

from micropython import const

from nn._format import crc32

MAGIC = b"PCNN"
VERSION = const(2)
HEADER_SIZE = const(64)
TENSOR_RECORD_SIZE = const(40)
OPERATOR_RECORD_SIZE = const(80)
MAX_TENSORS = const(1024)
MAX_OPERATORS = const(1024)
MAX_GRAPH_IO = const(4)
MAX_OP_INPUTS = const(3)
MAX_RANK = const(4)
N_PARAMS = const(16)
NO_INDEX = const(0xFFFF)
MAX_ELEMENTS = const(0x7FFFFFFF)

_HEADER = "<HHIIHHHHIIIIBBH4H4HI"  # from offset 4 (after the magic)
_TENSOR = "<BBBB4HIIIiIHHI"  # the scale as its f32 bits
_OPERATOR = "<BBH3HHI16i"

# dtypes (FORMAT.md): code -> element bytes
F32 = const(1)
BITS = const(2)  # packed along the last axis (FORMAT.md "Binary operators")
I32 = const(3)
I8 = const(4)
DTYPE_NAMES = {F32: "f32", BITS: "bits", I32: "i32", I8: "i8"}
_ITEM = {F32: 4, BITS: 0, I32: 4, I8: 1}

STORAGE_ARENA = const(0)
STORAGE_CONSTANT = const(1)
QUANT_NONE = const(0)
QUANT_TENSOR = const(1)
QUANT_CHANNEL = const(2)

# Operator kinds (FORMAT.md's codes)
CONV_2D = const(1)
DEPTHWISE_CONV_2D = const(2)
FULLY_CONNECTED = const(3)
AVERAGE_POOL_2D = const(4)
MAX_POOL_2D = const(5)
ADD = const(6)
RESHAPE = const(7)
SOFTMAX = const(8)
PAD = const(9)
MEAN = const(10)
LOGISTIC = const(11)
TANH = const(12)
QUANTIZE = const(13)
DEQUANTIZE = const(14)
# binary operators (FORMAT.md "Binary operators"); codes 15..19 are unused
BINARIZE = const(20)
XNOR_CONV_2D = const(21)
BINARY_MAX_POOL_2D = const(22)
BINARIZE_CONV_2D = const(23)
KIND_NAMES = ("", "CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "AVERAGE_POOL_2D",
              "MAX_POOL_2D", "ADD", "RESHAPE", "SOFTMAX", "PAD", "MEAN", "LOGISTIC", "TANH",
              "QUANTIZE", "DEQUANTIZE", "", "", "", "", "", "BINARIZE", "XNOR_CONV_2D",
              "BINARY_MAX_POOL_2D", "BINARIZE_CONV_2D")
# the number of named params of each kind (the rest of the 16 must be 0)
N_NAMED = (0, 11, 11, 6, 10, 10, 13, 0, 4, 1, 5, 4, 4, 5, 2, 0, 0, 0, 0, 0, 0, 5, 7, 6)

# Params by name: the index of each in the record's i32[16] (FORMAT.md's order)
P_PADDING = const(0)  # CONV_2D, DEPTHWISE_CONV_2D, pools
P_ACTIVATION = const(1)
P_CONV_STRIDE_H = const(2)
P_CONV_STRIDE_W = const(3)
P_CONV_PAD_TOP = const(4)
P_CONV_PAD_LEFT = const(5)
P_DEPTH_MULTIPLIER = const(6)
P_CONV_INPUT_ZERO = const(7)
P_CONV_OUTPUT_ZERO = const(8)
P_CONV_ACT_MIN = const(9)
P_CONV_ACT_MAX = const(10)
P_FC_ACTIVATION = const(0)
P_FC_KEEP_NUM_DIMS = const(1)
P_FC_INPUT_ZERO = const(2)
P_FC_OUTPUT_ZERO = const(3)
P_FC_ACT_MIN = const(4)
P_FC_ACT_MAX = const(5)
P_POOL_FILTER_H = const(2)
P_POOL_FILTER_W = const(3)
P_POOL_STRIDE_H = const(4)
P_POOL_STRIDE_W = const(5)
P_POOL_PAD_TOP = const(6)
P_POOL_PAD_LEFT = const(7)
P_POOL_ACT_MIN = const(8)
P_POOL_ACT_MAX = const(9)
P_ADD_ACTIVATION = const(0)
P_ADD_INPUT1_OFFSET = const(1)
P_ADD_INPUT2_OFFSET = const(2)
P_ADD_LEFT_SHIFT = const(3)
P_ADD_INPUT1_MULTIPLIER = const(4)
P_ADD_INPUT1_SHIFT = const(5)
P_ADD_INPUT2_MULTIPLIER = const(6)
P_ADD_INPUT2_SHIFT = const(7)
P_ADD_OUTPUT_MULTIPLIER = const(8)
P_ADD_OUTPUT_SHIFT = const(9)
P_ADD_OUTPUT_ZERO = const(10)
P_ADD_ACT_MIN = const(11)
P_ADD_ACT_MAX = const(12)
P_SOFTMAX_BETA = const(0)
P_SOFTMAX_INPUT_MULTIPLIER = const(1)
P_SOFTMAX_INPUT_LEFT_SHIFT = const(2)
P_SOFTMAX_DIFF_MIN = const(3)
P_PAD_VALUE = const(0)
P_MEAN_KEEP_DIMS = const(0)
P_MEAN_INPUT_ZERO_TIMES_COUNT = const(1)
P_MEAN_MULTIPLIER = const(2)
P_MEAN_SHIFT = const(3)
P_MEAN_OUTPUT_ZERO = const(4)
P_SIGMOID_INPUT_ZERO = const(0)
P_SIGMOID_INPUT_RANGE_RADIUS = const(1)
P_SIGMOID_INPUT_MULTIPLIER = const(2)
P_SIGMOID_INPUT_LEFT_SHIFT = const(3)
P_QUANTIZE_OUTPUT_ZERO = const(0)
P_QUANTIZE_SCALE = const(1)
P_QUANTIZE_INPUT_ZERO = const(2)
P_QUANTIZE_MULTIPLIER = const(3)
P_QUANTIZE_SHIFT = const(4)
P_DEQUANTIZE_INPUT_ZERO = const(0)
P_DEQUANTIZE_SCALE = const(1)
P_XNOR_PADDING = const(0)  # XNOR_CONV_2D
P_XNOR_STRIDE_H = const(1)
P_XNOR_STRIDE_W = const(2)
P_XNOR_PAD_TOP = const(3)
P_XNOR_PAD_LEFT = const(4)
P_BPOOL_PADDING = const(0)  # BINARY_MAX_POOL_2D
P_BPOOL_FILTER_H = const(1)
P_BPOOL_FILTER_W = const(2)
P_BPOOL_STRIDE_H = const(3)
P_BPOOL_STRIDE_W = const(4)
P_BPOOL_PAD_TOP = const(5)
P_BPOOL_PAD_LEFT = const(6)
P_BCONV_PADDING = const(0)  # BINARIZE_CONV_2D
P_BCONV_STRIDE_H = const(1)
P_BCONV_STRIDE_W = const(2)
P_BCONV_PAD_TOP = const(3)
P_BCONV_PAD_LEFT = const(4)
P_BCONV_INPUT_ZERO = const(5)

PADDING_SAME = const(0)
PADDING_VALID = const(1)
ACT_NONE = const(0)
ACT_RELU = const(1)
ACT_RELU6 = const(2)

# A tensor: a tuple read with these indices
T_DTYPE = const(0)
T_STORAGE = const(1)
T_SHAPE = const(2)  # a tuple of `rank` dims
T_OFFSET = const(3)  # arena offset (storage 0) or file offset (storage 1)
T_NBYTES = const(4)
T_SIZE = const(5)  # elements
T_QUANT = const(6)  # QUANT_* code
T_SCALES = const(7)  # f32 bits of the scale(s): one per tensor, `channels` per channel
T_ZERO = const(8)  # zero point (quant 1), else 0
T_AXIS = const(9)  # the quantized dimension (quant 2)

# An operator: a tuple read with these indices
O_KIND = const(0)
O_INPUTS = const(1)  # tensor indices (NO_INDEX for an absent optional input)
O_OUTPUT = const(2)
O_TABLE = const(3)
O_PARAMS = const(4)  # the 16 i32 params

# The graph: a tuple read with these indices
G_TENSORS = const(0)
G_OPS = const(1)
G_INPUTS = const(2)
G_OUTPUTS = const(3)
G_ARENA = const(4)
G_DATA = const(5)


def version(buf):
    """The version field of a piconn model buffer (0 if it is not one)."""
    if len(buf) < 6 or bytes(buf[0:4]) != MAGIC:
        return 0
    return buf[4] | buf[5] << 8


def read(buf):
    """Check the header, the records and the graph's structure; returns the graph."""
    n = len(buf)
    if n < HEADER_SIZE:
        raise ValueError("model too short: %d bytes, the header alone is %d" % (n, HEADER_SIZE))
    if bytes(buf[0:4]) != MAGIC:
        raise ValueError("not a piconn model: magic %r, expected %r" % (bytes(buf[0:4]), MAGIC))
    (ver, hsize, total, crc, n_t, n_o, t_size, o_size, t_table, o_table, data, arena, n_in,
     n_out, reserved, *rest) = struct.unpack_from(_HEADER, buf, 4)
    if ver != VERSION:
        raise ValueError("model format version %d; this reader reads version %d"
                         % (ver, VERSION))
    if hsize != HEADER_SIZE or t_size != TENSOR_RECORD_SIZE or o_size != OPERATOR_RECORD_SIZE:
        raise ValueError("header/record sizes %d/%d/%d, version 2's are %d/%d/%d"
                         % (hsize, t_size, o_size, HEADER_SIZE, TENSOR_RECORD_SIZE,
                            OPERATOR_RECORD_SIZE))
    if total != n:
        raise ValueError("model says %d bytes but the buffer has %d" % (total, n))
    if crc32(buf[16:]) & 0xFFFFFFFF != crc:
        raise ValueError("model CRC mismatch: the bytes are corrupt")
    if not (1 <= n_t <= MAX_TENSORS and 1 <= n_o <= MAX_OPERATORS):
        raise ValueError("%d tensors, %d operators: outside 1..%d" % (n_t, n_o, MAX_TENSORS))
    if (t_table != HEADER_SIZE or o_table != t_table + t_size * n_t
            or data != o_table + o_size * n_o or data > total):
        raise ValueError("the tables are not where the header says they must be")
    if not (1 <= n_in <= MAX_GRAPH_IO and 1 <= n_out <= MAX_GRAPH_IO) or reserved or rest[8]:
        raise ValueError("graph inputs/outputs: counts outside 1..%d or reserved fields set"
                         % MAX_GRAPH_IO)
    inputs = _indices(rest[0:4], n_in, n_t, "graph input")
    outputs = _indices(rest[4:8], n_out, n_t, "graph output")
    tensors = [_tensor(buf, t_table + t_size * i, i, data, arena) for i in range(n_t)]
    ops = [_operator(buf, o_table + o_size * k, k, n_t) for k in range(n_o)]
    g = (tensors, ops, inputs, outputs, arena, data)
    _check_structure(g)
    return g


def _indices(values, n, n_tensors, what):
    for i in range(MAX_GRAPH_IO):
        v = values[i]
        if (v >= n_tensors) if i < n else (v != NO_INDEX):
            raise ValueError("%s index out of range" % what)
    return tuple(values[0:n])


def _tensor(buf, at, i, data, arena):
    (dt, rank, storage, quant, d0, d1, d2, d3, offset, nbytes, scale, zero, scales, channels,
     axis, reserved) = struct.unpack_from(_TENSOR, buf, at)
    dims = (d0, d1, d2, d3)
    if dt not in _ITEM or rank > MAX_RANK or storage > STORAGE_CONSTANT or quant > QUANT_CHANNEL \
            or reserved:
        raise ValueError("tensor %d: unknown dtype, storage or quantization, or rank > %d"
                         % (i, MAX_RANK))
    for r in range(rank, MAX_RANK):
        if dims[r] != 1:
            raise ValueError("tensor %d: dims past the rank must be 1" % i)
    shape = dims[0:rank]
    size = 1
    for d in shape:
        size *= d
    if dt == BITS:
        if not rank or quant:
            raise ValueError("tensor %d: a bits tensor has rank 1..4 and no quantization" % i)
        rows = 1
        for d in shape[0:rank - 1]:
            rows *= d
        if nbytes != rows * 4 * ((shape[rank - 1] + 31) >> 5) or offset & 3:
            raise ValueError("tensor %d: nbytes does not match its packed shape, or a "
                             "misaligned offset" % i)
    elif nbytes != size * _ITEM[dt] or offset & 3:
        raise ValueError("tensor %d: nbytes does not match its shape, or a misaligned offset" % i)
    if storage == STORAGE_CONSTANT:
        if offset < data or offset + nbytes > len(buf):
            raise ValueError("tensor %d: constant data outside the data area" % i)
    elif offset + nbytes > arena:
        raise ValueError("tensor %d: arena offset %d + %d bytes past the arena %d"
                         % (i, offset, nbytes, arena))
    if quant == QUANT_TENSOR:
        if not _positive_f32(scale) or scales or channels or axis:
            raise ValueError("tensor %d: per-tensor quantization needs a finite positive scale"
                             % i)
        q = (scale,)  # type: tuple
    elif quant == QUANT_CHANNEL:
        if (axis >= rank or channels != shape[axis] or scales & 3 or scales < data
                or scales + 4 * channels > len(buf) or zero or scale & 0x7FFFFFFF):
            raise ValueError("tensor %d: per-channel quantization fields out of range" % i)
        q = struct.unpack_from("<%dI" % channels, buf, scales)
        for s in q:
            if not _positive_f32(s):
                raise ValueError("tensor %d: per-channel scales must be finite and positive"
                                 % i)
    else:
        if scale & 0x7FFFFFFF or zero or scales or channels or axis:
            raise ValueError("tensor %d: quantization fields set without quantization" % i)
        q = ()
    if size > MAX_ELEMENTS:
        raise ValueError("tensor %d: more than %d elements" % (i, MAX_ELEMENTS))
    return (dt, storage, shape, offset, nbytes, size, quant, q, zero, axis)


def _positive_f32(bits):
    # a finite f32 above zero (sign clear, exponent not all ones, not +0)
    return bits < 0x7F800000 and bits != 0


def _operator(buf, at, k, n_tensors):
    kind, n_in, reserved, i0, i1, i2, out, table, *params = struct.unpack_from(
        _OPERATOR, buf, at)
    if not 1 <= kind < len(KIND_NAMES) or not KIND_NAMES[kind] or not 1 <= n_in <= MAX_OP_INPUTS \
            or reserved:
        raise ValueError("operator %d: unknown kind %d or input count %d" % (k, kind, n_in))
    ins = (i0, i1, i2)
    for j in range(MAX_OP_INPUTS):
        v = ins[j]
        if (v >= n_tensors and v != NO_INDEX) if j < n_in else (v != NO_INDEX):
            raise ValueError("operator %d (%s): tensor index out of range" % (k, KIND_NAMES[kind]))
    if out >= n_tensors:
        raise ValueError("operator %d (%s): tensor index out of range" % (k, KIND_NAMES[kind]))
    for j in range(N_NAMED[kind], N_PARAMS):
        if params[j]:
            raise ValueError("operator %d (%s): unused params must be 0" % (k, KIND_NAMES[kind]))
    if kind <= MAX_POOL_2D and kind != FULLY_CONNECTED or kind >= XNOR_CONV_2D:
        # (P_XNOR_PADDING, P_BPOOL_PADDING, P_BCONV_PADDING are 0 too)
        if params[P_PADDING] != PADDING_SAME and params[P_PADDING] != PADDING_VALID:
            raise ValueError("operator %d (%s): unknown padding code" % (k, KIND_NAMES[kind]))
    act = None
    if kind <= MAX_POOL_2D:
        act = params[P_FC_ACTIVATION if kind == FULLY_CONNECTED else P_ACTIVATION]
    elif kind == ADD:
        act = params[P_ADD_ACTIVATION]
    if act is not None and not ACT_NONE <= act <= ACT_RELU6:
        raise ValueError("operator %d (%s): unknown activation code" % (k, KIND_NAMES[kind]))
    return (kind, ins[0:n_in], out, table, tuple(params))


def error(g, k, message):
    """A ValueError about operator k."""
    return ValueError("operator %d (%s): %s" % (k, KIND_NAMES[g[G_OPS][k][O_KIND]], message))


def _check_structure(g):
    # graph.check of the host: inputs computed before they are read, one writer each
    tensors = g[G_TENSORS]
    ready = bytearray(len(tensors))  # 1: a graph input, a constant or computed
    produced = bytearray(len(tensors))
    for i in range(len(tensors)):
        if tensors[i][T_STORAGE] == STORAGE_CONSTANT:
            ready[i] = 1
    for i in g[G_INPUTS]:
        if tensors[i][T_STORAGE] == STORAGE_CONSTANT:
            raise ValueError("graph input tensor %d is a constant" % i)
        ready[i] = 1
    for k in range(len(g[G_OPS])):
        op = g[G_OPS][k]
        for i in op[O_INPUTS]:
            if i != NO_INDEX and not ready[i]:
                raise error(g, k, "input tensor %d is not computed by an earlier operator" % i)
        i = op[O_OUTPUT]
        if tensors[i][T_STORAGE] == STORAGE_CONSTANT or i in g[G_INPUTS] or produced[i]:
            raise error(g, k, "output tensor %d is a constant, a graph input or the output of"
                              " another operator" % i)
        produced[i] = 1
        ready[i] = 1
    for i in g[G_OUTPUTS]:
        if not ready[i]:
            raise ValueError("graph output tensor %d is never computed" % i)


# ------------------------------------------------------------------ memory plan


def buffers(g):
    """The arena regions: [(offset, bytes, first op, last op, tensors)], a RESHAPE's
    output in its input's region; ValueError where the plan breaks FORMAT.md's rules."""
    tensors, ops = g[G_TENSORS], g[G_OPS]
    group = {}  # activation -> representative
    for i in _activations(g):
        group[i] = i

    def find(i):
        if i not in group:
            raise ValueError("a RESHAPE of a constant: its output has no arena region of its own")
        while group[i] != i:
            i = group[i]
        return i

    for op in ops:
        if op[O_KIND] == RESHAPE:
            group[find(op[O_OUTPUT])] = find(op[O_INPUTS][0])
    first = {}  # type: dict
    last = {}  # type: dict

    def touch(i, k):
        r = find(i)
        if r not in first or k < first[r]:
            first[r] = k
        if r not in last or k > last[r]:
            last[r] = k

    for i in g[G_INPUTS]:
        touch(i, 0)
    for k in range(len(ops)):
        op = ops[k]
        for i in op[O_INPUTS] + (op[O_OUTPUT],):
            if i != NO_INDEX and tensors[i][T_STORAGE] == STORAGE_ARENA:
                touch(i, k)
    for i in g[G_OUTPUTS]:
        touch(i, max(len(ops) - 1, 0))
    members = {}  # type: dict
    for i in group:
        r = find(i)
        if r in members:
            members[r].append(i)
        else:
            members[r] = [i]
    out = []
    for r in sorted(members):
        m = members[r]
        at = tensors[m[0]][T_OFFSET]
        size = 0
        for i in m:
            if tensors[i][T_OFFSET] != at:
                raise ValueError("a RESHAPE output must have its input's arena offset")
            if tensors[i][T_NBYTES] > size:
                size = tensors[i][T_NBYTES]
        out.append((at, size, first[r], last[r], m))
    return out


def _activations(g):
    tensors = g[G_TENSORS]
    used = set(g[G_INPUTS]) | set(g[G_OUTPUTS])
    for op in g[G_OPS]:
        for i in op[O_INPUTS]:
            if i != NO_INDEX:
                used.add(i)
        used.add(op[O_OUTPUT])
    return sorted(i for i in used if tensors[i][T_STORAGE] == STORAGE_ARENA)


def check_plan(g):
    """No two activations alive during the same operator share a byte (RESHAPE pairs
    share theirs) and arena_size is the plan's extent; returns the buffers (buffers())."""
    spans = buffers(g)
    n = len(spans)
    for a in range(n):
        oa, sa, fa, la, ta = spans[a]
        for c in range(a + 1, n):
            oc, sc, fc, lc, tc = spans[c]
            if fa <= lc and fc <= la and oa < oc + sc and oc < oa + sa:
                raise ValueError("memory plan: tensors %d and %d are alive together and overlap"
                                 " in the arena" % (ta[0], tc[0]))
    extent = 0
    for s in spans:
        extent = max(extent, s[0] + ((s[1] + 3) & ~3))
    if g[G_ARENA] != extent:
        raise ValueError("memory plan: arena_size %d, the plan's extent (its regions rounded up"
                         " to 4 bytes) is %d" % (g[G_ARENA], extent))
    return spans
