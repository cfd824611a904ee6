"""Load the C kernels of device/c/nn_c on the host through ctypes.

The same nn_kernels.c that goes into the firmware is compiled with the host's C
compiler into a shared library (cached in the temp directory, keyed by the source
and flags) and called with numpy arrays:

    k = HostKernels()
    k.call("nn_dense_q8", x, w, zw, bias, rq, acc, y, n_in, n_out, zy)

Array arguments are passed by address (output arrays are written in place), `None`
is a NULL pointer, ints are passed as C ints. `SIGS` lists every exported kernel;
tools/ckernels_m0.py runs the same calls on an emulated Cortex-M0+.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
SRC_DIR = ROOT / "device" / "c" / "nn_c"
SOURCES = [SRC_DIR / "nn_kernels.c"]
HEADERS = [SRC_DIR / "nn_kernels.h"]
HOST_CFLAGS = ["-O2", "-Wall", "-Wextra", "-Werror", "-shared", "-fPIC"]

# Argument kinds per kernel: p input array (or None for NULL), o output array (written),
# u uint32, i int32. Second item: return type, "v" void, "u" uint32, "b" uint8.
SIGS: dict[str, tuple[str, str]] = {
    "nn_dense_f32": ("pippouu", "v"),
    "nn_dense_q8w": ("pippppouu", "v"),
    "nn_dense_q8": ("pppppoouuu", "v"),
    "nn_sparse_f32": ("pippuppouu", "v"),
    "nn_sparse_q8": ("pppuppppoouuu", "v"),
    "nn_binarize": ("puou", "v"),
    "nn_xnor_dense": ("pppouu", "v"),
    "nn_xnor_out": ("ppppouu", "v"),
    "nn_relu_f32": ("ou", "v"),
    "nn_requant": ("iuu", "b"),
    "nn_popcount_xor": ("ppu", "u"),
}


def source_hash(*extra: str) -> str:
    """Digest of the kernel sources and the given build options."""
    h = hashlib.sha256()
    for p in SOURCES + HEADERS:
        h.update(p.read_bytes())
    for e in extra:
        h.update(e.encode())
    return h.hexdigest()[:16]


def build_host_lib(cc: str | None = None, cflags: list[str] | None = None) -> Path:
    """Compile the kernels into a shared library (cached); return its path.

    Raises RuntimeError if no C compiler is found or the compile fails (warnings are
    errors).
    """
    cc = cc or os.environ.get("CC") or shutil.which("gcc") or shutil.which("cc")
    if not cc:
        raise RuntimeError("no host C compiler (gcc/cc) found")
    flags = HOST_CFLAGS + list(cflags or [])
    out_dir = Path(tempfile.gettempdir()) / "piconn-ckernels"
    out_dir.mkdir(exist_ok=True)
    lib = out_dir / f"nn_kernels-{source_hash(cc, *flags)}.so"
    if not lib.exists():
        tmp = lib.with_suffix(f".{os.getpid()}.tmp")
        cmd = [cc, *flags, *map(str, SOURCES), "-o", str(tmp)]
        r = subprocess.run(cmd, check=False, capture_output=True, text=True)
        if r.returncode:
            raise RuntimeError(f"host compile failed: {' '.join(cmd)}\n{r.stderr}")
        tmp.replace(lib)
    return lib


@dataclass
class At:
    """An array argument placed at an address that is `misalign` (0..3) past a multiple of 4."""

    array: np.ndarray
    misalign: int


_CTYPES = {"p": ctypes.c_void_p, "o": ctypes.c_void_p, "u": ctypes.c_uint32, "i": ctypes.c_int32}
_RESTYPES = {"v": None, "u": ctypes.c_uint32, "b": ctypes.c_uint8}


def _arg(kind: str, a):
    if kind in "po":
        if a is None:
            return None
        if isinstance(a, np.ndarray):
            if not a.flags.c_contiguous:
                raise ValueError("array arguments must be C-contiguous")
            return a.ctypes.data
        raise TypeError(f"expected a numpy array or None, got {type(a).__name__}")
    return int(a)


class HostKernels:
    """The C kernels compiled for the host, called through ctypes."""

    def __init__(self, cflags: list[str] | None = None) -> None:
        self.path = build_host_lib(cflags=cflags)
        self.lib = ctypes.CDLL(str(self.path))
        for name, (args, ret) in SIGS.items():
            fn = getattr(self.lib, name)
            fn.argtypes = [_CTYPES[k] for k in args]
            fn.restype = _RESTYPES[ret]

    def call(self, name: str, *args):
        """Call kernel `name`; arrays are passed by address and written in place."""
        kinds, _ = SIGS[name]
        if len(args) != len(kinds):
            raise TypeError(f"{name} takes {len(kinds)} arguments, got {len(args)}")
        placed: list[tuple[np.ndarray, np.ndarray]] = []
        conv = []
        for k, a in zip(kinds, args):
            if isinstance(a, At):
                buf = np.zeros(a.array.nbytes + 8, dtype=np.uint8)
                off = (a.misalign - buf.ctypes.data) % 4
                view = buf[off:off + a.array.nbytes]
                view[:] = a.array.view(np.uint8).reshape(-1)
                placed.append((a.array, view))
                a = view
            conv.append(_arg(k, a))
        r = getattr(self.lib, name)(*conv)
        for arr, view in placed:
            arr.view(np.uint8).reshape(-1)[:] = view
        return r
