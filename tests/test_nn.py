"""piconn.nn and piconn.train: convergence, exact gradients, save/load, masks."""

from __future__ import annotations

import json

import numpy as np
import pytest

from piconn import nn, train

# ------------------------------------------------------------------ convergence


def test_xor_converges_with_the_documented_snippet(xor):
    x, y = xor
    model = nn.Sequential()
    model.add(nn.Linear(2, 3)); model.add(nn.Sigmoid()); model.add(nn.Linear(3, 1))
    model.init(seed=0)
    optimizer = nn.SGD(model.params(), 0.25)
    for _epoch in range(2000):
        output = model(x)
        loss = nn.mse(output, y)
        optimizer.zero_grad(); loss.backward(); optimizer.step()
    out = np.asarray(model(x)).ravel()
    assert float(loss) < 0.01
    assert loss.value == float(loss)
    assert ((out > 0.5) == (y.ravel() > 0.5)).all(), out


def test_adam_and_momentum_also_solve_xor(xor):
    x, y = xor
    for make in (lambda p: nn.Adam(p, 0.05), lambda p: nn.SGD(p, 0.1, momentum=0.9)):
        model = nn.Sequential(nn.Linear(2, 4), nn.Tanh(), nn.Linear(4, 1)).init(3)
        opt = make(model.params())
        for _ in range(500):
            loss = nn.mse(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
        assert loss.value < 0.01


# -------------------------------------------------------------------- gradients


def _check_module_grads(module: nn.Module, x: np.ndarray, rng: np.random.Generator,
                        tol: float = 1e-6) -> None:
    """Backward of f(x) = sum(r * module(x)) vs central differences, input and params."""
    module.train()
    r = rng.standard_normal(np.shape(module.forward(x)))

    def f() -> float:
        return float((r * module.forward(x)).sum())

    module.zero_grad()
    module.forward(x)
    grad_x = module.backward(r)
    num_x = nn.numerical_grad(f, x)
    np.testing.assert_allclose(grad_x, num_x, rtol=tol, atol=tol)
    analytic = [p.grad.copy() for p in module.params()]
    for p, g in zip(module.params(), analytic):
        np.testing.assert_allclose(g, nn.numerical_grad(f, p.data), rtol=tol, atol=tol)


def _f64(*layers: nn.Module) -> nn.Sequential:
    return nn.Sequential(*layers, dtype=np.float64).init(7)


@pytest.mark.parametrize("name, module, shape", [
    ("linear", lambda: _f64(nn.Linear(5, 4)), (3, 5)),
    ("linear-nobias", lambda: _f64(nn.Linear(5, 4, bias=False)), (3, 5)),
    ("relu", lambda: _f64(nn.ReLU()), (4, 6)),
    ("sigmoid", lambda: _f64(nn.Sigmoid()), (4, 6)),
    ("tanh", lambda: _f64(nn.Tanh()), (4, 6)),
    ("softmax", lambda: _f64(nn.Softmax()), (4, 6)),
    ("flatten", lambda: _f64(nn.Flatten(), nn.Linear(12, 3)), (2, 3, 4)),
    ("mlp", lambda: _f64(nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 4), nn.Tanh(),
                         nn.Linear(4, 3), nn.Sigmoid(), nn.Linear(3, 3), nn.Softmax()), (3, 6)),
])
def test_gradients_match_finite_differences(name, module, shape, rng):
    x = rng.standard_normal(shape)
    if name == "relu":  # keep away from the kink at 0
        x = np.where(np.abs(x) < 0.05, 0.3, x)
    _check_module_grads(module(), x, rng)


def test_masked_linear_gradient_is_masked_and_matches(rng):
    model = _f64(nn.Linear(6, 4))
    mask = rng.random((4, 6)) > 0.5
    model[0].mask = mask
    x = rng.standard_normal((3, 6))
    _check_module_grads(model, x, rng)  # masked weights do not affect f: zero both ways
    assert (model[0].weight.grad[~mask] == 0).all()
    assert (model[0].weight.grad[mask] != 0).any()


@pytest.mark.parametrize("kind", ["mse", "ce-int", "ce-onehot"])
def test_loss_gradients_match_finite_differences(kind, rng):
    z = rng.standard_normal((5, 4)) * 3
    labels = rng.integers(0, 4, 5)
    if kind == "mse":
        target = rng.standard_normal((5, 4))
        fn = nn.mse
    elif kind == "ce-int":
        target, fn = labels, nn.cross_entropy
    else:
        target, fn = np.eye(4)[labels], nn.cross_entropy
    grad = fn(z, target).grad
    num = nn.numerical_grad(lambda: fn(z, target).value, z)
    np.testing.assert_allclose(grad, num, rtol=1e-6, atol=1e-8)


def test_cross_entropy_is_stable_and_matches_direct_formula():
    z = np.array([[1000.0, 0.0, -1000.0], [1.0, 2.0, 3.0]])
    loss = nn.cross_entropy(z, np.array([0, 2]))
    direct = -np.log(np.exp(3.0) / np.exp([1.0, 2.0, 3.0]).sum())
    assert np.isfinite(loss.value)
    assert loss.value == pytest.approx((0.0 + direct) / 2)
    with pytest.raises(ValueError, match="labels must be in"):
        nn.cross_entropy(z, np.array([0, 3]))
    with pytest.raises(ValueError, match="shape"):
        nn.cross_entropy(z, np.zeros((2, 4)))


def test_backward_refuses_stale_or_detached_outputs(rng):
    model = nn.Sequential(nn.Linear(3, 2)).init(0)
    x = rng.standard_normal((4, 3))
    out = model(x)
    model(x)  # a second call overwrites the cache
    with pytest.raises(RuntimeError, match="called again"):
        nn.mse(out, np.zeros((4, 2))).backward()
    with pytest.raises(RuntimeError, match="module"):
        nn.mse(model(x) * 1.0, np.zeros((4, 2))).backward()
    model.eval()
    with pytest.raises(RuntimeError, match="train"):
        nn.mse(model(x), np.zeros((4, 2))).backward()


def test_float32_default_and_float64_on_request(rng):
    m32 = nn.Sequential(nn.Linear(3, 2)).init(0)
    m64 = nn.Sequential(nn.Linear(3, 2)).init(0, dtype=np.float64)
    x = rng.standard_normal((2, 3))
    assert m32[0].weight.data.dtype == np.float32 and m32(x).dtype == np.float32
    assert m64[0].weight.data.dtype == np.float64 and m64(x).dtype == np.float64
    np.testing.assert_allclose(m32[0].weight.data, m64[0].weight.data, rtol=1e-6)


def test_dropout_train_and_eval(rng):
    d = nn.Dropout(0.25)
    d.init(rng)
    x = np.ones((200, 50), np.float32)
    y = d(x)
    frac = (np.asarray(y) == 0).mean()
    assert 0.2 < frac < 0.3
    np.testing.assert_allclose(np.asarray(y)[np.asarray(y) != 0], 1 / 0.75)
    np.testing.assert_array_equal(d.backward(np.ones_like(x)), y)
    d.eval()
    np.testing.assert_array_equal(d(x), x)
    with pytest.raises(ValueError):
        nn.Dropout(1.0)


def test_init_is_reproducible_and_glorot():
    a = nn.Sequential(nn.Linear(100, 50)).init(5)
    b = nn.Sequential(nn.Linear(100, 50)).init(5)
    c = nn.Sequential(nn.Linear(100, 50)).init(6)
    np.testing.assert_array_equal(a[0].weight.data, b[0].weight.data)
    assert not np.array_equal(a[0].weight.data, c[0].weight.data)
    limit = np.sqrt(6 / 150)
    w = a[0].weight.data
    assert np.abs(w).max() <= limit and np.abs(w).max() > 0.9 * limit
    assert (a[0].bias.data == 0).all()


def test_optimizer_lr_is_settable_and_weight_decay_shrinks():
    p = nn.Param(np.ones(3))
    opt = nn.SGD([p], 0.1, weight_decay=0.5)
    opt.zero_grad()
    opt.step()  # zero gradient: only decay acts
    np.testing.assert_allclose(p.data, 1 - 0.1 * 0.5)
    opt.lr = 0.0
    opt.step()
    np.testing.assert_allclose(p.data, 0.95)
    with pytest.raises(ValueError):
        nn.Adam([], 1e-3)


# ---------------------------------------------------------------- masks, fit


def test_masks_survive_training(rng):
    x = rng.standard_normal((64, 8)).astype(np.float32)
    y = rng.integers(0, 3, 64)
    for make in (lambda p: nn.Adam(p, 1e-2, weight_decay=1e-3),
                 lambda p: nn.SGD(p, 0.1, momentum=0.9, weight_decay=1e-3)):
        model = nn.Sequential(nn.Linear(8, 6), nn.ReLU(), nn.Linear(6, 3)).init(1)
        before = model[0].weight.data.copy()
        # momentum built up before pruning must not revive pruned weights
        opt = make(model.params())
        train.fit(model, x, y, optimizer=opt, epochs=2, batch_size=16, progress=False)
        mask = rng.random((6, 8)) > 0.5
        model[0].mask = mask
        train.fit(model, x, y, optimizer=opt, epochs=3, batch_size=16, progress=False)
        w = model[0].weight.data
        assert (w[~mask] == 0).all()
        assert not np.array_equal(w[mask], before[mask])  # the rest did train
        np.testing.assert_array_equal(model[0].mask, mask)


def test_fit_history_callbacks_and_schedule(rng):
    x = rng.standard_normal((50, 4)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int64)
    model = nn.Sequential(nn.Linear(4, 2)).init(0)
    opt = nn.Adam(model.params(), 0.05)
    steps, epochs = [], []
    hist = train.fit(model, x, y, optimizer=opt, epochs=3, batch_size=16, progress=False,
                     on_step=steps.append, on_epoch=lambda e, row: epochs.append((e, row)),
                     schedule=lambda e: 0.05 / (e + 1))
    assert steps == list(range(1, 3 * 4 + 1))  # ceil(50/16) = 4 batches per epoch
    assert [e for e, _ in epochs] == [1, 2, 3]
    assert [row["lr"] for row in hist] == pytest.approx([0.05, 0.025, 0.05 / 3])
    assert hist[-1]["loss"] < hist[0]["loss"]
    assert set(hist[0]) >= {"epoch", "loss", "accuracy", "lr", "seconds"}
    assert model[0].input_grad  # restored after fit
    acc = train.evaluate(model, x, y, batch_size=7)
    assert acc == (train.predict(model, x).argmax(1) == y).mean()
    assert acc > 0.7


def test_fit_is_reproducible_and_prints_progress(rng, capsys):
    x = rng.standard_normal((40, 4)).astype(np.float32)
    y = rng.integers(0, 3, 40)
    ws = []
    for _ in range(2):
        model = nn.Sequential(nn.Linear(4, 3)).init(0)
        train.fit(model, x, y, optimizer=nn.SGD(model.params(), 0.1), epochs=2,
                  batch_size=8, seed=3, progress=True)
        ws.append(model[0].weight.data.copy())
    np.testing.assert_array_equal(ws[0], ws[1])
    err = capsys.readouterr().err
    assert "epoch 2/2" in err and "loss" in err and "acc" in err


def test_fit_rejects_mismatched_inputs(rng):
    model = nn.Sequential(nn.Linear(4, 3)).init(0)
    opt = nn.SGD(model.params(), 0.1)
    with pytest.raises(ValueError, match="samples"):
        train.fit(model, np.zeros((5, 4)), np.zeros(4, int), optimizer=opt, epochs=1)
    with pytest.raises(ValueError, match="unknown loss"):
        train.fit(model, np.zeros((5, 4)), np.zeros(5, int), optimizer=opt, epochs=1,
                  loss="hinge")


def test_short_mnist_training_beats_90_percent(mnist):
    x_train, y_train, x_test, y_test = mnist
    model = nn.Sequential(nn.Linear(784, 64), nn.ReLU(), nn.Linear(64, 10)).init(0)
    opt = nn.Adam(model.params(), 2e-3)
    train.fit(model, x_train[:10000], y_train[:10000], optimizer=opt, epochs=2,
              batch_size=64, progress=False)
    acc = train.evaluate(model, x_test, y_test)
    assert acc > 0.90, acc
    # uint8 input is scaled by 1/255: same as passing the floats
    p_u8 = train.predict(model, x_test[:50])
    p_f = train.predict(model, x_test[:50].astype(np.float32) / 255)
    np.testing.assert_allclose(p_u8, p_f, rtol=1e-5, atol=1e-5)


# ------------------------------------------------------------------ save/load


def test_save_load_round_trip_is_bit_exact(tmp_path, rng):
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 8), nn.ReLU(), nn.Dropout(0.1),
                          nn.Linear(8, 6, bias=False), nn.Tanh(), nn.Linear(6, 5),
                          nn.Sigmoid(), nn.Linear(5, 4), nn.Softmax()).init(11)
    model[1].mask = rng.random((8, 12)) > 0.3
    meta = {"input_scale": 1 / 255, "note": "x", "list": [1, 2]}
    path = nn.save(model, tmp_path / "m.model", meta)
    assert path == tmp_path / "m.model"  # no suffix added
    loaded, meta2 = nn.load(path)
    assert meta2 == meta
    assert [type(a) for a in loaded.layers] == [type(a) for a in model.layers]
    assert [a.config() for a in loaded.layers] == [a.config() for a in model.layers]
    for a, b in zip(model.params(), loaded.params()):
        assert a.data.dtype == b.data.dtype
        np.testing.assert_array_equal(a.data, b.data)
    np.testing.assert_array_equal(loaded[1].mask, model[1].mask)
    assert loaded[4].bias is None
    x = rng.standard_normal((7, 3, 4)).astype(np.float32)
    model.eval()
    np.testing.assert_array_equal(np.asarray(model(x)), np.asarray(loaded(x)))
    assert not loaded.training


def test_save_load_float64(tmp_path, rng):
    model = nn.Sequential(nn.Linear(3, 2), dtype=np.float64).init(0)
    loaded, _ = nn.load(nn.save(model, tmp_path / "m.npz"))
    assert loaded.dtype == np.float64 and loaded[0].weight.data.dtype == np.float64
    np.testing.assert_array_equal(loaded[0].weight.data, model[0].weight.data)


def _rewrite_header(path, tmp_path, change):
    with np.load(path) as z:
        arrays = {k: z[k] for k in z.files}
    header = json.loads(str(arrays["__header__"]))
    change(header)
    arrays["__header__"] = np.array(json.dumps(header))
    out = tmp_path / "changed.npz"
    np.savez(out, **arrays)
    return out


def test_load_refuses_unknown_version_type_and_garbage(tmp_path):
    path = nn.save(nn.Sequential(nn.Linear(2, 2)).init(0), tmp_path / "m.npz")
    bad = _rewrite_header(path, tmp_path, lambda h: h.update(version=99))
    with pytest.raises(ValueError, match="version 99"):
        nn.load(bad)
    bad = _rewrite_header(path, tmp_path, lambda h: h["layers"][0].update(type="Nope"))
    with pytest.raises(ValueError, match="unknown layer type 'Nope'"):
        nn.load(bad)
    junk = tmp_path / "junk.npz"
    junk.write_bytes(b"not a zip file at all")
    with pytest.raises(ValueError, match="not a piconn model"):
        nn.load(junk)
    plain = tmp_path / "plain.npz"
    np.savez(plain, a=np.zeros(2))
    with pytest.raises(ValueError, match="no __header__"):
        nn.load(plain)


def test_register_makes_custom_layers_saveable(tmp_path):
    @nn.register
    class Scale(nn.Module):
        def __init__(self, n: int) -> None:
            super().__init__()
            self.n = n
            self.s = nn.Param(np.ones(n, np.float32))

        def config(self) -> dict:
            return {"n": self.n}

        def forward(self, x):
            return x * self.s.data

    try:
        model = nn.Sequential(nn.Linear(2, 3), Scale(3)).init(0)
        model[1].s.data[:] = [1.5, -2, 3]
        loaded, _ = nn.load(nn.save(model, tmp_path / "m.npz"))
        np.testing.assert_array_equal(loaded[1].s.data, [1.5, -2, 3])
        assert len(loaded.params()) == 3
    finally:
        nn.REGISTRY.pop("Scale")

    class Unregistered(nn.Module):
        pass

    with pytest.raises(ValueError, match="register"):
        nn.save(nn.Sequential(Unregistered()), tmp_path / "u.npz")
