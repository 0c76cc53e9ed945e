"""The one model serializer (model files and .nrz share it), old files still reading, the
streaming reader (sections as their last byte arrives, partial models), validated headers
with one-line errors, and the codec layer importing nothing from training."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import nrz_surgery as surgery
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from nerfzip.codec import model_io, nrz
from nerfzip.data.cameras import RayBundle
from nerfzip.errors import NerfzipError
from nerfzip.fields.mlp_nerf import MLPNeRF, MLPNeRFConfig
from nerfzip.fields.tensorf import TensoRF, TensoRFConfig
from nerfzip.rendering.model import RadianceModel, SceneSpace
from nerfzip.rendering.occupancy import OccupancyGrid
from nerfzip.rendering.renderer import RenderConfig
from nerfzip.training.checkpoint import load_model, read_model_file, save_model

AABB = torch.tensor([[-1.0, -1.0, -1.0], [1.0, 1.0, 1.0]])


def tensorf_model() -> RadianceModel:
    cfg = TensoRFConfig(resolution=(6, 7, 8), density_components=2, appearance_components=2,
                        app_dim=3, decoder_hidden=8)
    occ = OccupancyGrid(AABB, 4)
    occ.density.copy_(torch.rand(4, 4, 4, generator=torch.Generator().manual_seed(0)))
    occ.occupied.copy_(occ.density > 0.3)
    return RadianceModel(TensoRF(cfg, AABB, seed=3), RenderConfig(step_size=0.1),
                         SceneSpace([1.0, 1.0, 1.0], 2.0, 6.0, name="t"), occ,
                         {"pipeline": [{"step": "quant", "args": {"bits": 8}}], "note": 1})


def mlp_model() -> RadianceModel:
    cfg = MLPNeRFConfig(pos_freqs=2, dir_freqs=1, hidden=8, depth=3, skips=(2,), dir_hidden=4)
    return RadianceModel(MLPNeRF(cfg, AABB, seed=4),
                         RenderConfig(sampler="hierarchical", n_coarse=8, n_fine=8),
                         SceneSpace([0.0, 0.0, 0.0], 2.0, 6.0))


def rays(n: int = 16) -> RayBundle:
    g = torch.Generator().manual_seed(0)
    o = torch.randn(n, 3, generator=g) * 0.2 + torch.tensor([0.0, 0.0, 4.0])
    d = torch.nn.functional.normalize(-o + 0.3 * torch.randn(n, 3, generator=g), dim=-1)
    return RayBundle(o, d, d, torch.full((n,), 2.0), torch.full((n,), 6.0))


def same_model(a: RadianceModel, b: RadianceModel) -> None:
    ta, tb = a.field.named_tensors(), b.field.named_tensors()
    assert ta.keys() == tb.keys() and all(torch.equal(ta[k], tb[k]) for k in ta)
    assert a.render == b.render and a.space == b.space
    assert torch.equal(a.render_rays(rays()), b.render_rays(rays()))


# --- one serializer ----------------------------------------------------------------------------
def test_codec_imports_nothing_from_training():
    code = ("import sys, nerfzip.codec.nrz, nerfzip.codec.model_io; "
            "print([m for m in sys.modules if m.startswith('nerfzip.training')])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "[]"


def test_model_file_and_nrz_share_one_header_schema(tmp_path):
    model = tensorf_model()
    save_model(model, tmp_path / "m.safetensors")
    nrz.save(model, tmp_path / "m.nrz")
    file_header, _ = read_model_file(tmp_path / "m.safetensors")
    nrz_header = nrz.info(tmp_path / "m.nrz")["header"]
    keys = {"field", "render", "space", "occupancy", "pipeline", "meta"}
    assert set(file_header) - {"format", "version"} == keys
    assert set(nrz_header) - {"format", "writer"} == keys
    assert {k: file_header[k] for k in keys} == {k: nrz_header[k] for k in keys}
    assert file_header["occupancy"] == {"resolution": 4, "aabb": AABB.tolist()}


def test_model_file_round_trip_keeps_the_occupancy_density(tmp_path):
    """What an exact --resume needs: the running density, not only the occupied cells."""
    model = tensorf_model()
    save_model(model, tmp_path / "m.safetensors")
    back = load_model(tmp_path / "m.safetensors")
    same_model(model, back)
    assert torch.equal(back.occupancy.density, model.occupancy.density)
    assert torch.equal(back.occupancy.occupied, model.occupancy.occupied)
    assert back.meta == {"pipeline": model.meta["pipeline"], "note": 1}
    # The .nrz keeps the occupied cells only.
    nrz.save(model, tmp_path / "m.nrz")
    assert "occupancy.density" not in {r["name"] for r in nrz.info(tmp_path / "m.nrz")[
        "sections"]}


def write_v1_model_file(model: RadianceModel, path: Path) -> None:
    """A model file as nerfzip wrote it before the shared serializer (header version 1)."""
    from dataclasses import asdict

    tensors = {f"field.{k}": v.contiguous() for k, v in model.field.named_tensors().items()}
    occ = model.occupancy
    tensors.update({"occupancy.density": occ.density, "occupancy.aabb": occ.aabb,
                    "occupancy.occupied": occ.occupied.to(torch.uint8)})
    header = {"format": "nerfzip-model", "version": 1, "field": model.field.config_dict(),
              "render": asdict(model.render), "space": model.space.to_dict(),
              "occupancy_resolution": occ.resolution, "meta": model.meta}
    save_file(tensors, str(path), metadata={"nerfzip": json.dumps(header)})


def test_version_1_model_files_still_load(tmp_path):
    model = tensorf_model()
    write_v1_model_file(model, tmp_path / "old.safetensors")
    back = load_model(tmp_path / "old.safetensors")
    same_model(model, back)
    assert torch.equal(back.occupancy.density, model.occupancy.density)
    assert torch.equal(back.occupancy.aabb, model.occupancy.aabb)
    assert back.meta["pipeline"] == model.meta["pipeline"]


def test_new_files_are_2_0_and_1_0_files_still_decode(tmp_path):
    nrz.save(tensorf_model(), tmp_path / "m.nrz")
    assert nrz.info(tmp_path / "m.nrz")["version"] == "2.0"
    golden = Path(__file__).parent / "golden" / "tiny_vm_1.0.nrz"
    reader = nrz.NrzStreamReader(golden)
    data = golden.read_bytes()
    assert reader.feed(data) == []  # 1.x payloads may lie anywhere: decoded at close
    assert len(reader.close()) == len(nrz.info(golden)["sections"])
    assert reader.model().field.family == "tensorf-vm"


# --- streaming ---------------------------------------------------------------------------------
def test_each_section_arrives_with_its_last_byte():
    """Fed one byte at a time, section i is handed out exactly when its last byte is fed."""
    model = tensorf_model()
    data, _ = nrz.encode_model(model, nrz.SaveOptions())
    parts = surgery.split(data)
    ends, pos = [], len(data) - 12 - sum(len(s[2]) for s in parts.sections)
    for s in parts.sections:
        pos += len(s[2])
        ends.append(pos)
    reader = nrz.NrzStreamReader("stream")
    seen = []
    for i in range(len(data)):
        seen += [(s.info.name, i + 1) for s in reader.feed(data[i:i + 1])]
    reader.close()
    assert seen == [(s[0], end) for s, end in zip(parts.sections, ends)]
    same_model(model, reader.model())


def test_stream_and_whole_file_give_the_same_model(tmp_path):
    model = mlp_model()
    nrz.save(model, tmp_path / "m.nrz")
    same_model(nrz.load(tmp_path / "m.nrz"),
               nrz.load_stream(io.BytesIO((tmp_path / "m.nrz").read_bytes()), "m.nrz"))


def test_partial_model_from_the_sections_received_so_far(monkeypatch):
    """A family that marks tensors optional can be built before they arrive (here: the
    coarse network, as a progressive stream's refinement would be)."""
    monkeypatch.setattr(MLPNeRF, "optional_tensors", lambda self: frozenset(
        k for k in self.named_tensors() if k.startswith("coarse.")))
    model = mlp_model()
    data, infos = nrz.encode_model(model, nrz.SaveOptions())
    first_coarse = next(i for i, s in enumerate(infos) if s.name.startswith("field.coarse."))
    reader = nrz.NrzStreamReader("prefix")
    pos = 0
    while len(reader.sections) < first_coarse:
        reader.feed(data[pos:pos + 7])
        pos += 7
    assert reader.can_build() and not reader.complete
    with pytest.raises(NerfzipError, match="not arrived completely"):
        reader.model()
    preview = reader.model(partial=True)
    fine = {k: v for k, v in model.field.named_tensors().items() if k.startswith("fine.")}
    got = preview.field.named_tensors()
    assert all(torch.equal(got[k], v) for k, v in fine.items())
    assert all(bool((got[k] == 0).all()) for k in got if k.startswith("coarse."))
    rgb = preview.render_rays(rays())
    assert bool(torch.isfinite(rgb).all())
    reader.feed(data[pos:])
    reader.close()
    same_model(model, reader.model())


def test_a_failed_reader_accepts_nothing_more():
    data, _ = nrz.encode_model(tensorf_model(), nrz.SaveOptions())
    reader = nrz.NrzStreamReader("dead")
    with pytest.raises(NerfzipError, match="checksum"):
        reader.feed(data[:40] + bytes([data[40] ^ 1]) + data[41:])
    with pytest.raises(NerfzipError, match="already failed"):
        reader.feed(data)
    after = nrz.NrzStreamReader("after")
    after.feed(data)
    with pytest.raises(NerfzipError, match="after the end marker"):
        after.feed(b"x")


# --- validated headers -------------------------------------------------------------------------
def with_header(data: bytes, edit) -> bytes:
    parts = surgery.split(data)
    header = json.loads(parts.header)
    edit(header)
    parts.header = json.dumps(header).encode()
    return surgery.join(parts)


BAD_HEADERS = [
    (lambda h: h["space"].update(near=float("nan")), "space: near must be a number"),
    (lambda h: h["space"].update(far=1.0), "far .* must be beyond near"),
    (lambda h: h["space"].update(background=[1, 1]), "background must have 3 items"),
    (lambda h: h["space"].update(ndc={"focal": "x", "width": 1, "height": 1}),
     "ndc: focal must be a number"),
    (lambda h: h["render"].update(step_size="fast"), "render: step_size must be a number"),
    (lambda h: h["render"].update(step_size=-0.1), "render: step_size must be > 0"),
    (lambda h: h["render"].update(sampler=["occupancy"]), "render: sampler must be a string"),
    (lambda h: h["render"].update(sampler="magic"), "sampler must be one of"),
    (lambda h: h["field"].update(family={"a": 1}), "field: family must be a string"),
    (lambda h: h["field"].update(family="no-such"), "unknown field family 'no-such'"),
    (lambda h: h["field"]["config"].update(resolution=[0, 7, 8]),
     r"config: resolution must be in \[1, 4096\], got \(0, 7, 8\)"),
    (lambda h: h["field"]["config"].update(decomposition="cp"), "disagrees with its config"),
    (lambda h: h["field"].update(aabb=[[0, 0, 0], [0, 1, 1]]), "aabb: each minimum"),
    (lambda h: h["field"].update(low_rank={"decoder.layers.0": 0}), "low_rank"),
    (lambda h: h["occupancy"].update(resolution=-1), "occupancy: resolution must be in"),
    (lambda h: h["occupancy"].update(resolution=5), "has shape \\[4, 4, 4\\].*implies"),
    (lambda h: h.update(pipeline=[{"step": 3}]), r"pipeline\[0\]: step must be a string"),
    (lambda h: h.update(pipeline={"step": "x"}), "pipeline must be a list"),
    (lambda h: h.pop("render"), "no 'render' entry"),
    (lambda h: h["field"]["config"].update(density_components=4096, resolution=[4096] * 3),
     "asks for more values than the file holds"),
]


@pytest.mark.parametrize("edit,message", BAD_HEADERS)
def test_bad_header_values_are_one_line_errors_naming_key_and_file(edit, message):
    data, _ = nrz.encode_model(tensorf_model(), nrz.SaveOptions())
    with pytest.raises(NerfzipError, match=message) as e:
        nrz.load_stream(io.BytesIO(with_header(data, edit)), "hostile.nrz")
    assert "\n" not in str(e.value) and str(e.value).startswith("hostile.nrz: ")


def test_cli_reports_a_bad_header_value_in_one_line_with_status_2(tmp_path):
    data, _ = nrz.encode_model(tensorf_model(), nrz.SaveOptions())
    path = tmp_path / "nan.nrz"
    path.write_bytes(with_header(data, lambda h: h["space"].update(near=float("nan"))))
    out = subprocess.run([sys.executable, "-m", "nerfzip.cli.main", "info", str(path)],
                         capture_output=True, text=True)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "nan.nrz" in lines[0] and "near" in lines[0]


def test_writer_refuses_a_model_its_reader_would_refuse(tmp_path):
    model = tensorf_model()
    model.space.background = [2.0, 0.0, 0.0]
    with pytest.raises(NerfzipError, match="background"):
        nrz.save(model, tmp_path / "m.nrz")
    assert not (tmp_path / "m.nrz").exists()


def test_safetensors_metadata_is_parsed_not_executed(tmp_path):
    """The model file's header is JSON inside safetensors metadata: readable without torch."""
    save_model(tensorf_model(), tmp_path / "m.safetensors")
    with safe_open(str(tmp_path / "m.safetensors"), framework="pt") as f:
        header = json.loads(f.metadata()["nerfzip"])
    assert header["format"] == "nerfzip-model" and header["version"] == 2
    assert model_io.parse_header(header, "m").family == "tensorf-vm"


def test_deeply_nested_codec_parameters_are_a_one_line_error():
    """A node's parameter JSON nested 100,000 deep (Python's parser would overflow its stack)."""
    import struct

    data, _ = nrz.encode_model(mlp_model(), nrz.SaveOptions())
    parts = surgery.split(data)
    params = b"[" * 100_000 + b"]" * 100_000
    name, codec_id, _ = parts.sections[1]
    parts.sections[1][2] = struct.pack("<HBBQ", codec_id, 1, 1, 4) + struct.pack(
        "<I", len(params)) + params + b"\0\0"
    with pytest.raises(NerfzipError, match=f"section '{name}': malformed JSON") as e:
        nrz.load_stream(io.BytesIO(surgery.join(parts)), "deep.nrz")
    assert "\n" not in str(e.value)
