"""Shared fixtures. Keep this small; add fixtures that several test files need."""

from __future__ import annotations

import gzip
import os
from collections.abc import Callable
from pathlib import Path

# One BLAS thread per process: far faster than two on a small shared machine.
# Must happen before numpy is imported.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

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
