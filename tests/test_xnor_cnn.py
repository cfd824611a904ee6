"""The binary CNN (piconn.xnor_cnn) and the binary operators' reference (piconn.xnor_ops):
gradients, the folded thresholds' exactness, the lowered graph against the model, the
file format, the command line."""

from __future__ import annotations

import json
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest

from piconn import commands, conv, data, format2, int8_ops, nn, quant_int8, xnor_cnn, xnor_ops
from piconn import graph as g

ROOT = Path(__file__).resolve().parents[1]


def _run_cli(argv: list[str], capsys) -> tuple[int, str, str]:
    try:
        code = commands.main(argv)
    except SystemExit as e:
        code = e.code
    out, err = capsys.readouterr()
    return code, out, err


# ------------------------------------------------------------------ training layers


def _numeric_grad(f, x: np.ndarray, eps: float = 1e-6) -> np.ndarray:
    grad = np.zeros_like(x)
    for i in np.ndindex(x.shape):
        old = x[i]
        x[i] = old + eps
        hi = f()
        x[i] = old - eps
        lo = f()
        x[i] = old
        grad[i] = (hi - lo) / (2 * eps)
    return grad


def test_binary_conv_gradients_are_the_straight_through_estimate(rng):
    layer = xnor_cnn.BinaryConv2d(3, 4, 3, 2)
    layer.astype(np.float64)
    latent = rng.uniform(-0.9, 0.9, layer.weight.data.shape)
    latent[0, 0, 0, 0] = 1.0  # the edge of the pass band is inside it
    layer.weight.data = latent.copy()
    layer.weight.grad = np.zeros_like(latent)
    x = rng.normal(size=(2, 7, 6, 3))
    g_out = rng.normal(size=(2, 3, 2, 4))
    layer.train()
    y = layer.forward(x)
    gx = layer.backward(g_out)
    # Forward: an ordinary valid convolution with the ±1 weights.
    dense = conv.Conv2d(3, 4, 3, 2, "valid", bias=False)
    dense.astype(np.float64)
    dense.weight.data = layer.binary_weight().astype(np.float64)
    np.testing.assert_allclose(y, dense.forward(x))
    # Input gradient: that of the ±1 convolution (exact: the layer is linear in x).
    num_x = _numeric_grad(lambda: float((dense.forward(x) * g_out).sum()), x)
    np.testing.assert_allclose(gx, num_x, rtol=1e-6, atol=1e-6)
    # Weight gradient (STE): d/d(sign weights) where |latent| <= 1 ...
    num_w = _numeric_grad(lambda: float((dense.forward(x) * g_out).sum()), dense.weight.data)
    np.testing.assert_allclose(layer.weight.grad, num_w, rtol=1e-6, atol=1e-6)
    # ... and zero where |latent| > 1 (outside the clip, before the next forward clips it)
    layer.weight.data[1] = 1.5
    layer.weight.grad[:] = 0
    layer._cache = (layer._cache[0], x.shape, layer._cache[2])
    layer.backward(g_out)
    assert np.all(layer.weight.grad[1] == 0)
    np.testing.assert_allclose(layer.weight.grad[0], num_w[0], rtol=1e-6, atol=1e-6)


def test_binary_conv_clips_latent_weights_and_counts_zero_as_plus_one(rng):
    layer = xnor_cnn.BinaryConv2d(2, 2, 1)
    layer.weight.data = np.array([[[[0.0, -2.0]]], [[[3.0, -0.5]]]], np.float32)
    layer.train()
    y = layer.forward(np.ones((1, 1, 1, 2), np.float32))
    assert np.abs(layer.weight.data).max() <= 1
    np.testing.assert_array_equal(y.ravel(), [0, 0])  # (+1) + (-1), (+1) + (-1)


# ------------------------------------------------------------------ lowering exactness


def _random_bn(bn: nn.Module, rng: np.random.Generator, zero: int = 1) -> None:
    """Batch-norm statistics with negative, zero and positive scales."""
    c = bn.gamma.data.shape[0]
    gamma = rng.normal(size=c)
    gamma[0], gamma[1] = -abs(gamma[0]), abs(gamma[1])
    gamma[2:2 + zero] = 0.0
    bn.gamma.data = gamma
    bn.beta.data = rng.normal(size=c)
    bn.running_mean = rng.normal(scale=3.0, size=c)
    bn.running_var = rng.uniform(0.5, 20.0, size=c)


def _tiny_model(rng: np.random.Generator, spec: str = "c6k3s2-b40k3-p2-f35-f10"
                ) -> nn.Sequential:
    """A trained-looking binary CNN: random weights, batch norms with k < 0 and k == 0
    channels, the stem frozen; float64 so the comparison is with the exact signs."""
    model = xnor_cnn.build_xnor_cnn(spec, seed=int(rng.integers(1000)))
    model.astype(np.float64)
    for layer in model.layers:
        if isinstance(layer, (conv.BatchNorm2d, nn.BatchNorm1d)):
            _random_bn(layer, rng)
    model = xnor_cnn.freeze_stem(model)
    model.astype(np.float64)
    return model.eval()


def _images(rng: np.random.Generator, n: int) -> np.ndarray:
    x = rng.integers(0, 256, size=(n, 784))
    x[: n // 2] = np.where(rng.random((n // 2, 784)) < 0.7, 0, 255)  # MNIST-like extremes
    return x.astype(np.uint8)


def _model_signs(model: nn.Sequential, x: np.ndarray) -> list[np.ndarray]:
    """The model's ±1 outputs after every sign (as bools, True = +1) and its logits."""
    out, values = x.astype(np.float64) / 255.0, []
    for layer in model.layers:
        out = layer.forward(out)
        if isinstance(layer, xnor_cnn.SignSTE):
            values.append(out > 0)
    return [*values, out]


def test_lowered_graph_bits_equal_the_models_signs(rng):
    model = _tiny_model(rng)
    graph = xnor_cnn.to_graph(model)
    kinds = [op.kind for op in graph.operators]
    assert kinds == [g.BINARIZE_CONV_2D, g.XNOR_CONV_2D, g.BINARY_MAX_POOL_2D,
                     g.XNOR_CONV_2D, g.XNOR_CONV_2D]
    x = _images(rng, 64)
    big = quant_int8.batched(graph, len(x))
    values = int8_ops.run(big, quant_int8.quantize_input(graph, x).reshape(len(x), 28, 28, 1),
                          keep=True)
    signs = _model_signs(model, x)
    # bits after the stem, after the pooled binary conv, after the hidden dense layer
    produced = [values[op.outputs[0]] for op in graph.operators]
    np.testing.assert_array_equal(produced[0], signs[0])
    for got, want in zip([produced[2], produced[3]], signs[1:3]):
        np.testing.assert_array_equal(got.reshape(want.shape), want)
    # channels with a negative and a zero batch-norm scale really are there
    for layer in model.layers:
        if isinstance(layer, (conv.BatchNorm2d, nn.BatchNorm1d)):
            k, _ = layer.affine()
            assert (k < 0).any() and (k == 0).any()
    # logits: the fixed point of the model's, same argmax
    scale = float(graph.tensors[graph.outputs[0]].quant.scale[0])
    logits = produced[-1].reshape(len(x), -1) * scale
    np.testing.assert_allclose(logits, signs[-1], atol=1e-5 * (1 + np.abs(signs[-1]).max()))
    np.testing.assert_array_equal(logits.argmax(1), signs[-1].argmax(1))


@pytest.mark.parametrize("spec", ["c8k3s2-b32k3-f10", "c8k3s2-p2-b32k3-f10", "c8k4s4-b32k3-f10",
                                  "c5k6s2-b32k3-f10", "c8k4s4-f20-f10"])
def test_stem_bits_are_the_accumulator_sign(rng, spec):
    """BINARIZE_CONV_2D gives exactly acc >= 0, also for accumulators of -1, 0 and +1
    (biases placed to hit them)."""
    model = _tiny_model(rng, spec)
    stem = model.layers[1]
    x = _images(rng, 16)
    acc = stem.accumulate(x.reshape(-1, 28, 28, 1).astype(np.int64))
    target = acc[0, 0, 0]  # make pixel (0, 0) of image 0 land on -1, 0, +1 in channels 0..2
    stem.bias = (stem.bias.astype(np.int64) - target
                 + np.resize([-1, 0, 1], stem.out_ch)).astype(np.int32)
    acc = stem.accumulate(x.reshape(-1, 28, 28, 1).astype(np.int64))
    assert set(acc[0, 0, 0, :3].tolist()) == {-1, 0, 1}
    graph = xnor_cnn.to_graph(model)
    assert graph.operators[0].kind == g.BINARIZE_CONV_2D
    big = quant_int8.batched(graph, len(x))
    values = int8_ops.run(big, quant_int8.quantize_input(graph, x).reshape(len(x), 28, 28, 1),
                          keep=True)
    bits = values[graph.operators[0].outputs[0]]
    np.testing.assert_array_equal(bits, acc >= 0)
    np.testing.assert_array_equal(xnor_cnn.graph_logits(graph, x).argmax(1),
                                  xnor_cnn.predict_signs(model, x).argmax(1))


def test_graph_predictions_equal_the_models(rng):
    model = _tiny_model(rng, "c8k3s2-p2-b32k3-f10")
    x = _images(rng, 200)
    graph = xnor_cnn.to_graph(model)
    want = xnor_cnn.predict_signs(model, x).argmax(1)
    got = xnor_cnn.graph_logits(graph, x).argmax(1)
    np.testing.assert_array_equal(got, want)


# ------------------------------------------------------------------ the reference


def _naive_xnor_conv(xw: np.ndarray, ww: np.ndarray, p: xnor_ops.WindowParams) -> np.ndarray:
    """m by FORMAT.md's formula on packed words: popcount(x XOR w) over taps and words,
    a tap outside the image a row of zero words."""
    n, h, w, _ = xw.shape
    c_out, kh, kw, _ = ww.shape
    m = np.zeros((n, p.out_h, p.out_w, c_out), np.int64)
    for b in range(n):
        for oy in range(p.out_h):
            for ox in range(p.out_w):
                for c in range(c_out):
                    total = 0
                    for ky in range(kh):
                        for kx in range(kw):
                            iy = oy * p.stride_h - p.pad_top + ky
                            ix = ox * p.stride_w - p.pad_left + kx
                            row = (xw[b, iy, ix] if 0 <= iy < h and 0 <= ix < w
                                   else np.zeros(xw.shape[-1], np.uint32))
                            total += sum(int(v).bit_count() for v in row ^ ww[c, ky, kx])
                    m[b, oy, ox, c] = total
    return m


@pytest.mark.parametrize("padding, stride, c_in", [(g.VALID, 1, 40), (g.SAME, 2, 33),
                                                   (g.SAME, 1, 7)])
def test_xnor_conv_reference_matches_the_formula_on_packed_words(rng, padding, stride, c_in):
    x = rng.random((2, 5, 6, c_in)) < 0.5
    w = rng.random((3, 3, 2, c_in)) < 0.5
    tx = g.Tensor("x", x.shape, g.BITS)
    oh = (5 + stride - 1) // stride if padding == g.SAME else (5 - 3) // stride + 1
    ow = (6 + stride - 1) // stride if padding == g.SAME else (6 - 2) // stride + 1
    ty = g.Tensor("y", (2, oh, ow, 3), g.BITS)
    tw = g.Tensor("w", w.shape, g.BITS, None, w)
    thr = rng.integers(-1, 3 * 2 * c_in + 1, size=3).astype(np.int32)
    tc = g.Tensor("thr", (3,), g.INT32, None, thr)
    graph = g.Graph([tx, tw, tc, ty], [g.Operator(g.XNOR_CONV_2D, (0, 1, 2), (3,),
                                                  g.ConvOptions(stride, stride, padding))],
                    [0], [3])
    p = xnor_ops.prepare(graph, 0)
    m = _naive_xnor_conv(xnor_ops.pack(x), xnor_ops.pack(w), p)
    np.testing.assert_array_equal(xnor_ops.mismatches(x, w, p), m)
    np.testing.assert_array_equal(xnor_ops.xnor_conv2d(x, w, thr, p), m <= thr)
    # the int32 form: a * (n - 2m) + b
    p.logits = True
    ab = np.stack([rng.integers(-1000, 1000, 3), rng.integers(-10**6, 10**6, 3)])
    n = 3 * 2 * c_in
    np.testing.assert_array_equal(xnor_ops.xnor_conv2d(x, w, ab, p), ab[0] * (n - 2 * m) + ab[1])


def test_max_pool_is_or_and_binarize_uses_both_bounds(rng):
    x = rng.random((1, 5, 5, 35)) < 0.2
    p = xnor_ops.WindowParams(g.SAME, 2, 2, 2, 2, 0, 0, 3, 3)
    y = xnor_ops.max_pool(x, p)
    assert y[0, 2, 2].tolist() == x[0, 4, 4].tolist()  # the edge window holds one tap
    np.testing.assert_array_equal(y[0, 0, 0], x[0, :2, :2].any(axis=(0, 1)))
    v = np.array([[-128, -1, 0, 5, 127]], np.int8)
    bounds = np.array([[-128, 127], [0, 127], [-128, 0], [1, 0], [5, 5]], np.int32)
    np.testing.assert_array_equal(xnor_ops.binarize(v, bounds), [[True, False, True, False,
                                                                  False]])
    x2 = np.array([[[[4, 6]]]], np.int8)
    np.testing.assert_array_equal(xnor_ops.binarize(x2, np.array([[5, 127], [-128, 5]])),
                                  [[[[False, False]]]])


def test_pack_layout():
    bits = np.zeros((2, 40), bool)
    bits[0, 0] = bits[0, 33] = bits[1, 31] = True
    words = xnor_ops.pack(bits)
    assert words.tolist() == [[1, 2], [2**31, 0]]
    back, clean = xnor_ops.unpack(words, 40)
    assert clean and (back == bits).all()
    assert not xnor_ops.unpack(np.array([[0, 1 << 8]], np.uint32), 40)[1]


# ------------------------------------------------------------------ file format


def test_export_writes_a_version_2_file_that_reads_back(rng):
    model = _tiny_model(rng)
    graph = xnor_cnn.to_graph(model)
    blob = format2.to_bytes(graph)
    gm = format2.from_bytes(blob)
    assert [op.kind for op in gm.graph.operators] == [op.kind for op in graph.operators]
    for a, b in zip(graph.tensors, gm.graph.tensors):
        assert (a.dtype, a.shape, a.nbytes) == (b.dtype, b.shape, b.nbytes)
        if a.is_constant:
            np.testing.assert_array_equal(a.data, b.data)
    assert format2.to_bytes(gm.graph) == blob
    x = _images(rng, 10)
    np.testing.assert_array_equal(xnor_cnn.graph_logits(gm.graph, x),
                                  xnor_cnn.graph_logits(graph, x))
    # bits weights: 40 input channels, 2 words per row; code 2, nbytes as words
    w = next(t for t in gm.graph.tensors if t.dtype == g.BITS and t.is_constant)
    assert w.nbytes == 4 * int(np.prod(w.shape[:-1])) * xnor_ops.words(w.shape[-1])


def _with_crc(blob: bytearray) -> bytes:
    struct.pack_into("<I", blob, 12, zlib.crc32(blob[16:]) & 0xFFFFFFFF)
    return bytes(blob)


def test_reader_refuses_set_padding_bits_and_bad_params(rng):
    model = _tiny_model(rng)
    graph = xnor_cnn.to_graph(model)
    blob = format2.to_bytes(graph)
    gm = format2.from_bytes(blob)
    # the binary conv's weights: 40 channels, the second word of each row has 8 bits
    k = next(i for i, t in enumerate(gm.graph.tensors) if t.dtype == g.BITS and t.is_constant)
    rec = format2.HEADER_SIZE + format2.TENSOR_RECORD_SIZE * k
    offset = struct.unpack_from("<I", blob, rec + 12)[0]
    bad = bytearray(blob)
    bad[offset + 7] |= 0x80  # bit 31 of word 1 of row 0: a padding bit
    with pytest.raises(format2.FormatError, match="padding bits"):
        format2.from_bytes(_with_crc(bad))
    # a stride of the binary convolution changed: the output shape no longer matches
    op = next(j for j, o in enumerate(gm.graph.operators) if o.kind == g.XNOR_CONV_2D)
    at = (format2.HEADER_SIZE + format2.TENSOR_RECORD_SIZE * len(gm.graph.tensors)
          + format2.OPERATOR_RECORD_SIZE * op + 16 + 4)  # params[1]: stride_h
    bad = bytearray(blob)
    struct.pack_into("<i", bad, at, 3)
    with pytest.raises(ValueError, match="XNOR_CONV_2D"):
        format2.from_bytes(_with_crc(bad))
    # a bits tensor with quantization
    bad = bytearray(blob)
    bad[rec + 3] = format2.QUANT_TENSOR
    with pytest.raises(format2.FormatError, match="bits"):
        format2.from_bytes(_with_crc(bad))


def test_prepare_refuses_bits_at_the_graph_edges_and_in_int8_kinds():
    bits = g.Tensor("b", (1, 2, 2, 8), g.BITS)
    out = g.Tensor("o", (1, 1, 1, 8), g.BITS)
    graph = g.Graph([bits, out], [g.Operator(g.BINARY_MAX_POOL_2D, (0,), (1,),
                                             g.PoolOptions(2, 2, 2, 2, g.VALID))], [0], [1])
    with pytest.raises(g.GraphError, match="bits"):
        int8_ops.prepare(graph)
    q = g.Quant(np.array([0.1], np.float32), np.array([0], np.int32))
    x = g.Tensor("x", (1, 2, 2, 8), g.INT8, q)
    y = g.Tensor("y", (1, 1, 1, 8), g.INT8, q)
    mid = g.Tensor("m", (1, 2, 2, 8), g.BITS)
    graph = g.Graph([x, g.Tensor("bd", (8, 2), g.INT32, None, np.zeros((8, 2), np.int32)), mid,
                     y], [g.Operator(g.BINARIZE, (0, 1), (2,)),
                          g.Operator(g.MAX_POOL_2D, (2,), (3,),
                                     g.PoolOptions(2, 2, 2, 2, g.VALID))], [0], [3])
    with pytest.raises(g.GraphError, match="bits"):
        int8_ops.prepare(graph)

    # a binary operator whose output claims float32: refused by name, not a KeyError
    bits_in = g.Tensor("b", (1, 2, 2, 8), g.BITS)
    f = g.Tensor("f", (1, 1, 1, 8), g.FLOAT32)
    graph = g.Graph([x, g.Tensor("bd", (8, 2), g.INT32, None, np.zeros((8, 2), np.int32)),
                     bits_in, f],
                    [g.Operator(g.BINARIZE, (0, 1), (2,)),
                     g.Operator(g.BINARY_MAX_POOL_2D, (2,), (3,),
                                g.PoolOptions(2, 2, 2, 2, g.VALID))], [0], [3])
    with pytest.raises(g.GraphError, match="no float32 version"):
        int8_ops.prepare(graph)


# ------------------------------------------------------------------ specs and CLI


@pytest.mark.parametrize("spec, message", [
    ("b8k3-f10", "starts with the stem"),
    ("c8k3-c8k3-f10", "starts with the stem"),
    ("c8k3-p2", "must end with f<N>"),
    ("c8k3-zz-f10", "unknown layer"),
    ("c8k3-f10-p2-f10", "needs an image"),
    ("c8k30-f10", "smaller than the kernel"),
])
def test_spec_errors(spec, message):
    with pytest.raises(ValueError, match=message):
        xnor_cnn.build_xnor_cnn(spec)


@pytest.mark.parametrize("spec", [xnor_cnn.DEFAULT_SPEC, "c16k4s4-f64-f10", "c32k4s4-f64-f10",
                                  "c8k3s2-p2-b40k3-p2-f64-f10"])
def test_layer_costs_match_the_graph(spec):
    model = xnor_cnn.freeze_stem(xnor_cnn.build_xnor_cnn(spec, seed=0))
    costs = xnor_cnn.layer_costs(model)
    graph = xnor_cnn.to_graph(model)
    table = xnor_cnn.word_ops(graph)
    assert sum(r["word_ops"] for r in costs) == sum(r["word_ops"] for r in table)
    assert sum(r["macs"] for r in costs) == graph.macs()
    assert graph.constant_bytes() <= 32 * 1024


def test_cli_train_export_eval(capsys, tmp_path, make_idx_set):
    make_idx_set(tmp_path / "tiny", n_train=30, n_test=6)
    out_file = tmp_path / "x.npz"
    code, out, err = _run_cli(["train", "mnist", "--kind", "xnor", "--model", "cnn",
                               "--arch", "c4k3s2-p2-b8k3-f10", "--epochs", "1",
                               "--batch-size", "10", "--out", str(out_file), "--data",
                               str(tmp_path / "tiny"), "--json", "-q"], capsys)
    assert code == 0, err
    result = json.loads(out)
    assert result["kind"] == "xnor" and result["n"] == 6
    model, meta = nn.load(out_file)
    assert meta["model"] == "cnn" and meta["arch"] == "c4k3s2-p2-b8k3-f10"
    assert isinstance(model.layers[1], xnor_cnn.QuantConv2d)  # the stem is frozen
    code, out, err = _run_cli(["export", str(out_file), "--name", "tiny_xnor", "--out",
                               str(tmp_path / "models"), "--json"], capsys)
    assert code == 0, err
    written = json.loads(out)
    blob = Path(written["nnb"]).read_bytes()
    assert format2.is_version2(blob)
    assert "MODEL = (" in Path(written["module"]).read_text()
    graph = format2.from_bytes(blob).graph
    assert g.XNOR_CONV_2D in [op.kind for op in graph.operators]
    for path in (out_file, Path(written["nnb"])):
        code, out, err = _run_cli(["eval", str(path), "--data", str(tmp_path / "tiny"),
                                   "--json"], capsys)
        assert code == 0, err
        assert json.loads(out)["reference"] is True
    _, _, x, _ = data.load_mnist(str(tmp_path / "tiny"), download=False)
    np.testing.assert_array_equal(xnor_cnn.graph_logits(graph, x).argmax(1),
                                  xnor_cnn.predict_signs(model, x).argmax(1))


def test_delivered_model_equals_its_graph_on_mnist(mnist):
    """build/cnn/cnn_xnor.npz (make: see README) against its export on the 10,000 digits of
    the MNIST test set."""
    path = ROOT / "build" / "cnn" / "cnn_xnor.npz"
    if not path.exists():
        pytest.skip(f"{path} not built (piconn train mnist --kind xnor --model cnn)")
    model, _ = nn.load(path)
    _, _, x, _ = mnist
    graph = xnor_cnn.to_graph(model)
    assert graph.operators[0].kind == g.BINARIZE_CONV_2D
    np.testing.assert_array_equal(xnor_cnn.graph_logits(graph, x).argmax(1),
                                  xnor_cnn.predict_signs(model, x).argmax(1))


def test_distillation_targets_mix_the_teachers_softened_outputs(rng):
    teacher = nn.Sequential(nn.Flatten(), nn.Linear(784, 10)).init(0)
    d = xnor_cnn._Distill(teacher, temperature=2.0, weight=0.25, shift=0)
    xb = rng.integers(0, 256, (5, 784)).astype(np.uint8)
    assert d.augment(xb, rng) is xb
    z = np.asarray(teacher.forward(xb.astype(np.float32) / 255), np.float64) / 2.0
    soft = np.exp(z - z.max(1, keepdims=True))
    soft /= soft.sum(1, keepdims=True)
    np.testing.assert_allclose(d.soft, soft, rtol=1e-6)
    labels = np.array([0, 1, 2, 3, 9])
    out = rng.normal(size=(5, 10))
    want = 0.25 * soft
    want[np.arange(5), labels] += 0.75
    assert d.loss(out, labels).value == pytest.approx(nn.cross_entropy(out, want).value)
    # a training run with a teacher: the meta says so
    x = rng.integers(0, 256, (20, 784)).astype(np.uint8)
    y = rng.integers(0, 10, 20)
    model, history, meta = xnor_cnn.train_xnor_cnn(x, y, arch="c4k4s4-b8k3-f10", epochs=1,
                                                   batch_size=10, finetune=1, teacher=teacher)
    assert len(history) == 2 and meta["distill_weight"] == xnor_cnn.DISTILL_WEIGHT
    assert isinstance(model.layers[1], xnor_cnn.QuantConv2d)
