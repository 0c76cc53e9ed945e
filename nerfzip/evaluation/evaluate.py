"""Evaluate a model on a scene's test views with the protocol of ``benchmarks.md``, and render
camera paths to frames and a video.

Metrics are computed on 8-bit images composited on the scene background; per-view figures and
their mean go to ``results.json`` together with the machine and commit they were measured on.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Any

import imageio.v3 as iio
import numpy as np
import torch

from nerfzip.data.cameras import Cameras, image_rays
from nerfzip.data.scene import Scene
from nerfzip.errors import NerfzipError
from nerfzip.evaluation.camera_path import orbit_path, spiral_path
from nerfzip.evaluation.metrics import image_metrics, to_uint8
from nerfzip.rendering.model import RadianceModel
from nerfzip.utils.io import atomic_path, write_image, write_json
from nerfzip.utils.machine import machine_info
from nerfzip.utils.progress import progress_bar


def view_indices(n: int, every: int = 1, limit: int | None = None) -> list[int]:
    """Every ``every``-th view (the protocol's quick subsets), at most ``limit`` of them."""
    idx = list(range(0, n, max(1, every)))
    return idx[:limit] if limit else idx


def evaluate(model: RadianceModel, scene: Scene, split: str = "test", every: int = 1,
             limit: int | None = None, out_dir: str | Path | None = None,
             quiet: bool = False) -> dict[str, Any]:
    """Render the views of ``split``, score them, save images and ``results.json``."""
    sp = scene.split(split)
    indices = view_indices(len(sp), every, limit)
    out = Path(out_dir) if out_dir is not None else None
    views, times = [], []
    bar = progress_bar(len(indices), desc=f"eval {split}", quiet=quiet)
    for i in indices:
        t0 = time.perf_counter()
        pred = to_uint8(model.render_view(scene, split, i))
        times.append(time.perf_counter() - t0)
        m = image_metrics(pred, sp.images[i])
        views.append({"index": i, "name": sp.names[i], **m, "seconds": times[-1]})
        if out is not None:
            write_image(out / "renders" / f"{i:03d}_{Path(sp.names[i]).stem}.png", pred.numpy())
        bar.update(1)
        bar.set_postfix(psnr=f"{statistics.mean(v['psnr'] for v in views):.2f}")
    bar.close()
    h, w = sp.images.shape[1:3]
    results = {
        "scene": scene.name, "split": split, "views_evaluated": len(indices),
        "views_in_split": len(sp), "subset": f"every {every}th view" if every > 1 else "all",
        "resolution": [int(w), int(h)],
        "mean": {"psnr": statistics.mean(v["psnr"] for v in views),
                 "ssim": statistics.mean(v["ssim"] for v in views),
                 "seconds_per_view_median": statistics.median(times)},
        "protocol": "8-bit images composited on the scene background; PSNR 10log10(1/mse); "
                    "SSIM 11x11 Gaussian window sigma 1.5, channel mean",
        "model": model_summary(model), "views": views, "machine": machine_info(),
    }
    if out is not None:
        write_json(out / "results.json", results)
    return results


def model_summary(model: RadianceModel) -> dict[str, Any]:
    """What was evaluated: field family and size, and for a decoded file its bytes and decode
    time."""
    int8 = model.meta.get("int8")
    out: dict[str, Any] = {"family": model.field.family,
                           "parameters": (int8["parameters"] if int8 else
                                          model.field.num_parameters()),
                           "pipeline": model.meta.get("pipeline", [])}
    if int8:
        out["int8"] = True
    if "step_scale" in model.meta:
        out["step_scale"] = model.meta["step_scale"]
    if "decode" in model.meta:
        out["file_bytes"] = model.meta["decode"]["file_bytes"]
        out["decode_seconds"] = model.meta["decode"]["seconds"]
    return out


def path_poses(model: RadianceModel, cams: Cameras, path: str, n_frames: int) -> torch.Tensor:
    if path == "orbit":
        if model.space.ndc is not None:
            raise NerfzipError("an orbit leaves a forward-facing (NDC) scene's field of view; "
                               "use --path spiral")
        return orbit_path(cams, n_frames)
    if path == "spiral":
        return spiral_path(cams, n_frames)
    if path == "test":
        return cams.c2w[:n_frames]
    raise NerfzipError(f"unknown camera path {path!r} (orbit, spiral or test)")


def render_path(model: RadianceModel, cams: Cameras, out_dir: str | Path, path: str = "orbit",
                n_frames: int = 60, fps: int = 24, fmt: str = "mp4",
                quiet: bool = False) -> Path:
    """Render ``n_frames`` along a camera path with the intrinsics of ``cams[0]``; writes
    ``frames/*.png`` and ``{path}.{fmt}`` into ``out_dir``; returns the video path."""
    out = Path(out_dir)
    poses = path_poses(model, cams, path, n_frames)
    base = cams[0]
    frames = []
    bar = progress_bar(len(poses), desc=f"render {path}", quiet=quiet)
    for k, pose in enumerate(poses):
        cam = Cameras(pose[None], base.fx, base.fy, base.cx, base.cy, base.width, base.height,
                      None)
        o, d = image_rays(cam, 0, model.space.pixel_offset)
        rgb = model.render_rays(model.space.make_rays(o, d).to(model.field.aabb.device))
        img = to_uint8(rgb.view(int(base.height[0]), int(base.width[0]), 3).cpu()).numpy()
        write_image(out / "frames" / f"{k:04d}.png", img)
        frames.append(img)
        bar.update(1)
    bar.close()
    video = out / f"{path}.{fmt}"
    with atomic_path(video) as tmp:
        if fmt == "gif":
            iio.imwrite(tmp, np.stack(frames), extension=".gif", duration=1000 / fps, loop=0)
        elif fmt == "mp4":
            iio.imwrite(tmp, np.stack(frames), extension=".mp4", fps=fps, codec="libx264",
                        macro_block_size=1)
        else:
            raise NerfzipError(f"unknown video format {fmt!r} (mp4 or gif)")
    return video
