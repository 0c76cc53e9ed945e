"""TensoRF factorised radiance fields (Chen et al., ECCV 2022): vector-matrix (VM) and CP.

One implementation serves both decompositions; they differ only in how the per-component
features at a point are formed from the factors:

- VM: for each of the three modes m (planes XY, XZ, YZ with lines Z, Y, X),
  ``f_m,c(x) = P_m,c(x_u, x_v) * L_m,c(x_w)``; the features of all modes are concatenated.
- CP: ``f_c(x) = L_X,c(x) * L_Y,c(y) * L_Z,c(z)``.

Density is ``softplus(sum_c f^sigma_c(x) + shift)``; appearance features ``B f^app(x)`` (a linear
basis) go with the view direction into a small MLP decoder (TensoRF's ``MLP_Fea``), whose inputs
are the features, the direction and a few sin/cos frequencies of both.
Grids grow coarse-to-fine (``upsampled``) and can be cropped to the occupied box (``cropped``).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from nerfzip.fields.base import (
    FeatureGrid,
    Field,
    register_field,
    schedule_step,
    upsample_steps,
)
from nerfzip.fields.encoding import positional_encoding
from nerfzip.utils.schema import limits

if TYPE_CHECKING:
    from nerfzip.rendering.occupancy import OccupancyGrid
    from nerfzip.training.config import TrainConfig

BAKE_MAX_VOXELS = 1 << 26
"""Largest grid whose density is baked for inference (256 MB in float32)."""

# Plane axes (u, v) and line axis w of each VM mode, as in TensoRF.
MAT_AXES = ((0, 1), (0, 2), (1, 2))
VEC_AXES = (2, 1, 0)


@dataclass
class TensoRFConfig:
    """Configuration of a TensoRF field."""

    decomposition: str = field(default="vm", metadata=limits(choices=("vm", "cp")))
    """"vm" (vector-matrix) or "cp" (CANDECOMP/PARAFAC)."""
    resolution: tuple[int, int, int] = field(default=(128, 128, 128),
                                             metadata=limits(items=(1, 4096)))
    """Grid resolution along x, y, z (grows during training)."""
    density_components: int = field(default=16, metadata=limits(0, 4096))
    """Density components per mode (VM) or in total (CP)."""
    appearance_components: int = field(default=48, metadata=limits(0, 4096))
    """Appearance components per mode (VM) or in total (CP)."""
    app_dim: int = field(default=27, metadata=limits(1, 4096))
    """Width of the appearance feature fed to the decoder."""
    decoder_hidden: int = field(default=128, metadata=limits(1, 4096))
    """Hidden width of the colour decoder MLP."""
    feature_freqs: int = field(default=2, metadata=limits(0, 32))
    """Sin/cos frequencies of the appearance feature given to the decoder."""
    view_freqs: int = field(default=2, metadata=limits(0, 32))
    """Sin/cos frequencies of the view direction given to the decoder."""
    density_shift: float = -10.0
    """Added before softplus so that a new field starts almost empty."""
    density_scale: float = field(default=25.0, metadata=limits(0.0))
    """Multiplies softplus (TensoRF's ``distance_scale``): keeps early gradients alive."""
    init_scale: float = field(default=0.1, metadata=limits(0.0))
    """Standard deviation of the initial factors."""
    density_groups: tuple[int, ...] = field(default=(), metadata=limits(items=(1, 4096)))
    """Progressive files: density components per refinement layer, base first (summing to
    density_components); empty: one group (not progressive)."""
    appearance_groups: tuple[int, ...] = field(default=(), metadata=limits(items=(1, 4096)))
    """Progressive files: appearance components per layer, as density_groups."""


def grid_resolution(aabb: Tensor, n_voxels: int) -> tuple[int, int, int]:
    """Per-axis resolution with cubic voxels and about ``n_voxels`` voxels in the box."""
    size = (aabb[1] - aabb[0]).double()
    voxel = (size.prod() / n_voxels) ** (1.0 / 3.0)
    return tuple(int(v) for v in torch.round(size / voxel).long().tolist())  # type: ignore


class FactorGrids(nn.Module):
    """The factors of one quantity (density or appearance) for one decomposition.

    VM holds ``planes.{m}`` [1, C, res_v, res_u] and ``lines.{m}`` [1, C, res_w, 1]; CP holds
    only ``lines.{axis}`` [1, C, res_axis, 1]. ``features(x)`` maps [N, 3] in [-1, 1] to [N, K].

    ``groups`` (progressive files) splits the C components of every mode into groups of
    ``groups[g]``, each its own tensors: factor ``3 g + m`` is mode (or axis) m of group g, so
    group 0 keeps the names of an ungrouped field and a missing group is all zeros. Features
    are ordered group by group, modes within a group.
    """

    def __init__(self, decomposition: str, components: int, resolution: tuple[int, int, int],
                 scale: float, generator: torch.Generator | None = None,
                 groups: tuple[int, ...] = (), blank: bool = False):
        super().__init__()
        self.decomposition = decomposition
        if groups and (sum(groups) != components or min(groups) < 1):
            raise ValueError(f"component groups {list(groups)} must be positive and sum to "
                             f"{components}")
        self.groups = tuple(groups) or (components,)
        res = resolution

        def rand(*shape: int) -> nn.Parameter:
            if blank:  # values about to be loaded (randn: 0.3 s at 300^3 on one core)
                return nn.Parameter(torch.empty(*shape))
            return nn.Parameter(scale * torch.randn(*shape, generator=generator))

        if decomposition == "vm":
            self.planes = nn.ParameterList(
                [rand(1, c, res[v], res[u]) for c in self.groups for u, v in MAT_AXES])
            self.lines = nn.ParameterList(
                [rand(1, c, res[w], 1) for c in self.groups for w in VEC_AXES])
        elif decomposition == "cp":
            self.planes = nn.ParameterList()
            # CP is a product of three lines; a larger init keeps the product from vanishing.
            self.lines = nn.ParameterList(
                [rand(1, c, res[a], 1) for c in self.groups for a in range(3)])
        else:
            raise ValueError(f"unknown decomposition {decomposition!r}")

    @property
    def num_components(self) -> int:
        """Features per point (from the tensors: component pruning shrinks them in place)."""
        per_mode = sum(line.shape[1] for line in self.lines[::3])
        return per_mode * (3 if self.decomposition == "vm" else 1)

    @property
    def num_groups(self) -> int:
        return len(self.lines) // 3

    def line_values(self, line: Tensor, coord: Tensor) -> Tensor:
        """Linear interpolation of a line [1, C, L, 1] at coords [N] in [-1, 1] -> [C, N]."""
        grid = torch.stack([torch.zeros_like(coord), coord], dim=-1).view(1, -1, 1, 2)
        return F.grid_sample(line, grid, mode="bilinear", align_corners=True).view(
            line.shape[1], -1)

    def plane_values(self, plane: Tensor, uv: Tensor) -> Tensor:
        """Bilinear interpolation of a plane [1, C, H, W] at uv [N, 2] in [-1, 1] -> [C, N]."""
        return F.grid_sample(plane, uv.view(1, -1, 1, 2), mode="bilinear",
                             align_corners=True).view(plane.shape[1], -1)

    def features(self, x: Tensor) -> Tensor:
        """Per-component features [K, N] at normalised points x [N, 3]."""
        parts = []
        for g in range(self.num_groups):
            if self.decomposition == "vm":
                parts += [
                    self.plane_values(self.planes[3 * g + m], x[:, MAT_AXES[m]])
                    * self.line_values(self.lines[3 * g + m], x[:, VEC_AXES[m]])
                    for m in range(3)
                ]
            else:
                out = self.line_values(self.lines[3 * g], x[:, 0])
                for a in (1, 2):
                    out = out * self.line_values(self.lines[3 * g + a], x[:, a])
                parts.append(out)
        return parts[0] if len(parts) == 1 else torch.cat(parts, dim=0)

    def density_sum(self, x: Tensor) -> Tensor:
        """``sum_k features_k(x)`` -> [N] (the density pre-activation)."""
        return self.features(x).sum(dim=0)

    def dense_sum(self) -> Tensor:
        """``sum_k features_k`` at every grid node: [1, 1, res_z, res_y, res_x].

        Inside a voxel each VM term is bilinear in its plane's axes times linear in its line's
        axis, and each CP term is a product of three linear functions: both are trilinear, so
        trilinear interpolation of this volume equals ``density_sum`` exactly.
        """
        vol: Tensor | None = None
        for g in range(self.num_groups):
            lines = [line[0, :, :, 0] for line in self.lines[3 * g:3 * g + 3]]
            if self.decomposition == "cp":
                part = torch.einsum("cx,cy,cz->zyx", *lines)
            else:
                planes = [plane[0] for plane in self.planes[3 * g:3 * g + 3]]
                part = (torch.einsum("cyx,cz->zyx", planes[0], lines[0])
                        + torch.einsum("czx,cy->zyx", planes[1], lines[1])
                        + torch.einsum("czy,cx->zyx", planes[2], lines[2]))
            vol = part if vol is None else vol + part
        assert vol is not None
        return vol[None, None]

    def resized(self, resolution: tuple[int, int, int]) -> None:
        """Resample every factor to ``resolution`` in place (bilinear / linear)."""
        res = resolution
        with torch.no_grad():
            if self.decomposition == "vm":
                for i in range(len(self.planes)):
                    u, v = MAT_AXES[i % 3]
                    self.planes[i] = nn.Parameter(F.interpolate(
                        self.planes[i].data, size=(res[v], res[u]), mode="bilinear",
                        align_corners=True))
            for i in range(len(self.lines)):
                w = self.line_axis(i)
                self.lines[i] = nn.Parameter(F.interpolate(
                    self.lines[i].data, size=(res[w], 1), mode="bilinear", align_corners=True))

    def line_axis(self, i: int) -> int:
        """The point axis line ``i`` is indexed by."""
        return VEC_AXES[i % 3] if self.decomposition == "vm" else i % 3

    def cropped(self, lo: list[int], hi: list[int]) -> None:
        """Keep voxel index ranges ``[lo[a], hi[a]]`` (inclusive) along each axis, in place."""
        with torch.no_grad():
            if self.decomposition == "vm":
                for i in range(len(self.planes)):
                    u, v = MAT_AXES[i % 3]
                    self.planes[i] = nn.Parameter(
                        self.planes[i].data[:, :, lo[v]:hi[v] + 1, lo[u]:hi[u] + 1].clone())
            for i in range(len(self.lines)):
                w = self.line_axis(i)
                self.lines[i] = nn.Parameter(
                    self.lines[i].data[:, :, lo[w]:hi[w] + 1].clone())

    def l1(self) -> Tensor:
        """Mean absolute value of every factor, summed (TensoRF's density L1)."""
        return sum(p.abs().mean() for p in self.parameters())  # type: ignore[return-value]

    def tv(self) -> Tensor:
        """Total variation of the planes (VM) or lines (CP): squared neighbour differences."""
        total = torch.zeros((), device=self.lines[0].device)
        grids = list(self.planes) if self.decomposition == "vm" else list(self.lines)
        for g in grids:
            total = total + (g[:, :, 1:, :] - g[:, :, :-1, :]).pow(2).mean()
            if g.shape[-1] > 1:
                total = total + (g[:, :, :, 1:] - g[:, :, :, :-1]).pow(2).mean()
        return total


class ColorDecoder(nn.Module):
    """TensoRF's ``MLP_Fea``: [feature, PE(feature), d, PE(d)] -> hidden -> hidden -> rgb."""

    def __init__(self, app_dim: int, hidden: int, feature_freqs: int, view_freqs: int):
        super().__init__()
        self.feature_freqs, self.view_freqs = feature_freqs, view_freqs
        in_dim = app_dim * (1 + 2 * feature_freqs) + 3 * (1 + 2 * view_freqs)
        self.layers = nn.Sequential(
            nn.Linear(in_dim, hidden), nn.ReLU(inplace=True),
            nn.Linear(hidden, hidden), nn.ReLU(inplace=True),
            nn.Linear(hidden, 3),
        )
        nn.init.constant_(self.layers[-1].bias, 0.0)

    def forward(self, feat: Tensor, d: Tensor) -> Tensor:
        h = torch.cat([positional_encoding(feat, self.feature_freqs),
                       positional_encoding(d, self.view_freqs)], dim=-1)
        return torch.sigmoid(self.layers(h))


class TensoRF(Field):
    """A TensoRF field (VM or CP) over ``aabb``."""

    config_cls = TensoRFConfig

    def __init__(self, config: TensoRFConfig, aabb: Tensor, seed: int = 0, blank: bool = False):
        super().__init__(aabb)
        self.config = config
        gen = torch.Generator().manual_seed(seed)
        res = tuple(config.resolution)
        if len(config.density_groups) != len(config.appearance_groups):
            raise ValueError("density_groups and appearance_groups must have as many layers")
        self.density_grids = FactorGrids(config.decomposition, config.density_components, res,
                                         config.init_scale, gen, config.density_groups, blank)
        self._baked: tuple[tuple[tuple[int, int, str], ...], Tensor] | None = None
        self.app_grids = FactorGrids(config.decomposition, config.appearance_components, res,
                                     config.init_scale, gen, config.appearance_groups, blank)
        # Linear layers draw from the global generator: seed it locally, leaving it as it was.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.basis = nn.Linear(self.app_grids.num_components, config.app_dim, bias=False)
            self.decoder = ColorDecoder(config.app_dim, config.decoder_hidden,
                                        config.feature_freqs, config.view_freqs)

    @classmethod
    def blank(cls, config: TensoRFConfig, aabb: Tensor) -> TensoRF:  # type: ignore[override]
        """Zero factors instead of random ones (reading a file: every tensor is loaded)."""
        return cls(config, aabb, blank=True)

    @property
    def family(self) -> str:  # type: ignore[override]
        return f"tensorf-{self.config.decomposition}"

    def config_dict(self) -> dict[str, Any]:
        """As ``Field``'s, without the group keys of an ungrouped field (so its header, and
        the files written before groups existed, stay byte for byte what they were)."""
        out = super().config_dict()
        if not self.config.density_groups:
            for key in ("density_groups", "appearance_groups"):
                out["config"].pop(key, None)
        return out

    # --- progressive files ------------------------------------------------------------------
    def tensor_layers(self) -> dict[str, int]:
        """The refinement layer of each grid tensor of group g >= 1 (g): every other tensor
        (group 0, basis, decoder) is in the base layer. Empty for an ungrouped field."""
        out: dict[str, int] = {}
        for prefix in ("density_grids", "app_grids"):
            grids = self.get_submodule(prefix)
            for kind in ("planes", "lines"):
                for i in range(3, len(getattr(grids, kind))):
                    out[f"{prefix}.{kind}.{i}"] = i // 3
        return out

    def optional_tensors(self) -> frozenset[str]:
        """The refinement groups: a missing group contributes nothing (zero factors)."""
        return frozenset(self.tensor_layers())

    def density(self, x: Tensor) -> Tensor:
        xn = self.normalize(x)
        volume = self.baked_density()
        if volume is None:
            s = self.density_grids.density_sum(xn)
        else:
            s = F.grid_sample(volume, xn.view(1, -1, 1, 1, 3), mode="bilinear",
                              align_corners=True).view(-1)
        return F.softplus(s + self.config.density_shift) * self.config.density_scale

    def baked_density(self) -> Tensor | None:
        """At inference, the density pre-activation baked into a dense volume (``dense_sum``):
        one trilinear lookup per point instead of 3 x C factor lookups and products, with the
        same result. Rebuilt whenever a density factor changes; ``None`` while training, with
        gradients on, or when the volume would exceed ``BAKE_MAX_VOXELS``."""
        if self.training or torch.is_grad_enabled():
            return None
        res = self.config.resolution
        if res[0] * res[1] * res[2] > BAKE_MAX_VOXELS:
            return None
        # Parameters are replaced when grids grow or are cropped, bump their version when
        # changed in place and keep their identity when moved: together these say whether the
        # baked volume is still current.
        key = tuple((id(p), p._version, str(p.device)) for p in self.density_grids.parameters())
        if self._baked is None or self._baked[0] != key:
            self._baked = (key, self.density_grids.dense_sum().contiguous())
        return self._baked[1]

    def app_features(self, x: Tensor) -> Tensor:
        """Appearance features [N, app_dim] at points x [N, 3]."""
        return self.basis(self.app_grids.features(self.normalize(x)).t())

    def radiance(self, x: Tensor, d: Tensor) -> Tensor:
        return self.decoder(self.app_features(x), d)

    # --- coarse-to-fine -------------------------------------------------------------------
    def voxel_size(self) -> Tensor:
        """Edge length of one voxel along each axis (field units), [3]."""
        res = torch.tensor(self.config.resolution, dtype=torch.float32, device=self.aabb.device)
        return (self.aabb[1] - self.aabb[0]) / (res - 1)

    def upsample_(self, resolution: tuple[int, int, int]) -> None:
        """Resample all grids to a finer ``resolution`` (parameters are replaced)."""
        self.density_grids.resized(resolution)
        self.app_grids.resized(resolution)
        self.config = replace(self.config, resolution=tuple(resolution))

    def crop_(self, new_aabb: Tensor) -> None:
        """Shrink the domain to the voxel-aligned box enclosing ``new_aabb`` (values unchanged)."""
        vs = self.voxel_size()
        res = torch.tensor(self.config.resolution, device=vs.device)
        lo = torch.floor((new_aabb[0] - self.aabb[0]) / vs).long().clamp(min=0)
        hi = torch.ceil((new_aabb[1] - self.aabb[0]) / vs).long()
        hi = torch.minimum(hi, res - 1)
        hi = torch.maximum(hi, lo + 1)
        self.density_grids.cropped(lo.tolist(), hi.tolist())
        self.app_grids.cropped(lo.tolist(), hi.tolist())
        aabb = torch.stack([self.aabb[0] + lo * vs, self.aabb[0] + hi * vs])
        self.aabb.copy_(aabb)
        self.config = replace(self.config, resolution=tuple((hi - lo + 1).tolist()))

    def param_groups(self) -> dict[str, list[nn.Parameter]]:
        grids = list(self.density_grids.parameters()) + list(self.app_grids.parameters())
        return {"grid": grids, "net": list(self.basis.parameters())
                + list(self.decoder.parameters())}

    # --- training hooks ---------------------------------------------------------------------
    @classmethod
    def initial_config(cls, family: str, cfg: TrainConfig, aabb: Tensor) -> TensoRFConfig:
        """``default_config`` at ``cfg.n_voxels_init`` voxels over the box."""
        return default_config(family, resolution=grid_resolution(aabb, cfg.n_voxels_init))

    def render_settings(self, cfg: TrainConfig, step: int | None = None) -> dict[str, Any]:
        """Occupancy marching at ``cfg.step_ratio`` of the current voxel (TensoRF's step)."""
        return {"sampler": "occupancy", "max_samples": cfg.max_samples,
                "step_size": float(self.voxel_size().mean()) * cfg.step_ratio}

    def wants_occupancy(self) -> bool:
        return True

    def regularization(self, cfg: TrainConfig, step: int) -> Tensor:
        """``penalty`` with TensoRF's weights: the density L1 weight drops to
        ``l1_density_late`` once the grid has been cropped (``shrink_at``)."""
        shrink = schedule_step(cfg.shrink_at, cfg.iters)
        late = shrink >= 0 and step >= shrink
        l1 = cfg.l1_density_late if late else cfg.l1_density
        return self.penalty(l1, cfg.tv_density, cfg.tv_app)

    def schedule(self, cfg: TrainConfig, step: int, occupancy: OccupancyGrid | None,
                 step_size: float) -> bool:
        """At ``shrink_at`` crop to the box of visible occupied cells; at each ``upsample_at``
        grow to the next voxel count of a log-linear schedule ``n_voxels_init`` ->
        ``n_voxels_final`` (TensoRF's coarse-to-fine)."""
        changed = False
        if step == schedule_step(cfg.shrink_at, cfg.iters) and occupancy is not None:
            solid = occupancy.visible(step_size, cfg.crop_alpha)
            self.crop_(occupancy.occupied_aabb(outlier_fraction=0.002, margin=3, cells=solid))
            changed = True
        grow = upsample_steps(cfg)
        if step in grow:
            self.upsample_(grid_resolution(self.aabb, grow[step]))
            changed = True
        return changed

    # --- analysis hooks ---------------------------------------------------------------------
    def grid_axes(self) -> dict[str, tuple[int, ...]]:
        """Each factor's name and the point axes it is indexed by (planes: (u, v); lines: w)."""
        out: dict[str, tuple[int, ...]] = {}
        for prefix in ("density_grids", "app_grids"):
            grids = self.get_submodule(prefix)
            out |= {f"{prefix}.planes.{i}": MAT_AXES[i % 3] for i in range(len(grids.planes))}
            out |= {f"{prefix}.lines.{i}": (grids.line_axis(i),)
                    for i in range(len(grids.lines))}
        return out

    def feature_grids(self) -> dict[str, FeatureGrid]:
        """Every factor, components along axis 1; VQ is worth it for VM planes and CP lines."""
        vm = self.config.decomposition == "vm"
        return {name: FeatureGrid(axis=1, vector_quantize=not vm or ".planes." in name)
                for name in self.grid_axes()}

    def read_grid(self, name: str, grid: Tensor, x: Tensor) -> Tensor:
        axes = self.grid_axes().get(name)
        if axes is None:
            return super().read_grid(name, grid, x)
        xn = self.normalize(x).clamp(-1, 1)
        if len(axes) == 2:
            return self.density_grids.plane_values(grid, xn[:, list(axes)])[0]
        return self.density_grids.line_values(grid, xn[:, axes[0]])[0]

    def grid_shape(self) -> tuple[int, int, int]:
        return tuple(self.config.resolution)  # type: ignore[return-value]

    def penalty(self, l1_density: float = 0.0, tv_density: float = 0.0,
                tv_app: float = 0.0) -> Tensor:
        """Weighted L1 of the density factors and total variation of both (only terms with a
        non-zero weight are computed)."""
        total = torch.zeros((), device=self.aabb.device)
        if l1_density > 0:
            total = total + l1_density * self.density_grids.l1()
        if tv_density > 0:
            total = total + tv_density * self.density_grids.tv()
        if tv_app > 0:
            total = total + tv_app * self.app_grids.tv()
        return total

    def load_tensors(self, tensors: dict[str, Tensor]) -> None:
        super().load_tensors(tensors)
        # Grids may have grown or been cropped: the config follows the stored shapes.
        lines = [tensors[f"density_grids.lines.{m}"].shape[2] for m in range(3)]
        res = ([lines[2], lines[1], lines[0]] if self.config.decomposition == "vm" else lines)
        self.config = replace(self.config, resolution=tuple(res))


register_field("tensorf-vm", file_id=1)(TensoRF)
register_field("tensorf-cp", file_id=2)(TensoRF)


def default_config(family: str, **overrides: object) -> TensoRFConfig:
    """Sizes for a CPU budget: VM 16 density / 24 appearance components per mode (TensoRF
    publishes 16 / 48), CP 96 / 192 in total (published 96 / 288), a 64-wide decoder
    (published 128). Colour queries dominate a CPU training step; these halve them."""
    if family == "tensorf-cp":
        base = TensoRFConfig(decomposition="cp", density_components=96,
                             appearance_components=192, init_scale=0.2, decoder_hidden=64)
    else:
        base = TensoRFConfig(decomposition="vm", appearance_components=24, decoder_hidden=64)
    return replace(base, **overrides)  # type: ignore[arg-type]
