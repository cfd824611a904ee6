# nn._int8_fixed: TensorFlow Lite Micro's integer arithmetic on Python ints (one value
# at a time), the same functions as host/piconn/int8.py's numpy ones and bit for bit
# equal to them: requantization (MultiplyByQuantizedMultiplier) and gemmlowp's fixed
# point (exp, 1/(1+x), logistic, tanh) for the softmax kernel and the tables that
# nn._graph_prepare recomputes at load.
#
# Values are int32 held in Python ints; products reach 62 bits, small ints on 64-bit
# ports (no allocation), long ints on 32-bit ports (the viper and C tiers split the
# products instead).
from micropython import const

INT32_MIN = const(-0x80000000)
INT32_MAX = const(0x7FFFFFFF)
_Q30 = const(0x40000000)  # 2^30, the rounding nudge of the doubling high multiply
ONE_Q2 = const(0x20000000)  # 1.0 in Q2.29
SOFTMAX_DIFF_INTEGER_BITS = const(5)
SOFTMAX_ACCUMULATION_INTEGER_BITS = const(12)


_BITS8 = bytes((0, 1, 2, 2) + (3,) * 4 + (4,) * 8 + (5,) * 16 + (6,) * 32 + (7,) * 64
               + (8,) * 128)  # bits of each byte value


def bit_length(n):
    """Bits of the non-negative int n (MicroPython's int has no bit_length())."""
    b = 0
    while n >> 32:
        n >>= 32
        b += 32
    while n >> 8:
        n >>= 8
        b += 8
    return b + _BITS8[n]


def wrap32(x):
    """Two's complement int32 wrap-around."""
    return ((x + 0x80000000) & 0xFFFFFFFF) - 0x80000000


def srdhm(a, b):
    """SaturatingRoundingDoublingHighMul: round(a * b / 2^31), the one overflow saturated."""
    if a == b and a == INT32_MIN:
        return INT32_MAX
    ab = a * b
    if ab >= 0:
        return (ab + _Q30) >> 31
    return -((_Q30 - 1 - ab) >> 31)  # C's division truncates toward zero


def rdbpot(x, exponent):
    """RoundingDivideByPOT: x / 2^exponent rounded to nearest, halves away from zero."""
    mask = (1 << exponent) - 1
    threshold = (mask >> 1) + (1 if x < 0 else 0)
    return (x >> exponent) + (1 if (x & mask) > threshold else 0)


def mbqm(x, multiplier, shift):
    """MultiplyByQuantizedMultiplier: x * multiplier * 2^(shift - 31), rounded twice."""
    if shift > 0:
        x = wrap32(x << shift)
        return srdhm(x, multiplier)
    return rdbpot(srdhm(x, multiplier), -shift)


def saturating_shift_left(x, exponent):
    """SaturatingRoundingMultiplyByPOT with a positive exponent."""
    threshold = (1 << (31 - exponent)) - 1
    if x > threshold:
        return INT32_MAX
    if x < -threshold:
        return INT32_MIN
    return x << exponent


def rounding_half_sum(a, b):
    s = a + b
    s += 1 if s >= 0 else -1
    return s // 2 if s >= 0 else -((-s) // 2)


def _exp_quarter(a):
    # exp(a) for a in [-1/4, 0), Q0.31: Taylor series around -1/8
    constant_term = 1895147668  # exp(-1/8)
    x = a + (1 << 28)
    x2 = srdhm(x, x)
    x3 = srdhm(x2, x)
    x4 = srdhm(x2, x2)
    poly = rdbpot(srdhm(rdbpot(x4, 2) + x3, 715827883) + x2, 1)  # 715827883: 1/3
    return constant_term + srdhm(constant_term, x + poly)


# exp(-2^k) in Q0.31 for k = -2..4: gemmlowp's barrel shifter constants
_EXP_BARREL = ((-2, 1672461947), (-1, 1302514674), (0, 790015084), (1, 290630308),
               (2, 39332535), (3, 720401), (4, 242))


def exp_on_negative_values(a, integer_bits):
    """exp(a) for a <= 0 given in Q(integer_bits); Q0.31."""
    if a == 0:
        return INT32_MAX
    fractional_bits = 31 - integer_bits
    quarter = 1 << (fractional_bits - 2)
    a_mod_quarter_minus_quarter = (a & (quarter - 1)) - quarter
    result = _exp_quarter(saturating_shift_left(a_mod_quarter_minus_quarter, integer_bits))
    remainder = a_mod_quarter_minus_quarter - a
    for exponent, multiplier in _EXP_BARREL:
        if integer_bits > exponent and (remainder >> (fractional_bits + exponent)) & 1:
            result = srdhm(result, multiplier)
    if integer_bits > 5 and a < -(1 << (36 - integer_bits)):
        return 0
    return result


def _newton_reciprocal(half_denominator):
    # 1 / (2 * half_denominator) in Q2.29 by three Newton-Raphson steps
    x = 1515870810 + srdhm(half_denominator, -1010580540)  # 48/17 - 32/17 * d
    for _ in range(3):
        x = x + saturating_shift_left(srdhm(x, ONE_Q2 - srdhm(half_denominator, x)), 2)
    return x


def one_over_one_plus_x(a):
    """1 / (1 + a) for a in [0, 1), Q0.31."""
    return saturating_shift_left(_newton_reciprocal(rounding_half_sum(a, INT32_MAX)), 1)


def one_minus_x_over_one_plus_x(a):
    """(1 - a) / (1 + a) for a in [0, 1), Q0.31."""
    return saturating_shift_left(_newton_reciprocal(rounding_half_sum(a, INT32_MAX)) - ONE_Q2,
                                 2)


def logistic_fixed(a, integer_bits):
    """gemmlowp::logistic: Q(integer_bits) in, Q0.31 out."""
    if a == 0:
        return 1 << 30
    r = one_over_one_plus_x(exp_on_negative_values(-a if a > 0 else a, integer_bits))
    return r if a > 0 else INT32_MAX - r


def tanh_fixed(a, integer_bits):
    """gemmlowp::tanh: Q(integer_bits) in, Q0.31 out."""
    if a == 0:
        return 0
    # -tanh(n) for n = -|a|: exp of 2n (the same raw bits read with one more integer bit)
    t = one_minus_x_over_one_plus_x(exp_on_negative_values(-a if a > 0 else a,
                                                           integer_bits + 1))
    return -t if a < 0 else t


def headroom_plus_one(x):
    """32 - the bits of x > 0: the left shift that puts its top bit at bit 31."""
    bits = 0
    while bits < 32 and x >= (1 << bits):
        bits += 1
    return 32 - bits


def reciprocal(x, headroom):
    """GetReciprocal's scaled 1/x (Q0.31, in [0.5, 1)) of x > 0 with headroom =
    headroom_plus_one(x); the bits of x over 1.0 are integer_bits - headroom."""
    shifted = ((x << headroom) & 0xFFFFFFFF) - 0x80000000  # uint32 arithmetic
    return one_over_one_plus_x(wrap32(shifted))
