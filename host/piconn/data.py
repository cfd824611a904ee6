"""MNIST from IDX files (gzip-compressed or raw).

`load_mnist()` looks, in order, in: an explicit `path` (only there, if given),
`$PICONN_DATA`, `../shared/data/mnist` beside the repository root (found from
this file) and beside the current directory, and `~/.cache/piconn/mnist`. If no
place has all four files it downloads them into the cache (unless
`PICONN_NO_DOWNLOAD=1` or `download=False`) and checks their MD5s; otherwise it
raises `DataNotFound` naming every place it looked.

Input convention for all of piconn: float pixels x/255 (`INPUT_SCALE`), no
mean/std; exporters fold the scale into the first layer.
"""

from __future__ import annotations

import gzip
import hashlib
import http.client
import os
import shutil
import urllib.request
from pathlib import Path

import numpy as np

INPUT_SCALE = 1.0 / 255.0

FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
# MD5 of the uncompressed files (the published values).
MD5 = {
    "train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
    "train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
    "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
    "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637",
}
MIRRORS = (
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
)
_IDX_TYPES = {0x08: np.uint8}


class DataNotFound(FileNotFoundError):
    """The data set is in none of the searched places and could not be downloaded."""


def idx_to_array(raw: bytes, name: str = "IDX data") -> np.ndarray:
    """Parse IDX bytes (magic 0 0 type ndim, big-endian u32 dims, data); uint8 only."""
    if len(raw) < 4:
        raise ValueError(f"{name}: truncated IDX file ({len(raw)} bytes, no header)")
    if raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_TYPES or not 1 <= raw[3] <= 4:
        raise ValueError(
            f"{name}: not an IDX uint8 file (magic bytes {raw[:4].hex()}, expected "
            "0000080n with n = number of dimensions)"
        )
    ndim = raw[3]
    head = 4 + 4 * ndim
    if len(raw) < head:
        raise ValueError(f"{name}: truncated IDX header ({len(raw)} of {head} bytes)")
    dims = tuple(int.from_bytes(raw[4 + 4 * k:8 + 4 * k], "big") for k in range(ndim))
    size = int(np.prod(dims, dtype=np.int64))
    if len(raw) - head != size:
        what = "truncated" if len(raw) - head < size else "has trailing bytes"
        raise ValueError(
            f"{name}: IDX file {what}: header says {'x'.join(map(str, dims))} = {size} "
            f"bytes of data, file has {len(raw) - head}"
        )
    return np.frombuffer(raw, np.uint8, size, head).reshape(dims)


def _read(path: Path) -> bytes:
    if path.suffix == ".gz":
        try:
            with gzip.open(path, "rb") as f:
                return f.read()
        except (OSError, EOFError) as e:
            raise ValueError(f"{path}: corrupt or truncated gzip file ({e})") from None
    return path.read_bytes()


def read_idx(path: str | Path) -> np.ndarray:
    """Read one IDX file (.gz or raw) into a uint8 array."""
    path = Path(path)
    return idx_to_array(_read(path), str(path))


def _find_file(folder: Path, base: str) -> Path | None:
    for name in (base + ".gz", base):
        p = folder / name
        if p.is_file():
            return p
    return None


def _has_all(folder: Path) -> bool:
    return all(_find_file(folder, base) is not None for base in FILES.values())


def repo_root() -> Path:
    """The repository root (host/piconn/data.py -> three levels up)."""
    return Path(__file__).resolve().parents[2]


def cache_dir() -> Path:
    return Path.home() / ".cache" / "piconn" / "mnist"


def search_paths() -> list[Path]:
    """Where `load_mnist()` looks without an explicit path, in order."""
    places: list[Path] = []
    env = os.environ.get("PICONN_DATA")
    if env:
        places.append(Path(env).expanduser())
    places.append(repo_root().parent / "shared" / "data" / "mnist")
    places.append(Path.cwd().resolve().parent / "shared" / "data" / "mnist")
    places.append(cache_dir())
    seen: list[Path] = []
    for p in places:
        if p not in seen:
            seen.append(p)
    return seen


def find_mnist(path: str | Path | None = None) -> Path | None:
    """The first folder holding all four files, or None."""
    if path is not None:
        p = Path(path).expanduser()
        return p if _has_all(p) else None
    for p in search_paths():
        if _has_all(p):
            return p
    return None


def download_mnist(dest: Path, timeout: float = 20.0) -> None:
    """Download the four .gz files into `dest`, checking MD5 of the uncompressed data."""
    dest.mkdir(parents=True, exist_ok=True)
    errors: list[str] = []
    for base in FILES.values():
        target = dest / (base + ".gz")
        if target.is_file():
            continue
        for mirror in MIRRORS:
            url = mirror + base + ".gz"
            tmp = target.with_suffix(".gz.part")
            try:
                with urllib.request.urlopen(url, timeout=timeout) as r, open(tmp, "wb") as f:
                    shutil.copyfileobj(r, f)
                digest = hashlib.md5(_read(tmp)).hexdigest()
                if digest != MD5[base]:
                    raise ValueError(f"MD5 {digest} != {MD5[base]}")
                tmp.replace(target)
                break
            except (OSError, ValueError, http.client.HTTPException) as e:  # next mirror
                errors.append(f"{url}: {e}")
                tmp.unlink(missing_ok=True)
        else:
            raise OSError("download failed:\n  " + "\n  ".join(errors))


def _not_found(places: list[Path], extra: str = "") -> DataNotFound:
    names = ", ".join(f"{b}[.gz]" for b in FILES.values())
    where = "\n".join(f"  {p}" for p in places)
    return DataNotFound(
        f"MNIST not found. Looked for {names} in:\n{where}\n"
        "Put the four IDX files (gzip or raw) in one of these folders, or pass "
        "--data PATH / set PICONN_DATA=PATH." + (f"\n{extra}" if extra else "")
    )


_cache: dict[tuple[str, tuple[float, ...]], tuple[np.ndarray, ...]] = {}


def load_mnist(path: str | Path | None = None, download: bool | None = None
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Return (x_train u8 [60000, 784], y_train u8, x_test u8 [10000, 784], y_test u8).

    Arrays are read-only and shared between calls (copy before changing them).
    """
    if path is not None:
        folder = find_mnist(path)
        if folder is None:
            raise _not_found([Path(path).expanduser()])
    else:
        folder = find_mnist()
        if folder is None:
            places = search_paths()
            if download is None:
                download = os.environ.get("PICONN_NO_DOWNLOAD", "") in ("", "0")
            if not download:
                raise _not_found(places, "(download disabled)")
            try:
                download_mnist(cache_dir())
            except OSError as e:
                raise _not_found(places, f"Download into {cache_dir()} failed: {e}") from None
            folder = cache_dir()
    files = {k: _find_file(folder, base) for k, base in FILES.items()}
    key = (str(folder.resolve()), tuple(f.stat().st_mtime for f in files.values()))  # type: ignore[union-attr]
    if key in _cache:
        return _cache[key]  # type: ignore[return-value]
    arrays = {k: read_idx(f) for k, f in files.items()}  # type: ignore[arg-type]
    out = []
    for part in ("train", "test"):
        x, y = arrays[f"{part}_images"], arrays[f"{part}_labels"]
        if x.ndim != 3 or y.ndim != 1 or x.shape[0] != y.shape[0]:
            raise ValueError(
                f"{folder}: {part} images {x.shape} and labels {y.shape} do not match "
                "(expected N x rows x cols images and N labels)"
            )
        if y.max() > 9:
            raise ValueError(f"{folder}: {part} labels out of range 0..9")
        out += [x.reshape(len(x), -1), y]
    for a in out:
        a.flags.writeable = False
    result = tuple(out)
    _cache.clear()
    _cache[key] = result  # type: ignore[assignment]
    return result  # type: ignore[return-value]


def random_shift(x: np.ndarray, rng: np.random.Generator, max_shift: int = 1,
                 side: int = 28) -> np.ndarray:
    """Shift each flattened side x side image by up to `max_shift` pixels (zero fill)."""
    n = len(x)
    imgs = np.asarray(x).reshape(n, side, side)
    m = int(max_shift)
    pad = np.zeros((n, side + 2 * m, side + 2 * m), imgs.dtype)
    pad[:, m:m + side, m:m + side] = imgs
    dy = rng.integers(0, 2 * m + 1, n)
    dx = rng.integers(0, 2 * m + 1, n)
    rows = (dy[:, None] + np.arange(side))[:, :, None]  # (n, side, 1)
    cols = (dx[:, None] + np.arange(side))[:, None, :]  # (n, 1, side)
    out = pad[np.arange(n)[:, None, None], rows, cols]
    return out.reshape(np.shape(x))
