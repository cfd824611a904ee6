"""The piconn command line: JSON output, exit codes, clean errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from piconn import commands, nn, train
from piconn.commands import common


def run(argv: list[str], capsys) -> tuple[int, str, str]:
    try:
        code = commands.main(argv)
    except SystemExit as e:  # argparse errors
        code = e.code
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def small_model(tmp_path_factory, mnist):
    """A quickly trained 784-32-10 model saved to a file."""
    x_train, y_train, _, _ = mnist
    model = train.build_mlp([784, 32, 10]).init(0)
    train.fit(model, x_train[:5000], y_train[:5000], optimizer=nn.Adam(model.params(), 2e-3),
              epochs=1, progress=False)
    path = tmp_path_factory.mktemp("cli") / "small.npz"
    nn.save(model, path, {"kind": "float", "input_scale": 1 / 255})
    return path, model


def test_eval_json(small_model, mnist, capsys):
    path, model = small_model
    code, out, _ = run(["eval", str(path), "--json"], capsys)
    assert code == 0
    result = json.loads(out)  # exactly one JSON object
    assert result["accuracy"] == train.evaluate(model, mnist[2], mnist[3])
    assert result["n"] == 10000
    assert result["params"] == 784 * 32 + 32 + 32 * 10 + 10
    assert result["bytes"] == 4 * result["params"]


def test_eval_human(small_model, capsys):
    code, out, _ = run(["eval", str(small_model[0])], capsys)
    assert code == 0 and "test accuracy" in out and "%" in out


def test_train_json_saves_a_loadable_model(tmp_path, mnist, capsys):
    out_file = tmp_path / "t.npz"
    code, out, err = run(["train", "mnist", "--arch", "784-8-10", "--epochs", "1",
                          "--act", "tanh", "--out", str(out_file), "--json"], capsys)
    assert code == 0, err
    result = json.loads(out)
    assert result["out"] == str(out_file) and result["kind"] == "float"
    assert len(result["history"]) == 1
    model, meta = nn.load(out_file)
    assert isinstance(model[1], nn.Tanh)
    assert meta["input_scale"] == 1 / 255 and meta["arch"] == [784, 8, 10]
    assert meta["test_accuracy"] == result["accuracy"] == train.evaluate(model, *mnist[2:])
    assert result["accuracy"] > 0.5  # one epoch of 8 hidden units learns something
    assert "epoch 1/1" in err and "acc" in err  # progress on stderr


@pytest.mark.parametrize("argv", [
    ["train", "mnist", "--arch", "784-x-10", "--out", "m.npz"],
    ["train", "mnist", "--arch", "784-16-11", "--out", "m.npz"],
    ["train", "mnist", "--epochs", "0", "--out", "m.npz"],
    ["train", "mnist", "--lr", "-1", "--out", "m.npz"],
    ["train", "mnist", "--kind", "bogus", "--out", "m.npz"],
    ["train", "mnist"],
    ["train", "cifar", "--out", "m.npz"],
    ["eval"],
    ["frobnicate"],
    [],
])
def test_bad_arguments_exit_2_without_traceback(argv, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, out, err = run(argv, capsys)
    assert code == 2
    assert "usage:" in err and "error:" in err
    assert "Traceback" not in err and out == ""
    assert not (tmp_path / "m.npz").exists()


def test_missing_data_is_a_clear_error(small_model, tmp_path, capsys):
    nowhere = tmp_path / "nowhere"
    for argv in (["eval", str(small_model[0]), "--data", str(nowhere)],
                 ["train", "mnist", "--data", str(nowhere), "--out", str(tmp_path / "m.npz")]):
        code, out, err = run(argv, capsys)
        assert code == 1
        assert "MNIST not found" in err and str(nowhere) in err
        assert "Traceback" not in err and out == ""
        code, out, err = run([*argv, "--json"], capsys)
        assert code == 1 and "error" in json.loads(out)


def test_train_refuses_missing_output_folder_before_training(tmp_path, capsys):
    code, out, err = run(["train", "mnist", "--out", str(tmp_path / "no" / "m.npz")], capsys)
    assert code == 1 and "output folder does not exist" in err and out == ""


def test_eval_of_missing_or_bad_model_file(tmp_path, capsys):
    code, _, err = run(["eval", str(tmp_path / "none.npz")], capsys)
    assert code == 1 and "no such model file" in err
    junk = tmp_path / "junk.npz"
    junk.write_bytes(b"junk")
    code, _, err = run(["eval", str(junk)], capsys)
    assert code == 1 and "not a piconn model" in err and "Traceback" not in err


def test_train_kinds_are_extensible(monkeypatch, capsys, tmp_path, make_idx_set):
    seen = {}

    def fake(args, x, y):
        seen["n"], seen["epochs"] = len(x), args.epochs
        return train.build_mlp([784, 10]).init(0), [], {"extra": 1}

    kind = common.TrainKind("fake", fake, "test kind", defaults={"epochs": 7})
    monkeypatch.setitem(common.TRAIN_KINDS, "fake", kind)
    make_idx_set(tmp_path / "tiny", n_train=5, n_test=3)
    out_file = tmp_path / "f.npz"
    code, out, err = run(["train", "mnist", "--kind", "fake", "--out", str(out_file),
                          "--data", str(tmp_path / "tiny"), "--json"], capsys)
    assert code == 0, err
    assert seen == {"n": 5, "epochs": 7}
    assert json.loads(out)["n"] == 3
    _, meta = nn.load(out_file)
    assert meta["kind"] == "fake" and meta["extra"] == 1


def test_python_dash_m_runs_as_a_process(tmp_path):
    env = {**os.environ, "PYTHONPATH": ""}
    bad = subprocess.run([sys.executable, "-m", "piconn", "train", "mnist", "--epochs", "x",
                          "--out", str(tmp_path / "m.npz")],
                         capture_output=True, text=True, env=env, timeout=60, check=False)
    assert bad.returncode == 2 and "invalid" not in bad.stdout
    assert "--epochs" in bad.stderr and "Traceback" not in bad.stderr
    ok = subprocess.run([sys.executable, "-m", "piconn", "--version"], capture_output=True,
                        text=True, env=env, timeout=60, check=False)
    assert ok.returncode == 0 and "piconn" in ok.stdout


def test_model_stats_counts_masked_weights(rng):
    model = train.build_mlp([6, 4, 2]).init(0)
    model[0].mask = rng.random((4, 6)) > 0.5
    stats = common.model_stats(model)
    assert stats["params"] == 6 * 4 + 4 + 4 * 2 + 2
    assert stats["nonzero"] == int(model[0].mask.sum()) + 4 * 2  # biases are zero at init


def test_train_cnn(capsys, tmp_path, make_idx_set):
    make_idx_set(tmp_path / "tiny", n_train=20, n_test=4)
    out_file = tmp_path / "c.npz"
    code, out, err = run(["train", "mnist", "--model", "cnn", "--arch", "c4k3v-p2-f10",
                          "--epochs", "1", "--out", str(out_file), "--data",
                          str(tmp_path / "tiny"), "--json", "-q"], capsys)
    assert code == 0, err
    assert json.loads(out)["n"] == 4
    model, meta = nn.load(out_file)
    assert meta["model"] == "cnn" and meta["arch"] == "c4k3v-p2-f10"
    assert model.forward(np.zeros((2, 784))).shape == (2, 10)


@pytest.mark.parametrize("argv, message", [
    (["--model", "cnn", "--arch", "c4k3v-p2-f12"], "must end with 10 outputs"),
    (["--model", "cnn", "--arch", "zz"], "--arch: CNN spec 'zz'"),
    (["--model", "cnn", "--kind", "xnor", "--arch", "b8k3-f10"], "--arch: XNOR CNN spec"),
    (["--arch", "784-abc"], "expected layer sizes"),
])
def test_train_arch_errors(capsys, tmp_path, argv, message):
    code, _, err = run(["train", "mnist", *argv, "--out", str(tmp_path / "x.npz")], capsys)
    assert code in (1, 2) and message in err and "Traceback" not in err
