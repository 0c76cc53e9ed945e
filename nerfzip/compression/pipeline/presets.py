"""Named pipelines (``nerfzip compress --preset NAME``): configurations, not code."""

from __future__ import annotations

from nerfzip.compression.pipeline.text import Step, load_pipeline_yaml, parse_pipeline
from nerfzip.errors import NerfzipError

PRESETS = {
    "high": "prune(method=occupancy) quant(6)",
    "balanced": "prune(method=importance, keep_mass=0.99) vq(1024, 0.001) "
                "quant(5, min_elements=1024) finetune(600)",
    "tiny": "prune(method=importance, keep_mass=0.98) vq(512, 0.0005) "
            "quant(4, min_elements=1024) finetune(600)",
    "quant8": "quant(8)",
}
"""Measured on lego (benchmarks/RESULTS.md): ``high`` 3.7 MB at -0.01 dB, ``balanced`` 0.325 MB
(136x) at -0.43 dB (25 test views), ``tiny`` 0.254 MB (175x) at -0.83 dB (8 test views).
``quant8`` is plain 8-bit post-training quantization (what ``encode --precision quant`` was)."""


def resolve(pipeline: str | None = None, preset: str | None = None,
            config: str | None = None) -> list[Step]:
    """Steps from exactly one of a text pipeline, a preset name or a YAML file."""
    given = [x for x in (pipeline, preset, config) if x]
    if len(given) != 1:
        raise NerfzipError("give exactly one of --pipeline, --preset, --config")
    if preset:
        if preset not in PRESETS:
            raise NerfzipError(f"unknown preset {preset!r} (known: {', '.join(PRESETS)})")
        return parse_pipeline(PRESETS[preset])
    if config:
        return load_pipeline_yaml(config)
    return parse_pipeline(pipeline or "")
