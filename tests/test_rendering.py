"""Volume rendering on hand-worked cases: transmittance of a constant slab, compositing,
samplers, the occupancy grid, and the inference path against the differentiable one."""

import math

import pytest
import torch

from nerfzip.data.cameras import Cameras, RayBundle
from nerfzip.errors import NerfzipError
from nerfzip.fields.base import Field
from nerfzip.fields.tensorf import TensoRF, TensoRFConfig
from nerfzip.rendering.model import RadianceModel, SceneSpace
from nerfzip.rendering.occupancy import OccupancyGrid
from nerfzip.rendering.renderer import RenderConfig, render_rays
from nerfzip.rendering.samplers import clip_rays, march, pack_valid, ray_aabb, sample_pdf
from nerfzip.rendering.volrend import composite, render_weights, transmittance


def test_constant_slab_transmittance_is_beer_lambert():
    # Density 2 over a slab of thickness 0.75 in 300 steps: T = exp(-2 * 0.75) exactly.
    sigma = torch.full((1, 300), 2.0)
    deltas = torch.full((1, 300), 0.75 / 300)
    w, t_final = render_weights(sigma, deltas)
    assert t_final.item() == pytest.approx(math.exp(-1.5), rel=1e-5)
    assert w.sum().item() == pytest.approx(1 - math.exp(-1.5), rel=1e-5)
    # Transmittance before sample i is exp(-2 * i * delta).
    trans = transmittance(sigma * deltas)
    i = torch.arange(300, dtype=torch.float32)
    assert torch.allclose(trans[0], torch.exp(-2.0 * i * 0.75 / 300), rtol=1e-5)


def test_composite_two_samples_by_hand():
    # alpha1 = 1 - e^-1, alpha2 = 1 - e^-2; w1 = alpha1, w2 = e^-1 alpha2.
    sigma = torch.tensor([[1.0, 2.0]])
    deltas = torch.ones(1, 2)
    w, t_final = render_weights(sigma, deltas)
    a1, a2 = 1 - math.exp(-1), 1 - math.exp(-2)
    assert torch.allclose(w, torch.tensor([[a1, math.exp(-1) * a2]]), atol=1e-6)
    colours = torch.tensor([[[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]])
    bg = torch.tensor([0.0, 0.0, 1.0])
    rgb = composite(w, colours, bg)
    assert torch.allclose(rgb, torch.tensor([[a1, math.exp(-1) * a2, math.exp(-3)]]), atol=1e-6)
    assert t_final.item() == pytest.approx(math.exp(-3), rel=1e-6)


def test_ray_aabb_entry_exit():
    o = torch.tensor([[0.0, 0.0, -5.0], [3.0, 3.0, -5.0]])
    d = torch.tensor([[0.0, 0.0, 1.0], [0.0, 0.0, 1.0]])
    t0, t1 = ray_aabb(o, d, torch.tensor([[-1.0] * 3, [1.0] * 3]))
    assert t0[0].item() == pytest.approx(4.0) and t1[0].item() == pytest.approx(6.0)
    assert t0[1] > t1[1]  # misses


def test_pack_valid_keeps_order():
    t = torch.tensor([[1.0, 2.0, 3.0, 4.0], [5.0, 6.0, 7.0, 8.0]])
    valid = torch.tensor([[False, True, False, True], [True, False, False, False]])
    tp, vp = pack_valid(t, valid)
    assert tp.shape == (2, 2)
    assert tp[0].tolist() == [2.0, 4.0] and tp[1, 0].item() == 5.0
    assert vp.tolist() == [[True, True], [True, False]]


def test_march_skips_unoccupied_cells():
    aabb = torch.tensor([[-1.0] * 3, [1.0] * 3])
    grid = OccupancyGrid(aabb, resolution=4)
    grid.occupied.zero_()
    grid.occupied[:, :, 3] = True  # only the last quarter along z is occupied
    rays = RayBundle(torch.tensor([[0.1, 0.1, -3.0]]), torch.tensor([[0.0, 0.0, 1.0]]),
                     torch.tensor([[0.0, 0.0, 1.0]]), torch.tensor([0.0]), torch.tensor([10.0]))
    t, valid, _ = march(rays, aabb, 0.01, grid)
    z = (rays.origins[0, 2] + t[valid]).tolist()
    assert len(z) == 50 and min(z) >= 0.5 and max(z) <= 1.0


def test_sample_pdf_concentrates_where_weights_are():
    bins = torch.linspace(0, 1, 11)[None]
    weights = torch.zeros(1, 10)
    weights[0, 7] = 1.0
    s = sample_pdf(bins, weights, 64, deterministic=True)
    inside = ((s >= 0.7) & (s <= 0.8)).float().mean().item()
    assert inside > 0.95


class SlabField(torch.nn.Module):
    """A constant-density slab 0 < z < 0.5 with a colour that depends on the view direction."""

    def __init__(self):
        super().__init__()
        self.register_buffer("aabb", torch.tensor([[-3.0] * 3, [3.0] * 3]))

    def density(self, x):
        return torch.where((x[:, 2] > 0) & (x[:, 2] < 0.5), 3.0, 0.0)

    def radiance(self, x, d):
        return torch.stack([0.5 + 0.5 * d[:, 0], torch.full_like(d[:, 0], 0.2),
                            torch.full_like(d[:, 0], 0.7)], -1)


def slab_rays(n=64):
    g = torch.Generator().manual_seed(0)
    o = torch.cat([torch.rand(n, 2, generator=g) - 0.5, torch.full((n, 1), -2.0)], 1)
    d = torch.nn.functional.normalize(torch.cat([0.2 * torch.randn(n, 2, generator=g),
                                                 torch.ones(n, 1)], 1), dim=-1)
    return RayBundle(o, d, d, torch.zeros(n), torch.full((n,), 10.0))


def test_rendered_slab_matches_beer_lambert():
    field = SlabField()
    rays = slab_rays()
    bg = torch.tensor([1.0, 1.0, 1.0])
    cfg = RenderConfig(step_size=0.001, max_samples=4096)
    out = render_rays(field, rays, bg, cfg, None, train=False)
    path = 0.5 / rays.directions[:, 2]
    t_slab = torch.exp(-3.0 * path)
    col = field.radiance(rays.origins, rays.viewdirs)
    expected = (1 - t_slab)[:, None] * col + t_slab[:, None] * bg
    assert torch.allclose(out["rgb"], expected, atol=2e-3)


def test_early_termination_matches_full_sum():
    field = SlabField()
    rays = slab_rays()
    bg = torch.tensor([0.0, 0.0, 0.0])
    cfg = RenderConfig(step_size=0.002, segment=8)
    with torch.no_grad():
        fast = render_rays(field, rays, bg, cfg, None, train=False)["rgb"]
    with torch.enable_grad():
        full = render_rays(field, rays, bg, cfg, None, train=False)["rgb"]
    assert torch.allclose(fast, full, atol=1e-3)


def test_occupancy_update_marks_the_slab():
    field = SlabField()
    grid = OccupancyGrid(torch.tensor([[-1.0] * 3, [1.0] * 3]), resolution=16)
    frac = grid.update(field.density, step=0.01, threshold=1e-3, generator=torch.Generator())
    centres = grid.cell_centers()
    inside = (centres[:, 2] > 0) & (centres[:, 2] < 0.5)
    occ = grid.occupied.view(-1)
    assert occ[inside].all()
    far = (centres[:, 2] < -0.3) | (centres[:, 2] > 0.8)
    assert not occ[far].any()
    assert 0.2 < frac < 0.6


def test_orbit_cameras_look_at_the_scene_centre():
    from nerfzip.data.cameras import Cameras
    from nerfzip.evaluation.camera_path import look_at, orbit_path

    eyes = torch.tensor([[3.0, 0, 1], [0, 3.0, 1], [-3.0, 0, 1], [0, -3.0, 1]])
    c2w = torch.stack([look_at(e, torch.zeros(3), torch.tensor([0.0, 0, 1])) for e in eyes])
    n = len(eyes)
    cams = Cameras(c2w, torch.ones(n), torch.ones(n), torch.zeros(n), torch.zeros(n),
                   torch.ones(n, dtype=torch.long), torch.ones(n, dtype=torch.long))
    poses = orbit_path(cams, 8)
    for p in poses:
        # The optical axis (-z) from the eye passes through the origin.
        eye, fwd = p[:, 3], -p[:, 2]
        closest = eye - (eye @ fwd) * fwd
        assert closest.norm() < 1e-4
        assert abs(eye.norm().item() - math.sqrt(10)) < 1e-3


def small_tensorf(decomposition: str) -> TensoRF:
    cfg = TensoRFConfig(decomposition=decomposition, resolution=(9, 11, 13),
                        density_components=4, appearance_components=6, app_dim=5,
                        decoder_hidden=16, density_shift=0.0, init_scale=0.5)
    return TensoRF(cfg, torch.tensor([[-1.0, -0.8, -0.6], [1.0, 0.8, 0.6]]), seed=3)


@pytest.mark.parametrize("decomposition", ["vm", "cp"])
def test_baked_density_is_exact_and_follows_changes(decomposition):
    field = small_tensorf(decomposition)
    x = (torch.rand(2000, 3, generator=torch.Generator().manual_seed(0)) * 2 - 1) * field.aabb[1]
    with torch.no_grad():
        direct = field.density(x)  # training mode: factors queried directly
        field.eval()
        baked = field.density(x)
        assert field._baked is not None
        assert torch.allclose(baked, direct, rtol=1e-5, atol=1e-5)
        field.density_grids.lines[0].mul_(2.0)  # an in-place edit must rebuild the volume
        field.train()
        direct2 = field.density(x)
        field.eval()
        assert not torch.allclose(direct2, direct)
        assert torch.allclose(field.density(x), direct2, rtol=1e-5, atol=1e-5)


def test_windowed_inference_march_matches_the_training_march():
    """Inference marches lazily in windows and stops rays early; with an occupancy grid it must
    composite the same samples as the packed march of the differentiable renderer."""
    field = small_tensorf("vm")
    field.config.density_shift = -2.0
    field.eval()
    grid = OccupancyGrid(field.aabb, resolution=8)
    gen = torch.Generator().manual_seed(1)
    grid.occupied.copy_(torch.rand(8, 8, 8, generator=gen) < 0.4)
    o = torch.tensor([0.0, 0.0, -3.0]) + 0.3 * torch.randn(300, 3, generator=gen)
    d = torch.nn.functional.normalize(torch.tensor([0.0, 0.0, 1.0]) + 0.3 * torch.randn(
        300, 3, generator=gen), dim=-1)
    rays = RayBundle(o, d, d, torch.zeros(300), torch.full((300,), 6.0))
    bg = torch.tensor([0.2, 0.4, 0.6])
    cfg = RenderConfig(step_size=0.01, segment=7)
    with torch.no_grad():
        fast = render_rays(field, rays, bg, cfg, grid)["rgb"]
    with torch.enable_grad():
        full = render_rays(field, rays, bg, cfg, grid)["rgb"]
    assert (fast - bg).abs().amax(dim=-1).gt(0.05).sum() > 30  # many rays hit something
    assert torch.allclose(fast, full.detach(), atol=2e-3)


def test_step_scale_halves_the_samples_and_keeps_the_image():
    field = small_tensorf("vm")
    field.config.density_shift = -2.0
    model = RadianceModel(field, RenderConfig(step_size=0.005), SceneSpace([1.0] * 3, 0.0, 6.0))
    gen = torch.Generator().manual_seed(2)
    o = torch.tensor([0.0, 0.0, -3.0]) + 0.3 * torch.randn(200, 3, generator=gen)
    d = torch.nn.functional.normalize(torch.tensor([0.0, 0.0, 1.0]) + 0.2 * torch.randn(
        200, 3, generator=gen), dim=-1)
    rays = RayBundle(o, d, d, torch.zeros(200), torch.full((200,), 6.0))
    bg = model.background
    with torch.no_grad():
        fine = render_rays(field.eval(), rays, bg, model.render, None)
        model.set_step_scale(2.0)
        coarse = render_rays(field, rays, bg, model.render, None)
    assert model.render.step_size == 0.01 and model.meta["step_scale"] == 2.0
    assert model.render.max_samples == RenderConfig().max_samples // 2  # the budget follows
    assert 0.4 < float(coarse["num_samples"] / fine["num_samples"]) < 0.6
    assert (fine["rgb"] - coarse["rgb"]).abs().max() < 0.03
    hier = RadianceModel(field, RenderConfig(sampler="hierarchical"), model.space)
    with pytest.raises(NerfzipError, match="no step"):
        hier.set_step_scale(2.0)


class FogField(Field):
    """Dense fog of one colour filling the NDC box: every ray that enters it saturates."""

    family = "fog"

    def __init__(self):
        super().__init__(torch.tensor([[-1.5, -1.67, -1.0], [1.5, 1.67, 1.0]]))

    def density(self, x):
        return torch.full(x.shape[:1], 200.0)

    def radiance(self, x, d):
        return torch.tensor([0.2, 0.5, 0.8]).expand(x.shape[0], 3)


def forward_facing_cameras(n: int = 6) -> Cameras:
    gen = torch.Generator().manual_seed(4)
    c2w = torch.eye(4)[:3].repeat(n, 1, 1)
    c2w[:, :2, 3] = 0.3 * torch.randn(n, 2, generator=gen)  # spread across the image plane
    return Cameras(c2w, torch.full((n,), 20.0), torch.full((n,), 20.0), torch.full((n,), 8.0),
                   torch.full((n,), 6.0), torch.full((n,), 16), torch.full((n,), 12), None)


def test_spiral_path_looks_ahead_and_renders_ndc_fog(tmp_path):
    """The spiral stays around the cameras, keeps looking at a point in front of them, and an
    NDC render of saturating fog along it shows the fog's colour in every pixel."""
    from nerfzip.evaluation.camera_path import spiral_path
    from nerfzip.evaluation.evaluate import render_path

    cams = forward_facing_cameras()
    poses = spiral_path(cams, 8, focus_depth=3.0)
    centre = cams.c2w[:, :, 3].mean(0)
    target = centre + torch.tensor([0.0, 0.0, -3.0])
    for pose in poses:
        to_target = torch.nn.functional.normalize(target - pose[:, 3], dim=0)
        assert torch.allclose(-pose[:, 2], to_target, atol=1e-5)  # -z looks at the target
        assert (pose[:, 3] - centre).norm() < 1.0
    assert len({tuple(p[:, 3].tolist()) for p in poses}) == 8  # the camera moves
    space = SceneSpace([0.0, 0.0, 0.0], 0.0, 1.0,
                       ndc={"focal": 20.0, "width": 16, "height": 12, "near": 1.0})
    model = RadianceModel(FogField(), RenderConfig(step_size=0.01), space)
    video = render_path(model, cams, tmp_path / "v", "spiral", n_frames=3, fmt="gif",
                        quiet=True)
    import imageio.v3 as iio

    assert video.is_file()
    pngs = sorted((tmp_path / "v" / "frames").glob("*.png"))
    frames = torch.stack([torch.from_numpy(iio.imread(f)) for f in pngs])
    assert frames.shape[:3] == (3, 12, 16)
    expected = torch.tensor([0.2, 0.5, 0.8]) * 255
    assert (frames[..., :3].float() - expected).abs().max() <= 1.0
    with pytest.raises(NerfzipError, match="spiral"):
        render_path(model, cams, tmp_path / "o", "orbit", n_frames=2, quiet=True)


def test_sample_budget_lengthens_steps_instead_of_cutting_rays():
    rays = slab_rays()
    aabb = torch.tensor([[-1.0, -1.0, -1.0], [1.0, 1.0, 1.0]])
    t_enter, t_exit, step_t, n_steps = clip_rays(rays, aabb, 0.001, max_steps=16)
    assert int(n_steps.max()) == 16
    # the budgeted steps still reach the far side of the box on every ray
    assert torch.all(t_enter + n_steps * step_t >= t_exit - 1e-5)
    # and the slab (1 unit of density 3 inside this box) still composites to Beer-Lambert
    field = SlabField()
    cfg = RenderConfig(step_size=0.001, max_samples=256)
    out = render_rays(field, rays, torch.ones(3), cfg, None, train=False)
    t_slab = torch.exp(-3.0 * 0.5 / rays.directions[:, 2])
    col = field.radiance(rays.origins, rays.viewdirs)
    expected = (1 - t_slab)[:, None] * col + t_slab[:, None]
    assert out["num_samples"] <= 256 * len(rays)
    assert torch.allclose(out["rgb"], expected, atol=0.03)
