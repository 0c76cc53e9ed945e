"""The hash-grid family (Instant-NGP): hashing and dense indexing on hand-worked cases, exact
trilinear interpolation, the SH basis, the importance hook, and a short training run that is
saved, loaded and quantized."""

import math
from dataclasses import replace

import numpy as np
import pytest
import torch

import nerfzip
from nerfzip.cli.args import overrides
from nerfzip.cli.main import build_parser
from nerfzip.data.procedural import load_procedural
from nerfzip.errors import NerfzipError
from nerfzip.evaluation.metrics import psnr
from nerfzip.fields.hash_grid import (
    HashEncoding,
    HashGrid,
    HashGridConfig,
    corner_indices,
    dense_index,
    hash_index,
    level_resolutions,
)
from nerfzip.fields.sh import SH_C0, SH_C1, spherical_harmonics
from nerfzip.training.checkpoint import load_model
from nerfzip.training.config import TrainConfig, defaults_for
from nerfzip.training.trainer import train
from nerfzip.utils.schema import from_dict

BOX = torch.tensor([[-1.0] * 3, [1.0] * 3])


# --- indexing ---------------------------------------------------------------------------------
def test_hash_of_hand_worked_vertices():
    # (i * 1) xor (j * 2654435761) xor (k * 805459861), then the low bits.
    v = torch.tensor([[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 0], [1, 2, 3]])
    assert hash_index(v, 1024).tolist() == [0, 1, 2654435761 % 1024, 805459861 % 1024,
                                            1 ^ (2654435761 % 1024), 7187592668 % 1024]
    assert 2654435761 % 1024 == 433 and 805459861 % 1024 == 917
    assert hash_index(v[-1:], 1 << 19).item() == 128476  # 7187592668 mod 2^19


def test_dense_index_is_row_major_in_x():
    # A 2-cell level has 3 vertices per axis: index = i + 3 j + 9 k.
    v = torch.tensor([[0, 0, 0], [1, 0, 0], [1, 2, 0], [0, 0, 1], [2, 2, 2]])
    assert dense_index(v, 2).tolist() == [0, 1, 7, 9, 26]


def test_corner_indices_match_the_reference_per_corner():
    cell = torch.randint(0, 100, (2, 50, 3))
    corners = torch.tensor([[c & 1, c >> 1 & 1, c >> 2 & 1] for c in range(8)])
    ref = cell[:, :, None, :] + corners  # [2, 50, 8, 3]
    assert torch.equal(corner_indices(cell, None, 4096), hash_index(ref, 4096))
    side = torch.tensor([101, 101])
    assert torch.equal(corner_indices(cell, side, 1 << 24), dense_index(ref, 100))


def test_levels_grow_geometrically_and_coarse_levels_are_dense():
    res = level_resolutions(16, 16, 512)
    assert res[0] == 16 and res[-1] == 512 and res == sorted(res)
    b = math.exp(math.log(32) / 15)
    assert res[5] == math.floor(16 * b ** 5)
    assert level_resolutions(1, 8, 64) == [8]
    enc = HashEncoding(HashGridConfig(levels=16, log2_table_size=15, finest_resolution=512))
    # 16^3 .. 25^3 vertex counts fit 2^15 entries; 32 cells (33^3 vertices) no longer do.
    assert enc.n_dense == 3 and enc.sizes[:4] == [17 ** 3, 21 ** 3, 26 ** 3, 1 << 15]


# --- interpolation ----------------------------------------------------------------------------
def one_level(resolution: int, log2_table: int) -> HashEncoding:
    return HashEncoding(HashGridConfig(levels=1, features=1, base_resolution=resolution,
                                       finest_resolution=resolution,
                                       log2_table_size=log2_table))


@pytest.mark.parametrize("log2_table", [8, 5], ids=["dense", "hashed"])
def test_trilinear_is_exact_at_vertices_and_linear_between(log2_table):
    enc = one_level(4, log2_table)  # 125 vertices: dense in 256 entries, hashed in 32
    with torch.no_grad():
        enc.tables[0].normal_()
    table = enc.tables[0][0]
    ijk = torch.tensor([[0, 0, 0], [1, 2, 3], [4, 4, 4], [3, 0, 4]])
    index = dense_index(ijk, 4) if log2_table == 8 else hash_index(ijk, 32)
    got = enc(ijk.float() / 4)[:, 0]
    assert torch.allclose(got, table[index], atol=1e-6)
    # Along an edge from vertex (1, 2, 3) to (2, 2, 3) the value moves linearly.
    a, b = enc(torch.tensor([[1, 2, 3.0]]) / 4), enc(torch.tensor([[2, 2, 3.0]]) / 4)
    for t in (0.25, 0.5, 0.9):
        mid = enc(torch.tensor([[1 + t, 2, 3.0]]) / 4)
        assert torch.allclose(mid, (1 - t) * a + t * b, atol=1e-6)


def test_a_linear_table_is_reproduced_everywhere():
    enc = one_level(5, 10)  # dense: 216 vertices
    i = torch.arange(216)
    x, y, z = i % 6, i // 6 % 6, i // 36
    with torch.no_grad():
        enc.tables[0][0] = 0.5 + 1.0 * x - 2.0 * y + 0.25 * z
    u = torch.rand(100, 3, generator=torch.Generator().manual_seed(0))
    expect = 0.5 + 5 * (1.0 * u[:, 0] - 2.0 * u[:, 1] + 0.25 * u[:, 2])
    assert torch.allclose(enc(u)[:, 0], expect, atol=1e-4)


def test_features_are_level_major_and_read_level_agrees():
    enc = HashEncoding(HashGridConfig(levels=4, features=2, base_resolution=4,
                                      finest_resolution=40, log2_table_size=10))
    with torch.no_grad():
        for t in enc.tables:
            t.normal_()
    u = torch.rand(64, 3, generator=torch.Generator().manual_seed(1))
    out = enc(u)
    assert out.shape == (64, 8)
    for level in range(4):
        assert torch.allclose(out[:, 2 * level:2 * level + 2],
                              enc.read_level(enc.tables[level], u, level).t(), atol=1e-6)


# --- spherical harmonics ----------------------------------------------------------------------
def test_sh_basis_is_orthonormal_on_the_sphere():
    # Gauss-Legendre in cos(theta) x uniform phi integrates degree <= 15 exactly.
    nodes, wts = np.polynomial.legendre.leggauss(12)
    phi = np.arange(24) * 2 * np.pi / 24
    ct, p = np.meshgrid(nodes, phi, indexing="ij")
    st = np.sqrt(1 - ct ** 2)
    d = torch.tensor(np.stack([st * np.cos(p), st * np.sin(p), ct], -1).reshape(-1, 3))
    w = torch.tensor(np.repeat(wts, 24) * 2 * np.pi / 24)
    y = spherical_harmonics(d)
    gram = (y * w[:, None]).t() @ y
    assert torch.allclose(gram, torch.eye(16, dtype=gram.dtype), atol=1e-10)


def test_sh_known_values_along_z():
    y = spherical_harmonics(torch.tensor([[0.0, 0.0, 1.0]], dtype=torch.float64))[0]
    expect = torch.zeros(16, dtype=torch.float64)
    expect[0], expect[2] = SH_C0, SH_C1
    expect[6] = math.sqrt(5 / math.pi) / 2  # Y_2^0(z = 1) = sqrt(5 / 4 pi)
    expect[12] = math.sqrt(7 / math.pi) / 2  # Y_3^0(z = 1) = sqrt(7 / 4 pi)
    assert torch.allclose(y, expect, atol=1e-12)


# --- config and hooks -------------------------------------------------------------------------
def test_config_is_validated_with_one_line_errors():
    with pytest.raises(NerfzipError, match="levels"):
        HashGridConfig(levels=0)
    with pytest.raises(NerfzipError, match="finest_resolution"):
        HashGridConfig(base_resolution=64, finest_resolution=32)
    with pytest.raises(NerfzipError, match="unknown setting 'tables'"):
        from_dict(HashGridConfig, {"tables": 3}, "options", strict=True)
    with pytest.raises(NerfzipError, match="density_activation"):
        from_dict(HashGridConfig, {"density_activation": "relu"}, "options")


def small_field(**kw) -> HashGrid:
    cfg = HashGridConfig(levels=4, base_resolution=4, finest_resolution=32, log2_table_size=10,
                         hidden=16, color_hidden=16, **kw)
    return HashGrid(cfg, BOX, seed=0)


def test_tables_are_grid_parameters_and_named_tensors():
    field = small_field()
    groups = field.param_groups()
    assert {id(p) for p in groups["grid"]} == {id(t) for t in field.encoding.tables}
    names = set(field.named_tensors())
    assert {f"encoding.tables.{l}" for l in range(4)} <= names
    assert set(field.feature_grids()) == {f"encoding.tables.{l}" for l in range(4)}
    assert field.optimizer_options()["grid"]["eps"] == 1e-15
    assert field.grid_voxels() == 33 ** 3


def test_importance_splats_each_weight_onto_its_corners():
    field = small_field()
    # A point on a vertex of every level (0 is one) gives all its weight to that entry; any
    # point's trilinear weights sum to one, so each map holds the total weight.
    pts = torch.tensor([[-1.0, -1.0, -1.0], [0.1, 0.2, -0.3], [0.5, 0.5, 0.5]])
    w = torch.tensor([2.0, 1.0, 0.5])
    imp = field.importance(pts, w)
    for name, m in imp.items():
        assert m.shape == (1, field.get_parameter(name).shape[1])
        assert torch.isclose(m.sum(), w.sum(), atol=1e-5), name
        assert m[0, 0] >= 2.0 - 1e-6  # vertex (0, 0, 0): index 0, dense or hashed
    single = field.importance(pts[:1], w[:1])
    assert all(int((m > 0).sum()) == 1 for m in single.values())


def test_training_options_come_from_the_family():
    cfg = replace(defaults_for("procedural", "hash-grid"),
                  field_options={"levels": 4, "log2_table_size": 12})
    field = HashGrid.for_training("hash-grid", cfg, BOX)
    assert field.config.levels == 4 and field.config.log2_table_size == 12
    assert (cfg.lr_grid, cfg.lr_net) == (1e-2, 1e-2)
    with pytest.raises(NerfzipError, match="unknown setting 'bogus'"):
        HashGrid.for_training("hash-grid", replace(cfg, field_options={"bogus": 1}), BOX)
    # From the command line: values are JSON where they parse, strings otherwise.
    parser = build_parser()
    args = parser.parse_args(["train", "--data", "procedural", "-o", "run", "--field",
                              "hash-grid", "--field-options", "levels=4",
                              "density_activation=softplus", "init_scale=1e-3"])
    assert overrides(args, TrainConfig)["field_options"] == {
        "levels": 4, "density_activation": "softplus", "init_scale": 1e-3}
    with pytest.raises(SystemExit) as e:
        parser.parse_args(["train", "--data", "procedural", "-o", "run", "--field-options",
                           "levels"])
    assert e.value.code == 2


# --- training, saving, quantizing -------------------------------------------------------------
@pytest.fixture(scope="module")
def scene():
    return load_procedural(resolution=32, n_train=20, n_test=2)


@pytest.fixture(scope="module")
def trained(scene, tmp_path_factory):
    out = tmp_path_factory.mktemp("hash") / "run"
    cfg = replace(defaults_for("procedural", "hash-grid"), iters=80, batch_size=256,
                  warmup_batch_size=256, checkpoint_every=10 ** 6,
                  field_options={"levels": 8, "log2_table_size": 14, "finest_resolution": 128})
    return train(scene, cfg, out, quiet=True), out


def view_psnr(model, scene, i=0) -> float:
    target = scene.split("test").images[i].float() / 255
    return float(psnr(model.render_view(scene, "test", i).clamp(0, 1), target))


def test_short_run_beats_a_constant_image(scene, trained):
    model, _ = trained
    target = scene.split("test").images[0].float() / 255
    constant = float(psnr(target.mean((0, 1)).expand_as(target), target))
    got = view_psnr(model, scene)
    assert got > constant + 6.0, (got, constant)
    assert model.occupancy is not None and model.render.sampler == "occupancy"


def test_save_load_renders_exactly(scene, trained):
    model, out = trained
    loaded = load_model(out)
    assert loaded.field.family == "hash-grid"
    assert torch.equal(model.render_view(scene, "test", 1), loaded.render_view(scene, "test", 1))


def test_quantized_tables_round_trip_through_the_codec(scene, trained, tmp_path):
    from nerfzip.codec.nrz import channel_axis
    from nerfzip.codec.tensors import fake_quantize

    model, _ = trained
    report = nerfzip.save(model, tmp_path / "h.nrz", mode="quant", bits=8)
    loaded = nerfzip.load(tmp_path / "h.nrz")
    fake = load_model(trained[1])
    with torch.no_grad():
        for name, t in fake.field.named_tensors().items():
            if t.is_floating_point() and t.numel() >= 4096:
                fake.field.get_parameter(name).copy_(fake_quantize(t, 8, channel_axis(t)))
    a = loaded.field.named_tensors()
    for name, t in fake.field.named_tensors().items():
        assert torch.allclose(a[name], t, atol=1e-6), name
    assert torch.allclose(loaded.render_view(scene, "test", 0),
                          fake.render_view(scene, "test", 0), atol=1e-4)
    assert report.bytes < 0.4 * 4 * model.field.num_parameters()


def test_tensorf_importance_hook_splats_onto_every_factor():
    from nerfzip.fields.tensorf import TensoRF, default_config

    field = TensoRF(default_config("tensorf-vm", resolution=(6, 7, 8)), BOX)
    pts = torch.rand(200, 3, generator=torch.Generator().manual_seed(2)) * 2 - 1
    w = torch.rand(200, generator=torch.Generator().manual_seed(3))
    imp = field.importance(pts, w)
    assert set(imp) == set(field.feature_grids()) and len(imp) == 12
    for name, m in imp.items():
        shape = list(field.get_parameter(name).shape)
        assert list(m.shape) == [1, 1, *shape[2:]], name
        assert torch.isclose(m.sum(), w.sum(), atol=1e-4), name  # (bi)linear weights sum to 1
    assert field.feature_grids()["app_grids.planes.0"].vector_quantize
    assert not field.feature_grids()["app_grids.lines.0"].vector_quantize
    assert field.grid_voxels() == 6 * 7 * 8


def test_vq_and_importance_pruning_of_the_hash_tables(scene, trained, tmp_path):
    """The grid passes reach the hash tables through the field's hooks (feature grids along
    axis 0, importance splatted by the family), and the file stores what they left."""
    model, _ = trained
    c = nerfzip.run_pipeline(model, nerfzip.parse_pipeline(
        "prune(method=importance, keep_mass=0.99, n_rays=2048) vq(256, 0.0, n_rays=2048)"),
        scene)
    tables = {n: t for n, t in c.model.field.named_tensors().items() if "tables" in n}
    pruned = sum(int((t.abs().amax(0) == 0).sum()) for t in tables.values())
    assert pruned > 0  # whole entries (every feature) were zeroed
    for name, t in tables.items():
        live = t[:, t.abs().amax(0) > 0]
        if live.shape[1] >= 4 * 256:  # quantized to at most 256 distinct feature vectors
            assert torch.unique(live.t(), dim=0).shape[0] <= 256, name
    c.save(tmp_path / "vq.nrz")
    loaded = nerfzip.load(tmp_path / "vq.nrz")
    assert torch.equal(loaded.render_view(scene, "test", 0), c.model.render_view(scene, "test", 0))
    assert (tmp_path / "vq.nrz").stat().st_size < 0.25 * 4 * model.field.num_parameters()
    assert view_psnr(c.model, scene) > view_psnr(model, scene) - 3.0
