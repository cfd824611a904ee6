# Kernel tier `python`: plain MicroPython, runs on every port (also webassembly).
#
# The functions of docs/KERNELS.md with the same arguments and the same results
# as the viper and C tiers. Parameter arrays are byte buffers (memoryviews into
# the model, any alignment): u8 arrays are indexed directly, i32/u32 values are
# assembled from their four bytes (no allocation while they fit a small int),
# f32 arrays are read through a little-endian `uctypes` view. Bit buffers are
# handled byte by byte (bit j is bit j % 8 of byte j // 8, the same as the
# format's little-endian u32 words), so no u32 ever becomes a big int.
#
# Float kinds compute in float32 (FORMAT.md): every product and every sum is
# rounded to float32, as the C tier's. Where MicroPython's floats are float32 (rp2)
# that is the arithmetic itself; where they are doubles (unix, webassembly) each
# result goes through a float32 array slot (_F32_SLOT) before the next operation.
# One double operation on float32 operands rounded to float32 is exactly the
# float32 operation (a double carries more than 2 * 24 + 2 bits), overflow and NaN
# included, so both give the C tier's values.
#
# Cost: bytecode, roughly 3,000-5,000 cycles per multiply-add on a Cortex-M0+;
# the slowest tier, kept exact and allocation-free for the integer kinds
# (dense_q8, sparse_q8, binarize, xnor_*). Float kinds allocate a boxed float
# per operation on ports without unboxed floats (rp2, unix, webassembly).
from array import array

from micropython import const

try:
    import uctypes
except ImportError:  # pragma: no cover - every port we ship has uctypes
    uctypes = None  # type: ignore[assignment]
import struct

_I32_SIGN = const(0x80)

# popcount of every byte value
POP8 = bytes(bin(i).count("1") for i in range(256))

_scratch = None  # int scratch for dense_q8w with u8 input (floats allocate anyway)
_F32_SLOT = array("f", bytes(4))  # rounds a double to float32: store, then load
_ROUND = 1.0 + 2.0 ** -30 != 1.0  # floats are wider than float32 here: round each result


def _u32(m, k):
    """u32 element k of byte buffer m (as a small int while < 2**30)."""
    o = k << 2
    return m[o] | (m[o + 1] << 8) | (m[o + 2] << 16) | (m[o + 3] << 24)


def _i32(m, k):
    """i32 element k of byte buffer m (small int while |v| < 2**30: no allocation)."""
    o = k << 2
    return m[o] | (m[o + 1] << 8) | (m[o + 2] << 16) | (((m[o + 3] ^ 0x80) - 0x80) << 24)


class _F32:
    """Fallback f32 reader over a byte buffer (ports without uctypes)."""

    def __init__(self, m):
        self.m = m

    def __getitem__(self, k):
        return struct.unpack_from("<f", self.m, k << 2)[0]


def _f32(m, n):
    """An indexable f32 view of byte buffer m (n elements; any alignment). Allocates."""
    if uctypes is None:
        return _F32(m)
    return uctypes.struct(uctypes.addressof(m), (uctypes.ARRAY | 0, uctypes.FLOAT32 | n),
                          uctypes.LITTLE_ENDIAN)


def requant(a, m, s1, s2, zy):
    """FORMAT.md requantization of accumulator a to 0..255 (small ints only)."""
    t = a >> s1
    if t > 32767:
        t = 32767
    elif t < -32768:
        t = -32768
    p = t * m  # |p| < 2**30: a small int
    # (p + 2**(s2-1)) >> s2 without leaving the small-int range:
    if s2 == 1:
        v = zy + ((p + 1) >> 1)
    else:
        v = zy + (((p >> 1) + (1 << (s2 - 2))) >> (s2 - 1))
    if v < 0:
        return 0
    if v > 255:
        return 255
    return v


def _finish_q8(bias, rq, acc, y, n_out, zy, zw, sx):
    # acc[c] holds sum_i x[i]*W[i][c]; add bias, subtract zw[c]*sum(x), requantize.
    if rq is None:
        for c in range(n_out):
            acc[c] = _i32(bias, c) + acc[c] - zw[c] * sx
    else:
        for c in range(n_out):
            o = c << 2
            y[c] = requant(_i32(bias, c) + acc[c] - zw[c] * sx,
                           rq[o] | (rq[o + 1] << 8), rq[o + 2], rq[o + 3], zy)


def _acc_u8(x, w, acc, n_in, n_out):
    """acc[c] = sum of x[i]*W[i][c] over the nonzero u8 inputs (exact ints); returns sum(x)."""
    for c in range(n_out):
        acc[c] = 0
    sx = 0
    base = 0
    for i in range(n_in):
        xi = x[i]
        if xi:
            sx += xi
            for c in range(n_out):
                acc[c] += xi * w[base + c]
        base += n_out
    return sx


def dense_f32(x, x_u8, w, b, y, n_in, n_out):
    """y = b + sum_i x[i]*W[i][:] (f32). x: u8 or f32[n_in]; w: f32[n_in][n_out]."""
    W = _f32(w, n_in * n_out)
    B = _f32(b, n_out)
    for c in range(n_out):
        y[c] = B[c]
    t = _F32_SLOT
    base = 0
    for i in range(n_in):
        xi = x[i]
        if xi:
            if _ROUND:
                for c in range(n_out):
                    t[0] = xi * W[base + c]
                    y[c] += t[0]
            else:
                for c in range(n_out):
                    y[c] += xi * W[base + c]
        base += n_out


def scale_bias(s, scale, b, y, n):
    """y[c] = scale[c]*s[c] + b[c] in float32 (dense_q8w's last step): s[c] an int32 sum
    (converted to float32 first) or a float32; scale, b: f32 byte buffers."""
    S = _f32(scale, n)
    B = _f32(b, n)
    if _ROUND:
        t = _F32_SLOT
        for c in range(n):
            t[0] = s[c]
            t[0] = S[c] * t[0]
            y[c] = t[0] + B[c]
    else:
        for c in range(n):
            y[c] = S[c] * s[c] + B[c]


def dense_q8w(x, x_u8, w, zw, scale, b, y, n_in, n_out):
    """y[c] = scale[c]*sum_i x[i]*(W[i][c]-zw[c]) + b[c]; exact integer sum for u8 x."""
    global _scratch
    if x_u8:
        acc = _scratch
        if acc is None or len(acc) < n_out:
            acc = _scratch = array("i", bytes(4 * n_out))
        sx = _acc_u8(x, w, acc, n_in, n_out)
        for c in range(n_out):
            acc[c] -= zw[c] * sx
        scale_bias(acc, scale, b, y, n_out)
        return
    for c in range(n_out):
        y[c] = 0.0
    t = _F32_SLOT
    base = 0
    for i in range(n_in):
        xi = x[i]
        if xi:
            if _ROUND:
                for c in range(n_out):
                    t[0] = xi * (w[base + c] - zw[c])
                    y[c] += t[0]
            else:
                for c in range(n_out):
                    y[c] += xi * (w[base + c] - zw[c])
        base += n_out
    scale_bias(y, scale, b, y, n_out)


def dense_q8(x, w, zw, bias, rq, acc, y, n_in, n_out, zy):
    """Full-integer dense layer (FORMAT.md dense_q8). acc: array('i') scratch/output."""
    _finish_q8(bias, rq, acc, y, n_out, zy, zw, _acc_u8(x, w, acc, n_in, n_out))


def sparse_f32(x, x_u8, colptr, rows, index_bytes, vals, b, y, n_in, n_out):
    """CSC float layer: y = b + sum over stored (i, c) of x[i]*vals."""
    V = _f32(vals, _u32(colptr, n_in))
    B = _f32(b, n_out)
    for c in range(n_out):
        y[c] = B[c]
    t = _F32_SLOT
    rnd = _ROUND
    k = 0
    for i in range(n_in):
        end = _u32(colptr, i + 1)
        xi = x[i]
        if xi:
            if index_bytes == 1:
                while k < end:
                    r = rows[k]
                    if rnd:
                        t[0] = xi * V[k]
                        y[r] += t[0]
                    else:
                        y[r] += xi * V[k]
                    k += 1
            else:
                while k < end:
                    r = rows[k << 1] | (rows[(k << 1) + 1] << 8)
                    if rnd:
                        t[0] = xi * V[k]
                        y[r] += t[0]
                    else:
                        y[r] += xi * V[k]
                    k += 1
        k = end


def sparse_q8(x, colptr, rows, index_bytes, vals, zw, bias, rq, acc, y, n_in, n_out, zy):
    """CSC full-integer layer (FORMAT.md sparse_q8)."""
    for c in range(n_out):
        acc[c] = 0
    # sum over stored weights of x*vals, and per output the sum of x over stored weights
    # (zw[c] is subtracted once per stored weight, not once per input)
    k = 0
    for i in range(n_in):
        end = _u32(colptr, i + 1)
        xi = x[i]
        if xi:
            if index_bytes == 1:
                while k < end:
                    r = rows[k]
                    acc[r] += xi * (vals[k] - zw[r])
                    k += 1
            else:
                while k < end:
                    r = rows[k << 1] | (rows[(k << 1) + 1] << 8)
                    acc[r] += xi * (vals[k] - zw[r])
                    k += 1
        k = end
    _finish_q8(bias, rq, acc, y, n_out, zy, zw, 0)


def binarize(x, threshold, y, n):
    """Bits y (byte buffer of 4*ceil(n/32) bytes): bit j set iff x[j] >= threshold."""
    nb = ((n + 31) >> 5) << 2
    j = 0
    for k in range(nb):
        v = 0
        bit = 1
        while bit < 256 and j < n:
            if x[j] >= threshold:
                v |= bit
            bit <<= 1
            j += 1
        y[k] = v


def xnor_dense(x, w, thr, y, n_in, n_out):
    """Bits y: bit c set iff popcount(x ^ W[c]) <= thr[c]."""
    nb = ((n_in + 31) >> 5) << 2
    pop = POP8
    for k in range(((n_out + 31) >> 5) << 2):
        y[k] = 0
    base = 0
    for c in range(n_out):
        m = 0
        for k in range(nb):
            m += pop[x[k] ^ w[base + k]]
        if m <= _i32(thr, c):
            y[c >> 3] |= 1 << (c & 7)
        base += nb


def xnor_out(x, w, a, b, y, n_in, n_out):
    """y[c] = a[c]*(n_in - 2*popcount(x ^ W[c])) + b[c] (i32)."""
    nb = ((n_in + 31) >> 5) << 2
    pop = POP8
    base = 0
    for c in range(n_out):
        m = 0
        for k in range(nb):
            m += pop[x[k] ^ w[base + k]]
        y[c] = _i32(a, c) * (n_in - 2 * m) + _i32(b, c)
        base += nb


def relu_f32(y, n):
    """y[c] = max(y[c], 0) in place (as `if y < 0: y = 0`: -0.0 and NaN kept)."""
    for c in range(n):
        if y[c] < 0:
            y[c] = 0.0


def argmax_i32(y, n):
    """Index of the first maximum of array('i') y[:n]."""
    best = 0
    v = y[0]
    for c in range(1, n):
        if y[c] > v:
            v = y[c]
            best = c
    return best


def argmax_f32(y, n):
    """Index of the first maximum of array('f') y[:n]; the first NaN wins (as numpy)."""
    best = 0
    v = y[0]
    if v != v:
        return 0
    for c in range(1, n):
        t = y[c]
        if t != t:
            return c
        if t > v:
            v = t
            best = c
    return best


def check_csc(colptr, rows, index_bytes, n_in, n_out, nnz):
    """Validate a CSC index: 0 if fine, else 1 + the first bad column (or n_in + 1)."""
    if _u32(colptr, 0) != 0 or _u32(colptr, n_in) != nnz:
        return n_in + 1
    k = 0
    for i in range(n_in):
        end = _u32(colptr, i + 1)
        if end < k or end > nnz:
            return i + 1
        last = -1
        while k < end:
            if index_bytes == 1:
                r = rows[k]
            else:
                r = rows[k << 1] | (rows[(k << 1) + 1] << 8)
            if r <= last or r >= n_out:
                return i + 1
            last = r
            k += 1
    return 0


def check_f32(m, n):
    """0 if the n f32 values of byte buffer m are finite, else 1 + the first bad index."""
    o = 2
    for k in range(n):
        if m[o] & 0x80 and m[o + 1] & 0x7F == 0x7F:  # exponent bits all ones
            return k + 1
        o += 4
    return 0
