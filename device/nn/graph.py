# nn.graph: run format version 2 models (docs/FORMAT.md "Version 2": int8 graphs of
# TensorFlow Lite models). nn.load() hands a version 2 buffer to Model.
#
# Load reads and checks the header, the tensor and operator tables, every stored
# param and table and the memory plan once (nn._graph_format, nn._graph_prepare), then
# allocates one arena of the model's arena_size bytes; weights and tables stay where
# the model is (flash, ROMFS, bytes). forward() copies the input into the arena, runs
# the operators in order and copies the output out; for int8 inputs and outputs it
# allocates nothing. Each operator runs in the fastest tier present that has it: the C
# module's graph_run (several operators in one call), nn._int8_viper, nn._int8_python.
# On the C tier a graph of one int8 input and one output is checked once at load
# (_nn_c.graph_prepare): forward is then one C call (input copy, operators, output copy).
import struct
from array import array

from micropython import const

from nn import _graph_format as F
from nn import _graph_prepare as P
from nn import _int8_python as K
from nn import _xnor_python as _XP
from nn import model as _model
from nn._tiers import C_MODULE as _nn_c
from nn._tiers import TIERS as _TIERS

_TYPING = False  # True for type checkers only (mypy --always-true=_TYPING)
if _TYPING:
    from typing import Any

_viper = None  # type: Any
if any(t[0] == "viper" for t in _TIERS):
    try:
        from nn import _int8_viper as _viper
    except ImportError:  # pragma: no cover - not installed
        _viper = None
_xviper = None  # type: Any
if _viper is not None:
    try:
        from nn import _xnor_viper as _xviper
    except ImportError:  # pragma: no cover - not installed
        _xviper = None
_graph_run = getattr(_nn_c, "graph_run", None) if _nn_c is not None else None  # type: Any
_graph_prepare = getattr(_nn_c, "graph_prepare", None) if _nn_c is not None else None  # type: Any

# Python kernel per operator kind (the viper tier has some of the same names)
_KERNELS = ("", "conv_2d", "conv_2d", "fully_connected", "pool", "pool", "add", "nothing",
            "softmax", "pad", "mean", "lut8", "lut8", "lut8", "dequantize", "", "", "", "",
            "", "binarize", "xnor_conv_2d", "binary_max_pool_2d",
            "binarize_conv_2d")  # binary: nn._xnor_*
_QUANTIZE_F32 = "quantize_f32"
_C_TIER = const(0)  # the C module's index in nn's tiers (nn.model._cur), the fastest

_DTYPE_CODES = {F.I8: "b", F.F32: "f", F.I32: "i"}  # OpenMV's ml dtype letters (array typecodes)

# per operator, a tuple read with these indices
_OP_KIND = const(0)
_OP_KERNEL = const(1)  # the kernel's name
_OP_ARGS = const(2)  # its argument tuple
_OP_MACS = const(3)
_OP_LIVE = const(4)  # bytes of activations alive during the operator
_OP_OUT_SHAPE = const(5)
_OP_SCRATCH = const(6)  # int32 scratch the viper kernel needs

_SB0 = array("b")  # probes for element types without allocation (_check_bytes)


def _f32_value(bits):
    return struct.unpack("<f", struct.pack("<I", bits))[0]


def _check_bytes(x, n, what):
    # TypeError/ValueError unless x holds n int8 values: bytes, bytearray (raw two's
    # complement), array('b') or a memoryview of bytes; allocation-free when it does
    t = type(x)
    if t is not bytes and t is not bytearray:
        if t is not array and t is not memoryview:
            raise TypeError("%s takes %d int8 values (bytes, bytearray or array('b')), not %s"
                            % (what, n, t.__name__))
        try:
            _SB0 < x  # compares only with unsigned byte elements
            unsigned = True
        except NotImplementedError:
            unsigned = False
        if unsigned and t is array:
            raise TypeError("%s takes %d int8 values; the array('B') holds unsigned bytes "
                            "(use array('b'), or bytes for raw two's complement)" % (what, n))
        if not unsigned:
            try:
                _SB0 == x  # compares only with byte-sized elements
            except NotImplementedError:
                raise TypeError("%s takes %d int8 values; the %s holds wider elements"
                                % (what, n, t.__name__))
    if len(x) != n:
        raise ValueError("%s takes %d int8 values, got %d" % (what, n, len(x)))


def _check_floats(x, n, what):
    # array('f') (or a memoryview of one) of n finite floats; reads floats (allocates)
    t = type(x)
    if (t is not array and t is not memoryview) or (len(x) and (
            type(x[0]) is not float or len(bytes(x[0:1])) != 4)):
        raise TypeError("%s takes array('f') of %d floats, not %s" % (what, n, t.__name__))
    if len(x) != n:
        raise ValueError("%s takes %d floats, got %d" % (what, n, len(x)))
    for v in x:
        if v != v or v - v != 0:
            raise ValueError("%s holds NaN or infinity" % what)


class Model:
    """A validated version 2 model, ready to run. Create it with nn.load().

    The names of OpenMV's ml.Model, a list entry per graph input or output:
    input_shape (tuples, NHWC), input_dtype ('b' int8, 'f' float32), input_scale and
    input_zero_point (real = scale * (q - zero_point); 0.0 and 0 for float32), and the
    same for the outputs. arena_size: bytes of RAM for the activations; model_bytes;
    where: 'flash', 'romfs', 'file' (read into RAM), 'in place'.
    """

    def __init__(self, buf, owner=None, name=None, where=None):
        self._owner = owner  # keeps the bytes (or the ROMFS file) alive
        self.name = name
        base = _model._address(buf)
        in_flash = base is not None and _model._is_flash(base)
        if _model._writable(buf) and not in_flash:
            raise TypeError("nn.load needs a read-only model buffer (bytes, frozen bytes, a "
                            "file): a %s could change after it is checked; pass bytes(buf)"
                            % type(buf).__name__)
        g = F.read(buf)
        P.check(buf, g, _viper.weight_sums if _viper is not None else P.weight_sums)
        spans = F.check_plan(g)
        self._buf = buf
        self.model_bytes = len(buf)
        self.in_flash = in_flash
        self.where = where or ("flash" if self.in_flash else "in place")
        # graph_run reads words in place: only from a word-aligned model
        self._c_ok = _graph_run is not None and (base is None or base & 3 == 0)
        self._words_ok = base is None or base & 3 == 0  # so do the binary viper kernels
        self.arena_size = g[F.G_ARENA]
        self._arena = bytearray(self.arena_size)
        self.n_operators = len(g[F.G_OPS])
        self.n_tensors = len(g[F.G_TENSORS])
        self._ops = tuple(self._operator(g, k, spans) for k in range(self.n_operators))
        if _viper is not None:
            _viper.reserve(max(op[_OP_SCRATCH] for op in self._ops))
        self._io(g)
        self._tier = None  # the backend the steps were made for
        self._steps = ()  # type: tuple
        self._prepare_steps()  # (again after nn.use_backend: the next forward allocates)
        self._run = self._prepared()  # forward's C path, checked once here

    def _prepared(self):
        # the C module's prepared graph (checked once; a call copies the input in, runs
        # every operator and copies the output out) for one int8 input and one output;
        # None where graph_run runs it instead: no such module, an unaligned model, a
        # writable model buffer the module cannot prove stays unchanged (graph_run then
        # checks the records on every call), records it refuses (forward says why)
        if not self._c_ok or _graph_prepare is None or len(self._in) != 1 \
                or len(self._out) != 1 or self._in[0][3]:
            return None
        try:
            return _graph_prepare(self._buf, self._arena, self._outs[0])
        except (TypeError, ValueError):
            return None

    # ------------------------------------------------------------ building

    def _loc(self, t):
        # (buffer, byte offset) of a tensor
        return (self._buf if t[F.T_STORAGE] == F.STORAGE_CONSTANT else self._arena), \
            t[F.T_OFFSET]

    def _operator(self, g, k, spans):
        op = g[F.G_OPS][k]
        kind, p = op[F.O_KIND], op[F.O_PARAMS]
        ts = g[F.G_TENSORS]
        ins = [ts[i] if i != F.NO_INDEX else None for i in op[F.O_INPUTS]]  # type: list
        x, y = ins[0], ts[op[F.O_OUTPUT]]
        xb, xo = self._loc(x)
        yb, yo = self._loc(y)
        tb, to = self._buf, op[F.O_TABLE]
        kernel, macs, scratch = _KERNELS[kind], 0, 0
        args = ()  # type: tuple
        if kind < F.QUANTIZE and y[F.T_DTYPE] == F.F32:  # a float32 operator
            from nn import _float_python as _FP

            kernel, args, macs = _FP.operator(self, g, k)
        elif kind == F.CONV_2D or kind == F.DEPTHWISE_CONV_2D:
            w = ins[1]
            bb, bo = self._loc(ins[2]) if len(ins) > 2 and ins[2] is not None else (None, 0)
            n, h, wd, cin = x[F.T_SHAPE]
            _, kh, kw, _ = w[F.T_SHAPE]
            _, oh, ow, cout = y[F.T_SHAPE]
            depthwise = kind == F.DEPTHWISE_CONV_2D
            macs, scratch = y[F.T_SIZE] * kh * kw * (1 if depthwise else cin), cout
            args = (xb, xo, n, h, wd, cin, self._buf, w[F.T_OFFSET], kh, kw, bb, bo, tb, to,
                    yb, yo, oh, ow, cout, p[F.P_CONV_STRIDE_H], p[F.P_CONV_STRIDE_W],
                    p[F.P_CONV_PAD_TOP], p[F.P_CONV_PAD_LEFT], p[F.P_CONV_INPUT_ZERO],
                    p[F.P_CONV_OUTPUT_ZERO], p[F.P_CONV_ACT_MIN], p[F.P_CONV_ACT_MAX],
                    p[F.P_DEPTH_MULTIPLIER], depthwise)
        elif kind == F.FULLY_CONNECTED:
            w = ins[1]
            bb, bo = self._loc(ins[2]) if len(ins) > 2 and ins[2] is not None else (None, 0)
            cout, depth = w[F.T_SHAPE]
            macs, scratch = y[F.T_SIZE] * depth, cout
            args = (xb, xo, y[F.T_SIZE] // cout, depth, self._buf, w[F.T_OFFSET], bb, bo, tb,
                    to, yb, yo, cout, p[F.P_FC_INPUT_ZERO], p[F.P_FC_OUTPUT_ZERO],
                    p[F.P_FC_ACT_MIN], p[F.P_FC_ACT_MAX])
        elif kind == F.AVERAGE_POOL_2D or kind == F.MAX_POOL_2D:
            n, h, wd, c = x[F.T_SHAPE]
            args = (xb, xo, n, h, wd, c, yb, yo, y[F.T_SHAPE][1], y[F.T_SHAPE][2],
                    p[F.P_POOL_FILTER_H], p[F.P_POOL_FILTER_W], p[F.P_POOL_STRIDE_H],
                    p[F.P_POOL_STRIDE_W], p[F.P_POOL_PAD_TOP], p[F.P_POOL_PAD_LEFT],
                    p[F.P_POOL_ACT_MIN], p[F.P_POOL_ACT_MAX], kind == F.AVERAGE_POOL_2D)
        elif kind == F.ADD:
            bb, bo = self._loc(ins[1])
            dims = _four(y[F.T_SHAPE])
            scratch = 512 + dims[3]  # the two inputs' tables, a row
            args = (xb, xo, bb, bo, yb, yo, dims, _strides(x[F.T_SHAPE]),
                    _strides(ins[1][F.T_SHAPE])) + tuple(p[F.P_ADD_INPUT1_OFFSET:F.P_ADD_ACT_MAX + 1]) \
                + _halves(p[F.P_ADD_INPUT1_MULTIPLIER]) + _halves(p[F.P_ADD_INPUT2_MULTIPLIER]) \
                + _halves(p[F.P_ADD_OUTPUT_MULTIPLIER])
        elif kind == F.SOFTMAX:
            depth = x[F.T_SHAPE][-1]
            args = (xb, xo, yb, yo, x[F.T_SIZE] // depth if depth else 0, depth, tb, to)
        elif kind == F.PAD:
            pads = struct.unpack_from("<%di" % (2 * len(x[F.T_SHAPE])), self._buf,
                                      ins[1][F.T_OFFSET])
            before = (0,) * (4 - len(x[F.T_SHAPE])) + tuple(
                pads[2 * i] for i in range(len(x[F.T_SHAPE])))
            args = (xb, xo, yb, yo, _four(x[F.T_SHAPE]), _four(y[F.T_SHAPE]), before,
                    p[F.P_PAD_VALUE])
        elif kind == F.MEAN:
            n, h, wd, c = x[F.T_SHAPE]
            args = (xb, xo, n, h, wd, c, yb, yo, p[F.P_MEAN_INPUT_ZERO_TIMES_COUNT],
                    p[F.P_MEAN_MULTIPLIER], p[F.P_MEAN_SHIFT], p[F.P_MEAN_OUTPUT_ZERO]) \
                + _halves(p[F.P_MEAN_MULTIPLIER])
        elif kind == F.QUANTIZE and x[F.T_DTYPE] == F.F32:
            kernel = _QUANTIZE_F32
            args = (xb, xo, yb, yo, y[F.T_SIZE], p[F.P_QUANTIZE_SCALE], p[F.P_QUANTIZE_OUTPUT_ZERO])
        elif kind == F.RESHAPE:
            args = ()
        elif kind == F.BINARIZE:
            c = x[F.T_SHAPE][-1]
            args = (xb, xo, yb, yo, x[F.T_SIZE] // c, c) + self._loc(ins[1])
        elif kind == F.XNOR_CONV_2D:
            n, h, wd, cin = x[F.T_SHAPE]
            _, kh, kw, _ = ins[1][F.T_SHAPE]
            _, oh, ow, cout = y[F.T_SHAPE]
            macs = y[F.T_SIZE] * kh * kw * cin  # binary multiply-adds (32 per word XOR)
            args = (xb, xo, n, h, wd, ((cin + 31) >> 5) << 2, self._buf, ins[1][F.T_OFFSET],
                    kh, kw) + self._loc(ins[2]) + (
                yb, yo, oh, ow, cout, p[F.P_XNOR_STRIDE_H], p[F.P_XNOR_STRIDE_W],
                p[F.P_XNOR_PAD_TOP], p[F.P_XNOR_PAD_LEFT], kh * kw * cin, y[F.T_DTYPE] == F.BITS)
        elif kind == F.BINARIZE_CONV_2D:
            n, h, wd, cin = x[F.T_SHAPE]
            _, kh, kw, _ = ins[1][F.T_SHAPE]
            _, oh, ow, cout = y[F.T_SHAPE]
            macs = y[F.T_SIZE] * kh * kw * cin
            args = (xb, xo, n, h, wd, cin, self._buf, ins[1][F.T_OFFSET], kh, kw) \
                + self._loc(ins[2]) + (yb, yo, oh, ow, cout, p[F.P_BCONV_STRIDE_H],
                                       p[F.P_BCONV_STRIDE_W], p[F.P_BCONV_PAD_TOP],
                                       p[F.P_BCONV_PAD_LEFT], p[F.P_BCONV_INPUT_ZERO])
        elif kind == F.BINARY_MAX_POOL_2D:
            n, h, wd, c = x[F.T_SHAPE]
            args = (xb, xo, n, h, wd, ((c + 31) >> 5) << 2, yb, yo, y[F.T_SHAPE][1],
                    y[F.T_SHAPE][2]) + tuple(p[F.P_BPOOL_FILTER_H:F.P_BPOOL_PAD_LEFT + 1])
        else:  # LOGISTIC, TANH, QUANTIZE from int8, DEQUANTIZE: a table per input value
            args = (xb, xo, yb, yo, y[F.T_SIZE], tb, to)
        live = 0
        for s in spans:
            if s[2] <= k <= s[3]:
                live += s[1]
        return (kind, kernel, args, macs, live, y[F.T_SHAPE], scratch)

    def _io(self, g):
        ts = g[F.G_TENSORS]
        arena = memoryview(self._arena)
        buf = memoryview(self._buf) if type(self._buf) is not memoryview else self._buf
        self.input_shape = []  # type: list
        self.input_dtype = []  # type: list
        self.input_scale = []  # type: list
        self.input_zero_point = []  # type: list
        self.output_shape = []  # type: list
        self.output_dtype = []  # type: list
        self.output_scale = []  # type: list
        self.output_zero_point = []  # type: list
        self._in = []  # (arena view, offset, elements, f32, name in messages)
        for i in g[F.G_INPUTS]:
            t = ts[i]
            self._describe(t, self.input_shape, self.input_dtype, self.input_scale,
                           self.input_zero_point)
            o, nb = t[F.T_OFFSET], t[F.T_NBYTES]
            self._in.append((arena[o:o + nb], o, t[F.T_SIZE], t[F.T_DTYPE] == F.F32,
                             "input" if len(g[F.G_INPUTS]) == 1 else "input %d" % len(self._in)))
        self._out = []  # (source view, offset, elements, f32, buffer, own view, i32)
        outs = []
        for i in g[F.G_OUTPUTS]:
            t = ts[i]
            self._describe(t, self.output_shape, self.output_dtype, self.output_scale,
                           self.output_zero_point)
            o, nb, f32 = t[F.T_OFFSET], t[F.T_NBYTES], t[F.T_DTYPE] == F.F32
            src = buf if t[F.T_STORAGE] == F.STORAGE_CONSTANT else arena
            i32 = t[F.T_DTYPE] == F.I32
            y = array("f" if f32 else "i" if i32 else "b", bytes(nb))
            self._out.append((src[o:o + nb], o, t[F.T_SIZE], f32,
                              self._buf if src is buf else self._arena,
                              _bytes_of(y, nb) if i32 else memoryview(y), i32))
            outs.append(y)
        self._outs = tuple(outs)
        self._y = outs[0] if len(outs) == 1 else self._outs
        self.integer = all(d == "b" for d in self.input_dtype + self.output_dtype)
        self._qbuf = None  # quantize()'s buffer, made on first use
        self._dqbuf = None

    @staticmethod
    def _describe(t, shapes, dtypes, scales, zeros):
        shapes.append(t[F.T_SHAPE])
        dtypes.append(_DTYPE_CODES[t[F.T_DTYPE]])
        q = t[F.T_SCALES]
        scales.append(_f32_value(q[0]) if len(q) == 1 else 0.0)
        zeros.append(t[F.T_ZERO])

    def _tier_of(self, k, cur):
        # (tier name, kernel function or None for graph_run) of operator k
        kind, name = self._ops[k][_OP_KIND], self._ops[k][_OP_KERNEL]
        py, vp = K, _viper
        if kind >= F.BINARIZE:  # the binary kinds' tiers (viper: a word-aligned model)
            py, vp = _XP, _xviper if self._words_ok else None
        elif name[-4:] == "_f32" and kind < F.QUANTIZE:  # float32: viper has no floats
            from nn import _float_python as py

            vp = None
        for t in range(cur, len(_TIERS)):
            tier, mod = _TIERS[t]
            if mod is _nn_c:
                if self._c_ok:
                    return tier, None
            elif tier == "viper":
                f = getattr(vp, name, None) if vp is not None else None
                if f is not None:
                    return tier, f
            elif tier == "python":
                return tier, getattr(py, name)
        return "python", getattr(py, name)  # pragma: no cover - python is always last

    def _current(self):
        # the index in _TIERS of nn's backend
        b = _model.backend()
        for t in range(len(_TIERS)):
            if _TIERS[t][0] == b:
                return t
        return 0  # pragma: no cover

    def _prepare_steps(self):
        b = _model.backend()
        if b is self._tier:
            return
        cur = self._current()
        steps = []
        first = -1
        for k in range(self.n_operators):
            tier, f = self._tier_of(k, cur)
            if f is None:
                if first < 0:
                    first = k
                continue
            if first >= 0:
                steps.append((None, (first, k)))
                first = -1
            if self._ops[k][_OP_KIND] != F.RESHAPE:
                steps.append((f, self._ops[k][_OP_ARGS]))
        if first >= 0:
            steps.append((None, (first, self.n_operators)))
        self._steps = tuple(steps)
        self._tier = b

    # ------------------------------------------------------------ running

    def forward(self, x, out=None):
        """Run the model; returns the output (array('b') int8, array('f') float32), a
        tuple of them for several outputs.

        x: the input's int8 values as bytes or bytearray (two's complement bytes) or
        array('b') (or a memoryview of one) of exactly input_shape's size; array('f')
        for a float32 input; a tuple of them for several inputs. TypeError/ValueError
        otherwise. The returned arrays belong to the model and are overwritten by the
        next call; out= (an array('b') or bytearray of the output's size, a tuple for
        several outputs) receives a copy instead.

        With int8 inputs and outputs nothing is allocated, in every tier and port, but
        for: the first call after nn.use_backend() changed the tier (the operator steps
        are rebuilt), and in the python tier on a 32-bit port a convolution whose int32
        accumulator passes +-2^30 (a heap int there; its bound is 255 x sum |w| + |bias|).
        float32 inputs, outputs and operators may allocate (a float is a heap object
        outside the C kernels).
        """
        if out is None and _model._cur == _C_TIER and self._run is not None:
            y = self._run(x)  # None, running nothing, unless x is int8 of the input's size
            if y is not None:
                return y
        self._prepare_steps()
        ins = self._in
        if len(ins) == 1:
            self._put(x, 0)
        else:
            if type(x) is not tuple and type(x) is not list or len(x) != len(ins):
                raise TypeError("this model takes %d inputs: a tuple of them" % len(ins))
            for j in range(len(ins)):
                self._put(x[j], j)
        buf, arena = self._buf, self._arena
        for f, a in self._steps:
            if f is None:
                _graph_run(buf, arena, a[0], a[1])
            else:
                f(a)
        if len(self._out) == 1:
            return self._get(0, out)
        if out is not None and (type(out) is not tuple and type(out) is not list
                                or len(out) != len(self._out)):
            raise TypeError("out must be a tuple of %d buffers" % len(self._out))
        for j in range(len(self._out)):
            self._get(j, out[j] if out is not None else None)
        return out if out is not None else self._outs

    def _put(self, x, j):
        view, o, n, f32, what = self._in[j]
        if f32:
            _check_floats(x, n, what)
            for i in range(n):
                struct.pack_into("<f", self._arena, o + 4 * i, x[i])
            return
        _check_bytes(x, n, what)
        view[0:n] = x

    def _get(self, j, out):
        view, o, n, f32, src, mine, i32 = self._out[j]
        if i32:
            return self._get_i32(j, view, n, mine, out)
        if f32:
            y = self._outs[j] if out is None else out
            if out is not None and (type(out) is not array or len(out) != n):
                raise TypeError("out takes array('f') of %d floats" % n)
            for i in range(n):
                y[i] = struct.unpack_from("<f", src, o + 4 * i)[0]
            return y
        if out is None:
            mine[0:n] = view  # a memoryview's slice store allocates nothing (an array's does)
            return self._outs[j]
        if type(out) is bytes:
            raise TypeError("out must be writable (bytearray or array('b'))")
        _check_bytes(out, n, "out")
        if type(out) is array:
            for i in range(n):
                out[i] = view[i]  # stored as int8: the byte's two's complement value
        else:
            out[0:n] = view
        return out

    def _get_i32(self, j, view, n, mine, out):
        # an int32 output (the logits of an XNOR network): array('i')
        y = self._outs[j]
        if mine is not None:
            mine[0:len(view)] = view  # (a byte view of y: allocates nothing)
        else:
            for i in range(n):  # without uctypes: values beyond small ints allocate
                y[i] = (view[4 * i] | view[4 * i + 1] << 8 | view[4 * i + 2] << 16
                        | ((view[4 * i + 3] ^ 0x80) - 0x80) << 24)
        if out is None:
            return y
        if type(out) is not array or len(out) != n or len(bytes(out[0:1])) != 4:
            raise TypeError("out takes array('i') of %d int32" % n)
        for i in range(n):
            out[i] = y[i]
        return out

    def predict(self, x):
        """The index of the largest value of the (first) output: forward() plus an
        argmax (the first maximum); allocates nothing for int8 models."""
        y = self.forward(x)
        if len(self._out) > 1:
            y = y[0]
        k = 0
        top = y[0]
        for i in range(1, len(y)):
            if y[i] > top:
                top = y[i]
                k = i
        return k

    def quantize(self, values, out=None):
        """The int8 input of real values (a sequence of floats of the first input's
        size): round(v / input_scale) + input_zero_point, as TensorFlow Lite quantizes
        float32 (halves away from zero, saturated). Returns out or the model's buffer."""
        n = self._in[0][2]
        if self.input_dtype[0] != "b":
            raise ValueError("the input is float32: pass the floats to forward()")
        if len(values) != n:
            raise ValueError("quantize takes %d values, got %d" % (n, len(values)))
        if out is None:
            if self._qbuf is None:
                self._qbuf = array("b", bytes(n))
            out = self._qbuf
        s = P._f32(struct.unpack("<I", struct.pack("<f", self.input_scale[0]))[0])
        z = self.input_zero_point[0]
        tmp = bytearray(4)
        for i in range(n):
            v = values[i]
            if v != v or v - v != 0:
                raise ValueError("quantize takes finite values")
            struct.pack_into("<f", tmp, 0, v)
            q = K.quantize_bits(struct.unpack("<I", tmp)[0], s[0], s[1]) + z
            out[i] = -128 if q < -128 else 127 if q > 127 else q
        return out

    def dequantize(self, y, out=None):
        """The real values of an int8 output (the first output's scale and zero point):
        array('f') (out, or the model's buffer)."""
        if self.output_dtype[0] != "b":
            raise ValueError("the output is float32 already")
        n = len(y)
        if out is None:
            if self._dqbuf is None or len(self._dqbuf) != n:
                self._dqbuf = array("f", bytes(4 * n))
            out = self._dqbuf
        s, z = self.output_scale[0], self.output_zero_point[0]
        for i in range(n):
            v = y[i]
            if v > 127:
                v -= 256  # a raw byte of a bytes/bytearray output
            out[i] = s * (v - z)
        return out

    # ------------------------------------------------------------ reporting

    def tiers(self):
        """The tier running each operator ('c', 'natmod', 'viper' or 'python')."""
        cur = self._current()
        return [self._tier_of(k, cur)[0] for k in range(self.n_operators)]

    def _kinds(self):
        # 'int8', 'float32' or 'int8 and float32': the arithmetic of the operators
        f = [op[_OP_KERNEL][-4:] == "_f32" and op[_OP_KIND] < F.QUANTIZE for op in self._ops
             if op[_OP_KIND] != F.RESHAPE]
        return "int8 and float32" if any(f) and not all(f) else "float32" if any(f) else "int8"

    def summary(self):
        """Operators (kind, tier, MACs, output shape, bytes of activations alive), the
        arena and the model's bytes. Returns a str."""
        tiers = self.tiers()
        macs = 0
        peak = 0
        lines = ["%s: format 2 (%s graph), %d operators, %d tensors, inputs %s, "
                 "outputs %s, backend %s" % (
                     self.name or "model", self._kinds(), self.n_operators, self.n_tensors,
                     " ".join("%s%s" % (d, list(s)) for d, s in zip(self.input_dtype,
                                                                    self.input_shape)),
                     " ".join("%s%s" % (d, list(s)) for d, s in zip(self.output_dtype,
                                                                    self.output_shape)),
                     _model.backend()),
                 "  #   kind               tier     MACs        output           live B"]
        for k in range(self.n_operators):
            op = self._ops[k]
            macs += op[_OP_MACS]
            peak = max(peak, op[_OP_LIVE])
            lines.append("  %-3d %-18s %-8s %-11d %-16s %d" % (
                k, F.KIND_NAMES[op[_OP_KIND]], tiers[k], op[_OP_MACS],
                "x".join(str(d) for d in op[_OP_OUT_SHAPE]), op[_OP_LIVE]))
        if "float32" in self._kinds():
            lines.append("  float32 operators run in C or plain Python (viper has no float "
                         "arithmetic of its own)")
        copied = self.where == "file"
        lines.append("  MACs %d; arena %d B (peak live %d B); model %d B (%s), %s" % (
            macs, self.arena_size, peak, self.model_bytes,
            "read from a file into RAM" if copied else self.where,
            "a RAM copy" if copied else "read in place"))
        return "\n".join(lines)

    def __repr__(self):
        return "<nn.graph.Model %s: %d operators, arena %d B>" % (self.name, self.n_operators,
                                                                 self.arena_size)


def _halves(m):
    # a multiplier in [0, 2^31) as (m >> 16, m & 0xFFFF): small ints on every port (the
    # python tier's requantization takes them so)
    return (m >> 16, m & 0xFFFF)


def _bytes_of(a, nb):
    # a writable memoryview of the nb bytes of array a (no copy), None without uctypes
    u = _model.uctypes
    return memoryview(u.bytearray_at(u.addressof(a), nb)) if u is not None else None


def _four(shape):
    # a shape as four dims, leading ones
    return (1,) * (4 - len(shape)) + tuple(shape)


def _strides(shape):
    # element strides of a shape as four dims; 0 along dims of 1 (broadcast)
    d = _four(shape)
    s = [0, 0, 0, 1]
    for i in (2, 1, 0):
        s[i] = s[i + 1] * d[i + 1]
    return tuple(0 if d[i] == 1 else s[i] for i in range(4))
