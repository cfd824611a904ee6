"""piconn.conv: NHWC layers against direct loops, exact gradients, BN folding, save/load, specs."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from piconn import conv, nn, train

ROOT = Path(__file__).resolve().parents[1]

# ------------------------------------------------------------------- references


def _same_pads(size: int, k: int, s: int) -> tuple[int, int, int]:
    """TensorFlow's SAME: out = ceil(size/s), the odd padding row/column at the end."""
    out = (size + s - 1) // s
    total = max((out - 1) * s + k - size, 0)
    return out, total // 2, total - total // 2


def _pads(size: int, k: int, s: int, padding: str) -> tuple[int, int, int]:
    return _same_pads(size, k, s) if padding == "same" else ((size - k) // s + 1, 0, 0)


def _ref_conv(x, w, b, stride, padding):
    """Direct loops: y[n, i, j, o] = sum over the window of x * w[o] (w: O, KH, KW, C)."""
    n, h, wd, _ = x.shape
    o, kh, kw, _ = w.shape
    oh, top, _ = _pads(h, kh, stride[0], padding)
    ow, left, _ = _pads(wd, kw, stride[1], padding)
    y = np.zeros((n, oh, ow, o))
    for i in range(oh):
        for j in range(ow):
            for di in range(kh):
                for dj in range(kw):
                    r, q = i * stride[0] + di - top, j * stride[1] + dj - left
                    if 0 <= r < h and 0 <= q < wd:
                        y[:, i, j, :] += x[:, r, q, :] @ w[:, di, dj, :].T
    return y + (0 if b is None else b)


def _ref_pool(x, k, s, padding, op):
    n, h, wd, c = x.shape
    oh, top, _ = _pads(h, k, s, padding)
    ow, left, _ = _pads(wd, k, s, padding)
    y = np.zeros((n, oh, ow, c))
    for i in range(oh):
        for j in range(ow):
            r0, q0 = i * s - top, j * s - left
            window = x[:, max(r0, 0):r0 + k, max(q0, 0):q0 + k, :]  # real pixels only
            y[:, i, j, :] = op(window, axis=(1, 2))
    return y


# ---------------------------------------------------------------- forward values


@pytest.mark.parametrize("shape, kernel, stride, padding", [
    ((2, 6, 7, 3), 3, 1, "same"),
    ((2, 7, 6, 2), 3, 2, "same"),   # odd total padding: the extra row at the bottom
    ((1, 4, 4, 1), 3, 2, "same"),   # pad top 0, bottom 1 (TensorFlow), not 1 and 0
    ((2, 8, 8, 2), (3, 2), (2, 1), "same"),
    ((2, 7, 9, 3), 3, 2, "valid"),
    ((2, 5, 5, 4), 1, 1, "same"),
    ((1, 6, 6, 2), 2, 1, "same"),   # even kernel: pads only bottom/right
])
def test_conv2d_matches_direct_loops(shape, kernel, stride, padding, rng):
    x = rng.standard_normal(shape)
    layer = conv.Conv2d(shape[3], 5, kernel, stride, padding)
    model = nn.Sequential(layer, dtype=np.float64).init(3)
    layer.bias.data[:] = rng.standard_normal(5)
    model.eval()
    expected = _ref_conv(x, layer.weight.data, layer.bias.data, layer.stride, padding)
    np.testing.assert_allclose(model.forward(x), expected, rtol=1e-12, atol=1e-12)
    assert conv.output_shape(layer, shape[1:]) == expected.shape[1:]


def test_same_padding_puts_the_odd_row_at_the_bottom_right():
    x = np.arange(16, dtype=np.float64).reshape(1, 4, 4, 1)
    layer = nn.Sequential(conv.Conv2d(1, 1, 3, 2, "same", bias=False), dtype=np.float64)
    layer[0].weight.data[:] = 1
    y = layer.eval().forward(x)[0, :, :, 0]
    # Windows start at rows/cols 0 and 2; the 4th window row/col is the padding.
    assert y.tolist() == [[x[0, 0:3, 0:3].sum(), x[0, 0:3, 2:4].sum()],
                          [x[0, 2:4, 0:3].sum(), x[0, 2:4, 2:4].sum()]]


@pytest.mark.parametrize("mult, stride, padding", [(1, 1, "same"), (2, 2, "valid"),
                                                   (3, 2, "same")])
def test_depthwise_matches_direct_loops(mult, stride, padding, rng):
    x = rng.standard_normal((2, 7, 6, 3))
    layer = conv.DepthwiseConv2d(3, 3, mult, stride, padding)
    nn.Sequential(layer, dtype=np.float64).init(5).eval()
    layer.bias.data[:] = rng.standard_normal(3 * mult)
    w = layer.weight.data  # (kh, kw, C*M): output channel c*M + m reads input channel c
    expected = np.concatenate([
        _ref_conv(x[..., c:c + 1], w[None, :, :, c * mult + m, None], None, (stride, stride),
                  padding)
        for c in range(3) for m in range(mult)], axis=3) + layer.bias.data
    np.testing.assert_allclose(layer.forward(x), expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("k, s, padding", [(2, 2, "valid"), (2, 2, "same"), (3, 2, "same"),
                                           (3, 1, "valid"), (3, 3, "same")])
def test_pools_match_direct_loops_and_ignore_padding(k, s, padding, rng):
    x = rng.standard_normal((2, 7, 5, 3)) - 5  # all negative: a zero pad would win a max
    got_max = conv.MaxPool2d(k, s, padding).eval().forward(x)
    np.testing.assert_array_equal(got_max, _ref_pool(x, k, s, padding, np.max))
    got_avg = conv.AvgPool2d(k, s, padding).eval().forward(x)
    np.testing.assert_allclose(got_avg, _ref_pool(x, k, s, padding, np.mean), rtol=1e-12)
    np.testing.assert_allclose(conv.GlobalAvgPool2d().forward(x), x.mean(axis=(1, 2)))


def test_maxpool_gradient_goes_to_the_first_maximum():
    x = np.zeros((1, 2, 2, 1))
    pool = conv.MaxPool2d(2).train()
    pool.forward(x)
    g = pool.backward(np.ones((1, 1, 1, 1)))
    assert g[0, :, :, 0].tolist() == [[1, 0], [0, 0]]


def test_batchnorm2d_normalizes_per_channel_and_tracks_statistics(rng):
    x = rng.standard_normal((8, 5, 5, 3)) * [1, 3, 0.5] + [2, -1, 0]
    bn = nn.Sequential(conv.BatchNorm2d(3, momentum=1.0), dtype=np.float64)
    y = bn.train().forward(x)
    np.testing.assert_allclose(y.mean(axis=(0, 1, 2)), 0, atol=1e-12)
    np.testing.assert_allclose(y.var(axis=(0, 1, 2)), 1, rtol=1e-3)
    np.testing.assert_allclose(bn[0].running_mean, x.mean(axis=(0, 1, 2)))
    np.testing.assert_allclose(bn[0].running_var, x.var(axis=(0, 1, 2), ddof=1))
    np.testing.assert_allclose(bn.eval().forward(x).var(axis=(0, 1, 2)), 1 - 1 / 200, rtol=1e-3)


TFLITE_CASES = [
    ("CONV_2D", lambda: conv.Conv2d(3, 4, 3, 1, "same"), (1, 6, 7, 3)),
    ("CONV_2D", lambda: conv.Conv2d(3, 4, 3, 2, "same"), (1, 7, 6, 3)),
    ("CONV_2D", lambda: conv.Conv2d(3, 4, 3, 2, "same"), (1, 4, 4, 3)),
    ("CONV_2D", lambda: conv.Conv2d(2, 5, (2, 3), (1, 2), "same"), (1, 6, 8, 2)),
    ("CONV_2D", lambda: conv.Conv2d(3, 2, 3, 2, "valid"), (1, 8, 7, 3)),
    ("DEPTHWISE_CONV_2D", lambda: conv.DepthwiseConv2d(3, 3, 1, 2, "same"), (1, 7, 6, 3)),
    ("DEPTHWISE_CONV_2D", lambda: conv.DepthwiseConv2d(2, 3, 2, 1, "valid"), (1, 5, 6, 2)),
    ("MAX_POOL_2D", lambda: conv.MaxPool2d(2, 2, "same"), (1, 5, 7, 3)),
    ("MAX_POOL_2D", lambda: conv.MaxPool2d(3, 2, "valid"), (1, 7, 8, 2)),
    ("AVERAGE_POOL_2D", lambda: conv.AvgPool2d(2, 2, "same"), (1, 5, 7, 3)),
    ("AVERAGE_POOL_2D", lambda: conv.AvgPool2d(3, 2, "same"), (1, 6, 5, 2)),
]


@pytest.mark.parametrize("case", range(len(TFLITE_CASES)))
def test_layers_match_tflite_micro_float_kernels(case, rng):
    """Layouts and "same" padding as TFLite: the layer's arrays copied into a float32
    .tflite give the same output in TFLite Micro's reference kernels."""
    pytest.importorskip("tflite", reason="PyPI tflite (test extra) builds the models")
    runtime = pytest.importorskip("tflite_micro.python.tflite_micro.runtime",
                                  reason="PyPI tflite-micro (test extra) runs them")
    from tflite_build import ModelBuilder

    kind, make, shape = TFLITE_CASES[case]
    layer = make()
    nn.Sequential(layer).init(case).eval()
    x = (rng.standard_normal(shape) - 0.5).astype(np.float32)
    want = layer.forward(x)
    b = ModelBuilder()
    xt = b.tensor(list(shape), "float32")
    yt = b.tensor(list(want.shape), "float32")
    padding = {"same": 0, "valid": 1}[layer.padding]  # tflite.Padding: SAME, VALID
    stride = {"StrideH": layer.stride[0], "StrideW": layer.stride[1]}
    if kind in ("CONV_2D", "DEPTHWISE_CONV_2D"):
        layer.bias.data[:] = rng.standard_normal(layer.out_ch)
        want = layer.forward(x)
        weight = layer.weight.data if kind == "CONV_2D" else layer.weight.data[None]
        wt = b.tensor(list(weight.shape), "float32", data=weight)
        bt = b.tensor([layer.out_ch], "float32", data=layer.bias.data)
        if kind == "CONV_2D":
            b.op(kind, [xt, wt, bt], [yt], "Conv2DOptions", Padding=padding, **stride,
                 DilationWFactor=1, DilationHFactor=1)
        else:
            b.op(kind, [xt, wt, bt], [yt], "DepthwiseConv2DOptions", Padding=padding, **stride,
                 DepthMultiplier=layer.depth_multiplier, DilationWFactor=1, DilationHFactor=1)
    else:
        b.op(kind, [xt], [yt], "Pool2DOptions", Padding=padding, **stride,
             FilterHeight=layer.pool[0], FilterWidth=layer.pool[1])
    interpreter = runtime.Interpreter.from_bytes(b.build([xt], [yt]), arena_size=1 << 20)
    interpreter.set_input(x, 0)
    interpreter.invoke()
    got = interpreter.get_output(0)
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


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
    np.testing.assert_allclose(grad_x, nn.numerical_grad(f, x), rtol=tol, atol=tol)
    analytic = [p.grad.copy() for p in module.params()]
    for p, g in zip(module.params(), analytic):
        np.testing.assert_allclose(g, nn.numerical_grad(f, p.data), rtol=tol, atol=tol)


def _f64(*layers: nn.Module) -> nn.Sequential:
    return nn.Sequential(*layers, dtype=np.float64).init(7)


GRAD_CASES = {
    "conv-same": (lambda: _f64(conv.Conv2d(2, 3, 3)), (2, 5, 6, 2)),
    "conv-same-stride2-odd": (lambda: _f64(conv.Conv2d(2, 3, 3, 2)), (2, 5, 6, 2)),
    "conv-valid-rect": (lambda: _f64(conv.Conv2d(2, 3, (3, 2), (2, 1), "valid")), (2, 7, 5, 2)),
    "conv-nobias-even": (lambda: _f64(conv.Conv2d(2, 2, 2, bias=False)), (2, 4, 5, 2)),
    "conv-pointwise": (lambda: _f64(conv.Conv2d(3, 4, 1)), (2, 3, 3, 3)),
    "depthwise": (lambda: _f64(conv.DepthwiseConv2d(3, 3)), (2, 5, 4, 3)),
    "depthwise-mult2-stride2": (lambda: _f64(conv.DepthwiseConv2d(2, 3, 2, 2, "valid")),
                                (2, 7, 6, 2)),
    "depthwise-mult3-same-nobias": (lambda: _f64(conv.DepthwiseConv2d(2, 3, 3, 2, bias=False)),
                                    (2, 5, 5, 2)),
    "maxpool": (lambda: _f64(conv.MaxPool2d(2)), (2, 6, 4, 3)),
    "maxpool-same-odd": (lambda: _f64(conv.MaxPool2d(2, padding="same")), (2, 5, 7, 2)),
    "maxpool-overlap": (lambda: _f64(conv.MaxPool2d(3, 2, "same")), (2, 6, 5, 2)),
    "avgpool": (lambda: _f64(conv.AvgPool2d(2)), (2, 6, 4, 3)),
    "avgpool-same-overlap": (lambda: _f64(conv.AvgPool2d(3, 2, "same")), (2, 6, 5, 2)),
    "global-avgpool": (lambda: _f64(conv.GlobalAvgPool2d()), (3, 4, 5, 2)),
    "batchnorm2d": (lambda: _f64(conv.BatchNorm2d(3)), (4, 3, 2, 3)),
    "reshape": (lambda: _f64(conv.Reshape((3, 2, 2)), conv.Conv2d(2, 2, 2)), (2, 12)),
    "residual": (lambda: _f64(conv.Residual([conv.Conv2d(2, 3, 3), conv.BatchNorm2d(3),
                                             nn.Tanh(), conv.Conv2d(3, 2, 3)])), (2, 4, 4, 2)),
    "cnn": (lambda: conv.build_cnn("6x6x2:c3k3b-p2-r(c3k3-d2k3-c3k1)-a2s1-f4-f3",
                                   dtype=np.float64).init(9), (3, 72)),
}


@pytest.mark.parametrize("name", sorted(GRAD_CASES))
def test_gradients_match_finite_differences(name, rng):
    make, shape = GRAD_CASES[name]
    module = make()
    # Non-zero biases and batch-norm shifts: a channel that a ReLU zeroes everywhere
    # would otherwise sit exactly on the kink.
    for p in module.params():
        p.data += rng.standard_normal(p.data.shape) * 0.5
    x = rng.standard_normal(shape)
    _check_module_grads(module, x, rng)


def test_first_weighted_layer_skips_its_input_gradient_in_fit(rng):
    model = conv.build_cnn("4x4x1:c2k3-f2").init(0)
    seen = []
    first = model[1]
    train.fit(model, rng.random((8, 16)).astype(np.float32), rng.integers(0, 2, 8),
              optimizer=nn.SGD(model.params(), 0.1), epochs=1, batch_size=4,
              on_step=lambda step: seen.append(first.input_grad))
    assert seen == [False, False] and first.input_grad is True
    assert np.abs(first.weight.grad).sum() > 0


# ------------------------------------------------------------------ BN folding


def _trained_bn_model(layers: list[nn.Module], shape: tuple[int, ...], rng) -> nn.Sequential:
    """A float64 model whose batch norms hold non-trivial statistics and affine parameters."""
    model = nn.Sequential(*layers, dtype=np.float64).init(2)
    for _ in range(3):
        model.train().forward(rng.standard_normal(shape) * 2 + 1)
    for p in model.params():
        p.data += rng.standard_normal(p.data.shape) * 0.3
    return model.eval()


def test_folded_batchnorm_equals_unfolded_in_eval(rng):
    shape = (4, 8, 8, 3)
    model = _trained_bn_model([
        conv.Conv2d(3, 4, 3, bias=False), conv.BatchNorm2d(4), nn.ReLU(),
        conv.DepthwiseConv2d(4, 3, 2, 2), conv.BatchNorm2d(8), nn.ReLU(),
        conv.Residual([conv.Conv2d(8, 8, 3), conv.BatchNorm2d(8), nn.ReLU(),
                       conv.Conv2d(8, 8, 1, bias=False), conv.BatchNorm2d(8)]),
        conv.BatchNorm2d(8),  # after a Residual: nothing to fold into, kept
        conv.GlobalAvgPool2d(), nn.Linear(8, 5)], shape, rng)
    folded = conv.fold_batchnorms(model)
    kinds = [type(layer).__name__ for layer in folded]
    assert kinds == ["Conv2d", "ReLU", "DepthwiseConv2d", "ReLU", "Residual", "BatchNorm2d",
                     "GlobalAvgPool2d", "Linear"]
    assert [type(layer).__name__ for layer in folded[4].block] == ["Conv2d", "ReLU", "Conv2d"]
    assert folded[0].bias is not None and not folded.training
    x = rng.standard_normal(shape)
    np.testing.assert_allclose(folded.forward(x), model.forward(x), rtol=1e-10, atol=1e-12)
    assert [type(layer).__name__ for layer in model][:2] == ["Conv2d", "BatchNorm2d"]  # unchanged
    # float32: the same up to rounding
    model32 = copy.deepcopy(model)
    model32.astype(np.float32)
    np.testing.assert_allclose(conv.fold_batchnorms(model32).forward(x), model32.forward(x),
                               rtol=1e-4, atol=1e-4)


def test_linear_and_batchnorm1d_fold_too(rng):
    shape = (6, 5)
    model = _trained_bn_model([nn.Linear(5, 4), nn.BatchNorm1d(4), nn.ReLU(), nn.Linear(4, 3)],
                              shape, rng)
    model[0].mask = rng.random((4, 5)) > 0.3
    folded = conv.fold_batchnorms(model)
    assert [type(layer).__name__ for layer in folded] == ["Linear", "ReLU", "Linear"]
    np.testing.assert_array_equal(folded[0].mask, model[0].mask)
    x = rng.standard_normal(shape)
    np.testing.assert_allclose(folded.forward(x), model.forward(x), rtol=1e-10, atol=1e-12)


def test_fold_batchnorm_refuses_what_it_cannot_fold():
    with pytest.raises(TypeError, match="cannot fold"):
        conv.fold_batchnorm(nn.ReLU(), conv.BatchNorm2d(2))
    with pytest.raises(TypeError, match="not a batch norm"):
        conv.fold_batchnorm(conv.Conv2d(1, 2), nn.ReLU())
    with pytest.raises(ValueError, match="3 channels"):
        conv.fold_batchnorm(conv.Conv2d(1, 2), conv.BatchNorm2d(3))
    with pytest.raises(TypeError, match="Sequential"):
        conv.fold_batchnorms(conv.Conv2d(1, 2))


# -------------------------------------------------------------------- save/load


def test_save_load_round_trip_is_bit_exact(tmp_path, rng):
    model = conv.build_cnn("10x10x2:c4k3b-d2k3s2-p2s1v-r(c8k3b-c8k1)-a2-dr0.1-f6-f3").init(4)
    model.train().forward(rng.random((5, 200)).astype(np.float32))  # batch-norm statistics
    for p in model.params():
        p.data += rng.standard_normal(p.data.shape).astype(np.float32) * 0.1
    path = nn.save(model, tmp_path / "cnn.npz", {"arch": "x"})
    loaded, meta = nn.load(path)
    assert meta == {"arch": "x"}
    assert [a.config() for a in loaded] == [a.config() for a in model]
    assert len(loaded.params()) == len(model.params())
    for a, b in zip(model.params(), loaded.params()):
        assert a.data.dtype == b.data.dtype == np.float32
        np.testing.assert_array_equal(a.data, b.data)
    bns = [(m, n) for m, n in zip(model, loaded) if isinstance(m, conv.BatchNorm2d)]
    bns += [(m, n) for r, s in zip(model, loaded) if isinstance(r, conv.Residual)
            for m, n in zip(r.block, s.block) if isinstance(m, conv.BatchNorm2d)]
    assert len(bns) == 2
    res = next(layer for layer in loaded if isinstance(layer, conv.Residual))
    assert not loaded.training and not any(layer.training for layer in res.block)
    for m, n in bns:
        np.testing.assert_array_equal(m.running_mean, n.running_mean)
        np.testing.assert_array_equal(m.running_var, n.running_var)
    x = rng.random((7, 200)).astype(np.float32)
    np.testing.assert_array_equal(model.eval().forward(x), loaded.forward(x))


def test_residual_refuses_bad_blocks_and_saved_arrays():
    with pytest.raises(TypeError, match="Residual expects"):
        conv.Residual([])
    with pytest.raises(TypeError, match="Residual expects"):
        conv.Residual("c8k3")
    res = nn.Sequential(conv.Residual(conv.Conv2d(2, 3, 1))).init(0)
    with pytest.raises(ValueError, match="changes the shape"):
        res.forward(np.zeros((1, 2, 2, 2)))
    with pytest.raises(ValueError, match="no array"):
        res[0].load_state({"5.weight": np.zeros(3)})


# ------------------------------------------------------------------------ specs


def test_default_and_small_specs_build_as_documented():
    model = conv.build_cnn(conv.DEFAULT_CNN)
    kinds = [type(layer).__name__ for layer in model]
    assert kinds == ["Reshape", "Conv2d", "ReLU", "MaxPool2d", "Conv2d", "BatchNorm2d", "ReLU",
                     "MaxPool2d", "Flatten", "Linear", "ReLU", "Linear"]
    assert model[1].bias is not None and model[4].bias is None
    # 28 -> valid conv 26 -> pool 13 -> valid conv 11 -> "same" pool 6 (ceil(11 / 2))
    assert model[9].n_in == 6 * 6 * 32
    assert conv.output_shape(model, (784,)) == (10,)
    assert conv.count_macs(model, (784,)) == (26 * 26 * 16 * 9 + 11 * 11 * 32 * 9 * 16
                                              + 6 * 6 * 32 * 64 + 64 * 10)
    small = conv.build_cnn(conv.SMALL_CNN)
    # 28 -> 5x5 stride 2 valid 12 -> 3x3 stride 2 valid 5
    assert conv.count_macs(small, (784,)) == (12 * 12 * 8 * 25 + 5 * 5 * 16 * 72 + 400 * 32
                                              + 32 * 10) == 70_720


def test_spec_input_shape_residual_and_pools():
    model = conv.build_cnn("32x32x3:c8k5s2-r(c8k3b-c8k3b)-d2k3v-a2v-g-f10")
    assert model[0].shape == (32, 32, 3)
    res = next(layer for layer in model if isinstance(layer, conv.Residual))
    assert [type(layer).__name__ for layer in res.block] == [
        "Conv2d", "BatchNorm2d", "ReLU", "Conv2d", "BatchNorm2d"]  # ReLU after the add
    assert conv.output_shape(model, (32, 32, 3)) == (10,)
    x = np.random.default_rng(0).random((2, 32 * 32 * 3)).astype(np.float32)
    assert model.init(0).eval().forward(x).shape == (2, 10)


@pytest.mark.parametrize("spec, message", [
    ("", "no layers"),
    ("c16k3-p2", "must end with a dense layer"),
    ("c16k3-x5-f10", "'x5': unknown layer"),
    ("c16k3--f10", "empty layer"),
    ("f32-c16k3-f10", "'c16k3': needs an image"),
    ("c8k9v-c8k9v-c8k9v-c8k9v-f10", "smaller than the kernel"),
    ("c0k3-f10", "must be positive"),
    ("c8k3s0-f10", "must be positive"),
    ("p0-f10", "must be positive"),
    ("dr1.5-f10", "unknown layer"),
    ("r(c16k3-c16k3)-f10", "block changes the shape"),
    ("c8k3-r(c8k3s2)-f10", "block changes the shape"),
    ("c8k3-r(c8k3-f10", "unbalanced"),
    ("c8k3)-f10", "unbalanced"),
    ("0x28x1:c8k3-f10", "positive sizes"),
    ("28x28:c8k3-f10", "HxWxC"),
])
def test_bad_specs_raise_value_error(spec, message):
    with pytest.raises(ValueError, match=message):
        conv.build_cnn(spec)


def test_bad_layer_arguments_and_inputs():
    with pytest.raises(TypeError, match="CNN spec must be a string"):
        conv.build_cnn(16)
    with pytest.raises(ValueError, match="padding"):
        conv.Conv2d(1, 2, 3, padding="full")
    with pytest.raises(TypeError, match="kernel"):
        conv.Conv2d(1, 2, "3")
    with pytest.raises(ValueError, match="positive"):
        conv.DepthwiseConv2d(2, 3, depth_multiplier=0)
    with pytest.raises(ValueError, match="eps"):
        conv.BatchNorm2d(2, eps=0)
    layer = conv.Conv2d(3, 2)
    with pytest.raises(ValueError, match="3 input channels"):
        layer.forward(np.zeros((1, 4, 4, 2), np.float32))
    with pytest.raises(ValueError, match="NHWC"):
        layer.forward(np.zeros((4, 4, 3), np.float32))
    with pytest.raises(ValueError, match="smaller than the kernel"):
        conv.MaxPool2d(3).forward(np.zeros((1, 2, 2, 1)))
    with pytest.raises(ValueError, match="needs 784 values"):
        conv.Reshape((28, 28, 1)).forward(np.zeros((2, 783)))
    with pytest.raises(RuntimeError, match="without a training-mode forward"):
        layer.eval().forward(np.zeros((1, 4, 4, 3), np.float32))
        layer.backward(np.zeros((1, 4, 4, 2), np.float32))


# ------------------------------------------------------------------- training


def test_small_cnn_learns_mnist_quickly(mnist):
    x_train, y_train, x_test, y_test = mnist
    model, history, meta = conv.train_cnn(x_train[:3000], y_train[:3000], arch=conv.SMALL_CNN,
                                          epochs=2, batch_size=32, progress=False)
    assert meta["arch"] == conv.SMALL_CNN and len(history) == 2
    acc = train.evaluate(model, x_test[:2000], y_test[:2000])
    assert acc > 0.8, acc  # 188 steps on 3000 images (chance: 0.1)
    assert history[1]["loss"] < history[0]["loss"]


def test_bench_tool_trains_reports_and_saves(tmp_path, make_idx_set):
    make_idx_set(tmp_path / "data", n_train=20, n_test=10)
    out = tmp_path / "cnn.npz"
    run = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "bench_train_cnn.py"), "--arch", conv.SMALL_CNN,
         "--epochs", "1", "--data", str(tmp_path / "data"), "--save", str(out), "--json"],
        check=False, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    result = json.loads(run.stdout)
    assert result["macs"] == 70_720 and 0 <= result["accuracy"] <= 1
    assert len(result["epoch_seconds"]) == 1 and result["blas_threads"] == "1"
    model, meta = nn.load(out)
    assert meta["arch"] == conv.SMALL_CNN and meta["test_accuracy"] == result["accuracy"]
    assert isinstance(model[1], conv.Conv2d)
    bad = subprocess.run([sys.executable, str(ROOT / "tools" / "bench_train_cnn.py"), "--arch",
                          "c8k3"], check=False, capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and "must end with a dense layer" in bad.stderr
