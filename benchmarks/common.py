"""What the benchmark scripts share: where their JSON records go, and timing a model's
full-resolution test-view renders."""

from __future__ import annotations

import statistics
import time
from pathlib import Path

RECORDS = Path(__file__).resolve().parent / "records"
"""The benchmark records (tracked in git, so RESULTS.md can always be rebuilt from them); models
and scratch outputs go to the untracked ``benchmarks/out``."""


def render_seconds(model, scene, views: list[int]) -> float:
    """Median wall time of one full-resolution test view over ``views``, after a warm-up
    render of the first."""
    model.render_view(scene, "test", views[0])
    times = []
    for i in views:
        t0 = time.perf_counter()
        model.render_view(scene, "test", i)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)
