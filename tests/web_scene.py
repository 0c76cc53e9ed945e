"""A tiny baked procedural octree for the viewer tests (tests/ helper, on the path under pytest).

The source is the built-in procedural scene written as a field (``data.procedural``: the slab
and the two spheres, opaque, with their textures and the Blinn-Phong highlight that moves with
the view direction), so baking it takes a second instead of training a field first.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
from torch import Tensor

from nerfzip.baking.octree import BakeConfig, bake
from nerfzip.codec import nrz
from nerfzip.data import procedural as P
from nerfzip.fields.base import Field
from nerfzip.rendering.model import RadianceModel, SceneSpace
from nerfzip.rendering.renderer import RenderConfig

DENSITY = 40.0


class ProceduralField(Field):
    """The procedural scene's shapes as a field: density ``DENSITY`` inside, 0 outside; colour
    the shape's texture lit as ``procedural_ground_truth`` lights it."""

    family = "procedural-source"

    def shapes(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Which shape holds each point (-1: none), its normal there and its texture."""
        lo, hi = torch.tensor(P.SLAB[0]), torch.tensor(P.SLAB[1])
        obj = torch.where(((x >= lo) & (x <= hi)).all(-1), 0, -1)
        normal = torch.tensor([0.0, 0.0, 1.0]).expand_as(x).clone()
        tex = P.slab_texture(x)
        for k, ((centre, radius), texture) in enumerate(
                zip(P.SPHERES, (P.checker_sphere_texture, P.striped_sphere_texture))):
            rel = x - torch.tensor(centre)
            inside = rel.norm(dim=-1) <= radius
            n = rel / rel.norm(dim=-1, keepdim=True).clamp(min=1e-6)
            obj = torch.where(inside, k + 1, obj)
            normal = torch.where(inside[:, None], n, normal)
            tex = torch.where(inside[:, None], texture(n), tex)
        return obj, normal, tex

    def density(self, x: Tensor) -> Tensor:
        return (self.shapes(x)[0] >= 0).float() * DENSITY

    def radiance(self, x: Tensor, d: Tensor) -> Tensor:
        _, normal, tex = self.shapes(x)
        light = torch.tensor(P.LIGHT)
        light = (light / light.norm()).expand_as(d)
        half = torch.nn.functional.normalize(light - d, dim=-1)
        diffuse = (normal * light).sum(-1).clamp(min=0)
        spec = (normal * half).sum(-1).clamp(min=0) ** P.SHININESS
        rgb = tex * (P.AMBIENT + P.DIFFUSE * diffuse)[:, None] + P.SPECULAR * spec[:, None]
        return rgb.clamp(0.02, 0.98)


def baked_procedural(depth: int = 6, resolution: int = 32, appearance: str = "sh"
                     ) -> tuple[RadianceModel, object]:
    """The procedural scene baked into an octree of ``depth`` levels (SH leaves, or features
    + decoder fitted briefly), and the scene."""
    scene = P.load_procedural(resolution=resolution, n_train=12, n_test=2)
    source = RadianceModel(ProceduralField(scene.aabb), RenderConfig(), SceneSpace.of(scene))
    cfg = BakeConfig(depth=depth, n_rays=8192, directions=24, appearance=appearance,
                     fit_steps=150)
    model, _ = bake(source, cfg, scene)
    return model, scene


def write_baked(path: Path, depth: int = 6, appearance: str = "sh") -> RadianceModel:
    model, _ = baked_procedural(depth, appearance=appearance)
    nrz.save(model, path)
    return nrz.load(path)


def psnr(a: Tensor, b: Tensor) -> float:
    """PSNR (dB) between uint8 images."""
    mse = ((a.double() - b.double()) / 255.0).pow(2).mean().item()
    return 10 * math.log10(1.0 / max(mse, 1e-12))
