"""Flash summary of a MicroPython firmware build: code, frozen code, frozen models.

    python tools/fwinfo.py --build-dir build/PICO/cmake --image build/PICO/firmware.bin \
        --board-h boards/PICO/mpconfigboard.h --flash-bytes 2097152 --size-tool arm-none-eabi-size

Frozen content in total is measured exactly (the allocated sections of the
frozen_content object); its split between the `nn` package, the model
modules (build/models/*.py) and the stock port modules is estimated from
their compiled .mpy sizes. With --board-h and --flash-bytes it also checks
that the image fits below the ROMFS partition and prints the flash layout.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from pathlib import Path

XIP_BASE = 0x10000000


def object_data_bytes(obj: Path, size_tool: str) -> int:
    """Bytes of .rodata*/.data* sections in an object file (``size -A``)."""
    out = subprocess.run([size_tool, "-A", str(obj)], check=True, capture_output=True,
                         text=True).stdout
    total = 0
    for line in out.splitlines():
        parts = line.split()
        if len(parts) >= 2 and re.match(r"\.(rodata|data)", parts[0]) and parts[1].isdigit():
            total += int(parts[1])
    return total


def board_define(header: Path, name: str) -> int | None:
    """Integer value of ``#define NAME (expr)`` in a board header (digits, * + - only)."""
    m = re.search(rf"^\s*#define\s+{name}\s+(.+?)\s*(//.*)?$", header.read_text(), re.MULTILINE)
    if not m:
        return None
    expr = m.group(1)
    if not re.fullmatch(r"[\d\s()*+-]+", expr):
        raise ValueError(f"{header}: cannot evaluate {name} = {expr}")
    return int(eval(expr, {"__builtins__": {}}))  # only digits and arithmetic, checked above


def kb(n: int) -> str:
    """Bytes as a short KB figure."""
    return f"{n / 1024:,.1f} KB"


def summarize(build_dir: Path, image: Path, models_dir: Path, size_tool: str,
              board_h: Path | None, flash_bytes: int | None) -> tuple[str, bool]:
    """The summary text, and whether the image fits its code region."""
    objs = sorted(build_dir.rglob("frozen_content*.o"))
    frozen_total = object_data_bytes(objs[0], size_tool) if objs else 0
    mpy_dir = build_dir / "frozen_mpy"
    mpys = {p.relative_to(mpy_dir).as_posix(): p.stat().st_size
            for p in mpy_dir.rglob("*.mpy")} if mpy_dir.is_dir() else {}
    model_names = {p.stem for p in models_dir.glob("*.py")} if models_dir.is_dir() else set()
    nn = sum(s for k, s in mpys.items() if k.startswith("nn/"))
    models = {k[:-4]: s for k, s in mpys.items() if k[:-4] in model_names}
    stock = sum(mpys.values()) - nn - sum(models.values())
    total_mpy = max(sum(mpys.values()), 1)
    # Scale the .mpy estimates so that the parts add up to the measured total.
    scale = frozen_total / total_mpy if frozen_total else 1.0
    size = image.stat().st_size
    lines = [f"{image}: {size:,} bytes ({kb(size)})",
             f"  firmware code        {size - frozen_total:>10,}",
             f"  frozen, total        {frozen_total:>10,}  (measured: frozen_content object)",
             f"    nn package         {round(nn * scale):>10,}  (estimated from .mpy sizes)",
             (f"    models ({len(models)})         {round(sum(models.values()) * scale):>10,}"
              "  (estimated from .mpy sizes)")]
    lines += [f"      {name:<16} {round(s * scale):>10,}" for name, s in sorted(models.items())]
    lines.append(f"    stock modules      {round(stock * scale):>10,}")
    ok = True
    if board_h is not None and flash_bytes is not None:
        romfs = board_define(board_h, "MICROPY_HW_ROMFS_BYTES") or 0
        fs = board_define(board_h, "MICROPY_HW_FLASH_STORAGE_BYTES")
        if fs is None:
            raise ValueError(f"{board_h} does not define MICROPY_HW_FLASH_STORAGE_BYTES")
        code = flash_bytes - fs - romfs
        ok = size <= code
        lines += [f"  flash layout ({kb(flash_bytes)}):",
                  (f"    code     {XIP_BASE:#010x}  {kb(code):>10}  used {size / code:.0%}"
                   f", {kb(code - size)} free for more frozen models"),
                  f"    ROMFS    {XIP_BASE + code:#010x}  {kb(romfs):>10}  (/rom)",
                  f"    littlefs {XIP_BASE + code + romfs:#010x}  {kb(fs):>10}  (/)"]
        if not ok:
            lines.append(f"ERROR: the image ({size:,} bytes) overflows the code region "
                         f"({code:,} bytes) into ROMFS: freeze fewer models or grow the region "
                         f"in {board_h}")
    return "\n".join(lines), ok


def main(argv: list[str] | None = None) -> int:
    """Command line (see the module docstring)."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--build-dir", type=Path, required=True, help="MicroPython build directory")
    p.add_argument("--image", type=Path, required=True, help="firmware .bin (or unix binary)")
    p.add_argument("--models", type=Path, default=Path("build/models"))
    p.add_argument("--size-tool", default="size", help="binutils size for the target")
    p.add_argument("--board-h", type=Path, help="mpconfigboard.h with the flash layout")
    p.add_argument("--flash-bytes", type=int, help="flash chip size in bytes")
    a = p.parse_args(argv)
    try:
        text, ok = summarize(a.build_dir, a.image, a.models, a.size_tool, a.board_h,
                             a.flash_bytes)
    except (OSError, ValueError, subprocess.CalledProcessError) as e:
        print(f"fwinfo: {e}", file=sys.stderr)
        return 1
    print(text)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
