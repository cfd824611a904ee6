"""Shared fixtures. Keep this small; add fixtures that several test files need."""

from __future__ import annotations

import gzip
import sys
from collections.abc import Callable
from pathlib import Path

import piconn  # noqa: F401  first: it sets the BLAS thread count, which numpy reads on import

# isort: split
import numpy as np
import pytest

from piconn import data


@pytest.fixture(scope="session")
def mnist() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(x_train, y_train, x_test, y_test) uint8, from the usual places; no download."""
    try:
        return data.load_mnist(download=False)
    except data.DataNotFound as e:
        pytest.skip(f"MNIST not available: {e}")


@pytest.fixture
def xor() -> tuple[np.ndarray, np.ndarray]:
    """The four XOR inputs (4x2) and targets (4x1), float64."""
    x = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], dtype=np.float64)
    y = np.array([[0], [1], [1], [0]], dtype=np.float64)
    return x, y


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)


def _idx_bytes(arr: np.ndarray) -> bytes:
    head = bytes([0, 0, 0x08, arr.ndim]) + b"".join(d.to_bytes(4, "big") for d in arr.shape)
    return head + arr.astype(np.uint8).tobytes()


def write_idx_set(folder: Path, n_train: int = 6, n_test: int = 4, gz: bool = True,
                  seed: int = 0) -> dict[str, np.ndarray]:
    """Write a tiny MNIST-like set of random 28x28 images (IDX files) into `folder`."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    arrays = {
        "train_images": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "train_labels": rng.integers(0, 10, n_train, dtype=np.uint8),
        "test_images": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "test_labels": rng.integers(0, 10, n_test, dtype=np.uint8),
    }
    for key, arr in arrays.items():
        raw = _idx_bytes(arr)
        name = data.FILES[key]
        if gz:
            (folder / (name + ".gz")).write_bytes(gzip.compress(raw))
        else:
            (folder / name).write_bytes(raw)
    return arrays


@pytest.fixture
def make_idx_set() -> Callable[..., dict[str, np.ndarray]]:
    """write_idx_set(folder, n_train=6, n_test=4, gz=True, seed=0) -> the arrays written.

    For fast CLI tests: `--data folder` then trains/evaluates on a few random images.
    """
    return write_idx_set


# ------------------------------------------------------------------ device (nn) tests
# Fixtures for the MicroPython side: runners (tools/mpy.py, importable as `mpy` in every
# test module: the one way tests find MicroPython) and small device models of every
# kind, built from random arrays (the trained ones in build/models are used too where a
# test says so).

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tools"))

import mpy

from piconn import format as _fmt
from piconn import ir

# Modules whose every test runs MicroPython, firmware or Arm code (the `device` marker);
# elsewhere a test is marked by the fixtures it uses or by @pytest.mark.device.
DEVICE_MODULES = frozenset({
    "test_device", "test_fuzz", "test_pico_digits", "test_firmware", "test_natmod",
    "test_graph_device", "test_int8_ckernels", "test_ckernels", "test_stubs",
})
DEVICE_FIXTURES = frozenset({"micropython", "mp_runners"})


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        module = item.module.__name__.rpartition(".")[2] if item.module else ""
        if module in DEVICE_MODULES or DEVICE_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.device)


@pytest.fixture(scope="session")
def mp_runners() -> list[mpy.Runner]:
    """The MicroPython runners available here (unix build, webassembly); may be empty."""
    return mpy.runners()


@pytest.fixture(scope="session")
def micropython(mp_runners: list[mpy.Runner]) -> Callable[..., str]:
    """run(code, timeout=120, dirs=()) -> stdout, on the best runner (unix, else wasm)."""
    if not mp_runners:
        pytest.skip(mpy.why_none())
    return mp_runners[0].run


def _rq(rng: np.random.Generator, n: int) -> dict:
    return {"mult": rng.integers(1 << 14, 1 << 15, n), "s1": rng.integers(4, 9, n),
            "s2": rng.integers(10, 16, n)}


def random_device_models(seed: int = 7, n_in: int = 100, hidden: int = 22
                         ) -> dict[str, ir.DeviceModel]:
    """One small DeviceModel per kind (u8 inputs of n_in bytes, 10 outputs).

    hidden is not a multiple of 4 on purpose (the viper tier's byte path); "sparse_u16"
    has 300 hidden units (2-byte row indices); "float_acts" uses sigmoid, tanh and
    softmax; "float_f32in" takes array('f') inputs.
    """
    rng = np.random.default_rng(seed)
    f32 = lambda *s: rng.normal(0, 0.1, s).astype(np.float32)
    u8 = lambda *s: rng.integers(0, 256, s).astype(np.uint8)
    mask = lambda *s: rng.random(s) < 0.3
    h, n = hidden, n_in
    ms: dict[str, ir.DeviceModel] = {}
    ms["float"] = ir.DeviceModel([ir.DenseF32(f32(h, n) / 25, f32(h), "relu", "u8"),
                                  ir.DenseF32(f32(10, h), f32(10))], "float")
    ms["float_acts"] = ir.DeviceModel([
        ir.DenseF32(f32(h, n) / 25, f32(h), "sigmoid", "u8"),
        ir.DenseF32(f32(h, h) * 5, f32(h), "tanh", "f32"),
        ir.DenseF32(f32(10, h) * 5, f32(10), "softmax", "f32")], "float")
    ms["float_f32in"] = ir.DeviceModel([ir.DenseF32(f32(h, n), f32(h), "relu", "f32"),
                                        ir.DenseF32(f32(10, h), f32(10))], "float")
    ms["sparse_f32"] = ir.DeviceModel([
        ir.DenseF32(f32(h, n) / 25, f32(h), "relu", "u8", mask=mask(h, n)),
        ir.DenseF32(f32(10, h), f32(10), mask=mask(10, h))], "sparse")
    zw = lambda k: rng.integers(100, 156, k).astype(np.uint8)
    bias = lambda k: rng.integers(-20000, 20000, k).astype(np.int32)
    ms["uint8"] = ir.DeviceModel([
        ir.DenseQ8(u8(h, n), zw(h), bias(h), **_rq(rng, h), zy=3, out_dtype="u8"),
        ir.DenseQ8(u8(10, h), zw(10), bias(10), out_dtype="i32")], "uint8", 0.001)
    ms["sparse_uint8"] = ir.DeviceModel([
        ir.DenseQ8(u8(h, n), zw(h), bias(h), **_rq(rng, h), out_dtype="u8", mask=mask(h, n)),
        ir.DenseQ8(u8(10, h), zw(10), bias(10), out_dtype="i32", mask=mask(10, h))],
        "sparse", 0.001)
    big = 300
    ms["sparse_u16"] = ir.DeviceModel([
        ir.DenseQ8(u8(big, n), zw(big), bias(big), **_rq(rng, big), out_dtype="u8",
                   mask=mask(big, n)),
        ir.DenseQ8(u8(10, big), zw(10), bias(10), out_dtype="i32")], "sparse", 0.001)
    ms["uint8_weights"] = ir.DeviceModel([
        ir.DenseQ8W(u8(h, n), zw(h), (rng.random(h) * 1e-4).astype(np.float32), f32(h),
                    "relu", "u8"),
        ir.DenseQ8W(u8(10, h), zw(10), (rng.random(10) * 1e-2).astype(np.float32), f32(10),
                    "none", "f32")], "uint8")
    hb = 40
    ms["xnor"] = ir.DeviceModel([
        ir.Binarize(n, 100),
        ir.XnorDense(rng.random((hb, n)) < 0.5, rng.integers(40, 60, hb).astype(np.int32)),
        ir.XnorDense(rng.random((hb, hb)) < 0.5, rng.integers(15, 25, hb).astype(np.int32)),
        ir.XnorOut(rng.random((10, hb)) < 0.5, rng.integers(1, 1000, 10).astype(np.int32),
                   rng.integers(-5000, 5000, 10).astype(np.int32))], "xnor", 1e-3)
    for dm in ms.values():
        dm.check()
    return ms


@pytest.fixture(scope="session")
def device_models() -> dict[str, tuple[ir.DeviceModel, bytes]]:
    """{kind: (DeviceModel, .nnb bytes)} of small random models (random_device_models)."""
    return {k: (dm, _fmt.to_bytes(dm)) for k, dm in random_device_models().items()}
