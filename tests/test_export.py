"""`piconn export`: the module + .nnb it writes, determinism, samples, errors."""

from __future__ import annotations

import importlib.util
import json
import struct
import zlib

import numpy as np
import pytest

from piconn import commands, export, lower, nn, xnor_cnn
from piconn import format as fmt


def _module(path) -> dict:
    """Import the generated module (plain Python) from its file; its namespace."""
    spec = importlib.util.spec_from_file_location(f"exported_{path.stem}", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return vars(mod)


def test_export_bytes_module(device_models, tmp_path):
    dm, blob = device_models["uint8"]
    mod, nnb = export.export_bytes(blob, dm, "m_q8", tmp_path)
    assert nnb.read_bytes() == blob
    ns = _module(mod)
    assert ns["MODEL"] == blob
    assert ns["NAME"] == "m_q8" and ns["KIND"] == "uint8"
    assert (ns["INPUT_SIZE"], ns["INPUT_DTYPE"]) == (dm.input_size, "u8")
    assert (ns["OUTPUT_SIZE"], ns["OUTPUT_DTYPE"]) == (10, "i32")
    assert ns["OUTPUT_SCALE"] == float(np.float32(dm.output_scale))
    assert ns["CRC32"] == zlib.crc32(blob) and ns["MODEL_BYTES"] == len(blob)
    assert ns["CLASSES"] == tuple(str(i) for i in range(10))
    # one bytes constant: a single MODEL assignment of adjacent literals
    assert mod.read_text().count("MODEL = (") == 1


def test_binary_cnn_module_says_xnor(tmp_path):
    """A binary CNN's module (bits tensors between an int8 stem and int32 logits) has
    KIND 'xnor', as the XNOR MLP's; an int8 graph's stays 'int8' (test_import_cli)."""
    model = xnor_cnn.freeze_stem(xnor_cnn.build_xnor_cnn("c4k3s2-b8k3-f10", seed=1)).eval()
    written = export.export_graph(xnor_cnn.to_graph(model), "m_bcnn", tmp_path)
    ns = _module(tmp_path / "m_bcnn.py")
    assert ns["KIND"] == "xnor" and ns["INPUT_DTYPE"] == "int8"
    assert ns["__doc__"].startswith("piconn model m_bcnn: xnor graph,")
    assert len(ns["MODEL"]) == written["bytes"]


def _trained(tmp_path):
    rng = np.random.default_rng(3)
    model = nn.Sequential(nn.Linear(20, 8), nn.ReLU(), nn.Linear(8, 4))
    for layer in model.layers:
        if isinstance(layer, nn.Linear):
            layer.weight.data[...] = rng.normal(0, 0.3, layer.weight.data.shape)
            layer.bias.data[...] = rng.normal(0, 0.1, layer.bias.data.shape)
    meta = {"input_scale": 1 / 255, "classes": ["a", "b", "c", "d"]}
    path = nn.save(model, tmp_path / "tiny.npz", meta)
    return path, model, meta


def test_export_npz_deterministic(tmp_path):
    path, model, meta = _trained(tmp_path)
    r1 = export.export(path, "tiny", tmp_path / "a")
    r2 = export.export(path, "tiny", tmp_path / "b")
    for suffix in (".py", ".nnb"):
        a = (tmp_path / "a" / f"tiny{suffix}").read_bytes()
        assert a == (tmp_path / "b" / f"tiny{suffix}").read_bytes()
    blob = (tmp_path / "a" / "tiny.nnb").read_bytes()
    assert blob == fmt.to_bytes(lower.to_device(model, meta))
    assert r1 == {**r2, "module": r1["module"], "nnb": r1["nnb"]}
    assert r1["bytes"] == len(blob) and r1["kind"] == "float"
    ns = _module(tmp_path / "a" / "tiny.py")
    assert ns["CLASSES"] == ("a", "b", "c", "d") and ns["INPUT_DTYPE"] == "u8"


def test_samples_module(tmp_path, make_idx_set):
    arrays = make_idx_set(tmp_path / "data", n_test=5)
    path, _, _ = _trained(tmp_path)
    # a 20-input model cannot take 28x28 digits
    with pytest.raises(ValueError, match="784"):
        export.export(path, "tiny", tmp_path / "out", samples=3, data_path=str(tmp_path / "data"))
    (tmp_path / "big.nnb").write_bytes(_with_input(784))
    r = export.export(tmp_path / "big.nnb", "big", tmp_path / "out", samples=3,
                      data_path=str(tmp_path / "data"))
    ns = _module(tmp_path / "out" / "mnist_samples.py")
    assert r["samples"].endswith("mnist_samples.py") and r["n_samples"] == 3
    assert ns["COUNT"] == 3 and ns["SIZE"] == 784
    assert ns["LABELS"] == arrays["test_labels"][:3].tobytes()
    assert ns["IMAGES"] == arrays["test_images"][:3].tobytes()
    before = (tmp_path / "out" / "mnist_samples.py").read_bytes()
    export.export(tmp_path / "big.nnb", "big2", tmp_path / "out", samples=3,
                  data_path=str(tmp_path / "data"))
    assert (tmp_path / "out" / "mnist_samples.py").read_bytes() == before  # shared, same bytes
    with pytest.raises(ValueError, match="test set has 5"):
        export.export(tmp_path / "big.nnb", "big", tmp_path / "out", samples=6,
                      data_path=str(tmp_path / "data"))


def _with_input(n_in: int) -> bytes:
    from piconn import ir

    rng = np.random.default_rng(0)
    dm = ir.DeviceModel([ir.DenseF32(rng.normal(0, 0.01, (10, n_in)).astype(np.float32),
                                     np.zeros(10, np.float32), "none", "u8")], "float")
    return fmt.to_bytes(dm)


@pytest.mark.parametrize("name", ["", "1abc", "with-dash", "class", "nn", "mnist_samples"])
def test_bad_names(name, device_models, tmp_path):
    dm, blob = device_models["xnor"]
    with pytest.raises(ValueError, match="name"):
        export.export_bytes(blob, dm, name, tmp_path)
    assert not list(tmp_path.iterdir())


def test_refuses_what_the_device_refuses(device_models, tmp_path):
    """A model the device would refuse (here: a bias that can overflow int32) is refused by
    the host reader too, and not written."""
    dm, blob = device_models["uint8"]
    b = bytearray(blob)
    off = struct.unpack_from("<I", b, fmt.HEADER_SIZE + 16 + 8)[0]
    struct.pack_into("<i", b, off, 2**31 - 10)
    struct.pack_into("<I", b, 12, zlib.crc32(bytes(b[16:])) & 0xFFFFFFFF)
    with pytest.raises(ValueError, match="int32"):
        fmt.from_bytes(bytes(b))  # one place for the rules: the host reader refuses it
    with pytest.raises(ValueError, match="int32"):
        export.export_bytes(bytes(b), dm, "bad", tmp_path)
    assert not (tmp_path / "bad.py").exists()


def test_cli_export(device_models, tmp_path, capsys):
    blob = device_models["sparse_uint8"][1]
    (tmp_path / "m.nnb").write_bytes(blob)
    code = commands.main(["export", str(tmp_path / "m.nnb"), "--name", "m_sp", "--out",
                          str(tmp_path / "out"), "--json"])
    assert code == 0
    out = json.loads(capsys.readouterr().out)
    assert out["command"] == "export" and out["kind"] == "sparse" and out["bytes"] == len(blob)
    assert (tmp_path / "out" / "m_sp.nnb").read_bytes() == blob
    # errors: exit 1 with a message, one JSON object with --json
    (tmp_path / "junk.nnb").write_bytes(b"PCNN" + bytes(60))
    assert commands.main(["export", str(tmp_path / "junk.nnb"), "--name", "j", "--out",
                          str(tmp_path / "out")]) == 1
    assert "error" in capsys.readouterr().err
    assert commands.main(["export", str(tmp_path / "nope.nnb"), "--name", "j", "--out",
                          str(tmp_path / "out"), "--json"]) == 1
    assert "error" in json.loads(capsys.readouterr().out)
