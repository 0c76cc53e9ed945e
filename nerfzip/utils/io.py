"""File input and output with one-line errors on bad input and atomic writes.

Every writer goes through ``atomic_path``: it writes to a temporary name in the same folder and
renames on success, so an interrupted run never leaves a file that looks complete.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from nerfzip.errors import NerfzipError


def read_json(path: str | Path) -> Any:
    """Parse a JSON file; a missing or malformed file raises ``NerfzipError`` naming it."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise NerfzipError(f"{path}: file not found") from None
    except (OSError, UnicodeDecodeError) as e:
        raise NerfzipError(f"{path}: cannot read ({e})") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise NerfzipError(f"{path}: malformed JSON at line {e.lineno} column {e.colno}: "
                           f"{e.msg}") from None


def read_image(path: str | Path) -> np.ndarray:
    """An image as uint8 [H, W, C] (C = 3 or 4); errors name the file."""
    path = Path(path)
    try:
        with Image.open(path) as im:
            if im.mode not in ("RGB", "RGBA"):
                im = im.convert("RGBA" if "A" in im.getbands() else "RGB")
            arr = np.asarray(im)
    except FileNotFoundError:
        raise NerfzipError(f"{path}: image not found") from None
    except (UnidentifiedImageError, OSError, SyntaxError) as e:
        raise NerfzipError(f"{path}: cannot decode image ({e})") from None
    if arr.dtype != np.uint8:
        arr = (arr.astype(np.float64) / np.iinfo(arr.dtype).max * 255).round().astype(np.uint8)
    return arr


def resize_image(arr: np.ndarray, width: int, height: int) -> np.ndarray:
    """Area-filtered resize (PIL box filter), as the datasets' own downscaled copies are made."""
    if arr.shape[1] == width and arr.shape[0] == height:
        return arr
    return np.asarray(Image.fromarray(arr).resize((width, height), Image.Resampling.BOX))


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it onto ``path`` if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def write_json(path: str | Path, obj: Any) -> None:
    """Write JSON atomically, indented for people to read."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2) + "\n", encoding="utf-8")


def write_image(path: str | Path, rgb: np.ndarray) -> None:
    """Write a uint8 [H, W, 3] image (format from the suffix) atomically."""
    path = Path(path)
    with atomic_path(path) as tmp:
        Image.fromarray(rgb).save(tmp, format=Image.registered_extensions()[path.suffix.lower()])
