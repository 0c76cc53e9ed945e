"""Compression passes on a field trained on the procedural scene: each shrinks the file by the
expected amount, keeps quality within a stated bound, keeps its constraints through
fine-tuning, never mutates its input, and the file decodes to exactly the compressed field.
Pipelines parse, and bad specs are rejected naming the step."""

from __future__ import annotations

import copy
import json
import subprocess
import sys

import pytest
import torch

from nerfzip import finetune, low_rank, prune, quantize, vector_quantize
from nerfzip.codec import nrz
from nerfzip.compression.constraints import Codebook, Mask, QuantGrid, constrained
from nerfzip.compression.passes.quant import calibrated_grid
from nerfzip.compression.passes.vq import kmeans
from nerfzip.compression.pipeline import load_pipeline_yaml, parse_pipeline, run_pipeline
from nerfzip.errors import NerfzipError
from nerfzip.evaluation.evaluate import evaluate


@pytest.fixture(scope="module")
def scene(procedural_scene):
    return procedural_scene


@pytest.fixture(scope="module")
def trained(trained_vm):
    return trained_vm


def psnr(model, scene) -> float:
    return evaluate(model, scene, "test", quiet=True)["mean"]["psnr"]


def file_bytes(model, tmp_path, options=None) -> int:
    return nrz.save(model, tmp_path / "m.nrz", options).bytes


def tensors_of(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.field.named_tensors().items()}


def assert_file_decodes_to(c, tmp_path):
    nrz.save(c.model, tmp_path / "c.nrz", c.save_options())
    back = nrz.load(tmp_path / "c.nrz").field.named_tensors()
    for name, x in c.model.field.named_tensors().items():
        assert torch.equal(back[name], x), name


def test_magnitude_pruning_is_stored_sparsely(trained, tmp_path):
    before = tensors_of(trained)
    c, report = prune(trained, 0.5)
    assert abs(report["sparsity"] - 0.5) < 0.01
    assert all(torch.equal(before[k], v) for k, v in trained.field.named_tensors().items())
    dense = file_bytes(trained, tmp_path)
    sparse = file_bytes(c.model, tmp_path, c.save_options())
    assert sparse < 0.7 * dense
    assert_file_decodes_to(c, tmp_path)


def test_eight_bit_quantization_is_four_times_smaller(trained, scene, tmp_path):
    c, report = quantize(trained, 8)
    assert report["quantized_values"] > 0.9 * trained.field.num_parameters()
    quantized = {k for k, cons in c.constraints.items() if any(isinstance(q, QuantGrid)
                                                               for q in cons)}
    nrz.save(c.model, tmp_path / "q.nrz", c.save_options())
    rows = {r["name"][len("field."):]: r for r in nrz.info(tmp_path / "q.nrz")["sections"]
            if r["name"].startswith("field.")}
    coded = sum(rows[k]["bytes"] for k in quantized)
    raw = sum(4 * trained.field.named_tensors()[k].numel() for k in quantized)
    assert raw / coded >= 4.0
    assert psnr(c.model, scene) > psnr(trained, scene) - 0.3
    assert_file_decodes_to(c, tmp_path)


def test_mse_calibration_clips_outliers_for_a_finer_step():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(8, 4096, generator=gen)
    x[:, 0] = 40.0  # one outlier per channel stretches the min / max range tenfold
    x[:, 1:100] = 0.0  # pruned entries
    for axis in (0, None):
        wide = calibrated_grid(x, 4, axis, "minmax")
        tight = calibrated_grid(x, 4, axis, "mse")
        err_wide = (wide.project(x) - x).pow(2).sum()
        err_tight = (tight.project(x) - x).pow(2).sum()
        # 16 levels over [-4, 40] put the Gaussian bulk on 2-3 levels; clipping wins clearly
        assert err_tight < 0.5 * err_wide
        assert float(tight.scale.max()) < float(wide.scale.min())
        assert torch.equal(tight.project(x)[:, 1:100], torch.zeros(8, 99))
    # where min / max is already best (uniform values, no outliers), it is kept
    u = torch.linspace(-1.0, 1.0, 4096).view(1, -1)
    assert torch.equal(calibrated_grid(u, 4, 0, "mse").scale, calibrated_grid(u, 4, 0).scale)


def test_quantization_never_rounds_the_field_box(trained):
    model = copy.deepcopy(trained)
    with torch.no_grad():  # a cropped box: its corners are not on any 2-bit grid
        model.field.aabb.copy_(torch.tensor([[-1.1, -0.7, -1.2], [1.2, 0.9, 0.55]]))
    box = model.field.aabb.clone()
    c, _ = quantize(model, 2, min_elements=1)
    assert torch.equal(c.model.field.aabb, box)
    assert "aabb" not in c.constraints


def test_quant_rejects_an_unknown_calibration(trained):
    with pytest.raises(NerfzipError, match="calibration must be one of minmax, mse"):
        quantize(trained, 8, calibration="kl")


def test_finetune_keeps_masks_codebooks_and_grids(trained, scene, tmp_path):
    c, _ = prune(trained, method="occupancy")
    c, _ = vector_quantize(c, codebook_size=64, keep=0.02, scene=scene, n_rays=4096, iters=3)
    c, _ = quantize(c, 8)
    before = {k: [q for q in v] for k, v in c.constraints.items()}
    tuned, report = finetune(c, steps=30, batch_size=512, scene=scene)
    for name, cons in tuned.constraints.items():
        x = tuned.model.field.named_tensors()[name]
        assert torch.equal(constrained(x, cons), x), name  # on its grid / codebook / mask
        for old, new in zip(before[name], cons):
            assert type(old) is type(new)
            if isinstance(old, Mask):
                assert torch.equal(old.keep, new.keep)
                assert torch.equal(x[~new.keep], torch.zeros_like(x[~new.keep]))
            if isinstance(old, Codebook):
                assert torch.equal(old.indices, new.indices)
            if isinstance(old, QuantGrid):
                assert torch.equal(old.scale, new.scale)
    books = [q for cons in tuned.constraints.values() for q in cons if isinstance(q, Codebook)]
    old_books = [q for cons in before.values() for q in cons if isinstance(q, Codebook)]
    assert books and any(not torch.equal(a.codebook, b.codebook)
                         for a, b in zip(books, old_books))  # the codebook did train
    assert report["train_psnr_last"] > 15
    assert_file_decodes_to(tuned, tmp_path)


def test_occupancy_pruning_removes_only_unseen_entries(trained, scene):
    c, report = prune(trained, method="occupancy")
    assert report["sparsity"] > 0.05
    assert psnr(c.model, scene) > psnr(trained, scene) - 0.3


def test_pruning_and_finetune_keep_quality(trained, scene):
    base = psnr(trained, scene)
    c, _ = prune(trained, 0.5)
    c, _ = finetune(c, steps=60, batch_size=1024, scene=scene)
    assert psnr(c.model, scene) > base - 1.0


def test_component_pruning_shrinks_the_field(trained, scene):
    c, report = prune(trained, 0.5, method="components")
    f = c.model.field
    assert f.config.density_components == report["density_components"] < \
        trained.field.config.density_components
    assert report["parameters_after"] < 0.6 * report["parameters_before"]
    assert f.basis.weight.shape[1] == f.app_grids.num_components
    tuned, _ = finetune(c, steps=100, batch_size=1024, scene=scene)
    assert psnr(tuned.model, scene) > psnr(trained, scene) - 3.0


def test_kmeans_recovers_separated_clusters():
    g = torch.Generator().manual_seed(0)
    centres = torch.randn(8, 4, generator=g) * 10
    x = centres.repeat(50, 1) + 0.01 * torch.randn(400, 4, generator=g)
    found, assign = kmeans(x, torch.ones(400), 8, iters=10, generator=g)
    assert torch.cdist(found, centres).min(dim=0).values.max() < 0.1
    assert len(set(assign.tolist())) == 8


def test_pipeline_text_and_yaml(tmp_path):
    steps = parse_pipeline("prune(0.6) finetune(1000) vq(4096) quant(8, per_channel=false)")
    assert [s.name for s in steps] == ["prune", "finetune", "vq", "quant"]
    assert steps[0].args == [0.6] and steps[3].kwargs == {"per_channel": False}
    yml = tmp_path / "p.yaml"
    yml.write_text("pipeline:\n  - prune: {remove: 0.6}\n  - 'quant(8)'\n")
    assert [str(s) for s in load_pipeline_yaml(yml)] == ["prune(remove=0.6)", "quant(8)"]


@pytest.mark.parametrize("spec, fragment", [
    ("quant(8) zip(3)", "step 2 (zip(3)): unknown pass 'zip'"),
    ("quant(bits=eight)", "bits must be an integer, got 'eight'"),
    ("quant(8, true, 0, x, minmax, 100, 2, 10, 0, 13)", "at most 9 positional"),
    ("prune(0.5, colour=red)", "unknown argument 'colour'"),
    ("quant(8", "cannot read"),
    ("quant(bits=8, 9)", "positional argument after a keyword"),
    ("", "empty"),
])
def test_bad_pipeline_specs(spec, fragment):
    with pytest.raises(NerfzipError, match=fragment.replace("(", r"\(").replace(")", r"\)")):
        parse_pipeline(spec)


def test_pipeline_runs_and_is_recorded(trained, scene, tmp_path):
    c = run_pipeline(trained, parse_pipeline("prune(0.3) quant(8) finetune(5, 256)"), scene)
    assert [h["step"] for h in c.history] == ["prune", "quant", "finetune"]
    nrz.save(c.model, tmp_path / "p.nrz", c.save_options())
    header = nrz.info(tmp_path / "p.nrz")["header"]
    assert [h["step"] for h in header["pipeline"]] == ["prune", "quant", "finetune"]
    assert "pipeline" not in trained.meta or trained.meta["pipeline"] == []


def test_cli_compress_rejects_a_bad_spec_in_one_line(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "nerfzip.cli.main", "compress", "nowhere",
                           "-o", str(tmp_path / "x.nrz"), "--pipeline", "quant(8) frobnicate"],
                          capture_output=True, text=True)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "frobnicate" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "x.nrz").exists()


def test_cli_compress_writes_a_file_with_its_pipeline(trained, tmp_path):
    from nerfzip.training.checkpoint import save_model

    save_model(trained, tmp_path / "run" / "model.safetensors")
    out = tmp_path / "c.nrz"
    proc = subprocess.run([sys.executable, "-m", "nerfzip.cli.main", "compress",
                           str(tmp_path / "run"), "-o", str(out), "--pipeline", "quant(6)",
                           "--data", "procedural", "--quiet"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    info = json.loads(subprocess.run([sys.executable, "-m", "nerfzip.cli.main", "info",
                                      str(out), "--json"], capture_output=True,
                                     text=True).stdout)
    assert info["header"]["pipeline"][0]["step"] == "quant"
    assert any("quant 6b" in r["codec"] for r in info["sections"])


def small_mlp():
    from nerfzip.fields.mlp_nerf import MLPNeRF, MLPNeRFConfig
    from nerfzip.rendering.model import RadianceModel, SceneSpace
    from nerfzip.rendering.renderer import RenderConfig

    cfg = MLPNeRFConfig(pos_freqs=4, dir_freqs=2, hidden=64, depth=4, skips=(2,), dir_hidden=32)
    aabb = torch.tensor([[-1.0, -1.0, -1.0], [1.0, 1.0, 1.0]])
    return RadianceModel(MLPNeRF(cfg, aabb, seed=3), RenderConfig(sampler="hierarchical"),
                         SceneSpace([1.0, 1.0, 1.0], 2.0, 6.0))


def mlp_outputs(model):
    g = torch.Generator().manual_seed(0)
    x, d = torch.rand(500, 3, generator=g) * 2 - 1, torch.randn(500, 3, generator=g)
    d = d / d.norm(dim=-1, keepdim=True)
    with torch.no_grad():
        return model.field(x, d)


def test_low_rank_at_full_energy_is_exact_and_round_trips(tmp_path):
    model = small_mlp()
    with torch.no_grad():  # make the trunk truly rank 8, so rank 8 loses nothing
        for layer in model.field.fine.layers[1:]:
            u, s, vh = torch.linalg.svd(layer.weight, full_matrices=False)
            layer.weight.copy_(u[:, :8] * s[:8] @ vh[:8])
    c, report = low_rank(model, energy=0.99999, include="fine.layers")
    assert {v["rank"] for v in report["layers"].values()} == {8}
    assert report["weights_after"] < 0.5 * report["weights_before"]
    (s0, c0), (s1, c1) = mlp_outputs(model), mlp_outputs(c.model)
    assert torch.allclose(s0, s1, atol=1e-4) and torch.allclose(c0, c1, atol=1e-5)
    nrz.save(c.model, tmp_path / "lr.nrz")
    back = nrz.load(tmp_path / "lr.nrz")
    assert back.field.low_rank == c.model.field.low_rank
    assert all(torch.equal(back.field.named_tensors()[k], v)
               for k, v in c.model.field.named_tensors().items())


def test_low_rank_budget_spends_the_weights_where_the_energy_is():
    from nerfzip.compression.passes.low_rank import budget_ranks

    gen = torch.Generator().manual_seed(0)
    exact = torch.randn(64, 2, generator=gen) @ torch.randn(2, 64, generator=gen)  # rank 2
    noise = torch.randn(64, 64, generator=gen)
    svals = [torch.linalg.svdvals(w) for w in (exact, noise)]
    # 9 singular values' worth of weights (128 each): the rank-2 layer needs only its 2, the
    # full-rank one takes every other
    ranks = budget_ranks(svals, [(64, 64), (64, 64)], budget=9 * 128 / (2 * 64 * 64))
    assert ranks == [2, 7]
    model = small_mlp()
    c, report = low_rank(model, include="fine.layers", budget=0.3)
    assert report["weights_after"] <= 0.3 * report["weights_before"]
    assert report["weights_after"] > 0.25 * report["weights_before"]
    assert c.history[-1]["args"]["budget"] == 0.3


def test_neuron_pruning_shrinks_every_trunk_layer(tmp_path):
    model = small_mlp()
    same, _ = prune(model, 0.0, method="neurons")
    for a, b in zip(mlp_outputs(model), mlp_outputs(same.model)):
        assert torch.equal(a, b)
    c, report = prune(model, 0.5, method="neurons")
    assert report["widths_after"] == [32, 32, 32, 32]
    assert report["parameters_after"] < 0.45 * report["parameters_before"]
    assert [layer.weight.shape[0] for layer in c.model.field.fine.layers] == [32] * 4
    nrz.save(c.model, tmp_path / "n.nrz")
    back = nrz.load(tmp_path / "n.nrz")
    for a, b in zip(mlp_outputs(c.model), mlp_outputs(back)):
        assert torch.equal(a, b)


def test_neuron_pruning_of_the_colour_branch_shrinks_feature_and_direction_layers(tmp_path):
    model = small_mlp()
    same, _ = prune(model, 0.0, method="neurons", colour_branch=True)
    for a, b in zip(mlp_outputs(model), mlp_outputs(same.model)):
        assert torch.equal(a, b)
    trunk_only, _ = prune(model, 0.5, method="neurons")
    c, report = prune(model, 0.5, method="neurons", colour_branch=True)
    assert report["colour_branch_before"] == [64, 32]
    assert report["colour_branch_after"] == [32, 16]
    for net in (c.model.field.fine, c.model.field.coarse):
        assert net.feature.weight.shape == (32, 32)
        assert net.dir_layer.weight.shape == (16, 32 + 3 * (2 * 2 + 1))
        assert net.rgb_head.weight.shape == (3, 16)
    assert report["parameters_after"] < trunk_only.model.field.num_parameters()
    # The density never reads the colour branch: cutting it leaves sigma as the trunk cut does.
    assert torch.equal(mlp_outputs(c.model)[0], mlp_outputs(trunk_only.model)[0])
    nrz.save(c.model, tmp_path / "b.nrz")
    back = nrz.load(tmp_path / "b.nrz")
    for a, b in zip(mlp_outputs(c.model), mlp_outputs(back)):
        assert torch.equal(a, b)
    assert c.history[-1]["args"]["colour_branch"] is True


def test_neuron_pruning_keeps_the_strong_neurons():
    from nerfzip.compression.fit.neurons import neuron_keep

    model = small_mlp()
    with torch.no_grad():  # silence half of layer 1's neurons: they must be the ones removed
        model.field.fine.layers[1].weight[1::2] = 0.0
    keep = neuron_keep(model.field.fine, 0.5)
    assert torch.equal(keep[1], torch.arange(0, 64, 2))


def test_colour_branch_pruning_keeps_the_channels_the_colour_reads():
    from nerfzip.compression.fit.neurons import branch_keep

    net = small_mlp().field.fine
    with torch.no_grad():  # the direction layer ignores the odd feature channels
        net.dir_layer.weight[:, 1:64:2] = 0.0
        net.rgb_head.weight[:, :16] = 0.0  # and the colour ignores the first 16 neurons
    keep_f, keep_d = branch_keep(net, 0.5)
    assert torch.equal(keep_f, torch.arange(0, 64, 2))
    assert torch.equal(keep_d, torch.arange(16, 32))


def test_neuron_pruning_with_reconstruction_beats_a_plain_cut(scene):
    from nerfzip.compression.fit.neurons import calibration_points

    model = small_mlp()
    x, d = calibration_points(model, scene)
    plain, _ = prune(model, 0.25, method="neurons")
    fitted, report = prune(model, 0.25, method="neurons", scene=scene)
    assert report["reconstructed"] and report["widths_after"] == [48, 48, 48, 48]

    def errors(m):
        with torch.no_grad():
            (s0, c0), (s1, c1) = model.field(x, d), m.field(x, d)
        return float((s1 - s0).abs().mean()), float((c1 - c0).abs().mean())

    (sp, cp), (sf, cf) = errors(plain.model), errors(fitted.model)
    assert sf < 0.5 * sp and cf < 0.5 * cp, (sp, cp, sf, cf)
    # The colour branch is refitted too: its colours beat the plain cut of it by as much.
    plain, _ = prune(model, 0.25, method="neurons", colour_branch=True)
    fitted, report = prune(model, 0.25, method="neurons", colour_branch=True, scene=scene)
    assert {"dir_layer", "rgb_head"} <= set(report["fine_fit_error"])
    (_, cp), (_, cf) = errors(plain.model), errors(fitted.model)
    assert cf < 0.5 * cp, (cp, cf)


def test_neuron_pruning_refit_trains_both_networks_of_a_hierarchical_model(scene):
    # The distilled-student case, with its quality bound, is in test_distill.py.
    model = small_mlp()
    fitted, _ = prune(model, 0.5, method="neurons", scene=scene)
    tuned, report = prune(model, 0.5, method="neurons", refit_steps=100, scene=scene)
    # A hierarchical model without a grid: the points come from a grid built from its
    # density. On this untrained network the gain is small (+0.9 dB when written).
    r = report["refit"]
    assert r["heldout_psnr_after"] > r["heldout_psnr_before"] + 0.5, r
    for net in ("fine", "coarse"):  # the coarse network learns from its own render
        before = getattr(fitted.model.field, net).layers[1].weight
        after = getattr(tuned.model.field, net).layers[1].weight
        assert (after - before).abs().max() > 1e-3, net
    assert tuned.history[-1]["args"]["refit_steps"] == 100
    # The rate reaches the distillation, which rejects a rate that cannot train.
    with pytest.raises(NerfzipError, match="lr"):
        prune(model, 0.5, method="neurons", refit_steps=5, refit_lr=0.0, scene=scene)
    with pytest.raises(NerfzipError, match="needs the scene"):
        prune(model, 0.5, method="neurons", refit_steps=10)
