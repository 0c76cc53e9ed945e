"""MLP NeRF field, positional encoding and the nerf-pytorch importer."""

from __future__ import annotations

import dataclasses
import json
import math
import pickle
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from nerfzip.data.load import load_scene
from nerfzip.errors import NerfzipError
from nerfzip.fields.base import build_field
from nerfzip.fields.encoding import encoding_dim, positional_encoding
from nerfzip.fields.mlp_nerf import MLPNeRF, MLPNeRFConfig
from nerfzip.importers.nerf_pytorch import (
    import_nerf_pytorch,
    load_nerf_pytorch_checkpoint,
    nerf_pytorch_field,
)
from nerfzip.training.checkpoint import load_model, save_model

MODELS = Path(__file__).resolve().parents[1].parent / "shared" / "models"
CHECKPOINTS = {
    "lego": MODELS / "nerf-pytorch" / "lego-lowres" / "checkpoint199999.ckpt",
    "fern": MODELS / "nerf-pytorch" / "fern-lowres" / "checkpoint249999.ckpt",
}
# Field-space boxes to draw test points from: lego in world space, fern in NDC.
BOXES = {"lego": [[-1.5, -1.5, -1.5], [1.5, 1.5, 1.5]], "fern": [[-1.0, -1.0, -1.0], [1.0] * 3]}

SMALL = MLPNeRFConfig(pos_freqs=4, dir_freqs=2, hidden=32, depth=4, skips=(2,), dir_hidden=16)
AABB = torch.tensor([[-1.0, -1.0, -1.0], [1.0, 1.0, 1.0]])


def random_inputs(n: int, seed: int = 0, box=AABB) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    box = torch.as_tensor(box, dtype=torch.float32)
    x = box[0] + (box[1] - box[0]) * torch.rand(n, 3, generator=gen)
    d = F.normalize(torch.randn(n, 3, generator=gen), dim=-1)
    return x, d


# -- positional encoding ---------------------------------------------------------------------

def test_positional_encoding_hand_worked():
    x = torch.tensor([[0.5, -1.0]], dtype=torch.float64)
    s, c = math.sin, math.cos
    expected = [0.5, -1.0, s(0.5), s(-1.0), c(0.5), c(-1.0), s(1.0), s(-2.0), c(1.0), c(-2.0)]
    out = positional_encoding(x, 2)
    assert out.shape == (1, encoding_dim(2, 2)) == (1, 10)
    torch.testing.assert_close(out[0], torch.tensor(expected, dtype=torch.float64))
    torch.testing.assert_close(positional_encoding(x, 2, include_input=False)[0],
                               torch.tensor(expected[2:], dtype=torch.float64))
    assert encoding_dim(3, 10) == 63 and encoding_dim(3, 4, include_input=False) == 24
    assert torch.equal(positional_encoding(x, 0), x)


def test_positional_encoding_matches_nerf_pytorch_loop():
    x = torch.randn(7, 5, 3)
    expected = [x]
    for i in range(6):  # krrish94/nerf-pytorch positional_encoding, log sampling
        for fn in (torch.sin, torch.cos):
            expected.append(fn(x * 2.0**i))
    assert torch.equal(positional_encoding(x, 6), torch.cat(expected, dim=-1))


# -- the field --------------------------------------------------------------------------------

@pytest.mark.parametrize("activation", ["relu", "softplus", "trunc_exp"])
def test_field_shapes_and_consistency(activation):
    field = MLPNeRF(MLPNeRFConfig(**{**SMALL.__dict__, "density_activation": activation}), AABB)
    x, d = random_inputs(257)
    sigma, rgb = field(x, d)
    assert sigma.shape == (257,) and rgb.shape == (257, 3)
    assert bool((sigma >= 0).all()) and bool(((rgb >= 0) & (rgb <= 1)).all())
    assert torch.equal(field.density(x), sigma)
    assert torch.equal(field.radiance(x, d), rgb)
    coarse = field.coarse_field()
    assert coarse is field.coarse and coarse is not field.fine
    sigma_c, rgb_c = coarse(x, d)
    assert torch.equal(coarse.density(x), sigma_c) and torch.equal(coarse.radiance(x, d), rgb_c)
    assert not torch.equal(sigma_c, sigma)
    (sigma.sum() + rgb.sum() + sigma_c.sum() + rgb_c.sum()).backward()
    assert all(p.grad is not None for p in field.parameters())


def test_field_parameters_and_non_hierarchical():
    field = MLPNeRF(MLPNeRFConfig(), AABB)
    names = field.named_tensors()
    assert names["fine.layers.0.weight"].shape == (256, 63)
    assert names["fine.layers.5.weight"].shape == (256, 256 + 63)  # the paper's skip
    assert names["coarse.dir_layer.weight"].shape == (128, 256 + 27)
    assert names["fine.alpha_head.weight"].shape == (1, 256)
    assert names["fine.rgb_head.weight"].shape == (3, 128)
    flat = MLPNeRF(MLPNeRFConfig(**{**SMALL.__dict__, "hierarchical": False}), AABB)
    assert flat.coarse_field() is flat.fine
    assert not any(k.startswith("coarse.") for k in flat.named_tensors())


def test_cpu_chunking_matches_whole_batch():
    field = MLPNeRF(SMALL, AABB)
    x, d = random_inputs(100)
    whole = field(x, d)
    field.fine.cpu_chunk = 7  # 15 blocks, the last one of 2 rows
    chunked = field(x, d)
    for a, b in zip(whole, chunked, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(field.density(x), whole[0], rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(field.radiance(x, d), whole[1], rtol=1e-6, atol=1e-6)
    chunked[1].sum().backward()
    assert field.fine.layers[0].weight.grad is not None


def test_config_checks():
    with pytest.raises(NerfzipError, match="skips"):
        MLPNeRFConfig(depth=4, skips=(4,))
    with pytest.raises(NerfzipError, match="density_activation"):
        MLPNeRFConfig(density_activation="exp")


def test_round_trip_through_config_and_tensors():
    field = MLPNeRF(SMALL, AABB, seed=3)  # build_field uses seed 0: outputs match only if loaded
    config = json.loads(json.dumps(field.config_dict()))
    rebuilt = build_field(config, field.named_tensors())
    assert isinstance(rebuilt, MLPNeRF) and rebuilt.config == field.config
    x, d = random_inputs(500)
    for a, b in [(field, rebuilt), (field.coarse_field(), rebuilt.coarse_field())]:
        sa, ca = a(x, d)
        sb, cb = b(x, d)
        assert torch.equal(sa, sb) and torch.equal(ca, cb)
    assert not torch.equal(build_field(config)(x, d)[1], field(x, d)[1])


# -- the nerf-pytorch importer ------------------------------------------------------------------

def pe_reference(x: torch.Tensor, n_freqs: int) -> torch.Tensor:
    out = [x]
    for i in range(n_freqs):
        out += [torch.sin(x * 2.0**i), torch.cos(x * 2.0**i)]
    return torch.cat(out, dim=-1)


def flexible_nerf_reference(sd: dict, x: torch.Tensor, d: torch.Tensor):
    """krrish94's FlexibleNeRFModel + raw2outputs, straight from the raw state dict."""
    hidden, pos_dim = sd["layer1.weight"].shape
    xyz = pe_reference(x, (pos_dim - 3) // 6)
    view = pe_reference(d, (sd["layers_dir.0.weight"].shape[1] - hidden - 3) // 6)
    h = F.linear(xyz, sd["layer1.weight"], sd["layer1.bias"])  # no activation after layer1
    i = 0
    while f"layers_xyz.{i}.weight" in sd:
        w = sd[f"layers_xyz.{i}.weight"]
        if w.shape[1] != h.shape[1]:
            h = torch.cat((h, xyz), dim=-1)
        h = F.relu(F.linear(h, w, sd[f"layers_xyz.{i}.bias"]))
        i += 1
    feat = F.relu(F.linear(h, sd["fc_feat.weight"], sd["fc_feat.bias"]))
    alpha = F.linear(h, sd["fc_alpha.weight"], sd["fc_alpha.bias"])
    y = F.relu(F.linear(torch.cat((feat, view), dim=-1), sd["layers_dir.0.weight"],
                        sd["layers_dir.0.bias"]))
    rgb = F.linear(y, sd["fc_rgb.weight"], sd["fc_rgb.bias"])
    return F.relu(alpha[..., 0]), torch.sigmoid(rgb)


@pytest.mark.parametrize("scene", ["lego", "fern"])
def test_imported_checkpoint_matches_raw_layers(scene):
    path = CHECKPOINTS[scene]
    if not path.is_file():
        pytest.skip(f"shared checkpoint {path} not available")
    field, report = nerf_pytorch_field(path, torch.tensor(BOXES[scene]))
    ckpt = torch.load(path, weights_only=True, map_location="cpu")
    arch = report["architecture"]
    assert (arch["hidden"], arch["depth"], arch["dir_freqs"], arch["dir_hidden"]) == (128, 4, 4, 64)
    assert arch["pos_freqs"] == {"lego": 10, "fern": 6}[scene] and tuple(arch["skips"]) == ()
    assert report["iteration"] == ckpt["iter"] and isinstance(report["psnr"], float)
    assert report["networks"] == ["coarse", "fine"]
    x, d = random_inputs(1000, seed=1, box=BOXES[scene])
    with torch.no_grad():
        for net, key in [(field, "model_fine_state_dict"),
                         (field.coarse_field(), "model_coarse_state_dict")]:
            sigma_ref, rgb_ref = flexible_nerf_reference(ckpt[key], x, d)
            sigma, rgb = net(x, d)
            torch.testing.assert_close(sigma, sigma_ref, rtol=1e-5, atol=1e-5)
            torch.testing.assert_close(rgb, rgb_ref, rtol=1e-5, atol=1e-5)
            assert bool((sigma_ref > 0).any())  # the comparison is not all zeros


def synthetic_state_dict(skip_layer: int | None, seed: int = 0) -> dict[str, torch.Tensor]:
    """A FlexibleNeRFModel-shaped state dict: hidden 16, Lx 2 (15 wide), Ld 1, 4 xyz layers."""
    gen = torch.Generator().manual_seed(seed)
    shapes = {"layer1": (16, 15), "fc_feat": (16, 16), "fc_alpha": (1, 16),
              "layers_dir.0": (8, 16 + 9), "fc_rgb": (3, 8)}
    for i in range(4):
        shapes[f"layers_xyz.{i}"] = (16, 16 + 15 if i == skip_layer else 16)
    sd = {}
    for name, (o, i) in shapes.items():
        sd[f"{name}.weight"] = torch.randn(o, i, generator=gen) / math.sqrt(i)
        sd[f"{name}.bias"] = 0.1 * torch.randn(o, generator=gen)
    return sd


def test_import_skip_and_coarse_only(tmp_path):
    sd = synthetic_state_dict(skip_layer=2)
    path = tmp_path / "skip.ckpt"
    torch.save({"iter": 7, "model_coarse_state_dict": sd, "model_fine_state_dict": None,
                "psnr": torch.tensor(30.5)}, path)
    field, report = nerf_pytorch_field(path, AABB)
    assert field.config.skips == (3,) and field.config.depth == 5
    assert field.config.hierarchical is False and field.coarse_field() is field.fine
    assert report["networks"] == ["coarse"] and report["psnr"] == 30.5 and "loss" not in report
    x, d = random_inputs(300)
    with torch.no_grad():
        sigma_ref, rgb_ref = flexible_nerf_reference(sd, x, d)
        sigma, rgb = field(x, d)
    torch.testing.assert_close(sigma, sigma_ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(rgb, rgb_ref, rtol=1e-5, atol=1e-5)


def test_imported_model_keeps_nerf_pytorch_pixel_corners_through_save_and_load(tmp_path):
    path = tmp_path / "m.ckpt"
    torch.save({"iter": 1, "model_coarse_state_dict": synthetic_state_dict(None),
                "model_fine_state_dict": None}, path)
    model = import_nerf_pytorch(path, load_scene("procedural"))
    assert model.space.pixel_offset == 0.0
    save_model(model, tmp_path / "imported.safetensors")
    assert load_model(tmp_path / "imported.safetensors").space.pixel_offset == 0.0
    # Models with the default (pixel centres) do not spell it out, so older files stay the same.
    model.space = dataclasses.replace(model.space, pixel_offset=0.5)
    assert "pixel_offset" not in model.space.to_dict()
    save_model(model, tmp_path / "own.safetensors")
    assert load_model(tmp_path / "own.safetensors").space.pixel_offset == 0.5


@pytest.mark.parametrize("mutate, message", [
    (lambda sd: sd.update({"fc_rgb.weight": torch.zeros(4, 8)}), "fc_rgb"),
    (lambda sd: sd.update({"layer1.weight": torch.zeros(16, 14)}), "3 \\+ 6 L"),
    (lambda sd: sd.pop("fc_feat.bias"), "missing: fc_feat.bias"),
    (lambda sd: sd.update({"extra.weight": torch.zeros(1)}), "unexpected: extra.weight"),
    (lambda sd: sd.update({"layers_xyz.1.weight": torch.zeros(16, 20)}), "layers_xyz.1"),
])
def test_import_rejects_unexpected_layouts(tmp_path, mutate, message):
    sd = synthetic_state_dict(skip_layer=None)
    mutate(sd)
    path = tmp_path / "bad.ckpt"
    torch.save({"model_coarse_state_dict": sd}, path)
    with pytest.raises(NerfzipError, match=message):
        nerf_pytorch_field(path, AABB)


def test_import_rejects_mismatched_coarse_and_fine(tmp_path):
    path = tmp_path / "mixed.ckpt"
    torch.save({"model_coarse_state_dict": synthetic_state_dict(None),
                "model_fine_state_dict": synthetic_state_dict(1)}, path)
    with pytest.raises(NerfzipError, match="differ in architecture"):
        nerf_pytorch_field(path, AABB)


# -- refusing files that are not checkpoints ----------------------------------------------------

def _touch(path: str) -> None:
    Path(path).write_text("code ran")


class Payload:
    """Unpickling this object calls ``_touch`` (a stand-in for arbitrary code)."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (_touch, (self.marker,))


class Opaque:
    """A plain custom class: not a tensor or a container, so it must be refused too."""


def test_load_refuses_non_checkpoints(tmp_path):
    missing = tmp_path / "missing.ckpt"
    with pytest.raises(NerfzipError, match="no such checkpoint file"):
        load_nerf_pytorch_checkpoint(missing)
    noise = tmp_path / "noise.ckpt"
    noise.write_bytes(torch.randint(0, 256, (4096,), generator=torch.Generator().manual_seed(0),
                                    dtype=torch.uint8).numpy().tobytes())
    with pytest.raises(NerfzipError, match="noise.ckpt"):
        load_nerf_pytorch_checkpoint(noise)
    tensors = tmp_path / "tensors.pt"
    torch.save({"weights": torch.zeros(3)}, tensors)
    with pytest.raises(NerfzipError, match="no model_coarse_state_dict"):
        load_nerf_pytorch_checkpoint(tensors)


@pytest.mark.parametrize("writer", ["pickle", "torch.save"])
def test_load_never_runs_pickled_code(tmp_path, writer):
    marker = tmp_path / "marker.txt"
    obj = {"model_coarse_state_dict": {}, "payload": Payload(marker), "other": Opaque()}
    path = tmp_path / "evil.ckpt"
    if writer == "pickle":
        path.write_bytes(pickle.dumps(obj, protocol=2))
        pickle.loads(path.read_bytes())  # control: a plain unpickler does run the payload
        assert marker.exists()
        marker.unlink()
    else:
        torch.save(obj, path)
    with pytest.raises(NerfzipError, match="evil.ckpt.*weights-only") as info:
        load_nerf_pytorch_checkpoint(path)
    assert "\n" not in str(info.value)
    assert not marker.exists()
    opaque = tmp_path / "opaque.ckpt"
    torch.save({"model_coarse_state_dict": {}, "other": Opaque()}, opaque)
    with pytest.raises(NerfzipError, match="Opaque"):
        nerf_pytorch_field(opaque, AABB)
