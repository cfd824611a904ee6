"""uint8 quantization of trained float models (docs/FORMAT.md kinds 2, 3, 5).

Two modes:

- `weights` (`dense_q8w`): weights u8 per output channel (scale, zero point),
  activations stay float. The first layer takes the raw u8 input: the input
  scale is folded into the weight scales.
- `full` (`dense_q8`, or `sparse_q8` for pruned layers): weights u8 per channel,
  activations u8 with zero points calibrated on training data, biases i32 with
  the input zero point folded in, requantization by a fixed-point multiplier
  (`requant_params`). The last layer outputs the i32 accumulator with one weight
  scale for all outputs, so `argmax(acc)` is the class and
  `output_scale = s_w * s_x` turns it into logits. Only ReLU or identity
  activations (and a trailing softmax, which is dropped: its argmax is the
  logits' argmax).

Quantization of a real value v with scale s and zero point z: `q = clamp(round(v/s) + z, 0, 255)`,
`v ~ s*(q - z)`. Zero is always exactly representable (pruned weights stay zero).
"""

from __future__ import annotations

import numpy as np

from . import ir, nn
from .lower import Dense, device_meta, input_scale, is_xnor, linear_chain
from .reference import requantize

MODES = ("weights", "full")
M_BITS = 15  # M in [2^14, 2^15)
S2_MAX = 21
DEFAULT_PERCENTILE = 99.99


def quantize_rows(w: np.ndarray, shared_scale: bool = False
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Asymmetric per-row u8 quantization of w [rows, n] (each row's range includes 0).

    Returns (q u8 [rows, n], zw u8 [rows], scale f64 [rows]). With `shared_scale`
    every row gets the same scale (the widest row's) and its own zero point.
    |w - scale*(q - zw)| <= scale/2 for every element (zero maps exactly to zw).
    """
    w = np.asarray(w, dtype=np.float64)
    if w.ndim != 2:
        raise ValueError(f"quantize_rows expects a 2-D array, got shape {w.shape}")
    lo = np.minimum(w.min(axis=1), 0.0)
    hi = np.maximum(w.max(axis=1), 0.0)
    scale = (hi - lo) / 255.0
    if shared_scale:
        scale = np.full_like(scale, scale.max())
    scale = np.where(scale > 0, scale, 1.0)  # an all-zero row: any scale, q = zw
    # Zero point: centre the row's integer range in 0..255 (lo/hi both fit after rounding).
    qlo, qhi = np.round(lo / scale), np.round(hi / scale)
    zw = np.clip(np.round((255.0 - qhi - qlo) / 2.0), -qlo, 255.0 - qhi)
    zw = np.clip(zw, 0, 255)
    q = np.clip(np.round(w / scale[:, None]) + zw[:, None], 0, 255)
    return q.astype(np.uint8), zw.astype(np.uint8), scale


def dequantize_rows(q: np.ndarray, zw: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """Inverse of `quantize_rows` (up to rounding): scale[c] * (q[c, i] - zw[c])."""
    return np.asarray(scale)[:, None] * (q.astype(np.float64) - zw.astype(np.float64)[:, None])


def requant_params(m: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Real multipliers m >= 0 -> (M, s1, s2) with m ~ M * 2^-(s1+s2) (FORMAT.md).

    M in [2^14, 2^15) (M = 0 for m = 0), S = s1+s2, s2 = min(S, 21), s1 = S - s2.
    The relative error of M*2^-S is at most 2^-15. ValueError if m is negative,
    too large (S < 1) or too small (s1 > 31).
    """
    m = np.atleast_1d(np.asarray(m, dtype=np.float64))
    if np.any(~np.isfinite(m)) or np.any(m < 0):
        raise ValueError("requantization multipliers must be finite and >= 0")
    f, e = np.frexp(m)  # m = f * 2^e, f in [0.5, 1)
    mult = np.round(f * 2.0**M_BITS).astype(np.int64)
    carry = mult == 2**M_BITS
    mult[carry] = 2 ** (M_BITS - 1)
    e = e + carry
    s = M_BITS - e.astype(np.int64)
    zero = m == 0
    mult[zero], s[zero] = 0, 1
    if np.any(s < 1):
        raise ValueError(f"requantization multiplier {m.max():.4g} too large (must be < 2^14)")
    s2 = np.minimum(s, S2_MAX)
    s1 = s - s2
    if np.any(s1 > 31):
        raise ValueError(f"requantization multiplier {m[~zero].min():.4g} too small")
    return mult.astype(np.int32), s1.astype(np.int32), s2.astype(np.int32)


def _calib_ranges(chain: list[Dense], x: np.ndarray) -> list[np.ndarray]:
    """Float pre-activation outputs of every layer on calibration inputs x (float)."""
    outs = []
    h = x.astype(np.float64)
    for d in chain:
        z = h @ d.w.T + d.b
        outs.append(z)
        h = np.maximum(z, 0) if d.act == "relu" else z
    return outs


def _act_range(z: np.ndarray, act: str, percentile: float) -> tuple[float, int]:
    """(scale, zero point) for a u8 activation from calibration pre-activations z."""
    if act == "relu":
        hi = float(np.percentile(np.maximum(z, 0), percentile)) if percentile < 100 else \
            float(z.max())
        hi = max(hi, 1e-8)
        return hi / 255.0, 0
    lo = min(float(np.percentile(z, 100 - percentile)), 0.0)
    hi = max(float(np.percentile(z, percentile)), 0.0)
    s = max(hi - lo, 1e-8) / 255.0
    return s, int(np.clip(round(-lo / s), 0, 255))


def quantize(model: nn.Sequential, meta: dict | None = None, mode: str = "full",
             x_calib: np.ndarray | None = None, percentile: float = DEFAULT_PERCENTILE,
             bias_correction: bool = True) -> ir.DeviceModel:
    """Trained float (or pruned) model -> uint8 DeviceModel.

    mode "weights" -> dense_q8w layers; mode "full" -> dense_q8/sparse_q8 layers,
    which needs `x_calib` (inputs as the float model takes them, e.g. pixels/255)
    to choose activation ranges: the `percentile` of each ReLU output (100 =
    max). `bias_correction` removes the mean output shift caused by weight
    rounding, measured on x_calib.
    """
    if mode not in MODES:
        raise ValueError(f"unknown quantization mode {mode!r}; choose one of {', '.join(MODES)}")
    if is_xnor(model):
        raise ValueError("XNOR models are already binary; lower them with xnor.lower")
    if not 0 < percentile <= 100:
        raise ValueError(f"percentile must be in (0, 100], got {percentile}")
    chain = linear_chain(model)
    if mode == "weights":
        return _weights_only(chain, meta)
    if x_calib is None:
        raise ValueError("full-integer quantization needs calibration inputs (x_calib)")
    return _full(chain, meta, np.asarray(x_calib), percentile, bias_correction)


def _weights_only(chain: list[Dense], meta: dict | None) -> ir.DeviceModel:
    s_in = input_scale(meta)
    layers: list[ir.Layer] = []
    for k, d in enumerate(chain):
        q, zw, scale = quantize_rows(d.w)
        in_dtype = "f32"
        if k == 0 and s_in is not None:
            scale, in_dtype = scale * s_in, "u8"
        layers.append(ir.DenseQ8W(q, zw, scale.astype(np.float32), d.b.astype(np.float32),
                                  d.act, in_dtype))
    dm = ir.DeviceModel(layers, "uint8", 1.0, {**device_meta(meta), "quant": "weights"})
    dm.check()
    return dm


def _full(chain: list[Dense], meta: dict | None, x_calib: np.ndarray, percentile: float,
          bias_correction: bool) -> ir.DeviceModel:
    for k, d in enumerate(chain):
        allowed = ("relu", "none") if k < len(chain) - 1 else ("none", "softmax")
        if d.act not in allowed:
            raise ValueError(f"layer {k}: activation {d.act!r} is not supported by full-integer "
                             "quantization (only relu/none; softmax last)")
    s_in = input_scale(meta)
    if s_in is None:
        raise ValueError("full-integer quantization needs meta['input_scale'] "
                         "(the device takes raw u8 inputs)")
    x_f = x_calib.astype(np.float64)
    if x_calib.dtype == np.uint8:
        x_f = x_f * s_in  # raw bytes given: convert to the model's float inputs
    zs = _calib_ranges(chain, x_f)
    s_x, zx = s_in, 0
    # Quantized inputs of the current layer on the calibration set (for bias correction).
    xq = np.clip(np.round(x_f / s_x), 0, 255)
    layers: list[ir.Layer] = []
    out_scale = 1.0
    for k, d in enumerate(chain):
        last = k == len(chain) - 1
        q, zw, s_w = quantize_rows(d.w, shared_scale=last)
        wz = q.astype(np.float64) - zw.astype(np.float64)[:, None]
        if d.mask is not None:
            wz *= d.mask
        b = d.b.copy()
        if bias_correction:
            # Mean of (quantized - float) pre-activation on the calibration set, in real units.
            x_real = s_x * (xq - zx)
            err = (x_real @ (s_w[:, None] * wz).T).mean(axis=0) - (x_real @ d.w.T).mean(axis=0)
            b = b - err
        acc_scale = s_w * s_x
        bias = np.round(b / acc_scale) - zx * wz.sum(axis=1)
        if np.abs(bias).max() >= 2**31:
            raise ValueError(f"layer {k}: bias does not fit int32 after quantization")
        bias = bias.astype(np.int64)
        if last:
            layers.append(ir.DenseQ8(q, zw, bias.astype(np.int32), out_dtype="i32",
                                     mask=d.mask))
            out_scale = float(np.float32(acc_scale[0]))  # as the header stores it
            break
        s_y, zy = _act_range(zs[k], d.act, percentile)
        mult, s1, s2 = requant_params(acc_scale / s_y)
        layer = ir.DenseQ8(q, zw, bias.astype(np.int32), mult, s1, s2, zy=zy, out_dtype="u8",
                           mask=d.mask)
        layers.append(layer)
        # Next layer's quantized inputs: what the device computes on the calibration set.
        acc = bias[None, :] + (xq @ wz.T).astype(np.int64)
        xq = requantize(acc, mult, s1, s2, zy).astype(np.float64)
        s_x, zx = s_y, zy
    family = "sparse" if any(d.mask is not None for d in chain) else "uint8"
    dm = ir.DeviceModel(layers, family, out_scale,
                        {**device_meta(meta), "quant": "full", "percentile": percentile})
    dm.check()
    return dm
