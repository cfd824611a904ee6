"""Type-check the device code against MicroPython's stubs, not CPython's stdlib.

mypy runs with a custom typeshed assembled in a temporary folder: the stdlib of
`micropython-stdlib-stubs` overlaid with the rp2 port's stubs
(`micropython-rp2-rpi-pico-stubs`: micropython, uctypes, machine, ...), so a
CPython-only module or function used on the device is an error. The `nn`
package's own stubs (device/nn/__init__.pyi) are checked against the demo that
uses them.
"""

from __future__ import annotations

import importlib.metadata as md
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
STDLIB_DIST = "micropython-stdlib-stubs"
PORT_DIST = "micropython-rp2-rpi-pico-stubs"


def _files(dist: str) -> list[tuple[Path, str]]:
    try:
        d = md.distribution(dist)
    except md.PackageNotFoundError:
        pytest.skip(f"{dist} not installed (test extras: pip install -e '.[test]')")
    out = []
    for f in d.files or []:
        rel = str(f)
        if ".dist-info" in rel or not rel.endswith(".pyi") and not rel.endswith("VERSIONS"):
            continue
        out.append((Path(d.locate_file(f)), rel))
    return out


def make_typeshed(dest: Path) -> Path:
    """dest/stdlib: MicroPython's stdlib stubs + the rp2 port's modules (listed in VERSIONS)."""
    std = dest / "stdlib"
    for src, rel in _files(STDLIB_DIST):
        parts = Path(rel).parts
        # the package ships stdlib/..., stubs/mypy-extensions/... and _mpy_shed/...
        if parts[0] == "stubs":
            target = dest / rel
        else:
            target = std / (Path(*parts[1:]) if parts[0] == "stdlib" else Path(rel))
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(src, target)
    added = {"_mpy_shed"}
    for src, rel in _files(PORT_DIST):
        (std / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(src, std / rel)
        added.add(Path(rel).parts[0].removesuffix(".pyi"))
    versions = std / "VERSIONS"
    known = {line.split(":")[0].strip() for line in versions.read_text().splitlines()
             if ":" in line}
    with open(versions, "a") as f:
        f.writelines(f"{mod}: 3.0-\n" for mod in sorted(added - known))
    return dest


def test_mypy_device_code(tmp_path):
    mypy = shutil.which("mypy", path=str(Path(sys.executable).parent))
    if mypy is None:
        pytest.skip("mypy not installed (test extras)")
    typeshed = make_typeshed(tmp_path / "typeshed")
    assert (typeshed / "stdlib" / "micropython.pyi").is_file()
    assert (typeshed / "stdlib" / "uctypes.pyi").is_file()
    cmd = [mypy, "--custom-typeshed-dir", str(typeshed), "--no-site-packages",
           "--python-version", "3.11", "--always-true", "_TYPING", "--check-untyped-defs",
           "--cache-dir", str(tmp_path / "cache"), "--no-error-summary",
           "device/nn", "device/demo_mnist.py"]
    p = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=False)
    assert p.returncode == 0, p.stdout + p.stderr


def test_mypy_refuses_cpython_only(tmp_path):
    """The stub setup really is MicroPython's: a CPython-only import is an error."""
    mypy = shutil.which("mypy", path=str(Path(sys.executable).parent))
    if mypy is None:
        pytest.skip("mypy not installed (test extras)")
    typeshed = make_typeshed(tmp_path / "typeshed")
    src = tmp_path / "cpython_only.py"
    src.write_text("import subprocess\nimport micropython\nmicropython.heap_lock()\n")
    p = subprocess.run([mypy, "--custom-typeshed-dir", str(typeshed), "--no-site-packages",
                        "--cache-dir", str(tmp_path / "cache"), str(src)],
                       capture_output=True, text=True, check=False)
    assert p.returncode == 1 and "subprocess" in p.stdout, p.stdout + p.stderr
    assert "micropython" not in p.stdout
