"""Saving and loading models and training state: safetensors + JSON, never pickle.

A model file (``model.safetensors``) holds the field's tensors under ``field.*`` and the occupancy
grid under ``occupancy.*``; its safetensors metadata holds one JSON document with the field
config, render config and scene space, so a single atomic rename publishes a consistent file.
A training checkpoint adds the optimizer moments (``optim.*``), the random generator state and
the step, which is everything ``--resume`` needs to continue exactly.
"""

from __future__ import annotations

import json
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor

from nerfzip.errors import NerfzipError
from nerfzip.fields.base import build_field
from nerfzip.rendering.model import RadianceModel, SceneSpace
from nerfzip.rendering.occupancy import OccupancyGrid
from nerfzip.rendering.renderer import RenderConfig
from nerfzip.utils.io import atomic_path

FORMAT = "nerfzip-model"
VERSION = 1


def model_tensors(model: RadianceModel) -> dict[str, Tensor]:
    out = {f"field.{k}": v for k, v in model.field.named_tensors().items()}
    if model.occupancy is not None:
        occ = model.occupancy
        out["occupancy.density"] = occ.density
        out["occupancy.occupied"] = occ.occupied.to(torch.uint8)
        out["occupancy.aabb"] = occ.aabb
    return {k: v.detach().contiguous().cpu() for k, v in out.items()}


def model_header(model: RadianceModel) -> dict[str, Any]:
    return {"format": FORMAT, "version": VERSION, "field": model.field.config_dict(),
            "render": asdict(model.render), "space": model.space.to_dict(),
            "occupancy_resolution": model.occupancy.resolution if model.occupancy else None,
            "meta": model.meta}


def save_model(model: RadianceModel, path: str | Path,
               extra: dict[str, Tensor] | None = None, extra_header: dict | None = None) -> None:
    """Write a model (plus optional extra tensors / header entries) atomically."""
    tensors = model_tensors(model)
    tensors.update({k: v.detach().contiguous().cpu() for k, v in (extra or {}).items()})
    header = model_header(model)
    header.update(extra_header or {})
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={"nerfzip": json.dumps(header)})


def read_model_file(path: str | Path) -> tuple[dict[str, Any], dict[str, Tensor]]:
    """Header and tensors of a model / checkpoint file, with one-line errors."""
    path = Path(path)
    if not path.is_file():
        raise NerfzipError(f"{path}: file not found")
    try:
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as e:
        raise NerfzipError(f"{path}: not a readable safetensors file ({e})") from None
    if "nerfzip" not in meta:
        raise NerfzipError(f"{path}: not a nerfzip model (no nerfzip header)")
    try:
        header = json.loads(meta["nerfzip"])
    except json.JSONDecodeError as e:
        raise NerfzipError(f"{path}: malformed nerfzip header ({e.msg})") from None
    if header.get("format") != FORMAT:
        raise NerfzipError(f"{path}: not a nerfzip model file")
    if int(header.get("version", 0)) > VERSION:
        raise NerfzipError(f"{path}: model version {header['version']} is newer than this "
                           f"nerfzip reads ({VERSION}); upgrade nerfzip")
    return header, tensors


def dataclass_from(cls: type, data: dict[str, Any]) -> Any:
    """Build dataclass ``cls`` from a dict, ignoring unknown keys (older / newer writers)."""
    known = {f.name for f in fields(cls)}
    return cls(**{k: v for k, v in data.items() if k in known})


def model_from(header: dict[str, Any], tensors: dict[str, Tensor]) -> RadianceModel:
    field_tensors = {k[6:]: v for k, v in tensors.items() if k.startswith("field.")}
    field = build_field(header["field"], field_tensors)
    occupancy = None
    if header.get("occupancy_resolution"):
        occupancy = OccupancyGrid(tensors["occupancy.aabb"], header["occupancy_resolution"])
        occupancy.density.copy_(tensors["occupancy.density"])
        occupancy.occupied.copy_(tensors["occupancy.occupied"].bool())
    return RadianceModel(field, dataclass_from(RenderConfig, header["render"]),
                         dataclass_from(SceneSpace, header["space"]), occupancy,
                         header.get("meta", {}))


def load_model(path: str | Path) -> RadianceModel:
    """Load a model: a run folder (its ``model.safetensors``), a model / checkpoint file, or a
    compressed ``.nrz`` file (decoded)."""
    path = Path(path)
    from nerfzip.codec.nrz import is_nrz, load

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
    try:
        return model_from(header, tensors)
    except (KeyError, TypeError, ValueError, RuntimeError) as e:
        raise NerfzipError(f"{path}: inconsistent model file ({e})") from None


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
