"""tools/uf2.py: UF2 block structure, family ids, addresses, round trips, data segments."""

from __future__ import annotations

import itertools
import struct
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))

import uf2

EXTRA_BASE = uf2.FLASH_BASE + 0x200000  # a segment 2 MB in, past a Pico's flash


def _image(n: int, seed: int = 0) -> bytes:
    return np.random.default_rng(seed).integers(0, 256, n, dtype=np.uint8).tobytes()


def test_block_fields_follow_the_uf2_spec() -> None:
    data = _image(3 * 256 + 17)
    out = uf2.bin_to_uf2(data, base=0x10000000, family="rp2040")
    assert len(out) == 4 * 512
    for i in range(4):
        block = out[i * 512:(i + 1) * 512]
        m0, m1, flags, addr, size, no, total, fam = struct.unpack_from("<8I", block)
        assert (m0, m1) == (0x0A324655, 0x9E5D5157)
        assert struct.unpack_from("<I", block, 508)[0] == 0x0AB16F30
        assert flags == 0x2000  # family id present, nothing else
        assert addr == 0x10000000 + 256 * i
        assert size == 256
        assert (no, total) == (i, 4)
        assert fam == 0xE48BFF56
        payload = data[256 * i:256 * (i + 1)]
        assert block[32:32 + len(payload)] == payload
        assert block[32 + len(payload):508] == bytes(508 - 32 - len(payload))  # zero padding


def test_round_trip_and_last_block_padding() -> None:
    data = _image(1000, seed=1)
    base, back = uf2.uf2_to_bin(uf2.bin_to_uf2(data, base=0x10004000))
    assert base == 0x10004000
    assert back[:len(data)] == data
    assert back[len(data):] == bytes(len(back) - len(data))  # picotool pads with zeros
    assert len(back) == 1024


def test_rp2350_family_and_e10_block() -> None:
    data = _image(600, seed=2)
    out = uf2.bin_to_uf2(data, family="rp2350-arm-s", abs_block=True)
    blocks = uf2.parse_uf2(out)
    first = blocks[0]
    assert first.family_id == 0xE48BFF57 and first.target_addr == 0x10FFFF00
    assert (first.block_no, first.num_blocks) == (0, 2)
    assert first.payload == b"\xef" * 256
    image_blocks = blocks[1:]
    assert [b.block_no for b in image_blocks] == [0, 1, 2]
    assert {b.num_blocks for b in image_blocks} == {3}
    assert {b.family_id for b in image_blocks} == {0xE48BFF59}
    base, back = uf2.uf2_to_bin(out, family="rp2350-arm-s")
    assert base == 0x10000000 and back[:600] == data
    # The E10 block is never added to an RP2040 image (picotool does the same).
    assert len(uf2.parse_uf2(uf2.bin_to_uf2(data, abs_block=True))) == 3


def test_gaps_read_as_erased_flash_and_family_filter() -> None:
    a = uf2.bin_to_uf2(b"\x11" * 256, base=0x10000000)
    b = uf2.bin_to_uf2(b"\x22" * 256, base=0x10000400, family="rp2350-arm-s")
    c = uf2.bin_to_uf2(b"\x33" * 256, base=0x10000200)
    base, img = uf2.uf2_to_bin(a + c, family="rp2040")
    assert base == 0x10000000
    assert img == b"\x11" * 256 + b"\xff" * 256 + b"\x33" * 256
    assert uf2.uf2_to_bin(a + b, family="rp2350-arm-s") == (0x10000400, b"\x22" * 256)
    with pytest.raises(ValueError, match="no flash blocks"):
        uf2.uf2_to_bin(a, family="rp2350-riscv")


def test_bad_input_is_rejected_clearly() -> None:
    with pytest.raises(ValueError, match="empty"):
        uf2.bin_to_uf2(b"")
    with pytest.raises(ValueError, match="aligned"):
        uf2.bin_to_uf2(b"x", base=0x10000001)
    with pytest.raises(ValueError, match="unknown UF2 family"):
        uf2.bin_to_uf2(b"x", family="esp32")
    with pytest.raises(TypeError):
        uf2.bin_to_uf2("text")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="multiple of 512"):
        uf2.parse_uf2(b"\0" * 100)
    broken = bytearray(uf2.bin_to_uf2(b"x"))
    broken[0] ^= 0xFF
    with pytest.raises(ValueError, match="magic"):
        uf2.parse_uf2(bytes(broken))


def test_cli_writes_the_same_bytes(tmp_path: Path) -> None:
    data = _image(700, seed=3)
    src, dst = tmp_path / "fw.bin", tmp_path / "fw.uf2"
    src.write_bytes(data)
    assert uf2.main([str(src), str(dst), "--family", "rp2040"]) == 0
    assert dst.read_bytes() == uf2.bin_to_uf2(data)
    assert uf2.main([str(tmp_path / "missing.bin"), str(dst)]) == 1


def test_uf2_segments_land_at_their_addresses(rng: np.random.Generator) -> None:
    fw = rng.integers(0, 256, 3 * 256 + 10, dtype=np.uint8).tobytes()
    seg = rng.integers(0, 256, 1000, dtype=np.uint8).tobytes()
    out = uf2.with_segments(uf2.bin_to_uf2(fw), [(EXTRA_BASE, seg)])
    blocks = uf2.parse_uf2(out)
    assert [b.block_no for b in blocks] == list(range(len(blocks)))
    assert {b.num_blocks for b in blocks} == {len(blocks)}
    base, image = uf2.uf2_to_bin(out)
    assert base == uf2.FLASH_BASE
    assert image[:len(fw)] == fw
    off = EXTRA_BASE - base
    assert image[off:off + len(seg)] == seg
    assert set(image[len(fw) + 246:off]) <= {0xFF}  # the gap is not written


def test_uf2_segments_refuse_overlap_and_misalignment() -> None:
    fw = uf2.bin_to_uf2(b"\1" * 600)
    with pytest.raises(ValueError, match="overlaps"):
        uf2.with_segments(fw, [(uf2.FLASH_BASE + 512, b"x")])
    with pytest.raises(ValueError, match="page"):
        uf2.with_segments(fw, [(EXTRA_BASE + 10, b"x")])
    with pytest.raises(ValueError, match="overlaps"):
        uf2.with_segments(fw, [(EXTRA_BASE, b"x" * 300), (EXTRA_BASE + 256, b"y")])


def test_segment_layout_is_aligned_and_disjoint() -> None:
    blobs = [b"a" * 5000, b"b" * 10, b"c" * 4096]
    lay = uf2.segment_layout([len(b) for b in blobs], EXTRA_BASE)
    assert lay[0][0] == EXTRA_BASE
    for (addr, n), blob in zip(lay, blobs):
        assert addr % 4096 == 0 and n == len(blob)
    for (a0, n0), (a1, _) in itertools.pairwise(lay):
        assert a0 + n0 <= a1


@pytest.mark.device
@pytest.mark.parametrize("board, family", [("PICO", "rp2040"), ("PICO2", "rp2350-arm-s")])
def test_built_firmware_uf2_matches_its_bin(board: str, family: str) -> None:
    bin_path = ROOT / "build" / board / "firmware.bin"
    uf2_path = ROOT / "build" / board / "firmware.uf2"
    if not (bin_path.is_file() and uf2_path.is_file()):
        pytest.skip(f"no {board} firmware built (make firmware BOARD={board})")
    data = bin_path.read_bytes()
    base, back = uf2.uf2_to_bin(uf2_path.read_bytes(), family=family)
    assert base == 0x10000000
    assert back[:len(data)] == data
    assert not any(back[len(data):])
    # A Cortex-M image: the second word (reset vector) points into flash, Thumb bit set.
    # RP2040 images start with the 256-byte boot2 stage, RP2350 ones with the vector table.
    vectors = data[256:264] if family == "rp2040" else data[0:8]
    sp, reset = struct.unpack("<2I", vectors)
    assert 0x20000000 <= sp <= 0x20082000
    assert 0x10000000 <= reset < 0x10000000 + len(data) and reset & 1
