"""Benchmark: looking at a baked octree, in the browser and in ``nerfzip view``.

- **export**: ``export-web`` time and the exported folder's bytes (total and per file);
- **page**: in headless Chromium with *software* WebGL2 (SwiftShader, on the CPU; a GPU is
  far faster), load-to-first-frame (from the navigation's start to the first frame drawn, data
  fetched and decompressed, textures uploaded, shader compiled; the page draws its first frame
  at half resolution, then the full one: both are timed) over ``--loads`` fresh pages,
  then the median draw time of a frame at full and at moving resolution, and the canvas's PSNR
  against the Python renderer of the same camera;
- **viewer**: the frame time of ``nerfzip view``'s renderer (the octree kernel, threads as
  set) at its moving and still resolutions for the same camera, median over ``--frames``
  after a warm-up (rendering only; the image's trip to the browser is not counted).

Writes ``benchmarks/records/view_<name>.json``.

    python benchmarks/view.py --file lego_octree.nrz --name lego
    python benchmarks/view.py --procedural-depth 8 --name procedural   # no files needed
"""

from __future__ import annotations

import argparse
import base64
import shlex
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from common import RECORDS

from nerfzip.codec import nrz
from nerfzip.utils.io import read_json, write_json
from nerfzip.utils.machine import machine_info
from nerfzip.viewer.browser import CHROMIUM_ARGS, find_chromium, static_server, wait_ready
from nerfzip.viewer.camera import View, render, to_uint8
from nerfzip.viewer.export import export_web
from nerfzip.viewer.live import ViewerConfig, frame_size

ROOT = Path(__file__).resolve().parents[1]


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    mse = ((a.double() - b.double()) / 255).pow(2).mean().item()
    return 10 * torch.log10(torch.tensor(1 / max(mse, 1e-12))).item()


def page_figures(site: Path, view: View, model, loads: int, frames: int, moving: float) -> dict:
    from playwright.sync_api import sync_playwright

    exe = find_chromium()
    if exe is None:
        raise SystemExit("no chromium binary: apt-get install -y chromium")
    fragment = f"ui=0&camera={view.to_fragment()}"
    load_ms, full_ms, first_ms, full, move = [], [], [], [], []
    with static_server(site) as url, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=exe, args=CHROMIUM_ARGS)
        for _ in range(loads):
            context = browser.new_context()  # a fresh page and cache each time
            page = context.new_page()
            page.goto(f"{url}/index.html#{fragment}")
            wait_ready(page, 600_000)
            load_ms.append(page.evaluate("window.nerfzip.loadToFirstFrameMs"))
            page.wait_for_function("window.nerfzip.refined === true", timeout=600_000)
            full_ms.append(page.evaluate("window.nerfzip.loadToFullFrameMs"))
            first_ms.append(page.evaluate("window.nerfzip.lastFrameMs"))
            full += page.evaluate(f"window.nerfzip.timeFrames({frames}, 1)")
            move += page.evaluate(f"window.nerfzip.timeFrames({frames}, {moving})")
            out = page.evaluate("window.nerfzip.readPixels()")
            context.close()
        renderer = browser.version
        browser.close()
    web = torch.frombuffer(bytearray(base64.b64decode(out["rgb"])), dtype=torch.uint8)
    web = web.view(out["height"], out["width"], 3)
    return {"load_to_first_frame_ms": statistics.median(load_ms), "loads": loads,
            "first_frame_scale": moving, "load_to_full_frame_ms": statistics.median(full_ms),
            "load_to_first_frame_all_ms": load_ms, "full_draw_ms": statistics.median(first_ms),
            "frame_ms_full": statistics.median(full), "frame_ms_moving": statistics.median(move),
            "canvas_psnr_vs_python": psnr(web, to_uint8(render(model, view))),
            "size": [view.width, view.height], "browser": f"chromium {renderer}",
            "webgl": "SwiftShader (software, CPU)"}


def viewer_figures(model, view: View, frames: int) -> dict:
    cfg = ViewerConfig()
    out = {"threads": torch.get_num_threads()}
    for kind, scale in (("moving", cfg.moving_scale), ("still", 1.0)):
        w, h = frame_size(view.width, view.height, cfg.resolution, scale)
        v = view.resized(w, h)
        render(model, v)  # warm-up (numba compiles on the first call)
        times = []
        for _ in range(frames):
            t0 = time.perf_counter()
            render(model, v)
            times.append(time.perf_counter() - t0)
        out[kind] = {"size": [w, h], "frame_ms": 1000 * statistics.median(times),
                     "fps": 1 / statistics.median(times)}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--file", help="a baked SH octree (.nrz)")
    ap.add_argument("--procedural-depth", type=int, default=None,
                    help="instead of --file: bake the built-in procedural scene at this depth")
    ap.add_argument("--name", required=True, help="record name: view_<name>.json")
    ap.add_argument("--density-bits", type=int, default=16, choices=[8, 16])
    ap.add_argument("--sh-degree", type=int, default=None)
    ap.add_argument("--size", type=int, default=None,
                    help="longest side of the timed view (default: the scene's first test "
                         "view as exported, at most 800)")
    ap.add_argument("--loads", type=int, default=3, help="fresh page loads timed")
    ap.add_argument("--frames", type=int, default=5, help="frames timed per measure")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="nerfzip_view_bench_"))
    if args.file:
        path = Path(args.file)
    elif args.procedural_depth:
        sys.path.insert(0, str(ROOT / "tests"))
        from web_scene import write_baked

        path = work / f"procedural_depth{args.procedural_depth}.nrz"
        write_baked(path, depth=args.procedural_depth)
    else:
        raise SystemExit("give --file FILE.nrz or --procedural-depth D")
    model = nrz.load(path)
    report = export_web(path, work / "site", args.sh_degree, density_bits=args.density_bits)
    print(report.line())
    view = View.from_dict(read_json(work / "site" / "scene.json")["camera"])
    if args.size:
        scale = args.size / max(view.width, view.height)
        view = view.resized(round(view.width * scale), round(view.height * scale))
    page = page_figures(work / "site", view, model, args.loads, args.frames, 0.5)
    print(f"page: first frame (half resolution) {page['load_to_first_frame_ms']:.0f} ms after "
          f"navigation, full {page['load_to_full_frame_ms']:.0f} ms (software WebGL), frames "
          f"{page['frame_ms_full']:.0f} ms at {view.width}x{view.height}, "
          f"{page['frame_ms_moving']:.0f} ms at half; canvas vs Python "
          f"{page['canvas_psnr_vs_python']:.2f} dB")
    viewer = viewer_figures(model, view, args.frames)
    print(f"viewer: moving {viewer['moving']['frame_ms']:.1f} ms "
          f"({viewer['moving']['fps']:.1f} fps) at {viewer['moving']['size']}, still "
          f"{viewer['still']['frame_ms']:.1f} ms at {viewer['still']['size']}")
    record = {"benchmark": "view", "name": args.name, "file": str(path),
              "file_bytes": path.stat().st_size, "leaves": report.leaves,
              "nodes": report.nodes,
              "export": {"seconds": report.seconds, "bytes": report.bytes,
                         "files": report.files, "density_bits": args.density_bits,
                         "sh_degree": args.sh_degree},
              "page": page, "viewer": viewer, "machine": machine_info(),
              "command": "python benchmarks/view.py " + shlex.join(sys.argv[1:])}
    RECORDS.mkdir(exist_ok=True)
    write_json(RECORDS / f"view_{args.name}.json", record)
    print(f"-> {RECORDS / f'view_{args.name}.json'}")


if __name__ == "__main__":
    main()
