"""Write and read the piconn binary model format (docs/FORMAT.md, version 1).

`to_bytes(DeviceModel) -> bytes` is deterministic: the same model gives the same
bytes. `from_bytes(bytes) -> DeviceModel` applies every rule the device's `nn.load`
applies (the one place for them on the host), so the host can check exported
files and tests can round-trip them.
"""

from __future__ import annotations

import struct
import zlib

import numpy as np

from . import ir

MAGIC = b"PCNN"
VERSION = 1
HEADER_SIZE = 40
RECORD_SIZE = 48
MAX_LAYERS = 64
N_SLOTS = 8

DTYPE_CODES = {"u8": 0, "f32": 1, "bits": 2, "i32": 3}
DTYPE_NAMES = {v: k for k, v in DTYPE_CODES.items()}
ACT_CODES = {name: i for i, name in enumerate(ir.ACTS)}
KIND_CODES = {
    "dense_f32": 1,
    "dense_q8w": 2,
    "dense_q8": 3,
    "sparse_f32": 4,
    "sparse_q8": 5,
    "binarize": 6,
    "xnor_dense": 7,
    "xnor_out": 8,
}
KIND_NAMES = {v: k for k, v in KIND_CODES.items()}

_HEADER = struct.Struct("<4sHHIIHHIIBBHfI")
_RECORD = struct.Struct("<BBBBHHIBBBB8I")
assert _HEADER.size == HEADER_SIZE and _RECORD.size == RECORD_SIZE


def words(n_bits: int) -> int:
    """u32 words that hold n_bits packed bits."""
    return (n_bits + 31) // 32


def pack_bits(b: np.ndarray) -> np.ndarray:
    """bool [rows, n] -> u32 [rows, words(n)]: element j is bit j%32 of word j//32."""
    b = np.atleast_2d(np.asarray(b, dtype=bool))
    rows, n = b.shape
    padded = np.zeros((rows, words(n) * 32), dtype=np.uint8)
    padded[:, :n] = b
    return np.packbits(padded, axis=1, bitorder="little").view("<u4").reshape(rows, -1)


def unpack_bits(w: np.ndarray, n: int) -> np.ndarray:
    """u32 [rows, words] -> bool [rows, n] (inverse of pack_bits)."""
    w = np.ascontiguousarray(np.atleast_2d(w), dtype="<u4")
    bits = np.unpackbits(w.view(np.uint8), axis=1, bitorder="little")
    return bits[:, :n].astype(bool)


def rq_words(mult: np.ndarray, s1: np.ndarray, s2: np.ndarray) -> np.ndarray:
    """Pack per-channel requantization parameters into u32 words (FORMAT.md `rq`)."""
    mult, s1, s2 = (np.asarray(a, dtype=np.int64) for a in (mult, s1, s2))
    if mult.min() < 0 or mult.max() > 32767:
        raise ValueError("requant multiplier outside [0, 32767]")
    if s1.min() < 0 or s1.max() > 31 or s2.min() < 1 or s2.max() > 30:
        raise ValueError("requant shifts outside s1 in [0, 31], s2 in [1, 30]")
    return (mult | (s1 << 16) | (s2 << 24)).astype("<u4")


def csc(w: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Compress w [n_out, n_in] where mask is True, by input columns.

    Returns (colptr u32 [n_in+1], rows [nnz], vals [nnz]) in column order,
    rows ascending within a column.
    """
    cols_t = np.asarray(mask, dtype=bool).T  # [n_in, n_out]
    i_idx, c_idx = np.nonzero(cols_t)  # row-major over [n_in, n_out]: sorted by i, then c
    colptr = np.zeros(cols_t.shape[0] + 1, dtype="<u4")
    np.cumsum(cols_t.sum(axis=1), out=colptr[1:])
    return colptr, c_idx, np.asarray(w)[c_idx, i_idx]


def _layer_arrays(layer: ir.Layer) -> tuple[str, list[np.ndarray], dict]:
    """The kind name, the parameter arrays in slot order, and record fields."""
    extra: dict = {"act": "none", "nnz": 0, "zy": 0, "index_bytes": 0, "threshold": 0}
    if isinstance(layer, (ir.DenseF32, ir.DenseQ8)) and layer.mask is not None:
        colptr, rows, vals = csc(layer.w, layer.mask)
        extra["nnz"] = len(rows)
        extra["index_bytes"] = 1 if ir.n_out(layer) <= 256 else 2
        rows = rows.astype("<u1" if extra["index_bytes"] == 1 else "<u2")
        if isinstance(layer, ir.DenseF32):
            extra["act"] = layer.act
            return "sparse_f32", [colptr, rows, vals.astype("<f4"), _f32(layer.b)], extra
        arrays = [colptr, rows, vals.astype("<u1"), _u8(layer.zw), _i32(layer.bias)]
        return "sparse_q8", arrays + _rq(layer, extra), extra
    if isinstance(layer, ir.DenseF32):
        extra["act"] = layer.act
        return "dense_f32", [_f32(layer.w).T, _f32(layer.b)], extra
    if isinstance(layer, ir.DenseQ8W):
        extra["act"] = layer.act
        arrays = [_u8(layer.w).T, _u8(layer.zw), _f32(layer.scale), _f32(layer.b)]
        return "dense_q8w", arrays, extra
    if isinstance(layer, ir.DenseQ8):
        arrays = [_u8(layer.w).T, _u8(layer.zw), _i32(layer.bias)]
        return "dense_q8", arrays + _rq(layer, extra), extra
    if isinstance(layer, ir.Binarize):
        if not 0 <= layer.threshold <= 255:
            raise ValueError(f"binarize threshold {layer.threshold} outside 0..255")
        extra["threshold"] = layer.threshold
        return "binarize", [], extra
    if isinstance(layer, ir.XnorDense):
        return "xnor_dense", [pack_bits(layer.w), _i32(layer.thr)], extra
    if isinstance(layer, ir.XnorOut):
        return "xnor_out", [pack_bits(layer.w), _i32(layer.a), _i32(layer.b)], extra
    raise TypeError(f"not a device layer: {type(layer).__name__}")


def _rq(layer: ir.DenseQ8, extra: dict) -> list[np.ndarray]:
    if layer.out_dtype == "i32":
        return []
    if not 0 <= layer.zy <= 255:
        raise ValueError(f"output zero point {layer.zy} outside 0..255")
    extra["zy"] = int(layer.zy)
    return [rq_words(layer.mult, layer.s1, layer.s2)]


def _f32(a: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(a, dtype="<f4")


def _u8(a: np.ndarray) -> np.ndarray:
    a = np.asarray(a)
    if a.size and (a.min() < 0 or a.max() > 255):
        raise ValueError("uint8 array has values outside 0..255")
    return np.ascontiguousarray(a, dtype="<u1")


def _i32(a: np.ndarray) -> np.ndarray:
    a = np.asarray(a)
    if a.size and (a.min() < -(2**31) or a.max() >= 2**31):
        raise ValueError("int32 array has values outside the int32 range")
    return np.ascontiguousarray(a, dtype="<i4")


def _pad4(n: int) -> int:
    return (n + 3) & ~3


def to_bytes(model: ir.DeviceModel) -> bytes:
    """Serialize a DeviceModel (deterministic)."""
    model.check()
    layers = model.layers
    if not 1 <= len(layers) <= MAX_LAYERS:
        raise ValueError(f"a model has 1..{MAX_LAYERS} layers, not {len(layers)}")
    if model.output_dtype not in ("f32", "i32"):
        raise ValueError(f"the last layer must output f32 or i32, not {model.output_dtype}")
    pos = HEADER_SIZE + RECORD_SIZE * len(layers)
    records, blobs = [], []
    for layer in layers:
        kind, arrays, extra = _layer_arrays(layer)
        offsets = []
        for a in arrays:
            data = np.ascontiguousarray(a).tobytes()
            if not data:  # an empty array (a sparse layer with nnz = 0) has offset 0
                offsets.append(0)
                continue
            offsets.append(pos)
            blobs.append(data + b"\0" * (_pad4(len(data)) - len(data)))
            pos += _pad4(len(data))
        offsets += [0] * (N_SLOTS - len(offsets))
        n_i, n_o = ir.n_in(layer), ir.n_out(layer)
        if not (1 <= n_i <= 65535 and 1 <= n_o <= 65535):
            raise ValueError(f"layer sizes {n_i}x{n_o} outside 1..65535")
        records.append(
            _RECORD.pack(
                KIND_CODES[kind], ACT_CODES[extra["act"]],
                DTYPE_CODES[layer.in_dtype], DTYPE_CODES[ir.out_dtype(layer)],
                n_i, n_o, extra["nnz"], extra["zy"], extra["index_bytes"],
                extra["threshold"], 0, *offsets,
            )
        )
    body = b"".join(records) + b"".join(blobs)
    total = HEADER_SIZE + len(body)
    tail = struct.pack(
        "<HHIIBBHfI", len(layers), RECORD_SIZE, model.input_size, model.output_size,
        DTYPE_CODES[model.input_dtype], DTYPE_CODES[model.output_dtype], 0,
        model.output_scale, 0,
    )
    crc = zlib.crc32(tail + body) & 0xFFFFFFFF
    head = struct.pack("<4sHHII", MAGIC, VERSION, HEADER_SIZE, total, crc)
    out = head + tail + body
    assert len(out) == total
    return out


def _array_bytes(kind: str, slot: int, n_i: int, n_o: int, nnz: int, ib: int) -> int:
    """Byte length of parameter array `slot` of a layer (before padding)."""
    rows_w = words(n_i) * 4 * n_o
    table = {
        "dense_f32": [4 * n_i * n_o, 4 * n_o],
        "dense_q8w": [n_i * n_o, n_o, 4 * n_o, 4 * n_o],
        "dense_q8": [n_i * n_o, n_o, 4 * n_o, 4 * n_o],
        "sparse_f32": [4 * (n_i + 1), ib * nnz, 4 * nnz, 4 * n_o],
        "sparse_q8": [4 * (n_i + 1), ib * nnz, nnz, n_o, 4 * n_o, 4 * n_o],
        "binarize": [],
        "xnor_dense": [rows_w, 4 * n_o],
        "xnor_out": [rows_w, 4 * n_o, 4 * n_o],
    }[kind]
    return table[slot] if slot < len(table) else 0


# (in_dtypes, out_dtypes) each kind accepts.
KIND_DTYPES = {
    "dense_f32": (("u8", "f32"), ("f32",)),
    "dense_q8w": (("u8", "f32"), ("f32",)),
    "dense_q8": (("u8",), ("u8", "i32")),
    "sparse_f32": (("u8", "f32"), ("f32",)),
    "sparse_q8": (("u8",), ("u8", "i32")),
    "binarize": (("u8",), ("bits",)),
    "xnor_dense": (("bits",), ("bits",)),
    "xnor_out": (("bits",), ("i32",)),
}


MODEL_IN_DTYPES = ("u8", "f32")
MODEL_OUT_DTYPES = ("f32", "i32")
N_KIND_SLOTS = {"dense_f32": 2, "dense_q8w": 4, "dense_q8": 4, "sparse_f32": 4, "sparse_q8": 6,
                "binarize": 0, "xnor_dense": 2, "xnor_out": 3}
# f32 parameter slots of each kind: all values must be finite
F32_SLOTS = {"dense_f32": (0, 1), "dense_q8w": (2, 3), "sparse_f32": (2, 3)}
INT32_MAX = 2**31 - 1
MAC_MAX = 255 * 255  # the largest |x * (w - zw)| of a layer with u8 inputs and weights


def _check_content(k: int, kind: str, arrays: list[bytes], dt_in: str, n_i: int, n_o: int,
                   ib: int) -> None:
    """The content rules of FORMAT.md ("Content rules"), as the device's nn.load applies them."""
    for slot in F32_SLOTS.get(kind, ()):
        if not np.all(np.isfinite(np.frombuffer(arrays[slot], "<f4"))):
            raise ValueError(f"layer {k}: parameter {slot} holds NaN or infinity")
    if kind in ("sparse_f32", "sparse_q8"):
        colptr = np.frombuffer(arrays[0], "<u4").astype(np.int64)
        rows = np.frombuffer(arrays[1], "<u1" if ib == 1 else "<u2").astype(np.int64)
        nnz = len(rows)
        if colptr[0] != 0 or colptr[-1] != nnz or np.any(np.diff(colptr) < 0):
            raise ValueError(f"layer {k}: sparse column pointers are not a valid CSC index")
        col = np.repeat(np.arange(n_i), np.diff(colptr))
        bad = (rows >= n_o) | np.concatenate(([False], (col[1:] == col[:-1]) &
                                              (rows[1:] <= rows[:-1])))
        if np.any(bad):
            raise ValueError(f"layer {k}: sparse column {col[np.argmax(bad)]}: row indices "
                             f"not increasing or outside {n_o} outputs")
    if kind in ("dense_q8", "sparse_q8"):
        bias = np.frombuffer(arrays[2 if kind == "dense_q8" else 4], "<i4").astype(np.int64)
        _bound(k, int(np.abs(bias).max()), MAC_MAX * n_i)
    if kind == "dense_q8w" and dt_in == "u8":
        _bound(k, 0, MAC_MAX * n_i)
    if kind in ("xnor_dense", "xnor_out"):
        nw = words(n_i)
        w = np.frombuffer(arrays[0], "<u4").reshape(n_o, nw)
        if n_i % 32 and np.any(w[:, -1] >> np.uint32(n_i % 32)):
            raise ValueError(f"layer {k}: padding bits set in binary weight rows")
        if kind == "xnor_out":
            a = np.frombuffer(arrays[1], "<i4").astype(np.int64)
            b = np.frombuffer(arrays[2], "<i4").astype(np.int64)
            _bound(k, int(np.abs(b).max()), int(np.abs(a).max()) * n_i)


def _bound(k: int, bias: int, macs: int) -> None:
    if bias + macs > INT32_MAX:
        raise ValueError(f"layer {k}: accumulator could leave the int32 range "
                         f"(|bias| {bias} + {macs})")


def from_bytes(buf: bytes) -> ir.DeviceModel:
    """Parse and validate a model; ValueError says what is wrong.

    Applies every rule of docs/FORMAT.md, the content rules included, exactly as the
    device's `nn.load` does: a model this accepts loads on the device, and a model
    it refuses the device refuses too.
    """
    buf = bytes(buf)
    if len(buf) < HEADER_SIZE:
        raise ValueError(f"model too short: {len(buf)} bytes, the header alone is {HEADER_SIZE}")
    (magic, version, hsize, total, crc, n_layers, rsize, in_size, out_size, in_dt, out_dt,
     reserved16, out_scale, reserved32) = _HEADER.unpack_from(buf)
    if magic != MAGIC:
        raise ValueError(f"not a piconn model: magic {magic!r}, expected {MAGIC!r}")
    if version != VERSION:
        raise ValueError(f"model format version {version}, this reader knows version {VERSION}")
    if hsize != HEADER_SIZE or rsize != RECORD_SIZE:
        raise ValueError(f"header/record size {hsize}/{rsize}, expected {HEADER_SIZE}/{RECORD_SIZE}")
    if total != len(buf):
        raise ValueError(f"model says {total} bytes but the buffer has {len(buf)}")
    if zlib.crc32(buf[16:]) & 0xFFFFFFFF != crc:
        raise ValueError("model CRC mismatch: the bytes are corrupt")
    if not 1 <= n_layers <= MAX_LAYERS:
        raise ValueError(f"bad layer count {n_layers}")
    table_end = HEADER_SIZE + RECORD_SIZE * n_layers
    if table_end > total:
        raise ValueError("layer table runs past the end of the model")
    if reserved16 or reserved32:
        raise ValueError(f"reserved header field not 0 ({reserved16}, {reserved32})")
    if DTYPE_NAMES.get(in_dt) not in MODEL_IN_DTYPES:
        raise ValueError(f"model input dtype {in_dt}: must be u8 or f32")
    if DTYPE_NAMES.get(out_dt) not in MODEL_OUT_DTYPES:
        raise ValueError(f"model output dtype {out_dt}: must be f32 or i32")
    # finite and positive: predict's argmax of the raw output is the argmax of the logits
    if not 0 < out_scale < np.inf or DTYPE_NAMES[out_dt] == "f32" and out_scale != 1.0:
        raise ValueError(f"bad output scale {out_scale!r}: must be finite and > 0, and 1.0 "
                         "for an f32 output")
    layers: list[ir.Layer] = []
    prev = (in_size, DTYPE_NAMES.get(in_dt))
    for k in range(n_layers):
        (code, act, ldt_in, ldt_out, n_i, n_o, nnz, zy, ib, thr, reserved,
         *offs) = _RECORD.unpack_from(buf, HEADER_SIZE + RECORD_SIZE * k)
        kind = KIND_NAMES.get(code)
        if kind is None:
            raise ValueError(f"layer {k}: unknown layer kind {code}")
        dt_in, dt_out = DTYPE_NAMES.get(ldt_in), DTYPE_NAMES.get(ldt_out)
        ok_in, ok_out = KIND_DTYPES[kind]
        if dt_in not in ok_in or dt_out not in ok_out:
            raise ValueError(f"layer {k} ({kind}): dtypes {dt_in}->{dt_out} not allowed")
        if (n_i, dt_in) != prev:
            raise ValueError(f"layer {k} ({kind}) takes {n_i} {dt_in}, previous gives {prev[0]} {prev[1]}")
        if n_i == 0 or n_o == 0:
            raise ValueError(f"layer {k} ({kind}): size {n_i}->{n_o}, sizes are 1..65535")
        if act >= len(ir.ACTS) or (act and dt_out != "f32"):
            raise ValueError(f"layer {k}: bad activation code {act}")
        if ir.ACTS[act] == "softmax" and k != n_layers - 1:
            raise ValueError(f"layer {k}: softmax on a layer that is not the last")
        sparse = kind.startswith("sparse")
        if (ib not in (1, 2) or ib == 1 and n_o > 256) if sparse else ib:
            raise ValueError(f"layer {k}: bad sparse index width {ib}")
        if nnz and not sparse or sparse and nnz > n_i * n_o:
            raise ValueError(f"layer {k}: bad stored-weight count {nnz}")
        if zy and not (kind in ("dense_q8", "sparse_q8") and dt_out == "u8"):
            raise ValueError(f"layer {k}: output zero point {zy} on a layer without a u8 output")
        if thr and kind != "binarize":
            raise ValueError(f"layer {k}: threshold {thr} on a layer that is not binarize")
        if reserved:
            raise ValueError(f"layer {k}: reserved record byte not 0 ({reserved})")
        if kind == "binarize" and n_i != n_o:
            raise ValueError(f"layer {k}: binarize must keep its size")
        arrays = []  # every slot of the kind in order; b"" for an empty or unused one
        for slot, off in enumerate(offs):
            size = _array_bytes(kind, slot, n_i, n_o, nnz, ib)
            if kind in ("dense_q8", "sparse_q8") and slot == (3 if kind == "dense_q8" else 5):
                size = size if dt_out == "u8" else 0
            if size == 0:
                if off:
                    raise ValueError(f"layer {k}: unused parameter slot {slot} has an offset")
                if slot < N_KIND_SLOTS[kind]:
                    arrays.append(b"")
                continue
            if off % 4 or off < table_end or off + size > total:
                raise ValueError(f"layer {k}: parameter {slot} at {off}+{size} outside the model")
            arrays.append(buf[off:off + size])
        _check_content(k, kind, arrays, dt_in, n_i, n_o, ib)
        layers.append(_build_layer(kind, arrays, ir.ACTS[act], dt_in, dt_out, n_i, n_o, zy, ib, thr))
        prev = (n_o, dt_out)
    if prev != (out_size, DTYPE_NAMES.get(out_dt)):
        raise ValueError(f"last layer gives {prev[0]} {prev[1]}, the header says {out_size}")
    fam = _family(layers)
    return ir.DeviceModel(layers=layers, family=fam, output_scale=float(out_scale))


def _family(layers: list[ir.Layer]) -> str:
    if any(isinstance(la, (ir.XnorDense, ir.XnorOut)) for la in layers):
        return "xnor"
    if any(getattr(la, "mask", None) is not None for la in layers):
        return "sparse"
    if any(isinstance(la, (ir.DenseQ8, ir.DenseQ8W)) for la in layers):
        return "uint8"
    return "float"


def _build_layer(kind, arrays, act, dt_in, dt_out, n_i, n_o, zy, ib, thr) -> ir.Layer:
    f32 = lambda b: np.frombuffer(b, "<f4").astype(np.float32)
    i32 = lambda b: np.frombuffer(b, "<i4").astype(np.int32)
    u8 = lambda b: np.frombuffer(b, np.uint8).copy()
    if kind == "dense_f32":
        return ir.DenseF32(f32(arrays[0]).reshape(n_i, n_o).T.copy(), f32(arrays[1]), act, dt_in)
    if kind == "dense_q8w":
        w = u8(arrays[0]).reshape(n_i, n_o).T.copy()
        return ir.DenseQ8W(w, u8(arrays[1]), f32(arrays[2]), f32(arrays[3]), act, dt_in)
    if kind in ("sparse_f32", "sparse_q8"):
        colptr = np.frombuffer(arrays[0], "<u4").astype(np.int64)
        rows = np.frombuffer(arrays[1], "<u1" if ib == 1 else "<u2").astype(np.int64)
        cols = np.repeat(np.arange(n_i), np.diff(colptr))
        mask = np.zeros((n_o, n_i), dtype=bool)
        mask[rows, cols] = True
        if kind == "sparse_f32":
            w = np.zeros((n_o, n_i), dtype=np.float32)
            w[rows, cols] = f32(arrays[2])
            return ir.DenseF32(w, f32(arrays[3]), act, dt_in, mask=mask)
        zw = u8(arrays[3])
        w = np.repeat(zw[:, None], n_i, axis=1)  # unstored weights read as real zero
        w[rows, cols] = u8(arrays[2])
        return _q8(w, zw, i32(arrays[4]), arrays[5:], zy, dt_out, mask)
    if kind == "dense_q8":
        w = u8(arrays[0]).reshape(n_i, n_o).T.copy()
        return _q8(w, u8(arrays[1]), i32(arrays[2]), arrays[3:], zy, dt_out, None)
    if kind == "binarize":
        return ir.Binarize(n_i, thr)
    w = unpack_bits(np.frombuffer(arrays[0], "<u4").reshape(n_o, words(n_i)), n_i)
    if kind == "xnor_dense":
        return ir.XnorDense(w, i32(arrays[1]))
    return ir.XnorOut(w, i32(arrays[1]), i32(arrays[2]))


def _q8(w, zw, bias, rq_arrays, zy, dt_out, mask) -> ir.DenseQ8:
    if dt_out == "i32":
        return ir.DenseQ8(w, zw, bias, out_dtype="i32", mask=mask)
    rq = np.frombuffer(rq_arrays[0], "<u4").astype(np.int64)
    mult, s1, s2 = rq & 0xFFFF, (rq >> 16) & 0xFF, (rq >> 24) & 0xFF
    if mult.max() > 32767 or s1.max() > 31 or s2.min() < 1 or s2.max() > 30:
        raise ValueError("requantization parameters out of range")
    return ir.DenseQ8(w, zw, bias, mult.astype(np.int32), s1.astype(np.int32),
                      s2.astype(np.int32), zy=zy, out_dtype="u8", mask=mask)
