"""Dynamic int8 inference of a field's linear layers on the CPU (``torch.ao`` dynamic
quantization): weights stored as int8 per output channel, activations quantized on the fly per
batch, matrix products in int8 (fbgemm / onednn).

This is an execution option for rendering, not a storage format: the .nrz file keeps whatever
precision the pipeline chose. Whether int8 pays off depends on the field: it speeds up wide
MLPs but not grid lookups, and it costs accuracy where activations span a wide range (the
imported nerf-pytorch MLPs reach activations in the thousands: int8 costs the imported lego
5.3 dB and is no faster). ``auto`` therefore runs one batch of points both ways and keeps int8
only where it is measured to be faster and its colours and densities stay within a tolerance of
float32 (``COLOUR_RMS_TOLERANCE``, ``DENSITY_TOLERANCE``); ``on`` forces it but still reports
the error. Quality must still be checked with ``nerfzip eval`` (``results.json`` records which
mode rendered and the measured error).

``torch.ao.quantization`` is deprecated in favour of the separate ``torchao`` package but still
ships with PyTorch 2.13, needs no extra dependency, and its CPU kernels are the ones measured in
``benchmarks/RESULTS.md``; its deprecation warnings are silenced here.
"""

from __future__ import annotations

import copy
import time
import warnings
from typing import Any

import torch
from torch import Tensor, nn

from nerfzip.errors import NerfzipError
from nerfzip.fields.base import Field
from nerfzip.rendering.model import RadianceModel

MODES = ("off", "on", "auto")
# Measured on 65,536 random points (benchmarks/RESULTS.md): the TensoRF-VM lego decoder's colours
# move by RMS 0.008 under int8 (-0.003 dB), the imported nerf-pytorch lego / fern MLPs' by 0.15 /
# 0.13 (-5.3 dB on lego). 0.02 sits between, well above the first.
COLOUR_RMS_TOLERANCE = 0.02
# Mean |sigma_int8 - sigma| / (|sigma| + 1): 4e-8 on the VM lego, 0.02 / 0.06 on the imported MLPs.
DENSITY_TOLERANCE = 0.005


def int8_field(field: Field) -> Field:
    """A copy of ``field`` whose ``nn.Linear`` layers run as dynamic int8 (CPU only)."""
    if field.aabb.device.type != "cpu":
        raise NerfzipError(f"int8 inference runs on the CPU, not {field.aabb.device}")
    from torch.ao import quantization as tq

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # Per-channel weight scales: nerf-pytorch layers mix rows of very different norms.
        return tq.quantize_dynamic(copy.deepcopy(field).eval(),
                                   {nn.Linear: tq.per_channel_dynamic_qconfig})


def count_linear(field: nn.Module) -> int:
    return sum(isinstance(m, nn.Linear) for m in field.modules())


def sample_points(field: Field, n: int, seed: int = 0) -> tuple[Tensor, Tensor]:
    """``n`` random points in the field's box and unit directions (a timing batch)."""
    gen = torch.Generator().manual_seed(seed)
    lo, hi = field.aabb[0].cpu(), field.aabb[1].cpu()
    x = lo + (hi - lo) * torch.rand(n, 3, generator=gen)
    d = torch.nn.functional.normalize(torch.randn(n, 3, generator=gen), dim=-1)
    return x, d


@torch.no_grad()
def time_forward(field: Field, x: Tensor, d: Tensor, repeats: int = 3) -> float:
    """Median seconds of ``field(x, d)`` after a warm-up call."""
    field(x, d)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        field(x, d)
        times.append(time.perf_counter() - t0)
    return sorted(times)[len(times) // 2]


@torch.no_grad()
def output_error(field: Field, quantized: Field, x: Tensor, d: Tensor) -> dict[str, float]:
    """How far ``quantized`` strays from ``field`` on the points ``x`` / directions ``d``:
    RMS colour difference, and mean density difference relative to ``|sigma| + 1`` (so that
    empty space, where densities are near zero, does not dominate)."""
    (s0, c0), (s1, c1) = field(x, d), quantized(x, d)
    return {"colour_rms": float((c1 - c0).pow(2).mean().sqrt()),
            "density_error": float(((s1 - s0).abs() / (s0.abs() + 1.0)).mean())}


def with_int8(model: RadianceModel, mode: str = "auto", points: int = 65536
              ) -> tuple[RadianceModel, dict[str, Any]]:
    """``model`` with an int8 field where ``mode`` asks for it ("on"), or where ``points``
    field queries show it is faster and close to float32 ("auto"); the input model is not
    changed. Returns the model to render with and a report (mode, whether int8 is used, its
    output error, timings)."""
    if mode not in MODES:
        raise NerfzipError(f"--int8 {mode!r}: expected one of {', '.join(MODES)}")
    report: dict[str, Any] = {"mode": mode, "int8": False}
    if mode == "off":
        return model, report
    if count_linear(model.field) == 0:
        report["reason"] = "the field has no linear layers"
        return model, report
    q = int8_field(model.field)
    x, d = sample_points(model.field, points)
    report.update(output_error(model.field, q, x, d))
    if mode == "auto":
        if (report["colour_rms"] > COLOUR_RMS_TOLERANCE
                or report["density_error"] > DENSITY_TOLERANCE):
            report["reason"] = (f"int8 moved colours by RMS {report['colour_rms']:.3f} and "
                                f"densities by {report['density_error']:.4f} (tolerance "
                                f"{COLOUR_RMS_TOLERANCE} / {DENSITY_TOLERANCE})")
            return model, report
        report["float_seconds"] = time_forward(model.field, x, d)
        report["int8_seconds"] = time_forward(q, x, d)
        if report["int8_seconds"] >= report["float_seconds"]:
            report["reason"] = "int8 was not faster on this machine"
            return model, report
    report["int8"] = True
    # The quantized layers' packed weights are not plain tensors: keep the float count.
    report["parameters"] = model.field.num_parameters()
    meta = {**model.meta, "int8": report}
    return RadianceModel(q, model.render, model.space, model.occupancy, meta), report
