"""A search: an Optuna study of trials (``trial``) over a space (``space``) in a storage
(``storage``), its budgets as constraints, its pruner, and the Pareto front of what it found.

Optuna's samplers handle several objectives (TPE and NSGA-II, each with the budgets as
constraints: a trial over a budget is infeasible, never on the front). Its pruners
(successive halving, Hyperband) judge one value; ``Trial.report`` refuses multi-objective
studies, so intermediate PSNRs are written to the storage directly and the pruner is shown the
study as one maximised quantity, PSNR (``QualityView``). Pruning thus judges quality alone:
a trial is stopped when its PSNR at a stage trails the others' at that stage.

Several processes, on one machine or many, may run the same study: each asks the storage for
the next trial (so no trial is given twice), and stops when the study holds ``trials`` trials.
"""

from __future__ import annotations

import signal
import threading
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nerfzip.data.scene import Scene
from nerfzip.errors import NerfzipError
from nerfzip.rendering.model import RadianceModel
from nerfzip.search.space import SearchSpace
from nerfzip.search.trial import (
    OBJECTIVES,
    Evaluator,
    candidate_attrs,
    run_trial,
    training_defaults,
    worker_id,
)

SAMPLERS = ("tpe", "nsga2")
PRUNERS = ("halving", "hyperband", "none")
MB = 2**20


@dataclass
class SearchConfig:
    """How a search runs."""

    objectives: tuple[str, ...] = ("psnr", "bytes", "frame_seconds")
    """Figures to optimise: psnr, ssim (maximised), bytes, frame_seconds, decode_seconds
    (minimised)."""
    budget_mb: float | None = None
    """Largest file a trial may write, in MB (2^20 bytes); larger ones are infeasible."""
    max_frame_seconds: float | None = None
    """Slowest median seconds per test view a trial may take."""
    trials: int = 20
    """Trials the study holds when the search stops (shared by all its workers)."""
    sampler: str = "tpe"
    """tpe (multi-objective TPE) or nsga2 (NSGA-II), both with the budgets as constraints."""
    pruner: str = "halving"
    """halving (successive halving), hyperband or none, on intermediate PSNR."""
    views: int = 4
    """Test views each trial is scored on (spread over the test split)."""
    seed: int | None = None
    """Sampler seed (None: each worker its own)."""
    study: str = "nerfzip-search"
    """Study name in the storage."""
    source: dict[str, Any] = field(default_factory=dict)
    """What is searched over: the scene, and the trained run for --from (kept with the study)."""


# --- the pruner's view ----------------------------------------------------------------------
class QualityStorage:
    """The storage as seen by a single-objective pruner: one maximised value."""

    def __init__(self, storage: Any):
        self._storage = storage

    def get_study_directions(self, study_id: int) -> list[Any]:
        from optuna.study import StudyDirection

        return [StudyDirection.MAXIMIZE]

    def __getattr__(self, name: str) -> Any:
        return getattr(self._storage, name)


class QualityView:
    """A study as its pruner needs to see it: intermediate values are PSNRs, maximised."""

    def __init__(self, study: Any):
        from optuna.study import StudyDirection

        self._study = study
        self._storage = QualityStorage(study._storage)
        self._study_id = study._study_id
        self.study_name = study.study_name
        self.sampler = study.sampler
        self.direction = StudyDirection.MAXIMIZE
        self.directions = [StudyDirection.MAXIMIZE]

    def get_trials(self, deepcopy: bool = True, states: Any = None) -> list[Any]:
        return self._study.get_trials(deepcopy=deepcopy, states=states)

    _get_trials = get_trials

    def stop(self) -> None:
        self._study.stop()


def make_pruner(name: str, stages: int) -> Any:
    import optuna

    if name == "halving":
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=1, reduction_factor=3)
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=max(1, stages),
                                              reduction_factor=3)
    return None


def make_sampler(cfg: SearchConfig) -> Any:
    import optuna

    if cfg.sampler == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=cfg.seed, constraints_func=constraints,
                                             population_size=max(4, min(50, cfg.trials // 2)))
    return optuna.samplers.TPESampler(seed=cfg.seed, constraints_func=constraints,
                                      n_startup_trials=max(2, min(10, cfg.trials // 3)),
                                      multivariate=True, group=True)


def constraints(trial: Any) -> list[float]:
    """Optuna's constraint values (<= 0: met): bytes over budget, seconds over the limit."""
    return list(trial.user_attrs.get("constraints", [1.0]))


def constraint_values(metrics: dict[str, Any], cfg: SearchConfig) -> list[float]:
    out = [0.0]
    if cfg.budget_mb is not None:
        out.append(metrics["bytes"] / MB - cfg.budget_mb)
    if cfg.max_frame_seconds is not None:
        out.append(metrics["frame_seconds"] - cfg.max_frame_seconds)
    return out


# --- the study ------------------------------------------------------------------------------
def study_attrs(cfg: SearchConfig, space: SearchSpace) -> dict[str, Any]:
    return {"objectives": list(cfg.objectives), "budget_mb": cfg.budget_mb,
            "max_frame_seconds": cfg.max_frame_seconds, "views": cfg.views,
            "source": cfg.source, "space": space.text}


def open_study(storage: Any, cfg: SearchConfig, space: SearchSpace, resume: bool) -> Any:
    """Create the study, or (``resume``) continue / join it; what a joined study was started
    with (objectives, budgets, views, source, space) must match what is asked now."""
    import optuna

    names = {s.study_name for s in storage.get_all_studies()}
    if cfg.study in names and not resume:
        raise NerfzipError(f"study {cfg.study!r} already exists: pass --resume to continue it "
                           "(or --study NAME to start another)")
    directions = [OBJECTIVES[o] for o in cfg.objectives]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        study = optuna.create_study(storage=storage, study_name=cfg.study,
                                    directions=directions, sampler=make_sampler(cfg),
                                    load_if_exists=resume)
    want = study_attrs(cfg, space)
    have = study.user_attrs
    for key in want:
        if key not in have:  # a new study (or one another worker is creating right now)
            study.set_user_attr(key, want[key])
        elif have[key] != want[key]:
            was = "another search space" if key == "space" else f"{key} {have.get(key)!r}"
            raise NerfzipError(f"study {cfg.study!r} was started with {was}; this command asks "
                               f"for {'a different one' if key == 'space' else repr(want[key])}"
                               " (drop the option to use the study's, or --study NAME)")
    return study


def stored_settings(storage: Any, name: str) -> dict[str, Any]:
    """The settings a stored study was started with ({} if there is none)."""
    for s in storage.get_all_studies():
        if s.study_name == name:
            return dict(s.user_attrs)
    return {}


def counted(study: Any) -> int:
    """Trials that count towards ``--trials``: run, pruned, failed by an error, or running
    (a trial interrupted by Ctrl-C does not: it is run again on resume)."""
    from optuna.trial import TrialState

    return sum(1 for t in study.get_trials(deepcopy=False)
               if t.state != TrialState.WAITING and not t.user_attrs.get("interrupted")
               and not t.system_attrs.get("failed_trial"))


def requeue_interrupted(study: Any) -> int:
    """Enqueue again the trials a Ctrl-C cut short (each once)."""
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False)
    retried = {t.user_attrs.get("retry_of") for t in trials}
    n = 0
    for t in trials:
        if t.state == TrialState.FAIL and t.user_attrs.get("interrupted") \
                and t.number not in retried:
            study.enqueue_trial(t.params, user_attrs={"retry_of": t.number},
                                skip_if_exists=False)
            n += 1
    return n


class Objective:
    """The function Optuna calls for each trial."""

    def __init__(self, study: Any, cfg: SearchConfig, space: SearchSpace, scene: Scene,
                 model: RadianceModel | None, out: Path):
        self.study, self.cfg, self.space, self.scene = study, cfg, space, scene
        self.model, self.out = model, out
        self.score = Evaluator(scene, cfg.views)
        self.pruner = make_pruner(cfg.pruner, space.stages(model is None))
        self.log: list[str] = []

    def __call__(self, trial: Any) -> list[float]:
        with GATE.open(trial):
            return self.run(trial)

    def run(self, trial: Any) -> list[float]:
        """One trial: build its candidate, train / compress / score it, return its objectives."""
        import optuna

        trial.set_user_attr("worker", worker_id())
        base = training_defaults(self.scene) if self.model is None else None
        candidate = self.space.candidate(trial, base)
        for k, v in candidate_attrs(candidate).items():
            trial.set_user_attr(k, v)

        def report(psnr: float, stage: int) -> None:
            storage = self.study._storage
            storage.set_trial_intermediate_value(trial._trial_id, stage, float(psnr))
            if self.pruner is not None and self.pruner.prune(
                    QualityView(self.study), storage.get_trial(trial._trial_id)):
                raise optuna.TrialPruned(f"PSNR {psnr:.2f} dB at stage {stage}")

        try:
            metrics = run_trial(self.space, candidate, self.scene, self.model, self.out,
                                trial.number, self.score, report)
        except (KeyboardInterrupt, optuna.TrialPruned):
            raise
        except NerfzipError as e:
            trial.set_user_attr("error", str(e))
            raise
        except Exception as e:  # a failed trial must not end a search of hours: kept, logged
            first = str(e).strip().splitlines()[0] if str(e).strip() else ""
            trial.set_user_attr("error", f"{type(e).__name__}: {first}")
            raise
        trial.set_user_attr("metrics", metrics)
        trial.set_user_attr("constraints", constraint_values(metrics, self.cfg))
        return [float(metrics[o]) for o in self.cfg.objectives]


class InterruptGate:
    """Lets Ctrl-C cut a search only inside a trial's own code, where the trial it cuts is
    marked ``interrupted`` and so run again on resume. A Ctrl-C that lands in Optuna's
    bookkeeping between trials (creating a trial, sampling, recording a result) would leave
    a failed trial with no mark; it is held instead, and raised as the next trial starts or
    as soon as ``study.optimize`` returns."""

    def __init__(self) -> None:
        self.armed = False
        self.pending = False

    def handle(self, signum: int, frame: Any) -> None:
        if self.armed:
            raise KeyboardInterrupt
        self.pending = True

    @contextmanager
    def open(self, trial: Any) -> Iterator[None]:
        """The span of a trial's own code: Ctrl-C is raised at once and marks the trial."""
        self.armed = True
        try:
            if self.pending:
                self.pending = False
                raise KeyboardInterrupt
            yield
        except KeyboardInterrupt:
            self.armed = False  # a second Ctrl-C must not cut the mark's own write
            trial.set_user_attr("interrupted", True)
            raise
        finally:
            self.armed = False

    @contextmanager
    def installed(self) -> Iterator[None]:
        """Route SIGINT through the gate (only the main thread can own signal handlers; in
        any other thread Ctrl-C is left as it is)."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        self.pending = False
        previous = signal.signal(signal.SIGINT, self.handle)
        try:
            yield
        finally:
            signal.signal(signal.SIGINT, previous)

    def check(self) -> None:
        """Raise a Ctrl-C that was held while no trial ran."""
        if self.pending:
            self.pending = False
            raise KeyboardInterrupt


GATE = InterruptGate()


def optimize(study: Any, objective: Objective, trials: int,
             log: Callable[[str], None] | None = None) -> int:
    """Run trials until the study holds ``trials`` of them; returns how many this process ran.
    Interrupted trials of an earlier run are run again first. ``log`` gets one line per trial
    (Optuna's own log, which prints tracebacks of failed trials, is kept to errors)."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    requeue_interrupted(study)
    ran = 0
    with GATE.installed():
        while counted(study) < trials:
            GATE.check()
            seen = {t.number for t in study.get_trials(deepcopy=False)}
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                study.optimize(objective, n_trials=1, catch=(Exception,))
            ran += 1
            if log is not None:
                worker = worker_id()
                for t in study.get_trials(deepcopy=False):
                    if t.number not in seen and t.user_attrs.get("worker") == worker:
                        log(trial_line(t))
            GATE.check()
    return ran


def trial_line(t: Any) -> str:
    """One line about a finished trial."""
    m = t.user_attrs.get("metrics")
    if t.state.name == "COMPLETE" and m:
        over = "" if feasible(t) else " (over budget)"
        return (f"trial {t.number}: {m['bytes'] / MB:.4f} MB, PSNR {m['psnr']:.2f} dB, "
                f"{m['frame_seconds']:.3f} s per view{over}")
    if t.state.name == "PRUNED":
        last = max(t.intermediate_values) if t.intermediate_values else None
        psnr = f" (PSNR {t.intermediate_values[last]:.2f} dB at stage {last})" if last else ""
        return f"trial {t.number}: pruned{psnr}"
    return f"trial {t.number}: failed: {t.user_attrs.get('error', t.state.name.lower())}"


# --- the front ------------------------------------------------------------------------------
def feasible(trial: Any) -> bool:
    return all(c <= 0 for c in trial.user_attrs.get("constraints", [1.0]))


def dominates(a: list[float], b: list[float], signs: list[float]) -> bool:
    """``a`` at least as good as ``b`` everywhere and better somewhere (signs: +1 maximise)."""
    better = False
    for x, y, s in zip(a, b, signs):
        if s * x < s * y:
            return False
        better |= s * x > s * y
    return better


def pareto_front(trials: list[Any], objectives: list[str]) -> list[Any]:
    """The complete, feasible trials that no other such trial dominates, computed from the
    figures each trial recorded (``metrics``)."""
    signs = [1.0 if OBJECTIVES[o] == "maximize" else -1.0 for o in objectives]
    ok = [t for t in trials if "metrics" in t.user_attrs and feasible(t)
          and t.state.name == "COMPLETE"]
    values = {t.number: [float(t.user_attrs["metrics"][o]) for o in objectives] for t in ok}
    return sorted((t for t in ok if not any(dominates(values[u.number], values[t.number], signs)
                                            for u in ok if u is not t)),
                  key=lambda t: t.user_attrs["metrics"]["bytes"])


def best_trial(front: list[Any], objectives: list[str]) -> Any:
    """The front's pick for ``--export-best``: the highest PSNR (the first objective's best
    when PSNR is not one)."""
    key = "psnr" if "psnr" in objectives else objectives[0]
    sign = 1.0 if OBJECTIVES[key] == "maximize" else -1.0
    return max(front, key=lambda t: sign * t.user_attrs["metrics"][key])


def no_feasible_report(trials: list[Any], cfg: SearchConfig) -> str:
    done = [t for t in trials if "metrics" in t.user_attrs]
    if not done:
        failed = sum(t.state.name == "FAIL" for t in trials)
        pruned = sum(t.state.name == "PRUNED" for t in trials)
        return (f"no trial finished ({failed} failed, {pruned} pruned; the reasons are in the "
                "lines above and in front.json)")
    parts = [f"no trial met the budget ({len(done)} trials measured"]
    if cfg.budget_mb is not None and done:
        small = min(t.user_attrs["metrics"]["bytes"] for t in done) / MB
        parts.append(f"smallest file {small:.3f} MB > --budget-mb {cfg.budget_mb}")
    if cfg.max_frame_seconds is not None and done:
        fast = min(t.user_attrs["metrics"]["frame_seconds"] for t in done)
        parts.append(f"fastest frame {fast:.3f} s vs --max-frame-seconds "
                     f"{cfg.max_frame_seconds}")
    return "; ".join(parts) + "); widen the budget or the search space"

