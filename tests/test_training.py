"""Training on the procedural scene: a short run learns the scene, checkpoints are safetensors
+ JSON, and a resumed run takes exactly the steps of an uninterrupted one."""

from dataclasses import replace

import pytest
import torch

from nerfzip.data.load import load_scene
from nerfzip.evaluation.evaluate import evaluate
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
    # A constant image of the mean colour scores ~12 dB here; a learned field far more.
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
    train(scene, tiny_config(iters=5), tmp_path / "r", quiet=True)
    raw = (tmp_path / "r" / "checkpoint.safetensors").read_bytes()
    n = int.from_bytes(raw[:8], "little")
    header = raw[8:8 + n].decode("utf-8")
    assert header.startswith("{") and "optim." in header and "rng.state" in header
    assert b"\x80\x04" not in raw[:2]  # no pickle protocol marker at the start


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


def test_render_path_writes_video_and_frames(scene, tmp_path):
    from nerfzip.evaluation.evaluate import render_path

    model = train(scene, tiny_config(iters=10), tmp_path / "r", quiet=True)
    video = render_path(model, scene.split("train").cameras, tmp_path / "v", "orbit",
                        n_frames=4, fmt="gif", quiet=True)
    import imageio.v3 as iio

    frames = iio.imread(video, index=None)
    assert frames.shape[0] == 4 and frames.shape[1:3] == (64, 64)
    assert len(list((tmp_path / "v" / "frames").glob("*.png"))) == 4


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
