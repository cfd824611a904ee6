"""The built firmware: PICO booted in the virtual Pico, and the UNIX port binary.

`make test` builds both first when it can (MicroPython tree + toolchain);
without them these tests skip with the reason.
"""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))

PICO_UF2 = ROOT / "build" / "PICO" / "firmware.uf2"
UNIX_BIN = ROOT / "build" / "UNIX" / "micropython"
BOARD_H = ROOT / "boards" / "PICO" / "mpconfigboard.h"
HAS_NN = (ROOT / "device" / "nn" / "__init__.py").is_file()
HAS_NN_C = any((ROOT / "device" / "c").glob("**/micropython.cmake"))


def _frozen_names(build_dir: Path) -> list[str]:
    """Module names frozen into a build (from its generated frozen_content.c)."""
    src = next(iter(build_dir.rglob("frozen_content.c")), None)
    if src is None:
        return []
    return re.findall(r'MICROPY_FROZEN_LIST_ITEM\("([^"]+)"', src.read_text())


def _board_kb(name: str) -> int:
    m = re.search(rf"#define\s+{name}\s+\((\d+) \* 1024\)", BOARD_H.read_text())
    assert m, f"{BOARD_H} lost its {name}"
    return int(m.group(1))


@pytest.fixture(scope="module")
def pico() -> Iterator[object]:
    """One virtual Pico running build/PICO/firmware.uf2 for the whole module."""
    if not PICO_UF2.is_file():
        pytest.skip("no build/PICO/firmware.uf2: `make firmware` needs the MicroPython tree "
                    "and the Arm toolchain (see its message)")
    pytest.importorskip("rp2040py", reason="rp2040py (the virtual Pico) is not installed")
    import vpico

    with vpico.VirtualPico(PICO_UF2, boot_timeout=300) as p:
        yield p


def test_pico_runs_our_micropython(pico) -> None:
    out = pico.run_script("import sys\nprint(sys.implementation.version)\n"
                          "print(sys.implementation._machine)")
    version, machine = out.strip().splitlines()
    assert version == "(1, 28, 0, '')"
    assert machine == "Raspberry Pi Pico (piconn) with RP2040"


def test_pico_flash_layout_matches_the_board(pico) -> None:
    out = pico.run_script(
        "import os, vfs\n"
        "s = os.statvfs('/')\n"
        "print(s[0] * s[2])\n"
        "print(vfs.rom_ioctl(1))\n"
        "r = vfs.rom_ioctl(2, 0)\n"
        "print(r.ioctl(4, 0) * r.ioctl(5, 0))\n")
    fs_bytes, n_romfs, romfs_bytes = (int(x) for x in out.split())
    assert fs_bytes == _board_kb("MICROPY_HW_FLASH_STORAGE_BYTES") * 1024
    assert n_romfs == 1
    assert romfs_bytes == _board_kb("MICROPY_HW_ROMFS_BYTES") * 1024


def test_pico_ticks_follow_emulated_cycles(pico) -> None:
    # The clock is the RP2040's 125 MHz; a fixed workload takes the same number of
    # emulated microseconds each time, whatever the host's load.
    out = pico.run_script(
        "import machine, time\n"
        "print(machine.freq())\n"
        "def work():\n"
        "    t = time.ticks_us()\n"
        "    s = 0\n"
        "    for i in range(300):\n"
        "        s += i * i\n"
        "    return time.ticks_diff(time.ticks_us(), t)\n"
        "work()\n"
        "print(work(), work())\n"
        "t = time.ticks_us(); time.sleep_us(20_000); print(time.ticks_diff(time.ticks_us(), t))\n")
    lines = out.split("\n")
    assert int(lines[0]) == 125_000_000
    a, b = (int(x) for x in lines[1].split())
    assert a > 100  # 300 bytecode iterations take well over 100 us on an M0+
    assert abs(a - b) <= max(3, a // 50), (a, b)
    assert 20_000 <= int(lines[2]) < 20_500


def test_pico_reports_device_errors(pico) -> None:
    import vpico

    with pytest.raises(vpico.DeviceError, match="ZeroDivisionError") as e:
        pico.run_script("print('before')\n1 / 0")
    assert e.value.stdout.strip() == "before"
    assert pico.run_script("print(6 * 7)").strip() == "42"  # still usable afterwards


def test_pico_imports_nn(pico) -> None:
    if not HAS_NN:
        pytest.skip("device/nn/__init__.py does not exist yet")
    out = pico.run_script("import nn\nprint(nn.__name__, type(nn).__name__)")
    assert out.strip() == "nn module"


def test_pico_imports_the_c_module(pico) -> None:
    if not HAS_NN_C:
        pytest.skip("device/c has no micropython.cmake yet: firmware built without _nn_c")
    out = pico.run_script("import _nn_c\nprint(type(_nn_c).__name__)")
    assert out.strip() == "module"


def test_pico_has_the_frozen_models(pico) -> None:
    frozen = set(_frozen_names(ROOT / "build" / "PICO" / "cmake"))
    models = sorted(p.stem for p in (ROOT / "build" / "models").glob("*.py") if p.stem in frozen)
    if not models:
        pytest.skip("no model module in build/models was frozen into the PICO firmware")
    code = "".join(f"import {m}\n" for m in models) + "print('ok')"
    assert pico.run_script(code).strip() == "ok"


def _unix(code: str) -> subprocess.CompletedProcess[str]:
    if not UNIX_BIN.is_file():
        pytest.skip("no build/UNIX/micropython: `make firmware BOARD=UNIX` needs the "
                    "MicroPython tree")
    return subprocess.run([str(UNIX_BIN), "-c", code], capture_output=True, text=True,
                          timeout=120, check=False, cwd=UNIX_BIN.parent)


def test_unix_port_version_and_frozen_stock_modules() -> None:
    r = _unix("import sys, asyncio\nprint(sys.implementation.version)")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "(1, 28, 0, '')"


def test_unix_port_imports_nn() -> None:
    if not HAS_NN:
        pytest.skip("device/nn/__init__.py does not exist yet")
    r = _unix("import nn\nprint(nn.__name__)")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "nn"


def test_unix_port_imports_the_c_module() -> None:
    if not any((ROOT / "device" / "c").glob("**/micropython.mk")):
        pytest.skip("device/c has no micropython.mk yet: unix port built without _nn_c")
    r = _unix("import _nn_c\nprint(type(_nn_c).__name__)")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "module"
