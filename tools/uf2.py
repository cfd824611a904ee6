"""UF2 writer and reader for Raspberry Pi RP2040/RP2350 flash images.

Writes the same blocks as picotool's ``uf2 convert`` for a flat ``.bin``:
512-byte blocks, each carrying 256 bytes of flash starting at ``base``,
flagged with a family id (so the bootrom drops images for another chip).

    python tools/uf2.py firmware.bin firmware.uf2 [--family rp2040] [--base 0x10000000]
    python tools/uf2.py --info firmware.uf2

``with_segments`` adds data (models) at chosen flash addresses to a firmware UF2,
``segment_layout`` places several such segments one after another.
"""

from __future__ import annotations

import argparse
import struct
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

MAGIC_START0 = 0x0A324655  # "UF2\n"
MAGIC_START1 = 0x9E5D5157
MAGIC_END = 0x0AB16F30
FLAG_NOT_MAIN_FLASH = 0x00000001
FLAG_FAMILY_ID_PRESENT = 0x00002000
BLOCK_SIZE = 512
DATA_SIZE = 476  # bytes of the data field in every block
PAYLOAD_SIZE = 256  # bytes of flash per block (the RP2 flash page)
FLASH_BASE = 0x10000000  # XIP flash on RP2040 and RP2350

FAMILIES = {
    "rp2040": 0xE48BFF56,
    "absolute": 0xE48BFF57,
    "data": 0xE48BFF58,
    "rp2350-arm-s": 0xE48BFF59,
    "rp2350-riscv": 0xE48BFF5A,
    "rp2350-arm-ns": 0xE48BFF5B,
}
# RP2350-E10 workaround (picotool --abs-block): one extra block of family
# "absolute" aimed at the end of a 16 MB flash, ahead of the image.
ABS_BLOCK_ADDR = 0x10FFFF00

_HEADER = struct.Struct("<8I")  # magic0, magic1, flags, addr, size, block_no, num_blocks, family
_FOOTER = struct.Struct("<I")
_BLOCK_COUNT = struct.Struct("<II")  # block_no, num_blocks inside the header
_BLOCK_COUNT_OFFSET = 20


@dataclass(frozen=True)
class Block:
    """One decoded UF2 block."""

    flags: int
    target_addr: int
    payload: bytes
    block_no: int
    num_blocks: int
    family_id: int | None  # None when the family flag is absent (then the field is a file size)


def _pack_block(addr: int, payload: bytes, block_no: int, num_blocks: int, family_id: int) -> bytes:
    header = _HEADER.pack(MAGIC_START0, MAGIC_START1, FLAG_FAMILY_ID_PRESENT, addr,
                          PAYLOAD_SIZE, block_no, num_blocks, family_id)
    data = payload.ljust(PAYLOAD_SIZE, b"\x00").ljust(DATA_SIZE, b"\x00")
    return header + data + _FOOTER.pack(MAGIC_END)


def family_id_of(family: str | int) -> int:
    """A family id from a name in FAMILIES or a number; ValueError if unknown."""
    if isinstance(family, bool) or not isinstance(family, (str, int)):
        raise TypeError(f"family must be a name or an int, not {type(family).__name__}")
    if isinstance(family, int):
        if not 0 <= family <= 0xFFFFFFFF:
            raise ValueError(f"family id {family:#x} does not fit in 32 bits")
        return family
    try:
        return FAMILIES[family] if not family.lower().startswith("0x") else int(family, 16)
    except KeyError:
        raise ValueError(f"unknown UF2 family {family!r}; known: {', '.join(FAMILIES)}") from None


def bin_to_uf2(data: bytes, base: int = FLASH_BASE, family: str | int = "rp2040",
               abs_block: bool = False) -> bytes:
    """Encode a flat flash image that starts at ``base`` as UF2.

    The last block is padded with zeros. ``abs_block`` prepends picotool's
    RP2350-E10 block (ignored for rp2040, as picotool does).
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"data must be bytes, not {type(data).__name__}")
    data = bytes(data)
    if not data:
        raise ValueError("empty image: nothing to write")
    if base % PAYLOAD_SIZE:
        raise ValueError(f"base {base:#x} is not aligned to {PAYLOAD_SIZE} bytes")
    if base < 0 or base + len(data) > 1 << 32:
        raise ValueError(f"image {base:#x}+{len(data)} does not fit in the 32-bit address space")
    fam = family_id_of(family)
    n = (len(data) + PAYLOAD_SIZE - 1) // PAYLOAD_SIZE
    out = bytearray()
    if abs_block and fam not in (FAMILIES["rp2040"], FAMILIES["absolute"]):
        out += _pack_block(ABS_BLOCK_ADDR, b"\xef" * PAYLOAD_SIZE, 0, 2, FAMILIES["absolute"])
    for i in range(n):
        off = i * PAYLOAD_SIZE
        out += _pack_block(base + off, data[off:off + PAYLOAD_SIZE], i, n, fam)
    return bytes(out)


def parse_uf2(data: bytes) -> list[Block]:
    """Decode every block of a UF2 file; ValueError on a malformed block."""
    if len(data) % BLOCK_SIZE:
        raise ValueError(f"UF2 size {len(data)} is not a multiple of {BLOCK_SIZE}")
    blocks = []
    for i in range(0, len(data), BLOCK_SIZE):
        m0, m1, flags, addr, size, no, total, fam = _HEADER.unpack_from(data, i)
        (mend,) = _FOOTER.unpack_from(data, i + BLOCK_SIZE - 4)
        if (m0, m1, mend) != (MAGIC_START0, MAGIC_START1, MAGIC_END):
            raise ValueError(f"block {i // BLOCK_SIZE}: bad UF2 magic")
        if size > DATA_SIZE:
            raise ValueError(f"block {i // BLOCK_SIZE}: payload size {size} > {DATA_SIZE}")
        payload = bytes(data[i + 32:i + 32 + size])
        family = fam if flags & FLAG_FAMILY_ID_PRESENT else None
        blocks.append(Block(flags, addr, payload, no, total, family))
    return blocks


def uf2_to_bin(data: bytes, family: str | int | None = "rp2040") -> tuple[int, bytes]:
    """Flash contents of a UF2 file as ``(base address, image)``.

    Keeps only blocks of ``family`` (all main-flash blocks if None); gaps
    between blocks read as 0xFF (erased flash).
    """
    fam = None if family is None else family_id_of(family)
    chosen = [b for b in parse_uf2(data)
              if not b.flags & FLAG_NOT_MAIN_FLASH and (fam is None or b.family_id == fam)]
    if not chosen:
        raise ValueError("no flash blocks of the requested family in this UF2")
    base = min(b.target_addr for b in chosen)
    end = max(b.target_addr + len(b.payload) for b in chosen)
    image = bytearray(b"\xff" * (end - base))
    for b in chosen:
        image[b.target_addr - base:b.target_addr - base + len(b.payload)] = b.payload
    return base, bytes(image)


def with_segments(firmware_uf2: bytes, segments: Iterable[tuple[int, bytes]],
                  family: str | int = "rp2040") -> bytes:
    """The firmware UF2 plus data segments (flash address, bytes), renumbered as one file.

    Keeps the firmware's blocks of ``family``; segments must not overlap the firmware or
    each other, and each starts on a 256-byte page (ValueError otherwise).
    """
    fam = family_id_of(family)
    blocks = [b for b in parse_uf2(firmware_uf2) if b.family_id == fam]
    if not blocks:
        raise ValueError(f"no {family} blocks in the firmware UF2")
    used = [(b.target_addr, b.target_addr + PAYLOAD_SIZE) for b in blocks]
    parts = [bin_to_uf2(b.payload, b.target_addr, fam) for b in blocks]
    for addr, data in segments:
        if addr % PAYLOAD_SIZE:
            raise ValueError(f"segment at {addr:#x} is not on a {PAYLOAD_SIZE}-byte page")
        end = addr + len(data)
        for lo, hi in used:
            if addr < hi and lo < end:
                raise ValueError(f"segment {addr:#x}..{end:#x} overlaps {lo:#x}..{hi:#x}")
        used.append((addr, end))
        parts.append(bin_to_uf2(bytes(data), addr, fam))
    out = bytearray(b"".join(parts))
    n = len(out) // BLOCK_SIZE
    for i in range(n):  # block_no, num_blocks: one file now
        _BLOCK_COUNT.pack_into(out, i * BLOCK_SIZE + _BLOCK_COUNT_OFFSET, i, n)
    return bytes(out)


def segment_layout(sizes: Iterable[int], base: int, align: int = 4096) -> list[tuple[int, int]]:
    """(flash address, length) of segments of these sizes placed one after another from
    ``base``, each on an ``align``-byte boundary (a flash erase sector by default)."""
    out, addr = [], base
    for n in sizes:
        out.append((addr, n))
        addr += (n + align - 1) // align * align
    return out


def main(argv: list[str] | None = None) -> int:
    """Command line: convert a .bin to .uf2, or print a UF2 file's summary."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("input", type=Path, help=".bin to convert (or .uf2 with --info)")
    p.add_argument("output", type=Path, nargs="?", help=".uf2 to write")
    p.add_argument("--family", default="rp2040",
                   help=f"family name ({', '.join(FAMILIES)}) or hex id (default rp2040)")
    p.add_argument("--base", type=lambda s: int(s, 0), default=FLASH_BASE,
                   help="flash address of the first byte (default 0x10000000)")
    p.add_argument("--abs-block", action="store_true",
                   help="prepend the RP2350-E10 workaround block, as picotool does for RP2350")
    p.add_argument("--info", action="store_true", help="summarize a UF2 file")
    a = p.parse_args(argv)
    try:
        if a.info:
            blocks = parse_uf2(a.input.read_bytes())
            fams = sorted({b.family_id for b in blocks if b.family_id is not None})
            names = {v: k for k, v in FAMILIES.items()}
            for f in fams:
                sel = [b for b in blocks if b.family_id == f]
                lo = min(b.target_addr for b in sel)
                hi = max(b.target_addr + len(b.payload) for b in sel)
                print(f"{names.get(f, hex(f))}: {len(sel)} blocks, {lo:#010x}..{hi:#010x}")
            return 0
        if a.output is None:
            p.error("output .uf2 path is required")
        uf2 = bin_to_uf2(a.input.read_bytes(), a.base, a.family, a.abs_block)
        a.output.write_bytes(uf2)
        print(f"wrote {a.output} ({len(uf2) // BLOCK_SIZE} blocks)")
        return 0
    except (OSError, ValueError, TypeError) as e:
        print(f"uf2: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
