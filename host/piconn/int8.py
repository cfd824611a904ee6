"""TensorFlow Lite Micro's int8 reference arithmetic and kernels, in numpy, bit for bit.

Re-expressed from tensorflow/tflite-micro (`tensorflow/lite/kernels/internal/common.*`,
`quantization_util.cc`, `reference/integer_ops/*.h`, `reference/softmax.h`,
`reference/reduce.h`, `micro/kernels/*_common.cc`) and gemmlowp's `fixedpoint/fixedpoint.h`
(the Q-format fixed point that softmax, logistic and tanh use), in their default
configuration (TFLITE_SINGLE_ROUNDING off: requantization rounds twice).

Every function works on int64 numpy arrays that hold int32 values, so a whole tensor is
one vector expression; where C++ would wrap an int32, `wrap32` does. The kernels take
the prepared parameters (`int8_ops.prepare` computes them from the quantization, as
TFLite Micro's Prepare does) and int8 NHWC arrays.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

INT32_MIN = -(2**31)
INT32_MAX = 2**31 - 1
INT8_MIN = -128
INT8_MAX = 127


def wrap32(x: np.ndarray) -> np.ndarray:
    """Two's complement int32 wrap-around of int64 values."""
    return ((np.asarray(x, dtype=np.int64) + 2**31) & 0xFFFFFFFF) - 2**31


# --------------------------------------------------------------------------- scalars


def round_half_away(x: float) -> int:
    """std::round on a double: halves away from zero."""
    r = math.trunc(x)
    if abs(x - r) >= 0.5:  # exact: x - trunc(x) is representable
        r += 1 if x > 0 else -1
    return int(r)


def round_half_away_f32(x: np.ndarray) -> np.ndarray:
    """std::round on float32 values (returned as float64 holding integers)."""
    x = np.asarray(x, dtype=np.float32).astype(np.float64)
    r = np.trunc(x)
    return r + np.where(np.abs(x - r) >= 0.5, np.sign(x), 0.0)


def quantize_multiplier(real: float) -> tuple[int, int]:
    """QuantizeMultiplier: real = multiplier * 2^(shift - 31), multiplier in [2^30, 2^31).

    ValueError for a negative, infinite or NaN multiplier (no int8 model has one)."""
    if not math.isfinite(real) or real < 0:
        raise ValueError(f"requantization scale {real} is not a finite non-negative number")
    if real == 0.0:
        return 0, 0
    q, shift = math.frexp(real)
    q_fixed = round_half_away(q * 2**31)
    if q_fixed == 2**31:
        q_fixed //= 2
        shift += 1
    if shift < -31:  # flushed to zero, as TFLite Micro does
        return 0, 0
    return q_fixed, shift


def calculate_input_radius(integer_bits: int, left_shift: int, total_bits: int = 31) -> int:
    """CalculateInputRadius: the largest |input| whose rescaled value cannot overflow."""
    value = (1.0 * ((1 << integer_bits) - 1) * (1 << (total_bits - integer_bits))
             / (1 << left_shift))
    return math.floor(value)


def activation_range(activation: str, scale: float, zero_point: int) -> tuple[int, int]:
    """CalculateActivationRangeQuantized for int8: the fused activation as a clamp."""
    def quantize(real: float) -> int:  # float32 division, std::round on float
        with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
            q = round_half_away_f32(np.float32(real) / np.float32(scale))
        if not abs(q) <= INT32_MAX:
            raise ValueError(f"the activation bound {real} does not fit int32 at scale {scale}")
        return zero_point + int(q)

    lo, hi = INT8_MIN, INT8_MAX
    if activation in ("relu", "relu6"):
        lo = max(lo, quantize(0.0))
    if activation == "relu6":
        hi = min(hi, quantize(6.0))
    return lo, hi


# --------------------------------------------------------------------------- fixed point


def srdhm(a: np.ndarray, b: np.ndarray | int) -> np.ndarray:
    """SaturatingRoundingDoublingHighMul: round(a * b / 2^31), saturating the one overflow."""
    a = np.asarray(a, dtype=np.int64)
    b = np.asarray(b, dtype=np.int64)
    ab = a * b
    s = ab + np.where(ab >= 0, 1 << 30, 1 - (1 << 30))
    q = np.where(s >= 0, s >> 31, -((-s) >> 31))  # C division truncates toward zero
    return np.where((a == b) & (a == INT32_MIN), INT32_MAX, q)


def rdbpot(x: np.ndarray, exponent: np.ndarray | int) -> np.ndarray:
    """RoundingDivideByPOT: x / 2^exponent rounded to nearest, halves away from zero."""
    x = np.asarray(x, dtype=np.int64)
    e = np.asarray(exponent, dtype=np.int64)
    mask = (np.int64(1) << e) - 1
    threshold = (mask >> 1) + (x < 0)
    return (x >> e) + ((x & mask) > threshold)


def mbqm(x: np.ndarray, multiplier: np.ndarray | int, shift: np.ndarray | int) -> np.ndarray:
    """MultiplyByQuantizedMultiplier (int32 x): x * multiplier * 2^(shift - 31), rounded twice."""
    shift = np.asarray(shift, dtype=np.int64)
    left = np.maximum(shift, 0)
    right = np.maximum(-shift, 0)
    shifted = wrap32(np.asarray(x, dtype=np.int64) << left)
    return rdbpot(srdhm(shifted, multiplier), right)


def saturating_shift_left(x: np.ndarray, exponent: int) -> np.ndarray:
    """SaturatingRoundingMultiplyByPOT with a positive exponent."""
    threshold = (1 << (31 - exponent)) - 1
    x = np.asarray(x, dtype=np.int64)
    return np.where(x > threshold, INT32_MAX,
                    np.where(x < -threshold, INT32_MIN, x << exponent))


def rounding_half_sum(a: np.ndarray, b: int) -> np.ndarray:
    s = np.asarray(a, dtype=np.int64) + b
    s = s + np.where(s >= 0, 1, -1)
    return np.where(s >= 0, s // 2, -((-s) // 2))


ONE_Q0 = INT32_MAX  # 1.0 in Q0.31 (saturated)
ONE_Q2 = 1 << 29  # 1.0 in Q2.29
# exp(-2^k) in Q0.31 for k = -2..4: gemmlowp's barrel shifter constants.
EXP_BARREL = ((-2, 1672461947), (-1, 1302514674), (0, 790015084), (1, 290630308),
              (2, 39332535), (3, 720401), (4, 242))


def _exp_quarter(a: np.ndarray) -> np.ndarray:
    """exp(a) for a in [-1/4, 0), Q0.31: Taylor series around -1/8."""
    constant_term = 1895147668  # exp(-1/8)
    one_third = 715827883
    x = a + (1 << 28)
    x2 = srdhm(x, x)
    x3 = srdhm(x2, x)
    x4 = srdhm(x2, x2)
    x4_over_4 = rdbpot(x4, 2)
    poly = rdbpot(srdhm(x4_over_4 + x3, one_third) + x2, 1)
    return constant_term + srdhm(constant_term, x + poly)


def exp_on_negative_values(a: np.ndarray, integer_bits: int) -> np.ndarray:
    """exp(a) for a <= 0 given in Q(integer_bits); result in Q0.31."""
    a = np.asarray(a, dtype=np.int64)
    fractional_bits = 31 - integer_bits
    quarter = 1 << (fractional_bits - 2)
    a_mod_quarter_minus_quarter = (a & (quarter - 1)) - quarter
    result = _exp_quarter(saturating_shift_left(a_mod_quarter_minus_quarter, integer_bits))
    remainder = a_mod_quarter_minus_quarter - a
    for exponent, multiplier in EXP_BARREL:
        if integer_bits > exponent:
            bit = (remainder >> (fractional_bits + exponent)) & 1
            result = np.where(bit != 0, srdhm(result, multiplier), result)
    if integer_bits > 5:
        result = np.where(a < -(1 << (36 - integer_bits)), 0, result)
    return np.where(a == 0, ONE_Q0, result)


def _newton_reciprocal(half_denominator: np.ndarray) -> np.ndarray:
    """1 / (2 * half_denominator) in Q2.29 by three Newton-Raphson steps."""
    x = 1515870810 + srdhm(half_denominator, -1010580540)  # 48/17 - 32/17 * d
    for _ in range(3):
        one_minus = ONE_Q2 - srdhm(half_denominator, x)
        x = x + saturating_shift_left(srdhm(x, one_minus), 2)
    return x


def one_over_one_plus_x(a: np.ndarray) -> np.ndarray:
    """1 / (1 + a) for a in [0, 1), Q0.31."""
    x = _newton_reciprocal(rounding_half_sum(a, ONE_Q0))
    return saturating_shift_left(x, 1)  # Q2.29 halved is Q1.30, rescaled to Q0.31


def one_minus_x_over_one_plus_x(a: np.ndarray) -> np.ndarray:
    """(1 - a) / (1 + a) for a in [0, 1), Q0.31."""
    x = _newton_reciprocal(rounding_half_sum(a, ONE_Q0))
    return saturating_shift_left(x - ONE_Q2, 2)


def logistic_fixed(a: np.ndarray, integer_bits: int) -> np.ndarray:
    """gemmlowp::logistic: Q(integer_bits) in, Q0.31 out."""
    a = np.asarray(a, dtype=np.int64)
    positive = a > 0
    on_positive = one_over_one_plus_x(exp_on_negative_values(-np.abs(a), integer_bits))
    result = np.where(positive, on_positive, ONE_Q0 - on_positive)
    return np.where(a == 0, 1 << 30, result)


def tanh_fixed(a: np.ndarray, integer_bits: int) -> np.ndarray:
    """gemmlowp::tanh: Q(integer_bits) in, Q0.31 out."""
    a = np.asarray(a, dtype=np.int64)
    negative = a < 0
    # -tanh(n) for n = -|a|: exp of 2n (the same raw bits read with one more integer bit)
    t = one_minus_x_over_one_plus_x(exp_on_negative_values(-np.abs(a), integer_bits + 1))
    return np.where(a == 0, 0, np.where(negative, -t, t))


def bit_length32(x: np.ndarray) -> np.ndarray:
    """Bits needed for non-negative int32 values (32 - CountLeadingZeros)."""
    x = np.asarray(x, dtype=np.int64)
    return sum((x >= (1 << k)).astype(np.int64) for k in range(32))


def reciprocal(x: np.ndarray, integer_bits: int) -> tuple[np.ndarray, np.ndarray]:
    """GetReciprocal: (1/x in Q0.31 scaled to [0.5, 1), the bits of x above 1.0)."""
    x = np.asarray(x, dtype=np.int64)
    headroom_plus_one = 32 - bit_length32(x)
    bits_over_unit = integer_bits - headroom_plus_one
    shifted = ((x << headroom_plus_one) & 0xFFFFFFFF) - (1 << 31)  # uint32 arithmetic
    return one_over_one_plus_x(wrap32(shifted)), bits_over_unit


# --------------------------------------------------------------------------- kernels

@dataclass
class ConvParams:
    """CONV_2D, DEPTHWISE_CONV_2D and FULLY_CONNECTED (no spatial fields used)."""

    input_offset: int  # minus the input zero point
    output_zero: int
    multiplier: np.ndarray  # int64 [c_out]
    shift: np.ndarray  # int64 [c_out]; > 0 shifts left
    act_min: int
    act_max: int
    stride_h: int = 1
    stride_w: int = 1
    pad_top: int = 0
    pad_left: int = 0
    out_h: int = 1
    out_w: int = 1
    depth_multiplier: int = 1


@dataclass
class PoolParams:
    filter_h: int
    filter_w: int
    act_min: int
    act_max: int
    stride_h: int
    stride_w: int
    pad_top: int
    pad_left: int
    out_h: int
    out_w: int


@dataclass
class AddParams:
    input1_offset: int
    input2_offset: int
    left_shift: int
    input1_multiplier: int
    input1_shift: int
    input2_multiplier: int
    input2_shift: int
    output_multiplier: int
    output_shift: int
    output_zero: int
    act_min: int
    act_max: int


@dataclass
class SoftmaxParams:
    input_multiplier: int
    input_left_shift: int
    diff_min: int


@dataclass
class SigmoidParams:
    """LOGISTIC and TANH: the input rescaled to Q4.27."""

    input_zero: int
    input_range_radius: int
    input_multiplier: int
    input_left_shift: int


@dataclass
class MeanParams:
    input_zero_times_count: int
    multiplier: int  # already divided by the count of averaged values
    shift: int
    output_zero: int


@dataclass
class PadParams:
    paddings: tuple[tuple[int, int], ...]
    value: int


@dataclass
class QuantizeParams:
    """QUANTIZE float32 -> int8 (scale, output_zero) or int8 -> int8 (multiplier, shift)."""

    scale: float
    output_zero: int
    input_zero: int = 0
    multiplier: int = 0
    shift: int = 0


@dataclass
class DequantizeParams:
    scale: float
    input_zero: int




def _requantize(acc: np.ndarray, multiplier, shift, out_zero: int, lo: int, hi: int
                ) -> np.ndarray:
    out = mbqm(acc, multiplier, shift) + out_zero
    return np.clip(out, lo, hi).astype(np.int8)


def _windows(x: np.ndarray, kh: int, kw: int, stride_h: int, stride_w: int, pad_top: int,
             pad_left: int, out_h: int, out_w: int, fill: int) -> np.ndarray:
    """[n, out_h, out_w, c, kh, kw] views of x (NHWC), padded with `fill`."""
    n, h, w, c = x.shape
    need_h = (out_h - 1) * stride_h + kh
    need_w = (out_w - 1) * stride_w + kw
    padded = np.full((n, max(need_h, pad_top + h), max(need_w, pad_left + w), c), fill,
                     dtype=np.int64)
    padded[:, pad_top:pad_top + h, pad_left:pad_left + w, :] = x
    win = sliding_window_view(padded[:, :need_h, :need_w, :], (kh, kw), axis=(1, 2))
    return win[:, ::stride_h, ::stride_w]


def conv2d(x: np.ndarray, w: np.ndarray, bias: np.ndarray, p: ConvParams) -> np.ndarray:
    """ConvPerChannel: x int8 [n,h,w,c_in], w int8 [c_out,kh,kw,c_in], bias int32 [c_out].

    Taps outside the image are skipped; padding with the input zero point gives the same
    sum, because the kernel adds w * (x - zero point).
    """
    _, kh, kw, _ = w.shape
    win = _windows(x, kh, kw, p.stride_h, p.stride_w, p.pad_top, p.pad_left, p.out_h,
                   p.out_w, -p.input_offset) + p.input_offset
    acc = np.einsum("nyxcij,oijc->nyxo", win, w.astype(np.int64), optimize=True)
    return _requantize(acc + bias, p.multiplier, p.shift, p.output_zero, p.act_min, p.act_max)


def depthwise_conv2d(x: np.ndarray, w: np.ndarray, bias: np.ndarray, p: ConvParams
                     ) -> np.ndarray:
    """DepthwiseConvPerChannel: w int8 [1,kh,kw,c_out], output c reads input c // multiplier."""
    _, kh, kw, _ = w.shape
    win = _windows(x, kh, kw, p.stride_h, p.stride_w, p.pad_top, p.pad_left, p.out_h,
                   p.out_w, -p.input_offset) + p.input_offset
    win = np.repeat(win, p.depth_multiplier, axis=3)  # [n, y, x, c_out, kh, kw]
    acc = np.einsum("nyxcij,ijc->nyxc", win, w[0].astype(np.int64), optimize=True)
    return _requantize(acc + bias, p.multiplier, p.shift, p.output_zero, p.act_min, p.act_max)


def fully_connected(x: np.ndarray, w: np.ndarray, bias: np.ndarray, p: ConvParams
                    ) -> np.ndarray:
    """FullyConnected(PerChannel): x int8 [batches, depth], w int8 [c_out, depth]."""
    acc = (x.astype(np.int64) + p.input_offset) @ w.astype(np.int64).T
    return _requantize(acc + bias, p.multiplier, p.shift, p.output_zero, p.act_min, p.act_max)


def average_pool(x: np.ndarray, p: PoolParams) -> np.ndarray:
    """AveragePool int8: the mean of the taps inside the image, rounded half away from 0."""
    win = _windows(x, p.filter_h, p.filter_w, p.stride_h, p.stride_w, p.pad_top, p.pad_left,
                   p.out_h, p.out_w, 0)
    ones = np.ones((1,) + x.shape[1:3] + (1,), dtype=np.int64)
    count = _windows(ones, p.filter_h, p.filter_w, p.stride_h, p.stride_w, p.pad_top,
                     p.pad_left, p.out_h, p.out_w, 0).sum(axis=(4, 5))
    acc = win.sum(axis=(4, 5))
    half = count // 2
    avg = np.where(acc > 0, (acc + half) // count, -((-acc + half) // count))  # C division
    return np.clip(avg, p.act_min, p.act_max).astype(np.int8)


def max_pool(x: np.ndarray, p: PoolParams) -> np.ndarray:
    """MaxPool int8: the largest tap inside the image, clamped to the activation range."""
    win = _windows(x, p.filter_h, p.filter_w, p.stride_h, p.stride_w, p.pad_top, p.pad_left,
                   p.out_h, p.out_w, INT8_MIN - 1)
    return np.clip(win.max(axis=(4, 5)), p.act_min, p.act_max).astype(np.int8)


def add(x1: np.ndarray, x2: np.ndarray, p: AddParams) -> np.ndarray:
    """Add int8 with rescaling: both inputs to a common scale (left shift 20), then output."""
    a = (x1.astype(np.int64) + p.input1_offset) << p.left_shift
    b = (x2.astype(np.int64) + p.input2_offset) << p.left_shift
    a = mbqm(a, p.input1_multiplier, p.input1_shift)
    b = mbqm(b, p.input2_multiplier, p.input2_shift)
    out = mbqm(wrap32(a + b), p.output_multiplier, p.output_shift) + p.output_zero
    return np.clip(out, p.act_min, p.act_max).astype(np.int8)


SOFTMAX_DIFF_INTEGER_BITS = 5  # input differences in Q5.26
SOFTMAX_ACCUMULATION_INTEGER_BITS = 12  # the sum of exponentials in Q12.19


def softmax(x: np.ndarray, p: SoftmaxParams) -> np.ndarray:
    """Softmax int8 -> int8 (output scale 1/256, zero point -128) over the last axis."""
    rows = x.reshape(-1, x.shape[-1]).astype(np.int64)
    diff = rows - rows.max(axis=1, keepdims=True)
    used = diff >= p.diff_min
    scaled = srdhm(wrap32(diff << p.input_left_shift), p.input_multiplier)
    exps = exp_on_negative_values(scaled, SOFTMAX_DIFF_INTEGER_BITS)
    terms = rdbpot(exps, SOFTMAX_ACCUMULATION_INTEGER_BITS)
    total = wrap32(np.where(used, terms, 0).sum(axis=1, keepdims=True))
    scale, bits_over_unit = reciprocal(total, SOFTMAX_ACCUMULATION_INTEGER_BITS)
    exponent = bits_over_unit + 31 - 8
    out = rdbpot(srdhm(scale, exps), exponent) + INT8_MIN
    out = np.where(used, np.clip(out, INT8_MIN, INT8_MAX), INT8_MIN)
    return out.astype(np.int8).reshape(x.shape)


def logistic(x: np.ndarray, p: SigmoidParams) -> np.ndarray:
    """Logistic int8 -> int8 (output scale 1/256, zero point -128)."""
    v = x.astype(np.int64) - p.input_zero
    q4 = mbqm(np.clip(v, -p.input_range_radius, p.input_range_radius), p.input_multiplier,
              p.input_left_shift)
    out = rdbpot(logistic_fixed(q4, 4), 31 - 8) + INT8_MIN
    out = np.clip(out, INT8_MIN, INT8_MAX)
    out = np.where(v <= -p.input_range_radius, INT8_MIN, out)
    return np.where(v >= p.input_range_radius, INT8_MAX, out).astype(np.int8)


def tanh(x: np.ndarray, p: SigmoidParams) -> np.ndarray:
    """Tanh int8 -> int8 (output scale 1/128, zero point 0)."""
    v = x.astype(np.int64) - p.input_zero
    q4 = mbqm(np.clip(v, -p.input_range_radius, p.input_range_radius), p.input_multiplier,
              p.input_left_shift)
    out = np.clip(rdbpot(tanh_fixed(q4, 4), 31 - 7), INT8_MIN, INT8_MAX)
    out = np.where(v <= -p.input_range_radius, INT8_MIN, out)
    return np.where(v >= p.input_range_radius, INT8_MAX, out).astype(np.int8)


def mean_hw(x: np.ndarray, p: MeanParams) -> np.ndarray:
    """Mean int8 over height and width of NHWC: [n, c] (QuantizedMeanOrSum)."""
    total = x.astype(np.int64).sum(axis=(1, 2)) - p.input_zero_times_count
    out = mbqm(wrap32(total), p.multiplier, p.shift) + p.output_zero
    return np.clip(out, INT8_MIN, INT8_MAX).astype(np.int8)


def pad(x: np.ndarray, p: PadParams) -> np.ndarray:
    """Pad int8 with the output zero point."""
    return np.pad(x, p.paddings, constant_values=p.value).astype(np.int8)


def quantize(x: np.ndarray, p: QuantizeParams) -> np.ndarray:
    """AffineQuantize float32 -> int8: round(x / scale) + zero point, in float32."""
    q = round_half_away_f32(np.asarray(x, dtype=np.float32) / np.float32(p.scale))
    q = np.clip(q, INT32_MIN, INT32_MAX).astype(np.int64) + p.output_zero
    return np.clip(q, INT8_MIN, INT8_MAX).astype(np.int8)


def requantize(x: np.ndarray, p: QuantizeParams) -> np.ndarray:
    """Requantize int8 -> int8 (QUANTIZE between two int8 quantizations)."""
    out = mbqm(x.astype(np.int64) - p.input_zero, p.multiplier, p.shift) + p.output_zero
    return np.clip(out, INT8_MIN, INT8_MAX).astype(np.int8)


def dequantize(x: np.ndarray, p: DequantizeParams) -> np.ndarray:
    """Dequantize int8 -> float32: float(double scale * (q - zero point))."""
    return (np.float64(p.scale) * (x.astype(np.int64) - p.input_zero)).astype(np.float32)
