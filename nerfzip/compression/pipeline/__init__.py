"""Compression pipelines: text / YAML specs, named presets, and the runner."""

from nerfzip.compression.pipeline.text import (
    PASSES,
    PRESETS,
    Step,
    load_pipeline_yaml,
    parse_pipeline,
    resolve,
    run_pipeline,
)

__all__ = ["PASSES", "PRESETS", "Step", "load_pipeline_yaml", "parse_pipeline", "resolve",
           "run_pipeline"]
