"""Dynamic int8 inference: every linear layer runs quantized, outputs stay close to float32,
the input model is untouched, ``auto`` keeps int8 only when it is measured faster, and the CLI
records which precision rendered."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from torch import nn

from nerfzip.errors import NerfzipError
from nerfzip.fields.mlp_nerf import MLPNeRF, MLPNeRFConfig
from nerfzip.rendering import int8
from nerfzip.rendering.model import RadianceModel, SceneSpace
from nerfzip.rendering.renderer import RenderConfig


def small_mlp() -> RadianceModel:
    cfg = MLPNeRFConfig(pos_freqs=4, dir_freqs=2, hidden=64, depth=4, skips=(2,), dir_hidden=32,
                        density_activation="softplus")
    aabb = torch.tensor([[-1.0, -1.0, -1.0], [1.0, 1.0, 1.0]])
    return RadianceModel(MLPNeRF(cfg, aabb, seed=3), RenderConfig(sampler="hierarchical"),
                         SceneSpace([1.0, 1.0, 1.0], 2.0, 6.0))


def test_int8_field_quantizes_every_linear_layer_and_stays_close():
    model = small_mlp()
    q = int8.int8_field(model.field)
    assert int8.count_linear(model.field) == 16  # 2 networks x (4 trunk + 4 head) layers
    assert int8.count_linear(q) == 0
    x, d = int8.sample_points(model.field, 4096)
    with torch.no_grad():
        (s0, c0), (s1, c1) = model.field(x, d), q(x, d)
    assert not torch.equal(c0, c1)  # it really runs in lower precision
    assert (c1 - c0).abs().mean() < 5e-3
    assert (s1 - s0).abs().mean() < 0.02 * s0.abs().mean()
    # The input field keeps its float layers.
    assert all(type(m) is nn.Linear for m in model.field.modules()
               if "Linear" in type(m).__name__)


def test_modes_off_on_and_auto(monkeypatch):
    model = small_mlp()
    same, report = int8.with_int8(model, "off")
    assert same is model and report["int8"] is False
    on, report = int8.with_int8(model, "on")
    assert on is not model and report["int8"] and int8.count_linear(on.field) == 0
    assert 0 < report["colour_rms"] < int8.COLOUR_RMS_TOLERANCE
    assert report["density_error"] < int8.DENSITY_TOLERANCE
    assert on.meta["int8"]["parameters"] == model.field.num_parameters()
    timings = iter([1.0, 0.5])  # float, then int8: int8 is faster
    monkeypatch.setattr(int8, "time_forward", lambda *a, **k: next(timings))
    auto, report = int8.with_int8(model, "auto")
    assert report["int8"] and int8.count_linear(auto.field) == 0
    timings = iter([0.5, 1.0])  # int8 slower: stays float
    auto, report = int8.with_int8(model, "auto")
    assert auto is model and not report["int8"] and "not faster" in report["reason"]
    # Faster but inaccurate (as on the imported nerf-pytorch MLPs): auto stays float, on forces.
    monkeypatch.setattr(int8, "COLOUR_RMS_TOLERANCE", report["colour_rms"] / 2)
    timings = iter([1.0, 0.5])
    auto, report = int8.with_int8(model, "auto")
    assert auto is model and not report["int8"] and "moved colours" in report["reason"]
    on, report = int8.with_int8(model, "on")
    assert report["int8"] and report["colour_rms"] > int8.COLOUR_RMS_TOLERANCE
    with pytest.raises(NerfzipError, match="expected one of"):
        int8.with_int8(model, "fast")


def test_cli_eval_records_int8(tmp_path):
    from nerfzip.training.checkpoint import save_model

    model = small_mlp()
    model.space.source = "procedural"
    save_model(model, tmp_path / "run" / "model.safetensors")
    proc = subprocess.run([sys.executable, "-m", "nerfzip.cli.main", "eval",
                           str(tmp_path / "run"), "--int8", "on", "--limit", "1", "--quiet"],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert "int8 inference: on" in proc.stdout
    results = json.loads((tmp_path / "run" / "eval" / "results.json").read_text())
    assert results["model"]["int8"] is True
    assert results["model"]["parameters"] == model.field.num_parameters()
