"""The float32 operators on the device (MicroPython): every tier's outputs are the host
reference's (`int8_ops.run` -> `float_ops`), byte for byte, softmax, logistic and tanh
included (the same exp_f32 everywhere). Float CNNs of piconn.float_graph and small float
.tflite models; also a mixed model (float -> QUANTIZE -> int8 -> DEQUANTIZE -> float)."""

from __future__ import annotations

import mpy
import numpy as np
import pytest

pytest.importorskip("tflite", reason="PyPI tflite (test extra) builds the models")

from test_graph_device import RT, expected_tiers, random_inputs, reference, run_on_device
from tflite_build import ModelBuilder

from piconn import conv, float_graph, float_ops, format2
from piconn import graph as g
from piconn.tflite import import_tflite

pytestmark = pytest.mark.device
SAME, VALID = 0, 1
NONE, RELU, RELU6 = 0, 1, 3


def every_float_kind() -> g.Graph:
    """PAD, CONV_2D (SAME, stride 2, RELU), DEPTHWISE_CONV_2D (multiplier 2, VALID, RELU6,
    no bias), AVERAGE_POOL_2D (SAME), MAX_POOL_2D (RELU), ADD (broadcast constant),
    MEAN (keep_dims), RESHAPE, FULLY_CONNECTED, LOGISTIC, TANH, SOFTMAX; all float32."""
    rng = np.random.default_rng(31)
    b = ModelBuilder()
    x = b.tensor([1, 9, 9, 3], "float32")
    pads = b.tensor([4, 2], "int32", data=[[0, 0], [1, 0], [0, 1], [0, 0]])
    xp = b.tensor([1, 10, 10, 3], "float32")
    w1 = b.tensor([6, 3, 3, 3], "float32", data=rng.normal(0, 0.5, (6, 3, 3, 3)))
    b1 = b.tensor([6], "float32", data=rng.normal(0, 0.2, 6))
    c1 = b.tensor([1, 5, 5, 6], "float32")
    w2 = b.tensor([1, 3, 3, 12], "float32", data=rng.normal(0, 0.5, (1, 3, 3, 12)))
    d = b.tensor([1, 3, 3, 12], "float32")
    a = b.tensor([1, 3, 3, 12], "float32")
    m = b.tensor([1, 2, 2, 12], "float32")
    k = b.tensor([12], "float32", data=rng.normal(0, 1, 12))
    ad = b.tensor([1, 2, 2, 12], "float32")
    axes = b.tensor([2], "int32", data=[1, 2])
    me = b.tensor([1, 1, 1, 12], "float32")
    shape = b.tensor([2], "int32", data=[1, 12])
    r = b.tensor([1, 12], "float32")
    w4 = b.tensor([10, 12], "float32", data=rng.normal(0, 0.5, (10, 12)))
    b4 = b.tensor([10], "float32", data=rng.normal(0, 0.2, 10))
    f = b.tensor([1, 10], "float32")
    lg = b.tensor([1, 10], "float32")
    th = b.tensor([1, 10], "float32")
    s = b.tensor([1, 10], "float32")
    b.op("PAD", [x, pads], [xp])
    b.op("CONV_2D", [xp, w1, b1], [c1], "Conv2DOptions", Padding=SAME, StrideW=2, StrideH=2,
         FusedActivationFunction=RELU)
    b.op("DEPTHWISE_CONV_2D", [c1, w2, -1], [d], "DepthwiseConv2DOptions", Padding=VALID,
         StrideW=1, StrideH=1, DepthMultiplier=2, FusedActivationFunction=RELU6)
    b.op("AVERAGE_POOL_2D", [d], [a], "Pool2DOptions", Padding=SAME, StrideW=1, StrideH=1,
         FilterWidth=3, FilterHeight=3)
    b.op("MAX_POOL_2D", [a], [m], "Pool2DOptions", Padding=VALID, StrideW=1, StrideH=1,
         FilterWidth=2, FilterHeight=2, FusedActivationFunction=RELU)
    b.op("ADD", [m, k], [ad], "AddOptions")
    b.op("MEAN", [ad, axes], [me], "ReducerOptions", KeepDims=True)
    b.op("RESHAPE", [me, shape], [r], "ReshapeOptions", NewShape=[1, 12])
    b.op("FULLY_CONNECTED", [r, w4, b4], [f], "FullyConnectedOptions")
    b.op("LOGISTIC", [f], [lg])
    b.op("TANH", [lg], [th])
    b.op("SOFTMAX", [th], [s], "SoftmaxOptions", Beta=3.0)
    return import_tflite(b.build([x], [s]))


def wide_exp() -> g.Graph:
    """LOGISTIC and TANH on a [1, 64] input (both cutoffs of logistic, tanh's saturation),
    SOFTMAX over rows of 8 with beta 0.5."""
    b = ModelBuilder()
    x = b.tensor([1, 64], "float32")
    lg = b.tensor([1, 64], "float32")
    th = b.tensor([1, 64], "float32")
    shape = b.tensor([2], "int32", data=[8, 8])
    r = b.tensor([8, 8], "float32")
    s = b.tensor([8, 8], "float32")
    b.op("TANH", [x], [th])
    b.op("RESHAPE", [th, shape], [r], "ReshapeOptions", NewShape=[8, 8])
    b.op("SOFTMAX", [r], [s], "SoftmaxOptions", Beta=0.5)
    b.op("LOGISTIC", [x], [lg])
    return import_tflite(b.build([x], [s, lg]))


def mixed() -> g.Graph:
    rng = np.random.default_rng(3)
    b = ModelBuilder()
    x = b.tensor([1, 6, 6, 2], "float32")
    w = b.tensor([4, 3, 3, 2], "float32", data=rng.normal(0, 0.5, (4, 3, 3, 2)))
    c = b.tensor([1, 4, 4, 4], "float32")
    shape = b.tensor([2], "int32", data=[1, 64])
    cf = b.tensor([1, 64], "float32")
    cq = b.tensor([1, 64], scale=0.05, zero=-3)
    wq = b.tensor([10, 64], scale=[0.01], zero=[0], data=rng.integers(-127, 128, (10, 64)))
    yq = b.tensor([1, 10], scale=0.1, zero=2)
    yf = b.tensor([1, 10], "float32")
    out = b.tensor([1, 10], "float32")
    b.op("CONV_2D", [x, w, -1], [c], "Conv2DOptions", Padding=VALID, StrideW=1, StrideH=1,
         FusedActivationFunction=RELU)
    b.op("RESHAPE", [c, shape], [cf], "ReshapeOptions", NewShape=[1, 64])
    b.op("QUANTIZE", [cf], [cq])
    b.op("FULLY_CONNECTED", [cq, wq, -1], [yq], "FullyConnectedOptions")
    b.op("DEQUANTIZE", [yq], [yf])
    b.op("SOFTMAX", [yf], [out], "SoftmaxOptions", Beta=1.0)
    return import_tflite(b.build([x], [out]))


def float_cnn() -> g.Graph:
    """piconn's SMALL_CNN (batch norms folded), randomly initialized, as a float32 graph."""
    model = conv.build_cnn(conv.SMALL_CNN).init(4).eval()
    return float_graph.float_graph(model)


GRAPHS = {"every_float_kind": every_float_kind, "wide_exp": wide_exp, "mixed": mixed,
          "float_cnn": float_cnn}


def _inputs(graph: g.Graph, n: int, seed: int) -> list[list[np.ndarray]]:
    out = random_inputs(graph, n, seed)
    rng = np.random.default_rng(seed)
    x = out[-1][0]  # zeros of both signs (the kernels skip zero inputs)
    zeros = np.where(x > 0, np.float32(-0.0), np.float32(0.0))
    out[-1][0] = np.where(rng.random(x.shape) < 0.5, zeros, x).astype(np.float32)
    if graph.tensors[graph.inputs[0]].shape == (1, 64):  # wide_exp: the cutoffs
        out[0] = [np.linspace(-40, 40, 64, dtype=np.float32).reshape(1, 64)]
    return out


def check_agreement(graph: g.Graph, runner, tier: str, result, inputs) -> None:
    """Outputs and predictions equal the reference's; under viper the float32 operators
    run in plain Python (viper has no float arithmetic), in C under c and natmod."""
    tiers, ys, preds = result
    assert len(tiers) == len(graph.operators)
    assert set(tiers) <= expected_tiers(runner, tier)
    floats = [t for k, t in enumerate(tiers) if float_ops.is_float(graph, k)
              and graph.operators[k].kind != g.RESHAPE]  # (a RESHAPE copies no bytes)
    assert floats
    if tier == "viper":
        assert set(floats) == {"python"}
    elif expected_tiers(runner, tier) == {tier}:  # c, natmod: graph_run has them all
        assert set(floats) == {tier}
    for xs, got, pred in zip(inputs, ys, preds, strict=True):
        want = reference(graph, xs)
        assert got == [w.tobytes() for w in want]
        assert pred == int(np.argmax(want[0].reshape(-1)))


@pytest.mark.parametrize("rt", RT, ids=lambda p: f"{p[0].name}-{p[1]}" if p else "none")
def test_float_graphs_bit_exact(rt, tmp_path):
    """Every float operator and option, the float CNN and the mixed model: the device's
    outputs are the host reference's, byte for byte, in every tier."""
    runner, tier = rt
    graphs = {k: f() for k, f in GRAPHS.items()}
    cases = [(format2.to_bytes(gr), _inputs(gr, 1 if name == "float_cnn" else 3, seed))
             for seed, (name, gr) in enumerate(graphs.items())]
    results = run_on_device(runner, tier, cases, tmp_path, timeout=900)
    for gr, (_, inputs), result in zip(graphs.values(), cases, results, strict=True):
        check_agreement(gr, runner, tier, result, inputs)


@pytest.mark.parametrize("runner", mpy.runners() or [pytest.param(
    None, marks=pytest.mark.skip(reason=mpy.why_none()))], ids=str)
def test_float_refusals_and_summary(runner, tmp_path):
    """A float32 weight that is NaN is refused at load with the host's reason; summary()
    says where float operators run."""
    graph = every_float_kind()
    blob = bytearray(format2.to_bytes(graph))
    w = next(t for t in graph.tensors if t.is_constant and t.dtype == g.FLOAT32)
    at = blob.index(w.data.astype("<f4").tobytes())
    blob[at:at + 4] = np.float32(np.nan).tobytes()
    import zlib
    blob[12:16] = (zlib.crc32(bytes(blob[16:])) & 0xFFFFFFFF).to_bytes(4, "little")
    with pytest.raises(format2.FormatError, match="NaN or infinity"):
        format2.from_bytes(bytes(blob))
    (tmp_path / "bad.nnb").write_bytes(bytes(blob))
    (tmp_path / "good.nnb").write_bytes(format2.to_bytes(graph))
    out = runner.run(f"""
import nn
try:
    nn.load(open({str(tmp_path / 'bad.nnb')!r}, 'rb').read())
except ValueError as e:
    print('refused', e)
m = nn.load(open({str(tmp_path / 'good.nnb')!r}, 'rb').read())
print(m.summary())
""", dirs=(tmp_path,))
    assert "refused" in out and "NaN or infinity" in out
    assert "viper has no float arithmetic" in out


def test_natmod_on_stock_unix(tmp_path):
    """The x64 native module (make natmod) on the stock unix port runs every float32
    operator (tier natmod), byte for byte the host reference's."""
    import subprocess

    from test_graph_device import RUN
    from test_natmod import STOCK_UNIX, nn_package

    natmod = mpy.ROOT / "build" / "natmod" / "x64" / "_nn_c.mpy"
    for f, how in ((STOCK_UNIX, "make firmware-stock BOARD=UNIX"), (natmod, "make natmod")):
        if not f.is_file():
            pytest.skip(f"no {f} ({how})")
    lib = nn_package(tmp_path / "lib", natmod)
    graphs = {k: f() for k, f in GRAPHS.items()}
    cases = [(format2.to_bytes(gr), _inputs(gr, 2, seed))
             for seed, gr in enumerate(graphs.values())]
    path = tmp_path / "cases.bin"
    with open(path, "wb") as f:
        f.write(b"%d\n" % len(cases))
        for blob, inputs in cases:
            f.write(b"%d\n" % len(blob) + blob + b"%d\n" % len(inputs))
            for xs in inputs:
                raw = b"".join(np.ascontiguousarray(x).tobytes() for x in xs)
                f.write(b"%d\n" % len(raw) + raw)
    script = tmp_path / "run.py"
    script.write_text(RUN.format(tier="natmod", path=str(path)))
    p = subprocess.run([str(STOCK_UNIX), str(script)], capture_output=True, text=True,
                       timeout=600, env={"MICROPYPATH": str(lib)}, check=False)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]
    lines = p.stdout.splitlines()
    for gr, (_, inputs) in zip(graphs.values(), cases, strict=True):
        tiers = lines.pop(0).split()[1:]
        assert set(tiers) == {"natmod"}
        for xs in inputs:
            words = lines.pop(0).split()
            want = reference(gr, xs)
            assert [bytes.fromhex(h) for h in words[1:-1]] == [w.tobytes() for w in want]


PICO_FLOAT = """
import nn, array, binascii
m = nn.load({blob!r})
xs = {inputs!r}
for be in [b for b in ('c', 'python') if b in nn.backends()]:
    nn.use_backend(be)
    for raw in xs:
        y = m.forward(array.array('f', raw))
        ys = y if type(y) is tuple else (y,)
        print('Y', be, ' '.join(m.tiers()), ' '.join(binascii.hexlify(bytes(v)).decode()
                                                     for v in ys))
"""


def test_virtual_pico(tmp_path):
    """On the emulated RP2040 (float32 in software: the boot ROM's routines for C, the
    port's float32 objects for Python) the float graphs give the host reference's bits in
    the c and python tiers."""
    uf2 = mpy.ROOT / "build" / "PICO" / "firmware.uf2"
    if not uf2.is_file():
        pytest.skip("no build/PICO/firmware.uf2 (make firmware BOARD=PICO)")
    pytest.importorskip("rp2040py", reason="rp2040py (the virtual Pico) is not installed")
    from vpico import VirtualPico

    graphs = [every_float_kind(), wide_exp()]
    cases, want = [], []
    for seed, gr in enumerate(graphs):
        inputs = [xs[0] for xs in _inputs(gr, 2, seed)]
        cases.append((format2.to_bytes(gr), [x.tobytes() for x in inputs]))
        want.append([" ".join(w.tobytes().hex() for w in reference(gr, [x])) for x in inputs])
    out = []
    with VirtualPico(uf2) as pico:
        for blob, inputs in cases:  # (one script per graph: a shorter paste)
            out += pico.run_script(PICO_FLOAT.format(blob=blob, inputs=inputs),
                                   timeout=1800).splitlines()
    rows = [line.split(" ", 2) for line in out if line.startswith("Y ")]
    backends = sorted({r[1] for r in rows})
    assert "c" in backends and "python" in backends
    k = 0
    for gr, ws in zip(graphs, want, strict=True):
        for be in ("c", "python"):
            for w in ws:
                _, got_be, rest = rows[k]
                k += 1
                tiers, got = rest.split()[:len(gr.operators)], rest.split()[len(gr.operators):]
                assert got_be == be
                assert {t for t, op in zip(tiers, gr.operators, strict=True)
                        if op.kind != g.RESHAPE} == {be}
                assert " ".join(got) == w, (be, tiers)
    assert k == len(rows)
