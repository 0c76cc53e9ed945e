"""Benchmark: compression pipelines on a trained model, in one run.

For each pipeline (each technique alone at a few strengths, and the presets): .nrz bytes, ratio
to the float32 parameters, test PSNR / SSIM (the quick subset unless --every says otherwise),
decode time, and render time as a ratio to the uncompressed model's render time in the same
run. Writes ``benchmarks/records/compress_<name>.json`` (``report.py`` draws its
rate-distortion PNG).

    python benchmarks/compress.py --model benchmarks/out/train_lego_tensorf-vm_crop \\
        --pipelines preset:balanced "quant(8)" "prune(0.5) finetune(300)"

Adaptive against uniform at equal bytes: ``budget=@N`` in a pipeline is replaced by the bytes of
the quantized sections of the N-th pipeline of this run (1-based), so

    --pipelines "quant(4)" "quant(budget=@1)"

gives the allocator exactly the bytes that 4 bits everywhere took.
"""

from __future__ import annotations

import argparse
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path

from common import RECORDS, render_seconds

from nerfzip.codec import nrz
from nerfzip.compression.constraints import QuantGrid
from nerfzip.compression.pipeline import PRESETS, parse_pipeline, run_pipeline
from nerfzip.data.load import load_scene
from nerfzip.evaluation.evaluate import evaluate
from nerfzip.training.checkpoint import load_model
from nerfzip.utils.io import read_json, write_json
from nerfzip.utils.machine import machine_info

ROOT = Path(__file__).resolve().parents[1]
DEFAULT = ["quant(8)", "quant(6)", "quant(4)", "prune(0.5)", "prune(0.8) finetune(300)",
           "prune(method=importance, keep_mass=0.999)", "vq(4096, 0.01)",
           "preset:high", "preset:balanced", "preset:tiny"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True, help="run folder or model file")
    ap.add_argument("--name", default=None)
    ap.add_argument("--pipelines", nargs="*", default=DEFAULT,
                    help="pipeline texts, or preset:NAME")
    ap.add_argument("--every", type=int, default=8, help="evaluate every N-th test view")
    ap.add_argument("--append", action="store_true",
                    help="add to an existing record (the new rows' render ratios are against "
                         "the uncompressed model timed again in this run)")
    ap.add_argument("--no-render-time", action="store_true",
                    help="skip render timing (slow models: it costs 3 more renders per row)")
    ap.add_argument("--keep", type=Path, default=None,
                    help="folder to keep each row's .nrz file in (NAME_ROW.nrz, ROW its place "
                         "in the record), e.g. to "
                         "compress a distilled student further")
    args = ap.parse_args()

    model = load_model(args.model)
    scene = load_scene(model.space.source, downscale=model.space.downscale)
    name = args.name or f"{scene.name}_{model.field.family}"
    out_json = RECORDS / f"compress_{name}.json"
    tmp = Path(tempfile.mkdtemp())
    params = model.field.num_parameters()
    n_test = len(scene.split("test"))
    views = list(range(0, n_test, args.every))
    record = read_json(out_json) if args.append and out_json.exists() else None
    if record is None:
        base = evaluate(model, scene, "test", every=args.every, quiet=True)
        record = {"benchmark": "compress", "name": name, "scene": scene.name,
                  "family": model.field.family, "parameters": params,
                  "float32_bytes": 4 * params, "every": args.every,
                  "baseline": {"psnr": base["mean"]["psnr"], "ssim": base["mean"]["ssim"],
                               "render_seconds": None if args.no_render_time else
                               render_seconds(model, scene, views[:3])},
                  "rows": [], "machine": machine_info()}
    base_render = record["baseline"]["render_seconds"]
    if args.append and not args.no_render_time:
        # Appended rows are timed against the uncompressed field timed again in this run.
        base_render = render_seconds(model, scene, views[:3])
    print(f"{name}: {params:,} parameters; float32 {4 * params / 1e6:.2f} MB; PSNR "
          f"{record['baseline']['psnr']:.2f}", file=sys.stderr)
    commit = machine_info()["commit"]
    quant_bytes: list[int | None] = []  # per pipeline of this run: its quantized sections
    for spec in args.pipelines:
        text = PRESETS[spec[len("preset:"):]] if spec.startswith("preset:") else spec
        text = re.sub(r"budget=@(\d+)", lambda m: f"budget={earlier_bytes(quant_bytes, m)}",
                      text)
        t0 = time.perf_counter()
        c = run_pipeline(model, parse_pipeline(text), scene)
        compress_s = time.perf_counter() - t0
        report = c.save(tmp / "c.nrz")
        quantized = {k for k, cons in c.constraints.items()
                     if any(isinstance(q, QuantGrid) for q in cons)}
        quant_bytes.append(sum(s.bytes for s in report.sections
                               if s.name.removeprefix("field.") in quantized) or None)
        t0 = time.perf_counter()
        back = nrz.load(tmp / "c.nrz")
        decode_s = time.perf_counter() - t0
        res = evaluate(back, scene, "test", every=args.every, quiet=True)
        row = {"pipeline": spec, "steps": text, "bytes": report.bytes,
               "ratio": 4 * params / report.bytes, "psnr": res["mean"]["psnr"],
               "ssim": res["mean"]["ssim"], "quant_section_bytes": quant_bytes[-1],
               "psnr_loss": record["baseline"]["psnr"] - res["mean"]["psnr"],
               "decode_seconds": decode_s, "compress_seconds": compress_s,
               "render_ratio": None if base_render is None or args.no_render_time else
               render_seconds(back, scene, views[:3]) / base_render,
               "baseline_render_seconds": base_render,
               "command": "python " + " ".join(sys.argv), "commit": commit}
        record["rows"] = [r for r in record["rows"] if r["pipeline"] != spec] + [row]
        print(f"  {spec:<45} {report.bytes / 1e6:7.3f} MB  x{row['ratio']:7.1f}  PSNR "
              f"{row['psnr']:.2f} ({-row['psnr_loss']:+.2f})  decode {decode_s:.2f} s  render "
              f"x{row['render_ratio'] or 0:.2f}  ({compress_s:.0f} s)", file=sys.stderr)
        write_json(out_json, record)
        if args.keep is not None:
            args.keep.mkdir(parents=True, exist_ok=True)
            row_number = record["rows"].index(row) + 1
            shutil.copyfile(tmp / "c.nrz", args.keep / f"{name}_{row_number}.nrz")


def earlier_bytes(quant_bytes: list[int | None], match: re.Match[str]) -> int:
    """The quantized-section bytes of the pipeline ``budget=@N`` names."""
    n = int(match.group(1))
    if not 1 <= n <= len(quant_bytes) or quant_bytes[n - 1] is None:
        raise SystemExit(f"budget=@{n}: pipeline {n} must come earlier and quantize something")
    return int(quant_bytes[n - 1])


if __name__ == "__main__":
    main()
