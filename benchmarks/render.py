"""Benchmark: full-resolution render time of a trained model, and what the inference renderer's
density baking gives, in one run.

For each setting (``baked``: the default inference path; ``factors``: baking switched off, so
density comes from the factor grids as in training; ``step xS``: the default path marching with
S times the trained step, ``nerfzip eval --step-scale S``) it scores the test subset and times
full test views (the same 5 views as ``train.py``: median after a warm-up). Writes
``benchmarks/records/render_<name>.json``.

    python benchmarks/render.py --model benchmarks/out/train_lego_tensorf-vm_crop --every 8 \
        --step-scales 1.5 2
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from common import RECORDS, render_seconds

import nerfzip.fields.tensorf as tensorf
from nerfzip.data.load import load_scene
from nerfzip.evaluation.evaluate import evaluate
from nerfzip.training.checkpoint import load_model
from nerfzip.utils.io import write_json
from nerfzip.utils.machine import machine_info

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True, help="run folder, model file or .nrz file")
    ap.add_argument("--name", default=None)
    ap.add_argument("--every", type=int, default=8, help="score every N-th test view")
    ap.add_argument("--no-factors", action="store_true",
                    help="skip the unbaked setting (for fields that are not TensoRF)")
    ap.add_argument("--step-scales", type=float, nargs="*", default=[],
                    help="also render with these multiples of the trained step")
    args = ap.parse_args()

    model = load_model(args.model)
    scene = load_scene(model.space.source, downscale=model.space.downscale)
    name = args.name or f"{scene.name}_{model.field.family}"
    n_test = len(scene.split("test"))
    timed = [(i * 7) % n_test for i in range(5)]
    default_max = tensorf.BAKE_MAX_VOXELS
    settings = [("baked", default_max, 1.0)]
    if not args.no_factors:
        settings.append(("factors", 0, 1.0))
    settings += [(f"step x{s:g}", default_max, s) for s in args.step_scales]
    rows = {}
    base_render = model.render
    for label, max_voxels, scale in settings:
        tensorf.BAKE_MAX_VOXELS = max_voxels
        model.render = base_render
        model.meta.pop("step_scale", None)
        if scale != 1.0:
            model.set_step_scale(scale)
        res = evaluate(model, scene, "test", every=args.every, quiet=True)
        rows[label] = {"psnr": res["mean"]["psnr"], "ssim": res["mean"]["ssim"],
                       "views": res["views_evaluated"], "step_size": model.render.step_size,
                       "render_seconds_median": render_seconds(model, scene, timed)}
        print(f"{label}: {rows[label]}", file=sys.stderr, flush=True)
    model.render = base_render
    record = {"benchmark": "render", "name": name, "scene": scene.name,
              "family": model.field.family, "model": args.model, "every": args.every,
              "timed_views": timed, "rows": rows, "render": vars(model.render),
              "command": "python " + " ".join(sys.argv), "machine": machine_info(),
              "torch_threads": torch.get_num_threads()}
    write_json(RECORDS / f"render_{name}.json", record)


if __name__ == "__main__":
    main()
