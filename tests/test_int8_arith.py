"""piconn.int8's vectorized fixed-point arithmetic against one-value-at-a-time transcriptions
of the C++ it re-expresses (TFLite Micro's common.h/common.cc, gemmlowp's fixedpoint.h), on
edge values and random int32s; and the functions it approximates, to their precision.

The bit-exactness against TFLite Micro itself is in test_tflite_ops.py and
test_tflite_models.py; these tests pin the arithmetic down where the models rarely go.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from piconn import int8

I32_MIN, I32_MAX = -(2**31), 2**31 - 1


def c_div(a: int, b: int) -> int:
    """C integer division (truncates toward zero)."""
    q = abs(a) // abs(b)
    return q if (a >= 0) == (b > 0) else -q


def srdhm_c(a: int, b: int) -> int:
    if a == b == I32_MIN:
        return I32_MAX
    ab = a * b
    nudge = (1 << 30) if ab >= 0 else 1 - (1 << 30)
    return c_div(ab + nudge, 1 << 31)


def rdbpot_c(x: int, e: int) -> int:
    mask = (1 << e) - 1
    remainder = x & mask
    threshold = (mask >> 1) + (1 if x < 0 else 0)
    return (x >> e) + (1 if remainder > threshold else 0)


def mbqm_c(x: int, m: int, shift: int) -> int:
    left, right = max(shift, 0), max(-shift, 0)
    shifted = ((x * (1 << left) + 2**31) % 2**32) - 2**31
    return rdbpot_c(srdhm_c(shifted, m), right)


def int32s(rng, n: int) -> np.ndarray:
    edges = [I32_MIN, I32_MIN + 1, -(2**30), -1, 0, 1, 2**30, I32_MAX - 1, I32_MAX]
    return np.concatenate([edges, rng.integers(I32_MIN, I32_MAX, n, endpoint=True),
                           rng.integers(-70000, 70000, n)]).astype(np.int64)


def test_srdhm_and_rdbpot_match_the_c_code(rng):
    a, b = int32s(rng, 3000), int32s(rng, 3000)
    got = int8.srdhm(a, b)
    assert got.tolist() == [srdhm_c(int(x), int(y)) for x, y in zip(a, b)]
    for e in (0, 1, 2, 5, 12, 23, 31):
        got = int8.rdbpot(a, e)
        assert got.tolist() == [rdbpot_c(int(x), e) for x in a], e


def test_mbqm_matches_the_c_code(rng):
    x = int32s(rng, 1000)
    for real in (1e-9, 3.1e-5, 0.0042, 0.37, 0.5, 0.99999, 1.0, 1.7, 3.0):
        m, s = int8.quantize_multiplier(real)
        got = int8.mbqm(x, m, s)
        assert got.tolist() == [mbqm_c(int(v), m, s) for v in x], real


def test_quantize_multiplier():
    assert int8.quantize_multiplier(0.0) == (0, 0)
    assert int8.quantize_multiplier(0.5) == (2**30, 0)
    assert int8.quantize_multiplier(1.0) == (2**30, 1)
    assert int8.quantize_multiplier(2.0**-32) == (2**30, -31)
    assert int8.quantize_multiplier(2.0**-33) == (0, 0)  # flushed to zero
    # a mantissa that rounds up to 2^31 moves to the next exponent
    assert int8.quantize_multiplier(1 - 2.0**-40) == (2**30, 1)
    rng = np.random.default_rng(0)
    for real in rng.uniform(1e-6, 10, 500):
        m, s = int8.quantize_multiplier(float(real))
        assert 2**30 <= m < 2**31
        assert abs(m * 2.0 ** (s - 31) - real) <= real * 2.0**-31
    for bad in (-0.5, math.inf, math.nan):
        with pytest.raises(ValueError):
            int8.quantize_multiplier(bad)


def test_round_half_away():
    assert [int8.round_half_away(v) for v in (0.5, 1.5, 2.5, -0.5, -2.5, 0.49999999999999994)] \
        == [1, 2, 3, -1, -3, 0]
    x = np.array([0.5, 1.5, -0.5, -1.5, 0.49999997, 2.4999998, -7.5], dtype=np.float32)
    assert int8.round_half_away_f32(x).tolist() == [1, 2, -1, -2, 0, 2, -8]


def test_exp_on_negative_values():
    """Q5.26 and Q4.27 inputs, Q0.31 result: gemmlowp's series is good to 2.5e-7."""
    for bits in (4, 5):
        a = -np.unique(np.concatenate([np.arange(0, 2000), np.geomspace(1, 2**31 - 1, 3000)
                                       .astype(np.int64)]))
        got = int8.exp_on_negative_values(a, bits) / 2**31
        want = np.exp(a / 2.0 ** (31 - bits))
        assert np.max(np.abs(got - want)) < 2.5e-7
        assert got[0] == I32_MAX / 2**31  # exp(0) is the largest Q0.31 value


def test_logistic_and_tanh_fixed_point():
    a = np.linspace(-(2**31) + 1, 2**31 - 1, 20001).astype(np.int64)  # Q4.27: [-16, 16)
    real = a / 2.0**27
    logistic = int8.logistic_fixed(a, 4) / 2**31
    tanh = int8.tanh_fixed(a, 4) / 2**31
    assert np.max(np.abs(logistic - 1 / (1 + np.exp(-real)))) < 1e-7
    assert np.max(np.abs(tanh - np.tanh(real))) < 2e-7
    assert int8.logistic_fixed(np.array([0]), 4)[0] == 2**30
    assert int8.tanh_fixed(np.array([0]), 4)[0] == 0


def test_reciprocal():
    """GetReciprocal of sums in Q12.19: 1/x as a Q0.31 scale and a power of two."""
    x = np.array([1 << 19, 3 << 19, 5 << 18, 100 << 19, (1 << 27) + 12345], dtype=np.int64)
    scale, bits = int8.reciprocal(x, 12)
    value = scale / 2**31 / 2.0**bits
    np.testing.assert_allclose(value, 2**19 / x, rtol=1e-8)


def test_activation_range():
    assert int8.activation_range("none", 0.1, 5) == (-128, 127)
    assert int8.activation_range("relu", 0.1, 5) == (5, 127)
    assert int8.activation_range("relu6", 0.05, -128) == (-128, -8)  # 6 / 0.05 = 120
    assert int8.activation_range("relu6", 0.01, 0) == (0, 127)
    with pytest.raises(ValueError):
        int8.activation_range("relu6", 1e-38, 0)
