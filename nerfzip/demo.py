"""``nerfzip demo``: the whole product on the built-in procedural scene, start to end — train a
TensoRF-VM field, evaluate it on held-out views, render a short orbit, and print a table.

Later compression stages extend this demo; it needs no files and runs in minutes on a CPU.
"""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

from nerfzip.data.scene import load_scene
from nerfzip.evaluation.evaluate import evaluate, render_path
from nerfzip.training.config import defaults_for
from nerfzip.training.trainer import train

DEMO_ITERS = 600


def run_demo(out: Path, iters: int | None = None, quiet: bool = False) -> dict:
    """Train, evaluate and render on the procedural scene; print and return the figures."""
    t0 = time.perf_counter()
    scene = load_scene("procedural")
    cfg = replace(defaults_for("procedural", "tensorf-vm"), iters=iters or DEMO_ITERS)
    run = out / "tensorf-vm"
    model = train(scene, cfg, run, quiet=quiet)
    t_train = time.perf_counter() - t0
    results = evaluate(model, scene, "test", out_dir=run / "eval", quiet=quiet)
    video = render_path(model, scene.split("train").cameras, run / "render", "orbit",
                        n_frames=24, fmt="gif", quiet=quiet)
    size = (run / "model.safetensors").stat().st_size
    rows = [("field", model.field.family), ("parameters", f"{model.field.num_parameters():,}"),
            ("model size", f"{size / 2**20:.2f} MB (float32 safetensors)"),
            ("training", f"{cfg.iters} steps, {t_train:.0f} s"),
            ("test PSNR", f"{results['mean']['psnr']:.2f} dB ({results['views_evaluated']} views)"),
            ("test SSIM", f"{results['mean']['ssim']:.4f}"),
            ("render", f"{results['mean']['seconds_per_view_median'] * 1000:.0f} ms / "
                       f"{results['resolution'][0]}x{results['resolution'][1]} view"),
            ("outputs", f"{run} (model, eval/results.json, {video.name})")]
    width = max(len(k) for k, _ in rows)
    print("\nnerfzip demo — procedural scene")
    for k, v in rows:
        print(f"  {k:<{width}}  {v}")
    return results
