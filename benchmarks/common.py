"""What the benchmark scripts share: timing a model's full-resolution test-view renders."""

from __future__ import annotations

import statistics
import time


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
