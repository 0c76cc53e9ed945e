"""Import krrish94/nerf-pytorch checkpoints (``FlexibleNeRFModel``) as ``mlp-nerf`` fields.

The checkpoint is an (old-style) PyTorch pickle ``{iter, model_coarse_state_dict,
model_fine_state_dict, optimizer_state_dict, loss, psnr}``, read only with
``torch.load(weights_only=True)``, which refuses anything but tensors and plain containers.
The architecture is read from the tensor shapes (the ``config.yml`` shipped beside checkpoints
does not always match them):

- ``layer1`` [H, 3 + 6 Lx] gives hidden H and Lx; ``layers_xyz.{i}`` [H, H] (or [H, H + 3 + 6 Lx]
  where a skip concatenates the encoded input: ``layers.{i+1}`` in skips) gives depth = n + 1;
- ``layers_dir.0`` [Hd, H + 3 + 6 Ld] gives Ld and Hd; ``fc_feat``, ``fc_alpha``, ``fc_rgb``.

FlexibleNeRFModel has no activation after ``layer1`` and a ReLU after ``fc_feat``; its skip
input is ``cat(h, gamma(x))``. Names map as ``layer1 -> layers.0``, ``layers_xyz.i ->
layers.{i+1}``, ``fc_alpha -> alpha_head``, ``fc_feat -> feature``, ``layers_dir.0 ->
dir_layer``, ``fc_rgb -> rgb_head``.
"""

from __future__ import annotations

import dataclasses
import math
import re
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from nerfzip.data.scene import Scene
from nerfzip.errors import NerfzipError
from nerfzip.fields.mlp_nerf import MLPNeRF, MLPNeRFConfig
from nerfzip.rendering.model import RadianceModel, SceneSpace
from nerfzip.rendering.renderer import RenderConfig

FORMAT = "krrish94/nerf-pytorch FlexibleNeRFModel"
PSNR_NOTE = ("as recorded by nerf-pytorch: -10 log10(coarse MSE + fine MSE) of its last "
             "validation view or training batch, not a test-set metric")

_RENAME = {"layer1": "layers.0", "fc_alpha": "alpha_head", "fc_feat": "feature",
           "layers_dir.0": "dir_layer", "fc_rgb": "rgb_head"}


def load_nerf_pytorch_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a nerf-pytorch checkpoint without unpickling arbitrary objects.

    Raises ``NerfzipError`` for a missing file, a file that is not a PyTorch checkpoint, one that
    needs arbitrary objects unpickled, or one without ``model_coarse_state_dict``.
    """
    path = Path(path)
    if not path.is_file():
        what = "a directory, not a checkpoint file" if path.is_dir() else "no such checkpoint file"
        raise NerfzipError(f"{path}: {what}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # e.g. "Detected pickle protocol 4"
            ckpt = torch.load(path, weights_only=True, map_location="cpu")
    except Exception as e:  # torch.load fails in many ways on foreign bytes; all mean the same
        raise NerfzipError(f"{path}: not a readable PyTorch checkpoint ({_load_error(e)})") from e
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get("model_coarse_state_dict"), dict):
        raise NerfzipError(f"{path}: not a nerf-pytorch checkpoint "
                           f"(no model_coarse_state_dict)")
    return ckpt


def _load_error(e: Exception) -> str:
    """A one-line reason from a ``torch.load`` failure."""
    msg = str(e)
    if "WeightsUnpickler error:" in msg:
        detail = msg.split("WeightsUnpickler error:", 1)[1].strip().splitlines()[0]
        detail = detail.split(" was not an allowed global")[0]
        return f"refused by the weights-only loader: {detail}"
    first = msg.strip().splitlines()[0] if msg.strip() else ""
    return f"{type(e).__name__}: {first[:160]}" if first else type(e).__name__


def read_architecture(sd: dict[str, Any], where: str) -> MLPNeRFConfig:
    """The ``mlp-nerf`` config of one FlexibleNeRFModel state dict, checked key by key."""
    if "fc_out.weight" in sd:
        raise NerfzipError(f"{where}: networks without view directions (fc_out, "
                           f"use_viewdirs: false) are not supported")
    for key, value in sd.items():
        if not isinstance(value, Tensor) or not value.is_floating_point():
            raise NerfzipError(f"{where}: entry {key!r} is not a floating-point tensor")
    n_xyz = _count(sd, "layers_xyz")
    n_dir = _count(sd, "layers_dir")
    if n_dir != 1:
        raise NerfzipError(f"{where}: expected exactly one layers_dir layer, found {n_dir}")
    modules = ["layer1", *(f"layers_xyz.{i}" for i in range(n_xyz)), "fc_feat", "fc_alpha",
               "layers_dir.0", "fc_rgb"]
    expected = {f"{m}.{p}" for m in modules for p in ("weight", "bias")}
    missing, unexpected = expected - set(sd), set(sd) - expected
    if missing or unexpected:
        raise NerfzipError(f"{where}: unexpected state-dict keys (missing: "
                           f"{', '.join(sorted(missing)) or 'none'}; unexpected: "
                           f"{', '.join(sorted(unexpected)) or 'none'})")

    hidden, pos_dim = _shape2(sd, "layer1", where)
    pos_freqs = _freqs(pos_dim, "layer1 input", where)
    skips = []
    for i in range(n_xyz):
        out, width = _shape2(sd, f"layers_xyz.{i}", where)
        if out != hidden or width not in (hidden, hidden + pos_dim):
            raise NerfzipError(f"{where}: layers_xyz.{i}.weight has shape {[out, width]}, "
                               f"expected [{hidden}, {hidden}] or [{hidden}, {hidden + pos_dim}]")
        if width == hidden + pos_dim:
            skips.append(i + 1)
    _expect(sd, "fc_feat", (hidden, hidden), where)
    _expect(sd, "fc_alpha", (1, hidden), where)
    dir_hidden, dir_width = _shape2(sd, "layers_dir.0", where)
    dir_freqs = _freqs(dir_width - hidden, f"layers_dir.0 input minus hidden ({hidden})", where)
    _expect(sd, "fc_rgb", (3, dir_hidden), where)
    return MLPNeRFConfig(pos_freqs=pos_freqs, dir_freqs=dir_freqs, hidden=hidden,
                         depth=n_xyz + 1, skips=tuple(skips), first_activation=False,
                         feature_activation=True, dir_hidden=dir_hidden, hierarchical=True,
                         density_activation="relu")


def _count(sd: dict[str, Any], prefix: str) -> int:
    """Number of ``prefix.{i}.weight`` entries, which must be numbered 0..n-1."""
    found = sorted(int(m.group(1)) for k in sd
                   if (m := re.fullmatch(rf"{re.escape(prefix)}\.(\d+)\.weight", k)))
    return len(found) if found == list(range(len(found))) else -1


def _shape2(sd: dict[str, Any], module: str, where: str) -> tuple[int, int]:
    w, b = sd[f"{module}.weight"], sd[f"{module}.bias"]
    if w.dim() != 2 or b.shape != (w.shape[0],):
        raise NerfzipError(f"{where}: {module} has weight {list(w.shape)} and bias "
                           f"{list(b.shape)}, not a linear layer")
    return int(w.shape[0]), int(w.shape[1])


def _expect(sd: dict[str, Any], module: str, shape: tuple[int, int], where: str) -> None:
    if _shape2(sd, module, where) != shape:
        raise NerfzipError(f"{where}: {module}.weight has shape "
                           f"{list(sd[module + '.weight'].shape)}, expected {list(shape)}")


def _freqs(width: int, what: str, where: str) -> int:
    """L from an encoding width 3 + 6 L (nerf-pytorch with include_input: true)."""
    if width < 3 or (width - 3) % 6:
        raise NerfzipError(f"{where}: {what} width {width} is not 3 + 6 L (encodings without "
                           f"the raw input are not supported)")
    return (width - 3) // 6


def _rename(key: str) -> str:
    module, param = key.rsplit(".", 1)
    if module.startswith("layers_xyz."):
        return f"layers.{int(module.split('.')[1]) + 1}.{param}"
    return f"{_RENAME[module]}.{param}"


def _number(value: Any) -> float | None:
    if isinstance(value, Tensor) and value.numel() == 1:
        value = value.item()
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return None


def nerf_pytorch_field(path: str | Path, aabb: Tensor) -> tuple[MLPNeRF, dict[str, Any]]:
    """An ``mlp-nerf`` field holding exactly the checkpoint's networks, and a report.

    ``aabb`` [2, 3] is the field-space box (world box, or [-1, 1]^3 in NDC for forward-facing
    scenes); positions are fed to the networks unnormalised, as nerf-pytorch does. A checkpoint
    without a fine network gives a non-hierarchical field holding the coarse one.
    """
    ckpt = load_nerf_pytorch_checkpoint(path)
    coarse_sd = ckpt["model_coarse_state_dict"]
    fine_sd = ckpt.get("model_fine_state_dict")
    if fine_sd is not None and not isinstance(fine_sd, dict):
        raise NerfzipError(f"{path}: model_fine_state_dict is neither a state dict nor None")
    config = read_architecture(coarse_sd, f"{path}: model_coarse_state_dict")
    if fine_sd:
        fine_config = read_architecture(fine_sd, f"{path}: model_fine_state_dict")
        if fine_config != config:
            raise NerfzipError(f"{path}: the coarse and fine networks differ in architecture "
                               f"({config} vs {fine_config}); mlp-nerf needs one for both")
        networks = {"fine": fine_sd, "coarse": coarse_sd}
    else:
        config = dataclasses.replace(config, hierarchical=False)
        networks = {"fine": coarse_sd}

    field = MLPNeRF(config, aabb)
    tensors: dict[str, Tensor] = {"aabb": field.aabb}
    for net, sd in networks.items():
        tensors.update({f"{net}.{_rename(k)}": v.float() for k, v in sd.items()})
    field.load_tensors(tensors)

    report: dict[str, Any] = {
        "source": str(path), "format": FORMAT,
        "networks": ["coarse", "fine"] if fine_sd else ["coarse"],
        "architecture": dataclasses.asdict(config),
        "num_parameters": sum(p.numel() for p in field.parameters()),
    }
    if isinstance(ckpt.get("iter"), int):
        report["iteration"] = ckpt["iter"]
    for key in ("psnr", "loss"):
        value = _number(ckpt.get(key))
        if value is not None:
            report[key] = value
    if "psnr" in report:
        report["psnr_note"] = PSNR_NOTE
    return field, report


def import_nerf_pytorch(path: str | Path, scene: Scene, downscale: int | None = None
                        ) -> RadianceModel:
    """A renderable model of the checkpoint on ``scene``: the hierarchical sampling it was
    trained with (64 coarse + 64 fine samples, linear in depth, NeRF's infinite last
    interval), in the scene's space (world with near/far, or NDC for forward-facing scenes),
    with rays through pixel corners as nerf-pytorch cast them in training."""
    field, report = nerf_pytorch_field(path, scene.aabb)
    render = RenderConfig(sampler="hierarchical", n_coarse=64, n_fine=64)
    space = dataclasses.replace(SceneSpace.of(scene, downscale), pixel_offset=0.0)
    return RadianceModel(field, render, space, None, {"imported": report})
