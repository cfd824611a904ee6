"""piconn.data: finding, parsing and rejecting MNIST IDX files."""

from __future__ import annotations

import gzip
import hashlib
import urllib.request

import numpy as np
import pytest

from piconn import data

SHARED = data.repo_root().parent / "shared" / "data" / "mnist"


def _idx(arr: np.ndarray) -> bytes:
    head = bytes([0, 0, 0x08, arr.ndim]) + b"".join(d.to_bytes(4, "big") for d in arr.shape)
    return head + arr.astype(np.uint8).tobytes()


@pytest.fixture
def isolated(tmp_path, monkeypatch):
    """No MNIST anywhere: empty home, repo root and cwd in tmp, downloads blocked."""
    home = tmp_path / "home"
    home.mkdir()
    root = tmp_path / "a" / "repo"
    root.mkdir(parents=True)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("PICONN_DATA", raising=False)
    monkeypatch.setenv("PICONN_NO_DOWNLOAD", "1")
    monkeypatch.setattr(data, "repo_root", lambda: root)
    monkeypatch.chdir(root)

    def no_network(*args, **kwargs):
        raise OSError("network blocked by test")

    monkeypatch.setattr(urllib.request, "urlopen", no_network)
    return tmp_path


def test_finds_shared_mnist(monkeypatch, tmp_path):
    if not (SHARED / "t10k-labels-idx1-ubyte.gz").is_file():
        pytest.skip(f"no MNIST at {SHARED}")
    monkeypatch.delenv("PICONN_DATA", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no cache copy can be used
    assert data.find_mnist() == SHARED
    x_train, y_train, x_test, y_test = data.load_mnist(download=False)
    assert x_train.shape == (60000, 784) and x_test.shape == (10000, 784)
    assert y_train.shape == (60000,) and y_test.shape == (10000,)
    assert {a.dtype for a in (x_train, y_train, x_test, y_test)} == {np.dtype(np.uint8)}
    assert set(np.unique(y_test)) == set(range(10))
    # the parsed test labels are the published file
    raw = gzip.decompress((SHARED / "t10k-labels-idx1-ubyte.gz").read_bytes())
    assert hashlib.md5(raw).hexdigest() == data.MD5["t10k-labels-idx1-ubyte"]
    np.testing.assert_array_equal(y_test, np.frombuffer(raw[8:], np.uint8))


@pytest.mark.parametrize("gz", [True, False])
def test_env_var_folder_is_used_first(isolated, monkeypatch, gz, make_idx_set):
    folder = isolated / "mine"
    arrays = make_idx_set(folder, gz=gz)
    monkeypatch.setenv("PICONN_DATA", str(folder))
    assert data.search_paths()[0] == folder
    x_train, y_train, x_test, y_test = data.load_mnist()
    np.testing.assert_array_equal(x_train, arrays["train_images"].reshape(6, 784))
    np.testing.assert_array_equal(y_train, arrays["train_labels"])
    np.testing.assert_array_equal(x_test, arrays["test_images"].reshape(4, 784))
    np.testing.assert_array_equal(y_test, arrays["test_labels"])


def test_explicit_path_is_used_and_only_it(isolated, monkeypatch, make_idx_set):
    good = isolated / "good"
    make_idx_set(good, n_test=3)
    monkeypatch.setenv("PICONN_DATA", str(good))
    assert data.load_mnist(good)[2].shape == (3, 784)
    missing = isolated / "nowhere"
    with pytest.raises(data.DataNotFound) as e:
        data.load_mnist(missing)
    assert str(missing) in str(e.value)


def test_reports_searched_places_when_nothing_found(isolated, monkeypatch):
    env_dir = isolated / "envdir"
    monkeypatch.setenv("PICONN_DATA", str(env_dir))
    with pytest.raises(data.DataNotFound) as e:
        data.load_mnist()
    msg = str(e.value)
    assert isinstance(e.value, FileNotFoundError)
    for place in (env_dir, isolated / "a" / "shared" / "data" / "mnist",
                  isolated / "home" / ".cache" / "piconn" / "mnist"):
        assert str(place) in msg, (place, msg)
    assert "PICONN_DATA" in msg and "--data" in msg


def test_failed_download_is_reported(isolated, monkeypatch):
    monkeypatch.setenv("PICONN_NO_DOWNLOAD", "0")
    with pytest.raises(data.DataNotFound, match="network blocked by test"):
        data.load_mnist()


def test_download_checks_md5(isolated, monkeypatch):
    """A mirror serving wrong bytes is rejected (checksum), nothing is kept."""
    class Fake:
        def __init__(self, payload: bytes) -> None:
            self.payload = payload

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def read(self, n=-1):
            out, self.payload = self.payload, b""
            return out

    bogus = gzip.compress(_idx(np.zeros(5, np.uint8)))
    monkeypatch.setattr(urllib.request, "urlopen", lambda url, timeout: Fake(bogus))
    dest = isolated / "dl"
    with pytest.raises(OSError, match="MD5"):
        data.download_mnist(dest)
    assert not list(dest.iterdir())


@pytest.mark.parametrize("gz", [True, False])
def test_rejects_truncated_file(isolated, gz, make_idx_set):
    folder = isolated / "trunc"
    make_idx_set(folder, gz=False)
    name = folder / data.FILES["train_images"]
    raw = name.read_bytes()[:-100]
    if gz:
        name.unlink()
        name = name.with_name(name.name + ".gz")
        name.write_bytes(gzip.compress(raw))
    else:
        name.write_bytes(raw)
    with pytest.raises(ValueError, match="truncated") as e:
        data.load_mnist(folder)
    assert str(name) in str(e.value)


def test_rejects_truncated_gzip_stream(tmp_path):
    path = tmp_path / "x.gz"
    path.write_bytes(gzip.compress(_idx(np.zeros((3, 28, 28), np.uint8)))[:-12])
    with pytest.raises(ValueError, match="truncated|corrupt"):
        data.read_idx(path)


def test_rejects_wrong_magic(isolated, make_idx_set):
    folder = isolated / "magic"
    make_idx_set(folder, gz=False)
    name = folder / data.FILES["test_labels"]
    raw = bytearray(name.read_bytes())
    raw[2] = 0x0D  # float32 type code
    name.write_bytes(bytes(raw))
    with pytest.raises(ValueError, match="magic"):
        data.load_mnist(folder)
    with pytest.raises(ValueError, match="magic"):
        data.idx_to_array(b"PK\x03\x04" + bytes(20))
    with pytest.raises(ValueError, match="truncated"):
        data.idx_to_array(b"\x00\x00")


def test_rejects_mismatched_images_and_labels(isolated, make_idx_set):
    folder = isolated / "mismatch"
    make_idx_set(folder, gz=False)
    (folder / data.FILES["train_labels"]).write_bytes(_idx(np.zeros(5, np.uint8)))
    with pytest.raises(ValueError, match="do not match"):
        data.load_mnist(folder)


def test_random_shift_moves_pixels_without_changing_them():
    rng = np.random.default_rng(0)
    x = np.zeros((50, 784), np.uint8)
    img = x.reshape(50, 28, 28)
    img[:, 10:18, 9:20] = rng.integers(1, 256, (50, 8, 11), dtype=np.uint8)
    y = data.random_shift(x, rng, 2)
    assert y.shape == x.shape and y.dtype == x.dtype
    np.testing.assert_array_equal(np.sort(y, axis=1), np.sort(x, axis=1))
    assert (y != x).any(axis=1).mean() > 0.5  # most images moved
    np.testing.assert_array_equal(data.random_shift(x, rng, 0), x)
