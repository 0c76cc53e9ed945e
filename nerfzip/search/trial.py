"""One trial of a search: train (or take the given model), run the drawn pipeline pass by pass
reporting PSNR after each, write the .nrz file, decode it and measure what the objectives ask.

Every figure is measured on the decoded file, as ``nerfzip eval FILE`` would: bytes on disk,
PSNR / SSIM on the chosen test views, decode seconds and the median seconds per view (after a
warm-up render).
Intermediate PSNRs (training thirds, then after each pass) go to the pruner, which stops a
trial whose quality falls behind the others' at the same stage.
"""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from nerfzip.compression.compressed import Compressed
from nerfzip.compression.pipeline.text import Step, parse_pipeline
from nerfzip.data.scene import Scene
from nerfzip.evaluation.evaluate import evaluate
from nerfzip.rendering.model import RadianceModel
from nerfzip.search.space import TRAIN_REPORTS, Candidate, SearchSpace
from nerfzip.training.config import TrainConfig, defaults_for
from nerfzip.utils.schema import from_dict

OBJECTIVES = {"psnr": "maximize", "ssim": "maximize", "bytes": "minimize",
              "frame_seconds": "minimize", "decode_seconds": "minimize"}
"""What a search may optimise, and in which direction."""

Report = Callable[[float, int], None]
"""``report(psnr, stage)``: hands an intermediate PSNR to the pruner (raises to stop)."""


def worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def trial_file(out: Path, number: int) -> Path:
    return out / "trials" / f"trial-{number:04d}.nrz"


@dataclass
class Evaluator:
    """Scores models on a fixed set of test views (spread over the split)."""

    scene: Scene
    views: int

    def __call__(self, model: RadianceModel) -> dict[str, Any]:
        n = len(self.scene.split("test"))
        every = max(1, n // max(1, self.views))
        res = evaluate(model, self.scene, "test", every=every, limit=self.views, quiet=True)
        return {"psnr": res["mean"]["psnr"], "ssim": res["mean"]["ssim"],
                "frame_seconds": res["mean"]["seconds_per_view_median"],
                "views": res["views_evaluated"]}


def train_candidate(scene: Scene, cfg: TrainConfig, run: Path, score: Evaluator,
                    report: Report | None) -> RadianceModel:
    """Train ``cfg``, reporting PSNR at 1/3 and 2/3 of the steps (stages 1, 2)."""
    from nerfzip.training.trainer import train

    marks = {max(1, cfg.iters * (k + 1) // (TRAIN_REPORTS + 1)): k + 1
             for k in range(TRAIN_REPORTS)}

    def callback(trainer: Any, stats: dict[str, float]) -> None:
        if report is not None and trainer.step in marks:
            trainer.model.field.eval()
            report(score(trainer.model)["psnr"], marks[trainer.step])

    model = train(scene, cfg, run, callback=callback, quiet=True)
    (run / "checkpoint.safetensors").unlink(missing_ok=True)  # model.safetensors is enough
    return model


def run_candidate(model: RadianceModel, steps: list[Step], scene: Scene, score: Evaluator,
                  report: Report | None, first_stage: int,
                  slots: tuple[int, ...] = ()) -> Compressed:
    """Run the passes one by one, reporting PSNR after each: at stage ``first_stage`` + the
    step's position in the space (``slots``; default its position in ``steps``)."""
    from nerfzip.compression.pipeline.run import run_pipeline

    slots = slots or tuple(range(len(steps)))
    c = Compressed.of(model)
    for i, step in enumerate(steps):
        c = run_pipeline(c, [step], scene)
        if report is not None and i < len(steps) - 1:  # the last one is scored from the file
            report(score(c.model)["psnr"], first_stage + slots[i])
    return c


def measure(c: Compressed, path: Path, score: Evaluator) -> dict[str, Any]:
    """Write ``c`` to ``path``, decode it and score the decoded model."""
    from nerfzip.codec import nrz

    report = c.save(path)
    t0 = time.perf_counter()
    back = nrz.load(path)
    decode = time.perf_counter() - t0
    back.render_view(score.scene, "test", 0)  # warm-up (caches, compiled kernels) before timing
    return {"bytes": report.bytes, "decode_seconds": decode, **score(back)}


def run_trial(space: SearchSpace, candidate: Candidate, scene: Scene,
              model: RadianceModel | None, out: Path, number: int, score: Evaluator,
              report: Report | None) -> dict[str, Any]:
    """Train if the candidate says so, compress, write ``trials/trial-NNNN.nrz``, measure."""
    stage = 1
    if candidate.train is not None:
        model = train_candidate(scene, candidate.train, out / "trials" / f"trial-{number:04d}",
                                score, report)
        stage += TRAIN_REPORTS
    assert model is not None
    c = run_candidate(model, candidate.steps, scene, score, report, stage, candidate.slots)
    return measure(c, trial_file(out, number), score)


def candidate_attrs(candidate: Candidate) -> dict[str, Any]:
    """What a trial stores to be re-created anywhere: its pipeline text and training config."""
    attrs: dict[str, Any] = {"pipeline": candidate.pipeline_text()}
    if candidate.train is not None:
        attrs["train"] = json.dumps(asdict(candidate.train))
    return attrs


def stored_candidate(attrs: dict[str, Any]) -> Candidate:
    """The candidate a trial's stored attributes describe (checked like user input)."""
    cfg = None
    if "train" in attrs:
        cfg = from_dict(TrainConfig, json.loads(attrs["train"]), "stored trial: train",
                        strict=True)
    text = attrs.get("pipeline", "")
    return Candidate(cfg, parse_pipeline(text) if text.strip() else [])


def training_defaults(scene: Scene) -> Callable[[str], TrainConfig]:
    return lambda family: defaults_for(scene.format, family)
