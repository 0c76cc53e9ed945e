"""The ``Scene``: posed images split into train/val/test, with background, bounds and the space the
field lives in. (``load_scene``, which recognises a folder's format, is ``nerfzip.data.load``.)

A scene's *field space* is where fields are defined: world space (Blender, nerfstudio: bounded
by ``aabb``) or normalised device coordinates for forward-facing LLFF captures (``ndc`` set;
``aabb`` is then the NDC box). ``Scene.make_rays`` turns world-space camera rays into rays in
field space with their ``near``/``far`` range, so renderers never special-case the format.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

from nerfzip.data.cameras import Cameras, RayBundle, image_rays, pixel_rays, to_ndc
from nerfzip.errors import NerfzipError
from nerfzip.utils.schema import limits


@dataclass
class SceneSplit:
    """The views of one split."""

    images: Tensor  # [N, H, W, 3] uint8, already composited on the scene background
    cameras: Cameras
    names: list[str]

    def __len__(self) -> int:
        return self.images.shape[0]


@dataclass(frozen=True)
class NDCParams:
    """The forward-facing NDC mapping (``cameras.to_ndc``) of an LLFF scene (ranges checked
    when read from a file: beyond them the mapping overflows float32)."""

    focal: float = field(metadata=limits(1e-3, 1e7))
    """Focal length in pixels."""
    width: int = field(metadata=limits(1, 1 << 16))
    """Image width in pixels."""
    height: int = field(metadata=limits(1, 1 << 16))
    """Image height in pixels."""
    near: float = field(default=1.0, metadata=limits(1e-3, 1e3))
    """Depth of the plane the rays start on (world units)."""


@dataclass
class Scene:
    """Posed images and everything a renderer needs to know about their space."""

    name: str
    format: str  # "blender" | "llff" | "nerfstudio" | "procedural"
    splits: dict[str, SceneSplit]
    background: Tensor  # [3] float in [0, 1]
    aabb: Tensor  # [2, 3] min / max corner of the field's bounded domain (field space)
    near: float  # default ray start (world units, or 0 in NDC)
    far: float  # default ray end (world units, or 1 in NDC)
    ndc: NDCParams | None = None
    source: str = ""
    info: dict = field(default_factory=dict)  # loader notes shown by `nerfzip data`

    def split(self, name: str) -> SceneSplit:
        if name not in self.splits:
            raise NerfzipError(f"scene {self.name!r} has no {name!r} split "
                               f"(it has {', '.join(self.splits)})")
        return self.splits[name]

    def make_rays(self, origins: Tensor, directions: Tensor) -> RayBundle:
        """World-space rays (unit directions) -> rays in field space with near/far."""
        return make_field_rays(origins, directions, self.near, self.far, self.ndc)

    def view_rays(self, split: str, index: int) -> RayBundle:
        """Rays for every pixel of one view, row-major ([H*W])."""
        o, d = image_rays(self.split(split).cameras, index)
        return self.make_rays(o, d)

    def random_rays(self, split: str, n: int, generator: torch.Generator
                    ) -> tuple[RayBundle, Tensor]:
        """``n`` rays through uniformly drawn pixels of ``split`` and their colours [n, 3] in
        [0, 1] (what training, fine-tuning and importance estimates sample)."""
        imgs = self.split(split).images
        views, h, w = imgs.shape[:3]
        idx = torch.randint(0, views * h * w, (n,), generator=generator)
        cam, pix = idx // (h * w), idx % (h * w)
        v, u = pix // w, pix % w
        return self.pixel_rays(split, cam, u, v), imgs[cam, v, u].to(torch.float32) / 255.0

    def pixel_rays(self, split: str, cam_idx: Tensor, u: Tensor, v: Tensor) -> RayBundle:
        o, d = pixel_rays(self.split(split).cameras, cam_idx, u, v)
        return self.make_rays(o, d)

    def summary(self) -> str:
        """A human-readable description, printed by ``nerfzip data``."""
        lines = [f"scene      {self.name} ({self.format}) from {self.source or '<built-in>'}"]
        for name, sp in self.splits.items():
            h, w = sp.images.shape[1:3]
            cams = sp.cameras
            lines.append(f"{name:<10} {len(sp):4d} views  {w}x{h}  fx={float(cams.fx[0]):.2f} "
                         f"fy={float(cams.fy[0]):.2f} cx={float(cams.cx[0]):.2f} "
                         f"cy={float(cams.cy[0]):.2f}")
        lo, hi = self.aabb.tolist()
        space = "NDC (forward-facing)" if self.ndc is not None else "world"
        lines.append(f"space      {space}; bounds min {fmt3(lo)} max {fmt3(hi)}")
        lines.append(f"rays       near {self.near:g} far {self.far:g}")
        lines.append(f"background {fmt3(self.background.tolist())}")
        for k, v in self.info.items():
            lines.append(f"{k:<10} {v}")
        return "\n".join(lines)


def make_field_rays(origins: Tensor, directions: Tensor, near: float, far: float,
                    ndc: NDCParams | None) -> RayBundle:
    """World-space rays with unit directions -> rays in field space (NDC when ``ndc`` is set,
    then t runs over [0, 1]), keeping the world direction as the view direction."""
    n = origins.shape[0]
    if ndc is not None:
        o, d = to_ndc(origins, directions, ndc.focal, ndc.width, ndc.height, ndc.near)
        return RayBundle(o, d, directions, torch.zeros(n), torch.ones(n))
    return RayBundle(origins, directions, directions, torch.full((n,), near),
                     torch.full((n,), far))


def fmt3(v: list[float]) -> str:
    return "(" + ", ".join(f"{x:.3g}" for x in v) + ")"
