"""Model and training-checkpoint files: safetensors + one JSON header, never pickle.

The model itself is serialized by ``nerfzip.codec.model_io`` (the serializer the .nrz container
uses too): its tensors are the file's tensors, its header is the ``nerfzip`` entry of the
safetensors metadata, so a single atomic rename publishes a consistent file. What this module
adds is the training state of a checkpoint: the optimizer moments (``optim.*``), the random
generator state (``rng.state``) and the step, under the header's ``train`` key: everything
``--resume`` needs to continue exactly. ``load_model`` opens any model a user may name: a run
folder, a model or checkpoint file, or a .nrz file.

Header versions: 2 (this one: ``occupancy: {resolution, aabb}``, ``pipeline`` at the top
level); 1 (``occupancy_resolution`` and an ``occupancy.aabb`` tensor, the pipeline in
``meta``) is upgraded on reading.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from torch import Tensor

from nerfzip.codec import model_io
from nerfzip.codec.nrz import is_nrz, load
from nerfzip.errors import NerfzipError
from nerfzip.rendering.model import RadianceModel
from nerfzip.utils.io import atomic_path

FORMAT = "nerfzip-model"
VERSION = 2
MODEL_KEYS = ("field", "render", "space", "occupancy", "pipeline", "meta")


def save_model(model: RadianceModel, path: str | Path,
               extra: dict[str, Tensor] | None = None, extra_header: dict | None = None) -> None:
    """Write a model (plus optional extra tensors / header entries) atomically."""
    tensors = model_io.model_tensors(model, density=True)
    tensors.update({k: v.detach().contiguous().cpu() for k, v in (extra or {}).items()})
    header = {"format": FORMAT, "version": VERSION, **model_io.model_header(model)}
    header.update(extra_header or {})
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={"nerfzip": json.dumps(header)})


def read_model_file(path: str | Path) -> tuple[dict[str, Any], dict[str, Tensor]]:
    """Header (upgraded to the current version) and tensors of a model / checkpoint file,
    with one-line errors. The model part is validated when it is built (``model_from``)."""
    path = Path(path)
    if not path.is_file():
        raise NerfzipError(f"{path}: file not found")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise NerfzipError(f"{path}: not a readable safetensors file "
                           f"({model_io.first_line(e)})") from None
    if "nerfzip" not in meta:
        raise NerfzipError(f"{path}: not a nerfzip model (no nerfzip header)")
    try:
        header = json.loads(meta["nerfzip"])
    except (ValueError, RecursionError) as e:
        raise NerfzipError(f"{path}: malformed nerfzip header ({model_io.first_line(e)})") \
            from None
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise NerfzipError(f"{path}: not a nerfzip model file")
    version = header.get("version")
    if version not in (1, VERSION):
        if isinstance(version, int) and not isinstance(version, bool) and version > VERSION:
            raise NerfzipError(f"{path}: model version {version} is newer than this nerfzip "
                               f"reads ({VERSION}); upgrade nerfzip")
        raise NerfzipError(f"{path}: unknown model file version {version!r:.40}")
    if version == 1:
        header, tensors = upgrade_v1(header, tensors, str(path))
    return header, tensors


def upgrade_v1(header: dict[str, Any], tensors: dict[str, Tensor], where: str
               ) -> tuple[dict[str, Any], dict[str, Tensor]]:
    """A version-1 header and tensors in the current schema: the occupancy box moves from the
    ``occupancy.aabb`` tensor into the header, the pipeline from ``meta`` to the top level."""
    header, tensors = dict(header), dict(tensors)
    meta = header.get("meta")
    meta = dict(meta) if isinstance(meta, dict) else {}
    header["pipeline"] = meta.pop("pipeline", [])
    header["meta"] = meta
    resolution = header.pop("occupancy_resolution", None)
    box = tensors.pop("occupancy.aabb", None)
    header["occupancy"] = None
    if resolution:
        if box is None or not box.is_floating_point() or box.numel() != 6:
            raise NerfzipError(f"{where}: version-1 occupancy grid without a 2 x 3 "
                               "'occupancy.aabb' tensor")
        header["occupancy"] = {"resolution": resolution, "aabb": box.reshape(2, 3).tolist()}
    header["version"] = VERSION
    return header, tensors


def model_from(header: dict[str, Any], tensors: dict[str, Tensor],
               where: str = "model file") -> RadianceModel:
    """The model in a file's header and tensors (training-state tensors are ignored), every
    value validated (``model_io``)."""
    model = {k: v for k, v in tensors.items() if k.startswith(("field.", "occupancy."))}
    return model_io.model_from({k: header.get(k) for k in MODEL_KEYS if k in header}, model,
                               where)


def load_model(path: str | Path) -> RadianceModel:
    """Load a model: a run folder (its ``model.safetensors``), a model / checkpoint file, or a
    compressed ``.nrz`` file (decoded)."""
    path = Path(path)
    if is_nrz(path):
        return load(path)
    if path.is_dir():
        candidates = [path / "model.safetensors", path / "checkpoint.safetensors"]
        found = next((c for c in candidates if c.is_file()), None)
        if found is None:
            raise NerfzipError(f"{path}: no model.safetensors or checkpoint.safetensors in this "
                               "folder (is it a nerfzip run?)")
        path = found
    header, tensors = read_model_file(path)
    return model_from(header, tensors, str(path))


def optimizer_tensors(optimizer: torch.optim.Optimizer) -> tuple[dict[str, Tensor], list]:
    """Adam moments as named tensors, and the param groups (lrs) as JSON-able data."""
    sd = optimizer.state_dict()
    tensors: dict[str, Tensor] = {}
    for idx, state in sd["state"].items():
        for key, value in state.items():
            tensors[f"optim.{idx}.{key}"] = value.detach().reshape(value.shape).contiguous()
    groups = [{k: v for k, v in g.items()} for g in sd["param_groups"]]
    return tensors, groups


def restore_optimizer(optimizer: torch.optim.Optimizer, tensors: dict[str, Tensor],
                      groups: list) -> None:
    state: dict[int, dict[str, Tensor]] = {}
    for name, value in tensors.items():
        if name.startswith("optim."):
            _, idx, key = name.split(".", 2)
            state.setdefault(int(idx), {})[key] = value
    optimizer.load_state_dict({"state": state, "param_groups": groups})
