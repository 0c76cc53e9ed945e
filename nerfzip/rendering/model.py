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


@dataclass
class SceneSpace:
    """The parts of a scene a model needs to render on its own."""

    background: list[float]
    near: float
    far: float
    ndc: dict[str, Any] | None = None
    name: str = ""
    source: str = ""
    format: str = ""
    downscale: int | None = None
    pixel_offset: float = 0.5
    """Where a pixel's ray passes: 0.5 its centre (models trained here), 0 its top-left corner
    (nerf-pytorch's convention, kept for the models imported from it)."""

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
        """Render rays in chunks without gradients: rgb [N, 3] in [0, 1]."""
        self.field.eval()
        return render_view_rays(self.field, rays, self.background, self.render, self.occupancy)

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
