"""Camera paths for rendering videos: an orbit around a 360-degree scene, a spiral in front of a
forward-facing one (NeRF's ``render_path_spiral``), both derived from the training cameras."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from nerfzip.data.cameras import Cameras


def look_at(eye: Tensor, target: Tensor, up: Tensor) -> Tensor:
    """A camera-to-world [3, 4] at ``eye`` looking at ``target`` (OpenGL: the camera looks
    down -z)."""
    back = eye - target
    back = back / back.norm()
    right = torch.linalg.cross(up, back)
    right = right / right.norm()
    cam_up = torch.linalg.cross(back, right)
    return torch.stack([right, cam_up, back, eye], dim=1)


def orbit_path(cams: Cameras, n_frames: int, elevation_scale: float = 1.0) -> Tensor:
    """``n_frames`` poses [F, 3, 4] on a circle around the point the cameras look at."""
    c2w = cams.c2w.double()
    pos, fwd = c2w[:, :, 3], -c2w[:, :, 2]
    # Least-squares point closest to all optical axes: the scene centre.
    eye3 = torch.eye(3, dtype=torch.float64)
    proj = eye3 - fwd[:, :, None] * fwd[:, None, :]
    target = torch.linalg.lstsq(proj.sum(0), (proj @ pos[:, :, None]).sum(0)).solution[:, 0]
    up = c2w[:, :, 1].mean(0)
    up = up / up.norm()
    rel = pos - target
    height = float((rel @ up).mean()) * elevation_scale
    radius = float((rel - (rel @ up)[:, None] * up).norm(dim=-1).mean())
    a = torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64)
    a = a if abs(float(a @ up)) < 0.9 else torch.tensor([0.0, 1.0, 0.0], dtype=torch.float64)
    e1 = torch.linalg.cross(up, a)
    e1 = e1 / e1.norm()
    e2 = torch.linalg.cross(up, e1)
    poses = []
    for i in range(n_frames):
        th = 2 * math.pi * i / n_frames
        eye = target + height * up + radius * (math.cos(th) * e1 + math.sin(th) * e2)
        poses.append(look_at(eye, target, up))
    return torch.stack(poses).float()


def spiral_path(cams: Cameras, n_frames: int, rots: float = 2.0, focus_depth: float = 3.0
                ) -> Tensor:
    """``n_frames`` poses [F, 3, 4] on a spiral around the average pose, looking at a point
    ``focus_depth`` in front of it (forward-facing scenes)."""
    c2w = cams.c2w.double()
    center = c2w[:, :, 3].mean(0)
    fwd = -c2w[:, :, 2].mean(0)
    fwd = fwd / fwd.norm()
    up = c2w[:, :, 1].mean(0)
    right = torch.linalg.cross(fwd, up)
    right = right / right.norm()
    up = torch.linalg.cross(right, fwd)
    spread = (c2w[:, :, 3] - center).abs().quantile(0.9, dim=0)
    rx, ry = float(spread @ right.abs()), float(spread @ up.abs())
    target = center + focus_depth * fwd
    poses = []
    for i in range(n_frames):
        th = 2 * math.pi * rots * i / n_frames
        eye = center + rx * math.cos(th) * right + ry * math.sin(th) * up \
            - 0.5 * ry * math.sin(0.5 * th) * fwd
        poses.append(look_at(eye, target, up))
    return torch.stack(poses).float()
