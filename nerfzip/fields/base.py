"""The field interface every radiance field implements, and the registry of field families.

A field separates geometry from appearance (nerfstudio's ``base_field``): ``density(x)`` alone
serves occupancy grids, pruning and baking; ``radiance(x, d)`` gives view-dependent colour.
``named_tensors()`` is the table of parameters that compression passes operate on, and
``config`` (a dataclass) plus those tensors rebuild the field exactly (``build_field``).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import Tensor, nn

from nerfzip.errors import NerfzipError
from nerfzip.utils.schema import coerce, from_dict, short

if TYPE_CHECKING:  # annotations only: fields sit below training and rendering
    from nerfzip.rendering.occupancy import OccupancyGrid
    from nerfzip.training.config import TrainConfig


@dataclass(frozen=True)
class FeatureGrid:
    """How a tensor of feature vectors is laid out over space (``Field.feature_grids``)."""

    axis: int
    """Axis of the feature channels: a vector along it is what VQ clusters and what
    importance-based pruning keeps or drops whole."""
    spatial: bool = True
    """Entries adjacent along the other axes are adjacent in space, so a pruning mask may be
    dilated there (False for hashed tables, whose neighbours are unrelated)."""
    vector_quantize: bool = True
    """Worth a codebook (TensoRF VM lines are too small to gain from one)."""


class LowRankLinear(nn.Module):
    """A linear layer stored as two thinner ones: ``up(down(x))`` with ``down`` [rank, in]
    (no bias) and ``up`` [out, rank] (the original bias)."""

    def __init__(self, in_features: int, out_features: int, rank: int, bias: bool = True):
        super().__init__()
        self.in_features, self.out_features, self.rank = in_features, out_features, rank
        self.down = nn.Linear(in_features, rank, bias=False)
        self.up = nn.Linear(rank, out_features, bias=bias)

    def forward(self, x: Tensor) -> Tensor:
        return self.up(self.down(x))


class Field(nn.Module):
    """A radiance field over a bounded domain ``aabb`` ([2, 3], field space)."""

    family: ClassVar[str]
    config: Any

    def __init__(self, aabb: Tensor):
        super().__init__()
        self.register_buffer("aabb", aabb.detach().clone().float().reshape(2, 3))
        self.low_rank: dict[str, int] = {}
        """Linear layers replaced by ``LowRankLinear`` (module name -> rank)."""

    def factorize_(self, name: str, rank: int) -> LowRankLinear:
        """Replace linear layer ``name`` by an (untrained) ``LowRankLinear`` of ``rank``."""
        parent_name, _, attr = name.rpartition(".")
        parent = self.get_submodule(parent_name) if parent_name else self
        old = parent.get_submodule(attr)
        if not isinstance(old, nn.Linear):
            raise NerfzipError(f"{name} is not a linear layer")
        new = LowRankLinear(old.in_features, old.out_features, rank, old.bias is not None)
        new.to(old.weight.device)
        setattr(parent, attr, new)
        self.low_rank[name] = rank
        return new

    def density(self, x: Tensor) -> Tensor:
        """Volume density sigma >= 0 at points ``x`` [N, 3] -> [N]."""
        raise NotImplementedError

    def radiance(self, x: Tensor, d: Tensor) -> Tensor:
        """Colour in [0, 1] at points ``x`` [N, 3] seen along unit directions ``d`` -> [N, 3]."""
        raise NotImplementedError

    def forward(self, x: Tensor, d: Tensor) -> tuple[Tensor, Tensor]:
        """Density and colour together (fields that share a trunk override this)."""
        return self.density(x), self.radiance(x, d)

    def normalize(self, x: Tensor) -> Tensor:
        """Points mapped from the aabb to [-1, 1]^3."""
        lo, hi = self.aabb[0], self.aabb[1]
        return (x - lo) / (hi - lo) * 2.0 - 1.0

    def named_tensors(self) -> dict[str, Tensor]:
        """Every tensor needed to rebuild the field, by stable name (its state dict)."""
        return {k: v for k, v in self.state_dict().items()}

    @classmethod
    def blank(cls, config: Any, aabb: Tensor) -> Field:
        """A field of ``config`` whose tensors are about to be loaded (a file being read): its
        initial values are never used, so a family may skip drawing them (by default, the
        constructor's)."""
        return cls(config, aabb)  # type: ignore[call-arg]

    def tensor_layers(self) -> dict[str, int]:
        """Progressive files: the refinement layer (1, 2, ...) of the tensors of
        ``named_tensors`` that are not in the base layer; the .nrz writer puts each layer's
        sections after the previous layer's. Empty by default: one layer."""
        return {}

    def optional_tensors(self) -> frozenset[str]:
        """Names in ``named_tensors`` the field renders without, taken as zeros when absent
        (refinement layers of a progressive stream: a reader may build the field from the
        sections received so far). None by default: every tensor is needed."""
        return frozenset()

    def config_dict(self) -> dict[str, Any]:
        """The JSON-able configuration that, with ``named_tensors``, rebuilds the field."""
        out = {"family": self.family, "config": dataclasses.asdict(self.config),
               "aabb": self.aabb.tolist()}
        if self.low_rank:
            out["low_rank"] = dict(self.low_rank)
        return out

    def param_groups(self) -> dict[str, list[nn.Parameter]]:
        """Parameters by learning-rate group: ``"grid"`` (feature grids and tables, trained at
        a high rate) and ``"net"`` (networks). Trainer, fine-tuning and distillation all ask
        the field; a family without grids has only ``"net"``."""
        return {"net": list(self.parameters())}

    def optimizer_groups(self, lr: dict[str, float]) -> list[dict[str, Any]]:
        """Adam parameter groups from ``param_groups`` with the learning rate of each group
        (``lr["grid"]``, ``lr["net"]``; a missing group rate falls back to ``lr["net"]``) and
        the family's own ``optimizer_options``: the one place trainer, fine-tuning and
        distillation build their optimiser groups. Each group carries its ``name``."""
        options = self.optimizer_options()
        return [{"params": params, "name": name, "lr": lr.get(name, lr["net"]),
                 **options.get(name, {})}
                for name, params in self.param_groups().items() if params]

    @classmethod
    def finetune_rates(cls) -> dict[str, float]:
        """Adam learning rates of fine-tuning (``finetune`` and the passes built on it) unless
        the pipeline sets them, by ``param_groups`` group. A trained field sits near a
        minimum, so these are a tenth or less of the training rates."""
        return {"grid": 2e-3, "net": 1e-4}

    # --- training hooks: what the trainer asks of a family ----------------------------------
    @classmethod
    def training_defaults(cls, family: str, scene_format: str, cfg: TrainConfig) -> TrainConfig:
        """The family's changes to the training defaults of ``scene_format`` (``cfg``, which
        already holds the format's defaults): learning rates, batch size, schedule."""
        return cfg

    @classmethod
    def initial_config(cls, family: str, cfg: TrainConfig, aabb: Tensor) -> Any:
        """The family's config for a new training run over ``aabb`` [2, 3], before
        ``cfg.field_options`` are applied."""
        return cls.config_cls()  # type: ignore[attr-defined]

    @classmethod
    def for_training(cls, family: str, cfg: TrainConfig, aabb: Tensor) -> Field:
        """A new field for a training run: ``initial_config`` with ``cfg.field_options`` on top
        (checked by the config's schema, unknown keys refused), seeded by ``cfg.seed``."""
        config = cls.initial_config(family, cfg, aabb)
        if cfg.field_options:
            values = dataclasses.asdict(config) | dict(cfg.field_options)
            config = from_dict(type(config), values, f"{family} field options", strict=True)
        return cls(config, aabb, seed=cfg.seed)  # type: ignore[call-arg]

    def render_settings(self, cfg: TrainConfig, step: int | None = None) -> dict[str, Any]:
        """Keyword arguments of the ``RenderConfig`` the field trains with from ``step`` on
        (None: after training) and is saved with (a dict, so that fields need not import the
        renderer). Default: NeRF's hierarchical sampling, which needs nothing from the field
        but density and colour."""
        return {"sampler": "hierarchical", "n_coarse": cfg.n_coarse, "n_fine": cfg.n_fine}

    def wants_occupancy(self) -> bool:
        """Whether training keeps an occupancy grid for the field (the occupancy sampler)."""
        return False

    def optimizer_options(self) -> dict[str, dict[str, Any]]:
        """Extra Adam settings per parameter group, e.g. ``{"grid": {"eps": 1e-15}}``."""
        return {}

    def regularization(self, cfg: TrainConfig, step: int) -> Tensor:
        """The field's own regulariser at training ``step``, weighted from ``cfg`` (a 0-dim
        tensor; 0 when the family has none)."""
        return torch.zeros((), device=self.aabb.device)

    def schedule(self, cfg: TrainConfig, step: int, occupancy: OccupancyGrid | None,
                 step_size: float) -> bool:
        """Structural changes due at ``step`` (grids grown, cropped ...), made in place.
        Returns True when the parameters were replaced: the trainer then rebuilds the
        optimizer and asks ``render_settings`` again."""
        return False

    # --- analysis hooks: what importance, pruning, VQ, baking and distillation ask -----------
    def feature_grids(self) -> dict[str, FeatureGrid]:
        """The tensors of ``named_tensors`` that hold feature vectors over space, by name
        (empty for fields without grids)."""
        return {}

    def read_grid(self, name: str, grid: Tensor, x: Tensor) -> Tensor:
        """Interpolate ``grid``, shaped like feature grid ``name`` with its feature axis of
        length 1, at points ``x`` [N, 3] (field space) exactly as the field reads ``name``:
        -> [N]. Linear in ``grid``, which is what ``importance`` relies on."""
        raise NerfzipError(f"{self.family} has no feature grid {name!r}")

    def importance(self, points: Tensor, weights: Tensor) -> dict[str, Tensor]:
        """VQRF's importance: the weights [N] of points [N, 3] splatted onto every feature
        grid with the coefficients interpolation reads it with, ``I_e = sum_i w_i c_ie``
        (Li et al., CVPR 2023, eq. 5). One map per grid, shaped like the grid with its feature
        axis of length 1. The splat is the adjoint of ``read_grid``: the gradient of
        ``sum_i w_i read(Z)(x_i)`` with respect to an all-zero ``Z``, so autograd computes it
        on any device for any family that implements ``read_grid``."""
        out: dict[str, Tensor] = {}
        with torch.enable_grad():
            for name, spec in self.feature_grids().items():
                shape = list(self.get_parameter(name).shape)
                shape[spec.axis] = 1
                z = torch.zeros(shape, device=points.device, requires_grad=True)
                vals = self.read_grid(name, z, points.detach())
                (out[name],) = torch.autograd.grad((vals * weights.detach()).sum(), z)
        return out

    def grid_shape(self) -> tuple[int, int, int] | None:
        """Vertices along x, y, z of the field's finest lattice (None without a grid): where
        occupancy-based importance samples and what a baked or distilled grid can match."""
        return None

    def grid_voxels(self) -> int | None:
        """Vertices of the finest lattice in all (``prod(grid_shape())``), or None."""
        shape = self.grid_shape()
        return None if shape is None else math.prod(shape)

    def num_parameters(self) -> int:
        return sum(v.numel() for v in self.named_tensors().values())

    def load_tensors(self, tensors: dict[str, Tensor]) -> None:
        """Load a tensor table, resizing tensors whose shape changed (grids grow in training)."""
        own = dict(self.named_parameters())
        own.update(dict(self.named_buffers()))
        missing = set(own) - set(tensors)
        if missing:
            raise NerfzipError(f"field tensors missing: {', '.join(sorted(missing))}")
        for name, value in tensors.items():
            if name not in own:
                raise NerfzipError(f"unexpected field tensor {name!r}")
            target = own[name]
            if target.shape != value.shape:
                target.data = torch.empty(value.shape, dtype=target.dtype, device=target.device)
            target.data.copy_(value)


def schedule_step(fraction: float, iters: int) -> int:
    """The step at ``fraction`` of ``iters`` training steps (-1 for a negative fraction:
    never)."""
    return int(round(fraction * iters)) if fraction >= 0 else -1


def log_resolution_schedule(n_start: int, n_end: int, steps: int) -> list[int]:
    """Voxel counts growing log-linearly from ``n_start`` to ``n_end`` in ``steps`` steps."""
    return [int(round(math.exp(math.log(n_start) + (math.log(n_end) - math.log(n_start))
                               * (i + 1) / steps))) for i in range(steps)]


def upsample_steps(cfg: TrainConfig) -> dict[int, int]:
    """The coarse-to-fine schedule: training step -> voxels from then on (TensoRF's grid
    growth at ``upsample_at``, log-linear from ``n_voxels_init`` to ``n_voxels_final``)."""
    voxels = log_resolution_schedule(cfg.n_voxels_init, cfg.n_voxels_final,
                                     len(cfg.upsample_at))
    return {schedule_step(f, cfg.iters): n for f, n in zip(cfg.upsample_at, voxels)}


def voxels_at(cfg: TrainConfig, step: int | None) -> int:
    """Voxels of the coarse-to-fine schedule at ``step`` (None: after training)."""
    if step is None:
        return cfg.n_voxels_final if cfg.upsample_at else cfg.n_voxels_init
    due = [n for s, n in upsample_steps(cfg).items() if 0 <= s <= step]
    return due[-1] if due else cfg.n_voxels_init


def march_step(aabb: Tensor, cfg: TrainConfig, step: int | None = None) -> float:
    """Occupancy-marching step of fields without a voxel grid of their own: ``step_ratio`` of
    the edge of a cubic voxel of the coarse-to-fine grid at ``step`` (``voxels_at``), so they
    take the samples per ray a TensoRF takes at that point of training (few while the field
    is young, where most samples are wasted, the same budget in the end)."""
    volume = float((aabb[1] - aabb[0]).prod())
    return (volume / voxels_at(cfg, step)) ** (1.0 / 3.0) * cfg.step_ratio


FIELD_REGISTRY: dict[str, Callable[..., Field]] = {}
FAMILY_IDS: dict[str, int] = {}
"""Stable id of each field family in the .nrz preamble: never renumber, only add."""


def register_field(name: str, file_id: int) -> Callable[[type[Field]], type[Field]]:
    """Class decorator: register a field family under a stable name and a stable .nrz id."""

    def deco(cls: type[Field]) -> type[Field]:
        taken = {v: k for k, v in FAMILY_IDS.items()}
        if taken.get(file_id, name) != name:
            raise ValueError(f"field family id {file_id} of {name!r} is taken by "
                             f"{taken[file_id]!r}")
        # A class serving several families (TensoRF VM / CP) reports its own via a property.
        if not isinstance(cls.__dict__.get("family"), property):
            cls.family = name
        FIELD_REGISTRY[name] = cls
        FAMILY_IDS[name] = file_id
        return cls

    return deco


def family_ids() -> dict[str, int]:
    """Every registered family's .nrz id (the families register on first use)."""
    import nerfzip.fields  # noqa: F401  (registers the families)

    return dict(FAMILY_IDS)


def config_class(family: str) -> type:
    """The config dataclass of a field family."""
    return field_class(family).config_cls  # type: ignore[attr-defined]


def field_class(family: str) -> type[Field]:
    import nerfzip.fields  # noqa: F401  (registers the families)

    if family not in FIELD_REGISTRY:
        raise NerfzipError(f"unknown field family {family!r} "
                           f"(known: {', '.join(sorted(FIELD_REGISTRY))})")
    return FIELD_REGISTRY[family]  # type: ignore[return-value]


MAX_COORD = 1e6
"""Largest box coordinate a file may give (beyond it, box widths overflow float32 maths)."""
MAX_RANK = 1 << 16


def aabb_from(value: Any, where: str) -> Tensor:
    """A box [[x0, y0, z0], [x1, y1, z1]] from untrusted JSON: finite coordinates within
    +-``MAX_COORD``, each min below its max; one-line error naming ``where`` otherwise."""
    try:
        box = coerce(value, tuple[tuple[float, float, float], tuple[float, float, float]],
                     "aabb", where)
    except NerfzipError:
        raise NerfzipError(f"{where} must be [[x0, y0, z0], [x1, y1, z1]] (finite numbers), "
                           f"got {short(value)}") from None
    if any(abs(c) > MAX_COORD for corner in box for c in corner):
        raise NerfzipError(f"{where}: coordinates must lie within +-{MAX_COORD:g}")
    if any(lo >= hi for lo, hi in zip(*box)):
        raise NerfzipError(f"{where}: each minimum must be below its maximum, got {list(box)}")
    return torch.tensor(box, dtype=torch.float32)


@dataclasses.dataclass
class FieldSpec:
    """A field's ``config_dict()`` with every value checked, before anything is built."""

    cls: type[Field]
    family: str
    config: Any
    aabb: Tensor
    low_rank: dict[str, int]


def check_field_config(config: Any, where: str = "field") -> FieldSpec:
    """Check ``config_dict()`` output from a file (family, the family's config dataclass, aabb,
    low-rank layers) without building anything; a bad value is a one-line ``NerfzipError``
    naming ``where`` and the key."""
    if not isinstance(config, dict):
        raise NerfzipError(f"{where}: expected an object with family, config and aabb")
    family = config.get("family")
    if not isinstance(family, str):
        raise NerfzipError(f"{where}: family must be a string, got {short(family)}")
    try:
        cls = field_class(family)
    except NerfzipError as e:
        raise NerfzipError(f"{where}: {e}") from None
    cfg = from_dict(cls.config_cls, config.get("config", {}),  # type: ignore[attr-defined]
                    f"{where}: config")
    low_rank = coerce(config.get("low_rank") or {}, dict[str, int], "low_rank", where)
    for name, rank in low_rank.items():
        if not 1 <= rank <= MAX_RANK or len(name) > 256:
            raise NerfzipError(f"{where}: low_rank.{name[:40]} must be a rank in "
                               f"[1, {MAX_RANK}], got {rank}")
    return FieldSpec(cls, family, cfg, aabb_from(config.get("aabb"), f"{where}: aabb"),
                     low_rank)


def build_field(config: dict[str, Any], tensors: dict[str, Tensor] | None = None,
                where: str = "field", blank: bool = False) -> Field:
    """Rebuild a field from ``config_dict()`` output and, optionally, its tensors, every value
    checked first (``check_field_config``). ``blank``: the caller loads every tensor next
    (``Field.blank``: no initial values drawn)."""
    spec = check_field_config(config, where)
    field = spec.cls.blank(spec.config, spec.aabb) if blank else \
        spec.cls(spec.config, spec.aabb)  # type: ignore[call-arg]
    if field.family != spec.family:
        raise NerfzipError(f"{where}: family {spec.family!r} disagrees with its config "
                           f"(which describes {field.family!r})")
    for name, rank in spec.low_rank.items():
        try:
            field.factorize_(name, rank)
        except AttributeError:
            raise NerfzipError(f"{where}: low-rank layer {name!r} does not exist in "
                               f"{spec.family}") from None
        except NerfzipError as e:
            raise NerfzipError(f"{where}: low_rank: {e}") from None
    if tensors is not None:
        field.load_tensors(tensors)
    return field
