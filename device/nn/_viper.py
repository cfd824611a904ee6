# Kernel tier `viper`: @micropython.viper machine code (ports with the native emitter).
#
# Importing this module is a SyntaxError on ports without the native emitter
# (webassembly): `nn` imports it under try/except. Same arguments and results as
# docs/KERNELS.md; integer kinds are bit-identical to the other tiers.
#
# Written for the Cortex-M0+ (Thumb-1, no divide, no popcount, 1-cycle multiply):
# - the native emitter keeps only the first three locals of a function in
#   registers (r4-r6), and arguments come first, so each hot loop lives in a
#   private function whose first parameters are its loop variables (the callers
#   pass 0 for them);
# - uint8 weights are read four at a time with one word load when the row is
#   word-aligned, inputs that are 0 are skipped (the format is input-major);
# - popcount is SWAR (3 steps per word, byte counts summed over up to 31 words,
#   one horizontal add per row);
# - no division anywhere, constants above 2**30 are built at run time (a literal
#   that large would be a boxed int);
# - ptr32 loads zero-extend on 64-bit ports (unix): values whose sign matters
#   are sign-extended with `((v & M32) ^ SGN) - SGN`, a no-op on 32-bit ports.
#
# Float arithmetic is not done here (viper floats are boxed): dense_f32 and
# sparse_f32 come from the python tier; dense_q8w does its exact integer sum here
# and its float scaling through the python tier's f32 views.
# Every non-u8 array passed in must be word-aligned (nn.load guarantees it).
import micropython
from micropython import const

from nn import _python

_TYPING = False  # True for type checkers only (mypy --always-true=_TYPING)
if _TYPING:
    from nn._viper_types import ptr8, ptr16, ptr32, uint


# --------------------------------------------------------------- u8 x u8 -> i32


@micropython.viper
def _accum_u8(c: int, v: int, x, w, acc, n_in: int, n_out: int) -> int:
    # acc[c] = sum_i x[i]*W[i][c] (zero inputs skipped); returns sum_i x[i].
    # c and v (first locals) live in registers.
    px = ptr8(x)
    pa = ptr32(acc)
    c = 0
    while c < n_out:
        pa[c] = 0
        c += 1
    row = int(ptr8(w))
    fast = ((row & 3) | (n_out & 3)) == 0  # rows word-aligned: 4 weights per load
    sx = 0
    i = 0
    while i < n_in:
        xi = int(px[i])
        if xi:
            sx += xi
            if fast:
                pw = ptr32(row)
                c = 0
                while c < n_out:
                    v = pw[c >> 2]
                    pa[c] += xi * (v & 0xFF)
                    pa[c + 1] += xi * ((v >> 8) & 0xFF)
                    pa[c + 2] += xi * ((v >> 16) & 0xFF)
                    pa[c + 3] += xi * ((v >> 24) & 0xFF)
                    c += 4
            else:
                pb = ptr8(row)
                c = 0
                while c < n_out:
                    pa[c] += xi * pb[c]
                    c += 1
        row += n_out
        i += 1
    return sx


@micropython.viper
def _finish_q8(bias, rq, acc, y, n_out: int, zy: int, zw, sx: int):
    # acc[c] += bias[c] - zw[c]*sx; then requantize into y (u8) unless rq is None
    pa = ptr32(acc)
    pb = ptr32(bias)
    pz = ptr8(zw)
    one = 1
    sgn = one << 31
    m32 = (sgn << 1) - 1
    c = 0
    if not rq:
        while c < n_out:
            pa[c] = pb[c] + pa[c] - pz[c] * sx
            c += 1
        return
    pr = ptr32(rq)
    py = ptr8(y)
    while c < n_out:
        a = (((pb[c] + pa[c] - pz[c] * sx) & m32) ^ sgn) - sgn
        r = pr[c]
        t = a >> ((r >> 16) & 0xFF)
        if t > 32767:
            t = 32767
        elif t < -32768:
            t = -32768
        s2 = (r >> 24) & 0xFF
        v = zy + ((t * (r & 0xFFFF) + (one << (s2 - 1))) >> s2)
        if v < 0:
            v = 0
        elif v > 255:
            v = 255
        py[c] = v
        c += 1


def dense_q8(x, w, zw, bias, rq, acc, y, n_in, n_out, zy):
    """Full-integer dense layer (FORMAT.md dense_q8); acc: array('i') n_out."""
    _finish_q8(bias, rq, acc, y, n_out, zy, zw, _accum_u8(0, 0, x, w, acc, n_in, n_out))


def dense_q8w(x, x_u8, w, zw, scale, b, y, n_in, n_out):
    """dense_q8w: the exact integer sum here (u8 input), the float scaling in python."""
    if not x_u8:
        _python.dense_q8w(x, x_u8, w, zw, scale, b, y, n_in, n_out)
        return
    sx = _accum_u8(0, 0, x, w, y, n_in, n_out)  # y's words hold the int32 sums for now
    _q8w_int(y, zw, sx, n_out)
    Y = _python.uctypes.struct(_python.uctypes.addressof(y),
                               (_python.uctypes.ARRAY | 0, _python.uctypes.INT32 | n_out))
    _python.scale_bias(Y, scale, b, y, n_out)  # reads Y[c] before it writes y[c]


@micropython.viper
def _q8w_int(y, zw, sx: int, n_out: int):
    py = ptr32(y)
    pz = ptr8(zw)
    c = 0
    while c < n_out:
        py[c] = py[c] - pz[c] * sx
        c += 1


# ------------------------------------------------------------------ sparse u8


@micropython.viper
def _sparse_u8(k: int, r: int, xi: int, x, colptr, rows, ib: int, vals, zw, acc,
               n_in: int, n_out: int):
    px = ptr8(x)
    pc = ptr32(colptr)
    pr8 = ptr8(rows)
    pr16 = ptr16(rows)
    pv = ptr8(vals)
    pz = ptr8(zw)
    pa = ptr32(acc)
    c = 0
    while c < n_out:
        pa[c] = 0
        c += 1
    i = 0
    while i < n_in:
        xi = int(px[i])
        if xi:
            k = pc[i]
            end = pc[i + 1]
            if ib == 1:
                while k < end:
                    r = pr8[k]
                    pa[r] += xi * (pv[k] - pz[r])
                    k += 1
            else:
                while k < end:
                    r = pr16[k]
                    pa[r] += xi * (pv[k] - pz[r])
                    k += 1
        i += 1


def sparse_q8(x, colptr, rows, index_bytes, vals, zw, bias, rq, acc, y, n_in, n_out, zy):
    """CSC full-integer layer (FORMAT.md sparse_q8)."""
    _sparse_u8(0, 0, 0, x, colptr, rows, index_bytes, vals, zw, acc, n_in, n_out)
    _finish_q8(bias, rq, acc, y, n_out, zy, zw, 0)


# ----------------------------------------------------------------- binary


@micropython.viper
def _binarize(j: int, v: int, x, threshold: int, y, n: int):
    px = ptr8(x)
    py = ptr32(y)
    nw = (n + 31) >> 5
    j = 0
    k = 0
    while k < nw:
        end = j + 32
        if end > n:
            end = n
        v = 0
        b = 0
        while j < end:
            # bit = 1 iff x >= threshold, without a branch: (x - t) >> 31 is 0 or -1
            v |= (((int(px[j]) - threshold) >> 31) + 1) << b
            b += 1
            j += 1
        py[k] = v
        k += 1


def binarize(x, threshold, y, n):
    """Bits y (u32 words): bit j set iff x[j] >= threshold; padding bits cleared."""
    _binarize(0, 0, x, threshold, y, n)


@micropython.viper
def _xnor_rows(v: uint, k: int, x, w, out, a, b, nw: int, n_out: int, n_in: int, mode: int):
    # Pure viper. mode 0: out bits, bit c set iff m[c] <= a[c] (thresholds);
    # mode 1: out[c] = a[c]*(n_in - 2*m[c]) + b[c]; m[c] = popcount(x ^ W[c]).
    # SWAR popcount two words at a time (nibble counts of a pair <= 8), byte counts
    # summed over up to 30 words, one horizontal add per chunk.
    px = ptr32(x)
    po = ptr32(out)
    pa = ptr32(a)
    pb = ptr32(b)
    m1 = 0x5555
    m1 |= m1 << 16
    m2 = 0x3333
    m2 |= m2 << 16
    m4 = 0x0F0F
    m4 |= m4 << 16
    # Built by a shift, like the masks above: with the literal 0x00FF00FF here this
    # function counted wrong on the virtual Pico (armv6m viper code), every row length.
    m8 = 0xFF
    m8 |= m8 << 16
    one = 1
    sgn = one << 31
    m32 = (sgn << 1) - 1
    if mode == 0:
        c = 0
        while c < ((n_out + 31) >> 5):
            po[c] = 0
            c += 1
    row = int(ptr32(w))
    c = 0
    while c < n_out:
        pw = ptr32(row)
        m = 0
        k = nw
        while k:
            s = 0
            stop = k - 30  # 15 pairs: byte counts stay <= 240
            if stop < 0:
                stop = 0
            while k - stop >= 2:
                k -= 1
                v = uint(px[k] ^ pw[k])
                v = v - ((v >> 1) & m1)
                t = (v & m2) + ((v >> 2) & m2)
                k -= 1
                v = uint(px[k] ^ pw[k])
                v = v - ((v >> 1) & m1)
                v = (v & m2) + ((v >> 2) & m2) + t
                s += (v & m4) + ((v >> 4) & m4)
            if k > stop:
                k -= 1
                v = uint(px[k] ^ pw[k])
                v = v - ((v >> 1) & m1)
                v = (v & m2) + ((v >> 2) & m2)
                s += (v + (v >> 4)) & m4
            s = (s & m8) + ((s >> 8) & m8)
            m += (s & 0xFFFF) + (s >> 16)
        if mode == 0:
            if m <= (((pa[c] & m32) ^ sgn) - sgn):
                po[c >> 5] |= one << (c & 31)
        else:
            po[c] = pa[c] * (n_in - 2 * m) + pb[c]
        row += nw << 2
        c += 1


# On Thumb (rp2) the popcount of whole rows runs in inline assembler (nn._thumb),
# compiled at its import: after _cnt is allocated, as when the assembly was in this
# module (the heap layout that the benchmarks measured).
_BLOCK = const(64)  # rows per assembler call; counts go to _cnt
_cnt = bytearray(4 * _BLOCK)
from nn import _thumb  # noqa: E402

_popxor_rows = _thumb.popxor_rows
THUMB = _popxor_rows is not None  # True where the assembler popcount is used


@micropython.viper
def _xnor_thumb(x, w, a, b, out, nw: int, n_out: int, n_in: int, mode: int, cnt):
    # as _xnor_rows, with the popcounts from popxor_rows in blocks of _BLOCK rows
    pc = ptr32(cnt)
    po = ptr32(out)
    pa = ptr32(a)
    pb = ptr32(b)
    one = 1
    sgn = one << 31
    m32 = (sgn << 1) - 1
    if mode == 0:
        c = 0
        while c < ((n_out + 31) >> 5):
            po[c] = 0
            c += 1
    pop = _popxor_rows
    row = int(ptr32(w))
    c0 = 0
    while c0 < n_out:
        rows = n_out - c0
        if rows > _BLOCK:
            rows = _BLOCK
        pop(x, row, cnt, nw | (rows << 8))
        r = 0
        while r < rows:
            m = pc[r]
            c = c0 + r
            if mode == 0:
                if m <= (((pa[c] & m32) ^ sgn) - sgn):
                    po[c >> 5] |= one << (c & 31)
            else:
                po[c] = pa[c] * (n_in - 2 * m) + pb[c]
            r += 1
        row += (rows * nw) << 2
        c0 += rows


def xnor_dense(x, w, thr, y, n_in, n_out):
    """Bits y: bit c set iff popcount(x ^ W[c]) <= thr[c]; padding cleared."""
    nw = (n_in + 31) >> 5
    if THUMB and nw <= 31:
        _xnor_thumb(x, w, thr, thr, y, nw, n_out, n_in, 0, _cnt)
    else:
        _xnor_rows(0, 0, x, w, y, thr, thr, nw, n_out, n_in, 0)


def xnor_out(x, w, a, b, y, n_in, n_out):
    """y[c] = a[c]*(n_in - 2*popcount(x ^ W[c])) + b[c] (i32)."""
    nw = (n_in + 31) >> 5
    if THUMB and nw <= 31:
        _xnor_thumb(x, w, a, b, y, nw, n_out, n_in, 1, _cnt)
    else:
        _xnor_rows(0, 0, x, w, y, a, b, nw, n_out, n_in, 1)

# ------------------------------------------------------------ float helpers


@micropython.viper
def relu_f32(y, n: int):
    """y[c] = max(y[c], 0) in place on the bits (-0.0 and NaN kept), no boxing."""
    py = ptr32(y)
    one = 1
    sgn = one << 31
    m32 = (sgn << 1) - 1
    inf = 0x7F80
    inf <<= 16
    c = 0
    while c < n:
        v = py[c] & m32
        # negative, not -0.0, not NaN
        if (v & sgn) and v != sgn and (v ^ sgn) <= inf:
            py[c] = 0
        c += 1


@micropython.viper
def argmax_i32(y, n: int) -> int:
    """Index of the first maximum of the i32 values y[:n]."""
    py = ptr32(y)
    one = 1
    sgn = one << 31
    m32 = (sgn << 1) - 1
    best = 0
    v = ((py[0] & m32) ^ sgn) - sgn
    c = 1
    while c < n:
        t = ((py[c] & m32) ^ sgn) - sgn
        if t > v:
            v = t
            best = c
        c += 1
    return best


@micropython.viper
def argmax_f32(y, n: int) -> int:
    """Index of the first maximum of the f32 values y[:n] (first NaN wins, as numpy)."""
    py = ptr32(y)
    one = 1
    sgn = one << 31
    m32 = (sgn << 1) - 1
    inf = 0x7F80
    inf <<= 16
    best = -1
    v = 0
    c = 0
    while c < n:
        u = py[c] & m32
        mag = u & (sgn - 1)
        if mag > inf:
            return c  # NaN
        # order-preserving integer key; -0.0 and +0.0 both map to 0
        if u & sgn:
            t = -mag
        else:
            t = mag
        if best < 0 or t > v:
            v = t
            best = c
        c += 1
    return best


@micropython.viper
def check_csc(colptr, rows, index_bytes: int, n_in: int, n_out: int, nnz: int) -> int:
    """0 if the CSC index is valid (rows strictly increasing per column), else 1 + column."""
    pc = ptr32(colptr)
    pr8 = ptr8(rows)
    pr16 = ptr16(rows)
    one = 1
    sgn = one << 31
    m32 = (sgn << 1) - 1
    # u32 values compared as unsigned: anything >= 2**31 is certainly > nnz
    if (pc[0] & m32) != 0 or (pc[n_in] & m32) != nnz:
        return n_in + 1
    k = 0
    i = 0
    while i < n_in:
        end = pc[i + 1] & m32
        if (end & sgn) or end < k or end > nnz:
            return i + 1
        last = -1
        while k < end:
            if index_bytes == 1:
                r = int(pr8[k])
            else:
                r = int(pr16[k])
            if r <= last or r >= n_out:
                return i + 1
            last = r
            k += 1
        i += 1
    return 0


@micropython.viper
def check_f32(m, n: int) -> int:
    """0 if the n f32 values (word-aligned) are finite, else 1 + the first bad index."""
    p = ptr32(m)
    e = 0x7F80
    e <<= 16
    k = 0
    while k < n:
        if (p[k] & e) == e:
            return k + 1
        k += 1
    return 0
