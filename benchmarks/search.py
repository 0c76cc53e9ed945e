"""Benchmark: the search's Pareto front against the hand-made presets, on one trained model.

Runs ``nerfzip search``'s study (compression settings of a trained model, the default search
space unless ``--space``) for ``--hours`` or ``--trials``, then measures the presets (``tiny``,
``balanced``, ``high`` by default) and the front's files the same way, on the same views: .nrz
bytes, test PSNR / SSIM on every ``--every``-th test view, decode time and the median frame
time over 5 views after a warm-up. Reports which presets the front dominates or matches on
bytes x PSNR, the wall time, and trials per hour with the threads used. Writes
``benchmarks/records/search_<name>.json`` and ``benchmarks/search_<name>.png``.

    python benchmarks/search.py --model benchmarks/out/train_lego_tensorf-vm_crop --name lego_vm \\
        --hours 4 --budget-mb 0.5
    python benchmarks/search.py --model benchmarks/out/train_fern_tensorf-vm --name fern_vm \\
        --hours 4 --budget-mb 1

Trials are scored during the search on ``--views`` test views (default 8, spread over the
split); the figures in the record are measured again on the quick subset (``--every 8``).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
from common import RECORDS, render_seconds

from nerfzip.codec import nrz
from nerfzip.compression.pipeline import PRESETS, parse_pipeline, run_pipeline
from nerfzip.data.load import load_scene
from nerfzip.evaluation.evaluate import evaluate
from nerfzip.search.report import plot_front, trial_row
from nerfzip.search.space import load_space
from nerfzip.search.storage import default_url, open_storage
from nerfzip.search.study import MB, Objective, SearchConfig, open_study, optimize, pareto_front
from nerfzip.search.trial import trial_file
from nerfzip.training.checkpoint import load_model
from nerfzip.utils.io import write_json
from nerfzip.utils.machine import machine_info

ROOT = Path(__file__).resolve().parents[1]


def measure_file(path: Path, scene, every: int) -> dict:  # noqa: ANN001
    """Bytes, decode seconds, PSNR / SSIM on every ``every``-th test view, frame seconds."""
    t0 = time.perf_counter()
    model = nrz.load(path)
    decode = time.perf_counter() - t0
    res = evaluate(model, scene, "test", every=every, quiet=True)
    views = list(range(0, len(scene.split("test")), max(1, len(scene.split("test")) // 5)))[:5]
    return {"bytes": path.stat().st_size, "decode_seconds": decode,
            "psnr": res["mean"]["psnr"], "ssim": res["mean"]["ssim"],
            "frame_seconds": render_seconds(model, scene, views),
            "views_evaluated": res["views_evaluated"]}


def covered(ref: dict, front: list[dict]) -> int | None:
    """A front trial at most as large and at least as good as ``ref`` (bytes x PSNR), if any."""
    for row in front:
        if row["bytes"] <= ref["bytes"] and row["psnr"] >= ref["psnr"]:
            return row["trial"]
    return None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True, help="trained run folder or model file")
    ap.add_argument("--name", required=True, help="record name (search_<name>.json)")
    ap.add_argument("--hours", type=float, default=4.0, help="stop starting trials after this")
    ap.add_argument("--trials", type=int, default=10_000, help="stop after this many trials")
    ap.add_argument("--budget-mb", type=float, default=None)
    ap.add_argument("--max-frame-seconds", type=float, default=None)
    ap.add_argument("--space", default=None, help="search space YAML (default: the packaged)")
    ap.add_argument("--storage", default=None, help="study URL (default: OUT/study.db)")
    ap.add_argument("--views", type=int, default=8, help="test views per trial in the search")
    ap.add_argument("--every", type=int, default=8, help="final figures: every N-th test view")
    ap.add_argument("--presets", nargs="*", default=["tiny", "balanced", "high"])
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--out", type=Path, default=None,
                    help="study and trial files (default benchmarks/out/search_<name>)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    out = args.out or ROOT / "benchmarks" / "out" / f"search_{args.name}"
    out.mkdir(parents=True, exist_ok=True)
    model = load_model(args.model)
    scene = load_scene(model.space.source or model.space.format,
                       downscale=model.space.downscale)

    # the hand-made presets, measured like every trial
    refs = []
    for name in args.presets:
        path = out / f"preset_{name}.nrz"
        t0 = time.perf_counter()
        run_pipeline(model, parse_pipeline(PRESETS[name]), scene).save(path)
        refs.append({"name": name, "pipeline": PRESETS[name],
                     "compress_seconds": time.perf_counter() - t0,
                     **measure_file(path, scene, args.every)})
        print(f"preset {name}: {refs[-1]['bytes'] / MB:.3f} MB, {refs[-1]['psnr']:.2f} dB",
              file=sys.stderr)

    # the search
    space = load_space(args.space)
    cfg = SearchConfig(budget_mb=args.budget_mb, max_frame_seconds=args.max_frame_seconds,
                       trials=args.trials, views=args.views, study=f"bench-{args.name}",
                       source={"data": None, "from": str(Path(args.model).resolve())})
    study = open_study(open_storage(args.storage or default_url(out)), cfg, space, resume=True)
    objective = Objective(study, cfg, space, scene, model, out)
    t0 = time.perf_counter()
    ran = 0
    while time.perf_counter() - t0 < args.hours * 3600 and len(study.trials) < args.trials:
        ran += optimize(study, objective, len(study.trials) + 1,
                        lambda line: print(line, file=sys.stderr))
    wall = time.perf_counter() - t0
    trials = study.get_trials()
    front = pareto_front(trials, list(cfg.objectives))

    # the front measured again on the record's views
    rows = []
    for t in front:
        path = trial_file(out, t.number)
        if path.is_file():
            rows.append({**trial_row(t), **measure_file(path, scene, args.every)})
    for r in refs:
        r["covered_by_trial"] = covered(r, rows)
    record = {
        "benchmark": "search", "name": args.name, "model": str(args.model),
        "command": " ".join(["python", "benchmarks/search.py", *sys.argv[1:]]),
        "settings": {"budget_mb": args.budget_mb, "max_frame_seconds": args.max_frame_seconds,
                     "search_views": args.views, "every": args.every, "threads": args.threads,
                     "objectives": list(cfg.objectives), "space": space.text},
        "wall_seconds": wall, "trials_run": ran, "trials_in_study": len(trials),
        "trials_per_hour": ran / max(wall / 3600, 1e-9),
        "states": {s: sum(t.state.name == s for t in trials)
                   for s in ("COMPLETE", "PRUNED", "FAIL")},
        "presets": refs, "front": rows, "machine": machine_info()}
    write_json(RECORDS / f"search_{args.name}.json", record)
    plot_front(ROOT / "benchmarks" / f"search_{args.name}.png", trials, front,
               {"study": args.name, "budget_mb": args.budget_mb}, refs)
    print(f"{ran} trials in {wall / 3600:.2f} h ({record['trials_per_hour']:.1f} per hour, "
          f"{args.threads} threads); front of {len(rows)}")
    for r in refs:
        by = r["covered_by_trial"]
        print(f"  preset {r['name']:<9} {r['bytes'] / MB:.3f} MB {r['psnr']:.2f} dB: "
              + (f"matched or dominated by trial {by}" if by is not None else "not covered"))


if __name__ == "__main__":
    main()
