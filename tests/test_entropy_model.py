"""The learned entropy model (``codec/entropy_model.py``), its codec (``learned``, id 10) and the
``entropy_model`` pass: the range-coded bytes are what the model estimates (within 2 %), decode
to exactly the latents, a damaged section is a one-line error, and fine-tuning for rate really
trades bytes for lambda."""

from __future__ import annotations

import math
import subprocess
import sys
from dataclasses import replace

import nrz_surgery as surgery
import numpy as np
import pytest
import torch
from fuzzing import mutate, refused_or_shaped
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import nerfzip
from nerfzip.codec import nrz
from nerfzip.codec.binary import FormatError
from nerfzip.codec.codecs.learned import LearnedSpec
from nerfzip.codec.codecs.learned import learned_node as learned_candidates
from nerfzip.codec.codecs.learned_context import context_nodes
from nerfzip.codec.entropy_model import PRECISION, FactorizedPrior, quantized_frequencies
from nerfzip.codec.tensors import Budget, TensorSpec, decode, encode_tensor, parse, serialize
from nerfzip.compression.constraints.learned_prior import LatentPrior
from nerfzip.compression.pipeline import parse_pipeline, run_pipeline
from nerfzip.data.procedural import load_procedural
from nerfzip.errors import NerfzipError
from nerfzip.training.config import defaults_for
from nerfzip.training.trainer import train


def laplacian_latents(channels: int = 6, n: int = 4096, seed: int = 0) -> torch.Tensor:
    """[C, n] integer-valued latents, each channel its own scale and centre."""
    gen = torch.Generator().manual_seed(seed)
    u = torch.rand(channels, n, generator=gen) - 0.5
    lap = -torch.sign(u) * torch.log1p(-2 * u.abs())  # Laplace(0, 1) by inversion
    scales = torch.linspace(0.7, 6.0, channels)[:, None]
    centres = torch.linspace(-2.0, 3.0, channels)[:, None]
    return torch.round(lap * scales + centres)


@pytest.fixture(scope="module")
def fitted():
    y = laplacian_latents()
    prior = FactorizedPrior(y.shape[0])
    prior.fit(y, steps=150, lr=2e-2)
    prior.update()
    return prior, y


def test_coded_size_is_within_two_percent_of_the_estimate_and_decodes_exactly(fitted):
    prior, y = fitted
    y = y.clone()
    y[2, :3] = torch.tensor([400.0, -900.0, 12345.0])  # far outside the support: escaped
    with torch.no_grad():
        estimate = float(prior.bits(y)) / 8
    stream, escapes = prior.compress(y)
    assert {-900, 400, 12345} <= set(escapes) and len(escapes) < 20
    coded = len(stream)
    assert abs(coded - estimate) <= 0.02 * estimate, (coded, estimate)
    # ... and the estimate is a real one: within 10 % of the latents' empirical entropy
    ent = sum(float(-(c * np.log2(c / c.sum())).sum()) for c in
              (np.unique(row.numpy(), return_counts=True)[1] for row in y)) / 8
    assert coded < 1.1 * ent
    assert torch.equal(prior.decompress(stream, escapes, y.shape[1]), y)


def test_training_mode_adds_noise_and_the_rate_is_differentiable(fitted):
    prior, y = fitted
    prior.train()
    y_hat, lik = prior(y[:, :64].clone())
    prior.eval()
    assert not torch.equal(y_hat, y[:, :64]) and (y_hat - y[:, :64]).abs().max() <= 0.5
    assert bool(((lik > 0) & (lik <= 1)).all())
    x = y[:, :64].clone().requires_grad_(True)
    prior.bits(x + 0.3).backward()
    assert torch.isfinite(x.grad).all() and float(x.grad.abs().sum()) > 0


def test_frozen_tables_are_integer_and_sum_to_the_precision(fitted):
    prior, _ = fitted
    t = prior.frozen
    starts = t.starts()
    assert np.all(np.add.reduceat(t.freqs, starts) == 1 << PRECISION)
    assert t.freqs.min() >= 1 and t.freqs.dtype == np.int64
    f = quantized_frequencies(np.array([0.0, 1e-12, 0.5, 0.5]))
    assert f.sum() == 1 << PRECISION and f.min() >= 1 and abs(f[2] - f[3]) <= 1


def learned_node(prior, y, step=0.25):
    x = y * step  # values on the grid: q * step
    steps = torch.full((y.shape[0],), step)
    spec = TensorSpec(mode="learned", prior=LearnedSpec(0, steps, prior.frozen))
    return x, encode_tensor(x, spec)


def test_learned_codec_round_trips_and_refuses_damaged_tables(fitted):
    prior, y = fitted
    x, node = learned_node(prior, y)
    assert node.codec == "learned" and node.params["coder"] == "range"
    assert node.params["precision"] in (16, 14, 12, 10)
    back = decode(parse(serialize(node), Budget(1 << 24)))
    assert torch.equal(back, x)
    few = x[:, :40].contiguous()  # 40 values a channel: the tables would cost more
    small = encode_tensor(few, TensorSpec(mode="learned", prior=LearnedSpec(
        0, torch.full((y.shape[0],), 0.25), prior.frozen)))
    assert small.params["coder"] == "symbols"
    assert torch.equal(decode(parse(serialize(small), Budget(1 << 24))), few)
    bad = parse(serialize(node), Budget(1 << 24))
    freqs = decode(bad.children[2]).clone()
    freqs[0] += 1  # no longer sums to 2^16
    bad.children[2] = encode_tensor(freqs)
    with pytest.raises(FormatError, match="sum to"):
        decode(bad)
    cut = parse(serialize(node), Budget(1 << 24))
    cut.blobs[0] = cut.blobs[0][:-8]
    with pytest.raises(FormatError, match="truncated"):
        decode(cut)


@pytest.fixture(scope="module")
def scene():
    return load_procedural()


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("run")


@pytest.fixture(scope="module")
def trained(scene, run_dir):
    cfg = replace(defaults_for("procedural", "tensorf-vm"), iters=200, batch_size=1024,
                  warmup_batch_size=256, n_voxels_final=32**3, checkpoint_every=10_000)
    return train(scene, cfg, run_dir, quiet=True)


def test_cli_compresses_with_the_pass_and_refuses_a_bad_lambda_in_one_line(trained, run_dir,
                                                                          tmp_path):
    cli = [sys.executable, "-m", "nerfzip.cli.main", "compress", str(run_dir), "-o"]
    ok = subprocess.run(cli + [str(tmp_path / "e.nrz"), "--pipeline",
                               "entropy_model(lambda=0.01, steps=0, prior_steps=20)"],
                        capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    header = nrz.info(tmp_path / "e.nrz")["header"]
    assert header["pipeline"][-1]["step"] == "entropy_model"
    bad = subprocess.run(cli + [str(tmp_path / "f.nrz"), "--pipeline",
                                "entropy_model(lambda=500)"], capture_output=True, text=True)
    assert bad.returncode == 2 and "entropy_model" in bad.stderr and "lmbda" in bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1 and not (tmp_path / "f.nrz").exists()


@pytest.fixture(scope="module")
def coded(trained, scene):
    """Two fine-tuned models, one weighing the rate 10^4 times more."""
    common = dict(steps=40, batch_size=512, prior_steps=60, scene=scene)
    return {lam: nerfzip.entropy_model(trained, lam, **common) for lam in (0.001, 10.0)}


def test_pass_file_decodes_to_the_field_and_holds_the_coded_bytes(trained, coded, tmp_path):
    c, report = coded[0.001]
    assert c.history[-1]["step"] == "entropy_model"
    assert abs(report["stream_bytes"] - report["estimate_bytes"]) <= 0.02 * report[
        "estimate_bytes"]
    saved = c.save(tmp_path / "e.nrz")
    rows = {r["name"]: r for r in nrz.info(tmp_path / "e.nrz")["sections"]}
    grids = [n for n in rows if "_grids." in n]
    assert len(grids) == 12 and all(rows[n]["codec"].startswith("learned") for n in grids)
    assert sum(rows[n]["bytes"] for n in grids) == report["grid_bytes"]
    # Each grid is stored as the smallest of its candidates (range-coded latents with the
    # prior's tables at 16 / 14 / 12 / 10 bits, the latents as plain symbols, and for planes
    # and lines the checkerboard context codings).
    for name in grids:
        (con,) = c.constraints[name[len("field."):]]
        x = c.model.field.named_tensors()[name[len("field."):]]
        prior = con.storage(TensorSpec()).prior
        assert prior.context is not None
        sizes = [n.nbytes() for n in learned_candidates(x, prior, TensorSpec().coders)
                 + context_nodes(x, prior, TensorSpec().coders)]
        assert rows[name]["bytes"] == min(sizes)
    back = nrz.load(tmp_path / "e.nrz").field.named_tensors()
    for name, x in c.model.field.named_tensors().items():
        assert torch.equal(back[name], x), name
    lossless = nrz.save(trained, tmp_path / "l.nrz").bytes
    assert saved.bytes < 0.5 * lossless


def test_a_higher_lambda_gives_fewer_bytes(coded):
    low, high = coded[0.001][1], coded[10.0][1]
    assert high["stream_bytes"] < 0.9 * low["stream_bytes"]
    assert high["penalty_last"] < high["penalty_first"]


def test_corrupted_entropy_model_section_is_one_line(coded, tmp_path):
    c, _ = coded[0.001]
    c.save(tmp_path / "e.nrz")
    data = (tmp_path / "e.nrz").read_bytes()
    name = "field.app_grids.planes.0"
    (con,) = c.constraints[name[len("field."):]]
    x = c.model.field.named_tensors()[name[len("field."):]]
    ranged = next(n for n in learned_candidates(x, con.storage(TensorSpec()).prior,
                                                TensorSpec().coders)
                  if n.params["coder"] == "range")
    parts = surgery.split(data)
    row = next(s for s in parts.sections if s[0] == name)
    row[1], row[2] = 10, serialize(ranged)  # the range-coded candidate, whatever was chosen
    (tmp_path / "ranged.nrz").write_bytes(surgery.join(parts))
    assert torch.equal(nrz.load(tmp_path / "ranged.nrz").field.named_tensors()[
        name[len("field."):]], x)
    ranged.blobs[0] = ranged.blobs[0][:-4]  # the range-coded stream loses a word
    row[2] = serialize(ranged)
    (tmp_path / "bad.nrz").write_bytes(surgery.join(parts))
    with pytest.raises(NerfzipError) as e:
        nrz.load(tmp_path / "bad.nrz")
    msg = str(e.value)
    assert name in msg and "\n" not in msg and "truncated" in msg
    (tmp_path / "cut.nrz").write_bytes(data[:len(data) // 2])
    with pytest.raises(NerfzipError) as e:
        nrz.load(tmp_path / "cut.nrz")
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("spec,fragment", [
    ("entropy_model(lambda=0)", "lmbda"),
    ("entropy_model(lambda=1000)", "lmbda"),
    ("entropy_model(0.01, steps=-1)", "steps"),
    ("entropy_model(lambda=0.01, bits=1)", "bits"),
    ("entropy_model(lambda=0.01, include=nothing)", "no feature grid"),
])
def test_bad_options_are_refused_before_training(trained, spec, fragment):
    with pytest.raises(NerfzipError, match=fragment) as e:
        run_pipeline(trained, parse_pipeline(spec), None)
    assert "\n" not in str(e.value)


def test_quant_after_the_pass_is_refused_on_its_latents(coded):
    c, _ = coded[0.001]
    with pytest.raises(NerfzipError, match="learned entropy model"):
        nerfzip.quantize(c, 8)
    q, _ = nerfzip.quantize(c, 8, include="decoder")
    assert any(isinstance(k, LatentPrior) for k in q.constraints["app_grids.planes.0"])


def test_lambda_is_spelled_lambda_in_pipelines():
    (step,) = parse_pipeline("entropy_model(lambda=0.05, steps=0)")
    info = nerfzip.compression.registry.get_pass("entropy_model", "test")
    cfg = info.make_config(step.args, step.kwargs, "test")
    assert math.isclose(cfg.lmbda, 0.05) and cfg.steps == 0


HOSTILE = [None, -1, 0, 1, 7, 8, 17, 1 << 40, 2.5, "range", "symbols", True, [0], {}]


@settings(max_examples=300, deadline=None, derandomize=True,
          suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_fuzz_damaged_learned_nodes_are_refused_in_one_line_or_decode_shaped(fitted, data):
    """Byte mutations and hostile parameters of both codings of codec 10: a one-line
    FormatError, or a float32 tensor of the declared shape."""
    prior, y = fitted
    x = y[:, :200].contiguous() * 0.5
    spec = TensorSpec(mode="learned", prior=LearnedSpec(0, torch.full((y.shape[0],), 0.5),
                                                        prior.frozen))
    nodes = learned_candidates(x, spec.prior, spec.coders)
    node = nodes[data.draw(st.integers(0, len(nodes) - 1))]
    if data.draw(st.booleans()):
        key = data.draw(st.sampled_from(["axis", "coder", "precision", "crc"]))
        node = replace(node, params={**node.params, key: data.draw(st.sampled_from(HOSTILE))})
    buf = mutate(data, bytearray(serialize(node)), data.draw(st.integers(0, 3)),
                 kinds=("flip", "truncate", "delete"))
    refused_or_shaped(bytes(buf), tuple(x.shape))


def test_hash_grid_tables_as_latents(tmp_path):
    """The hash grid's tables are latents too: fine-tuning reaches the steps and priors under
    the tables' parametrizations, and the file decodes to the fine-tuned field."""
    small = load_procedural(resolution=24, n_train=8, n_test=1)
    cfg = replace(defaults_for("procedural", "hash-grid"), iters=10, batch_size=128,
                  warmup_batch_size=128, checkpoint_every=10 ** 6,
                  field_options={"levels": 4, "log2_table_size": 10, "finest_resolution": 64})
    model = train(small, cfg, tmp_path / "run", quiet=True)
    c, report = nerfzip.entropy_model(model, 1.0, steps=6, batch_size=128, prior_steps=20,
                                      scene=small)
    assert report["grids"] == 4 and report["penalty_last"] > 0
    (con,) = c.constraints["encoding.tables.0"]
    assert con.context is None  # hashed tables have no spatial neighbours: factorized only
    (before,) = nerfzip.entropy_model(model, 1.0, steps=0, prior_steps=1)[0].constraints[
        "encoding.tables.0"]
    assert not torch.equal(con.step, before.step)  # the steps were trained
    c.save(tmp_path / "h.nrz")
    back = nrz.load(tmp_path / "h.nrz").field.named_tensors()
    for name, x in c.model.field.named_tensors().items():
        assert torch.equal(back[name], x), name
