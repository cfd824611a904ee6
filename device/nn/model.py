# nn.model: load, validate and run piconn models (docs/FORMAT.md, version 1).
#
# The model buffer is used in place: frozen bytes (flash), a ROMFS file, or a
# bytes object. Everything in it is validated once by load(); the kernels then
# trust it. Buffers for activations are allocated at load; forward() and
# predict() allocate nothing of their own (integer kinds run under
# micropython.heap_lock() in every tier; float kinds only in the C tier).
import struct
from array import array

from micropython import const

from nn import _python

try:
    import uctypes
except ImportError:  # pragma: no cover
    uctypes = None  # type: ignore[assignment]
try:
    from binascii import crc32 as _crc32
except ImportError:  # pragma: no cover - ports without binascii.crc32
    _crc32 = None  # type: ignore[assignment]

MAGIC = b"PCNN"
VERSION = const(1)
HEADER_SIZE = const(40)
RECORD_SIZE = const(48)
MAX_LAYERS = const(64)

# layer kinds (FORMAT.md) and the extra kernel slots of the dispatch tables
DENSE_F32 = const(1)
DENSE_Q8W = const(2)
DENSE_Q8 = const(3)
SPARSE_F32 = const(4)
SPARSE_Q8 = const(5)
BINARIZE = const(6)
XNOR_DENSE = const(7)
XNOR_OUT = const(8)
_RELU = const(9)
_ARGMAX_I32 = const(10)
_ARGMAX_F32 = const(11)
_CHECK_CSC = const(12)
_CHECK_F32 = const(13)

KINDS = ("", "dense_f32", "dense_q8w", "dense_q8", "sparse_f32", "sparse_q8",
         "binarize", "xnor_dense", "xnor_out")
_FUNCS = KINDS + ("relu_f32", "argmax_i32", "argmax_f32", "check_csc", "check_f32")
DTYPES = ("u8", "f32", "bits", "i32")
ACTS = ("none", "relu", "sigmoid", "tanh", "softmax")
_U8 = const(0)
_F32 = const(1)
_BITS = const(2)
_I32 = const(3)

# (allowed in dtypes, allowed out dtypes) as bit masks over dtype codes, per kind
_KIND_DT = ((0, 0), (3, 2), (3, 2), (1, 9), (3, 2), (1, 9), (1, 4), (4, 4), (4, 8))
# f32 parameter slots (checked finite at load), per kind
_F32_SLOTS = (0, 0b11, 0b1100, 0, 0b1100, 0, 0, 0, 0)
# parameter slots that must be word-aligned for the viper/C tiers, per kind
_WORD_SLOTS = (0, 0b11, 0b1100, 0b1100, 0b1101, 0b110001, 0, 0b11, 0b111)
_I32_MAX = const(0x7FFFFFFF)
_MAC_MAX = const(65025)  # 255 * 255: the largest |x * (w - zw)| of a u8 layer
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
    # _nn_c.run if it returns the last call's result (argmax steps) and checks its input,
    # as the firmware built with this nn does; else None (then every call goes by bytecode)
    r = getattr(_nn_c, "run", None) if _nn_c is not None else None
    if r is None:
        return None
    try:
        if r(((_nn_c.argmax_i32, (None, 2)),), array("i", (0, 1))) == 1:
            return r
    except (TypeError, ValueError):
        pass
    return None


# run(steps, x): a whole model in one call from bytecode (docs/KERNELS.md), or None
_run = _probe_run()
_crun = False  # the tier in use is 'c' and has run(): models whose layers all run in C use it


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


_CRC_TABLE = None


def _crc32_py(data):
    # CRC-32 (zlib), nibble table; only for ports without binascii.crc32
    global _CRC_TABLE
    if _CRC_TABLE is None:
        t = []
        for n in range(16):
            c = n
            for _ in range(4):
                c = (c >> 1) ^ (0xEDB88320 if c & 1 else 0)
            t.append(c)
        _CRC_TABLE = t
    t = _CRC_TABLE
    c = 0xFFFFFFFF
    for b in data:
        c ^= b
        c = (c >> 4) ^ t[c & 15]
        c = (c >> 4) ^ t[c & 15]
    return c ^ 0xFFFFFFFF


def _array_bytes(kind, slot, n_i, n_o, nnz, ib):
    # byte length of parameter array `slot` of a layer (before padding); 0 = unused
    sizes = ()  # type: tuple
    if kind == DENSE_F32:
        sizes = (4 * n_i * n_o, 4 * n_o)
    elif kind == DENSE_Q8W:
        sizes = (n_i * n_o, n_o, 4 * n_o, 4 * n_o)
    elif kind == DENSE_Q8:
        sizes = (n_i * n_o, n_o, 4 * n_o, 4 * n_o)
    elif kind == SPARSE_F32:
        sizes = (4 * (n_i + 1), ib * nnz, 4 * nnz, 4 * n_o)
    elif kind == SPARSE_Q8:
        sizes = (4 * (n_i + 1), ib * nnz, nnz, n_o, 4 * n_o, 4 * n_o)
    elif kind == XNOR_DENSE:
        sizes = (((n_i + 31) >> 5) * 4 * n_o, 4 * n_o)
    elif kind == XNOR_OUT:
        sizes = (((n_i + 31) >> 5) * 4 * n_o, 4 * n_o, 4 * n_o)
    return sizes[slot] if slot < len(sizes) else 0


def _i32_at(m, k):
    # i32 element k of byte buffer m, as a Python int (load time only)
    return struct.unpack_from("<i", m, k << 2)[0]


def _abs_i32_max(m, n):
    top = 0
    for c in range(n):
        v = _i32_at(m, c)
        if v < 0:
            v = -v
        if v > top:
            top = v
    return top


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

    src: bytes / bytearray / memoryview holding the model (used in place: frozen
    bytes stay in flash, nothing is copied); a module with a MODEL attribute (as
    written by `piconn export`); or a file path (a file on ROMFS is used in place
    through the buffer protocol, any other file is read into RAM). For ROMFS build
    the image with `piconn romfs` (models on 16-byte boundaries, then `mpremote
    romfs deploy IMAGE`): `mpremote romfs deploy FOLDER` leaves them unaligned,
    which costs a RAM copy of every word array (see `copies`).
    Validates magic, version, sizes, CRC-32, every offset and length, sparse
    indices, requantization fields and the dtype chain: ValueError/TypeError with
    a message on bad input. Cost: one pass over the bytes (CRC) plus one over the
    sparse indices; RAM: the activation buffers (a few hundred bytes for MNIST
    models) and copies of misaligned word arrays (none for aligned buffers).
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
        buf = src if t is memoryview else memoryview(src)
        if t is bytearray:
            where = "ram"
    elif hasattr(src, "MODEL"):
        owner = src
        model = src.MODEL
        if type(model) is not bytes and type(model) is not bytearray:
            raise TypeError("%s.MODEL must be bytes, not %s" % (getattr(src, "__name__", "module"),
                                                                type(model).__name__))
        buf = memoryview(model)
        if name is None:
            name = getattr(src, "NAME", None) or getattr(src, "__name__", None)
    else:
        raise TypeError("nn.load takes bytes, bytearray, memoryview, a model module or a "
                        "file path, not %s" % t.__name__)
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
        n = len(buf)
        if n < HEADER_SIZE:
            raise ValueError("model too short: %d bytes, the header alone is %d" % (n, HEADER_SIZE))
        magic = bytes(buf[0:4])
        if magic != MAGIC:
            raise ValueError("not a piconn model: magic %r, expected %r" % (magic, MAGIC))
        (version, hsize, total, crc, n_layers, rsize, in_size, out_size, in_dt, out_dt,
         _r0, out_scale, _r1) = struct.unpack_from("<HHIIHHIIBBHfI", buf, 4)
        if version != VERSION:
            raise ValueError("model format version %d, this reader knows version %d"
                             % (version, VERSION))
        if hsize != HEADER_SIZE or rsize != RECORD_SIZE:
            raise ValueError("header/record size %d/%d, expected %d/%d"
                             % (hsize, rsize, HEADER_SIZE, RECORD_SIZE))
        if total != n:
            raise ValueError("model says %d bytes but the buffer has %d" % (total, n))
        got = _crc32(buf[16:]) if _crc32 is not None else _crc32_py(buf[16:])
        if got & 0xFFFFFFFF != crc:
            raise ValueError("model CRC mismatch: the bytes are corrupt")
        if not 1 <= n_layers <= MAX_LAYERS:
            raise ValueError("bad layer count %d (1..%d)" % (n_layers, MAX_LAYERS))
        table_end = HEADER_SIZE + RECORD_SIZE * n_layers
        if table_end > total:
            raise ValueError("layer table runs past the end of the model")
        if in_dt != _U8 and in_dt != _F32:
            raise ValueError("model input dtype %d: must be u8 or f32" % in_dt)
        if out_dt != _F32 and out_dt != _I32:
            raise ValueError("model output dtype %d: must be f32 or i32" % out_dt)

        base = _address(buf)
        self.aligned = base is None or base & 3 == 0
        self.in_flash = base is not None and _is_flash(base)  # frozen bytes or ROMFS
        self.where = where or ("flash" if self.in_flash else "in place")
        ram = n if where == "file" else 0  # the copy load() made
        copies = 0
        plan = []
        kinds = []
        prev_n, prev_dt = in_size, in_dt
        max_acc = 0
        param_bytes = 0
        for k in range(n_layers):
            rec = struct.unpack_from("<BBBBHHIBBBB8I", buf, HEADER_SIZE + RECORD_SIZE * k)
            (kind, act, dt_in, dt_out, n_i, n_o, nnz, zy, ib, thr) = rec[:10]
            offs = rec[11:]
            if not 1 <= kind <= 8:
                raise ValueError("layer %d: unknown layer kind %d" % (k, kind))
            kname = KINDS[kind]
            ok_in, ok_out = _KIND_DT[kind]
            if dt_in > 3 or dt_out > 3 or not (ok_in >> dt_in) & 1 or not (ok_out >> dt_out) & 1:
                raise ValueError("layer %d (%s): dtypes %s->%s not allowed"
                                 % (k, kname, _dtn(dt_in), _dtn(dt_out)))
            if n_i != prev_n or dt_in != prev_dt:
                raise ValueError("layer %d (%s) takes %d %s, previous gives %d %s"
                                 % (k, kname, n_i, _dtn(dt_in), prev_n, _dtn(prev_dt)))
            if act >= len(ACTS) or (act and dt_out != _F32):
                raise ValueError("layer %d: bad activation code %d" % (k, act))
            sparse = kind == SPARSE_F32 or kind == SPARSE_Q8
            if sparse:
                if ib != 1 and ib != 2 or ib == 1 and n_o > 256:
                    raise ValueError("layer %d: bad sparse index width %d" % (k, ib))
                if nnz > n_i * n_o:
                    raise ValueError("layer %d: bad stored-weight count %d" % (k, nnz))
            else:
                if ib:
                    raise ValueError("layer %d: bad sparse index width %d" % (k, ib))
                if nnz:
                    raise ValueError("layer %d: bad stored-weight count %d" % (k, nnz))
            if kind == BINARIZE and n_i != n_o:
                raise ValueError("layer %d: binarize must keep its size" % k)
            p = [None] * 6  # type: list
            words = _WORD_SLOTS[kind] | (0b10 if sparse and ib == 2 else 0)
            pyonly = False
            for slot in range(8):
                off = offs[slot]
                size = _array_bytes(kind, slot, n_i, n_o, nnz, ib)
                if ((kind == DENSE_Q8 and slot == 3) or (kind == SPARSE_Q8 and slot == 5)) \
                        and dt_out != _U8:
                    size = 0
                if size == 0:
                    if off:
                        raise ValueError("layer %d: unused parameter slot %d has an offset"
                                         % (k, slot))
                    continue
                if off & 3 or off < table_end or off + size > total:
                    raise ValueError("layer %d: parameter %d at %d+%d outside the model"
                                     % (k, slot, off, size))
                a = buf[off:off + size]
                param_bytes += size
                if (words >> slot) & 1 and base is not None and (base + off) & 3:
                    try:
                        a = memoryview(bytearray(a))  # heap blocks are word-aligned
                        copies += size
                    except MemoryError:
                        pyonly = True  # the python tier reads any alignment
                p[slot] = a
            for slot in range(6):
                if p[slot] is None:
                    p[slot] = b""  # nnz == 0: empty arrays
            self._check_layer(k, kind, p, n_i, n_o, nnz, ib, dt_in, dt_out, pyonly)
            y, nb = _buffer(n_o, dt_out)
            ram += nb
            if (kind == DENSE_Q8 or kind == SPARSE_Q8) and dt_out == _U8 and n_o > max_acc:
                max_acc = n_o
            plan.append([kind, act, n_i, n_o, y, None, 1 if dt_in == _U8 else 0, zy, ib, thr,
                         pyonly, p[0], p[1], p[2], p[3], p[4], p[5], dt_in, dt_out])
            kinds.append(kind)
            prev_n, prev_dt = n_o, dt_out
        if prev_n != out_size or prev_dt != out_dt:
            raise ValueError("last layer gives %d %s, the header says %d %s"
                             % (prev_n, _dtn(prev_dt), out_size, _dtn(out_dt)))
        acc = None
        if max_acc:
            acc = array("i", bytes(4 * max_acc))
            ram += 4 * max_acc
        for L in plan:
            if L[0] == DENSE_Q8 or L[0] == SPARSE_Q8:
                L[5] = acc if type(L[4]) is bytearray else L[4]
        self._plan = [tuple(L) for L in plan]
        self._last = self._plan[-1]
        # the whole model as one _nn_c.run() call (forward; predict with the argmax too)
        self._fwd, self._pred, self._post = _c_steps(self._plan, out_size, out_dt == _I32)
        self._y = self._last[4]
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
        # probes for alloc-free dtype checks of inputs (see _input)
        self._b0 = array("B")
        self._i0 = array("i")
        self._l0 = array("l")
        self._xf = None  # type: array | None
        if not self._in_u8:
            self._xf = array("f", bytes(4 * in_size))
            ram += 4 * in_size
        self._yf = array("f", bytes(4 * out_size))
        ram += 4 * out_size
        self.copies = copies
        self.ram = ram + copies
        if any(k == XNOR_DENSE or k == XNOR_OUT for k in kinds):
            self.family = "xnor"
        elif any(k == SPARSE_F32 or k == SPARSE_Q8 for k in kinds):
            self.family = "sparse"
        elif any(k == DENSE_Q8 or k == DENSE_Q8W for k in kinds):
            self.family = "uint8"
        else:
            self.family = "float"
        self.integer = all(k != DENSE_F32 and k != DENSE_Q8W and k != SPARSE_F32 for k in kinds)

    def _check_layer(self, k, kind, p, n_i, n_o, nnz, ib, dt_in, dt_out, pyonly):
        # content checks (FORMAT.md), after all sizes are known to be in bounds
        f32 = _F32_SLOTS[kind]
        for slot in range(4):
            if (f32 >> slot) & 1 and len(p[slot]):
                if (_tbl_py if pyonly else _tbl)[_CHECK_F32](p[slot], len(p[slot]) >> 2):
                    raise ValueError("layer %d: parameter %d holds NaN or infinity" % (k, slot))
        if kind == SPARSE_F32 or kind == SPARSE_Q8:
            bad = (_tbl_py if pyonly else _tbl)[_CHECK_CSC](p[0], p[1], ib, n_i, n_o, nnz)
            if bad:
                if bad > n_i:
                    raise ValueError("layer %d: sparse column pointers are not a valid CSC "
                                     "index" % k)
                raise ValueError("layer %d: sparse column %d: row indices not increasing or "
                                 "outside %d outputs" % (k, bad - 1, n_o))
        if kind == DENSE_Q8 or kind == SPARSE_Q8:
            if dt_out == _U8:
                rq = p[3] if kind == DENSE_Q8 else p[5]
                for c in range(n_o):
                    o = c << 2
                    if rq[o + 1] & 0x80 or rq[o + 2] > 31 or not 1 <= rq[o + 3] <= 30:
                        raise ValueError("layer %d: requantization parameters out of range" % k)
            bias = p[2] if kind == DENSE_Q8 else p[4]
            _bound(k, _abs_i32_max(bias, n_o), _MAC_MAX * n_i)
        elif kind == DENSE_Q8W and dt_in == _U8:
            _bound(k, 0, _MAC_MAX * n_i)
        elif kind == XNOR_DENSE or kind == XNOR_OUT:
            nw = (n_i + 31) >> 5
            pad = n_i & 31
            if pad:
                w = p[0]
                keep = (1 << pad) - 1  # valid bits of the last word
                for c in range(n_o):
                    o = ((c + 1) * nw - 1) << 2
                    last = w[o] | (w[o + 1] << 8) | (w[o + 2] << 16) | (w[o + 3] << 24)
                    if last & ~keep:
                        raise ValueError("layer %d: padding bits set in weight row %d" % (k, c))
            if kind == XNOR_OUT:
                _bound(k, _abs_i32_max(p[2], n_o), _abs_i32_max(p[1], n_o) * n_i)

    # ------------------------------------------------------------ running

    def _input(self, x):
        # validate x without allocating; returns the buffer layer 0 reads
        n = self.input_size
        t = type(x)
        if self._in_u8:
            if t is not bytes and t is not bytearray:
                if t is not memoryview and t is not array:
                    raise TypeError("this model takes %d raw bytes (bytes, bytearray, "
                                    "memoryview), not %s" % (n, t.__name__))
                try:
                    self._b0 < x  # only byte-typed buffers compare without error
                except Exception:
                    raise TypeError("this model takes %d raw bytes; the %s holds wider "
                                    "elements" % (n, t.__name__))
            if len(x) != n:
                raise ValueError("this model takes %d bytes, got %d" % (n, len(x)))
            return x
        if t is not array and t is not memoryview:
            raise TypeError("this model takes array('f') of %d floats, not %s"
                            % (n, t.__name__))
        if len(x) != n:
            raise ValueError("this model takes %d floats, got %d" % (n, len(x)))
        _int_typed(self, x)
        xf = self._xf
        assert xf is not None
        try:
            xf[0:n] = x  # copies; refuses elements that are not 4 bytes wide
        except Exception:
            raise TypeError("this model takes array('f'), not an array of 8-byte floats")
        return xf

    def forward(self, x, out=None):
        """Run the model on one input; returns the output buffer.

        x: `input_size` raw bytes (bytes/bytearray/memoryview) for a u8-input model,
        array('f') for an f32-input one (the python/viper tiers copy it into the
        model's input buffer). Wrong type or size: TypeError/ValueError (O(1) check).
        Returns array('f') (logits, or the last activation) or array('i') (raw scores:
        times `output_scale` = logits). The returned buffer belongs to the model and
        is overwritten by the next call; pass `out` (an array of the same type and
        length) to have the last layer write there instead.
        In the C tier a model whose layers all have C kernels runs as one call
        (_nn_c.run, docs/KERNELS.md); with `out`, or in the other tiers, each layer
        is one call from bytecode (about 25 us each on an RP2040).
        RAM: none (buffers were made by load); the python/viper tiers box floats for
        float layers. Time on an RP2040 at 125 MHz (784-128-10, emulated, weights in
        flash): C 1.5 ms (uint8), 0.67 ms (sparse uint8), 1.4 ms (XNOR 784-256-256-10),
        34 ms (float); viper 11 ms (uint8), 2.6 ms (sparse uint8), 3.6 ms (XNOR);
        python 0.14-1.1 s (integer kinds), seconds for float kinds.
        """
        if _crun and out is None:
            s = self._fwd
            if s is not None:
                _run(s, x)  # the whole model from C; checks x (O(1))
                if self._post:
                    _activate(self._y, self.output_size, self._post)
                return self._y
        x = self._input(x)
        if out is not None:
            self._check_out(out)
        last = self._last
        for L in self._plan:
            k = L[0]
            f = _tbl_py[k] if L[10] else _tbl[k]
            y = L[4]
            if out is not None and L is last:
                y = out
            if k == DENSE_Q8:
                f(x, L[11], L[12], L[13], L[14] if L[14] else None,
                  L[5] if type(y) is bytearray else y, y, L[2], L[3], L[7])
            elif k == SPARSE_Q8:
                f(x, L[11], L[12], L[8], L[13], L[14], L[15], L[16] if L[16] else None,
                  L[5] if type(y) is bytearray else y, y, L[2], L[3], L[7])
            elif k == XNOR_DENSE:
                f(x, L[11], L[12], y, L[2], L[3])
            elif k == XNOR_OUT:
                f(x, L[11], L[12], L[13], y, L[2], L[3])
            elif k == BINARIZE:
                f(x, L[9], y, L[2])
            elif k == DENSE_F32:
                f(x, L[6], L[11], L[12], y, L[2], L[3])
            elif k == DENSE_Q8W:
                f(x, L[6], L[11], L[12], L[13], L[14], y, L[2], L[3])
            else:  # SPARSE_F32
                f(x, L[6], L[11], L[12], L[8], L[13], L[14], y, L[2], L[3])
            a = L[1]
            if a:
                if a == 1:
                    (_tbl_py[_RELU] if L[10] else _tbl[_RELU])(y, L[3])
                else:
                    _activate(y, L[3], a)
            x = y
        return x

    def predict(self, x):
        """Class index (int) of one input: the first maximum of forward(x), NaN first
        for float outputs (as numpy's argmax). Costs forward() plus an O(output_size)
        scan (in the C tier both in the one _nn_c.run call: XNOR 784-256-256-10 1.34 ms
        on the emulated RP2040); allocates nothing more."""
        if _crun:
            s = self._pred
            if s is not None:
                return _run(s, x)  # layers and argmax in one call from bytecode
        y = self.forward(x)
        if self._out_i32:
            return _tbl[_ARGMAX_I32](y, self.output_size)
        return _tbl[_ARGMAX_F32](y, self.output_size)

    def _check_out(self, out):
        n = self.output_size
        if type(out) is not array or len(out) != n:
            raise TypeError("out must be array('%s') of %d elements"
                            % ("i" if self._out_i32 else "f", n))
        if self._out_i32:
            try:
                self._i0 == out  # compares without error only for 4-byte int arrays
            except Exception:
                raise TypeError("out must be array('i') of %d elements" % n)
        else:
            _int_typed(self, out)
            try:
                self._yf[0:n] = out  # element width check (copies n floats)
            except Exception:
                raise TypeError("out must be array('f') of %d elements" % n)

    # ------------------------------------------------------------ reporting

    def tiers(self):
        """The tier ('c', 'viper', 'python') that runs each layer, as a list."""
        return [("python" if L[10] else _tbl_tier[L[0]]) for L in self._plan]

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
            pb = 0
            for s in range(11, 17):
                pb += len(L[s])
            lines.append("  %-2d %-11s %-8s %-11s %-11s %-9d %s" % (
                i, KINDS[L[0]], ACTS[L[1]], "%d %s" % (L[2], DTYPES[L[17]]),
                "%d %s" % (L[3], DTYPES[L[18]]), pb, tiers[i]))
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


def _c_steps(plan, n_out, out_i32):
    # (forward steps, predict steps, activation left to Python) for _nn_c.run, or
    # (None, None, 0) when a layer cannot run in C. The steps are the kernel calls of
    # Model.forward with the input (args[0] of the first step) left None; a sigmoid,
    # tanh or softmax may only follow the last layer (applied by Python after run).
    if _run is None:
        return None, None, 0
    steps = []  # type: list
    x = None
    post = 0
    for i in range(len(plan)):
        L = plan[i]
        k = L[0]
        f = getattr(_nn_c, _FUNCS[k], None)
        if f is None or L[10] or post:
            return None, None, 0
        y = L[4]
        a = ()  # type: tuple
        if k == DENSE_Q8:
            a = (x, L[11], L[12], L[13], L[14] if L[14] else None,
                 L[5] if type(y) is bytearray else y, y, L[2], L[3], L[7])
        elif k == SPARSE_Q8:
            a = (x, L[11], L[12], L[8], L[13], L[14], L[15], L[16] if L[16] else None,
                 L[5] if type(y) is bytearray else y, y, L[2], L[3], L[7])
        elif k == XNOR_DENSE:
            a = (x, L[11], L[12], y, L[2], L[3])
        elif k == XNOR_OUT:
            a = (x, L[11], L[12], L[13], y, L[2], L[3])
        elif k == BINARIZE:
            a = (x, L[9], y, L[2])
        elif k == DENSE_F32:
            a = (x, L[6], L[11], L[12], y, L[2], L[3])
        elif k == DENSE_Q8W:
            a = (x, L[6], L[11], L[12], L[13], L[14], y, L[2], L[3])
        else:  # SPARSE_F32
            a = (x, L[6], L[11], L[12], L[8], L[13], L[14], y, L[2], L[3])
        steps.append((f, a))
        if L[1] == 1:
            steps.append((_nn_c.relu_f32, (y, L[3])))
        elif L[1]:
            post = L[1]
        x = y
    fwd = tuple(steps)
    if post:
        return fwd, None, post
    am = _nn_c.argmax_i32 if out_i32 else _nn_c.argmax_f32
    return fwd, fwd + ((am, (x, n_out)),), 0


def _dtn(code):
    return DTYPES[code] if code < 4 else "dtype%d" % code


def _int_typed(model, x):
    # TypeError if x holds ints: those compare with an int array without error
    # (a float array raises; no allocation either way)
    ok = True
    try:
        model._i0 == x
    except Exception:
        ok = False
    if not ok:
        try:
            model._l0 == x
            ok = True
        except Exception:
            pass
    if ok:
        raise TypeError("this model takes array('f'), not an integer array")


def _bound(k, bias, macs):
    if bias + macs > _I32_MAX:
        raise ValueError("layer %d: accumulator could leave the int32 range (|bias| %d + "
                         "%d)" % (k, bias, macs))


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
