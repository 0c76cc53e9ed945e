"""``nerfzip search``: open (or join) a study, run trials until it holds ``--trials``, then show
the Pareto front and export the chosen file. Everything the user gave is checked before the
study is opened, and nothing about an existing study is changed by a refused command."""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from nerfzip.errors import NerfzipError
from nerfzip.search.space import SearchSpace, load_space, parse_space
from nerfzip.search.study import (
    MB,
    PRUNERS,
    SAMPLERS,
    Objective,
    SearchConfig,
    best_trial,
    no_feasible_report,
    open_study,
    optimize,
    pareto_front,
    stored_settings,
)
from nerfzip.search.trial import OBJECTIVES, stored_candidate


@dataclass
class SearchArgs:
    """The command line of ``nerfzip search`` (None: the study's own, or the default)."""

    data: str | None = None
    from_run: str | None = None
    objectives: str | None = None
    budget_mb: float | None = None
    max_frame_seconds: float | None = None
    trials: int = 20
    resume: bool = False
    storage: str | None = None
    study: str = "nerfzip-search"
    space: str | None = None
    out: str = "runs/search"
    export_best: str | None = None
    sampler: str = "tpe"
    pruner: str = "halving"
    views: int | None = None
    seed: int | None = None
    threads: int = 1
    quiet: bool = False


def parse_objectives(text: str) -> tuple[str, ...]:
    names = tuple(x.strip() for x in text.split(",") if x.strip())
    bad = [x for x in names if x not in OBJECTIVES]
    if not names or bad:
        raise NerfzipError(f"--objectives {text}: expected a comma-separated list of "
                           f"{', '.join(OBJECTIVES)}" + (f" (unknown: {bad[0]})" if bad else ""))
    if len(set(names)) != len(names):
        raise NerfzipError(f"--objectives {text}: an objective is named twice")
    return names


def check_args(a: SearchArgs) -> None:
    if not a.data and not a.from_run and not a.resume:
        raise NerfzipError("search needs --data DIR (train and compress) or --from RUN "
                           "(compress a trained model)")
    if a.objectives is not None:
        parse_objectives(a.objectives)
    if a.trials < 1:
        raise NerfzipError(f"--trials {a.trials}: must be at least 1")
    if a.budget_mb is not None and not a.budget_mb > 0:
        raise NerfzipError(f"--budget-mb {a.budget_mb}: must be positive")
    if a.max_frame_seconds is not None and not a.max_frame_seconds > 0:
        raise NerfzipError(f"--max-frame-seconds {a.max_frame_seconds}: must be positive")
    if a.views is not None and a.views < 1:
        raise NerfzipError(f"--views {a.views}: must be at least 1")
    if a.sampler not in SAMPLERS:
        raise NerfzipError(f"--sampler {a.sampler}: expected {' or '.join(SAMPLERS)}")
    if a.pruner not in PRUNERS:
        raise NerfzipError(f"--pruner {a.pruner}: expected {', '.join(PRUNERS)}")
    if a.threads < 1:
        raise NerfzipError(f"--threads {a.threads}: must be at least 1")
    if a.export_best and Path(a.export_best).suffix != ".nrz":
        raise NerfzipError(f"--export-best {a.export_best}: expected a .nrz file to write")
    out = Path(a.out)
    if out.exists() and not out.is_dir():
        raise NerfzipError(f"--out {a.out}: is a file; search writes a folder")
    if a.from_run and not Path(a.from_run).exists():
        raise NerfzipError(f"--from {a.from_run}: no such run folder or model file")
    if a.space is not None:
        load_space(a.space)  # a bad space is refused before any study is opened


def set_threads(n: int) -> None:
    """This worker's thread counts (torch, and numba where the octree kernel runs)."""
    import torch

    torch.set_num_threads(n)
    try:
        import numba

        numba.set_num_threads(min(n, numba.config.NUMBA_NUM_THREADS))
    except (ImportError, ValueError):
        pass


def resolve_config(a: SearchArgs, stored: dict[str, Any]) -> tuple[SearchConfig, SearchSpace]:
    """The search's settings: as given, else the stored study's, else the defaults."""
    if a.space is not None:
        space = load_space(a.space)
    elif stored.get("space"):
        space = parse_space(stored["space"], f"study {a.study}: stored search space")
    else:
        space = load_space()
    objectives = (parse_objectives(a.objectives) if a.objectives else
                  tuple(stored.get("objectives") or SearchConfig.objectives))

    def pick(given: Any, key: str, default: Any) -> Any:
        return given if given is not None else stored.get(key, default)

    source = dict(stored.get("source") or {})
    if a.data or a.from_run or not source:
        source = {"data": a.data, "from": str(Path(a.from_run).resolve()) if a.from_run else None}
    cfg = SearchConfig(objectives=objectives, budget_mb=pick(a.budget_mb, "budget_mb", None),
                       max_frame_seconds=pick(a.max_frame_seconds, "max_frame_seconds", None),
                       trials=a.trials, sampler=a.sampler, pruner=a.pruner,
                       views=pick(a.views, "views", SearchConfig.views), seed=a.seed,
                       study=a.study, source=source)
    return cfg, space


def load_inputs(cfg: SearchConfig) -> tuple[Any, Any]:
    """The scene and, for --from, the trained model."""
    from nerfzip.data.load import load_scene
    from nerfzip.training.checkpoint import load_model

    model = None
    data = cfg.source.get("data")
    downscale = None
    if cfg.source.get("from"):
        model = load_model(cfg.source["from"])
        downscale = model.space.downscale
        data = data or model.space.source or model.space.format
        if not data:
            raise NerfzipError(f"{cfg.source['from']}: the model does not say which scene it "
                               "shows; pass --data")
    if not data:
        raise NerfzipError("search needs --data DIR or --from RUN")
    return load_scene(data, downscale=downscale), model


def search(a: SearchArgs) -> int:
    """Run the command; returns the exit status (2: no trial met the budget)."""
    from nerfzip.search.storage import default_url, open_storage

    check_args(a)
    set_threads(a.threads)
    out = Path(a.out)
    url = a.storage
    if url is None:
        out.mkdir(parents=True, exist_ok=True)
        url = default_url(out)
    storage = open_storage(url)
    stored = stored_settings(storage, a.study)
    if stored and not a.resume:
        where = out if a.storage is None else "the storage"
        raise NerfzipError(f"study {a.study!r} already exists in {where}: pass --resume to "
                           "continue it (or --study NAME)")
    cfg, space = resolve_config(a, stored)
    scene, model = load_inputs(cfg)
    if model is None and not space.families:
        raise NerfzipError(f"{space.source}: names no field family to train (add 'families:', "
                           "or search a trained model with --from RUN)")
    study = open_study(storage, cfg, space, a.resume)
    out.mkdir(parents=True, exist_ok=True)
    objective = Objective(study, cfg, space, scene, model, out)
    t0 = time.perf_counter()
    ran = optimize(study, objective, cfg.trials,
                   None if a.quiet else (lambda line: print(line, file=sys.stderr)))
    wall = time.perf_counter() - t0
    settings = {"study": cfg.study, "storage": url if a.storage is None else "external",
                "budget_mb": cfg.budget_mb, "max_frame_seconds": cfg.max_frame_seconds,
                "objectives": list(cfg.objectives), "views": cfg.views,
                "source": cfg.source, "wall_seconds_this_worker": wall,
                "trials_this_worker": ran, "threads": a.threads}
    trials = study.get_trials()
    front = show_results(trials, cfg, out, settings)
    if not front:
        return 2
    if a.export_best:
        export_best(front, cfg, scene, model, out, Path(a.export_best))
    return 0


def show_results(trials: list[Any], cfg: SearchConfig, out: Path,
                 settings: dict[str, Any]) -> list[Any]:
    """Write front.json / front.png, print the study's counts and the front (or why there is
    none, as an error line); returns the front."""
    from nerfzip.search.report import front_table, write_front

    front = pareto_front(trials, list(cfg.objectives))
    write_front(out, trials, front, list(cfg.objectives), settings)
    states: dict[str, int] = {}
    for t in trials:
        states[t.state.name.lower()] = states.get(t.state.name.lower(), 0) + 1
    summary = ", ".join(f"{v} {k}" for k, v in sorted(states.items()))
    print(f"study {cfg.study}: {len(trials)} trials ({summary}); this worker ran "
          f"{settings['trials_this_worker']} in {settings['wall_seconds_this_worker']:.0f} s "
          f"with {settings['threads']} thread(s)")
    if not front:
        print(f"nerfzip: error: {no_feasible_report(trials, cfg)}", file=sys.stderr)
        return front
    print(f"Pareto front ({', '.join(cfg.objectives)}"
          + (f"; budget {cfg.budget_mb} MB" if cfg.budget_mb is not None else "")
          + (f"; at most {cfg.max_frame_seconds} s per view" if cfg.max_frame_seconds else "")
          + "):")
    print(front_table(front, list(cfg.objectives)))
    print(f"-> {out / 'front.png'}, {out / 'front.json'}")
    return front


def export_best(front: list[Any], cfg: SearchConfig, scene: Any, model: Any, out: Path,
                dest: Path) -> None:
    """Write the front's pick (``best_trial``) to ``dest``."""
    from nerfzip.search.report import export_trial

    best = best_trial(front, list(cfg.objectives))

    def remake(trial: Any, path: Path) -> None:
        from nerfzip.compression.pipeline.run import run_pipeline
        from nerfzip.training.trainer import train

        cand = stored_candidate(trial.user_attrs)
        base = model
        if cand.train is not None:
            base = train(scene, cand.train, out / "trials" / f"trial-{trial.number:04d}",
                         quiet=True)
        run_pipeline(base, cand.steps, scene).save(path)

    how = export_trial(best, out, dest, remake)
    m = best.user_attrs["metrics"]
    print(f"wrote {dest}: trial {best.number}, {m['bytes'] / MB:.4f} MB, PSNR {m['psnr']:.2f} "
          f"dB ({how})")


def args_from_namespace(ns: Any) -> SearchArgs:
    return replace(SearchArgs(), **{k: getattr(ns, k) for k in SearchArgs.__dataclass_fields__
                                    if hasattr(ns, k)})

