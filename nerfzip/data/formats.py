"""The scene format registry: each loader module registers its format (name, how to recognise a
folder of it, how to load it); ``nerfzip.data.load`` picks one. This module imports no loader,
so that loaders can import it and ``Scene`` without a cycle."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from nerfzip.data.scene import Scene


@dataclass(frozen=True)
class SceneFormat:
    """One scene format, as its loader registers it."""

    name: str
    """The ``Scene.format`` it produces and the name ``load_scene(fmt=...)`` accepts."""
    load: Callable[[Path, int | None], Scene]
    """Load a folder at a downscale (None: the format's benchmark-protocol default)."""
    detect: Callable[[Path], bool] | None = None
    """Whether a folder holds this format (None: never detected, chosen by name only)."""
    expects: str = ""
    """What ``detect`` looks for, for the error on an unrecognised folder."""
    priority: int = 0
    """Detection order, lowest first (a Blender folder is tried before a nerfstudio one)."""
    builtin: bool = False
    """A built-in scene: ``load_scene(name)`` loads it, no folder involved."""


FORMATS: dict[str, SceneFormat] = {}
"""Every format by name, filled as the loader modules are imported (``nerfzip.data.load``)."""


def register_format(fmt: SceneFormat) -> SceneFormat:
    if fmt.name in FORMATS:
        raise ValueError(f"scene format {fmt.name!r} is already registered")
    FORMATS[fmt.name] = fmt
    return fmt


def detectable() -> list[SceneFormat]:
    """The formats a folder can be recognised as, in detection order."""
    return sorted((f for f in FORMATS.values() if f.detect is not None),
                  key=lambda f: f.priority)
