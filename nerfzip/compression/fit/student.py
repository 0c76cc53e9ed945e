"""Distillation's training loop (the ``distill`` pass is ``passes/distill.py``): a new field of
any family and size (the student) trained to reproduce a trained model (the teacher), e.g.
TensoRF-VM -> a small MLP NeRF, or an imported nerf-pytorch MLP -> TensoRF-CP.

The student lives in the teacher's box and renders with the teacher's occupancy grid and render
settings, so both skip the same empty space. An MLP student therefore needs no coarse network:
NeRF's coarse pass only finds where the density is, which the grid already says; dropping it
halves the student's parameters and its training cost. A teacher without a usable grid (an
imported nerf-pytorch model samples hierarchically) gets one built from its density.

Each step mixes two kinds of supervision (as in KiloNeRF's distillation, Reiser et al. 2021,
with a rendering term added):

- **rendered rays**: the teacher renders random rays of random novel views (poses between
  neighbouring training cameras, ``nerfzip.data.novel_views``) without gradients; the student
  renders the same rays and matches the colours (MSE);
- **points**: positions uniform in the occupied cells (and a few anywhere in the box, so the
  student learns emptiness too), where the student matches the teacher's density as the log of
  the optical depth of one render step, ``log(min(sigma * step, 10) + 0.01)``: relative errors
  count alike from a faint haze (1% opacity per step, where a plain ``log1p`` would give faint
  densities almost no gradient, yet tens of such samples cloud a ray) to an opaque surface, and
  past opacity 1 - e^-10 nothing is compared (densities inside solids never show); and its
  colour along camera-like directions, weighted by the teacher's opacity of one step (the
  colour of empty space is never seen).

On the CPU a point costs one field query, a rendered ray tens of them (every sample's density,
then colour where visible, all back-propagated): 8192 points cost about as much as 200 rays of
an untrained student, so the budget goes mostly to points, and rays tie the result to images.
Points also teach fastest: distilling the small teacher of tests/test_distill.py for 150
steps, a student reached 22 dB without points and 27 dB with 2048 per step, while 64 rather
than 16 rays per step added 0.5 dB.
Optionally the real training pixels join with a small weight (``gt_weight``).
The same loop (``train_student``) refits MLPs after structured pruning, the unpruned
network as teacher (``neurons.refit``).
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field, replace

import torch
import torch.nn.functional as F
from torch import Tensor

from nerfzip.data.novel_views import novel_rays
from nerfzip.data.scene import Scene
from nerfzip.errors import NerfzipError
from nerfzip.fields.base import Field
from nerfzip.fields.mlp_nerf import MLPNeRF, sized_config
from nerfzip.fields.tensorf import TensoRF, default_config, grid_resolution
from nerfzip.rendering.model import RadianceModel
from nerfzip.rendering.occupancy import OccupancyGrid
from nerfzip.rendering.renderer import RenderConfig, render_rays, render_view_rays
from nerfzip.training.config import TrainConfig
from nerfzip.utils.progress import progress_bar
from nerfzip.utils.schema import check, limits

STUDENT_FAMILIES = ("mlp-nerf", "tensorf-vm", "tensorf-cp")
MLP_WIDTH, MLP_DEPTH = 128, 6
"""Default MLP student: 126k parameters (0.5 MB as float32)."""
BOX_SHARE = 0.125
"""Share of the point batch drawn anywhere in the box rather than in occupied cells."""
BUILT_GRID_RESOLUTION = 128
"""Cells per axis of a grid built from the teacher's density."""
BUILT_STEP_CELLS = 4
"""A built grid's render step is its cell size divided by this."""
TAU_EPS, TAU_MAX = 0.01, 10.0
"""Optical depths per step compared by the density loss: relative to a 1% opacity, up to
opacity 1 - e^-10 (beyond it, ray marching has stopped)."""
REPORT_NAMES = {"render": "render_mse", "coarse": "coarse_mse", "density": "density_loss",
                "colour": "colour_loss", "gt": "gt_mse", "psnr": "train_psnr"}
HELDOUT_RAYS = (512, 4096)
"""Held-out novel rays: eight batches' worth, within these bounds."""
HELDOUT_SEED = 1_000_003
"""Held-out novel rays are drawn from their own generator (seed + this), apart from training."""


@dataclass
class DistillConfig:
    """What to distil into, and how."""

    family: str = field(default="mlp-nerf", metadata=limits(choices=STUDENT_FAMILIES))
    """Student family: mlp-nerf, tensorf-vm or tensorf-cp."""
    steps: int = field(default=2000, metadata=limits(1))
    """Optimisation steps."""
    batch_size: int = field(default=128, metadata=limits(1))
    """Novel-view rays rendered by teacher and student per step."""
    points: int = field(default=8192, metadata=limits(0))
    """Point-wise density / colour targets per step (0: rays only)."""
    lr: float = field(default=5e-3, metadata=limits(0.0, lo_open=True))
    """Learning rate of networks (decays exponentially to a tenth); TensoRF grids use 0.02."""
    width: int = field(default=0, metadata=limits(0))
    """MLP trunk width (default 128), or TensoRF colour-decoder width (default 64)."""
    depth: int = field(default=0, metadata=limits(0))
    """MLP trunk layers (default 6); MLP students only."""
    components: int = field(default=0, metadata=limits(0))
    """TensoRF density components per mode (VM, default 16) or in all (CP, default 96);
    appearance gets 1.5x (VM) or 2x (CP), as ``default_config``. TensoRF students only."""
    voxels: int = field(default=0, metadata=limits(0))
    """TensoRF grid voxels (default: the teacher's finest lattice, else 300^3)."""
    step_scale: float = field(default=1.0, metadata=limits(0.0, lo_open=True))
    """Student render step as a multiple of the teacher's (an MLP costs more per sample than a
    grid: 2 halves its render and training cost)."""
    density_weight: float = field(default=0.1, metadata=limits(0.0))
    """Weight of the point-wise density loss (MSE of log optical depth per step)."""
    colour_weight: float = field(default=1.0, metadata=limits(0.0))
    """Weight of the point-wise colour loss (opacity-weighted MSE)."""
    gt_weight: float = field(default=0.0, metadata=limits(0.0))
    """Weight of the loss on real training pixels (batch_size / 4 more rays per step)."""
    seed: int = 0
    """Seed of the student's initialisation and of every random draw."""

    def check(self) -> None:
        """One-line errors for arguments that cannot work (types and ranges, then the
        arguments that size the other family)."""
        check(self, "distill")
        mlp = self.family == "mlp-nerf"
        if mlp and (self.components or self.voxels):
            raise NerfzipError("distill: components and voxels size TensoRF students, not "
                               "mlp-nerf (use width and depth)")
        if not mlp and self.depth:
            raise NerfzipError(f"distill: depth sizes mlp-nerf students, not {self.family} "
                               "(use components, voxels and width)")


# --- the student --------------------------------------------------------------------------
def student_field(cfg: DistillConfig, teacher: Field) -> Field:
    """A new field of ``cfg.family`` over the teacher's box."""
    aabb = teacher.aabb.detach().cpu()
    if cfg.family == "mlp-nerf":
        return MLPNeRF(sized_config(cfg.width or MLP_WIDTH, cfg.depth or MLP_DEPTH,
                                    hierarchical=False),
                       aabb, seed=cfg.seed)
    base = default_config(cfg.family)
    density = cfg.components or base.density_components
    appearance = max(1, round(density * base.appearance_components / base.density_components))
    voxels = cfg.voxels or teacher.grid_voxels() or TrainConfig().n_voxels_final
    fcfg = default_config(cfg.family, resolution=grid_resolution(aabb, voxels),
                          density_components=density, appearance_components=appearance,
                          decoder_hidden=cfg.width or base.decoder_hidden)
    return TensoRF(fcfg, aabb, seed=cfg.seed)


def density_grid(teacher: RadianceModel, step_scale: float, generator: torch.Generator
                 ) -> tuple[OccupancyGrid, float]:
    """A grid built from the teacher's density (the max of two jittered samples per cell) and
    the render step that goes with it."""
    grid = OccupancyGrid(teacher.field.aabb, BUILT_GRID_RESOLUTION).to(teacher.field.aabb.device)
    step = float(grid.cell_size().min()) / BUILT_STEP_CELLS * step_scale
    for _ in range(2):
        grid.update(teacher.field.density, step, TrainConfig().occupancy_threshold, decay=1.0,
                    generator=generator)
    return grid, step


def student_sampling(teacher: RadianceModel, step_scale: float, generator: torch.Generator
                     ) -> tuple[RenderConfig, OccupancyGrid, bool]:
    """The student's render settings and occupancy grid: the teacher's when it marches through
    a grid with empty cells, else a grid built from the teacher's density. Also whether the
    grid was built."""
    occ = teacher.occupancy
    if teacher.render.sampler == "occupancy" and occ is not None and not bool(occ.occupied.all()):
        return (replace(teacher.render, step_size=teacher.render.step_size * step_scale),
                copy.deepcopy(occ), False)
    grid, step = density_grid(teacher, step_scale, generator)
    base = teacher.render if teacher.render.sampler == "occupancy" else RenderConfig()
    return replace(base, sampler="occupancy", step_size=step), grid, True


def build_student(teacher: RadianceModel, cfg: DistillConfig) -> tuple[RadianceModel, bool]:
    """An untrained student model (field, sampling, the teacher's scene space) on the teacher's
    device, and whether its occupancy grid was built rather than copied."""
    gen = torch.Generator().manual_seed(cfg.seed)
    render, grid, built = student_sampling(teacher, cfg.step_scale, gen)
    # The teacher's notes (training run, import) describe the teacher: kept apart, so that
    # nothing mistakes them for the student's own settings.
    meta = {"teacher": {k: copy.deepcopy(v) for k, v in teacher.meta.items()
                        if k not in ("pipeline", "decode")}}
    model = RadianceModel(student_field(cfg, teacher.field), render,
                          copy.deepcopy(teacher.space), grid, meta)
    return model.to(teacher.field.aabb.device), built


def trainable_parameters(field: Field) -> int:
    return sum(p.numel() for p in field.parameters())


# --- targets and losses -------------------------------------------------------------------
class OccupiedPoints:
    """Uniform random points in the occupied cells of a grid, clipped to the field's box
    ([M, 3] corners ``lo`` and sizes of the M clipped cells), plus a share anywhere in it;
    ``step`` is the render step at which their density is compared (``log_depth``)."""

    def __init__(self, grid: OccupancyGrid, aabb: Tensor, step: float):
        self.step = step
        cell = grid.cell_size()
        ijk = grid.occupied.nonzero().to(cell.dtype)
        lo = torch.maximum(grid.aabb[0] + ijk * cell, aabb[0])
        hi = torch.minimum(grid.aabb[0] + (ijk + 1) * cell, aabb[1])
        keep = (hi > lo).all(dim=-1)
        self.lo, self.size, self.aabb = lo[keep], (hi - lo)[keep], aabb

    def sample(self, n: int, generator: torch.Generator) -> Tensor:
        """``n`` points [n, 3]."""
        n_box = n if len(self.lo) == 0 else int(round(n * BOX_SHARE))
        cells = torch.randint(0, max(1, len(self.lo)), (n - n_box,), generator=generator)
        u = torch.rand(n, 3, generator=generator).to(self.aabb.device)
        cells = cells.to(self.aabb.device)
        inside = self.lo[cells] + u[n_box:] * self.size[cells]
        anywhere = self.aabb[0] + u[:n_box] * (self.aabb[1] - self.aabb[0])
        return torch.cat([anywhere, inside])


def log_depth(sigma: Tensor, step: float) -> Tensor:
    """``log(min(sigma step, TAU_MAX) + TAU_EPS)``: where the density loss compares fields."""
    return torch.log((sigma * step).clamp(max=TAU_MAX) + TAU_EPS)


def point_losses(student: Field, teacher: Field, x: Tensor, d: Tensor, step: float
                 ) -> tuple[Tensor, Tensor]:
    """Density loss ``mean (log_depth(sigma_s) - log_depth(sigma_t))^2`` and colour loss
    ``sum_i a_i |c_s - c_t|^2 / (3 sum_i a_i)`` with the teacher's one-step opacity
    ``a = 1 - exp(-sigma_t step)``, at points x [N, 3] seen along d [N, 3]."""
    with torch.no_grad():
        sigma_t, rgb_t = teacher(x, d)
        opacity = -torch.expm1(-sigma_t * step)
    sigma_s, rgb_s = student(x, d)
    density = F.mse_loss(log_depth(sigma_s, step), log_depth(sigma_t, step))
    colour = (opacity * (rgb_s - rgb_t).pow(2).mean(-1)).sum() / opacity.sum().clamp(min=1e-6)
    return density, colour


def psnr_of(mse: float) -> float:
    return -10.0 * math.log10(max(mse, 1e-10))


@torch.no_grad()
def heldout_psnr(student: RadianceModel, teacher: RadianceModel, scene: Scene,
                 n: int = HELDOUT_RAYS[1], seed: int = 0) -> float:
    """PSNR of the student against the teacher on ``n`` novel-view rays no step trained on."""
    rays = novel_rays(scene, n, torch.Generator().manual_seed(seed + HELDOUT_SEED))
    rays = rays.to(teacher.field.aabb.device)
    want = render_view_rays(teacher.field, rays, teacher.background, teacher.render,
                            teacher.occupancy)
    got = render_view_rays(student.field, rays, student.background, student.render,
                           student.occupancy)
    return psnr_of(float(F.mse_loss(got, want)))


# --- training -----------------------------------------------------------------------------
def loss_terms(student: RadianceModel, teacher: RadianceModel, scene: Scene,
               points: OccupiedPoints, cfg: DistillConfig, gen: torch.Generator
               ) -> dict[str, Tensor]:
    """One step's losses: ``render`` (always), ``density`` and ``colour`` (points > 0),
    ``gt`` (gt_weight > 0)."""
    device = student.field.aabb.device
    rays = novel_rays(scene, cfg.batch_size, gen).to(device)
    with torch.no_grad():
        target = render_rays(teacher.field, rays, teacher.background, teacher.render,
                             teacher.occupancy)["rgb"]
    out = render_rays(student.field, rays, student.background, student.render,
                      student.occupancy, train=True, generator=gen)
    terms = {"render": F.mse_loss(out["rgb"], target)}
    if "rgb_coarse" in out:  # a hierarchical student's coarse network learns from its render
        terms["coarse"] = F.mse_loss(out["rgb_coarse"], target)
    if cfg.points:
        x = points.sample(cfg.points, gen)
        # Camera-like view directions: those of this step's novel rays.
        d = rays.viewdirs[torch.randint(0, len(rays), (cfg.points,), generator=gen).to(device)]
        terms["density"], terms["colour"] = point_losses(
            student.field, teacher.field, x, d, points.step)
    if cfg.gt_weight > 0:
        gt_rays, gt = scene.random_rays("train", max(1, cfg.batch_size // 4), gen)
        out = render_rays(student.field, gt_rays.to(device), student.background,
                          student.render, student.occupancy, train=True, generator=gen)
        terms["gt"] = F.mse_loss(out["rgb"], gt.to(device))
    return terms


def optimizer_for(field: Field, lr: float) -> torch.optim.Adam:
    """Adam with the field's grids (``Field.optimizer_groups``) at the trainer's grid rate and
    networks at ``lr``; each group remembers its ``base_lr`` for the decay."""
    groups = field.optimizer_groups({"grid": TrainConfig().lr_grid, "net": lr})
    for group in groups:
        group["base_lr"] = group["lr"]
    return torch.optim.Adam(groups, betas=(0.9, 0.99))


def train_student(student: RadianceModel, teacher: RadianceModel, scene: Scene,
                  cfg: DistillConfig, quiet: bool, points: OccupiedPoints | None = None
                  ) -> dict[str, list[float]]:
    """Run the optimisation in place on ``student``; per-step loss terms and PSNR. Point
    targets are drawn from ``points``, by default the occupied cells of the student's grid."""
    gen = torch.Generator().manual_seed(cfg.seed)
    opt = optimizer_for(student.field, cfg.lr)
    if points is None:
        points = OccupiedPoints(student.occupancy, student.field.aabb, student.render.step_size)
    weights = {"render": 1.0, "coarse": 1.0, "density": cfg.density_weight,
               "colour": cfg.colour_weight, "gt": cfg.gt_weight}
    log: dict[str, list[float]] = {"psnr": []}
    final_ratio = TrainConfig().lr_final_ratio
    bar = progress_bar(cfg.steps, desc="distill", quiet=quiet)
    student.field.train()
    try:
        for i in range(cfg.steps):
            for group in opt.param_groups:
                group["lr"] = group["base_lr"] * final_ratio ** (i / cfg.steps)
            terms = loss_terms(student, teacher, scene, points, cfg, gen)
            loss = sum(weights[k] * v for k, v in terms.items())
            opt.zero_grad(set_to_none=True)
            loss.backward()  # type: ignore[union-attr]
            opt.step()
            for k, v in terms.items():
                log.setdefault(k, []).append(float(v.detach()))
            log["psnr"].append(psnr_of(log["render"][-1]))
            bar.update(1)
            bar.set_postfix(loss=f"{float(loss.detach()):.4f}", psnr=f"{log['psnr'][-1]:.2f}")
    finally:
        bar.close()
        student.field.eval()
    return log


def tail_mean(values: list[float]) -> float:
    """Mean of the last tenth (at least one value)."""
    tail = values[-max(1, len(values) // 10):]
    return sum(tail) / len(tail)
