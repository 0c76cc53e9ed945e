"""The pass registry: every pass has a typed Config with a help line per field; parsing,
validation, the Python API, ``--list-passes`` and the README table all come from it; bad steps
fail in one line naming the step; old argument names in stored pipelines still load; and a pass
defined here, in a test module, runs in a pipeline with no other edit (adding a pass = one
module). Also a CPU smoke run of every preset on the procedural scene at tiny budgets."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import torch

import nerfzip
from nerfzip.compression.compressed import Compressed
from nerfzip.compression.constraints import Mask
from nerfzip.compression.pipeline import (
    PRESETS,
    Step,
    load_pipeline_yaml,
    parse_pipeline,
    run_pipeline,
    steps_from_history,
)
from nerfzip.compression.registry import (
    PassContext,
    markdown_table,
    passes,
    register_pass,
)
from nerfzip.data.procedural import load_procedural
from nerfzip.errors import NerfzipError
from nerfzip.fields.tensorf import TensoRF, TensoRFConfig
from nerfzip.rendering.model import RadianceModel, SceneSpace
from nerfzip.rendering.occupancy import OccupancyGrid
from nerfzip.rendering.renderer import RenderConfig
from nerfzip.utils.schema import describe, limits

ROOT = Path(__file__).resolve().parents[1]
BUILT_IN = {"prune", "quant", "half", "vq", "finetune", "low_rank", "tensor_decompose",
            "reduce_rank", "convert", "distill"}


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "nerfzip.cli.main", *args],
                          capture_output=True, text=True, cwd=ROOT)


# --- what the registry holds ----------------------------------------------------------------
def test_every_pass_has_a_config_with_a_help_line_per_field():
    known = passes()
    assert BUILT_IN <= set(known)
    for name, info in known.items():
        assert dataclasses.is_dataclass(info.config), name
        rows = describe(info.config)
        assert rows, name
        for row in rows:
            assert row["help"], f"{name}.{row['name']} has no help line"
        assert info.summary, name
        info.make_config([], {}, name)  # the defaults are a valid config


def test_the_python_api_comes_from_the_registry():
    for name, info in passes().items():
        fn = getattr(nerfzip, info.api)
        assert fn.__name__ == info.api and name in fn.__doc__
        assert info.api in nerfzip.__all__
    # The public names the API had before the registry are all still there.
    for api in ("prune", "quantize", "half", "vector_quantize", "finetune", "low_rank",
                "distill", "tensor_decompose", "reduce_rank", "convert"):
        assert callable(getattr(nerfzip, api))


def test_readme_pass_table_is_the_registrys():
    """The README's table of passes is the generated one (regenerate it with
    ``python -m nerfzip.compression.registry --markdown`` after changing a pass)."""
    md = subprocess.run([sys.executable, "-m", "nerfzip.compression.registry", "--markdown"],
                        capture_output=True, text=True, cwd=ROOT)
    assert md.returncode == 0, md.stderr
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    block = readme.split("<!-- passes:begin -->\n")[1].split("<!-- passes:end -->")[0]
    assert block.strip() == md.stdout.strip()


def test_list_passes_shows_every_pass_and_argument():
    proc = cli("compress", "--list-passes")
    assert proc.returncode == 0, proc.stderr
    md = subprocess.run([sys.executable, "-m", "nerfzip.compression.registry", "--markdown"],
                        capture_output=True, text=True, cwd=ROOT)
    assert md.returncode == 0, md.stderr
    for name, info in passes().items():
        if not info.run.__module__.startswith("nerfzip."):
            continue  # registered by this test module, not in a fresh process
        listing = proc.stdout.split(f"\n{name}  ")[-1] if not proc.stdout.startswith(name) \
            else proc.stdout
        assert f"{name}  (Python: nerfzip.{info.api})" in proc.stdout
        assert f"| **`{name}`** (`nerfzip.{info.api}`)" in md.stdout
        for row in describe(info.config):
            assert f"    {row['name']} " in listing, (name, row["name"])
            assert f"| `{row['name']}` |" in md.stdout, (name, row["name"])
    assert "(older names: ratio -> remove)" in proc.stdout


# --- bad steps: one line naming the step ---------------------------------------------------
@pytest.mark.parametrize("spec, fragment", [
    ("quant(8) zip(3)", "pipeline step 2 (zip(3)): unknown pass 'zip'"),
    ("quant(8) prune(colour=red)", "pipeline step 2 (prune(colour=red)): unknown argument "
                                   "'colour'"),
    ("quant(bits=eight)", "pipeline step 1 (quant(bits=eight)): bits must be an integer"),
    ("quant(17)", "pipeline step 1 (quant(17)): bits must be in [1, 16], got 17"),
    ("prune(method=voodoo)", "method must be one of magnitude, importance"),
    ("vq(keep=1.5)", "keep must be in [0.0, 1.0], got 1.5"),
    ("finetune(steps=-1)", "steps must be >= 0, got -1"),
    ("low_rank(energy=0)", "energy must be in [0.0, 1.0]"),
    ("prune(0.5, remove=0.6)", "argument 'remove' given twice"),
    ("prune(ratio=0.5, remove=0.6)", "argument 'remove' given twice (once as 'ratio')"),
    ("half(1, 2)", "takes at most 1 positional arguments (min_elements)"),
])
def test_bad_steps_fail_in_one_line_naming_the_step(spec, fragment):
    with pytest.raises(NerfzipError) as err:
        parse_pipeline(spec)
    assert fragment in str(err.value) and "\n" not in str(err.value)


def test_the_python_api_validates_like_pipelines():
    model = tiny()
    with pytest.raises(NerfzipError, match=r"^quant: bits must be in \[1, 16\], got 0$"):
        nerfzip.quantize(model, 0)
    with pytest.raises(NerfzipError, match="unknown argument 'colour'"):
        nerfzip.prune(model, colour="red")
    with pytest.raises(NerfzipError, match="takes at most 1 positional"):
        nerfzip.half(model, 1, 2)


def test_cli_reports_a_bad_value_in_one_line(tmp_path):
    proc = cli("compress", "nowhere", "-o", str(tmp_path / "x.nrz"), "--pipeline", "quant(99)")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "quant(99)" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


# --- old names ---------------------------------------------------------------------------
@pytest.mark.parametrize("old, new", [
    ("prune(ratio=0.6)", "prune(remove=0.6)"),
    ("prune(0.6)", "prune(0.6)"),  # positional: the first field, the share removed, as before
    ("low_rank(ratio=0.5)", "low_rank(keep=0.5)"),
    ("tensor_decompose(ratio=0.25)", "tensor_decompose(keep=0.25)"),
    ("distill(step_ratio=2.0, steps=3)", "distill(step_scale=2.0, steps=3)"),
])
def test_old_argument_names_are_mapped_when_reading(old, new, tmp_path):
    assert str(parse_pipeline(old)[0]) == new
    name, inner = old.split("(", 1)
    key, value = inner.rstrip(")").split(",")[0].split("=") if "=" in old else (None, None)
    if key is not None:  # the same in YAML
        yml = tmp_path / "p.yaml"
        yml.write_text(f"pipeline:\n  - {name}: {{{key}: {value}}}\n")
        assert str(load_pipeline_yaml(yml)[0]).startswith(new.split(",")[0].rstrip(")"))


def test_old_pipeline_records_load_as_steps():
    """Records as .nrz headers of older files hold them (``ratio``), and as written today."""
    old = [{"step": "prune", "args": {"ratio": 0.5, "method": "magnitude", "scope": "global",
                                      "threshold": None, "keep_mass": 0.999}, "report": {}},
           {"step": "low_rank", "args": {"energy": 0.95, "ratio": None, "include": ""}},
           {"step": "tensor_decompose", "args": {"method": "tucker", "ratio": 0.5, "rank": 0,
                                                 "full": False, "include": "grids"}},
           {"step": "quant", "args": {"bits": 8, "per_channel": True, "min_elements": 4096,
                                      "include": ""}}]
    steps = steps_from_history(old)
    assert steps[0].kwargs["remove"] == 0.5 and "ratio" not in steps[0].kwargs
    assert steps[1].kwargs["keep"] is None and steps[2].kwargs["keep"] == 0.5
    c, _ = nerfzip.prune(tiny(), 0.3)
    c, _ = nerfzip.quantize(c, 8, min_elements=64)
    again = steps_from_history(c.history)
    assert [str(s) for s in again] == [str(s) for s in steps_from_history(
        json.loads(json.dumps(c.history)))]
    assert again[0].kwargs["remove"] == 0.3
    with pytest.raises(NerfzipError, match="pipeline record 1"):
        steps_from_history([{"args": {}}])


def test_every_benchmark_record_pipeline_still_parses():
    texts = set()
    for path in (ROOT / "benchmarks" / "records").glob("compress_*.json"):
        for row in json.loads(path.read_text())["rows"]:
            # "steps": the text the run parsed (presets expanded, a benchmark's budget=@N
            # resolved to bytes); older records have only "pipeline"
            text = row.get("steps") or row.get("pipeline", "")
            if text and not text.startswith("preset:"):
                texts.add(text)
    assert texts
    for text in sorted(texts):
        assert parse_pipeline(text), text


# --- adding a pass = one module ------------------------------------------------------------
@dataclass
class ZeroConfig:
    """The toy pass."""

    below: float = field(default=0.01, metadata=limits(0.0))
    """Entries with a magnitude below this are pruned."""
    include: str = "density_grids"
    """Only tensors whose name contains this text."""


@register_pass("zero_small", ZeroConfig, api="zero_small", renames={"eps": "below"})
def zero_small(model: RadianceModel | Compressed, cfg: ZeroConfig, ctx: PassContext
               ) -> tuple[Compressed, dict[str, Any]]:
    """Prune entries smaller than a threshold (a test pass)."""
    c = Compressed.of(model)
    pruned = 0
    for name, x in c.tensors().items():
        if cfg.include in name and x.dim() >= 2:
            keep = x.detach().abs() >= cfg.below
            c.add(name, Mask(keep))
            pruned += int((~keep).sum())
    c.project()
    report = {"pruned": pruned}
    c.record("zero_small", dataclasses.asdict(cfg), report)
    return c, report


def test_a_pass_registered_in_a_test_module_runs_in_a_pipeline(tmp_path):
    model = tiny()
    c = run_pipeline(model, parse_pipeline("zero_small(0.2) quant(8, min_elements=64)"), None)
    assert [h["step"] for h in c.history] == ["zero_small", "quant"]
    assert c.history[0]["report"]["pruned"] > 0
    x = c.model.field.density_grids.planes[0]
    assert bool((x == 0).any()) and float(x.abs()[x != 0].min()) >= 0.2 * 0.9
    report = c.save(tmp_path / "z.nrz")
    back = nerfzip.load(report.path)
    for name, t in c.model.field.named_tensors().items():
        assert torch.equal(back.field.named_tensors()[name], t), name
    # ... and is in the Python API, the listing and the old-name table like any other.
    same, _ = nerfzip.zero_small(model, eps=0.2)
    assert same.history[0]["report"] == c.history[0]["report"]
    assert "zero_small" in markdown_table()
    assert str(parse_pipeline("zero_small(eps=0.1)")[0]) == "zero_small(below=0.1)"


def test_a_pass_name_cannot_be_taken_twice():
    with pytest.raises(ValueError, match="taken"):
        register_pass("quant", ZeroConfig)(zero_small)


def test_a_config_without_help_lines_is_refused():
    @dataclass
    class Bare:
        x: int = 1

    with pytest.raises(TypeError, match="no help line"):
        register_pass("bare", Bare)


# --- presets ----------------------------------------------------------------------------
TINY_BUDGET = {"finetune": {"steps": 2, "batch_size": 64}, "prune": {"n_rays": 2048},
               "vq": {"n_rays": 2048, "iters": 2}}


def tiny(scene_aabb: torch.Tensor | None = None) -> RadianceModel:
    aabb = scene_aabb if scene_aabb is not None else torch.tensor([[-1.0] * 3, [1.0] * 3])
    # Planes of 8 x 32 x 32 values: above quant's 4096-value floor, as real grids are.
    cfg = TensoRFConfig(decomposition="vm", resolution=(32, 32, 32), density_components=8,
                        appearance_components=8, app_dim=4, decoder_hidden=8, init_scale=0.3)
    occ = OccupancyGrid(aabb, 8)
    occ.occupied.fill_(True)
    return RadianceModel(TensoRF(cfg, aabb, seed=0), RenderConfig(step_size=0.05),
                         SceneSpace([1.0, 1.0, 1.0], 2.0, 6.0, name="tiny"), occ)


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_every_preset_runs_on_the_procedural_scene(preset, tmp_path):
    scene = load_procedural()
    model = tiny(scene.aabb)
    steps = [Step(s.name, [], {**dict(zip(passes()[s.name].fields(), s.args)), **s.kwargs,
                               **TINY_BUDGET.get(s.name, {})})
             for s in parse_pipeline(PRESETS[preset])]
    c = run_pipeline(model, steps, scene)
    assert [h["step"] for h in c.history] == [s.name for s in steps]
    report = c.save(tmp_path / f"{preset}.nrz")
    assert report.bytes < nerfzip.save(model, tmp_path / "plain.nrz").bytes
    back = nerfzip.load(tmp_path / f"{preset}.nrz")
    for name, t in c.model.field.named_tensors().items():
        assert torch.equal(back.field.named_tensors()[name], t), (preset, name)
