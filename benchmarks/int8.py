"""Benchmark: dynamic int8 inference of a model's linear layers (``--int8 on``) against float32,
in one run: test PSNR / SSIM of both, median full-view render time, and the time of one batch
of 65,536 field queries each way, and int8's colour / density error on those points (what
``--int8 auto`` measures to decide). Writes
``benchmarks/records/int8_<name>.json``.

    python benchmarks/int8.py --model benchmarks/out/train_lego_tensorf-vm_crop --every 8
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from common import RECORDS, render_seconds

from nerfzip.data.load import load_scene
from nerfzip.evaluation.evaluate import evaluate
from nerfzip.rendering.int8 import sample_points, time_forward, with_int8
from nerfzip.training.checkpoint import load_model
from nerfzip.utils.io import write_json
from nerfzip.utils.machine import machine_info

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True, help="run folder, model file or .nrz file")
    ap.add_argument("--name", default=None)
    ap.add_argument("--every", type=int, default=8, help="evaluate every N-th test view")
    ap.add_argument("--render-views", type=int, default=3, help="views timed for render time")
    args = ap.parse_args()

    model = load_model(args.model)
    scene = load_scene(model.space.source, downscale=model.space.downscale)
    name = args.name or f"{scene.name}_{model.field.family}"
    q, report = with_int8(model, "on")
    x, d = sample_points(model.field, 65536)
    views = list(range(0, len(scene.split("test")), args.every))
    rows = {}
    for label, m in (("float32", model), ("int8", q)):
        res = evaluate(m, scene, "test", every=args.every, quiet=True)
        rows[label] = {"psnr": res["mean"]["psnr"], "ssim": res["mean"]["ssim"],
                       "query_seconds": time_forward(m.field, x, d),
                       "render_seconds": render_seconds(m, scene, views[:args.render_views])}
        print(f"{label}: {rows[label]}", file=sys.stderr)
    record = {"benchmark": "int8", "name": name, "scene": scene.name,
              "family": model.field.family, "model": args.model, "every": args.every,
              "views": len(views), "rows": rows,
              "output_error": {k: report[k] for k in ("colour_rms", "density_error")},
              "command": "python " + " ".join(sys.argv),
              "machine": machine_info()}
    write_json(RECORDS / f"int8_{name}.json", record)


if __name__ == "__main__":
    main()
