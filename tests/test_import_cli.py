"""`piconn import`: a .tflite file becomes NAME.py + NAME.nnb (format version 2), with a
table of operators; corrupt and unsupported files give one clean error line."""

from __future__ import annotations

import json
import os
import runpy
from pathlib import Path

import numpy as np
import pytest
from test_tflite_errors import conv, one_op

from piconn import commands, format2, int8_ops
from piconn.tflite import import_tflite

MODELS_DIR = Path(os.environ.get("PICONN_MLPERF_TINY")
                  or Path(__file__).resolve().parents[2] / "shared" / "models" / "mlperf-tiny")
KWS = MODELS_DIR / "kws_ref_model.tflite"


def run(argv: list[str], capsys) -> tuple[int, str, str]:
    try:
        code = commands.main(argv)
    except SystemExit as e:
        code = e.code
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def tiny(tmp_path) -> Path:
    path = tmp_path / "tiny-conv.tflite"
    path.write_bytes(conv())
    return path


def test_import_writes_module_and_nnb(tiny, tmp_path, capsys):
    out_dir = tmp_path / "out"
    code, out, err = run(["import", str(tiny), "--out", str(out_dir), "--json"], capsys)
    assert code == 0, err
    result = json.loads(out)
    assert result["name"] == "tiny_conv"  # from the file name, '-' made an identifier
    blob = (out_dir / "tiny_conv.nnb").read_bytes()
    assert result["bytes"] == len(blob)
    model = format2.from_bytes(blob)  # a valid version-2 file
    graph = import_tflite(tiny)
    assert model.graph.macs() == graph.macs() == result["macs"] == 5 * 5 * 3 * 3 * 3 * 2
    assert [r["op"] for r in result["operators"]] == ["CONV_2D"]
    assert result["operators"][0]["output"] == [1, 5, 5, 3]
    module = runpy.run_path(str(out_dir / "tiny_conv.py"))
    assert module["MODEL"] == blob
    assert module["INPUT_SHAPE"] == (1, 5, 5, 2) and module["OUTPUT_SHAPE"] == (1, 5, 5, 3)
    assert module["INPUT_ZERO_POINT"] == 0 and module["KIND"] == "int8"


def test_import_table_text(tiny, tmp_path, capsys):
    code, out, _ = run(["import", str(tiny), "--name", "t", "--out", str(tmp_path)], capsys)
    assert code == 0
    assert "CONV_2D" in out and "arena" in out and "imported tiny-conv.tflite as t" in out


@pytest.mark.skipif(not KWS.is_file(), reason=f"MLPerf Tiny models not found in {MODELS_DIR}")
def test_import_kws_matches_reference(tmp_path, capsys):
    code, out, err = run(["import", str(KWS), "--name", "kws", "--out", str(tmp_path),
                          "--json"], capsys)
    assert code == 0, err
    result = json.loads(out)
    assert result["macs"] == 2_656_768 and len(result["operators"]) == 13
    assert result["arena_bytes"] == format2.from_bytes(
        (tmp_path / "kws.nnb").read_bytes()).arena_size
    graph = import_tflite(KWS)
    assert result["arena_bytes"] <= sum(graph.tensors[i].nbytes for i in graph.activations())
    assert int8_ops.run(graph, np.zeros((1, 49, 10, 1), np.int8)).shape == (1, 12)


@pytest.mark.parametrize("content, message", [
    (b"", "corrupt .tflite"),
    (b"\0" * 64, "corrupt .tflite"),
])
def test_corrupt_file_is_one_line(tmp_path, capsys, content, message):
    bad = tmp_path / "bad.tflite"
    bad.write_bytes(content)
    code, _out, err = run(["import", str(bad), "--out", str(tmp_path)], capsys)
    assert code == 1 and err.startswith("piconn import: error:") and "Traceback" not in err
    assert not (tmp_path / "bad.nnb").exists()


def test_truncated_model_is_refused(tmp_path, capsys, tiny):
    data = tiny.read_bytes()
    bad = tmp_path / "cut.tflite"
    bad.write_bytes(data[: len(data) // 2])
    code, _, err = run(["import", str(bad), "--out", str(tmp_path)], capsys)
    assert code == 1 and err.count("\n") == 1 and "piconn import: error:" in err


def test_unsupported_operator_is_named(tmp_path, capsys):
    bad = tmp_path / "mul.tflite"
    bad.write_bytes(one_op("MUL", options="MulOptions"))
    code, _, err = run(["import", str(bad), "--out", str(tmp_path)], capsys)
    assert code == 1 and "operator 0" in err and "MUL" in err and "FULLY_CONNECTED" in err


def test_bad_name(tiny, tmp_path, capsys):
    code, _, err = run(["import", str(tiny), "--name", "class", "--out", str(tmp_path)], capsys)
    assert code == 1 and "not a valid Python module name" in err


def test_missing_file(tmp_path, capsys):
    code, _, err = run(["import", str(tmp_path / "none.tflite"), "--out", str(tmp_path)], capsys)
    assert code == 1 and "none.tflite" in err


def test_export_reads_version2(tiny, tmp_path, capsys):
    """`piconn export` of a version-2 .nnb writes the same bytes as a module."""
    code, _, err = run(["import", str(tiny), "--name", "a", "--out", str(tmp_path)], capsys)
    assert code == 0, err
    code, out, err = run(["export", str(tmp_path / "a.nnb"), "--name", "b", "--out",
                          str(tmp_path / "x"), "--json"], capsys)
    assert code == 0, err
    assert json.loads(out)["kind"] == "int8"
    assert (tmp_path / "x" / "b.nnb").read_bytes() == (tmp_path / "a.nnb").read_bytes()
    module = runpy.run_path(str(tmp_path / "x" / "b.py"))
    assert module["MODEL"] == (tmp_path / "a.nnb").read_bytes()
    assert "`piconn export` from a.nnb" in module["__doc__"]
    code, _, err = run(["export", str(tmp_path / "a.nnb"), "--name", "c", "--out",
                        str(tmp_path), "--samples", "2"], capsys)
    assert code == 1 and "--samples" in err
