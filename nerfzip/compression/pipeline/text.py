"""Pipeline specs: a sequence of passes written as text or YAML, read into checked steps.

Text: ``"prune(0.6) finetune(1000) vq(4096) quant(8)"`` — each step is a pass name with
positional and ``key=value`` arguments (numbers, ``true`` / ``false``, bare words). YAML: a
``pipeline:`` list whose items are such strings or ``{name: {key: value}}`` maps. Every step is
checked against its pass's Config in the registry (old argument names mapped) before anything
runs.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from nerfzip.compression.registry import get_pass
from nerfzip.errors import NerfzipError


@dataclass
class Step:
    """One pass of a pipeline: its name, positional and keyword arguments as written."""

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
    return [check_step(s, i + 1) for i, s in enumerate(steps)]


def check_step(step: Step, number: int) -> Step:
    """The step with old argument names mapped (``renames``) and every argument checked
    against its pass's Config, before anything runs; a problem is one line naming the step."""
    where = f"pipeline step {number} ({step})"
    info = get_pass(step.name, where)
    step = Step(step.name, list(step.args), info.renamed(step.kwargs, where))
    info.make_config(step.args, step.kwargs, where)
    return step


def steps_from_history(history: list[dict[str, Any]]) -> list[Step]:
    """The steps of a pipeline record (``Compressed.history``, an .nrz header's ``pipeline``),
    old argument names mapped: what a file says was done, as steps that could run again."""
    steps = []
    for i, record in enumerate(history):
        if not isinstance(record, dict) or not isinstance(record.get("step"), str) \
                or not isinstance(record.get("args", {}), dict):
            raise NerfzipError(f"pipeline record {i + 1}: expected {{step: name, args: {{...}}}}, "
                               f"got {str(record)[:40]}")
        steps.append(check_step(Step(record["step"], [], dict(record.get("args", {}))), i + 1))
    return steps


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
            if kwargs is not None and not isinstance(kwargs, dict):
                raise NerfzipError(f"{path}: pipeline item {i + 1} ({name}): expected a map of "
                                   "arguments")
            steps.append(check_step(Step(str(name), [], dict(kwargs or {})), i + 1))
        else:
            raise NerfzipError(f"{path}: pipeline item {i + 1} is neither a step string nor "
                               "a {pass: {argument: value}} map")
    return steps
