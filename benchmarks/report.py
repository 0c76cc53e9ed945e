"""Collect the JSON records in ``benchmarks/records`` into the tables of
``benchmarks/RESULTS.md`` (between the ``<!-- tables -->`` markers; the prose around them is
kept), and draw one rate-distortion plot per compression record (``benchmarks/rd_<name>.png``;
needs matplotlib, the ``bench`` extra).

Each record is one table under a ``####`` title (training and imported runs, one row per
record: one table per scene), with the command that reproduces it and its commit written once
above it; where several runs filled a table (``--append``, or a scene's training runs) the
commands are numbered and a ``run`` column says which row each made.

Rows already in RESULTS.md whose record is not in the folder are kept as they stand: they were
measured before the records were tracked in git, on machines whose records are gone, and a
rebuild must not drop them. A record replaces the rows of its own key (the model name; for
training, the command). This layout and the older one (a commit and a command column on every
row) are both read back.

    python benchmarks/report.py
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, replace
from pathlib import Path

from common import RECORDS

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "RESULTS.md"
START, END = "<!-- tables -->", "<!-- /tables -->"


@dataclass
class Row:
    """One table row: the record it belongs to, its cells, and the run that measured it."""

    key: str
    cells: list[str]
    commit: str = ""
    command: str = ""


@dataclass
class Section:
    """One kind of benchmark: its heading and columns (the first names the model or scene,
    and becomes the title of its table)."""

    heading: str
    columns: list[str]
    keyed_by_command: bool = False
    """Training runs: one row per record, told apart by their command (a scene's runs share
    one table, a numbered command each)."""
    runs: bool = True
    """Rows carry a commit and a command (the entropy rows belong to a codec run instead)."""
    former_heading: str = ""
    """The heading an older RESULTS.md gave it, read back like ``heading``."""


SECTIONS = {
    "train": Section("### Training: test PSNR against training time",
                     ["scene", "field", "steps", "train time", "test views",
                      "PSNR at marks (min: dB)", "final PSNR", "SSIM", "render s/view",
                      "peak RSS", "model"], keyed_by_command=True),
    "render": Section("### Render time of a trained model",
                      ["model", "test views", "inference path", "step", "PSNR", "SSIM",
                       "render s/view", "vs baked"]),
    "imported": Section("### Imported nerf-pytorch models",
                        ["scene", "checkpoint", "sampling", "views", "PSNR per view",
                         "mean PSNR", "mean SSIM", "render s/view"]),
    "codec": Section("### The .nrz codec (precision only, no compression passes)",
                     ["model", "precision", "file", "vs model.safetensors", "vs float32 params",
                      "bits/param", "encode", "decode", "PSNR (views)", "vs float32 render"]),
    "entropy": Section("### Entropy coding of the .nrz codec's symbol arrays (from the codec runs "
                       "above)",
                       ["model", "precision", "section", "symbols",
                        "empirical entropy (bits/symbol)", "ANS stream / entropy",
                        "ANS incl. model / entropy", "coder chosen", "chosen / entropy"],
                       runs=False, former_heading="Entropy coding of symbol arrays of at least "
                       "10^5 symbols (ratios of coded bits to the empirical entropy of the "
                       "symbols):"),
    "compress": Section("### Compression pipelines",
                        ["model", "test views", "pipeline", "file", "smaller than float32",
                         "PSNR", "PSNR loss", "SSIM", "decode", "render time vs float32",
                         "compress time"]),
    "bake": Section("### Baked octrees: real-time rendering on the CPU",
                    ["model", "test views", "pipeline", "leaves (depth)", "file", "PSNR",
                     "PSNR loss", "SSIM", "vs source render (PSNR / SSIM)", "frame",
                     "frames/s", "vs source renderer", "segments/ray",
                     "ns/segment (wall, core)", "bake + compress time"]),
    "view": Section("### Looking at a baked octree: web page and viewer",
                    ["model", "leaves", ".nrz", "exported folder", "export time",
                     "page: load to first frame", "load to full frame", "page frame (full, "
                     "moving)", "canvas vs Python", "viewer moving frame", "viewer still frame"]),
    "progressive": Section("### Progressive .nrz files: quality against bytes received",
                           ["model", "test views", "pipeline", "layers", "bytes", "share of file",
                            "PSNR", "SSIM", "layer decode", "vs single-rate file"]),
    "rd": Section("### Learned entropy model (`entropy_model`): rate against quality",
                  ["model", "test views", "pipeline", "file", "PSNR", "PSNR loss", "SSIM",
                   "latents coded / estimated", "compress time"]),
    "search_workers": Section("### Search workers sharing one study (PostgreSQL)",
                              ["model", "trials", "workers x threads (cores)", "one worker",
                               "workers", "speed-up", "each trial once", "front = recorded",
                               "trials per worker"]),
    "int8": Section("### Dynamic int8 inference (`--int8 on`) against float32",
                    ["model", "test views", "precision", "PSNR", "SSIM", "render s/view",
                     "65,536 field queries", "colour RMS error there"]),
}


def row(section: str, cells: list[str], commit: str = "", command: str = "") -> Row:
    sec = SECTIONS[section]
    # A training run is its command at its commit: a rerun elsewhere adds a row.
    key = f"{command} @ {commit}" if sec.keyed_by_command else cells[0]
    return Row(key, cells, commit, command)


# --- rows from records ---
FORMER_CPU = "Intel(R) Xeon(R) Processor"
"""The processor of every run before the records named theirs in RESULTS.md."""


def run_of(record: dict, commit: str | None = None) -> str:
    """The commit of a record's run (or ``commit``), with its processor when that is not the
    one the older runs had: figures from two machines are told apart on the page."""
    machine = record.get("machine", {})
    commit = commit or machine.get("commit", "")
    cpu = machine.get("cpu")
    return f"{commit}, {cpu}" if cpu and cpu != FORMER_CPU else commit



def mark_views(mark: dict, record: dict) -> str:
    """A mark evaluated on fewer views than the final figure says how many."""
    n = mark.get("test_views", record["test_views"])
    return "" if n == record["test_views"] else f" ({n} views)"


def train_rows(records: list[dict]) -> list[Row]:
    out = []
    for r in records:
        marks = ", ".join(f"{c['minutes']:.0f}: {c['psnr']:.2f}" + mark_views(c, r)
                          for c in r["curve"]) or "—"
        out.append(row("train", [
            r["scene"], r["field"], str(r["train_steps"]), f"{r['train_seconds'] / 60:.1f} min",
            f"{r['test_views']} ({r['test_subset']})", marks, f"**{r['final_psnr']:.2f}**",
            f"{r['final_ssim']:.4f}", f"{r['render_seconds_median']:.2f}",
            f"{r['peak_rss_gb']:.2f} GB", f"{r['model_bytes'] / 2**20:.1f} MB"],
            run_of(r), r["command"]))
    return out


def imported_rows(records: list[dict]) -> list[Row]:
    out = []
    for r in records:
        per = ", ".join(f"{v['index']}: {v['psnr']:.2f}" for v in r["views"])
        out.append(row("imported", [
            r["scene"], r["checkpoint"], r["sampling"], str(len(r["views"])), per,
            f"**{r['mean_psnr']:.2f}**", f"{r['mean_ssim']:.4f}",
            f"{r['render_seconds_median']:.1f}"], run_of(r), r["command"]))
    return out


def codec_rows(records: list[dict]) -> list[Row]:
    out = []
    for r in records:
        for x in r["rows"]:
            out.append(row("codec", [
                r["name"], x["precision"], f"{x['bytes'] / 1e6:.3f} MB",
                f"{x['ratio_to_safetensors']:.2f}x smaller",
                f"{4 * r['parameters'] / x['bytes']:.2f}x smaller", f"{x['bits_per_param']:.2f}",
                f"{x['encode_seconds']:.1f} s ({x['encode_mb_per_s']:.1f} MB/s)",
                f"{x['decode_seconds']:.3f} s",
                f"{x['psnr']:.2f} (float32 {x['psnr_float32']:.2f})",
                vs_render(x["psnr_vs_float32_render"])], run_of(r), r["command"]))
    return out


def compress_rows(records: list[dict]) -> list[Row]:
    out = []
    for r in records:
        b = r["baseline"]
        views = "all" if r["every"] == 1 else f"every {r['every']}th"
        # The float32 baseline was measured by the record's first run, at the record's commit.
        out.append(row("compress", [
            r["name"], views, f"(float32, {r['parameters']:,} parameters)",
            f"{r['float32_bytes'] / 1e6:.2f} MB", "1x", f"{b['psnr']:.2f}", "—",
            f"{b['ssim']:.4f}", "—", seconds(b["render_seconds"]), "—"],
            run_of(r)))
        for x in r["rows"]:
            out.append(row("compress", [
                r["name"], views, f"`{x['steps']}`", f"{x['bytes'] / 1e6:.3f} MB",
                f"{x['ratio']:.1f}x", f"{x['psnr']:.2f}", f"{x['psnr_loss']:.2f} dB",
                f"{x['ssim']:.4f}", f"{x['decode_seconds']:.2f} s", ratio(x["render_ratio"]),
                f"{x['compress_seconds']:.0f} s"], run_of(r, x.get("commit")),
                x["command"]))
    return out


def bake_rows(records: list[dict]) -> list[Row]:
    out = []
    for r in records:
        src = r["source"]
        views = f"{src['views']} (source renders: {src['views_vs_source']})"
        out.append(row("bake", [
            r["name"], views, f"(source: {r['source_family']})", "—", "—",
            f"{src['psnr']:.2f}", "—", f"{src['ssim']:.4f}", "—",
            f"{src['frame_seconds']:.2f} s", f"{1 / src['frame_seconds']:.2f}", "1x", "—", "—",
            "—"], run_of(r)))
        for x in r["rows"]:
            out.append(row("bake", [
                r["name"], views, f"`{x['steps']}`", f"{x['leaves']:,} ({x['depth']})",
                f"{x['bytes'] / 2**20:.2f} MB", f"{x['psnr']:.2f}", f"{x['psnr_loss']:.2f} dB",
                f"{x['ssim']:.4f}", f"{x['psnr_vs_source']:.2f} / {x['ssim_vs_source']:.4f}",
                f"{x['frame_seconds'] * 1000:.0f} ms", f"**{x['fps']:.1f}**",
                f"{x['speedup']:.0f}x", f"{x['samples_per_ray']:.1f}",
                f"{x['ns_per_sample']:.0f}, {x['core_ns_per_sample']:.0f}",
                f"{x['seconds']:.0f} s"], run_of(r, x.get("commit")), x["command"]))
    return out


def view_rows(records: list[dict]) -> list[Row]:
    out = []
    for r in records:
        page, viewer, exp = r["page"], r["viewer"], r["export"]
        w, h = page["size"]
        mw, mh = viewer["moving"]["size"]
        out.append(row("view", [
            r["name"], f"{r['leaves']:,}", f"{r['file_bytes'] / 2**20:.2f} MB",
            f"{exp['bytes'] / 2**20:.2f} MB", f"{exp['seconds']:.1f} s",
            f"{page['load_to_first_frame_ms'] / 1000:.2f} s (at {page['first_frame_scale']}x)",
            f"{page['load_to_full_frame_ms'] / 1000:.2f} s ({w}x{h})",
            f"{page['frame_ms_full']:.0f} / {page['frame_ms_moving']:.0f} ms "
            f"({page['webgl']})", f"{page['canvas_psnr_vs_python']:.1f} dB",
            f"{viewer['moving']['frame_ms']:.0f} ms = {viewer['moving']['fps']:.1f} fps "
            f"({mw}x{mh})", f"{viewer['still']['frame_ms']:.0f} ms"],
            run_of(r), r["command"]))
    return out


def progressive_rows(records: list[dict]) -> list[Row]:
    """Per record: the single-rate file of the same pipeline, then one row per layer prefix
    (cumulative), then the first tenth of the bytes."""
    out = []
    for r in records:
        views = "all" if r["every"] == 1 else f"every {r['every']}th"
        s = r["single_rate"]
        out.append(row("progressive", [
            r["name"], views, f"`{s['pipeline']}` (single rate)", "—",
            f"{s['bytes']:,}", "—", f"{s['psnr']:.2f}", f"{s['ssim']:.4f}", "—", "1x"],
            run_of(r), r["command"]))
        for x in r["layers"]:
            out.append(row("progressive", [
                r["name"], views, f"`{r['pipeline']}`", f"{x['layer'] + 1} of {len(r['layers'])}",
                f"{x['bytes']:,}", f"{100 * x['share']:.1f} %", f"{x['psnr']:.2f}",
                f"{x['ssim']:.4f}", f"{x['decode_seconds']:.3f} s",
                f"{r['size_vs_single_rate']:.3f}x size, {x['psnr'] - s['psnr']:+.2f} dB"],
                run_of(r), r["command"]))
        t = r.get("first_tenth")
        if t:
            out.append(row("progressive", [
                r["name"], views, f"`{r['pipeline']}`", f"first 10 % ({t['layers']} layers)",
                f"{t['bytes']:,}", "10.0 %", f"{t['psnr']:.2f}", f"{t['ssim']:.4f}", "—",
                f"{t['psnr'] - s['psnr']:+.2f} dB"], run_of(r), r["command"]))
    return out


def rd_rows(records: list[dict]) -> list[Row]:
    """Per record: one row per point of an ``entropy_model`` sweep (``benchmarks/rd.py``)."""
    out = []
    for r in records:
        views = "all" if r["every"] == 1 else f"every {r['every']}th"
        for p in r["points"]:
            pipeline = f"entropy_model(lambda={p['lambda']:g}, steps={p['steps']})"
            if p.get("before"):
                pipeline = f"{p['before']} {pipeline}"
            if p.get("then"):
                pipeline += f" {p['then']}"
            out.append(row("rd", [
                r["name"], views, f"`{pipeline}`", f"{p['bytes']:,}", f"{p['psnr']:.2f}",
                f"{p['psnr'] - r['model_psnr']:+.2f} dB", f"{p['ssim']:.4f}",
                f"{p['latent_stream_bytes'] / p['latent_estimate_bytes']:.3f}",
                f"{p['compress_seconds'] / 60:.1f} min"], run_of(r), r["command"]))
    return out


def search_workers_rows(records: list[dict]) -> list[Row]:
    """Per record: one study filled by one worker against the same by several at once."""
    out = []
    for r in records:
        s = r["shared"]
        out.append(row("search_workers", [
            r["name"], str(r["trials"]),
            f"{r['workers']} x {r['threads_per_worker']} ({r['cpu_count']})",
            f"{r['wall_seconds_one_worker']:.0f} s", f"{r['wall_seconds_workers']:.0f} s",
            f"{r['speed_up']:.2f}x", "yes" if s["evaluated_once"] else "**no**",
            "yes" if s["front_equals_recorded"] else "**no**",
            ", ".join(str(v) for v in sorted(s["per_worker"].values()))],
            run_of(r), r["command"]))
    return out


def seconds(value: float | None) -> str:
    return "not timed" if value is None else f"1.00 ({value:.2f} s)"


def ratio(value: float | None) -> str:
    return "not timed" if value is None else f"{value:.2f}"


def int8_rows(records: list[dict]) -> list[Row]:
    out = []
    for r in records:
        for label, x in r["rows"].items():
            error = r.get("output_error") if label == "int8" else None
            rms = f"{error['colour_rms']:.4f}" if error else "—"
            out.append(row("int8", [
                r["name"], f"{r['views']} (every {r['every']}th)", label, f"{x['psnr']:.2f}",
                f"{x['ssim']:.4f}", f"{x['render_seconds']:.2f}", f"{x['query_seconds']:.3f} s",
                rms], run_of(r), r["command"]))
    return out


def render_rows(records: list[dict]) -> list[Row]:
    out = []
    for r in records:
        base = r["rows"]["baked"]["render_seconds_median"]
        for label, x in r["rows"].items():
            out.append(row("render", [
                r["name"], f"{x['views']} (every {r['every']}th)", label,
                f"{x['step_size']:.5f}", f"{x['psnr']:.3f}", f"{x['ssim']:.4f}",
                f"**{x['render_seconds_median']:.2f}**",
                f"{base / x['render_seconds_median']:.2f}x"], run_of(r),
                r["command"]))
    return out


def vs_render(psnr: float) -> str:
    """PSNR of a decoded model's renders against the float32 model's (inf: identical)."""
    return "identical" if psnr == float("inf") or psnr > 200 else f"{psnr:.1f} dB"


def entropy_rows(records: list[dict]) -> list[Row]:
    out = []
    for r in records:
        for x in r["rows"]:
            for e in x["entropy"]:
                out.append(row("entropy", [
                    r["name"], x["precision"], e["section"], f"{e['symbols']:,}",
                    f"{e['entropy_bits'] / e['symbols']:.3f}", f"{e['ans_stream_ratio']:.4f}",
                    f"{e['ans_total_ratio']:.4f}", e["coder"],
                    f"{e['ratio_to_entropy']:.3f}"]))
    return out


# --- writing: one table per record, its runs above it ---
def table_line(cells: list[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def with_commands(rows: list[Row]) -> list[Row]:
    """Rows without a command of their own (the compress baseline) ran with the table's first
    command, at their own commit."""
    first = next((r.command for r in rows if r.command), "")
    return [r if r.command else replace(r, command=first) for r in rows]


def runs_of(rows: list[Row]) -> list[tuple[str, str]]:
    """The distinct (commit, command) runs of a table's rows, in order."""
    return list(dict.fromkeys((r.commit, r.command) for r in rows if r.command))


def run_line(commit: str, command: str) -> str:
    return f"`{command}` (commit {commit or 'unknown'})"


def record_block(section: str, rows: list[Row]) -> list[str]:
    """One table: its title, the runs that measured it (once each), its rows."""
    sec = SECTIONS[section]
    rows = with_commands(rows)
    runs = runs_of(rows)
    lines = [f"#### {rows[0].cells[0]}", ""]
    if len(runs) == 1:
        lines += [f"Command: {run_line(*runs[0])}", ""]
    elif runs:
        lines += ["Commands:", ""] + [f"{i}. {run_line(*run)}" for i, run in
                                      enumerate(runs, 1)] + [""]
    numbered = len(runs) > 1
    columns = (["run"] if numbered else []) + sec.columns[1:]
    lines += [table_line(columns), "|" + "---|" * len(columns)]
    for r in rows:
        number = [run_number(r, runs)] if numbered else []
        lines.append(table_line(number + r.cells[1:]))
    return lines + [""]


def run_number(r: Row, runs: list[tuple[str, str]]) -> str:
    """Which of the table's runs measured a row."""
    return str(runs.index((r.commit, r.command)) + 1) if r.command else ""


def section_lines(section: str, rows: list[Row]) -> list[str]:
    """The section's heading and one table per model (a record) or per scene (training and
    imported runs, one record each), ordered by name; a scene's training runs by field, runs
    of the same field in the order they were made."""
    tables: dict[str, list[Row]] = {}
    for r in rows:
        tables.setdefault(r.cells[0], []).append(r)
    lines = [SECTIONS[section].heading, ""]
    for name in sorted(tables, key=str.lower):
        table = tables[name]
        if SECTIONS[section].keyed_by_command:
            table = sorted(table, key=lambda r: r.cells[1].lower())
        lines += record_block(section, table)
    return lines


# --- reading back what RESULTS.md holds ---
def cells(line: str) -> list[str]:
    return [c.strip() for c in line.strip().strip("|").split("|")]


RUN = re.compile(r"^(?:Command: |\d+\. )`(?P<command>.*)` \(commit (?P<commit>[^)]*)\)$")


def section_of(line: str) -> str | None:
    return next((name for name, sec in SECTIONS.items()
                 if line and line in (sec.heading, sec.former_heading)), None)


def old_rows(body: str) -> dict[str, list[Row]]:
    """Every row between the markers, by section: from per-record blocks (this layout), or
    from one table per section with a commit and a command column (the older layout)."""
    out: dict[str, list[Row]] = {name: [] for name in SECTIONS}
    section = None
    runs: list[tuple[str, str]] = []
    title: list[str] = []
    header: list[str] | None = None
    for line in body.splitlines():
        if section_of(line):
            section, header, runs, title = section_of(line), None, [], []
            continue
        if section is None:
            continue
        if line.startswith("#### "):
            runs, header = [], None
            title = [line[5:]]
        elif (m := RUN.match(line)) is not None:
            runs.append((m["commit"], m["command"]))
        elif not line.startswith("|"):
            header = None
        elif header is None:
            header = cells(line)
        elif not line.startswith("|---"):
            out[section].append(parse_row(section, header, cells(line), title, runs))
    return out


def parse_row(section: str, header: list[str], values: list[str], title: list[str],
              runs: list[tuple[str, str]]) -> Row:
    """One table row read back: in the older layout the row holds every column, its commit
    and command; in this one the title holds the record's name and the runs above (``run``)
    the commit and command."""
    sec = SECTIONS[section]
    named = dict(zip(header, values))
    older = header[-2:] == ["commit", "command"] if sec.runs else header == sec.columns
    if older:
        return row(section, [named[c] for c in sec.columns], named.get("commit", ""),
                   named.get("command", "").strip("`"))
    number = named.get("run", "1")
    commit, command = runs[int(number) - 1] if runs and number else ("", "")
    return row(section, title + [named[c] for c in sec.columns[1:]], commit,
               command)


def merge(fresh: list[Row], old: list[Row]) -> list[Row]:
    """``fresh`` rows plus the old rows of records that produced none (gone records)."""
    keys = {r.key for r in fresh}
    return [r for r in old if r.key not in keys] + fresh


def short_label(row: dict) -> str:
    """A compact plot label: the pipeline's steps with argument names and defaults dropped."""
    text = row["steps"]
    for long, short in (("method=", ""), ("keep_mass=", ""), (", min_elements=1024", ""),
                        ("per_channel=false", "tensor"), ("finetune", "ft"), (", ", ","),
                        ("quant", "q")):
        text = text.replace(long, short)
    return text


def plot_rate_distortion(record: dict, path: Path) -> None:
    """PSNR against file size (log scale), one marker per pipeline, coloured by first pass."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    colours: dict[str, str] = {}
    for r in sorted(record["rows"], key=lambda r: r["bytes"]):
        first = r["steps"].split("(")[0].strip()
        new = first not in colours
        colour = colours.setdefault(first, f"C{len(colours)}")
        ax.scatter(r["bytes"] / 1e6, r["psnr"], color=colour, label=first if new else None)
        ax.annotate(short_label(r), (r["bytes"] / 1e6, r["psnr"]), fontsize=6,
                    xytext=(3, 3), textcoords="offset points")
    base = record["baseline"]
    ax.axhline(base["psnr"], ls="--", lw=0.8, color="grey",
               label=f"float32 ({record['float32_bytes'] / 1e6:.1f} MB)")
    ax.set_xscale("log")
    ax.set_xlabel("file size (MB, log scale)")
    views = "all views" if record["every"] == 1 else f"every {record['every']}th view"
    ax.set_ylabel(f"test PSNR (dB, {views})")
    ax.set_title(f"{record['name']}: rate-distortion of compression pipelines")
    ax.legend(fontsize=7, title="first pass", title_fontsize=7)
    ax.grid(True, which="both", lw=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def machine_line(machine: dict | None, old_body: str) -> str:
    if machine is None:  # no record yet: keep what the tables said
        return next((line for line in old_body.splitlines() if line.startswith("Machine:")),
                    "Machine: ?")
    return (f"Machine: {machine.get('cores', '?')} cores, torch {machine.get('torch', '?')}, "
            f"Python {machine.get('python', '?')}; the processor is {FORMER_CPU} unless a "
            "run names another after its commit (the same figures differ between the two: "
            "compare only within one run).")


def main() -> None:
    records = [json.loads(p.read_text()) for p in sorted(RECORDS.glob("*.json"))]
    kind = {name: [r for r in records if r.get("benchmark") == name]
            for name in ("train", "imported", "codec", "compress", "int8", "render", "bake",
                         "view", "progressive", "rd", "search_workers")}
    compress = kind["compress"]
    text = RESULTS.read_text() if RESULTS.exists() else f"# Benchmark results\n\n{START}\n{END}\n"
    head, rest = text.split(START, 1)
    body, tail = rest.split(END, 1)
    old = old_rows(body)
    fresh = {"train": train_rows(kind["train"]), "render": render_rows(kind["render"]),
             "imported": imported_rows(kind["imported"]), "codec": codec_rows(kind["codec"]),
             "entropy": entropy_rows(kind["codec"]), "compress": compress_rows(compress),
             "int8": int8_rows(kind["int8"]), "bake": bake_rows(kind["bake"]),
             "view": view_rows(kind["view"]),
             "progressive": progressive_rows(kind["progressive"]),
             "rd": rd_rows(kind["rd"]),
             "search_workers": search_workers_rows(kind["search_workers"])}
    machine = next((r["machine"] for r in records if "machine" in r), None)
    lines = [START, "", machine_line(machine, body), ""]
    for section in SECTIONS:  # (their order is the page's)
        lines += section_lines(section, merge(fresh[section], old[section]))
    lines.append(END)
    RESULTS.write_text(head + "\n".join(lines) + tail)
    print(f"wrote {RESULTS}")
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        print("matplotlib is missing (pip install -e '.[bench]'): no rate-distortion plots")
        return
    for r in compress:
        path = ROOT / "benchmarks" / f"rd_{r['name']}.png"
        plot_rate_distortion(r, path)
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
