"""XNOR layers, threshold folding and lowering."""

from __future__ import annotations

import json

import numpy as np
import pytest

from piconn import commands, ir, nn, reference, train, xnor
from piconn import format as fmt


def _random_bn_model(seed: int, arch=(70, 40, 33, 6)) -> nn.Sequential:
    """An XNOR model with random latent weights and random batch-norm statistics,
    including negative and zero gammas, in float64 so the unfolded network is exact."""
    rng = np.random.default_rng(seed)
    model = xnor.build(arch, threshold=100, seed=seed)
    model.astype(np.float64)
    for la in model.layers:
        if isinstance(la, nn.BatchNorm1d):
            n = la.n
            la.gamma.data = rng.normal(size=n) * rng.choice([1.0, 0.01], n)
            la.gamma.data[rng.random(n) < 0.3] *= -1
            la.gamma.data[:2] = 0.0
            la.beta.data = rng.normal(size=n)
            la.beta.data[0], la.beta.data[1] = 0.5, -0.5
            la.running_mean = rng.normal(0, 4, n)
            la.running_var = rng.uniform(0.5, 30, n)
    return model.eval()


def _bits_after(model: nn.Sequential, x: np.ndarray, upto: int) -> np.ndarray:
    h = x.astype(np.float64) / 255
    for la in model.layers[:upto]:
        h = la.forward(h)
    return h > 0


def test_threshold_folding_gives_identical_bits() -> None:
    for seed in range(4):
        model = _random_bn_model(seed)
        dm = xnor.lower(model, {})
        assert [la.kind for la in dm.layers] == ["binarize", "xnor_dense", "xnor_dense", "xnor_out"]
        x = np.random.default_rng(100 + seed).integers(0, 256, (3000, 70)).astype(np.uint8)
        sign_idx = [i for i, la in enumerate(model.layers) if isinstance(la, xnor.SignSTE)]
        for j, idx in enumerate(sign_idx):
            part = ir.DeviceModel(dm.layers[:j + 2], "xnor")
            got = fmt.unpack_bits(reference.run(part, x), part.output_size)
            want = _bits_after(model, x, idx + 1)
            assert 0.05 < want.mean() < 0.95
            np.testing.assert_array_equal(got, want)
        # Zero gamma: constant neurons (beta 0.5 -> always +1, beta -0.5 -> always -1).
        assert np.all(got[:, 0]) and not np.any(got[:, 1])
        # Output: fixed-point logits match the float ones closely and in order.
        want = np.asarray(train.predict(model, x.astype(np.float64) / 255))
        got = reference.logits(dm, x)
        scale = np.abs(want).max()
        assert np.abs(got - want).max() < 1e-6 * scale
        np.testing.assert_array_equal(got.argmax(1), want.argmax(1))


def test_fold_threshold_cases() -> None:
    n = 10
    h = n - 2 * np.arange(n + 1)  # every possible mismatch count m = 0..n
    k = np.array([2.0, -3.0, 0.0, 0.0, 1.0, 1.0, -1.0])
    c = np.array([1.0, 2.5, 0.0, -1.0, 100.0, -100.0, 100.0])
    thr, inv = xnor.fold_threshold(k, c, n)
    for j in range(len(k)):
        want = k[j] * h + c[j] >= 0
        m = np.arange(n + 1)
        mm = n - m if inv[j] else m  # inverted weights count n - m mismatches
        np.testing.assert_array_equal(mm <= thr[j], want)
    assert thr.min() >= -1 and thr.max() <= n


def test_fixed_point_affine_bounds() -> None:
    rng = np.random.default_rng(0)
    for n in (1, 256, 4000):
        k, c = rng.normal(size=10) * 5, rng.normal(size=10) * 50
        a, b, s = xnor.fixed_point_affine(k, c, n)
        assert np.max(n * np.abs(a.astype(np.int64)) + np.abs(b)) < 2**31
        assert np.max(n * np.abs(a.astype(np.int64)) + np.abs(b)) > 2**29  # uses the range
        h = np.arange(-n, n + 1)
        err = np.abs((a[:, None].astype(np.int64) * h + b[:, None]) * s - (k[:, None] * h + c[:, None]))
        assert err.max() <= (n + 1) * s


def test_ste_layers() -> None:
    rng = np.random.default_rng(1)
    s = xnor.SignSTE()
    x = rng.normal(size=(5, 7)) * 2
    y = s(x)
    np.testing.assert_array_equal(y, np.where(x >= 0, 1, -1))
    np.testing.assert_array_equal(s.backward(np.ones_like(x)), np.abs(x) <= 1)
    lin = xnor.BinaryLinear(7, 3)
    lin.init(rng)
    lin.weight.data[0, 0] = 1.7  # clipped on the next training forward
    lin.weight.data[1, 1] = 0.0  # sign(0) = +1
    out = lin(x)
    assert lin.weight.data[0, 0] == 1.0
    np.testing.assert_allclose(out, x @ np.where(lin.weight.data >= 0, 1, -1).T)
    lin.weight.data[2, 2] = 1.0
    lin.backward(np.ones((5, 3)))
    assert np.all(lin.weight.grad[np.abs(lin.weight.data) > 1] == 0)


def test_batchnorm_gradient() -> None:
    rng = np.random.default_rng(2)
    bn = nn.BatchNorm1d(4)
    bn.astype(np.float64)
    bn.gamma.data = rng.normal(size=4)
    bn.beta.data = rng.normal(size=4)
    x = rng.normal(size=(6, 4)) * 3 + 1
    gy = rng.normal(size=(6, 4))

    def f() -> float:
        bn.train()
        return float((bn.forward(x) * gy).sum())

    f()
    gx = bn.backward(gy)
    np.testing.assert_allclose(gx, nn.numerical_grad(f, x), rtol=1e-5, atol=1e-7)
    bn.gamma.grad[:] = 0
    f()
    bn.backward(gy)
    np.testing.assert_allclose(bn.gamma.grad, nn.numerical_grad(f, bn.gamma.data), rtol=1e-5)


def test_save_load_and_budget(tmp_path) -> None:
    model = _random_bn_model(7)
    path = nn.save(model, tmp_path / "x.npz", {"input_scale": 1 / 255})
    back, meta = nn.load(path)
    x = np.random.default_rng(3).integers(0, 256, (200, 70)).astype(np.uint8)
    np.testing.assert_array_equal(reference.run(xnor.lower(back, meta), x),
                                  reference.run(xnor.lower(model, {}), x))
    assert xnor.weight_words((784, 256, 256, 10)) == 25 * 256 + 8 * 256 + 8 * 10
    dm = xnor.lower(xnor.build((784, 256, 256, 10)).eval(), {})
    assert xnor.weight_bytes(dm) == 4 * xnor.weight_words((784, 256, 256, 10))
    assert xnor.weight_bytes(dm) <= xnor.WEIGHT_BYTES_MAX
    with pytest.raises(ValueError, match="architecture"):
        xnor.parse_arch("784-x-10")
    with pytest.raises(ValueError, match="threshold"):
        xnor.InputBinarize(300)


def test_small_xnor_learns_mnist_subset(mnist) -> None:
    xtr, ytr, xte, yte = mnist
    model = xnor.build((784, 128, 10), seed=0)
    xnor.fit(model, xtr[:6000], ytr[:6000], epochs=2, lr=1e-2, lr_end=3e-3, progress=False)
    dm = xnor.lower(model, {})
    acc_dev = (reference.predict(dm, xte[:2000]) == yte[:2000]).mean()
    acc_float = train.evaluate(model, xte[:2000], yte[:2000])
    assert acc_dev > 0.8, acc_dev
    assert abs(acc_dev - acc_float) < 0.01


def test_cli_train_xnor_kind(make_idx_set, tmp_path, capsys) -> None:
    make_idx_set(tmp_path / "d", n_train=50, n_test=20)
    out = tmp_path / "x.npz"
    assert commands.main(["train", "mnist", "--kind", "xnor", "--arch", "784-40-10",
                          "--epochs", "1", "--binarize-threshold", "100",
                          "--data", str(tmp_path / "d"), "--out", str(out), "-q", "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["kind"] == "xnor" and res["n"] == 20
    model, meta = nn.load(out)
    assert meta["threshold"] == 100 and meta["weight_words"] == 25 * 40 + 2 * 10
    dm = xnor.lower(model, meta)
    assert dm.layers[0].threshold == 100 and xnor.weight_bytes(dm) == 4 * meta["weight_words"]
    assert commands.main(["eval", str(out), "--data", str(tmp_path / "d"), "--json"]) == 0
    ev = json.loads(capsys.readouterr().out)
    assert ev["reference"] is True and ev["kind"] == "xnor"
    assert commands.main(["train", "mnist", "--kind", "xnor", "--binarize-threshold", "256",
                          "--data", str(tmp_path / "d"), "--out", str(out), "-q"]) == 1
    assert "threshold" in capsys.readouterr().err
