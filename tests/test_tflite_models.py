"""The four MLPerf Tiny int8 reference models: import, MACs, memory plan, and bit-exactness.

The reference (`int8_ops.run`) must equal TFLite Micro's interpreter (PyPI `tflite-micro`)
on every output byte for random int8 inputs: PICONN_TFLITE_INPUTS of them per model
(default 25; `tools/tflite_agree.py` runs the full 200 and reports), plus every
intermediate tensor for a few inputs.

The models are MLPerf Tiny's closed-division reference models (github.com/mlcommons/tiny,
benchmark/training/*/trained_models/), found in $PICONN_MLPERF_TINY.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import pytest

from piconn import graph as g
from piconn import int8_ops
from piconn.tflite import import_tflite

runtime = pytest.importorskip("tflite_micro.python.tflite_micro.runtime",
                              reason="PyPI tflite-micro (test extra) is the oracle")

# The MLPerf Tiny models: $PICONN_MLPERF_TINY, else ../shared/models/mlperf-tiny beside the repository.
MODELS_DIR = Path(os.environ.get("PICONN_MLPERF_TINY")
                  or Path(__file__).resolve().parents[2] / "shared" / "models" / "mlperf-tiny")
N_INPUTS = int(os.environ.get("PICONN_TFLITE_INPUTS", "25"))

# file -> (MACs in millions as MLPerf Tiny publishes them, input shape, output shape)
MODELS = {
    "kws_ref_model.tflite": (2.66, (1, 49, 10, 1), (1, 12)),
    "vww_96_int8.tflite": (7.49, (1, 96, 96, 3), (1, 2)),
    "pretrainedResnet_quant.tflite": (12.5, (1, 32, 32, 3), (1, 10)),
    "ad01_int8.tflite": (0.26, (1, 640), (1, 640)),
}


def model_path(name: str) -> Path:
    path = MODELS_DIR / name
    if not path.is_file():
        pytest.skip(f"{path} not found: set PICONN_MLPERF_TINY to the folder holding MLPerf"
                    " Tiny's four int8 reference models")
    return path


def inputs(shape, n: int, seed: int) -> list[np.ndarray]:
    """n random int8 inputs; the first three are all -128, all 0 and all 127."""
    rng = np.random.default_rng(seed)
    fixed = [np.full(shape, v, dtype=np.int8) for v in (-128, 0, 127)]
    return (fixed + [rng.integers(-128, 128, size=shape, dtype=np.int8)
                     for _ in range(max(n - 3, 0))])[:n]


@pytest.fixture(scope="module", params=sorted(MODELS))
def model(request):
    path = model_path(request.param)
    return request.param, path, import_tflite(path)


def test_shapes_and_macs(model):
    name, _, graph = model
    macs_m, in_shape, out_shape = MODELS[name]
    assert graph.tensors[graph.inputs[0]].shape == in_shape
    assert graph.tensors[graph.outputs[0]].shape == out_shape
    assert round(graph.macs() / 1e6, 2) == pytest.approx(macs_m, abs=0.005)
    assert graph.name == Path(name).stem
    summary = graph.summary().splitlines()
    assert len(summary) == 1 + len(graph.operators)
    assert f"{graph.macs():,} MACs" in summary[0]


def test_agrees_with_tflite_micro(model):
    name, path, graph = model
    params = int8_ops.prepare(graph)
    it = runtime.Interpreter.from_file(str(path))
    outputs = set()
    for x in inputs(MODELS[name][1], N_INPUTS, seed=len(name)):
        it.set_input(x, 0)
        it.invoke()
        want = it.get_output(0)
        got = int8_ops.run(graph, x, params)
        assert got.dtype == np.int8
        np.testing.assert_array_equal(got, want)
        outputs.add(got.tobytes())
    assert len(outputs) > 1  # the inputs reach the output


def test_every_intermediate_tensor(model):
    name, path, graph = model
    it = runtime.Interpreter.from_file(
        str(path), intrepreter_config=runtime.InterpreterConfig.kPreserveAllTensors)
    for x in inputs(MODELS[name][1], 4, seed=99):
        it.set_input(x, 0)
        it.invoke()
        values = int8_ops.run(graph, x, keep=True)
        assert len(values) == len(graph.activations())
        for i, v in values.items():
            want = it.GetTensor(i, 0)["tensor_data"].reshape(v.shape)
            np.testing.assert_array_equal(v, want, err_msg=graph.tensors[i].name)


def tflm_head_bytes(path: Path, capfd) -> int:
    """TFLite Micro's planned (non-persistent) arena bytes, from print_allocations."""
    capfd.readouterr()
    runtime.Interpreter.from_file(str(path)).print_allocations()
    text = capfd.readouterr().err  # MicroPrintf writes to stderr
    return int(re.search(r"Arena allocation head (\d+) bytes", text).group(1))


def test_memory_plan(model, capfd):
    """No two tensors alive at the same time overlap; RESHAPE shares its input's bytes; the
    arena is at least the bytes alive at once, and no larger than TFLite Micro's plan."""
    _, path, graph = model
    plan = g.plan_memory(graph, align=16)
    assert plan.overlapping_pairs() == []
    live = max(sum(b.size for b in plan.buffers if b.first <= k <= b.last)
               for k in range(len(graph.operators)))
    assert live <= plan.arena_size <= sum(b.size for b in plan.buffers)
    for op in graph.operators:
        if op.kind == g.RESHAPE:
            assert plan.offsets[op.inputs[0]] == plan.offsets[op.outputs[0]]
    assert plan.arena_size <= tflm_head_bytes(path, capfd)
    for b in plan.buffers:
        assert b.offset % 16 == 0 and b.size % 16 == 0
