"""nerfzip: train radiance fields, compress them into one file, decode and render anywhere, and
measure quality, size and speed the way the field does.

The Python API mirrors the command line::

    import nerfzip
    scene = nerfzip.load_scene("../shared/data/nerf_synthetic/lego")
    model = nerfzip.train(scene, nerfzip.TrainConfig(field="tensorf-vm", iters=3000), "runs/lego")
    results = nerfzip.evaluate(model, scene, every=8)
    nerfzip.render(model, scene, "runs/lego/render", path="orbit")
    nerfzip.save(model, "lego.nrz", mode="quant", bits=8)   # one self-contained file
    model = nerfzip.load("lego.nrz")
"""

from __future__ import annotations

from importlib import import_module
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nerfzip.errors import NerfzipError

if TYPE_CHECKING:
    from nerfzip.data.scene import Scene
    from nerfzip.rendering.model import RadianceModel

# Public names -> the module that defines them; imported on first use so that `import nerfzip`
# and the CLI start fast.
API = {
    "Scene": "nerfzip.data.scene", "load_scene": "nerfzip.data.scene",
    "evaluate": "nerfzip.evaluation.evaluate", "render_path": "nerfzip.evaluation.evaluate",
    "RadianceModel": "nerfzip.rendering.model", "RenderConfig": "nerfzip.rendering.renderer",
    "load_model": "nerfzip.training.checkpoint", "save_model": "nerfzip.training.checkpoint",
    "TrainConfig": "nerfzip.training.config", "defaults_for": "nerfzip.training.config",
    "train": "nerfzip.training.trainer",
    "save": "nerfzip.codec.nrz", "load": "nerfzip.codec.nrz", "info": "nerfzip.codec.nrz",
    "SaveOptions": "nerfzip.codec.nrz",
    "prune": "nerfzip.compression.passes.prune", "quantize": "nerfzip.compression.passes.quant",
    "half": "nerfzip.compression.passes.quant", "vector_quantize": "nerfzip.compression.passes.vq",
    "finetune": "nerfzip.compression.fit.finetune", "low_rank": "nerfzip.compression.passes.low_rank",
    "distill": "nerfzip.compression.fit.student",
    "tensor_decompose": "nerfzip.compression.passes.tensor_decompose",
    "reduce_rank": "nerfzip.compression.passes.tensor_decompose", "convert": "nerfzip.compression.passes.tensor_decompose",
    "run_pipeline": "nerfzip.compression.pipeline",
    "parse_pipeline": "nerfzip.compression.pipeline", "Compressed": "nerfzip.compression.compressed",
}


def __getattr__(name: str) -> Any:
    if name in API:
        return getattr(import_module(API[name]), name)
    raise AttributeError(f"module 'nerfzip' has no attribute {name!r}")


__version__ = "0.1.0"


def render(model: RadianceModel, scene: Scene, out_dir: str | Path, path: str = "orbit",
           n_frames: int = 60, fps: int = 24, fmt: str = "mp4") -> Path:
    """Render a camera path around ``scene`` (orbit, spiral or the test cameras) to a video."""
    from nerfzip.evaluation.evaluate import render_path

    cams = scene.split("test" if path == "test" else "train").cameras
    return render_path(model, cams, out_dir, path, n_frames, fps, fmt)


def import_nerf_pytorch(checkpoint: str | Path, scene: Scene) -> RadianceModel:
    """A model from a krrish94/nerf-pytorch checkpoint (architecture read from its tensors)."""
    from nerfzip.importers.nerf_pytorch import import_as_model

    return import_as_model(checkpoint, scene)


__all__ = [
    "Compressed", "convert", "defaults_for", "distill", "evaluate", "finetune", "half",
    "import_nerf_pytorch", "info", "load", "load_model", "load_scene", "low_rank",
    "NerfzipError", "parse_pipeline", "prune", "quantize", "RadianceModel", "reduce_rank",
    "render", "RenderConfig", "run_pipeline", "save", "save_model", "SaveOptions", "Scene",
    "tensor_decompose", "train", "TrainConfig", "vector_quantize",
]
