"""Benchmark: the imported nerf-pytorch models, scored with the hierarchical sampling they were
trained with (64 coarse + 64 fine samples per ray), and the time to render one view.

A plain MLP NeRF render of a 400x400 view costs minutes on a 2-core CPU, so ``--views`` picks
the test views to score (default: lego views 0 and 8, which the issue quotes for orientation;
fern's whole test split, 3 views). Writes ``benchmarks/records/imported_<scene>.json``.

    python benchmarks/imported.py --scene lego --views 0 8
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

from common import RECORDS

from nerfzip.data.load import load_scene
from nerfzip.evaluation.metrics import image_metrics, to_uint8
from nerfzip.importers.nerf_pytorch import import_nerf_pytorch
from nerfzip.utils.io import write_image, write_json
from nerfzip.utils.machine import machine_info

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
SCENES = {
    "lego": (SHARED / "data/nerf_synthetic/lego",
             SHARED / "models/nerf-pytorch/lego-lowres/checkpoint199999.ckpt", [0, 8]),
    "fern": (SHARED / "data/nerf_llff_data/fern",
             SHARED / "models/nerf-pytorch/fern-lowres/checkpoint249999.ckpt", [0, 1, 2]),
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--scene", choices=sorted(SCENES), required=True)
    ap.add_argument("--views", type=int, nargs="*", default=None)
    args = ap.parse_args()
    data, ckpt, default_views = SCENES[args.scene]
    scene = load_scene(data)
    t0 = time.perf_counter()
    model = import_nerf_pytorch(ckpt, scene)
    import_seconds = time.perf_counter() - t0
    out = ROOT / "benchmarks" / "out" / f"imported_{args.scene}"
    views, times = [], []
    for i in args.views if args.views is not None else default_views:
        t0 = time.perf_counter()
        pred = to_uint8(model.render_view(scene, "test", i))
        times.append(time.perf_counter() - t0)
        m = image_metrics(pred, scene.split("test").images[i])
        write_image(out / f"test_{i:03d}.png", pred.numpy())
        views.append({"index": i, **m, "seconds": times[-1]})
        print(f"view {i}: PSNR {m['psnr']:.2f} SSIM {m['ssim']:.4f} {times[-1]:.1f} s",
              file=sys.stderr, flush=True)
    record = {
        "benchmark": "imported", "scene": args.scene, "checkpoint": str(ckpt.name),
        "command": "python " + " ".join(sys.argv), "sampling": "64 coarse + 64 fine",
        "views": views, "mean_psnr": statistics.mean(v["psnr"] for v in views),
        "mean_ssim": statistics.mean(v["ssim"] for v in views),
        "render_seconds_median": statistics.median(times), "import_seconds": import_seconds,
        "parameters": model.field.num_parameters(), "checkpoint_bytes": ckpt.stat().st_size,
        "machine": machine_info(),
    }
    write_json(RECORDS / f"imported_{args.scene}.json", record)
    print(json.dumps({k: v for k, v in record.items() if k != "views"}, indent=1))


if __name__ == "__main__":
    main()
