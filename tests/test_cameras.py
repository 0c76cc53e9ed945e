"""Ray conventions, undistortion and the NDC warp, on hand-worked values."""

from __future__ import annotations

import math

import pytest
import torch

from nerfzip.data.cameras import Cameras, image_rays, pixel_rays, to_ndc, undistort_points

FOX_DISTORTION = [0.0578421, -0.0805099, -0.000980296, 0.00015575]  # k1 k2 p1 p2 of the fox


def one_camera(w: int, h: int, fx: float, fy: float, cx: float, cy: float,
               c2w: torch.Tensor | None = None, distortion: list[float] | None = None) -> Cameras:
    c2w = torch.eye(4)[:3] if c2w is None else c2w
    return Cameras(
        c2w=c2w[None].float(), fx=torch.tensor([fx]), fy=torch.tensor([fy]),
        cx=torch.tensor([cx]), cy=torch.tensor([cy]), width=torch.tensor([w]),
        height=torch.tensor([h]),
        distortion=None if distortion is None else torch.tensor([distortion]),
    )


def ray(cams: Cameras, u: int, v: int) -> tuple[torch.Tensor, torch.Tensor]:
    o, d = pixel_rays(cams, torch.tensor([0]), torch.tensor([u]), torch.tensor([v]))
    return o[0], d[0]


def test_centre_pixel_looks_down_minus_z():
    cams = one_camera(5, 7, fx=10.0, fy=12.0, cx=2.5, cy=3.5)
    o, d = ray(cams, 2, 3)  # pixel centre (2.5, 3.5) is the principal point
    assert torch.equal(o, torch.zeros(3))
    torch.testing.assert_close(d, torch.tensor([0.0, 0.0, -1.0]))


def test_top_left_pixel_direction():
    fx, fy, cx, cy = 10.0, 12.0, 2.5, 3.5
    _, d = ray(one_camera(5, 7, fx, fy, cx, cy), 0, 0)
    # Camera-space direction ((u + 0.5 - cx) / fx, -(v + 0.5 - cy) / fy, -1), normalised.
    x, y = (0.5 - cx) / fx, -(0.5 - cy) / fy
    n = math.sqrt(x * x + y * y + 1.0)
    torch.testing.assert_close(d, torch.tensor([x / n, y / n, -1.0 / n]))
    assert d[0] < 0 and d[1] > 0 and d[2] < 0  # left, up, forward


def test_corner_offset_is_nerf_pytorch_convention():
    # nerf-pytorch casts the ray of pixel (i, j) through (i, j): with cx = W / 2 the ray of
    # pixel (W / 2, H / 2) is the optical axis, half a pixel away from our centre ray.
    cams = one_camera(6, 8, fx=10.0, fy=10.0, cx=3.0, cy=4.0)
    _, d = pixel_rays(cams, torch.tensor([0]), torch.tensor([3]), torch.tensor([4]), offset=0.0)
    torch.testing.assert_close(d[0], torch.tensor([0.0, 0.0, -1.0]))
    _, d_centre = ray(cams, 3, 4)
    assert d_centre[0] > 0 and d_centre[1] < 0  # the centre ray is right of and below it
    o_all, d_all = image_rays(cams, 0, offset=0.0)
    torch.testing.assert_close(d_all[4 * 6 + 3], torch.tensor([0.0, 0.0, -1.0]))


def test_principal_point_offset():
    cams = one_camera(8, 8, fx=6.0, fy=6.0, cx=2.5, cy=5.5)
    _, d = ray(cams, 2, 5)  # the pixel whose centre is the (off-centre) principal point
    torch.testing.assert_close(d, torch.tensor([0.0, 0.0, -1.0]))
    _, d = ray(cams, 4, 4)  # the image centre is now right of and above the axis
    assert d[0] > 0 and d[1] > 0


def test_rotation_and_translation_apply():
    # Camera at (1, 2, 3) turned 90 degrees about +y: its -z axis points along world -x.
    c2w = torch.tensor([[0.0, 0.0, 1.0, 1.0], [0.0, 1.0, 0.0, 2.0], [-1.0, 0.0, 0.0, 3.0]])
    o, d = ray(one_camera(3, 3, 2.0, 2.0, 1.5, 1.5, c2w), 1, 1)
    torch.testing.assert_close(o, torch.tensor([1.0, 2.0, 3.0]))
    torch.testing.assert_close(d, torch.tensor([-1.0, 0.0, 0.0]))


def test_image_rays_row_major():
    cams = one_camera(4, 3, 5.0, 5.0, 2.0, 1.5)
    _, d = image_rays(cams, 0)
    assert d.shape == (12, 3)
    _, d_pix = ray(cams, 3, 1)  # column 3, row 1 -> index 1 * 4 + 3
    torch.testing.assert_close(d[7], d_pix)


def distort(x: torch.Tensor, y: torch.Tensor, k: list[float]) -> tuple[torch.Tensor, torch.Tensor]:
    """The OpenCV forward model, written out independently of cameras.py."""
    k1, k2, p1, p2 = k
    r2 = x * x + y * y
    radial = 1 + k1 * r2 + k2 * r2 * r2
    return (x * radial + 2 * p1 * x * y + p2 * (r2 + 2 * x * x),
            y * radial + p1 * (r2 + 2 * y * y) + 2 * p2 * x * y)


def test_undistort_inverts_opencv_model():
    g = torch.Generator().manual_seed(0)
    # Normalised coordinates spanning the fox's portrait field of view (|x| < 0.4, |y| < 0.7).
    x = (torch.rand(2000, generator=g, dtype=torch.float64) - 0.5) * 0.8
    y = (torch.rand(2000, generator=g, dtype=torch.float64) - 0.5) * 1.4
    xd, yd = distort(x, y, FOX_DISTORTION)
    xu, yu = undistort_points(xd, yd, torch.tensor(FOX_DISTORTION, dtype=torch.float64))
    assert float((xu - x).abs().max()) < 1e-6
    assert float((yu - y).abs().max()) < 1e-6


def test_distorted_camera_ray_hits_the_distorted_pixel():
    # A point projected through the distortion model must come back on the pixel's ray.
    fx, fy, cx, cy = 300.0, 310.0, 160.0, 120.0
    cams = one_camera(320, 240, fx, fy, cx, cy, distortion=FOX_DISTORTION)
    _, d = ray(cams, 40, 30)
    x, y = d[0] / -d[2], -d[1] / -d[2]  # undistorted normalised coordinates (y down)
    xd, yd = distort(x.double(), y.double(), FOX_DISTORTION)
    assert float(xd * fx + cx) == pytest.approx(40.5, abs=1e-3)
    assert float(yd * fy + cy) == pytest.approx(30.5, abs=1e-3)


def test_ndc_hand_worked():
    # focal 2, W 4, H 2, near 1: the x scale is 2f/W = 1, the y scale 2f/H = 2.
    o, d = to_ndc(torch.tensor([[0.0, 0.0, 0.0]]), torch.tensor([[0.1, 0.2, -1.0]]),
                  focal=2.0, width=4, height=2, near=1.0)
    # Origin moved to z = -1: (0.1, 0.2, -1) -> (-1 * 0.1 / -1, -2 * 0.2 / -1, 1 + 2 / -1).
    torch.testing.assert_close(o, torch.tensor([[0.1, 0.4, -1.0]]))
    # d' = (-(dx/dz - ox/oz), -2 (dy/dz - oy/oz), -2 near / oz) = (0, 0, 2).
    torch.testing.assert_close(d, torch.tensor([[0.0, 0.0, 2.0]]))
    assert float((o + d)[0, 2]) == pytest.approx(1.0)  # t = 1 is infinitely far


def test_ndc_depths_and_projection():
    g = torch.Generator().manual_seed(1)
    focal, w, h, near = 400.0, 500, 380, 1.0
    origins = (torch.rand(50, 3, generator=g, dtype=torch.float64) - 0.5) * 0.4
    dirs = torch.nn.functional.normalize(
        torch.tensor([0.0, 0.0, -1.0], dtype=torch.float64)
        + (torch.rand(50, 3, generator=g, dtype=torch.float64) - 0.5) * 0.5, dim=-1)
    o, d = to_ndc(origins, dirs, focal, w, h, near)
    torch.testing.assert_close(o[:, 2], torch.full((50,), -1.0, dtype=torch.float64))
    # A world point at depth D maps to z = 1 - 2 near / D, x and y to its pinhole projection,
    # and lies on the NDC ray at t = 1 - oz / pz (oz = -near).
    s = torch.rand(50, generator=g, dtype=torch.float64) * 20 + 2
    p = origins + s[:, None] * dirs
    expected = torch.stack([-2 * focal / w * p[:, 0] / p[:, 2], -2 * focal / h * p[:, 1] / p[:, 2],
                            1 + 2 * near / p[:, 2]], -1)
    t = 1 - (-near) / p[:, 2]
    torch.testing.assert_close(o + t[:, None] * d, expected)
    # Points very far along the ray approach z = 1.
    far = o + 1.0 * d
    torch.testing.assert_close(far[:, 2], torch.ones(50, dtype=torch.float64))


def test_scaled_cameras_keep_pixel_rays():
    # Halving the resolution: the ray through a low-res pixel centre passes through the centre
    # of the 2x2 block of full-res pixels it averages.
    cams = one_camera(8, 6, 7.0, 7.5, 3.7, 2.9)
    half = cams.scaled(0.5)
    assert (int(half.width[0]), int(half.height[0])) == (4, 3)
    _, d_low = ray(half, 1, 2)
    x = (2 * (1 + 0.5) - 3.7) / 7.0
    y = (2 * (2 + 0.5) - 2.9) / 7.5
    expected = torch.nn.functional.normalize(torch.tensor([x, -y, -1.0]), dim=0)
    torch.testing.assert_close(d_low, expected)
