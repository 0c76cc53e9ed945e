"""The viewers' camera: one pinhole view in nerfzip's convention (``data.cameras``: ``c2w`` 3x4
camera-to-world, the camera looks down its local ``-z``, ``+y`` up in the image, pixel centres at
``+0.5``), its text form in a page URL, the orbit a viewer turns it around, and the Python
render of it that the browser's pictures are checked against.

URL form (``#camera=...`` in the exported page): 18 comma-separated numbers
``width,height,fx,fy,cx,cy`` then the 12 entries of ``c2w`` row by row.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from nerfzip.data.cameras import Cameras, image_rays
from nerfzip.errors import NerfzipError


@dataclass
class View:
    """One pinhole camera: ``c2w`` [3, 4] (float64), focal lengths and principal point in
    pixels, image size in pixels."""

    c2w: Tensor
    fx: float
    fy: float
    cx: float
    cy: float
    width: int
    height: int

    def to_cameras(self) -> Cameras:
        one = lambda v: torch.tensor([float(v)])  # noqa: E731
        return Cameras(self.c2w.float()[None], one(self.fx), one(self.fy), one(self.cx),
                       one(self.cy), torch.tensor([self.width]), torch.tensor([self.height]))

    def resized(self, width: int, height: int) -> View:
        """The same view rendered at ``width`` x ``height`` pixels (intrinsics scaled)."""
        sx, sy = width / self.width, height / self.height
        return View(self.c2w, self.fx * sx, self.fy * sy, self.cx * sx, self.cy * sy, width,
                    height)

    def to_fragment(self) -> str:
        """The ``#camera=`` value of the exported page for this view."""
        nums = [self.width, self.height, self.fx, self.fy, self.cx, self.cy,
                *self.c2w.reshape(-1).tolist()]
        return ",".join(f"{v:.9g}" for v in nums)

    @classmethod
    def from_fragment(cls, text: str) -> View:
        try:
            nums = [float(v) for v in text.split(",")]
        except ValueError:
            raise NerfzipError(f"camera {text!r}: expected 18 comma-separated numbers") from None
        if len(nums) != 18 or not all(math.isfinite(v) for v in nums):
            raise NerfzipError(f"camera {text!r}: expected 18 finite comma-separated numbers "
                               "(width,height,fx,fy,cx,cy and c2w row by row)")
        if not (1 <= nums[0] <= 8192 and 1 <= nums[1] <= 8192 and nums[2] > 0 and nums[3] > 0):
            raise NerfzipError(f"camera {text!r}: width and height must be 1..8192 pixels and "
                               "the focal lengths positive")
        return cls(torch.tensor(nums[6:], dtype=torch.float64).view(3, 4), nums[2], nums[3],
                   nums[4], nums[5], int(nums[0]), int(nums[1]))

    @classmethod
    def of(cls, cameras: Cameras, index: int) -> View:
        return cls(cameras.c2w[index].double(), float(cameras.fx[index]),
                   float(cameras.fy[index]), float(cameras.cx[index]),
                   float(cameras.cy[index]), int(cameras.width[index]),
                   int(cameras.height[index]))

    @classmethod
    def from_dict(cls, d: dict) -> View:
        """The inverse of ``to_dict`` (a ``scene.json`` camera)."""
        return cls(torch.tensor(d["c2w"], dtype=torch.float64), float(d["fx"]), float(d["fy"]),
                   float(d["cx"]), float(d["cy"]), int(d["width"]), int(d["height"]))

    def to_dict(self) -> dict:
        return {"c2w": self.c2w.tolist(), "fx": self.fx, "fy": self.fy, "cx": self.cx,
                "cy": self.cy, "width": self.width, "height": self.height}


def look_at(eye: Tensor, target: Tensor, up: Tensor) -> Tensor:
    """``c2w`` [3, 4] (float64) of a camera at ``eye`` looking at ``target``, ``up`` above."""
    eye, target, up = eye.double(), target.double(), up.double()
    z = eye - target
    z = z / z.norm()
    x = torch.linalg.cross(up, z)
    if float(x.norm()) < 1e-9:  # looking along ``up``: any horizontal axis will do
        x = torch.linalg.cross(torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64), z)
    x = x / x.norm()
    y = torch.linalg.cross(z, x)
    return torch.stack((x, y, z, eye), -1)


@dataclass
class Orbit:
    """What a viewer's camera turns around: ``target`` [3] and the world's ``up`` [3]."""

    target: Tensor
    up: Tensor

    @classmethod
    def of(cls, cameras: Cameras | None, aabb: Tensor, ndc: bool) -> Orbit:
        """The point nearest to every camera's optical axis (least squares) and the cameras'
        mean ``+y``; without cameras, the box's centre and ``+z``."""
        if cameras is None or len(cameras) == 0:
            centre = aabb.double().mean(0) if not ndc else torch.tensor([0.0, 0.0, -3.0])
            up = torch.tensor([0.0, 1.0, 0.0] if ndc else [0.0, 0.0, 1.0])
            return cls(centre.double(), up.double())
        c2w = cameras.c2w.double()
        up = c2w[:, :, 1].mean(0)
        up = up / up.norm().clamp(min=1e-9)
        pos, fwd = c2w[:, :, 3], -c2w[:, :, 2]
        # sum_i (I - f f^T)(x - p_i) = 0
        proj = torch.eye(3, dtype=torch.float64) - fwd[:, :, None] * fwd[:, None, :]
        a, b = proj.sum(0), torch.einsum("nij,nj->i", proj, pos)
        eig = torch.linalg.eigvalsh(a)
        if float(eig[0]) < 0.05 * float(eig[-1]):  # axes nearly parallel (forward-facing)
            target = pos.mean(0) + 3.0 * fwd.mean(0) / fwd.mean(0).norm()
        else:
            target = torch.linalg.solve(a, b)
        return cls(target, up)


def default_view(orbit: Orbit, aabb: Tensor, width: int = 400, height: int = 400,
                 fov_deg: float = 45.0) -> View:
    """A camera above the orbit's target, far enough to see the whole box."""
    radius = float((aabb[1] - aabb[0]).double().norm()) / 2
    dist = radius / math.sin(math.radians(fov_deg) / 2) * 1.05
    up = orbit.up / orbit.up.norm()
    side = torch.linalg.cross(up, torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64))
    if float(side.norm()) < 1e-6:
        side = torch.tensor([0.0, 1.0, 0.0], dtype=torch.float64)
    side = side / side.norm()
    eye = orbit.target + dist * (0.8 * -side + 0.6 * up)
    f = 0.5 * height / math.tan(math.radians(fov_deg) / 2)
    return View(look_at(eye, orbit.target, up), f, f, width / 2, height / 2, width, height)


@torch.no_grad()
def render(model, view: View) -> Tensor:
    """The Python renderer's picture of ``view``: [H, W, 3] float in [0, 1]."""
    o, d = image_rays(view.to_cameras(), 0, model.space.pixel_offset)
    rays = model.space.make_rays(o, d).to(model.field.aabb.device)
    return model.render_rays(rays).view(view.height, view.width, 3).cpu()


def to_uint8(image: Tensor) -> Tensor:
    """[H, W, 3] floats in [0, 1] -> uint8, rounded as a canvas stores them."""
    return (image.clamp(0, 1) * 255).round().to(torch.uint8)
