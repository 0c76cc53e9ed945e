"""The built-in procedural scene: exact, view-dependent, deterministic and fast."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from nerfzip.data.cameras import image_rays
from nerfzip.data.load import load_scene
from nerfzip.data.procedural import (
    LIGHT,
    SLAB,
    SPHERES,
    hit_box,
    hit_sphere,
    load_procedural,
    procedural_ground_truth,
)
from nerfzip.errors import NerfzipError


@pytest.fixture(scope="module")
def scene():
    return load_procedural(resolution=32, n_train=12, n_test=4)


def test_shapes_and_layout(scene):
    assert scene.format == "procedural"
    assert scene.split("train").images.shape == (12, 32, 32, 3)
    assert scene.split("test").images.dtype == torch.uint8
    assert scene.split("val") is scene.split("test")
    torch.testing.assert_close(scene.background, torch.ones(3))
    assert scene.near == 1.5 and scene.far == 4.5 and scene.ndc is None
    for split in ("train", "test"):
        pos = scene.split(split).cameras.c2w[:, :, 3]
        torch.testing.assert_close(pos.norm(dim=1), torch.full((len(pos),), 3.0))
        assert bool((pos[:, 2] > 0).all())  # upper hemisphere
    train_pos = scene.split("train").cameras.c2w[:, :, 3]
    test_pos = scene.split("test").cameras.c2w[:, :, 3]
    assert float(torch.cdist(test_pos, train_pos).min()) > 0.05  # no test view is a train view


def test_cameras_look_at_origin(scene):
    cams = scene.split("train").cameras
    # The centre ray of every view (even resolution: between pixels, so average the four).
    o, d = image_rays(cams, 3)
    grid = d.view(32, 32, 3)[15:17, 15:17].reshape(4, 3).mean(0)
    closest = o[0] + (-(o[0] @ grid) / (grid @ grid)) * grid
    assert float(closest.norm()) < 1e-4
    fov = 2 * math.degrees(math.atan(16 / float(cams.fx[0])))
    assert 40 <= fov <= 50


def silhouette(cams, index: int, h: int, w: int, margin: float) -> tuple[np.ndarray, np.ndarray]:
    """Which pixels of a view see an object, by ray tracing apart from the scene code (numpy,
    float64, pinhole through pixel centres, camera looking down -z with +y up): ``(hit, miss)``
    masks [H, W], leaving out rays within ``margin`` of an object's outline."""
    c2w = cams.c2w[index].double().numpy()
    fx, fy = float(cams.fx[index]), float(cams.fy[index])
    cx, cy = float(cams.cx[index]), float(cams.cy[index])
    v, u = np.mgrid[0:h, 0:w] + 0.5
    d = np.stack([(u - cx) / fx, -(v - cy) / fy, -np.ones_like(u)], -1) @ c2w[:, :3].T
    d /= np.linalg.norm(d, axis=-1, keepdims=True)
    o = c2w[:, 3]
    hit = np.zeros((h, w), bool)
    near = np.zeros((h, w), bool)
    for centre, radius in SPHERES:
        oc = o - np.array(centre)
        b = d @ oc
        closest = np.sqrt(np.maximum(oc @ oc - b * b, 0.0))  # ray's distance to the centre
        hit |= (closest < radius - margin) & (b < 0)
        near |= np.abs(closest - radius) <= margin
    lo, hi = np.array(SLAB[0]), np.array(SLAB[1])
    with np.errstate(divide="ignore", invalid="ignore"):
        t1, t2 = (lo - o) / d, (hi - o) / d
    enter = np.minimum(t1, t2).max(-1)
    leave = np.maximum(t1, t2).min(-1)
    hit |= (leave - enter > margin) & (leave > 0)
    near |= np.abs(leave - enter) <= margin
    return hit & ~near, ~hit & ~near


def test_images_show_the_scene_geometry(scene):
    """Every pixel whose ray misses all shapes is the white background; those that hit one are
    shaded, checked against an independent ray trace of the shapes. (A few hit pixels are white
    too: the specular highlight saturates on bright texture.)"""
    white_hits, hits = 0, 0
    for split in ("train", "test"):
        sp = scene.split(split)
        h, w = sp.images.shape[1:3]
        for i in range(len(sp)):
            hit, miss = silhouette(sp.cameras, i, h, w, margin=0.02)
            img = sp.images[i].numpy()
            white = (img == 255).all(-1)
            assert hit.sum() > 0.1 * h * w and miss.sum() > 0.1 * h * w, f"{split} view {i}"
            assert white[miss].all(), f"{split} view {i}"
            assert white[hit].mean() < 0.1 and img[hit].mean() < 200, f"{split} view {i}"
            white_hits, hits = white_hits + white[hit].sum(), hits + hit.sum()
    assert white_hits < 0.02 * hits


def test_images_have_content(scene):
    img = scene.split("train").images.float() / 255
    white = (img == 1).all(-1).float().mean()
    assert 0.2 < float(white) < 0.9  # background and objects both visible
    assert float(img.std()) > 0.15  # textured, not flat


def test_resolution_free():
    # The same camera at two resolutions sees the same colour along the same ray.
    a, b = load_procedural(16, 2, 1), load_procedural(48, 2, 1)
    assert a.split("test").images.shape[1:3] == (16, 16)
    assert b.split("test").images.shape[1:3] == (48, 48)
    # Pixel (u, v) of the 16-pixel view has its centre at pixel (3u + 1, 3v + 1) of the 48 one.
    sa, sb = a.split("train").images[1], b.split("train").images[1]
    assert torch.equal(sa, sb[1::3, 1::3])


def test_highlight_depends_on_view_direction():
    centre, radius = SPHERES[0]
    c = torch.tensor(centre, dtype=torch.float64)
    up = torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64)
    light = torch.tensor(LIGHT, dtype=torch.float64)
    light = light / light.norm()
    n = torch.nn.functional.normalize(light + up, dim=0)
    p = c + radius * n  # a point near the top of the checker sphere, facing the light
    v_peak = 2 * (light @ n) * n - light  # the light mirrored about n: the highlight's peak
    tangent = torch.nn.functional.normalize(v_peak - (v_peak @ n) * n, dim=0)
    v_off = torch.nn.functional.normalize(n - 0.8 * tangent, dim=0)  # tilted the other way
    views = torch.stack([v_peak, v_off])
    assert bool((views @ n > 0.3).all())  # both see the point from outside the sphere
    origins = p[None] + 2.0 * views
    # Nothing else lies between the two eyes and p: p is the first hit of both rays.
    for k, (other_c, other_r) in enumerate(SPHERES):
        t = hit_sphere(origins, -views, torch.tensor(other_c, dtype=torch.float64), other_r)
        if k == 0:
            torch.testing.assert_close(t, torch.full((2,), 2.0, dtype=torch.float64))
        else:
            assert bool((t > 2.0).all())
    t_slab, _ = hit_box(origins, -views, torch.tensor(SLAB[0], dtype=torch.float64),
                        torch.tensor(SLAB[1], dtype=torch.float64))
    assert bool((t_slab > 2.0).all())
    rgb = procedural_ground_truth(origins, -views)
    assert float((rgb[0] - rgb[1]).abs().max()) > 0.3
    assert float(rgb[0].mean()) > float(rgb[1].mean())  # brighter at the specular peak


def test_miss_is_white():
    rgb = procedural_ground_truth(torch.tensor([[0.0, 0.0, 5.0]]), torch.tensor([[0.0, 0.0, 1.0]]))
    torch.testing.assert_close(rgb, torch.ones(1, 3))


def test_deterministic():
    a, b = load_procedural(24, 5, 2), load_procedural(24, 5, 2)
    for split in ("train", "test"):
        assert torch.equal(a.split(split).images, b.split(split).images)
        assert torch.equal(a.split(split).cameras.c2w, b.split(split).cameras.c2w)


def test_load_scene_finds_it():
    scene = load_scene("procedural")
    assert scene.split("train").images.shape == (40, 64, 64, 3)
    assert len(scene.split("test")) == 8


def test_bad_arguments():
    with pytest.raises(NerfzipError, match="resolution"):
        load_procedural(resolution=0)
