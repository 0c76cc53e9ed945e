"""The .nrz codec: exact round trips, lossy codecs reproducing exactly their quantized values,
entropy coding near the entropy, golden files, and hostile files rejected with one-line errors.

``python tests/test_codec.py`` rewrites the golden files (only after an intended format change,
with a version bump in docs/format.md).
"""

from __future__ import annotations

import struct
import subprocess
import sys
import zlib
from dataclasses import replace
from pathlib import Path

import nrz_surgery as surgery  # tests/ helper (on the path under pytest)
import numpy as np
import pytest
import torch
from fuzzing import mutate
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors.torch import load_file, save_file

from nerfzip.codec import nrz
from nerfzip.codec import symbols as sym
from nerfzip.codec.binary import FormatError
from nerfzip.codec.tensors import (
    DTYPE_IDS,
    Budget,
    TensorSpec,
    decode,
    encode_tensor,
    fake_quantize,
    parse,
    quant_grid,
    serialize,
)
from nerfzip.errors import NerfzipError
from nerfzip.fields.mlp_nerf import MLPNeRF, MLPNeRFConfig
from nerfzip.fields.tensorf import TensoRF, TensoRFConfig
from nerfzip.rendering.model import RadianceModel, SceneSpace
from nerfzip.rendering.occupancy import OccupancyGrid
from nerfzip.rendering.renderer import RenderConfig
from nerfzip.training.checkpoint import save_model

LOSSLESS = TensorSpec()
GOLDEN = Path(__file__).parent / "golden"
AABB = torch.tensor([[-1.0, -1.0, -1.0], [1.0, 1.0, 1.0]])


# --- models ---
def tiny_tensorf(seed: int = 0, decomposition: str = "vm") -> RadianceModel:
    cfg = TensoRFConfig(decomposition=decomposition, resolution=(12, 14, 16), density_components=2,
                        appearance_components=3, app_dim=4, decoder_hidden=8)
    field = TensoRF(cfg, AABB, seed=seed)
    occ = OccupancyGrid(AABB, 8)
    ar = torch.arange(8)
    occ.occupied.copy_((ar[:, None, None] + ar[None, :, None] + ar[None, None, :]) % 3 == 0)
    return RadianceModel(field, RenderConfig(step_size=0.05), SceneSpace([1.0, 1.0, 1.0], 2.0,
                                                                          6.0, name="tiny"),
                         occ)


def tiny_mlp() -> RadianceModel:
    cfg = MLPNeRFConfig(pos_freqs=2, dir_freqs=1, hidden=16, depth=3, skips=(2,), dir_hidden=8)
    return RadianceModel(MLPNeRF(cfg, AABB), RenderConfig(sampler="hierarchical", n_coarse=8,
                                                          n_fine=8),
                         SceneSpace([0.0, 0.0, 0.0], 2.0, 6.0))


def structured(model: RadianceModel) -> RadianceModel:
    """Give some tensors the structure compression passes leave: exact zeros, few values."""
    f = model.field
    with torch.no_grad():
        w = f.decoder.layers[0].weight
        w[w.abs() < 0.1] = 0.0
        plane = f.app_grids.planes[2]
        plane.copy_(torch.round(plane * 20) / 20)
    return model


GOLDEN_OPTIONS = nrz.SaveOptions(
    mode="lossless", coders=("pack", "ans"),
    specs={"density_grids.planes.0": TensorSpec(mode="quant", bits=4, axis=1,
                                                coders=("pack", "ans")),
           "app_grids.planes.1": TensorSpec(mode="half", coders=("pack", "ans"))})


def expected_decoded(name: str, x: torch.Tensor) -> torch.Tensor:
    spec = GOLDEN_OPTIONS.specs.get(name)
    if spec is None:
        return x
    if spec.mode == "half":
        return x.half().float()
    return fake_quantize(x, spec.bits, spec.axis)


def rays(n: int = 64, seed: int = 0):
    from nerfzip.data.cameras import RayBundle

    g = torch.Generator().manual_seed(seed)
    o = torch.randn(n, 3, generator=g) * 0.2 + torch.tensor([0.0, 0.0, 4.0])
    d = torch.nn.functional.normalize(-o + 0.3 * torch.randn(n, 3, generator=g), dim=-1)
    return RayBundle(o, d, d, torch.full((n,), 2.0), torch.full((n,), 6.0))


# --- symbols ---
@pytest.mark.parametrize("coder", sym.CODERS)
@pytest.mark.parametrize("kind", ["gauss8", "const", "signed", "sparse", "wide", "empty"])
def test_symbol_coders_round_trip(coder, kind):
    rng = np.random.default_rng(1)
    x = {"gauss8": np.clip(np.round(rng.normal(100, 12, 5000)), 0, 255),
         "const": np.full(300, 7), "signed": rng.integers(-5, 6, 999),
         "sparse": (rng.random(4000) < 0.03), "wide": rng.integers(0, 1 << 20, 77),
         "empty": np.zeros(0)}[kind].astype(np.int64)
    params, blobs = sym.encode_symbols(x, (coder,))
    y = sym.decode_symbols(params, [memoryview(b) for b in blobs], x.size)
    assert y.dtype == np.int64 and np.array_equal(x, y)


def test_ans_is_within_two_percent_of_the_entropy():
    rng = np.random.default_rng(0)
    x = np.clip(np.round(rng.laplace(128, 6, 200_000)), 0, 255).astype(np.int64)
    params, blobs = sym.encode_symbols(x, ("ans",))
    assert params["coder"] == "ans"
    entropy = sym.empirical_entropy_bits(x)
    assert 8 * len(blobs[1]) <= 1.02 * entropy
    assert 8 * sum(map(len, blobs)) <= 1.02 * entropy  # model table included


def test_encoder_keeps_the_smallest_coder():
    x = np.repeat(np.arange(50), 400)  # long runs: zstd beats any memoryless model
    best, blobs = sym.encode_symbols(x)
    sizes = {c: sum(map(len, sym.encode_symbols(x, (c,))[1])) for c in sym.CODERS}
    assert sum(map(len, blobs)) == min(sizes.values())
    assert best["coder"] in ("zstd", "lzma")


# --- tensor codecs ---
def roundtrip(x: torch.Tensor, spec: TensorSpec = LOSSLESS) -> tuple[torch.Tensor, object]:
    node = encode_tensor(x, spec)
    back = decode(parse(serialize(node), Budget(1 << 30)))
    return back, node


def test_lossless_float_is_bit_exact():
    x = torch.randn(3, 50, 41, generator=torch.Generator().manual_seed(0))
    x[0, 0, 0] = float("inf")
    x[0, 0, 1] = -0.0
    back, _ = roundtrip(x)
    assert torch.equal(back.view(torch.int32), x.view(torch.int32))


def test_lossless_finds_sparsity_and_palettes():
    g = torch.Generator().manual_seed(0)
    sparse = torch.randn(200, 100, generator=g) * (torch.rand(200, 100, generator=g) < 0.1)
    back, node = roundtrip(sparse)
    assert torch.equal(back, sparse) and node.codec == "sparse"
    assert node.nbytes() < 0.25 * sparse.numel() * 4
    palette = torch.randint(0, 16, (5000,), generator=g).float() * 0.37
    back, node = roundtrip(palette)
    assert torch.equal(back, palette) and node.codec == "vq"
    assert node.nbytes() < palette.numel() * 4 / 6  # ~4-bit indices instead of 32-bit floats


def test_exact_codebook_of_feature_vectors():
    g = torch.Generator().manual_seed(0)
    book = torch.randn(32, 12, generator=g)
    idx = torch.randint(0, 32, (4000,), generator=g)
    grid = book[idx].T.reshape(1, 12, 40, 100).contiguous()  # features along axis 1
    back, node = roundtrip(grid, TensorSpec(vector_axis=1))
    assert torch.equal(back, grid) and node.codec == "vq" and node.params["axis"] == 1
    assert node.nbytes() < grid.numel() * 4 / 40


def test_mostly_zero_feature_vectors_round_trip_exactly():
    # Occupancy pruning then vq: a sparse grid whose live rows come from a codebook. The sparse
    # candidate codes a flat list of values, where feature vectors no longer exist.
    g = torch.Generator().manual_seed(0)
    book = torch.randn(16, 12, generator=g)
    rows = book[torch.randint(0, 16, (4000,), generator=g)]
    rows[torch.rand(4000, generator=g) < 0.8] = 0.0
    grid = rows.T.reshape(1, 12, 40, 100).contiguous()
    back, _ = roundtrip(grid, TensorSpec(vector_axis=1))
    assert torch.equal(back, grid)


@pytest.mark.parametrize("bits", [1, 3, 8, 12])
@pytest.mark.parametrize("axis", [None, 1])
def test_quant_decodes_to_exactly_the_quantized_values(bits, axis):
    x = torch.randn(4, 6, 300, generator=torch.Generator().manual_seed(bits))
    back, node = roundtrip(x, TensorSpec(mode="quant", bits=bits, axis=axis, sparse=False))
    # The grid values computed apart from the codec (numpy), not by its own dequantize.
    assert torch.equal(back, on_grid(x, TensorSpec(mode="quant", bits=bits, axis=axis)))
    lo, hi = x.min(), x.max()
    assert float((back - x).abs().max()) <= float(hi - lo) / ((1 << bits) - 1) / 2 + 1e-6
    assert node.nbytes() <= x.numel() * bits / 8 + 400  # never worse than plain packing


def test_half_and_lowrank():
    x = torch.randn(64, 48, generator=torch.Generator().manual_seed(0))
    back, _ = roundtrip(x, TensorSpec(mode="half"))
    assert torch.equal(back, x.half().float())
    low = x[:, :5] @ torch.randn(5, 48, generator=torch.Generator().manual_seed(1))
    back, node = roundtrip(low, TensorSpec(mode="lowrank", rank=5))
    assert node.codec == "lowrank" and torch.allclose(back, low, atol=1e-4)
    assert node.nbytes() < low.numel() * 4 / 4


def test_quantized_zeros_stay_exact():
    g = torch.Generator().manual_seed(3)
    x = torch.randn(100, 100, generator=g) * (torch.rand(100, 100, generator=g) < 0.3) + 0.7
    x[x == 0.7] = 0.0  # 70 % exact zeros in a tensor whose values are mostly far from zero
    for axis in (None, 0):
        back, node = roundtrip(x, TensorSpec(mode="quant", bits=4, axis=axis))
        assert bool((back[x == 0] == 0).all())
        assert torch.equal(back, on_grid(x, TensorSpec(mode="quant", bits=4, axis=axis)))
    # Given a per-tensor grid (what the quant pass records), the sparse form may be chosen
    # and decodes to the same grid values.
    from nerfzip.codec.tensors import quant_grid

    grid = quant_grid(x, 8, None)
    back, node = roundtrip(x, TensorSpec(mode="quant", bits=8, grid=grid))
    assert torch.equal(back, on_grid(x, TensorSpec(mode="quant", bits=8, grid=grid)))


# --- whole files ---
@pytest.mark.parametrize("make", [tiny_tensorf, lambda: tiny_tensorf(1, "cp"), tiny_mlp])
def test_lossless_file_renders_identically(tmp_path, make):
    model = make()
    nrz.save(model, tmp_path / "m.nrz")
    back = nrz.load(tmp_path / "m.nrz")
    a, b = model.field.named_tensors(), back.field.named_tensors()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    if model.occupancy is not None:
        assert torch.equal(back.occupancy.occupied, model.occupancy.occupied)
    r = rays()
    assert torch.equal(model.render_rays(r), back.render_rays(r))
    assert back.meta["decode"]["file_bytes"] == (tmp_path / "m.nrz").stat().st_size


def test_quantized_file_renders_like_the_quantized_field(tmp_path):
    model = tiny_tensorf()
    options = nrz.SaveOptions(mode="quant", bits=6, min_lossy_elements=64)
    nrz.save(model, tmp_path / "q.nrz", options)
    back = nrz.load(tmp_path / "q.nrz")
    expected = tiny_tensorf()
    with torch.no_grad():
        for name, x in expected.field.named_tensors().items():
            spec = options.spec_for(name, x)
            if spec.mode == "quant":
                dict(expected.field.named_parameters())[name].copy_(
                    fake_quantize(x, spec.bits, spec.axis))
    r = rays()
    assert torch.equal(expected.render_rays(r), back.render_rays(r))


def test_lossless_file_is_no_larger_than_safetensors(tmp_path):
    model = tiny_tensorf()
    save_model(model, tmp_path / "model.safetensors")
    report = nrz.save(model, tmp_path / "m.nrz")
    assert report.bytes <= (tmp_path / "model.safetensors").stat().st_size


def test_pipeline_and_scene_space_are_recorded(tmp_path):
    model = tiny_tensorf()
    model.meta["pipeline"] = [{"step": "quant", "args": {"bits": 8}}]
    nrz.save(model, tmp_path / "m.nrz")
    info = nrz.info(tmp_path / "m.nrz")
    assert info["header"]["pipeline"] == model.meta["pipeline"]
    assert info["header"]["space"]["name"] == "tiny"
    assert sum(r["bytes"] for r in info["sections"]) < info["bytes"]
    assert {r["name"] for r in info["sections"]} >= {"occupancy.occupied",
                                                     "field.decoder.layers.0.weight"}
    assert nrz.load(tmp_path / "m.nrz").meta["pipeline"] == model.meta["pipeline"]


# --- golden files ---
def golden_model() -> RadianceModel:
    model = structured(tiny_tensorf())
    model.field.load_tensors(load_file(GOLDEN / "tiny_vm_input.safetensors"))
    return model


def write_golden() -> None:
    GOLDEN.mkdir(exist_ok=True)
    model = structured(tiny_tensorf())
    save_file({k: v.contiguous() for k, v in model.field.named_tensors().items()},
              GOLDEN / "tiny_vm_input.safetensors")
    # The 1.0 file is history: nerfzip no longer writes 1.x, so it is never rewritten.
    nrz.save(golden_model(), GOLDEN / "tiny_vm_2.0.nrz", GOLDEN_OPTIONS)


@pytest.mark.parametrize("golden", ["tiny_vm_1.0.nrz", "tiny_vm_2.0.nrz"])
def test_golden_file_decodes_to_the_expected_values(golden):
    back = nrz.load(GOLDEN / golden)
    inputs = load_file(GOLDEN / "tiny_vm_input.safetensors")
    got = back.field.named_tensors()
    for name, x in inputs.items():
        assert torch.equal(got[name], expected_decoded(name, x)), name
    assert nrz.info(GOLDEN / golden)["version"] == golden[len("tiny_vm_"):-len(".nrz")]
    codecs = {r["name"]: r["codec"] for r in nrz.info(GOLDEN / golden)["sections"]}
    assert codecs["field.density_grids.planes.0"].startswith("quant 4b")
    assert codecs["field.decoder.layers.0.weight"].startswith("sparse")
    assert codecs["field.app_grids.planes.2"].startswith("codebook")


def test_encoder_still_writes_the_golden_bytes(tmp_path, monkeypatch):
    import nerfzip

    monkeypatch.setattr(nerfzip, "__version__", "0.1.0")
    nrz.save(golden_model(), tmp_path / "g.nrz", GOLDEN_OPTIONS)
    assert (tmp_path / "g.nrz").read_bytes() == (GOLDEN / "tiny_vm_2.0.nrz").read_bytes()


def test_golden_1_0_file_renders_like_the_2_0_file():
    r = rays()
    old, new = nrz.load(GOLDEN / "tiny_vm_1.0.nrz"), nrz.load(GOLDEN / "tiny_vm_2.0.nrz")
    assert torch.equal(old.render_rays(r), new.render_rays(r))
    assert old.occupancy is not None and torch.equal(old.occupancy.occupied,
                                                     new.occupancy.occupied)


# --- bad and hostile files ---
@pytest.fixture(scope="module")
def good_file(tmp_path_factory) -> bytes:
    path = tmp_path_factory.mktemp("nrz") / "good.nrz"
    nrz.save(structured(tiny_tensorf()), path, nrz.SaveOptions(mode="quant", bits=8,
                                                                min_lossy_elements=64))
    return path.read_bytes()


def load_bytes(tmp_path: Path, data: bytes) -> RadianceModel:
    path = tmp_path / "bad.nrz"
    path.write_bytes(data)
    return nrz.load(path)


# The 2.0 layout taken apart and rebuilt with every checksum recomputed (tests/nrz_surgery.py).
rechecksum = surgery.rechecksum
section_span = surgery.section_span


def test_rechecksum_helper_is_faithful(good_file):
    assert rechecksum(bytearray(good_file)) == good_file


@pytest.mark.parametrize("cut", [0, 5, 12, 30, 200, -400, -13, -1])
def test_truncated_file(tmp_path, good_file, cut):
    with pytest.raises(NerfzipError):
        load_bytes(tmp_path, good_file[:cut])


def test_truncation_names_the_section(tmp_path, good_file):
    with pytest.raises(NerfzipError, match="section 'occupancy.occupied'.*past the end"):
        load_bytes(tmp_path, good_file[:-20])


def test_every_flipped_byte_is_caught(tmp_path, good_file):
    for pos in range(0, len(good_file), max(1, len(good_file) // 400)):
        data = bytearray(good_file)
        data[pos] ^= 0x10
        with pytest.raises(NerfzipError):
            load_bytes(tmp_path, bytes(data))


def test_flipped_payload_byte_names_its_section(tmp_path, good_file):
    offset, length = section_span(good_file, "field.basis.weight")
    data = bytearray(good_file)
    data[offset + length // 2] ^= 1
    with pytest.raises(NerfzipError, match="section 'field.basis.weight': checksum"):
        load_bytes(tmp_path, bytes(data))


def test_wrong_magic_and_newer_version(tmp_path, good_file):
    with pytest.raises(NerfzipError, match="not a .nrz file"):
        load_bytes(tmp_path, b"PK\x03\x04" + good_file[4:])
    newer = bytearray(good_file)
    struct.pack_into("<H", newer, 8, nrz.MAJOR + 1)
    with pytest.raises(NerfzipError, match="newer than this nerfzip reads"):
        load_bytes(tmp_path, rechecksum(newer))


def crafted(good_file: bytes, name: str, payload: bytes) -> bytes:
    """``good_file`` with section ``name`` replaced by ``payload`` (same length, padded)."""
    offset, length = section_span(good_file, name)
    assert len(payload) <= length
    data = bytearray(good_file)
    data[offset:offset + length] = payload.ljust(length, b"\0")
    return rechecksum(data)


def test_unknown_codec_id(tmp_path, good_file):
    offset, length = section_span(good_file, "field.basis.weight")
    data = bytearray(good_file)
    struct.pack_into("<H", data, offset, 999)
    with pytest.raises(NerfzipError, match="section 'field.basis.weight': unknown codec id 999"):
        load_bytes(tmp_path, rechecksum(data))


def test_huge_declared_shape_is_refused_without_allocating(tmp_path, good_file):
    payload = struct.pack("<HBBQQ", 1, 1, 2, 1 << 20, 1 << 20) + struct.pack("<I", 2) + b"{}" \
        + b"\0\0"
    data = crafted(good_file, "field.decoder.layers.0.weight", payload)
    with pytest.raises(NerfzipError, match="decoder.layers.0.weight.*plausibly hold"):
        load_bytes(tmp_path, data)


def test_section_length_past_the_end(tmp_path, good_file):
    data = bytearray(good_file)
    # The first table entry's length field: table start + count(4) + u16 name length + name
    # + u16 codec id.
    pos = surgery.table_offset(good_file) + 4
    n = struct.unpack_from("<H", data, pos)[0]
    name = bytes(data[pos + 2:pos + 2 + n]).decode()
    struct.pack_into("<Q", data, pos + 2 + n + 2, 1 << 40)
    table = surgery.table_offset(good_file)
    tlen = struct.unpack_from("<I", data, 20)[0]
    struct.pack_into("<I", data, table + tlen, zlib.crc32(bytes(data[table:table + tlen])))
    with pytest.raises(NerfzipError, match=f"section '{name}': extends past the end"):
        load_bytes(tmp_path, bytes(data))


def test_cli_info_and_bad_file_errors(tmp_path, good_file):
    (tmp_path / "good.nrz").write_bytes(good_file)
    (tmp_path / "bad.nrz").write_bytes(good_file[:-30])
    cmd = [sys.executable, "-m", "nerfzip.cli.main"]
    ok = subprocess.run(cmd + ["info", str(tmp_path / "good.nrz")], capture_output=True,
                        text=True)
    assert ok.returncode == 0 and "field.basis.weight" in ok.stdout and "quant 8b" in ok.stdout
    bad = subprocess.run(cmd + ["info", str(tmp_path / "bad.nrz")], capture_output=True,
                         text=True)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1 and "bad.nrz" in bad.stderr


# --- fuzzing ---
# Mutated whole files (raw bytes, and payloads / header values behind repaired checksums)
# are fuzzed in tests/test_container_fuzz.py, which asserts the outcome of every case.


NODE_FUZZ = settings(max_examples=400, deadline=None, derandomize=True,
                     suppress_health_check=list(HealthCheck))
FLOAT_KINDS = ("gauss", "sparse", "palette", "vectors", "constant", "special")
INT_DTYPES = (torch.int64, torch.int32, torch.uint8, torch.bool)


@st.composite
def tensors(draw) -> torch.Tensor:
    """Small tensors with the structures the codecs look for (zeros, palettes, repeated feature
    vectors), or integers, from a drawn seed."""
    shape = tuple(draw(st.lists(st.integers(1, 9), min_size=1, max_size=3)))
    if draw(st.integers(0, 20)) == 0:
        shape = shape[:-1] + (0,)  # an empty tensor now and then
    g = torch.Generator().manual_seed(draw(st.integers(0, 2**31 - 1)))
    kind = draw(st.sampled_from(FLOAT_KINDS + ("integers",)))
    x = torch.randn(shape, generator=g) * draw(st.sampled_from([1e-3, 1.0, 300.0]))
    if kind == "integers":
        dtype = draw(st.sampled_from(INT_DTYPES))
        hi = 2 if dtype == torch.bool else draw(st.sampled_from([2, 200, 1 << 20]))
        return torch.randint(0, hi, shape, generator=g).to(dtype)
    if kind == "sparse":
        x = x * (torch.rand(shape, generator=g) < 0.15)
    elif kind == "palette":
        x = torch.randint(0, 5, shape, generator=g) * 0.37 - 0.5
    elif kind == "vectors" and x.numel():
        axis = draw(st.integers(0, x.dim() - 1))
        book = torch.randn(3, shape[axis], generator=g)
        rows = book[torch.randint(0, 3, (x.numel() // shape[axis],), generator=g)]
        moved = [n for k, n in enumerate(shape) if k != axis] + [shape[axis]]
        x = rows.view(moved).movedim(-1, axis).contiguous()
    elif kind == "constant":
        x = torch.full(shape, -2.5)
    elif kind == "special" and x.numel():
        flat = x.view(-1)
        flat[0] = float("inf")
        flat[-1] = -0.0
    return x


@st.composite
def specs(draw, x: torch.Tensor) -> TensorSpec:
    """A precision request for ``x``: lossless, half or quant (per tensor or channel, with a
    given grid or not), with or without a feature axis, sparse forms and coders of any subset."""
    finite = bool(torch.isfinite(x).all())
    mode = draw(st.sampled_from(["lossless", "half", "quant"] if finite else ["lossless"]))
    axes = st.none() | st.integers(0, x.dim() - 1)
    coders = tuple(c for c in sym.CODERS if draw(st.booleans())) or ("pack",)
    bits = draw(st.integers(1, 12))
    axis = draw(axes) if mode == "quant" else None
    grid = None
    if mode == "quant" and axis is None and x.numel() and draw(st.booleans()):
        grid = quant_grid(x, bits, None)  # what the quant pass records
    return TensorSpec(mode=mode, bits=bits, axis=axis, grid=grid, vector_axis=draw(axes),
                      coders=coders, sparse=draw(st.booleans()))


def on_grid(x: torch.Tensor, spec: TensorSpec) -> torch.Tensor:
    """``x`` on the quantization grid, computed apart from the codec (numpy, float32)."""
    lo, scale = spec.grid if spec.grid is not None else quant_grid(x, spec.bits, spec.axis)
    shape = [1] * x.dim()
    if spec.axis is not None:
        shape[spec.axis] = -1
    lo, scale = lo.numpy().reshape(shape), scale.numpy().reshape(shape)
    q = np.clip(np.round((x.numpy() - lo) / scale), 0, (1 << spec.bits) - 1).astype(np.float32)
    return torch.from_numpy((lo + q * scale).astype(np.float32))


def documented_value(x: torch.Tensor, spec: TensorSpec, node) -> torch.Tensor:
    """What a node must decode to: the tensor itself (lossless, integers), its float16 rounding
    (half) or its grid values (quant; a codebook whose channels do not follow the vectors stays
    exact, as ``codebook_node`` documents)."""
    if not x.is_floating_point() or spec.mode == "lossless" or not x.numel():
        return x
    if spec.mode == "half":
        return torch.from_numpy(x.numpy().astype(np.float16).astype(np.float32))
    if node.codec == "vq" and spec.axis not in (None, spec.vector_axis):
        return x
    return on_grid(x, spec)


def same_bits(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Equal dtype, shape and bits, except the sign of zero: codebooks and sparse forms compare
    values, where -0.0 == 0.0 (documented in ``TensorSpec``; rendering cannot tell them apart)."""
    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    if a.is_floating_point():
        a, b = (torch.where(t == 0, torch.zeros_like(t), t) for t in (a, b))
        return torch.equal(a.view(torch.int32), b.view(torch.int32))
    return torch.equal(a, b)


@NODE_FUZZ
@given(data=st.data())
def test_fuzz_valid_nodes_decode_to_their_documented_values(data):
    """Drawn tensors and specs: the decoded tensor is the original bit for bit (lossless), its
    float16 rounding or its grid values, and quantization errs by at most half a step. A
    decoder that refused valid input, or changed a value, fails here."""
    x = data.draw(tensors())
    spec = data.draw(specs(x))
    node = encode_tensor(x, spec)
    back = decode(parse(serialize(node), Budget(1 << 20)))
    assert same_bits(back, documented_value(x, spec, node)), (node.codec, node.describe())
    if spec.mode == "quant" and spec.grid is None and x.numel() and x.is_floating_point():
        _, scale = quant_grid(x, spec.bits, spec.axis)
        assert float((back - x).abs().max()) <= float(scale.max()) / 2 * (1 + 1e-5) + 1e-30


def assert_refused_or_shaped(data: bytes) -> str:
    """A hostile node: a one-line FormatError, or a tensor of exactly the shape and dtype it
    declares. Returns which."""
    try:
        node = parse(data, Budget(1 << 20))
        out = decode(node)
    except FormatError as e:
        assert str(e) and "\n" not in str(e)
        return "refused"
    assert isinstance(out, torch.Tensor)
    assert tuple(out.shape) == node.shape and out.dtype == node.dtype
    return "decoded"


@NODE_FUZZ
@given(data=st.data())
def test_fuzz_mutated_node_bytes(data):
    """Flips, overwrites, insertions, deletions and truncations of a valid node's bytes; with no
    mutation drawn, the node must still decode to its tensor."""
    x = data.draw(tensors())
    node = encode_tensor(x, data.draw(specs(x)))
    mutations = data.draw(st.integers(0, 4))
    buf = mutate(data, bytearray(serialize(node)), mutations)
    outcome = assert_refused_or_shaped(bytes(buf))
    if mutations == 0:
        assert outcome == "decoded"


HOSTILE_VALUES = [None, -1, 0, 1, 2, 3, 17, 1 << 40, 2.5, "mask", "gaps", "zstd", True, [0],
                  [1, 1], {}, "x"]


@st.composite
def tampered(draw, node):
    """``node`` or one of its descendants with one part replaced: a parameter set to a hostile
    JSON value, the declared shape or dtype changed, or children dropped, duplicated or
    swapped. The result still serialises (only the semantics are hostile)."""
    if node.children and draw(st.booleans()):
        k = draw(st.integers(0, len(node.children) - 1))
        children = list(node.children)
        children[k] = draw(tampered(children[k]))
        return replace(node, children=children)
    what = draw(st.sampled_from(["param", "shape", "dtype", "children"]))
    if what == "param":
        key = draw(st.sampled_from(sorted(node.params) + ["axis", "bits", "modes"]))
        return replace(node, params={**node.params, key: draw(st.sampled_from(HOSTILE_VALUES))})
    if what == "shape":
        shape = tuple(draw(st.lists(st.integers(0, 40), max_size=4)))
        return replace(node, shape=shape)
    if what == "dtype":
        return replace(node, dtype=draw(st.sampled_from(list(DTYPE_IDS))))
    children = list(node.children)
    op = draw(st.sampled_from(["drop", "duplicate", "swap"]))
    if op == "drop" and children:
        children.pop(draw(st.integers(0, len(children) - 1)))
    elif op == "duplicate" and children:
        children.append(children[draw(st.integers(0, len(children) - 1))])
    elif op == "swap" and len(children) > 1:
        children = children[::-1]
    return replace(node, children=children)


@NODE_FUZZ
@given(data=st.data())
def test_fuzz_hostile_node_semantics(data):
    """Structurally valid nodes with hostile meaning reach the decoders themselves: a one-line
    FormatError or a tensor of the declared shape and dtype, never another exception."""
    x = data.draw(tensors())
    node = encode_tensor(x, data.draw(specs(x)))
    assert_refused_or_shaped(serialize(data.draw(tampered(node))))


@settings(max_examples=300, deadline=None, derandomize=True)
@given(payload=st.binary(max_size=200))
def test_fuzz_random_node_bytes(payload):
    assert_refused_or_shaped(payload)


def test_node_fuzz_checks_catch_a_decoder_that_refuses_everything(monkeypatch):
    """The fuzz assertions are not vacuous: a decoder refusing all input fails them."""
    import nerfzip.codec.node as node_module

    def refuse(node):
        raise FormatError("refused")

    monkeypatch.setattr(node_module, "REGISTRY", {
        name: replace(c, decode=refuse) for name, c in node_module.REGISTRY.items()})
    with pytest.raises(FormatError, match="refused"):
        test_fuzz_valid_nodes_decode_to_their_documented_values()


if __name__ == "__main__":
    write_golden()
    print(f"wrote golden files to {GOLDEN}")


def test_axis_parameter_refuses_booleans():
    """JSON ``true`` is a Python int; as a node's channel axis it must be refused, not read
    as axis 1 (which let a hostile codec-10 node reach the decoder)."""
    from nerfzip.codec.node import check_axis

    assert check_axis(1, 3) == 1 and check_axis(None, 3) is None
    for bad in (True, False, -1, 3, 1.0):
        with pytest.raises(FormatError, match="bad axis"):
            check_axis(bad, 3)
