"""The one serializer of a ``RadianceModel``: named tensors plus one JSON header, and back.

Model files (``model.safetensors``, ``checkpoint.safetensors``) and ``.nrz`` files both store a
model as what this module produces, so the two can never disagree on a key. Header schema
(every key always written)::

    {"field":     {"family", "config", "aabb", "low_rank"?}   Field.config_dict()
     "render":    RenderConfig,            "space": SceneSpace,
     "occupancy": {"resolution", "aabb"} or null,
     "pipeline":  [{"step": str, "args": {...}, "report": {...}}, ...],
     "meta":      {...}}                    free-form notes (training time, int8 choice, ...)

Tensors: ``field.<name>`` (``Field.named_tensors``), ``occupancy.occupied`` (bool [r, r, r]) and,
in model files only, ``occupancy.density`` (float32 [r, r, r]: the running estimate an exact
``--resume`` needs). Reading validates every header value against its dataclass (types and
ranges, ``utils.schema``), builds the field on the ``meta`` device first to learn the tensor
shapes its config implies without allocating anything, and then checks each tensor's name,
shape, dtype and finiteness before the real field is built: a hostile header can neither
allocate nor reach a constructor with a value it would choke on.
"""

from __future__ import annotations

import functools
import json
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import Tensor

from nerfzip.errors import NerfzipError
from nerfzip.fields.base import Field, aabb_from, build_field
from nerfzip.rendering.model import RadianceModel, SceneSpace
from nerfzip.rendering.occupancy import OccupancyGrid
from nerfzip.rendering.renderer import RenderConfig
from nerfzip.utils.schema import coerce, from_dict, limits

OCCUPIED, DENSITY = "occupancy.occupied", "occupancy.density"
MAX_OCCUPANCY = 512
"""Largest occupancy grid a file may declare (512^3 cells: 640 MB with its density)."""
BUILD_ERRORS = (TypeError, ValueError, RuntimeError, IndexError, KeyError, AttributeError,
                OverflowError, ZeroDivisionError, NotImplementedError)
"""What a field constructor may raise on a config that passed its schema but not its maths."""


@dataclass
class OccupancyHeader:
    """The occupancy grid's header entry (its cells are the ``occupancy.*`` tensors)."""

    resolution: int = field(metadata=limits(1, MAX_OCCUPANCY))
    """Cells along each axis."""
    aabb: Any
    """The box the grid covers, [[x0, y0, z0], [x1, y1, z1]]."""


@dataclass
class PipelineStep:
    """One entry of the compression record: the pass, its arguments and what it reported."""

    step: str
    """The pass's registered name."""
    args: dict[str, Any] = field(default_factory=dict)
    """The arguments it ran with."""
    report: dict[str, Any] = field(default_factory=dict)
    """What it measured (sizes, errors, ranks ...)."""


@dataclass
class ModelHeader:
    """A validated header, with the tensors its field config implies."""

    field: dict[str, Any]
    render: RenderConfig
    space: SceneSpace
    occupancy: OccupancyHeader | None
    pipeline: list[dict[str, Any]]
    meta: dict[str, Any]
    family: str
    expected: dict[str, tuple[tuple[int, ...], torch.dtype]]
    """Every tensor the model needs: name -> (shape, dtype)."""
    optional: frozenset[str]
    """Tensors the model can be built without (``Field.optional_tensors``, the density)."""


# --- writing ---------------------------------------------------------------------------------
def model_tensors(model: RadianceModel, density: bool) -> dict[str, Tensor]:
    """The model's tensors by stable name, on the CPU (``density``: include the occupancy
    grid's running density, which model files keep for an exact resume and .nrz files drop)."""
    out = {f"field.{k}": v for k, v in model.field.named_tensors().items()}
    if model.occupancy is not None:
        out[OCCUPIED] = model.occupancy.occupied.bool()
        if density:
            out[DENSITY] = model.occupancy.density
    return {k: v.detach().cpu().contiguous() for k, v in out.items()}


def model_header(model: RadianceModel) -> dict[str, Any]:
    """The model's header (the schema in this module's docstring), JSON-able."""
    occ = model.occupancy
    return {"field": model.field.config_dict(), "render": asdict(model.render),
            "space": model.space.to_dict(),
            "occupancy": None if occ is None else {"resolution": occ.resolution,
                                                   "aabb": occ.aabb.tolist()},
            "pipeline": list(model.meta.get("pipeline", [])),
            "meta": {k: v for k, v in model.meta.items() if k not in ("pipeline", "decode")}}


# --- reading ---------------------------------------------------------------------------------
def parse_header(header: Any, where: str) -> ModelHeader:
    """Validate every value of a model header; one-line ``NerfzipError`` naming the key."""
    if not isinstance(header, dict):
        raise NerfzipError(f"{where}: the header is not a JSON object")
    for key in ("field", "render", "space"):
        if key not in header:
            raise NerfzipError(f"{where}: the header has no {key!r} entry")
    render = from_dict(RenderConfig, header["render"], f"{where}: render")
    space = from_dict(SceneSpace, header["space"], f"{where}: space")
    occupancy = None
    if header.get("occupancy") is not None:
        occupancy = from_dict(OccupancyHeader, header["occupancy"], f"{where}: occupancy")
        occupancy.aabb = aabb_from(occupancy.aabb, f"{where}: occupancy: aabb").tolist()
    pipeline = pipeline_record(header.get("pipeline", []), where)
    meta = coerce(header.get("meta", {}), dict[str, Any], "meta", where)
    family, expected, optional = expected_tensors(header["field"], f"{where}: field")
    if occupancy is not None:
        cells = (occupancy.resolution,) * 3
        expected[OCCUPIED] = (cells, torch.bool)
        expected[DENSITY] = (cells, torch.float32)
        optional = optional | {DENSITY}
    return ModelHeader(header["field"], render, space, occupancy, pipeline, meta, family,
                       expected, frozenset(optional))


def pipeline_record(value: Any, where: str) -> list[dict[str, Any]]:
    """The compression record, each entry checked as a ``PipelineStep`` (kept as written)."""
    steps = coerce(value, list[Any], "pipeline", where)
    for i, step in enumerate(steps):
        from_dict(PipelineStep, step, f"{where}: pipeline[{i}]")
    return [dict(s) for s in steps]


def expected_tensors(config: Any, where: str
                     ) -> tuple[str, dict[str, tuple[tuple[int, ...], torch.dtype]], set[str]]:
    """The family, the tensors (shape, dtype) and the optional ones that a field config
    implies, learnt by building the field on the ``meta`` device (nothing is allocated)."""
    try:
        key = json.dumps(config, sort_keys=True)
    except (TypeError, ValueError, RecursionError):
        raise NerfzipError(f"{where}: the field entry is not plain JSON") from None
    try:
        family, expected, optional = meta_shapes(key)
    except NerfzipError as e:
        raise NerfzipError(str(e).replace(PLACEHOLDER, where)) from None
    return family, dict(expected), set(optional)


PLACEHOLDER = "\0field"


@functools.lru_cache(maxsize=64)
def meta_shapes(config_json: str) -> tuple[str, tuple[tuple[str, tuple[tuple[int, ...],
                                                                      torch.dtype]], ...],
                                           frozenset[str]]:
    """``expected_tensors`` of a config given as canonical JSON. Memoised: a meta-device build
    costs milliseconds (a TensoRF's random init is slow there) and the same config is read
    again and again (every checkpoint of a run, every file of a sweep). Errors name
    ``PLACEHOLDER``, which the caller replaces with the file."""
    config = json.loads(config_json)
    try:
        with torch.device("meta"):
            fld = build_field(config, None, PLACEHOLDER)
        tensors = fld.named_tensors()
        optional = frozenset(f"field.{k}" for k in fld.optional_tensors())
    except NerfzipError:
        raise
    except BUILD_ERRORS as e:
        raise NerfzipError(f"{PLACEHOLDER}: the config does not describe a buildable field "
                           f"({type(e).__name__}: {first_line(e)})") from None
    return fld.family, tuple((f"field.{k}", (tuple(v.shape), v.dtype)) for k, v in
                             tensors.items()), optional


def check_declared(name: str, shape: tuple[int, ...], dtype: torch.dtype, h: ModelHeader,
                   where: str) -> None:
    """A one-line error unless ``name`` is a tensor of the model ``h`` describes, with this
    shape and dtype (checked before anything is decoded). Old files stored the occupancy as
    uint8."""
    if name not in h.expected:
        raise NerfzipError(f"{where}: tensor {name!r} is not part of a {h.family} model "
                           "with this header")
    want_shape, want_dtype = h.expected[name]
    if tuple(shape) != want_shape:
        raise NerfzipError(f"{where}: tensor {name!r} has shape {list(shape)}, the header "
                           f"implies {list(want_shape)}")
    if dtype != want_dtype and not (name == OCCUPIED and dtype == torch.uint8):
        raise NerfzipError(f"{where}: tensor {name!r} is {str(dtype)[6:]}, the header "
                           f"implies {str(want_dtype)[6:]}")


def check_tensor(name: str, x: Tensor, h: ModelHeader, where: str) -> Tensor:
    """``x`` if it is tensor ``name`` of the model ``h`` describes (shape, dtype, finite
    values; a uint8 occupancy becomes bool), else a one-line error naming it."""
    check_declared(name, tuple(x.shape), x.dtype, h, where)
    if name == OCCUPIED and x.dtype == torch.uint8:
        x = x != 0
    if x.is_floating_point() and not bool(torch.isfinite(x).all()):
        raise NerfzipError(f"{where}: tensor {name!r} holds NaN or infinite values")
    return x


def missing_tensors(h: ModelHeader, names: set[str] | list[str]) -> list[str]:
    """Required tensors that ``names`` lacks, in the model's order."""
    return [k for k in h.expected if k not in names and k not in h.optional]


def build_model(h: ModelHeader, tensors: dict[str, Tensor], where: str,
                partial: bool = False) -> RadianceModel:
    """The model from a validated header and checked tensors. ``partial``: tensors the family
    marks optional may be missing (a stream cut short): they are taken as zeros."""
    missing = missing_tensors(h, tensors.keys()) if partial else [
        k for k in h.expected if k not in tensors and k != DENSITY]
    if missing:
        raise NerfzipError(f"{where}: tensor {missing[0]!r} is missing"
                           + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""))
    field_tensors = {}
    for name, (shape, dtype) in h.expected.items():
        if name.startswith("field."):
            x = tensors.get(name)
            field_tensors[name[6:]] = torch.zeros(shape, dtype=dtype) if x is None else x
    try:
        fld = build_field(h.field, None, f"{where}: field")
        if not torch.equal(field_tensors["aabb"], fld.aabb):
            raise NerfzipError(f"{where}: tensor 'field.aabb' disagrees with the header's "
                               f"field aabb {fld.aabb.tolist()}")
        fld.load_tensors(field_tensors)
    except NerfzipError as e:
        msg = str(e)
        raise NerfzipError(msg if msg.startswith(where) else f"{where}: {msg}") from None
    except BUILD_ERRORS as e:
        raise NerfzipError(f"{where}: the field cannot be built from these tensors "
                           f"({type(e).__name__}: {first_line(e)})") from None
    meta = dict(h.meta)
    meta["pipeline"] = [dict(s) for s in h.pipeline]
    return RadianceModel(fld, h.render, h.space, occupancy_grid(h, tensors), meta)


def occupancy_grid(h: ModelHeader, tensors: dict[str, Tensor]) -> OccupancyGrid | None:
    if h.occupancy is None:
        return None
    grid = OccupancyGrid(torch.tensor(h.occupancy.aabb, dtype=torch.float32),
                         h.occupancy.resolution)
    grid.occupied.copy_(tensors[OCCUPIED])
    if DENSITY in tensors:
        grid.density.copy_(tensors[DENSITY])
    return grid


def model_from(header: Any, tensors: dict[str, Tensor], where: str) -> RadianceModel:
    """Validate a header and its tensors and build the model (the whole of reading)."""
    h = parse_header(header, where)
    checked = {name: check_tensor(name, x, h, where) for name, x in tensors.items()}
    return build_model(h, checked, where)


def first_line(e: BaseException) -> str:
    """The first line of an exception's message (torch's errors carry pages of internals)."""
    lines = str(e).strip().splitlines()
    line = lines[0] if lines else type(e).__name__
    return line if len(line) <= 160 else line[:157] + "..."
