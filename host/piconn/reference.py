"""Bit-exact numpy reference of the device arithmetic (docs/FORMAT.md).

`run(dm, x)` computes what the Pico computes for a batch of inputs, layer by
layer, vectorized over the batch. Rules (the same as the device tiers):

- Integer kinds (`dense_q8`, `sparse_q8`, `binarize`, `xnor_dense`, `xnor_out`)
  are exact: accumulators are computed in int64 and checked to fit int32 (the
  device's int32 never wraps; a model that would overflow raises OverflowError).
  Shifts are arithmetic (floor); requantization rounds half up:
  `y = clamp(zy + ((t*M + 2^(s2-1)) >> s2), 0, 255)` with
  `t = clamp(acc >> s1, -32768, 32767)`.
- Binarization: bit set (+1) iff `x >= threshold`. Bits are packed with
  `format.pack_bits` (bit j%32 of word j//32, padding 0) and mismatches are
  counted by popcount over the u32 words, as the device does.
- Float kinds (`dense_f32`, `sparse_f32`, `dense_q8w`) compute in IEEE float32 as
  FORMAT.md says: every product and every sum rounded to float32, summed for
  increasing input index, zero inputs and unstored (pruned) weights skipped. Where
  no partial sum can overflow a float32 matmul computes the same values up to
  rounding (its order of summation differs), so that is used; rows of a batch where
  a sum could reach infinity, or whose input is not finite, are summed in the
  device's order, so infinities and NaNs appear exactly where the device has them.
  A `dense_q8w` layer with a `u8` input sums the exact integer `sum x*(W - zw)`
  first and scales it after.
"""

from __future__ import annotations

import numpy as np

from . import format as fmt
from . import ir
from .format import pack_bits

INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1
_F32_MAX = float(np.finfo(np.float32).max)
_CHUNK = 256  # batch rows per popcount block (bounds the temporary XOR array)

if hasattr(np, "bitwise_count"):
    def _popcount(a: np.ndarray) -> np.ndarray:
        return np.bitwise_count(a)
else:  # numpy < 2.0
    _POP8 = np.array([(i).bit_count() for i in range(256)], dtype=np.uint8)

    def _popcount(a: np.ndarray) -> np.ndarray:
        b = _POP8[np.ascontiguousarray(a).view(np.uint8)].reshape(a.shape + (4,))
        return b.sum(axis=-1, dtype=np.uint8)


def _check_i32(a: np.ndarray, what: str) -> np.ndarray:
    if a.size and (a.min() < INT32_MIN or a.max() > INT32_MAX):
        raise OverflowError(f"{what} leaves the int32 range ({a.min()}..{a.max()})")
    return a


def _act(y: np.ndarray, act: str) -> np.ndarray:
    with np.errstate(over="ignore", invalid="ignore"):
        return _act_f32(y, act)


def _act_f32(y: np.ndarray, act: str) -> np.ndarray:
    if act == "none":
        return y
    if act == "relu":
        return np.maximum(y, np.float32(0))
    if act == "sigmoid":
        return (np.float32(1) / (np.float32(1) + np.exp(-y))).astype(np.float32)
    if act == "tanh":
        return np.tanh(y).astype(np.float32)
    if act == "softmax":
        e = np.exp(y - y.max(axis=1, keepdims=True))
        return (e / e.sum(axis=1, keepdims=True)).astype(np.float32)
    raise ValueError(f"unknown activation {act!r}")


def requantize(acc: np.ndarray, mult: np.ndarray, s1: np.ndarray, s2: np.ndarray,
               zy: int) -> np.ndarray:
    """int32 accumulators -> u8 per FORMAT.md (floor shift, clamp, round half up)."""
    acc = np.asarray(acc, dtype=np.int64)
    mult, s1, s2 = (np.asarray(a, dtype=np.int64) for a in (mult, s1, s2))
    t = np.clip(acc >> s1, -32768, 32767)
    y = zy + ((t * mult + (np.int64(1) << (s2 - 1))) >> s2)
    return np.clip(y, 0, 255).astype(np.uint8)


def popcount_xor(xbits: np.ndarray, wbits: np.ndarray) -> np.ndarray:
    """Mismatch counts: xbits u32 [N, words], wbits u32 [n_out, words] -> int64 [N, n_out]."""
    out = np.empty((xbits.shape[0], wbits.shape[0]), dtype=np.int64)
    for k in range(0, xbits.shape[0], _CHUNK):
        xb = xbits[k:k + _CHUNK, None, :] ^ wbits[None, :, :]
        out[k:k + _CHUNK] = _popcount(xb).sum(axis=2, dtype=np.int64)
    return out


def _dense_q8(layer: ir.DenseQ8, x: np.ndarray) -> np.ndarray:
    if x.dtype != np.uint8:
        raise TypeError(f"dense_q8 takes u8 input, got {x.dtype}")
    wz = layer.w.astype(np.int64) - layer.zw.astype(np.int64)[:, None]
    if layer.mask is not None:
        wz = wz * layer.mask  # unstored weights contribute nothing
    xi = x.astype(np.int64)
    acc = layer.bias.astype(np.int64)[None, :] + xi @ wz.T
    # The kernels' form: sum x*W - zw*sum x; both partial sums must fit too.
    _check_i32(xi.sum(axis=1) * int(layer.zw.max(initial=0)), "zw * sum(x)")
    _check_i32(acc, "dense_q8 accumulator")
    if layer.out_dtype == "i32":
        return acc.astype(np.int32)
    return requantize(acc, layer.mult, layer.s1, layer.s2, layer.zy)


def _f32_sums(x: np.ndarray, w: np.ndarray, start: np.ndarray,
              mask: np.ndarray | None = None) -> np.ndarray:
    """start[c] + sum_i x[:, i]*w[c, i] in float32 (FORMAT.md): x [N, n_in], w [n_out,
    n_in], start [n_out]; inputs that are 0 and weights where mask is False are skipped."""
    xf = x.astype(np.float32)
    w = w.astype(np.float32)
    start = start.astype(np.float32)
    if mask is not None:
        w = np.where(mask, w, np.float32(0))
    with np.errstate(over="ignore", invalid="ignore"):
        y = (xf @ w.T + start).astype(np.float32)
        # |partial sum| <= bound: below half the float32 range no order overflows
        bound = np.abs(xf.astype(np.float64)) @ np.abs(w.astype(np.float64)).T
        bound += np.abs(start.astype(np.float64))
        exact = ~(np.all(np.isfinite(xf), axis=1) & np.all(bound < _F32_MAX / 2, axis=1))
    rows = np.flatnonzero(exact)
    if rows.size:
        y[rows] = _f32_sums_in_order(xf[rows], w, start, mask)
    return y


def _f32_sums_in_order(x: np.ndarray, w: np.ndarray, start: np.ndarray,
                       mask: np.ndarray | None) -> np.ndarray:
    """_f32_sums one input at a time, as the device adds them (float32 x and w)."""
    y = np.repeat(start[None, :], x.shape[0], axis=0)
    with np.errstate(over="ignore", invalid="ignore"):
        for i in range(x.shape[1]):
            rows = np.flatnonzero(x[:, i] != 0)
            if not rows.size:
                continue
            cols = np.flatnonzero(mask[:, i]) if mask is not None else np.arange(w.shape[0])
            at = np.ix_(rows, cols)
            y[at] = y[at] + x[rows, i][:, None] * w[cols, i][None, :]
    return y


def _dense_f32(layer: ir.DenseF32, x: np.ndarray) -> np.ndarray:
    return _act(_f32_sums(x, layer.w, layer.b, layer.mask), layer.act)


def _dense_q8w(layer: ir.DenseQ8W, x: np.ndarray) -> np.ndarray:
    wz = layer.w.astype(np.int64) - layer.zw.astype(np.int64)[:, None]
    if x.dtype == np.uint8:
        s = _check_i32(x.astype(np.int64) @ wz.T, "dense_q8w integer sum").astype(np.float32)
    else:
        s = _f32_sums(x, wz, np.zeros(len(wz), np.float32))
    with np.errstate(over="ignore", invalid="ignore"):
        y = layer.scale.astype(np.float32) * s + layer.b.astype(np.float32)
    return _act(y.astype(np.float32), layer.act)


def _layer(layer: ir.Layer, x: np.ndarray) -> np.ndarray:
    if isinstance(layer, ir.DenseF32):
        return _dense_f32(layer, x)
    if isinstance(layer, ir.DenseQ8W):
        return _dense_q8w(layer, x)
    if isinstance(layer, ir.DenseQ8):
        return _dense_q8(layer, x)
    if isinstance(layer, ir.Binarize):
        if x.dtype != np.uint8:
            raise TypeError(f"binarize takes u8 input, got {x.dtype}")
        return pack_bits(x >= layer.threshold)
    if isinstance(layer, (ir.XnorDense, ir.XnorOut)):
        n = ir.n_in(layer)
        m = popcount_xor(x, pack_bits(layer.w))
        if isinstance(layer, ir.XnorDense):
            return pack_bits(m <= layer.thr.astype(np.int64)[None, :])
        y = layer.a.astype(np.int64)[None, :] * (n - 2 * m) + layer.b.astype(np.int64)[None, :]
        return _check_i32(y, "xnor_out output").astype(np.int32)
    raise TypeError(f"not a device layer: {type(layer).__name__}")


def run(dm: ir.DeviceModel, x: np.ndarray) -> np.ndarray:
    """Raw model output for inputs x [N, input_size] (or one input [input_size]).

    x is u8 raw bytes for a `u8`-input model (float arrays holding integers 0..255
    are accepted and converted), or float for an `f32`-input model. Returns f32
    [N, output_size] (logits or activations) or i32 (raw; times
    `dm.output_scale` gives logits).
    """
    dm.check()
    x = np.asarray(x)
    single = x.ndim == 1
    x = np.atleast_2d(x)
    if x.ndim != 2 or x.shape[1] != dm.input_size:
        raise ValueError(f"model takes inputs of size {dm.input_size}, got shape {x.shape}")
    if dm.input_dtype == "u8":
        if x.dtype != np.uint8:
            if x.size and (np.any(x != np.round(x)) or x.min() < 0 or x.max() > 255):
                raise ValueError("u8-input model: inputs must be integers 0..255 (raw bytes)")
            x = x.astype(np.uint8)
    else:
        x = x.astype(np.float32)
    for layer in dm.layers:
        x = _layer(layer, x)
    return x[0] if single else x


def predict(dm: ir.DeviceModel, x: np.ndarray) -> np.ndarray:
    """Class indices: argmax of the raw output (first maximum on ties)."""
    return np.argmax(run(dm, np.atleast_2d(x)), axis=1)


def logits(dm: ir.DeviceModel, x: np.ndarray) -> np.ndarray:
    """Real-valued outputs: raw output times `output_scale` for i32 models."""
    y = run(dm, x)
    return y * np.float32(dm.output_scale) if y.dtype == np.int32 else y


# ------------------------------------------------------------------ size figures


def stats(dm: ir.DeviceModel, blob: bytes | None = None) -> dict:
    """Size figures of a device model.

    params: logical parameter count (every weight of every layer, pruned ones
    included, plus per-output vectors: biases, scales, thresholds); bytes: size
    of the .nnb file (header, layer table and parameter arrays); param_bytes: the
    parameter arrays alone as stored on the device (with 4-byte padding); nnz:
    stored weights, only for models with sparse layers.
    """
    blob = fmt.to_bytes(dm) if blob is None else blob
    params, nnz, sparse = 0, 0, False
    for la in dm.layers:
        if isinstance(la, ir.Binarize):
            continue
        w = la.w.size
        vec = {ir.DenseF32: 1, ir.DenseQ8W: 3, ir.DenseQ8: 2, ir.XnorDense: 1, ir.XnorOut: 2}
        params += w + vec[type(la)] * ir.n_out(la)
        mask = getattr(la, "mask", None)
        sparse |= mask is not None
        nnz += int(np.count_nonzero(mask)) if mask is not None else w
    out = {"family": dm.family, "params": params, "bytes": len(blob),
           "param_bytes": len(blob) - fmt.HEADER_SIZE - fmt.RECORD_SIZE * len(dm.layers)}
    if sparse:
        out["nnz"] = nnz
    return out
