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
HEADERS = [SRC_DIR / "nn_kernels.h", SRC_DIR / "arch_armv6m.h"]
HOST_CFLAGS = ["-O2", "-Wall", "-Wextra", "-Werror", "-shared", "-fPIC", "-ffp-contract=off"]

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
    "nn_argmax_i32": ("pu", "u"),
    "nn_argmax_f32": ("pu", "u"),
    "nn_check_csc": ("ppuuuu", "u"),
    "nn_check_f32": ("pu", "u"),
    "nn_requant": ("iuu", "b"),
    "nn_popcount_xor": ("ppu", "u"),
    "nn_xnor_dense_pw": ("ppppouu", "v"),
    "nn_xnor_out_pw": ("pppppouu", "v"),
    "nn_popcount_rows": ("puuo", "v"),
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


# ---------------------------------------------------------------------------
# A whole model through the kernels, as the device's C tier runs it


def _layer_views(blob: bytes):
    """Parse a .nnb blob (docs/FORMAT.md): per layer (kind, act, fields, [arrays])."""
    from piconn import format as fmt

    mv = np.frombuffer(blob, dtype=np.uint8)
    n_layers = int.from_bytes(blob[16:18], "little")
    out = []
    for k in range(n_layers):
        rec = fmt._RECORD.unpack_from(blob, fmt.HEADER_SIZE + k * fmt.RECORD_SIZE)
        kind = fmt.KIND_NAMES[rec[0]]
        act = fmt.ir.ACTS[rec[1]]
        n_in, n_out, nnz, zy, ib, thr = rec[4], rec[5], rec[6], rec[7], rec[8], rec[9]
        arrays = []
        for slot, off in enumerate(rec[11:]):
            n = fmt._array_bytes(kind, slot, n_in, n_out, nnz, ib)
            arrays.append(mv[off:off + n] if off else None)
        out.append((kind, act, fmt.DTYPE_NAMES[rec[3]],
                    {"n_in": n_in, "n_out": n_out, "zy": zy, "ib": ib, "thr": thr}, arrays))
    return out


def _act(y: np.ndarray, act: str, k) -> np.ndarray:
    if act == "relu":
        k.call("nn_relu_f32", y, y.size)
    elif act == "sigmoid":
        y = (np.float32(1) / (np.float32(1) + np.exp(-y))).astype(np.float32)
    elif act == "tanh":
        y = np.tanh(y).astype(np.float32)
    elif act == "softmax":
        e = np.exp(y - y.max())
        y = (e / e.sum()).astype(np.float32)
    return y


def run_model(k, blob: bytes, x: np.ndarray) -> np.ndarray:
    """Raw output of a .nnb model for one input, every layer through kernel backend `k`
    (HostKernels or ckernels_m0.M0Kernels) with the arguments of docs/KERNELS.md."""

    def as_(a, dt):
        return None if a is None else a.view(dt)

    for kind, act, out_dt, f, arr in _layer_views(blob):
        n_in, n_out = f["n_in"], f["n_out"]
        x_u8 = int(x.dtype == np.uint8)
        if kind == "dense_f32":
            y = np.zeros(n_out, np.float32)
            k.call("nn_dense_f32", x, x_u8, as_(arr[0], "<f4"), as_(arr[1], "<f4"), y, n_in, n_out)
        elif kind == "dense_q8w":
            y = np.zeros(n_out, np.float32)
            k.call("nn_dense_q8w", x, x_u8, arr[0], arr[1], as_(arr[2], "<f4"), as_(arr[3], "<f4"),
                   y, n_in, n_out)
        elif kind == "sparse_f32":
            y = np.zeros(n_out, np.float32)
            k.call("nn_sparse_f32", x, x_u8, as_(arr[0], "<u4"), arr[1], f["ib"],
                   as_(arr[2], "<f4"), as_(arr[3], "<f4"), y, n_in, n_out)
        elif kind in ("dense_q8", "sparse_q8"):
            acc = np.zeros(n_out, np.int32)
            y = np.zeros(n_out, np.uint8)
            if kind == "dense_q8":
                k.call("nn_dense_q8", x, arr[0], arr[1], as_(arr[2], "<i4"), as_(arr[3], "<u4"),
                       acc, y if out_dt == "u8" else acc, n_in, n_out, f["zy"])
            else:
                k.call("nn_sparse_q8", x, as_(arr[0], "<u4"), arr[1], f["ib"], arr[2], arr[3],
                       as_(arr[4], "<i4"), as_(arr[5], "<u4"), acc,
                       y if out_dt == "u8" else acc, n_in, n_out, f["zy"])
            y = y if out_dt == "u8" else acc
        elif kind == "binarize":
            y = np.zeros((n_out + 31) // 32, np.uint32)
            k.call("nn_binarize", x, f["thr"], y, n_in)
        elif kind == "xnor_dense":
            y = np.zeros((n_out + 31) // 32, np.uint32)
            k.call("nn_xnor_dense", x, as_(arr[0], "<u4"), as_(arr[1], "<i4"), y, n_in, n_out)
        elif kind == "xnor_out":
            y = np.zeros(n_out, np.int32)
            k.call("nn_xnor_out", x, as_(arr[0], "<u4"), as_(arr[1], "<i4"), as_(arr[2], "<i4"),
                   y, n_in, n_out)
        else:
            raise ValueError(f"unknown layer kind {kind}")
        x = _act(y, act, k) if y.dtype == np.float32 else y
    return x
