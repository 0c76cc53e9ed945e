"""Search spaces: a user-editable YAML file of the typed settings a search may vary.

Every key names a field of a typed config, so a search varies exactly what ``nerfzip train``
and ``nerfzip compress`` accept: ``training`` holds ``TrainConfig`` fields, ``families`` maps
each field family the search may train to its own ``training`` fields and its ``field`` config
fields (``--field-options``), and ``pipeline`` lists compression passes in order, each with
arguments of its registered ``Config``. A value is one of::

    7                                  fixed
    {choices: [256, 1024, 4096]}       one of these
    {low: 3, high: 8}                  an integer or a number in [low, high] (the field's type
    {low: 0.9, high: 0.999, log: true}  decides; optional ``step``, ``log``)

A pipeline step with ``optional: true`` is searched on and off. Everything is checked when the
file is read — unknown families, passes or settings, empty ranges, values outside a field's
limits — with one line naming the file and the key. ``default_space.yaml`` beside this module
is the space ``nerfzip search`` uses without ``--space``.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

import yaml

from nerfzip.compression.pipeline.text import Step
from nerfzip.compression.registry import get_pass
from nerfzip.errors import NerfzipError
from nerfzip.training.config import TrainConfig
from nerfzip.utils.schema import from_dict

DEFAULT_SPACE = Path(__file__).with_name("default_space.yaml")
RANGE_KEYS = {"low", "high", "step", "log"}


class Suggester(Protocol):
    """What a space draws values from: an ``optuna.Trial`` (or a stand-in in tests)."""

    def suggest_int(self, name: str, low: int, high: int, *, step: int = 1,
                    log: bool = False) -> int: ...

    def suggest_float(self, name: str, low: float, high: float, *, step: float | None = None,
                      log: bool = False) -> float: ...

    def suggest_categorical(self, name: str, choices: Any) -> Any: ...


@dataclass(frozen=True)
class Param:
    """One searched setting: a fixed value, a list of choices or a numeric range."""

    name: str
    """Its name in the study (e.g. ``pipeline.2.quant.bits``)."""
    kind: str
    """fixed, choice, int or float."""
    value: Any = None
    choices: tuple[Any, ...] = ()
    low: float = 0
    high: float = 0
    step: float | None = None
    log: bool = False

    def draw(self, trial: Suggester) -> Any:
        if self.kind == "fixed":
            return self.value
        if self.kind == "choice":
            return trial.suggest_categorical(self.name, list(self.choices))
        if self.kind == "int":
            return trial.suggest_int(self.name, int(self.low), int(self.high),
                                     step=int(self.step or 1), log=self.log)
        return trial.suggest_float(self.name, float(self.low), float(self.high),
                                   step=self.step, log=self.log)

    def extremes(self) -> list[Any]:
        """The values that bound it (each must be a valid setting)."""
        if self.kind == "fixed":
            return [self.value]
        if self.kind == "choice":
            return list(self.choices)
        return [self.low, self.high]


@dataclass(frozen=True)
class PipelineSlot:
    """One step of the searched pipeline: a pass, its parameters, whether it may be left out."""

    index: int
    name: str
    params: dict[str, Param]
    optional: bool = False


@dataclass(frozen=True)
class Family:
    """A field family the search may train, with its searched training and field settings."""

    name: str
    training: dict[str, Param] = field(default_factory=dict)
    field: dict[str, Param] = field(default_factory=dict)


@dataclass(frozen=True)
class Candidate:
    """What one trial runs: a training config (None: the model is given) and a pipeline."""

    train: TrainConfig | None
    steps: list[Step]
    slots: tuple[int, ...] = ()
    """The space's pipeline position of each step (optional steps may be left out), so that
    intermediate results of different trials are compared at the same point."""

    def pipeline_text(self) -> str:
        return " ".join(map(str, self.steps))


@dataclass(frozen=True)
class SearchSpace:
    """A parsed, checked search space."""

    source: str
    training: dict[str, Param]
    families: dict[str, Family]
    pipeline: list[PipelineSlot]
    text: str = ""
    """The YAML it was read from (stored with the study)."""

    def candidate(self, trial: Suggester,
                  base: Callable[[str], TrainConfig] | None) -> Candidate:
        """Draw one trial's settings. ``base(family)`` gives the training defaults to vary
        (None: the model is given, only the pipeline is searched)."""
        cfg = None
        if base is not None:
            family = self.families[trial.suggest_categorical("family", list(self.families))] \
                if len(self.families) > 1 else next(iter(self.families.values()))
            values = {k: p.draw(trial) for k, p in self.training.items()}
            values |= {k: p.draw(trial) for k, p in family.training.items()}
            options = {k: p.draw(trial) for k, p in family.field.items()}
            cfg = replace(base(family.name), field=family.name, field_options=options,
                          **values)
            if cfg.n_voxels_init > cfg.n_voxels_final:  # a searched grid below the start
                cfg = replace(cfg, n_voxels_init=cfg.n_voxels_final)
        steps, slots = [], []
        for slot in self.pipeline:
            if slot.optional and not trial.suggest_categorical(
                    f"pipeline.{slot.index}.{slot.name}.enabled", [True, False]):
                continue
            steps.append(Step(slot.name, [], {k: p.draw(trial)
                                              for k, p in slot.params.items()}))
            slots.append(slot.index)
        return Candidate(cfg, steps, tuple(slots))

    def stages(self, trains: bool) -> int:
        """The last stage at which a trial may report (1/3 and 2/3 of training, then after
        each pipeline position but the last, which is scored from the file)."""
        return (TRAIN_REPORTS if trains else 0) + len(self.pipeline) - 1


TRAIN_REPORTS = 2
"""Intermediate PSNRs reported while a trial trains (at 1/3 and 2/3 of its steps)."""


# --- reading --------------------------------------------------------------------------------
def load_space(path: str | Path | None = None) -> SearchSpace:
    """Read and check a search-space YAML file (default: the packaged one)."""
    path = Path(path) if path is not None else DEFAULT_SPACE
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise NerfzipError(f"{path}: search space file not found") from None
    except (IsADirectoryError, UnicodeDecodeError) as e:
        raise NerfzipError(f"{path}: cannot read the search space ({e.__class__.__name__})") \
            from None
    return parse_space(text, str(path))


def parse_space(text: str, source: str = "search space") -> SearchSpace:
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise NerfzipError(f"{source}: malformed YAML ({str(e).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise NerfzipError(f"{source}: expected a map with training, families and pipeline")
    unknown = sorted(set(map(str, data)) - {"training", "families", "pipeline"})
    if unknown:
        raise NerfzipError(f"{source}: unknown section {unknown[0]!r} (expected training, "
                           "families, pipeline)")
    training = config_params(data.get("training") or {}, TrainConfig, "training",
                             f"{source}: training", exclude=("field", "field_options"))
    families = read_families(data.get("families") or {}, f"{source}: families")
    pipeline = read_pipeline(data.get("pipeline") or [], f"{source}: pipeline")
    return SearchSpace(source, training, families, pipeline, text)


def read_families(data: Any, where: str) -> dict[str, Family]:
    from nerfzip.fields.base import field_class

    if not isinstance(data, dict):
        raise NerfzipError(f"{where}: expected a map of field families (e.g. tensorf-vm: ...)")
    out = {}
    for name, body in data.items():
        name = str(name)
        try:
            cls = field_class(name)
        except (NerfzipError, KeyError, ValueError):
            raise NerfzipError(f"{where}: unknown field family {name!r}") from None
        body = body or {}
        if not isinstance(body, dict) or set(map(str, body)) - {"training", "field"}:
            raise NerfzipError(f"{where}.{name}: expected 'training:' and / or 'field:' maps")
        training = config_params(body.get("training") or {}, TrainConfig, f"{name}.training",
                                 f"{where}.{name}.training", exclude=("field", "field_options"))
        fields = config_params(body.get("field") or {}, cls.config_cls, f"{name}.field",
                               f"{where}.{name}.field")
        out[name] = Family(name, training, fields)
    return out


def read_pipeline(data: Any, where: str) -> list[PipelineSlot]:
    if not isinstance(data, list) or not data:
        raise NerfzipError(f"{where}: expected a list of steps (e.g. - quant: {{bits: 8}})")
    slots = []
    for i, item in enumerate(data):
        if not isinstance(item, dict) or len(item) != 1:
            raise NerfzipError(f"{where} item {i + 1}: expected one {{pass: {{argument: "
                               "value}}}} map")
        name, body = next(iter(item.items()))
        name, body = str(name), dict(body or {})
        here = f"{where} item {i + 1} ({name})"
        info = get_pass(name, here)  # an unknown pass: one line listing the known ones
        optional = body.pop("optional", False)
        if not isinstance(optional, bool):
            raise NerfzipError(f"{here}: optional must be true or false")
        body = info.renamed(body, here)
        params = config_params(body, info.config, f"pipeline.{i}.{name}", here)
        slots.append(PipelineSlot(i, name, params, optional))
    return slots


def config_params(data: Any, cls: type, prefix: str, where: str,
                  exclude: tuple[str, ...] = ()) -> dict[str, Param]:
    """The parameters of a map of ``cls`` fields, each checked against ``cls``: unknown names,
    empty ranges and bounds the config refuses are one-line errors."""
    if not isinstance(data, dict):
        raise NerfzipError(f"{where}: expected a map of settings")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls) if f.init and f.name not in exclude]
    out = {}
    for key, spec in data.items():
        key = str(key)
        if key not in names:
            raise NerfzipError(f"{where}: unknown parameter {key!r} (known: {', '.join(names)})")
        param = read_param(f"{prefix}.{key}", spec, hints[key], f"{where}.{key}")
        for value in param.extremes():  # each bound must be a setting the config accepts
            from_dict(cls, {key: value}, f"{where}.{key}")
        out[key] = param
    return out


def read_param(name: str, spec: Any, hint: Any, where: str) -> Param:
    if not isinstance(spec, dict):
        return Param(name, "fixed", value=spec)
    if "choices" in spec:
        choices = spec["choices"]
        if set(spec) != {"choices"} or not isinstance(choices, list):
            raise NerfzipError(f"{where}: expected {{choices: [a, b, ...]}}")
        if not choices:
            raise NerfzipError(f"{where}: empty list of choices")
        if any(isinstance(c, (dict, list)) for c in choices):
            raise NerfzipError(f"{where}: choices must be plain values")
        return Param(name, "choice", choices=tuple(choices))
    extra = set(spec) - RANGE_KEYS
    if extra or not {"low", "high"} <= set(spec):
        what = f"unknown key {sorted(extra)[0]!r}" if extra else "missing low or high"
        raise NerfzipError(f"{where}: {what} (a range is {{low: A, high: B, step: S, log: "
                           "true}}; a list is {choices: [...]})")
    low, high, step, log = spec["low"], spec["high"], spec.get("step"), spec.get("log", False)
    numeric = (int, float)
    if any(isinstance(v, bool) or not isinstance(v, numeric) for v in (low, high)) or (
            step is not None and (isinstance(step, bool) or not isinstance(step, numeric))):
        raise NerfzipError(f"{where}: low, high and step must be numbers")
    if not isinstance(log, bool):
        raise NerfzipError(f"{where}: log must be true or false")
    if low > high:
        raise NerfzipError(f"{where}: empty range (low {low} > high {high})")
    if step is not None and step <= 0:
        raise NerfzipError(f"{where}: step must be positive, got {step}")
    if log and low <= 0:
        raise NerfzipError(f"{where}: a log range needs low > 0, got {low}")
    if log and step is not None:
        raise NerfzipError(f"{where}: give step or log, not both")
    kind = "int" if int in typing.get_args(hint) or hint is int else "float"
    if kind == "int" and not all(float(v).is_integer() for v in (low, high, step or 1)):
        raise NerfzipError(f"{where}: an integer setting needs integer low, high and step")
    return Param(name, kind, low=low, high=high, step=step, log=log)
