"""The binary operators of format version 2 (docs/FORMAT.md "Binary operators") on the
device: BINARIZE, XNOR_CONV_2D (bits and int32 outputs, SAME and VALID, strides, the
fully connected form) and BINARY_MAX_POOL_2D, in every tier present (plain Python,
viper, C), against a numpy model of the specification written here, bit for bit;
allocation-free inference (heap_lock); corrupt records refused at load with
ValueError; the C kernels compiled and run on the host too.
"""

from __future__ import annotations

import ctypes
import struct
import subprocess
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import mpy
import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
NN_C = ROOT / "device" / "c" / "nn_c"

F32, BITS, I32, I8 = 1, 2, 3, 4
BINARIZE, XNOR_CONV_2D, BINARY_MAX_POOL_2D = 20, 21, 22
SAME, VALID = 0, 1
NO = 0xFFFF


# ------------------------------------------------------------------ the specification in numpy


def words(c: int) -> int:
    return (c + 31) // 32


def pack(bits: np.ndarray) -> np.ndarray:
    """Bool [..., C] -> u32 [..., words(C)]: bit c % 32 of word c // 32, padding 0."""
    c = bits.shape[-1]
    padded = np.zeros(bits.shape[:-1] + (32 * words(c),), dtype=np.uint64)
    padded[..., :c] = bits
    w = padded.reshape(bits.shape[:-1] + (words(c), 32))
    return (w << np.arange(32, dtype=np.uint64)).sum(-1).astype(np.uint32)


def unpack(w: np.ndarray, c: int) -> np.ndarray:
    b = (w[..., None].astype(np.uint64) >> np.arange(32, dtype=np.uint64)) & 1
    return b.reshape(w.shape[:-1] + (32 * w.shape[-1],))[..., :c].astype(bool)


def out_size(padding: int, size: int, k: int, s: int) -> tuple[int, int]:
    """(output size, pad before) as FORMAT.md gives them."""
    o = (size + s - 1) // s if padding == SAME else (size - k + s) // s
    return o, max((o - 1) * s + k - size, 0) // 2


def ref_binarize(x: np.ndarray, bounds: np.ndarray) -> np.ndarray:
    x = x.astype(np.int64)
    return (bounds[:, 0] <= x) & (x <= bounds[:, 1])


def ref_counts(x: np.ndarray, w: np.ndarray, padding: int, sh: int, sw: int) -> np.ndarray:
    """m [N, OH, OW, C_out]: XOR counts over the taps, -1 (False) outside the image."""
    n, h, wd, _ = x.shape
    cout, kh, kw, _ = w.shape
    oh, pt = out_size(padding, h, kh, sh)
    ow, pl = out_size(padding, wd, kw, sw)
    m = np.zeros((n, oh, ow, cout), dtype=np.int64)
    for oy in range(oh):
        for ox in range(ow):
            field_ = np.zeros((n, kh, kw, x.shape[3]), dtype=bool)
            for ky in range(kh):
                for kx in range(kw):
                    iy, ix = oy * sh - pt + ky, ox * sw - pl + kx
                    if 0 <= iy < h and 0 <= ix < wd:
                        field_[:, ky, kx] = x[:, iy, ix]
            m[:, oy, ox] = (field_[:, None] ^ w[None]).reshape(n, cout, -1).sum(-1)
    return m


def ref_pool(x: np.ndarray, padding: int, fh: int, fw: int, sh: int, sw: int) -> np.ndarray:
    n, h, wd, c = x.shape
    oh, pt = out_size(padding, h, fh, sh)
    ow, pl = out_size(padding, wd, fw, sw)
    y = np.zeros((n, oh, ow, c), dtype=bool)
    for oy in range(oh):
        for ox in range(ow):
            y0, x0 = max(oy * sh - pt, 0), max(ox * sw - pl, 0)
            y1, x1 = min(oy * sh - pt + fh, h), min(ox * sw - pl + fw, wd)
            y[:, oy, ox] = x[:, y0:y1, x0:x1].any(axis=(1, 2))
    return y


# ------------------------------------------------------------------ a version 2 writer


@dataclass
class T:
    dtype: int
    shape: tuple
    data: bytes | None = None  # a constant's bytes
    quant: int = 0
    scale: float = 0.0
    zero: int = 0

    def nbytes(self) -> int:
        if self.dtype == BITS:
            return 4 * words(self.shape[-1]) * int(np.prod(self.shape[:-1], dtype=np.int64))
        return int(np.prod(self.shape, dtype=np.int64)) * (1 if self.dtype == I8 else 4)


@dataclass
class G:
    tensors: list = field(default_factory=list)
    ops: list = field(default_factory=list)  # (kind, inputs, output, params)
    inputs: list = field(default_factory=list)
    outputs: list = field(default_factory=list)

    def add(self, t: T) -> int:
        self.tensors.append(t)
        return len(self.tensors) - 1


def to_bytes(gr: G) -> bytes:
    """The file of FORMAT.md: constants after the tables, activations one after another
    in the arena (a plan without reuse: never two live tensors in one byte)."""
    n_t, n_o = len(gr.tensors), len(gr.ops)
    data = 64 + 40 * n_t + 80 * n_o
    blobs, at, arena = [], data, 0
    recs = []
    for t in gr.tensors:
        nb = t.nbytes()
        if t.data is not None:
            off = at
            blobs.append(t.data + bytes(-len(t.data) % 4))
            at += len(blobs[-1])
            storage = 1
        else:
            off, storage = arena, 0
            arena += (nb + 3) & ~3
        dims = list(t.shape) + [1] * (4 - len(t.shape))
        scale = struct.unpack("<I", struct.pack("<f", t.scale))[0]
        recs.append(struct.pack("<BBBB4HIIIiIHHI", t.dtype, len(t.shape), storage, t.quant,
                                *dims, off, nb, scale, t.zero, 0, 0, 0, 0))
    for kind, ins, out, params in gr.ops:
        ins = list(ins) + [NO] * (3 - len(ins))
        p = list(params) + [0] * (16 - len(params))
        recs.append(struct.pack("<BBH3HHI16i", kind, sum(i != NO for i in ins), 0, *ins, out, 0,
                                *p))
    body = b"".join(recs) + b"".join(blobs)
    io = lambda v: list(v) + [NO] * (4 - len(v))  # noqa: E731
    head = struct.pack("<HHIIHHHHIIIIBBH4H4HI", 2, 64, 64 + len(body), 0, n_t, n_o, 40, 80, 64,
                       64 + 40 * n_t, data, arena, len(gr.inputs), len(gr.outputs), 0,
                       *io(gr.inputs), *io(gr.outputs), 0)
    blob = bytearray(b"PCNN" + head + body)
    struct.pack_into("<I", blob, 12, zlib.crc32(bytes(blob[16:])))
    return bytes(blob)


def recrc(blob: bytearray) -> bytes:
    struct.pack_into("<I", blob, 12, zlib.crc32(bytes(blob[16:])))
    return bytes(blob)


# ------------------------------------------------------------------ random binary graphs


@dataclass
class Net:
    """A graph and its numpy model: run(x) -> the int32 output."""

    graph: G
    layers: list  # ('binarize', bounds) / ('conv', w, ch, padding, sh, sw) / ('pool', ...)
    shape: tuple

    def blob(self) -> bytes:
        return to_bytes(self.graph)

    def run(self, x: np.ndarray) -> np.ndarray:
        v = x
        for la in self.layers:
            if la[0] == "binarize":
                v = ref_binarize(v, la[1])
            elif la[0] == "pool":
                v = ref_pool(v, *la[1:])
            else:
                _, w, ch, padding, sh, sw, bits_out = la
                m = ref_counts(v, w, padding, sh, sw)
                if bits_out:
                    v = m <= ch
                else:
                    n = w[0].size
                    v = ch[0].astype(np.int64) * (n - 2 * m) + ch[1]
                    assert np.all(np.abs(v) < 2**31)
                    v = v.astype(np.int32)
        return v


def random_net(seed: int, h: int = 9, w: int = 8, c: int = 3, convs=None, fc_out: int = 10,
               out_quant: int = 1) -> Net:
    """i8 [1, h, w, c] -> BINARIZE -> XNOR_CONV_2D / BINARY_MAX_POOL_2D layers (convs:
    ('conv', c_out, k, padding, stride) or ('pool', f, padding, stride)) -> a fully
    connected XNOR_CONV_2D with int32 output [1, 1, 1, fc_out]."""
    rng = np.random.default_rng(seed)
    convs = convs if convs is not None else [("conv", 40, 3, SAME, 1), ("pool", 2, VALID, 2),
                                             ("conv", 33, 3, VALID, 1)]
    gr = G()
    x = gr.add(T(I8, (1, h, w, c), quant=1, scale=1 / 128, zero=-5))
    gr.inputs.append(x)
    lo = rng.integers(-128, 60, c)
    bounds = np.stack([lo, lo + rng.integers(20, 300, c)], 1).astype(np.int32)
    bounds[0] = [-128, rng.integers(-50, 50)]  # an upper bound alone
    b = gr.add(T(I32, (c, 2), bounds.tobytes()))
    shape = (1, h, w, c)
    cur = gr.add(T(BITS, shape))
    gr.ops.append((BINARIZE, (x, b), cur, ()))
    layers: list = [("binarize", bounds)]
    for spec in convs:
        if spec[0] == "pool":
            _, f, padding, s = spec
            oh, pt = out_size(padding, shape[1], f, s)
            ow, pl = out_size(padding, shape[2], f, s)
            shape = (1, oh, ow, shape[3])
            y = gr.add(T(BITS, shape))
            gr.ops.append((BINARY_MAX_POOL_2D, (cur,), y, (padding, f, f, s, s, pt, pl)))
            layers.append(("pool", padding, f, f, s, s))
        else:
            _, cout, k, padding, s = spec
            wb = rng.random((cout, k, k, shape[3])) < 0.5
            n = k * k * shape[3]
            thr = rng.integers(n // 2 - 3 * int(np.sqrt(n)) // 2, n // 2 + 3 * int(np.sqrt(n)) // 2,
                               cout).astype(np.int32)
            thr[:2] = (-1, n)  # never, always
            oh, pt = out_size(padding, shape[1], k, s)
            ow, pl = out_size(padding, shape[2], k, s)
            wt = gr.add(T(BITS, wb.shape, pack(wb).tobytes()))
            ct = gr.add(T(I32, (cout,), thr.tobytes()))
            shape = (1, oh, ow, cout)
            y = gr.add(T(BITS, shape))
            gr.ops.append((XNOR_CONV_2D, (cur, wt, ct), y, (padding, s, s, pt, pl)))
            layers.append(("conv", wb, thr, padding, s, s, True))
        cur = y
    wb = rng.random((fc_out,) + shape[1:]) < 0.5
    n = wb[0].size
    a = rng.integers(-(2**31 - 1) // (2 * n), (2**31 - 1) // (2 * n), fc_out)
    ab = np.stack([a, rng.integers(-(2**30), 2**30, fc_out)]).astype(np.int32)
    wt = gr.add(T(BITS, wb.shape, pack(wb).tobytes()))
    ct = gr.add(T(I32, (2, fc_out), ab.tobytes()))
    y = gr.add(T(I32, (1, 1, 1, fc_out), quant=out_quant, scale=2.0**-20 if out_quant else 0.0))
    gr.ops.append((XNOR_CONV_2D, (cur, wt, ct), y, (VALID, 1, 1, 0, 0)))
    gr.outputs.append(y)
    layers.append(("conv", wb, ab, VALID, 1, 1, False))
    return Net(gr, layers, (1, h, w, c))


NETS = {
    "small": lambda: random_net(1),
    # SAME with stride 2 (uneven padding), a SAME pool, 64 channels (two whole words)
    "strided": lambda: random_net(2, 11, 10, 1, [("conv", 64, 3, SAME, 2),
                                                ("pool", 3, SAME, 2), ("conv", 31, 2, VALID, 1)]),
    # wide channels: three words a pixel, a 1x1 conv, a 5x5 filter larger than the padding
    "wide": lambda: random_net(3, 7, 7, 70, [("conv", 65, 1, VALID, 1),
                                             ("conv", 32, 5, SAME, 1)], fc_out=7, out_quant=0),
}


def inputs(net: Net, n: int, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(-128, 128, net.shape).astype(np.int8) for _ in range(n)]


# ------------------------------------------------------------------ running on the device

RUN = """
import nn, binascii
nn.use_backend({tier!r})
f = open({path!r}, 'rb')
m = nn.load(f.read(int(f.readline())))
print('T', ' '.join(m.tiers()))
for _ in range(int(f.readline())):
    x = f.read(int(f.readline()))
    y = m.forward(x)
    print('Y', binascii.hexlify(bytes(y)).decode(), m.predict(x))
"""


def _runner_tiers() -> list:
    out = [(r, t) for r in mpy.runners() for t in r.tiers]
    return out or [pytest.param(None, marks=pytest.mark.skip(reason=mpy.why_none()))]


def _ids(p) -> str:
    return f"{p[0].name}-{p[1]}"


RT = _runner_tiers()


def run_net(runner, tier: str, blob: bytes, xs: list[np.ndarray], tmp: Path):
    path = tmp / "case.bin"
    with open(path, "wb") as f:
        f.write(b"%d\n" % len(blob) + blob + b"%d\n" % len(xs))
        for x in xs:
            raw = x.tobytes()
            f.write(b"%d\n" % len(raw) + raw)
    lines = runner.run(RUN.format(tier=tier, path=str(path)), timeout=600,
                       dirs=(tmp,)).splitlines()
    tiers = lines[0].split()[1:]
    ys = [(np.frombuffer(bytes.fromhex(ln.split()[1]), "<i4"), int(ln.split()[2]))
          for ln in lines[1:]]
    return tiers, ys


def expected_tier(runner, tier: str) -> str:
    if tier in ("c", "natmod"):
        out = runner.run("from nn._tiers import C_MODULE\n"
                         "print(hasattr(C_MODULE, 'graph_run'))", timeout=60)
        return tier if out.strip() == "True" else "viper"
    return tier


@pytest.mark.parametrize("name", sorted(NETS))
@pytest.mark.parametrize("rt", RT, ids=_ids)
def test_bit_exact(rt, name, tmp_path):
    """Every tier computes the specification's int32 output (and its first maximum)."""
    runner, tier = rt
    net = NETS[name]()
    xs = inputs(net, 2 if tier == "python" else 4, seed=11)
    tiers, ys = run_net(runner, tier, net.blob(), xs, tmp_path)
    assert set(tiers) == {expected_tier(runner, tier)}, tiers
    for x, (y, k) in zip(xs, ys):
        want = net.run(x).reshape(-1)
        np.testing.assert_array_equal(y, want)
        assert k == int(np.argmax(want))
