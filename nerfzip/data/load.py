"""``load_scene``: recognise a scene folder's format and load it with its registered loader.

It lives apart from ``scene.py`` because it imports every loader, and the loaders import
``Scene``: kept in ``scene.py`` it would make a cycle.
"""

from __future__ import annotations

from pathlib import Path

from nerfzip.data import blender, llff, nerfstudio, procedural  # noqa: F401  (registration)
from nerfzip.data.formats import FORMATS, detectable
from nerfzip.data.scene import Scene
from nerfzip.errors import NerfzipError


def detect_format(path: Path) -> str:
    """Which loader reads ``path``: by the files it holds."""
    for fmt in detectable():
        if fmt.detect(path):
            return fmt.name
    wanted = [f.expects for f in detectable()]
    listed = ", ".join(wanted[:-1]) + " or " + wanted[-1] if len(wanted) > 1 else "".join(wanted)
    raise NerfzipError(f"{path}: not a scene folder (expected {listed})")


def load_scene(path: str | Path, downscale: int | None = None, fmt: str | None = None) -> Scene:
    """Load a scene folder, or a built-in scene by name (``"procedural"``).

    ``downscale`` divides the image resolution (default: 1 for Blender, 8 for LLFF (images_8),
    4 for nerfstudio captures, the benchmark protocol's choices).
    """
    for name in (fmt, str(path)):
        if name in FORMATS and FORMATS[name].builtin:
            return FORMATS[name].load(Path(str(path)), downscale)
    path = Path(path)
    if not path.exists():
        raise NerfzipError(f"{path}: no such scene folder")
    if not path.is_dir():
        raise NerfzipError(f"{path}: is a file, expected a scene folder")
    name = fmt or detect_format(path)
    if name not in FORMATS:
        raise NerfzipError(f"unknown scene format {name!r}")
    return FORMATS[name].load(path, downscale)
