"""Benchmark: test PSNR against training wall time, per field family and scene.

Trains with the CLI's defaults for the scene, pauses the clock at fixed training times to
evaluate the quick test subset (benchmarks.md: lego every 8th test view; all test views of fern
and fox), then evaluates the final model, measures render time (median over 5 views after a
warm-up) and peak memory (max RSS). Writes
``benchmarks/records/train_<scene>_<field>.json``.
Any training option of ``nerfzip train`` overrides the scene's defaults. ``--mark-every``
evaluates the timed marks on a sparser subset (for fields whose renders take minutes);
``--final-every`` does the same for the final evaluation and ``--render-views`` sets how many
views the render time is the median of (default 5, the protocol's), both recorded and shown.

    python benchmarks/train.py --scene lego --field tensorf-vm --iters 1500 --marks 5 10 15
    python benchmarks/train.py --scene lego --field mlp-nerf --mlp-width 128 --mlp-depth 4 \
        --iters 2000 --marks 5 10 20 --mark-every 50 --tag 4x128
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path

import torch
from common import RECORDS, render_seconds

from nerfzip.cli.args import add_dataclass_options, overrides
from nerfzip.data.load import load_scene
from nerfzip.evaluation.evaluate import evaluate
from nerfzip.training.config import TrainConfig, defaults_for
from nerfzip.training.trainer import Trainer
from nerfzip.utils.io import write_json
from nerfzip.utils.machine import machine_info

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
SCENES = {  # path, eval every N-th test view
    "lego": (DATA / "nerf_synthetic" / "lego", 8),
    "fern": (DATA / "nerf_llff_data" / "fern", 1),
    "fox": (DATA / "nerfstudio" / "fox", 1),
    "procedural": ("procedural", 1),
}


def peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--scene", choices=sorted(SCENES), required=True)
    ap.add_argument("--marks", type=float, nargs="*", default=[],
                    help="training minutes at which to evaluate the quick subset")
    ap.add_argument("--mark-every", type=int, default=None,
                    help="evaluate the marks on every N-th test view (default: the protocol's)")
    ap.add_argument("--final-every", type=int, default=None,
                    help="final evaluation on every N-th test view (default: the protocol's)")
    ap.add_argument("--render-views", type=int, default=5,
                    help="render time: median over this many test views (protocol: 5)")
    ap.add_argument("--out", default=None)
    ap.add_argument("--tag", default="")
    add_dataclass_options(ap, TrainConfig)
    args = ap.parse_args()
    args.field = args.field or TrainConfig.field

    path, every = SCENES[args.scene]
    scene = load_scene(path)
    cfg = replace(defaults_for(scene.format, args.field), **overrides(args, TrainConfig))
    mark_every = args.mark_every or every
    name = f"train_{args.scene}_{args.field}{('_' + args.tag) if args.tag else ''}"
    out_dir = Path(args.out or ROOT / "benchmarks" / "out" / name)
    marks = sorted(m * 60 for m in args.marks)
    curve: list[dict] = []

    def on_step(trainer: Trainer, stats: dict) -> None:
        while marks and trainer.train_seconds >= marks[0]:
            m = marks.pop(0)
            res = evaluate(trainer.model, scene, "test", every=mark_every, quiet=True)
            curve.append({"minutes": m / 60, "step": trainer.step, "psnr": res["mean"]["psnr"],
                          "ssim": res["mean"]["ssim"], "test_views": res["views_evaluated"]})
            print(f"[{m / 60:.0f} min, step {trainer.step}] test PSNR {res['mean']['psnr']:.2f}",
                  file=sys.stderr, flush=True)

    trainer = Trainer(scene, cfg, out_dir)
    t0 = time.perf_counter()
    model = trainer.run(callback=on_step, quiet=True)
    wall = time.perf_counter() - t0
    final = evaluate(model, scene, "test", every=args.final_every or every,
                     out_dir=out_dir / "eval", quiet=True)
    record = {
        "benchmark": "train", "scene": args.scene, "field": args.field,
        "command": "python " + " ".join(sys.argv),
        "train_steps": trainer.step, "train_seconds": trainer.train_seconds,
        "wall_seconds_incl_evals": wall,
        "test_subset": final["subset"], "test_views": final["views_evaluated"],
        "final_psnr": final["mean"]["psnr"], "final_ssim": final["mean"]["ssim"],
        "curve": curve, "render_seconds_median": render_seconds(
            model, scene, [(i * 7) % len(scene.split("test")) for i in range(args.render_views)]),
        "render_views": args.render_views,
        "peak_rss_gb": peak_rss_gb(), "parameters": model.field.num_parameters(),
        "field_aabb": model.field.aabb.tolist(),
        "model_bytes": (out_dir / "model.safetensors").stat().st_size,
        "config": asdict(cfg), "machine": machine_info(), "torch_threads": torch.get_num_threads(),
    }
    write_json(RECORDS / f"{name}.json", record)
    print(json.dumps({k: v for k, v in record.items() if k not in ("config", "curve")}, indent=1))


if __name__ == "__main__":
    main()
