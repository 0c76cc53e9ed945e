"""``nerfzip export-web``: a baked octree as a static web page that renders it with WebGL2.

The folder holds ``index.html``, ``nerfzip-shader.js`` (the renderer: a fragment shader that
walks each pixel's ray through the octree exactly as ``rendering.octree`` does),
``nerfzip-web.js`` (loading, textures, the orbit camera), ``scene.json`` (what
the page needs to know) and ``scene.bin.gz`` (the leaf data, gzip-compressed, decompressed by
the browser's own ``DecompressionStream``). ``docs/web.md`` documents the layout.

Leaf data on the wire: the density ``relu(sigma)`` as float16 (or 8-bit codes of its
logarithm), the child masks as bytes, the SH coefficients as 8-bit codes per channel with a
per-channel offset and step (``value = offset + step * code``), channel-major so that gzip finds
the runs; a vector-quantized octree (few distinct SH vectors) sends its palette once and a 1- or
2-byte palette index per leaf.
"""

from __future__ import annotations

import gzip
import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import torch

from nerfzip.errors import NerfzipError
from nerfzip.fields.octree import sh_count
from nerfzip.fields.sh import SH_DIM
from nerfzip.viewer.camera import Orbit, View, default_view

FORMAT = "nerfzip-web"
VERSION = 1
ASSETS = ("index.html", "nerfzip-shader.js", "nerfzip-web.js")
DATA_FILE = "scene.bin.gz"
FLOAT16_MAX = 65504.0
PALETTE_MAX = 1 << 16
"""Most distinct SH vectors sent as a palette (leaves then carry a 1- or 2-byte index)."""
MLP_MAX = 64
"""Most features and hidden units of an MLP octree's decoder the page evaluates."""


@dataclass
class ExportReport:
    """What ``export_web`` wrote: the folder, its total bytes and the parts."""

    folder: Path
    bytes: int
    files: dict[str, int]
    leaves: int
    nodes: int
    seconds: float

    def line(self) -> str:
        parts = ", ".join(f"{k} {v:,}" for k, v in self.files.items())
        return (f"wrote {self.folder}/: {self.bytes:,} bytes ({self.bytes / 2**20:.2f} MB: "
                f"{parts}); {self.leaves:,} leaves, {self.nodes:,} nodes, "
                f"{self.seconds:.2f} s")


def quantize_channels(values: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """8-bit codes [C, L] of ``values`` [C, L] with per-channel ``offset`` and ``step`` [C]:
    ``value ~ offset + step * code``, the codes spanning each channel's range."""
    lo = values.min(axis=1) if values.shape[1] else np.zeros(values.shape[0])
    hi = values.max(axis=1) if values.shape[1] else np.zeros(values.shape[0])
    step = (hi - lo) / 255.0
    safe = np.where(step > 0, step, 1.0)
    codes = np.clip(np.rint((values - lo[:, None]) / safe[:, None]), 0, 255).astype(np.uint8)
    return codes, lo.astype(np.float64), step.astype(np.float64)


def pad4(buf: bytearray) -> None:
    buf.extend(b"\0" * (-len(buf) % 4))


def quantize_density(sigma: np.ndarray, bits: int) -> tuple[np.ndarray, dict[str, Any]]:
    """Densities (>= 0) for the wire: float16 (``bits`` 16) or 8-bit codes of their logarithm
    (``bits`` 8: code 0 is density 0, code c >= 1 is ``exp(log_offset + log_step (c - 1))``,
    a relative error of at most ``log_step / 2``)."""
    if bits == 16:
        return np.minimum(sigma, FLOAT16_MAX).astype(np.float16), {}
    if bits != 8:
        raise NerfzipError(f"export-web: --density-bits {bits}: expected 8 or 16")
    pos = sigma > 0
    logs = np.log(sigma[pos]) if pos.any() else np.zeros(1)
    lo, hi = float(logs.min()), float(logs.max())
    step = (hi - lo) / 254.0 if hi > lo else 1.0
    codes = np.zeros(sigma.shape, dtype=np.uint8)
    codes[pos] = np.clip(np.rint((logs - lo) / step), 0, 254).astype(np.uint8) + 1
    return codes, {"log_offset": lo, "log_step": step}


def palette_of(sh: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """The distinct leaf vectors of ``sh`` [C, L] as a palette [C, P] and each leaf's entry
    [L], when there are few of them (a vector-quantized octree: P <= 65536 and P <= L / 4)."""
    if sh.shape[1] < 4:
        return None
    # A quick count first: distinct vectors have distinct random projections (almost surely).
    projection = sh.T @ np.random.default_rng(0).standard_normal(sh.shape[0])
    count = np.unique(projection).shape[0]
    if count > PALETTE_MAX or 4 * count > sh.shape[1]:
        return None
    unique, inverse = np.unique(sh.T, axis=0, return_inverse=True)
    if unique.shape[0] > PALETTE_MAX or 4 * unique.shape[0] > sh.shape[1]:
        return None
    return unique.T, inverse.reshape(-1)


def affine(layer: torch.nn.Module, n_in: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Weight [out, in] and bias [out] of any affine layer (a Linear or a LowRankLinear)."""
    with torch.no_grad():
        bias = layer(torch.zeros(1, n_in)).reshape(-1).double()
        weight = (layer(torch.eye(n_in)).double() - bias).T
    return weight, bias


def decoder_floats(field) -> np.ndarray:
    """An MLP octree's decoder as float32: W1 [H, F + 16] row-major, b1 [H], W2 [3, H],
    b2 [3] (``fields/octree.py``: ``sigmoid(W2 relu(W1 [f, Y(d)] + b1) + b2)``)."""
    cfg = field.config
    w1, b1 = affine(field.decoder[0], cfg.features + SH_DIM)
    w2, b2 = affine(field.decoder[2], cfg.hidden)
    return torch.cat((w1.reshape(-1), b1, w2.reshape(-1), b2)).float().cpu().numpy()


def pack_octree(field, sh_degree: int | None = None, density_bits: int = 16
                ) -> tuple[bytes, dict[str, Any]]:
    """The data file's bytes (before gzip) and its description for ``scene.json``."""
    cfg = field.config
    info: dict[str, Any] = {"appearance": cfg.appearance}
    if cfg.appearance == "sh":
        degree = cfg.sh_degree if sh_degree is None else sh_degree
        if not 0 <= degree <= cfg.sh_degree:
            raise NerfzipError(f"export-web: --sh-degree {degree}: the octree has degree "
                               f"{cfg.sh_degree} (0..{cfg.sh_degree} possible)")
        k_all, k = sh_count(cfg.sh_degree), sh_count(degree)
        values = field.sh.detach().double().cpu().view(3, k_all, -1)[:, :k]
        name, values = "sh", values.reshape(3 * k, -1).numpy()
        info["sh_degree"] = degree
    else:
        if sh_degree is not None:
            raise NerfzipError("export-web: --sh-degree applies to SH octrees; this one stores "
                               "features decoded by an MLP")
        if cfg.features > MLP_MAX or cfg.hidden > MLP_MAX:
            raise NerfzipError(f"export-web: the page decodes at most {MLP_MAX} features "
                               f"with at most {MLP_MAX} hidden units; this octree has "
                               f"{cfg.features} and {cfg.hidden}")
        name, values = "features", field.features.detach().double().cpu().numpy()
        info["decoder"] = {"features": cfg.features, "hidden": cfg.hidden}
    sigma = torch.relu(field.sigma.detach().float()).cpu().numpy()
    buf, sections = bytearray(), []

    def add(name: str, arr: np.ndarray, **extra: Any) -> None:
        sections.append({"name": name, "dtype": str(arr.dtype), "shape": list(arr.shape),
                         "offset": len(buf), "length": arr.nbytes, **extra})
        buf.extend(arr.astype(arr.dtype.newbyteorder("<")).tobytes())
        pad4(buf)

    density, params = quantize_density(sigma, density_bits)
    add("sigma", density, **params)
    add("masks", field.masks.detach().cpu().numpy().astype(np.uint8))
    palette = palette_of(values)
    if palette is None:
        codes, offset, step = quantize_channels(values)
        add(name, codes, value_offset=offset.tolist(), value_step=step.tolist())
    else:
        codes, offset, step = quantize_channels(palette[0])
        add(f"{name}_palette", codes, value_offset=offset.tolist(), value_step=step.tolist())
        index = palette[1].astype(np.uint8 if codes.shape[1] <= 256 else np.uint16)
        add(f"{name}_index", index)
    if cfg.appearance == "mlp":
        add("decoder", decoder_floats(field))
    info["sections"] = sections
    return bytes(buf), info


def scene_cameras(model) -> Any:
    """The scene's training cameras and test cameras (``None`` each when the scene cannot be
    loaded here: a file carries no images)."""
    from nerfzip.data.load import load_scene

    source = model.space.source or model.space.format
    if not source:
        return None, None
    try:
        scene = load_scene(source, downscale=model.space.downscale)
        return scene.split("train").cameras, scene.split("test").cameras
    except (NerfzipError, OSError, ValueError, KeyError):
        return None, None


def initial_view(model, train_cams, test_cams, max_side: int = 800) -> tuple[View, Orbit]:
    """The page's first camera (the scene's first test view, at most ``max_side`` pixels) and
    its orbit."""
    ndc = model.space.ndc is not None
    orbit = Orbit.of(train_cams, model.field.aabb.cpu(), ndc)
    if test_cams is not None and len(test_cams):
        view = View.of(test_cams, 0)
    else:
        view = default_view(orbit, model.field.aabb.cpu())
    scale = min(1.0, max_side / max(view.width, view.height))
    if scale < 1:
        view = view.resized(round(view.width * scale), round(view.height * scale))
    return view, orbit


def describe(model, path: Path | None) -> dict[str, Any]:
    """The source file's figures for the page's panel."""
    out: dict[str, Any] = {"family": model.field.family, "scene": model.space.name}
    if path is not None and path.is_file():
        out["file"], out["bytes"] = path.name, path.stat().st_size
    steps = model.meta.get("pipeline") or []
    out["pipeline"] = " ".join(str(s.get("step", s)) if isinstance(s, dict) else str(s)
                               for s in steps)
    return out


def scene_json(model, info: dict[str, Any], raw: int, packed: int, view: View, orbit: Orbit,
               source: dict[str, Any]) -> dict[str, Any]:
    field = model.field
    ndc = model.space.ndc
    return {
        "format": FORMAT, "version": VERSION,
        "depth": field.config.depth, "nodes": field.config.nodes,
        "leaves": field.config.leaves, "aabb": field.aabb.cpu().tolist(),
        "appearance": info["appearance"],
        "sh_degree": info.get("sh_degree"),
        "decoder": info.get("decoder"),
        "background": list(model.space.background),
        "near": model.space.near, "far": model.space.far,
        "ndc": None if ndc is None else {k: ndc[k] for k in ("focal", "width", "height",
                                                             "near")},
        "pixel_offset": model.space.pixel_offset,
        "stop_transmittance": model.render.stop_transmittance,
        "weight_threshold": model.render.weight_threshold,
        "data": {"file": DATA_FILE, "encoding": "gzip", "bytes": packed, "raw_bytes": raw,
                 "sections": info["sections"]},
        "camera": view.to_dict(),
        "orbit": {"target": orbit.target.tolist(), "up": orbit.up.tolist()},
        "source": source,
    }


def load_octree_model(path: str | Path):
    """The model of a .nrz file (or run folder / model file), refused in one line unless it is
    an octree."""
    from nerfzip.codec.nrz import is_nrz
    from nerfzip.training.checkpoint import load_model

    path = Path(path)
    if not path.exists():
        raise NerfzipError(f"{path}: no such file")
    if path.is_file() and path.suffix != ".safetensors" and not is_nrz(path):
        raise NerfzipError(f"{path}: not a .nrz file (it does not start with the .nrz magic)")
    model = load_model(path)
    if model.field.family != "octree":
        raise NerfzipError(f"{path}: a {model.field.family} field; the web page renders baked "
                           "octrees: nerfzip compress FILE --pipeline \"bake()\" -o baked.nrz "
                           "first")
    return model


def export_web(source: str | Path, out: str | Path, sh_degree: int | None = None,
               view: View | None = None, density_bits: int = 16) -> ExportReport:
    """Write the static site of the octree in ``source`` (a .nrz file) to the folder ``out``
    (replaced whole when it holds an earlier export; refused when it holds anything else)."""
    start = time.monotonic()
    source, out = Path(source), Path(out)
    check_out(out)
    model = load_octree_model(source)
    raw, info = pack_octree(model.field, sh_degree, density_bits)
    packed = gzip.compress(raw, compresslevel=6, mtime=0)
    train_cams, test_cams = scene_cameras(model)
    first, orbit = initial_view(model, train_cams, test_cams)
    meta = scene_json(model, info, len(raw), len(packed), view or first, orbit,
                      describe(model, source))
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    try:
        (tmp / DATA_FILE).write_bytes(packed)
        (tmp / "scene.json").write_text(json.dumps(meta, indent=1) + "\n", encoding="utf-8")
        web = resources.files("nerfzip.viewer") / "web"
        for name in ASSETS:
            (tmp / name).write_bytes((web / name).read_bytes())
        os.chmod(tmp, 0o755)
        replace_folder(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    files = {p.name: p.stat().st_size for p in sorted(out.iterdir()) if p.is_file()}
    return ExportReport(out, sum(files.values()), files, model.field.config.leaves,
                        model.field.config.nodes, time.monotonic() - start)


def check_out(out: Path) -> None:
    """``-o``: a folder that does not exist, is empty or holds an earlier export."""
    if out.exists() and not out.is_dir():
        raise NerfzipError(f"-o {out}: is a file; export-web writes a folder")
    if out.is_dir() and any(out.iterdir()) and not (out / "scene.json").is_file():
        raise NerfzipError(f"-o {out}: the folder holds other files; choose an empty or new "
                           "folder (an earlier export is replaced)")


def replace_folder(new: Path, out: Path) -> None:
    """Rename ``new`` onto ``out``; an earlier ``out`` is moved aside first and removed after."""
    old = None
    if out.exists():
        old = out.with_name(f".{out.name}.old-{os.getpid()}")
        os.replace(out, old)
    os.replace(new, out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
