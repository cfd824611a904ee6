"""uint8 quantization: rounding bounds, fixed-point requantization, trained models."""

from __future__ import annotations

import numpy as np
import pytest

from piconn import format as fmt
from piconn import nn, prune, quant, reference, train

META = {"input_scale": 1 / 255}


@pytest.fixture(scope="module")
def mnist_small(mnist):
    """A small float MLP trained on an MNIST subset, with held-out data."""
    xtr, ytr, xte, yte = mnist
    model = nn.Sequential(nn.Linear(784, 64), nn.ReLU(), nn.Linear(64, 10)).init(0)
    train.fit(model, xtr[:8000], ytr[:8000], optimizer=nn.Adam(model.params(), 2e-3),
              epochs=3, batch_size=64, seed=0, progress=False)
    model.eval()
    return model, xtr[8000:10000], xte[:2000], yte[:2000]


def test_quantize_rows_error_bound() -> None:
    rng = np.random.default_rng(0)
    w = rng.normal(size=(50, 200)) * rng.uniform(0.01, 10, (50, 1))
    w[3] = np.abs(w[3])  # all positive
    w[4] = -np.abs(w[4])  # all negative
    w[5] = 0.0  # all zero
    w[:, :7] = 0.0  # exact zeros in every row
    for shared in (False, True):
        q, zw, s = quant.quantize_rows(w, shared_scale=shared)
        assert q.dtype == np.uint8 and zw.dtype == np.uint8
        err = np.abs(quant.dequantize_rows(q, zw, s) - w)
        assert np.all(err <= s[:, None] / 2 * (1 + 1e-9))
        np.testing.assert_array_equal(q[:, :7], np.repeat(zw[:, None], 7, axis=1))
        if shared:
            assert np.all(s == s[0])
    q, zw, s = quant.quantize_rows(w)
    assert np.all(q.max(axis=1)[[0, 1, 2, 3]] == 255)  # per-row scale uses the full range
    assert zw[3] == 0 and zw[4] == 255


def test_requant_params_encoding() -> None:
    rng = np.random.default_rng(1)
    m = 2.0 ** rng.uniform(-36, 13.9, 5000)
    mult, s1, s2 = quant.requant_params(m)
    assert np.all((mult >= 2**14) & (mult < 2**15))
    S = s1.astype(np.int64) + s2
    np.testing.assert_array_equal(s2, np.minimum(S, 21))
    assert np.all(s1 >= 0) and np.all(s1 <= 31) and np.all(s2 >= 1)
    rel = np.abs(mult * 2.0 ** -S.astype(float) - m) / m
    assert rel.max() <= 2.0**-15
    fmt.rq_words(mult, s1, s2)  # the writer accepts them
    for bad in (-1.0, 2.0**14, 1e-20, np.nan):
        with pytest.raises(ValueError):
            quant.requant_params(np.array([bad]))


def test_requantization_within_one_of_float_and_saturates() -> None:
    rng = np.random.default_rng(2)
    n = 200_000
    m = 2.0 ** rng.uniform(-30, 8, n)
    zy = rng.integers(0, 256, n)
    # Accumulators around the interesting range of each multiplier, plus extreme ones.
    acc = np.round(rng.normal(0, 300, n) / m)
    acc[::10] = rng.integers(-(2**31), 2**31, n // 10)
    acc = np.clip(acc, -(2**31), 2**31 - 1).astype(np.int64)
    mult, s1, s2 = quant.requant_params(m)
    got = reference.requantize(acc, mult, s1, s2, zy).astype(np.int64)  # zy per element
    want = zy + m * acc
    assert np.all(np.abs(got - np.clip(want, 0, 255)) <= 1)
    assert np.all(got[want >= 256] == 255) and np.all(got[want <= -1] == 0)
    assert (want >= 256).sum() > 1000 and (want <= -1).sum() > 1000  # both sides exercised
    assert ((want > 1) & (want < 254)).sum() > 50_000


def test_full_integer_agrees_with_float(mnist_small) -> None:
    model, xcal, xte, yte = mnist_small
    out_f = train.predict(model, xte)
    dm = quant.quantize(model, META, "full", xcal)
    assert [la.kind for la in dm.layers] == ["dense_q8", "dense_q8"]
    assert dm.layers[0].in_dtype == "u8" and dm.output_dtype == "i32"
    raw = reference.run(dm, xte)
    assert raw.dtype == np.int32
    agree = (raw.argmax(1) == out_f.argmax(1)).mean()
    assert agree >= 0.98, agree
    # output_scale turns the accumulator into the float logits (roughly).
    err = np.abs(reference.logits(dm, xte) - out_f)
    assert np.median(err) < 0.05 * np.abs(out_f).max()
    acc_f, acc_q = (out_f.argmax(1) == yte).mean(), (raw.argmax(1) == yte).mean()
    assert acc_q >= acc_f - 0.01
    back = fmt.from_bytes(fmt.to_bytes(dm))
    np.testing.assert_array_equal(reference.run(back, xte), raw)


def test_weight_only_agrees_with_float(mnist_small) -> None:
    model, _, xte, _ = mnist_small
    dm = quant.quantize(model, META, "weights")
    assert [la.kind for la in dm.layers] == ["dense_q8w", "dense_q8w"]
    out = reference.run(dm, xte)
    out_f = train.predict(model, xte)
    assert (out.argmax(1) == out_f.argmax(1)).mean() >= 0.99
    np.testing.assert_allclose(out, out_f, atol=0.05 * np.abs(out_f).max())


def test_input_zero_point_is_folded_exactly() -> None:
    """A hidden layer without ReLU gets a nonzero output zero point, the next layer folds it."""
    rng = np.random.default_rng(3)
    model = nn.Sequential(nn.Linear(20, 16), nn.Linear(16, 4)).init(3)
    model.layers[0].bias.data[:] = rng.normal(size=16).astype(np.float32)
    model.layers[1].bias.data[:] = rng.normal(size=4).astype(np.float32)
    model.eval()
    x = rng.integers(0, 256, (3000, 20)).astype(np.uint8)
    dm = quant.quantize(model, META, "full", x, percentile=100, bias_correction=False)
    assert 0 < dm.layers[0].zy < 255
    want = train.predict(model, x)
    got = reference.logits(dm, x)
    assert np.abs(got - want).max() < 0.03 * np.abs(want).max()


def test_pruned_model_keeps_its_zeros(mnist_small) -> None:
    model, xcal, xte, _ = mnist_small
    pruned = nn.Sequential(nn.Linear(784, 64), nn.ReLU(), nn.Linear(64, 10))
    for src, dst in zip(model.layers, pruned.layers):
        if isinstance(src, nn.Linear):
            dst.load_state(src.state())
    prune.magnitude_prune(pruned, 0.8)
    pruned.eval()
    dm = quant.quantize(pruned, META, "full", xcal)
    assert dm.family == "sparse"
    for la, lin in zip(dm.layers, [pruned.layers[0], pruned.layers[2]]):
        np.testing.assert_array_equal(la.mask, lin.mask)
        assert np.all(la.w[~la.mask] == np.repeat(la.zw[:, None], la.w.shape[1], 1)[~la.mask])
    blob = fmt.to_bytes(dm)
    back = fmt.from_bytes(blob)
    assert back.layers[0].kind == "dense_q8" and back.layers[0].mask is not None
    assert fmt.KIND_NAMES[blob[40]] == "sparse_q8"
    np.testing.assert_array_equal(reference.run(back, xte), reference.run(dm, xte))


def test_bad_arguments() -> None:
    model = nn.Sequential(nn.Linear(4, 3), nn.Sigmoid(), nn.Linear(3, 2)).init(0)
    x = np.zeros((5, 4), np.uint8)
    with pytest.raises(ValueError, match="unknown quantization mode"):
        quant.quantize(model, META, "int4", x)
    with pytest.raises(ValueError, match="sigmoid"):
        quant.quantize(model, META, "full", x)
    relu = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2)).init(0)
    with pytest.raises(ValueError, match="calibration"):
        quant.quantize(relu, META, "full")
    with pytest.raises(ValueError, match="input_scale"):
        quant.quantize(relu, {}, "full", x)
    # weight-only keeps any activation
    assert quant.quantize(model, META, "weights").layers[0].act == "sigmoid"
