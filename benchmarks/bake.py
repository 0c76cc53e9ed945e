"""Benchmark: fields baked into octrees, in one run against their source.

For each pipeline (starting with ``bake``): bake + compression time, .nrz bytes, decode time,
test PSNR / SSIM against the ground truth (``--every``), PSNR / SSIM against the source field's
own renders of the same views (``--source-every``), the median full-resolution frame time over
5 views after a warm-up, in a new process that loads the .nrz as a viewer would (frames per
second; the time in the baking process is recorded beside it), leaf segments per ray,
nanoseconds per segment (wall time of the frame over its segments, and core time: times the
threads), and the speed-up over the source's own renderer timed in the same run (median over
``--source-views`` views). Writes ``benchmarks/records/bake_<name>.json``.

    python benchmarks/bake.py --model benchmarks/out/train_lego_tensorf-vm_crop --name lego_vm \\
        --pipelines "bake()" "bake() finetune(2000, 4096, lr_grid=0.01) quant(8)"
"""

from __future__ import annotations

import argparse
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from common import RECORDS, render_seconds

from nerfzip.codec import nrz
from nerfzip.compression.pipeline import PRESETS, parse_pipeline, run_pipeline
from nerfzip.data.cameras import image_rays
from nerfzip.data.load import load_scene
from nerfzip.evaluation.metrics import image_metrics, to_uint8
from nerfzip.importers.nerf_pytorch import import_nerf_pytorch
from nerfzip.rendering.renderer import render_rays
from nerfzip.training.checkpoint import load_model
from nerfzip.utils.io import read_json, write_json
from nerfzip.utils.machine import machine_info

ROOT = Path(__file__).resolve().parents[1]


def load_source(args: argparse.Namespace):  # noqa: ANN201
    """The source model and its scene (a run / model file, or an imported checkpoint)."""
    if args.imported:
        ckpt, data = args.imported
        scene = load_scene(data)
        return import_nerf_pytorch(ckpt, scene), scene
    model = load_model(args.model)
    return model, load_scene(model.space.source, downscale=model.space.downscale)


FRESH = """
import sys
sys.path.insert(0, {bench!r})
from common import render_seconds
from nerfzip.codec import nrz
from nerfzip.data.load import load_scene
model = nrz.load({path!r})
scene = load_scene(model.space.source, downscale=model.space.downscale)
print(render_seconds(model, scene, {views!r}))
"""


def fresh_frame_seconds(path: Path, views: list[int]) -> float:
    """``render_seconds`` of a .nrz file in a new process, as a user who opens the file gets
    it, not in the process that has just baked and fine-tuned (its heap and its idle PyTorch
    threads are not a viewer's; one run measured 106 ms there against 93 ms alone)."""
    code = FRESH.format(bench=str(Path(__file__).resolve().parent), path=str(path.resolve()),
                        views=views)
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True,
                         text=True)
    return float(out.stdout.strip().splitlines()[-1])


@torch.no_grad()
def samples_per_ray(model, scene, index: int) -> tuple[float, float]:  # noqa: ANN001
    """Leaf segments (octree) or field samples (other samplers) per ray of one view, and the
    cells the octree walk visited per ray (empty ones included)."""
    o, d = image_rays(scene.split("test").cameras, index, model.space.pixel_offset)
    rays = model.space.make_rays(o, d)
    total, cells = 0.0, 0.0
    for i in range(0, len(rays), model.render.chunk):
        out = render_rays(model.field, rays.index(slice(i, i + model.render.chunk)),
                          model.background, model.render, model.occupancy)
        total += float(out["num_samples"])
        cells += float(out.get("cells_visited", out["num_samples"]))
    return total / len(rays), cells / len(rays)


def scores(model, scene, views: list[int], targets: dict[int, torch.Tensor]  # noqa: ANN001
           ) -> dict[str, float]:
    """Mean PSNR / SSIM of ``model``'s renders against ``targets`` (uint8 images by view)."""
    per = [image_metrics(to_uint8(model.render_view(scene, "test", i)), targets[i])
           for i in views]
    return {k: statistics.mean(p[k] for p in per) for k in ("psnr", "ssim")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", help="run folder or model file of the source")
    ap.add_argument("--imported", nargs=2, metavar=("CHECKPOINT", "DATA"),
                    help="instead: a nerf-pytorch checkpoint and its scene folder")
    ap.add_argument("--name", required=True)
    ap.add_argument("--pipelines", nargs="+", required=True,
                    help="pipeline texts starting with bake(...), or preset:NAME")
    ap.add_argument("--every", type=int, default=8, help="test views against the ground truth")
    ap.add_argument("--source-every", type=int, default=8,
                    help="test views against the source's own renders")
    ap.add_argument("--source-views", type=int, default=5,
                    help="views the source's frame time is the median of")
    ap.add_argument("--append", action="store_true", help="add rows to an existing record")
    ap.add_argument("--save", type=Path, default=None,
                    help="keep each pipeline's .nrz in this folder (<name>_<n>.nrz)")
    args = ap.parse_args()
    if bool(args.model) == bool(args.imported):
        ap.error("give --model or --imported")

    source, scene = load_source(args)
    n_test = len(scene.split("test"))
    views = list(range(0, n_test, args.every))
    src_views = list(range(0, n_test, args.source_every))
    gt = {i: scene.split("test").images[i] for i in views}
    out_json = RECORDS / f"bake_{args.name}.json"
    tmp = Path(tempfile.mkdtemp())
    threads = torch.get_num_threads()
    print(f"{args.name}: source {source.field.family}, rendering its views", file=sys.stderr)
    src_renders = {i: to_uint8(source.render_view(scene, "test", i))
                   for i in sorted(set(views) | set(src_views))}
    per = [image_metrics(src_renders[i], gt[i]) for i in views]
    src_scores = {k: statistics.mean(p[k] for p in per) for k in ("psnr", "ssim")}
    src_seconds = render_seconds(source, scene, [(i * 7) % n_test
                                                 for i in range(args.source_views)])
    record = read_json(out_json) if args.append and out_json.exists() else {
        "benchmark": "bake", "name": args.name, "scene": scene.name,
        "source_family": source.field.family, "rows": []}
    record.update({"source": {"psnr": src_scores["psnr"], "ssim": src_scores["ssim"],
                              "frame_seconds": src_seconds,
                              "views": len(views), "views_vs_source": len(src_views)},
                   "machine": machine_info(), "threads": threads})
    for n, spec in enumerate(args.pipelines):
        text = PRESETS[spec[len("preset:"):]] if spec.startswith("preset:") else spec
        t0 = time.perf_counter()
        c = run_pipeline(source, parse_pipeline(text), scene)
        build_s = time.perf_counter() - t0
        path = (args.save / f"{args.name}_{n}.nrz") if args.save else tmp / "o.nrz"
        path.parent.mkdir(parents=True, exist_ok=True)
        saved = c.save(path)
        t0 = time.perf_counter()
        back = nrz.load(path)
        decode_s = time.perf_counter() - t0
        frame_views = [(i * 7) % n_test for i in range(5)]
        frame_here = render_seconds(back, scene, frame_views)
        frame = fresh_frame_seconds(path, frame_views)
        h, w = scene.split("test").images.shape[1:3]
        spr, cells = samples_per_ray(back, scene, 0)
        vs_gt = scores(back, scene, views, gt)
        vs_src = scores(back, scene, src_views, src_renders)
        bake_report = next((s["report"] for s in c.history if s["step"] == "bake"), {})
        row = {"pipeline": spec, "steps": text, "seconds": build_s, "bytes": saved.bytes,
               "decode_seconds": decode_s, "psnr": vs_gt["psnr"], "ssim": vs_gt["ssim"],
               "psnr_loss": src_scores["psnr"] - vs_gt["psnr"],
               "psnr_vs_source": vs_src["psnr"], "ssim_vs_source": vs_src["ssim"],
               "frame_seconds": frame, "fps": 1.0 / frame,
               "frame_seconds_in_bake_process": frame_here, "samples_per_ray": spr,
               "cells_per_ray": cells,
               "ns_per_sample": 1e9 * frame / (spr * h * w),
               "core_ns_per_sample": 1e9 * frame * threads / (spr * h * w),
               "speedup": record["source"]["frame_seconds"] / frame,
               "leaves": back.field.config.leaves if back.field.family == "octree" else None,
               "depth": bake_report.get("depth"),
               "command": "python " + shlex.join(sys.argv),
               "commit": record["machine"]["commit"]}
        record["rows"] = [r for r in record["rows"] if r["pipeline"] != spec] + [row]
        print(f"  {spec:<50} {saved.bytes / 2**20:6.2f} MB  PSNR {row['psnr']:.2f} "
              f"({-row['psnr_loss']:+.2f}; vs source {row['psnr_vs_source']:.2f})  "
              f"{row['fps']:.1f} FPS, x{row['speedup']:.0f}, {spr:.1f} segments/ray  "
              f"({build_s:.0f} s)", file=sys.stderr)
        write_json(out_json, record)


if __name__ == "__main__":
    main()
