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
ranges, ``utils.schema``) before anything is built; the field is then built under an
allocation limit proportional to the tensors the file delivered, and each tensor's name,
shape, dtype and finiteness are checked against it before it is loaded: a hostile header can
neither allocate without bound nor reach a constructor with a value it would choke on.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import Tensor
from torch.overrides import TorchFunctionMode

from nerfzip.codec import ladder
from nerfzip.errors import NerfzipError
from nerfzip.fields.base import Field, FieldSpec, aabb_from, build_field, check_field_config
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
    """A validated header (nothing built yet)."""

    field: dict[str, Any]
    spec: FieldSpec
    render: RenderConfig
    space: SceneSpace
    occupancy: OccupancyHeader | None
    pipeline: list[dict[str, Any]]
    meta: dict[str, Any]

    @property
    def family(self) -> str:
        return self.spec.family

    def occupancy_tensors(self) -> dict[str, tuple[tuple[int, ...], torch.dtype]]:
        """The occupancy grid's tensors (shape, dtype), known from the header alone."""
        if self.occupancy is None:
            return {}
        cells = (self.occupancy.resolution,) * 3
        return {OCCUPIED: (cells, torch.bool), DENSITY: (cells, torch.float32)}


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
    spec = check_field_config(header["field"], f"{where}: field")
    render = from_dict(RenderConfig, header["render"], f"{where}: render")
    space = from_dict(SceneSpace, header["space"], f"{where}: space")
    occupancy = None
    if header.get("occupancy") is not None:
        occupancy = from_dict(OccupancyHeader, header["occupancy"], f"{where}: occupancy")
        occupancy.aabb = aabb_from(occupancy.aabb, f"{where}: occupancy: aabb").tolist()
    pipeline = pipeline_record(header.get("pipeline", []), where)
    meta = coerce(header.get("meta", {}), dict[str, Any], "meta", where)
    return ModelHeader(header["field"], spec, render, space, occupancy, pipeline, meta)


def pipeline_record(value: Any, where: str) -> list[dict[str, Any]]:
    """The compression record, each entry checked as a ``PipelineStep`` (kept as written)."""
    steps = coerce(value, list[Any], "pipeline", where)
    for i, step in enumerate(steps):
        from_dict(PipelineStep, step, f"{where}: pipeline[{i}]")
    return [dict(s) for s in steps]


def check_declared(name: str, shape: tuple[int, ...], dtype: torch.dtype, h: ModelHeader,
                   where: str) -> None:
    """A one-line error unless ``name`` can be a tensor of the model ``h`` describes: a field
    tensor (its shape is checked when the field is built), or an occupancy tensor of the
    header's resolution. Old files stored the occupancy as uint8."""
    if name.startswith("field.") and len(name) > 6:
        return
    occ = h.occupancy_tensors()
    if name not in occ:
        raise NerfzipError(f"{where}: tensor {name!r} is not part of a {h.family} model "
                           "with this header")
    want_shape, want_dtype = occ[name]
    if tuple(shape) != want_shape:
        raise NerfzipError(f"{where}: tensor {name!r} has shape {list(shape)}, the header "
                           f"implies {list(want_shape)}")
    if dtype != want_dtype and not (name == OCCUPIED and dtype == torch.uint8):
        raise NerfzipError(f"{where}: tensor {name!r} is {str(dtype)[6:]}, the header "
                           f"implies {str(want_dtype)[6:]}")


def check_tensor(name: str, x: Tensor, h: ModelHeader, where: str) -> Tensor:
    """``x`` if it can be tensor ``name`` of the model ``h`` describes and holds only finite
    values (a uint8 occupancy becomes bool), else a one-line error naming it."""
    check_declared(name, tuple(x.shape), x.dtype, h, where)
    if name == OCCUPIED and x.dtype == torch.uint8:
        x = x != 0
    if x.is_floating_point() and not bool(torch.isfinite(x).all()):
        raise NerfzipError(f"{where}: tensor {name!r} holds NaN or infinite values")
    return x


def build_model(h: ModelHeader, tensors: dict[str, Tensor], where: str,
                partial: bool = False, limit: int | None = None) -> RadianceModel:
    """The model from a validated header and checked tensors.

    The field is built under an allocation limit (``AllocationLimit``): by default twice the
    elements the file delivered plus ``ALLOCATION_SLACK``, so a header cannot make a small file
    allocate a huge field. Then every field tensor must match the built field's name, shape
    and dtype. ``partial``: tensors the family marks optional (``Field.optional_tensors``) may
    be missing (a stream cut short) and are taken as zeros; give ``limit`` then. Refinement
    sections of a precision ladder (``name~k``, ``codec/ladder.py``) are added to their
    tensors first."""
    tensors = ladder.fold(tensors, where)
    occ = h.occupancy_tensors()
    if OCCUPIED in occ and OCCUPIED not in tensors:
        raise NerfzipError(f"{where}: tensor {OCCUPIED!r} is missing")
    given = {k[6:]: v for k, v in tensors.items() if k.startswith("field.")}
    if limit is None:
        limit = 2 * sum(v.numel() for v in given.values()) + ALLOCATION_SLACK
    fld = build_limited(h, where, limit)
    expected = fld.named_tensors()
    unknown = sorted(set(given) - set(expected))
    if unknown:
        raise NerfzipError(f"{where}: tensor 'field.{unknown[0]}' is not part of this "
                           f"{h.family} field")
    optional = fld.optional_tensors() if partial else frozenset()
    loaded = {}
    for name, ref in expected.items():
        x = given.get(name)
        if x is None:
            if name not in optional:
                raise NerfzipError(f"{where}: tensor 'field.{name}' is missing")
            x = torch.zeros_like(ref)
        if x.shape != ref.shape or x.dtype != ref.dtype:
            raise NerfzipError(f"{where}: tensor 'field.{name}' is {str(x.dtype)[6:]} "
                               f"{list(x.shape)}, the header's field has "
                               f"{str(ref.dtype)[6:]} {list(ref.shape)}")
        loaded[name] = x
    if not torch.equal(loaded["aabb"], fld.aabb):
        raise NerfzipError(f"{where}: tensor 'field.aabb' disagrees with the header's field "
                           f"aabb {fld.aabb.tolist()}")
    try:
        fld.load_tensors(loaded)
    except NerfzipError as e:
        raise NerfzipError(f"{where}: {e}") from None
    meta = dict(h.meta)
    meta["pipeline"] = [dict(s) for s in h.pipeline]
    return RadianceModel(fld, h.render, h.space, occupancy_grid(h, tensors), meta)


def build_limited(h: ModelHeader, where: str, limit: int) -> Field:
    """The header's field, freshly built, allocating at most ``limit`` elements."""
    try:
        with AllocationLimit(limit, f"{where}: field"):
            return build_field(h.field, None, f"{where}: field", blank=True)
    except NerfzipError:
        raise
    except BUILD_ERRORS as e:
        raise NerfzipError(f"{where}: field: the config does not describe a buildable field "
                           f"({type(e).__name__}: {first_line(e)})") from None


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


# --- bounded construction --------------------------------------------------------------------
ALLOCATION_SLACK = 1 << 24
"""Elements a field may allocate beyond twice its stored tensors: buffers it computes, and the
dense layers a low-rank file's field builds before ``factorize_`` replaces them (an imported
nerf-pytorch MLP: about 10^6)."""
SIZED = {torch.empty, torch.zeros, torch.ones, torch.rand, torch.randn, torch.full,
         torch.randint, torch.empty_strided, Tensor.new_empty, Tensor.new_zeros,
         Tensor.new_ones, Tensor.new_full}
WATCHED = SIZED | {torch.arange, torch.linspace, torch.logspace, torch.eye}


class AllocationLimit(TorchFunctionMode):
    """Counts the elements that factory functions are asked for and refuses, before they
    allocate, once the total passes ``limit``: a field built from an untrusted config cannot
    exhaust memory. (Building on the ``meta`` device would learn the shapes without this, but
    its first use costs seconds of torch start-up on every load.)"""

    def __init__(self, limit: int, where: str):
        super().__init__()
        self.left, self.where = limit, where

    def __torch_function__(self, func, types, args=(), kwargs=None):  # noqa: ANN001
        kwargs = kwargs or {}
        if func in WATCHED:  # every tensor method passes here: keep the common path short
            n = requested_elements(func, args, kwargs)
            if n > self.left:
                raise NerfzipError(f"{self.where}: the config asks for more values than the "
                                   "file holds (refused before allocating)")
            self.left -= n
        return func(*args, **kwargs)


def requested_elements(func: Any, args: tuple, kwargs: dict) -> int:
    """Elements a call of a factory function allocates (0 for anything else)."""
    if func is torch.arange:
        nums = [a for a in args if isinstance(a, (int, float))]
        start, end, step = (0, nums[0], 1) if len(nums) == 1 else (nums + [1])[:3] \
            if len(nums) >= 2 else (0, 0, 1)
        return max(0, math.ceil((end - start) / step)) if step else 0
    if func in (torch.linspace, torch.logspace):
        steps = kwargs.get("steps", args[2] if len(args) > 2 else 0)
        return steps if isinstance(steps, int) else 0
    if func is torch.eye:
        n = [a for a in args if isinstance(a, int)][:2]
        return n[0] * (n[-1] if len(n) > 1 else n[0]) if n else 0
    if func not in SIZED:
        return 0
    size = kwargs.get("size")
    if size is None:
        rest = args[1:] if func in (Tensor.new_empty, Tensor.new_zeros, Tensor.new_ones,
                                    Tensor.new_full) else args
        size = next((a for a in rest if isinstance(a, (tuple, list, torch.Size))), None)
        if size is None:
            size = [a for a in rest if isinstance(a, int) and not isinstance(a, bool)]
            if func in (torch.full, torch.randint):
                size = []  # their ints are values, not sizes
    dims = [d for d in size if isinstance(d, int)] if isinstance(size, (tuple, list,
                                                                       torch.Size)) else []
    return math.prod(max(0, d) for d in dims) if dims else 0


def first_line(e: BaseException) -> str:
    """The first line of an exception's message (torch's errors carry pages of internals)."""
    lines = str(e).strip().splitlines()
    line = lines[0] if lines else type(e).__name__
    return line if len(line) <= 160 else line[:157] + "..."
