"""The C kernels (device/c/nn_c/nn_kernels.c) against the arithmetic of docs/FORMAT.md.

Each test runs on three builds of the same source:
- host: compiled with the host gcc (-Wall -Wextra -Werror) and called through ctypes;
- m0: compiled with arm-none-eabi-gcc for the Cortex-M0+ (-O2, hand-written Thumb
  loops) and executed on the rp2040py emulated core;
- m0-c: the same target with the portable C loops (-Os -DNN_NO_ASM).
Integer kinds must match numpy bit for bit; float kinds to 1e-5 of the magnitude of
their terms.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))

import ckernels_m0
import mpy
from ckernels_host import SOURCES, At, HostKernels

SRC_DIR = ROOT / "device" / "c" / "nn_c"


@pytest.fixture(scope="module", params=["host", "m0", "m0-c"])
def k(request):
    if request.param == "host":
        if not (shutil.which("gcc") or shutil.which("cc")):
            pytest.skip("no host C compiler")
        return HostKernels()
    if not ckernels_m0.have_toolchain():
        pytest.skip("arm-none-eabi-gcc is not installed (make installs it)")
    pytest.importorskip("rp2040py", reason="rp2040py (the emulated RP2040) is not installed")
    if request.param == "m0":
        return ckernels_m0.M0Kernels("-O2", asm=True)
    return ckernels_m0.M0Kernels("-Os", asm=False)


# ---------------------------------------------------------------------------
# numpy statements of FORMAT.md


def requant_ref(acc, rq, zy):
    acc = np.asarray(acc, dtype=np.int64)
    rq = np.asarray(rq, dtype=np.int64)
    m, s1, s2 = rq & 0xFFFF, (rq >> 16) & 0xFF, rq >> 24
    t = np.clip(acc >> s1, -32768, 32767)
    return np.clip(zy + ((t * m + (np.int64(1) << (s2 - 1))) >> s2), 0, 255).astype(np.uint8)


def rand_rq(rng, n):
    m = rng.integers(0, 32768, n, dtype=np.int64)
    s1 = rng.integers(0, 32, n, dtype=np.int64)
    s2 = rng.integers(1, 31, n, dtype=np.int64)
    return (m | s1 << 16 | s2 << 24).astype(np.uint32)


def realistic_rq(rng, n):
    """Multipliers like the exporter's: M in [2^14, 2^15), small shifts."""
    m = rng.integers(1 << 14, 1 << 15, n, dtype=np.int64)
    s1 = rng.integers(0, 10, n, dtype=np.int64)
    s2 = rng.integers(10, 22, n, dtype=np.int64)
    return (m | s1 << 16 | s2 << 24).astype(np.uint32)


def sparse_input(rng, n, frac_nonzero=0.3):
    x = rng.integers(1, 256, n).astype(np.uint8)
    x[rng.random(n) >= frac_nonzero] = 0
    return x


def popcount(a):
    a = np.ascontiguousarray(a, dtype=np.uint32)
    return np.unpackbits(a.view(np.uint8)).reshape(a.shape + (32,)).sum(axis=-1)


def pack(bits):
    """bool [rows, n] -> u32 [rows, words], bit j of the row at bit j%32 of word j//32."""
    bits = np.atleast_2d(bits)
    rows, n = bits.shape
    nw = (n + 31) // 32
    padded = np.zeros((rows, nw * 32), dtype=np.uint8)
    padded[:, :n] = bits
    return np.packbits(padded, axis=1, bitorder="little").view("<u4").reshape(rows, nw)


def csc(mask):
    """mask [n_in, n_out] -> colptr u32 [n_in+1], rows [nnz] (column = input)."""
    colptr = np.zeros(mask.shape[0] + 1, dtype=np.uint32)
    colptr[1:] = np.cumsum(mask.sum(axis=1))
    ii, cc = np.nonzero(mask)
    return colptr, ii, cc


def assert_close_terms(y, ref, scale):
    """|y - ref| <= 1e-5 * (magnitude of the summed terms) + a denormal floor."""
    err = np.abs(y.astype(np.float64) - ref)
    tol = 1e-5 * scale + 1e-30
    assert np.all(err <= tol), f"max error {err.max()} vs tolerance {tol[np.argmax(err - tol)]}"


# ---------------------------------------------------------------------------
# integer kernels


def test_requant_matches_format(k):
    rng = np.random.default_rng(1)
    n = 3000
    acc = rng.integers(-(2**31), 2**31, n, dtype=np.int64)
    acc[:200] = rng.integers(-70000, 70000, 200)
    acc[200:210] = [0, -1, 1, 2**31 - 1, -(2**31), 32767, -32768, 32768, -32769, 65535]
    rq = rand_rq(rng, n)
    rq[:500] = realistic_rq(rng, 500)
    rq[500:510] = [32767 | 31 << 16 | 30 << 24, 32767 | 1 << 24, 0 | 5 << 16 | 3 << 24,
                   16384 | 0 << 16 | 1 << 24] * 2 + [1 | 1 << 24, 32767 | 30 << 24]
    zy = rng.integers(0, 256, n)
    got = np.array([k.call("nn_requant", int(a), int(r), int(z))
                    for a, r, z in zip(acc[:600] if not isinstance(k, HostKernels) else acc,
                                       rq, zy)])
    ref = requant_ref(acc[:got.size], rq[:got.size], zy[:got.size])
    assert np.array_equal(got, ref)


@pytest.mark.parametrize("n_in,n_out", [(784, 128), (128, 10), (37, 5), (9, 1), (64, 3),
                                        (300, 33)])
@pytest.mark.parametrize("out", ["u8", "i32"])
def test_dense_q8(k, n_in, n_out, out):
    rng = np.random.default_rng(n_in * 1000 + n_out)
    x = sparse_input(rng, n_in)
    x[:4] = [255, 0, 1, 0][: min(4, n_in)]
    w = rng.integers(0, 256, (n_in, n_out), dtype=np.uint8)
    w[0] = 255
    zw = rng.integers(0, 256, n_out).astype(np.uint8)
    bias = rng.integers(-(2**20), 2**20, n_out).astype(np.int32)
    rq = realistic_rq(rng, n_out) if out == "u8" else None
    zy = int(rng.integers(0, 256)) if out == "u8" else 0
    acc = np.full(n_out, 12345, np.int32)  # scratch: must be overwritten, not accumulated
    y = np.full(n_out, 7, np.uint8)
    k.call("nn_dense_q8", x, w, zw, bias, rq, acc, y, n_in, n_out, zy)
    ref = bias.astype(np.int64) + x.astype(np.int64) @ (w.astype(np.int64) - zw)
    assert np.array_equal(acc, ref.astype(np.int32))
    if out == "u8":
        assert np.array_equal(y, requant_ref(ref, rq, zy))
    else:
        assert np.all(y == 7)  # y untouched without rq


@pytest.mark.parametrize("mis", [1, 2, 3])
def test_dense_q8_unaligned_buffers(k, mis):
    """Weights, inputs and zero points at odd addresses (rows not word aligned)."""
    rng = np.random.default_rng(mis)
    n_in, n_out = 50, 13
    x = sparse_input(rng, n_in, 0.5)
    w = rng.integers(0, 256, (n_in, n_out), dtype=np.uint8)
    zw = rng.integers(0, 256, n_out).astype(np.uint8)
    bias = rng.integers(-1000, 1000, n_out).astype(np.int32)
    rq = realistic_rq(rng, n_out)
    acc = np.zeros(n_out, np.int32)
    y = np.zeros(n_out, np.uint8)
    k.call("nn_dense_q8", At(x, mis), At(w, mis), At(zw, 3 - mis), bias, rq, acc, At(y, mis),
           n_in, n_out, 3)
    ref = bias + x.astype(np.int64) @ (w.astype(np.int64) - zw)
    assert np.array_equal(acc, ref)
    assert np.array_equal(y, requant_ref(ref, rq, 3))


def test_dense_q8_all_zero_input(k):
    rng = np.random.default_rng(5)
    w = rng.integers(0, 256, (40, 8), dtype=np.uint8)
    zw = rng.integers(0, 256, 8).astype(np.uint8)
    bias = rng.integers(-1000, 1000, 8).astype(np.int32)
    acc = np.ones(8, np.int32)
    k.call("nn_dense_q8", np.zeros(40, np.uint8), w, zw, bias, None, acc, acc, 40, 8, 0)
    assert np.array_equal(acc, bias)


@pytest.mark.parametrize("index_bytes,n_in,n_out", [(1, 784, 128), (1, 60, 7), (2, 100, 300),
                                                    (2, 33, 5)])
@pytest.mark.parametrize("out", ["u8", "i32"])
def test_sparse_q8(k, index_bytes, n_in, n_out, out):
    rng = np.random.default_rng(index_bytes * 7 + n_out)
    x = sparse_input(rng, n_in)
    mask = rng.random((n_in, n_out)) < 0.15
    mask[1] = True  # a full column
    mask[2] = False  # an empty one
    colptr, ii, cc = csc(mask)
    rows = cc.astype(np.uint8 if index_bytes == 1 else np.uint16)
    vals = rng.integers(0, 256, ii.size).astype(np.uint8)
    zw = rng.integers(0, 256, n_out).astype(np.uint8)
    bias = rng.integers(-(2**20), 2**20, n_out).astype(np.int32)
    rq = realistic_rq(rng, n_out) if out == "u8" else None
    zy = int(rng.integers(0, 256)) if out == "u8" else 0
    acc = np.full(n_out, -5, np.int32)
    y = np.zeros(n_out, np.uint8)
    k.call("nn_sparse_q8", x, colptr, rows, index_bytes, vals, zw, bias, rq, acc, y,
           n_in, n_out, zy)
    wz = np.zeros((n_in, n_out), np.int64)
    wz[ii, cc] = vals.astype(np.int64) - zw[cc]
    ref = bias + x.astype(np.int64) @ wz
    assert np.array_equal(acc, ref)
    if out == "u8":
        assert np.array_equal(y, requant_ref(ref, rq, zy))


@pytest.mark.parametrize("n", [1, 5, 31, 32, 33, 64, 100, 784])
def test_binarize(k, n):
    rng = np.random.default_rng(n)
    x = rng.integers(0, 256, n).astype(np.uint8)
    x[: min(n, 3)] = [0, 255, 128][: min(n, 3)]
    for thr in (0, 1, 128, 255, int(rng.integers(0, 256))):
        y = np.full((n + 31) // 32, 0xFFFFFFFF, np.uint32)
        k.call("nn_binarize", x, thr, y, n)
        assert np.array_equal(y, pack(x >= thr)[0]), thr


@pytest.mark.parametrize("n_words", list(range(41)) + [47, 48, 55, 56, 57, 62, 63, 64, 100])
def test_popcount_xor(k, n_words):
    """Every row length to 40 words (blocks of 8 words and 0..7 more, the short rows),
    then longer rows (pieces of 24 words)."""
    rng = np.random.default_rng(n_words)
    n = max(n_words, 1)
    x = rng.integers(0, 2**32, n, dtype=np.uint64).astype(np.uint32)
    zeros, ones = np.zeros(n, np.uint32), np.full(n, 0xFFFFFFFF, np.uint32)
    sparse = np.where(rng.random(n) < 0.3, x, 0).astype(np.uint32)
    # random, all bits differ (counts up to 32*n), none differ, then all-zero and
    # all-one words on either side, and a mix of zero words
    for xx, w in ((x, rng.integers(0, 2**32, n, dtype=np.uint64).astype(np.uint32)),
                  (x, ~x), (x, x.copy()), (zeros, ones), (ones, zeros), (ones, ones),
                  (zeros, zeros), (sparse, x), (zeros, ~sparse)):
        got = k.call("nn_popcount_xor", xx, w, n_words)
        assert got == int(popcount(xx[:n_words] ^ w[:n_words]).sum())


def test_popcount_xor_long_row(k):
    """Longest rows (n_in = 65535): the byte and 16-bit lane sums must not overflow."""
    nw = 2048
    x = np.zeros(nw, np.uint32)
    w = np.full(nw, 0xFFFFFFFF, np.uint32)
    w[-1] = 0x7FFFFFFF
    assert k.call("nn_popcount_xor", x, w, nw) == 65535


@pytest.mark.parametrize("n_in,n_out", [(784, 256), (256, 256), (1, 1), (31, 33), (33, 31),
                                        (96, 64), (1000, 40), (1300, 3), (2017, 2)])
def test_xnor_dense(k, n_in, n_out):
    rng = np.random.default_rng(n_in + 7 * n_out)
    xbits = rng.random(n_in) < 0.3
    wbits = rng.random((n_out, n_in)) < 0.5
    m = (xbits[None, :] != wbits).sum(axis=1)
    thr = (m + rng.integers(-2, 3, n_out)).astype(np.int32)  # decisions near the threshold
    thr[:2] = [-1, n_in][: min(2, n_out)]
    y = np.full((n_out + 31) // 32, 0xFFFFFFFF, np.uint32)
    k.call("nn_xnor_dense", pack(xbits)[0], pack(wbits), thr, y, n_in, n_out)
    assert np.array_equal(y, pack(m <= thr)[0])


@pytest.mark.parametrize("n_words", range(1, 41))
def test_xnor_dense_row_lengths(k, n_words):
    """Several rows per call for each row length: the counts of one row must not leak
    into the next; all-one rows give the largest counts."""
    rng = np.random.default_rng(1000 + n_words)
    n_in, n_out = 32 * n_words - (n_words % 3) * 5, 37
    xbits = rng.random(n_in) < 0.3
    wbits = rng.random((n_out, n_in)) < 0.5
    wbits[3] = ~xbits  # every bit differs: m = n_in
    wbits[4] = xbits  # none differs: m = 0
    m = (xbits[None, :] != wbits).sum(axis=1)
    thr = (m + rng.integers(-1, 2, n_out)).astype(np.int32)
    y = np.full((n_out + 31) // 32, 0xFFFFFFFF, np.uint32)
    k.call("nn_xnor_dense", pack(xbits)[0], pack(wbits), thr, y, n_in, n_out)
    assert np.array_equal(y, pack(m <= thr)[0])
    a, b = np.ones(n_out, np.int32), np.zeros(n_out, np.int32)
    out = np.zeros(n_out, np.int32)
    k.call("nn_xnor_out", pack(xbits)[0], pack(wbits), a, b, out, n_in, n_out)
    assert np.array_equal(out, n_in - 2 * m)


@pytest.mark.parametrize("n_words", [8, 9])
def test_xnor_rows_counts_per_bit(k, n_words):
    """Rows of 8 and 9 words (their own Thumb-1 loops: a 3x3 binary convolution over 32
    channels has 9-word rows): every count 0..n_words at every bit position (each adder
    weight of the carry-save tree), all-zero and all-one rows, padding bits of the rows
    counted, 70 rows per call (the exact counts through nn_xnor_out), an odd number of
    neurons in the last output word and thresholds at the ends of int32."""
    rng = np.random.default_rng(90 + n_words)
    n_out = 70
    x = rng.integers(0, 2**32, n_words, dtype=np.uint64).astype(np.uint32)
    v = np.zeros((n_out, n_words), np.uint32)  # the rows' x ^ w
    for r in range(n_words + 1):  # row r: r of the words differ at every bit
        v[r, :r] = 0xFFFFFFFF
    for r in range(n_words + 1, 2 * n_words + 2):  # bit b: (b + r) % (n_words + 1) differ
        for b in range(32):
            c = (b + r) % (n_words + 1)
            v[r, rng.permutation(n_words)[:c]] |= np.uint32(1 << b)
    v[2 * n_words + 2:] = rng.integers(0, 2**32, (n_out - 2 * n_words - 2, n_words),
                                       dtype=np.uint64).astype(np.uint32)
    w = (v ^ x[None, :]).astype(np.uint32)
    w[-1] = 0xFFFFFFFF
    w[-2] = 0
    m = popcount(x[None, :] ^ w).reshape(n_out, n_words).sum(axis=1).astype(np.int64)
    assert m[n_words] == 32 * n_words and m[0] == 0
    n_in = 32 * n_words - 5  # five padding bits per row, counted as whole words
    a, b = np.ones(n_out, np.int32), np.zeros(n_out, np.int32)
    out = np.zeros(n_out, np.int32)
    k.call("nn_xnor_out", x, w, a, b, out, n_in, n_out)
    assert np.array_equal(out, n_in - 2 * m)
    extreme = rng.choice(np.array([-2**31, -2**31 + 1, -1, 0, 2**31 - 1]), n_out)
    for thr in (m, m - 1, extreme):  # the signed comparison m <= thr at the int32 ends
        y = np.full((n_out + 31) // 32, 0xFFFFFFFF, np.uint32)
        k.call("nn_xnor_dense", x, w, thr.astype(np.int32), y, n_in, n_out)
        assert np.array_equal(y, pack(m <= thr)[0])
    for r in (0, n_words, n_out - 1):
        assert k.call("nn_popcount_xor", x, np.ascontiguousarray(w[r]), n_words) == m[r]


@pytest.mark.parametrize("n_in,n_out", [(256, 10), (33, 3), (784, 1), (2000, 5)])
def test_xnor_out(k, n_in, n_out):
    rng = np.random.default_rng(n_in * 3 + n_out)
    xbits = rng.random(n_in) < 0.5
    wbits = rng.random((n_out, n_in)) < 0.5
    a = rng.integers(-30000, 30000, n_out).astype(np.int32)
    b = rng.integers(-(2**24), 2**24, n_out).astype(np.int32)
    y = np.zeros(n_out, np.int32)
    k.call("nn_xnor_out", pack(xbits)[0], pack(wbits), a, b, y, n_in, n_out)
    m = (xbits[None, :] != wbits).sum(axis=1)
    assert np.array_equal(y, a.astype(np.int64) * (n_in - 2 * m) + b)


def _span_inputs(rng, nw):
    """Input words for the _pw kernels: all zero, all ones, one nonzero word at either end
    and in the middle, zero words at both ends (spans of every length), zero words inside
    the span, and random words."""
    ones = np.full(nw, 0xFFFFFFFF, np.uint32)
    rand = rng.integers(0, 2**32, nw, dtype=np.uint64).astype(np.uint32)
    out = [np.zeros(nw, np.uint32), ones, rand]
    for at in sorted({0, nw // 2, nw - 1}):
        x = np.zeros(nw, np.uint32)
        x[at] = rand[at] | 1
        out.append(x)
    for lo in range(0, nw, max(1, nw // 6)):
        for hi in range(lo + 1, nw + 1, max(1, nw // 5)):
            x = np.zeros(nw, np.uint32)
            x[lo:hi] = rand[lo:hi] | 0x80000000
            x[lo + 1:hi - 1:3] = 0  # zero words inside the span count as zero
            out.append(x)
    return out


@pytest.mark.parametrize("n_words", list(range(1, 41)) + [47, 56, 57, 64, 100])
def test_xnor_pw(k, n_words):
    """nn_xnor_dense_pw / nn_xnor_out_pw (the counts from the rows' popcounts and x's
    nonzero span) equal popcount(x ^ W[c]) over the whole words, padding bits of W
    included, for spans of every length and position; nn_popcount_rows gives pw."""
    rng = np.random.default_rng(2000 + n_words)
    n_out = 37 if n_words < 41 else 5  # a full output word and 5 neurons more
    n_in = 32 * n_words - (n_words % 3) * 5  # padding bits in the last word for most
    w = rng.integers(0, 2**32, (n_out, n_words), dtype=np.uint64).astype(np.uint32)
    w[0] = 0  # rows of no and of every bit
    w[1] = 0xFFFFFFFF  # (padding bits set: the kernels count whole words)
    pw = np.full(n_out, 12345, np.uint32)
    k.call("nn_popcount_rows", w, n_words, n_out, pw)
    assert np.array_equal(pw, popcount(w).reshape(n_out, n_words).sum(axis=1))
    a = rng.integers(-300, 300, n_out).astype(np.int32)
    b = rng.integers(-(2**20), 2**20, n_out).astype(np.int32)
    for x in _span_inputs(rng, n_words):
        m = popcount(x[None, :] ^ w).reshape(n_out, n_words).sum(axis=1).astype(np.int64)
        thr = (m + rng.integers(-1, 2, n_out)).astype(np.int32)
        thr[2] = -1
        y = np.full((n_out + 31) // 32, 0xFFFFFFFF, np.uint32)
        k.call("nn_xnor_dense_pw", x, w, thr, pw, y, n_in, n_out)
        assert np.array_equal(y, pack(m <= thr)[0]), x
        y0 = np.zeros_like(y)
        k.call("nn_xnor_dense", x, w, thr, y0, n_in, n_out)
        assert np.array_equal(y, y0)
        out = np.zeros(n_out, np.int32)
        k.call("nn_xnor_out_pw", x, w, a, b, pw, out, n_in, n_out)
        assert np.array_equal(out, a.astype(np.int64) * (n_in - 2 * m) + b), x


def test_xnor_pw_many_rows(k):
    """784-256 as in MNIST, with a digit-like span: every output word of 32 neurons."""
    rng = np.random.default_rng(7)
    n_in, n_out, nw = 784, 256, 25
    w = rng.integers(0, 2**32, (n_out, nw), dtype=np.uint64).astype(np.uint32)
    w[:, -1] &= 0xFFFF
    x = np.zeros(nw, np.uint32)
    x[4:21] = rng.integers(0, 2**32, 17, dtype=np.uint64).astype(np.uint32)
    pw = np.zeros(n_out, np.uint32)
    k.call("nn_popcount_rows", w, nw, n_out, pw)
    m = popcount(x[None, :] ^ w).reshape(n_out, nw).sum(axis=1)
    thr = m.astype(np.int32) + rng.integers(-1, 2, n_out).astype(np.int32)
    y = np.zeros(n_out // 32, np.uint32)
    k.call("nn_xnor_dense_pw", x, w, thr, pw, y, n_in, n_out)
    assert np.array_equal(y, pack(m <= thr)[0])


# ---------------------------------------------------------------------------
# float kernels


@pytest.mark.parametrize("x_u8", [1, 0])
@pytest.mark.parametrize("n_in,n_out", [(60, 17), (16, 4), (7, 1)])
def test_dense_f32(k, x_u8, n_in, n_out):
    rng = np.random.default_rng(n_in + x_u8)
    if x_u8:
        x = sparse_input(rng, n_in, 0.5)
    else:
        x = rng.standard_normal(n_in).astype(np.float32)
        x[rng.random(n_in) < 0.4] = 0.0
        x[0] = -0.0
    w = rng.standard_normal((n_in, n_out)).astype(np.float32)
    b = rng.standard_normal(n_out).astype(np.float32)
    y = np.full(n_out, np.nan, np.float32)
    k.call("nn_dense_f32", x, x_u8, w, b, y, n_in, n_out)
    xd = x.astype(np.float64)
    ref = b + xd @ w.astype(np.float64)
    assert_close_terms(y, ref, np.abs(b) + np.abs(xd) @ np.abs(w.astype(np.float64)))


@pytest.mark.parametrize("x_u8", [1, 0])
def test_dense_q8w(k, x_u8):
    rng = np.random.default_rng(10 + x_u8)
    n_in, n_out = 45, 11
    x = sparse_input(rng, n_in, 0.5) if x_u8 else rng.standard_normal(n_in).astype(np.float32)
    w = rng.integers(0, 256, (n_in, n_out), dtype=np.uint8)
    zw = rng.integers(0, 256, n_out).astype(np.uint8)
    scale = (rng.random(n_out) * 0.01).astype(np.float32)
    b = rng.standard_normal(n_out).astype(np.float32)
    y = np.zeros(n_out, np.float32)
    k.call("nn_dense_q8w", x, x_u8, w, zw, scale, b, y, n_in, n_out)
    wz = w.astype(np.float64) - zw
    s = x.astype(np.float64) @ wz
    ref = scale.astype(np.float64) * s + b
    if x_u8:
        # the exact integer sum, then two float32 operations
        exact = (scale * s.astype(np.float32) + b).astype(np.float32)
        assert np.allclose(y, exact, rtol=1e-6, atol=0)
    mag = scale * (np.abs(x.astype(np.float64)) @ np.abs(wz)) + np.abs(b)
    assert_close_terms(y, ref, mag)


@pytest.mark.parametrize("index_bytes", [1, 2])
@pytest.mark.parametrize("x_u8", [1, 0])
def test_sparse_f32(k, index_bytes, x_u8):
    rng = np.random.default_rng(index_bytes + 2 * x_u8)
    n_in, n_out = 70, (20 if index_bytes == 1 else 260)
    x = sparse_input(rng, n_in, 0.5) if x_u8 else rng.standard_normal(n_in).astype(np.float32)
    mask = rng.random((n_in, n_out)) < 0.2
    colptr, ii, cc = csc(mask)
    rows = cc.astype(np.uint8 if index_bytes == 1 else np.uint16)
    vals = rng.standard_normal(ii.size).astype(np.float32)
    b = rng.standard_normal(n_out).astype(np.float32)
    y = np.zeros(n_out, np.float32)
    k.call("nn_sparse_f32", x, x_u8, colptr, rows, index_bytes, vals, b, y, n_in, n_out)
    wd = np.zeros((n_in, n_out))
    wd[ii, cc] = vals
    xd = x.astype(np.float64)
    assert_close_terms(y, b + xd @ wd, np.abs(b) + np.abs(xd) @ np.abs(wd))


def test_relu_f32(k):
    vals = np.array([1.5, -1.5, 0.0, -0.0, np.inf, -np.inf, np.nan, -np.nan, 1e-45, -1e-45,
                     -3.4e38, 3.4e38], dtype=np.float32)
    y = vals.copy()
    k.call("nn_relu_f32", y, y.size)
    ref = vals.copy()
    ref[ref < 0] = 0  # "if y < 0: y = 0" keeps -0.0 and NaN
    assert np.array_equal(y.view(np.uint32), ref.view(np.uint32))


# ---------------------------------------------------------------------------
# builds


@pytest.mark.parametrize("flags", [["-Os"], ["-O2"], ["-Os", "-DNN_NO_ASM"],
                                   ["-O2", "-DNN_KERNELS_IN_RAM=1"]])
def test_compiles_for_cortex_m0plus(flags, tmp_path):
    if not ckernels_m0.have_toolchain():
        pytest.skip("arm-none-eabi-gcc is not installed (make installs it)")
    cmd = ["arm-none-eabi-gcc", "-mcpu=cortex-m0plus", "-mthumb", *flags, "-Wall", "-Wextra",
           "-Werror", "-c", str(SOURCES[0]), "-o", str(tmp_path / "k.o")]
    r = subprocess.run(cmd, check=False, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    # no division or 64-bit helpers, and floats only where float kernels need them
    nm = subprocess.run(["arm-none-eabi-nm", "-u", str(tmp_path / "k.o")], capture_output=True,
                        text=True, check=True).stdout
    undefined = {line.split()[-1] for line in nm.splitlines() if line.strip()}
    assert not {s for s in undefined if "div" in s or "mod" in s or "lmul" in s}, undefined
    assert undefined <= {"memcpy", "memset", "__aeabi_fadd", "__aeabi_fmul", "__aeabi_ui2f",
                         "__aeabi_i2f", "__aeabi_memcpy", "__aeabi_memset", "__aeabi_memclr",
                         "__aeabi_memcpy4", "__aeabi_memclr4", "__aeabi_memset4"}, undefined


# ---------------------------------------------------------------------------
# whole exported models against the numpy reference of FORMAT.md


def _q8_layer(rng, n_in, n_out, out_dtype, mask=None):
    from piconn import ir

    w = rng.integers(0, 256, (n_out, n_in)).astype(np.uint8)
    zw = rng.integers(100, 156, n_out).astype(np.uint8)
    bias = rng.integers(-20000, 20000, n_out).astype(np.int32)
    if out_dtype == "i32":
        return ir.DenseQ8(w, zw, bias, out_dtype="i32", mask=mask)
    mult = rng.integers(1 << 14, 1 << 15, n_out).astype(np.int32)
    s1 = rng.integers(0, 6, n_out).astype(np.int32)
    s2 = rng.integers(12, 21, n_out).astype(np.int32)
    return ir.DenseQ8(w, zw, bias, mult, s1, s2, zy=int(rng.integers(0, 40)), mask=mask)


def _models(rng):
    """Small random models of every layer kind: (name, DeviceModel, inputs)."""
    from piconn import ir

    def f32(*shape):
        return rng.standard_normal(shape).astype(np.float32)

    u8_in = np.stack([sparse_input(rng, 100, 0.3) for _ in range(3)])
    mask = rng.random((40, 100)) < 0.2
    mask2 = rng.random((300, 40)) < 0.1
    out = [
        ("float", ir.DeviceModel([ir.DenseF32(f32(40, 100), f32(40), "relu", "u8"),
                                  ir.DenseF32(f32(10, 40), f32(10), "none", "f32")], "float"),
         u8_in),
        ("sparse_f32", ir.DeviceModel([
            ir.DenseF32(f32(40, 100) * 0.3, f32(40), "relu", "u8", mask=mask),
            ir.DenseF32(f32(300, 40), f32(300), "none", "f32", mask=mask2)], "sparse"), u8_in),
        ("q8w", ir.DeviceModel([
            ir.DenseQ8W(rng.integers(0, 256, (40, 100)).astype(np.uint8),
                        rng.integers(100, 156, 40).astype(np.uint8),
                        (rng.random(40) * 1e-4).astype(np.float32), f32(40), "relu", "u8"),
            ir.DenseQ8W(rng.integers(0, 256, (10, 40)).astype(np.uint8),
                        rng.integers(100, 156, 10).astype(np.uint8),
                        (rng.random(10) * 1e-2).astype(np.float32), f32(10), "none", "f32")],
            "uint8"), u8_in),
        ("uint8", ir.DeviceModel([_q8_layer(rng, 100, 40, "u8"), _q8_layer(rng, 40, 10, "i32")],
                                 "uint8", output_scale=0.01), u8_in),
        ("sparse_q8", ir.DeviceModel([_q8_layer(rng, 100, 40, "u8", mask),
                                      _q8_layer(rng, 40, 300, "u8", mask2),
                                      _q8_layer(rng, 300, 10, "i32",
                                                rng.random((10, 300)) < 0.3)],
                                     "sparse"), u8_in),
    ]
    n = [100, 70, 33, 10]
    xnor = [ir.Binarize(n[0], 128)]
    xnor.append(ir.XnorDense(rng.random((n[1], n[0])) < 0.5, rng.integers(40, 60, n[1])))
    xnor.append(ir.XnorDense(rng.random((n[2], n[1])) < 0.5, rng.integers(30, 40, n[2])))
    xnor.append(ir.XnorOut(rng.random((n[3], n[2])) < 0.5,
                           rng.integers(1, 500, n[3]).astype(np.int32),
                           rng.integers(-1000, 1000, n[3]).astype(np.int32)))
    out.append(("xnor", ir.DeviceModel(xnor, "xnor"), u8_in))
    return out


@pytest.mark.parametrize("family", ["float", "sparse_f32", "q8w", "uint8", "sparse_q8", "xnor"])
def test_exported_model_matches_reference(k, family):
    """Export a model (piconn.format), run it layer by layer through the kernels with the
    arrays read in place from the blob, compare with piconn.reference.run."""
    from ckernels_host import run_model

    from piconn import format as fmt
    from piconn import reference

    rng = np.random.default_rng(99)
    name, dm, xs = next(m for m in _models(rng) if m[0] == family)
    blob = fmt.to_bytes(dm)
    ref = reference.run(dm, xs)
    for x, r in zip(xs, ref):
        y = run_model(k, blob, x)
        if r.dtype == np.float32:
            assert np.allclose(y, r, rtol=1e-5, atol=1e-5 * float(np.abs(r).max())), name
        else:
            assert y.dtype == r.dtype and np.array_equal(y, r), name


# ---------------------------------------------------------------------------
# the MicroPython binding (`_nn_c`) on the unix port


def _unix_micropython() -> str:
    """The unix port of tools/mpy.py: $PICONN_MPY_UNIX, by default build/UNIX/micropython."""
    exe = str(mpy.UNIX_BINARY)
    if not Path(exe).exists():
        pytest.skip(f"no unix MicroPython at {exe} (make firmware BOARD=UNIX builds it)")
    r = subprocess.run([exe, "-c", "import _nn_c"], capture_output=True, text=True, check=False)
    if r.returncode:
        pytest.skip(f"{exe} has no _nn_c module (built before device/c existed?)")
    newest = max(p.stat().st_mtime for p in SRC_DIR.iterdir())
    if Path(exe).stat().st_mtime < newest:
        pytest.skip(f"{exe} is older than {SRC_DIR} (make firmware BOARD=UNIX rebuilds it)")
    return exe


def _run_mp(exe: str, code: str) -> str:
    r = subprocess.run([exe, "-c", code], capture_output=True, text=True, check=False,
                       timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    return r.stdout


_MP_PRELUDE = """
import _nn_c, array, micropython
from binascii import a2b_base64 as b64
"""


def _b64(a: np.ndarray) -> str:
    import base64

    return base64.b64encode(np.ascontiguousarray(a).tobytes()).decode()


def test_binding_matches_host_build_without_allocating():
    """Every _nn_c function under heap_lock() gives the bytes the host build gives."""
    exe = _unix_micropython()
    host = HostKernels()
    rng = np.random.default_rng(3)
    n_in, n_out = 70, 13
    x = sparse_input(rng, n_in, 0.4)
    xf = rng.standard_normal(n_in).astype(np.float32)
    w = rng.integers(0, 256, (n_in, n_out), dtype=np.uint8)
    wf = rng.standard_normal((n_in, n_out)).astype(np.float32)
    zw = rng.integers(0, 256, n_out).astype(np.uint8)
    bias = rng.integers(-5000, 5000, n_out).astype(np.int32)
    bf = rng.standard_normal(n_out).astype(np.float32)
    sc = rng.random(n_out).astype(np.float32)
    rq = realistic_rq(rng, n_out)
    mask = rng.random((n_in, n_out)) < 0.3
    colptr, ii, cc = csc(mask)
    rows8, rows16 = cc.astype(np.uint8), cc.astype(np.uint16)
    vals8, valsf = rng.integers(0, 256, ii.size).astype(np.uint8), rng.standard_normal(
        ii.size).astype(np.float32)
    xb = pack(rng.random(n_in) < 0.5)[0]
    wb = pack(rng.random((n_out, n_in)) < 0.5)
    thr = rng.integers(30, 40, n_out).astype(np.int32)
    a32 = rng.integers(-100, 100, n_out).astype(np.int32)
    arrays = {"x": (x, None), "xf": (xf, "f"), "w": (w, None), "wf": (wf, "f"), "zw": (zw, None),
              "bias": (bias, "i"), "bf": (bf, "f"), "sc": (sc, "f"), "rq": (rq, "I"),
              "cp": (colptr, "I"), "r8": (rows8, None), "r16": (rows16, "H"), "v8": (vals8, None),
              "vf": (valsf, "f"), "xb": (xb, "I"), "wb": (wb, "I"), "thr": (thr, "i"),
              "a32": (a32, "i")}
    lines = [_MP_PRELUDE]
    for name, (a, tc) in arrays.items():
        lines.append(f"{name} = array.array('{tc}', b64('{_b64(a)}'))" if tc
                     else f"{name} = b64('{_b64(a)}')")
    N, M = n_in, n_out
    calls = [  # (name, output kind, C args with outputs as strings)
        ("dense_f32", "f", ["x", 1, "wf", "bf", "Y", N, M]),
        ("dense_f32", "f", ["xf", 0, "wf", "bf", "Y", N, M]),
        ("dense_q8w", "f", ["x", 1, "w", "zw", "sc", "bf", "Y", N, M]),
        ("dense_q8w", "f", ["xf", 0, "w", "zw", "sc", "bf", "Y", N, M]),
        ("dense_q8", "i", ["x", "w", "zw", "bias", None, "Y", "Y", N, M, 0]),
        ("dense_q8", "B", ["x", "w", "zw", "bias", "rq", "ACC", "Y", N, M, 5]),
        ("sparse_f32", "f", ["x", 1, "cp", "r8", 1, "vf", "bf", "Y", N, M]),
        ("sparse_f32", "f", ["xf", 0, "cp", "r16", 2, "vf", "bf", "Y", N, M]),
        ("sparse_q8", "B", ["x", "cp", "r8", 1, "v8", "zw", "bias", "rq", "ACC", "Y", N, M, 9]),
        ("sparse_q8", "i", ["x", "cp", "r16", 2, "v8", "zw", "bias", None, "Y", "Y", N, M, 0]),
        ("binarize", "I", ["x", 100, "Y", N]),
        ("xnor_dense", "I", ["xb", "wb", "thr", "Y", N, M]),
        ("xnor_out", "i", ["xb", "wb", "a32", "bias", "Y", N, M]),
        ("relu_f32", "f", ["bf_copy", M]),
    ]
    sizes = {"f": M, "i": M, "B": M, "I": (max(N, M) + 31) // 32}
    expected = []
    for k, (fn, kind, args) in enumerate(calls):
        n = sizes[kind]
        lines.append(f"Y = array.array('{kind}', bytes({n * np.dtype(kind).itemsize}))")
        lines.append(f"ACC = array.array('i', bytes({4 * M})); bf_copy = array.array('f', bf)")
        dev_args = ", ".join("None" if a is None else str(a) for a in args)
        # direct calls: f(*args) itself would allocate under the lock
        lines.append(f"micropython.heap_lock(); _nn_c.{fn}({dev_args}); micropython.heap_unlock()")
        out_var = "bf_copy" if fn == "relu_f32" else "Y"
        lines.append(f"print({k}, bytes({out_var}).hex())")
        y = np.zeros(n, dtype=kind)
        acc = np.zeros(M, np.int32)
        bf_copy = bf.copy()
        env = {name: a for name, (a, _) in arrays.items()}
        env.update(Y=y, ACC=acc, bf_copy=bf_copy)
        host.call("nn_" + fn, *(env[a] if isinstance(a, str) else a for a in args))
        expected.append((bf_copy if fn == "relu_f32" else y).tobytes())
    out = _run_mp(exe, "\n".join(lines))
    got = dict(line.split() for line in out.split("\n") if line.strip())
    for k, (fn, kind, _) in enumerate(calls):
        g = bytes.fromhex(got[str(k)])
        if kind == "f":  # the same C code, but compiler and flags may differ
            assert np.allclose(np.frombuffer(g, np.float32), np.frombuffer(expected[k], np.float32),
                               rtol=1e-6, atol=1e-6), fn
        else:
            assert g == expected[k], fn


@pytest.mark.parametrize("call,error,message", [
    ("_nn_c.dense_q8(b'12', w, zw, bias, None, acc, acc, 4, 3, 0)", "ValueError", "x: 2 bytes"),
    ("_nn_c.dense_q8(x, w[:11], zw, bias, None, acc, acc, 4, 3, 0)", "ValueError", "w: 11"),
    ("_nn_c.dense_q8(x, w, zw, bias, None, acc, acc, 0, 3, 0)", "ValueError", "n_in must be"),
    ("_nn_c.dense_q8(x, w, zw, bias, None, acc, acc, 70000, 3, 0)", "ValueError", "n_in must"),
    ("_nn_c.dense_q8(x, w, zw, bias, None, acc, acc, 4, 3, 256)", "ValueError", "zy must be"),
    ("_nn_c.dense_q8(x, w, zw, bias, None, b'x' * 12, acc, 4, 3, 0)", "TypeError", ""),
    ("_nn_c.dense_q8(x, w, zw, bias, rq, acc, bytearray(2), 4, 3, 0)", "ValueError", "y: 2"),
    ("_nn_c.dense_q8(x, w, zw, bias, None, acc, acc, 4.0, 3, 0)", "TypeError", ""),
    ("_nn_c.dense_q8(x, w, zw, 5, None, acc, acc, 4, 3, 0)", "TypeError", ""),
    ("_nn_c.relu_f32(memoryview(bytearray(20))[1:], 2)", "ValueError", "4-byte aligned"),
    ("_nn_c.sparse_q8(x, cp, r, 3, r, zw, bias, None, acc, acc, 4, 3, 0)", "ValueError",
     "index_bytes must be"),
    ("_nn_c.sparse_q8(x, cpbad, r, 1, r, zw, bias, None, acc, acc, 4, 3, 0)", "ValueError",
     "colptr[0]"),
    ("_nn_c.sparse_q8(x, cp, r[:1], 1, r, zw, bias, None, acc, acc, 4, 3, 0)", "ValueError",
     "rows: 1"),
    ("_nn_c.xnor_dense(xb, wb, thr, bytearray(3), 4, 3)", "ValueError", "y: 3"),
    ("_nn_c.binarize(x, 300, bytearray(4), 4)", "ValueError", "threshold must be"),
    ("_nn_c.dense_q8(x, w, zw, bias, None, acc, acc, 4, 3)", "TypeError", ""),
])
def test_binding_rejects_bad_arguments(call, error, message):
    exe = _unix_micropython()
    setup = ("import _nn_c, array\n"
             "x = bytes(4); w = bytes(12); zw = bytes(3); bias = array.array('i', [0] * 3)\n"
             "rq = array.array('I', [1 << 24] * 3); acc = array.array('i', [0] * 3)\n"
             "cp = array.array('I', [0, 1, 2, 3, 3]); cpbad = array.array('I', [1, 1, 2, 3, 3])\n"
             "r = bytes(3); xb = array.array('I', [0]); wb = array.array('I', [0] * 3)\n"
             "thr = array.array('i', [0] * 3)\n")
    out = _run_mp(exe, setup + f"try:\n    {call}\n    print('no error')\n"
                  "except Exception as e:\n    print(type(e).__name__, e)\n")
    assert out.startswith(error), out
    assert message in out, out


def test_binding_run_chains_kernels_without_allocating():
    """_nn_c.run(steps, x) gives what the same calls made one by one give."""
    exe = _unix_micropython()
    code = _MP_PRELUDE + """
import os
x = bytes(b % 7 * 40 for b in range(100))
w1 = bytes(b * 37 % 256 for b in range(100 * 16)); w2 = bytes(b * 11 % 256 for b in range(16 * 5))
zw1 = bytes(range(100, 116)); zw2 = bytes(range(120, 125))
b1 = array.array('i', range(-800, 800, 100)); b2 = array.array('i', [7, -7, 70, -70, 0])
rq = array.array('I', [20000 | 6 << 16 | 14 << 24] * 16)
def bufs():
    return (array.array('i', bytes(64)), bytearray(16), array.array('i', bytes(20)))
a1, h, a2 = bufs()
_nn_c.dense_q8(x, w1, zw1, b1, rq, a1, h, 100, 16, 3)
_nn_c.dense_q8(h, w2, zw2, b2, None, a2, a2, 16, 5, 0)
ref = bytes(a2)
A1, H, A2 = bufs()
steps = ((_nn_c.dense_q8, (None, w1, zw1, b1, rq, A1, H, 100, 16, 3)),
         (_nn_c.dense_q8, (H, w2, zw2, b2, None, A2, A2, 16, 5, 0)))
micropython.heap_lock(); _nn_c.run(steps, x); micropython.heap_unlock()
print(bytes(A2) == ref, bytes(H) == bytes(h), list(A2) != [0] * 5)
for bad in ([(len, (x,))], [(_nn_c.relu_f32,)], 5, [(_nn_c.relu_f32, 3)]):
    try:
        _nn_c.run(bad, None)
        print('no error')
    except TypeError:
        print('TypeError')
"""
    out = _run_mp(exe, code).split()
    assert out == ["True", "True", "True"] + ["TypeError"] * 4, out


def test_binding_run_checks_input_returns_last_result():
    """run(steps, x): x must be exactly what the first step takes (size, element type),
    checked in O(1); run returns the last call's result (argmax as the last step)."""
    exe = _unix_micropython()
    rng = np.random.default_rng(11)
    x = rng.integers(0, 256, 100).astype(np.uint8)
    xf = rng.standard_normal(20).astype(np.float32)
    code = _MP_PRELUDE + f"""
x = b64('{_b64(x)}'); xf = array.array('f', b64('{_b64(xf)}'))
xb = array.array('I', bytes(16)); y = array.array('f', bytes(80))
su8 = ((_nn_c.binarize, (None, 100, xb, 100)), (_nn_c.argmax_i32, (xb, 4)))
mv = memoryview(bytearray(x)); k = k2 = None  # (globals assigned under the lock exist)
micropython.heap_lock()
k = _nn_c.run(su8, x); k2 = _nn_c.run(su8, mv)
micropython.heap_unlock()
print('U8', k, k2, bytes(xb).hex())
sf = ((_nn_c.relu_f32, (None, 20)), (_nn_c.argmax_f32, (xf, 20)))
print('F', _nn_c.run(sf, xf), bytes(xf).hex())
print('NONE', _nn_c.run(((_nn_c.relu_f32, (xf, 20)),), None))
for steps, bad in ((su8, 'x' * 100), (su8, bytes(99)), (su8, bytearray(101)), (su8, [0] * 100),
                   (su8, array.array('h', bytes(200))), (su8, None), (sf, bytes(80)),
                   (sf, array.array('d', bytes(160))), (sf, array.array('f', bytes(76))),
                   (sf, array.array('i', bytes(80)))):
    try:
        _nn_c.run(steps, bad)
        print('no error')
    except (TypeError, ValueError) as e:
        print('E', type(e).__name__, e)
"""
    out = _run_mp(exe, code).splitlines()
    bits = np.frombuffer(bytes.fromhex(out[0].split()[3]), "<u4")
    ref_bits = np.zeros(4, np.uint32)
    for j in np.nonzero(x >= 100)[0]:
        ref_bits[j // 32] |= np.uint32(1 << (j % 32))
    np.testing.assert_array_equal(bits, ref_bits)
    want = int(np.argmax(ref_bits.view(np.int32)))
    assert out[0].split()[1:3] == [str(want), str(want)]
    relu = np.maximum(xf, 0)
    assert out[1].split()[1] == str(int(np.argmax(relu)))
    assert np.array_equal(np.frombuffer(bytes.fromhex(out[1].split()[2]), "<f4"), relu)
    assert out[2] == "NONE None"
    errs = out[3:]
    assert len(errs) == 10 and all(e.startswith("E ") for e in errs), out
    kinds = [e.split()[1] for e in errs]
    assert kinds == ["TypeError", "ValueError", "ValueError", "TypeError", "TypeError",
                     "TypeError", "TypeError", "TypeError", "ValueError", "TypeError"], errs
    assert "takes 100 bytes, got 99" in errs[1] and "got 101" in errs[2]
    assert "wider" in errs[4] and "NoneType" in errs[5]
    assert "array('f') of 20 floats" in errs[6] and "array('d')" in errs[7]
    assert "takes 20 floats, got 19" in errs[8]


def test_binding_run_out_and_input_copy():
    """run(steps, x, out): out replaces the last layer step's output buffer (in the steps
    after it too), checked like x (exact element type and count, writable); a first step
    whose args[0] is a buffer gets x copied into it, so x may be any buffer the steps
    write; signed bytes are refused for a u8 input. No allocation."""
    exe = _unix_micropython()
    rng = np.random.default_rng(21)
    x = rng.integers(0, 256, 100).astype(np.uint8)
    w = rng.normal(0, 1, (8, 8)).astype(np.float32)
    b = rng.normal(0, 1, 8).astype(np.float32)
    v = rng.normal(0, 1, 8).astype(np.float32)
    code = _MP_PRELUDE + f"""
x = b64('{_b64(x)}')
w1 = bytes(i * 37 % 256 for i in range(100 * 16)); w2 = bytes(i * 11 % 256 for i in range(16 * 5))
b1 = array.array('i', range(-800, 800, 100)); b2 = array.array('i', [7, -7, 70, -70, 0])
rq = array.array('I', [20000 | 6 << 16 | 14 << 24] * 16)
A1 = array.array('i', bytes(64)); H = bytearray(16); A2 = array.array('i', bytes(20))
steps = ((_nn_c.dense_q8, (None, w1, bytes(range(100, 116)), b1, rq, A1, H, 100, 16, 3)),
         (_nn_c.dense_q8, (H, w2, bytes(range(120, 125)), b2, None, A2, A2, 16, 5, 0)))
_nn_c.run(steps, x)
ref = bytes(A2)
A2[0] = A2[1] = 0
out = array.array('i', bytes(20)); mv = memoryview(array.array('i', bytes(20)))
micropython.heap_lock()
_nn_c.run(steps, x, out); _nn_c.run(steps, x, mv)
micropython.heap_unlock()
print('Q8', bytes(out) == ref, bytes(mv) == ref, A2[0] == 0 and A2[1] == 0)
W = b64('{_b64(w.T)}'); B = b64('{_b64(b)}')
XF = array.array('f', bytes(32)); Y = array.array('f', bytes(32))
fsteps = ((_nn_c.dense_f32, (XF, 0, W, B, Y, 8, 8)), (_nn_c.relu_f32, (Y, 8)))
v = array.array('f', b64('{_b64(v)}'))
outf = array.array('f', bytes(32))
micropython.heap_lock()
_nn_c.run(fsteps, v, outf)
micropython.heap_unlock()
print('F', bytes(outf).hex(), bytes(XF) == bytes(v), bytes(Y) == bytes(32))
_nn_c.run(fsteps[:1], v, v)  # x and out the same buffer: x was copied first
print('ALIAS', bytes(v).hex())
for st, xx, bad in ((steps, x, array.array('I', bytes(20))), (steps, x, memoryview(bytes(20))),
                    (steps, x, array.array('i', bytes(16))), (steps, x, [0] * 5),
                    (fsteps, v, array.array('i', bytes(32))), (fsteps, v, array.array('d', bytes(64))),
                    (((_nn_c.argmax_i32, (None, 2)),), array.array('i', (0, 1)), out),
                    (steps, array.array('b', x), None), (steps, memoryview(array.array('b', x)), None)):
    try:
        _nn_c.run(st, xx, bad)
        print('no error')
    except (TypeError, ValueError) as e:
        print('E', type(e).__name__, e)
"""
    lines = _run_mp(exe, code).splitlines()
    assert lines[0] == "Q8 True True True", lines
    y = np.maximum(v @ w.T + b, 0)
    got = np.frombuffer(bytes.fromhex(lines[1].split()[1]), "<f4")
    np.testing.assert_allclose(got, y, rtol=1e-5, atol=1e-6)
    assert lines[1].split()[2:] == ["True", "True"], lines[1]
    np.testing.assert_allclose(np.frombuffer(bytes.fromhex(lines[2].split()[1]), "<f4"),
                               v @ w.T + b, rtol=1e-5, atol=1e-6)
    errs = lines[3:]
    kinds = [e.split()[1] for e in errs]
    assert kinds == ["TypeError", "TypeError", "ValueError", "TypeError", "TypeError",
                     "TypeError", "TypeError", "TypeError", "TypeError"], errs
    assert "array('I')" in errs[0] and "memoryview('B')" in errs[1]
    assert "out takes 5 ints, got 4" in errs[2] and "array('d')" in errs[5]
    assert "no step has an output" in errs[6]
    assert all("signed bytes" in e for e in errs[7:]), errs


# ---------------------------------------------------------------------------
# helpers (argmax, load-time checks)


def test_argmax(k):
    rng = np.random.default_rng(8)
    for _ in range(3):
        yi = rng.integers(-50, 50, 40).astype(np.int32)
        assert k.call("nn_argmax_i32", yi, yi.size) == int(np.argmax(yi))  # first maximum
        yf = (rng.integers(-5, 5, 40) * 0.5).astype(np.float32)
        assert k.call("nn_argmax_f32", yf, yf.size) == int(np.argmax(yf))
    cases = [[-0.0, 0.0, -1.0], [-np.inf, -3e38, -1e-45], [1.0, np.nan, 2.0, np.nan],
             [np.nan, 5.0], [-2.0, -0.0, 0.0], [3.0], [-np.inf, np.inf, 1.0]]
    for c in cases:
        yf = np.array(c, np.float32)
        assert k.call("nn_argmax_f32", yf, yf.size) == int(np.argmax(yf)), c
    assert k.call("nn_argmax_i32", np.array([-7], np.int32), 1) == 0


@pytest.mark.parametrize("index_bytes", [1, 2])
def test_check_csc(k, index_bytes):
    rng = np.random.default_rng(index_bytes)
    n_in, n_out = 30, 12 if index_bytes == 1 else 300
    mask = rng.random((n_in, n_out)) < 0.3
    colptr, _, cc = csc(mask)
    rdt = np.uint8 if index_bytes == 1 else np.uint16
    rows = cc.astype(rdt)
    nnz = rows.size

    def check(cp, rw, n=nnz, mis=1):
        return k.call("nn_check_csc", At(cp.view(np.uint8), mis), At(rw.view(np.uint8), mis),
                      index_bytes, n_in, n_out, n)

    assert check(colptr, rows) == 0
    i = 7  # a column with at least two stored weights
    while colptr[i + 1] - colptr[i] < 2:
        i += 1
    bad = rows.copy()
    bad[colptr[i] + 1] = bad[colptr[i]]  # repeated row
    assert check(colptr, bad) == i + 1
    bad = rows.copy()
    bad[colptr[i]], bad[colptr[i] + 1] = rows[colptr[i] + 1], rows[colptr[i]]
    assert check(colptr, bad) == i + 1  # decreasing rows within the column
    bad = rows.copy()
    bad[colptr[i]] = n_out  # out of range
    assert check(colptr, bad, mis=2) == i + 1
    cp = colptr.copy()
    cp[i + 1] = cp[i] - 1 if cp[i] else nnz + 1  # decreasing column pointer
    assert check(cp, rows) == i + 1
    cp = colptr.copy()
    cp[0] = 1
    assert check(cp, rows) == n_in + 1
    assert check(colptr, rows, nnz - 1) == n_in + 1


def test_check_f32(k):
    a = np.array([1.0, -2.5, 3e38, -1e-45, 0.0, -0.0], np.float32)
    assert k.call("nn_check_f32", At(a.view(np.uint8), 3), a.size) == 0
    for bad in (np.inf, -np.inf, np.nan):
        b = a.copy()
        b[4] = bad
        assert k.call("nn_check_f32", At(b.view(np.uint8), 1), b.size) == 5
    assert k.call("nn_check_f32", a, 0) == 0


# ---------------------------------------------------------------------------
# the same calls through the plain-Python tier (device/nn/_python.py, run by CPython)


@pytest.fixture(scope="module")
def pytier():
    import importlib.util
    import types

    src = ROOT / "device" / "nn" / "_python.py"
    if not src.exists():
        pytest.skip("device/nn/_python.py (the plain-Python tier) is not there")
    # the module file alone (the nn package imports the native tiers, which CPython lacks)
    saved = sys.modules.get("micropython")
    shim = types.ModuleType("micropython")
    shim.const = lambda v: v  # type: ignore[attr-defined]
    sys.modules["micropython"] = shim
    try:
        spec = importlib.util.spec_from_file_location("nn_python_tier", src)
        assert spec is not None and spec.loader is not None
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        return mod
    finally:
        if saved is None:
            sys.modules.pop("micropython", None)
        else:
            sys.modules["micropython"] = saved


def test_integer_kernels_equal_the_python_tier(k, pytier):
    """Bit for bit with the plain-Python tier, called with what nn passes it: parameters as
    byte buffers, acc and i32 outputs as array('i'), u8 and bit outputs as bytearray."""
    import array

    rng = np.random.default_rng(12)
    n_in, n_out = 60, 20
    x = sparse_input(rng, n_in, 0.4)
    w = rng.integers(0, 256, (n_in, n_out), dtype=np.uint8)
    zw = rng.integers(90, 160, n_out).astype(np.uint8)
    bias = rng.integers(-3000, 3000, n_out).astype(np.int32)
    rq = realistic_rq(rng, n_out)
    mask = rng.random((n_in, n_out)) < 0.3
    colptr, _, cc = csc(mask)
    rows = cc.astype(np.uint8)
    vals = rng.integers(0, 256, cc.size).astype(np.uint8)
    xb = pack(rng.random(n_in) < 0.5)[0]
    wb = pack(rng.random((n_out, n_in)) < 0.5)
    thr = rng.integers(25, 35, n_out).astype(np.int32)

    def out(kind, n):
        return {"i32": (np.zeros(n, np.int32), array.array("i", bytes(4 * n))),
                "u8": (np.zeros(n, np.uint8), bytearray(n)),
                "bits": (np.zeros((n + 31) // 32, np.uint32), bytearray(4 * ((n + 31) // 32)))}[kind]

    def both(name, args):
        """args: numpy inputs, ints/None, or (numpy, python) output pairs; returns the
        outputs of the C call and of the python tier, as bytes."""
        c_args = [a[0] if isinstance(a, tuple) else a for a in args]
        py_args = [a[1] if isinstance(a, tuple) else
                   (bytearray(a.tobytes()) if isinstance(a, np.ndarray) else a) for a in args]
        k.call("nn_" + name, *c_args)
        getattr(pytier, name)(*py_args)
        outs = [i for i, a in enumerate(args) if isinstance(a, tuple)]
        return ([c_args[i].tobytes() for i in outs], [bytes(py_args[i]) for i in outs])

    for requant in (True, False):
        acc = out("i32", n_out)
        y = out("u8", n_out) if requant else acc
        r, zy = (rq, 7) if requant else (None, 0)
        # with rq, acc is scratch (its content unspecified): compare y only
        c, p = both("dense_q8", [x, w, zw, bias, r, acc, y, n_in, n_out, zy])
        assert c[-1] == p[-1], ("dense_q8", requant)
        acc = out("i32", n_out)
        y = out("u8", n_out) if requant else acc
        c, p = both("sparse_q8", [x, colptr, rows, 1, vals, zw, bias, r, acc, y, n_in, n_out, zy])
        assert c[-1] == p[-1], ("sparse_q8", requant)
    assert operator_eq(*both("binarize", [x, 100, out("bits", n_in), n_in]))
    assert operator_eq(*both("xnor_dense", [xb, wb, thr, out("bits", n_out), n_in, n_out]))
    assert operator_eq(*both("xnor_out", [xb, wb, thr, bias, out("i32", n_out), n_in, n_out]))

    yf = np.array([1, np.nan, 3, 5], np.float32)
    assert k.call("nn_argmax_f32", yf, 4) == pytier.argmax_f32(array.array("f", yf.tobytes()), 4)
    assert k.call("nn_argmax_i32", bias, n_out) == pytier.argmax_i32(
        array.array("i", bias.tobytes()), n_out)
    bad_rows = rows.copy()
    bad_rows[-1] = n_out
    for rw in (rows, bad_rows):
        assert k.call("nn_check_csc", colptr, rw, 1, n_in, n_out, rw.size) == pytier.check_csc(
            bytearray(colptr.tobytes()), bytearray(rw.tobytes()), 1, n_in, n_out, rw.size)
    fa = np.array([1, 2, np.inf, 3], np.float32)
    assert k.call("nn_check_f32", fa, 4) == pytier.check_f32(bytearray(fa.tobytes()), 4) == 3


def operator_eq(c, p):
    return c == p


def test_binding_helpers():
    exe = _unix_micropython()
    code = _MP_PRELUDE + """
y = array.array('f', [1.0, 5.0, float('nan'), 5.0])
print(_nn_c.argmax_f32(y, 2), _nn_c.argmax_f32(y, 4), _nn_c.argmax_i32(array.array('i', [3, 9, 9]), 3))
cp = bytearray(1) + bytes(array.array('I', [0, 2, 2, 3]))
rows = bytearray(1) + bytes([1, 4, 2])
print(_nn_c.check_csc(memoryview(cp)[1:], memoryview(rows)[1:], 1, 3, 5, 3),
      _nn_c.check_csc(memoryview(cp)[1:], memoryview(rows)[1:], 1, 3, 4, 3),
      _nn_c.check_csc(memoryview(cp)[1:], memoryview(rows)[1:], 1, 3, 5, 2))
f = bytearray(1) + bytes(array.array('f', [1.0, float('inf'), 2.0]))
print(_nn_c.check_f32(memoryview(f)[1:], 3), _nn_c.check_f32(memoryview(f)[1:], 1))
try:
    _nn_c.argmax_f32(memoryview(f)[1:], 2)
except ValueError as e:
    print('ValueError', e)
"""
    out = _run_mp(exe, code).split("\n")
    assert out[0].split() == ["1", "2", "1"]
    assert out[1].split() == ["0", "1", "4"]  # row 4 >= n_out in column 0; colptr end != nnz
    assert out[2].split() == ["2", "0"]
    assert out[3].startswith("ValueError y must be 4-byte aligned")


def test_binding_prepare_xnor_steps():
    """_nn_c.prepare(steps) checks the steps of a binary network once; its calls give what
    run(steps, x, out) gives (with and without the row popcounts pw, out replacing the last
    layer's buffer and argmax's input), allocate nothing, check x and out, refuse a
    resized buffer and other kinds; with a gate whose byte is 0, or keyword arguments, the
    fallback is called instead."""
    exe = _unix_micropython()
    rng = np.random.default_rng(31)
    n_in, n_h, n_out = 100, 40, 6
    x = rng.integers(0, 256, n_in).astype(np.uint8)
    x[:40] = 0  # zero input words: the span kernels read words 1..3 only
    w1 = rng.integers(0, 2**32, (n_h, 4), dtype=np.uint64).astype(np.uint32)
    w2 = rng.integers(0, 2**32, (n_out, 2), dtype=np.uint64).astype(np.uint32)
    thr = rng.integers(40, 60, n_h).astype(np.int32)
    a = rng.integers(-50, 50, n_out).astype(np.int32)
    b = rng.integers(-500, 500, n_out).astype(np.int32)
    code = _MP_PRELUDE + f"""
x = b64('{_b64(x)}')
w1 = b64('{_b64(w1)}'); w2 = b64('{_b64(w2)}'); thr = b64('{_b64(thr)}')
a = b64('{_b64(a)}'); b = b64('{_b64(b)}')
def model(pw):
    xb = array.array('I', bytes(16)); h = array.array('I', bytes(8)); y = array.array('i', bytes(24))
    p1 = p2 = None
    if pw:
        p1 = array.array('i', bytes(4 * {n_h})); p2 = array.array('i', bytes(4 * {n_out}))
        _nn_c.popcount_rows(w1, {n_in}, {n_h}, p1); _nn_c.popcount_rows(w2, {n_h}, {n_out}, p2)
    fwd = ((_nn_c.binarize, (None, 128, xb, {n_in})),
           (_nn_c.xnor_dense, (xb, w1, thr, h, {n_in}, {n_h}, p1)),
           (_nn_c.xnor_out, (h, w2, a, b, y, {n_h}, {n_out}, p2)))
    return fwd, fwd + ((_nn_c.argmax_i32, (y, {n_out})),), y
fwd0, pred0, y0 = model(False)
_nn_c.run(fwd0, x)
ref = bytes(y0); k_ref = _nn_c.run(pred0, x)
for pw in (False, True):
    fwd, pred, y = model(pw)
    f = _nn_c.prepare(fwd); p = _nn_c.prepare(pred)
    out = array.array('i', bytes(24)); r1 = r2 = r3 = k1 = k2 = None
    micropython.heap_lock()
    r1 = f(x); r2 = f(x, None); k1 = p(x); r3 = f(x, out); k2 = p(x, out)
    micropython.heap_unlock()
    print('P', r1 is y and r2 is y and r3 is out, bytes(y) == ref, bytes(out) == ref,
          k1 == k_ref and k2 == k_ref)
f = _nn_c.prepare(fwd)
for args in ((bytes(99),), (array.array('b', x),), (x, array.array('I', bytes(24))),
             (x, array.array('i', bytes(20))), (), (x, None, None)):
    try:
        f(*args)
        print('no error')
    except (TypeError, ValueError) as e:
        print('E', type(e).__name__, e)
for steps in (((_nn_c.relu_f32, (array.array('f', [1.0]), 1)),),
              ((_nn_c.binarize, (x, 128, array.array('I', bytes(16)), {n_in})),), ()):
    try:
        _nn_c.prepare(steps)
        print('no error')
    except (TypeError, ValueError) as e:
        print('E', type(e).__name__, e)
y.append(0)
try:
    f(x)
    print('no error')
except ValueError as e:
    print('E', type(e).__name__, e)
gate = bytearray(1)
calls = []
def fallback(*args, **kw):
    calls.append((len(args), sorted(kw)))
    return 'fallback'
fwd, pred, y = model(True)
g = _nn_c.prepare(fwd, fallback, gate)
print('G', g(x), g(x, out=None))
gate[0] = 1
print('G', g(x) is y, g(x, out=None), calls)
"""
    lines = _run_mp(exe, code).splitlines()
    assert lines[0] == "P True True True True" and lines[1] == "P True True True True", lines
    errs = lines[2:11]
    assert all(e.startswith("E ") for e in errs), lines
    assert [e.split()[1] for e in errs] == ["ValueError", "TypeError", "TypeError", "ValueError",
                                            "TypeError", "TypeError", "TypeError", "TypeError",
                                            "ValueError"], errs
    assert "takes 100 bytes, got 99" in errs[0] and "signed" in errs[1]
    assert "array('I')" in errs[2] and "got 5" in errs[3]
    assert "binarize, xnor_dense, xnor_out and argmax only" in errs[6]
    assert "first step's input must be None" in errs[7] and "no steps" in errs[8]
    assert lines[11] == "E ValueError prepared steps: a buffer was resized since prepare"
    assert lines[12] == "G fallback fallback"
    assert lines[13] == "G True fallback [(1, []), (1, ['out']), (1, ['out'])]", lines
