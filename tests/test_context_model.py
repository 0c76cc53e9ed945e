"""The checkerboard context model (``codec/context_model.py``) and its codec (``learned_context``,
id 11): the coded size is what the model estimates (within 2 %), decoding is exact, the tables
are a fixed function of their index (the same bits on any machine), spatially correlated latents
code smaller than under the factorized prior, and a damaged stream is a one-line error naming
the section."""

from __future__ import annotations

import math
import zlib
from dataclasses import replace
from functools import lru_cache

import nrz_surgery as surgery
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from fuzzing import mutate, refused_or_shaped
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import nerfzip
from nerfzip.codec import nrz
from nerfzip.codec.binary import FormatError
from nerfzip.codec.codecs.learned import LearnedSpec
from nerfzip.codec.codecs.learned import learned_node as learned_candidates
from nerfzip.codec.codecs.learned_context import context_nodes
from nerfzip.codec.context_model import (
    FRACTIONS,
    PRECISION,
    SCALES,
    CheckerboardContext,
    exp_neg,
    layout,
    spatial_shape,
    table,
)
from nerfzip.codec.entropy_model import FactorizedPrior
from nerfzip.codec.tensors import Budget, TensorSpec, decode, encode_tensor, parse, serialize
from nerfzip.data.procedural import load_procedural
from nerfzip.errors import NerfzipError
from nerfzip.training.config import defaults_for
from nerfzip.training.trainer import train


def smooth_latents(channels: int = 8, h: int = 64, w: int = 64, amp: float = 20.0,
                   noise: float = 1.0, seed: int = 0) -> torch.Tensor:
    """[C, h * w] integer latents: a Gaussian-blurred random field (std ``amp``) plus white
    noise (std ``noise``), rounded: spatially correlated, as trained feature planes are."""
    gen = torch.Generator().manual_seed(seed)
    z = torch.randn(channels, 1, h, w, generator=gen)
    k = torch.exp(-torch.arange(-6, 7.0) ** 2 / 8)
    k = k / k.sum()
    z = F.conv2d(z, k.view(1, 1, 1, -1), padding=(0, 6))
    z = F.conv2d(z, k.view(1, 1, -1, 1), padding=(6, 0)).reshape(channels, h * w)
    z = z / z.std(dim=1, keepdim=True) * amp
    return torch.round(z + noise * torch.randn(channels, h * w, generator=gen))


def fitted_models(q: torch.Tensor, spatial: tuple[int, ...], steps: int = 150):
    prior = FactorizedPrior(q.shape[0], init_scale=4 * q.std(dim=1))
    prior.fit(q, steps=2 * steps)
    prior.update()
    ctx = CheckerboardContext(q.shape[0], spatial)
    ctx.fit(q, steps=steps)
    ctx.update()
    return prior, ctx


@pytest.fixture(scope="module")
def plane():
    q = smooth_latents()
    prior, ctx = fitted_models(q, (64, 64))
    return q, prior, ctx


def spec_of(prior, ctx, channels: int, step: float = 0.25) -> TensorSpec:
    return TensorSpec(mode="learned", prior=LearnedSpec(1, torch.full((channels,), step),
                                                        prior.frozen, ctx.frozen))


def test_layout_is_a_checkerboard_whose_neighbours_are_anchors():
    for spatial in [(5, 7), (2, 2), (4, 3), (9,), (2,)]:
        lay = layout(spatial)
        n = math.prod(spatial)
        assert sorted(np.concatenate([lay.anchors, lay.others]).tolist()) == list(range(n))
        assert set(lay.neighbours.reshape(-1).tolist()) <= set(lay.anchors.tolist())
        assert lay.neighbours.shape == (2 * len(spatial), lay.others.size)
    assert spatial_shape((1, 16, 30, 20), 1) == (30, 20)
    assert spatial_shape((1, 16, 30, 1), 1) == (30,)
    assert spatial_shape((4096, 2), 1) == (4096,) and spatial_shape((3, 4, 5, 6), 0) is None


def test_tables_are_a_fixed_function_of_their_index():
    """The coder's tables: integer, summing to 2^16, every symbol codable, and the same bits
    as when this test was written (a CRC over all of them): they are computed with IEEE-754
    basic operations only, so any machine gets these bits."""
    x = np.linspace(0.0, 64.0, 1001)
    assert np.allclose(exp_neg(x), np.exp(-x), rtol=1e-9, atol=0)
    crc = 0
    for key in range(SCALES * FRACTIONS):
        radius, freq = table(key)
        assert freq.size == 2 * radius + 2 and freq.min() >= 1
        assert int(freq.sum()) == 1 << PRECISION
        crc = zlib.crc32(freq.astype("<i8").tobytes(), crc)
    assert crc == GOLDEN_TABLES_CRC


GOLDEN_TABLES_CRC = 2997014449


def test_coded_size_is_within_two_percent_of_the_estimate_and_decodes_exactly(plane):
    q, prior, ctx = plane
    with torch.no_grad():
        estimate = (float(prior.bits(q[:, ctx.anchors])) + float(ctx.bits(q, q))) / 8
    x = (q * 0.25).reshape(1, 8, 64, 64)
    (node,) = [n for n in context_nodes(x, spec_of(prior, ctx, 8).prior, TensorSpec().coders)
               if n.params.get("precision") == 16]
    coded = len(node.blobs[0]) + len(node.blobs[1])
    assert abs(coded - estimate) <= 0.02 * estimate, (coded, estimate)
    assert torch.equal(decode(parse(serialize(node), Budget(1 << 24))), x)


def test_module_life_cycle_forward_compress_decompress(plane):
    q, _, ctx = plane
    ctx.train()
    y = (q + 0.3).requires_grad_(True)
    y_hat, lik = ctx(y)
    ctx.eval()
    assert (y_hat - y).abs().max() <= 0.5 and bool(((lik > 0) & (lik <= 1)).all())
    (-torch.log2(lik).sum()).backward()
    assert torch.isfinite(y.grad).all() and float(y.grad.abs().sum()) > 0
    stream, escapes = ctx.compress(q)
    assert torch.equal(ctx.decompress(stream, escapes, q[:, ctx.anchors]), q)


def test_context_codes_correlated_latents_smaller_than_the_factorized_prior(plane):
    """Measured when written (8 x 64 x 64 latents): 19,033 bytes with the context model (its
    anchors as plain symbols: LZMA), 27,059 for all of them range-coded with the factorized
    prior (-30 %), 23,134 as plain symbols (LZMA, -18 %)."""
    q, prior, ctx = plane
    x = (q * 0.25).reshape(1, 8, 64, 64)
    spec = spec_of(prior, ctx, 8)
    node = encode_tensor(x, spec)
    assert node.codec == "learned_context"
    codec10 = learned_candidates(x, spec.prior, spec.coders)
    factorized = min(n.nbytes() for n in codec10 if n.params["coder"] == "range")
    assert node.nbytes() < 0.78 * factorized, (node.nbytes(), factorized)
    assert node.nbytes() < 0.9 * min(n.nbytes() for n in codec10)
    assert torch.equal(decode(parse(serialize(node), Budget(1 << 24))), x)


@pytest.mark.parametrize("shape", [(1, 3, 17, 9), (1, 3, 2, 2), (1, 3, 101, 1), (1, 3, 2, 1)])
def test_odd_and_tiny_grids_round_trip(shape):
    """Borders (reflected neighbours), odd sides, 1-D lines, escapes and a far-off channel."""
    spatial = spatial_shape(shape, 1)
    n = math.prod(spatial)
    gen = torch.Generator().manual_seed(1)
    q = torch.round(torch.cumsum(torch.randn(3, n, generator=gen) * 3, dim=1))
    prior, ctx = fitted_models(q, spatial, steps=20)
    q[1, -1] = 5000.0  # an escape for the context or the anchors, whichever it lands in
    q[2] += 1000.0  # a channel far from what the tables saw
    x = (q * 0.5).reshape(shape)
    spec = spec_of(prior, ctx, 3, 0.5)
    for node in context_nodes(x, spec.prior, spec.coders):
        assert torch.equal(decode(parse(serialize(node), Budget(1 << 24))), x)


def test_damaged_context_streams_are_refused_in_one_line(plane):
    q, prior, ctx = plane
    x = (q * 0.25).reshape(1, 8, 64, 64)
    nodes = context_nodes(x, spec_of(prior, ctx, 8).prior, TensorSpec().coders)
    plain = next(n for n in nodes if n.params["anchors"] == "symbols")
    ranged = next(n for n in nodes if n.params["anchors"] == "range")
    for node, blob, cut in [(ranged, 1, 8), (ranged, 1, 4), (ranged, 0, 4), (plain, 0, 4)]:
        bad = parse(serialize(node), Budget(1 << 24))
        bad.blobs[blob] = bad.blobs[blob][:-cut]
        with pytest.raises(FormatError) as e:
            decode(bad)
        assert "truncated" in str(e.value) and "\n" not in str(e.value)
    bad = parse(serialize(ranged), Budget(1 << 24))
    flipped = bytearray(bad.blobs[1])
    flipped[len(flipped) // 2] ^= 0x10
    bad.blobs[1] = bytes(flipped)
    with pytest.raises(FormatError, match="corrupted"):
        decode(bad)
    bad = parse(serialize(plain), Budget(1 << 24))
    params = decode(bad.children[2]).clone()
    params[0, 0] = 1 << 20  # alpha far out of range
    bad.children[2] = encode_tensor(params)
    with pytest.raises(FormatError, match="out of range"):
        decode(bad)
    bad = parse(serialize(plain), Budget(1 << 24))
    bad.params["anchors"] = "ans"
    with pytest.raises(FormatError, match="range or symbols"):
        decode(bad)


@pytest.fixture(scope="module")
def small_vm(tmp_path_factory):
    scene = load_procedural(resolution=24, n_train=8, n_test=1)
    cfg = replace(defaults_for("procedural", "tensorf-vm"), iters=30, batch_size=256,
                  warmup_batch_size=256, n_voxels_init=24**3, n_voxels_final=24**3,
                  checkpoint_every=10 ** 6)
    return train(scene, cfg, tmp_path_factory.mktemp("vm"), quiet=True), scene


def test_pass_codes_planes_with_context_and_the_file_names_a_damaged_section(small_vm,
                                                                           tmp_path):
    model, scene = small_vm
    c, report = nerfzip.entropy_model(model, 0.01, steps=4, batch_size=128, prior_steps=60,
                                      scene=scene, train_context=True)  # its rate trained
    assert report["penalty_last"] > 0
    assert abs(report["stream_bytes"] - report["estimate_bytes"]) <= 0.02 * report[
        "estimate_bytes"]
    name = "field.app_grids.planes.0"
    (con,) = c.constraints[name[len("field."):]]
    assert con.context is not None and con.context.spatial == spatial_shape(
        tuple(c.model.field.named_tensors()[name[len("field."):]].shape), 1)
    c.save(tmp_path / "e.nrz")
    back = nrz.load(tmp_path / "e.nrz").field.named_tensors()
    for key, x in c.model.field.named_tensors().items():
        assert torch.equal(back[key], x), key
    # Force the context coding into the section (whatever the writer chose), then damage it.
    x = c.model.field.named_tensors()[name[len("field."):]]
    node = context_nodes(x, con.storage(TensorSpec()).prior, TensorSpec().coders)[-1]
    parts = surgery.split((tmp_path / "e.nrz").read_bytes())
    row = next(s for s in parts.sections if s[0] == name)
    row[1], row[2] = 11, serialize(node)
    (tmp_path / "ctx.nrz").write_bytes(surgery.join(parts))
    assert torch.equal(nrz.load(tmp_path / "ctx.nrz").field.named_tensors()[
        name[len("field."):]], x)
    node.blobs[1] = node.blobs[1][:-4]
    row[2] = serialize(node)
    (tmp_path / "bad.nrz").write_bytes(surgery.join(parts))
    with pytest.raises(NerfzipError) as e:
        nrz.load(tmp_path / "bad.nrz")
    msg = str(e.value)
    assert name in msg and "\n" not in msg and "truncated" in msg
    off, _ = nerfzip.entropy_model(model, 0.01, steps=0, prior_steps=20, context=False)
    assert all(k.context is None for ks in off.constraints.values() for k in ks)


@lru_cache(maxsize=1)
def fuzz_models_cached():
    gen = torch.Generator().manual_seed(2)
    q = torch.round(torch.cumsum(torch.randn(2, 96, generator=gen) * 2, dim=1))
    return fitted_models(q, (12, 8), steps=5)


def fuzz_models(q):
    return fuzz_models_cached()


HOSTILE = [None, -1, 0, 1, 3, 16, 1 << 40, 2.5, "range", "symbols", True, [0], {}]


@settings(max_examples=200, deadline=None, derandomize=True,
          suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_fuzz_damaged_context_nodes_are_refused_in_one_line_or_decode_shaped(data):
    """Byte mutations and hostile parameters of both anchor codings of codec 11: a one-line
    FormatError, or a float32 tensor of the declared shape."""
    gen = torch.Generator().manual_seed(2)
    q = torch.round(torch.cumsum(torch.randn(2, 96, generator=gen) * 2, dim=1))
    prior, ctx = fuzz_models(q)
    x = (q * 0.5).reshape(1, 2, 12, 8)
    nodes = context_nodes(x, spec_of(prior, ctx, 2, 0.5).prior, TensorSpec().coders)
    node = nodes[data.draw(st.integers(0, len(nodes) - 1))]
    if data.draw(st.booleans()):
        key = data.draw(st.sampled_from(["axis", "anchors", "precision", "crc"]))
        node = replace(node, params={**node.params, key: data.draw(st.sampled_from(HOSTILE))})
    buf = mutate(data, bytearray(serialize(node)), data.draw(st.integers(0, 3)),
                 kinds=("flip", "truncate", "delete"))
    refused_or_shaped(bytes(buf), tuple(x.shape))


def test_context_is_a_pipeline_option_on_by_default():
    from nerfzip.compression.pipeline import parse_pipeline
    from nerfzip.compression.registry import get_pass

    info = get_pass("entropy_model", "test")
    for text, want in [("entropy_model(lambda=0.05)", True),
                       ("entropy_model(lambda=0.05, context=false)", False)]:
        (step,) = parse_pipeline(text)
        assert info.make_config(step.args, step.kwargs, "test").context is want
