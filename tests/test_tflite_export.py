"""`piconn export --format tflite` (piconn.tflite_write): int8 graphs as .tflite files that
TensorFlow Lite Micro runs with the outputs of `int8_ops.run`, bit for bit, and that
`piconn import` reads back as the same graph.

The oracle is TFLite Micro's Python interpreter (PyPI `tflite-micro`); PyPI `tflite` (the
generated schema classes) reads the written tables independently of piconn's reader.
"""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest

flatbuffers = pytest.importorskip("flatbuffers", reason="the tflite extra writes .tflite files")
tflite = pytest.importorskip("tflite", reason="PyPI tflite (test extra) reads the tables")
runtime = pytest.importorskip("tflite_micro.python.tflite_micro.runtime",
                              reason="PyPI tflite-micro (test extra) is the oracle")

from test_tflite_models import MODELS, model_path
from tflite_build import ModelBuilder

from piconn import commands, conv, format2, int8_ops, nn, quant, train
from piconn import format as fmt
from piconn import graph as g
from piconn import quant_int8 as qi
from piconn import tflite_write as tw
from piconn.tflite import import_tflite

N_IMAGES, N_RANDOM = 40, 20  # MNIST test digits and random int8 inputs per model


# ------------------------------------------------------------------ models


@pytest.fixture(scope="module")
def cnn(mnist) -> g.Graph:
    """SMALL_CNN (conv 5x5 s2, conv 3x3 s2, flatten, 32, 10) trained on 2000 digits for
    one epoch, quantized to int8."""
    x_train, y_train, _, _ = mnist
    model, _, _ = conv.train_cnn(x_train[:2000], y_train[:2000], arch=conv.SMALL_CNN,
                                 epochs=1, batch_size=64, shift=0, progress=False)
    return qi.quantize_int8(model.eval(), x_train[-500:])


@pytest.fixture(scope="module")
def mlp(mnist) -> g.Graph:
    """An MLP 784-32-10 trained on 4000 digits for one epoch, quantized to int8."""
    x_train, y_train, _, _ = mnist
    model, _, _ = train.train_float(x_train[:4000], y_train[:4000], arch=[784, 32, 10],
                                    act="relu", epochs=1, batch_size=64, lr=3e-3, shift=0,
                                    progress=False)
    return qi.quantize_int8(model, x_train[-500:])


def _cnn_spec(spec: str, seed: int) -> nn.Sequential:
    model = conv.build_cnn(spec).init(seed)
    rng = np.random.default_rng(seed)
    for p in model.params():
        if p.data.ndim == 1:  # biases and batch-norm shifts away from 0
            p.data = p.data + rng.normal(0, 0.05, p.data.shape).astype(p.data.dtype)
    return model.eval()


# Random-weight graphs for the operators and options the MNIST models do not use.
EXTRA = {
    "residual_depthwise_mean": lambda: _cnn_spec("c8k3s2b-r(c8k3b-c8k3b)-d2k3b-a2-g-f10", 1),
    "same_pools": lambda: _cnn_spec("c3k3s3-p3s2-a2s2-f12-f10", 2),
    "tanh_sigmoid_softmax": lambda: nn.Sequential(
        nn.Linear(784, 24), nn.Tanh(), nn.Linear(24, 16), nn.Sigmoid(), nn.Linear(16, 10),
        nn.Softmax()).init(3),
}


def pad_graph() -> g.Graph:
    """PAD, CONV_2D and FULLY_CONNECTED without bias, RELU6, keep_dims MEAN, built as a
    .tflite file and imported (quant_int8 writes none of these)."""
    rng = np.random.default_rng(7)
    b = ModelBuilder()
    x = b.tensor([1, 9, 9, 2], scale=0.05, zero=-3)
    pads = b.tensor([4, 2], "int32", data=[[0, 0], [1, 2], [2, 1], [0, 0]])
    xp = b.tensor([1, 12, 12, 2], scale=0.05, zero=-3)
    w1 = b.tensor([5, 3, 3, 2], scale=rng.uniform(0.005, 0.02, 5), zero=[0] * 5,
                  data=rng.integers(-127, 128, (5, 3, 3, 2)))
    c1 = b.tensor([1, 5, 5, 5], scale=0.04, zero=-128)
    axes = b.tensor([2], "int32", data=[1, 2])
    m = b.tensor([1, 1, 1, 5], scale=0.03, zero=-120)
    shape = b.tensor([2], "int32", data=[1, 5])
    r = b.tensor([1, 5], scale=0.03, zero=-120)
    w2 = b.tensor([4, 5], scale=[0.02], zero=[0], data=rng.integers(-127, 128, (4, 5)))
    f = b.tensor([1, 4], scale=0.1, zero=5)
    b.op("PAD", [x, pads], [xp])
    b.op("CONV_2D", [xp, w1, -1], [c1], "Conv2DOptions", Padding=1, StrideW=2, StrideH=2,
         FusedActivationFunction=3)
    b.op("MEAN", [c1, axes], [m], "ReducerOptions", KeepDims=True)
    b.op("RESHAPE", [m, shape], [r])
    b.op("FULLY_CONNECTED", [r, w2, -1], [f], "FullyConnectedOptions")
    return import_tflite(b.build([x], [f]))


def tflm(blob: bytes):
    return runtime.Interpreter.from_bytes(blob, arena_size=1 << 20)


def tflm_outputs(it, inputs: list[np.ndarray]) -> list[np.ndarray]:
    out = []
    for x in inputs:
        it.set_input(x, 0)
        it.invoke()
        out.append(it.get_output(0).copy())
    return out


def random_int8(shape, n: int, seed: int) -> list[np.ndarray]:
    """n int8 inputs: all -128, all 0, all 127, then uniform random."""
    rng = np.random.default_rng(seed)
    fixed = [np.full(shape, v, dtype=np.int8) for v in (-128, 0, 127)]
    return (fixed + [rng.integers(-128, 128, size=shape, dtype=np.int8)
                     for _ in range(max(n - 3, 0))])[:n]


def agree(graph: g.Graph, inputs: list[np.ndarray]) -> int:
    """Assert TFLite Micro on the exported file equals int8_ops.run on the graph for every
    input; return how many distinct outputs there were."""
    blob = tw.to_tflite(graph)
    params = int8_ops.prepare(graph)
    seen = set()
    for x, want in zip(inputs, tflm_outputs(tflm(blob), inputs)):
        got = int8_ops.run(graph, x, params)
        assert got.dtype == want.dtype and got.shape == tuple(want.shape)
        np.testing.assert_array_equal(got, want)
        seen.add(got.tobytes())
    return len(seen)


def mnist_inputs(graph: g.Graph, mnist) -> list[np.ndarray]:
    shape = graph.tensors[graph.inputs[0]].shape
    x = qi.quantize_input(graph, mnist[2][:N_IMAGES])
    return [v.reshape(shape) for v in x] + random_int8(shape, N_RANDOM, 1)


# ------------------------------------------------------------------ (1) TFLite Micro


@pytest.mark.parametrize("which", ["cnn", "mlp"])
def test_tflite_micro_equals_reference_on_mnist(which, request, mnist):
    graph = request.getfixturevalue(which)
    inputs = mnist_inputs(graph, mnist)
    assert len(inputs) >= 50
    assert agree(graph, inputs) > N_IMAGES // 2  # real, varied outputs


@pytest.mark.parametrize("name", EXTRA)
def test_tflite_micro_equals_reference_on_every_operator(name, mnist):
    graph = qi.quantize_int8(EXTRA[name](), mnist[0][:300])
    assert agree(graph, mnist_inputs(graph, mnist)) > 10


def test_pad_no_bias_keep_dims():
    graph = pad_graph()
    assert agree(graph, random_int8(graph.tensors[graph.inputs[0]].shape, 30, 2)) > 10
    assert tw.graph_difference(graph, import_tflite(tw.to_tflite(graph))) == ""


def test_float32_graph(mnist, tmp_path, capsys):
    """A float32 graph (piconn.float_graph) exports too: version 1 of every operator, and
    TFLite Micro's float kernels give the bits of float_ops (no exp-based operator here)."""
    from piconn.float_graph import float_graph

    graph = float_graph(_cnn_spec(conv.SMALL_CNN, 4))
    assert {graph.tensors[i].dtype for i in graph.activations()} == {g.FLOAT32}
    blob = tw.to_tflite(graph)
    assert {version for _, _, version in _codes(blob)} == {1}
    shape = graph.tensors[graph.inputs[0]].shape
    rng = np.random.default_rng(5)
    inputs = ([(v / np.float32(255)).reshape(shape) for v in
               mnist[2][:30].astype(np.float32)]
              + [rng.normal(0, 1, shape).astype(np.float32) for _ in range(20)])
    assert agree(graph, inputs) == 50
    assert tw.graph_difference(tw.converter_form(graph), import_tflite(blob)) == ""
    nnb = tmp_path / "f32.nnb"
    nnb.write_bytes(format2.to_bytes(graph))
    code, out, err = _cli(["export", str(nnb), "--format", "tflite", "--name", "f32",
                           "--out", str(tmp_path / "new"), "--json"], capsys)
    assert code == 0, err
    assert json.loads(out)["kind"] == "float32"
    assert (tmp_path / "new" / "f32.tflite").read_bytes() == tw.to_tflite(
        format2.from_bytes(nnb.read_bytes()).graph)


@pytest.mark.parametrize("which", ["cnn", "mlp"])
def test_input_is_pixels_over_255_minus_128(which, request):
    graph = request.getfixturevalue(which)
    model = tflite.Model.GetRootAsModel(tw.to_tflite(graph), 0)
    sub = model.Subgraphs(0)
    x = sub.Tensors(sub.Inputs(0))
    q = x.Quantization()
    assert x.Type() == tflite.TensorType.INT8 and q.ScaleLength() == 1
    assert q.Scale(0) == np.float32(1 / 255) and q.ZeroPoint(0) == -128
    assert tuple(x.ShapeAsNumpy()) == graph.tensors[graph.inputs[0]].shape


# ------------------------------------------------------------------ (2) import round trip


def _reshapes_without_shape(graph: g.Graph) -> int:
    return sum(op.kind == g.RESHAPE and len(op.inputs) == 1 for op in graph.operators)


@pytest.mark.parametrize("which", ["cnn", "mlp"])
def test_import_gives_the_same_graph(which, request):
    graph = request.getfixturevalue(which)
    back = import_tflite(tw.to_tflite(graph))
    # The file's form: each RESHAPE gains its shape tensor (appended), as the converter
    # writes it; everything else reads back as it was.
    added = _reshapes_without_shape(graph)
    assert (which, added) in (("cnn", 1), ("mlp", 0))
    assert len(back.tensors) == len(graph.tensors) + added
    assert tw.graph_difference(tw.converter_form(graph), back) == ""
    assert tw.graph_difference(graph, back) == ("" if added == 0 else
                                                f"{len(graph.tensors)} tensors != "
                                                f"{len(back.tensors)}")
    nnb = format2.to_bytes(back)
    assert nnb == format2.to_bytes(tw.converter_form(graph))
    if added == 0:
        assert nnb == format2.to_bytes(graph)  # the MLP: the same .nnb bytes
    # Once in the file's form, export and import are exact inverses.
    assert tw.to_tflite(back) == tw.to_tflite(graph)
    assert tw.graph_difference(back, import_tflite(tw.to_tflite(back))) == ""


def test_graph_difference_sees_every_change(cnn):
    """The comparison the round-trip tests rely on finds a change in any part."""
    import copy
    import dataclasses

    def changed(edit) -> str:
        other = copy.deepcopy(cnn)
        edit(other)
        return tw.graph_difference(cnn, other)

    w = cnn.operators[0].inputs[1]
    assert tw.graph_difference(cnn, copy.deepcopy(cnn)) == ""
    assert "data differs" in changed(lambda o: o.tensors[w].data.__setitem__((0, 0, 0, 0), 5))
    assert "quantization" in changed(lambda o: o.tensors[w].quant.scale.__imul__(2))
    assert "quantization" in changed(lambda o: setattr(o.tensors[w].quant, "axis", 3))
    assert "input" in changed(lambda o: setattr(o.tensors[0], "name", "x"))
    assert "options" in changed(lambda o: setattr(o.operators[0], "options", dataclasses.replace(
        o.operators[0].options, stride_h=1)))
    assert "operator 1" in changed(lambda o: setattr(o.operators[1], "inputs", (0,)))
    assert "outputs" in changed(lambda o: o.outputs.append(0))


def test_nnb_graph_round_trips(cnn):
    """A graph read from its .nnb (names t0, t1, ...) exports and imports exactly."""
    graph = format2.from_bytes(format2.to_bytes(cnn)).graph
    form = tw.converter_form(graph)
    assert tw.graph_difference(form, import_tflite(tw.to_tflite(graph))) == ""


def _codes(blob: bytes, used: bool = False) -> list[tuple[int, int, int]]:
    """(builtin code, deprecated code, version) of every operator code (`used`: only those
    that operators name)."""
    model = tflite.Model.GetRootAsModel(blob, 0)
    sub = model.Subgraphs(0)
    names = {sub.Operators(k).OpcodeIndex() for k in range(sub.OperatorsLength())}
    return [(c.BuiltinCode(), c.DeprecatedBuiltinCode(), c.Version())
            for i in range(model.OperatorCodesLength()) if not used or i in names
            for c in [model.OperatorCodes(i)]]


def test_file_layout(cnn):
    blob = tw.to_tflite(cnn)
    model = tflite.Model.GetRootAsModel(blob, 0)
    op = tflite.BuiltinOperator
    assert model.Version() == 3 and blob[4:8] == b"TFL3"
    assert _codes(blob) == [(op.CONV_2D, op.CONV_2D, 3), (op.RESHAPE, op.RESHAPE, 1),
                            (op.FULLY_CONNECTED, op.FULLY_CONNECTED, 4)]
    assert model.Buffers(0).DataLength() == 0
    sub = model.Subgraphs(0)
    constants = 0
    for i in range(sub.TensorsLength()):
        t = sub.Tensors(i)
        buf = model.Buffers(t.Buffer())
        if buf.DataLength():
            constants += 1
            start = buf._tab.Vector(buf._tab.Offset(4))
            assert start % 16 == 0, "constant data is 16-byte aligned"
    assert constants == sum(t.is_constant for t in tw.converter_form(cnn).tensors)
    assert model.BuffersLength() == constants + 1
    # RESHAPE: the shape tensor and new_shape; per-channel weights along their axis.
    for k in range(sub.OperatorsLength()):
        o = sub.Operators(k)
        if _codes(blob)[o.OpcodeIndex()][0] == op.RESHAPE:
            opts = tflite.ReshapeOptions()
            table = o.BuiltinOptions()
            opts.Init(table.Bytes, table.Pos)
            out = tuple(sub.Tensors(o.Outputs(0)).ShapeAsNumpy())
            assert tuple(opts.NewShapeAsNumpy()) == out
            shape_t = sub.Tensors(o.Inputs(1))
            data = model.Buffers(shape_t.Buffer()).DataAsNumpy().view("<i4")
            assert shape_t.Type() == tflite.TensorType.INT32 and tuple(data) == out
        if _codes(blob)[o.OpcodeIndex()][0] == op.CONV_2D:
            w = sub.Tensors(o.Inputs(1))
            q = w.Quantization()
            assert q.ScaleLength() == w.ShapeAsNumpy()[0] > 1 and q.QuantizedDimension() == 0


def test_keep_num_dims_and_no_bias_versions():
    graph = pad_graph()
    assert tw.operator_version(graph, graph.operators[4]) == 4  # -1 bias: three inputs
    fc = g.Operator(g.FULLY_CONNECTED, (0, 1), (2,), g.FullyConnectedOptions())
    assert tw.operator_version(graph, fc) == 6
    fc = g.Operator(g.FULLY_CONNECTED, (0, 1, 2), (3,), g.FullyConnectedOptions(keep_num_dims=True))
    assert tw.operator_version(graph, fc) == 5


def test_refuses_graphs_int8_ops_refuses(mlp):
    bad = g.Graph(list(mlp.tensors), list(mlp.operators), list(mlp.inputs), [999])
    with pytest.raises(g.GraphError, match="out of range"):
        tw.to_tflite(bad)


# ------------------------------------------------------------------ (3) MLPerf Tiny


@pytest.mark.parametrize("name", sorted(MODELS))
def test_mlperf_tiny_round_trip(name):
    path = model_path(name)
    original = path.read_bytes()
    graph = import_tflite(original)
    blob = tw.to_tflite(graph)
    inputs = random_int8(graph.tensors[graph.inputs[0]].shape, 20, 3)
    want = tflm_outputs(tflm(original), inputs)
    got = tflm_outputs(tflm(blob), inputs)
    for a, b in zip(want, got):
        np.testing.assert_array_equal(a, b)
    assert len({w.tobytes() for w in want}) > 1
    back = import_tflite(blob)
    assert tw.graph_difference(graph, back) == ""  # their RESHAPEs have shape tensors
    assert format2.to_bytes(back) == format2.to_bytes(graph)
    # Operator codes and versions as the converter wrote them (deprecated code included);
    # codes that no operator names (ResNet's QUANTIZE and DEQUANTIZE) are not written.
    assert sorted(_codes(blob)) == sorted(_codes(original, used=True))


# ------------------------------------------------------------------ (4) command line


def _cli(argv: list[str], capsys) -> tuple[int, str, str]:
    try:
        code = commands.main(argv)
    except SystemExit as e:
        code = e.code
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_exports_and_imports_back(mlp, tmp_path, capsys):
    nnb = tmp_path / "mlp.nnb"
    nnb.write_bytes(format2.to_bytes(mlp))
    code, out, err = _cli(["export", str(nnb), "--format", "tflite", "--name", "mnist_i8",
                           "--out", str(tmp_path / "t"), "--json"], capsys)
    assert code == 0, err
    result = json.loads(out)
    path = tmp_path / "t" / "mnist_i8.tflite"
    assert result["tflite"] == str(path) and result["bytes"] == len(path.read_bytes())
    assert result["macs"] == mlp.macs() and result["format"] == "tflite"
    code, _, err = _cli(["import", str(path), "--out", str(tmp_path / "i")], capsys)
    assert code == 0, err
    assert (tmp_path / "i" / "mnist_i8.nnb").read_bytes() == nnb.read_bytes()
    # A .tflite is accepted too, and the text names the file.
    code, out, err = _cli(["export", str(path), "--format", "tflite", "--name", "again",
                           "--out", str(tmp_path / "t")], capsys)
    assert code == 0, err
    assert "again.tflite" in out and "int8" in out
    assert (tmp_path / "t" / "again.tflite").read_bytes() == path.read_bytes()


def _one_line_error(code: int, out: str, err: str) -> str:
    assert code == 1 and out == ""
    assert "Traceback" not in err and err.count("\n") == 1, err
    return err


def test_cli_without_flatbuffers(mlp, tmp_path, capsys, monkeypatch):
    nnb = tmp_path / "mlp.nnb"
    nnb.write_bytes(format2.to_bytes(mlp))
    monkeypatch.setitem(sys.modules, "flatbuffers", None)  # import flatbuffers fails
    err = _one_line_error(*_cli(["export", str(nnb), "--format", "tflite", "--name", "m",
                                 "--out", str(tmp_path)], capsys))
    assert "flatbuffers" in err and "pip install 'piconn[tflite]'" in err
    assert not (tmp_path / "m.tflite").exists()


def test_cli_wrong_model_kind(tmp_path, capsys):
    model = train.build_mlp([784, 8, 10]).init(0)
    npz = tmp_path / "float.npz"
    nn.save(model, npz, {"kind": "float"})
    err = _one_line_error(*_cli(["export", str(npz), "--format", "tflite", "--name", "m",
                                 "--out", str(tmp_path)], capsys))
    assert "trained float model" in err and "piconn quantize" in err and "--mode int8" in err
    v1 = tmp_path / "q8w.nnb"
    v1.write_bytes(fmt.to_bytes(quant.quantize(model, {"kind": "float"}, "weights")))
    err = _one_line_error(*_cli(["export", str(v1), "--format", "tflite", "--name", "m",
                                 "--out", str(tmp_path)], capsys))
    assert "not an int8 model" in err and "piconn quantize" in err
    junk = tmp_path / "junk.nnb"
    junk.write_bytes(b"PCNN\x02\x00" + bytes(10))
    _one_line_error(*_cli(["export", str(junk), "--format", "tflite", "--name", "m",
                           "--out", str(tmp_path)], capsys))
    _one_line_error(*_cli(["export", str(tmp_path / "none.nnb"), "--format", "tflite",
                           "--name", "m", "--out", str(tmp_path)], capsys))
    assert not list(tmp_path.glob("*.tflite"))


def test_cli_tflite_refuses_samples(mlp, tmp_path, capsys):
    nnb = tmp_path / "mlp.nnb"
    nnb.write_bytes(format2.to_bytes(mlp))
    err = _one_line_error(*_cli(["export", str(nnb), "--format", "tflite", "--name", "m",
                                 "--out", str(tmp_path), "--samples", "3"], capsys))
    assert "--samples" in err
