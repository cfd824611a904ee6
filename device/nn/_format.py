# nn._format: the piconn model format (docs/FORMAT.md, version 1) as nn.load reads it:
# the header and layer record layouts, the table of layer kinds, and every rule of
# FORMAT.md, each checked once at load so that the kernels can trust the model.
#
# The table of kinds is a copy of host/piconn/format.py's (the one source of truth);
# tests/test_format_rules.py checks the two entry by entry. Messages are the host
# reader's too: both refuse a bad model with the same words.
import struct

from micropython import const

MAGIC = b"PCNN"
VERSION = const(1)
HEADER_SIZE = const(40)
RECORD_SIZE = const(48)
MAX_LAYERS = const(64)
N_SLOTS = const(8)  # parameter offsets per layer record
MAX_N = const(65535)  # largest n_in / n_out (u16 fields)
HEADER = "<HHIIHHIIBBHfI"  # the header after its magic
RECORD = "<BBBBHHIBBBB8I"

# dtypes
U8 = const(0)
F32 = const(1)
BITS = const(2)
I32 = const(3)
DTYPES = ("u8", "f32", "bits", "i32")

# activations
ACT_NONE = const(0)
ACT_RELU = const(1)
ACT_SOFTMAX = const(4)
ACTS = ("none", "relu", "sigmoid", "tanh", "softmax")

# layer kinds
DENSE_F32 = const(1)
DENSE_Q8W = const(2)
DENSE_Q8 = const(3)
SPARSE_F32 = const(4)
SPARSE_Q8 = const(5)
BINARIZE = const(6)
XNOR_DENSE = const(7)
XNOR_OUT = const(8)

# Lengths of parameter arrays, in elements
LEN_IN_OUT = const(0)  # n_in * n_out
LEN_OUT = const(1)  # n_out
LEN_COLPTR = const(2)  # n_in + 1
LEN_NNZ = const(3)  # stored weights
LEN_BIT_ROWS = const(4)  # n_out rows of ceil(n_in / 32) words

# Elements of parameter arrays
EL_U8 = const(0)
EL_F32 = const(1)  # finite (content rule 1)
EL_I32 = const(2)
EL_U32 = const(3)  # sparse column pointers
EL_INDEX = const(4)  # sparse row indices: u8 or u16 (index_bytes)
EL_BITS = const(5)  # u32 words of packed bits, padding bits 0 (content rule 3)
EL_RQ = const(6)  # requantization words (content rule 5); only for a u8 output

# Fields of an entry of KINDS
KIND_NAME = const(0)
KIND_IN = const(1)  # input dtypes it takes
KIND_OUT = const(2)  # output dtypes it gives
KIND_SLOTS = const(3)  # its parameter arrays in slot order: (length, element)

KINDS = (
    None,
    ("dense_f32", (U8, F32), (F32,), ((LEN_IN_OUT, EL_F32), (LEN_OUT, EL_F32))),
    ("dense_q8w", (U8, F32), (F32,),
     ((LEN_IN_OUT, EL_U8), (LEN_OUT, EL_U8), (LEN_OUT, EL_F32), (LEN_OUT, EL_F32))),
    ("dense_q8", (U8,), (U8, I32),
     ((LEN_IN_OUT, EL_U8), (LEN_OUT, EL_U8), (LEN_OUT, EL_I32), (LEN_OUT, EL_RQ))),
    ("sparse_f32", (U8, F32), (F32,),
     ((LEN_COLPTR, EL_U32), (LEN_NNZ, EL_INDEX), (LEN_NNZ, EL_F32), (LEN_OUT, EL_F32))),
    ("sparse_q8", (U8,), (U8, I32),
     ((LEN_COLPTR, EL_U32), (LEN_NNZ, EL_INDEX), (LEN_NNZ, EL_U8), (LEN_OUT, EL_U8),
      (LEN_OUT, EL_I32), (LEN_OUT, EL_RQ))),
    ("binarize", (U8,), (BITS,), ()),
    ("xnor_dense", (BITS,), (BITS,), ((LEN_BIT_ROWS, EL_BITS), (LEN_OUT, EL_I32))),
    ("xnor_out", (BITS,), (I32,),
     ((LEN_BIT_ROWS, EL_BITS), (LEN_OUT, EL_I32), (LEN_OUT, EL_I32))),
)  # type: tuple
N_KINDS = const(8)

# Parameter slots by name, where the kernels' arguments need them
SLOT_BIAS_Q8 = const(2)  # dense_q8
SLOT_RQ_Q8 = const(3)
SLOT_BIAS_SPARSE_Q8 = const(4)
SLOT_RQ_SPARSE_Q8 = const(5)
MAX_SLOTS = const(6)  # the most any kind uses

I32_MAX = const(0x7FFFFFFF)
MAC_MAX = const(65025)  # 255 * 255: the largest |x * (w - zw)| of a u8 layer


_INF = float("inf")


def dtype_name(code):
    return DTYPES[code] if code < len(DTYPES) else "dtype%d" % code


def _sparse(kind):
    return kind == SPARSE_F32 or kind == SPARSE_Q8


def array_bytes(kind, slot, n_i, n_o, nnz, ib, dt_out):
    """Byte length of parameter array `slot` of a layer (before padding); 0: none."""
    slots = KINDS[kind][KIND_SLOTS]
    if slot >= len(slots):
        return 0
    length, el = slots[slot]
    if el == EL_RQ and dt_out != U8:
        return 0
    if length == LEN_IN_OUT:
        n = n_i * n_o
    elif length == LEN_OUT:
        n = n_o
    elif length == LEN_COLPTR:
        n = n_i + 1
    elif length == LEN_NNZ:
        n = nnz
    else:  # LEN_BIT_ROWS
        n = ((n_i + 31) >> 5) * n_o
    if el == EL_U8:
        return n
    if el == EL_INDEX:
        return n * ib
    return 4 * n


def word_slot(kind, slot, ib):
    """True if the viper/C kernels read array `slot` as words (so it must be aligned)."""
    el = KINDS[kind][KIND_SLOTS][slot][1]
    return el != EL_U8 and (el != EL_INDEX or ib == 2)


def header(buf):
    """Check the header (FORMAT.md "Header"); returns (n_layers, input_size, output_size,
    input dtype, output dtype, output_scale)."""
    n = len(buf)
    if n < HEADER_SIZE:
        raise ValueError("model too short: %d bytes, the header alone is %d" % (n, HEADER_SIZE))
    magic = bytes(buf[0:4])
    if magic != MAGIC:
        raise ValueError("not a piconn model: magic %r, expected %r" % (magic, MAGIC))
    (version, hsize, total, crc, n_layers, rsize, in_size, out_size, in_dt, out_dt,
     reserved16, out_scale, reserved32) = struct.unpack_from(HEADER, buf, 4)
    if version != VERSION:
        raise ValueError("model format version %d, this reader knows version %d"
                         % (version, VERSION))
    if hsize != HEADER_SIZE or rsize != RECORD_SIZE:
        raise ValueError("header/record size %d/%d, expected %d/%d"
                         % (hsize, rsize, HEADER_SIZE, RECORD_SIZE))
    if total != n:
        raise ValueError("model says %d bytes but the buffer has %d" % (total, n))
    if crc32(buf[16:]) & 0xFFFFFFFF != crc:
        raise ValueError("model CRC mismatch: the bytes are corrupt")
    if not 1 <= n_layers <= MAX_LAYERS:
        raise ValueError("bad layer count %d (1..%d)" % (n_layers, MAX_LAYERS))
    if HEADER_SIZE + RECORD_SIZE * n_layers > total:
        raise ValueError("layer table runs past the end of the model")
    if reserved16 or reserved32:
        raise ValueError("reserved header field not 0 (%d, %d)" % (reserved16, reserved32))
    if in_dt != U8 and in_dt != F32:
        raise ValueError("model input dtype %d: must be u8 or f32" % in_dt)
    if out_dt != F32 and out_dt != I32:
        raise ValueError("model output dtype %d: must be f32 or i32" % out_dt)
    # finite and positive: predict's argmax of the raw output is the argmax of the logits
    if not 0 < out_scale < _INF or out_dt == F32 and out_scale != 1.0:
        raise ValueError("bad output scale %r: must be finite and > 0, and 1.0 for an f32 "
                         "output" % out_scale)
    return n_layers, in_size, out_size, in_dt, out_dt, out_scale


def record(buf, k, n_layers, prev_n, prev_dt):
    """Check layer record k (FORMAT.md "Layer table") against the previous layer's output;
    returns (kind, act, dt_in, dt_out, n_i, n_o, nnz, zy, ib, thr, offsets)."""
    rec = struct.unpack_from(RECORD, buf, HEADER_SIZE + RECORD_SIZE * k)
    (kind, act, dt_in, dt_out, n_i, n_o, nnz, zy, ib, thr, reserved) = rec[:11]
    if not 1 <= kind <= N_KINDS:
        raise ValueError("layer %d: unknown layer kind %d" % (k, kind))
    spec = KINDS[kind]
    name = spec[KIND_NAME]
    if dt_in not in spec[KIND_IN] or dt_out not in spec[KIND_OUT]:
        raise ValueError("layer %d (%s): dtypes %s->%s not allowed"
                         % (k, name, dtype_name(dt_in), dtype_name(dt_out)))
    if n_i != prev_n or dt_in != prev_dt:
        raise ValueError("layer %d (%s) takes %d %s, previous gives %d %s"
                         % (k, name, n_i, dtype_name(dt_in), prev_n, dtype_name(prev_dt)))
    if n_i == 0 or n_o == 0:
        raise ValueError("layer %d (%s): size %d->%d, sizes are 1..%d"
                         % (k, name, n_i, n_o, MAX_N))
    if act >= len(ACTS) or (act and dt_out != F32):
        raise ValueError("layer %d: bad activation code %d" % (k, act))
    if act == ACT_SOFTMAX and k != n_layers - 1:
        raise ValueError("layer %d: softmax on a layer that is not the last" % k)
    if _sparse(kind):
        if ib != 1 and ib != 2 or ib == 1 and n_o > 256:
            raise ValueError("layer %d: bad sparse index width %d" % (k, ib))
        if nnz > n_i * n_o:
            raise ValueError("layer %d: bad stored-weight count %d" % (k, nnz))
    else:
        if ib:
            raise ValueError("layer %d: bad sparse index width %d" % (k, ib))
        if nnz:
            raise ValueError("layer %d: bad stored-weight count %d" % (k, nnz))
    if zy and not ((kind == DENSE_Q8 or kind == SPARSE_Q8) and dt_out == U8):
        raise ValueError("layer %d: output zero point %d on a layer without a u8 output"
                         % (k, zy))
    if thr and kind != BINARIZE:
        raise ValueError("layer %d: threshold %d on a layer that is not binarize" % (k, thr))
    if reserved:
        raise ValueError("layer %d: reserved record byte not 0 (%d)" % (k, reserved))
    if kind == BINARIZE and n_i != n_o:
        raise ValueError("layer %d: binarize must keep its size" % k)
    return kind, act, dt_in, dt_out, n_i, n_o, nnz, zy, ib, thr, rec[11:]


def arrays(buf, k, kind, offs, n_i, n_o, nnz, ib, dt_out, table_end):
    """The layer's parameter arrays as memoryviews into buf (b"" for an empty array),
    after the offset rules of FORMAT.md "Layer table"."""
    total = len(buf)
    p = []
    for slot in range(N_SLOTS):
        off = offs[slot]
        size = array_bytes(kind, slot, n_i, n_o, nnz, ib, dt_out)
        if size == 0:
            if off:
                raise ValueError("layer %d: unused parameter slot %d has an offset" % (k, slot))
            if slot < MAX_SLOTS:
                p.append(b"")
            continue
        if off & 3 or off < table_end or off + size > total:
            raise ValueError("layer %d: parameter %d at %d+%d outside the model"
                             % (k, slot, off, size))
        p.append(buf[off:off + size])
    return p


def content(k, kind, p, n_i, n_o, nnz, ib, dt_in, dt_out, check_f32, check_csc):
    """The content rules of FORMAT.md on a layer's arrays p (sizes already checked).
    check_f32 and check_csc are the kernel tier's (docs/KERNELS.md)."""
    slots = KINDS[kind][KIND_SLOTS]
    for slot in range(len(slots)):
        if slots[slot][1] == EL_F32 and len(p[slot]):
            if check_f32(p[slot], len(p[slot]) >> 2):
                raise ValueError("layer %d: parameter %d holds NaN or infinity" % (k, slot))
    if _sparse(kind):
        bad = check_csc(p[0], p[1], ib, n_i, n_o, nnz)
        if bad:
            if bad > n_i:
                raise ValueError("layer %d: sparse column pointers are not a valid CSC index"
                                 % k)
            raise ValueError("layer %d: sparse column %d: row indices not increasing or "
                             "outside %d outputs" % (k, bad - 1, n_o))
    if kind == DENSE_Q8 or kind == SPARSE_Q8:
        if dt_out == U8:
            rq = p[SLOT_RQ_Q8 if kind == DENSE_Q8 else SLOT_RQ_SPARSE_Q8]
            for c in range(n_o):
                o = c << 2  # bytes M (15 bits), M, s1, s2 of word c
                if rq[o + 1] & 0x80 or rq[o + 2] > 31 or not 1 <= rq[o + 3] <= 30:
                    raise ValueError("layer %d: requantization parameters out of range" % k)
        bias = p[SLOT_BIAS_Q8 if kind == DENSE_Q8 else SLOT_BIAS_SPARSE_Q8]
        _bound(k, _abs_i32_max(bias, n_o), MAC_MAX * n_i)
    elif kind == DENSE_Q8W and dt_in == U8:
        _bound(k, 0, MAC_MAX * n_i)
    elif kind == XNOR_DENSE or kind == XNOR_OUT:
        nw = (n_i + 31) >> 5
        pad = n_i & 31
        if pad:
            w = p[0]
            keep = (1 << pad) - 1  # valid bits of a row's last word
            for c in range(n_o):
                o = ((c + 1) * nw - 1) << 2
                last = w[o] | (w[o + 1] << 8) | (w[o + 2] << 16) | (w[o + 3] << 24)
                if last & ~keep:
                    raise ValueError("layer %d: padding bits set in weight row %d" % (k, c))
        if kind == XNOR_OUT:
            _bound(k, _abs_i32_max(p[2], n_o), _abs_i32_max(p[1], n_o) * n_i)


def _abs_i32_max(m, n):
    top = 0
    for c in range(n):
        v = struct.unpack_from("<i", m, c << 2)[0]
        if v < 0:
            v = -v
        if v > top:
            top = v
    return top


def _bound(k, bias, macs):
    if bias + macs > I32_MAX:
        raise ValueError("layer %d: accumulator could leave the int32 range (|bias| %d + "
                         "%d)" % (k, bias, macs))


# ------------------------------------------------------------------ CRC-32

try:
    from binascii import crc32
except ImportError:  # pragma: no cover - ports without binascii.crc32
    _crc_table = None

    def crc32(data):  # type: ignore[misc]
        # CRC-32 (zlib), nibble table; only for ports without binascii.crc32
        global _crc_table
        if _crc_table is None:
            t = []
            for n in range(16):
                c = n
                for _ in range(4):
                    c = (c >> 1) ^ (0xEDB88320 if c & 1 else 0)
                t.append(c)
            _crc_table = t
        t = _crc_table
        c = 0xFFFFFFFF
        for b in data:
            c ^= b
            c = (c >> 4) ^ t[c & 15]
            c = (c >> 4) ^ t[c & 15]
        return c ^ 0xFFFFFFFF
