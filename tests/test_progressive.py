"""Progressive .nrz files (the ``progressive`` pass, ``codec/layers.py``,
``codec/progressive.py``): the whole file renders like the single-rate file of the same
pipeline; every layer prefix decodes, and quality does not drop as layers arrive; decoding
layer by layer gives exactly the model a fresh decode of the same prefix gives; a prefix
without the base layer is one error line (exit status 2) saying what the base needs; families
without a layered form are refused."""

from __future__ import annotations

import copy
import json

import nrz_surgery as surgery  # tests/ helper (on the path under pytest)
import pytest
import torch

from nerfzip.cli.main import main
from nerfzip.codec import nrz
from nerfzip.codec.progressive import ProgressiveReader, iter_layers, load_prefix
from nerfzip.compression.passes.progressive import group_sizes
from nerfzip.compression.pipeline import parse_pipeline, run_pipeline
from nerfzip.errors import NerfzipError
from nerfzip.evaluation.evaluate import evaluate
from nerfzip.fields.mlp_nerf import MLPNeRF, MLPNeRFConfig
from nerfzip.fields.tensorf import TensoRF, TensoRFConfig
from nerfzip.rendering.model import RadianceModel, SceneSpace
from nerfzip.rendering.occupancy import OccupancyGrid
from nerfzip.rendering.renderer import RenderConfig

AABB = torch.tensor([[-1.0, -1.0, -1.0], [1.0, 1.0, 1.0]])
VIEWS = 3  # test views scored per model (of the procedural scene's 8)


@pytest.fixture(scope="module")
def files(trained_vm, tmp_path_factory):
    """The trained VM model as ``quant(8)`` (single rate) and ``progressive(4) quant(8)``."""
    out = tmp_path_factory.mktemp("progressive")
    single = run_pipeline(trained_vm, parse_pipeline("quant(8)"), None)
    layered = run_pipeline(trained_vm, parse_pipeline("progressive(layers=4) quant(8)"), None)
    single.save(out / "single.nrz")
    layered.save(out / "layered.nrz")
    return out / "single.nrz", out / "layered.nrz"


def psnr(model, scene) -> float:
    return evaluate(model, scene, "test", limit=VIEWS, quiet=True)["mean"]["psnr"]


def images(model, scene) -> torch.Tensor:
    with torch.no_grad():
        return torch.stack([model.render_view(scene, "test", i) for i in range(VIEWS)])


def test_group_sizes_grow_and_sum():
    assert group_sizes(16, 4, 2.0) == [1, 2, 4, 9]
    assert group_sizes(24, 4, 2.0) == [2, 3, 6, 13]
    assert group_sizes(6, 3, 1.0) == [2, 2, 2]
    assert group_sizes(4, 4, 8.0) == [1, 1, 1, 1]


def test_layering_keeps_the_field_and_quantized_files_match_in_quality(
        trained_vm, files, procedural_scene, tmp_path):
    # Lossless: the layered field renders what the field rendered (the density's singular
    # vectors and the reordered components make the same sums up to float rounding).
    c = run_pipeline(trained_vm, parse_pipeline("progressive(layers=4)"), None)
    assert c.model.field.config.density_groups == (1, 2, 4, 9)
    c.save(tmp_path / "lossless.nrz")
    diff = images(trained_vm, procedural_scene) - images(nrz.load(tmp_path / "lossless.nrz"),
                                                         procedural_scene)
    assert float(diff.abs().max()) <= 1e-5
    # Quantized after layering: the same quality as the single-rate file, about its size
    # (the rest: table rows, node headers and symbol models of 24 more sections).
    single, layered = (nrz.load(f) for f in files)
    assert abs(psnr(single, procedural_scene) - psnr(layered, procedural_scene)) < 0.05
    assert files[1].stat().st_size <= 1.15 * files[0].stat().st_size


def test_every_prefix_decodes_and_quality_grows_with_the_layers(files, procedural_scene):
    layers = nrz.info(files[1])["layers"]
    assert [r["layer"] for r in layers] == [0, 1, 2, 3]
    assert layers[0]["bytes"] < 0.2 * layers[-1]["bytes"]
    values = [psnr(load_prefix(files[1], layers=k)[0], procedural_scene) for k in (1, 2, 3, 4)]
    # Measured: 17.7, 20.3, 22.6, 23.8 dB (the single-rate file: 23.8).
    assert all(b >= a + 0.5 for a, b in zip(values, values[1:])), values
    assert values[0] > 15.0, values  # the base alone (11 % of the file) is a picture
    assert values[-1] > 22.5, values


def test_layer_by_layer_decoding_equals_a_fresh_decode_of_the_prefix(files):
    data = files[1].read_bytes()
    reader = ProgressiveReader("stream")
    seen = []
    for i in range(0, len(data), 7919):  # chunks that end anywhere, often inside a section
        for layer in reader.feed(data[i:i + 7919]):
            fresh, used = load_prefix(files[1], layers=layer.layer + 1)
            assert used[-1].bytes == layer.bytes
            got, want = reader.model.field.named_tensors(), fresh.field.named_tensors()
            assert got.keys() == want.keys()
            assert all(torch.equal(got[k], want[k]) for k in got)
            seen.append(id(reader.model))
    reader.close()
    assert len(seen) == 4 and len(set(seen)) == 1  # one model, refined in place
    whole = nrz.load(files[1]).field.named_tensors()
    assert all(torch.equal(v, whole[k]) for k, v in reader.model.field.named_tensors().items())
    with files[1].open("rb") as f:
        assert [info.layer for info, _ in iter_layers(f, chunk=50_000)] == [0, 1, 2, 3]


def test_bytes_between_layer_boundaries_use_the_completed_layers(files):
    ends = [r["bytes"] for r in nrz.info(files[1])["layers"]]
    for n, k in ((ends[0], 1), (ends[1] - 1, 1), ((ends[1] + ends[2]) // 2, 2),
                 (ends[3], 4), (files[1].stat().st_size, 4)):
        model, used = load_prefix(files[1], nbytes=n)
        assert len(used) == k
        want = load_prefix(files[1], layers=k)[0].field.named_tensors()
        got = model.field.named_tensors()
        assert all(torch.equal(got[name], want[name]) for name in want)
        missing = [name for name, layer in model.field.tensor_layers().items() if layer >= k]
        assert missing and all(bool((got[name] == 0).all()) for name in missing) or k == 4


def test_a_prefix_shorter_than_the_base_is_one_line_and_status_2(files, capsys, tmp_path):
    base = nrz.info(files[1])["layers"][0]["bytes"]
    status = main(["eval", str(files[1]), "--bytes", str(base - 1), "--out",
                   str(tmp_path / "e")])
    err = capsys.readouterr().err.strip()
    assert status == 2 and len(err.splitlines()) == 1 and "Traceback" not in err
    assert f"needs {base:,} bytes" in err
    assert main(["eval", str(files[1]), "--layers", "5"]) == 2
    assert "has 4 layers" in capsys.readouterr().err
    assert main(["info", str(files[1])]) == 0
    assert "1 (base)" in capsys.readouterr().out


def test_quantized_before_the_split_with_energy_order(trained_vm, files, procedural_scene,
                                                      tmp_path):
    """``quant`` before ``progressive``: the grids are split with their components (the
    density then ordered by energy, not rotated); the whole file renders exactly like the
    single-rate quant(8) file."""
    c = run_pipeline(trained_vm, parse_pipeline(
        "quant(8) progressive(3, growth=1, density=energy)"), None)
    assert c.model.field.config.appearance_groups == (8, 8, 8)
    c.save(tmp_path / "p.nrz")
    back = nrz.load(tmp_path / "p.nrz")
    got = back.field.named_tensors()
    assert all(torch.equal(got[k], v) for k, v in c.model.field.named_tensors().items())
    diff = images(nrz.load(files[0]), procedural_scene) - images(back, procedural_scene)
    assert float(diff.abs().max()) <= 1e-5
    with pytest.raises(NerfzipError, match="run progressive before quant"):
        run_pipeline(trained_vm, parse_pipeline("quant(8) progressive(3)"), None)


def small_tensorf(decomposition: str) -> RadianceModel:
    cfg = TensoRFConfig(decomposition=decomposition, resolution=(9, 10, 11),
                        density_components=6, appearance_components=5, app_dim=4,
                        decoder_hidden=8, density_shift=0.0, init_scale=0.5)
    occ = OccupancyGrid(AABB, 4)
    occ.occupied.fill_(True)
    return RadianceModel(TensoRF(cfg, AABB, seed=1), RenderConfig(step_size=0.1),
                         SceneSpace([1.0, 1.0, 1.0], 2.0, 6.0), occ, {})


@pytest.mark.parametrize("decomposition", ["vm", "cp"])
def test_reordering_keeps_the_full_field(decomposition, tmp_path):
    model = small_tensorf(decomposition)
    before = copy.deepcopy(model.field.named_tensors())
    c = run_pipeline(model, parse_pipeline("progressive(layers=3)"), None)
    assert all(torch.equal(v, before[k]) for k, v in model.field.named_tensors().items())
    x = torch.rand(500, 3, generator=torch.Generator().manual_seed(2)) * 2 - 1
    d = torch.nn.functional.normalize(x + 0.3, dim=-1)
    with torch.no_grad():
        for a, b in zip(model.field(x, d), c.model.field(x, d)):
            assert float((a - b).abs().max()) <= 1e-5 * max(1.0, float(a.abs().max()))
    c.save(tmp_path / "m.nrz")
    energy = c.history[-1]["report"]["energy"]
    assert energy == sorted(energy) and energy[-1] == 1.0
    assert len(nrz.info(tmp_path / "m.nrz")["layers"]) == 3


def test_unsupported_family_and_order_are_refused():
    mlp = RadianceModel(MLPNeRF(MLPNeRFConfig(pos_freqs=2, dir_freqs=1, hidden=8, depth=2,
                                              skips=(), dir_hidden=4), AABB),
                        RenderConfig(sampler="hierarchical", n_coarse=8, n_fine=8),
                        SceneSpace([0.0, 0.0, 0.0], 2.0, 6.0))
    with pytest.raises(NerfzipError, match=r"^pipeline step 1 \(progressive\(\)\): progressive: "
                       "the mlp-nerf family has no layered form"):
        run_pipeline(mlp, parse_pipeline("progressive"), None)
    model = small_tensorf("vm")
    with pytest.raises(NerfzipError, match="Codebook constraint.*run progressive before vq"):
        run_pipeline(model, parse_pipeline("vq(16) progressive(3, density=energy)"), None)
    with pytest.raises(NerfzipError, match="reduce_rank: the field is layered"):
        run_pipeline(model, parse_pipeline("progressive(3) reduce_rank(2)"), None)
    with pytest.raises(NerfzipError, match="need at least 6 appearance"):
        run_pipeline(model, parse_pipeline("progressive(6)"), None)


def test_a_file_without_layers_is_one_layer(tmp_path):
    model = small_tensorf("vm")
    nrz.save(model, tmp_path / "m.nrz")
    assert "progressive" not in nrz.info(tmp_path / "m.nrz")["header"]
    (row,) = nrz.info(tmp_path / "m.nrz")["layers"]
    prefix, used = load_prefix(tmp_path / "m.nrz", layers=1)
    whole = nrz.load(tmp_path / "m.nrz").field.named_tensors()
    assert all(torch.equal(v, whole[k]) for k, v in prefix.field.named_tensors().items())
    assert used[0].bytes == row["bytes"]


def test_bad_layer_records_are_one_line_errors(tmp_path):
    model = small_tensorf("vm")
    run_pipeline(model, parse_pipeline("progressive(3)"), None).save(tmp_path / "p.nrz")
    good = (tmp_path / "p.nrz").read_bytes()

    def with_header(change) -> bytes:
        parts = surgery.split(good)
        header = json.loads(parts.header)
        change(header)
        parts.header = json.dumps(header).encode()
        return surgery.join(parts)

    def extra() -> bytes:  # a section the field does not have, in the last layer
        parts = surgery.split(good)
        parts.sections.append(["field.bogus", parts.sections[-1][1], parts.sections[-1][2]])
        header = json.loads(parts.header)
        header["progressive"]["layers"][-1] += 1
        parts.header = json.dumps(header).encode()
        return surgery.join(parts)

    cases = {
        "layers must be a list": with_header(lambda h: h.update(progressive={"layers": [3]})),
        "counts 40 sections": with_header(lambda h: h["progressive"].update(layers=[20, 10,
                                                                                   10])),
        "'field.bogus' is in a refinement layer but is not a refinement tensor": extra(),
    }
    for message, data in cases.items():
        (tmp_path / "bad.nrz").write_bytes(data)
        with pytest.raises(NerfzipError, match=message) as e:
            load_prefix(tmp_path / "bad.nrz", nbytes=len(data))
        assert "\n" not in str(e.value)
