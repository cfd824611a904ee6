"""piconn.quant_int8: trained MLPs and CNNs to int8 graphs in TensorFlow Lite's scheme, and
`piconn quantize --mode int8`."""

from __future__ import annotations

import json

import mpy
import numpy as np
import pytest

from piconn import commands, conv, export, format2, int8_ops, nn, train, xnor
from piconn import graph as g
from piconn import quant_int8 as qi

SPECS = {
    "conv_pool_dense": "c6k3-p2-c8k3vb-p2-f16-f10",
    "residual": "c8k3s2-r(c8k3b-c8k3b)-p2-f10",
    "depthwise": "c4k3s2b-d2k3b-c6k1-a2-f10",
    "global_pool": "c6k5s2v-d1k3s2-g-f10",
    "same_pools": "c3k3s3-p3s2-a2s2-f12-f10",
}


def _model(spec: str, seed: int = 1) -> nn.Sequential:
    """A random CNN whose batch norms have running statistics of their own."""
    model = conv.build_cnn(spec).init(seed)
    rng = np.random.default_rng(seed)
    for layer in _all_layers(model.layers):
        if isinstance(layer, conv.BatchNorm2d):
            layer.running_mean = rng.normal(0, 0.1, layer.channels).astype(np.float32)
            layer.running_var = rng.uniform(0.5, 2, layer.channels).astype(np.float32)
            layer.gamma.data = rng.uniform(0.5, 1.5, layer.channels).astype(np.float32)
            layer.beta.data = rng.normal(0, 0.2, layer.channels).astype(np.float32)
        if getattr(layer, "bias", None) is not None:
            layer.bias.data = rng.normal(0, 0.05, layer.bias.data.shape).astype(np.float32)
    return model.eval()


def _all_layers(layers):
    for layer in layers:
        yield layer
        if isinstance(layer, conv.Residual):
            yield from _all_layers(layer.block.layers)


def _pixels(n: int, seed: int = 0) -> np.ndarray:
    """Digit-like inputs: blobs of ink on a blank page (not uniform noise)."""
    rng = np.random.default_rng(seed)
    img = np.zeros((n, 28, 28))
    yy, xx = np.mgrid[:28, :28]
    for _ in range(3):
        cy, cx = rng.uniform(6, 22, (2, n, 1, 1))
        img += np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / rng.uniform(4, 20, (n, 1, 1)))
    return np.clip(img * 255, 0, 255).astype(np.uint8).reshape(n, 784)


@pytest.fixture(scope="module")
def calib() -> np.ndarray:
    return _pixels(400)


@pytest.mark.parametrize("name", SPECS)
def test_graph_passes_prepare_and_round_trips(name, calib):
    model = _model(SPECS[name])
    graph = qi.quantize_int8(model, calib)
    int8_ops.prepare(graph)
    blob = format2.to_bytes(graph)
    back = format2.from_bytes(blob).graph
    assert [op.kind for op in back.operators] == [op.kind for op in graph.operators]
    for a, b in zip(graph.tensors, back.tensors):
        assert a.shape == b.shape and a.dtype == b.dtype
        if a.is_constant:
            assert np.array_equal(a.data, b.data)
    x = qi.quantize_input(graph, calib[:3])
    for k in range(3):
        assert np.array_equal(int8_ops.run(graph, x[k]), int8_ops.run(back, x[k]))
    assert graph.macs() == conv.count_macs(model, (28, 28, 1))


def test_operators_of_each_layer(calib):
    def kinds(spec: str) -> list[str]:
        return [op.kind for op in qi.quantize_int8(_model(spec), calib).operators]

    assert kinds(SPECS["conv_pool_dense"]) == [
        g.CONV_2D, g.MAX_POOL_2D, g.CONV_2D, g.MAX_POOL_2D, g.RESHAPE, g.FULLY_CONNECTED,
        g.FULLY_CONNECTED]
    assert kinds(SPECS["residual"]) == [
        g.CONV_2D, g.CONV_2D, g.CONV_2D, g.ADD, g.MAX_POOL_2D, g.RESHAPE, g.FULLY_CONNECTED]
    assert kinds(SPECS["global_pool"]) == [
        g.CONV_2D, g.DEPTHWISE_CONV_2D, g.MEAN, g.FULLY_CONNECTED]
    assert kinds(SPECS["same_pools"])[1:3] == [g.MAX_POOL_2D, g.AVERAGE_POOL_2D]


@pytest.mark.parametrize("name", SPECS)
def test_int8_outputs_close_to_float(name, calib):
    model = _model(SPECS[name])
    graph = qi.quantize_int8(model, calib)
    x = _pixels(200, seed=7)
    real = qi.dequantize_output(graph, qi.predict_int8(graph, x))
    ref = model.forward(train.prepare(x))
    step = float(graph.tensors[graph.outputs[0]].quant.scale[0])
    err = np.abs(real - ref) / step
    # A handful of int8 roundings per layer: errors of a few output steps, not more.
    assert err.mean() < 1.0 and err.max() < 5, (err.mean(), err.max())
    spread = ref.max(axis=1) - ref.min(axis=1)
    assert np.median(spread) > 10 * step  # the outputs vary on the int8 scale


def test_tflite_scheme(calib):
    model = _model(SPECS["depthwise"])
    graph = qi.quantize_int8(model, calib)
    x = graph.tensors[graph.inputs[0]]
    assert x.shape == (1, 28, 28, 1) and x.dtype == g.INT8
    assert np.float32(x.quant.scale[0]) == np.float32(1 / 255) and x.quant.zero_point[0] == -128
    folded = [la for la in conv.fold_batchnorms(model).layers
              if isinstance(la, (conv.Conv2d, conv.DepthwiseConv2d, nn.Linear))]
    weighted = [op for op in graph.operators
                if op.kind in (g.CONV_2D, g.DEPTHWISE_CONV_2D, g.FULLY_CONNECTED)]
    assert len(folded) == len(weighted)
    for layer, op in zip(folded, weighted):
        x_t, w_t, b_t = (graph.tensors[i] for i in op.inputs)
        w = layer.weight.data.astype(np.float64)
        axis = 3 if op.kind == g.DEPTHWISE_CONV_2D else 0
        w = w[None] if op.kind == g.DEPTHWISE_CONV_2D else w
        peak = np.abs(w).max(axis=tuple(a for a in range(w.ndim) if a != axis))
        assert w_t.quant.axis == axis and not np.any(w_t.quant.zero_point)
        assert np.array_equal(w_t.quant.scale, (peak / 127).astype(np.float32))
        assert np.abs(w_t.data).max() == 127 and w_t.data.min() >= -127
        shape = [1] * w.ndim
        shape[axis] = -1
        assert np.abs(w_t.data * w_t.quant.scale.reshape(shape) - w).max() <= peak.max() / 254 + 1e-7
        assert b_t.dtype == g.INT32
        np.testing.assert_allclose(b_t.quant.scale, x_t.quant.scale[0] * w_t.quant.scale,
                                   rtol=1e-6)
        np.testing.assert_allclose(b_t.data * b_t.quant.scale.astype(np.float64),
                                   layer.bias.data, atol=float(b_t.quant.scale.max()))
    acts = [op.options.activation for op in weighted]
    assert acts == [g.ACT_RELU, g.ACT_RELU, g.ACT_RELU, g.ACT_NONE]  # logits last
    for op in weighted[:-1]:  # a fused ReLU's output starts at 0: zero point -128
        assert graph.tensors[op.outputs[0]].quant.zero_point[0] == -128
    pool = next(op for op in graph.operators if op.kind == g.AVERAGE_POOL_2D)
    a, b = (graph.tensors[op_t].quant for op_t in (pool.inputs[0], pool.outputs[0]))
    assert a.scale[0] == b.scale[0] and a.zero_point[0] == b.zero_point[0]


def test_activation_ranges_include_zero():
    pos = qi.activation_quant(np.array([0.5, 2.0]))  # [0, 2]
    assert pos.zero_point[0] == -128 and np.isclose(pos.scale[0], 2 / 255)
    neg = qi.activation_quant(np.array([-3.0, -1.0]))  # [-3, 0]
    assert neg.zero_point[0] == 127 and np.isclose(neg.scale[0], 3 / 255)
    mixed = qi.activation_quant(np.array([-1.0, 3.0]))
    assert np.isclose(mixed.scale[0], 4 / 255) and mixed.zero_point[0] == -64
    dead = qi.activation_quant(np.zeros(5))
    assert dead.scale[0] > 0 and dead.zero_point[0] == -128


def test_batch_run_equals_one_at_a_time(calib):
    graph = qi.quantize_int8(_model(SPECS["residual"]), calib)
    x = _pixels(7, seed=3)
    batch = qi.predict_int8(graph, x, batch=4)
    q = qi.quantize_input(graph, x)
    assert np.array_equal(q.astype(np.int16), x.astype(np.int16) - 128)  # pixel - 128
    for k in range(7):
        assert np.array_equal(batch[k], int8_ops.run(graph, q[k]).reshape(-1))


def test_mlp_and_model_unchanged(calib):
    model = train.build_mlp([784, 24, 10]).init(0)
    graph = qi.quantize_int8(model, calib.astype(np.float32) / 255)  # floats in [0, 1] too
    assert [op.kind for op in graph.operators] == [g.FULLY_CONNECTED] * 2
    assert graph.tensors[graph.inputs[0]].shape == (1, 784)
    cnn = _model(SPECS["conv_pool_dense"])
    before = sum(isinstance(la, conv.BatchNorm2d) for la in cnn.layers)
    qi.quantize_int8(cnn, calib)
    assert before == 1 and sum(isinstance(la, conv.BatchNorm2d) for la in cnn.layers) == 1


def test_pruned_linear_uses_its_mask(calib):
    model = train.build_mlp([784, 16, 10]).init(0)
    mask = np.random.default_rng(0).random((16, 784)) < 0.2
    model.layers[0].mask = mask
    graph = qi.quantize_int8(model, calib)
    w = graph.tensors[graph.operators[0].inputs[1]].data
    assert not np.any(w[~mask])


class Square(nn.Module):
    """A layer with no int8 operator."""

    def forward(self, x: np.ndarray) -> np.ndarray:
        return x * x


@pytest.mark.parametrize("layers, message", [
    (lambda: [conv.Reshape((28, 28, 1)), conv.Conv2d(1, 2, 3), nn.ReLU(), Square(),
              nn.Flatten(), nn.Linear(1568, 10)], "layer 3 (Square) has no int8 equivalent"),
    (lambda: [conv.Reshape((28, 28, 1)), conv.MaxPool2d(2), nn.ReLU(), nn.Flatten(),
              nn.Linear(196, 10)], "layer 2 (ReLU): a ReLU must follow"),
    (lambda: [conv.Reshape((28, 28, 1)), conv.MaxPool2d(2), conv.BatchNorm2d(1),
              nn.Flatten(), nn.Linear(196, 10)], "layer 2 (BatchNorm2d): a batch norm"),
    (lambda: [conv.Reshape((28, 28, 1)), conv.Residual([conv.Conv2d(1, 1, 3), Square()]),
              nn.Flatten(), nn.Linear(784, 10)], "layer 1.1 (Square) has no int8 equivalent"),
])
def test_layer_without_int8_equivalent(layers, message, calib):
    model = nn.Sequential(*layers()).init(0).eval()
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        qi.quantize_int8(model, calib)


@pytest.mark.parametrize("act, kind, scale, zero", [
    ("sigmoid", g.LOGISTIC, 1 / 256, -128), ("tanh", g.TANH, 1 / 128, 0)])
def test_sigmoid_tanh_softmax(act, kind, scale, zero, calib):
    model = train.build_mlp([784, 24, 10], act=act).init(0)
    model.add(nn.Softmax())
    graph = qi.quantize_int8(model, calib)
    assert [op.kind for op in graph.operators] == [
        g.FULLY_CONNECTED, kind, g.FULLY_CONNECTED, g.SOFTMAX]
    q = graph.tensors[graph.operators[1].outputs[0]].quant
    assert np.float32(q.scale[0]) == np.float32(scale) and q.zero_point[0] == zero
    format2.from_bytes(format2.to_bytes(graph))
    x = _pixels(100, seed=5)
    real = qi.dequantize_output(graph, qi.predict_int8(graph, x))
    assert np.abs(real - model.forward(train.prepare(x))).max() < 4 / 256


def test_bad_calibration_input(calib):
    model = train.build_mlp([784, 8, 10]).init(0)
    with pytest.raises(ValueError, match=r"in \[0, 1\]"):
        qi.quantize_int8(model, calib.astype(np.float32))  # pixels as floats, not /255
    with pytest.raises(ValueError, match="at least one sample"):
        qi.quantize_int8(model, calib[:0])
    with pytest.raises(TypeError, match="uint8 pixels or floats"):
        qi.quantize_int8(model, calib.astype(np.int32))
    with pytest.raises(TypeError, match="nn.Sequential"):
        qi.quantize_int8(model.layers[0], calib)
    with pytest.raises(ValueError, match="784 values per sample"):
        qi.predict_int8(qi.quantize_int8(model, calib), calib[:, :100])


def test_trained_cnn_keeps_its_accuracy(mnist):
    x_train, y_train, x_test, y_test = mnist
    model, _, _ = conv.train_cnn(x_train[:6000], y_train[:6000], arch="c6k5s2vb-f16-f10",
                                 epochs=2, batch_size=64, shift=0, progress=False)
    model.eval()
    graph = qi.quantize_int8(model, x_train[-1000:])
    pred = qi.predict_int8(graph, x_test[:2000]).argmax(axis=1)
    acc = float((pred == y_test[:2000]).mean())
    acc_float = train.evaluate(model, x_test[:2000], y_test[:2000])
    assert acc_float > 0.85  # a real classifier, trained for seconds
    assert abs(acc - acc_float) <= 0.01, (acc, acc_float)


# ------------------------------------------------------------------ command line


def _cli(argv: list[str], capsys) -> tuple[int, str, str]:
    try:
        code = commands.main(argv)
    except SystemExit as e:
        code = e.code
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def cnn_file(tmp_path, make_idx_set):
    make_idx_set(tmp_path / "tiny", n_train=30, n_test=12)
    path = tmp_path / "cnn.npz"
    model = _model("c4k3s2b-p2-f10")
    nn.save(model, path, {"kind": "float", "model": "cnn"})
    return path, model, tmp_path / "tiny"


def test_cli_int8(cnn_file, tmp_path, capsys):
    path, _, data = cnn_file
    out = tmp_path / "m.nnb"
    code, stdout, err = _cli(["quantize", str(path), "--mode", "int8", "--out", str(out),
                              "--data", str(data), "--name", "cnn_i8", "--json"], capsys)
    assert code == 0, err
    result = json.loads(stdout)
    assert result["mode"] == "int8" and result["n"] == 12 and result["calib"] == 30
    assert 0 <= result["accuracy"] <= 1 and 0 <= result["accuracy_float"] <= 1
    blob = out.read_bytes()
    assert result["bytes"] == len(blob)
    graph = format2.from_bytes(blob).graph
    assert [op.kind for op in graph.operators] == result["operators"]
    assert (tmp_path / "cnn_i8.nnb").read_bytes() == blob
    assert "MODEL = (" in (tmp_path / "cnn_i8.py").read_text()
    code, stdout, err = _cli(["quantize", str(path), "--mode", "int8", "--out", str(out),
                              "--data", str(data), "--calib", "5"], capsys)
    assert code == 0, err
    assert "int8: test accuracy" in stdout and "float" in stdout


def test_cli_int8_errors(cnn_file, tmp_path, capsys):
    path, _, data = cnn_file
    code, _, err = _cli(["quantize", str(path), "--mode", "full", "--name", "x", "--out",
                         str(tmp_path / "m.nnb"), "--data", str(data)], capsys)
    assert code == 1 and "--name is for --mode int8" in err and "Traceback" not in err
    bad = tmp_path / "xnor.npz"
    nn.save(xnor.build([784, 16, 10]).init(0), bad, {"kind": "xnor"})
    code, _, err = _cli(["quantize", str(bad), "--mode", "int8", "--out",
                         str(tmp_path / "s.nnb"), "--data", str(data)], capsys)
    assert code == 1 and "layer 0 (InputBinarize) has no int8 equivalent" in err
    assert not (tmp_path / "s.nnb").exists()


def test_bench_tool_reports_both_accuracies(cnn_file, tmp_path, capsys):
    import bench_cnn_int8

    path, model, data = cnn_file
    out = tmp_path / "rows.json"
    code = bench_cnn_int8.main([str(path), "--data", str(data), "--calib", "10",
                                "--save-dir", str(tmp_path / "i8"), "--json", str(out)])
    assert code == 0
    (row,) = json.loads(out.read_text())
    _, _, x_test, y_test = commands.common.data.load_mnist(data)
    assert row["float_pct"] == round(100 * train.evaluate(model, x_test, y_test), 2)
    graph = format2.from_bytes((tmp_path / "i8" / "cnn_int8.nnb").read_bytes()).graph
    pred = qi.predict_int8(graph, x_test).argmax(axis=1)
    assert row["int8_pct"] == round(100 * float((pred == y_test).mean()), 2)
    assert row["macs"] == graph.macs() and "cnn.npz" in capsys.readouterr().out


# ------------------------------------------------------------------ on the device

DEVICE_RUN = """
import sys
sys.path.insert(0, {folder!r})
import nn, binascii, {name}
nn.use_backend({tier!r})
m = nn.load({name})
raw = open({inputs!r}, 'rb').read()
for k in range({n}):
    x = raw[k * {size}:(k + 1) * {size}]
    print(binascii.hexlify(bytes(m.forward(x))).decode(), m.predict(x))
"""


def _runner_tiers() -> list:
    out = [pytest.param(r, t, id=f"{r.name}-{t}") for r in mpy.runners() for t in r.tiers]
    return out or [pytest.param(None, None, marks=pytest.mark.skip(reason=mpy.why_none()))]


@pytest.mark.device
@pytest.mark.parametrize("runner, tier", _runner_tiers())
def test_exported_module_on_the_device(runner, tier, tmp_path, calib):
    """The module `export_graph` writes for a quantized CNN (every operator kind the
    quantizer emits) computes the host reference's logits byte for byte in every tier."""
    graph = qi.quantize_int8(_model("c4k3s2b-r(d1k3b-c4k1)-p2-a2s1-d2k3-g-f12-f10"), calib)
    export.export_graph(graph, "cnn_q", tmp_path)
    x = qi.quantize_input(graph, _pixels(4, seed=9))
    (tmp_path / "x.bin").write_bytes(x.tobytes())
    lines = runner.run(DEVICE_RUN.format(folder=str(tmp_path), name="cnn_q", tier=tier,
                                         inputs=str(tmp_path / "x.bin"), n=len(x), size=784),
                       timeout=600, dirs=(tmp_path,)).split("\n")
    for k in range(len(x)):
        want = int8_ops.run(graph, x[k])
        hexed, pred = lines[k].split()
        assert bytes.fromhex(hexed) == want.tobytes() and int(pred) == int(want.argmax())
