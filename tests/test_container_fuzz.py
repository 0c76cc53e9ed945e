"""Hostile model files: for every mutated file, the reader either refuses it with one line
naming the file, or returns a model whose rendered colours are finite and in [0, 1].

Mutations (seeded, deterministic, 10,200 cases per run; measured: 57 s of CPU time on one core,
user + sys, which was 117 s of wall time on a 2-core machine shared with other jobs):

- raw bytes of .nrz files (flips, overwrites, insertions, deletions, truncations), read both
  whole and fed to the stream reader in random pieces;
- behind repaired checksums (every length and CRC recomputed, tests/nrz_surgery.py), so that
  the layers behind the checksums meet them: payload bytes, header JSON values (wrong types,
  NaN / inf, negative, huge, lists, objects, missing keys, unknown families ...), the section
  table (names, codec ids, order) and the preamble (family id, flags, versions);
- the JSON header and raw bytes of safetensors model files (the same model serializer).

Any other exception, a multi-line message, or a non-finite colour fails the test; so does a
reader that refuses everything (some mutated files must load and render).
"""

from __future__ import annotations

import copy
import io
import json
import math
import random
import struct
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import nrz_surgery as surgery
import pytest
import torch

from nerfzip.codec import nrz
from nerfzip.data.cameras import image_rays
from nerfzip.data.procedural import load_procedural
from nerfzip.errors import NerfzipError
from nerfzip.fields.mlp_nerf import MLPNeRF, MLPNeRFConfig
from nerfzip.fields.tensorf import TensoRF, TensoRFConfig
from nerfzip.rendering.model import RadianceModel, SceneSpace
from nerfzip.rendering.occupancy import OccupancyGrid
from nerfzip.rendering.renderer import RenderConfig
from nerfzip.training.checkpoint import load_model, save_model

NAME = "fuzz.nrz"
CASES = {"raw": 4000, "payload": 1800, "header": 3000, "table": 1000, "model_file": 400}
"""Cases per kind: 10,200 in all."""


# --- the files under attack --------------------------------------------------------------------
@dataclass
class Target:
    """A model, its file bytes, and the rays every loaded mutant renders."""

    name: str
    model: RadianceModel
    data: bytes
    origins: torch.Tensor
    directions: torch.Tensor


@pytest.fixture(scope="module")
def scene():
    return load_procedural(resolution=8, n_train=2, n_test=1)


def procedural_space(scene) -> SceneSpace:
    return SceneSpace.of(scene)


def tiny_tensorf(scene) -> RadianceModel:
    cfg = TensoRFConfig(resolution=(6, 5, 7), density_components=2, appearance_components=2,
                        app_dim=3, decoder_hidden=6, feature_freqs=1, view_freqs=1,
                        density_shift=0.0)
    fld = TensoRF(cfg, scene.aabb, seed=1)
    occ = OccupancyGrid(scene.aabb, 4)
    ar = torch.arange(4)
    occ.occupied.copy_((ar[:, None, None] + ar[None, :, None] + ar[None, None, :]) % 2 == 0)
    with torch.no_grad():  # structure the codecs can exploit: zeros and few values
        w = fld.decoder.layers[0].weight
        w[w.abs() < 0.2] = 0.0
    return RadianceModel(fld, RenderConfig(step_size=0.15), procedural_space(scene), occ,
                         {"pipeline": [{"step": "quant", "args": {"bits": 8},
                                        "report": {"bytes": 1}}]})


def tiny_mlp(scene) -> RadianceModel:
    cfg = MLPNeRFConfig(pos_freqs=1, dir_freqs=1, hidden=6, depth=2, skips=(1,), dir_hidden=4)
    return RadianceModel(MLPNeRF(cfg, scene.aabb, seed=2),
                         RenderConfig(sampler="hierarchical", n_coarse=4, n_fine=4),
                         procedural_space(scene))


@pytest.fixture(scope="module")
def targets(scene, tmp_path_factory) -> list[Target]:
    cams = scene.split("test").cameras
    o, d = image_rays(cams, 0)
    o, d = o[::13][:5], d[::13][:5]
    out = []
    tmp = tmp_path_factory.mktemp("fuzz")
    for name, make, options in [
            ("vm-lossless", tiny_tensorf, nrz.SaveOptions()),
            ("vm-quant", tiny_tensorf, nrz.SaveOptions(mode="quant", bits=6,
                                                       min_lossy_elements=16)),
            ("mlp-lossless", tiny_mlp, nrz.SaveOptions()),
            ("mlp-half", tiny_mlp, nrz.SaveOptions(mode="half", min_lossy_elements=16))]:
        model = make(scene)
        nrz.save(model, tmp / f"{name}.nrz", options)
        out.append(Target(name, model, (tmp / f"{name}.nrz").read_bytes(), o, d))
    return out


# --- one case ----------------------------------------------------------------------------------
def outcome(read: Callable[[], RadianceModel], target: Target, where: str) -> str:
    """"refused" or "rendered"; AssertionError for anything the reader must never do."""
    try:
        model = read()
    except NerfzipError as e:
        msg = str(e)
        assert "\n" not in msg, f"multi-line error: {msg!r}"
        assert where in msg, f"error does not name the file: {msg!r}"
        return "refused"
    rgb = model.render_rays(model.space.make_rays(target.origins, target.directions))
    assert rgb.shape == (len(target.origins), 3), rgb.shape
    assert bool(torch.isfinite(rgb).all()), "non-finite colour"
    assert float(rgb.min()) >= 0.0 and float(rgb.max()) <= 1.0, "colour outside [0, 1]"
    return "rendered"


def read_nrz_bytes(data: bytes, rng: random.Random) -> Callable[[], RadianceModel]:
    """Whole (``load_stream``) or in random pieces through ``NrzStreamReader``."""
    if rng.random() < 0.5:
        return lambda: nrz.load_stream(io.BytesIO(data), NAME)

    def pieces() -> RadianceModel:
        reader = nrz.NrzStreamReader(NAME)
        pos = 0
        while pos < len(data):
            n = rng.choice([1, 61, 700, 4096])
            reader.feed(data[pos:pos + n])
            pos += n
        reader.close()
        return reader.model()

    return pieces


def run_cases(kind: str, targets: list[Target], mutate: Callable, seed: int,
              read: Callable | None = None) -> Counter:
    """``CASES[kind]`` mutants over the targets in turn; every outcome asserted, failures
    reported together with how to reproduce them."""
    rng = random.Random(seed)
    counts: Counter = Counter()
    failures = []
    for i in range(CASES[kind]):
        target = targets[i % len(targets)]
        data, what = mutate(target, rng)
        reader = (read or read_nrz_bytes)(data, rng)
        try:
            counts[outcome(reader, target, NAME)] += 1
        except Exception as e:  # noqa: BLE001  (every other outcome is a failure, collected)
            failures.append(f"case {i} ({target.name}: {what}): {type(e).__name__}: "
                            f"{str(e).splitlines()[0] if str(e) else ''}")
    assert not failures, f"{len(failures)} of {CASES[kind]} cases failed:\n" + "\n".join(
        failures[:15])
    return counts


# --- (a) raw byte mutations --------------------------------------------------------------------
def mutate_raw(target: Target, rng: random.Random) -> tuple[bytes, str]:
    while True:  # an insertion undone by a deletion is no mutation: draw again
        data, what = raw_edits(target.data, rng)
        if data != target.data:
            return data, what


def raw_edits(original: bytes, rng: random.Random) -> tuple[bytes, str]:
    buf = bytearray(original)
    done = []
    for _ in range(rng.randint(1, 3)):
        kind = rng.choice(["flip", "set", "insert", "delete", "truncate", "duplicate"])
        pos = rng.randrange(max(1, len(buf)))
        if kind == "flip" and buf:
            buf[pos] ^= 1 << rng.randrange(8)
        elif kind == "set" and buf:
            buf[pos] = rng.randrange(256)
        elif kind == "insert":
            buf[pos:pos] = rng.randbytes(rng.randint(1, 16))
        elif kind == "delete":
            del buf[pos:pos + rng.randint(1, 16)]
        elif kind == "duplicate":
            buf[pos:pos] = buf[pos:pos + rng.randint(1, 64)]
        else:
            del buf[pos:]
        done.append(f"{kind}@{pos}")
    return bytes(buf), " ".join(done)


def test_raw_byte_mutations(targets):
    counts = run_cases("raw", targets, mutate_raw, seed=1)
    # Checksums guard every byte: no changed file gets through.
    assert counts["rendered"] == 0, counts


# --- (b) behind repaired checksums: payloads ---------------------------------------------------
def mutate_payload(target: Target, rng: random.Random) -> tuple[bytes, str]:
    parts = surgery.split(target.data)
    section = rng.choice(parts.sections)
    payload = bytearray(section[2])
    kind = rng.choice(["set", "set", "flip", "float", "truncate", "extend", "zero"])
    pos = rng.randrange(len(payload))
    if kind == "set":
        for _ in range(rng.randint(1, 3)):
            payload[rng.randrange(len(payload))] = rng.randrange(256)
    elif kind == "flip":
        payload[pos] ^= 1 << rng.randrange(8)
    elif kind == "float":  # a plausible float32 (NaN, inf, huge, tiny) at an aligned offset
        value = rng.choice([math.nan, math.inf, -math.inf, 3e38, -1e30, 1e-40, 0.0, 1e6])
        at = max(0, min(len(payload) - 4, pos - pos % 4))
        payload[at:at + 4] = struct.pack("<f", value)[:len(payload) - at]
    elif kind == "truncate":
        del payload[pos:]
    elif kind == "extend":
        payload += rng.randbytes(rng.randint(1, 32))
    else:
        payload[pos:pos + 8] = bytes(len(payload[pos:pos + 8]))
    section[2] = bytes(payload)
    return surgery.join(parts), f"{kind} in {section[0]} at {pos}"


def test_payload_mutations_behind_valid_checksums(targets):
    counts = run_cases("payload", targets, mutate_payload, seed=2)
    # Many payload changes are plausible values: a reader that refused everything fails here.
    assert counts["rendered"] >= CASES["payload"] // 20, counts
    assert counts["refused"] >= CASES["payload"] // 20, counts


# --- (b) behind repaired checksums: header values ----------------------------------------------
HOSTILE = ["x", "", True, False, None, 0, -1, 1, 2, 0.5, 1.5, -0.5, 1e-300, 1e300, -1e300,
           math.nan, math.inf, -math.inf, 2**31, 2**63, -2**63, 2**70, 10**400, [], [1],
           [1, 2, 3], [0.5, 0.5, 0.5], [-1, -1, -1], [2, 2, 2], ["a", "b", "c"], [None],
           [[0, 0, 0], [1, 1, 1]], [[1, 1, 1], [0, 0, 0]], [[0, 0, 0], [0, 0, 0]],
           [[-1e30, 0, 0], [1e30, 1, 1]], {}, {"a": 1}, {"step": 1}, "tensorf-vm",
           "tensorf-cp", "mlp-nerf", "hash-grid", "no-such-family", "occupancy",
           "hierarchical", "vm", "cp", "relu", "trunc_exp", 4096, 65536, 1 << 20, [4096] * 3,
           [1, 1, 1], {"focal": 1.0, "width": 4, "height": 4}, {"focal": 0, "width": 1,
                                                                "height": 1},
           {"focal": 1e30, "width": 1, "height": 1, "near": 1e-30}]


def json_paths(obj, prefix=()) -> list[tuple]:
    """Every key / index path in a JSON document (inner nodes included)."""
    out = [prefix]
    if isinstance(obj, dict):
        for k, v in obj.items():
            out += json_paths(v, prefix + (k,))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            out += json_paths(v, prefix + (i,))
    return out


def relative(value, rng: random.Random):
    """A value near a number's own (scaled, negated, off by one), or a list edited."""
    if isinstance(value, bool) or not isinstance(value, (int, float, list)):
        return rng.choice(HOSTILE)
    if isinstance(value, list):
        edits = [value[:-1], value + value[-1:], value[::-1], [value]]
        return rng.choice(edits) if value else [0]
    return rng.choice([value * 2, -value, value + 1, value - 1, value * 1e6, value / 3,
                       float(value), int(value)])


def mutate_json(header: dict, rng: random.Random) -> str:
    """Change one or two values of ``header`` in place; says what was done."""
    done = []
    for _ in range(rng.choice([1, 1, 1, 2])):
        path = rng.choice(json_paths(header)[1:])
        parent = header
        for key in path[:-1]:
            parent = parent[key]
        key = path[-1]
        action = rng.random()
        if action < 0.15 and isinstance(parent, dict):
            del parent[key]
            done.append(f"del {path}")
        elif action < 0.2 and isinstance(parent, dict):
            parent["unknown_" + str(key)] = rng.choice(HOSTILE)
            done.append(f"add beside {path}")
        else:
            value = relative(parent[key], rng) if action < 0.5 else copy.deepcopy(
                rng.choice(HOSTILE))
            parent[key] = value
            done.append(f"{path} = {str(value)[:30]}")
    return "; ".join(done)


def mutate_header(target: Target, rng: random.Random) -> tuple[bytes, str]:
    parts = surgery.split(target.data)
    header = json.loads(parts.header)
    what = mutate_json(header, rng)
    parts.header = json.dumps(header).encode("utf-8")  # NaN / Infinity as Python writes them
    return surgery.join(parts), what


def test_header_values_behind_valid_checksums(targets):
    counts = run_cases("header", targets, mutate_header, seed=3)
    assert counts["rendered"] >= CASES["header"] // 20, counts  # e.g. a new name or meta
    assert counts["refused"] >= CASES["header"] // 4, counts


def test_header_special_documents(targets):
    """Headers no value mutation makes: deep nesting, not an object, not UTF-8, huge."""
    t = targets[0]
    parts = surgery.split(t.data)
    for raw in [b"[" * 100_000 + b"]" * 100_000, b"[]", b"null", b"\xff\xfe", b"{",
                b'{"format": "nrz"}', json.dumps({"format": "nrz", "x": "y" * 999_000}).encode()]:
        parts.header = raw
        data = surgery.join(parts)
        assert outcome(lambda d=data: nrz.load_stream(io.BytesIO(d), NAME), t, NAME) \
            == "refused"


# --- (b) behind repaired checksums: table and preamble -----------------------------------------
def mutate_table(target: Target, rng: random.Random) -> tuple[bytes, str]:
    parts = surgery.split(target.data)
    s = parts.sections
    kind = rng.choice(["rename", "codec", "swap", "drop", "duplicate", "family", "flags",
                       "minor", "major", "empty_name"])
    i = rng.randrange(len(s))
    if kind == "rename":
        s[i][0] = rng.choice(["field.nope", s[(i + 1) % len(s)][0], "occupancy.density",
                              "occupancy.occupied", "field." + s[i][0], "\u00e9" * 3])
    elif kind == "codec":
        s[i][1] = rng.choice([0, 1, 2, 3, 5, 7, 9, 10, 999, 65535])
    elif kind == "swap":
        j = rng.randrange(len(s))
        s[i], s[j] = s[j], s[i]
    elif kind == "drop":
        del s[i]
    elif kind == "duplicate":
        s.insert(i, list(s[i]))
    elif kind == "family":
        parts.family_id = rng.choice([0, 1, 2, 3, 4, 99, 65535])
    elif kind == "flags":
        parts.flags = rng.choice([1, 2, 0x8000])
    elif kind == "minor":
        parts.minor = rng.choice([1, 7, 65535])
    elif kind == "major":
        parts.major = rng.choice([0, 1, 3])
    else:
        s[i][0] = ""
    return surgery.join(parts), f"{kind} at {i}"


def test_table_and_preamble_behind_valid_checksums(targets):
    counts = run_cases("table", targets, mutate_table, seed=4)
    assert counts["refused"] >= CASES["table"] // 2, counts


# --- safetensors model files: the same serializer ----------------------------------------------
def mutate_model_file(target: Target, rng: random.Random) -> tuple[bytes, str]:
    """Raw byte mutations, or a header value mutated in the ``nerfzip`` metadata entry."""
    data = target.model_file  # type: ignore[attr-defined]
    if rng.random() < 0.3:
        return mutate_raw(Target(target.name, target.model, data, target.origins,
                                 target.directions), rng)
    n = int.from_bytes(data[:8], "little")
    table = json.loads(data[8:8 + n])
    header = json.loads(table["__metadata__"]["nerfzip"])
    what = mutate_json(header, rng)
    table["__metadata__"]["nerfzip"] = json.dumps(header)
    raw = json.dumps(table).encode()
    raw += b" " * (-len(raw) % 8)
    return len(raw).to_bytes(8, "little") + raw + data[8 + n:], "model file: " + what


def test_model_file_mutations(targets, tmp_path):
    for t in targets[::2]:
        save_model(t.model, tmp_path / f"{t.name}.safetensors")
        t.model_file = (tmp_path / f"{t.name}.safetensors").read_bytes()  # type: ignore
    path = tmp_path / NAME  # the file name every error must name

    def read(data: bytes, rng: random.Random):
        def go():
            path.write_bytes(data)
            return load_model(path)
        return go

    counts = run_cases("model_file", targets[::2], mutate_model_file, seed=5, read=read)
    assert counts["rendered"] >= CASES["model_file"] // 20, counts
    assert counts["refused"] >= CASES["model_file"] // 4, counts


# --- the unmutated files -----------------------------------------------------------------------
def test_unmutated_files_load_and_render_as_saved(targets):
    """The baseline every mutant departs from: exact tensors, identical colours."""
    for t in targets:
        back = nrz.load_stream(io.BytesIO(t.data), NAME)
        lossless = "lossless" in t.name
        a, b = t.model.field.named_tensors(), back.field.named_tensors()
        assert a.keys() == b.keys()
        if lossless:
            assert all(torch.equal(a[k], b[k]) for k in a)
            rays = t.model.space.make_rays(t.origins, t.directions)
            assert torch.equal(t.model.render_rays(rays), back.render_rays(rays))
        assert outcome(lambda d=t.data: nrz.load_stream(io.BytesIO(d), NAME), t, NAME) \
            == "rendered"
        assert surgery.join(surgery.split(t.data)) == t.data


def test_case_count_is_at_least_ten_thousand():
    assert sum(CASES.values()) >= 10_000


def test_mutants_are_read_from_named_files(targets, tmp_path):
    """Errors name the file they came from when read by path too (what the CLI does)."""
    path = tmp_path / "named.nrz"
    path.write_bytes(targets[0].data[:-5])
    with pytest.raises(NerfzipError, match="named.nrz"):
        nrz.load(Path(path))
