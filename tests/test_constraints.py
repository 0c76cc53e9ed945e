"""Constraints own their behaviour: each projects idempotently, merges by its own rule (no
type ladder anywhere), is kept exactly through fine-tuning (trainable codebooks and factors),
and states its own storage; ``Compressed.save`` writes the field bit for bit as constrained,
and saving the bare model of a ``Compressed`` with constraints pending is refused."""

from __future__ import annotations

import pytest
import torch

import nerfzip
from nerfzip.codec import nrz
from nerfzip.codec.tensors import TensorSpec, quant_grid
from nerfzip.compression.compressed import Compressed
from nerfzip.compression.constraints import (
    Codebook,
    Factorized,
    Half,
    Mask,
    QuantGrid,
    constrained,
)
from nerfzip.data.procedural import load_procedural
from nerfzip.errors import NerfzipError
from nerfzip.fields.tensorf import TensoRF, TensoRFConfig
from nerfzip.rendering.model import RadianceModel, SceneSpace
from nerfzip.rendering.occupancy import OccupancyGrid
from nerfzip.rendering.renderer import RenderConfig


def tiny(aabb: torch.Tensor | None = None) -> RadianceModel:
    aabb = aabb if aabb is not None else torch.tensor([[-1.0] * 3, [1.0] * 3])
    cfg = TensoRFConfig(decomposition="vm", resolution=(16, 16, 16), density_components=4,
                        appearance_components=4, app_dim=4, decoder_hidden=8, init_scale=0.3)
    occ = OccupancyGrid(aabb, 8)
    occ.occupied.fill_(True)
    return RadianceModel(TensoRF(cfg, aabb, seed=0), RenderConfig(step_size=0.05),
                         SceneSpace([1.0, 1.0, 1.0], 2.0, 6.0, name="tiny"), occ)


def examples(x: torch.Tensor) -> list:
    """One constraint of each type for a [1, C, H, W] tensor ``x``."""
    lo, scale = quant_grid(x, 4, 1)
    rows = x.movedim(1, -1).reshape(-1, x.shape[1])
    indices = torch.arange(rows.shape[0]) % 3
    indices[:2] = -1  # two vectors kept exact
    return [Mask(x.abs() > 0.1), QuantGrid(4, 1, lo, scale), Half(),
            Codebook(1, indices, rows[:3].clone()), Factorized("tucker", (0, 0, 3, 3))]


def test_every_projection_is_idempotent_and_gives_a_gradient():
    x = torch.randn(1, 4, 10, 12, generator=torch.Generator().manual_seed(0))
    for c in examples(x):
        once = c.project(x)
        assert torch.equal(c.project(once), once), type(c).__name__
        y = x.clone().requires_grad_(True)
        c.project(y).sum().backward()
        assert y.grad is not None, type(c).__name__


def test_merge_rules_belong_to_the_constraints():
    x = torch.randn(1, 4, 10, 12)
    mask, grid, half, book, fact = examples(x)
    c = Compressed(tiny())
    c.add("t", mask)
    c.add("t", Mask(x.abs() > 0.2))
    c.add("t", grid)
    c.add("t", half)  # half replaces the grid: one rounding per tensor
    assert [type(k) for k in c.constraints["t"]] == [Mask, Mask, Half]
    c.add("t", book)
    c.add("t", grid)
    assert [type(k) for k in c.constraints["t"]] == [Mask, Mask, Codebook, QuantGrid]
    c.add("f", fact)
    c.add("f", grid)  # rounding a factorised tensor rounds its factors
    assert [(type(k), k.bits) for k in c.constraints["f"]] == [(Factorized, 4)]
    c.add("f", half)
    assert c.constraints["f"][0].bits == 16
    with pytest.raises(NerfzipError, match="factorised"):
        c.add("f", mask)
    # Order: factors, codebook, rounding, mask (a pruned entry is zero on any grid).
    y = constrained(x, [mask, grid, book])
    assert torch.equal(y, mask.project(grid.project(book.project(x))))


def test_each_constraint_states_its_storage():
    x = torch.randn(1, 4, 10, 12)
    mask, grid, half, book, fact = examples(x)
    base = TensorSpec()
    assert mask.storage(base) == base
    assert grid.storage(base).mode == "quant" and grid.storage(base).bits == 4
    assert half.storage(base).mode == "half"
    assert book.storage(grid.storage(base)).vector_axis == 1
    assert book.storage(grid.storage(base)).mode == "quant"
    fact.project(x)
    assert fact.storage(base).mode == "tucker" and len(fact.storage(base).parts) == 3


@pytest.fixture(scope="module")
def compressed():
    scene = load_procedural()
    c, _ = nerfzip.prune(tiny(scene.aabb), method="occupancy")
    c, _ = nerfzip.vector_quantize(c, 16, 0.05, n_rays=2048, iters=2, scene=scene)
    c, _ = nerfzip.quantize(c, 6, min_elements=64)
    c, _ = nerfzip.finetune(c, 3, 128, scene=scene)
    return c


def test_finetuning_keeps_every_constraint_exactly(compressed):
    tensors = compressed.model.field.named_tensors()
    kinds = {type(k) for cons in compressed.constraints.values() for k in cons}
    assert {Mask, Codebook, QuantGrid} <= kinds
    for name, cons in compressed.constraints.items():
        assert torch.equal(constrained(tensors[name], cons), tensors[name]), name


def test_compressed_save_round_trips_bit_for_bit(compressed, tmp_path):
    report = compressed.save(tmp_path / "c.nrz")
    back = nrz.load(report.path).field.named_tensors()
    for name, x in compressed.model.field.named_tensors().items():
        assert torch.equal(back[name], x), name
    again = nerfzip.save(compressed, tmp_path / "same.nrz")
    assert (tmp_path / "same.nrz").read_bytes() == (tmp_path / "c.nrz").read_bytes()
    assert again.bytes == report.bytes


def test_saving_the_bare_model_with_constraints_pending_is_refused(compressed, tmp_path):
    for save in (nerfzip.save, nrz.save):
        with pytest.raises(NerfzipError, match="save the Compressed") as err:
            save(compressed.model, tmp_path / "dense.nrz")
        assert "\n" not in str(err.value)
    assert not (tmp_path / "dense.nrz").exists()
    # A model taken out of a Compressed keeps its constraints when a pass picks it up.
    c = Compressed.of(compressed.model)
    assert c.constraints.keys() == compressed.constraints.keys()
    # A model no pass constrained saves as it is.
    nerfzip.save(tiny(), tmp_path / "plain.nrz")


def test_factorised_tensors_save_their_factors(tmp_path):
    model = tiny()
    c, _ = nerfzip.tensor_decompose(model, keep=0.4)
    c, _ = nerfzip.quantize(c, 8, min_elements=64)
    with pytest.raises(NerfzipError, match="save the Compressed"):
        nrz.save(c.model, tmp_path / "dense.nrz")
    c.save(tmp_path / "t.nrz")
    back = nrz.load(tmp_path / "t.nrz").field.named_tensors()
    for name, x in c.model.field.named_tensors().items():
        assert torch.equal(back[name], x), name
    assert any("tucker" in r["codec"] for r in nrz.info(tmp_path / "t.nrz")["sections"])


def test_save_mode_quant_is_the_quant_pass(tmp_path):
    """One quantizer: ``nerfzip.save(model, mode="quant")`` runs the ``quant`` pass."""
    model = tiny()
    a = nerfzip.save(model, tmp_path / "a.nrz", mode="quant", bits=6, min_lossy_elements=64)
    c, _ = nerfzip.quantize(model, 6, min_elements=64)
    b = c.save(tmp_path / "b.nrz")
    assert a.bytes == b.bytes
    da, db = (nrz.load(p).field.named_tensors() for p in (a.path, b.path))
    assert all(torch.equal(da[k], db[k]) for k in da)
