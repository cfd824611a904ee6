"""The numpy reference against a scalar, loop-by-loop reading of docs/FORMAT.md."""

from __future__ import annotations

import numpy as np
import pytest

from piconn import format as fmt
from piconn import ir, reference


def _scalar_layer(layer: ir.Layer, x: list) -> list:
    """One input vector through one layer, in Python ints/floats, as FORMAT.md reads."""
    if isinstance(layer, ir.Binarize):
        return [1 if v >= layer.threshold else 0 for v in x]
    if isinstance(layer, (ir.XnorDense, ir.XnorOut)):
        n = ir.n_in(layer)
        xw = [int(v) for v in fmt.pack_bits(np.array(x, dtype=bool))[0]]
        out = []
        for c in range(ir.n_out(layer)):
            ww = [int(v) for v in fmt.pack_bits(layer.w[c])[0]]
            m = sum((a ^ b).bit_count() for a, b in zip(xw, ww))
            if isinstance(layer, ir.XnorDense):
                out.append(1 if m <= int(layer.thr[c]) else 0)
            else:
                out.append(int(layer.a[c]) * (n - 2 * m) + int(layer.b[c]))
        return out
    if isinstance(layer, ir.DenseQ8):
        out = []
        for c in range(ir.n_out(layer)):
            acc = int(layer.bias[c])
            for i, v in enumerate(x):
                if layer.mask is None or layer.mask[c, i]:
                    acc += int(v) * (int(layer.w[c, i]) - int(layer.zw[c]))
            if layer.out_dtype == "i32":
                out.append(acc)
                continue
            m, s1, s2 = int(layer.mult[c]), int(layer.s1[c]), int(layer.s2[c])
            t = min(max(acc >> s1, -32768), 32767)
            out.append(min(max(layer.zy + ((t * m + (1 << (s2 - 1))) >> s2), 0), 255))
        return out
    raise TypeError(type(layer))


def _scalar_run(dm: ir.DeviceModel, x: np.ndarray) -> np.ndarray:
    rows = []
    for v in x:
        h = [int(a) for a in v]
        for layer in dm.layers:
            h = _scalar_layer(layer, h)
        rows.append(h)
    return np.array(rows, dtype=np.int64)


def _random_q8(rng, n_in, n_out, out_dtype, mask=False) -> ir.DenseQ8:
    w = rng.integers(0, 256, (n_out, n_in)).astype(np.uint8)
    zw = rng.integers(0, 256, n_out).astype(np.uint8)
    bias = rng.integers(-50000, 50000, n_out).astype(np.int32)
    msk = rng.random((n_out, n_in)) < 0.3 if mask else None
    if out_dtype == "i32":
        return ir.DenseQ8(w, zw, bias, out_dtype="i32", mask=msk)
    mult = rng.integers(2**14, 2**15, n_out).astype(np.int32)
    s2 = rng.integers(1, 22, n_out).astype(np.int32)
    s1 = rng.integers(0, 12, n_out).astype(np.int32)
    return ir.DenseQ8(w, zw, bias, mult, s1, s2, zy=int(rng.integers(0, 256)), out_dtype="u8",
                      mask=msk)


@pytest.mark.parametrize("sparse", [False, True])
def test_q8_matches_scalar_reading(sparse: bool) -> None:
    rng = np.random.default_rng(1)
    dm = ir.DeviceModel([_random_q8(rng, 37, 19, "u8", sparse), _random_q8(rng, 19, 7, "i32", sparse)],
                        "uint8")
    x = rng.integers(0, 256, (40, 37)).astype(np.uint8)
    got = reference.run(dm, x)
    assert got.dtype == np.int32
    np.testing.assert_array_equal(got, _scalar_run(dm, x))
    # The intermediate u8 layer alone: saturates somewhere and not everywhere.
    mid = reference.run(ir.DeviceModel(dm.layers[:1], "uint8"), x)
    assert mid.dtype == np.uint8
    np.testing.assert_array_equal(mid, _scalar_run(ir.DeviceModel(dm.layers[:1], "uint8"), x))


def test_xnor_matches_scalar_reading() -> None:
    rng = np.random.default_rng(2)
    n0, n1, n2 = 70, 33, 5  # not multiples of 32: padding bits must never count
    layers = [
        ir.Binarize(n0, 100),
        ir.XnorDense(rng.random((n1, n0)) < 0.5, rng.integers(-1, n0 + 1, n1).astype(np.int32)),
        ir.XnorOut(rng.random((n2, n1)) < 0.5, rng.integers(-1000, 1000, n2).astype(np.int32),
                   rng.integers(-10**6, 10**6, n2).astype(np.int32)),
    ]
    dm = ir.DeviceModel(layers, "xnor", 0.5)
    x = rng.integers(0, 256, (25, n0)).astype(np.uint8)
    np.testing.assert_array_equal(reference.run(dm, x), _scalar_run(dm, x))
    np.testing.assert_allclose(reference.logits(dm, x), 0.5 * _scalar_run(dm, x))


def test_popcount_equals_pm1_dot_product() -> None:
    rng = np.random.default_rng(3)
    n = 100
    xb, wb = rng.random((300, n)) < 0.5, rng.random((9, n)) < 0.5
    m = reference.popcount_xor(fmt.pack_bits(xb), fmt.pack_bits(wb))
    dot = (2 * xb.astype(int) - 1) @ (2 * wb.astype(int) - 1).T
    np.testing.assert_array_equal(n - 2 * m, dot)


def test_float_kinds_and_q8w() -> None:
    rng = np.random.default_rng(4)
    w = rng.normal(size=(6, 10)).astype(np.float32)
    b = rng.normal(size=6).astype(np.float32)
    x = rng.integers(0, 256, (8, 10)).astype(np.uint8)
    dense = ir.DeviceModel([ir.DenseF32(w, b, "relu", "u8")], "float")
    np.testing.assert_allclose(reference.run(dense, x), np.maximum(x @ w.T + b, 0), rtol=1e-5)
    mask = rng.random(w.shape) < 0.5
    sparse = ir.DeviceModel([ir.DenseF32(w, b, "none", "u8", mask)], "sparse")
    np.testing.assert_allclose(reference.run(sparse, x), x @ (w * mask).T + b, rtol=1e-5)
    q = rng.integers(0, 256, (6, 10)).astype(np.uint8)
    zw = rng.integers(0, 256, 6).astype(np.uint8)
    sc = rng.random(6).astype(np.float32)
    q8w = ir.DeviceModel([ir.DenseQ8W(q, zw, sc, b, "softmax", "u8")], "uint8")
    z = sc * (x.astype(np.int64) @ (q.astype(np.int64) - zw[:, None]).T) + b
    p = np.exp(z - z.max(1, keepdims=True))
    np.testing.assert_allclose(reference.run(q8w, x), p / p.sum(1, keepdims=True), rtol=1e-4)


def test_round_trip_preserves_outputs() -> None:
    rng = np.random.default_rng(5)
    models = [
        ir.DeviceModel([_random_q8(rng, 30, 12, "u8", True), _random_q8(rng, 12, 4, "i32")],
                       "sparse", 0.01),
        ir.DeviceModel([ir.Binarize(40, 128),
                        ir.XnorDense(rng.random((35, 40)) < 0.5,
                                     rng.integers(0, 40, 35).astype(np.int32)),
                        ir.XnorOut(rng.random((3, 35)) < 0.5, np.ones(3, np.int32),
                                   np.arange(3, dtype=np.int32))], "xnor", 0.25),
        ir.DeviceModel([ir.DenseF32(rng.normal(size=(5, 30)).astype(np.float32),
                                    np.zeros(5, np.float32), "tanh", "u8",
                                    rng.random((5, 30)) < 0.2)], "sparse"),
    ]
    for dm in models:
        back = fmt.from_bytes(fmt.to_bytes(dm))
        assert back.output_scale == np.float32(dm.output_scale)
        x = rng.integers(0, 256, (50, dm.input_size)).astype(np.uint8)
        np.testing.assert_array_equal(reference.run(back, x), reference.run(dm, x))


def test_overflow_and_bad_input_are_refused() -> None:
    w = np.full((1, 40000), 255, np.uint8)
    big = ir.DeviceModel([ir.DenseQ8(w, np.zeros(1, np.uint8), np.zeros(1, np.int32),
                                     out_dtype="i32")], "uint8")
    with pytest.raises(OverflowError):
        reference.run(big, np.full((1, 40000), 255, np.uint8))
    small = ir.DeviceModel([ir.Binarize(4, 10)], "xnor")
    with pytest.raises(ValueError, match="size 4"):
        reference.run(small, np.zeros((2, 5), np.uint8))
    with pytest.raises(ValueError, match="0..255"):
        reference.run(small, np.full((2, 4), 300.0))


def test_requantize_rounds_half_up_and_floors_shifts() -> None:
    # acc = -3, s1 = 1: floor(-1.5) = -2; then (-2*M + 2^(s2-1)) >> s2 with M = 2^14, s2 = 15
    y = reference.requantize(np.array([-3, 3, 1]), np.array([2**14] * 3), np.array([1, 1, 0]),
                             np.array([15] * 3), 10)
    # -2 * 0.5 = -1 -> 9 ; floor(3/2)=1 -> 0.5 rounds up -> 11 ; 1 * 0.5 -> 0.5 up -> 11
    np.testing.assert_array_equal(y, [9, 11, 11])
