"""Benchmark: one study shared by several worker processes on PostgreSQL, against one worker.

Starts a throwaway PostgreSQL server on this machine, runs ``--trials`` trials of a
``nerfzip search --from MODEL`` study with one worker, then the same number on a second study
with ``--workers`` processes at once (each with ``--threads`` threads), and checks that every
trial of the shared study was evaluated exactly once (one worker, one file) and that the
study's front is the front of what its trials recorded. Writes
``benchmarks/records/search_workers_<name>.json`` with both wall times.

    python benchmarks/search_workers.py --model benchmarks/out/train_lego_tensorf-vm_crop \\
        --name lego_vm --trials 16 --workers 2 --threads 1
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from common import RECORDS

from nerfzip.search.local_postgres import local_postgres
from nerfzip.search.storage import open_storage
from nerfzip.search.study import pareto_front
from nerfzip.utils.io import write_json
from nerfzip.utils.machine import machine_info

ROOT = Path(__file__).resolve().parents[1]


def run_workers(n: int, study: str, url: str, args: argparse.Namespace, out: Path) -> float:
    """Wall seconds for ``n`` workers to fill ``study`` with ``args.trials`` trials."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(ROOT)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]),
        **{v: str(args.threads) for v in ("OMP_NUM_THREADS", "MKL_NUM_THREADS",
                                          "NUMBA_NUM_THREADS")}}
    cmd = [sys.executable, "-m", "nerfzip.cli.main", "search", "--from", str(args.model),
           "--storage", url, "--study", study, "--resume", "--trials", str(args.trials),
           "--threads", str(args.threads), "--views", str(args.views), "--pruner", args.pruner,
           "--quiet", *(["--space", args.space] if args.space else [])]
    t0 = time.perf_counter()
    procs = [subprocess.Popen([*cmd, "-o", str(out / f"{study}-w{i}")], env=env, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE) for i in range(n)]
    for p in procs:
        _, err = p.communicate()
        if p.returncode != 0:
            raise SystemExit(f"a worker failed:\n{err}")
    return time.perf_counter() - t0


def check(url: str, study_name: str, n: int, out: Path) -> dict:
    import optuna

    study = optuna.load_study(study_name=study_name, storage=open_storage(url))
    trials = study.get_trials()
    files = {t.number: [i for i in range(n) if (out / f"{study_name}-w{i}" / "trials" /
                                                f"trial-{t.number:04d}.nrz").is_file()]
             for t in trials}
    recorded = sorted(t.number for t in pareto_front(trials, ["psnr", "bytes",
                                                              "frame_seconds"]))
    workers = Counter(str(t.user_attrs.get("worker")) for t in trials)
    return {"trials": len(trials), "evaluated_once": all(len(w) == 1 for w in files.values()),
            "per_worker": dict(workers),
            "front_equals_recorded": sorted(t.number for t in study.best_trials) == recorded}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True, type=Path, help="trained run or model file")
    ap.add_argument("--name", required=True)
    ap.add_argument("--trials", type=int, default=16)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1, help="threads of each worker")
    ap.add_argument("--views", type=int, default=4)
    ap.add_argument("--pruner", default="none")
    ap.add_argument("--space", default=None)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="nerfzip-workers-") as tmp, \
            local_postgres() as url:
        out = Path(tmp)
        one = run_workers(1, "one", url, args, out)
        many = run_workers(args.workers, "many", url, args, out)
        record = {"benchmark": "search_workers", "name": args.name, "model": str(args.model),
                  "command": " ".join(["python", "benchmarks/search_workers.py",
                                       *sys.argv[1:]]),
                  "trials": args.trials, "workers": args.workers,
                  "threads_per_worker": args.threads, "cpu_count": os.cpu_count(),
                  "wall_seconds_one_worker": one, "wall_seconds_workers": many,
                  "speed_up": one / many, "one": check(url, "one", 1, out),
                  "shared": check(url, "many", args.workers, out), "machine": machine_info()}
    write_json(RECORDS / f"search_workers_{args.name}.json", record)
    s = record["shared"]
    print(f"{args.trials} trials: 1 worker {one:.0f} s, {args.workers} workers {many:.0f} s "
          f"({record['speed_up']:.2f}x; {args.threads} thread(s) each, {os.cpu_count()} cores); "
          f"each trial once: {s['evaluated_once']}; front = recorded: "
          f"{s['front_equals_recorded']}; per worker: {sorted(s['per_worker'].values())}")


if __name__ == "__main__":
    main()
