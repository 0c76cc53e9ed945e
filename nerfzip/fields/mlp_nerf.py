"""The MLP NeRF (Mildenhall et al., ECCV 2020): one parameterised network, coarse + fine.

Each network maps an encoded position through a trunk of ``depth`` ReLU layers and an encoded
view direction through one more layer (the paper's Fig. 7, code-release variant)::

    e = gamma_Lx(x);  h = layers.0(e)  (+ ReLU if first_activation)
    for i = 1 .. depth-1:  h = relu(layers.i([h, e] if i in skips else h))
    sigma = act(alpha_head(h));  f = feature(h)  (+ ReLU if feature_activation)
    rgb = sigmoid(rgb_head(relu(dir_layer([f, gamma_Ld(d)]))))

Positions are encoded as given (no normalisation by the aabb), as nerf-pytorch does for world or
NDC coordinates. The paper's network (skip after its fifth layer, i.e. into ``layers.5``, no ReLU
on the feature) is the default; krrish94/nerf-pytorch's ``FlexibleNeRFModel`` is
``first_activation=False, feature_activation=True`` (see ``nerfzip.importers.nerf_pytorch``).
The skip input is ``[h, gamma(x)]`` as in FlexibleNeRFModel; the paper's code concatenates
``[gamma(x), h]``, which only permutes the columns of ``layers.{skip}.weight``.
Hierarchical sampling keeps a second, coarse network of the same architecture;
``sized_config`` gives the paper's layout at any size, and without the coarse network for
fields that march through an occupancy grid instead (distillation students).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from nerfzip.errors import NerfzipError
from nerfzip.fields.base import Field, march_step, register_field
from nerfzip.fields.encoding import encoding_dim, positional_encoding
from nerfzip.utils.schema import limits

if TYPE_CHECKING:
    from nerfzip.training.config import TrainConfig


@dataclass
class MLPNeRFConfig:
    """Configuration of an MLP NeRF; the defaults are the paper's network."""

    pos_freqs: int = field(default=10, metadata=limits(0, 32))
    """Sin/cos frequencies L of the position encoding."""
    dir_freqs: int = field(default=4, metadata=limits(0, 32))
    """Sin/cos frequencies L of the view-direction encoding."""
    hidden: int = field(default=256, metadata=limits(1, 8192))
    """Width of the feature layer, and of every trunk layer unless ``widths`` gives them."""
    depth: int = field(default=8, metadata=limits(1, 64))
    """Number of trunk layers, the first included."""
    skips: tuple[int, ...] = field(default=(5,), metadata=limits(items=(1, 63)))
    """Trunk layers whose input is [h, gamma(x)] (the paper's skip after layer 4 feeds layer 5)."""
    first_activation: bool = True
    """ReLU after the first layer (the paper: yes; nerf-pytorch's FlexibleNeRFModel: no)."""
    feature_activation: bool = False
    """ReLU after the feature layer (the paper: no; FlexibleNeRFModel: yes)."""
    dir_hidden: int = field(default=128, metadata=limits(1, 8192))
    """Width of the view-direction layer (hidden // 2 in the paper)."""
    hierarchical: bool = True
    """Keep a coarse network of the same architecture for hierarchical sampling."""
    widths: tuple[int, ...] = field(default=(), metadata=limits(items=(1, 8192)))
    """Output width of each trunk layer when they differ (structured pruning); empty: all
    ``hidden``."""
    density_activation: str = "relu"
    """sigma = act(raw): "relu" (the paper), "softplus" or "trunc_exp" (from-scratch training)."""

    def __post_init__(self) -> None:
        self.skips = tuple(sorted({int(i) for i in self.skips}))
        self.widths = tuple(int(w) for w in self.widths)
        if self.widths and (len(self.widths) != self.depth or min(self.widths) < 1):
            raise NerfzipError(f"mlp-nerf: widths {self.widths} must give {self.depth} "
                               "positive layer widths")
        if self.depth < 1 or self.hidden < 1 or self.dir_hidden < 1:
            raise NerfzipError(f"mlp-nerf: depth, hidden and dir_hidden must be >= 1 "
                               f"(got {self.depth}, {self.hidden}, {self.dir_hidden})")
        if self.pos_freqs < 0 or self.dir_freqs < 0:
            raise NerfzipError("mlp-nerf: pos_freqs and dir_freqs must be >= 0")
        if any(not 1 <= i < self.depth for i in self.skips):
            raise NerfzipError(f"mlp-nerf: skips {self.skips} must lie in 1..{self.depth - 1}")
        if self.density_activation not in DENSITY_ACTIVATIONS:
            raise NerfzipError(f"mlp-nerf: unknown density_activation "
                               f"{self.density_activation!r} (known: "
                               f"{', '.join(DENSITY_ACTIVATIONS)})")


def paper_skips(depth: int) -> tuple[int, ...]:
    """The skip into the middle layer (the paper's 5 of 8), once there are 4 layers."""
    return (depth // 2 + 1,) if depth >= 4 else ()


def sized_config(width: int, depth: int, hierarchical: bool = True) -> MLPNeRFConfig:
    """The paper's layout at another size. ``hierarchical=False`` (occupancy-grid marching):
    no coarse network, and exponential density, which a young field needs to become opaque
    quickly where the grid lets samples through (instant-ngp's choice; its log is linear in the
    network output, which distillation's density loss compares)."""
    return MLPNeRFConfig(hidden=width, depth=depth, skips=paper_skips(depth),
                         dir_hidden=max(1, width // 2), hierarchical=hierarchical,
                         density_activation="relu" if hierarchical else "trunc_exp")


class _TruncExp(torch.autograd.Function):
    """exp(x) whose gradient uses exp(clamp(x, -15, 15)) (torch-ngp's ``trunc_exp``)."""

    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(x)
        return torch.exp(x)

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:  # type: ignore[override]
        (x,) = ctx.saved_tensors
        return grad * torch.exp(x.clamp(-15.0, 15.0))


DENSITY_ACTIVATIONS: dict[str, Callable[[Tensor], Tensor]] = {
    "relu": F.relu,
    "softplus": F.softplus,
    "trunc_exp": _TruncExp.apply,  # type: ignore[dict-item]
}


class MLPNetwork(nn.Module):
    """One NeRF MLP: ``forward(x [N, 3], d [N, 3]) -> (sigma [N], rgb [N, 3])``.

    Parameters: ``layers.{i}`` (i < depth; input 3(2Lx+1), or hidden + 3(2Lx+1) at a skip),
    ``alpha_head`` (1 x hidden), ``feature`` (hidden x hidden), ``dir_layer``
    (dir_hidden x (hidden + 3(2Ld+1))), ``rgb_head`` (3 x dir_hidden).
    """

    cpu_chunk: int = 8192
    """Rows evaluated at a time on the CPU (an execution setting, not part of the model)."""

    def __init__(self, config: MLPNeRFConfig, generator: torch.Generator | None = None):
        super().__init__()
        c = config
        self.pos_freqs, self.dir_freqs = c.pos_freqs, c.dir_freqs
        self.skips = frozenset(c.skips)
        self.first_activation, self.feature_activation = c.first_activation, c.feature_activation
        self.sigma_act = DENSITY_ACTIVATIONS[c.density_activation]
        pos_dim, dir_dim = encoding_dim(3, c.pos_freqs), encoding_dim(3, c.dir_freqs)
        w = c.widths or (c.hidden,) * c.depth
        self.layers = nn.ModuleList(
            nn.Linear(pos_dim if i == 0 else w[i - 1] + (pos_dim if i in self.skips else 0),
                      w[i]) for i in range(c.depth))
        self.alpha_head = nn.Linear(w[-1], 1)
        self.feature = nn.Linear(w[-1], c.hidden)
        self.dir_layer = nn.Linear(c.hidden + dir_dim, c.dir_hidden)
        self.rgb_head = nn.Linear(c.dir_hidden, 3)
        # The paper's initialisation (Keras Dense): Glorot-uniform weights, zero biases.
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight, generator=generator)
                nn.init.zeros_(module.bias)

    def trunk(self, x: Tensor) -> Tensor:
        """Trunk features h [N, hidden] at positions ``x`` [N, 3]."""
        enc = positional_encoding(x, self.pos_freqs)
        layers = self.layers
        h = layers[0](enc)
        if self.first_activation:
            h = F.relu(h, inplace=True)
        for i in range(1, len(layers)):
            if i in self.skips:
                h = torch.cat((h, enc), dim=-1)
            h = F.relu(layers[i](h), inplace=True)
        return h

    def sigma_from(self, h: Tensor) -> Tensor:
        """Density [N] from trunk features."""
        raw = self.alpha_head(h)
        return self.sigma_act(raw.squeeze(-1))

    def rgb_from(self, h: Tensor, d: Tensor) -> Tensor:
        """Colour [N, 3] from trunk features and unit view directions ``d`` [N, 3]."""
        f = self.feature(h)
        if self.feature_activation:
            f = F.relu(f, inplace=True)
        g = torch.cat((f, positional_encoding(d, self.dir_freqs)), dim=-1)
        g = F.relu(self.dir_layer(g), inplace=True)
        return torch.sigmoid(self.rgb_head(g))

    def density(self, x: Tensor) -> Tensor:
        """Density sigma [N] at ``x`` [N, 3] (trunk and alpha head only)."""
        return self._in_chunks(lambda x: self.sigma_from(self.trunk(x)), x)

    def radiance(self, x: Tensor, d: Tensor) -> Tensor:
        """Colour [N, 3] at ``x`` [N, 3] seen along ``d`` [N, 3]."""
        return self._in_chunks(lambda x, d: self.rgb_from(self.trunk(x), d), x, d)

    def forward(self, x: Tensor, d: Tensor) -> tuple[Tensor, Tensor]:
        """(sigma [N], rgb [N, 3]) with the trunk evaluated once."""

        def both(x: Tensor, d: Tensor) -> tuple[Tensor, Tensor]:
            h = self.trunk(x)
            return self.sigma_from(h), self.rgb_from(h, d)

        return self._in_chunks(both, x, d)

    def _in_chunks(self, fn: Callable[..., Any], *inputs: Tensor) -> Any:
        """``fn`` over row blocks of ``cpu_chunk`` on the CPU, where activations of a few MB
        stay in reused heap memory instead of fresh pages (1.3-1.7x faster at 65536 rows);
        whole on other devices. Results are concatenated back along the rows."""
        n = inputs[0].shape[0]
        if inputs[0].device.type != "cpu" or n <= self.cpu_chunk:
            return fn(*inputs)
        parts = [fn(*(t[i:i + self.cpu_chunk] for t in inputs))
                 for i in range(0, n, self.cpu_chunk)]
        if isinstance(parts[0], tuple):
            return tuple(torch.cat(column) for column in zip(*parts, strict=True))
        return torch.cat(parts)


@register_field("mlp-nerf", file_id=3)
class MLPNeRF(Field):
    """An MLP NeRF: ``fine`` answers density/radiance; ``coarse`` (if hierarchical) guides
    sampling through ``coarse_field()``. Parameter names: ``fine.layers.{i}.weight``,
    ``fine.alpha_head.bias``, ``coarse.dir_layer.weight``, ... (see ``MLPNetwork``).
    """

    config_cls = MLPNeRFConfig

    def __init__(self, config: MLPNeRFConfig, aabb: Tensor, seed: int = 0):
        super().__init__(aabb)
        self.config = config
        gen = torch.Generator().manual_seed(seed)
        self.fine = MLPNetwork(config, gen)
        self.coarse = MLPNetwork(config, gen) if config.hierarchical else None

    def density(self, x: Tensor) -> Tensor:
        return self.fine.density(x)

    def radiance(self, x: Tensor, d: Tensor) -> Tensor:
        return self.fine.radiance(x, d)

    def forward(self, x: Tensor, d: Tensor) -> tuple[Tensor, Tensor]:
        return self.fine(x, d)

    def coarse_field(self) -> MLPNetwork:
        """The network for the coarse pass (the fine one when not hierarchical)."""
        return self.coarse if self.coarse is not None else self.fine

    # --- training hooks ---------------------------------------------------------------------
    @classmethod
    def training_defaults(cls, family: str, scene_format: str, cfg: TrainConfig) -> TrainConfig:
        """NeRF's learning rate (5e-4) and a smaller batch; no grid to crop."""
        return replace(cfg, lr_net=5e-4, batch_size=1024, shrink_at=-1.0)

    @classmethod
    def initial_config(cls, family: str, cfg: TrainConfig, aabb: Tensor) -> MLPNeRFConfig:
        """The paper's layout at ``cfg.mlp_width`` x ``cfg.mlp_depth``, coarse + fine."""
        return sized_config(cfg.mlp_width, cfg.mlp_depth)

    def render_settings(self, cfg: TrainConfig, step: int | None = None) -> dict[str, Any]:
        """Hierarchical sampling with its coarse network; occupancy marching (``march_step``)
        without one."""
        if self.config.hierarchical:
            return super().render_settings(cfg, step)
        return {"sampler": "occupancy", "step_size": march_step(self.aabb, cfg, step),
                "max_samples": cfg.max_samples}

    def wants_occupancy(self) -> bool:
        return not self.config.hierarchical
