"""The ``distill`` pass: a new field of any family and size (the student) trained to render like
the model (the teacher); the training loop and its losses are ``fit/student.py``."""

from __future__ import annotations

import time
from dataclasses import asdict
from typing import Any

from nerfzip.compression.compressed import Compressed
from nerfzip.compression.fit.student import (
    HELDOUT_RAYS,
    REPORT_NAMES,
    DistillConfig,
    build_student,
    heldout_psnr,
    tail_mean,
    train_student,
    trainable_parameters,
)
from nerfzip.compression.registry import PassContext, register_pass
from nerfzip.errors import NerfzipError
from nerfzip.rendering.model import RadianceModel

Config = DistillConfig


@register_pass("distill", Config, renames={"step_ratio": "step_scale"}, needs_scene=True)
def distill(model: RadianceModel | Compressed, cfg: DistillConfig, ctx: PassContext
            ) -> tuple[Compressed, dict[str, Any]]:
    """A student of another family / size trained to render like the model.

    Returns the student (no constraints: its tensors are new; the teacher's pipeline history
    plus this step) and a report."""
    cfg.check()
    scene = ctx.scene
    if scene is None:
        raise NerfzipError("distill needs the scene's cameras and views (pass --data)")
    teacher = model.model if isinstance(model, Compressed) else model
    history = list(model.history if isinstance(model, Compressed)
                   else teacher.meta.get("pipeline", []))
    student, built = build_student(teacher, cfg)
    t0 = time.perf_counter()
    log = train_student(student, teacher, scene, cfg, ctx.quiet)
    seconds = time.perf_counter() - t0
    n = trainable_parameters(student.field)
    report: dict[str, Any] = {
        "family": cfg.family, "parameters": n, "float32_bytes": 4 * n,
        "teacher_family": teacher.field.family,
        "teacher_parameters": trainable_parameters(teacher.field),
        "occupancy": "built from the teacher's density" if built else "the teacher's",
        "step_size": student.render.step_size, "seconds": seconds,
        "steps_per_second": cfg.steps / seconds,
        **{f"{REPORT_NAMES[k]}_last": tail_mean(v) for k, v in log.items()},
        "heldout_psnr": heldout_psnr(student, teacher, scene, seed=cfg.seed,
                                     n=min(max(8 * cfg.batch_size, HELDOUT_RAYS[0]),
                                           HELDOUT_RAYS[1])),
    }
    c = Compressed(student, {}, history)
    c.record("distill", asdict(cfg), report)
    return c, report
