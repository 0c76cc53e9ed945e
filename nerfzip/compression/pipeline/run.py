"""Running a pipeline: its passes in order, each from the registry, on a copy of the model."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from nerfzip.compression.compressed import Compressed
from nerfzip.compression.pipeline.text import Step
from nerfzip.compression.registry import PassContext, get_pass
from nerfzip.data.scene import Scene
from nerfzip.errors import NerfzipError
from nerfzip.rendering.model import RadianceModel


def run_pipeline(model: RadianceModel | Compressed, steps: list[Step], scene: Scene | None,
                 quiet: bool = True,
                 on_step: Callable[[Step, dict[str, Any]], None] | None = None) -> Compressed:
    """Run the passes in order on a copy of ``model``; errors name the step."""
    c = Compressed.of(model)
    context = PassContext(scene, quiet)
    for i, step in enumerate(steps):
        where = f"pipeline step {i + 1} ({step})"
        info = get_pass(step.name, where)
        if info.needs_scene and scene is None:
            raise NerfzipError(f"{where} needs the scene: pass --data")
        cfg = info.make_config(step.args, step.kwargs, where)
        try:
            c, report = info.run(c, cfg, context)
        except NerfzipError as e:
            raise NerfzipError(f"{where}: {e}") from None
        if on_step is not None:
            on_step(step, report)
    return c
