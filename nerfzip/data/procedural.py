"""The built-in procedural scene: textured analytic shapes ray traced exactly, at any resolution,
with no files, so tests and smoke runs have a scene whose ground truth is known everywhere.

Content (all inside [-1, 1]^3, Blender-like: ``+z`` up, white background):

- a slab ``[-0.9, 0.9] x [-0.9, 0.9] x [-0.55, -0.4]`` with a soft checker solid texture;
- a sphere at ``(-0.35, -0.2, 0.05)``, radius 0.45, with a soft latitude / longitude checker;
- a sphere at ``(0.45, 0.35, -0.1)``, radius 0.3, with soft latitude stripes.

Shading is Blinn-Phong towards one fixed directional light, without shadows:
``rgb = texture(x) * (ambient + diffuse * max(n.l, 0)) + specular * max(n.h, 0)^shininess``
with ``h = normalize(l - d)``, so the highlight moves with the view direction ``d`` and a field
needs its view-dependent head. Textures are smooth (``tanh`` of products of sines) so that a small
grid can reach > 25 dB, but not flat, so reconstruction quality shows.

Cameras sit on a sphere of radius 3 looking at the origin (train: a Fibonacci spiral over the upper
hemisphere; test: the same spiral turned by half a step, so no test view repeats a train view),
with a 45 degree field of view; rays run from 1.5 to 4.5. Images are made with ``image_rays``, the
renderer's own pinhole convention, and rounded to uint8, so they equal
``procedural_ground_truth`` on the scene's rays.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
from torch import Tensor

from nerfzip.data.cameras import Cameras, image_rays
from nerfzip.data.formats import SceneFormat, register_format
from nerfzip.data.scene import Scene, SceneSplit
from nerfzip.errors import NerfzipError

RADIUS = 3.0  # camera distance from the origin
FOV_DEG = 45.0
ELEVATION_DEG = (12.0, 70.0)  # camera elevation range: sees the slab's top, avoids the pole
SPHERES = (  # centre, radius
    ((-0.35, -0.2, 0.05), 0.45),
    ((0.45, 0.35, -0.1), 0.3),
)
SLAB = ((-0.9, -0.9, -0.55), (0.9, 0.9, -0.4))  # min, max corners
LIGHT = (0.45, -0.35, 0.82)  # direction towards the light (normalised below)
AMBIENT, DIFFUSE, SPECULAR, SHININESS = 0.35, 0.65, 0.45, 24.0
EPS = 1e-6
INF = float("inf")


def soft_checker(a: Tensor, b: Tensor, sharpness: float = 3.0) -> Tensor:
    """A checker in [0, 1] from two phases, with edges smoothed by ``tanh``."""
    return 0.5 + 0.5 * torch.tanh(sharpness * torch.sin(a) * torch.sin(b))


def mix(t: Tensor, c0: tuple[float, float, float], c1: tuple[float, float, float]) -> Tensor:
    """``c0 (1 - t) + c1 t`` for weights t [M] -> colours [M, 3]."""
    c0_, c1_ = torch.tensor(c0, dtype=t.dtype), torch.tensor(c1, dtype=t.dtype)
    return c0_ + (c1_ - c0_) * t[:, None]


def slab_texture(p: Tensor) -> Tensor:
    # Checker cells of 0.3 units: a dozen voxels of a 96^3 grid over the 2.4-unit box.
    return mix(soft_checker(p[:, 0] * math.pi / 0.3, p[:, 1] * math.pi / 0.3),
               (0.85, 0.8, 0.7), (0.3, 0.4, 0.6))


def checker_sphere_texture(n: Tensor) -> Tensor:
    lon = torch.atan2(n[:, 1], n[:, 0])
    lat = torch.asin(n[:, 2].clamp(-1.0, 1.0))
    return mix(soft_checker(4.0 * lon, 4.0 * lat), (0.85, 0.2, 0.15), (0.95, 0.8, 0.2))


def striped_sphere_texture(n: Tensor) -> Tensor:
    return mix(0.5 + 0.5 * torch.sin(9.0 * n[:, 2]), (0.1, 0.3, 0.85), (0.2, 0.75, 0.4))


def dot(a: Tensor, b: Tensor) -> Tensor:
    # Elementwise rather than a matmul, so each ray's result does not depend on the batch size.
    return a[:, 0] * b[:, 0] + a[:, 1] * b[:, 1] + a[:, 2] * b[:, 2]


def hit_sphere(o: Tensor, d: Tensor, centre: Tensor, radius: float) -> Tensor:
    """Distance to the first hit in front of the origin (``inf`` for a miss); ``d`` unit [M, 3].

    Solves ``|o + t d - c|^2 = r^2``: ``t = -b -/+ sqrt(b^2 - (|o - c|^2 - r^2))``, b = d.(o - c).
    """
    oc = o - centre
    b = dot(d, oc)
    disc = b * b - (dot(oc, oc) - radius * radius)
    root = torch.sqrt(disc.clamp(min=0.0))
    t0, t1 = -b - root, -b + root
    t = torch.where(t0 > EPS, t0, t1)
    return torch.where((disc >= 0.0) & (t > EPS), t, torch.full_like(t, INF))


def hit_box(o: Tensor, d: Tensor, lo: Tensor, hi: Tensor) -> tuple[Tensor, Tensor]:
    """Slab-method ray / box intersection: distance to the first hit in front of the origin
    (``inf`` for a miss) and the outward normal there [M, 3]."""
    safe = torch.where(d.abs() < 1e-12, torch.full_like(d, 1e-12), d)
    t_lo, t_hi = (lo - o) / safe, (hi - o) / safe
    t_near, t_far = torch.minimum(t_lo, t_hi), torch.maximum(t_lo, t_hi)
    t_enter, axis = t_near.max(dim=1)
    t_exit = t_far.min(dim=1).values
    hit = (t_enter <= t_exit) & (t_exit > EPS)
    inside = t_enter <= EPS  # the origin is inside: the hit is the exit face
    t = torch.where(inside, t_exit, t_enter)
    if bool(inside.any()):
        axis = torch.where(inside, t_far.argmin(dim=1), axis)
    sign = -torch.sign(d.gather(1, axis[:, None]))
    sign = torch.where(inside[:, None], -sign, sign)
    normal = torch.zeros_like(d).scatter(1, axis[:, None], sign)
    return torch.where(hit, t, torch.full_like(t, INF)), normal


def procedural_ground_truth(origins: Tensor, dirs: Tensor) -> Tensor:
    """The exact colour seen along each ray: origins, unit directions [M, 3] -> rgb [M, 3] in
    [0, 1] (float32); rays that hit nothing see the white background."""
    o, d = origins.double(), dirs.double()
    t_best, normal = hit_box(o, d, torch.tensor(SLAB[0]).double(), torch.tensor(SLAB[1]).double())
    obj = torch.where(torch.isfinite(t_best), 0, -1)
    for k, (centre, radius) in enumerate(SPHERES):
        t = hit_sphere(o, d, torch.tensor(centre).double(), radius)
        closer = t < t_best
        t_best = torch.where(closer, t, t_best)
        obj = torch.where(closer, k + 1, obj)
    hit = obj >= 0
    p = o + torch.where(hit, t_best, torch.zeros_like(t_best))[:, None] * d
    tex = slab_texture(p)
    for k, ((centre, radius), texture) in enumerate(
            zip(SPHERES, (checker_sphere_texture, striped_sphere_texture), strict=True)):
        sel = obj == k + 1
        n_k = (p - torch.tensor(centre).double()) / radius
        normal = torch.where(sel[:, None], n_k, normal)
        tex = torch.where(sel[:, None], texture(n_k), tex)
    light = torch.tensor(LIGHT).double()
    light = (light / light.norm()).expand_as(d)
    half = light - d
    half = half / torch.sqrt(dot(half, half)).clamp(min=EPS)[:, None]
    diffuse = dot(normal, light).clamp(min=0.0)
    spec = dot(normal, half).clamp(min=0.0) ** SHININESS
    rgb = tex * (AMBIENT + DIFFUSE * diffuse)[:, None] + SPECULAR * spec[:, None]
    rgb = torch.where(hit[:, None], rgb, torch.ones_like(rgb))
    return rgb.clamp(0.0, 1.0).float()


def look_at(positions: Tensor) -> Tensor:
    """Camera-to-world [N, 3, 4] for cameras at ``positions`` [N, 3] looking at the origin,
    ``+z`` up (OpenGL: the camera's back axis points away from the origin)."""
    back = positions / positions.norm(dim=1, keepdim=True)
    up = torch.tensor([0.0, 0.0, 1.0], dtype=positions.dtype).expand_as(back)
    right = torch.linalg.cross(up, back)
    right = right / right.norm(dim=1, keepdim=True)
    cam_up = torch.linalg.cross(back, right)
    return torch.stack([right, cam_up, back, positions], dim=2)


def spiral_positions(n: int, phase: float) -> Tensor:
    """``n`` points on the radius-3 sphere at evenly spread heights of the elevation band,
    turning by the golden angle (a Fibonacci spiral); ``phase`` in [0, 1) shifts both."""
    lo, hi = (math.sin(math.radians(e)) for e in ELEVATION_DEG)
    i = torch.arange(n, dtype=torch.float64) + phase
    z = lo + (hi - lo) * (i + 0.5) / n
    azimuth = i * math.pi * (3.0 - math.sqrt(5.0))
    r_xy = torch.sqrt(1.0 - z * z)
    unit = torch.stack([r_xy * torch.cos(azimuth), r_xy * torch.sin(azimuth), z], dim=1)
    return RADIUS * unit


def make_split(n: int, phase: float, resolution: int, prefix: str) -> SceneSplit:
    focal = 0.5 * resolution / math.tan(math.radians(FOV_DEG) / 2.0)
    cams = Cameras(
        c2w=look_at(spiral_positions(n, phase)).float(),
        fx=torch.full((n,), focal), fy=torch.full((n,), focal),
        cx=torch.full((n,), resolution / 2.0), cy=torch.full((n,), resolution / 2.0),
        width=torch.full((n,), resolution, dtype=torch.long),
        height=torch.full((n,), resolution, dtype=torch.long),
    )
    # The renderer's own rays, view by view; traced in one batch because per-call overhead
    # dominates at this size (the tracer is elementwise, so batching does not change a pixel).
    rays = [image_rays(cams, i) for i in range(n)]
    rgb = procedural_ground_truth(torch.cat([o for o, _ in rays]), torch.cat([d for _, d in rays]))
    images = to_uint8(rgb).view(n, resolution, resolution, 3)
    names = [f"{prefix}_{i:03d}" for i in range(n)]
    return SceneSplit(images, cams, names)


def to_uint8(rgb: Tensor) -> Tensor:
    """Colours in [0, 1] -> uint8, rounded to nearest."""
    return torch.round(rgb * 255.0).clamp(0, 255).to(torch.uint8)


def load_procedural(resolution: int = 64, n_train: int = 40, n_test: int = 8) -> Scene:
    """The built-in scene at ``resolution`` x ``resolution`` pixels (see the module docstring)."""
    if resolution < 1 or n_train < 1 or n_test < 1:
        raise NerfzipError("procedural scene: resolution and view counts must be >= 1, got "
                           f"resolution={resolution} n_train={n_train} n_test={n_test}")
    test = make_split(n_test, 0.5, resolution, "test")
    info = {
        "content": "checker slab, checker sphere, striped sphere; Blinn-Phong highlight",
        "cameras": f"radius {RADIUS:g}, fov {FOV_DEG:g} deg, elevation "
                   f"{ELEVATION_DEG[0]:g}..{ELEVATION_DEG[1]:g} deg",
    }
    return Scene(
        name="procedural", format="procedural",
        splits={"train": make_split(n_train, 0.0, resolution, "train"), "val": test,
                "test": test},
        background=torch.ones(3), aabb=torch.tensor([[-1.2] * 3, [1.2] * 3]), near=1.5, far=4.5,
        info=info,
    )


def load_builtin(path: Path, downscale: int | None) -> Scene:
    """The registered loader (``load_scene("procedural")``): 64 pixels by default, 256 / d at a
    downscale d."""
    return load_procedural(resolution=64 if downscale is None else 256 // downscale)


register_format(SceneFormat("procedural", load_builtin, builtin=True))
