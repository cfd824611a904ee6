"""piconn's float CNNs as float32 graphs (piconn.float_graph) and `piconn export` of them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from piconn import conv, export, float_graph, format2, nn, train
from piconn import graph as g

ROOT = Path(__file__).resolve().parents[1]
TRAINED_CNN = ROOT / "build" / "cnn" / "cnn.npz"  # `piconn train mnist --model cnn`


def _random_cnn(spec: str, seed: int = 0) -> nn.Sequential:
    model = conv.build_cnn(spec).init(seed)
    rng = np.random.default_rng(seed)
    for layer in model.layers:  # batch norms with statistics of their own
        if conv._is_batchnorm(layer):
            c = layer.running_mean.shape
            layer.running_mean[...] = rng.normal(0, 0.3, c)
            layer.running_var[...] = rng.uniform(0.5, 2.0, c)
    return model.eval()


@pytest.mark.parametrize("spec", [
    conv.DEFAULT_CNN,
    conv.SMALL_CNN,
    "c8k3b-d2k3s2-a2-r(c16k3b-c16k3)-g-f10",
    "14x14x2:c4k3vb-a2v-f16-f10",
])
def test_float_graph_matches_the_model(spec):
    """The graph computes the model's values (float32 kernels vs the model's own dtype)
    and its argmax, through the version-2 file too."""
    model = _random_cnn(spec)
    shape = (14 * 14 * 2,) if spec.startswith("14x14x2") else (784,)
    graph = float_graph.float_graph(model, shape)
    assert all(t.dtype in (g.FLOAT32, g.INT32) for t in graph.tensors)
    assert not any(conv._is_batchnorm(la) for la in conv.fold_batchnorms(model).layers)
    rng = np.random.default_rng(1)
    x = rng.integers(0, 256, (20, shape[0]), dtype=np.uint8)
    want = model.forward(train.prepare(x, model.dtype))
    got = float_graph.predict_float(graph, x, batch=7)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * np.abs(want).max())
    assert np.array_equal(got.argmax(1), want.argmax(1))
    again = format2.from_bytes(format2.to_bytes(graph)).graph
    assert float_graph.predict_float(again, x[:3]).tobytes() == got[:3].tobytes()


def test_unsupported_layers_are_named():
    model = nn.Sequential(conv.Reshape((4, 4, 1)), conv.Conv2d(1, 2, 3), nn.Sigmoid(),
                          nn.ReLU(), nn.Flatten(), nn.Linear(32, 3)).init(0)
    with pytest.raises(ValueError, match=r"layer 3 \(ReLU\)"):
        float_graph.float_graph(model, (16,))
    with pytest.raises(TypeError):
        float_graph.float_graph("model")


def test_export_cli_writes_a_float32_graph(tmp_path):
    model = _random_cnn(conv.SMALL_CNN)
    path = nn.save(model, tmp_path / "cnn.npz", {"kind": "float", "model": "cnn"})
    result = export.export(path, "cnn_f32", tmp_path / "out")
    assert result["kind"] == "float32"
    blob = Path(result["nnb"]).read_bytes()
    graph = format2.from_bytes(blob).graph
    assert graph.tensors[graph.inputs[0]].dtype == g.FLOAT32
    source = Path(result["module"]).read_text()
    assert "KIND = 'float32'" in source and "INPUT_DTYPE = 'float32'" in source
    with pytest.raises(ValueError, match="--samples"):
        export.export(path, "cnn_f32", tmp_path / "out", samples=3)


def test_trained_cnn_accuracy_on_mnist():
    """The exported default CNN predicts the trained model's class on all 10,000 test
    digits (its accuracy is the model's)."""
    if not TRAINED_CNN.exists():
        pytest.skip(f"no trained CNN at {TRAINED_CNN} (piconn train mnist --model cnn)")
    from piconn.data import load_mnist
    try:
        _, _, x_test, y_test = load_mnist(None, download=False)
    except (OSError, FileNotFoundError) as e:
        pytest.skip(f"MNIST not available: {e}")
    model, meta = nn.load(TRAINED_CNN)
    model.eval()
    graph = float_graph.float_graph(model)
    got = float_graph.predict_float(graph, x_test, batch=1000).argmax(1)
    want = np.concatenate([model.forward(train.prepare(x_test[i:i + 1000], model.dtype))
                           for i in range(0, len(x_test), 1000)]).argmax(1)
    assert np.array_equal(got, want)
    accuracy = float(np.mean(got == y_test))
    assert accuracy == float(np.mean(want == y_test))
    if "test_accuracy" in meta:
        assert abs(accuracy - meta["test_accuracy"]) < 1e-9
