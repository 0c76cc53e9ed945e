"""Pinhole cameras with a principal point (and optional OpenCV radial-tangential distortion), and
batched ray generation.

Conventions (the NeRF / Blender / OpenGL ones, shared by nerfstudio and instant-ngp files):

- ``c2w`` is a 3x4 camera-to-world matrix; the camera looks down its local ``-z`` axis, ``+y`` is
  up in the image and ``+x`` is right.
- Pixel ``(u, v)`` = (column, row) has its centre at ``(u + 0.5, v + 0.5)``; row 0 is the top.
- The ray through a pixel centre has camera-space direction
  ``((u + 0.5 - cx) / fx, -(v + 0.5 - cy) / fy, -1)`` (after undistortion), rotated by ``c2w``.
- World-space ray directions are unit length, so a sample's ``t`` is a distance in world units.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass
class RayBundle:
    """A batch of rays. Sample points are ``origins + t * directions`` for ``t`` in [near, far]."""

    origins: Tensor  # [N, 3]
    directions: Tensor  # [N, 3]; unit length except in NDC space
    viewdirs: Tensor  # [N, 3] unit world-space view direction fed to the colour head
    near: Tensor  # [N]
    far: Tensor  # [N]

    def __len__(self) -> int:
        return self.origins.shape[0]

    def index(self, sel: Tensor | slice) -> RayBundle:
        """The rays selected by ``sel`` (a slice, boolean mask or index tensor)."""
        return RayBundle(self.origins[sel], self.directions[sel], self.viewdirs[sel],
                         self.near[sel], self.far[sel])

    def to(self, device: torch.device | str) -> RayBundle:
        return RayBundle(*(t.to(device) for t in (self.origins, self.directions, self.viewdirs,
                                                   self.near, self.far)))


@dataclass
class Cameras:
    """A set of N pinhole cameras; every field has leading dimension N."""

    c2w: Tensor  # [N, 3, 4] float32
    fx: Tensor  # [N]
    fy: Tensor  # [N]
    cx: Tensor  # [N]
    cy: Tensor  # [N]
    width: Tensor  # [N] int64
    height: Tensor  # [N] int64
    distortion: Tensor | None = None  # [N, 4]: OpenCV k1, k2, p1, p2; None = no distortion

    def __len__(self) -> int:
        return self.c2w.shape[0]

    def __getitem__(self, sel: int | slice | Tensor) -> Cameras:
        if isinstance(sel, int):
            sel = slice(sel, sel + 1)
        dist = None if self.distortion is None else self.distortion[sel]
        return Cameras(self.c2w[sel], self.fx[sel], self.fy[sel], self.cx[sel], self.cy[sel],
                       self.width[sel], self.height[sel], dist)

    def scaled(self, factor: float) -> Cameras:
        """Cameras for images resized by ``factor`` (e.g. 0.5 halves the resolution)."""
        w = torch.round(self.width.double() * factor).long()
        h = torch.round(self.height.double() * factor).long()
        sx, sy = w.double() / self.width.double(), h.double() / self.height.double()
        return Cameras(self.c2w, (self.fx * sx).float(), (self.fy * sy).float(),
                       (self.cx * sx).float(), (self.cy * sy).float(), w, h, self.distortion)


def undistort_points(xd: Tensor, yd: Tensor, dist: Tensor, iters: int = 10
                     ) -> tuple[Tensor, Tensor]:
    """Invert the OpenCV radial-tangential model on normalised image coordinates.

    Forward model (OpenCV): with r2 = x^2 + y^2,
    ``xd = x (1 + k1 r2 + k2 r2^2) + 2 p1 x y + p2 (r2 + 2 x^2)`` and
    ``yd = y (1 + k1 r2 + k2 r2^2) + p1 (r2 + 2 y^2) + 2 p2 x y``.
    Solved by Newton's method from ``(xd, yd)``, as nerfstudio and COLMAP do; ``dist`` is
    ``[..., 4]`` broadcastable to the points.
    """
    k1, k2, p1, p2 = dist.unbind(-1)
    x, y = xd.clone(), yd.clone()
    for _ in range(iters):
        r2 = x * x + y * y
        radial = 1.0 + k1 * r2 + k2 * r2 * r2
        fx_ = x * radial + 2 * p1 * x * y + p2 * (r2 + 2 * x * x) - xd
        fy_ = y * radial + p1 * (r2 + 2 * y * y) + 2 * p2 * x * y - yd
        # Jacobian of the forward model.
        dradial_dr2 = k1 + 2 * k2 * r2
        j11 = radial + 2 * x * x * dradial_dr2 + 2 * p1 * y + 6 * p2 * x
        j12 = 2 * x * y * dradial_dr2 + 2 * p1 * x + 2 * p2 * y
        j21 = 2 * x * y * dradial_dr2 + 2 * p1 * x + 2 * p2 * y
        j22 = radial + 2 * y * y * dradial_dr2 + 6 * p1 * y + 2 * p2 * x
        det = j11 * j22 - j12 * j21
        det = torch.where(det.abs() < 1e-12, torch.full_like(det, 1e-12), det)
        x = x - (j22 * fx_ - j12 * fy_) / det
        y = y - (j11 * fy_ - j21 * fx_) / det
    return x, y


def pixel_rays(cameras: Cameras, cam_idx: Tensor, u: Tensor, v: Tensor, offset: float = 0.5
               ) -> tuple[Tensor, Tensor]:
    """World-space origins and unit directions for pixels ``(u, v)`` of cameras ``cam_idx``.

    ``cam_idx``, ``u`` (column) and ``v`` (row) are integer tensors of the same shape [M];
    returns ``origins [M, 3]`` and ``directions [M, 3]``. Rays pass through ``(u + offset,
    v + offset)``: 0.5 is the pixel's centre (our convention), 0 its top-left corner (the
    convention nerf-pytorch trained its models with).
    """
    cam_idx = cam_idx.long()
    x = (u.float() + offset - cameras.cx[cam_idx]) / cameras.fx[cam_idx]
    y = (v.float() + offset - cameras.cy[cam_idx]) / cameras.fy[cam_idx]
    if cameras.distortion is not None:
        dist = cameras.distortion[cam_idx].float()
        if bool((dist != 0).any()):
            x, y = undistort_points(x, y, dist)
    dirs_cam = torch.stack([x, -y, -torch.ones_like(x)], dim=-1)
    if cameras.c2w.shape[0] == 1:  # one camera (a whole image): one matrix product
        c2w = cameras.c2w[0].float()
        dirs = dirs_cam @ c2w[:, :3].T
        origins = c2w[:, 3].expand_as(dirs).contiguous()
    else:
        c2w = cameras.c2w[cam_idx].float()
        dirs = torch.einsum("mij,mj->mi", c2w[:, :, :3], dirs_cam)
        origins = c2w[:, :, 3].expand_as(dirs).contiguous()
    return origins, dirs / dirs.norm(dim=-1, keepdim=True)


def image_rays(cameras: Cameras, index: int, offset: float = 0.5) -> tuple[Tensor, Tensor]:
    """Origins and directions for every pixel of camera ``index``, row-major: [H*W, 3] each
    (``offset``: where in the pixel the ray passes, as in ``pixel_rays``)."""
    w, h = int(cameras.width[index]), int(cameras.height[index])
    v, u = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    cam = torch.zeros(h * w, dtype=torch.long)
    return pixel_rays(cameras[index], cam, u.reshape(-1), v.reshape(-1), offset)


def to_ndc(origins: Tensor, directions: Tensor, focal: float, width: int, height: int,
           near: float = 1.0) -> tuple[Tensor, Tensor]:
    """Map rays in a forward-facing camera frame into normalised device coordinates.

    From Mildenhall et al. 2020, appendix C: origins are first moved onto the plane ``z = -near``;
    then ``o' = (-f/(W/2) ox/oz, -f/(H/2) oy/oz, 1 + 2 near/oz)`` and
    ``d' = (-f/(W/2) (dx/dz - ox/oz), -f/(H/2) (dy/dz - oy/oz), -2 near/oz)``. Sampling ``t`` in
    [0, 1] along ``o' + t d'`` then covers depths from ``near`` to infinity, linear in disparity.
    """
    t = -(near + origins[..., 2]) / directions[..., 2]
    o = origins + t[..., None] * directions
    ox, oy, oz = o.unbind(-1)
    dx, dy, dz = directions.unbind(-1)
    o0 = -1.0 / (width / (2.0 * focal)) * ox / oz
    o1 = -1.0 / (height / (2.0 * focal)) * oy / oz
    o2 = 1.0 + 2.0 * near / oz
    d0 = -1.0 / (width / (2.0 * focal)) * (dx / dz - ox / oz)
    d1 = -1.0 / (height / (2.0 * focal)) * (dy / dz - oy / oz)
    d2 = -2.0 * near / oz
    return torch.stack([o0, o1, o2], -1), torch.stack([d0, d1, d2], -1)
