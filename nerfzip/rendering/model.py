"""``RadianceModel``: everything needed to render a trained field — the field, its occupancy
grid, how to sample it, and the scene space it lives in (background, NDC, near/far).

This is what a training run saves and what evaluation, rendering (and later the codec) load.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any

import torch
from torch import Tensor

from nerfzip.data.cameras import RayBundle, image_rays
from nerfzip.data.scene import NDCParams, Scene, make_field_rays
from nerfzip.errors import NerfzipError
from nerfzip.fields.base import Field
from nerfzip.rendering.occupancy import OccupancyGrid
from nerfzip.rendering.renderer import RenderConfig, render_view_rays
from nerfzip.utils.schema import from_dict, limits

MAX_DEPTH = 1e6
"""Largest near / far a file may give (world units)."""


@dataclass
class SceneSpace:
    """The parts of a scene a model needs to render on its own (ranges checked when read from
    a file)."""

    background: list[float] = field(metadata=limits(length=3, items=(0.0, 1.0)))
    """Colour behind the scene, RGB in [0, 1]."""
    near: float = field(metadata=limits(0.0, MAX_DEPTH))
    """Where rays start (world units; 0 in NDC)."""
    far: float = field(metadata=limits(0.0, MAX_DEPTH, lo_open=True))
    """Where rays end (world units; 1 in NDC); beyond ``near``."""
    ndc: dict[str, Any] | None = None
    """The forward-facing NDC mapping (``NDCParams`` as a dict), for LLFF scenes."""
    name: str = ""
    """The scene's name."""
    source: str = ""
    """Where the scene was loaded from."""
    format: str = ""
    """The loader that read it (blender, llff, nerfstudio, procedural)."""
    downscale: int | None = field(default=None, metadata=limits(1, 1 << 10))
    """The image downscale it was trained at."""
    pixel_offset: float = field(default=0.5, metadata=limits(0.0, 1.0))
    """Where a pixel's ray passes: 0.5 its centre (models trained here), 0 its top-left corner
    (nerf-pytorch's convention, kept for the models imported from it)."""

    def __post_init__(self) -> None:
        if not self.far > self.near:
            raise NerfzipError(f"far ({self.far}) must be beyond near ({self.near})")
        if self.ndc is not None:
            from_dict(NDCParams, self.ndc, "ndc")

    def to_dict(self) -> dict[str, Any]:
        """The space as saved in a file. ``pixel_offset`` is written only when it is not the
        default, so files made before it existed stay byte-identical."""
        out = asdict(self)
        if self.pixel_offset == 0.5:
            del out["pixel_offset"]
        return out

    @classmethod
    def of(cls, scene: Scene, downscale: int | None = None) -> SceneSpace:
        return cls(scene.background.tolist(), scene.near, scene.far,
                   asdict(scene.ndc) if scene.ndc is not None else None, scene.name,
                   scene.source, scene.format, downscale)

    def ndc_params(self) -> NDCParams | None:
        return NDCParams(**self.ndc) if self.ndc else None

    def make_rays(self, origins: Tensor, directions: Tensor) -> RayBundle:
        """World-space camera rays -> rays in the model's field space."""
        return make_field_rays(origins, directions, self.near, self.far, self.ndc_params())


@dataclass
class RadianceModel:
    """A renderable model: field + occupancy grid + render settings + scene space."""

    field: Field
    render: RenderConfig
    space: SceneSpace
    occupancy: OccupancyGrid | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def background(self) -> Tensor:
        return torch.tensor(self.space.background, dtype=torch.float32,
                            device=self.field.aabb.device)

    def set_step_scale(self, scale: float) -> None:
        """March with ``scale`` times the trained step (occupancy sampler): fewer samples per
        ray for ``scale > 1``; the per-ray sample budget scales with it. Recorded in
        ``meta["step_scale"]``."""
        if not scale > 0:
            raise NerfzipError(f"step scale {scale}: must be positive")
        if self.render.sampler != "occupancy":
            raise NerfzipError(f"step scale: the {self.render.sampler} sampler has no step "
                               "(only grid-marched fields do)")
        self.render = replace(self.render, step_size=self.render.step_size * scale,
                              max_samples=max(1, round(self.render.max_samples / scale)))
        self.meta["step_scale"] = self.meta.get("step_scale", 1.0) * scale

    def render_rays(self, rays: RayBundle) -> Tensor:
        """Render rays in chunks without gradients: rgb [N, 3] in [0, 1]. A colour that is
        not a number (a field whose maths overflowed) is shown as black rather than passed
        on: images, metrics and encoders downstream all assume finite pixels."""
        self.field.eval()
        rgb = render_view_rays(self.field, rays, self.background, self.render, self.occupancy)
        return torch.nan_to_num(rgb, nan=0.0)

    def render_view(self, scene: Scene, split: str, index: int) -> Tensor:
        """Render one view of ``scene``: [H, W, 3] float in [0, 1]."""
        cams = scene.split(split).cameras
        h, w = int(cams.height[index]), int(cams.width[index])
        o, d = image_rays(cams, index, self.space.pixel_offset)
        rays = self.space.make_rays(o, d).to(self.field.aabb.device)
        return self.render_rays(rays).view(h, w, 3).cpu()

    def to(self, device: str | torch.device) -> RadianceModel:
        self.field.to(device)
        if self.occupancy is not None:
            self.occupancy.to(device)
        return self
