"""Progressive files layered by precision (``progressive(order=precision)``,
``codec/ladder.py``): each layer of a ladder leaves at most half its step of error, all of them
give the grid values; the whole file renders like the single-rate file, each prefix renders
and quality grows with the layers; layer-by-layer decoding equals a fresh decode; misplaced
passes and malformed refinement sections are one-line errors."""

from __future__ import annotations

import nrz_surgery as surgery  # tests/ helper (on the path under pytest)
import pytest
import torch

from nerfzip.cli.main import main
from nerfzip.codec import nrz
from nerfzip.codec.ladder import fold, ladder_layers, split_name
from nerfzip.codec.progressive import ProgressiveReader, load_prefix
from nerfzip.codec.tensors import TensorSpec, decode, dequantize, encode_tensor, quant_grid
from nerfzip.codec.tensors import quantize as symbols
from nerfzip.compression.pipeline import parse_pipeline, run_pipeline
from nerfzip.errors import NerfzipError
from nerfzip.evaluation.evaluate import evaluate

VIEWS = 3
PIPELINE = "quant(8) progressive(order=precision, layers=3, base=0.1)"


@pytest.fixture(scope="module")
def files(trained_vm, tmp_path_factory):
    """The trained VM model as ``quant(8)`` (single rate) and layered by precision."""
    out = tmp_path_factory.mktemp("ladder")
    run_pipeline(trained_vm, parse_pipeline("quant(8)"), None).save(out / "single.nrz")
    layered = run_pipeline(trained_vm, parse_pipeline(PIPELINE), None)
    layered.save(out / "layered.nrz")
    return out / "single.nrz", out / "layered.nrz", layered.history[-1]["report"]


def psnr(model, scene) -> float:
    return evaluate(model, scene, "test", limit=VIEWS, quiet=True)["mean"]["psnr"]


def test_each_layer_halves_its_step_and_all_of_them_give_the_grid():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(1, 4, 20, 30, generator=gen) * torch.tensor([1.0, 0.1, 3.0, 0.5]).view(
        1, 4, 1, 1)
    x[0, :, :5] = 0.0  # pruned entries
    lo, scale = quant_grid(x, 8, 1)
    want = dequantize(symbols(x, 8, 1, lo, scale), 1, lo, scale)
    steps = (torch.tensor([7, 3, 12, 1]), torch.tensor([3, 2, 4, 1]), torch.ones(4, dtype=int))
    layers = ladder_layers(x, TensorSpec(mode="quant", bits=8, axis=1, grid=(lo, scale),
                                         ladder=steps))
    total = torch.zeros_like(x)
    for (value, spec), w in zip(layers, steps):
        back = decode(encode_tensor(value, spec))
        assert torch.equal(back, value)  # each layer is an ordinary quant node
        total = total + back
        bound = (w.float() * scale / 2).view(1, 4, 1, 1) * (1 + 1e-5)
        assert bool(((total - want).abs() <= bound).all())
    assert float((total - want).abs().max()) <= 1e-6 * float(want.abs().max())
    assert bool((total[0, :, :5] == 0).all())  # zero in every layer


def test_fold_adds_refinements_in_order_and_refuses_orphans():
    a, r = torch.ones(3), torch.full((3,), 0.25)
    assert torch.equal(fold({"field.x": a, "field.x~1": r, "field.x~2": r}, "f")["field.x"],
                       a + r + r)
    assert split_name("field.x~12", "f") == ("field.x", 12)
    with pytest.raises(NerfzipError, match="refines 'field.y', which does not come before"):
        fold({"field.x": a, "field.y~1": r}, "f.nrz")
    with pytest.raises(NerfzipError, match="is float32 \\[2\\]"):
        fold({"field.x": a, "field.x~1": torch.ones(2)}, "f.nrz")
    for bad in ("field.x~0", "field.x~01", "field.x~64", "field.x~a", "~1"):
        with pytest.raises(NerfzipError, match="TENSOR~K"):
            split_name(bad, "f.nrz")


def test_the_whole_file_is_the_single_rate_file_and_prefixes_improve(files, procedural_scene):
    single, layered, report = files
    got = nrz.load(layered).field.named_tensors()
    want = nrz.load(single).field.named_tensors()
    for k, v in want.items():
        assert float((got[k] - v).abs().max()) <= 1e-6 * max(1.0, float(v.abs().max())), k
    assert layered.stat().st_size <= 1.15 * single.stat().st_size
    rows = nrz.info(layered)["layers"]
    assert [r["layer"] for r in rows] == [0, 1, 2]
    # The allocator held the base's grid sections to the budget (10 % of their full bytes).
    assert report["base_bytes"] <= report["base_budget_bytes"] == int(
        0.1 * report["full_precision_bytes"])
    values = [psnr(load_prefix(layered, layers=k)[0], procedural_scene) for k in (1, 2, 3)]
    full = psnr(nrz.load(single), procedural_scene)
    # Measured: 23.0, 23.8, 23.8 dB (single rate 23.8): the base is coarser, and close.
    assert full - 3.0 < values[0] < values[2] - 0.2, (values, full)
    assert values[0] < values[1] and abs(values[1] - values[2]) < 0.05, values
    assert abs(values[2] - full) < 1e-3, (values, full)


def test_layer_by_layer_decoding_equals_a_fresh_decode(files):
    data = files[1].read_bytes()
    reader = ProgressiveReader("stream")
    done = []
    for i in range(0, len(data), 6007):
        for layer in reader.feed(data[i:i + 6007]):
            fresh = load_prefix(files[1], layers=layer.layer + 1)[0].field.named_tensors()
            got = reader.model.field.named_tensors()
            assert all(torch.equal(got[k], fresh[k]) for k in fresh)
            done.append(layer.layer)
    reader.close()
    assert done == [0, 1, 2]
    whole = nrz.load(files[1]).field.named_tensors()
    assert all(torch.equal(v, whole[k]) for k, v in reader.model.field.named_tensors().items())


def test_misplaced_passes_are_refused(trained_vm):
    with pytest.raises(NerfzipError, match="no quantized feature grid; put quant"):
        run_pipeline(trained_vm, parse_pipeline("progressive(order=precision)"), None)
    with pytest.raises(NerfzipError, match="must be the last pass that constrains"):
        run_pipeline(trained_vm, parse_pipeline(f"{PIPELINE} quant(4)"), None)
    with pytest.raises(NerfzipError, match="Codebook constraint"):
        run_pipeline(trained_vm, parse_pipeline(
            "vq(64) quant(8) progressive(order=precision)"), None)
    with pytest.raises(NerfzipError, match="below the coarsest base"):
        run_pipeline(trained_vm, parse_pipeline(
            "quant(8) progressive(order=precision, base=0.0001)"), None)


def test_a_refinement_without_its_tensor_is_one_line(files, tmp_path, capsys):
    data = bytearray(files[1].read_bytes())
    name = next(s["name"] for s in nrz.info(files[1])["sections"] if s["name"].endswith("~1"))
    start = data.index(name.encode())
    data[start:start + len(name)] = name.replace("planes", "planez").encode()
    bad = tmp_path / "bad.nrz"
    bad.write_bytes(surgery.rechecksum(data))
    assert main(["info", str(bad)]) in (0, 2)
    capsys.readouterr()
    assert main(["eval", str(bad), "--out", str(tmp_path / "e")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert "which does not come before it" in err


def test_a_large_level_is_split_over_layers_by_tensor(trained_vm, files, tmp_path):
    """``split``: a refinement level is spread over several layers of at most that many
    values (a tensor larger alone in its own), each a prefix that decodes; the whole file
    holds the same tensors as the file with one layer per level."""
    c = run_pipeline(trained_vm, parse_pipeline(
        "quant(8) progressive(order=precision, layers=2, base=0.1, split=300000)"), None)
    c.save(tmp_path / "split.nrz")
    rows = nrz.info(tmp_path / "split.nrz")
    sizes = {s["name"]: s["shape"] for s in rows["sections"]}
    counts = rows["header"]["progressive"]["layers"]
    assert len(counts) > 2 == c.history[-1]["report"]["layers"]
    names = [s["name"] for s in rows["sections"]]
    start = counts[0]
    for n in counts[1:]:
        layer = names[start:start + n]
        start += n
        assert all("~1" in name for name in layer)
        values = [torch.Size(sizes[name]).numel() for name in layer]
        assert sum(values) <= 300000 or len(layer) == 1, (layer, values)
    unsplit = run_pipeline(trained_vm, parse_pipeline(
        "quant(8) progressive(order=precision, layers=2, base=0.1, split=0)"), None)
    unsplit.save(tmp_path / "one.nrz")
    assert len(nrz.info(tmp_path / "one.nrz")["layers"]) == 2
    a = nrz.load(tmp_path / "split.nrz").field.named_tensors()
    b = nrz.load(tmp_path / "one.nrz").field.named_tensors()
    assert all(torch.equal(a[k], b[k]) for k in b)
    for k in range(1, len(counts) + 1):
        load_prefix(tmp_path / "split.nrz", layers=k)  # every layer boundary decodes
