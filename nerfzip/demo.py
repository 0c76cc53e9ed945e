"""``nerfzip demo``: the whole product on the built-in procedural scene, start to end — train a
TensoRF-VM field, evaluate it on held-out views, render a short orbit, compress it into .nrz
files (lossless, 8-bit, a pruning + vector quantization + fine-tuning pipeline, and an octree
baked for fast rendering), decode each file and evaluate it again, and print a table with
each file's render time and frames per second.

It needs no files and runs in a few minutes on a CPU.
"""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

from nerfzip.codec import nrz
from nerfzip.compression.compressed import Compressed
from nerfzip.compression.pipeline import parse_pipeline, run_pipeline
from nerfzip.data.load import load_scene
from nerfzip.data.scene import Scene
from nerfzip.evaluation.evaluate import evaluate, render_path
from nerfzip.rendering.model import RadianceModel
from nerfzip.training.config import defaults_for
from nerfzip.training.trainer import train

DEMO_ITERS = 600
DEMO_PIPELINE = ("prune(method=occupancy) vq(256, 0.01) quant(6, min_elements=1024) "
                 "finetune(150, 1024)")
DEMO_BAKE = "bake(depth=7, n_rays=65536) quant(8, min_elements=1024)"


def compressed_rows(model: RadianceModel, scene: Scene, run: Path, quiet: bool,
                    pipeline: str = DEMO_PIPELINE
                    ) -> list[tuple[str, int, float, float, float, float]]:
    """(file, bytes, PSNR, SSIM, decode seconds, seconds per view) of the model as .nrz files,
    each decoded and evaluated again."""
    variants = [("lossless.nrz", Compressed.of(model)),
                ("8bit.nrz", run_pipeline(model, parse_pipeline("quant(8)"), scene)),
                ("pipeline.nrz", run_pipeline(model, parse_pipeline(pipeline), scene,
                                              quiet=quiet)),
                ("octree.nrz", run_pipeline(model, parse_pipeline(DEMO_BAKE), scene,
                                            quiet=quiet))]
    rows = []
    for name, c in variants:
        report = c.save(run / name)
        back = nrz.load(run / name)
        res = evaluate(back, scene, "test", quiet=True)
        rows.append((name, report.bytes, res["mean"]["psnr"], res["mean"]["ssim"],
                     back.meta["decode"]["seconds"], res["mean"]["seconds_per_view_median"]))
    return rows


def run_demo(out: Path, iters: int | None = None, quiet: bool = False,
             pipeline: str = DEMO_PIPELINE) -> dict:
    """Train, evaluate, render and compress on the procedural scene; print and return the
    figures (``test``: the float32 model's results, ``files``: one entry per .nrz file).
    ``iters`` and ``pipeline`` shrink the run (the test suite's demo)."""
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
    files = compressed_rows(model, scene, run, quiet, pipeline)
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
    dense = 4 * model.field.num_parameters()
    view = results["mean"]["seconds_per_view_median"]
    print(f"\n  {'file':<14} {'bytes':>10} {'smaller':>8} {'PSNR':>7} {'SSIM':>7} {'decode':>7} "
          f"{'view':>8} {'FPS':>6}")
    print(f"  {'float32':<14} {dense:>10,} {'1.0x':>8} {results['mean']['psnr']:>7.2f} "
          f"{results['mean']['ssim']:>7.4f} {'':>7} {view * 1000:>6.0f}ms {1 / view:>6.1f}")
    for name, nbytes, psnr, ssim, dec, sec in files:
        print(f"  {name:<14} {nbytes:>10,} {dense / nbytes:>7.1f}x {psnr:>7.2f} {ssim:>7.4f} "
              f"{dec:>6.2f}s {sec * 1000:>6.0f}ms {1 / sec:>6.1f}")
    print(f"  (pipeline.nrz: {pipeline})\n  (octree.nrz: {DEMO_BAKE}; rendered by leaf "
          "traversal)")
    return {"test": results, "files": [
        {"name": n, "bytes": b, "psnr": p, "ssim": s, "decode_seconds": d,
         "seconds_per_view": v} for n, b, p, s, d, v in files]}
