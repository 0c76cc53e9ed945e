"""Compression pipelines: text / YAML specs (``text``), named presets (``presets``) and the
runner (``run``, imported on first use: the specs alone need no torch, so the CLI can read
and check them before loading anything)."""

from typing import Any

from nerfzip.compression.pipeline.presets import PRESETS, resolve
from nerfzip.compression.pipeline.text import (
    Step,
    load_pipeline_yaml,
    parse_pipeline,
    steps_from_history,
)

__all__ = ["PRESETS", "Step", "load_pipeline_yaml", "parse_pipeline", "resolve",
           "run_pipeline", "steps_from_history"]


def __getattr__(name: str) -> Any:
    if name == "run_pipeline":
        from nerfzip.compression.pipeline.run import run_pipeline

        return run_pipeline
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
