"""Shared fixtures. Keep this small; add fixtures that several test files need."""

from __future__ import annotations

import os

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
