"""Structured pruning of CNNs: the channel surgery (exact when the removed filters are
silent), shapes, the criteria, errors, fine-tuning and `piconn prune --structured`."""

from __future__ import annotations

import json

import numpy as np
import pytest

from piconn import commands, conv, nn, train
from piconn import prune_structured as ps

# Depthwise (multiplier 2) after a pruned conv, batch norms, pooling, flatten of a 4x4
# image into a hidden Linear; and a residual block with a global pool.
CHAIN = "8x8x2:c6k3b-d2k3b-p2-c4k3-f6-f3"
RESIDUAL = "8x8x1:c4k3b-r(c6k3b-c4k3b)-g-f3"


def _model(spec: str, seed: int = 0) -> nn.Sequential:
    """A float64 model of `spec` with random batch-norm statistics and biases, in eval mode."""
    model = conv.build_cnn(spec).init(seed, dtype=np.float64)
    rng = np.random.default_rng(seed + 1)
    for layer in ps._walk(model.layers):
        if isinstance(layer, conv.BatchNorm2d):
            c = layer.channels
            layer.gamma.data = rng.uniform(0.5, 1.5, c)
            layer.beta.data = rng.normal(0, 0.3, c)
            layer.running_mean = rng.normal(0, 0.3, c)
            layer.running_var = rng.uniform(0.5, 2.0, c)
        if getattr(layer, "bias", None) is not None:
            layer.bias.data = rng.normal(0, 0.1, layer.bias.data.shape)
    return model.eval()


def _silence(layers: list[nn.Module], i: int, dead: np.ndarray) -> None:
    """Make output channels `dead` of layers[i] exactly zero wherever they flow: zero
    filters and biases, and zero gamma and beta (and depthwise biases) downstream."""
    layer = layers[i]
    layer.weight.data[dead] = 0
    if layer.bias is not None:
        layer.bias.data[dead] = 0
    for nxt in layers[i + 1:]:
        if isinstance(nxt, (conv.Conv2d, nn.Linear)):
            return
        if isinstance(nxt, conv.DepthwiseConv2d):
            m = nxt.depth_multiplier
            dead = (dead[:, None] * m + np.arange(m)).ravel()
            if nxt.bias is not None:
                nxt.bias.data[dead] = 0
        if isinstance(nxt, conv.BatchNorm2d):
            nxt.gamma.data[dead] = 0
            nxt.beta.data[dead] = 0


def _silence_all(layers: list[nn.Module], fraction: float, rng: np.random.Generator) -> dict:
    """Silence a random n - n_kept outputs of every prunable layer (blocks included);
    returns {id(layer): kept indices}."""
    kept = {}
    for i in ps._prunable(layers, "all"):
        n = layers[i].weight.data.shape[0]
        dead = np.sort(rng.permutation(n)[:n - ps.n_kept(n, fraction)])
        _silence(layers, i, dead)
        kept[id(layers[i])] = np.setdiff1d(np.arange(n), dead)
    for layer in layers:
        if isinstance(layer, conv.Residual):
            kept.update(_silence_all(layer.block.layers, fraction, rng))
    return kept


@pytest.mark.parametrize("spec", [CHAIN, RESIDUAL])
def test_silent_filters_removed_exactly(spec: str) -> None:
    model = _model(spec)
    kept = _silence_all(model.layers, 0.5, np.random.default_rng(3))
    x = np.random.default_rng(4).uniform(0, 1, (16, int(np.prod(model.layers[0].shape))))
    before = model.forward(x)
    for criterion in ps.CRITERIA:
        pruned = ps.prune_structured(model, 0.5, criterion)
        np.testing.assert_allclose(pruned.forward(x), before, rtol=1e-12, atol=1e-12)
    # The kept filters are the live ones, in their order: the first pruned layer (its
    # inputs are whole) keeps exactly their weights.
    pairs = [(a, b) for a, b in zip(ps._walk(model.layers), ps._walk(pruned.layers))
             if id(a) in kept]
    old, new = pairs[0]
    np.testing.assert_array_equal(new.weight.data, old.weight.data[kept[id(old)]])
    assert all(b.weight.data.shape[0] == len(kept[id(a)]) for a, b in pairs)
    assert np.array_equal(model.forward(x), before)  # the source model is unchanged


def test_shapes_after_pruning(tmp_path) -> None:
    model = _model(CHAIN)
    pruned = ps.prune_structured(model, 0.5)
    widths = [row["out"] for row in ps.layer_widths(pruned)]
    # conv 6 -> 3, depthwise 3 channels x 2, conv 4 -> 2, hidden Linear 6 -> 3, classes 3
    assert widths == [3, 6, 2, 3, 3]
    assert conv.output_shape(pruned, (128,)) == (3,)
    for layer in pruned.layers:  # every layer's configuration matches its arrays
        rebuilt = type(layer)(**layer.config())
        assert {k: v.shape for k, v in rebuilt.state().items()} == \
            {k: v.shape for k, v in layer.state().items()}
    assert pruned.layers[11].n_in == 4 * 4 * 2  # the flattened 4x4 image of 2 channels
    path = nn.save(pruned, tmp_path / "p.npz")
    back, _ = nn.load(path)
    x = np.random.default_rng(0).uniform(0, 1, (5, 128))
    np.testing.assert_allclose(back.eval().forward(x), pruned.forward(x), rtol=1e-6)
    summary = ps.summary(pruned, (8, 8, 2))
    assert summary["params"] == nn.count_params(pruned)
    assert summary["macs"] < ps.summary(model, (8, 8, 2))["macs"]
    assert ps.pruned_spec(CHAIN, pruned) == "8x8x2:c3k3b-d2k3b-p2-c2k3-f3-f3"
    assert ps.pruned_spec("c4k3-f10", pruned) is None


def test_residual_stream_keeps_its_channels() -> None:
    model = _model(RESIDUAL)
    pruned = ps.prune_structured(model, 0.5)
    first, block = pruned.layers[1], pruned.layers[4].block.layers
    assert first.out_ch == 4  # feeds the residual addition
    assert block[0].out_ch == 3 and block[3].in_ch == 3 and block[3].out_ch == 4
    assert ps.prunable_layers(model) == []  # top level: only the block's first conv
    assert ps.prunable_layers(conv.build_cnn(CHAIN), "conv") == [1, 8]


def test_scope_and_criteria() -> None:
    model = _model(CHAIN)
    convs_only = ps.prune_structured(model, 0.5, scope="conv")
    assert [r["out"] for r in ps.layer_widths(convs_only)] == [3, 6, 2, 6, 3]
    layers = model.layers
    conv1, bn = layers[1], layers[2]
    conv1.weight.data[0] *= 100  # the largest raw filter ...
    bn.gamma.data[0] = 1e-6      # ... silenced by its batch norm
    assert ps.filter_scores(layers, 1, "l1").argmax() == 0
    assert ps.filter_scores(layers, 1, "folded").argmin() == 0
    assert 0 in ps._choose(ps.filter_scores(layers, 1, "l1"), 0.5)
    assert 0 not in ps._choose(ps.filter_scores(layers, 1, "folded"), 0.5)
    assert ps.n_kept(3, 0.99) == 1 and ps.n_kept(32, 0.5) == 16 and ps.n_kept(6, 0.3) == 4
    assert ps._choose(np.array([3.0, 1.0, 2.0, 5.0]), 0.5).tolist() == [0, 3]  # in order


@pytest.mark.parametrize("bad", [0, 0.0, 1, 1.0, -0.5, 1.5, "abc", None, float("nan")])
def test_bad_fraction(bad) -> None:
    with pytest.raises(ValueError, match=r"structured fraction must be"):
        ps.prune_structured(_model(CHAIN), bad)


def test_models_without_prunable_filters() -> None:
    mlp = train.build_mlp([20, 8, 3]).init(0)
    with pytest.raises(ValueError, match="no Conv2d layer"):
        ps.prune_structured(mlp, 0.5)
    with pytest.raises(ValueError, match="no prunable layer"):
        ps.prune_structured(conv.build_cnn("8x8x1:c4k3b-r(c4k3b)-g-f3").init(0), 0.5)
    with pytest.raises(ValueError, match="criterion"):
        ps.prune_structured(_model(CHAIN), 0.5, criterion="l2")
    with pytest.raises(ValueError, match="scope"):
        ps.prune_structured(_model(CHAIN), 0.5, scope="dense")
    with pytest.raises(TypeError):
        ps.prune_structured(conv.Conv2d(1, 2), 0.5)


def test_fine_tune_trains_the_pruned_model() -> None:
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (256, 64), dtype=np.uint8)
    y = (x[:, :32].astype(int).sum(1) > x[:, 32:].astype(int).sum(1)).astype(np.int64)
    model = conv.build_cnn("8x8x1:c8k3b-p2-f8-f2").init(0)
    pruned = ps.prune_structured(model, 0.5)
    hist = ps.fine_tune(pruned, x, y, epochs=3, lr=3e-3, batch_size=32, shift=1, side=8,
                        progress=False)
    assert len(hist) == 3 and hist[-1]["loss"] < hist[0]["loss"]
    assert ps.fine_tune(pruned, x, y, epochs=0) == []
    with pytest.raises(ValueError, match="epochs"):
        ps.fine_tune(pruned, x, y, epochs=-1)


def _run(argv: list[str], capsys) -> tuple[int, str, str]:
    try:
        code = commands.main(argv)
    except SystemExit as e:  # argparse errors
        code = e.code
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_structured_then_int8_and_export(capsys, tmp_path, make_idx_set) -> None:
    make_idx_set(tmp_path / "tiny", n_train=40, n_test=8)
    data = ["--data", str(tmp_path / "tiny")]
    spec = "c4k3v-p2-c8k3vb-p2-f12-f10"
    src = nn.save(conv.build_cnn(spec).init(0), tmp_path / "c.npz",
                  {"model": "cnn", "arch": spec, "shift": 1, "input_scale": 1 / 255})
    out = tmp_path / "p.npz"
    code, text, err = _run(["prune", str(src), "--structured", "0.5", "--epochs", "1",
                            "--out", str(out), "-q", *data], capsys)
    assert code == 0, err
    assert "layer 1 Conv2d: 4 -> 2 filters" in text and "layer 4 Conv2d: 8 -> 4 filters" in text
    assert "layer 9 Linear: 12 -> 6 neurons" in text and "10 -> 10 neurons (the classes)" in text
    assert "multiply-adds" in text and "after 1 epochs of fine-tuning" in text
    model, meta = nn.load(out)
    assert meta["arch"] == "c2k3v-p2-c4k3vb-p2-f6-f10" and meta["kind"] == "pruned"
    assert meta["pruning"]["source_arch"] == spec and meta["pruning"]["criterion"] == "folded"
    assert model.forward(np.zeros((2, 784))).shape == (2, 10)
    code, text, err = _run(["prune", str(src), "--structured", "0.25", "--epochs", "0",
                            "--scope", "conv", "--criterion", "l1", "--json",
                            "--out", str(tmp_path / "q.npz"), *data], capsys)
    assert code == 0, err
    res = json.loads(text)
    assert [r["out"] for r in res["after"]["layers"]] == [3, 6, 12, 10]
    assert res["after"]["macs"] < res["before"]["macs"] and res["n"] == 8
    # The pruned model is an ordinary dense CNN for the int8 path and the export.
    code, text, err = _run(["quantize", str(out), "--mode", "int8", "--calib", "20",
                            "--out", str(tmp_path / "p8.nnb"), "--name", "p8", "--json",
                            *data], capsys)
    assert code == 0, err
    assert (tmp_path / "p8.py").is_file()
    code, text, err = _run(["export", str(tmp_path / "p8.nnb"), "--name", "p8e",
                            "--out", str(tmp_path), "--json", *data], capsys)
    assert code == 0, err
    assert (tmp_path / "p8e.nnb").read_bytes() == (tmp_path / "p8.nnb").read_bytes()


@pytest.mark.parametrize("argv, message, status", [
    (["--structured", "0"], "structured fraction must be in (0, 1)", 2),
    (["--structured", "1"], "structured fraction must be in (0, 1)", 2),
    (["--structured", "-0.5"], "structured fraction must be in (0, 1)", 2),
    (["--structured", "x"], "structured fraction must be a number", 2),
    (["--structured", "0.5", "--sparsity", "0.5"], "not allowed with argument", 2),
])
def test_cli_bad_arguments(capsys, tmp_path, argv, message, status) -> None:
    src = nn.save(conv.build_cnn("c4k3v-p2-f10").init(0), tmp_path / "c.npz")
    code, _, err = _run(["prune", str(src), *argv, "--out", str(tmp_path / "x.npz")], capsys)
    assert code == status and message in err and "Traceback" not in err


def test_cli_model_without_convolutions(capsys, tmp_path) -> None:
    src = nn.save(train.build_mlp([784, 8, 10]).init(0), tmp_path / "m.npz")
    code, _, err = _run(["prune", str(src), "--structured", "0.5",
                         "--out", str(tmp_path / "x.npz")], capsys)
    assert code == 1 and "not a CNN (no Conv2d layer)" in err
    assert len(err.strip().splitlines()) == 1
    res = conv.build_cnn("c4k3-r(c4k3)-g-f10").init(0)
    src = nn.save(res, tmp_path / "r.npz")
    code, _, err = _run(["prune", str(src), "--structured", "0.5",
                         "--out", str(tmp_path / "x.npz")], capsys)
    assert code == 1 and "no prunable layer" in err and len(err.strip().splitlines()) == 1
