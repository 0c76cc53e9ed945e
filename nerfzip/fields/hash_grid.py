"""Instant-NGP's multi-resolution hash grid (Müller et al., SIGGRAPH 2022), in plain PyTorch.

A point ``u`` in the unit cube is looked up at ``L`` levels of resolution growing geometrically
from ``N_min`` to ``N_max`` cells per axis (the paper's eq. 2-3)::

    b = exp((ln N_max - ln N_min) / (L - 1)),   N_l = floor(N_min * b^l)

At level ``l`` the 8 vertices of the cell around ``u * N_l`` index a table of ``T`` entries of
``F`` features: densely (``i + (N_l + 1) (j + (N_l + 1) k)``) where the level's
``(N_l + 1)^3`` vertices fit in ``T``, else by the spatial hash of eq. 4,
``h(i, j, k) = (i * 1 xor j * 2654435761 xor k * 805459861) mod T``. The 8 entries are blended
trilinearly and the ``L * F`` features go through a small density MLP, whose first output is
the log density (``trunc_exp``, as instant-ngp) and the rest a geometry feature; the colour MLP
takes that feature with the view direction in real spherical harmonics of bands 0-3 (``sh``).

Each level's table is one parameter ``encoding.tables.{l}`` of shape [F, T_l]: features along
axis 0, so per-channel quantization keeps one range per feature and the gather reads
contiguous rows (about 8x faster on a CPU than [T_l, F]).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from nerfzip.errors import NerfzipError
from nerfzip.fields.base import FeatureGrid, Field, march_step, register_field, upsample_steps
from nerfzip.fields.mlp_nerf import DENSITY_ACTIVATIONS
from nerfzip.fields.sh import SH_DIM, spherical_harmonics
from nerfzip.utils.schema import check, limits

if TYPE_CHECKING:
    from nerfzip.rendering.occupancy import OccupancyGrid
    from nerfzip.training.config import TrainConfig

PRIMES = (1, 2654435761, 805459861)
"""The hash's per-axis primes (the paper's pi_1..pi_3; pi_1 = 1 keeps x-neighbours apart)."""


@dataclass
class HashGridConfig:
    """Configuration of a hash-grid field; the defaults are sized for CPU training.

    instant-ngp uses L = 16, F = 2 and T = 2^19; here L = 8, F = 4 keep the encoding 32 wide
    and the tables about as large (2^15 entries per level: ~1 M values, 4 MB), while the
    index arithmetic, which dominates a CPU step, is per level: on the procedural scene a
    step costs about 1.4x less CPU than with L = 16, F = 2."""

    levels: int = field(default=8, metadata=limits(1, 32))
    """L: resolution levels."""
    log2_table_size: int = field(default=15, metadata=limits(4, 24))
    """log2 T: entries of each level's table (a power of two, so ``mod T`` is a bit mask)."""
    features: int = field(default=4, metadata=limits(1, 8))
    """F: features per table entry."""
    base_resolution: int = field(default=16, metadata=limits(1, 1 << 16))
    """N_min: cells per axis of the coarsest level."""
    finest_resolution: int = field(default=512, metadata=limits(1, 1 << 16))
    """N_max: cells per axis of the finest level (>= N_min)."""
    hidden: int = field(default=64, metadata=limits(1, 1024))
    """Width of the density MLP's hidden layer."""
    geo_features: int = field(default=15, metadata=limits(1, 256))
    """Width of the geometry feature the density MLP passes to the colour MLP."""
    color_hidden: int = field(default=64, metadata=limits(1, 1024))
    """Width of the colour MLP's hidden layers."""
    color_layers: int = field(default=2, metadata=limits(1, 8))
    """Hidden layers of the colour MLP."""
    density_activation: str = field(default="trunc_exp",
                                    metadata=limits(choices=("trunc_exp", "softplus")))
    """sigma = act(raw + density_bias): "trunc_exp" (instant-ngp) or "softplus"."""
    density_bias: float = field(default=-1.0, metadata=limits(-20.0, 20.0))
    """Added to the raw density before the activation: a new field starts at about
    exp(-1) instead of 1, less opaque fog to clear (nerfacc's NGP field: -1)."""
    init_scale: float = field(default=1e-4, metadata=limits(0.0, 1.0))
    """Table entries start uniform in [-init_scale, init_scale] (instant-ngp: 1e-4)."""

    def __post_init__(self) -> None:
        check(self, "hash-grid")
        if self.finest_resolution < self.base_resolution:
            raise NerfzipError(f"hash-grid: finest_resolution {self.finest_resolution} must be "
                               f">= base_resolution {self.base_resolution}")


def level_resolutions(levels: int, n_min: int, n_max: int) -> list[int]:
    """Cells per axis of each level, ``floor(N_min b^l)`` (eq. 2-3; the 1e-9 keeps the last
    level at exactly ``N_max`` despite rounding in ``b^(L - 1)``)."""
    if levels == 1:
        return [n_min]
    log_b = (math.log(n_max) - math.log(n_min)) / (levels - 1)
    return [math.floor(n_min * math.exp(l * log_b) + 1e-9) for l in range(levels)]


def hash_index(ijk: Tensor, table_size: int) -> Tensor:
    """``(i * pi_1 xor j * pi_2 xor k * pi_3) mod T`` of integer vertices [..., 3] -> [...].

    In int64 the products (< 2^16 * 2^32) do not overflow; the low bits agree with
    instant-ngp's wrapping uint32 arithmetic because T is a power of two."""
    h = (ijk[..., 0] * PRIMES[0]) ^ (ijk[..., 1] * PRIMES[1]) ^ (ijk[..., 2] * PRIMES[2])
    return h & (table_size - 1)


def dense_index(ijk: Tensor, resolution: int) -> Tensor:
    """``i + (N + 1) (j + (N + 1) k)`` of vertices [..., 3] of an N-cell level -> [...]."""
    side = resolution + 1
    return ijk[..., 0] + side * (ijk[..., 1] + side * ijk[..., 2])


def corner_weights(frac: Tensor) -> Tensor:
    """Trilinear weights [..., 8] of the cell corners from the offsets ``frac`` [..., 3] in
    [0, 1]; corner ``c`` sits at offset bits (c & 1, c >> 1 & 1, c >> 2 & 1)."""
    lo, hi = 1.0 - frac, frac
    wx = torch.stack((lo[..., 0], hi[..., 0]), -1)
    wy = torch.stack((lo[..., 1], hi[..., 1]), -1)
    wz = torch.stack((lo[..., 2], hi[..., 2]), -1)
    return (wz[..., :, None, None] * wy[..., None, :, None] * wx[..., None, None, :]).flatten(-3)


def corner_indices(cell: Tensor, side: Tensor | None, table_size: int) -> Tensor:
    """Table indices [K, N, 8] (int32) of the 8 corners of cells ``cell`` [K, N, 3] (int64) at K
    levels: dense with ``side`` [K] vertices per axis, or hashed when ``side`` is None.

    Both indices are separable, a sum or an xor of one term per axis, so the terms [K, N, 2]
    are combined by broadcasting and only the [K, N, 8] result is materialised. Hashed terms
    are reduced mod T before the xor (``(a xor b) & m = (a & m) xor (b & m)``), so that the
    large arrays are int32, half the memory traffic of int64."""
    axes = [torch.stack((cell[..., a], cell[..., a] + 1), -1) for a in range(3)]  # [K, N, 2]
    if side is not None:
        s = side.view(-1, 1, 1)
        tx, ty, tz = (t.int() for t in (axes[0], axes[1] * s, axes[2] * (s * s)))
        idx = tz[..., :, None, None] + ty[..., None, :, None] + tx[..., None, None, :]
        return idx.flatten(-3)
    mask = table_size - 1
    tx, ty, tz = (((axes[a] * PRIMES[a]) & mask).int() for a in range(3))
    return (tz[..., :, None, None] ^ ty[..., None, :, None] ^ tx[..., None, None, :]).flatten(-3)


class HashEncoding(nn.Module):
    """The multi-resolution hash encoding: ``forward(u [N, 3] in [0, 1]) -> [N, L * F]``,
    level-major (level 0's F features first)."""

    def __init__(self, config: HashGridConfig, generator: torch.Generator | None = None):
        super().__init__()
        c = config
        self.features = c.features
        self.table_size = 1 << c.log2_table_size
        self.resolutions = level_resolutions(c.levels, c.base_resolution, c.finest_resolution)
        self.sizes = [min(self.table_size, (r + 1) ** 3) for r in self.resolutions]
        # Resolutions never decrease, so the dense levels are the first ``n_dense``.
        self.n_dense = sum((r + 1) ** 3 <= self.table_size for r in self.resolutions)
        self.offsets = [sum(self.sizes[:l]) for l in range(len(self.sizes))]
        self.tables = nn.ParameterList([
            nn.Parameter((torch.rand(c.features, n, generator=generator) * 2 - 1) * c.init_scale)
            for n in self.sizes])

    def lookup(self, u: Tensor, lo: int, hi: int) -> tuple[Tensor, Tensor]:
        """Corner indices [K, N, 8] into the tables of levels ``lo:hi`` (K = hi - lo, each
        into its own table) and their trilinear weights [K, N, 8], at ``u`` [N, 3]."""
        res = torch.tensor(self.resolutions[lo:hi], dtype=u.dtype, device=u.device)
        pos = u * res.view(-1, 1, 1)  # [K, N, 3]: vertex coordinates
        # u = 1 falls in the last cell, at its far side (u >= 0: the floor is never negative).
        cell = torch.minimum(pos.floor(), (res - 1).view(-1, 1, 1))
        w = corner_weights(pos - cell)
        cell = cell.long()
        split = min(max(self.n_dense - lo, 0), hi - lo)
        parts = []
        if split > 0:
            side = torch.tensor([r + 1 for r in self.resolutions[lo:lo + split]],
                                device=u.device)
            parts.append(corner_indices(cell[:split], side, self.table_size))
        if split < hi - lo:
            parts.append(corner_indices(cell[split:], None, self.table_size))
        return torch.cat(parts) if len(parts) > 1 else parts[0], w

    def read_level(self, table: Tensor, u: Tensor, level: int) -> Tensor:
        """Trilinear interpolation of ``table`` [C, T_l] (laid out as level ``level``) at
        ``u`` [N, 3] -> [C, N]."""
        idx, w = self.lookup(u, level, level + 1)
        return torch.stack([(row[idx[0]] * w[0]).sum(-1) for row in table])

    cpu_chunk: int = 8192
    """Points encoded at a time on the CPU (an execution setting, not part of the model): the
    [L, n, 8] index and weight arrays of a chunk stay in reused heap memory, where those of a
    whole batch would be fresh pages (measured 1.5x faster at 50k points)."""

    def forward(self, u: Tensor) -> Tensor:
        """Features [N, L * F] at points ``u`` [N, 3] in [0, 1]^3."""
        table = torch.cat(list(self.tables), dim=1)  # [F, sum T_l]
        n = u.shape[0]
        if u.device.type != "cpu" or n <= self.cpu_chunk:
            return self.encode(table, u)
        return torch.cat([self.encode(table, u[i:i + self.cpu_chunk])
                          for i in range(0, n, self.cpu_chunk)])

    def encode(self, table: Tensor, u: Tensor) -> Tensor:
        """``forward`` with the concatenated tables ``table`` [F, sum T_l].

        All levels in one lookup and, per feature, one 1-D gather: on a CPU a 1-D
        ``index_select`` is about 10x faster than indexing the [F, T] rows together, and L
        small gathers cost more than one large one."""
        idx, w = self.lookup(u, 0, len(self.sizes))
        offsets = torch.tensor(self.offsets, dtype=torch.int32, device=u.device).view(-1, 1, 1)
        flat = (idx + offsets).reshape(-1)  # [L n 8]; int32: the tables hold < 2^31 entries
        out = torch.stack([(row.index_select(0, flat).view_as(w) * w).sum(-1)
                           for row in table], dim=-1)  # [L, n, F]
        return out.transpose(0, 1).reshape(u.shape[0], -1)


def mlp(sizes: list[int]) -> nn.Sequential:
    """Linear layers of the given widths with ReLU between them (none after the last)."""
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes, sizes[1:])):
        if i:
            layers.append(nn.ReLU(inplace=True))
        layers.append(nn.Linear(a, b))
    return nn.Sequential(*layers)


@register_field("hash-grid", file_id=4)
class HashGrid(Field):
    """An Instant-NGP field over ``aabb``. Tensors: ``encoding.tables.{l}`` [F, T_l],
    ``density_net.{0,2}`` (L F -> hidden -> 1 + geo_features) and ``color_net.*``
    (geo_features + 16 -> color_hidden x color_layers -> 3)."""

    config_cls = HashGridConfig

    def __init__(self, config: HashGridConfig, aabb: Tensor, seed: int = 0):
        super().__init__(aabb)
        self.config = config
        gen = torch.Generator().manual_seed(seed)
        self.encoding = HashEncoding(config, gen)
        self.sigma_act = DENSITY_ACTIVATIONS[config.density_activation]
        enc_dim = config.levels * config.features
        # Linear layers draw from the global generator: seed it locally, leaving it as it was.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.density_net = mlp([enc_dim, config.hidden, 1 + config.geo_features])
            self.color_net = mlp([config.geo_features + SH_DIM]
                                 + [config.color_hidden] * config.color_layers + [3])

    def unit(self, x: Tensor) -> Tensor:
        """Points [N, 3] mapped from the aabb to the unit cube (clamped onto it)."""
        lo, hi = self.aabb[0], self.aabb[1]
        return ((x - lo) / (hi - lo)).clamp(0.0, 1.0)

    def geometry(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Density [N] and geometry feature [N, geo_features] at points ``x`` [N, 3]."""
        h = self.density_net(self.encoding(self.unit(x)))
        return self.sigma_act(h[:, 0] + self.config.density_bias), h[:, 1:]

    def density(self, x: Tensor) -> Tensor:
        return self.geometry(x)[0]

    def color(self, geo: Tensor, d: Tensor) -> Tensor:
        """Colour [N, 3] from geometry features and unit view directions ``d`` [N, 3]."""
        return torch.sigmoid(self.color_net(torch.cat((geo, spherical_harmonics(d)), -1)))

    def radiance(self, x: Tensor, d: Tensor) -> Tensor:
        return self.color(self.geometry(x)[1], d)

    def forward(self, x: Tensor, d: Tensor) -> tuple[Tensor, Tensor]:
        sigma, geo = self.geometry(x)
        return sigma, self.color(geo, d)

    # --- training hooks ---------------------------------------------------------------------
    def param_groups(self) -> dict[str, list[nn.Parameter]]:
        # .parameters(), not the list's items: under fine-tuning's parametrizations the items
        # are computed tensors, and the leaves (latents, codebooks, steps) sit beneath.
        return {"grid": list(self.encoding.tables.parameters()),
                "net": list(self.density_net.parameters()) + list(self.color_net.parameters())}

    def optimizer_options(self) -> dict[str, dict[str, Any]]:
        """Adam eps 1e-15 on the tables, as instant-ngp: most entries see tiny, rare
        gradients, and the default 1e-8 would swamp their second-moment estimate."""
        return {"grid": {"eps": 1e-15}}

    @classmethod
    def training_defaults(cls, family: str, scene_format: str, cfg: TrainConfig) -> TrainConfig:
        """instant-ngp's learning rate, 1e-2, for tables and networks alike; no grid to crop.
        The occupancy grid starts skipping after 16 steps (instant-ngp updates it every 16
        from the start): a new hash grid is dense (density ~ exp(0) everywhere), and every
        sample of a ray costs a full encoding until empty space is known."""
        return replace(cfg, lr_grid=1e-2, lr_net=1e-2, shrink_at=-1.0,
                       occupancy_warmup=min(cfg.occupancy_warmup, 16))

    def render_settings(self, cfg: TrainConfig, step: int | None = None) -> dict[str, Any]:
        """Occupancy marching at ``march_step``: a TensoRF's sample spacing at that step."""
        return {"sampler": "occupancy", "step_size": march_step(self.aabb, cfg, step),
                "max_samples": cfg.max_samples}

    def schedule(self, cfg: TrainConfig, step: int, occupancy: OccupancyGrid | None,
                 step_size: float) -> bool:
        """Nothing to resize; at the coarse-to-fine steps the march gets finer (``True`` makes
        the trainer ask ``render_settings`` again)."""
        return step in upsample_steps(cfg)

    def wants_occupancy(self) -> bool:
        return True

    # --- analysis hooks ---------------------------------------------------------------------
    def feature_grids(self) -> dict[str, FeatureGrid]:
        """Every level's table; features along axis 0, entries not spatial neighbours."""
        return {f"encoding.tables.{l}": FeatureGrid(axis=0, spatial=False)
                for l in range(len(self.encoding.tables))}

    def read_grid(self, name: str, grid: Tensor, x: Tensor) -> Tensor:
        prefix, _, level = name.rpartition(".")
        if prefix != "encoding.tables" or not level.isdigit() or \
                int(level) >= len(self.encoding.tables):
            return super().read_grid(name, grid, x)
        return self.encoding.read_level(grid, self.unit(x), int(level))[0]

    def grid_shape(self) -> tuple[int, int, int]:
        n = self.encoding.resolutions[-1] + 1
        return (n, n, n)

