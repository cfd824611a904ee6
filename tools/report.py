"""Benchmark tables and chart from the rows of tools/bench.py (build/bench.json).

One source for the tables: ``markdown(rows)`` is both build/bench.md and the tables
of README.md's Benchmarks section (``update_readme`` puts them there).

    .venv/bin/python tools/report.py                    # build/bench.md and .png from bench.json
    .venv/bin/python tools/report.py --readme README.md # also the README's tables
    .venv/bin/python tools/report.py --out DIR --readme README.md --section cnn
                                                        # only the CNN section (--only cnn)
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from bench_host import (
    EXTRA_BASE,
    LADDER,
    PUBLISHED,
    PUBLISHED_LADDER_SECTION,
    PUBLISHED_SECTION,
    TIERS,
    VARIANTS,
)

ROOT = Path(__file__).resolve().parent.parent

EMULATOR_NOTE = (
    "Times are emulated (virtual Pico: rp2040py, RP2040 at 125 MHz; `time.ticks_us()` follows "
    "emulated cycles). The emulator does not model flash cache misses: it reads flash like SRAM, "
    "while the real RP2040 reads flash through a 16 KB XIP cache (8-byte lines, ~400 ns per miss). "
    "Weights larger than the cache are streamed every inference and mostly miss on hardware, so "
    "the flash bytes each inference reads are reported beside every time; `miss bound` is "
    "lines read x 400 ns, the most the misses could add."
)
VARIANTS_HEADING = "### The model variants (MNIST 784-128-10), emulated RP2040"
LADDER_HEADING = ("### The float size ladder (float32, {tiers}) beside the C++ baseline, "
                  "emulated RP2040")
NOTES_HEADING = "Notes on the tables:"
INT8_HEADING = "### int8 TFLite models (MLPerf Tiny), emulated RP2040"
CNN_HEADING = "### MNIST CNNs, emulated RP2040"
README_END = "![benchmark chart]"  # the README line after the tables

# ---------------------------------------------------------------------------------- cells


def _ms(us: float | None) -> str:
    if us is None:
        return "—"
    ms = us / 1000
    return f"{ms:,.0f}" if ms >= 100 else f"{ms:.3g}"


def _kb(n: float | None) -> str:
    if n is None:
        return "—"
    return f"{n / 1024:,.1f} KB" if n >= 1024 else f"{n:,.0f} B"


def _pct(a: float | None) -> str:
    return "—" if a is None else f"{100 * a:.2f}%"


def _yes(v: bool | None) -> str:
    return {True: "yes", False: "no", None: "—"}[v]


def _bar(r: dict) -> str:
    if r.get("bar_us") is None:
        return ""
    verdict = {True: "yes", False: "**no**", None: "—"}[r.get("meets_bar")]
    return f"≤ {_ms(r['bar_us'])} ms: {verdict}"


def _flash(r: dict) -> str:
    text = _kb(r.get("flash_bytes_read"))
    if r.get("flash_method") == "estimated" and r.get("flash_bytes_read") is not None:
        text += " (est.)"
    return text


def _tier(r: dict) -> str:
    text = r["tier"] + (" (python kernels)" if r.get("fallback_of") else "")
    return text + (" **failed**" if r.get("error") else "")


# ---------------------------------------------------------------------------------- tables


@dataclass(frozen=True)
class Column:
    """A table column: its heading, its markdown alignment and how a row fills it."""

    heading: str
    align: str  # "---" left, "---:" right, ":-:" centre
    cell: Callable[[dict], str | None]  # None: a cell that does not apply (left blank)


def _line(cells: Sequence[str | None]) -> str:
    return "|" + "|".join(" " if c is None else f" {c} " for c in cells) + "|"


def table(columns: Sequence[Column], rows: Sequence[dict]) -> str:
    """A markdown table: heading line, alignment line, one line per row."""
    lines = [_line([c.heading for c in columns]), "|" + "|".join(c.align for c in columns) + "|"]
    lines += [_line([c.cell(r) for c in columns]) for r in rows]
    return "\n".join(lines) + "\n"


def _published(cell: Callable[[dict], str | None]) -> Callable[[dict], str | None]:
    """A variants column that the published figures leave blank."""
    return lambda r: None if r.get("section") == PUBLISHED_SECTION else cell(r)


VARIANT_COLUMNS = (
    Column("model", "---", lambda r: (f"*C++ baseline: {r['variant']}*"
                                      if r.get("section") == PUBLISHED_SECTION
                                      else r["variant"])),
    Column("tier", "---", lambda r: r["tier"] if r.get("section") == PUBLISHED_SECTION else _tier(r)),
    Column("ms / inference", "---:", lambda r: _ms(r.get("us"))),
    Column("digits", "---:", _published(lambda r: str(r.get("digits") or "—"))),
    Column("bar (ms)", "---", _published(_bar)),
    Column("accuracy (10k)", "---:", lambda r: _pct(r.get("accuracy"))),
    Column("model", "---:", _published(lambda r: _kb(r.get("model_bytes")))),
    Column("flash read / inference", "---:", _published(_flash)),
    Column("miss bound (ms)", "---:", _published(lambda r: _ms(r.get("miss_bound_us")))),
    Column("heap", "---:", _published(lambda r: _kb(r.get("heap_bytes")))),
    Column("no alloc", ":-:", _published(lambda r: _yes(r.get("alloc_free")))),
)


def variants_table(rows: list[dict]) -> str:
    """Markdown table of the MNIST variants (784-128-10) and the published figures."""
    names = [v.name for v in VARIANTS]

    def order(r: dict) -> tuple[int, int]:
        name = r.get("model")
        return (names.index(name) if name in names else len(names),
                TIERS.index(r["tier"]) if r.get("tier") in TIERS else len(TIERS))

    cells = sorted((r for r in rows if r.get("section") == "variants"), key=order)
    return table(VARIANT_COLUMNS, cells + [r for r in rows if r.get("section") == PUBLISHED_SECTION])


def ladder_tiers(rows: list[dict]) -> list[str]:
    """The tiers with timed ladder rows (c when there are none)."""
    return [t for t in TIERS if any(r.get("section") == "ladder" and r.get("tier") == t
                                    and r.get("us") is not None for r in rows)] or ["c"]


def ladder_table(rows: list[dict]) -> str:
    """Markdown table of the float size ladder beside the published ladder."""
    published = {r["model"]: r for r in rows if r.get("section") == PUBLISHED_LADDER_SECTION}
    lines = []  # one dict per architecture: its rows by tier and the published figures
    for arch in LADDER:
        cells = {r["tier"]: r for r in rows if r.get("section") == "ladder" and r["model"] == arch}
        if cells or arch in published:
            lines.append({"arch": arch, "tiers": cells, "published": published.get(arch, {})})

    def first(line: dict) -> dict:
        return next(iter(line["tiers"].values()), {})

    def time_of(t: str) -> Callable[[dict], str]:
        def cell(line: dict) -> str:
            r = line["tiers"].get(t)
            return "—" if r is None or r.get("us") is None else f"{_ms(r['us'])} ({r.get('digits')})"
        return cell

    def c_row(line: dict) -> dict:
        return line["tiers"].get("c", first(line))

    def published_s(line: dict) -> str:
        us = line["published"].get("us")
        return f"~{us / 1e6:.2f}" if us else "—"

    columns = (
        Column("float MLP", "---", lambda line: line["arch"]),
        Column("accuracy (10k)", "---:", lambda line: _pct(first(line).get("accuracy"))),
        Column("model", "---:", lambda line: _kb(first(line).get("model_bytes"))),
        *(Column(f"{t} ms / image (digits)", "---:", time_of(t)) for t in ladder_tiers(rows)),
        Column("flash read / image", "---:", lambda line: _kb(c_row(line).get("flash_bytes_read"))),
        Column("heap", "---:", lambda line: _kb(c_row(line).get("heap_bytes"))),
        Column("C++ baseline: accuracy", "---:",
               lambda line: _pct(line["published"].get("accuracy"))),
        Column("C++ baseline: s / image", "---:", published_s),
    )
    return table(columns, lines)


def _int8_exact(r: dict) -> str:
    if r.get("exact") is None:
        return "—"
    n = r.get("inputs")
    return ("yes" if r["exact"] else "**no**") + (f" ({n})" if n else "")


INT8_COLUMNS = (
    Column("model", "---", lambda r: r["model"]),
    Column("tier", "---", _tier),
    Column("ms", "---:", lambda r: _ms(r.get("us"))),
    Column("MACs", "---:", lambda r: f"{r['macs']:,}" if r.get("macs") else "—"),
    Column("cycles/MAC", "---:",
           lambda r: "—" if r.get("cycles_per_mac") is None else f"{r['cycles_per_mac']:.1f}"),
    Column("flash read / inference", "---:", lambda r: _kb(r.get("flash_bytes_read"))),
    Column("arena", "---:", lambda r: _kb(r.get("arena_bytes"))),
    Column("RAM", "---:", lambda r: _kb(r.get("ram_bytes"))),
    Column("exact", ":-:", _int8_exact),
    Column("TFLite Micro ms", "---:", lambda r: _ms(r.get("tflm_us"))),
    Column("TFLite Micro arena", "---:", lambda r: _kb(r.get("tflm_arena_bytes"))),
)
INT8_MODELS = ("kws", "vww", "ic", "ad")  # MLPerf Tiny's order


def int8_table(rows: list[dict]) -> str:
    """Markdown table of the int8 TFLite models (section "int8"), by model then tier."""
    def order(r: dict) -> tuple[int, str, int]:
        name = r.get("model", "")
        return (INT8_MODELS.index(name) if name in INT8_MODELS else len(INT8_MODELS), name,
                TIERS.index(r["tier"]) if r.get("tier") in TIERS else len(TIERS))

    return table(INT8_COLUMNS, sorted((r for r in rows if r.get("section") == "int8"), key=order))


def int8_markdown(rows: list[dict]) -> str:
    """The int8 section (heading, table, notes); "" when rows have no int8 rows. No line
    of it but the first starts with "#" (update_readme ends the section at the next one)."""
    int8 = [r for r in rows if r.get("section") == "int8"]
    if not int8:
        return ""
    tinymaix = next((r["tinymaix_us"] for r in int8 if r.get("tinymaix_us")), None)
    notes = [
        ("- MLPerf Tiny's four int8 reference models (kws: DS-CNN keyword spotting, vww: "
         "MobileNet visual wake words 96x96, ic: ResNet-8 image classification, ad: "
         "autoencoder anomaly detection), imported from .tflite and run from flash (read in "
         "place through `uctypes.bytearray_at`). ms: emulated RP2040 at 125 MHz, mean over "
         "the inputs in the exact column (bytes of a fixed generator); c: one "
         "`_nn_c.graph_run` call per inference under `micropython.heap_lock()`, other "
         "tiers: one `forward()` of `nn.load`'s model with `nn.use_backend(tier)` (the "
         "collector off, the heap it takes measured)."),
        ("- exact: the device's outputs equal `piconn.int8_ops.run` (the reference "
         "arithmetic) on every timed input. Flash read: model bytes read from flash per "
         "inference, counted by the emulator. RAM: the arena plus the C kernels' 4 KB "
         "static scratch (`nn_graph_scratch`) plus the model object's heap "
         "(`gc.mem_alloc()` around the load; through `nn.load` the model object holds the "
         "arena)."),
        ("- TFLite Micro: the same models on the same emulated chip (raspberrypi/pico-tflmicro, "
         "CMSIS-NN kernels as plain C for the Cortex-M0+, -O2): time per inference and "
         "arena."),
    ]
    if tinymaix:
        notes.append("- TinyMaix (sipeed/TinyMaix benchmark.md): its 96x96 VWW MobileNet "
                     "takes 716 ms on an RP2040 overclocked to 280 MHz, about "
                     f"{_ms(tinymaix)} ms at 125 MHz.")
    mixed = [f"{r['model']} [{r['tier']}]: operators on {', '.join(r['operator_tiers'])}"
             + ("" if r.get("forward_alloc_bytes") is None
                else f", {r['forward_alloc_bytes']:,} B allocated per inference")
             for r in int8 if r.get("operator_tiers") and r["operator_tiers"] != [r["tier"]]]
    if mixed:
        notes.append("- Operators without a kernel in the row's tier run the next slower "
                     "tier's: " + "; ".join(mixed) + ".")
    failed = [f"{r['model']} [{r['tier']}]: {r['error']}" for r in int8 if r.get("error")]
    if failed:
        notes.append("- Failed: " + "; ".join(failed) + ".")
    return INT8_HEADING + "\n\n" + int8_table(rows) + "\n" + "\n".join(notes) + "\n"


def _cnn_exact(r: dict) -> str:
    if r.get("exact") is None:
        return "—"
    return ("yes" if r["exact"] else "**no**") + f" ({r.get('digits')})"


CNN_COLUMNS = (
    Column("model", "---", lambda r: f"{r['variant']} (`{r['model']}`)"),
    Column("tier", "---", _tier),
    Column("ms / inference", "---:", lambda r: _ms(r.get("us"))),
    Column("digits", "---:", lambda r: str(r.get("digits") or "—")),
    Column("accuracy (10k)", "---:", lambda r: _pct(r.get("accuracy"))),
    Column("MACs", "---:", lambda r: f"{r['macs']:,}" if r.get("macs") else "—"),
    Column("cycles/MAC", "---:",
           lambda r: "—" if r.get("cycles_per_mac") is None else f"{r['cycles_per_mac']:.1f}"),
    Column("model", "---:", lambda r: _kb(r.get("model_bytes"))),
    Column("flash read / inference", "---:", lambda r: _kb(r.get("flash_bytes_read"))),
    Column("arena", "---:", lambda r: _kb(r.get("arena_bytes"))),
    Column("RAM", "---:", lambda r: _kb(r.get("ram_bytes"))),
    Column("no alloc", ":-:", lambda r: _yes(r.get("alloc_free"))),
    Column("exact", ":-:", _cnn_exact),
)


def cnn_table(rows: list[dict]) -> str:
    """Markdown table of the MNIST CNNs (section "cnn"; the rows of kinds that were made), in
    bench_cnn.CNN_KINDS' order, then by tier."""
    from bench_cnn import CNN_KINDS

    names = [k.name for k in CNN_KINDS]

    def order(r: dict) -> tuple[int, str, int]:
        name = r.get("model", "")
        return (names.index(name) if name in names else len(names), name,
                TIERS.index(r["tier"]) if r.get("tier") in TIERS else len(TIERS))

    cells = [r for r in rows if r.get("section") == "cnn" and not r.get("missing")]
    return table(CNN_COLUMNS, sorted(cells, key=order))


def cnn_markdown(rows: list[dict]) -> str:
    """The CNN section (heading, table, notes); "" when rows have no CNN rows. A CNN that was
    not made is a note saying why. No line of it but the first starts with "#"."""
    cnn = [r for r in rows if r.get("section") == "cnn"]
    if not cnn:
        return ""
    notes = [
        ("- The CNNs of `make cnn-models`: the default CNN (`c16k3v-p2-c32k3vb-p2-f64-f10`: "
         "conv 3x3 x16, max pool, conv 3x3 x32, max pool, dense 64, dense 10) as float32, "
         "with half of its filters and hidden neurons removed (`piconn prune --structured "
         "0.5`, fine-tuned) as float32, and as int8; the small CNN "
         "(`c8k5s2vb-c16k3s2vb-f32-f10`) as int8; the XNOR CNN. Each runs from flash (read "
         "in place through `uctypes.bytearray_at`, placed by the benchmark UF2) through "
         "`nn.load` with `nn.use_backend(tier)`. ms: emulated RP2040 at 125 MHz, mean of "
         "`forward()` over the first `digits` MNIST test digits (the count fits the "
         "emulator's speed); the input is what the model takes (pixel/255 as float32, or "
         "quantized with its input scale and zero point), prepared before the timing."),
        ("- Accuracy: the reference (`piconn.int8_ops.run`, TFLite Micro's arithmetic for "
         "int8 and float32) over all 10,000 test images; exact: the device's outputs equal "
         "the reference's bit for bit on every timed digit. Flash read: model bytes read from "
         "flash by one inference, counted by the emulator. RAM: the model object's heap "
         "(`gc.mem_alloc()` around `nn.load`, its arena included) plus the C kernels' 4 KB "
         "static scratch when an operator runs on them. No alloc: an inference ran under "
         "`micropython.heap_lock()`."),
    ]
    mixed = [f"{r['model']} [{r['tier']}]: operators on {', '.join(r['operator_tiers'])}"
             for r in cnn if r.get("operator_tiers") and r["operator_tiers"] != [r["tier"]]
             and not r.get("fallback_of")]
    if mixed:
        notes.append("- Operators without a kernel in the row's tier run the next slower "
                     "tier's: " + "; ".join(mixed) + ".")
    fallbacks = [r for r in cnn if r.get("fallback_of")]
    if fallbacks:
        timed = [r for r in fallbacks if r.get("us") is not None]
        notes.append("- (python kernels): every operator of the model runs the plain-Python "
                     "kernels in this tier (float32 layers: viper has no float arithmetic of "
                     "its own), so the row is the python tier's; "
                     + ("timed with `--measure-fallbacks` (minutes of emulation per digit)"
                        if len(timed) == len(fallbacks) else
                        "not timed (minutes of emulation per digit; `bench.py "
                        "--measure-fallbacks` times it)" if not timed else
                        "the rows with a time timed with `--measure-fallbacks` (minutes of "
                        "emulation per digit), the others not timed") + ".")
    failed = [f"{r['model']} [{r['tier']}]: {r['error']}" for r in cnn if r.get("error")]
    if failed:
        notes.append("- Failed: " + "; ".join(failed) + ".")
    notes += [f"- Not made, so not measured: `{r['model']}` ({r['variant']}): {r['missing']}"
              for r in cnn if r.get("missing")]
    return CNN_HEADING + "\n\n" + cnn_table(rows) + "\n" + "\n".join(notes) + "\n"


FLASH_HOW = {
    "measured": "measured: the emulator counted every bus read inside the model's flash "
                "range (bytes per access) over the first digits of each cell (3 for the "
                "c and viper tiers, 1 for python: the counter slows the emulator), per "
                "digit",
    "estimated": "estimated on the host from the layer layout (docs/FORMAT.md) and the "
                 "nonzero inputs of each layer on the same digits (the kernels skip zero "
                 "inputs)",
}


def notes(rows: list[dict]) -> list[str]:
    """The notes under the tables (what depends on the rows: how flash was counted,
    fallback rows, models read from the benchmark UF2)."""
    methods = sorted({r.get("flash_method") for r in rows
                      if r.get("section") in ("variants", "ladder") and r.get("flash_method")})
    out = [
        f"- {EMULATOR_NOTE}",
        "- Flash bytes read: " + "; ".join(FLASH_HOW[m] for m in methods if m in FLASH_HOW) + ".",
        ("- ms / inference: mean over the first `digits` MNIST test digits (the count is per "
         "cell: it fits the emulator's speed, never fewer than 3). Targets in the bar "
         "column. Accuracy: `piconn.reference` (the device arithmetic, bit-exact for integer "
         "kinds) over all 10,000 test images; the device's outputs on the timed digits were "
         "checked against it."),
        ("- Heap: growth of `gc.mem_alloc()` over `nn.load()` of the frozen model (weights stay "
         "in flash); no alloc: an inference ran under `micropython.heap_lock()`."),
        ("- C++ baseline: the C++ library this project started from (University of Augsburg "
         "practicum, 2023: 90.2% at 0.99 s per image on a Pico; MNIST MLP, times per image on "
         "hardware, flash misses included). Ladder models live in flash at "
         f"{EXTRA_BASE:#x} (2 MB in; the emulated flash is 16 MB), placed by the benchmark "
         "UF2, and are read in place through `uctypes.bytearray_at`."),
    ]
    if any(r.get("fallback_of") for r in rows):
        out.append("- (python kernels): the viper tier has no kernels for these layers "
                   "(float arithmetic is boxed in viper), so every layer runs the python "
                   "kernels; the row repeats the python row's figures (`--measure-fallbacks` "
                   "times it anyway).")
    from_uf2 = sorted({r["variant"] for r in rows if r.get("section") == "variants"
                       and str(r.get("source", "")).startswith("UF2")})
    if from_uf2:
        out.append("- Not frozen in the benchmarked firmware, run from the benchmark UF2's "
                   "copy in flash instead (same bytes, read in place): " + ", ".join(from_uf2)
                   + ".")
    return out


def markdown(rows: list[dict], meta: dict | None = None) -> str:
    """The README's tables: both MNIST tables with their notes, then the run's summary line
    when meta has one. build/bench.md is this followed by `int8_markdown`."""
    tiers = ladder_tiers(rows)
    tier_text = ", ".join("C" if t == "c" else t for t in tiers)
    tier_text += " tiers" if len(tiers) > 1 else " tier"
    parts = [VARIANTS_HEADING + "\n", variants_table(rows),
             "\n" + LADDER_HEADING.format(tiers=tier_text) + "\n", ladder_table(rows),
             "\n" + NOTES_HEADING + "\n", *notes(rows)]
    if meta:
        parts.append(f"- Run: {meta.get('summary', '')}")
    return "\n".join(parts) + "\n"


def update_readme(text: str, rows: list[dict]) -> str:
    """README text with the tables of its Benchmarks section replaced by ``markdown(rows)``
    (from the variants heading up to the int8 or CNN heading or the chart line); ValueError
    if either is missing. The int8 section (INT8_HEADING up to the next heading, the chart
    line or the end) is replaced by ``int8_markdown(rows)`` when rows have int8 rows, and
    the CNN section likewise by ``cnn_markdown(rows)``; a section the README lacks is put
    right before the chart line (int8 before the CNN section)."""
    start = text.find("\n" + VARIANTS_HEADING + "\n")
    end = text.find("\n" + README_END, start + 1)
    if start < 0 or end < 0:
        raise ValueError(f"no {VARIANTS_HEADING!r} ... {README_END!r} section in the README")
    for heading in (INT8_HEADING, CNN_HEADING):
        at = text.find("\n" + heading + "\n", start + 1)
        if 0 <= at < end:
            end = at
    text = text[:start + 1] + markdown(rows) + "\n" + text[end + 1:]
    text = _replace_section(text, INT8_HEADING, int8_markdown(rows), start, CNN_HEADING)
    return _replace_section(text, CNN_HEADING, cnn_markdown(rows), start)


def update_readme_section(text: str, rows: list[dict], section: str) -> str:
    """README text with only one section replaced from rows: "int8" or "cnn" (for the rows
    of a `bench.py --only int8/cnn` run, which lack the others). ValueError without the
    README's benchmark tables or for another section name."""
    start = text.find("\n" + VARIANTS_HEADING + "\n")
    if start < 0 or text.find("\n" + README_END, start + 1) < 0:
        raise ValueError(f"no {VARIANTS_HEADING!r} ... {README_END!r} section in the README")
    if section == "int8":
        return _replace_section(text, INT8_HEADING, int8_markdown(rows), start, CNN_HEADING)
    if section == "cnn":
        return _replace_section(text, CNN_HEADING, cnn_markdown(rows), start)
    raise ValueError(f"unknown section {section!r} (int8 or cnn)")


def _replace_section(text: str, heading: str, body: str, start: int,
                     before: str | None = None) -> str:
    """text with the section under `heading` (up to the next heading, the chart line or the
    end) replaced by body; unchanged when body is "". Without such a section, body goes
    right before the `before` heading if there is one, else before the chart line."""
    if not body:
        return text
    at = text.find("\n" + heading + "\n")
    if at < 0:
        at = text.find("\n" + before + "\n", start + 1) if before else -1
        if at < 0:
            at = text.find("\n" + README_END, start + 1)
        return text[:at + 1] + body + "\n" + text[at + 1:]
    stops = [k for k in (text.find("\n#", at + 1), text.find("\n" + README_END, at + 1))
             if k >= 0]
    if not stops:
        return text[:at + 1] + body
    return text[:at + 1] + body + "\n" + text[min(stops) + 1:]


# ---------------------------------------------------------------------------------- chart


def chart(rows: list[dict], path: Path) -> bool:
    """build/bench.png: time per inference of every cell (log scale) and the ladder."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("note: matplotlib missing (pip install -e .[bench]): no chart", file=sys.stderr)
        return False
    var = [r for r in rows if r.get("section") == "variants" and r.get("us")]
    lad = [r for r in rows if r.get("section") == "ladder" and r.get("us")]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(14, 6), gridspec_kw={"width_ratios": [3, 2]})
    colors = {"c": "tab:blue", "viper": "tab:orange", "python": "tab:green"}
    labels, y = [], 0
    for v in VARIANTS:
        for t in TIERS:
            r = next((r for r in var if r["model"] == v.name and r["tier"] == t), None)
            if r is None:
                continue
            ax1.barh(y, r["us"] / 1000, color=colors[t])
            if r.get("bar_us"):
                ax1.plot([r["bar_us"] / 1000] * 2, [y - 0.4, y + 0.4], color="red", lw=2)
            labels.append(f"{v.variant} [{t}" + (": python kernels]" if r.get("fallback_of")
                                                 else "]"))
            y += 1
    for s in PUBLISHED:
        ax1.barh(y, s["us"] / 1000, color="grey")
        labels.append(f"C++ baseline: {s['variant']} (real Pico)")
        y += 1
    ax1.set_yticks(range(len(labels)), labels, fontsize=8)
    ax1.invert_yaxis()
    ax1.set_xscale("log")
    ax1.set_xlabel("ms per inference (emulated 125 MHz; log scale); red: target")
    ax1.set_title("MNIST 784-128-10 on the virtual Pico")
    for t in TIERS:
        pts = [r for r in lad if r["tier"] == t]
        if pts:
            ax2.plot([r["us"] / 1000 for r in pts], [100 * r["accuracy"] for r in pts], "o-",
                     color=colors[t], label=f"piconn {t} tier")
            for i, r in enumerate(pts):
                ax2.annotate(r["model"], (r["us"] / 1000, 100 * r["accuracy"]), fontsize=7,
                             xytext=(4, -10 if i % 2 else 4), textcoords="offset points")
    published = [r for r in rows if r.get("section") == PUBLISHED_LADDER_SECTION and r.get("us")]
    if published:
        ax2.plot([r["us"] / 1000 for r in published], [100 * r["accuracy"] for r in published],
                 "s", color="grey", label="C++ baseline (real Pico)")
        for r in published:
            ax2.annotate(r["model"], (r["us"] / 1000, 100 * r["accuracy"]), fontsize=7,
                         xytext=(-60, 4), textcoords="offset points")
    ax2.set_xscale("log")
    ax2.set_xlabel("ms per image (log scale)")
    ax2.set_ylabel("test accuracy (%)")
    ax2.set_title("float size ladder")
    ax2.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


# ---------------------------------------------------------------------------------- files


def write_rows(rows: list[dict], meta: dict, out_dir: Path) -> None:
    """bench.json (the rows) and bench_meta.json into out_dir."""
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "bench.json").write_text(json.dumps(rows, indent=1) + "\n")
    (out_dir / "bench_meta.json").write_text(json.dumps(meta, indent=1) + "\n")


def write_outputs(rows: list[dict], meta: dict, out_dir: Path, draw: bool = True) -> str:
    """Write bench.json, bench.md (the MNIST tables, then the int8 and CNN sections when
    there are such rows) and bench.png (if draw) into out_dir; return bench.md's text."""
    write_rows(rows, meta, out_dir)
    md = markdown(rows, meta)
    for section in (int8_markdown(rows), cnn_markdown(rows)):
        if section:
            md += "\n" + section
    (out_dir / "bench.md").write_text(md)
    if draw:
        chart(rows, out_dir / "bench.png")
    return md


def read_rows(out_dir: Path) -> tuple[list[dict], dict]:
    """The rows and the run's meta saved in out_dir (meta {} when absent)."""
    rows = json.loads((out_dir / "bench.json").read_text())
    meta_path = out_dir / "bench_meta.json"
    return rows, json.loads(meta_path.read_text()) if meta_path.is_file() else {}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=ROOT / "build",
                    help="folder with bench.json; bench.md and bench.png go there too")
    ap.add_argument("--readme", type=Path, default=None,
                    help="also replace the tables of this README's Benchmarks section")
    ap.add_argument("--no-chart", action="store_true", help="tables only")
    ap.add_argument("--section", choices=("int8", "cnn"), default=None,
                    help="--readme: replace only this section (rows of an --only run)")
    a = ap.parse_args(argv)
    try:
        rows, meta = read_rows(a.out)
        print(write_outputs(rows, meta, a.out, draw=not a.no_chart))
        if a.readme is not None:
            text = a.readme.read_text()
            a.readme.write_text(update_readme(text, rows) if a.section is None
                                else update_readme_section(text, rows, a.section))
    except (OSError, ValueError) as e:
        print(f"report: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
