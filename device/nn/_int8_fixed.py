# nn._int8_fixed: TensorFlow Lite Micro's integer arithmetic on Python ints (one value
# at a time), the same functions as host/piconn/int8.py's numpy ones and bit for bit
# equal to them: requantization (MultiplyByQuantizedMultiplier) and gemmlowp's fixed
# point (exp, 1/(1+x), logistic, tanh) for the softmax kernel and the tables that
# nn._graph_prepare recomputes at load.
#
# Values are int32 held in Python ints; products reach 62 bits, small ints on 64-bit
# ports, long ints (heap objects) on 32-bit ports, whose small ints hold +-2^30. The
# functions from requantize() on are the inference path of the plain-Python tier: they
# keep every intermediate within +-2^30, so they allocate nothing on any port, and give
# the results of srdhm/rdbpot/mbqm above bit for bit.
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


# ------------------------------------------------------------------ on small ints only
#
# An int32 that can pass 2^30 (a multiplier in [2^30, 2^31), a Q0.31 value) travels as
# 16-bit halves h * 2^16 + l (l in [0, 2^16)); products are formed on 14-bit limbs, whose
# column sums stay below 2^30.

_SMALL_MAX = const(0x3FFFFFFF)  # the largest small int of a 32-bit port


def mul_round(ah, al, bh, bl, neg, e):
    """+-round(srdhm(a, b) / 2^e), halves away from zero (rdbpot), for the magnitudes
    a = ah * 2^16 + al and b = bh * 2^16 + bl (each at most 2^31, not both 2^31), the
    sign - when neg. A magnitude past 2^30 - 1 saturates there (the callers clamp)."""
    a0 = al & 0x3FFF
    a1 = (al >> 14) | ((ah & 0xFFF) << 2)
    a2 = ah >> 12
    b0 = bl & 0x3FFF
    b1 = (bl >> 14) | ((bh & 0xFFF) << 2)
    b2 = bh >> 12
    # srdhm's nudge, 2^30 (2^30 - 1 for a negative product), added column by column
    k = 0x3FFF if neg else 0
    c = a0 * b0 + k
    c = a1 * b0 + a0 * b1 + k + (c >> 14)
    c = a2 * b0 + a1 * b1 + a0 * b2 + (3 if neg else 4) + (c >> 14)
    r = (c & 0x3FFF) >> 3  # (a * b + nudge) >> 31 = w * 2^11 + r
    c = a2 * b1 + a1 * b2 + (c >> 14)
    w = (c & 0x3FFF) + ((a2 * b2 + (c >> 14)) << 14)
    if e > 11:
        v = (w + (1 << (e - 12))) >> (e - 11)
    elif e == 11:
        v = w + ((r + 1024) >> 11)
    elif w >= 1 << (19 + e):
        v = _SMALL_MAX
    else:
        hw = w << (11 - e)
        low = (r + (1 << e >> 1)) >> e
        v = _SMALL_MAX if hw > _SMALL_MAX - low else hw + low
    return -v if neg else v


def requantize(x, mh, ml, shift):
    """mbqm(x, mh * 2^16 + ml, shift) for a small int x (an int32 anywhere): exact where
    the result lies within +-(2^30 - 1), saturated there beyond (callers clamp)."""
    xh = x >> 16  # x = xh * 2^16 + xl
    xl = x & 0xFFFF
    if shift > 0:  # x << shift wrapped to int32, on the halves
        if shift >= 16:
            xh = xl << (shift - 16)
            xl = 0
        else:
            xh = (xh << shift) + (xl >> (16 - shift))
            xl = (xl & ((1 << (16 - shift)) - 1)) << shift
        xh = ((xh & 0xFFFF) ^ 0x8000) - 0x8000
    neg = xh < 0
    if neg:  # the magnitude's halves
        if xl:
            xh = -1 - xh
            xl = 0x10000 - xl
        else:
            xh = -xh
    return mul_round(xh, xl, mh, ml, neg, -shift if shift < 0 else 0)


def reciprocal_small(total, headroom):
    """reciprocal(total, headroom) - 2^30 for 0 < total < 2^29: GetReciprocal's scale,
    whose halves are then (v >> 16) + 0x4000 and v & 0xFFFF (nothing over 2^30 - 1)."""
    # one_over_one_plus_x of (total << headroom) - 2^31: the half denominator (a + 1) / 2
    # is total << (headroom - 1), in [2^30, 2^31); its halves
    if headroom <= 17:
        dh = total >> (17 - headroom)
        dl = (total & ((1 << (17 - headroom)) - 1)) << (headroom - 1)
    else:
        dh = total << (headroom - 17)
        dl = 0
    # Newton-Raphson on x = 1 / denominator in Q2.29, in (0.94, 2]: held as x - 2^29
    # x0 = 48/17 - 32/17 d: 1515870810 + srdhm(d, -1010580540), 1010580540 = 15420 * 2^16
    # + 15420
    xo = 978999898 + mul_round(dh, dl, 15420, 15420, True, 0)
    for _ in range(3):
        xh = (xo >> 16) + 0x2000
        xl = xo & 0xFFFF
        t = ONE_Q2 - mul_round(dh, dl, xh, xl, False, 0)  # 1 - d * x
        neg = t < 0
        if neg:
            t = -t
        # x += x * (1 - d x), the product's Q2.29 shifted left twice (it is far below
        # saturation: |1 - d x| < 1/2)
        xo += mul_round(xh, xl, t >> 16, t & 0xFFFF, neg, 0) << 2
    # saturating_shift_left(x, 1) - 2^30
    return _SMALL_MAX if xo >= 0x20000000 else xo << 1
