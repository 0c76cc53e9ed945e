"""Collect the JSON records in ``benchmarks/records`` into the tables of
``benchmarks/RESULTS.md`` (between the ``<!-- tables -->`` markers; the prose around them is
kept), and draw one rate-distortion plot per compression record (``benchmarks/rd_<name>.png``;
needs matplotlib, the ``bench`` extra).

Rows already in a table whose record is not in the folder are kept as they stand: they were
measured before the records were tracked in git, on machines whose records are gone, and a
rebuild must not drop them. A record replaces the rows of its own key (the model name; for
training, the command).

    python benchmarks/report.py
"""

from __future__ import annotations

import json
from pathlib import Path

from common import RECORDS

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "RESULTS.md"
START, END = "<!-- tables -->", "<!-- /tables -->"


def mark_views(mark: dict, record: dict) -> str:
    """A mark evaluated on fewer views than the final figure says how many."""
    n = mark.get("test_views", record["test_views"])
    return "" if n == record["test_views"] else f" ({n} views)"


def train_table(records: list[dict]) -> list[str]:
    rows = ["| scene | field | steps | train time | test views | PSNR at marks (min: dB) | "
            "final PSNR | SSIM | render s/view | peak RSS | model | commit | command |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in records:
        marks = ", ".join(f"{c['minutes']:.0f}: {c['psnr']:.2f}" + mark_views(c, r)
                          for c in r["curve"]) or "—"
        rows.append(
            f"| {r['scene']} | {r['field']} | {r['train_steps']} | "
            f"{r['train_seconds'] / 60:.1f} min | {r['test_views']} ({r['test_subset']}) | "
            f"{marks} | **{r['final_psnr']:.2f}** | {r['final_ssim']:.4f} | "
            f"{r['render_seconds_median']:.2f} | {r['peak_rss_gb']:.2f} GB | "
            f"{r['model_bytes'] / 2**20:.1f} MB | {r['machine']['commit']} | `{r['command']}` |")
    return rows


def imported_table(records: list[dict]) -> list[str]:
    rows = ["| scene | checkpoint | sampling | views | PSNR per view | mean PSNR | mean SSIM | "
            "render s/view | commit | command |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in records:
        per = ", ".join(f"{v['index']}: {v['psnr']:.2f}" for v in r["views"])
        rows.append(f"| {r['scene']} | {r['checkpoint']} | {r['sampling']} | {len(r['views'])} | "
                    f"{per} | **{r['mean_psnr']:.2f}** | {r['mean_ssim']:.4f} | "
                    f"{r['render_seconds_median']:.1f} | {r['machine']['commit']} | "
                    f"`{r['command']}` |")
    return rows


def codec_table(records: list[dict]) -> list[str]:
    rows = ["| model | precision | file | vs model.safetensors | vs float32 params | "
            "bits/param | encode | decode | PSNR (views) | vs float32 render | commit | "
            "command |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in records:
        for x in r["rows"]:
            rows.append(
                f"| {r['name']} | {x['precision']} | {x['bytes'] / 1e6:.3f} MB | "
                f"{x['ratio_to_safetensors']:.2f}x smaller | "
                f"{4 * r['parameters'] / x['bytes']:.2f}x smaller | "
                f"{x['bits_per_param']:.2f} | {x['encode_seconds']:.1f} s "
                f"({x['encode_mb_per_s']:.1f} MB/s) | {x['decode_seconds']:.3f} s | "
                f"{x['psnr']:.2f} (float32 {x['psnr_float32']:.2f}) | "
                f"{vs_render(x['psnr_vs_float32_render'])} | {r['machine']['commit']} | "
                f"`{r['command']}` |")
    return rows


def compress_table(records: list[dict]) -> list[str]:
    rows = ["| model | test views | pipeline | file | smaller than float32 | PSNR | PSNR loss | "
            "SSIM | decode | render time vs float32 | compress time | commit | command |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in records:
        b = r["baseline"]
        views = "all" if r["every"] == 1 else f"every {r['every']}th"
        rows.append(f"| {r['name']} | {views} | (float32, {r['parameters']:,} parameters) | "
                    f"{r['float32_bytes'] / 1e6:.2f} MB | 1x | {b['psnr']:.2f} | — | "
                    f"{b['ssim']:.4f} | — | {seconds(b['render_seconds'])} | — | "
                    f"{r['machine']['commit']} | |")
        for x in r["rows"]:
            rows.append(
                f"| {r['name']} | {views} | `{x['steps']}` | {x['bytes'] / 1e6:.3f} MB | "
                f"{x['ratio']:.1f}x | {x['psnr']:.2f} | {x['psnr_loss']:.2f} dB | "
                f"{x['ssim']:.4f} | {x['decode_seconds']:.2f} s | {ratio(x['render_ratio'])} | "
                f"{x['compress_seconds']:.0f} s | {x.get('commit', r['machine']['commit'])} | "
                f"`{x['command']}` |")
    return rows


def seconds(value: float | None) -> str:
    return "not timed" if value is None else f"1.00 ({value:.2f} s)"


def ratio(value: float | None) -> str:
    return "not timed" if value is None else f"{value:.2f}"


def int8_table(records: list[dict]) -> list[str]:
    rows = ["| model | test views | precision | PSNR | SSIM | render s/view | 65,536 field "
            "queries | colour RMS error there | commit | command |",
            "|---|---|---|---|---|---|---|---|---|---|"]
    for r in records:
        for label, x in r["rows"].items():
            error = r.get("output_error") if label == "int8" else None
            rms = f"{error['colour_rms']:.4f}" if error else "—"
            rows.append(f"| {r['name']} | {r['views']} (every {r['every']}th) | {label} | "
                        f"{x['psnr']:.2f} | {x['ssim']:.4f} | {x['render_seconds']:.2f} | "
                        f"{x['query_seconds']:.3f} s | "
                        f"{rms} | "
                        f"{r['machine']['commit']} | `{r['command']}` |")
    return rows


def render_table(records: list[dict]) -> list[str]:
    rows = ["| model | test views | inference path | step | PSNR | SSIM | render s/view | "
            "vs baked | commit | command |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in records:
        base = r["rows"]["baked"]["render_seconds_median"]
        for label, x in r["rows"].items():
            rows.append(f"| {r['name']} | {x['views']} (every {r['every']}th) | {label} | "
                        f"{x['step_size']:.5f} | {x['psnr']:.3f} | {x['ssim']:.4f} | "
                        f"**{x['render_seconds_median']:.2f}** | "
                        f"{base / x['render_seconds_median']:.2f}x | {r['machine']['commit']} | "
                        f"`{r['command']}` |")
    return rows


def vs_render(psnr: float) -> str:
    """PSNR of a decoded model's renders against the float32 model's (inf: identical)."""
    return "identical" if psnr == float("inf") or psnr > 200 else f"{psnr:.1f} dB"


def entropy_table(records: list[dict]) -> list[str]:
    rows = ["| model | precision | section | symbols | empirical entropy (bits/symbol) | "
            "ANS stream / entropy | ANS incl. model / entropy | coder chosen | chosen / "
            "entropy |", "|---|---|---|---|---|---|---|---|---|"]
    for r in records:
        for x in r["rows"]:
            for e in x["entropy"]:
                rows.append(
                    f"| {r['name']} | {x['precision']} | {e['section']} | {e['symbols']:,} | "
                    f"{e['entropy_bits'] / e['symbols']:.3f} | {e['ans_stream_ratio']:.4f} | "
                    f"{e['ans_total_ratio']:.4f} | {e['coder']} | "
                    f"{e['ratio_to_entropy']:.3f} |")
    return rows


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


def cells(row: str) -> list[str]:
    return [c.strip() for c in row.strip().strip("|").split("|")]


def row_key(header: str, row: str) -> str:
    """Which record a table row belongs to: the training table's command, else the first
    column (the model or scene name)."""
    return cells(row)[-1] if header.startswith("| scene | field |") else cells(row)[0]


def old_tables(text: str) -> dict[str, list[str]]:
    """The data rows of every table between the markers, by the table's header line."""
    tables: dict[str, list[str]] = {}
    header = None
    for line in text.splitlines():
        if not line.startswith("|"):
            header = None
        elif header is None:
            header = line
            tables.setdefault(header, [])
        elif not line.startswith("|---"):
            tables[header].append(line)
    return tables


def merge(table: list[str], old: dict[str, list[str]]) -> list[str]:
    """``table`` (header, separator, rows from records) plus the old rows of the same table
    whose key no record produced, grouped by key in a stable order."""
    header, rule, *rows = table
    keys = {row_key(header, r) for r in rows}
    kept = [r for r in old.get(header, []) if row_key(header, r) not in keys]
    width = 2 if header.startswith("| scene | field |") else 1
    merged = sorted(kept + rows, key=lambda r: [c.lower() for c in cells(r)[:width]])
    return [header, rule, *merged]


def machine_line(machine: dict | None, old_body: str) -> str:
    if machine is None:  # no record yet: keep what the tables said
        return next((line for line in old_body.splitlines() if line.startswith("Machine:")),
                    "Machine: ?")
    return (f"Machine: {machine.get('cpu', '?')}, {machine.get('cores', '?')} cores, "
            f"torch {machine.get('torch', '?')}, Python {machine.get('python', '?')}.")


def main() -> None:
    records = [json.loads(p.read_text()) for p in sorted(RECORDS.glob("*.json"))]
    train = [r for r in records if r.get("benchmark") == "train"]
    imported = [r for r in records if r.get("benchmark") == "imported"]
    codec = [r for r in records if r.get("benchmark") == "codec"]
    compress = [r for r in records if r.get("benchmark") == "compress"]
    int8 = [r for r in records if r.get("benchmark") == "int8"]
    render = [r for r in records if r.get("benchmark") == "render"]
    text = RESULTS.read_text() if RESULTS.exists() else f"# Benchmark results\n\n{START}\n{END}\n"
    head, rest = text.split(START, 1)
    body, tail = rest.split(END, 1)
    old = old_tables(body)
    machine = next((r["machine"] for r in records if "machine" in r), None)
    lines = [START, "", machine_line(machine, body), "",
             "### Training: test PSNR against training time", "",
             *merge(train_table(train), old), "",
             "### Render time of a trained model", "", *merge(render_table(render), old), "",
             "### Imported nerf-pytorch models", "", *merge(imported_table(imported), old), "",
             "### The .nrz codec (precision only, no compression passes)", "",
             *merge(codec_table(codec), old), "", "Entropy coding of symbol arrays of at least "
             "10^5 symbols (ratios of coded bits to the empirical entropy of the symbols):", "",
             *merge(entropy_table(codec), old), "",
             "### Compression pipelines", "", *merge(compress_table(compress), old), "",
             "### Dynamic int8 inference (`--int8 on`) against float32", "",
             *merge(int8_table(int8), old), "", END]
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
