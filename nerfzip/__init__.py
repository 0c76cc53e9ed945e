"""nerfzip: train radiance fields, compress them into one file, decode and render anywhere, and
measure quality, size and speed the way the field does.

The Python API mirrors the command line::

    import nerfzip
    scene = nerfzip.load_scene("../shared/data/nerf_synthetic/lego")
    model = nerfzip.train(scene, nerfzip.TrainConfig(field="tensorf-vm", iters=3000), "runs/lego")
    results = nerfzip.evaluate(model, scene, every=8)
    nerfzip.render(model, scene, "runs/lego/render", path="orbit")
    c, report = nerfzip.quantize(model, bits=8)      # any pass: nerfzip.prune, nerfzip.low_rank...
    nerfzip.save(c, "lego.nrz")                     # one self-contained file, as c says
    model = nerfzip.load("lego.nrz")
"""

from __future__ import annotations

from importlib import import_module
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nerfzip.errors import NerfzipError  # noqa: F401  (public)

if TYPE_CHECKING:
    from nerfzip.codec.nrz import SaveOptions, SaveReport
    from nerfzip.compression.compressed import Compressed
    from nerfzip.data.scene import Scene
    from nerfzip.rendering.model import RadianceModel

# Public names -> the module that defines them; imported on first use so that `import nerfzip`
# and the CLI start fast. Compression passes are not listed: they come from the pass registry
# (``nerfzip.quantize`` is the ``quant`` pass, ...), so a new pass needs no edit here.
API = {
    "Scene": "nerfzip.data.scene", "load_scene": "nerfzip.data.load",
    "evaluate": "nerfzip.evaluation.evaluate", "render_path": "nerfzip.evaluation.evaluate",
    "RadianceModel": "nerfzip.rendering.model", "RenderConfig": "nerfzip.rendering.renderer",
    "load_model": "nerfzip.training.checkpoint", "save_model": "nerfzip.training.checkpoint",
    "TrainConfig": "nerfzip.training.config", "defaults_for": "nerfzip.training.config",
    "train": "nerfzip.training.trainer",
    "load": "nerfzip.codec.nrz", "info": "nerfzip.codec.nrz", "SaveOptions": "nerfzip.codec.nrz",
    "load_stream": "nerfzip.codec.nrz", "NrzStreamReader": "nerfzip.codec.nrz",
    "ProgressiveReader": "nerfzip.codec.progressive", "iter_layers": "nerfzip.codec.progressive",
    "load_prefix": "nerfzip.codec.progressive",
    "run_pipeline": "nerfzip.compression.pipeline",
    "parse_pipeline": "nerfzip.compression.pipeline",
    "Compressed": "nerfzip.compression.compressed",
}
BASE_ALL = ["import_nerf_pytorch", "NerfzipError", "render", "save", *API]


def pass_functions() -> dict[str, Any]:
    """Every registered compression pass as a Python function, by its API name."""
    from nerfzip.compression.registry import api_functions

    return api_functions()


def __getattr__(name: str) -> Any:
    if name in API:
        return getattr(import_module(API[name]), name)
    if name == "__all__":
        return sorted(BASE_ALL + list(pass_functions()), key=str.lower)
    if not name.startswith("__"):
        passes = pass_functions()
        if name in passes:
            return passes[name]
    raise AttributeError(f"module 'nerfzip' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__getattr__("__all__")))


__version__ = "0.1.0"


def render(model: RadianceModel, scene: Scene, out_dir: str | Path, path: str = "orbit",
           n_frames: int = 60, fps: int = 24, fmt: str = "mp4") -> Path:
    """Render a camera path around ``scene`` (orbit, spiral or the test cameras) to a video."""
    from nerfzip.evaluation.evaluate import render_path

    cams = scene.split("test" if path == "test" else "train").cameras
    return render_path(model, cams, out_dir, path, n_frames, fps, fmt)


def save(model: RadianceModel | Compressed, path: str | Path, options: SaveOptions | None = None,
         **kwargs: Any) -> SaveReport:
    """Write a model, or a ``Compressed`` with its constraints' own storage, as one .nrz file.

    ``mode="half"`` / ``"lossless"`` (``SaveOptions``) set the precision of tensors no pass
    constrained. Quantization has one code path, the ``quant`` pass: ``mode="quant"`` (with
    ``bits``, ``per_channel``) runs it first, as ``nerfzip.quantize(model, bits)`` would."""
    from nerfzip.codec.nrz import SaveOptions
    from nerfzip.codec.nrz import save as save_nrz
    from nerfzip.compression.compressed import Compressed

    options = options or SaveOptions(**kwargs)
    if options.mode == "quant":
        model, _ = pass_functions()["quantize"](model, options.bits,
                                                per_channel=options.per_channel,
                                                min_elements=options.min_lossy_elements)
        options = SaveOptions(coders=options.coders, specs=options.specs,
                              min_lossy_elements=options.min_lossy_elements)
    if isinstance(model, Compressed):
        return model.save(path, options)
    return save_nrz(model, path, options)


def import_nerf_pytorch(checkpoint: str | Path, scene: Scene, downscale: int | None = None
                        ) -> RadianceModel:
    """A model from a krrish94/nerf-pytorch checkpoint (architecture read from its tensors)."""
    from nerfzip.importers.nerf_pytorch import import_nerf_pytorch as load

    return load(checkpoint, scene, downscale)
