"""Benchmark: a progressive .nrz file, layer by layer: bytes received against quality.

Runs a pipeline containing ``progressive`` on a trained model, writes the file, then feeds it
to a ``ProgressiveReader`` one layer at a time, as a stream would deliver it: per layer the
cumulative bytes, their share of the file, the decode time of that layer alone (its sections
plus the in-place update of the model) and test PSNR / SSIM of the model so far (the quick
subset, every 8th view, unless --every says otherwise). Also the model of the first 10 % of
the bytes, and the single-rate file of the same pipeline without ``progressive`` (its size and
quality: the progressive file's overhead). Writes
``benchmarks/records/progressive_<name>.json`` (``report.py`` renders its table).

    python benchmarks/progressive.py --model benchmarks/out/train_lego_tensorf-vm_crop \\
        --pipeline "progressive(layers=4) quant(8)" --name lego_vm
    python benchmarks/progressive.py --data procedural --iters 200 --name procedural_vm
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from common import RECORDS

from nerfzip.codec import nrz
from nerfzip.codec.progressive import ProgressiveReader, load_prefix
from nerfzip.compression.pipeline import parse_pipeline, run_pipeline
from nerfzip.data.load import load_scene
from nerfzip.evaluation.evaluate import evaluate
from nerfzip.training.checkpoint import load_model
from nerfzip.training.config import defaults_for
from nerfzip.training.trainer import train
from nerfzip.utils.io import write_json
from nerfzip.utils.machine import machine_info

DEFAULT = "progressive(layers=4) quant(8)"


def scores(model, scene, every: int) -> dict[str, float]:
    m = evaluate(model, scene, "test", every=every, quiet=True)["mean"]
    return {"psnr": m["psnr"], "ssim": m["ssim"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=None, help="run folder or model file")
    ap.add_argument("--data", default=None,
                    help="instead of --model: train a tensorf-vm on this scene first "
                         "('procedural': the built-in scene, for a quick check)")
    ap.add_argument("--iters", type=int, default=300, help="training steps with --data")
    ap.add_argument("--pipeline", default=DEFAULT, help="a pipeline with a progressive step")
    ap.add_argument("--name", default=None)
    ap.add_argument("--every", type=int, default=8, help="evaluate every N-th test view")
    args = ap.parse_args()

    steps = parse_pipeline(args.pipeline)
    if not any(s.name == "progressive" for s in steps):
        raise SystemExit(f"--pipeline {args.pipeline!r} has no progressive step")
    single_steps = [s for s in steps if s.name != "progressive"]
    work = Path(tempfile.mkdtemp())
    if args.model:
        model = load_model(args.model)
        scene = load_scene(model.space.source, downscale=model.space.downscale)
    elif args.data:
        scene = load_scene(args.data)
        cfg = replace(defaults_for(scene.format, "tensorf-vm"), iters=args.iters)
        model = train(scene, cfg, work / "run", quiet=True)
    else:
        raise SystemExit("give --model RUN or --data SCENE")
    name = args.name or f"{scene.name}_{model.field.family}"

    t0 = time.perf_counter()
    c = run_pipeline(model, steps, scene)
    compress_s = time.perf_counter() - t0
    path = work / "progressive.nrz"
    size = c.save(path).bytes
    single = run_pipeline(model, single_steps, scene)
    single_bytes = single.save(work / "single.nrz").bytes
    single_scores = scores(nrz.load(work / "single.nrz"), scene, args.every)
    print(f"{name}: progressive {size:,} bytes, single-rate {single_bytes:,} bytes "
          f"({size / single_bytes:.3f}x), single-rate PSNR {single_scores['psnr']:.2f}",
          file=sys.stderr)

    data = path.read_bytes()
    ends = [r["bytes"] for r in nrz.info(path)["layers"]]
    reader = ProgressiveReader(path)
    layers, pos = [], 0
    for k, end in enumerate(ends):
        done = reader.feed(data[pos:end])
        pos = end
        assert [d.layer for d in done] == [k], done
        s = scores(reader.model, scene, args.every)
        layers.append({"layer": k, "bytes": end, "share": end / size,
                       "decode_seconds": done[0].seconds, **s})
        print(f"  layer {k}: {end:>12,} bytes ({100 * end / size:5.1f} %)  PSNR "
              f"{s['psnr']:.2f}  SSIM {s['ssim']:.4f}  decoded in {done[0].seconds:.3f} s",
              file=sys.stderr)
    reader.feed(data[pos:])
    reader.close()
    tenth = int(0.1 * size)
    at_tenth = None
    if ends[0] <= tenth:
        prefix, used = load_prefix(path, nbytes=tenth)
        at_tenth = {"bytes": tenth, "layers": len(used), **scores(prefix, scene, args.every)}
    record = {"benchmark": "progressive", "name": name, "scene": scene.name,
              "family": model.field.family, "pipeline": args.pipeline, "every": args.every,
              "bytes": size, "compress_seconds": compress_s,
              "report": next(h["report"] for h in c.history if h["step"] == "progressive"),
              "single_rate": {"pipeline": " ".join(map(str, single_steps)) or "(none)",
                              "bytes": single_bytes, **single_scores},
              "size_vs_single_rate": size / single_bytes, "layers": layers,
              "first_tenth": at_tenth, "command": "python " + " ".join(sys.argv),
              "machine": machine_info()}
    out = RECORDS / f"progressive_{name}.json"
    write_json(out, record)
    print(f"wrote {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
