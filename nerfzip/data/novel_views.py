"""Random novel views between the training cameras, for supervision by a trained model
(distillation renders its teacher from them).

A novel pose interpolates a training camera and one of its nearest neighbours (by camera
centre): the rotation by quaternion slerp, the position linearly, then both are jittered a
little. Pairing neighbours keeps the new views on the surface the cameras span: for cameras on
a sphere (Blender) the chord between neighbours stays close to the sphere, while the midpoint of
two opposite cameras would sit inside the object. Each ray gets its own random pose, so a batch
covers the whole view set rather than a few images.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from nerfzip.data.cameras import Cameras, RayBundle, pixel_rays
from nerfzip.data.scene import Scene


def quaternion_from_matrix(r: Tensor) -> Tensor:
    """Unit quaternions (w, x, y, z) with w >= 0 [N, 4] of rotations ``r`` [N, 3, 3].

    Shepperd's method: of the four equivalent formulas (one per quaternion component), use the
    one whose pivot ``4 q_i^2`` is largest, which never divides by a small number.
    """
    m = r.double()
    m00, m11, m22 = m[:, 0, 0], m[:, 1, 1], m[:, 2, 2]
    pivots = torch.stack([1 + m00 + m11 + m22, 1 + m00 - m11 - m22,
                          1 - m00 + m11 - m22, 1 - m00 - m11 + m22], dim=-1)  # 4 q_i^2
    a, b = m[:, 2, 1] - m[:, 1, 2], m[:, 0, 2] - m[:, 2, 0]
    c, d = m[:, 1, 0] - m[:, 0, 1], m[:, 1, 0] + m[:, 0, 1]
    e, f = m[:, 0, 2] + m[:, 2, 0], m[:, 2, 1] + m[:, 1, 2]
    rows = torch.stack([  # row i: 4 q_i q (each formula, before dividing by 4 q_i)
        torch.stack([pivots[:, 0], a, b, c], -1),
        torch.stack([a, pivots[:, 1], d, e], -1),
        torch.stack([b, d, pivots[:, 2], f], -1),
        torch.stack([c, e, f, pivots[:, 3]], -1)], dim=1)
    best = pivots.argmax(dim=-1)
    q = rows[torch.arange(m.shape[0]), best]
    q = q / q.norm(dim=-1, keepdim=True)
    return torch.where(q[:, :1] < 0, -q, q).to(r.dtype)


def matrix_from_quaternion(q: Tensor) -> Tensor:
    """Rotation matrices [N, 3, 3] of quaternions (w, x, y, z) [N, 4] (normalised first)."""
    q = q / q.norm(dim=-1, keepdim=True)
    w, x, y, z = q.unbind(-1)
    return torch.stack([
        1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
        2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
        2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)],
        dim=-1).view(-1, 3, 3)


def slerp(q0: Tensor, q1: Tensor, t: Tensor) -> Tensor:
    """Spherical linear interpolation of unit quaternions [N, 4] at fractions t [N]:
    ``(sin((1-t) w) q0 + sin(t w) q1) / sin w`` with ``cos w = |q0 . q1|`` (Shoemake 1985),
    taking the shorter arc; nearly equal rotations fall back to normalised lerp."""
    dot = (q0 * q1).sum(-1, keepdim=True)
    q1 = torch.where(dot < 0, -q1, q1)
    dot = dot.abs().clamp(max=1.0)
    t = t[:, None]
    omega = torch.acos(dot)
    sin = torch.sin(omega)
    close = sin < 1e-6
    safe = torch.where(close, torch.ones_like(sin), sin)
    w0 = torch.where(close, 1 - t, torch.sin((1 - t) * omega) / safe)
    w1 = torch.where(close, t, torch.sin(t * omega) / safe)
    q = w0 * q0 + w1 * q1
    return q / q.norm(dim=-1, keepdim=True)


def axis_angle_matrix(v: Tensor) -> Tensor:
    """Rotations [N, 3, 3] by angle |v| about axis v / |v| (Rodrigues), v [N, 3]."""
    angle = v.norm(dim=-1, keepdim=True)
    axis = v / angle.clamp(min=1e-12)
    half = 0.5 * angle
    return matrix_from_quaternion(torch.cat([torch.cos(half), axis * torch.sin(half)], dim=-1))


def interpolate_poses(c2w_a: Tensor, c2w_b: Tensor, t: Tensor) -> Tensor:
    """Poses [N, 3, 4] a fraction t [N] of the way from ``c2w_a`` to ``c2w_b`` (both [N, 3, 4]):
    rotation by slerp, position by linear interpolation."""
    q = slerp(quaternion_from_matrix(c2w_a[:, :, :3]), quaternion_from_matrix(c2w_b[:, :, :3]),
              t)
    pos = c2w_a[:, :, 3] + t[:, None] * (c2w_b[:, :, 3] - c2w_a[:, :, 3])
    return torch.cat([matrix_from_quaternion(q), pos[:, :, None]], dim=-1)


def rotation_angle(r_a: Tensor, r_b: Tensor) -> Tensor:
    """Geodesic angle (radians) between rotations [N, 3, 3] and [N, 3, 3] -> [N]."""
    cos = ((r_a.transpose(1, 2) @ r_b).diagonal(dim1=1, dim2=2).sum(-1) - 1) / 2
    return torch.acos(cos.clamp(-1.0, 1.0))


def nearest_neighbours(cameras: Cameras, k: int) -> Tensor:
    """Indices [N, k'] of each camera's k' = min(k, N - 1) nearest others by centre (itself
    when it is the only camera)."""
    centres = cameras.c2w[:, :, 3].double()
    n = centres.shape[0]
    if n == 1:
        return torch.zeros(1, 1, dtype=torch.long)
    dist = torch.cdist(centres, centres)
    dist.fill_diagonal_(math.inf)
    return dist.topk(min(k, n - 1), dim=1, largest=False).indices


def random_novel_cameras(cameras: Cameras, n: int, generator: torch.Generator,
                         neighbours: int = 4, jitter: float = 0.1) -> Cameras:
    """``n`` random cameras, each between a random training camera and one of its
    ``neighbours`` nearest, with that training camera's intrinsics.

    Jitter: the position moves by ``jitter`` times the pair's distance (Gaussian std), the
    rotation by ``jitter`` times the pair's angle (at least 1 degree) about a random axis.
    """
    nn_idx = nearest_neighbours(cameras, neighbours)
    i = torch.randint(0, len(cameras), (n,), generator=generator)
    j = nn_idx[i, torch.randint(0, nn_idx.shape[1], (n,), generator=generator)]
    t = torch.rand(n, generator=generator)
    a, b = cameras.c2w[i].float(), cameras.c2w[j].float()
    c2w = interpolate_poses(a, b, t)
    if jitter > 0:
        span = (b[:, :, 3] - a[:, :, 3]).norm(dim=-1, keepdim=True)
        angle = rotation_angle(a[:, :, :3], b[:, :, :3]).clamp(min=math.radians(1.0))
        shift = jitter * span * torch.randn(n, 3, generator=generator)
        turn = axis_angle_matrix(jitter * angle[:, None] * torch.randn(n, 3, generator=generator))
        c2w = torch.cat([c2w[:, :, :3] @ turn, c2w[:, :, 3:] + shift[:, :, None]], dim=-1)
    dist = None if cameras.distortion is None else cameras.distortion[i]
    return Cameras(c2w, cameras.fx[i], cameras.fy[i], cameras.cx[i], cameras.cy[i],
                   cameras.width[i], cameras.height[i], dist)


def novel_rays(scene: Scene, n: int, generator: torch.Generator, split: str = "train",
               neighbours: int = 4, jitter: float = 0.1) -> RayBundle:
    """``n`` field-space rays, each through a random pixel of its own random novel camera
    between the cameras of ``split``."""
    cams = random_novel_cameras(scene.split(split).cameras, n, generator, neighbours, jitter)
    u = (torch.rand(n, generator=generator) * cams.width).long()
    v = (torch.rand(n, generator=generator) * cams.height).long()
    o, d = pixel_rays(cams, torch.arange(n), u, v)
    return scene.make_rays(o, d)
