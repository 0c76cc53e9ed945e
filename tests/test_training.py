"""Training on the procedural scene: a short run learns the scene, checkpoints are safetensors
+ JSON, and a resumed run takes exactly the steps of an uninterrupted one."""

from collections import Counter
from dataclasses import dataclass, replace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from nerfzip.data.load import load_scene
from nerfzip.evaluation.evaluate import evaluate
from nerfzip.evaluation.metrics import psnr
from nerfzip.fields.base import FAMILY_IDS, FIELD_REGISTRY, Field, register_field
from nerfzip.fields.mlp_nerf import MLPNeRFConfig
from nerfzip.training.checkpoint import load_model
from nerfzip.training.config import TrainConfig, defaults_for
from nerfzip.training.trainer import Trainer, train


@pytest.fixture(scope="module")
def scene():
    return load_scene("procedural")


def tiny_config(**kw):
    base = replace(defaults_for("procedural", "tensorf-vm"), batch_size=512,
                   warmup_batch_size=256, checkpoint_every=1000)
    return replace(base, **kw)


def test_short_run_beats_threshold(scene, tmp_path):
    model = train(scene, tiny_config(iters=300, batch_size=1024), tmp_path / "run", quiet=True)
    res = evaluate(model, scene, "test", quiet=True)
    # A constant image of each view's mean colour is the floor a field must clear by far.
    images = scene.split("test").images.float() / 255
    constant = [float(psnr(img.mean((0, 1)).expand_as(img), img)) for img in images]
    assert res["mean"]["psnr"] > sum(constant) / len(constant) + 8.0, (res["mean"], constant)
    assert res["mean"]["psnr"] > 20.0, res["mean"]
    assert res["mean"]["ssim"] > 0.7
    # The saved model renders exactly what the trained one does.
    loaded = load_model(tmp_path / "run")
    a = model.render_view(scene, "test", 0)
    b = loaded.render_view(scene, "test", 0)
    assert torch.equal(a, b)
    # Empty-space skipping is active: most cells are empty.
    assert loaded.occupancy is not None
    assert loaded.occupancy.occupied.float().mean() < 0.5


def test_resume_equals_uninterrupted(scene, tmp_path):
    cfg = tiny_config(iters=80, checkpoint_every=40)
    full = train(scene, cfg, tmp_path / "full", quiet=True)

    # Interrupt after 43 steps (as Ctrl-C would), then resume in a fresh trainer.
    def interrupt(trainer, stats):
        if trainer.step == 43:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        Trainer(scene, cfg, tmp_path / "part").run(callback=interrupt, quiet=True)
    resumed = train(scene, cfg, tmp_path / "part", resume=True, quiet=True)

    ta = full.field.named_tensors()
    tb = resumed.field.named_tensors()
    assert ta.keys() == tb.keys()
    for k in ta:
        assert ta[k].shape == tb[k].shape, k
        assert torch.allclose(ta[k], tb[k], atol=1e-6, rtol=0), k
    assert torch.equal(full.occupancy.occupied, resumed.occupancy.occupied)


def test_checkpoint_is_safetensors_not_pickle(scene, tmp_path):
    """The checkpoint parsed by hand as safetensors: an 8-byte little-endian length, a JSON
    table of tensors whose byte ranges tile the data exactly, and our JSON header (model and
    training state) in its metadata; nothing else in the file, so nothing to unpickle."""
    import json
    import math

    train(scene, tiny_config(iters=5), tmp_path / "r", quiet=True)
    path = tmp_path / "r" / "checkpoint.safetensors"
    raw = path.read_bytes()
    n = int.from_bytes(raw[:8], "little")
    table = json.loads(raw[8:8 + n].decode("utf-8"))
    header = json.loads(table.pop("__metadata__")["nerfzip"])
    width = {"F64": 8, "F32": 4, "F16": 2, "I64": 8, "I32": 4, "U8": 1, "BOOL": 1}
    spans = sorted(tuple(t["data_offsets"]) for t in table.values())
    assert spans[0][0] == 0 and spans[-1][1] == len(raw) - 8 - n
    assert all(a[1] == b[0] for a, b in zip(spans, spans[1:]))
    for name, t in table.items():
        begin, end = t["data_offsets"]
        assert end - begin == math.prod(t["shape"]) * width[t["dtype"]], name
    assert table["rng.state"]["dtype"] == "U8" and any(k.startswith("optim.") for k in table)
    assert table["occupancy.occupied"]["dtype"] == "BOOL"
    assert table["occupancy.density"]["shape"] == [header["occupancy"]["resolution"]] * 3
    assert header["format"] == "nerfzip-model" and header["version"] == 2
    assert set(header) == {"format", "version", "field", "render", "space", "occupancy",
                           "pipeline", "meta", "train"}
    assert header["train"]["step"] == 5
    fields = {k[len("field."):]: t["shape"] for k, t in table.items() if k.startswith("field.")}
    model = load_model(path)
    assert fields == {k: list(v.shape) for k, v in model.field.named_tensors().items()}


def test_mlp_nerf_trains_with_hierarchical_sampling(scene, tmp_path):
    cfg = replace(defaults_for("procedural", "mlp-nerf"), iters=40, batch_size=64, n_coarse=32,
                  n_fine=32, lr_net=2e-3, checkpoint_every=1000)
    trainer = Trainer(scene, cfg, tmp_path / "mlp")
    assert trainer.model.render.sampler == "hierarchical"
    assert trainer.model.occupancy is None
    rays = scene.view_rays("test", 0)
    target = scene.split("test").images[0].reshape(-1, 3).float() / 255
    before = ((trainer.model.render_rays(rays) - target) ** 2).mean().item()
    model = trainer.run(quiet=True)
    after = ((model.render_rays(rays) - target) ** 2).mean().item()
    assert after < 0.8 * before, (before, after)


@dataclass
class CountingConfig:
    """Config of the test-only family."""

    res: int = 8
    """Vertices per axis of its grid."""


class Counting(Field):
    """A test-only family: a dense grid of density and colour that records every hook the
    trainer calls. A trainer that special-cased TensoRF would not call them."""

    config_cls = CountingConfig

    def __init__(self, config: CountingConfig, aabb, seed: int = 0):
        super().__init__(aabb)
        self.config = config
        gen = torch.Generator().manual_seed(seed)
        self.grid = nn.Parameter(0.1 * torch.randn(1, 4, *(config.res,) * 3, generator=gen))
        self.scale = nn.Parameter(torch.ones(1))
        self.calls: Counter = Counter()
        self.steps: dict[str, list[int]] = {"regularization": [], "schedule": [],
                                            "render_settings": []}

    def sample(self, x):
        g = self.normalize(x).clamp(-1, 1).view(1, -1, 1, 1, 3)
        return F.grid_sample(self.grid, g, align_corners=True).view(4, -1)

    def density(self, x):
        return F.softplus(self.sample(x)[0]) * self.scale

    def radiance(self, x, d):
        return torch.sigmoid(self.sample(x)[1:].t())

    def param_groups(self):
        return {"grid": [self.grid], "net": [self.scale]}

    @classmethod
    def training_defaults(cls, family, scene_format, cfg):
        return replace(cfg, lr_net=0.123)

    @classmethod
    def initial_config(cls, family, cfg, aabb):
        return CountingConfig(res=5)

    def render_settings(self, cfg, step=None):
        self.calls["render_settings"] += 1
        self.steps["render_settings"].append(step)
        return {"sampler": "occupancy", "step_size": 0.05, "max_samples": 64}

    def wants_occupancy(self):
        return True

    def optimizer_options(self):
        return {"grid": {"eps": 1e-12}}

    def regularization(self, cfg, step):
        self.steps["regularization"].append(step)
        return 1e-3 * self.grid.pow(2).mean()

    def schedule(self, cfg, step, occupancy, step_size):
        self.steps["schedule"].append(step)
        if step != 3:
            return False
        with torch.no_grad():
            self.grid = nn.Parameter(F.interpolate(self.grid, size=(6, 6, 6), mode="trilinear",
                                                   align_corners=True))
        return True


@pytest.fixture
def counting_family():
    register_field("test-counting", file_id=250)(Counting)
    yield "test-counting"
    FIELD_REGISTRY.pop("test-counting")
    FAMILY_IDS.pop("test-counting")


def test_trainer_asks_the_field_family_for_everything(scene, tmp_path, counting_family):
    cfg = replace(defaults_for("procedural", counting_family), iters=6, batch_size=64,
                  warmup_batch_size=64, occupancy_warmup=2, occupancy_every=2,
                  checkpoint_every=1000)
    assert cfg.lr_net == 0.123  # training_defaults
    trainer = Trainer(scene, cfg, tmp_path / "c")
    field = trainer.field
    assert isinstance(field, Counting) and field.config.res == 5  # for_training
    assert trainer.model.occupancy is not None  # wants_occupancy
    assert trainer.model.render.step_size == 0.05  # render_settings
    eps = {g["name"]: g["eps"] for g in trainer.optimizer.param_groups}
    assert eps == {"grid": 1e-12, "net": 1e-8}  # optimizer_options
    trainer.run(quiet=True)
    # The schedule replaced the grid at step 3: the trainer rebuilt the optimizer around the
    # new parameter and asked for render settings again.
    assert field.steps == {"regularization": list(range(6)), "schedule": list(range(6)),
                           "render_settings": [0, 3]}
    assert field.grid.shape[-1] == 6
    grid_group = next(g for g in trainer.optimizer.param_groups if g["name"] == "grid")
    assert grid_group["params"][0] is field.grid
    assert int(trainer.optimizer.state[field.grid]["step"]) == 3  # steps 3-5, after the rebuild


class Ball(Field):
    """A fixed analytic scene for rendering tests: an opaque ball of radius 0.7 whose colour is
    its position (so every view of it differs)."""

    def __init__(self):
        super().__init__(torch.tensor([[-1.2] * 3, [1.2] * 3]))
        self.config = None

    def density(self, x):
        return 40.0 * (x.norm(dim=-1) < 0.7).float()

    def radiance(self, x, d):
        return (x / 1.4 + 0.5).clamp(0, 1)


def test_render_path_writes_video_and_frames(scene, tmp_path):
    import imageio.v3 as iio

    from nerfzip.data.cameras import Cameras, image_rays
    from nerfzip.evaluation.evaluate import path_poses, render_path
    from nerfzip.rendering.model import RadianceModel, SceneSpace
    from nerfzip.rendering.renderer import RenderConfig

    model = RadianceModel(Ball(), RenderConfig(sampler="hierarchical", n_coarse=32, n_fine=32),
                          SceneSpace.of(scene))
    cams = scene.split("train").cameras
    video = render_path(model, cams, tmp_path / "v", "orbit", n_frames=4, fmt="gif", quiet=True)
    frames = iio.imread(video, index=None)
    pngs = sorted((tmp_path / "v" / "frames").glob("*.png"))
    assert frames.shape == (4, 64, 64, 3) and len(pngs) == 4
    poses = path_poses(model, cams, "orbit", 4)
    for k, png in enumerate(pngs):
        # Each frame is the render of its camera: the PNG exactly, the GIF up to its palette.
        cam = Cameras(poses[k][None], cams.fx[:1], cams.fy[:1], cams.cx[:1], cams.cy[:1],
                      cams.width[:1], cams.height[:1], None)
        o, d = image_rays(cam, 0, model.space.pixel_offset)
        direct = model.render_rays(model.space.make_rays(o, d)).view(64, 64, 3)
        direct = (direct * 255).round().to(torch.uint8)
        img = torch.from_numpy(iio.imread(png)[..., :3].copy())
        assert torch.equal(img, direct), k
        assert psnr(torch.from_numpy(frames[k][..., :3].copy()), direct) > 30.0, k
        # The ball covers part of the frame: neither empty nor a flat colour.
        assert 0.05 < float((img != 255).any(-1).float().mean()) < 0.9
    # The camera moves round the ball: consecutive frames show other sides of it.
    for a, b in zip(frames, frames[1:]):
        assert np.abs(a.astype(float) - b.astype(float)).mean() > 2.0


def test_mlp_size_options_build_the_papers_layout_at_that_size():
    from nerfzip.training.trainer import new_field

    scene = load_scene("procedural")
    field = new_field(TrainConfig(field="mlp-nerf", mlp_width=32, mlp_depth=4), scene)
    c = field.config
    assert (c.hidden, c.depth, c.skips, c.dir_hidden, c.hierarchical) == (32, 4, (3,), 16, True)
    # Per network: 63->32, 32->32, 32->32, (32+63)->32, alpha 32->1, feature 32->32,
    # dir (32+27)->16, rgb 16->3; coarse and fine alike.
    per_net = (63 * 32 + 32) + 2 * (32 * 32 + 32) + (95 * 32 + 32) + 33 + (32 * 32 + 32) \
        + (59 * 16 + 16) + (16 * 3 + 3)
    assert sum(p.numel() for p in field.parameters()) == 2 * per_net
    paper = new_field(TrainConfig(field="mlp-nerf"), scene)
    assert paper.config == MLPNeRFConfig()
