# nn.model: load, validate and run piconn models (docs/FORMAT.md, version 1).
#
# The model buffer is used in place: frozen bytes (flash), a ROMFS file, or a
# bytes object. Everything in it is validated once by load(); the kernels then
# trust it. Buffers for activations are allocated at load; forward() and
# predict() allocate nothing of their own (integer kinds run under
# micropython.heap_lock() in every tier; float kinds only in the C tier).
from array import array

from micropython import const

from nn import _format, _python

try:
    import uctypes
except ImportError:  # pragma: no cover
    uctypes = None  # type: ignore[assignment]

MAGIC = _format.MAGIC
VERSION = _format.VERSION
KINDS = tuple(k[_format.KIND_NAME] if k else "" for k in _format.KINDS)
DTYPES = _format.DTYPES
ACTS = _format.ACTS

# The dispatch tables: a kernel per slot, the layer kinds' codes first (FORMAT.md)
_FUNCS = KINDS + ("relu_f32", "argmax_i32", "argmax_f32", "check_csc", "check_f32")
_RELU = const(9)
_ARGMAX_I32 = const(10)
_ARGMAX_F32 = const(11)
_CHECK_CSC = const(12)
_CHECK_F32 = const(13)

_DENSE_F32 = const(1)  # _format's kind codes (const here: no lookup on the hot path)
_DENSE_Q8W = const(2)
_DENSE_Q8 = const(3)
_SPARSE_F32 = const(4)
_SPARSE_Q8 = const(5)
_BINARIZE = const(6)
_XNOR_DENSE = const(7)
_XNOR_OUT = const(8)
_U8 = const(0)  # and dtype codes
_F32 = const(1)
_BITS = const(2)
_I32 = const(3)
_ACT_RELU = const(1)

# A layer of a model's plan: a tuple, read with these indices
_L_KIND = const(0)
_L_ACT = const(1)
_L_N_IN = const(2)
_L_N_OUT = const(3)
_L_Y = const(4)  # its output buffer
_L_ARGS = const(5)  # its kernel's arguments, a list (_kernel_args); [0] is the input
_L_OUT_AT = const(6)  # the argument indices of the output buffer (forward's `out`)
_L_PYONLY = const(7)  # runs in the python tier: a misaligned array could not be copied
_L_DT_IN = const(8)
_L_DT_OUT = const(9)
_L_PARAM_BYTES = const(10)

_NAN = float("nan")  # not math.nan: mpy-cross would freeze a NaN literal (invalid C)

# ------------------------------------------------------------------ tiers

# (name, module) fastest first, and the C module ('c' firmware or 'natmod'), or None
from nn._tiers import C_MODULE as _nn_c
from nn._tiers import TIERS as _TIERS

_cur = 0  # index into _TIERS of the tier in use
# kernel per slot: from the tier in use, else the next one down
_tbl = [None] * len(_FUNCS)  # type: list
_tbl_tier = [None] * len(_FUNCS)  # type: list
_tbl_py = [getattr(_python, f) if f else None for f in _FUNCS]  # type: list


def _probe_run():
    # _nn_c.run if it is the run(steps, x, out) of docs/KERNELS.md, as in the firmware
    # built with this nn (it returns the last call's result, takes `out`, and refuses
    # signed bytes for a u8 input); else None (then every call goes by bytecode)
    r = getattr(_nn_c, "run", None) if _nn_c is not None else None
    if r is None:
        return None
    try:
        if r(((_nn_c.argmax_i32, (None, 2)),), array("i", (0, 1)), None) != 1:
            return None
    except (TypeError, ValueError):
        return None
    try:
        r(((_nn_c.binarize, (None, 0, bytearray(4), 1)),), array("b", (0,)))
    except TypeError:
        return r  # array('b') refused
    return None


# run(steps, x, out): a whole model in one call from bytecode (docs/KERNELS.md), or None
_run = _probe_run()
# prepare(steps): the steps of a binary network checked once, a callable (docs/KERNELS.md)
_prepare = getattr(_nn_c, "prepare", None) if _run is not None else None
_crun = False  # the tier in use is 'c' and has run(): models whose layers all run in C use it
_gate = bytearray(1)  # _crun for the prepared forward/predict of models (read by C per call)


def _rebuild():
    global _crun
    for k in range(1, len(_FUNCS)):
        for t in range(_cur, len(_TIERS)):
            f = getattr(_TIERS[t][1], _FUNCS[k], None)
            if f is not None:
                _tbl[k] = f
                _tbl_tier[k] = _TIERS[t][0]
                break
    _crun = _run is not None and _TIERS[_cur][1] is _nn_c
    _gate[0] = 1 if _crun else 0


_rebuild()


def backends():
    """Names of the kernel tiers present, fastest first, e.g. ('c', 'viper', 'python')."""
    return tuple(t[0] for t in _TIERS)


def backend():
    """Name of the tier in use: 'c', 'viper' or 'python' (the fastest present by default)."""
    return _TIERS[_cur][0]


def use_backend(name):
    """Run every model on tier `name` ('c', 'viper', 'python'); functions that tier
    lacks come from the next slower one. ValueError if the tier is not present.
    Affects models already loaded. Returns the previous tier's name."""
    global _cur
    for t in range(len(_TIERS)):
        if _TIERS[t][0] == name:
            old = _TIERS[_cur][0]
            _cur = t
            _rebuild()
            return old
    raise ValueError("no kernel tier %r here; present: %s" % (name, ", ".join(backends())))


# --------------------------------------------------------------- helpers


def _address(buf):
    """Address of a buffer, or None when it cannot be known (no uctypes)."""
    if uctypes is not None:
        return uctypes.addressof(buf)
    return None


def _buffer(n, dtype):
    # a zeroed activation buffer of n elements and its size in bytes
    if dtype == _U8:
        return bytearray(n), n
    if dtype == _BITS:
        nb = ((n + 31) >> 5) << 2
        return bytearray(nb), nb
    return array("f" if dtype == _F32 else "i", bytes(4 * n)), 4 * n


# ------------------------------------------------------------------- load


def load(src, name=None):
    """Load and validate a model; returns a Model.

    src: bytes (or a read-only memoryview) holding the model (used in place: frozen
    bytes stay in flash, nothing is copied); a module with a MODEL attribute (as
    written by `piconn export`); or a file path (a file on ROMFS is used in place
    through the buffer protocol, any other file is read into RAM). For ROMFS build
    the image with `piconn romfs` (models on 16-byte boundaries, then `mpremote
    romfs deploy IMAGE`): `mpremote romfs deploy FOLDER` leaves them unaligned,
    which costs a RAM copy of every word array (see `copies`).
    Validates magic, version, sizes, CRC-32, every offset and length, sparse
    indices, requantization fields and the dtype chain: ValueError/TypeError with
    a message on bad input. The model is checked once and then used in place, so
    its bytes must not change: a writable buffer in RAM (bytearray, a memoryview of
    one) is refused with TypeError (pass bytes(buf): a copy nothing else can
    change); a ROMFS image must not be rewritten while its models are loaded. Cost: one pass over the bytes (CRC) plus one over the
    sparse indices; RAM: the activation buffers (a few hundred bytes for MNIST
    models), copies of misaligned word arrays (none for aligned buffers) and, with the
    C tier, 4 bytes per neuron of XNOR layers (their rows' popcounts).
    """
    owner = None
    where = None
    t = type(src)
    if t is str:
        f = open(src, "rb")
        try:
            buf = memoryview(f)  # ROMFS files expose their bytes in place
            owner = f
            where = "romfs"
        except TypeError:
            # one allocation of the file's size (read() alone grows its buffer step by
            # step: up to twice the model in RAM on the way)
            size = f.seek(0, 2)
            f.seek(0)
            data = f.read(size)
            f.close()
            buf = memoryview(data)
            owner = data
            where = "file"
        if name is None:
            name = src.rsplit("/", 1)[-1].rsplit(".", 1)[0]
    elif t is bytes or t is bytearray or t is memoryview:
        owner = src
        buf = src if t is memoryview else memoryview(src)  # (Model refuses a bytearray)
    elif hasattr(src, "MODEL"):
        owner = src
        model = src.MODEL
        if type(model) is not bytes:
            raise TypeError("%s.MODEL must be bytes, not %s" % (getattr(src, "__name__", "module"),
                                                                type(model).__name__))
        buf = memoryview(model)
        if name is None:
            name = getattr(src, "NAME", None) or getattr(src, "__name__", None)
    else:
        raise TypeError("nn.load takes bytes, bytearray, memoryview, a model module or a "
                        "file path, not %s" % t.__name__)
    if len(buf) >= 6 and buf[4] | buf[5] << 8 == 2:  # format version 2: an int8 graph
        from nn import graph

        return graph.Model(buf, owner, name, where)
    return Model(buf, owner, name, where)


class Model:
    """A validated model, ready to run. Create it with nn.load().

    Attributes: name, family ('float', 'sparse', 'uint8', 'xnor'), input_size,
    input_dtype ('u8' raw bytes or 'f32'), output_size, output_dtype ('f32'
    logits/activations or 'i32' raw scores), output_scale (raw * output_scale =
    logits), n_layers, param_bytes (parameter arrays read in place), ram (bytes
    this model allocated), aligned (buffer word-aligned: no copies needed).
    """

    def __init__(self, buf, owner=None, name=None, where=None):
        self._owner = owner  # keeps the bytes (or the ROMFS file) alive
        self.name = name
        self._parse(buf, where)

    # ------------------------------------------------------------ parsing

    def _parse(self, buf, where):
        base = _address(buf)
        if _writable(buf) and not (base is not None and _is_flash(base)):
            # validated once, used for good: the bytes must not change (stores to flash
            # need its erase/program API, which nn's users do not call on a live model)
            raise TypeError("nn.load needs a read-only model buffer (bytes, frozen bytes, a "
                            "file): a %s could change after it is checked; pass bytes(buf)"
                            % ("writable memoryview" if type(buf) is memoryview
                               else type(buf).__name__))
        n_layers, in_size, out_size, in_dt, out_dt, out_scale = _format.header(buf)
        n = len(buf)
        table_end = _format.HEADER_SIZE + _format.RECORD_SIZE * n_layers
        self.aligned = base is None or base & 3 == 0
        self.in_flash = base is not None and _is_flash(base)  # frozen bytes or ROMFS
        self.where = where or ("flash" if self.in_flash else "in place")
        ram = n if where == "file" else 0  # the copy load() made
        copies = 0
        layers = []  # type: list  # (kind, act, n_i, n_o, y, p, dt_in, dt_out, zy, ib, thr, pyonly)
        prev_n, prev_dt = in_size, in_dt
        max_acc = 0
        param_bytes = 0
        for k in range(n_layers):
            (kind, act, dt_in, dt_out, n_i, n_o, nnz, zy, ib, thr,
             offs) = _format.record(buf, k, n_layers, prev_n, prev_dt)
            p = _format.arrays(buf, k, kind, offs, n_i, n_o, nnz, ib, dt_out, table_end)
            pyonly = False
            for slot in range(len(p)):
                a = p[slot]
                param_bytes += len(a)
                if len(a) and _format.word_slot(kind, slot, ib) and base is not None \
                        and (base + offs[slot]) & 3:
                    try:
                        p[slot] = memoryview(bytearray(a))  # heap blocks are word-aligned
                        copies += len(a)
                    except MemoryError:
                        pyonly = True  # the python tier reads any alignment
            t = _tbl_py if pyonly else _tbl
            _format.content(k, kind, p, n_i, n_o, nnz, ib, dt_in, dt_out, t[_CHECK_F32],
                            t[_CHECK_CSC])
            y, nb = _buffer(n_o, dt_out)
            ram += nb
            if (kind == _DENSE_Q8 or kind == _SPARSE_Q8) and dt_out == _U8 and n_o > max_acc:
                max_acc = n_o
            layers.append((kind, act, n_i, n_o, y, p, dt_in, dt_out, zy, ib, thr, pyonly))
            prev_n, prev_dt = n_o, dt_out
        if prev_n != out_size or prev_dt != out_dt:
            raise ValueError("last layer gives %d %s, the header says %d %s"
                             % (prev_n, _format.dtype_name(prev_dt), out_size,
                                _format.dtype_name(out_dt)))
        acc = None
        if max_acc:
            acc = array("i", bytes(4 * max_acc))  # the requantizing layers' accumulators
            ram += 4 * max_acc
        plan = []  # type: list
        x = None  # the first layer's input: forward's x
        for (kind, act, n_i, n_o, y, p, dt_in, dt_out, zy, ib, thr, pyonly) in layers:
            args = _kernel_args(kind, x, p, y, y if dt_out == _I32 else acc, n_i, n_o,
                                dt_in == _U8, zy, ib, thr)
            out_at = tuple(i for i in range(len(args)) if args[i] is y)
            pb = 0
            for a in p:
                pb += len(a)
            plan.append((kind, act, n_i, n_o, y, args, out_at, pyonly, dt_in, dt_out, pb))
            x = y
        self._plan = plan
        self._last = plan[-1]
        self._xf = None  # type: array | None
        if in_dt == _F32:
            self._xf = array("f", bytes(4 * in_size))  # the input, copied (python tiers)
            ram += 4 * in_size
        # the whole model as one _nn_c.run() call (forward; predict with the argmax too)
        self._fwd, self._pred, self._post, pw_bytes = _c_steps(plan, out_size, out_dt == _I32,
                                                               self._xf)
        ram += pw_bytes
        if _prepare is not None and self._pred is not None:
            # forward(x) and predict(x) straight into C while the C tier is in use: the
            # steps checked here, once (_nn_c.prepare), called with no bytecode frame; the
            # methods below (bound here, before they are shadowed) for the other tiers and
            # for keyword arguments
            try:
                fwd = _prepare(self._fwd, self.forward, _gate)
                pred = _prepare(self._pred, self.predict, _gate)
            except TypeError:
                pass  # a kind prepare does not take: run() checks every call
            else:
                self.forward = fwd  # type: ignore[method-assign]  # (an instance attribute)
                self.predict = pred  # type: ignore[method-assign]
        self._y = self._last[_L_Y]
        self._out_args = list(self._last[_L_ARGS])  # forward(x, out)'s, out set per call
        self.input_size = in_size
        self.output_size = out_size
        self.input_dtype = DTYPES[in_dt]
        self.output_dtype = DTYPES[out_dt]
        self.output_scale = out_scale
        self.n_layers = n_layers
        self.param_bytes = param_bytes
        self.model_bytes = n
        self._in_u8 = in_dt == _U8
        self._out_i32 = out_dt == _I32
        # probes for alloc-free element type checks (_input, _check_out)
        self._b0 = array("B")
        self._sb0 = array("b")
        self._i0 = array("i")
        self._xfm = None if self._xf is None else memoryview(self._xf)  # copies: no slice
        self.copies = copies
        self.ram = ram + copies
        kinds = [L[_L_KIND] for L in plan]
        if any(k == _XNOR_DENSE or k == _XNOR_OUT for k in kinds):
            self.family = "xnor"
        elif any(k == _SPARSE_F32 or k == _SPARSE_Q8 for k in kinds):
            self.family = "sparse"
        elif any(k == _DENSE_Q8 or k == _DENSE_Q8W for k in kinds):
            self.family = "uint8"
        else:
            self.family = "float"
        self.integer = all(k != _DENSE_F32 and k != _DENSE_Q8W and
                           k != _SPARSE_F32 for k in kinds)

    # ------------------------------------------------------------ running

    def _input(self, x):
        # check x as _nn_c.run does (the object's type, its elements, their number: O(1),
        # allocation-free for a u8 input); returns the buffer layer 0 reads
        n = self.input_size
        t = type(x)
        if self._in_u8:
            if t is not bytes and t is not bytearray:
                if t is not memoryview and t is not array:
                    raise TypeError("input must be %d bytes (bytes, bytearray, array('B') or "
                                    "a memoryview of one), not %s" % (n, t.__name__))
                try:
                    self._sb0 < x  # succeeds only for unsigned bytes ('B')
                except Exception:
                    signed = True
                    try:
                        self._b0 < x  # succeeds for bytes of either sign
                    except Exception:
                        signed = False
                    if signed:
                        raise TypeError("input must be %d u8 values (bytes, bytearray, "
                                        "array('B')); the %s holds signed bytes (typecode "
                                        "'b')" % (n, t.__name__))
                    raise TypeError("input must be %d raw bytes; the %s holds wider elements"
                                    % (n, t.__name__))
            if len(x) != n:
                raise ValueError("input takes %d bytes, got %d" % (n, len(x)))
            return x
        _f32_buffer(x, n, "input")
        xfm = self._xfm
        assert xfm is not None
        xfm[0:n] = x  # the copy layer 0 reads
        return self._xf

    def forward(self, x, out=None):
        """Run the model on one input; returns the output buffer.

        x: `input_size` u8 values, typecode 'B' (bytes, bytearray, array('B') or a
        memoryview of one; signed array('b') is refused) for a u8-input model;
        array('f') (or a memoryview of one) for an f32-input one, which is copied into
        the model's input buffer. The same element types in every tier; wrong type or
        size: TypeError/ValueError (O(1) check, docs/FORMAT.md "Model inputs").
        Returns array('f') (logits, or the last activation) or array('i') (raw scores:
        times `output_scale` = logits). The returned buffer belongs to the model and
        is overwritten by the next call; pass `out` (array('i') or array('f') as the
        output, or a memoryview of one, of `output_size` elements) to have the last
        layer write there instead; forward then returns `out`.
        In the C tier a model whose layers all have C kernels runs as one call
        (_nn_c.run, docs/KERNELS.md), with or without `out`; an XNOR model's forward is
        then its steps prepared at load (_nn_c.prepare: no bytecode at all); in the other
        tiers each layer is one call from bytecode (about 25 us each on an RP2040).
        Float layers compute in float32, NaN and infinities included (FORMAT.md).
        RAM: none (buffers were made by load); the python/viper tiers box floats for
        float layers (under heap_lock(): MemoryError). Time on an RP2040 at 125 MHz (784-128-10, emulated, weights in
        flash): C 1.5 ms (uint8), 0.67 ms (sparse uint8), 0.95 ms (XNOR 784-256-256-10),
        34 ms (float); viper 11 ms (uint8), 2.6 ms (sparse uint8), 3.6 ms (XNOR);
        python 0.14-1.1 s (integer kinds), seconds for float kinds.
        """
        if _crun:
            s = self._fwd
            if s is not None:  # the whole model from C; checks x and out (O(1))
                if out is None:
                    _run(s, x)
                    if self._post:
                        _activate(self._y, self.output_size, self._post)
                    return self._y
                _run(s, x, out)
                if self._post:
                    _activate(out, self.output_size, self._post)
                return out
        x = self._input(x)
        if out is not None:
            self._check_out(out)
        last = self._last
        for L in self._plan:
            k = L[_L_KIND]
            f = _tbl_py[k] if L[_L_PYONLY] else _tbl[k]
            a = L[_L_ARGS]
            y = L[_L_Y]
            if out is not None and L is last:  # the last layer's arguments, writing to out
                y = out
                a = self._out_args
                for i in L[_L_OUT_AT]:
                    a[i] = out
            # f(x, *a[1:]) without the allocation of a star call, by the kinds' argument
            # counts (_kernel_args); the integer kinds take two or three comparisons, and
            # each bytecode counts (about 8 us a comparison on the emulated RP2040)
            if k < _BINARIZE:
                if k == _DENSE_Q8 or k == _SPARSE_F32:  # 10 arguments
                    f(x, a[1], a[2], a[3], a[4], a[5], a[6], a[7], a[8], a[9])
                elif k == _SPARSE_Q8:  # 13
                    f(x, a[1], a[2], a[3], a[4], a[5], a[6], a[7], a[8], a[9], a[10], a[11],
                      a[12])
                elif k == _DENSE_Q8W:  # 9
                    f(x, a[1], a[2], a[3], a[4], a[5], a[6], a[7], a[8])
                else:  # DENSE_F32: 7
                    f(x, a[1], a[2], a[3], a[4], a[5], a[6])
            elif k == _XNOR_DENSE:  # 6
                f(x, a[1], a[2], a[3], a[4], a[5])
            elif k == _XNOR_OUT:  # 7
                f(x, a[1], a[2], a[3], a[4], a[5], a[6])
            else:  # BINARIZE: 4
                f(x, a[1], a[2], a[3])
            act = L[_L_ACT]
            if act:
                if act == _ACT_RELU:
                    (_tbl_py[_RELU] if L[_L_PYONLY] else _tbl[_RELU])(y, L[_L_N_OUT])
                else:
                    _activate(y, L[_L_N_OUT], act)
            x = y
        return x

    def predict(self, x):
        """Class index (int) of one input: the first maximum of forward(x), NaN first
        for float outputs (as numpy's argmax). Costs forward() plus an O(output_size)
        scan (in the C tier both in the one _nn_c.run call, or _nn_c.prepare's: XNOR
        784-256-256-10 0.95 ms on the emulated RP2040); allocates nothing more."""
        if _crun:
            s = self._pred
            if s is not None:
                return _run(s, x)  # layers and argmax in one call from bytecode
        y = self.forward(x)
        if self._out_i32:
            return _tbl[_ARGMAX_I32](y, self.output_size)
        return _tbl[_ARGMAX_F32](y, self.output_size)

    def _check_out(self, out):
        # check `out` as _nn_c.run does (allocation-free for an i32 output)
        n = self.output_size
        if not self._out_i32:
            _f32_buffer(out, n, "out")
            return
        t = type(out)
        if t is not array and t is not memoryview:
            raise TypeError("out must be array('i') of %d ints (or a memoryview of one), not "
                            "%s" % (n, t.__name__))
        try:
            self._i0 == out  # compares without error only for 'i' and 'I'
        except Exception:
            raise TypeError("out must be array('i') of %d ints (or a memoryview of one); the "
                            "%s holds other elements" % (n, t.__name__))
        unsigned = True
        try:
            self._i0 < out  # 'i' < 'I' compares, 'i' < 'i' does not (signed)
        except Exception:
            unsigned = False
        if unsigned:
            raise TypeError("out must be array('i') of %d ints (or a memoryview of one); the "
                            "%s holds unsigned ints (typecode 'I')" % (n, t.__name__))
        if len(out) != n:
            raise ValueError("out takes %d ints, got %d" % (n, len(out)))

    # ------------------------------------------------------------ reporting

    def tiers(self):
        """The tier ('c', 'viper', 'python') that runs each layer, as a list."""
        return [("python" if L[_L_PYONLY] else _tbl_tier[L[_L_KIND]]) for L in self._plan]

    def summary(self):
        """A table of the layers (kind, activation, sizes, parameter bytes, tier) and the
        memory: parameter bytes read in place, RAM this model allocated. Returns a str."""
        lines = ["%s: %s, %d %s -> %d %s%s, %d layers, backend %s" % (
            self.name or "model", self.family, self.input_size, self.input_dtype,
            self.output_size, self.output_dtype,
            " (x %g = logits)" % self.output_scale if self.output_dtype == "i32" else "",
            self.n_layers, backend() + (" (one _nn_c.run call)" if _crun and self._fwd
                                        is not None else ""))]
        lines.append("  #  kind        act      in          out         params B  tier")
        tiers = self.tiers()
        for i in range(len(self._plan)):
            L = self._plan[i]
            lines.append("  %-2d %-11s %-8s %-11s %-11s %-9d %s" % (
                i, KINDS[L[_L_KIND]], ACTS[L[_L_ACT]],
                "%d %s" % (L[_L_N_IN], DTYPES[L[_L_DT_IN]]),
                "%d %s" % (L[_L_N_OUT], DTYPES[L[_L_DT_OUT]]), L[_L_PARAM_BYTES], tiers[i]))
        copied = self.model_bytes if self.where == "file" else 0
        lines.append("  model %d B (%s), parameters %d B read in place; RAM buffers %d B "
                     "(%sactivations and scratch %d B, aligned copies %d B)" % (
                         self.model_bytes, "read from a file into RAM" if copied else
                         self.where + (" in flash" if self.in_flash and
                                       self.where != "flash" else ""),
                         self.param_bytes - self.copies, self.ram,
                         "file copy %d B, " % copied if copied else "",
                         self.ram - self.copies - copied, self.copies))
        return "\n".join(lines)

    def __repr__(self):
        return "<nn.Model %s: %s %d->%d>" % (self.name, self.family, self.input_size,
                                             self.output_size)


def _kernel_args(kind, x, p, y, acc, n_i, n_o, x_u8, zy, ib, thr):
    """The arguments of layer `kind`'s kernel (docs/KERNELS.md) as a list, args[0] the
    input x. p: the parameter arrays in slot order; y: the output buffer; acc: the int32
    accumulators of a full-integer layer (y itself for an i32 output). Both forward()
    and the steps of _nn_c.run use these lists."""
    if kind == _DENSE_Q8:
        return [x, p[0], p[1], p[2], p[3] or None, acc, y, n_i, n_o, zy]
    if kind == _SPARSE_Q8:
        return [x, p[0], p[1], ib, p[2], p[3], p[4], p[5] or None, acc, y, n_i, n_o, zy]
    if kind == _XNOR_DENSE:
        return [x, p[0], p[1], y, n_i, n_o]
    if kind == _XNOR_OUT:
        return [x, p[0], p[1], p[2], y, n_i, n_o]
    if kind == _BINARIZE:
        return [x, thr, y, n_i]
    u8 = 1 if x_u8 else 0
    if kind == _DENSE_F32:
        return [x, u8, p[0], p[1], y, n_i, n_o]
    if kind == _DENSE_Q8W:
        return [x, u8, p[0], p[1], p[2], p[3], y, n_i, n_o]
    return [x, u8, p[0], p[1], ib, p[2], p[3], y, n_i, n_o]  # SPARSE_F32


def _c_steps(plan, n_out, out_i32, xf):
    # (forward steps, predict steps, activation left to Python, RAM bytes of the row
    # popcounts) for _nn_c.run, or (None, None, 0, 0) when a layer cannot run in C. The
    # steps are the kernel calls of Model.forward with the input (args[0] of the first
    # step) left None, or for a float input the model's input buffer xf, into which run
    # copies x; a sigmoid, tanh or softmax may only follow the last layer (applied by
    # Python after run). XNOR steps get their weight rows' popcounts (computed here, once)
    # as the last argument: the C kernels then read only the nonzero span of their input.
    if _run is None:
        return None, None, 0, 0
    pop_rows = getattr(_nn_c, "popcount_rows", None)
    steps = []  # type: list
    post = 0
    ram = 0
    y = None
    for L in plan:
        k = L[_L_KIND]
        f = getattr(_nn_c, _FUNCS[k], None)
        if f is None or L[_L_PYONLY] or post:
            return None, None, 0, 0
        y = L[_L_Y]
        args = tuple(L[_L_ARGS]) if steps or xf is None else (xf,) + tuple(L[_L_ARGS][1:])
        if pop_rows is not None and (k == _XNOR_DENSE or k == _XNOR_OUT):
            n = L[_L_N_OUT]
            pw = array("i", bytes(4 * n))
            pop_rows(args[1], L[_L_N_IN], n, pw)
            args = args + (pw,)
            ram += 4 * n
        steps.append((f, args))
        if L[_L_ACT] == _ACT_RELU:
            steps.append((_nn_c.relu_f32, (y, L[_L_N_OUT])))
        elif L[_L_ACT]:
            post = L[_L_ACT]
    fwd = tuple(steps)
    if post:
        return fwd, None, post, ram
    am = _nn_c.argmax_i32 if out_i32 else _nn_c.argmax_f32
    return fwd, fwd + ((am, (y, n_out)),), 0, ram


_OBJECTS = None  # type: array | None
try:
    _OBJECTS = array("O")  # an array of object pointers, 4 bytes each on 32-bit ports
except ValueError:  # a port without the 'O' typecode
    pass


def _f32_buffer(x, n, what):
    # TypeError/ValueError unless x is array('f') of n floats or a memoryview of one, as
    # _nn_c.run checks. It reads an element (a boxed float: only float layers, which
    # allocate anyway outside the C tier, take or give floats; under heap_lock() this is
    # the MemoryError they would raise).
    t = type(x)
    if t is not array and t is not memoryview:
        raise TypeError("%s must be array('f') of %d floats (or a memoryview of one), not %s"
                        % (what, n, t.__name__))
    if len(x):
        if type(x[0]) is not float:
            raise TypeError("%s must be array('f') of %d floats (or a memoryview of one); the "
                            "%s holds integers or objects" % (what, n, t.__name__))
        if len(bytes(x[0:1])) != 4:
            raise TypeError("%s must be array('f') of %d floats (or a memoryview of one); the "
                            "%s holds 8-byte floats ('d')" % (what, n, t.__name__))
        objects = _OBJECTS is not None
        try:
            _OBJECTS == x  # compares without error only with another array('O')
        except Exception:
            objects = False
        if objects:
            raise TypeError("%s must be array('f') of %d floats (or a memoryview of one); the "
                            "%s holds objects ('O')" % (what, n, t.__name__))
    if len(x) != n:
        raise ValueError("%s takes %d floats, got %d" % (what, n, len(x)))


def _writable(buf):
    # True if Python code can change buf's bytes: a bytearray, an array, a memoryview
    # of one (a memoryview of bytes refuses even this empty store)
    t = type(buf)
    if t is bytes:
        return False
    if t is not memoryview:
        return True
    try:
        buf[0:0] = buf[0:0]
    except TypeError:
        return False
    return True


def _is_flash(addr):
    # RP2040/RP2350 execute-in-place flash window
    import sys

    return sys.platform == "rp2" and 0x10000000 <= addr < 0x20000000


def _activate(y, n, a):
    # sigmoid / tanh / softmax in place (float outputs; allocates boxed floats).
    # MicroPython's math raises where a result overflows: never call exp(>0).
    import math

    if a == 2:
        for c in range(n):
            v = y[c]
            if v >= 0:
                y[c] = 1.0 / (1.0 + math.exp(-v))
            elif v < 0:
                e = math.exp(v)
                y[c] = e / (1.0 + e)
            # NaN stays NaN
    elif a == 3:
        for c in range(n):
            y[c] = math.tanh(y[c])
    else:
        m = y[0]
        for c in range(n):
            v = y[c]
            if v != v:
                m = v  # NaN anywhere: every output NaN (as numpy)
                break
            if v > m:
                m = v
        s = 0.0
        for c in range(n):
            d = y[c] - m  # <= 0, or NaN
            e = math.exp(d) if d == d else d
            y[c] = e
            s += e
        for c in range(n):
            y[c] = y[c] / s if s else _NAN
