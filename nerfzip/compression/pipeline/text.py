"""Compression pipelines: a sequence of passes written as text, YAML or Python, run on a model
and recorded in the file it produces.

Text: ``"prune(0.6) finetune(1000) vq(4096) quant(8)"`` — each step is a pass name with
positional and ``key=value`` arguments (numbers, ``true`` / ``false``, bare words). YAML: a
``pipeline:`` list whose items are such strings or ``{name: {key: value}}`` maps. Named presets
are pipelines tuned on lego (``PRESETS``).
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from nerfzip.compression.passes.tensor_decompose import convert, reduce_rank, tensor_decompose
from nerfzip.compression.fit.student import distill
from nerfzip.compression.fit.finetune import finetune
from nerfzip.compression.passes.low_rank import low_rank
from nerfzip.compression.passes.prune import prune
from nerfzip.compression.passes.quant import half, quantize
from nerfzip.compression.compressed import Compressed
from nerfzip.compression.passes.vq import vector_quantize
from nerfzip.data.scene import Scene
from nerfzip.errors import NerfzipError
from nerfzip.rendering.model import RadianceModel

PASSES: dict[str, Callable[..., tuple[Compressed, dict[str, Any]]]] = {
    "prune": prune, "quant": quantize, "half": half, "vq": vector_quantize,
    "finetune": finetune, "low_rank": low_rank,
    "tensor_decompose": tensor_decompose, "reduce_rank": reduce_rank, "convert": convert,
    "distill": distill,
}

PRESETS = {
    "high": "prune(method=occupancy) quant(6)",
    "balanced": "prune(method=importance, keep_mass=0.99) vq(1024, 0.001) "
                "quant(5, min_elements=1024) finetune(600)",
    "tiny": "prune(method=importance, keep_mass=0.98) vq(512, 0.0005) "
            "quant(4, min_elements=1024) finetune(600)",
}
"""Measured on lego (benchmarks/RESULTS.md): ``high`` 3.7 MB at -0.01 dB, ``balanced`` 0.325 MB
(136x) at -0.43 dB (25 test views), ``tiny`` 0.254 MB (175x) at -0.83 dB (8 test views)."""


@dataclass
class Step:
    name: str
    args: list[Any] = field(default_factory=list)
    kwargs: dict[str, Any] = field(default_factory=dict)

    def __str__(self) -> str:
        parts = [repr_value(a) for a in self.args]
        parts += [f"{k}={repr_value(v)}" for k, v in self.kwargs.items()]
        return f"{self.name}({', '.join(parts)})"


def repr_value(v: Any) -> str:
    return str(v).lower() if isinstance(v, bool) else str(v)


STEP_RE = re.compile(r"\s*([A-Za-z_]\w*)\s*(?:\(([^()]*)\))?\s*")


def parse_value(text: str) -> Any:
    t = text.strip()
    if t.lower() in ("true", "false"):
        return t.lower() == "true"
    for conv in (int, float):
        try:
            return conv(t)
        except ValueError:
            pass
    if not re.fullmatch(r"[A-Za-z_][\w.-]*", t):
        raise ValueError(f"cannot read value {t!r}")
    return t


def parse_pipeline(spec: str) -> list[Step]:
    """Parse a text pipeline; a bad step raises ``NerfzipError`` naming it and why."""
    steps, pos = [], 0
    while pos < len(spec):
        m = STEP_RE.match(spec, pos)
        if not m or m.end() == pos:
            raise NerfzipError(f"pipeline: cannot read {spec[pos:].strip()!r} (expected a step "
                               "like quant(8))")
        pos = m.end()
        name, inner = m.group(1), m.group(2)
        step = Step(name)
        for i, part in enumerate(p for p in (inner or "").split(",") if p.strip()):
            try:
                if "=" in part:
                    key, value = part.split("=", 1)
                    step.kwargs[key.strip()] = parse_value(value)
                elif step.kwargs:
                    raise ValueError("positional argument after a keyword argument")
                else:
                    step.args.append(parse_value(part))
            except ValueError as e:
                raise NerfzipError(f"pipeline step {len(steps) + 1} ({name}): argument "
                                   f"{i + 1}: {e}") from None
        steps.append(step)
    if not steps:
        raise NerfzipError("pipeline: empty")
    for i, s in enumerate(steps):
        check_step(s, i + 1)
    return steps


def check_step(step: Step, number: int) -> None:
    """Reject unknown passes and arguments before anything runs."""
    where = f"pipeline step {number} ({step})"
    if step.name not in PASSES:
        raise NerfzipError(f"{where}: unknown pass {step.name!r} (known: "
                           f"{', '.join(sorted(PASSES))})")
    params = [p for p in inspect.signature(PASSES[step.name]).parameters.values()
              if p.name not in ("model", "scene", "quiet")]
    names = [p.name for p in params]
    if len(step.args) > len(names):
        raise NerfzipError(f"{where}: takes at most {len(names)} positional arguments "
                           f"({', '.join(names)})")
    unknown = set(step.kwargs) - set(names)
    if unknown:
        raise NerfzipError(f"{where}: unknown argument {sorted(unknown)[0]!r} (takes "
                           f"{', '.join(names)})")
    twice = set(names[:len(step.args)]) & set(step.kwargs)
    if twice:
        raise NerfzipError(f"{where}: argument {sorted(twice)[0]!r} given twice")
    for p, value in zip(params, step.args):
        check_type(where, p, value)
    for key, value in step.kwargs.items():
        check_type(where, next(p for p in params if p.name == key), value)


def check_type(where: str, param: inspect.Parameter, value: Any) -> None:
    default = param.default
    if default is inspect.Parameter.empty or default is None:
        return
    ok = (isinstance(value, bool) if isinstance(default, bool) else
          isinstance(value, int) and not isinstance(value, bool) if isinstance(default, int) else
          isinstance(value, (int, float)) and not isinstance(value, bool)
          if isinstance(default, float) else isinstance(value, type(default)))
    if not ok:
        raise NerfzipError(f"{where}: {param.name} must be a {type(default).__name__}, got "
                           f"{value!r}")


def load_pipeline_yaml(path: str | Path) -> list[Step]:
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise NerfzipError(f"{path}: file not found") from None
    except yaml.YAMLError as e:
        raise NerfzipError(f"{path}: malformed YAML ({str(e).splitlines()[0]})") from None
    items = data.get("pipeline") if isinstance(data, dict) else data
    if not isinstance(items, list):
        raise NerfzipError(f"{path}: expected a 'pipeline:' list of steps")
    steps = []
    for i, item in enumerate(items):
        if isinstance(item, str):
            steps += parse_pipeline(item)
        elif isinstance(item, dict) and len(item) == 1:
            name, kwargs = next(iter(item.items()))
            step = Step(str(name), [], dict(kwargs or {}))
            check_step(step, i + 1)
            steps.append(step)
        else:
            raise NerfzipError(f"{path}: pipeline item {i + 1} is neither a step string nor "
                               "a {pass: {argument: value}} map")
    return steps


def resolve(pipeline: str | None = None, preset: str | None = None,
            config: str | Path | None = None) -> list[Step]:
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


def run_pipeline(model: RadianceModel | Compressed, steps: list[Step], scene: Scene | None,
                 quiet: bool = True, on_step: Callable[[Step, dict], None] | None = None
                 ) -> Compressed:
    """Run the passes in order on a copy of ``model``."""
    c = Compressed.of(model)
    for i, step in enumerate(steps):
        fn = PASSES[step.name]
        kwargs = dict(step.kwargs)
        sig = inspect.signature(fn).parameters
        if "scene" in sig:
            if scene is None and step.name in ("finetune",):
                raise NerfzipError(f"pipeline step {i + 1} ({step}) needs the scene: pass --data")
            kwargs["scene"] = scene
        if "quiet" in sig:
            kwargs["quiet"] = quiet
        try:
            c, report = fn(c, *step.args, **kwargs)
        except NerfzipError as e:
            raise NerfzipError(f"pipeline step {i + 1} ({step}): {e}") from None
        if on_step is not None:
            on_step(step, report)
    return c
